//! Data directories written by older formats open with this build: version 1 (users without
//! `disabled`) and version 2 (stores without `title`) are migrated at open, their tokens and stores
//! keep working, and the directory is then version 3.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kvstore::model::{
    GeneralAccess, StoreId, StoreName, StoreStats, Token, User, UserId, Username,
};
use kvstore::storage::{self, Backend, StoreUpdate};
use redb::{Database, ReadableDatabase, TableDefinition};
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

    // Reopening finds version 3 and nothing to migrate.
    let store = storage::open(&Backend::embedded(&data)).await.unwrap();
    assert!(store
        .user_by_name(&Username::parse("veteran").unwrap())
        .await
        .unwrap()
        .is_some());
    store.close().await.unwrap();
    drop(store);
    let db = Database::open(data.join("kvstore.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn
        .open_table(META)
        .unwrap()
        .get("format_version")
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(version, 3u32.to_le_bytes());
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
