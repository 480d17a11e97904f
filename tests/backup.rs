//! Backups (`GET /v2/admin/backup`, `kvstore backup` / `restore` in the library): one taken while
//! a writer keeps changing two stores restores to exactly the state after some acknowledged write;
//! a backup cut short or damaged restores nothing; only administrators may take one. Runs on the
//! backend of `KVSTORE_TEST_BACKEND` (scripts/test.sh runs it on all three).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::contents::records_of;
use common::{assert_error, TestServer};
use kvstore::model::{RecordKey, Token, Username};
use kvstore::storage::{self, Backend, Store};
use reqwest::Method;

const KEYS: usize = 37;

/// The body the writer stores at step `step`: small, or 100 KiB (a blob file on the embedded
/// engine, chunks on PostgreSQL) every tenth step.
fn body_of(step: usize) -> Vec<u8> {
    let mut body = format!("step {step};").into_bytes();
    if step.is_multiple_of(10) {
        body.resize(100 * 1024, b'0' + (step % 10) as u8);
    }
    body
}

/// One acknowledged change: (store index, key, new value or deletion).
type Op = (usize, String, Option<Vec<u8>>);

fn op_of(step: usize) -> Op {
    let store = step % 2;
    if step % 7 == 3 {
        (store, format!("k{}", (step * 3) % KEYS), None)
    } else {
        (store, format!("k{}", step % KEYS), Some(body_of(step)))
    }
}

type State = [BTreeMap<String, Vec<u8>>; 2];

async fn admin(srv: &TestServer) -> String {
    let token = Token::generate();
    srv.store
        .user_create(Username::parse("root").unwrap(), true, token.hash())
        .await
        .unwrap();
    token.expose().to_owned()
}

async fn download(srv: &TestServer, token: &str, to: &std::path::Path) -> reqwest::StatusCode {
    let resp = srv
        .req(Method::GET, "/v2/admin/backup", Some(token))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    std::fs::write(to, resp.bytes().await.unwrap()).unwrap();
    status
}

/// Every record of the named store of `alice` in `store`.
async fn contents(
    store: &dyn Store,
    alice: &kvstore::model::User,
    name: &str,
) -> BTreeMap<String, Vec<u8>> {
    let info = store
        .store_get_by_name(&alice.id, &kvstore::model::StoreName::parse(name).unwrap())
        .await
        .unwrap()
        .unwrap();
    let out: BTreeMap<String, Vec<u8>> = records_of(store, &info.id)
        .await
        .into_iter()
        .map(|(key, (_, body))| (key, body))
        .collect();
    assert_eq!(
        info.stats.record_count as usize,
        out.len(),
        "{name}: exact recordCount"
    );
    out
}

#[tokio::test]
async fn a_backup_taken_during_writes_restores_the_state_of_one_instant() {
    let srv = Arc::new(TestServer::start().await);
    let root = admin(&srv).await;
    let alice = srv.user("alice").await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for name in ["first", "second"] {
            let store = srv.create_store(&alice, Some(name)).await;
            ids.push(store["id"].as_str().unwrap().to_owned());
        }
        ids
    };

    // One writer, one acknowledged change at a time, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (srv, alice, ids, stop, acked) = (
            srv.clone(),
            alice.clone(),
            ids.clone(),
            stop.clone(),
            acked.clone(),
        );
        tokio::spawn(async move {
            let mut step = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (store, key, value) = op_of(step);
                let path = format!("/v2/key-value-stores/{}/records/{key}", ids[store]);
                let resp = match value {
                    Some(body) => srv
                        .req(Method::PUT, &path, Some(&alice))
                        .header("content-type", "application/octet-stream")
                        .body(body)
                        .send()
                        .await
                        .unwrap(),
                    None => srv
                        .req(Method::DELETE, &path, Some(&alice))
                        .send()
                        .await
                        .unwrap(),
                };
                assert!(resp.status().is_success(), "step {step}: {}", resp.status());
                step += 1;
                acked.store(step, std::sync::atomic::Ordering::SeqCst);
            }
            step
        })
    };
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 150 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.backup");
    let before = acked.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(download(&srv, &root, &file).await, 200);
    let after = acked.load(std::sync::atomic::Ordering::SeqCst);
    // Let the writer go on a little past the backup, then stop it.
    while acked.load(std::sync::atomic::Ordering::SeqCst) < after + 50 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let steps = writer.await.unwrap();

    let target: Arc<dyn Store> = storage::open(&Backend::Memory).await.unwrap();
    let counts = kvstore::ops::backup::restore(&target, &file, false)
        .await
        .unwrap();
    assert_eq!(
        (counts.users, counts.stores),
        (2, 2),
        "root and alice, two stores"
    );

    // Tokens and ownership came back with the users.
    let restored_alice = target
        .user_by_token(&Token::from_secret(alice.clone()).hash())
        .await
        .unwrap()
        .expect("alice's token works after the restore")
        .user;
    let restored = [
        contents(&*target, &restored_alice, "first").await,
        contents(&*target, &restored_alice, "second").await,
    ];

    // The restored data equals the state after exactly one prefix of the acknowledged writes,
    // and that prefix ends while the backup was being taken.
    let mut state: State = Default::default();
    let mut matches = Vec::new();
    for step in 0..=steps {
        if state == restored {
            matches.push(step);
        }
        if step == steps {
            break;
        }
        let (store, key, value) = op_of(step);
        match value {
            Some(body) => state[store].insert(key, body),
            None => state[store].remove(&key),
        };
    }
    eprintln!(
        "backup during steps {before}..{after} of {steps}; restored state matches {matches:?}"
    );
    assert!(
        !matches.is_empty(),
        "the restored stores match no instant of the writes (backup during steps {before}..{after})"
    );
    assert!(
        matches.iter().any(|m| (before..=after + 1).contains(m)),
        "matching instants {matches:?}, backup during steps {before}..{after}"
    );
}

#[tokio::test]
async fn a_backup_cut_short_or_damaged_restores_nothing() {
    let source: Arc<dyn Store> = storage::open(&Backend::Memory).await.unwrap();
    let user = source
        .user_create(
            Username::parse("alice").unwrap(),
            false,
            Token::generate().hash(),
        )
        .await
        .unwrap();
    let (info, _) = source
        .store_get_or_create(kvstore::model::StoreInfo::new(user.id.clone(), None, None))
        .await
        .unwrap();
    // A read-only token and a share travel too.
    let read_only = Token::generate();
    let grant = kvstore::model::TokenGrant {
        hash: read_only.hash(),
        read_only: true,
    };
    source.token_add(&user.id, grant, false).await.unwrap();
    let bob = source
        .user_create(
            Username::parse("bob").unwrap(),
            false,
            Token::generate().hash(),
        )
        .await
        .unwrap();
    let write = Some(kvstore::model::ShareAccess::Write);
    source.share_set(&info.id, &bob.id, write).await.unwrap();
    for i in 0..20 {
        source
            .record_put(
                &info.id,
                &RecordKey::parse(&format!("k{i}")).unwrap(),
                "text/plain",
                kvstore::storage::BodyInput::Bytes(bytes::Bytes::from(vec![b'x'; 5000])),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.backup");
    let counts = kvstore::ops::backup::to_file(&*source, &good)
        .await
        .unwrap();
    assert_eq!(counts.records, 20);
    assert_eq!(kvstore::ops::backup::verify(&good).await.unwrap(), counts);

    let whole = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.backup");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let damaged = dir.path().join("damaged.backup");
    let mut flipped = whole.clone();
    flipped[whole.len() / 2] ^= 0x01;
    std::fs::write(&damaged, &flipped).unwrap();
    let no_end = dir.path().join("no-end.backup");
    let last_line = whole[..whole.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap();
    std::fs::write(&no_end, &whole[..=last_line]).unwrap();

    for bad in [&cut, &damaged, &no_end] {
        let target: Arc<dyn Store> = storage::open(&Backend::Memory).await.unwrap();
        let err = kvstore::ops::backup::restore(&target, bad, false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a usable backup"), "{err}");
        assert!(
            target.users_list().await.unwrap().is_empty(),
            "{}",
            bad.display()
        );
    }

    // A target that already has users is refused; an empty one takes the backup.
    let err = kvstore::ops::backup::restore(&source, &good, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already has users"), "{err}");
    let target: Arc<dyn Store> = storage::open(&Backend::Memory).await.unwrap();
    kvstore::ops::backup::restore(&target, &good, false)
        .await
        .unwrap();
    let page = target
        .stores_list(&user.id, &common::first_stores(10))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].stats.record_count, 20);
    assert_eq!(page.items[0].stats.storage_bytes, 20 * 5000);
    let who = target
        .user_by_token(&read_only.hash())
        .await
        .unwrap()
        .unwrap();
    assert!(who.read_only);
    assert_eq!(target.share_get(&info.id, &bob.id).await.unwrap(), write);
}

#[tokio::test]
async fn only_administrators_may_take_a_backup() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let resp = srv
        .req(Method::GET, "/v2/admin/backup", None)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "token-not-provided").await;
    let resp = srv
        .req(Method::GET, "/v2/admin/backup", Some(&alice))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "insufficient-permissions").await;
    let resp = srv
        .req(Method::GET, "/v2/admin/backup", Some("not-a-token"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "invalid-token").await;
}
