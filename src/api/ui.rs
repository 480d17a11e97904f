//! The storage browser: a plain web page at `GET /` and its assets at `GET /ui/{file}`, all
//! embedded in the binary (`src/ui/`), with no build step.
//!
//! The page keeps the user's token in `sessionStorage` and sends it only as a Bearer header. Its
//! own `Content-Security-Policy` lets it run nothing but its own scripts (no inline script, no
//! `eval`, no HTML string sinks through Trusted Types) and talk to nothing but this origin; records
//! it previews are shown as text, as images from `blob:` URLs, or as HTML inside a fully sandboxed
//! frame, never as pages of this origin.
//!
//! Caching: every response carries a strong `ETag` (`If-None-Match` gets 304). The page is
//! revalidated on every load (`no-cache`) and links its entry points with `?v=<bundle hash>`; an
//! asset asked for with the current hash is cached for a year, any other request revalidates.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::params::Params;
use crate::error::ApiError;

/// The page's policy: its own scripts, styles and API only; images also from `blob:`/`data:`
/// (previews), frames only from `blob:` (the sandboxed HTML preview); no plugins, no `<base>`,
/// no form posts, never framed; DOM string sinks (`innerHTML`…) refused outright.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self'; frame-src blob:; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// Assets are never documents of their own: opened directly, they run nothing.
const ASSET_CSP: &str = "default-src 'none'; sandbox";

const PAGE_TEMPLATE: &str = include_str!("../ui/index.html");
/// Where the template puts the bundle hash.
const VERSION_MARK: &str = "{{version}}";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    embedded("app.js", JS, include_bytes!("../ui/app.js")),
    embedded("api.js", JS, include_bytes!("../ui/api.js")),
    embedded(
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/app.css"),
    ),
    embedded(
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../ui/favicon.svg"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

const fn embedded(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
    Asset {
        name,
        content_type,
        body,
    }
}

/// What is computed once: the page with the bundle hash filled in, and every ETag.
struct Built {
    version: String,
    page: String,
    page_etag: String,
    asset_etags: Vec<String>,
}

fn hash_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(&hasher.finalize()[..10])
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut parts: Vec<&[u8]> = vec![PAGE_TEMPLATE.as_bytes()];
        for asset in ASSETS {
            parts.push(asset.name.as_bytes());
            parts.push(asset.body);
        }
        let version = hash_hex(&parts);
        let page = PAGE_TEMPLATE.replace(VERSION_MARK, &version);
        Built {
            page_etag: format!("\"{}\"", hash_hex(&[page.as_bytes()])),
            asset_etags: ASSETS
                .iter()
                .map(|a| format!("\"{}\"", hash_hex(&[a.body])))
                .collect(),
            version,
            page,
        }
    })
}

/// `If-None-Match` names this version (or `*`).
fn fresh(request: &HeaderMap, etag: &str) -> bool {
    request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == "*" || t == etag)
        })
}

fn respond(
    request: &HeaderMap,
    etag: &str,
    mut headers: HeaderMap,
    cache_control: &'static str,
    body: &'static [u8],
) -> Response {
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if fresh(request, etag) {
        headers.remove(header::CONTENT_TYPE);
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, Body::from(body)).into_response()
}

/// `GET /`: the storage browser.
pub async fn page(request: HeaderMap) -> Response {
    let built = built();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    respond(
        &request,
        &built.page_etag,
        headers,
        "no-cache",
        built.page.as_bytes(),
    )
}

/// `GET /ui/{file}`: one embedded asset, or 404 `page-not-found`.
pub async fn asset(uri: Uri, request: HeaderMap) -> Response {
    let name = uri.path().strip_prefix("/ui/").unwrap_or("");
    let Some((index, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == name) else {
        return ApiError::PageNotFound.into_response();
    };
    let built = built();
    let versioned = Params::from_query(uri.query())
        .get("v")
        .ok()
        .flatten()
        .is_some_and(|v| v == built.version);
    let cache_control = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(ASSET_CSP),
    );
    let etag = built.asset_etags.get(index).map_or("", String::as_str);
    respond(&request, etag, headers, cache_control, asset.body)
}
