//! `/v2/users`: the caller's own account (`GET /v2/users/me`, which the Apify CLI asks on login and
//! before every command) and an account's public data (`GET /v2/users/{userId}`, which
//! `apify kvs info` asks for the store owner). kvstore has no plan, proxy or email to report.

use axum::extract::State;
use axum::Json;

use super::dto::{Data, PrivateUserDto, PublicUserDto};
use super::openapi::responses::{
    BadRequest, InternalServerError, NotFound, ServiceUnavailable, Unauthorized,
};
use super::paths::UserPath;
use super::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::UserId;

/// The caller's account
#[utoipa::path(
    get,
    path = "/v2/users/me",
    tag = "users",
    operation_id = "users_me_get",
    responses(
        (status = 200, description = "The caller", body = Data<PrivateUserDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn users_me(caller: Caller) -> ApiResult<Json<Data<PrivateUserDto>>> {
    let user = caller.user().ok_or(ApiError::TokenNotProvided)?;
    Ok(Json(Data {
        data: PrivateUserDto::new(user),
    }))
}

/// `{user}` is a user id or a username. Unlike Apify, a token is needed, and a username finds only
/// the caller: usernames are guessable and kvstore never reveals which exist (as with
/// `username~name`). Any user found by id is shown, because an id is only learnt from a store
/// object, which already carries the owner's username.
/// A user's public data
///
/// Any user by id, or the caller by username.
#[utoipa::path(
    get,
    path = "/v2/users/{userId}",
    tag = "users",
    operation_id = "user_get",
    params(("userId" = String, Path, description = "A user id, or the caller's own username")),
    responses(
        (status = 200, description = "The user's public data", body = Data<PublicUserDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn user_get(
    State(state): State<AppState>,
    caller: Caller,
    UserPath(user_ref): UserPath,
) -> ApiResult<Json<Data<PublicUserDto>>> {
    let me = caller.user().ok_or(ApiError::TokenNotProvided)?;
    let by_id = match UserId::parse(&user_ref) {
        Some(id) => state.store.user_by_id(&id).await?,
        None => None,
    };
    let data = match &by_id {
        Some(user) => PublicUserDto::new(user),
        None if me.username.as_str() == user_ref => PublicUserDto::new(me),
        None => return Err(ApiError::UserNotFound),
    };
    Ok(Json(Data { data }))
}
