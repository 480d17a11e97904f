//! Bodies in object storage (`--object-store`): how a record's body gets there and back, and the
//! background collector of the objects no committed row points at.
//!
//! A write uploads its body under a new, random name and only then commits the row that names
//! it, so a committed row always names a complete object, and a row read names the one version
//! it read: no torn or mixed body, on any node. Before the upload, the name goes into
//! `object_garbage` (an "intent"); the transaction that commits the record takes it out again.
//! A crash or a failure anywhere in between leaves the intent behind, and the collector removes
//! the object (if it got written at all) once the grace period has passed. A replaced or deleted
//! record's object enters `object_garbage` in the statement that replaced or deleted the row; a
//! read that had already found the old row has the grace period to fetch it.
//!
//! The collector takes its batch `FOR UPDATE SKIP LOCKED`, so that any number of nodes can run
//! it at once without two of them deleting the same objects, and a commit that finds its intent
//! gone (the collector took it: an upload that outlived the grace period) fails with 503.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;

use super::chunks::{free_replaced, missed_chunks};
use super::errors::db_err;
use super::rows::{meta_of, to_i64};
use super::sql::{put_record, Outside};
use super::PgStore;
use crate::model::{now_millis, RecordKey, RecordMeta, StoreId};
use crate::storage::body::ObjectBody;
use crate::storage::objects::{ObjectStoreOptions, Objects};
use crate::storage::{BodyInput, BodyOutput, Record, Result, StorageError, WriteOutcome};

/// Objects the collector removes per transaction.
const GC_BATCH: i64 = 100;

/// The object store of a [`PgStore`] and when bodies go there.
pub(super) struct ObjectBodies {
    pub(super) objects: Objects,
    pub(super) min_bytes: u64,
    grace: Duration,
}

impl ObjectBodies {
    pub(super) fn new(options: &ObjectStoreOptions) -> Result<Self> {
        Ok(Self {
            objects: Objects::new(options)?,
            min_bytes: options.min_bytes,
            grace: options.gc_grace,
        })
    }
}

/// A new object name: the store's id (so that a listing can be read per store) and 128 random
/// bits, never reused.
fn new_name(store: &StoreId) -> String {
    format!("{}/{:032x}", store.as_str(), rand::random::<u128>())
}

impl PgStore {
    /// Whether a body of `len` bytes goes to the object store.
    pub(super) fn goes_to_objects(&self, len: u64) -> bool {
        self.objects.as_ref().is_some_and(|o| len >= o.min_bytes)
    }

    /// Stores a record whose body goes to the object store: intent, upload, then one transaction
    /// that claims the intent and commits the row.
    pub(super) async fn record_put_object(
        &self,
        bodies: &ObjectBodies,
        store: &StoreId,
        key: &RecordKey,
        content_type: &str,
        body: BodyInput,
        version: u64,
    ) -> Result<WriteOutcome> {
        let name = new_name(store);
        self.bounded(self.op_timeout, async {
            self.row(
                sqlx::query("INSERT INTO object_garbage (name, since) VALUES ($1, $2) RETURNING 1")
                    .bind(&name)
                    .bind(to_i64(now_millis())),
            )
            .await
        })
        .await?;
        // Each request of the upload is bounded; a failure leaves the intent for the collector.
        bodies.objects.put(&name, &body).await?;
        let size = body.len();
        drop(body);
        let committed = self
            .bounded(self.op_timeout, async {
                let mut txn = self.begin().await?;
                let claimed = sqlx::query("DELETE FROM object_garbage WHERE name = $1")
                    .bind(&name)
                    .execute(&mut *txn)
                    .await
                    .map_err(db_err)?
                    .rows_affected();
                if claimed != 1 {
                    return Ok(None);
                }
                let body = Outside::Object(&name);
                let row = put_record(store, key, content_type, size, body, version, None)
                    .fetch_one(&mut *txn)
                    .await
                    .map_err(db_err)?;
                let written: i64 = row.try_get("written").map_err(db_err)?;
                if written == 0 {
                    // The store is gone: the rollback puts the intent back, for the collector.
                    txn.rollback().await.map_err(db_err)?;
                    return Ok(Some(WriteOutcome::StoreMissing));
                }
                let missed = missed_chunks(&row)?;
                if !missed.is_empty() {
                    free_replaced(&mut *txn, &missed).await.map_err(db_err)?;
                }
                txn.commit().await.map_err(db_err)?;
                Ok(Some(WriteOutcome::Written))
            })
            .await?;
        match committed {
            Some(outcome) => Ok(outcome),
            None => {
                // The collector took the intent (and maybe the object, before the upload ended):
                // name the object as garbage again, so that whatever the upload left goes too.
                let _ = self
                    .bounded(self.op_timeout, async {
                        self.maybe_row(
                            sqlx::query(
                                "INSERT INTO object_garbage (name, since) VALUES ($1, $2)
                                 ON CONFLICT (name) DO NOTHING RETURNING 1",
                            )
                            .bind(&name)
                            .bind(to_i64(now_millis())),
                        )
                        .await
                    })
                    .await;
                Err(StorageError::Unavailable(format!(
                    "the upload of {name} took longer than --object-store-gc-grace ({:?})",
                    bodies.grace
                )))
            }
        }
    }

    /// The record of a row whose body is the object `name`: the body is requested only when it
    /// is sent, and then streamed (no spool file, no read-spool room).
    pub(super) fn record_of_object(
        &self,
        key: &RecordKey,
        row: &PgRow,
        name: &str,
    ) -> Result<Record> {
        self.object_record(meta_of(key, row)?, name)
    }

    /// [`Self::record_of_object`] given the record's metadata.
    pub(super) fn object_record(&self, meta: RecordMeta, name: &str) -> Result<Record> {
        let key = &meta.key;
        let Some(bodies) = &self.objects else {
            return Err(StorageError::Unavailable(format!(
                "the record {key} has its body in an object store, and this node has none \
                 (--object-store)"
            )));
        };
        let body = ObjectBody::new(bodies.objects.clone(), name.to_owned(), meta.size);
        Ok(Record {
            meta,
            body: BodyOutput::Stream(body),
        })
    }
}

/// The object a record row names, if its body is in the object store. Every statement that reads
/// a record's body selects `object`: a missing column is an error, never an empty body.
pub(super) fn object_of(row: &PgRow) -> Result<Option<String>> {
    row.try_get("object").map_err(db_err)
}

/// Removes, every little while, the objects that have been garbage longer than the grace period;
/// runs until the pool closes.
pub(super) async fn collect_garbage(pool: PgPool, bodies: Arc<ObjectBodies>) {
    let pause = (bodies.grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    while !pool.is_closed() {
        match collect_once(&pool, &bodies).await {
            Ok(n) if n == GC_BATCH as usize => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "collecting unused objects failed; will retry"),
        }
        tokio::time::sleep(pause).await;
    }
}

/// One batch: the oldest garbage past the grace period, locked so that no other node takes it,
/// removed from the object store, then from the table. Returns how many went.
pub(super) async fn collect_once(pool: &PgPool, bodies: &ObjectBodies) -> Result<usize> {
    let grace = u64::try_from(bodies.grace.as_millis()).unwrap_or(u64::MAX);
    let cutoff = now_millis().saturating_sub(grace);
    let mut txn = pool.begin().await.map_err(db_err)?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM object_garbage WHERE since < $1 ORDER BY since LIMIT $2
         FOR UPDATE SKIP LOCKED",
    )
    .bind(to_i64(cutoff))
    .bind(GC_BATCH)
    .fetch_all(&mut *txn)
    .await
    .map_err(db_err)?;
    if names.is_empty() {
        return Ok(0);
    }
    for name in &names {
        bodies.objects.delete(name).await?;
    }
    sqlx::query("DELETE FROM object_garbage WHERE name = ANY($1)")
        .bind(&names)
        .execute(&mut *txn)
        .await
        .map_err(db_err)?;
    txn.commit().await.map_err(db_err)?;
    metrics::counter!("kvstore_object_store_collected_total").increment(names.len() as u64);
    Ok(names.len())
}
