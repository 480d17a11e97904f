//! Orphan bodies (stored, but no record points at them, as a crash between storing a body and
//! committing its record leaves them): `kvstore fsck` reports them and removes them on both
//! backends, leaving live data intact; the embedded engine's check leaves alone what an open
//! snapshot may still read and what a write in flight may still commit; a server removes them
//! by itself in the background, and on a data directory removes the last process's at once when
//! it starts.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kvstore::storage::{Administration, BulkTransfer, Housekeeping, RecordStore};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::child::{kvstore, output, stdout_of};
use common::{PgDatabase, TestServer};
use kvstore::model::{RecordKey, StoreId, StoreInfo, Username};
use kvstore::storage::embedded::EmbeddedStore;
use kvstore::storage::{Backend, BodyInput, BodyOutput, OrphanCheck, OrphanReport, Store};
use sqlx::Connection;

/// `kvstore fsck ARGS`, run to the end.
async fn fsck(args: &[&str]) -> Output {
    let mut cmd = kvstore();
    cmd.arg("fsck").args(args);
    output(cmd).await
}

fn big_body(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Blob file names in `blobs`.
fn blob_files(blobs: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

async fn get_body(server: &TestServer, token: &str, store: &str, key: &str) -> Bytes {
    let resp = server
        .get(
            &format!("/v2/key-value-stores/{store}/records/{key}"),
            token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap()
}

/// A server on `backend` with one store holding `big` (a body of `big_len` bytes, stored apart from
/// the record: a blob file or chunks) and `small` (inline); returns the server, the owner's token,
/// the store id and the big body.
async fn serve_big_and_small(
    backend: &Backend,
    big_len: usize,
) -> (TestServer, String, String, Vec<u8>) {
    let server = TestServer::start_on(backend, |_| {}).await;
    let token = server.user("owner").await;
    let store = server.create_store(&token, Some("s")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let big = big_body(big_len);
    server
        .put_record(
            &token,
            &store,
            "big",
            "application/octet-stream",
            big.clone(),
        )
        .await;
    server
        .put_record(&token, &store, "small", "text/plain", "hello")
        .await;
    (server, token, store, big)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_reports_and_removes_orphan_blob_files_of_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backend = Backend::embedded(&data);
    let (server, token, store, big) = serve_big_and_small(&backend, 1_000_000).await;

    // While the server holds the directory, fsck refuses rather than races it.
    let out = fsck(&["--data-dir", data.to_str().unwrap()]).await;
    assert!(!out.status.success(), "{}", stdout_of(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{out:?}"
    );
    server.stop().await;

    // A crash between writing a blob and committing its record leaves a blob nobody points at.
    let blobs = data.join("blobs");
    let live = blob_files(&blobs);
    assert_eq!(live.len(), 1);
    let orphan = blobs.join("00112233445566778899aabbccddeeff");
    std::fs::write(&orphan, vec![7u8; 12_345]).unwrap();
    // A file that is not a blob is not fsck's to judge.
    std::fs::write(blobs.join("notes.txt"), "keep me").unwrap();

    let out = fsck(&["--data-dir", data.to_str().unwrap(), "--dry-run"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout_of(&out).contains("Found 1 orphan bodies (12345 bytes)")
            && stdout_of(&out).contains("removed 0"),
        "{}",
        stdout_of(&out)
    );
    assert!(orphan.exists(), "--dry-run removed the orphan");

    let out = fsck(&["--data-dir", data.to_str().unwrap()]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout_of(&out).contains("Found 1 orphan bodies (12345 bytes)")
            && stdout_of(&out).contains("removed 1"),
        "{}",
        stdout_of(&out)
    );
    assert!(!orphan.exists());
    let mut expected = live.clone();
    expected.push("notes.txt".into());
    expected.sort();
    assert_eq!(blob_files(&blobs), expected);

    // A second run finds nothing, and the live records are whole.
    let out = fsck(&["--data-dir", data.to_str().unwrap()]).await;
    assert!(
        stdout_of(&out).contains("Found 0 orphan bodies (0 bytes)"),
        "{}",
        stdout_of(&out)
    );
    let server = TestServer::start_on(&backend, |_| {}).await;
    assert_eq!(get_body(&server, &token, &store, "big").await, big);
    assert_eq!(get_body(&server, &token, &store, "small").await, "hello");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_opened_to_serve_loses_its_crash_orphans_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, token, store, big) =
        serve_big_and_small(&Backend::embedded(&data), 1_000_000).await;
    server.stop().await;
    // What a crash leaves: a blob just written, its commit never made (young: the periodic
    // check would spare it for an hour); and a file that is not a blob.
    let blobs = data.join("blobs");
    let live = blob_files(&blobs);
    let orphan = blobs.join("00112233445566778899aabbccddeeff");
    std::fs::write(&orphan, vec![7u8; 12_345]).unwrap();
    std::fs::write(blobs.join("notes.txt"), "keep me").unwrap();

    // Opened as `serve` opens it: the check runs in the background right after the open.
    let backend = Backend::Embedded {
        dir: data.clone(),
        options: kvstore::storage::embedded::EmbeddedOptions {
            collect_orphans_at_open: true,
            ..Default::default()
        },
    };
    let server = TestServer::start_on(&backend, |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while orphan.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!orphan.exists(), "the start-up check left the orphan");
    let mut expected = live;
    expected.push("notes.txt".into());
    expected.sort();
    assert_eq!(blob_files(&blobs), expected);
    assert_eq!(get_body(&server, &token, &store, "big").await, big);
    assert_eq!(get_body(&server, &token, &store, "small").await, "hello");
    server.stop().await;
}

async fn put(store: &dyn Store, id: &StoreId, key: &str, body: Vec<u8>) {
    store
        .record_put(
            id,
            &RecordKey::parse(key).unwrap(),
            "application/octet-stream",
            BodyInput::Bytes(body.into()),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_check_spares_blobs_of_open_snapshots_and_of_writes_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EmbeddedStore::open(dir.path()).unwrap();
    let token = kvstore::model::Token::generate();
    let user = engine
        .user_create(Username::parse("owner").unwrap(), false, token.hash())
        .await
        .unwrap();
    let (info, _) = engine
        .store_get_or_create(StoreInfo::new(user.id.clone(), None, None))
        .await
        .unwrap();
    let first = big_body(200_000);
    put(&engine, &info.id, "big", first.clone()).await;
    let now = OrphanCheck {
        remove: true,
        min_age: Duration::ZERO,
    };
    assert_eq!(engine.orphans(now).await.unwrap(), OrphanReport::default());

    // A backup's snapshot still reads the body that an overwrite replaces.
    let snapshot = engine.snapshot().await.unwrap();
    put(&engine, &info.id, "big", big_body(300_000)).await;
    let orphan = dir
        .path()
        .join("blobs")
        .join("ffeeddccbbaa99887766554433221100");
    std::fs::write(&orphan, vec![1u8; 5000]).unwrap();
    // Just written: it may be the body of a write about to commit.
    let with_grace = OrphanCheck {
        remove: true,
        min_age: Duration::from_secs(3600),
    };
    assert_eq!(
        engine.orphans(with_grace).await.unwrap(),
        OrphanReport::default()
    );
    // Without the grace period it is found; the replaced body is the snapshot's, not an orphan,
    // and nothing is removed while the snapshot is open.
    let report = engine.orphans(now).await.unwrap();
    assert_eq!(
        report,
        OrphanReport {
            bodies: 1,
            bytes: 5000,
            removed: 0
        }
    );
    assert!(orphan.exists());
    let record = snapshot
        .record(&info.id, &RecordKey::parse("big").unwrap())
        .await
        .unwrap()
        .unwrap();
    let BodyOutput::File(mut file) = record.body else {
        panic!("a 200 kB body is a blob file");
    };
    let mut read = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut read).unwrap();
    assert_eq!(read, first);
    drop(snapshot);

    let report = engine.orphans(now).await.unwrap();
    assert_eq!(
        report,
        OrphanReport {
            bodies: 1,
            bytes: 5000,
            removed: 1
        }
    );
    assert!(!orphan.exists());
    assert_eq!(blob_files(&dir.path().join("blobs")).len(), 1);
    engine.close().await.unwrap();
}

/// Chunks as a crash (or the leak of issue 14) leaves them: committed, with no record.
async fn plant_pg_orphan(url: &str, chunks: i32, chunk_len: usize) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let id: i64 = sqlx::query_scalar("SELECT nextval('record_blob_ids')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    for seq in 0..chunks {
        sqlx::query("INSERT INTO record_chunks (blob_id, seq, data) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(seq)
            .bind(vec![9u8; chunk_len])
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

async fn chunk_count(url: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM record_chunks")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_reports_and_removes_orphan_chunks_on_postgres_beside_a_running_server() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let (server, token, store, big) = serve_big_and_small(&db.backend(), 2_500_000).await;
    let live = chunk_count(&db.url).await;
    assert_eq!(live, 3);
    plant_pg_orphan(&db.url, 2, 1000).await;

    let out = fsck(&["--database-url", &db.url, "--dry-run"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout_of(&out).contains("Found 1 orphan bodies (2000 bytes)")
            && stdout_of(&out).contains("removed 0"),
        "{}",
        stdout_of(&out)
    );
    assert_eq!(chunk_count(&db.url).await, live + 2);

    let out = fsck(&["--database-url", &db.url]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout_of(&out).contains("Found 1 orphan bodies (2000 bytes)")
            && stdout_of(&out).contains("removed 1"),
        "{}",
        stdout_of(&out)
    );
    assert_eq!(chunk_count(&db.url).await, live);
    assert_eq!(get_body(&server, &token, &store, "big").await, big);
    assert_eq!(get_body(&server, &token, &store, "small").await, "hello");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_removes_orphan_chunks_in_the_background() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let server = TestServer::start_on(&db.backend(), |config| {
        config.orphan_check_interval = Some(Duration::from_millis(100));
    })
    .await;
    let token = server.user("owner").await;
    let store = server.create_store(&token, Some("s")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let big = big_body(1_500_000);
    server
        .put_record(
            &token,
            &store,
            "big",
            "application/octet-stream",
            big.clone(),
        )
        .await;
    plant_pg_orphan(&db.url, 1, 500).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while chunk_count(&db.url).await != 2 {
        assert!(
            Instant::now() < deadline,
            "the orphan is still there after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get_body(&server, &token, &store, "big").await, big);
    server.stop().await;
}
