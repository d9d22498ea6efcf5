//! `proxy`: whether an HTTP destination's connections go through an HTTP
//! proxy — the one its `proxy` names, the one the environment names (the
//! variables curl, Vector and Fluent Bit read), or none — and how that
//! decision reads in `check` and `test`.
//!
//! The environment: `https_proxy` / `HTTPS_PROXY` for an https url,
//! `http_proxy` / `HTTP_PROXY` for an http url (the lower-case name first,
//! as curl and Vector read them; an empty value is unset), and `no_proxy` /
//! `NO_PROXY`, which also applies to a `proxy` set in the config, as in
//! Vector. `ALL_PROXY` is not read: Vector and Fluent Bit do not read it
//! either, and it usually names a SOCKS proxy, which tailhook does not
//! speak.

use std::fmt::Write as _;
use std::net::IpAddr;

use toml::Spanned;

use super::redact::mask_url_passwords;
use super::Problems;

/// The `proxy` setting of an HTTP destination.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxySetting {
    /// Not set: the environment decides.
    #[default]
    Environment,
    /// `proxy = "none"`: always straight to the collector.
    Never,
    /// `proxy = "http://[user:password@]host:port"`.
    Url(reqwest::Url),
}

/// Where a destination's connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Straight to the collector; with why, when a proxy is named but not used.
    Direct(Option<String>),
    /// Through this proxy.
    Proxy(Proxy),
}

/// The HTTP proxy a destination goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// As given, credentials and all: for connecting, never for showing.
    pub url: reqwest::Url,
    /// Where it is named: `proxy` or the environment variable's name.
    pub from: String,
}

impl Proxy {
    /// `http://host:port`, without credentials: how every message names it.
    pub fn address(&self) -> String {
        format!("http://{}:{}", self.host(), self.port())
    }

    /// The proxy's host (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The proxy's port (80 when the URL has none).
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// `http://host:port`, and where it is named when that is the
    /// environment (`… from HTTPS_PROXY`).
    pub fn describe(&self) -> String {
        if self.from == "proxy" {
            self.address()
        } else {
            format!("{} from {}", self.address(), self.from)
        }
    }

    /// The URL with `USER:PASSWORD` in place of any credentials, for hints
    /// that say where credentials go.
    pub fn with_placeholder_credentials(&self) -> String {
        format!("http://USER:PASSWORD@{}:{}", self.host(), self.port())
    }
}

impl Route {
    /// ` via proxy http://host:port`, ` direct (NO_PROXY matches host)`, or
    /// nothing: what `tailhook test` adds to a destination's target.
    pub fn suffix(&self) -> String {
        match self {
            Route::Proxy(p) => format!(" via proxy {}", p.describe()),
            Route::Direct(Some(why)) => format!(" direct ({why})"),
            Route::Direct(None) => String::new(),
        }
    }
}

/// Reads a proxy URL: `http://[user:password@]host[:port]`. With
/// `scheme_optional` (a value from the environment, as curl reads it), a
/// URL without `scheme://` is taken as http. Errors show the URL with its
/// password masked.
pub fn parse_proxy_url(text: &str, scheme_optional: bool) -> Result<reqwest::Url, String> {
    let text = text.trim();
    let shown = mask_url_passwords(text);
    let full = if scheme_optional && !text.contains("://") {
        format!("http://{text}")
    } else {
        text.to_string()
    };
    let form = "expected http://[user:password@]host:port";
    let url = reqwest::Url::parse(&full)
        .map_err(|e| format!("proxy `{shown}` is not a valid URL ({e}): {form}"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(format!(
                "proxy `{shown}`: a proxy reached over TLS (https://) is not supported; use the proxy's plain http:// address (a tunnel to an https collector stays TLS from end to end)"
            ))
        }
        s if s.starts_with("socks") => {
            return Err(format!(
                "proxy `{shown}`: SOCKS proxies are not supported; tailhook speaks to HTTP proxies: {form}"
            ))
        }
        _ => return Err(format!("proxy `{shown}` must start with http://: {form}")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("proxy `{shown}` has no host: {form}"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "proxy `{shown}` has a path: {form}, and nothing after the port"
        ));
    }
    Ok(url)
}

/// Checks a destination's `proxy` (None: not set).
pub(super) fn validate_proxy(
    name: &str,
    raw: Option<&Spanned<String>>,
    p: &mut Problems<'_>,
) -> ProxySetting {
    let Some(raw) = raw else {
        return ProxySetting::Environment;
    };
    let text = raw.get_ref().trim();
    if text.eq_ignore_ascii_case("none") {
        return ProxySetting::Never;
    }
    match parse_proxy_url(text, false) {
        Ok(url) => ProxySetting::Url(url),
        Err(e) => {
            p.at(
                raw.span(),
                format!("destination `{name}`: {e}; or proxy = \"none\" for no proxy"),
            );
            ProxySetting::Environment
        }
    }
}

/// Where the connections to `url` go with `setting`, the environment read
/// through `env`. An error names the environment variable whose value is
/// not an HTTP proxy URL.
pub fn route(
    setting: &ProxySetting,
    url: &reqwest::Url,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Route, String> {
    let first_set = |names: [&str; 2]| {
        names.into_iter().find_map(|n| {
            env(n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (n.to_string(), v))
        })
    };
    let host = url.host_str().unwrap_or_default();
    let excluded = first_set(["no_proxy", "NO_PROXY"])
        .filter(|(_, list)| no_proxy_matches(list, host))
        .map(|(name, _)| format!("{name} matches {host}"));
    let names = if url.scheme() == "https" {
        ["https_proxy", "HTTPS_PROXY"]
    } else {
        ["http_proxy", "HTTP_PROXY"]
    };
    let proxy = match setting {
        ProxySetting::Never => {
            let why = first_set(names).map(|(n, _)| format!("proxy = \"none\": {n} not used"));
            return Ok(Route::Direct(why));
        }
        ProxySetting::Url(url) => Proxy {
            url: url.clone(),
            from: "proxy".into(),
        },
        ProxySetting::Environment => match first_set(names) {
            None => return Ok(Route::Direct(None)),
            Some((name, value)) => {
                if excluded.is_some() {
                    return Ok(Route::Direct(excluded));
                }
                let url = parse_proxy_url(&value, true).map_err(|e| {
                    format!("{name}: {e}; or set `proxy` on the destination (proxy = \"none\" ignores {name})")
                })?;
                Proxy { url, from: name }
            }
        },
    };
    Ok(match excluded {
        Some(why) => Route::Direct(Some(why)),
        None => Route::Proxy(proxy),
    })
}

/// Whether a `NO_PROXY` list names `host`, as curl reads it: entries
/// separated by commas; `*` matches every host; an IP address matches
/// itself and a CIDR range (`10.0.0.0/8`) the addresses in it; any other
/// entry is a domain that matches itself and every name under it (a
/// leading `.` or `*.` changes nothing). Names are not resolved: `localhost`
/// is not `127.0.0.1`. Entries with a port never match.
pub fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host);
    let ip = host.parse::<IpAddr>().ok();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some(ip) = ip {
                return match entry.split_once('/') {
                    Some((net, bits)) => in_range(ip, net, bits),
                    None => {
                        entry
                            .trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse::<IpAddr>()
                            == Ok(ip)
                    }
                };
            }
            let domain = entry
                .strip_prefix("*.")
                .or_else(|| entry.strip_prefix('.'))
                .unwrap_or(entry);
            let domain = domain.strip_suffix('.').unwrap_or(domain);
            if domain.is_empty() || host.len() < domain.len() {
                return false;
            }
            let (head, tail) = host.split_at(host.len() - domain.len());
            tail.eq_ignore_ascii_case(domain) && (head.is_empty() || head.ends_with('.'))
        })
}

/// Whether `ip` is in `net/bits`.
fn in_range(ip: IpAddr, net: &str, bits: &str) -> bool {
    let Ok(bits) = bits.parse::<u32>() else {
        return false;
    };
    match (ip, net.parse::<IpAddr>()) {
        (IpAddr::V4(a), Ok(IpAddr::V4(n))) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), Ok(IpAddr::V6(n))) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Writes a destination's `proxy` as `check` shows it: the setting with its
/// password redacted, or, when not set, a comment saying what the
/// environment makes of it now.
pub(super) fn write_proxy(o: &mut String, setting: &ProxySetting, url: &reqwest::Url) {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    match setting {
        ProxySetting::Never => {
            let _ = writeln!(o, "proxy = \"none\"");
        }
        ProxySetting::Url(p) => {
            let mut shown = p.clone();
            if shown.password().is_some() {
                let _ = shown.set_password(Some("redacted"));
            }
            let text = shown.as_str().trim_end_matches('/');
            let _ = writeln!(o, "proxy = {}", q(text));
        }
        ProxySetting::Environment => {
            let now = match route(setting, url, |k| std::env::var(k).ok()) {
                Ok(Route::Proxy(p)) => format!("via {}", p.describe()),
                Ok(Route::Direct(Some(why))) => format!("direct ({why})"),
                Ok(Route::Direct(None)) => "direct (no proxy variable set)".into(),
                Err(e) => mask_url_passwords(&e),
            };
            let _ = writeln!(o, "# proxy: not set; from the environment: {now}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn via(r: Result<Route, String>) -> String {
        match r.unwrap() {
            Route::Proxy(p) => format!("{} {}", p.describe(), p.url.username()),
            Route::Direct(why) => format!("direct {why:?}"),
        }
    }

    #[test]
    fn the_environment_variable_of_the_url_scheme_is_used_lower_case_first() {
        let vars = [
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://u@lower:3128"),
            ("HTTP_PROXY", "plain:8080"),
            ("ALL_PROXY", "http://all:1"),
        ];
        let e = env(&vars);
        let s = ProxySetting::Environment;
        assert_eq!(
            via(route(&s, &url("https://c:9880/x"), &e)),
            "http://lower:3128 from https_proxy u"
        );
        assert_eq!(
            via(route(&s, &url("http://c:9880/x"), &e)),
            "http://plain:8080 from HTTP_PROXY "
        );
        let only_all = [("ALL_PROXY", "http://all:1"), ("HTTPS_PROXY", "")];
        assert_eq!(
            via(route(&s, &url("https://c/"), env(&only_all))),
            "direct None"
        );
    }

    #[test]
    fn no_proxy_applies_to_the_environment_and_to_an_explicit_proxy() {
        let vars = [
            ("HTTPS_PROXY", "http://p:3128"),
            ("NO_PROXY", "localhost, .internal,10.0.0.0/8"),
        ];
        let e = env(&vars);
        let explicit = ProxySetting::Url(url("http://q:3128"));
        for s in [&ProxySetting::Environment, &explicit] {
            assert_eq!(
                via(route(s, &url("https://fluentd.internal:9880/"), &e)),
                "direct Some(\"NO_PROXY matches fluentd.internal\")"
            );
            assert_eq!(
                via(route(s, &url("https://10.1.2.3/"), &e)),
                "direct Some(\"NO_PROXY matches 10.1.2.3\")"
            );
        }
        assert_eq!(
            via(route(&explicit, &url("https://fluentd.example/"), &e)),
            "http://q:3128 "
        );
        assert_eq!(
            via(route(&ProxySetting::Never, &url("https://x/"), &e)),
            "direct Some(\"proxy = \\\"none\\\": HTTPS_PROXY not used\")"
        );
    }

    #[test]
    fn a_bad_environment_value_is_an_error_naming_the_variable_without_the_password() {
        let vars = [("https_proxy", "socks5://u:hunter2@p:1080")];
        let err = route(&ProxySetting::Environment, &url("https://c/"), env(&vars)).unwrap_err();
        assert!(
            err.starts_with("https_proxy: proxy `socks5://u:***@p:1080`"),
            "{err}"
        );
        assert!(err.contains("SOCKS proxies are not supported"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn proxy_urls_are_checked_in_words() {
        assert!(parse_proxy_url("http://u:p@proxy:3128", false).is_ok());
        assert!(parse_proxy_url("proxy.example:3128", true).is_ok());
        for (text, words) in [
            (
                "https://proxy:3128",
                "reached over TLS (https://) is not supported",
            ),
            ("socks5h://proxy:1080", "SOCKS proxies are not supported"),
            ("proxy:3128", "must start with http://"),
            ("http://proxy:3128/path", "has a path"),
            ("http://", "is not a valid URL"),
        ] {
            let e = parse_proxy_url(text, false).unwrap_err();
            assert!(e.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn no_proxy_matches_like_curl() {
        let list = "example.com, .corp, *.svc, 192.168.1.7, 10.0.0.0/8, fd00::/8, [::1], host:8080";
        for host in [
            "example.com",
            "api.example.com",
            "EXAMPLE.COM.",
            "a.corp",
            "corp",
            "x.svc",
            "192.168.1.7",
            "10.200.3.4",
            "[fd00::1]",
            "[::1]",
        ] {
            assert!(no_proxy_matches(list, host), "{host}");
        }
        for host in [
            "notexample.com",
            "example.com.evil",
            "192.168.1.8",
            "11.0.0.1",
            "localhost",
            "host",
            "[fe80::1]",
        ] {
            assert!(!no_proxy_matches(list, host), "{host}");
        }
        assert!(no_proxy_matches(" * ", "10.0.0.1"));
        assert!(no_proxy_matches("*", "anything"));
        assert!(!no_proxy_matches("", "anything"));
    }
}
