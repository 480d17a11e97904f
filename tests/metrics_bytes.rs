//! `kvstore_http_received_bytes_total` and `kvstore_http_sent_bytes_total` count the body bytes
//! that cross the wire, also without a `Content-Length`: a chunked upload and a streamed download.
//!
//! A test binary of its own with one test: the metrics registry is process-wide, and no other
//! test's traffic may move the counters between two readings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use kvstore::model::{Token, Username};
use reqwest::Method;

async fn counter(server: &TestServer, name: &str) -> u64 {
    let text = server
        .req(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

const RECEIVED: &str = "kvstore_http_received_bytes_total";
const SENT: &str = "kvstore_http_sent_bytes_total";

#[tokio::test]
async fn bytes_in_and_out_count_chunked_uploads_and_streamed_downloads() {
    let server = TestServer::start().await;
    let token = Token::generate();
    server
        .store
        .user_create(Username::parse("root").unwrap(), true, token.hash())
        .await
        .unwrap();
    let token = token.expose().to_owned();
    let id = server.create_store(&token, Some("bytes")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A chunked upload: 40 chunks of 10 000 bytes, no Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40u8).map(|i| Ok(vec![i; 10_000])).collect();
    let uploaded: u64 = 400_000;
    let received_before = counter(&server, RECEIVED).await;
    let resp = server
        .req(
            Method::PUT,
            &format!("/v2/key-value-stores/{id}/records/big"),
            Some(&token),
        )
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let received = counter(&server, RECEIVED).await - received_before;
    // Nothing else sent a body meanwhile (the /metrics GETs have none).
    assert_eq!(received, uploaded, "bytes received for a chunked upload");

    // A streamed download: the backup has no Content-Length.
    let sent_before = counter(&server, SENT).await;
    let resp = server
        .req(Method::GET, "/v2/admin/backup", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("content-length").is_none(),
        "the backup should stream"
    );
    let downloaded = resp.bytes().await.unwrap().len() as u64;
    assert!(downloaded > uploaded, "the backup holds the record");
    let sent = counter(&server, SENT).await - sent_before;
    // Also counted: the body of the first /metrics answer, a few KiB.
    assert!(
        sent >= downloaded && sent < downloaded + 256 * 1024,
        "bytes sent {sent} for a streamed download of {downloaded} bytes"
    );
    server.stop().await;
}
