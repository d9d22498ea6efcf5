//! Recovery and delivery guarantees of the real `tailhook` binary: retries
//! after collector failures, restarts from checkpoints, `kill -9`, SIGTERM
//! flushing, invalid lines (`on_invalid`), permanent rejections, corrupt
//! checkpoints, and files that cannot be read or vanish.
//!
//! Every wait is bounded and event-driven (collector counts, log lines,
//! process exit). A clean SIGTERM is used as the final synchronisation point:
//! once `terminate()` has returned, nothing more can arrive, so exact counts
//! (no loss, no duplicates) can be asserted.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::check::{
    assert_answered_once_and_only_stalled_duplicates, assert_clean_exit, assert_each_exactly_once,
    dead_port, seq_counts, wait_after_answer, wait_for_all_seqs, wait_for_all_seqs_answered,
};
use support::collector::{fluentd, Collector, Options};
use support::metrics::{metrics_addr, wait_for_page};
use support::process::Tailhook;
use support::setup::{append, bytes_of, checkpointed_offset, hits, seq_of, wallarm_hits, Setup};

/// Upper bound of every wait; a healthy run takes a small part of it.
const WAIT: Duration = Duration::from_secs(20);

/// The destination name used by every test (checkpoint and dead-letter
/// files are named after it).
const DEST: &str = "fluentd";

// ---- helpers ----------------------------------------------------------------

/// A Fluentd emulator on a given port.
fn fluentd_on(port: u16) -> Collector {
    Collector::start(Options {
        port,
        ..Options::fluentd()
    })
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

// ---- 1. retries ---------------------------------------------------------------

#[test]
fn retries_until_a_collector_that_was_not_listening_comes_up() {
    let setup = Setup::new();
    let dead = dead_port();
    let port = dead.port;
    let lines = hits(0, 20, 150);
    append(&setup.log("a.ndjson"), &lines);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &format!("http://127.0.0.1:{port}/wallarm.events"))
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(
        tailhook.wait_for_log("delivery failed", WAIT),
        "no 'delivery failed' log while nothing listens:\n{}",
        tailhook.stderr()
    );
    assert!(
        tailhook.stderr().contains("connection refused"),
        "the failure should be told as 'connection refused':\n{}",
        tailhook.stderr()
    );

    let collector = fluentd_on(port);
    assert!(
        collector.wait_for_events(lines.len(), WAIT),
        "only {} of {} events arrived after the collector came up",
        collector.event_count(),
        lines.len()
    );
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&collector, &lines, "");
}

#[test]
fn retries_503_500_429_without_loss_or_duplicates() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.fail_next(&[503, 500, 429]);
    let lines = hits(0, 30, 150);
    append(&setup.log("a.ndjson"), &lines);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra("[destination.batch]\nmax_events = 10\ntimeout = \"100ms\"\n")
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_events(lines.len(), WAIT),
        "only {} of {} events arrived; statuses {:?}",
        collector.event_count(),
        lines.len(),
        collector.statuses()
    );
    assert_clean_exit(&tailhook.terminate());

    let statuses = collector.statuses();
    assert_eq!(
        statuses[..3],
        [503, 500, 429],
        "the injected failures are answered first: {statuses:?}"
    );
    assert!(
        statuses[3..].iter().all(|&s| s == 200),
        "every later request succeeds: {statuses:?}"
    );
    // Three 10-event batches, each accepted once whatever failed before.
    assert_eq!(
        collector.batches().len(),
        3,
        "one accepted request per batch"
    );
    assert_each_exactly_once(&collector, &lines, "");
}

#[test]
fn logstash_busy_429_then_free_delivers_everything_once() {
    let setup = Setup::new();
    let collector = Collector::start(Options::logstash());
    collector.set_busy(true);
    let lines = hits(0, 20, 150);
    append(&setup.log("a.ndjson"), &lines);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/"))
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_requests(3, WAIT),
        "tailhook should keep retrying a busy Logstash"
    );
    assert!(
        tailhook.wait_for_log("429", WAIT),
        "the 429 should be in the log:\n{}",
        tailhook.stderr()
    );
    assert_eq!(
        collector.event_count(),
        0,
        "a busy Logstash accepts nothing"
    );
    collector.set_busy(false);

    assert!(
        collector.wait_for_events(lines.len(), WAIT),
        "only {} of {} events arrived once Logstash was free; statuses {:?}",
        collector.event_count(),
        lines.len(),
        collector.statuses()
    );
    assert_clean_exit(&tailhook.terminate());

    let statuses = collector.statuses();
    assert!(
        statuses.iter().filter(|&&s| s == 429).count() >= 3,
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    assert_each_exactly_once(&collector, &lines, "");
    // Delivery goes on in file order: one batch.
    assert_eq!(collector.events(), bytes_of(&lines));
}

/// The backoff alone (at most 100 ms here) would retry well before the
/// second that `Retry-After: 1` asks for, so the measured wait tells them
/// apart.
#[test]
fn retry_after_is_honoured_and_the_batch_is_delivered() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.fail_next_with_retry_after(503, 1);
    let lines = hits(0, 10, 150);
    append(&setup.log("a.ndjson"), &lines);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra("[destination.retry]\ninitial = \"50ms\"\nmax = \"100ms\"\n")
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_events(lines.len(), WAIT),
        "only {} of {} events arrived after a 503 with Retry-After; statuses {:?}",
        collector.event_count(),
        lines.len(),
        collector.statuses()
    );
    assert_clean_exit(&tailhook.terminate());
    assert_eq!(collector.statuses(), vec![503, 200]);
    assert_eq!(collector.events(), bytes_of(&lines));
    let waited = wait_after_answer(&collector, 0);
    assert!(
        waited >= Duration::from_secs(1),
        "tailhook retried {waited:?} after a 503 with Retry-After: 1"
    );
}

#[test]
fn a_hanging_collector_is_cut_by_request_timeout_and_retried() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.set_hang(true);
    let lines = hits(0, 10, 150);
    append(&setup.log("a.ndjson"), &lines);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra("request_timeout = \"500ms\"")
        .write();

    let tailhook = Tailhook::start(&cfg);
    // One batch: a second request can only be the retry of a cut one.
    assert!(
        collector.wait_for_requests(2, WAIT),
        "the hung request should be cut and retried ({} requests seen)",
        collector.request_count()
    );
    assert!(
        tailhook.wait_for_log("request timeout", WAIT),
        "the timeout should be told in words:\n{}",
        tailhook.stderr()
    );
    // The collector recorded each cut request before it stalled (as Fluentd
    // does), but answered none.
    assert!(
        collector.statuses().is_empty(),
        "{:?}",
        collector.statuses()
    );
    assert!(collector.answered_events().is_empty());
    collector.set_hang(false);

    assert!(
        collector.wait_for_answered_events(lines.len(), WAIT),
        "only {} of {} events were answered once the collector answered again",
        collector.answered_events().len(),
        lines.len()
    );
    assert_clean_exit(&tailhook.terminate());
    // At least once: answered once, in order; every cut request held the
    // whole batch and is the only source of copies.
    assert_eq!(collector.answered_events(), bytes_of(&lines));
    assert_eq!(collector.statuses(), vec![200]);
    let stalled: Vec<_> = collector
        .batches()
        .into_iter()
        .filter(|b| b.stalled)
        .collect();
    assert!(stalled.len() >= 2, "{} requests were cut", stalled.len());
    assert!(stalled.iter().all(|b| b.events == bytes_of(&lines)));
    assert_eq!(collector.request_count(), stalled.len() + 1);
    assert_answered_once_and_only_stalled_duplicates(&collector, &lines, "cut and retried");
}

// ---- 2. restarts ----------------------------------------------------------------

#[test]
fn restart_resumes_from_the_checkpoint() {
    let setup = Setup::new();
    let collector = fluentd();
    let log = setup.log("a.ndjson");
    let first = hits(0, 10, 150);
    append(&log, &first);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(collector.wait_for_events(first.len(), WAIT));
    assert_clean_exit(&tailhook.terminate());
    assert_eq!(collector.events(), bytes_of(&first));

    let checkpoint = setup.read_checkpoint(DEST).expect("checkpoint saved");
    assert_eq!(checkpoint["version"], 1, "{checkpoint}");
    assert_eq!(
        checkpointed_offset(&checkpoint, &log),
        Some(file_len(&log)),
        "the checkpoint should record the whole file as delivered: {checkpoint}"
    );

    let second = hits(10, 5, 150);
    append(&log, &second);
    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_events(first.len() + second.len(), WAIT),
        "the events appended while stopped did not arrive ({} events)",
        collector.event_count()
    );
    assert_clean_exit(&tailhook.terminate());

    // Nothing re-sent, nothing lost: the second run sent exactly the new ones.
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_each_exactly_once(&collector, &all, "");
    assert_eq!(collector.events()[first.len()..], bytes_of(&second)[..]);
}

#[test]
fn events_unacknowledged_at_stop_are_sent_after_restart() {
    let setup = Setup::new();
    let dead = dead_port();
    let port = dead.port;
    let log = setup.log("a.ndjson");
    let lines = hits(0, 10, 150);
    append(&log, &lines);
    let cfg = setup
        .builder()
        .extra("shutdown_timeout = \"1s\"")
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &format!("http://127.0.0.1:{port}/wallarm.events"))
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(
        tailhook.wait_for_log("delivery failed", WAIT),
        "{}",
        tailhook.stderr()
    );
    let exit = tailhook.terminate();
    assert_clean_exit(&exit);

    // The checkpoint, if written, does not pass the unacknowledged events.
    if setup.checkpoint(DEST).exists() {
        let checkpoint = setup.read_checkpoint(DEST).expect("checkpoint saved");
        assert_eq!(checkpoint["version"], 1, "{checkpoint}");
        // Either an entry for the file at 0, or (nothing was acknowledged
        // from it) no entry at all; never an entry for another path, which
        // would leave this file's position unchecked.
        let files = checkpoint["files"]
            .as_array()
            .unwrap_or_else(|| panic!("no files list in the checkpoint: {checkpoint}"));
        let offset = checkpointed_offset(&checkpoint, &log);
        assert_eq!(
            files.len(),
            usize::from(offset.is_some()),
            "the checkpoint should hold one entry, for {}, or none: {checkpoint}",
            log.display()
        );
        assert_eq!(
            offset.unwrap_or(0),
            0,
            "nothing was acknowledged, yet the checkpoint moved: {checkpoint}"
        );
    }

    let collector = fluentd_on(port);
    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_events(lines.len(), WAIT),
        "only {} of {} unacknowledged events arrived after the restart",
        collector.event_count(),
        lines.len()
    );
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&collector, &lines, "");
}

// ---- 3. kill -9 ------------------------------------------------------------------

#[test]
fn kill_9_then_restart_loses_nothing() {
    let setup = Setup::new();
    let collector = fluentd();
    let log = setup.log("a.ndjson");
    let first = hits(0, 100, 150);
    append(&log, &first);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra("[destination.batch]\nmax_events = 20\ntimeout = \"100ms\"\n")
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_events(first.len(), WAIT),
        "the first events were not delivered"
    );
    // From now on requests are left unanswered: the next ones are in flight
    // when the process is killed.
    collector.set_hang(true);
    let before = collector.request_count();
    let second = hits(100, 400, 150);
    append(&log, &second);
    assert!(
        collector.wait_for_requests(before + 1, WAIT),
        "no request in flight to kill"
    );
    let killed = tailhook.kill9();
    assert_eq!(killed.signal, Some(9), "{}", killed.output());

    collector.set_hang(false);
    let tailhook = Tailhook::start(&cfg);
    // Delivered means answered: the requests in flight at the kill were
    // recorded by the collector, but must be sent again all the same.
    let want: BTreeSet<u64> = (0..500).collect();
    let answered = |c: &Collector| -> BTreeSet<u64> {
        c.answered_events().iter().map(|e| seq_of(e)).collect()
    };
    assert!(
        wait_for_all_seqs_answered(&collector, &want, WAIT),
        "after kill -9 and a restart, seqs are missing: {:?}",
        want.difference(&answered(&collector))
            .take(20)
            .collect::<Vec<_>>()
    );
    assert_clean_exit(&tailhook.terminate());

    let counts = seq_counts(&collector);
    let lost: Vec<u64> = want.difference(&answered(&collector)).copied().collect();
    assert!(lost.is_empty(), "lost after kill -9: {lost:?}");
    assert!(
        !collector.stalled_events().is_empty(),
        "the requests in flight at the kill were recorded"
    );
    assert!(
        counts.keys().all(|s| want.contains(s)),
        "unexpected seqs: {counts:?}"
    );
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9: {} events accepted, {} unique, {duplicates} sent again ({} of them held unanswered at the kill)",
        collector.event_count(),
        counts.len(),
        collector.stalled_events().len()
    );
    // Every accepted copy is byte-for-byte one of the written lines.
    let written: BTreeSet<Vec<u8>> = bytes_of(&first)
        .into_iter()
        .chain(bytes_of(&second))
        .collect();
    assert!(collector.events().iter().all(|e| written.contains(e)));
}

/// A destination with small batches, for counting what `kill -9` re-sends
/// in batches.
const BATCH: usize = 50;

/// The destination's `concurrency` in the kill -9 bounds below.
const CONCURRENCY: usize = 2;

fn small_batches(setup: &Setup, collector: &Collector) -> PathBuf {
    setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra(&format!("concurrency = {CONCURRENCY}"))
        .extra(&format!(
            "[destination.batch]\nmax_events = {BATCH}\ntimeout = \"100ms\"\n"
        ))
        .write()
}

/// The checkpoint is written after every acknowledgement, without waiting
/// for a further one: once the collector has everything and the file says
/// so, `kill -9` re-sends nothing.
#[test]
fn kill_9_after_the_last_acknowledgement_is_saved_sends_nothing_again() {
    let setup = Setup::new();
    let collector = fluentd();
    let log = setup.log("a.ndjson");
    let first = wallarm_hits(0, 2000);
    append(&log, &first);
    let cfg = small_batches(&setup, &collector);

    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_events(first.len(), WAIT),
        "only {} of {} events arrived",
        collector.event_count(),
        first.len()
    );
    let took = setup
        .wait_checkpointed(DEST, &log, file_len(&log), WAIT)
        .unwrap_or_else(|| {
            panic!(
                "the checkpoint never recorded the last acknowledgement: {:?}\n{}",
                setup.read_checkpoint(DEST),
                tailhook.stderr()
            )
        });
    eprintln!("checkpoint on disk {took:?} after the collector had every event");
    let killed = tailhook.kill9();
    assert_eq!(killed.signal, Some(9), "{}", killed.output());

    // Events written after the restart show that it reads on from the end.
    let second = wallarm_hits(2000, 10);
    append(&log, &second);
    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_events(first.len() + second.len(), WAIT),
        "the events appended after the restart did not arrive ({} events)",
        collector.event_count()
    );
    assert_clean_exit(&tailhook.terminate());
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_each_exactly_once(&collector, &all, "kill -9 once the checkpoint was saved");
}

/// Killed while batches are being acknowledged, tailhook re-sends at most
/// the batches in flight and the one acknowledged while the checkpoint was
/// being written. The collector answers slowly (a quarter of a second), so
/// each acknowledgement's write is long done when the next one comes; the
/// kill comes within the first second, before a checkpoint written only
/// once a second would hold anything.
#[test]
fn kill_9_during_delivery_re_sends_at_most_the_batches_in_flight_and_one_more() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.set_delay(Duration::from_millis(250));
    let log = setup.log("a.ndjson");
    let lines = wallarm_hits(0, 1000);
    append(&log, &lines);
    let cfg = small_batches(&setup, &collector);

    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_events(2 * CONCURRENCY * BATCH, WAIT),
        "only {} events arrived",
        collector.event_count()
    );
    let killed = tailhook.kill9();
    assert_eq!(killed.signal, Some(9), "{}", killed.output());
    let before = collector.event_count();
    assert!(before < lines.len(), "everything arrived before the kill");

    collector.set_delay(Duration::ZERO);
    let tailhook = Tailhook::start(&cfg);
    let want: BTreeSet<u64> = (0..lines.len() as u64).collect();
    assert!(
        wait_for_all_seqs(&collector, &want, WAIT),
        "after kill -9 and a restart, seqs are missing"
    );
    assert_clean_exit(&tailhook.terminate());

    let counts = seq_counts(&collector);
    assert!(
        counts.keys().eq(want.iter()),
        "lost or unexpected seqs: {:?}",
        want.symmetric_difference(&counts.keys().copied().collect())
            .take(20)
            .collect::<Vec<_>>()
    );
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!("kill -9 after {before} events accepted: {duplicates} sent again");
    let bound = (CONCURRENCY + 1) * BATCH;
    assert!(
        duplicates <= bound,
        "{duplicates} events were sent again after kill -9; at most {bound} \
         (concurrency {CONCURRENCY} + 1 batches of {BATCH}) may be"
    );
}

/// A checkpoint that cannot be written: counted, logged once rather than
/// once per acknowledgement, tried again every second rather than in a
/// loop, and written as soon as it can be.
#[test]
fn a_checkpoint_that_cannot_be_written_is_retried_and_logged_once() {
    const FAILURES: &str = "tailhook_checkpoint_write_failures_total";
    const WRITES: &str = "tailhook_checkpoint_writes_total";
    let setup = Setup::new();
    let collector = fluentd();
    // Its temp file cannot be created, even by root: a directory is in the way.
    let blocker = setup.checkpoint(DEST).with_extension("json.tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    let log = setup.log("a.ndjson");
    let lines = wallarm_hits(0, 500);
    append(&log, &lines);
    let cfg = small_batches(&setup, &collector);

    let tailhook = Tailhook::start(&cfg);
    let addr = metrics_addr(&tailhook);
    let started = std::time::Instant::now();
    assert!(collector.wait_for_events(lines.len(), WAIT));
    let d = ("destination", DEST);
    let page = wait_for_page(addr, &tailhook, WAIT, "a retried write", &[FAILURES], |p| {
        p.value(FAILURES, &[d]) >= 2.0
    });
    let failures = page.value(FAILURES, &[d]);
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        failures <= seconds + 2.0,
        "{failures} failed writes in {seconds:.1} s: failed writes should be retried about once a second"
    );
    assert_eq!(page.value(WRITES, &[d]), 0.0);
    assert_eq!(
        tailhook.stderr().matches("cannot save checkpoint").count(),
        1,
        "a write that keeps failing is logged once, not once per try:\n{}",
        tailhook.stderr()
    );
    assert!(!setup.checkpoint(DEST).exists());

    std::fs::remove_dir(&blocker).unwrap();
    assert!(
        tailhook.wait_for_log("checkpoint saved again after", WAIT),
        "{}",
        tailhook.stderr()
    );
    assert!(
        setup
            .wait_checkpointed(DEST, &log, file_len(&log), WAIT)
            .is_some(),
        "{:?}",
        setup.read_checkpoint(DEST)
    );
    let exit = tailhook.terminate();
    assert_clean_exit(&exit);
    assert_eq!(exit.stderr.matches("cannot save checkpoint").count(), 1);
    assert_each_exactly_once(&collector, &lines, "");
}

// ---- 4. SIGTERM flushes ------------------------------------------------------------

#[test]
fn sigterm_delivers_what_is_batched() {
    let setup = Setup::new();
    let collector = fluentd();
    let lines = hits(0, 20, 150);
    append(&setup.log("a.ndjson"), &lines);
    // Files are read in path order, one chunk each per round: once the
    // invalid line of z.ndjson is logged, a.ndjson's events have been handed
    // to the batcher.
    append(
        &setup.log("z.ndjson"),
        &["not json: read marker".to_string()],
    );
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .extra("on_invalid = \"drop\"")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra("[destination.batch]\nmax_events = 1000\ntimeout = \"1h\"\n")
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(
        tailhook.wait_for_log("invalid line", WAIT),
        "{}",
        tailhook.stderr()
    );
    assert_eq!(
        collector.request_count(),
        0,
        "nothing is sent before the batch is full or its timeout passes"
    );
    assert_clean_exit(&tailhook.terminate());

    assert_eq!(collector.batches().len(), 1, "{:?}", collector.statuses());
    assert_eq!(collector.events(), bytes_of(&lines));
}

// ---- 5. on_invalid -----------------------------------------------------------------

/// What one item of the mixed file should become.
enum Want {
    /// A valid event, forwarded byte for byte.
    Event(Vec<u8>),
    /// An invalid line or element, forwarded wrapped (or dead-lettered).
    Wrapped {
        message: Message,
        /// A word of `tailhook_error`.
        reason: &'static str,
    },
}

/// How the wrapped `message` must relate to what was read.
enum Message {
    Equals(String),
    /// A non-empty prefix of this (an over-long line may be cut).
    PrefixOf(String),
    StartsWith(String),
}

impl Want {
    fn is_event(&self) -> bool {
        matches!(self, Want::Event(_))
    }
}

/// Writes `logs/a.ndjson` mixing valid events with every kind of invalid
/// line; returns what each item should become, in file order.
fn write_mixed_file(setup: &Setup) -> Vec<Want> {
    let valid = hits(0, 6, 120);
    let long = format!(r#"{{"seq":99,"pad":"{}"}}"#, "y".repeat(2000));
    let utf8: &[u8] = b"{\"bad\":\"\xff\xfe\"}";

    let mut bytes = Vec::new();
    let mut line = |b: &[u8]| {
        bytes.extend_from_slice(b);
        bytes.push(b'\n');
    };
    line(valid[0].as_bytes());
    line(b"this is not json");
    line(valid[1].as_bytes());
    line(b"42");
    line(valid[2].as_bytes());
    line(br#"[{"a":1},2]"#);
    line(valid[3].as_bytes());
    line(utf8);
    line(valid[4].as_bytes());
    line(long.as_bytes());
    line(valid[5].as_bytes());
    std::fs::write(setup.log("a.ndjson"), bytes).unwrap();

    let event = |s: &str| Want::Event(s.as_bytes().to_vec());
    vec![
        event(&valid[0]),
        Want::Wrapped {
            message: Message::Equals("this is not json".into()),
            reason: "not valid JSON",
        },
        event(&valid[1]),
        Want::Wrapped {
            message: Message::Equals("42".into()),
            reason: "not a JSON object",
        },
        event(&valid[2]),
        event(r#"{"a":1}"#),
        Want::Wrapped {
            message: Message::Equals("2".into()),
            reason: "not a JSON object",
        },
        event(&valid[3]),
        Want::Wrapped {
            message: Message::StartsWith(r#"{"bad":""#.into()),
            reason: "UTF-8",
        },
        event(&valid[4]),
        Want::Wrapped {
            message: Message::PrefixOf(long),
            reason: "max_line_bytes",
        },
        event(&valid[5]),
    ]
}

/// Checks one forwarded or dead-lettered object against `want`.
fn check_item(got: &[u8], want: &Want, index: usize) {
    let shown = String::from_utf8_lossy(got);
    match want {
        Want::Event(bytes) => assert_eq!(
            shown,
            String::from_utf8_lossy(bytes),
            "item {index}: a valid event is forwarded byte for byte"
        ),
        Want::Wrapped { message, reason } => {
            let v: serde_json::Value = serde_json::from_slice(got)
                .unwrap_or_else(|e| panic!("item {index} is not JSON ({e}): {shown}"));
            assert!(v.is_object(), "item {index} is not an object: {shown}");
            let msg = v["message"]
                .as_str()
                .unwrap_or_else(|| panic!("item {index} has no string `message`: {shown}"));
            let why = v["tailhook_error"]
                .as_str()
                .unwrap_or_else(|| panic!("item {index} has no string `tailhook_error`: {shown}"));
            assert!(
                why.contains(reason),
                "item {index}: tailhook_error should mention {reason:?}: {shown}"
            );
            let ok = match message {
                Message::Equals(m) => msg == m,
                Message::PrefixOf(m) => !msg.is_empty() && m.starts_with(msg),
                Message::StartsWith(m) => msg.starts_with(m.as_str()),
            };
            assert!(ok, "item {index}: unexpected message in {shown}");
        }
    }
}

fn run_on_invalid(mode: Option<&str>) -> (Setup, Vec<Want>, Vec<Vec<u8>>) {
    let setup = Setup::new();
    let collector = fluentd();
    let wants = write_mixed_file(&setup);
    let mut source_extra = "max_line_bytes = \"1KiB\"".to_string();
    if let Some(mode) = mode {
        source_extra.push_str(&format!("\non_invalid = \"{mode}\""));
    }
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .extra(&source_extra)
        .destination(DEST, &collector.url("/wallarm.events"))
        .write();
    let expected = if mode.is_none() || mode == Some("wrap") {
        wants.len()
    } else {
        wants.iter().filter(|w| w.is_event()).count()
    };

    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_events(expected, WAIT),
        "only {} of {expected} events arrived",
        collector.event_count()
    );
    assert!(
        tailhook.wait_for_log("invalid line", WAIT),
        "invalid lines should be logged:\n{}",
        tailhook.stderr()
    );
    assert_clean_exit(&tailhook.terminate());
    let events = collector.events();
    assert_eq!(
        collector.violations(),
        Vec::<String>::new(),
        "the collector saw data it would lose"
    );
    collector.stop();
    (setup, wants, events)
}

#[test]
fn on_invalid_wrap_is_the_default_and_forwards_in_file_order() {
    let (setup, wants, events) = run_on_invalid(None);
    assert_eq!(
        events.len(),
        wants.len(),
        "events: {:#?}",
        events
            .iter()
            .map(|e| String::from_utf8_lossy(e)
                .chars()
                .take(120)
                .collect::<String>())
            .collect::<Vec<_>>()
    );
    for (i, (got, want)) in events.iter().zip(&wants).enumerate() {
        check_item(got, want, i);
    }
    assert!(
        !setup.dead_letter(DEST).exists(),
        "wrap writes no dead-letter file"
    );
}

#[test]
fn on_invalid_drop_forwards_only_valid_events() {
    let (setup, wants, events) = run_on_invalid(Some("drop"));
    let valid: Vec<&Want> = wants.iter().filter(|w| w.is_event()).collect();
    assert_eq!(events.len(), valid.len());
    for (i, (got, want)) in events.iter().zip(valid).enumerate() {
        check_item(got, want, i);
    }
    assert!(
        !setup.dead_letter(DEST).exists(),
        "drop writes no dead-letter file"
    );
}

#[test]
fn on_invalid_dead_letter_sets_invalid_lines_aside() {
    let (setup, wants, events) = run_on_invalid(Some("dead_letter"));
    let (valid, invalid): (Vec<&Want>, Vec<&Want>) = wants.iter().partition(|w| w.is_event());
    assert_eq!(events.len(), valid.len());
    for (i, (got, want)) in events.iter().zip(valid).enumerate() {
        check_item(got, want, i);
    }

    let path = setup.dead_letter(DEST);
    let text = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("dead-letter file {} missing: {e}", path.display()));
    assert!(text.ends_with(b"\n"), "one object a line, newline-ended");
    let lines: Vec<&[u8]> = text[..text.len() - 1].split(|&b| b == b'\n').collect();
    assert_eq!(
        lines.len(),
        invalid.len(),
        "one dead letter per invalid item:\n{}",
        String::from_utf8_lossy(&text)
    );
    for (i, (got, want)) in lines.iter().zip(invalid).enumerate() {
        check_item(got, want, i);
    }
}

// ---- 6. permanent rejection --------------------------------------------------------

#[test]
fn a_rejected_batch_is_dead_lettered_and_delivery_moves_on() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.respond_with_body(400, "bad field xyz");
    let log = setup.log("a.ndjson");
    let rejected = hits(0, 10, 150);
    append(&log, &rejected);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(
        tailhook.wait_for_log("bad field xyz", WAIT),
        "the log should hold the start of the rejecting body:\n{}",
        tailhook.stderr()
    );
    // The next batch only exists once more lines are written.
    collector.clear_override();
    let later = hits(10, 20, 150);
    append(&log, &later);
    assert!(
        collector.wait_for_events(later.len(), WAIT),
        "delivery did not move on after the rejection: {} events, statuses {:?}",
        collector.event_count(),
        collector.statuses()
    );
    let exit = tailhook.terminate();
    assert_clean_exit(&exit);

    let rejection = exit
        .stderr
        .lines()
        .find(|l| l.contains("bad field xyz"))
        .expect("rejection log line");
    assert!(
        rejection.contains("400"),
        "the log line should give the status: {rejection}"
    );
    assert_eq!(collector.statuses()[0], 400);
    assert_each_exactly_once(&collector, &later, "");

    let dead = std::fs::read(setup.dead_letter(DEST)).expect("dead-letter file");
    let mut want = Vec::new();
    for l in &rejected {
        want.extend_from_slice(l.as_bytes());
        want.push(b'\n');
    }
    assert_eq!(
        String::from_utf8_lossy(&dead),
        String::from_utf8_lossy(&want),
        "the rejected events, byte for byte, one a line"
    );

    // Delivery moved on: the checkpoint covers the whole file.
    let checkpoint = setup.read_checkpoint(DEST).expect("checkpoint saved");
    assert_eq!(
        checkpointed_offset(&checkpoint, &log),
        Some(file_len(&log)),
        "{checkpoint}"
    );
}

// ---- 7. corrupt checkpoint -----------------------------------------------------------

#[test]
fn a_corrupt_checkpoint_is_reported_and_everything_is_sent_again() {
    let cases: [(&str, &[u8]); 3] = [
        ("garbage", b"\x00\xffthis is no checkpoint\n"),
        (
            "truncated JSON",
            b"{\"version\": 1, \"destination\": \"fluentd\", \"files\": [",
        ),
        ("empty", b""),
    ];
    for (what, content) in cases {
        let setup = Setup::new();
        let collector = fluentd();
        let log = setup.log("a.ndjson");
        let lines = hits(0, 10, 150);
        append(&log, &lines);
        let checkpoint = setup.checkpoint(DEST);
        std::fs::create_dir_all(checkpoint.parent().unwrap()).unwrap();
        std::fs::write(&checkpoint, content).unwrap();
        let cfg = setup
            .builder()
            .file_source("wallarm", "*.ndjson")
            .destination(DEST, &collector.url("/wallarm.events"))
            .write();

        let tailhook = Tailhook::start(&cfg);
        assert!(
            tailhook.wait_for_log("unusable", WAIT),
            "{what}: a corrupt checkpoint should be reported in words:\n{}",
            tailhook.stderr()
        );
        assert!(
            collector.wait_for_events(lines.len(), WAIT),
            "{what}: only {} of {} events were sent again",
            collector.event_count(),
            lines.len()
        );
        assert_clean_exit(&tailhook.terminate());
        assert_each_exactly_once(&collector, &lines, "");

        let saved = setup.read_checkpoint(DEST).expect("checkpoint saved");
        assert_eq!(saved["version"], 1, "{what}: rewritten checkpoint {saved}");
        assert_eq!(
            checkpointed_offset(&saved, &log),
            Some(file_len(&log)),
            "{what}: {saved}"
        );
    }
}

// ---- 8. unreadable and vanishing files -------------------------------------------------

#[test]
fn unreadable_and_vanishing_files_do_not_stop_the_others() {
    let setup = Setup::new();
    let collector = fluentd();

    let a = setup.log("a.ndjson");
    let a_first = hits(0, 10, 150);
    append(&a, &a_first);

    let b = setup.log("b.ndjson");
    let b_lines = hits(1000, 5, 150);
    append(&b, &b_lines);
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o000)).unwrap();
    // As root (or with CAP_DAC_OVERRIDE) mode 000 does not stop reading.
    let b_blocked = std::fs::File::open(&b).is_err();

    // Large enough to still be read when it is deleted.
    let c = setup.log("c.ndjson");
    let c_lines = hits(10_000, 8000, 1000);
    append(&c, &c_lines);

    // A deleted file is closed once it has been idle for rotate_wait.
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .extra("rotate_wait = \"1s\"")
        .destination(DEST, &collector.url("/wallarm.events"))
        .write();
    let tailhook = Tailhook::start(&cfg);

    if b_blocked {
        assert!(
            tailhook.wait_for_log("cannot open file", WAIT),
            "an unreadable file should be reported:\n{}",
            tailhook.stderr()
        );
    } else {
        eprintln!(
            "running with permission to read mode-000 files: not checking the unreadable report"
        );
    }

    // Delete c.ndjson as soon as its first events arrive.
    let c_first = seq_of(c_lines[0].as_bytes());
    assert!(
        wait_for_all_seqs(&collector, &BTreeSet::from([c_first]), WAIT),
        "c.ndjson is not being delivered"
    );
    std::fs::remove_file(&c).unwrap();
    assert!(
        tailhook.wait_for_log("finished a rotated or deleted file", WAIT),
        "{}",
        tailhook.stderr()
    );

    // Other files keep flowing.
    let a_later = hits(10, 10, 150);
    append(&a, &a_later);
    let mut want: BTreeSet<u64> = a_first
        .iter()
        .chain(&a_later)
        .chain(&c_lines)
        .map(|l| seq_of(l.as_bytes()))
        .collect();
    assert!(
        wait_for_all_seqs(&collector, &want, WAIT),
        "events of a.ndjson or of the deleted c.ndjson are missing"
    );

    if b_blocked {
        assert!(
            !seq_counts(&collector).contains_key(&1000),
            "an unreadable file was delivered"
        );
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            tailhook.wait_for_log("file is readable now", WAIT),
            "{}",
            tailhook.stderr()
        );
    }
    want.extend(b_lines.iter().map(|l| seq_of(l.as_bytes())));
    assert!(
        wait_for_all_seqs(&collector, &want, WAIT),
        "b.ndjson was not delivered once readable"
    );

    assert_clean_exit(&tailhook.terminate());
    let all: Vec<String> = a_first
        .iter()
        .chain(&a_later)
        .chain(&b_lines)
        .chain(&c_lines)
        .cloned()
        .collect();
    assert_each_exactly_once(&collector, &all, "");
}

// ---- SIGTERM while a request hangs ----------------------------------------------------

/// SPEC 5: SIGTERM delivers what is batched *within `shutdown_timeout`*. A
/// request that never gets an answer must be abandoned (and sent again at the
/// next start), not waited for until `request_timeout`.
#[test]
fn sigterm_with_a_hanging_collector_stops_after_shutdown_timeout() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.set_hang(true);
    let lines = hits(0, 10, 150);
    append(&setup.log("a.ndjson"), &lines);
    // The request would wait an hour for an answer; shutdown_timeout is 1 s.
    let cfg = setup
        .builder()
        .extra("shutdown_timeout = \"1s\"")
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra("request_timeout = \"1h\"")
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(collector.wait_for_requests(1, WAIT), "no request sent");
    tailhook.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        tailhook.wait_for_log("shutdown_timeout passed", WAIT),
        "{}",
        tailhook.stderr()
    );
    let exit = tailhook.wait_exit(WAIT);
    assert_clean_exit(&exit);
    // Recorded by the collector, never answered.
    assert!(collector.statuses().is_empty());
    assert_eq!(collector.stalled_events(), bytes_of(&lines));

    // The abandoned batch is sent at the next start.
    collector.set_hang(false);
    let tailhook = Tailhook::start(&cfg);
    assert!(collector.wait_for_answered_events(lines.len(), WAIT));
    assert_clean_exit(&tailhook.terminate());
    // At least once: the only copy besides the answered one is the request
    // abandoned at shutdown.
    assert_answered_once_and_only_stalled_duplicates(&collector, &lines, "abandoned at SIGTERM");
    assert_eq!(collector.stalled_events(), bytes_of(&lines));
}

/// "a second signal stops at once" (the shutdown log line): even with a
/// request in flight.
#[test]
fn a_second_sigterm_stops_at_once_even_with_a_request_in_flight() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.set_hang(true);
    let lines = hits(0, 10, 150);
    append(&setup.log("a.ndjson"), &lines);
    // Default shutdown_timeout (30 s); the request would wait an hour.
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra("request_timeout = \"1h\"")
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(collector.wait_for_requests(1, WAIT), "no request sent");
    tailhook.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        tailhook.wait_for_log("shutting down", WAIT),
        "{}",
        tailhook.stderr()
    );
    tailhook.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        tailhook.wait_for_log("stopping now", WAIT),
        "{}",
        tailhook.stderr()
    );
    let exit = tailhook.wait_exit(WAIT);
    assert_clean_exit(&exit);
    // Recorded by the collector, never answered.
    assert!(collector.statuses().is_empty());
    assert_eq!(collector.stalled_events(), bytes_of(&lines));

    // Nothing was acknowledged: the next start sends it all.
    collector.set_hang(false);
    let tailhook = Tailhook::start(&cfg);
    assert!(collector.wait_for_answered_events(lines.len(), WAIT));
    assert_clean_exit(&tailhook.terminate());
    // At least once: the only copy besides the answered one is the request
    // cut by the second signal.
    assert_answered_once_and_only_stalled_duplicates(&collector, &lines, "cut by a second SIGTERM");
    assert_eq!(collector.stalled_events(), bytes_of(&lines));
}
