//! `serve --rate-limit`: per-token buckets, 429 `rate-limit-exceeded` with `X-RateLimit-Limit`,
//! separate buckets per token and per address, health checks never limited, and nothing limited
//! when the flag is off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroU32;
use std::time::Duration;

use common::{assert_error, TestServer};

async fn limited_server(per_second: u32) -> TestServer {
    TestServer::start_with(|c| c.rate_limit = NonZeroU32::new(per_second)).await
}

/// Sends `n` requests one after the other: how many were answered, and how many refused with 429.
async fn burst(srv: &TestServer, path: &str, token: Option<&str>, n: usize) -> (usize, usize) {
    let (mut answered, mut limited) = (0, 0);
    for _ in 0..n {
        let resp = srv
            .req(reqwest::Method::GET, path, token)
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            429 => limited += 1,
            _ => answered += 1,
        }
    }
    (answered, limited)
}

#[tokio::test]
async fn a_token_over_its_limit_gets_429_until_the_bucket_refills() {
    let srv = limited_server(5).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;

    let (ok, limited) = burst(&srv, "/v2/key-value-stores", Some(&alice), 30).await;
    assert!((5..30).contains(&ok), "ok {ok}, limited {limited}");
    assert!(limited > 0);

    let resp = srv
        .get("/v2/key-value-stores", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "5");
    assert_eq!(resp.headers()["retry-after"], "1");
    let message = assert_error(resp, 429, "rate-limit-exceeded").await;
    assert!(message.contains("5 requests per second"), "{message}");

    // Another token has its own bucket; health checks are never limited.
    let resp = srv.get("/v2/key-value-stores", &bob).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (ok, _) = burst(&srv, "/healthz", None, 20).await;
    assert_eq!(ok, 20);

    // A second later the bucket holds requests again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = srv
        .get("/v2/key-value-stores", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn requests_without_a_token_share_their_address_bucket() {
    let srv = limited_server(3).await;
    let (answered, limited) = burst(&srv, "/v2/key-value-stores/nope/records/k", None, 20).await;
    assert!(
        answered >= 3 && limited > 0,
        "answered {answered}, limited {limited}"
    );
}

#[tokio::test]
async fn nothing_is_limited_without_the_flag() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let (ok, limited) = burst(&srv, "/v2/key-value-stores", Some(&alice), 200).await;
    assert_eq!((ok, limited), (200, 0));
}
