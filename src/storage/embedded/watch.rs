//! The database file's I/O-failure watch: the storage backend that latches a failed operation, and
//! how redb's errors (a latched one included) reach requests.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::storage::StorageError;

/// What a request hears once the database file has failed an I/O operation (503).
pub(super) const BROKEN: &str =
    "the database file failed an I/O operation; the engine refuses writes until \
     the server is restarted";

pub(super) fn engine<E: Into<redb::Error>>(e: E) -> StorageError {
    match e.into() {
        redb::Error::DatabaseAlreadyOpen => StorageError::Locked,
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => StorageError::Full,
        // redb latches any I/O error of its file: every later access that reaches the file fails
        // with `PreviousIo` until the database is reopened (pages in its cache still read).
        redb::Error::PreviousIo => StorageError::Unavailable(BROKEN.into()),
        redb::Error::Io(io) => StorageError::Unavailable(format!("{BROKEN} ({io})")),
        other => StorageError::Engine(other.to_string()),
    }
}

/// The database file's storage, watched: any failed operation sets `failed`, as it sets redb's
/// own latch (`io_failed` in its cached file), which nothing but a reopen clears. The engine
/// then answers 503 to writes and to `/readyz` (see
/// [`RecordStore::ping`](crate::storage::RecordStore::ping)). One atomic store on a failure and a delegating
/// call otherwise: nothing on the success path.
#[derive(Debug)]
pub(super) struct Watched<B> {
    pub(super) inner: B,
    pub(super) failed: Arc<AtomicBool>,
}

impl<B> Watched<B> {
    fn check<T, E: std::fmt::Display>(
        &self,
        result: std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        if let Err(e) = &result {
            if !self.failed.swap(true, Ordering::AcqRel) {
                tracing::error!(error = %e, "the database file failed an I/O operation: writes are refused until a restart");
            }
        }
        result
    }
}

impl<B: redb::StorageBackend> redb::StorageBackend for Watched<B> {
    fn len(&self) -> std::io::Result<u64> {
        self.check(self.inner.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.check(self.inner.read(offset, out))
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check(self.inner.set_len(len))
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.check(self.inner.sync_data())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check(self.inner.write(offset, data))
    }

    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        // redb latches a failed unlock too.
        self.check(self.inner.unlock_range(start, end))
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
