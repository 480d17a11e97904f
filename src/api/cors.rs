//! CORS for browsers (the JS client runs in them): tokens travel in headers, never in cookies, so
//! allowing an origin gives it nothing it could not do with the token anyway. tower-http's layer
//! answers every route; [`CorsHeaders`] adds the same headers to the answers of the fast path
//! ([`super::fast`]), which bypasses the layer, from values built once.

use axum::http::header::{self, HeaderMap, HeaderValue};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// The layer in front of every route.
pub(super) fn layer(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(std::time::Duration::from_secs(3600));
    match Allowed::of(origins) {
        Allowed::None => layer,
        Allowed::Any => layer.allow_origin(Any),
        Allowed::List(list) => layer.allow_origin(AllowOrigin::list(list)),
    }
}

/// Which origins `--cors-origins` allows.
enum Allowed {
    None,
    Any,
    List(Vec<HeaderValue>),
}

impl Allowed {
    fn of(origins: &[String]) -> Self {
        if origins.is_empty() {
            return Allowed::None;
        }
        if origins.iter().any(|o| o == "*") {
            return Allowed::Any;
        }
        Allowed::List(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
                .collect(),
        )
    }
}

/// The headers [`layer`] adds to the answer of a request that is not a preflight (`OPTIONS`), in
/// the order it adds them; `tests/fast_path.rs` holds the two to the same bytes.
pub(super) struct CorsHeaders {
    allowed: Allowed,
}

impl CorsHeaders {
    pub(super) fn new(origins: &[String]) -> Self {
        Self {
            allowed: Allowed::of(origins),
        }
    }

    /// Adds to `response` what the layer adds to the answer of a request from `origin`.
    pub(super) fn add(&self, origin: Option<&HeaderValue>, response: &mut HeaderMap) {
        response.append(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        let allow = match &self.allowed {
            Allowed::None => None,
            Allowed::Any => Some(HeaderValue::from_static("*")),
            Allowed::List(list) => origin.filter(|o| list.contains(o)).cloned(),
        };
        if let Some(allow) = allow {
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        }
        response.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("*"),
        );
    }
}
