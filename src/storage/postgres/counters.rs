//! The background fold of the counter shards: every node, every [`PgOptions::counter_fold_interval`],
//! moves each store's `store_counters` rows (one per backend that wrote to it, see
//! `counter_shard!` in [`super::sql`]) into its `stores` row, so that reading a store's counters
//! sums a handful of rows again, not up to 1024.
//!
//! One transaction per batch of stores: it takes the store rows `FOR NO KEY UPDATE SKIP LOCKED`,
//! which conflicts with the `FOR SHARE` every counter writer holds on its store row until it
//! commits — a store with a write in flight is skipped (the fold never waits for writers, and
//! comes back to it next time), and no writer can touch a locked store's shards meanwhile. Then
//! one statement, from a snapshot taken after the locks, deletes the shard rows and adds their sums
//! to the store rows. A reader's statement sees the shards or their sums, never both or neither:
//! the counters stay exact at every instant. Several nodes fold at once without waiting on each
//! other (a store locked by one is skipped by the others). The columns set here fire no
//! access-generation trigger: a fold invalidates no node's caches.
//!
//! [`PgOptions::counter_fold_interval`]: super::PgOptions::counter_fold_interval

use std::time::Duration;

use sqlx::postgres::PgPool;

use super::errors::db_err;
use crate::storage::Result;

/// Stores folded per transaction (each with at most 1024 shard rows).
const FOLD_BATCH: usize = 64;

/// The shard rows of the locked stores $1, summed into their store rows and deleted; returns
/// how many shard rows went.
const FOLD: &str = "
WITH gone AS (DELETE FROM store_counters WHERE store_id = ANY($1)
    RETURNING store_id, record_count, storage_bytes, write_count, delete_count, modified_at),
sums AS (SELECT store_id, sum(record_count)::bigint AS record_count,
        sum(storage_bytes)::bigint AS storage_bytes, sum(write_count)::bigint AS write_count,
        sum(delete_count)::bigint AS delete_count, max(modified_at) AS modified_at,
        count(*) AS shards
    FROM gone GROUP BY store_id),
folded AS (UPDATE stores s SET record_count = s.record_count + x.record_count,
        storage_bytes = s.storage_bytes + x.storage_bytes,
        write_count = s.write_count + x.write_count,
        delete_count = s.delete_count + x.delete_count,
        modified_at = greatest(s.modified_at, x.modified_at),
        accessed_at = greatest(s.accessed_at, x.modified_at)
    FROM sums x WHERE s.id = x.store_id
    RETURNING x.shards)
SELECT coalesce(sum(shards), 0)::bigint FROM folded";

/// Folds every store's shards, every `every`, until the pool closes.
pub(super) async fn fold_periodically(pool: PgPool, every: Duration) {
    let every = every.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !pool.is_closed() {
        tick.tick().await;
        if let Err(e) = fold_all(&pool).await {
            tracing::warn!(error = %e, "folding the counter shards failed; will retry");
        }
    }
}

/// One pass over every store with shard rows, a batch of stores per transaction; returns how
/// many shard rows it folded (those of stores with a write in flight stay for the next pass).
pub(super) async fn fold_all(pool: &PgPool) -> Result<u64> {
    let mut after = String::new();
    let mut folded = 0;
    loop {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT store_id FROM store_counters WHERE store_id > $1
             ORDER BY store_id LIMIT $2",
        )
        .bind(&after)
        .bind(FOLD_BATCH as i64)
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
        folded += fold_batch(pool, &ids).await?;
        match ids.last() {
            Some(last) if ids.len() == FOLD_BATCH => after.clone_from(last),
            _ => break,
        }
    }
    if folded > 0 {
        metrics::counter!("kvstore_pg_counter_shards_folded_total").increment(folded);
    }
    Ok(folded)
}

async fn fold_batch(pool: &PgPool, ids: &[String]) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut txn = pool.begin().await.map_err(db_err)?;
    let locked: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM stores WHERE id = ANY($1) AND NOT deleted ORDER BY id
         FOR NO KEY UPDATE SKIP LOCKED",
    )
    .bind(ids)
    .fetch_all(&mut *txn)
    .await
    .map_err(db_err)?;
    if locked.is_empty() {
        return Ok(0);
    }
    // A statement of its own: its snapshot, taken after the locks, holds every write to these
    // stores' shards (a writer holds its store row until it commits).
    let folded: i64 = sqlx::query_scalar(FOLD)
        .bind(&locked)
        .fetch_one(&mut *txn)
        .await
        .map_err(db_err)?;
    txn.commit().await.map_err(db_err)?;
    Ok(u64::try_from(folded).unwrap_or(0))
}
