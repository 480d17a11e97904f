//! Crash safety of the embedded engine (redb plus blob files).
//!
//! - [`kill_9_loses_no_acknowledged_write`]: the real `kvstore` binary over one data directory;
//!   concurrent HTTP writers PUT small (inline) and large (blob file, some spooled) bodies,
//!   overwrite and DELETE records, create and delete stores; the server gets `kill -9` at a
//!   random moment (and now and then also while it starts up, during redb's recovery), is
//!   restarted, and every invariant below is checked. A `kill -9` leaves the operating system's
//!   page cache intact, so this proves the server's own ordering (answer only after the commit,
//!   blob before the commit that points at it), not that the data reached the disk.
//! - [`power_loss_loses_no_acknowledged_write`]: the engine through the `Store` trait over
//!   [`SimDisk`], a redb `StorageBackend` that keeps everything written since the last
//!   `sync_data` apart. At a random moment (often in the middle of a commit, or at the sync of a
//!   fully written one) the power is cut: the disk keeps what was synced plus a random subset of
//!   the later writes, sector by sector (512 B or 4 KiB; a torn write keeps some of its
//!   sectors), at a length the file had at some point since the last sync. The store is dropped
//!   without `close`, the backend refuses every later access (so the old writer thread cannot
//!   touch the image), and the engine is reopened on the image, sometimes losing power again
//!   during that recovery. Only the redb file is simulated: blob files are plain files that the
//!   engine fsyncs (file and directory) before the commit that points at them, so at the cut the
//!   blob directory is taken as it is (hard links into the next generation's directory); the
//!   read check proves that every record pointing at a blob finds it whole. (tests/power_loss.rs
//!   cuts the power on every file and directory, blob files included, under the real binary.)
//! - [`failed_fsync_then_restart_tears_no_record`]: the same, but `sync_data` fails (EIO) with the
//!   power on, and the process (not the machine) restarts: it reads the file as the page cache
//!   has it, with every write of the failed commit, which may therefore come back.
//!   [`a_large_put_whose_fsync_fails_is_absent_or_whole_after_a_restart`] is its smallest case.
//!   Both go with redb: tests/io_faults.rs has their engine-independent replacements
//!   (`failed_fsync_on_powerfs_then_restart_tears_no_record` and
//!   `a_large_put_whose_fsync_fails_on_powerfs_is_absent_or_whole_after_a_restart`).
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
//! - `KVSTORE_POWER_LOSS_ROUNDS` (default 40): power cuts under load.
//! - `KVSTORE_FAILED_SYNC_ROUNDS` (default 20): failed fsyncs under load.
//! - `KVSTORE_CRASH_SEED`: the seed of every random choice (operations, body sizes, kill delays,
//!   which unsynced writes survive a cut). Printed at the start and in every failure. The choices
//!   repeat with the same seed; the exact moment a kill lands does not.
//!
//! A long run: `KVSTORE_CRASH_ROUNDS=2000 KVSTORE_POWER_LOSS_ROUNDS=5000
//! cargo test --release --test crash -- --nocapture` (the summary lines say what was done).

// Test code: a failed unwrap is a failed test. (`allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers of an integration test crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kvstore::storage::{Administration, Housekeeping, RecordStore};
use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::child::Served;
use kvstore::model::{RecordKey, StoreId, StoreInfo, StoreName, Token, UserId, Username};
use kvstore::storage::embedded::EmbeddedStore;
use kvstore::storage::{
    BodyInput, KeyListQuery, LocalBody, OrphanCheck, StoreListQuery, WriteOutcome,
};
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

// ------------------------------------------------------------------------------------------
// Power loss: a simulated disk under redb

/// What survives a cut: each sector written since the last sync survives with this probability.
#[derive(Debug, Clone, Copy)]
struct CutModel {
    sector: usize,
    keep: f64,
}

#[derive(Debug, Clone)]
enum Unsynced {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

struct Disk {
    /// What reads see: the page cache.
    current: Vec<u8>,
    /// What was there at the last `sync_data`: survives any cut.
    durable: Vec<u8>,
    /// Everything since the last sync, in order.
    unsynced: Vec<Unsynced>,
    /// After the cut: what the disk holds. The power stays off from then on.
    image: Option<Vec<u8>>,
    /// Backend calls that change the disk (write, set_len, sync_data).
    ops: u64,
    /// Cut the power at this call.
    cut_at: Option<u64>,
    /// Or at this `sync_data` call (counted like `syncs`): every write of that commit is
    /// written but none synced.
    cut_at_sync: Option<u64>,
    /// Fail this `sync_data` call (counted like `syncs`) with an I/O error, the power staying on.
    fail_sync_at: Option<u64>,
    /// Fail the next `sync_data` of a commit (one with a header write pending) that way.
    fail_commit_sync: bool,
    /// A `sync_data` failed.
    sync_failed: bool,
    model: CutModel,
    rng: StdRng,
    /// The blob directory of the running engine, and where to snapshot it at the cut.
    blobs: (PathBuf, PathBuf),
    syncs: u64,
}

/// A redb storage backend in memory that models a disk with a volatile write cache: writes are
/// durable only once `sync_data` returns. [`SimDisk::cut`] cuts the power.
#[derive(Clone)]
struct SimDisk(Arc<Mutex<Disk>>);

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimDisk")
    }
}

fn power_off() -> std::io::Error {
    std::io::Error::other("the power is off")
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "out of range")
}

impl Disk {
    /// Cuts the power: the disk keeps what was synced, plus, sector by sector, a random part of
    /// what was written since, at a length the file had at some point since the sync. Snapshots
    /// the blob directory as the cut finds it.
    fn cut(&mut self) {
        if self.image.is_some() {
            return;
        }
        let mut image = self.durable.clone();
        let mut lengths = vec![self.durable.len()];
        let sector = self.model.sector;
        for u in &self.unsynced {
            match u {
                Unsynced::SetLen(len) => lengths.push(*len),
                Unsynced::Write { offset, data } => {
                    let end = offset + data.len();
                    let mut at = *offset;
                    while at < end {
                        let next = end.min((at / sector + 1) * sector);
                        if self.rng.gen_bool(self.model.keep) {
                            if image.len() < next {
                                image.resize(next, 0);
                            }
                            image[at..next].copy_from_slice(&data[at - offset..next - offset]);
                        }
                        at = next;
                    }
                }
            }
        }
        let len = lengths[self.rng.gen_range(0..lengths.len())];
        image.resize(len, 0);
        self.image = Some(image);
        self.snapshot_blobs();
    }

    /// Copies the blob directory (hard links) to where the next generation opens it.
    fn snapshot_blobs(&self) {
        let (from, to) = &self.blobs;
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            // A blob being written meanwhile is not yet pointed at by any commit.
            let _ = std::fs::hard_link(entry.path(), to.join(entry.file_name()));
        }
    }

    /// Counts a changing call; cuts the power if this is the chosen one.
    fn tick(&mut self) -> std::io::Result<()> {
        if self.image.is_some() {
            return Err(power_off());
        }
        self.ops += 1;
        if self.cut_at == Some(self.ops) {
            self.cut();
            return Err(power_off());
        }
        Ok(())
    }
}

impl SimDisk {
    fn new(image: Vec<u8>, model: CutModel, rng: StdRng, blobs: (PathBuf, PathBuf)) -> Self {
        SimDisk(Arc::new(Mutex::new(Disk {
            current: image.clone(),
            durable: image,
            unsynced: Vec::new(),
            image: None,
            ops: 0,
            cut_at: None,
            cut_at_sync: None,
            fail_sync_at: None,
            fail_commit_sync: false,
            sync_failed: false,
            model,
            rng,
            blobs,
            syncs: 0,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts the power at the `n`-th changing call from now on (`None`: not by itself).
    fn arm(&self, n: Option<u64>) {
        let mut d = self.lock();
        d.cut_at = n.map(|n| d.ops + n);
        d.cut_at_sync = None;
    }

    /// Cuts the power at the `n`-th `sync_data` from now on.
    fn arm_sync(&self, n: u64) {
        let mut d = self.lock();
        d.cut_at = None;
        d.cut_at_sync = Some(d.syncs + n);
    }

    /// Fails the `n`-th `sync_data` from now on with an I/O error.
    fn fail_sync(&self, n: u64) {
        let mut d = self.lock();
        d.fail_sync_at = Some(d.syncs + n);
    }

    /// Fails the next `sync_data` that would make a commit durable with an I/O error.
    fn fail_commit_sync(&self) {
        self.lock().fail_commit_sync = true;
    }

    fn cut(&self) {
        self.lock().cut();
    }

    fn is_cut(&self) -> bool {
        self.lock().image.is_some()
    }

    /// The power was cut, or a sync failed.
    fn faulted(&self) -> bool {
        let d = self.lock();
        d.image.is_some() || d.sync_failed
    }

    /// After a failed sync and a restart of the process (not of the machine): the file as the
    /// page cache has it, every write included, and the blob directory as the process left it.
    fn restart_image(&self) -> Vec<u8> {
        let d = self.lock();
        d.snapshot_blobs();
        d.current.clone()
    }

    fn image(&self) -> Vec<u8> {
        self.lock().image.clone().expect("the power is on")
    }

    fn stats(&self) -> (u64, u64, usize) {
        let d = self.lock();
        (d.ops, d.syncs, d.current.len())
    }
}

impl redb::StorageBackend for SimDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        let d = self.lock();
        if d.image.is_some() {
            return Err(power_off());
        }
        Ok(d.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let d = self.lock();
        if d.image.is_some() {
            return Err(power_off());
        }
        let offset = usize::try_from(offset).map_err(|_| out_of_range())?;
        let src = d
            .current
            .get(offset..offset + out.len())
            .ok_or_else(out_of_range)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut d = self.lock();
        if d.image.is_some() {
            return Err(power_off());
        }
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        // Pushed before the tick: the power may fail as the length changes.
        d.unsynced.push(Unsynced::SetLen(len));
        d.tick()?;
        d.current.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut d = self.lock();
        d.tick()?;
        if d.cut_at_sync == Some(d.syncs + 1) {
            d.cut();
            return Err(power_off());
        }
        // redb's header (god byte and commit slots) is at offset 0: a sync with a header write
        // pending is the one of a commit (others only make a resize durable).
        let commit = d
            .unsynced
            .iter()
            .any(|u| matches!(u, Unsynced::Write { offset: 0, .. }));
        if d.fail_sync_at == Some(d.syncs + 1) || (d.fail_commit_sync && commit) {
            // As `fsync` reporting EIO: the writes may or may not be on the disk.
            d.fail_sync_at = None;
            d.fail_commit_sync = false;
            d.sync_failed = true;
            return Err(std::io::Error::other("simulated EIO from fsync"));
        }
        let Disk {
            durable, unsynced, ..
        } = &mut *d;
        for u in unsynced.drain(..) {
            match u {
                Unsynced::SetLen(len) => durable.resize(len, 0),
                Unsynced::Write { offset, data } => {
                    durable[offset..offset + data.len()].copy_from_slice(&data)
                }
            }
        }
        d.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut d = self.lock();
        if d.image.is_some() {
            return Err(power_off());
        }
        let offset = usize::try_from(offset).map_err(|_| out_of_range())?;
        if offset + data.len() > d.current.len() {
            return Err(out_of_range());
        }
        // Pushed before the tick: a write the power fails in may be partly on the disk.
        d.unsynced.push(Unsynced::Write {
            offset,
            data: data.to_vec(),
        });
        d.tick()?;
        d.current[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// The engine through the `Store` trait, as the test's writers and checker see it.
struct Direct {
    store: Arc<EmbeddedStore>,
    user: UserId,
    disk: SimDisk,
}

fn lost(e: impl fmt::Display) -> OpError {
    OpError::Lost(e.to_string())
}

fn sid(id: &str) -> StoreId {
    StoreId::parse(id).unwrap()
}

fn rkey(key: &str) -> RecordKey {
    RecordKey::parse(key).unwrap()
}

#[async_trait]
impl Target for Direct {
    fn crashed(&self) -> bool {
        self.disk.faulted()
    }

    async fn create_store(&self, name: &str) -> OpResult<String> {
        let info = StoreInfo::new(
            self.user.clone(),
            Some(StoreName::parse(name).unwrap()),
            None,
        );
        match self.store.store_get_or_create(info).await.map_err(lost)? {
            (store, true) => Ok(store.id.into_string()),
            (store, false) => Err(OpError::Wrong(format!(
                "store {name} already exists ({})",
                store.id
            ))),
        }
    }

    async fn delete_store(&self, id: &str) -> OpResult<()> {
        match self.store.store_delete(&sid(id)).await.map_err(lost)? {
            true => Ok(()),
            false => Err(OpError::Wrong(format!("store {id} did not exist"))),
        }
    }

    async fn put(&self, store: &str, key: &str, body: Vec<u8>) -> OpResult<()> {
        let input = if body.len() > SPOOL_MIN {
            // As the HTTP layer does with large bodies: a file in the spool directory, which the
            // engine moves into blobs/.
            let spool = self.store.spool_dir();
            let len = body.len() as u64;
            tokio::task::spawn_blocking(move || -> std::io::Result<BodyInput> {
                let mut file = tempfile::NamedTempFile::new_in(spool)?;
                file.write_all(&body)?;
                Ok(BodyInput::File {
                    path: file.into_temp_path(),
                    len,
                })
            })
            .await
            .unwrap()
            .map_err(lost)?
        } else {
            BodyInput::Bytes(body.into())
        };
        match self
            .store
            .record_put(&sid(store), &rkey(key), "application/octet-stream", input)
            .await
            .map_err(lost)?
        {
            WriteOutcome::Written => Ok(()),
            WriteOutcome::StoreMissing => Err(OpError::Wrong(format!("store {store} is missing"))),
        }
    }

    async fn delete(&self, store: &str, key: &str) -> OpResult<()> {
        match self
            .store
            .record_delete(&sid(store), &rkey(key))
            .await
            .map_err(lost)?
        {
            WriteOutcome::Written => Ok(()),
            WriteOutcome::StoreMissing => Err(OpError::Wrong(format!("store {store} is missing"))),
        }
    }

    async fn list_stores(&self) -> OpResult<Vec<(String, Option<String>)>> {
        let mut out = Vec::new();
        loop {
            let query = StoreListQuery {
                offset: out.len() as u64,
                limit: 1000,
                desc: false,
                unnamed: true,
            };
            let page = self
                .store
                .stores_list(&self.user, &query)
                .await
                .map_err(lost)?;
            let n = page.items.len();
            out.extend(
                page.items
                    .into_iter()
                    .map(|s| (s.id.into_string(), s.name.map(StoreName::into_string))),
            );
            if n == 0 || out.len() as u64 >= page.total {
                return Ok(out);
            }
        }
    }

    async fn list_keys(&self, store: &str) -> OpResult<Option<Vec<(String, u64)>>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let query = KeyListQuery {
                exclusive_start_key: start.clone(),
                prefix: String::new(),
                limit: 1000,
            };
            let Some(page) = self
                .store
                .keys_list(&sid(store), &query)
                .await
                .map_err(lost)?
            else {
                return Ok(None);
            };
            start = page.items.last().map(|m| m.key.as_str().to_owned());
            out.extend(
                page.items
                    .into_iter()
                    .map(|m| (m.key.into_string(), m.size)),
            );
            if !page.is_truncated {
                return Ok(Some(out));
            }
        }
    }

    async fn get(&self, store: &str, key: &str) -> OpResult<Option<Vec<u8>>> {
        let Some(record) = self
            .store
            .record_get(&sid(store), &rkey(key))
            .await
            .map_err(lost)?
        else {
            return Ok(None);
        };
        match record
            .body
            .into_local(&std::env::temp_dir())
            .await
            .map_err(lost)?
        {
            LocalBody::Bytes(b) => Ok(Some(b.to_vec())),
            LocalBody::File(mut file) => tokio::task::spawn_blocking(move || {
                let mut buf = Vec::new();
                file.read_to_end(&mut buf).map(|_| Some(buf))
            })
            .await
            .unwrap()
            .map_err(lost),
        }
    }

    async fn counts(&self, store: &str) -> OpResult<Option<(u64, u64)>> {
        Ok(self
            .store
            .store_get(&sid(store))
            .await
            .map_err(lost)?
            .map(|s| (s.stats.record_count, s.stats.storage_bytes)))
    }
}

/// What goes wrong under the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The machine loses power: what was written since the last sync is lost, or partly kept.
    PowerCut,
    /// `fsync` fails (EIO) and the server process is restarted, not the machine: the restarted
    /// process reads the file as the page cache has it, every write of the failed commit
    /// included, whether or not it reached the disk.
    FailedSync,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_loses_no_acknowledged_write() {
    fault_rounds(Fault::PowerCut, rounds("KVSTORE_POWER_LOSS_ROUNDS", 40)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_then_restart_tears_no_record() {
    fault_rounds(Fault::FailedSync, rounds("KVSTORE_FAILED_SYNC_ROUNDS", 20)).await;
}

/// Rounds of: open the engine on the disk the last fault left (checking every invariant),
/// writers until the fault, then a restart without `close` (power cut) or after it (failed
/// sync).
async fn fault_rounds(fault: Fault, faults: usize) {
    let seed = seed();
    let what = match fault {
        Fault::PowerCut => "power loss",
        Fault::FailedSync => "failed fsync",
    };
    println!(
        "{what}: {faults} faults, seed {seed} (KVSTORE_CRASH_SEED={seed} repeats the choices)"
    );
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let salt = match fault {
        Fault::PowerCut => 0x90E7,
        Fault::FailedSync => 0xE10,
    };
    let mut rng = StdRng::seed_from_u64(seed ^ salt);
    let mut writers: Vec<WriterModel> = (0..WRITERS).map(WriterModel::new).collect();
    let mut image = Vec::new();
    let mut generation = 0usize;
    let mut user: Option<UserId> = None;
    let (mut recovery_cuts, mut torn_cuts, mut backend_ops, mut syncs) = (0u64, 0u64, 0u64, 0u64);
    let mut orphans_removed = 0u64;
    let fail = |n: usize, msg: String| -> ! {
        panic!("{what}, fault {n}: {msg}\n  seed {seed}: rerun with KVSTORE_CRASH_SEED={seed}")
    };

    for n in 0..=faults {
        // Open the engine on the disk as the last fault left it (sometimes cutting the power
        // again during the recovery), each time in a fresh directory holding the blobs as the
        // fault left them.
        let (store, disk) = loop {
            let dir = tmp.path().join(format!("gen{generation}"));
            let next = tmp
                .path()
                .join(format!("gen{}", generation + 1))
                .join("blobs");
            generation += 1;
            let model = CutModel {
                sector: if rng.gen_bool(0.5) { 512 } else { 4096 },
                keep: match rng.gen_range(0..4) {
                    0 => 0.0,
                    1 => 1.0,
                    _ => rng.gen_range(0.05..0.95),
                },
            };
            let disk = SimDisk::new(
                std::mem::take(&mut image),
                model,
                StdRng::seed_from_u64(rng.gen()),
                (dir.join("blobs"), next),
            );
            let during_recovery = fault == Fault::PowerCut && n > 0 && rng.gen_ratio(1, 6);
            if during_recovery {
                disk.arm(Some(rng.gen_range(1..=40)));
            }
            let opened = {
                let (dir, disk) = (dir.clone(), disk.clone());
                tokio::task::spawn_blocking(move || EmbeddedStore::open_with_backend(&dir, disk))
                    .await
                    .unwrap()
            };
            disk.arm(None);
            if disk.is_cut() {
                recovery_cuts += 1;
                drop(opened);
                image = disk.image();
                continue;
            }
            match opened {
                Ok(store) => break (Arc::new(store), disk),
                Err(e) => fail(n, format!("reopening after the fault failed: {e}")),
            }
        };
        let user_id = match &user {
            None => {
                let created = store
                    .user_create(
                        Username::parse("crash").unwrap(),
                        false,
                        Token::generate().hash(),
                    )
                    .await
                    .unwrap_or_else(|e| fail(n, format!("creating the user: {e}")));
                user = Some(created.id.clone());
                created.id
            }
            Some(id) => {
                match store.user_by_id(id).await {
                    Ok(Some(_)) => {}
                    other => fail(n, format!("the acknowledged user is gone: {other:?}")),
                }
                id.clone()
            }
        };
        let target = Arc::new(Direct {
            store: store.clone(),
            user: user_id,
            disk: disk.clone(),
        });
        if let Err(e) = verify(&*target, &mut writers).await {
            fail(n, e);
        }
        if n == faults {
            // The blobs the faults left with no record go, and nothing live with them.
            let check = OrphanCheck {
                remove: true,
                min_age: Duration::ZERO,
            };
            let first = store
                .orphans(check)
                .await
                .unwrap_or_else(|e| fail(n, format!("orphan check: {e}")));
            orphans_removed = first.removed;
            if first.removed != first.bodies {
                fail(n, format!("the orphan check removed only part: {first:?}"));
            }
            if let Err(e) = verify(&*target, &mut writers).await {
                fail(n, format!("after removing orphans: {e}"));
            }
            let again = store.orphans(check).await.unwrap();
            if again.bodies != 0 {
                fail(n, format!("orphans left: {again:?}"));
            }
            store
                .close()
                .await
                .unwrap_or_else(|e| fail(n, format!("close: {e}")));
            let (ops, s, _) = disk.stats();
            backend_ops += ops;
            syncs += s;
            break;
        }

        // Writers until the fault: at a random backend call (often inside a commit), at a random
        // sync (a whole commit written, nothing synced), or at a random moment from outside.
        match fault {
            Fault::PowerCut => match rng.gen_range(0..5) {
                0 | 1 => disk.arm(Some(rng.gen_range(1..=150))),
                2 | 3 => disk.arm_sync(rng.gen_range(1..=20)),
                _ => {}
            },
            Fault::FailedSync => disk.fail_sync(rng.gen_range(1..=20)),
        }
        let tasks = spawn_writers(&target, &writers, seed ^ salt, n);
        let deadline = Instant::now() + Duration::from_millis(rng.gen_range(2..150));
        while !disk.faulted() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        match fault {
            Fault::PowerCut => disk.cut(),
            Fault::FailedSync => {
                if !disk.faulted() {
                    disk.fail_sync(1);
                }
                let deadline = Instant::now() + OP_TIMEOUT;
                while !disk.faulted() {
                    assert!(Instant::now() < deadline, "no sync within {OP_TIMEOUT:?}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        if let Err(e) = join_writers(tasks, &mut writers).await {
            fail(n, format!("{e} (after the fault)"));
        }
        let (ops, s, _) = disk.stats();
        backend_ops += ops;
        syncs += s;
        drop(target);
        image = match fault {
            Fault::PowerCut => {
                {
                    let d = disk.lock();
                    if !d.unsynced.is_empty() && d.model.keep > 0.0 && d.model.keep < 1.0 {
                        torn_cuts += 1;
                    }
                }
                // Pull the plug: no close. The writer thread ends once the last handle is gone;
                // the disk refuses everything it may still try.
                drop(store);
                disk.image()
            }
            Fault::FailedSync => {
                // The process stops (whatever the engine does after the failed sync, it has
                // done), and starts again on the same files.
                let _ = store.close().await;
                drop(store);
                disk.restart_image()
            }
        };
    }

    let mut total = Counts::default();
    for w in &writers {
        total.add(&w.counts);
    }
    let extra = match fault {
        Fault::PowerCut => format!(
            " ({torn_cuts} keeping a random part of the unsynced writes, and {recovery_cuts} more \
             during recovery)"
        ),
        Fault::FailedSync => String::new(),
    };
    println!(
        "{what}: {faults} faults under load{extra} in {:.1}s; {backend_ops} backend writes and \
         syncs ({syncs} syncs); {total}; {orphans_removed} orphan blobs removed at the end",
        started.elapsed().as_secs_f64()
    );
}

/// The smallest case of [`failed_fsync_then_restart_tears_no_record`]: one large PUT whose
/// commit's fsync fails. The PUT must not be acknowledged, and after a restart of the process the
/// record must be absent or whole: the failed commit is in the page cache, so it may come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_put_whose_fsync_fails_is_absent_or_whole_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = |n: usize| tmp.path().join(format!("gen{n}"));
    let model = CutModel {
        sector: 4096,
        keep: 1.0,
    };
    let open = |n: usize, image: Vec<u8>| {
        let disk = SimDisk::new(
            image,
            model,
            StdRng::seed_from_u64(1),
            (gen(n).join("blobs"), gen(n + 1).join("blobs")),
        );
        let store = EmbeddedStore::open_with_backend(&gen(n), disk.clone()).unwrap();
        (store, disk)
    };
    let (store, disk) = open(0, Vec::new());
    let user = store
        .user_create(
            Username::parse("crash").unwrap(),
            false,
            Token::generate().hash(),
        )
        .await
        .unwrap();
    let (info, _) = store
        .store_get_or_create(StoreInfo::new(user.id, None, None))
        .await
        .unwrap();
    let body = make_body(0, 1, 100_000);
    disk.fail_commit_sync();
    let put = store
        .record_put(
            &info.id,
            &rkey("big"),
            "application/octet-stream",
            BodyInput::Bytes(body.clone().into()),
        )
        .await;
    assert!(put.is_err(), "acknowledged although its fsync failed");
    let _ = store.close().await;
    drop(store);

    let (store, _disk) = open(1, disk.restart_image());
    match store.record_get(&info.id, &rkey("big")).await {
        Ok(None) => {}
        Ok(Some(record)) => {
            let got = common::contents::body_bytes(record.body).await;
            assert!(got == body, "the record came back with another body");
        }
        Err(e) => panic!(
            "the record of the failed commit came back (the commit is in the page cache) but \
             cannot be read, its blob file is gone: {e}"
        ),
    }
    store.close().await.unwrap();
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
