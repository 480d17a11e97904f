//! The connection layer: accepts TCP connections, serves HTTP/1.1 and HTTP/2 on them with explicit
//! limits (connections, idle keep-alive), shuts down gracefully, and flushes the batched counters.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::Layer as _;
use tower::ServiceExt as _;

use crate::api::{self, AppState};
use crate::config::ServerConfig;
use crate::model::now_millis;
use crate::storage::{AccessCounters, OrphanCheck, Store};

/// How often batched read/list counters and `accessedAt` are written.
const ACCESS_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Bodies younger than this are left out of the periodic orphan check: a write may have stored
/// its body and not yet committed its record (a slow upload is spooled before that, so the body's
/// file is at most as old as the end of the upload).
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(3600);
/// How long shutdown waits for requests in flight before it stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves the API on `listener` until `shutdown` resolves, then lets requests in flight finish,
/// flushes the batched counters and closes the store.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let access = Arc::new(AccessCounters::default());
    let config = Arc::new(config);
    let state = AppState {
        store: store.clone(),
        access: access.clone(),
        config: config.clone(),
        rate_limiter: config.rate_limit.map(api::rate_limit::RateLimiter::new),
    };
    api::init_metrics();
    let flusher = tokio::spawn(flush_access_periodically(store.clone(), access.clone()));
    let sweeper = config.unnamed_retention.map(|retention| {
        tokio::spawn(expire_unnamed_periodically(
            store.clone(),
            access.clone(),
            retention,
        ))
    });

    let orphan_check = config
        .orphan_check_interval
        .map(|every| tokio::spawn(remove_orphans_periodically(store.clone(), every)));

    let allow_method_override = config.allow_method_override;
    // `?method=` must be applied before routing, so it wraps the router rather than a route.
    let app = tower::util::MapRequestLayer::new(move |request: Request<Incoming>| {
        let request = request.map(Body::new);
        if allow_method_override {
            api::override_method(request)
        } else {
            request
        }
    })
    .layer(api::router(state));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header read timeout also closes keep-alive connections that sit idle that long.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.idle_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(config.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));

    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    // Tells connections that have not sent a byte yet (so hyper does not watch them) to close:
    // a client's spare keep-alive connection must not hold shutdown for the idle timeout.
    let stopping = tokio_util::sync::CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        // At the connection limit, new connections wait in the listen backlog.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        // The peer address, for rate limiting requests that carry no token.
        let app = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            });
        let idle_timeout = config.idle_timeout;
        let tls = tls.clone();
        let stopping = stopping.clone();
        metrics::gauge!("kvstore_open_connections").increment(1.0);
        tokio::spawn(async move {
            // hyper-util reads the first bytes to tell HTTP/1 from HTTP/2 without a time limit,
            // before the header read timeout starts: a client that never sends a byte must not
            // hold a connection slot forever.
            let mut first = [0u8; 1];
            let spoke = tokio::select! {
                peeked = tokio::time::timeout(idle_timeout, stream.peek(&mut first)) => peeked.is_ok(),
                () = stopping.cancelled() => false,
            };
            let served = match (&tls, spoke) {
                (_, false) => Ok(()),
                (None, true) => {
                    let connection = builder.serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(app),
                    );
                    watcher.watch(connection).await
                }
                (Some(acceptor), true) => {
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(idle_timeout, acceptor.accept(stream)) => done,
                        () = stopping.cancelled() => Ok(Err(std::io::Error::other("shutting down"))),
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            let connection = builder.serve_connection_with_upgrades(
                                TokioIo::new(stream),
                                TowerToHyperService::new(app),
                            );
                            watcher.watch(connection).await
                        }
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            metrics::gauge!("kvstore_open_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    stopping.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the shutdown grace period; stopping anyway");
    }

    flusher.abort();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    if let Some(orphan_check) = orphan_check {
        orphan_check.abort();
    }
    flush_access(&*store, &access).await;
    if let Err(e) = store.close().await {
        tracing::error!(error = %e, "closing the store failed");
    }
    Ok(())
}

async fn flush_access_periodically(store: Arc<dyn Store>, access: Arc<AccessCounters>) {
    let mut tick = tokio::time::interval(ACCESS_FLUSH_INTERVAL);
    loop {
        tick.tick().await;
        flush_access(&*store, &access).await;
    }
}

/// `--unnamed-retention`: deletes unnamed stores idle longer than `retention`, checking a tenth of
/// the retention period apart (at least every second, at most every ten minutes).
async fn expire_unnamed_periodically(
    store: Arc<dyn Store>,
    access: Arc<AccessCounters>,
    retention: Duration,
) {
    const BATCH: usize = 100;
    let period = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        // Reads counted in memory but not yet saved must keep their stores alive.
        flush_access(&*store, &access).await;
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        let idle_since = now_millis().saturating_sub(retention_ms);
        loop {
            let ids = match store.stores_unnamed_idle(idle_since, BATCH).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for expired unnamed stores");
                    break;
                }
            };
            let mut failed = false;
            for id in &ids {
                match store.store_delete(id).await {
                    Ok(true) => tracing::info!(store = %id, "deleted an expired unnamed store"),
                    Ok(false) => {}
                    Err(e) => {
                        failed = true;
                        tracing::warn!(store = %id, error = %e, "could not delete an expired unnamed store");
                    }
                }
            }
            if ids.len() < BATCH || failed {
                break;
            }
        }
    }
}

/// Removes stored bodies no record points at (see [`Store::orphans`]), `every` apart, the first
/// time `every` after the start. A body younger than [`ORPHAN_MIN_AGE`] may belong to a write in
/// flight and is left for a later round.
async fn remove_orphans_periodically(store: Arc<dyn Store>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let check = OrphanCheck {
            remove: true,
            min_age: ORPHAN_MIN_AGE,
        };
        match store.orphans(check).await {
            Ok(report) if report.bodies > 0 => tracing::warn!(
                bodies = report.bodies,
                bytes = report.bytes,
                removed = report.removed,
                "found stored bodies that no record points at"
            ),
            Ok(_) => tracing::debug!("no orphan bodies"),
            Err(e) => tracing::warn!(error = %e, "could not look for orphan bodies"),
        }
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
