//! The `http` input: a webhook receiver that takes exactly what the Wallarm
//! webhook integration sends (POST or PUT of a JSON array or one object)
//! and answers 2xx only once the events are synced into the spool, so one
//! tailhook can relay to another, or sit between the cloud and a collector.

use std::convert::Infallible;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{HttpInput, Input, SourceConfig};
use crate::rate_limit::RateLimit;
use crate::spool::{SpoolError, SpoolWriter};

/// What a sender is told to wait before it sends again while the spool is full.
const RETRY_AFTER_SECS: u64 = 5;

/// How long open connections get to finish their request at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

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
        let ctx = Arc::new(Ctx {
            source,
            config: self.config,
            writer,
            rejected_log: RateLimit::new(Duration::from_secs(60)),
        });
        let tasks = TaskTracker::new();
        // At most max_connections served at once: more wait in the listen
        // backlog, so slow or silent clients cannot take every descriptor.
        let slots = Arc::new(tokio::sync::Semaphore::new(ctx.config.max_connections));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
                _ = cancel.cancelled() => break,
            };
            let (stream, peer) = tokio::select! {
                a = self.listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(source = %ctx.source, "cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = cancel.cancelled() => break,
            };
            let (ctx, cancel, tls) = (ctx.clone(), cancel.clone(), self.tls.clone());
            tasks.spawn(async move {
                let _ = stream.set_nodelay(true);
                match tls {
                    None => serve_connection(stream, ctx, cancel).await,
                    Some(acceptor) => {
                        let peer = peer.to_string();
                        if let Some(s) =
                            super::tls::handshake(&acceptor, stream, &ctx.source, &peer).await
                        {
                            serve_connection(s, ctx, cancel).await;
                        }
                    }
                }
                drop(permit);
            });
        }
        // Closed now, so a reloaded input can listen on the same address.
        drop(self.listener);
        tasks.close();
        tasks
    }
}

async fn serve_connection<S>(stream: S, ctx: Arc<Ctx>, cancel: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(req, &ctx).await) }
    });
    let conn = server().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = cancel.cancelled() => {}
    }
    // Finish the request in progress, then close.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(DRAIN, conn).await;
}

/// How long a client has to send a request's headers (the first ones on a
/// connection, and each next one on a kept-alive connection) before it is
/// closed, so connections that never finish their headers do not pile up.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/1.1 server settings of every listener (the `http` input and
/// the metrics listener): a header read timeout, and hyper's bounds on the
/// head (at most 100 headers, a read buffer of about 400 KiB).
pub(crate) fn server() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    b
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

async fn handle(req: Request<Incoming>, ctx: &Ctx) -> Answer {
    let r = respond(req, ctx).await;
    ::metrics::counter!(
        crate::metrics::INPUT_HTTP_REQUESTS,
        "source" => ctx.source.clone(),
        "status" => r.status().as_u16().to_string()
    )
    .increment(1);
    if !r.status().is_success() && r.status() != StatusCode::SERVICE_UNAVAILABLE {
        if let Some(suppressed) = ctx.rejected_log.allow() {
            let why = r.extensions().get::<Reason>().map_or("", |w| w.0.as_str());
            tracing::warn!(source = %ctx.source, status = r.status().as_u16(), similar_since_last = suppressed, "rejected a webhook request: {why}");
        }
    }
    r
}

async fn respond(req: Request<Incoming>, ctx: &Ctx) -> Answer {
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
    let body = match Limited::new(req.into_body(), cfg.max_body_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large()
        }
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        }
    };
    let (lines, events) = match body_lines(&body, gzip, cfg.max_body_bytes) {
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
    fn token_comparison() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"abcd"));
    }
}
