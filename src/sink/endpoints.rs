//! A destination's endpoints: the collectors of its `urls` (or a forward
//! destination's `addresses`), each with its own client and health, and the
//! rotation that spreads batches over them.
//!
//! Batches go round-robin to the endpoints in rotation. One that fails —
//! no connection, a timeout, a TLS failure, no acknowledgement, an answer
//! that is retried (5xx, 429, …) — is taken out of rotation and probed in
//! the background with backoff (a connection: TCP and, for TLS, the
//! handshake), and the batch goes at once to the next endpoint in
//! rotation. A probe that connects, or a batch that the endpoint takes, puts
//! it back. While every endpoint is out, batches try them in turn with the
//! destination's backoff, as they would a single collector. A refusal that
//! is about the batch (a 4xx that dead-letters it, a 413 that splits it)
//! says nothing against the endpoint.
//!
//! With one endpoint there is no rotation: nothing is probed in the
//! background and there are no per-endpoint logs or metrics, so a
//! destination with one `url` behaves as it always has.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::client::{Client, SetupError};
use super::{backoff_ceiling, url_for_logs};
use crate::config::{DestinationConfig, RetryConfig};
use crate::metrics::EndpointMetrics;

/// The endpoints of one destination.
pub struct Endpoints {
    destination: String,
    list: Vec<Endpoint>,
    rotation: Rotation,
    retry: RetryConfig,
}

/// One collector of a destination.
pub struct Endpoint {
    client: Client,
    /// Its URL without credentials (`tcp://host:port` for forward), for logs.
    url: String,
    trouble: Mutex<Trouble>,
    /// Told when it is taken out, so its probe starts.
    taken_out: Notify,
    /// With several endpoints only.
    metrics: Option<EndpointMetrics>,
}

/// What the probe of an endpoint out of rotation goes by.
#[derive(Default)]
struct Trouble {
    /// Failed requests and probes since it last answered a batch: the
    /// exponent of its probe backoff, so one that connects but keeps failing
    /// batches is tried less and less often (up to `retry.max`).
    failures: u32,
    /// A `Retry-After` it answered: the next probe waits at least this long.
    retry_after: Option<Duration>,
}

impl Endpoint {
    /// Its client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Its URL without credentials, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn trouble(&self) -> std::sync::MutexGuard<'_, Trouble> {
        self.trouble.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Endpoints {
    /// A client for each endpoint of `cfg` (reads its TLS files), all in
    /// rotation.
    pub fn new(cfg: &DestinationConfig) -> Result<Endpoints, SetupError> {
        let n = cfg.endpoint_count();
        let mut list = Vec::with_capacity(n);
        for i in 0..n {
            let one = cfg.endpoint(i);
            let url = url_for_logs(&one.url);
            let metrics = (n > 1).then(|| {
                let label = match &one.forward {
                    Some(f) => f.address.clone(),
                    None => url.clone(),
                };
                let m = EndpointMetrics::new(&cfg.name, &label);
                m.up.set(1.0);
                m
            });
            list.push(Endpoint {
                client: Client::new(&one)?,
                url,
                trouble: Mutex::new(Trouble::default()),
                taken_out: Notify::new(),
                metrics,
            });
        }
        Ok(Endpoints {
            destination: cfg.name.clone(),
            list,
            rotation: Rotation::new(n),
            retry: cfg.retry,
        })
    }

    /// Builds (and drops) the client of every endpoint of `cfg`: its TLS
    /// files can be read, its names are valid.
    pub fn check(cfg: &DestinationConfig) -> Result<(), SetupError> {
        (0..cfg.endpoint_count()).try_for_each(|i| Client::new(&cfg.endpoint(i)).map(drop))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// More than one: there is a rotation.
    pub fn several(&self) -> bool {
        self.list.len() > 1
    }

    /// Endpoint `i`.
    pub fn get(&self, i: usize) -> &Endpoint {
        &self.list[i]
    }

    /// The endpoint the next try of a batch goes to: the next in rotation,
    /// or, while none is, the next in turn.
    pub fn pick(&self) -> usize {
        if self.several() {
            self.rotation.pick()
        } else {
            0
        }
    }

    /// Resolves once an endpoint is in rotation (at once if one is).
    pub async fn one_in_rotation(&self) {
        self.rotation.one_in().await;
    }

    /// Endpoint `i` took a batch of `events` events.
    pub fn delivered(&self, i: usize, events: usize) {
        if let Some(m) = &self.list[i].metrics {
            m.batches_sent.increment(1);
            m.events_sent.increment(events as u64);
        }
        self.answered(i, "it took a batch");
    }

    /// Endpoint `i` answered (a batch taken, or refused for what it holds):
    /// it works; back in rotation if it was out.
    pub fn answered(&self, i: usize, how: &str) {
        if !self.several() {
            return;
        }
        let ep = &self.list[i];
        *ep.trouble() = Trouble::default();
        self.put_back(i, how);
    }

    fn put_back(&self, i: usize, how: &str) {
        let ep = &self.list[i];
        if self.rotation.put_back(i) {
            if let Some(m) = &ep.metrics {
                m.up.set(1.0);
            }
            tracing::info!(
                destination = %self.destination,
                endpoint = %ep.url,
                "endpoint {} is back in rotation: {how} ({} of {} in rotation)",
                ep.url,
                self.rotation.count(),
                self.list.len()
            );
        }
    }

    /// Endpoint `i` failed a batch: `problem` in words (naming the URL),
    /// `reason` for the metric, `retry_after` as the collector asked. With
    /// several endpoints it is taken out of rotation and probed. True when
    /// another endpoint is in rotation: the batch goes there at once.
    pub fn failed(
        &self,
        i: usize,
        problem: &str,
        reason: &'static str,
        retry_after: Option<Duration>,
    ) -> bool {
        if !self.several() {
            return false;
        }
        let ep = &self.list[i];
        if let Some(m) = &ep.metrics {
            m.failure(reason);
        }
        {
            let mut t = ep.trouble();
            t.failures = t.failures.saturating_add(1);
            t.retry_after = retry_after;
        }
        if self.rotation.take_out(i) {
            if let Some(m) = &ep.metrics {
                m.up.set(0.0);
            }
            let left = self.rotation.count();
            let then = if left > 0 {
                format!("its batches go to the {left} other endpoint(s) in rotation while it is probed in the background")
            } else {
                "no endpoint is left in rotation: delivery waits with backoff, trying each in turn, until one comes back".to_string()
            };
            tracing::warn!(
                destination = %self.destination,
                endpoint = %ep.url,
                "endpoint {} is taken out of rotation: {problem}; {then}",
                ep.url
            );
            ep.taken_out.notify_one();
        }
        self.rotation.count() > 0
    }

    /// Connects to every endpoint at once, and takes out of rotation each
    /// that cannot be reached as soon as that is known, before a batch fails
    /// there. `first` is called when the first probe has ended.
    pub async fn probe_all(&self, first: impl FnOnce()) {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let mut probes: FuturesUnordered<_> = self
            .list
            .iter()
            .enumerate()
            .map(|(i, ep)| async move { (i, ep.client.connect_probe().await) })
            .collect();
        let mut first = Some(first);
        while let Some((i, r)) = probes.next().await {
            if let Some(first) = first.take() {
                first();
            }
            let url = &self.list[i].url;
            match r {
                Ok(()) => {
                    tracing::debug!(destination = %self.destination, endpoint = %url, "endpoint reachable")
                }
                Err(e) => {
                    let problem = format!("not reachable at start: {e} ({url})");
                    self.failed(i, &problem, e.reason(), None);
                }
            }
        }
    }

    /// Whenever endpoint `i` is out of rotation, probes it with backoff
    /// until a probe connects (then it is back) or a batch put it back;
    /// returns when `stop` fires.
    pub async fn probe_while_out(&self, i: usize, stop: &CancellationToken) {
        let ep = &self.list[i];
        loop {
            if self.rotation.is_in(i) {
                tokio::select! {
                    _ = ep.taken_out.notified() => continue,
                    _ = stop.cancelled() => return,
                }
            }
            let wait = {
                let mut t = ep.trouble();
                probe_wait(&self.retry, t.failures).max(t.retry_after.take().unwrap_or_default())
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
            if self.rotation.is_in(i) {
                continue;
            }
            let probed = tokio::select! {
                r = ep.client.connect_probe() => r,
                _ = stop.cancelled() => return,
            };
            match probed {
                Ok(()) => self.put_back(i, "a probe connected to it"),
                Err(e) => {
                    if let Some(m) = &ep.metrics {
                        m.failure(e.reason());
                    }
                    let mut t = ep.trouble();
                    t.failures = t.failures.saturating_add(1);
                    tracing::debug!(
                        destination = %self.destination,
                        endpoint = %ep.url,
                        failures = t.failures,
                        "probe failed: {e}"
                    );
                }
            }
        }
    }
}

/// How long a probe waits after the `failures`-th failure: between half
/// and all of the backoff ceiling, so an endpoint that connects but fails
/// batches is not put back at once.
fn probe_wait(retry: &RetryConfig, failures: u32) -> Duration {
    let ceiling = backoff_ceiling(retry, failures.saturating_sub(1));
    let half = ceiling / 2;
    let ms = (ceiling - half).as_millis().min(u128::from(u64::MAX)) as u64;
    half + Duration::from_millis(fastrand::u64(0..=ms))
}

/// Which endpoints are in rotation, and whose turn is next: [`Endpoints`]
/// without the I/O.
struct Rotation {
    up: Vec<AtomicBool>,
    /// The index to start the next pick at.
    next: Mutex<usize>,
    /// How many are up; deliveries waiting for one to come back watch it.
    count: watch::Sender<usize>,
}

impl Rotation {
    fn new(n: usize) -> Rotation {
        Rotation {
            up: (0..n).map(|_| AtomicBool::new(true)).collect(),
            next: Mutex::new(0),
            count: watch::Sender::new(n),
        }
    }

    /// The first endpoint in rotation from the cursor on, or the one at the
    /// cursor when none is; the cursor moves past it.
    fn pick(&self) -> usize {
        let n = self.up.len();
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let start = *next % n;
        let i = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.up[i].load(Ordering::Acquire))
            .unwrap_or(start);
        *next = (i + 1) % n;
        i
    }

    fn is_in(&self, i: usize) -> bool {
        self.up[i].load(Ordering::Acquire)
    }

    fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// True when it was in.
    fn take_out(&self, i: usize) -> bool {
        let was = self.up[i].swap(false, Ordering::AcqRel);
        if was {
            self.count.send_modify(|n| *n -= 1);
        }
        was
    }

    /// True when it was out.
    fn put_back(&self, i: usize) -> bool {
        let was_out = !self.up[i].swap(true, Ordering::AcqRel);
        if was_out {
            self.count.send_modify(|n| *n += 1);
        }
        was_out
    }

    async fn one_in(&self) {
        let mut rx = self.count.subscribe();
        // The sender lives as long as `self`: wait_for cannot fail here.
        let _ = rx.wait_for(|&n| n > 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(r: &Rotation, n: usize) -> Vec<usize> {
        (0..n).map(|_| r.pick()).collect()
    }

    #[test]
    fn batches_go_round_robin_over_the_endpoints_in_rotation() {
        let r = Rotation::new(3);
        assert_eq!(picks(&r, 6), [0, 1, 2, 0, 1, 2]);
        assert!(r.take_out(1));
        assert!(!r.take_out(1), "taken out once");
        assert_eq!(r.count(), 2);
        // The two left share the batches evenly.
        assert_eq!(picks(&r, 4), [0, 2, 0, 2]);
        assert!(r.put_back(1));
        assert!(!r.put_back(1), "put back once");
        assert_eq!(r.count(), 3);
        assert_eq!(picks(&r, 3), [0, 1, 2]);
    }

    #[test]
    fn with_every_endpoint_out_each_is_tried_in_turn() {
        let r = Rotation::new(2);
        r.take_out(0);
        assert_eq!(picks(&r, 3), [1, 1, 1], "only the one in rotation");
        r.take_out(1);
        assert_eq!(r.count(), 0);
        assert_eq!(picks(&r, 4), [0, 1, 0, 1]);
        r.put_back(0);
        assert_eq!(picks(&r, 2), [0, 0]);
    }

    #[tokio::test]
    async fn a_waiting_delivery_wakes_when_an_endpoint_comes_back() {
        let r = std::sync::Arc::new(Rotation::new(2));
        r.take_out(0);
        r.take_out(1);
        let waiting = {
            let r = r.clone();
            tokio::spawn(async move { r.one_in().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        r.put_back(1);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken")
            .unwrap();
        // One in rotation already: no wait.
        r.one_in().await;
    }

    #[test]
    fn probes_back_off_from_half_the_ceiling() {
        let retry = RetryConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for (failures, ceiling) in [(1, 100), (2, 200), (3, 400), (10, 2000), (u32::MAX, 2000)] {
            for _ in 0..50 {
                let w = probe_wait(&retry, failures);
                assert!(
                    w >= Duration::from_millis(ceiling / 2) && w <= Duration::from_millis(ceiling),
                    "{failures}: {w:?}"
                );
            }
        }
    }
}
