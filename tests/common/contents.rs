//! What a backend holds, read whole through the `Store` trait (paged by `kvstore::ops::walk`), for
//! tests that compare one state with another (a restore, a copy, an import): a user's stores, and
//! a store's records with their bodies.

use std::collections::BTreeMap;
use std::io::Read;

use kvstore::model::{RecordMeta, StoreId, StoreInfo, UserId};
use kvstore::ops::walk;
use kvstore::storage::{BodyOutput, Store};

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
    walk::stores_of(store, user).await.unwrap()
}

/// Every record of the store `id`, by key: its listing entry and its body.
pub async fn records_of(
    store: &dyn Store,
    id: &StoreId,
) -> BTreeMap<String, (RecordMeta, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut pages = walk::KeyPages::new(store, id);
    while let Some(page) = pages.next().await.unwrap() {
        for meta in page {
            let record = store.record_get(id, &meta.key).await.unwrap().unwrap();
            out.insert(meta.key.to_string(), (meta, body_bytes(record.body)));
        }
    }
    out
}
