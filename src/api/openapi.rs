//! The OpenAPI 3.1 document of the whole API, generated from the code: the handlers'
//! `#[utoipa::path]` annotations, the wire types' `ToSchema` derives (`dto.rs`), and the error
//! responses built from [`ApiError`]'s own status and type mapping. Served at
//! `GET /v2/openapi.json`; `tests/openapi.rs` checks real responses against it and
//! `scripts/schemathesis.sh` fuzzes the server with it.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{self, Ref, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

use super::{admin, keys, observe, ops, records, shares, stores, users};
use crate::error::ApiError;
use crate::model::{GeneralAccess, RECORD_KEY_MAX_LEN, STORE_NAME_MAX_LEN};

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

// ---- errors -----------------------------------------------------------------------------------

/// One value of every [`ApiError`] variant: the error responses and the `type` enum are built
/// from these, so they follow `ApiError::status` and `ApiError::error_type`.
fn every_error() -> Vec<ApiError> {
    // A variant added to ApiError breaks this match until it is listed below too.
    fn listed(e: &ApiError) {
        match e {
            ApiError::TokenNotProvided
            | ApiError::InvalidToken
            | ApiError::InsufficientPermissions
            | ApiError::InvalidSignature(_)
            | ApiError::RecordOrTokenNotFound
            | ApiError::StoreNotFound
            | ApiError::RecordNotFound
            | ApiError::UserNotFound
            | ApiError::PageNotFound
            | ApiError::MethodNotAllowed(_)
            | ApiError::InvalidParameter(_)
            | ApiError::InvalidInput(_)
            | ApiError::InvalidRecordKey(_)
            | ApiError::InvalidCollection(_)
            | ApiError::StoreSchemaInvalid(_)
            | ApiError::StoreNameNotUnique(_)
            | ApiError::UsernameNotUnique(_)
            | ApiError::RequestTooLarge { .. }
            | ApiError::RequestHeadersTooLarge { .. }
            | ApiError::UnsupportedContentEncoding(_)
            | ApiError::InvalidRequestBody(_)
            | ApiError::RangeNotSatisfiable { .. }
            | ApiError::RequestTimeout
            | ApiError::RateLimitExceeded { .. }
            | ApiError::InsufficientStorage
            | ApiError::Unavailable
            | ApiError::Internal(_) => {}
        }
    }
    let all = vec![
        ApiError::TokenNotProvided,
        ApiError::InvalidToken,
        ApiError::InsufficientPermissions,
        ApiError::InvalidSignature(String::new()),
        ApiError::RecordOrTokenNotFound,
        ApiError::StoreNotFound,
        ApiError::RecordNotFound,
        ApiError::UserNotFound,
        ApiError::PageNotFound,
        ApiError::MethodNotAllowed(""),
        ApiError::InvalidParameter(String::new()),
        ApiError::InvalidInput(String::new()),
        ApiError::InvalidRecordKey(String::new()),
        ApiError::InvalidCollection(String::new()),
        ApiError::StoreSchemaInvalid(String::new()),
        ApiError::StoreNameNotUnique(String::new()),
        ApiError::UsernameNotUnique(String::new()),
        ApiError::RequestTooLarge { limit: 0 },
        ApiError::RequestHeadersTooLarge { limit: 0 },
        ApiError::UnsupportedContentEncoding(String::new()),
        ApiError::InvalidRequestBody(String::new()),
        ApiError::RangeNotSatisfiable { size: 0 },
        ApiError::RequestTimeout,
        ApiError::RateLimitExceeded { limit: 0 },
        ApiError::InsufficientStorage,
        ApiError::Unavailable,
        ApiError::Internal(String::new()),
    ];
    all.iter().for_each(listed);
    all
}

/// The distinct `error.type`s of the errors answered with `status` (every one when `None`).
fn error_types(status: Option<u16>) -> Vec<&'static str> {
    let mut types: Vec<&'static str> = Vec::new();
    for e in every_error() {
        if status.is_none_or(|s| e.status().as_u16() == s) && !types.contains(&e.error_type()) {
            types.push(e.error_type());
        }
    }
    types
}

fn string_enum(values: Vec<&'static str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
}

/// Apify's error envelope: `{"error": {"type", "message"}}`.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the JSON that `ApiError::into_response` writes
pub struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    r#type: ErrorType,
    /// A human-readable explanation.
    #[schema(min_length = 1)]
    message: String,
}

/// Every `error.type` kvstore answers with (Apify's names).
pub struct ErrorType;

impl PartialSchema for ErrorType {
    fn schema() -> RefOr<Schema> {
        string_enum(error_types(None)).into()
    }
}

impl ToSchema for ErrorType {}

/// The envelope, with `error.type` narrowed to the types answered with `status`.
fn error_response(status: u16, description: &str) -> openapi::Response {
    let narrowed = ObjectBuilder::new().property(
        "error",
        ObjectBuilder::new().property("type", string_enum(error_types(Some(status)))),
    );
    let types = error_types(Some(status))
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name("ErrorEnvelope"))
        .item(narrowed);
    let mut response = ResponseBuilder::new()
        .description(format!("{description} (`error.type`: {types})"))
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        );
    if status == 429 {
        for (name, description) in [
            ("X-RateLimit-Limit", "The requests per second allowed"),
            ("Retry-After", "Seconds to wait before retrying"),
        ] {
            response = response.header(
                name,
                openapi::HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some(description))
                    .build(),
            );
        }
    }
    if status == 416 {
        response = response.header(
            "Content-Range",
            openapi::HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some("`bytes */<size>`"))
                .build(),
        );
    }
    response.build()
}

macro_rules! error_responses {
    ($($name:ident = $status:literal, $description:literal;)*) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<openapi::Response>) {
                (stringify!($name), error_response($status, $description).into())
            }
        }
    )*};
}

error_responses! {
    BadRequest = 400, "A parameter, key, schema or body that is not valid";
    Unauthorized = 401, "No token where one is needed, or a token that is not valid";
    Forbidden = 403, "The caller may read but not write, or a signature that does not verify";
    NotFound = 404, "No such store, record, user or page, or one the caller may not read";
    MethodNotAllowed = 405, "A method the path does not serve (any method not listed for a path)";
    RequestTimeout = 408, "The client stopped sending the body for longer than the idle timeout";
    Conflict = 409, "The caller already has a store with that name (or, creating a user, the username is taken)";
    PayloadTooLarge = 413, "The body is over the limit (measured after decompression)";
    UnsupportedMediaType = 415, "A `Content-Encoding` other than gzip, br, deflate or identity";
    RangeNotSatisfiable = 416, "The `Range` starts past the record's end";
    HeadersTooLarge = 431, "Request headers over 64 KiB in total (larger ones get the HTTP layer's 431 without this body)";
    TooManyRequests = 429, "Over the server's `--rate-limit` for this token (or address); retry later";
    InsufficientStorage = 507, "The disk is (nearly) full: writes that add data are refused, reads and deletes go on";
    InternalServerError = 500, "An unexpected failure (details are logged, never sent)";
    ServiceUnavailable = 503, "The storage backend does not answer; retry later";
}

// ---- other schemas ----------------------------------------------------------------------------

/// `GET /healthz` and `GET /readyz`.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the JSON that `ops.rs` writes
pub struct Health {
    #[schema(schema_with = health_status)]
    status: String,
}

fn health_status() -> ObjectBuilder {
    string_enum(vec!["ok", "unavailable"])
}

/// `generalAccess` of a store object.
pub fn general_access_schema() -> ObjectBuilder {
    string_enum(GeneralAccess::ALL.iter().map(|a| a.as_str()).collect())
        .description(Some("Who may read the store besides its owner"))
}

/// The characters of a record key.
const KEY_CHARS: &str = "a-zA-Z0-9!_.'()-";
/// The same without `.`.
const KEY_CHARS_NO_DOT: &str = "a-zA-Z0-9!_'()-";

/// `{store}`: a 17-character id, `~name` (the caller's store) or `username~name`.
pub struct StoreRef;

impl PartialSchema for StoreRef {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!(
                "^(?:[a-zA-Z0-9]{{17}}|[a-zA-Z0-9._-]{{0,64}}~{})$",
                store_name_pattern()
            )))
            .description(Some(
                "A store id (17 characters), `~name` (the caller's store) or `username~name`",
            ))
            .into()
    }
}

impl ToSchema for StoreRef {}

/// A store name, without anchors.
fn store_name_pattern() -> String {
    format!(
        "[a-zA-Z0-9](?:[a-zA-Z0-9-]{{0,{}}}[a-zA-Z0-9])?",
        STORE_NAME_MAX_LEN - 2
    )
}

/// A store name: letters, digits and `-` (not at the ends), at most 63 characters.
pub struct StoreName;

impl PartialSchema for StoreName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^{}$", store_name_pattern())))
            .max_length(Some(STORE_NAME_MAX_LEN))
            .into()
    }
}

impl ToSchema for StoreName {}

/// `?name=` of get-or-create: a store name; empty (or absent) makes an unnamed store.
pub struct StoreNameParam;

impl PartialSchema for StoreNameParam {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^(?:{})?$", store_name_pattern())))
            .max_length(Some(STORE_NAME_MAX_LEN))
            .into()
    }
}

impl ToSchema for StoreNameParam {}

/// `{key}`: `^[a-zA-Z0-9!\-_.'()]{1,256}$`, but not `.` or `..`.
pub struct RecordKey;

impl PartialSchema for RecordKey {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!(
                "^(?:[{KEY_CHARS}]*[{KEY_CHARS_NO_DOT}][{KEY_CHARS}]*|\\.{{3,}})$"
            )))
            .min_length(Some(1))
            .max_length(Some(RECORD_KEY_MAX_LEN))
            .description(Some("1 to 256 of `a-zA-Z0-9!-_.'()`; not `.` or `..`"))
            .into()
    }
}

impl ToSchema for RecordKey {}

/// A boolean query parameter as both clients send them.
pub struct QueryBool;

impl PartialSchema for QueryBool {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^(?:1|0|[tT][rR][uU][eE]|[fF][aA][lL][sS][eE])?$"))
            .description(Some(
                "A boolean: `1`, `0`, `true` or `false` (any case); empty or absent is false",
            ))
            .into()
    }
}

impl ToSchema for QueryBool {}

/// A record body: any bytes, of any content type.
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(
                openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl ToSchema for Binary {}

/// `limit` and `offset`: Apify types them `double`. A fraction is truncated; values above
/// 2^53 − 1 count as 2^53 − 1; an empty value counts as absent (the one string allowed).
pub struct NonNegativeNumber;

impl PartialSchema for NonNegativeNumber {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Number, Type::String]))
            .format(Some(SchemaFormat::KnownFormat(
                openapi::KnownFormat::Double,
            )))
            .minimum(Some(0))
            .max_length(Some(0))
            .description(Some(
                "A finite non-negative number, in decimal or exponent notation (`10`, `10.0`, \
                 `1e2`); a fraction is truncated, and values above 2^53 − 1 count as 2^53 − 1. \
                 An empty value counts as absent",
            ))
            .into()
    }
}

impl ToSchema for NonNegativeNumber {}

/// The JSON body of `POST /v2/key-value-stores` (optional; `null` or empty is no schema).
#[derive(ToSchema)]
#[allow(dead_code)] // documents what `stores_create` reads
pub struct CreateStoreBody {
    /// A store schema; `null` or absent for none.
    #[schema(schema_with = nullable_store_schema)]
    schema: Option<serde_json::Value>,
}

/// The JSON body of `PUT /v2/key-value-stores/{store}`; absent fields are left unchanged.
#[derive(ToSchema)]
#[allow(dead_code)] // documents what `store_update` reads
#[serde(rename_all = "camelCase")]
pub struct UpdateStoreBody {
    /// The new name, or `null` to make the store unnamed.
    #[schema(schema_with = nullable_store_name)]
    name: Option<String>,
    /// `null` leaves it unchanged.
    #[schema(schema_with = nullable_general_access)]
    general_access: Option<String>,
    /// A human-readable title, or `null` to remove it.
    #[schema(schema_with = nullable_title)]
    title: Option<String>,
}

fn nullable_title() -> OneOfBuilder {
    nullable(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(crate::model::MAX_TITLE_CHARS)),
    )
}

fn nullable(schema: impl Into<RefOr<Schema>>) -> OneOfBuilder {
    OneOfBuilder::new()
        .item(schema)
        .item(ObjectBuilder::new().schema_type(Type::Null))
}

fn nullable_store_name() -> OneOfBuilder {
    nullable(StoreName::schema())
}

fn nullable_general_access() -> OneOfBuilder {
    nullable(general_access_schema())
}

fn nullable_store_schema() -> OneOfBuilder {
    nullable(store_schema())
}

/// A key-value store schema, as far as kvstore checks it: `collections` maps names to objects
/// with exactly one of `key` or `keyPrefix` (a string) and optional `contentTypes` (strings).
fn store_schema() -> ObjectBuilder {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let has = |field: &str| {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .required(field)
    };
    let collection = AllOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("key", string())
                .property("keyPrefix", string())
                .property("contentTypes", ArrayBuilder::new().items(string())),
        )
        .item(OneOfBuilder::new().item(has("key")).item(has("keyPrefix")));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "A key-value store schema (`actorKeyValueStoreSchemaVersion` format)",
        ))
        .property(
            "collections",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(collection)),
        )
}
