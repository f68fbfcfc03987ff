//! The accept loop: a connection cap below the open-file limit, the TLS handshake (with a
//! deadline), HTTP/1.1 or HTTP/2 (by ALPN), deadlines for silent and idle connections, request
//! bodies left unread by an early answer, and graceful shutdown.
//!
//! * **Connection cap.** Every connection holds one slot of a semaphore sized from
//!   `RLIMIT_NOFILE` (less a reserve for the database pool, Redis, files and the redirect
//!   listener, see [`connection_cap`]), or from `server.max_connections` when that is lower. A
//!   connection arriving at the cap is accepted and closed at once, so the server never runs out
//!   of file descriptors and keeps accepting once slots free up.
//! * **Deadlines.** A connection must send its first request's headers within
//!   `server.header_timeout_secs` of the end of its TLS handshake, and one with no request in
//!   flight for `server.idle_timeout_secs` is closed (HTTP/1.1 keep-alive and HTTP/2 alike).
//!   Bytes alone don't count as activity, so a client trickling a request head is closed too.
//! * **Early answers.** When a response is ready before its request body was read (a refused
//!   API key, an unknown route, a 413, an error), the rest of the body is read and thrown away,
//!   up to the largest body any route accepts and for at most [`DRAIN_TIMEOUT`], before the
//!   response goes out. The HTTP/1.1 connection then stays usable for the next request and an
//!   HTTP/2 stream ends normally instead of being reset under a client still uploading. A body
//!   beyond those bounds (or one behind `Expect: 100-continue` that the client has not sent yet)
//!   is not read: HTTP/1.1 answers with `Connection: close` and closes cleanly (TLS
//!   `close_notify`), HTTP/2 resets the stream with `NO_ERROR` after the response.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, Version, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::PlatformSettings;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the rest of a request body that an early answer left unread.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection closed for idleness may take to say goodbye (GOAWAY, close_notify).
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Connections the plain-HTTP redirect listener serves at once; reserved out of the file limit.
pub const REDIRECT_MAX_CONNECTIONS: usize = 64;
/// File descriptors kept for everything but client connections: the listeners, log output,
/// Redis, the private cluster's files, a refused connection's brief descriptor.
const FD_RESERVE: u64 = 64;
/// A refusal at the connection cap is logged at most this often (with a count).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// How the accept loop treats connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// From the end of the TLS handshake (or the accept, without TLS) to the first request's
    /// headers.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// The most bytes of an unread request body that are read and discarded after an early
    /// answer.
    pub drain_limit: u64,
    pub drain_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub grace: Duration,
    /// Open connections, and connections refused at the cap (for `/metrics`).
    pub connections: Option<Gauge>,
    pub refused: Option<Counter>,
}

impl ServeOptions {
    /// The options `config` asks for, with the connection cap derived from this process's
    /// open-file limit (lowered further by `server.max_connections`).
    pub fn from_config(config: &impl PlatformSettings) -> Self {
        let (server, database) = (config.server(), config.database());
        let derived = connection_cap(open_file_limit(), database.max_connections);
        let max_connections = server.max_connections.map_or(derived, |m| m.min(derived));
        let drain_limit = config.largest_request_body() as u64;
        Self {
            max_connections,
            header_timeout: Duration::from_secs(server.header_timeout_secs),
            idle_timeout: Duration::from_secs(server.idle_timeout_secs),
            drain_limit,
            drain_timeout: DRAIN_TIMEOUT,
            grace: Duration::from_secs(server.shutdown_grace_secs),
            connections: None,
            refused: None,
        }
    }

    /// Reports open and refused connections through these metrics.
    pub fn with_metrics(mut self, metrics: &crate::telemetry::Metrics) -> Self {
        let (connections, refused) = metrics.connection_metrics();
        self.connections = Some(connections);
        self.refused = Some(refused);
        self
    }

    /// The redirect listener: few connections, short deadlines, small bodies.
    fn redirect() -> Self {
        Self {
            max_connections: REDIRECT_MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            drain_limit: 64 * 1024,
            drain_timeout: Duration::from_secs(2),
            grace: Duration::from_secs(5),
            connections: None,
            refused: None,
        }
    }
}

/// The soft `RLIMIT_NOFILE` of this process (1024, the usual default, when it can't be read).
pub fn open_file_limit() -> u64 {
    open_file_limits().0
}

/// The soft and hard `RLIMIT_NOFILE` of this process.
pub fn open_file_limits() -> (u64, u64) {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024))
}

/// Raises the soft open-file limit to the hard one (as far as 1,048,576), as servers do at
/// start: the soft default of 1,024 is meant for interactive programs. Returns the limit now
/// in force.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let wanted = hard.min(1 << 20);
    if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
        return wanted;
    }
    soft
}

/// The connection cap for an open-file limit: the limit less a reserve for the database pool
/// (`db_connections`), the redirect listener, and a margin that grows with the limit (one
/// sixteenth) for everything else the process opens. At least one.
pub fn connection_cap(open_files: u64, db_connections: u32) -> usize {
    let reserve = FD_RESERVE + REDIRECT_MAX_CONNECTIONS as u64 + u64::from(db_connections) + open_files / 16;
    // The semaphore counts in u32 at shutdown; far beyond any real limit anyway.
    usize::try_from(open_files.saturating_sub(reserve).clamp(1, u64::from(u32::MAX >> 4))).unwrap_or(1)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (up to `options.grace`), and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
    options: ServeOptions,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No header-read timeout of hyper's own: it would restart on every idle keep-alive wait and
    // close idle connections at that deadline instead of `idle_timeout`. The connection's
    // watchdog covers both (see `Activity::deadline`).
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(200);
    let options = Arc::new(options);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut refusals = RefusalLog::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // At the cap: closing at once keeps the descriptors for the connections being
            // served and tells the client straight away instead of leaving it in the backlog.
            drop(stream);
            if let Some(refused) = &options.refused {
                refused.inc();
            }
            refusals.refused(options.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            peer,
            router: router.clone(),
            builder: builder.clone(),
            options: options.clone(),
            stopping: stopping.clone(),
            _slot: slot,
        };
        let acceptor = acceptor.clone();
        tokio::spawn(connection.run(stream, acceptor));
    }
    drop(listener);
    let open = options.max_connections - slots.available_permits();
    tracing::info!(connections = open, "shutting down: waiting for in-flight requests");
    let _ = stop.send(true);
    let all = u32::try_from(options.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(options.grace, slots.acquire_many(all)).await.is_err() {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

/// Logs refusals at the connection cap: the first at once, then at most one line a minute
/// with the number refused since.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    since: u64,
}

impl RefusalLog {
    fn refused(&mut self, cap: usize) {
        self.since += 1;
        let now = Instant::now();
        if self.last.is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_INTERVAL) {
            tracing::warn!(
                max_connections = cap,
                refused = self.since,
                "connection limit reached: refusing new connections (server.max_connections, open-file limit)"
            );
            self.last = Some(now);
            self.since = 0;
        }
    }
}

/// Which HTTP version a connection speaks, when ALPN said so.
#[derive(Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
    /// No ALPN (plain HTTP behind a proxy): told apart by the first bytes.
    Either,
}

struct Connection {
    peer: SocketAddr,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    options: Arc<ServeOptions>,
    stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, stream: TcpStream, acceptor: Option<tokio_rustls::TlsAcceptor>) {
        let _open = OpenConnection::new(self.options.connections.clone());
        match acceptor {
            Some(acceptor) => {
                let peer = self.peer;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer, "TLS handshake timed out");
                        return;
                    }
                };
                let protocol = match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Protocol::Http2,
                    Some(_) => Protocol::Http1,
                    None => Protocol::Either,
                };
                self.serve(tls, protocol).await;
            }
            None => self.serve(stream, Protocol::Either).await,
        }
    }

    async fn serve<I>(self, io: I, protocol: Protocol)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { peer, router, builder, options, mut stopping, _slot } = self;
        let activity = Arc::new(Activity::new(Instant::now()));
        let service = {
            let activity = activity.clone();
            let options = options.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                handle(req, peer, router.clone(), activity.clone(), options.clone())
            })
        };
        let builder = match protocol {
            Protocol::Http1 => builder.http1_only(),
            Protocol::Http2 => builder.http2_only(),
            Protocol::Either => builder,
        };
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let shutting_down = loop {
            if *stopping.borrow() {
                break true;
            }
            let deadline = activity.deadline(&options);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = activity.changed.notified() => {}
                _ = sleep_until(deadline) => {
                    if activity.deadline(&options).is_some_and(|d| d <= Instant::now()) {
                        tracing::debug!(peer = %peer, "closing a silent or idle connection");
                        break false;
                    }
                }
                changed = stopping.changed() => {
                    if changed.is_err() {
                        break true;
                    }
                }
            }
        };
        // HTTP/1.1: closes once the request in flight (if any) is answered; HTTP/2: GOAWAY, and
        // closes once its streams are done. A peer that doesn't cooperate is dropped.
        conn.as_mut().graceful_shutdown();
        let wait = if shutting_down { options.grace } else { CLOSE_WAIT };
        if let Ok(Err(e)) = tokio::time::timeout(wait, conn).await {
            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Counts an open connection in the gauge for as long as it lives.
struct OpenConnection(Option<Gauge>);

impl OpenConnection {
    fn new(gauge: Option<Gauge>) -> Self {
        if let Some(g) = &gauge {
            g.inc();
        }
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }
}

/// What a connection is doing, for its watchdog.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    /// When the last request in flight finished.
    idle_since: Mutex<Instant>,
    changed: Notify,
}

impl Activity {
    fn new(started: Instant) -> Self {
        Self {
            started,
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: Mutex::new(started),
            changed: Notify::new(),
        }
    }

    /// When the connection is to be closed if nothing happens before: none while a request is
    /// in flight; the header deadline before the first request; the idle deadline after.
    fn deadline(&self, options: &ServeOptions) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.served.load(Ordering::Acquire) {
            return Some(self.started + options.header_timeout);
        }
        let idle_since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        Some(idle_since + options.idle_timeout)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.served.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        InFlight(self.clone())
    }
}

/// A request in flight, until its response body is sent (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *activity.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
        activity.changed.notify_one();
    }
}

/// One request: the router's answer, then whatever of the request body it left unread.
async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    router: Router,
    activity: Arc<Activity>,
    options: Arc<ServeOptions>,
) -> Result<Response<TrackedBody>, Infallible> {
    let in_flight = activity.begin();
    let version = req.version();
    let expects_continue =
        req.headers().get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let slot = BodySlot::new(body);
    let req = Request::from_parts(parts, slot.reader());
    let mut res = router.oneshot(req).await.unwrap_or_else(|e| match e {});
    if let Some(unread) = slot.take_unread() {
        // A client waiting for `100 Continue` hasn't sent its body: reading it now would ask for
        // it. Otherwise the rest is on its way, and reading it is what keeps the connection (or
        // the HTTP/2 stream) in order.
        let asked_for = !expects_continue || unread.polled;
        let drained = asked_for && drain(unread.body, declared.map(|d| d.saturating_sub(unread.read)), &options).await;
        if !drained && version <= Version::HTTP_11 {
            res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    Ok(res.map(|inner| TrackedBody { inner, _in_flight: in_flight }))
}

/// Reads and discards the rest of a request body, within the drain limits. True when the body
/// ended.
async fn drain(mut body: Incoming, remaining: Option<u64>, options: &ServeOptions) -> bool {
    if remaining.is_some_and(|r| r > options.drain_limit) {
        return false;
    }
    let mut budget = options.drain_limit;
    let read_all = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                let Some(left) = budget.checked_sub(data.len() as u64) else { return false };
                budget = left;
            }
        }
        true
    };
    tokio::time::timeout(options.drain_timeout, read_all).await.unwrap_or(false)
}

/// The request body, shared between the request (which the router may drop half-read) and
/// the connection, which reads what is left after the answer.
#[derive(Clone)]
struct BodySlot(Arc<Mutex<SlotState>>);

struct SlotState {
    body: Option<Incoming>,
    read: u64,
    polled: bool,
    ended: bool,
}

struct Unread {
    body: Incoming,
    read: u64,
    polled: bool,
}

impl BodySlot {
    fn new(body: Incoming) -> Self {
        Self(Arc::new(Mutex::new(SlotState { body: Some(body), read: 0, polled: false, ended: false })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reader(&self) -> SlotReader {
        SlotReader(self.clone())
    }

    /// The body, unless it was read to its end (or had none).
    fn take_unread(&self) -> Option<Unread> {
        let mut state = self.lock();
        if state.ended || state.body.as_ref().is_none_or(Body::is_end_stream) {
            return None;
        }
        let (read, polled) = (state.read, state.polled);
        state.body.take().map(|body| Unread { body, read, polled })
    }
}

/// The request's view of a [`BodySlot`].
struct SlotReader(BodySlot);

impl Body for SlotReader {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut state = self.0.lock();
        state.polled = true;
        let Some(body) = state.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                state.read += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(None) => state.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let state = self.0.lock();
        state.ended || state.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock().body.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// A response body that keeps its request counted as in flight until it is sent.
struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A plain-HTTP listener that answers everything with a redirect to the HTTPS address.
pub async fn serve_redirect(listener: TcpListener, public_url: String, shutdown: impl Future<Output = ()> + Send) {
    let public_url = Arc::new(public_url);
    let router = Router::new().fallback(move |req: axum::extract::Request| {
        let public_url = public_url.clone();
        async move { super::middleware::https_redirect(&public_url, &req) }
    });
    let router = router.layer(axum::middleware::from_fn(super::middleware::request_id));
    serve(listener, None, router, shutdown, ServeOptions::redirect()).await;
}

/// Resolves on SIGINT or SIGTERM.
/// Registers SIGTERM and SIGINT at once — from here on they no longer end the process on the
/// spot — and reports the first one on the returned channel, so that a stop requested while
/// the server is still starting can stop what it started (`stopped` waits for it).
pub fn stop_requests() -> std::io::Result<tokio::sync::watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        // (tokio keeps its handlers for the life of the process: a second signal doesn't
        // kill a process that is stopping.)
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Resolves once [`stop_requests`] saw a signal.
pub async fn stopped(mut requests: tokio::sync::watch::Receiver<bool>) {
    if requests.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

pub type PeerAddr = SocketAddr;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_keeps_a_margin_below_the_open_file_limit() {
        // The usual soft limit: room for the pool, the redirect listener and a margin.
        let cap = connection_cap(1024, 20);
        assert_eq!(cap, 1024 - (64 + 64 + 20 + 64));
        assert!(cap < 1024 - 20 - 64, "{cap}");
        // A larger pool takes its descriptors out of the cap.
        assert_eq!(connection_cap(1024, 100), cap - 80);
        // The margin grows with the limit.
        let big = connection_cap(65_536, 20);
        assert_eq!(big, 65_536 - (64 + 64 + 20 + 4096));
        // A limit too low to spare anything still serves one connection at a time.
        assert_eq!(connection_cap(100, 20), 1);
        assert_eq!(connection_cap(0, 0), 1);
        // Unlimited (RLIM_INFINITY) stays a sane number.
        assert!(connection_cap(u64::MAX, 20) <= (u32::MAX >> 4) as usize);
    }

    #[test]
    fn the_open_file_limit_is_read() {
        let limit = open_file_limit();
        assert!(limit >= 16, "{limit}");
    }
}
