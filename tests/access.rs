//! Access between users and anonymous callers: tokens, `generalAccess`, `~name` references, URL
//! signatures and the error answers of the "Access and errors" table in `shared/DECISIONS.md`.

// Test code: a failed unwrap is a failed test. (`allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers of an integration test crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{assert_error, data, TestServer};
use kvstore::auth::{record_signature, storage_signature};
use kvstore::model::GeneralAccess;
use reqwest::{Method, Response};
use serde_json::{json, Value};

/// A store id that is well formed but names no store.
const MISSING_ID: &str = "zzzzzzzzzzzzzzzzz";

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// Alice owns the store `foo` with the records `INPUT` (`hello`) and `OTHER` (`other`); Bob is
/// another user.
struct World {
    srv: TestServer,
    alice: String,
    bob: String,
    /// Alice's store `foo` as her GET returned it.
    store: Value,
    id: String,
    secret: String,
}

impl World {
    async fn new() -> Self {
        Self::with(TestServer::start().await).await
    }

    async fn with(srv: TestServer) -> Self {
        let alice = srv.user("alice").await;
        let bob = srv.user("bob").await;
        let created = srv.create_store(&alice, Some("foo")).await;
        let id = created["id"].as_str().unwrap().to_owned();
        srv.put_record(&alice, &id, "INPUT", "text/plain", "hello")
            .await;
        srv.put_record(&alice, &id, "OTHER", "text/plain", "other")
            .await;
        let store = data(
            srv.get(&format!("/v2/key-value-stores/{id}"), &alice)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let secret = store["urlSigningSecretKey"]
            .as_str()
            .unwrap_or_else(|| panic!("owner sees no urlSigningSecretKey in {store}"))
            .to_owned();
        Self {
            srv,
            alice,
            bob,
            store,
            id,
            secret,
        }
    }

    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Anon => None,
            Who::Bob => Some(&self.bob),
            Who::Alice => Some(&self.alice),
        }
    }

    /// How a request names Alice's store.
    fn store_ref(&self, by: By) -> String {
        match by {
            By::Id => self.id.clone(),
            By::Name => "alice~foo".to_owned(),
        }
    }

    async fn send(&self, method: Method, path: &str, who: Who) -> Response {
        self.srv
            .req(method, path, self.token(who))
            .send()
            .await
            .unwrap()
    }

    /// Alice sets `generalAccess` of her store and checks the answer.
    async fn set_access(&self, access: &str) {
        let resp = self
            .srv
            .req(
                Method::PUT,
                &format!("/v2/key-value-stores/{}", self.id),
                Some(&self.alice),
            )
            .json(&json!({ "generalAccess": access }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "set generalAccess {access}");
        let store = data(resp).await;
        assert_eq!(store["generalAccess"], access, "in {store}");
        assert_eq!(
            store["urlSigningSecretKey"],
            self.secret.as_str(),
            "in {store}"
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anon,
    Bob,
    Alice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Id,
    Name,
}

/// Checks every read of Alice's store by `who`, reached `by` id or name: all succeed when
/// `readable`, else all are 404 `record-or-token-not-found`. A reader who is not the owner never
/// sees the signing secret or signed URLs.
async fn check_reads(w: &World, who: Who, by: By, readable: bool, ctx: &str) {
    let r = w.store_ref(by);
    let ctx = format!("{ctx}, {who:?} by {by:?}");

    let store = w
        .send(Method::GET, &format!("/v2/key-value-stores/{r}"), who)
        .await;
    let keys = w
        .send(Method::GET, &format!("/v2/key-value-stores/{r}/keys"), who)
        .await;
    let record = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{r}/records/INPUT"),
            who,
        )
        .await;
    let head = w
        .send(
            Method::HEAD,
            &format!("/v2/key-value-stores/{r}/records/INPUT"),
            who,
        )
        .await;
    let zip = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{r}/records"),
            who,
        )
        .await;

    if readable {
        assert_eq!(store.status(), 200, "GET store: {ctx}");
        let store = data(store).await;
        assert_eq!(store["id"], w.id.as_str(), "{ctx}");
        assert!(
            store.get("urlSigningSecretKey") == Some(&Value::Null),
            "a reader must get urlSigningSecretKey as null, not see it urlSigningSecretKey ({ctx}): {store}"
        );
        let keys_url = store["keysPublicUrl"].as_str().unwrap();
        assert!(
            !keys_url.contains("signature"),
            "keysPublicUrl for a reader is signed ({ctx}): {keys_url}"
        );
        assert_eq!(
            keys_url,
            format!("{}/v2/key-value-stores/{}/keys", w.srv.url, w.id),
            "{ctx}"
        );

        assert_eq!(keys.status(), 200, "GET keys: {ctx}");
        let keys = data(keys).await;
        let items = keys["items"].as_array().unwrap();
        let names: Vec<&str> = items.iter().map(|i| i["key"].as_str().unwrap()).collect();
        assert_eq!(names, ["INPUT", "OTHER"], "{ctx}");
        for item in items {
            let url = item["recordPublicUrl"].as_str().unwrap();
            assert_eq!(
                url,
                format!(
                    "{}/v2/key-value-stores/{}/records/{}",
                    w.srv.url,
                    w.id,
                    item["key"].as_str().unwrap()
                ),
                "recordPublicUrl for a reader must be the plain URL ({ctx})"
            );
        }

        assert_eq!(record.status(), 200, "GET record: {ctx}");
        assert_eq!(record.text().await.unwrap(), "hello", "{ctx}");
        assert_eq!(head.status(), 200, "HEAD record: {ctx}");
        assert_eq!(zip.status(), 200, "GET records (ZIP): {ctx}");
        assert_eq!(zip.headers()["content-type"], "application/zip", "{ctx}");
    } else {
        assert_error(store, 404, "record-or-token-not-found").await;
        assert_error(keys, 404, "record-or-token-not-found").await;
        assert_error(record, 404, "record-or-token-not-found").await;
        assert_eq!(head.status(), 404, "HEAD record: {ctx}");
        assert_error(zip, 404, "record-or-token-not-found").await;
    }
}

/// The writes of the access table, on Alice's store named by `r`. DELETE store comes last.
fn writes(r: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::PUT,
            format!("/v2/key-value-stores/{r}/records/INPUT"),
            None,
        ),
        (
            Method::POST,
            format!("/v2/key-value-stores/{r}/records/NEW"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v2/key-value-stores/{r}/records/INPUT"),
            None,
        ),
        (
            Method::PUT,
            format!("/v2/key-value-stores/{r}"),
            Some(json!({"name": "stolen", "generalAccess": "RESTRICTED"})),
        ),
        (Method::DELETE, format!("/v2/key-value-stores/{r}"), None),
    ]
}

async fn send_write(
    w: &World,
    who: Who,
    (method, path, body): &(Method, String, Option<Value>),
) -> Response {
    let rb = w.srv.req(method.clone(), path, w.token(who));
    let rb = match body {
        Some(body) => rb.json(body),
        None => rb.header("content-type", "text/plain").body("evil"),
    };
    rb.send().await.unwrap()
}

/// Alice's store is unchanged: same name and both records intact.
async fn assert_untouched(w: &World) {
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{}", w.id),
            Who::Alice,
        )
        .await;
    assert_eq!(resp.status(), 200, "alice's store is gone");
    let store = data(resp).await;
    assert_eq!(store["name"], "foo");
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{}/records/INPUT", w.id),
            Who::Alice,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello");
    let resp = w
        .send(
            Method::HEAD,
            &format!("/v2/key-value-stores/{}/records/NEW", w.id),
            Who::Alice,
        )
        .await;
    assert_eq!(resp.status(), 404, "a record NEW was written");
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_token_on_endpoints_that_need_one_is_401() {
    let w = World::new().await;
    let mut cases = vec![
        (Method::GET, "/v2/key-value-stores".to_owned(), None),
        (
            Method::GET,
            "/v2/key-value-stores?unnamed=1".to_owned(),
            None,
        ),
        (Method::POST, "/v2/key-value-stores".to_owned(), None),
        (
            Method::POST,
            "/v2/key-value-stores?name=anon".to_owned(),
            Some(json!({})),
        ),
    ];
    cases.extend(writes(&w.id));
    cases.extend(writes("alice~foo"));
    cases.extend(writes(MISSING_ID));
    for access in ["RESTRICTED", "ANYONE_WITH_NAME_CAN_READ"] {
        w.set_access(access).await;
        for case in &cases {
            let resp = send_write(&w, Who::Anon, case).await;
            let ctx = format!("{} {} ({access})", case.0, case.1);
            let got = resp.status();
            let text = resp.text().await.unwrap();
            assert_eq!(got, 401, "{ctx}: {text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["error"]["type"], "token-not-provided", "{ctx}: {text}");
        }
    }
    assert_untouched(&w).await;
}

#[tokio::test]
async fn an_invalid_token_is_401_on_every_endpoint_even_on_a_public_store() {
    let w = World::new().await;
    w.set_access("ANYONE_WITH_NAME_CAN_READ").await;
    let id = &w.id;
    let sig = record_signature(&w.secret, "INPUT");
    let storage_sig = storage_signature(&w.secret, id, 0);
    let paths = [
        (Method::GET, "/v2/key-value-stores".to_owned()),
        (Method::POST, "/v2/key-value-stores?name=x".to_owned()),
        (Method::GET, format!("/v2/key-value-stores/{id}")),
        (Method::GET, "/v2/key-value-stores/alice~foo".to_owned()),
        (Method::GET, "/v2/key-value-stores/~foo".to_owned()),
        (Method::PUT, format!("/v2/key-value-stores/{id}")),
        (Method::DELETE, format!("/v2/key-value-stores/{id}")),
        (Method::GET, format!("/v2/key-value-stores/{id}/keys")),
        (
            Method::GET,
            format!("/v2/key-value-stores/{id}/keys?signature={storage_sig}"),
        ),
        (Method::GET, format!("/v2/key-value-stores/{id}/records")),
        (
            Method::GET,
            format!("/v2/key-value-stores/{id}/records/INPUT"),
        ),
        (
            Method::GET,
            format!("/v2/key-value-stores/{id}/records/INPUT?signature={sig}"),
        ),
        (
            Method::PUT,
            format!("/v2/key-value-stores/{id}/records/INPUT"),
        ),
        (
            Method::POST,
            format!("/v2/key-value-stores/{id}/records/INPUT"),
        ),
        (
            Method::DELETE,
            format!("/v2/key-value-stores/{id}/records/INPUT"),
        ),
        (Method::GET, format!("/v2/key-value-stores/{MISSING_ID}")),
    ];
    for bad in ["kvs_not-a-real-token", "x"] {
        for (method, path) in &paths {
            // As a Bearer header.
            let resp = w
                .srv
                .req(method.clone(), path, Some(bad))
                .send()
                .await
                .unwrap();
            let msg = format!("Bearer {bad}: {method} {path}");
            let got = resp.status();
            let text = resp.text().await.unwrap();
            assert_eq!(got, 401, "{msg}: {text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["error"]["type"], "invalid-token", "{msg}: {text}");

            // As ?token=.
            let sep = if path.contains('?') { '&' } else { '?' };
            let with_query = format!("{path}{sep}token={bad}");
            let resp = w
                .srv
                .req(method.clone(), &with_query, None)
                .send()
                .await
                .unwrap();
            let msg = format!("?token={bad}: {method} {with_query}");
            let got = resp.status();
            let text = resp.text().await.unwrap();
            assert_eq!(got, 401, "{msg}: {text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["error"]["type"], "invalid-token", "{msg}: {text}");
        }
    }
    // HEAD has no body; the status alone.
    let head = format!("/v2/key-value-stores/{id}/records/INPUT");
    let resp = w
        .srv
        .req(Method::HEAD, &head, Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = w
        .srv
        .req(Method::HEAD, &format!("{head}?token=nope"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_untouched(&w).await;
}

#[tokio::test]
async fn query_token_works_like_the_header() {
    let w = World::new().await;
    let t = &w.alice;
    let id = &w.id;

    let resp = w
        .srv
        .req(
            Method::GET,
            &format!("/v2/key-value-stores?token={t}"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let list = data(resp).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id.as_str());

    let resp = w
        .srv
        .req(
            Method::POST,
            &format!("/v2/key-value-stores?name=bar&token={t}"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let bar = data(resp).await;
    assert_eq!(bar["username"], "alice");

    let resp = w
        .srv
        .req(
            Method::GET,
            &format!("/v2/key-value-stores/{id}?token={t}"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let store = data(resp).await;
    assert_eq!(store["urlSigningSecretKey"], w.secret.as_str());

    let resp = w
        .srv
        .req(
            Method::GET,
            &format!("/v2/key-value-stores/~foo/keys?token={t}"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(data(resp).await["count"], 2);

    let resp = w
        .srv
        .req(
            Method::PUT,
            &format!("/v2/key-value-stores/{id}/records/Q?token={t}"),
            None,
        )
        .header("content-type", "text/plain")
        .body("via query")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = w
        .srv
        .req(
            Method::GET,
            &format!("/v2/key-value-stores/{id}/records/Q?token={t}"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "via query");

    let resp = w
        .srv
        .req(
            Method::DELETE,
            &format!("/v2/key-value-stores/{id}/records/Q?token={t}"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    // Bob's token in the query is Bob, not anonymous: a restricted store stays hidden.
    let resp = w
        .srv
        .req(
            Method::GET,
            &format!("/v2/key-value-stores/{id}?token={}", w.bob),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-or-token-not-found").await;
}

// ---------------------------------------------------------------------------------------------
// Users and generalAccess
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_restricted_store_is_invisible_to_other_users_and_anonymous_callers() {
    let w = World::new().await;
    // A new store follows the user setting, which is RESTRICTED on a default server.
    assert_eq!(w.store["generalAccess"], "FOLLOW_USER_SETTING");
    for who in [Who::Bob, Who::Anon] {
        for by in [By::Id, By::Name] {
            check_reads(&w, who, by, false, "default").await;
            let r = w.store_ref(by);
            let resp = w
                .send(
                    Method::GET,
                    &format!("/v2/key-value-stores/{r}/records"),
                    who,
                )
                .await;
            assert_error(resp, 404, "record-or-token-not-found").await;
            let resp = w
                .send(
                    Method::GET,
                    &format!("/v2/key-value-stores/{r}/records/MISSING"),
                    who,
                )
                .await;
            assert_error(resp, 404, "record-or-token-not-found").await;
        }
    }
    // The owner reads everything, by id and by name.
    for by in [By::Id, By::Name] {
        let r = w.store_ref(by);
        let resp = w
            .send(
                Method::GET,
                &format!("/v2/key-value-stores/{r}/records/INPUT"),
                Who::Alice,
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "hello");
    }
}

#[tokio::test]
async fn another_user_writing_gets_404_when_he_cannot_read_and_403_when_he_can() {
    let w = World::new().await;
    // (generalAccess, reached by, what Bob's writes answer)
    let table = [
        ("RESTRICTED", By::Id, 404),
        ("RESTRICTED", By::Name, 404),
        ("FOLLOW_USER_SETTING", By::Id, 404),
        ("FOLLOW_USER_SETTING", By::Name, 404),
        ("ANYONE_WITH_ID_CAN_READ", By::Id, 403),
        ("ANYONE_WITH_ID_CAN_READ", By::Name, 404),
        ("ANYONE_WITH_NAME_CAN_READ", By::Id, 403),
        ("ANYONE_WITH_NAME_CAN_READ", By::Name, 403),
    ];
    for (access, by, status) in table {
        w.set_access(access).await;
        for case in writes(&w.store_ref(by)) {
            let resp = send_write(&w, Who::Bob, &case).await;
            let got = resp.status();
            let text = resp.text().await.unwrap();
            let ctx = format!("bob {} {} ({access})", case.0, case.1);
            assert_eq!(got, status, "{ctx}: {text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            let want = if status == 403 {
                "insufficient-permissions"
            } else {
                "record-or-token-not-found"
            };
            assert_eq!(body["error"]["type"], want, "{ctx}: {text}");
        }
        assert_untouched(&w).await;
    }
}

#[tokio::test]
async fn general_access_decides_who_may_read_by_id_and_by_name() {
    let w = World::new().await;
    // (generalAccess, readable by id, readable by `alice~foo`) for Bob and anonymous callers.
    let table = [
        ("RESTRICTED", false, false),
        ("ANYONE_WITH_ID_CAN_READ", true, false),
        ("ANYONE_WITH_NAME_CAN_READ", true, true),
        // Back to the default: the server's setting is RESTRICTED.
        ("FOLLOW_USER_SETTING", false, false),
        ("ANYONE_WITH_NAME_CAN_READ", true, true),
        ("ANYONE_WITH_ID_CAN_READ", true, false),
        ("RESTRICTED", false, false),
    ];
    for (access, by_id, by_name) in table {
        w.set_access(access).await;
        for who in [Who::Anon, Who::Bob] {
            check_reads(&w, who, By::Id, by_id, access).await;
            check_reads(&w, who, By::Name, by_name, access).await;
        }
        // The owner always sees the secret and signed URLs.
        let resp = w
            .send(Method::GET, "/v2/key-value-stores/alice~foo", Who::Alice)
            .await;
        assert_eq!(resp.status(), 200);
        let store = data(resp).await;
        assert_eq!(store["urlSigningSecretKey"], w.secret.as_str(), "{access}");
        assert!(store["keysPublicUrl"]
            .as_str()
            .unwrap()
            .contains("?signature="));
    }
}

#[tokio::test]
async fn an_invalid_general_access_is_refused() {
    let w = World::new().await;
    let resp = w
        .srv
        .req(
            Method::PUT,
            &format!("/v2/key-value-stores/{}", w.id),
            Some(&w.alice),
        )
        .json(&json!({"generalAccess": "EVERYONE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    check_reads(&w, Who::Anon, By::Id, false, "after a refused update").await;
}

#[tokio::test]
async fn the_server_default_decides_what_follow_user_setting_means() {
    let srv = TestServer::start_with(|c| {
        c.default_general_access = GeneralAccess::AnyoneWithIdCanRead;
    })
    .await;
    let w = World::with(srv).await;
    assert_eq!(w.store["generalAccess"], "FOLLOW_USER_SETTING");
    for who in [Who::Anon, Who::Bob] {
        check_reads(
            &w,
            who,
            By::Id,
            true,
            "server default ANYONE_WITH_ID_CAN_READ",
        )
        .await;
        check_reads(
            &w,
            who,
            By::Name,
            false,
            "server default ANYONE_WITH_ID_CAN_READ",
        )
        .await;
    }
    // Bob can read it now, so his writes are 403.
    for case in writes(&w.id) {
        let resp = send_write(&w, Who::Bob, &case).await;
        assert_error(resp, 403, "insufficient-permissions").await;
    }
    // An explicit setting wins over the server's default.
    w.set_access("RESTRICTED").await;
    for who in [Who::Anon, Who::Bob] {
        check_reads(&w, who, By::Id, false, "explicit RESTRICTED").await;
    }
    w.set_access("FOLLOW_USER_SETTING").await;
    check_reads(&w, Who::Anon, By::Id, true, "FOLLOW_USER_SETTING again").await;

    let srv = TestServer::start_with(|c| {
        c.default_general_access = GeneralAccess::AnyoneWithNameCanRead;
    })
    .await;
    let w = World::with(srv).await;
    for who in [Who::Anon, Who::Bob] {
        check_reads(
            &w,
            who,
            By::Id,
            true,
            "server default ANYONE_WITH_NAME_CAN_READ",
        )
        .await;
        check_reads(
            &w,
            who,
            By::Name,
            true,
            "server default ANYONE_WITH_NAME_CAN_READ",
        )
        .await;
    }
}

#[tokio::test]
async fn the_signing_secret_is_shown_only_to_the_owner() {
    let w = World::new().await;
    // The owner sees it everywhere the store object appears: create, get, update, list.
    let key = &w.secret;
    assert!(!key.is_empty());
    let keys_url = w.store["keysPublicUrl"].as_str().unwrap();
    assert!(
        keys_url.starts_with(&format!(
            "{}/v2/key-value-stores/{}/keys?signature=",
            w.srv.url, w.id
        )),
        "{keys_url}"
    );
    // The signature in it is a storage signature that expires in 14 days, like Apify's.
    let sig = keys_url.split("?signature=").nth(1).unwrap();
    let decoded = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        String::from_utf8(engine.decode(sig.trim_end_matches('=')).unwrap()).unwrap()
    };
    let expires_at: u64 = decoded.split('.').nth(1).unwrap().parse().unwrap();
    let fourteen_days = 14 * 24 * 3600 * 1000;
    assert!(
        expires_at > now_ms() + fourteen_days - 600_000 && expires_at <= now_ms() + fourteen_days,
        "keysPublicUrl signature expires at {expires_at}, now is {}",
        now_ms()
    );
    assert_eq!(sig, storage_signature(key, &w.id, expires_at));
    let records_url = w.store["recordsPublicUrl"].as_str().unwrap();
    assert!(
        records_url.starts_with(&format!(
            "{}/v2/key-value-stores/{}/records?signature=",
            w.srv.url, w.id
        )),
        "{records_url}"
    );
    let again = w.srv.create_store(&w.alice, Some("foo")).await;
    assert_eq!(again["urlSigningSecretKey"], key.as_str());
    // Every store has its own secret.
    let other = w.srv.create_store(&w.alice, Some("other")).await;
    let other_key = other["urlSigningSecretKey"].as_str().unwrap();
    assert!(!other_key.is_empty());
    assert_ne!(other_key, key.as_str());
    let resp = w
        .send(Method::GET, "/v2/key-value-stores", Who::Alice)
        .await;
    let list = data(resp).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        let want = if item["id"] == w.id.as_str() {
            key.as_str()
        } else {
            other_key
        };
        assert_eq!(item["urlSigningSecretKey"], want, "in the list");
    }
    // The owner's key listing signs each recordPublicUrl.
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{}/keys", w.id),
            Who::Alice,
        )
        .await;
    let keys = data(resp).await;
    assert_eq!(
        keys["items"][0]["recordPublicUrl"],
        format!(
            "{}/v2/key-value-stores/{}/records/INPUT?signature={}",
            w.srv.url,
            w.id,
            record_signature(key, "INPUT")
        )
    );

    // Readers of a public store see neither the secret nor signed URLs (checked in check_reads).
    w.set_access("ANYONE_WITH_NAME_CAN_READ").await;
    for who in [Who::Anon, Who::Bob] {
        for by in [By::Id, By::Name] {
            check_reads(&w, who, by, true, "public store").await;
            let resp = w
                .send(
                    Method::GET,
                    &format!("/v2/key-value-stores/{}", w.store_ref(by)),
                    who,
                )
                .await;
            let store = data(resp).await;
            let text = store.to_string();
            assert!(!text.contains(key.as_str()), "the secret leaked: {text}");
            assert!(!text.contains("signature"), "a signed URL leaked: {text}");
            assert!(store["recordsPublicUrl"]
                .as_str()
                .unwrap()
                .ends_with("/records"));
        }
    }
}

#[tokio::test]
async fn tilde_name_is_the_callers_own_store() {
    let w = World::new().await;
    let bobs = w.srv.create_store(&w.bob, Some("foo")).await;
    let bob_id = bobs["id"].as_str().unwrap();
    assert_ne!(bob_id, w.id, "bob's foo is alice's foo");
    assert_eq!(bobs["username"], "bob");

    let resp = w
        .send(Method::GET, "/v2/key-value-stores/~foo", Who::Alice)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(data(resp).await["id"], w.id.as_str());
    let resp = w
        .send(Method::GET, "/v2/key-value-stores/~foo", Who::Bob)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(data(resp).await["id"], bob_id);

    // Bob writes through ~foo: into his own store, not Alice's.
    w.srv
        .put_record(&w.bob, "~foo", "INPUT", "text/plain", "bob's")
        .await;
    let resp = w
        .send(
            Method::GET,
            "/v2/key-value-stores/~foo/records/INPUT",
            Who::Bob,
        )
        .await;
    assert_eq!(resp.text().await.unwrap(), "bob's");
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{bob_id}/records/INPUT"),
            Who::Bob,
        )
        .await;
    assert_eq!(resp.text().await.unwrap(), "bob's");
    let resp = w
        .send(
            Method::GET,
            "/v2/key-value-stores/~foo/records/INPUT",
            Who::Alice,
        )
        .await;
    assert_eq!(resp.text().await.unwrap(), "hello");

    // `alice~foo` by Alice and `bob~foo` by Bob are their own stores, for reads and writes.
    let resp = w
        .send(Method::GET, "/v2/key-value-stores/alice~foo", Who::Alice)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(data(resp).await["id"], w.id.as_str());
    w.srv
        .put_record(&w.alice, "alice~foo", "BYNAME", "text/plain", "by name")
        .await;
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{}/records/BYNAME", w.id),
            Who::Alice,
        )
        .await;
    assert_eq!(resp.text().await.unwrap(), "by name");
    let resp = w
        .send(Method::GET, "/v2/key-value-stores/bob~foo/keys", Who::Bob)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(data(resp).await["items"][0]["key"], "INPUT");

    // Each sees the other's only as `user~foo`, which stays hidden while restricted.
    let resp = w
        .send(Method::GET, "/v2/key-value-stores/bob~foo", Who::Alice)
        .await;
    assert_error(resp, 404, "record-or-token-not-found").await;

    // Names are case-sensitive.
    for path in [
        "/v2/key-value-stores/~FOO",
        "/v2/key-value-stores/alice~Foo",
    ] {
        let resp = w.send(Method::GET, path, Who::Alice).await;
        assert_error(resp, 404, "record-not-found").await;
    }

    // Deleting ~foo deletes only the caller's own.
    let resp = w
        .send(Method::DELETE, "/v2/key-value-stores/~foo", Who::Bob)
        .await;
    assert_eq!(resp.status(), 204);
    let resp = w
        .send(Method::GET, "/v2/key-value-stores/~foo", Who::Bob)
        .await;
    assert_error(resp, 404, "record-not-found").await;
    let resp = w
        .send(Method::GET, "/v2/key-value-stores/~foo", Who::Alice)
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_users_list_never_contains_other_users_stores() {
    let w = World::new().await;
    w.srv.create_store(&w.alice, Some("a2")).await;
    w.srv.create_store(&w.alice, None).await;
    w.set_access("ANYONE_WITH_NAME_CAN_READ").await;
    let bobs = w.srv.create_store(&w.bob, Some("b1")).await;
    let bob_unnamed = w.srv.create_store(&w.bob, None).await;

    for query in [
        "",
        "?unnamed=1",
        "?unnamed=1&desc=1",
        "?ownership=ownedByMe&unnamed=true",
    ] {
        let resp = w
            .send(
                Method::GET,
                &format!("/v2/key-value-stores{query}"),
                Who::Bob,
            )
            .await;
        assert_eq!(resp.status(), 200);
        let list = data(resp).await;
        // Compared as sets: stores created in the same millisecond have no defined order.
        let mut ids: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        let mut want = vec![bobs["id"].as_str().unwrap()];
        if query.contains("unnamed") {
            want.push(bob_unnamed["id"].as_str().unwrap());
        }
        want.sort_unstable();
        assert_eq!(ids, want, "bob's list {query}: {list}");
        assert_eq!(list["total"], want.len(), "{query}");
        for item in list["items"].as_array().unwrap() {
            assert_eq!(item["username"], "bob");
        }
    }
    let resp = w
        .send(
            Method::GET,
            "/v2/key-value-stores?ownership=sharedWithMe&unnamed=1",
            Who::Bob,
        )
        .await;
    let list = data(resp).await;
    assert_eq!(list["total"], 0, "nothing was shared with bob: {list}");

    let resp = w
        .send(Method::GET, "/v2/key-value-stores?unnamed=1", Who::Alice)
        .await;
    let list = data(resp).await;
    assert_eq!(list["total"], 3);
    for item in list["items"].as_array().unwrap() {
        assert_eq!(item["username"], "alice");
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_record_signature_opens_that_one_record() {
    let w = World::new().await;
    let id = &w.id;
    let sig = record_signature(&w.secret, "INPUT");

    for who in [Who::Anon, Who::Bob] {
        let resp = w
            .send(
                Method::GET,
                &format!("/v2/key-value-stores/{id}/records/INPUT?signature={sig}"),
                who,
            )
            .await;
        assert_eq!(resp.status(), 200, "{who:?}");
        assert_eq!(resp.text().await.unwrap(), "hello");
        let resp = w
            .send(
                Method::HEAD,
                &format!("/v2/key-value-stores/{id}/records/INPUT?signature={sig}"),
                who,
            )
            .await;
        assert_eq!(resp.status(), 200, "HEAD {who:?}");

        // Not another key of the same store.
        let resp = w
            .send(
                Method::GET,
                &format!("/v2/key-value-stores/{id}/records/OTHER?signature={sig}"),
                who,
            )
            .await;
        assert_error(resp, 403, "invalid-signature").await;
        let resp = w
            .send(
                Method::HEAD,
                &format!("/v2/key-value-stores/{id}/records/OTHER?signature={sig}"),
                who,
            )
            .await;
        assert_eq!(resp.status(), 403, "HEAD OTHER {who:?}");

        // Not the key listing nor the ZIP: a record signature is no storage signature.
        for what in ["keys", "records"] {
            let resp = w
                .send(
                    Method::GET,
                    &format!("/v2/key-value-stores/{id}/{what}?signature={sig}"),
                    who,
                )
                .await;
            assert_error(resp, 403, "invalid-signature").await;
        }
        // Not the store object: signatures never open it.
        let resp = w
            .send(
                Method::GET,
                &format!("/v2/key-value-stores/{id}?signature={sig}"),
                who,
            )
            .await;
        assert_error(resp, 404, "record-or-token-not-found").await;
    }

    // Reached by name, the same signature opens the same record.
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/alice~foo/records/INPUT?signature={sig}"),
            Who::Anon,
        )
        .await;
    assert_eq!(resp.status(), 200, "record by name with a record signature");
    assert_eq!(resp.text().await.unwrap(), "hello");

    // A wrong signature, and the right one of another store's secret.
    let other = w.srv.create_store(&w.alice, Some("other")).await;
    let foreign = record_signature(other["urlSigningSecretKey"].as_str().unwrap(), "INPUT");
    for bad in ["wrong", "126LysVkMQ2fTk8WTp14h", foreign.as_str()] {
        let resp = w
            .send(
                Method::GET,
                &format!("/v2/key-value-stores/{id}/records/INPUT?signature={bad}"),
                Who::Anon,
            )
            .await;
        assert_error(resp, 403, "invalid-signature").await;
    }

    // A valid signature of a key with no record: the caller may look, so it is record-not-found.
    let missing = record_signature(&w.secret, "MISSING");
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{id}/records/MISSING?signature={missing}"),
            Who::Anon,
        )
        .await;
    assert_error(resp, 404, "record-not-found").await;
}

#[tokio::test]
async fn a_storage_signature_opens_the_key_listing_and_the_zip() {
    let w = World::new().await;
    let id = &w.id;
    let in_an_hour = now_ms() + 3_600_000;
    let padded = |s: String| {
        let pad = (4 - s.len() % 4) % 4;
        format!("{s}{}", "=".repeat(pad))
    };
    let never = storage_signature(&w.secret, id, 0);
    let hour = storage_signature(&w.secret, id, in_an_hour);
    let mut good = vec![never.clone(), hour.clone(), padded(never.clone())];
    // Make sure the padded form really has padding for at least one of them.
    let with_padding = (0u64..200)
        .map(|e| storage_signature(&w.secret, id, in_an_hour + e))
        .find(|s| s.len() % 4 != 0)
        .unwrap();
    good.push(padded(with_padding.clone()));
    good.push(padded(with_padding).replace('=', "%3D"));

    for sig in &good {
        for who in [Who::Anon, Who::Bob] {
            let resp = w
                .send(
                    Method::GET,
                    &format!("/v2/key-value-stores/{id}/keys?signature={sig}"),
                    who,
                )
                .await;
            assert_eq!(resp.status(), 200, "keys with {sig} as {who:?}");
            let keys = data(resp).await;
            assert_eq!(keys["count"], 2);
            assert_eq!(
                keys["items"][0]["recordPublicUrl"],
                format!(
                    "{}/v2/key-value-stores/{id}/records/INPUT?signature={}",
                    w.srv.url,
                    record_signature(&w.secret, "INPUT")
                ),
                "a storage signature holder gets record URLs that open (docs/api.md)"
            );
            assert!(
                keys.to_string().find(&w.secret).is_none(),
                "the secret itself stays hidden"
            );

            let resp = w
                .send(
                    Method::GET,
                    &format!("/v2/key-value-stores/{id}/records?signature={sig}"),
                    who,
                )
                .await;
            assert_eq!(resp.status(), 200, "zip with {sig} as {who:?}");
            assert_eq!(resp.headers()["content-type"], "application/zip");
            let bytes = resp.bytes().await.unwrap();
            let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
            let mut names: Vec<String> = zip.file_names().map(str::to_owned).collect();
            names.sort();
            assert_eq!(names, ["INPUT", "OTHER"]);
            let mut content = String::new();
            std::io::Read::read_to_string(&mut zip.by_name("INPUT").unwrap(), &mut content)
                .unwrap();
            assert_eq!(content, "hello");
        }
    }

    // The signature names the real id, and works when the store is reached by name too.
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/alice~foo/keys?signature={never}"),
            Who::Anon,
        )
        .await;
    assert_eq!(resp.status(), 200, "keys by name with a storage signature");
    assert_eq!(data(resp).await["count"], 2);

    // It does not open a record or the store object.
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{id}/records/INPUT?signature={never}"),
            Who::Anon,
        )
        .await;
    assert_error(resp, 403, "invalid-signature").await;
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{id}?signature={never}"),
            Who::Anon,
        )
        .await;
    assert_error(resp, 404, "record-or-token-not-found").await;

    // Expired: refused, and the message says so.
    let expired = storage_signature(&w.secret, id, now_ms() - 60_000);
    for what in ["keys", "records"] {
        let resp = w
            .send(
                Method::GET,
                &format!("/v2/key-value-stores/{id}/{what}?signature={expired}"),
                Who::Anon,
            )
            .await;
        let message = assert_error(resp, 403, "invalid-signature").await;
        assert!(
            message.to_lowercase().contains("expire"),
            "message does not mention expiry: {message}"
        );
    }

    // Not verifying: another store's id, another secret, garbage, a tampered expiry.
    let other = w.srv.create_store(&w.alice, Some("other")).await;
    let other_id = other["id"].as_str().unwrap();
    let other_secret = other["urlSigningSecretKey"].as_str().unwrap();
    let tampered = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let decoded = String::from_utf8(engine.decode(&hour).unwrap()).unwrap();
        let parts: Vec<&str> = decoded.splitn(3, '.').collect();
        engine.encode(format!("0.{}.{}", in_an_hour + 1_000_000, parts[2]))
    };
    let bad = [
        storage_signature(&w.secret, other_id, 0),
        storage_signature(other_secret, id, 0),
        "garbage".to_owned(),
        "MC4wLjNUd2ZFRTY1OXVmU05zbVM0N2xS".to_owned(),
        tampered,
    ];
    for sig in &bad {
        let resp = w
            .send(
                Method::GET,
                &format!("/v2/key-value-stores/{id}/keys?signature={sig}"),
                Who::Anon,
            )
            .await;
        assert_error(resp, 403, "invalid-signature").await;
    }
    // The other store's own signature opens it, and only it.
    let resp = w
        .send(
            Method::GET,
            &format!(
                "/v2/key-value-stores/{other_id}/keys?signature={}",
                storage_signature(other_secret, other_id, 0)
            ),
            Who::Anon,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(data(resp).await["count"], 0);
}

#[tokio::test]
async fn public_urls_given_to_the_owner_work_anonymously_as_they_are() {
    let w = World::new().await;
    let anon = reqwest::Client::new();

    let keys_url = w.store["keysPublicUrl"].as_str().unwrap();
    let resp = anon.get(keys_url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{keys_url}");
    let keys = data(resp).await;
    assert_eq!(keys["count"], 2);

    let records_url = w.store["recordsPublicUrl"].as_str().unwrap();
    let resp = anon.get(records_url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{records_url}");
    assert_eq!(resp.headers()["content-type"], "application/zip");

    // The owner's listing: each recordPublicUrl works for anyone, as is.
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{}/keys", w.id),
            Who::Alice,
        )
        .await;
    let keys = data(resp).await;
    let items = keys["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for (item, body) in items.iter().zip(["hello", "other"]) {
        let url = item["recordPublicUrl"].as_str().unwrap();
        assert!(url.contains("?signature="), "{url}");
        let resp = anon.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(resp.text().await.unwrap(), body);
        let resp = anon.head(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "HEAD {url}");
    }

    // Without their signatures the same URLs are closed.
    let plain = keys_url.split('?').next().unwrap();
    let resp = anon.get(plain).send().await.unwrap();
    assert_error(resp, 404, "record-or-token-not-found").await;
}

#[tokio::test]
async fn a_signature_never_opens_a_write() {
    let w = World::new().await;
    let id = &w.id;
    let sig = record_signature(&w.secret, "INPUT");
    let storage = storage_signature(&w.secret, id, 0);
    let cases = [
        (
            Method::PUT,
            format!("/v2/key-value-stores/{id}/records/INPUT?signature={sig}"),
        ),
        (
            Method::POST,
            format!("/v2/key-value-stores/{id}/records/INPUT?signature={sig}"),
        ),
        (
            Method::DELETE,
            format!("/v2/key-value-stores/{id}/records/INPUT?signature={sig}"),
        ),
        (
            Method::PUT,
            format!("/v2/key-value-stores/{id}?signature={storage}"),
        ),
        (
            Method::DELETE,
            format!("/v2/key-value-stores/{id}?signature={storage}"),
        ),
    ];
    for (method, path) in &cases {
        let resp = w
            .srv
            .req(method.clone(), path, None)
            .header("content-type", "text/plain")
            .body("evil")
            .send()
            .await
            .unwrap();
        let ctx = format!("anonymous {method} {path}");
        let got = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(got, 401, "{ctx}: {text}");
        assert!(text.contains("token-not-provided"), "{ctx}: {text}");
    }
    // Bob with a token and a valid signature still cannot read the store, so cannot write.
    for (method, path) in &cases {
        let resp = w
            .srv
            .req(method.clone(), path, Some(&w.bob))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let ctx = format!("bob {method} {path}");
        let got = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(got, 404, "{ctx}: {text}");
        assert!(text.contains("record-or-token-not-found"), "{ctx}: {text}");
    }
    assert_untouched(&w).await;
}

// ---------------------------------------------------------------------------------------------
// Missing things, unknown paths, methods
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_store_is_record_not_found_for_users_and_record_or_token_not_found_for_anonymous()
{
    let w = World::new().await;
    let m = MISSING_ID;
    let reads = [
        format!("/v2/key-value-stores/{m}"),
        format!("/v2/key-value-stores/{m}/keys"),
        format!("/v2/key-value-stores/{m}/records"),
        format!("/v2/key-value-stores/{m}/records/INPUT"),
    ];
    for path in &reads {
        for who in [Who::Alice, Who::Bob] {
            let resp = w.send(Method::GET, path, who).await;
            assert_error(resp, 404, "record-not-found").await;
        }
        let resp = w.send(Method::GET, path, Who::Anon).await;
        assert_error(resp, 404, "record-or-token-not-found").await;
    }
    let resp = w
        .send(
            Method::HEAD,
            &format!("/v2/key-value-stores/{m}/records/INPUT"),
            Who::Alice,
        )
        .await;
    assert_eq!(resp.status(), 404);
    // Writes to a missing store by a user.
    for case in writes(m) {
        let resp = send_write(&w, Who::Alice, &case).await;
        let got = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(got, 404, "{} {}: {text}", case.0, case.1);
        assert!(
            text.contains("\"record-not-found\""),
            "{} {}: {text}",
            case.0,
            case.1
        );
    }
    // By name: the owner learns it is missing; others learn nothing.
    for path in [
        "/v2/key-value-stores/~missing",
        "/v2/key-value-stores/alice~missing",
        "/v2/key-value-stores/~missing/keys",
        "/v2/key-value-stores/alice~missing/records/INPUT",
    ] {
        let resp = w.send(Method::GET, path, Who::Alice).await;
        assert_error(resp, 404, "record-not-found").await;
    }
    for path in [
        "/v2/key-value-stores/alice~missing",
        "/v2/key-value-stores/nobody~foo",
    ] {
        for who in [Who::Bob, Who::Anon] {
            let resp = w.send(Method::GET, path, who).await;
            assert_error(resp, 404, "record-or-token-not-found").await;
        }
    }
    // A missing record in a readable store.
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{}/records/MISSING", w.id),
            Who::Alice,
        )
        .await;
    assert_error(resp, 404, "record-not-found").await;
    w.set_access("ANYONE_WITH_ID_CAN_READ").await;
    for who in [Who::Anon, Who::Bob] {
        let resp = w
            .send(
                Method::GET,
                &format!("/v2/key-value-stores/{}/records/MISSING", w.id),
                who,
            )
            .await;
        assert_error(resp, 404, "record-not-found").await;
    }
    // A deleted store is missing at once.
    let resp = w
        .send(
            Method::DELETE,
            &format!("/v2/key-value-stores/{}", w.id),
            Who::Alice,
        )
        .await;
    assert_eq!(resp.status(), 204);
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{}", w.id),
            Who::Alice,
        )
        .await;
    assert_error(resp, 404, "record-not-found").await;
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{}", w.id),
            Who::Anon,
        )
        .await;
    assert_error(resp, 404, "record-or-token-not-found").await;
}

#[tokio::test]
async fn unknown_paths_are_page_not_found_and_wrong_methods_405() {
    let w = World::new().await;
    let id = &w.id;
    for path in [
        "/ui".to_owned(),
        "/v2".to_owned(),
        "/v2/nothing".to_owned(),
        "/v1/key-value-stores".to_owned(),
        format!("/v2/key-value-stores/{id}/nothing"),
        format!("/v2/key-value-stores/{id}/records/INPUT/more"),
    ] {
        for who in [Who::Alice, Who::Anon] {
            let resp = w.send(Method::GET, &path, who).await;
            assert_error(resp, 404, "page-not-found").await;
        }
    }
    let wrong = [
        (
            Method::PATCH,
            format!("/v2/key-value-stores/{id}/records/INPUT"),
        ),
        (Method::DELETE, "/v2/key-value-stores".to_owned()),
        (Method::PUT, "/v2/key-value-stores".to_owned()),
        (Method::POST, format!("/v2/key-value-stores/{id}")),
        (Method::PATCH, format!("/v2/key-value-stores/{id}")),
        (Method::DELETE, format!("/v2/key-value-stores/{id}/keys")),
        (Method::POST, format!("/v2/key-value-stores/{id}/records")),
    ];
    for (method, path) in &wrong {
        for who in [Who::Alice, Who::Anon] {
            let resp = w.send(method.clone(), path, who).await;
            let message = assert_error(resp, 405, "method-not-allowed").await;
            assert!(message.contains("GET"), "{method} {path}: {message}");
        }
    }
    assert_untouched(&w).await;
}

#[tokio::test]
async fn method_override_is_off_by_default() {
    let w = World::new().await;
    let id = &w.id;
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{id}/records/INPUT?method=DELETE"),
            Who::Alice,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello");
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{id}?method=DELETE&token={}", w.alice),
            Who::Anon,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(data(resp).await["id"], id.as_str());
    let resp = w
        .send(
            Method::GET,
            "/v2/key-value-stores?name=made&method=POST",
            Who::Alice,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(data(resp).await["total"], 1, "no store was created");
    assert_untouched(&w).await;
}

#[tokio::test]
async fn method_override_works_when_enabled() {
    let srv = TestServer::start_with(|c| c.allow_method_override = true).await;
    let w = World::with(srv).await;
    let id = &w.id;

    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{id}/records/OTHER?method=DELETE"),
            Who::Alice,
        )
        .await;
    assert_eq!(resp.status(), 204);
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{id}/records/OTHER"),
            Who::Alice,
        )
        .await;
    assert_error(resp, 404, "record-not-found").await;

    // The override does not bypass access: anonymous and Bob are refused as for a real DELETE.
    let path = format!("/v2/key-value-stores/{id}/records/INPUT?method=DELETE");
    let resp = w.send(Method::GET, &path, Who::Anon).await;
    assert_error(resp, 401, "token-not-provided").await;
    let resp = w.send(Method::GET, &path, Who::Bob).await;
    assert_error(resp, 404, "record-or-token-not-found").await;

    let resp = w
        .send(
            Method::GET,
            "/v2/key-value-stores?name=made&method=POST",
            Who::Alice,
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(data(resp).await["name"], "made");

    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{id}?method=DELETE&token={}", w.alice),
            Who::Anon,
        )
        .await;
    assert_eq!(resp.status(), 204);
    let resp = w
        .send(
            Method::GET,
            &format!("/v2/key-value-stores/{id}"),
            Who::Alice,
        )
        .await;
    assert_error(resp, 404, "record-not-found").await;
}

/// A record key that spells a storage signature's message (`0.<expiresAt>.<storeId>`) has the same
/// HMAC as that storage signature: its record signature must be neither handed out nor accepted,
/// or a shared record URL (or a 14-day `keysPublicUrl`) becomes a never-expiring key to the store.
#[tokio::test]
async fn a_record_signature_never_becomes_a_storage_signature() {
    let w = World::new().await;
    let srv = &w.srv;
    let forever = format!("0.0.{}", w.id);
    let later = format!("0.{}.{}", now_ms() + 3_600_000, w.id);
    for key in [&forever, &later] {
        srv.put_record(&w.alice, &w.id, key, "text/plain", "spells")
            .await;
    }
    // The owner reads such records as any other.
    let resp = srv
        .get(
            &format!("/v2/key-value-stores/{}/records/{forever}", w.id),
            &w.alice,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "spells");

    // Neither the owner's listing nor one opened by a 14-day storage signature hands out their
    // record signatures; the other records stay signed.
    let fourteen_days = storage_signature(&w.secret, &w.id, now_ms() + 14 * 86_400_000);
    for (token, query) in [
        (Some(w.alice.as_str()), String::new()),
        (None, format!("?signature={fourteen_days}")),
    ] {
        let resp = srv
            .req(
                Method::GET,
                &format!("/v2/key-value-stores/{}/keys{query}", w.id),
                token,
            )
            .send()
            .await
            .unwrap();
        let listing = data(resp).await;
        let items = listing["items"].as_array().unwrap();
        assert_eq!(items.len(), 4, "{listing}");
        for item in items {
            let url = item["recordPublicUrl"].as_str().unwrap();
            let key = item["key"].as_str().unwrap();
            let spells = key == forever || key == later;
            assert_eq!(!url.contains("signature="), spells, "{key}: {url}");
        }
    }

    // The record signature of such a key, made with the secret, opens nothing...
    for key in [&forever, &later] {
        let resp = srv
            .req(
                Method::GET,
                &format!(
                    "/v2/key-value-stores/{}/records/{key}?signature={}",
                    w.id,
                    record_signature(&w.secret, key)
                ),
                None,
            )
            .send()
            .await
            .unwrap();
        assert_error(resp, 403, "invalid-signature").await;
    }
    // ...and a storage signature's HMAC does not open the record its message spells.
    let hmac = |signature: &str| {
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .unwrap();
        String::from_utf8(decoded)
            .unwrap()
            .rsplit_once('.')
            .unwrap()
            .1
            .to_owned()
    };
    let never = storage_signature(&w.secret, &w.id, 0);
    let resp = srv
        .req(
            Method::GET,
            &format!(
                "/v2/key-value-stores/{}/records/{forever}?signature={}",
                w.id,
                hmac(&never)
            ),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "invalid-signature").await;
}
