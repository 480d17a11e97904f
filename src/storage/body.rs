//! Record bodies crossing the storage boundary: small ones as bytes, large ones as files or as
//! streams from the object store, so that a large record is never held in memory whole.

use std::io::Read;

use bytes::Bytes;
use tokio::io::AsyncSeekExt;

use super::objects::{ByteStream, Objects};
use super::Result;
use crate::model::RecordMeta;

/// A body to store. Its size is known before the write starts.
#[derive(Debug)]
pub enum BodyInput {
    Bytes(Bytes),
    /// A body spooled to a temporary file in [`super::RecordStore::spool_dir`]; removed when dropped
    /// unless the backend moves it into place.
    File {
        path: tempfile::TempPath,
        len: u64,
    },
}

impl BodyInput {
    pub fn len(&self) -> u64 {
        match self {
            BodyInput::Bytes(b) => b.len() as u64,
            BodyInput::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the whole body into memory, off the async workers. For bodies small enough to keep
    /// in one piece (a row, one object-store request).
    pub async fn to_bytes(&self) -> std::io::Result<Bytes> {
        match self {
            BodyInput::Bytes(b) => Ok(b.clone()),
            BodyInput::File { path, .. } => Ok(Bytes::from(tokio::fs::read(path).await?)),
        }
    }

    /// Reads the whole body into memory (blocking). For backends that keep small bodies inline.
    pub fn into_bytes_blocking(self) -> std::io::Result<Bytes> {
        match self {
            BodyInput::Bytes(b) => Ok(b),
            BodyInput::File { path, len } => {
                let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                std::fs::File::open(&path)?.read_to_end(&mut buf)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

/// A stored body on its way out.
#[derive(Debug)]
pub enum BodyOutput {
    Bytes(Bytes),
    /// An open file positioned at the start of the body; it stays readable even if the record is
    /// overwritten or deleted meanwhile.
    File(std::fs::File),
    /// A body in the object store, not yet requested: sent straight from the store's response.
    Stream(ObjectBody),
}

impl BodyOutput {
    /// The body as bytes or a file: a body in the object store is copied into a file in `spool`
    /// first, for consumers that need all of it at hand (an archive, a file of their own).
    pub async fn into_local(self, spool: &std::path::Path) -> Result<LocalBody> {
        Ok(match self {
            BodyOutput::Bytes(bytes) => LocalBody::Bytes(bytes),
            BodyOutput::File(file) => LocalBody::File(file),
            BodyOutput::Stream(object) => LocalBody::File(object.spool(spool).await?.into_file()),
        })
    }
}

/// A body at hand: [`BodyOutput`] less the streams.
#[derive(Debug)]
pub enum LocalBody {
    Bytes(Bytes),
    /// An open file positioned at the start of the body.
    File(std::fs::File),
}

/// The body of a record in the object store: the object's name and the exact length its row
/// records. Nothing is requested until it is opened; the object may be collected once the
/// record is overwritten or deleted and the grace period has passed
/// (`--object-store-gc-grace`), so it is opened right away, as the record is read.
#[derive(Debug, Clone)]
pub struct ObjectBody {
    objects: Objects,
    name: String,
    len: u64,
}

impl ObjectBody {
    pub fn new(objects: Objects, name: String, len: u64) -> Self {
        Self { objects, name, len }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `len` bytes from `first` on (see [`Objects::get_stream`]): an error before the first byte
    /// comes back here, a later one ends the stream.
    pub async fn open(&self, first: u64, len: u64) -> Result<ByteStream> {
        self.objects
            .get_stream(&self.name, self.len, first, len)
            .await
    }

    /// The whole body copied into a new temporary file in `dir`, a piece at a time
    /// ([`Objects::get_into`]).
    pub async fn spool(&self, dir: &std::path::Path) -> Result<tempfile::NamedTempFile> {
        let (file, path) = tempfile::NamedTempFile::new_in(dir)?.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        self.objects
            .get_into(&self.name, &mut file, self.len)
            .await?;
        file.rewind().await?;
        Ok(tempfile::NamedTempFile::from_parts(
            file.into_std().await,
            path,
        ))
    }
}

#[derive(Debug)]
pub struct Record {
    pub meta: RecordMeta,
    pub body: BodyOutput,
}
