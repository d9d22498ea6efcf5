//! The one accept loop of every listener — the `http`, `tcp` and `unix`
//! inputs and the metrics listener — and the HTTP/1.1 connection both HTTP
//! listeners serve.
//!
//! The loop serves at most `max_connections` connections at once (more wait
//! in the listen backlog, where they hold no file descriptor of ours), backs
//! off when accepting fails (out of file descriptors: waiting, not
//! spinning), finishes a TLS handshake within its timeout, and runs each
//! connection in a tracked task until it ends or the listener stops.
//!
//! Connections cut by a timeout are counted
//! (`tailhook_input_connections_timed_out_total`, for inputs) and logged at
//! most once a minute per listener and timeout, with the number left
//! unlogged.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::humanize_duration;
use crate::rate_limit::RateLimit;

/// A connection's byte stream: TCP, TLS over TCP, or a Unix socket.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// An accepted connection, after its TLS handshake when there is one.
pub type Conn = Box<dyn Stream>;

/// A listening socket.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix stream socket, with its file, removed when the listener closes.
    Unix(UnixListener, PathBuf),
}

/// A connection the kernel has handed over, before any TLS handshake.
enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    async fn accept(&self) -> io::Result<(Accepted, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Accepted::Tcp(s), peer.to_string()))
            }
            Listener::Unix(l, _) => l
                .accept()
                .await
                .map(|(s, _)| (Accepted::Unix(s), "unix".into())),
        }
    }

    /// Stops listening. A Unix socket file is removed now, so a successor
    /// may bind the same path while this one's connections finish.
    fn close(self, report: &Report) {
        if let Listener::Unix(listener, path) = self {
            drop(listener);
            if let Err(e) = std::fs::remove_file(&path) {
                report.warn(
                    None,
                    format_args!("cannot remove the socket file {}: {e}", path.display()),
                );
            }
        }
    }
}

/// Why a connection was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// The request headers took longer than `header_timeout`.
    Header,
    /// The request body arrived slower than `body_timeout`/`min_body_rate` allow.
    Body,
    /// A kept-alive connection waited longer than `keepalive_timeout` for its next request.
    KeepAlive,
    /// A `tcp` or `unix` connection was silent for `idle_timeout`.
    Idle,
    /// The TLS handshake was not finished in time.
    Handshake,
    /// The client did not read its answer in time.
    Send,
}

impl Timeout {
    const ALL: [Timeout; 6] = [
        Timeout::Header,
        Timeout::Body,
        Timeout::KeepAlive,
        Timeout::Idle,
        Timeout::Handshake,
        Timeout::Send,
    ];

    /// Its `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Timeout::Header => "header_timeout",
            Timeout::Body => "body_timeout",
            Timeout::KeepAlive => "keepalive_timeout",
            Timeout::Idle => "idle_timeout",
            Timeout::Handshake => "handshake_timeout",
            Timeout::Send => "send_timeout",
        }
    }

    fn from_u8(n: u8) -> Option<Timeout> {
        Timeout::ALL.get(n.checked_sub(1)? as usize).copied()
    }

    fn as_u8(self) -> u8 {
        Timeout::ALL.iter().position(|t| *t == self).unwrap_or(0) as u8 + 1
    }
}

/// What a listener logs and counts: its source (None for the metrics
/// listener), once-a-minute limits on its warnings, its metrics.
pub struct Report {
    source: Option<Arc<str>>,
    /// Connections cut, by [`Timeout`].
    cuts: [RateLimit; 6],
    /// Failed accepts.
    errors: RateLimit,
    open: Option<::metrics::Gauge>,
}

impl Report {
    /// The report of the input `source`, counted in its metrics.
    pub fn input(source: &str) -> Arc<Report> {
        Arc::new(Report {
            open: Some(
                ::metrics::gauge!(crate::metrics::INPUT_CONNECTIONS, "source" => source.to_string()),
            ),
            ..Report::new(Some(source.into()))
        })
    }

    /// The report of the metrics listener: logged, not counted.
    pub fn metrics_listener() -> Arc<Report> {
        Arc::new(Report::new(None))
    }

    fn new(source: Option<Arc<str>>) -> Report {
        Report {
            source,
            cuts: std::array::from_fn(|_| RateLimit::new(Duration::from_secs(60))),
            errors: RateLimit::new(Duration::from_secs(60)),
            open: None,
        }
    }

    /// A warning (at most once a minute when `limit` is given).
    fn warn(&self, limit: Option<&RateLimit>, msg: std::fmt::Arguments<'_>) {
        let Some(similar_since_last) = limit.map_or(Some(0), RateLimit::allow) else {
            return;
        };
        match &self.source {
            Some(source) => tracing::warn!(%source, similar_since_last, "{msg}"),
            None => tracing::warn!(similar_since_last, "metrics: {msg}"),
        }
    }

    /// Counts a connection cut by `timeout` and logs `what` happened, at
    /// most once a minute for this listener and timeout; a kept-alive connection
    /// closed while idle is normal and logged at debug only.
    pub fn cut(&self, peer: &str, timeout: Timeout, what: std::fmt::Arguments<'_>) {
        if let Some(source) = &self.source {
            ::metrics::counter!(crate::metrics::INPUT_CONNECTIONS_TIMED_OUT, "source" => source.to_string(), "reason" => timeout.label())
                .increment(1);
        }
        if timeout == Timeout::KeepAlive {
            tracing::debug!(source = self.source.as_deref(), peer, "{what}");
        } else {
            let limit = &self.cuts[timeout.as_u8() as usize - 1];
            self.warn(Some(limit), format_args!("{what} (peer {peer})"));
        }
    }
}

/// How long a `tcp` input's TLS client has to finish its handshake (an
/// `http` input's has its `header_timeout`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a listener serves: how many connections at once, with what TLS.
pub struct Serve {
    /// What it logs and counts.
    pub report: Arc<Report>,
    /// Connections served at once.
    pub max_connections: usize,
    /// TLS, and how long a client has to finish its handshake.
    pub tls: Option<(TlsAcceptor, Duration)>,
    /// At stop, unless this (shutdown) is cancelled too, the connections
    /// the kernel has already accepted are taken and served as well:
    /// closing the listener would reset them, losing what their senders
    /// wrote (a stream input stopped by a reload). None: they are reset.
    pub take_queued_unless: Option<CancellationToken>,
}

/// The shortest and the longest wait after a failed accept.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Accepts connections on `listener` until `stop` fires, at most
/// `max_connections` at once, and runs `handle(conn, peer)` for each in a
/// tracked task (after its TLS handshake). Then closes the listener and
/// returns the connections still open (the tracker is closed: wait on it).
pub async fn serve<H, F>(
    listener: Listener,
    how: Serve,
    stop: &CancellationToken,
    handle: H,
) -> TaskTracker
where
    H: Fn(Conn, String) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let handle = Arc::new(handle);
    let slots = Arc::new(Semaphore::new(how.max_connections));
    let tasks = TaskTracker::new();
    let tls = how.tls.map(Arc::new);
    let spawn = |accepted: Accepted, peer: String, permit| {
        let (handle, report, tls) = (handle.clone(), how.report.clone(), tls.clone());
        tasks.spawn(async move {
            let _open = Open::new(&report);
            if let Some(conn) = secure(accepted, tls.as_deref(), &report, &peer).await {
                handle(conn, peer).await;
            }
            drop(permit);
        });
    };
    let mut backoff = BACKOFF.0;
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = stop.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => break,
        };
        match accepted {
            Ok((conn, peer)) => {
                backoff = BACKOFF.0;
                spawn(conn, peer, Some(permit));
            }
            // One connection gone before it was accepted: not ours to wait for.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // Out of file descriptors or memory, usually: wait, longer
                // each time, rather than spin.
                how.report.warn(
                    Some(&how.report.errors),
                    format_args!("cannot accept a connection: {e}; trying again in {backoff:?}"),
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
    if how
        .take_queued_unless
        .as_ref()
        .is_some_and(|s| !s.is_cancelled())
    {
        while let Some(Ok((conn, peer))) = listener.accept().now_or_never() {
            spawn(conn, peer, None);
        }
    }
    listener.close(&how.report);
    tasks.close();
    tasks
}

/// Counts a connection open for as long as it lives.
struct Open(Option<::metrics::Gauge>);

impl Open {
    fn new(report: &Report) -> Open {
        let g = report.open.clone();
        if let Some(g) = &g {
            g.increment(1.0);
        }
        Open(g)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.decrement(1.0);
        }
    }
}

/// The connection as served: after a TLS handshake finished within its
/// timeout when there is TLS; None when the handshake failed (logged).
async fn secure(
    accepted: Accepted,
    tls: Option<&(TlsAcceptor, Duration)>,
    report: &Report,
    peer: &str,
) -> Option<Conn> {
    let stream = match (accepted, tls) {
        (Accepted::Tcp(s), None) => return Some(Box::new(s)),
        (Accepted::Unix(s), _) => return Some(Box::new(s)),
        (Accepted::Tcp(s), Some(_)) => s,
    };
    let (acceptor, timeout) = tls?;
    match tokio::time::timeout(*timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(Box::new(tls)),
        Ok(Err(e)) => {
            tracing::warn!(
                source = report.source.as_deref(),
                peer,
                "TLS handshake failed: {e}"
            );
            None
        }
        Err(_) => {
            report.cut(
                peer,
                Timeout::Handshake,
                format_args!(
                    "closed a connection that did not finish its TLS handshake within {}",
                    humanize_duration(*timeout)
                ),
            );
            None
        }
    }
}

// ---- HTTP/1.1 -----------------------------------------------------------------

/// The limits of an HTTP listener's connections.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// How long a client has to send a request's head: from the connection's
    /// start, and from the first byte of each next request.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// The largest request head.
    pub max_header_bytes: usize,
}

/// At most this many headers a request.
pub const MAX_HEADERS: usize = 100;

/// How long an answer may wait for the client to read it.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long open connections get to finish their request at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// The smallest read buffer: hyper's minimum, and room for a body's chunks.
const MIN_READ_BUFFER: usize = 64 << 10;

/// Serves one HTTP/1.1 connection with `answer` until it closes, a timeout
/// cuts it (reported), or `stop` fires: then the request in progress is
/// finished (for at most 5 s) and the connection closed.
pub async fn serve_http<A, AF>(
    conn: Conn,
    peer: &str,
    limits: HttpLimits,
    report: &Report,
    stop: &CancellationToken,
    answer: A,
) where
    A: Fn(Request<Incoming>) -> AF + Send + 'static,
    AF: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let phase = Arc::new(Phase::default());
    let io = Timed::new(conn, limits, phase.clone());
    let service = {
        let phase = phase.clone();
        hyper::service::service_fn(move |req| {
            phase.busy.store(true, Ordering::Relaxed);
            let (answered, phase) = (answer(req), phase.clone());
            async move {
                let r = answered.await;
                phase.answered.fetch_add(1, Ordering::Relaxed);
                phase.busy.store(false, Ordering::Relaxed);
                Ok::<_, Infallible>(r)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The head's timeout is the stream's (below): hyper's would also close
    // a kept-alive connection after it.
    builder
        .header_read_timeout(None)
        .max_headers(MAX_HEADERS)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(MIN_READ_BUFFER));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn).await;
        }
    }
    match Timeout::from_u8(phase.cut.load(Ordering::Relaxed)) {
        Some(t @ Timeout::Header) => report.cut(
            peer,
            t,
            format_args!(
                "closed a connection that did not send its request headers within {} (header_timeout)",
                humanize_duration(limits.header_timeout)
            ),
        ),
        Some(t @ Timeout::KeepAlive) => report.cut(
            peer,
            t,
            format_args!(
                "closed a kept-alive connection idle for {} (keepalive_timeout)",
                humanize_duration(limits.keepalive_timeout)
            ),
        ),
        Some(t) => report.cut(
            peer,
            t,
            format_args!(
                "closed a connection that did not read its answer for {}",
                humanize_duration(SEND_TIMEOUT)
            ),
        ),
        None => {}
    }
}

/// Where a connection is, as its answerer and its stream see it.
#[derive(Default)]
struct Phase {
    /// A request's head was read and it is not answered yet.
    busy: AtomicBool,
    /// Requests answered.
    answered: AtomicU64,
    /// The [`Timeout`] that cut the connection (0: none).
    cut: AtomicU8,
}

/// What the stream waits for between requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// A request's head, started or not, by the deadline.
    Head,
    /// The first byte of the next request on a kept-alive connection.
    KeepAlive,
}

/// A connection's stream with the timeouts of the HTTP listeners: a head
/// must arrive within `header_timeout` (from the start, or from its first
/// byte on a kept-alive connection), a kept-alive connection is closed after
/// `keepalive_timeout` without a next request, and an answer the client
/// does not read for [`SEND_TIMEOUT`] is abandoned. While a request is
/// being answered (its body read), reads have no timeout here: the
/// answerer keeps its own.
struct Timed {
    inner: Conn,
    limits: HttpLimits,
    phase: Arc<Phase>,
    waiting: Waiting,
    /// Requests answered when `waiting` was last set.
    answered: u64,
    /// Requests answered when a flush last woke the connection.
    flushed: u64,
    read_deadline: Pin<Box<Sleep>>,
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl Timed {
    fn new(inner: Conn, limits: HttpLimits, phase: Arc<Phase>) -> Timed {
        Timed {
            inner,
            limits,
            phase,
            waiting: Waiting::Head,
            answered: 0,
            flushed: 0,
            read_deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
            write_deadline: None,
        }
    }

    fn wait_for(&mut self, waiting: Waiting) {
        self.waiting = waiting;
        let after = match waiting {
            Waiting::Head => self.limits.header_timeout,
            Waiting::KeepAlive => self.limits.keepalive_timeout,
        };
        self.read_deadline.as_mut().reset(Instant::now() + after);
    }

    fn timed_out(&self, t: Timeout) -> io::Error {
        self.phase.cut.store(t.as_u8(), Ordering::Relaxed);
        io::Error::new(io::ErrorKind::TimedOut, t.label())
    }
}

impl AsyncRead for Timed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.phase.busy.load(Ordering::Relaxed) {
            return Pin::new(&mut me.inner).poll_read(cx, buf);
        }
        let answered = me.phase.answered.load(Ordering::Relaxed);
        if answered != me.answered {
            // An answer went out: the next request may take its time to come.
            me.answered = answered;
            me.wait_for(Waiting::KeepAlive);
        }
        let before = buf.filled().len();
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && me.waiting == Waiting::KeepAlive {
                    // The next request started: its head has header_timeout.
                    me.wait_for(Waiting::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match me.read_deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(me.timed_out(match me.waiting {
                    Waiting::Head => Timeout::Header,
                    Waiting::KeepAlive => Timeout::KeepAlive,
                }))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl Timed {
    /// Runs a write, abandoning it once it has waited [`SEND_TIMEOUT`] for
    /// the client to make room.
    fn poll_write_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut Conn>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match write(Pin::new(&mut self.inner), cx) {
            Poll::Pending => {
                let deadline = self
                    .write_deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(SEND_TIMEOUT)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(self.timed_out(Timeout::Send))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let flushed = me.poll_write_with(cx, |s, cx| s.poll_flush(cx));
        let answered = me.phase.answered.load(Ordering::Relaxed);
        if flushed.is_ready() && answered != me.flushed {
            // An answer went out. hyper reads the next request only when
            // polled again (it has no read pending once a body is read):
            // have it polled, so the wait for it is timed from now.
            me.flushed = answered;
            cx.waker().wake_by_ref();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_write_with(cx, |s, cx| s.poll_shutdown(cx))
    }
}
