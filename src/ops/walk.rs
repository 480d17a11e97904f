//! Reading a backend whole, a page at a time, for the services that carry everything somewhere
//! else (`kvstore copy`, `kvstore export`): every store of a user, and every key of a store.
//! Pages bound what is held in memory however large the backend is.

use crate::model::{RecordMeta, StoreId, StoreInfo, UserId};
use crate::storage::{KeyListQuery, StorageError, Store, StoreListQuery};

/// Stores or keys listed per call.
const PAGE: usize = 1000;

/// Every store of `owner`, named and unnamed, oldest first.
pub async fn stores_of(store: &dyn Store, owner: &UserId) -> Result<Vec<StoreInfo>, StorageError> {
    let mut stores = Vec::new();
    loop {
        let query = StoreListQuery {
            offset: stores.len() as u64,
            limit: PAGE as u64,
            desc: false,
            unnamed: true,
        };
        let page = store.stores_list(owner, &query).await?;
        let done =
            page.items.is_empty() || stores.len() as u64 + page.items.len() as u64 >= page.total;
        stores.extend(page.items);
        if done {
            return Ok(stores);
        }
    }
}

/// A store's keys in order, one page per [`KeyPages::next`]. Records written meanwhile may or may
/// not be seen, as in any listing; a store deleted meanwhile ends the walk.
pub struct KeyPages<'a> {
    store: &'a dyn Store,
    id: &'a StoreId,
    /// Where the next page starts: after this key (`None`: at the start).
    after: Option<String>,
    done: bool,
}

impl<'a> KeyPages<'a> {
    pub fn new(store: &'a dyn Store, id: &'a StoreId) -> Self {
        Self {
            store,
            id,
            after: None,
            done: false,
        }
    }

    /// The next page of listing entries; `None` once every key has been given (or the store is
    /// gone).
    pub async fn next(&mut self) -> Result<Option<Vec<RecordMeta>>, StorageError> {
        if self.done {
            return Ok(None);
        }
        let query = KeyListQuery {
            exclusive_start_key: self.after.take(),
            prefix: String::new(),
            limit: PAGE,
        };
        let Some(page) = self.store.keys_list(self.id, &query).await? else {
            self.done = true;
            return Ok(None);
        };
        match (page.is_truncated, page.items.last()) {
            (true, Some(last)) => self.after = Some(last.key.to_string()),
            _ => self.done = true,
        }
        if page.items.is_empty() {
            return Ok(None);
        }
        Ok(Some(page.items))
    }
}
