//! The fold of the counter shards into the store rows (`src/storage/postgres/counters.rs`):
//! under writers on two nodes, with both nodes folding every few milliseconds and the test folding
//! too, a store's counters equal a recount of its records at every instant (checked in one
//! statement, so from one snapshot, over and over during the race), the acknowledged writes and
//! deletes are all counted, and once the writers stop a fold leaves no shard row behind. PUTs
//! that arrive together commit together (`src/storage/postgres/group_commit.rs`) and are counted
//! as exactly.
//!
//! Every test makes a fresh database and returns early, saying so, when PostgreSQL is
//! unreachable outside CI.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{PgDatabase, TestServer};
use kvstore::storage::postgres::{PgOptions, PgStore};
use kvstore::storage::Housekeeping;
use reqwest::Method;
use sqlx::Connection;

/// A store's counters (its row plus its shards) beside a recount of its records, all from one
/// statement's snapshot: (counted records, counted bytes, records, bytes).
const COUNTED_AND_RECOUNTED: &str = "
SELECT s.record_count + coalesce((SELECT sum(c.record_count) FROM store_counters c
            WHERE c.store_id = s.id), 0)::bigint,
    s.storage_bytes + coalesce((SELECT sum(c.storage_bytes) FROM store_counters c
            WHERE c.store_id = s.id), 0)::bigint,
    (SELECT count(*) FROM records r WHERE r.store_id = s.id),
    (SELECT coalesce(sum(r.size), 0) FROM records r WHERE r.store_id = s.id)::bigint
FROM stores s WHERE s.id = $1";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn folding_the_counter_shards_under_writers_on_two_nodes_keeps_the_counters_exact() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    // Both nodes fold every 5 ms, racing the writers and each other.
    let backend = kvstore::storage::Backend::Postgres {
        url: db.url.clone(),
        options: PgOptions {
            counter_fold_interval: Duration::from_millis(5),
            ..Default::default()
        },
    };
    let a = TestServer::start_on(&backend, |_| {}).await;
    let b = TestServer::start_on(&backend, |_| {}).await;
    let token = a.user("writer").await;
    let id = a.create_store(&token, Some("busy")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A third node that only folds, as often as it can.
    let folder = PgStore::connect(&db.url, &PgOptions::default())
        .await
        .unwrap();
    let generation_before: i64 = {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query_scalar("SELECT value FROM kvstore_generation")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };

    const WRITERS: usize = 16;
    const OPS: usize = 60;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let node = if w % 2 == 0 { &a } else { &b };
        let (http, url, token, id) = (
            node.http.clone(),
            node.url.clone(),
            token.clone(),
            id.clone(),
        );
        writers.push(tokio::spawn(async move {
            let (mut puts, mut deletes) = (0u64, 0u64);
            for i in 0..OPS {
                let key = format!("k{}", (w * 7 + i * 3) % 40);
                let path = format!("{url}/v2/key-value-stores/{id}/records/{key}");
                if i % 4 == 3 {
                    let resp = http.delete(&path).bearer_auth(&token).send().await.unwrap();
                    assert_eq!(resp.status(), 204, "DELETE {key}");
                    deletes += 1;
                } else {
                    let resp = http
                        .put(&path)
                        .bearer_auth(&token)
                        .header("content-type", "application/octet-stream")
                        .body(vec![b'x'; 10 + (w * 31 + i * 17) % 3000])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 201, "PUT {key}");
                    puts += 1;
                }
            }
            (puts, deletes)
        }));
    }

    // Meanwhile: the counters are checked against a recount, and the test folds too.
    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let (url, id, done) = (db.url.clone(), id.clone(), done.clone());
        tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut checks = 0u64;
            while !done.load(Ordering::SeqCst) {
                let (count, bytes, recount, rebytes): (i64, i64, i64, i64) =
                    sqlx::query_as(COUNTED_AND_RECOUNTED)
                        .bind(&id)
                        .fetch_one(&mut conn)
                        .await
                        .unwrap();
                assert_eq!(
                    (count, bytes),
                    (recount, rebytes),
                    "counters against a recount from the same snapshot, check {checks}"
                );
                checks += 1;
            }
            checks
        })
    };
    let folding = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut folded = 0;
            while !done.load(Ordering::SeqCst) {
                folded += folder.fold_counters().await.unwrap();
            }
            (folder, folded)
        })
    };
    let (mut puts, mut deletes) = (0, 0);
    for writer in writers {
        let (p, d) = writer.await.unwrap();
        puts += p;
        deletes += d;
    }
    done.store(true, Ordering::SeqCst);
    let checks = checker.await.unwrap();
    let (folder, folded_during) = folding.await.unwrap();
    assert!(checks > 10, "only {checks} checks ran during the race");
    assert!(folded_during > 0, "the test's folds folded nothing");

    // Every acknowledged write and delete is counted, on both nodes.
    for node in [&a, &b] {
        let resp = node
            .req(
                Method::GET,
                &format!("/v2/key-value-stores/{id}"),
                Some(&token),
            )
            .send()
            .await
            .unwrap();
        let stats = common::data(resp).await["stats"].clone();
        assert_eq!(stats["writeCount"], puts, "{stats}");
        assert_eq!(stats["deleteCount"], deletes, "{stats}");
    }
    a.stop().await;
    b.stop().await;

    // Nothing writes now, nobody else folds: one fold leaves no shard row, the counters exact,
    // and no node's access caches invalidated.
    folder.fold_counters().await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let shards: i64 = sqlx::query_scalar("SELECT count(*) FROM store_counters")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(shards, 0, "shard rows left after a fold with no writer");
    let (count, bytes, recount, rebytes): (i64, i64, i64, i64) =
        sqlx::query_as(COUNTED_AND_RECOUNTED)
            .bind(&id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((count, bytes), (recount, rebytes));
    let (writes, deletes_counted): (i64, i64) =
        sqlx::query_as("SELECT write_count, delete_count FROM stores WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        (writes as u64, deletes_counted as u64),
        (puts, deletes),
        "the store row alone holds every write and delete"
    );
    let generation_after: i64 = sqlx::query_scalar("SELECT value FROM kvstore_generation")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        generation_after, generation_before,
        "a fold bumped the access generation"
    );
    folder.close().await.unwrap();
}

/// PUTs that arrive together commit together (`src/storage/postgres/group_commit.rs`): PUTs sent
/// all at once to two stores, a third of them to one key, all answer 201; the distinct keys took
/// far fewer transactions than PUTs (each row's `xmin` names the transaction that wrote it), the
/// repeated key holds one of the bodies sent to it, and both stores' counters equal a recount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_that_arrive_together_commit_together_and_stay_counted() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let node = TestServer::start_on(&db.backend(), |_| {}).await;
    let token = node.user("writer").await;
    let mut stores = Vec::new();
    for name in ["first", "second"] {
        let store = node.create_store(&token, Some(name)).await;
        stores.push(store["id"].as_str().unwrap().to_owned());
    }
    const DISTINCT: usize = 64;
    const SAME: usize = 64;
    let mut puts = Vec::new();
    for (s, id) in stores.iter().enumerate() {
        for i in 0..DISTINCT {
            puts.push((id.clone(), format!("k{i}"), vec![b'a' + s as u8; 100 + i]));
        }
    }
    for i in 0..SAME {
        puts.push((
            stores[0].clone(),
            "same".to_owned(),
            format!("body {i:03}").into_bytes(),
        ));
    }
    let statuses = futures_util::future::join_all(puts.into_iter().map(|(id, key, body)| {
        let (http, url, token) = (node.http.clone(), node.url.clone(), token.clone());
        async move {
            http.put(format!("{url}/v2/key-value-stores/{id}/records/{key}"))
                .bearer_auth(&token)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");

    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM records WHERE key <> 'same'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let distinct_puts = (stores.len() * DISTINCT) as i64;
    assert!(
        transactions * 2 <= distinct_puts,
        "{transactions} transactions for {distinct_puts} PUTs sent at once"
    );
    let resp = node
        .get(
            &format!("/v2/key-value-stores/{}/records/same", stores[0]),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let sent = body
        .strip_prefix("body ")
        .and_then(|n| n.parse::<usize>().ok());
    assert!(sent.is_some_and(|n| n < SAME), "{body:?}");
    for (id, records) in stores.iter().zip([DISTINCT + 1, DISTINCT]) {
        let (count, bytes, recount, rebytes): (i64, i64, i64, i64) =
            sqlx::query_as(COUNTED_AND_RECOUNTED)
                .bind(id)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!((count, bytes), (recount, rebytes), "store {id}");
        assert_eq!(count, records as i64, "store {id}");
    }
    node.stop().await;
}
