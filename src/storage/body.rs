//! Record bodies crossing the storage boundary: small ones as bytes, large ones as files, so that a
//! large record is never held in memory whole.

use std::io::Read;

use bytes::Bytes;

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
}

#[derive(Debug)]
pub struct Record {
    pub meta: RecordMeta,
    pub body: BodyOutput,
}
