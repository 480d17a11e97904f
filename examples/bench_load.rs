//! Bulk loader for the benchmark suite (`bench/run.sh`): fills one store with N records through the
//! public storage API (`kvstore::storage`), not through HTTP: `records_write` batches of 1000
//! records (one transaction each), a few batches in flight.
//!
//! ```sh
//! cargo run --release --example bench_load -- --data-dir DIR --keys 1000000 --token TOKEN
//! cargo run --release --example bench_load -- --database-url postgres://... --keys 100000 --token TOKEN
//! ```
//!
//! Keys are `k00000000`, `k00000001`, … (`k` and 8 digits, so byte order is numeric order); every
//! record holds `--value-bytes` bytes except `--hot` evenly spaced "hot" keys (every N/hot-th key,
//! starting at `k00000000`) that hold `--hot-bytes` bytes: the records the GET/PUT workloads use.
//! On a data directory or database without users, the user `admin` is created with `--token`.
//! The last line printed is `store_id=<id>`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};

use kvstore::model::{RecordKey, StoreInfo, StoreName, Token};
use kvstore::storage::postgres::PgOptions;
use kvstore::storage::{self, Backend, BodyInput, RecordWrite, Store, WriteOutcome};

struct Args {
    backend: Backend,
    keys: u64,
    value_bytes: usize,
    hot: u64,
    hot_bytes: usize,
    store: String,
    token: String,
    extra_stores: u64,
    concurrency: usize,
}

const USAGE: &str = "usage: bench_load (--data-dir DIR | --database-url URL) --token TOKEN \
[--keys N (10000)] [--value-bytes B (64)] [--hot H (1000)] [--hot-bytes B (1024)] \
[--store NAME (bench)] [--extra-stores M (0)] [--concurrency C (batches in flight, 4)]";

/// Records per `records_write` call.
const BATCH: u64 = 1000;

fn parse_args() -> Result<Args, String> {
    let mut data_dir = None;
    let mut database_url = None;
    let mut keys = 10_000u64;
    let mut value_bytes = 64usize;
    let mut hot = 1000u64;
    let mut hot_bytes = 1024usize;
    let mut store = "bench".to_owned();
    let mut token = None;
    let mut extra_stores = 0u64;
    let mut concurrency = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--data-dir" => data_dir = Some(value()?),
            "--database-url" => database_url = Some(value()?),
            "--keys" => keys = num(value()?)?,
            "--value-bytes" => value_bytes = usize::try_from(num(value()?)?).unwrap_or(64),
            "--hot" => hot = num(value()?)?,
            "--hot-bytes" => hot_bytes = usize::try_from(num(value()?)?).unwrap_or(1024),
            "--store" => store = value()?,
            "--token" => token = Some(value()?),
            "--extra-stores" => extra_stores = num(value()?)?,
            "--concurrency" => concurrency = Some(usize::try_from(num(value()?)?).unwrap_or(64)),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let token = token.ok_or_else(|| format!("--token is required\n{USAGE}"))?;
    if keys > 99_999_999 {
        return Err("--keys: at most 99999999 (keys are k + 8 digits)".to_owned());
    }
    let (backend, default_concurrency) = match (data_dir, database_url) {
        (Some(dir), None) => (Backend::embedded(dir), 4),
        (None, Some(url)) => (
            Backend::Postgres {
                url,
                options: PgOptions {
                    max_connections: 64,
                    acquire_timeout: Duration::from_secs(60),
                    op_timeout: Duration::from_secs(120),
                    ..PgOptions::default()
                },
            },
            4,
        ),
        _ => {
            return Err(format!(
                "give exactly one of --data-dir, --database-url\n{USAGE}"
            ))
        }
    };
    Ok(Args {
        backend,
        keys,
        value_bytes,
        hot: hot.min(keys),
        hot_bytes,
        store,
        token,
        extra_stores,
        concurrency: concurrency.unwrap_or(default_concurrency).max(1),
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(load(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn load(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let store = storage::open(&args.backend).await?;
    let result = fill(&store, &args).await;
    store.close().await?;
    let id = result?;
    println!("store_id={id}");
    Ok(())
}

async fn fill(store: &Arc<dyn Store>, args: &Args) -> Result<String, Box<dyn std::error::Error>> {
    let token = Token::from_secret(args.token.clone());
    storage::ensure_first_user(&**store, Some(token.clone())).await?;
    let user = store
        .user_by_token(&token.hash())
        .await?
        .ok_or("the data already has users and --token belongs to none of them")?
        .user;
    let name = StoreName::parse(&args.store)?;
    let (info, _) = store
        .store_get_or_create(StoreInfo::new(user.id.clone(), Some(name), None))
        .await?;
    for i in 0..args.extra_stores {
        let name = StoreName::parse(&format!("extra-{i:05}"))?;
        store
            .store_get_or_create(StoreInfo::new(user.id.clone(), Some(name), None))
            .await?;
    }

    let small = Bytes::from(vec![b'v'; args.value_bytes]);
    let big = Bytes::from(vec![b'h'; args.hot_bytes]);
    let step = args
        .keys
        .checked_div(args.hot)
        .map_or(u64::MAX, |s| s.max(1));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let report_every = (args.keys / 20).max(1);
    let id = info.id.clone();
    // Batches of BATCH records through `records_write` (one transaction each), a few in flight so
    // that the embedded writer's group commit and PostgreSQL's backends overlap them.
    let batches = (0..args.keys).step_by(BATCH as usize);
    let mut imports = stream::iter(batches)
        .map(|first| {
            let store = store.clone();
            let id = id.clone();
            let records = (first..(first + BATCH).min(args.keys))
                .map(|i| {
                    let body = if i % step == 0 && i / step < args.hot {
                        big.clone()
                    } else {
                        small.clone()
                    };
                    Ok(RecordWrite {
                        key: RecordKey::parse(&format!("k{i:08}"))?,
                        content_type: "application/octet-stream".to_owned(),
                        body: BodyInput::Bytes(body),
                        version: rand::random(),
                    })
                })
                .collect::<Result<Vec<_>, kvstore::model::Invalid>>();
            let done = done.clone();
            async move {
                let records = records?;
                let n = records.len() as u64;
                if store.records_write(&id, records).await? != WriteOutcome::Written {
                    return Err("the store vanished during the load".into());
                }
                let before = done.fetch_add(n, Ordering::Relaxed);
                if (before + n) / report_every > before / report_every {
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "bench_load: {}/{} records, {:.0} records/s",
                        before + n,
                        args.keys,
                        (before + n) as f64 / secs.max(1e-9)
                    );
                }
                Ok::<(), Box<dyn std::error::Error>>(())
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(result) = imports.next().await {
        result?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "bench_load: loaded {} records in {secs:.1} s ({:.0} records/s, {} in flight)",
        args.keys,
        args.keys as f64 / secs.max(1e-9),
        args.concurrency
    );
    Ok(info.id.to_string())
}
