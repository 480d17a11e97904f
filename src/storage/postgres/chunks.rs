//! Bodies larger than [`INLINE_MAX`]: written in chunks under a blob id, and the chunks of the
//! bodies a write or delete replaced freed, even those its own statement could not see.

use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use tokio::io::AsyncReadExt;

use super::errors::{db_err, settle};
use super::pool::{pool_err, StatementPool};
use super::PgStore;
use crate::storage::{BodyInput, Result};

/// Bodies up to this size are kept in the `records` row itself.
pub(super) const INLINE_MAX: u64 = 256 * 1024;
pub(super) const CHUNK: usize = 1024 * 1024;

/// Extra time a body upload may take: one `op_timeout` per chunk.
pub(super) fn body_budget(op_timeout: Duration, len: u64) -> Duration {
    let chunks = u32::try_from(len / CHUNK as u64).unwrap_or(u32::MAX);
    op_timeout.saturating_mul(chunks.saturating_add(1))
}

/// The body a [`PUT_RECORD`], [`DELETE_RECORD`] or [`PUT_RECORDS`] statement replaced, and
/// whether the statement's own chunk `DELETE` missed some of it (a body committed after the
/// statement began): those blob ids are returned, for [`free_replaced`].
///
/// [`PUT_RECORD`]: super::sql::PUT_RECORD
/// [`DELETE_RECORD`]: super::sql::DELETE_RECORD
/// [`PUT_RECORDS`]: super::sql::PUT_RECORDS
pub(super) fn missed_chunks(row: &PgRow) -> Result<Vec<i64>> {
    let freed: i64 = row.try_get("freed").map_err(db_err)?;
    if row.try_column("prev_blob_ids").is_ok() {
        let ids: Option<Vec<i64>> = row.try_get("prev_blob_ids").map_err(db_err)?;
        let chunks: i64 = row.try_get("prev_chunks").map_err(db_err)?;
        return Ok(match ids {
            Some(ids) if freed < chunks => ids,
            _ => Vec::new(),
        });
    }
    let blob: Option<i64> = row.try_get("prev_blob_id").map_err(db_err)?;
    let size: Option<i64> = row.try_get("prev_size").map_err(db_err)?;
    let chunks = size.unwrap_or(0).saturating_add(CHUNK as i64 - 1) / CHUNK as i64;
    Ok(match blob {
        Some(blob) if freed < chunks => vec![blob],
        _ => Vec::new(),
    })
}

/// Deletes the chunks of bodies that a record write or delete replaced but whose chunks its own
/// statement could not see. A statement of its own takes a fresh snapshot, which includes them:
/// the writer of a replaced row committed before the row could be replaced.
pub(super) async fn free_replaced<'e>(
    conn: impl sqlx::PgExecutor<'e>,
    blob_ids: &[i64],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM record_chunks WHERE blob_id = ANY($1)")
        .bind(blob_ids)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Writes a large body as chunks under a new blob id.
pub(super) async fn write_chunks(
    txn: &mut Transaction<'_, Postgres>,
    body: BodyInput,
) -> Result<i64> {
    let blob_id: i64 = sqlx::query_scalar("SELECT nextval('record_blob_ids')")
        .fetch_one(&mut **txn)
        .await
        .map_err(db_err)?;
    let insert = |seq: usize, data: &[u8]| {
        sqlx::query("INSERT INTO record_chunks (blob_id, seq, data) VALUES ($1, $2, $3)")
            .bind(blob_id)
            .bind(i32::try_from(seq).unwrap_or(i32::MAX))
            .bind(data.to_vec())
    };
    match body {
        BodyInput::Bytes(bytes) => {
            for (seq, chunk) in bytes.chunks(CHUNK).enumerate() {
                insert(seq, chunk)
                    .execute(&mut **txn)
                    .await
                    .map_err(db_err)?;
            }
        }
        BodyInput::File { path, .. } => {
            let mut file = tokio::fs::File::open(&path).await?;
            let mut buf = vec![0u8; CHUNK];
            let mut seq = 0;
            loop {
                let mut filled = 0;
                while filled < CHUNK {
                    let n = file.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                insert(seq, &buf[..filled])
                    .execute(&mut **txn)
                    .await
                    .map_err(db_err)?;
                seq += 1;
                if filled < CHUNK {
                    break;
                }
            }
        }
    }
    Ok(blob_id)
}

/// Runs [`free_replaced`] for what a write statement's own chunk `DELETE` missed, if anything (a
/// body committed after the statement began): a second round trip only then. The write itself is
/// committed by now, so a failure here does not fail it: the chunks stay until the next orphan
/// check ([`Housekeeping::orphans`]) removes them.
///
/// [`Housekeeping::orphans`]: crate::storage::Housekeeping::orphans
pub(super) async fn free_missed(statements: &StatementPool, row: &PgRow) -> Result<()> {
    let missed = missed_chunks(row)?;
    if missed.is_empty() {
        return Ok(());
    }
    let freed = async {
        let mut conn = statements.get().await.map_err(pool_err)?;
        let result = free_replaced(&mut *conn, &missed).await;
        settle(conn, result)
    };
    if let Err(e) = freed.await {
        tracing::warn!(error = %e, blobs = ?missed,
            "could not free a replaced body; the orphan check will");
    }
    Ok(())
}

impl PgStore {
    /// [`free_missed`] on this store's statement pool.
    pub(super) async fn free_missed(&self, row: &PgRow) -> Result<()> {
        free_missed(&self.statements, row).await
    }
}
