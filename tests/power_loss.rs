//! Power loss under the real `kvstore serve`, whatever the engine: the data directory lives on
//! [`PowerFs`] (tests/common/powerfs.rs), a FUSE filesystem in this process that keeps every write
//! since a file's last fsync, and every directory change since its directory's last fsync, apart.
//! Concurrent HTTP writers (the workload and model of tests/crash.rs) PUT small and large (blob
//! file, some spooled) bodies, overwrite and DELETE records, create and delete stores; at a random
//! moment (or at a random request that changes the disk, often inside a commit) the power is cut
//! and the server gets `kill -9`: what survives is what was synced plus a
//! random part of the rest (writes whole, lost or torn at 4 KiB; directory changes kept or lost),
//! for EVERY file of the data directory (the redb file, blob files, the directories). The server
//! restarts on that image and the invariants of tests/crash.rs are checked: every acknowledged
//! write is there, byte for byte, every acknowledged delete gone, no record torn, store counters
//! equal a recount, and `blobs/` holds exactly one file per live record stored in one once the
//! start-up orphan check has run. Now and then the power is also cut while the server starts
//! (during the engine's recovery of the last cut); the first rounds each start on an empty data
//! directory, so that the cut right after a first start (which can take the files it created)
//! comes several times.
//!
//! Unlike tests/crash.rs's `SimDisk` (a redb `StorageBackend`), this needs no hook in the engine,
//! so it keeps working when the engine changes (docs/architecture.md, "Writes at scale").
//!
//! Needs root and /dev/fuse (to mount); without them the test skips loudly (`common::skipped`),
//! and fails under `CI=true`.
//!
//! Environment (optional): `KVSTORE_POWERFS_ROUNDS` (default 40) power cuts under load;
//! `KVSTORE_CRASH_SEED` the seed of every random choice (printed at the start and in every failure).
//! A long run: `KVSTORE_POWERFS_ROUNDS=300 cargo test --release --test power_loss -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/powerfs.rs"]
mod powerfs;
#[path = "common/workload.rs"]
mod workload;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::Served;
use powerfs::{DiskStats, PowerFs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use workload::*;

/// Rounds (the first ones) that start on an empty data directory with new writers: the cut after
/// a first start is the one most likely to take the files that start created (their entries are
/// new), so it comes several times.
const FRESH_STARTS: usize = 8;

/// Mounts the disk image `image` at `mnt`; the error says why this machine cannot.
fn mount(image: &Path, mnt: &Path) -> Result<PowerFs, String> {
    PowerFs::mount(image, mnt).map_err(|e| format!("mounting a FUSE filesystem at {mnt:?}: {e}"))
}

/// The writers' and checker's view of `server`, whose disk is `fs`.
fn http_to(server: &Served, fs: &PowerFs) -> Arc<Http> {
    let mut http = Http::new(&server.url);
    http.power_off = Some(fs.power_flag());
    Arc::new(http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_on_every_file_loses_no_acknowledged_write() {
    let seed = seed();
    let rounds = rounds("KVSTORE_POWERFS_ROUNDS", 40);
    println!(
        "power loss (FUSE): {rounds} rounds, seed {seed} (KVSTORE_CRASH_SEED={seed} repeats the \
         choices)"
    );
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // The first image: the data directory exists (made by whoever installed the server) and is
    // empty; everything in it is the server's to create and sync.
    let mut image = tmp.path().join("image-0");
    std::fs::create_dir_all(image.join("data")).unwrap();
    let data = mnt.join("data");

    let mut fs = match mount(&image, &mnt) {
        Ok(fs) => fs,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: this test must run, but {e} (needs root and /dev/fuse)"
            );
            common::skipped(&format!(
                "{e} (run as root with /dev/fuse to include the power-loss test on every file)"
            ));
            return;
        }
    };

    let mut rng = StdRng::seed_from_u64(seed);
    let mut writers: Vec<WriterModel> = (0..WRITERS).map(WriterModel::new).collect();
    let mut disk = DiskStats::default();
    // What the writers replaced at a fresh start did.
    let mut total = Counts::default();
    let (mut cuts, mut startup_cuts, mut orphans_removed) = (0u64, 0u64, 0u64);
    // Rounds whose cut was armed at a request, and those where that request came (in time).
    let (mut armed, mut cut_at_request) = (0u64, 0u64);
    let fail = |round: usize, server: Option<&Served>, msg: String| -> ! {
        panic!(
            "power loss round {round}: {msg}\n  seed {seed}: rerun with KVSTORE_CRASH_SEED={seed}\n  \
             server stderr (tail):\n{}",
            server.map(Served::stderr_tail).unwrap_or_default()
        )
    };
    // Cuts the power (the server is dead): the surviving image replaces the last one.
    let mut generation = 0;
    let mut cut = |fs: PowerFs, image: &mut std::path::PathBuf, rng: &mut StdRng| {
        generation += 1;
        let next = tmp.path().join(format!("image-{generation}"));
        let stats = fs.cut(&next, rng).unwrap();
        std::fs::remove_dir_all(&*image).unwrap();
        *image = next;
        stats
    };

    for round in 0..=rounds {
        // Sometimes cut the power while the server starts: during the recovery of the last cut.
        if round > 0 && rng.gen_ratio(1, 6) {
            let mut starting = Served::spawn(server_command(&data));
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..60))).await;
            starting.kill9();
            disk.add(&cut(fs, &mut image, &mut rng));
            startup_cuts += 1;
            fs = mount(&image, &mnt).unwrap_or_else(|e| fail(round, None, e));
        }
        let mut server = match start_server(&data).await {
            Ok(s) => s,
            Err(e) => fail(round, None, format!("restart failed: {e}")),
        };
        let mut http = http_to(&server, &fs);
        if let Err(e) = verify(&*http, &mut writers).await {
            fail(round, Some(&server), e);
        }
        match startup_orphans(&server).await {
            Ok((files, _, _)) => orphans_removed += files,
            Err(e) => fail(round, Some(&server), e),
        }
        if let Err(e) = blobs_match_records(&data, &writers).await {
            fail(round, Some(&server), e);
        }
        if round > 0 && round < FRESH_STARTS.min(rounds) {
            // Start over: an empty data directory, new writers.
            server.kill9();
            drop(fs);
            for w in &writers {
                total.add(&w.counts);
            }
            writers = (0..WRITERS).map(WriterModel::new).collect();
            let fresh = tmp.path().join(format!("fresh-{round}"));
            std::fs::create_dir_all(fresh.join("data")).unwrap();
            std::fs::remove_dir_all(&image).unwrap();
            image = fresh;
            fs = mount(&image, &mnt).unwrap_or_else(|e| fail(round, None, e));
            server = start_server(&data)
                .await
                .unwrap_or_else(|e| fail(round, None, format!("start failed: {e}")));
            http = http_to(&server, &fs);
        }
        if round == rounds {
            if let Err(e) = stop_server(&mut server) {
                fail(round, Some(&server), e);
            }
            break;
        }

        let tasks = spawn_writers(&http, &writers, seed, round);
        // The power goes off at a random request that changes the disk (often inside a commit,
        // or at its fsync), the server dying with it; or at a random moment, after the kill.
        if rng.gen_bool(0.5) {
            fs.arm(rng.gen_range(1..300));
            armed += 1;
            let power = fs.power_flag();
            // Unless the writers stop short of that request: then a kill at a random moment.
            let deadline = Instant::now() + Duration::from_millis(1000);
            while !power.load(Ordering::SeqCst) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            cut_at_request += u64::from(power.load(Ordering::SeqCst));
        } else {
            tokio::time::sleep(crash_delay(&mut rng, [0, 20, 200, 500])).await;
        }
        http.killed.store(true, Ordering::SeqCst);
        server.kill9();
        if let Err(e) = join_writers(tasks, &mut writers).await {
            fail(round, Some(&server), e);
        }
        disk.add(&cut(fs, &mut image, &mut rng));
        cuts += 1;
        fs = mount(&image, &mnt).unwrap_or_else(|e| fail(round, None, e));
    }
    drop(fs);

    for w in &writers {
        total.add(&w.counts);
    }
    let records = live_records(&writers);
    println!(
        "power loss (FUSE): {cuts} cuts under load ({cut_at_request} at a chosen request of the \
         {armed} rounds armed so; {} right after a first start) and {startup_cuts} during \
         start-up in {:.1}s; \
         {total}; at the end {records} records, {} in blob files; the start-up orphan checks \
         removed {orphans_removed} blob files; the disk saw {} writes ({} bytes), {} file and {} \
         directory fsyncs; the cuts kept {} unsynced writes whole, tore {}, lost {}, and kept {} \
         unsynced directory changes and lost {}",
        FRESH_STARTS.min(rounds),
        started.elapsed().as_secs_f64(),
        live_blobs(&writers),
        disk.writes,
        disk.written_bytes,
        disk.fsyncs,
        disk.dir_fsyncs,
        disk.kept,
        disk.torn,
        disk.lost,
        disk.dir_kept,
        disk.dir_lost,
    );
    assert!(
        total.acknowledged() > 0 && cuts > 0,
        "nothing was written or cut"
    );
}
