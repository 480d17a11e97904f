//! What PostgreSQL keeps of record bodies under racing writers: every overwrite and delete frees
//! exactly the body it replaced, and a large PUT that lands on a store deleted meanwhile leaves
//! nothing behind. Each test counts the stored chunks against the live records right after the
//! race, before any sweep could hide a leak.
//!
//! Every test makes a fresh database and returns early, saying so, when PostgreSQL is
//! unreachable outside CI.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{PgDatabase, TestServer};
use kvstore::storage::OrphanCheck;
use reqwest::Method;
use sqlx::Connection;

/// Bodies stored in chunks (`blob_id`s with chunks) that no record points at, and their bytes.
async fn unreferenced_bodies(url: &str) -> (i64, i64) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as(
        "SELECT count(DISTINCT c.blob_id), coalesce(sum(octet_length(c.data)), 0)::bigint
         FROM record_chunks c
         WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.blob_id = c.blob_id)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// Distinct bodies stored in chunks, and records stored in chunks.
async fn bodies_and_chunked_records(url: &str) -> (i64, i64) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as(
        "SELECT (SELECT count(DISTINCT blob_id) FROM record_chunks),
                (SELECT count(*) FROM records WHERE blob_id IS NOT NULL)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// Report only, nothing in flight.
const NOW: OrphanCheck = OrphanCheck {
    remove: false,
    min_age: Duration::ZERO,
};

fn body(writer: usize, round: usize, size: usize) -> Vec<u8> {
    let tag = format!("w{writer}r{round}-");
    tag.bytes().cycle().take(size).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_overwrites_and_deletes_of_large_records_free_what_they_replace() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let server = TestServer::start_on(&db.backend(), |_| {}).await;
    let token = server.user("racer").await;
    let store = server.create_store(&token, Some("race")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 10;
    const SIZE: usize = 300 * 1024;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, url, token, store) = (
            server.http.clone(),
            server.url.clone(),
            token.clone(),
            store.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut problems = Vec::new();
            for r in 0..ROUNDS {
                // Two keys: "big" is only ever overwritten, "other" is also deleted.
                let key = if c % 2 == 0 { "big" } else { "other" };
                let path = format!("{url}/v2/key-value-stores/{store}/records/{key}");
                let resp = http
                    .put(&path)
                    .bearer_auth(&token)
                    .header("content-type", "application/octet-stream")
                    .body(body(c, r, SIZE))
                    .send()
                    .await
                    .unwrap();
                if resp.status() != 201 {
                    problems.push(format!("PUT {key}: {}", resp.status()));
                }
                if c % 4 == 1 && r % 3 == 2 {
                    let resp = http.delete(&path).bearer_auth(&token).send().await.unwrap();
                    if resp.status() != 204 {
                        problems.push(format!("DELETE {key}: {}", resp.status()));
                    }
                }
            }
            problems
        }));
    }
    for task in tasks {
        let problems = task.await.unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }

    let (bodies, records) = bodies_and_chunked_records(&db.url).await;
    let (orphans, orphan_bytes) = unreferenced_bodies(&db.url).await;
    assert_eq!(
        (orphans, orphan_bytes),
        (0, 0),
        "bodies no record points at after the race ({bodies} bodies for {records} records)"
    );
    assert_eq!(bodies, records);
    // The backend's own check agrees.
    let found = server.store.orphans(NOW).await.unwrap();
    assert_eq!(found.bodies, 0, "{found:?}");
    // The stats still count exactly what is live.
    let resp = server
        .get(&format!("/v2/key-value-stores/{store}"), &token)
        .send()
        .await
        .unwrap();
    let stats = common::data(resp).await["stats"].clone();
    assert_eq!(stats["recordCount"], records, "{stats}");
    assert_eq!(stats["storageBytes"], records * SIZE as i64, "{stats}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_puts_racing_a_store_delete_leave_no_body_behind() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let server = TestServer::start_on(&db.backend(), |_| {}).await;
    let token = server.user("racer").await;
    const WRITERS: usize = 6;
    const ROUNDS: usize = 5;
    const SIZE: usize = 3 * 1024 * 1024;
    let mut late_writes = 0;
    for round in 0..ROUNDS {
        let store = server.create_store(&token, None).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (http, url, token, store) = (
                server.http.clone(),
                server.url.clone(),
                token.clone(),
                store.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let resp = http
                    .put(format!("{url}/v2/key-value-stores/{store}/records/k{w}"))
                    .bearer_auth(&token)
                    .header("content-type", "application/octet-stream")
                    .body(body(w, round, SIZE))
                    .send()
                    .await
                    .unwrap();
                resp.status().as_u16()
            }));
        }
        // The delete goes out while the uploads are under way.
        tokio::time::sleep(Duration::from_millis(5 * round as u64)).await;
        let resp = server
            .req(
                Method::DELETE,
                &format!("/v2/key-value-stores/{store}"),
                Some(&token),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
        for task in tasks {
            match task.await.unwrap() {
                201 => {}
                404 => late_writes += 1,
                s => panic!("PUT answered {s}"),
            }
        }
    }
    // Deleted stores are purged in the background: wait for that (not for a sweep of orphans).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM stores WHERE deleted")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} deleted stores not purged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (bodies, bytes) = unreferenced_bodies(&db.url).await;
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM record_chunks")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        (bodies, bytes, chunks),
        (0, 0, 0),
        "left after purging every store ({late_writes} PUTs found the store gone)"
    );
    let found = server.store.orphans(NOW).await.unwrap();
    assert_eq!(found.bodies, 0, "{found:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_stop_reading_large_bodies_pin_a_bounded_number_of_bytes() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    const SIZE: usize = 16 * 1024 * 1024;
    let backend = kvstore::storage::Backend::Postgres {
        url: db.url.clone(),
        options: kvstore::storage::postgres::PgOptions {
            max_read_spool_bytes: 20 * 1024 * 1024,
            op_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    };
    let server = TestServer::start_on(&backend, |_| {}).await;
    let token = server.user("reader").await;
    let store = server.create_store(&token, Some("big")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let big = body(0, 0, SIZE);
    server
        .put_record(
            &token,
            &store,
            "big",
            "application/octet-stream",
            big.clone(),
        )
        .await;
    let path = format!("/v2/key-value-stores/{store}/records/big");

    // A client that takes the headers and then stops reading: its 16 MiB copy stays pinned.
    let stalled = reqwest::Client::new()
        .get(format!("{}{path}", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    // A second one would pin 32 MiB in all: refused once it has waited for room.
    let started = Instant::now();
    let resp = server.get(&path, &token).send().await.unwrap();
    let waited = started.elapsed();
    // (Not the body in the message: it would be 16 MiB.)
    assert_eq!(resp.status(), 503, "a second stalled copy was let through");
    common::assert_error(resp, 503, "service-unavailable").await;
    assert!(
        waited >= Duration::from_secs(2),
        "answered after {waited:?}"
    );

    // Once the stalled client goes, its copy goes with it, and the next read gets the body.
    drop(stalled);
    let resp = server.get(&path, &token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), big);
    server.stop().await;
}
