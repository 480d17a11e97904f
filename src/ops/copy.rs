//! `kvstore copy`: moves everything between backends (embedded ↔ PostgreSQL) exactly: users with
//! their token hashes, stores with their ids, timestamps, secrets and stats, records with their
//! content types. Running it again finishes an interrupted copy: what is already there with the
//! same size and content type is skipped, and each store's row is written last, exactly.

use std::io::{Read, Write};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use super::walk;
use crate::model::StoreInfo;
use crate::storage::{BodyInput, BodyOutput, ImportBatcher, RecordWrite, StorageError, Store};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    pub users: u64,
    pub stores: u64,
    pub records_copied: u64,
    pub records_skipped: u64,
}

pub async fn copy_all(
    from: &dyn Store,
    to: &Arc<dyn Store>,
    progress: bool,
) -> Result<CopyReport, StorageError> {
    let mut report = CopyReport::default();
    let users = from.users_list().await?;
    let mut stores: Vec<StoreInfo> = Vec::new();
    for user in &users {
        to.user_import(user, &from.user_tokens(&user.id).await?)
            .await?;
        report.users += 1;
        stores.extend(walk::stores_of(from, &user.id).await?);
    }
    let total: u64 = stores.iter().map(|s| s.stats.record_count).sum();
    let bar = if progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} records ({per_sec}, {eta} left) {msg}",
    ) {
        bar.set_style(style);
    }
    for store in &stores {
        bar.set_message(
            store
                .name
                .as_ref()
                .map_or_else(|| store.id.to_string(), |n| n.to_string()),
        );
        to.store_import(store).await?;
        copy_records(from, to, store, &bar, &mut report).await?;
        // Writing records moved the target's counters and timestamps: set them back exactly.
        to.store_import(store).await?;
        report.stores += 1;
    }
    bar.finish_with_message("done");
    Ok(report)
}

async fn copy_records(
    from: &dyn Store,
    to: &Arc<dyn Store>,
    store: &StoreInfo,
    bar: &ProgressBar,
    report: &mut CopyReport,
) -> Result<(), StorageError> {
    let mut batch = ImportBatcher::default();
    // A store deleted meanwhile ends its walk early: what was copied of it stays.
    let mut pages = walk::KeyPages::new(from, &store.id);
    while let Some(page) = pages.next().await? {
        for meta in &page {
            let existing = to.record_meta(&store.id, &meta.key).await?;
            if existing.as_ref() == Some(meta) {
                report.records_skipped += 1;
                bar.inc(1);
                continue;
            }
            let Some(record) = from.record_get(&store.id, &meta.key).await? else {
                continue;
            };
            let body = match record.body {
                BodyOutput::Bytes(bytes) => BodyInput::Bytes(bytes),
                BodyOutput::File(file) => spool(file, to.spool_dir(), record.meta.size).await?,
                BodyOutput::Stream(object) => BodyInput::File {
                    path: object.spool(&to.spool_dir()).await?.into_temp_path(),
                    len: object.len(),
                },
            };
            let record = RecordWrite {
                key: meta.key.clone(),
                content_type: record.meta.content_type,
                body,
                version: record.meta.version,
            };
            batch.push(&**to, &store.id, record).await?;
            report.records_copied += 1;
            bar.inc(1);
        }
    }
    batch.flush(&**to).await
}

/// Copies an open body file into the target's spool directory.
async fn spool(
    mut file: std::fs::File,
    dir: std::path::PathBuf,
    len: u64,
) -> Result<BodyInput, StorageError> {
    tokio::task::spawn_blocking(move || {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            tmp.write_all(&buf[..n])?;
        }
        tmp.flush()?;
        Ok(BodyInput::File {
            path: tmp.into_temp_path(),
            len,
        })
    })
    .await
    .map_err(|e| StorageError::Engine(e.to_string()))?
}
