//! Data directories written by older formats open with this build: version 1 (users without
//! `disabled`) and version 2 (stores without `title`) are migrated at open, and versions 1–3 (all
//! in one redb file, `kvstore.redb`) are imported into the fjall engine (`db/`, version 4): their
//! users, tokens, stores, shares and records keep working, and the redb file is removed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kvstore::model::{
    GeneralAccess, StoreId, StoreName, StoreStats, Token, User, UserId, Username,
};
use kvstore::storage::{self, Backend, StoreUpdate};
use redb::{Database, TableDefinition};
use serde::Serialize;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const USERNAMES: TableDefinition<&str, &str> = TableDefinition::new("usernames");
const TOKENS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("tokens");

/// A user as version 1 encoded it.
#[derive(Serialize)]
struct UserV1 {
    id: String,
    username: String,
    created_at: u64,
    is_admin: bool,
}

#[tokio::test]
async fn a_version_1_data_directory_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let token = Token::generate();
    {
        let db = Database::create(data.join("kvstore.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("format_version", 1u32.to_le_bytes().as_slice())
                .unwrap();
            let old = UserV1 {
                id: "OldUser0000000001".into(),
                username: "veteran".into(),
                created_at: 1_600_000_000_000,
                is_admin: true,
            };
            let bytes = postcard::to_stdvec(&old).unwrap();
            txn.open_table(USERS)
                .unwrap()
                .insert(old.id.as_str(), bytes.as_slice())
                .unwrap();
            txn.open_table(USERNAMES)
                .unwrap()
                .insert("veteran", old.id.as_str())
                .unwrap();
            txn.open_table(TOKENS)
                .unwrap()
                .insert(&token.hash().0, old.id.as_str())
                .unwrap();
        }
        txn.commit().unwrap();
    }

    let store = storage::open(&Backend::embedded(&data)).await.unwrap();
    let who = store.user_by_token(&token.hash()).await.unwrap().unwrap();
    assert_eq!(who.user.username.as_str(), "veteran");
    assert!(who.user.is_admin && !who.user.disabled);
    assert_eq!(who.user.created_at, 1_600_000_000_000);
    let users = store.users_list().await.unwrap();
    assert_eq!(users.len(), 1);
    store.close().await.unwrap();
    drop(store);

    // The redb file is gone once imported; reopening finds the current version and nothing to
    // migrate.
    assert!(!data.join("kvstore.redb").exists());
    assert!(data.join("db").is_dir());
    let store = storage::open(&Backend::embedded(&data)).await.unwrap();
    assert!(store
        .user_by_name(&Username::parse("veteran").unwrap())
        .await
        .unwrap()
        .is_some());
    store.close().await.unwrap();
}

const STORES: TableDefinition<&str, &[u8]> = TableDefinition::new("stores");
const STORE_NAMES: TableDefinition<(&str, &str), &str> = TableDefinition::new("store_names");
const STORES_BY_OWNER: TableDefinition<(&str, u64, &str), bool> =
    TableDefinition::new("stores_by_owner");

/// A store as versions 1 and 2 encoded it: without `title`.
#[derive(Serialize)]
struct StoreV2 {
    id: StoreId,
    name: Option<StoreName>,
    user_id: UserId,
    created_at: u64,
    modified_at: u64,
    accessed_at: u64,
    general_access: GeneralAccess,
    url_signing_secret_key: String,
    schema: Option<String>,
    stats: StoreStats,
}

#[tokio::test]
async fn a_version_2_data_directory_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let token = Token::generate();
    let user = User::new(Username::parse("alice").unwrap(), false);
    let old = StoreV2 {
        id: StoreId::generate(),
        name: Some(StoreName::parse("kept").unwrap()),
        user_id: user.id.clone(),
        created_at: 1_700_000_000_000,
        modified_at: 1_700_000_000_001,
        accessed_at: 1_700_000_000_002,
        general_access: GeneralAccess::AnyoneWithIdCanRead,
        url_signing_secret_key: "s3cret".into(),
        schema: None,
        stats: StoreStats {
            write_count: 7,
            ..StoreStats::default()
        },
    };
    {
        let db = Database::create(data.join("kvstore.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("format_version", 2u32.to_le_bytes().as_slice())
                .unwrap();
            txn.open_table(USERS)
                .unwrap()
                .insert(
                    user.id.as_str(),
                    postcard::to_stdvec(&user).unwrap().as_slice(),
                )
                .unwrap();
            txn.open_table(USERNAMES)
                .unwrap()
                .insert("alice", user.id.as_str())
                .unwrap();
            txn.open_table(TOKENS)
                .unwrap()
                .insert(&token.hash().0, user.id.as_str())
                .unwrap();
            txn.open_table(STORES)
                .unwrap()
                .insert(
                    old.id.as_str(),
                    postcard::to_stdvec(&old).unwrap().as_slice(),
                )
                .unwrap();
            txn.open_table(STORE_NAMES)
                .unwrap()
                .insert((user.id.as_str(), "kept"), old.id.as_str())
                .unwrap();
            txn.open_table(STORES_BY_OWNER)
                .unwrap()
                .insert((user.id.as_str(), old.created_at, old.id.as_str()), true)
                .unwrap();
        }
        txn.commit().unwrap();
    }

    let store = storage::open(&Backend::embedded(&data)).await.unwrap();
    let got = store.store_get(&old.id).await.unwrap().unwrap();
    assert_eq!(got.title, None);
    assert_eq!(got.name, old.name);
    assert_eq!(got.general_access, GeneralAccess::AnyoneWithIdCanRead);
    assert_eq!(got.url_signing_secret_key, "s3cret");
    assert_eq!(got.stats.write_count, 7);
    assert_eq!(
        (got.created_at, got.modified_at, got.accessed_at),
        (old.created_at, old.modified_at, old.accessed_at)
    );
    assert!(store.user_by_token(&token.hash()).await.unwrap().is_some());
    // The migrated store takes a title like any other.
    let updated = store
        .store_update(
            &old.id,
            StoreUpdate {
                title: Some(Some("Now titled".into())),
                ..StoreUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.title.as_deref(), Some("Now titled"));
    store.close().await.unwrap();
}

const READ_ONLY_TOKENS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("read_only_tokens");
const SHARES: TableDefinition<(&str, &str), u8> = TableDefinition::new("shares");
const SHARED_WITH: TableDefinition<(&str, &str), u8> = TableDefinition::new("shared_with");
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");

/// A record's header as formats 1–3 encoded it, followed in the row by the inline body.
#[derive(Serialize)]
struct RecordHeaderV3 {
    content_type: String,
    size: u64,
    blob: Option<[u8; 16]>,
    version: u64,
}

/// A format-3 directory with every table in use: users with full and read-only tokens, a named
/// store with inline records (one empty) and a record in a blob file, a share, and an unnamed
/// store. After the import every one of them reads back as it was, through the storage API.
#[tokio::test]
async fn a_version_3_data_directory_is_imported_into_the_engine() {
    use kvstore::model::{RecordKey, ShareAccess, StoreInfo};
    use kvstore::storage::{BodyOutput, KeyListQuery};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("blobs")).unwrap();
    let (alice_token, bob_token) = (Token::generate(), Token::generate());
    let alice = User::new(Username::parse("alice").unwrap(), false);
    let bob = User::new(Username::parse("bob").unwrap(), false);
    let mut named = StoreInfo::new(
        alice.id.clone(),
        Some(StoreName::parse("kept").unwrap()),
        None,
    );
    named.stats.record_count = 3;
    let blob_body = vec![7u8; 100_000];
    named.stats.storage_bytes = 5 + blob_body.len() as u64;
    let unnamed = StoreInfo::new(alice.id.clone(), None, None);
    let blob_id = [0xabu8; 16];
    std::fs::write(data.join("blobs").join(hex::encode(blob_id)), &blob_body).unwrap();
    let row = |content_type: &str, size: u64, blob: Option<[u8; 16]>, body: &[u8]| {
        let header = RecordHeaderV3 {
            content_type: content_type.into(),
            size,
            blob,
            version: 42,
        };
        let mut value = postcard::to_stdvec(&header).unwrap();
        value.extend_from_slice(body);
        value
    };
    {
        let db = Database::create(data.join("kvstore.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(META)
                .unwrap()
                .insert("format_version", 3u32.to_le_bytes().as_slice())
                .unwrap();
            let mut users = txn.open_table(USERS).unwrap();
            let mut names = txn.open_table(USERNAMES).unwrap();
            for user in [&alice, &bob] {
                let bytes = postcard::to_stdvec(user).unwrap();
                users.insert(user.id.as_str(), bytes.as_slice()).unwrap();
                names
                    .insert(user.username.as_str(), user.id.as_str())
                    .unwrap();
            }
            txn.open_table(TOKENS)
                .unwrap()
                .insert(&alice_token.hash().0, alice.id.as_str())
                .unwrap();
            txn.open_table(READ_ONLY_TOKENS)
                .unwrap()
                .insert(&bob_token.hash().0, bob.id.as_str())
                .unwrap();
            let mut stores = txn.open_table(STORES).unwrap();
            let mut by_owner = txn.open_table(STORES_BY_OWNER).unwrap();
            for store in [&named, &unnamed] {
                let bytes = postcard::to_stdvec(store).unwrap();
                stores.insert(store.id.as_str(), bytes.as_slice()).unwrap();
                by_owner
                    .insert(
                        (alice.id.as_str(), store.created_at, store.id.as_str()),
                        store.name.is_some(),
                    )
                    .unwrap();
            }
            txn.open_table(STORE_NAMES)
                .unwrap()
                .insert((alice.id.as_str(), "kept"), named.id.as_str())
                .unwrap();
            txn.open_table(SHARES)
                .unwrap()
                .insert((named.id.as_str(), bob.id.as_str()), 1)
                .unwrap();
            txn.open_table(SHARED_WITH)
                .unwrap()
                .insert((bob.id.as_str(), named.id.as_str()), 1)
                .unwrap();
            let mut records = txn.open_table(RECORDS).unwrap();
            let sid = named.id.as_str();
            let hello = row("text/plain", 5, None, b"hello");
            records.insert((sid, "a-hello"), hello.as_slice()).unwrap();
            let empty = row("application/json", 0, None, b"");
            records.insert((sid, "b-empty"), empty.as_slice()).unwrap();
            let big = row("application/octet-stream", 100_000, Some(blob_id), b"");
            records.insert((sid, "c-big"), big.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    let store = storage::open(&Backend::embedded(&data)).await.unwrap();
    assert!(!data.join("kvstore.redb").exists());
    let who = store
        .user_by_token(&alice_token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(who.user.id, alice.id);
    assert!(!who.read_only);
    let who = store
        .user_by_token(&bob_token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(who.user.id, bob.id);
    assert!(who.read_only);
    let got = store
        .store_get_by_name(&alice.id, &StoreName::parse("kept").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, named.id);
    assert_eq!(got.stats, named.stats);
    let page = store
        .stores_list(&alice.id, &common::first_stores(10))
        .await
        .unwrap();
    assert_eq!(page.total, 2);
    assert_eq!(
        store.shares_list(&named.id).await.unwrap(),
        vec![(bob.id.clone(), ShareAccess::Read)]
    );
    let shared = store
        .stores_shared_with(&bob.id, &common::first_stores(10))
        .await
        .unwrap();
    assert_eq!(shared.items.len(), 1);
    let keys = store
        .keys_list(
            &named.id,
            &KeyListQuery {
                exclusive_start_key: None,
                prefix: String::new(),
                limit: 10,
            },
        )
        .await
        .unwrap()
        .unwrap();
    let listed: Vec<(&str, u64)> = keys
        .items
        .iter()
        .map(|m| (m.key.as_str(), m.size))
        .collect();
    assert_eq!(
        listed,
        vec![("a-hello", 5), ("b-empty", 0), ("c-big", 100_000)]
    );
    for (key, want) in [
        ("a-hello", b"hello".to_vec()),
        ("b-empty", Vec::new()),
        ("c-big", blob_body.clone()),
    ] {
        let record = store
            .record_get(&named.id, &RecordKey::parse(key).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.meta.version, 42);
        let body = match record.body {
            BodyOutput::Bytes(bytes) => bytes.to_vec(),
            BodyOutput::File(mut file) => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut out).unwrap();
                out
            }
            other => panic!("unexpected body {other:?}"),
        };
        assert_eq!(body, want, "{key}");
    }
    store.close().await.unwrap();
}
