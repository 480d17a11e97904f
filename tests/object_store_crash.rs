//! kvstore on PostgreSQL + SeaweedFS across `kill -9`: the real binary (`kvstore serve
//! --object-store …`) is killed at a random moment while writers PUT large bodies (20 MiB
//! multipart uploads, 3 MiB and 100 KiB single-request ones, small ones kept in the database),
//! overwrite and DELETE them, and is started again. After every restart:
//! - every acknowledged write reads back byte-exact, every acknowledged delete is gone, the one
//!   operation each writer had in flight is either there whole or not at all (no torn body);
//! - every row's object is in the bucket, and every object in the bucket that no row names is
//!   listed in `object_garbage` (an intent of a write that never committed, or a body a committed
//!   overwrite or delete dropped): nothing is lost track of.
//!
//! At the end a node started with `--object-store-gc-grace 1s` removes that garbage: the bucket
//! then holds exactly the objects rows name and `object_garbage` is empty. The output says how
//! much garbage the crashes left and how soon it was gone, and how many incomplete multipart
//! uploads SeaweedFS lists (kvstore does not abort those of a killed process: see
//! docs/scaling.md).
//!
//! `KVSTORE_S3_CRASH_ROUNDS` (default 4) sets the number of kills.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::{kvstore, Served};
use common::seaweed::{Seaweed, BUCKET};
use common::{object_options, PgDatabase};
use kvstore::storage::objects::Objects;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ADMIN_TOKEN: &str = "kvs_s3_crash_test_admin_token_0123456789";
/// Bodies of this many bytes or more go to the object store.
const MIN_BYTES: u64 = 64 * 1024;
/// Sizes a PUT picks from: a multipart upload (three parts of up to 8 MiB), single-request
/// uploads, and a body kept in the database.
const SIZES: [usize; 4] = [20 << 20, 3 << 20, 100 << 10, 1000];
const WRITERS: usize = 3;
const KEYS_PER_WRITER: usize = 2;

/// A body that names its key and version: 64 KiB blocks, each stamped with both and its own index,
/// so that a body torn between two versions or shifted by a block never compares equal.
fn body(key: &str, version: u64, len: usize) -> Vec<u8> {
    let mut block = vec![0u8; 64 * 1024];
    let mut x = version.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ key.len() as u64;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut out = Vec::with_capacity(len);
    let mut index = 0u64;
    while out.len() < len {
        let stamp = format!("{key}/{version}/{index};");
        let take = block.len().min(len - out.len());
        let mut piece = block[..take].to_vec();
        let n = stamp.len().min(take);
        piece[..n].copy_from_slice(&stamp.as_bytes()[..n]);
        out.extend_from_slice(&piece);
        index += 1;
    }
    out
}

/// One writer's keys: the last acknowledged (version, size) or `None` (absent), and the operation
/// in flight when the server was killed.
#[derive(Clone, Default)]
struct Model {
    acked: BTreeMap<String, Option<(u64, usize)>>,
    in_flight: Option<(String, Option<(u64, usize)>)>,
}

#[derive(Default)]
struct Tally {
    puts: u64,
    multipart_puts: u64,
    deletes: u64,
    in_flight_applied: u64,
    /// PUTs of object-sized bodies a kill cut short: the crash garbage (an intent, and maybe an
    /// object or an incomplete multipart upload) unless the commit made it.
    cut_uploads: u64,
    /// Of those, the multipart ones (over one 8 MiB part).
    cut_multipart: u64,
}

fn serve(db: &str, objects_url: &str, endpoint: &str, grace: &str) -> std::process::Command {
    let mut cmd = kvstore();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", db])
        .args([
            "--object-store",
            objects_url,
            "--object-store-endpoint",
            endpoint,
        ])
        .args(["--object-store-min-bytes", &MIN_BYTES.to_string()])
        .args(["--object-store-gc-grace", grace])
        .env("KVSTORE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KVSTORE_LOG", "warn");
    cmd
}

fn url(node: &Served, store: &str, key: &str) -> String {
    format!("{}/v2/key-value-stores/{store}/records/{key}", node.url)
}

/// Runs one writer until the server is killed; returns its model with the op in flight at the
/// kill, or a description of the first contradiction.
async fn writer(
    http: reqwest::Client,
    base: String,
    store: String,
    mut model: Model,
    mut rng: StdRng,
    killed: Arc<AtomicBool>,
    tally: Arc<std::sync::Mutex<Tally>>,
) -> Result<Model, String> {
    let keys: Vec<String> = model.acked.keys().cloned().collect();
    loop {
        let key = keys[rng.gen_range(0..keys.len())].clone();
        let target = format!("{base}/v2/key-value-stores/{store}/records/{key}");
        let (value, request) = if rng.gen_ratio(1, 5) {
            (None, http.delete(&target))
        } else {
            let version = rng.gen::<u64>();
            let size = SIZES[rng.gen_range(0..SIZES.len())];
            let request = http
                .put(&target)
                .header("content-type", "application/octet-stream")
                .body(body(&key, version, size));
            (Some((version, size)), request)
        };
        model.in_flight = Some((key.clone(), value));
        let sent = request.bearer_auth(ADMIN_TOKEN).send().await;
        let resp = match sent {
            Ok(resp) => resp,
            // The kill cut it short: it may have happened or not.
            Err(_) if killed.load(Ordering::SeqCst) => return Ok(model),
            Err(e) => return Err(format!("{key}: the request failed with no kill: {e}")),
        };
        let want = if value.is_some() { 201 } else { 204 };
        if resp.status().as_u16() != want {
            return Err(format!(
                "{key}: expected {want}, got {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            ));
        }
        model.acked.insert(key, value);
        model.in_flight = None;
        let mut t = tally.lock().unwrap();
        match value {
            Some((_, size)) => {
                t.puts += 1;
                if size > 8 << 20 {
                    t.multipart_puts += 1;
                }
            }
            None => t.deletes += 1,
        }
    }
}

/// Every key holds its last acknowledged value or the one in flight, byte-exact; resolves the
/// in-flight operations by what is there.
async fn verify(
    http: &reqwest::Client,
    node: &Served,
    store: &str,
    models: &mut [Model],
    tally: &mut Tally,
) -> Result<(), String> {
    for model in models.iter_mut() {
        let in_flight = model.in_flight.take();
        for (key, acked) in model.acked.iter_mut() {
            let resp = http
                .get(url(node, store, key))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .map_err(|e| format!("GET {key}: {e}"))?;
            let status = resp.status().as_u16();
            let got = resp.bytes().await.map_err(|e| format!("GET {key}: {e}"))?;
            let flying = match &in_flight {
                Some((k, v)) if k == key => Some(*v),
                _ => None,
            };
            let found = match status {
                404 => None,
                200 => {
                    let matches = |v: &Option<(u64, usize)>| {
                        v.is_some_and(|(version, size)| {
                            got.len() == size && got[..] == body(key, version, size)[..]
                        })
                    };
                    if matches(acked) {
                        *acked
                    } else if let Some(v) = flying.filter(matches) {
                        v
                    } else {
                        return Err(format!(
                            "{key}: {} bytes that are neither the acknowledged value {acked:?} \
                             nor the one in flight {flying:?} (torn or lost)",
                            got.len()
                        ));
                    }
                }
                other => return Err(format!("GET {key}: {other}")),
            };
            if found != *acked {
                if flying != Some(found) {
                    return Err(format!(
                        "{key}: found {found:?}, acknowledged {acked:?}, in flight {flying:?}"
                    ));
                }
                tally.in_flight_applied += 1;
                *acked = found;
            }
        }
    }
    Ok(())
}

/// (objects in the bucket with sizes, objects rows name, names in object_garbage)
async fn state(
    objects: &Objects,
    db: &str,
) -> (BTreeMap<String, u64>, BTreeSet<String>, BTreeSet<String>) {
    use sqlx::Connection;
    let in_bucket = objects.list("").await.unwrap().into_iter().collect();
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    let named: Vec<String> =
        sqlx::query_scalar("SELECT object FROM records WHERE object IS NOT NULL")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let garbage: Vec<String> = sqlx::query_scalar("SELECT name FROM object_garbage")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    (
        in_bucket,
        named.into_iter().collect(),
        garbage.into_iter().collect(),
    )
}

/// Incomplete multipart uploads SeaweedFS lists under `prefix` (ListMultipartUploads).
async fn incomplete_uploads(endpoint: &str, prefix: &str) -> usize {
    let listing = reqwest::get(format!("{endpoint}/{BUCKET}?uploads&prefix={prefix}/"))
        .await
        .unwrap();
    assert_eq!(listing.status(), 200, "ListMultipartUploads");
    listing.text().await.unwrap().matches("<Upload>").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_uploads_and_deletes_loses_nothing_and_leaves_only_listed_garbage() {
    // An instance of its own: the half-gigabyte of bodies goes with it (the shared one's
    // directory outlives the test process).
    let Some(weed) = Seaweed::start() else {
        return;
    };
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let rounds: usize = std::env::var("KVSTORE_S3_CRASH_ROUNDS")
        .ok()
        .map(|s| s.parse().expect("KVSTORE_S3_CRASH_ROUNDS must be a number"))
        .unwrap_or(4);
    let seed: u64 = std::env::var("KVSTORE_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("KVSTORE_CRASH_SEED must be a u64"))
        .unwrap_or_else(rand::random);
    eprintln!(
        "SeaweedFS {}; {rounds} kills, seed {seed} (KVSTORE_CRASH_SEED)",
        weed.version()
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let options = object_options(&weed.endpoint, MIN_BYTES);
    let prefix = options.url.rsplit('/').next().unwrap().to_owned();
    let objects = Objects::new(&options).unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    let mut node = Served::start(serve(&db.url, &options.url, &weed.endpoint, "10m")).await;
    let created = http
        .post(format!("{}/v2/key-value-stores?name=crash", node.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let store = created.json::<serde_json::Value>().await.unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut models: Vec<Model> = (0..WRITERS)
        .map(|w| Model {
            acked: (0..KEYS_PER_WRITER)
                .map(|k| (format!("w{w}-k{k}"), None))
                .collect(),
            in_flight: None,
        })
        .collect();
    let mut tally = Tally::default();

    for round in 0..rounds {
        let killed = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(std::sync::Mutex::new(Tally::default()));
        let tasks: Vec<_> = models
            .iter()
            .map(|m| {
                tokio::spawn(writer(
                    http.clone(),
                    node.url.clone(),
                    store.clone(),
                    m.clone(),
                    StdRng::seed_from_u64(rng.gen()),
                    killed.clone(),
                    shared.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..3000))).await;
        killed.store(true, Ordering::SeqCst);
        node.kill9();
        for (i, task) in tasks.into_iter().enumerate() {
            models[i] = task
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}, writer {i}: {e}"));
        }
        tally.cut_uploads += models
            .iter()
            .filter(
                |m| matches!(m.in_flight, Some((_, Some((_, size)))) if size as u64 >= MIN_BYTES),
            )
            .count() as u64;
        tally.cut_multipart += models
            .iter()
            .filter(|m| matches!(m.in_flight, Some((_, Some((_, size)))) if size > 8 << 20))
            .count() as u64;
        {
            let t = shared.lock().unwrap();
            tally.puts += t.puts;
            tally.multipart_puts += t.multipart_puts;
            tally.deletes += t.deletes;
        }

        // The crash's garbage is all accounted for: in the bucket, not named by a row, and listed.
        let (in_bucket, named, garbage) = state(&objects, &db.url).await;
        for name in &named {
            assert!(
                in_bucket.contains_key(name),
                "round {round}: a row names {name}, which is not in the bucket"
            );
        }
        let unnamed: BTreeMap<_, _> = in_bucket
            .iter()
            .filter(|(name, _)| !named.contains(*name))
            .collect();
        for name in unnamed.keys() {
            assert!(
                garbage.contains(*name),
                "round {round}: {name} is in the bucket, no row names it and object_garbage \
                 does not list it: it would never be removed"
            );
        }
        let bytes: u64 = unnamed.values().copied().sum();
        eprintln!(
            "after kill {round}: {} objects in the bucket, {} named by rows, {} unnamed ({bytes} \
             bytes), {} names in object_garbage",
            in_bucket.len(),
            named.len(),
            unnamed.len(),
            garbage.len()
        );

        node = Served::start(serve(&db.url, &options.url, &weed.endpoint, "10m")).await;
        verify(&http, &node, &store, &mut models, &mut tally)
            .await
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
    }

    let (in_bucket, named, garbage) = state(&objects, &db.url).await;
    let unnamed: u64 = in_bucket
        .iter()
        .filter(|(name, _)| !named.contains(*name))
        .map(|(_, size)| size)
        .sum();
    let uploads = incomplete_uploads(&weed.endpoint, &prefix).await;
    // Now with a short grace: the collector removes every object no row names.
    drop(node);
    let collecting = Instant::now();
    let node = Served::start(serve(&db.url, &options.url, &weed.endpoint, "1s")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (after, named_after, garbage_after) = loop {
        let (b, n, g) = state(&objects, &db.url).await;
        let names: BTreeSet<String> = b.keys().cloned().collect();
        if (names == n && g.is_empty()) || Instant::now() > deadline {
            break (names, n, g);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = collecting.elapsed();
    assert_eq!(
        after, named_after,
        "after the grace the bucket holds other objects than the rows name"
    );
    assert!(
        garbage_after.is_empty(),
        "object_garbage still lists {garbage_after:?}"
    );
    verify(&http, &node, &store, &mut models, &mut tally)
        .await
        .unwrap_or_else(|e| panic!("after the collection (seed {seed}): {e}"));
    eprintln!(
        "{rounds} kills: {} PUTs acknowledged ({} multipart), {} DELETEs; the kills cut {} PUTs \
         to the object store short ({} multipart); {} operations in flight at a kill happened; at the end {} objects in the bucket, {} unnamed ({unnamed} bytes), \
         {} names in object_garbage; {uploads} incomplete multipart uploads listed; a node with \
         --object-store-gc-grace 1s left exactly the {} named objects {:.1}s after its start",
        tally.puts,
        tally.multipart_puts,
        tally.deletes,
        tally.cut_uploads,
        tally.cut_multipart,
        tally.in_flight_applied,
        in_bucket.len(),
        in_bucket.len() - named.len(),
        garbage.len(),
        after.len(),
        took.as_secs_f64()
    );
}
