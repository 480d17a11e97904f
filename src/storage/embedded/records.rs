//! Records: reading one (inline, or its blob file opened), listing keys, and the writes that put
//! and delete records with the store's counters in the same transaction.

use std::fs;
use std::path::PathBuf;

use bytes::Bytes;

use super::blobs::PostCommit;
use super::blobs::{remove_blob_later, Paths, PreparedBody, PreparedRecord};
use super::codec::{decode, encode, RecordHeader};
use super::engine::{pair, pair_prefix, split_pair, Read, Table, WriteTxn};
use super::hot::{HotRecord, HotRecords, Ticket, HOT_BODY_MAX};
use super::stores::{load_store, save_store, store_exists};
use crate::model::{now_millis, RecordKey, RecordMeta, StoreId};
use crate::storage::{
    BodyOutput, KeyListQuery, KeyPage, Record, Result, StorageError, WriteOutcome,
};

/// The header of a record of a live store, with its inline body when `with_body` (empty for blobs).
pub(super) fn find_record(
    txn: &impl Read,
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
    txn: &impl Read,
    store: &StoreId,
    key: &RecordKey,
    with_body: bool,
) -> Result<Option<(RecordHeader, Bytes)>> {
    let row = pair(store.as_str(), key.as_str());
    let Some(value) = txn.get(Table::Records, &row)? else {
        return Ok(None);
    };
    let header: RecordHeader = decode(&value)?;
    let body = if with_body && header.blob.is_none() {
        // Written with the header; a record written empty may have none.
        txn.get(Table::Bodies, &row)?
            .map(Bytes::from)
            .unwrap_or_default()
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
    txn: &impl Read,
    store: &StoreId,
    query: &KeyListQuery,
) -> Result<Option<KeyPage>> {
    if !store_exists(txn, store.as_str())? {
        return Ok(None);
    }
    let sid = store.as_str();
    let start = crate::storage::scan_start(query);
    let from = start.as_ref().map(|k| pair(sid, k));
    let mut items = Vec::with_capacity(query.limit.min(1024));
    let mut is_truncated = false;
    for entry in txn.rows(
        Table::Records,
        &pair_prefix(sid),
        from.as_ref().map(Vec::as_slice),
    ) {
        let (k, v) = entry?;
        let (_, key) = split_pair(&k)?;
        if !key.starts_with(query.prefix.as_str()) {
            break;
        }
        if items.len() == query.limit {
            is_truncated = true;
            break;
        }
        let header: RecordHeader = decode(&v)?;
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
    txn: &impl Read,
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
    txn: &impl Read,
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
    txn: &mut WriteTxn<'_>,
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
    for record in prepared {
        let header = RecordHeader {
            content_type: record.content_type,
            size: record.size,
            blob: record.body.blob(),
            version: record.version,
        };
        let row = pair(store.as_str(), record.key.as_str());
        let old = txn
            .get(Table::Records, &row)?
            .map(|old| decode::<RecordHeader>(&old))
            .transpose()?;
        match &record.body {
            // Copied: the memtable keeps what it is given, and a request's bytes may be a slice of
            // a larger read buffer.
            PreparedBody::Inline(bytes) => txn.insert(Table::Bodies, row.as_slice(), &bytes[..]),
            PreparedBody::Blob(_) => txn.remove(Table::Bodies, row.as_slice()),
        }
        txn.insert(Table::Records, row, encode(&header)?);
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
    save_store(txn, &info, &mut post.changes)?;
    Ok(WriteOutcome::Written)
}

/// [`RecordStore::record_delete`](crate::storage::RecordStore::record_delete), in `txn`.
pub(super) fn delete_record(
    txn: &mut WriteTxn<'_>,
    paths: &Paths,
    store: &StoreId,
    key: &RecordKey,
    post: &mut PostCommit,
) -> Result<WriteOutcome> {
    let Some(mut info) = load_store(txn, store.as_str())? else {
        return Ok(WriteOutcome::StoreMissing);
    };
    let row = pair(store.as_str(), key.as_str());
    let old = txn
        .take(Table::Records, &row)?
        .map(|old| decode::<RecordHeader>(&old))
        .transpose()?;
    if old.as_ref().is_some_and(|old| old.blob.is_none()) {
        txn.remove(Table::Bodies, row);
    }
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
    save_store(txn, &info, &mut post.changes)?;
    Ok(WriteOutcome::Written)
}
