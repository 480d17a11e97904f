//! `/v2/key-value-stores/{store}/shares[/{username}]`: sharing a store with other users, for
//! reading or writing; beyond Apify's API. The store's owner (with a full token) or an
//! administrator manages them; a user a store is shared with finds it with
//! `GET /v2/key-value-stores?ownership=sharedWithMe`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::body::json_body;
use super::dto::{Data, ShareBody, ShareInfo, ShareListDto};
use super::openapi::responses::{
    BadRequest, Forbidden, InternalServerError, NotFound, ServiceUnavailable, Unauthorized,
};
use super::openapi::schemas::StoreRef;
use super::paths::{SharePath, StorePath};
use super::resolve::{resolve, Ask, Need};
use super::{AppState, BearerToken};
use crate::error::{ApiError, ApiResult};
use crate::model::{ShareAccess, StoreInfo, Username};
use crate::ops::admin::Local;

/// The store named by `raw` if the caller may manage its shares: its owner, or an administrator.
async fn managed_store(state: &AppState, token: &BearerToken, raw: &str) -> ApiResult<StoreInfo> {
    let resolved = resolve(state, token, Ask::store(raw, Need::Manage)).await?;
    Ok(resolved.store)
}

/// Who a store is shared with
#[utoipa::path(
    get,
    path = "/v2/key-value-stores/{store}/shares",
    tag = "key-value-stores",
    operation_id = "keyValueStore_shares_list",
    params(("store" = StoreRef, Path)),
    responses(
        (status = 200, description = "The users the store is shared with", body = Data<ShareListDto>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn shares_list(
    State(state): State<AppState>,
    token: BearerToken,
    StorePath(store_ref): StorePath,
) -> ApiResult<Json<Data<ShareListDto>>> {
    let store = managed_store(&state, &token, &store_ref).await?;
    let items = Local(state.store.clone()).shares_of(&store).await?;
    Ok(Json(Data {
        data: ShareListDto { items },
    }))
}

/// Share a store with a user
///
/// For reading (`READ`) or reading and writing (`WRITE`); sharing again changes the access.
#[utoipa::path(
    put,
    path = "/v2/key-value-stores/{store}/shares/{username}",
    tag = "key-value-stores",
    operation_id = "keyValueStore_share_put",
    params(("store" = StoreRef, Path), ("username" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Who to share it with")),
    request_body(content = ShareBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The share", body = Data<ShareInfo>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn share_put(
    State(state): State<AppState>,
    token: BearerToken,
    path: SharePath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Data<ShareInfo>>> {
    let store = managed_store(&state, &token, &path.store).await?;
    let body: Option<ShareBody> = json_body(&state, &headers, body).await?;
    let access = body
        .map(|b| ShareAccess::parse(&b.access))
        .ok_or_else(|| ApiError::InvalidInput("The body needs \"access\": READ or WRITE.".into()))?
        .map_err(|e| ApiError::InvalidInput(e.0))?;
    let with = shared_user(&state, &path.user).await?;
    Local(state.store.clone())
        .share_store(&store, &with, Some(access))
        .await?;
    Ok(Json(Data {
        data: ShareInfo {
            user_id: with.id.to_string(),
            username: with.username.to_string(),
            access: access.as_str().to_owned(),
        },
    }))
}

/// Stop sharing a store with a user
#[utoipa::path(
    delete,
    path = "/v2/key-value-stores/{store}/shares/{username}",
    tag = "key-value-stores",
    operation_id = "keyValueStore_share_delete",
    params(("store" = StoreRef, Path), ("username" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Who to stop sharing it with")),
    responses(
        (status = 204, description = "No longer shared (also when it was not)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn share_delete(
    State(state): State<AppState>,
    token: BearerToken,
    path: SharePath,
) -> ApiResult<StatusCode> {
    let store = managed_store(&state, &token, &path.store).await?;
    let with = shared_user(&state, &path.user).await?;
    Local(state.store.clone())
        .share_store(&store, &with, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn shared_user(state: &AppState, raw: &str) -> ApiResult<crate::model::User> {
    let name = Username::parse(raw).map_err(|e| ApiError::InvalidInput(e.0))?;
    state
        .store
        .user_by_name(&name)
        .await?
        .ok_or(ApiError::UserNotFound)
}
