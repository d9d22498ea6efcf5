//! Every metric in one place, and the `/metrics`, `/health` and `/ready`
//! server on `metrics.listen`.
//!
//! Metrics go through the `metrics` facade to a Prometheus recorder
//! installed once per process. Label values are bounded: source and
//! destination names from the config, event kinds from the kind table,
//! HTTP status codes, a few error reasons, the endpoints a destination with
//! several lists (`urls`, `addresses`); never a file path or an event field.
//! Hot paths take [`::metrics::Counter`] handles once and add per chunk or
//! per batch, not per event.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use ::metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Unit};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::event::Kind;
use crate::source::listen::{self, HttpLimits, Listener, Report, Serve};

/// `tailhook_build_info{version}`: always 1.
pub const BUILD_INFO: &str = "tailhook_build_info";
/// Events framed from a source's lines, per destination reading it.
pub const SOURCE_EVENTS_READ: &str = "tailhook_source_events_read_total";
/// Bytes of a source read, per destination reading it.
pub const SOURCE_BYTES_READ: &str = "tailhook_source_bytes_read_total";
/// Lines (or array elements) that were not events, by `on_invalid` outcome.
pub const SOURCE_INVALID_LINES: &str = "tailhook_source_invalid_lines_total";
/// Files a source follows for a destination.
pub const SOURCE_FILES_WATCHED: &str = "tailhook_source_files_watched";
/// Bytes in a source's files that a destination has not acknowledged.
pub const SOURCE_LAG_BYTES: &str = "tailhook_source_lag_bytes";
/// Bytes a socket, HTTP or stdin source appended to the spool.
pub const INPUT_BYTES: &str = "tailhook_input_bytes_total";
/// Datagrams a `udp` source dropped because the spool was full.
pub const INPUT_DATAGRAMS_DROPPED: &str = "tailhook_input_datagrams_dropped_total";
/// 1 while a source takes no input because its spool cannot be written.
pub const INPUT_BLOCKED: &str = "tailhook_input_blocked";
/// Requests to an `http` source, by the status it answered.
pub const INPUT_HTTP_REQUESTS: &str = "tailhook_input_http_requests_total";
/// Connections a `tcp`, `unix` or `http` source is serving.
pub const INPUT_CONNECTIONS: &str = "tailhook_input_connections";
/// Connections a `tcp`, `unix` or `http` source closed on a timeout, by reason.
pub const INPUT_CONNECTIONS_TIMED_OUT: &str = "tailhook_input_connections_timed_out_total";
/// Events a destination's collector acknowledged.
pub const DEST_EVENTS_SENT: &str = "tailhook_destination_events_sent_total";
/// Batches a destination's collector acknowledged.
pub const DEST_BATCHES_SENT: &str = "tailhook_destination_batches_sent_total";
/// Body bytes a destination's collector acknowledged.
pub const DEST_BYTES_SENT: &str = "tailhook_destination_bytes_sent_total";
/// Events a destination's `events` selection left out, by kind.
pub const DEST_EVENTS_FILTERED: &str = "tailhook_destination_events_filtered_total";
/// HTTP answers a destination received, by status code.
pub const DEST_RESPONSES: &str = "tailhook_destination_responses_total";
/// Failed requests, by reason: `connect`, `timeout`, `tls`, `status`.
pub const DEST_ERRORS: &str = "tailhook_destination_errors_total";
/// Requests sent again after a failure.
pub const DEST_RETRIES: &str = "tailhook_destination_retries_total";
/// Bodies the collector refused as too large (413) and that were split in halves.
pub const DEST_BATCHES_SPLIT: &str = "tailhook_destination_batches_split_total";
/// Time from sending a request to its whole answer.
pub const DEST_REQUEST_DURATION: &str = "tailhook_destination_request_duration_seconds";
/// For destinations with acknowledgements (`forward`): time from writing a
/// batch to the collector's acknowledgement of it.
pub const DEST_ACK_DURATION: &str = "tailhook_destination_ack_duration_seconds";
/// Events written to the destination's dead-letter file.
pub const DEST_DEAD_LETTERED: &str = "tailhook_destination_events_dead_lettered_total";
/// Bytes in the destination's dead-letter files.
pub const DEST_DEAD_LETTER_BYTES: &str = "tailhook_destination_dead_letter_bytes";
/// 1 while the last request to the destination succeeded, else 0.
pub const DEST_UP: &str = "tailhook_destination_up";
/// Unix time of the destination's last successful delivery.
pub const DEST_LAST_SUCCESS: &str = "tailhook_destination_last_success_timestamp_seconds";
/// Events held in memory in batches being sent.
pub const DEST_EVENTS_BUFFERED: &str = "tailhook_destination_events_buffered";
/// 1 while one endpoint of a destination with several is in rotation, else 0.
pub const ENDPOINT_UP: &str = "tailhook_endpoint_up";
/// Batches one endpoint of a destination with several acknowledged.
pub const ENDPOINT_BATCHES_SENT: &str = "tailhook_endpoint_batches_sent_total";
/// Events one endpoint of a destination with several acknowledged.
pub const ENDPOINT_EVENTS_SENT: &str = "tailhook_endpoint_events_sent_total";
/// Failed requests and probes of one endpoint, by reason.
pub const ENDPOINT_FAILURES: &str = "tailhook_endpoint_failures_total";
/// Bytes in the spool.
pub const SPOOL_BYTES: &str = "tailhook_spool_bytes";
/// `spool.max_bytes`: the bound on [`SPOOL_BYTES`].
pub const SPOOL_MAX_BYTES: &str = "tailhook_spool_max_bytes";
/// Segment files in the spool.
pub const SPOOL_SEGMENTS: &str = "tailhook_spool_segments";
/// Checkpoint files written.
pub const CHECKPOINT_WRITES: &str = "tailhook_checkpoint_writes_total";
/// Checkpoint writes that failed.
pub const CHECKPOINT_WRITE_FAILURES: &str = "tailhook_checkpoint_write_failures_total";

/// Request duration buckets, in seconds: loopback to a slow collector.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and describes every
/// metric. Until it is called, metrics are recorded nowhere.
pub fn install() -> anyhow::Result<&'static PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(DEST_REQUEST_DURATION.into()),
            DURATION_BUCKETS,
        )
        .map_err(|e| anyhow::anyhow!("metrics setup: {e}"))?
        .set_buckets_for_metric(Matcher::Full(DEST_ACK_DURATION.into()), DURATION_BUCKETS)
        .map_err(|e| anyhow::anyhow!("metrics setup: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("metrics setup: {e}"))?;
    describe();
    ::metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(HANDLE.get_or_init(|| handle))
}

fn describe() {
    use Unit::{Bytes as B, Count as C, Seconds as S};
    describe_gauge!(BUILD_INFO, "tailhook's version, as a label; always 1");
    describe_counter!(
        SOURCE_EVENTS_READ,
        C,
        "Events framed from a source's lines, per destination reading it"
    );
    describe_counter!(
        SOURCE_BYTES_READ,
        B,
        "Bytes of a source read, per destination reading it"
    );
    describe_counter!(
        SOURCE_INVALID_LINES,
        C,
        "Lines or array elements that were not events, by on_invalid outcome"
    );
    describe_gauge!(
        SOURCE_FILES_WATCHED,
        C,
        "Files a source follows for a destination"
    );
    describe_gauge!(
        SOURCE_LAG_BYTES,
        B,
        "Bytes in a source's files that a destination has not acknowledged"
    );
    describe_counter!(
        INPUT_BYTES,
        B,
        "Bytes a socket, HTTP or stdin source appended to the spool"
    );
    describe_counter!(
        INPUT_DATAGRAMS_DROPPED,
        C,
        "Datagrams a udp source dropped because the spool was full or could not be written"
    );
    describe_gauge!(
        INPUT_BLOCKED,
        "1 while a source takes no input because its spool cannot be written (disk full), else 0"
    );
    describe_counter!(
        INPUT_HTTP_REQUESTS,
        C,
        "Requests to an http source, by answer status"
    );
    describe_gauge!(
        INPUT_CONNECTIONS,
        C,
        "Connections a tcp, unix or http source is serving (at most its max_connections)"
    );
    describe_counter!(
        INPUT_CONNECTIONS_TIMED_OUT,
        C,
        "Connections a tcp, unix or http source closed on a timeout, by reason: header_timeout, body_timeout, keepalive_timeout, idle_timeout, handshake_timeout, send_timeout"
    );
    describe_counter!(DEST_EVENTS_SENT, C, "Events the collector acknowledged");
    describe_counter!(DEST_BATCHES_SENT, C, "Batches the collector acknowledged");
    describe_counter!(DEST_BYTES_SENT, B, "Body bytes the collector acknowledged");
    describe_counter!(
        DEST_EVENTS_FILTERED,
        C,
        "Events the destination's events selection left out, by kind"
    );
    describe_counter!(
        DEST_RESPONSES,
        C,
        "HTTP answers from the collector, by status code"
    );
    describe_counter!(
        DEST_ERRORS,
        C,
        "Failed requests, by reason: connect, timeout, tls, status"
    );
    describe_counter!(DEST_RETRIES, C, "Requests sent again after a failure");
    describe_counter!(
        DEST_BATCHES_SPLIT,
        C,
        "Bodies the collector refused as too large (HTTP 413) that were split in halves and sent again"
    );
    describe_histogram!(
        DEST_REQUEST_DURATION,
        S,
        "Time from sending a request to its whole answer"
    );
    describe_histogram!(
        DEST_ACK_DURATION,
        S,
        "Destinations with acknowledgements (forward): time from writing a batch to the collector's acknowledgement of it"
    );
    describe_counter!(
        DEST_DEAD_LETTERED,
        C,
        "Events written to the dead-letter file"
    );
    describe_gauge!(
        DEST_DEAD_LETTER_BYTES,
        B,
        "Bytes in the destination's dead-letter files (bounded by dead_letter.max_bytes)"
    );
    describe_gauge!(
        DEST_UP,
        "1 while the last request to the destination succeeded, else 0"
    );
    describe_gauge!(
        DEST_LAST_SUCCESS,
        S,
        "Unix time of the last successful delivery"
    );
    describe_gauge!(
        DEST_EVENTS_BUFFERED,
        C,
        "Events held in memory in batches being sent"
    );
    describe_gauge!(
        ENDPOINT_UP,
        "1 while an endpoint (one of a destination's urls or addresses) is in rotation, 0 while it is taken out and probed"
    );
    describe_counter!(
        ENDPOINT_BATCHES_SENT,
        C,
        "Batches an endpoint of a destination with several acknowledged"
    );
    describe_counter!(
        ENDPOINT_EVENTS_SENT,
        C,
        "Events an endpoint of a destination with several acknowledged"
    );
    describe_counter!(
        ENDPOINT_FAILURES,
        C,
        "Failed requests and background probes of an endpoint, by reason: connect, timeout, tls, status"
    );
    describe_gauge!(SPOOL_BYTES, B, "Bytes in the spool");
    describe_gauge!(
        SPOOL_MAX_BYTES,
        B,
        "spool.max_bytes: the most bytes the spool holds before inputs wait"
    );
    describe_gauge!(SPOOL_SEGMENTS, C, "Segment files in the spool");
    describe_counter!(CHECKPOINT_WRITES, C, "Checkpoint files written");
    describe_counter!(
        CHECKPOINT_WRITE_FAILURES,
        C,
        "Checkpoint writes that failed"
    );
}

/// The counters one source's reader keeps for one destination.
#[derive(Clone)]
pub struct ReadMetrics {
    /// Events framed.
    pub events: Counter,
    /// Bytes consumed.
    pub bytes: Counter,
    /// Invalid lines forwarded wrapped.
    pub wrapped: Counter,
    /// Invalid lines dropped.
    pub dropped: Counter,
    /// Invalid lines dead-lettered.
    pub dead_lettered: Counter,
    /// Events left out by the selection, one per kind in [`Kind::ALL`] order
    /// (indexed by `kind as usize`).
    pub filtered: Vec<Counter>,
    /// Files followed.
    pub files: Gauge,
}

impl ReadMetrics {
    /// The handles for `source` read by `destination`.
    pub fn new(source: &str, destination: &str) -> ReadMetrics {
        let labels = [
            ("source", source.to_string()),
            ("destination", destination.to_string()),
        ];
        let invalid = |outcome: &'static str| {
            let mut l = labels.to_vec();
            l.push(("outcome", outcome.to_string()));
            ::metrics::counter!(SOURCE_INVALID_LINES, &l)
        };
        ReadMetrics {
            events: ::metrics::counter!(SOURCE_EVENTS_READ, &labels),
            bytes: ::metrics::counter!(SOURCE_BYTES_READ, &labels),
            wrapped: invalid("wrap"),
            dropped: invalid("drop"),
            dead_lettered: invalid("dead_letter"),
            filtered: Kind::ALL
                .iter()
                .map(|k| {
                    ::metrics::counter!(DEST_EVENTS_FILTERED, "destination" => destination.to_string(), "kind" => k.name())
                })
                .collect(),
            files: ::metrics::gauge!(SOURCE_FILES_WATCHED, &labels),
        }
    }
}

/// What `/ready` waits for: sources open, and every destination tried once.
#[derive(Default)]
pub struct Readiness {
    state: Mutex<ReadyState>,
}

#[derive(Default)]
struct ReadyState {
    sources_open: bool,
    /// Destination name → tried at least once.
    tried: BTreeMap<String, bool>,
}

impl Readiness {
    /// After a reload: these destinations run, and those marked `true`
    /// were kept running, so they keep what they had tried; the others
    /// start over.
    pub fn set_destinations<'a>(&self, destinations: impl IntoIterator<Item = (&'a str, bool)>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::take(&mut s.tried);
        s.tried = destinations
            .into_iter()
            .map(|(d, kept)| (d.to_string(), kept && old.get(d) == Some(&true)))
            .collect();
    }

    /// Every source is open (listeners bound, files found).
    pub fn sources_opened(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sources_open = true;
    }

    /// A destination was tried: a connection attempt or a request ended,
    /// however it went.
    pub fn tried(&self, destination: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = s.tried.get_mut(destination) {
            *t = true;
        }
    }

    /// None when ready, or why not.
    pub fn not_ready(&self) -> Option<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !s.sources_open {
            return Some("sources are not open yet".into());
        }
        let waiting: Vec<&str> = s
            .tried
            .iter()
            .filter(|(_, t)| !**t)
            .map(|(d, _)| d.as_str())
            .collect();
        if waiting.is_empty() {
            None
        } else {
            Some(format!(
                "destination(s) not tried yet: {}",
                waiting.join(", ")
            ))
        }
    }
}

/// Binds `listen`, so a port in use fails the start in words.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    let l = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("metrics: cannot listen on {listen}: {e}"))?;
    tracing::info!(address = %l.local_addr()?, "metrics listening on /metrics, /health, /ready");
    Ok(l)
}

/// Connections the metrics listener serves at once: scrapers and probes
/// need few, more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// The metrics listener's HTTP limits: the `http` input's default
/// `header_timeout` (10 s) and `max_header_bytes` (32 KiB), and a shorter
/// wait for a kept-alive connection's next request (scrapers reconnect
/// cheaply; an idle one holds one of 16 slots).
pub const LIMITS: HttpLimits = HttpLimits {
    header_timeout: std::time::Duration::from_secs(10),
    keepalive_timeout: std::time::Duration::from_secs(30),
    max_header_bytes: 32 << 10,
};

/// Serves `/metrics`, `/health` and `/ready` until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    handle: &'static PrometheusHandle,
    ready: Arc<Readiness>,
    cancel: CancellationToken,
) {
    let report = Report::metrics_listener();
    let how = Serve {
        report: report.clone(),
        max_connections: MAX_CONNECTIONS,
        tls: None,
        take_queued_unless: None,
    };
    let stop = cancel.clone();
    let open = listen::serve(Listener::Tcp(listener), how, &stop, move |conn, peer| {
        let (ready, cancel, report) = (ready.clone(), cancel.clone(), report.clone());
        async move {
            let answer = move |req: Request<hyper::body::Incoming>| {
                let r = answer(&req, handle, &ready);
                async move { r }
            };
            listen::serve_http(conn, &peer, LIMITS, &report, &cancel, answer).await;
        }
    })
    .await;
    open.wait().await;
}

fn answer(
    req: &Request<hyper::body::Incoming>,
    handle: &PrometheusHandle,
    ready: &Readiness,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        "/health" => (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
        "/ready" => match ready.not_ready() {
            None => (
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "ready\n".into(),
            ),
            Some(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!("not ready: {why}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics, /health or /ready\n".into(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The handles one destination's pipeline keeps.
pub struct DestMetrics {
    name: String,
    /// Events acknowledged.
    pub events_sent: Counter,
    /// Batches acknowledged.
    pub batches_sent: Counter,
    /// Body bytes acknowledged.
    pub bytes_sent: Counter,
    /// Requests sent again.
    pub retries: Counter,
    /// Bodies split in halves after a 413.
    pub batches_split: Counter,
    /// Events written to the dead-letter file.
    pub dead_lettered: Counter,
    /// Bytes in the dead-letter files.
    pub dead_letter_bytes: Gauge,
    /// 1 while deliveries go through.
    pub up: Gauge,
    /// Unix time of the last 2xx.
    pub last_success: Gauge,
    /// Events in batches in flight.
    pub buffered: Gauge,
    /// Request durations.
    pub duration: ::metrics::Histogram,
    /// Checkpoint files written.
    pub checkpoint_writes: Counter,
    /// Checkpoint writes that failed.
    pub checkpoint_failures: Counter,
}

impl DestMetrics {
    /// The handles of `destination`.
    pub fn new(destination: &str) -> DestMetrics {
        let d = || ("destination", destination.to_string());
        DestMetrics {
            name: destination.to_string(),
            events_sent: ::metrics::counter!(DEST_EVENTS_SENT, &[d()]),
            batches_sent: ::metrics::counter!(DEST_BATCHES_SENT, &[d()]),
            bytes_sent: ::metrics::counter!(DEST_BYTES_SENT, &[d()]),
            retries: ::metrics::counter!(DEST_RETRIES, &[d()]),
            batches_split: ::metrics::counter!(DEST_BATCHES_SPLIT, &[d()]),
            dead_lettered: ::metrics::counter!(DEST_DEAD_LETTERED, &[d()]),
            dead_letter_bytes: ::metrics::gauge!(DEST_DEAD_LETTER_BYTES, &[d()]),
            up: ::metrics::gauge!(DEST_UP, &[d()]),
            last_success: ::metrics::gauge!(DEST_LAST_SUCCESS, &[d()]),
            buffered: ::metrics::gauge!(DEST_EVENTS_BUFFERED, &[d()]),
            duration: ::metrics::histogram!(DEST_REQUEST_DURATION, &[d()]),
            checkpoint_writes: ::metrics::counter!(CHECKPOINT_WRITES, &[d()]),
            checkpoint_failures: ::metrics::counter!(CHECKPOINT_WRITE_FAILURES, &[d()]),
        }
    }

    /// Counts an HTTP answer.
    pub fn response(&self, status: u16) {
        ::metrics::counter!(DEST_RESPONSES, "destination" => self.name.clone(), "status" => status.to_string())
            .increment(1);
    }

    /// Records the acknowledgement latency of a batch. Only destinations
    /// with acknowledgements call it, so only they have the histogram.
    pub fn acked(&self, latency: std::time::Duration) {
        ::metrics::histogram!(DEST_ACK_DURATION, "destination" => self.name.clone())
            .record(latency.as_secs_f64());
    }

    /// Counts a failed request: `connect`, `timeout`, `tls` or `status`.
    pub fn error(&self, reason: &'static str) {
        ::metrics::counter!(DEST_ERRORS, "destination" => self.name.clone(), "reason" => reason)
            .increment(1);
    }

    /// The lag gauge of `source` for this destination.
    pub fn lag(&self, source: &str) -> Gauge {
        ::metrics::gauge!(SOURCE_LAG_BYTES, "source" => source.to_string(), "destination" => self.name.clone())
    }
}

/// The handles of one endpoint of a destination with several (`urls`,
/// `addresses`), labelled with the endpoint as configured (a URL without
/// credentials, or `host:port`): bounded by the config.
pub struct EndpointMetrics {
    labels: [(&'static str, String); 2],
    /// 1 while in rotation.
    pub up: Gauge,
    /// Batches acknowledged.
    pub batches_sent: Counter,
    /// Events acknowledged.
    pub events_sent: Counter,
}

impl EndpointMetrics {
    /// The handles of `endpoint` of `destination`.
    pub fn new(destination: &str, endpoint: &str) -> EndpointMetrics {
        let labels = [
            ("destination", destination.to_string()),
            ("endpoint", endpoint.to_string()),
        ];
        EndpointMetrics {
            up: ::metrics::gauge!(ENDPOINT_UP, &labels),
            batches_sent: ::metrics::counter!(ENDPOINT_BATCHES_SENT, &labels),
            events_sent: ::metrics::counter!(ENDPOINT_EVENTS_SENT, &labels),
            labels,
        }
    }

    /// Counts a failed request or probe: `connect`, `timeout`, `tls` or `status`.
    pub fn failure(&self, reason: &'static str) {
        let mut l = self.labels.to_vec();
        l.push(("reason", reason.to_string()));
        ::metrics::counter!(ENDPOINT_FAILURES, &l).increment(1);
    }
}

/// Seconds since the Unix epoch, for timestamp gauges.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
