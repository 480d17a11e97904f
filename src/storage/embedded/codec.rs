//! How rows are encoded: postcard for every value, and the header that leads a record's row.

use serde::{Deserialize, Serialize};

use crate::storage::{Result, StorageError};

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RecordHeader {
    pub(super) content_type: String,
    pub(super) size: u64,
    /// The blob file holding the body; `None` when the body follows the header inline.
    pub(super) blob: Option<[u8; 16]>,
    /// New at every write; the record's ETag.
    pub(super) version: u64,
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| StorageError::Corrupt(e.to_string()))
}

pub(super) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))
}

pub(super) fn decode_record(bytes: &[u8]) -> Result<(RecordHeader, &[u8])> {
    postcard::take_from_bytes(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))
}
