//! The `http` input: a webhook receiver that takes exactly what the Wallarm
//! webhook integration sends (POST or PUT of a JSON array or one object)
//! and answers 2xx only once the events are synced into the spool, so one
//! tailhook can relay to another, or sit between the cloud and a collector.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::listen::{self, HttpLimits, Listener, Report, Serve, Timeout};
use crate::config::{humanize_duration, HttpInput, Input, SourceConfig};
use crate::rate_limit::RateLimit;
use crate::spool::{SpoolError, SpoolWriter};

/// What a sender is told to wait before it sends again while the spool is full.
const RETRY_AFTER_SECS: u64 = 5;

/// A bound `http` input, ready to run.
pub struct HttpSource {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    config: HttpInput,
}

struct Ctx {
    source: String,
    config: HttpInput,
    writer: SpoolWriter,
    rejected_log: RateLimit,
    report: Arc<Report>,
}

type Answer = Response<Full<Bytes>>;

impl HttpSource {
    /// Binds the listener of an `http` source (None for other types), so a
    /// port in use or a bad certificate fails the start in words.
    pub async fn bind(src: &SourceConfig) -> anyhow::Result<Option<HttpSource>> {
        let Input::Http(config) = &src.input else {
            return Ok(None);
        };
        let tls = config
            .tls
            .as_ref()
            .map(|t| crate::tls::acceptor(&src.name, t, true))
            .transpose()?;
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            anyhow::anyhow!(
                "source `{}`: cannot listen on {}: {e}",
                src.name,
                config.listen
            )
        })?;
        tracing::info!(source = %src.name, address = %listener.local_addr()?, tls = tls.is_some(), "http input listening");
        Ok(Some(HttpSource {
            listener,
            tls,
            config: config.clone(),
        }))
    }

    /// Serves until `cancel` fires, then closes the listener and returns
    /// the connections still open: they finish the request in progress
    /// (for at most 5 s) and close.
    pub async fn run(
        self,
        source: String,
        writer: SpoolWriter,
        cancel: CancellationToken,
    ) -> TaskTracker {
        let report = Report::input(&source);
        let limits = limits(&self.config);
        let how = Serve {
            report: report.clone(),
            max_connections: self.config.max_connections,
            // A TLS client has as long for its handshake as for its headers.
            tls: self.tls.map(|t| (t, limits.header_timeout)),
            take_queued_unless: None,
        };
        let ctx = Arc::new(Ctx {
            source,
            config: self.config,
            writer,
            rejected_log: RateLimit::new(Duration::from_secs(60)),
            report,
        });
        let stop = cancel.clone();
        listen::serve(
            Listener::Tcp(self.listener),
            how,
            &stop,
            move |conn, peer| {
                let (ctx, cancel) = (ctx.clone(), cancel.clone());
                async move {
                    let answer = {
                        let (ctx, peer) = (ctx.clone(), peer.clone());
                        move |req| {
                            let (ctx, peer) = (ctx.clone(), peer.clone());
                            async move { handle(req, &ctx, &peer).await }
                        }
                    };
                    listen::serve_http(conn, &peer, limits, &ctx.report, &cancel, answer).await;
                }
            },
        )
        .await
    }
}

/// The HTTP limits of an `http` input's connections.
fn limits(config: &HttpInput) -> HttpLimits {
    HttpLimits {
        header_timeout: config.header_timeout,
        keepalive_timeout: config.keepalive_timeout,
        max_header_bytes: config.max_header_bytes,
    }
}

/// Why a request was refused, kept beside the answer for the log.
#[derive(Clone)]
struct Reason(String);

fn answer(status: StatusCode, text: impl Into<String>) -> Answer {
    let text = text.into();
    let body = if text.is_empty() {
        Bytes::new()
    } else {
        Bytes::from(format!("{text}\n"))
    };
    let mut r = Response::new(Full::new(body));
    r.extensions_mut().insert(Reason(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(req: Request<Incoming>, ctx: &Ctx, peer: &str) -> Answer {
    let r = respond(req, ctx, peer).await;
    ::metrics::counter!(
        crate::metrics::INPUT_HTTP_REQUESTS,
        "source" => ctx.source.clone(),
        "status" => r.status().as_u16().to_string()
    )
    .increment(1);
    // A full spool is logged by the spool, a slow body as a cut connection.
    if !r.status().is_success()
        && r.status() != StatusCode::SERVICE_UNAVAILABLE
        && r.status() != StatusCode::REQUEST_TIMEOUT
    {
        if let Some(suppressed) = ctx.rejected_log.allow() {
            let why = r.extensions().get::<Reason>().map_or("", |w| w.0.as_str());
            tracing::warn!(source = %ctx.source, status = r.status().as_u16(), similar_since_last = suppressed, "rejected a webhook request: {why}");
        }
    }
    r
}

async fn respond(req: Request<Incoming>, ctx: &Ctx, peer: &str) -> Answer {
    let cfg = &ctx.config;
    if let Some(path) = &cfg.path {
        if req.uri().path() != path {
            return answer(
                StatusCode::NOT_FOUND,
                format!("no webhook here: send to {path}"),
            );
        }
    }
    if req.method() != Method::POST && req.method() != Method::PUT {
        let mut r = answer(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} is not accepted: send POST or PUT", req.method()),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST, PUT"));
        return r;
    }
    if let Some((header, value)) = &cfg.auth {
        let given = req.headers().get(header.as_str()).map(|v| v.as_bytes());
        if !given.is_some_and(|g| same_bytes(g, value.as_bytes())) {
            return answer(
                StatusCode::UNAUTHORIZED,
                format!("missing or wrong {header} header"),
            );
        }
    }
    let too_large = || {
        answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is over max_body_bytes ({} bytes)", cfg.max_body_bytes),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.max_body_bytes as u64) {
        return too_large();
    }
    let gzip = match req.headers().get(CONTENT_ENCODING).map(|v| v.to_str()) {
        None => false,
        Some(Ok(e)) if e.eq_ignore_ascii_case("identity") => false,
        Some(Ok(e)) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => true,
        Some(other) => {
            return answer(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Encoding {} is not supported: send gzip or no encoding",
                    other.unwrap_or("(not text)")
                ),
            )
        }
    };
    let body = match read_body(req.into_body(), declared, cfg).await {
        Ok(b) => b,
        Err(BodyRead::TooLarge) => return too_large(),
        Err(BodyRead::Bad(e)) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        }
        Err(BodyRead::Slow { received, after }) => {
            let why = format!(
                "the request body arrived too slowly: {received} bytes in {} (body_timeout {}, min_body_rate {} bytes/s)",
                humanize_duration(after),
                humanize_duration(cfg.body_timeout),
                cfg.min_body_rate
            );
            ctx.report.cut(
                peer,
                Timeout::Body,
                format_args!("closed a connection: {why}"),
            );
            let mut r = answer(StatusCode::REQUEST_TIMEOUT, why);
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    let parsed = body_lines(&body, gzip, cfg.max_body_bytes);
    // Only the lines are kept while they are written.
    drop(body);
    let (lines, events) = match parsed {
        Ok(x) => x,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Bad(why)) => return answer(StatusCode::BAD_REQUEST, why),
    };
    match ctx.writer.append_durable(lines.into()).await {
        Ok(()) => {
            tracing::debug!(source = %ctx.source, events, "webhook request spooled");
            answer(StatusCode::OK, "")
        }
        Err(e) => {
            let mut r = answer(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            if matches!(e, SpoolError::Full { .. }) {
                ctx.writer
                    .spool()
                    .log_full("webhook requests are answered 503");
            } else {
                // The spool writer logs when it cannot write, and again
                // when it can: not once per request.
                tracing::debug!(source = %ctx.source, "answered 503: {e}");
            }
            r
        }
    }
}

/// Why a body was not read whole.
enum BodyRead {
    /// Over `max_body_bytes` (413).
    TooLarge,
    /// The connection failed or the framing was wrong (400).
    Bad(String),
    /// Slower than `body_timeout` and `min_body_rate` allow (408, closed).
    Slow {
        /// Bytes received.
        received: u64,
        /// Time since the body started.
        after: Duration,
    },
}

/// Reads a request body whole, at most `max_body_bytes` of it (memory is
/// reserved as it arrives, up to the declared length), within the pace
/// that `body_timeout` and `min_body_rate` set (see [`body_deadline`]).
async fn read_body(
    mut body: Incoming,
    declared: Option<u64>,
    cfg: &HttpInput,
) -> Result<Vec<u8>, BodyRead> {
    let max = cfg.max_body_bytes;
    let mut out = Vec::new();
    let start = Instant::now();
    let mut last = start;
    // One timer for the body, moved on as bytes arrive.
    let deadline = tokio::time::sleep_until(start + cfg.body_timeout);
    tokio::pin!(deadline);
    loop {
        deadline.as_mut().reset(body_deadline(
            start,
            last,
            out.len() as u64,
            cfg.body_timeout,
            cfg.min_body_rate,
        ));
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = deadline.as_mut() => {
                return Err(BodyRead::Slow { received: out.len() as u64, after: start.elapsed() });
            }
        };
        let data = match frame {
            None => return Ok(out),
            Some(Err(e)) => return Err(BodyRead::Bad(e.to_string())),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
        };
        if out.len() + data.len() > max {
            return Err(BodyRead::TooLarge);
        }
        if out.is_empty() {
            // The declared length, once its first bytes have come (a
            // length alone reserves nothing).
            out.reserve_exact(declared.map_or(0, |n| n.min(max as u64) as usize));
        }
        if !data.is_empty() {
            last = Instant::now();
        }
        out.extend_from_slice(&data);
    }
}

/// When a body that started at `start`, last received bytes at `last` and
/// has `received` bytes must have received more: `body_timeout` after the
/// last bytes (the longest silence, as nginx's `client_body_timeout`), and
/// no later than the time it would have taken at `min_body_rate` after a
/// first `body_timeout` (a minimum average rate, as Apache's
/// `mod_reqtimeout`), so a client sending a byte a second is cut too.
pub(crate) fn body_deadline(
    start: Instant,
    last: Instant,
    received: u64,
    body_timeout: Duration,
    min_body_rate: u64,
) -> Instant {
    let earned = Duration::from_secs_f64(received as f64 / min_body_rate.max(1) as f64);
    (last + body_timeout).min(start + body_timeout + earned)
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell a guesser how much of a token was right.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Why a webhook body was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Over `max_body_bytes` once decompressed (413).
    TooLarge,
    /// Not gzip, not JSON, or not objects (400), in words.
    Bad(String),
}

/// A received body (gzip-compressed when `gzip`) as spool lines, one
/// event a line, and the number of events.
pub fn body_lines(
    body: &[u8],
    gzip: bool,
    max_body_bytes: usize,
) -> Result<(Vec<u8>, usize), BodyError> {
    if !gzip {
        return spool_lines(body).map_err(BodyError::Bad);
    }
    let mut out = Vec::new();
    let read = flate2::read::MultiGzDecoder::new(body)
        .take(max_body_bytes as u64 + 1)
        .read_to_end(&mut out);
    match read {
        Ok(n) if n > max_body_bytes => Err(BodyError::TooLarge),
        Ok(_) => spool_lines(&out).map_err(BodyError::Bad),
        Err(e) => Err(BodyError::Bad(format!("body is not valid gzip: {e}"))),
    }
}

/// Turns a webhook body (one object, or an array of objects) into spool
/// lines, one event a line, and counts the events. Newlines between JSON
/// tokens become spaces; JSON strings cannot hold raw newlines, so the
/// event's content is unchanged.
fn spool_lines(body: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let text =
        std::str::from_utf8(body).map_err(|e| format!("body is not valid UTF-8 JSON: {e}"))?;
    let not_json = |e: serde_json::Error| format!("body is not valid JSON: {e}");
    // One parse: the first byte says whether it is an array or one object.
    let first = text.trim_start_matches([' ', '\t', '\r', '\n']);
    let elements: Vec<&RawValue> = match first.as_bytes().first() {
        Some(b'[') => serde_json::from_str(text).map_err(not_json)?,
        Some(b'{') => vec![serde_json::from_str(text).map_err(not_json)?],
        _ => {
            let value: &RawValue = serde_json::from_str(text).map_err(not_json)?;
            return Err(format!(
                "body must be a JSON object or an array of objects, not {}",
                json_kind(value.get())
            ));
        }
    };
    let mut out = Vec::with_capacity(body.len() + elements.len());
    for (i, e) in elements.iter().enumerate() {
        let raw = e.get().as_bytes();
        if raw.first() != Some(&b'{') {
            return Err(format!(
                "element {} of the array is {}, not a JSON object",
                i + 1,
                json_kind(e.get())
            ));
        }
        // Copy whole runs; only a line break between tokens is replaced.
        let mut rest = raw;
        while let Some(at) = memchr::memchr2(b'\n', b'\r', rest) {
            out.extend_from_slice(&rest[..at]);
            out.push(b' ');
            rest = &rest[at + 1..];
        }
        out.extend_from_slice(rest);
        out.push(b'\n');
    }
    Ok((out, elements.len()))
}

fn json_kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_one_event_a_line() {
        let (l, n) = spool_lines(b"[{\"a\":1},\n {\"b\":\n 2}]").unwrap();
        assert_eq!(
            (String::from_utf8(l).unwrap().as_str(), n),
            ("{\"a\":1}\n{\"b\":  2}\n", 2)
        );
        let (l, n) = spool_lines(b" {\"x\":\"a\\nb\"}\r\n").unwrap();
        assert_eq!((l, n), (b"{\"x\":\"a\\nb\"}\n".to_vec(), 1));
        assert_eq!(spool_lines(b"[]").unwrap().1, 0);
    }

    #[test]
    fn bad_bodies_say_why() {
        let e = spool_lines(b"{\"a\":").unwrap_err();
        assert!(e.starts_with("body is not valid JSON: EOF"), "{e}");
        let e = spool_lines(b"[{}, 3]").unwrap_err();
        assert_eq!(e, "element 2 of the array is a number, not a JSON object");
        let e = spool_lines(b"\"hi\"").unwrap_err();
        assert_eq!(
            e,
            "body must be a JSON object or an array of objects, not a string"
        );
        assert!(spool_lines(b"\xff").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn a_body_must_keep_arriving_at_the_minimum_rate() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let deadline =
            |last: u64, received: u64| body_deadline(t0, t0 + s(last), received, s(10), 1024) - t0;
        // Nothing yet: body_timeout from the start.
        assert_eq!(deadline(0, 0), s(10));
        // A byte a second: 9 bytes at 9 s earn 9/1024 s; cut just after 10 s.
        assert!(deadline(9, 9) < Duration::from_millis(10_010));
        // Fast, then silent: body_timeout after the last bytes.
        assert_eq!(deadline(1, 1 << 20), s(11));
        // 2 KiB/s for 20 s earns 40 s beyond the first 10 s; silence
        // still ends it 10 s after the last bytes.
        assert_eq!(deadline(20, 40 << 10), s(30));
        assert_eq!(deadline(45, 40 << 10), s(50));
    }

    #[test]
    fn token_comparison() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"abcd"));
    }
}
