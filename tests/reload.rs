//! SIGHUP re-reads the config, through the real binary: a destination added
//! starts (from the beginning of the files), one removed stops and keeps its
//! checkpoint, changed settings apply, events pending at the reload are not
//! lost, and an invalid config is reported while the running one goes on.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::check::{assert_clean_exit, assert_each_exactly_once, dead_port, ndjson, show};
use support::collector::{fluentd, Collector, Options};
use support::inputs::{input, listen_addr, spool_segments};
use support::metrics::{metrics_addr, wait_for_page};
use support::process::{bin, Tailhook};
use support::setup::{append, destination, hits, wallarm_hits, Setup};

const WAIT: Duration = Duration::from_secs(30);

/// Sends SIGHUP and waits until the new config runs (its `tailhook running`
/// line is the `runs`-th).
fn reload(tailhook: &Tailhook, runs: usize) {
    tailhook.signal(Signal::SIGHUP);
    assert!(
        tailhook.wait_for_log_count("tailhook running", runs, WAIT),
        "the reloaded config did not start:\n{}",
        tailhook.stderr()
    );
}

fn started(tailhook: &Tailhook) {
    assert!(
        tailhook.wait_for_log("tailhook running", WAIT),
        "{}",
        tailhook.stderr()
    );
}

#[test]
fn a_destination_added_by_sighup_gets_everything_and_the_others_lose_nothing() {
    let setup = Setup::new();
    let (a, b) = (fluentd(), fluentd());
    let log = setup.log("app.ndjson");
    let first = hits(0, 200, 200);
    append(&log, &first);
    let cfg = setup
        .builder()
        .extra("shutdown_timeout = \"2s\"")
        .file_source("w", "*.ndjson")
        .destination("a", &a.url("/t"))
        .write();
    let tailhook = Tailhook::start(&cfg);
    started(&tailhook);
    assert!(a.wait_for_events(first.len(), WAIT));

    setup
        .builder()
        .extra("shutdown_timeout = \"2s\"")
        .file_source("w", "*.ndjson")
        .destination("a", &a.url("/t"))
        .destination("b", &b.url("/t"))
        .write();
    reload(&tailhook, 2);
    let second = hits(200, 200, 200);
    append(&log, &second);
    let all = [first, second].concat();
    assert!(a.wait_for_events(all.len(), WAIT), "a: {}", a.event_count());
    assert!(b.wait_for_events(all.len(), WAIT), "b: {}", b.event_count());
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&a, &all, "the destination that ran through the reload");
    assert_each_exactly_once(&b, &all, "the destination the reload added");
}

#[test]
fn a_destination_removed_by_sighup_stops_and_keeps_its_checkpoint() {
    let setup = Setup::new();
    let (a, b) = (fluentd(), fluentd());
    let log = setup.log("app.ndjson");
    let first = hits(0, 100, 200);
    append(&log, &first);
    let a_only = setup
        .builder()
        .extra("shutdown_timeout = \"2s\"")
        .file_source("w", "*.ndjson")
        .destination("a", &a.url("/t"));
    let both = a_only.clone().destination("b", &b.url("/t"));
    let cfg = both.write();
    let tailhook = Tailhook::start(&cfg);
    started(&tailhook);
    assert!(a.wait_for_events(first.len(), WAIT));
    assert!(b.wait_for_events(first.len(), WAIT));

    a_only.write();
    reload(&tailhook, 2);
    let second = hits(100, 100, 200);
    append(&log, &second);
    let all = [first.clone(), second].concat();
    assert!(a.wait_for_events(all.len(), WAIT));
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&a, &all, "the destination kept");
    assert_each_exactly_once(&b, &first, "the destination removed");
    assert!(
        setup.read_checkpoint("b").is_some(),
        "the removed destination's checkpoint is kept"
    );

    // Added back, it resumes from its checkpoint: only what it missed.
    let tailhook = Tailhook::start(&both.write());
    assert!(b.wait_for_events(all.len(), WAIT), "b: {}", b.event_count());
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&b, &all, "the destination added back");
}

#[test]
fn changed_settings_apply_after_sighup() {
    let setup = Setup::new();
    let a = fluentd();
    let log = setup.log("app.ndjson");
    append(&log, &hits(0, 10, 200));
    let cfg = setup
        .builder()
        .extra("shutdown_timeout = \"2s\"")
        .file_source("w", "*.ndjson")
        .destination("a", &a.url("/before"))
        .write();
    let tailhook = Tailhook::start(&cfg);
    started(&tailhook);
    assert!(a.wait_for_events(10, WAIT));

    setup
        .builder()
        .extra("shutdown_timeout = \"2s\"")
        .file_source("w", "*.ndjson")
        .destination("a", &a.url("/after"))
        .extra("headers = { X-Reloaded = \"yes\" }")
        .extra("[destination.batch]\nmax_events = 1\ntimeout = \"100ms\"\n")
        .write();
    reload(&tailhook, 2);
    append(&log, &hits(10, 5, 200));
    assert!(a.wait_for_events(15, WAIT));
    assert_clean_exit(&tailhook.terminate());
    let batches = a.batches();
    let after: Vec<_> = batches.iter().filter(|b| b.path == "/after").collect();
    assert_eq!(after.len(), 5, "one event a batch after the reload");
    assert!(after.iter().all(|b| b.header("x-reloaded") == Some("yes")));
    assert!(batches
        .iter()
        .filter(|b| b.path == "/before")
        .all(|b| b.header("x-reloaded").is_none()));
    assert_eq!(
        batches.iter().map(|b| b.events.len()).sum::<usize>(),
        15,
        "nothing sent twice"
    );
}

#[test]
fn an_invalid_config_on_sighup_is_reported_and_the_running_one_goes_on() {
    let setup = Setup::new();
    let a = fluentd();
    let log = setup.log("app.ndjson");
    append(&log, &hits(0, 10, 200));
    let cfg = setup
        .builder()
        .extra("shutdown_timeout = \"2s\"")
        .file_source("w", "*.ndjson")
        .destination("a", &a.url("/t"))
        .write();
    let tailhook = Tailhook::start(&cfg);
    started(&tailhook);
    assert!(a.wait_for_events(10, WAIT));

    let broken = std::fs::read_to_string(&cfg).unwrap() + "retries = 3\n";
    std::fs::write(&cfg, broken).unwrap();
    tailhook.signal(Signal::SIGHUP);
    assert!(
        tailhook.wait_for_log("config reload failed, the running config stays", WAIT),
        "{}",
        tailhook.stderr()
    );
    assert!(
        tailhook.wait_for_log("unknown field `retries`", WAIT),
        "the error names the key:\n{}",
        tailhook.stderr()
    );
    append(&log, &hits(10, 10, 200));
    assert!(a.wait_for_events(20, WAIT));
    assert_eq!(
        tailhook.stderr().matches("tailhook running").count(),
        1,
        "the running config was not restarted"
    );
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&a, &hits(0, 20, 200), "through a failed reload");
}

#[test]
fn events_pending_at_a_reload_while_the_collector_is_down_are_delivered_later() {
    let setup = Setup::new();
    let dead = dead_port();
    let port = dead.port;
    let url = format!("http://127.0.0.1:{port}/t");
    let log = setup.log("app.ndjson");
    let lines = hits(0, 300, 200);
    append(&log, &lines);
    let cfg = setup
        .builder()
        .extra("shutdown_timeout = \"2s\"")
        .file_source("w", "*.ndjson")
        .destination("a", &url)
        .write();
    let tailhook = Tailhook::start(&cfg);
    assert!(tailhook.wait_for_log("delivery failed", WAIT));

    // The reload gives up on the batches in flight after shutdown_timeout;
    // they were never acknowledged, so the new config reads them again.
    setup
        .builder()
        .extra("shutdown_timeout = \"2s\"")
        .file_source("w", "*.ndjson")
        .destination("a", &url)
        .extra("concurrency = 1")
        .extra("[destination.batch]\nmax_events = 50\ntimeout = \"100ms\"\n")
        .write();
    reload(&tailhook, 2);
    let a = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    assert!(
        a.wait_for_events(lines.len(), WAIT),
        "got {}\n{}",
        a.event_count(),
        tailhook.stderr()
    );
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&a, &lines, "pending at the reload");
}

// ---- what a reload keeps -------------------------------------------------------

/// A tcp source, optionally `extra` settings in it, for the tests below.
fn tcp(extra: &str) -> String {
    input("net", "tcp", extra)
}

/// Writes the config as [`Setup::config`] does, but atomically (a temp file
/// renamed over it), so that a SIGHUP never reads half a file.
fn write_config_atomically(setup: &Setup, blocks: &str) -> PathBuf {
    let path = setup.dir.path().join("config.toml");
    let next = setup.dir.path().join("config.toml.next");
    let text = format!(
        "data_dir = {:?}\n\n{blocks}\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        setup.data.display().to_string()
    );
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, &path).unwrap();
    path
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// The log line the `nth` reload writes about what it kept and restarted
/// (just before its `tailhook running`).
fn reload_summary(tailhook: &Tailhook, nth: usize) -> String {
    assert!(
        tailhook.wait_for_log_count("tailhook running", nth + 1, WAIT),
        "{}",
        tailhook.stderr()
    );
    tailhook
        .stderr()
        .lines()
        .filter(|l| l.contains("reload: ") && l.contains(" destination `"))
        .nth(nth - 1)
        .unwrap_or_else(|| panic!("no reload summary #{nth}:\n{}", tailhook.stderr()))
        .to_string()
}

/// A reload that changes one destination leaves the tcp input alone (the
/// same connection goes on sending, and what it sends arrives) and does not
/// stop the other destination's pipeline.
#[test]
fn a_reload_that_changes_one_destination_keeps_the_connections_and_the_other_destination() {
    let setup = Setup::new();
    let (a, b) = (fluentd(), fluentd());
    let blocks = |b_extra: &str| {
        format!(
            "shutdown_timeout = \"5s\"\n\n{}{}{}",
            tcp(""),
            destination("a", &a.url("/t"), "", ""),
            destination("b", &b.url("/t"), b_extra, "")
        )
    };
    let cfg = write_config_atomically(&setup, &blocks(""));
    let tailhook = Tailhook::start(&cfg);
    started(&tailhook);
    let addr = listen_addr(&tailhook, "net");
    let mut conn = connect(addr);
    let first = wallarm_hits(0, 100);
    conn.write_all(&ndjson(&first)).unwrap();
    assert!(a.wait_for_events(100, WAIT) && b.wait_for_events(100, WAIT));

    write_config_atomically(&setup, &blocks("headers = { X-Reloaded = \"yes\" }"));
    reload(&tailhook, 2);
    let summary = reload_summary(&tailhook, 1);
    assert!(
        summary.contains("kept source `net`, kept destination `a`, restarted destination `b`"),
        "{summary}"
    );
    // The same connection, after the reload.
    let second = wallarm_hits(100, 100);
    conn.write_all(&ndjson(&second)).unwrap();
    assert!(a.wait_for_events(200, WAIT), "a: {}", a.event_count());
    assert!(b.wait_for_events(200, WAIT), "b: {}", b.event_count());
    let log = tailhook.stderr();
    assert_eq!(
        log.matches("tcp input listening").count(),
        1,
        "the listener was not bound again:\n{log}"
    );
    assert!(
        log.contains("checkpoint saved destination=b"),
        "b stopped and saved its checkpoint:\n{log}"
    );
    assert!(
        !log.contains("checkpoint saved destination=a"),
        "a's pipeline was not stopped:\n{log}"
    );
    drop(conn);
    assert_clean_exit(&tailhook.terminate());
    let all = [first, second].concat();
    assert_each_exactly_once(&a, &all, "the destination kept");
    assert_each_exactly_once(&b, &all, "the destination restarted");
    assert!(b
        .batches()
        .iter()
        .any(|batch| batch.header("x-reloaded") == Some("yes")));
}

/// A tcp input whose settings change stops listening, and a connection
/// that is in the middle of a line finishes it: the sender completes the
/// line after the SIGHUP, and it arrives whole; then the connection is
/// closed, and the new listener takes new connections.
#[test]
fn a_changed_tcp_input_lets_the_line_in_progress_finish() {
    let setup = Setup::new();
    let a = fluentd();
    let blocks = |extra: &str| format!("{}{}", tcp(extra), destination("a", &a.url("/t"), "", ""));
    let cfg = write_config_atomically(&setup, &blocks(""));
    let tailhook = Tailhook::start(&cfg);
    started(&tailhook);
    let mut conn = connect(listen_addr(&tailhook, "net"));
    let lines = wallarm_hits(0, 20);
    let head = ndjson(&lines[..10]);
    let torn = lines[10].as_bytes();
    let (start, rest) = torn.split_at(torn.len() / 2);
    conn.write_all(&head).unwrap();
    conn.write_all(start).unwrap();
    assert!(a.wait_for_events(10, WAIT));

    write_config_atomically(&setup, &blocks("max_line_bytes = \"2MiB\""));
    tailhook.signal(Signal::SIGHUP);
    assert!(
        tailhook.wait_for_log("open connections finish their line, then close", WAIT),
        "{}",
        tailhook.stderr()
    );
    conn.write_all(rest).unwrap();
    conn.write_all(b"\n").unwrap();
    // Then tailhook closes it: end of file.
    let mut buf = [0u8; 16];
    assert_eq!(conn.read(&mut buf).unwrap(), 0, "the connection is closed");
    assert!(tailhook.wait_for_log_count("tailhook running", 2, WAIT));
    let summary = reload_summary(&tailhook, 1);
    assert!(
        summary.contains("restarted source `net`, restarted destination `a`"),
        "{summary}"
    );
    // The new listener (on a new port: the config says port 0).
    let log = tailhook.stderr();
    let new_addr: std::net::SocketAddr = log
        .lines()
        .filter(|l| l.contains("tcp input listening source=net"))
        .nth(1)
        .and_then(|l| l.split("address=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .unwrap_or_else(|| panic!("no second listener:\n{log}"))
        .parse()
        .unwrap();
    let mut again = connect(new_addr);
    again.write_all(&ndjson(&lines[11..])).unwrap();
    drop(again);
    assert!(a.wait_for_events(20, WAIT), "a: {}", a.event_count());
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&a, &lines, "through a reload that changed the tcp input");
}

/// A stdin source whose settings change is not cancelled: the read in
/// progress at the SIGHUP is finished and its lines written, and the new
/// reader goes on from there.
#[test]
fn a_changed_stdin_source_loses_nothing_of_the_read_in_progress() {
    let setup = Setup::new();
    let a = fluentd();
    let blocks = |extra: &str| {
        format!(
            "{}{}",
            input("in", "stdin", extra),
            destination("a", &a.url("/t"), "", "")
        )
    };
    let cfg = write_config_atomically(&setup, &blocks(""));
    let mut cmd = bin();
    cmd.arg("run").arg("-c").arg(&cfg);
    let (tailhook, mut stdin) = Tailhook::spawn_with_stdin(cmd);
    started(&tailhook);
    let lines = wallarm_hits(0, 30);
    stdin.write_all(&ndjson(&lines[..10])).unwrap();
    assert!(a.wait_for_events(10, WAIT));

    write_config_atomically(&setup, &blocks("max_line_bytes = \"2MiB\""));
    reload(&tailhook, 2);
    let summary = reload_summary(&tailhook, 1);
    assert!(summary.contains("restarted source `in`"), "{summary}");
    // Read by the reader the reload stopped: its read was in progress.
    stdin.write_all(&ndjson(&lines[10..20])).unwrap();
    assert!(a.wait_for_events(20, WAIT), "a: {}", a.event_count());
    stdin.write_all(&ndjson(&lines[20..])).unwrap();
    drop(stdin);
    let exit = tailhook.wait_exit(WAIT);
    assert_clean_exit(&exit);
    assert_each_exactly_once(&a, &lines, "stdin through a reload that changed it");
}

/// The `seq` at the end of a [`wallarm_hits`] line, without parsing it.
fn wallarm_seq(event: &[u8]) -> Option<usize> {
    let at = memchr_last(event, b"\"seq\":")? + 6;
    let digits = &event[at..event.len().checked_sub(1)?];
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn memchr_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// SIGHUP every 200 ms, each changing a destination that reads none of
/// what is sent (only an empty directory), while a tcp sender and a stdin
/// producer each stream 100,000 Wallarm hits: the inputs and the other
/// destination are kept through every reload, and every line is delivered
/// exactly once, whole.
#[test]
fn sighup_every_200_ms_loses_nothing_from_a_tcp_sender_and_stdin() {
    const LINES: usize = 100_000;
    const RELOADS: usize = 50;
    let setup = Setup::new();
    let (a, b) = (fluentd(), fluentd());
    let blocks = |round: usize| {
        format!(
            "shutdown_timeout = \"10s\"\n\n{}{}{}{}{}",
            tcp(""),
            input("in", "stdin", ""),
            setup.source("quiet", "none-*.ndjson", ""),
            destination(
                "a",
                &a.url("/t"),
                "sources = [\"net\", \"in\"]",
                "[destination.batch]\nmax_events = 5000\nmax_bytes = \"8MiB\"\ntimeout = \"100ms\"\n"
            ),
            destination(
                "b",
                &b.url("/t"),
                &format!("sources = [\"quiet\"]\nconcurrency = {}", 1 + round % 2),
                ""
            )
        )
    };
    let cfg = write_config_atomically(&setup, &blocks(0));
    let mut cmd = bin();
    cmd.arg("run").arg("-c").arg(&cfg);
    let (tailhook, mut stdin) = Tailhook::spawn_with_stdin(cmd);
    started(&tailhook);
    let addr = listen_addr(&tailhook, "net");
    let sent = wallarm_hits(0, 2 * LINES);
    let (by_tcp, by_stdin) = (sent[..LINES].to_vec(), sent[LINES..].to_vec());
    let tcp_sender = std::thread::spawn(move || {
        let mut conn = connect(addr);
        for chunk in by_tcp.chunks(100) {
            conn.write_all(&ndjson(chunk)).unwrap();
        }
    });
    let producer = std::thread::spawn(move || {
        for chunk in by_stdin.chunks(100) {
            stdin.write_all(&ndjson(chunk)).unwrap();
        }
    });
    let mut reloads = 0;
    // While the lines are sent, and then while they are delivered.
    while reloads < RELOADS && a.event_count() < 2 * LINES {
        std::thread::sleep(Duration::from_millis(200));
        reloads += 1;
        write_config_atomically(&setup, &blocks(reloads));
        tailhook.signal(Signal::SIGHUP);
    }
    tcp_sender.join().unwrap();
    producer.join().unwrap();
    assert!(
        a.wait_for_events(2 * LINES, Duration::from_secs(120)),
        "a: {} of {}",
        a.event_count(),
        2 * LINES
    );
    let log = tailhook.stderr();
    assert!(
        log.contains("reload: kept source `net`, kept source `in`, kept source `quiet`, kept destination `a`, restarted destination `b`"),
        "no reload kept the inputs:\n{log}"
    );
    assert!(!log.contains("reload: restarted source"), "{log}");
    assert!(!log.contains("checkpoint saved destination=a"), "{log}");
    assert_clean_exit(&tailhook.terminate());
    let mut seen = vec![0u32; sent.len()];
    for event in a.events() {
        let seq = wallarm_seq(&event)
            .filter(|&s| s < sent.len() && event == sent[s].as_bytes())
            .unwrap_or_else(|| panic!("not a line that was sent: {}", show(&event)));
        seen[seq] += 1;
    }
    let missing: Vec<usize> = (0..sent.len()).filter(|&s| seen[s] == 0).collect();
    let twice: Vec<usize> = (0..sent.len()).filter(|&s| seen[s] > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "after {reloads} reloads: {} missing (first {:?}), {} more than once (first {:?})",
        missing.len(),
        &missing[..missing.len().min(20)],
        twice.len(),
        &twice[..twice.len().min(20)]
    );
    assert_eq!(b.event_count(), 0);
}

/// The byte counts in the log lines that start with `prefix`, in order:
/// `<prefix>: the spool holds <N> bytes of source ...`.
fn bytes_logged(tailhook: &Tailhook, prefix: &str) -> Vec<u64> {
    let needle = format!("{prefix}: the spool holds ");
    tailhook
        .stderr()
        .lines()
        .filter_map(|l| l.split(needle.as_str()).nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// The lines of the spool segments of `source` (their header lines aside).
fn spooled_lines(setup: &Setup, source: &str) -> Vec<String> {
    spool_segments(setup, source)
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines().skip(1).map(str::to_string).collect::<Vec<_>>()
        })
        .collect()
}

/// A destination that a reload removes is told, per spooled source, how
/// many bytes it has not acknowledged; they are not kept for it. Added back
/// while its segment is still in the spool, it resumes where it was; added
/// back after segments were deleted, it gets what is still in the spool
/// and nothing of what was deleted. A checkpoint file that belongs to no
/// destination at start gets the same warning, naming it.
#[test]
fn a_removed_destination_is_told_what_the_spool_no_longer_keeps_for_it() {
    let setup = Setup::new();
    let (a, b) = (fluentd(), fluentd());
    // shutdown_timeout: how long b, removed while its collector fails,
    // holds a reload; and what b, caught up, has to receive the answers in
    // flight when it is removed.
    let blocks = |with_b: bool| {
        let b = if with_b {
            destination("b", &b.url("/t"), "", "")
        } else {
            String::new()
        };
        format!(
            "shutdown_timeout = \"2s\"\n\n[spool]\nmax_bytes = \"1MiB\"\n\n{}{}{b}",
            tcp(""),
            destination("a", &a.url("/t"), "", "")
        )
    };
    let cfg = write_config_atomically(&setup, &blocks(true));
    let tailhook = Tailhook::start(&cfg);
    started(&tailhook);
    let mut conn = connect(listen_addr(&tailhook, "net"));
    let lines = hits(0, 810, 500);
    let bytes = |ls: &[String]| ls.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
    let send = |conn: &mut TcpStream, ls: &[String]| conn.write_all(&ndjson(ls)).unwrap();
    send(&mut conn, &lines[..10]);
    assert!(a.wait_for_events(10, WAIT) && b.wait_for_events(10, WAIT));

    // b's collector fails: b has not acknowledged the next 20 lines when
    // a reload removes it.
    b.respond_with_body(503, "down");
    let tried = b.request_count();
    send(&mut conn, &lines[10..30]);
    assert!(a.wait_for_events(30, WAIT) && b.wait_for_requests(tried + 1, WAIT));
    write_config_atomically(&setup, &blocks(false));
    reload(&tailhook, 2);
    let removed = "destination `b` is removed";
    assert_eq!(bytes_logged(&tailhook, removed), [bytes(&lines[10..30])]);
    assert!(reload_summary(&tailhook, 1).contains("removed destination `b`"));

    // Added back at once: its segment is still in the spool, and it goes
    // on from its checkpoint (the first 10 lines are not sent again).
    b.clear_override();
    write_config_atomically(&setup, &blocks(true));
    reload(&tailhook, 3);
    assert!(b.wait_for_events(30, WAIT), "b: {}", b.event_count());
    assert_each_exactly_once(&b, &lines[..30], "b added back");

    // Removed again, with nothing left to deliver; meanwhile segments fill
    // up and are deleted once `a` has them.
    write_config_atomically(&setup, &blocks(false));
    reload(&tailhook, 4);
    assert_eq!(bytes_logged(&tailhook, removed)[1], 0);
    let first_segment = spool_segments(&setup, "net").remove(0);
    send(&mut conn, &lines[30..800]);
    assert!(a.wait_for_events(800, WAIT), "a: {}", a.event_count());
    // The count of a round of deletion after the first segment went: the
    // segment being written is all that is left.
    let addr = metrics_addr(&tailhook);
    wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "only the segment being written left in the spool",
        &["tailhook_spool_segments"],
        |page| !first_segment.exists() && page.value("tailhook_spool_segments", &[]) == 1.0,
    );
    let kept = spooled_lines(&setup, "net");
    assert!(
        !kept.is_empty() && kept.len() < 770,
        "{} lines in the spool",
        kept.len()
    );
    assert_eq!(kept[..], lines[800 - kept.len()..800]);

    // Added back: it gets what the spool still holds, not what was deleted.
    write_config_atomically(&setup, &blocks(true));
    reload(&tailhook, 5);
    let expected_b = [&lines[..30], &kept[..]].concat();
    assert!(
        b.wait_for_events(expected_b.len(), WAIT),
        "b: {} of {}",
        b.event_count(),
        expected_b.len()
    );

    // b fails again and misses the last 10 lines; then tailhook stops, and
    // starts again without b.
    b.respond_with_body(503, "down");
    let tried = b.request_count();
    send(&mut conn, &lines[800..]);
    assert!(a.wait_for_events(810, WAIT) && b.wait_for_requests(tried + 1, WAIT));
    drop(conn);
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&a, &lines, "a, through every reload");
    assert_each_exactly_once(&b, &expected_b, "b, removed and added back twice");

    let tailhook = Tailhook::start(&write_config_atomically(&setup, &blocks(false)));
    started(&tailhook);
    let stray = format!(
        "checkpoint file {} belongs to no configured destination (`b`)",
        setup.checkpoint("b").display()
    );
    assert_eq!(bytes_logged(&tailhook, &stray), [bytes(&lines[800..])]);
    assert_clean_exit(&tailhook.terminate());
}
