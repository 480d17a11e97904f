//! HTTP tests of the record endpoints: `GET`/`HEAD`/`PUT`/`POST`/`DELETE
//! /v2/key-value-stores/{storeId}/records/{key}` and the ZIP download of
//! `GET /v2/key-value-stores/{storeId}/records`, against a real server.

// Test code: a failed unwrap is a failed test. (`allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers of an integration-test crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use common::{assert_error, data, TestServer};
use rand::{Rng, SeedableRng};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A store id that has the right shape but names no store.
const MISSING_STORE: &str = "AAAAAAAAAAAAAAAAA";

async fn setup() -> (TestServer, String, String) {
    let srv = TestServer::start().await;
    let token = srv.user("alice").await;
    let store = srv.create_store(&token, Some("recs")).await;
    let id = store["id"].as_str().expect("store id").to_owned();
    (srv, token, id)
}

fn rec(store: &str, key: &str) -> String {
    format!("/v2/key-value-stores/{store}/records/{key}")
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

async fn get_record(srv: &TestServer, token: &str, store: &str, key: &str) -> Response {
    srv.get(&rec(store, key), token).send().await.unwrap()
}

/// Asserts a successful GET of a record: the exact bytes and the exact stored content type.
async fn assert_record(
    srv: &TestServer,
    token: &str,
    store: &str,
    key: &str,
    content_type: &str,
    body: &[u8],
) {
    let resp = get_record(srv, token, store, key).await;
    assert_eq!(resp.status(), 200, "GET {key}");
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some(content_type),
        "content-type of {key}"
    );
    assert_eq!(
        header(&resp, "content-length"),
        Some(body.len().to_string()),
        "content-length of {key}"
    );
    let encoding = header(&resp, "content-encoding");
    assert!(
        encoding.is_none() || encoding.as_deref() == Some("identity"),
        "no Accept-Encoding was sent, yet the body came with Content-Encoding {encoding:?}"
    );
    let got = resp.bytes().await.unwrap();
    assert!(
        got.as_ref() == body,
        "body of {key}: got {} bytes, expected {} bytes",
        got.len(),
        body.len()
    );
}

async fn put_raw(
    srv: &TestServer,
    token: &str,
    store: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut rb = srv.req(Method::PUT, &rec(store, key), Some(token));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.body(body).send().await.unwrap()
}

async fn store_object(srv: &TestServer, token: &str, store: &str) -> Value {
    let resp = srv
        .get(&format!("/v2/key-value-stores/{store}"), token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    data(resp).await
}

async fn stats(srv: &TestServer, token: &str, store: &str) -> Value {
    store_object(srv, token, store).await["stats"].clone()
}

/// `{"key": size}` of the whole key listing (one page is enough in these tests).
async fn key_sizes(srv: &TestServer, token: &str, store: &str) -> BTreeMap<String, u64> {
    let resp = srv
        .get(&format!("/v2/key-value-stores/{store}/keys"), token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let d = data(resp).await;
    assert_eq!(d["isTruncated"], false);
    d["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["key"].as_str().expect("key").to_owned(),
                i["size"].as_u64().expect("size"),
            )
        })
        .collect()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn brotli(b: &[u8]) -> Vec<u8> {
    let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 9, 22);
    w.write_all(b).unwrap();
    w.flush().unwrap();
    w.into_inner()
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// A response read from a raw socket: status, lower-cased header block, body.
struct RawResponse {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

/// Sends one HTTP/1.1 request over a plain socket, with the request target exactly as given.
/// `reqwest` (through the `url` crate) removes `.`/`..` path segments, also the percent-encoded
/// `%2E`/`%2E%2E` forms, so those keys can only be sent this way.
async fn raw_request(
    srv: &TestServer,
    method: &str,
    target: &str,
    token: &str,
    body: &[u8],
) -> RawResponse {
    let addr = srv.url.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    sock.read_to_end(&mut buf).await.unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of the response head");
    let head = String::from_utf8(buf[..split].to_vec()).unwrap();
    let mut body = buf[split + 4..].to_vec();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .expect("status code")
        .parse()
        .unwrap();
    let headers = head.to_ascii_lowercase();
    if headers.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size_line = std::str::from_utf8(&rest[..eol]).unwrap();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .expect("chunk size");
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn assert_raw_error(resp: &RawResponse, status: u16, error_type: &str, what: &str) {
    let text = String::from_utf8_lossy(&resp.body);
    assert_eq!(resp.status, status, "{what}: status (body: {text})");
    let body: Value =
        serde_json::from_slice(&resp.body).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
    assert_eq!(body["error"]["type"], error_type, "{what}: {text}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a valid ZIP");
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let name = f.name().to_owned();
        let mut content = Vec::new();
        f.read_to_end(&mut content).unwrap();
        assert!(
            files.insert(name.clone(), content).is_none(),
            "duplicate file {name} in the ZIP"
        );
    }
    files
}

// ---------------------------------------------------------------------------------------------
// Round trips and content types

#[tokio::test]
async fn json_record_round_trips_with_its_content_type() {
    let (srv, token, id) = setup().await;
    let body = br#"{"hello":"w\u00f6rld","n":[1,2.5,null,true],"nested":{"a":"\u00fc"}}"#;
    let ct = "application/json; charset=utf-8";
    srv.put_record(&token, &id, "INPUT", ct, body.to_vec())
        .await;
    assert_record(&srv, &token, &id, "INPUT", ct, body).await;

    // The pretty-printed JSON the JS client sends, with plain `application/json`.
    let pretty = "{\n  \"a\": 1,\n  \"b\": \"ž\"\n}".as_bytes();
    srv.put_record(&token, &id, "OUTPUT", "application/json", pretty.to_vec())
        .await;
    assert_record(&srv, &token, &id, "OUTPUT", "application/json", pretty).await;
}

#[tokio::test]
async fn text_record_round_trips_with_its_charset() {
    let (srv, token, id) = setup().await;
    let body = "Příliš žluťoučký kůň úpěl ďábelské ódy — ✓\nline 2\r\n".as_bytes();
    let ct = "text/plain; charset=utf-8";
    srv.put_record(&token, &id, "text", ct, body.to_vec()).await;
    assert_record(&srv, &token, &id, "text", ct, body).await;

    // Other content types are stored and echoed as given, byte for byte.
    for (key, ct) in [
        ("html", "text/html; charset=utf-8"),
        ("png", "image/png"),
        ("custom", "application/x-my-type; version=2"),
    ] {
        srv.put_record(&token, &id, key, ct, b"<p>x</p>".to_vec())
            .await;
        assert_record(&srv, &token, &id, key, ct, b"<p>x</p>").await;
    }
}

#[tokio::test]
async fn binary_record_keeps_all_256_byte_values() {
    let (srv, token, id) = setup().await;
    let mut body: Vec<u8> = (0..=255u8).collect();
    body.extend((0..=255u8).rev());
    let ct = "application/octet-stream";
    srv.put_record(&token, &id, "bin", ct, body.clone()).await;
    assert_record(&srv, &token, &id, "bin", ct, &body).await;
    assert_eq!(key_sizes(&srv, &token, &id).await["bin"], 512);
}

#[tokio::test]
async fn missing_content_type_is_stored_as_octet_stream() {
    let (srv, token, id) = setup().await;
    let resp = put_raw(&srv, &token, &id, "noct", &[], b"abc".to_vec()).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    assert_record(
        &srv,
        &token,
        &id,
        "noct",
        "application/octet-stream",
        b"abc",
    )
    .await;
}

#[tokio::test]
async fn empty_body_is_an_empty_record() {
    let (srv, token, id) = setup().await;
    srv.put_record(
        &token,
        &id,
        "empty",
        "text/plain; charset=utf-8",
        Vec::new(),
    )
    .await;
    assert_record(&srv, &token, &id, "empty", "text/plain; charset=utf-8", b"").await;
    let head = srv
        .req(Method::HEAD, &rec(&id, "empty"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length").as_deref(), Some("0"));
    assert_eq!(key_sizes(&srv, &token, &id).await["empty"], 0);
    let s = stats(&srv, &token, &id).await;
    assert_eq!(s["recordCount"], 1);
    assert_eq!(s["storageBytes"], 0);
}

#[tokio::test]
async fn overwrite_replaces_the_body_and_updates_the_stats() {
    let (srv, token, id) = setup().await;
    let s = stats(&srv, &token, &id).await;
    assert_eq!(s["storageBytes"], 0);
    assert_eq!(s["recordCount"], 0);
    assert_eq!(s["writeCount"], 0);
    assert_eq!(s["deleteCount"], 0);
    let created = store_object(&srv, &token, &id).await;
    let modified_at = |store: &Value| store["modifiedAt"].as_str().expect("modifiedAt").to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    srv.put_record(&token, &id, "a", "text/plain", b"abc".to_vec())
        .await;
    // A write moves modifiedAt at once (ISO-8601 strings of one format compare in time order).
    let after_put = store_object(&srv, &token, &id).await;
    assert!(
        modified_at(&after_put) > modified_at(&created),
        "modifiedAt {} not after {}",
        modified_at(&after_put),
        modified_at(&created)
    );
    let s = after_put["stats"].clone();
    assert_eq!(s["storageBytes"], 3);
    assert_eq!(s["s3StorageBytes"], 3);
    assert_eq!(s["recordCount"], 1);
    assert_eq!(s["writeCount"], 1);

    srv.put_record(
        &token,
        &id,
        "a",
        "application/json",
        b"[1,2,3,4,5]".to_vec(),
    )
    .await;
    assert_record(&srv, &token, &id, "a", "application/json", b"[1,2,3,4,5]").await;
    let s = stats(&srv, &token, &id).await;
    assert_eq!(
        s["storageBytes"], 11,
        "overwrite must replace, not add: {s}"
    );
    assert_eq!(s["s3StorageBytes"], 11);
    assert_eq!(s["recordCount"], 1);
    assert_eq!(s["writeCount"], 2);
    assert_eq!(key_sizes(&srv, &token, &id).await["a"], 11);

    srv.put_record(&token, &id, "b", "text/plain", b"12345".to_vec())
        .await;
    let s = stats(&srv, &token, &id).await;
    assert_eq!(s["storageBytes"], 16);
    assert_eq!(s["recordCount"], 2);
    assert_eq!(s["writeCount"], 3);

    // A shorter overwrite shrinks the bytes.
    srv.put_record(&token, &id, "a", "text/plain", b"x".to_vec())
        .await;
    let s = stats(&srv, &token, &id).await;
    assert_eq!(s["storageBytes"], 6);
    assert_eq!(s["recordCount"], 2);
    assert_eq!(s["writeCount"], 4);

    let before_delete = store_object(&srv, &token, &id).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let resp = srv
        .req(Method::DELETE, &rec(&id, "a"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let after_delete = store_object(&srv, &token, &id).await;
    assert!(modified_at(&after_delete) > modified_at(&before_delete));
    let s = after_delete["stats"].clone();
    assert_eq!(s["storageBytes"], 5);
    assert_eq!(s["recordCount"], 1);
    assert_eq!(s["writeCount"], 4);
    assert_eq!(s["deleteCount"], 1);

    // Reads are counted too (batched, but GET store shows them).
    let reads = s["readCount"].as_u64().expect("readCount");
    for _ in 0..2 {
        assert_eq!(get_record(&srv, &token, &id, "b").await.status(), 200);
    }
    let store = store_object(&srv, &token, &id).await;
    assert_eq!(store["stats"]["readCount"], reads + 2, "{}", store["stats"]);
    // The read moved accessedAt (also batched, also shown at once).
    assert!(store["accessedAt"].as_str().unwrap() >= modified_at(&after_delete).as_str());
}

// ---------------------------------------------------------------------------------------------
// PUT/POST responses, HEAD, DELETE, 404s, headers

#[tokio::test]
async fn put_and_post_answer_201_with_empty_object_and_location() {
    let (srv, token, id) = setup().await;
    for (method, key) in [(Method::PUT, "via-put"), (Method::POST, "via-post")] {
        let resp = srv
            .req(method.clone(), &rec(&id, key), Some(&token))
            .header("content-type", "text/plain")
            .body(format!("body of {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{method}");
        let location = header(&resp, "location").expect("Location header");
        assert!(location.ends_with(&format!("/records/{key}")), "{location}");
        assert_eq!(
            location,
            format!("{}/v2/key-value-stores/{id}/records/{key}", srv.url)
        );
        let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(body, json!({}), "{method} body");
        assert_record(
            &srv,
            &token,
            &id,
            key,
            "text/plain",
            format!("body of {key}").as_bytes(),
        )
        .await;
    }
    // Reached by name, the Location still names the store by id.
    let resp = put_raw(&srv, &token, "~recs", "by-name", &[], b"x".to_vec()).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "location").unwrap(),
        format!("{}/v2/key-value-stores/{id}/records/by-name", srv.url)
    );
}

#[tokio::test]
async fn head_reports_existence_and_headers() {
    let (srv, token, id) = setup().await;
    srv.put_record(
        &token,
        &id,
        "h",
        "application/json; charset=utf-8",
        b"{\"a\":12345}".to_vec(),
    )
    .await;
    let resp = srv
        .req(Method::HEAD, &rec(&id, "h"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // No Content-Type: apify-client 1.12.x would parse the empty body as JSON (DECISIONS.md).
    assert_eq!(header(&resp, "content-type"), None);
    assert!(header(&resp, "etag").is_some());
    assert_eq!(header(&resp, "content-length").as_deref(), Some("11"));
    assert!(resp.bytes().await.unwrap().is_empty());

    let resp = srv
        .req(Method::HEAD, &rec(&id, "nope"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = srv
        .req(Method::HEAD, &rec(MISSING_STORE, "h"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn delete_answers_204_and_removes_the_record() {
    let (srv, token, id) = setup().await;
    srv.put_record(&token, &id, "d", "text/plain", b"bye".to_vec())
        .await;
    let resp = srv
        .req(Method::DELETE, &rec(&id, "d"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_error(
        get_record(&srv, &token, &id, "d").await,
        404,
        "record-not-found",
    )
    .await;
    let head = srv
        .req(Method::HEAD, &rec(&id, "d"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    assert!(key_sizes(&srv, &token, &id).await.is_empty());

    // Deleting again, or a key that never existed, is still 204.
    for key in ["d", "never-existed"] {
        let resp = srv
            .req(Method::DELETE, &rec(&id, key), Some(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "{key}");
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    let s = stats(&srv, &token, &id).await;
    assert_eq!(s["recordCount"], 0);
    assert_eq!(s["storageBytes"], 0);
}

#[tokio::test]
async fn missing_record_and_missing_store_are_record_not_found() {
    let (srv, token, id) = setup().await;
    assert_error(
        get_record(&srv, &token, &id, "nope").await,
        404,
        "record-not-found",
    )
    .await;
    for store in [MISSING_STORE, "~no-such-store"] {
        assert_error(
            get_record(&srv, &token, store, "INPUT").await,
            404,
            "record-not-found",
        )
        .await;
        let resp = put_raw(&srv, &token, store, "INPUT", &[], b"x".to_vec()).await;
        assert_error(resp, 404, "record-not-found").await;
        let resp = srv
            .req(Method::DELETE, &rec(store, "INPUT"), Some(&token))
            .send()
            .await
            .unwrap();
        assert_error(resp, 404, "record-not-found").await;
    }
    // A deleted store loses its records.
    srv.put_record(&token, &id, "INPUT", "text/plain", b"x".to_vec())
        .await;
    let resp = srv
        .req(
            Method::DELETE,
            &format!("/v2/key-value-stores/{id}"),
            Some(&token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_error(
        get_record(&srv, &token, &id, "INPUT").await,
        404,
        "record-not-found",
    )
    .await;
}

#[tokio::test]
async fn records_need_a_token_and_access() {
    let (srv, token, id) = setup().await;
    srv.put_record(&token, &id, "secret", "text/plain", b"x".to_vec())
        .await;
    let resp = srv
        .req(Method::PUT, &rec(&id, "secret"), None)
        .body("y")
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "token-not-provided").await;
    let resp = srv
        .req(Method::GET, &rec(&id, "secret"), None)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-or-token-not-found").await;
    let bob = srv.user("bob").await;
    assert_error(
        get_record(&srv, &bob, &id, "secret").await,
        404,
        "record-or-token-not-found",
    )
    .await;
    assert_record(&srv, &token, &id, "secret", "text/plain", b"x").await;
}

#[tokio::test]
async fn attachment_and_security_headers() {
    let (srv, token, id) = setup().await;
    srv.put_record(
        &token,
        &id,
        "page.html",
        "text/html",
        b"<script>alert(1)</script>".to_vec(),
    )
    .await;
    for query in ["", "?attachment=false", "?attachment=0"] {
        let resp = srv
            .get(&format!("{}{query}", rec(&id, "page.html")), &token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{query}");
        assert_eq!(header(&resp, "content-disposition"), None, "{query}");
        assert_eq!(
            header(&resp, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(
            header(&resp, "content-security-policy").as_deref(),
            Some("sandbox")
        );
        assert_eq!(header(&resp, "content-type").as_deref(), Some("text/html"));
    }
    for query in ["?attachment=true", "?attachment=1"] {
        let resp = srv
            .get(&format!("{}{query}", rec(&id, "page.html")), &token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{query}");
        let cd = header(&resp, "content-disposition").expect("Content-Disposition");
        assert!(cd.starts_with("attachment"), "{query}: {cd}");
        assert_eq!(
            header(&resp, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(
            header(&resp, "content-security-policy").as_deref(),
            Some("sandbox")
        );
        // The bytes are served untouched.
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            b"<script>alert(1)</script>"
        );
    }
    let head = srv
        .req(Method::HEAD, &rec(&id, "page.html"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
}

// ---------------------------------------------------------------------------------------------
// Keys

#[tokio::test]
async fn special_character_keys_raw_and_percent_encoded_are_the_same_record() {
    let (srv, token, id) = setup().await;
    let raw = "a!-_.'()Z9";
    let encoded = "a%21-_.%27%28%29Z9";
    // Premise: the HTTP client sends the raw key unchanged.
    let built = srv.get(&rec(&id, raw), &token).build().expect("request");
    assert_eq!(built.url().path(), rec(&id, raw));
    let built = srv
        .get(&rec(&id, encoded), &token)
        .build()
        .expect("request");
    assert_eq!(built.url().path(), rec(&id, encoded));

    srv.put_record(&token, &id, raw, "text/plain", b"one".to_vec())
        .await;
    assert_record(&srv, &token, &id, encoded, "text/plain", b"one").await;
    srv.put_record(&token, &id, encoded, "text/plain", b"two".to_vec())
        .await;
    assert_record(&srv, &token, &id, raw, "text/plain", b"two").await;
    let keys = key_sizes(&srv, &token, &id).await;
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        vec![(raw.to_owned(), 3)]
    );

    // Every allowed character on its own, and fully percent-encoded forms of ordinary characters.
    for key in ["!", "-", "_", "'", "(", ")", "...", "a.b", "Z", "0"] {
        srv.put_record(&token, &id, key, "text/plain", key.as_bytes().to_vec())
            .await;
        assert_record(&srv, &token, &id, key, "text/plain", key.as_bytes()).await;
    }
    srv.put_record(&token, &id, "AB", "text/plain", b"AB".to_vec())
        .await;
    assert_record(&srv, &token, &id, "%41%42", "text/plain", b"AB").await;

    let resp = srv
        .req(Method::DELETE, &rec(&id, encoded), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_error(
        get_record(&srv, &token, &id, raw).await,
        404,
        "record-not-found",
    )
    .await;

    // The longest key (256 characters) is fine.
    let long = "k".repeat(256);
    srv.put_record(&token, &id, &long, "text/plain", b"long".to_vec())
        .await;
    assert_record(&srv, &token, &id, &long, "text/plain", b"long").await;
}

#[tokio::test]
async fn invalid_keys_are_400_invalid_record_key() {
    let (srv, token, id) = setup().await;
    let too_long = "k".repeat(257);
    let bad = [
        "a%20b",
        "a b",
        "a%2Fb",
        "a%2fb",
        "%C3%A4",
        "ä",
        "a~b",
        "a*b",
        "a:b",
        "a%2Cb",
        "a%00b",
        "%FF",
        too_long.as_str(),
    ];
    for key in bad {
        let path = rec(&id, key);
        let resp = srv.get(&path, &token).send().await.unwrap();
        assert_error(resp, 400, "invalid-record-key").await;
        let resp = put_raw(
            &srv,
            &token,
            &id,
            key,
            &[("content-type", "text/plain")],
            "x",
        )
        .await;
        assert_error(resp, 400, "invalid-record-key").await;
        let resp = srv
            .req(Method::POST, &path, Some(&token))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid-record-key").await;
        let resp = srv
            .req(Method::DELETE, &path, Some(&token))
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid-record-key").await;
        let resp = srv
            .req(Method::HEAD, &path, Some(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "HEAD {key}");
    }

    // `.` and `..` cannot go through reqwest (the URL parser removes dot segments, even
    // percent-encoded ones), so they are sent on a raw socket, raw and percent-encoded.
    let normalized = reqwest::Url::parse(&format!("{}{}", srv.url, rec(&id, "%2E%2E"))).unwrap();
    assert!(!normalized.path().ends_with("/records/%2E%2E"));
    for key in [".", "..", "%2E", "%2e", "%2E%2E", "%2e%2E", ".%2E"] {
        let target = rec(&id, key);
        let resp = raw_request(&srv, "GET", &target, &token, b"").await;
        assert_raw_error(&resp, 400, "invalid-record-key", &format!("GET {key}"));
        let resp = raw_request(&srv, "PUT", &target, &token, b"x").await;
        assert_raw_error(&resp, 400, "invalid-record-key", &format!("PUT {key}"));
        let resp = raw_request(&srv, "DELETE", &target, &token, b"").await;
        assert_raw_error(&resp, 400, "invalid-record-key", &format!("DELETE {key}"));
    }
    // A valid key over the raw socket works, so the helper is sound.
    let resp = raw_request(&srv, "PUT", &rec(&id, "dots..."), &token, b"x").await;
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    let resp = raw_request(&srv, "GET", &rec(&id, "dots..."), &token, b"").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"x");
    assert!(resp.headers.contains("content-type: text/plain"));

    // Nothing was stored by the refused requests.
    let keys: Vec<String> = key_sizes(&srv, &token, &id).await.into_keys().collect();
    assert_eq!(keys, vec!["dots...".to_owned()]);
}

// ---------------------------------------------------------------------------------------------
// Compressed request bodies

fn sample_json() -> Vec<u8> {
    let items: Vec<Value> = (0..400)
        .map(|i| json!({"i": i, "name": format!("item-{i}"), "tags": ["a", "b", "ü"]}))
        .collect();
    serde_json::to_vec(&items).unwrap()
}

#[tokio::test]
async fn compressed_bodies_are_stored_decompressed() {
    let (srv, token, id) = setup().await;
    let plain = sample_json();
    assert!(plain.len() > 10_000);
    let tiny = br#"{"a":1}"#.to_vec();
    let cases: Vec<(&str, &str, Vec<u8>, &[u8])> = vec![
        ("gzip", "gzip", gzip(&plain), &plain),
        ("x-gzip", "x-gzip", gzip(&plain), &plain),
        ("gzip-upper", "GZIP", gzip(&plain), &plain),
        ("gzip-tiny", "gzip", gzip(&tiny), &tiny),
        ("br", "br", brotli(&plain), &plain),
        ("br-tiny", "br", brotli(&tiny), &tiny),
        ("deflate-zlib", "deflate", zlib(&plain), &plain),
        ("deflate-raw", "deflate", raw_deflate(&plain), &plain),
        ("deflate-raw-tiny", "deflate", raw_deflate(&tiny), &tiny),
        ("identity", "identity", plain.clone(), &plain),
        ("gzip-empty", "gzip", gzip(b""), b""),
    ];
    let mut expected_bytes = 0u64;
    for (key, encoding, body, expected) in &cases {
        if *encoding != "identity" {
            assert_ne!(
                body.as_slice(),
                *expected,
                "{key}: the body is really compressed"
            );
        }
        let resp = put_raw(
            &srv,
            &token,
            &id,
            key,
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("content-encoding", encoding),
            ],
            body.clone(),
        )
        .await;
        assert_eq!(resp.status(), 201, "{key}: {}", resp.text().await.unwrap());
        assert_record(
            &srv,
            &token,
            &id,
            key,
            "application/json; charset=utf-8",
            expected,
        )
        .await;
        expected_bytes += expected.len() as u64;
    }
    let sizes = key_sizes(&srv, &token, &id).await;
    for (key, _, _, expected) in &cases {
        assert_eq!(sizes[*key], expected.len() as u64, "size of {key}");
    }
    assert_eq!(
        stats(&srv, &token, &id).await["storageBytes"],
        expected_bytes
    );

    // Several gzip members in one body are one stream (RFC 1952).
    let mut two = gzip(b"first,");
    two.extend(gzip(b"second"));
    let resp = put_raw(
        &srv,
        &token,
        &id,
        "gzip-members",
        &[("content-encoding", "gzip")],
        two,
    )
    .await;
    assert_eq!(resp.status(), 201);
    assert_record(
        &srv,
        &token,
        &id,
        "gzip-members",
        "application/octet-stream",
        b"first,second",
    )
    .await;

    // A large compressed body that spools to a file on the way in.
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    for (key, encoding, body) in [
        ("big-gz", "gzip", gzip(&big)),
        ("big-br", "br", brotli(&big)),
    ] {
        let resp = put_raw(
            &srv,
            &token,
            &id,
            key,
            &[("content-encoding", encoding)],
            body,
        )
        .await;
        assert_eq!(resp.status(), 201, "{key}");
        assert_record(&srv, &token, &id, key, "application/octet-stream", &big).await;
    }
}

#[tokio::test]
async fn unknown_content_encoding_is_415() {
    let (srv, token, id) = setup().await;
    for encoding in ["bla", "compress", "zstd", "gzip, br"] {
        let resp = put_raw(
            &srv,
            &token,
            &id,
            "enc",
            &[
                ("content-encoding", encoding),
                ("content-type", "text/plain"),
            ],
            b"hello".to_vec(),
        )
        .await;
        let message = assert_error(resp, 415, "unsupported-content-encoding").await;
        if encoding == "bla" {
            assert_eq!(message, "Content-Encoding \"bla\" is not supported.");
        }
    }
    assert_error(
        get_record(&srv, &token, &id, "enc").await,
        404,
        "record-not-found",
    )
    .await;
}

#[tokio::test]
async fn corrupt_compressed_bodies_are_400_invalid_request() {
    let (srv, token, id) = setup().await;
    let plain = sample_json();
    let gz = gzip(&plain);
    let truncated = gz[..gz.len() / 2].to_vec();
    let mut bad_crc = gz.clone();
    let n = bad_crc.len();
    bad_crc[n - 6] ^= 0xff; // inside the CRC32 trailer
    let mut br = brotli(&plain);
    br.truncate(br.len() / 2);
    let zl = zlib(&plain);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", truncated),
        ("gzip", gz[..5].to_vec()),
        ("gzip", bad_crc),
        ("gzip", b"this is not gzip at all".to_vec()),
        ("br", br),
        ("deflate", zl[..zl.len() / 2].to_vec()),
    ];
    for (i, (encoding, body)) in cases.into_iter().enumerate() {
        let resp = put_raw(
            &srv,
            &token,
            &id,
            "corrupt",
            &[("content-encoding", encoding)],
            body,
        )
        .await;
        let got = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(got, 400, "case {i} ({encoding}): {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body["error"]["type"], "invalid-request",
            "case {i} ({encoding}): {text}"
        );
    }
    assert_error(
        get_record(&srv, &token, &id, "corrupt").await,
        404,
        "record-not-found",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Size limit

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let srv = TestServer::start_with(|c| c.max_record_bytes = 1000).await;
    let token = srv.user("alice").await;
    let id = srv.create_store(&token, None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let exact = random_bytes(1000, 1);
    srv.put_record(&token, &id, "k", "application/octet-stream", exact.clone())
        .await;
    assert_record(&srv, &token, &id, "k", "application/octet-stream", &exact).await;

    // Content-Length over the limit.
    let resp = put_raw(&srv, &token, &id, "k", &[], random_bytes(1001, 2)).await;
    let message = assert_error(resp, 413, "request-too-large").await;
    assert!(message.contains("1000"), "{message}");

    // No Content-Length (chunked): the limit applies while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![1u8; 600]), Ok(vec![2u8; 401])];
    let resp = put_raw(
        &srv,
        &token,
        &id,
        "k",
        &[],
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_error(resp, 413, "request-too-large").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![1u8; 600]), Ok(vec![2u8; 400])];
    let resp = put_raw(
        &srv,
        &token,
        &id,
        "chunked-ok",
        &[],
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let mut expected = vec![1u8; 600];
    expected.extend([2u8; 400]);
    assert_record(
        &srv,
        &token,
        &id,
        "chunked-ok",
        "application/octet-stream",
        &expected,
    )
    .await;

    // The limit is on the decompressed size: a small gzip of 1001 bytes is too large...
    let resp = put_raw(
        &srv,
        &token,
        &id,
        "k",
        &[("content-encoding", "gzip")],
        gzip(&[7u8; 1001]),
    )
    .await;
    assert_error(resp, 413, "request-too-large").await;
    // ... and 1000 bytes gzipped are fine.
    let resp = put_raw(
        &srv,
        &token,
        &id,
        "gz-ok",
        &[("content-encoding", "gzip")],
        gzip(&[7u8; 1000]),
    )
    .await;
    assert_eq!(resp.status(), 201);
    assert_record(
        &srv,
        &token,
        &id,
        "gz-ok",
        "application/octet-stream",
        &[7u8; 1000],
    )
    .await;

    // A gzip bomb: 50 MiB of zeros in about 50 KiB.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..50 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1024 * 1024, "bomb is {} bytes", bomb.len());
    let resp = put_raw(
        &srv,
        &token,
        &id,
        "k",
        &[("content-encoding", "gzip")],
        bomb,
    )
    .await;
    assert_error(resp, 413, "request-too-large").await;
    // The same with brotli.
    let mut big_zeros = Vec::new();
    for _ in 0..8 {
        big_zeros.extend_from_slice(&zeros);
    }
    let resp = put_raw(
        &srv,
        &token,
        &id,
        "k",
        &[("content-encoding", "br")],
        brotli(&big_zeros),
    )
    .await;
    assert_error(resp, 413, "request-too-large").await;

    // The refused writes left the record as it was.
    assert_record(&srv, &token, &id, "k", "application/octet-stream", &exact).await;
    let s = stats(&srv, &token, &id).await;
    assert_eq!(s["recordCount"], 3);
    assert_eq!(s["storageBytes"], 3000);
}

// ---------------------------------------------------------------------------------------------
// Large records

#[tokio::test]
async fn large_record_round_trips_and_can_be_overwritten_and_deleted() {
    let (srv, token, id) = setup().await;
    let first = random_bytes(5 * 1024 * 1024, 11);
    srv.put_record(
        &token,
        &id,
        "large",
        "application/octet-stream",
        first.clone(),
    )
    .await;
    assert_record(
        &srv,
        &token,
        &id,
        "large",
        "application/octet-stream",
        &first,
    )
    .await;
    let head = srv
        .req(Method::HEAD, &rec(&id, "large"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "content-length"),
        Some(first.len().to_string())
    );
    assert_eq!(
        key_sizes(&srv, &token, &id).await["large"],
        first.len() as u64
    );

    // Overwrite with another large body, streamed without Content-Length.
    let second = random_bytes(5 * 1024 * 1024 + 1, 12);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        second.chunks(300_000).map(|c| Ok(c.to_vec())).collect();
    let resp = put_raw(
        &srv,
        &token,
        &id,
        "large",
        &[("content-type", "image/png")],
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_eq!(resp.status(), 201);
    assert_record(&srv, &token, &id, "large", "image/png", &second).await;
    let s = stats(&srv, &token, &id).await;
    assert_eq!(s["storageBytes"], second.len() as u64);
    assert_eq!(s["recordCount"], 1);

    // Large → small → large.
    srv.put_record(&token, &id, "large", "text/plain", b"small now".to_vec())
        .await;
    assert_record(&srv, &token, &id, "large", "text/plain", b"small now").await;
    srv.put_record(
        &token,
        &id,
        "large",
        "application/octet-stream",
        first.clone(),
    )
    .await;
    assert_record(
        &srv,
        &token,
        &id,
        "large",
        "application/octet-stream",
        &first,
    )
    .await;

    // Just above the inline limit of the embedded backend.
    let medium = random_bytes(64 * 1024 + 1, 13);
    srv.put_record(
        &token,
        &id,
        "medium",
        "application/octet-stream",
        medium.clone(),
    )
    .await;
    assert_record(
        &srv,
        &token,
        &id,
        "medium",
        "application/octet-stream",
        &medium,
    )
    .await;

    for key in ["large", "medium"] {
        let resp = srv
            .req(Method::DELETE, &rec(&id, key), Some(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
        assert_error(
            get_record(&srv, &token, &id, key).await,
            404,
            "record-not-found",
        )
        .await;
    }
    let s = stats(&srv, &token, &id).await;
    assert_eq!(s["storageBytes"], 0);
    assert_eq!(s["recordCount"], 0);
}

// ---------------------------------------------------------------------------------------------
// ZIP download

#[tokio::test]
async fn zip_download_contains_every_record() {
    let (srv, token, id) = setup().await;

    // An empty store gives an empty archive.
    let resp = srv
        .get(&format!("/v2/key-value-stores/{id}/records"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/zip")
    );
    assert!(unzip(&resp.bytes().await.unwrap()).is_empty());

    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    expected.insert("INPUT".into(), br#"{"a":1}"#.to_vec());
    expected.insert("empty".into(), Vec::new());
    expected.insert("bin".into(), (0..=255u8).collect());
    expected.insert("a!-_.'()".into(), b"special".to_vec());
    expected.insert("img-1".into(), random_bytes(100_000, 21));
    expected.insert("img-2".into(), random_bytes(2 * 1024 * 1024, 22));
    expected.insert("img-10".into(), b"ten".to_vec());
    expected.insert("imgs".into(), b"not an img- record".to_vec());
    for (key, body) in &expected {
        srv.put_record(&token, &id, key, "application/octet-stream", body.clone())
            .await;
    }

    let resp = srv
        .get(&format!("/v2/key-value-stores/{id}/records"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/zip")
    );
    let files = unzip(&resp.bytes().await.unwrap());
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert!(files == expected, "ZIP contents differ from the records");

    let resp = srv
        .get(
            &format!("/v2/key-value-stores/{id}/records?prefix=img-"),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let files = unzip(&resp.bytes().await.unwrap());
    let want: BTreeMap<String, Vec<u8>> = expected
        .iter()
        .filter(|(k, _)| k.starts_with("img-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        vec!["img-1", "img-10", "img-2"]
    );
    assert!(files == want);

    let resp = srv
        .get(
            &format!("/v2/key-value-stores/{id}/records?prefix=nothing"),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(unzip(&resp.bytes().await.unwrap()).is_empty());

    let resp = srv
        .get(
            &format!("/v2/key-value-stores/{MISSING_STORE}/records"),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-not-found").await;
}

#[tokio::test]
async fn zip_download_spans_several_listing_pages() {
    let (srv, token, id) = setup().await;
    let keys: Vec<String> = (0..1205).map(|i| format!("k{i:05}")).collect();
    for batch in keys.chunks(100) {
        futures_util::future::join_all(
            batch
                .iter()
                .map(|k| srv.put_record(&token, &id, k, "text/plain", k.clone().into_bytes())),
        )
        .await;
    }
    let resp = srv
        .get(&format!("/v2/key-value-stores/{id}/records"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let files = unzip(&resp.bytes().await.unwrap());
    assert_eq!(files.len(), keys.len());
    for k in &keys {
        assert_eq!(files.get(k).map(Vec::as_slice), Some(k.as_bytes()), "{k}");
    }
}

// ---------------------------------------------------------------------------------------------
// Methods, concurrency and leftovers

#[tokio::test]
async fn other_methods_are_405() {
    let (srv, token, id) = setup().await;
    let resp = srv
        .req(Method::PATCH, &rec(&id, "k"), Some(&token))
        .send()
        .await
        .unwrap();
    let message = assert_error(resp, 405, "method-not-allowed").await;
    assert!(message.contains("PUT"), "{message}");
    for method in [Method::PUT, Method::DELETE, Method::POST] {
        let resp = srv
            .req(
                method.clone(),
                &format!("/v2/key-value-stores/{id}/records"),
                Some(&token),
            )
            .send()
            .await
            .unwrap();
        assert_error(resp, 405, "method-not-allowed").await;
    }
}

/// Files under `dir`, recursively (an absent directory has none).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn no_spool_or_blob_files_are_left_behind() {
    let srv = TestServer::start_with(|c| c.max_record_bytes = 3 * 1024 * 1024).await;
    let token = srv.user("alice").await;
    let id = srv.create_store(&token, None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let spool = srv.store.spool_dir();
    // The embedded backend keeps large bodies in `<data>/blobs`, next to the spool directory.
    let blobs = (common::backend_name() == "embedded").then(|| {
        spool
            .parent()
            .expect("spool dir has a parent")
            .join("blobs")
    });
    let blob_count = || blobs.as_ref().map_or(0, |b| files_under(b).len());

    let big = random_bytes(2 * 1024 * 1024, 31);
    srv.put_record(&token, &id, "big", "application/octet-stream", big.clone())
        .await;
    assert!(
        files_under(&spool).is_empty(),
        "spool after PUT: {:?}",
        files_under(&spool)
    );
    if blobs.is_some() {
        assert_eq!(blob_count(), 1);
    }
    // Overwrites (large → large → small) and a delete leave no old blob behind.
    srv.put_record(
        &token,
        &id,
        "big",
        "application/octet-stream",
        random_bytes(2 * 1024 * 1024, 32),
    )
    .await;
    if blobs.is_some() {
        assert_eq!(blob_count(), 1, "after a large overwrite");
    }
    srv.put_record(&token, &id, "big", "text/plain", b"small".to_vec())
        .await;
    assert_eq!(blob_count(), 0, "after a small overwrite");
    srv.put_record(&token, &id, "big", "application/octet-stream", big.clone())
        .await;
    let resp = srv
        .req(Method::DELETE, &rec(&id, "big"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(blob_count(), 0, "after delete");

    // A body that crosses the limit after it started spooling.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..13).map(|i| Ok(vec![i as u8; 256 * 1024])).collect();
    let resp = put_raw(
        &srv,
        &token,
        &id,
        "too-big",
        &[],
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_error(resp, 413, "request-too-large").await;
    // A gzip body that breaks after it started spooling.
    let gz = gzip(&random_bytes(2 * 1024 * 1024, 33));
    let resp = put_raw(
        &srv,
        &token,
        &id,
        "broken",
        &[("content-encoding", "gzip")],
        gz[..gz.len() - 100].to_vec(),
    )
    .await;
    assert_error(resp, 400, "invalid-request").await;
    // A large body for a store that does not exist.
    let resp = put_raw(&srv, &token, MISSING_STORE, "x", &[], big.clone()).await;
    assert_error(resp, 404, "record-not-found").await;
    // A failed request's spool file is removed before it is answered (the request's state is
    // dropped as its handler returns), so no wait: the answer is the event.
    assert!(
        files_under(&spool).is_empty(),
        "spool: {:?}",
        files_under(&spool)
    );
    assert_eq!(blob_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overwrites_keep_stats_consistent() {
    let (srv, token, id) = setup().await;
    let bodies: Vec<Vec<u8>> = (0..40)
        .map(|i| vec![b'a' + (i % 26) as u8; 10 + i])
        .collect();
    futures_util::future::join_all(
        bodies
            .iter()
            .map(|b| srv.put_record(&token, &id, "same", "text/plain", b.clone())),
    )
    .await;
    let resp = get_record(&srv, &token, &id, "same").await;
    assert_eq!(resp.status(), 200);
    let final_body = resp.bytes().await.unwrap().to_vec();
    assert!(
        bodies.contains(&final_body),
        "the body is one of the writes"
    );
    let s = stats(&srv, &token, &id).await;
    assert_eq!(s["recordCount"], 1);
    assert_eq!(s["writeCount"], 40);
    assert_eq!(s["storageBytes"], final_body.len(), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_overwrites_of_a_large_record_never_fail() {
    let (srv, token, id) = setup().await;
    // Larger than the embedded backend's inline limit, so every version is its own blob file.
    let versions: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(100 * 1024, 40 + i)).collect();
    let keys = ["hot0", "hot1", "hot2", "hot3"];
    for key in keys {
        srv.put_record(
            &token,
            &id,
            key,
            "application/octet-stream",
            versions[0].clone(),
        )
        .await;
    }
    let done = std::sync::atomic::AtomicUsize::new(0);
    let writer = |key: &'static str| {
        let (srv, token, id, versions, done) = (&srv, &token, &id, &versions, &done);
        async move {
            for i in 1..300 {
                srv.put_record(
                    token,
                    id,
                    key,
                    "application/octet-stream",
                    versions[i % 4].clone(),
                )
                .await;
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let reader = |key: &'static str| {
        let (srv, token, id, versions, done) = (&srv, &token, &id, &versions, &done);
        async move {
            let mut reads = 0;
            while done.load(std::sync::atomic::Ordering::SeqCst) < keys.len() {
                let resp = get_record(srv, token, id, key).await;
                let status = resp.status();
                let body = resp.bytes().await.unwrap().to_vec();
                assert_eq!(
                    status,
                    200,
                    "GET {key} during overwrites: {}",
                    String::from_utf8_lossy(&body)
                );
                assert!(versions.contains(&body), "GET {key} returned a torn body");
                reads += 1;
            }
            reads
        }
    };
    let tasks = keys.iter().map(|k| writer(k)).collect::<Vec<_>>();
    let readers = keys
        .iter()
        .chain(keys.iter())
        .map(|k| reader(k))
        .collect::<Vec<_>>();
    let (_, reads) = tokio::join!(
        futures_util::future::join_all(tasks),
        futures_util::future::join_all(readers)
    );
    assert!(reads.iter().sum::<usize>() > 0);
}
