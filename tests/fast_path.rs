//! The fast path of a hot record's GET (`src/api/fast.rs`) answers exactly as the router would:
//! two servers over one embedded store, one with the fast path and one without, get the same
//! requests and must send the same status, headers (in order, bar `Date`) and body; the fast one
//! must count the same metrics and reads, and must have taken the fast path where it should (its
//! own counter says so) and not elsewhere.
//!
//! One test function: the counters are process-wide, and another test running beside it would
//! move them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use kvstore::storage::{self, Backend, Store};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const FAST_COUNTER: &str = "kvstore_http_fast_answers_total";
const RECORD_ROUTE: &str =
    "kvstore_http_requests_total{route=\"/v2/key-value-stores/{store}/records/{key}\"";
const SENT: &str = "kvstore_http_sent_bytes_total";

/// What a response says, with the `Date` header left out (it moves with the clock); header values
/// byte for byte (escaped where not visible ASCII).
#[derive(PartialEq)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

async fn seen(resp: Response) -> Seen {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str() != "date")
        .map(|(name, value)| {
            let value = match value.to_str() {
                Ok(text) => text.to_owned(),
                Err(_) => value.as_bytes().escape_ascii().to_string(),
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    let body = resp.bytes().await.unwrap().to_vec();
    Seen {
        status,
        headers,
        body,
    }
}

/// The owner's GET of `path` over a new HTTP/2 connection (h2c, prior knowledge), with the same
/// request id as the HTTP/1.1 requests, as [`Seen`] (HTTP/2 sends header names in lower case, as
/// reqwest shows them).
async fn h2_get(srv: &TestServer, path: &str, token: &str) -> Seen {
    let addr = srv.url.trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::get(format!("{}{path}", srv.url))
        .header("authorization", format!("Bearer {token}"))
        .header("x-request-id", "same-id")
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str() != "date")
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.as_bytes().escape_ascii().to_string(),
            )
        })
        .collect();
    let mut stream = response.into_body();
    let mut body = Vec::new();
    while let Some(chunk) = stream.data().await {
        let chunk = chunk.unwrap();
        stream.flow_control().release_capacity(chunk.len()).unwrap();
        body.extend_from_slice(&chunk);
    }
    drop(send);
    driver.abort();
    Seen {
        status,
        headers,
        body,
    }
}

/// `GET /metrics` of the process (one registry for every server in it).
async fn metrics_text(srv: &TestServer) -> String {
    srv.http
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of a metric line (0 when the line is not there yet).
fn metric(text: &str, line: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The request counters of the record route, by labels.
fn record_route(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with(RECORD_ROUTE))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(labels, v)| (labels.to_owned(), v.parse().unwrap()))
        .collect()
}

/// What moved between two snapshots of the record route's counters.
fn moved(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> std::collections::BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

async fn read_count(srv: &TestServer, token: &str, store: &str) -> u64 {
    let resp = srv
        .get(&format!("/v2/key-value-stores/{store}"), token)
        .send()
        .await
        .unwrap();
    let store: Value = common::data(resp).await;
    store["stats"]["readCount"].as_u64().unwrap()
}

/// A pair of servers over one store: `fast` with the fast path, `normal` without. Their batched
/// read counters are never written during the test, so each one's `readCount` moves with its own
/// reads only.
struct Pair {
    fast: TestServer,
    normal: TestServer,
}

impl Pair {
    async fn start(store: &Arc<dyn Store>, cors: &[&str]) -> Self {
        let origins: Vec<String> = cors.iter().map(|o| (*o).to_owned()).collect();
        let fast = TestServer::start_with_store(store.clone(), |c| {
            c.cors_origins = origins.clone();
            c.access_flush_interval = Duration::from_secs(3600);
        })
        .await;
        let normal = TestServer::start_with_store(store.clone(), |c| {
            c.cors_origins = origins.clone();
            c.access_flush_interval = Duration::from_secs(3600);
            c.fast_get = false;
        })
        .await;
        Pair { fast, normal }
    }

    /// Sends the request `build` makes to both servers and asserts the same answer, the same
    /// metrics (the record route's counters, the body bytes sent) and the same move of the
    /// store's `readCount`; whether the fast server took its fast path must be `took_fast`.
    async fn same(
        &self,
        what: &str,
        build: impl Fn(&TestServer) -> RequestBuilder,
        took_fast: bool,
        owner: (&str, &str),
    ) -> Seen {
        let (token, store) = owner;
        let reads = (
            read_count(&self.fast, token, store).await,
            read_count(&self.normal, token, store).await,
        );
        let m0 = metrics_text(&self.fast).await;
        let from_fast = seen(build(&self.fast).send().await.unwrap()).await;
        let m1 = metrics_text(&self.fast).await;
        let from_normal = seen(build(&self.normal).send().await.unwrap()).await;
        let m2 = metrics_text(&self.fast).await;
        assert_eq!(from_fast, from_normal, "{what}: the two paths differ");
        let took = metric(&m1, FAST_COUNTER) - metric(&m0, FAST_COUNTER);
        assert_eq!(took, if took_fast { 1.0 } else { 0.0 }, "{what}: fast path");
        assert_eq!(metric(&m2, FAST_COUNTER), metric(&m1, FAST_COUNTER));
        let counted = moved(&record_route(&m0), &record_route(&m1));
        assert_eq!(
            counted,
            moved(&record_route(&m1), &record_route(&m2)),
            "{what}: route metrics"
        );
        // Each snapshot's own body was sent after it was made: it counts in the next one.
        let sent = |a: &str, b: &str| metric(b, SENT) - metric(a, SENT) - a.len() as f64;
        assert_eq!(sent(&m0, &m1), sent(&m1, &m2), "{what}: bytes sent");
        let reads_fast = read_count(&self.fast, token, store).await - reads.0;
        let reads_normal = read_count(&self.normal, token, store).await - reads.1;
        assert_eq!(reads_fast, reads_normal, "{what}: readCount");
        from_fast
    }
}

#[tokio::test]
async fn the_fast_path_answers_as_the_router_does() {
    // Embedded whatever KVSTORE_TEST_BACKEND says: only its hot records feed the fast path.
    let dir = tempfile::tempdir().unwrap();
    let store = storage::open(&Backend::embedded(dir.path().join("data")))
        .await
        .unwrap();
    let any = Pair::start(&store, &["*"]).await;
    let listed = Pair::start(&store, &["https://good.example"]).await;
    let srv = &any.normal;
    let owner = srv.user("owner").await;
    let reader = srv.user("reader").await;
    let stranger = srv.user("stranger").await;
    let id = srv.create_store(&owner, Some("hot")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    srv.put_record(&owner, &id, "k", "text/plain; charset=utf-8", body.clone())
        .await;
    srv.put_record(&owner, &id, "cold", "application/json", "{}")
        .await;
    let resp = srv
        .req(
            Method::PUT,
            &format!("/v2/key-value-stores/{id}/shares/reader"),
            Some(&owner),
        )
        .json(&json!({"access": "READ"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let path = format!("/v2/key-value-stores/{id}/records/k");
    let ctx = (owner.as_str(), id.as_str());
    let get = |token: Option<&'static str>| {
        let path = path.clone();
        move |s: &TestServer| {
            let rb = s
                .http
                .get(format!("{}{path}", s.url))
                .header("x-request-id", "same-id");
            match token {
                Some(t) => rb.bearer_auth(t),
                None => rb,
            }
        }
    };
    // Tokens as 'static for the closures above.
    let owner_t: &'static str = Box::leak(owner.clone().into_boxed_str());
    let reader_t: &'static str = Box::leak(reader.into_boxed_str());
    let stranger_t: &'static str = Box::leak(stranger.into_boxed_str());

    // The first read fills the caches (normal path), the next ones are hot.
    let first = any
        .same("owner, cold", get(Some(owner_t)), false, ctx)
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, body);
    let hot = any.same("owner, hot", get(Some(owner_t)), true, ctx).await;
    assert_eq!(hot.body, body);
    let etag = hot
        .headers
        .iter()
        .find(|(n, _)| n == "etag")
        .map(|(_, v)| v.clone())
        .unwrap();

    // Without a request id of the client's: both make one up, of the same shape.
    let fast = seen(
        any.fast
            .http
            .get(format!("{}{path}", any.fast.url))
            .bearer_auth(owner_t)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let normal = seen(
        any.normal
            .http
            .get(format!("{}{path}", any.normal.url))
            .bearer_auth(owner_t)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let without_id = |s: &Seen| {
        let id = s.headers.iter().find(|(n, _)| n == "x-request-id").unwrap();
        assert_eq!(id.1.len(), 16);
        Seen {
            status: s.status,
            headers: s
                .headers
                .iter()
                .map(|(n, v)| match n.as_str() {
                    "x-request-id" => (n.clone(), String::new()),
                    _ => (n.clone(), v.clone()),
                })
                .collect(),
            body: s.body.clone(),
        }
    };
    assert_eq!(without_id(&fast), without_id(&normal));

    let with = |name: &'static str, value: String| {
        let get = get(Some(owner_t));
        move |s: &TestServer| get(s).header(name, value.clone())
    };
    any.same(
        "owner, Origin",
        with("origin", "https://any.example".into()),
        true,
        ctx,
    )
    .await;
    let not_modified = any
        .same(
            "owner, If-None-Match current",
            with("if-none-match", etag.clone()),
            true,
            ctx,
        )
        .await;
    assert_eq!(not_modified.status, 304);
    any.same(
        "owner, If-None-Match *",
        with("if-none-match", "*".into()),
        true,
        ctx,
    )
    .await;
    any.same(
        "owner, If-None-Match older",
        with("if-none-match", "\"0000000000000001\"".into()),
        true,
        ctx,
    )
    .await;
    let part = any
        .same(
            "owner, Range",
            with("range", "bytes=0-9".into()),
            false,
            ctx,
        )
        .await;
    assert_eq!(part.status, 206);
    any.same(
        "owner, If-Range",
        with("if-range", etag.clone()),
        false,
        ctx,
    )
    .await;

    // Other callers, and other shapes of the same request: the router answers.
    let shared = any
        .same("read share", get(Some(reader_t)), false, ctx)
        .await;
    assert_eq!(shared.status, 200);
    let refused = any
        .same("stranger", get(Some(stranger_t)), false, ctx)
        .await;
    assert_eq!(refused.status, 404);
    let anonymous = any.same("no token", get(None), false, ctx).await;
    assert_eq!(anonymous.status, 404);
    let bad = any
        .same("bad token", get(Some("not-a-token")), false, ctx)
        .await;
    assert_eq!(bad.status, 401);
    let query = |q: &'static str| {
        let path = path.clone();
        move |s: &TestServer| {
            s.http
                .get(format!("{}{path}?{q}", s.url))
                .header("x-request-id", "same-id")
                .bearer_auth(owner_t)
        }
    };
    any.same("attachment", query("attachment=1"), false, ctx)
        .await;
    let by_query = move |s: &TestServer| {
        s.http
            .get(format!(
                "{}/v2/key-value-stores/{}/records/k?token={owner_t}",
                s.url, ctx.1
            ))
            .header("x-request-id", "same-id")
    };
    any.same("token in the query", by_query, false, ctx).await;
    let trailing = {
        let path = path.clone();
        move |s: &TestServer| {
            s.http
                .get(format!("{}{path}/", s.url))
                .header("x-request-id", "same-id")
                .bearer_auth(owner_t)
        }
    };
    any.same("trailing slash", trailing, false, ctx).await;
    let head = {
        let path = path.clone();
        move |s: &TestServer| {
            s.http
                .head(format!("{}{path}", s.url))
                .header("x-request-id", "same-id")
                .bearer_auth(owner_t)
        }
    };
    any.same("HEAD", head, false, ctx).await;
    let missing = {
        let id = id.clone();
        move |s: &TestServer| {
            s.http
                .get(format!("{}/v2/key-value-stores/{id}/records/nope", s.url))
                .header("x-request-id", "same-id")
                .bearer_auth(owner_t)
        }
    };
    let gone = any.same("no such record", missing, false, ctx).await;
    assert_eq!(gone.status, 404);

    // A write leaves the cache; the next read refills it, and the one after is fast again.
    let new_body = b"changed".to_vec();
    srv.put_record(&owner, &id, "k", "application/x-new", new_body.clone())
        .await;
    let after = any
        .same("owner, after a write", get(Some(owner_t)), false, ctx)
        .await;
    assert_eq!(after.body, new_body);
    let again = any
        .same("owner, hot again", get(Some(owner_t)), true, ctx)
        .await;
    assert_eq!(again.body, new_body);
    let stale = any
        .same(
            "owner, the old ETag",
            with("if-none-match", etag.clone()),
            true,
            ctx,
        )
        .await;
    assert_eq!(stale.status, 200);

    // A list of allowed origins: one in it, one not, none.
    listed
        .same(
            "listed origin",
            with("origin", "https://good.example".into()),
            true,
            ctx,
        )
        .await;
    listed
        .same(
            "unlisted origin",
            with("origin", "https://evil.example".into()),
            true,
            ctx,
        )
        .await;
    listed
        .same("no origin", get(Some(owner_t)), true, ctx)
        .await;

    // HTTP/2 (h2c, prior knowledge): the fast path sits in front of both protocols.
    let m0 = metrics_text(&any.fast).await;
    let from_fast = h2_get(&any.fast, &path, owner_t).await;
    let m1 = metrics_text(&any.fast).await;
    let from_normal = h2_get(&any.normal, &path, owner_t).await;
    assert_eq!(from_fast, from_normal, "HTTP/2: the two paths differ");
    assert_eq!(from_fast.status, 200);
    assert_eq!(from_fast.body, new_body);
    assert_eq!(
        metric(&m1, FAST_COUNTER) - metric(&m0, FAST_COUNTER),
        1.0,
        "HTTP/2: fast path"
    );

    for pair in [any, listed] {
        pair.fast.stop().await;
        pair.normal.stop().await;
    }
    drop(store);
}
