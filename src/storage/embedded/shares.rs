//! Sharing a store with other users: the access codes, and the two tables that index shares by
//! store and by user.

use std::ops::Bound;

use super::engine::{pair, pair_prefix, split_pair, Read, Table, WriteTxn};
use super::stores::{read_store, store_exists};
use crate::model::{ShareAccess, StoreId, UserId};
use crate::storage::{page_stores, Result, StorageError, StoreListQuery, StorePage};

pub(super) fn share_code(access: ShareAccess) -> u8 {
    match access {
        ShareAccess::Read => 1,
        ShareAccess::Write => 2,
    }
}

fn share_of(code: u8) -> Result<ShareAccess> {
    match code {
        1 => Ok(ShareAccess::Read),
        2 => Ok(ShareAccess::Write),
        other => Err(StorageError::Corrupt(format!("share access {other}"))),
    }
}

/// The access code in a row of [`Table::Shares`] or [`Table::SharedWith`].
fn code_of(value: &[u8]) -> Result<ShareAccess> {
    match value {
        [code] => share_of(*code),
        _ => Err(StorageError::Corrupt("share access".into())),
    }
}

pub(super) fn share_in(
    txn: &impl Read,
    store: &StoreId,
    user: &UserId,
) -> Result<Option<ShareAccess>> {
    let found = txn.get(Table::Shares, &pair(store.as_str(), user.as_str()))?;
    found.map(|v| code_of(&v)).transpose()
}

/// [`Administration::share_set`](crate::storage::Administration::share_set), in `txn`.
pub(super) fn set_share(
    txn: &mut WriteTxn<'_>,
    store: &StoreId,
    user: &UserId,
    access: Option<ShareAccess>,
) -> Result<bool> {
    if !store_exists(txn, store.as_str())? {
        return Ok(false);
    }
    let (by_store, by_user) = (
        pair(store.as_str(), user.as_str()),
        pair(user.as_str(), store.as_str()),
    );
    match access {
        Some(access) => {
            let code = [share_code(access)];
            txn.insert(Table::Shares, by_store, &code[..]);
            txn.insert(Table::SharedWith, by_user, &code[..]);
        }
        None => {
            txn.remove(Table::Shares, by_store);
            txn.remove(Table::SharedWith, by_user);
        }
    }
    Ok(true)
}

/// [`Administration::shares_list`](crate::storage::Administration::shares_list), in `txn`.
pub(super) fn list_shares(txn: &impl Read, store: &StoreId) -> Result<Vec<(UserId, ShareAccess)>> {
    let mut out = Vec::new();
    for entry in txn.rows(
        Table::Shares,
        &pair_prefix(store.as_str()),
        Bound::Unbounded,
    ) {
        let (k, v) = entry?;
        let (_, u) = split_pair(&k)?;
        let user = UserId::parse(u).ok_or_else(|| StorageError::Corrupt("user id".into()))?;
        out.push((user, code_of(&v)?));
    }
    Ok(out)
}

/// Every share: (store, user, access), for snapshots.
pub(super) fn all_shares(txn: &impl Read) -> Result<Vec<(StoreId, UserId, ShareAccess)>> {
    let mut out = Vec::new();
    for entry in txn.all(Table::Shares) {
        let (k, v) = entry?;
        let (s, u) = split_pair(&k)?;
        let corrupt = || StorageError::Corrupt("share ids".into());
        out.push((
            StoreId::parse(s).ok_or_else(corrupt)?,
            UserId::parse(u).ok_or_else(corrupt)?,
            code_of(&v)?,
        ));
    }
    Ok(out)
}

/// [`RecordStore::stores_shared_with`](crate::storage::RecordStore::stores_shared_with), in `txn`.
pub(super) fn list_shared_with(
    txn: &impl Read,
    user: &UserId,
    query: &StoreListQuery,
) -> Result<StorePage> {
    let mut stores = Vec::new();
    for entry in txn.rows(
        Table::SharedWith,
        &pair_prefix(user.as_str()),
        Bound::Unbounded,
    ) {
        let (k, _) = entry?;
        let (_, s) = split_pair(&k)?;
        if let Some(store) = read_store(txn, s)? {
            // A disabled owner's stores answer nobody but administrators, listings included.
            if (query.unnamed || store.name.is_some()) && !store.owner_disabled {
                stores.push(store);
            }
        }
    }
    Ok(page_stores(stores, query))
}
