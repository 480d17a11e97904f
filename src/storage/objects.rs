//! Record bodies in S3-compatible object storage (AWS S3, SeaweedFS, Garage, MinIO, Ceph), on the
//! `object_store` crate: a bucket and an optional prefix, streaming multipart uploads from a body's
//! spool file, streamed (and ranged) downloads, deletes and listings.
//!
//! Every call runs under a timeout, and every failure of the store (unreachable, slow, a 5xx, a
//! refusal) is [`StorageError::Unavailable`], a 503: an object-store error never becomes a 500.
//! `/metrics` counts requests, bytes and errors (`kvstore_object_store_*`).
//!
//! Objects are immutable: a name is written once, completely, before any row points at it, and
//! removed only once no row does (see the PostgreSQL backend's garbage collection).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BodyInput, Result, StorageError};

/// Part size of multipart uploads (S3 wants at least 5 MiB per part but the last), and the most
/// memory one upload holds, with [`UPLOAD_CONCURRENCY`] parts in flight.
const PART: usize = 8 * 1024 * 1024;
const UPLOAD_CONCURRENCY: usize = 2;

/// Where bodies go and when: `kvstore serve --object-store …`.
#[derive(Debug, Clone)]
pub struct ObjectStoreOptions {
    /// `s3://BUCKET[/PREFIX]`.
    pub url: String,
    /// The S3 endpoint (`http://127.0.0.1:8333`); `None`: AWS itself.
    pub endpoint: Option<String>,
    /// Bodies of this many bytes or more go to the object store.
    pub min_bytes: u64,
    /// How long an object no row points at any more is kept before it is removed: long enough for
    /// reads in flight and for uploads not yet committed.
    pub gc_grace: Duration,
    /// How long one request to the object store (or one part of a body) may take.
    pub op_timeout: Duration,
}

/// Default of `--object-store-min-bytes`, measured (`bench/s3_min_bytes.sh`, bench/RESULTS.md): below
/// ~512 KiB a round trip to the object store doubles a request's latency (256 KiB: PUT 1.7–2.6×, GET
/// 2.1–2.7× the same body inline); from 1 MiB on a GET is no slower and a PUT within ~1.2–2×.
pub const DEFAULT_MIN_BYTES: u64 = 1024 * 1024;

/// The bucket and prefix of `s3://BUCKET[/PREFIX]`.
pub fn parse_url(url: &str) -> std::result::Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("the object store must be s3://BUCKET[/PREFIX], not {url:?}"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(format!(
            "{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '-' and '.')"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") {
        return Err(format!("the prefix {prefix:?} has a '.' or '..' part"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// A bucket (and prefix) of an S3-compatible object store.
#[derive(Clone)]
pub struct Objects {
    store: Arc<AmazonS3>,
    /// The client of streamed downloads: no limit on a whole request, which lasts as long as the
    /// client of the record reads; each wait for the store is bounded instead ([`ObjectStream`]).
    reader: Arc<AmazonS3>,
    prefix: String,
    op_timeout: Duration,
    description: String,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Objects {
    /// Builds the client (nothing is sent yet). Credentials and region come from the standard
    /// `AWS_*` variables; without `AWS_ACCESS_KEY_ID` requests go unsigned (anonymous).
    pub fn new(options: &ObjectStoreOptions) -> Result<Self> {
        // object_store's HTTP client uses rustls without a bundled provider: ring, like the rest
        // of the server (an already installed provider stays).
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let (bucket, prefix) = parse_url(&options.url).map_err(StorageError::Engine)?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            builder = builder.with_skip_signature(true);
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint.trim_end_matches('/'))
                // Path-style (`ENDPOINT/BUCKET/KEY`): what SeaweedFS, Garage and MinIO serve.
                .with_virtual_hosted_style_request(false);
        }
        let op_timeout = options.op_timeout.max(Duration::from_secs(1));
        // Retries stay within one operation's time: a store that is down answers 503 promptly.
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: op_timeout,
            ..RetryConfig::default()
        };
        // (The client options replace the builder's own: plain HTTP is allowed here or nowhere.)
        let allow_http = options
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let client = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(op_timeout)
            .with_connect_timeout(op_timeout.min(Duration::from_secs(5)));
        let builder = builder.with_retry(retry);
        let built = |client: ClientOptions| {
            builder
                .clone()
                .with_client_options(client)
                .build()
                .map_err(|e| StorageError::Engine(format!("object store {}: {e}", options.url)))
        };
        let reader = built(client.clone().with_timeout_disabled())?;
        let store = built(client)?;
        Ok(Self {
            store: Arc::new(store),
            reader: Arc::new(reader),
            prefix,
            op_timeout,
            description: match &options.endpoint {
                Some(endpoint) => format!("{} at {endpoint}", options.url),
                None => options.url.clone(),
            },
        })
    }

    /// Where the objects live, for messages.
    pub fn describe(&self) -> &str {
        &self.description
    }

    fn path(&self, name: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Runs one request under the timeout, counting it (and its failure) in `/metrics`.
    async fn call<T>(
        &self,
        op: &'static str,
        request: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T> {
        self.call_found(op, request).await?.ok_or_else(|| {
            // Here a missing object is a failure (a GET of a body its row names, say).
            metrics::counter!("kvstore_object_store_errors_total", "op" => op).increment(1);
            StorageError::Unavailable(format!(
                "the object store {} answered a {op} with \"not found\"",
                self.description
            ))
        })
    }

    /// [`Self::call`] for a request whose "not found" answer is `None` rather than an error.
    async fn call_found<T>(
        &self,
        op: &'static str,
        request: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<Option<T>> {
        metrics::counter!("kvstore_object_store_requests_total", "op" => op).increment(1);
        let result = match tokio::time::timeout(self.op_timeout, request).await {
            Ok(Ok(v)) => Ok(Some(v)),
            Ok(Err(object_store::Error::NotFound { .. })) => Ok(None),
            Ok(Err(e)) => Err(self.unavailable(op, &e)),
            Err(_) => Err(StorageError::Unavailable(format!(
                "the object store {} did not answer a {op} within {:?}",
                self.description, self.op_timeout
            ))),
        };
        if result.is_err() {
            metrics::counter!("kvstore_object_store_errors_total", "op" => op).increment(1);
        }
        result
    }

    fn unavailable(&self, op: &str, e: &object_store::Error) -> StorageError {
        StorageError::Unavailable(format!(
            "the object store {} failed a {op}: {e}",
            self.description
        ))
    }

    /// Writes `body` under `name`: one request for a body of up to one part, else a multipart
    /// upload streamed from its file (aborted on failure). Complete when this returns `Ok`.
    pub async fn put(&self, name: &str, body: &BodyInput) -> Result<()> {
        let path = self.path(name);
        let len = body.len();
        if len <= PART as u64 {
            let bytes = body.to_bytes().await?;
            self.call("put", self.store.put(&path, bytes.into()))
                .await?;
            metrics::counter!("kvstore_object_store_sent_bytes_total").increment(len);
            return Ok(());
        }
        let upload = self
            .call("put_multipart", self.store.put_multipart(&path))
            .await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let written = async {
            match body {
                BodyInput::Bytes(b) => {
                    for part in b.chunks(PART) {
                        self.call("put_part", writer.wait_for_capacity(UPLOAD_CONCURRENCY))
                            .await?;
                        writer.put(b.slice_ref(part));
                    }
                }
                BodyInput::File { path, .. } => {
                    let mut file = tokio::fs::File::open(path).await?;
                    let mut buf = vec![0u8; PART];
                    loop {
                        let n = read_full(&mut file, &mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        self.call("put_part", writer.wait_for_capacity(UPLOAD_CONCURRENCY))
                            .await?;
                        writer.write(&buf[..n]);
                        if n < PART {
                            break;
                        }
                    }
                }
            }
            Ok::<_, StorageError>(())
        }
        .await;
        match written {
            Ok(()) => {
                self.call("complete_multipart", writer.finish()).await?;
                metrics::counter!("kvstore_object_store_sent_bytes_total").increment(len);
                Ok(())
            }
            Err(e) => {
                // Best effort: a part upload the store never sees completed is its own to drop.
                let _ = tokio::time::timeout(self.op_timeout, writer.abort()).await;
                Err(e)
            }
        }
    }

    /// Copies the object `name` into `file` (at its current position), a bounded piece at a
    /// time: never the whole body in memory. `expected` is the size its row records.
    pub async fn get_into(
        &self,
        name: &str,
        file: &mut tokio::fs::File,
        expected: u64,
    ) -> Result<()> {
        let mut stream = self.get_stream(name, expected, 0, expected).await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StorageError::Unavailable(e.to_string()))?;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(())
    }

    /// Bytes `first..first + len` of the object `name`, whose row says it has `size` bytes: one
    /// `GET` (ranged unless it is the whole object), answered before this returns; the body
    /// follows as it is read. An error before any byte (the store is down, the object is gone
    /// or has another size) is returned here; after that, the stream ends with an error instead
    /// of yielding other than exactly `len` bytes.
    pub async fn get_stream(
        &self,
        name: &str,
        size: u64,
        first: u64,
        len: u64,
    ) -> Result<ByteStream> {
        let path = self.path(name);
        let wanted = first..first.saturating_add(len);
        let options = GetOptions {
            range: (wanted != (0..size)).then(|| GetRange::Bounded(wanted.clone())),
            ..GetOptions::default()
        };
        let result = self
            .call("get", self.reader.get_opts(&path, options))
            .await?;
        if result.meta.size != size || result.range != wanted {
            metrics::counter!("kvstore_object_store_errors_total", "op" => "get").increment(1);
            // The store answered with another object than the one the row names (lost, mangled,
            // or a replica behind): an object-store failure like any other, 503, never a body.
            return Err(StorageError::Unavailable(format!(
                "the object store sent the object {name} with {} bytes and the range {:?}; its \
                 record says {size} bytes and {wanted:?} was asked for",
                result.meta.size, result.range
            )));
        }
        let stream = ObjectStream {
            inner: result.into_stream(),
            left: len,
            failed: false,
            name: name.to_owned(),
            description: self.description.clone(),
            timeout: self.op_timeout,
        };
        Ok(futures_util::stream::unfold(stream, ObjectStream::next).boxed())
    }

    /// Removes the object `name`; one already gone is no error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        self.call_found("delete", self.store.delete(&path)).await?;
        Ok(())
    }

    /// The names (relative to the prefix) of the objects under `sub` (a name prefix ending at a
    /// `/`, or empty for all), with their sizes.
    pub async fn list(&self, sub: &str) -> Result<Vec<(String, u64)>> {
        let base = self.path(sub.trim_end_matches('/'));
        let base = if sub.is_empty() && self.prefix.is_empty() {
            None
        } else {
            Some(base)
        };
        let mut stream = self.store.list(base.as_ref());
        metrics::counter!("kvstore_object_store_requests_total", "op" => "list").increment(1);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut names = Vec::new();
        loop {
            match tokio::time::timeout(self.op_timeout, stream.next()).await {
                Ok(None) => break,
                Ok(Some(Ok(meta))) => {
                    let full = meta.location.to_string();
                    let name = full.strip_prefix(&strip).unwrap_or(&full).to_owned();
                    names.push((name, meta.size));
                }
                Ok(Some(Err(e))) => {
                    metrics::counter!("kvstore_object_store_errors_total", "op" => "list")
                        .increment(1);
                    return Err(self.unavailable("list", &e));
                }
                Err(_) => {
                    metrics::counter!("kvstore_object_store_errors_total", "op" => "list")
                        .increment(1);
                    return Err(StorageError::Unavailable(format!(
                        "the object store {} did not list within {:?}",
                        self.description, self.op_timeout
                    )));
                }
            }
        }
        Ok(names)
    }

    /// Checks that the bucket answers: a `HEAD` of a name that never exists (404 is an answer).
    pub async fn ping(&self) -> Result<()> {
        let path = self.path(".kvstore-ping");
        self.call_found("head", self.store.head(&path)).await?;
        Ok(())
    }
}

/// A body on its way out of the object store: exactly the bytes asked for, or an error.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// The state of a [`ByteStream`]: the response body and how much of it is still due.
struct ObjectStream {
    inner: BoxStream<'static, object_store::Result<Bytes>>,
    left: u64,
    failed: bool,
    name: String,
    description: String,
    timeout: Duration,
}

impl ObjectStream {
    /// The next piece, or the error that ends the stream: a stall longer than the timeout, a
    /// failure of the store (an object collected under a read ends so), a body that runs short
    /// or long. A long body is cut before the extra bytes go out.
    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Self)> {
        if self.failed {
            return None;
        }
        let problem = match tokio::time::timeout(self.timeout, self.inner.next()).await {
            Ok(Some(Ok(chunk))) if chunk.len() as u64 <= self.left => {
                self.left -= chunk.len() as u64;
                metrics::counter!("kvstore_object_store_received_bytes_total")
                    .increment(chunk.len() as u64);
                return Some((Ok(chunk), self));
            }
            Ok(None) if self.left == 0 => return None,
            Ok(Some(Ok(_))) => "sent more bytes than its record has".to_owned(),
            Ok(None) => format!("ended {} bytes short", self.left),
            Ok(Some(Err(e))) => format!("failed: {e}"),
            Err(_) => format!("stalled for {:?}", self.timeout),
        };
        metrics::counter!("kvstore_object_store_errors_total", "op" => "get").increment(1);
        let message = format!(
            "the object store {} sending {}: {problem}",
            self.description, self.name
        );
        tracing::warn!("{message}");
        self.failed = true;
        Some((Err(std::io::Error::other(message)), self))
    }
}

/// Fills `buf` from `file` as far as it goes; returns the bytes read (less only at the end).
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::{parse_url, ObjectStream};
    use bytes::Bytes;
    use futures_util::StreamExt;
    use std::time::Duration;

    /// What a response of `chunks` owing `len` bytes comes out as: the bytes passed on, and
    /// whether it ended with an error.
    async fn passed(
        inner: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
        len: u64,
    ) -> (Vec<u8>, bool) {
        let state = ObjectStream {
            inner,
            left: len,
            failed: false,
            name: "o".into(),
            description: "test".into(),
            timeout: Duration::from_millis(50),
        };
        let mut stream = futures_util::stream::unfold(state, ObjectStream::next).boxed();
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(_) => {
                    // Nothing follows an error.
                    assert!(stream.next().await.is_none());
                    return (out, true);
                }
            }
        }
        (out, false)
    }

    fn chunks(
        parts: &[&'static [u8]],
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<Bytes>> {
        let parts: Vec<_> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures_util::stream::iter(parts).boxed()
    }

    #[tokio::test]
    async fn a_streamed_body_is_exactly_its_length_or_ends_in_an_error() {
        assert_eq!(
            passed(chunks(&[b"ab", b"cd"]), 4).await,
            (b"abcd".to_vec(), false)
        );
        // Short: the bytes that came, then an error (the response is cut, not complete-looking).
        assert_eq!(
            passed(chunks(&[b"ab", b"c"]), 4).await,
            (b"abc".to_vec(), true)
        );
        // Long: cut before the piece that overflows goes out.
        assert_eq!(
            passed(chunks(&[b"ab", b"cde"]), 4).await,
            (b"ab".to_vec(), true)
        );
        assert_eq!(
            passed(chunks(&[b"abcd", b"e"]), 4).await,
            (b"abcd".to_vec(), true)
        );
        // A failure of the store.
        let failing = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(object_store::Error::Generic {
                store: "S3",
                source: "connection reset".into(),
            }),
        ])
        .boxed();
        assert_eq!(passed(failing, 4).await, (b"ab".to_vec(), true));
        // A store that stalls is given up on after the timeout.
        let stalled = chunks(&[b"ab"])
            .chain(futures_util::stream::pending())
            .boxed();
        assert_eq!(passed(stalled, 4).await, (b"ab".to_vec(), true));
    }

    #[test]
    fn object_store_urls() {
        assert_eq!(
            parse_url("s3://bodies").unwrap(),
            ("bodies".to_owned(), String::new())
        );
        assert_eq!(
            parse_url("s3://my.bucket-1/a/b/").unwrap(),
            ("my.bucket-1".to_owned(), "a/b".to_owned())
        );
        for bad in [
            "bodies",
            "http://x/y",
            "s3://ab",
            "s3://Upper",
            "s3://ok-bucket/../x",
            "s3://",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
