//! The HTTP ceiling of the benchmark machine: a bare axum/hyper server on the same tokio runtime as
//! kvstore that answers every GET with the same 1 KiB body, without touching any storage.
//!
//! `cargo run --release --example bench_hello -- 127.0.0.1:18481` (used by `bench/run.sh`).

use axum::http::header;
use axum::response::IntoResponse;
use axum::serve::ListenerExt;
use axum::Router;

static BODY: [u8; 1024] = [b'x'; 1024];

async fn hello() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        &BODY[..],
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18481".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("bench_hello listening on http://{}", listener.local_addr()?);
        // kvstore sets TCP_NODELAY on every connection; so does the ceiling.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = Router::new().fallback(hello);
        axum::serve(listener, app).await?;
        Ok(())
    })
}
