//! An I/O error inside the embedded engine (docs/reliability.md, "A full disk"): redb refuses
//! every write after an I/O error until the database is reopened, so the server must say so:
//! writes answer 503 `service-unavailable` (not 500) and `/readyz` answers 503 until the engine
//! is usable again, which is after a restart on the same data directory.
//!
//! The failure is injected by a redb `StorageBackend` over the real database file whose writes
//! and syncs fail with EIO once the test flips a switch. Goes with redb: its engine-independent
//! replacement is `io_error_on_powerfs_answers_503_until_a_restart` in tests/io_faults.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::OpenOptions;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{assert_error, TestServer};
use kvstore::storage::embedded::EmbeddedStore;
use kvstore::storage::Store;
use reqwest::Method;

/// The real database file; writes and syncs fail (EIO) while `fail` is set.
#[derive(Debug)]
struct FailingFile {
    file: redb::backends::FileBackend,
    fail: Arc<AtomicBool>,
}

fn eio() -> std::io::Error {
    std::io::Error::from_raw_os_error(5) // EIO
}

impl redb::StorageBackend for FailingFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(eio());
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(eio());
        }
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(eio());
        }
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }
}

async fn readyz(server: &TestServer) -> u16 {
    server
        .req(Method::GET, "/readyz", None)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn put(server: &TestServer, token: &str, store: &str, key: &str) -> reqwest::Response {
    server
        .req(
            Method::PUT,
            &format!("/v2/key-value-stores/{store}/records/{key}"),
            Some(token),
        )
        .header("content-type", "text/plain")
        .body(format!("value of {key}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_engine_io_error_answers_503_and_readyz_stays_503_until_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(data.join("kvstore.redb"))
        .unwrap();
    let backend = FailingFile {
        file: redb::backends::FileBackend::new(file).unwrap(),
        fail: fail.clone(),
    };
    let engine = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || EmbeddedStore::open_with_backend(&data, backend))
            .await
            .unwrap()
            .unwrap()
    };
    let store: Arc<dyn Store> = Arc::new(engine);
    let server = TestServer::start_with_store(store, |_| {}).await;
    let token = server.user("alice").await;
    let id = server.create_store(&token, Some("s")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .put_record(&token, &id, "before", "text/plain", "kept")
        .await;
    assert_eq!(readyz(&server).await, 200, "/readyz before the failure");

    // The disk fails under the commit.
    fail.store(true, Ordering::SeqCst);
    let message = assert_error(
        put(&server, &token, &id, "during").await,
        503,
        "service-unavailable",
    )
    .await;
    println!("the write that hit the I/O error: {message}");
    assert_eq!(readyz(&server).await, 503, "/readyz after the I/O error");

    // The disk works again, but the engine has latched the error: still 503 for writes and
    // readiness, while reads of what was stored go on.
    fail.store(false, Ordering::SeqCst);
    assert_error(
        put(&server, &token, &id, "after").await,
        503,
        "service-unavailable",
    )
    .await;
    assert_eq!(readyz(&server).await, 503, "/readyz with the engine broken");
    let got = server
        .get(&format!("/v2/key-value-stores/{id}/records/before"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200, "a read after the I/O error");
    assert_eq!(got.text().await.unwrap(), "kept");
    server.stop().await;

    // A restart on the same data directory makes the engine usable again.
    let server = TestServer::start_on(&kvstore::storage::Backend::embedded(data), |_| {}).await;
    assert_eq!(readyz(&server).await, 200, "/readyz after a restart");
    let resp = put(&server, &token, &id, "after-restart").await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let got = server
        .get(&format!("/v2/key-value-stores/{id}/records/before"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.text().await.unwrap(), "kept");
    server.stop().await;
}
