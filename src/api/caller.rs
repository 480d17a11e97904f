//! Who is calling: the token of a request (`Authorization: Bearer …` or `?token=`) as an
//! extractor, and the one place a token becomes a [`Caller`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};

use super::{params, AppState};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::model::{Authenticated, Token, TokenHash};

/// The token of an `Authorization` header: `Bearer …`, else a 401.
pub(super) fn bearer(value: &HeaderValue) -> Result<Token, ApiError> {
    let value = value.to_str().map_err(|_| ApiError::InvalidToken)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::InvalidToken);
    }
    Ok(Token::from_secret(token.trim().to_owned()))
}

/// The token from `Authorization: Bearer …` or `?token=`.
pub(super) fn token_of(parts: &Parts) -> Result<Option<Token>, ApiError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        return bearer(value).map(Some);
    }
    let params = params::Params::from_query(parts.uri.query());
    Ok(params
        .get("token")?
        .map(|t| Token::from_secret(t.to_owned())))
}

/// The request's token, parsed but not yet checked: a request on a store named by id checks it in
/// the same storage round trip as the store (see [`crate::storage::RecordStore::record_read`]).
pub struct BearerToken(Option<Token>);

impl BearerToken {
    /// Whether the request carries a token at all (valid or not).
    pub fn given(&self) -> bool {
        self.0.is_some()
    }

    pub fn hash(&self) -> Option<TokenHash> {
        self.0.as_ref().map(Token::hash)
    }

    /// Who holds the token, as the backend knows it; no storage call without a token.
    pub async fn lookup(&self, state: &AppState) -> Result<Option<Authenticated>, ApiError> {
        Ok(match &self.0 {
            Some(token) => state.store.user_by_token(&token.hash()).await?,
            None => None,
        })
    }

    /// The one place a token becomes a caller, given what the backend found for it (by
    /// [`BearerToken::lookup`] or [`crate::storage::RecordStore::record_read`]): none is anonymous, one
    /// that authenticates nobody is a 401.
    pub fn caller(&self, found: Option<Authenticated>) -> Result<Caller, ApiError> {
        match (&self.0, found) {
            (None, _) => Ok(Caller::anonymous()),
            (Some(_), Some(who)) => Ok(Caller::authenticated(who)),
            (Some(_), None) => Err(ApiError::InvalidToken),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(BearerToken(token_of(parts)?))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = BearerToken(token_of(parts)?);
        token.caller(token.lookup(state).await?)
    }
}
