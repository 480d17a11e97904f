//! kvstore on PostgreSQL + a replicated SeaweedFS cluster (one master with
//! `-defaultReplication=001`, three volume servers, one filer, one S3 gateway; separate processes
//! on loopback): records written through kvstore all read back exactly after one volume server is
//! killed (`kill -9` of its pid).
//!
//! `KVSTORE_TEST_WEED_REPLICATION` (default `001`) sets the replication; with `000` (one copy)
//! the test fails, as the records on the killed server are lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::pg_s3::{body, PgS3};
use common::seaweed::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_read_back_after_a_volume_server_of_a_replicated_cluster_is_killed() {
    let replication =
        std::env::var("KVSTORE_TEST_WEED_REPLICATION").unwrap_or_else(|_| "001".into());
    let Some(mut cluster) = Cluster::start(&replication) else {
        return;
    };
    let Some(kv) = PgS3::start(
        &cluster.endpoint,
        64 * 1024,
        Duration::from_secs(600),
        Duration::from_secs(10),
    )
    .await
    else {
        return;
    };
    // Single-request uploads of several sizes and multipart ones (8 MiB parts), spread over the
    // cluster's volumes.
    let sizes = [100 << 10, 700 << 10, 3 << 20, 12 << 20, 20 << 20];
    let mut written = Vec::new();
    for round in 0..3u8 {
        for (i, size) in sizes.iter().enumerate() {
            let key = format!("r{round}-s{i}");
            let bytes = body(*size, round * 16 + i as u8);
            let resp = kv.put(&key, bytes.clone()).await;
            assert_eq!(
                resp.status(),
                201,
                "PUT {key}: {}",
                resp.text().await.unwrap()
            );
            written.push((key, bytes));
        }
    }
    let held: Vec<u64> = (0..3).map(|i| cluster.volume_bytes(i)).collect();
    let total: u64 = written.iter().map(|(_, b)| b.len() as u64).sum();
    // The server holding the most: with one copy of everything, the loss that hurts most.
    let victim = (0..3).max_by_key(|&i| held[i]).unwrap();
    assert!(
        held[victim] > 0,
        "no volume server holds data: {held:?}\n{}",
        cluster.logs()
    );
    cluster.kill_volume(victim);
    for (key, bytes) in &written {
        let resp = kv.get(key).await;
        assert_eq!(
            resp.status(),
            200,
            "GET {key} after volume server {victim} was killed (replication {replication}): {}\n{}",
            resp.text().await.unwrap(),
            cluster.logs()
        );
        let got = resp.bytes().await.unwrap();
        assert!(
            got.len() == bytes.len() && got[..] == bytes[..],
            "GET {key}: {} bytes, not the {} written",
            got.len(),
            bytes.len()
        );
    }
    eprintln!(
        "replication {}: {} records ({total} bytes) written; volume servers held {held:?} bytes; \
         volume server {victim} killed; every record read back exactly through kvstore",
        cluster.replication,
        written.len()
    );
}
