//! The fast path of the hottest request, a token holder's `GET` of a whole record the backend
//! holds in memory (the embedded engine's hot records, for the store's owner): answered before
//! the router and its middleware (observe, CORS) run, which cost such a GET about half of its
//! instructions, with the same answer, metrics, counters and log line as they would give.
//!
//! It takes only the plain case: `GET /v2/key-value-stores/{storeId}/records/{key}` with no query
//! string, an `Authorization: Bearer` token, no `Range` or `If-Range`, no body, headers within
//! bounds, no rate limit, and the record found in memory and readable by the token. Anything
//! else, refusals included, goes to the router, which answers as always. The pieces are the
//! normal path's own: [`super::records::record_get_cached`] (the access decision and the answer
//! of `record_get`), [`super::observe::observe_answered`] and [`super::cors::CorsHeaders`];
//! `tests/fast_path.rs` holds both paths to the same bytes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::cors::CorsHeaders;
use super::{caller, headers, observe, paths, records, AppState};
use crate::model::{RecordKey, StoreRef};

/// The route the router would match, for the metrics.
const RECORD_ROUTE: &str = "/v2/key-value-stores/{store}/records/{key}";

/// Answers the requests the fast path takes (see the module's header).
pub struct FastGet {
    state: AppState,
    cors: CorsHeaders,
}

/// A fast path's answer, with its body still to be wrapped by the connection layer.
pub struct FastAnswer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    sent: metrics::Counter,
}

impl FastGet {
    /// `None` when rate limiting is on: a limited request must pass the limiter, which the
    /// router runs.
    pub fn new(state: &AppState) -> Option<Self> {
        if state.rate_limiter.is_some() {
            return None;
        }
        Some(Self {
            state: state.clone(),
            cors: CorsHeaders::new(&state.config.cors_origins),
        })
    }

    /// The answer to `request` when the fast path takes it; `None` sends it to the router.
    pub fn answer<B: HttpBody>(&self, request: &Request<B>) -> Option<FastAnswer> {
        let started = Instant::now();
        let uri = request.uri();
        if request.method() != Method::GET || uri.query().is_some() {
            return None;
        }
        let (store, key) = record_path(uri.path())?;
        let request_headers = request.headers();
        if request_headers.contains_key(header::RANGE)
            || request_headers.contains_key(header::IF_RANGE)
            || !request.body().is_end_stream()
        {
            return None;
        }
        headers::check_parts(request_headers, uri).ok()?;
        let token = caller::bearer(request_headers.get(header::AUTHORIZATION)?).ok()?;
        let StoreRef::Id(store) = StoreRef::parse(&paths::decoded(store)?) else {
            return None;
        };
        let key = RecordKey::parse(&paths::decoded(key)?).ok()?;
        let (status, mut headers, body) =
            records::record_get_cached(&self.state, &token.hash(), &store, &key, request_headers)?;
        let sent =
            observe::observe_answered(request_headers, RECORD_ROUTE, started, status, &mut headers);
        self.cors
            .add(request_headers.get(header::ORIGIN), &mut headers);
        Some(FastAnswer {
            status,
            headers,
            body,
            sent,
        })
    }
}

/// `{store}` and `{key}` (raw) of a path the router matches to [`RECORD_ROUTE`]: both segments
/// present and not empty, nothing after the key.
fn record_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v2/key-value-stores/")?;
    let (store, rest) = rest.split_once('/')?;
    let key = rest.strip_prefix("records/")?;
    if store.is_empty() || key.is_empty() || key.contains('/') {
        return None;
    }
    Some((store, key))
}

impl FastAnswer {
    /// The response, its body holding `guard` until it is sent or dropped.
    pub fn into_response<G: Send + Unpin + 'static>(self, guard: G) -> Response {
        let body = Body::new(Once {
            data: Some(self.body).filter(|b| !b.is_empty()),
            sent: self.sent,
            _guard: guard,
        });
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// A body of one frame that counts its bytes in the sent-bytes metric as it goes out, like the
/// normal path's body does (see `observe`), in one allocation instead of three.
struct Once<G> {
    data: Option<Bytes>,
    sent: metrics::Counter,
    _guard: G,
}

impl<G: Unpin> HttpBody for Once<G> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        Poll::Ready(this.data.take().map(|data| {
            this.sent.increment(data.len() as u64);
            Ok(Frame::data(data))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::record_path;

    #[test]
    fn only_the_record_route_is_taken() {
        assert_eq!(
            record_path("/v2/key-value-stores/abc/records/k"),
            Some(("abc", "k"))
        );
        for other in [
            "/v2/key-value-stores/abc/records/",
            "/v2/key-value-stores//records/k",
            "/v2/key-value-stores/abc/records/k/",
            "/v2/key-value-stores/abc/records/k/x",
            "/v2/key-value-stores/abc/records",
            "/v2/key-value-stores/abc/keys/k",
            "/v2/key-value-stores/abc/x/records/k",
            "//v2/key-value-stores/abc/records/k",
        ] {
            assert_eq!(record_path(other), None, "{other}");
        }
    }
}
