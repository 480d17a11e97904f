//! `kvstore import` / `kvstore export`: Crawlee and Apify CLI local storage folders
//! (`<storage>/key_value_stores/<store>/…`) into stores and back.
//!
//! Two layouts exist, and import reads both:
//! - crawlee-python (1.x) names a record's file by its percent-encoded key and writes
//!   `<file>.__metadata__.json` = `{"key", "content_type", "size"}`;
//! - crawlee JS (`@crawlee/memory-storage`) names it `<key>.<extension>` (or just `<key>` when the
//!   key's own extension already gives the content type). Only with `writeMetadata` (off unless
//!   debugging) does it add `<key>.__metadata__.json`, and then as a JSON *string* of
//!   `{"key", "contentType", "extension"}` that it cannot read back itself; export writes that
//!   object as plain JSON, which crawlee JS reads, so keys and content types survive exactly.
//!
//! A file without metadata (an `INPUT.json` written by hand) gets its key from the file name minus
//! the extension and its content type from the extension, as crawlee JS reads it. Each store folder
//! may hold `__metadata__.json` with the store's `id` and `name`. Keys and store names that break
//! kvstore's rules are reported by name and counted, never dropped silently.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::walk;
use crate::model::{format_millis, RecordKey, RecordMeta, StoreInfo, StoreName, User};
use crate::storage::{BodyInput, LocalBody, StorageError, Store, WriteOutcome};

const METADATA_FILE: &str = "__metadata__.json";
const RECORD_METADATA_SUFFIX: &str = ".__metadata__.json";
const STORES_FOLDER: &str = "key_value_stores";
/// The folder of Crawlee's default store.
const DEFAULT_STORE: &str = "default";
/// Bodies larger than this are copied through a spool file rather than read into memory.
const IN_MEMORY_BODY_MAX: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Invalid(String),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
    move |source| TransferError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The file layout `kvstore export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// What crawlee-python 1.x writes and reads.
    Python,
    /// What crawlee JS (`@crawlee/memory-storage`) and the Apify CLI write and read.
    Js,
}

/// Something in the folder that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The store folder's name.
    pub store: String,
    /// The record's key where known, else the file's path inside the store folder.
    pub item: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub stores: u64,
    pub records: u64,
    pub bytes: u64,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExportReport {
    pub stores: u64,
    pub records: u64,
    pub bytes: u64,
}

/// `DIR/key_value_stores` when `DIR` is a storage folder, or `DIR` itself when it is that folder.
fn stores_folder(dir: &Path) -> Result<PathBuf, TransferError> {
    let nested = dir.join(STORES_FOLDER);
    if nested.is_dir() {
        return Ok(nested);
    }
    if dir.file_name().is_some_and(|n| n == STORES_FOLDER) && dir.is_dir() {
        return Ok(dir.to_owned());
    }
    Err(TransferError::Invalid(format!(
        "{} has no {STORES_FOLDER} folder: give the Crawlee storage folder (usually ./storage)",
        dir.display()
    )))
}

fn progress_bar(total: u64, show: bool, unit: &str) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    let template = format!(
        "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left) {{msg}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

// ---------------------------------------------------------------------------------------------
// import

/// One record found in a store folder.
#[derive(Debug)]
struct FoundRecord {
    key: RecordKey,
    content_type: String,
    path: PathBuf,
}

/// What one store folder holds, read before anything is written.
#[derive(Debug)]
struct FoundStore {
    folder: String,
    /// `None`: an unnamed store (exported by kvstore with its id as the folder name).
    name: Result<Option<StoreName>, String>,
    records: Vec<FoundRecord>,
    rejected: Vec<Rejected>,
}

/// Loads every store folder under `dir` into stores owned by `owner`. A store of the same name is
/// reused and records of the same key are overwritten, so running it twice gives the same result.
pub async fn import(
    store: &dyn Store,
    dir: &Path,
    owner: &User,
    progress: bool,
) -> Result<ImportReport, TransferError> {
    let root = stores_folder(dir)?;
    let found = tokio::task::spawn_blocking(move || scan_stores(&root))
        .await
        .map_err(|e| TransferError::Invalid(e.to_string()))??;
    let total = found.iter().map(|s| s.records.len() as u64).sum();
    let bar = progress_bar(total, progress, "records");
    let mut report = ImportReport::default();
    for folder in found {
        report.rejected.extend(folder.rejected);
        let name = match folder.name {
            Ok(name) => name,
            Err(reason) => {
                report
                    .rejected
                    .extend(folder.records.iter().map(|r| Rejected {
                        store: folder.folder.clone(),
                        item: r.key.to_string(),
                        reason: "its store was not imported".to_owned(),
                    }));
                report.rejected.push(Rejected {
                    store: folder.folder.clone(),
                    item: "(the store)".to_owned(),
                    reason,
                });
                bar.inc(folder.records.len() as u64);
                continue;
            }
        };
        bar.set_message(folder.folder.clone());
        let (info, _) = store
            .store_get_or_create(StoreInfo::new(owner.id.clone(), name, None))
            .await?;
        for record in folder.records {
            let (body, len) = read_body(&record.path, store.spool_dir()).await?;
            match store
                .record_put(&info.id, &record.key, &record.content_type, body)
                .await?
            {
                WriteOutcome::Written => {}
                WriteOutcome::StoreMissing => {
                    return Err(TransferError::Invalid(format!(
                        "the store for {} was deleted during the import",
                        folder.folder
                    )))
                }
            }
            report.records += 1;
            report.bytes += len;
            bar.inc(1);
        }
        report.stores += 1;
    }
    bar.finish_with_message("done");
    Ok(report)
}

/// Small bodies in memory; large ones copied into the backend's spool folder.
async fn read_body(path: &Path, spool_dir: PathBuf) -> Result<(BodyInput, u64), TransferError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let len = std::fs::metadata(&path).map_err(io_at(&path))?.len();
        if len <= IN_MEMORY_BODY_MAX {
            let bytes = std::fs::read(&path).map_err(io_at(&path))?;
            let len = bytes.len() as u64;
            return Ok((BodyInput::Bytes(bytes.into()), len));
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&spool_dir).map_err(io_at(&spool_dir))?;
        let mut source = std::fs::File::open(&path).map_err(io_at(&path))?;
        let len = std::io::copy(&mut source, tmp.as_file_mut()).map_err(io_at(&path))?;
        Ok((
            BodyInput::File {
                path: tmp.into_temp_path(),
                len,
            },
            len,
        ))
    })
    .await
    .map_err(|e| TransferError::Invalid(e.to_string()))?
}

fn scan_stores(root: &Path) -> Result<Vec<FoundStore>, TransferError> {
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io_at(root))? {
        let entry = entry.map_err(io_at(root))?;
        if entry.file_type().map_err(io_at(&entry.path()))?.is_dir() {
            folders.push(entry.path());
        }
    }
    folders.sort();
    folders.iter().map(|f| scan_store(f)).collect()
}

/// Reads one store folder: its name, its records with their content types, and what cannot be
/// imported.
fn scan_store(dir: &Path) -> Result<FoundStore, TransferError> {
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rejected = Vec::new();
    let reject = |rejected: &mut Vec<Rejected>, item: &str, reason: String| {
        rejected.push(Rejected {
            store: folder.clone(),
            item: item.to_owned(),
            reason,
        });
    };

    // File names in this folder (sorted, so that reports and imports are repeatable).
    let mut files = BTreeMap::<String, PathBuf>::new();
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_at(&path))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            let shown = entry.file_name().to_string_lossy().into_owned();
            reject(
                &mut rejected,
                &shown,
                "the file name is not UTF-8".to_owned(),
            );
            continue;
        };
        if file_type.is_dir() {
            // crawlee JS writes a key with '/' as nested folders; such keys are not allowed here.
            for nested in files_under(&path)? {
                let shown = nested
                    .strip_prefix(dir)
                    .unwrap_or(&nested)
                    .to_string_lossy()
                    .into_owned();
                reject(
                    &mut rejected,
                    &shown,
                    "a file in a subfolder: record keys cannot contain '/'".to_owned(),
                );
            }
        } else if file_type.is_file() {
            files.insert(name, path);
        }
    }

    let store_meta = match files.remove(METADATA_FILE) {
        Some(path) => match read_json(&path) {
            Ok(v) => Some(v),
            Err(reason) => {
                reject(&mut rejected, METADATA_FILE, reason);
                None
            }
        },
        None => None,
    };
    let name = store_name(&folder, store_meta.as_ref());

    let mut records = Vec::new();
    let mut keys = HashSet::new();
    let mut claimed = HashSet::new();
    let metadata_files: Vec<String> = files
        .keys()
        .filter(|n| n.ends_with(RECORD_METADATA_SUFFIX))
        .cloned()
        .collect();
    for meta_name in &metadata_files {
        claimed.insert(meta_name.clone());
        let meta = match read_json(&files[meta_name]) {
            Ok(v) => v,
            Err(reason) => {
                reject(&mut rejected, meta_name, reason);
                continue;
            }
        };
        let stem = &meta_name[..meta_name.len() - RECORD_METADATA_SUFFIX.len()];
        let Some(key) = meta.get("key").and_then(Value::as_str) else {
            reject(
                &mut rejected,
                meta_name,
                "the metadata has no \"key\"".to_owned(),
            );
            continue;
        };
        let content_type = meta
            .get("content_type")
            .or_else(|| meta.get("contentType"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        // Python: the value file is the stem; JS: `<key>.<extension>`, or `<key>` alone.
        let mut candidates = vec![stem.to_owned()];
        if let Some(ext) = meta.get("extension").and_then(Value::as_str) {
            candidates.insert(0, format!("{stem}.{ext}"));
        }
        let Some(value_name) = candidates
            .into_iter()
            .find(|c| files.contains_key(c) && !c.ends_with(RECORD_METADATA_SUFFIX))
        else {
            reject(
                &mut rejected,
                key,
                format!("{meta_name} has no value file next to it"),
            );
            continue;
        };
        claimed.insert(value_name.clone());
        let content_type = content_type.unwrap_or_else(|| content_type_of(&value_name));
        add_record(
            &mut records,
            &mut keys,
            &mut rejected,
            &folder,
            key,
            content_type,
            files[&value_name].clone(),
        );
    }
    for (file_name, path) in &files {
        if claimed.contains(file_name) {
            continue;
        }
        let key = key_of_plain_file(file_name);
        add_record(
            &mut records,
            &mut keys,
            &mut rejected,
            &folder,
            key,
            content_type_of(file_name),
            path.clone(),
        );
    }
    records.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    Ok(FoundStore {
        folder,
        name,
        records,
        rejected,
    })
}

fn add_record(
    records: &mut Vec<FoundRecord>,
    keys: &mut HashSet<String>,
    rejected: &mut Vec<Rejected>,
    folder: &str,
    key: &str,
    content_type: String,
    path: PathBuf,
) {
    let reason = match RecordKey::parse(key) {
        Ok(_) if keys.contains(key) => {
            "two files give this key (e.g. the same key with two extensions)".to_owned()
        }
        Ok(parsed) => {
            keys.insert(key.to_owned());
            records.push(FoundRecord {
                key: parsed,
                content_type,
                path,
            });
            return;
        }
        Err(e) => e.0,
    };
    rejected.push(Rejected {
        store: folder.to_owned(),
        item: key.to_owned(),
        reason,
    });
}

/// The store's name: the metadata's `name`, else the folder's name. A store kvstore exported
/// unnamed (folder named by its id, no name) comes back unnamed.
fn store_name(folder: &str, meta: Option<&Value>) -> Result<Option<StoreName>, String> {
    let meta_name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
    let meta_id = meta.and_then(|m| m.get("id")).and_then(Value::as_str);
    if meta_name.is_none() && meta_id == Some(folder) {
        return Ok(None);
    }
    let name = meta_name.unwrap_or(folder);
    StoreName::parse(name).map(Some).map_err(|e| e.0)
}

/// JSON from a file; a JSON string holding JSON (crawlee JS's record metadata) is unwrapped.
fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let value: Value =
        serde_json::from_slice(&text).map_err(|e| format!("the metadata is not JSON: {e}"))?;
    match value {
        Value::String(inner) => serde_json::from_str(&inner)
            .map_err(|e| format!("the metadata string is not JSON: {e}")),
        other => Ok(other),
    }
}

/// A file without metadata: `INPUT.json` holds the key `INPUT` (as crawlee JS reads it).
fn key_of_plain_file(file_name: &str) -> &str {
    match file_name.rfind('.') {
        Some(dot) if dot > 0 && dot + 1 < file_name.len() => &file_name[..dot],
        _ => file_name,
    }
}

/// The content type a file's extension suggests, with `charset=utf-8` for text and JSON as crawlee
/// gives it; `application/octet-stream` when the extension says nothing.
fn content_type_of(file_name: &str) -> String {
    let Some(mime) = mime_guess::from_path(file_name).first() else {
        return "application/octet-stream".to_owned();
    };
    let essence = mime.essence_str();
    if mime.type_() == mime_guess::mime::TEXT || essence == "application/json" {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_owned()
    }
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>, TransferError> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(io_at(&d))? {
            let entry = entry.map_err(io_at(&d))?;
            if entry.file_type().map_err(io_at(&entry.path()))?.is_dir() {
                pending.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// export

/// Writes `owner`'s stores (all of them, or those named in `only`) under `dir/key_value_stores/`
/// in `layout`. Each store's folder must not exist yet, so nothing already there is mixed in.
pub async fn export(
    store: &dyn Store,
    dir: &Path,
    owner: &User,
    only: &[StoreName],
    layout: Layout,
    progress: bool,
) -> Result<ExportReport, TransferError> {
    let mut stores = walk::stores_of(store, &owner.id).await?;
    if !only.is_empty() {
        let missing: Vec<&str> = only
            .iter()
            .filter(|n| !stores.iter().any(|s| s.name.as_ref() == Some(*n)))
            .map(StoreName::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(TransferError::Invalid(format!(
                "{} has no store named {}",
                owner.username,
                missing.join(", ")
            )));
        }
        stores.retain(|s| s.name.as_ref().is_some_and(|n| only.contains(n)));
    }
    let root = dir.join(STORES_FOLDER);
    for s in &stores {
        let folder = root.join(folder_name(s));
        if folder.exists() {
            return Err(TransferError::Invalid(format!(
                "{} already exists; export into a folder without it",
                folder.display()
            )));
        }
    }
    let total = stores.iter().map(|s| s.stats.record_count).sum();
    let bar = progress_bar(total, progress, "records");
    let mut report = ExportReport::default();
    for info in &stores {
        let folder = root.join(folder_name(info));
        bar.set_message(folder_name(info));
        std::fs::create_dir_all(&folder).map_err(io_at(&folder))?;
        write_file(
            &folder.join(METADATA_FILE),
            store_metadata(info, owner, layout).as_bytes(),
        )?;
        export_records(store, info, &folder, layout, &bar, &mut report).await?;
        report.stores += 1;
    }
    bar.finish_with_message("done");
    Ok(report)
}

async fn export_records(
    store: &dyn Store,
    info: &StoreInfo,
    folder: &Path,
    layout: Layout,
    bar: &ProgressBar,
    report: &mut ExportReport,
) -> Result<(), TransferError> {
    // A store deleted meanwhile ends its walk early: what was written of it stays.
    let mut pages = walk::KeyPages::new(store, &info.id);
    while let Some(page) = pages.next().await? {
        for meta in &page {
            let Some(record) = store.record_get(&info.id, &meta.key).await? else {
                continue; // deleted since the listing
            };
            let (value_name, metadata) = match layout {
                Layout::Python => python_record_files(&record.meta),
                Layout::Js => js_record_files(&record.meta),
            };
            let value_path = folder.join(value_name);
            let body = record.body.into_local(&store.spool_dir()).await?;
            let path = value_path.clone();
            tokio::task::spawn_blocking(move || write_body(&path, body))
                .await
                .map_err(|e| TransferError::Invalid(e.to_string()))??;
            write_file(&folder.join(metadata.0), metadata.1.as_bytes())?;
            report.records += 1;
            report.bytes += record.meta.size;
            bar.inc(1);
        }
    }
    Ok(())
}

fn folder_name(info: &StoreInfo) -> String {
    info.name
        .as_ref()
        .map_or_else(|| info.id.to_string(), |n| n.to_string())
}

fn store_metadata(info: &StoreInfo, owner: &User, layout: Layout) -> String {
    let name = info.name.as_ref().map(StoreName::as_str);
    let value = match layout {
        // crawlee-python keeps its default store in `default/` with no name.
        Layout::Python => json!({
            "id": info.id.as_str(),
            "name": name.filter(|n| *n != DEFAULT_STORE),
            "accessed_at": format_millis(info.accessed_at),
            "created_at": format_millis(info.created_at),
            "modified_at": format_millis(info.modified_at),
        }),
        Layout::Js => json!({
            "id": info.id.as_str(),
            "name": name,
            "accessedAt": format_millis(info.accessed_at),
            "createdAt": format_millis(info.created_at),
            "modifiedAt": format_millis(info.modified_at),
            "userId": owner.id.as_str(),
        }),
    };
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// crawlee-python: `quote(key, safe='')` and `<that>.__metadata__.json`.
fn python_record_files(meta: &RecordMeta) -> (String, (PathBuf, String)) {
    let file = python_quote(meta.key.as_str());
    let metadata = json!({
        "key": meta.key.as_str(),
        "content_type": meta.content_type,
        "size": meta.size,
    });
    let metadata_name = PathBuf::from(format!("{file}{RECORD_METADATA_SUFFIX}"));
    (
        file,
        (
            metadata_name,
            serde_json::to_string_pretty(&metadata).unwrap_or_default(),
        ),
    )
}

/// crawlee JS: `<key>.<extension>` and `<key>.__metadata__.json`. The value file always carries the
/// extension: crawlee JS looks for that name first and would read a bare `<key>` back as text.
fn js_record_files(meta: &RecordMeta) -> (String, (PathBuf, String)) {
    let key = meta.key.as_str();
    let extension = extension_for(&meta.content_type);
    let metadata = json!({
        "key": key,
        "contentType": meta.content_type,
        "extension": extension,
    })
    .to_string();
    (
        format!("{key}.{extension}"),
        (
            PathBuf::from(format!("{key}{RECORD_METADATA_SUFFIX}")),
            metadata,
        ),
    )
}

/// The file extension crawlee JS (the `mime-types` package) gives a content type.
fn extension_for(content_type: &str) -> String {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let common = match essence.as_str() {
        "application/json" => Some("json"),
        "text/plain" => Some("txt"),
        "text/html" => Some("html"),
        "text/csv" => Some("csv"),
        "text/xml" | "application/xml" => Some("xml"),
        "image/jpeg" => Some("jpeg"),
        "image/png" => Some("png"),
        "application/octet-stream" => Some("bin"),
        _ => None,
    };
    common
        .map(str::to_owned)
        .or_else(|| {
            mime_guess::get_mime_extensions_str(&essence)
                .and_then(|exts| exts.first())
                .map(|e| (*e).to_owned())
        })
        .unwrap_or_else(|| "bin".to_owned())
}

/// Python's `urllib.parse.quote(s, safe='')`: everything but `A-Za-z0-9_.-~` percent-encoded.
fn python_quote(s: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'_')
        .remove(b'.')
        .remove(b'-')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, KEEP).to_string()
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TransferError> {
    std::fs::write(path, bytes).map_err(io_at(path))
}

fn write_body(path: &Path, body: LocalBody) -> Result<(), TransferError> {
    match body {
        LocalBody::Bytes(bytes) => write_file(path, &bytes),
        LocalBody::File(mut file) => {
            let mut out = std::fs::File::create(path).map_err(io_at(path))?;
            std::io::copy(&mut file, &mut out).map_err(io_at(path))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_quote_matches_urllib() {
        // urllib.parse.quote("a!b'(c)~_.-/?", safe='') == 'a%21b%27%28c%29~_.-%2F%3F'
        assert_eq!(python_quote("a!b'(c)~_.-/?"), "a%21b%27%28c%29~_.-%2F%3F");
    }

    #[test]
    fn plain_files_take_key_and_type_from_the_name() {
        assert_eq!(key_of_plain_file("INPUT.json"), "INPUT");
        assert_eq!(key_of_plain_file("a.b.txt"), "a.b");
        assert_eq!(key_of_plain_file("noext"), "noext");
        assert_eq!(key_of_plain_file(".hidden"), ".hidden");
        assert_eq!(
            content_type_of("INPUT.json"),
            "application/json; charset=utf-8"
        );
        assert_eq!(content_type_of("a.txt"), "text/plain; charset=utf-8");
        assert_eq!(content_type_of("a.png"), "image/png");
        assert_eq!(content_type_of("noext"), "application/octet-stream");
    }

    #[test]
    fn extensions_follow_mime_types() {
        assert_eq!(extension_for("application/json; charset=utf-8"), "json");
        assert_eq!(extension_for("text/plain"), "txt");
        assert_eq!(extension_for("image/png"), "png");
        assert_eq!(extension_for("application/x-unknown-thing"), "bin");
    }

    #[test]
    fn store_names_come_from_metadata_then_folder() {
        let named = json!({"id": "x", "name": "my-store"});
        assert_eq!(
            store_name("whatever", Some(&named))
                .ok()
                .flatten()
                .map(|n| n.to_string()),
            Some("my-store".to_owned())
        );
        let default = json!({"id": "vjos5y20ud6UTNPhn", "name": null});
        assert_eq!(
            store_name("default", Some(&default))
                .ok()
                .flatten()
                .map(|n| n.to_string()),
            Some("default".to_owned())
        );
        let unnamed = json!({"id": "vjos5y20ud6UTNPhn", "name": null});
        assert_eq!(store_name("vjos5y20ud6UTNPhn", Some(&unnamed)), Ok(None));
        assert!(store_name("bad_name", None).is_err());
    }
}
