//! HTTP collector emulators: Fluentd `in_http` and the Logstash `http` input,
//! as recorded in `shared/reference/collectors.md`.
//!
//! A [`Collector`] runs on its own thread with its own tokio runtime, so tests
//! can be plain `#[test]` functions that use blocking calls. It records every
//! accepted request ([`Batch`]) with the raw bytes of each event and its
//! headers, the headers of every request whatever its answer
//! ([`Collector::header_of_each_request`]), counts every answer's status,
//! notes when each request arrived and was answered
//! ([`Collector::exchanges`]), and lets a test inject faults
//! ([`Collector::fail_next`], [`Collector::set_busy`], [`Collector::set_hang`],
//! [`Collector::hang_next`] with [`Collector::release`],
//! [`Collector::set_stall`], [`Collector::respond_with_body`],
//! [`Collector::set_delay`]).
//!
//! Where the real collector silently loses data that tailhook sent (malformed
//! JSON answered `200`, a non-JSON content type turned into one plain-text
//! event, ...), the emulator answers like the real one but records a
//! *violation*. Dropping a [`Collector`] that has violations panics (unless
//! the thread is already panicking), so the test that caused one fails.
//!
//! Order of decisions for each request:
//! 1. the body is read in full; over `body_limit` → `413` and the connection
//!    is closed (a request that declares an oversized body and waits for
//!    `100 Continue` is answered before its body, which never comes);
//! 2. Logstash with `basic_auth`: missing or wrong credentials → `401`;
//! 3. [`Collector::set_hang`] (every request while set) or
//!    [`Collector::hang_next`] (the next `n`) *stalls* the request: it is
//!    never answered ([`Collector::set_hang`]) or held until
//!    [`Collector::release`]. By default ([`Stall::AfterRecording`]) steps
//!    4–5 run first, so the collector records the events it accepts and then
//!    stalls, like a real one whose answer is slow or lost; with
//!    [`Stall::BeforeRecording`] it stalls first. Either way a stalled
//!    request is counted once, when it stalls; [`Collector::set_delay`]
//!    makes a request wait before step 4;
//! 4. [`Collector::respond_with_body`] override, else the next
//!    [`Collector::fail_next`] status, else (Logstash) `429` while busy;
//! 5. the flavor's own handling of the body.
//!
//! The body is always checked for the violations above, whatever the answer
//! (`413`, `401`, stalled, injected failures alike), as long as it was
//! received whole. An injected or overriding *2xx* status does not skip
//! step 5: the request is handled normally, recorded if the flavor accepts
//! it, and answered with the injected status and body.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

const MIB: usize = 1024 * 1024;

/// Which real collector to emulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Mirrors Fluentd v1 `in_http` as observed on Fluentd 1.16.11: any path,
    /// POST or PUT alike; `application/json` (a top-level array is one event
    /// per element, an object one event) or `application/x-ndjson` (one event
    /// per non-empty line); success is `200` with an empty body, keep-alive,
    /// idle connections closed after `keepalive_timeout` (10 s); `400` without
    /// a JSON/NDJSON/msgpack content type (`'json', 'ndjson' or 'msgpack'
    /// parameter is required`) and for non-object elements such as `[1,2]`;
    /// `413` `Too large` over `body_size_limit` (32 MiB), closing the
    /// connection; `GET` is `200` and ingests nothing; malformed JSON is `200`
    /// and silently dropped (recorded here as a violation). Not emulated:
    /// msgpack and gzip/deflate bodies (answered `400`), form-encoded `json=`.
    Fluentd,
    /// Mirrors the Logstash 8 `http` input (logstash-input-http 4.x) with its
    /// default `additional_codecs` (`application/json` → json codec): a root
    /// JSON array is one event per element, an object one event; success is
    /// `200` with body `ok`; `401` for missing or wrong basic auth (`user` /
    /// `password`); `429` while its queue is full or the pipeline blocked
    /// ([`Collector::set_busy`]); `413` over `max_content_length` (100 MiB).
    /// What the real one accepts but mangles (malformed JSON, non-object
    /// elements → `_jsonparsefailure`; another content type → one plain-text
    /// event) is answered `200 ok` and recorded as a violation.
    Logstash,
}

/// When a stalled request ([`Collector::set_hang`], [`Collector::hang_next`])
/// is recorded, relative to the stall ([`Collector::set_stall`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stall {
    /// Record the events the flavor accepts, then stall before answering:
    /// the sender cannot know they arrived. Mirrors Fluentd `in_http`, which
    /// emits a request's events into its buffer before it writes the answer
    /// (an answer lost on the way, or slower than the sender's timeout, leaves
    /// them recorded), and the Logstash `http` input, which answers only
    /// after it has pushed the events onto the pipeline's queue. The default.
    #[default]
    AfterRecording,
    /// Stall before anything is recorded; a released request is then handled
    /// as usual. Mirrors a collector that cannot take the events yet: Fluentd
    /// blocked on a full buffer (`overflow_action block`), Logstash waiting
    /// for room in a blocked pipeline.
    BeforeRecording,
}

/// How to start a [`Collector`]. Use [`Options::fluentd`] or
/// [`Options::logstash`] for the real defaults, then change fields with
/// struct-update syntax: `Options { port, ..Options::fluentd() }`.
#[derive(Clone)]
pub struct Options {
    pub flavor: Flavor,
    /// Serve HTTPS with this configuration (see `tls::TestPki::server_config`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest accepted body in bytes; above it, `413` and the connection is
    /// closed. Mirrors Fluentd `in_http`'s `body_size_limit` (32 MiB by
    /// default; `413 Request Entity Too Large`, body `Too large`, connection
    /// closed, nothing of the body emitted) and the Logstash `http` input's
    /// `max_content_length` (100 MiB; `413`, empty body); a proxy's limit
    /// (nginx `client_max_body_size`) answers the same way. Set it small to
    /// test how a sender splits a refused batch.
    pub body_limit: usize,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Logstash `user`/`password`: `401` when the `Authorization` header is
    /// missing or wrong. Ignored by the Fluentd flavor.
    pub basic_auth: Option<(String, String)>,
    /// Idle keep-alive connections (and connections that do not send a
    /// complete request head in time) are closed after this long. Fluentd
    /// `keepalive_timeout` is 10 s; Logstash has none.
    pub keepalive_timeout: Option<Duration>,
}

/// A Fluentd `in_http` emulator on a free port.
pub fn fluentd() -> Collector {
    Collector::start(Options::fluentd())
}

impl Options {
    /// Fluentd `in_http` defaults: plain HTTP, `body_size_limit` 32 MiB,
    /// `keepalive_timeout` 10 s.
    pub fn fluentd() -> Options {
        Options {
            flavor: Flavor::Fluentd,
            tls: None,
            body_limit: 32 * MIB,
            port: 0,
            basic_auth: None,
            keepalive_timeout: Some(Duration::from_secs(10)),
        }
    }

    /// Logstash `http` input defaults: plain HTTP, `max_content_length`
    /// 100 MiB, no basic auth, no idle timeout.
    pub fn logstash() -> Options {
        Options {
            flavor: Flavor::Logstash,
            tls: None,
            body_limit: 100 * MIB,
            port: 0,
            basic_auth: None,
            keepalive_timeout: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("flavor", &self.flavor)
            .field("tls", &self.tls.is_some())
            .field("body_limit", &self.body_limit)
            .field("port", &self.port)
            .field("basic_auth", &self.basic_auth)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .finish()
    }
}

/// One request whose events the collector recorded: answered with a 2xx
/// status, or recorded and then stalled ([`Stall::AfterRecording`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub method: String,
    /// URL path without the query (Fluentd's tag is the path).
    pub path: String,
    /// URL query without the `?`, if any (Fluentd reads `?time=`).
    pub query: Option<String>,
    /// Request headers in arrival order; names are lower-case.
    pub headers: Vec<(String, String)>,
    /// The whole request body as received.
    pub body: Vec<u8>,
    /// The raw bytes of each event exactly as they appear in the body: each
    /// element of a top-level JSON array, the single top-level object, or
    /// each non-empty NDJSON line.
    pub events: Vec<Vec<u8>>,
    /// Recorded, then stalled ([`Collector::set_hang`] or
    /// [`Collector::hang_next`]) instead of being answered at once: the
    /// sender was not told (or told late) that these events arrived, so
    /// sending them again is expected.
    pub stalled: bool,
}

/// When one request arrived and when (and how) it was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// When its handling started (the request head had been read).
    pub arrived: Instant,
    /// When the answer was made, and its status; `None` while unanswered.
    pub answered: Option<(Instant, u16)>,
}

impl Batch {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running collector emulator. Stopped by [`Collector::stop`] or on drop.
pub struct Collector {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: bool,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Bumped by [`Collector::release`]; held requests wait for a change.
    release: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    batches: Vec<Batch>,
    event_count: usize,
    statuses: Vec<u16>,
    /// Requests received: answered ones plus stalled ones.
    requests: usize,
    /// One per request counted in `requests`, in the same order.
    exchanges: Vec<Exchange>,
    /// The headers of each request counted in `requests`, in the same
    /// order, whatever it was answered (names lower-case).
    request_headers: Vec<Vec<(String, String)>>,
    /// Events of the batches that are not `stalled`.
    answered_events: usize,
    stall: Stall,
    connections: usize,
    tls_failures: usize,
    /// TLS handshakes that resumed an earlier session.
    resumed_handshakes: usize,
    /// Answer every request with `Connection: close` ([`Collector::close_after_each_request`]).
    close_each: bool,
    /// Abort handshakes that offer a session, as Fluentd does ([`Collector::refuse_resumption`]).
    refuse_resumption: bool,
    /// Handshakes aborted so.
    refused_resumptions: usize,
    violations: Vec<String>,
    script: VecDeque<Injected>,
    busy: bool,
    hang: bool,
    /// How many of the next requests [`Collector::hang_next`] still holds.
    hold_next: usize,
    /// Requests held by [`Collector::hang_next`] and not yet released.
    held: usize,
    /// How long each request waits before it is handled ([`Collector::set_delay`]).
    delay: Duration,
    override_answer: Option<(u16, String)>,
}

#[derive(Clone, Debug)]
struct Injected {
    status: u16,
    body: String,
    retry_after: Option<u64>,
}

struct Config {
    flavor: Flavor,
    body_limit: usize,
    /// Expected `Authorization` credentials, base64 of `user:password`.
    basic_auth: Option<String>,
    keepalive_timeout: Option<Duration>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock must not hide the original failure.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if done(&state) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Collector {
    /// Starts a collector on `127.0.0.1:opts.port` (SO_REUSEADDR, so the port
    /// of a stopped collector can be taken again at once). Panics if the port
    /// cannot be bound.
    pub fn start(opts: Options) -> Collector {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build collector runtime");
        let bind = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, opts.port));
        let listener = runtime
            .block_on(async {
                let socket = TcpSocket::new_v4()?;
                socket.set_reuseaddr(true)?;
                socket.bind(bind)?;
                socket.listen(1024)
            })
            .unwrap_or_else(|e| panic!("collector: cannot listen on {bind}: {e}"));
        let addr = listener.local_addr().expect("collector local_addr");

        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            release: tokio::sync::watch::Sender::new(0),
        });
        let config = Arc::new(Config {
            flavor: opts.flavor,
            body_limit: opts.body_limit,
            basic_auth: opts
                .basic_auth
                .as_ref()
                .map(|(user, password)| base64(format!("{user}:{password}").as_bytes())),
            keepalive_timeout: opts.keepalive_timeout,
        });
        let acceptor = opts.tls.clone().map(TlsAcceptor::from);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();

        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("collector-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(accept_loop(
                    listener,
                    acceptor,
                    thread_shared,
                    config,
                    shutdown_rx,
                ));
                // Dropping the runtime here closes every remaining socket.
                drop(runtime);
            })
            .expect("spawn collector thread");

        Collector {
            shared,
            addr,
            tls: opts.tls.is_some(),
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// The bound address (always 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the collector listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`, or `https://localhost:PORT{path}` when
    /// serving TLS (the test certificate names `localhost` and `127.0.0.1`).
    pub fn url(&self, path: &str) -> String {
        let sep = if path.starts_with('/') || path.is_empty() {
            ""
        } else {
            "/"
        };
        if self.tls {
            format!("https://localhost:{}{sep}{path}", self.addr.port())
        } else {
            format!("http://127.0.0.1:{}{sep}{path}", self.addr.port())
        }
    }

    /// Every request answered with a 2xx status, in arrival order.
    pub fn batches(&self) -> Vec<Batch> {
        self.shared.lock().batches.clone()
    }

    /// All accepted events (raw bytes), in arrival order.
    pub fn events(&self) -> Vec<Vec<u8>> {
        let state = self.shared.lock();
        state
            .batches
            .iter()
            .flat_map(|b| b.events.iter().cloned())
            .collect()
    }

    /// All accepted events parsed as JSON, in arrival order.
    pub fn events_json(&self) -> Vec<serde_json::Value> {
        self.events()
            .iter()
            .map(|e| serde_json::from_slice(e).expect("recorded events are valid JSON"))
            .collect()
    }

    /// Number of accepted events.
    pub fn event_count(&self) -> usize {
        self.shared.lock().event_count
    }

    /// The accepted events of the batches that were answered at once (not
    /// [`Batch::stalled`]), in arrival order: what the sender was told had
    /// arrived.
    pub fn answered_events(&self) -> Vec<Vec<u8>> {
        let state = self.shared.lock();
        state
            .batches
            .iter()
            .filter(|b| !b.stalled)
            .flat_map(|b| b.events.iter().cloned())
            .collect()
    }

    /// The accepted events of the [`Batch::stalled`] batches, in arrival
    /// order.
    pub fn stalled_events(&self) -> Vec<Vec<u8>> {
        let state = self.shared.lock();
        state
            .batches
            .iter()
            .filter(|b| b.stalled)
            .flat_map(|b| b.events.iter().cloned())
            .collect()
    }

    /// The status of every answered request, in the order of the answers
    /// (stalled requests have none until they are answered).
    pub fn statuses(&self) -> Vec<u16> {
        self.shared.lock().statuses.clone()
    }

    /// Number of requests received: answered with any status, or stalled.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests
    }

    /// The value of header `name` in each request counted by
    /// [`Collector::request_count`], in the order they were counted, with
    /// the status it was answered (0 while unanswered): refused, failed
    /// and stalled requests alike, to follow one batch through its retries.
    pub fn header_of_each_request(&self, name: &str) -> Vec<(Option<String>, u16)> {
        let state = self.shared.lock();
        state
            .request_headers
            .iter()
            .zip(&state.exchanges)
            .map(|(headers, exchange)| {
                let value = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone());
                (value, exchange.answered.map_or(0, |(_, status)| status))
            })
            .collect()
    }

    /// When each request counted by [`Collector::request_count`] arrived and
    /// was answered, in the order they were counted. To measure how long a
    /// sender waited before it tried again (e.g. after `Retry-After`).
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.lock().exchanges.clone()
    }

    /// Number of TCP connections accepted (to check connection reuse).
    pub fn connection_count(&self) -> usize {
        self.shared.lock().connections
    }

    /// Number of TLS handshakes that resumed an earlier session (a session
    /// ticket or id from a previous connection) instead of a full handshake.
    pub fn resumed_handshakes(&self) -> usize {
        self.shared.lock().resumed_handshakes
    }

    /// From now on every answer carries `Connection: close`, so the sender
    /// needs a new connection (and, over TLS, a new handshake) for each
    /// request, as behind a load balancer that closes kept connections.
    pub fn close_after_each_request(&self) {
        self.shared.lock().close_each = true;
    }

    /// From now on a TLS handshake that offers to resume a session is
    /// aborted with an `internal_error` alert, as Fluentd's TLS server does.
    pub fn refuse_resumption(&self) {
        self.shared.lock().refuse_resumption = true;
    }

    /// Handshakes aborted because they offered a session to resume.
    pub fn refused_resumptions(&self) -> usize {
        self.shared.lock().refused_resumptions
    }

    /// Number of failed TLS handshakes.
    pub fn tls_failures(&self) -> usize {
        self.shared.lock().tls_failures
    }

    /// The violations recorded so far (see the module documentation).
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// Takes the violations recorded so far, so that dropping the collector
    /// does not panic. Only for tests that provoke one on purpose.
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.shared.lock().violations)
    }

    /// Blocks until at least `n` events have been accepted, or `timeout`.
    pub fn wait_for_events(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.event_count >= n)
    }

    /// Blocks until at least `n` events have been accepted, for as long as
    /// events keep arriving: fails only when none came for `stall` (or after
    /// `limit` in all). For long runs whose speed depends on how busy the
    /// machine is: what is checked is that delivery goes on, not how fast.
    pub fn wait_for_events_while_arriving(
        &self,
        n: usize,
        stall: Duration,
        limit: Duration,
    ) -> bool {
        let end = std::time::Instant::now() + limit;
        loop {
            let before = self.event_count();
            if self.wait_for_events(n, stall) {
                return true;
            }
            if self.event_count() == before || std::time::Instant::now() >= end {
                return false;
            }
        }
    }

    /// Blocks until at least `n` events of batches answered at once (see
    /// [`Collector::answered_events`]) have been accepted, or `timeout`.
    pub fn wait_for_answered_events(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.answered_events >= n)
    }

    /// Blocks until at least `n` requests have been received (answered with
    /// any status, including injected failures, or hung), or `timeout`.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.requests >= n)
    }

    /// Blocks until at least `n` TLS handshakes have failed, or `timeout`.
    pub fn wait_for_tls_failures(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.tls_failures >= n)
    }

    /// Answers the next requests with these statuses in turn (body
    /// `injected failure <status>`, no `Retry-After`). Their events are not
    /// recorded (unless the status is 2xx: see the module documentation).
    pub fn fail_next(&self, statuses: &[u16]) {
        let mut state = self.shared.lock();
        for &status in statuses {
            state.script.push_back(Injected {
                status,
                body: format!("injected failure {status}"),
                retry_after: None,
            });
        }
    }

    /// Like [`Collector::fail_next`] for one request, adding the header
    /// `Retry-After: <secs>`.
    pub fn fail_next_with_retry_after(&self, status: u16, secs: u64) {
        self.shared.lock().script.push_back(Injected {
            status,
            body: format!("injected failure {status}"),
            retry_after: Some(secs),
        });
    }

    /// Logstash flavor: while busy, answer `429 Too Many Requests` like a
    /// Logstash whose pending-request queue is full or whose pipeline is
    /// blocked. No effect on the Fluentd flavor.
    pub fn set_busy(&self, busy: bool) {
        self.shared.lock().busy = busy;
    }

    /// While set, each new request is read in full, counted, checked, and
    /// never answered: its connection stays open until the collector stops.
    /// By default its events are recorded first (a [`Batch::stalled`] batch,
    /// see [`Stall`]). Requests already hung stay hung after
    /// `set_hang(false)`.
    pub fn set_hang(&self, hang: bool) {
        self.shared.lock().hang = hang;
    }

    /// Holds each of the next `n` requests unanswered (read in full and
    /// counted by [`Collector::request_count`]) until [`Collector::release`];
    /// later requests are answered as usual, so a test can hold one request
    /// while the ones after it complete. By default ([`Stall::AfterRecording`])
    /// a held request is handled (fault injection, the flavor's verdict) and
    /// its events recorded as a [`Batch::stalled`] batch before it is held,
    /// and a release only sends the answer decided then; with
    /// [`Stall::BeforeRecording`] all of that happens after the release. A
    /// held request whose connection is closed by the client may never
    /// resume; one still held when the collector stops is never answered.
    pub fn hang_next(&self, n: usize) {
        self.shared.lock().hold_next += n;
    }

    /// Whether requests stalled from now on by [`Collector::set_hang`] or
    /// [`Collector::hang_next`] are recorded before the stall (the default)
    /// or after it.
    pub fn set_stall(&self, stall: Stall) {
        self.shared.lock().stall = stall;
    }

    /// Lets every request held by [`Collector::hang_next`] so far go on to
    /// be answered. Holds not yet used (no request came) stay armed.
    pub fn release(&self) {
        self.shared.release.send_modify(|g| *g += 1);
    }

    /// Blocks until at least `n` requests are held by
    /// [`Collector::hang_next`] at once, or `timeout`.
    pub fn wait_for_held(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.held >= n)
    }

    /// Makes each later request wait `delay` before it is handled (recorded
    /// and answered): a slow collector. `Duration::ZERO` ends it.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Answers every later request with this status and body (text/plain)
    /// until [`Collector::clear_override`].
    pub fn respond_with_body(&self, status: u16, body: &str) {
        self.shared.lock().override_answer = Some((status, body.to_owned()));
    }

    /// Ends [`Collector::respond_with_body`].
    pub fn clear_override(&self) {
        self.shared.lock().override_answer = None;
    }

    /// Closes the listener and every open connection, and joins the thread.
    /// Panics if violations were recorded (see the module documentation).
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&mut self) -> Option<String> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let thread = self.thread.take()?;
        match thread.join() {
            Ok(()) => None,
            Err(payload) => Some(
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_owned()),
            ),
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let thread_panic = self.shutdown();
        if std::thread::panicking() {
            return;
        }
        if let Some(msg) = thread_panic {
            panic!("collector thread on {} panicked: {msg}", self.addr);
        }
        let violations = std::mem::take(&mut self.shared.lock().violations);
        if !violations.is_empty() {
            panic!(
                "collector on {} recorded {} violation(s) by the sender:\n  - {}",
                self.addr,
                violations.len(),
                violations.join("\n  - ")
            );
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    config: Arc<Config>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                {
                    shared.lock().connections += 1;
                    shared.changed.notify_all();
                }
                let shared = Arc::clone(&shared);
                let config = Arc::clone(&config);
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    match acceptor {
                        None => serve_connection(stream, shared, config).await,
                        Some(acceptor) => match refuses_resumption(&stream, &shared).await {
                            true => {}
                            false => match acceptor.accept(stream).await {
                            Ok(tls) => {
                                if tls.get_ref().1.handshake_kind()
                                    == Some(rustls::HandshakeKind::Resumed)
                                {
                                    shared.lock().resumed_handshakes += 1;
                                }
                                serve_connection(tls, shared, config).await
                            }
                            Err(_) => {
                                shared.lock().tls_failures += 1;
                                shared.changed.notify_all();
                            }
                        }},
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// With [`Collector::refuse_resumption`]: when the connection's ClientHello
/// offers a session to resume (a TLS 1.3 `pre_shared_key` or a TLS 1.2
/// session ticket), answers with a fatal `internal_error` alert and closes
/// it, as Fluentd's TLS server does (Ruby OpenSSL without a session id
/// context: "session id context uninitialized", seen with 1.16.11 for
/// `in_http` and `in_forward`). True when the connection was refused so.
async fn refuses_resumption(stream: &tokio::net::TcpStream, shared: &Shared) -> bool {
    if !shared.lock().refuse_resumption {
        return false;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    let offered = loop {
        let Ok(n) = stream.peek(&mut buf).await else {
            return false;
        };
        match offers_resumption(&buf[..n]) {
            Some(offered) => break offered,
            None if n == 0 || Instant::now() >= deadline => return false,
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    if !offered {
        return false;
    }
    // A TLS 1.2-framed fatal alert: level 2, description 80 (internal_error).
    if stream.writable().await.is_ok() {
        let _ = stream.try_write(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50]);
    }
    let mut state = shared.lock();
    state.refused_resumptions += 1;
    state.tls_failures += 1;
    drop(state);
    shared.changed.notify_all();
    true
}

/// Whether the ClientHello at the start of `bytes` offers a session to
/// resume; None until its whole first record has arrived.
fn offers_resumption(bytes: &[u8]) -> Option<bool> {
    let u16_at = |b: &[u8], i: usize| -> Option<usize> {
        Some(usize::from(*b.get(i)?) << 8 | usize::from(*b.get(i + 1)?))
    };
    if bytes.len() < 5 {
        return None;
    }
    if bytes[0] != 22 {
        return Some(false);
    }
    let record = bytes.get(5..5 + u16_at(bytes, 3)?)?;
    let scan = || -> Option<bool> {
        // Handshake type 1 (ClientHello), 3-byte length, version, random.
        if *record.first()? != 1 {
            return Some(false);
        }
        let mut at = 4 + 2 + 32;
        at += 1 + usize::from(*record.get(at)?); // session id
        at += 2 + u16_at(record, at)?; // cipher suites
        at += 1 + usize::from(*record.get(at)?); // compression methods
        let end = at + 2 + u16_at(record, at)?;
        at += 2;
        while at + 4 <= end {
            let (kind, len) = (u16_at(record, at)?, u16_at(record, at + 2)?);
            // 41: pre_shared_key (TLS 1.3); 35: session_ticket (TLS 1.2), when not empty.
            if kind == 41 || (kind == 35 && len > 0) {
                return Some(true);
            }
            at += 4 + len;
        }
        Some(false)
    };
    Some(scan().unwrap_or(false))
}

async fn serve_connection<S>(stream: S, shared: Arc<Shared>, config: Arc<Config>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(config.keepalive_timeout);
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let config = Arc::clone(&config);
        async move {
            let mut response = handle(req, &shared, &config).await;
            if shared.lock().close_each {
                response
                    .headers_mut()
                    .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    // Errors (client went away, idle timeout, ...) just end the connection.
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// What the flavor itself makes of a request.
struct Verdict {
    status: u16,
    body: String,
    events: Vec<Vec<u8>>,
    violations: Vec<String>,
}

impl Verdict {
    fn ok(flavor: Flavor, events: Vec<Vec<u8>>, violations: Vec<String>) -> Verdict {
        Verdict {
            status: 200,
            body: match flavor {
                Flavor::Fluentd => String::new(),
                Flavor::Logstash => "ok".to_owned(),
            },
            events,
            violations,
        }
    }

    fn error(status: u16, body: String, violations: Vec<String>) -> Verdict {
        Verdict {
            status,
            body,
            events: Vec::new(),
            violations,
        }
    }
}

struct RequestInfo {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    arrived: Instant,
}

async fn handle(req: Request<Incoming>, shared: &Shared, config: &Config) -> Response<Full<Bytes>> {
    let arrived = Instant::now();
    let (parts, mut incoming) = req.into_parts();
    let info = RequestInfo {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        arrived,
    };

    // 1. Body size: Fluentd checks the declared size of `Expect:
    // 100-continue` requests and the running size of the body; Logstash its
    // `max_content_length`. Both answer 413 and close the connection. A
    // request waiting for `100 Continue` is answered at once (its body never
    // comes); any other body is read to its end first, so that it can be
    // checked for violations like any other.
    let declared =
        header_str(&parts.headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let over_declared = declared.is_some_and(|n| n > config.body_limit as u64);
    let expects_continue = header_str(&parts.headers, "expect")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    if over_declared && expects_continue {
        return too_large(shared, config, info, Vec::new());
    }
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    body.extend_from_slice(&data);
                }
            }
            // The client went away mid-body: nobody will read an answer.
            Err(_) => return plain(400, String::new()),
        }
    }

    // Fluentd in_http decodes gzip and deflate bodies (since 1.2.3); what
    // is recorded and checked is the decoded body.
    if config.flavor == Flavor::Fluentd {
        if let Some(decoded) = fluentd_decode(&parts.headers, &body) {
            body = decoded;
        }
    }
    // 5, decided now: the flavor's own handling, which also finds the
    // violations, whatever the answer turns out to be.
    let verdict = match config.flavor {
        Flavor::Fluentd => fluentd_verdict(&parts.method, &parts.headers, &body),
        Flavor::Logstash => logstash_verdict(&parts.method, &parts.headers, &body),
    };
    if over_declared || body.len() > config.body_limit {
        return too_large(shared, config, info, verdict.violations);
    }

    // 2. Logstash basic auth.
    if config.flavor == Flavor::Logstash {
        if let Some(expected) = &config.basic_auth {
            if !basic_auth_matches(&parts.headers, expected) {
                let mut response = plain(401, String::new());
                response.headers_mut().insert(
                    "www-authenticate",
                    HeaderValue::from_static("Basic realm=\"Logstash\""),
                );
                let mut state = shared.lock();
                let request = state.receive(&info, body, None, verdict.violations, false);
                state.answer(request, 401);
                drop(state);
                shared.changed.notify_all();
                return response;
            }
        }
    }

    // 3. Stalls: `set_hang`, else `hang_next`. Subscribing to releases under
    // the lock means a release that comes after the decision is never
    // missed; the hold is counted down even if this future is dropped
    // (connection closed).
    struct Unhold<'a>(&'a Shared);
    impl Drop for Unhold<'_> {
        fn drop(&mut self) {
            self.0.lock().held -= 1;
            self.0.changed.notify_all();
        }
    }
    let (stall, when) = {
        let mut state = shared.lock();
        let stall = if state.hang {
            Some(Stalled::Hang)
        } else if state.hold_next > 0 {
            state.hold_next -= 1;
            state.held += 1;
            Some(Stalled::Held(shared.release.subscribe()))
        } else {
            None
        };
        (stall, state.stall)
    };
    let _unhold = matches!(stall, Some(Stalled::Held(_))).then(|| Unhold(shared));
    if when == Stall::AfterRecording {
        let recorded = decide(shared, config, verdict).await;
        let request = {
            let mut state = shared.lock();
            let request = state.receive(
                &info,
                body,
                recorded.events,
                recorded.violations,
                stall.is_some(),
            );
            if stall.is_none() {
                state.answer(request, recorded.status);
            }
            request
        };
        shared.changed.notify_all();
        if let Some(stall) = stall {
            stall.wait().await;
            shared.lock().answer(request, recorded.status);
            shared.changed.notify_all();
        }
        return recorded.response;
    }
    // Stall::BeforeRecording: counted while it stalls, recorded after.
    let request = stall.as_ref().map(|_| {
        let request = shared
            .lock()
            .receive(&info, Vec::new(), None, Vec::new(), false);
        shared.changed.notify_all();
        request
    });
    if let Some(stall) = stall {
        stall.wait().await;
    }
    let recorded = decide(shared, config, verdict).await;
    let mut state = shared.lock();
    let request = match request {
        Some(request) => {
            state.record(&info, body, recorded.events, recorded.violations, false);
            request
        }
        None => state.receive(&info, body, recorded.events, recorded.violations, false),
    };
    state.answer(request, recorded.status);
    drop(state);
    shared.changed.notify_all();
    recorded.response
}

/// Why a request is not answered at once.
enum Stalled {
    /// [`Collector::set_hang`]: never answered.
    Hang,
    /// [`Collector::hang_next`]: answered after a [`Collector::release`].
    Held(tokio::sync::watch::Receiver<u64>),
}

impl Stalled {
    async fn wait(self) {
        match self {
            Stalled::Hang => std::future::pending::<()>().await,
            // The sender lives in `shared`, so this only returns on a release.
            Stalled::Held(mut release) => {
                let _ = release.changed().await;
            }
        }
    }
}

/// What steps 3c–5 make of a request.
struct Decided {
    status: u16,
    /// `Some` when the flavor accepts the body and the answer is a 2xx.
    events: Option<Vec<Vec<u8>>>,
    violations: Vec<String>,
    response: Response<Full<Bytes>>,
}

/// Steps 3c–5: the delay, then the injected faults, then the flavor's
/// verdict (already made, so that every body is checked).
async fn decide(shared: &Shared, config: &Config, verdict: Verdict) -> Decided {
    // 3c. A slow collector.
    let delay = shared.lock().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    // 4. Faults.
    let injected = {
        let mut state = shared.lock();
        if let Some((status, body)) = state.override_answer.clone() {
            Some(Injected {
                status,
                body,
                retry_after: None,
            })
        } else if let Some(next) = state.script.pop_front() {
            Some(next)
        } else if config.flavor == Flavor::Logstash && state.busy {
            Some(Injected {
                status: 429,
                body: "Too Many Requests".to_owned(),
                retry_after: None,
            })
        } else {
            None
        }
    };

    // 5. The flavor's own handling (already run, to check for violations).
    let accepted = is_success(verdict.status);
    let (status, answer, retry_after) = match injected {
        Some(inj) if !is_success(inj.status) || accepted => (inj.status, inj.body, inj.retry_after),
        _ => (verdict.status, verdict.body, None),
    };
    let events = (is_success(status) && accepted).then_some(verdict.events);
    let mut response = plain(status, answer);
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    Decided {
        status,
        events,
        violations: verdict.violations,
        response,
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

impl State {
    /// Counts a request that was received, records its batch when `events`
    /// is `Some` and the violations found in it; returns its number (an
    /// index into `exchanges`). `stalled`: it will not be answered now.
    fn receive(
        &mut self,
        info: &RequestInfo,
        body: Vec<u8>,
        events: Option<Vec<Vec<u8>>>,
        violations: Vec<String>,
        stalled: bool,
    ) -> usize {
        self.requests += 1;
        self.request_headers.push(info.headers.clone());
        self.exchanges.push(Exchange {
            arrived: info.arrived,
            answered: None,
        });
        let request = self.exchanges.len() - 1;
        self.record(info, body, events, violations, stalled);
        request
    }

    /// Records the batch of a counted request when `events` is `Some`, and
    /// the violations found in it.
    fn record(
        &mut self,
        info: &RequestInfo,
        body: Vec<u8>,
        events: Option<Vec<Vec<u8>>>,
        violations: Vec<String>,
        stalled: bool,
    ) {
        for v in violations {
            self.violations
                .push(format!("{} {}: {v}", info.method, info.path));
        }
        if let Some(events) = events {
            self.event_count += events.len();
            if !stalled {
                self.answered_events += events.len();
            }
            self.batches.push(Batch {
                method: info.method.clone(),
                path: info.path.clone(),
                query: info.query.clone(),
                headers: info.headers.clone(),
                body,
                events,
                stalled,
            });
        }
    }

    /// Notes the answer to a counted request.
    fn answer(&mut self, request: usize, status: u16) {
        self.statuses.push(status);
        self.exchanges[request].answered = Some((Instant::now(), status));
    }
}

fn too_large(
    shared: &Shared,
    config: &Config,
    info: RequestInfo,
    violations: Vec<String>,
) -> Response<Full<Bytes>> {
    let mut state = shared.lock();
    let request = state.receive(&info, Vec::new(), None, violations, false);
    state.answer(request, 413);
    drop(state);
    shared.changed.notify_all();
    let body = match config.flavor {
        Flavor::Fluentd => "Too large".to_owned(),
        Flavor::Logstash => String::new(),
    };
    let mut response = plain(413, body);
    response
        .headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    response
}

fn plain(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT);
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A `Content-Encoding` other than identity: the real collectors decode gzip
/// and deflate, but this emulator cannot (no decompressor available), so it
/// refuses them loudly instead of recording compressed bytes as events.
fn unsupported_encoding(headers: &HeaderMap) -> Option<String> {
    let encoding = header_str(headers, "content-encoding")?.trim();
    if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        return None;
    }
    Some(encoding.to_owned())
}

/// The encodings Fluentd `in_http` decodes (since 1.2.3).
fn fluentd_decodes(encoding: &str) -> bool {
    encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("deflate")
}

/// A gzip or deflate (zlib) body decoded as Fluentd does; `None` when the
/// body is not encoded, and an empty body (which fails as JSON, and is
/// recorded as a violation) when it does not decode.
fn fluentd_decode(headers: &HeaderMap, body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let encoding = unsupported_encoding(headers)?;
    let mut out = Vec::new();
    let ok = if encoding.eq_ignore_ascii_case("gzip") {
        flate2::read::MultiGzDecoder::new(body).read_to_end(&mut out)
    } else if encoding.eq_ignore_ascii_case("deflate") {
        flate2::read::ZlibDecoder::new(body).read_to_end(&mut out)
    } else {
        return None;
    };
    Some(if ok.is_ok() { out } else { Vec::new() })
}

/// Mirrors Fluentd v1 `in_http` (1.16.11):
/// - `GET` (and `HEAD`) → 200, nothing ingested;
/// - `Content-Encoding: gzip` or `deflate` is decoded first (any other
///   encoding: 400 here, and a violation);
/// - the content type is matched like `in_http` does (case-sensitive prefix):
///   `application/json` is parsed, `application/x-ndjson` split on `\r?\n`
///   with empty lines skipped, `application/msgpack` is accepted by the real
///   one but answered 400 here (emulator limitation); anything else → 400
///   `'json', 'ndjson' or 'msgpack' parameter is required` (the real body is
///   `400 Bad Request\n<message>\n`);
/// - a top-level array is one event per element, a single object one event;
///   an element (or top-level value) that is neither an object nor `null` →
///   400 (the real one fails on it, e.g. `[1,2]`); `null` is skipped;
/// - malformed JSON → 200 and silently dropped, like the real one — recorded
///   here as a violation, since tailhook must only ever send valid JSON;
///   a skipped `null` is a violation too (silently dropped data).
fn fluentd_verdict(method: &Method, headers: &HeaderMap, body: &[u8]) -> Verdict {
    const FLAVOR: Flavor = Flavor::Fluentd;
    if method == Method::GET || method == Method::HEAD {
        return Verdict::ok(FLAVOR, Vec::new(), Vec::new());
    }
    let bad_request = |msg: &str| format!("400 Bad Request\n{msg}\n");
    if let Some(encoding) = unsupported_encoding(headers).filter(|e| !fluentd_decodes(e)) {
        return Verdict::error(
            400,
            bad_request(&format!(
                "Content-Encoding {encoding} not supported by emulator"
            )),
            vec![format!(
                "Content-Encoding {encoding}: the emulator cannot decode it (real Fluentd accepts gzip and deflate)"
            )],
        );
    }
    let content_type = header_str(headers, "content-type")
        .unwrap_or("")
        .trim_start();
    if content_type.starts_with("application/msgpack") {
        return Verdict::error(
            400,
            bad_request("msgpack not supported by emulator"),
            Vec::new(),
        );
    }

    let values: Vec<&RawValue> = if content_type.starts_with("application/json") {
        match parse_json(body) {
            Ok(Parsed::Array(elements)) => elements,
            Ok(Parsed::Single(value)) => vec![value],
            Err(e) => {
                return Verdict::ok(
                    FLAVOR,
                    Vec::new(),
                    vec![format!(
                        "malformed JSON body (real Fluentd answers 200 and silently drops it): {e}; body: {}",
                        preview(body)
                    )],
                )
            }
        }
    } else if content_type.starts_with("application/x-ndjson") {
        let mut values = Vec::new();
        for line in body.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<&RawValue>(line) {
                Ok(value) => values.push(value),
                Err(e) => {
                    return Verdict::ok(
                        FLAVOR,
                        Vec::new(),
                        vec![format!(
                            "malformed NDJSON line (real Fluentd answers 200 and silently drops the body): {e}; line: {}",
                            preview(line)
                        )],
                    )
                }
            }
        }
        values
    } else {
        return Verdict::error(
            400,
            bad_request("'json', 'ndjson' or 'msgpack' parameter is required"),
            Vec::new(),
        );
    };

    let mut events = Vec::new();
    let mut violations = Vec::new();
    for value in values {
        match first_byte(value) {
            b'{' => events.push(value.get().as_bytes().to_vec()),
            b'n' => violations
                .push("null event: real Fluentd skips it silently (answers 200)".to_owned()),
            _ => {
                return Verdict::error(
                    400,
                    bad_request(&format!(
                        "event is not a JSON object: {}",
                        preview(value.get().as_bytes())
                    )),
                    Vec::new(),
                )
            }
        }
    }
    Verdict::ok(FLAVOR, events, violations)
}

/// Mirrors the Logstash `http` input (logstash-input-http 4.x) with default
/// `additional_codecs`: a body whose MIME type (parameters ignored) is
/// `application/json` goes to the json codec — a root array is one event per
/// element, an object one event — and is answered `200 ok`. The real one also
/// answers `200 ok` when the json codec fails (malformed JSON, or an element
/// that is not an object, become `_jsonparsefailure` events) and when another
/// content type sends the whole body to the plain codec as one event: the
/// emulator does the same but records those as violations (for a non-JSON
/// content type the whole body is recorded as one event). Empty bodies
/// (e.g. `GET`) ingest nothing.
fn logstash_verdict(method: &Method, headers: &HeaderMap, body: &[u8]) -> Verdict {
    const FLAVOR: Flavor = Flavor::Logstash;
    if body.is_empty() {
        let violations = if method == Method::GET || method == Method::HEAD {
            Vec::new()
        } else {
            vec!["empty body".to_owned()]
        };
        return Verdict::ok(FLAVOR, Vec::new(), violations);
    }
    if let Some(encoding) = unsupported_encoding(headers) {
        return Verdict::error(
            400,
            format!("Content-Encoding {encoding} not supported by emulator"),
            vec![format!(
                "Content-Encoding {encoding}: the emulator cannot decode it"
            )],
        );
    }
    let content_type = header_str(headers, "content-type").unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" {
        return Verdict::ok(
            FLAVOR,
            vec![body.to_vec()],
            vec![format!(
                "Content-Type {content_type:?} is not application/json: real Logstash uses the plain codec and makes the whole body one text event"
            )],
        );
    }
    let values = match parse_json(body) {
        Ok(Parsed::Array(elements)) => elements,
        Ok(Parsed::Single(value)) => vec![value],
        Err(e) => {
            return Verdict::ok(
                FLAVOR,
                Vec::new(),
                vec![format!(
                    "malformed JSON body (real Logstash answers 200 and makes a _jsonparsefailure event): {e}; body: {}",
                    preview(body)
                )],
            )
        }
    };
    let mut events = Vec::new();
    let mut violations = Vec::new();
    for value in values {
        if first_byte(value) == b'{' {
            events.push(value.get().as_bytes().to_vec());
        } else {
            violations.push(format!(
                "event is not a JSON object (real Logstash answers 200 and makes a _jsonparsefailure event): {}",
                preview(value.get().as_bytes())
            ));
        }
    }
    Verdict::ok(FLAVOR, events, violations)
}

enum Parsed<'a> {
    Array(Vec<&'a RawValue>),
    Single(&'a RawValue),
}

/// Parses `body` as one JSON value (valid UTF-8 required), borrowing the raw
/// bytes of a top-level array's elements.
fn parse_json(body: &[u8]) -> Result<Parsed<'_>, serde_json::Error> {
    let value: &RawValue = serde_json::from_slice(body)?;
    if first_byte(value) == b'[' {
        Ok(Parsed::Array(serde_json::from_str(value.get())?))
    } else {
        Ok(Parsed::Single(value))
    }
}

fn first_byte(value: &RawValue) -> u8 {
    value.get().as_bytes().first().copied().unwrap_or(0)
}

fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        format!("{text:?}... ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}

fn basic_auth_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = header_str(headers, "authorization") else {
        return false;
    };
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, token)) => scheme.eq_ignore_ascii_case("basic") && token.trim() == expected,
        None => false,
    }
}

/// Standard base64 with padding (for basic auth credentials).
pub fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(TABLE[(n >> 18) as usize & 63] as char);
        out.push(TABLE[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            TABLE[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            TABLE[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}
