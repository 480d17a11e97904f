//! Request observability: a request id on every request (taken from `X-Request-Id` or made up) and
//! in every log line of its span, Prometheus metrics by route and status, and `GET /metrics`.
//!
//! Only the path's route pattern is recorded, never the query string: `?token=` must not reach logs
//! or metrics.

use std::cell::RefCell;
// foldhash: these maps are looked up on every request; SipHash cost a GET ~1.8k instructions.
use foldhash::HashMap;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often the registry folds the histograms' new samples into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The process-wide metrics registry (installed on first use; several servers in one process,
/// as in the tests, share it).
fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .ok()?
                .install_recorder()
                .ok()?;
            // The recorder keeps every histogram sample until something folds them into the
            // buckets: a scrape, or this. Unscraped, a server grew by ~21 bytes a request, for
            // ever (bench/RESULTS.md, 2026-12-06 17:57 UTC).
            let upkeep = handle.clone();
            let started = std::thread::Builder::new()
                .name("kvstore-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "metrics are off: could not start their upkeep");
                return None;
            }
            Some(handle)
        })
        .as_ref()
}

pub fn init_metrics() {
    if prometheus().is_none() {
        tracing::warn!("metrics are off: another metrics recorder is installed");
    }
}

/// Prometheus metrics
///
/// Requests by route, method and status, latency histograms, bytes in and out, open
/// connections.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String,
        content_type = "text/plain")),
)]
pub async fn metrics_get() -> Response {
    let body = prometheus()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

type Handles = (metrics::Counter, metrics::Histogram);

thread_local! {
    /// Route patterns as `&'static str`: the router's patterns are a fixed, small set.
    static ROUTES: RefCell<HashMap<Box<str>, &'static str>> = RefCell::new(HashMap::default());
    /// Metric handles by (route, method, status), so that a request records its metrics without
    /// building label sets or looking them up in the registry. Per thread: no lock on the hot path.
    static HANDLES: RefCell<HashMap<(&'static str, &'static str, u16), Handles>> =
        RefCell::new(HashMap::default());
    /// Body bytes received and sent (no labels). Taken on first use, after `init_metrics`.
    static BYTES: (metrics::Counter, metrics::Counter) = (
        metrics::counter!("kvstore_http_received_bytes_total"),
        metrics::counter!("kvstore_http_sent_bytes_total"),
    );
    /// Requests the fast path answered ([`super::fast`]), also counted by route as all are.
    static FAST: metrics::Counter = metrics::counter!("kvstore_http_fast_answers_total");
}

/// A body that adds the size of every data frame to `counter` as it passes: the bytes that
/// actually cross the wire, with or without a `Content-Length` (chunked uploads, streamed
/// downloads, a body cut short, a HEAD answer's body that is never sent).
struct Counted {
    inner: Body,
    counter: metrics::Counter,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.counter.increment(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn counted(body: Body, counter: metrics::Counter) -> Body {
    if body.is_end_stream() {
        return body; // nothing to count: spare the allocation
    }
    Body::new(Counted {
        inner: body,
        counter,
    })
}

fn intern_route(route: &str) -> &'static str {
    ROUTES.with(|routes| {
        if let Some(found) = routes.borrow().get(route) {
            return *found;
        }
        let interned: &'static str = Box::leak(route.into());
        routes.borrow_mut().insert(route.into(), interned);
        interned
    })
}

/// Methods as static labels; anything unusual is `OTHER` (a client must not grow the label set).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

fn handles(route: &'static str, method: &'static str, status: u16) -> Handles {
    HANDLES.with(|cache| {
        if let Some(found) = cache.borrow().get(&(route, method, status)) {
            return found.clone();
        }
        let labels = [
            ("route", route.to_owned()),
            ("method", method.to_owned()),
            ("status", status.to_string()),
        ];
        let made = (
            metrics::counter!("kvstore_http_requests_total", &labels),
            metrics::histogram!("kvstore_http_request_duration_seconds", &labels[..2]),
        );
        cache
            .borrow_mut()
            .insert((route, method, status), made.clone());
        made
    })
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

/// 16 base-62 characters from a per-thread splitmix64 sequence seeded at random: ids must be
/// unique, not secret, and drawing each from the CSPRNG cost a GET about 1k instructions.
fn new_request_id() -> String {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(rand::random());
    }
    fn next() -> u64 {
        let x = STATE.with(|s| {
            let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            s.set(x);
            x
        });
        let z = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(16);
    for _ in 0..2 {
        let mut n = next();
        for _ in 0..8 {
            id.push(char::from(DIGITS[(n % 62) as usize]));
            n /= 62;
        }
    }
    id
}

/// The one middleware around every route (one layer rather than three: each layer boxes and moves
/// the request's future): logs and counts the request, refuses oversized headers
/// ([`super::headers`]) and drains or closes behind answers sent before the body was read
/// ([`super::unread`]).
pub async fn observe(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = matched.map_or("unmatched", |m| intern_route(m.as_str()));
    let method = method_label(request.method());
    let id = request_id(request.headers());
    let (received, sent) = BYTES.with(Clone::clone);
    let request = request.map(|body| counted(body, received));
    // Only the id in the span: the fmt subscriber formats a span's fields when it is created, on
    // every request; the method and route go into the request's own log line below.
    // By Display: a `&str` field is Debug-formatted, escaped character by character.
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = guarded(request, next)
        .instrument(span.clone())
        .await
        .map(|body| counted(body, sent));
    let status = response.status();
    if let Ok(v) = HeaderValue::try_from(id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let elapsed = counted_request(route, method, status, started);
    let _entered = span.enter();
    log_line(method, route, status, elapsed);
    response
}

/// Counts a request answered with `status` in the route's metrics; how long it took.
fn counted_request(
    route: &'static str,
    method: &'static str,
    status: StatusCode,
    started: Instant,
) -> std::time::Duration {
    let elapsed = started.elapsed();
    let (requests, duration) = handles(route, method, status.as_u16());
    requests.increment(1);
    duration.record(elapsed.as_secs_f64());
    elapsed
}

/// The request's own log line, in its span.
fn log_line(method: &str, route: &str, status: StatusCode, elapsed: std::time::Duration) {
    if status.is_server_error() {
        tracing::warn!(
            method,
            route,
            status = status.as_u16(),
            elapsed_ms = elapsed.as_millis() as u64,
            "request failed"
        );
    } else {
        tracing::debug!(
            method,
            route,
            status = status.as_u16(),
            elapsed_ms = elapsed.as_millis() as u64,
            "request"
        );
    }
}

/// What [`observe`] does around a request that the fast path ([`super::fast`]) answered from
/// `request` (`route` is the pattern the router would have matched): the request id in the
/// response, the route's metrics, the log line in the request's span; and the counter of the
/// response body's bytes, for the body to count them as they go out. Nothing runs inside the span
/// on that path but the log line, so the span is made only when that line is written.
pub(super) fn observe_answered(
    request: &HeaderMap,
    route: &'static str,
    started: Instant,
    status: StatusCode,
    response: &mut HeaderMap,
) -> metrics::Counter {
    let id = request_id(request);
    let elapsed = counted_request(route, "GET", status, started);
    FAST.with(|fast| fast.increment(1));
    if status.is_server_error() || tracing::enabled!(tracing::Level::DEBUG) {
        let span = tracing::info_span!("request", request_id = %id);
        let _entered = span.enter();
        log_line("GET", route, status, elapsed);
    }
    // From the `String` itself, not a copy of it.
    if let Ok(v) = HeaderValue::try_from(id) {
        response.insert("x-request-id", v);
    }
    BYTES.with(|(_, sent)| sent.clone())
}

async fn guarded(request: Request, next: Next) -> Response {
    if let Err(refused) = super::headers::check_size(&request) {
        return refused.into_response();
    }
    super::unread::close_if_body_unread(request, next).await
}
