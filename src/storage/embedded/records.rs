//! Records: reading one (inline, or its blob file opened), listing keys, and the writes that put
//! and delete records with the store's counters in the same transaction.

use std::fs;
use std::path::PathBuf;

use bytes::Bytes;
use redb::WriteTransaction;

use super::blobs::PostCommit;
use super::blobs::{remove_blob_later, Paths, PreparedBody, PreparedRecord};
use super::codec::{decode_record, encode, RecordHeader};
use super::hot::{HotRecord, HotRecords, Ticket, HOT_BODY_MAX};
use super::schema::RECORDS;
use super::stores::{load_store, save_store, store_exists};
use super::watch::engine;
use crate::model::{now_millis, RecordKey, RecordMeta, StoreId};
use crate::storage::{
    BodyOutput, KeyListQuery, KeyPage, Record, Result, StorageError, WriteOutcome,
};

/// The header of a record of a live store, with its inline body when `with_body` (empty for blobs).
pub(super) fn find_record(
    txn: &redb::ReadTransaction,
    store: &StoreId,
    key: &RecordKey,
    with_body: bool,
) -> Result<Option<(RecordHeader, Bytes)>> {
    if !store_exists(txn, store.as_str())? {
        return Ok(None);
    }
    record_row(txn, store, key, with_body)
}

/// [`find_record`] for a caller that has already seen the store live in this transaction.
fn record_row(
    txn: &redb::ReadTransaction,
    store: &StoreId,
    key: &RecordKey,
    with_body: bool,
) -> Result<Option<(RecordHeader, Bytes)>> {
    let records = txn.open_table(RECORDS).map_err(engine)?;
    let Some(v) = records
        .get((store.as_str(), key.as_str()))
        .map_err(engine)?
    else {
        return Ok(None);
    };
    let (header, inline) = decode_record(v.value())?;
    let body = if with_body && header.blob.is_none() {
        Bytes::copy_from_slice(inline)
    } else {
        Bytes::new()
    };
    Ok(Some((header, body)))
}

pub(super) fn meta_of(key: &RecordKey, header: RecordHeader) -> RecordMeta {
    RecordMeta {
        key: key.clone(),
        size: header.size,
        content_type: header.content_type,
        version: header.version,
    }
}

pub(super) fn list_keys(
    txn: &redb::ReadTransaction,
    store: &StoreId,
    query: &KeyListQuery,
) -> Result<Option<KeyPage>> {
    if !store_exists(txn, store.as_str())? {
        return Ok(None);
    }
    let records = txn.open_table(RECORDS).map_err(engine)?;
    let sid = store.as_str();
    let start = crate::storage::scan_start(query);
    let range = match &start {
        std::ops::Bound::Included(k) => records.range((sid, k.as_str())..),
        std::ops::Bound::Excluded(k) => records.range((
            std::ops::Bound::Excluded((sid, k.as_str())),
            std::ops::Bound::Unbounded,
        )),
        std::ops::Bound::Unbounded => records.range((sid, "")..),
    }
    .map_err(engine)?;
    let mut items = Vec::with_capacity(query.limit.min(1024));
    let mut is_truncated = false;
    for entry in range {
        let (k, v) = entry.map_err(engine)?;
        let (s, key) = k.value();
        if s != sid || !key.starts_with(query.prefix.as_str()) {
            break;
        }
        if items.len() == query.limit {
            is_truncated = true;
            break;
        }
        let (header, _) = decode_record(v.value())?;
        items.push(RecordMeta {
            key: RecordKey::parse(key).map_err(|e| StorageError::Corrupt(e.0))?,
            size: header.size,
            content_type: header.content_type,
            version: header.version,
        });
    }
    Ok(Some(KeyPage {
        items,
        is_truncated,
    }))
}

pub(super) fn read_record(
    txn: &redb::ReadTransaction,
    paths: &Paths,
    hot: Option<(&HotRecords, Ticket)>,
    store: &StoreId,
    key: &RecordKey,
) -> Result<Option<Record>> {
    if !store_exists(txn, store.as_str())? {
        return Ok(None);
    }
    open_record(txn, paths, hot, store, key)
}

/// [`read_record`] for a caller that has already seen the store live in this transaction: from
/// the hot records when given and there, else from the table, kept in the hot records when small.
/// `txn` must have begun after the ticket was taken (snapshots, which read the past, pass none).
pub(super) fn open_record(
    txn: &redb::ReadTransaction,
    paths: &Paths,
    hot: Option<(&HotRecords, Ticket)>,
    store: &StoreId,
    key: &RecordKey,
) -> Result<Option<Record>> {
    if let Some(hit) = hot.and_then(|(hot, _)| hot.get(store.as_str(), key.as_str())) {
        return Ok(Some(hit.record(key)));
    }
    let Some((header, inline)) = record_row(txn, store, key, true)? else {
        return Ok(None);
    };
    if let (Some((hot, at)), None, true) = (hot, header.blob, inline.len() <= HOT_BODY_MAX) {
        let hot_record = HotRecord::new(
            header.content_type.clone(),
            header.size,
            header.version,
            inline.clone(),
        );
        hot.fill(at, store.as_str(), key.as_str(), hot_record);
    }
    let body = match header.blob {
        Some(blob) => BodyOutput::File(fs::File::open(paths.blob(&blob))?),
        None => BodyOutput::Bytes(inline),
    };
    Ok(Some(Record {
        meta: meta_of(key, header),
        body,
    }))
}

/// The commit of [`RecordStore::records_write`](crate::storage::RecordStore::records_write), in `txn`: the
/// bodies are prepared (blob files written and synced) before.
pub(super) fn put_records(
    txn: &WriteTransaction,
    paths: &Paths,
    store: &StoreId,
    prepared: Vec<PreparedRecord>,
    post: &mut PostCommit,
) -> Result<WriteOutcome> {
    let new_blobs: Vec<PathBuf> = prepared
        .iter()
        .filter_map(|r| r.body.blob().map(|id| paths.blob(&id)))
        .collect();
    post.unlink_if_failed.extend(new_blobs.iter().cloned());
    let Some(mut info) = load_store(txn, store.as_str())? else {
        post.unlink_if_committed.extend(new_blobs);
        return Ok(WriteOutcome::StoreMissing);
    };
    let mut records = txn.open_table(RECORDS).map_err(engine)?;
    for record in prepared {
        let header = RecordHeader {
            content_type: record.content_type,
            size: record.size,
            blob: record.body.blob(),
            version: record.version,
        };
        let mut value = encode(&header)?;
        if let PreparedBody::Inline(bytes) = &record.body {
            value.extend_from_slice(bytes);
        }
        let old = records
            .insert((store.as_str(), record.key.as_str()), value.as_slice())
            .map_err(engine)?
            .map(|old| decode_record(old.value()).map(|(header, _)| header))
            .transpose()?;
        match old {
            Some(old) => {
                info.stats.storage_bytes = info.stats.storage_bytes.saturating_sub(old.size);
                remove_blob_later(paths, &old, post);
            }
            None => info.stats.record_count += 1,
        }
        info.stats.storage_bytes += record.size;
        info.stats.write_count += 1;
        post.changes
            .records
            .push((store.as_str().to_owned(), record.key.as_str().to_owned()));
    }
    let now = now_millis();
    info.modified_at = now;
    info.accessed_at = now;
    drop(records);
    save_store(txn, &info, &mut post.changes)?;
    Ok(WriteOutcome::Written)
}

/// [`RecordStore::record_delete`](crate::storage::RecordStore::record_delete), in `txn`.
pub(super) fn delete_record(
    txn: &WriteTransaction,
    paths: &Paths,
    store: &StoreId,
    key: &RecordKey,
    post: &mut PostCommit,
) -> Result<WriteOutcome> {
    let Some(mut info) = load_store(txn, store.as_str())? else {
        return Ok(WriteOutcome::StoreMissing);
    };
    let mut records = txn.open_table(RECORDS).map_err(engine)?;
    let old = records
        .remove((store.as_str(), key.as_str()))
        .map_err(engine)?
        .map(|old| decode_record(old.value()).map(|(header, _)| header))
        .transpose()?;
    if let Some(old) = old {
        info.stats.storage_bytes = info.stats.storage_bytes.saturating_sub(old.size);
        info.stats.record_count = info.stats.record_count.saturating_sub(1);
        remove_blob_later(paths, &old, post);
        post.changes
            .records
            .push((store.as_str().to_owned(), key.as_str().to_owned()));
    }
    info.stats.delete_count += 1;
    let now = now_millis();
    info.modified_at = now;
    info.accessed_at = now;
    drop(records);
    save_store(txn, &info, &mut post.changes)?;
    Ok(WriteOutcome::Written)
}
