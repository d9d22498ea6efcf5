//! `X-Tailhook-Batch-Id`: every request carries an id derived from the
//! positions its batch covers, so a collector can deduplicate. A retry of a
//! batch (after a 503, or after `kill -9` and a restart, when the same
//! positions are read again) carries the id of its first attempt; different
//! batches carry different ids.
//!
//! Spooled input (an `http` source) is read back from spool segment files,
//! which have positions like any file, and gets ids the same way.
//!
//! Checked as a collector sees it: the header of every request, whatever
//! its answer, and the events that arrived.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::check::{assert_same_events, stop, wait_events};
use support::collector::{fluentd, Stall};
use support::http_client::post;
use support::inputs::listen_addr;
use support::process::Tailhook;
use support::setup::{append, bytes_of, hits, wallarm_hits, Setup};

/// Upper bound of every wait; a healthy run takes a small part of it.
const WAIT: Duration = Duration::from_secs(30);

const DEST: &str = "fluentd";
const HEADER: &str = "x-tailhook-batch-id";

fn is_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Three batches of five events; the first is answered 503 once. The 503'd
/// request and its retry carry the same id; the three batches carry three
/// different ids, each 32 hex digits; the accepted requests carry them too;
/// every event arrives once, in order.
#[test]
fn a_retry_after_a_503_carries_the_same_id_and_batches_differ() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.fail_next(&[503]);
    let lines = hits(0, 15, 200);
    append(&setup.log("a.ndjson"), &lines);
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra("concurrency = 1\n[destination.batch]\nmax_events = 5\ntimeout = \"100ms\"\n")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, lines.len());
    stop(tailhook);

    let seen = collector.header_of_each_request(HEADER);
    assert_eq!(seen.len(), 4, "one 503, then three batches: {seen:?}");
    let ids: Vec<String> = seen
        .iter()
        .map(|(id, _)| id.clone().expect("every request carries the header"))
        .collect();
    for id in &ids {
        assert!(is_id(id), "not 32 hex digits: {id}");
    }
    let statuses: Vec<u16> = seen.iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [503, 200, 200, 200]);
    assert_eq!(
        ids[0], ids[1],
        "the retry carries the id of the first attempt"
    );
    let distinct: BTreeSet<&String> = ids[1..].iter().collect();
    assert_eq!(distinct.len(), 3, "three batches, three ids: {ids:?}");
    let accepted: Vec<String> = collector
        .batches()
        .iter()
        .map(|b| b.header(HEADER).unwrap().to_string())
        .collect();
    assert_eq!(accepted, ids[1..]);
    assert_same_events(
        &collector.events(),
        &bytes_of(&lines),
        "every event once, in order",
    );
}

/// A batch whose request never gets an answer; tailhook is killed with
/// SIGKILL and started again (Wallarm-shaped lines, alike in their first
/// bytes, as real logs are): the batch, read again from the same
/// positions, carries the id of its first attempt; every event arrives, in
/// order.
#[test]
fn after_kill_9_and_a_restart_the_batch_sent_again_carries_the_same_id() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.set_stall(Stall::BeforeRecording);
    collector.set_hang(true);
    let lines = wallarm_hits(0, 10);
    append(&setup.log("a.ndjson"), &lines);
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        // The batch is sent when it holds all ten events, however the
        // file happens to be read: the same bounds on both runs.
        .extra("concurrency = 1\n[destination.batch]\nmax_events = 10\ntimeout = \"30s\"\n")
        .write();
    let first = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_requests(1, WAIT),
        "the first attempt arrives\n{}",
        first.stderr()
    );
    first.kill9();
    collector.set_hang(false);

    let second = Tailhook::start(&cfg);
    wait_events(&collector, &second, lines.len());
    stop(second);

    let seen = collector.header_of_each_request(HEADER);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let first_id = seen[0].0.clone().expect("the first attempt carries an id");
    assert!(is_id(&first_id), "{first_id}");
    assert_eq!(seen[0].1, 0, "the first attempt is never answered");
    assert_eq!(
        seen[1],
        (Some(first_id), 200),
        "sent again after the restart with the same id"
    );
    assert_same_events(
        &collector.events(),
        &bytes_of(&lines),
        "every event, in order",
    );
}

/// An `http` input (spooled): its events are read back from spool segment
/// files, which have positions like any file. A batch whose request is
/// never answered, sent again after `kill -9` and a restart, carries the id
/// of its first attempt; every event accepted with 200 arrives, in order.
#[test]
fn a_spooled_batch_sent_again_after_kill_9_carries_the_same_id() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.set_stall(Stall::BeforeRecording);
    collector.set_hang(true);
    let cfg = setup
        .builder()
        .input("hook", "http")
        .destination(DEST, &collector.url("/wallarm.events"))
        // The batch is sent when it holds all eight events, however the
        // spool is written and read: the same bounds on both runs.
        .extra("concurrency = 1\n[destination.batch]\nmax_events = 8\ntimeout = \"30s\"\n")
        .write();
    let first = Tailhook::start(&cfg);
    let addr = listen_addr(&first, "hook");
    let lines = hits(0, 8, 150);
    let reply = post(addr, format!("[{}]", lines.join(",")).as_bytes());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        collector.wait_for_requests(1, WAIT),
        "the first attempt arrives\n{}",
        first.stderr()
    );
    first.kill9();
    collector.set_hang(false);

    let second = Tailhook::start(&cfg);
    wait_events(&collector, &second, lines.len());
    stop(second);

    let seen = collector.header_of_each_request(HEADER);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let first_id = seen[0].0.clone().expect("the first attempt carries an id");
    assert!(is_id(&first_id), "{first_id}");
    assert_eq!(
        seen[1],
        (Some(first_id), 200),
        "the same id after the restart"
    );
    assert_same_events(
        &collector.events(),
        &bytes_of(&lines),
        "every event, in order",
    );
}
