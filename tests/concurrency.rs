//! Many clients writing, overwriting and deleting the keys of one store at once, on whatever
//! backend `KVSTORE_TEST_BACKEND` selects: the final state is one that some serial order of the
//! acknowledged operations produces, the stats equal a full recount, and key listings walked during
//! the writes stay strictly increasing in byte order.

// Test code: a failed unwrap is a failed test. (`allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers of an integration-test crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::{data, TestServer};
use kvstore::storage::OrphanCheck;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const TASKS: usize = 64;
const OPS_PER_TASK: usize = 40;
const KEYS: usize = 100;
/// Half of all operations go to these few keys, so that writers really collide.
const HOT_KEYS: usize = 8;
const PAGE: usize = 7;

/// The keys: mixed case, digits and punctuation, so that byte order differs from any
/// case-insensitive or locale order.
fn key_name(i: usize) -> String {
    const STEMS: [&str; 10] = ["a", "B", "_x", "(p)", "9", "Z.z", "!", "-m", "A'b", "z"];
    format!("{}{}", STEMS[i % STEMS.len()], i / STEMS.len())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The body written; it names its writer, so the final value identifies the operation.
    Put(Vec<u8>),
    Delete,
}

#[derive(Debug, Clone)]
struct Op {
    task: usize,
    seq: usize,
    key: usize,
    kind: Kind,
    /// Nanoseconds on the shared clock: just before the request was sent, and once the whole
    /// answer was in.
    start: u128,
    end: u128,
}

fn body_of(task: usize, seq: usize) -> Vec<u8> {
    // Lengths vary, so that `size` and `storageBytes` are checked for real.
    let filler = (task * 7 + seq * 13) % 97;
    let mut body = format!("task={task:02};op={seq:02};").into_bytes();
    body.extend(std::iter::repeat_n(b'.', filler));
    // Now and then a large body (a blob file, chunks on PostgreSQL), so that racing overwrites
    // and deletes of stored bodies are checked too.
    if seq % 16 == 5 {
        body.extend(std::iter::repeat_n(b'#', 300 * 1024));
    }
    body
}

/// One client: `OPS_PER_TASK` puts and deletes on random keys, each timed on the shared clock.
async fn writer(url: String, token: String, store: String, task: usize, clock: Instant) -> Vec<Op> {
    let http = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(task as u64);
    let mut ops = Vec::with_capacity(OPS_PER_TASK);
    for seq in 0..OPS_PER_TASK {
        let key = if rng.gen_bool(0.5) {
            rng.gen_range(0..HOT_KEYS)
        } else {
            rng.gen_range(0..KEYS)
        };
        let kind = if rng.gen_bool(0.3) {
            Kind::Delete
        } else {
            Kind::Put(body_of(task, seq))
        };
        let path = format!(
            "{url}/v2/key-value-stores/{store}/records/{}",
            key_name(key)
        );
        let start = clock.elapsed().as_nanos();
        let (status, text) = match &kind {
            Kind::Put(body) => {
                let resp = http
                    .put(&path)
                    .bearer_auth(&token)
                    .header("content-type", "text/plain")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("task {task} op {seq}: PUT failed: {e}"));
                (resp.status().as_u16(), resp.text().await.unwrap())
            }
            Kind::Delete => {
                let resp = http
                    .delete(&path)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("task {task} op {seq}: DELETE failed: {e}"));
                (resp.status().as_u16(), resp.text().await.unwrap())
            }
        };
        let end = clock.elapsed().as_nanos();
        let expected = if matches!(kind, Kind::Put(_)) {
            201
        } else {
            204
        };
        assert_eq!(
            status,
            expected,
            "task {task} op {seq} ({kind:?} on {}): {text}",
            key_name(key)
        );
        ops.push(Op {
            task,
            seq,
            key,
            kind,
            start,
            end,
        });
    }
    ops
}

/// A list-keys page of `limit` after `start`.
async fn page(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    store: &str,
    start: Option<&str>,
    limit: usize,
) -> Value {
    let mut query = vec![("limit".to_owned(), limit.to_string())];
    if let Some(s) = start {
        query.push(("exclusiveStartKey".to_owned(), s.to_owned()));
    }
    let resp = http
        .get(format!("{url}/v2/key-value-stores/{store}/keys"))
        .bearer_auth(token)
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    data(resp).await
}

/// Walks the whole listing in pages of `limit`; returns `(key, size)` in the order received.
/// Within one walk, keys must be strictly increasing in byte order (so none appears twice), and
/// every page must be well formed.
async fn walk(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    store: &str,
    limit: usize,
) -> Vec<(String, u64)> {
    let mut items: Vec<(String, u64)> = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let p = page(http, url, token, store, start.as_deref(), limit).await;
        let page_items = p["items"].as_array().unwrap();
        assert!(page_items.len() <= limit, "page over the limit: {p}");
        assert_eq!(p["count"], page_items.len(), "{p}");
        assert_eq!(p["limit"], limit, "{p}");
        for item in page_items {
            let key = item["key"].as_str().unwrap().to_owned();
            let size = item["size"].as_u64().unwrap();
            if let Some((last, _)) = items.last() {
                // `String` compares by bytes: this is UTF-8 byte order.
                assert!(
                    key.as_str() > last.as_str(),
                    "within one walk, {key:?} came after {last:?} (start {start:?}): {p}"
                );
            }
            items.push((key, size));
        }
        if p["isTruncated"] == false {
            assert!(p["nextExclusiveStartKey"].is_null(), "{p}");
            break;
        }
        let next = p["nextExclusiveStartKey"].as_str().unwrap().to_owned();
        assert_eq!(
            Some(next.as_str()),
            items.last().map(|(k, _)| k.as_str()),
            "nextExclusiveStartKey is the last key returned: {p}"
        );
        start = Some(next);
        assert!(items.len() <= 10 * KEYS, "the walk does not end");
    }
    items
}

/// The final state of a key (its body, or `None` when absent) must be the effect of an operation
/// on it that no other operation on it certainly followed: one that was not over before another
/// one started. (An operation takes effect at one instant between its start and its end; if
/// `b.start > a.end`, `b` took effect after `a`, so `a` cannot be the last.)
fn allowed_final_states(ops: &[&Op]) -> Vec<Option<Vec<u8>>> {
    if ops.is_empty() {
        return vec![None];
    }
    let latest_start = ops.iter().map(|o| o.start).max().unwrap();
    ops.iter()
        .filter(|o| o.end >= latest_start)
        .map(|o| match &o.kind {
            Kind::Put(body) => Some(body.clone()),
            Kind::Delete => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_leave_a_serializable_state_and_exact_stats() {
    let srv = TestServer::start().await;
    let token = srv.user("alice").await;
    let store = srv.create_store(&token, Some("contended")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let all_keys: BTreeSet<String> = (0..KEYS).map(key_name).collect();
    assert_eq!(all_keys.len(), KEYS);
    let clock = Instant::now();
    let started = Instant::now();

    // A reader walks the listing in pages of 7 while the writers run.
    let writing = Arc::new(AtomicBool::new(true));
    let reader = {
        let (url, token, store, writing) = (
            srv.url.clone(),
            token.clone(),
            store.clone(),
            writing.clone(),
        );
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut walks = Vec::new();
            while writing.load(Ordering::SeqCst) {
                walks.push(walk(&http, &url, &token, &store, PAGE).await);
            }
            walks
        })
    };

    let writers: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(writer(
                srv.url.clone(),
                token.clone(),
                store.clone(),
                task,
                clock,
            ))
        })
        .collect();
    let mut ops: Vec<Op> = Vec::new();
    for w in writers {
        ops.extend(w.await.unwrap());
    }
    writing.store(false, Ordering::SeqCst);
    let walks = reader.await.unwrap();
    let write_phase = started.elapsed();
    assert_eq!(ops.len(), TASKS * OPS_PER_TASK);

    // Listings seen during the writes: only real keys, each with a size some write gave it.
    assert!(
        !walks.is_empty(),
        "no listing walk finished during the writes"
    );
    let mut sizes_written: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for op in &ops {
        if let Kind::Put(body) = &op.kind {
            sizes_written
                .entry(key_name(op.key))
                .or_default()
                .insert(body.len() as u64);
        }
    }
    for walk in &walks {
        for (key, size) in walk {
            assert!(
                all_keys.contains(key),
                "listed a key never written: {key:?}"
            );
            assert!(
                sizes_written.get(key).is_some_and(|s| s.contains(size)),
                "listed {key} with size {size}, which no write gave it"
            );
        }
    }

    // The final state of every key.
    let http = reqwest::Client::new();
    let mut present: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for k in 0..KEYS {
        let name = key_name(k);
        let resp = http
            .get(format!(
                "{}/v2/key-value-stores/{store}/records/{name}",
                srv.url
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap().to_vec();
        let state = match status {
            200 => Some(body),
            404 => None,
            other => panic!("GET {name}: {other} {}", String::from_utf8_lossy(&body)),
        };
        let on_key: Vec<&Op> = ops.iter().filter(|o| o.key == k).collect();
        let allowed = allowed_final_states(&on_key);
        if !allowed.contains(&state) {
            let mut history: Vec<&&Op> = on_key.iter().collect();
            history.sort_by_key(|o| o.start);
            let history: Vec<String> = history
                .iter()
                .map(|o| {
                    format!(
                        "  [{:>12}..{:>12}] task {} op {} {}",
                        o.start,
                        o.end,
                        o.task,
                        o.seq,
                        match &o.kind {
                            Kind::Put(b) => format!("PUT {}", String::from_utf8_lossy(b)),
                            Kind::Delete => "DELETE".to_owned(),
                        }
                    )
                })
                .collect();
            panic!(
                "key {name}: final state {:?} is not the effect of any operation that could \
                 have been the last one; history (ns):\n{}",
                state
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned()),
                history.join("\n")
            );
        }
        if let Some(body) = state {
            present.insert(name, body);
        }
    }

    // A full listing after the writes: exactly the present keys, with their sizes.
    let listed = walk(&http, &srv.url, &token, &store, PAGE).await;
    let listed: BTreeMap<String, u64> = listed.into_iter().collect();
    let expected: BTreeMap<String, u64> = present
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    assert_eq!(listed, expected, "the listing after the writes");

    // The stats equal a recount, and count every acknowledged write and delete.
    let puts = ops
        .iter()
        .filter(|o| matches!(o.kind, Kind::Put(_)))
        .count();
    let deletes = ops.len() - puts;
    let resp = http
        .get(format!("{}/v2/key-value-stores/{store}", srv.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stats = data(resp).await["stats"].clone();
    let bytes: u64 = present.values().map(|v| v.len() as u64).sum();
    assert_eq!(stats["recordCount"], present.len(), "recordCount: {stats}");
    assert_eq!(stats["storageBytes"], bytes, "storageBytes: {stats}");
    assert_eq!(stats["writeCount"], puts, "writeCount: {stats}");
    assert_eq!(stats["deleteCount"], deletes, "deleteCount: {stats}");
    // Every overwrite and delete freed what it replaced: no stored body is left that no record
    // points at (checked before anything sweeps; nothing is in flight any more).
    let orphans = srv
        .store
        .orphans(OrphanCheck {
            remove: false,
            min_age: std::time::Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(orphans.bodies, 0, "bodies no record points at: {orphans:?}");

    // The operations really overlapped: on average more than a few were in flight at once.
    let busy: u128 = ops.iter().map(|o| o.end - o.start).sum();
    let span =
        ops.iter().map(|o| o.end).max().unwrap() - ops.iter().map(|o| o.start).min().unwrap();
    let concurrency = busy as f64 / span as f64;
    assert!(
        concurrency > 4.0,
        "only {concurrency:.1} operations in flight on average"
    );
    eprintln!(
        "{} ops ({puts} puts, {deletes} deletes) in {write_phase:?}, {concurrency:.1} in flight on \
         average; {} listing walks; {} keys present, {bytes} bytes",
        ops.len(),
        walks.len(),
        present.len()
    );
}

#[test]
fn the_final_state_check_rejects_what_no_serial_order_gives() {
    let op = |start, end, kind| Op {
        task: 0,
        seq: 0,
        key: 0,
        kind,
        start,
        end,
    };
    let a = op(0, 10, Kind::Put(b"a".to_vec()));
    let d = op(20, 30, Kind::Delete); // certainly after `a`
    let b = op(25, 40, Kind::Put(b"b".to_vec())); // overlaps `d`
    let allowed = allowed_final_states(&[&a, &d, &b]);
    assert!(allowed.contains(&None), "the delete may have been last");
    assert!(allowed.contains(&Some(b"b".to_vec())));
    assert!(
        !allowed.contains(&Some(b"a".to_vec())),
        "a value deleted by a later acknowledged delete"
    );
    assert!(!allowed.contains(&Some(b"never written".to_vec())));
    assert_eq!(allowed_final_states(&[]), vec![None]);
    assert_eq!(allowed_final_states(&[&a, &d]), vec![None]);
}
