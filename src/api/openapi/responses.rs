//! The error responses of the OpenAPI document: Apify's error envelope as a schema and one
//! response type per status (`BadRequest`, `NotFound`, …) that handlers name in their
//! `#[utoipa::path]`, all built from [`ApiError`]'s own status and type mapping so that they
//! cannot drift from what the server answers. Kept apart from the document (`mod.rs`), which
//! lists the handlers, so that handlers can name these without importing the list of themselves.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{self, Ref, RefOr};
use utoipa::{PartialSchema, ToResponse, ToSchema};

use super::schemas::string_enum;
use crate::error::ApiError;

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
