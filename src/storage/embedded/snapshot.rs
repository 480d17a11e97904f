//! Snapshots for backups: one read transaction held open, with the blob files it can see pinned
//! until it is dropped.

use std::sync::Arc;

use async_trait::async_trait;
use redb::ReadableTable;

use super::blobs::{BlobPin, Paths};
use super::codec::decode;
use super::records::{list_keys, read_record};
use super::schema::{SHARES, STORES, USERS};
use super::shares::share_of;
use super::users::tokens_of;
use super::watch::engine;
use crate::model::{
    RecordKey, RecordMeta, ShareAccess, StoreId, StoreInfo, TokenGrant, User, UserId,
};
use crate::storage::{KeyListQuery, Record, Result, Snapshot, StorageError};

/// A read transaction held open for a backup, with the blob files it references pinned.
pub(super) struct EmbeddedSnapshot {
    pub(super) txn: Arc<redb::ReadTransaction>,
    pub(super) paths: Arc<Paths>,
    pub(super) _pin: BlobPin,
}

impl EmbeddedSnapshot {
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction, &Paths) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (txn, paths) = (self.txn.clone(), self.paths.clone());
        tokio::task::spawn_blocking(move || f(&txn, &paths))
            .await
            .map_err(|e| StorageError::Engine(e.to_string()))?
    }
}

#[async_trait]
impl Snapshot for EmbeddedSnapshot {
    async fn users(&self) -> Result<Vec<(User, Vec<TokenGrant>)>> {
        self.read(|txn, _| {
            let mut out = Vec::new();
            for entry in txn
                .open_table(USERS)
                .map_err(engine)?
                .iter()
                .map_err(engine)?
            {
                let (_, v) = entry.map_err(engine)?;
                let user: User = decode(v.value())?;
                let tokens = tokens_of(txn, user.id.as_str())?;
                out.push((user, tokens));
            }
            Ok(out)
        })
        .await
    }

    async fn shares(&self) -> Result<Vec<(StoreId, UserId, ShareAccess)>> {
        self.read(|txn, _| {
            let mut out = Vec::new();
            for entry in txn
                .open_table(SHARES)
                .map_err(engine)?
                .iter()
                .map_err(engine)?
            {
                let (k, v) = entry.map_err(engine)?;
                let (s, u) = k.value();
                let corrupt = || StorageError::Corrupt("share ids".into());
                out.push((
                    StoreId::parse(s).ok_or_else(corrupt)?,
                    UserId::parse(u).ok_or_else(corrupt)?,
                    share_of(v.value())?,
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn stores(&self) -> Result<Vec<StoreInfo>> {
        self.read(|txn, _| {
            let mut out = Vec::new();
            for entry in txn
                .open_table(STORES)
                .map_err(engine)?
                .iter()
                .map_err(engine)?
            {
                let (_, v) = entry.map_err(engine)?;
                out.push(decode::<StoreInfo>(v.value())?);
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
