//! The engine under the embedded backend: fjall (an LSM tree: a journal fsynced per commit, sorted
//! tables written in the background) in `<data-dir>/db/`, one keyspace per table.
//!
//! Keys of several parts join them with a 0 byte, which sorts like the tuple they stand for: no
//! part holds a 0 byte (ids, usernames, store names and record keys are printable), and a part
//! that is a prefix of another sorts first either way.
//!
//! Reads see a snapshot ([`ReadTxn`]); the writer thread's transaction ([`WriteTxn`]) reads its own
//! pending writes, so a batch of jobs sees each other's changes, and commits them all in one
//! journal write.

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use fjall::{
    AbstractTree as _, KeyspaceCreateOptions, KvSeparationOptions, PersistMode, Readable,
    SingleWriterTxDatabase, SingleWriterTxKeyspace, SingleWriterWriteTx, Slice,
};

use crate::storage::{Result, StorageError};

/// What a request hears once the engine has failed an I/O operation (503).
pub(super) const BROKEN: &str =
    "the database failed an I/O operation; the engine refuses writes until the server is restarted";

/// The tables, each a keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Table {
    /// "format_version" → u32 (little endian).
    Meta,
    /// user id → [`User`](crate::model::User)
    Users,
    /// username → user id
    Usernames,
    /// token hash → user id (full-access tokens)
    Tokens,
    /// token hash → user id (read-only tokens)
    ReadOnlyTokens,
    /// (store id, user id) → access it is shared with ([`share_code`](super::shares::share_code)).
    Shares,
    /// (user id, store id) → access: the stores shared with a user.
    SharedWith,
    /// store id → [`StoreInfo`](crate::model::StoreInfo)
    Stores,
    /// (owner id, name) → store id
    StoreNames,
    /// (owner id, createdAt as 8 bytes big endian, store id) → 1 if named, else 0: the order of the
    /// store listing.
    StoresByOwner,
    /// (store id, key) → [`RecordHeader`](super::codec::RecordHeader): what a key listing reads.
    Records,
    /// (store id, key) → the body of a record kept inline (not in a blob file). Apart from the
    /// headers so that a listing never reads bodies; values go to the engine's own blob files
    /// (key-value separation), so that compaction does not rewrite them.
    Bodies,
    /// store id → nothing: deleted stores whose records are still being removed.
    Purge,
}

impl Table {
    const ALL: [Table; 13] = [
        Table::Meta,
        Table::Users,
        Table::Usernames,
        Table::Tokens,
        Table::ReadOnlyTokens,
        Table::Shares,
        Table::SharedWith,
        Table::Stores,
        Table::StoreNames,
        Table::StoresByOwner,
        Table::Records,
        Table::Bodies,
        Table::Purge,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Users => "users",
            Table::Usernames => "usernames",
            Table::Tokens => "tokens",
            Table::ReadOnlyTokens => "read_only_tokens",
            Table::Shares => "shares",
            Table::SharedWith => "shared_with",
            Table::Stores => "stores",
            Table::StoreNames => "store_names",
            Table::StoresByOwner => "stores_by_owner",
            Table::Records => "records",
            Table::Bodies => "bodies",
            Table::Purge => "purge",
        }
    }
}

/// The open database and its keyspaces.
pub(super) struct Engine {
    db: SingleWriterTxDatabase,
    tables: Vec<SingleWriterTxKeyspace>,
    /// The bounds [`Engine::upkeep`] keeps memtables within: one's, and all of them together.
    memtable_bytes: u64,
    write_buffer_bytes: u64,
    /// Per table, the versions that committed writes shadowed in its active memtable (see
    /// [`SHADOWED_MAX`]); only the writer changes them.
    shadowed: [AtomicUsize; Table::ALL.len()],
    /// `<dir>.lock`, locked for as long as the engine is open; see [`Engine::open`].
    _lock: std::fs::File,
}

/// Settings of [`Engine::open`].
pub(super) struct EngineOptions {
    /// The block cache.
    pub(super) cache_bytes: u64,
    /// A memtable past this is sealed and flushed by [`Engine::upkeep`].
    pub(super) memtable_bytes: u64,
    /// What memtables may hold in all (active and sealed, every keyspace) before the writer
    /// waits for flushes ([`Engine::upkeep`]): with the block cache, what bounds the engine's
    /// memory.
    pub(super) write_buffer_bytes: u64,
}

impl EngineOptions {
    /// The server's settings, with a block cache of `cache_bytes`.
    pub(super) fn with_cache(cache_bytes: u64) -> Self {
        Self {
            cache_bytes,
            memtable_bytes: 8 * 1024 * 1024,
            write_buffer_bytes: 32 * 1024 * 1024,
        }
    }
}

impl Engine {
    /// Opens (or creates) the database in `dir`, replaying its journal.
    pub(super) fn open(dir: &Path, options: &EngineOptions) -> Result<Self> {
        // Taken before anything here touches the database, unlike fjall's own lock (in `dir`),
        // which its open takes only after the journals are rewritten below: a second process
        // must not replace the journal that the running one appends to.
        let lock_path = dir.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(at(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StorageError::Locked),
            Err(std::fs::TryLockError::Error(e)) => return Err(at(&lock_path)(e)),
        }
        let marker = closed_marker(dir);
        if marker.exists() {
            // The last process closed the database (see `close`): its journals were synced, and no
            // write may follow until the marker is gone for good.
            std::fs::remove_file(&marker).map_err(at(&marker))?;
            if let Some(parent) = marker.parent() {
                super::blobs::sync_dir(parent).map_err(at(parent))?;
            }
        } else if dir.is_dir() {
            rewrite_journals(dir)?;
        }
        let db = SingleWriterTxDatabase::builder(dir)
            .cache_size(options.cache_bytes)
            // fjall sizes its pool from the cores it may use; a lone worker can block for good
            // sending a flush to its own full queue, so there are always two.
            .worker_threads(
                std::thread::available_parallelism()
                    .map_or(2, |n| n.get())
                    .clamp(2, 4),
            )
            .open()
            .map_err(engine)?;
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            let keyspace = db
                .keyspace(table.name(), || {
                    // fjall's own limit only backs up the writer's (`Engine::upkeep`).
                    let options = KeyspaceCreateOptions::default()
                        .max_memtable_size(4 * options.memtable_bytes);
                    if table == Table::Bodies {
                        // Bodies in blob files, out of the tables that compaction rewrites. Needs
                        // the patched lsm-tree (vendor/README.md): its release did not sync the
                        // blob files' folder, and a power cut could lose a blob file that a
                        // persisted version refers to (tests/power_loss.rs, tests/io_faults.rs).
                        options.with_kv_separation(Some(KvSeparationOptions::default()))
                    } else {
                        options
                    }
                })
                .map_err(engine)?;
            tables.push(keyspace);
        }
        // fjall makes a new keyspace's folder (`keyspaces/<id>/`) without syncing the folder it
        // is in: a power cut could lose the keyspace, and with it the journal's writes to it,
        // which a replay drops (tests/power_loss.rs). Syncing every folder of the database makes
        // whatever the open created durable; fjall syncs its tables and blob files and their folders
        // (the latter with vendor/lsm-tree's patch).
        sync_folders(dir)?;
        Ok(Self {
            db,
            tables,
            memtable_bytes: options.memtable_bytes,
            write_buffer_bytes: options.write_buffer_bytes,
            shadowed: std::array::from_fn(|_| AtomicUsize::new(0)),
            _lock: lock,
        })
    }

    fn keyspace(&self, table: Table) -> &SingleWriterTxKeyspace {
        // `tables` holds one keyspace per `Table::ALL` entry, in that order.
        &self.tables[table as usize]
    }

    /// A snapshot of everything committed so far.
    pub(super) fn read(&self) -> ReadTxn<'_> {
        ReadTxn {
            engine: self,
            snapshot: self.db.read_tx(),
        }
    }

    /// A snapshot to read from later, with [`Engine::read_at`] (a backup's).
    pub(super) fn snapshot(&self) -> fjall::Snapshot {
        self.db.read_tx()
    }

    /// A view of `snapshot`, taken earlier from this engine.
    pub(super) fn read_at(&self, snapshot: fjall::Snapshot) -> ReadTxn<'_> {
        ReadTxn {
            engine: self,
            snapshot,
        }
    }

    /// The writer's transaction; only the writer thread calls this (a second caller would wait).
    /// `durable`: the commit returns only once the journal is fsynced; else once the journal is
    /// handed to the OS.
    pub(super) fn write(&self, durable: bool) -> WriteTxn<'_> {
        let mode = if durable {
            PersistMode::SyncAll
        } else {
            PersistMode::Buffer
        };
        WriteTxn {
            engine: self,
            txn: self.db.write_tx().durability(Some(mode)),
            shadowed: [0; Table::ALL.len()],
        }
    }

    /// Keeps memory and the journal a start-up replays bounded; the writer calls it after each
    /// commit. fjall flushes a memtable only once it passes its own limit, and frees a sealed
    /// journal only once every keyspace flushed what it holds of it, asking the stragglers from
    /// its workers in a way that can flood their queue. So the writer, which alone fills
    /// memtables, seals them itself: each past [`EngineOptions::memtable_bytes`] or holding
    /// [`SHADOWED_MAX`] shadowed versions, and every non-empty one when fjall has sealed a
    /// journal since the last call (`journals_seen`), so that the sealed journal goes as soon as
    /// those flushes end. It then waits, up to
    /// [`FLUSH_PATIENCE`], while memtables hold more than [`EngineOptions::write_buffer_bytes`].
    pub(super) fn upkeep(&self, journals_seen: &mut usize) -> Result<()> {
        let journals = self.db.journal_count();
        let journal_sealed = journals > *journals_seen;
        *journals_seen = journals;
        for (keyspace, shadowed) in self.tables.iter().zip(&self.shadowed) {
            let keyspace = keyspace.inner();
            let size = keyspace.tree.active_memtable().size();
            if size > self.memtable_bytes
                || (journal_sealed && size > 0)
                || shadowed.load(Ordering::Relaxed) >= SHADOWED_MAX
            {
                keyspace.rotate_memtable().map_err(engine)?;
                shadowed.store(0, Ordering::Relaxed);
            }
        }
        let deadline = std::time::Instant::now() + FLUSH_PATIENCE;
        while self.db.write_buffer_size() > self.write_buffer_bytes
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }

    /// Seals every memtable that holds shadowed versions; the writer calls it once writes pause,
    /// so that listings stop stepping over them then rather than at the next
    /// [`SHADOWED_MAX`] overwrites, which may never come.
    pub(super) fn seal_shadowed(&self) -> Result<()> {
        for (keyspace, shadowed) in self.tables.iter().zip(&self.shadowed) {
            if shadowed.load(Ordering::Relaxed) > 0 {
                keyspace.inner().rotate_memtable().map_err(engine)?;
                shadowed.store(0, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Makes everything committed so far durable.
    pub(super) fn persist(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll).map_err(engine)
    }

    /// Flushes every memtable to tables (so that the next start replays no journal entry into
    /// memory) and leaves a marker saying that the journals need no rewrite at the next open.
    /// Only once no write can come any more. Gives up (no marker, nothing lost) if a flush does
    /// not finish within `patience`.
    pub(super) fn close(&self, dir: &Path, patience: std::time::Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + patience;
        for keyspace in &self.tables {
            let keyspace = keyspace.inner();
            keyspace.rotate_memtable().map_err(engine)?;
            while keyspace.sealed_memtable_count() > 0 {
                if std::time::Instant::now() > deadline {
                    tracing::warn!("the engine's flush at close did not finish in {patience:?}");
                    return Ok(());
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        self.persist()?;
        let marker = closed_marker(dir);
        std::fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(at(&marker))?;
        if let Some(parent) = marker.parent() {
            super::blobs::sync_dir(parent).map_err(at(parent))?;
        }
        Ok(())
    }
}

/// Shadowed versions (older versions of a key written again, or removed, since the memtable
/// began) that a table's active memtable may hold before [`Engine::upkeep`] seals it. A
/// memtable keeps every version until its flush drops the shadowed ones, and a scan steps over
/// each: 1000 keys overwritten for 15 s (270k versions) made listing them 21× slower, and it
/// stayed so without more writes (`bench/listing_after_overwrites.sh`). A size bound cannot see
/// this (small headers: 8 MiB is ~100k of them); this one costs a scan at most this many extra
/// steps, and writes to keys the memtable does not hold (new keys, a big store's random
/// overwrites) no extra flush.
const SHADOWED_MAX: usize = 4096;

/// How long the writer waits for flushes before it writes anyway (a flush stuck on a failing
/// disk must not stop every write: fjall's own stall takes over).
const FLUSH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The marker of a database closed by [`Engine::close`], beside its folder.
fn closed_marker(dir: &Path) -> std::path::PathBuf {
    dir.with_extension("closed")
}

/// Fsyncs `dir` and every folder under it (fjall's workers may remove one meanwhile: a folder
/// gone needs no sync).
fn sync_folders(dir: &Path) -> Result<()> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let entries = match std::fs::read_dir(dir) {
        Err(e) if gone(&e) => return Ok(()),
        other => other.map_err(at(dir))?,
    };
    for entry in entries {
        let entry = entry.map_err(at(dir))?;
        if entry.file_type().map_err(at(dir))?.is_dir() {
            sync_folders(&entry.path())?;
        }
    }
    match super::blobs::sync_dir(dir) {
        Err(e) if gone(&e) => Ok(()),
        other => other.map_err(at(dir)),
    }
}

/// Writes each journal file (`*.jnl`) anew, as this process reads it, and syncs it.
///
/// A journal this process did not write may hold writes that the OS shows but the disk does not:
/// the last process's fsync may have failed, and on Linux a failed fsync can lose part of the
/// file's writeback for good while the page cache keeps showing it, so that no later fsync writes
/// it. fjall replays what it reads and appends new commits after it; a power cut would then leave a
/// hole before acknowledged commits, and the replay stops at the first hole
/// (tests/io_faults.rs). A copy made now has its own dirty pages, which its fsync does write.
/// All-zero blocks (the preallocated tail) are left as holes: the copy reads the same.
fn rewrite_journals(dir: &Path) -> Result<()> {
    let mut rewrote = false;
    // Listed before anything changes: a listing read while its folder changes may see the new
    // entries (a journal's copy, renamed since).
    let paths = std::fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(at(dir))?;
    let named = |path: &Path, suffix: &str| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(suffix))
    };
    // Copies a rewrite cut short left (their journals are still whole), first: a copy made below
    // would take the name of one.
    for path in paths.iter().filter(|p| named(p, ".jnl.tmp")) {
        std::fs::remove_file(path).map_err(at(path))?;
    }
    for path in paths.iter().filter(|p| named(p, ".jnl") && p.is_file()) {
        let tmp = path.with_extension("jnl.tmp");
        copy_synced(path, &tmp).map_err(at(path))?;
        std::fs::rename(&tmp, path).map_err(at(path))?;
        rewrote = true;
    }
    if rewrote {
        super::blobs::sync_dir(dir).map_err(at(dir))?;
    }
    Ok(())
}

/// Copies `from` to a new file `to` and syncs it, leaving all-zero blocks as holes.
fn copy_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};

    const BLOCK: usize = 4096;
    let mut from = std::fs::File::open(from)?;
    let len = from.metadata()?.len();
    let mut to = std::fs::File::create(to)?;
    let mut buf = vec![0u8; 64 * BLOCK];
    let mut at = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for block in buf[..n].chunks(BLOCK) {
            if block.iter().any(|&b| b != 0) {
                to.seek(SeekFrom::Start(at))?;
                to.write_all(block)?;
            }
            at += block.len() as u64;
        }
    }
    to.set_len(len)?;
    to.sync_all()
}

/// An I/O error of the open, with the path it concerns.
fn at(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |e| {
        StorageError::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    }
}

/// Rows of a table, in key order.
pub(super) type Rows = std::iter::Map<fjall::Iter, fn(fjall::Guard) -> Result<(Slice, Slice)>>;

fn row(guard: fjall::Guard) -> Result<(Slice, Slice)> {
    guard.into_inner().map_err(engine)
}

/// Reading tables, from a snapshot or from the writer's transaction.
pub(super) trait Read {
    #[doc(hidden)]
    fn parts(&self) -> (&Engine, &impl Readable);

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Slice>> {
        let (engine_, view) = self.parts();
        view.get(engine_.keyspace(table), key).map_err(engine)
    }

    fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        let (engine_, view) = self.parts();
        view.contains_key(engine_.keyspace(table), key)
            .map_err(engine)
    }

    fn is_empty(&self, table: Table) -> Result<bool> {
        let (engine_, view) = self.parts();
        view.is_empty(engine_.keyspace(table)).map_err(engine)
    }

    /// The rows whose keys start with `prefix` (all rows when empty), from `start` on (a full key;
    /// unbounded: from the first row of the prefix).
    fn rows(&self, table: Table, prefix: &[u8], start: Bound<&[u8]>) -> Rows {
        let (engine_, view) = self.parts();
        let low = match start {
            Bound::Included(k) if k > prefix => Bound::Included(k.to_vec()),
            Bound::Excluded(k) if k >= prefix => Bound::Excluded(k.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let high = match prefix_end(prefix) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        view.range::<Vec<u8>, _>(engine_.keyspace(table), (low, high))
            .map(row as fn(fjall::Guard) -> Result<(Slice, Slice)>)
    }

    /// Every row of a table.
    fn all(&self, table: Table) -> Rows {
        self.rows(table, &[], Bound::Unbounded)
    }
}

/// The first key after every key that starts with `prefix`; none when no key is (an empty prefix
/// or one of 0xFF bytes only).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A consistent view of the database as of its creation.
pub(super) struct ReadTxn<'e> {
    engine: &'e Engine,
    snapshot: fjall::Snapshot,
}

impl Read for ReadTxn<'_> {
    fn parts(&self) -> (&Engine, &impl Readable) {
        (self.engine, &self.snapshot)
    }
}

/// The writer thread's transaction: its reads see its own writes.
pub(super) struct WriteTxn<'e> {
    engine: &'e Engine,
    txn: SingleWriterWriteTx<'e>,
    /// What the writes shadow, per table, added to [`Engine::shadowed`] at the commit.
    shadowed: [usize; Table::ALL.len()],
}

impl Read for WriteTxn<'_> {
    fn parts(&self) -> (&Engine, &impl Readable) {
        (self.engine, &self.txn)
    }
}

impl WriteTxn<'_> {
    pub(super) fn insert(&mut self, table: Table, key: impl Into<Slice>, value: impl Into<Slice>) {
        let key = key.into();
        self.count_shadowed(table, &key);
        self.txn
            .insert(self.engine.keyspace(table), key, value.into());
    }

    pub(super) fn remove(&mut self, table: Table, key: impl Into<Slice>) {
        let key = key.into();
        self.count_shadowed(table, &key);
        self.txn.remove(self.engine.keyspace(table), key);
    }

    /// Counts a write to `key` that will shadow a version in the table's active memtable (see
    /// [`SHADOWED_MAX`]). A version in a table does not count: a scan steps over it whatever
    /// the memtable holds, until compaction drops it.
    fn count_shadowed(&mut self, table: Table, key: &[u8]) {
        let memtable = self.engine.keyspace(table).inner().tree.active_memtable();
        if memtable.get(key, u64::MAX).is_some() {
            self.shadowed[table as usize] += 1;
        }
    }

    /// Removes a row and returns what it held.
    pub(super) fn take(&mut self, table: Table, key: &[u8]) -> Result<Option<Slice>> {
        let old = self.get(table, key)?;
        if old.is_some() {
            self.remove(table, key);
        }
        Ok(old)
    }

    /// Commits every write of the transaction at once (durably if it was begun so).
    pub(super) fn commit(self) -> Result<()> {
        self.txn.commit().map_err(engine)?;
        for (total, added) in self.engine.shadowed.iter().zip(self.shadowed) {
            total.fetch_add(added, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A key of two parts.
pub(super) fn pair(a: &str, b: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(a.len() + 1 + b.len());
    key.extend_from_slice(a.as_bytes());
    key.push(0);
    key.extend_from_slice(b.as_bytes());
    key
}

/// The first part of a [`pair`] followed by its separator: the prefix of every key that starts
/// with `a`.
pub(super) fn pair_prefix(a: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(a.len() + 1);
    key.extend_from_slice(a.as_bytes());
    key.push(0);
    key
}

/// The parts of a [`pair`].
pub(super) fn split_pair(key: &[u8]) -> Result<(&str, &str)> {
    let corrupt = || StorageError::Corrupt("a two-part key".into());
    let at = key.iter().position(|&b| b == 0).ok_or_else(corrupt)?;
    let a = std::str::from_utf8(&key[..at]).map_err(|_| corrupt())?;
    let b = std::str::from_utf8(&key[at + 1..]).map_err(|_| corrupt())?;
    Ok((a, b))
}

/// A key of [`Table::StoresByOwner`].
pub(super) fn owner_key(owner: &str, created_at: u64, store: &str) -> Vec<u8> {
    let mut key = pair_prefix(owner);
    key.extend_from_slice(&created_at.to_be_bytes());
    key.extend_from_slice(store.as_bytes());
    key
}

/// The store id in a key of [`Table::StoresByOwner`].
pub(super) fn owner_key_store(key: &[u8]) -> Result<&str> {
    let corrupt = || StorageError::Corrupt("a stores_by_owner key".into());
    let at = key.iter().position(|&b| b == 0).ok_or_else(corrupt)?;
    let id = key.get(at + 1 + 8..).ok_or_else(corrupt)?;
    std::str::from_utf8(id).map_err(|_| corrupt())
}

fn is_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
}

/// How fjall's errors reach requests.
pub(super) fn engine(e: fjall::Error) -> StorageError {
    match e {
        fjall::Error::Locked => StorageError::Locked,
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) if is_full(&io) => {
            StorageError::Full
        }
        // fjall refuses every write after a failed journal write or fsync (it "poisons" itself)
        // until the database is opened again.
        fjall::Error::Poisoned => StorageError::Unavailable(BROKEN.into()),
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) => {
            StorageError::Unavailable(format!("{BROKEN} ({io})"))
        }
        other => StorageError::Engine(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_sort_like_tuples() {
        let mut keys = vec![
            ("ab", "c"),
            ("a", "z"),
            ("a", ""),
            ("a", "b"),
            ("b", "a"),
            ("a", "ba"),
        ];
        let mut encoded: Vec<Vec<u8>> = keys.iter().map(|(a, b)| pair(a, b)).collect();
        keys.sort();
        encoded.sort();
        let decoded: Vec<(&str, &str)> = encoded.iter().map(|k| split_pair(k).unwrap()).collect();
        assert_eq!(decoded, keys);
    }

    /// 1 MiB memtables, 4 MiB in all; 80 MB written in batches as the writer commits them, so
    /// that fjall seals its journal (at 64 MB), with a small keyspace written by every batch (as
    /// `stores` is), which would otherwise keep the sealed journal until 512 MiB of them pile up.
    #[test]
    fn upkeep_bounds_memtables_and_frees_sealed_journals() {
        let dir = tempfile::tempdir().unwrap();
        let options = EngineOptions {
            cache_bytes: 1 << 20,
            memtable_bytes: 1 << 20,
            write_buffer_bytes: 4 << 20,
        };
        let engine = Engine::open(&dir.path().join("db"), &options).unwrap();
        // Under the 4 KiB from which fjall compresses what it journals.
        let body = vec![7u8; 4000];
        let mut journals_seen = 0;
        let mut most_journals = 0;
        for batch in 0u32..1000 {
            let mut txn = engine.write(false);
            for i in 0..20 {
                let key = pair("store", &format!("{batch:04}-{i:02}"));
                txn.insert(Table::Records, key.clone(), b"header".to_vec());
                txn.insert(Table::Bodies, key, body.clone());
            }
            txn.insert(
                Table::Stores,
                b"store".to_vec(),
                batch.to_le_bytes().to_vec(),
            );
            txn.commit().unwrap();
            engine.upkeep(&mut journals_seen).unwrap();
            let buffered = engine.db.write_buffer_size();
            assert!(
                buffered <= 4 << 20,
                "batch {batch}: {buffered} bytes in memtables"
            );
            most_journals = most_journals.max(engine.db.journal_count());
        }
        assert!(most_journals >= 2, "fjall never sealed a journal");
        // The flushes the last upkeep asked for end in the background.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while engine.db.journal_count() > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(engine.db.journal_count(), 1, "a sealed journal was kept");
        let read = engine.read();
        assert_eq!(read.all(Table::Bodies).count(), 1000 * 20);
        assert_eq!(
            read.get(Table::Stores, b"store").unwrap().as_deref(),
            Some(&999u32.to_le_bytes()[..])
        );
    }

    /// Overwrites and removals of keys in the memtable seal it once it holds `SHADOWED_MAX`
    /// shadowed versions, long before its size would; new keys alone do not.
    #[test]
    fn upkeep_seals_memtables_full_of_shadowed_versions() {
        let dir = tempfile::tempdir().unwrap();
        let engine =
            Engine::open(&dir.path().join("db"), &EngineOptions::with_cache(1 << 20)).unwrap();
        let mut journals_seen = engine.db.journal_count();
        let active = |table: Table| engine.keyspace(table).inner().tree.active_memtable().len();
        let mut write = |each: &dyn Fn(&mut WriteTxn<'_>, usize)| {
            for batch in 0..SHADOWED_MAX / 64 {
                let mut txn = engine.write(false);
                for i in 0..64 {
                    each(&mut txn, batch * 64 + i);
                }
                txn.commit().unwrap();
                engine.upkeep(&mut journals_seen).unwrap();
            }
        };
        write(&|txn, i| txn.insert(Table::Records, pair("s", &format!("{i}")), b"h".to_vec()));
        assert_eq!(
            active(Table::Records),
            SHADOWED_MAX,
            "new keys sealed the memtable"
        );
        write(&|txn, i| {
            txn.insert(
                Table::Records,
                pair("s", &format!("{}", i % 10)),
                b"h".to_vec(),
            )
        });
        assert_eq!(
            active(Table::Records),
            0,
            "overwrites did not seal the memtable"
        );
        write(&|txn, i| txn.insert(Table::Users, format!("{i}"), b"u".to_vec()));
        write(&|txn, i| txn.remove(Table::Users, format!("{i}")));
        assert_eq!(
            active(Table::Users),
            0,
            "removals did not seal the memtable"
        );
        // Now the keys are in a table, not in the memtable: their tombstones shadow nothing it
        // holds.
        write(&|txn, i| txn.remove(Table::Users, format!("{i}")));
        assert_eq!(
            active(Table::Users),
            SHADOWED_MAX,
            "tombstones of keys outside the memtable sealed it"
        );
        // The seals lost nothing.
        let read = engine.read();
        assert_eq!(read.all(Table::Records).count(), SHADOWED_MAX);
    }

    #[test]
    fn prefix_ends_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"a\0"), Some(b"a\x01".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn owner_keys_sort_by_owner_then_time() {
        let a = owner_key("u1", 5, "s2");
        let b = owner_key("u1", 300, "s1");
        let c = owner_key("u2", 1, "s0");
        assert!(a < b && b < c);
        assert_eq!(owner_key_store(&b).unwrap(), "s1");
    }
}
