//! `kvstore serve`: opens the backend, creates the first administrator on an empty one, binds,
//! turns the arguments into the server's settings and serves until SIGINT or SIGTERM.

use std::time::Duration;

use super::args::ServeArgs;
use super::Outcome;
use crate::model::Token;
use crate::server::{self, ServerConfig};
use crate::storage;

pub async fn serve(args: ServeArgs) -> Outcome {
    let mut backend = args.data.backend();
    // The data directory is this process's alone: what a crash of the last one left can go now.
    if let storage::Backend::Embedded { options, .. } = &mut backend {
        options.collect_orphans_at_open = true;
    }
    let store = storage::open(&backend).await?;
    let admin_token = args.admin_token.clone().map(Token::from_secret);
    let token_was_given = admin_token.is_some();
    if let Some(token) = storage::ensure_first_user(&*store, admin_token).await? {
        if token_was_given {
            println!("Created the user \"admin\" with the token from KVSTORE_ADMIN_TOKEN.");
        } else {
            println!("Created the user \"admin\". Its token (shown only this once):");
            println!("{}", token.expose());
        }
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::load(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let config = ServerConfig {
        public_url: args
            .public_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("{scheme}://{addr}")),
        max_record_bytes: args.max_record_bytes,
        default_general_access: args.default_general_access.into(),
        allow_method_override: args.allow_method_override,
        // Zero would close every connection at once: a second is the least that serves.
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        send_timeout: Duration::from_secs(args.send_timeout.max(1)),
        max_connections: args.max_connections.max(1),
        cors_origins: args
            .cors_origins
            .into_iter()
            .filter(|o| !o.trim().is_empty())
            .collect(),
        tls,
        unnamed_retention: args.unnamed_retention,
        rate_limit: args.rate_limit,
        access_flush_interval: Duration::from_secs(5),
        orphan_check_interval: Some(args.orphan_check_interval).filter(|i| !i.is_zero()),
        fast_get: true,
    };
    println!(
        "kvstore {} listening on {scheme}://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    tracing::info!(%addr, storage = %args.data.describe(), "server started");
    server::serve(listener, store, config, shutdown_signal()).await?;
    tracing::info!("server stopped");
    Ok(())
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM: either stops the server gracefully.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
