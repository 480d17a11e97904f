//! HTTP tests of `/v2/key-value-stores` and `/v2/key-value-stores/{storeId}`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_error, data, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

fn is_timestamp(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    // 2019-12-12T07:34:14.202Z
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn get_or_create_returns_201_then_200_with_every_field() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let resp = srv
        .req(
            Method::POST,
            "/v2/key-value-stores?name=my-store",
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let store = data(resp).await;
    let id = store["id"].as_str().unwrap();
    assert_eq!(id.len(), 17);
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(location, format!("{}/v2/key-value-stores/{id}", srv.url));
    assert_eq!(store["name"], "my-store");
    assert_eq!(store["username"], "alice");
    assert_eq!(store["userId"].as_str().unwrap().len(), 17);
    for field in ["createdAt", "modifiedAt", "accessedAt"] {
        assert!(is_timestamp(&store[field]), "{field}: {}", store[field]);
    }
    assert!(store["actId"].is_null() && store["actRunId"].is_null());
    assert_eq!(store["generalAccess"], "FOLLOW_USER_SETTING");
    assert!(store["urlSigningSecretKey"].as_str().unwrap().len() >= 16);
    // The store in kvstore's console (the storage browser), as an absolute URL.
    assert_eq!(store["consoleUrl"], format!("{}/#store={id}", srv.url));
    let keys_url = store["keysPublicUrl"].as_str().unwrap();
    assert!(keys_url.starts_with(&format!(
        "{}/v2/key-value-stores/{id}/keys?signature=",
        srv.url
    )));
    let records_url = store["recordsPublicUrl"].as_str().unwrap();
    assert!(records_url.starts_with(&format!("{}/v2/key-value-stores/{id}/records", srv.url)));
    let stats = &store["stats"];
    for field in [
        "readCount",
        "writeCount",
        "deleteCount",
        "listCount",
        "storageBytes",
        "s3StorageBytes",
    ] {
        assert_eq!(stats[field], 0, "{field}");
    }
    assert!(store["schema"].is_null());

    // The same name again: the same store, 200, nothing created.
    let resp = srv
        .req(
            Method::POST,
            "/v2/key-value-stores?name=my-store",
            Some(&alice),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(data(resp).await["id"], id);

    // Without a name: always a new unnamed store.
    let u1 = srv.create_store(&alice, None).await;
    let u2 = srv.create_store(&alice, None).await;
    assert!(u1["name"].is_null());
    assert_ne!(u1["id"], u2["id"]);
}

#[tokio::test]
async fn create_accepts_empty_json_and_compressed_bodies_with_schema() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let schema = json!({
        "actorKeyValueStoreSchemaVersion": 1,
        "collections": {"shots": {"keyPrefix": "shot-", "contentTypes": ["image/png"]}}
    });
    let body = serde_json::to_vec(&json!({ "schema": schema })).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &body).unwrap();
    let resp = srv
        .req(
            Method::POST,
            "/v2/key-value-stores?name=with-schema",
            Some(&alice),
        )
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(data(resp).await["schema"], schema);

    let mut br = Vec::new();
    brotli::BrotliCompress(&mut &b"{}"[..], &mut br, &Default::default()).unwrap();
    let resp = srv
        .req(Method::POST, "/v2/key-value-stores?name=br", Some(&alice))
        .header("content-encoding", "br")
        .body(br)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    for (body, error_type) in [
        ("[1,2]", "invalid-input"),
        ("{not json", "invalid-input"),
        (r#"{"schema": 5}"#, "store-schema-invalid"),
        (
            r#"{"schema": {"collections": {"x": {}}}}"#,
            "store-schema-invalid",
        ),
    ] {
        let resp = srv
            .req(Method::POST, "/v2/key-value-stores?name=bad", Some(&alice))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, error_type).await;
    }
    let resp = srv
        .req(Method::POST, "/v2/key-value-stores?name=x", Some(&alice))
        .header("content-encoding", "compress")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(resp, 415, "unsupported-content-encoding").await;
}

#[tokio::test]
async fn invalid_store_names_are_refused() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let too_long = "a".repeat(64);
    for name in ["-a", "a-", "a_b", "a.b", "a%7Eb", too_long.as_str()] {
        let resp = srv
            .req(
                Method::POST,
                &format!("/v2/key-value-stores?name={name}"),
                Some(&alice),
            )
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid-parameter").await;
    }
    let ok = "a".repeat(63);
    let resp = srv
        .req(
            Method::POST,
            &format!("/v2/key-value-stores?name={ok}"),
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn list_pages_sorts_and_filters() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let mut named = Vec::new();
    for i in 0..5 {
        let s = srv.create_store(&alice, Some(&format!("s{i}"))).await;
        named.push(s["id"].as_str().unwrap().to_owned());
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let unnamed = srv.create_store(&alice, None).await;
    srv.create_store(&bob, Some("bobs")).await;

    let list = |q: &str| {
        let path = format!("/v2/key-value-stores{q}");
        let req = srv.get(&path, &alice);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            data(resp).await
        }
    };
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let all = list("").await;
    assert_eq!(all["total"], 5, "unnamed stores are hidden by default");
    assert_eq!(all["count"], 5);
    assert_eq!(all["offset"], 0);
    assert_eq!(all["limit"], 1000);
    assert_eq!(all["desc"], false);
    assert_eq!(ids(&all), named);
    for item in all["items"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        assert_eq!(item["consoleUrl"], format!("{}/#store={id}", srv.url));
    }

    let with_unnamed = list("?unnamed=1").await;
    assert_eq!(with_unnamed["total"], 6);
    assert!(ids(&with_unnamed).contains(&unnamed["id"].as_str().unwrap().to_owned()));
    assert_eq!(list("?unnamed=true").await["total"], 6);
    assert_eq!(list("?unnamed=false").await["total"], 5);

    let desc = list("?desc=1").await;
    let mut reversed = named.clone();
    reversed.reverse();
    assert_eq!(ids(&desc), reversed);
    assert_eq!(desc["desc"], true);

    let page = list("?offset=1&limit=2").await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["count"], 2);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 1);
    assert_eq!(ids(&page), named[1..3]);
    assert_eq!(list("?limit=0").await["limit"], 1000);
    assert_eq!(list("?limit=100000").await["limit"], 1000);
    // Apify types offset and limit as doubles: a fraction is truncated, the echo is an integer.
    for q in [
        "?offset=1.0&limit=2.0",
        "?offset=1.9&limit=2.5",
        "?offset=1e0&limit=2e0",
    ] {
        let page = list(q).await;
        assert_eq!(page["offset"], json!(1), "{q}");
        assert_eq!(page["limit"], json!(2), "{q}");
        assert_eq!(ids(&page), named[1..3], "{q}");
    }
    assert_eq!(list("?limit=1e2").await["limit"], json!(100));
    assert_eq!(list("?limit=0.5").await["limit"], json!(1000));
    // Echoed numbers stay exact for a JSON parser that uses doubles: 2^53 - 1 at most.
    for q in [
        "?offset=99999999999999999999",
        "?offset=1e300",
        "?offset=9007199254740993",
    ] {
        let page = list(q).await;
        assert_eq!(page["offset"], json!(9_007_199_254_740_991_u64), "{q}");
        assert_eq!(page["count"], 0, "{q}");
    }
    assert_eq!(list("?offset=10").await["count"], 0);
    assert_eq!(list("?ownership=ownedByMe").await["total"], 5);
    assert_eq!(list("?ownership=sharedWithMe").await["total"], 0);

    for bad in [
        "?limit=-1",
        "?limit=abc",
        "?offset=-5",
        "?desc=maybe",
        "?ownership=everyone",
        "?limit=1&limit=2",
        "?limit=NaN",
        "?offset=inf",
        "?offset=Infinity",
        "?limit=-0.5",
        "?offset=-1e2",
        "?limit=1e",
        "?limit=0x10",
    ] {
        let resp = srv
            .get(&format!("/v2/key-value-stores{bad}"), &alice)
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid-parameter").await;
    }
    let resp = srv
        .req(Method::GET, "/v2/key-value-stores", None)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "token-not-provided").await;
}

#[tokio::test]
async fn get_by_id_own_name_and_username_name() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let store = srv.create_store(&alice, Some("named")).await;
    let id = store["id"].as_str().unwrap();
    for r in [id.to_owned(), "~named".to_owned(), "alice~named".to_owned()] {
        let resp = srv
            .get(&format!("/v2/key-value-stores/{r}"), &alice)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{r}");
        let got = data(resp).await;
        assert_eq!(got["id"], id);
        assert_eq!(got["consoleUrl"], format!("{}/#store={id}", srv.url));
    }
    for missing in ["AAAAAAAAAAAAAAAAA", "~nope", "alice~nope", "not-an-id"] {
        let resp = srv
            .get(&format!("/v2/key-value-stores/{missing}"), &alice)
            .send()
            .await
            .unwrap();
        assert_error(resp, 404, "record-not-found").await;
    }
}

#[tokio::test]
async fn update_renames_unnames_and_sets_general_access() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let store = srv.create_store(&alice, Some("old")).await;
    let id = store["id"].as_str().unwrap().to_owned();
    srv.create_store(&alice, Some("taken")).await;
    let put = |body: Value| {
        srv.req(
            Method::PUT,
            &format!("/v2/key-value-stores/{id}"),
            Some(&alice),
        )
        .json(&body)
        .send()
    };

    let resp = put(json!({"name": "new-name"})).await.unwrap();
    assert_eq!(resp.status(), 200);
    let updated = data(resp).await;
    assert_eq!(updated["name"], "new-name");
    assert_eq!(updated["consoleUrl"], format!("{}/#store={id}", srv.url));
    assert!(updated["modifiedAt"].as_str().unwrap() >= store["modifiedAt"].as_str().unwrap());
    let resp = srv
        .get("/v2/key-value-stores/~old", &alice)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-not-found").await;
    let resp = srv
        .get("/v2/key-value-stores/~new-name", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(data(resp).await["id"], id.as_str());

    let msg = assert_error(
        put(json!({"name": "taken"})).await.unwrap(),
        409,
        "store-name-not-unique",
    )
    .await;
    assert!(msg.contains("taken"), "{msg}");
    assert_error(
        put(json!({"name": "bad_name"})).await.unwrap(),
        400,
        "invalid-input",
    )
    .await;
    assert_error(put(json!({"name": 5})).await.unwrap(), 400, "invalid-input").await;
    assert_error(
        put(json!({"generalAccess": "EVERYONE"})).await.unwrap(),
        400,
        "invalid-input",
    )
    .await;

    // A title (apify-client 3.4's `update(title=…)`): null until set, kept, listed, removable.
    assert_eq!(store.get("title"), Some(&Value::Null), "{store}");
    let resp = put(json!({"generalAccess": "ANYONE_WITH_ID_CAN_READ", "title": "Crawl – 2026"}))
        .await
        .unwrap();
    let updated = data(resp).await;
    assert_eq!(updated["generalAccess"], "ANYONE_WITH_ID_CAN_READ");
    assert_eq!(updated["name"], "new-name", "a missing name stays as it is");
    assert_eq!(updated["title"], "Crawl – 2026");
    let got = data(
        srv.get(&format!("/v2/key-value-stores/{id}"), &alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got["title"], "Crawl – 2026");
    let listed = data(
        srv.get("/v2/key-value-stores", &alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let item = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(item["title"], "Crawl – 2026");
    let resp = put(json!({"name": "new-name"})).await.unwrap();
    assert_eq!(
        data(resp).await["title"],
        "Crawl – 2026",
        "a missing title stays"
    );
    for bad in [json!({"title": 5}), json!({"title": "t".repeat(1025)})] {
        assert_error(put(bad).await.unwrap(), 400, "invalid-input").await;
    }
    let resp = put(json!({"title": null})).await.unwrap();
    assert_eq!(data(resp).await.get("title"), Some(&Value::Null));

    let resp = put(json!({"name": null})).await.unwrap();
    assert!(data(resp).await["name"].is_null());
    let listed = data(
        srv.get("/v2/key-value-stores", &alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        listed["total"], 1,
        "the unnamed store left the default listing"
    );

    let resp = srv
        .req(
            Method::PUT,
            "/v2/key-value-stores/AAAAAAAAAAAAAAAAA",
            Some(&alice),
        )
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-not-found").await;
}

#[tokio::test]
async fn delete_makes_the_store_and_its_records_disappear() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let store = srv.create_store(&alice, Some("doomed")).await;
    let id = store["id"].as_str().unwrap();
    srv.put_record(&alice, id, "k", "text/plain", "v").await;
    let resp = srv
        .req(
            Method::DELETE,
            &format!("/v2/key-value-stores/{id}"),
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.text().await.unwrap().is_empty());
    for path in [
        format!("/v2/key-value-stores/{id}"),
        format!("/v2/key-value-stores/{id}/records/k"),
        format!("/v2/key-value-stores/{id}/keys"),
    ] {
        let resp = srv.get(&path, &alice).send().await.unwrap();
        assert_error(resp, 404, "record-not-found").await;
    }
    let resp = srv
        .req(
            Method::DELETE,
            &format!("/v2/key-value-stores/{id}"),
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-not-found").await;
    // The name is free again.
    let resp = srv
        .req(
            Method::POST,
            "/v2/key-value-stores?name=doomed",
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn stats_follow_writes_reads_and_lists() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let store = srv.create_store(&alice, Some("stats")).await;
    let id = store["id"].as_str().unwrap();
    srv.put_record(&alice, id, "a", "text/plain", "12345").await;
    srv.put_record(&alice, id, "b", "text/plain", "123").await;
    srv.put_record(&alice, id, "a", "text/plain", "1").await;
    srv.req(
        Method::DELETE,
        &format!("/v2/key-value-stores/{id}/records/b"),
        Some(&alice),
    )
    .send()
    .await
    .unwrap();
    srv.get(&format!("/v2/key-value-stores/{id}/records/a"), &alice)
        .send()
        .await
        .unwrap();
    srv.get(&format!("/v2/key-value-stores/{id}/keys"), &alice)
        .send()
        .await
        .unwrap();
    let got = data(
        srv.get(&format!("/v2/key-value-stores/{id}"), &alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let stats = &got["stats"];
    assert_eq!(stats["writeCount"], 3);
    assert_eq!(stats["deleteCount"], 1);
    assert_eq!(stats["readCount"], 1);
    assert_eq!(stats["listCount"], 1);
    assert_eq!(stats["storageBytes"], 1);
    assert_eq!(stats["s3StorageBytes"], 1);
    assert_eq!(stats["recordCount"], 1);
    assert!(got["modifiedAt"].as_str().unwrap() >= store["modifiedAt"].as_str().unwrap());
}

#[tokio::test]
async fn unknown_paths_and_methods_use_the_envelope() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let resp = srv.get("/v2/nothing-here", &alice).send().await.unwrap();
    assert_error(resp, 404, "page-not-found").await;
    let resp = srv
        .req(Method::DELETE, "/v2/key-value-stores", Some(&alice))
        .send()
        .await
        .unwrap();
    let msg = assert_error(resp, 405, "method-not-allowed").await;
    assert!(msg.contains("GET, POST"), "{msg}");
    let resp = srv
        .req(
            Method::PATCH,
            "/v2/key-value-stores/AAAAAAAAAAAAAAAAA",
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn unnamed_stores_expire_after_the_retention_period_when_it_is_set() {
    let srv = TestServer::start_with(|c| {
        c.unnamed_retention = Some(std::time::Duration::from_secs(2));
    })
    .await;
    let alice = srv.user("alice").await;
    let idle = srv.create_store(&alice, None).await;
    let busy = srv.create_store(&alice, None).await;
    let named = srv.create_store(&alice, Some("kept")).await;
    let store_url = |s: &Value| format!("/v2/key-value-stores/{}", s["id"].as_str().unwrap());
    srv.put_record(
        &alice,
        busy["id"].as_str().unwrap(),
        "k",
        "text/plain",
        b"v".to_vec(),
    )
    .await;

    // Keep reading `busy` while `idle` stays untouched for well over the retention period.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    while std::time::Instant::now() < deadline {
        let resp = srv
            .get(&format!("{}/records/k", store_url(&busy)), &alice)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "a store in use must not expire");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let gone = srv.get(&store_url(&idle), &alice).send().await.unwrap();
    assert_error(gone, 404, "record-not-found").await;
    for kept in [&busy, &named] {
        let resp = srv.get(&store_url(kept), &alice).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn unnamed_stores_are_kept_without_a_retention_period() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let idle = srv.create_store(&alice, None).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let url = format!("/v2/key-value-stores/{}", idle["id"].as_str().unwrap());
    assert_eq!(srv.get(&url, &alice).send().await.unwrap().status(), 200);
}
