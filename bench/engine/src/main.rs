//! Issue 15 prototype: random-order durable writes at scale in three layouts.
//!
//! * `redb-inline`: (store, key) -> header + body in one redb table (kvstore's layout today);
//! * `redb-vlog`:   bodies appended to a value log, fsync'd before the redb commit that holds
//!   (store, key) -> header + (offset, len) and the log's committed length;
//! * `fjall`:       (store \0 key) -> header + body in an LSM tree with key-value separation.
//!
//! Each commit carries `--batch` records (like the writer thread grouping concurrent PUTs) and is
//! durable (redb `Durability::Immediate`, fsync of the log; fjall `PersistMode::SyncAll`).
//! At each checkpoint it prints the write cost over the last window, write and space
//! amplification, and the time to list 1000 keys from a random start, warm and cold.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Stands in for kvstore's per-record metadata (size, modified time, content type, flags).
const HEADER_LEN: usize = 32;
const LIST_LIMIT: usize = 1000;

#[derive(Parser)]
#[command(about = "redb inline vs redb + value log vs fjall: random-order durable writes")]
struct Args {
    /// Directory for the databases (one subdirectory per variant, removed afterwards).
    #[arg(long, default_value = "/var/tmp/engine-bench")]
    dir: PathBuf,
    /// Key counts at which to report (the last one is the total written).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,100000,500000,1000000,2000000"
    )]
    checkpoints: Vec<u64>,
    /// Variants to run, one after another.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "redb-inline,redb-vlog,fjall"
    )]
    variants: Vec<String>,
    /// Records per durable commit.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body: usize,
    /// Warm listings per checkpoint.
    #[arg(long, default_value_t = 200)]
    warm_lists: usize,
    /// Cold listings per checkpoint (after dropping the page cache and reopening).
    #[arg(long, default_value_t = 20)]
    cold_lists: usize,
    /// Engine cache (redb's cache, fjall's block cache); kvstore's default is 64 MiB.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    cache_bytes: u64,
    #[arg(long, default_value_t = 15)]
    seed: u64,
    /// Skip the cold listings (dropping the page cache needs root).
    #[arg(long)]
    no_cold: bool,
}

trait Engine {
    /// Writes the batch durably in one commit.
    fn write(&mut self, batch: &[(String, Vec<u8>)]) -> Res<()>;
    /// Lists up to `limit` keys from `start` on, reading what a listing returns (key and size);
    /// returns how many it found.
    fn list(&self, start: &str, limit: usize) -> Res<usize>;
    /// Closes and opens the database again.
    fn reopen(&mut self) -> Res<()>;
}

fn header(body_len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&(body_len as u64).to_le_bytes());
    h[8..16].copy_from_slice(&1_765_000_000_000u64.to_le_bytes());
    h
}

fn size_from_header(v: &[u8]) -> Res<u64> {
    let b: [u8; 8] = v
        .get(..8)
        .ok_or("value shorter than its header")?
        .try_into()?;
    Ok(u64::from_le_bytes(b))
}

fn open_redb(path: &Path, cache: u64) -> Res<Database> {
    Ok(Database::builder()
        .set_cache_size(cache as usize)
        .create(path)?)
}

fn redb_commit(db: &Database, f: impl FnOnce(&redb::WriteTransaction) -> Res<()>) -> Res<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    // As kvstore's writer does.
    txn.set_quick_repair(true);
    f(&txn)?;
    txn.commit()?;
    Ok(())
}

fn redb_list(db: &Database, store: &str, start: &str, limit: usize) -> Res<usize> {
    let txn = db.begin_read()?;
    let table = txn.open_table(RECORDS)?;
    let mut n = 0;
    let mut sum = 0u64;
    for item in table.range::<(&str, &str)>((store, start)..)?.take(limit) {
        let (k, v) = item?;
        if k.value().0 != store {
            break;
        }
        sum += size_from_header(v.value())?;
        n += 1;
    }
    std::hint::black_box(sum);
    Ok(n)
}

struct RedbInline {
    path: PathBuf,
    cache: u64,
    store: String,
    db: Option<Database>,
}

impl RedbInline {
    fn new(dir: &Path, cache: u64, store: &str) -> Res<Self> {
        let path = dir.join("records.redb");
        let db = open_redb(&path, cache)?;
        redb_commit(&db, |t| {
            t.open_table(RECORDS)?;
            Ok(())
        })?;
        Ok(Self {
            path,
            cache,
            store: store.into(),
            db: Some(db),
        })
    }
    fn db(&self) -> &Database {
        self.db.as_ref().expect("database is open")
    }
}

impl Engine for RedbInline {
    fn write(&mut self, batch: &[(String, Vec<u8>)]) -> Res<()> {
        let store = self.store.clone();
        redb_commit(self.db(), |t| {
            let mut table = t.open_table(RECORDS)?;
            let mut value = Vec::new();
            for (key, body) in batch {
                value.clear();
                value.extend_from_slice(&header(body.len()));
                value.extend_from_slice(body);
                table.insert((store.as_str(), key.as_str()), value.as_slice())?;
            }
            Ok(())
        })
    }
    fn list(&self, start: &str, limit: usize) -> Res<usize> {
        redb_list(self.db(), &self.store, start, limit)
    }
    fn reopen(&mut self) -> Res<()> {
        drop(self.db.take());
        self.db = Some(open_redb(&self.path, self.cache)?);
        Ok(())
    }
}

struct RedbVlog {
    inner: RedbInline,
    log_path: PathBuf,
    log: File,
    log_len: u64,
}

impl RedbVlog {
    fn new(dir: &Path, cache: u64, store: &str) -> Res<Self> {
        let inner = RedbInline::new(dir, cache, store)?;
        let log_path = dir.join("values.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        Ok(Self {
            inner,
            log_path,
            log,
            log_len: 0,
        })
    }
}

impl Engine for RedbVlog {
    fn write(&mut self, batch: &[(String, Vec<u8>)]) -> Res<()> {
        // Each log entry names its key, so that a garbage collector can tell live entries from
        // dead ones by looking the key up: [key len u16][key][body len u32][body].
        let mut buf = Vec::with_capacity(batch.len() * (self.inner.store.len() + 64 + 1024));
        let mut pointers = Vec::with_capacity(batch.len());
        for (key, body) in batch {
            let full_key = format!("{}/{}", self.inner.store, key);
            buf.extend_from_slice(&(full_key.len() as u16).to_le_bytes());
            buf.extend_from_slice(full_key.as_bytes());
            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            let offset = self.log_len + buf.len() as u64;
            buf.extend_from_slice(body);
            let mut value = header(body.len()).to_vec();
            value.extend_from_slice(&offset.to_le_bytes());
            value.extend_from_slice(&(body.len() as u32).to_le_bytes());
            pointers.push((key.as_str(), value));
        }
        // The bodies are durable before the commit that points at them; a crash in between
        // leaves a tail past the committed length, which opening truncates.
        self.log.write_all(&buf)?;
        self.log.sync_data()?;
        let new_len = self.log_len + buf.len() as u64;
        let store = self.inner.store.clone();
        redb_commit(self.inner.db(), |t| {
            let mut table = t.open_table(RECORDS)?;
            for (key, value) in &pointers {
                table.insert((store.as_str(), *key), value.as_slice())?;
            }
            t.open_table(META)?.insert("log_len", new_len)?;
            Ok(())
        })?;
        self.log_len = new_len;
        Ok(())
    }
    fn list(&self, start: &str, limit: usize) -> Res<usize> {
        self.inner.list(start, limit)
    }
    fn reopen(&mut self) -> Res<()> {
        self.inner.reopen()?;
        let committed = {
            let txn = self.inner.db().begin_read()?;
            let meta = txn.open_table(META)?;
            let len = meta.get("log_len")?.map(|v| v.value());
            len.unwrap_or(0)
        };
        let log = OpenOptions::new().append(true).open(&self.log_path)?;
        if log.metadata()?.len() != committed {
            log.set_len(committed)?;
        }
        self.log = log;
        self.log_len = committed;
        Ok(())
    }
}

struct Fjall {
    dir: PathBuf,
    cache: u64,
    store: String,
    db: Option<(fjall::Database, fjall::Keyspace)>,
}

impl Fjall {
    fn open(dir: &Path, cache: u64) -> Res<(fjall::Database, fjall::Keyspace)> {
        let db = fjall::Database::builder(dir).cache_size(cache).open()?;
        let ks = db.keyspace("records", || {
            fjall::KeyspaceCreateOptions::default()
                .with_kv_separation(Some(fjall::KvSeparationOptions::default()))
        })?;
        Ok((db, ks))
    }
    fn new(dir: &Path, cache: u64, store: &str) -> Res<Self> {
        let db = Some(Self::open(dir, cache)?);
        Ok(Self {
            dir: dir.into(),
            cache,
            store: store.into(),
            db,
        })
    }
    fn key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.store.len() + 1 + key.len());
        k.extend_from_slice(self.store.as_bytes());
        k.push(0);
        k.extend_from_slice(key.as_bytes());
        k
    }
}

impl Engine for Fjall {
    fn write(&mut self, batch: &[(String, Vec<u8>)]) -> Res<()> {
        let (db, ks) = self.db.as_ref().ok_or("closed")?;
        let mut b = db.batch().durability(Some(fjall::PersistMode::SyncAll));
        for (key, body) in batch {
            let mut value = header(body.len()).to_vec();
            value.extend_from_slice(body);
            b.insert(ks, self.key(key), value);
        }
        b.commit()?;
        Ok(())
    }
    fn list(&self, start: &str, limit: usize) -> Res<usize> {
        let (_, ks) = self.db.as_ref().ok_or("closed")?;
        let prefix = self.key("");
        let mut n = 0;
        for guard in ks.range(self.key(start)..).take(limit) {
            // The key only: with key-value separation the size sits in the index entry beside
            // it, and asking for the value would read the blob file, which a listing must not.
            let (k, _) = guard.into_inner_if(|_| false)?;
            if !k.starts_with(&prefix) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
    fn reopen(&mut self) -> Res<()> {
        drop(self.db.take());
        self.db = Some(Self::open(&self.dir, self.cache)?);
        Ok(())
    }
}

fn proc_io() -> Res<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/io")?;
    let field = |name: &str| -> Res<u64> {
        let line = s
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or("no such field in /proc/self/io")?;
        Ok(line[name.len()..].trim().parse()?)
    };
    Ok((field("read_bytes:")?, field("write_bytes:")?))
}

fn dir_size(p: &Path) -> Res<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(p)? {
        let entry = entry?;
        let md = entry.metadata()?;
        total += if md.is_dir() {
            dir_size(&entry.path())?
        } else {
            md.len()
        };
    }
    Ok(total)
}

fn drop_page_cache() -> Res<()> {
    let status = std::process::Command::new("sync").status()?;
    if !status.success() {
        return Err("sync failed".into());
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .map_err(|e| format!("cannot drop the page cache (needs root; or pass --no-cold): {e}"))?;
    Ok(())
}

fn random_key(rng: &mut fastrand::Rng) -> String {
    (0..20).map(|_| rng.alphanumeric()).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Times `count` listings of 1000 keys from random starts (wrapping round at the end of the store).
fn time_lists(e: &dyn Engine, rng: &mut fastrand::Rng, count: usize) -> Res<Vec<f64>> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = random_key(rng);
        let t = Instant::now();
        let mut n = e.list(&start, LIST_LIMIT)?;
        if n < LIST_LIMIT {
            n += e.list("", LIST_LIMIT - n)?;
        }
        times.push(ms(t.elapsed()));
        if n != LIST_LIMIT {
            return Err(format!("listing found {n} keys, not {LIST_LIMIT}").into());
        }
    }
    Ok(times)
}

fn run_variant(args: &Args, name: &str) -> Res<()> {
    let dir = args.dir.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let store = "kGzQ7pW3xYtR8vNb2"; // 17 characters, like an Apify store id
    let mut engine: Box<dyn Engine> = match name {
        "redb-inline" => Box::new(RedbInline::new(&dir, args.cache_bytes, store)?),
        "redb-vlog" => Box::new(RedbVlog::new(&dir, args.cache_bytes, store)?),
        "fjall" => Box::new(Fjall::new(&dir, args.cache_bytes, store)?),
        other => return Err(format!("unknown variant {other}").into()),
    };
    // Same keys and bodies for every variant.
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut list_rng = fastrand::Rng::with_seed(args.seed ^ 0x5eed);
    let (_, w0) = proc_io()?;
    let mut written = 0u64;
    let mut user_bytes = 0u64;
    let mut batch: Vec<(String, Vec<u8>)> = Vec::with_capacity(args.batch);
    for &checkpoint in &args.checkpoints {
        let window = checkpoint.saturating_sub(written);
        let mut write_time = Duration::ZERO;
        let mut commit_ms = Vec::new();
        while written < checkpoint {
            batch.clear();
            let n = (args.batch as u64).min(checkpoint - written);
            for _ in 0..n {
                let key = random_key(&mut rng);
                let mut body = vec![0u8; args.body];
                rng.fill(&mut body);
                user_bytes += (store.len() + key.len() + body.len()) as u64;
                batch.push((key, body));
            }
            let t = Instant::now();
            engine.write(&batch)?;
            let d = t.elapsed();
            write_time += d;
            commit_ms.push(ms(d));
            written += n;
        }
        let (_, w) = proc_io()?;
        let size = dir_size(&dir)?;
        let warm = p50(time_lists(engine.as_ref(), &mut list_rng, args.warm_lists)?);
        let (cold, cold_read) = if args.no_cold {
            (f64::NAN, f64::NAN)
        } else {
            drop_page_cache()?;
            engine.reopen()?;
            let (r0, _) = proc_io()?;
            let times = time_lists(engine.as_ref(), &mut list_rng, args.cold_lists)?;
            let (r1, _) = proc_io()?;
            (
                p50(times),
                (r1 - r0) as f64 / args.cold_lists as f64 / 1024.0,
            )
        };
        println!(
            "| {name} | {checkpoint} | {:.1} | {:.1} / {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            write_time.as_secs_f64() * 1e6 / window.max(1) as f64,
            percentile(&mut commit_ms, 0.5),
            percentile(&mut commit_ms, 0.99),
            (w - w0) as f64 / user_bytes as f64,
            size as f64 / user_bytes as f64,
            warm,
            cold,
            cold_read,
        );
        std::io::stdout().flush()?;
    }
    drop(engine);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn main() -> Res<()> {
    let args = Args::parse();
    println!(
        "batch {} records/commit, body {} B, cache {} MiB, checkpoints {:?}",
        args.batch,
        args.body,
        args.cache_bytes >> 20,
        args.checkpoints
    );
    println!("\n| variant | keys | write us/record (window) | commit ms p50 / p99 | write amp | space amp | list 1000 warm p50 ms | cold p50 ms | cold KiB read/list |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for name in &args.variants {
        run_variant(&args, name)?;
    }
    Ok(())
}
