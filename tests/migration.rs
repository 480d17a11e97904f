//! A data directory written by format version 1 (users without `disabled`) opens with this build:
//! its users are migrated at open, their tokens keep working, and the directory is version 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kvstore::model::{Token, Username};
use kvstore::storage::{self, Backend};
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

    // Reopening finds version 2 and nothing to migrate.
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
    assert_eq!(version, 2u32.to_le_bytes());
}
