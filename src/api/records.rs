//! Records: `GET`/`HEAD`/`PUT`/`POST`/`DELETE /v2/key-value-stores/{storeId}/records/{key}` and the
//! ZIP download of `GET /v2/key-value-stores/{storeId}/records`.

use std::io::{Read, Seek, Write};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

use super::body::read_body;
use super::keys::{key_filter, list_page};
use super::params::Params;
use super::resolve::{resolve, Need, Resolved, Signed};
use super::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::{now_millis, RecordKey, RecordMeta};
use crate::storage::{AccessKind, BodyOutput, WriteOutcome};

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// Stored HTML or SVG must not run script with this server's origin.
const RECORD_CSP: &str = "sandbox";

type RecordPath = Result<Path<(String, String)>, PathRejection>;

/// The store reference and the validated key. Axum has already percent-decoded both, so keys the
/// Python client encodes (`%21%27%28%29`) and keys the JS client sends raw arrive the same.
fn record_path(path: RecordPath) -> ApiResult<(String, RecordKey)> {
    let Path((store, key)) = path.map_err(|_| {
        ApiError::InvalidRecordKey("Record key is not valid UTF-8 after percent-decoding.".into())
    })?;
    let key = RecordKey::parse(&key).map_err(|e| ApiError::InvalidRecordKey(e.0))?;
    Ok((store, key))
}

/// The store and key of a GET/HEAD record request that the caller (or its record signature) may
/// read.
async fn resolve_for_reading(
    state: &AppState,
    caller: &Caller,
    path: RecordPath,
    params: &Params,
) -> ApiResult<(Resolved, RecordKey)> {
    let (store_ref, key) = record_path(path)?;
    let signed = match params.get("signature")? {
        Some(signature) => Signed::Record {
            key: key.as_str(),
            signature,
        },
        None => Signed::None,
    };
    let resolved = resolve(state, caller, &store_ref, Need::Read, signed).await?;
    Ok((resolved, key))
}

fn record_headers(meta: &RecordMeta, attachment: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let content_type = HeaderValue::from_str(&meta.content_type)
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(RECORD_CSP),
    );
    if attachment {
        // Keys contain only [a-zA-Z0-9!-_.'()], all safe inside a quoted filename.
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", meta.key)) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    headers
}

fn body_of(body: BodyOutput) -> Body {
    match body {
        BodyOutput::Bytes(bytes) => Body::from(bytes),
        BodyOutput::File(file) => Body::from_stream(ReaderStream::with_capacity(
            tokio::fs::File::from_std(file),
            64 * 1024,
        )),
    }
}

pub async fn record_get(
    State(state): State<AppState>,
    caller: Caller,
    path: RecordPath,
    uri: Uri,
) -> ApiResult<Response> {
    let params = Params::from_query(uri.query());
    let attachment = params.bool("attachment")?;
    let (resolved, key) = resolve_for_reading(&state, &caller, path, &params).await?;
    let record = state
        .store
        .record_get(&resolved.store.id, &key)
        .await?
        .ok_or(ApiError::RecordNotFound)?;
    state
        .access
        .record(&resolved.store.id, AccessKind::Read, now_millis());
    let headers = record_headers(&record.meta, attachment);
    Ok((StatusCode::OK, headers, body_of(record.body)).into_response())
}

pub async fn record_head(
    State(state): State<AppState>,
    caller: Caller,
    path: RecordPath,
    uri: Uri,
) -> ApiResult<Response> {
    let params = Params::from_query(uri.query());
    let (resolved, key) = resolve_for_reading(&state, &caller, path, &params).await?;
    let meta = state
        .store
        .record_meta(&resolved.store.id, &key)
        .await?
        .ok_or(ApiError::RecordNotFound)?;
    state
        .access
        .record(&resolved.store.id, AccessKind::Touch, now_millis());
    Ok((StatusCode::OK, record_headers(&meta, false)).into_response())
}

pub async fn record_put(
    State(state): State<AppState>,
    caller: Caller,
    path: RecordPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let (store_ref, key) = record_path(path)?;
    let Resolved { store, .. } =
        resolve(&state, &caller, &store_ref, Need::Write, Signed::None).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_CONTENT_TYPE)
        .to_owned();
    let body = read_body(
        body,
        &headers,
        state.config.max_record_bytes,
        &state.store.spool_dir(),
    )
    .await?;
    match state
        .store
        .record_put(&store.id, &key, &content_type, body)
        .await?
    {
        WriteOutcome::Written => {}
        WriteOutcome::StoreMissing => return Err(ApiError::StoreNotFound),
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

pub async fn record_delete(
    State(state): State<AppState>,
    caller: Caller,
    path: RecordPath,
) -> ApiResult<StatusCode> {
    let (store_ref, key) = record_path(path)?;
    let Resolved { store, .. } =
        resolve(&state, &caller, &store_ref, Need::Write, Signed::None).await?;
    match state.store.record_delete(&store.id, &key).await? {
        WriteOutcome::Written => Ok(StatusCode::NO_CONTENT),
        WriteOutcome::StoreMissing => Err(ApiError::StoreNotFound),
    }
}

/// All records (or those of a `prefix`/`collection`) as one ZIP, one file per key. The archive is
/// built in an anonymous temporary file, so memory stays bounded whatever the store's size.
pub async fn records_zip(
    State(state): State<AppState>,
    caller: Caller,
    Path(store_ref): Path<String>,
    uri: Uri,
) -> ApiResult<Response> {
    let params = Params::from_query(uri.query());
    let signed = match params.get("signature")? {
        Some(signature) => Signed::Storage { signature },
        None => Signed::None,
    };
    let resolved = resolve(&state, &caller, &store_ref, Need::Read, signed).await?;
    let filter = key_filter(
        &resolved.store,
        params.get("prefix")?.unwrap_or(""),
        params.get("collection")?,
    )?;
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
            zip = tokio::task::spawn_blocking(move || add_to_zip(zip, record))
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
        body_of(BodyOutput::File(file)),
    )
        .into_response())
}

fn add_to_zip(
    mut zip: zip::ZipWriter<std::fs::File>,
    record: crate::storage::Record,
) -> std::io::Result<zip::ZipWriter<std::fs::File>> {
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(record.meta.size > u64::from(u32::MAX));
    zip.start_file(record.meta.key.as_str(), options)
        .map_err(std::io::Error::other)?;
    match record.body {
        BodyOutput::Bytes(bytes) => zip.write_all(&bytes)?,
        BodyOutput::File(mut file) => {
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
