//! Several real `kvstore serve --database-url` processes over one PostgreSQL database: what one
//! node writes the other reads at once, counters stay exact under concurrent writers on both,
//! get-or-create of one name yields one store, nodes starting together on an empty database
//! migrate it once and create one `admin`; and one node whose database connection is cut (by a TCP
//! proxy inside the test) answers 503 quickly, recovers by itself and loses no acknowledged write.
//! Connections the database dropped while idle are replaced before a request meets them.
//! Also: what a 503 to an upload it did not read does to the client's kept-alive connection, and
//! a database that goes silent instead of refusing (the node still answers in bounded time).
//!
//! Every test makes a fresh database (`PgDatabase::create()`) and returns early, recorded as a
//! skip (`common::skipped`), when PostgreSQL is unreachable outside CI.
//!
//! With `KVSTORE_TEST_BACKEND=postgres-s3` (a stage of scripts/test.sh) every node also keeps
//! bodies of 1 KiB or more in the shared SeaweedFS, all nodes of a database under one prefix, and
//! the concurrent-writers test checks that every object is named by a row or listed as garbage.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::{kvstore, output, stderr_of, stdout_of, token_printed_last, Served};
use common::{pg_admin_url, PgDatabase};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Runs a short command (not `serve`) to the end, off the async runtime.
async fn run(args: &[&str]) -> Output {
    let mut cmd = kvstore();
    cmd.args(args);
    output(cmd).await
}

/// `kvstore users create NAME --database-url URL`; returns the token (its last line of stdout).
async fn users_create(database_url: &str, name: &str) -> String {
    let out = run(&["users", "create", name, "--database-url", database_url]).await;
    token_printed_last(&out)
}

/// `kvstore serve --database-url …` on 127.0.0.1:0, started; [`Served::wait_listening`] then
/// waits until it serves. With `KVSTORE_TEST_BACKEND=postgres-s3`, bodies of 1 KiB or more go
/// to the shared SeaweedFS, under a prefix named after the database (so every node of one
/// database shares one bucket and prefix).
fn spawn_node(database_url: &str, extra: &[&str]) -> Served {
    let mut cmd = kvstore();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(database_url)
        .args(object_store_args(database_url))
        .args(extra);
    Served::spawn(cmd)
}

/// The `--object-store` arguments of a node under `KVSTORE_TEST_BACKEND=postgres-s3`, else none.
fn object_store_args(database_url: &str) -> Vec<String> {
    if common::backend_name() != "postgres-s3" {
        return Vec::new();
    }
    let weed = common::seaweed::shared().expect("KVSTORE_TEST_BACKEND=postgres-s3 needs SeaweedFS");
    vec![
        "--object-store".into(),
        object_store_url(database_url),
        "--object-store-endpoint".into(),
        weed.endpoint.clone(),
        "--object-store-min-bytes".into(),
        "1024".into(),
    ]
}

/// `s3://BUCKET/DATABASE` for the nodes of one database.
fn object_store_url(database_url: &str) -> String {
    let name = database_url.rsplit('/').next().unwrap().replace('_', "-");
    format!("s3://{}/{name}", common::seaweed::BUCKET)
}

/// A node that serves (the test fails if it does not).
async fn start_node(database_url: &str, extra: &[&str]) -> Served {
    let mut node = spawn_node(database_url, extra);
    node.wait_listening().await.unwrap();
    node
}

/// Two nodes started together, both serving (the test fails if one does not).
async fn start_two_nodes(database_url: &str) -> (Served, Served) {
    let (mut a, mut b) = (spawn_node(database_url, &[]), spawn_node(database_url, &[]));
    let (ready_a, ready_b) = tokio::join!(a.wait_listening(), b.wait_listening());
    ready_a.unwrap();
    ready_b.unwrap();
    (a, b)
}

/// An HTTP client with a user's token.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    token: String,
}

impl Api {
    fn new(token: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            token: token.to_owned(),
        }
    }

    /// A client that opens a new connection for every request.
    fn fresh_connections(token: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            token: token.to_owned(),
        }
    }

    fn req(&self, method: Method, base: &str, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.token)
    }

    /// Sends and returns the status and the body as text.
    async fn send(&self, rb: RequestBuilder) -> (u16, String) {
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// Sends and returns the status and the JSON body's `data`; the status must be `want`.
    async fn data(&self, rb: RequestBuilder, want: u16) -> Value {
        let (status, text) = self.send(rb).await;
        assert_eq!(status, want, "body: {text}");
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        body.get("data")
            .cloned()
            .unwrap_or_else(|| panic!("no data in {text}"))
    }

    async fn create_store(&self, base: &str, name: &str) -> String {
        let rb = self.req(
            Method::POST,
            base,
            &format!("/v2/key-value-stores?name={name}"),
        );
        let store = self.data(rb, 201).await;
        store["id"].as_str().unwrap().to_owned()
    }

    async fn store(&self, base: &str, store: &str) -> Value {
        let rb = self.req(Method::GET, base, &format!("/v2/key-value-stores/{store}"));
        self.data(rb, 200).await
    }

    fn put(&self, base: &str, store: &str, key: &str, body: Vec<u8>) -> RequestBuilder {
        self.req(
            Method::PUT,
            base,
            &format!("/v2/key-value-stores/{store}/records/{key}"),
        )
        .header("content-type", "application/octet-stream")
        .body(body)
    }

    fn record(&self, method: Method, base: &str, store: &str, key: &str) -> RequestBuilder {
        self.req(
            method,
            base,
            &format!("/v2/key-value-stores/{store}/records/{key}"),
        )
    }

    /// Every key of a store with its size, read page by page through the API.
    async fn all_keys(&self, base: &str, store: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let mut path = format!("/v2/key-value-stores/{store}/keys?limit=7");
            if let Some(s) = &start {
                path.push_str(&format!("&exclusiveStartKey={s}"));
            }
            let page = self.data(self.req(Method::GET, base, &path), 200).await;
            for item in page["items"].as_array().unwrap() {
                out.push((
                    item["key"].as_str().unwrap().to_owned(),
                    item["size"].as_u64().unwrap(),
                ));
            }
            if page["isTruncated"] != true {
                return out;
            }
            start = Some(page["nextExclusiveStartKey"].as_str().unwrap().to_owned());
        }
    }
}

/// A fresh database with the user `alice` (created by `kvstore users create`) and two nodes on it.
async fn two_nodes() -> Option<(PgDatabase, Api, Served, Served)> {
    let db = PgDatabase::create().await?;
    let token = users_create(&db.url, "alice").await;
    let (a, b) = start_two_nodes(&db.url).await;
    // A user existed, so neither node created an admin.
    assert_eq!(a.printed_admin_token(), None, "{:?}", a.banner);
    assert_eq!(b.printed_admin_token(), None, "{:?}", b.banner);
    Some((db, Api::new(&token), a, b))
}

/// A record body that says how long it is: `KEY|SIZE|WRITER|`, padded to SIZE bytes.
fn body_for(key: &str, size: usize, writer: &str) -> Vec<u8> {
    let mut body = format!("{key}|{size}|{writer}|").into_bytes();
    assert!(body.len() <= size, "size {size} too small for the header");
    body.resize(size, b'x');
    body
}

/// Checks a body made by [`body_for`]: it belongs to `key` and is whole.
fn check_body(key: &str, body: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
    let mut parts = text.splitn(3, '|');
    let (Some(k), Some(size)) = (parts.next(), parts.next()) else {
        return Err(format!("{key}: malformed body {text:?}"));
    };
    if k != key {
        return Err(format!("{key}: holds the body of {k:?}"));
    }
    match size.parse::<usize>() {
        Ok(n) if n == body.len() => Ok(()),
        _ => Err(format!(
            "{key}: torn body: header says {size}, got {} bytes",
            body.len()
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_one_node_are_read_and_listed_through_the_other() {
    let Some((_db, api, a, b)) = two_nodes().await else {
        return;
    };
    let (a, b) = (a.url.as_str(), b.url.as_str());

    let id = api.create_store(a, "shared").await;
    assert_eq!(api.store(b, &id).await["name"], "shared");
    assert_eq!(api.store(b, "~shared").await["id"], id.as_str());

    // A small record through A: B reads it, lists it and counts it at once.
    let (status, text) = api
        .send(
            api.req(
                Method::PUT,
                a,
                &format!("/v2/key-value-stores/{id}/records/greeting"),
            )
            .header("content-type", "text/plain; charset=utf-8")
            .body("hello"),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let resp = api
        .record(Method::GET, b, &id, "greeting")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.text().await.unwrap(), "hello");
    assert_eq!(api.all_keys(b, &id).await, [("greeting".to_owned(), 5)]);
    let stats = &api.store(b, &id).await["stats"];
    assert_eq!(stats["recordCount"], 1, "{stats}");
    assert_eq!(stats["storageBytes"], 5, "{stats}");
    assert_eq!(stats["writeCount"], 1, "{stats}");

    // Overwritten through B, read through A.
    let (status, text) = api
        .send(api.put(b, &id, "greeting", b"hello again".to_vec()))
        .await;
    assert_eq!(status, 201, "{text}");
    let (status, text) = api.send(api.record(Method::GET, a, &id, "greeting")).await;
    assert_eq!((status, text.as_str()), (200, "hello again"));

    // A record stored in chunks (over 256 KiB) through A, read whole through B.
    let big = body_for("big", 300_000, "a");
    let (status, text) = api.send(api.put(a, &id, "big", big.clone())).await;
    assert_eq!(status, 201, "{text}");
    let resp = api.record(Method::GET, b, &id, "big").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap() == big, "the big record differs");

    // Deleted through A: gone through B.
    let (status, text) = api
        .send(api.record(Method::DELETE, a, &id, "greeting"))
        .await;
    assert_eq!(status, 204, "{text}");
    let (status, text) = api.send(api.record(Method::GET, b, &id, "greeting")).await;
    assert_eq!(status, 404, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["type"], "record-not-found", "{text}");
    assert_eq!(api.all_keys(b, &id).await, [("big".to_owned(), 300_000)]);
    for node in [a, b] {
        let stats = &api.store(node, &id).await["stats"];
        assert_eq!(stats["recordCount"], 1, "{stats}");
        assert_eq!(stats["storageBytes"], 300_000, "{stats}");
        assert_eq!(stats["writeCount"], 3, "{stats}");
        assert_eq!(stats["deleteCount"], 1, "{stats}");
    }
}

/// What one writer task did.
#[derive(Default)]
struct Tally {
    puts: u64,
    deletes: u64,
    problems: Vec<String>,
}

/// Deterministic pseudo-random numbers (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_two_nodes_keep_the_counters_exact() {
    let Some((_db, api, a, b)) = two_nodes().await else {
        return;
    };
    let id = api.create_store(&a.url, "busy").await;
    const TASKS_PER_NODE: usize = 8;
    const OPS_PER_TASK: usize = 30;
    const KEYS: u64 = 20;

    let mut tasks = Vec::new();
    for t in 0..TASKS_PER_NODE * 2 {
        // Even tasks write through A, odd through B; reads go through the other node.
        let (mine, other) = if t % 2 == 0 {
            (a.url.clone(), b.url.clone())
        } else {
            (b.url.clone(), a.url.clone())
        };
        let (api, id) = (api.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1).wrapping_mul(0x2545_f491));
            let mut tally = Tally::default();
            for i in 0..OPS_PER_TASK {
                let key = format!("k{:02}", rng.below(KEYS));
                let roll = rng.below(100);
                if roll < 55 {
                    let size = if rng.below(4) == 0 {
                        300_000
                    } else {
                        64 + rng.below(4000) as usize
                    };
                    let body = body_for(&key, size, &format!("t{t}-{i}"));
                    match api.send(api.put(&mine, &id, &key, body)).await {
                        (201, _) => tally.puts += 1,
                        (s, text) => tally.problems.push(format!("PUT {key}: {s} {text}")),
                    }
                } else if roll < 80 {
                    match api.send(api.record(Method::DELETE, &mine, &id, &key)).await {
                        (204, _) => tally.deletes += 1,
                        (s, text) => tally.problems.push(format!("DELETE {key}: {s} {text}")),
                    }
                } else {
                    let resp = api
                        .record(Method::GET, &other, &id, &key)
                        .send()
                        .await
                        .unwrap();
                    match resp.status().as_u16() {
                        200 => {
                            let body = resp.bytes().await.unwrap();
                            if let Err(e) = check_body(&key, &body) {
                                tally.problems.push(format!("GET {e}"));
                            }
                        }
                        404 => {}
                        s => {
                            let text = resp.text().await.unwrap_or_default();
                            tally.problems.push(format!("GET {key}: {s} {text}"));
                        }
                    }
                }
            }
            tally
        }));
    }
    let (mut puts, mut deletes, mut problems) = (0, 0, Vec::new());
    for task in tasks {
        let tally = task.await.unwrap();
        puts += tally.puts;
        deletes += tally.deletes;
        problems.extend(tally.problems);
    }
    assert!(
        problems.is_empty(),
        "{} operations failed, e.g. {:?}\nnode A stderr:\n{}\nnode B stderr:\n{}",
        problems.len(),
        &problems[..problems.len().min(10)],
        a.stderr_tail(),
        b.stderr_tail()
    );
    assert!(puts > 100 && deletes > 30, "puts {puts}, deletes {deletes}");

    // The counters equal a full recount, and every record left is whole.
    let keys = api.all_keys(&b.url, &id).await;
    assert!(!keys.is_empty());
    let bytes: u64 = keys.iter().map(|(_, size)| size).sum();
    for (n, (key, size)) in keys.iter().enumerate() {
        let node = if n % 2 == 0 { &a.url } else { &b.url };
        let resp = api
            .record(Method::GET, node, &id, key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{key} is listed but not readable");
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.len() as u64, *size, "{key}: listed size");
        check_body(key, &body).unwrap();
    }
    assert_eq!(api.all_keys(&a.url, &id).await, keys);
    for node in [&a.url, &b.url] {
        let stats = &api.store(node, &id).await["stats"];
        assert_eq!(stats["recordCount"], keys.len() as u64, "recount: {stats}");
        assert_eq!(stats["storageBytes"], bytes, "recount: {stats}");
        assert_eq!(stats["writeCount"], puts, "acknowledged PUTs: {stats}");
        assert_eq!(
            stats["deleteCount"], deletes,
            "acknowledged DELETEs: {stats}"
        );
    }
    // Every overwrite and delete, on either node, freed the body it replaced.
    let store = kvstore::storage::open(&_db.backend()).await.unwrap();
    let orphans = store
        .orphans(kvstore::storage::OrphanCheck {
            remove: false,
            min_age: Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(orphans.bodies, 0, "bodies no record points at: {orphans:?}");
    store.close().await.unwrap();
    if common::backend_name() == "postgres-s3" {
        objects_accounted_for(&_db.url).await;
    }
}

/// Every object a row names is in the bucket, and every other object there is listed in
/// `object_garbage` (for the collector): none is lost track of.
async fn objects_accounted_for(database_url: &str) {
    use sqlx::Connection;
    let weed = common::seaweed::shared().unwrap();
    let objects =
        kvstore::storage::objects::Objects::new(&kvstore::storage::objects::ObjectStoreOptions {
            url: object_store_url(database_url),
            ..common::object_options(&weed.endpoint, 1024)
        })
        .unwrap();
    let in_bucket: HashSet<String> = objects
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
    let named: Vec<String> =
        sqlx::query_scalar("SELECT object FROM records WHERE object IS NOT NULL")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let garbage: HashSet<String> = sqlx::query_scalar("SELECT name FROM object_garbage")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        !named.is_empty(),
        "no record has its body in the object store"
    );
    for name in &named {
        assert!(
            in_bucket.contains(name),
            "a row names {name}, not in the bucket"
        );
    }
    let named: HashSet<String> = named.into_iter().collect();
    for name in in_bucket.difference(&named) {
        assert!(
            garbage.contains(name),
            "{name} is in the bucket, no row names it and object_garbage does not list it"
        );
    }
    eprintln!(
        "{} objects named by rows, {} others (all in object_garbage, {} names there)",
        named.len(),
        in_bucket.len() - named.len(),
        garbage.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_get_or_create_of_one_name_on_two_nodes_yields_one_store() {
    let Some((_db, api, a, b)) = two_nodes().await else {
        return;
    };
    let mut calls = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        let api = api.clone();
        calls.push(tokio::spawn(async move {
            api.send(api.req(Method::POST, &node, "/v2/key-value-stores?name=same"))
                .await
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for call in calls {
        let (status, text) = call.await.unwrap();
        assert!(
            status == 201 || status == 200,
            "get-or-create answered {status}: {text}"
        );
        if status == 201 {
            created += 1;
        }
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["data"]["name"], "same", "{text}");
        ids.insert(body["data"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "several stores named `same`: {ids:?}");
    assert_eq!(created, 1, "{created} calls answered 201 Created");
    let id = ids.into_iter().next().unwrap();
    for node in [&a.url, &b.url] {
        let list = api
            .data(api.req(Method::GET, node, "/v2/key-value-stores"), 200)
            .await;
        assert_eq!(list["total"], 1, "{list}");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{list}");
        assert_eq!(items[0]["id"], id.as_str(), "{list}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_starting_together_on_an_empty_database_create_one_admin() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let (a, b) = start_two_nodes(&db.url).await;
    let tokens: Vec<String> = [&a, &b]
        .iter()
        .filter_map(|n| n.printed_admin_token())
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "admin tokens printed: A {:?}, B {:?}",
        a.banner,
        b.banner
    );
    let api = Api::new(&tokens[0]);
    for node in [&a, &b] {
        let list = api
            .data(api.req(Method::GET, &node.url, "/v2/key-value-stores"), 200)
            .await;
        assert_eq!(list["total"], 0);
    }

    let out = run(&["users", "list", "--database-url", &db.url]).await;
    assert!(out.status.success(), "users list: {}", stderr_of(&out));
    let listed = stdout_of(&out);
    let users: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(users.len(), 1, "users list printed: {listed}");
    assert_eq!(users[0][1], "admin", "users list printed: {listed}");
    assert_eq!(users[0][2], "true", "users list printed: {listed}");
}

/// The state of the line through [`Proxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Forwards to PostgreSQL.
    Open,
    /// Cut: live connections are closed; new ones are closed as soon as they are accepted.
    Refuse,
    /// Cut: live connections are closed; new ones are accepted and then left unanswered (like a
    /// host that has vanished), until the line changes.
    Blackhole,
    /// Silent: live connections stay open but nothing passes any more (a network partition);
    /// new ones are left unanswered too. Restored, the frozen connections are closed.
    Freeze,
}

/// A TCP proxy to PostgreSQL whose line can be cut and restored.
struct Proxy {
    port: u16,
    line: Arc<watch::Sender<Line>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let line = Arc::new(watch::channel(Line::Open).0);
        let switch = line.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let mut state = switch.subscribe();
                let now = *state.borrow_and_update();
                let upstream = upstream.clone();
                match now {
                    Line::Refuse => drop(client),
                    Line::Blackhole | Line::Freeze => {
                        tokio::spawn(async move {
                            // Holds the socket, unread and unanswered, until the line changes.
                            let _ = state.wait_for(|s| *s != now).await;
                            drop(client);
                        });
                    }
                    Line::Open => {
                        tokio::spawn(async move {
                            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                                return;
                            };
                            let frozen = tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                                cut = state.wait_for(|s| *s != Line::Open) => {
                                    cut.is_ok_and(|s| *s == Line::Freeze)
                                }
                            };
                            if frozen {
                                let _ = state.wait_for(|s| *s != Line::Freeze).await;
                            }
                            // Both sockets are closed here.
                        });
                    }
                }
            }
        });
        Proxy { port, line, accept }
    }

    fn set(&self, line: Line) {
        self.line.send_replace(line);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Line::Refuse);
        self.accept.abort();
    }
}

/// `scheme://user@` , `host:port`, `/db?params` of a database URL.
fn split_db_url(url: &str) -> (String, String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    (format!("{scheme}://{user}"), host, path.to_owned())
}

/// One request made while the database was (or may have been) unreachable.
#[derive(Debug)]
struct Attempt {
    what: String,
    status: Option<u16>,
    body: String,
    elapsed: Duration,
    /// For a PUT: the key and the body it wrote (kept if acknowledged).
    write: Option<(String, Vec<u8>)>,
}

impl Attempt {
    async fn make(what: String, rb: RequestBuilder, write: Option<(String, Vec<u8>)>) -> Attempt {
        let started = Instant::now();
        let (status, body) = match rb.timeout(Duration::from_secs(15)).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_else(|e| format!("(body: {e})"));
                (Some(status), body)
            }
            Err(e) => (None, format!("no answer: {e:?}")),
        };
        Attempt {
            what,
            status,
            body,
            elapsed: started.elapsed(),
            write,
        }
    }

    /// A PUT of `key` (with a body made by [`body_for`]).
    async fn put(api: &Api, base: &str, store: &str, key: String, size: usize) -> Attempt {
        let body = body_for(&key, size, "attempt");
        let rb = api.put(base, store, &key, body.clone());
        Attempt::make(format!("PUT {key}"), rb, Some((key, body))).await
    }

    fn describe(&self) -> String {
        let status = self
            .status
            .map_or_else(|| "no status".to_owned(), |s| s.to_string());
        format!(
            "{}: {status} after {:?}: {}",
            self.what, self.elapsed, self.body
        )
    }

    /// A 503 with Apify's envelope and type `service-unavailable`, answered within `limit`.
    fn is_fast_503(&self, limit: Duration) -> bool {
        let envelope = serde_json::from_str::<Value>(&self.body).is_ok_and(|body| {
            body["error"]["type"] == "service-unavailable"
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
        });
        self.status == Some(503) && envelope && self.elapsed <= limit
    }
}

/// Longest a request may take while the database is unreachable (`--db-acquire-timeout 1`).
const FAIL_FAST: Duration = Duration::from_secs(5);
/// Longest the node may take to serve writes again once the database is back.
const RECOVERY: Duration = Duration::from_secs(30);
/// Least time the line stays cut in each phase.
const MIN_CUT: Duration = Duration::from_millis(1500);

type Probe = std::pin::Pin<Box<dyn std::future::Future<Output = Attempt> + Send>>;

/// One request of every kind against the node (`tag` makes the written keys and names unique).
fn probes(api: &Api, url: &str, id: &str, tag: &str) -> Vec<Probe> {
    let mut out: Vec<Probe> = Vec::new();
    for (suffix, size) in [("small", 100), ("big", 300_000)] {
        let (api, url, id) = (api.clone(), url.to_owned(), id.to_owned());
        let key = format!("during-{tag}-{suffix}");
        out.push(Box::pin(async move {
            Attempt::put(&api, &url, &id, key, size).await
        }));
    }
    let requests = [
        (
            "GET record",
            Method::GET,
            format!("/v2/key-value-stores/{id}/records/before-01"),
        ),
        (
            "GET keys",
            Method::GET,
            format!("/v2/key-value-stores/{id}/keys"),
        ),
        (
            "GET store",
            Method::GET,
            format!("/v2/key-value-stores/{id}"),
        ),
        ("GET stores", Method::GET, "/v2/key-value-stores".to_owned()),
        (
            "POST store",
            Method::POST,
            format!("/v2/key-value-stores?name=during-{tag}"),
        ),
        (
            "DELETE record",
            Method::DELETE,
            format!("/v2/key-value-stores/{id}/records/before-02"),
        ),
    ];
    for (what, method, path) in requests {
        let rb = api.req(method, url, &path);
        out.push(Box::pin(Attempt::make(format!("{what} ({tag})"), rb, None)));
    }
    out
}

/// What happened while the line was cut one way, and after it was restored.
#[derive(Debug)]
struct Phase {
    line: Line,
    /// Requests made while the line was cut.
    during: Vec<Attempt>,
    cut_for: Duration,
    /// Writes made after the line was restored, until the first acknowledged one.
    recovery: Vec<Attempt>,
    recovered_in: Duration,
}

/// Cuts the line as `line` says, probes the node one request at a time and then all at once,
/// restores the line and polls with writes until one is acknowledged.
async fn cut_phase(proxy: &Proxy, line: Line, api: &Api, url: &str, id: &str) -> Phase {
    proxy.set(line);
    let cut_at = Instant::now();
    let tag = format!("{line:?}").to_lowercase();
    let mut during = Vec::new();
    for probe in probes(api, url, id, &format!("{tag}-seq")) {
        during.push(probe.await);
    }
    let at_once: Vec<_> = probes(api, url, id, &format!("{tag}-par1"))
        .into_iter()
        .chain(probes(api, url, id, &format!("{tag}-par2")))
        .map(tokio::spawn)
        .collect();
    for call in at_once {
        during.push(call.await.unwrap());
    }
    tokio::time::sleep(MIN_CUT.saturating_sub(cut_at.elapsed())).await;
    let cut_for = cut_at.elapsed();
    proxy.set(Line::Open);

    let restored_at = Instant::now();
    let mut recovery = Vec::new();
    loop {
        let key = format!("after-{tag}-{:03}", recovery.len());
        let attempt = Attempt::put(api, url, id, key, 100).await;
        let ok = attempt.status == Some(201);
        recovery.push(attempt);
        if ok || restored_at.elapsed() > RECOVERY {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Phase {
        line,
        during,
        cut_for,
        recovery,
        recovered_in: restored_at.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_the_database_answers_503_and_recovers() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let token = users_create(&db.url, "alice").await;
    let api = Api::new(&token);
    // Requests around the cut each go on a connection of their own: what one answer does to a
    // kept-alive connection is the subject of the next test, not of this one.
    let fresh = Api::fresh_connections(&token);
    let (prefix, upstream, path) = split_db_url(&db.url);
    assert_eq!(split_db_url(&pg_admin_url()).1, upstream);
    let proxy = Proxy::start(upstream).await;
    let proxied = format!("{prefix}127.0.0.1:{}{path}", proxy.port);
    let node = start_node(
        &proxied,
        &["--db-acquire-timeout", "1", "--db-timeout", "2"],
    )
    .await;
    // A node that never loses its database, to read back through.
    let direct = start_node(&db.url, &[]).await;
    let url = node.url.clone();

    // Acknowledged writes before the cut.
    let id = api.create_store(&url, "fault").await;
    let mut acked: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..10 {
        let key = format!("before-{i:02}");
        let body = body_for(&key, if i == 0 { 300_000 } else { 100 + i }, "before");
        let (status, text) = api.send(api.put(&url, &id, &key, body.clone())).await;
        assert_eq!(status, 201, "{text}");
        acked.insert(key, body);
    }

    // A writer that keeps writing through the cuts, the restores and the recoveries.
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = {
        let (api, url, id) = (fresh.clone(), url.clone(), id.clone());
        tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0.. {
                if *stop_rx.borrow() {
                    break;
                }
                let size = if i % 10 == 0 { 300_000 } else { 200 };
                done.push(Attempt::put(&api, &url, &id, format!("bg-{i:04}"), size).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut phases = Vec::new();
    for line in [Line::Refuse, Line::Blackhole] {
        phases.push(cut_phase(&proxy, line, &fresh, &url, &id).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop_tx.send_replace(true);
    let background = writer.await.unwrap();

    let summary: Vec<String> = phases
        .iter()
        .map(|p| {
            let slowest = p.during.iter().map(|a| a.elapsed).max().unwrap_or_default();
            format!(
                "{:?}: cut for {:?}, {} requests during the cut (slowest {slowest:?}), \
                 recovered after {:?} and {} write(s)",
                p.line,
                p.cut_for,
                p.during.len(),
                p.recovered_in,
                p.recovery.len()
            )
        })
        .collect();
    let count = |status: u16| {
        background
            .iter()
            .filter(|a| a.status == Some(status))
            .count()
    };
    let report = format!(
        "{}\nbackground writes: {} ({} acknowledged, {} answered 503)\nnode stderr (tail):\n{}",
        summary.join("\n"),
        background.len(),
        count(201),
        count(503),
        node.stderr_tail()
    );

    // During a cut: 503 with the envelope, fast. Anything else is a server bug.
    for phase in &phases {
        let wrong: Vec<String> = phase
            .during
            .iter()
            .filter(|a| !a.is_fast_503(FAIL_FAST))
            .map(Attempt::describe)
            .collect();
        assert!(
            wrong.is_empty(),
            "requests while the line was cut ({:?}) that were not a 503 `service-unavailable` \
             within {FAIL_FAST:?}:\n{}\n{report}",
            phase.line,
            wrong.join("\n")
        );
        let last = phase.recovery.last().unwrap();
        assert_eq!(
            last.status,
            Some(201),
            "the node did not recover within {RECOVERY:?} of the restore ({:?}): {}\n{report}",
            phase.line,
            last.describe()
        );
    }
    // Around the cuts, every write is acknowledged or a fast 503.
    let attempts = background.iter().chain(
        phases
            .iter()
            .flat_map(|p| p.during.iter().chain(&p.recovery)),
    );
    let mut wrong = Vec::new();
    for attempt in attempts {
        if attempt.status == Some(201) {
            if let Some((key, body)) = &attempt.write {
                acked.insert(key.clone(), body.clone());
            }
        } else if !attempt.is_fast_503(FAIL_FAST) {
            wrong.push(attempt.describe());
        }
    }
    assert!(
        wrong.is_empty(),
        "writes around the cuts that were neither 201 nor a fast 503:\n{}\n{report}",
        wrong.join("\n")
    );
    assert!(
        count(503) > 0,
        "the background writer never saw a cut\n{report}"
    );

    // More acknowledged writes after the recovery.
    for i in 0..5 {
        let key = format!("later-{i}");
        let body = body_for(&key, 150, "later");
        let (status, text) = api.send(api.put(&url, &id, &key, body.clone())).await;
        assert_eq!(status, 201, "{text}\n{report}");
        acked.insert(key, body);
    }

    // Every acknowledged write is there, through the node that lived through the cuts and
    // through one that never lost its database.
    for base in [&url, &direct.url] {
        for (key, body) in &acked {
            let resp = api
                .record(Method::GET, base, &id, key)
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                200,
                "acknowledged write {key} is missing via {base}\n{report}"
            );
            assert!(
                resp.bytes().await.unwrap() == *body,
                "acknowledged write {key} differs via {base}"
            );
        }
        // The counters still equal a recount (a write answered 503 may have committed all the
        // same, but then with its counters).
        let keys = api.all_keys(base, &id).await;
        let stats = &api.store(base, &id).await["stats"];
        assert_eq!(stats["recordCount"], keys.len() as u64, "{stats}");
        let bytes: u64 = keys.iter().map(|(_, size)| size).sum();
        assert_eq!(stats["storageBytes"], bytes, "{stats}");
        assert!(
            stats["writeCount"].as_u64().unwrap() >= acked.len() as u64,
            "{stats}"
        );
    }
    eprintln!("{report}");
}

/// Reads one HTTP/1.1 response (head, then a `content-length` body): `(head, body)`, or what went
/// wrong instead.
async fn read_response(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Result<(String, String), String> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                buf.drain(..end + 4 + length);
                return Ok((head, body));
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await {
            Err(_) => return Err("no answer within 10 s".into()),
            Ok(Ok(0)) => return Err("the server closed the connection".into()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(format!("read error: {e}")),
        }
    }
}

/// On one kept-alive connection: a 1 MiB PUT, then a GET. Returns both outcomes and whether
/// the upload could be written to the end.
async fn upload_then_get(
    addr: &str,
    token: &str,
    id: &str,
) -> (
    Result<(String, String), String>,
    std::io::Result<()>,
    Result<(String, String), String>,
) {
    use tokio::io::AsyncWriteExt;
    const SIZE: usize = 1024 * 1024;
    let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let head = format!(
        "PUT /v2/key-value-stores/{id}/records/upload HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer {token}\r\ncontent-type: application/octet-stream\r\n\
         content-length: {SIZE}\r\n\r\n"
    );
    // Written by a task of its own, so that an early answer can be read while it writes.
    let upload = tokio::spawn(async move {
        let mut written = wr.write_all(head.as_bytes()).await;
        if written.is_ok() {
            written = wr.write_all(&vec![b'u'; SIZE]).await;
        }
        (wr, written)
    });
    let mut buf = Vec::new();
    let first = read_response(&mut rd, &mut buf).await;
    let (mut wr, uploaded) = upload.await.unwrap();
    let get = format!(
        "GET /v2/key-value-stores/{id}/records/upload HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer {token}\r\n\r\n"
    );
    let second = match wr.write_all(get.as_bytes()).await {
        Ok(()) => read_response(&mut rd, &mut buf).await,
        Err(e) => Err(format!("could not send it: {e}")),
    };
    (first, uploaded, second)
}

fn status_of(head: &str) -> Option<u16> {
    head.split_whitespace().nth(1)?.parse().ok()
}

/// A client that uploads a record while the database is unreachable gets a 503 and retries. If
/// the server answers before reading the upload, it must say `Connection: close` (as it does for
/// a body over the size limit), or keep the connection usable: closing a kept-alive connection
/// without saying so makes the client's next request on it fail with a transport error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_503_to_an_unread_upload_closes_the_connection_or_keeps_it_usable() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let token = users_create(&db.url, "alice").await;
    let api = Api::new(&token);
    let (prefix, upstream, path) = split_db_url(&db.url);
    let proxy = Proxy::start(upstream).await;
    let proxied = format!("{prefix}127.0.0.1:{}{path}", proxy.port);
    let node = start_node(
        &proxied,
        &["--db-acquire-timeout", "1", "--db-timeout", "2"],
    )
    .await;
    let id = api.create_store(&node.url, "uploads").await;
    let addr = node.url.trim_start_matches("http://").to_owned();

    // With the database there, the same exchange works (the raw client is sound).
    let (first, uploaded, second) = upload_then_get(&addr, &token, &id).await;
    let (head, _) = first.unwrap();
    assert_eq!(status_of(&head), Some(201), "{head}");
    uploaded.unwrap();
    let (head, _) = second.unwrap();
    assert_eq!(status_of(&head), Some(200), "{head}");

    proxy.set(Line::Refuse);
    let (first, uploaded, second) = upload_then_get(&addr, &token, &id).await;
    proxy.set(Line::Open);
    let (head, body) = first.unwrap_or_else(|e| panic!("no answer to the upload: {e}"));
    assert_eq!(status_of(&head), Some(503), "{head}\n\n{body}");
    let envelope: Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_eq!(envelope["error"]["type"], "service-unavailable", "{body}");
    let says_close = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close")
        })
    });
    if !says_close {
        let second = second
            .as_ref()
            .map(|(head, _)| head.lines().next().unwrap_or(""));
        assert!(
            second.is_ok(),
            "the server answered the unread 1 MiB upload with\n{head}\n(no `Connection: close`), \
             then dropped the connection: the next request on it got: {}\n\
             (writing the upload: {uploaded:?})\nnode stderr (tail):\n{}",
            second.unwrap_err(),
            node.stderr_tail()
        );
    }
}

/// How long the line stays silent in the test below: longer than any answer may take.
const SILENCE: Duration = Duration::from_secs(15);

/// The README promises that requests fail fast with 503 when the database cannot be reached. A
/// database that goes silent (a network partition: no reset, no answer) must not hold a request
/// for as long as the silence lasts either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_database_goes_silent_still_answers_in_bounded_time() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let token = users_create(&db.url, "alice").await;
    let api = Api::new(&token);
    let fresh = Api::fresh_connections(&token);
    let (prefix, upstream, path) = split_db_url(&db.url);
    let proxy = Proxy::start(upstream).await;
    let proxied = format!("{prefix}127.0.0.1:{}{path}", proxy.port);
    let node = start_node(
        &proxied,
        &["--db-acquire-timeout", "1", "--db-timeout", "2"],
    )
    .await;
    let url = node.url.clone();
    let id = api.create_store(&url, "silent").await;

    // Writers busy enough that some statements are in flight when the line goes silent.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut writers = Vec::new();
    for w in 0..8 {
        let (api, url, id, stop) = (fresh.clone(), url.clone(), id.clone(), stop_rx.clone());
        writers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0.. {
                if *stop.borrow() {
                    break;
                }
                let key = format!("w{w}-{i:04}");
                done.push(Attempt::put(&api, &url, &id, key, 300_000).await);
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.set(Line::Freeze);
    let frozen_at = Instant::now();
    let mut attempts = Vec::new();
    for probe in probes(&fresh, &url, &id, "silent") {
        attempts.push(probe.await);
    }
    stop_tx.send_replace(true);
    tokio::time::sleep(SILENCE.saturating_sub(frozen_at.elapsed())).await;
    proxy.set(Line::Open);
    for writer in writers {
        attempts.extend(writer.await.unwrap());
    }
    let wrong: Vec<String> = attempts
        .iter()
        .filter(|a| a.status != Some(201) && !a.is_fast_503(FAIL_FAST))
        .map(Attempt::describe)
        .collect();
    assert!(
        wrong.is_empty(),
        "requests not answered (201, or 503 `service-unavailable`) within {FAIL_FAST:?} while \
         the database was silent for {SILENCE:?}:\n{}\nnode stderr (tail):\n{}",
        wrong.join("\n"),
        node.stderr_tail()
    );
}

/// The pool does not ping a connection it hands out unless it sat idle (a round trip per query
/// otherwise); connections the database dropped while idle are still found out and replaced
/// before a request uses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_the_database_dropped_while_idle_are_replaced_unseen() {
    use sqlx::Connection;
    let Some((db, api, a, _b)) = two_nodes().await else {
        return;
    };
    let a = a.url.as_str();
    let id = api.create_store(a, "survivor").await;
    // Several connections in the pool, all used.
    let puts = (0..16).map(|i| api.send(api.put(a, &id, &format!("k{i}"), b"v".to_vec())));
    for (status, text) in futures_util::future::join_all(puts).await {
        assert_eq!(status, 201, "{text}");
    }

    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        killed.len() >= 2,
        "the nodes held {} connections",
        killed.len()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (api, id) = (&api, id.as_str());
    let gets = (0..16).map(|i| async move {
        let resp = api
            .record(Method::GET, a, id, &format!("k{i}"))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    });
    for (status, text) in futures_util::future::join_all(gets).await {
        assert_eq!((status, text.as_str()), (200, "v"));
    }
}

/// A line logged while the database reads a listing's rows (the slow-statement warning — sqlx's,
/// or the pipelined connections' own, `storage/postgres/pipeline.rs` — the listing held up by a
/// lock on `records` for longer than its 1 s threshold) carries the request's id, as every line
/// logged during a request does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_listing_logs_the_drivers_warning_with_the_request_id() {
    use sqlx::Connection;
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let token = users_create(&db.url, "alice").await;
    let node = start_node(&db.url, &[]).await;
    let api = Api::new(&token);
    let base = node.url.as_str();
    let id = api.create_store(base, "slow").await;
    for i in 0..3 {
        let (status, text) = api
            .send(api.put(base, &id, &format!("k{i}"), b"v".to_vec()))
            .await;
        assert_eq!(status, 201, "{text}");
    }

    let mut lock = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let request_id = "slow-listing-0123";
    let listing = tokio::spawn(
        api.req(
            Method::GET,
            base,
            &format!("/v2/key-value-stores/{id}/keys"),
        )
        .header("x-request-id", request_id)
        .send(),
    );
    // Held past sqlx's threshold for a slow statement (1 s).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    let resp = listing.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], request_id);
    let listed: Value = resp.json().await.unwrap();
    assert_eq!(listed["data"]["count"], 3, "{listed}");

    // The node logged the line before it answered; its output is drained by another thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = node.stderr();
        if let Some(line) = log.lines().find(|l| l.contains("slow statement")) {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no slow-statement line in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        line.contains(&format!("request{{request_id={request_id}}}")),
        "{line}"
    );
}
