//! `kvstore copy`: embedded → PostgreSQL → embedded gives identical users, stores and records;
//! a second run finishes (here: repeats) a copy without changing anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::contents::{everything, two_owners};

use bytes::Bytes;
use kvstore::model::{GeneralAccess, RecordKey};
use kvstore::storage::{self, Backend, BodyInput, Store, StoreUpdate};

async fn fill(store: &dyn Store) {
    let (named, unnamed) = two_owners(
        store,
        Some(r#"{"collections":{"a":{"keyPrefix":"a"}}}"#.into()),
    )
    .await;
    store
        .store_update(
            &named.id,
            StoreUpdate {
                name: None,
                general_access: Some(GeneralAccess::AnyoneWithNameCanRead),
                title: Some(Some("Crawl results – žluťoučký".into())),
            },
        )
        .await
        .unwrap();
    for i in 0..40 {
        let key = RecordKey::parse(&format!("a-{i:03}")).unwrap();
        let body = Bytes::from(format!("{{\"i\":{i}}}"));
        store
            .record_put(&named.id, &key, "application/json", BodyInput::Bytes(body))
            .await
            .unwrap();
    }
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    store
        .record_put(
            &unnamed.id,
            &RecordKey::parse("BIG").unwrap(),
            "image/png",
            BodyInput::Bytes(big.into()),
        )
        .await
        .unwrap();
    store
        .record_delete(&named.id, &RecordKey::parse("a-007").unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn embedded_to_postgres_to_embedded_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let first = storage::open(&Backend::embedded(dir.path().join("one")))
        .await
        .unwrap();
    fill(&*first).await;
    let original = everything(&*first).await;
    assert!(original.len() > 40);

    // The middle hop is PostgreSQL when there is one, otherwise the in-memory backend.
    let pg = common::PgDatabase::create().await;
    let middle = match &pg {
        Some(db) => storage::open(&db.backend()).await.unwrap(),
        None => storage::open(&Backend::Memory).await.unwrap(),
    };
    let report = kvstore::ops::copy::copy_all(&*first, &middle, false)
        .await
        .unwrap();
    assert_eq!(
        (report.users, report.stores, report.records_copied),
        (2, 2, 40)
    );
    assert_eq!(everything(&*middle).await, original);

    // Again: nothing left to copy, nothing changes.
    let again = kvstore::ops::copy::copy_all(&*first, &middle, false)
        .await
        .unwrap();
    assert_eq!((again.records_copied, again.records_skipped), (0, 40));
    assert_eq!(everything(&*middle).await, original);
    first.close().await.unwrap();

    let last = storage::open(&Backend::embedded(dir.path().join("two")))
        .await
        .unwrap();
    kvstore::ops::copy::copy_all(&*middle, &last, false)
        .await
        .unwrap();
    assert_eq!(everything(&*last).await, original);
    last.close().await.unwrap();
    middle.close().await.unwrap();
}

#[tokio::test]
async fn the_cli_copies_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().join("from"), dir.path().join("to"));
    {
        let store = storage::open(&Backend::embedded(from.clone()))
            .await
            .unwrap();
        fill(&*store).await;
        store.close().await.unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore"))
        .args(["copy", "--quiet", "--from"])
        .arg(&from)
        .arg("--to")
        .arg(&to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Copied 2 users, 2 stores, 40 records"),
        "{stdout}"
    );
    let a = storage::open(&Backend::embedded(from)).await.unwrap();
    let b = storage::open(&Backend::embedded(to)).await.unwrap();
    assert_eq!(everything(&*a).await, everything(&*b).await);
}
