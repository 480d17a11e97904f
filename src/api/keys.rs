//! `GET /v2/key-value-stores/{storeId}/keys`: one page of keys in UTF-8 byte order, read by an
//! ordered range scan from `exclusiveStartKey`/`prefix`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::dto::{Data, KeyListDto};
use super::openapi::responses::{
    BadRequest, Forbidden, InternalServerError, NotFound, ServiceUnavailable, Unauthorized,
};
use super::openapi::schemas::{NonNegativeNumber, StoreRef};
use super::params::{FromParams, KeyFilterParams, KeyListParams, Params};
use super::paths::StorePath;
use super::resolve::{resolve, Ask, Need, Resolved};
use super::{AppState, BearerToken};
use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::model::{now_millis, RecordKey, RecordMeta, StoreInfo};
use crate::storage::{AccessKind, KeyListQuery, KeyPage};

/// Which keys a listing covers, once `prefix` and `collection` are combined.
pub enum KeyFilter {
    /// Keys starting with this prefix.
    Prefix(String),
    /// Only this key (a collection with a fixed `key`).
    Exact(String),
    /// No key can match.
    Nothing,
}

/// The store of a key listing or a records ZIP, and which of its keys are asked for, if the caller
/// or the request's storage signature (`?signature=`) may read it. The access check comes before
/// the key parameters are read: a store the caller may not see is 404 whatever they say.
pub async fn readable_keys<T: FromParams>(
    state: &AppState,
    token: &BearerToken,
    store_ref: &str,
    params: &Params,
) -> ApiResult<(Resolved, T)> {
    let ask = Ask::store(store_ref, Need::Read).signed(params.get("signature"));
    let resolved = resolve(state, token, ask).await?;
    Ok((resolved, params.parse()?))
}

/// Combines the `prefix` parameter with the store schema's `collection`, if one is asked for.
pub fn key_filter(store: &StoreInfo, wanted: &KeyFilterParams) -> ApiResult<KeyFilter> {
    let prefix = wanted.prefix.as_str();
    let Some(collection) = wanted.collection.as_deref() else {
        return Ok(KeyFilter::Prefix(prefix.to_owned()));
    };
    let schema: Option<serde_json::Value> = store
        .schema
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let Some(def) = schema
        .as_ref()
        .and_then(|s| s.get("collections"))
        .and_then(|c| c.get(collection))
    else {
        return Err(ApiError::InvalidCollection(format!(
            "Collection \"{}\" is not defined in the store's schema.",
            super::params::shorten(collection)
        )));
    };
    if let Some(key) = def.get("key").and_then(|k| k.as_str()) {
        return Ok(if key.starts_with(prefix) {
            KeyFilter::Exact(key.to_owned())
        } else {
            KeyFilter::Nothing
        });
    }
    let key_prefix = def.get("keyPrefix").and_then(|k| k.as_str()).unwrap_or("");
    Ok(if prefix.starts_with(key_prefix) {
        KeyFilter::Prefix(prefix.to_owned())
    } else if key_prefix.starts_with(prefix) {
        KeyFilter::Prefix(key_prefix.to_owned())
    } else {
        KeyFilter::Nothing
    })
}

/// One page of keys matching `filter` after `exclusive_start_key`.
pub async fn list_page(
    state: &AppState,
    store: &StoreInfo,
    filter: &KeyFilter,
    exclusive_start_key: Option<&str>,
    limit: usize,
) -> ApiResult<KeyPage> {
    let empty = KeyPage {
        items: Vec::new(),
        is_truncated: false,
    };
    let page = match filter {
        KeyFilter::Nothing => Some(empty),
        KeyFilter::Exact(key) => {
            let after_start = exclusive_start_key.is_none_or(|s| key.as_str() > s);
            match RecordKey::parse(key) {
                Ok(key) if after_start => {
                    let meta = state.store.record_meta(&store.id, &key).await?;
                    Some(KeyPage {
                        items: meta.into_iter().collect(),
                        is_truncated: false,
                    })
                }
                _ => Some(empty),
            }
        }
        KeyFilter::Prefix(prefix) => {
            let query = KeyListQuery {
                exclusive_start_key: exclusive_start_key.map(str::to_owned),
                prefix: prefix.clone(),
                limit,
            };
            state.store.keys_list(&store.id, &query).await?
        }
    };
    page.ok_or(ApiError::StoreNotFound)
}

/// List a store's keys
///
/// One page of keys in UTF-8 byte order, after `exclusiveStartKey`.
#[utoipa::path(
    get,
    path = "/v2/key-value-stores/{store}/keys",
    tag = "key-value-stores",
    operation_id = "keyValueStore_keys_get",
    params(
        ("store" = StoreRef, Path),
        ("exclusiveStartKey" = Option<String>, Query, description = "List the keys after this one"),
        ("limit" = Option<NonNegativeNumber>, Query,
            description = "Page size: 0 or absent means 1000; larger values are clamped to 1000"),
        ("prefix" = Option<String>, Query, description = "Only keys starting with this"),
        ("collection" = Option<String>, Query,
            description = "Only keys of this collection of the store's schema (400 `invalid-collection` if it has none of that name)"),
        ("signature" = Option<String>, Query,
            description = "A storage signature (from `keysPublicUrl`): opens the listing without a token"),
    ),
    responses(
        (status = 200, description = "A page of keys", body = Data<KeyListDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = []), ()),
)]
pub async fn keys_list(
    State(state): State<AppState>,
    token: BearerToken,
    StorePath(store_ref): StorePath,
    params: Params,
) -> ApiResult<Response> {
    // Without a collection the keys asked for do not depend on the store: they come with the
    // access check, in one round trip by id (see `resolve`). Bad parameters are answered after
    // the access check, as `readable_keys` does.
    let wanted: ApiResult<KeyListParams> = params.parse();
    let query = match &wanted {
        Ok(w) if w.filter.collection.is_none() => Some(KeyListQuery {
            exclusive_start_key: w.exclusive_start_key.clone(),
            prefix: w.filter.prefix.clone(),
            limit: usize::try_from(w.limit).unwrap_or(1000),
        }),
        _ => None,
    };
    let ask = Ask::store(&store_ref, Need::Read).signed(params.get("signature"));
    let ask = match &query {
        Some(query) => ask.listing_keys(query),
        None => ask,
    };
    let mut resolved = resolve(&state, &token, ask).await?;
    let wanted = wanted?;
    let limit = wanted.limit;
    let exclusive_start_key = wanted.exclusive_start_key.as_deref();
    let page = match (resolved.keys.take(), &query) {
        (Some(page), _) => page,
        // Deleted since the access check.
        (None, Some(_)) => return Err(ApiError::StoreNotFound),
        (None, None) => {
            let filter = key_filter(&resolved.store, &wanted.filter)?;
            list_page(
                &state,
                &resolved.store,
                &filter,
                exclusive_start_key,
                usize::try_from(limit).unwrap_or(1000),
            )
            .await?
        }
    };
    state
        .access
        .record(&resolved.store.id, AccessKind::List, now_millis());

    let next = if page.is_truncated {
        page.items.last().map(|m| m.key.as_str())
    } else {
        None
    };
    let list = KeyListJson {
        store: &resolved.store,
        public_url: &state.config.public_url,
        // Whoever may see the secret, or holds a storage signature (which opens every record
        // through the ZIP anyway), gets record URLs that open without a token.
        signed: resolved.may_write() || resolved.by_signature,
        items: &page.items,
        limit,
        exclusive_start_key,
        is_truncated: page.is_truncated,
        next_exclusive_start_key: next,
    };
    let body = list
        .write()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A page of keys as `Data<KeyListDto>`'s JSON, written directly: a page of 1000 keys spent a
/// fifth of its CPU building a `KeyDto` per key and escaping every key and URL through
/// serde. Keys hold only [a-zA-Z0-9!\-_.'()] and signatures are base62, so neither needs escaping
/// in a JSON string; what may (the base URL, `exclusiveStartKey`) goes through serde_json.
struct KeyListJson<'a> {
    store: &'a StoreInfo,
    public_url: &'a str,
    signed: bool,
    items: &'a [RecordMeta],
    limit: u64,
    exclusive_start_key: Option<&'a str>,
    is_truncated: bool,
    next_exclusive_start_key: Option<&'a str>,
}

impl KeyListJson<'_> {
    fn write(&self) -> serde_json::Result<Vec<u8>> {
        use std::io::Write;
        let store = self.store;
        // `"…/records/` (quoted and escaped, without its closing quote): each URL's start.
        let mut base = serde_json::to_vec(&format!(
            "{}/v2/key-value-stores/{}/records/",
            self.public_url, store.id
        ))?;
        base.pop();
        let signer = self
            .signed
            .then(|| auth::Signer::new(&store.url_signing_secret_key));
        let per_item = base.len() + 96;
        let mut out = Vec::with_capacity(256 + self.items.len() * per_item);
        out.extend_from_slice(b"{\"data\":{\"items\":[");
        for (i, meta) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let key = meta.key.as_str();
            // A key read back from a backup or another store that breaks the rule is escaped
            // like any string: the shortcut must never let a key end the JSON string.
            let escaped;
            let key_json = if key.bytes().all(crate::model::is_key_byte) {
                key.as_bytes()
            } else {
                escaped = serde_json::to_vec(key)?;
                &escaped[1..escaped.len() - 1]
            };
            out.extend_from_slice(b"{\"key\":\"");
            out.extend_from_slice(key_json);
            out.extend_from_slice(b"\",\"size\":");
            out.extend_from_slice(itoa::Buffer::new().format(meta.size).as_bytes());
            out.extend_from_slice(b",\"recordPublicUrl\":");
            out.extend_from_slice(&base);
            out.extend_from_slice(key_json);
            // A key that spells a storage message gets a plain URL: its signature would open
            // the whole store for ever (see `auth::key_spells_storage_message`).
            if let Some(signer) = signer
                .as_ref()
                .filter(|_| !auth::key_spells_storage_message(key, store.id.as_str()))
            {
                out.extend_from_slice(b"?signature=");
                signer.sign_into(key, &mut out);
            }
            out.extend_from_slice(b"\"}");
        }
        write!(
            out,
            "],\"count\":{},\"limit\":{},\"exclusiveStartKey\":",
            self.items.len(),
            self.limit
        )
        .map_err(serde_json::Error::io)?;
        serde_json::to_writer(&mut out, &self.exclusive_start_key)?;
        write!(
            out,
            ",\"isTruncated\":{},\"nextExclusiveStartKey\":",
            self.is_truncated
        )
        .map_err(serde_json::Error::io)?;
        serde_json::to_writer(&mut out, &self.next_exclusive_start_key)?;
        out.extend_from_slice(b"}}");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RecordKey, UserId};

    #[test]
    fn a_listing_escapes_a_key_that_breaks_the_key_rule() {
        let store = StoreInfo::new(UserId::generate(), None, None);
        // Only deserializing (a backup, another store) can make such a key.
        let key = |s: &str| -> RecordKey { serde_json::from_value(s.into()).unwrap() };
        let items = [
            RecordMeta {
                key: key("plain-(key)!'."),
                size: 1,
                content_type: "text/plain".into(),
                version: 1,
            },
            RecordMeta {
                key: key("a\"b\\c\n"),
                size: 2,
                content_type: "text/plain".into(),
                version: 1,
            },
        ];
        for signed in [false, true] {
            let page = KeyListJson {
                store: &store,
                public_url: "http://x",
                signed,
                items: &items,
                limit: 10,
                exclusive_start_key: None,
                is_truncated: false,
                next_exclusive_start_key: None,
            };
            let json: serde_json::Value = serde_json::from_slice(&page.write().unwrap()).unwrap();
            let listed = &json["data"]["items"];
            assert_eq!(listed[0]["key"], "plain-(key)!'.");
            assert_eq!(listed[1]["key"], "a\"b\\c\n");
            let url = listed[1]["recordPublicUrl"].as_str().unwrap();
            assert!(url.contains("/records/a\"b\\c\n"), "{url}");
            assert_eq!(json["data"]["count"], 2);
        }
    }
}
