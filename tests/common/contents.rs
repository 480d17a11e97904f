//! What a backend holds, read whole through the `Store` trait (paged by `kvstore::ops::walk`), for
//! tests that compare one state with another (a restore, a copy, an import): a user's stores, and
//! a store's records with their bodies.

use std::collections::BTreeMap;
use std::io::Read;

use kvstore::model::{RecordMeta, StoreId, StoreInfo, StoreName, Token, UserId, Username};
use kvstore::ops::walk;
use kvstore::storage::{BodyOutput, LocalBody, Store};
use sha2::Digest;

/// A body as bytes, read from its file or its object if it is in one.
pub async fn body_bytes(body: BodyOutput) -> Vec<u8> {
    match body.into_local(&std::env::temp_dir()).await.unwrap() {
        LocalBody::Bytes(b) => b.to_vec(),
        LocalBody::File(mut f) => {
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            v
        }
    }
}

/// Everything observable in a backend, one line each, in a comparable order: users with their
/// tokens, their stores (settings and exact stats), and each record's metadata (ETag version
/// included) with its body's length and SHA-256, so that equal lists mean equal bodies byte for
/// byte and a failed comparison prints lines, not megabytes.
pub async fn everything(store: &dyn Store) -> Vec<String> {
    let mut out = Vec::new();
    for user in store.users_list().await.unwrap() {
        let mut tokens = store.user_tokens(&user.id).await.unwrap();
        tokens.sort_by_key(|t| t.hash.0);
        out.push(format!("user {user:?} tokens {tokens:?}"));
        for info in stores_of(store, &user.id).await {
            out.push(format!("store {info:?}"));
            for (meta, body) in records_of(store, &info.id).await.into_values() {
                let sha: [u8; 32] = sha2::Sha256::digest(&body).into();
                out.push(format!("record {meta:?} {} bytes {sha:x?}", body.len()));
            }
        }
    }
    out
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
            out.insert(meta.key.to_string(), (meta, body_bytes(record.body).await));
        }
    }
    out
}

/// The usual cast of the copy and backup tests: `alice` (a user) with a store named `crawl` (with
/// `schema`), and `bob` (an administrator) with an unnamed store. Returns (crawl, unnamed).
pub async fn two_owners(store: &dyn Store, schema: Option<String>) -> (StoreInfo, StoreInfo) {
    let mut owners = Vec::new();
    for (username, is_admin) in [("alice", false), ("bob", true)] {
        let user = store
            .user_create(
                Username::parse(username).unwrap(),
                is_admin,
                Token::generate().hash(),
            )
            .await
            .unwrap();
        owners.push(user.id);
    }
    let name = StoreName::parse("crawl").unwrap();
    let (named, _) = store
        .store_get_or_create(StoreInfo::new(owners[0].clone(), Some(name), schema))
        .await
        .unwrap();
    let (unnamed, _) = store
        .store_get_or_create(StoreInfo::new(owners[1].clone(), None, None))
        .await
        .unwrap();
    (named, unnamed)
}
