//! The workload of the crash tests (tests/crash.rs, tests/power_loss.rs): concurrent writers whose
//! models say what each was told, self-checking bodies, the HTTP target (the real `kvstore serve`
//! binary), and [`verify`], which checks every invariant after a restart. The invariants are listed
//! at the top of tests/crash.rs. Included with `#[path]` by those two tests only.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::child::{kvstore, Served};

pub const ADMIN_TOKEN: &str = "kvs_crash_test_admin_token_0123456789";
/// No single request or storage call of a healthy server takes this long.
pub const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// Writers per round; each owns its stores, so the order of its acknowledgements is the order of
/// its writes.
pub const WRITERS: usize = 4;
/// Keys per store (`k00`..), so that overwrites and deletes hit existing records often.
pub const KEYS: usize = 12;
/// Stores a writer keeps at most.
pub const MAX_STORES: usize = 3;
/// Bodies above this live in blob files (the engine's `INLINE_MAX`).
pub const INLINE_MAX: usize = 64 * 1024;
/// Bodies above this are spooled to a file by the HTTP layer and moved into `blobs/`.
pub const SPOOL_MIN: usize = 1024 * 1024;

// ------------------------------------------------------------------------------------------
// Self-checking bodies

pub const MAGIC: &str = "kvcrash1";
/// Every body starts with a header line of this length: who wrote it, its tag, the payload's
/// length and SHA-256.
pub const HEADER_LEN: usize = 128;

pub fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The body of value `tag` of `writer`: `total` bytes (at least [`HEADER_LEN`]).
pub fn make_body(writer: usize, tag: u64, total: usize) -> Vec<u8> {
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
pub fn check_body(body: &[u8]) -> Result<(usize, u64), String> {
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
pub struct Val {
    pub tag: u64,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct StoreModel {
    pub name: String,
    pub records: BTreeMap<String, Val>,
}

#[derive(Debug, Clone)]
pub enum Op {
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
pub struct Counts {
    pub puts: u64,
    pub overwrites: u64,
    pub blob_puts: u64,
    pub deletes: u64,
    pub store_creates: u64,
    pub store_deletes: u64,
    /// Operations in flight at a crash, and how many of them turned out to have happened.
    pub in_flight: u64,
    pub in_flight_applied: u64,
    /// Records read back and checked.
    pub verified_records: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
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

    pub fn acknowledged(&self) -> u64 {
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
pub struct WriterModel {
    pub writer: usize,
    /// Store id → what it holds.
    pub stores: BTreeMap<String, StoreModel>,
    pub next_tag: u64,
    pub next_store: u64,
    /// The operation in flight when the server died: either outcome is fine.
    pub in_flight: Option<Op>,
    pub counts: Counts,
}

impl WriterModel {
    pub fn new(writer: usize) -> Self {
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
    pub fn choose(&mut self, rng: &mut StdRng) -> (Op, Option<Vec<u8>>) {
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
    pub fn acknowledge(&mut self, op: Op, created: Option<String>) {
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
pub enum OpError {
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

pub type OpResult<T> = Result<T, OpError>;

#[async_trait]
pub trait Target: Send + Sync + 'static {
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
pub async fn apply<T: Target>(t: &T, op: &Op, body: Option<Vec<u8>>) -> OpResult<Option<String>> {
    match op {
        Op::Put { store, key, .. } => t.put(store, key, body.unwrap()).await.map(|()| None),
        Op::Delete { store, key } => t.delete(store, key).await.map(|()| None),
        Op::CreateStore { name } => t.create_store(name).await.map(Some),
        Op::DeleteStore { store } => t.delete_store(store).await.map(|()| None),
    }
}

/// One writer: operations one after another until the crash. Returns its model, with the
/// operation that got no answer as `in_flight`.
pub async fn run_writer<T: Target>(
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
pub async fn verify<T: Target>(t: &T, writers: &mut [WriterModel]) -> Result<(), String> {
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

/// One task per writer for a round, each on its own random stream (see [`writer_rng`]).
pub fn spawn_writers<T: Target>(
    target: &Arc<T>,
    writers: &[WriterModel],
    seed: u64,
    round: usize,
) -> Vec<tokio::task::JoinHandle<Result<WriterModel, String>>> {
    writers
        .iter()
        .map(|w| {
            tokio::spawn(run_writer(
                target.clone(),
                w.clone(),
                writer_rng(seed, round, w.writer),
            ))
        })
        .collect()
}

/// Waits for the tasks of [`spawn_writers`] and puts each writer's model back in `writers`; the
/// first writer that failed, panicked or got no answer within [`OP_TIMEOUT`] is the error.
pub async fn join_writers(
    tasks: Vec<tokio::task::JoinHandle<Result<WriterModel, String>>>,
    writers: &mut [WriterModel],
) -> Result<(), String> {
    for (i, task) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(OP_TIMEOUT, task).await {
            Ok(Ok(Ok(model))) => writers[i] = model,
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => return Err(format!("writer {i} panicked: {e}")),
            Err(_) => return Err(format!("writer {i} hangs")),
        }
    }
    Ok(())
}

/// A random moment for the crash, in milliseconds from `[a, b, c, d]`: a quarter of the time
/// early (`a..b`), half the time `b..c`, a quarter late (`c..d`).
pub fn crash_delay(rng: &mut StdRng, [a, b, c, d]: [u64; 4]) -> Duration {
    Duration::from_millis(match rng.gen_range(0..4) {
        0 => rng.gen_range(a..b),
        1 | 2 => rng.gen_range(b..c),
        _ => rng.gen_range(c..d),
    })
}

/// A writer's random stream in one round.
pub fn writer_rng(seed: u64, round: usize, writer: usize) -> StdRng {
    let mut x = seed ^ ((round as u64) << 20) ^ ((writer as u64) << 8);
    StdRng::seed_from_u64(splitmix(&mut x))
}

pub fn seed() -> u64 {
    std::env::var("KVSTORE_CRASH_SEED")
        .ok()
        .map(|s| s.trim().parse().expect("KVSTORE_CRASH_SEED must be a u64"))
        .unwrap_or_else(rand::random)
}

pub fn rounds(var: &str, default: usize) -> usize {
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
pub fn server_command(dir: &Path) -> Command {
    let mut cmd = kvstore();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("KVSTORE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KVSTORE_LOG", "warn,kvstore::storage::embedded::blobs=info");
    cmd
}

/// What the start-up orphan check of a server reported: (blob files, bytes, removed). Waits for
/// its log line (the check runs in the background after the start).
pub async fn startup_orphans(server: &Served) -> Result<(u64, u64, u64), String> {
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

/// Records the stores hold at the end, by the (verified, hence exact) models.
pub fn live_records(writers: &[WriterModel]) -> usize {
    writers
        .iter()
        .flat_map(|w| w.stores.values())
        .map(|s| s.records.len())
        .sum()
}

/// Records whose bodies live in blob files, by the (verified, hence exact) models.
pub fn live_blobs(writers: &[WriterModel]) -> usize {
    writers
        .iter()
        .flat_map(|w| w.stores.values())
        .flat_map(|s| s.records.values())
        .filter(|v| v.size > INLINE_MAX as u64)
        .count()
}

/// After [`verify`]: once the start-up orphan check and the purge of deleted stores (both in the
/// background) are done, `blobs/` holds one file per live record stored in one, and no other.
pub async fn blobs_match_records(dir: &Path, writers: &[WriterModel]) -> Result<(), String> {
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
pub async fn start_server(dir: &Path) -> Result<Served, String> {
    let mut server = Served::spawn(server_command(dir));
    server.wait_listening().await?;
    Ok(server)
}

/// SIGTERM (a graceful stop), and waits for a clean exit.
pub fn stop_server(server: &mut Served) -> Result<(), String> {
    let status = server.terminate_within(Duration::from_secs(30))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exited with {status} after SIGTERM"))
    }
}

pub struct Http {
    pub client: reqwest::Client,
    pub base: String,
    pub killed: AtomicBool,
    /// Set when the disk under the server loses power (tests/power_loss.rs): from then on the
    /// server may answer 5xx (its I/O fails), which leaves the outcome unknown, like no answer.
    pub power_off: Option<Arc<AtomicBool>>,
}

impl Http {
    pub fn new(url: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(OP_TIMEOUT)
                .build()
                .unwrap(),
            base: format!("{url}/v2/key-value-stores"),
            killed: AtomicBool::new(false),
            power_off: None,
        }
    }

    fn power_is_off(&self) -> bool {
        self.power_off
            .as_ref()
            .is_some_and(|p| p.load(Ordering::SeqCst))
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> OpResult<reqwest::Response> {
        rb.bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .map_err(|e| OpError::Lost(format!("{e:?}")))
    }

    /// The response must have `status`; anything else contradicts the model.
    pub async fn expect(
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
        if got.is_server_error() && self.power_is_off() {
            return Err(OpError::Lost(format!(
                "{got} after the power went off: {text}"
            )));
        }
        Err(OpError::Wrong(format!(
            "expected {status}, got {got}: {text}"
        )))
    }

    pub async fn json(resp: reqwest::Response) -> OpResult<Value> {
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
        self.killed.load(Ordering::SeqCst) || self.power_is_off()
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
pub fn fsck_dry_run(dir: &Path) -> u64 {
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
pub fn blob_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0)
}
