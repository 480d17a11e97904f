//! The HTTP layer's error enum and its single mapping to Apify's envelope
//! `{"error":{"type","message"}}`. Statuses and types come from exhaustive matches: adding a
//! variant forces a decision about both.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Authentication token was not provided.")]
    TokenNotProvided,
    #[error("Authentication token is not valid.")]
    InvalidToken,
    #[error("You do not have permission to perform this action.")]
    InsufficientPermissions,
    #[error("{0}")]
    InvalidSignature(String),
    #[error("Store was not found or you do not have access to it.")]
    RecordOrTokenNotFound,
    #[error("Store was not found.")]
    StoreNotFound,
    #[error("Record was not found.")]
    RecordNotFound,
    #[error("User was not found.")]
    UserNotFound,
    #[error("The requested page was not found.")]
    PageNotFound,
    #[error("This API endpoint can only be accessed using the following HTTP methods: {0}")]
    MethodNotAllowed(&'static str),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    InvalidRecordKey(String),
    #[error("{0}")]
    InvalidCollection(String),
    #[error("{0}")]
    StoreSchemaInvalid(String),
    #[error("You already have a store named \"{0}\".")]
    StoreNameNotUnique(String),
    #[error("A user named \"{0}\" already exists.")]
    UsernameNotUnique(String),
    #[error("The request body is too large (limit: {limit} bytes).")]
    RequestTooLarge { limit: u64 },
    #[error("The request headers are too large (limit: {limit} bytes).")]
    RequestHeadersTooLarge { limit: usize },
    #[error("Content-Encoding \"{0}\" is not supported.")]
    UnsupportedContentEncoding(String),
    #[error("{0}")]
    InvalidRequestBody(String),
    #[error("The requested range is not satisfiable (the record has {size} bytes).")]
    RangeNotSatisfiable { size: u64 },
    #[error("The client sent no data for too long; the request was abandoned.")]
    RequestTimeout,
    #[error(
        "The server has no room left to store this; reads still work. Free disk space and retry."
    )]
    InsufficientStorage,
    #[error("You have exceeded the rate limit of {limit} requests per second.")]
    RateLimitExceeded { limit: u32 },
    #[error("The service is temporarily unavailable, try again later.")]
    Unavailable,
    /// Details are logged, never sent.
    #[error("Internal server error.")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::TokenNotProvided | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientPermissions | ApiError::InvalidSignature(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::RecordOrTokenNotFound
            | ApiError::StoreNotFound
            | ApiError::RecordNotFound
            | ApiError::UserNotFound
            | ApiError::PageNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InvalidParameter(_)
            | ApiError::InvalidInput(_)
            | ApiError::InvalidRecordKey(_)
            | ApiError::InvalidCollection(_)
            | ApiError::StoreSchemaInvalid(_)
            | ApiError::InvalidRequestBody(_) => StatusCode::BAD_REQUEST,
            ApiError::StoreNameNotUnique(_) | ApiError::UsernameNotUnique(_) => {
                StatusCode::CONFLICT
            }
            ApiError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestHeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::UnsupportedContentEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Apify's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::TokenNotProvided => "token-not-provided",
            ApiError::InvalidToken => "invalid-token",
            ApiError::InsufficientPermissions => "insufficient-permissions",
            ApiError::InvalidSignature(_) => "invalid-signature",
            ApiError::RecordOrTokenNotFound => "record-or-token-not-found",
            // Clients turn a 404 into "absent" only for these two types.
            ApiError::StoreNotFound | ApiError::RecordNotFound | ApiError::UserNotFound => {
                "record-not-found"
            }
            ApiError::PageNotFound => "page-not-found",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::InvalidParameter(_) => "invalid-parameter",
            ApiError::InvalidInput(_) => "invalid-input",
            ApiError::InvalidRecordKey(_) => "invalid-record-key",
            ApiError::InvalidCollection(_) => "invalid-collection",
            ApiError::StoreSchemaInvalid(_) => "store-schema-invalid",
            ApiError::StoreNameNotUnique(_) => "store-name-not-unique",
            ApiError::UsernameNotUnique(_) => "username-not-unique",
            ApiError::RequestTooLarge { .. } => "request-too-large",
            ApiError::RequestHeadersTooLarge { .. } => "request-header-fields-too-large",
            ApiError::UnsupportedContentEncoding(_) => "unsupported-content-encoding",
            ApiError::RangeNotSatisfiable { .. } => "range-not-satisfiable",
            ApiError::RequestTimeout => "request-timeout",
            ApiError::InvalidRequestBody(_) => "invalid-request",
            ApiError::RateLimitExceeded { .. } => "rate-limit-exceeded",
            ApiError::InsufficientStorage => "insufficient-storage",
            ApiError::Unavailable => "service-unavailable",
            ApiError::Internal(_) => "internal-server-error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let body = serde_json::json!({
            "error": { "type": self.error_type(), "message": self.to_string() }
        });
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let ApiError::RangeNotSatisfiable { size } = self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        if let ApiError::RateLimitExceeded { limit } = self {
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(
            self,
            ApiError::RequestTooLarge { .. }
                | ApiError::RequestTimeout
                | ApiError::RequestHeadersTooLarge { .. }
        ) {
            // The rest of the body is not read; the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NameTaken => ApiError::StoreNameNotUnique("that name".into()),
            StorageError::UserExists => ApiError::InvalidInput("The user already exists.".into()),
            StorageError::Closed => ApiError::Unavailable,
            StorageError::Full => {
                tracing::warn!("a write failed: the disk is full");
                ApiError::InsufficientStorage
            }
            StorageError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                tracing::warn!("a write failed: the disk is full");
                ApiError::InsufficientStorage
            }
            StorageError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "storage unavailable");
                ApiError::Unavailable
            }
            // A disk that fails a read, write or fsync (EIO) is the server's trouble, not a bug:
            // the request may succeed when retried (or on another node), as after an engine
            // I/O error (tests/io_faults.rs).
            StorageError::Io(io) => {
                tracing::warn!(error = %io, "an i/o error on the data directory");
                ApiError::Unavailable
            }
            StorageError::Locked
            | StorageError::UnsupportedFormat { .. }
            | StorageError::Engine(_)
            | StorageError::Corrupt(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<crate::ops::admin::AdminError> for ApiError {
    fn from(e: crate::ops::admin::AdminError) -> Self {
        use crate::ops::admin::AdminError;
        match e {
            AdminError::NoSuchUser(_) => ApiError::UserNotFound,
            AdminError::NoSuchStore(_) => ApiError::StoreNotFound,
            AdminError::UserExists(name) => ApiError::UsernameNotUnique(name),
            AdminError::Invalid(_) => {
                ApiError::InvalidInput(format!("{}.", capitalized(&e.to_string())))
            }
            AdminError::Storage(e) => e.into(),
            AdminError::Remote { .. } | AdminError::Connection(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
