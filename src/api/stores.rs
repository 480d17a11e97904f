//! `/v2/key-value-stores` and `/v2/key-value-stores/{storeId}`: list, get-or-create, get, update,
//! delete.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::body::read_json;
use super::dto::{Data, StoreDto, StoreListDto};
use super::params::Params;
use super::paths::StorePath;
use super::resolve::{resolve, Need, Signed};
use super::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::{now_millis, GeneralAccess, StoreInfo, StoreName, User};
use crate::storage::{AccessKind, StorageError, StoreListQuery, StoreUpdate};

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

pub async fn stores_list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> ApiResult<Json<Data<StoreListDto>>> {
    let user = require_user(&caller)?;
    let params = Params::from_query(uri.query());
    let query = StoreListQuery {
        offset: params.u64("offset")?.unwrap_or(0),
        limit: params.limit()?,
        desc: params.bool("desc")?,
        unnamed: params.bool("unnamed")?,
    };
    let shared_only = match params.get("ownership")? {
        None | Some("ownedByMe") => false,
        Some("sharedWithMe") => true,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "Parameter \"ownership\" must be \"ownedByMe\" or \"sharedWithMe\", got \"{}\".",
                super::params::shorten(other)
            )))
        }
    };
    // Sharing between users is not implemented yet, so nothing is shared with anyone.
    let page = if shared_only {
        crate::storage::StorePage {
            total: 0,
            items: Vec::new(),
        }
    } else {
        state.store.stores_list(&user.id, &query).await?
    };
    let items: Vec<StoreDto> = page
        .items
        .iter()
        .map(|s| dto(&state, s, Some(user), true))
        .collect();
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

pub async fn stores_create(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let user = require_user(&caller)?;
    let params = Params::from_query(uri.query());
    let name = params
        .get("name")?
        .map(StoreName::parse)
        .transpose()
        .map_err(|e| ApiError::InvalidParameter(e.0))?;
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
    let (store, created) = state
        .store
        .store_get_or_create(StoreInfo::new(user.id.clone(), name, schema))
        .await?;
    let dto = dto(&state, &store, Some(user), true);
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

pub async fn store_get(
    State(state): State<AppState>,
    caller: Caller,
    StorePath(store_ref): StorePath,
) -> ApiResult<Json<Data<StoreDto>>> {
    let resolved = resolve(&state, &caller, &store_ref, Need::Read, Signed::None).await?;
    state
        .access
        .record(&resolved.store.id, AccessKind::Touch, now_millis());
    let owner = state.store.user_by_id(&resolved.store.user_id).await?;
    Ok(Json(Data {
        data: dto(
            &state,
            &resolved.store,
            owner.as_ref(),
            resolved.may_write(),
        ),
    }))
}

pub async fn store_update(
    State(state): State<AppState>,
    caller: Caller,
    StorePath(store_ref): StorePath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Data<StoreDto>>> {
    let resolved = resolve(&state, &caller, &store_ref, Need::Write, Signed::None).await?;
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

pub async fn store_delete(
    State(state): State<AppState>,
    caller: Caller,
    StorePath(store_ref): StorePath,
) -> ApiResult<StatusCode> {
    let resolved = resolve(&state, &caller, &store_ref, Need::Write, Signed::None).await?;
    if state.store.store_delete(&resolved.store.id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::StoreNotFound)
    }
}
