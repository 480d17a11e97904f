//! The database's layout: its tables, the format version, and the migrations that bring an older
//! data directory up to it at open.

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::Deserialize;

use super::codec::{decode, encode};
use super::watch::engine;
use crate::model::{Millis, StoreId, StoreInfo, StoreName, User, UserId, Username};
use crate::storage::{Result, StorageError};

/// Bumped whenever the on-disk layout changes incompatibly; older directories are migrated at
/// open (version 2 added `disabled` to users).
pub const FORMAT_VERSION: u32 = 3;

/// A user as format version 1 stored it.
#[derive(Deserialize)]
struct UserV1 {
    id: UserId,
    username: Username,
    created_at: Millis,
    is_admin: bool,
}

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
pub(super) const USERNAMES: TableDefinition<&str, &str> = TableDefinition::new("usernames");
pub(super) const TOKENS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("tokens");
/// Read-only tokens: token hash → user id (full-access ones live in `TOKENS`).
pub(super) const READ_ONLY_TOKENS: TableDefinition<&[u8; 32], &str> =
    TableDefinition::new("read_only_tokens");
/// (store id, user id) → access it is shared with ([`share_code`](super::shares::share_code)).
pub(super) const SHARES: TableDefinition<(&str, &str), u8> = TableDefinition::new("shares");
/// (user id, store id) → access: the stores shared with a user.
pub(super) const SHARED_WITH: TableDefinition<(&str, &str), u8> =
    TableDefinition::new("shared_with");
pub(super) const STORES: TableDefinition<&str, &[u8]> = TableDefinition::new("stores");
/// (owner id, name) → store id
pub(super) const STORE_NAMES: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("store_names");
/// (owner id, createdAt, store id) → is named; the order of the store listing.
pub(super) const STORES_BY_OWNER: TableDefinition<(&str, u64, &str), bool> =
    TableDefinition::new("stores_by_owner");
/// (store id, key) → [`RecordHeader`](super::codec::RecordHeader) followed by the inline body, if
/// any.
pub(super) const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
/// Deleted stores whose records are still being removed.
pub(super) const PURGE: TableDefinition<&str, ()> = TableDefinition::new("purge");

/// Creates missing tables and checks the format version. Returns whether a purge is pending.
pub(super) fn init_tables(db: &Database) -> Result<bool> {
    let txn = db.begin_write().map_err(engine)?;
    let purge_pending;
    {
        let mut meta = txn.open_table(META).map_err(engine)?;
        let found = meta
            .get("format_version")
            .map_err(engine)?
            .map(|v| v.value().to_vec());
        match found {
            None => {
                meta.insert("format_version", FORMAT_VERSION.to_le_bytes().as_slice())
                    .map_err(engine)?;
            }
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_le_bytes)
                    .map_err(|_| StorageError::Corrupt("format_version".into()))?;
                if found == 1 || found == 2 {
                    if found == 1 {
                        migrate_users_v1(&txn)?;
                    }
                    migrate_stores_v2(&txn)?;
                    meta.insert("format_version", FORMAT_VERSION.to_le_bytes().as_slice())
                        .map_err(engine)?;
                    tracing::info!(
                        "migrated the data directory to format version {FORMAT_VERSION}"
                    );
                } else if found != FORMAT_VERSION {
                    return Err(StorageError::UnsupportedFormat {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
            }
        }
        txn.open_table(USERS).map_err(engine)?;
        txn.open_table(USERNAMES).map_err(engine)?;
        txn.open_table(TOKENS).map_err(engine)?;
        txn.open_table(READ_ONLY_TOKENS).map_err(engine)?;
        txn.open_table(SHARES).map_err(engine)?;
        txn.open_table(SHARED_WITH).map_err(engine)?;
        txn.open_table(STORES).map_err(engine)?;
        txn.open_table(STORE_NAMES).map_err(engine)?;
        txn.open_table(STORES_BY_OWNER).map_err(engine)?;
        txn.open_table(RECORDS).map_err(engine)?;
        purge_pending = !txn
            .open_table(PURGE)
            .map_err(engine)?
            .is_empty()
            .map_err(engine)?;
    }
    txn.commit().map_err(engine)?;
    Ok(purge_pending)
}

/// A store as versions 1 and 2 encoded it: without `title`.
#[derive(serde::Deserialize)]
struct StoreV2 {
    id: StoreId,
    name: Option<StoreName>,
    user_id: UserId,
    created_at: Millis,
    modified_at: Millis,
    accessed_at: Millis,
    general_access: crate::model::GeneralAccess,
    url_signing_secret_key: String,
    schema: Option<String>,
    stats: crate::model::StoreStats,
}

/// Version 2 → 3: stores gain `title` (none).
fn migrate_stores_v2(txn: &WriteTransaction) -> Result<()> {
    let mut stores = txn.open_table(STORES).map_err(engine)?;
    let mut upgraded = Vec::new();
    for entry in stores.iter().map_err(engine)? {
        let (_, v) = entry.map_err(engine)?;
        let old: StoreV2 = decode(v.value())?;
        upgraded.push(StoreInfo {
            id: old.id,
            name: old.name,
            user_id: old.user_id,
            created_at: old.created_at,
            modified_at: old.modified_at,
            accessed_at: old.accessed_at,
            general_access: old.general_access,
            url_signing_secret_key: old.url_signing_secret_key,
            schema: old.schema,
            stats: old.stats,
            title: None,
            owner_disabled: false,
        });
    }
    for store in upgraded {
        stores
            .insert(store.id.as_str(), encode(&store)?.as_slice())
            .map_err(engine)?;
    }
    Ok(())
}

/// Version 1 → 2: users gain `disabled` (false).
fn migrate_users_v1(txn: &WriteTransaction) -> Result<()> {
    let mut users = txn.open_table(USERS).map_err(engine)?;
    let mut upgraded = Vec::new();
    for entry in users.iter().map_err(engine)? {
        let (_, v) = entry.map_err(engine)?;
        let old: UserV1 = decode(v.value())?;
        upgraded.push(User {
            id: old.id,
            username: old.username,
            created_at: old.created_at,
            is_admin: old.is_admin,
            disabled: false,
        });
    }
    for user in upgraded {
        users
            .insert(user.id.as_str(), encode(&user)?.as_slice())
            .map_err(engine)?;
    }
    Ok(())
}
