//! `kvstore backup` / `kvstore restore`: every user (with its token hashes), store and record in
//! one file, read from a [`Snapshot`] so that the file holds the state of one instant while
//! writes go on.
//!
//! Format, version 1: the line `kvstore-backup 1`, then one JSON line per item (a user with its
//! token hashes, a store, or a record header followed by exactly `size` body bytes and a newline),
//! and last the line `{"type":"end", …counts, "sha256": <hex of every byte before that line>}`.
//! A file that lacks a matching end line (cut short, damaged) is refused as a whole before
//! anything is restored.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::model::{
    RecordKey, ShareAccess, StoreId, StoreInfo, StoreName, TokenGrant, TokenHash, User, UserId,
    Username,
};
use crate::storage::{
    BodyInput, BodyOutput, ImportBatcher, RecordWrite, Snapshot, StorageError, Store,
};

const MAGIC: &[u8] = b"kvstore-backup 1\n";
/// Records listed from the snapshot at a time.
const PAGE: usize = 1000;
/// Bodies up to this size are restored from memory, larger ones through a spool file.
const IN_MEMORY_BODY_MAX: u64 = 1024 * 1024;
/// The longest item line accepted (a store's schema is the largest part).
const MAX_LINE: u64 = 16 * 1024 * 1024;
/// Bytes of a body sent at a time.
const BODY_CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a usable backup: {0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    #[error("the backup's reader went away")]
    ReaderGone,
}

/// What a backup holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCounts {
    pub users: u64,
    pub stores: u64,
    pub records: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Item {
    #[serde(rename_all = "camelCase")]
    User {
        user: User,
        /// Hex SHA-256 hashes: tokens themselves are never stored anywhere.
        tokens: Vec<String>,
        #[serde(default)]
        read_only_tokens: Vec<String>,
    },
    Share {
        store: StoreId,
        user: UserId,
        access: ShareAccess,
    },
    Store {
        store: StoreInfo,
    },
    #[serde(rename_all = "camelCase")]
    Record {
        store: StoreId,
        key: String,
        content_type: String,
        size: u64,
        version: u64,
    },
    End {
        #[serde(flatten)]
        counts: BackupCounts,
        sha256: String,
    },
}

/// Sends the backup's bytes into `out` as they are produced, hashing them on the way.
struct Sink {
    out: mpsc::Sender<Bytes>,
    hash: Sha256,
}

impl Sink {
    async fn send(&mut self, bytes: Bytes) -> Result<(), BackupError> {
        self.hash.update(&bytes);
        self.out
            .send(bytes)
            .await
            .map_err(|_| BackupError::ReaderGone)
    }

    async fn item(&mut self, item: &Item) -> Result<(), BackupError> {
        let mut line = serde_json::to_vec(item).map_err(|e| BackupError::Invalid(e.to_string()))?;
        line.push(b'\n');
        self.send(line.into()).await
    }
}

/// Writes everything `snapshot` holds into `out`, ending with the end line. An error leaves the
/// stream without its end line, so a reader can tell.
pub async fn write(
    snapshot: &dyn Snapshot,
    out: mpsc::Sender<Bytes>,
) -> Result<BackupCounts, BackupError> {
    let mut sink = Sink {
        out,
        hash: Sha256::new(),
    };
    let mut counts = BackupCounts::default();
    sink.send(Bytes::from_static(MAGIC)).await?;
    let mut users = snapshot.users().await?;
    users.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    for (user, grants) in users {
        let hashes = |read_only: bool| {
            grants
                .iter()
                .filter(|g| g.read_only == read_only)
                .map(|g| hex::encode(g.hash.0))
                .collect()
        };
        let (tokens, read_only_tokens) = (hashes(false), hashes(true));
        sink.item(&Item::User {
            user,
            tokens,
            read_only_tokens,
        })
        .await?;
        counts.users += 1;
    }
    let mut stores = snapshot.stores().await?;
    stores.sort_by(|a, b| a.id.cmp(&b.id));
    for store in stores {
        let id = store.id.clone();
        sink.item(&Item::Store { store }).await?;
        counts.stores += 1;
        let mut after = None;
        loop {
            let page = snapshot.keys(&id, after.take(), PAGE).await?;
            for meta in &page {
                let Some(record) = snapshot.record(&id, &meta.key).await? else {
                    continue;
                };
                sink.item(&Item::Record {
                    store: id.clone(),
                    key: record.meta.key.to_string(),
                    content_type: record.meta.content_type.clone(),
                    size: record.meta.size,
                    version: record.meta.version,
                })
                .await?;
                send_body(&mut sink, record.body, record.meta.size).await?;
                sink.send(Bytes::from_static(b"\n")).await?;
                counts.records += 1;
                counts.bytes += record.meta.size;
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.key.to_string()),
                _ => break,
            }
        }
    }
    // Shares last: a restore creates them once their stores and users exist.
    for (store, user, access) in snapshot.shares().await? {
        sink.item(&Item::Share {
            store,
            user,
            access,
        })
        .await?;
    }
    let sha256 = hex::encode(sink.hash.clone().finalize());
    let mut end = serde_json::to_vec(&Item::End { counts, sha256 })
        .map_err(|e| BackupError::Invalid(e.to_string()))?;
    end.push(b'\n');
    sink.out
        .send(end.into())
        .await
        .map_err(|_| BackupError::ReaderGone)?;
    Ok(counts)
}

async fn send_body(sink: &mut Sink, body: BodyOutput, size: u64) -> Result<(), BackupError> {
    match body {
        BodyOutput::Bytes(bytes) => sink.send(bytes).await,
        BodyOutput::File(file) => {
            let mut file = tokio::fs::File::from_std(file);
            let mut left = size;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(BODY_CHUNK).min(BODY_CHUNK);
                let mut buf = vec![0u8; want];
                file.read_exact(&mut buf).await?;
                left -= want as u64;
                sink.send(buf.into()).await?;
            }
            Ok(())
        }
        BodyOutput::Stream(object) => {
            let mut stream = object.open(0, size).await?;
            while let Some(chunk) = stream.next().await {
                sink.send(chunk.map_err(|e| StorageError::Unavailable(e.to_string()))?)
                    .await?;
            }
            Ok(())
        }
    }
}

/// Writes a backup of `store` into the file `to` (on the machine running this).
pub async fn to_file(store: &dyn Store, to: &Path) -> Result<BackupCounts, BackupError> {
    let snapshot = store.snapshot().await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let mut file = tokio::fs::File::create(to).await?;
    let writer = async {
        while let Some(bytes) = rx.recv().await {
            file.write_all(&bytes).await?;
        }
        file.sync_all().await?;
        Ok::<_, BackupError>(())
    };
    let (counts, written) = tokio::join!(write(&*snapshot, tx), writer);
    written?;
    counts
}

/// Moves a finished backup file into place and syncs the directory, so that the rename itself
/// survives a crash or power loss (the file's own data was synced before). Blocking.
pub fn install(partial: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(partial, to)?;
    let dir = match to.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

// ---------------------------------------------------------------------------------------------
// reading

/// Reads items from a backup file, checking the hash as it goes.
struct Reader {
    input: BufReader<tokio::fs::File>,
    hash: Sha256,
}

impl Reader {
    async fn open(path: &Path) -> Result<Self, BackupError> {
        let file = tokio::fs::File::open(path).await?;
        let mut reader = Self {
            input: BufReader::with_capacity(256 * 1024, file),
            hash: Sha256::new(),
        };
        let mut magic = vec![0u8; MAGIC.len()];
        let read = reader.input.read_exact(&mut magic).await;
        if read.is_err() || magic != MAGIC {
            return Err(BackupError::Invalid(
                "it does not start with \"kvstore-backup 1\"".into(),
            ));
        }
        reader.hash.update(&magic);
        Ok(reader)
    }

    /// The next item; the end line is checked against the hash of everything before it.
    async fn item(&mut self) -> Result<Item, BackupError> {
        let mut line = Vec::new();
        (&mut self.input)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if line.last() != Some(&b'\n') {
            return Err(BackupError::Invalid(
                "it ends early (no end line): the backup did not finish".into(),
            ));
        }
        let item: Item = serde_json::from_slice(&line)
            .map_err(|e| BackupError::Invalid(format!("an item line is not valid: {e}")))?;
        if let Item::End { sha256, .. } = &item {
            let actual = hex::encode(self.hash.clone().finalize());
            if &actual != sha256 {
                return Err(BackupError::Invalid(
                    "its checksum does not match: the file is damaged".into(),
                ));
            }
        } else {
            self.hash.update(&line);
        }
        Ok(item)
    }

    /// Reads a record's body and the newline after it into `sink`.
    async fn body(
        &mut self,
        size: u64,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), BackupError> {
        let mut left = size;
        let mut buf = vec![0u8; BODY_CHUNK];
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(BODY_CHUNK).min(BODY_CHUNK);
            self.input
                .read_exact(&mut buf[..want])
                .await
                .map_err(|_| BackupError::Invalid("it ends inside a record".into()))?;
            self.hash.update(&buf[..want]);
            sink(&buf[..want])?;
            left -= want as u64;
        }
        let mut newline = [0u8; 1];
        self.input
            .read_exact(&mut newline)
            .await
            .map_err(|_| BackupError::Invalid("it ends inside a record".into()))?;
        if newline != *b"\n" {
            return Err(BackupError::Invalid(
                "a record's size does not match".into(),
            ));
        }
        self.hash.update(newline);
        Ok(())
    }
}

/// Reads the whole file and checks its structure and checksum; returns what it holds.
pub async fn verify(path: &Path) -> Result<BackupCounts, BackupError> {
    let mut reader = Reader::open(path).await?;
    let mut seen = BackupCounts::default();
    loop {
        match reader.item().await? {
            Item::User { .. } => seen.users += 1,
            Item::Store { .. } => seen.stores += 1,
            Item::Share { .. } => {}
            Item::Record { size, .. } => {
                reader.body(size, |_| Ok(())).await?;
                seen.records += 1;
                seen.bytes += size;
            }
            Item::End { counts, .. } => {
                if counts != seen {
                    return Err(BackupError::Invalid(format!(
                        "it announces {counts:?} but holds {seen:?}"
                    )));
                }
                return Ok(counts);
            }
        }
    }
}

/// Restores the backup at `path` into `store`, which must hold no users yet (a new data directory
/// or an empty database). The file is verified whole first: a damaged one restores nothing.
pub async fn restore(
    store: &Arc<dyn Store>,
    path: &Path,
    progress: bool,
) -> Result<BackupCounts, BackupError> {
    let counts = verify(path).await?;
    if !store.users_list().await?.is_empty() {
        return Err(BackupError::Refused(
            "the target already has users: restore into a new data directory or an empty database"
                .into(),
        ));
    }
    let bar = if progress {
        ProgressBar::new(counts.records)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} records ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    let mut reader = Reader::open(path).await?;
    let mut stores = Vec::new();
    // Records go in batches: one commit (one fsync) per record would take hours for a large store.
    let mut batch = ImportBatcher::default();
    loop {
        match reader.item().await? {
            Item::User {
                user,
                tokens,
                read_only_tokens,
            } => {
                Username::parse(user.username.as_str()).map_err(|e| BackupError::Invalid(e.0))?;
                let grant = |t: &String, read_only: bool| {
                    hex::decode(t)
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .map(|hash| TokenGrant {
                            hash: TokenHash(hash),
                            read_only,
                        })
                        .ok_or_else(|| BackupError::Invalid("a token hash is not valid".into()))
                };
                let grants = tokens
                    .iter()
                    .map(|t| grant(t, false))
                    .chain(read_only_tokens.iter().map(|t| grant(t, true)))
                    .collect::<Result<Vec<_>, _>>()?;
                store.user_import(&user, &grants).await?;
            }
            Item::Share {
                store: id,
                user,
                access,
            } => {
                store.share_set(&id, &user, Some(access)).await?;
            }
            Item::Store { store: info } => {
                if let Some(name) = &info.name {
                    StoreName::parse(name.as_str()).map_err(|e| BackupError::Invalid(e.0))?;
                }
                store.store_import(&info).await?;
                stores.push(info);
            }
            Item::Record {
                store: id,
                key,
                content_type,
                size,
                version,
            } => {
                let key = RecordKey::parse(&key).map_err(|e| BackupError::Invalid(e.0))?;
                let body = read_body(&mut reader, size, store.spool_dir()).await?;
                let record = RecordWrite {
                    key,
                    content_type,
                    body,
                    version,
                };
                batch.push(&**store, &id, record).await?;
                bar.inc(1);
            }
            Item::End { .. } => break,
        }
    }
    batch.flush(&**store).await?;
    // Writing the records moved counters and timestamps: set every store back exactly.
    for info in &stores {
        store.store_import(info).await?;
    }
    bar.finish();
    Ok(counts)
}

async fn read_body(
    reader: &mut Reader,
    size: u64,
    spool_dir: std::path::PathBuf,
) -> Result<BodyInput, BackupError> {
    if size <= IN_MEMORY_BODY_MAX {
        let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .body(size, |chunk| {
                body.extend_from_slice(chunk);
                Ok(())
            })
            .await?;
        return Ok(BodyInput::Bytes(body.into()));
    }
    let tmp = tempfile::NamedTempFile::new_in(spool_dir)?;
    let mut file = std::io::BufWriter::new(tmp.reopen()?);
    reader
        .body(size, |chunk| std::io::Write::write_all(&mut file, chunk))
        .await?;
    std::io::Write::flush(&mut file)?;
    Ok(BodyInput::File {
        path: tmp.into_temp_path(),
        len: size,
    })
}
