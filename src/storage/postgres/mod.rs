//! The PostgreSQL backend: stateless kvstore nodes over one shared database.
//!
//! Real SQL rather than a key-value emulation: keys are indexed per store in byte order
//! (`COLLATE "C"`), a key listing is a keyset range scan, and a record write locks its store's row
//! so that the counters stay exact under concurrent writers on any number of nodes. Bodies larger
//! than [`INLINE_MAX`](chunks::INLINE_MAX) are stored in 1 MiB chunks, never as one huge `bytea`,
//! or, with an object store, those of `--object-store-min-bytes` or more there ([`objects`]).
//!
//! This file holds the connection settings, [`PgStore`] with its two pools, and the trait impls,
//! which hands each method to the file of its concern.

mod access_cache;
mod chunks;
mod counters;
mod errors;
mod group_commit;
mod objects;
mod pipeline;
mod pool;
mod purge;
mod records;
mod rows;
mod schema;
mod shares;
mod snapshot;
mod spool;
mod sql;
mod stores;
mod users;

use crate::storage::{Administration, BulkTransfer, Housekeeping, RecordStore};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};

use self::access_cache::AccessCache;
use self::errors::{db_err, settle, within};
use self::group_commit::GroupCommit;
use self::objects::{collect_garbage, ObjectBodies};
use self::pipeline::Pipeline;
use self::pool::{PooledConnection, StatementPool};
use self::purge::purge_deleted;
use self::schema::migrate;
use self::spool::ReadSpools;
use super::objects::ObjectStoreOptions;
use super::{
    AccessDelta, AccessStamp, BodyInput, IfCurrent, KeyListQuery, KeyPage, OrphanCheck,
    OrphanReport, Record, RecordRead, RecordWrite, Result, Snapshot, StoreListQuery, StorePage,
    StoreUpdate, UserUpdate, WriteOutcome,
};
use crate::model::{
    Authenticated, Millis, RecordKey, RecordMeta, ShareAccess, StoreId, StoreInfo, StoreName,
    TokenGrant, TokenHash, User, UserId, Username,
};

/// A pooled connection idle longer than this is pinged before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Connection settings.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// How long one storage operation (one statement of a chunked body) may take before the
    /// request fails with 503: a database that goes silent must not hang requests.
    pub op_timeout: Duration,
    /// Bytes of chunked bodies this node keeps in temporary files for clients still reading them.
    /// A body is copied from one snapshot into such a file (so that an overwrite meanwhile cannot
    /// tear it), and a client that stops reading keeps its file: past this, a read of a chunked
    /// body waits up to `op_timeout` for room, then fails with 503. One body is always let
    /// through alone, whatever its size.
    pub max_read_spool_bytes: u64,
    /// Bodies of at least `min_bytes` in this S3-compatible object store, the rest in the
    /// database (see [`objects`]).
    pub objects: Option<ObjectStoreOptions>,
    /// How often this node folds the stores' counter shards into their rows (see [`counters`]).
    pub counter_fold_interval: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(10),
            max_read_spool_bytes: 1024 * 1024 * 1024,
            objects: None,
            counter_fold_interval: Duration::from_secs(2),
        }
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

pub struct PgStore {
    /// Transactions and everything off the hot path.
    pool: PgPool,
    /// Single statements of the hot path (see [`pool`]).
    statements: StatementPool,
    /// The warm GET's statement, pipelined over a few connections (see [`pipeline`]).
    pipeline: Option<Pipeline>,
    /// PUTs of inline bodies, committed in groups on [`Self::statements`] (see [`group_commit`]).
    puts: GroupCommit,
    spool: tempfile::TempDir,
    op_timeout: Duration,
    read_spools: std::sync::Arc<ReadSpools>,
    objects: Option<std::sync::Arc<ObjectBodies>>,
    /// Stops the object collector when the store goes.
    _collector: Option<tokio_util::sync::DropGuard>,
    /// Stops the fold of the counter shards when the store goes.
    _fold: tokio_util::sync::DropGuard,
    /// Token → caller, store → store, (store, user) → share, exact across nodes (see
    /// [`access_cache`]).
    access: Arc<AccessCache>,
    /// The task that listens for changes to clear [`Self::access`]; ends with the store.
    listener: tokio::task::AbortHandle,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects, runs the migrations (once, whatever the number of nodes starting) and resumes the
    /// purge of deleted stores.
    pub async fn connect(url: &str, options: &PgOptions) -> Result<Self> {
        let connect_options: PgConnectOptions = url.parse().map_err(db_err)?;
        // The connections are shared between the two pools: a quarter (at least 2) for
        // transactions, the rest for single statements.
        let max = options.max_connections.max(3);
        let for_transactions = (max / 4).max(2);
        // Of the single statements' share, one connection in eight (none below eight) for the
        // pipelined reads: enough to batch a node's GETs (bench/pg/hot1k.sh: 2 and 6 of 48 both
        // cut the node's CPU per GET by a third or more) while a database with many cores still
        // runs them on several backends.
        let single = usize::try_from(max - for_transactions).unwrap_or(1);
        let pool = PgPoolOptions::new()
            .max_connections(for_transactions)
            .acquire_timeout(options.acquire_timeout)
            // sqlx pings every connection it hands out by default: a whole extra round trip per
            // request. A connection that was just in use is known alive; one idle for a while
            // (the database may have restarted meanwhile) is still checked.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect_options.clone())
            .await
            .map_err(db_err)?;
        let objects = options
            .objects
            .as_ref()
            .map(ObjectBodies::new)
            .transpose()?
            .map(std::sync::Arc::new);
        migrate(&pool).await?;
        // After the migrations: the pipelined statement is prepared as a connection opens.
        let pipelined = single / 8;
        let pipeline = Pipeline::open(url, pipelined, options.acquire_timeout).await;
        let statements = pool::build(
            connect_options.clone(),
            single - pipeline.as_ref().map_or(0, |_| pipelined),
            options.acquire_timeout,
            PING_IF_IDLE_FOR,
        )?;
        // As many committers as pipelined connections (at least 2): few enough that a busy node's
        // PUTs commit many to a statement, enough to keep a write waiting on a WAL flush from
        // holding up the rest.
        let puts = GroupCommit::start(statements.clone(), options.op_timeout, pipelined.max(2));
        tokio::spawn(purge_deleted(pool.clone()));
        let collector = objects.clone().map(|bodies| {
            let stop = tokio_util::sync::CancellationToken::new();
            let (pool, stopped) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = collect_garbage(pool, bodies) => {}
                    () = stopped.cancelled() => {}
                }
            });
            stop.drop_guard()
        });
        let fold = {
            let stop = tokio_util::sync::CancellationToken::new();
            let (pool, stopped) = (pool.clone(), stop.clone());
            let every = options.counter_fold_interval;
            tokio::spawn(async move {
                tokio::select! {
                    () = counters::fold_periodically(pool, every) => {}
                    () = stopped.cancelled() => {}
                }
            });
            stop.drop_guard()
        };
        // One more connection, of its own, listening for changes to what the caches hold.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect_options.application_name(access_cache::LISTENER_NAME));
        let access = Arc::new(AccessCache::default());
        let listener =
            tokio::spawn(access_cache::listen(listen_pool, access.clone())).abort_handle();
        Ok(Self {
            pool,
            statements,
            pipeline,
            puts,
            spool: tempfile::tempdir()?,
            op_timeout: options.op_timeout,
            read_spools: std::sync::Arc::new(ReadSpools::new(options.max_read_spool_bytes)),
            objects,
            _collector: collector,
            _fold: fold,
            access,
            listener,
        })
    }

    /// Folds every store's counter shards into its row now, as every node does every
    /// [`PgOptions::counter_fold_interval`]; returns how many shard rows went (those of stores
    /// with a write in flight, or being folded by another node, stay).
    pub async fn fold_counters(&self) -> Result<u64> {
        counters::fold_all(&self.pool).await
    }

    /// [`within`] `limit`.
    async fn bounded<T>(
        &self,
        limit: Duration,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        within(limit, op).await
    }

    /// The one row of a single statement, run outside any transaction on the statement pool.
    async fn row(&self, query: PgQuery<'_>) -> Result<PgRow> {
        pool::one_row(&self.statements, query).await
    }

    /// [`Self::row`] for a statement that may find no row.
    async fn maybe_row(&self, query: PgQuery<'_>) -> Result<Option<PgRow>> {
        let mut conn = self.conn().await?;
        let result = query.fetch_optional(&mut *conn).await;
        settle(conn, result)
    }

    /// [`Self::row`] for a statement that finds any number of rows, each handed to `each` as it
    /// comes off the connection rather than collected: a page of 1000 keys holds neither 1000 `PgRow`s nor, all at once, the read
    /// buffers they point into. After `each` fails the rest is read and dropped (the connection
    /// goes back to the pool ready), and its error is returned.
    async fn each_row(
        &self,
        query: PgQuery<'_>,
        mut each: impl FnMut(&PgRow) -> Result<()> + Send,
    ) -> Result<()> {
        use futures_util::TryStreamExt;
        let mut conn = self.conn().await?;
        let mut outcome = Ok(());
        let result = {
            let mut rows = query.fetch(&mut *conn);
            loop {
                match rows.try_next().await {
                    Ok(Some(row)) => {
                        if outcome.is_ok() {
                            outcome = each(&row);
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
        };
        settle(conn, result)?;
        outcome
    }

    async fn conn(&self) -> Result<PooledConnection> {
        self.statements.get().await.map_err(pool::pool_err)
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db_err)
    }
}

// Each method runs its `PgStore::…_impl` namesake in the file of its concern (users, shares,
// stores, records, snapshot, purge); `ping`, `spool_dir` and `close` are the pools' own.
// The request path: callers, stores, keys and records.
#[async_trait]
impl RecordStore for PgStore {
    async fn user_by_token(&self, token: &TokenHash) -> Result<Option<Authenticated>> {
        self.user_by_token_impl(token).await
    }

    async fn share_get(&self, store: &StoreId, user: &UserId) -> Result<Option<ShareAccess>> {
        self.share_get_impl(store, user).await
    }

    async fn stores_shared_with(&self, user: &UserId, query: &StoreListQuery) -> Result<StorePage> {
        self.stores_shared_with_impl(user, query).await
    }

    async fn store_get_or_create(&self, store: StoreInfo) -> Result<(StoreInfo, bool)> {
        self.store_get_or_create_impl(store).await
    }

    async fn store_get(&self, id: &StoreId) -> Result<Option<StoreInfo>> {
        self.store_get_impl(id).await
    }

    async fn store_get_by_name(
        &self,
        owner: &UserId,
        name: &StoreName,
    ) -> Result<Option<StoreInfo>> {
        self.store_get_by_name_impl(owner, name).await
    }

    async fn stores_list(&self, owner: &UserId, query: &StoreListQuery) -> Result<StorePage> {
        self.stores_list_impl(owner, query).await
    }

    async fn store_update(&self, id: &StoreId, update: StoreUpdate) -> Result<Option<StoreInfo>> {
        self.store_update_impl(id, update).await
    }

    async fn store_delete(&self, id: &StoreId) -> Result<bool> {
        self.store_delete_impl(id).await
    }

    async fn keys_list(&self, store: &StoreId, query: &KeyListQuery) -> Result<Option<KeyPage>> {
        self.keys_list_impl(store, query).await
    }

    async fn record_read(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
        key: Option<&RecordKey>,
    ) -> Result<RecordRead> {
        self.record_read_impl(token, store, key).await
    }

    async fn keys_read(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
        query: &KeyListQuery,
    ) -> Result<(RecordRead, Option<KeyPage>)> {
        self.keys_read_impl(token, store, query).await
    }

    async fn record_get(&self, store: &StoreId, key: &RecordKey) -> Result<Option<Record>> {
        self.record_get_impl(store, key).await
    }

    async fn record_meta(&self, store: &StoreId, key: &RecordKey) -> Result<Option<RecordMeta>> {
        self.record_meta_impl(store, key).await
    }

    async fn records_write(
        &self,
        store: &StoreId,
        records: Vec<RecordWrite>,
    ) -> Result<WriteOutcome> {
        self.records_write_impl(store, records).await
    }

    async fn record_delete(&self, store: &StoreId, key: &RecordKey) -> Result<WriteOutcome> {
        match self.record_delete_impl(store, key, None).await? {
            IfCurrent::Done(outcome) => Ok(outcome),
            // Without a stamp there is nothing to be stale.
            IfCurrent::Stale(()) => Ok(WriteOutcome::StoreMissing),
        }
    }

    async fn record_read_for_write(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
    ) -> Result<RecordRead> {
        self.record_read_for_write_impl(token, store).await
    }

    async fn record_put_if_current(
        &self,
        stamp: Option<AccessStamp>,
        store: &StoreId,
        key: &RecordKey,
        content_type: &str,
        body: BodyInput,
    ) -> Result<IfCurrent<BodyInput>> {
        self.record_put_if_current_impl(stamp, store, key, content_type, body)
            .await
    }

    async fn record_delete_if_current(
        &self,
        stamp: Option<AccessStamp>,
        store: &StoreId,
        key: &RecordKey,
    ) -> Result<IfCurrent<()>> {
        self.record_delete_impl(store, key, stamp).await
    }

    async fn ping(&self) -> Result<()> {
        self.bounded(self.op_timeout, async {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(db_err)
        })
        .await?;
        match &self.objects {
            Some(bodies) => bodies.objects.ping().await,
            None => Ok(()),
        }
    }

    fn spool_dir(&self) -> std::path::PathBuf {
        self.spool.path().to_path_buf()
    }
}

// Users, tokens and shares.
#[async_trait]
impl Administration for PgStore {
    async fn user_create(
        &self,
        username: Username,
        is_admin: bool,
        token: TokenHash,
    ) -> Result<User> {
        self.user_create_impl(username, is_admin, token).await
    }

    async fn user_create_first(
        &self,
        username: Username,
        token: TokenHash,
    ) -> Result<Option<User>> {
        self.user_create_first_impl(username, token).await
    }

    async fn user_by_name(&self, username: &Username) -> Result<Option<User>> {
        self.user_by_name_impl(username).await
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>> {
        self.user_by_id_impl(id).await
    }

    async fn user_update(&self, id: &UserId, update: UserUpdate) -> Result<Option<User>> {
        self.user_update_impl(id, update).await
    }

    async fn user_delete(&self, id: &UserId) -> Result<bool> {
        self.user_delete_impl(id).await
    }

    async fn token_add(
        &self,
        user: &UserId,
        grant: TokenGrant,
        revoke_others: bool,
    ) -> Result<bool> {
        self.token_add_impl(user, grant, revoke_others).await
    }

    async fn share_set(
        &self,
        store: &StoreId,
        user: &UserId,
        access: Option<ShareAccess>,
    ) -> Result<bool> {
        self.share_set_impl(store, user, access).await
    }

    async fn shares_list(&self, store: &StoreId) -> Result<Vec<(UserId, ShareAccess)>> {
        self.shares_list_impl(store).await
    }

    async fn users_list(&self) -> Result<Vec<User>> {
        self.users_list_impl().await
    }
}

// Whole users and stores moved between backends, and snapshots for backups.
#[async_trait]
impl BulkTransfer for PgStore {
    async fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        self.snapshot_impl().await
    }

    async fn user_tokens(&self, user: &UserId) -> Result<Vec<TokenGrant>> {
        self.user_tokens_impl(user).await
    }

    async fn user_import(&self, user: &User, tokens: &[TokenGrant]) -> Result<()> {
        self.user_import_impl(user, tokens).await
    }

    async fn store_import(&self, store: &StoreInfo) -> Result<()> {
        self.store_import_impl(store).await
    }
}

// Background work: retention, orphans, counter flushes, shutdown.
#[async_trait]
impl Housekeeping for PgStore {
    async fn stores_unnamed_idle(&self, idle_since: Millis, limit: usize) -> Result<Vec<StoreId>> {
        self.stores_unnamed_idle_impl(idle_since, limit).await
    }

    async fn orphans(&self, check: OrphanCheck) -> Result<OrphanReport> {
        self.orphans_impl(check).await
    }

    async fn apply_access(&self, batch: Vec<(StoreId, AccessDelta)>) -> Result<()> {
        self.apply_access_impl(batch).await
    }

    async fn close(&self) -> Result<()> {
        self.listener.abort();
        self.statements.close();
        self.pool.close().await;
        Ok(())
    }
}
