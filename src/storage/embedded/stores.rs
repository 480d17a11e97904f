//! Stores: their rows and the indexes by name and by owner, kept in step by every write that
//! creates, renames, imports or deletes a store (deletion leaves the records to the purge).

use redb::{ReadableTable, WriteTransaction};

use super::blobs::PostCommit;
use super::codec::{decode, encode};
use super::hot::Changes;
use super::schema::{PURGE, SHARED_WITH, SHARES, STORES, STORES_BY_OWNER, STORE_NAMES};
use super::users::read_user;
use super::watch::engine;
use crate::model::{Millis, StoreId, StoreInfo, UserId};
use crate::storage::{Result, StorageError, StoreListQuery, StorePage, StoreUpdate};

pub(super) fn load_store(txn: &WriteTransaction, id: &str) -> Result<Option<StoreInfo>> {
    let table = txn.open_table(STORES).map_err(engine)?;
    let row = table.get(id).map_err(engine)?;
    row.map(|v| decode(v.value())).transpose()
}

/// Writes a store's row; every write of one goes through here and is reported in `changes`.
pub(super) fn save_store(
    txn: &WriteTransaction,
    store: &StoreInfo,
    changes: &mut Changes,
) -> Result<()> {
    changes.rows.push(store.id.as_str().to_owned());
    let mut table = txn.open_table(STORES).map_err(engine)?;
    table
        .insert(store.id.as_str(), encode(store)?.as_slice())
        .map_err(engine)?;
    Ok(())
}

/// The store `id` as the API sees it: whether its owner is disabled filled in from the owner's row.
pub(super) fn read_store(txn: &redb::ReadTransaction, id: &str) -> Result<Option<StoreInfo>> {
    read_store_as(txn, id, None)
}

/// [`read_store`] for a request made by `caller`: when the caller owns the store, its owner is
/// known to be enabled (a disabled user's tokens authenticate nobody), and the owner's row is not
/// read (a table open and a get on every owner's GET).
pub(super) fn read_store_as(
    txn: &redb::ReadTransaction,
    id: &str,
    caller: Option<&UserId>,
) -> Result<Option<StoreInfo>> {
    let table = txn.open_table(STORES).map_err(engine)?;
    let row = table.get(id).map_err(engine)?;
    let Some(mut store) = row.map(|v| decode::<StoreInfo>(v.value())).transpose()? else {
        return Ok(None);
    };
    store.owner_disabled = caller != Some(&store.user_id)
        && read_user(txn, store.user_id.as_str())?.is_none_or(|u| u.disabled);
    Ok(Some(store))
}

pub(super) fn store_exists(txn: &redb::ReadTransaction, id: &str) -> Result<bool> {
    let table = txn.open_table(STORES).map_err(engine)?;
    Ok(table.get(id).map_err(engine)?.is_some())
}

/// Deletes every store `owner` owns (a user being deleted), in `txn`.
pub(super) fn delete_stores_of(
    txn: &WriteTransaction,
    owner: &UserId,
    post: &mut PostCommit,
) -> Result<()> {
    let mut owned = Vec::new();
    for entry in txn
        .open_table(STORES_BY_OWNER)
        .map_err(engine)?
        .range((owner.as_str(), 0u64, "")..=(owner.as_str(), u64::MAX, "~"))
        .map_err(engine)?
    {
        let (k, _) = entry.map_err(engine)?;
        owned.push(k.value().2.to_owned());
    }
    for store in owned {
        delete_store_in(txn, &store, post)?;
    }
    Ok(())
}

/// Removes a store (its records are purged in the background) and its shares, in `txn`.
pub(super) fn delete_store_in(
    txn: &WriteTransaction,
    id: &str,
    post: &mut PostCommit,
) -> Result<bool> {
    let Some(store) = load_store(txn, id)? else {
        return Ok(false);
    };
    post.changes.stores.push(id.to_owned());
    txn.open_table(STORES)
        .map_err(engine)?
        .remove(id)
        .map_err(engine)?;
    if let Some(name) = &store.name {
        txn.open_table(STORE_NAMES)
            .map_err(engine)?
            .remove((store.user_id.as_str(), name.as_str()))
            .map_err(engine)?;
    }
    txn.open_table(STORES_BY_OWNER)
        .map_err(engine)?
        .remove((store.user_id.as_str(), store.created_at, store.id.as_str()))
        .map_err(engine)?;
    let mut shares = txn.open_table(SHARES).map_err(engine)?;
    let mut with = Vec::new();
    for entry in shares.range((id, "")..).map_err(engine)? {
        let (k, _) = entry.map_err(engine)?;
        let (s, u) = k.value();
        if s != id {
            break;
        }
        with.push(u.to_owned());
    }
    let mut shared_with = txn.open_table(SHARED_WITH).map_err(engine)?;
    for user in &with {
        shares.remove((id, user.as_str())).map_err(engine)?;
        shared_with.remove((user.as_str(), id)).map_err(engine)?;
    }
    if store.stats.record_count > 0 {
        txn.open_table(PURGE)
            .map_err(engine)?
            .insert(id, ())
            .map_err(engine)?;
        post.purge_scheduled = true;
    }
    Ok(true)
}

/// [`RecordStore::store_get_or_create`](crate::storage::RecordStore::store_get_or_create), in `txn`.
pub(super) fn get_or_create_store(
    txn: &WriteTransaction,
    store: StoreInfo,
    changes: &mut Changes,
) -> Result<(StoreInfo, bool)> {
    let mut names = txn.open_table(STORE_NAMES).map_err(engine)?;
    if let Some(name) = &store.name {
        let key = (store.user_id.as_str(), name.as_str());
        let existing = names
            .get(key)
            .map_err(engine)?
            .map(|v| v.value().to_owned());
        if let Some(id) = existing {
            let found = load_store(txn, &id)?.ok_or_else(|| {
                StorageError::Corrupt(format!("name index points at missing store {id}"))
            })?;
            return Ok((found, false));
        }
        names.insert(key, store.id.as_str()).map_err(engine)?;
    }
    txn.open_table(STORES_BY_OWNER)
        .map_err(engine)?
        .insert(
            (store.user_id.as_str(), store.created_at, store.id.as_str()),
            store.name.is_some(),
        )
        .map_err(engine)?;
    save_store(txn, &store, changes)?;
    Ok((store, true))
}

/// [`RecordStore::store_update`](crate::storage::RecordStore::store_update), in `txn`.
pub(super) fn update_store(
    txn: &WriteTransaction,
    id: &StoreId,
    mut update: StoreUpdate,
    changes: &mut Changes,
) -> Result<Option<StoreInfo>> {
    let Some(mut store) = load_store(txn, id.as_str())? else {
        return Ok(None);
    };
    if let Some(new_name) = update.name.take() {
        if new_name != store.name {
            let mut names = txn.open_table(STORE_NAMES).map_err(engine)?;
            if let Some(name) = &new_name {
                if names
                    .get((store.user_id.as_str(), name.as_str()))
                    .map_err(engine)?
                    .is_some()
                {
                    return Err(StorageError::NameTaken);
                }
            }
            if let Some(old) = &store.name {
                names
                    .remove((store.user_id.as_str(), old.as_str()))
                    .map_err(engine)?;
            }
            if let Some(name) = &new_name {
                names
                    .insert((store.user_id.as_str(), name.as_str()), store.id.as_str())
                    .map_err(engine)?;
            }
            txn.open_table(STORES_BY_OWNER)
                .map_err(engine)?
                .insert(
                    (store.user_id.as_str(), store.created_at, store.id.as_str()),
                    new_name.is_some(),
                )
                .map_err(engine)?;
            store.name = new_name;
        }
    }
    update.apply_settings(&mut store);
    save_store(txn, &store, changes)?;
    Ok(Some(store))
}

/// [`BulkTransfer::store_import`](crate::storage::BulkTransfer::store_import), in `txn`.
pub(super) fn import_store(
    txn: &WriteTransaction,
    store: &StoreInfo,
    post: &mut PostCommit,
) -> Result<()> {
    post.changes.stores.push(store.id.as_str().to_owned());
    let mut names = txn.open_table(STORE_NAMES).map_err(engine)?;
    if let Some(name) = &store.name {
        let holder = names
            .get((store.user_id.as_str(), name.as_str()))
            .map_err(engine)?
            .map(|v| v.value().to_owned());
        if holder.is_some_and(|id| id != store.id.as_str()) {
            return Err(StorageError::NameTaken);
        }
    }
    let mut by_owner = txn.open_table(STORES_BY_OWNER).map_err(engine)?;
    if let Some(old) = load_store(txn, store.id.as_str())? {
        if let Some(old_name) = &old.name {
            names
                .remove((old.user_id.as_str(), old_name.as_str()))
                .map_err(engine)?;
        }
        by_owner
            .remove((old.user_id.as_str(), old.created_at, old.id.as_str()))
            .map_err(engine)?;
    }
    if let Some(name) = &store.name {
        names
            .insert((store.user_id.as_str(), name.as_str()), store.id.as_str())
            .map_err(engine)?;
    }
    by_owner
        .insert(
            (store.user_id.as_str(), store.created_at, store.id.as_str()),
            store.name.is_some(),
        )
        .map_err(engine)?;
    drop((names, by_owner));
    save_store(txn, store, &mut post.changes)
}

/// [`RecordStore::stores_list`](crate::storage::RecordStore::stores_list), in `txn`.
pub(super) fn list_stores(
    txn: &redb::ReadTransaction,
    owner: &UserId,
    query: &StoreListQuery,
) -> Result<StorePage> {
    let index = txn.open_table(STORES_BY_OWNER).map_err(engine)?;
    let range = index
        .range((owner.as_str(), 0u64, "")..=(owner.as_str(), u64::MAX, "~"))
        .map_err(engine)?;
    let entries: Box<dyn Iterator<Item = _>> = if query.desc {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let mut ids = Vec::new();
    let mut total = 0u64;
    for entry in entries {
        let (k, named) = entry.map_err(engine)?;
        if !query.unnamed && !named.value() {
            continue;
        }
        if total >= query.offset && (ids.len() as u64) < query.limit {
            ids.push(k.value().2.to_owned());
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
    txn: &redb::ReadTransaction,
    idle_since: Millis,
    limit: usize,
) -> Result<Vec<StoreId>> {
    let table = txn.open_table(STORES).map_err(engine)?;
    let mut idle = Vec::new();
    for row in table.iter().map_err(engine)? {
        let (_, value) = row.map_err(engine)?;
        let store: StoreInfo = decode(value.value())?;
        if store.name.is_none() && store.accessed_at < idle_since {
            idle.push((store.accessed_at, store.id));
        }
    }
    idle.sort();
    Ok(idle.into_iter().take(limit).map(|(_, id)| id).collect())
}
