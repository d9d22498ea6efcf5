//! The webhook client: timeouts, headers, TLS (configs from [`crate::tls`]),
//! and failures told in words a person can act on.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use crate::config::{DestinationConfig, Format, Proxy, Route};
use crate::tls;

use super::beats::{Beats, Window};
use super::forward::{Forward, Message};
use super::proxy::{ProxyError, ProxyFailure};

/// A destination that could not be set up (bad TLS files).
#[derive(Debug, thiserror::Error)]
#[error("destination `{destination}`: {message}")]
pub struct SetupError {
    destination: String,
    message: String,
}

impl SetupError {
    pub(crate) fn new(destination: &str, message: String) -> SetupError {
        SetupError {
            destination: destination.to_string(),
            message,
        }
    }
}

/// How a collector answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After`, when given.
    pub retry_after: Option<Duration>,
    /// The start of the body, for logs and `tailhook test`.
    pub body_start: String,
    /// Time from sending to the end of the answer.
    pub latency: Duration,
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// The host name did not resolve.
    Dns(String),
    /// Nothing listens on the port.
    Refused,
    /// No connection within `connect_timeout`.
    ConnectTimeout(Duration),
    /// No whole answer within `request_timeout`.
    Timeout(Duration),
    /// The TLS handshake failed.
    Tls(String),
    /// Any other connection or protocol failure.
    Other(String),
    /// A forward destination: no acknowledgement within `ack_timeout`.
    NoAck(Duration),
    /// A forward destination: an answer that is not the acknowledgement.
    Protocol(String),
    /// The HTTP proxy in front of the collector failed.
    Proxy(Box<ProxyError>),
    /// A forward destination: the `<security>` handshake failed (a wrong
    /// shared_key, user or server).
    Handshake(String),
    /// A forward destination with `shared_key`: no HELO within `connect_timeout`.
    NoHelo(Duration),
    /// A beats destination: the connection ended, or the answer broke the
    /// Lumberjack v2 protocol, before the window was acknowledged.
    Beats(String),
}

impl SendError {
    /// A short label for the failure kind (`connect`, `timeout`, `tls`).
    pub fn reason(&self) -> &'static str {
        match self {
            SendError::Dns(_)
            | SendError::Refused
            | SendError::Other(_)
            | SendError::Protocol(_)
            | SendError::Handshake(_)
            | SendError::Beats(_) => "connect",
            SendError::ConnectTimeout(_)
            | SendError::Timeout(_)
            | SendError::NoAck(_)
            | SendError::NoHelo(_) => "timeout",
            SendError::Tls(_) => "tls",
            SendError::Proxy(e) => e.reason(),
        }
    }
}

impl From<ProxyError> for SendError {
    fn from(e: ProxyError) -> SendError {
        SendError::Proxy(Box::new(e))
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Dns(host) => {
                write!(f, "DNS lookup failed: host `{host}` could not be resolved")
            }
            SendError::Refused => {
                f.write_str("connection refused: nothing is listening at that address and port")
            }
            SendError::ConnectTimeout(t) => write!(
                f,
                "connect timeout: no connection within {}",
                crate::config::humanize_duration(*t)
            ),
            SendError::Timeout(t) => write!(
                f,
                "request timeout: no answer within {}",
                crate::config::humanize_duration(*t)
            ),
            SendError::Tls(why) => write!(f, "TLS handshake failed: {why}"),
            SendError::Other(why) => write!(f, "request failed: {why}"),
            SendError::NoAck(t) => write!(
                f,
                "no acknowledgement within ack_timeout ({}): the batch goes again on a new connection",
                crate::config::humanize_duration(*t)
            ),
            SendError::Protocol(why) => write!(f, "forward protocol: {why}"),
            SendError::Proxy(e) => e.fmt(f),
            SendError::Handshake(why) => write!(f, "<security> handshake failed: {why}"),
            SendError::NoHelo(t) => write!(
                f,
                "<security> handshake failed: no HELO from the server within connect_timeout ({}): is <security> configured on in_forward? With shared_key set, tailhook waits for in_forward's HELO before it sends anything (remove shared_key if in_forward has no <security>; if it has <transport tls>, set transport = \"tls\")",
                crate::config::humanize_duration(*t)
            ),
            SendError::Beats(why) => write!(f, "beats protocol: {why}"),
        }
    }
}

/// Sends bodies to one collector.
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The url requests go to: `url` with `tls.server_name` as its host.
    request_url: reqwest::Url,
    /// `tls.server_name`, for the probe's handshake.
    server_name: Option<String>,
    method: reqwest::Method,
    headers: HeaderMap,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// For https: the TLS config, to complete a handshake when probing.
    probe_tls: Option<Arc<rustls::ClientConfig>>,
    /// For https: the TLS session cache (resumption, until the collector
    /// refuses it).
    sessions: Option<Arc<tls::Sessions>>,
    /// `compression = "gzip"`: bodies are gzipped on the way out.
    gzip: bool,
    /// Straight to the collector, or through a proxy.
    route: Box<Route>,
}

impl Webhook {
    /// Builds the client for a destination: reads its CA and client certificate files.
    pub fn new(cfg: &DestinationConfig) -> Result<Webhook, SetupError> {
        let err = |message: String| SetupError {
            destination: cfg.name.clone(),
            message,
        };
        let mut headers = HeaderMap::new();
        let content_type = match cfg.format {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        let gzip = cfg.compression == crate::config::Compression::Gzip;
        if gzip {
            headers.insert(
                reqwest::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        }
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| err(format!("header name `{k}` is not valid")))?;
            let mut value = HeaderValue::from_str(v)
                .map_err(|_| err(format!("the value of header `{k}` is not valid")))?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("tailhook/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .http1_only()
            .tcp_nodelay(true)
            // Below Fluentd's 10 s keep-alive, so a pooled connection is rarely one the server closed.
            .pool_idle_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(cfg.concurrency);
        // A plain-http destination never handshakes; giving it a config that
        // needs no roots keeps reqwest from loading its own.
        let (tls, probe_tls, sessions) = if cfg.url.scheme() == "https" {
            let mut tls = tls::client_config(cfg).map_err(err)?;
            let sessions = tls::Sessions::install(&mut tls);
            (tls.clone(), Some(Arc::new(tls)), Some(sessions))
        } else {
            (tls::unverified_client_config().map_err(err)?, None, None)
        };
        builder = builder.tls_backend_preconfigured(tls);
        // One decision, followed by the requests and the probe alike:
        // reqwest is told the proxy, or told to read no environment.
        let route =
            crate::config::route(&cfg.proxy, &cfg.url, |k| std::env::var(k).ok()).map_err(&err)?;
        builder = match &route {
            Route::Proxy(p) => builder.proxy(
                reqwest::Proxy::all(p.url.clone())
                    .map_err(|e| err(format!("proxy {}: {e}", p.address())))?,
            ),
            Route::Direct(_) => builder.no_proxy(),
        };
        // tls.server_name (a DNS name): the request goes to that name, so it
        // is what the certificate is checked against and what SNI carries,
        // while the connection goes where the url's host leads and the Host
        // header stays the url's. (An IP address is never sent as SNI; the
        // verifier checks it in place of the url's host.) Through a proxy the
        // tunnel must go to the url's host, which only the proxy resolves:
        // the url stays as it is, SNI carries its host, and the verifier
        // still checks tls.server_name.
        let mut request_url = cfg.url.clone();
        let direct = matches!(route, Route::Direct(_));
        if let (Some(name), "https", true) = (&cfg.server_name, cfg.url.scheme(), direct) {
            if name.parse::<std::net::IpAddr>().is_err() {
                let host = cfg.url.host_str().unwrap_or_default().to_string();
                let port = cfg.url.port_or_known_default().unwrap_or(443);
                if let Ok(authority) = HeaderValue::from_str(&authority(&cfg.url)) {
                    headers.entry(reqwest::header::HOST).or_insert(authority);
                }
                if request_url.set_host(Some(name)).is_ok() {
                    builder = builder.dns_resolver(Arc::new(ToHost { host, port }));
                } else {
                    request_url = cfg.url.clone();
                }
            }
        }
        let client = builder
            .build()
            .map_err(|e| err(format!("cannot build HTTP client: {e}")))?;
        let method = match cfg.method {
            crate::config::Method::Post => reqwest::Method::POST,
            crate::config::Method::Put => reqwest::Method::PUT,
        };
        Ok(Webhook {
            client,
            url: cfg.url.clone(),
            request_url,
            server_name: cfg.server_name.clone(),
            method,
            headers,
            connect_timeout: cfg.connect_timeout,
            request_timeout: cfg.request_timeout,
            probe_tls,
            sessions,
            gzip,
            route: Box::new(route),
        })
    }

    /// Where its connections go: straight to the collector or through a proxy.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The collector's host (as a URL holds it) and port.
    fn target(&self) -> (String, u16) {
        let host = self.url.host_str().unwrap_or_default().to_string();
        let port = self.url.port_or_known_default().unwrap_or(80);
        (host, port)
    }

    /// Opens a connection to the collector (TCP, and the TLS handshake for
    /// https) and closes it cleanly: evidence that it can be reached,
    /// without sending a request.
    pub async fn connect_probe(&self) -> Result<(), SendError> {
        match self.connect_probe_once().await {
            // As for a request: a collector that cannot resume sessions gets
            // a full handshake.
            Err(SendError::Tls(_))
                if self.sessions.as_ref().and_then(|s| s.refused()).is_some() =>
            {
                self.connect_probe_once().await
            }
            other => other,
        }
    }

    async fn connect_probe_once(&self) -> Result<(), SendError> {
        if let Route::Proxy(p) = &*self.route {
            return self.probe_through(p).await;
        }
        let (host, port) = self.target();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let attempt = async {
            let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|_| SendError::Dns(host.clone()))?
                .collect();
            let mut last = SendError::Dns(host.clone());
            for a in addrs {
                match tokio::net::TcpStream::connect(a).await {
                    Ok(stream) => {
                        let name = self.server_name.as_deref().unwrap_or(&host);
                        return self.probe_handshake(name, stream).await;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        last = SendError::Refused
                    }
                    Err(e) => last = SendError::Other(e.to_string()),
                }
            }
            Err(last)
        };
        tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .unwrap_or(Err(SendError::ConnectTimeout(self.connect_timeout)))
    }

    /// The probe through a proxy: for https, the tunnel (CONNECT) and the
    /// TLS handshake through it, as a request would make them; for http,
    /// which a proxy forwards request by request, a connection to the
    /// proxy is all that can be checked without sending one.
    async fn probe_through(&self, p: &Proxy) -> Result<(), SendError> {
        let (host, port) = self.target();
        let attempt = async {
            let stream = super::proxy::open(p).await?;
            if self.probe_tls.is_none() {
                return Ok(());
            }
            let stream = super::proxy::tunnel(stream, p, &host, port).await?;
            // SNI carries the url's host, as reqwest's tunnel sends it.
            let name = host.trim_start_matches('[').trim_end_matches(']');
            self.probe_handshake(name, stream).await
        };
        tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(SendError::from(ProxyError {
                    proxy: p.clone(),
                    failure: ProxyFailure::Timeout(self.connect_timeout),
                }))
            })
    }

    /// The TLS handshake on `stream` (nothing for http), `name` sent as SNI.
    async fn probe_handshake(
        &self,
        name: &str,
        stream: tokio::net::TcpStream,
    ) -> Result<(), SendError> {
        use tokio::io::AsyncWriteExt;
        let Some(tls) = &self.probe_tls else {
            return Ok(());
        };
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| SendError::Other(format!("bad host name `{name}`: {e}")))?;
        let mut conn = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(server_name, stream)
            .await
            .map_err(|e| {
                match e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    Some(tls) => self.tls_error(tls),
                    None => SendError::Tls(e.to_string()),
                }
            })?;
        let _ = conn.shutdown().await;
        Ok(())
    }

    /// A TLS failure in words; through a proxy, saying so, and that a proxy
    /// inspecting TLS shows a certificate of its own.
    fn tls_error(&self, e: &rustls::Error) -> SendError {
        let mut why = tls::describe(e);
        if let Route::Proxy(p) = &*self.route {
            why.push_str(&format!(" (through proxy {}", p.describe()));
            if matches!(e, rustls::Error::InvalidCertificate(_)) {
                why.push_str(": a proxy that inspects TLS presents a certificate of its own, whose CA would have to be in ca_file");
            }
            why.push(')');
        }
        SendError::Tls(why)
    }

    /// Sends one body (gzipped first with `compression = "gzip"`) with
    /// `X-Tailhook-Batch-Id: batch_id` and reads the whole answer.
    pub async fn send(&self, body: Bytes, batch_id: &str) -> Result<Answer, SendError> {
        let body = if self.gzip { gzip(&body) } else { body };
        let started = Instant::now();
        let mut headers = self.headers.clone();
        if let Ok(v) = HeaderValue::from_str(batch_id) {
            headers.insert(super::batch_id::HEADER, v);
        }
        let request = || {
            self.client
                .request(self.method.clone(), self.request_url.clone())
                .headers(headers.clone())
                .body(body.clone())
                .send()
        };
        let refused = |e: &SendError| match (e, &self.sessions) {
            (SendError::Tls(_), Some(s)) => s.refused(),
            _ => None,
        };
        let response = match request().await {
            Ok(r) => r,
            Err(e) => {
                let e = self.explain(self.classify(&e)).await;
                let Some(first) = refused(&e) else {
                    return Err(e);
                };
                if first {
                    tracing::info!(
                        url = %super::url_for_logs(&self.url),
                        "the collector refused to resume a TLS session ({e}); from now on every new connection to it makes a full handshake (Fluentd's TLS server cannot resume sessions)"
                    );
                }
                match request().await {
                    Ok(r) => r,
                    Err(e) => return Err(self.explain(self.classify(&e)).await),
                }
            }
        };
        if let Some(s) = &self.sessions {
            s.answered();
        }
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut response = response;
        let mut start = Vec::new();
        // Read the whole (small) answer so the connection can be reused; keep its start.
        let mut total = 0usize;
        loop {
            match response.chunk().await {
                Ok(Some(c)) => {
                    total += c.len();
                    if start.len() < 512 {
                        start.extend_from_slice(&c[..c.len().min(512 - start.len())]);
                    }
                    if total > 1 << 20 {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(SendError::Timeout(self.request_timeout)),
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&start);
        let body_start: String = text.chars().take(200).collect();
        Ok(Answer {
            status,
            retry_after,
            body_start: body_start.trim().to_string(),
            latency: started.elapsed(),
        })
    }

    /// A proxy's refusal of a tunnel, with the status reqwest does not
    /// keep: the proxy is asked again, once.
    async fn explain(&self, e: SendError) -> SendError {
        match (&e, &*self.route) {
            (SendError::Proxy(failed), Route::Proxy(p))
                if matches!(failed.failure, ProxyFailure::Refused { status: None, .. }) =>
            {
                let (host, port) = self.target();
                super::proxy::refusal(p, &host, port, self.connect_timeout)
                    .await
                    .map_or(e, SendError::from)
            }
            _ => e,
        }
    }

    fn classify(&self, e: &reqwest::Error) -> SendError {
        let Route::Proxy(p) = &*self.route else {
            return self.classify_direct(e);
        };
        let chain = chain(e);
        let (host, port) = self.target();
        if let Some(e) = super::proxy::tunnel_failure(&chain, p, &format!("{host}:{port}")) {
            return e.into();
        }
        // The only connection reqwest opens itself goes to the proxy (the
        // collector is the proxy's to reach).
        let failure = match self.classify_direct(e) {
            SendError::Refused => ProxyFailure::Unreachable(SendError::Refused.to_string()),
            SendError::Dns(_) => {
                ProxyFailure::Unreachable(SendError::Dns(p.host().to_string()).to_string())
            }
            SendError::ConnectTimeout(t) => ProxyFailure::Timeout(t),
            other => return other,
        };
        SendError::from(ProxyError {
            proxy: p.clone(),
            failure,
        })
    }

    fn classify_direct(&self, e: &reqwest::Error) -> SendError {
        let chain = chain(e);
        for c in &chain {
            if let Some(tls) = c.downcast_ref::<rustls::Error>() {
                return self.tls_error(tls);
            }
            // hyper-rustls may wrap the rustls error in more than one io::Error.
            let mut io = c.downcast_ref::<std::io::Error>();
            while let Some(e) = io {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    return SendError::Refused;
                }
                let inner = e.get_ref();
                if let Some(tls) = inner.and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    return self.tls_error(tls);
                }
                io = inner.and_then(|i| i.downcast_ref::<std::io::Error>());
            }
        }
        let text: Vec<String> = chain.iter().map(|c| c.to_string()).collect();
        let joined = text.join(": ");
        if joined.contains("dns error") || joined.contains("failed to lookup address") {
            return SendError::Dns(self.url.host_str().unwrap_or_default().to_string());
        }
        if e.is_timeout() {
            return if e.is_connect()
                || joined.contains("connect") && !joined.contains("operation timed out")
            {
                SendError::ConnectTimeout(self.connect_timeout)
            } else {
                SendError::Timeout(self.request_timeout)
            };
        }
        // The first message is reqwest's generic "error sending request for url (…)".
        let detail = if text.len() > 1 {
            text[1..].join(": ")
        } else {
            joined.clone()
        };
        // reqwest's messages may quote the URL: never with its password.
        let mut detail = crate::config::redact::mask_url_passwords(&detail);
        // Under TLS 1.3 a server that wants a client certificate refuses it
        // after the handshake: often all the client sees is the connection
        // going away before the request could be sent.
        if self.url.scheme() == "https"
            && (joined.contains("connection was not ready")
                || joined.contains("connection closed before message completed"))
        {
            detail.push_str(
                " (the collector closed the connection right after the TLS handshake: if it requires a client certificate, set client_cert_file and client_key_file)",
            );
        }
        SendError::Other(detail)
    }
}

/// An error and its sources, outermost first.
fn chain(e: &reqwest::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        chain.push(c);
        cur = c.source();
    }
    chain
}

/// The url's `host[:port]`, as a Host header holds it.
fn authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Resolves whatever name reqwest asks for (`tls.server_name`) to the
/// addresses of the url's host.
struct ToHost {
    host: String,
    port: u16,
}

impl reqwest::dns::Resolve for ToHost {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = self.port;
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// `Retry-After` as seconds or an HTTP date, capped at one hour.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let d = match v.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v.trim())
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(d.min(Duration::from_secs(3600)))
}

/// The client of a destination, chosen by its `type`.
pub enum Client {
    /// `type = "http"`: webhooks.
    Http(Webhook),
    /// `type = "forward"`: Fluentd Forward Protocol v1.
    Forward(Forward),
    /// `type = "beats"`: Lumberjack v2 (Logstash's `beats` input).
    Beats(Beats),
}

/// A batch as it goes on the wire, made once and sent again as it is.
pub enum Payload {
    /// A webhook body and its `X-Tailhook-Batch-Id`.
    Http(Bytes, String),
    /// A forward message (its chunk id inside).
    Forward(Message),
    /// A Lumberjack window.
    Beats(Window),
}

#[allow(clippy::len_without_is_empty)]
impl Payload {
    /// Its size in bytes (before HTTP gzip).
    pub fn len(&self) -> usize {
        match self {
            Payload::Http(b, _) => b.len(),
            Payload::Forward(m) => m.bytes.len(),
            Payload::Beats(w) => w.bytes.len(),
        }
    }
}

/// What came back for a payload.
#[derive(Debug)]
pub enum Reply {
    /// An HTTP answer, to judge by its status.
    Answer(Answer),
    /// A forward or beats destination acknowledged the batch after this long.
    Acked(Duration),
}

impl Client {
    /// The client of a destination (reads its TLS files).
    pub fn new(cfg: &DestinationConfig) -> Result<Client, SetupError> {
        if cfg.forward.is_some() {
            Forward::new(cfg).map(Client::Forward)
        } else if cfg.beats.is_some() {
            Beats::new(cfg).map(Client::Beats)
        } else {
            Webhook::new(cfg).map(Client::Http)
        }
    }

    /// Encodes a batch body (http: with its batch id; forward: with a new
    /// chunk id; beats: as one window).
    pub fn prepare(&self, body: &Bytes, format: Format, batch_id: &str) -> Payload {
        match self {
            Client::Http(_) => Payload::Http(body.clone(), batch_id.to_string()),
            Client::Forward(f) => Payload::Forward(f.encode(body, format)),
            Client::Beats(b) => Payload::Beats(b.encode(body, format)),
        }
    }

    /// Sends a payload prepared by this client.
    pub async fn send(&self, payload: &Payload) -> Result<Reply, SendError> {
        match (self, payload) {
            (Client::Http(w), Payload::Http(b, id)) => {
                w.send(b.clone(), id).await.map(Reply::Answer)
            }
            (Client::Forward(f), Payload::Forward(m)) => f.send(m).await.map(Reply::Acked),
            (Client::Beats(b), Payload::Beats(w)) => b.send(w).await.map(Reply::Acked),
            _ => Err(SendError::Other(
                "a payload prepared by another client".into(),
            )),
        }
    }

    /// Through which proxy, if any, an HTTP client connects (None: forward
    /// and beats).
    pub fn route(&self) -> Option<&Route> {
        match self {
            Client::Http(w) => Some(w.route()),
            Client::Forward(_) | Client::Beats(_) => None,
        }
    }

    /// Connects (and disconnects): the collector can be reached.
    pub async fn connect_probe(&self) -> Result<(), SendError> {
        match self {
            Client::Http(w) => w.connect_probe().await,
            Client::Forward(f) => f.connect_probe().await,
            Client::Beats(b) => b.connect_probe().await,
        }
    }
}

/// A gzip stream of `body` (level 6: most of the gain, little of the cost).
pub(crate) fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::new(6),
    );
    // Writing to a Vec cannot fail.
    enc.write_all(body).expect("gzip into memory");
    Bytes::from(enc.finish().expect("gzip into memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("999999"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
