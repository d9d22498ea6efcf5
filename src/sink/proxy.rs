//! Going through an HTTP proxy: the CONNECT tunnel that the start-up probe
//! and `tailhook test`'s diagnosis open themselves (reqwest opens the
//! requests' own, the same way), and a proxy's failures in words.
//!
//! Which proxy a destination uses, if any, is decided once, in
//! [`crate::config::route`]; the requests and the probe both follow it.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{humanize_duration, Proxy};

/// The most bytes of a proxy's answer to CONNECT that are read.
const MAX_ANSWER: usize = 16 * 1024;

/// How a proxy failed.
#[derive(Debug)]
pub enum ProxyFailure {
    /// No TCP connection to the proxy; why, in words.
    Unreachable(String),
    /// No connection through the proxy within `connect_timeout`.
    Timeout(Duration),
    /// 407: the proxy wants credentials, or others than those sent.
    AuthRequired {
        /// Whether the proxy URL held credentials.
        sent: bool,
    },
    /// Another answer to CONNECT than 2xx: its status and reason, when known.
    Refused {
        /// `host:port` asked for.
        target: String,
        /// `403 Forbidden`.
        status: Option<String>,
    },
    /// The proxy closed the connection before it answered CONNECT.
    Closed {
        /// `host:port` asked for.
        target: String,
    },
}

/// The proxy between tailhook and a collector failed.
#[derive(Debug)]
pub struct ProxyError {
    /// The proxy (shown without its credentials).
    pub proxy: Proxy,
    /// What went wrong.
    pub failure: ProxyFailure,
}

impl ProxyError {
    fn new(proxy: &Proxy, failure: ProxyFailure) -> ProxyError {
        ProxyError {
            proxy: proxy.clone(),
            failure,
        }
    }

    /// A short label for metrics: `timeout` or `connect`.
    pub fn reason(&self) -> &'static str {
        match self.failure {
            ProxyFailure::Timeout(_) => "timeout",
            _ => "connect",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.proxy.describe();
        let setting = if self.proxy.from == "proxy" {
            format!("proxy = \"{}\"", self.proxy.with_placeholder_credentials())
        } else {
            format!(
                "{}={}",
                self.proxy.from,
                self.proxy.with_placeholder_credentials()
            )
        };
        match &self.failure {
            ProxyFailure::Unreachable(why) => write!(
                f,
                "proxy {p} not reachable: {why}: check the proxy's address and port"
            ),
            ProxyFailure::Timeout(t) => write!(
                f,
                "connect timeout: no connection through proxy {p} within {}: the proxy, or the collector behind it, did not answer in time",
                humanize_duration(*t)
            ),
            ProxyFailure::AuthRequired { sent: false } => write!(
                f,
                "proxy {p} answered 407 Proxy Authentication Required: it wants credentials; put them in the proxy URL: {setting}"
            ),
            ProxyFailure::AuthRequired { sent: true } => write!(
                f,
                "proxy {p} answered 407 Proxy Authentication Required: it refused the user name and password in the proxy URL; check them ({setting}; characters such as @ : / in them must be percent-encoded)"
            ),
            ProxyFailure::Refused { target, status } => {
                let hint = match status.as_deref().map(|s| s.get(..3).unwrap_or(s)) {
                    Some("502" | "503" | "504") => format!(
                        "the proxy could not reach the collector: check the url's host and port, and that the proxy can resolve and reach {target}"
                    ),
                    _ => "its rules must allow CONNECT to that host and port (Squid: http_access and SSL_ports)".to_string(),
                };
                write!(
                    f,
                    "proxy {p} refused to open a tunnel to {target}: it answered CONNECT with {}: {hint}",
                    status.as_deref().unwrap_or("a status other than 200")
                )
            }
            ProxyFailure::Closed { target } => write!(
                f,
                "proxy {p} closed the connection without answering CONNECT to {target}"
            ),
        }
    }
}

/// Opens a TCP connection to the proxy.
pub async fn open(proxy: &Proxy) -> Result<TcpStream, ProxyError> {
    let host = proxy.host().trim_start_matches('[').trim_end_matches(']');
    let unreachable = |why: String| ProxyError::new(proxy, ProxyFailure::Unreachable(why));
    let addrs: Vec<_> = tokio::net::lookup_host((host, proxy.port()))
        .await
        .map_err(|_| {
            unreachable(format!(
                "DNS lookup failed: host `{host}` could not be resolved"
            ))
        })?
        .collect();
    let mut last = format!("DNS lookup failed: host `{host}` has no address");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = "connection refused: nothing is listening at that address and port".into()
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(unreachable(last))
}

/// Asks the proxy on `stream` for a tunnel to `host:port` (`host` as a URL
/// holds it, an IPv6 address in brackets), as reqwest does: `CONNECT`, with
/// `Proxy-Authorization: Basic` when the proxy URL holds credentials. A 2xx
/// answer leaves `stream` a tunnel to the collector.
pub async fn tunnel(
    mut stream: TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<TcpStream, ProxyError> {
    let target = format!("{host}:{port}");
    let mut head = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: tailhook/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(auth) = authorization(proxy) {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    let closed = || {
        ProxyError::new(
            proxy,
            ProxyFailure::Closed {
                target: target.clone(),
            },
        )
    };
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|_| closed())?;
    let mut answer = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    // Nothing comes through a tunnel before the client speaks, so reading
    // past the answer's head cannot take the collector's bytes.
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.map_err(|_| closed())?;
        if n == 0 || answer.len() > MAX_ANSWER {
            return Err(closed());
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let _version = parts.next();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    let reason = parts.next().unwrap_or_default().trim();
    match code {
        Some(200..=299) => Ok(stream),
        Some(407) => Err(ProxyError::new(
            proxy,
            ProxyFailure::AuthRequired {
                sent: !proxy.url.username().is_empty(),
            },
        )),
        Some(code) => Err(ProxyError::new(
            proxy,
            ProxyFailure::Refused {
                target,
                status: Some(format!("{code} {reason}").trim_end().to_string()),
            },
        )),
        None => Err(ProxyError::new(
            proxy,
            ProxyFailure::Refused {
                target,
                status: Some(format!(
                    "something that is not HTTP (`{}`)",
                    status_line.chars().take(40).collect::<String>()
                )),
            },
        )),
    }
}

/// Why the proxy refuses a tunnel to `host:port`, asked again: reqwest
/// tells that a CONNECT failed but not the status, which is what says why.
/// None when the tunnel opens this time.
pub async fn refusal(proxy: &Proxy, host: &str, port: u16, within: Duration) -> Option<ProxyError> {
    let attempt = async {
        let stream = open(proxy).await?;
        tunnel(stream, proxy, host, port).await.map(drop)
    };
    match tokio::time::timeout(within, attempt).await {
        Ok(Err(e)) => Some(e),
        Ok(Ok(())) | Err(_) => None,
    }
}

/// How reqwest's tunnel failed, from the error chain of a request: hyper's
/// `TunnelError` is not exported, so its variants are told by name.
pub fn tunnel_failure(
    chain: &[&(dyn std::error::Error + 'static)],
    proxy: &Proxy,
    target: &str,
) -> Option<ProxyError> {
    chain.iter().find_map(|c| {
        let failure = match format!("{c:?}").as_str() {
            "ProxyAuthRequired" => ProxyFailure::AuthRequired {
                sent: !proxy.url.username().is_empty(),
            },
            "TunnelUnsuccessful" => ProxyFailure::Refused {
                target: target.to_string(),
                status: None,
            },
            "TunnelUnexpectedEof" => ProxyFailure::Closed {
                target: target.to_string(),
            },
            _ => return None,
        };
        Some(ProxyError::new(proxy, failure))
    })
}

/// `Basic base64(user:password)` from the proxy URL's credentials, decoded
/// from the URL's percent-encoding.
fn authorization(proxy: &Proxy) -> Option<String> {
    let user = proxy.url.username();
    let password = proxy.url.password();
    if user.is_empty() && password.is_none() {
        return None;
    }
    let pair = format!(
        "{}:{}",
        percent_decode(user),
        percent_decode(password.unwrap_or(""))
    );
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
}

/// `%XX` sequences as the bytes they stand for (other bytes as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(url: &str) -> Proxy {
        Proxy {
            url: reqwest::Url::parse(url).unwrap(),
            from: "HTTPS_PROXY".into(),
        }
    }

    #[test]
    fn credentials_are_decoded_before_they_are_encoded() {
        assert_eq!(
            authorization(&proxy("http://Aladdin:open%20sesame@p:3128")).as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(authorization(&proxy("http://p:3128")), None);
    }

    #[test]
    fn failures_name_the_proxy_without_its_credentials() {
        let p = proxy("http://user:hunter2@p.example:3128");
        for failure in [
            ProxyFailure::Unreachable("connection refused".into()),
            ProxyFailure::Timeout(Duration::from_secs(2)),
            ProxyFailure::AuthRequired { sent: true },
            ProxyFailure::AuthRequired { sent: false },
            ProxyFailure::Refused {
                target: "c:443".into(),
                status: Some("403 Forbidden".into()),
            },
            ProxyFailure::Closed {
                target: "c:443".into(),
            },
        ] {
            let text = ProxyError::new(&p, failure).to_string();
            assert!(
                text.contains("http://p.example:3128 from HTTPS_PROXY"),
                "{text}"
            );
            assert!(
                !text.contains("hunter2") && !text.contains("user:"),
                "{text}"
            );
        }
        let text = ProxyError::new(&p, ProxyFailure::AuthRequired { sent: false }).to_string();
        assert!(
            text.contains("HTTPS_PROXY=http://USER:PASSWORD@p.example:3128"),
            "{text}"
        );
    }
}
