//! The connection layer: accepts TCP connections, serves HTTP/1.1 and HTTP/2 on them with explicit
//! limits (connections, idle keep-alive), shuts down gracefully, and flushes the batched counters.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::Layer as _;
use tower::ServiceExt as _;

use crate::api::{self, AppState};
use crate::model::{now_millis, GeneralAccess};
use crate::storage::{AccessCounters, OrphanCheck, Store};

/// Bodies younger than this are left out of the periodic orphan check: a write may have stored
/// its body and not yet committed its record (a slow upload is spooled before that, so the body's
/// file is at most as old as the end of the upload).
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(3600);
/// How long shutdown waits for requests in flight before it stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// What the transport may buffer beyond the header bound the API enforces with a 431 in Apify's
/// envelope: headers between the two get that answer, larger ones the HTTP layer's bare 431.
const HEADER_BUFFER_SLACK: usize = 16 * 1024;
/// How long a connection told to close (idle, or the server stopping) may take to say goodbye
/// (HTTP/2 GOAWAY and its ping) before it is dropped.
const GOODBYE_GRACE: Duration = Duration::from_secs(5);

/// Settings of a running server: the connection layer's own (limits, timeouts, TLS, the periodic
/// work) and those it hands on to the HTTP layer ([`api::Settings`]). The command line builds them
/// once the listener is bound; tests build them with [`ServerConfig::for_addr`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Without trailing slash, e.g. `http://127.0.0.1:8080`.
    pub public_url: String,
    pub max_record_bytes: u64,
    pub default_general_access: GeneralAccess,
    pub allow_method_override: bool,
    /// Connections with no request in flight (and slow request headers) are closed after this
    /// long, on HTTP/1 and HTTP/2.
    pub idle_timeout: Duration,
    /// A connection whose writes make no progress this long (a client that stopped reading) is
    /// closed.
    pub send_timeout: Duration,
    pub max_connections: usize,
    /// Allowed CORS origins; `*` for any; empty for none.
    pub cors_origins: Vec<String>,
    /// Serve HTTPS instead of HTTP.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Unnamed stores idle this long are deleted; `None` keeps them.
    pub unnamed_retention: Option<Duration>,
    /// Requests per second per token (or per client address without one); `None`: no limit.
    pub rate_limit: Option<std::num::NonZeroU32>,
    /// How often the read/list counters and `accessedAt` batched in memory are written to the
    /// backend (also at shutdown). Until then `GET` store adds them from memory, except while a
    /// write of them is under way.
    pub access_flush_interval: Duration,
    /// How often orphan bodies are looked for and removed ([`crate::storage::Housekeeping::orphans`]);
    /// `None`: never.
    pub orphan_check_interval: Option<Duration>,
    /// Answer the plain `GET` of a record held in memory before routing ([`api::FastGet`]); on
    /// unless a test compares it with the normal path.
    pub fast_get: bool,
}

impl ServerConfig {
    /// Defaults for a server bound at `addr` (tests use this).
    pub fn for_addr(addr: std::net::SocketAddr) -> Self {
        Self {
            public_url: format!("http://{addr}"),
            max_record_bytes: 1024 * 1024 * 1024,
            default_general_access: GeneralAccess::Restricted,
            allow_method_override: false,
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            cors_origins: vec!["*".to_owned()],
            tls: None,
            unnamed_retention: None,
            rate_limit: None,
            access_flush_interval: Duration::from_secs(5),
            orphan_check_interval: Some(Duration::from_secs(24 * 3600)),
            fast_get: true,
        }
    }

    /// The part the HTTP layer reads.
    fn api(&self) -> api::Settings {
        api::Settings {
            public_url: self.public_url.clone(),
            max_record_bytes: self.max_record_bytes,
            default_general_access: self.default_general_access,
            idle_timeout: self.idle_timeout,
            cors_origins: self.cors_origins.clone(),
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then lets requests in flight finish,
/// flushes the batched counters and closes the store.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let access = Arc::new(AccessCounters::default());
    let state = AppState {
        store: store.clone(),
        access: access.clone(),
        config: Arc::new(config.api()),
        rate_limiter: config.rate_limit.map(api::rate_limit::RateLimiter::new),
    };
    let fast = config
        .fast_get
        .then(|| api::FastGet::new(&state))
        .flatten()
        .map(Arc::new);
    api::init_metrics();
    let flusher = tokio::spawn(flush_access_periodically(
        store.clone(),
        access.clone(),
        config.access_flush_interval,
    ));
    let sweeper = config.unnamed_retention.map(|retention| {
        tokio::spawn(expire_unnamed_periodically(
            store.clone(),
            access.clone(),
            retention,
        ))
    });

    let orphan_check = config
        .orphan_check_interval
        .map(|every| tokio::spawn(remove_orphans_periodically(store.clone(), every)));

    let allow_method_override = config.allow_method_override;
    // `?method=` must be applied before routing, so it wraps the router rather than a route.
    let app = tower::util::MapRequestLayer::new(move |request: Request<Incoming>| {
        let request = request.map(Body::new);
        if allow_method_override {
            api::override_method(request)
        } else {
            request
        }
    })
    .layer(api::router(state));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header read timeout also closes HTTP/1 keep-alive connections that sit idle that long;
    // `watch_connection` closes idle HTTP/2 connections, which answer pings and so never look
    // idle to the transport. The read buffer bounds what a request's headers may pin.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.idle_timeout)
        .max_buf_size(api::MAX_HEADER_BYTES + HEADER_BUFFER_SLACK)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(api::MAX_HEADER_BYTES + HEADER_BUFFER_SLACK).unwrap_or(u32::MAX),
        )
        .keep_alive_interval(Some(config.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));

    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let open = tokio_util::task::TaskTracker::new();
    // Tells every connection to finish its requests in flight and close.
    let stopping = tokio_util::sync::CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        // At the connection limit, new connections wait in the listen backlog.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        // The peer address, for rate limiting requests that carry no token; each request counts
        // as activity until its response body is gone.
        let app = {
            let activity = activity.clone();
            app.clone()
                .map_request(move |mut request: Request<Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    request
                })
                .map_future(move |responding| {
                    let busy = activity.begin();
                    async move {
                        let response: Result<axum::response::Response, _> = responding.await;
                        response.map(|r| {
                            r.map(|body| {
                                Body::new(Tracked {
                                    inner: body,
                                    _busy: busy,
                                })
                            })
                        })
                    }
                })
        };
        let limits = ConnectionLimits {
            idle: config.idle_timeout,
            send: config.send_timeout,
        };
        let app = Connection {
            routed: TowerToHyperService::new(app),
            fast: fast.clone(),
            activity: activity.clone(),
        };
        let (builder, tls, stopping) = (builder.clone(), tls.clone(), stopping.clone());
        metrics::gauge!("kvstore_open_connections").increment(1.0);
        open.spawn(async move {
            if let Err(e) =
                serve_connection(stream, builder, tls, app, activity, limits, stopping).await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            metrics::gauge!("kvstore_open_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    stopping.cancel();
    open.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, open.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the shutdown grace period; stopping anyway");
    }

    // Waited for, not only aborted: each holds the store, and the embedded engine lets go of its
    // data directory's lock only when the last holder is gone (an `fsck` right after a stop
    // found the directory still in use).
    for task in [Some(flusher), sweeper, orphan_check].into_iter().flatten() {
        task.abort();
        let _ = task.await;
    }
    flush_access(&*store, &access).await;
    if let Err(e) = store.close().await {
        tracing::error!(error = %e, "closing the store failed");
    }
    Ok(())
}

async fn flush_access_periodically(
    store: Arc<dyn Store>,
    access: Arc<AccessCounters>,
    period: Duration,
) {
    // Nothing is counted yet at the start: the first write is one period in.
    let period = period.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tick.tick().await;
        flush_access(&*store, &access).await;
    }
}

/// `--unnamed-retention`: deletes unnamed stores idle longer than `retention`, checking a tenth of
/// the retention period apart (at least every second, at most every ten minutes).
async fn expire_unnamed_periodically(
    store: Arc<dyn Store>,
    access: Arc<AccessCounters>,
    retention: Duration,
) {
    const BATCH: usize = 100;
    let period = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        // Reads counted in memory but not yet saved must keep their stores alive.
        flush_access(&*store, &access).await;
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        let idle_since = now_millis().saturating_sub(retention_ms);
        loop {
            let ids = match store.stores_unnamed_idle(idle_since, BATCH).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for expired unnamed stores");
                    break;
                }
            };
            let mut failed = false;
            for id in &ids {
                match store.store_delete(id).await {
                    Ok(true) => tracing::info!(store = %id, "deleted an expired unnamed store"),
                    Ok(false) => {}
                    Err(e) => {
                        failed = true;
                        tracing::warn!(store = %id, error = %e, "could not delete an expired unnamed store");
                    }
                }
            }
            if ids.len() < BATCH || failed {
                break;
            }
        }
    }
}

/// Removes stored bodies no record points at (see [`Housekeeping::orphans`]), `every` apart, the first
/// time `every` after the start. A body younger than [`ORPHAN_MIN_AGE`] may belong to a write in
/// flight and is left for a later round.
async fn remove_orphans_periodically(store: Arc<dyn Store>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let check = OrphanCheck {
            remove: true,
            min_age: ORPHAN_MIN_AGE,
        };
        match store.orphans(check).await {
            Ok(report) if report.bodies > 0 => tracing::warn!(
                bodies = report.bodies,
                bytes = report.bytes,
                removed = report.removed,
                "found stored bodies that no record points at"
            ),
            Ok(_) => tracing::debug!("no orphan bodies"),
            Err(e) => tracing::warn!(error = %e, "could not look for orphan bodies"),
        }
    }
}

async fn flush_access(store: &dyn Store, access: &AccessCounters) {
    let batch = access.take();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = store.apply_access(batch).await {
        tracing::warn!(error = %e, "could not save read/list counters");
    }
}

/// The time bounds of one connection.
#[derive(Clone, Copy)]
struct ConnectionLimits {
    /// No request in flight for this long closes the connection.
    idle: Duration,
    /// A write that makes no progress for this long (a client that stopped reading) closes it.
    send: Duration,
}

/// The API as hyper drives it on one connection.
trait App:
    tower::Service<
        Request<Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<
            Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The API as hyper drives it on one connection: the fast path ([`api::FastGet`]) where it takes
/// the request, else the router.
#[derive(Clone)]
struct Connection<S> {
    routed: TowerToHyperService<S>,
    fast: Option<Arc<api::FastGet>>,
    activity: Arc<Activity>,
}

impl<S: App> hyper::service::Service<Request<Incoming>> for Connection<S> {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<Self::Response, Self::Error>>,
        <TowerToHyperService<S> as hyper::service::Service<Request<Incoming>>>::Future,
    >;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        use futures_util::future::Either;
        if let Some(answer) = self.fast.as_ref().and_then(|fast| fast.answer(&request)) {
            // In flight, as a routed request is, until its body is gone.
            let response = answer.into_response(self.activity.begin());
            return Either::Left(std::future::ready(Ok(response)));
        }
        Either::Right(self.routed.call(request))
    }
}

/// Serves HTTP/1.1 or HTTP/2 (with TLS if `tls`) on one accepted connection until the client
/// closes it, it sits idle for `limits.idle`, a write stalls for `limits.send`, or `stopping`.
async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Connection<S>,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    stopping: tokio_util::sync::CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: App,
{
    // hyper-util reads the first bytes to tell HTTP/1 from HTTP/2 without a time limit, before
    // the header read timeout starts: a client that never sends a byte must not hold a
    // connection slot forever, nor hold up shutdown.
    let mut first = [0u8; 1];
    let spoke = tokio::select! {
        peeked = tokio::time::timeout(limits.idle, stream.peek(&mut first)) => peeked.is_ok(),
        () = stopping.cancelled() => false,
    };
    if !spoke {
        return Ok(());
    }
    // Below TLS, so that a client that stops reading is caught whatever the protocol.
    let stream = StallGuard::new(stream, limits.send);
    match tls {
        None => drive(builder, stream, app, &activity, limits, &stopping).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                done = tokio::time::timeout(limits.idle, acceptor.accept(stream)) => done,
                () = stopping.cancelled() => return Ok(()),
            };
            match handshake {
                Ok(Ok(stream)) => drive(builder, stream, app, &activity, limits, &stopping).await,
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err("TLS handshake timed out".into()),
            }
        }
    }
}

/// Runs hyper on `io`; asks the connection to close (HTTP/2: GOAWAY) once it has had no request
/// in flight for `limits.idle` or the server is stopping, and drops it if that takes longer than
/// [`GOODBYE_GRACE`].
async fn drive<I, S>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    app: Connection<S>,
    activity: &Activity,
    limits: ConnectionLimits,
    stopping: &tokio_util::sync::CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: App,
{
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), app);
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => return served,
        () = activity.idle_for(limits.idle) => {}
        () = stopping.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    match tokio::time::timeout(GOODBYE_GRACE, connection).await {
        Ok(served) => served,
        Err(_) => Ok(()),
    }
}

/// Whether a connection has requests in flight, and since when it has had none. Two atomics
/// rather than a lock and a wake-up per request: the connection's idle watch checks them only
/// when its timer fires, at most once per idle period.
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened), in ms after `opened`.
    last_end_ms: AtomicU64,
    opened: tokio::time::Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            opened: tokio::time::Instant::now(),
        }
    }

    /// A request is in flight until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let wait = if self.in_flight.load(Ordering::SeqCst) > 0 {
                idle
            } else {
                let last = Duration::from_millis(self.last_end_ms.load(Ordering::SeqCst));
                let quiet = self.opened.elapsed().saturating_sub(last);
                if quiet >= idle {
                    return;
                }
                idle - quiet
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request in flight; see [`Activity::begin`].
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let ended = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        // The end time first: a watch that sees no request in flight sees when the last ended.
        self.0.last_end_ms.fetch_max(ended, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in flight until it is sent or dropped.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A stream whose writes fail with `TimedOut` once one has waited `timeout` without a byte going
/// out: a client that stops reading a response cannot hold its connection (and the body it pins)
/// for ever. The deadline is armed by a write that cannot proceed and cleared only by one that
/// does; a flush does not clear it, because on TCP a flush succeeds while writes are stuck (the
/// `tokio-io-timeout` crate clears on flush, which hyper calls between writes, so its timeout never
/// fires here).
struct StallGuard<S> {
    inner: S,
    timeout: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl<S> StallGuard<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// After a write that could not proceed: starts the clock if it is not running, and fails
    /// once it has run out.
    fn stalled<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future as _;
        if !self.armed {
            self.armed = true;
            let at = tokio::time::Instant::now() + self.timeout;
            self.deadline.as_mut().reset(at);
        }
        match self.deadline.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn wrote(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: std::task::Poll<std::io::Result<usize>>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        match polled {
            std::task::Poll::Pending => self.stalled(cx),
            std::task::Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.armed = false;
                }
                std::task::Poll::Ready(Ok(n))
            }
            ready => ready,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(cx, polled)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.inner).poll_flush(cx) {
            std::task::Poll::Pending => self.stalled(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.inner).poll_shutdown(cx) {
            std::task::Poll::Pending => self.stalled(cx),
            ready => ready,
        }
    }
}
