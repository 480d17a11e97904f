//! The schema: its migrations, applied once and in order whatever the number of nodes starting,
//! and the advisory lock that serializes them.

use sqlx::postgres::PgPool;

use super::errors::db_err;
use crate::storage::{Result, StorageError};

/// Serializes migrations and first-user creation across nodes.
pub(super) const LOCK_KEY: i64 = 0x006b_7673_746f_7265; // "kvstore"

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
    // 6 (counted as above; kvstore_schema records it as version 7): the generation of
    // everything an access check reads (tokens, users, store settings, shares), bumped by every
    // statement that may change it, in its own transaction, with a notification: nodes cache
    // access checks and use an entry only under the generation it was filled under (see
    // `access_cache`). Creating a user, token or store bumps nothing: the caches never remember
    // an absence of those.
    r#"
CREATE TABLE kvstore_generation (
    id integer PRIMARY KEY CHECK (id = 1),
    value bigint NOT NULL
);
INSERT INTO kvstore_generation (id, value) VALUES (1, 0);
CREATE FUNCTION kvstore_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE kvstore_generation SET value = value + 1 WHERE id = 1;
    PERFORM pg_notify('kvstore_access', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER users_access_changed AFTER UPDATE OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION kvstore_access_changed();
CREATE TRIGGER tokens_access_changed AFTER UPDATE OR DELETE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION kvstore_access_changed();
CREATE TRIGGER store_shares_access_changed AFTER INSERT OR UPDATE OR DELETE ON store_shares
    FOR EACH STATEMENT EXECUTE FUNCTION kvstore_access_changed();
CREATE TRIGGER stores_access_changed
    AFTER UPDATE OF id, name, user_id, general_access, url_signing_secret_key, schema, title, deleted
    ON stores FOR EACH STATEMENT EXECUTE FUNCTION kvstore_access_changed();
"#,
    // 7 (counted as above; kvstore_schema records it as version 8): bodies in object storage.
    // `object` names a record's body in the object store; `object_garbage` holds the names no
    // committed row points at, with the time they became garbage: replaced and deleted bodies,
    // and uploads not (yet) committed, whose row goes in the transaction that commits the
    // record. The collector removes them after a grace period.
    r#"
ALTER TABLE records ADD COLUMN object text, ADD COLUMN prev_object text;
CREATE TABLE object_garbage (
    name text PRIMARY KEY,
    since bigint NOT NULL
);
CREATE INDEX object_garbage_since ON object_garbage (since);
"#,
];

pub(super) async fn migrate(pool: &PgPool) -> Result<()> {
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
