//! Delivering batches: the webhook client, the retry policy and the
//! dead-letter file.

pub mod client;
pub mod dead_letter;
pub mod forward;
pub mod msgpack;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::batch::{events_of, Batch};
use crate::config::{DestinationConfig, Format, RetryConfig, StatusAction, StatusPolicy};
use crate::metrics::{DestMetrics, Readiness};
use client::{Client, Reply};
use dead_letter::{AppendError, DeadLetter};

/// While the dead-letter file is full, it is looked at again at least this
/// often, so delivery resumes soon after `resend` made room.
const FULL_RECHECK: Duration = Duration::from_secs(5);

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx, or set aside in the dead-letter file: the positions may move.
    Acked,
    /// Given up at shutdown: the events stay unacknowledged and are read again.
    Abandoned,
}

/// What an HTTP status means for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// The collector or its configuration is wrong for now: try again later
    /// (by default 401, 403, 404, 407, 408, 429, 5xx, and anything unexpected).
    Retry,
    /// The collector refuses these events (by default 400, 413, 415, 422):
    /// dead-letter them.
    Reject,
}

/// The verdict for a status code under a destination's `retry_on` and
/// `dead_letter_on`.
pub fn verdict(status: u16, policy: &StatusPolicy) -> Verdict {
    if (200..=299).contains(&status) {
        return Verdict::Delivered;
    }
    match policy.action(status) {
        StatusAction::Retry => Verdict::Retry,
        StatusAction::DeadLetter => Verdict::Reject,
    }
}

/// What to look at when a collector keeps answering `status`.
pub fn hint(status: u16) -> Option<&'static str> {
    match status {
        401 | 403 => Some(
            "check the destination's `headers` and any user:password in `url`: the collector refuses the credentials",
        ),
        404 => Some("check the URL path: the collector has nothing there"),
        407 => Some(
            "a proxy between tailhook and the collector asks for credentials (proxy authentication)",
        ),
        _ => None,
    }
}

/// A collector's URL as logs show it: without user name or password.
pub fn url_for_logs(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// A failed answer in words: status, URL, the start of the body and what
/// to check.
fn answer_problem(status: u16, url: &str, body_start: &str) -> String {
    let mut s = format!("HTTP {status} from {url}");
    if !body_start.is_empty() {
        s += &format!(": {body_start}");
    }
    if let Some(h) = hint(status) {
        s += &format!("; {h}");
    }
    s
}

/// Full-jitter exponential backoff: a random wait up to
/// `min(max, initial × 2^attempt)`.
pub fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let ceiling = retry
        .initial
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(retry.max);
    let ms = ceiling.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(fastrand::u64(0..=ms))
}

/// One destination's sending side, shared by its in-flight deliveries.
pub struct Sender {
    name: String,
    webhook: Client,
    retry: RetryConfig,
    format: Format,
    policy: StatusPolicy,
    /// The collector's URL without credentials, for logs.
    url: String,
    dead_letter: DeadLetter,
    dead_letter_max: u64,
    health: Health,
    full: FullLog,
    metrics: DestMetrics,
    ready: Arc<Readiness>,
}

impl Sender {
    /// The sender of a destination.
    pub fn new(
        cfg: &DestinationConfig,
        webhook: Client,
        dead_letter: DeadLetter,
        ready: Arc<Readiness>,
    ) -> Sender {
        Sender {
            name: cfg.name.clone(),
            webhook,
            retry: cfg.retry,
            format: cfg.format,
            policy: cfg.status_policy.clone(),
            url: url_for_logs(&cfg.url),
            dead_letter,
            dead_letter_max: cfg.dead_letter.max_bytes,
            health: Health::default(),
            full: FullLog::default(),
            metrics: DestMetrics::new(&cfg.name),
            ready,
        }
    }

    /// The destination's metric handles.
    pub fn metrics(&self) -> &DestMetrics {
        &self.metrics
    }

    /// Sets the dead-letter gauge from the files on disk (`resend` may have
    /// shrunk them meanwhile).
    pub fn measure_dead_letter(&self) {
        if let Ok(bytes) = self.dead_letter.bytes() {
            self.metrics.dead_letter_bytes.set(bytes as f64);
        }
    }

    /// Opens (and drops) a connection to the collector, so `/ready` can
    /// tell the destination was tried before it has anything to send.
    pub async fn probe(&self) {
        let outcome = self.webhook.connect_probe().await;
        match &outcome {
            Ok(()) => tracing::debug!(destination = %self.name, "collector reachable"),
            Err(e) => {
                tracing::warn!(destination = %self.name, "collector not reachable at start: {e}; events wait until it is")
            }
        }
        self.ready.tried(&self.name);
    }

    /// Delivers a batch, retrying until it is acknowledged or rejected, or
    /// until `hard` fires. Returns the batch back with the outcome.
    pub async fn deliver(&self, batch: Batch, hard: &CancellationToken) -> (Batch, Outcome) {
        let mut attempt = 0u32;
        if !batch.dead_letters.is_empty() {
            let lines = batch.dead_letters.clone();
            if !self.write_dead_letters(&lines, &mut attempt, hard).await {
                return (batch, Outcome::Abandoned);
            }
        }
        if batch.events == 0 {
            return (batch, Outcome::Acked);
        }
        // Made once: a forward batch sent again carries the same chunk id.
        let payload = self.webhook.prepare(&batch.body, self.format);
        loop {
            // Racing the request against `hard` lets a shutdown stop waiting for a
            // collector that never answers; the batch stays unacknowledged.
            if attempt > 0 {
                self.metrics.retries.increment(1);
            }
            let started = Instant::now();
            let sent = tokio::select! {
                r = self.webhook.send(&payload) => r,
                _ = hard.cancelled() => return (batch, Outcome::Abandoned),
            };
            self.ready.tried(&self.name);
            let m = &self.metrics;
            if sent.is_ok() {
                m.duration.record(started.elapsed().as_secs_f64());
            }
            let delivered = || {
                self.health.ok(&self.name);
                m.up.set(1.0);
                m.last_success.set(crate::metrics::unix_now());
                m.events_sent.increment(batch.events as u64);
                m.batches_sent.increment(1);
                m.bytes_sent.increment(payload.len() as u64);
            };
            let (problem, retry_after) = match sent {
                Ok(Reply::Acked(_)) => {
                    delivered();
                    return (batch, Outcome::Acked);
                }
                Ok(Reply::Answer(answer)) => match verdict(answer.status, &self.policy) {
                    Verdict::Delivered => {
                        m.response(answer.status);
                        delivered();
                        return (batch, Outcome::Acked);
                    }
                    Verdict::Reject => {
                        m.response(answer.status);
                        m.error("status");
                        // The collector answers; it refuses this batch.
                        m.up.set(1.0);
                        tracing::error!(
                            destination = %self.name,
                            status = answer.status,
                            url = %self.url,
                            body = %answer.body_start,
                            events = batch.events,
                            "collector rejected a batch (HTTP {}); it is not retried: its events go to the dead-letter file",
                            answer.status
                        );
                        let events = events_of(&batch.body, self.format);
                        if !self.write_dead_letters(&events, &mut attempt, hard).await {
                            return (batch, Outcome::Abandoned);
                        }
                        return (batch, Outcome::Acked);
                    }
                    Verdict::Retry => {
                        m.response(answer.status);
                        m.error("status");
                        (
                            answer_problem(answer.status, &self.url, &answer.body_start),
                            answer.retry_after,
                        )
                    }
                },
                Err(e) => {
                    m.error(e.reason());
                    (format!("{e} ({})", self.url), None)
                }
            };
            m.up.set(0.0);
            self.health.failed(&self.name, &problem);
            let wait = backoff(&self.retry, attempt).max(retry_after.unwrap_or_default());
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = hard.cancelled() => return (batch, Outcome::Abandoned),
            }
        }
    }

    /// Appends to the dead-letter file, retrying a failed write (a full disk)
    /// with backoff, and waiting while the file is at `dead_letter.max_bytes`
    /// (the destination pauses: this batch, and so reading, waits). False
    /// when `hard` fired first.
    async fn write_dead_letters(
        &self,
        lines: &[Bytes],
        attempt: &mut u32,
        hard: &CancellationToken,
    ) -> bool {
        loop {
            let dl = &self.dead_letter;
            let result = dl.append_within(lines.iter().map(|b| &b[..]), self.dead_letter_max);
            let mut wait = backoff(&self.retry, *attempt);
            match result {
                Ok(bytes) => {
                    self.metrics.dead_lettered.increment(lines.len() as u64);
                    self.metrics.dead_letter_bytes.set(bytes as f64);
                    self.full.room(&self.name, dl, bytes);
                    return true;
                }
                Err(AppendError::Full { held, adding }) => {
                    self.metrics.dead_letter_bytes.set(held as f64);
                    self.full
                        .full(&self.name, dl, held, adding, self.dead_letter_max);
                    wait = wait.min(FULL_RECHECK);
                }
                Err(AppendError::Io(e)) => self.health.failed(
                    &self.name,
                    &format!("cannot write dead-letter file {}: {e}", dl.path().display()),
                ),
            }
            *attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = hard.cancelled() => return false,
            }
        }
    }
}

/// Logs a destination's failures at state changes and then at most once a
/// minute, not once per retry.
#[derive(Default)]
struct Health {
    failing: AtomicBool,
    failures: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl Health {
    fn failed(&self, name: &str, problem: &str) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        let first = !self.failing.swap(true, Ordering::Relaxed);
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if first || due {
            *last = Some(Instant::now());
            tracing::warn!(
                destination = name,
                failed_attempts = n,
                "delivery failed: {problem}; retrying with backoff (events wait at their source)"
            );
        } else {
            tracing::debug!(
                destination = name,
                failed_attempts = n,
                "delivery failed: {problem}"
            );
        }
    }

    fn ok(&self, name: &str) {
        if self.failing.swap(false, Ordering::Relaxed) {
            let n = self.failures.swap(0, Ordering::Relaxed);
            tracing::info!(
                destination = name,
                "delivering again after {n} failed attempts"
            );
        }
    }
}

/// Logs that the dead-letter file is full when it fills, then at most once
/// a minute, and when there is room again.
#[derive(Default)]
struct FullLog {
    state: Mutex<Option<Instant>>,
}

impl FullLog {
    fn full(&self, name: &str, dl: &DeadLetter, held: u64, adding: u64, max: u64) {
        let mut last = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            destination = name,
            path = %dl.path().display(),
            bytes = held,
            max_bytes = max,
            "the dead-letter file {} is full: it holds {held} bytes and {adding} more would pass dead_letter.max_bytes ({max}); delivery to `{name}` pauses (nothing is dropped, nothing more is read) until `tailhook dead-letter resend` or an operator makes room",
            dl.path().display()
        );
    }

    fn room(&self, name: &str, dl: &DeadLetter, bytes: u64) {
        let mut last = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if last.take().is_some() {
            tracing::info!(
                destination = name,
                path = %dl.path().display(),
                bytes,
                "the dead-letter file {} has room again ({bytes} bytes now): delivery resumes",
                dl.path().display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let p = StatusPolicy::default();
        for s in [200, 201, 204] {
            assert_eq!(verdict(s, &p), Verdict::Delivered);
        }
        for s in [401, 403, 404, 407, 408, 429, 500, 502, 503, 504, 301] {
            assert_eq!(verdict(s, &p), Verdict::Retry, "{s}");
        }
        for s in [400, 413, 415, 422] {
            assert_eq!(verdict(s, &p), Verdict::Reject, "{s}");
        }
        let p = StatusPolicy {
            retry_on: vec![crate::config::StatusMatch::Class(4)],
            dead_letter_on: vec![crate::config::StatusMatch::Class(2)],
        };
        assert_eq!(
            verdict(204, &p),
            Verdict::Delivered,
            "2xx is always delivered"
        );
        assert_eq!(verdict(400, &p), Verdict::Retry);
    }

    #[test]
    fn problems_name_the_status_the_url_and_what_to_check() {
        let url =
            reqwest::Url::parse("https://user:pw@collector.example:9880/wallarm.events").unwrap();
        let shown = url_for_logs(&url);
        assert_eq!(shown, "https://collector.example:9880/wallarm.events");
        let p = answer_problem(401, &shown, "bad token");
        assert_eq!(p, "HTTP 401 from https://collector.example:9880/wallarm.events: bad token; check the destination's `headers` and any user:password in `url`: the collector refuses the credentials");
        assert!(answer_problem(404, &shown, "")
            .ends_with("/wallarm.events; check the URL path: the collector has nothing there"));
        assert!(answer_problem(407, &shown, "").contains("proxy authentication"));
        assert_eq!(
            answer_problem(503, &shown, ""),
            "HTTP 503 from https://collector.example:9880/wallarm.events"
        );
    }

    #[test]
    fn backoff_is_bounded() {
        let r = RetryConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in [0, 1, 5, 40, u32::MAX] {
            let ceiling = (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(20)))
                .min(Duration::from_secs(2));
            for _ in 0..50 {
                assert!(backoff(&r, attempt) <= ceiling);
            }
        }
    }
}
