//! `[[source]]` blocks: one raw struct for every input type, checked so that
//! each type takes only its own settings, and the `[spool]` table.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::units::{humanize_duration, Dur, Size};
use super::{valid_name, OnInvalid, Problems, ReadFrom};

/// One `[[source]]` block.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Its name, used in logs, in a destination's `sources` and for its spool.
    pub name: String,
    /// The longest line taken as an event.
    pub max_line_bytes: usize,
    /// What to do with a line that is not an event.
    pub on_invalid: OnInvalid,
    /// What it reads.
    pub input: Input,
}

/// What a source reads, with the settings of its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Files matched by glob patterns (`type = "file"`).
    File(FileInput),
    /// Newline-delimited JSON over TCP, optionally TLS (`type = "tcp"`).
    Tcp {
        /// The address to listen on.
        listen: SocketAddr,
        /// TLS, when set.
        tls: Option<ServerTls>,
        /// Connections served at once; more wait to be accepted.
        max_connections: usize,
        /// A connection silent this long is closed.
        idle_timeout: Duration,
    },
    /// Newline-delimited JSON over a Unix stream socket (`type = "unix"`).
    Unix {
        /// The socket file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Connections served at once; more wait to be accepted.
        max_connections: usize,
        /// A connection silent this long is closed.
        idle_timeout: Duration,
    },
    /// Datagrams of one or more lines (`type = "udp"`).
    Udp {
        /// The address to listen on.
        listen: SocketAddr,
    },
    /// A webhook receiver (`type = "http"`).
    Http(HttpInput),
    /// Lines from standard input (`type = "stdin"`).
    Stdin,
}

/// The settings of a `file` source.
#[derive(Debug, Clone, PartialEq)]
pub struct FileInput {
    /// Glob patterns of files to tail.
    pub include: Vec<String>,
    /// Glob patterns of files to leave alone.
    pub exclude: Vec<String>,
    /// Where to start in files present at the first start.
    pub read_from: ReadFrom,
    /// How often to look for new, rotated and grown files without a notification.
    pub poll_interval: Duration,
    /// How long a file renamed out of the globs or deleted is kept open and
    /// read after it last grew (its writer may still be finishing lines).
    pub rotate_wait: Duration,
    /// How long a file read to its end may go without growing before it is
    /// closed (it is reopened, by identity, when it grows).
    pub close_inactive: Duration,
}

/// The default `rotate_wait`: as long as Filebeat keeps a rotated file open.
pub const DEFAULT_ROTATE_WAIT: Duration = Duration::from_secs(300);

/// The default `idle_timeout` of `tcp` and `unix` connections.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The default `close_inactive`: as Filebeat's `close.on_state_change.inactive`.
pub const DEFAULT_CLOSE_INACTIVE: Duration = Duration::from_secs(300);

/// The settings of an `http` source.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpInput {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The only path accepted, when set (any path otherwise).
    pub path: Option<String>,
    /// A header every request must carry, and its value.
    pub auth: Option<(String, String)>,
    /// TLS, when set.
    pub tls: Option<ServerTls>,
    /// The largest body accepted, after decompression.
    pub max_body_bytes: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client has to send a request's headers, from the
    /// connection's start or from the first byte of a next request.
    pub header_timeout: Duration,
    /// The longest a request body may go without a byte arriving, and the
    /// grace before `min_body_rate` applies.
    pub body_timeout: Duration,
    /// Bytes per second a body must arrive at, on average, once
    /// `body_timeout` has passed since it started.
    pub min_body_rate: u64,
    /// How long a kept-alive connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// The largest request head (request line and headers).
    pub max_header_bytes: usize,
}

/// The default `header_timeout` of an `http` input (the metrics listener's too).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The default `body_timeout` of an `http` input.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The default `min_body_rate` of an `http` input, in bytes per second.
pub const DEFAULT_MIN_BODY_RATE: u64 = 1024;

/// The default `keepalive_timeout` of an `http` input.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default `max_header_bytes` of an `http` input (the metrics listener's too).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 << 10;

/// The certificate a TLS listener presents, and optionally the CA its
/// clients' certificates must be signed by.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTls {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM CA certificates: when set, a client must present a certificate they signed.
    pub client_ca_file: Option<PathBuf>,
}

impl SourceConfig {
    /// The type name as written in the config.
    pub fn type_name(&self) -> &'static str {
        match self.input {
            Input::File(_) => "file",
            Input::Tcp { .. } => "tcp",
            Input::Unix { .. } => "unix",
            Input::Udp { .. } => "udp",
            Input::Http(_) => "http",
            Input::Stdin => "stdin",
        }
    }

    /// True for inputs that are written to the spool before pipelines read them.
    pub fn is_spooled(&self) -> bool {
        !matches!(self.input, Input::File(_))
    }
}

/// The `[spool]` table: where socket, HTTP and stdin input waits for every
/// destination, bounded on disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpoolConfig {
    /// The most bytes the spool holds before senders are slowed.
    pub max_bytes: u64,
}

impl SpoolConfig {
    /// The size at which a segment is closed and a new one started: small
    /// enough that delivered segments can be deleted well before the spool
    /// is full.
    pub fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(64 << 10, 64 << 20)
    }
}

// ---- raw --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpool {
    #[serde(default = "gib1")]
    max_bytes: Spanned<Size>,
}

impl Default for RawSpool {
    fn default() -> Self {
        RawSpool { max_bytes: gib1() }
    }
}

fn gib1() -> Spanned<Size> {
    Spanned::new(0..0, Size(1 << 30))
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SourceType {
    File,
    Tcp,
    Unix,
    Udp,
    Http,
    Stdin,
}

/// Every setting of every source type: which ones a type takes is checked
/// after parsing, so a misplaced key is named with its line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<SourceType>,
    max_line_bytes: Option<Spanned<Size>>,
    on_invalid: Option<Spanned<OnInvalid>>,
    // file
    include: Option<Spanned<Vec<String>>>,
    exclude: Option<Spanned<Vec<String>>>,
    read_from: Option<Spanned<ReadFrom>>,
    poll_interval: Option<Spanned<Dur>>,
    rotate_wait: Option<Spanned<Dur>>,
    close_inactive: Option<Spanned<Dur>>,
    // tcp, udp, http
    listen: Option<Spanned<String>>,
    tls: Option<Spanned<RawTls>>,
    max_connections: Option<Spanned<i64>>,
    // tcp, unix
    idle_timeout: Option<Spanned<Dur>>,
    // unix
    path: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    // http
    auth_header: Option<Spanned<String>>,
    auth_value: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<Size>>,
    header_timeout: Option<Spanned<Dur>>,
    body_timeout: Option<Spanned<Dur>>,
    min_body_rate: Option<Spanned<Rate>>,
    keepalive_timeout: Option<Spanned<Dur>>,
    max_header_bytes: Option<Spanned<Size>>,
}

/// Bytes per second, written like a size with an optional `/s`:
/// `"1KiB/s"`, `"1KiB"`, `1024`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rate(u64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Rate(n)),
            Raw::S(s) => super::units::parse_size(s.trim().trim_end_matches("/s"))
                .map(Rate)
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "invalid rate `{s}`; write it like \"1KiB/s\" (bytes per second)"
                    ))
                }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
}

impl RawSource {
    /// The settings given, with their spans, for the check that a type takes them.
    fn given(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut v = Vec::new();
        macro_rules! each {
            ($($f:ident),*) => {$(
                if let Some(x) = &self.$f { v.push((stringify!($f), x.span())); }
            )*};
        }
        each!(
            max_line_bytes,
            on_invalid,
            include,
            exclude,
            read_from,
            poll_interval,
            rotate_wait,
            close_inactive,
            listen,
            tls,
            max_connections,
            idle_timeout,
            path,
            mode,
            auth_header,
            auth_value,
            max_body_bytes,
            header_timeout,
            body_timeout,
            min_body_rate,
            keepalive_timeout,
            max_header_bytes
        );
        v
    }
}

const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The settings each type takes besides `name` and `type`.
fn settings_of(kind: SourceType) -> &'static [&'static str] {
    match kind {
        SourceType::File => &[
            "include",
            "exclude",
            "read_from",
            "poll_interval",
            "rotate_wait",
            "close_inactive",
            "max_line_bytes",
            "on_invalid",
        ],
        SourceType::Tcp => &[
            "listen",
            "tls",
            "max_connections",
            "idle_timeout",
            "max_line_bytes",
            "on_invalid",
        ],
        SourceType::Unix => &[
            "path",
            "mode",
            "max_connections",
            "idle_timeout",
            "max_line_bytes",
            "on_invalid",
        ],
        SourceType::Udp => &["listen", "max_line_bytes", "on_invalid"],
        SourceType::Stdin => &["max_line_bytes", "on_invalid"],
        // Every element of a body is checked to be a JSON object before it
        // is accepted, and may be as large as the body: an http source has
        // no invalid lines and no line limit of its own.
        SourceType::Http => &[
            "listen",
            "path",
            "tls",
            "auth_header",
            "auth_value",
            "max_body_bytes",
            "max_connections",
            "header_timeout",
            "body_timeout",
            "min_body_rate",
            "keepalive_timeout",
            "max_header_bytes",
        ],
    }
}

fn with_article(word: &str) -> String {
    let article = if word == "http" { "an" } else { "a" };
    format!("{article} {word}")
}

fn type_word(kind: SourceType) -> &'static str {
    match kind {
        SourceType::File => "file",
        SourceType::Tcp => "tcp",
        SourceType::Unix => "unix",
        SourceType::Udp => "udp",
        SourceType::Http => "http",
        SourceType::Stdin => "stdin",
    }
}

pub(super) fn validate_sources(raw: Vec<RawSource>, p: &mut Problems<'_>) -> Vec<SourceConfig> {
    let mut sources: Vec<SourceConfig> = Vec::new();
    let mut stdin_seen = false;
    for s in raw {
        let name = s.name.get_ref().clone();
        let kind = *s.kind.get_ref();
        let word = type_word(kind);
        if !valid_name(&name) {
            p.at(
                s.name.span(),
                format!("source name `{name}` must be 1-64 letters, digits, `_`, `-` or `.`"),
            );
        }
        if sources.iter().any(|x| x.name == name) {
            p.at(s.name.span(), format!("source name `{name}` is used twice"));
        }
        for (key, span) in s.given() {
            if !settings_of(kind).contains(&key) {
                let takes = settings_of(kind);
                let hint = format!("its settings are {}", takes.join(", "));
                p.at(
                    span,
                    format!(
                        "`{key}` is not a setting of {} source ({hint})",
                        with_article(word)
                    ),
                );
            }
        }
        let max_line_bytes = s.max_line_bytes.as_ref().map_or(1 << 20, |m| m.get_ref().0);
        if max_line_bytes < 2 {
            p.at(
                s.name.span(),
                format!("source `{name}`: max_line_bytes must be at least 2 bytes"),
            );
        }
        let listen = |p: &mut Problems<'_>| -> SocketAddr {
            let fallback = SocketAddr::from(([127, 0, 0, 1], 0));
            match &s.listen {
                None => {
                    p.at(
                        s.kind.span(),
                        format!("source `{name}`: {} source needs `listen`, like \"127.0.0.1:5170\"", with_article(word)),
                    );
                    fallback
                }
                Some(l) => l.get_ref().parse().unwrap_or_else(|_| {
                    p.at(
                        l.span(),
                        format!(
                            "listen address `{}` must be IP:port, like \"0.0.0.0:5170\" or \"[::1]:5170\"",
                            l.get_ref()
                        ),
                    );
                    fallback
                }),
            }
        };
        let tls = s.tls.as_ref().map(|t| {
            let t = t.get_ref();
            ServerTls {
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
                client_ca_file: t.client_ca_file.clone(),
            }
        });
        let max_connections = match &s.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(m) if *m.get_ref() >= 1 => *m.get_ref() as usize,
            Some(m) => {
                p.at(
                    m.span(),
                    format!("max_connections must be at least 1, not {}", m.get_ref()),
                );
                DEFAULT_MAX_CONNECTIONS
            }
        };
        let idle_timeout = positive(&s.idle_timeout, "idle_timeout", DEFAULT_IDLE_TIMEOUT, p);
        let input = match kind {
            SourceType::File => {
                let include = match &s.include {
                    Some(i) if !i.get_ref().is_empty() => i.get_ref().clone(),
                    Some(i) => {
                        p.at(i.span(), "`include` needs at least one glob pattern");
                        Vec::new()
                    }
                    None => {
                        p.at(
                            s.kind.span(),
                            format!("source `{name}`: a file source needs `include`, a list of glob patterns"),
                        );
                        Vec::new()
                    }
                };
                let exclude = s
                    .exclude
                    .as_ref()
                    .map_or(Vec::new(), |e| e.get_ref().clone());
                for (pat, span) in include
                    .iter()
                    .map(|x| (x, s.include.as_ref().map(|i| i.span())))
                    .chain(
                        exclude
                            .iter()
                            .map(|x| (x, s.exclude.as_ref().map(|e| e.span()))),
                    )
                {
                    if let Err(e) = globset::Glob::new(pat) {
                        p.at(
                            span.unwrap_or(s.name.span()),
                            format!("invalid glob pattern `{pat}`: {e}"),
                        );
                    }
                }
                let poll_interval = s
                    .poll_interval
                    .as_ref()
                    .map_or(Duration::from_secs(1), |d| d.get_ref().0);
                if poll_interval.is_zero() {
                    p.at(
                        s.name.span(),
                        format!("source `{name}`: poll_interval must be more than 0"),
                    );
                }
                Input::File(FileInput {
                    include,
                    exclude,
                    read_from: s
                        .read_from
                        .as_ref()
                        .map_or(ReadFrom::Beginning, |r| *r.get_ref()),
                    poll_interval,
                    rotate_wait: s
                        .rotate_wait
                        .as_ref()
                        .map_or(DEFAULT_ROTATE_WAIT, |d| d.get_ref().0),
                    close_inactive: s
                        .close_inactive
                        .as_ref()
                        .map_or(DEFAULT_CLOSE_INACTIVE, |d| d.get_ref().0),
                })
            }
            SourceType::Tcp => Input::Tcp {
                listen: listen(p),
                tls,
                max_connections,
                idle_timeout,
            },
            SourceType::Udp => Input::Udp { listen: listen(p) },
            SourceType::Unix => {
                let path = match &s.path {
                    Some(x) if !x.get_ref().is_empty() => PathBuf::from(x.get_ref()),
                    _ => {
                        p.at(
                            s.kind.span(),
                            format!("source `{name}`: a unix source needs `path`, the socket file to create"),
                        );
                        PathBuf::new()
                    }
                };
                let mode = match &s.mode {
                    None => 0o660,
                    Some(m) => match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
                        Ok(v) if v <= 0o777 => v,
                        _ => {
                            p.at(
                                m.span(),
                                format!(
                                    "mode `{}` must be octal permission bits, like \"0660\"",
                                    m.get_ref()
                                ),
                            );
                            0o660
                        }
                    },
                };
                Input::Unix {
                    path,
                    mode,
                    max_connections,
                    idle_timeout,
                }
            }
            SourceType::Http => {
                let path = s.path.as_ref().map(|x| x.get_ref().clone());
                if let (Some(x), Some(sp)) = (&path, &s.path) {
                    if !x.starts_with('/') {
                        p.at(
                            sp.span(),
                            format!("path `{x}` must start with `/`, like \"/wallarm\""),
                        );
                    }
                }
                let auth = match (&s.auth_header, &s.auth_value) {
                    (None, None) => None,
                    (Some(h), Some(v)) => {
                        if reqwest::header::HeaderName::from_bytes(h.get_ref().as_bytes()).is_err()
                        {
                            p.at(
                                h.span(),
                                format!(
                                    "auth_header `{}` is not a valid HTTP header name",
                                    h.get_ref()
                                ),
                            );
                        }
                        if v.get_ref().is_empty() {
                            p.at(
                                v.span(),
                                "auth_value is empty: every request would be accepted",
                            );
                        }
                        Some((h.get_ref().clone(), v.get_ref().clone()))
                    }
                    (Some(h), None) => {
                        p.at(
                            h.span(),
                            "auth_header needs auth_value, the value it must carry",
                        );
                        None
                    }
                    (None, Some(v)) => {
                        p.at(
                            v.span(),
                            "auth_value needs auth_header, the header that carries it",
                        );
                        None
                    }
                };
                let max_body_bytes = s
                    .max_body_bytes
                    .as_ref()
                    .map_or(10 << 20, |m| m.get_ref().0);
                if max_body_bytes < 2 {
                    if let Some(m) = &s.max_body_bytes {
                        p.at(m.span(), "max_body_bytes must be at least 2 bytes");
                    }
                }
                let min_body_rate = match &s.min_body_rate {
                    None => DEFAULT_MIN_BODY_RATE,
                    Some(r) if r.get_ref().0 >= 1 => r.get_ref().0,
                    Some(r) => {
                        p.at(r.span(), "min_body_rate must be at least 1 byte a second");
                        DEFAULT_MIN_BODY_RATE
                    }
                };
                let max_header_bytes = match &s.max_header_bytes {
                    None => DEFAULT_MAX_HEADER_BYTES as u64,
                    Some(m) if m.get_ref().0 >= 1 << 10 => m.get_ref().0,
                    Some(m) => {
                        p.at(m.span(), "max_header_bytes must be at least 1KiB");
                        DEFAULT_MAX_HEADER_BYTES as u64
                    }
                };
                Input::Http(HttpInput {
                    listen: listen(p),
                    path,
                    auth,
                    tls,
                    max_body_bytes: max_body_bytes.min(usize::MAX as u64) as usize,
                    max_connections,
                    header_timeout: positive(
                        &s.header_timeout,
                        "header_timeout",
                        DEFAULT_HEADER_TIMEOUT,
                        p,
                    ),
                    body_timeout: positive(
                        &s.body_timeout,
                        "body_timeout",
                        DEFAULT_BODY_TIMEOUT,
                        p,
                    ),
                    min_body_rate,
                    keepalive_timeout: positive(
                        &s.keepalive_timeout,
                        "keepalive_timeout",
                        DEFAULT_KEEPALIVE_TIMEOUT,
                        p,
                    ),
                    max_header_bytes: max_header_bytes.min(usize::MAX as u64) as usize,
                })
            }
            SourceType::Stdin => {
                if stdin_seen {
                    p.at(s.kind.span(), "only one source can read standard input");
                }
                stdin_seen = true;
                Input::Stdin
            }
        };
        let max_line_bytes = match &input {
            Input::Http(h) => h.max_body_bytes as u64,
            _ => max_line_bytes,
        };
        sources.push(SourceConfig {
            name,
            max_line_bytes: max_line_bytes.min(usize::MAX as u64) as usize,
            on_invalid: s
                .on_invalid
                .as_ref()
                .map_or(OnInvalid::Wrap, |o| *o.get_ref()),
            input,
        });
    }
    sources
}

/// A duration setting that must be longer than 0, or its default.
fn positive(
    d: &Option<Spanned<Dur>>,
    key: &str,
    default: Duration,
    p: &mut Problems<'_>,
) -> Duration {
    match d {
        None => default,
        Some(d) if !d.get_ref().0.is_zero() => d.get_ref().0,
        Some(d) => {
            p.at(d.span(), format!("{key} must be longer than 0s"));
            default
        }
    }
}

pub(super) fn validate_spool(raw: RawSpool, p: &mut Problems<'_>) -> SpoolConfig {
    let max_bytes = raw.max_bytes.get_ref().0;
    if max_bytes < 1 << 20 {
        p.at(
            raw.max_bytes.span(),
            format!("spool.max_bytes must be at least 1MiB, not {max_bytes} bytes"),
        );
    }
    SpoolConfig { max_bytes }
}

/// Writes a source as resolved TOML (for `tailhook check`).
pub(super) fn write_source(o: &mut String, s: &SourceConfig) {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let path = |p: &std::path::Path| q(&p.to_string_lossy());
    let _ = writeln!(
        o,
        "\n[[source]]\nname = {}\ntype = \"{}\"",
        q(&s.name),
        s.type_name()
    );
    if !matches!(s.input, Input::Http(_)) {
        let _ = writeln!(o, "max_line_bytes = {}", s.max_line_bytes);
        let oi = match s.on_invalid {
            OnInvalid::Wrap => "wrap",
            OnInvalid::Drop => "drop",
            OnInvalid::DeadLetter => "dead_letter",
        };
        let _ = writeln!(o, "on_invalid = \"{oi}\"");
    }
    let tls = |o: &mut String, t: &Option<ServerTls>| {
        if let Some(t) = t {
            let _ = write!(
                o,
                "tls = {{ cert_file = {}, key_file = {}",
                path(&t.cert_file),
                path(&t.key_file)
            );
            if let Some(ca) = &t.client_ca_file {
                let _ = write!(o, ", client_ca_file = {}", path(ca));
            }
            let _ = writeln!(o, " }}");
        }
    };
    match &s.input {
        Input::File(f) => {
            let list = |v: &[String]| v.iter().map(|x| q(x)).collect::<Vec<_>>().join(", ");
            let _ = writeln!(o, "include = [{}]", list(&f.include));
            let _ = writeln!(o, "exclude = [{}]", list(&f.exclude));
            let rf = match f.read_from {
                ReadFrom::Beginning => "beginning",
                ReadFrom::End => "end",
            };
            let _ = writeln!(o, "read_from = \"{rf}\"");
            let _ = writeln!(
                o,
                "poll_interval = {}",
                q(&humanize_duration(f.poll_interval))
            );
            let _ = writeln!(o, "rotate_wait = {}", q(&humanize_duration(f.rotate_wait)));
            let _ = writeln!(
                o,
                "close_inactive = {}",
                q(&humanize_duration(f.close_inactive))
            );
        }
        Input::Tcp {
            listen,
            tls: t,
            max_connections,
            idle_timeout,
        } => {
            let _ = writeln!(o, "listen = \"{listen}\"");
            let _ = writeln!(o, "max_connections = {max_connections}");
            let _ = writeln!(o, "idle_timeout = {}", q(&humanize_duration(*idle_timeout)));
            tls(o, t);
        }
        Input::Unix {
            path: p,
            mode,
            max_connections,
            idle_timeout,
        } => {
            let _ = writeln!(o, "path = {}", path(p));
            let _ = writeln!(o, "mode = \"{mode:04o}\"");
            let _ = writeln!(o, "max_connections = {max_connections}");
            let _ = writeln!(o, "idle_timeout = {}", q(&humanize_duration(*idle_timeout)));
        }
        Input::Udp { listen } => {
            let _ = writeln!(o, "listen = \"{listen}\"");
        }
        Input::Http(h) => {
            let _ = writeln!(o, "listen = \"{}\"", h.listen);
            if let Some(x) = &h.path {
                let _ = writeln!(o, "path = {}", q(x));
            }
            if let Some((name, _)) = &h.auth {
                let _ = writeln!(o, "auth_header = {}", q(name));
                let _ = writeln!(o, "auth_value = \"<redacted>\"");
            }
            let _ = writeln!(o, "max_body_bytes = {}", h.max_body_bytes);
            let _ = writeln!(o, "max_connections = {}", h.max_connections);
            let d = |d: Duration| q(&humanize_duration(d));
            let _ = writeln!(o, "header_timeout = {}", d(h.header_timeout));
            let _ = writeln!(o, "body_timeout = {}", d(h.body_timeout));
            let _ = writeln!(o, "min_body_rate = {}", h.min_body_rate);
            let _ = writeln!(o, "keepalive_timeout = {}", d(h.keepalive_timeout));
            let _ = writeln!(o, "max_header_bytes = {}", h.max_header_bytes);
            tls(o, &h.tls);
        }
        Input::Stdin => {}
    }
}
