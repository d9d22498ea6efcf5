//! Each fault of issue 3 alone, where `recovery.rs`, `rotation.rs` and
//! `delivery.rs` do not already cover it: a checkpoint for a reused inode, a
//! file rotated while tailhook is stopped, copytruncate with the copy matched
//! by the glob (while running and while stopped), out-of-order completions
//! with `concurrency = 2` then `kill -9` or SIGTERM, independent
//! destinations (one down, one rejecting, one added later), memory during an
//! outage, checkpoints of an unknown version or empty, and `Retry-After` on a
//! Logstash 429.
//!
//! Events carry sequence numbers; the checks are what a user sees: the events
//! a collector accepted (count, bytes, duplicates), files on disk, exit codes
//! and words in the log. A clean SIGTERM is the final synchronisation point:
//! once `terminate()` returns nothing more can arrive, so exact counts hold.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use support::check::{
    assert_clean_exit, assert_each_exactly_once, dead_port, seq_counts, wait_after_answer,
    wait_for_all_seqs, wait_for_all_seqs_answered,
};
use support::collector::{fluentd, Collector, Options};
use support::process::{Exit, Tailhook};
use support::setup::{append, bytes_of, checkpointed_offset, destination, hits, seq_of, Setup};

/// Upper bound of every wait; a healthy run takes a small part of it.
const WAIT: Duration = Duration::from_secs(30);

/// The destination of the single-destination tests.
const DEST: &str = "fluentd";

// ---- helpers ----------------------------------------------------------------

/// Waits for `n` events, failing with the log and the statuses.
fn wait_events(collector: &Collector, tailhook: &Tailhook, n: usize, what: &str) {
    assert!(
        collector.wait_for_events(n, WAIT),
        "{what}: the collector accepted {} of {n} events; statuses {:?}\n--- tailhook stderr ---\n{}",
        collector.event_count(),
        collector.statuses(),
        tailhook.stderr()
    );
}

fn stop(tailhook: Tailhook) -> Exit {
    let exit = tailhook.terminate();
    assert_clean_exit(&exit);
    exit
}

fn concat(parts: &[&[String]]) -> Vec<String> {
    parts.iter().flat_map(|p| p.iter().cloned()).collect()
}

/// FNV-1a of a file's first 256 bytes, as tailhook's checkpoints record it.
fn fingerprint(head: &[u8]) -> (u32, u64) {
    let head = &head[..head.len().min(256)];
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in head {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (head.len() as u32, hash)
}

/// Writes `data/checkpoints/<DEST>.json` for one file, in tailhook's
/// format, with the file's real device and inode.
fn write_checkpoint(setup: &Setup, version: u32, file: &Path, head: &[u8], offset: u64) {
    let meta = std::fs::metadata(file).unwrap();
    let (len, hash) = fingerprint(head);
    let json = serde_json::json!({
        "version": version,
        "destination": DEST,
        "files": [{
            "path": file.display().to_string(),
            "dev": meta.dev(),
            "ino": meta.ino(),
            "fingerprint": {"len": len, "hash": hash},
            "offset": offset,
        }],
    });
    let path = setup.checkpoint(DEST);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}

/// Where each line starts in a file holding `lines` one a line.
fn line_starts(lines: &[String]) -> Vec<u64> {
    let mut at = 0u64;
    lines
        .iter()
        .map(|l| {
            let start = at;
            at += l.len() as u64 + 1;
            start
        })
        .collect()
}

// ---- 1. inode reuse ---------------------------------------------------------------

/// A checkpoint names this file's device and inode, but its fingerprint is
/// of other bytes (the inode was reused by a new file): it is not applied,
/// the file is read from its first byte. Then tailhook's own checkpoint
/// matches, and a restart resumes without re-sending.
#[test]
fn a_checkpoint_for_a_reused_inode_is_not_applied() {
    let setup = Setup::new();
    let collector = fluentd();
    let log = setup.log("app.log");
    let lines = hits(0, 20, 200);
    append(&log, &lines);
    // The file that had the inode before: other bytes; its checkpoint says
    // half of it was delivered.
    let other = hits(5000, 2, 200).join("\n");
    let middle = line_starts(&lines)[10];
    write_checkpoint(&setup, 1, &log, other.as_bytes(), middle);
    let cfg = setup
        .builder()
        .file_source("app", "app.log")
        .destination(DEST, &collector.url("/app"))
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(
        tailhook.wait_for_log("file is not the one its checkpoint describes", WAIT),
        "{}",
        tailhook.stderr()
    );
    wait_events(&collector, &tailhook, lines.len(), "reused inode");
    stop(tailhook);
    assert_eq!(
        collector.events(),
        bytes_of(&lines),
        "every line, from the first, once"
    );

    // Conversely: tailhook's own checkpoint describes the file.
    let more = hits(20, 5, 200);
    append(&log, &more);
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, lines.len() + more.len(), "restart");
    let exit = stop(tailhook);
    assert!(
        !exit.stderr.contains("not the one its checkpoint describes"),
        "{}",
        exit.output()
    );
    assert_each_exactly_once(&collector, &concat(&[&lines, &more]), "restart");
}

/// The control for the test above: the same crafted checkpoint with the
/// file's real fingerprint is applied, and reading resumes at its offset.
#[test]
fn a_checkpoint_with_a_matching_fingerprint_resumes_at_its_offset() {
    let setup = Setup::new();
    let collector = fluentd();
    let log = setup.log("app.log");
    let lines = hits(0, 20, 200);
    append(&log, &lines);
    let head = std::fs::read(&log).unwrap();
    write_checkpoint(&setup, 1, &log, &head, line_starts(&lines)[10]);
    let cfg = setup
        .builder()
        .file_source("app", "app.log")
        .destination(DEST, &collector.url("/app"))
        .write();

    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 10, "matching checkpoint");
    let more = hits(20, 3, 200);
    append(&log, &more);
    wait_events(&collector, &tailhook, 13, "matching checkpoint");
    let exit = stop(tailhook);
    assert!(
        !exit.stderr.contains("not the one its checkpoint describes"),
        "{}",
        exit.output()
    );
    assert_eq!(
        collector.events(),
        bytes_of(&concat(&[&lines[10..], &more])),
        "only what follows the checkpointed offset"
    );
}

// ---- 2. rotated while stopped -------------------------------------------------------

/// Lines appended to `app.log` while tailhook is stopped, then `app.log`
/// renamed to `app.log.1` (not matched by the glob) and a new `app.log`
/// created: at restart the checkpointed file is found again by device and
/// inode and its rest is read, then the new file.
#[test]
fn a_file_rotated_while_stopped_is_read_to_its_end_after_restart() {
    let setup = Setup::new();
    let collector = fluentd();
    let log = setup.log("app.log");
    let cfg = setup
        .builder()
        .file_source("app", "app.log")
        .destination(DEST, &collector.url("/app"))
        .write();

    let first = hits(0, 50, 200);
    append(&log, &first);
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, first.len(), "first run");
    stop(tailhook);

    // While stopped: more lines, then rotation by rename.
    let tail = hits(50, 30, 200);
    append(&log, &tail);
    std::fs::rename(&log, setup.log("app.log.1")).unwrap();
    let fresh = hits(80, 20, 200);
    append(&log, &fresh);

    let tailhook = Tailhook::start(&cfg);
    let all = concat(&[&first, &tail, &fresh]);
    let want: BTreeSet<u64> = (0..all.len() as u64).collect();
    let arrived = wait_for_all_seqs(&collector, &want, WAIT);
    let exit = stop(tailhook);
    assert!(
        arrived,
        "after a rotation while stopped, missing seqs: {:?}\n{}",
        want.difference(&seq_counts(&collector).keys().copied().collect())
            .collect::<Vec<_>>(),
        exit.stderr
    );
    assert_each_exactly_once(&collector, &all, "rotated while stopped");
}

// ---- 3. copytruncate with the copy matched by the glob ---------------------------------

/// `app.log` copied to `app.log.1` (matched by `app.log*`) and truncated
/// (nothing written between copy and truncation), while tailhook runs, then
/// new lines: the copy is recognised by its first bytes and read only from
/// where tailhook had got to; the truncated file is read again from its
/// start. Every line arrives exactly once. `wait_before_copy`: the last
/// lines before the copy were delivered first; otherwise they are written
/// just before the copy, and tailhook may or may not have read them.
fn copytruncate_while_running(wait_before_copy: bool) {
    let setup = Setup::new();
    let collector = fluentd();
    let log = setup.log("app.log");
    let cfg = setup
        .builder()
        .file_source("app", "app.log*")
        .destination(DEST, &collector.url("/app"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);

    let delivered = hits(0, 100, 200);
    append(&log, &delivered);
    wait_events(&collector, &tailhook, 100, "before the rotation");

    let before_copy = hits(100, 100, 200);
    append(&log, &before_copy);
    if wait_before_copy {
        wait_events(&collector, &tailhook, 200, "before the copy");
    }
    std::fs::copy(&log, setup.log("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert!(
        tailhook.wait_for_log("file shrank", WAIT),
        "{}",
        tailhook.stderr()
    );
    let after = hits(200, 50, 200);
    append(&log, &after);
    wait_events(&collector, &tailhook, 250, "after the rotation");
    // Markers: once they are in, the copy has been seen by later scans.
    for seq in [250, 251] {
        append(&log, &hits(seq, 1, 200));
        wait_events(&collector, &tailhook, seq + 1, "marker");
    }
    stop(tailhook);
    let all = concat(&[&delivered, &before_copy, &after, &hits(250, 2, 200)]);
    assert_each_exactly_once(&collector, &all, "copytruncate, copy in the glob");
}

#[test]
fn copytruncate_with_the_copy_matched_by_the_glob_sends_each_line_once() {
    copytruncate_while_running(false);
}

#[test]
fn copytruncate_of_a_fully_delivered_file_sends_nothing_from_the_copy() {
    copytruncate_while_running(true);
}

/// Copytruncate as `logrotate` does it on a larger file: the copy is
/// written in parts (tailhook sees it half written and takes it for a copy
/// in progress), and the original is truncated as soon as the copy is
/// complete. Ten rotations in a row; every line must arrive exactly once.
///
/// Fails about every other run at bd19f04: when the waiting copy's step
/// sees the copy grown while the original is already truncated, the
/// comparison with the original fails and the copy is read whole, though
/// the original's own step would have handed it its start
/// (`hand_to_copy`). Run with `cargo test --test faults -- --ignored`.
#[test]
fn copytruncate_with_a_copy_written_in_parts_sends_each_line_once() {
    const ROTATIONS: usize = 10;
    const LINES: usize = 100;
    let setup = Setup::new();
    let collector = fluentd();
    let log = setup.log("app.log");
    let cfg = setup
        .builder()
        .file_source("app", "app.log*")
        .destination(DEST, &collector.url("/app"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let mut all = Vec::new();
    for r in 0..ROTATIONS {
        let lines = hits(r * LINES, LINES, 200);
        append(&log, &lines);
        all.extend(lines);
        // By seq, not by count: a duplicate must not stand in for a line.
        let want: BTreeSet<u64> = (0..all.len() as u64).collect();
        assert!(
            wait_for_all_seqs(&collector, &want, WAIT),
            "rotation {r}: lines missing\n{}",
            tailhook.stderr()
        );

        let content = std::fs::read(&log).unwrap();
        let (first, rest) = content.split_at(content.len() / 2);
        let mut copy = std::fs::File::create(setup.log(&format!("app.log.{}", r + 1))).unwrap();
        std::io::Write::write_all(&mut copy, first).unwrap();
        assert!(
            tailhook.wait_for_log_count("file is a copy of a file being read", r + 1, WAIT),
            "the half-written copy was not taken for a copy:\n{}",
            tailhook.stderr()
        );
        std::io::Write::write_all(&mut copy, rest).unwrap();
        drop(copy);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert!(
            tailhook.wait_for_log_count("file shrank", r + 1, WAIT),
            "{}",
            tailhook.stderr()
        );
    }
    // Markers: once they are in, every copy has been seen by later scans.
    for seq in [ROTATIONS * LINES, ROTATIONS * LINES + 1] {
        let marker = hits(seq, 1, 200);
        append(&log, &marker);
        all.extend(marker);
        let want = BTreeSet::from([seq as u64]);
        assert!(wait_for_all_seqs(&collector, &want, WAIT), "marker {seq}");
    }
    stop(tailhook);
    assert_each_exactly_once(&collector, &all, "copy written in parts");
}

/// Copytruncate while tailhook is stopped: lines appended, `app.log` copied
/// to `app.log.1` (matched by `app.log*`), truncated, and written again. At
/// restart the truncated file is not the one its checkpoint describes (read
/// from its start), and the copy holds the checkpointed content: it is read
/// only from the checkpointed offset. Nothing is re-sent, nothing lost.
#[test]
fn copytruncate_while_stopped_reads_the_copy_from_the_checkpoint() {
    let setup = Setup::new();
    let collector = fluentd();
    let log = setup.log("app.log");
    let cfg = setup
        .builder()
        .file_source("app", "app.log*")
        .destination(DEST, &collector.url("/app"))
        .write();

    let delivered = hits(0, 60, 200);
    append(&log, &delivered);
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, delivered.len(), "first run");
    stop(tailhook);

    let unread = hits(60, 40, 200);
    append(&log, &unread);
    std::fs::copy(&log, setup.log("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    let fresh = hits(100, 20, 200);
    append(&log, &fresh);

    let tailhook = Tailhook::start(&cfg);
    let all = concat(&[&delivered, &unread, &fresh]);
    let want: BTreeSet<u64> = (0..all.len() as u64).collect();
    let arrived = wait_for_all_seqs(&collector, &want, WAIT);
    // A marker: once it is in, both files have been read as far as they go.
    append(&log, &hits(120, 1, 200));
    let marked = wait_for_all_seqs(&collector, &BTreeSet::from([120]), WAIT);
    let exit = stop(tailhook);
    assert!(
        arrived && marked,
        "missing seqs: {:?}\n{}",
        want.difference(&seq_counts(&collector).keys().copied().collect())
            .collect::<Vec<_>>(),
        exit.stderr
    );
    let all = concat(&[&all, &hits(120, 1, 200)]);
    assert_each_exactly_once(&collector, &all, "copytruncate while stopped");
}

// ---- 4. out-of-order completion, then kill -9 -------------------------------------------

/// How tailhook is stopped while a request is held.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// `kill -9`: the checkpoint on disk is whatever the last periodic save
    /// wrote.
    Kill9,
    /// SIGTERM with `shutdown_timeout = "1s"`: the held batch is abandoned
    /// and the checkpoint is saved at exit, so what it records is certain.
    Sigterm,
}

/// With `concurrency = 2`, one request is held unanswered while the other
/// completes (out-of-order completion). tailhook is stopped: its checkpoint
/// never passed the held batch, and after a restart every event arrives
/// while the first request is still unanswered (so it cannot be the one
/// that delivered them). The collector recorded the held batch before it
/// held it, as a real one does: it arrives twice, once held and once
/// answered after the restart, and nothing else is sent again that was not
/// in flight.
fn held_request_then(how: Stop) {
    let setup = Setup::new();
    let collector = fluentd();
    let log = setup.log("app.log");
    let cfg = setup.config(&format!(
        "shutdown_timeout = \"1s\"\n{}{}",
        setup.source("app", "app.log", ""),
        destination(
            DEST,
            &collector.url("/app"),
            "concurrency = 2",
            "[destination.batch]\nmax_events = 10\ntimeout = \"100ms\"\n",
        )
    ));
    let first = hits(0, 10, 200);
    append(&log, &first);
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 10, "first batch");

    // The next batch is held; the one after it, sent while the first is
    // still in flight, completes: acknowledgements come out of order.
    collector.hang_next(1);
    let held = hits(10, 10, 200);
    append(&log, &held);
    assert!(
        collector.wait_for_held(1, WAIT),
        "no request held; statuses {:?}",
        collector.statuses()
    );
    assert_eq!(
        collector.stalled_events(),
        bytes_of(&held),
        "recorded, then held"
    );
    let completed = hits(20, 10, 200);
    append(&log, &completed);
    assert!(
        collector.wait_for_answered_events(20, WAIT),
        "the request after the held one was not answered; statuses {:?}\n{}",
        collector.statuses(),
        tailhook.stderr()
    );
    assert_eq!(
        collector.answered_events()[10..],
        bytes_of(&completed)[..],
        "the batch after the held one completed"
    );
    let all = concat(&[&first, &held, &completed]);
    let missing: Vec<u64> = (10..20).collect();

    let held_start = line_starts(&all)[missing[0] as usize];
    match how {
        Stop::Kill9 => {
            let killed = tailhook.kill9();
            assert_eq!(killed.signal, Some(9), "{}", killed.output());
        }
        Stop::Sigterm => {
            let exit = stop(tailhook);
            assert!(
                exit.stderr.contains("shutdown_timeout passed"),
                "{}",
                exit.output()
            );
            assert!(setup.checkpoint(DEST).exists(), "saved at shutdown");
        }
    }
    // The checkpoint on disk does not pass the first line of the held batch.
    // (After kill -9 there may be none yet; one that exists was written
    // after the first batch was acknowledged, so it has an entry for the file.)
    if let Some(cp) = setup.read_checkpoint(DEST) {
        let offset = checkpointed_offset(&cp, &log)
            .unwrap_or_else(|| panic!("the checkpoint has no entry for {}: {cp}", log.display()));
        assert!(
            offset <= held_start,
            "the checkpoint ({offset}) passed the held batch (starting at {held_start}): {cp}"
        );
    }

    let tailhook = Tailhook::start(&cfg);
    let want: BTreeSet<u64> = (0..30).collect();
    let answered_counts = |c: &Collector| {
        let mut counts = std::collections::BTreeMap::new();
        for e in c.answered_events() {
            *counts.entry(seq_of(&e)).or_insert(0usize) += 1;
        }
        counts
    };
    assert!(
        wait_for_all_seqs_answered(&collector, &want, WAIT),
        "after the stop and a restart, missing seqs: {:?}\n{}",
        want.difference(&answered_counts(&collector).keys().copied().collect())
            .collect::<Vec<_>>(),
        tailhook.stderr()
    );
    // Only now may the held request go on (its client is gone); its events
    // were recorded when it was held, and a release records nothing again.
    collector.release();
    stop(tailhook);

    let counts = seq_counts(&collector);
    assert!(counts.keys().all(|s| want.contains(s)), "{counts:?}");
    let written: BTreeSet<Vec<u8>> = bytes_of(&all).into_iter().collect();
    assert!(collector.events().iter().all(|e| written.contains(e)));
    // The held batch: recorded once when held, and answered only through
    // the restart; it is the only batch held.
    let answered = answered_counts(&collector);
    assert_eq!(collector.stalled_events(), bytes_of(&held));
    for s in &missing {
        assert_eq!(answered[s], 1, "seq {s} of the held batch: {answered:?}");
        assert_eq!(counts[s], 2, "seq {s} of the held batch: {counts:?}");
    }
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "held request, then {}: {} events accepted, {duplicates} sent again (10 held)",
        if how == Stop::Kill9 {
            "kill -9"
        } else {
            "SIGTERM"
        },
        collector.event_count(),
    );
}

#[test]
fn a_held_request_is_never_passed_by_the_checkpoint_across_kill_9() {
    held_request_then(Stop::Kill9);
}

#[test]
fn a_held_request_is_never_passed_by_the_checkpoint_saved_at_shutdown() {
    held_request_then(Stop::Sigterm);
}

// ---- 5. independent destinations --------------------------------------------------------

/// Destination `down` has no collector, `rejects` answers 400 to
/// everything, `ok` accepts: `ok` receives every event, `rejects` dead-
/// letters every event, and neither holds the other back.
#[test]
fn a_destination_down_or_rejecting_never_holds_back_another() {
    let setup = Setup::new();
    let dead = dead_port();
    let port = dead.port;
    let rejecting = Collector::start(Options::logstash());
    rejecting.respond_with_body(400, "no such index");
    let ok = fluentd();
    let log = setup.log("app.log");
    let lines = hits(0, 300, 200);
    append(&log, &lines);
    let tables = "[destination.batch]\nmax_events = 50\ntimeout = \"100ms\"\n";
    let cfg = setup
        .builder()
        .file_source("app", "app.log")
        .destination("down", &format!("http://127.0.0.1:{port}/app"))
        .extra("concurrency = 1")
        .extra(tables)
        .destination("rejects", &rejecting.url("/"))
        .extra("concurrency = 1")
        .extra(tables)
        .destination("ok", &ok.url("/app"))
        .extra("concurrency = 1")
        .extra(tables)
        .write();
    // With a destination that never answers, SIGTERM waits this long.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("shutdown_timeout = \"1s\"\n{text}")).unwrap();

    let tailhook = Tailhook::start(&cfg);
    wait_events(&ok, &tailhook, lines.len(), "destination ok");
    assert!(
        tailhook.wait_for_log("connection refused", WAIT),
        "{}",
        tailhook.stderr()
    );
    wait_rejected(&tailhook, lines.len());
    let more = hits(300, 20, 200);
    append(&log, &more);
    wait_events(&ok, &tailhook, lines.len() + more.len(), "destination ok");
    wait_rejected(&tailhook, lines.len() + more.len());
    stop(tailhook);

    let all = concat(&[&lines, &more]);
    assert_each_exactly_once(&ok, &all, "destination ok");
    assert_eq!(ok.events(), bytes_of(&all), "in file order");
    assert_eq!(rejecting.event_count(), 0);
    let mut want = Vec::new();
    for l in &all {
        want.extend_from_slice(l.as_bytes());
        want.push(b'\n');
    }
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(setup.dead_letter("rejects")).unwrap()),
        String::from_utf8_lossy(&want),
        "every event of `rejects` is in its dead-letter file, in order"
    );
    assert!(!setup.dead_letter("ok").exists());
    assert!(!setup.dead_letter("down").exists());
    // `down` acknowledged nothing: its checkpoint, if any, is at 0.
    if let Some(cp) = setup.read_checkpoint("down") {
        assert_eq!(checkpointed_offset(&cp, &log).unwrap_or(0), 0, "{cp}");
    }
}

/// Waits until the rejection log lines (`... events=N`) add up to `n`
/// events: each round waits for one more line.
fn wait_rejected(tailhook: &Tailhook, n: usize) {
    const NEEDLE: &str = "collector rejected a batch";
    let mut lines = 1;
    loop {
        assert!(
            tailhook.wait_for_log_count(NEEDLE, lines, WAIT),
            "fewer than {n} events rejected:\n{}",
            tailhook.stderr()
        );
        let stderr = tailhook.stderr();
        let logged: Vec<&str> = stderr.lines().filter(|l| l.contains(NEEDLE)).collect();
        let events: usize = logged
            .iter()
            .map(|l| {
                let rest = l.split("events=").nth(1).expect("events= in the log line");
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<usize>().unwrap()
            })
            .sum();
        if events >= n {
            return;
        }
        lines = logged.len() + 1;
    }
}

/// A destination added to the config later starts from `read_from`
/// (beginning): it receives everything; the first destination receives only
/// what is new.
#[test]
fn a_destination_added_later_starts_from_read_from() {
    let setup = Setup::new();
    let first = fluentd();
    let added = Collector::start(Options::logstash());
    let log = setup.log("app.log");
    let before = hits(0, 40, 200);
    append(&log, &before);
    let config = setup
        .builder()
        .file_source("app", "app.log")
        .destination("first", &first.url("/app"));
    let cfg = config.write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&first, &tailhook, before.len(), "first destination");
    stop(tailhook);

    let after = hits(40, 15, 200);
    append(&log, &after);
    let cfg = config
        .destination("added", &added.url("/"))
        .extra("method = \"PUT\"")
        .write();
    assert!(!setup.checkpoint("added").exists());
    let tailhook = Tailhook::start(&cfg);
    let all = concat(&[&before, &after]);
    wait_events(&added, &tailhook, all.len(), "added destination");
    wait_events(&first, &tailhook, all.len(), "first destination");
    stop(tailhook);

    assert_eq!(added.events(), bytes_of(&all), "everything, in file order");
    assert_each_exactly_once(&first, &all, "first destination");
    assert_eq!(first.events()[before.len()..], bytes_of(&after)[..]);
    assert!(setup.checkpoint("added").exists());
}

// ---- 6. memory during an outage ------------------------------------------------------

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

/// 50 MB of events wait while the collector is down: the process stays
/// under 64 MiB resident (batches of at most 1 MiB × concurrency 2, plus a
/// few read chunks), peak included; then the collector comes up and every
/// event arrives once.
#[test]
fn memory_stays_bounded_while_the_collector_is_down() {
    const LIMIT_KIB: u64 = 64 * 1024;
    let setup = Setup::new();
    let dead = dead_port();
    let port = dead.port;
    let log = setup.log("app.log");
    let lines = hits(0, 50_000, 1000);
    append(&log, &lines);
    let cfg = setup
        .builder()
        .file_source("app", "app.log")
        .destination(DEST, &format!("http://127.0.0.1:{port}/app"))
        .extra("concurrency = 2")
        .extra(
            "[destination.batch]\nmax_events = 100000\nmax_bytes = \"1MiB\"\ntimeout = \"100ms\"\n",
        )
        .write();

    // Every failed attempt is logged at debug: a signal to sample on.
    let tailhook = Tailhook::start_with_env(&cfg, &[("RUST_LOG", "info,tailhook::sink=debug")]);
    let pid = tailhook.pid();
    let mut samples = Vec::new();
    for failures in [1, 4, 8, 12] {
        assert!(
            tailhook.wait_for_log_count("delivery failed", failures, WAIT),
            "{}",
            tailhook.stderr()
        );
        samples.push(status_kib(pid, "VmRSS:"));
    }
    let peak = status_kib(pid, "VmHWM:");
    eprintln!("outage with 50 MB waiting: VmRSS {samples:?} KiB, peak {peak} KiB");
    for rss in &samples {
        assert!(*rss < LIMIT_KIB, "VmRSS {rss} KiB during the outage");
    }
    assert!(peak < LIMIT_KIB, "peak VmHWM {peak} KiB during the outage");

    let collector = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    wait_events(&collector, &tailhook, lines.len(), "after the outage");
    eprintln!("after catching up: peak {} KiB", status_kib(pid, "VmHWM:"));
    stop(tailhook);
    assert_each_exactly_once(&collector, &lines, "after the outage");
}

// ---- 7. checkpoints of an unknown version, or empty -------------------------------------

/// A checkpoint from an unknown version, or an empty one, is reported in
/// words and ignored: everything is sent again (never a crash), and a
/// checkpoint this version understands is written.
#[test]
fn an_unknown_version_or_empty_checkpoint_is_reported_and_everything_resent() {
    for (what, words) in [
        ("version 99", "unknown version 99"),
        ("empty", "it is empty"),
    ] {
        let setup = Setup::new();
        let collector = fluentd();
        let log = setup.log("app.log");
        let lines = hits(0, 15, 200);
        append(&log, &lines);
        if what == "empty" {
            let path = setup.checkpoint(DEST);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"").unwrap();
        } else {
            // Otherwise a valid entry saying the whole file was delivered.
            let head = std::fs::read(&log).unwrap();
            write_checkpoint(&setup, 99, &log, &head, head.len() as u64);
        }
        let cfg = setup
            .builder()
            .file_source("app", "app.log")
            .destination(DEST, &collector.url("/app"))
            .write();

        let tailhook = Tailhook::start(&cfg);
        assert!(
            tailhook.wait_for_log(words, WAIT),
            "{what}: not reported as {words:?}:\n{}",
            tailhook.stderr()
        );
        wait_events(&collector, &tailhook, lines.len(), what);
        stop(tailhook);
        assert_eq!(collector.events(), bytes_of(&lines), "{what}");
        let saved = setup
            .read_checkpoint(DEST)
            .expect("a checkpoint is written");
        assert_eq!(saved["version"], 1, "{what}: {saved}");
        assert_eq!(
            checkpointed_offset(&saved, &log),
            Some(std::fs::metadata(&log).unwrap().len()),
            "{what}: {saved}"
        );
    }
}

// ---- 8. Retry-After on a Logstash 429 ----------------------------------------------

/// The backoff alone (at most 100 ms here) would retry well before the
/// second that `Retry-After: 1` asks for, so the measured wait tells them
/// apart.
#[test]
fn retry_after_on_a_logstash_429_is_honoured_and_delivery_completes() {
    let setup = Setup::new();
    let collector = Collector::start(Options::logstash());
    collector.fail_next_with_retry_after(429, 1);
    let lines = hits(0, 12, 200);
    append(&setup.log("app.log"), &lines);
    let cfg = setup
        .builder()
        .file_source("app", "app.log")
        .destination(DEST, &collector.url("/"))
        .extra("[destination.retry]\ninitial = \"50ms\"\nmax = \"100ms\"\n")
        .write();

    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, lines.len(), "after a 429");
    let exit = stop(tailhook);
    assert_eq!(collector.statuses(), vec![429, 200]);
    assert_eq!(collector.events(), bytes_of(&lines));
    assert!(exit.stderr.contains("429"), "{}", exit.output());
    let waited = wait_after_answer(&collector, 0);
    assert!(
        waited >= Duration::from_secs(1),
        "tailhook retried {waited:?} after a 429 with Retry-After: 1"
    );
}
