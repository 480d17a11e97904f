//! Snapshots for backups: one engine snapshot held open, with the blob files it can see pinned
//! until it is dropped.

use std::sync::Arc;

use async_trait::async_trait;

use super::blobs::{BlobPin, Paths};
use super::codec::decode;
use super::engine::{Engine, Read, ReadTxn, Table};
use super::readers::Readers;
use super::records::{list_keys, read_record};
use super::shares::all_shares;
use super::users::tokens_of;
use crate::model::{
    RecordKey, RecordMeta, ShareAccess, StoreId, StoreInfo, TokenGrant, User, UserId,
};
use crate::storage::{KeyListQuery, Record, Result, Snapshot};

/// An engine snapshot held open for a backup, with the blob files it references pinned.
pub(super) struct EmbeddedSnapshot {
    pub(super) engine: Arc<Engine>,
    pub(super) snapshot: fjall::Snapshot,
    pub(super) paths: Arc<Paths>,
    pub(super) readers: Arc<Readers>,
    pub(super) _pin: BlobPin,
}

impl EmbeddedSnapshot {
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTxn<'_>, &Paths) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (engine, snapshot) = (self.engine.clone(), self.snapshot.clone());
        let paths = self.paths.clone();
        self.readers
            .run(move || f(&engine.read_at(snapshot), &paths))
            .await
    }
}

#[async_trait]
impl Snapshot for EmbeddedSnapshot {
    async fn users(&self) -> Result<Vec<(User, Vec<TokenGrant>)>> {
        self.read(|txn, _| {
            let mut out = Vec::new();
            for entry in txn.all(Table::Users) {
                let (_, v) = entry?;
                let user: User = decode(&v)?;
                let tokens = tokens_of(txn, user.id.as_str())?;
                out.push((user, tokens));
            }
            Ok(out)
        })
        .await
    }

    async fn shares(&self) -> Result<Vec<(StoreId, UserId, ShareAccess)>> {
        self.read(|txn, _| all_shares(txn)).await
    }

    async fn stores(&self) -> Result<Vec<StoreInfo>> {
        self.read(|txn, _| {
            let mut out = Vec::new();
            for entry in txn.all(Table::Stores) {
                let (_, v) = entry?;
                out.push(decode::<StoreInfo>(&v)?);
            }
            Ok(out)
        })
        .await
    }

    async fn keys(
        &self,
        store: &StoreId,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<RecordMeta>> {
        let store = store.clone();
        self.read(move |txn, _| {
            let query = KeyListQuery {
                exclusive_start_key: after,
                prefix: String::new(),
                limit,
            };
            Ok(list_keys(txn, &store, &query)?.map_or_else(Vec::new, |page| page.items))
        })
        .await
    }

    async fn record(&self, store: &StoreId, key: &RecordKey) -> Result<Option<Record>> {
        let (store, key) = (store.clone(), key.clone());
        self.read(move |txn, paths| read_record(txn, paths, None, &store, &key))
            .await
    }
}
