//! kvstore on PostgreSQL + SeaweedFS when SeaweedFS dies and comes back (an instance of its own,
//! killed and restarted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use reqwest::Method;

use common::pg_s3::{body, PgS3};
use common::seaweed::Seaweed;

#[tokio::test]
async fn a_dead_object_store_answers_503_in_bounded_time_and_the_node_recovers() {
    let Some(mut weed) = Seaweed::start() else {
        return;
    };
    eprintln!("SeaweedFS {}", weed.version());
    let timeout = Duration::from_secs(2);
    let Some(kv) = PgS3::start(&weed.endpoint, 1024, Duration::from_secs(600), timeout).await
    else {
        return;
    };
    let stored = body(5000, 1);
    let resp = kv.put("kept", stored.clone()).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    weed.kill();
    let start = Instant::now();
    assert_eq!(kv.put("big", body(5000, 2)).await.status(), 503);
    eprintln!("PUT answered 503 after {:?}", start.elapsed());
    let get = Instant::now();
    assert_eq!(kv.get("kept").await.status(), 503);
    eprintln!("GET answered 503 after {:?}", get.elapsed());
    let ready = kv
        .server
        .req(Method::GET, "/readyz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    // Each request is bounded by the timeout (and a couple of retries within it).
    assert!(start.elapsed() < timeout * 15, "{:?}", start.elapsed());
    // Bodies kept in the database are still served and written.
    assert_eq!(kv.put("small", body(10, 3)).await.status(), 201);
    assert_eq!(kv.get_bytes("small").await, body(10, 3));
    weed.restart();
    let back = Instant::now();
    assert!(kv.get_bytes("kept").await == stored);
    eprintln!("first GET after the restart served in {:?}", back.elapsed());
    assert_eq!(kv.put("big", body(5000, 2)).await.status(), 201);
    assert!(kv.get_bytes("big").await == body(5000, 2));
    let ready = kv
        .server
        .req(Method::GET, "/readyz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn a_read_cut_off_by_the_object_store_is_cut_off_for_the_client() {
    let Some(mut weed) = Seaweed::start() else {
        return;
    };
    let Some(kv) = PgS3::start(
        &weed.endpoint,
        1024,
        Duration::from_secs(600),
        Duration::from_secs(2),
    )
    .await
    else {
        return;
    };
    // Far more than the buffers between the object store and the client hold.
    let big = body(64 * 1024 * 1024, 4);
    assert_eq!(kv.put("big", big.clone()).await.status(), 201);
    let mut resp = kv.get("big").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        big.len().to_string().as_str()
    );
    weed.kill();
    let mut got = 0usize;
    let end = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                assert!(
                    chunk[..] == big[got..got + chunk.len()],
                    "wrong bytes at {got}"
                );
                got += chunk.len();
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(end.is_err(), "the read ended cleanly after {got} bytes");
    assert!(got < big.len(), "all {got} bytes came, then an error");
}
