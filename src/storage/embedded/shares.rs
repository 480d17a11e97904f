//! Sharing a store with other users: the access codes, and the two tables that index shares by
//! store and by user.

use redb::WriteTransaction;

use super::schema::{SHARED_WITH, SHARES};
use super::stores::{load_store, read_store};
use super::watch::engine;
use crate::model::{ShareAccess, StoreId, UserId};
use crate::storage::{page_stores, Result, StorageError, StoreListQuery, StorePage};

pub(super) fn share_code(access: ShareAccess) -> u8 {
    match access {
        ShareAccess::Read => 1,
        ShareAccess::Write => 2,
    }
}

pub(super) fn share_of(code: u8) -> Result<ShareAccess> {
    match code {
        1 => Ok(ShareAccess::Read),
        2 => Ok(ShareAccess::Write),
        other => Err(StorageError::Corrupt(format!("share access {other}"))),
    }
}

pub(super) fn share_in(
    txn: &redb::ReadTransaction,
    store: &StoreId,
    user: &UserId,
) -> Result<Option<ShareAccess>> {
    let shares = txn.open_table(SHARES).map_err(engine)?;
    let found = shares
        .get((store.as_str(), user.as_str()))
        .map_err(engine)?
        .map(|v| v.value());
    found.map(share_of).transpose()
}

/// [`Administration::share_set`](crate::storage::Administration::share_set), in `txn`.
pub(super) fn set_share(
    txn: &WriteTransaction,
    store: &StoreId,
    user: &UserId,
    access: Option<ShareAccess>,
) -> Result<bool> {
    if load_store(txn, store.as_str())?.is_none() {
        return Ok(false);
    }
    let mut shares = txn.open_table(SHARES).map_err(engine)?;
    let mut shared_with = txn.open_table(SHARED_WITH).map_err(engine)?;
    let (by_store, by_user) = (
        (store.as_str(), user.as_str()),
        (user.as_str(), store.as_str()),
    );
    match access {
        Some(access) => {
            shares
                .insert(by_store, share_code(access))
                .map_err(engine)?;
            shared_with
                .insert(by_user, share_code(access))
                .map_err(engine)?;
        }
        None => {
            shares.remove(by_store).map_err(engine)?;
            shared_with.remove(by_user).map_err(engine)?;
        }
    }
    Ok(true)
}

/// [`Administration::shares_list`](crate::storage::Administration::shares_list), in `txn`.
pub(super) fn list_shares(
    txn: &redb::ReadTransaction,
    store: &StoreId,
) -> Result<Vec<(UserId, ShareAccess)>> {
    let shares = txn.open_table(SHARES).map_err(engine)?;
    let mut out = Vec::new();
    for entry in shares.range((store.as_str(), "")..).map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        let (s, u) = k.value();
        if s != store.as_str() {
            break;
        }
        let user = UserId::parse(u).ok_or_else(|| StorageError::Corrupt("user id".into()))?;
        out.push((user, share_of(v.value())?));
    }
    Ok(out)
}

/// [`RecordStore::stores_shared_with`](crate::storage::RecordStore::stores_shared_with), in `txn`.
pub(super) fn list_shared_with(
    txn: &redb::ReadTransaction,
    user: &UserId,
    query: &StoreListQuery,
) -> Result<StorePage> {
    let shared_with = txn.open_table(SHARED_WITH).map_err(engine)?;
    let mut stores = Vec::new();
    for entry in shared_with.range((user.as_str(), "")..).map_err(engine)? {
        let (k, _) = entry.map_err(engine)?;
        let (u, s) = k.value();
        if u != user.as_str() {
            break;
        }
        if let Some(store) = read_store(txn, s)? {
            // A disabled owner's stores answer nobody but administrators, listings included.
            if (query.unnamed || store.name.is_some()) && !store.owner_disabled {
                stores.push(store);
            }
        }
    }
    Ok(page_stores(stores, query))
}
