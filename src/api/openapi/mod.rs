//! The OpenAPI 3.1 document of the whole API, generated from the code: the handlers'
//! `#[utoipa::path]` annotations, the wire types' `ToSchema` derives (`dto.rs`), the error
//! responses (`responses.rs`) and the parameter and body schemas (`schemas.rs`). This module owns
//! the document and its modifiers and lists the handlers; handlers import only the two child
//! modules, never this one, so the document and the handlers do not import each other. Served at
//! `GET /v2/openapi.json`; `tests/openapi.rs` checks real responses against it and
//! `scripts/schemathesis.sh` fuzzes the server with it.

pub mod responses;
pub mod schemas;

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{self, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::{admin, keys, observe, ops, records, shares, stores, users};
use crate::error::ApiError;
use responses::*;
use schemas::*;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kvstore",
        description = "A self-hosted server for the key-value-store part of the Apify API v2 \
            (see docs/api.md). Success bodies are `{\"data\": …}`, errors \
            `{\"error\": {\"type\", \"message\"}}`; records and the ZIP download are raw bytes.\n\n\
            Query parameters: an empty value (`?limit=`) counts as absent, and a parameter given \
            twice is 400 `invalid-parameter`. Request bodies may be sent with \
            `Content-Encoding: gzip | br | deflate | identity` (anything else is 415).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        stores::stores_list,
        stores::stores_create,
        stores::store_get,
        stores::store_update,
        stores::store_delete,
        keys::keys_list,
        records::records_zip,
        records::record_get,
        records::record_head,
        records::record_put,
        records::record_delete,
        users::users_me,
        users::user_get,
        admin::backup_get,
        admin::users_list,
        admin::users_create,
        admin::user_update,
        admin::user_delete,
        admin::user_token_create,
        shares::shares_list,
        shares::share_put,
        shares::share_delete,
        ops::healthz,
        ops::readyz,
        observe::metrics_get,
        openapi_get,
    ),
    components(
        schemas(
            ErrorEnvelope,
            ErrorBody,
            ErrorType,
            Health,
            StoreRef,
            StoreName,
            StoreNameParam,
            RecordKey,
            QueryBool,
            NonNegativeNumber,
        ),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            MethodNotAllowed,
            RequestTimeout,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            RangeNotSatisfiable,
            HeadersTooLarge,
            TooManyRequests,
            InsufficientStorage,
            InternalServerError,
            ServiceUnavailable,
        ),
    ),
    modifiers(
        &SecuritySchemes,
        &DistinctOperationIds,
        &OptionalRecordBody,
        &Links,
        &RateLimited
    ),
    tags(
        (name = "key-value-stores", description = "Stores, keys and records (Apify API v2)"),
        (name = "users", description = "The caller's account and store owners"),
        (name = "admin", description = "Administration (users with admin rights only)"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    ),
)]
pub struct ApiDoc;

/// The document as JSON, built once.
fn document() -> Option<&'static [u8]> {
    static DOC: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_vec(&ApiDoc::openapi()).ok())
        .as_deref()
}

/// This document
#[utoipa::path(
    get,
    path = "/v2/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API",
            body = Object, content_type = "application/json"),
        (status = 500, response = InternalServerError),
    ),
)]
pub async fn openapi_get() -> Response {
    match document() {
        Some(doc) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            doc,
        )
            .into_response(),
        None => ApiError::Internal("the OpenAPI document could not be serialized".into())
            .into_response(),
    }
}

// ---- security ---------------------------------------------------------------------------------

/// `Authorization: Bearer <token>` or `?token=<token>`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`Authorization: Bearer <token>`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "`?token=<token>`; the `Authorization` header wins when both are sent",
            ))),
        );
    }
}

/// One handler serves `PUT` and `POST` of a record; their operation ids must still differ.
struct DistinctOperationIds;

impl Modify for DistinctOperationIds {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            let put_id = item.put.as_ref().and_then(|op| op.operation_id.clone());
            if let (Some(post), Some(put_id)) = (item.post.as_mut(), put_id) {
                if post.operation_id.as_ref() == Some(&put_id) {
                    let base = put_id.strip_suffix("_put").unwrap_or(&put_id);
                    post.operation_id = Some(format!("{base}_post"));
                }
            }
        }
    }
}

/// Responses that every operation, every API operation or every write may give, added here
/// rather than to each handler's list: 431 for request headers over the bound (`api/headers.rs`
/// sits in front of every route), 429 with `--rate-limit` (`api/rate_limit.rs` sits in front of
/// the API) and 507 on writes that add data when the disk is full.
struct RateLimited;

impl Modify for RateLimited {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let response = |name: &str| RefOr::Ref(Ref::from_response_name(name));
        for (path, item) in doc.paths.paths.iter_mut() {
            let api = path.starts_with("/v2/") && path != "/v2/openapi.json";
            for (writes, op) in [
                (false, item.get.as_mut()),
                (false, item.head.as_mut()),
                (true, item.put.as_mut()),
                (true, item.post.as_mut()),
                (false, item.delete.as_mut()),
            ] {
                let Some(op) = op else { continue };
                let responses = &mut op.responses.responses;
                responses.insert("431".to_owned(), response("HeadersTooLarge"));
                if api {
                    responses.insert("429".to_owned(), response("TooManyRequests"));
                }
                if api && writes {
                    responses.insert("507".to_owned(), response("InsufficientStorage"));
                }
            }
        }
    }
}

/// A record body may be empty (an empty record). utoipa marks a body optional only through
/// `Option<…>`, which would also allow JSON `null` in the schema; this clears `required` instead.
struct OptionalRecordBody;

impl Modify for OptionalRecordBody {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            for op in [item.put.as_mut(), item.post.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(body) = op.request_body.as_mut() {
                    if body.content.contains_key("*/*") {
                        body.required = Some(openapi::Required::False);
                    }
                }
            }
        }
    }
}

/// Links from what creates a resource to what uses it: a created (or found) store's `id` to every
/// operation on `{store}` alone, and a written record's `{store}` and `{key}` to every operation on
/// that record. Clients and tools (schemathesis' stateful phase) follow them.
struct Links;

impl Modify for Links {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let path_params = |op: &openapi::path::Operation| -> Vec<String> {
            op.parameters
                .iter()
                .flatten()
                .filter(|p| p.parameter_in == openapi::path::ParameterIn::Path)
                .map(|p| p.name.clone())
                .collect()
        };
        // Every operation: its id and its path parameters.
        let targets: Vec<(String, Vec<String>)> = doc
            .paths
            .paths
            .values()
            .flat_map(|item| [&item.get, &item.head, &item.put, &item.post, &item.delete])
            .flatten()
            .filter_map(|op| Some((op.operation_id.clone()?, path_params(op))))
            .collect();
        for item in doc.paths.paths.values_mut() {
            for op in [item.post.as_mut(), item.put.as_mut()]
                .into_iter()
                .flatten()
            {
                let (wanted, values, statuses, description): (
                    &[&str],
                    &[(&str, &str)],
                    &[&str],
                    _,
                ) = if op.operation_id.as_deref() == Some("keyValueStores_post") {
                    (
                        &["store"],
                        &[("store", "$response.body#/data/id")],
                        &["200", "201"],
                        "The store just created or found",
                    )
                } else if path_params(op) == ["store", "key"] {
                    (
                        &["store", "key"],
                        &[
                            ("store", "$request.path.store"),
                            ("key", "$request.path.key"),
                        ],
                        &["201"],
                        "The record just written",
                    )
                } else {
                    continue;
                };
                for status in statuses {
                    let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) else {
                        continue;
                    };
                    for (id, params) in &targets {
                        if params.iter().map(String::as_str).eq(wanted.iter().copied()) {
                            let mut link = openapi::link::Link::builder().description(description);
                            for (name, value) in values {
                                link = link.parameter(*name, *value);
                            }
                            // utoipa 5 writes `Link::operation_id` as `"operation_id"`, which no
                            // tool reads; the spec's `operationId` goes in through the flattened
                            // extensions map (`from_iter` adds no `x-` prefix).
                            let link =
                                link.extensions(Some(openapi::extensions::Extensions::from_iter(
                                    [("operationId", id.clone())],
                                )))
                                .build();
                            response.links.insert(id.clone(), RefOr::T(link));
                        }
                    }
                }
            }
        }
    }
}
