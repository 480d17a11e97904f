//! The storage boundary: the domain-level [`Store`] traits, one per concern (the request path,
//! administration, bulk transfer, housekeeping), and the backends behind them. Only [`open`]
//! knows which backend is in use.
//!
//! Absence is `Option`/`bool`; the HTTP layer decides what it means for the client.

mod access;
mod auth_cache;
pub mod body;
pub mod embedded;
pub mod memory;
pub mod objects;
pub mod postgres;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::{
    Authenticated, GeneralAccess, Millis, RecordKey, RecordMeta, ShareAccess, StoreId, StoreInfo,
    StoreName, Token, TokenGrant, TokenHash, User, UserId, Username,
};

pub use access::{apply_delta, AccessCounters, AccessDelta, AccessKind};
pub use body::{BodyInput, BodyOutput, LocalBody, Record};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the name is already taken")]
    NameTaken,
    #[error("the user already exists")]
    UserExists,
    #[error("the data directory is in use by another process (is a server running on it?)")]
    Locked,
    #[error("the data directory has format version {found}, this build understands {supported}")]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the storage backend is shutting down")]
    Closed,
    #[error("no space left on the device")]
    Full,
    #[error("the database or the object store is unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Listing stores of one user: `offset`/`limit` paging over stores sorted by creation time.
#[derive(Debug, Clone)]
pub struct StoreListQuery {
    pub offset: u64,
    pub limit: u64,
    pub desc: bool,
    /// Include unnamed stores (named ones are always included).
    pub unnamed: bool,
}

#[derive(Debug, Clone)]
pub struct StorePage {
    pub total: u64,
    pub items: Vec<StoreInfo>,
}

/// Listing keys of one store: an ordered range scan.
#[derive(Debug, Clone)]
pub struct KeyListQuery {
    /// Only keys strictly greater than this one.
    pub exclusive_start_key: Option<String>,
    /// Only keys starting with this string (empty: all keys).
    pub prefix: String,
    pub limit: usize,
}

#[derive(Debug, Clone, Default)]
pub struct KeyPage {
    pub items: Vec<RecordMeta>,
    /// More keys match after the last one returned.
    pub is_truncated: bool,
}

/// What [`RecordStore::record_read`] found.
#[derive(Debug, Default)]
pub struct RecordRead {
    /// The token's user; `None` without a token, or for a token that authenticates nobody.
    pub caller: Option<Authenticated>,
    pub store: Option<StoreInfo>,
    /// The caller's share of the store, whoever the caller is (whether it counts is
    /// [`crate::auth`]'s to say).
    pub share: Option<ShareAccess>,
    pub record: Option<Record>,
    /// Whether `store`'s counters and times are those [`RecordStore::store_get`] shows; PostgreSQL
    /// leaves its counter shards out of this read.
    pub counters_exact: bool,
    /// Set only by [`RecordStore::record_read_for_write`]: the caller, the store and the share
    /// came from caches not yet confirmed against the database, and the write must carry this to
    /// confirm them ([`RecordStore::record_put_if_current`], [`RecordStore::record_delete_if_current`]).
    pub unconfirmed: Option<AccessStamp>,
}

/// What an access decision from a backend's caches was made under (PostgreSQL: the access
/// generation the caches were filled under), for the write that confirms it: the write happens
/// only if it is still current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessStamp(pub i64);

/// What a write that confirms an [`AccessStamp`] did: `Done`, or nothing because the stamp is no
/// longer current (something an access check reads changed since): decide access again through
/// [`RecordStore::record_read`], then write unconditionally. `Stale` gives back what was to be
/// written (a PUT's body).
#[derive(Debug)]
pub enum IfCurrent<T> {
    Done(WriteOutcome),
    Stale(T),
}

/// A change to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserUpdate {
    pub disabled: Option<bool>,
    pub is_admin: Option<bool>,
}

/// A change to a store's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct StoreUpdate {
    /// `Some(None)` makes the store unnamed.
    pub name: Option<Option<StoreName>>,
    pub general_access: Option<GeneralAccess>,
    /// `Some(None)` removes the title.
    pub title: Option<Option<String>>,
}

impl StoreUpdate {
    /// Applies what the update changes besides the name (which each backend re-indexes itself),
    /// and marks the store modified and accessed now.
    pub(crate) fn apply_settings(self, store: &mut StoreInfo) {
        if let Some(access) = self.general_access {
            store.general_access = access;
        }
        if let Some(title) = self.title {
            store.title = title;
        }
        let now = crate::model::now_millis();
        store.modified_at = now;
        store.accessed_at = now;
    }
}

/// What a record write did to the store, for the caller's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    StoreMissing,
}

/// One record of a [`RecordStore::records_write`] batch.
#[derive(Debug)]
pub struct RecordWrite {
    pub key: RecordKey,
    pub content_type: String,
    pub body: BodyInput,
    /// The record's ETag version, kept as given.
    pub version: u64,
}

/// How [`Housekeeping::orphans`] runs.
#[derive(Debug, Clone, Copy)]
pub struct OrphanCheck {
    /// Remove what is found (otherwise only report it).
    pub remove: bool,
    /// Bodies written more recently than this are left alone: a write may have stored its body and
    /// not yet committed the record that points at it. Zero when no write can be in flight (the
    /// data directory is locked by `kvstore fsck`, or the caller knows nothing is writing).
    pub min_age: Duration,
}

/// What [`Housekeeping::orphans`] found: stored bodies that no record points at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrphanReport {
    /// Orphan bodies found (blob files, or chunked bodies on PostgreSQL).
    pub bodies: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// How many of them were removed (0 with `remove: false`, or while a snapshot that may still
    /// read old bodies is open).
    pub removed: u64,
}

/// Gathers records of one store at a time into [`RecordStore::records_write`] batches of bounded size
/// (restore, copy): a batch goes out when it is full, when a record of another store arrives, and
/// at [`ImportBatcher::flush`].
#[derive(Default)]
pub struct ImportBatcher {
    store: Option<StoreId>,
    records: Vec<RecordWrite>,
    bytes: u64,
}

impl ImportBatcher {
    const MAX_RECORDS: usize = 1000;
    /// Bytes of bodies per batch, in memory or spooled.
    const MAX_BYTES: u64 = 8 * 1024 * 1024;

    pub async fn push(
        &mut self,
        target: &dyn Store,
        store: &StoreId,
        record: RecordWrite,
    ) -> Result<()> {
        if self.store.as_ref().is_some_and(|s| s != store) {
            self.flush(target).await?;
        }
        self.store = Some(store.clone());
        self.bytes += record.body.len();
        self.records.push(record);
        if self.records.len() >= Self::MAX_RECORDS || self.bytes >= Self::MAX_BYTES {
            self.flush(target).await?;
        }
        Ok(())
    }

    /// Writes what is gathered. Records of a store deleted meanwhile are dropped with it.
    pub async fn flush(&mut self, target: &dyn Store) -> Result<()> {
        self.bytes = 0;
        let records = std::mem::take(&mut self.records);
        match &self.store {
            Some(store) if !records.is_empty() => {
                target.records_write(store, records).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Everything a backend is: the four traits below, by concern. Code holds an `Arc<dyn Store>` and
/// imports the trait of the concern it uses (`use crate::storage::RecordStore` on the request path).
///
/// A new backend implements the required methods of each (the ones without a body below; the
/// others have defaults written once in terms of them), and runs `tests/conformance.rs`, which
/// every backend passes the same way.
pub trait Store: RecordStore + Administration + BulkTransfer + Housekeeping {}

impl<T: RecordStore + Administration + BulkTransfer + Housekeeping + ?Sized> Store for T {}

/// The request path: callers, stores, keys and records, what serving the API needs.
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// The user a token belongs to, with the token's scope; `None` for an unknown token or a
    /// disabled user.
    async fn user_by_token(&self, token: &TokenHash) -> Result<Option<Authenticated>>;
    /// `user`'s share of `store`, whoever the user is (whether it counts is
    /// [`crate::auth`]'s to say).
    async fn share_get(&self, store: &StoreId, user: &UserId) -> Result<Option<ShareAccess>>;
    /// Stores other users shared with `user`, paged like [`RecordStore::stores_list`].
    async fn stores_shared_with(&self, user: &UserId, query: &StoreListQuery) -> Result<StorePage>;

    /// Saves `store` unless the owner already has a store of that name, in which case that one is
    /// returned with `false`. Unnamed stores are always created.
    async fn store_get_or_create(&self, store: StoreInfo) -> Result<(StoreInfo, bool)>;
    async fn store_get(&self, id: &StoreId) -> Result<Option<StoreInfo>>;
    async fn store_get_by_name(
        &self,
        owner: &UserId,
        name: &StoreName,
    ) -> Result<Option<StoreInfo>>;
    async fn stores_list(&self, owner: &UserId, query: &StoreListQuery) -> Result<StorePage>;
    /// `Ok(None)` when the store does not exist; [`StorageError::NameTaken`] on a rename clash.
    async fn store_update(&self, id: &StoreId, update: StoreUpdate) -> Result<Option<StoreInfo>>;
    /// Makes the store and its records invisible at once. `false` when it did not exist.
    async fn store_delete(&self, id: &StoreId) -> Result<bool>;

    /// The hot path of record requests by store id: the token's user, the store, the caller's
    /// share of it and, given a key, the record (`GET`; writes give none), in one read
    /// transaction or round trip where the backend can. The store's counters may be left out (see
    /// [`RecordRead::counters_exact`]). Nothing here decides access.
    async fn record_read(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
        key: Option<&RecordKey>,
    ) -> Result<RecordRead> {
        let caller = match token {
            Some(token) => self.user_by_token(token).await?,
            None => None,
        };
        let Some(info) = self.store_get(store).await? else {
            return Ok(RecordRead {
                caller,
                ..RecordRead::default()
            });
        };
        let share = match &caller {
            Some(who) => self.share_get(store, &who.user.id).await?,
            None => None,
        };
        let record = match key {
            Some(key) => self.record_get(store, key).await?,
            None => None,
        };
        Ok(RecordRead {
            caller,
            store: Some(info),
            share,
            record,
            counters_exact: true,
            unconfirmed: None,
        })
    }

    /// [`RecordStore::record_read`] of a record, answered from memory alone and without waiting,
    /// where the backend holds all of it (the embedded engine: the token's caller and, for the
    /// store's owner, the store's row and the record among its hot records); `None` otherwise, and
    /// the caller asks `record_read`. What it answers is what `record_read` would.
    fn record_read_cached(
        &self,
        _token: &TokenHash,
        _store: &StoreId,
        _key: &RecordKey,
    ) -> Option<RecordRead> {
        None
    }

    /// `None` when the store does not exist.
    async fn keys_list(&self, store: &StoreId, query: &KeyListQuery) -> Result<Option<KeyPage>>;
    /// [`RecordStore::record_read`] of a key listing: the token's user, the store and the
    /// caller's share, with one page of the store's keys (`None` when the store does not exist,
    /// or is gone by the time they are read), in one round trip where the backend can. Nothing
    /// here decides access: the caller drops the keys unless it grants it. The page is what a
    /// listing shows: each item's key and size are exact, but a backend may leave its
    /// `content_type` empty and its `version` 0 (PostgreSQL does when the caches answer, to read
    /// fewer columns); [`RecordStore::keys_list`] gives the whole metadata.
    async fn keys_read(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
        query: &KeyListQuery,
    ) -> Result<(RecordRead, Option<KeyPage>)> {
        let read = self.record_read(token, store, None).await?;
        let keys = match read.store {
            Some(_) => self.keys_list(store, query).await?,
            None => None,
        };
        Ok((read, keys))
    }
    async fn record_get(&self, store: &StoreId, key: &RecordKey) -> Result<Option<Record>>;
    /// The record without its body; backends that can avoid reading the body override this.
    async fn record_meta(&self, store: &StoreId, key: &RecordKey) -> Result<Option<RecordMeta>> {
        Ok(self.record_get(store, key).await?.map(|r| r.meta))
    }
    /// Stores a record under a new random version (its ETag): a batch of one for
    /// [`RecordStore::records_write`].
    async fn record_put(
        &self,
        store: &StoreId,
        key: &RecordKey,
        content_type: &str,
        body: BodyInput,
    ) -> Result<WriteOutcome> {
        let record = RecordWrite {
            key: key.clone(),
            content_type: content_type.to_owned(),
            body,
            version: rand::random(),
        };
        self.records_write(store, vec![record]).await
    }
    /// The one write path: stores records of one store, each under its given version (copies
    /// keep their ETags), in one transaction and one durable commit where the backend can
    /// (restore, copy and bulk loads write batches; a PUT is a batch of one). A key given twice
    /// ends with its last record, as if they were written in turn. Nothing is written when the
    /// store does not exist.
    async fn records_write(
        &self,
        store: &StoreId,
        records: Vec<RecordWrite>,
    ) -> Result<WriteOutcome>;
    /// Deleting a record that does not exist is not an error.
    async fn record_delete(&self, store: &StoreId, key: &RecordKey) -> Result<WriteOutcome>;

    /// The access check of a PUT or DELETE of one record: [`RecordStore::record_read`] without a
    /// key, which a backend may answer from caches it has not confirmed, leaving that to the
    /// write (one round trip instead of two): it then sets [`RecordRead::unconfirmed`], and the
    /// caller passes it to [`RecordStore::record_put_if_current`] or
    /// [`RecordStore::record_delete_if_current`], and decides again through `record_read` before
    /// refusing anything. A backend that gives out stamps overrides those two as well: their
    /// defaults ignore them.
    async fn record_read_for_write(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
    ) -> Result<RecordRead> {
        self.record_read(token, store, None).await
    }
    /// [`RecordStore::record_put`] if `stamp` (from [`RecordRead::unconfirmed`]) is still current;
    /// without one, always.
    async fn record_put_if_current(
        &self,
        stamp: Option<AccessStamp>,
        store: &StoreId,
        key: &RecordKey,
        content_type: &str,
        body: BodyInput,
    ) -> Result<IfCurrent<BodyInput>> {
        let _ = stamp; // never given out by a backend without caches to confirm
        Ok(IfCurrent::Done(
            self.record_put(store, key, content_type, body).await?,
        ))
    }
    /// [`RecordStore::record_delete`] if `stamp` is still current; without one, always.
    async fn record_delete_if_current(
        &self,
        stamp: Option<AccessStamp>,
        store: &StoreId,
        key: &RecordKey,
    ) -> Result<IfCurrent<()>> {
        let _ = stamp;
        Ok(IfCurrent::Done(self.record_delete(store, key).await?))
    }

    /// Checks that the backend answers (readiness).
    async fn ping(&self) -> Result<()>;
    /// Where request bodies are spooled before [`RecordStore::records_write`]; on the same
    /// filesystem as the data so that a spooled body can be moved into place without a copy.
    fn spool_dir(&self) -> PathBuf;
}

/// Users, tokens and shares (the admin API, `kvstore users` and `kvstore share`).
#[async_trait]
pub trait Administration: Send + Sync + 'static {
    /// Creates a user with one token. Fails with [`StorageError::UserExists`] if the name is taken.
    async fn user_create(
        &self,
        username: Username,
        is_admin: bool,
        token: TokenHash,
    ) -> Result<User>;
    /// Creates the user only if there is no user at all yet; `None` when users already exist.
    /// Several nodes starting together on one empty database create it once.
    async fn user_create_first(&self, username: Username, token: TokenHash)
        -> Result<Option<User>>;
    async fn user_by_name(&self, username: &Username) -> Result<Option<User>>;
    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>>;
    async fn users_list(&self) -> Result<Vec<User>>;
    /// `Ok(None)` when the user does not exist.
    async fn user_update(&self, id: &UserId, update: UserUpdate) -> Result<Option<User>>;
    /// Deletes the user, its tokens, the shares it was given, and its stores (with their records,
    /// as `store_delete` does). `false` when it did not exist.
    async fn user_delete(&self, id: &UserId) -> Result<bool>;
    /// Adds a token to a user; with `revoke_others`, every other token of the user stops working
    /// in the same transaction. `false` when the user does not exist.
    async fn token_add(
        &self,
        user: &UserId,
        grant: TokenGrant,
        revoke_others: bool,
    ) -> Result<bool>;
    /// Shares a store with a user (`Some`), or stops sharing it (`None`). `false` when the store
    /// does not exist.
    async fn share_set(
        &self,
        store: &StoreId,
        user: &UserId,
        access: Option<ShareAccess>,
    ) -> Result<bool>;
    /// Who a store is shared with.
    async fn shares_list(&self, store: &StoreId) -> Result<Vec<(UserId, ShareAccess)>>;
}

/// Whole users and stores moved between backends (`kvstore copy`, `restore`; records go through
/// [`RecordStore::records_write`]) and snapshots read whole (`kvstore backup`, `copy`).
#[async_trait]
pub trait BulkTransfer: Send + Sync + 'static {
    /// A user's tokens (hashes and scopes).
    async fn user_tokens(&self, user: &UserId) -> Result<Vec<TokenGrant>>;
    /// Saves a user exactly as given (id, name, creation time, flags) unless it exists, and adds
    /// the tokens it does not have yet. [`StorageError::UserExists`] if another user has the name.
    async fn user_import(&self, user: &User, tokens: &[TokenGrant]) -> Result<()>;
    /// Saves a store row exactly as given (id, timestamps, stats, secret), creating or replacing
    /// it. Records are not touched. [`StorageError::NameTaken`] if another store has the name.
    async fn store_import(&self, store: &StoreInfo) -> Result<()>;
    /// A consistent read-only view of all data as of now; writes go on meanwhile.
    async fn snapshot(&self) -> Result<Box<dyn Snapshot>>;
}

/// Background work the server runs on a timer, and shutdown.
#[async_trait]
pub trait Housekeeping: Send + Sync + 'static {
    /// Unnamed stores, of every user, that nobody has read or written since `idle_since`; the
    /// longest idle first, at most `limit` (for `serve --unnamed-retention`).
    async fn stores_unnamed_idle(&self, idle_since: Millis, limit: usize) -> Result<Vec<StoreId>>;
    /// Finds stored bodies that no record points at (left by a crash between storing a body and
    /// committing its record, or by a bug), reports them and, with `check.remove`, removes them.
    /// Bodies an open snapshot may still read and bodies of writes in flight are never touched.
    /// Backends that keep bodies inside their records have none.
    async fn orphans(&self, check: OrphanCheck) -> Result<OrphanReport> {
        let _ = check;
        Ok(OrphanReport::default())
    }
    /// Applies batched read/list counters and `accessedAt` (see [`AccessCounters`]).
    async fn apply_access(&self, batch: Vec<(StoreId, access::AccessDelta)>) -> Result<()>;
    /// Waits until every acknowledged write is on disk and background work has stopped.
    async fn close(&self) -> Result<()>;
}

/// Everything a backend holds, frozen at one instant (a read transaction held open). Bodies read
/// through it are those of that instant even if records are overwritten or deleted meanwhile.
#[async_trait]
pub trait Snapshot: Send + Sync {
    /// Every user with its tokens.
    async fn users(&self) -> Result<Vec<(User, Vec<TokenGrant>)>>;
    /// Every share: (store, user it is shared with, access).
    async fn shares(&self) -> Result<Vec<(StoreId, UserId, ShareAccess)>>;
    /// Every store of every user (deleted ones excluded).
    async fn stores(&self) -> Result<Vec<StoreInfo>>;
    /// Up to `limit` records of `store` with keys after `after`, in key order.
    async fn keys(
        &self,
        store: &StoreId,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<RecordMeta>>;
    async fn record(&self, store: &StoreId, key: &RecordKey) -> Result<Option<Record>>;
}

/// Which backend to open.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The embedded engine in this data directory.
    Embedded {
        dir: PathBuf,
        options: embedded::EmbeddedOptions,
    },
    /// Everything in memory, lost at exit (tests).
    Memory,
    /// A PostgreSQL (or compatible) database shared by any number of nodes.
    Postgres {
        url: String,
        options: postgres::PgOptions,
    },
}

impl Backend {
    /// The embedded engine in `dir` with default settings.
    pub fn embedded(dir: impl Into<PathBuf>) -> Self {
        Backend::Embedded {
            dir: dir.into(),
            options: embedded::EmbeddedOptions::default(),
        }
    }
}

pub async fn open(backend: &Backend) -> Result<Arc<dyn Store>> {
    match backend {
        Backend::Embedded { dir, options } => {
            let (dir, options) = (dir.clone(), options.clone());
            let store = tokio::task::spawn_blocking(move || {
                embedded::EmbeddedStore::open_with_options(&dir, &options)
            })
            .await
            .map_err(|e| StorageError::Engine(e.to_string()))??;
            Ok(Arc::new(store))
        }
        Backend::Memory => Ok(Arc::new(memory::MemoryStore::new()?)),
        Backend::Postgres { url, options } => {
            Ok(Arc::new(postgres::PgStore::connect(url, options).await?))
        }
    }
}

/// Creates the user `admin` on a backend that has no user yet. Returns the token when it did.
pub async fn ensure_first_user(store: &dyn Store, token: Option<Token>) -> Result<Option<Token>> {
    let token = token.unwrap_or_else(Token::generate);
    let admin = Username::parse("admin").map_err(|e| StorageError::Corrupt(e.0))?;
    Ok(store
        .user_create_first(admin, token.hash())
        .await?
        .map(|_| token))
}

/// One page of stores sorted by creation time (then id), as every store listing returns them, for
/// backends that gather the matching stores before paging.
pub(crate) fn page_stores(mut stores: Vec<StoreInfo>, query: &StoreListQuery) -> StorePage {
    stores.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    if query.desc {
        stores.reverse();
    }
    let total = stores.len() as u64;
    let items = stores
        .into_iter()
        .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(query.limit).unwrap_or(usize::MAX))
        .collect();
    StorePage { total, items }
}

/// Where a key scan starts: after `exclusiveStartKey`, or at `prefix` when that comes later.
pub(crate) fn scan_start(query: &KeyListQuery) -> std::ops::Bound<String> {
    use std::ops::Bound;
    match &query.exclusive_start_key {
        Some(start) if start.as_str() >= query.prefix.as_str() => Bound::Excluded(start.clone()),
        _ if !query.prefix.is_empty() => Bound::Included(query.prefix.clone()),
        _ => Bound::Unbounded,
    }
}
