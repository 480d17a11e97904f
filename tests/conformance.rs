//! The storage conformance suite: the same checks against every backend behind the `Store` trait,
//! plus a randomized comparison of each backend with the in-memory model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use kvstore::model::{RecordKey, ShareAccess, StoreInfo, StoreName, Token, UserId, Username};
use kvstore::storage::{
    self, AccessDelta, Backend, BodyInput, KeyListQuery, RecordWrite, StorageError, Store,
    StoreListQuery, StoreUpdate, WriteOutcome,
};
use rand::{Rng, SeedableRng};

mod common;

/// A backend under test, with whatever keeps it alive.
struct Subject {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<common::PgDatabase>,
}

async fn backends() -> Vec<(&'static str, Subject)> {
    let dir = tempfile::tempdir().unwrap();
    let embedded = storage::open(&Backend::embedded(dir.path().join("data")))
        .await
        .unwrap();
    let mut subjects = vec![
        (
            "memory",
            Subject {
                store: storage::open(&Backend::Memory).await.unwrap(),
                _dir: None,
                _pg: None,
            },
        ),
        (
            "embedded",
            Subject {
                store: embedded,
                _dir: Some(dir),
                _pg: None,
            },
        ),
    ];
    if let Some(db) = common::PgDatabase::create().await {
        subjects.push((
            "postgres",
            Subject {
                store: storage::open(&db.backend()).await.unwrap(),
                _dir: None,
                _pg: Some(db),
            },
        ));
        // PostgreSQL with too few connections for pipelined reads: every read on the statement
        // pool, the path a node takes when tokio-postgres cannot connect.
        if let Some(db) = common::PgDatabase::create().await {
            let backend = Backend::Postgres {
                url: db.url.clone(),
                options: storage::postgres::PgOptions {
                    max_connections: 7,
                    ..Default::default()
                },
            };
            subjects.push((
                "postgres-unpipelined",
                Subject {
                    store: storage::open(&backend).await.unwrap(),
                    _dir: None,
                    _pg: Some(db),
                },
            ));
        }
        // PostgreSQL with bodies of 1 KiB or more in SeaweedFS (S3).
        if let Some(weed) = common::seaweed::shared() {
            if let Some(db) = common::PgDatabase::create().await {
                let backend = db.backend_with_objects(common::object_options(&weed.endpoint, 1024));
                subjects.push((
                    "postgres-s3",
                    Subject {
                        store: storage::open(&backend).await.unwrap(),
                        _dir: None,
                        _pg: Some(db),
                    },
                ));
            }
        }
    }
    subjects
}

fn key(s: &str) -> RecordKey {
    RecordKey::parse(s).unwrap()
}

fn name(s: &str) -> StoreName {
    StoreName::parse(s).unwrap()
}

async fn new_user(store: &dyn Store, username: &str) -> UserId {
    store
        .user_create(
            Username::parse(username).unwrap(),
            false,
            Token::generate().hash(),
        )
        .await
        .unwrap()
        .id
}

/// A new user `username` with a full token, and a store of theirs named `store_name`.
async fn owner_and_store(
    store: &dyn Store,
    username: &str,
    store_name: &str,
) -> (Token, StoreInfo) {
    let token = Token::generate();
    let owner = store
        .user_create(Username::parse(username).unwrap(), false, token.hash())
        .await
        .unwrap();
    let (info, _) = store
        .store_get_or_create(StoreInfo::new(owner.id, Some(name(store_name)), None))
        .await
        .unwrap();
    (token, info)
}

async fn body_bytes(store: &dyn Store, sid: &kvstore::model::StoreId, k: &str) -> Option<Vec<u8>> {
    let record = store.record_get(sid, &key(k)).await.unwrap()?;
    Some(common::contents::body_bytes(record.body).await)
}

async fn all_keys(
    store: &dyn Store,
    sid: &kvstore::model::StoreId,
    prefix: &str,
    page: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let query = KeyListQuery {
            exclusive_start_key: start.clone(),
            prefix: prefix.to_owned(),
            limit: page,
        };
        let page = store.keys_list(sid, &query).await.unwrap().unwrap();
        out.extend(page.items.iter().map(|m| m.key.to_string()));
        if !page.is_truncated {
            return out;
        }
        start = out.last().cloned();
    }
}

#[tokio::test]
async fn users_and_tokens() {
    for (backend, s) in backends().await {
        let store = &*s.store;
        let token = Token::generate();
        let alice = store
            .user_create(Username::parse("alice").unwrap(), false, token.hash())
            .await
            .unwrap();
        let again = store
            .user_create(
                Username::parse("alice").unwrap(),
                false,
                Token::generate().hash(),
            )
            .await;
        assert!(matches!(again, Err(StorageError::UserExists)), "{backend}");
        assert_eq!(
            store.user_by_token(&token.hash()).await.unwrap(),
            Some(kvstore::model::Authenticated {
                user: alice.clone(),
                read_only: false
            })
        );
        assert_eq!(
            store
                .user_by_token(&Token::generate().hash())
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .user_by_name(&Username::parse("alice").unwrap())
                .await
                .unwrap(),
            Some(alice.clone())
        );
        assert_eq!(
            store.user_by_id(&alice.id).await.unwrap(),
            Some(alice.clone())
        );
        // A first user exists already, so no admin is created.
        let first = store
            .user_create_first(Username::parse("admin").unwrap(), Token::generate().hash())
            .await
            .unwrap();
        assert_eq!(first, None, "{backend}");
        assert_eq!(store.users_list().await.unwrap(), vec![alice]);
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn first_user_is_created_once() {
    for (backend, s) in backends().await {
        let store = &*s.store;
        let token = Token::generate();
        let created = storage::ensure_first_user(store, Some(token.clone()))
            .await
            .unwrap();
        assert!(created.is_some(), "{backend}");
        assert!(storage::ensure_first_user(store, None)
            .await
            .unwrap()
            .is_none());
        let admin = store
            .user_by_token(&token.hash())
            .await
            .unwrap()
            .unwrap()
            .user;
        assert!(admin.is_admin);
        assert_eq!(admin.username.as_str(), "admin");
    }
}

#[tokio::test]
async fn stores_get_or_create_list_update_delete() {
    for (backend, s) in backends().await {
        let store = &*s.store;
        let alice = new_user(store, "alice").await;
        let bob = new_user(store, "bob").await;

        let (a, created) = store
            .store_get_or_create(StoreInfo::new(alice.clone(), Some(name("one")), None))
            .await
            .unwrap();
        assert!(created);
        let (again, created) = store
            .store_get_or_create(StoreInfo::new(alice.clone(), Some(name("one")), None))
            .await
            .unwrap();
        assert!(!created, "{backend}: same name returns the existing store");
        assert_eq!(again.id, a.id);
        // Names are per user.
        let (b, created) = store
            .store_get_or_create(StoreInfo::new(bob.clone(), Some(name("one")), None))
            .await
            .unwrap();
        assert!(created);
        assert_ne!(b.id, a.id);
        // Stores are listed by createdAt (milliseconds); keep the creation times apart.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;

        let mut unnamed = Vec::new();
        for _ in 0..3 {
            let (u, created) = store
                .store_get_or_create(StoreInfo::new(alice.clone(), None, None))
                .await
                .unwrap();
            assert!(created);
            unnamed.push(u.id);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let q = |offset, limit, desc, unnamed| StoreListQuery {
            offset,
            limit,
            desc,
            unnamed,
        };
        let named_only = store
            .stores_list(&alice, &q(0, 1000, false, false))
            .await
            .unwrap();
        assert_eq!(named_only.total, 1, "{backend}");
        assert_eq!(named_only.items[0].id, a.id);
        let all = store
            .stores_list(&alice, &q(0, 1000, false, true))
            .await
            .unwrap();
        assert_eq!(all.total, 4);
        let ids: Vec<_> = all.items.iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids[0], a.id, "{backend}: oldest first");
        assert_eq!(&ids[1..], &unnamed[..]);
        let desc = store
            .stores_list(&alice, &q(0, 1000, true, true))
            .await
            .unwrap();
        let mut reversed = ids.clone();
        reversed.reverse();
        assert_eq!(
            desc.items.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
            reversed
        );
        let page = store
            .stores_list(&alice, &q(1, 2, false, true))
            .await
            .unwrap();
        assert_eq!(page.total, 4);
        assert_eq!(
            page.items.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
            ids[1..3]
        );

        // Rename, clash, unname.
        let renamed = store
            .store_update(
                &unnamed[0],
                StoreUpdate {
                    name: Some(Some(name("two"))),
                    general_access: None,
                    title: Some(Some("Two".into())),
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renamed.name, Some(name("two")));
        assert_eq!(renamed.title.as_deref(), Some("Two"), "{backend}");
        let again = store.store_get(&unnamed[0]).await.unwrap().unwrap();
        assert_eq!(again.title.as_deref(), Some("Two"), "{backend}");
        let clash = store
            .store_update(
                &unnamed[1],
                StoreUpdate {
                    name: Some(Some(name("one"))),
                    ..StoreUpdate::default()
                },
            )
            .await;
        assert!(matches!(clash, Err(StorageError::NameTaken)), "{backend}");
        let found = store
            .store_get_by_name(&alice, &name("two"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, unnamed[0]);
        store
            .store_update(
                &unnamed[0],
                StoreUpdate {
                    name: Some(None),
                    general_access: Some(kvstore::model::GeneralAccess::AnyoneWithIdCanRead),
                    ..StoreUpdate::default()
                },
            )
            .await
            .unwrap();
        assert!(store
            .store_get_by_name(&alice, &name("two"))
            .await
            .unwrap()
            .is_none());
        let got = store.store_get(&unnamed[0]).await.unwrap().unwrap();
        assert_eq!(got.name, None);
        assert_eq!(
            got.general_access,
            kvstore::model::GeneralAccess::AnyoneWithIdCanRead
        );
        let missing = kvstore::model::StoreId::generate();
        assert!(store
            .store_update(&missing, StoreUpdate::default())
            .await
            .unwrap()
            .is_none());

        // Delete: gone at once, with its records; the name can be taken again.
        store
            .record_put(
                &a.id,
                &key("k"),
                "text/plain",
                BodyInput::Bytes(Bytes::from_static(b"v")),
            )
            .await
            .unwrap();
        assert!(store.store_delete(&a.id).await.unwrap());
        assert!(!store.store_delete(&a.id).await.unwrap());
        assert!(store.store_get(&a.id).await.unwrap().is_none());
        assert!(store.record_get(&a.id, &key("k")).await.unwrap().is_none());
        let q1 = KeyListQuery {
            exclusive_start_key: None,
            prefix: String::new(),
            limit: 10,
        };
        assert!(store.keys_list(&a.id, &q1).await.unwrap().is_none());
        assert_eq!(
            store
                .record_put(
                    &a.id,
                    &key("k"),
                    "text/plain",
                    BodyInput::Bytes(Bytes::new())
                )
                .await
                .unwrap(),
            WriteOutcome::StoreMissing
        );
        let (reborn, created) = store
            .store_get_or_create(StoreInfo::new(alice.clone(), Some(name("one")), None))
            .await
            .unwrap();
        assert!(created, "{backend}");
        assert_ne!(reborn.id, a.id);
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn records_and_exact_stats() {
    for (backend, s) in backends().await {
        let store = &*s.store;
        let alice = new_user(store, "alice").await;
        let (info, _) = store
            .store_get_or_create(StoreInfo::new(alice, Some(name("r")), None))
            .await
            .unwrap();
        let sid = info.id.clone();
        let put = |k: &'static str, v: Vec<u8>| {
            let sid = sid.clone();
            async move {
                store
                    .record_put(
                        &sid,
                        &key(k),
                        "application/json",
                        BodyInput::Bytes(Bytes::from(v)),
                    )
                    .await
                    .unwrap()
            }
        };
        assert_eq!(put("a", b"12345".to_vec()).await, WriteOutcome::Written);
        put("b", vec![7; 10]).await;
        put("a", b"123".to_vec()).await; // overwrite: 3 bytes instead of 5
                                         // A body larger than any inline threshold, given as a spooled file.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut tmp = tempfile::NamedTempFile::new_in(store.spool_dir()).unwrap();
        std::io::Write::write_all(&mut tmp, &big).unwrap();
        store
            .record_put(
                &sid,
                &key("big"),
                "application/octet-stream",
                BodyInput::File {
                    path: tmp.into_temp_path(),
                    len: big.len() as u64,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            body_bytes(store, &sid, "big").await.unwrap(),
            big,
            "{backend}"
        );
        assert_eq!(body_bytes(store, &sid, "a").await.unwrap(), b"123");
        let meta = store.record_meta(&sid, &key("a")).await.unwrap().unwrap();
        assert_eq!(meta.size, 3);
        assert_eq!(meta.content_type, "application/json");

        let stats = store.store_get(&sid).await.unwrap().unwrap().stats;
        assert_eq!(stats.record_count, 3, "{backend}");
        assert_eq!(stats.storage_bytes, 3 + 10 + big.len() as u64);
        assert_eq!(stats.write_count, 4);

        // Overwrite the big one with a small one, then delete records (also a missing one).
        put("big", vec![1]).await;
        assert_eq!(body_bytes(store, &sid, "big").await.unwrap(), vec![1]);
        assert_eq!(
            store.record_delete(&sid, &key("b")).await.unwrap(),
            WriteOutcome::Written
        );
        assert_eq!(
            store.record_delete(&sid, &key("nope")).await.unwrap(),
            WriteOutcome::Written
        );
        assert!(store.record_get(&sid, &key("b")).await.unwrap().is_none());
        let stats = store.store_get(&sid).await.unwrap().unwrap().stats;
        assert_eq!(stats.record_count, 2, "{backend}");
        assert_eq!(stats.storage_bytes, 3 + 1);
        assert_eq!(stats.delete_count, 2);

        // Read/list counters arrive in batches.
        store
            .apply_access(vec![(
                sid.clone(),
                AccessDelta {
                    reads: 5,
                    lists: 2,
                    accessed_at: u64::MAX / 2,
                },
            )])
            .await
            .unwrap();
        let after = store.store_get(&sid).await.unwrap().unwrap();
        assert_eq!((after.stats.read_count, after.stats.list_count), (5, 2));
        assert_eq!(after.accessed_at, u64::MAX / 2);
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_batch_import_writes_every_record_with_its_version_and_exact_stats() {
    for (backend, s) in backends().await {
        let store = &*s.store;
        let alice = new_user(store, "alice").await;
        let (info, _) = store
            .store_get_or_create(StoreInfo::new(alice, Some(name("batch")), None))
            .await
            .unwrap();
        let sid = info.id.clone();
        store
            .record_put(
                &sid,
                &key("old"),
                "text/plain",
                BodyInput::Bytes(vec![1; 100].into()),
            )
            .await
            .unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let record = |k: &str, body: Vec<u8>, version: u64| RecordWrite {
            key: key(k),
            content_type: format!("type/{k}"),
            body: BodyInput::Bytes(body.into()),
            version,
        };
        let batch = vec![
            record("a", b"first".to_vec(), 1),
            record("old", b"xy".to_vec(), 2), // overwrites 100 bytes with 2
            record("big", big.clone(), 3),
            record("a", b"second".to_vec(), 4), // the later one of a key wins
            record("b", Vec::new(), u64::MAX),
        ];
        assert_eq!(
            store.records_write(&sid, batch).await.unwrap(),
            WriteOutcome::Written,
            "{backend}"
        );
        assert_eq!(body_bytes(store, &sid, "a").await.unwrap(), b"second");
        assert_eq!(body_bytes(store, &sid, "old").await.unwrap(), b"xy");
        assert_eq!(
            body_bytes(store, &sid, "big").await.unwrap(),
            big,
            "{backend}"
        );
        assert_eq!(body_bytes(store, &sid, "b").await.unwrap(), b"");
        let meta = |k: &'static str| {
            let sid = sid.clone();
            async move { store.record_meta(&sid, &key(k)).await.unwrap().unwrap() }
        };
        assert_eq!(meta("a").await.version, 4, "{backend}");
        assert_eq!(meta("a").await.content_type, "type/a");
        assert_eq!(meta("b").await.version, u64::MAX, "{backend}");
        assert_eq!(meta("big").await.size, big.len() as u64);
        let stats = store.store_get(&sid).await.unwrap().unwrap().stats;
        assert_eq!(stats.record_count, 4, "{backend}");
        assert_eq!(stats.storage_bytes, 6 + 2 + big.len() as u64, "{backend}");

        // A missing store takes nothing.
        store.store_delete(&sid).await.unwrap();
        let outcome = store
            .records_write(&sid, vec![record("c", b"c".to_vec(), 5)])
            .await
            .unwrap();
        assert_eq!(outcome, WriteOutcome::StoreMissing, "{backend}");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn keys_are_listed_in_byte_order_with_prefix_and_start() {
    for (backend, s) in backends().await {
        let store = &*s.store;
        let alice = new_user(store, "alice").await;
        let (info, _) = store
            .store_get_or_create(StoreInfo::new(alice, Some(name("k")), None))
            .await
            .unwrap();
        let sid = info.id;
        let mut keys: Vec<String> = Vec::new();
        for i in 0..300 {
            keys.push(format!("item-{i:04}"));
        }
        keys.extend(
            [
                "A", "a", "Z", "_", "(x)", "!", "'q'", "item", "item-", "itemz", "0",
            ]
            .map(String::from),
        );
        for k in &keys {
            store
                .record_put(
                    &sid,
                    &key(k),
                    "text/plain",
                    BodyInput::Bytes(Bytes::from(k.clone())),
                )
                .await
                .unwrap();
        }
        let mut sorted = keys.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for page in [1, 7, 100, 1000] {
            assert_eq!(
                all_keys(store, &sid, "", page).await,
                sorted,
                "{backend} page {page}"
            );
        }
        let with_prefix: Vec<String> = sorted
            .iter()
            .filter(|k| k.starts_with("item-"))
            .cloned()
            .collect();
        assert_eq!(with_prefix.len(), 301);
        assert_eq!(
            all_keys(store, &sid, "item-", 50).await,
            with_prefix,
            "{backend}"
        );
        assert!(all_keys(store, &sid, "nothing", 10).await.is_empty());

        // A start key before, inside and after the prefix range.
        let list = |start: &str, prefix: &str| KeyListQuery {
            exclusive_start_key: Some(start.to_owned()),
            prefix: prefix.to_owned(),
            limit: 3,
        };
        let page = store
            .keys_list(&sid, &list("A", "item-"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(page.items[0].key.as_str(), "item-");
        let page = store
            .keys_list(&sid, &list("item-0100", "item-"))
            .await
            .unwrap()
            .unwrap();
        let got: Vec<_> = page.items.iter().map(|m| m.key.to_string()).collect();
        assert_eq!(got, ["item-0101", "item-0102", "item-0103"]);
        assert!(page.is_truncated);
        let page = store
            .keys_list(&sid, &list("item-0299", "item-"))
            .await
            .unwrap()
            .unwrap();
        assert!(page.items.is_empty() && !page.is_truncated, "{backend}");
        let page = store
            .keys_list(&sid, &list("zzz", ""))
            .await
            .unwrap()
            .unwrap();
        assert!(page.items.is_empty() && !page.is_truncated);
        // An exactly full last page is not truncated.
        let exact = KeyListQuery {
            exclusive_start_key: Some("item-0296".into()),
            prefix: "item-".into(),
            limit: 3,
        };
        let page = store.keys_list(&sid, &exact).await.unwrap().unwrap();
        assert_eq!(page.items.len(), 3);
        assert!(!page.is_truncated, "{backend}");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn embedded_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let (token, sid);
    {
        let store = storage::open(&Backend::embedded(path.clone()))
            .await
            .unwrap();
        let (owner_token, info) = owner_and_store(&*store, "alice", "keep").await;
        (token, sid) = (owner_token, info.id);
        store
            .record_put(
                &sid,
                &key("small"),
                "text/plain",
                BodyInput::Bytes(Bytes::from_static(b"hi")),
            )
            .await
            .unwrap();
        store
            .record_put(
                &sid,
                &key("large"),
                "text/plain",
                BodyInput::Bytes(Bytes::from(vec![b'x'; 200_000])),
            )
            .await
            .unwrap();
        // A second open of a directory in use is refused, and leaves the first one's files
        // alone: the journal the first appends to is the same file after it.
        let journals = || {
            use std::os::unix::fs::MetadataExt;
            let mut found: Vec<(std::ffi::OsString, u64)> = std::fs::read_dir(path.join("db"))
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
                .map(|e| (e.file_name(), e.metadata().unwrap().ino()))
                .collect();
            found.sort();
            found
        };
        let before = journals();
        assert!(!before.is_empty());
        let second = storage::open(&Backend::embedded(path.clone())).await;
        assert!(
            matches!(second, Err(StorageError::Locked)),
            "{:?}",
            second.err()
        );
        assert_eq!(journals(), before);
        store
            .record_put(
                &sid,
                &key("after"),
                "text/plain",
                BodyInput::Bytes(Bytes::from_static(b"still here")),
            )
            .await
            .unwrap();
        store.close().await.unwrap();
    }
    let store = storage::open(&Backend::embedded(path)).await.unwrap();
    assert_eq!(
        body_bytes(&*store, &sid, "after").await.unwrap(),
        b"still here"
    );
    assert!(store.user_by_token(&token.hash()).await.unwrap().is_some());
    assert_eq!(body_bytes(&*store, &sid, "small").await.unwrap(), b"hi");
    assert_eq!(
        body_bytes(&*store, &sid, "large").await.unwrap().len(),
        200_000
    );
    let stats = store.store_get(&sid).await.unwrap().unwrap().stats;
    assert_eq!((stats.record_count, stats.storage_bytes), (3, 200_012));
    store.close().await.unwrap();
}

#[tokio::test]
async fn concurrent_writers_keep_stats_exact() {
    for (backend, s) in backends().await {
        let store = s.store.clone();
        let alice = new_user(&*store, "alice").await;
        let (info, _) = store
            .store_get_or_create(StoreInfo::new(alice, Some(name("c")), None))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for w in 0..16 {
            let store = store.clone();
            let sid = info.id.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    let k = key(&format!("k{}", (w * 7 + i) % 40));
                    let body = Bytes::from(vec![b'v'; (w + i) % 13]);
                    store
                        .record_put(&sid, &k, "text/plain", BodyInput::Bytes(body))
                        .await
                        .unwrap();
                    if i % 5 == 0 {
                        store.record_delete(&sid, &k).await.unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let keys = all_keys(&*store, &info.id, "", 1000).await;
        let mut bytes = 0;
        for k in &keys {
            bytes += store
                .record_meta(&info.id, &key(k))
                .await
                .unwrap()
                .unwrap()
                .size;
        }
        let stats = store.store_get(&info.id).await.unwrap().unwrap().stats;
        assert_eq!(stats.record_count, keys.len() as u64, "{backend}");
        assert_eq!(stats.storage_bytes, bytes, "{backend}");
        assert_eq!(stats.write_count, 16 * 25);
        assert_eq!(stats.delete_count, 16 * 5);
        store.close().await.unwrap();
    }
}

/// Random operation sequences: every backend must end in the same observable state as the
/// in-memory model.
#[tokio::test]
async fn random_operations_match_the_memory_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = storage::open(&Backend::Memory).await.unwrap();
    let subject = storage::open(&Backend::embedded(dir.path().join("data")))
        .await
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b7673);
    let mut pairs = Vec::new();
    for s in [&model, &subject] {
        let alice = new_user(&**s, "alice").await;
        let (info, _) = s
            .store_get_or_create(StoreInfo::new(alice, Some(name("p")), None))
            .await
            .unwrap();
        pairs.push(info.id);
    }
    let keys = ["a", "b", "ab", "abc", "b.1", "B", "z", "big"];
    for step in 0..600 {
        let k = key(keys[rng.gen_range(0..keys.len())]);
        let op = rng.gen_range(0..10);
        let len = if k.as_str() == "big" {
            70_000 + step
        } else {
            rng.gen_range(0..40)
        };
        let body = Bytes::from(vec![(step % 256) as u8; len]);
        for (s, sid) in [(&model, &pairs[0]), (&subject, &pairs[1])] {
            if op < 7 {
                s.record_put(sid, &k, "x/y", BodyInput::Bytes(body.clone()))
                    .await
                    .unwrap();
            } else {
                s.record_delete(sid, &k).await.unwrap();
            }
        }
        if step % 50 == 0 {
            let prefix = ["", "a", "b", "z"][rng.gen_range(0..4)];
            assert_eq!(
                all_keys(&*model, &pairs[0], prefix, 2).await,
                all_keys(&*subject, &pairs[1], prefix, 3).await,
                "step {step}"
            );
        }
    }
    for k in keys {
        assert_eq!(
            body_bytes(&*model, &pairs[0], k).await,
            body_bytes(&*subject, &pairs[1], k).await,
            "{k}"
        );
    }
    let a = model.store_get(&pairs[0]).await.unwrap().unwrap().stats;
    let b = subject.store_get(&pairs[1]).await.unwrap().unwrap().stats;
    assert_eq!(a, b);
    subject.close().await.unwrap();
}

#[tokio::test]
async fn idle_unnamed_stores_are_found_for_expiry() {
    for (backend, s) in backends().await {
        let store = &*s.store;
        let alice = new_user(store, "alice").await;
        let bob = new_user(store, "bob").await;
        let make = |owner: &UserId, name: Option<StoreName>, accessed_at: u64| {
            let mut info = StoreInfo::new(owner.clone(), name, None);
            info.created_at = accessed_at;
            info.modified_at = accessed_at;
            info.accessed_at = accessed_at;
            info
        };
        let old_a = make(&alice, None, 1_000);
        let old_b = make(&bob, None, 2_000);
        let recent = make(&alice, None, 9_000);
        let named_old = make(&alice, Some(name("keep")), 500);
        for info in [&old_a, &old_b, &recent, &named_old] {
            store.store_import(info).await.unwrap();
        }
        let idle = store.stores_unnamed_idle(5_000, 100).await.unwrap();
        assert_eq!(idle, [old_a.id.clone(), old_b.id.clone()], "{backend}");
        let first = store.stores_unnamed_idle(5_000, 1).await.unwrap();
        assert_eq!(first.len(), 1, "{backend}");
        assert_eq!(first[0], old_a.id, "{backend}: longest idle first");

        // Reading a store (batched access) makes it recent again; a deleted one is not listed.
        let delta = kvstore::storage::AccessDelta {
            reads: 1,
            accessed_at: 10_000,
            ..Default::default()
        };
        store
            .apply_access(vec![(old_a.id.clone(), delta)])
            .await
            .unwrap();
        assert!(store.store_delete(&old_b.id).await.unwrap());
        assert!(
            store
                .stores_unnamed_idle(5_000, 100)
                .await
                .unwrap()
                .is_empty(),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_snapshot_keeps_reading_what_was_there_when_it_was_taken() {
    for (backend, s) in backends().await {
        let store = &*s.store;
        let alice = new_user(store, "alice").await;
        let (info, _) = store
            .store_get_or_create(StoreInfo::new(alice.clone(), Some(name("snap")), None))
            .await
            .unwrap();
        let big_old = vec![1u8; 300 * 1024];
        for (k, body) in [
            ("big", big_old.clone()),
            ("small", b"old".to_vec()),
            ("gone", vec![2u8; 100_000]),
        ] {
            store
                .record_put(
                    &info.id,
                    &key(k),
                    "application/octet-stream",
                    BodyInput::Bytes(Bytes::from(body)),
                )
                .await
                .unwrap();
        }
        let snapshot = store.snapshot().await.unwrap();

        // Overwrite and delete after the snapshot, and create another store.
        store
            .record_put(
                &info.id,
                &key("big"),
                "text/plain",
                BodyInput::Bytes(Bytes::from(vec![9u8; 200 * 1024])),
            )
            .await
            .unwrap();
        store
            .record_put(
                &info.id,
                &key("small"),
                "text/plain",
                BodyInput::Bytes(Bytes::from_static(b"new")),
            )
            .await
            .unwrap();
        store.record_delete(&info.id, &key("gone")).await.unwrap();
        store
            .store_get_or_create(StoreInfo::new(alice.clone(), Some(name("later")), None))
            .await
            .unwrap();

        let stores = snapshot.stores().await.unwrap();
        assert_eq!(
            stores.len(),
            1,
            "{backend}: a store made later is not in the snapshot"
        );
        let keys: Vec<String> = snapshot
            .keys(&info.id, None, 10)
            .await
            .unwrap()
            .iter()
            .map(|m| m.key.to_string())
            .collect();
        assert_eq!(keys, ["big", "gone", "small"], "{backend}");
        let after_big: Vec<String> = snapshot
            .keys(&info.id, Some("big".into()), 1)
            .await
            .unwrap()
            .iter()
            .map(|m| m.key.to_string())
            .collect();
        assert_eq!(after_big, ["gone"], "{backend}: paging after a key");
        for (k, want) in [
            ("big", big_old.clone()),
            ("small", b"old".to_vec()),
            ("gone", vec![2u8; 100_000]),
        ] {
            let record = snapshot.record(&info.id, &key(k)).await.unwrap().unwrap();
            assert_eq!(
                record.meta.content_type, "application/octet-stream",
                "{backend} {k}"
            );
            let body = common::contents::body_bytes(record.body).await;
            assert_eq!(body, want, "{backend}: {k} as it was");
        }
        let users = snapshot.users().await.unwrap();
        assert_eq!(users.len(), 1, "{backend}");
        assert_eq!(users[0].1.len(), 1, "{backend}: the user's token hash");
        drop(snapshot);
    }
}

#[tokio::test]
async fn users_are_disabled_deleted_and_given_tokens() {
    use kvstore::model::TokenGrant;
    use kvstore::storage::UserUpdate;
    for (backend, s) in backends().await {
        let store = &*s.store;
        let first = Token::generate();
        let alice = store
            .user_create(Username::parse("alice").unwrap(), false, first.hash())
            .await
            .unwrap();
        let bob = new_user(store, "bob").await;

        // A read-only token next to the full one.
        let ro = Token::generate();
        let grant = TokenGrant {
            hash: ro.hash(),
            read_only: true,
        };
        assert!(store.token_add(&alice.id, grant, false).await.unwrap());
        let who = store.user_by_token(&ro.hash()).await.unwrap().unwrap();
        assert!(who.read_only, "{backend}");
        let who = store.user_by_token(&first.hash()).await.unwrap().unwrap();
        assert!(!who.read_only, "{backend}");
        let mut tokens = store.user_tokens(&alice.id).await.unwrap();
        tokens.sort_by_key(|t| t.read_only);
        assert_eq!(tokens.len(), 2, "{backend}");
        assert!(tokens[1].read_only);

        // Rotation: one new token, every other one gone in the same step.
        let rotated = Token::generate();
        let grant = TokenGrant {
            hash: rotated.hash(),
            read_only: false,
        };
        assert!(store.token_add(&alice.id, grant, true).await.unwrap());
        assert!(
            store.user_by_token(&first.hash()).await.unwrap().is_none(),
            "{backend}"
        );
        assert!(
            store.user_by_token(&ro.hash()).await.unwrap().is_none(),
            "{backend}"
        );
        assert!(store
            .user_by_token(&rotated.hash())
            .await
            .unwrap()
            .is_some());
        let nobody = kvstore::model::UserId::parse("AAAAAAAAAAAAAAAAA").unwrap();
        assert!(!store.token_add(&nobody, grant, false).await.unwrap());

        // Disabled: the token stops working, the user and its data stay; enabled again, it works.
        let disable = UserUpdate {
            disabled: Some(true),
            is_admin: None,
        };
        let updated = store
            .user_update(&alice.id, disable)
            .await
            .unwrap()
            .unwrap();
        assert!(updated.disabled);
        assert!(
            store
                .user_by_token(&rotated.hash())
                .await
                .unwrap()
                .is_none(),
            "{backend}"
        );
        assert!(store.user_by_id(&alice.id).await.unwrap().unwrap().disabled);
        let enable = UserUpdate {
            disabled: Some(false),
            is_admin: Some(true),
        };
        let updated = store.user_update(&alice.id, enable).await.unwrap().unwrap();
        assert!(!updated.disabled && updated.is_admin, "{backend}");
        assert!(store
            .user_by_token(&rotated.hash())
            .await
            .unwrap()
            .is_some());
        assert!(store.user_update(&nobody, enable).await.unwrap().is_none());

        // Sharing: alice's store with bob; listed for bob; gone with the store or the user.
        let (shared, _) = store
            .store_get_or_create(StoreInfo::new(alice.id.clone(), Some(name("shared")), None))
            .await
            .unwrap();
        let (other, _) = store
            .store_get_or_create(StoreInfo::new(alice.id.clone(), None, None))
            .await
            .unwrap();
        assert!(store
            .share_set(&shared.id, &bob, Some(ShareAccess::Read))
            .await
            .unwrap());
        assert!(store
            .share_set(&other.id, &bob, Some(ShareAccess::Write))
            .await
            .unwrap());
        assert!(store
            .share_set(&shared.id, &bob, Some(ShareAccess::Write))
            .await
            .unwrap());
        assert_eq!(
            store.share_get(&shared.id, &bob).await.unwrap(),
            Some(ShareAccess::Write),
            "{backend}: sharing again changes the access"
        );
        assert_eq!(
            store.shares_list(&shared.id).await.unwrap(),
            [(bob.clone(), ShareAccess::Write)]
        );
        let all = StoreListQuery {
            offset: 0,
            limit: 10,
            desc: false,
            unnamed: true,
        };
        let page = store.stores_shared_with(&bob, &all).await.unwrap();
        assert_eq!(page.total, 2, "{backend}");
        let named_only = StoreListQuery {
            unnamed: false,
            ..all.clone()
        };
        let page = store.stores_shared_with(&bob, &named_only).await.unwrap();
        assert_eq!(page.items.len(), 1, "{backend}");
        assert_eq!(page.items[0].id, shared.id);
        assert!(store
            .stores_shared_with(&alice.id, &all)
            .await
            .unwrap()
            .items
            .is_empty());

        assert!(store.share_set(&shared.id, &bob, None).await.unwrap());
        assert_eq!(store.share_get(&shared.id, &bob).await.unwrap(), None);
        assert!(store.store_delete(&other.id).await.unwrap());
        assert_eq!(
            store.share_get(&other.id, &bob).await.unwrap(),
            None,
            "{backend}"
        );
        assert!(store
            .stores_shared_with(&bob, &all)
            .await
            .unwrap()
            .items
            .is_empty());
        assert!(
            !store
                .share_set(&other.id, &bob, Some(ShareAccess::Read))
                .await
                .unwrap(),
            "{backend}: a deleted store cannot be shared"
        );

        // Deleting a user takes its tokens, its stores and the shares it was given.
        assert!(store
            .share_set(&shared.id, &bob, Some(ShareAccess::Read))
            .await
            .unwrap());
        let (bobs, _) = store
            .store_get_or_create(StoreInfo::new(bob.clone(), Some(name("bobs")), None))
            .await
            .unwrap();
        store
            .record_put(
                &bobs.id,
                &key("k"),
                "text/plain",
                BodyInput::Bytes(Bytes::from_static(b"v")),
            )
            .await
            .unwrap();
        assert!(store.user_delete(&bob).await.unwrap());
        assert!(!store.user_delete(&bob).await.unwrap());
        assert!(store.user_by_id(&bob).await.unwrap().is_none(), "{backend}");
        assert!(store
            .user_by_name(&Username::parse("bob").unwrap())
            .await
            .unwrap()
            .is_none());
        assert!(
            store.store_get(&bobs.id).await.unwrap().is_none(),
            "{backend}"
        );
        assert!(
            store.shares_list(&shared.id).await.unwrap().is_empty(),
            "{backend}"
        );
        // The name is free again.
        store
            .user_create(
                Username::parse("bob").unwrap(),
                false,
                Token::generate().hash(),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn record_read_gathers_caller_store_share_and_record() {
    use kvstore::model::TokenGrant;
    for (backend, s) in backends().await {
        let store = &*s.store;
        let alice_token = Token::generate();
        let alice = store
            .user_create(Username::parse("alice").unwrap(), false, alice_token.hash())
            .await
            .unwrap();
        let bob_token = Token::generate();
        let bob = store
            .user_create(Username::parse("bob").unwrap(), false, bob_token.hash())
            .await
            .unwrap();
        let (info, _) = store
            .store_get_or_create(StoreInfo::new(alice.id.clone(), Some(name("read")), None))
            .await
            .unwrap();
        let big = vec![5u8; 300 * 1024];
        for (k, body) in [("small", b"tiny".to_vec()), ("big", big.clone())] {
            store
                .record_put(
                    &info.id,
                    &key(k),
                    "application/x-test",
                    BodyInput::Bytes(Bytes::from(body)),
                )
                .await
                .unwrap();
        }

        // Owner, inline and chunked/blob bodies.
        let read = store
            .record_read(Some(&alice_token.hash()), &info.id, Some(&key("small")))
            .await
            .unwrap();
        assert_eq!(read.caller.as_ref().unwrap().user.id, alice.id, "{backend}");
        assert_eq!(read.store.as_ref().unwrap().id, info.id);
        assert_eq!(read.share, None);
        let record = read.record.unwrap();
        assert_eq!(record.meta.content_type, "application/x-test");
        assert_eq!(common::contents::body_bytes(record.body).await, b"tiny");
        let read = store
            .record_read(None, &info.id, Some(&key("big")))
            .await
            .unwrap();
        assert!(read.caller.is_none());
        assert_eq!(
            common::contents::body_bytes(read.record.unwrap().body).await,
            big,
            "{backend}"
        );
        // Without a key (a write checking access): the caller and the store, no record.
        let read = store
            .record_read(Some(&alice_token.hash()), &info.id, None)
            .await
            .unwrap();
        assert_eq!(read.caller.as_ref().unwrap().user.id, alice.id, "{backend}");
        assert_eq!(read.store.as_ref().unwrap().id, info.id, "{backend}");
        assert!(read.record.is_none(), "{backend}");

        // Another user with a share; an unknown token; a missing record; a missing store.
        store
            .share_set(&info.id, &bob.id, Some(ShareAccess::Read))
            .await
            .unwrap();
        let read = store
            .record_read(Some(&bob_token.hash()), &info.id, Some(&key("nope")))
            .await
            .unwrap();
        assert_eq!(read.caller.unwrap().user.id, bob.id);
        assert_eq!(read.share, Some(ShareAccess::Read), "{backend}");
        assert!(read.record.is_none());
        let read = store
            .record_read(
                Some(&Token::generate().hash()),
                &info.id,
                Some(&key("small")),
            )
            .await
            .unwrap();
        assert!(
            read.caller.is_none(),
            "{backend}: an unknown token finds nobody"
        );
        let missing = kvstore::model::StoreId::parse("zzzzzzzzzzzzzzzzz").unwrap();
        let read = store
            .record_read(Some(&alice_token.hash()), &missing, Some(&key("small")))
            .await
            .unwrap();
        assert!(read.store.is_none() && read.record.is_none() && read.caller.is_some());

        // Read-only and disabled.
        let ro = Token::generate();
        let grant = TokenGrant {
            hash: ro.hash(),
            read_only: true,
        };
        store.token_add(&alice.id, grant, false).await.unwrap();
        let read = store
            .record_read(Some(&ro.hash()), &info.id, Some(&key("small")))
            .await
            .unwrap();
        assert!(read.caller.unwrap().read_only, "{backend}");
        let disable = kvstore::storage::UserUpdate {
            disabled: Some(true),
            is_admin: None,
        };
        store.user_update(&bob.id, disable).await.unwrap();
        let read = store
            .record_read(Some(&bob_token.hash()), &info.id, Some(&key("small")))
            .await
            .unwrap();
        assert!(
            read.caller.is_none(),
            "{backend}: a disabled user's token finds nobody"
        );
    }
}

/// The record a read returns, as (content type, version, body).
async fn read_now(
    store: &dyn Store,
    token: &Token,
    sid: &kvstore::model::StoreId,
    k: &str,
) -> (
    Option<(String, u64, Vec<u8>)>,
    Option<(String, u64, Vec<u8>)>,
) {
    async fn plain(r: Option<kvstore::storage::Record>) -> Option<(String, u64, Vec<u8>)> {
        let r = r?;
        let body = common::contents::body_bytes(r.body).await;
        Some((r.meta.content_type, r.meta.version, body))
    }
    let got = plain(store.record_get(sid, &key(k)).await.unwrap()).await;
    let read = store
        .record_read(Some(&token.hash()), sid, Some(&key(k)))
        .await
        .unwrap()
        .record;
    (got, plain(read).await)
}

// The embedded engine keeps small hot records in memory: every change must reach the next read.
#[tokio::test]
async fn a_read_after_a_write_never_serves_what_the_write_replaced() {
    for (backend, s) in backends().await {
        let store = &*s.store;
        let (token, info) = owner_and_store(store, "alice", "hot").await;
        let sid = info.id.clone();
        let put = |v: &'static [u8], ct: &'static str, version: u64| {
            let sid = sid.clone();
            async move {
                let write = RecordWrite {
                    key: key("k"),
                    content_type: ct.to_owned(),
                    body: BodyInput::Bytes(Bytes::from_static(v)),
                    version,
                };
                store.records_write(&sid, vec![write]).await.unwrap()
            }
        };
        let expect = |v: &[u8], ct: &str, version: u64| {
            let one = Some((ct.to_owned(), version, v.to_vec()));
            (one.clone(), one)
        };

        put(b"first", "text/plain", 1).await;
        for _ in 0..3 {
            // Twice or more: the second read may be served from memory.
            assert_eq!(
                read_now(store, &token, &sid, "k").await,
                expect(b"first", "text/plain", 1),
                "{backend}"
            );
        }
        put(b"{\"second\":2}", "application/json", 2).await;
        assert_eq!(
            read_now(store, &token, &sid, "k").await,
            expect(b"{\"second\":2}", "application/json", 2),
            "{backend}: overwrite"
        );
        // A HEAD (the record's metadata alone) after a read that may have cached the record.
        let meta = store.record_meta(&sid, &key("k")).await.unwrap().unwrap();
        assert_eq!(
            (meta.content_type.as_str(), meta.version, meta.size),
            ("application/json", 2, 12),
            "{backend}: metadata after an overwrite"
        );
        // The store that comes with the record is current too: its counters (where the backend
        // says they are exact), its name.
        let (hash, k) = (token.hash(), key("k"));
        let store_now = || async {
            let read = store
                .record_read(Some(&hash), &sid, Some(&k))
                .await
                .unwrap();
            let exact = read.counters_exact;
            (read.store.unwrap(), exact)
        };
        let writes = |(info, exact): (StoreInfo, bool)| exact.then_some(info.stats.write_count);
        // The embedded engine and the memory model always give them; others may leave them out.
        let always = matches!(backend, "embedded" | "memory");
        let check = |got: Option<u64>, n: u64, what: &str| match got {
            Some(got) => assert_eq!(got, n, "{backend}: {what}"),
            None => assert!(!always, "{backend}: {what}: counters left out"),
        };
        check(writes(store_now().await), 2, "before");
        put(b"{\"second\":2}", "application/json", 2).await;
        check(writes(store_now().await), 3, "after a write");
        let rename = StoreUpdate {
            name: Some(Some(name("hot-renamed"))),
            ..StoreUpdate::default()
        };
        store.store_update(&sid, rename).await.unwrap();
        let renamed = store_now().await.0.name;
        assert_eq!(
            renamed,
            Some(name("hot-renamed")),
            "{backend}: after a rename"
        );
        read_now(store, &token, &sid, "k").await;
        assert_eq!(
            store.record_delete(&sid, &key("k")).await.unwrap(),
            WriteOutcome::Written
        );
        assert_eq!(
            read_now(store, &token, &sid, "k").await,
            (None, None),
            "{backend}: delete"
        );
        let meta = store.record_meta(&sid, &key("k")).await.unwrap();
        assert!(meta.is_none(), "{backend}: meta after delete");

        // A deleted store takes its records along.
        put(b"third", "text/plain", 3).await;
        read_now(store, &token, &sid, "k").await;
        assert!(store.store_delete(&sid).await.unwrap());
        assert_eq!(
            read_now(store, &token, &sid, "k").await,
            (None, None),
            "{backend}: store deleted"
        );

        // So does a user deleted with their stores.
        let (info, _) = store
            .store_get_or_create(StoreInfo::new(
                info.user_id.clone(),
                Some(name("hot2")),
                None,
            ))
            .await
            .unwrap();
        let sid = info.id.clone();
        let write = RecordWrite {
            key: key("k"),
            content_type: "text/plain".to_owned(),
            body: BodyInput::Bytes(Bytes::from_static(b"fourth")),
            version: 4,
        };
        store.records_write(&sid, vec![write]).await.unwrap();
        for _ in 0..2 {
            assert_eq!(
                read_now(store, &token, &sid, "k").await,
                expect(b"fourth", "text/plain", 4),
                "{backend}: second store"
            );
        }
        assert!(store.user_delete(&info.user_id).await.unwrap());
        let got = store.record_get(&sid, &key("k")).await.unwrap();
        assert!(got.is_none(), "{backend}: record of a deleted user's store");
    }
}

// Readers racing one writer: once a write is acknowledged, no read that starts after it returns
// an older record, and no read returns a body with another write's content type or version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_racing_a_writer_never_see_a_stale_or_torn_record() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const WRITES: u64 = 300;
    for (backend, s) in backends().await {
        let (token, info) = owner_and_store(&*s.store, "alice", "race").await;
        let sid = info.id.clone();
        let acked = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for reader in 0..3 {
            let (store, sid, acked, done) =
                (s.store.clone(), sid.clone(), acked.clone(), done.clone());
            let token = token.clone();
            readers.push(tokio::spawn(async move {
                let mut checked = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let floor = acked.load(Ordering::SeqCst);
                    let (got, read) = read_now(&*store, &token, &sid, "k").await;
                    for (ct, version, body) in [got, read].into_iter().flatten() {
                        let n: u64 = ct.trim_start_matches("text/x-").parse().unwrap();
                        assert_eq!(version, n, "{backend} reader {reader}: torn record");
                        assert_eq!(body, n.to_string().repeat(50).into_bytes(), "torn body");
                        assert!(n >= floor, "{backend}: read {n} after {floor} was acked");
                        checked += 1;
                    }
                    tokio::task::yield_now().await;
                }
                checked
            }));
        }
        for n in 1..=WRITES {
            let write = RecordWrite {
                key: key("k"),
                content_type: format!("text/x-{n}"),
                body: BodyInput::Bytes(Bytes::from(n.to_string().repeat(50))),
                version: n,
            };
            s.store.records_write(&sid, vec![write]).await.unwrap();
            acked.store(n, Ordering::SeqCst);
        }
        done.store(true, Ordering::SeqCst);
        let mut checked = 0;
        for r in readers {
            checked += r.await.unwrap();
        }
        assert!(checked > 0, "{backend}: the readers read nothing");
        let (got, _) = read_now(&*s.store, &token, &sid, "k").await;
        assert_eq!(got.unwrap().1, WRITES, "{backend}: the last write");
    }
}
