//! Records: `GET`/`HEAD`/`PUT`/`POST`/`DELETE /v2/key-value-stores/{storeId}/records/{key}` and the
//! ZIP download of `GET /v2/key-value-stores/{storeId}/records`.

use std::io::{Read, Seek, Write};

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio_util::io::ReaderStream;

use super::body::{read_body, BodyLimits};
use super::keys::{key_filter, list_page, readable_keys};
use super::openapi::responses::{
    BadRequest, Forbidden, InternalServerError, NotFound, PayloadTooLarge, RangeNotSatisfiable,
    RequestTimeout, ServiceUnavailable, Unauthorized, UnsupportedMediaType,
};
use super::openapi::schemas::{Binary, QueryBool, RecordKey as RecordKeyParam, StoreRef};
use super::params::{KeyFilterParams, Params, RecordGetParams};
use super::paths::{RecordPath, StorePath};
use super::resolve::{bad_key, resolve, resolve_cached, Ask, Need, Resolved};
use super::{AppState, BearerToken};
use crate::error::{ApiError, ApiResult};
use crate::model::{now_millis, Invalid, RecordKey, RecordMeta, StoreId, TokenHash};
use crate::storage::{AccessKind, BodyOutput, IfCurrent, LocalBody, WriteOutcome};

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// Stored HTML or SVG must not run script with this server's origin.
const RECORD_CSP: &str = "sandbox";

/// The request headers a read answers to: its conditions and range. axum's `HeaderMap` extractor
/// would clone every header of every GET; this copies only these, usually none.
pub struct ReadHeaders(HeaderMap);

impl<S: Send + Sync> FromRequestParts<S> for ReadHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut picked = HeaderMap::new();
        for name in [header::IF_NONE_MATCH, header::RANGE, header::IF_RANGE] {
            if let Some(value) = parts.headers.get(&name) {
                picked.insert(name, value.clone());
            }
        }
        Ok(Self(picked))
    }
}

/// The record key of the path. It arrives percent-decoded, so keys the Python client encodes
/// (`%21%27%28%29`) and keys the JS client sends raw are the same.
fn record_key(path: &RecordPath) -> Result<RecordKey, Invalid> {
    let key = path.key.as_deref().ok_or_else(|| {
        Invalid("Record key is not valid UTF-8 after percent-decoding.".to_owned())
    })?;
    RecordKey::parse(key)
}

/// A record request through [`resolve`], which also answers a bad key; with the key once valid.
async fn resolve_record(
    state: &AppState,
    token: &BearerToken,
    path: &RecordPath,
    need: Need,
    signature: ApiResult<Option<&str>>,
    read_record: bool,
) -> ApiResult<(Resolved, RecordKey)> {
    let key = record_key(path);
    let ask = Ask::record(&path.store, &key, need).signed(signature);
    let ask = if read_record {
        ask.reading_record()
    } else {
        ask
    };
    let resolved = resolve(state, token, ask).await?;
    Ok((resolved, key.map_err(|e| bad_key(&e))?))
}

/// The access check of a PUT or DELETE of a record: from the backend's caches, for the write to
/// confirm ([`Resolved::unconfirmed`]), or, `confirmed`, from the database (after a write found
/// the caches stale).
async fn resolve_write(
    state: &AppState,
    token: &BearerToken,
    path: &RecordPath,
    confirmed: bool,
) -> ApiResult<(Resolved, RecordKey)> {
    let key = record_key(path);
    let ask = Ask::record(&path.store, &key, Need::Write);
    let ask = if confirmed { ask } else { ask.writing_record() };
    let resolved = resolve(state, token, ask).await?;
    Ok((resolved, key.map_err(|e| bad_key(&e))?))
}

/// Which method reads a record.
#[derive(Clone, Copy)]
enum ReadMethod {
    /// `GET`; `attachment` asks for `Content-Disposition: attachment`.
    Get {
        attachment: bool,
    },
    Head,
}

/// The status and headers GET and HEAD of a record share: 304 when the client's copy is fresh
/// (without `Content-Length`, as there is no body to measure), else 200 with the whole record's
/// headers, which a range answer of GET then narrows.
fn record_answer(
    request: &HeaderMap,
    meta: &RecordMeta,
    read: ReadMethod,
) -> (StatusCode, HeaderMap) {
    // Room for every header below and the CORS, request-id and Vary headers added on the way
    // out, so the map never grows.
    let mut headers = HeaderMap::with_capacity(12);
    match read {
        ReadMethod::Get { .. } => {
            let content_type = HeaderValue::from_str(&meta.content_type)
                .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
            headers.insert(header::CONTENT_TYPE, content_type);
        }
        // apify-client 1.12.x (Python) parses a response's body by its Content-Type, a HEAD's
        // empty body included: with `application/json` its `record_exists` fails and retries
        // for minutes. Apify's own API documents HEAD 200 without headers; the size and ETag
        // stay.
        ReadMethod::Head => {}
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(etag) = HeaderValue::try_from(meta.etag()) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(RECORD_CSP),
    );
    if let ReadMethod::Get { attachment: true } = read {
        // Keys contain only [a-zA-Z0-9!-_.'()], all safe inside a quoted filename.
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", meta.key)) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    if not_modified(request, meta) {
        headers.remove(header::CONTENT_LENGTH);
        return (StatusCode::NOT_MODIFIED, headers);
    }
    (StatusCode::OK, headers)
}

/// `If-None-Match` names the current version (or `*`): the client's copy is fresh.
fn not_modified(request: &HeaderMap, meta: &RecordMeta) -> bool {
    let Some(value) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let etag = meta.etag();
    value
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// Which part of the body a `Range` header asks for.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range; anything else (other units, several ranges, garbage, an `If-Range` for an
/// older version) gets the whole body, as RFC 9110 allows.
fn wanted_range(request: &HeaderMap, meta: &RecordMeta) -> Wanted {
    let Some(range) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Wanted::Whole;
    };
    if let Some(if_range) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        if if_range.trim() != meta.etag() {
            return Wanted::Whole;
        }
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let size = meta.size;
    let (first, last) = match (first.trim(), last.trim()) {
        ("", "") => return Wanted::Whole,
        ("", suffix) => match suffix.parse::<u64>() {
            Ok(0) => return Wanted::Unsatisfiable,
            Ok(n) => (size.saturating_sub(n), size.saturating_sub(1)),
            Err(_) => return Wanted::Whole,
        },
        (first, last) => {
            let Ok(first) = first.parse::<u64>() else {
                return Wanted::Whole;
            };
            let last = match last {
                "" => size.saturating_sub(1),
                l => match l.parse::<u64>() {
                    Ok(l) if l >= first => l.min(size.saturating_sub(1)),
                    _ => return Wanted::Whole,
                },
            };
            (first, last)
        }
    };
    if size == 0 || first >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part(first, last)
}

/// A response with these headers as they are: `(status, headers, body).into_response()` would copy
/// them one by one into the response's own map.
fn answer(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The whole body as a response body. A body in the object store is requested now: a failure
/// before its first byte is an error answer (503), a later one cuts the response.
async fn body_of(body: BodyOutput) -> ApiResult<Body> {
    match body {
        BodyOutput::Bytes(bytes) => Ok(Body::from(bytes)),
        BodyOutput::File(file) => Ok(Body::from_stream(ReaderStream::with_capacity(
            tokio::fs::File::from_std(file),
            64 * 1024,
        ))),
        BodyOutput::Stream(object) => Ok(Body::from_stream(object.open(0, object.len()).await?)),
    }
}

/// Get a record
///
/// The raw record with the `Content-Type` it was stored with (`application/octet-stream` when
/// it had none), a strong `ETag`, and `Range`/`If-None-Match` support.
#[utoipa::path(
    get,
    path = "/v2/key-value-stores/{store}/records/{key}",
    tag = "key-value-stores",
    operation_id = "keyValueStore_record_get",
    params(
        ("store" = StoreRef, Path),
        ("key" = RecordKeyParam, Path),
        ("attachment" = Option<QueryBool>, Query, description = "Serve with `Content-Disposition: attachment`"),
        ("signature" = Option<String>, Query,
            description = "The record's signature (from `recordPublicUrl`): opens it without a token"),
        ("Range" = Option<String>, Header, description = "One `bytes=` range; anything else gets the whole record"),
        ("If-None-Match" = Option<String>, Header, description = "304 when it names the record's `ETag` (or `*`)"),
        ("If-Range" = Option<String>, Header, description = "The `Range` applies only while the `ETag` is this one"),
    ),
    responses(
        (status = 200, description = "The record", content(("*/*")),
            headers(("ETag" = String), ("Content-Length" = u64))),
        (status = 206, description = "One range of the record", content(("*/*")),
            headers(("Content-Range" = String, description = "`bytes first-last/size`"), ("ETag" = String))),
        (status = 304, description = "Not modified: the `If-None-Match` names the current version",
            headers(("ETag" = String))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 416, response = RangeNotSatisfiable),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = []), ()),
)]
pub async fn record_get(
    State(state): State<AppState>,
    token: BearerToken,
    path: RecordPath,
    params: Params,
    ReadHeaders(request_headers): ReadHeaders,
) -> ApiResult<Response> {
    let signature = params.get("signature");
    let (resolved, _) = resolve_record(&state, &token, &path, Need::Read, signature, true).await?;
    let RecordGetParams { attachment } = params.parse()?;
    let record = resolved.record.ok_or(ApiError::RecordNotFound)?;
    let (status, mut headers) = get_answer(
        &state,
        &resolved.store.id,
        &request_headers,
        &record.meta,
        attachment,
    );
    if status == StatusCode::NOT_MODIFIED {
        return Ok(answer(status, headers, Body::empty()));
    }
    match wanted_range(&request_headers, &record.meta) {
        Wanted::Whole => Ok(answer(StatusCode::OK, headers, body_of(record.body).await?)),
        Wanted::Unsatisfiable => Err(ApiError::RangeNotSatisfiable {
            size: record.meta.size,
        }),
        Wanted::Part(first, last) => {
            let len = last - first + 1;
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            let range = format!("bytes {first}-{last}/{}", record.meta.size);
            if let Ok(v) = HeaderValue::from_str(&range) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            let body = part_of(record.body, first, len).await?;
            Ok(answer(StatusCode::PARTIAL_CONTENT, headers, body))
        }
    }
}

/// A GET of a record found and readable, up to its body: counts the read, and answers with the
/// status and headers of [`record_answer`] (the whole record's; a range narrows them).
fn get_answer(
    state: &AppState,
    store: &StoreId,
    request: &HeaderMap,
    meta: &RecordMeta,
    attachment: bool,
) -> (StatusCode, HeaderMap) {
    state.access.record(store, AccessKind::Read, now_millis());
    record_answer(request, meta, ReadMethod::Get { attachment })
}

/// [`record_get`] of the whole record (no `Range`, `If-Range`, `signature` or `attachment`) by a
/// token's holder, answered from the backend's memory without waiting ([`resolve_cached`]) as
/// `record_get` would answer it: status, headers and body. `None` where the backend does not hold
/// it all or `record_get` would refuse, and the request takes the normal path.
pub(super) fn record_get_cached(
    state: &AppState,
    token: &TokenHash,
    store: &StoreId,
    key: &RecordKey,
    request: &HeaderMap,
) -> Option<(StatusCode, HeaderMap, Bytes)> {
    let resolved = resolve_cached(state, token, store, key)?;
    let record = resolved.record?;
    let BodyOutput::Bytes(body) = record.body else {
        return None;
    };
    let (status, headers) = get_answer(state, &resolved.store.id, request, &record.meta, false);
    if status == StatusCode::NOT_MODIFIED {
        return Some((status, headers, Bytes::new()));
    }
    Some((status, headers, body))
}

/// `len` bytes of a body from `first` on; of a body in the object store, a ranged request.
async fn part_of(body: BodyOutput, first: u64, len: u64) -> ApiResult<Body> {
    match body {
        BodyOutput::Bytes(bytes) => {
            let start = usize::try_from(first)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start
                .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
                .min(bytes.len());
            Ok(Body::from(bytes.slice(start..end)))
        }
        BodyOutput::File(file) => {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let mut file = tokio::fs::File::from_std(file);
            file.seek(std::io::SeekFrom::Start(first))
                .await
                .map_err(|e| ApiError::Internal(format!("reading a record range: {e}")))?;
            Ok(Body::from_stream(ReaderStream::with_capacity(
                file.take(len),
                64 * 1024,
            )))
        }
        BodyOutput::Stream(object) => Ok(Body::from_stream(object.open(first, len).await?)),
    }
}

/// Check a record
///
/// The headers a `GET` would send, without the body.
#[utoipa::path(
    head,
    path = "/v2/key-value-stores/{store}/records/{key}",
    tag = "key-value-stores",
    operation_id = "keyValueStore_record_head",
    params(
        ("store" = StoreRef, Path),
        ("key" = RecordKeyParam, Path),
        ("signature" = Option<String>, Query, description = "The record's signature"),
        ("If-None-Match" = Option<String>, Header, description = "304 when it names the record's `ETag` (or `*`)"),
    ),
    responses(
        (status = 200, description = "The record exists", headers(("ETag" = String), ("Content-Length" = u64))),
        (status = 304, description = "Not modified", headers(("ETag" = String))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = []), ()),
)]
pub async fn record_head(
    State(state): State<AppState>,
    token: BearerToken,
    path: RecordPath,
    params: Params,
    ReadHeaders(request_headers): ReadHeaders,
) -> ApiResult<Response> {
    let signature = params.get("signature");
    let (resolved, key) =
        resolve_record(&state, &token, &path, Need::Read, signature, false).await?;
    let meta = state
        .store
        .record_meta(&resolved.store.id, &key)
        .await?
        .ok_or(ApiError::RecordNotFound)?;
    state
        .access
        .record(&resolved.store.id, AccessKind::Touch, now_millis());
    let (status, headers) = record_answer(&request_headers, &meta, ReadMethod::Head);
    Ok(answer(status, headers, Body::empty()))
}

/// Store a record
///
/// Stores the body as the record, with the request's `Content-Type` (none:
/// `application/octet-stream`). `POST` does the same as `PUT`.
#[utoipa::path(
    method(put, post),
    path = "/v2/key-value-stores/{store}/records/{key}",
    tag = "key-value-stores",
    operation_id = "keyValueStore_record_put",
    params(
        ("store" = StoreRef, Path),
        ("key" = RecordKeyParam, Path),
    ),
    request_body(content = inline(Binary), content_type = "*/*",
        description = "Any bytes of any content type, up to `--max-record-bytes` after decompression"),
    responses(
        (status = 201, description = "Stored", body = inline(Object), content_type = "application/json",
            headers(("Location" = String, description = "The record's URL"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn record_put(
    State(state): State<AppState>,
    token: BearerToken,
    path: RecordPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let (resolved, key) = resolve_write(&state, &token, &path, false).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_CONTENT_TYPE)
        .to_owned();
    let spool_dir = state.store.spool_dir();
    let limits = BodyLimits {
        max_bytes: state.config.max_record_bytes,
        spool_dir: &spool_dir,
        idle_timeout: state.config.idle_timeout,
    };
    let body = read_body(body, &headers, &limits).await?;
    let (stamp, mut store) = (resolved.unconfirmed, resolved.store);
    let written = match state
        .store
        .record_put_if_current(stamp, &store.id, &key, &content_type, body)
        .await?
    {
        IfCurrent::Done(written) => written,
        IfCurrent::Stale(body) => {
            // Access changed since the caches were filled: decide again, from the database.
            store = resolve_write(&state, &token, &path, true).await?.0.store;
            state
                .store
                .record_put(&store.id, &key, &content_type, body)
                .await?
        }
    };
    if written == WriteOutcome::StoreMissing {
        return Err(ApiError::StoreNotFound);
    }
    let location = format!(
        "{}/v2/key-value-stores/{}/records/{}",
        state.config.public_url, store.id, key
    );
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(serde_json::json!({})),
    )
        .into_response())
}

/// Delete a record
///
/// 204 also when the record does not exist.
#[utoipa::path(
    delete,
    path = "/v2/key-value-stores/{store}/records/{key}",
    tag = "key-value-stores",
    operation_id = "keyValueStore_record_delete",
    params(
        ("store" = StoreRef, Path),
        ("key" = RecordKeyParam, Path),
    ),
    responses(
        (status = 204, description = "Deleted (or there was no such record)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub async fn record_delete(
    State(state): State<AppState>,
    token: BearerToken,
    path: RecordPath,
) -> ApiResult<StatusCode> {
    let (resolved, key) = resolve_write(&state, &token, &path, false).await?;
    let written = match state
        .store
        .record_delete_if_current(resolved.unconfirmed, &resolved.store.id, &key)
        .await?
    {
        IfCurrent::Done(written) => written,
        IfCurrent::Stale(()) => {
            // As for a PUT.
            let store = resolve_write(&state, &token, &path, true).await?.0.store;
            state.store.record_delete(&store.id, &key).await?
        }
    };
    match written {
        WriteOutcome::Written => Ok(StatusCode::NO_CONTENT),
        WriteOutcome::StoreMissing => Err(ApiError::StoreNotFound),
    }
}

/// All records (or those of a `prefix`/`collection`) as one ZIP, one file per key. The archive is
/// built in an anonymous temporary file, so memory stays bounded whatever the store's size.
/// Download records as a ZIP
///
/// Every record (or those of `prefix`/`collection`) as one ZIP, one file per key.
#[utoipa::path(
    get,
    path = "/v2/key-value-stores/{store}/records",
    tag = "key-value-stores",
    operation_id = "keyValueStore_records_get",
    params(
        ("store" = StoreRef, Path),
        ("prefix" = Option<String>, Query, description = "Only keys starting with this"),
        ("collection" = Option<String>, Query, description = "Only keys of this collection of the store's schema"),
        ("signature" = Option<String>, Query,
            description = "A storage signature (from `recordsPublicUrl`): opens the ZIP without a token"),
    ),
    responses(
        (status = 200, description = "The ZIP", content(("application/zip"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalServerError),
        (status = 503, response = ServiceUnavailable),
    ),
    security(("bearer" = []), ("token" = []), ()),
)]
pub async fn records_zip(
    State(state): State<AppState>,
    token: BearerToken,
    StorePath(store_ref): StorePath,
    params: Params,
) -> ApiResult<Response> {
    let (resolved, wanted): (_, KeyFilterParams) =
        readable_keys(&state, &token, &store_ref, &params).await?;
    let filter = key_filter(&resolved.store, &wanted)?;
    let internal = |e: std::io::Error| ApiError::Internal(format!("building a ZIP failed: {e}"));
    let file = tempfile::tempfile_in(state.store.spool_dir()).map_err(internal)?;
    let mut zip = zip::ZipWriter::new(file);
    let mut start: Option<String> = None;
    loop {
        let page = list_page(&state, &resolved.store, &filter, start.as_deref(), 1000).await?;
        for meta in &page.items {
            let Some(record) = state
                .store
                .record_get(&resolved.store.id, &meta.key)
                .await?
            else {
                continue; // deleted meanwhile
            };
            let body = record.body.into_local(&state.store.spool_dir()).await?;
            let meta = record.meta;
            zip = tokio::task::spawn_blocking(move || add_to_zip(zip, &meta, body))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(internal)?;
        }
        match (page.is_truncated, page.items.last()) {
            (true, Some(last)) => start = Some(last.key.to_string()),
            _ => break,
        }
    }
    let mut file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let mut file = zip.finish().map_err(std::io::Error::other)?;
        file.rewind()?;
        Ok(file)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(internal)?;
    let len = file.seek(std::io::SeekFrom::End(0)).map_err(internal)?;
    file.rewind().map_err(internal)?;
    state
        .access
        .record(&resolved.store.id, AccessKind::List, now_millis());
    let disposition = format!("attachment; filename=\"{}.zip\"", resolved.store.id);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body_of(BodyOutput::File(file)).await?,
    )
        .into_response())
}

fn add_to_zip(
    mut zip: zip::ZipWriter<std::fs::File>,
    meta: &RecordMeta,
    body: LocalBody,
) -> std::io::Result<zip::ZipWriter<std::fs::File>> {
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(meta.size > u64::from(u32::MAX));
    zip.start_file(meta.key.as_str(), options)
        .map_err(std::io::Error::other)?;
    match body {
        LocalBody::Bytes(bytes) => zip.write_all(&bytes)?,
        LocalBody::File(mut file) => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                zip.write_all(&buf[..n])?;
            }
        }
    }
    Ok(zip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> RecordMeta {
        RecordMeta {
            key: RecordKey::parse("k").unwrap(),
            size,
            content_type: "x/y".into(),
            version: 0xabc,
        }
    }

    fn range(value: &str, size: u64) -> Wanted {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        wanted_range(&h, &meta(size))
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(range("bytes=0-9", 100), Wanted::Part(0, 9));
        assert_eq!(range("bytes=90-", 100), Wanted::Part(90, 99));
        assert_eq!(range("bytes=90-500", 100), Wanted::Part(90, 99));
        assert_eq!(range("bytes=-10", 100), Wanted::Part(90, 99));
        assert_eq!(range("bytes=-500", 100), Wanted::Part(0, 99));
        assert_eq!(range("bytes=100-", 100), Wanted::Unsatisfiable);
        assert_eq!(range("bytes=0-0", 0), Wanted::Unsatisfiable);
        assert_eq!(range("bytes=-0", 100), Wanted::Unsatisfiable);
        for whole in [
            "bytes=5-1",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=-",
        ] {
            assert_eq!(range(whole, 100), Wanted::Whole, "{whole}");
        }
    }

    #[test]
    fn if_range_with_another_version_gets_the_whole_body() {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        h.insert(
            header::IF_RANGE,
            HeaderValue::from_static("\"0000000000000001\""),
        );
        assert_eq!(wanted_range(&h, &meta(10)), Wanted::Whole);
        h.insert(
            header::IF_RANGE,
            HeaderValue::from_str(&meta(10).etag()).unwrap(),
        );
        assert_eq!(wanted_range(&h, &meta(10)), Wanted::Part(0, 1));
    }
}
