//! The TOML configuration: raw serde structs with defaults, `${VAR}` expansion,
//! and validation into a [`Config`] whose errors name the file, line and key.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod delivery;
mod destination;
mod endpoints;
mod env;
mod proxy;
pub(crate) mod redact;
mod source;
mod units;

pub use delivery::{DeadLetterConfig, StatusAction, StatusMatch, StatusPolicy};
use destination::{validate_destinations, write_destination, RawDestination};
pub use destination::{
    BatchConfig, BeatsConfig, Compression, DestinationConfig, Format, ForwardConfig,
    ForwardSecurity, Method, RetryConfig,
};
pub use env::expand_env;
pub use proxy::{no_proxy_matches, parse_proxy_url, route, Proxy, ProxySetting, Route};
pub use redact::redact_url;
use redact::Secrets;
use source::{validate_sources, validate_spool, write_source, RawSource, RawSpool};
pub use source::{FileInput, HttpInput, Input, ServerTls, SourceConfig, SpoolConfig};
pub use units::{humanize_duration, parse_duration, parse_size, Dur, Size};

/// A configuration that was read and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where checkpoints, the spool and dead letters live.
    pub data_dir: PathBuf,
    /// How long SIGTERM waits for batched events to be delivered.
    pub shutdown_timeout: Duration,
    /// The bound on spooled input.
    pub spool: SpoolConfig,
    /// The `/metrics`, `/health` and `/ready` listener.
    pub metrics: MetricsConfig,
    /// The inputs.
    pub sources: Vec<SourceConfig>,
    /// The collectors.
    pub destinations: Vec<DestinationConfig>,
}

/// The `[metrics]` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsConfig {
    /// False: no listener.
    pub enabled: bool,
    /// Where `/metrics`, `/health` and `/ready` are served.
    pub listen: std::net::SocketAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_metrics_listen")]
    listen: Spanned<String>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            enabled: true,
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9598".to_string())
}

/// Where a file source starts in a file it has no checkpoint for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    /// Read files present at start from their first byte.
    Beginning,
    /// Skip what files present at start already hold.
    End,
}

/// What happens to a line that is not an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Forward `{"message": "<line>", "tailhook_error": "<why>"}`.
    Wrap,
    /// Drop it (counted and logged).
    Drop,
    /// Append it, wrapped, to the destination's dead-letter file.
    DeadLetter,
}

/// A config that could not be loaded: every message names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// One or more problems, each formatted with its location.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

// ---- raw (as written) -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default = "secs::<30>")]
    shutdown_timeout: Dur,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default, rename = "destination")]
    destinations: Vec<RawDestination>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/tailhook")
}
fn secs<const N: u64>() -> Dur {
    Dur(Duration::from_secs(N))
}
fn yes() -> bool {
    true
}

// ---- loading ----------------------------------------------------------------

/// Where in the file a problem is: 1-based line and column.
fn locate(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

pub(crate) struct Problems<'a> {
    path: &'a Path,
    text: &'a str,
    /// The lines to echo: as written when expansion kept the lines where
    /// they were (it does, unless a value holds a line break), so a
    /// `${VAR}` shows as itself; else the expanded text.
    echo: &'a str,
    list: Vec<String>,
}

impl Problems<'_> {
    /// Records a problem with its location and the line it is on, so the
    /// key is named even when the message only speaks of the value.
    pub(crate) fn at(&mut self, span: std::ops::Range<usize>, msg: impl fmt::Display) {
        let (line, col) = locate(self.text, span.start);
        let source = self.echo.lines().nth(line - 1).unwrap_or("").trim_end();
        self.list.push(format!(
            "{}:{line}:{col}: {msg}\n    | {source}",
            self.path.display()
        ));
    }
}

pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with('.')
}

impl Config {
    /// Reads, expands and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text, |k| std::env::var(k).ok())
    }

    /// Expands and validates config text; `path` is only used in messages.
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (expanded, substituted) = env::expand(text, env).map_err(|errs| {
            ConfigError::Invalid(
                errs.into_iter()
                    .map(|(line, m)| format!("{}:{line}: {m}", path.display()))
                    .collect(),
            )
        })?;
        // Nothing printed about the config shows a credential.
        let secrets = Secrets::find(text, &expanded, &substituted);
        let masked = |list: Vec<String>| {
            ConfigError::Invalid(list.iter().map(|m| secrets.mask(m)).collect())
        };
        let echo = if text.lines().count() == expanded.lines().count() {
            text
        } else {
            &expanded
        };
        let mut p = Problems {
            path,
            text: &expanded,
            echo,
            list: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(&expanded) {
            Ok(raw) => raw,
            Err(e) => {
                let msg = e.message().trim_end().to_string();
                match e.span() {
                    Some(span) => p.at(span, msg),
                    None => p.list.push(format!("{}: {msg}", path.display())),
                }
                return Err(masked(p.list));
            }
        };
        let config = validate(raw, &mut p);
        if p.list.is_empty() {
            Ok(config)
        } else {
            Err(masked(p.list))
        }
    }

    /// Warnings worth printing at start and by `check`: nothing is wrong, but
    /// the operator probably did not mean it.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            if !self.destinations.iter().any(|d| d.sources.contains(&i)) {
                let fate = if s.is_spooled() {
                    "what it receives is discarded"
                } else {
                    "its files are not read"
                };
                w.push(format!(
                    "source `{}` is in no destination's `sources`: {fate}",
                    s.name
                ));
            }
        }
        for s in &self.sources {
            let Input::Http(h) = &s.input else { continue };
            match &h.auth {
                None if !h.listen.ip().is_loopback() => w.push(format!(
                    "source `{}` listens on {} without auth_header: anyone who can reach that address can send it events",
                    s.name, h.listen
                )),
                Some((header, value)) if is_placeholder(value) => w.push(format!(
                    "source `{}`: auth_value is a placeholder (`{}`): anyone who reads the example knows it; set a real token in {header}",
                    s.name,
                    value.trim()
                )),
                _ => {}
            }
        }
        for d in &self.destinations {
            if d.events.is_empty() {
                w.push(format!(
                    "destination `{}` has an empty `events` list: it will receive nothing but test messages",
                    d.name
                ));
            }
            let unverified: Vec<String> = d
                .urls
                .iter()
                .filter(|u| matches!(u.scheme(), "https" | "tls"))
                .map(redact_url)
                .collect();
            if !d.verify_certificate && !unverified.is_empty() {
                w.push(format!(
                    "destination `{}` has verify_certificate = false: TLS certificates of {} are NOT verified, so anyone on the path can read and alter the events",
                    d.name,
                    unverified.join(", ")
                ));
            }
            let plain = d
                .urls
                .iter()
                .find(|u| u.scheme() == "http" && !is_loopback(u));
            if let Some(url) = plain {
                let credential = d
                    .headers
                    .iter()
                    .find(|(k, _)| is_credential_header(k))
                    .map(|(k, _)| format!("an {k} header"))
                    .or_else(|| url.password().map(|_| "a URL password".to_string()));
                if let Some(what) = credential {
                    w.push(format!(
                        "destination `{}` sends {what} over plain http://: anyone on the path can read it; use https://",
                        d.name
                    ));
                }
            }
            for (k, v) in &d.headers {
                if is_credential_header(k) && is_placeholder(v) {
                    w.push(format!(
                        "destination `{}`: the {k} header is empty or a placeholder (`{}`): set the real credential (is its environment variable set?)",
                        d.name,
                        v.trim()
                    ));
                }
            }
            if let Some(s) = d.forward.as_ref().and_then(|f| f.security.as_ref()) {
                for (what, value) in [("shared_key", &s.shared_key), ("password", &s.password)] {
                    if !value.is_empty() && is_placeholder(value) {
                        w.push(format!(
                            "destination `{}`: {what} is a placeholder (`{}`): anyone who reads the example knows it; set the real one in in_forward's <security> and here",
                            d.name,
                            value.trim()
                        ));
                    }
                }
            }
            let all_plain = d.urls.iter().all(|u| u.scheme() == "http");
            if all_plain && (d.ca_file.is_some() || d.client_cert_file.is_some()) {
                w.push(format!(
                    "destination `{}` sets TLS files but its URL is plain http: they are not used",
                    d.name
                ));
            }
        }
        w
    }

    /// The resolved config as TOML, every default filled in and header values redacted.
    pub fn to_redacted_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let d = |d: Duration| q(&humanize_duration(d));
        let mut o = String::new();
        let _ = writeln!(o, "data_dir = {}", q(&self.data_dir.to_string_lossy()));
        let _ = writeln!(o, "shutdown_timeout = {}", d(self.shutdown_timeout));
        let _ = writeln!(o, "\n[spool]\nmax_bytes = {}", self.spool.max_bytes);
        let _ = writeln!(
            o,
            "\n[metrics]\nenabled = {}\nlisten = \"{}\"",
            self.metrics.enabled, self.metrics.listen
        );
        for s in &self.sources {
            write_source(&mut o, s);
        }
        for d in &self.destinations {
            write_destination(&mut o, d, &self.sources);
        }
        o
    }
}

/// Whether a URL's host is this machine (nothing on a network path).
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a request header carries a credential.
fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "token",
        "api-key",
        "apikey",
        "api_key",
        "secret",
    ]
    .iter()
    .any(|c| n.contains(c))
}

/// Whether a credential is empty or a well-known placeholder (after an
/// auth scheme such as `Bearer`).
fn is_placeholder(value: &str) -> bool {
    let v = value.trim();
    let token = v
        .split_once(' ')
        .filter(|(scheme, _)| {
            ["bearer", "basic", "token", "apikey"].contains(&scheme.to_ascii_lowercase().as_str())
        })
        .map_or(v, |(_, t)| t.trim());
    let t = token.to_ascii_lowercase().replace(['-', '_', ' '], "");
    t.is_empty()
        || [
            "changeme",
            "replaceme",
            "yourtoken",
            "token",
            "secret",
            "password",
            "xxx",
            "todo",
        ]
        .contains(&t.as_str())
}

fn validate(raw: RawConfig, p: &mut Problems<'_>) -> Config {
    let spool = validate_spool(raw.spool, p);
    let metrics = MetricsConfig {
        enabled: raw.metrics.enabled,
        listen: raw.metrics.listen.get_ref().parse().unwrap_or_else(|_| {
            p.at(
                raw.metrics.listen.span(),
                format!(
                    "metrics.listen `{}` must be IP:port, like \"127.0.0.1:9598\"",
                    raw.metrics.listen.get_ref()
                ),
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], 9598))
        }),
    };
    let sources = validate_sources(raw.sources, p);
    if sources.is_empty() {
        p.list.push(format!(
            "{}: no [[source]] block: add one so there is something to read",
            p.path.display()
        ));
    }

    let destinations = validate_destinations(raw.destinations, &sources, p);
    if destinations.is_empty() {
        p.list.push(format!(
            "{}: no [[destination]] block: add one so events have somewhere to go",
            p.path.display()
        ));
    }
    Config {
        data_dir: raw.data_dir,
        shutdown_timeout: raw.shutdown_timeout.0,
        spool,
        metrics,
        sources,
        destinations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("t.toml"), text, |k| {
            (k == "TOKEN").then(|| "s3cret".to_string())
        })
        .map_err(|e| e.to_string())
    }

    const MIN: &str = r#"
data_dir = "/tmp/x"
[[source]]
name = "w"
type = "file"
include = ["/var/log/*.ndjson"]
[[destination]]
name = "fluentd"
url = "http://127.0.0.1:9880/wallarm.events"
headers = { Authorization = "Bearer ${TOKEN}" }
"#;

    #[test]
    fn defaults_are_the_integrations() {
        let c = parse(MIN).unwrap();
        let d = &c.destinations[0];
        assert_eq!(d.method, Method::Post);
        assert_eq!(d.request_timeout, Duration::from_secs(15));
        assert_eq!(d.connect_timeout, Duration::from_secs(20));
        assert!(d.verify_certificate);
        assert_eq!(d.concurrency, 2);
        assert_eq!((d.batch.max_events, d.batch.max_bytes), (500, 1 << 20));
        assert_eq!(d.batch.timeout, Duration::from_secs(1));
        assert_eq!(
            d.headers,
            [("Authorization".to_string(), "Bearer s3cret".to_string())]
        );
        assert_eq!(c.sources[0].max_line_bytes, 1 << 20);
        assert_eq!(c.sources[0].on_invalid, OnInvalid::Wrap);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        let shown = c.to_redacted_toml();
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
        toml::from_str::<toml::Table>(&shown).expect("resolved config is TOML");
    }

    #[test]
    fn a_source_no_destination_reads_is_warned_about() {
        let text = MIN.replace(
            "[[destination]]",
            "[[source]]\nname = \"net\"\ntype = \"tcp\"\nlisten = \"127.0.0.1:5170\"\n[[destination]]\nsources = [\"w\"]",
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.warnings(),
            ["source `net` is in no destination's `sources`: what it receives is discarded"]
        );
    }

    #[test]
    fn credentials_in_the_clear_and_placeholders_are_warned_about() {
        let text = MIN
            .replace("http://127.0.0.1:9880", "http://fluentd.example.com:9880")
            .replace("${TOKEN}", "change-me")
            .replace(
                "[[destination]]",
                "[[source]]\nname = \"hook\"\ntype = \"http\"\nlisten = \"0.0.0.0:8443\"\n\
                 [[source]]\nname = \"hook2\"\ntype = \"http\"\nlisten = \"127.0.0.1:8444\"\n\
                 auth_header = \"X-Token\"\nauth_value = \"CHANGE_ME\"\n\
                 [[destination]]\nsources = [\"w\", \"hook\", \"hook2\"]",
            );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.warnings(),
            [
                "source `hook` listens on 0.0.0.0:8443 without auth_header: anyone who can reach that address can send it events",
                "source `hook2`: auth_value is a placeholder (`CHANGE_ME`): anyone who reads the example knows it; set a real token in X-Token",
                "destination `fluentd` sends an Authorization header over plain http://: anyone on the path can read it; use https://",
                "destination `fluentd`: the Authorization header is empty or a placeholder (`Bearer change-me`): set the real credential (is its environment variable set?)",
            ]
        );
        // A real token, to this machine: nothing to say.
        assert!(parse(MIN).unwrap().warnings().is_empty());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = MIN
            .replace("method_x", "")
            .replace("name = \"fluentd\"", "name = \"fluentd\"\nretries = 3");
        let e = parse(&text).unwrap_err();
        assert!(e.starts_with("t.toml:9:1: unknown field `retries`"), "{e}");
    }

    #[test]
    fn bad_values() {
        let e = parse(&MIN.replace("type = \"file\"", "type = \"file\"\nread_from = \"middle\""))
            .unwrap_err();
        assert!(e.contains("t.toml:6:13") && e.contains("middle"), "{e}");
        let e = parse(&format!("{MIN}request_timeout = \"soon\"\n")).unwrap_err();
        assert!(e.contains("invalid duration `soon`"), "{e}");
        assert!(
            e.contains("| request_timeout = \"soon\""),
            "the key is shown: {e}"
        );
        let e = parse(&format!("{MIN}events = [\"hits\"]\n")).unwrap_err();
        assert!(e.contains("t.toml:11:10: unknown event kind `hits`"), "{e}");
        let e = parse(&format!("{MIN}method = \"GET\"\n")).unwrap_err();
        assert!(e.contains("method `GET` is not supported"), "{e}");
        let e = parse(&MIN.replace("http://127", "ftp://127")).unwrap_err();
        assert!(e.contains("t.toml:9:7: url"), "{e}");
        let e = parse(&MIN.replace("${TOKEN}", "${MISSING}")).unwrap_err();
        assert!(
            e.contains("t.toml:10: environment variable `MISSING` is not set"),
            "{e}"
        );
        assert!(parse(&MIN.replace("${TOKEN}", "${MISSING:-x}")).is_ok());
        let e = parse(&format!("{MIN}concurrency = 0\n")).unwrap_err();
        assert!(e.contains("must be at least 1"), "{e}");
    }
}
