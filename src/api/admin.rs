//! `/v2/admin`: operations for administrators only (users with `is_admin`), beyond Apify's API.
//! `GET /v2/admin/backup` streams a consistent backup of everything (see `crate::backup`);
//! `kvstore backup --server` downloads it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::openapi::{Forbidden, InternalServerError, ServiceUnavailable, Unauthorized};
use super::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

fn require_admin(caller: &Caller) -> ApiResult<()> {
    match caller.user() {
        None => Err(ApiError::TokenNotProvided),
        Some(user) if user.is_admin => Ok(()),
        Some(_) => Err(ApiError::InsufficientPermissions),
    }
}

/// A backup of all data
///
/// Every user (with token hashes), store and record as of the moment the request arrives, while
/// writes go on; the format is described in `src/backup.rs`. A backup cut short lacks its end line
/// and is refused by `kvstore restore`. Administrators only.
#[utoipa::path(
    get,
    path = "/v2/admin/backup",
    tag = "admin",
    operation_id = "admin_backup_get",
    responses(
        (status = 200, description = "The backup stream", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn backup_get(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    require_admin(&caller)?;
    let snapshot = state.store.snapshot().await?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let (err_tx, err_rx) = mpsc::channel::<std::io::Error>(1);
    tokio::spawn(async move {
        match crate::backup::write(&*snapshot, tx).await {
            Ok(counts) => tracing::info!(?counts, "backup sent"),
            Err(e) => {
                tracing::warn!(error = %e, "backup failed");
                let _ = err_tx.send(std::io::Error::other(e.to_string())).await;
            }
        }
    });
    // The body ends with the writer; a failure aborts it, so the client sees no end line.
    let stream = futures_util::stream::unfold((rx, err_rx), |(mut rx, mut err_rx)| async move {
        let item = match rx.recv().await {
            Some(bytes) => Ok(bytes),
            None => Err(err_rx.recv().await?),
        };
        Some((item, (rx, err_rx)))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let name = format!(
        "attachment; filename=\"kvstore-{}.backup\"",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
