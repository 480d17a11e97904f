//! The bound on request headers: over [`MAX_HEADER_BYTES`] in total, 431 in Apify's envelope, so
//! that many connections cannot pin large header buffers. The transport refuses still larger
//! headers itself (see `src/server.rs`), with a bare 431.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Request line and headers, counted as HTTP/2 counts a header list (name, value and 32 bytes per
/// field), as nginx and most servers bound them.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

pub async fn refuse_oversized_headers(request: Request, next: Next) -> Response {
    let size = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum::<usize>()
        + request.uri().to_string().len();
    if size > MAX_HEADER_BYTES {
        return ApiError::RequestHeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        }
        .into_response();
    }
    next.run(request).await
}
