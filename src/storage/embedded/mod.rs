//! The embedded backend: fjall (an LSM tree with a journal and atomic cross-table commits, see
//! `engine.rs`) in `<data-dir>/db/`, plus `<data-dir>/blobs/` for bodies too large to keep inline.
//!
//! Writes go through one writer thread that batches whatever is queued into one transaction and
//! one journal fsync (group commit); a write is acknowledged only after its batch committed
//! durably. Reads see snapshots and never wait for the writer.
//!
//! Invariants:
//! - a store's `record_count`/`storage_bytes` change in the same transaction as the records;
//! - a blob file is written and synced before the commit that points at it, and removed only after
//!   the commit that stops pointing at it;
//! - a deleted store disappears from `STORES` at once; its records are purged in the background
//!   (tracked in `PURGE`, so a restart resumes the purge).

mod blobs;
mod codec;
mod engine;
mod hot;
mod readers;
mod records;
mod redb_import;
mod schema;
mod shares;
mod snapshot;
mod stores;
mod users;
mod writer;

use crate::storage::{Administration, BulkTransfer, Housekeeping, RecordStore};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;

use super::auth_cache::{AuthCache, Generation};
use super::{
    apply_delta, AccessDelta, BodyInput, KeyListQuery, KeyPage, OrphanCheck, OrphanReport, Record,
    RecordRead, RecordWrite, Result, Snapshot, StorageError, StoreListQuery, StorePage,
    StoreUpdate, UserUpdate, WriteOutcome,
};
use crate::model::{
    Authenticated, Millis, RecordKey, RecordMeta, ShareAccess, StoreId, StoreInfo, StoreName,
    TokenGrant, TokenHash, User, UserId, Username,
};
use blobs::{blob_ids, collect_crash_orphans, collect_orphans, sync_dir, Paths, INLINE_MAX};
use engine::{pair, Engine, EngineOptions, Read, ReadTxn, Table, BROKEN};
use hot::HotRecords;
use readers::Readers;
use records::{
    delete_record, find_record, list_keys, meta_of, open_record, put_records, read_record,
};
use schema::init_tables;
pub use schema::FORMAT_VERSION;
use shares::{list_shared_with, list_shares, set_share, share_in};
use snapshot::EmbeddedSnapshot;
use stores::{
    delete_store_in, delete_stores_of, get_or_create_store, import_store, list_stores, load_store,
    read_store, read_store_as, save_store, unnamed_idle_stores, update_store,
};
use users::{
    add_token, authenticate, create_first_user, delete_user, import_user, insert_user, list_users,
    read_user, tokens_of, update_user,
};
use writer::{writer_loop, Job, WriteKind};

/// Settings of the embedded engine.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Writes that add data are refused (507) while the data directory's filesystem has less than
    /// this free, so the engine never runs out of space in the middle of a commit; deletes still
    /// run. 0 turns the check off.
    pub min_free_bytes: u64,
    /// Memory for the engine's block cache (its memtables take up to 64 MiB more); the files'
    /// other pages stay in the OS page cache.
    pub cache_bytes: usize,
    /// Removes, right after the open and in the background, the blob files that no record points
    /// at: what a crash of the last process left. Only for the process that serves: the data
    /// directory is locked to it, so no write is in flight when the files are listed.
    pub collect_orphans_at_open: bool,
    /// How many listings and other multi-block reads may run at once (each on a thread of its
    /// own); the rest wait their turn. `None`: [`Readers::default_limit`].
    pub read_threads: Option<usize>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            min_free_bytes: 64 * 1024 * 1024,
            cache_bytes: 64 * 1024 * 1024,
            collect_orphans_at_open: false,
            read_threads: None,
        }
    }
}

/// How long a close waits for the engine to flush its memtables.
const CLOSE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

pub struct EmbeddedStore {
    engine: Arc<Engine>,
    /// `<data-dir>/db`
    engine_dir: PathBuf,
    paths: Arc<Paths>,
    auth: Arc<AuthCache>,
    hot: Arc<HotRecords>,
    readers: Arc<Readers>,
    writer: RwLock<Option<mpsc::Sender<Box<dyn Job>>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the data directory. Blocking.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_options(dir, &EmbeddedOptions::default())
    }

    /// Like [`EmbeddedStore::open`], with settings. Blocking.
    pub fn open_with_options(dir: &Path, options: &EmbeddedOptions) -> Result<Self> {
        let new_dir = !dir.is_dir();
        fs::create_dir_all(dir)?;
        let paths = Paths {
            blobs: dir.join("blobs"),
            spool: dir.join("tmp"),
            pins: Mutex::default(),
            min_free_bytes: options.min_free_bytes,
            io_failed: Arc::new(AtomicBool::new(false)),
        };
        fs::create_dir_all(&paths.blobs)?;
        // Anything left in the spool dir belongs to requests that never completed.
        let _ = fs::remove_dir_all(&paths.spool);
        fs::create_dir_all(&paths.spool)?;
        let engine_dir = dir.join("db");
        let engine = Engine::open(
            &engine_dir,
            &EngineOptions::with_cache(options.cache_bytes as u64),
        )?;
        // The entries just made (db/, blobs/, tmp/; the data directory itself when it is new)
        // survive a power cut only once their directories are synced: without this, a cut could
        // take the database with every commit it acknowledged (tests/power_loss.rs).
        sync_dir(dir)?;
        if new_dir {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let purge_pending = init_tables(&engine, dir)?;
        // Listed before the writer starts: every blob file here is the last process's.
        let crash_candidates = if options.collect_orphans_at_open {
            Some(blob_ids(&paths)?)
        } else {
            None
        };
        let engine = Arc::new(engine);
        let paths = Arc::new(paths);
        if let Some(ids) = crash_candidates {
            let (engine, paths) = (engine.clone(), paths.clone());
            std::thread::Builder::new()
                .name("kvstore-orphans".into())
                .spawn(move || collect_crash_orphans(&engine, &paths, ids))?;
        }
        let readers = Arc::new(Readers::start(
            options.read_threads.unwrap_or_else(Readers::default_limit),
        )?);
        let auth = Arc::new(AuthCache::default());
        let hot = Arc::new(HotRecords::default());
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let thread = {
            let engine = engine.clone();
            let paths = paths.clone();
            let (auth, hot) = (auth.clone(), hot.clone());
            std::thread::Builder::new()
                .name("kvstore-writer".into())
                .spawn(move || writer_loop(&engine, &paths, (&auth, &hot), rx, purge_pending))?
        };
        Ok(Self {
            engine,
            engine_dir,
            paths,
            auth,
            hot,
            readers,
            writer: RwLock::new(Some(tx)),
            writer_thread: Mutex::new(Some(thread)),
        })
    }

    /// A point lookup (a few blocks, typically cached), run right here on the calling task: a hop
    /// to the blocking pool would cost more than the lookup itself. Scans that can touch many
    /// blocks go through [`Self::read`].
    fn read_now<R>(&self, f: impl FnOnce(&ReadTxn<'_>) -> Result<R>) -> Result<R> {
        f(&self.engine.read())
    }

    /// The caller behind `token`: cached, or read from `txn`, which must have begun after `at`
    /// was taken (else a change committed in between could be cached under the new generation).
    fn caller_in(
        &self,
        at: Generation,
        txn: &ReadTxn<'_>,
        token: &TokenHash,
    ) -> Result<Option<Authenticated>> {
        if let Some(hit) = self.auth.get(at, token) {
            return Ok(Some(hit));
        }
        let found = authenticate(txn, token)?;
        if let Some(who) = &found {
            self.auth.fill(at, token, who);
        }
        Ok(found)
    }

    /// [`RecordStore::record_read`] answered from the caches alone, for the store's owner.
    fn hot_read(
        &self,
        at: Generation,
        token: &TokenHash,
        store: &StoreId,
        key: &RecordKey,
    ) -> Option<RecordRead> {
        let caller = self.auth.get(at, token)?;
        let (row, record) = self.hot.get_with_row(store.as_str(), key.as_str())?;
        if caller.user.id != row.user_id {
            return None;
        }
        Some(RecordRead {
            caller: Some(caller),
            store: Some(StoreInfo::clone(&row)),
            share: None,
            record: Some(record.record(key)),
            counters_exact: true,
            unconfirmed: None,
        })
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTxn<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let engine = self.engine.clone();
        self.readers.run(move || f(&engine.read())).await
    }
}

// The request path: callers, stores, keys and records.
#[async_trait]
impl RecordStore for EmbeddedStore {
    async fn user_by_token(&self, token: &TokenHash) -> Result<Option<Authenticated>> {
        let at = self.auth.generation();
        self.read_now(|txn| self.caller_in(at, txn, token))
    }

    async fn record_read(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
        key: Option<&RecordKey>,
    ) -> Result<RecordRead> {
        // Everything from one read transaction; only a blob removed by a concurrent overwrite
        // between the header and the open sends the record through `record_get`'s retries.
        let at = self.auth.generation();
        let ticket = self.hot.ticket();
        // The owner's GET of a hot record: caller, store row and record all cached, no read
        // transaction at all.
        if let (Some(token), Some(key)) = (token, key) {
            if let Some(read) = self.hot_read(at, token, store, key) {
                return Ok(read);
            }
        }
        let (mut read, blob_gone) = self.read_now(|txn| {
            let caller = match token {
                Some(token) => self.caller_in(at, txn, token)?,
                None => None,
            };
            let caller_id = caller.as_ref().map(|who| &who.user.id);
            let Some(info) = read_store_as(txn, store.as_str(), caller_id)? else {
                return Ok((
                    RecordRead {
                        caller,
                        ..RecordRead::default()
                    },
                    false,
                ));
            };
            // The owner's share never counts (`auth::share_counts`): not looked up, which saves
            // a table open on every owner's request.
            let share = match &caller {
                Some(who) if who.user.id != info.user_id => share_in(txn, store, &who.user.id)?,
                _ => None,
            };
            let Some(key) = key else {
                return Ok((
                    RecordRead {
                        caller,
                        store: Some(info),
                        share,
                        record: None,
                        counters_exact: true,
                        unconfirmed: None,
                    },
                    false,
                ));
            };
            let hot = Some((&*self.hot, ticket));
            let (record, blob_gone) = match open_record(txn, &self.paths, hot, store, key) {
                Ok(record) => (record, false),
                Err(StorageError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    (None, true)
                }
                Err(e) => return Err(e),
            };
            if caller
                .as_ref()
                .is_some_and(|who| who.user.id == info.user_id)
            {
                // As the owner reads it (`owner_disabled` false): served only to the owner.
                self.hot.fill_row(ticket, &info);
            }
            Ok((
                RecordRead {
                    caller,
                    store: Some(info),
                    share,
                    record,
                    counters_exact: true,
                    unconfirmed: None,
                },
                blob_gone,
            ))
        })?;
        if let (true, Some(key)) = (blob_gone, key) {
            read.record = self.record_get(store, key).await?;
        }
        Ok(read)
    }

    async fn share_get(&self, store: &StoreId, user: &UserId) -> Result<Option<ShareAccess>> {
        self.read_now(|txn| share_in(txn, store, user))
    }

    fn record_read_cached(
        &self,
        token: &TokenHash,
        store: &StoreId,
        key: &RecordKey,
    ) -> Option<RecordRead> {
        self.hot_read(self.auth.generation(), token, store, key)
    }

    async fn stores_shared_with(&self, user: &UserId, query: &StoreListQuery) -> Result<StorePage> {
        let (user, query) = (user.clone(), query.clone());
        self.read(move |txn| list_shared_with(txn, &user, &query))
            .await
    }

    async fn store_get_or_create(&self, store: StoreInfo) -> Result<(StoreInfo, bool)> {
        self.write(WriteKind::DATA, move |txn, post| {
            let (info, created) = get_or_create_store(txn, store, &mut post.changes)?;
            if created {
                post.changes.stores.push(info.id.as_str().to_owned());
            }
            Ok((info, created))
        })
        .await
    }

    async fn store_get(&self, id: &StoreId) -> Result<Option<StoreInfo>> {
        self.read_now(|txn| read_store(txn, id.as_str()))
    }

    async fn store_get_by_name(
        &self,
        owner: &UserId,
        name: &StoreName,
    ) -> Result<Option<StoreInfo>> {
        let (owner, name) = (owner.clone(), name.clone());
        self.read_now(move |txn| {
            let Some(id) = txn.get(Table::StoreNames, &pair(owner.as_str(), name.as_str()))? else {
                return Ok(None);
            };
            read_store(txn, &String::from_utf8_lossy(&id))
        })
    }

    async fn stores_list(&self, owner: &UserId, query: &StoreListQuery) -> Result<StorePage> {
        let (owner, query) = (owner.clone(), query.clone());
        self.read(move |txn| list_stores(txn, &owner, &query)).await
    }

    async fn store_update(&self, id: &StoreId, update: StoreUpdate) -> Result<Option<StoreInfo>> {
        let id = id.clone();
        self.write(WriteKind::DATA, move |txn, post| {
            update_store(txn, &id, update, &mut post.changes)
        })
        .await
    }

    async fn store_delete(&self, id: &StoreId) -> Result<bool> {
        let id = id.clone();
        self.write(WriteKind::FREEING_DATA, move |txn, post| {
            delete_store_in(txn, id.as_str(), post)
        })
        .await
    }

    async fn keys_list(&self, store: &StoreId, query: &KeyListQuery) -> Result<Option<KeyPage>> {
        let (store, query) = (store.clone(), query.clone());
        self.read(move |txn| list_keys(txn, &store, &query)).await
    }

    async fn record_get(&self, store: &StoreId, key: &RecordKey) -> Result<Option<Record>> {
        // A concurrent overwrite or delete may commit and remove the blob between our read of
        // the header and the open; a fresh read transaction then sees the new state. Once
        // open, the file stays readable even if it is removed.
        let mut attempts = 0;
        loop {
            let hot = Some((&*self.hot, self.hot.ticket()));
            match self.read_now(|txn| read_record(txn, &self.paths, hot, store, key)) {
                Err(StorageError::Io(e))
                    if e.kind() == std::io::ErrorKind::NotFound && attempts < 16 =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    async fn record_meta(&self, store: &StoreId, key: &RecordKey) -> Result<Option<RecordMeta>> {
        // A hot record is what the last acknowledged write left (see `hot`): a HEAD needs no table.
        if let Some(hit) = self.hot.get(store.as_str(), key.as_str()) {
            return Ok(Some(hit.meta(key)));
        }
        let found = self.read_now(|txn| find_record(txn, store, key, false))?;
        Ok(found.map(|(header, _)| meta_of(key, header)))
    }

    async fn records_write(
        &self,
        store: &StoreId,
        records: Vec<RecordWrite>,
    ) -> Result<WriteOutcome> {
        // Bodies that stay inline and are already in memory need no file work, and a hop to the
        // blocking pool (two thread wake-ups) cost half the CPU of a 1 KiB PUT: 81 → 38 µs.
        let in_memory = records
            .iter()
            .all(|r| matches!(r.body, BodyInput::Bytes(_)) && r.body.len() <= INLINE_MAX);
        let prepared = if in_memory {
            Self::prepare_records(&self.paths, records)?
        } else {
            let paths = self.paths.clone();
            tokio::task::spawn_blocking(move || Self::prepare_records(&paths, records))
                .await
                .map_err(|e| StorageError::Engine(e.to_string()))??
        };
        let store = store.clone();
        let paths = self.paths.clone();
        self.write(WriteKind::DATA, move |txn, post| {
            put_records(txn, &paths, &store, prepared, post)
        })
        .await
    }

    async fn record_delete(&self, store: &StoreId, key: &RecordKey) -> Result<WriteOutcome> {
        let (store, key) = (store.clone(), key.clone());
        let paths = self.paths.clone();
        self.write(WriteKind::FREEING_DATA, move |txn, post| {
            delete_record(txn, &paths, &store, &key, post)
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        if self.writer.read().map(|w| w.is_none()).unwrap_or(true) {
            return Err(StorageError::Closed);
        }
        // Reads of cached pages still work after an I/O error: the probe must not rely on one.
        if self.paths.io_failed.load(Ordering::Acquire) {
            return Err(StorageError::Unavailable(BROKEN.into()));
        }
        self.read(|txn| read_store(txn, "").map(|_| ())).await
    }

    fn spool_dir(&self) -> PathBuf {
        self.paths.spool.clone()
    }
}

// Users, tokens and shares.
#[async_trait]
impl Administration for EmbeddedStore {
    async fn user_create(
        &self,
        username: Username,
        is_admin: bool,
        token: TokenHash,
    ) -> Result<User> {
        let user = User::new(username, is_admin);
        self.write(WriteKind::AUTH, move |txn, _| {
            insert_user(txn, &user, &token)?;
            Ok(user)
        })
        .await
    }

    async fn user_create_first(
        &self,
        username: Username,
        token: TokenHash,
    ) -> Result<Option<User>> {
        let user = User::new(username, true);
        self.write(WriteKind::AUTH, move |txn, _| {
            create_first_user(txn, user, &token)
        })
        .await
    }

    async fn user_update(&self, id: &UserId, update: UserUpdate) -> Result<Option<User>> {
        let id = id.clone();
        self.write(WriteKind::AUTH, move |txn, _| update_user(txn, &id, update))
            .await
    }

    async fn user_delete(&self, id: &UserId) -> Result<bool> {
        let id = id.clone();
        self.write(WriteKind::FREEING_AUTH, move |txn, post| {
            if !delete_user(txn, &id)? {
                return Ok(false);
            }
            delete_stores_of(txn, &id, post)?;
            Ok(true)
        })
        .await
    }

    async fn token_add(
        &self,
        user: &UserId,
        grant: TokenGrant,
        revoke_others: bool,
    ) -> Result<bool> {
        let user = user.clone();
        self.write(WriteKind::AUTH, move |txn, _| {
            add_token(txn, &user, &grant, revoke_others)
        })
        .await
    }

    async fn share_set(
        &self,
        store: &StoreId,
        user: &UserId,
        access: Option<ShareAccess>,
    ) -> Result<bool> {
        let (store, user) = (store.clone(), user.clone());
        self.write(WriteKind::DATA, move |txn, _| {
            set_share(txn, &store, &user, access)
        })
        .await
    }

    async fn shares_list(&self, store: &StoreId) -> Result<Vec<(UserId, ShareAccess)>> {
        let store = store.clone();
        self.read(move |txn| list_shares(txn, &store)).await
    }

    async fn user_by_name(&self, username: &Username) -> Result<Option<User>> {
        self.read_now(|txn| {
            let Some(id) = txn.get(Table::Usernames, username.as_str().as_bytes())? else {
                return Ok(None);
            };
            read_user(txn, &String::from_utf8_lossy(&id))
        })
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>> {
        self.read_now(|txn| read_user(txn, id.as_str()))
    }

    async fn users_list(&self) -> Result<Vec<User>> {
        self.read(|txn| list_users(txn)).await
    }
}

// Whole users and stores moved between backends, and snapshots for backups.
#[async_trait]
impl BulkTransfer for EmbeddedStore {
    async fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        let pin = self.paths.pin();
        Ok(Box::new(EmbeddedSnapshot {
            engine: self.engine.clone(),
            snapshot: self.engine.snapshot(),
            paths: self.paths.clone(),
            readers: self.readers.clone(),
            _pin: pin,
        }))
    }

    async fn user_tokens(&self, user: &UserId) -> Result<Vec<TokenGrant>> {
        let user = user.clone();
        self.read(move |txn| tokens_of(txn, user.as_str())).await
    }

    async fn user_import(&self, user: &User, tokens: &[TokenGrant]) -> Result<()> {
        let (user, tokens) = (user.clone(), tokens.to_vec());
        self.write(WriteKind::AUTH, move |txn, _| {
            import_user(txn, &user, &tokens)
        })
        .await
    }

    async fn store_import(&self, store: &StoreInfo) -> Result<()> {
        let store = store.clone();
        self.write(WriteKind::DATA, move |txn, post| {
            import_store(txn, &store, post)
        })
        .await
    }
}

// Background work: retention, orphans, counter flushes, shutdown.
#[async_trait]
impl Housekeeping for EmbeddedStore {
    async fn stores_unnamed_idle(&self, idle_since: Millis, limit: usize) -> Result<Vec<StoreId>> {
        // A full scan of the store rows: the sweep runs rarely and stores are few next to records.
        self.read(move |txn| unnamed_idle_stores(txn, idle_since, limit))
            .await
    }

    async fn orphans(&self, check: OrphanCheck) -> Result<OrphanReport> {
        let (engine, paths) = (self.engine.clone(), self.paths.clone());
        tokio::task::spawn_blocking(move || collect_orphans(&engine, &paths, check))
            .await
            .map_err(|e| StorageError::Engine(e.to_string()))?
    }

    async fn apply_access(&self, batch: Vec<(StoreId, AccessDelta)>) -> Result<()> {
        self.write(WriteKind::DATA, move |txn, post| {
            for (id, delta) in &batch {
                if let Some(mut store) = load_store(txn, id.as_str())? {
                    apply_delta(&mut store, delta);
                    save_store(txn, &store, &mut post.changes)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        if let Ok(mut writer) = self.writer.write() {
            writer.take();
        }
        let thread = self.writer_thread.lock().ok().and_then(|mut t| t.take());
        let Some(thread) = thread else {
            return Ok(()); // closed before
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| StorageError::Engine(e.to_string()))?
            .map_err(|_| StorageError::Engine("writer thread panicked".into()))?;
        // No write can come any more. After an I/O error the journal must be rewritten at the
        // next open: no marker.
        if self.paths.io_failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let (engine, dir) = (self.engine.clone(), self.engine_dir.clone());
        tokio::task::spawn_blocking(move || engine.close(&dir, CLOSE_PATIENCE))
            .await
            .map_err(|e| StorageError::Engine(e.to_string()))?
    }
}
