//! Path parameters, percent-decoded by hand so that bytes that are not UTF-8 get Apify's answers
//! (a store that cannot exist is 404; a key that cannot exist is `invalid-record-key`) instead of
//! the framework's plain-text rejection. The router has already matched the path's shape,
//! `/v2/key-value-stores/{store}[/…[/{key}]]` or `/v2/users/{userId}`, so the segments are read by
//! position.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// Segment `index` of the request path, percent-decoded; `None` when missing or not UTF-8.
fn segment(parts: &Parts, index: usize) -> Option<String> {
    let raw = parts
        .uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .nth(index)?;
    decoded(raw)
}

/// A raw path segment percent-decoded; `None` when not UTF-8.
pub(super) fn decoded(raw: &str) -> Option<String> {
    // Byte search (memchr): a `char` pattern costs a GET several hundred instructions here.
    if !raw.as_bytes().contains(&b'%') {
        // Nothing to decode (the common case): the path is already UTF-8.
        return Some(raw.to_owned());
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|v| v.into_owned())
}

/// `{store}`: an id, `~name` or `username~name`; empty when it is not UTF-8 (no store has that).
pub struct StorePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for StorePath {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(StorePath(segment(parts, 2).unwrap_or_default()))
    }
}

/// `{store}` and `{key}` of a record path; the key is `None` when it is not UTF-8.
pub struct RecordPath {
    pub store: String,
    pub key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for RecordPath {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        // `v2/key-value-stores/{store}/records/{key}`: one pass over the path for both.
        let mut segments = parts.uri.path().trim_start_matches('/').split('/');
        let store = segments.nth(2).and_then(decoded);
        let key = segments.nth(1).and_then(decoded);
        Ok(RecordPath {
            store: store.unwrap_or_default(),
            key,
        })
    }
}

/// `{userId}` of `/v2/users/{userId}`: an id or a username; empty when it is not UTF-8 (no user
/// has that id or name).
pub struct UserPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(UserPath(segment(parts, 2).unwrap_or_default()))
    }
}

/// `{user}` of `/v2/admin/users/{user}[/tokens]`: an id or a username.
pub struct AdminUserPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for AdminUserPath {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(AdminUserPath(segment(parts, 3).unwrap_or_default()))
    }
}

/// `{store}` and `{username}` of `/v2/key-value-stores/{store}/shares/{username}`.
pub struct SharePath {
    pub store: String,
    pub user: String,
}

impl<S: Send + Sync> FromRequestParts<S> for SharePath {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(SharePath {
            store: segment(parts, 2).unwrap_or_default(),
            user: segment(parts, 4).unwrap_or_default(),
        })
    }
}
