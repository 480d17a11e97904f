//! The database's format version, checked at open, and how a data directory of an older format
//! is brought up to it.

use std::path::Path;

use super::engine::{Engine, Read, Table};
use super::redb_import::{import_redb, REDB_FILE};
use crate::storage::{Result, StorageError};

/// Bumped whenever the on-disk layout changes incompatibly; older directories are migrated at
/// open (version 2 added `disabled` to users, version 3 `title` to stores, version 4 moved the
/// engine from redb's `kvstore.redb` to fjall's `db/`).
pub const FORMAT_VERSION: u32 = 4;

const VERSION_KEY: &[u8] = b"format_version";

/// Checks the format version of the database in `engine`, first importing `dir`'s redb database
/// (formats 1–3) when the engine does not have one yet. Returns whether a purge is pending.
pub(super) fn init_tables(engine: &Engine, dir: &Path) -> Result<bool> {
    let found = engine
        .read()
        .get(Table::Meta, VERSION_KEY)?
        .map(|bytes| {
            <[u8; 4]>::try_from(&*bytes)
                .map(u32::from_le_bytes)
                .map_err(|_| StorageError::Corrupt("format_version".into()))
        })
        .transpose()?;
    let redb_file = dir.join(REDB_FILE);
    match found {
        Some(FORMAT_VERSION) => {
            // An import that stopped between its last commit and the removal of the old file.
            if redb_file.exists() {
                remove_imported(&redb_file, dir)?;
            }
        }
        Some(found) => {
            return Err(StorageError::UnsupportedFormat {
                found,
                supported: FORMAT_VERSION,
            })
        }
        None => {
            let imported = redb_file.exists();
            if imported {
                // An import cut short leaves rows but no version: copying again writes the same
                // rows over them.
                import_redb(&redb_file, engine)?;
            }
            let mut txn = engine.write(true);
            txn.insert(
                Table::Meta,
                VERSION_KEY,
                FORMAT_VERSION.to_le_bytes().as_slice(),
            );
            txn.commit()?;
            if imported {
                tracing::info!("migrated the data directory to format version {FORMAT_VERSION}");
                remove_imported(&redb_file, dir)?;
            }
        }
    }
    Ok(!engine.read().is_empty(Table::Purge)?)
}

fn remove_imported(redb_file: &Path, dir: &Path) -> Result<()> {
    std::fs::remove_file(redb_file)?;
    super::blobs::sync_dir(dir)?;
    Ok(())
}
