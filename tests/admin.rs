//! Administration over HTTP: users created, disabled, deleted; tokens rotated (the old one stops
//! at once) and read-only; stores shared for reading or writing. Runs on the backend of
//! `KVSTORE_TEST_BACKEND` (scripts/test.sh runs it on all three).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_error, data, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

async fn root(srv: &TestServer) -> String {
    srv.admin("root").await
}

/// Creates a user through the admin API; returns its token.
async fn create_user(srv: &TestServer, root: &str, body: Value) -> String {
    let resp = srv
        .req(Method::POST, "/v2/admin/users", Some(root))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    data(resp).await["token"].as_str().unwrap().to_owned()
}

async fn status(srv: &TestServer, method: Method, path: &str, token: &str) -> u16 {
    srv.req(method, path, Some(token))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn only_administrators_with_full_tokens_administer() {
    let srv = TestServer::start().await;
    let root = root(&srv).await;
    let alice = srv.user("alice").await;
    let resp = srv
        .req(Method::GET, "/v2/admin/users", None)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "token-not-provided").await;
    let resp = srv
        .req(Method::GET, "/v2/admin/users", Some(&alice))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "insufficient-permissions").await;
    // A read-only token of an administrator reads its stores but administers nothing.
    let resp = srv
        .req(Method::POST, "/v2/admin/users/root/tokens", Some(&root))
        .json(&json!({"readOnly": true}))
        .send()
        .await
        .unwrap();
    let read_only_root = data(resp).await["token"].as_str().unwrap().to_owned();
    let resp = srv
        .req(Method::GET, "/v2/admin/users", Some(&read_only_root))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "insufficient-permissions").await;

    let resp = srv.get("/v2/admin/users", &root).send().await.unwrap();
    let users = data(resp).await;
    let names: Vec<&str> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"root") && names.contains(&"alice"));
}

#[tokio::test]
async fn rotating_a_token_stops_the_old_one_at_once() {
    let srv = TestServer::start().await;
    let root = root(&srv).await;
    let old = create_user(&srv, &root, json!({"username": "carol"})).await;
    assert_eq!(status(&srv, Method::GET, "/v2/users/me", &old).await, 200);

    let resp = srv
        .req(Method::POST, "/v2/admin/users/carol/tokens", Some(&root))
        .json(&json!({"revokeOthers": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let new = data(resp).await["token"].as_str().unwrap().to_owned();
    let resp = srv.get("/v2/users/me", &old).send().await.unwrap();
    assert_error(resp, 401, "invalid-token").await;
    assert_eq!(status(&srv, Method::GET, "/v2/users/me", &new).await, 200);

    // Without revokeOthers, both keep working.
    let resp = srv
        .req(Method::POST, "/v2/admin/users/carol/tokens", Some(&root))
        .send()
        .await
        .unwrap();
    let another = data(resp).await["token"].as_str().unwrap().to_owned();
    assert_eq!(status(&srv, Method::GET, "/v2/users/me", &new).await, 200);
    assert_eq!(
        status(&srv, Method::GET, "/v2/users/me", &another).await,
        200
    );
}

#[tokio::test]
async fn a_read_only_token_reads_but_changes_nothing() {
    let srv = TestServer::start().await;
    let root = root(&srv).await;
    let full = create_user(&srv, &root, json!({"username": "erin"})).await;
    let store = srv.create_store(&full, Some("data")).await;
    let id = store["id"].as_str().unwrap().to_owned();
    srv.put_record(&full, &id, "k", "text/plain", b"v".to_vec())
        .await;
    let resp = srv
        .req(Method::POST, "/v2/admin/users/erin/tokens", Some(&root))
        .json(&json!({"readOnly": true}))
        .send()
        .await
        .unwrap();
    let issued = data(resp).await;
    assert_eq!(issued["readOnly"], true);
    let ro = issued["token"].as_str().unwrap().to_owned();

    // Reads work, by id and by name; opening the existing store with get-or-create works too.
    let record = format!("/v2/key-value-stores/{id}/records/k");
    assert_eq!(status(&srv, Method::GET, &record, &ro).await, 200);
    assert_eq!(
        status(&srv, Method::GET, "/v2/key-value-stores/~data/keys", &ro).await,
        200
    );
    assert_eq!(
        status(&srv, Method::GET, "/v2/key-value-stores", &ro).await,
        200
    );
    let resp = srv
        .req(Method::POST, "/v2/key-value-stores?name=data", Some(&ro))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let opened = data(resp).await;
    assert_eq!(
        opened.get("urlSigningSecretKey"),
        Some(&Value::Null),
        "{opened}"
    );

    // Every write is refused.
    let resp = srv
        .req(Method::PUT, &record, Some(&ro))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "insufficient-permissions").await;
    for (method, path) in [
        (Method::DELETE, record.clone()),
        (Method::DELETE, format!("/v2/key-value-stores/{id}")),
        (Method::POST, "/v2/key-value-stores?name=new-one".to_owned()),
        (Method::POST, "/v2/key-value-stores".to_owned()),
    ] {
        let resp = srv
            .req(method.clone(), &path, Some(&ro))
            .send()
            .await
            .unwrap();
        assert_error(resp, 403, "insufficient-permissions").await;
    }
    let resp = srv
        .req(
            Method::PUT,
            &format!("/v2/key-value-stores/{id}"),
            Some(&ro),
        )
        .json(&json!({"name": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "insufficient-permissions").await;
    let resp = srv
        .req(
            Method::GET,
            &format!("/v2/key-value-stores/{id}"),
            Some(&ro),
        )
        .send()
        .await
        .unwrap();
    let store = data(resp).await;
    assert_eq!(store.get("urlSigningSecretKey"), Some(&Value::Null));
    assert_eq!(status(&srv, Method::GET, &record, &full).await, 200);
}

#[tokio::test]
async fn a_disabled_user_is_shut_out_until_enabled_and_a_deleted_one_is_gone() {
    let srv = TestServer::start().await;
    let root = root(&srv).await;
    let token = create_user(&srv, &root, json!({"username": "frank"})).await;
    let store = srv.create_store(&token, Some("keep")).await;
    let id = store["id"].as_str().unwrap().to_owned();
    srv.put_record(&token, &id, "k", "text/plain", b"v".to_vec())
        .await;

    let resp = srv
        .req(Method::PUT, "/v2/admin/users/frank", Some(&root))
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(data(resp).await["disabled"], true);
    let resp = srv.get("/v2/users/me", &token).send().await.unwrap();
    assert_error(resp, 401, "invalid-token").await;

    let resp = srv
        .req(Method::PUT, "/v2/admin/users/frank", Some(&root))
        .json(&json!({"disabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(data(resp).await["disabled"], false);
    let record = format!("/v2/key-value-stores/{id}/records/k");
    assert_eq!(status(&srv, Method::GET, &record, &token).await, 200);

    assert_eq!(
        status(&srv, Method::DELETE, "/v2/admin/users/frank", &root).await,
        204
    );
    assert_eq!(
        status(&srv, Method::DELETE, "/v2/admin/users/frank", &root).await,
        404
    );
    let resp = srv.get("/v2/users/me", &token).send().await.unwrap();
    assert_error(resp, 401, "invalid-token").await;
    assert!(srv
        .store
        .store_get(&kvstore::model::StoreId::parse(&id).unwrap())
        .await
        .unwrap()
        .is_none());
    // The name can be taken again, and the new user sees none of the old stores.
    let again = create_user(&srv, &root, json!({"username": "frank"})).await;
    let resp = srv
        .get("/v2/key-value-stores", &again)
        .send()
        .await
        .unwrap();
    assert_eq!(data(resp).await["total"], 0);
}

#[tokio::test]
async fn a_shared_store_opens_to_its_user_for_reading_or_writing() {
    let srv = TestServer::start().await;
    let root = root(&srv).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let store = srv.create_store(&alice, Some("team")).await;
    let id = store["id"].as_str().unwrap().to_owned();
    srv.put_record(&alice, &id, "k", "text/plain", b"v".to_vec())
        .await;
    let record = format!("/v2/key-value-stores/{id}/records/k");
    let share_bob = format!("/v2/key-value-stores/{id}/shares/bob");

    // Not shared: bob cannot even see it.
    let resp = srv.get(&record, &bob).send().await.unwrap();
    assert_error(resp, 404, "record-or-token-not-found").await;

    // READ: bob reads by id and by alice~team, lists keys, finds it as sharedWithMe; no writes.
    let resp = srv
        .req(Method::PUT, &share_bob, Some(&alice))
        .json(&json!({"access": "READ"}))
        .send()
        .await
        .unwrap();
    assert_eq!(data(resp).await["access"], "READ");
    assert_eq!(status(&srv, Method::GET, &record, &bob).await, 200);
    assert_eq!(
        status(
            &srv,
            Method::GET,
            "/v2/key-value-stores/alice~team/records/k",
            &bob
        )
        .await,
        200
    );
    let resp = srv
        .get("/v2/key-value-stores?ownership=sharedWithMe", &bob)
        .send()
        .await
        .unwrap();
    let listed = data(resp).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert_eq!(listed["items"][0]["username"], "alice");
    assert_eq!(
        listed["items"][0].get("urlSigningSecretKey"),
        Some(&Value::Null)
    );
    // While alice is disabled her store answers nobody but administrators, listings included.
    for (disabled, total) in [(true, 0), (false, 1)] {
        let resp = srv
            .req(Method::PUT, "/v2/admin/users/alice", Some(&root))
            .json(&json!({ "disabled": disabled }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let resp = srv
            .get("/v2/key-value-stores?ownership=sharedWithMe", &bob)
            .send()
            .await
            .unwrap();
        assert_eq!(
            data(resp).await["total"],
            total,
            "alice disabled: {disabled}"
        );
        let status_now = status(&srv, Method::GET, &record, &bob).await;
        assert_eq!(status_now, if disabled { 404 } else { 200 });
    }
    let resp = srv
        .get("/v2/key-value-stores?ownership=ownedByMe", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(data(resp).await["total"], 0, "ownedByMe stays bob's own");
    // Without `ownership`, both: bob's own store and the shared one, in creation order.
    let own = srv.create_store(&bob, Some("bobs")).await;
    for (query, ids) in [
        ("", vec![id.as_str(), own["id"].as_str().unwrap()]),
        ("&desc=1", vec![own["id"].as_str().unwrap(), id.as_str()]),
        ("&offset=1&limit=1", vec![own["id"].as_str().unwrap()]),
    ] {
        let resp = srv
            .get(&format!("/v2/key-value-stores?unnamed=1{query}"), &bob)
            .send()
            .await
            .unwrap();
        let page = data(resp).await;
        assert_eq!(page["total"], 2, "{query}");
        let got: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, ids, "{query}");
    }
    let resp = srv
        .req(Method::PUT, &record, Some(&bob))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "insufficient-permissions").await;
    // Only the owner (or an administrator) manages shares.
    let resp = srv
        .req(Method::PUT, &share_bob, Some(&bob))
        .json(&json!({"access": "WRITE"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "insufficient-permissions").await;

    // WRITE (given by an administrator): bob writes; deleting the store stays the owner's.
    let resp = srv
        .req(Method::PUT, &share_bob, Some(&root))
        .json(&json!({"access": "WRITE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    srv.put_record(&bob, &id, "k2", "text/plain", b"from bob".to_vec())
        .await;
    let resp = srv
        .get(&format!("/v2/key-value-stores/{id}/shares"), &alice)
        .send()
        .await
        .unwrap();
    let shares = data(resp).await;
    assert_eq!(shares["items"][0]["username"], "bob");
    assert_eq!(shares["items"][0]["access"], "WRITE");

    // Unshared: gone for bob at once.
    assert_eq!(status(&srv, Method::DELETE, &share_bob, &alice).await, 204);
    let resp = srv.get(&record, &bob).send().await.unwrap();
    assert_error(resp, 404, "record-or-token-not-found").await;

    // Bad input.
    let resp = srv
        .req(Method::PUT, &share_bob, Some(&alice))
        .json(&json!({"access": "ADMIN"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid-input").await;
    let resp = srv
        .req(
            Method::PUT,
            &format!("/v2/key-value-stores/{id}/shares/nobody"),
            Some(&alice),
        )
        .json(&json!({"access": "READ"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-not-found").await;
    let resp = srv
        .req(
            Method::PUT,
            &format!("/v2/key-value-stores/{id}/shares/alice"),
            Some(&alice),
        )
        .json(&json!({"access": "READ"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid-input").await;
}
