//! kvstore: a self-hosted key-value store server that speaks the Apify API v2 key-value-store
//! dialect. The library holds everything; `main.rs` only parses the command line.

pub mod api;
pub mod auth;
pub mod config;
pub mod copy;
pub mod error;
pub mod model;
pub mod storage;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::ServiceExt;
use tokio::net::TcpListener;
use tower::Layer as _;

use crate::api::AppState;
use crate::config::ServerConfig;
use crate::storage::{AccessCounters, Store};

/// How often batched read/list counters and `accessedAt` are written.
const ACCESS_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Serves the API on `listener` until `shutdown` resolves, then drains connections, flushes the
/// batched counters and closes the store.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let access = Arc::new(AccessCounters::default());
    let allow_method_override = config.allow_method_override;
    let state = AppState {
        store: store.clone(),
        access: access.clone(),
        config: Arc::new(config),
    };
    let flusher = tokio::spawn(flush_access_periodically(store.clone(), access.clone()));

    let router = api::router(state);
    let served = if allow_method_override {
        let app = tower::util::MapRequestLayer::new(api::override_method).layer(router);
        axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
            .with_graceful_shutdown(shutdown)
            .await
    } else {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    };

    flusher.abort();
    flush_access(&*store, &access).await;
    if let Err(e) = store.close().await {
        tracing::error!(error = %e, "closing the store failed");
    }
    served
}

async fn flush_access_periodically(store: Arc<dyn Store>, access: Arc<AccessCounters>) {
    let mut tick = tokio::time::interval(ACCESS_FLUSH_INTERVAL);
    loop {
        tick.tick().await;
        flush_access(&*store, &access).await;
    }
}

async fn flush_access(store: &dyn Store, access: &AccessCounters) {
    let batch = access.take();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = store.apply_access(batch).await {
        tracing::warn!(error = %e, "could not save read/list counters");
    }
}
