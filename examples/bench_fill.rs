//! Random-order fill for the benchmark suite (`bench/run.sh randfill`): fills a new store through
//! HTTP, the way real writers do, with N records of `--value-bytes` bytes in random key order over
//! `--conns` keep-alive connections, and reports the write rate over each tenth of the fill. With
//! `--list-only`, it only lists pages of 1000 keys at random starts of an already filled store
//! (one request at a time) and reports their latency.
//!
//! ```sh
//! cargo run --release --example bench_fill -- --url http://127.0.0.1:3000 --token T --keys 100000
//! cargo run --release --example bench_fill -- --url … --token T --keys 100000 --store ID --list-only
//! ```
//!
//! Keys are `k00000000` … (`k` and 8 digits). Output lines are `name=value`: `store_id`,
//! `fill_tenth_<i>_rps` and `fill_tenth_<i>_us` (wall time per record over that tenth), `fill_rps`,
//! `errors`, `list_p50_ms`, `list_p99_ms`, `lists`.

// A benchmark tool: a failed unwrap ends the run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

struct Args {
    url: String,
    token: String,
    keys: usize,
    value_bytes: usize,
    conns: usize,
    store: Option<String>,
    name: String,
    list_only: bool,
    lists: usize,
}

const USAGE: &str = "usage: bench_fill --url URL --token TOKEN --keys N [--value-bytes B] \
[--conns C] [--name STORE_NAME] [--store ID --list-only] [--lists N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: String::new(),
        token: String::new(),
        keys: 0,
        value_bytes: 1024,
        conns: 64,
        store: None,
        name: "randfill".into(),
        list_only: false,
        lists: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--list-only" {
            args.list_only = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => args.url = value.trim_end_matches('/').to_owned(),
            "--token" => args.token = value,
            "--keys" => args.keys = number()?,
            "--value-bytes" => args.value_bytes = number()?,
            "--conns" => args.conns = number()?.max(1),
            "--store" => args.store = Some(value),
            "--name" => args.name = value,
            "--lists" => args.lists = number()?.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.url.is_empty() || args.token.is_empty() || args.keys == 0 {
        return Err("--url, --token and --keys are required".into());
    }
    if args.list_only && args.store.is_none() {
        return Err("--list-only needs --store".into());
    }
    Ok(args)
}

fn key(i: usize) -> String {
    format!("k{i:08}")
}

async fn create_store(client: &reqwest::Client, args: &Args) -> Result<String, String> {
    let resp = client
        .post(format!(
            "{}/v2/key-value-stores?name={}",
            args.url, args.name
        ))
        .bearer_auth(&args.token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    body["data"]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or(format!("creating the store: {status} {body}"))
}

/// PUTs every key once, in random order; prints the rate over each tenth.
async fn fill(client: &reqwest::Client, args: &Args, store: &str) {
    let mut order: Vec<u32> = (0..args.keys as u32).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(42));
    let order = Arc::new(order);
    // Bodies are slices of one random buffer at offsets far apart: as incompressible as real
    // data, so that an engine that compresses reports the space it would really take.
    const POOL: usize = 1 << 20;
    let mut pool = vec![0u8; POOL + args.value_bytes];
    rand::rngs::StdRng::seed_from_u64(1).fill(&mut pool[..]);
    let pool = bytes::Bytes::from(pool);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let tenth = args.keys.div_ceil(10);
    let marks = Arc::new(Mutex::new(vec![None::<Instant>; 10]));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.conns {
        let (client, order, pool, next, done, errors, marks) = (
            client.clone(),
            order.clone(),
            pool.clone(),
            next.clone(),
            done.clone(),
            errors.clone(),
            marks.clone(),
        );
        let base = format!("{}/v2/key-value-stores/{store}/records/", args.url);
        let token = args.token.clone();
        let keys = args.keys;
        let value_bytes = args.value_bytes;
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return;
                }
                let url = format!("{base}{}", key(order[i] as usize));
                let at = (i * 7919) % POOL;
                let body = pool.slice(at..at + value_bytes);
                let ok = match client
                    .put(url)
                    .bearer_auth(&token)
                    .header("content-type", "application/octet-stream")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(resp) => resp.status().is_success(),
                    Err(_) => false,
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % tenth == 0 || n == keys {
                    let t = (n - 1) / tenth;
                    if let Ok(mut marks) = marks.lock() {
                        marks[t.min(9)] = Some(Instant::now());
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let total = start.elapsed();
    let marks = marks.lock().unwrap().clone();
    let mut prev = start;
    for (t, mark) in marks.iter().enumerate() {
        let Some(mark) = *mark else { continue };
        let n = tenth.min(args.keys - t * tenth) as f64;
        let secs = mark.duration_since(prev).as_secs_f64();
        println!("fill_tenth_{t}_rps={:.0}", n / secs);
        println!("fill_tenth_{t}_us={:.1}", secs * 1e6 / n);
        prev = mark;
    }
    println!(
        "fill_rps={:.0}",
        args.keys as f64 / total.as_secs_f64().max(1e-9)
    );
    println!("fill_s={:.1}", total.as_secs_f64());
    println!("errors={}", errors.load(Ordering::Relaxed));
}

/// Lists pages of 1000 keys at random starts, one request at a time.
async fn list(client: &reqwest::Client, args: &Args, store: &str) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut ms = Vec::with_capacity(args.lists);
    let mut errors = 0;
    for _ in 0..args.lists {
        let start = key(rng.gen_range(0..args.keys.saturating_sub(1000).max(1)));
        let t = Instant::now();
        let ok = match client
            .get(format!(
                "{}/v2/key-value-stores/{store}/keys?limit=1000&exclusiveStartKey={start}",
                args.url
            ))
            .bearer_auth(&args.token)
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => resp.bytes().await.is_ok(),
            _ => false,
        };
        if ok {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        } else {
            errors += 1;
        }
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms.get(((ms.len() as f64 - 1.0) * q).round() as usize);
    if let (Some(p50), Some(p99)) = (at(0.5), at(0.99)) {
        println!("list_p50_ms={p50:.2}");
        println!("list_p99_ms={p99:.2}");
    }
    println!("lists={}", ms.len());
    println!("list_errors={errors}");
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.conns)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let store = match &args.store {
        Some(id) => id.clone(),
        None => match create_store(&client, &args).await {
            Ok(id) => id,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    println!("store_id={store}");
    if !args.list_only {
        fill(&client, &args, &store).await;
    }
    list(&client, &args, &store).await;
    ExitCode::SUCCESS
}
