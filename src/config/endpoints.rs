//! Where a destination sends: one collector (`url`, `address`) or several
//! (`urls`, `addresses`), checked the same way, and each endpoint's own
//! config for the client that talks to it.

use std::fmt::Write as _;

use toml::Spanned;

use super::redact::redact_url;
use super::{DestinationConfig, Problems};

/// A stand-in for a URL that did not pass, so checking can go on.
fn invalid_url() -> reqwest::Url {
    reqwest::Url::parse("http://invalid.invalid/").expect("static url")
}

/// One `url` (or an item of `urls`): http:// or https:// with a host.
fn http_url(raw: &Spanned<String>, p: &mut Problems<'_>) -> reqwest::Url {
    match reqwest::Url::parse(raw.get_ref()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        Ok(u) => {
            p.at(
                raw.span(),
                format!("url `{}` must be http:// or https:// with a host", u),
            );
            invalid_url()
        }
        Err(e) => {
            p.at(
                raw.span(),
                format!("url `{}` is not a valid URL: {e}", raw.get_ref()),
            );
            invalid_url()
        }
    }
}

/// One `address` (or an item of `addresses`): `host:port`.
fn forward_address(name: &str, raw: &Spanned<String>, p: &mut Problems<'_>) -> String {
    let text = raw.get_ref().trim();
    let ok = reqwest::Url::parse(&format!("tcp://{text}"))
        .ok()
        .filter(|u| {
            u.host_str().is_some_and(|h| !h.is_empty())
                && u.port().is_some_and(|port| port != 0)
                && u.path().is_empty()
                && u.username().is_empty()
        });
    if ok.is_none() {
        p.at(
            raw.span(),
            format!("destination `{name}`: address `{text}` must be host:port (e.g. \"fluentd:24224\" or \"[::1]:24224\")"),
        );
    }
    text.to_string()
}

/// `one` or `several` (the singular and plural setting, e.g. `url` and
/// `urls`), each item checked by `check`; an error when both or neither
/// is set (`missing` says what to set), or the list is empty or names one
/// endpoint twice (as `check` returns it; `shown` quotes it in the error).
#[allow(clippy::too_many_arguments)]
fn one_or_several<T: PartialEq>(
    name: &str,
    (singular, plural): (&str, &str),
    one: Option<&Spanned<String>>,
    several: Option<&Spanned<Vec<Spanned<String>>>>,
    block: std::ops::Range<usize>,
    missing: &str,
    p: &mut Problems<'_>,
    mut check: impl FnMut(&Spanned<String>, &mut Problems<'_>) -> T,
    shown: impl Fn(&T) -> String,
) -> Vec<T> {
    match (one, several) {
        (Some(one), Some(list)) => {
            p.at(
                list.span(),
                format!("destination `{name}`: set `{singular}` (one collector) or `{plural}` (several), not both"),
            );
            vec![check(one, p)]
        }
        (Some(one), None) => vec![check(one, p)],
        (None, None) => {
            p.at(block, missing);
            Vec::new()
        }
        (None, Some(list)) => {
            if list.get_ref().is_empty() {
                p.at(
                    list.span(),
                    format!("destination `{name}`: `{plural}` is empty: give at least one, or use `{singular}`"),
                );
            }
            let mut out: Vec<T> = Vec::new();
            for raw in list.get_ref() {
                let item = check(raw, p);
                if out.contains(&item) {
                    p.at(
                        raw.span(),
                        format!(
                            "destination `{name}`: `{plural}` names `{}` twice",
                            shown(&item)
                        ),
                    );
                    continue;
                }
                out.push(item);
            }
            out
        }
    }
}

/// The endpoints of an HTTP destination: `url`, or every item of `urls`.
/// Never empty: an invalid stand-in takes the place of what is missing.
pub(super) fn http_urls(
    name: &str,
    url: Option<&Spanned<String>>,
    urls: Option<&Spanned<Vec<Spanned<String>>>>,
    block: std::ops::Range<usize>,
    p: &mut Problems<'_>,
) -> Vec<reqwest::Url> {
    let missing = format!("destination `{name}` has no `url` (an HTTP destination needs one, or `urls` for several collectors; `type = \"forward\"` and `type = \"beats\"` take `address` instead)");
    let urls = one_or_several(
        name,
        ("url", "urls"),
        url,
        urls,
        block,
        &missing,
        p,
        http_url,
        redact_url,
    );
    if urls.is_empty() {
        vec![invalid_url()]
    } else {
        urls
    }
}

/// The endpoints of a forward destination: `address`, or every item of
/// `addresses`. Never empty (an empty stand-in when missing).
pub(super) fn forward_addresses(
    name: &str,
    address: Option<&Spanned<String>>,
    addresses: Option<&Spanned<Vec<Spanned<String>>>>,
    block: std::ops::Range<usize>,
    p: &mut Problems<'_>,
) -> Vec<String> {
    let missing = format!("destination `{name}` of type \"forward\" needs `address = \"host:port\"` (Fluentd's in_forward listens on 24224 by default), or `addresses` for several");
    let list = one_or_several(
        name,
        ("address", "addresses"),
        address,
        addresses,
        block,
        &missing,
        p,
        |a, p| forward_address(name, a, p),
        String::clone,
    );
    if list.is_empty() {
        vec![String::new()]
    } else {
        list
    }
}

impl DestinationConfig {
    /// How many collectors it sends to (`urls`, `addresses`; 1 for `url`).
    pub fn endpoint_count(&self) -> usize {
        self.urls.len().max(1)
    }

    /// The config of its `i`th collector alone: `url` (and a forward
    /// destination's `address`) set to that endpoint's, every other setting
    /// (TLS, `tls.server_name`, timeouts, headers) shared. What a client is
    /// built from.
    pub fn endpoint(&self, i: usize) -> DestinationConfig {
        let mut d = self.clone();
        if let Some(url) = self.urls.get(i) {
            d.url = url.clone();
            d.urls = vec![url.clone()];
        }
        if let Some(f) = &mut d.forward {
            if let Some(a) = f.addresses.get(i) {
                f.address = a.clone();
                f.addresses = vec![a.clone()];
            }
        }
        d
    }
}

/// `url = …` or `urls = [ … ]` (passwords redacted), as `check` prints them.
pub(super) fn write_urls(o: &mut String, dst: &DestinationConfig) {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    if dst.urls.len() > 1 {
        let items: Vec<String> = dst.urls.iter().map(|u| q(&redact_url(u))).collect();
        let _ = writeln!(o, "urls = [{}]", items.join(", "));
    } else {
        let _ = writeln!(o, "url = {}", q(&redact_url(&dst.url)));
    }
}

/// `address = …` or `addresses = [ … ]`, as `check` prints them.
pub(super) fn write_addresses(o: &mut String, addresses: &[String]) {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    if addresses.len() > 1 {
        let items: Vec<String> = addresses.iter().map(|a| q(a)).collect();
        let _ = writeln!(o, "addresses = [{}]", items.join(", "));
    } else {
        let _ = writeln!(
            o,
            "address = {}",
            q(addresses.first().map_or("", String::as_str))
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    fn parse(destination: &str) -> Result<Config, String> {
        let text = format!(
            "data_dir = \"/tmp/x\"\n[[source]]\nname = \"w\"\ntype = \"file\"\ninclude = [\"/var/log/*.ndjson\"]\n[[destination]]\nname = \"d\"\n{destination}\n"
        );
        Config::parse(Path::new("t.toml"), &text, |_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn urls_are_endpoints_that_share_every_other_setting() {
        let c = parse(
            "urls = [\"https://u:pw@fluentd-a:9880/wallarm.events\", \"https://fluentd-b:9880/wallarm.events\"]\nca_file = \"/etc/ca.pem\"\ntls.server_name = \"fluentd.internal\"",
        )
        .unwrap();
        let d = &c.destinations[0];
        assert_eq!(d.endpoint_count(), 2);
        assert_eq!(d.url, d.urls[0]);
        let b = d.endpoint(1);
        assert_eq!(b.url.as_str(), "https://fluentd-b:9880/wallarm.events");
        assert_eq!(b.endpoint_count(), 1);
        assert_eq!(b.server_name.as_deref(), Some("fluentd.internal"));
        assert_eq!(b.ca_file, d.ca_file);
        let shown = c.to_redacted_toml();
        assert!(
            shown.contains("urls = [\"https://u:redacted@fluentd-a:9880/wallarm.events\", \"https://fluentd-b:9880/wallarm.events\"]"),
            "{shown}"
        );
        assert!(!shown.contains("pw@"), "{shown}");
        // One url stays `url`.
        let one = parse("urls = [\"http://127.0.0.1:9880/e\"]").unwrap();
        assert!(one
            .to_redacted_toml()
            .contains("url = \"http://127.0.0.1:9880/e\""));
    }

    #[test]
    fn addresses_are_the_endpoints_of_a_forward_destination() {
        let c = parse(
            "type = \"forward\"\naddresses = [\"fluentd-a:24224\", \"fluentd-b:24224\"]\ntag = \"t\"",
        )
        .unwrap();
        let d = &c.destinations[0];
        assert_eq!(d.endpoint_count(), 2);
        let b = d.endpoint(1);
        assert_eq!(b.forward.as_ref().unwrap().address, "fluentd-b:24224");
        assert_eq!(b.url.as_str(), "tcp://fluentd-b:24224");
        assert!(c
            .to_redacted_toml()
            .contains("addresses = [\"fluentd-a:24224\", \"fluentd-b:24224\"]"));
    }

    #[test]
    fn a_wrong_list_is_an_error_in_words() {
        let err = |d: &str| parse(d).unwrap_err();
        let e = err("url = \"http://a/\"\nurls = [\"http://b/\"]");
        assert!(
            e.contains("set `url` (one collector) or `urls` (several), not both"),
            "{e}"
        );
        let e = err("urls = []");
        assert!(
            e.contains("`urls` is empty: give at least one, or use `url`"),
            "{e}"
        );
        let e = err("urls = [\"http://u:hunter2@a:80/x\", \"http://u:hunter2@a/x\"]");
        assert!(e.contains("`urls` names `http://u:***@a/x` twice"), "{e}");
        assert!(!e.contains("hunter2"), "the password is not echoed: {e}");
        let e = err("urls = [\"http://a/\", \"ftp://b/\"]");
        assert!(
            e.contains("url `ftp://b/` must be http:// or https:// with a host"),
            "{e}"
        );
        let e = err("urls = [\"http://a/\", \"not a url\"]");
        assert!(e.contains("url `not a url` is not a valid URL"), "{e}");
        let e = err("type = \"forward\"\ntag = \"t\"\naddresses = [\"a:1\", \"nohost\"]");
        assert!(e.contains("address `nohost` must be host:port"), "{e}");
        let e = err("type = \"forward\"\ntag = \"t\"\naddresses = [\"a:1\", \"a:1\"]");
        assert!(e.contains("`addresses` names `a:1` twice"), "{e}");
        let e = err("type = \"forward\"\ntag = \"t\"\naddress = \"a:1\"\naddresses = [\"b:1\"]");
        assert!(
            e.contains("set `address` (one collector) or `addresses` (several), not both"),
            "{e}"
        );
        let e = err("type = \"forward\"\ntag = \"t\"\nurls = [\"http://a/\"]\naddress = \"a:1\"");
        assert!(
            e.contains("`urls` is a setting of HTTP destinations"),
            "{e}"
        );
        let e = err("addresses = [\"a:1\"]\nurl = \"http://a/\"");
        assert!(
            e.contains("`addresses` is a setting of `type = \"forward\"`"),
            "{e}"
        );
    }
}
