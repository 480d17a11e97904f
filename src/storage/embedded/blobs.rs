//! Blob files: where large bodies live, how a body gets there before its commit, when a file may
//! be removed (after the commit that drops it, never under an open snapshot), the free-disk
//! reserve, and the check for files no record points at.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::codec::{decode, RecordHeader};
use super::engine::{Engine, Read, Table};
use super::hot::Changes;
use super::EmbeddedStore;
use crate::model::RecordKey;
use crate::storage::{BodyInput, OrphanCheck, OrphanReport, RecordWrite, Result, StorageError};
use bytes::Bytes;
use rand::RngCore;

/// What a write transaction leaves for after its commit: blob files to remove once the batch's fate
/// is known, whether a purge of deleted stores should run, and which stores and records changed
/// (for the hot-record cache, which drops them before the commit).
#[derive(Default)]
pub(super) struct PostCommit {
    pub(super) unlink_if_committed: Vec<PathBuf>,
    pub(super) unlink_if_failed: Vec<PathBuf>,
    pub(super) purge_scheduled: bool,
    pub(super) changes: Changes,
}

/// Bodies larger than this live in blob files rather than inside the engine.
pub(super) const INLINE_MAX: u64 = 64 * 1024;

/// Fsyncs a directory so that a rename or a new entry in it survives power loss.
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

pub(super) struct Paths {
    pub(super) blobs: PathBuf,
    pub(super) spool: PathBuf,
    /// While a snapshot is open, blob files it may still read are not removed.
    pub(super) pins: Mutex<BlobPins>,
    /// See [`EmbeddedOptions::min_free_bytes`](super::EmbeddedOptions::min_free_bytes).
    pub(super) min_free_bytes: u64,
    /// Set once the database file failed an I/O operation (see [`Watched`](super::watch::Watched)).
    pub(super) io_failed: Arc<AtomicBool>,
}

#[derive(Default)]
pub(super) struct BlobPins {
    open_snapshots: usize,
    deferred: Vec<PathBuf>,
}

impl Paths {
    pub(super) fn blob(&self, id: &[u8; 16]) -> PathBuf {
        self.blobs.join(hex::encode(id))
    }

    /// Whether `extra` more bytes leave the reserve of free space intact. A filesystem that cannot
    /// say counts as roomy: the write then fails on its own if it must.
    pub(super) fn has_room(&self, extra: u64) -> bool {
        self.min_free_bytes == 0
            || fs4::available_space(&self.blobs)
                .map(|free| free >= self.min_free_bytes.saturating_add(extra))
                .unwrap_or(true)
    }

    /// Removes a blob file no record points at any more, or, while a snapshot is open, once the
    /// last one closes.
    pub(super) fn unlink(&self, path: PathBuf) {
        if let Ok(mut pins) = self.pins.lock() {
            if pins.open_snapshots > 0 {
                pins.deferred.push(path);
                return;
            }
        }
        remove_blob_file(&path);
    }

    /// Keeps blob files from being removed until the pin is dropped. Taken before the snapshot's
    /// read transaction begins: a blob removed earlier belongs to a commit the snapshot cannot see.
    pub(super) fn pin(self: &Arc<Self>) -> BlobPin {
        if let Ok(mut pins) = self.pins.lock() {
            pins.open_snapshots += 1;
        }
        BlobPin(self.clone())
    }
}

fn remove_blob_file(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove blob file");
        }
    }
}

pub(super) struct BlobPin(Arc<Paths>);

impl Drop for BlobPin {
    fn drop(&mut self) {
        let deferred = match self.0.pins.lock() {
            Ok(mut pins) => {
                pins.open_snapshots = pins.open_snapshots.saturating_sub(1);
                if pins.open_snapshots == 0 {
                    std::mem::take(&mut pins.deferred)
                } else {
                    Vec::new()
                }
            }
            Err(_) => Vec::new(),
        };
        for path in deferred {
            remove_blob_file(&path);
        }
    }
}

/// Finds (and with `check.remove` removes) blob files that no record points at. Blocking.
///
/// Records of deleted stores not purged yet still point at theirs (the purge removes them). A blob
/// written for a commit still to come is newer than `check.min_age`, and one that an open snapshot
/// may still read is either pointed at or deferred until the snapshot closes (see [`Paths::unlink`]):
/// nothing is removed while a snapshot is open, and deferred files are not counted.
pub(super) fn collect_orphans(
    engine: &Engine,
    paths: &Paths,
    check: OrphanCheck,
) -> Result<OrphanReport> {
    // Candidates first, the records after: a blob committed in between is pointed at by then.
    let cutoff = std::time::SystemTime::now()
        .checked_sub(check.min_age)
        .unwrap_or(std::time::UNIX_EPOCH);
    let candidates = sizes(paths, blob_ids(paths)?, Some(cutoff))?;
    remove_unreferenced(engine, paths, candidates, check.remove)
}

/// The blob files in `blobs/`, by name only (no metadata read: cheap enough for start-up).
pub(super) fn blob_ids(paths: &Paths) -> Result<Vec<[u8; 16]>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(&paths.blobs)? {
        let name = entry?.file_name();
        // Anything else is not a blob file: not ours to judge.
        if let Some(id) = name
            .to_str()
            .and_then(|n| hex::decode(n).ok())
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
        {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The sizes of the blob files `ids` that are still there, and last written at `cutoff` or
/// before when one is given.
fn sizes(
    paths: &Paths,
    ids: Vec<[u8; 16]>,
    cutoff: Option<std::time::SystemTime>,
) -> Result<std::collections::HashMap<[u8; 16], u64>> {
    let mut candidates = std::collections::HashMap::new();
    for id in ids {
        let meta = match fs::metadata(paths.blob(&id)) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let old_enough =
            cutoff.is_none_or(|cutoff| meta.modified().map(|m| m <= cutoff).unwrap_or(false));
        if meta.is_file() && old_enough {
            candidates.insert(id, meta.len());
        }
    }
    Ok(candidates)
}

/// Of `candidates` (blob ids and sizes), those no record points at, removed with `remove`
/// unless a snapshot is open.
fn remove_unreferenced(
    engine: &Engine,
    paths: &Paths,
    mut candidates: std::collections::HashMap<[u8; 16], u64>,
    remove: bool,
) -> Result<OrphanReport> {
    if candidates.is_empty() {
        return Ok(OrphanReport::default());
    }
    {
        for entry in engine.read().all(Table::Records) {
            let (_, v) = entry?;
            if let Some(blob) = decode::<RecordHeader>(&v)?.blob {
                candidates.remove(&blob);
            }
        }
    }
    let pins = paths
        .pins
        .lock()
        .map_err(|_| StorageError::Engine("blob pins poisoned".into()))?;
    candidates.retain(|id, _| !pins.deferred.contains(&paths.blob(id)));
    let mut report = OrphanReport {
        bodies: candidates.len() as u64,
        bytes: candidates.values().sum(),
        removed: 0,
    };
    if remove && pins.open_snapshots == 0 {
        for (id, len) in &candidates {
            let path = paths.blob(id);
            match fs::remove_file(&path) {
                Ok(()) => report.removed += 1,
                // Removed meanwhile by the commit or purge that dropped its record: no orphan.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    report.bodies -= 1;
                    report.bytes -= len;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove an orphan blob")
                }
            }
        }
    }
    Ok(report)
}

/// The orphan check of a start-up, for blob files listed (`ids`) before this process could write
/// any: each is either pointed at by a record or left by a crash (written, its commit never made,
/// or dropped by a commit whose removal of it never ran), however young. Runs in the background
/// so that the server need not wait for a scan of every record; the log says what it removed.
pub(super) fn collect_crash_orphans(engine: &Engine, paths: &Paths, ids: Vec<[u8; 16]>) {
    let report = sizes(paths, ids, None)
        .and_then(|candidates| remove_unreferenced(engine, paths, candidates, true));
    match report {
        Ok(report) if report.removed < report.bodies => tracing::warn!(
            bodies = report.bodies,
            bytes = report.bytes,
            removed = report.removed,
            "start-up orphan check: a snapshot was open, the periodic check removes the rest"
        ),
        Ok(report) => tracing::info!(
            bodies = report.bodies,
            bytes = report.bytes,
            removed = report.removed,
            "start-up orphan check: blob files no record points at, left by an earlier run"
        ),
        Err(e) => tracing::warn!(error = %e, "start-up orphan check failed"),
    }
}

pub(super) fn remove_blob_later(paths: &Paths, header: &RecordHeader, post: &mut PostCommit) {
    if let Some(blob) = header.blob {
        post.unlink_if_committed.push(paths.blob(&blob));
    }
}

/// Where a body will live once stored: inline bytes, or a synced blob file.
pub(super) enum PreparedBody {
    Inline(Bytes),
    Blob([u8; 16]),
}

impl PreparedBody {
    pub(super) fn blob(&self) -> Option<[u8; 16]> {
        match self {
            PreparedBody::Blob(id) => Some(*id),
            PreparedBody::Inline(_) => None,
        }
    }
}

/// A record whose body is ready to be committed.
pub(super) struct PreparedRecord {
    pub(super) key: RecordKey,
    pub(super) content_type: String,
    pub(super) size: u64,
    pub(super) body: PreparedBody,
    pub(super) version: u64,
}

impl EmbeddedStore {
    /// Prepares every body of a batch; when one fails, the blobs already written for the others
    /// are removed (no commit will point at them).
    pub(super) fn prepare_records(
        paths: &Paths,
        records: Vec<RecordWrite>,
    ) -> Result<Vec<PreparedRecord>> {
        let mut prepared = Vec::with_capacity(records.len());
        for record in records {
            let size = record.body.len();
            match Self::prepare_body(paths, record.body) {
                Ok(body) => prepared.push(PreparedRecord {
                    key: record.key,
                    content_type: record.content_type,
                    size,
                    body,
                    version: record.version,
                }),
                Err(e) => {
                    for id in prepared.iter().filter_map(|done| done.body.blob()) {
                        let _ = fs::remove_file(paths.blob(&id));
                    }
                    return Err(e);
                }
            }
        }
        Ok(prepared)
    }

    /// Moves or writes a large body into `blobs/` and syncs it, before the commit that points at it.
    fn prepare_body(paths: &Paths, body: BodyInput) -> Result<PreparedBody> {
        if body.len() <= INLINE_MAX {
            return Ok(PreparedBody::Inline(body.into_bytes_blocking()?));
        }
        if !paths.has_room(body.len()) {
            return Err(StorageError::Full);
        }
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let target = paths.blob(&id);
        let written = (|| -> Result<()> {
            match body {
                BodyInput::Bytes(bytes) => {
                    let mut file = fs::File::create(&target)?;
                    file.write_all(&bytes)?;
                    file.sync_all()?;
                }
                BodyInput::File { path, .. } => {
                    fs::File::open(&path)?.sync_all()?;
                    path.persist(&target)
                        .map_err(|e| StorageError::Io(e.error))?;
                }
            }
            sync_dir(&paths.blobs)?;
            Ok(())
        })();
        if let Err(e) = written {
            // A partial blob (say, the disk filled up) is nobody's: remove it.
            let _ = fs::remove_file(&target);
            return Err(match e {
                StorageError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                    StorageError::Full
                }
                other => other,
            });
        }
        Ok(PreparedBody::Blob(id))
    }
}
