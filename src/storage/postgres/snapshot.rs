//! Backups: one REPEATABLE READ transaction that every read of a snapshot goes through.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Postgres, Row, Transaction};

use super::chunks::body_budget;
use super::errors::{db_err, within};
use super::objects::object_of;
use super::rows::{
    corrupt, meta_of, share_row, store_from_row, stored_body, token_row, user_from_row, StoredBody,
};
use super::spool::chunks_to_file;
use super::sql::{record_query, select_stores, USER_COLS};
use super::PgStore;
use crate::model::{
    RecordKey, RecordMeta, ShareAccess, StoreId, StoreInfo, TokenGrant, User, UserId,
};
use crate::storage::body::ObjectBody;
use crate::storage::objects::Objects;
use crate::storage::{BodyOutput, Record, Result, Snapshot, StorageError};

impl PgStore {
    pub(super) async fn snapshot_impl(&self) -> Result<Box<dyn Snapshot>> {
        let txn = within(self.op_timeout, async {
            let mut txn = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await
                .map_err(db_err)?;
            // The snapshot is taken at the first statement, not at BEGIN: take it now.
            sqlx::query("SELECT 1")
                .execute(&mut *txn)
                .await
                .map_err(db_err)?;
            Ok(txn)
        })
        .await?;
        Ok(Box::new(PgSnapshot {
            txn: tokio::sync::Mutex::new(txn),
            spool: self.spool.path().to_path_buf(),
            op_timeout: self.op_timeout,
            objects: self.objects.as_ref().map(|b| b.objects.clone()),
        }))
    }
}

/// One REPEATABLE READ transaction held for a whole backup: every statement sees the same instant,
/// and the rows it sees (chunks of overwritten bodies included) stay readable until it ends.
struct PgSnapshot {
    txn: tokio::sync::Mutex<Transaction<'static, Postgres>>,
    spool: std::path::PathBuf,
    op_timeout: Duration,
    /// Where the bodies of the rows that name an object are. An object replaced during the backup
    /// stays for `--object-store-gc-grace`: a longer backup may fail with 503.
    objects: Option<Objects>,
}

#[async_trait]
impl Snapshot for PgSnapshot {
    async fn users(&self) -> Result<Vec<(User, Vec<TokenGrant>)>> {
        let mut txn = self.txn.lock().await;
        within(self.op_timeout, async {
            let users = sqlx::query(&format!("SELECT {USER_COLS} FROM users"))
                .fetch_all(&mut **txn)
                .await
                .map_err(db_err)?;
            let tokens = sqlx::query("SELECT hash, user_id, read_only FROM tokens")
                .fetch_all(&mut **txn)
                .await
                .map_err(db_err)?;
            let mut tokens_of = std::collections::HashMap::<String, Vec<TokenGrant>>::new();
            for row in &tokens {
                let user: String = row.try_get("user_id").map_err(db_err)?;
                tokens_of.entry(user).or_default().push(token_row(row)?);
            }
            users
                .iter()
                .map(|row| {
                    let user = user_from_row(row)?;
                    let tokens = tokens_of.remove(user.id.as_str()).unwrap_or_default();
                    Ok((user, tokens))
                })
                .collect()
        })
        .await
    }

    async fn shares(&self) -> Result<Vec<(StoreId, UserId, ShareAccess)>> {
        let mut txn = self.txn.lock().await;
        within(self.op_timeout, async {
            sqlx::query(
                "SELECT sh.store_id, sh.user_id, sh.access FROM store_shares sh
                 JOIN stores s ON s.id = sh.store_id AND NOT s.deleted",
            )
            .fetch_all(&mut **txn)
            .await
            .map_err(db_err)?
            .iter()
            .map(share_row)
            .collect()
        })
        .await
    }

    async fn stores(&self) -> Result<Vec<StoreInfo>> {
        let mut txn = self.txn.lock().await;
        within(self.op_timeout, async {
            sqlx::query(&select_stores("NOT deleted", ""))
                .fetch_all(&mut **txn)
                .await
                .map_err(db_err)?
                .iter()
                .map(store_from_row)
                .collect()
        })
        .await
    }

    async fn keys(
        &self,
        store: &StoreId,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<RecordMeta>> {
        let mut txn = self.txn.lock().await;
        within(self.op_timeout, async {
            let rows = sqlx::query(
                "SELECT key, content_type, size, version FROM records
                 WHERE store_id = $1 AND key > $2 ORDER BY key LIMIT $3",
            )
            .bind(store.as_str())
            .bind(after.unwrap_or_default())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut **txn)
            .await
            .map_err(db_err)?;
            rows.iter()
                .map(|row| {
                    let key: String = row.try_get("key").map_err(db_err)?;
                    meta_of(&RecordKey::parse(&key).map_err(corrupt)?, row)
                })
                .collect()
        })
        .await
    }

    async fn record(&self, store: &StoreId, key: &RecordKey) -> Result<Option<Record>> {
        let mut txn = self.txn.lock().await;
        let row = within(self.op_timeout, async {
            record_query(store, key)
                .fetch_optional(&mut **txn)
                .await
                .map_err(db_err)
        })
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let meta = meta_of(key, &row)?;
        if let Some(name) = object_of(&row)? {
            drop(txn);
            let Some(objects) = &self.objects else {
                return Err(StorageError::Unavailable(format!(
                    "the record {key} has its body in an object store, and this node has none \
                     (--object-store)"
                )));
            };
            let body = ObjectBody::new(objects.clone(), name, meta.size);
            return Ok(Some(Record {
                meta,
                body: BodyOutput::Stream(body),
            }));
        }
        let body = match stored_body(&row)? {
            StoredBody::Inline(bytes) => BodyOutput::Bytes(bytes),
            StoredBody::Chunked(blob_id) => {
                let budget = body_budget(self.op_timeout, meta.size);
                let file = within(budget, async {
                    chunks_to_file(&mut txn, blob_id, &self.spool, None).await
                })
                .await?;
                BodyOutput::File(file)
            }
        };
        Ok(Some(Record { meta, body }))
    }
}
