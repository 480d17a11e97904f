//! Reads of bodies in the object store go straight from the store's response to the client's:
//! the exact bytes, a `Range` as a ranged request for just its bytes, a `HEAD` without any.
//! Counted with the server's `/metrics`, so this binary holds one test: nothing else in the
//! process talks to the object store meanwhile. Needs PostgreSQL and SeaweedFS; skips loudly
//! without them, except under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use reqwest::Method;
use sha2::{Digest, Sha256};

use common::pg_s3::{body, PgS3};
use common::seaweed;

/// (GET requests to the object store, body bytes received from it, failed GETs) so far.
async fn object_gets(kv: &PgS3) -> (u64, u64, u64) {
    let text = kv
        .server
        .req(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
    };
    (
        value("kvstore_object_store_requests_total{op=\"get\"}"),
        value("kvstore_object_store_received_bytes_total "),
        value("kvstore_object_store_errors_total{op=\"get\"}"),
    )
}

#[tokio::test]
async fn gets_stream_the_exact_body_and_ranges_fetch_only_their_bytes() {
    let Some(weed) = seaweed::shared() else {
        return;
    };
    let Some(kv) = PgS3::start(
        &weed.endpoint,
        1024,
        Duration::from_secs(600),
        Duration::from_secs(10),
    )
    .await
    else {
        return;
    };
    let big = body(24 * 1024 * 1024 + 3, 7);
    let size = big.len() as u64;
    assert_eq!(kv.put("big", big.clone()).await.status(), 201);
    let before = object_gets(&kv).await;

    let head = kv
        .server
        .req(Method::HEAD, &kv.path("big"), Some(&kv.token))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], size.to_string().as_str());
    assert_eq!(
        object_gets(&kv).await,
        before,
        "a HEAD asked the object store"
    );

    let whole = kv.get("big").await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-length"], size.to_string().as_str());
    let got = whole.bytes().await.unwrap();
    assert_eq!(got.len(), big.len());
    assert_eq!(Sha256::digest(&got), Sha256::digest(&big));
    let mut seen = object_gets(&kv).await;
    assert_eq!(seen, (before.0 + 1, before.1 + size, before.2));

    for (range, first, last) in [
        ("bytes=0-0", 0, 0),
        ("bytes=1000-2000000", 1000, 2_000_000),
        ("bytes=-4096", size - 4096, size - 1),
        ("bytes=20000000-", 20_000_000, size - 1),
        ("bytes=9000000-99999999999", 9_000_000, size - 1),
    ] {
        let resp = kv
            .server
            .get(&kv.path("big"), &kv.token)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(
            resp.headers()["content-range"],
            format!("bytes {first}-{last}/{size}").as_str(),
            "{range}"
        );
        let got = resp.bytes().await.unwrap();
        assert!(
            got[..] == big[first as usize..=last as usize],
            "{range}: {} bytes, not the slice",
            got.len()
        );
        // One request, for exactly the slice.
        let now = object_gets(&kv).await;
        assert_eq!(
            now,
            (seen.0 + 1, seen.1 + last - first + 1, seen.2),
            "{range}"
        );
        seen = now;
    }
    // A range past the end is refused without asking the store.
    let resp = kv
        .server
        .get(&kv.path("big"), &kv.token)
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(object_gets(&kv).await, seen);

    // An object gone (collected under a slow reader, say) or of another size than its row says
    // is refused before any byte, and counted as a failed GET.
    let name: String = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&kv.db.url).await.unwrap();
        sqlx::query_scalar("SELECT object FROM records WHERE key = 'big'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    kv.objects.delete(&name).await.unwrap();
    assert_eq!(kv.get("big").await.status(), 503);
    let now = object_gets(&kv).await;
    assert_eq!(now, (seen.0 + 1, seen.1, seen.2 + 1));
    let short = kvstore::storage::BodyInput::Bytes(big[..1024 * 1024].to_vec().into());
    kv.objects.put(&name, &short).await.unwrap();
    assert_eq!(kv.get("big").await.status(), 503);
    assert_eq!(object_gets(&kv).await, (now.0 + 1, now.1, now.2 + 1));
}
