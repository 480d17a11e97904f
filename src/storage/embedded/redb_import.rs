//! Data directories of formats 1–3 kept everything in one redb database, `kvstore.redb`: at open
//! it is brought up to format 3 in place and copied, table by table, into the fjall engine (see
//! [`init_tables`](super::schema::init_tables)), after which the file is removed.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Deserialize;

use super::codec::{decode, decode_record, encode, RecordHeader};
use super::engine::{owner_key, pair, Engine, Table};
use crate::model::{Millis, StoreId, StoreInfo, StoreName, User, UserId, Username};
use crate::storage::{Result, StorageError};

/// The redb database of formats 1–3, in the data directory.
pub(super) const REDB_FILE: &str = "kvstore.redb";

/// The last format kept in redb.
const LAST_REDB_FORMAT: u32 = 3;

fn redb_error<E: Into<redb::Error>>(e: E) -> StorageError {
    match e.into() {
        redb::Error::DatabaseAlreadyOpen => StorageError::Locked,
        other => StorageError::Engine(format!("{REDB_FILE}: {other}")),
    }
}

/// A user as format version 1 stored it.
#[derive(Deserialize)]
struct UserV1 {
    id: UserId,
    username: Username,
    created_at: Millis,
    is_admin: bool,
}

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const USERNAMES: TableDefinition<&str, &str> = TableDefinition::new("usernames");
const TOKENS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("tokens");
const READ_ONLY_TOKENS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("read_only_tokens");
const SHARES: TableDefinition<(&str, &str), u8> = TableDefinition::new("shares");
const SHARED_WITH: TableDefinition<(&str, &str), u8> = TableDefinition::new("shared_with");
const STORES: TableDefinition<&str, &[u8]> = TableDefinition::new("stores");
const STORE_NAMES: TableDefinition<(&str, &str), &str> = TableDefinition::new("store_names");
const STORES_BY_OWNER: TableDefinition<(&str, u64, &str), bool> =
    TableDefinition::new("stores_by_owner");
/// (store id, key) → header followed by the inline body, if any.
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
const PURGE: TableDefinition<&str, ()> = TableDefinition::new("purge");

/// Copies the redb database at `path` into `engine` (which may hold a part of an earlier copy).
pub(super) fn import_redb(path: &Path, engine: &Engine) -> Result<()> {
    let db = Database::open(path).map_err(redb_error)?;
    upgrade(&db)?;
    let txn = db.begin_read().map_err(redb_error)?;
    let mut copy = Copy {
        engine,
        txn: engine.write(false),
        rows: 0,
        bytes: 0,
    };
    let text = |s: &str| s.as_bytes().to_vec();
    each(&txn, USERS, |k, v| {
        copy.put(Table::Users, text(k), v.to_vec())
    })?;
    each(&txn, USERNAMES, |k, v| {
        copy.put(Table::Usernames, text(k), text(v))
    })?;
    each(&txn, TOKENS, |k, v| {
        copy.put(Table::Tokens, k.to_vec(), text(v))
    })?;
    each(&txn, READ_ONLY_TOKENS, |k, v| {
        copy.put(Table::ReadOnlyTokens, k.to_vec(), text(v))
    })?;
    each(&txn, SHARES, |(s, u), v| {
        copy.put(Table::Shares, pair(s, u), vec![v])
    })?;
    each(&txn, SHARED_WITH, |(u, s), v| {
        copy.put(Table::SharedWith, pair(u, s), vec![v])
    })?;
    each(&txn, STORES, |k, v| {
        copy.put(Table::Stores, text(k), v.to_vec())
    })?;
    each(&txn, STORE_NAMES, |(owner, name), v| {
        copy.put(Table::StoreNames, pair(owner, name), text(v))
    })?;
    each(
        &txn,
        STORES_BY_OWNER,
        |(owner, created_at, store), named| {
            let key = owner_key(owner, created_at, store);
            copy.put(Table::StoresByOwner, key, vec![u8::from(named)])
        },
    )?;
    each(&txn, RECORDS, |(store, key), v| {
        let (header, inline): (RecordHeader, &[u8]) = decode_record(v)?;
        let row = pair(store, key);
        if header.blob.is_none() {
            copy.put(Table::Bodies, row.clone(), inline.to_vec())?;
        }
        copy.put(Table::Records, row, encode(&header)?)
    })?;
    each(&txn, PURGE, |k, ()| {
        copy.put(Table::Purge, text(k), Vec::new())
    })?;
    copy.txn.commit()?;
    engine.persist()
}

/// Calls `f` with every row of a table (none when the database never made it).
fn each<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    definition: TableDefinition<K, V>,
    mut f: impl FnMut(K::SelfType<'_>, V::SelfType<'_>) -> Result<()>,
) -> Result<()> {
    let table = match txn.open_table(definition) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(redb_error(e)),
    };
    for entry in table.iter().map_err(redb_error)? {
        let (k, v) = entry.map_err(redb_error)?;
        f(k.value(), v.value())?;
    }
    Ok(())
}

/// Rows written into the engine in commits of bounded size.
struct Copy<'e> {
    engine: &'e Engine,
    txn: super::engine::WriteTxn<'e>,
    rows: usize,
    bytes: usize,
}

impl Copy<'_> {
    /// Rows and bytes a commit takes at most: the writes wait in memory until it.
    const MAX_ROWS: usize = 10_000;
    const MAX_BYTES: usize = 16 * 1024 * 1024;

    fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.rows += 1;
        self.bytes += key.len() + value.len();
        self.txn.insert(table, key, value);
        if self.rows >= Self::MAX_ROWS || self.bytes >= Self::MAX_BYTES {
            let full = std::mem::replace(&mut self.txn, self.engine.write(false));
            full.commit()?;
            (self.rows, self.bytes) = (0, 0);
        }
        Ok(())
    }
}

/// Brings a redb database of format 1 or 2 up to format 3, in place.
fn upgrade(db: &Database) -> Result<()> {
    let txn = db.begin_write().map_err(redb_error)?;
    {
        let mut meta = txn.open_table(META).map_err(redb_error)?;
        let found = meta
            .get("format_version")
            .map_err(redb_error)?
            .map(|v| v.value().to_vec());
        let Some(bytes) = found else {
            return Err(StorageError::Corrupt(format!(
                "{REDB_FILE} has no format version"
            )));
        };
        let found = <[u8; 4]>::try_from(bytes.as_slice())
            .map(u32::from_le_bytes)
            .map_err(|_| StorageError::Corrupt("format_version".into()))?;
        match found {
            1 | 2 => {
                if found == 1 {
                    migrate_users_v1(&txn)?;
                }
                migrate_stores_v2(&txn)?;
                meta.insert("format_version", LAST_REDB_FORMAT.to_le_bytes().as_slice())
                    .map_err(redb_error)?;
            }
            LAST_REDB_FORMAT => {}
            found => {
                return Err(StorageError::UnsupportedFormat {
                    found,
                    supported: super::schema::FORMAT_VERSION,
                })
            }
        }
    }
    txn.commit().map_err(redb_error)
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
    let mut stores = txn.open_table(STORES).map_err(redb_error)?;
    let mut upgraded = Vec::new();
    for entry in stores.iter().map_err(redb_error)? {
        let (_, v) = entry.map_err(redb_error)?;
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
            .map_err(redb_error)?;
    }
    Ok(())
}

/// Version 1 → 2: users gain `disabled` (false).
fn migrate_users_v1(txn: &WriteTransaction) -> Result<()> {
    let mut users = txn.open_table(USERS).map_err(redb_error)?;
    let mut upgraded = Vec::new();
    for entry in users.iter().map_err(redb_error)? {
        let (_, v) = entry.map_err(redb_error)?;
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
            .map_err(redb_error)?;
    }
    Ok(())
}
