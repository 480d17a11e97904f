//! What a backend holds, read whole through the `Store` trait, for tests that compare one state
//! with another (a restore, a copy, an import): a user's stores, and a store's records with their
//! bodies.

use std::collections::BTreeMap;
use std::io::Read;

use kvstore::model::{RecordMeta, StoreId, StoreInfo, UserId};
use kvstore::storage::{BodyOutput, KeyListQuery, Store, StoreListQuery};

/// A body as bytes, read from its file if it is in one.
pub fn body_bytes(body: BodyOutput) -> Vec<u8> {
    match body {
        BodyOutput::Bytes(b) => b.to_vec(),
        BodyOutput::File(mut f) => {
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            v
        }
    }
}

/// Every store of `user`, named and unnamed, oldest first.
pub async fn stores_of(store: &dyn Store, user: &UserId) -> Vec<StoreInfo> {
    let mut stores = Vec::new();
    loop {
        let query = StoreListQuery {
            offset: stores.len() as u64,
            limit: 1000,
            desc: false,
            unnamed: true,
        };
        let page = store.stores_list(user, &query).await.unwrap();
        let done =
            page.items.is_empty() || stores.len() as u64 + page.items.len() as u64 >= page.total;
        stores.extend(page.items);
        if done {
            return stores;
        }
    }
}

/// Every record of the store `id`, by key: its listing entry and its body.
pub async fn records_of(
    store: &dyn Store,
    id: &StoreId,
) -> BTreeMap<String, (RecordMeta, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let query = KeyListQuery {
            exclusive_start_key: start.take(),
            prefix: String::new(),
            limit: 1000,
        };
        let page = store.keys_list(id, &query).await.unwrap().unwrap();
        let last = page.items.last().map(|m| m.key.to_string());
        for meta in page.items {
            let record = store.record_get(id, &meta.key).await.unwrap().unwrap();
            out.insert(meta.key.to_string(), (meta, body_bytes(record.body)));
        }
        match last {
            Some(last) if page.is_truncated => start = Some(last),
            _ => return out,
        }
    }
}
