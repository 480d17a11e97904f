//! The PostgreSQL backend: stateless kvstore nodes over one shared database.
//!
//! Real SQL rather than a key-value emulation: keys are indexed per store in byte order
//! (`COLLATE "C"`), a key listing is a keyset range scan, and a record write locks its store's row
//! so that the counters stay exact under concurrent writers on any number of nodes. Bodies larger
//! than [`INLINE_MAX`] are stored in 1 MiB chunks, never as one huge `bytea`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::pg_pool::{self, PooledConnection, StatementPool};
use super::{
    AccessDelta, BodyInput, BodyOutput, ImportRecord, KeyListQuery, KeyPage, OrphanCheck,
    OrphanReport, Record, RecordRead, Result, Snapshot, StorageError, Store, StoreListQuery,
    StorePage, StoreUpdate, UserUpdate, WriteOutcome,
};
use crate::model::{
    now_millis, Authenticated, GeneralAccess, Millis, RecordKey, RecordMeta, ShareAccess, StoreId,
    StoreInfo, StoreName, StoreStats, TokenGrant, TokenHash, User, UserId, Username,
};

/// A pooled connection idle longer than this is pinged before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Bodies up to this size are kept in the `records` row itself.
const INLINE_MAX: u64 = 256 * 1024;
const CHUNK: usize = 1024 * 1024;
/// Serializes migrations and first-user creation across nodes.
const LOCK_KEY: i64 = 0x006b_7673_746f_7265; // "kvstore"
const PURGE_BATCH: i64 = 1000;
/// How long one orphan check ([`Store::orphans`]) may take: it reads every chunk's size.
const ORPHAN_CHECK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Schema versions, applied in order; the number of applied ones is kept in `kvstore_schema`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id text PRIMARY KEY,
    username text COLLATE "C" NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    is_admin boolean NOT NULL
);
CREATE TABLE tokens (
    hash bytea PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE
);
CREATE TABLE stores (
    id text PRIMARY KEY,
    name text COLLATE "C",
    user_id text NOT NULL REFERENCES users (id),
    created_at bigint NOT NULL,
    modified_at bigint NOT NULL,
    accessed_at bigint NOT NULL,
    general_access text NOT NULL,
    url_signing_secret_key text NOT NULL,
    schema text,
    record_count bigint NOT NULL DEFAULT 0,
    storage_bytes bigint NOT NULL DEFAULT 0,
    read_count bigint NOT NULL DEFAULT 0,
    write_count bigint NOT NULL DEFAULT 0,
    delete_count bigint NOT NULL DEFAULT 0,
    list_count bigint NOT NULL DEFAULT 0,
    deleted boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX stores_owner_name ON stores (user_id, name) WHERE name IS NOT NULL AND NOT deleted;
CREATE INDEX stores_owner_created ON stores (user_id, created_at, id) WHERE NOT deleted;
CREATE INDEX stores_deleted ON stores (id) WHERE deleted;
CREATE TABLE records (
    store_id text NOT NULL,
    key text COLLATE "C" NOT NULL,
    content_type text NOT NULL,
    size bigint NOT NULL,
    body bytea,
    blob_id bigint,
    PRIMARY KEY (store_id, key)
);
CREATE SEQUENCE record_blob_ids;
CREATE TABLE record_chunks (
    blob_id bigint NOT NULL,
    seq integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (blob_id, seq)
);
"#,
    r#"
ALTER TABLE records ADD COLUMN version bigint NOT NULL DEFAULT 0;
"#,
    r#"
CREATE INDEX stores_unnamed_accessed ON stores (accessed_at) WHERE name IS NULL AND NOT deleted;
"#,
    // Users can be disabled and deleted, tokens can be read-only, stores can be shared. A deleted
    // user's stores are purged in the background like any deleted store, so their rows outlive
    // the user row: the owner key is checked by the application from now on.
    r#"
ALTER TABLE users ADD COLUMN disabled boolean NOT NULL DEFAULT false;
ALTER TABLE tokens ADD COLUMN read_only boolean NOT NULL DEFAULT false;
ALTER TABLE stores DROP CONSTRAINT IF EXISTS stores_user_id_fkey;
CREATE TABLE store_shares (
    store_id text NOT NULL,
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    access text NOT NULL,
    PRIMARY KEY (store_id, user_id)
);
CREATE INDEX store_shares_user ON store_shares (user_id, store_id);
"#,
    // Writers of one store no longer lock its row until commit: each write adds its counter
    // changes to one of a few shard rows, and a record's previous size comes back from the
    // upsert itself (prev_size), so that a write is one statement.
    r#"
CREATE TABLE store_counters (
    store_id text NOT NULL,
    shard smallint NOT NULL,
    record_count bigint NOT NULL DEFAULT 0,
    storage_bytes bigint NOT NULL DEFAULT 0,
    write_count bigint NOT NULL DEFAULT 0,
    delete_count bigint NOT NULL DEFAULT 0,
    modified_at bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, shard)
);
ALTER TABLE records ADD COLUMN prev_size bigint, ADD COLUMN prev_blob_id bigint;
"#,
    // 5: a store's title (apify-client's `update(title=…)`).
    "ALTER TABLE stores ADD COLUMN title text;",
];

/// Stores a record in one statement: the store must exist (a shared row lock, so that a delete
/// of the store waits, but other writers do not), the upsert keeps the previous size and blob,
/// the previous blob's chunks go, and one counter shard takes the changes. $1 store, $2 key,
/// $3 content type, $4 size, $5 inline body, $6 blob id, $7 version, $8 shard, $9 now.
///
/// The upsert replaces the newest row even if it was committed after this statement began, but
/// the chunk `DELETE` sees only what was committed before: a concurrent writer's chunks are
/// invisible to it. The statement returns the replaced blob and how many chunks it freed, and
/// [`free_replaced`] deletes the rest in a statement of its own, which does see them.
const PUT_RECORD: &str = "
WITH s AS (SELECT id FROM stores WHERE id = $1 AND NOT deleted FOR SHARE),
up AS (
    INSERT INTO records AS r (store_id, key, content_type, size, body, blob_id, version,
        prev_size, prev_blob_id)
    SELECT $1, $2, $3, $4, $5, $6, $7, NULL, NULL FROM s
    ON CONFLICT (store_id, key) DO UPDATE SET content_type = EXCLUDED.content_type,
        size = EXCLUDED.size, body = EXCLUDED.body, blob_id = EXCLUDED.blob_id,
        version = EXCLUDED.version, prev_size = r.size, prev_blob_id = r.blob_id
    RETURNING prev_size, prev_blob_id),
gone AS (DELETE FROM record_chunks
    WHERE blob_id IN (SELECT prev_blob_id FROM up WHERE prev_blob_id IS NOT NULL)
    RETURNING 1),
counted AS (
    INSERT INTO store_counters AS c (store_id, shard, record_count, storage_bytes, write_count,
        modified_at)
    SELECT $1, $8, CASE WHEN prev_size IS NULL THEN 1 ELSE 0 END, $4 - coalesce(prev_size, 0),
        1, $9 FROM up
    ON CONFLICT (store_id, shard) DO UPDATE SET
        record_count = c.record_count + EXCLUDED.record_count,
        storage_bytes = c.storage_bytes + EXCLUDED.storage_bytes,
        write_count = c.write_count + 1,
        modified_at = greatest(c.modified_at, EXCLUDED.modified_at))
SELECT count(*) AS written, max(prev_blob_id) AS prev_blob_id, max(prev_size) AS prev_size,
    (SELECT count(*) FROM gone) AS freed
FROM up";

/// Stores a batch of inline records in one statement, as [`PUT_RECORD`] stores one: $1 store,
/// $2 keys (distinct), $3 content types, $4 sizes, $5 bodies, $6 versions, $7 shard, $8 now,
/// $9 the chunk size (to count the chunks of the bodies replaced).
const IMPORT_RECORDS: &str = "
WITH s AS (SELECT id FROM stores WHERE id = $1 AND NOT deleted FOR SHARE),
up AS (
    INSERT INTO records AS r (store_id, key, content_type, size, body, blob_id, version,
        prev_size, prev_blob_id)
    SELECT $1, t.key, t.content_type, t.size, t.body, NULL, t.version, NULL, NULL
    FROM s, unnest($2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::bigint[])
        AS t (key, content_type, size, body, version)
    ON CONFLICT (store_id, key) DO UPDATE SET content_type = EXCLUDED.content_type,
        size = EXCLUDED.size, body = EXCLUDED.body, blob_id = EXCLUDED.blob_id,
        version = EXCLUDED.version, prev_size = r.size, prev_blob_id = r.blob_id
    RETURNING size, prev_size, prev_blob_id),
gone AS (DELETE FROM record_chunks
    WHERE blob_id IN (SELECT prev_blob_id FROM up WHERE prev_blob_id IS NOT NULL)
    RETURNING 1),
counted AS (
    INSERT INTO store_counters AS c (store_id, shard, record_count, storage_bytes, write_count,
        modified_at)
    SELECT $1, $7, count(*) FILTER (WHERE prev_size IS NULL),
        coalesce(sum(size - coalesce(prev_size, 0)), 0)::bigint, count(*), $8 FROM up
    HAVING count(*) > 0
    ON CONFLICT (store_id, shard) DO UPDATE SET
        record_count = c.record_count + EXCLUDED.record_count,
        storage_bytes = c.storage_bytes + EXCLUDED.storage_bytes,
        write_count = c.write_count + EXCLUDED.write_count,
        modified_at = greatest(c.modified_at, EXCLUDED.modified_at))
SELECT count(*) AS store_exists,
    (SELECT array_agg(prev_blob_id) FROM up WHERE prev_blob_id IS NOT NULL) AS prev_blob_ids,
    (SELECT coalesce(sum((prev_size + $9 - 1) / $9) FILTER (WHERE prev_blob_id IS NOT NULL), 0)
        FROM up)::bigint AS prev_chunks,
    (SELECT count(*) FROM gone) AS freed
FROM s";

/// Deletes a record in one statement, as [`PUT_RECORD`] stores one (the same goes for the chunks
/// of a body committed after the statement began). $1 store, $2 key, $3 shard, $4 now. Deleting a
/// missing record still counts as a delete of an existing store.
const DELETE_RECORD: &str = "
WITH s AS (SELECT id FROM stores WHERE id = $1 AND NOT deleted FOR SHARE),
d AS (DELETE FROM records WHERE store_id = $1 AND key = $2 AND EXISTS (SELECT 1 FROM s)
    RETURNING size, blob_id),
gone AS (DELETE FROM record_chunks
    WHERE blob_id IN (SELECT blob_id FROM d WHERE blob_id IS NOT NULL)
    RETURNING 1),
counted AS (
    INSERT INTO store_counters AS c (store_id, shard, record_count, storage_bytes, delete_count,
        modified_at)
    SELECT $1, $3, -(SELECT count(*) FROM d), -(SELECT coalesce(sum(size), 0) FROM d)::bigint,
        1, $4 FROM s
    ON CONFLICT (store_id, shard) DO UPDATE SET
        record_count = c.record_count + EXCLUDED.record_count,
        storage_bytes = c.storage_bytes + EXCLUDED.storage_bytes,
        delete_count = c.delete_count + 1,
        modified_at = greatest(c.modified_at, EXCLUDED.modified_at))
SELECT count(*) AS store_exists, (SELECT blob_id FROM d) AS prev_blob_id,
    (SELECT size FROM d) AS prev_size, (SELECT count(*) FROM gone) AS freed
FROM s";

/// [`Store::record_read`] in one round trip: the token's user, the store row (counters not
/// summed), the caller's share and the record. $1 store, $2 key, $3 token hash (or NULL).
const RECORD_READ: &str = "
SELECT s.id, s.name, s.user_id, s.created_at, s.modified_at, s.accessed_at, s.general_access,
    s.url_signing_secret_key, s.schema, s.title, s.record_count, s.storage_bytes, s.read_count,
    s.write_count, s.delete_count, s.list_count,
    (SELECT o.disabled FROM users o WHERE o.id = s.user_id) AS owner_disabled,
    u.id AS u_id, u.username AS u_username, u.created_at AS u_created_at,
    u.is_admin AS u_is_admin, t.read_only AS t_read_only,
    sh.access AS share_access,
    r.content_type, r.size, r.body, r.blob_id, r.version
FROM (SELECT 1) AS one
LEFT JOIN (tokens t JOIN users u ON u.id = t.user_id AND NOT u.disabled) ON t.hash = $3
LEFT JOIN stores s ON s.id = $1 AND NOT s.deleted
LEFT JOIN store_shares sh ON sh.store_id = s.id AND sh.user_id = u.id AND u.id <> s.user_id
LEFT JOIN records r ON r.store_id = s.id AND r.key = $2";

/// Counter shard rows per store: writers of one store spread over this many rows.
const COUNTER_SHARDS: i16 = 16;

/// `SELECT` of store rows with their counters (the row's base plus every shard), for `filter`
/// (a `WHERE` clause over the `stores` columns, which are unambiguous) and `tail` (ORDER BY…).
fn select_stores(filter: &str, tail: &str) -> String {
    format!(
        "SELECT s.id, s.name, s.user_id, s.created_at,
             greatest(s.modified_at, coalesce(c.modified_at, 0)) AS modified_at,
             greatest(s.accessed_at, coalesce(c.modified_at, 0)) AS accessed_at,
             s.general_access, s.url_signing_secret_key, s.schema, s.title,
             s.record_count + coalesce(c.record_count, 0) AS record_count,
             s.storage_bytes + coalesce(c.storage_bytes, 0) AS storage_bytes,
             s.read_count,
             s.write_count + coalesce(c.write_count, 0) AS write_count,
             s.delete_count + coalesce(c.delete_count, 0) AS delete_count,
             s.list_count,
             (SELECT o.disabled FROM users o WHERE o.id = s.user_id) AS owner_disabled
         FROM stores s LEFT JOIN LATERAL (
             SELECT sum(record_count)::bigint AS record_count,
                 sum(storage_bytes)::bigint AS storage_bytes,
                 sum(write_count)::bigint AS write_count,
                 sum(delete_count)::bigint AS delete_count,
                 max(modified_at) AS modified_at
             FROM store_counters WHERE store_id = s.id) c ON true
         WHERE {filter} {tail}"
    )
}

fn random_shard() -> i16 {
    rand::random::<u16>().rem_euclid(COUNTER_SHARDS as u16) as i16
}

const USER_COLS: &str = "id, username, created_at, is_admin, disabled";

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
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(10),
            max_read_spool_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// Extra time a body upload may take: one `op_timeout` per chunk.
fn body_budget(op_timeout: Duration, len: u64) -> Duration {
    let chunks = u32::try_from(len / CHUNK as u64).unwrap_or(u32::MAX);
    op_timeout.saturating_mul(chunks.saturating_add(1))
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Passes a statement's result on. A connection that failed for its own sake (I/O, protocol, the
/// server ending the session) is closed rather than given back, where it would fail again.
fn settle<T>(conn: PooledConnection, result: sqlx::Result<T>) -> Result<T> {
    result.map_err(|e| {
        let e = db_err(e);
        if matches!(e, StorageError::Unavailable(_)) {
            drop(deadpool::managed::Object::take(conn));
        }
        e
    })
}

fn db_err(e: sqlx::Error) -> StorageError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StorageError::Unavailable(e.to_string())
        }
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => {
            StorageError::Unavailable(e.to_string())
        }
        // SQLSTATE 53100 is disk_full: the same clear 507 as on the embedded engine.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("53100") => StorageError::Full,
        // The database is going away or cannot take us now (a connection it terminated, a
        // shutdown, a restart, too many connections): retryable, so 503 rather than 500.
        sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_unavailable_state) => {
            StorageError::Unavailable(db.to_string())
        }
        other => StorageError::Engine(other.to_string()),
    }
}

/// SQLSTATEs that mean "not now" rather than "wrong": connection exceptions (class 08),
/// too_many_connections, admin/crash shutdown and cannot_connect_now.
fn is_unavailable_state(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "53300" | "57P01" | "57P02" | "57P03")
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

/// A record of a live store, with its inline body (if any) and its blob id (if chunked).
fn record_query<'q>(
    store: &'q StoreId,
    key: &'q RecordKey,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(
        "SELECT r.content_type, r.size, r.body, r.blob_id, r.version
         FROM records r JOIN stores s ON s.id = r.store_id AND NOT s.deleted
         WHERE r.store_id = $1 AND r.key = $2",
    )
    .bind(store.as_str())
    .bind(key.as_str())
}

fn meta_of(key: &RecordKey, row: &PgRow) -> Result<RecordMeta> {
    Ok(RecordMeta {
        key: key.clone(),
        size: to_u64(row.try_get("size").map_err(db_err)?),
        content_type: row.try_get("content_type").map_err(db_err)?,
        version: version_of(row)?,
    })
}

/// The stored version is the u64 ETag seed, kept in a signed column.
fn version_of(row: &PgRow) -> Result<u64> {
    let v: i64 = row.try_get("version").map_err(db_err)?;
    Ok(u64::from_ne_bytes(v.to_ne_bytes()))
}

fn user_from_row(row: &PgRow) -> Result<User> {
    Ok(User {
        id: UserId::parse(row.try_get("id").map_err(db_err)?).ok_or_else(|| corrupt("user id"))?,
        username: Username::parse(row.try_get("username").map_err(db_err)?).map_err(corrupt)?,
        created_at: to_u64(row.try_get("created_at").map_err(db_err)?),
        is_admin: row.try_get("is_admin").map_err(db_err)?,
        disabled: row.try_get("disabled").map_err(db_err)?,
    })
}

fn token_row(row: &PgRow) -> Result<TokenGrant> {
    let hash: Vec<u8> = row.try_get("hash").map_err(db_err)?;
    Ok(TokenGrant {
        hash: <[u8; 32]>::try_from(hash.as_slice())
            .map(TokenHash)
            .map_err(|_| corrupt("token hash"))?,
        read_only: row.try_get("read_only").map_err(db_err)?,
    })
}

/// A `store_shares` row: (store, user, access).
fn share_row(row: &PgRow) -> Result<(StoreId, UserId, ShareAccess)> {
    let store = StoreId::parse(row.try_get("store_id").map_err(db_err)?)
        .ok_or_else(|| corrupt("store id"))?;
    let user =
        UserId::parse(row.try_get("user_id").map_err(db_err)?).ok_or_else(|| corrupt("user id"))?;
    let access: String = row.try_get("access").map_err(db_err)?;
    Ok((store, user, ShareAccess::parse(&access).map_err(corrupt)?))
}

fn store_from_row(row: &PgRow) -> Result<StoreInfo> {
    let get_i64 = |col: &str| -> Result<u64> { Ok(to_u64(row.try_get(col).map_err(db_err)?)) };
    let name: Option<String> = row.try_get("name").map_err(db_err)?;
    Ok(StoreInfo {
        id: StoreId::parse(row.try_get("id").map_err(db_err)?)
            .ok_or_else(|| corrupt("store id"))?,
        name: name
            .as_deref()
            .map(StoreName::parse)
            .transpose()
            .map_err(corrupt)?,
        user_id: UserId::parse(row.try_get("user_id").map_err(db_err)?)
            .ok_or_else(|| corrupt("user id"))?,
        created_at: get_i64("created_at")?,
        modified_at: get_i64("modified_at")?,
        accessed_at: get_i64("accessed_at")?,
        general_access: GeneralAccess::parse(row.try_get("general_access").map_err(db_err)?)
            .map_err(corrupt)?,
        url_signing_secret_key: row.try_get("url_signing_secret_key").map_err(db_err)?,
        schema: row.try_get("schema").map_err(db_err)?,
        title: row.try_get("title").map_err(db_err)?,
        stats: StoreStats {
            record_count: get_i64("record_count")?,
            storage_bytes: get_i64("storage_bytes")?,
            read_count: get_i64("read_count")?,
            write_count: get_i64("write_count")?,
            delete_count: get_i64("delete_count")?,
            list_count: get_i64("list_count")?,
        },
        // A store whose owner row is gone answers as if the owner were disabled.
        owner_disabled: row
            .try_get::<Option<bool>, _>("owner_disabled")
            .map_err(db_err)?
            .unwrap_or(true),
    })
}

pub struct PgStore {
    /// Transactions and everything off the hot path.
    pool: PgPool,
    /// Single statements of the hot path (see [`pg_pool`]).
    statements: StatementPool,
    spool: tempfile::TempDir,
    op_timeout: Duration,
    read_spools: std::sync::Arc<ReadSpools>,
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
        let statements = pg_pool::build(
            connect_options.clone(),
            usize::try_from(max - for_transactions).unwrap_or(1),
            options.acquire_timeout,
            PING_IF_IDLE_FOR,
        )?;
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
            .connect_with(connect_options)
            .await
            .map_err(db_err)?;
        migrate(&pool).await?;
        tokio::spawn(purge_deleted(pool.clone()));
        Ok(Self {
            pool,
            statements,
            spool: tempfile::tempdir()?,
            op_timeout: options.op_timeout,
            read_spools: std::sync::Arc::new(ReadSpools::new(options.max_read_spool_bytes)),
        })
    }

    /// The one user a query selects (the columns of `USER_COLS`), if any.
    async fn fetch_user(&self, query: PgQuery<'_>) -> Result<Option<User>> {
        self.bounded(self.op_timeout, async {
            self.maybe_row(query)
                .await?
                .as_ref()
                .map(user_from_row)
                .transpose()
        })
        .await
    }

    /// Runs `op`, failing with [`StorageError::Unavailable`] when it takes longer than `limit`.
    /// A timed-out transaction is dropped, which rolls it back (or the connection is discarded).
    /// One page of stores in creation order: `filter` takes the user id as $1 and `unnamed` as $2.
    async fn stores_page(
        &self,
        filter: &str,
        user: &str,
        query: &StoreListQuery,
    ) -> Result<StorePage> {
        self.bounded(self.op_timeout, async move {
            let total: i64 =
                sqlx::query_scalar(&format!("SELECT count(*) FROM stores WHERE {filter}"))
                    .bind(user)
                    .bind(query.unnamed)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db_err)?;
            let order = if query.desc { "DESC" } else { "ASC" };
            let items = sqlx::query(&select_stores(
                filter,
                &format!("ORDER BY created_at {order}, id {order} OFFSET $3 LIMIT $4"),
            ))
            .bind(user)
            .bind(query.unnamed)
            .bind(to_i64(query.offset))
            .bind(to_i64(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(store_from_row)
            .collect::<Result<Vec<_>>>()?;
            Ok(StorePage {
                total: to_u64(total),
                items,
            })
        })
        .await
    }

    async fn bounded<T>(
        &self,
        limit: Duration,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(limit, op).await.unwrap_or_else(|_| {
            Err(StorageError::Unavailable(format!(
                "the database did not answer within {limit:?}"
            )))
        })
    }

    /// The record a [`RECORD_READ`] row found, if any; a chunked body is read from its own
    /// snapshot.
    async fn record_of_row(
        &self,
        store: &StoreId,
        key: &RecordKey,
        row: &PgRow,
    ) -> Result<Option<Record>> {
        if row
            .try_get::<Option<i64>, _>("size")
            .map_err(db_err)?
            .is_none()
        {
            return Ok(None);
        }
        if row
            .try_get::<Option<i64>, _>("blob_id")
            .map_err(db_err)?
            .is_some()
        {
            return self.record_get(store, key).await;
        }
        let body: Option<Vec<u8>> = row.try_get("body").map_err(db_err)?;
        Ok(Some(Record {
            meta: meta_of(key, row)?,
            body: BodyOutput::Bytes(Bytes::from(body.unwrap_or_default())),
        }))
    }

    /// The one row of a single statement, run outside any transaction on the statement pool.
    async fn row(&self, query: PgQuery<'_>) -> Result<PgRow> {
        let mut conn = self.conn().await?;
        let result = query.fetch_one(&mut *conn).await;
        settle(conn, result)
    }

    /// [`Self::row`] for a statement that may find no row.
    async fn maybe_row(&self, query: PgQuery<'_>) -> Result<Option<PgRow>> {
        let mut conn = self.conn().await?;
        let result = query.fetch_optional(&mut *conn).await;
        settle(conn, result)
    }

    /// [`Self::row`] for a statement that finds any number of rows.
    async fn rows(&self, query: PgQuery<'_>) -> Result<Vec<PgRow>> {
        let mut conn = self.conn().await?;
        let result = query.fetch_all(&mut *conn).await;
        settle(conn, result)
    }

    /// Runs [`free_replaced`] for what a write statement's own chunk `DELETE` missed, if anything
    /// (a body committed after the statement began): a second round trip only then. The write
    /// itself is committed by now, so a failure here does not fail it: the chunks stay until the
    /// next orphan check ([`Store::orphans`]) removes them.
    async fn free_missed(&self, row: &PgRow) -> Result<()> {
        let missed = missed_chunks(row)?;
        if missed.is_empty() {
            return Ok(());
        }
        let freed = async {
            let mut conn = self.conn().await?;
            let result = free_replaced(&mut *conn, &missed).await;
            settle(conn, result)
        };
        if let Err(e) = freed.await {
            tracing::warn!(error = %e, blobs = ?missed,
                "could not free a replaced body; the orphan check will");
        }
        Ok(())
    }

    async fn conn(&self) -> Result<PooledConnection> {
        self.statements.get().await.map_err(pg_pool::pool_err)
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db_err)
    }
}

async fn migrate(pool: &PgPool) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    let result = async {
        sqlx::query("CREATE TABLE IF NOT EXISTS kvstore_schema (version integer NOT NULL)")
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        let applied: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM kvstore_schema")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
        let applied = usize::try_from(applied.unwrap_or(0)).unwrap_or(0);
        if applied > MIGRATIONS.len() {
            return Err(StorageError::UnsupportedFormat {
                found: u32::try_from(applied).unwrap_or(u32::MAX),
                supported: u32::try_from(MIGRATIONS.len()).unwrap_or(0),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let mut txn = sqlx::Connection::begin(&mut *conn).await.map_err(db_err)?;
            sqlx::raw_sql(sql)
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            sqlx::query("INSERT INTO kvstore_schema (version) VALUES ($1)")
                .bind(i32::try_from(i + 1).unwrap_or(i32::MAX))
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            txn.commit().await.map_err(db_err)?;
        }
        Ok(())
    }
    .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await;
    result?;
    unlocked.map_err(db_err)?;
    Ok(())
}

/// Removes the records of deleted stores in batches, then the stores themselves.
async fn purge_deleted(pool: PgPool) {
    if let Err(e) = purge_deleted_once(&pool).await {
        tracing::warn!(error = %e, "purging deleted stores failed; will retry on the next delete");
    }
}

async fn purge_deleted_once(pool: &PgPool) -> Result<()> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM stores WHERE deleted")
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    for id in ids {
        loop {
            let removed = sqlx::query(
                "WITH gone AS (
                     DELETE FROM records WHERE (store_id, key) IN
                         (SELECT store_id, key FROM records WHERE store_id = $1 LIMIT $2)
                     RETURNING blob_id)
                 DELETE FROM record_chunks WHERE blob_id IN
                     (SELECT blob_id FROM gone WHERE blob_id IS NOT NULL)",
            )
            .bind(&id)
            .bind(PURGE_BATCH)
            .execute(pool)
            .await
            .map_err(db_err)?;
            let left: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM records WHERE store_id = $1)")
                    .bind(&id)
                    .fetch_one(pool)
                    .await
                    .map_err(db_err)?;
            if !left {
                break;
            }
            let _ = removed;
        }
        sqlx::query("DELETE FROM store_counters WHERE store_id = $1")
            .bind(&id)
            .execute(pool)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM stores WHERE id = $1 AND deleted")
            .bind(&id)
            .execute(pool)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

async fn insert_user(
    txn: &mut Transaction<'_, Postgres>,
    user: &User,
    token: &TokenHash,
) -> Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO users (id, username, created_at, is_admin) VALUES ($1, $2, $3, $4)",
    )
    .bind(user.id.as_str())
    .bind(user.username.as_str())
    .bind(to_i64(user.created_at))
    .bind(user.is_admin)
    .execute(&mut **txn)
    .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => return Err(StorageError::UserExists),
        other => other.map_err(db_err)?,
    };
    sqlx::query("INSERT INTO tokens (hash, user_id) VALUES ($1, $2)")
        .bind(token.0.as_slice())
        .bind(user.id.as_str())
        .execute(&mut **txn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Keeps the temporary files of chunked bodies that clients are still reading (see
/// [`PgOptions::max_read_spool_bytes`]) to a bounded number of bytes per node.
///
/// A reader's file is handed out with a shared `flock` on it, which goes when the last handle of
/// the reader's open file goes (the response is sent, or its client went away). The node keeps a
/// second, independent handle of each file: once an exclusive `flock` on that one succeeds, no
/// reader is left, and the file (unlinked from the start) goes with the handle.
struct ReadSpools {
    max_bytes: u64,
    held: std::sync::Mutex<HeldSpools>,
}

#[derive(Default)]
struct HeldSpools {
    bytes: u64,
    files: Vec<(std::fs::File, u64)>,
}

impl HeldSpools {
    /// Lets go of the files no reader holds any more.
    fn reclaim(&mut self) {
        let mut freed = 0;
        self.files.retain(|(file, len)| {
            let unread = fs4::fs_std::FileExt::try_lock_exclusive(file).unwrap_or(false);
            if unread {
                freed += len;
            }
            !unread
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }
}

impl ReadSpools {
    fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            held: std::sync::Mutex::new(HeldSpools::default()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HeldSpools> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room for a body of `len` bytes, waiting up to `wait` for readers to finish. A body is
    /// always let through when nothing else is held, whatever its size.
    async fn reserve(self: &std::sync::Arc<Self>, len: u64, wait: Duration) -> Result<SpoolRoom> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let mut held = self.held();
                held.reclaim();
                if held.bytes == 0 || held.bytes.saturating_add(len) <= self.max_bytes {
                    held.bytes += len;
                    return Ok(SpoolRoom {
                        spools: self.clone(),
                        len,
                        kept: false,
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StorageError::Unavailable(format!(
                    "clients that have not finished reading hold {} bytes of large bodies on this \
                     node (--db-max-read-spool {})",
                    self.held().bytes,
                    self.max_bytes
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Room reserved in [`ReadSpools`]: given back when dropped, unless a file takes it over.
struct SpoolRoom {
    spools: std::sync::Arc<ReadSpools>,
    len: u64,
    kept: bool,
}

impl SpoolRoom {
    /// The room stays taken until no reader holds `file`'s contents any more.
    fn keep(mut self, tracker: std::fs::File) {
        self.spools.held().files.push((tracker, self.len));
        self.kept = true;
    }
}

impl Drop for SpoolRoom {
    fn drop(&mut self) {
        if !self.kept {
            let mut held = self.spools.held();
            held.bytes = held.bytes.saturating_sub(self.len);
        }
    }
}

/// A chunked body copied chunk by chunk into an anonymous file in `spool`, rewound: memory holds
/// one chunk, and no connection is held while a slow client downloads the file. With `room`, the
/// file counts against [`ReadSpools`] until its reader is gone.
async fn chunks_to_file(
    conn: &mut sqlx::PgConnection,
    blob_id: i64,
    spool: &std::path::Path,
    room: Option<SpoolRoom>,
) -> Result<std::fs::File> {
    // With room to account for, the file is opened twice (independent handles, so that their
    // locks are independent) and unlinked at once; the reader gets the second handle.
    let (file, reader) = match room {
        None => (tempfile::tempfile_in(spool)?, None),
        Some(_) => {
            let (file, path) = tempfile::NamedTempFile::new_in(spool)?.into_parts();
            let reader = std::fs::File::open(&path)?;
            drop(path);
            (file, Some(reader))
        }
    };
    let mut file = tokio::fs::File::from_std(file);
    let mut chunks = sqlx::query("SELECT data FROM record_chunks WHERE blob_id = $1 ORDER BY seq")
        .bind(blob_id)
        .fetch(conn);
    while let Some(chunk) = chunks.try_next().await.map_err(db_err)? {
        let data: Vec<u8> = chunk.try_get("data").map_err(db_err)?;
        file.write_all(&data).await?;
    }
    drop(chunks);
    file.flush().await?;
    match (reader, room) {
        (Some(reader), Some(room)) => {
            fs4::fs_std::FileExt::lock_shared(&reader)?;
            room.keep(file.into_std().await);
            Ok(reader)
        }
        _ => {
            file.rewind().await?;
            Ok(file.into_std().await)
        }
    }
}

/// The body a [`PUT_RECORD`], [`DELETE_RECORD`] or [`IMPORT_RECORDS`] statement replaced, and
/// whether the statement's own chunk `DELETE` missed some of it (a body committed after the
/// statement began): those blob ids are returned, for [`free_replaced`].
fn missed_chunks(row: &PgRow) -> Result<Vec<i64>> {
    let freed: i64 = row.try_get("freed").map_err(db_err)?;
    if row.try_column("prev_blob_ids").is_ok() {
        let ids: Option<Vec<i64>> = row.try_get("prev_blob_ids").map_err(db_err)?;
        let chunks: i64 = row.try_get("prev_chunks").map_err(db_err)?;
        return Ok(match ids {
            Some(ids) if freed < chunks => ids,
            _ => Vec::new(),
        });
    }
    let blob: Option<i64> = row.try_get("prev_blob_id").map_err(db_err)?;
    let size: Option<i64> = row.try_get("prev_size").map_err(db_err)?;
    let chunks = size.unwrap_or(0).saturating_add(CHUNK as i64 - 1) / CHUNK as i64;
    Ok(match blob {
        Some(blob) if freed < chunks => vec![blob],
        _ => Vec::new(),
    })
}

/// Deletes the chunks of bodies that a record write or delete replaced but whose chunks its own
/// statement could not see. A statement of its own takes a fresh snapshot, which includes them:
/// the writer of a replaced row committed before the row could be replaced.
async fn free_replaced<'e>(conn: impl sqlx::PgExecutor<'e>, blob_ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM record_chunks WHERE blob_id = ANY($1)")
        .bind(blob_ids)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Writes a large body as chunks under a new blob id.
async fn write_chunks(txn: &mut Transaction<'_, Postgres>, body: BodyInput) -> Result<i64> {
    let blob_id: i64 = sqlx::query_scalar("SELECT nextval('record_blob_ids')")
        .fetch_one(&mut **txn)
        .await
        .map_err(db_err)?;
    let insert = |seq: usize, data: &[u8]| {
        sqlx::query("INSERT INTO record_chunks (blob_id, seq, data) VALUES ($1, $2, $3)")
            .bind(blob_id)
            .bind(i32::try_from(seq).unwrap_or(i32::MAX))
            .bind(data.to_vec())
    };
    match body {
        BodyInput::Bytes(bytes) => {
            for (seq, chunk) in bytes.chunks(CHUNK).enumerate() {
                insert(seq, chunk)
                    .execute(&mut **txn)
                    .await
                    .map_err(db_err)?;
            }
        }
        BodyInput::File { path, .. } => {
            let mut file = tokio::fs::File::open(&path).await?;
            let mut buf = vec![0u8; CHUNK];
            let mut seq = 0;
            loop {
                let mut filled = 0;
                while filled < CHUNK {
                    let n = file.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                insert(seq, &buf[..filled])
                    .execute(&mut **txn)
                    .await
                    .map_err(db_err)?;
                seq += 1;
                if filled < CHUNK {
                    break;
                }
            }
        }
    }
    Ok(blob_id)
}

#[async_trait]
impl Store for PgStore {
    async fn user_create(
        &self,
        username: Username,
        is_admin: bool,
        token: TokenHash,
    ) -> Result<User> {
        self.bounded(self.op_timeout, async move {
            let user = User::new(username, is_admin);
            let mut txn = self.begin().await?;
            insert_user(&mut txn, &user, &token).await?;
            txn.commit().await.map_err(db_err)?;
            Ok(user)
        })
        .await
    }

    async fn user_create_first(
        &self,
        username: Username,
        token: TokenHash,
    ) -> Result<Option<User>> {
        self.bounded(self.op_timeout, async move {
            let mut txn = self.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(LOCK_KEY)
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
                .fetch_one(&mut *txn)
                .await
                .map_err(db_err)?;
            if any {
                return Ok(None);
            }
            let user = User::new(username, true);
            insert_user(&mut txn, &user, &token).await?;
            txn.commit().await.map_err(db_err)?;
            Ok(Some(user))
        })
        .await
    }

    async fn user_by_token(&self, token: &TokenHash) -> Result<Option<Authenticated>> {
        self.bounded(self.op_timeout, async {
            let row = self
                .maybe_row(
                    sqlx::query(
                        "SELECT u.id, u.username, u.created_at, u.is_admin, u.disabled, t.read_only
                         FROM tokens t JOIN users u ON u.id = t.user_id
                         WHERE t.hash = $1 AND NOT u.disabled",
                    )
                    .bind(token.0.as_slice()),
                )
                .await?;
            row.map(|row| {
                Ok(Authenticated {
                    user: user_from_row(&row)?,
                    read_only: row.try_get("read_only").map_err(db_err)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn user_by_name(&self, username: &Username) -> Result<Option<User>> {
        self.fetch_user(
            sqlx::query(&format!(
                "SELECT {USER_COLS} FROM users WHERE username = $1"
            ))
            .bind(username.as_str()),
        )
        .await
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>> {
        self.fetch_user(
            sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1")).bind(id.as_str()),
        )
        .await
    }

    async fn user_update(&self, id: &UserId, update: UserUpdate) -> Result<Option<User>> {
        self.fetch_user(
            sqlx::query(&format!(
                "UPDATE users SET disabled = coalesce($2, disabled), is_admin = coalesce($3, is_admin)
                 WHERE id = $1 RETURNING {USER_COLS}"
            ))
            .bind(id.as_str())
            .bind(update.disabled)
            .bind(update.is_admin),
        )
        .await
    }

    async fn user_delete(&self, id: &UserId) -> Result<bool> {
        let deleted = self
            .bounded(self.op_timeout, async move {
                let mut txn = self.begin().await?;
                sqlx::query(
                    "DELETE FROM store_shares WHERE store_id IN
                         (SELECT id FROM stores WHERE user_id = $1 AND NOT deleted)",
                )
                .bind(id.as_str())
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
                sqlx::query(
                    "UPDATE stores SET deleted = true, modified_at = $2
                     WHERE user_id = $1 AND NOT deleted",
                )
                .bind(id.as_str())
                .bind(to_i64(now_millis()))
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
                // Tokens and shares given to the user go with it (ON DELETE CASCADE).
                let gone = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&mut *txn)
                    .await
                    .map_err(db_err)?
                    .rows_affected()
                    == 1;
                txn.commit().await.map_err(db_err)?;
                Ok(gone)
            })
            .await?;
        if deleted {
            tokio::spawn(purge_deleted(self.pool.clone()));
        }
        Ok(deleted)
    }

    async fn token_add(
        &self,
        user: &UserId,
        grant: TokenGrant,
        revoke_others: bool,
    ) -> Result<bool> {
        self.bounded(self.op_timeout, async move {
            let mut txn = self.begin().await?;
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 FOR UPDATE)")
                    .bind(user.as_str())
                    .fetch_one(&mut *txn)
                    .await
                    .map_err(db_err)?;
            if !exists {
                return Ok(false);
            }
            if revoke_others {
                sqlx::query("DELETE FROM tokens WHERE user_id = $1")
                    .bind(user.as_str())
                    .execute(&mut *txn)
                    .await
                    .map_err(db_err)?;
            }
            sqlx::query("INSERT INTO tokens (hash, user_id, read_only) VALUES ($1, $2, $3)")
                .bind(grant.hash.0.as_slice())
                .bind(user.as_str())
                .bind(grant.read_only)
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            txn.commit().await.map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    async fn share_set(
        &self,
        store: &StoreId,
        user: &UserId,
        access: Option<ShareAccess>,
    ) -> Result<bool> {
        self.bounded(self.op_timeout, async move {
            let mut txn = self.begin().await?;
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM stores WHERE id = $1 AND NOT deleted FOR UPDATE)",
            )
            .bind(store.as_str())
            .fetch_one(&mut *txn)
            .await
            .map_err(db_err)?;
            if !exists {
                return Ok(false);
            }
            match access {
                Some(access) => sqlx::query(
                    "INSERT INTO store_shares (store_id, user_id, access) VALUES ($1, $2, $3)
                     ON CONFLICT (store_id, user_id) DO UPDATE SET access = EXCLUDED.access",
                )
                .bind(store.as_str())
                .bind(user.as_str())
                .bind(access.as_str()),
                None => {
                    sqlx::query("DELETE FROM store_shares WHERE store_id = $1 AND user_id = $2")
                        .bind(store.as_str())
                        .bind(user.as_str())
                }
            }
            .execute(&mut *txn)
            .await
            .map_err(db_err)?;
            txn.commit().await.map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    async fn share_get(&self, store: &StoreId, user: &UserId) -> Result<Option<ShareAccess>> {
        self.bounded(self.op_timeout, async move {
            let access: Option<String> = sqlx::query_scalar(
                "SELECT access FROM store_shares WHERE store_id = $1 AND user_id = $2",
            )
            .bind(store.as_str())
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
            access
                .map(|a| ShareAccess::parse(&a).map_err(corrupt))
                .transpose()
        })
        .await
    }

    async fn shares_list(&self, store: &StoreId) -> Result<Vec<(UserId, ShareAccess)>> {
        self.bounded(self.op_timeout, async move {
            sqlx::query(
                "SELECT store_id, user_id, access FROM store_shares WHERE store_id = $1 ORDER BY user_id",
            )
            .bind(store.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(share_row)
            .map(|r| r.map(|(_, user, access)| (user, access)))
            .collect()
        })
        .await
    }

    async fn stores_shared_with(&self, user: &UserId, query: &StoreListQuery) -> Result<StorePage> {
        let filter = "id IN (SELECT store_id FROM store_shares WHERE user_id = $1)
                      AND NOT deleted AND ($2 OR name IS NOT NULL)";
        self.stores_page(filter, user.as_str(), query).await
    }

    async fn users_list(&self) -> Result<Vec<User>> {
        self.bounded(self.op_timeout, async move {
            sqlx::query(&format!(
                "SELECT {USER_COLS} FROM users ORDER BY created_at, username"
            ))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(user_from_row)
            .collect()
        })
        .await
    }

    async fn store_get_or_create(&self, store: StoreInfo) -> Result<(StoreInfo, bool)> {
        self.bounded(self.op_timeout, async move {
            for _ in 0..3 {
                let inserted = sqlx::query(
                    "INSERT INTO stores (id, name, user_id, created_at, modified_at, accessed_at,
                         general_access, url_signing_secret_key, schema)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (user_id, name) WHERE name IS NOT NULL AND NOT deleted DO NOTHING",
                )
                .bind(store.id.as_str())
                .bind(store.name.as_ref().map(StoreName::as_str))
                .bind(store.user_id.as_str())
                .bind(to_i64(store.created_at))
                .bind(to_i64(store.modified_at))
                .bind(to_i64(store.accessed_at))
                .bind(store.general_access.as_str())
                .bind(&store.url_signing_secret_key)
                .bind(store.schema.as_deref())
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                if inserted.rows_affected() == 1 {
                    return Ok((store, true));
                }
                if let Some(name) = &store.name {
                    if let Some(existing) = self.store_get_by_name(&store.user_id, name).await? {
                        return Ok((existing, false));
                    }
                }
                // The clashing store was deleted meanwhile: try again.
            }
            Err(StorageError::Engine(
                "store creation kept conflicting".into(),
            ))
        })
        .await
    }

    async fn store_get(&self, id: &StoreId) -> Result<Option<StoreInfo>> {
        self.bounded(self.op_timeout, async move {
            self.maybe_row(
                sqlx::query(&select_stores("id = $1 AND NOT deleted", "")).bind(id.as_str()),
            )
            .await?
            .as_ref()
            .map(store_from_row)
            .transpose()
        })
        .await
    }

    async fn store_get_by_name(
        &self,
        owner: &UserId,
        name: &StoreName,
    ) -> Result<Option<StoreInfo>> {
        self.bounded(self.op_timeout, async move {
            sqlx::query(&select_stores(
                "user_id = $1 AND name = $2 AND NOT deleted",
                "",
            ))
            .bind(owner.as_str())
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(store_from_row)
            .transpose()
        })
        .await
    }

    async fn stores_list(&self, owner: &UserId, query: &StoreListQuery) -> Result<StorePage> {
        let filter = "user_id = $1 AND NOT deleted AND ($2 OR name IS NOT NULL)";
        self.stores_page(filter, owner.as_str(), query).await
    }

    async fn store_update(&self, id: &StoreId, update: StoreUpdate) -> Result<Option<StoreInfo>> {
        self.bounded(self.op_timeout, async move {
            let mut txn = self.begin().await?;
            let Some(row) = sqlx::query(&select_stores(
                "id = $1 AND NOT deleted",
                "FOR UPDATE OF s",
            ))
            .bind(id.as_str())
            .fetch_optional(&mut *txn)
            .await
            .map_err(db_err)?
            else {
                return Ok(None);
            };
            let mut store = store_from_row(&row)?;
            if let Some(name) = update.name {
                store.name = name;
            }
            if let Some(access) = update.general_access {
                store.general_access = access;
            }
            if let Some(title) = update.title {
                store.title = title;
            }
            let now = now_millis();
            store.modified_at = now;
            store.accessed_at = store.accessed_at.max(now);
            let updated = sqlx::query(
                "UPDATE stores SET name = $2, general_access = $3, modified_at = $4, accessed_at = $5,
                     title = $6
                 WHERE id = $1",
            )
            .bind(id.as_str())
            .bind(store.name.as_ref().map(StoreName::as_str))
            .bind(store.general_access.as_str())
            .bind(to_i64(store.modified_at))
            .bind(to_i64(store.accessed_at))
            .bind(store.title.as_deref())
            .execute(&mut *txn)
            .await;
            match updated {
                Err(e) if is_unique_violation(&e) => return Err(StorageError::NameTaken),
                other => other.map_err(db_err)?,
            };
            txn.commit().await.map_err(db_err)?;
            Ok(Some(store))
        })
        .await
    }

    async fn store_delete(&self, id: &StoreId) -> Result<bool> {
        self.bounded(self.op_timeout, async move {
            let deleted = sqlx::query(
                "WITH unshared AS (DELETE FROM store_shares WHERE store_id = $1)
                 UPDATE stores SET deleted = true, modified_at = $2 WHERE id = $1 AND NOT deleted",
            )
            .bind(id.as_str())
            .bind(to_i64(now_millis()))
            .execute(&self.pool)
            .await
            .map_err(db_err)?
            .rows_affected()
                == 1;
            if deleted {
                tokio::spawn(purge_deleted(self.pool.clone()));
            }
            Ok(deleted)
        })
        .await
    }

    async fn stores_unnamed_idle(&self, idle_since: Millis, limit: usize) -> Result<Vec<StoreId>> {
        self.bounded(self.op_timeout, async move {
            let rows = sqlx::query(
                "SELECT id FROM stores WHERE name IS NULL AND NOT deleted AND accessed_at < $1
                 ORDER BY accessed_at LIMIT $2",
            )
            .bind(to_i64(idle_since))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            rows.iter()
                .map(|row| {
                    StoreId::parse(row.try_get("id").map_err(db_err)?)
                        .ok_or_else(|| corrupt("store id"))
                })
                .collect()
        })
        .await
    }

    async fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        let txn = self
            .bounded(self.op_timeout, async {
                let mut txn = self
                    .pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await
                    .map_err(db_err)?;
                // The snapshot is taken at the first statement, not at BEGIN: take it now.
                sqlx::query("SELECT 1")
                    .execute(&mut *txn)
                    .await
                    .map_err(db_err)?;
                Ok(txn)
            })
            .await?;
        Ok(Box::new(PgSnapshot {
            txn: tokio::sync::Mutex::new(txn),
            spool: self.spool.path().to_path_buf(),
            op_timeout: self.op_timeout,
        }))
    }

    async fn keys_list(&self, store: &StoreId, query: &KeyListQuery) -> Result<Option<KeyPage>> {
        self.bounded(self.op_timeout, async move {
            if self.store_get(store).await?.is_none() {
                return Ok(None);
            }
            // Keys hold only [a-zA-Z0-9!\-_.'()], so a prefix with any other character matches
            // nothing, and every key starting with the prefix sorts below prefix || '~'.
            if !query.prefix.bytes().all(crate::model::is_key_byte) {
                return Ok(Some(KeyPage {
                    items: Vec::new(),
                    is_truncated: false,
                }));
            }
            // PostgreSQL text cannot hold NUL; a start key is compared up to it without changing the
            // result, since no key contains a byte below '!'.
            let start = query
                .exclusive_start_key
                .as_deref()
                .map(|s| s.split('\0').next().unwrap_or(""))
                .unwrap_or("");
            let limit = i64::try_from(query.limit)
                .unwrap_or(i64::MAX)
                .saturating_add(1);
            let rows = if query.prefix.is_empty() {
                self.rows(
                    sqlx::query(
                        "SELECT key, size, content_type, version FROM records
                         WHERE store_id = $1 AND key > $2 ORDER BY key LIMIT $3",
                    )
                    .bind(store.as_str())
                    .bind(start)
                    .bind(limit),
                )
                .await?
            } else {
                self.rows(
                    sqlx::query(
                        "SELECT key, size, content_type, version FROM records
                         WHERE store_id = $1 AND key > $2 AND key >= $3 AND key < $4
                         ORDER BY key LIMIT $5",
                    )
                    .bind(store.as_str())
                    .bind(start)
                    .bind(&query.prefix)
                    .bind(format!("{}~", query.prefix))
                    .bind(limit),
                )
                .await?
            };
            let is_truncated = rows.len() > query.limit;
            let items = rows
                .iter()
                .take(query.limit)
                .map(|row| {
                    Ok(RecordMeta {
                        key: RecordKey::parse(row.try_get("key").map_err(db_err)?)
                            .map_err(corrupt)?,
                        size: to_u64(row.try_get("size").map_err(db_err)?),
                        content_type: row.try_get("content_type").map_err(db_err)?,
                        version: version_of(row)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(KeyPage {
                items,
                is_truncated,
            }))
        })
        .await
    }

    async fn record_read(
        &self,
        token: Option<&TokenHash>,
        store: &StoreId,
        key: Option<&RecordKey>,
    ) -> Result<RecordRead> {
        let row = self
            .bounded(self.op_timeout, async {
                self.row(
                    sqlx::query(RECORD_READ)
                        .bind(store.as_str())
                        .bind(key.map(RecordKey::as_str))
                        .bind(token.map(|t| t.0.to_vec())),
                )
                .await
            })
            .await?;
        let caller = match row.try_get::<Option<String>, _>("u_id").map_err(db_err)? {
            Some(id) => Some(Authenticated {
                user: User {
                    id: UserId::parse(&id).ok_or_else(|| corrupt("user id"))?,
                    username: Username::parse(
                        &row.try_get::<String, _>("u_username").map_err(db_err)?,
                    )
                    .map_err(corrupt)?,
                    created_at: to_u64(row.try_get("u_created_at").map_err(db_err)?),
                    is_admin: row.try_get("u_is_admin").map_err(db_err)?,
                    disabled: false,
                },
                read_only: row.try_get("t_read_only").map_err(db_err)?,
            }),
            None => None,
        };
        if row
            .try_get::<Option<String>, _>("id")
            .map_err(db_err)?
            .is_none()
        {
            return Ok(RecordRead {
                caller,
                ..RecordRead::default()
            });
        }
        let info = store_from_row(&row)?;
        let share = row
            .try_get::<Option<String>, _>("share_access")
            .map_err(db_err)?
            .map(|a| ShareAccess::parse(&a).map_err(corrupt))
            .transpose()?;
        let record = if let Some(key) = key {
            self.record_of_row(store, key, &row).await?
        } else {
            None
        };
        Ok(RecordRead {
            caller,
            store: Some(info),
            share,
            record,
        })
    }

    async fn record_get(&self, store: &StoreId, key: &RecordKey) -> Result<Option<Record>> {
        // One statement is its own snapshot: enough for a record kept inline, the common case.
        let row = self
            .bounded(self.op_timeout, async {
                self.maybe_row(record_query(store, key)).await
            })
            .await?;
        let size = match &row {
            None => return Ok(None),
            Some(row)
                if row
                    .try_get::<Option<i64>, _>("blob_id")
                    .map_err(db_err)?
                    .is_none() =>
            {
                let body: Option<Vec<u8>> = row.try_get("body").map_err(db_err)?;
                return Ok(Some(Record {
                    meta: meta_of(key, row)?,
                    body: BodyOutput::Bytes(Bytes::from(body.unwrap_or_default())),
                }));
            }
            Some(row) => to_u64(row.try_get("size").map_err(db_err)?),
        };
        // Room for the copy first, so that no transaction stays open while waiting for it.
        let mut room = self.read_spools.reserve(size, self.op_timeout).await?;
        // A chunked body: the row and its chunks from one snapshot, so that a concurrent
        // overwrite is never mixed in.
        let (mut txn, row) = self
            .bounded(self.op_timeout, async {
                // The isolation level goes with BEGIN itself: a separate SET TRANSACTION failed
                // (500) on connections that a cancelled request had returned mid-transaction.
                let mut txn = self
                    .pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await
                    .map_err(db_err)?;
                let row = record_query(store, key)
                    .fetch_optional(&mut *txn)
                    .await
                    .map_err(db_err)?;
                Ok((txn, row))
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let meta = meta_of(key, &row)?;
        let blob_id: Option<i64> = row.try_get("blob_id").map_err(db_err)?;
        let body = match blob_id {
            None => {
                let body: Option<Vec<u8>> = row.try_get("body").map_err(db_err)?;
                BodyOutput::Bytes(Bytes::from(body.unwrap_or_default()))
            }
            Some(blob_id) => {
                if room.len != meta.size {
                    // Overwritten in between: account for the body actually read.
                    drop(room);
                    room = self.read_spools.reserve(meta.size, self.op_timeout).await?;
                }
                let budget = body_budget(self.op_timeout, meta.size);
                let file = self
                    .bounded(budget, async {
                        chunks_to_file(&mut txn, blob_id, self.spool.path(), Some(room)).await
                    })
                    .await?;
                BodyOutput::File(file)
            }
        };
        self.bounded(self.op_timeout, async {
            txn.commit().await.map_err(db_err)
        })
        .await?;
        Ok(Some(Record { meta, body }))
    }

    async fn record_meta(&self, store: &StoreId, key: &RecordKey) -> Result<Option<RecordMeta>> {
        self.bounded(self.op_timeout, async move {
            let row = self
                .maybe_row(
                    sqlx::query(
                        "SELECT r.content_type, r.size, r.version
                         FROM records r JOIN stores s ON s.id = r.store_id AND NOT s.deleted
                         WHERE r.store_id = $1 AND r.key = $2",
                    )
                    .bind(store.as_str())
                    .bind(key.as_str()),
                )
                .await?;
            row.map(|row| meta_of(key, &row)).transpose()
        })
        .await
    }

    async fn record_put_versioned(
        &self,
        store: &StoreId,
        key: &RecordKey,
        content_type: &str,
        body: BodyInput,
        version: u64,
    ) -> Result<WriteOutcome> {
        let budget = body_budget(self.op_timeout, body.len());
        self.bounded(budget, async move {
            let size = body.len();
            let write = |inline: Option<Vec<u8>>, blob_id: Option<i64>| {
                sqlx::query(PUT_RECORD)
                    .bind(store.as_str())
                    .bind(key.as_str())
                    .bind(content_type)
                    .bind(to_i64(size))
                    .bind(inline)
                    .bind(blob_id)
                    .bind(i64::from_ne_bytes(version.to_ne_bytes()))
                    .bind(random_shard())
                    .bind(to_i64(now_millis()))
            };
            let written: i64 = if size > INLINE_MAX {
                // Chunks first, in the same transaction; they vanish with it if it fails.
                let mut txn = self.begin().await?;
                let blob_id = write_chunks(&mut txn, body).await?;
                let row = write(None, Some(blob_id))
                    .fetch_one(&mut *txn)
                    .await
                    .map_err(db_err)?;
                let written: i64 = row.try_get("written").map_err(db_err)?;
                if written == 0 {
                    // The store is gone (deleted while the body was being written): the chunks
                    // go with the transaction rather than staying behind with no record.
                    txn.rollback().await.map_err(db_err)?;
                    return Ok(WriteOutcome::StoreMissing);
                }
                let missed = missed_chunks(&row)?;
                if !missed.is_empty() {
                    free_replaced(&mut *txn, &missed).await.map_err(db_err)?;
                }
                txn.commit().await.map_err(db_err)?;
                written
            } else {
                let bytes = match body {
                    BodyInput::Bytes(b) => b.to_vec(),
                    BodyInput::File { path, .. } => tokio::fs::read(&path).await?,
                };
                // One statement, one round trip: its own transaction. A second one only when it
                // replaced a chunked body committed after it began.
                let row = self.row(write(Some(bytes), None)).await?;
                self.free_missed(&row).await?;
                row.try_get("written").map_err(db_err)?
            };
            Ok(if written == 1 {
                WriteOutcome::Written
            } else {
                WriteOutcome::StoreMissing
            })
        })
        .await
    }

    async fn records_import(
        &self,
        store: &StoreId,
        records: Vec<ImportRecord>,
    ) -> Result<WriteOutcome> {
        // The last of several records with one key wins, as if they were written in turn (one
        // statement cannot upsert a row twice).
        let mut latest = std::collections::HashMap::with_capacity(records.len());
        for record in records {
            latest.insert(record.key.to_string(), record);
        }
        let (large, small): (Vec<_>, Vec<_>) = latest
            .into_values()
            .partition(|r| r.body.len() > INLINE_MAX);
        let total: u64 = small.iter().map(|r| r.body.len()).sum();
        let (mut keys, mut types, mut sizes, mut bodies, mut versions) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for record in small {
            keys.push(record.key.to_string());
            types.push(record.content_type);
            sizes.push(to_i64(record.body.len()));
            bodies.push(match record.body {
                BodyInput::Bytes(b) => b.to_vec(),
                BodyInput::File { path, .. } => tokio::fs::read(&path).await?,
            });
            versions.push(i64::from_ne_bytes(record.version.to_ne_bytes()));
        }
        let exists: i64 = self
            .bounded(body_budget(self.op_timeout, total), async {
                let row = self
                    .row(
                        sqlx::query(IMPORT_RECORDS)
                            .bind(store.as_str())
                            .bind(keys)
                            .bind(types)
                            .bind(sizes)
                            .bind(bodies)
                            .bind(versions)
                            .bind(random_shard())
                            .bind(to_i64(now_millis()))
                            .bind(CHUNK as i64),
                    )
                    .await?;
                self.free_missed(&row).await?;
                row.try_get("store_exists").map_err(db_err)
            })
            .await?;
        if exists == 0 {
            return Ok(WriteOutcome::StoreMissing);
        }
        super::put_one_by_one(self, store, large).await
    }

    async fn record_delete(&self, store: &StoreId, key: &RecordKey) -> Result<WriteOutcome> {
        self.bounded(self.op_timeout, async move {
            let row = self
                .row(
                    sqlx::query(DELETE_RECORD)
                        .bind(store.as_str())
                        .bind(key.as_str())
                        .bind(random_shard())
                        .bind(to_i64(now_millis())),
                )
                .await?;
            self.free_missed(&row).await?;
            let exists: i64 = row.try_get("store_exists").map_err(db_err)?;
            Ok(if exists == 1 {
                WriteOutcome::Written
            } else {
                WriteOutcome::StoreMissing
            })
        })
        .await
    }

    async fn user_tokens(&self, user: &UserId) -> Result<Vec<TokenGrant>> {
        self.bounded(self.op_timeout, async move {
            sqlx::query("SELECT hash, read_only FROM tokens WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(token_row)
                .collect()
        })
        .await
    }

    async fn user_import(&self, user: &User, tokens: &[TokenGrant]) -> Result<()> {
        self.bounded(self.op_timeout, async move {
            let mut txn = self.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO users (id, username, created_at, is_admin, disabled)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            )
            .bind(user.id.as_str())
            .bind(user.username.as_str())
            .bind(to_i64(user.created_at))
            .bind(user.is_admin)
            .bind(user.disabled)
            .execute(&mut *txn)
            .await;
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(StorageError::UserExists),
                other => other.map_err(db_err)?,
            };
            for token in tokens {
                sqlx::query(
                    "INSERT INTO tokens (hash, user_id, read_only) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(token.hash.0.as_slice())
                .bind(user.id.as_str())
                .bind(token.read_only)
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            }
            txn.commit().await.map_err(db_err)
        })
        .await
    }

    async fn store_import(&self, store: &StoreInfo) -> Result<()> {
        self.bounded(self.op_timeout, async move {
            let saved = sqlx::query(
                "INSERT INTO stores (id, name, user_id, created_at, modified_at, accessed_at,
                     general_access, url_signing_secret_key, schema, record_count, storage_bytes,
                     read_count, write_count, delete_count, list_count, title, deleted)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     false)
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, user_id = EXCLUDED.user_id,
                     created_at = EXCLUDED.created_at, modified_at = EXCLUDED.modified_at,
                     accessed_at = EXCLUDED.accessed_at, general_access = EXCLUDED.general_access,
                     url_signing_secret_key = EXCLUDED.url_signing_secret_key,
                     schema = EXCLUDED.schema, record_count = EXCLUDED.record_count,
                     storage_bytes = EXCLUDED.storage_bytes, read_count = EXCLUDED.read_count,
                     write_count = EXCLUDED.write_count, delete_count = EXCLUDED.delete_count,
                     list_count = EXCLUDED.list_count, title = EXCLUDED.title, deleted = false",
            )
            .bind(store.id.as_str())
            .bind(store.name.as_ref().map(StoreName::as_str))
            .bind(store.user_id.as_str())
            .bind(to_i64(store.created_at))
            .bind(to_i64(store.modified_at))
            .bind(to_i64(store.accessed_at))
            .bind(store.general_access.as_str())
            .bind(&store.url_signing_secret_key)
            .bind(store.schema.as_deref())
            .bind(to_i64(store.stats.record_count))
            .bind(to_i64(store.stats.storage_bytes))
            .bind(to_i64(store.stats.read_count))
            .bind(to_i64(store.stats.write_count))
            .bind(to_i64(store.stats.delete_count))
            .bind(to_i64(store.stats.list_count))
            .bind(store.title.as_deref())
            .execute(&self.pool)
            .await;
            match saved {
                Err(e) if is_unique_violation(&e) => return Err(StorageError::NameTaken),
                other => other.map_err(db_err)?,
            };
            // The row now holds the exact counters: drop the shards' share of them.
            sqlx::query("DELETE FROM store_counters WHERE store_id = $1")
                .bind(store.id.as_str())
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn orphans(&self, check: OrphanCheck) -> Result<OrphanReport> {
        // The chunks of a write in flight are not committed, so no statement here sees them, and
        // chunks commit together with the record that points at them: committed chunks without a
        // record are orphans for good, whatever `min_age` says. An open snapshot (a backup, a
        // read) keeps reading the rows deleted here, as MVCC does for any delete.
        self.bounded(ORPHAN_CHECK_TIMEOUT, async move {
            let row = sqlx::query(
                "SELECT count(*) AS bodies, coalesce(sum(bytes), 0)::bigint AS bytes,
                     coalesce(array_agg(blob_id), '{}') AS blob_ids
                 FROM (SELECT c.blob_id, sum(octet_length(c.data)) AS bytes
                       FROM record_chunks c
                       WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.blob_id = c.blob_id)
                       GROUP BY c.blob_id) orphan",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
            let bodies: i64 = row.try_get("bodies").map_err(db_err)?;
            let bytes: i64 = row.try_get("bytes").map_err(db_err)?;
            let blob_ids: Vec<i64> = row.try_get("blob_ids").map_err(db_err)?;
            let mut removed = 0;
            if check.remove && !blob_ids.is_empty() {
                // Checked again at deletion: nothing that a record points at goes.
                removed = sqlx::query_scalar::<_, i64>(
                    "WITH gone AS (DELETE FROM record_chunks
                         WHERE blob_id = ANY($1) AND blob_id NOT IN
                             (SELECT blob_id FROM records WHERE blob_id = ANY($1))
                         RETURNING blob_id)
                     SELECT count(DISTINCT blob_id) FROM gone",
                )
                .bind(&blob_ids)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
            }
            Ok(OrphanReport {
                bodies: to_u64(bodies),
                bytes: to_u64(bytes),
                removed: to_u64(removed),
            })
        })
        .await
    }

    async fn apply_access(&self, mut batch: Vec<(StoreId, AccessDelta)>) -> Result<()> {
        self.bounded(self.op_timeout, async move {
            // Rows are locked in id order, so that two nodes flushing at once cannot deadlock.
            batch.sort_by(|a, b| a.0.cmp(&b.0));
            let mut txn = self.begin().await?;
            for (id, delta) in &batch {
                sqlx::query(
                    "UPDATE stores SET read_count = read_count + $2, list_count = list_count + $3,
                         accessed_at = greatest(accessed_at, $4)
                     WHERE id = $1",
                )
                .bind(id.as_str())
                .bind(to_i64(delta.reads))
                .bind(to_i64(delta.lists))
                .bind(to_i64(delta.accessed_at))
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            }
            txn.commit().await.map_err(db_err)
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.bounded(self.op_timeout, async {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(db_err)
        })
        .await
    }

    fn spool_dir(&self) -> std::path::PathBuf {
        self.spool.path().to_path_buf()
    }

    async fn close(&self) -> Result<()> {
        self.statements.close();
        self.pool.close().await;
        Ok(())
    }
}

/// One REPEATABLE READ transaction held for a whole backup: every statement sees the same instant,
/// and the rows it sees (chunks of overwritten bodies included) stay readable until it ends.
struct PgSnapshot {
    txn: tokio::sync::Mutex<Transaction<'static, Postgres>>,
    spool: std::path::PathBuf,
    op_timeout: Duration,
}

impl PgSnapshot {
    async fn bounded<T>(
        &self,
        limit: Duration,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(limit, op).await.unwrap_or_else(|_| {
            Err(StorageError::Unavailable(format!(
                "the database did not answer within {limit:?}"
            )))
        })
    }
}

#[async_trait]
impl Snapshot for PgSnapshot {
    async fn users(&self) -> Result<Vec<(User, Vec<TokenGrant>)>> {
        let mut txn = self.txn.lock().await;
        self.bounded(self.op_timeout, async {
            let users = sqlx::query(&format!("SELECT {USER_COLS} FROM users"))
                .fetch_all(&mut **txn)
                .await
                .map_err(db_err)?;
            let tokens = sqlx::query("SELECT hash, user_id, read_only FROM tokens")
                .fetch_all(&mut **txn)
                .await
                .map_err(db_err)?;
            let mut tokens_of = std::collections::HashMap::<String, Vec<TokenGrant>>::new();
            for row in &tokens {
                let user: String = row.try_get("user_id").map_err(db_err)?;
                tokens_of.entry(user).or_default().push(token_row(row)?);
            }
            users
                .iter()
                .map(|row| {
                    let user = user_from_row(row)?;
                    let tokens = tokens_of.remove(user.id.as_str()).unwrap_or_default();
                    Ok((user, tokens))
                })
                .collect()
        })
        .await
    }

    async fn shares(&self) -> Result<Vec<(StoreId, UserId, ShareAccess)>> {
        let mut txn = self.txn.lock().await;
        self.bounded(self.op_timeout, async {
            sqlx::query(
                "SELECT sh.store_id, sh.user_id, sh.access FROM store_shares sh
                 JOIN stores s ON s.id = sh.store_id AND NOT s.deleted",
            )
            .fetch_all(&mut **txn)
            .await
            .map_err(db_err)?
            .iter()
            .map(share_row)
            .collect()
        })
        .await
    }

    async fn stores(&self) -> Result<Vec<StoreInfo>> {
        let mut txn = self.txn.lock().await;
        self.bounded(self.op_timeout, async {
            sqlx::query(&select_stores("NOT deleted", ""))
                .fetch_all(&mut **txn)
                .await
                .map_err(db_err)?
                .iter()
                .map(store_from_row)
                .collect()
        })
        .await
    }

    async fn keys(
        &self,
        store: &StoreId,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<RecordMeta>> {
        let mut txn = self.txn.lock().await;
        self.bounded(self.op_timeout, async {
            let rows = sqlx::query(
                "SELECT key, content_type, size, version FROM records
                 WHERE store_id = $1 AND key > $2 ORDER BY key LIMIT $3",
            )
            .bind(store.as_str())
            .bind(after.unwrap_or_default())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut **txn)
            .await
            .map_err(db_err)?;
            rows.iter()
                .map(|row| {
                    let key: String = row.try_get("key").map_err(db_err)?;
                    meta_of(&RecordKey::parse(&key).map_err(corrupt)?, row)
                })
                .collect()
        })
        .await
    }

    async fn record(&self, store: &StoreId, key: &RecordKey) -> Result<Option<Record>> {
        let mut txn = self.txn.lock().await;
        let row = self
            .bounded(self.op_timeout, async {
                record_query(store, key)
                    .fetch_optional(&mut **txn)
                    .await
                    .map_err(db_err)
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let meta = meta_of(key, &row)?;
        let blob_id: Option<i64> = row.try_get("blob_id").map_err(db_err)?;
        let body = match blob_id {
            None => {
                let body: Option<Vec<u8>> = row.try_get("body").map_err(db_err)?;
                BodyOutput::Bytes(Bytes::from(body.unwrap_or_default()))
            }
            Some(blob_id) => {
                let budget = body_budget(self.op_timeout, meta.size);
                let file = self
                    .bounded(budget, async {
                        chunks_to_file(&mut txn, blob_id, &self.spool, None).await
                    })
                    .await?;
                BodyOutput::File(file)
            }
        };
        Ok(Some(Record { meta, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::is_unavailable_state;

    #[test]
    fn a_database_going_away_is_unavailable_not_an_engine_error() {
        // pg_terminate_backend, shutdown, crash, starting up, connection failure, too many clients.
        for code in ["57P01", "57P02", "57P03", "08006", "08003", "53300"] {
            assert!(is_unavailable_state(code), "{code}");
        }
        // Errors in the request or the data stay what they are.
        for code in ["23505", "42P01", "53100", "22001", "40001"] {
            assert!(!is_unavailable_state(code), "{code}");
        }
    }
}
