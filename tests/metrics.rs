//! Observability end to end: the real binary's `/metrics` (Prometheus text,
//! checked by `promtool check metrics` and by our own parser), `/health` and
//! `/ready`, and its logging flags (`--log-format`, `--log-level`).
//!
//! The counters are compared with what the collector emulator saw: after a
//! known run, every delivery counter must EQUAL the collector's own count.
//! There is no signal for "a metric has been updated", so `/metrics` is
//! polled (every 50 ms, bounded) until the values settle; every other wait
//! is on the collector or on tailhook's log.
//!
//! `promtool` comes from Debian's `prometheus` package
//! (`apt-get install -y --no-install-recommends prometheus`); without it the
//! tests that need it fail and say so.

mod support;

use support::check::{stop, wait_events, wait_log};

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::check::{assert_each_exactly_once, dead_port};
use support::collector::{fluentd, Collector, Options};
use support::inputs::{input, listen_addr, spool_segments};
use support::metrics::{assert_promtool_clean, get, metrics_addr, wait_for_page, Page, LISTENING};
use support::process::{bin, run_cmd, Tailhook};
use support::setup::{append, destination, hits, wallarm_hits, Setup};

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(20);

/// The Wallarm samples shipped with the project: 14 lines, 15 events.
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sample-events.ndjson");

// Metric names: the exposition is a public interface, so they are spelled
// out here rather than taken from src/metrics.rs.
const BUILD_INFO: &str = "tailhook_build_info";
const EVENTS_READ: &str = "tailhook_source_events_read_total";
const BYTES_READ: &str = "tailhook_source_bytes_read_total";
const INVALID: &str = "tailhook_source_invalid_lines_total";
const FILES_WATCHED: &str = "tailhook_source_files_watched";
const LAG: &str = "tailhook_source_lag_bytes";
const INPUT_BYTES: &str = "tailhook_input_bytes_total";
const SENT: &str = "tailhook_destination_events_sent_total";
const BATCHES: &str = "tailhook_destination_batches_sent_total";
const BYTES_SENT: &str = "tailhook_destination_bytes_sent_total";
const FILTERED: &str = "tailhook_destination_events_filtered_total";
const RESPONSES: &str = "tailhook_destination_responses_total";
const ERRORS: &str = "tailhook_destination_errors_total";
const RETRIES: &str = "tailhook_destination_retries_total";
const DURATION: &str = "tailhook_destination_request_duration_seconds";
const ACK_DURATION: &str = "tailhook_destination_ack_duration_seconds";
const DEAD_LETTERED: &str = "tailhook_destination_events_dead_lettered_total";
const DEAD_LETTER_BYTES: &str = "tailhook_destination_dead_letter_bytes";
const UP: &str = "tailhook_destination_up";
const LAST_SUCCESS: &str = "tailhook_destination_last_success_timestamp_seconds";
const BUFFERED: &str = "tailhook_destination_events_buffered";
const SPOOL_BYTES: &str = "tailhook_spool_bytes";
const SPOOL_SEGMENTS: &str = "tailhook_spool_segments";
const SPOOL_MAX_BYTES: &str = "tailhook_spool_max_bytes";
const CHECKPOINT_WRITES: &str = "tailhook_checkpoint_writes_total";
const CHECKPOINT_FAILURES: &str = "tailhook_checkpoint_write_failures_total";

// ---- helpers ------------------------------------------------------------------

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn file_size(p: &Path) -> f64 {
    std::fs::metadata(p).unwrap().len() as f64
}

fn sample_lines() -> Vec<String> {
    let text = std::fs::read_to_string(SAMPLES).expect("read examples/sample-events.ndjson");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 14, "examples/sample-events.ndjson changed");
    lines
}

/// Every sample belongs to a family with `# HELP` and `# TYPE`, and the
/// families tailhook names are all `tailhook_`.
fn assert_described(page: &Page) {
    for s in &page.samples {
        let family = match page.types.get(&s.name) {
            Some(_) => s.name.clone(),
            None => ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| s.name.strip_suffix(suffix))
                .filter(|f| page.types.get(*f).map(String::as_str) == Some("histogram"))
                .unwrap_or_else(|| panic!("{} has no # TYPE:\n{}", s.name, page.text))
                .to_string(),
        };
        assert!(
            page.help.get(&family).is_some_and(|h| !h.is_empty()),
            "{family} has no # HELP"
        );
        assert!(family.starts_with("tailhook_"), "{family}: not tailhook_");
    }
}

/// The request-duration histogram of `destination` is well formed: buckets
/// that never decrease, `+Inf` equal to `_count`. Returns `_count`.
fn histogram_count(page: &Page, destination: &str) -> f64 {
    histogram_count_of(page, DURATION, destination)
}

/// The histogram `name` of `destination` is well formed (see
/// [`histogram_count`]). Returns `_count`.
fn histogram_count_of(page: &Page, name: &str, destination: &str) -> f64 {
    let d = [("destination", destination)];
    let mut buckets: Vec<(f64, f64)> = page
        .select(&format!("{name}_bucket"), &d)
        .iter()
        .map(|s| {
            let le = &s.labels["le"];
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, s.value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert!(
        buckets.len() >= 2 && buckets.last().unwrap().0.is_infinite(),
        "no buckets with +Inf:\n{}",
        page.matching(name)
    );
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets decrease:\n{}",
        page.matching(name)
    );
    let count = page.value(&format!("{name}_count"), &d);
    assert_eq!(buckets.last().unwrap().1, count, "+Inf bucket != _count");
    count
}

// ---- 1. after a known run, the counters equal what the collector received ----

/// Events the selection `["hit", "vulnerability:high", "other"]` leaves out
/// of examples/sample-events.ndjson, by kind. The samples hold: test 1 (passes
/// every selection), hit 3, vulnerability 4 (high 2, medium 1, low 1),
/// security_issue 1, trigger 2, system 1, rule 1, scope 1, other 1.
const SAMPLES_FILTERED: [(&str, f64); 9] = [
    ("test", 0.0),
    ("hit", 0.0),
    ("vulnerability", 2.0),
    ("security_issue", 1.0),
    ("system", 1.0),
    ("rule", 1.0),
    ("trigger", 2.0),
    ("scope", 1.0),
    ("other", 0.0),
];
/// Sample events the selection lets through: test 1, hit 3,
/// vulnerability:high 2, other 1.
const SAMPLES_SELECTED: usize = 7;

#[test]
fn counters_after_a_known_run_equal_what_the_collector_received() {
    let started = unix_now();
    let setup = Setup::new();

    // Source `wrapped` (on_invalid = wrap): 40 hits, the 15 samples and 3
    // invalid lines. Source `dropped` (on_invalid = drop): 20 hits and 2
    // invalid lines.
    let a = setup.log("a.ndjson");
    append(&a, &hits(0, 20, 120));
    append(&a, &sample_lines());
    append(
        &a,
        &[
            "this line is not JSON".to_string(),
            "42".to_string(),
            "\"a bare string\"".to_string(),
        ],
    );
    append(&a, &hits(20, 20, 120));
    let b = setup.log("b.ndjson");
    append(&b, &hits(1000, 10, 120));
    append(&b, &["{broken".to_string(), "true".to_string()]);
    append(&b, &hits(1010, 10, 120));
    let expected_events = 40 + SAMPLES_SELECTED + 3 + 20;

    let collector = fluentd();
    collector.fail_next(&[500, 503]);
    let mut text = setup.source("wrapped", "a.ndjson", "on_invalid = \"wrap\"");
    text.push_str(&setup.source("dropped", "b.ndjson", "on_invalid = \"drop\""));
    text.push_str(&destination(
        "fluentd",
        &collector.url("/wallarm.events"),
        "events = [\"hit\", \"vulnerability:high\", \"other\"]",
        "[destination.batch]\nmax_events = 10\ntimeout = \"100ms\"\n",
    ));
    let tailhook = Tailhook::start(&setup.config(&text));
    let addr = metrics_addr(&tailhook);
    wait_events(&collector, &tailhook, expected_events);

    let d = ("destination", "fluentd");
    let page = wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "the counters settled on what the collector received",
        &[
            SENT,
            BUFFERED,
            LAG,
            FILES_WATCHED,
            CHECKPOINT_WRITES,
            DURATION,
        ],
        |p| {
            p.get(SENT, &[d]) == Some(collector.event_count() as f64)
                && p.get(BUFFERED, &[d]) == Some(0.0)
                && p.get(LAG, &[("source", "wrapped"), d]) == Some(0.0)
                && p.get(LAG, &[("source", "dropped"), d]) == Some(0.0)
                // Refreshed about once a second: 0 until the first round.
                && p.get(FILES_WATCHED, &[("source", "wrapped"), d]) == Some(1.0)
                && p.get(FILES_WATCHED, &[("source", "dropped"), d]) == Some(1.0)
                && p.get(CHECKPOINT_WRITES, &[d]).unwrap_or(0.0) >= 1.0
                && p.get(&format!("{DURATION}_count"), &[d])
                    == Some(collector.statuses().len() as f64)
        },
    );
    let now = unix_now();

    // What the collector saw.
    let batches = collector.batches();
    let statuses = collector.statuses();
    assert_eq!(
        collector.event_count(),
        expected_events,
        "the collector got a different number of events than the run wrote"
    );
    let ok_batches = batches.len() as f64;
    let body_bytes: usize = batches.iter().map(|b| b.body.len()).sum();
    let status_count = |code: u16| statuses.iter().filter(|&&s| s == code).count() as f64;
    assert_eq!(status_count(500), 1.0, "collector statuses {statuses:?}");
    assert_eq!(status_count(503), 1.0, "collector statuses {statuses:?}");
    assert_eq!(
        status_count(200),
        ok_batches,
        "collector statuses {statuses:?}"
    );

    // Delivery counters equal the collector's counts.
    assert_eq!(page.value(SENT, &[d]), collector.event_count() as f64);
    assert_eq!(page.value(BATCHES, &[d]), ok_batches);
    assert_eq!(page.value(BYTES_SENT, &[d]), body_bytes as f64);
    assert_eq!(page.value(RESPONSES, &[d, ("status", "200")]), ok_batches);
    assert_eq!(page.value(RESPONSES, &[d, ("status", "500")]), 1.0);
    assert_eq!(page.value(RESPONSES, &[d, ("status", "503")]), 1.0);
    let answered: BTreeSet<&str> = page
        .select(RESPONSES, &[d])
        .iter()
        .map(|s| s.labels["status"].as_str())
        .collect();
    assert_eq!(
        answered,
        BTreeSet::from(["200", "500", "503"]),
        "{}",
        page.matching(RESPONSES)
    );
    assert_eq!(page.value(ERRORS, &[d, ("reason", "status")]), 2.0);
    let errors = page.sum(ERRORS, &[d]);
    assert_eq!(
        errors,
        2.0,
        "only the two 5xx failed:\n{}",
        page.matching(ERRORS)
    );
    let retries = page.value(RETRIES, &[d]);
    assert!(retries >= 2.0, "retries {retries}");
    assert_eq!(retries, errors, "each failed request was sent again once");
    assert_eq!(
        histogram_count(&page, "fluentd"),
        statuses.len() as f64,
        "the duration histogram counts every answered request"
    );
    assert!(page.value(&format!("{DURATION}_sum"), &[d]) > 0.0);

    // What the sources read, filtered and could not frame.
    for (kind, n) in SAMPLES_FILTERED {
        assert_eq!(
            page.value(FILTERED, &[d, ("kind", kind)]),
            n,
            "filtered {kind}:\n{}",
            page.matching(FILTERED)
        );
    }
    let w = ("source", "wrapped");
    let dr = ("source", "dropped");
    let inv = |src, outcome| page.value(INVALID, &[src, d, ("outcome", outcome)]);
    assert_eq!(inv(w, "wrap"), 3.0);
    assert_eq!(inv(w, "drop"), 0.0);
    assert_eq!(inv(w, "dead_letter"), 0.0);
    assert_eq!(inv(dr, "drop"), 2.0);
    assert_eq!(inv(dr, "wrap"), 0.0);
    assert_eq!(inv(dr, "dead_letter"), 0.0);
    assert_eq!(page.value(EVENTS_READ, &[w, d]), 40.0 + 15.0);
    assert_eq!(page.value(EVENTS_READ, &[dr, d]), 20.0);
    assert_eq!(page.value(BYTES_READ, &[w, d]), file_size(&a));
    assert_eq!(page.value(BYTES_READ, &[dr, d]), file_size(&b));
    assert_eq!(page.value(FILES_WATCHED, &[w, d]), 1.0);
    assert_eq!(page.value(FILES_WATCHED, &[dr, d]), 1.0);

    // State gauges.
    assert_eq!(page.value(UP, &[d]), 1.0);
    let last = page.value(LAST_SUCCESS, &[d]);
    assert!(
        last >= started - 1.0 && last <= now + 1.0,
        "last success {last} is not between the start {started} and now {now}"
    );
    assert_eq!(page.value(BUFFERED, &[d]), 0.0);
    assert_eq!(page.value(LAG, &[w, d]), 0.0);
    assert_eq!(page.value(LAG, &[dr, d]), 0.0);
    assert!(page.value(CHECKPOINT_WRITES, &[d]) >= 1.0);
    assert_eq!(page.value(CHECKPOINT_FAILURES, &[d]), 0.0);
    assert_eq!(page.value(DEAD_LETTERED, &[d]), 0.0);
    assert_eq!(
        page.value(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert_eq!(env!("CARGO_PKG_VERSION"), "0.1.0");

    // The page as a whole.
    assert_eq!(page.types.get(SENT).map(String::as_str), Some("counter"));
    assert_eq!(page.types.get(UP).map(String::as_str), Some("gauge"));
    assert_eq!(
        page.types.get(DURATION).map(String::as_str),
        Some("histogram")
    );
    assert_described(&page);
    assert_promtool_clean(&page.text);
    stop(tailhook);
}

// ---- 1b. a forward destination: acknowledgement latency ------------------------

/// A forward destination beside an HTTP one: its delivery counters equal
/// what the forward emulator acknowledged, and every acknowledgement is in
/// `tailhook_destination_ack_duration_seconds` (the HTTP destination, which
/// has no acknowledgements, has no such histogram). The first batch's
/// connection is dropped before its ack: one error, one retry.
#[test]
fn forward_acknowledgements_are_timed_and_counted() {
    let setup = Setup::new();
    let a = setup.log("a.ndjson");
    append(&a, &wallarm_hits(0, 23));
    let fwd = support::forward::Forward::start();
    fwd.drop_next(1);
    let collector = fluentd();
    let mut text = setup.source("w", "a.ndjson", "");
    text.push_str(&format!(
        "[[destination]]\nname = \"fwd\"\ntype = \"forward\"\naddress = \"{}\"\ntag = \"wallarm.events\"\nconcurrency = 1\n\
         [destination.batch]\nmax_events = 5\ntimeout = \"100ms\"\n[destination.retry]\ninitial = \"50ms\"\nmax = \"200ms\"\n\n",
        fwd.address()
    ));
    text.push_str(&destination(
        "http",
        &collector.url("/wallarm.events"),
        "",
        "",
    ));
    let tailhook = Tailhook::start(&setup.config(&text));
    let addr = metrics_addr(&tailhook);
    assert!(fwd.wait_accepted(23, WAIT), "{}", tailhook.stderr());
    wait_events(&collector, &tailhook, 23);

    let f = ("destination", "fwd");
    let acked = fwd.received().iter().filter(|r| r.acked).count() as f64;
    let page = wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "the forward counters settled on what the emulator acknowledged",
        &[SENT, ACK_DURATION],
        |p| {
            p.get(SENT, &[f]) == Some(23.0)
                && p.get(&format!("{ACK_DURATION}_count"), &[f]) == Some(acked)
        },
    );
    assert_eq!(page.value(BATCHES, &[f]), acked);
    assert!(acked >= 5.0, "batches of at most 5: {acked}");
    assert_eq!(histogram_count_of(&page, ACK_DURATION, "fwd"), acked);
    assert!(page.value(&format!("{ACK_DURATION}_sum"), &[f]) > 0.0);
    assert_eq!(
        histogram_count(&page, "fwd"),
        acked,
        "the request duration counts each acknowledged send"
    );
    assert_eq!(page.value(ERRORS, &[f, ("reason", "connect")]), 1.0);
    assert_eq!(page.value(RETRIES, &[f]), 1.0);
    assert_eq!(page.value(UP, &[f]), 1.0);
    assert!(page.select(RESPONSES, &[f]).is_empty(), "no HTTP statuses");
    assert!(
        page.select(&format!("{ACK_DURATION}_count"), &[("destination", "http")])
            .is_empty(),
        "an HTTP destination has no acknowledgements:\n{}",
        page.matching(ACK_DURATION)
    );
    assert_eq!(
        page.types.get(ACK_DURATION).map(String::as_str),
        Some("histogram")
    );
    assert_described(&page);
    assert_promtool_clean(&page.text);
    stop(tailhook);
}

// ---- 2. a destination that is down ---------------------------------------------

#[test]
fn a_destination_that_is_down_is_not_up_and_lags_by_the_whole_file() {
    let setup = Setup::new();
    let dead = dead_port();
    let log = setup.log("events.ndjson");
    append(&log, &hits(0, 30, 100));
    let size = file_size(&log);
    let mut text = "shutdown_timeout = \"1s\"\n\n".to_string();
    text.push_str(&setup.source("w", "*.ndjson", ""));
    text.push_str(&destination(
        "down",
        &format!("http://127.0.0.1:{}/t", dead.port),
        "",
        "",
    ));
    let tailhook = Tailhook::start(&setup.config(&text));
    let addr = metrics_addr(&tailhook);

    let d = ("destination", "down");
    let lag = [("source", "w"), d];
    let page = wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "connect errors and the whole file as lag",
        &[ERRORS, LAG],
        |p| {
            p.get(ERRORS, &[d, ("reason", "connect")]).unwrap_or(0.0) >= 1.0
                && p.get(LAG, &lag) == Some(size)
        },
    );
    assert_eq!(page.value(UP, &[d]), 0.0);
    assert_eq!(page.value(LAG, &lag), size, "nothing is acknowledged");
    assert!(page.value(ERRORS, &[d, ("reason", "connect")]) >= 1.0);
    assert_eq!(page.value(SENT, &[d]), 0.0);
    assert_eq!(page.value(BATCHES, &[d]), 0.0);
    assert_eq!(page.value(LAST_SUCCESS, &[d]), 0.0);
    assert_eq!(page.value(CHECKPOINT_WRITES, &[d]), 0.0);
    assert!(
        page.select(RESPONSES, &[d]).is_empty(),
        "no collector answered:\n{}",
        page.matching(RESPONSES)
    );
    assert_eq!(histogram_count(&page, "down"), 0.0);
    let buffered = page.value(BUFFERED, &[d]);
    assert!(
        (1.0..=30.0).contains(&buffered),
        "events held while retrying: {buffered}"
    );
    assert_eq!(page.value(EVENTS_READ, &[("source", "w"), d]), 30.0);
    // A refused probe is a try: ready.
    let ready = get(addr, "/ready");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert_promtool_clean(&page.text);
    stop(tailhook);
}

// ---- 3. dead letters -----------------------------------------------------------

#[test]
fn a_rejected_batch_is_counted_as_dead_lettered_events() {
    let setup = Setup::new();
    let log = setup.log("events.ndjson");
    let lines = hits(0, 30, 100);
    append(&log, &lines[..5]);
    append(&log, &["not json: dead-lettered".to_string()]);
    append(&log, &lines[5..20]);
    append(&log, &["[17]".to_string()]);
    append(&log, &lines[20..]);

    let collector = fluentd();
    collector.fail_next(&[400]);
    let mut text = setup.source("w", "*.ndjson", "on_invalid = \"dead_letter\"");
    text.push_str(&destination(
        "fluentd",
        &collector.url("/wallarm.events"),
        "concurrency = 1",
        "[destination.batch]\nmax_events = 10\ntimeout = \"100ms\"\n",
    ));
    let tailhook = Tailhook::start(&setup.config(&text));
    let addr = metrics_addr(&tailhook);
    wait_log(&tailhook, "collector rejected a batch (HTTP 400)");

    let d = ("destination", "fluentd");
    let page = wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "every event sent or dead-lettered",
        &[SENT, DEAD_LETTERED, BUFFERED, DEAD_LETTER_BYTES],
        |p| {
            p.get(SENT, &[d]).unwrap_or(0.0) + p.get(DEAD_LETTERED, &[d]).unwrap_or(0.0)
                == 30.0 + 2.0
                && p.get(SENT, &[d]) == Some(collector.event_count() as f64)
                && p.get(BUFFERED, &[d]) == Some(0.0)
                && p.get(DEAD_LETTER_BYTES, &[d]) == Some(file_size(&setup.dead_letter("fluentd")))
        },
    );

    let dead: Vec<serde_json::Value> = std::fs::read_to_string(setup.dead_letter("fluentd"))
        .expect("the dead-letter file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letters are JSON"))
        .collect();
    let rejected: Vec<&serde_json::Value> = dead.iter().filter(|v| v["seq"].is_u64()).collect();
    let wrapped = dead
        .iter()
        .filter(|v| v["tailhook_error"].is_string())
        .count();
    assert_eq!(rejected.len() + wrapped, dead.len(), "{dead:?}");
    assert_eq!(wrapped, 2, "the two invalid lines: {dead:?}");
    assert!(!rejected.is_empty(), "no events of the rejected batch");
    assert_eq!(
        rejected.len() + collector.event_count(),
        30,
        "each event is either delivered or in the dead-letter file"
    );

    // The rejected batch's events, plus the two invalid lines, are what the
    // dead-letter file holds and what the counter says.
    assert_eq!(page.value(DEAD_LETTERED, &[d]), dead.len() as f64);
    assert_eq!(
        page.value(INVALID, &[("source", "w"), d, ("outcome", "dead_letter")]),
        2.0
    );
    assert_eq!(page.value(SENT, &[d]), collector.event_count() as f64);
    assert_eq!(page.value(RESPONSES, &[d, ("status", "400")]), 1.0);
    assert_eq!(page.value(ERRORS, &[d, ("reason", "status")]), 1.0);
    assert_eq!(page.value(RETRIES, &[d]), 0.0, "a 400 is not retried");
    assert_eq!(page.value(UP, &[d]), 1.0);
    assert_promtool_clean(&page.text);

    // Nothing lost, nothing twice.
    let mut all: Vec<u64> = collector
        .events_json()
        .iter()
        .chain(rejected.iter().copied())
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (0..30).collect::<Vec<u64>>());

    // `resend` empties the file; the gauge, measured every second, follows.
    let cfg = setup.dir.path().join("config.toml").display().to_string();
    let exit = run_cmd(&["dead-letter", "resend", "-c", &cfg], &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "no dead-letter bytes after resend",
        &[DEAD_LETTER_BYTES],
        |p| p.get(DEAD_LETTER_BYTES, &[d]) == Some(0.0),
    );
    stop(tailhook);
}

// ---- 4. the spool -----------------------------------------------------------

/// Bytes of `source`'s spool segment files on disk (headers included).
fn spool_on_disk(setup: &Setup, source: &str) -> f64 {
    spool_segments(setup, source)
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum::<u64>() as f64
}

#[test]
fn tcp_input_bytes_and_the_spool_are_counted_while_the_collector_is_down() {
    let setup = Setup::new();
    let dead = dead_port();
    let port = dead.port;
    let mut text = "shutdown_timeout = \"1s\"\n\n".to_string();
    text.push_str(&input("net", "tcp", ""));
    text.push_str(&destination(
        "fluentd",
        &format!("http://127.0.0.1:{port}/t"),
        "",
        "",
    ));
    let tailhook = Tailhook::start(&setup.config(&text));
    let net = listen_addr(&tailhook, "net");
    let addr = metrics_addr(&tailhook);

    // 19 lines with their newlines on one connection; the last line without
    // its newline on another: tailhook adds that newline.
    let lines = hits(0, 20, 100);
    let mut first = Vec::new();
    for l in &lines[..19] {
        first.extend_from_slice(l.as_bytes());
        first.push(b'\n');
    }
    let last = lines[19].as_bytes().to_vec();
    let n = ("source", "net");
    let d = ("destination", "fluentd");
    TcpStream::connect(net).unwrap().write_all(&first).unwrap();
    // Once the first connection's lines are in the spool (the counter moves
    // after the write), the gauge must say what the segment file holds: its
    // header line and those lines.
    let page = wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "the first connection's input spooled",
        &[INPUT_BYTES, SPOOL_BYTES],
        |p| p.get(INPUT_BYTES, &[n]) == Some(first.len() as f64),
    );
    let first_spool = (
        page.get(SPOOL_BYTES, &[]),
        Some(spool_on_disk(&setup, "net")),
    );
    TcpStream::connect(net).unwrap().write_all(&last).unwrap();
    let sent = (first.len() + last.len()) as f64;

    let page = wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "the input bytes, the spool and the events read",
        &[INPUT_BYTES, SPOOL_BYTES, SPOOL_SEGMENTS, EVENTS_READ],
        |p| {
            p.get(INPUT_BYTES, &[n]) == Some(sent + 1.0)
                && p.get(SPOOL_SEGMENTS, &[]).unwrap_or(0.0) >= 1.0
                && p.get(EVENTS_READ, &[n, d]) == Some(20.0)
                && p.get(ERRORS, &[d, ("reason", "connect")]).unwrap_or(0.0) >= 1.0
        },
    );
    assert_eq!(
        page.value(INPUT_BYTES, &[n]),
        sent + 1.0,
        "bytes sent, plus the newline added to the unterminated last line"
    );
    let spool = page.value(SPOOL_BYTES, &[]);
    assert!(
        spool > 0.0,
        "the spool holds the input while the collector is down"
    );
    let segments = page.value(SPOOL_SEGMENTS, &[]);
    assert!(segments >= 1.0, "segments {segments}");
    assert_eq!(
        segments,
        spool_segments(&setup, "net").len() as f64,
        "segment files on disk"
    );
    assert_eq!(page.value(UP, &[d]), 0.0);
    assert_promtool_clean(&page.text);

    // The collector comes back: everything arrives once; the input counter
    // does not move.
    let collector = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    wait_events(&collector, &tailhook, lines.len());
    let page = wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "every spooled event sent",
        &[SENT],
        |p| p.get(SENT, &[d]) == Some(lines.len() as f64),
    );
    assert_eq!(page.value(INPUT_BYTES, &[n]), sent + 1.0);
    assert_eq!(page.value(UP, &[d]), 1.0);
    assert_promtool_clean(&page.text);
    stop(tailhook);
    assert_each_exactly_once(&collector, &lines, "tcp input through the spool");

    // Last, so that everything above is checked too: the gauge is the
    // spool's size, what is on disk, segment headers included (tailhook
    // counts them against spool.max_bytes too).
    let (gauge, on_disk) = first_spool;
    assert_eq!(
        gauge,
        on_disk,
        "tailhook_spool_bytes once one connection's lines were spooled vs the \
         bytes of the segment file on disk then ({} bytes of lines)",
        first.len()
    );
}

/// After a restart, the spool gauges show what tailhook found on disk, before
/// any new input arrives.
#[test]
fn spool_gauges_after_a_restart_show_what_is_on_disk() {
    let setup = Setup::new();
    let dead = dead_port();
    let mut text = "shutdown_timeout = \"1s\"\n\n[spool]\nmax_bytes = \"8MiB\"\n\n".to_string();
    text.push_str(&input("net", "tcp", ""));
    text.push_str(&destination(
        "fluentd",
        &format!("http://127.0.0.1:{}/t", dead.port),
        "",
        "",
    ));
    let cfg = setup.config(&text);
    let tailhook = Tailhook::start(&cfg);
    let net = listen_addr(&tailhook, "net");
    let addr = metrics_addr(&tailhook);
    let mut data = Vec::new();
    for l in hits(0, 10, 100) {
        data.extend_from_slice(l.as_bytes());
        data.push(b'\n');
    }
    TcpStream::connect(net).unwrap().write_all(&data).unwrap();
    let n = ("source", "net");
    wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "the input spooled",
        &[INPUT_BYTES],
        |p| p.get(INPUT_BYTES, &[n]) == Some(data.len() as f64),
    );
    stop(tailhook);
    let on_disk = spool_on_disk(&setup, "net");
    assert!(on_disk > data.len() as f64, "the spool on disk: {on_disk}");

    let tailhook = Tailhook::start(&cfg);
    let addr = metrics_addr(&tailhook);
    let page = wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "the spool's segments",
        &[SPOOL_SEGMENTS],
        |p| p.get(SPOOL_SEGMENTS, &[]).unwrap_or(0.0) >= 1.0,
    );
    assert_eq!(
        page.get(SPOOL_SEGMENTS, &[]),
        Some(spool_segments(&setup, "net").len() as f64)
    );
    assert_eq!(
        page.get(SPOOL_BYTES, &[]),
        Some(on_disk),
        "tailhook_spool_bytes after a restart, with {on_disk} bytes spooled on disk:\n{}",
        page.matching("spool")
    );
    assert_eq!(
        page.get(SPOOL_MAX_BYTES, &[]),
        Some(8.0 * 1024.0 * 1024.0),
        "tailhook_spool_max_bytes is spool.max_bytes:\n{}",
        page.matching("spool")
    );
    stop(tailhook);
}

// ---- 5. /health, /ready and other paths --------------------------------------

#[test]
fn ready_waits_for_the_first_try_of_each_destination_and_health_is_always_ok() {
    let setup = Setup::new();
    // Accepts TCP (the kernel completes the handshake into the backlog) and
    // never says a word: a TLS handshake with it can only time out.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let mut text = "shutdown_timeout = \"1s\"\n\n".to_string();
    text.push_str(&setup.source("w", "*.ndjson", ""));
    text.push_str(&destination(
        "silent-tls",
        &format!("https://127.0.0.1:{silent_port}/"),
        "connect_timeout = \"2s\"",
        "",
    ));
    let spawned = Instant::now();
    let tailhook = Tailhook::start(&setup.config(&text));
    let addr = metrics_addr(&tailhook);
    wait_log(&tailhook, "tailhook running");

    let health = |when: &str| {
        let h = get(addr, "/health");
        assert_eq!(
            (h.status, h.body.as_str()),
            (200, "ok\n"),
            "/health {when}: {h:?}"
        );
    };
    health("at start");
    let r = get(addr, "/ready");
    assert!(
        spawned.elapsed() < Duration::from_millis(1800),
        "the machine is too slow for this test: the 2 s probe may be over already"
    );
    assert_eq!(r.status, 503, "/ready before the probe ended: {r:?}");
    assert!(
        r.body.starts_with("not ready: ")
            && r.body.contains("not tried yet")
            && r.body.contains("silent-tls"),
        "/ready body: {:?}",
        r.body
    );
    assert_eq!(
        r.body, "not ready: destination(s) not tried yet: silent-tls\n",
        "/ready body"
    );
    let other = get(addr, "/nope");
    assert_eq!(other.status, 404, "an unknown path: {other:?}");
    let other = get(addr, "/metrics/extra");
    assert_eq!(other.status, 404, "an unknown path: {other:?}");

    // The probe's TLS handshake times out after connect_timeout: that was a
    // try, so /ready turns 200. /health stays 200 meanwhile.
    let deadline = Instant::now() + WAIT;
    let ready = loop {
        health("while the probe waits");
        let r = get(addr, "/ready");
        if r.status == 200 {
            break r;
        }
        assert_eq!(r.status, 503, "/ready: {r:?}");
        assert!(
            Instant::now() < deadline,
            "/ready still {r:?} after {WAIT:?}\n{}",
            tailhook.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = spawned.elapsed();
    assert_eq!(ready.body, "ready\n");
    assert!(
        took >= Duration::from_millis(1900),
        "/ready turned 200 after {took:?}, before the 2 s connect_timeout could pass"
    );
    assert!(
        tailhook.stderr().contains("connect timeout"),
        "the probe should have timed out:\n{}",
        tailhook.stderr()
    );
    health("after the probe");
    stop(tailhook);
    drop(silent);
}

// ---- 6. logging flags --------------------------------------------------------

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let setup = Setup::new();
    append(&setup.log("events.ndjson"), &hits(0, 5, 100));
    let collector = fluentd();
    let mut text = setup.source("w", "*.ndjson", "");
    text.push_str(&destination("fluentd", &collector.url("/t"), "", ""));
    let cfg = setup.config(&text);
    let mut cmd = bin();
    cmd.args(["--log-format", "json", "run", "-c"]).arg(&cfg);
    let tailhook = Tailhook::spawn(cmd);
    let addr = metrics_addr(&tailhook);
    wait_events(&collector, &tailhook, 5);
    wait_log(&tailhook, "tailhook running");
    assert_eq!(get(addr, "/health").status, 200);
    let exit = stop(tailhook);

    let lines: Vec<&str> = exit.stderr.lines().collect();
    assert!(lines.len() >= 3, "too few log lines:\n{}", exit.stderr);
    let mut running = None;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(
                obj.get(key).is_some_and(|x| x.is_string()),
                "no string `{key}` in {line}"
            );
        }
        let ts = obj["timestamp"].as_str().unwrap();
        assert!(
            ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.contains('T'),
            "timestamp {ts:?} is not RFC 3339"
        );
        let level = obj["level"].as_str().unwrap();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "level {level:?}"
        );
        assert!(
            !obj.contains_key("fields"),
            "fields are not flattened: {line}"
        );
        if obj["message"] == "tailhook running" {
            running = Some(v.clone());
        }
    }
    let running = running.unwrap_or_else(|| panic!("no `tailhook running` line:\n{}", exit.stderr));
    assert_eq!(running["sources"], 1, "{running}");
    assert_eq!(running["destinations"], 1, "{running}");
    assert_eq!(running["level"], "INFO");
    assert!(exit.stdout.is_empty(), "stdout: {}", exit.stdout);
}

#[test]
fn debug_logs_never_show_a_header_secret_or_an_event_body() {
    const TOKEN: &str = "s3cr3t-token";
    const MARKER: &str = "BODY-MARKER-q8z7";
    let setup = Setup::new();
    let log = setup.log("events.ndjson");
    let marked = |from: usize, n: usize| -> Vec<String> {
        (from..from + n)
            .map(|i| {
                format!(
                    r#"{{"seq":{i},"object_type":"hit","domain":"example.com","note":"{MARKER}"}}"#
                )
            })
            .collect()
    };
    append(&log, &marked(0, 12));
    // An invalid line is logged with its file and offset, never its text.
    append(&log, &[format!("not json {MARKER}")]);

    // The port stays held once the collector stops, so that no other test's
    // collector can answer in its place.
    let held = dead_port();
    let collector = Collector::start(Options {
        port: held.port,
        ..Options::fluentd()
    });
    collector.fail_next(&[400]);
    let mut text = "shutdown_timeout = \"1s\"\n\n".to_string();
    text.push_str(&setup.source("w", "*.ndjson", ""));
    text.push_str(&destination(
        "fluentd",
        &collector.url("/t"),
        &format!("headers = {{ Authorization = \"Bearer {TOKEN}\" }}\nconcurrency = 1"),
        "[destination.batch]\nmax_events = 5\ntimeout = \"100ms\"\n",
    ));
    let cfg = setup.config(&text);
    let mut cmd = bin();
    cmd.args(["--log-level", "debug", "run", "-c"]).arg(&cfg);
    let tailhook = Tailhook::spawn(cmd);
    let addr = metrics_addr(&tailhook);

    // Rejected (400), then delivered.
    wait_log(&tailhook, "collector rejected a batch (HTTP 400)");
    let d = ("destination", "fluentd");
    wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "every event sent or dead-lettered",
        &[SENT, DEAD_LETTERED],
        |p| {
            p.get(SENT, &[d]).unwrap_or(0.0) + p.get(DEAD_LETTERED, &[d]).unwrap_or(0.0) == 13.0
                && p.get(SENT, &[d]) == Some(collector.event_count() as f64)
        },
    );
    let batches = collector.batches();
    assert!(!batches.is_empty());
    for b in &batches {
        assert_eq!(b.header("authorization"), Some("Bearer s3cr3t-token"));
    }
    assert!(
        collector
            .events()
            .iter()
            .any(|e| String::from_utf8_lossy(e).contains(MARKER)),
        "the marker is in the events sent"
    );

    // Then the collector is down.
    collector.stop();
    append(&log, &marked(100, 3));
    wait_log(&tailhook, "connection refused");
    assert!(
        tailhook.wait_for_log_count("delivery failed", 2, WAIT),
        "{}",
        tailhook.stderr()
    );
    let exit = stop(tailhook);

    let dead = std::fs::read_to_string(setup.dead_letter("fluentd")).unwrap();
    assert!(
        dead.contains(MARKER),
        "the rejected events are dead letters"
    );
    let all = format!("{}{}", exit.stderr, exit.stdout);
    assert!(
        all.lines().any(|l| l.contains(" DEBUG ")),
        "--log-level debug shows no DEBUG line:\n{all}"
    );
    for secret in [TOKEN, MARKER] {
        let leaks: Vec<&str> = all.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "{secret:?} appears in tailhook's output:\n{}",
            leaks.join("\n")
        );
    }
}

#[test]
fn an_invalid_log_level_exits_2_and_says_why() {
    let setup = Setup::new();
    let collector = fluentd();
    // A run that would end by itself at once (stdin is closed), so a level
    // that is wrongly accepted shows as exit 0 rather than a hang.
    let mut text = input("in", "stdin", "");
    text.push_str(&destination("fluentd", &collector.url("/t"), "", ""));
    let cfg = setup.config(&text);
    let cfg = cfg.to_str().unwrap();
    let mut wrong = Vec::new();
    for level in ["nonsense%%", "warning"] {
        let exit = run_cmd(&["--log-level", level, "run", "-c", cfg], &[]);
        let said = exit.stderr.to_lowercase();
        if exit.code != Some(2) || !said.contains("log-level") || !said.contains(level) {
            wrong.push(format!(
                "--log-level {level:?}: exit {:?} (expected 2 and an error naming it)\n{}",
                exit.code,
                exit.output()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A real filter is accepted.
    let exit = run_cmd(
        &[
            "--log-level",
            "info,tailhook::sink=debug",
            "check",
            "-c",
            cfg,
        ],
        &[],
    );
    assert_eq!(exit.code, Some(0), "{}", exit.output());
}

// ---- 7. the [metrics] table --------------------------------------------------

fn busy_port() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

#[test]
fn metrics_enabled_false_starts_no_listener_even_on_a_busy_port() {
    let setup = Setup::new();
    append(&setup.log("events.ndjson"), &hits(0, 5, 100));
    let collector = fluentd();
    let busy = busy_port();
    let listen = busy.local_addr().unwrap();
    let cfg = setup
        .builder()
        .extra("shutdown_timeout = \"1s\"")
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/t"))
        .block(&format!(
            "[metrics]\nenabled = false\nlisten = \"{listen}\""
        ))
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_log(&tailhook, "tailhook running");
    wait_events(&collector, &tailhook, 5);
    let exit = stop(tailhook);
    assert!(
        !exit.stderr.contains(LISTENING) && !exit.stderr.contains("metrics:"),
        "metrics are disabled:\n{}",
        exit.stderr
    );
    drop(busy);
}

#[test]
fn a_metrics_port_in_use_fails_the_start_in_words() {
    let setup = Setup::new();
    let busy = busy_port();
    let listen: SocketAddr = busy.local_addr().unwrap();
    let cfg = setup
        .builder()
        .extra("shutdown_timeout = \"1s\"")
        .file_source("w", "*.ndjson")
        .destination("fluentd", "http://127.0.0.1:9/t")
        .block(&format!("[metrics]\nlisten = \"{listen}\""))
        .write();
    let exit = run_cmd(&["run", "-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    let needle = format!("metrics: cannot listen on {listen}");
    assert!(
        exit.stderr.contains(&needle),
        "want {needle:?}:\n{}",
        exit.output()
    );
    drop(busy);
}

/// The page's label sets are what the docs promise: bounded, from the
/// config and the kind table, never a path.
#[test]
fn label_values_are_names_from_the_config_never_paths() {
    let setup = Setup::new();
    append(&setup.log("events.ndjson"), &hits(0, 3, 100));
    let collector = fluentd();
    let mut text = setup.source("w", "*.ndjson", "");
    text.push_str(&destination("fluentd", &collector.url("/t"), "", ""));
    let tailhook = Tailhook::start(&setup.config(&text));
    let addr = metrics_addr(&tailhook);
    wait_events(&collector, &tailhook, 3);
    let page = wait_for_page(addr, &tailhook, WAIT, "3 events sent", &[SENT], |p| {
        p.get(SENT, &[("destination", "fluentd")]) == Some(3.0)
    });
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &page.samples {
        for (k, v) in &s.labels {
            seen.entry(k.clone()).or_default().insert(v.clone());
        }
    }
    let logs = setup.logs.display().to_string();
    for (k, vs) in &seen {
        for v in vs {
            assert!(!v.contains(&logs) && !v.contains('/'), "label {k}={v:?}");
        }
    }
    assert_eq!(seen["source"], BTreeSet::from(["w".to_string()]));
    assert_eq!(seen["destination"], BTreeSet::from(["fluentd".to_string()]));
    stop(tailhook);
}

// ---- the checkers themselves ---------------------------------------------------

/// The parser reads what the text format allows (escapes, `+Inf`, a
/// timestamp) and refuses what it does not.
#[test]
fn the_page_parser_reads_the_text_format() {
    let page = Page::parse(concat!(
        "# HELP a_total A counter\n",
        "# TYPE a_total counter\n",
        "a_total{x=\"1\",y=\"q\\\"uote\\\\back\\nline\"} 3 1700000000000\n",
        "a_total 4.5e1\n",
        "# TYPE h histogram\n",
        "h_bucket{le=\"+Inf\"} +Inf\n",
    ));
    assert_eq!(
        page.value("a_total", &[("x", "1"), ("y", "q\"uote\\back\nline")]),
        3.0
    );
    assert_eq!(page.value("a_total", &[]), 45.0);
    assert_eq!(
        page.get("a_total", &[("x", "1")]),
        None,
        "labels match exactly"
    );
    assert_eq!(page.sum("a_total", &[]), 48.0);
    assert!(page.value("h_bucket", &[("le", "+Inf")]).is_infinite());
    assert_eq!(page.types["a_total"], "counter");
    assert_eq!(page.help["a_total"], "A counter");
    for bad in [
        "x{a=\"1\" 1",
        "x{a=1} 1",
        "x 1 2 3",
        "1x 2",
        "x{a=\"1\",a=\"2\"} 1",
        "x",
    ] {
        let r = std::panic::catch_unwind(|| Page::parse(bad));
        assert!(r.is_err(), "{bad:?} was accepted");
    }
}

/// promtool really checks: a malformed page and a lint problem both fail.
#[test]
fn promtool_refuses_a_bad_page() {
    let (code, said) = support::metrics::promtool_check("# TYPE x counter\nx{a=\"1\" 1\n");
    assert_ne!(code, Some(0), "a malformed page passed: {said}");
    let (code, said) = support::metrics::promtool_check("# TYPE x counter\nx 1\n");
    assert!(
        code != Some(0) || !said.trim().is_empty(),
        "a counter without _total or HELP passed silently"
    );
    assert_promtool_clean("# HELP x_total X\n# TYPE x_total counter\nx_total 1\n");
}
