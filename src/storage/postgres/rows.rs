//! Row decoding: users, tokens, shares, stores and record metadata from their columns, and the
//! conversions between the signed columns and the model's unsigned numbers.

use bytes::Bytes;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::errors::db_err;
use super::pipeline::RecordRow;
use crate::model::{
    GeneralAccess, RecordKey, RecordMeta, ShareAccess, StoreId, StoreInfo, StoreName, StoreStats,
    TokenGrant, TokenHash, User, UserId, Username,
};
use crate::storage::{Result, StorageError};

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

/// A row whose columns are read by position, from the statement pool (sqlx) or a pipelined
/// connection (tokio-postgres), so that one function decodes a statement's rows on either.
pub(super) trait Columns {
    fn int8(&self, i: usize) -> Result<i64>;
    fn text(&self, i: usize) -> Result<Option<&str>>;
}

/// The columns' types are those of the statements in sql.rs, so they are decoded unchecked.
impl Columns for PgRow {
    fn int8(&self, i: usize) -> Result<i64> {
        self.try_get_unchecked(i).map_err(db_err)
    }

    fn text(&self, i: usize) -> Result<Option<&str>> {
        self.try_get_unchecked(i).map_err(db_err)
    }
}

/// tokio-postgres checks the type against the statement's (a match on its id).
impl Columns for tokio_postgres::Row {
    fn int8(&self, i: usize) -> Result<i64> {
        self.try_get(i).map_err(corrupt)
    }

    fn text(&self, i: usize) -> Result<Option<&str>> {
        self.try_get(i).map_err(corrupt)
    }
}

pub(super) fn meta_of(key: &RecordKey, row: &PgRow) -> Result<RecordMeta> {
    Ok(RecordMeta {
        key: key.clone(),
        size: to_u64(row.try_get("size").map_err(db_err)?),
        content_type: row.try_get("content_type").map_err(db_err)?,
        version: version_of(row)?,
    })
}

/// Where a record row's body is (its `body` and `blob_id` columns).
pub(super) enum StoredBody {
    /// In the row itself.
    Inline(Bytes),
    /// In `record_chunks`, under this blob id.
    Chunked(i64),
}

pub(super) fn stored_body(row: &PgRow) -> Result<StoredBody> {
    Ok(
        match row.try_get::<Option<i64>, _>("blob_id").map_err(db_err)? {
            Some(blob_id) => StoredBody::Chunked(blob_id),
            None => {
                let body: Option<Vec<u8>> = row.try_get("body").map_err(db_err)?;
                StoredBody::Inline(Bytes::from(body.unwrap_or_default()))
            }
        },
    )
}

/// The stored version is the u64 ETag seed, kept in a signed column.
pub(super) fn version_of(row: &PgRow) -> Result<u64> {
    Ok(etag_seed(row.try_get("version").map_err(db_err)?))
}

/// The u64 ETag seed a signed `version` column holds, bit for bit.
pub(super) fn etag_seed(version: i64) -> u64 {
    u64::from_ne_bytes(version.to_ne_bytes())
}

/// A record's columns from a [`super::sql::RECORD_READ`] or [`super::sql::RECORD_READ_CACHED`]
/// row of the statement pool, as the pipelined reads decode them; `None` when the row found no
/// record (its `size` is null).
pub(super) fn record_row(row: &PgRow) -> Result<Option<RecordRow>> {
    let Some(size) = row.try_get::<Option<i64>, _>("size").map_err(db_err)? else {
        return Ok(None);
    };
    let body: Option<Vec<u8>> = row.try_get("body").map_err(db_err)?;
    Ok(Some(RecordRow {
        content_type: row.try_get("content_type").map_err(db_err)?,
        size,
        body: body.map(Bytes::from),
        blob_id: row.try_get("blob_id").map_err(db_err)?,
        version: row.try_get("version").map_err(db_err)?,
        object: row.try_get("object").map_err(db_err)?,
    }))
}

pub(super) fn user_from_row(row: &PgRow) -> Result<User> {
    Ok(User {
        id: UserId::parse(row.try_get("id").map_err(db_err)?).ok_or_else(|| corrupt("user id"))?,
        username: Username::parse(row.try_get("username").map_err(db_err)?).map_err(corrupt)?,
        created_at: to_u64(row.try_get("created_at").map_err(db_err)?),
        is_admin: row.try_get("is_admin").map_err(db_err)?,
        disabled: row.try_get("disabled").map_err(db_err)?,
    })
}

pub(super) fn token_row(row: &PgRow) -> Result<TokenGrant> {
    let hash: Vec<u8> = row.try_get("hash").map_err(db_err)?;
    Ok(TokenGrant {
        hash: <[u8; 32]>::try_from(hash.as_slice())
            .map(TokenHash)
            .map_err(|_| corrupt("token hash"))?,
        read_only: row.try_get("read_only").map_err(db_err)?,
    })
}

/// A `store_shares` row: (store, user, access).
pub(super) fn share_row(row: &PgRow) -> Result<(StoreId, UserId, ShareAccess)> {
    let store = StoreId::parse(row.try_get("store_id").map_err(db_err)?)
        .ok_or_else(|| corrupt("store id"))?;
    let user =
        UserId::parse(row.try_get("user_id").map_err(db_err)?).ok_or_else(|| corrupt("user id"))?;
    let access: String = row.try_get("access").map_err(db_err)?;
    Ok((store, user, ShareAccess::parse(&access).map_err(corrupt)?))
}

pub(super) fn store_from_row(row: &PgRow) -> Result<StoreInfo> {
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
