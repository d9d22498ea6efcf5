//! `tailhook dead-letter resend -c FILE [--destination NAME]`: events a
//! collector rejected (4xx) wait in `<data_dir>/dead-letter/<dest>.ndjson`,
//! one a line, until `resend` delivers them again. What is delivered leaves
//! the file; what is rejected again or cannot be sent stays, byte for byte.
//!
//! Checked as a user sees it: the events the collector accepted (bytes,
//! order, batches), the dead-letter file on disk, the line `resend` prints
//! and its exit code (0 when nothing is left, 1 otherwise).

mod support;

use support::check::{ndjson, show};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::check::dead_port;
use support::collector::{fluentd, Collector, Options};
use support::process::{run_cmd, Exit, Tailhook};
use support::setup::{append, bytes_of, hits, seq_of, Setup};

/// Upper bound of every wait; a healthy run takes a small part of it.
const WAIT: Duration = Duration::from_secs(30);

/// The destination of the single-destination tests.
const DEST: &str = "fluentd";

// ---- helpers ------------------------------------------------------------------

/// `tailhook dead-letter resend -c <cfg> [extra...]`.
fn resend(cfg: &Path, extra: &[&str]) -> Exit {
    let cfg = cfg.display().to_string();
    let mut args = vec!["dead-letter", "resend", "-c", cfg.as_str()];
    args.extend_from_slice(extra);
    let exit = run_cmd(&args, &[]);
    assert!(
        !exit.stderr.contains("panicked"),
        "resend panicked:\n{}",
        exit.output()
    );
    exit
}

/// Writes a destination's dead-letter file as the daemon would have.
fn write_dead_letters(setup: &Setup, dest: &str, lines: &[String]) -> PathBuf {
    let path = setup.dead_letter(dest);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, ndjson(lines)).unwrap();
    path
}

/// The dead-letter file's bytes; empty when it does not exist.
fn dead_letter_bytes(setup: &Setup, dest: &str) -> Vec<u8> {
    match std::fs::read(setup.dead_letter(dest)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read the dead-letter file: {e}"),
    }
}

/// Every file in `data/dead-letter/` but the live ones: `resend` leaves no
/// half-done work behind when it finishes.
fn leftovers(setup: &Setup) -> Vec<String> {
    let dir = setup.data.join("dead-letter");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".ndjson"))
        .collect()
}

fn assert_clean_exit(exit: &Exit) {
    assert!(
        exit.success() && !exit.stderr.contains("panicked"),
        "tailhook should exit 0 on SIGTERM, got code {:?} signal {:?}\n{}",
        exit.code,
        exit.signal,
        exit.output()
    );
}

// ---- 1. rejected while running, delivered by resend ----------------------------

#[test]
fn rejected_events_are_delivered_by_resend_and_leave_the_file() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.fail_next(&[400]);
    let log = setup.log("a.ndjson");
    // Written before start: one chunk, one batch, the one that is rejected.
    let rejected = hits(0, 12, 180);
    append(&log, &rejected);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .write();

    let tailhook = Tailhook::start(&cfg);
    assert!(
        tailhook.wait_for_log("collector rejected a batch", WAIT),
        "{}",
        tailhook.stderr()
    );
    let later = hits(12, 5, 180);
    append(&log, &later);
    assert!(
        collector.wait_for_events(later.len(), WAIT),
        "delivery did not move on past the rejection; statuses {:?}",
        collector.statuses()
    );
    assert_clean_exit(&tailhook.terminate());
    assert_eq!(collector.events(), bytes_of(&later));
    assert_eq!(
        show(&dead_letter_bytes(&setup, DEST)),
        show(&ndjson(&rejected)),
        "the rejected events, byte for byte, one a line"
    );

    // The collector accepts again: resend delivers exactly those events.
    let exit = resend(&cfg, &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_eq!(
        exit.stdout.trim(),
        format!("{DEST}: resent 12 event(s) in 1 batch(es); the dead-letter file is now empty"),
        "{}",
        exit.output()
    );
    let batches = collector.batches();
    let resent = &batches[batches.len() - 1];
    assert_eq!(resent.path, "/wallarm.events");
    assert_eq!(
        resent.events,
        bytes_of(&rejected),
        "exact bytes, file order"
    );
    let all: Vec<String> = later.iter().chain(&rejected).cloned().collect();
    assert_eq!(collector.events(), bytes_of(&all), "nothing else was sent");
    assert!(
        dead_letter_bytes(&setup, DEST).is_empty(),
        "the dead-letter file should be gone or empty: {}",
        show(&dead_letter_bytes(&setup, DEST))
    );
    assert_eq!(leftovers(&setup), Vec::<String>::new());

    // Nothing is left: a second resend says so.
    let exit = resend(&cfg, &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        exit.stdout.contains(&format!("{DEST}: no dead letters")),
        "{}",
        exit.output()
    );
    assert_eq!(collector.event_count(), all.len());
}

// ---- 2. rejected again -----------------------------------------------------------

#[test]
fn events_rejected_again_stay_in_the_file_byte_for_byte() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.respond_with_body(400, "field pad is not allowed");
    let lines = hits(0, 7, 200);
    let path = write_dead_letters(&setup, DEST, &lines);
    let before = std::fs::read(&path).unwrap();
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .write();

    let exit = resend(&cfg, &[]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    let out = exit.stdout.trim();
    for words in [
        "resent 0 event(s)",
        "7 rejected again",
        "HTTP 400",
        "field pad is not allowed",
        &format!("7 kept in {}", path.display()),
    ] {
        assert!(out.contains(words), "missing {words:?} in: {out}");
    }
    assert!(collector.wait_for_requests(1, WAIT));
    assert_eq!(
        collector.statuses(),
        vec![400],
        "a rejection is not retried"
    );
    assert_eq!(collector.event_count(), 0);
    assert_eq!(show(&std::fs::read(&path).unwrap()), show(&before));
    assert_eq!(leftovers(&setup), Vec::<String>::new());
}

#[test]
fn a_partly_rejected_resend_keeps_only_the_rejected_batch() {
    let setup = Setup::new();
    let collector = fluentd();
    // The second of three batches is rejected; the others are delivered.
    collector.fail_next(&[200, 400]);
    let lines = hits(0, 25, 150);
    let path = write_dead_letters(&setup, DEST, &lines);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra("[destination.batch]\nmax_events = 10\n")
        .write();

    let exit = resend(&cfg, &[]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert_eq!(
        exit.stdout.trim(),
        format!(
            "{DEST}: resent 15 event(s) in 2 batch(es); 10 rejected again \
             (HTTP 400: injected failure 400); 10 kept in {}",
            path.display()
        )
    );
    assert_eq!(collector.statuses(), vec![200, 400, 200]);
    let delivered: Vec<String> = lines[..10].iter().chain(&lines[20..]).cloned().collect();
    assert_eq!(collector.events(), bytes_of(&delivered));
    assert_eq!(
        show(&std::fs::read(&path).unwrap()),
        show(&ndjson(&lines[10..20])),
        "exactly the rejected batch is kept"
    );

    // Once the collector takes them, the rest goes too.
    let exit = resend(&cfg, &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(exit.stdout.contains("resent 10 event(s) in 1 batch(es)"));
    assert_eq!(collector.events()[15..], bytes_of(&lines[10..20])[..]);
    assert!(dead_letter_bytes(&setup, DEST).is_empty());
}

// ---- 3. collector unreachable ------------------------------------------------------

#[test]
fn an_unreachable_collector_loses_nothing_from_the_file() {
    let setup = Setup::new();
    let dead = dead_port();
    let port = dead.port;
    let lines = hits(0, 30, 150);
    let path = write_dead_letters(&setup, DEST, &lines);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &format!("http://127.0.0.1:{port}/wallarm.events"))
        .extra("[destination.batch]\nmax_events = 10\n")
        .write();

    let exit = resend(&cfg, &[]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    let out = exit.stdout.trim();
    for words in [
        "resent 0 event(s) in 0 batch(es)",
        "30 not sent",
        "connection refused",
        &format!("30 kept in {}", path.display()),
    ] {
        assert!(out.contains(words), "missing {words:?} in: {out}");
    }
    assert_eq!(
        show(&std::fs::read(&path).unwrap()),
        show(&ndjson(&lines)),
        "every line is still there, in order"
    );
    assert_eq!(leftovers(&setup), Vec::<String>::new());

    // When the collector is back, all of them go.
    let collector = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    let exit = resend(&cfg, &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_eq!(collector.events(), bytes_of(&lines));
    assert!(dead_letter_bytes(&setup, DEST).is_empty());
}

// ---- 4. --destination ------------------------------------------------------------

#[test]
fn destination_option_resends_only_that_destination() {
    let setup = Setup::new();
    let one = fluentd();
    let two = Collector::start(Options::logstash());
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination("one", &one.url("/wallarm.events"))
        .destination("two", &two.url("/"))
        .write();

    // Nothing dead-lettered yet.
    let exit = resend(&cfg, &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let no_dl = |name: &str| {
        format!(
            "{name}: no dead letters ({})",
            setup.dead_letter(name).display()
        )
    };
    assert_eq!(
        exit.stdout.lines().collect::<Vec<_>>(),
        [no_dl("one"), no_dl("two")],
        "{}",
        exit.output()
    );

    let one_lines = hits(0, 4, 150);
    let two_lines = hits(100, 6, 150);
    let one_path = write_dead_letters(&setup, "one", &one_lines);
    write_dead_letters(&setup, "two", &two_lines);

    let exit = resend(&cfg, &["--destination", "two"]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_eq!(
        exit.stdout.trim(),
        "two: resent 6 event(s) in 1 batch(es); the dead-letter file is now empty"
    );
    assert_eq!(two.events(), bytes_of(&two_lines));
    assert_eq!(
        one.request_count(),
        0,
        "the other destination is left alone"
    );
    assert_eq!(
        show(&std::fs::read(&one_path).unwrap()),
        show(&ndjson(&one_lines))
    );
    assert!(dead_letter_bytes(&setup, "two").is_empty());

    // An unknown name: exit 1, listing the names; nothing is touched.
    let exit = resend(&cfg, &["--destination", "nope"]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stderr.contains("nope") && exit.stderr.contains("one, two"),
        "{}",
        exit.output()
    );
    assert_eq!(one.request_count(), 0);
    assert_eq!(
        show(&std::fs::read(&one_path).unwrap()),
        show(&ndjson(&one_lines))
    );

    let exit = resend(&cfg, &["--destination", "two"]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_eq!(exit.stdout.trim(), no_dl("two"));

    let exit = resend(&cfg, &["--destination", "one"]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_eq!(one.events(), bytes_of(&one_lines));
    assert_eq!(two.event_count(), two_lines.len());
}

// ---- 5. resend while the daemon dead-letters ----------------------------------------

/// `resend` runs again and again while the daemon keeps writing new
/// rejections to the same dead-letter file: every event ends in the
/// collector or in the file, none in both, none nowhere.
#[test]
fn resend_while_running_and_dead_lettering_loses_nothing() {
    let setup = Setup::new();
    let collector = fluentd();
    let log = setup.log("a.ndjson");
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .extra("[destination.batch]\nmax_events = 5\ntimeout = \"20ms\"\n")
        .write();
    let tailhook = Tailhook::start(&cfg);

    const ROUNDS: usize = 200;
    const PER_ROUND: usize = 5;
    let writing = AtomicBool::new(true);
    /// Ends the resend loop when the writer is done, even by a panic.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let resends: Vec<Exit> = std::thread::scope(|s| {
        s.spawn(|| {
            let _done = Done(&writing);
            for round in 0..ROUNDS {
                // Every other round, the next request (the daemon's or a
                // resend's) is rejected.
                if round % 2 == 0 {
                    collector.fail_next(&[400]);
                }
                let before = collector.request_count();
                append(&log, &hits(round * PER_ROUND, PER_ROUND, 150));
                assert!(
                    collector.wait_for_requests(before + 1, WAIT),
                    "no request after round {round}"
                );
            }
        });
        let mut exits = Vec::new();
        while writing.load(Ordering::Acquire) || exits.len() < 3 {
            exits.push(resend(&cfg, &[]));
        }
        exits
    });
    let written = ROUNDS * PER_ROUND;

    // The last event, accepted whatever is left of the script: once it is
    // in, every batch before it was delivered or dead-lettered
    // (concurrency 1, one file read in order).
    collector.respond_with_body(200, "");
    let marker = hits(written, 1, 150);
    append(&log, &marker);
    let marker_seq = written as u64;
    loop {
        let events = collector.events();
        if events.iter().any(|e| seq_of(e) == marker_seq) {
            break;
        }
        assert!(
            collector.wait_for_events(events.len() + 1, WAIT),
            "the marker never arrived"
        );
    }
    assert_clean_exit(&tailhook.terminate());

    for exit in &resends {
        assert!(
            matches!(exit.code, Some(0) | Some(1)) && exit.stdout.starts_with(DEST),
            "{}",
            exit.output()
        );
    }
    let resent: usize = resends
        .iter()
        .filter_map(|e| {
            let rest = e.stdout.split("resent ").nth(1)?;
            rest.split(' ').next()?.parse::<usize>().ok()
        })
        .sum();
    assert_eq!(leftovers(&setup), Vec::<String>::new());

    // Every seq in the collector or in the file, exactly once overall.
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for e in collector.events() {
        *counts.entry(seq_of(&e)).or_default() += 1;
    }
    let in_file = dead_letter_bytes(&setup, DEST);
    let file_lines: Vec<&[u8]> = in_file
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    for l in &file_lines {
        *counts.entry(seq_of(l)).or_default() += 1;
    }
    let want: BTreeSet<u64> = (0..=marker_seq).collect();
    let lost: Vec<u64> = want
        .iter()
        .filter(|s| !counts.contains_key(s))
        .copied()
        .collect();
    let twice: Vec<(u64, usize)> = counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&s, &n)| (s, n))
        .collect();
    eprintln!(
        "{} resend runs delivered {resent} dead letters; {} events in the collector, {} in the file",
        resends.len(),
        collector.event_count(),
        file_lines.len()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(
        twice.is_empty(),
        "in the collector or file twice: {twice:?}"
    );
    assert!(counts.keys().all(|s| want.contains(s)), "{counts:?}");
    assert!(
        collector.statuses().contains(&400),
        "no batch was rejected: {:?}",
        collector.statuses()
    );

    // And a last resend, with the collector accepting, empties the file.
    let exit = resend(&cfg, &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let mut seqs: Vec<u64> = collector.events().iter().map(|e| seq_of(e)).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, want.into_iter().collect::<Vec<_>>());
    assert!(dead_letter_bytes(&setup, DEST).is_empty());
}

// ---- 6. batch bounds -----------------------------------------------------------------

#[test]
fn resend_uses_the_destination_batch_bounds() {
    let setup = Setup::new();
    let collector = Collector::start(Options::logstash());
    let lines = hits(0, 35, 150);
    write_dead_letters(&setup, DEST, &lines);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/"))
        .extra("method = \"PUT\"")
        .extra("[destination.batch]\nmax_events = 10\n")
        .write();

    let exit = resend(&cfg, &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_eq!(
        exit.stdout.trim(),
        format!("{DEST}: resent 35 event(s) in 4 batch(es); the dead-letter file is now empty")
    );
    let batches = collector.batches();
    assert_eq!(
        batches.iter().map(|b| b.events.len()).collect::<Vec<_>>(),
        [10, 10, 10, 5]
    );
    for b in &batches {
        assert_eq!(b.method, "PUT", "the destination's method");
        // A JSON array of the raw events.
        let mut body = b"[".to_vec();
        body.extend(b.events.join(&b','));
        body.push(b']');
        assert_eq!(show(&b.body), show(&body));
    }
    assert_eq!(collector.events(), bytes_of(&lines));
    assert!(dead_letter_bytes(&setup, DEST).is_empty());
}

// ---- 7. a file many batches long ----------------------------------------------------

/// How many requests greedy batching needs for `lines` as one JSON array
/// per request of at most `max_bytes` (`[` + events joined by `,` + `]`).
fn json_batches(lines: &[String], max_bytes: usize) -> usize {
    let mut batches = 0;
    let mut body = 0;
    for l in lines {
        if body > 0 && body + 1 + l.len() > max_bytes {
            batches += 1;
            body = 0;
        }
        body = if body == 0 {
            2 + l.len()
        } else {
            body + 1 + l.len()
        };
    }
    batches + usize::from(body > 0)
}

/// A dead-letter file of 3,000 events, 56 batches long: every event is
/// delivered in file order, in as few requests as the batch bounds allow,
/// none larger than `batch.max_bytes`.
#[test]
fn resend_streams_a_long_file_in_batches_in_order() {
    const MAX_BYTES: usize = 16 * 1024;
    let setup = Setup::new();
    let collector = fluentd();
    let lines = hits(0, 3000, 300);
    write_dead_letters(&setup, DEST, &lines);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra(&format!("[destination.batch]\nmax_bytes = {MAX_BYTES}\n"))
        .write();

    let exit = resend(&cfg, &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let batches = collector.batches();
    let expected = json_batches(&lines, MAX_BYTES);
    assert_eq!(expected, 56, "the test's own arithmetic");
    assert_eq!(
        batches.len(),
        expected,
        "as few requests as the bounds allow"
    );
    assert_eq!(
        exit.stdout.trim(),
        format!("{DEST}: resent 3000 event(s) in {expected} batch(es); the dead-letter file is now empty")
    );
    for b in &batches {
        assert!(
            b.body.len() <= MAX_BYTES,
            "a body of {} bytes",
            b.body.len()
        );
    }
    assert_eq!(
        collector.events(),
        bytes_of(&lines),
        "every event, in order"
    );
    assert!(dead_letter_bytes(&setup, DEST).is_empty());
    assert_eq!(leftovers(&setup), Vec::<String>::new());
}

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

/// A 120 MB dead-letter file: while the collector holds the first request,
/// `resend` has read about one batch (1 MiB), not the file — its peak
/// resident memory is far below the file's size. Then the collector goes
/// away: everything stays in the file, byte for byte, in order.
#[test]
fn resend_memory_does_not_grow_with_the_file() {
    const LIMIT_KIB: u64 = 48 * 1024;
    let setup = Setup::new();
    // Held after the collector stops: `resend` keeps trying this port.
    let held = dead_port();
    let port = held.port;
    let collector = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    let lines = hits(0, 120_000, 1000);
    let path = write_dead_letters(&setup, DEST, &lines);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(
        size > 2 * LIMIT_KIB * 1024,
        "the file is much larger than the limit"
    );
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination(DEST, &format!("http://127.0.0.1:{port}/wallarm.events"))
        .write();

    collector.hang_next(1);
    let mut cmd = support::process::bin();
    cmd.args(["dead-letter", "resend", "-c"]).arg(&cfg);
    let running = Tailhook::spawn(cmd);
    assert!(
        collector.wait_for_held(1, WAIT),
        "no request\n{}",
        running.stderr()
    );
    let peak = status_kib(running.pid(), "VmHWM:");
    eprintln!("resend of a {size}-byte file, first request held: peak {peak} KiB");
    assert!(
        peak < LIMIT_KIB,
        "resend holds {peak} KiB with one request in flight: it read the file whole"
    );

    collector.stop();
    let exit = running.wait_exit(WAIT);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stdout
            .contains("resent 0 event(s) in 0 batch(es); 120000 not sent"),
        "{}",
        exit.output()
    );
    let kept = std::fs::read(&path).unwrap();
    assert!(kept == ndjson(&lines), "the file is not what it was");
    assert_eq!(leftovers(&setup), Vec::<String>::new());
}
