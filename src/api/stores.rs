//! `/v2/key-value-stores` and `/v2/key-value-stores/{storeId}`: list, get-or-create, get, update,
//! delete.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::body::read_json;
use super::dto::{Data, StoreDto, StoreListDto};
use super::openapi::responses::{
    BadRequest, Conflict, Forbidden, InternalServerError, NotFound, PayloadTooLarge,
    RequestTimeout, ServiceUnavailable, Unauthorized, UnsupportedMediaType,
};
use super::openapi::schemas::{
    CreateStoreBody, NonNegativeNumber, QueryBool, StoreNameParam, StoreRef, UpdateStoreBody,
};
use super::params::{Ownership, Params, StoreCreateParams, StoreListParams};
use super::paths::StorePath;
use super::resolve::{resolve, Ask, Need};
use super::{AppState, BearerToken};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::{
    now_millis, GeneralAccess, ShareAccess, StoreInfo, StoreName, User, MAX_TITLE_CHARS,
};
use crate::storage::{AccessKind, StorageError, StoreListQuery, StorePage, StoreUpdate};

fn require_user(caller: &Caller) -> ApiResult<&User> {
    caller.user().ok_or(ApiError::TokenNotProvided)
}

fn dto(state: &AppState, store: &StoreInfo, owner: Option<&User>, may_write: bool) -> StoreDto {
    let mut store = store.clone();
    state.access.overlay(&mut store);
    StoreDto::new(
        &store,
        owner.map(|u| &u.username),
        &state.config.public_url,
        may_write,
    )
}

/// List the caller's stores
///
/// One page of the stores the caller owns, oldest first.
#[utoipa::path(
    get,
    path = "/v2/key-value-stores",
    tag = "key-value-stores",
    operation_id = "keyValueStores_get",
    params(
        ("offset" = Option<NonNegativeNumber>, Query, description = "How many stores to skip (default 0)"),
        ("limit" = Option<NonNegativeNumber>, Query,
            description = "Page size: 0 or absent means 1000; larger values are clamped to 1000"),
        ("desc" = Option<QueryBool>, Query, description = "Newest first"),
        ("unnamed" = Option<QueryBool>, Query, description = "Also list unnamed stores"),
        ("ownership" = Option<String>, Query, pattern = "^(?:ownedByMe|sharedWithMe)?$",
            description = "`ownedByMe` (the caller's own stores) or `sharedWithMe` (stores other users shared with the caller); absent: both"),
    ),
    responses(
        (status = 200, description = "A page of stores", body = Data<StoreListDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn stores_list(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> ApiResult<Json<Data<StoreListDto>>> {
    let user = require_user(&caller)?;
    let wanted: StoreListParams = params.parse()?;
    let query = StoreListQuery {
        offset: wanted.offset,
        limit: wanted.limit,
        desc: wanted.desc,
        unnamed: wanted.unnamed,
    };
    let page = match wanted.ownership {
        Ownership::OwnedByMe => state.store.stores_list(&user.id, &query).await?,
        Ownership::SharedWithMe => state.store.stores_shared_with(&user.id, &query).await?,
        Ownership::Both => owned_and_shared(&state, user, &query).await?,
    };
    let mut items: Vec<StoreDto> = Vec::with_capacity(page.items.len());
    for store in &page.items {
        if store.user_id == user.id {
            items.push(dto(&state, store, Some(user), !caller.read_only()));
        } else {
            let owner = state.store.user_by_id(&store.user_id).await?;
            let access = state.store.share_get(&store.id, &user.id).await?;
            let may_write = access == Some(ShareAccess::Write) && !caller.read_only();
            items.push(dto(&state, store, owner.as_ref(), may_write));
        }
    }
    Ok(Json(Data {
        data: StoreListDto {
            total: page.total,
            offset: query.offset,
            limit: query.limit,
            desc: query.desc,
            count: items.len() as u64,
            unnamed: query.unnamed,
            items,
        },
    }))
}

/// The default listing: the caller's own stores and those shared with it, in one order. Shares
/// are few, so all of them are merged with the first `offset + limit` owned stores.
async fn owned_and_shared(
    state: &AppState,
    user: &User,
    query: &StoreListQuery,
) -> ApiResult<StorePage> {
    let everything = StoreListQuery {
        offset: 0,
        limit: u64::MAX,
        ..query.clone()
    };
    let shared = state
        .store
        .stores_shared_with(&user.id, &everything)
        .await?;
    if shared.items.is_empty() {
        return Ok(state.store.stores_list(&user.id, query).await?);
    }
    let head = StoreListQuery {
        offset: 0,
        limit: query.offset.saturating_add(query.limit),
        ..query.clone()
    };
    let owned = state.store.stores_list(&user.id, &head).await?;
    let mut merged: Vec<StoreInfo> = owned.items.into_iter().chain(shared.items).collect();
    merged.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    if query.desc {
        merged.reverse();
    }
    let items = merged
        .into_iter()
        .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(query.limit).unwrap_or(usize::MAX))
        .collect();
    Ok(StorePage {
        total: owned.total + shared.total,
        items,
    })
}

/// Checks a key-value store schema (Apify's `actorKeyValueStoreSchemaVersion` format) and returns
/// it as JSON text.
fn validate_schema(schema: &serde_json::Value) -> ApiResult<String> {
    let invalid = |msg: &str| ApiError::StoreSchemaInvalid(format!("Invalid store schema: {msg}"));
    let obj = schema
        .as_object()
        .ok_or_else(|| invalid("it must be a JSON object"))?;
    if let Some(collections) = obj.get("collections") {
        let collections = collections
            .as_object()
            .ok_or_else(|| invalid("\"collections\" must be an object"))?;
        for (name, c) in collections {
            let c = c
                .as_object()
                .ok_or_else(|| invalid(&format!("collection \"{name}\" must be an object")))?;
            let key = c.get("key").map(|k| k.as_str());
            let prefix = c.get("keyPrefix").map(|k| k.as_str());
            match (key, prefix) {
                (Some(Some(_)), None) | (None, Some(Some(_))) => {}
                _ => {
                    return Err(invalid(&format!(
                        "collection \"{name}\" needs exactly one of \"key\" or \"keyPrefix\" (a string)"
                    )))
                }
            }
            if let Some(types) = c.get("contentTypes") {
                let ok = types
                    .as_array()
                    .is_some_and(|a| a.iter().all(|t| t.is_string()));
                if !ok {
                    return Err(invalid(&format!(
                        "\"contentTypes\" of collection \"{name}\" must be an array of strings"
                    )));
                }
            }
        }
    }
    serde_json::to_string(schema).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Get or create a store
///
/// Creates a store named `name` (unnamed without it), or returns the caller's store of that
/// name.
#[utoipa::path(
    post,
    path = "/v2/key-value-stores",
    tag = "key-value-stores",
    operation_id = "keyValueStores_post",
    params(
        ("name" = Option<StoreNameParam>, Query,
            description = "The store's name; empty or absent creates an unnamed store"),
    ),
    request_body(content = Option<CreateStoreBody>, content_type = "application/json",
        description = "Optional: the schema of a store that is created (ignored for an existing one)"),
    responses(
        (status = 200, description = "The caller already has a store of that name", body = Data<StoreDto>,
            headers(("Location" = String, description = "The store's URL"))),
        (status = 201, description = "Created", body = Data<StoreDto>,
            headers(("Location" = String, description = "The store's URL"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn stores_create(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let user = require_user(&caller)?;
    let StoreCreateParams { name } = params.parse()?;
    let body = read_json(
        body,
        &headers,
        &state.store.spool_dir(),
        state.config.idle_timeout,
    )
    .await?;
    let schema = match body.as_ref().and_then(|b| b.get("schema")) {
        None | Some(serde_json::Value::Null) => None,
        Some(schema) => Some(validate_schema(schema)?),
    };
    // A read-only token may open an existing named store (clients and the SDK open stores this
    // way) but not create one.
    let (store, created) = if caller.read_only() {
        let existing = match &name {
            Some(name) => state.store.store_get_by_name(&user.id, name).await?,
            None => None,
        };
        (existing.ok_or(ApiError::InsufficientPermissions)?, false)
    } else {
        state
            .store
            .store_get_or_create(StoreInfo::new(user.id.clone(), name, schema))
            .await?
    };
    let dto = dto(&state, &store, Some(user), !caller.read_only());
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!(
        "{}/v2/key-value-stores/{}",
        state.config.public_url, store.id
    );
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(Data { data: dto }),
    )
        .into_response())
}

/// Get a store
#[utoipa::path(
    get,
    path = "/v2/key-value-stores/{store}",
    tag = "key-value-stores",
    operation_id = "keyValueStore_get",
    params(("store" = StoreRef, Path)),
    responses(
        (status = 200, description = "The store object; `urlSigningSecretKey` and signed URLs only for callers who may write",
            body = Data<StoreDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = []), ()),
)]
pub async fn store_get(
    State(state): State<AppState>,
    token: BearerToken,
    StorePath(store_ref): StorePath,
) -> ApiResult<Json<Data<StoreDto>>> {
    let resolved = resolve(&state, &token, Ask::store(&store_ref, Need::Read)).await?;
    state
        .access
        .record(&resolved.store.id, AccessKind::Touch, now_millis());
    let store = resolved.store_with_counters(&state).await?;
    let owner = state.store.user_by_id(&store.user_id).await?;
    Ok(Json(Data {
        data: dto(&state, &store, owner.as_ref(), resolved.may_write()),
    }))
}

/// Update a store
///
/// Renames the store (`null`: unnamed) and/or changes its `generalAccess`; absent fields are
/// left as they are.
#[utoipa::path(
    put,
    path = "/v2/key-value-stores/{store}",
    tag = "key-value-stores",
    operation_id = "keyValueStore_put",
    params(("store" = StoreRef, Path)),
    request_body(content = Option<UpdateStoreBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated store", body = Data<StoreDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn store_update(
    State(state): State<AppState>,
    token: BearerToken,
    StorePath(store_ref): StorePath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Data<StoreDto>>> {
    let resolved = resolve(&state, &token, Ask::store(&store_ref, Need::Manage)).await?;
    let body = read_json(
        body,
        &headers,
        &state.store.spool_dir(),
        state.config.idle_timeout,
    )
    .await?
    .unwrap_or_default();
    let mut update = StoreUpdate::default();
    match body.get("name") {
        None => {}
        Some(serde_json::Value::Null) => update.name = Some(None),
        Some(serde_json::Value::String(name)) => {
            update.name = Some(Some(
                StoreName::parse(name).map_err(|e| ApiError::InvalidInput(e.0))?,
            ))
        }
        Some(_) => {
            return Err(ApiError::InvalidInput(
                "\"name\" must be a string or null.".into(),
            ))
        }
    }
    match body.get("generalAccess") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(access)) => {
            update.general_access =
                Some(GeneralAccess::parse(access).map_err(|e| ApiError::InvalidInput(e.0))?)
        }
        Some(_) => {
            return Err(ApiError::InvalidInput(
                "\"generalAccess\" must be a string.".into(),
            ))
        }
    }
    match body.get("title") {
        None => {}
        Some(serde_json::Value::Null) => update.title = Some(None),
        Some(serde_json::Value::String(title)) if title.chars().count() <= MAX_TITLE_CHARS => {
            update.title = Some(Some(title.clone()))
        }
        Some(serde_json::Value::String(_)) => {
            return Err(ApiError::InvalidInput(format!(
                "\"title\" may have at most {MAX_TITLE_CHARS} characters."
            )))
        }
        Some(_) => {
            return Err(ApiError::InvalidInput(
                "\"title\" must be a string or null.".into(),
            ))
        }
    }
    let wanted_name = update.name.clone().flatten();
    let updated = state
        .store
        .store_update(&resolved.store.id, update)
        .await
        .map_err(|e| match (e, wanted_name) {
            (StorageError::NameTaken, Some(name)) => {
                ApiError::StoreNameNotUnique(name.into_string())
            }
            (e, _) => e.into(),
        })?;
    let store = updated.ok_or(ApiError::StoreNotFound)?;
    let owner = state.store.user_by_id(&store.user_id).await?;
    Ok(Json(Data {
        data: dto(&state, &store, owner.as_ref(), true),
    }))
}

/// Delete a store and all its records
#[utoipa::path(
    delete,
    path = "/v2/key-value-stores/{store}",
    tag = "key-value-stores",
    operation_id = "keyValueStore_delete",
    params(("store" = StoreRef, Path)),
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
pub async fn store_delete(
    State(state): State<AppState>,
    token: BearerToken,
    StorePath(store_ref): StorePath,
) -> ApiResult<StatusCode> {
    let resolved = resolve(&state, &token, Ask::store(&store_ref, Need::Manage)).await?;
    if state.store.store_delete(&resolved.store.id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::StoreNotFound)
    }
}
