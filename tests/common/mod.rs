//! Shared by the HTTP integration tests: a real server on `127.0.0.1:0` over a fresh backend, and
//! small helpers to talk to it. The backend comes from `KVSTORE_TEST_BACKEND` (`embedded`, the
//! default, or `memory`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use kvstore::config::ServerConfig;
use kvstore::model::{Token, Username};
use kvstore::storage::{self, Backend, Store};
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
        let (backend, dir) = match backend_name().as_str() {
            "memory" => (Backend::Memory, None),
            "embedded" => {
                let dir = tempfile::tempdir().unwrap();
                (Backend::Embedded(dir.path().join("data")), Some(dir))
            }
            other => panic!("unknown KVSTORE_TEST_BACKEND {other}"),
        };
        let store = storage::open(&backend).await.unwrap();
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
            _dir: dir,
        }
    }

    /// Creates a user directly in the backend and returns its token.
    pub async fn user(&self, name: &str) -> String {
        let token = Token::generate();
        self.store
            .user_create(Username::parse(name).unwrap(), false, token.hash())
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
