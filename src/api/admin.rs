//! `/v2/admin`: operations for administrators only (users with `is_admin`, with a full token),
//! beyond Apify's API: users and their tokens (the logic is `crate::ops::admin`, which the CLI shares),
//! and `GET /v2/admin/backup`, a consistent backup of everything (see `crate::ops::backup`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::body::json_body;
use super::dto::{
    CreateUserBody, Data, IssuedToken, NewTokenBody, UpdateUserBody, UserInfo, UserListDto,
};
use super::openapi::responses::{
    BadRequest, Conflict, Forbidden, InternalServerError, NotFound, ServiceUnavailable,
    Unauthorized,
};
use super::paths::AdminUserPath;
use super::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::Username;
use crate::ops::admin::{Admin, Local};
use crate::storage::UserUpdate;

fn require_admin(caller: &Caller) -> ApiResult<()> {
    match caller.user() {
        None => Err(ApiError::TokenNotProvided),
        Some(user) if user.is_admin && !caller.read_only() => Ok(()),
        Some(_) => Err(ApiError::InsufficientPermissions),
    }
}

fn is_self(caller: &Caller, user: &crate::model::User) -> bool {
    caller.user().is_some_and(|me| me.id == user.id)
}

/// A backup of all data
///
/// Every user (with token hashes), store and record as of the moment the request arrives, while
/// writes go on; the format is described in `src/ops/backup.rs`. A backup cut short lacks its end line
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
        match crate::ops::backup::write(&*snapshot, tx).await {
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

// ---- users -------------------------------------------------------------------------------------

/// Every user
#[utoipa::path(
    get,
    path = "/v2/admin/users",
    tag = "admin",
    operation_id = "admin_users_list",
    responses(
        (status = 200, description = "All users", body = Data<UserListDto>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn users_list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Data<UserListDto>>> {
    require_admin(&caller)?;
    let items = Local(state.store.clone()).users().await?;
    Ok(Json(Data {
        data: UserListDto { items },
    }))
}

/// Create a user
///
/// Answers the user and its token, which is shown only this once.
#[utoipa::path(
    post,
    path = "/v2/admin/users",
    tag = "admin",
    operation_id = "admin_users_create",
    request_body(content = CreateUserBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The new user and its token", body = Data<IssuedToken>),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn users_create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let body: Option<CreateUserBody> =
        json_body::<Option<CreateUserBody>>(&state, &headers, body).await?;
    let body =
        body.ok_or_else(|| ApiError::InvalidInput("The body needs a \"username\".".into()))?;
    let name = Username::parse(&body.username).map_err(|e| ApiError::InvalidInput(e.0))?;
    let issued = Local(state.store.clone())
        .create_user(&name, body.is_admin, body.read_only)
        .await?;
    Ok((StatusCode::CREATED, Json(Data { data: issued })).into_response())
}

/// Update a user
///
/// Disables (its tokens stop working at once, its stores stay) or enables a user, or changes
/// whether it is an administrator. `{user}` is an id or a username.
#[utoipa::path(
    put,
    path = "/v2/admin/users/{user}",
    tag = "admin",
    operation_id = "admin_user_update",
    params(("user" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "A user id or username")),
    request_body(content = Option<UpdateUserBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The user", body = Data<UserInfo>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn user_update(
    State(state): State<AppState>,
    caller: Caller,
    AdminUserPath(raw): AdminUserPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Data<UserInfo>>> {
    require_admin(&caller)?;
    let local = Local(state.store.clone());
    let user = local.user_by_ref(&raw).await?;
    let body: Option<UpdateUserBody> = json_body(&state, &headers, body).await?;
    let body = body.unwrap_or(UpdateUserBody {
        disabled: None,
        is_admin: None,
    });
    let update = UserUpdate {
        disabled: body.disabled,
        is_admin: body.is_admin,
    };
    // An administrator cannot lock itself out.
    if is_self(&caller, &user) && (update.disabled == Some(true) || update.is_admin == Some(false))
    {
        return Err(ApiError::InvalidInput(
            "You cannot disable yourself or take away your own admin rights.".into(),
        ));
    }
    let info = local.update_user(&user.username, update).await?;
    Ok(Json(Data { data: info }))
}

/// Delete a user
///
/// With its tokens and all its stores and records. `{user}` is an id or a username.
#[utoipa::path(
    delete,
    path = "/v2/admin/users/{user}",
    tag = "admin",
    operation_id = "admin_user_delete",
    params(("user" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "A user id or username")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn user_delete(
    State(state): State<AppState>,
    caller: Caller,
    AdminUserPath(raw): AdminUserPath,
) -> ApiResult<StatusCode> {
    require_admin(&caller)?;
    let local = Local(state.store.clone());
    let user = local.user_by_ref(&raw).await?;
    if is_self(&caller, &user) {
        return Err(ApiError::InvalidInput("You cannot delete yourself.".into()));
    }
    local.delete_user(&user.username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issue a token
///
/// A new token for the user, full or read-only; with `revokeOthers` (rotation) every other
/// token of the user stops working at once. The token is shown only this once.
#[utoipa::path(
    post,
    path = "/v2/admin/users/{user}/tokens",
    tag = "admin",
    operation_id = "admin_user_token_create",
    params(("user" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "A user id or username")),
    request_body(content = Option<NewTokenBody>, content_type = "application/json"),
    responses(
        (status = 201, description = "The new token", body = Data<IssuedToken>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn user_token_create(
    State(state): State<AppState>,
    caller: Caller,
    AdminUserPath(raw): AdminUserPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let local = Local(state.store.clone());
    let user = local.user_by_ref(&raw).await?;
    let body: NewTokenBody = json_body(&state, &headers, body).await?;
    let issued = local
        .new_token(&user.username, body.read_only, body.revoke_others)
        .await?;
    Ok((StatusCode::CREATED, Json(Data { data: issued })).into_response())
}
