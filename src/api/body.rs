//! Request bodies: decompressed while they stream in (`gzip`, `br`, `deflate`, `identity`), counted
//! against the limit on the *decompressed* size so that a compression bomb is refused without being
//! inflated into memory, and spooled to a file beyond a small threshold; JSON bodies read into a
//! wire type ([`json_body`]) after the handler has checked who may send them.

use std::path::Path;
use std::time::Duration;

use async_compression::tokio::bufread::{BrotliDecoder, DeflateDecoder, GzipDecoder, ZlibDecoder};
use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::io::StreamReader;

use super::AppState;
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
    let Ok(value) = value.to_str() else {
        return Err(ApiError::UnsupportedContentEncoding(
            String::from_utf8_lossy(value.as_bytes())
                .chars()
                .take(80)
                .collect(),
        ));
    };
    let value = value.trim().to_ascii_lowercase();
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

/// Whether an unread body of a refused request is drained before the answer: not when the client
/// waits for `100 Continue` (it has sent nothing), nor when its declared length is past what a
/// drain reads (closing on the remainder resets the connection all the same).
pub(super) fn is_worth_draining(headers: &HeaderMap) -> bool {
    !expects_continue(headers)
        && content_length(headers).is_none_or(|n| n <= DRAIN_MAX_BYTES as u64)
}

/// Drains a body its handler left unread, within the bounds of [`drain`]; true when it was read
/// to its end, so the connection can serve the next request.
pub(super) async fn drain_unread(body: Body) -> bool {
    drain(body.into_data_stream(), DRAIN_MAX_BYTES).await
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

type Raw = StreamReader<
    std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>>,
    Bytes,
>;

/// The body as it arrives (`raw`) and as it is stored (decoded); the raw side is kept reachable so
/// that a refused body can be drained by its size on the wire.
enum Decoder {
    Identity(Raw),
    Gzip(GzipDecoder<Raw>),
    Brotli(BrotliDecoder<Raw>),
    Zlib(ZlibDecoder<Raw>),
    RawDeflate(DeflateDecoder<BufReader<Raw>>),
}

impl Decoder {
    fn into_raw(self) -> Raw {
        match self {
            Decoder::Identity(r) => r,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Brotli(d) => d.into_inner(),
            Decoder::Zlib(d) => d.into_inner(),
            Decoder::RawDeflate(d) => d.into_inner().into_inner(),
        }
    }

    /// Reads into `buf`'s spare capacity (never zeroed first: a fresh zeroed 64 KiB chunk per
    /// request was a quarter of a small PUT's instructions).
    async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Decoder::Identity(r) => r.read_buf(buf).await,
            Decoder::Gzip(d) => d.read_buf(buf).await,
            Decoder::Brotli(d) => d.read_buf(buf).await,
            Decoder::Zlib(d) => d.read_buf(buf).await,
            Decoder::RawDeflate(d) => d.read_buf(buf).await,
        }
    }
}

/// How a body is read: its size limit (decompressed), where large ones are spooled, and how long
/// the client may stay silent in the middle of it.
pub struct BodyLimits<'a> {
    pub max_bytes: u64,
    pub spool_dir: &'a Path,
    pub idle_timeout: Duration,
}

/// Reads a whole body: bytes when small, a spool file in `spool_dir` when larger.
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limits: &BodyLimits<'_>,
) -> ApiResult<BodyInput> {
    let limit = limits.max_bytes;
    let encoding = encoding(headers)?;
    let stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>> =
        Box::pin(
            body.into_data_stream()
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
    let mut raw = StreamReader::new(stream);
    if matches!(encoding, Encoding::Identity) && content_length(headers).is_some_and(|n| n > limit)
    {
        // A client waiting for `100 Continue` has sent nothing yet: answer at once.
        if !expects_continue(headers) {
            drain(raw.into_inner(), DRAIN_MAX_BYTES).await;
        }
        return Err(ApiError::RequestTooLarge { limit });
    }
    let decoder = match encoding {
        Encoding::Identity => Decoder::Identity(raw),
        Encoding::Gzip => {
            let mut d = GzipDecoder::new(raw);
            d.multiple_members(true);
            Decoder::Gzip(d)
        }
        Encoding::Brotli => Decoder::Brotli(BrotliDecoder::new(raw)),
        Encoding::Deflate => {
            // `deflate` should be zlib (RFC 1950); accept raw deflate too, as browsers do.
            let head = within(limits.idle_timeout, raw.fill_buf())
                .await
                .map_err(read_error)?;
            let zlib = head.len() < 2
                || (head[0] & 0x0f == 8
                    && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0);
            if zlib {
                Decoder::Zlib(ZlibDecoder::new(raw))
            } else {
                Decoder::RawDeflate(DeflateDecoder::new(BufReader::new(raw)))
            }
        }
    };
    collect(decoder, content_length(headers), limits).await
}

/// How much of a refused body is still read before answering (413 here, any other refusal in
/// [`super::unread`]). Clients send the whole body before they read the answer; closing on a
/// large unread remainder would reset the connection, which they take for a network error and
/// upload again. A client that pauses is not waited for.
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
/// A compressed body that inflated past the limit is cut shorter: inflating stops at once
/// (DECISIONS.md), and only a little more of the wire is read.
const DRAIN_AFTER_INFLATING: usize = 1024 * 1024;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);
/// Longer than a retransmission after one lost packet (Linux waits at least 200 ms), which
/// should not cost the client its answer.
const DRAIN_MAX_PAUSE: Duration = Duration::from_millis(500);

/// Reads and discards up to `max_bytes` of what the client still sends, chunk by chunk as hyper
/// read them (no buffer of its own: a caller without a token may be drained too); true when
/// that reached the body's end.
async fn drain<E>(
    mut chunks: impl futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    max_bytes: usize,
) -> bool {
    use futures_util::StreamExt;
    let mut drained = 0;
    tokio::time::timeout(DRAIN_MAX_TIME, async {
        while drained <= max_bytes {
            match tokio::time::timeout(DRAIN_MAX_PAUSE, chunks.next()).await {
                Ok(None) => return true,
                Ok(Some(Ok(chunk))) => drained += chunk.len(),
                _ => return false,
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// Runs one read of the body, failing with a timeout error when the client stays silent too long.
async fn within<T>(
    idle: Duration,
    read: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(idle, read).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client sent no data for too long",
        ))
    })
}

fn read_error(e: std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return ApiError::RequestTimeout;
    }
    ApiError::InvalidRequestBody(format!("The request body could not be read: {e}"))
}

async fn collect(
    mut decoder: Decoder,
    declared: Option<u64>,
    limits: &BodyLimits<'_>,
) -> ApiResult<BodyInput> {
    const READ_AT_LEAST: usize = 16 * 1024;
    let limit = limits.max_bytes;
    // Sized for the declared length (plus one byte to see the end without growing), so a
    // small body is read in place with no copy; a spooled body reuses it as its chunk buffer.
    let expected = declared
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n < SPOOL_THRESHOLD)
        .map_or(8 * 1024, |n| n + 1);
    let mut buf = BytesMut::with_capacity(expected);
    let mut total: u64 = 0;
    let mut spool: Option<(tempfile::TempPath, tokio::fs::File)> = None;
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(READ_AT_LEAST.max(buf.len()).min(SPOOL_THRESHOLD));
        }
        let n = within(limits.idle_timeout, decoder.read_buf(&mut buf))
            .await
            .map_err(read_error)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            // What the client still has to send fits the drain: read it all, so that it sees
            // the 413 rather than a reset. Otherwise cut it short.
            let fits = declared.is_some_and(|n| n <= DRAIN_MAX_BYTES as u64);
            let max = match decoder {
                Decoder::Identity(_) => DRAIN_MAX_BYTES,
                _ if fits => DRAIN_MAX_BYTES,
                _ => DRAIN_AFTER_INFLATING,
            };
            drain(decoder.into_raw().into_inner(), max).await;
            return Err(ApiError::RequestTooLarge { limit });
        }
        match &mut spool {
            Some((_, file)) => {
                file.write_all(&buf).await.map_err(spool_error)?;
                buf.clear();
            }
            None if buf.len() > SPOOL_THRESHOLD => {
                let (file, path) = tempfile::NamedTempFile::new_in(limits.spool_dir)
                    .map_err(spool_error)?
                    .into_parts();
                let mut file = tokio::fs::File::from_std(file);
                file.write_all(&buf).await.map_err(spool_error)?;
                buf.clear();
                spool = Some((path, file));
            }
            None => {}
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
    if e.kind() == std::io::ErrorKind::StorageFull {
        return ApiError::InsufficientStorage;
    }
    ApiError::Internal(format!("spooling a request body failed: {e}"))
}

/// Reads a small JSON body of the store endpoints. An empty body gives `None`.
pub async fn read_json(
    body: Body,
    headers: &HeaderMap,
    spool_dir: &Path,
    idle_timeout: Duration,
) -> ApiResult<Option<serde_json::Map<String, serde_json::Value>>> {
    let limits = BodyLimits {
        max_bytes: JSON_BODY_LIMIT,
        spool_dir,
        idle_timeout,
    };
    let bytes: Bytes = match read_body(body, headers, &limits).await? {
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

/// A JSON body into `T`, with Apify's error for anything else.
pub async fn json_body<T: serde::de::DeserializeOwned + Default>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<T> {
    let map = read_json(
        body,
        headers,
        &state.store.spool_dir(),
        state.config.idle_timeout,
    )
    .await?;
    match map {
        None => Ok(T::default()),
        Some(map) => serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| ApiError::InvalidInput(format!("The request body is not valid: {e}."))),
    }
}
