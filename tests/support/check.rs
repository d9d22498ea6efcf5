//! Accounting of sequence-numbered events (made by `setup::hits`) at the
//! end of a test: each exactly once, or at least once, and clean exits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::collector::Collector;
use super::process::{Exit, Tailhook};
use super::setup::{bytes_of, seq_of};

/// The `seq` of every accepted event, in arrival order.
pub fn seqs(collector: &Collector) -> Vec<u64> {
    collector.events().iter().map(|e| seq_of(e)).collect()
}

/// How many times each `seq` was accepted.
pub fn seq_counts(collector: &Collector) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for e in collector.events() {
        *counts.entry(seq_of(&e)).or_insert(0) += 1;
    }
    counts
}

/// Asserts that the collector accepted each of `lines` exactly once, byte for
/// byte, and nothing else (in any order).
pub fn assert_each_exactly_once(collector: &Collector, lines: &[String], what: &str) {
    assert_exactly_once_among(collector, collector.events(), lines, what);
}

/// At-least-once where the collector recorded some requests and then
/// stalled them (`set_hang`, `hang_next`), so that their sender sent them
/// again: the batches answered at once hold each of `lines` exactly once,
/// byte for byte, and nothing else; the stalled batches hold nothing but
/// `lines`, and are the only duplicates. Returns how many events the stalled
/// batches hold (the duplicates), after printing it.
pub fn assert_answered_once_and_only_stalled_duplicates(
    collector: &Collector,
    lines: &[String],
    what: &str,
) -> usize {
    assert_exactly_once_among(collector, collector.answered_events(), lines, what);
    let written: BTreeSet<Vec<u8>> = bytes_of(lines).into_iter().collect();
    let stalled = collector.stalled_events();
    for e in &stalled {
        assert!(
            written.contains(e),
            "{what}: a stalled request held an event that was not written: {}",
            show(e)
        );
    }
    eprintln!(
        "{what}: {} events answered once each; {} copies in stalled requests (sent again)",
        lines.len(),
        stalled.len()
    );
    stalled.len()
}

fn assert_exactly_once_among(
    collector: &Collector,
    mut got: Vec<Vec<u8>>,
    lines: &[String],
    what: &str,
) {
    let mut want = bytes_of(lines);
    got.sort();
    want.sort();
    if got == want {
        return;
    }
    let want_seqs: BTreeSet<u64> = lines.iter().map(|l| seq_of(l.as_bytes())).collect();
    let mut counts = BTreeMap::new();
    for e in &got {
        *counts.entry(seq_of(e)).or_insert(0usize) += 1;
    }
    let missing: Vec<u64> = want_seqs
        .iter()
        .filter(|s| !counts.contains_key(s))
        .copied()
        .collect();
    let duplicated: Vec<(u64, usize)> = counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&s, &n)| (s, n))
        .collect();
    let unexpected: Vec<u64> = counts
        .keys()
        .filter(|s| !want_seqs.contains(s))
        .copied()
        .collect();
    panic!(
        "{what}: expected each of {} events exactly once, byte for byte; got {} events.\n\
         missing seqs ({}): {:?}\nduplicated (seq, times): {duplicated:?}\n\
         unexpected seqs: {unexpected:?}\nstatuses: {:?}",
        want.len(),
        got.len(),
        missing.len(),
        &missing[..missing.len().min(50)],
        collector.statuses()
    );
}

/// Waits until every `seq` in `want` has been accepted at least once, or
/// `timeout`. Event-driven: each round waits for one more event.
pub fn wait_for_all_seqs(collector: &Collector, want: &BTreeSet<u64>, timeout: Duration) -> bool {
    wait_seqs_in(
        want,
        timeout,
        || collector.events(),
        |n, t| collector.wait_for_events(n, t),
    )
}

/// Like [`wait_for_all_seqs`], counting only the events of batches the
/// collector answered at once (not those it recorded and then stalled).
pub fn wait_for_all_seqs_answered(
    collector: &Collector,
    want: &BTreeSet<u64>,
    timeout: Duration,
) -> bool {
    wait_seqs_in(
        want,
        timeout,
        || collector.answered_events(),
        |n, t| collector.wait_for_answered_events(n, t),
    )
}

/// The loop of both: read the events, and while a `seq` is missing, wait
/// for one more.
fn wait_seqs_in(
    want: &BTreeSet<u64>,
    timeout: Duration,
    events: impl Fn() -> Vec<Vec<u8>>,
    wait: impl Fn(usize, Duration) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let events = events();
        let seen: BTreeSet<u64> = events.iter().map(|e| seq_of(e)).collect();
        if want.is_subset(&seen) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        wait(events.len() + 1, deadline - now);
    }
}

/// How long the sender waited between the answer to request `i` (counting
/// from 0, in arrival order) and its next request: the time a `Retry-After`
/// asks for is a lower bound of it.
pub fn wait_after_answer(collector: &Collector, i: usize) -> Duration {
    let exchanges = collector.exchanges();
    let (answered, status) = exchanges
        .get(i)
        .and_then(|e| e.answered)
        .unwrap_or_else(|| panic!("request #{i} was not answered: {exchanges:?}"));
    let next = exchanges
        .get(i + 1)
        .unwrap_or_else(|| panic!("no request after #{i} ({status}): {exchanges:?}"));
    next.arrived.saturating_duration_since(answered)
}

/// A port on 127.0.0.1 where nothing listens, held for as long as this
/// lives: a socket is bound to it but never listens, so connections are
/// refused and no other test's collector can be given the port meanwhile.
/// It is bound with SO_REUSEADDR, so a collector can still take the port on
/// purpose (a collector "coming back").
pub struct DeadPort {
    /// The port.
    pub port: u16,
    _held: tokio::net::TcpSocket,
}

/// Reserves a [`DeadPort`].
pub fn dead_port() -> DeadPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let port = socket.local_addr().expect("local addr").port();
    DeadPort {
        port,
        _held: socket,
    }
}

pub fn assert_clean_exit(exit: &Exit) {
    assert!(
        exit.success(),
        "tailhook should exit 0 on SIGTERM, got code {:?} signal {:?}\n{}",
        exit.code,
        exit.signal,
        exit.output()
    );
    assert!(
        !exit.stderr.contains("panicked"),
        "tailhook panicked:\n{}",
        exit.output()
    );
}

/// The longest a shared helper below waits.
pub const WAIT: Duration = Duration::from_secs(30);

/// Sends SIGTERM and checks a clean exit.
pub fn stop(tailhook: Tailhook) -> Exit {
    let exit = tailhook.terminate();
    assert_clean_exit(&exit);
    exit
}

pub fn wait_events(collector: &Collector, tailhook: &Tailhook, n: usize) {
    assert!(
        collector.wait_for_events(n, WAIT),
        "the collector accepted {} of {n} events within {WAIT:?}\n--- tailhook stderr ---\n{}",
        collector.event_count(),
        tailhook.stderr()
    );
}

pub fn wait_log(tailhook: &Tailhook, needle: &str) {
    assert!(
        tailhook.wait_for_log(needle, WAIT),
        "tailhook never logged {needle:?} within {WAIT:?}\n{}",
        tailhook.stderr()
    );
}

pub fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() > 300 {
        let start: String = text.chars().take(300).collect();
        format!("{start:?}... ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}

/// Compares event lists without printing megabytes: the first event that
/// differs, then the count.
pub fn assert_same_events(actual: &[Vec<u8>], expected: &[Vec<u8>], what: &str) {
    if let Some(i) = (0..actual.len().min(expected.len())).find(|&i| actual[i] != expected[i]) {
        panic!(
            "{what}: event #{i} differs\n  got:      {}\n  expected: {}",
            show(&actual[i]),
            show(&expected[i])
        );
    }
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} events received, {} expected (the first {} match)",
        actual.len(),
        expected.len(),
        actual.len().min(expected.len())
    );
}

/// Lines joined, each followed by a newline.
pub fn ndjson(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    out
}
