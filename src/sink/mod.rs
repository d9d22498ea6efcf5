//! Delivering batches: the webhook client, the endpoints a destination
//! spreads its batches over, the retry policy and the dead-letter file.

pub mod batch_id;
pub mod beats;
pub mod client;
pub mod dead_letter;
pub mod endpoints;
pub mod forward;
pub mod msgpack;
pub mod proxy;
pub mod stream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::batch::{body_of, events_of, Batch};
use crate::config::{DestinationConfig, Format, RetryConfig, StatusAction, StatusPolicy};
use crate::metrics::{DestMetrics, Readiness};
use client::Reply;
use dead_letter::{AppendError, DeadLetter};
use endpoints::Endpoints;

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

/// How sending one body ended.
enum Sent {
    Delivered,
    /// The collector refused it: dead-letter it, or split it first.
    Refused(Refused),
    /// `hard` fired first.
    Abandoned,
}

/// A refusal.
struct Refused {
    /// The URL of the endpoint that refused, for logs.
    url: String,
    status: u16,
    body_start: String,
    /// Too large (413): split it, unless it is one event.
    split: bool,
}

/// What an HTTP status means for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// The collector or its configuration is wrong for now: try again later
    /// (by default 401, 403, 404, 407, 408, 429, 5xx, and anything unexpected).
    Retry,
    /// The collector refuses these events (by default 400, 415, 422, and
    /// 413 when `dead_letter_on` names it): dead-letter them.
    Reject,
    /// The body is too large (413: Fluentd's `body_size_limit`, Logstash's
    /// `max_content_length`, a proxy's limit): send it again in halves,
    /// down to single events; dead-letter a single event refused so.
    Split,
}

/// The verdict for a status code under a destination's `retry_on` and
/// `dead_letter_on`.
pub fn verdict(status: u16, policy: &StatusPolicy) -> Verdict {
    if (200..=299).contains(&status) {
        return Verdict::Delivered;
    }
    match policy.action(status) {
        StatusAction::Retry => Verdict::Retry,
        // Unless the user named 413 itself in `dead_letter_on`: then the
        // whole batch is dead-lettered, as asked.
        StatusAction::DeadLetter if status == 413 && !policy.dead_letters_code(413) => {
            Verdict::Split
        }
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
            "a proxy between tailhook and the collector asks for credentials (proxy authentication): put them in the proxy URL, proxy = \"http://USER:PASSWORD@host:port\" (or in HTTP_PROXY / HTTPS_PROXY)",
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
    let ceiling = backoff_ceiling(retry, attempt);
    let ms = ceiling.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(fastrand::u64(0..=ms))
}

/// `min(max, initial × 2^attempt)`: the longest backoff after `attempt`.
pub fn backoff_ceiling(retry: &RetryConfig, attempt: u32) -> Duration {
    retry
        .initial
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(retry.max)
}

/// One destination's sending side, shared by its in-flight deliveries.
pub struct Sender {
    name: String,
    endpoints: Endpoints,
    retry: RetryConfig,
    format: Format,
    policy: StatusPolicy,
    dead_letter: DeadLetter,
    dead_letter_max: u64,
    health: Health,
    full: FullLog,
    too_large: TooLargeLog,
    /// `batch.max_bytes`, for the advice when a collector says 413.
    max_bytes: usize,
    metrics: DestMetrics,
    ready: Arc<Readiness>,
}

impl Sender {
    /// The sender of a destination, to its endpoints.
    pub fn new(
        cfg: &DestinationConfig,
        endpoints: Endpoints,
        dead_letter: DeadLetter,
        ready: Arc<Readiness>,
    ) -> Sender {
        Sender {
            name: cfg.name.clone(),
            endpoints,
            retry: cfg.retry,
            format: cfg.format,
            policy: cfg.status_policy.clone(),
            dead_letter,
            dead_letter_max: cfg.dead_letter.max_bytes,
            health: Health::default(),
            full: FullLog::default(),
            too_large: TooLargeLog::default(),
            max_bytes: cfg.batch.max_bytes,
            metrics: DestMetrics::new(&cfg.name),
            ready,
        }
    }

    /// The destination's metric handles.
    pub fn metrics(&self) -> &DestMetrics {
        &self.metrics
    }

    /// The collectors it sends to.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Sets the dead-letter gauge from the files on disk (`resend` may have
    /// shrunk them meanwhile).
    pub fn measure_dead_letter(&self) {
        if let Ok(bytes) = self.dead_letter.bytes() {
            self.metrics.dead_letter_bytes.set(bytes as f64);
        }
    }

    /// Opens (and drops) a connection to the collector, so `/ready` can
    /// tell the destination was tried before it has anything to send. With
    /// several endpoints, to each (the destination counts as tried when the
    /// first has ended), and those that cannot be reached are taken out of
    /// rotation.
    pub async fn probe(&self) {
        for i in 0..self.endpoints.len() {
            let endpoint = self.endpoints.get(i);
            if let Some(crate::config::Route::Proxy(p)) = endpoint.client().route() {
                tracing::info!(destination = %self.name, url = %endpoint.url(), "connections go through proxy {}", p.describe());
            }
        }
        if self.endpoints.several() {
            // Tried once one of them has answered or failed.
            self.endpoints
                .probe_all(|| self.ready.tried(&self.name))
                .await;
            return;
        }
        let outcome = self.endpoints.get(0).client().connect_probe().await;
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
    ///
    /// A batch the collector refuses as too large (413, unless
    /// `dead_letter_on` names 413 itself) is split in halves, each sent in
    /// turn, first half first, and so on down to single events; a single
    /// event refused with 413 goes to the dead-letter file. The batch is
    /// acknowledged once every part is delivered or dead-lettered, so the
    /// checkpoint never passes a part that is not.
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
        let id = batch_id::of_positions(&self.name, &batch.positions);
        // The parts still to send, the next one last: body, the index of
        // its first event in the batch, how many events it holds.
        let mut parts = vec![(batch.body.clone(), 0, batch.events)];
        while let Some((body, from, events)) = parts.pop() {
            let part_id = if from == 0 && events == batch.events {
                id.clone()
            } else {
                batch_id::part(&id, from, from + events)
            };
            let refused = match self
                .send_until_answered(&body, &part_id, events, hard)
                .await
            {
                Sent::Delivered => continue,
                Sent::Abandoned => return (batch, Outcome::Abandoned),
                Sent::Refused(refused) => refused,
            };
            let m = &self.metrics;
            let lines = events_of(&body, self.format);
            if refused.split && lines.len() > 1 {
                self.too_large.split(&self.name, body.len(), self.max_bytes);
                m.batches_split.increment(1);
                let (first, second) = lines.split_at(lines.len() / 2);
                let mid = from + first.len();
                parts.push((body_of(second, self.format), mid, second.len()));
                parts.push((body_of(first, self.format), from, first.len()));
                continue;
            }
            if refused.split {
                self.too_large.split(&self.name, body.len(), self.max_bytes);
                tracing::error!(
                    destination = %self.name,
                    status = refused.status,
                    url = %refused.url,
                    bytes = body.len(),
                    "collector refused a single event of {} bytes as too large (HTTP 413): it goes to the dead-letter file",
                    body.len()
                );
            } else {
                tracing::error!(
                    destination = %self.name,
                    status = refused.status,
                    url = %refused.url,
                    body = %refused.body_start,
                    events,
                    "collector rejected a batch (HTTP {}); it is not retried: its events go to the dead-letter file",
                    refused.status
                );
            }
            if !self.write_dead_letters(&lines, &mut attempt, hard).await {
                return (batch, Outcome::Abandoned);
            }
        }
        (batch, Outcome::Acked)
    }

    /// Sends one body of `events` events until a collector takes it or
    /// refuses it, retrying everything else, or until `hard` fires. With
    /// several endpoints a failed try goes at once to the next endpoint in
    /// rotation; only when none is left does it wait with backoff (waking
    /// early when a probe puts one back).
    async fn send_until_answered(
        &self,
        body: &Bytes,
        id: &str,
        events: usize,
        hard: &CancellationToken,
    ) -> Sent {
        // The backoff exponent: how many times this body has waited.
        let mut attempt = 0u32;
        let mut tries = 0u32;
        // Made once: a forward batch sent again carries the same chunk id,
        // whichever endpoint takes it.
        let payload = self
            .endpoints
            .get(0)
            .client()
            .prepare(body, self.format, id);
        loop {
            if tries > 0 {
                self.metrics.retries.increment(1);
            }
            tries = tries.saturating_add(1);
            let i = self.endpoints.pick();
            let endpoint = self.endpoints.get(i);
            let url = endpoint.url();
            let started = Instant::now();
            // Racing the request against `hard` lets a shutdown stop waiting for a
            // collector that never answers; the batch stays unacknowledged.
            let sent = tokio::select! {
                r = endpoint.client().send(&payload) => r,
                _ = hard.cancelled() => return Sent::Abandoned,
            };
            self.ready.tried(&self.name);
            let m = &self.metrics;
            if sent.is_ok() {
                m.duration.record(started.elapsed().as_secs_f64());
            }
            let delivered = || {
                self.health.ok(&self.name);
                self.endpoints.delivered(i, events);
                m.up.set(1.0);
                m.last_success.set(crate::metrics::unix_now());
                m.events_sent.increment(events as u64);
                m.batches_sent.increment(1);
                m.bytes_sent.increment(payload.len() as u64);
            };
            let (problem, reason, retry_after) = match sent {
                Ok(Reply::Acked(latency)) => {
                    m.acked(latency);
                    delivered();
                    return Sent::Delivered;
                }
                Ok(Reply::Answer(answer)) => match verdict(answer.status, &self.policy) {
                    Verdict::Delivered => {
                        m.response(answer.status);
                        delivered();
                        return Sent::Delivered;
                    }
                    v @ (Verdict::Reject | Verdict::Split) => {
                        m.response(answer.status);
                        m.error("status");
                        // The collector answers; it refuses this body.
                        m.up.set(1.0);
                        self.endpoints.answered(i, "it answered a batch");
                        return Sent::Refused(Refused {
                            url: url.to_string(),
                            status: answer.status,
                            body_start: answer.body_start,
                            split: v == Verdict::Split,
                        });
                    }
                    Verdict::Retry => {
                        m.response(answer.status);
                        m.error("status");
                        (
                            answer_problem(answer.status, url, &answer.body_start),
                            "status",
                            answer.retry_after,
                        )
                    }
                },
                Err(e) => {
                    m.error(e.reason());
                    (format!("{e} ({url})"), e.reason(), None)
                }
            };
            if self.endpoints.failed(i, &problem, reason, retry_after) {
                continue;
            }
            m.up.set(0.0);
            self.health.failed(&self.name, &problem);
            let wait = backoff(&self.retry, attempt).max(retry_after.unwrap_or_default());
            attempt = attempt.saturating_add(1);
            let several = self.endpoints.several();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.endpoints.one_in_rotation(), if several => {}
                _ = hard.cancelled() => return Sent::Abandoned,
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

/// Logs, once per destination, that the collector refused a body as too
/// large and which `batch.max_bytes` would avoid it.
#[derive(Default)]
struct TooLargeLog {
    told: AtomicBool,
}

impl TooLargeLog {
    fn split(&self, name: &str, refused: usize, max_bytes: usize) {
        if self.told.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                destination = name,
                bytes = refused,
                "collector refused {refused} bytes as too large (HTTP 413)"
            );
            return;
        }
        let suggest = suggested_max_bytes(refused);
        tracing::warn!(
            destination = name,
            bytes = refused,
            max_bytes,
            "collector refused a body of {refused} bytes as too large (HTTP 413: over Fluentd's body_size_limit, Logstash's max_content_length or a proxy's limit); batches it refuses are split in halves and sent again, and a single event it refuses goes to the dead-letter file. Set batch.max_bytes below {refused} (now {max_bytes}), e.g. batch.max_bytes = \"{suggest}\", and below the collector's limit, so that batches are not refused first"
        );
    }
}

/// A `batch.max_bytes` below a refused body size: half of it, in KiB when
/// that is at least 1 KiB.
fn suggested_max_bytes(refused: usize) -> String {
    let half = refused / 2;
    if half >= 1024 {
        format!("{}KiB", half / 1024)
    } else {
        format!("{}", half.max(1))
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
        for s in [400, 415, 422] {
            assert_eq!(verdict(s, &p), Verdict::Reject, "{s}");
        }
        assert_eq!(verdict(413, &p), Verdict::Split);
        // 413 named in dead_letter_on: the whole batch is dead-lettered; in
        // retry_on, retried; a class in dead_letter_on still splits.
        let named = |retry_on: Vec<StatusMatch>, dead_letter_on: Vec<StatusMatch>| StatusPolicy {
            retry_on,
            dead_letter_on,
        };
        use crate::config::StatusMatch;
        assert_eq!(
            verdict(413, &named(vec![], vec![StatusMatch::Code(413)])),
            Verdict::Reject
        );
        assert_eq!(
            verdict(413, &named(vec![StatusMatch::Code(413)], vec![])),
            Verdict::Retry
        );
        assert_eq!(
            verdict(413, &named(vec![], vec![StatusMatch::Class(4)])),
            Verdict::Split
        );
        assert_eq!(suggested_max_bytes(1 << 20), "512KiB");
        assert_eq!(suggested_max_bytes(1000), "500");
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
