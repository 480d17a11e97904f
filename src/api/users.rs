//! `/v2/users`: the caller's own account (`GET /v2/users/me`, which the Apify CLI asks on login and
//! before every command) and an account's public data (`GET /v2/users/{userId}`, which
//! `apify kvs info` asks for the store owner). kvstore has no plan, proxy or email to report.

use axum::extract::{Path, State};
use axum::Json;

use super::dto::{Data, PrivateUserDto, PublicUserDto};
use super::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::UserId;

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
pub async fn user_get(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_ref): Path<String>,
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
