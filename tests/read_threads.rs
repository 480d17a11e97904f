//! The real `kvstore serve` runs its listings on the `--read-threads` reader threads, and many
//! concurrent listings wait for one instead of making more threads. On tokio's blocking pool each
//! listing that found every thread busy got a new one: 64 concurrent listings took the process
//! from 6 to 149 threads, and its memory with them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::child::{kvstore, Served};
use futures_util::future::join_all;
use serde_json::Value;

const READ_THREADS: usize = 3;
const CONCURRENT: usize = 64;
const KEYS: usize = 300;

/// The names of the threads of process `pid`, from `/proc`.
fn threads_of(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// The JSON answer to `request`.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_listings_wait_for_a_read_thread_instead_of_making_more() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = kvstore();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--read-threads", &READ_THREADS.to_string()]);
    let server = Served::start(cmd).await;
    let token = server.printed_admin_token().unwrap();
    let client = reqwest::Client::new();

    let store = json_of(
        client
            .post(format!("{}/v2/key-value-stores?name=listed", server.url))
            .bearer_auth(&token),
    )
    .await;
    let id = store["data"]["id"].as_str().unwrap().to_owned();
    let puts = (0..KEYS).map(|i| {
        let request = client
            .put(format!(
                "{}/v2/key-value-stores/{id}/records/key-{i:04}",
                server.url
            ))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "n": i }));
        async move {
            let put = request.send().await.unwrap();
            assert!(put.status().is_success(), "{}", put.status());
        }
    });
    join_all(puts).await;

    let pid = server.child.id();
    let before = threads_of(pid);
    let readers = before
        .iter()
        .filter(|name| name.starts_with("kvstore-read-"));
    assert_eq!(readers.count(), READ_THREADS, "{before:?}");
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(before.len()));
    let listers = (0..CONCURRENT).map(|_| {
        let (client, token, most) = (client.clone(), token.clone(), most.clone());
        let url = format!("{}/v2/key-value-stores/{id}/keys?limit=1000", server.url);
        async move {
            for _ in 0..20 {
                let page = json_of(client.get(&url).bearer_auth(&token)).await;
                assert_eq!(page["data"]["count"], KEYS, "{page}");
                most.fetch_max(threads_of(pid).len(), std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    join_all(listers).await;
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    // One thread of slack for whatever else tokio's blocking pool may run meanwhile.
    assert!(
        most <= before.len() + 1,
        "{CONCURRENT} concurrent listings took the server from {} to {most} threads \
         (--read-threads {READ_THREADS}): {before:?}",
        before.len()
    );
}
