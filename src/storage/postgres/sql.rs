//! The SQL of the hot path: the one-statement record writes, deletes and reads, and the
//! builders of store and record `SELECT`s.

use sqlx::Postgres;

use super::rows::to_i64;
use super::PgQuery;
use crate::model::{now_millis, RecordKey, StoreId};

/// The counter shard a write adds its changes to: the one of the backend (connection) that runs
/// it, of at most 1024 shard rows per store. A connection runs one statement at a time, so two
/// writers wait on one shard row only when their backends' process ids collide modulo 1024 (rare
/// among a pool's connections, whose ids are mostly close together), instead of whenever two of
/// 64 writers drew the same one of 16 rows at random — each row lock is held through the commit's
/// WAL flush. A store's counters sum as many shard rows as backends ever wrote to it.
macro_rules! counter_shard {
    () => {
        "(pg_backend_pid() % 1024)::smallint"
    };
}

/// Whether the access generation is still the one given (a parameter: `$n`), or none was given:
/// a write whose caller's access was decided from the caches ([`super::access_cache`]) carries
/// the generation they were filled under, and writes nothing when it moved — the check and the
/// write in one statement, from one snapshot, instead of a [`GENERATION`] round trip first.
macro_rules! generation_is {
    ($param:literal) => {
        concat!(
            "(",
            $param,
            "::bigint IS NULL OR ",
            $param,
            " = (SELECT value FROM kvstore_generation WHERE id = 1))"
        )
    };
}

/// Stores a record in one statement: the store must exist (a shared row lock, so that a delete
/// of the store waits, but other writers do not), the upsert keeps the previous size and blob,
/// the previous blob's chunks go, the previous object (if any) becomes garbage, and the counter
/// shard of the connection's backend takes the changes (see `counter_shard!`). $1 store, $2 key,
/// $3 content type, $4 size, $5 inline body, $6 blob id, $7 version, $8 now, $9 object name,
/// $10 the access generation the caller's access was decided under, or NULL (see
/// `generation_is!`): when it is no longer current, nothing is written and `current` is false.
///
/// The upsert replaces the newest row even if it was committed after this statement began, but
/// the chunk `DELETE` sees only what was committed before: a concurrent writer's chunks are
/// invisible to it. The statement returns the replaced blob and how many chunks it freed, and
/// [`free_replaced`] deletes the rest in a statement of its own, which does see them.
///
/// [`free_replaced`]: super::chunks::free_replaced
pub(super) const PUT_RECORD: &str = concat!(
    "
WITH g AS (SELECT ",
    generation_is!("$10"),
    " AS current),
s AS (SELECT id FROM stores WHERE id = $1 AND NOT deleted AND (SELECT current FROM g) FOR SHARE),
up AS (
    INSERT INTO records AS r (store_id, key, content_type, size, body, blob_id, version,
        prev_size, prev_blob_id, object, prev_object)
    SELECT $1, $2, $3, $4, $5, $6, $7, NULL, NULL, $9, NULL FROM s
    ON CONFLICT (store_id, key) DO UPDATE SET content_type = EXCLUDED.content_type,
        size = EXCLUDED.size, body = EXCLUDED.body, blob_id = EXCLUDED.blob_id,
        version = EXCLUDED.version, prev_size = r.size, prev_blob_id = r.blob_id,
        object = EXCLUDED.object, prev_object = r.object
    RETURNING prev_size, prev_blob_id, prev_object),
gone AS (DELETE FROM record_chunks
    WHERE blob_id IN (SELECT prev_blob_id FROM up WHERE prev_blob_id IS NOT NULL)
    RETURNING 1),
garbage AS (INSERT INTO object_garbage (name, since)
    SELECT prev_object, $8 FROM up WHERE prev_object IS NOT NULL
    ON CONFLICT (name) DO NOTHING),
counted AS (
    INSERT INTO store_counters AS c (store_id, shard, record_count, storage_bytes, write_count,
        modified_at)
    SELECT $1, ",
    counter_shard!(),
    ", CASE WHEN prev_size IS NULL THEN 1 ELSE 0 END,
        $4 - coalesce(prev_size, 0), 1, $8 FROM up
    ON CONFLICT (store_id, shard) DO UPDATE SET
        record_count = c.record_count + EXCLUDED.record_count,
        storage_bytes = c.storage_bytes + EXCLUDED.storage_bytes,
        write_count = c.write_count + 1,
        modified_at = greatest(c.modified_at, EXCLUDED.modified_at))
SELECT count(*) AS written, max(prev_blob_id) AS prev_blob_id, max(prev_size) AS prev_size,
    (SELECT count(*) FROM gone) AS freed, (SELECT current FROM g) AS current
FROM up"
);

/// Where the body of a [`PUT_RECORD`] is, outside the record's row.
pub(super) enum Outside<'q> {
    /// In chunks under this blob id.
    Chunks(i64),
    /// In the object store under this name.
    Object(&'q str),
}

/// [`PUT_RECORD`] of a record whose body is outside its row (inline bodies go in [`PUT_RECORDS`]),
/// written now; `generation` as its $10.
pub(super) fn put_record<'q>(
    store: &'q StoreId,
    key: &'q RecordKey,
    content_type: &'q str,
    size: u64,
    body: Outside<'q>,
    version: u64,
    generation: Option<i64>,
) -> PgQuery<'q> {
    let (blob_id, object) = match body {
        Outside::Chunks(id) => (Some(id), None),
        Outside::Object(name) => (None, Some(name)),
    };
    sqlx::query(PUT_RECORD)
        .bind(store.as_str())
        .bind(key.as_str())
        .bind(content_type)
        .bind(to_i64(size))
        .bind(None::<Vec<u8>>)
        .bind(blob_id)
        .bind(i64::from_ne_bytes(version.to_ne_bytes()))
        .bind(to_i64(now_millis()))
        .bind(object)
        .bind(generation)
}

/// Stores a batch of inline records of one store in one statement and one commit, as
/// [`PUT_RECORD`] stores one: $1 store, $2 keys (distinct), $3 content types, $4 sizes, $5 bodies,
/// $6 versions, $7 now, $8 the chunk size (to count the chunks of the bodies replaced), $9 the
/// access generation or NULL (as `PUT_RECORD`'s $10: when it moved, nothing is written and
/// `current` is false). The rows are upserted in key order, so that two batches with keys in
/// common take their row locks in the same order instead of deadlocking.
pub(super) const PUT_RECORDS: &str = concat!(
    "
WITH g AS (SELECT ",
    generation_is!("$9"),
    " AS current),
s AS (SELECT id FROM stores WHERE id = $1 AND NOT deleted AND (SELECT current FROM g) FOR SHARE),
up AS (
    INSERT INTO records AS r (store_id, key, content_type, size, body, blob_id, version,
        prev_size, prev_blob_id, object, prev_object)
    SELECT $1, t.key, t.content_type, t.size, t.body, NULL, t.version, NULL, NULL, NULL, NULL
    FROM s, unnest($2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::bigint[])
        AS t (key, content_type, size, body, version)
    ORDER BY t.key COLLATE \"C\"
    ON CONFLICT (store_id, key) DO UPDATE SET content_type = EXCLUDED.content_type,
        size = EXCLUDED.size, body = EXCLUDED.body, blob_id = EXCLUDED.blob_id,
        version = EXCLUDED.version, prev_size = r.size, prev_blob_id = r.blob_id,
        object = NULL, prev_object = r.object
    RETURNING size, prev_size, prev_blob_id, prev_object),
gone AS (DELETE FROM record_chunks
    WHERE blob_id IN (SELECT prev_blob_id FROM up WHERE prev_blob_id IS NOT NULL)
    RETURNING 1),
garbage AS (INSERT INTO object_garbage (name, since)
    SELECT prev_object, $7 FROM up WHERE prev_object IS NOT NULL
    ON CONFLICT (name) DO NOTHING),
counted AS (
    INSERT INTO store_counters AS c (store_id, shard, record_count, storage_bytes, write_count,
        modified_at)
    SELECT $1, ",
    counter_shard!(),
    ", count(*) FILTER (WHERE prev_size IS NULL),
        coalesce(sum(size - coalesce(prev_size, 0)), 0)::bigint, count(*), $7 FROM up
    HAVING count(*) > 0
    ON CONFLICT (store_id, shard) DO UPDATE SET
        record_count = c.record_count + EXCLUDED.record_count,
        storage_bytes = c.storage_bytes + EXCLUDED.storage_bytes,
        write_count = c.write_count + EXCLUDED.write_count,
        modified_at = greatest(c.modified_at, EXCLUDED.modified_at))
SELECT count(*) AS store_exists,
    (SELECT array_agg(prev_blob_id) FROM up WHERE prev_blob_id IS NOT NULL) AS prev_blob_ids,
    (SELECT coalesce(sum((prev_size + $8 - 1) / $8) FILTER (WHERE prev_blob_id IS NOT NULL), 0)
        FROM up)::bigint AS prev_chunks,
    (SELECT count(*) FROM gone) AS freed, (SELECT current FROM g) AS current
FROM s"
);

/// Deletes a record in one statement, as [`PUT_RECORD`] stores one (the same goes for the chunks
/// of a body committed after the statement began). $1 store, $2 key, $3 now, $4 the access
/// generation or NULL (as `PUT_RECORD`'s $10). Deleting a missing record still counts as a delete
/// of an existing store.
pub(super) const DELETE_RECORD: &str = concat!(
    "
WITH g AS (SELECT ",
    generation_is!("$4"),
    " AS current),
s AS (SELECT id FROM stores WHERE id = $1 AND NOT deleted AND (SELECT current FROM g) FOR SHARE),
d AS (DELETE FROM records WHERE store_id = $1 AND key = $2 AND EXISTS (SELECT 1 FROM s)
    RETURNING size, blob_id, object),
gone AS (DELETE FROM record_chunks
    WHERE blob_id IN (SELECT blob_id FROM d WHERE blob_id IS NOT NULL)
    RETURNING 1),
garbage AS (INSERT INTO object_garbage (name, since)
    SELECT object, $3 FROM d WHERE object IS NOT NULL
    ON CONFLICT (name) DO NOTHING),
counted AS (
    INSERT INTO store_counters AS c (store_id, shard, record_count, storage_bytes, delete_count,
        modified_at)
    SELECT $1, ",
    counter_shard!(),
    ", -(SELECT count(*) FROM d),
        -(SELECT coalesce(sum(size), 0) FROM d)::bigint, 1, $3 FROM s
    ON CONFLICT (store_id, shard) DO UPDATE SET
        record_count = c.record_count + EXCLUDED.record_count,
        storage_bytes = c.storage_bytes + EXCLUDED.storage_bytes,
        delete_count = c.delete_count + 1,
        modified_at = greatest(c.modified_at, EXCLUDED.modified_at))
SELECT count(*) AS store_exists, (SELECT blob_id FROM d) AS prev_blob_id,
    (SELECT size FROM d) AS prev_size, (SELECT count(*) FROM gone) AS freed,
    (SELECT current FROM g) AS current
FROM s"
);

/// [`RecordStore::record_read`] in one round trip: the token's user, the store row (counters not
/// summed), the caller's share and the record, with the access generation they were read under
/// (see [`super::access_cache`]). $1 store, $2 key, $3 token hash (or NULL).
///
/// [`RecordStore::record_read`]: crate::storage::RecordStore::record_read
pub(super) const RECORD_READ: &str = "
SELECT (SELECT g.value FROM kvstore_generation g WHERE g.id = 1) AS generation, s.id, s.name, s.user_id, s.created_at, s.modified_at, s.accessed_at, s.general_access,
    s.url_signing_secret_key, s.schema, s.title, s.record_count, s.storage_bytes, s.read_count,
    s.write_count, s.delete_count, s.list_count,
    -- An authenticated owner is enabled (a disabled user's tokens match no row of u): no lookup.
    CASE WHEN u.id = s.user_id THEN false
        ELSE (SELECT o.disabled FROM users o WHERE o.id = s.user_id) END AS owner_disabled,
    u.id AS u_id, u.username AS u_username, u.created_at AS u_created_at,
    u.is_admin AS u_is_admin, t.read_only AS t_read_only,
    sh.access AS share_access,
    r.content_type, r.size, r.body, r.blob_id, r.version, r.object
FROM (SELECT 1) AS one
LEFT JOIN (tokens t JOIN users u ON u.id = t.user_id AND NOT u.disabled) ON t.hash = $3
LEFT JOIN stores s ON s.id = $1 AND NOT s.deleted
LEFT JOIN store_shares sh ON sh.store_id = s.id AND sh.user_id = u.id
LEFT JOIN records r ON r.store_id = s.id AND r.key = $2";

/// [`RECORD_READ`] when the caller, the store and the share come from the caches: the record
/// alone, and the access generation to check the cached entries against. $1 store, $2 key.
///
/// The generation's one row drives the join: under pgbench (64 clients, the backends on one core)
/// this ran at 0.96–1.0× the throughput of the records-only `SELECT`, against 0.80–0.95× with the
/// generation as a scalar subquery.
pub(super) const RECORD_READ_CACHED: &str = "
SELECT g.value AS generation, r.content_type, r.size, r.body, r.blob_id, r.version, r.object
FROM kvstore_generation g
LEFT JOIN records r ON r.store_id = $1 AND r.key = $2";

/// One page of a store's keys, in key order, after $2 (`key_range`); one more than the page is
/// asked for ($3), to know whether more follow. `$columns` in the order `PageRows` decodes them.
macro_rules! keys_after {
    ($columns:expr) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM records
         WHERE store_id = $1 AND key > $2 ORDER BY key LIMIT $3"
        )
    };
}

/// [`keys_after!`] within a prefix: $3 the prefix, $4 the bound every key with it sorts below,
/// $5 the limit.
macro_rules! keys_in_prefix {
    ($columns:expr) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM records
         WHERE store_id = $1 AND key > $2 AND key >= $3 AND key < $4 ORDER BY key LIMIT $5"
        )
    };
}

/// The key listing of the full path (after the store's existence is checked): each key's whole
/// metadata.
pub(super) const KEYS_AFTER: &str = keys_after!("key, size, content_type, version");
pub(super) const KEYS_IN_PREFIX: &str = keys_in_prefix!("key, size, content_type, version");

/// The cached listings' columns: what a listing shows (the key and its size), and a NULL where
/// their last row has the access generation (see `then_generation!`).
macro_rules! listed {
    () => {
        "key, size, NULL::bigint AS generation"
    };
}

/// The cached listings' last row: no key, and the access generation in the third column.
macro_rules! then_generation {
    () => {
        " UNION ALL SELECT NULL, NULL, value FROM kvstore_generation WHERE id = 1"
    };
}

/// The key listing when the caller, the store and the share come from the caches, in one
/// statement: the page, then a row with the access generation to check the cached entries
/// against (as [`RECORD_READ_CACHED`] reads a record), from one snapshot. Deleting the store
/// moves the generation, so a current generation also says the store was not deleted as of the
/// page's snapshot. Only the key and size of each record: all the listing shows
/// ([`RecordStore::keys_read`]); sending the content type and version too cost the database a
/// quarter more CPU per listing. A `UNION ALL` rather than the page joined to the generation's row:
/// the join projected every row once more and sent the generation with each. Figures in
/// bench/RESULTS.md, 2026-12-06 "list-keys on the pipelined connections".
///
/// [`RecordStore::keys_read`]: crate::storage::RecordStore::keys_read
pub(super) const KEYS_AFTER_CACHED: &str =
    concat!("(", keys_after!(listed!()), ")", then_generation!());
pub(super) const KEYS_IN_PREFIX_CACHED: &str =
    concat!("(", keys_in_prefix!(listed!()), ")", then_generation!());
/// [`KEYS_AFTER_CACHED`] of a range no key can match: the generation's row alone.
pub(super) const KEYS_NONE_CACHED: &str =
    "SELECT NULL::text AS key, NULL::bigint AS size, value AS generation
FROM kvstore_generation WHERE id = 1";

/// The access generation alone, for an access check without a record (a write's) answered by the
/// caches.
pub(super) const GENERATION: &str =
    "SELECT value AS generation FROM kvstore_generation WHERE id = 1";

/// The statements of a key listing, which the pipelined connections prepare ([`super::pipeline`]).
#[derive(Clone, Copy, Debug)]
pub(super) enum Listing {
    /// [`KEYS_AFTER`]
    After,
    /// [`KEYS_IN_PREFIX`]
    InPrefix,
    /// [`KEYS_AFTER_CACHED`]
    AfterCached,
    /// [`KEYS_IN_PREFIX_CACHED`]
    InPrefixCached,
    /// [`KEYS_NONE_CACHED`]
    NoneCached,
}

impl Listing {
    /// Every listing statement, in the order of their discriminants.
    pub const ALL: [Listing; 5] = [
        Listing::After,
        Listing::InPrefix,
        Listing::AfterCached,
        Listing::InPrefixCached,
        Listing::NoneCached,
    ];

    pub fn sql(self) -> &'static str {
        match self {
            Listing::After => KEYS_AFTER,
            Listing::InPrefix => KEYS_IN_PREFIX,
            Listing::AfterCached => KEYS_AFTER_CACHED,
            Listing::InPrefixCached => KEYS_IN_PREFIX_CACHED,
            Listing::NoneCached => KEYS_NONE_CACHED,
        }
    }
}

/// `SELECT` of store rows with their counters (the row's base plus every shard), for `filter`
/// (a `WHERE` clause over the `stores` columns, which are unambiguous) and `tail` (ORDER BY…).
pub(super) fn select_stores(filter: &str, tail: &str) -> String {
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

pub(super) const USER_COLS: &str = "id, username, created_at, is_admin, disabled";

/// A record of a live store, with its inline body (if any), its blob id (if chunked) and its
/// object's name (if in the object store).
pub(super) fn record_query<'q>(
    store: &'q StoreId,
    key: &'q RecordKey,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(
        "SELECT r.content_type, r.size, r.body, r.blob_id, r.version, r.object
         FROM records r JOIN stores s ON s.id = r.store_id AND NOT s.deleted
         WHERE r.store_id = $1 AND r.key = $2",
    )
    .bind(store.as_str())
    .bind(key.as_str())
}
