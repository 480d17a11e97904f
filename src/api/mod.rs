//! The HTTP layer: routes of `/v2/key-value-stores` and `/v2/users`, one module per URL resource.
//! Handlers parse and check input at the edge, ask [`crate::storage::Store`], and shape Apify's
//! responses.

mod admin;
mod body;
mod caller;
mod cors;
mod dto;
mod fast;
mod headers;
mod keys;
mod observe;
pub mod openapi;
mod ops;
pub(crate) mod params;
mod paths;
pub mod rate_limit;
mod records;
pub(crate) mod resolve;
mod settings;
mod shares;
mod state;
mod stores;
mod ui;
mod unread;
mod users;

use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;

pub use caller::BearerToken;
pub use fast::{FastAnswer, FastGet};
pub use headers::MAX_HEADER_BYTES;
pub use observe::init_metrics;
pub use params::MAX_LIMIT;
pub use settings::Settings;
pub use state::AppState;

pub fn router(state: AppState) -> Router {
    let cors = cors::layer(&state.config.cors_origins);
    let unlimited = Router::new()
        .route("/", get(ui::page))
        .route("/ui/{file}", get(ui::asset))
        .route("/metrics", get(observe::metrics_get))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/v2/openapi.json", get(openapi::openapi_get));
    let api = Router::new()
        .route("/v2/users/me", get(users::users_me))
        .route("/v2/admin/backup", get(admin::backup_get))
        .route(
            "/v2/admin/users",
            get(admin::users_list).post(admin::users_create),
        )
        .route(
            "/v2/admin/users/{user}",
            axum::routing::put(admin::user_update).delete(admin::user_delete),
        )
        .route(
            "/v2/admin/users/{user}/tokens",
            axum::routing::post(admin::user_token_create),
        )
        .route(
            "/v2/key-value-stores/{store}/shares",
            get(shares::shares_list),
        )
        .route(
            "/v2/key-value-stores/{store}/shares/{user}",
            axum::routing::put(shares::share_put).delete(shares::share_delete),
        )
        .route("/v2/users/{user}", get(users::user_get))
        .route(
            "/v2/key-value-stores",
            get(stores::stores_list).post(stores::stores_create),
        )
        .route(
            "/v2/key-value-stores/{store}",
            get(stores::store_get)
                .put(stores::store_update)
                .delete(stores::store_delete),
        )
        .route("/v2/key-value-stores/{store}/keys", get(keys::keys_list))
        .route(
            "/v2/key-value-stores/{store}/records",
            get(records::records_zip),
        )
        .route(
            "/v2/key-value-stores/{store}/records/{key}",
            get(records::record_get)
                .head(records::record_head)
                .put(records::record_put)
                .post(records::record_put)
                .delete(records::record_delete),
        );
    with_rate_limit(api, &state)
        .merge(unlimited)
        .fallback(page_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(observe::observe))
        .layer(cors)
        .with_state(state)
}

/// The rate limiter in front of the API routes, only when `--rate-limit` is set (without it, not
/// even a pass-through layer runs).
fn with_rate_limit(api: Router<AppState>, state: &AppState) -> Router<AppState> {
    match state.rate_limiter {
        Some(_) => api.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit,
        )),
        None => api,
    }
}

async fn page_not_found() -> ApiError {
    ApiError::PageNotFound
}

/// Apify names a path's methods in its 405 message. The router's own `Allow` header adds HEAD
/// wherever GET is served, which the message does not, so the list is written here;
/// `tests/openapi.rs` holds it to the router and to the document, path by path.
async fn method_not_allowed(uri: Uri) -> ApiError {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let allowed = match segments.as_slice() {
        ["v2", "key-value-stores"] => "GET, POST",
        ["v2", "key-value-stores", _] => "GET, PUT, DELETE",
        ["v2", "key-value-stores", _, "records", _] => "GET, HEAD, PUT, POST, DELETE",
        ["v2", "key-value-stores", _, "shares", _] => "PUT, DELETE",
        ["v2", "admin", "users"] => "GET, POST",
        ["v2", "admin", "users", _] => "PUT, DELETE",
        ["v2", "admin", "users", _, "tokens"] => "POST",
        _ => "GET",
    };
    ApiError::MethodNotAllowed(allowed)
}

/// Apify's `?method=` override, applied before routing (only when enabled).
pub fn override_method(mut request: Request) -> Request {
    if request.method() == Method::GET {
        let wanted = params::Params::from_query(request.uri().query())
            .get("method")
            .ok()
            .flatten()
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok());
        if let Some(method) = wanted {
            *request.method_mut() = method;
        }
    }
    request
}
