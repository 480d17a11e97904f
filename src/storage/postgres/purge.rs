//! Reclaiming space: the background purge of deleted stores, and the orphan check that finds
//! (and removes) chunked bodies no record points at.

use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::Row;

use super::errors::db_err;
use super::rows::{to_i64, to_u64};
use super::PgStore;
use crate::model::now_millis;
use crate::storage::{OrphanCheck, OrphanReport, Result};

const PURGE_BATCH: i64 = 1000;
/// How long one orphan check ([`Housekeeping::orphans`]) may take: it reads every chunk's size.
///
/// [`Housekeeping::orphans`]: crate::storage::Housekeeping::orphans
const ORPHAN_CHECK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Removes the records of deleted stores in batches (their objects become garbage), then the
/// stores themselves.
pub(super) async fn purge_deleted(pool: PgPool) {
    if let Err(e) = purge_deleted_once(&pool).await {
        tracing::warn!(error = %e, "purging deleted stores failed; will retry on the next delete");
    }
}

async fn purge_deleted_once(pool: &PgPool) -> Result<()> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM stores WHERE deleted")
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    for id in ids {
        loop {
            let removed = sqlx::query(
                "WITH gone AS (
                     DELETE FROM records WHERE (store_id, key) IN
                         (SELECT store_id, key FROM records WHERE store_id = $1 LIMIT $2)
                     RETURNING blob_id, object),
                 garbage AS (INSERT INTO object_garbage (name, since)
                     SELECT object, $3 FROM gone WHERE object IS NOT NULL
                     ON CONFLICT (name) DO NOTHING)
                 DELETE FROM record_chunks WHERE blob_id IN
                     (SELECT blob_id FROM gone WHERE blob_id IS NOT NULL)",
            )
            .bind(&id)
            .bind(PURGE_BATCH)
            .bind(to_i64(now_millis()))
            .execute(pool)
            .await
            .map_err(db_err)?;
            let left: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM records WHERE store_id = $1)")
                    .bind(&id)
                    .fetch_one(pool)
                    .await
                    .map_err(db_err)?;
            if !left {
                break;
            }
            let _ = removed;
        }
        sqlx::query("DELETE FROM store_counters WHERE store_id = $1")
            .bind(&id)
            .execute(pool)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM stores WHERE id = $1 AND deleted")
            .bind(&id)
            .execute(pool)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

impl PgStore {
    pub(super) async fn orphans_impl(&self, check: OrphanCheck) -> Result<OrphanReport> {
        // The chunks of a write in flight are not committed, so no statement here sees them, and
        // chunks commit together with the record that points at them: committed chunks without a
        // record are orphans for good, whatever `min_age` says. An open snapshot (a backup, a
        // read) keeps reading the rows deleted here, as MVCC does for any delete.
        self.bounded(ORPHAN_CHECK_TIMEOUT, async move {
            let row = sqlx::query(
                "SELECT count(*) AS bodies, coalesce(sum(bytes), 0)::bigint AS bytes,
                     coalesce(array_agg(blob_id), '{}') AS blob_ids
                 FROM (SELECT c.blob_id, sum(octet_length(c.data)) AS bytes
                       FROM record_chunks c
                       WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.blob_id = c.blob_id)
                       GROUP BY c.blob_id) orphan",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
            let bodies: i64 = row.try_get("bodies").map_err(db_err)?;
            let bytes: i64 = row.try_get("bytes").map_err(db_err)?;
            let blob_ids: Vec<i64> = row.try_get("blob_ids").map_err(db_err)?;
            let mut removed = 0;
            if check.remove && !blob_ids.is_empty() {
                // Checked again at deletion: nothing that a record points at goes.
                removed = sqlx::query_scalar::<_, i64>(
                    "WITH gone AS (DELETE FROM record_chunks
                         WHERE blob_id = ANY($1) AND blob_id NOT IN
                             (SELECT blob_id FROM records WHERE blob_id = ANY($1))
                         RETURNING blob_id)
                     SELECT count(DISTINCT blob_id) FROM gone",
                )
                .bind(&blob_ids)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
            }
            Ok(OrphanReport {
                bodies: to_u64(bodies),
                bytes: to_u64(bytes),
                removed: to_u64(removed),
            })
        })
        .await
    }
}
