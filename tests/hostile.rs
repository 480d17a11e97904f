//! Hostile and malformed input: every answer is a 4xx in Apify's error envelope
//! `{"error":{"type","message"}}` (never a 5xx, never a panic), limits hold without reading or
//! inflating what they refuse, slow and idle clients are cut off, and after each group of attacks a
//! normal request still works.
//!
//! What the HTTP layer (hyper) answers before routing cannot carry the envelope: 431 (headers too
//! large) and 414 (URI too long) as `shared/DECISIONS.md` allows, and 400 for bytes that are not an
//! HTTP/1.1 request at all (bad request line, bad chunk sizes, contradictory `Content-Length`).
//! Those cases accept a bare 4xx or a closed connection, but never a 5xx. Everything that reaches
//! the API must use the envelope.

// Test code: a failed unwrap is a failed test. (`allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers of an integration-test crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::{assert_error, data, TestServer};
use reqwest::{Method, Response};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A server with the user `alice` and her store `target` (records `a`, `b`, `c`).
struct World {
    srv: TestServer,
    token: String,
    id: String,
}

impl World {
    async fn new() -> Self {
        Self::with(TestServer::start().await).await
    }

    async fn with(srv: TestServer) -> Self {
        let token = srv.user("alice").await;
        let id = srv.create_store(&token, Some("target")).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for key in ["a", "b", "c"] {
            srv.put_record(&token, &id, key, "text/plain", key.to_owned())
                .await;
        }
        Self { srv, token, id }
    }

    fn addr(&self) -> String {
        self.srv.url.trim_start_matches("http://").to_owned()
    }

    /// A normal request still works: the store is listed and its records read back.
    async fn still_up(&self, after: &str) {
        let resp = self
            .srv
            .get("/v2/key-value-stores", &self.token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("after {after}: the server does not answer: {e}"));
        assert_eq!(resp.status(), 200, "after {after}");
        let list = data(resp).await;
        assert_eq!(list["items"][0]["id"], self.id.as_str(), "after {after}");
        let resp = self
            .srv
            .get(
                &format!("/v2/key-value-stores/{}/records/b", self.id),
                &self.token,
            )
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("after {after}: the server does not answer: {e}"));
        assert_eq!(resp.status(), 200, "after {after}");
        assert_eq!(resp.text().await.unwrap(), "b", "after {after}");
    }

    /// The keys of the store: the refused requests stored nothing.
    async fn keys(&self) -> Vec<String> {
        let resp = self
            .srv
            .get(
                &format!("/v2/key-value-stores/{}/keys", self.id),
                &self.token,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        data(resp).await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap().to_owned())
            .collect()
    }

    fn rec(&self, key: &str) -> String {
        format!("/v2/key-value-stores/{}/records/{key}", self.id)
    }
}

/// The violations one test found. Each attack is checked and noted, so that a failing test lists
/// every misbehaviour at once rather than the first one only.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn note(&mut self, problem: String) {
        eprintln!("PROBLEM: {problem}");
        self.0.push(problem);
    }

    /// `status`/`body` must be a 4xx in Apify's envelope; returns `error.type` when it is one.
    fn envelope(&mut self, what: &str, status: u16, body: &[u8]) -> Option<String> {
        let text: String = String::from_utf8_lossy(body).chars().take(300).collect();
        if !(400..500).contains(&status) {
            self.note(format!("{what}: expected a 4xx, got {status}: {text:?}"));
            return None;
        }
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let error_type = json.as_ref().and_then(|j| j["error"]["type"].as_str());
        let message = json.as_ref().and_then(|j| j["error"]["message"].as_str());
        match (error_type, message) {
            (Some(t), Some(m)) if !t.is_empty() && !m.is_empty() => Some(t.to_owned()),
            _ => {
                self.note(format!("{what}: {status} without the envelope: {text:?}"));
                None
            }
        }
    }

    /// An exact error answer: status and type, in the envelope.
    fn exact(&mut self, what: &str, status: u16, body: &[u8], want_status: u16, want_type: &str) {
        if let Some(got_type) = self.envelope(what, status, body) {
            if (status, got_type.as_str()) != (want_status, want_type) {
                let text: String = String::from_utf8_lossy(body).chars().take(300).collect();
                self.note(format!(
                    "{what}: expected {want_status} {want_type}, got {status}: {text}"
                ));
            }
        }
    }

    async fn expect(&mut self, what: &str, resp: Response, status: u16, error_type: &str) {
        let (got, body) = status_and_body(resp).await;
        self.exact(what, got, &body, status, error_type);
    }

    /// An answer from the HTTP layer or the API to bytes that may not be a valid request: none
    /// (closed), or a 4xx; when it has a body, the body is the envelope. Returns the status.
    fn refused(&mut self, what: &str, resp: Option<&Raw>) -> Option<u16> {
        let Some(resp) = resp else {
            eprintln!("{what}: connection closed without an answer");
            return None;
        };
        eprintln!("{what}: {} {:?}", resp.status, resp.text());
        if !(400..500).contains(&resp.status) {
            self.note(format!(
                "{what}: expected a 4xx or a closed connection, got {}: {:?}",
                resp.status,
                resp.text()
            ));
        } else if !resp.body.is_empty() {
            self.envelope(what, resp.status, &resp.body);
        }
        Some(resp.status)
    }

    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.note(problem());
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

async fn status_and_body(resp: Response) -> (u16, Vec<u8>) {
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn brotli(b: &[u8]) -> Vec<u8> {
    let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    w.write_all(b).unwrap();
    w.flush().unwrap();
    w.into_inner()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A response read from a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    /// The response head, lower-cased.
    head: String,
    body: Vec<u8>,
    /// When the status line arrived.
    at: Instant,
}

impl Raw {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn has_header(&self, line: &str) -> bool {
        self.head.lines().any(|l| l.trim() == line)
    }
}

/// Reads HTTP/1.1 responses from a socket; 1xx answers are skipped and remembered.
struct Reader<R> {
    r: R,
    buf: Vec<u8>,
    eof: bool,
    interim: Vec<u16>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a chunked body; `None` when incomplete. Returns the body and the bytes used.
fn dechunk(mut rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = rest.len();
    let mut out = Vec::new();
    loop {
        let eol = find(rest, b"\r\n")?;
        let line = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            let end = find(rest, b"\r\n")?; // no trailers expected
            rest = &rest[end + 2..];
            return Some((out, total - rest.len()));
        }
        if rest.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    fn new(r: R) -> Self {
        Self {
            r,
            buf: Vec::new(),
            eof: false,
            interim: Vec::new(),
        }
    }

    /// One complete response at the start of the buffer, and its length.
    fn parse(&self, at: Instant) -> Option<(Raw, usize)> {
        let end = find(&self.buf, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let body_start = end + 4;
        let rest = &self.buf[body_start..];
        let content_length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let (body, used) = if (100..200).contains(&status) || status == 204 || status == 304 {
            (Vec::new(), 0)
        } else if head.contains("transfer-encoding: chunked") {
            dechunk(rest)?
        } else if let Some(n) = content_length {
            if rest.len() < n {
                return None;
            }
            (rest[..n].to_vec(), n)
        } else if self.eof {
            (rest.to_vec(), rest.len())
        } else {
            return None;
        };
        Some((
            Raw {
                status,
                head,
                body,
                at,
            },
            body_start + used,
        ))
    }

    /// The next final response; `None` when the connection ends without one. Panics after
    /// `limit`.
    async fn next_within(&mut self, limit: Duration, what: &str) -> Option<Raw> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut first_byte_at: Option<Instant> = None;
        loop {
            if let Some((raw, used)) = self.parse(first_byte_at.unwrap_or_else(Instant::now)) {
                self.buf.drain(..used);
                if (100..200).contains(&raw.status) {
                    self.interim.push(raw.status);
                    first_byte_at = None;
                    continue;
                }
                return Some(raw);
            }
            if self.eof {
                return None;
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.r.read(&mut chunk)).await {
                Err(_) => panic!(
                    "{what}: no complete response within {limit:?}; got so far: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(Ok(0) | Err(_)) => self.eof = true,
                Ok(Ok(n)) => {
                    if self.buf.is_empty() {
                        first_byte_at = Some(Instant::now());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    async fn next(&mut self, what: &str) -> Option<Raw> {
        self.next_within(Duration::from_secs(10), what).await
    }

    /// Whether the peer closes the connection within `limit` (EOF or reset).
    async fn closes_within(&mut self, limit: Duration) -> bool {
        if self.eof {
            return true;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.r.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => {
                    self.eof = true;
                    return true;
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Sends raw bytes on a fresh connection and reads one response (`None`: closed without one).
async fn raw_exchange(w: &World, request: &[u8], what: &str) -> Option<Raw> {
    let mut sock = TcpStream::connect(w.addr()).await.unwrap();
    // The server may answer and close before everything was written; that is fine.
    let _ = sock.write_all(request).await;
    let mut reader = Reader::new(sock);
    reader.next(what).await
}

// ---------------------------------------------------------------------------------------------
// Malformed JSON bodies

#[tokio::test]
async fn malformed_and_wrongly_typed_json_on_store_create_and_update_is_400() {
    let mut p = Problems::default();
    let w = World::new().await;
    let srv = &w.srv;
    let deep_array = "[".repeat(100_000);
    let deep_object = format!("{{\"schema\":{}", "{\"a\":".repeat(100_000));
    let huge_string = format!("{{\"schema\":\"{}\"}}", "x".repeat(500_000));
    let nested_junk = r#"{"schema":{"collections":{"c":{"key":[{"a":[null,{"b":-1e300}]}]}}}}"#;

    // Bodies of POST /v2/key-value-stores?name=junk and the type each must get.
    let create: Vec<(&str, Vec<u8>, &str)> = vec![
        ("array", b"[1,2]".to_vec(), "invalid-input"),
        ("empty array", b"[]".to_vec(), "invalid-input"),
        ("number", b"5".to_vec(), "invalid-input"),
        ("negative float", b"-1.5e300".to_vec(), "invalid-input"),
        ("string", br#""schema""#.to_vec(), "invalid-input"),
        ("bool", b"true".to_vec(), "invalid-input"),
        ("truncated", br#"{"schema":"#.to_vec(), "invalid-input"),
        ("unterminated", b"{".to_vec(), "invalid-input"),
        ("missing value", br#"{"a":}"#.to_vec(), "invalid-input"),
        ("trailing junk", br#"{} {}"#.to_vec(), "invalid-input"),
        ("trailing NUL", b"{}\0".to_vec(), "invalid-input"),
        ("NaN", br#"{"schema": NaN}"#.to_vec(), "invalid-input"),
        ("single quotes", b"{'schema': {}}".to_vec(), "invalid-input"),
        (
            "invalid UTF-8",
            b"{\"schema\": {\"title\": \"\xff\xfe\xc3\"}}".to_vec(),
            "invalid-input",
        ),
        (
            "lone surrogate escape",
            br#"{"schema": {"title": "\ud800"}}"#.to_vec(),
            "invalid-input",
        ),
        (
            "deep array",
            deep_array.clone().into_bytes(),
            "invalid-input",
        ),
        (
            "deep object",
            deep_object.clone().into_bytes(),
            "invalid-input",
        ),
        (
            "huge string schema",
            huge_string.clone().into_bytes(),
            "store-schema-invalid",
        ),
        (
            "schema array",
            br#"{"schema": [1]}"#.to_vec(),
            "store-schema-invalid",
        ),
        (
            "schema collections array",
            br#"{"schema": {"collections": []}}"#.to_vec(),
            "store-schema-invalid",
        ),
        (
            "nested junk",
            nested_junk.as_bytes().to_vec(),
            "store-schema-invalid",
        ),
        (
            "gzip of junk",
            gzip(b"[\"not an object\"]"),
            "invalid-input",
        ),
    ];
    for (what, body, error_type) in create {
        let mut rb = srv
            .req(
                Method::POST,
                "/v2/key-value-stores?name=junk",
                Some(&w.token),
            )
            .header("content-type", "application/json");
        if what.starts_with("gzip") {
            rb = rb.header("content-encoding", "gzip");
        }
        let resp = rb.body(body).send().await.unwrap();
        p.expect(&format!("create with {what}"), resp, 400, error_type)
            .await;
    }
    // Nothing was created.
    let resp = srv
        .get("/v2/key-value-stores/~junk", &w.token)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-not-found").await;
    let resp = srv
        .get("/v2/key-value-stores?unnamed=1", &w.token)
        .send()
        .await
        .unwrap();
    assert_eq!(data(resp).await["total"], 1);
    w.still_up("junk store-create bodies").await;

    // Bodies of PUT /v2/key-value-stores/{id}.
    let long_name = format!("{{\"name\":\"{}\"}}", "a".repeat(100_000));
    let long_access = format!("{{\"generalAccess\":\"{}\"}}", "R".repeat(100_000));
    let update: Vec<(&str, Vec<u8>)> = vec![
        ("array", b"[1,2]".to_vec()),
        ("number", b"5".to_vec()),
        ("string", br#""name""#.to_vec()),
        ("truncated", br#"{"name":"#.to_vec()),
        ("invalid UTF-8", b"{\"name\": \"ab\xffcd\"}".to_vec()),
        ("name {}", br#"{"name": {}}"#.to_vec()),
        ("name []", br#"{"name": []}"#.to_vec()),
        ("name 5", br#"{"name": 5}"#.to_vec()),
        ("name true", br#"{"name": true}"#.to_vec()),
        ("name empty", br#"{"name": ""}"#.to_vec()),
        ("name with NUL", br#"{"name": "a\u0000b"}"#.to_vec()),
        ("name with slash", br#"{"name": "a/b"}"#.to_vec()),
        ("name unicode", r#"{"name": "bäume"}"#.as_bytes().to_vec()),
        ("name with tilde", br#"{"name": "~target"}"#.to_vec()),
        ("name 100 KB", long_name.into_bytes()),
        ("generalAccess 5", br#"{"generalAccess": 5}"#.to_vec()),
        ("generalAccess {}", br#"{"generalAccess": {}}"#.to_vec()),
        (
            "generalAccess []",
            br#"{"generalAccess": ["RESTRICTED"]}"#.to_vec(),
        ),
        ("generalAccess true", br#"{"generalAccess": true}"#.to_vec()),
        (
            "generalAccess lower case",
            br#"{"generalAccess": "restricted"}"#.to_vec(),
        ),
        ("generalAccess empty", br#"{"generalAccess": ""}"#.to_vec()),
        ("generalAccess 100 KB", long_access.into_bytes()),
        // A valid field next to an invalid one: nothing of the update may be applied.
        (
            "valid name, invalid access",
            br#"{"name": "renamed", "generalAccess": 5}"#.to_vec(),
        ),
        (
            "valid access, invalid name",
            br#"{"generalAccess": "ANYONE_WITH_ID_CAN_READ", "name": 7}"#.to_vec(),
        ),
        ("deep array", deep_array.into_bytes()),
        ("deep object", deep_object.into_bytes()),
        ("gzip of junk", gzip(br#"{"name": {"nested": true}}"#)),
        ("brotli of junk", brotli(br#"{"name": [1, 2, 3]}"#)),
    ];
    let path = format!("/v2/key-value-stores/{}", w.id);
    for (what, body) in update {
        let mut rb = srv
            .req(Method::PUT, &path, Some(&w.token))
            .header("content-type", "application/json");
        if what.starts_with("gzip") {
            rb = rb.header("content-encoding", "gzip");
        } else if what.starts_with("brotli") {
            rb = rb.header("content-encoding", "br");
        }
        let resp = rb.body(body).send().await.unwrap();
        p.expect(&format!("update with {what}"), resp, 400, "invalid-input")
            .await;
    }
    let store = data(srv.get(&path, &w.token).send().await.unwrap()).await;
    assert_eq!(store["name"], "target", "a refused update changed the name");
    assert_eq!(
        store["generalAccess"], "FOLLOW_USER_SETTING",
        "a refused update changed generalAccess"
    );
    w.still_up("junk store-update bodies").await;
    p.finish();
}

#[tokio::test]
async fn json_bodies_over_one_mib_are_413_and_broken_compression_is_400() {
    let mut p = Problems::default();
    let w = World::new().await;
    let srv = &w.srv;
    let path = format!("/v2/key-value-stores/{}", w.id);
    let big_schema = format!("{{\"schema\":{{\"title\":\"{}\"}}}}", "x".repeat(MIB + 10));
    let big_name = format!("{{\"name\":\"{}\"}}", "a".repeat(MIB + 10));
    for (what, method, target, body, encoding) in [
        (
            "create, 1 MiB+",
            Method::POST,
            "/v2/key-value-stores?name=big",
            big_schema.clone().into_bytes(),
            None,
        ),
        (
            "update, 1 MiB+",
            Method::PUT,
            path.as_str(),
            big_name.clone().into_bytes(),
            None,
        ),
        (
            "create, gzip of 1 MiB+",
            Method::POST,
            "/v2/key-value-stores?name=big",
            gzip(big_schema.as_bytes()),
            Some("gzip"),
        ),
        (
            "update, brotli of 1 MiB+",
            Method::PUT,
            path.as_str(),
            brotli(big_name.as_bytes()),
            Some("br"),
        ),
        (
            "update, gzip of 64 MiB of zeros",
            Method::PUT,
            path.as_str(),
            gzip(&vec![0u8; 64 * MIB]),
            Some("gzip"),
        ),
    ] {
        let mut rb = srv
            .req(method, target, Some(&w.token))
            .header("content-type", "application/json");
        if let Some(e) = encoding {
            rb = rb.header("content-encoding", e);
        }
        let started = Instant::now();
        let resp = rb.body(body).send().await.unwrap();
        assert!(
            resp.headers()
                .get("connection")
                .is_some_and(|v| v == "close"),
            "{what}: 413 without Connection: close"
        );
        p.expect(what, resp, 413, "request-too-large").await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: took {:?}",
            started.elapsed()
        );
    }

    // Truncated and corrupt compressed JSON.
    let body = br#"{"schema": {"title": "a title that makes the body a bit longer"}}"#;
    let gz = gzip(body);
    let br = brotli(body);
    for (what, method, target, bytes, encoding) in [
        (
            "create, truncated gzip",
            Method::POST,
            "/v2/key-value-stores?name=broken",
            gz[..gz.len() / 2].to_vec(),
            "gzip",
        ),
        (
            "create, gzip header only",
            Method::POST,
            "/v2/key-value-stores?name=broken",
            gz[..10].to_vec(),
            "gzip",
        ),
        (
            "update, truncated brotli",
            Method::PUT,
            path.as_str(),
            br[..br.len() / 2].to_vec(),
            "br",
        ),
        (
            "update, not deflate at all",
            Method::PUT,
            path.as_str(),
            b"\x78\x9c this is not zlib".to_vec(),
            "deflate",
        ),
    ] {
        let resp = srv
            .req(method, target, Some(&w.token))
            .header("content-encoding", encoding)
            .body(bytes)
            .send()
            .await
            .unwrap();
        p.expect(what, resp, 400, "invalid-request").await;
    }
    let resp = srv
        .get("/v2/key-value-stores?unnamed=1", &w.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        data(resp).await["total"],
        1,
        "a refused create made a store"
    );
    let store = data(srv.get(&path, &w.token).send().await.unwrap()).await;
    assert_eq!(store["name"], "target");
    w.still_up("oversized and broken JSON bodies").await;
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// Query parameters

#[tokio::test]
async fn junk_query_parameters_are_400_invalid_parameter() {
    let mut p = Problems::default();
    let w = World::new().await;
    let srv = &w.srv;
    let id = &w.id;
    let long = "9".repeat(10_000);
    let junk_numbers = [
        "-1",
        "abc",
        // Doubles are numbers (Apify types both as double), but not these spellings of them.
        "-1.5",
        "1e",
        "inf",
        "Infinity",
        "1.5.5",
        "0x10",
        "%201",
        "1%00",
        "%00",
        "%FF",
        "%E2%88%9E", // ∞
        "NaN",
    ];
    let junk_bools = ["maybe", "2", "-1", "yes", "on", "%00", "%FF", "tru"];
    let mut cases: Vec<(String, &str)> = Vec::new();
    for v in junk_numbers {
        cases.push((
            format!("/v2/key-value-stores?limit={v}"),
            "invalid-parameter",
        ));
        cases.push((
            format!("/v2/key-value-stores?offset={v}"),
            "invalid-parameter",
        ));
        cases.push((
            format!("/v2/key-value-stores/{id}/keys?limit={v}"),
            "invalid-parameter",
        ));
    }
    for v in junk_bools {
        cases.push((
            format!("/v2/key-value-stores?desc={v}"),
            "invalid-parameter",
        ));
        cases.push((
            format!("/v2/key-value-stores?unnamed={v}"),
            "invalid-parameter",
        ));
        cases.push((
            format!("/v2/key-value-stores/{id}/records/a?attachment={v}"),
            "invalid-parameter",
        ));
    }
    let long_bool = "t".repeat(10_000);
    for q in [
        format!("limit=-{long}"),
        format!("offset=-{long}"),
        format!("desc={long_bool}"),
        format!("unnamed={long_bool}"),
        "limit=1&limit=1".to_owned(),
        "offset=0&offset=0".to_owned(),
        "desc=1&desc=0".to_owned(),
        "unnamed=1&unnamed=1".to_owned(),
        "ownership=bogus".to_owned(),
        "ownership=ownedbyme".to_owned(),
        "ownership=%00".to_owned(),
        format!("ownership={}", "o".repeat(10_000)),
        "ownership=ownedByMe&ownership=ownedByMe".to_owned(),
    ] {
        cases.push((format!("/v2/key-value-stores?{q}"), "invalid-parameter"));
    }
    for q in [
        "exclusiveStartKey=a&exclusiveStartKey=b",
        "prefix=a&prefix=a",
        "limit=1&limit=2",
        "collection=x&collection=x",
    ] {
        cases.push((
            format!("/v2/key-value-stores/{id}/keys?{q}"),
            "invalid-parameter",
        ));
    }
    for q in ["prefix=a&prefix=b", "signature=a&signature=a"] {
        cases.push((
            format!("/v2/key-value-stores/{id}/records?{q}"),
            "invalid-parameter",
        ));
    }
    cases.push((
        format!("/v2/key-value-stores/{id}/records/a?attachment=1&attachment=1"),
        "invalid-parameter",
    ));
    for c in ["x", "%00", "%FF", "..", "a%2Fb"] {
        cases.push((
            format!("/v2/key-value-stores/{id}/keys?collection={c}"),
            "invalid-collection",
        ));
        cases.push((
            format!("/v2/key-value-stores/{id}/records?collection={c}"),
            "invalid-collection",
        ));
    }
    cases.push((
        format!(
            "/v2/key-value-stores/{id}/keys?collection={}",
            "c".repeat(10_000)
        ),
        "invalid-collection",
    ));
    for (path, error_type) in &cases {
        let resp = srv.get(path, &w.token).send().await.unwrap();
        let shown: String = path.chars().take(120).collect();
        p.expect(&format!("GET {shown}"), resp, 400, error_type)
            .await;
    }
    w.still_up("junk query parameters").await;

    // Empty values count as absent.
    for path in [
        "/v2/key-value-stores?limit=&offset=&desc=&unnamed=&ownership=".to_owned(),
        format!("/v2/key-value-stores/{id}/keys?limit=&exclusiveStartKey=&prefix=&collection="),
        format!("/v2/key-value-stores/{id}/records/a?attachment=&signature="),
    ] {
        let resp = srv.get(&path, &w.token).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
    }

    // A `limit` above the maximum is clamped (shared/DECISIONS.md), however many digits it has.
    for v in ["99999999999999999999999", long.as_str()] {
        for path in [
            format!("/v2/key-value-stores?limit={v}"),
            format!("/v2/key-value-stores/{id}/keys?limit={v}"),
        ] {
            let resp = srv.get(&path, &w.token).send().await.unwrap();
            let (status, body) = status_and_body(resp).await;
            let shown: String = path.chars().take(80).collect();
            let page: Value = serde_json::from_slice(&body).unwrap_or_default();
            p.check(status == 200 && page["data"]["limit"] == 1000, || {
                format!(
                    "GET {shown}: a limit above the maximum is clamped to 1000 \
                     (shared/DECISIONS.md), got {status}: {}",
                    String::from_utf8_lossy(&body)
                )
            });
        }
    }
    // An offset past the end: an empty page, or a 400 for a number no store count can reach.
    for v in ["99999999999999999999999", long.as_str()] {
        let resp = srv
            .get(&format!("/v2/key-value-stores?offset={v}"), &w.token)
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_body(resp).await;
        if status == 200 {
            let page: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(page["data"]["count"], 0);
        } else {
            p.exact("huge offset", status, &body, 400, "invalid-parameter");
        }
    }

    // Start keys and prefixes that no key can have: a valid, empty or partial page.
    let long_key = "z".repeat(10_000);
    let long_prefix = "a".repeat(10_000);
    for (q, expected) in [
        ("exclusiveStartKey=%00".to_owned(), vec!["a", "b", "c"]),
        ("exclusiveStartKey=a%00".to_owned(), vec!["b", "c"]),
        ("exclusiveStartKey=%FF".to_owned(), vec![]),
        ("exclusiveStartKey=%C3%A4".to_owned(), vec![]),
        ("exclusiveStartKey=%2F".to_owned(), vec!["a", "b", "c"]),
        (
            "exclusiveStartKey=..%2F..%2F".to_owned(),
            vec!["a", "b", "c"],
        ),
        (format!("exclusiveStartKey={long_key}"), vec![]),
        (format!("exclusiveStartKey=a{long_key}"), vec!["b", "c"]),
        ("prefix=%00".to_owned(), vec![]),
        ("prefix=a%00".to_owned(), vec![]),
        ("prefix=%FF".to_owned(), vec![]),
        ("prefix=%25".to_owned(), vec![]),
        ("prefix=_".to_owned(), vec![]),
        ("prefix=%E2%80%AE".to_owned(), vec![]),
        (format!("prefix={long_prefix}"), vec![]),
        (
            format!("prefix=a&exclusiveStartKey={long_key}&limit=1"),
            vec![],
        ),
    ] {
        let shown: String = q.chars().take(80).collect();
        let resp = srv
            .get(&format!("/v2/key-value-stores/{id}/keys?{q}"), &w.token)
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_body(resp).await;
        if status != 200 {
            p.note(format!(
                "keys?{shown}: expected 200, got {status}: {}",
                String::from_utf8_lossy(&body)
            ));
            continue;
        }
        let page: Value = serde_json::from_slice(&body).unwrap();
        let keys: Vec<&str> = page["data"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        p.check(keys == expected, || format!("keys?{shown}: {keys:?}"));
        p.check(
            page["data"]["isTruncated"] == false && page["data"]["nextExclusiveStartKey"].is_null(),
            || format!("keys?{shown}: {page}"),
        );
        // The same on the ZIP download (only `prefix` applies there).
        if q.starts_with("prefix=") {
            let resp = srv
                .get(&format!("/v2/key-value-stores/{id}/records?{q}"), &w.token)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            p.check(status == 200, || format!("records?{shown}: {status}"));
        }
    }
    // Unknown parameters are ignored, whatever they hold.
    let resp = srv
        .get(
            &format!(
                "/v2/key-value-stores/{id}/keys?%00=%00&%FF=1&&&=&a=1&a=2&{}=x",
                "k".repeat(10_000)
            ),
            &w.token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    w.still_up("junk start keys and prefixes").await;
    p.finish();
}

#[tokio::test]
async fn junk_signatures_and_tokens_are_403_and_401() {
    let mut p = Problems::default();
    let w = World::new().await;
    let srv = &w.srv;
    let id = &w.id;
    let b64 = |b: &[u8]| enc(&base64::engine::general_purpose::STANDARD.encode(b));
    let b64url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let junk: Vec<String> = vec![
        "garbage".into(),
        "%00".into(),
        "%FF%FE".into(),
        "a".repeat(10_000),
        enc(&"é".repeat(3_000)),
        b64(&[0xff; 64]),
        b64(&(0..=255u8).collect::<Vec<u8>>()),
        b64url(b"0.0.not-a-real-hmac"),
        b64url(b"0.99999999999999999999999.x"),
        b64url(b"0.-1.x"),
        b64url(b"1.0.x"),
        b64url(b".."),
        b64url(b"0"),
        b64url(&[0xc3, 0x28, 0x2e, 0x30, 0x2e]),
        "====".into(),
        "%3D".into(),
    ];
    for sig in &junk {
        let shown: String = sig.chars().take(40).collect();
        for path in [
            format!("/v2/key-value-stores/{id}/keys?signature={sig}"),
            format!("/v2/key-value-stores/{id}/records?signature={sig}"),
            format!("/v2/key-value-stores/{id}/records/a?signature={sig}"),
        ] {
            let resp = srv.req(Method::GET, &path, None).send().await.unwrap();
            let (status, body) = status_and_body(resp).await;
            p.exact(
                &format!("anonymous {} with signature {shown}", &path[..50]),
                status,
                &body,
                403,
                "invalid-signature",
            );
        }
        // No signature opens the store object or a write.
        let resp = srv
            .req(
                Method::GET,
                &format!("/v2/key-value-stores/{id}?signature={sig}"),
                None,
            )
            .send()
            .await
            .unwrap();
        p.expect(
            &format!("store with signature {shown}"),
            resp,
            404,
            "record-or-token-not-found",
        )
        .await;
        let resp = srv
            .req(
                Method::PUT,
                &format!("/v2/key-value-stores/{id}/records/a?signature={sig}"),
                None,
            )
            .body("x")
            .send()
            .await
            .unwrap();
        p.expect(
            &format!("write with signature {shown}"),
            resp,
            401,
            "token-not-provided",
        )
        .await;
    }
    w.still_up("junk signatures").await;

    // Tokens: in the query and in the header.
    let long_token = "t".repeat(10_000);
    for token in [
        "garbage",
        "%00",
        "%FF",
        "%20",
        "Bearer%20x",
        long_token.as_str(),
    ] {
        for path in [
            format!("/v2/key-value-stores?token={token}"),
            format!("/v2/key-value-stores/{id}?token={token}"),
            format!("/v2/key-value-stores/{id}/records/a?token={token}"),
        ] {
            let resp = srv.req(Method::GET, &path, None).send().await.unwrap();
            p.expect(
                &format!("token {}", &token[..token.len().min(20)]),
                resp,
                401,
                "invalid-token",
            )
            .await;
        }
    }
    let resp = srv
        .req(
            Method::GET,
            &format!("/v2/key-value-stores?token={}&token=x", w.token),
            None,
        )
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_body(resp).await;
    if let Some(error_type) = p.envelope("repeated token", status, &body) {
        p.check(
            ["invalid-parameter", "invalid-token"].contains(&error_type.as_str()),
            || format!("repeated token: {status} {error_type}"),
        );
    }
    let long_bearer = format!("Bearer {}", "x".repeat(10_000));
    for value in [
        "Bearer",
        "Bearer ",
        "Bearer  ",
        "bearer",
        "Basic YWxpY2U6c2VjcmV0",
        "Token abc",
        "Bearer a b c",
        long_bearer.as_str(),
    ] {
        let resp = srv
            .req(Method::GET, "/v2/key-value-stores", None)
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        p.expect(
            &format!("Authorization {}", &value[..value.len().min(30)]),
            resp,
            401,
            "invalid-token",
        )
        .await;
    }
    w.still_up("junk tokens").await;
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// Keys, store references, names

#[tokio::test]
async fn invalid_and_overlong_keys_and_store_references() {
    let mut p = Problems::default();
    let w = World::new().await;
    let srv = &w.srv;
    let long_key = "k".repeat(10_000);
    let long_ff = "%FF".repeat(3_000);
    let keys = [
        long_key.as_str(),
        "k%2Fk",
        "%2F",
        "%00",
        "a%00",
        "%F0%9F%92%A9",
        "%E2%80%AE",
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E%2F%2E%2E%2Fetc",
        "a%0D%0ASet-Cookie:%20x=1",
        "%25",
        "a%5Cb",
        "%7F",
        long_ff.as_str(),
    ];
    for key in keys {
        let shown: String = key.chars().take(30).collect();
        let path = w.rec(key);
        for method in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
            let resp = srv
                .req(method.clone(), &path, Some(&w.token))
                .body("x")
                .send()
                .await
                .unwrap();
            p.expect(
                &format!("{method} key {shown}"),
                resp,
                400,
                "invalid-record-key",
            )
            .await;
        }
        let resp = srv
            .req(Method::HEAD, &path, Some(&w.token))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        p.check(status == 400, || format!("HEAD key {shown}: {status}"));
    }
    assert_eq!(w.keys().await, ["a", "b", "c"]);
    w.still_up("invalid keys").await;

    // Store references that cannot name a store: a missing store, in the envelope, whatever
    // the endpoint; never a framework rejection.
    let long_ref = "s".repeat(10_000);
    let long_name_ref = format!("~{}", "n".repeat(10_000));
    let refs = [
        "%00",
        "~%00",
        "~a%00b",
        "~a%2Fb",
        "a%2Fb",
        "~",
        "~~",
        "~~target",
        "alice~",
        "alice~~target",
        "a~b~c",
        "%7Etarget%00",
        "~target%20",
        "%F0%9F%92%A9",
        "~b%C3%A4ume",
        "%FF",
        "~%FF",
        "alice~%FF",
        "..%2F..",
        long_ref.as_str(),
        long_name_ref.as_str(),
    ];
    for r in refs {
        let shown: String = r.chars().take(30).collect();
        for (method, path) in [
            (Method::GET, format!("/v2/key-value-stores/{r}")),
            (Method::PUT, format!("/v2/key-value-stores/{r}")),
            (Method::DELETE, format!("/v2/key-value-stores/{r}")),
            (Method::GET, format!("/v2/key-value-stores/{r}/keys")),
            (Method::GET, format!("/v2/key-value-stores/{r}/records")),
            (Method::GET, format!("/v2/key-value-stores/{r}/records/a")),
            (Method::PUT, format!("/v2/key-value-stores/{r}/records/a")),
            (
                Method::DELETE,
                format!("/v2/key-value-stores/{r}/records/a"),
            ),
        ] {
            let resp = srv
                .req(method.clone(), &path, Some(&w.token))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            p.expect(
                &format!("{method} {path:.60} (store {shown})"),
                resp,
                404,
                "record-not-found",
            )
            .await;
        }
        let resp = srv
            .req(
                Method::GET,
                &format!("/v2/key-value-stores/{r}/records/a"),
                None,
            )
            .send()
            .await
            .unwrap();
        p.expect(
            &format!("anonymous GET record of store {shown}"),
            resp,
            404,
            "record-or-token-not-found",
        )
        .await;
    }
    w.still_up("invalid store references").await;

    // Names in `?name=` of a create.
    let long_name = "a".repeat(10_000);
    for name in [
        "%00",
        "a%00",
        "a%2Fb",
        "%2F",
        "b%C3%A4ume",
        "%F0%9F%92%A9",
        "%FF",
        "a%20b",
        "~a",
        "a~b",
        "..",
        "%2E%2E",
        "a%0D%0Ab",
        long_name.as_str(),
    ] {
        let shown: String = name.chars().take(30).collect();
        let resp = srv
            .req(
                Method::POST,
                &format!("/v2/key-value-stores?name={name}"),
                Some(&w.token),
            )
            .send()
            .await
            .unwrap();
        p.expect(
            &format!("create named {shown}"),
            resp,
            400,
            "invalid-parameter",
        )
        .await;
    }
    let resp = srv
        .get("/v2/key-value-stores?unnamed=1", &w.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        data(resp).await["total"],
        1,
        "a refused create made a store"
    );
    w.still_up("invalid store names").await;
    p.finish();
}

/// The exact answer a case must get, when there is one.
type Exact = Option<(u16, &'static str)>;

#[tokio::test]
async fn dot_segments_on_a_raw_socket_never_reach_another_resource() {
    let mut p = Problems::default();
    let w = World::new().await;
    let id = &w.id;
    let token = &w.token;
    // `reqwest` removes dot segments (also `%2E%2E`), so these go over a plain socket.
    let cases: Vec<(&str, String, Exact)> = vec![
        (
            "GET",
            format!("/v2/key-value-stores/{id}/records/.."),
            Some((400, "invalid-record-key")),
        ),
        (
            "PUT",
            format!("/v2/key-value-stores/{id}/records/%2e"),
            Some((400, "invalid-record-key")),
        ),
        (
            "PUT",
            format!("/v2/key-value-stores/{id}/records/..%2F..%2F{id}"),
            Some((400, "invalid-record-key")),
        ),
        (
            "GET",
            "/v2/key-value-stores/..".to_owned(),
            Some((404, "record-not-found")),
        ),
        (
            "GET",
            "/v2/key-value-stores/.".to_owned(),
            Some((404, "record-not-found")),
        ),
        (
            "PUT",
            "/v2/key-value-stores/%2E%2E".to_owned(),
            Some((404, "record-not-found")),
        ),
        (
            "GET",
            "/v2/key-value-stores/../keys".to_owned(),
            Some((404, "record-not-found")),
        ),
        (
            "GET",
            "/v2/key-value-stores/./records/a".to_owned(),
            Some((404, "record-not-found")),
        ),
        // Extra segments: no route, whatever they hold.
        (
            "GET",
            format!("/v2/key-value-stores/{id}/./records/a"),
            Some((404, "page-not-found")),
        ),
        (
            "GET",
            format!("/v2/key-value-stores/{id}/records/../records/a"),
            None,
        ),
        (
            "GET",
            format!("/v2/key-value-stores/{id}/records/a/.."),
            None,
        ),
        ("DELETE", format!("/v2/key-value-stores/x/../{id}"), None),
        ("GET", "/v2/../v2/key-value-stores".to_owned(), None),
        (
            "GET",
            "/v2/key-value-stores/%2E%2E/%2E%2E/healthz".to_owned(),
            None,
        ),
        ("GET", "//v2/key-value-stores".to_owned(), None),
        ("GET", "/v2//key-value-stores".to_owned(), None),
        ("GET", format!("/v2/key-value-stores/{id}//records/a"), None),
    ];
    for (method, target, exact) in cases {
        let what = format!("{method} {target}");
        let body = if method == "PUT" { "x" } else { "" };
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let resp = raw_exchange(&w, request.as_bytes(), &what)
            .await
            .unwrap_or_else(|| panic!("{what}: closed without an answer"));
        match exact {
            Some((status, error_type)) => {
                p.exact(&what, resp.status, &resp.body, status, error_type)
            }
            None => {
                p.envelope(&what, resp.status, &resp.body);
                p.check(resp.status == 404, || {
                    format!("{what}: expected a 404, got {}", resp.status)
                });
            }
        }
    }
    // The store and its records are untouched.
    assert_eq!(w.keys().await, ["a", "b", "c"]);
    w.still_up("dot segments").await;
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// Oversized bodies

/// Sends `head`, then streams `parts` (as they are, or each as one chunk of a chunked body) as
/// fast as the server takes them, while the answer is read at the same time. Returns the answer,
/// how long it took after the head was sent, and how many body bytes had been written by then.
///
/// Reading while writing matters: a server that answers 413 and closes makes the client's next
/// write fail (EPIPE), and an HTTP client that gives up on that error never sees the 413.
async fn upload_while_reading(
    w: &World,
    head: &str,
    parts: impl Iterator<Item = Bytes> + Send + 'static,
    chunked: bool,
) -> (Option<Raw>, Duration, u64) {
    let sock = TcpStream::connect(w.addr()).await.unwrap();
    let (rd, mut wr) = sock.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        for part in parts {
            let framed = if chunked {
                let mut f = format!("{:x}\r\n", part.len()).into_bytes();
                f.extend_from_slice(&part);
                f.extend_from_slice(b"\r\n");
                Bytes::from(f)
            } else {
                part
            };
            if wr.write_all(&framed).await.is_err() {
                break;
            }
            counter.fetch_add(framed.len() as u64, Ordering::SeqCst);
        }
        if chunked {
            let _ = wr.write_all(b"0\r\n\r\n").await;
        }
        wr
    });
    let mut reader = Reader::new(rd);
    let resp = reader.next_within(Duration::from_secs(20), head).await;
    let elapsed = resp
        .as_ref()
        .map_or_else(|| started.elapsed(), |r| r.at - started);
    let sent = written.load(Ordering::SeqCst);
    if resp.is_some() {
        assert!(
            reader.closes_within(Duration::from_secs(10)).await,
            "the connection stays open after the 413"
        );
    }
    writer.abort();
    (resp, elapsed, sent)
}

/// `total` bytes of `x` in pieces of 64 KiB.
fn filler(total: usize) -> impl Iterator<Item = Bytes> + Send + 'static {
    let piece = Bytes::from(vec![b'x'; 64 * 1024]);
    let n = total / piece.len();
    let rest = Bytes::from(vec![b'x'; total % piece.len()]);
    std::iter::repeat_n(piece, n).chain(std::iter::once(rest))
}

#[tokio::test]
async fn a_declared_50_mb_body_is_refused_with_413_before_it_is_read() {
    let mut p = Problems::default();
    let w = World::with(TestServer::start_with(|c| c.max_record_bytes = 1024).await).await;
    let total: u64 = 50 * 1000 * 1000;
    for (what, target) in [
        ("record PUT", w.rec("big")),
        (
            "store create",
            "/v2/key-value-stores?name=big-body".to_owned(),
        ),
        ("store update", format!("/v2/key-value-stores/{}", w.id)),
    ] {
        let method = if what == "store create" {
            "POST"
        } else {
            "PUT"
        };
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n",
            w.token
        );
        let (resp, elapsed, sent) =
            upload_while_reading(&w, &head, filler(total as usize), false).await;
        let Some(resp) = resp else {
            p.note(format!(
                "{what}: the connection closed without the 413 ({sent} bytes sent)"
            ));
            continue;
        };
        p.exact(what, resp.status, &resp.body, 413, "request-too-large");
        p.check(resp.has_header("connection: close"), || {
            format!("{what}: 413 without Connection: close: {}", resp.head)
        });
        p.check(elapsed < Duration::from_secs(2), || {
            format!("{what}: the 413 took {elapsed:?}")
        });
        p.check(sent < total, || {
            format!("{what}: the whole body was sent before the 413 ({sent} bytes)")
        });
        eprintln!("{what}: 413 after {elapsed:?}, {sent} of {total} bytes sent");
    }

    // A client that sends the head and waits (`Expect: 100-continue`, as curl does for large
    // bodies), or one on a slow link that has sent only a little so far, gets the 413 at once:
    // the declared length already exceeds the limit.
    for (what, method, target, expect_continue) in [
        ("record PUT", "PUT", w.rec("big"), true),
        (
            "store create",
            "POST",
            "/v2/key-value-stores?name=big-body".to_owned(),
            true,
        ),
        ("record PUT", "PUT", w.rec("big"), false),
    ] {
        let mut sock = TcpStream::connect(w.addr()).await.unwrap();
        let (expect_header, first_bytes, what) = if expect_continue {
            (
                "Expect: 100-continue\r\n",
                String::new(),
                format!("{what} with Expect: 100-continue, waiting"),
            )
        } else {
            (
                "",
                "x".repeat(4096),
                format!("{what}, 4 KB of the body sent, then a pause"),
            )
        };
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Length: {total}\r\n{expect_header}\r\n{first_bytes}",
            w.token
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut reader = Reader::new(sock);
        let Some(resp) = reader.next_within(Duration::from_secs(15), &what).await else {
            p.note(format!("{what}: closed without an answer"));
            continue;
        };
        let elapsed = resp.at - started;
        p.exact(&what, resp.status, &resp.body, 413, "request-too-large");
        p.check(elapsed < Duration::from_secs(2), || {
            format!(
                "{what}: the 413 came only after {elapsed:?} (interim answers before it: {:?})",
                reader.interim
            )
        });
    }
    assert_eq!(w.keys().await, ["a", "b", "c"]);
    w.still_up("declared oversized bodies").await;
    p.finish();
}

/// A compressed body: `first`, then `piece` repeated `n` times; each piece decodes to 1 MiB.
struct Bomb {
    first: Vec<u8>,
    piece: Bytes,
    n: usize,
}

/// Raw deflate of 1 MiB of zeros ending in a full flush: byte-aligned, with no reference to
/// earlier data, so it may be repeated any number of times inside one deflate stream.
fn deflate_zeros_chunk() -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let mut out = Vec::with_capacity(MIB);
    c.compress_vec(&vec![0u8; MIB], &mut out, flate2::FlushCompress::Full)
        .unwrap();
    out
}

/// Brotli of zeros, flushed after every MiB: the first piece (with the stream header) and the
/// steady-state piece that repeats, each decoding to 1 MiB.
fn brotli_zeros_pieces() -> (Vec<u8>, Vec<u8>) {
    let mut w = brotli::CompressorWriter::new(Vec::new(), 1 << 16, 5, 24);
    let mut pieces = Vec::new();
    let mut seen = 0;
    for _ in 0..4 {
        w.write_all(&vec![0u8; MIB]).unwrap();
        w.flush().unwrap();
        pieces.push(w.get_ref()[seen..].to_vec());
        seen = w.get_ref().len();
    }
    assert_eq!(pieces[2], pieces[3], "brotli pieces do not repeat");
    (pieces[0].clone(), pieces[3].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_gb_compression_bombs_are_413_within_two_seconds() {
    let mut p = Problems::default();
    let w = World::with(TestServer::start_with(|c| c.max_record_bytes = MIB as u64).await).await;
    let count = 10 * 1024; // 10 GiB of zeros once decompressed
    let deflate = Bytes::from(deflate_zeros_chunk());
    let (br_first, br_rest) = brotli_zeros_pieces();
    let br_rest = Bytes::from(br_rest);
    let gzip_header = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let zlib_header = vec![0x78, 0xda];

    // The streams are what they claim: a few pieces decode to that many MiB of zeros.
    {
        use std::io::Read;
        let mut sample = gzip_header.clone();
        for _ in 0..3 {
            sample.extend_from_slice(&deflate);
        }
        let mut out = Vec::new();
        let _ = flate2::read::GzDecoder::new(&sample[..]).read_to_end(&mut out);
        assert_eq!(out.len(), 3 * MIB);
        assert!(out.iter().all(|b| *b == 0));
        let mut sample = br_first.clone();
        for _ in 0..3 {
            sample.extend_from_slice(&br_rest);
        }
        let mut out = Vec::new();
        let _ = brotli::Decompressor::new(&sample[..], 4096).read_to_end(&mut out);
        assert_eq!(out.len(), 4 * MIB);
        assert!(out.iter().all(|b| *b == 0));
    }

    let id = &w.id;
    let cases: Vec<(&str, &str, String, &str, Bomb, bool)> = vec![
        (
            "gzip record",
            "PUT",
            w.rec("bomb"),
            "gzip",
            Bomb {
                first: gzip_header.clone(),
                piece: deflate.clone(),
                n: count,
            },
            false,
        ),
        (
            "gzip record, chunked",
            "PUT",
            w.rec("bomb"),
            "gzip",
            Bomb {
                first: gzip_header.clone(),
                piece: deflate.clone(),
                n: count,
            },
            true,
        ),
        (
            "deflate record",
            "POST",
            w.rec("bomb"),
            "deflate",
            Bomb {
                first: zlib_header,
                piece: deflate.clone(),
                n: count,
            },
            true,
        ),
        (
            "brotli record",
            "PUT",
            w.rec("bomb"),
            "br",
            Bomb {
                first: br_first.clone(),
                piece: br_rest.clone(),
                n: count - 1,
            },
            false,
        ),
        (
            "gzip store create",
            "POST",
            "/v2/key-value-stores?name=bomb".to_owned(),
            "gzip",
            Bomb {
                first: gzip_header,
                piece: deflate,
                n: count,
            },
            true,
        ),
        (
            "brotli store update",
            "PUT",
            format!("/v2/key-value-stores/{id}"),
            "br",
            Bomb {
                first: br_first,
                piece: br_rest,
                n: count - 1,
            },
            false,
        ),
    ];
    for (what, method, target, encoding, Bomb { first, piece, n }, chunked) in cases {
        let compressed = first.len() + piece.len() * n;
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {compressed}")
        };
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Encoding: {encoding}\r\n{framing}\r\n\r\n",
            w.token
        );
        let parts = std::iter::once(Bytes::from(first)).chain(std::iter::repeat_n(piece, n));
        let (resp, elapsed, sent) = upload_while_reading(&w, &head, parts, chunked).await;
        let Some(resp) = resp else {
            p.note(format!(
                "{what}: closed without an answer after {elapsed:?} ({sent} of {compressed} \
                 bytes sent)"
            ));
            continue;
        };
        p.exact(what, resp.status, &resp.body, 413, "request-too-large");
        p.check(elapsed < Duration::from_secs(2), || {
            format!("{what}: the 413 took {elapsed:?}")
        });
        // The gzip and deflate streams (10 MB) are larger than what the sockets buffer: the
        // server answered without taking them whole. (The brotli ones are 130 KB in all.)
        if compressed > 8 * MIB {
            p.check(sent < compressed as u64, || {
                format!("{what}: the client had to send the whole {compressed}-byte stream")
            });
        }
        eprintln!("{what}: 413 after {elapsed:?}; {sent} of {compressed} compressed bytes sent");
    }
    assert_eq!(w.keys().await, ["a", "b", "c"]);
    let resp = w
        .srv
        .get("/v2/key-value-stores/~bomb", &w.token)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-not-found").await;
    w.still_up("compression bombs").await;
    p.finish();
}

/// The official clients send the whole body before they read the answer, and take a failed
/// write for a network error that they retry (shared/DECISIONS.md: "close the connection after
/// draining a bounded amount ... a reset connection would make them upload again"). So a 6 MB
/// upload over the limit must get its 413 delivered whether it is plain or compressed: the server
/// reads the rest of it before closing, instead of closing while the client is still sending.
#[tokio::test]
async fn a_413_reaches_a_client_that_sends_the_whole_body_before_reading() {
    let mut p = Problems::default();
    let w = World::with(TestServer::start_with(|c| c.max_record_bytes = MIB as u64).await).await;
    let mut gzipped = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let piece = deflate_zeros_chunk();
    while gzipped.len() < 6_000_000 {
        gzipped.extend_from_slice(&piece);
    }
    for (what, encoding, body) in [
        ("6 MB plain", "identity", vec![b'x'; 6_000_000]),
        ("6 MB of gzip (6 GB of zeros)", "gzip", gzipped),
    ] {
        let mut sock = TcpStream::connect(w.addr()).await.unwrap();
        let head = format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Encoding: {encoding}\r\nContent-Length: {}\r\n\r\n",
            w.rec("big"),
            w.token,
            body.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let written = tokio::time::timeout(Duration::from_secs(10), sock.write_all(&body))
            .await
            .unwrap_or_else(|_| panic!("{what}: the upload stalled"));
        let mut reader = Reader::new(sock);
        let resp = reader.next(what).await;
        p.check(written.is_ok(), || {
            format!(
                "{what}: the server closed the connection while the client was still sending \
                 ({:?}); a client that sends its whole body first sees a network error instead \
                 of the 413 (the 413 was {})",
                written.as_ref().err().map(std::io::Error::kind),
                if resp.is_some() {
                    "in the socket buffer"
                } else {
                    "lost"
                }
            )
        });
        match resp {
            Some(resp) => p.exact(what, resp.status, &resp.body, 413, "request-too-large"),
            None => p.note(format!("{what}: closed without an answer")),
        }
    }
    assert_eq!(w.keys().await, ["a", "b", "c"]);
    w.still_up("413 after a whole body").await;
    p.finish();
}

/// The same holds for every answer given before an upload is read: a bad token, a store that is
/// gone (a PUT racing the store's delete), no token at all. The server reads the rest of the
/// upload (within the bounds of the 413's drain) so that the client, sending its whole body
/// first, gets the answer; having read it to its end, the connection serves the next request.
#[tokio::test]
async fn refusals_before_an_upload_is_read_reach_a_client_that_sends_it_all_first() {
    let mut p = Problems::default();
    let w = World::new().await;
    let size = 6_000_000;
    let bearer = format!("Authorization: Bearer {}\r\n", w.token);
    for (what, auth, path, status, error_type) in [
        (
            "bad token",
            "Authorization: Bearer nope\r\n",
            w.rec("x"),
            401,
            "invalid-token",
        ),
        (
            "store gone",
            bearer.as_str(),
            "/v2/key-value-stores/noSuchStore00000/records/x".to_owned(),
            404,
            "record-not-found",
        ),
        ("no token", "", w.rec("x"), 401, "token-not-provided"),
    ] {
        let mut sock = TcpStream::connect(w.addr()).await.unwrap();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\n{auth}\
             Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let written =
            tokio::time::timeout(Duration::from_secs(10), sock.write_all(&vec![b'x'; size]))
                .await
                .unwrap_or_else(|_| panic!("{what}: the upload stalled"));
        let mut reader = Reader::new(sock);
        let Some(resp) = reader.next(what).await else {
            p.note(format!(
                "{what}: closed without an answer (writing the upload: {written:?})"
            ));
            continue;
        };
        p.check(written.is_ok(), || {
            format!("{what}: the server closed the connection while the client was still sending ({written:?})")
        });
        p.exact(what, resp.status, &resp.body, status, error_type);
        p.check(!resp.has_header("connection: close"), || {
            format!(
                "{what}: the answer closes the connection (the upload should have been read to its end): {}",
                resp.head
            )
        });
        let next = format!("GET {} HTTP/1.1\r\nHost: x\r\n{bearer}\r\n", w.rec("b"));
        if let Err(e) = reader.r.write_all(next.as_bytes()).await {
            p.note(format!("{what}: the next request could not be sent: {e}"));
            continue;
        }
        match reader.next(what).await {
            Some(r) => p.check(r.status == 200 && r.body == b"b", || {
                format!(
                    "{what}: the next request on the connection got {} {}",
                    r.status,
                    r.text()
                )
            }),
            None => p.note(format!(
                "{what}: the next request on the connection got no answer"
            )),
        }
    }
    assert_eq!(w.keys().await, ["a", "b", "c"]);
    w.still_up("refusals before an upload was read").await;
    p.finish();
}

/// On HTTP/2 the server may answer early and reset the request stream with NO_ERROR (RFC 9113
/// §8.1), but curl 7.88 (Debian 12's) reports that as an error instead of the answer; so the
/// upload is drained there too, and the whole of it is accepted before the 401.
#[tokio::test]
async fn an_http2_upload_refused_before_it_was_read_is_accepted_whole() {
    let w = World::new().await;
    let size = 6_000_000;
    let tcp = TcpStream::connect(w.addr()).await.unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::put(format!("{}{}", w.srv.url, w.rec("x")))
        .header("authorization", "Bearer nope")
        .header("content-length", size.to_string())
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    // Sent as the server's flow-control window allows; a reset stream grants no more.
    let upload = tokio::spawn(async move {
        let mut sent = 0;
        while sent < size {
            body.reserve_capacity(size - sent);
            match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                Some(Ok(n)) => {
                    let n = n.min(size - sent);
                    body.send_data(bytes::Bytes::from(vec![b'x'; n]), sent + n == size)
                        .map_err(|e| format!("after {sent} bytes: {e}"))?;
                    sent += n;
                }
                other => return Err(format!("after {sent} bytes: {other:?}")),
            }
        }
        Ok(sent)
    });
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("no answer within 10 s")
        .expect("the stream failed instead of answering");
    assert_eq!(response.status(), 401);
    let uploaded = tokio::time::timeout(Duration::from_secs(10), upload)
        .await
        .expect("the upload stalled")
        .unwrap();
    assert_eq!(uploaded, Ok(size), "the upload was cut short");
    drop(send);
    driver.abort();
    w.still_up("an HTTP/2 upload refused before it was read")
        .await;
}

// ---------------------------------------------------------------------------------------------
// Broken framing: Content-Length, chunked encoding

#[tokio::test]
async fn wrong_content_length_is_handled() {
    let mut p = Problems::default();
    let w = World::new().await;
    let head = |key: &str, length: &str| {
        format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: text/plain\r\nContent-Length: {length}\r\n",
            w.rec(key),
            w.token
        )
    };

    // Shorter than the body: the rest is the next request on the connection.
    let request = format!(
        "{}\r\nhelloGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        head("short", "5")
    );
    let mut sock = TcpStream::connect(w.addr()).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut reader = Reader::new(sock);
    let first = reader.next("short Content-Length").await;
    p.check(first.as_ref().is_some_and(|r| r.status == 201), || {
        format!("short Content-Length: {first:?}")
    });
    let second = reader.next("the request after the body").await;
    p.check(second.as_ref().is_some_and(|r| r.status == 200), || {
        format!("the request after a short body: {second:?}")
    });

    // Shorter than the body, and the rest is junk: refused by the HTTP layer, never a 5xx.
    let request = format!(
        "{}\r\nhelloTHIS IS NOT\x01 AN HTTP REQUEST\r\n\r\n",
        head("short2", "5")
    );
    let mut sock = TcpStream::connect(w.addr()).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut reader = Reader::new(sock);
    let first = reader.next("short Content-Length, junk after").await;
    p.check(first.as_ref().is_some_and(|r| r.status == 201), || {
        format!("short Content-Length, junk after: {first:?}")
    });
    let second = reader.next("junk after the body").await;
    p.refused("junk after the body", second.as_ref());

    // Longer than the body, then the client stops sending: the body is incomplete.
    let request = format!("{}\r\nonly eleven", head("long", "1000"));
    let mut sock = TcpStream::connect(w.addr()).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    sock.shutdown().await.unwrap(); // half-close: the answer can still come back
    let mut reader = Reader::new(sock);
    let resp = reader.next("long Content-Length, half-closed").await;
    if let Some(resp) = &resp {
        p.exact(
            "long Content-Length, half-closed",
            resp.status,
            &resp.body,
            400,
            "invalid-request",
        );
    }
    // ... or drops the connection altogether.
    for key in ["long2", "long3"] {
        let request = format!("{}\r\npartial", head(key, "1000000"));
        let mut sock = TcpStream::connect(w.addr()).await.unwrap();
        sock.write_all(request.as_bytes()).await.unwrap();
        drop(sock);
    }

    // Content-Length values that are not one number.
    for (what, headers) in [
        ("not a number", "Content-Length: abc\r\n"),
        ("negative", "Content-Length: -1\r\n"),
        ("overflow", "Content-Length: 99999999999999999999999\r\n"),
        ("list", "Content-Length: 5, 6\r\n"),
        (
            "two different",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
        ),
        ("hex", "Content-Length: 0x5\r\n"),
        ("empty", "Content-Length: \r\n"),
        ("plus", "Content-Length: +5\r\n"),
    ] {
        let request = format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{headers}\
             Connection: close\r\n\r\nhello",
            w.rec("cl"),
            w.token
        );
        let resp = raw_exchange(&w, request.as_bytes(), what).await;
        p.refused(&format!("Content-Length {what}"), resp.as_ref());
    }
    // Both Content-Length and chunked: never stored with a length that does not match.
    let request = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 3\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        w.rec("both"),
        w.token
    );
    let resp = raw_exchange(&w, request.as_bytes(), "both framings").await;
    if resp.as_ref().is_some_and(|r| r.status == 201) {
        let got = w
            .srv
            .get(&w.rec("both"), &w.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        p.check(got == "hello", || {
            format!("both framings: stored {got:?}; chunked wins (RFC 9112 6.3)")
        });
    } else {
        p.refused("both framings", resp.as_ref());
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut keys = w.keys().await;
    keys.retain(|k| k != "both");
    p.check(keys == ["a", "b", "c", "short", "short2"], || {
        format!("records after the framing attacks: {keys:?}")
    });
    let resp = w.srv.get(&w.rec("short"), &w.token).send().await.unwrap();
    let got = resp.text().await.unwrap();
    p.check(got == "hello", || {
        format!("the short body was stored as {got:?}")
    });
    w.still_up("wrong Content-Length").await;
    p.finish();
}

#[tokio::test]
async fn bad_chunked_bodies_are_refused() {
    let mut p = Problems::default();
    let w = World::new().await;
    for (what, body) in [
        ("size not hex", "zz\r\nhello\r\n0\r\n\r\n"),
        ("negative size", "-1\r\nhello\r\n0\r\n\r\n"),
        (
            "size overflow",
            "FFFFFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
        ),
        ("size longer than data", "5\r\nhelloEXTRA\r\n0\r\n\r\n"),
        ("size shorter than data", "9\r\nhello\r\n0\r\n\r\n"),
        ("no CRLF after data", "5\r\nhello0\r\n\r\n"),
        ("empty size line", "\r\nhello\r\n0\r\n\r\n"),
        ("size with junk", "5 junk\r\nhello\r\n0\r\n\r\n"),
        ("NUL in size", "5\0\r\nhello\r\n0\r\n\r\n"),
        ("spaces only", "   \r\n\r\n"),
    ] {
        let request = format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}",
            w.rec("chunky"),
            w.token
        );
        let resp = raw_exchange(&w, request.as_bytes(), what).await;
        p.refused(&format!("chunked body, {what}"), resp.as_ref());
        // Once the request reached the API, the broken body is the client's fault.
        if let Some(resp) = resp.as_ref().filter(|r| !r.body.is_empty()) {
            p.exact(what, resp.status, &resp.body, 400, "invalid-request");
        }
    }
    // Truncated: the client closes its side in the middle of a chunk.
    let request = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n100\r\nonly a part",
        w.rec("chunky"),
        w.token
    );
    let mut sock = TcpStream::connect(w.addr()).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    sock.shutdown().await.unwrap();
    let mut reader = Reader::new(sock);
    if let Some(resp) = reader.next("truncated chunk").await {
        p.exact(
            "truncated chunk",
            resp.status,
            &resp.body,
            400,
            "invalid-request",
        );
    }
    // Unknown transfer codings.
    for te in ["gzip", "chunked, gzip", "identity", "bogus"] {
        let request = format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Transfer-Encoding: {te}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            w.rec("chunky"),
            w.token
        );
        let resp = raw_exchange(&w, request.as_bytes(), te).await;
        p.refused(&format!("Transfer-Encoding: {te}"), resp.as_ref());
    }
    assert_eq!(w.keys().await, ["a", "b", "c"]);
    w.still_up("bad chunked bodies").await;
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// Huge headers and URLs

#[tokio::test]
async fn huge_headers_and_very_long_urls_are_refused_without_a_5xx() {
    let mut p = Problems::default();
    let w = World::new().await;
    let token = &w.token;
    let big = |n: usize| "h".repeat(n);
    let cases: Vec<(&str, String)> = vec![
        (
            "a 100 KB header",
            format!(
                "X-Junk: {}\r\nAuthorization: Bearer {token}\r\n",
                big(100_000)
            ),
        ),
        (
            "a 1 MB header",
            format!(
                "X-Junk: {}\r\nAuthorization: Bearer {token}\r\n",
                big(1_000_000)
            ),
        ),
        (
            "a 100 KB token",
            format!("Authorization: Bearer {}\r\n", big(100_000)),
        ),
        (
            "2,000 small headers",
            (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect(),
        ),
        (
            "a 100 KB header name",
            format!("X-{}: v\r\nAuthorization: Bearer {token}\r\n", big(100_000)),
        ),
    ];
    for (what, headers) in cases {
        let request = format!(
            "GET /v2/key-value-stores HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
        );
        let resp = raw_exchange(&w, request.as_bytes(), what).await;
        eprintln!("{what}: {:?}", resp.as_ref().map(|r| r.status));
        match resp {
            None => {}
            Some(r) if r.status == 431 || r.status == 400 => {}
            Some(r) if what == "a 100 KB token" => {
                p.exact(what, r.status, &r.body, 401, "invalid-token")
            }
            Some(r) => p.check(r.status == 200, || {
                format!("{what}: {} {}", r.status, r.text())
            }),
        }
    }
    w.still_up("huge headers").await;

    let long = "p".repeat(100_000);
    for (what, target) in [
        ("a 100 KB path", format!("/v2/key-value-stores/{long}")),
        ("a 100 KB key", w.rec(&long)),
        ("a 100 KB query", format!("/v2/key-value-stores?x={long}")),
        ("a 100 KB unknown path", format!("/{long}")),
        (
            "a 100 KB percent-encoded path",
            format!("/v2/key-value-stores/{}", "%FF".repeat(33_000)),
        ),
    ] {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        );
        let resp = raw_exchange(&w, request.as_bytes(), what).await;
        let status = p.refused(what, resp.as_ref());
        assert!(
            matches!(status, None | Some(414 | 404 | 400 | 431)),
            "{what}: {status:?}"
        );
    }
    // Just under the URI limit of the HTTP layer: the API answers, in the envelope.
    let key = "k".repeat(60_000);
    let resp = w.srv.get(&w.rec(&key), token).send().await.unwrap();
    p.expect("a 60 KB key", resp, 400, "invalid-record-key")
        .await;
    let resp = w
        .srv
        .get(
            &format!("/v2/key-value-stores/{}", "s".repeat(60_000)),
            token,
        )
        .send()
        .await
        .unwrap();
    p.expect("a 60 KB store reference", resp, 404, "record-not-found")
        .await;
    w.still_up("very long URLs").await;
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// Slow and idle clients

/// How long the server takes to close `sock` while the client does what `client` does; `None`
/// when it is still open after 5 s.
async fn time_to_close<F>(
    sock: TcpStream,
    client: impl FnOnce(tokio::net::tcp::OwnedWriteHalf) -> F,
) -> (Option<Duration>, String)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (rd, wr) = sock.into_split();
    let started = Instant::now();
    let task = tokio::spawn(client(wr));
    let mut reader = Reader::new(rd);
    let closed = reader.closes_within(Duration::from_secs(5)).await;
    task.abort();
    let answer = String::from_utf8_lossy(&reader.buf).into_owned();
    (closed.then(|| started.elapsed()), answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_silent_connections_are_closed_after_the_idle_timeout() {
    let mut p = Problems::default();
    let w = World::with(TestServer::start_with(|c| c.idle_timeout = Duration::from_secs(1)).await)
        .await;
    let connect = || TcpStream::connect(w.addr());
    let (slow, silent, half, blank) = tokio::join!(
        // Headers sent one byte every 100 ms, forever.
        time_to_close(connect().await.unwrap(), |mut wr| async move {
            let head = format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
                "a".repeat(1000)
            );
            for b in head.bytes() {
                if wr.write_all(&[b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }),
        // Nothing sent at all.
        time_to_close(connect().await.unwrap(), |wr| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(wr);
        }),
        // Half a request line, then nothing.
        time_to_close(connect().await.unwrap(), |mut wr| async move {
            let _ = wr.write_all(b"GET /v2/key-va").await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        }),
        // Empty lines only (allowed before a request line), one every 100 ms.
        time_to_close(connect().await.unwrap(), |mut wr| async move {
            for _ in 0..100 {
                if wr.write_all(b"\r\n").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }),
    );
    for (what, (closed_after, answer)) in [
        ("headers sent one byte every 100 ms", slow),
        ("a connection that sends nothing", silent),
        ("half a request line, then nothing", half),
        ("an empty line every 100 ms", blank),
    ] {
        match closed_after {
            None => p.note(format!(
                "{what}: still open after 5 s (idle timeout 1 s); answered {answer:?}"
            )),
            Some(t) => {
                p.check(
                    t >= Duration::from_millis(800) && t < Duration::from_secs(3),
                    || format!("{what}: closed after {t:?}, expected about 1 s"),
                );
                p.check(
                    answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
                    || format!("{what}: answered {answer:?}"),
                );
            }
        }
    }
    w.still_up("slow clients").await;
    p.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_do_not_stop_the_server() {
    let mut p = Problems::default();
    let w = World::with(
        TestServer::start_with(|c| {
            c.max_connections = 50;
            c.idle_timeout = Duration::from_secs(1);
        })
        .await,
    )
    .await;
    // Let the setup's pooled connections go idle and be closed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // 200 connections that send nothing. 50 are served; the others wait in the listen backlog
    // (or retry their SYN when it is full) until a slot frees.
    let addr = w.addr();
    let idle: Vec<_> = (0..200)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(addr)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The idle connections are closed by the idle timeout, so a normal request is served after a
    // few rounds of it (200 / 50 slots × 1 s).
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .get(format!("{}/v2/key-value-stores", w.srv.url))
        .bearer_auth(&w.token)
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    let elapsed = started.elapsed();
    match resp {
        Ok(resp) => {
            p.check(resp.status() == 200, || format!("status {}", resp.status()));
            p.check(elapsed < Duration::from_secs(15), || {
                format!("a request behind 200 idle connections was served only after {elapsed:?}")
            });
            eprintln!("served after {elapsed:?} behind 200 idle connections");
        }
        Err(e) => p.note(format!(
            "a request behind 200 idle connections (50 slots, idle timeout 1 s) got no answer \
             in {elapsed:?}: {e}"
        )),
    }
    // Every idle connection got in, and was closed by the server.
    let mut never_connected = 0;
    let mut sockets = Vec::new();
    for task in idle {
        match task.await.unwrap() {
            Ok(Ok(sock)) => sockets.push(sock),
            _ => never_connected += 1,
        }
    }
    let closed = futures_util::future::join_all(sockets.into_iter().map(|sock| async move {
        Reader::new(sock)
            .closes_within(Duration::from_secs(3))
            .await
    }))
    .await;
    let left_open = closed.iter().filter(|c| !**c).count();
    p.check(never_connected == 0, || {
        format!("{never_connected} of the idle connections could not connect within 20 s")
    });
    p.check(left_open == 0, || {
        format!("{left_open} idle connections were never closed by the server")
    });
    p.finish();
    w.still_up("200 idle connections").await;
}

// ---------------------------------------------------------------------------------------------
// Odd requests: HTTP/1.0, no Host, odd methods, odd bytes

#[tokio::test]
async fn http_1_0_missing_host_and_odd_methods() {
    let mut p = Problems::default();
    // A short idle timeout: some cases below are answered by closing the connection.
    let w = World::with(TestServer::start_with(|c| c.idle_timeout = Duration::from_secs(2)).await)
        .await;
    let token = &w.token;
    let id = &w.id;

    // HTTP/1.0: answered, then the connection is closed (no keep-alive asked for).
    let request = "GET /healthz HTTP/1.0\r\n\r\n";
    let mut sock = TcpStream::connect(w.addr()).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut reader = Reader::new(sock);
    let resp = reader.next("HTTP/1.0 healthz").await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(reader.closes_within(Duration::from_secs(5)).await);
    let request = format!(
        "GET /v2/key-value-stores/{id}/records/b HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let resp = raw_exchange(&w, request.as_bytes(), "HTTP/1.0 GET")
        .await
        .unwrap();
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"b"[..]));
    let request = format!(
        "PUT /v2/key-value-stores/{id}/records/old HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: text/plain\r\nContent-Length: 7\r\n\r\nhttp1.0"
    );
    let resp = raw_exchange(&w, request.as_bytes(), "HTTP/1.0 PUT")
        .await
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let request = format!(
        "GET /v2/key-value-stores/{id}/nothing HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let resp = raw_exchange(&w, request.as_bytes(), "HTTP/1.0 404")
        .await
        .unwrap();
    p.exact(
        "HTTP/1.0 404",
        resp.status,
        &resp.body,
        404,
        "page-not-found",
    );

    // No Host, or a forged one: public URLs never come from it.
    for (what, host) in [
        ("no Host", String::new()),
        ("empty Host", "Host: \r\n".to_owned()),
        ("forged Host", "Host: evil.example\r\n".to_owned()),
        ("junk Host", "Host: ::::/%%\r\n".to_owned()),
        (
            "two Hosts",
            "Host: a.example\r\nHost: b.example\r\n".to_owned(),
        ),
    ] {
        let request = format!(
            "POST /v2/key-value-stores?name=host-test HTTP/1.1\r\n{host}Authorization: Bearer \
             {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let resp = raw_exchange(&w, request.as_bytes(), what).await;
        match resp {
            Some(r) if r.status == 200 || r.status == 201 => {
                let location = r
                    .head
                    .lines()
                    .find_map(|l| l.strip_prefix("location:"))
                    .unwrap_or_else(|| panic!("{what}: no Location: {}", r.head))
                    .trim()
                    .to_owned();
                assert!(
                    location.starts_with(&w.srv.url),
                    "{what}: Location {location}"
                );
                let store: Value = serde_json::from_slice(&r.body).unwrap();
                let keys_url = store["data"]["keysPublicUrl"].as_str().unwrap();
                assert!(keys_url.starts_with(&w.srv.url), "{what}: {keys_url}");
            }
            other => {
                p.refused(what, other.as_ref());
            }
        }
    }

    // Methods the API does not have: 405 on its paths, 404 elsewhere, in the envelope.
    let paths = [
        "/v2/key-value-stores".to_owned(),
        format!("/v2/key-value-stores/{id}"),
        format!("/v2/key-value-stores/{id}/keys"),
        format!("/v2/key-value-stores/{id}/records"),
        format!("/v2/key-value-stores/{id}/records/a"),
    ];
    for method in ["TRACE", "PROPFIND", "MKCOL", "PATCH", "LOCK", "FOO"] {
        for path in &paths {
            let what = format!("{method} {path}");
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let resp = raw_exchange(&w, request.as_bytes(), &what).await.unwrap();
            p.exact(&what, resp.status, &resp.body, 405, "method-not-allowed");
        }
        let what = format!("{method} /nowhere");
        let request = format!(
            "{method} /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let resp = raw_exchange(&w, request.as_bytes(), &what).await.unwrap();
        p.exact(&what, resp.status, &resp.body, 404, "page-not-found");
    }
    // CONNECT never opens a tunnel.
    for target in [
        "127.0.0.1:9",
        "example.com:443",
        "/v2/key-value-stores",
        "*",
    ] {
        let what = format!("CONNECT {target}");
        let request = format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        let resp = raw_exchange(&w, request.as_bytes(), &what).await;
        p.refused(&what, resp.as_ref());
    }
    // A very long method name, a lower-case one, and protocol junk.
    for (what, request) in [
        (
            "long method",
            format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "M".repeat(10_000)),
        ),
        (
            "lower-case get",
            "get /v2/key-value-stores HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
        ),
        ("no version", "GET /healthz\r\n\r\n".to_owned()),
        ("no target", "GET HTTP/1.1\r\n\r\n".to_owned()),
        (
            "binary",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03".to_owned(),
        ),
        ("bare newlines", "\r\n\r\n\r\n\r\n".to_owned()),
        (
            "h2 preface then junk",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nthis is not a settings frame".to_owned(),
        ),
        (
            "header without colon",
            "GET /healthz HTTP/1.1\r\nHost x\r\n\r\n".to_owned(),
        ),
        (
            "space before colon",
            "GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n".to_owned(),
        ),
        (
            "obsolete line folding",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".to_owned(),
        ),
        (
            "NUL in a header",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_owned(),
        ),
        (
            "raw non-ASCII path",
            "GET /v2/key-value-stores/\u{e4}\u{ff} HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        ),
    ] {
        let resp = raw_exchange(&w, request.as_bytes(), what).await;
        if what == "lower-case get" {
            // Methods are case-sensitive: `get` is an unknown method.
            let status = p.refused(what, resp.as_ref());
            assert!(
                matches!(status, Some(400 | 404 | 405)),
                "{what}: {status:?}"
            );
            continue;
        }
        p.refused(what, resp.as_ref());
    }
    // Unknown HTTP versions.
    for version in ["HTTP/1.2", "HTTP/2.0", "HTTP/9.9", "HTTX/1.1"] {
        let request = format!("GET /healthz {version}\r\nHost: x\r\n\r\n");
        let resp = raw_exchange(&w, request.as_bytes(), version).await;
        p.refused(version, resp.as_ref());
    }
    w.still_up("odd requests").await;
    p.finish();
}

#[tokio::test]
async fn non_ascii_header_bytes_are_refused_in_the_envelope() {
    let mut p = Problems::default();
    let w = World::new().await;
    let token = &w.token;
    let send = |headers: Vec<u8>, key: &str| {
        let mut request = format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n",
            w.rec(key)
        )
        .into_bytes();
        request.extend_from_slice(&headers);
        request.extend_from_slice(b"\r\nhello");
        request
    };
    // A token that is not text.
    let resp = raw_exchange(
        &w,
        &send(b"Authorization: Bearer \xff\xfe\xfd\r\n".to_vec(), "x"),
        "non-UTF-8 token",
    )
    .await
    .unwrap();
    p.exact(
        "non-UTF-8 token",
        resp.status,
        &resp.body,
        401,
        "invalid-token",
    );

    // A Content-Encoding that is not text is not a supported encoding either.
    let mut headers = format!("Authorization: Bearer {token}\r\n").into_bytes();
    headers.extend_from_slice(b"Content-Encoding: gz\xffip\r\n");
    let resp = raw_exchange(&w, &send(headers, "enc"), "non-UTF-8 Content-Encoding")
        .await
        .unwrap();
    p.exact(
        "non-UTF-8 Content-Encoding",
        resp.status,
        &resp.body,
        415,
        "unsupported-content-encoding",
    );

    // A Content-Type that is not text: stored under a usable type, or refused; never a 5xx.
    let mut headers = format!("Authorization: Bearer {token}\r\n").into_bytes();
    headers.extend_from_slice(b"Content-Type: text/\xff\xfe\r\n");
    let resp = raw_exchange(&w, &send(headers, "ctype"), "non-UTF-8 Content-Type")
        .await
        .unwrap();
    if resp.status == 201 {
        let got = w.srv.get(&w.rec("ctype"), token).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert!(got.headers().get("content-type").is_some());
    } else {
        p.envelope("non-UTF-8 Content-Type", resp.status, &resp.body);
    }
    // A huge Content-Type is stored and served back, or refused; never a 5xx.
    let resp = w
        .srv
        .req(Method::PUT, &w.rec("bigtype"), Some(token))
        .header(
            "content-type",
            format!("text/plain; x={}", "y".repeat(50_000)),
        )
        .body("hello")
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_body(resp).await;
    if status != 201 {
        p.envelope("50 KB Content-Type", status, &body);
    }
    let keys = w.keys().await;
    p.check(!keys.contains(&"enc".to_owned()), || {
        format!("the record sent with a non-UTF-8 Content-Encoding was stored: {keys:?}")
    });
    w.still_up("non-ASCII header bytes").await;
    p.finish();
}
