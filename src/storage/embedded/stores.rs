//! Stores: their rows and the indexes by name and by owner, kept in step by every write that
//! creates, renames, imports or deletes a store (deletion leaves the records to the purge).

use std::ops::Bound;

use super::blobs::PostCommit;
use super::codec::{decode, encode};
use super::engine::{
    owner_key, owner_key_store, pair, pair_prefix, split_pair, Read, Table, WriteTxn,
};
use super::hot::Changes;
use super::users::read_user;
use crate::model::{Millis, StoreId, StoreInfo, UserId};
use crate::storage::{Result, StorageError, StoreListQuery, StorePage, StoreUpdate};

/// A store's row as stored (`owner_disabled` not filled in).
pub(super) fn load_store(txn: &impl Read, id: &str) -> Result<Option<StoreInfo>> {
    let row = txn.get(Table::Stores, id.as_bytes())?;
    row.map(|v| decode(&v)).transpose()
}

/// Writes a store's row; every write of one goes through here and is reported in `changes`.
pub(super) fn save_store(
    txn: &mut WriteTxn<'_>,
    store: &StoreInfo,
    changes: &mut Changes,
) -> Result<()> {
    changes.rows.push(store.id.as_str().to_owned());
    txn.insert(Table::Stores, store.id.as_str(), encode(store)?);
    Ok(())
}

/// The store `id` as the API sees it: whether its owner is disabled filled in from the owner's row.
pub(super) fn read_store(txn: &impl Read, id: &str) -> Result<Option<StoreInfo>> {
    read_store_as(txn, id, None)
}

/// [`read_store`] for a request made by `caller`: when the caller owns the store, its owner is
/// known to be enabled (a disabled user's tokens authenticate nobody), and the owner's row is not
/// read (a table open and a get on every owner's GET).
pub(super) fn read_store_as(
    txn: &impl Read,
    id: &str,
    caller: Option<&UserId>,
) -> Result<Option<StoreInfo>> {
    let Some(mut store) = load_store(txn, id)? else {
        return Ok(None);
    };
    store.owner_disabled = caller != Some(&store.user_id)
        && read_user(txn, store.user_id.as_str())?.is_none_or(|u| u.disabled);
    Ok(Some(store))
}

pub(super) fn store_exists(txn: &impl Read, id: &str) -> Result<bool> {
    txn.contains(Table::Stores, id.as_bytes())
}

/// The ids of the stores `owner` owns, oldest first.
fn owned_by(txn: &impl Read, owner: &str) -> Result<Vec<(String, bool)>> {
    let mut owned = Vec::new();
    for entry in txn.rows(Table::StoresByOwner, &pair_prefix(owner), Bound::Unbounded) {
        let (k, named) = entry?;
        owned.push((owner_key_store(&k)?.to_owned(), named.first() == Some(&1)));
    }
    Ok(owned)
}

/// Deletes every store `owner` owns (a user being deleted), in `txn`.
pub(super) fn delete_stores_of(
    txn: &mut WriteTxn<'_>,
    owner: &UserId,
    post: &mut PostCommit,
) -> Result<()> {
    for (store, _) in owned_by(txn, owner.as_str())? {
        delete_store_in(txn, &store, post)?;
    }
    Ok(())
}

/// Removes a store (its records are purged in the background) and its shares, in `txn`.
pub(super) fn delete_store_in(
    txn: &mut WriteTxn<'_>,
    id: &str,
    post: &mut PostCommit,
) -> Result<bool> {
    let Some(store) = load_store(txn, id)? else {
        return Ok(false);
    };
    post.changes.stores.push(id.to_owned());
    txn.remove(Table::Stores, id);
    if let Some(name) = &store.name {
        txn.remove(
            Table::StoreNames,
            pair(store.user_id.as_str(), name.as_str()),
        );
    }
    txn.remove(
        Table::StoresByOwner,
        owner_key(store.user_id.as_str(), store.created_at, store.id.as_str()),
    );
    let mut with = Vec::new();
    for entry in txn.rows(Table::Shares, &pair_prefix(id), Bound::Unbounded) {
        let (k, _) = entry?;
        with.push(split_pair(&k)?.1.to_owned());
    }
    for user in &with {
        txn.remove(Table::Shares, pair(id, user));
        txn.remove(Table::SharedWith, pair(user, id));
    }
    if store.stats.record_count > 0 {
        txn.insert(Table::Purge, id, &[][..]);
        post.purge_scheduled = true;
    }
    Ok(true)
}

/// [`RecordStore::store_get_or_create`](crate::storage::RecordStore::store_get_or_create), in `txn`.
pub(super) fn get_or_create_store(
    txn: &mut WriteTxn<'_>,
    store: StoreInfo,
    changes: &mut Changes,
) -> Result<(StoreInfo, bool)> {
    if let Some(name) = &store.name {
        let key = pair(store.user_id.as_str(), name.as_str());
        if let Some(id) = txn.get(Table::StoreNames, &key)? {
            let id = String::from_utf8_lossy(&id).into_owned();
            let found = load_store(txn, &id)?.ok_or_else(|| {
                StorageError::Corrupt(format!("name index points at missing store {id}"))
            })?;
            return Ok((found, false));
        }
        txn.insert(Table::StoreNames, key, store.id.as_str());
    }
    index_by_owner(txn, &store);
    save_store(txn, &store, changes)?;
    Ok((store, true))
}

/// Puts `store` in its owner's listing (again: its `named` flag changes with a rename).
fn index_by_owner(txn: &mut WriteTxn<'_>, store: &StoreInfo) {
    txn.insert(
        Table::StoresByOwner,
        owner_key(store.user_id.as_str(), store.created_at, store.id.as_str()),
        &[u8::from(store.name.is_some())][..],
    );
}

/// [`RecordStore::store_update`](crate::storage::RecordStore::store_update), in `txn`.
pub(super) fn update_store(
    txn: &mut WriteTxn<'_>,
    id: &StoreId,
    mut update: StoreUpdate,
    changes: &mut Changes,
) -> Result<Option<StoreInfo>> {
    let Some(mut store) = load_store(txn, id.as_str())? else {
        return Ok(None);
    };
    if let Some(new_name) = update.name.take() {
        if new_name != store.name {
            let owner = store.user_id.as_str();
            if let Some(name) = &new_name {
                if txn.contains(Table::StoreNames, &pair(owner, name.as_str()))? {
                    return Err(StorageError::NameTaken);
                }
            }
            if let Some(old) = &store.name {
                txn.remove(Table::StoreNames, pair(owner, old.as_str()));
            }
            if let Some(name) = &new_name {
                txn.insert(
                    Table::StoreNames,
                    pair(owner, name.as_str()),
                    store.id.as_str(),
                );
            }
            store.name = new_name;
            index_by_owner(txn, &store);
        }
    }
    update.apply_settings(&mut store);
    save_store(txn, &store, changes)?;
    Ok(Some(store))
}

/// [`BulkTransfer::store_import`](crate::storage::BulkTransfer::store_import), in `txn`.
pub(super) fn import_store(
    txn: &mut WriteTxn<'_>,
    store: &StoreInfo,
    post: &mut PostCommit,
) -> Result<()> {
    post.changes.stores.push(store.id.as_str().to_owned());
    if let Some(name) = &store.name {
        let holder = txn.get(
            Table::StoreNames,
            &pair(store.user_id.as_str(), name.as_str()),
        )?;
        if holder.is_some_and(|id| &*id != store.id.as_str().as_bytes()) {
            return Err(StorageError::NameTaken);
        }
    }
    if let Some(old) = load_store(txn, store.id.as_str())? {
        if let Some(old_name) = &old.name {
            txn.remove(
                Table::StoreNames,
                pair(old.user_id.as_str(), old_name.as_str()),
            );
        }
        txn.remove(
            Table::StoresByOwner,
            owner_key(old.user_id.as_str(), old.created_at, old.id.as_str()),
        );
    }
    if let Some(name) = &store.name {
        txn.insert(
            Table::StoreNames,
            pair(store.user_id.as_str(), name.as_str()),
            store.id.as_str(),
        );
    }
    index_by_owner(txn, store);
    save_store(txn, store, &mut post.changes)
}

/// [`RecordStore::stores_list`](crate::storage::RecordStore::stores_list), in `txn`.
pub(super) fn list_stores(
    txn: &impl Read,
    owner: &UserId,
    query: &StoreListQuery,
) -> Result<StorePage> {
    let mut owned = owned_by(txn, owner.as_str())?;
    if query.desc {
        owned.reverse();
    }
    let mut ids = Vec::new();
    let mut total = 0u64;
    for (id, named) in owned {
        if !query.unnamed && !named {
            continue;
        }
        if total >= query.offset && (ids.len() as u64) < query.limit {
            ids.push(id);
        }
        total += 1;
    }
    let mut items = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(store) = read_store(txn, &id)? {
            items.push(store);
        }
    }
    Ok(StorePage { total, items })
}

/// [`Housekeeping::stores_unnamed_idle`](crate::storage::Housekeeping::stores_unnamed_idle), in `txn`.
pub(super) fn unnamed_idle_stores(
    txn: &impl Read,
    idle_since: Millis,
    limit: usize,
) -> Result<Vec<StoreId>> {
    let mut idle = Vec::new();
    for row in txn.all(Table::Stores) {
        let (_, value) = row?;
        let store: StoreInfo = decode(&value)?;
        if store.name.is_none() && store.accessed_at < idle_since {
            idle.push((store.accessed_at, store.id));
        }
    }
    idle.sort();
    Ok(idle.into_iter().take(limit).map(|(_, id)| id).collect())
}
