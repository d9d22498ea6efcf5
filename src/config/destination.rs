//! `[[destination]]` blocks: where events go and how (method, headers,
//! TLS, timeouts, batches, retries, format), mirroring `source.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use super::delivery::{
    validate_dead_letter, validate_status_policy, write_status_policy, RawDeadLetter,
};
use super::endpoints::{forward_addresses, http_urls, write_addresses, write_urls};
use super::proxy::{validate_proxy, write_proxy, ProxySetting};
use super::units::{humanize_duration, Dur, Size};
use super::{
    secs, valid_name, DeadLetterConfig, Problems, SourceConfig, StatusMatch, StatusPolicy,
};
use crate::event::Selection;

/// The HTTP method of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// POST (the default).
    Post,
    /// PUT.
    Put,
}

impl Method {
    /// `POST` or `PUT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// The body format of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON array, `application/json`.
    Json,
    /// One event a line, `application/x-ndjson`.
    Ndjson,
}

/// How a request body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// As built.
    None,
    /// gzip, with `Content-Encoding: gzip` (Fluentd `in_http` decodes it since 1.2.3).
    Gzip,
    /// zlib: a `type = "beats"` window in one Lumberjack v2 compressed frame.
    Zlib,
}

impl Compression {
    /// `none`, `gzip` or `zlib`, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zlib => "zlib",
        }
    }
}

/// A `type = "forward"` destination: Fluentd Forward Protocol v1.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// `host:port` of Fluentd's `in_forward` (or Fluent Bit's `forward` input).
    pub address: String,
    /// Every `host:port` (`addresses`, or `address` alone); `address` is the first.
    pub addresses: Vec<String>,
    /// The Fluentd tag of every event.
    pub tag: String,
    /// The event field holding the event's time in Unix seconds (None: the
    /// time the batch is first sent).
    pub time_key: Option<String>,
    /// How long to wait for `{"ack": chunk}` before sending the batch again
    /// on a new connection.
    pub ack_timeout: Duration,
    /// `transport = "tls"` (`<transport tls>` on the Fluentd side), with the destination's
    /// `ca_file`, `verify_certificate` and client certificate.
    pub tls: bool,
    /// `shared_key` and the rest of `in_forward`'s `<security>` handshake
    /// (None: no handshake).
    pub security: Option<ForwardSecurity>,
}

/// The client side of `in_forward`'s `<security>` handshake (HELO, PING,
/// PONG) on every new connection.
#[derive(Clone, PartialEq)]
pub struct ForwardSecurity {
    /// The `shared_key` of `in_forward`'s `<security>`.
    pub shared_key: String,
    /// The name tailhook gives in its PING (Fluentd refuses a server whose
    /// own `self_hostname` is the same).
    pub self_hostname: String,
    /// For `<security>` with `user_auth true`: a `<user>`'s name, or "".
    pub username: String,
    /// That user's password, or "".
    pub password: String,
}

impl std::fmt::Debug for ForwardSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardSecurity")
            .field("shared_key", &"<redacted>")
            .field("self_hostname", &self.self_hostname)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A `type = "beats"` destination: Lumberjack v2, the protocol of
/// Logstash's `beats` input.
#[derive(Debug, Clone, PartialEq)]
pub struct BeatsConfig {
    /// `host:port` of the `beats` input.
    pub address: String,
    /// How long to wait for the next acknowledgement frame (the final one, a
    /// partial one or a keep-alive) before sending the window again on a
    /// new connection.
    pub ack_timeout: Duration,
    /// `transport = "tls"` (`ssl_enabled => true` on the Logstash side), with
    /// the destination's `ca_file`, `verify_certificate` and client
    /// certificate.
    pub tls: bool,
}

/// The batch bounds of a destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchConfig {
    /// Most events in one request.
    pub max_events: usize,
    /// Most bytes in one body (one larger event goes alone).
    pub max_bytes: usize,
    /// How long the first event of a batch waits for more.
    pub timeout: Duration,
}

/// The retry backoff of a destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// The first backoff ceiling.
    pub initial: Duration,
    /// The largest backoff ceiling.
    pub max: Duration,
}

/// One `[[destination]]` block.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationConfig {
    /// Its name: checkpoint and dead-letter files are named after it.
    pub name: String,
    /// The webhook URL; for a forward destination `tcp://` and its address,
    /// for a beats one `tcp://` or `tls://` and its address, for logs. With
    /// several endpoints, the first.
    pub url: reqwest::Url,
    /// Every endpoint in config order (`urls`, or `url` alone; for a
    /// forward destination `tcp://` and each address): see [`Self::endpoint`].
    pub urls: Vec<reqwest::Url>,
    /// `type = "forward"`: its settings (None: an HTTP webhook or beats).
    pub forward: Option<ForwardConfig>,
    /// `type = "beats"`: its settings (None: an HTTP webhook or forward).
    pub beats: Option<BeatsConfig>,
    /// POST or PUT.
    pub method: Method,
    /// Extra request headers, values already expanded.
    pub headers: Vec<(String, String)>,
    /// A PEM file of CA certificates trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// False turns certificate verification off.
    pub verify_certificate: bool,
    /// A PEM client certificate for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    /// The key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// `tls.server_name`: the name the certificate must hold, and sent as
    /// SNI, instead of the url's host (an IP address or an alias).
    pub server_name: Option<String>,
    /// `proxy`: the HTTP proxy to go through, none, or the environment's.
    pub proxy: ProxySetting,
    /// Time allowed for one request, from sending to the whole answer.
    pub request_timeout: Duration,
    /// Time allowed to open a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// The kinds it receives.
    pub events: Selection,
    /// The `events` list as written, for `check` (None: all).
    pub events_list: Option<Vec<String>>,
    /// Indexes into [`Config::sources`](super::Config::sources) of the sources it reads.
    pub sources: Vec<usize>,
    /// Requests in flight.
    pub concurrency: usize,
    /// Batch bounds.
    pub batch: BatchConfig,
    /// Retry backoff.
    pub retry: RetryConfig,
    /// Body format (a beats destination's batches are NDJSON: each becomes
    /// a window).
    pub format: Format,
    /// Body encoding on the wire.
    pub compression: Compression,
    /// Which answers are retried and which are dead-lettered.
    pub status_policy: StatusPolicy,
    /// The bound on its dead-letter file.
    pub dead_letter: DeadLetterConfig,
}

impl DestinationConfig {
    /// An HTTP webhook (not `type = "forward"` or `type = "beats"`).
    pub fn is_http(&self) -> bool {
        self.forward.is_none() && self.beats.is_none()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestination {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    urls: Option<Spanned<Vec<Spanned<String>>>>,
    address: Option<Spanned<String>>,
    addresses: Option<Spanned<Vec<Spanned<String>>>>,
    tag: Option<Spanned<String>>,
    time_key: Option<Spanned<String>>,
    ack_timeout: Option<Spanned<Dur>>,
    transport: Option<Spanned<String>>,
    shared_key: Option<Spanned<String>>,
    self_hostname: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    #[serde(default)]
    method: RawMethod,
    headers: Option<Spanned<BTreeMap<String, String>>>,
    ca_file: Option<PathBuf>,
    verify_certificate: Option<bool>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    #[serde(default)]
    tls: RawDestinationTls,
    proxy: Option<Spanned<String>>,
    request_timeout: Option<Dur>,
    #[serde(default = "secs::<20>")]
    connect_timeout: Dur,
    events: Option<Spanned<Vec<String>>>,
    sources: Option<Spanned<Vec<String>>>,
    #[serde(default = "two")]
    concurrency: Positive,
    #[serde(default)]
    batch: RawBatch,
    #[serde(default)]
    retry: RawRetry,
    format: Option<Format>,
    #[serde(default = "no_compression")]
    compression: Compression,
    retry_on: Option<Spanned<Vec<StatusMatch>>>,
    dead_letter_on: Option<Spanned<Vec<StatusMatch>>>,
    #[serde(default)]
    dead_letter: RawDeadLetter,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDestinationTls {
    server_name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    #[serde(default = "five_hundred")]
    max_events: Positive,
    #[serde(default = "mib::<1>")]
    max_bytes: Size,
    #[serde(default = "secs::<1>")]
    timeout: Dur,
}

impl Default for RawBatch {
    fn default() -> Self {
        RawBatch {
            max_events: five_hundred(),
            max_bytes: mib::<1>(),
            timeout: secs::<1>(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default = "secs::<1>")]
    initial: Dur,
    #[serde(default = "secs::<60>")]
    max: Dur,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            initial: secs::<1>(),
            max: secs::<60>(),
        }
    }
}

fn mib<const N: u64>() -> Size {
    Size(N << 20)
}
fn no_compression() -> Compression {
    Compression::None
}
fn two() -> Positive {
    Positive(2)
}
fn five_hundred() -> Positive {
    Positive(500)
}

/// `POST` or `PUT`, in any case.
#[derive(Default, Clone, Copy)]
struct RawMethod(Option<Method>);

impl<'de> Deserialize<'de> for RawMethod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_uppercase().as_str() {
            "POST" => Ok(RawMethod(Some(Method::Post))),
            "PUT" => Ok(RawMethod(Some(Method::Put))),
            _ => Err(de::Error::custom(format!(
                "method `{s}` is not supported; expected POST or PUT"
            ))),
        }
    }
}

/// An integer of at least 1.
#[derive(Clone, Copy)]
struct Positive(usize);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if n < 1 {
            return Err(de::Error::custom(format!("must be at least 1, not {n}")));
        }
        Ok(Positive(n as usize))
    }
}

/// Who takes `address`, `ack_timeout` and `transport`, for error messages.
const BOTH: &str = "`type = \"forward\"` and `type = \"beats\"`";
/// Who takes `tag` and `time_key`.
const FORWARD: &str = "`type = \"forward\"`";

/// Checks every `[[destination]]` block against the sources it names.
pub(super) fn validate_destinations(
    raw: Vec<RawDestination>,
    sources: &[SourceConfig],
    p: &mut Problems<'_>,
) -> Vec<DestinationConfig> {
    let mut destinations: Vec<DestinationConfig> = Vec::new();
    for d in raw {
        let name = d.name.get_ref().clone();
        if !valid_name(&name) {
            p.at(
                d.name.span(),
                format!("destination name `{name}` must be 1-64 letters, digits, `_`, `-` or `.`"),
            );
        }
        if destinations.iter().any(|x| x.name == name) {
            p.at(
                d.name.span(),
                format!("destination name `{name}` is used twice"),
            );
        }
        let kind = d.kind.as_ref().map(|k| k.get_ref().as_str());
        let mut beats = None;
        let forward = match kind {
            None | Some("http") => {
                for (key, given, types) in [
                    ("address", d.address.as_ref().map(|x| x.span()), BOTH),
                    ("addresses", d.addresses.as_ref().map(|x| x.span()), FORWARD),
                    ("tag", d.tag.as_ref().map(|x| x.span()), FORWARD),
                    ("time_key", d.time_key.as_ref().map(|x| x.span()), FORWARD),
                    (
                        "ack_timeout",
                        d.ack_timeout.as_ref().map(|x| x.span()),
                        BOTH,
                    ),
                    ("transport", d.transport.as_ref().map(|x| x.span()), BOTH),
                    (
                        "shared_key",
                        d.shared_key.as_ref().map(|x| x.span()),
                        FORWARD,
                    ),
                    (
                        "self_hostname",
                        d.self_hostname.as_ref().map(|x| x.span()),
                        FORWARD,
                    ),
                    ("username", d.username.as_ref().map(|x| x.span()), FORWARD),
                    ("password", d.password.as_ref().map(|x| x.span()), FORWARD),
                ] {
                    if let Some(span) = given {
                        p.at(
                            span,
                            format!("destination `{name}`: `{key}` is a setting of {types} destinations; an HTTP destination takes `url`"),
                        );
                    }
                }
                None
            }
            Some("forward") => Some(validate_forward(&name, &d, p)),
            Some("beats") => {
                beats = Some(validate_beats(&name, &d, p));
                None
            }
            Some(other) => {
                let span = d.kind.as_ref().map_or(d.name.span(), |k| k.span());
                p.at(
                    span,
                    format!("destination `{name}`: type `{other}` is not supported; expected \"http\" (the default), \"forward\" or \"beats\""),
                );
                None
            }
        };
        match (kind, d.compression) {
            (Some("beats"), Compression::Gzip) => p.at(
                d.name.span(),
                format!("destination `{name}`: compression \"gzip\" is for HTTP and forward destinations; a `type = \"beats\"` destination takes \"zlib\" (Lumberjack compressed frames) or \"none\""),
            ),
            (Some("beats"), _) | (_, Compression::None | Compression::Gzip) => {}
            (_, Compression::Zlib) => p.at(
                d.name.span(),
                format!("destination `{name}`: compression \"zlib\" is for `type = \"beats\"` destinations; HTTP and forward destinations take \"gzip\" or \"none\""),
            ),
        }
        let urls = match (&forward, &beats) {
            (Some(f), _) => f
                .addresses
                .iter()
                .map(|a| {
                    reqwest::Url::parse(&format!("tcp://{a}")).unwrap_or_else(|_| {
                        reqwest::Url::parse("tcp://invalid.invalid:24224").expect("static url")
                    })
                })
                .collect(),
            // An unknown type is reported as such, not as a missing url.
            (None, None)
                if d.url.is_none()
                    && d.urls.is_none()
                    && d.kind.as_ref().is_some_and(|k| k.get_ref() != "http") =>
            {
                vec![reqwest::Url::parse("http://invalid.invalid/").expect("static url")]
            }
            (None, Some(b)) => {
                let scheme = if b.tls { "tls" } else { "tcp" };
                vec![
                    reqwest::Url::parse(&format!("{scheme}://{}", b.address)).unwrap_or_else(
                        |_| reqwest::Url::parse("tcp://invalid.invalid:5044").expect("static url"),
                    ),
                ]
            }
            (None, None) => http_urls(&name, d.url.as_ref(), d.urls.as_ref(), d.name.span(), p),
        };
        let url = urls[0].clone();
        let mut headers = Vec::new();
        let empty = Spanned::new(0..0, BTreeMap::new());
        let raw_headers = d.headers.as_ref().unwrap_or(&empty);
        for (k, v) in raw_headers.get_ref() {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                p.at(
                    raw_headers.span(),
                    format!("header name `{k}` is not a valid HTTP header name"),
                );
            } else if reqwest::header::HeaderValue::from_str(v).is_err() {
                p.at(
                    raw_headers.span(),
                    format!(
                        "the value of header `{k}` holds characters not allowed in HTTP headers"
                    ),
                );
            } else if k.eq_ignore_ascii_case("content-type")
                || k.eq_ignore_ascii_case("content-length")
            {
                p.at(
                    raw_headers.span(),
                    format!(
                        "header `{k}` is set by tailhook from `format` and cannot be overridden"
                    ),
                );
            }
            headers.push((k.clone(), v.clone()));
        }
        let (events, events_list) = match &d.events {
            None => (Selection::all(), None),
            Some(list) => match Selection::parse(list.get_ref()) {
                Ok(sel) => (sel, Some(list.get_ref().clone())),
                Err(e) => {
                    p.at(list.span(), e);
                    (Selection::all(), None)
                }
            },
        };
        let source_idx = match &d.sources {
            None => (0..sources.len()).collect(),
            Some(names) => {
                let mut idx = Vec::new();
                for n in names.get_ref() {
                    match sources.iter().position(|s| &s.name == n) {
                        Some(i) => idx.push(i),
                        None => p.at(names.span(), format!("no source is named `{n}`")),
                    }
                }
                idx
            }
        };
        if d.client_cert_file.is_some() != d.client_key_file.is_some() {
            p.at(
                d.name.span(),
                format!("destination `{name}`: client_cert_file and client_key_file go together"),
            );
        }
        let server_name = d.tls.server_name.map(|n| {
            let text = n.get_ref().trim_start_matches('[').trim_end_matches(']');
            if rustls::pki_types::ServerName::try_from(text).is_err() {
                p.at(
                    n.span(),
                    format!(
                        "destination `{name}`: tls.server_name `{}` is neither a DNS name nor an IP address",
                        n.get_ref()
                    ),
                );
            }
            text.to_string()
        });
        let proxy = match forward {
            Some(_) => ProxySetting::Never,
            None => validate_proxy(&name, d.proxy.as_ref(), p),
        };
        let request_timeout = d.request_timeout.unwrap_or(secs::<15>());
        for (what, t) in [
            ("request_timeout", request_timeout.0),
            ("connect_timeout", d.connect_timeout.0),
            ("batch.timeout", d.batch.timeout.0),
            ("retry.initial", d.retry.initial.0),
            ("retry.max", d.retry.max.0),
        ] {
            if t.is_zero() {
                p.at(
                    d.name.span(),
                    format!("destination `{name}`: {what} must be more than 0"),
                );
            }
        }
        if d.retry.initial.0 > d.retry.max.0 {
            p.at(
                d.name.span(),
                format!("destination `{name}`: retry.initial is larger than retry.max"),
            );
        }
        if d.batch.max_bytes.0 < 2 {
            p.at(
                d.name.span(),
                format!("destination `{name}`: batch.max_bytes must be at least 2 bytes"),
            );
        }
        let status_policy = validate_status_policy(&name, d.retry_on, d.dead_letter_on, p);
        let dead_letter = validate_dead_letter(&name, d.dead_letter, p);
        destinations.push(DestinationConfig {
            name,
            url,
            urls,
            forward,
            beats,
            method: d.method.0.unwrap_or(Method::Post),
            headers,
            ca_file: d.ca_file,
            verify_certificate: d.verify_certificate.unwrap_or(true),
            client_cert_file: d.client_cert_file,
            client_key_file: d.client_key_file,
            server_name,
            proxy,
            request_timeout: request_timeout.0,
            connect_timeout: d.connect_timeout.0,
            events,
            events_list,
            sources: source_idx,
            concurrency: d.concurrency.0,
            batch: BatchConfig {
                max_events: d.batch.max_events.0,
                max_bytes: d.batch.max_bytes.0.min(usize::MAX as u64) as usize,
                timeout: d.batch.timeout.0,
            },
            retry: RetryConfig {
                initial: d.retry.initial.0,
                max: d.retry.max.0,
            },
            // A beats window is made from the batch's events again: one a
            // line (events never hold a raw newline) splits at memchr speed,
            // where a JSON array would be parsed whole.
            format: if kind == Some("beats") {
                Format::Ndjson
            } else {
                d.format.unwrap_or(Format::Json)
            },
            compression: d.compression,
            status_policy,
            dead_letter,
        });
    }
    destinations
}

/// The settings of a `type = "forward"` destination; HTTP-only settings
/// given to one are errors.
fn validate_forward(name: &str, d: &RawDestination, p: &mut Problems<'_>) -> ForwardConfig {
    let span = d.kind.as_ref().map_or(d.name.span(), |k| k.span());
    let http_only = [
        ("url", d.url.is_some()),
        ("urls", d.urls.is_some()),
        ("method", d.method.0.is_some()),
        ("headers", d.headers.is_some()),
        ("format", d.format.is_some()),
        ("request_timeout", d.request_timeout.is_some()),
        ("retry_on", d.retry_on.is_some()),
        ("dead_letter_on", d.dead_letter_on.is_some()),
        ("tls.server_name", d.tls.server_name.is_some()),
    ];
    for (key, given) in http_only {
        if given {
            p.at(
                span.clone(),
                format!("destination `{name}`: `{key}` is a setting of HTTP destinations; a `type = \"forward\"` destination takes `address` and `tag` (and `ack_timeout` instead of `request_timeout`)"),
            );
        }
    }
    if let Some(proxy) = &d.proxy {
        p.at(
            proxy.span(),
            format!("destination `{name}`: `proxy` is a setting of HTTP destinations; a `type = \"forward\"` destination connects straight to in_forward over TCP or TLS, which an HTTP proxy does not carry"),
        );
    }
    let tls = match &d.transport {
        None => false,
        Some(t) => match t.get_ref().as_str() {
            "tcp" => false,
            "tls" => true,
            other => {
                p.at(
                    t.span(),
                    format!("destination `{name}`: transport `{other}` is not supported; expected \"tcp\" (the default) or \"tls\""),
                );
                false
            }
        },
    };
    let tls_files = [
        ("ca_file", d.ca_file.is_some()),
        ("verify_certificate", d.verify_certificate.is_some()),
        ("client_cert_file", d.client_cert_file.is_some()),
        ("client_key_file", d.client_key_file.is_some()),
    ];
    for (key, given) in tls_files {
        if given && !tls {
            p.at(
                span.clone(),
                format!("destination `{name}`: `{key}` is a TLS setting, but this forward destination has no `transport = \"tls\"`"),
            );
        }
    }
    let addresses = forward_addresses(
        name,
        d.address.as_ref(),
        d.addresses.as_ref(),
        span.clone(),
        p,
    );
    let tag = match &d.tag {
        Some(t) if !t.get_ref().trim().is_empty() => t.get_ref().clone(),
        Some(t) => {
            p.at(
                t.span(),
                format!("destination `{name}`: `tag` must not be empty"),
            );
            String::new()
        }
        None => {
            p.at(
                span.clone(),
                format!("destination `{name}` of type \"forward\" needs `tag` (e.g. \"wallarm.events\"): Fluentd routes events by it"),
            );
            String::new()
        }
    };
    let time_key = match &d.time_key {
        Some(k) if k.get_ref().is_empty() => {
            p.at(
                k.span(),
                format!("destination `{name}`: `time_key` must not be empty"),
            );
            None
        }
        k => k.as_ref().map(|k| k.get_ref().clone()),
    };
    let ack_timeout = d
        .ack_timeout
        .as_ref()
        .map_or(Duration::from_secs(60), |t| t.get_ref().0);
    if ack_timeout.is_zero() {
        p.at(
            d.ack_timeout.as_ref().map_or(span, |t| t.span()),
            format!("destination `{name}`: ack_timeout must be more than 0"),
        );
    }
    let security = validate_security(name, d, p);
    ForwardConfig {
        address: addresses[0].clone(),
        addresses,
        tag,
        time_key,
        ack_timeout,
        tls,
        security,
    }
}

/// `shared_key`, `self_hostname`, `username` and `password`: the
/// `<security>` handshake, which needs `shared_key`.
fn validate_security(
    name: &str,
    d: &RawDestination,
    p: &mut Problems<'_>,
) -> Option<ForwardSecurity> {
    let Some(key) = &d.shared_key else {
        for (setting, given) in [
            ("self_hostname", &d.self_hostname),
            ("username", &d.username),
            ("password", &d.password),
        ] {
            if let Some(v) = given {
                p.at(
                    v.span(),
                    format!("destination `{name}`: `{setting}` belongs to in_forward's <security> handshake, which needs `shared_key` (the shared_key of in_forward's <security>)"),
                );
            }
        }
        return None;
    };
    if key.get_ref().is_empty() {
        p.at(
            key.span(),
            format!("destination `{name}`: `shared_key` must not be empty: set it to the shared_key of in_forward's <security> (e.g. shared_key = \"${{FLUENTD_SHARED_KEY}}\")"),
        );
    }
    let self_hostname = match &d.self_hostname {
        Some(h) => {
            let text = h.get_ref().trim();
            if text.is_empty() {
                p.at(
                    h.span(),
                    format!("destination `{name}`: `self_hostname` must not be empty (leave it out for this machine's host name)"),
                );
            }
            text.to_string()
        }
        None => match host_name() {
            Some(h) => h,
            None => {
                p.at(
                    key.span(),
                    format!("destination `{name}`: this machine's host name cannot be read; set `self_hostname` (the name tailhook gives in_forward's <security> handshake)"),
                );
                String::new()
            }
        },
    };
    let username = d.username.as_ref().map(|u| u.get_ref().clone());
    let password = d.password.as_ref().map(|x| x.get_ref().clone());
    match (&d.username, &d.password) {
        (Some(u), None) => p.at(
            u.span(),
            format!("destination `{name}`: `username` needs `password` (a <user> of in_forward's <security> has both)"),
        ),
        (None, Some(pw)) => p.at(
            pw.span(),
            format!("destination `{name}`: `password` needs `username` (a <user> of in_forward's <security> has both)"),
        ),
        (Some(u), Some(_)) if u.get_ref().is_empty() => p.at(
            u.span(),
            format!("destination `{name}`: `username` must not be empty (leave out username and password when in_forward has no user_auth)"),
        ),
        (Some(_), Some(pw)) if pw.get_ref().is_empty() => p.at(
            pw.span(),
            format!("destination `{name}`: `password` must not be empty (is its environment variable set?)"),
        ),
        _ => {}
    }
    Some(ForwardSecurity {
        shared_key: key.get_ref().clone(),
        self_hostname,
        username: username.unwrap_or_default(),
        password: password.unwrap_or_default(),
    })
}

/// This machine's host name, as Fluentd's `Socket.gethostname` gives it.
fn host_name() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?;
    let name = name.into_string().ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The settings of a `type = "beats"` destination; HTTP-only and
/// forward-only settings given to one are errors.
fn validate_beats(name: &str, d: &RawDestination, p: &mut Problems<'_>) -> BeatsConfig {
    let span = d.kind.as_ref().map_or(d.name.span(), |k| k.span());
    let elsewhere = [
        ("url", d.url.is_some(), "HTTP"),
        ("method", d.method.0.is_some(), "HTTP"),
        ("headers", d.headers.is_some(), "HTTP"),
        ("format", d.format.is_some(), "HTTP"),
        ("request_timeout", d.request_timeout.is_some(), "HTTP"),
        ("retry_on", d.retry_on.is_some(), "HTTP"),
        ("dead_letter_on", d.dead_letter_on.is_some(), "HTTP"),
        ("tls.server_name", d.tls.server_name.is_some(), "HTTP"),
        ("urls", d.urls.is_some(), "HTTP"),
        ("proxy", d.proxy.is_some(), "HTTP"),
        ("tag", d.tag.is_some(), "`type = \"forward\"`"),
        ("time_key", d.time_key.is_some(), "`type = \"forward\"`"),
        ("addresses", d.addresses.is_some(), "`type = \"forward\"`"),
        ("shared_key", d.shared_key.is_some(), "`type = \"forward\"`"),
        (
            "self_hostname",
            d.self_hostname.is_some(),
            "`type = \"forward\"`",
        ),
        ("username", d.username.is_some(), "`type = \"forward\"`"),
        ("password", d.password.is_some(), "`type = \"forward\"`"),
    ];
    for (key, given, owner) in elsewhere {
        if given {
            p.at(
                span.clone(),
                format!("destination `{name}`: `{key}` is a setting of {owner} destinations; a `type = \"beats\"` destination takes `address` (and `ack_timeout` instead of `request_timeout`); Logstash's beats input takes each event as it is"),
            );
        }
    }
    let tls = match d.transport.as_ref() {
        None => false,
        Some(t) if t.get_ref() == "tcp" => false,
        Some(t) if t.get_ref() == "tls" => true,
        Some(t) => {
            p.at(
                t.span(),
                format!("destination `{name}`: transport `{}` is not supported; expected \"tcp\" (the default) or \"tls\" (for a beats input with ssl_enabled => true)", t.get_ref()),
            );
            false
        }
    };
    if !tls {
        for (key, given) in [
            ("ca_file", d.ca_file.is_some()),
            ("verify_certificate", d.verify_certificate.is_some()),
            ("client_cert_file", d.client_cert_file.is_some()),
            ("client_key_file", d.client_key_file.is_some()),
        ] {
            if given {
                p.at(
                    span.clone(),
                    format!("destination `{name}`: `{key}` is a TLS setting, but this beats destination has no `transport = \"tls\"`"),
                );
            }
        }
    }
    let address = match &d.address {
        Some(a) => {
            let text = a.get_ref().trim();
            if !is_host_port(text) {
                p.at(
                    a.span(),
                    format!("destination `{name}`: address `{text}` must be host:port (e.g. \"logstash:5044\" or \"[::1]:5044\")"),
                );
            }
            text.to_string()
        }
        None => {
            p.at(
                span.clone(),
                format!("destination `{name}` of type \"beats\" needs `address = \"host:port\"` (the port of Logstash's beats input, 5044 in Elastic's examples)"),
            );
            String::new()
        }
    };
    let ack_timeout = d
        .ack_timeout
        .as_ref()
        .map_or(Duration::from_secs(60), |t| t.get_ref().0);
    if ack_timeout.is_zero() {
        p.at(
            d.ack_timeout.as_ref().map_or(span, |t| t.span()),
            format!("destination `{name}`: ack_timeout must be more than 0"),
        );
    }
    BeatsConfig {
        address,
        ack_timeout,
        tls,
    }
}

/// `host:port` with a host and a port other than 0 (`[::1]:5044` for IPv6).
fn is_host_port(text: &str) -> bool {
    reqwest::Url::parse(&format!("tcp://{text}")).is_ok_and(|u| {
        u.host_str().is_some_and(|h| !h.is_empty())
            && u.port().is_some_and(|port| port != 0)
            && u.path().is_empty()
            && u.username().is_empty()
    })
}

/// Writes one `[[destination]]` block of the resolved config (see
/// [`super::Config::to_redacted_toml`]).
pub(super) fn write_destination(o: &mut String, dst: &DestinationConfig, sources: &[SourceConfig]) {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let d = |d: Duration| q(&humanize_duration(d));
    let _ = writeln!(o, "\n[[destination]]\nname = {}", q(&dst.name));
    if let Some(f) = &dst.forward {
        write_forward(o, dst, f, sources);
        return;
    }
    if let Some(b) = &dst.beats {
        write_beats(o, dst, b, sources);
        return;
    }
    let _ = writeln!(o, "type = \"http\"");
    write_urls(o, dst);
    let _ = writeln!(o, "method = \"{}\"", dst.method.as_str());
    let headers: Vec<String> = dst
        .headers
        .iter()
        .map(|(k, _)| format!("{} = \"<redacted>\"", q(k)))
        .collect();
    let _ = writeln!(o, "headers = {{ {} }}", headers.join(", "));
    write_proxy(o, &dst.proxy, &dst.url);
    write_tls(o, dst);
    let _ = writeln!(o, "request_timeout = {}", d(dst.request_timeout));
    let _ = writeln!(o, "connect_timeout = {}", d(dst.connect_timeout));
    write_common(o, dst, sources);
}

/// What HTTP and forward destinations share: events, sources, batches,
/// retries, dead letters (and the HTTP body settings).
fn write_common(o: &mut String, dst: &DestinationConfig, sources: &[SourceConfig]) {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let d = |d: Duration| q(&humanize_duration(d));
    match &dst.events_list {
        None => {
            let _ = writeln!(o, "# events: every kind");
        }
        Some(list) => {
            let items: Vec<String> = list.iter().map(|x| q(x)).collect();
            let _ = writeln!(o, "events = [{}]", items.join(", "));
        }
    }
    let names: Vec<String> = dst.sources.iter().map(|&i| q(&sources[i].name)).collect();
    let _ = writeln!(o, "sources = [{}]", names.join(", "));
    let _ = writeln!(o, "concurrency = {}", dst.concurrency);
    if dst.is_http() {
        let fmt = match dst.format {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
        };
        let _ = writeln!(o, "format = \"{fmt}\"");
    }
    let _ = writeln!(o, "compression = \"{}\"", dst.compression.as_str());
    if dst.is_http() {
        write_status_policy(o, &dst.status_policy);
    }
    if let Some(n) = &dst.server_name {
        let _ = writeln!(o, "\n[destination.tls]");
        let _ = writeln!(o, "server_name = {}", q(n));
    }
    let _ = writeln!(o, "\n[destination.batch]");
    let _ = writeln!(o, "max_events = {}", dst.batch.max_events);
    let _ = writeln!(o, "max_bytes = {}", dst.batch.max_bytes);
    let _ = writeln!(o, "timeout = {}", d(dst.batch.timeout));
    let _ = writeln!(o, "\n[destination.retry]");
    let _ = writeln!(o, "initial = {}", d(dst.retry.initial));
    let _ = writeln!(o, "max = {}", d(dst.retry.max));
    let _ = writeln!(o, "\n[destination.dead_letter]");
    let _ = writeln!(o, "max_bytes = {}", dst.dead_letter.max_bytes);
}

/// `ca_file`, `verify_certificate` and the client certificate.
fn write_tls(o: &mut String, dst: &DestinationConfig) {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    if let Some(ca) = &dst.ca_file {
        let _ = writeln!(o, "ca_file = {}", q(&ca.to_string_lossy()));
    }
    let _ = writeln!(o, "verify_certificate = {}", dst.verify_certificate);
    if let Some(c) = &dst.client_cert_file {
        let _ = writeln!(o, "client_cert_file = {}", q(&c.to_string_lossy()));
    }
    if let Some(k) = &dst.client_key_file {
        let _ = writeln!(o, "client_key_file = {}", q(&k.to_string_lossy()));
    }
}

/// The rest of a `type = "forward"` block.
fn write_forward(
    o: &mut String,
    dst: &DestinationConfig,
    f: &ForwardConfig,
    sources: &[SourceConfig],
) {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let d = |d: Duration| q(&humanize_duration(d));
    let _ = writeln!(o, "type = \"forward\"");
    write_addresses(o, &f.addresses);
    let _ = writeln!(o, "tag = {}", q(&f.tag));
    match &f.time_key {
        Some(k) => {
            let _ = writeln!(o, "time_key = {}", q(k));
        }
        None => {
            let _ = writeln!(
                o,
                "# time_key: none (events get the time they are first sent)"
            );
        }
    }
    let _ = writeln!(o, "ack_timeout = {}", d(f.ack_timeout));
    let transport = if f.tls { "tls" } else { "tcp" };
    let _ = writeln!(o, "transport = \"{transport}\"");
    if f.tls {
        write_tls(o, dst);
    }
    match &f.security {
        Some(s) => {
            let _ = writeln!(o, "shared_key = \"<redacted>\"");
            let _ = writeln!(o, "self_hostname = {}", q(&s.self_hostname));
            if !s.username.is_empty() {
                let _ = writeln!(o, "username = {}", q(&s.username));
                let _ = writeln!(o, "password = \"<redacted>\"");
            }
        }
        None => {
            let _ = writeln!(o, "# shared_key: none (no <security> handshake)");
        }
    }
    let _ = writeln!(o, "connect_timeout = {}", d(dst.connect_timeout));
    write_common(o, dst, sources);
}

/// The rest of a `type = "beats"` block.
fn write_beats(o: &mut String, dst: &DestinationConfig, b: &BeatsConfig, sources: &[SourceConfig]) {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let d = |d: Duration| q(&humanize_duration(d));
    let _ = writeln!(o, "type = \"beats\"");
    let _ = writeln!(o, "address = {}", q(&b.address));
    let _ = writeln!(o, "ack_timeout = {}", d(b.ack_timeout));
    let _ = writeln!(o, "transport = \"{}\"", if b.tls { "tls" } else { "tcp" });
    if b.tls {
        write_tls(o, dst);
    }
    let _ = writeln!(o, "connect_timeout = {}", d(dst.connect_timeout));
    write_common(o, dst, sources);
}
