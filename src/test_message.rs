//! `tailhook test`: sends the webhook integration's test message to a
//! destination and says, in words, what happened.

use std::time::Duration;

use crate::config::{redact_url, DestinationConfig, Format};
use crate::sink::client::{Client, Reply};
use crate::sink::{verdict, Verdict};

/// The test message of the webhook integration (the reference page's).
pub const TEST_MESSAGE: &str = r#"{"title":"Test","source":"Wallarm","type":"Info","domain":"example.com","threat":"Medium","link":"https://my.wallarm.com/object/555","summary":"[Test Message] New vulnerability identified"}"#;

/// The body of a test request in a destination's format.
pub fn test_body(format: Format) -> bytes::Bytes {
    match format {
        Format::Json => format!("[{TEST_MESSAGE}]").into(),
        Format::Ndjson => format!("{TEST_MESSAGE}\n").into(),
    }
}

/// What sending the test message to one destination gave.
#[derive(Debug)]
pub struct TestReport {
    /// The destination's name.
    pub destination: String,
    /// `POST https://…` (password redacted; ` via proxy http://host:port`
    /// through a proxy), `forward tcp://… tag …` or `beats tcp://…`.
    pub target: String,
    /// What the collector answered (`HTTP 200`, `acknowledged`) and how
    /// fast, or the failure in words.
    pub result: Result<(String, Duration), String>,
}

impl std::fmt::Display for TestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.result {
            Ok((answer, latency)) => write!(
                f,
                "{}: OK: {answer} in {} ms ({})",
                self.destination,
                latency.as_millis(),
                self.target
            ),
            Err(why) => write!(f, "{}: FAILED: {why} ({})", self.destination, self.target),
        }
    }
}

/// Sends the test message to every endpoint of the destination (its
/// `urls` or `addresses`, all at once), one report each, in config order.
pub async fn send_each(dest: &DestinationConfig) -> Vec<TestReport> {
    let endpoints: Vec<DestinationConfig> = (0..dest.endpoint_count())
        .map(|i| dest.endpoint(i))
        .collect();
    futures_util::future::join_all(endpoints.iter().map(send)).await
}

/// Sends the test message once, with the destination's method, headers, TLS
/// settings and timeouts, to its `url` (or `address`; the first of several).
/// No retry: the point is to see the first answer.
pub async fn send(dest: &DestinationConfig) -> TestReport {
    let target = match (&dest.forward, &dest.beats) {
        (Some(f), _) => format!(
            "forward {}://{} tag {}",
            if f.tls { "tls" } else { "tcp" },
            f.address,
            f.tag
        ),
        (None, Some(b)) => format!(
            "beats {}://{}",
            if b.tls { "tls" } else { "tcp" },
            b.address
        ),
        (None, None) => {
            // An environment that names no usable proxy fails Client::new
            // below, in words.
            let via = crate::config::route(&dest.proxy, &dest.url, |k| std::env::var(k).ok())
                .map(|r| r.suffix())
                .unwrap_or_default();
            format!("{} {}{via}", dest.method.as_str(), redact_url(&dest.url))
        }
    };
    let sent = match Client::new(dest) {
        Err(e) => Err(e.to_string()),
        Ok(client) => {
            let body = test_body(dest.format);
            let id = crate::sink::batch_id::of_body(&dest.name, &body);
            let payload = client.prepare(&body, dest.format, &id);
            client.send(&payload).await.map_err(|e| e.to_string())
        }
    };
    let result = match sent {
        Err(e) => Err(e),
        Ok(Reply::Acked(latency)) => Ok(("acknowledged".to_string(), latency)),
        Ok(Reply::Answer(a)) => match verdict(a.status, &dest.status_policy) {
            Verdict::Delivered => Ok((format!("HTTP {}", a.status), a.latency)),
            _ => {
                let reason = reqwest::StatusCode::from_u16(a.status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                let body = if a.body_start.is_empty() {
                    "(empty body)".to_string()
                } else {
                    format!("body starts: {}", a.body_start)
                };
                let hint = crate::sink::hint(a.status)
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                Err(format!("HTTP {} {reason}: {body}{hint}", a.status))
            }
        },
    };
    TestReport {
        destination: dest.name.clone(),
        target,
        result,
    }
}
