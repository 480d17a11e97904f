//! Shared by the integration tests: a real server on `127.0.0.1:0` over a fresh backend, and
//! small helpers to talk to it; [`child`]: the real binary as a child process; [`contents`]: what a
//! backend holds, read whole; [`seaweed`]: SeaweedFS, an S3 server. The backend comes from
//! `KVSTORE_TEST_BACKEND`: `embedded` (the default), `memory`, `postgres`, or `postgres-s3`
//! (PostgreSQL with bodies of 1 KiB or more in SeaweedFS).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod child;
pub mod contents;
pub mod pg_s3;
pub mod seaweed;

use std::sync::Arc;

use kvstore::model::{Token, Username};
use kvstore::storage::objects::ObjectStoreOptions;
use kvstore::storage::{self, Backend, Store};
use kvstore::ServerConfig;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

pub struct TestServer {
    /// e.g. `http://127.0.0.1:41234`
    pub url: String,
    pub store: Arc<dyn Store>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub http: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

pub fn backend_name() -> String {
    std::env::var("KVSTORE_TEST_BACKEND").unwrap_or_else(|_| "embedded".into())
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server; `tweak` may change its configuration before it runs.
    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut pg = None;
        let (backend, dir) = match backend_name().as_str() {
            "memory" => (Backend::Memory, None),
            "embedded" => {
                let dir = tempfile::tempdir().unwrap();
                (Backend::embedded(dir.path().join("data")), Some(dir))
            }
            "postgres" => {
                let db = PgDatabase::create()
                    .await
                    .expect("KVSTORE_TEST_BACKEND=postgres needs a reachable PostgreSQL");
                let backend = db.backend();
                pg = Some(db);
                (backend, None)
            }
            "postgres-s3" => {
                let db = PgDatabase::create()
                    .await
                    .expect("KVSTORE_TEST_BACKEND=postgres-s3 needs a reachable PostgreSQL");
                let seaweed =
                    seaweed::shared().expect("KVSTORE_TEST_BACKEND=postgres-s3 needs SeaweedFS");
                let backend = db.backend_with_objects(object_options(&seaweed.endpoint, 1024));
                pg = Some(db);
                (backend, None)
            }
            other => panic!("unknown KVSTORE_TEST_BACKEND {other}"),
        };
        let mut server = Self::start_on(&backend, tweak).await;
        server._dir = dir;
        server._pg = pg;
        server
    }

    /// Starts a server on the given backend (the caller keeps its directory alive).
    pub async fn start_on(backend: &Backend, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let store = storage::open(backend).await.unwrap();
        Self::start_with_store(store, tweak).await
    }

    /// Starts a server over a store the caller opened (say, over a storage backend of its own).
    pub async fn start_with_store(
        store: Arc<dyn Store>,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = ServerConfig::for_addr(addr);
        tweak(&mut config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(kvstore::serve(
            listener,
            store.clone(),
            config,
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            url: format!("http://{addr}"),
            store,
            shutdown: Some(tx),
            task: Some(task),
            http: reqwest::Client::new(),
            _dir: None,
            _pg: None,
        }
    }

    /// Creates a user directly in the backend and returns its token.
    pub async fn user(&self, name: &str) -> String {
        self.user_with(name, false).await
    }

    /// Creates an administrator directly in the backend and returns its token.
    #[allow(dead_code)] // not every test binary has an administrator
    pub async fn admin(&self, name: &str) -> String {
        self.user_with(name, true).await
    }

    async fn user_with(&self, name: &str, is_admin: bool) -> String {
        let token = Token::generate();
        self.store
            .user_create(Username::parse(name).unwrap(), is_admin, token.hash())
            .await
            .unwrap();
        token.expose().to_owned()
    }

    /// A request to `path` (starting with `/`), with the token when one is given.
    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.url, path));
        match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.req(Method::GET, path, Some(token))
    }

    /// Creates a named store (or an unnamed one with `None`) and returns its JSON object.
    pub async fn create_store(&self, token: &str, name: Option<&str>) -> Value {
        let path = match name {
            Some(n) => format!("/v2/key-value-stores?name={n}"),
            None => "/v2/key-value-stores".to_owned(),
        };
        let resp = self
            .req(Method::POST, &path, Some(token))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "create store: {}",
            resp.status()
        );
        data(resp).await
    }

    /// Stores a record and asserts that it worked.
    pub async fn put_record(
        &self,
        token: &str,
        store: &str,
        key: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) {
        let resp = self
            .req(
                Method::PUT,
                &format!("/v2/key-value-stores/{store}/records/{key}"),
                Some(token),
            )
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            201,
            "put record {key}: {}",
            resp.text().await.unwrap()
        );
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// The `data` of a success response.
pub async fn data(resp: Response) -> Value {
    let body: Value = resp.json().await.unwrap();
    body.get("data")
        .cloned()
        .unwrap_or_else(|| panic!("no data in {body}"))
}

/// Asserts an error response: status, Apify's envelope and its `type`. Returns the message.
pub async fn assert_error(resp: Response, status: u16, error_type: &str) -> String {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "status (body: {text})");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["error"]["type"], error_type, "error type in {text}");
    let message = body["error"]["message"]
        .as_str()
        .expect("error.message")
        .to_owned();
    assert!(!message.is_empty());
    message
}

/// Says that the running test skips (all or part of) what it checks, where nobody can miss it:
/// straight to the process's stderr (libtest captures only `print!`/`eprint!`, and only a failing
/// test's capture is shown), and as a line in the file `KVSTORE_SKIP_LOG` names, which
/// `scripts/test.sh` counts and reports at the end (and fails on, under CI or `.ci/run`).
pub fn skipped(reason: &str) {
    use std::io::Write;
    let test = std::thread::current()
        .name()
        .unwrap_or("an unnamed test")
        .to_owned();
    let binary = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let binary = binary.rsplit_once('-').map_or(binary.as_str(), |(b, _)| b);
    let line = format!("SKIPPED: {binary}::{test}: {reason}");
    let _ = writeln!(std::io::stderr().lock(), "\n!! {line}");
    if let Some(path) = std::env::var_os("KVSTORE_SKIP_LOG") {
        let logged = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = logged {
            panic!("cannot record the skip in KVSTORE_SKIP_LOG ({path:?}): {e}");
        }
    }
}

/// Bodies of `min_bytes` or more in the shared bucket of the S3 server at `endpoint`, under a
/// prefix of their own; garbage kept for 10 minutes (the default).
pub fn object_options(endpoint: &str, min_bytes: u64) -> ObjectStoreOptions {
    ObjectStoreOptions {
        url: format!(
            "s3://{}/{}",
            seaweed::BUCKET,
            kvstore::model::StoreId::generate().as_str()
        ),
        endpoint: Some(endpoint.to_owned()),
        min_bytes,
        gc_grace: std::time::Duration::from_secs(600),
        op_timeout: std::time::Duration::from_secs(10),
    }
}

/// A fresh PostgreSQL database for one test, dropped afterwards (also when the test fails).
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

/// The server the PostgreSQL tests use; every test makes its own database there.
pub fn pg_admin_url() -> String {
    std::env::var("KVSTORE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl PgDatabase {
    /// `None` (after saying so loudly) when PostgreSQL is unreachable outside CI; in CI
    /// (`CI=true`) the PostgreSQL tests may not skip, so an unreachable database fails the test.
    pub async fn create() -> Option<Self> {
        use sqlx::Connection;
        let admin_url = pg_admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(conn) => conn,
            Err(e) => {
                if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                    panic!("PostgreSQL at {admin_url} is required in CI: {e}");
                }
                skipped(&format!("no PostgreSQL at {admin_url} ({e})"));
                return None;
            }
        };
        let name = format!(
            "kvstore_test_{}",
            kvstore::model::StoreId::generate().as_str().to_lowercase()
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        Some(Self {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        })
    }

    pub fn backend(&self) -> kvstore::storage::Backend {
        kvstore::storage::Backend::Postgres {
            url: self.url.clone(),
            options: Default::default(),
        }
    }

    /// [`Self::backend`] with bodies in an object store.
    pub fn backend_with_objects(&self, objects: ObjectStoreOptions) -> kvstore::storage::Backend {
        kvstore::storage::Backend::Postgres {
            url: self.url.clone(),
            options: kvstore::storage::postgres::PgOptions {
                objects: Some(objects),
                ..Default::default()
            },
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime; a thread of its own may block on another one.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A store listing's first `limit` stores, oldest first, unnamed ones included.
pub fn first_stores(limit: u64) -> kvstore::storage::StoreListQuery {
    kvstore::storage::StoreListQuery {
        offset: 0,
        limit,
        desc: false,
        unnamed: true,
    }
}
