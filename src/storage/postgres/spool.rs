//! Read spools: chunked bodies copied into temporary files for the clients reading them, and the
//! per-node bound on the bytes those files may hold.

use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::Row;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::errors::db_err;
use crate::storage::{Result, StorageError};

/// Keeps the temporary files of chunked bodies that clients are still reading (see
/// [`PgOptions::max_read_spool_bytes`]) to a bounded number of bytes per node.
///
/// A reader's file is handed out with a shared `flock` on it, which goes when the last handle of
/// the reader's open file goes (the response is sent, or its client went away). The node keeps a
/// second, independent handle of each file: once an exclusive `flock` on that one succeeds, no
/// reader is left, and the file (unlinked from the start) goes with the handle.
///
/// [`PgOptions::max_read_spool_bytes`]: super::PgOptions::max_read_spool_bytes
pub(super) struct ReadSpools {
    max_bytes: u64,
    held: std::sync::Mutex<HeldSpools>,
}

#[derive(Default)]
struct HeldSpools {
    bytes: u64,
    files: Vec<(std::fs::File, u64)>,
}

impl HeldSpools {
    /// Lets go of the files no reader holds any more.
    fn reclaim(&mut self) {
        let mut freed = 0;
        self.files.retain(|(file, len)| {
            let unread = fs4::fs_std::FileExt::try_lock_exclusive(file).unwrap_or(false);
            if unread {
                freed += len;
            }
            !unread
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }
}

impl ReadSpools {
    pub(super) fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            held: std::sync::Mutex::new(HeldSpools::default()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HeldSpools> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room for a body of `len` bytes, waiting up to `wait` for readers to finish. A body is
    /// always let through when nothing else is held, whatever its size.
    pub(super) async fn reserve(
        self: &std::sync::Arc<Self>,
        len: u64,
        wait: Duration,
    ) -> Result<SpoolRoom> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let mut held = self.held();
                held.reclaim();
                if held.bytes == 0 || held.bytes.saturating_add(len) <= self.max_bytes {
                    held.bytes += len;
                    return Ok(SpoolRoom {
                        spools: self.clone(),
                        len,
                        kept: false,
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StorageError::Unavailable(format!(
                    "clients that have not finished reading hold {} bytes of large bodies on this \
                     node (--db-max-read-spool {})",
                    self.held().bytes,
                    self.max_bytes
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Room reserved in [`ReadSpools`]: given back when dropped, unless a file takes it over.
pub(super) struct SpoolRoom {
    spools: std::sync::Arc<ReadSpools>,
    pub(super) len: u64,
    kept: bool,
}

impl SpoolRoom {
    /// The room stays taken until no reader holds `file`'s contents any more.
    fn keep(mut self, tracker: std::fs::File) {
        self.spools.held().files.push((tracker, self.len));
        self.kept = true;
    }
}

impl Drop for SpoolRoom {
    fn drop(&mut self) {
        if !self.kept {
            let mut held = self.spools.held();
            held.bytes = held.bytes.saturating_sub(self.len);
        }
    }
}

/// A chunked body copied chunk by chunk into an anonymous file in `spool`, rewound: memory holds
/// one chunk, and no connection is held while a slow client downloads the file. With `room`, the
/// file counts against [`ReadSpools`] until its reader is gone.
pub(super) async fn chunks_to_file(
    conn: &mut sqlx::PgConnection,
    blob_id: i64,
    spool: &std::path::Path,
    room: Option<SpoolRoom>,
) -> Result<std::fs::File> {
    let mut file = SpoolFile::create(spool, room.is_some())?;
    let mut chunks = sqlx::query("SELECT data FROM record_chunks WHERE blob_id = $1 ORDER BY seq")
        .bind(blob_id)
        .fetch(conn);
    while let Some(chunk) = chunks.try_next().await.map_err(db_err)? {
        let data: Vec<u8> = chunk.try_get("data").map_err(db_err)?;
        file.file.write_all(&data).await?;
    }
    drop(chunks);
    file.finish(room).await
}

/// A spool file being written, and (with room to account for) the reader's handle of it.
struct SpoolFile {
    file: tokio::fs::File,
    reader: Option<std::fs::File>,
}

impl SpoolFile {
    fn create(spool: &std::path::Path, accounted: bool) -> Result<Self> {
        // With room to account for, the file is opened twice (independent handles, so that their
        // locks are independent) and unlinked at once; the reader gets the second handle.
        let (file, reader) = if accounted {
            let (file, path) = tempfile::NamedTempFile::new_in(spool)?.into_parts();
            let reader = std::fs::File::open(&path)?;
            drop(path);
            (file, Some(reader))
        } else {
            (tempfile::tempfile_in(spool)?, None)
        };
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            reader,
        })
    }

    /// The file for its reader, positioned at the start.
    async fn finish(mut self, room: Option<SpoolRoom>) -> Result<std::fs::File> {
        self.file.flush().await?;
        match (self.reader, room) {
            (Some(reader), Some(room)) => {
                fs4::fs_std::FileExt::lock_shared(&reader)?;
                room.keep(self.file.into_std().await);
                Ok(reader)
            }
            _ => {
                self.file.rewind().await?;
                Ok(self.file.into_std().await)
            }
        }
    }
}
