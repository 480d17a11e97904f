//! Request bodies: decompressed while they stream in (`gzip`, `br`, `deflate`, `identity`), counted
//! against the limit on the *decompressed* size so that a compression bomb is refused without being
//! inflated into memory, and spooled to a file beyond a small threshold.

use std::path::Path;
use std::time::Duration;

use async_compression::tokio::bufread::{BrotliDecoder, DeflateDecoder, GzipDecoder, ZlibDecoder};
use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::io::StreamReader;

use crate::error::{ApiError, ApiResult};
use crate::storage::BodyInput;

/// Bodies up to this size stay in memory; larger ones go to a spool file.
pub const SPOOL_THRESHOLD: usize = 1024 * 1024;
/// JSON bodies of the store endpoints.
pub const JSON_BODY_LIMIT: u64 = 1024 * 1024;

enum Encoding {
    Identity,
    Gzip,
    Brotli,
    Deflate,
}

fn encoding(headers: &HeaderMap) -> ApiResult<Encoding> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let value = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match value.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "br" => Ok(Encoding::Brotli),
        "deflate" => Ok(Encoding::Deflate),
        _ => Err(ApiError::UnsupportedContentEncoding(
            value.chars().take(80).collect(),
        )),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads a whole body: bytes when small, a spool file in `spool_dir` when larger.
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: u64,
    spool_dir: &Path,
) -> ApiResult<BodyInput> {
    let encoding = encoding(headers)?;
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(e.to_string()));
    let mut raw = StreamReader::new(stream);
    if matches!(encoding, Encoding::Identity) && content_length(headers).is_some_and(|n| n > limit)
    {
        drain(&mut raw).await;
        return Err(ApiError::RequestTooLarge { limit });
    }
    let reader: Box<dyn AsyncRead + Send + Unpin> = match encoding {
        Encoding::Identity => Box::new(raw),
        Encoding::Gzip => {
            let mut d = GzipDecoder::new(raw);
            d.multiple_members(true);
            Box::new(d)
        }
        Encoding::Brotli => Box::new(BrotliDecoder::new(raw)),
        Encoding::Deflate => {
            // `deflate` should be zlib (RFC 1950); accept raw deflate too, as browsers do.
            let head = raw.fill_buf().await.map_err(read_error)?;
            let zlib = head.len() < 2
                || (head[0] & 0x0f == 8
                    && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0);
            if zlib {
                Box::new(ZlibDecoder::new(raw))
            } else {
                Box::new(DeflateDecoder::new(BufReader::new(raw)))
            }
        }
    };
    collect(reader, limit, spool_dir).await
}

/// How much of a refused body is still read before answering 413. Clients send the whole body
/// before they read the answer; closing on a large unread remainder would reset the connection,
/// which they take for a network error and upload again.
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

async fn drain(reader: &mut (impl AsyncRead + Unpin)) {
    let mut sink = vec![0u8; 64 * 1024];
    let mut drained = 0;
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        while drained < DRAIN_MAX_BYTES {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

fn read_error(e: std::io::Error) -> ApiError {
    ApiError::InvalidRequestBody(format!("The request body could not be read: {e}"))
}

async fn collect(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    limit: u64,
    spool_dir: &Path,
) -> ApiResult<BodyInput> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut total: u64 = 0;
    let mut spool: Option<(tempfile::TempPath, tokio::fs::File)> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).await.map_err(read_error)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            drain(&mut reader).await;
            return Err(ApiError::RequestTooLarge { limit });
        }
        match &mut spool {
            Some((_, file)) => file.write_all(&chunk[..n]).await.map_err(spool_error)?,
            None if buf.len() + n > SPOOL_THRESHOLD => {
                let (file, path) = tempfile::NamedTempFile::new_in(spool_dir)
                    .map_err(spool_error)?
                    .into_parts();
                let mut file = tokio::fs::File::from_std(file);
                file.write_all(&buf).await.map_err(spool_error)?;
                file.write_all(&chunk[..n]).await.map_err(spool_error)?;
                buf = BytesMut::new();
                spool = Some((path, file));
            }
            None => buf.extend_from_slice(&chunk[..n]),
        }
    }
    match spool {
        Some((path, mut file)) => {
            file.flush().await.map_err(spool_error)?;
            Ok(BodyInput::File { path, len: total })
        }
        None => Ok(BodyInput::Bytes(buf.freeze())),
    }
}

fn spool_error(e: std::io::Error) -> ApiError {
    ApiError::Internal(format!("spooling a request body failed: {e}"))
}

/// Reads a small JSON body of the store endpoints. An empty body gives `None`.
pub async fn read_json(
    body: Body,
    headers: &HeaderMap,
    spool_dir: &Path,
) -> ApiResult<Option<serde_json::Map<String, serde_json::Value>>> {
    let bytes: Bytes = match read_body(body, headers, JSON_BODY_LIMIT, spool_dir).await? {
        BodyInput::Bytes(b) => b,
        BodyInput::File { .. } => {
            return Err(ApiError::RequestTooLarge {
                limit: JSON_BODY_LIMIT,
            })
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(_) => Err(ApiError::InvalidInput(
            "POST data must be a JSON object.".to_owned(),
        )),
        Err(e) => Err(ApiError::InvalidInput(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}
