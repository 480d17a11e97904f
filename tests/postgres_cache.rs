//! The PostgreSQL backend's per-node access caches (token → caller, store → store, share) are
//! exact across nodes: with both nodes' caches warm, a change made through one node — a token
//! rotated, a user disabled or deleted, a store's `generalAccess` changed, a store renamed or
//! deleted, a share given, changed or removed — is seen by the very next request on the other.
//! And with the other node's notification connection cut (terminated, and kept from coming
//! back), nothing stale is served; once it is back, the caches are used again.
//!
//! Every test makes a fresh database and returns early, recorded as a skip (`common::skipped`),
//! when PostgreSQL is unreachable outside CI.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::child::{kvstore, output, token_printed_last, Served};
use common::{pg_admin_url, PgDatabase};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Connection;

/// The `application_name` of a node's notification connection.
const LISTENER_NAME: &str = "kvstore-listen";
/// The `application_name` of a node's connections for pipelined warm GETs.
const READS_NAME: &str = "kvstore-reads";

async fn users_create(database_url: &str, name: &str, admin: bool) -> String {
    let mut cmd = kvstore();
    cmd.args(["users", "create", name, "--database-url", database_url]);
    if admin {
        cmd.arg("--admin");
    }
    token_printed_last(&output(cmd).await)
}

async fn start_node(database_url: &str) -> Served {
    let mut cmd = kvstore();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(database_url);
    Served::start(cmd).await
}

/// Requests to one node, as one caller (`None`: anonymous).
struct Node {
    http: reqwest::Client,
    base: String,
}

impl Node {
    fn new(served: &Served) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: served.url.clone(),
        }
    }

    /// Sends and returns the status and the body as JSON (`Null` when it is not JSON).
    async fn send(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            rb = rb.bearer_auth(token);
        }
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET record`'s status.
    async fn get(&self, token: Option<&str>, store: &str, key: &str) -> u16 {
        let path = format!("/v2/key-value-stores/{store}/records/{key}");
        self.send(token, Method::GET, &path, None).await.0
    }

    /// `PUT record`'s status.
    async fn put(&self, token: Option<&str>, store: &str, key: &str) -> u16 {
        let path = format!("/v2/key-value-stores/{store}/records/{key}");
        self.send(token, Method::PUT, &path, Some(json!({ "v": 1 })))
            .await
            .0
    }

    /// Sends and returns `data`; the status must be `want`.
    async fn data(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let (status, body) = self.send(Some(token), method, path, body).await;
        assert_eq!(status, want, "{path}: {body}");
        body["data"].clone()
    }

    /// How many requests this node answered from its access caches so far.
    async fn cache_hits(&self) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("kvstore_pg_access_cache_total{result=\"hit\"} "))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    /// GETs `key` as `token` (200 every time) until a GET is answered from the caches: they then
    /// hold the caller, the store and the share. The notification of a change made just before
    /// may still arrive and clear them after the first GET filled them, hence the repeats, within
    /// a deadline.
    async fn warm(&self, token: Option<&str>, store: &str, key: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(self.get(token, store, key).await, 200, "warming");
        loop {
            let hits = self.cache_hits().await;
            assert_eq!(self.get(token, store, key).await, 200, "warming");
            if self.cache_hits().await > hits {
                return;
            }
            assert!(Instant::now() < deadline, "GETs do not use the caches");
        }
    }
}

impl Node {
    /// `GET keys`' status, and the keys listed.
    async fn keys(&self, token: Option<&str>, store: &str) -> (u16, Vec<String>) {
        let path = format!("/v2/key-value-stores/{store}/keys");
        let (status, body) = self.send(token, Method::GET, &path, None).await;
        let keys = body["data"]["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| item["key"].as_str().unwrap().to_owned())
            .collect();
        (status, keys)
    }

    /// [`Node::warm`] by key listings: lists `store`'s keys as `token` (only `k`, every time)
    /// until a listing is answered from the caches.
    async fn warm_keys(&self, token: Option<&str>, store: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listed = (200, vec!["k".to_owned()]);
        assert_eq!(self.keys(token, store).await, listed, "warming");
        loop {
            let hits = self.cache_hits().await;
            assert_eq!(self.keys(token, store).await, listed, "warming");
            if self.cache_hits().await > hits {
                return;
            }
            assert!(Instant::now() < deadline, "listings do not use the caches");
        }
    }
}

struct Cluster {
    db: PgDatabase,
    admin: String,
    alice: String,
    bob: String,
    a: Node,
    b: Node,
    _served: (Served, Served),
    /// Alice's store, anyone with its id may read it; record `k` exists.
    store: String,
}

async fn cluster() -> Option<Cluster> {
    let db = PgDatabase::create().await?;
    let admin = users_create(&db.url, "admin", true).await;
    let alice = users_create(&db.url, "alice", false).await;
    let bob = users_create(&db.url, "bob", false).await;
    let (served_a, served_b) = (start_node(&db.url).await, start_node(&db.url).await);
    let (a, b) = (Node::new(&served_a), Node::new(&served_b));
    let created = a
        .data(
            &alice,
            Method::POST,
            "/v2/key-value-stores?name=cached",
            None,
            201,
        )
        .await;
    let store = created["id"].as_str().unwrap().to_owned();
    let path = format!("/v2/key-value-stores/{store}");
    let body = json!({ "generalAccess": "ANYONE_WITH_ID_CAN_READ" });
    b.data(&alice, Method::PUT, &path, Some(body), 200).await;
    assert_eq!(a.put(Some(&alice), &store, "k").await, 201);
    Some(Cluster {
        db,
        admin,
        alice,
        bob,
        a,
        b,
        _served: (served_a, served_b),
        store,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_through_one_node_is_seen_by_the_next_request_on_the_other() {
    let Some(c) = cluster().await else { return };
    let (a, b, s) = (&c.a, &c.b, c.store.as_str());
    let store_path = format!("/v2/key-value-stores/{s}");
    let share_path = format!("{store_path}/shares/bob");

    // generalAccess: public, then restricted.
    a.warm(None, s, "k").await;
    b.warm(None, s, "k").await;
    let restricted = json!({ "generalAccess": "RESTRICTED" });
    b.data(&c.alice, Method::PUT, &store_path, Some(restricted), 200)
        .await;
    assert_eq!(a.get(None, s, "k").await, 404, "generalAccess changed on b");

    // A share given, changed and removed.
    assert_eq!(a.get(Some(&c.bob), s, "k").await, 404, "not shared yet");
    let read = json!({ "access": "READ" });
    b.data(&c.alice, Method::PUT, &share_path, Some(read), 200)
        .await;
    a.warm(Some(&c.bob), s, "k").await;
    assert_eq!(a.put(Some(&c.bob), s, "k").await, 403, "a READ share");
    let write = json!({ "access": "WRITE" });
    b.data(&c.alice, Method::PUT, &share_path, Some(write), 200)
        .await;
    assert_eq!(a.put(Some(&c.bob), s, "k").await, 201, "share changed on b");
    a.warm(Some(&c.bob), s, "k").await;
    let (status, _) = b
        .send(Some(&c.alice), Method::DELETE, &share_path, None)
        .await;
    assert_eq!(status, 204, "unshare");
    assert_eq!(a.get(Some(&c.bob), s, "k").await, 404, "share removed on b");

    // A user disabled: its token, and the stores it owns.
    let read = json!({ "access": "READ" });
    b.data(&c.alice, Method::PUT, &share_path, Some(read), 200)
        .await;
    a.warm(Some(&c.bob), s, "k").await;
    a.warm(Some(&c.alice), s, "k").await;
    let disable = json!({ "disabled": true });
    b.data(
        &c.admin,
        Method::PUT,
        "/v2/admin/users/bob",
        Some(disable),
        200,
    )
    .await;
    assert_eq!(a.get(Some(&c.bob), s, "k").await, 401, "bob disabled on b");
    let disable = json!({ "disabled": true });
    b.data(
        &c.admin,
        Method::PUT,
        "/v2/admin/users/alice",
        Some(disable),
        200,
    )
    .await;
    assert_eq!(
        a.get(Some(&c.alice), s, "k").await,
        401,
        "alice disabled on b"
    );
    for user in ["alice", "bob"] {
        let enable = json!({ "disabled": false });
        let path = format!("/v2/admin/users/{user}");
        b.data(&c.admin, Method::PUT, &path, Some(enable), 200)
            .await;
    }

    // A token rotated: the old one stops working at once, the new one works.
    a.warm(Some(&c.alice), s, "k").await;
    let rotate = json!({ "revokeOthers": true });
    let issued = b
        .data(
            &c.admin,
            Method::POST,
            "/v2/admin/users/alice/tokens",
            Some(rotate),
            201,
        )
        .await;
    let alice = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(
        a.get(Some(&c.alice), s, "k").await,
        401,
        "token rotated on b"
    );
    a.warm(Some(&alice), s, "k").await;

    // A store renamed: the name shown and looked up.
    let renamed = json!({ "name": "renamed" });
    b.data(&alice, Method::PUT, &store_path, Some(renamed), 200)
        .await;
    let shown = a.data(&alice, Method::GET, &store_path, None, 200).await;
    assert_eq!(shown["name"], "renamed", "{shown}");
    assert_eq!(a.get(Some(&alice), "~renamed", "k").await, 200);

    // A user deleted: its token stops working.
    a.warm(Some(&c.bob), s, "k").await;
    let (status, _) = b
        .send(Some(&c.admin), Method::DELETE, "/v2/admin/users/bob", None)
        .await;
    assert_eq!(status, 204, "delete bob");
    assert_eq!(a.get(Some(&c.bob), s, "k").await, 401, "bob deleted on b");

    // A store deleted: gone for reads and writes alike.
    a.warm(Some(&alice), s, "k").await;
    let (status, _) = b
        .send(Some(&alice), Method::DELETE, &store_path, None)
        .await;
    assert_eq!(status, 204, "delete the store");
    assert_eq!(a.get(Some(&alice), s, "k").await, 404, "store deleted on b");
    assert_eq!(a.put(Some(&alice), s, "k").await, 404, "store deleted on b");
}

/// The number of notification connections open on `db`.
async fn listeners(admin: &mut sqlx::PgConnection, db: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
    )
    .bind(db)
    .bind(LISTENER_NAME)
    .fetch_one(admin)
    .await
    .unwrap()
}

/// Waits (at most 20 s, polling) until `db` has `want` notification connections.
/// Cuts both nodes' notification connections to `db` and keeps them from coming back (the
/// database takes no new connections; the nodes' open ones go on working); returns a connection
/// opened before, to make changes on.
async fn cut_listeners(admin: &mut sqlx::PgConnection, db: &str, url: &str) -> sqlx::PgConnection {
    let changer = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"))
        .execute(&mut *admin)
        .await
        .unwrap();
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND application_name = $2",
    )
    .bind(db)
    .bind(LISTENER_NAME)
    .fetch_all(&mut *admin)
    .await
    .unwrap();
    assert_eq!(cut, [true, true]);
    await_listeners(admin, db, 0).await;
    changer
}

async fn await_listeners(admin: &mut sqlx::PgConnection, db: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = listeners(admin, db).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} notification connections, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_notification_connection_cut_nothing_stale_is_served() {
    let Some(c) = cluster().await else { return };
    let (a, b, s) = (&c.a, &c.b, c.store.as_str());
    let db = c.db.url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    await_listeners(&mut admin, &db, 2).await;
    // Bob may write (until his share goes, below).
    let share_path = format!("/v2/key-value-stores/{s}/shares/bob");
    let write = json!({ "access": "WRITE" });
    b.data(&c.alice, Method::PUT, &share_path, Some(write), 200)
        .await;
    a.warm(None, s, "k").await;
    a.warm(Some(&c.alice), s, "k").await;
    // Warm b's connections too: no new ones can be opened while the database refuses them.
    b.warm(Some(&c.alice), s, "k").await;

    // Cut both nodes' notification connections, and keep them from coming back: the database
    // takes no new connections (the nodes' open ones go on working). The change below is made on
    // a connection opened before: a node's request that happened to need a new connection now
    // would fail for a reason of its own.
    let mut changer = cut_listeners(&mut admin, &db, &c.db.url).await;

    // While they are down: a's caches serve, and a change is seen by a's next request.
    a.warm(None, s, "k").await;
    sqlx::query("UPDATE stores SET general_access = 'RESTRICTED' WHERE id = $1")
        .bind(s)
        .execute(&mut changer)
        .await
        .unwrap();
    assert_eq!(
        a.get(None, s, "k").await,
        404,
        "generalAccess changed, no notification"
    );
    a.warm(Some(&c.alice), s, "k").await;

    // A write decided from the caches carries their generation into its one statement: with
    // bob's share removed meanwhile (no notification), his PUT and DELETE write nothing and are
    // refused after all, exactly as with cold caches.
    a.warm(Some(&c.bob), s, "k").await;
    assert_eq!(a.put(Some(&c.bob), s, "k").await, 201, "bob may write");
    let hits = a.cache_hits().await;
    assert_eq!(a.put(Some(&c.bob), s, "k").await, 201, "bob may write");
    assert!(
        a.cache_hits().await > hits,
        "the PUT did not use the caches"
    );
    sqlx::query("DELETE FROM store_shares WHERE store_id = $1")
        .bind(s)
        .execute(&mut changer)
        .await
        .unwrap();
    assert_eq!(
        a.put(Some(&c.bob), s, "k").await,
        404,
        "PUT after the share was removed, no notification"
    );
    sqlx::query(
        "INSERT INTO store_shares (store_id, user_id, access)
         SELECT $1, id, 'WRITE' FROM users WHERE username = 'bob'",
    )
    .bind(s)
    .execute(&mut changer)
    .await
    .unwrap();
    a.warm(Some(&c.bob), s, "k").await;
    sqlx::query("DELETE FROM store_shares WHERE store_id = $1")
        .bind(s)
        .execute(&mut changer)
        .await
        .unwrap();
    let record_path = format!("/v2/key-value-stores/{s}/records/k");
    let (status, _) = a
        .send(Some(&c.bob), Method::DELETE, &record_path, None)
        .await;
    assert_eq!(
        status, 404,
        "DELETE after the share was removed, no notification"
    );
    assert_eq!(a.get(Some(&c.alice), s, "k").await, 200, "k is still there");
    // And a refusal on the caches' word is confirmed before it is answered: bob's share, given
    // again meanwhile, lets his next PUT through.
    sqlx::query(
        "INSERT INTO store_shares (store_id, user_id, access)
         SELECT $1, id, 'WRITE' FROM users WHERE username = 'bob'",
    )
    .bind(s)
    .execute(&mut changer)
    .await
    .unwrap();
    assert_eq!(
        a.put(Some(&c.bob), s, "k").await,
        201,
        "PUT after the share was given again, no notification"
    );
    assert_eq!(listeners(&mut admin, &db).await, 0, "came back too early");

    // Back: the nodes listen again, and the caches serve again, exactly.
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    await_listeners(&mut admin, &db, 2).await;
    a.warm(Some(&c.alice), s, "k").await;
    let share = json!({ "access": "READ" });
    b.data(&c.alice, Method::PUT, &share_path, Some(share), 200)
        .await;
    a.warm(Some(&c.bob), s, "k").await;
    let (status, _) = b
        .send(Some(&c.alice), Method::DELETE, &share_path, None)
        .await;
    assert_eq!(status, 204, "unshare");
    assert_eq!(a.get(Some(&c.bob), s, "k").await, 404, "share removed on b");
}

/// A key listing answered from the caches is one statement that reads the access generation
/// with the keys: with the notification connections cut, a change made meanwhile — generalAccess,
/// a share removed, a token revoked, the store deleted — is refused by the very next listing, as
/// with cold caches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_listing_from_the_caches_sees_every_change_without_notifications() {
    let Some(c) = cluster().await else { return };
    let (a, b, s) = (&c.a, &c.b, c.store.as_str());
    let db = c.db.url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    await_listeners(&mut admin, &db, 2).await;
    let share_path = format!("/v2/key-value-stores/{s}/shares/bob");
    let read = json!({ "access": "READ" });
    b.data(&c.alice, Method::PUT, &share_path, Some(read), 200)
        .await;
    a.warm_keys(None, s).await;

    // As in `with_the_notification_connection_cut_nothing_stale_is_served`: the notification
    // connections cut and kept down, the changes made on a connection opened before.
    let mut changer = cut_listeners(&mut admin, &db, &c.db.url).await;
    let change = |sql: &'static str| sqlx::query(sql).bind(s);

    a.warm_keys(None, s).await;
    change("UPDATE stores SET general_access = 'RESTRICTED' WHERE id = $1")
        .execute(&mut changer)
        .await
        .unwrap();
    assert_eq!(a.keys(None, s).await.0, 404, "generalAccess changed");

    a.warm_keys(Some(&c.bob), s).await;
    change("DELETE FROM store_shares WHERE store_id = $1")
        .execute(&mut changer)
        .await
        .unwrap();
    assert_eq!(a.keys(Some(&c.bob), s).await.0, 404, "share removed");

    change(
        "INSERT INTO store_shares (store_id, user_id, access)
         SELECT $1, id, 'READ' FROM users WHERE username = 'bob'",
    )
    .execute(&mut changer)
    .await
    .unwrap();
    a.warm_keys(Some(&c.bob), s).await;
    sqlx::query("DELETE FROM tokens WHERE user_id = (SELECT id FROM users WHERE username = 'bob')")
        .execute(&mut changer)
        .await
        .unwrap();
    assert_eq!(a.keys(Some(&c.bob), s).await.0, 401, "token revoked");

    a.warm_keys(Some(&c.alice), s).await;
    change("UPDATE stores SET deleted = true WHERE id = $1")
        .execute(&mut changer)
        .await
        .unwrap();
    assert_eq!(a.keys(Some(&c.alice), s).await.0, 404, "store deleted");
    assert_eq!(listeners(&mut admin, &db).await, 0, "came back too early");
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// The backends of `db`'s pipelined-read connections, with the last statement each ran.
async fn pipelined(admin: &mut sqlx::PgConnection, db: &str) -> Vec<(i32, String)> {
    sqlx::query_as(
        "SELECT pid, query FROM pg_stat_activity WHERE datname = $1 AND application_name = $2
         ORDER BY pid",
    )
    .bind(db)
    .bind(READS_NAME)
    .fetch_all(admin)
    .await
    .unwrap()
}

/// A warm GET runs its one statement on the node's pipelined connection (a default pool of 16
/// keeps one, opened at start); when the database ends that connection, a GET answers 200 or at
/// worst 503 (never a 500), and the next one is read on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_get_is_pipelined_and_outlives_its_connection() {
    let Some(c) = cluster().await else { return };
    let (a, s) = (&c.a, c.store.as_str());
    let db = c.db.url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    a.warm(Some(&c.alice), s, "k").await;
    // One per node, a's having read the warm GETs.
    let before = pipelined(&mut admin, &db).await;
    assert_eq!(before.len(), 2, "pipelined connections: {before:?}");
    assert!(
        before
            .iter()
            .any(|(_, query)| query.contains("FROM kvstore_generation g")),
        "no pipelined connection ran the warm GET: {before:?}"
    );

    end_pipelined(&mut admin, &db).await;
    let first = a.get(Some(&c.alice), s, "k").await;
    assert!(first == 200 || first == 503, "GET after the end: {first}");
    a.warm(Some(&c.alice), s, "k").await;
    let after = pipelined(&mut admin, &db).await;
    assert!(
        ran_on_a_new_connection(&before, &after, "FROM kvstore_generation g"),
        "no new pipelined connection read the warm GETs: before {before:?}, after {after:?}"
    );
}

/// Ends both nodes' pipelined connections from the database's side.
async fn end_pipelined(admin: &mut sqlx::PgConnection, db: &str) {
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND application_name = $2",
    )
    .bind(db)
    .bind(READS_NAME)
    .fetch_all(admin)
    .await
    .unwrap();
    assert_eq!(ended, [true, true]);
}

/// Whether a pipelined connection that was not there `before` ran a statement holding `needle`.
fn ran_on_a_new_connection(
    before: &[(i32, String)],
    after: &[(i32, String)],
    needle: &str,
) -> bool {
    after
        .iter()
        .any(|(pid, query)| query.contains(needle) && !before.iter().any(|(old, _)| old == pid))
}

/// A key listing runs on the pipelined connection too, the full path's statement (the caches
/// cold) and the cached one alike; when the database ends that connection, a listing answers 200
/// or at worst 503 (never a 500), and the next one is read on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_listing_is_pipelined_and_outlives_its_connection() {
    let Some(c) = cluster().await else { return };
    let (a, s) = (&c.a, c.store.as_str());
    let db = c.db.url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    // The full path: the caches hold nothing of the admin's token yet.
    let listed = (200, vec!["k".to_owned()]);
    assert_eq!(a.keys(Some(&c.admin), s).await, listed, "cold listing");
    let cold = pipelined(&mut admin, &db).await;
    assert!(
        cold.iter()
            .any(|(_, query)| query.contains("FROM records") && !query.contains("UNION ALL")),
        "no pipelined connection ran the full path's listing: {cold:?}"
    );
    a.warm_keys(Some(&c.alice), s).await;
    let before = pipelined(&mut admin, &db).await;
    assert_eq!(before.len(), 2, "pipelined connections: {before:?}");
    assert!(
        before.iter().any(|(_, query)| query.contains("UNION ALL")),
        "no pipelined connection ran the cached listing: {before:?}"
    );

    end_pipelined(&mut admin, &db).await;
    let first = a.keys(Some(&c.alice), s).await.0;
    assert!(
        first == 200 || first == 503,
        "listing after the end: {first}"
    );
    a.warm_keys(Some(&c.alice), s).await;
    let after = pipelined(&mut admin, &db).await;
    assert!(
        ran_on_a_new_connection(&before, &after, "UNION ALL"),
        "no new pipelined connection read the listings: before {before:?}, after {after:?}"
    );
}

/// Warm GETs that arrive together go out to the database in one batch per pipelined connection;
/// each still gets its own record. 64 keys with bodies of their own, read all at once, three
/// times over, every answer from the caches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_gets_sent_together_each_get_their_own_record() {
    let Some(c) = cluster().await else { return };
    let (a, s, alice) = (&c.a, c.store.as_str(), c.alice.as_str());
    let keys: Vec<String> = (0..64).map(|i| format!("batched-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let path = format!("/v2/key-value-stores/{s}/records/{key}");
        let (status, _) = a
            .send(Some(alice), Method::PUT, &path, Some(json!({ "v": i })))
            .await;
        assert_eq!(status, 201, "{key}");
    }
    a.warm(Some(alice), s, "k").await;
    let hits = a.cache_hits().await;
    for _ in 0..3 {
        let reads = keys.iter().map(|key| {
            let path = format!("/v2/key-value-stores/{s}/records/{key}");
            async move { a.send(Some(alice), Method::GET, &path, None).await }
        });
        let answers = futures_util::future::join_all(reads).await;
        for (i, (status, body)) in answers.into_iter().enumerate() {
            assert_eq!((status, body), (200, json!({ "v": i })), "{}", keys[i]);
        }
    }
    assert!(
        a.cache_hits().await >= hits + 3 * 64,
        "the GETs were not answered from the caches"
    );
}
