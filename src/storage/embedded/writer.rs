//! The writer thread: jobs queue up, and each batch is applied in one transaction and committed in
//! one journal write and fsync (group commit); the batch's fate decides which blob files to remove,
//! and deleted stores are purged between batches.

use std::collections::VecDeque;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::blobs::{Paths, PostCommit};
use super::codec::{decode, RecordHeader};
use super::engine::{pair_prefix, Engine, Read, Table, WriteTxn, BROKEN};
use super::hot::{Changes, HotRecords};
use super::EmbeddedStore;
use crate::storage::auth_cache::AuthCache;
use crate::storage::{Result, StorageError};

/// How many queued writes one transaction takes at most.
const MAX_BATCH: usize = 512;
/// How long without writes counts as a pause (see [`Engine::seal_shadowed`]).
const PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
/// Records removed per background purge transaction.
const PURGE_STEP: usize = 1000;

/// Work for the writer thread: applied inside a shared transaction, answered after the commit.
pub(super) trait Job: Send {
    /// Runs the operation. An `Err` means the transaction is unusable and the whole batch fails;
    /// logical outcomes (name taken, store missing) are kept for [`Job::finish`] instead.
    fn apply(&mut self, txn: &mut WriteTxn<'_>, post: &mut PostCommit) -> Result<()>;
    fn finish(self: Box<Self>, committed: std::result::Result<(), BatchError>);
    /// Whether the job only removes data (allowed even when the disk is nearly full).
    fn frees_space(&self) -> bool;
    /// Whether the job may change users or tokens (see [`AuthCache`]).
    fn changes_auth(&self) -> bool;
    /// Whether the job reports every store and record it changes in [`PostCommit::changes`];
    /// a batch with a job that does not drops the whole hot-record cache (see [`HotRecords`]).
    fn reports_changes(&self) -> bool;
}

/// Why a batch failed, as every job in it is told.
#[derive(Debug, Clone)]
pub(super) enum BatchError {
    /// No space left on the device; nothing in the batch was stored.
    Full,
    /// The engine failed an I/O operation: it refuses writes until a restart.
    Broken(String),
    Other(String),
}

type JobFn<R> = Box<dyn FnOnce(&mut WriteTxn<'_>, &mut PostCommit) -> Result<R> + Send>;

/// What a write may do, for the writer's bookkeeping.
#[derive(Clone, Copy)]
pub(super) struct WriteKind {
    frees_space: bool,
    changes_auth: bool,
    reports_changes: bool,
}

impl WriteKind {
    /// Users, tokens: the conservative default; every such commit invalidates the token cache
    /// and the hot-record cache.
    pub(super) const AUTH: Self = Self {
        frees_space: false,
        changes_auth: true,
        reports_changes: false,
    };
    /// Stores, records, shares, counters. The job reports in [`PostCommit::changes`] every store
    /// it creates, imports or deletes and every record it writes or deletes (the functions in
    /// `records.rs` and `stores.rs` that do so report on their own).
    pub(super) const DATA: Self = Self {
        frees_space: false,
        changes_auth: false,
        reports_changes: true,
    };
    pub(super) const FREEING_DATA: Self = Self {
        frees_space: true,
        changes_auth: false,
        reports_changes: true,
    };
    pub(super) const FREEING_AUTH: Self = Self {
        frees_space: true,
        changes_auth: true,
        reports_changes: false,
    };
}

struct TypedJob<R> {
    kind: WriteKind,
    run: Option<JobFn<R>>,
    outcome: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
}

fn is_logical(e: &StorageError) -> bool {
    matches!(e, StorageError::NameTaken | StorageError::UserExists)
}

impl<R: Send + 'static> Job for TypedJob<R> {
    fn frees_space(&self) -> bool {
        self.kind.frees_space
    }

    fn changes_auth(&self) -> bool {
        self.kind.changes_auth
    }

    fn reports_changes(&self) -> bool {
        self.kind.reports_changes
    }

    fn apply(&mut self, txn: &mut WriteTxn<'_>, post: &mut PostCommit) -> Result<()> {
        let Some(run) = self.run.take() else {
            return Ok(());
        };
        match run(txn, post) {
            Err(e) if !is_logical(&e) => Err(e),
            outcome => {
                self.outcome = Some(outcome);
                Ok(())
            }
        }
    }

    fn finish(self: Box<Self>, committed: std::result::Result<(), BatchError>) {
        let result = match committed {
            Ok(()) => self
                .outcome
                .unwrap_or_else(|| Err(StorageError::Engine("write was not applied".into()))),
            Err(BatchError::Full) => Err(StorageError::Full),
            Err(BatchError::Broken(msg)) => Err(StorageError::Unavailable(msg)),
            Err(BatchError::Other(msg)) => Err(StorageError::Engine(msg)),
        };
        let _ = self.reply.send(result); // the caller may have gone away; the write stands
    }
}

impl EmbeddedStore {
    /// A write to the writer thread. `kind` says whether it only frees space (it then runs even
    /// when the disk is nearly full) and whether it may change users or tokens.
    pub(super) async fn write<R: Send + 'static>(
        &self,
        kind: WriteKind,
        run: impl FnOnce(&mut WriteTxn<'_>, &mut PostCommit) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob {
            kind,
            run: Some(Box::new(run)),
            outcome: None,
            reply,
        });
        {
            let guard = self.writer.read().map_err(|_| StorageError::Closed)?;
            let sender = guard.as_ref().ok_or(StorageError::Closed)?;
            sender.send(job).map_err(|_| StorageError::Closed)?;
        }
        rx.await.map_err(|_| StorageError::Closed)?
    }
}

pub(super) fn writer_loop(
    engine: &Engine,
    paths: &Paths,
    (auth, hot): (&AuthCache, &HotRecords),
    rx: mpsc::Receiver<Box<dyn Job>>,
    mut purge_pending: bool,
) {
    let mut queue: VecDeque<Box<dyn Job>> = VecDeque::new();
    // 0: the first upkeep also seals what the start replayed into memtables, so that the journals
    // it came from are freed once flushed rather than replayed again at the next start.
    let mut journals_seen = 0;
    loop {
        if let Err(e) = engine.upkeep(&mut journals_seen) {
            tracing::error!(error = %e, "the engine's upkeep (memtable flushes) failed");
        }
        if queue.is_empty() {
            if purge_pending {
                match rx.try_recv() {
                    Ok(job) => queue.push_back(job),
                    Err(mpsc::TryRecvError::Empty) => {
                        purge_pending = purge_step(engine, paths, hot).unwrap_or_else(|e| {
                            tracing::error!(error = %e, "background purge of deleted stores failed");
                            false
                        });
                        continue;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            } else {
                let job = match rx.recv_timeout(PAUSE) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = engine.seal_shadowed() {
                            tracing::error!(error = %e, "the engine's upkeep (memtable flushes) failed");
                        }
                        rx.recv().ok()
                    }
                    job => job.ok(),
                };
                match job {
                    Some(job) => queue.push_back(job),
                    None => return,
                }
            }
        }
        while queue.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => break,
            }
        }
        let mut batch: Vec<Box<dyn Job>> = queue.drain(..).collect();
        if !paths.has_room(0) {
            let (freeing, growing): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|job| job.frees_space());
            if !growing.is_empty() {
                tracing::warn!(
                    refused = growing.len(),
                    "the disk is nearly full: refusing writes that add data"
                );
            }
            for job in growing {
                job.finish(Err(BatchError::Full));
            }
            batch = freeing;
            if batch.is_empty() {
                continue;
            }
        }
        purge_pending |= run_batch(engine, paths, (auth, hot), batch);
    }
}

/// Applies a batch in one transaction and answers every job. Returns whether a purge was scheduled.
fn run_batch(
    engine: &Engine,
    paths: &Paths,
    (auth, hot): (&AuthCache, &HotRecords),
    mut batch: Vec<Box<dyn Job>>,
) -> bool {
    let changes_auth = batch.iter().any(|job| job.changes_auth());
    let reports_changes = batch.iter().all(|job| job.reports_changes());
    if changes_auth {
        auth.change_begins();
    }
    let mut post = PostCommit::default();
    // Whether `commit()` itself was reached: a commit that fails (say, at its fsync) may still have
    // written to the journal what a restart replays, so its fate is unknown, unlike a transaction
    // abandoned before the commit (which wrote nothing).
    let mut commit_reached = false;
    // Whether the hot records this batch changes were dropped (and must be released below).
    let mut hot_dropped = false;
    let committed = (|| -> Result<()> {
        let mut txn = engine.write(true);
        for job in batch.iter_mut() {
            job.apply(&mut txn, &mut post)?;
        }
        post.changes.everything |= !reports_changes;
        hot.change_begins(&post.changes);
        hot_dropped = true;
        commit_reached = true;
        txn.commit()
    })();
    if changes_auth {
        auth.change_ends();
    }
    if hot_dropped {
        hot.change_ends(&post.changes);
    }
    let committed = committed.map_err(|e| match e {
        // Whatever the error said (even "disk full"), fjall refuses every write after a failed
        // journal write or fsync; so does the engine, and `/readyz` says so.
        e if commit_reached && !matches!(e, StorageError::Engine(_)) => {
            if !paths.io_failed.swap(true, Ordering::AcqRel) {
                tracing::error!(error = %e, "the engine failed an I/O operation: writes are refused until a restart");
            }
            BatchError::Broken(BROKEN.into())
        }
        e if paths.io_failed.load(Ordering::Acquire) => {
            tracing::error!(error = %e, "write transaction failed: the engine is broken");
            BatchError::Broken(BROKEN.into())
        }
        StorageError::Unavailable(msg) => {
            tracing::error!(error = %msg, "write transaction failed");
            BatchError::Broken(msg)
        }
        StorageError::Full => {
            tracing::warn!("write transaction failed: the disk is full");
            BatchError::Full
        }
        e => {
            tracing::error!(error = %e, "write transaction failed");
            BatchError::Other(e.to_string())
        }
    });
    let unlink: &[PathBuf] = match (&committed, commit_reached) {
        (Ok(()), _) => &post.unlink_if_committed,
        (Err(_), false) => &post.unlink_if_failed,
        // Keep both old and new blobs: either may be referenced after a restart. At worst they
        // are orphans (see docs/architecture.md, known gaps).
        (Err(_), true) => &[],
    };
    for path in unlink {
        paths.unlink(path.clone());
    }
    for job in batch {
        job.finish(committed.clone());
    }
    committed.is_ok() && post.purge_scheduled
}

/// Removes some records of one deleted store. Returns whether more purging remains.
fn purge_step(engine: &Engine, paths: &Paths, hot: &HotRecords) -> Result<bool> {
    // Purging is not acknowledged to anyone: no need to wait for the disk.
    let mut txn = engine.write(false);
    let mut unlink = Vec::new();
    // The store's row is gone, so no read reaches its records; but a store imported again under
    // the same id would, and must not be served what this removes.
    let mut changes = Changes::default();
    let Some((store_id, _)) = txn.all(Table::Purge).next().transpose()? else {
        return Ok(false);
    };
    let store = String::from_utf8_lossy(&store_id).into_owned();
    changes.stores.push(store.clone());
    let mut rows = Vec::new();
    for entry in txn
        .rows(Table::Records, &pair_prefix(&store), Bound::Unbounded)
        .take(PURGE_STEP)
    {
        let (k, v) = entry?;
        if let Some(blob) = decode::<RecordHeader>(&v)?.blob {
            unlink.push(paths.blob(&blob));
        }
        rows.push(k);
    }
    let done = rows.len() < PURGE_STEP;
    for row in rows {
        txn.remove(Table::Records, row.clone());
        txn.remove(Table::Bodies, row);
    }
    if done {
        txn.remove(Table::Purge, store_id);
    }
    hot.change_begins(&changes);
    let committed = txn.commit();
    hot.change_ends(&changes);
    committed?;
    for path in unlink {
        paths.unlink(path);
    }
    Ok(!engine.read().is_empty(Table::Purge)?)
}
