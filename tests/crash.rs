//! Crash safety of the embedded engine (fjall plus blob files) under `kill -9`.
//!
//! [`kill_9_loses_no_acknowledged_write`]: the real `kvstore` binary over one data directory;
//! concurrent HTTP writers PUT small (inline) and large (blob file, some spooled) bodies,
//! overwrite and DELETE records, create and delete stores; the server gets `kill -9` at a random
//! moment (and now and then also while it starts up, during the engine's journal replay), is
//! restarted, and every invariant below is checked. A `kill -9` leaves the operating system's
//! page cache intact, so this proves the server's own ordering (answer only after the commit,
//! blob before the commit that points at it), not that the data reached the disk: power cuts
//! and failed fsyncs are tests/power_loss.rs's and tests/io_faults.rs's, on a filesystem that
//! models a disk's volatile cache for every file. (Until the engine moved from redb to fjall,
//! this file also simulated power loss and failed fsyncs under redb's storage-backend hook;
//! those tests went with redb.)
//!
//! The invariants, checked after every restart:
//! 1. every acknowledged write is there with its latest acknowledged value; the one operation
//!    each writer had in flight at the crash may have happened or not (either is fine);
//! 2. every acknowledged delete (record or store) is gone, and no store appears that nobody
//!    created;
//! 3. no record is torn: every body carries its own length and SHA-256, checked on each read,
//!    and the size in the key listing equals the body's;
//! 4. each store's `recordCount` and `storageBytes` equal a recount over its key listing;
//! 5. (kill -9) the blob files a crash left with no record are gone right after the restart,
//!    without `kvstore fsck`: `blobs/` holds exactly one file per live record stored in one.
//!
//! Environment (all optional):
//! - `KVSTORE_CRASH_ROUNDS` (default 50): kill -9 rounds under load.
//! - `KVSTORE_CRASH_SEED`: the seed of every random choice (operations, body sizes, kill delays,
//!   which unsynced writes survive a cut). Printed at the start and in every failure. The choices
//!   repeat with the same seed; the exact moment a kill lands does not.
//!
//! A long run: `KVSTORE_CRASH_ROUNDS=2000
//! cargo test --release --test crash -- --nocapture` (the summary lines say what was done).

// Test code: a failed unwrap is a failed test. (`allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers of an integration test crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::Served;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "common/workload.rs"]
mod workload;

use workload::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let seed = seed();
    let rounds = rounds("KVSTORE_CRASH_ROUNDS", 50);
    println!(
        "kill -9: {rounds} rounds, seed {seed} (KVSTORE_CRASH_SEED={seed} repeats the choices)"
    );
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut writers: Vec<WriterModel> = (0..WRITERS).map(WriterModel::new).collect();
    let mut kills = 0u64;
    let mut startup_kills = 0u64;
    // Crash garbage removed by the start-up orphan checks: total files and bytes, and the most
    // one crash left.
    let (mut orphans_removed, mut orphan_bytes, mut most_files, mut most_bytes) = (0, 0, 0, 0);
    let fail = |round: usize, server: Option<&Served>, msg: String| -> ! {
        panic!(
            "kill -9 round {round}: {msg}\n  seed {seed}: rerun with KVSTORE_CRASH_SEED={seed}\n  \
             server stderr (tail):\n{}",
            server.map(Served::stderr_tail).unwrap_or_default()
        )
    };

    for round in 0..=rounds {
        // Sometimes kill the server while it starts: during redb's recovery of the last crash.
        if round > 0 && rng.gen_ratio(1, 8) {
            let mut starting = Served::spawn(server_command(&dir));
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await;
            starting.kill9();
            startup_kills += 1;
        }
        let mut server = match start_server(&dir).await {
            Ok(s) => s,
            Err(e) => fail(round, None, format!("restart failed: {e}")),
        };
        let http = Arc::new(Http::new(&server.url));
        if let Err(e) = verify(&*http, &mut writers).await {
            fail(round, Some(&server), e);
        }
        match startup_orphans(&server).await {
            Ok((files, bytes, _)) => {
                orphans_removed += files;
                orphan_bytes += bytes;
                most_files = most_files.max(files);
                most_bytes = most_bytes.max(bytes);
            }
            Err(e) => fail(round, Some(&server), e),
        }
        if let Err(e) = blobs_match_records(&dir, &writers).await {
            fail(round, Some(&server), e);
        }
        if round == rounds {
            // Finally a graceful stop and start: the same data, with nothing in flight.
            if let Err(e) = stop_server(&mut server) {
                fail(round, Some(&server), e);
            }
            drop(server);
            let server = start_server(&dir)
                .await
                .unwrap_or_else(|e| fail(round, None, format!("restart failed: {e}")));
            let http = Http::new(&server.url);
            if let Err(e) = verify(&http, &mut writers).await {
                fail(
                    round,
                    Some(&server),
                    format!("after a graceful restart: {e}"),
                );
            }
            // The blobs the kills left with no record (written, their commit never made, or
            // dropped by a commit whose removal of the file never ran) went at the restarts:
            // fsck finds none.
            let mut server = server;
            if let Err(e) = stop_server(&mut server) {
                fail(round, Some(&server), e);
            }
            drop(server);
            let found = fsck_dry_run(&dir);
            if found != 0 {
                fail(
                    round,
                    None,
                    format!("fsck found {found} orphans the restarts left"),
                );
            }
            break;
        }

        let tasks = spawn_writers(&http, &writers, seed, round);
        tokio::time::sleep(crash_delay(&mut rng, [0, 10, 120, 300])).await;
        http.killed.store(true, Ordering::SeqCst);
        server.kill9();
        kills += 1;
        if let Err(e) = join_writers(tasks, &mut writers).await {
            fail(round, Some(&server), e);
        }
    }

    let mut total = Counts::default();
    for w in &writers {
        total.add(&w.counts);
    }
    let records = live_records(&writers);
    let blobs = live_blobs(&writers);
    println!(
        "kill -9: {rounds} rounds, {kills} kills under load and {startup_kills} during start-up \
         in {:.1}s; {total}; at the end {records} records, {blobs} in blob files, {} files in \
         blobs/; the start-up orphan checks removed {orphans_removed} blob files ({orphan_bytes} \
         bytes) the crashes left, at most {most_files} files ({most_bytes} bytes) after one crash",
        started.elapsed().as_secs_f64(),
        blob_files(&dir)
    );
}

#[test]
fn bodies_detect_tearing() {
    let body = make_body(3, 77, 70_000);
    assert_eq!(body.len(), 70_000);
    assert_eq!(check_body(&body).unwrap(), (3, 77));
    let mut torn = body.clone();
    torn[40_000..44_096].fill(0);
    assert!(check_body(&torn).unwrap_err().contains("torn"));
    assert!(check_body(&body[..60_000]).is_err());
    assert!(check_body(&[0u8; 10]).is_err());
}
