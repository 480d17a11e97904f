//! The bound on request headers: over [`MAX_HEADER_BYTES`] in total, 431 in Apify's envelope, so
//! that many connections cannot pin large header buffers. The transport refuses still larger
//! headers itself (see `src/server.rs`), with a bare 431.

use axum::extract::Request;
use axum::http::{HeaderMap, Uri};

use crate::error::ApiError;

/// Request line and headers, counted as HTTP/2 counts a header list (name, value and 32 bytes per
/// field), as nginx and most servers bound them.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Refuses a request whose request line and headers are over [`MAX_HEADER_BYTES`].
pub fn check_size(request: &Request) -> Result<(), ApiError> {
    check_parts(request.headers(), request.uri())
}

/// [`check_size`] of a request's headers and URI.
pub(super) fn check_parts(headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
    let size = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum::<usize>()
        + uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
        + uri.authority().map_or(0, |a| a.as_str().len());
    if size > MAX_HEADER_BYTES {
        return Err(ApiError::RequestHeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        });
    }
    Ok(())
}
