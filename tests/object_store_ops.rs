//! `kvstore copy`, `backup` and `restore` carry bodies between all places: a data directory,
//! PostgreSQL with bodies inline, and PostgreSQL with large bodies in an S3-compatible object
//! store (a real SeaweedFS the tests start, tests/common/seaweed.rs). Every hop keeps users,
//! stores (with exact stats), record metadata (ETags, versions) and bodies byte for byte. Needs
//! PostgreSQL and SeaweedFS; skips loudly without them, except under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use kvstore::model::RecordKey;
use kvstore::storage::objects::{ObjectStoreOptions, Objects};
use kvstore::storage::{self, Backend, BodyInput, Store};

use common::contents::{everything, two_owners};
use common::pg_s3::body;
use common::{object_options, seaweed, PgDatabase};

/// Bodies of this many bytes or more go to the object store in these tests.
const MIN_BYTES: u64 = 64 * 1024;

/// The sizes of the large records: just over the threshold, a few MiB, and past one 8 MiB part
/// of a multipart upload.
const LARGE: [usize; 3] = [MIN_BYTES as usize + 1, 3_000_000, 9 * 1024 * 1024 + 77];

/// Small records, large ones (one overwritten, so that its version is not the first), a deleted
/// one, over two users and stores.
async fn fill(store: &dyn Store) {
    let (named, unnamed) = two_owners(store, None).await;
    let put = |store_id: kvstore::model::StoreId, key: String, bytes: Vec<u8>| async move {
        store
            .record_put(
                &store_id,
                &RecordKey::parse(&key).unwrap(),
                "application/octet-stream",
                BodyInput::Bytes(Bytes::from(bytes)),
            )
            .await
            .unwrap();
    };
    for i in 0..20u8 {
        put(
            named.id.clone(),
            format!("small-{i:02}"),
            body(100 + i as usize, i),
        )
        .await;
    }
    for (i, len) in LARGE.into_iter().enumerate() {
        put(
            named.id.clone(),
            format!("large-{i}"),
            body(len, 100 + i as u8),
        )
        .await;
    }
    put(unnamed.id.clone(), "big".into(), body(LARGE[1], 1)).await;
    put(unnamed.id.clone(), "big".into(), body(LARGE[1], 2)).await;
    put(unnamed.id.clone(), "tiny".into(), b"{}".to_vec()).await;
    store
        .record_delete(&named.id, &RecordKey::parse("small-07").unwrap())
        .await
        .unwrap();
}

/// Records whose bodies are at least [`MIN_BYTES`]: those that must be objects.
const LARGE_RECORDS: usize = LARGE.len() + 1;

/// (objects under the prefix of `options`, rows naming an object, rows with the body inline)
async fn placement(db: &PgDatabase, options: &ObjectStoreOptions) -> (usize, i64, i64) {
    use sqlx::Connection;
    let in_bucket = Objects::new(options).unwrap().list("").await.unwrap().len();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (objects, inline): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE object IS NOT NULL), count(*) FILTER (WHERE object IS NULL) \
         FROM records",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    (in_bucket, objects, inline)
}

/// Runs `kvstore ARGS…`, which must succeed; its standard output.
fn kvstore(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kvstore"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kvstore {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

async fn open(backend: &Backend) -> std::sync::Arc<dyn Store> {
    storage::open(backend).await.unwrap()
}

#[tokio::test]
async fn copy_carries_bodies_between_a_data_dir_postgres_inline_and_the_object_store() {
    let Some(weed) = seaweed::shared() else {
        return;
    };
    let (Some(inline_db), Some(s3_db)) = (PgDatabase::create().await, PgDatabase::create().await)
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (first, last) = (dir.path().join("first"), dir.path().join("last"));
    let original = {
        let store = open(&Backend::embedded(first.clone())).await;
        fill(&*store).await;
        let state = everything(&*store).await;
        store.close().await.unwrap();
        state
    };

    // Data directory → PostgreSQL, bodies inline.
    kvstore(&[
        "copy",
        "--quiet",
        "--from",
        path(&first),
        "--to",
        &inline_db.url,
    ]);
    let store = open(&inline_db.backend()).await;
    assert_eq!(everything(&*store).await, original);
    store.close().await.unwrap();

    // PostgreSQL inline → PostgreSQL with large bodies in the object store.
    let options = object_options(&weed.endpoint, MIN_BYTES);
    let to_s3 = [
        "--to-object-store",
        &options.url,
        "--to-object-store-endpoint",
        &weed.endpoint,
        "--to-object-store-min-bytes",
        "65536",
    ];
    let mut args = vec![
        "copy",
        "--quiet",
        "--from",
        &inline_db.url,
        "--to",
        &s3_db.url,
    ];
    args.extend(to_s3);
    let out = kvstore(&args);
    assert!(
        out.contains("Copied 2 users, 2 stores, 24 records"),
        "{out}"
    );
    let (in_bucket, object_rows, inline_rows) = placement(&s3_db, &options).await;
    assert_eq!(
        (in_bucket, object_rows, inline_rows),
        (LARGE_RECORDS, LARGE_RECORDS as i64, 20)
    );
    let store = open(&s3_db.backend_with_objects(options.clone())).await;
    assert_eq!(everything(&*store).await, original);
    store.close().await.unwrap();

    // Again: everything is there already; nothing is uploaded twice.
    let out = kvstore(&args);
    assert!(out.contains("0 records (24 already there)"), "{out}");
    assert_eq!(placement(&s3_db, &options).await.0, LARGE_RECORDS);

    // PostgreSQL + object store → a new data directory.
    kvstore(&[
        "copy",
        "--quiet",
        "--from",
        &s3_db.url,
        "--from-object-store",
        &options.url,
        "--from-object-store-endpoint",
        &weed.endpoint,
        "--to",
        path(&last),
    ]);
    let store = open(&Backend::embedded(last.clone())).await;
    assert_eq!(everything(&*store).await, original);
    store.close().await.unwrap();
    // The data directory stays locked until its store is dropped.
    drop(store);

    // And straight from a data directory into the object store, through the library.
    let other = object_options(&weed.endpoint, MIN_BYTES);
    let Some(direct_db) = PgDatabase::create().await else {
        return;
    };
    let from = open(&Backend::embedded(last)).await;
    let to = open(&direct_db.backend_with_objects(other.clone())).await;
    let report = kvstore::ops::copy::copy_all(&*from, &to, false)
        .await
        .unwrap();
    assert_eq!(report.records_copied, 24);
    assert_eq!(everything(&*to).await, original);
    from.close().await.unwrap();
    to.close().await.unwrap();
    assert_eq!(
        placement(&direct_db, &other).await,
        (LARGE_RECORDS, LARGE_RECORDS as i64, 20)
    );
}

#[tokio::test]
async fn copy_refuses_an_object_store_for_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kvstore"))
        .args(["copy", "--from"])
        .arg(dir.path().join("a"))
        .arg("--to")
        .arg(dir.path().join("b"))
        .args(["--to-object-store", "s3://bucket"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is a data directory"), "{stderr}");
    assert!(!dir.path().join("a").exists() && !dir.path().join("b").exists());
}

#[tokio::test]
async fn a_backup_of_postgres_with_objects_restores_into_a_data_dir_and_an_object_store() {
    let Some(weed) = seaweed::shared() else {
        return;
    };
    let (Some(source_db), Some(target_db)) =
        (PgDatabase::create().await, PgDatabase::create().await)
    else {
        return;
    };
    let options = object_options(&weed.endpoint, MIN_BYTES);
    let original = {
        let store = open(&source_db.backend_with_objects(options.clone())).await;
        fill(&*store).await;
        let state = everything(&*store).await;
        store.close().await.unwrap();
        state
    };
    assert_eq!(
        placement(&source_db, &options).await.1,
        LARGE_RECORDS as i64
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kvstore.backup");
    let out = kvstore(&[
        "backup",
        "--to",
        path(&file),
        "--database-url",
        &source_db.url,
        "--object-store",
        &options.url,
        "--object-store-endpoint",
        &weed.endpoint,
    ]);
    assert!(out.contains("24 records"), "{out}");

    // Into a new data directory.
    let restored = dir.path().join("restored");
    kvstore(&[
        "restore",
        "--quiet",
        "--from",
        path(&file),
        "--data-dir",
        path(&restored),
    ]);
    let store = open(&Backend::embedded(restored)).await;
    assert_eq!(everything(&*store).await, original);
    store.close().await.unwrap();

    // Into an empty database with large bodies in (another prefix of) the object store.
    let other = object_options(&weed.endpoint, MIN_BYTES);
    kvstore(&[
        "restore",
        "--quiet",
        "--from",
        path(&file),
        "--database-url",
        &target_db.url,
        "--object-store",
        &other.url,
        "--object-store-endpoint",
        &weed.endpoint,
        "--object-store-min-bytes",
        "65536",
    ]);
    assert_eq!(
        placement(&target_db, &other).await,
        (LARGE_RECORDS, LARGE_RECORDS as i64, 20)
    );
    let store = open(&target_db.backend_with_objects(other)).await;
    assert_eq!(everything(&*store).await, original);
    store.close().await.unwrap();
}
