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
//!   read check proves that every record pointing at a blob finds it whole.
//! - [`failed_fsync_then_restart_tears_no_record`]: the same, but `sync_data` fails (EIO) with the
//!   power on, and the process (not the machine) restarts: it reads the file as the page cache
//!   has it, with every write of the failed commit, which may therefore come back.
//!   [`a_large_put_whose_fsync_fails_is_absent_or_whole_after_a_restart`] is its smallest case.
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
use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::child::{kvstore, Served};
use kvstore::model::{RecordKey, StoreId, StoreInfo, StoreName, Token, UserId, Username};
use kvstore::storage::embedded::EmbeddedStore;
use kvstore::storage::{
    BodyInput, KeyListQuery, LocalBody, OrphanCheck, StoreListQuery, WriteOutcome,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};

const ADMIN_TOKEN: &str = "kvs_crash_test_admin_token_0123456789";
/// No single request or storage call of a healthy server takes this long.
const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// Writers per round; each owns its stores, so the order of its acknowledgements is the order of
/// its writes.
const WRITERS: usize = 4;
/// Keys per store (`k00`..), so that overwrites and deletes hit existing records often.
const KEYS: usize = 12;
/// Stores a writer keeps at most.
const MAX_STORES: usize = 3;
/// Bodies above this live in blob files (the engine's `INLINE_MAX`).
const INLINE_MAX: usize = 64 * 1024;
/// Bodies above this are spooled to a file by the HTTP layer and moved into `blobs/`.
const SPOOL_MIN: usize = 1024 * 1024;

// ------------------------------------------------------------------------------------------
// Self-checking bodies

const MAGIC: &str = "kvcrash1";
/// Every body starts with a header line of this length: who wrote it, its tag, the payload's
/// length and SHA-256.
const HEADER_LEN: usize = 128;

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The body of value `tag` of `writer`: `total` bytes (at least [`HEADER_LEN`]).
fn make_body(writer: usize, tag: u64, total: usize) -> Vec<u8> {
    let total = total.max(HEADER_LEN);
    let n = total - HEADER_LEN;
    let mut body = vec![0u8; total];
    let mut state = ((writer as u64) << 48) ^ tag;
    for chunk in body[HEADER_LEN..].chunks_mut(8) {
        let word = splitmix(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    let hash = hex::encode(Sha256::digest(&body[HEADER_LEN..]));
    let mut header = format!("{MAGIC} w={writer} t={tag} n={n} h={hash}");
    assert!(header.len() < HEADER_LEN, "header too long: {header}");
    while header.len() < HEADER_LEN - 1 {
        header.push(' ');
    }
    header.push('\n');
    body[..HEADER_LEN].copy_from_slice(header.as_bytes());
    body
}

/// Checks a body against its header; returns (writer, tag).
fn check_body(body: &[u8]) -> Result<(usize, u64), String> {
    if body.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than the header", body.len()));
    }
    let header = std::str::from_utf8(&body[..HEADER_LEN])
        .map_err(|_| "the header is not UTF-8 (torn or foreign bytes)".to_owned())?;
    let mut fields = header.split_whitespace();
    if fields.next() != Some(MAGIC) {
        return Err(format!("no {MAGIC} header: {:?}", header.trim_end()));
    }
    let mut field = |name: &str| -> Result<String, String> {
        fields
            .next()
            .and_then(|f| f.strip_prefix(name))
            .and_then(|f| f.strip_prefix('='))
            .map(str::to_owned)
            .ok_or_else(|| format!("no {name}= in header {:?}", header.trim_end()))
    };
    let writer: usize = field("w")?.parse().map_err(|_| "bad w=".to_owned())?;
    let tag: u64 = field("t")?.parse().map_err(|_| "bad t=".to_owned())?;
    let n: usize = field("n")?.parse().map_err(|_| "bad n=".to_owned())?;
    let hash = field("h")?;
    let payload = &body[HEADER_LEN..];
    if payload.len() != n {
        return Err(format!(
            "value w={writer} t={tag}: payload is {} bytes, its header says {n}",
            payload.len()
        ));
    }
    if hex::encode(Sha256::digest(payload)) != hash {
        return Err(format!(
            "value w={writer} t={tag}: payload does not match its SHA-256 (torn)"
        ));
    }
    Ok((writer, tag))
}

// ------------------------------------------------------------------------------------------
// The model: what each writer has been told

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Val {
    tag: u64,
    size: u64,
}

#[derive(Debug, Clone)]
struct StoreModel {
    name: String,
    records: BTreeMap<String, Val>,
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        store: String,
        key: String,
        val: Val,
    },
    Delete {
        store: String,
        key: String,
    },
    CreateStore {
        name: String,
    },
    DeleteStore {
        store: String,
    },
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    puts: u64,
    overwrites: u64,
    blob_puts: u64,
    deletes: u64,
    store_creates: u64,
    store_deletes: u64,
    /// Operations in flight at a crash, and how many of them turned out to have happened.
    in_flight: u64,
    in_flight_applied: u64,
    /// Records read back and checked.
    verified_records: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.puts += o.puts;
        self.overwrites += o.overwrites;
        self.blob_puts += o.blob_puts;
        self.deletes += o.deletes;
        self.store_creates += o.store_creates;
        self.store_deletes += o.store_deletes;
        self.in_flight += o.in_flight;
        self.in_flight_applied += o.in_flight_applied;
        self.verified_records += o.verified_records;
    }

    fn acknowledged(&self) -> u64 {
        self.puts + self.deletes + self.store_creates + self.store_deletes
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} acknowledged operations ({} PUTs of which {} overwrites and {} blobs, {} DELETEs, \
             {} store creates, {} store deletes); {} in flight at a crash ({} of them happened); \
             {} records read back and verified",
            self.acknowledged(),
            self.puts,
            self.overwrites,
            self.blob_puts,
            self.deletes,
            self.store_creates,
            self.store_deletes,
            self.in_flight,
            self.in_flight_applied,
            self.verified_records
        )
    }
}

#[derive(Debug, Clone)]
struct WriterModel {
    writer: usize,
    /// Store id → what it holds.
    stores: BTreeMap<String, StoreModel>,
    next_tag: u64,
    next_store: u64,
    /// The operation in flight when the server died: either outcome is fine.
    in_flight: Option<Op>,
    counts: Counts,
}

impl WriterModel {
    fn new(writer: usize) -> Self {
        Self {
            writer,
            stores: BTreeMap::new(),
            next_tag: 1,
            next_store: 1,
            in_flight: None,
            counts: Counts::default(),
        }
    }

    /// The next operation, and the body of a PUT.
    fn choose(&mut self, rng: &mut StdRng) -> (Op, Option<Vec<u8>>) {
        let stores = self.stores.len();
        if stores == 0 || (stores < MAX_STORES && rng.gen_ratio(1, 30)) {
            let name = format!("w{}-s{}", self.writer, self.next_store);
            self.next_store += 1;
            return (Op::CreateStore { name }, None);
        }
        let store = self
            .stores
            .keys()
            .nth(rng.gen_range(0..stores))
            .unwrap()
            .clone();
        if rng.gen_ratio(1, 50) {
            return (Op::DeleteStore { store }, None);
        }
        let key = format!("k{:02}", rng.gen_range(0..KEYS));
        if rng.gen_ratio(1, 5) {
            return (Op::Delete { store, key }, None);
        }
        let size = match rng.gen_range(0..100) {
            0..=54 => rng.gen_range(HEADER_LEN..2048),
            55..=74 => rng.gen_range(2048..INLINE_MAX - 256),
            75..=77 => INLINE_MAX,
            78..=80 => INLINE_MAX + 1,
            81..=97 => rng.gen_range(INLINE_MAX + 2..256 * 1024),
            _ => rng.gen_range(SPOOL_MIN + 1..SPOOL_MIN + 64 * 1024),
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        let body = make_body(self.writer, tag, size);
        let val = Val {
            tag,
            size: body.len() as u64,
        };
        (Op::Put { store, key, val }, Some(body))
    }

    /// The operation was acknowledged.
    fn acknowledge(&mut self, op: Op, created: Option<String>) {
        match op {
            Op::Put { store, key, val } => {
                let records = &mut self.stores.get_mut(&store).unwrap().records;
                self.counts.puts += 1;
                if val.size > INLINE_MAX as u64 {
                    self.counts.blob_puts += 1;
                }
                if records.insert(key, val).is_some() {
                    self.counts.overwrites += 1;
                }
            }
            Op::Delete { store, key } => {
                self.stores.get_mut(&store).unwrap().records.remove(&key);
                self.counts.deletes += 1;
            }
            Op::CreateStore { name } => {
                let id = created.unwrap();
                self.stores.insert(
                    id,
                    StoreModel {
                        name,
                        records: BTreeMap::new(),
                    },
                );
                self.counts.store_creates += 1;
            }
            Op::DeleteStore { store } => {
                self.stores.remove(&store);
                self.counts.store_deletes += 1;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// What the writers and the checker talk to: the HTTP server, or the engine directly

#[derive(Debug)]
enum OpError {
    /// No answer (the server died, the disk lost power): the outcome is unknown.
    Lost(String),
    /// An answer that contradicts the model (a wrong status, a missing store): always a failure.
    Wrong(String),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Lost(m) => write!(f, "no answer: {m}"),
            OpError::Wrong(m) => write!(f, "wrong answer: {m}"),
        }
    }
}

type OpResult<T> = Result<T, OpError>;

#[async_trait]
trait Target: Send + Sync + 'static {
    /// Whether the crash (kill, power cut) has begun: failures from then on are expected.
    fn crashed(&self) -> bool;
    /// Creates a named store; its id.
    async fn create_store(&self, name: &str) -> OpResult<String>;
    async fn delete_store(&self, id: &str) -> OpResult<()>;
    async fn put(&self, store: &str, key: &str, body: Vec<u8>) -> OpResult<()>;
    async fn delete(&self, store: &str, key: &str) -> OpResult<()>;
    /// All stores of the user: (id, name).
    async fn list_stores(&self) -> OpResult<Vec<(String, Option<String>)>>;
    /// Every key of a store with its size; `None` when the store does not exist.
    async fn list_keys(&self, store: &str) -> OpResult<Option<Vec<(String, u64)>>>;
    async fn get(&self, store: &str, key: &str) -> OpResult<Option<Vec<u8>>>;
    /// `recordCount` and `storageBytes`.
    async fn counts(&self, store: &str) -> OpResult<Option<(u64, u64)>>;
}

/// Applies one operation; `Some(id)` for a created store.
async fn apply<T: Target>(t: &T, op: &Op, body: Option<Vec<u8>>) -> OpResult<Option<String>> {
    match op {
        Op::Put { store, key, .. } => t.put(store, key, body.unwrap()).await.map(|()| None),
        Op::Delete { store, key } => t.delete(store, key).await.map(|()| None),
        Op::CreateStore { name } => t.create_store(name).await.map(Some),
        Op::DeleteStore { store } => t.delete_store(store).await.map(|()| None),
    }
}

/// One writer: operations one after another until the crash. Returns its model, with the
/// operation that got no answer as `in_flight`.
async fn run_writer<T: Target>(
    target: Arc<T>,
    mut model: WriterModel,
    mut rng: StdRng,
) -> Result<WriterModel, String> {
    loop {
        if target.crashed() {
            return Ok(model);
        }
        let (op, body) = model.choose(&mut rng);
        match tokio::time::timeout(OP_TIMEOUT, apply(&*target, &op, body)).await {
            Ok(Ok(created)) => model.acknowledge(op, created),
            Ok(Err(OpError::Lost(msg))) => {
                if !target.crashed() {
                    return Err(format!(
                        "writer {}: {op:?} failed before the crash: {msg}",
                        model.writer
                    ));
                }
                model.counts.in_flight += 1;
                model.in_flight = Some(op);
                return Ok(model);
            }
            Ok(Err(wrong @ OpError::Wrong(_))) => {
                return Err(format!("writer {}: {op:?}: {wrong}", model.writer));
            }
            Err(_) => {
                return Err(format!(
                    "writer {}: {op:?} got no answer within {OP_TIMEOUT:?}",
                    model.writer
                ))
            }
        }
    }
}

/// Checks every invariant against the models and resolves their in-flight operations by what
/// is there. `Err` describes the first violation.
async fn verify<T: Target>(t: &T, writers: &mut [WriterModel]) -> Result<(), String> {
    let listed = t
        .list_stores()
        .await
        .map_err(|e| format!("listing stores: {e}"))?;
    let mut unexpected: BTreeMap<String, Option<String>> = listed.iter().cloned().collect();
    if unexpected.len() != listed.len() {
        return Err(format!("the store listing repeats a store: {listed:?}"));
    }
    let by_name: BTreeMap<String, String> = listed
        .iter()
        .filter_map(|(id, name)| name.clone().map(|n| (n, id.clone())))
        .collect();

    for w in writers.iter_mut() {
        let in_flight = w.in_flight.take();
        let mut applied = false;
        // Stores: acknowledged ones are there, deleted ones gone.
        let mut gone = Vec::new();
        for (id, s) in &w.stores {
            let maybe_deleted =
                matches!(&in_flight, Some(Op::DeleteStore { store }) if store == id);
            if unexpected.remove(id).is_none() {
                if maybe_deleted {
                    gone.push(id.clone());
                    applied = true;
                } else {
                    return Err(format!(
                        "writer {}: store {} ({id}) was acknowledged as created but is missing",
                        w.writer, s.name
                    ));
                }
            }
        }
        for id in gone {
            w.stores.remove(&id);
        }
        if let Some(Op::CreateStore { name }) = &in_flight {
            if let Some(id) = by_name.get(name) {
                unexpected.remove(id);
                w.stores.insert(
                    id.clone(),
                    StoreModel {
                        name: name.clone(),
                        records: BTreeMap::new(),
                    },
                );
                applied = true;
            }
        }
        // Records of every store.
        for (id, s) in w.stores.iter_mut() {
            let keys = t
                .list_keys(id)
                .await
                .map_err(|e| format!("listing keys of {}: {e}", s.name))?
                .ok_or_else(|| {
                    format!("store {} ({id}) is listed but has no keys listing", s.name)
                })?;
            let (count, bytes) = t
                .counts(id)
                .await
                .map_err(|e| format!("getting store {}: {e}", s.name))?
                .ok_or_else(|| format!("store {} ({id}) is listed but GET says 404", s.name))?;
            let recount = keys.len() as u64;
            let rebytes: u64 = keys.iter().map(|(_, size)| size).sum();
            if (count, bytes) != (recount, rebytes) {
                return Err(format!(
                    "store {} ({id}): stats say recordCount {count} and storageBytes {bytes}, \
                     a recount of its keys gives {recount} and {rebytes}",
                    s.name
                ));
            }
            let pending = in_flight.as_ref().filter(|op| match op {
                Op::Put { store, .. } | Op::Delete { store, .. } => store == id,
                _ => false,
            });
            let mut seen = BTreeMap::new();
            for (key, size) in keys {
                let acknowledged = s.records.get(&key).copied();
                let in_flight_val = match pending {
                    Some(Op::Put { key: k, val, .. }) if *k == key => Some(*val),
                    _ => None,
                };
                let body = t
                    .get(id, &key)
                    .await
                    .map_err(|e| {
                        format!(
                            "GET {}/{key} (listed with {size} bytes; the last acknowledged value \
                             is {acknowledged:?}, the one in flight {in_flight_val:?}): {e}",
                            s.name
                        )
                    })?
                    .ok_or_else(|| format!("{}/{key} is listed but GET says 404", s.name))?;
                w.counts.verified_records += 1;
                if body.len() as u64 != size {
                    return Err(format!(
                        "{}/{key}: listed with {size} bytes, GET returns {}",
                        s.name,
                        body.len()
                    ));
                }
                let (writer, tag) =
                    check_body(&body).map_err(|e| format!("{}/{key} is torn: {e}", s.name))?;
                let val = Val { tag, size };
                if writer != w.writer || (Some(val) != acknowledged && Some(val) != in_flight_val) {
                    return Err(format!(
                        "{}/{key} holds value w={writer} t={tag} ({size} bytes); the last \
                         acknowledged value is {acknowledged:?}, the one in flight \
                         {in_flight_val:?}",
                        s.name
                    ));
                }
                if Some(val) == in_flight_val && Some(val) != acknowledged {
                    applied = true;
                }
                seen.insert(key, val);
            }
            for (key, val) in &s.records {
                if !seen.contains_key(key) {
                    match pending {
                        Some(Op::Delete { key: k, .. }) if k == key => applied = true,
                        _ => {
                            return Err(format!(
                                "{}/{key}: the acknowledged write of value t={} ({} bytes) is lost",
                                s.name, val.tag, val.size
                            ))
                        }
                    }
                }
            }
            s.records = seen;
        }
        if applied {
            w.counts.in_flight_applied += 1;
        }
    }
    if !unexpected.is_empty() {
        return Err(format!(
            "stores that nobody created, or whose deletion was acknowledged: {unexpected:?}"
        ));
    }
    Ok(())
}

/// A writer's random stream in one round.
fn writer_rng(seed: u64, round: usize, writer: usize) -> StdRng {
    let mut x = seed ^ ((round as u64) << 20) ^ ((writer as u64) << 8);
    StdRng::seed_from_u64(splitmix(&mut x))
}

fn seed() -> u64 {
    std::env::var("KVSTORE_CRASH_SEED")
        .ok()
        .map(|s| s.trim().parse().expect("KVSTORE_CRASH_SEED must be a u64"))
        .unwrap_or_else(rand::random)
}

fn rounds(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var} must be a number"))
        })
        .unwrap_or(default)
}

// ------------------------------------------------------------------------------------------
// kill -9 against the real binary

/// `kvstore serve` on 127.0.0.1:0 over `dir`, with the admin token the writers use and only
/// warnings in its log, and the report of the start-up orphan check.
fn server_command(dir: &Path) -> Command {
    let mut cmd = kvstore();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("KVSTORE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KVSTORE_LOG", "warn,kvstore::storage::embedded::blobs=info");
    cmd
}

/// What the start-up orphan check of a server reported: (blob files, bytes, removed). Waits for
/// its log line (the check runs in the background after the start).
async fn startup_orphans(server: &Served) -> Result<(u64, u64, u64), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = server.stderr();
        if let Some(line) = log.lines().find(|l| l.contains("start-up orphan check")) {
            let field = |name: &str| -> Result<u64, String> {
                let at = line
                    .find(&format!("{name}="))
                    .ok_or_else(|| format!("no {name}= in {line:?}"))?;
                line[at + name.len() + 1..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("no number after {name}= in {line:?}"))
            };
            if field("removed")? != field("bodies")? {
                return Err(format!(
                    "the start-up orphan check removed only part: {line}"
                ));
            }
            return Ok((field("bodies")?, field("bytes")?, field("removed")?));
        }
        if Instant::now() > deadline {
            return Err("no report of the start-up orphan check within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records whose bodies live in blob files, by the (verified, hence exact) models.
fn live_blobs(writers: &[WriterModel]) -> usize {
    writers
        .iter()
        .flat_map(|w| w.stores.values())
        .flat_map(|s| s.records.values())
        .filter(|v| v.size > INLINE_MAX as u64)
        .count()
}

/// After [`verify`]: once the start-up orphan check and the purge of deleted stores (both in the
/// background) are done, `blobs/` holds one file per live record stored in one, and no other.
async fn blobs_match_records(dir: &Path, writers: &[WriterModel]) -> Result<(), String> {
    let want = live_blobs(writers);
    // The purge of a store deleted just before the kill may still be running: its files go as it
    // does. Nothing else removes a file now; a file too many that stays is the failure.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have = blob_files(dir);
        if have == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "blobs/ holds {have} files after the restart, the live records {want} blobs"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the server and waits for its `listening on http://127.0.0.1:PORT` line.
async fn start_server(dir: &Path) -> Result<Served, String> {
    let mut server = Served::spawn(server_command(dir));
    server.wait_listening().await?;
    Ok(server)
}

/// SIGTERM (a graceful stop), and waits for a clean exit.
fn stop_server(server: &mut Served) -> Result<(), String> {
    let status = server.terminate_within(Duration::from_secs(30))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exited with {status} after SIGTERM"))
    }
}

struct Http {
    client: reqwest::Client,
    base: String,
    killed: AtomicBool,
}

impl Http {
    fn new(url: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(OP_TIMEOUT)
                .build()
                .unwrap(),
            base: format!("{url}/v2/key-value-stores"),
            killed: AtomicBool::new(false),
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> OpResult<reqwest::Response> {
        rb.bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .map_err(|e| OpError::Lost(format!("{e:?}")))
    }

    /// The response must have `status`; anything else contradicts the model.
    async fn expect(
        &self,
        rb: reqwest::RequestBuilder,
        status: u16,
    ) -> OpResult<reqwest::Response> {
        let resp = self.send(rb).await?;
        if resp.status().as_u16() == status {
            return Ok(resp);
        }
        let got = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(OpError::Wrong(format!(
            "expected {status}, got {got}: {text}"
        )))
    }

    async fn json(resp: reqwest::Response) -> OpResult<Value> {
        let body: Value = resp
            .json()
            .await
            .map_err(|e| OpError::Lost(format!("reading the response: {e}")))?;
        Ok(body["data"].clone())
    }
}

#[async_trait]
impl Target for Http {
    fn crashed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    async fn create_store(&self, name: &str) -> OpResult<String> {
        let rb = self.client.post(format!("{}?name={name}", self.base));
        let data = Self::json(self.expect(rb, 201).await?).await?;
        data["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| OpError::Wrong(format!("no id in {data}")))
    }

    async fn delete_store(&self, id: &str) -> OpResult<()> {
        let rb = self.client.delete(format!("{}/{id}", self.base));
        self.expect(rb, 204).await.map(drop)
    }

    async fn put(&self, store: &str, key: &str, body: Vec<u8>) -> OpResult<()> {
        let rb = self
            .client
            .put(format!("{}/{store}/records/{key}", self.base))
            .header("content-type", "application/octet-stream")
            .body(body);
        self.expect(rb, 201).await.map(drop)
    }

    async fn delete(&self, store: &str, key: &str) -> OpResult<()> {
        let rb = self
            .client
            .delete(format!("{}/{store}/records/{key}", self.base));
        self.expect(rb, 204).await.map(drop)
    }

    async fn list_stores(&self) -> OpResult<Vec<(String, Option<String>)>> {
        let mut out = Vec::new();
        loop {
            let rb = self.client.get(format!(
                "{}?unnamed=true&limit=1000&offset={}",
                self.base,
                out.len()
            ));
            let data = Self::json(self.expect(rb, 200).await?).await?;
            let items = data["items"].as_array().cloned().unwrap_or_default();
            for item in &items {
                out.push((
                    item["id"].as_str().unwrap_or_default().to_owned(),
                    item["name"].as_str().map(str::to_owned),
                ));
            }
            let total = data["total"].as_u64().unwrap_or(0);
            if items.is_empty() || out.len() as u64 >= total {
                return Ok(out);
            }
        }
    }

    async fn list_keys(&self, store: &str) -> OpResult<Option<Vec<(String, u64)>>> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let mut url = format!("{}/{store}/keys?limit=1000", self.base);
            if let Some(s) = &start {
                url.push_str(&format!("&exclusiveStartKey={s}"));
            }
            let resp = self.send(self.client.get(url)).await?;
            if resp.status() == 404 {
                return Ok(None);
            }
            if resp.status() != 200 {
                return Err(OpError::Wrong(format!("listing keys: {}", resp.status())));
            }
            let data = Self::json(resp).await?;
            for item in data["items"].as_array().cloned().unwrap_or_default() {
                out.push((
                    item["key"].as_str().unwrap_or_default().to_owned(),
                    item["size"].as_u64().unwrap_or(u64::MAX),
                ));
            }
            if data["isTruncated"].as_bool() != Some(true) {
                return Ok(Some(out));
            }
            start = data["nextExclusiveStartKey"].as_str().map(str::to_owned);
        }
    }

    async fn get(&self, store: &str, key: &str) -> OpResult<Option<Vec<u8>>> {
        let url = format!("{}/{store}/records/{key}", self.base);
        let resp = self.send(self.client.get(url)).await?;
        if resp.status() == 404 {
            return Ok(None);
        }
        if resp.status() != 200 {
            return Err(OpError::Wrong(format!("GET record: {}", resp.status())));
        }
        resp.bytes()
            .await
            .map(|b| Some(b.to_vec()))
            .map_err(|e| OpError::Lost(format!("reading the body: {e}")))
    }

    async fn counts(&self, store: &str) -> OpResult<Option<(u64, u64)>> {
        let resp = self
            .send(self.client.get(format!("{}/{store}", self.base)))
            .await?;
        if resp.status() == 404 {
            return Ok(None);
        }
        if resp.status() != 200 {
            return Err(OpError::Wrong(format!("GET store: {}", resp.status())));
        }
        let data = Self::json(resp).await?;
        let stats = &data["stats"];
        match (
            stats["recordCount"].as_u64(),
            stats["storageBytes"].as_u64(),
        ) {
            (Some(c), Some(b)) => Ok(Some((c, b))),
            _ => Err(OpError::Wrong(format!("no stats in {data}"))),
        }
    }
}

/// How many orphan bodies `kvstore fsck --dry-run` finds in a data directory.
fn fsck_dry_run(dir: &Path) -> u64 {
    let mut cmd = kvstore();
    cmd.arg("fsck").arg("--data-dir").arg(dir).arg("--dry-run");
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "fsck failed: {out:?}");
    // "Found N orphan bodies (B bytes) in …; removed M."
    let number_after = |word: &str| -> u64 {
        let at = text
            .find(word)
            .unwrap_or_else(|| panic!("{word} in {text}"))
            + word.len();
        text[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a number after {word} in {text}"))
    };
    number_after("Found")
}

/// Files in `blobs/`.
fn blob_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

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

        let tasks: Vec<_> = writers
            .iter()
            .map(|w| {
                tokio::spawn(run_writer(
                    http.clone(),
                    w.clone(),
                    writer_rng(seed, round, w.writer),
                ))
            })
            .collect();
        let delay = match rng.gen_range(0..4) {
            0 => rng.gen_range(0..10),
            1 | 2 => rng.gen_range(10..120),
            _ => rng.gen_range(120..300),
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        http.killed.store(true, Ordering::SeqCst);
        server.kill9();
        kills += 1;
        for (i, task) in tasks.into_iter().enumerate() {
            match tokio::time::timeout(OP_TIMEOUT, task).await {
                Ok(Ok(Ok(model))) => writers[i] = model,
                Ok(Ok(Err(e))) => fail(round, Some(&server), e),
                Ok(Err(e)) => fail(round, Some(&server), format!("writer {i} panicked: {e}")),
                Err(_) => fail(round, Some(&server), format!("writer {i} hangs")),
            }
        }
    }

    let mut total = Counts::default();
    for w in &writers {
        total.add(&w.counts);
    }
    let records: usize = writers
        .iter()
        .flat_map(|w| w.stores.values())
        .map(|s| s.records.len())
        .sum();
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
        let tasks: Vec<_> = writers
            .iter()
            .map(|w| {
                tokio::spawn(run_writer(
                    target.clone(),
                    w.clone(),
                    writer_rng(seed ^ salt, n, w.writer),
                ))
            })
            .collect();
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
        for (i, task) in tasks.into_iter().enumerate() {
            match tokio::time::timeout(OP_TIMEOUT, task).await {
                Ok(Ok(Ok(model))) => writers[i] = model,
                Ok(Ok(Err(e))) => fail(n, e),
                Ok(Err(e)) => fail(n, format!("writer {i} panicked: {e}")),
                Err(_) => fail(n, format!("writer {i} hangs after the fault")),
            }
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
