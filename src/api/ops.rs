//! Operational endpoints outside Apify's API: liveness, readiness, and the caller's own user
//! (`GET /v2/users/me`, which the Apify CLI asks on login).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::format_millis;

/// Alive: the process answers HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: the storage backend answers too.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable" })),
            )
        }
    }
}

/// The caller's account, in the shape of Apify's user object (the fields kvstore has).
pub async fn users_me(caller: Caller) -> ApiResult<Json<Value>> {
    let user = caller.user().ok_or(ApiError::TokenNotProvided)?;
    Ok(Json(json!({
        "data": {
            "id": user.id,
            "username": user.username,
            "createdAt": format_millis(user.created_at),
            "isAdmin": user.is_admin,
            "profile": {},
        }
    })))
}
