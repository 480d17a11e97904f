//! PUTs of inline bodies commit in groups. A PUT that finds a committer free is written at once,
//! alone; those that arrive while every committer is busy wait in a queue, and the next free
//! committer takes all of them (up to [`MAX_GROUP`] records or [`MAX_GROUP_BYTES`]) into one
//! [`PUT_RECORDS`] statement per store: one round trip, one transaction and one WAL flush for the
//! group instead of one each. Every PUT is still answered only after the commit that holds it.
//!
//! PostgreSQL's own group commit merges the WAL flushes of concurrent transactions, but each
//! single-row statement still pays its own round trip, executor set-up, counters row update and
//! commit record: on the node and on the database, that is most of a small PUT's cost
//! (bench/RESULTS.md, issue 12).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::chunks::{body_budget, free_missed, CHUNK};
use super::errors::{db_err, within};
use super::pool::{one_row, StatementPool};
use super::rows::to_i64;
use super::sql::PUT_RECORDS;
use crate::model::{now_millis, RecordKey, StoreId};
use crate::storage::{Result, StorageError, WriteOutcome};

/// Records one group takes at most: enough that a busy node's committers each carry many PUTs,
/// few enough that one statement stays short.
const MAX_GROUP: usize = 64;
/// Bytes of bodies a group takes at most (its first PUT whatever its size).
const MAX_GROUP_BYTES: u64 = 4 * 1024 * 1024;
/// PUTs waiting for a committer at most; further ones wait to be queued.
const QUEUE: usize = 1024;

/// One inline record of a [`PUT_RECORDS`] statement.
pub(super) struct InlineRecord {
    pub key: RecordKey,
    pub content_type: String,
    pub body: Bytes,
    pub version: u64,
}

/// Writes `records` (each key once) into `store` in one [`PUT_RECORDS`] statement on the
/// statement pool, within the time `op_timeout` gives their bodies, and frees the chunks of
/// replaced bodies that the statement could not see. `generation`: the access generation the
/// caller's access was decided under, or `None`; `Ok(None)` when it moved (nothing was written).
pub(super) async fn put_records(
    statements: &StatementPool,
    op_timeout: Duration,
    store: &StoreId,
    records: &[InlineRecord],
    generation: Option<i64>,
) -> Result<Option<WriteOutcome>> {
    let total: u64 = records.iter().map(|r| r.body.len() as u64).sum();
    let (mut keys, mut types, mut sizes, mut bodies, mut versions) = (
        Vec::with_capacity(records.len()),
        Vec::with_capacity(records.len()),
        Vec::with_capacity(records.len()),
        Vec::with_capacity(records.len()),
        Vec::with_capacity(records.len()),
    );
    for record in records {
        keys.push(record.key.as_str());
        types.push(record.content_type.as_str());
        sizes.push(to_i64(record.body.len() as u64));
        bodies.push(record.body.as_ref());
        versions.push(i64::from_ne_bytes(record.version.to_ne_bytes()));
    }
    within(body_budget(op_timeout, total), async {
        let row = one_row(
            statements,
            sqlx::query(PUT_RECORDS)
                .bind(store.as_str())
                .bind(keys)
                .bind(types)
                .bind(sizes)
                .bind(bodies)
                .bind(versions)
                .bind(to_i64(now_millis()))
                .bind(CHUNK as i64)
                .bind(generation),
        )
        .await?;
        free_missed(statements, &row).await?;
        if !row.try_get::<bool, _>("current").map_err(db_err)? {
            return Ok(None);
        }
        let exists: i64 = row.try_get("store_exists").map_err(db_err)?;
        Ok(Some(if exists == 0 {
            WriteOutcome::StoreMissing
        } else {
            WriteOutcome::Written
        }))
    })
    .await
}

/// A PUT waiting for a committer.
struct Waiting {
    store: StoreId,
    generation: Option<i64>,
    record: InlineRecord,
    reply: oneshot::Sender<Result<Option<WriteOutcome>>>,
}

/// The queue of PUTs and its committers; the committers end when this is dropped.
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Waiting>,
}

impl GroupCommit {
    /// Starts `committers` committers (at least one) on `statements`.
    pub(super) fn start(
        statements: StatementPool,
        op_timeout: Duration,
        committers: usize,
    ) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..committers.max(1) {
            tokio::spawn(commit_groups(
                waiting.clone(),
                statements.clone(),
                op_timeout,
            ));
        }
        Self { queue }
    }

    /// Writes `record` into `store` with the next group and answers after its commit, as
    /// [`put_records`] does for a group of one.
    pub(super) async fn put(
        &self,
        store: &StoreId,
        record: InlineRecord,
        generation: Option<i64>,
    ) -> Result<Option<WriteOutcome>> {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            store: store.clone(),
            generation,
            record,
            reply,
        };
        self.queue
            .send(waiting)
            .await
            .map_err(|_| StorageError::Closed)?;
        answer.await.map_err(|_| StorageError::Closed)?
    }
}

/// One committer: takes whatever waits (at least one PUT) and commits it, until the queue closes.
async fn commit_groups(
    waiting: Arc<Mutex<mpsc::Receiver<Waiting>>>,
    statements: StatementPool,
    op_timeout: Duration,
) {
    loop {
        let group = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            let mut bytes = first.record.body.len() as u64;
            let mut group = vec![first];
            while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                let Ok(next) = waiting.try_recv() else {
                    break;
                };
                bytes += next.record.body.len() as u64;
                group.push(next);
            }
            group
        };
        commit(&statements, op_timeout, group).await;
    }
}

/// Commits a group in as few statements as it can: one per store and generation, and a later PUT
/// of a key already in the statement in a statement after it (one statement cannot upsert a row
/// twice), so that PUTs of one key land in the order they came.
async fn commit(statements: &StatementPool, op_timeout: Duration, mut group: Vec<Waiting>) {
    while let Some(first) = group.first() {
        let (store, generation) = (first.store.clone(), first.generation);
        let mut keys = HashSet::with_capacity(group.len());
        let (now, later): (Vec<_>, Vec<_>) = group.into_iter().partition(|w| {
            w.store == store && w.generation == generation && keys.insert(w.record.key.clone())
        });
        group = later;
        let (records, replies): (Vec<_>, Vec<_>) =
            now.into_iter().map(|w| (w.record, w.reply)).unzip();
        let outcome = put_records(statements, op_timeout, &store, &records, generation).await;
        for reply in replies {
            // The caller may have gone away; what was committed stands.
            let _ = reply.send(match &outcome {
                Ok(written) => Ok(*written),
                Err(e) => Err(for_each_waiter(e)),
            });
        }
    }
}

/// The error of a statement for each PUT it carried (a storage error is not `Clone`: an I/O error
/// is not).
fn for_each_waiter(e: &StorageError) -> StorageError {
    match e {
        StorageError::Full => StorageError::Full,
        StorageError::Closed => StorageError::Closed,
        StorageError::Unavailable(message) => StorageError::Unavailable(message.clone()),
        StorageError::Corrupt(message) => StorageError::Corrupt(message.clone()),
        StorageError::Io(io) => StorageError::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => StorageError::Engine(other.to_string()),
    }
}
