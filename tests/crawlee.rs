//! `kvstore import` / `kvstore export` of Crawlee storage folders, through the library on the
//! in-memory backend: both Crawlee layouts in, both out, rejected keys reported, large files
//! streamed, and a round trip that gives back the same stores. (tests/clients/crawlee runs the
//! round trip with real crawlee-python and crawlee JS.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::contents::{self, stores_of};
use kvstore::model::{RecordKey, StoreName, Token, User, Username};
use kvstore::ops::crawlee::{export, import, Layout};
use kvstore::storage::{self, Backend, Store};

async fn backend_with_user() -> (Arc<dyn Store>, User) {
    let store = storage::open(&Backend::Memory).await.unwrap();
    let user = store
        .user_create(
            Username::parse("alice").unwrap(),
            false,
            Token::generate().hash(),
        )
        .await
        .unwrap();
    (store, user)
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// What crawlee-python 1.x writes (percent-encoded file names, `<file>.__metadata__.json`).
fn python_folder(root: &Path) {
    let d = root.join("key_value_stores/default");
    write(
        &d.join("__metadata__.json"),
        br#"{"id": "vjos5y20ud6UTNPhn", "name": null, "accessed_at": "2026-11-25 02:05:13.985294+00:00", "created_at": "2026-11-25 02:05:13.957775+00:00", "modified_at": "2026-11-25 02:05:13.985294+00:00"}"#,
    );
    write(&d.join("INPUT"), br#"{"a": 1}"#);
    write(
        &d.join("INPUT.__metadata__.json"),
        br#"{"key": "INPUT", "content_type": "application/json; charset=utf-8", "size": 8}"#,
    );
    write(&d.join("it%27s%28ok%29"), b"quoted");
    write(
        &d.join("it%27s%28ok%29.__metadata__.json"),
        br#"{"key": "it's(ok)", "content_type": "text/plain", "size": 6}"#,
    );
    write(&d.join("weird%2Fkey%3Fx"), b"v");
    write(
        &d.join("weird%2Fkey%3Fx.__metadata__.json"),
        br#"{"key": "weird/key?x", "content_type": "text/plain; charset=utf-8", "size": 1}"#,
    );
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    write(&d.join("big"), &big);
    write(
        &d.join("big.__metadata__.json"),
        br#"{"key": "big", "content_type": "application/octet-stream", "size": 3145728}"#,
    );
    let n = root.join("key_value_stores/my-store");
    write(
        &n.join("__metadata__.json"),
        br#"{"id": "Ni3cnFD8457DYGQdQ", "name": "my-store", "accessed_at": "2026-11-25 02:05:13+00:00", "created_at": "2026-11-25 02:05:13+00:00", "modified_at": "2026-11-25 02:05:13+00:00"}"#,
    );
    write(&n.join("k"), b"[1, 2]");
    write(
        &n.join("k.__metadata__.json"),
        br#"{"key": "k", "content_type": "application/json; charset=utf-8", "size": 6}"#,
    );
}

/// What crawlee JS (`@crawlee/memory-storage` 3.x) writes: `<key>.<ext>`, metadata as a JSON
/// string, and a hand-made INPUT.json without metadata as the Apify CLI leaves it.
fn js_folder(root: &Path) {
    let d = root.join("key_value_stores/default");
    write(
        &d.join("__metadata__.json"),
        br#"{"id": "539fea67-b998-42af-8fb3-19a8eae7a245", "name": "default", "accessedAt": "2026-11-25T02:05:24.008Z", "createdAt": "2026-11-25T02:05:23.984Z", "modifiedAt": "2026-11-25T02:05:24.008Z", "userId": "1"}"#,
    );
    write(&d.join("INPUT.json"), b"{\n  \"a\": 1\n}");
    write(&d.join("img.png"), &[0x89, 0x50, 0x4e, 0x47]);
    write(
        &d.join("img.__metadata__.json"),
        br#""{\"extension\":\"png\",\"key\":\"img\",\"contentType\":\"image/png\"}""#,
    );
    write(&d.join("text"), b"hello");
    write(
        &d.join("text.__metadata__.json"),
        br#""{\"extension\":\"txt\",\"key\":\"text\",\"contentType\":\"text/plain\"}""#,
    );
    write(&d.join("page.html"), b"<p>x</p>");
    write(
        &d.join("page.html.__metadata__.json"),
        br#""{\"extension\":\"html\",\"key\":\"page.html\",\"contentType\":\"text/html\"}""#,
    );
    // Two files that give the same key, and a key with '/' (written as a folder).
    write(&d.join("dup.json"), b"{}");
    write(&d.join("dup.txt"), b"x");
    write(&d.join("a/b.json"), b"{}");
    // A folder whose name is no store name.
    write(&root.join("key_value_stores/bad_name/x.json"), b"{}");
}

async fn records_of(store: &dyn Store, user: &User) -> Vec<(String, String, String, Vec<u8>)> {
    let mut out = Vec::new();
    for info in stores_of(store, &user.id).await {
        let name = info
            .name
            .as_ref()
            .map_or_else(|| "(unnamed)".to_owned(), |n| n.to_string());
        for (key, (meta, body)) in contents::records_of(store, &info.id).await {
            out.push((name.clone(), key, meta.content_type, body));
        }
    }
    out.sort();
    out
}

fn find<'a>(
    records: &'a [(String, String, String, Vec<u8>)],
    store: &str,
    key: &str,
) -> &'a (String, String, String, Vec<u8>) {
    records
        .iter()
        .find(|r| r.0 == store && r.1 == key)
        .unwrap_or_else(|| panic!("no record {store}/{key} in {records:?}"))
}

#[tokio::test]
async fn imports_the_python_layout_and_reports_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    python_folder(dir.path());
    let (store, user) = backend_with_user().await;
    let report = import(&*store, dir.path(), &user, false).await.unwrap();
    assert_eq!((report.stores, report.records), (2, 4), "{report:?}");
    assert_eq!(report.rejected.len(), 1, "{:?}", report.rejected);
    assert_eq!(report.rejected[0].item, "weird/key?x");
    assert!(report.rejected[0].reason.contains("invalid character"));

    let records = records_of(&*store, &user).await;
    let input = find(&records, "default", "INPUT");
    assert_eq!(input.2, "application/json; charset=utf-8");
    assert_eq!(input.3, br#"{"a": 1}"#);
    assert_eq!(find(&records, "default", "it's(ok)").3, b"quoted");
    let big = find(&records, "default", "big");
    assert_eq!(big.3.len(), 3 * 1024 * 1024);
    assert!(big.3.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    assert_eq!(find(&records, "my-store", "k").3, b"[1, 2]");
}

#[tokio::test]
async fn imports_the_js_layout_and_plain_files() {
    let dir = tempfile::tempdir().unwrap();
    js_folder(dir.path());
    let (store, user) = backend_with_user().await;
    let report = import(&*store, dir.path(), &user, false).await.unwrap();
    let records = records_of(&*store, &user).await;
    assert_eq!(
        find(&records, "default", "INPUT").2,
        "application/json; charset=utf-8"
    );
    assert_eq!(find(&records, "default", "img").2, "image/png");
    assert_eq!(find(&records, "default", "img").3, [0x89, 0x50, 0x4e, 0x47]);
    assert_eq!(find(&records, "default", "text").2, "text/plain");
    assert_eq!(find(&records, "default", "page.html").2, "text/html");
    assert_eq!(find(&records, "default", "dup").3, b"{}");
    assert_eq!(report.records, 5, "{records:?}");

    let mut rejected: Vec<(String, String)> = report
        .rejected
        .iter()
        .map(|r| (r.store.clone(), r.item.clone()))
        .collect();
    rejected.sort();
    assert_eq!(
        rejected,
        [
            ("bad_name".to_owned(), "(the store)".to_owned()),
            ("bad_name".to_owned(), "x".to_owned()),
            ("default".to_owned(), "a/b.json".to_owned()),
            ("default".to_owned(), "dup".to_owned()),
        ],
        "{:?}",
        report.rejected
    );
}

#[tokio::test]
async fn importing_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    python_folder(dir.path());
    let (store, user) = backend_with_user().await;
    import(&*store, dir.path(), &user, false).await.unwrap();
    let first = records_of(&*store, &user).await;
    import(&*store, dir.path(), &user, false).await.unwrap();
    assert_eq!(records_of(&*store, &user).await, first);
}

#[tokio::test]
async fn export_then_import_gives_the_same_stores_in_both_layouts() {
    for layout in [Layout::Python, Layout::Js] {
        let source = tempfile::tempdir().unwrap();
        python_folder(source.path());
        js_folder(source.path().join("js").as_path());
        let (store, user) = backend_with_user().await;
        import(&*store, source.path(), &user, false).await.unwrap();
        import(&*store, &source.path().join("js"), &user, false)
            .await
            .unwrap();
        // An unnamed store travels too, in a folder named by its id.
        let (unnamed, _) = store
            .store_get_or_create(kvstore::model::StoreInfo::new(user.id.clone(), None, None))
            .await
            .unwrap();
        store
            .record_put(
                &unnamed.id,
                &RecordKey::parse("OUTPUT").unwrap(),
                "application/x-custom",
                kvstore::storage::BodyInput::Bytes(bytes::Bytes::from_static(b"\x00\x01")),
            )
            .await
            .unwrap();
        let before = records_of(&*store, &user).await;

        let out = tempfile::tempdir().unwrap();
        let report = export(&*store, out.path(), &user, &[], layout, false)
            .await
            .unwrap();
        assert_eq!(report.records as usize, before.len(), "{layout:?}");
        assert!(out
            .path()
            .join(format!("key_value_stores/{}", unnamed.id))
            .is_dir());

        let (fresh, fresh_user) = backend_with_user().await;
        let back = import(&*fresh, out.path(), &fresh_user, false)
            .await
            .unwrap();
        assert!(back.rejected.is_empty(), "{layout:?}: {:?}", back.rejected);
        assert_eq!(records_of(&*fresh, &fresh_user).await, before, "{layout:?}");

        // Exporting over an existing store folder is refused rather than mixed.
        let again = export(&*store, out.path(), &user, &[], layout, false).await;
        assert!(again.is_err(), "{layout:?}");
    }
}

#[tokio::test]
async fn export_of_named_stores_only() {
    let dir = tempfile::tempdir().unwrap();
    python_folder(dir.path());
    let (store, user) = backend_with_user().await;
    import(&*store, dir.path(), &user, false).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let only = [StoreName::parse("my-store").unwrap()];
    let report = export(&*store, out.path(), &user, &only, Layout::Python, false)
        .await
        .unwrap();
    assert_eq!((report.stores, report.records), (1, 1));
    assert!(!out.path().join("key_value_stores/default").exists());
    let k = std::fs::read(out.path().join("key_value_stores/my-store/k")).unwrap();
    assert_eq!(k, b"[1, 2]");

    let missing = [StoreName::parse("nope").unwrap()];
    let err = export(&*store, out.path(), &user, &missing, Layout::Python, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn a_folder_without_key_value_stores_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, user) = backend_with_user().await;
    let err = import(&*store, dir.path(), &user, false).await.unwrap_err();
    assert!(err.to_string().contains("key_value_stores"), "{err}");
}
