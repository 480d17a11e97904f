//! Operational endpoints (liveness, readiness), `GET /v2/users/me` and `/v2/users/{userId}`, and CORS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_error, data, TestServer};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn health_and_readiness() {
    let srv = TestServer::start().await;
    for path in ["/healthz", "/readyz"] {
        let resp = srv.req(Method::GET, path, None).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "ok");
    }
}

#[tokio::test]
async fn users_me_describes_the_caller() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let me = data(srv.get("/v2/users/me", &alice).send().await.unwrap()).await;
    assert_eq!(me["username"], "alice");
    assert_eq!(me["id"].as_str().unwrap().len(), 17);
    assert_eq!(me["isAdmin"], false);
    let resp = srv
        .req(Method::GET, "/v2/users/me", None)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "token-not-provided").await;
    let resp = srv.get("/v2/users/me", "wrong").send().await.unwrap();
    assert_error(resp, 401, "invalid-token").await;
}

/// `apify kvs info` asks `GET /v2/users/{store.userId}` for the owner's username.
#[tokio::test]
async fn users_get_shows_public_data_by_id_and_only_the_callers_own_username() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let alice_id = data(srv.get("/v2/users/me", &alice).send().await.unwrap()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // By id: any caller with a token (the id comes from a store object that names the owner anyway).
    for token in [&alice, &bob] {
        let user = data(
            srv.get(&format!("/v2/users/{alice_id}"), token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(user, json!({ "username": "alice", "profile": {} }));
    }
    // By username: only oneself; another user's name is as absent as a name nobody has.
    let me = data(srv.get("/v2/users/alice", &alice).send().await.unwrap()).await;
    assert_eq!(me["username"], "alice");
    for path in [
        "/v2/users/alice",
        "/v2/users/nobody",
        "/v2/users/AAAAAAAAAAAAAAAAA",
    ] {
        let resp = srv.get(path, &bob).send().await.unwrap();
        assert_error(resp, 404, "record-not-found").await;
    }

    let resp = srv
        .req(Method::GET, &format!("/v2/users/{alice_id}"), None)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "token-not-provided").await;
    let resp = srv
        .get(&format!("/v2/users/{alice_id}"), "wrong")
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "invalid-token").await;
    let resp = srv
        .req(
            Method::DELETE,
            &format!("/v2/users/{alice_id}"),
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn cors_allows_any_origin_by_default() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let resp = srv
        .req(Method::OPTIONS, "/v2/key-value-stores/~x/records/a", None)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let resp = srv
        .get("/v2/key-value-stores", &alice)
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn cors_origins_can_be_restricted() {
    let srv = TestServer::start_with(|c| c.cors_origins = vec!["https://ok.example".into()]).await;
    let preflight = |origin: &'static str| {
        srv.req(Method::OPTIONS, "/v2/key-value-stores", None)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let ok = preflight("https://ok.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://ok.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn metrics_count_requests_by_route_without_query_strings() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    srv.create_store(&alice, Some("m")).await;
    let resp = srv
        .req(
            Method::GET,
            &format!("/v2/key-value-stores/~m/keys?token={alice}"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = srv.req(Method::GET, "/metrics", None).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("kvstore_http_requests_total")
                && l.contains("route=\"/v2/key-value-stores/{store}/keys\"")
                && l.contains("status=\"200\"")),
        "{text}"
    );
    assert!(text.contains("kvstore_http_request_duration_seconds_bucket"));
    assert!(text.contains("kvstore_open_connections"));
    assert!(!text.contains(&alice), "a token leaked into the metrics");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let srv = TestServer::start().await;
    let resp = srv.req(Method::GET, "/healthz", None).send().await.unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 16);
    let resp = srv
        .req(Method::GET, "/v2/nowhere", None)
        .header("x-request-id", "trace-abc_123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-abc_123");
    let resp = srv
        .req(Method::GET, "/healthz", None)
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-request-id"], "bad id with spaces");
}
