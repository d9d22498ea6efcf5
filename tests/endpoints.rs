//! Several collectors behind one destination (`urls`, `addresses`), end to
//! end: the real binary tails Wallarm-shaped lines and spreads its batches
//! over Fluentd `in_http` emulators (`support::collector`) and the
//! forward-protocol emulator (`support::forward`) on 127.0.0.1. Checked:
//! two healthy collectors share the batches and every event arrives once;
//! a dead one, one that starts answering 503, and all of them down lose
//! nothing and come back; acknowledgements reach the checkpoint in order
//! whichever collector answered; the per-endpoint metrics add up to the
//! destination's; `tailhook test` reports each endpoint on its own line.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use support::check::{dead_port, stop, wait_log};
use support::collector::{fluentd, Collector, Options};
use support::forward::Forward;
use support::metrics::{assert_promtool_clean, metrics_addr, wait_for_page, Page};
use support::process::{run_cmd, Tailhook};
use support::setup::{append, checkpointed_offset, seq_of, wallarm_hits, Setup};

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(30);

// The exposition is a public interface: names spelled out.
const ENDPOINT_UP: &str = "tailhook_endpoint_up";
const ENDPOINT_BATCHES: &str = "tailhook_endpoint_batches_sent_total";
const ENDPOINT_EVENTS: &str = "tailhook_endpoint_events_sent_total";
const ENDPOINT_FAILURES: &str = "tailhook_endpoint_failures_total";
const SENT: &str = "tailhook_destination_events_sent_total";
const BATCHES: &str = "tailhook_destination_batches_sent_total";
const UP: &str = "tailhook_destination_up";

const DEST: (&str, &str) = ("destination", "fluentd");

/// `/wallarm.events` on a port where nothing listens.
fn dead_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/wallarm.events")
}

/// One file source on `logs/*.ndjson` and the destination `fluentd` with
/// `urls`, five events a batch, fast retries, and `extra` in its block.
fn config(setup: &Setup, urls: &[&str], extra: &str) -> std::path::PathBuf {
    setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .destination_urls("fluentd", urls)
        .extra(&format!(
            "{extra}\n[destination.batch]\nmax_events = 5\ntimeout = \"100ms\""
        ))
        .write()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Waits until the collectors together have accepted `n` events. There is
/// no signal across collectors: each is waited on for its next event, a
/// little at a time, until the total is reached or `WAIT` passes.
fn wait_total(collectors: &[&Collector], n: usize, tailhook: &Tailhook) {
    let deadline = Instant::now() + WAIT;
    loop {
        let total: usize = collectors.iter().map(|c| c.event_count()).sum();
        if total >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the collectors accepted {total} of {n} events within {WAIT:?}\n{}",
            tailhook.stderr()
        );
        for c in collectors {
            c.wait_for_events(c.event_count() + 1, Duration::from_millis(20));
        }
    }
}

/// Every one of `lines` was accepted exactly once by one of the collectors,
/// byte for byte, and nothing else.
fn assert_once_across(collectors: &[&Collector], lines: &[String]) {
    let mut got: Vec<Vec<u8>> = collectors.iter().flat_map(|c| c.events()).collect();
    got.sort_by_key(|e| seq_of(e));
    let mut want: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
    want.sort_by_key(|e| seq_of(e));
    let seqs = |v: &[Vec<u8>]| v.iter().map(|e| seq_of(e)).collect::<Vec<_>>();
    assert_eq!(
        seqs(&got),
        seqs(&want),
        "each event once, across collectors"
    );
    assert!(got == want, "the events arrived byte for byte");
}

/// No batch waited with backoff: each failed try went at once to an
/// endpoint in rotation (the destination logs `delivery failed: …;
/// retrying with backoff` only when it waits).
fn assert_never_waited(stderr: &str) {
    assert!(
        !stderr.contains("retrying with backoff"),
        "a batch waited although another endpoint was in rotation:\n{stderr}"
    );
}

fn ep(url: &str) -> [(&'static str, &str); 2] {
    [DEST, ("endpoint", url)]
}

/// Two collectors that answer: the batches alternate between them, every
/// event arrives once at one of them, the per-endpoint counters equal what
/// each collector received and add up to the destination's, and the
/// checkpoint reaches the end of the file.
#[test]
fn two_healthy_collectors_share_the_batches_and_each_event_arrives_once() {
    let setup = Setup::new();
    let (a, b) = (fluentd(), fluentd());
    let (url_a, url_b) = (a.url("/wallarm.events"), b.url("/wallarm.events"));
    let cfg = config(&setup, &[&url_a, &url_b], "");
    let log = setup.log("wallarm.ndjson");
    let lines = wallarm_hits(0, 60);
    append(&log, &lines);
    let th = Tailhook::start(&cfg);
    let addr = metrics_addr(&th);
    wait_total(&[&a, &b], 60, &th);
    assert!(
        setup
            .wait_checkpointed("fluentd", &log, file_len(&log), WAIT)
            .is_some(),
        "{}",
        th.stderr()
    );
    let page = wait_for_page(
        addr,
        &th,
        WAIT,
        "60 events sent, counted per endpoint",
        &[SENT, ENDPOINT_EVENTS],
        |p| {
            p.get(SENT, &[DEST]) == Some(60.0)
                && p.sum(ENDPOINT_EVENTS, &[DEST]) == 60.0
                && p.get(ENDPOINT_BATCHES, &ep(&url_a)) == Some(a.batches().len() as f64)
                && p.get(ENDPOINT_BATCHES, &ep(&url_b)) == Some(b.batches().len() as f64)
        },
    );
    stop(th);

    assert_once_across(&[&a, &b], &lines);
    let (na, nb) = (a.batches().len(), b.batches().len());
    assert!(na >= 1 && nb >= 1, "both received batches: {na} and {nb}");
    assert_eq!(na + nb, 12, "60 events, 5 a batch");
    assert_eq!(page.value(BATCHES, &[DEST]), (na + nb) as f64);
    assert_eq!(
        page.value(ENDPOINT_EVENTS, &ep(&url_a)),
        a.event_count() as f64
    );
    assert_eq!(
        page.value(ENDPOINT_EVENTS, &ep(&url_b)),
        b.event_count() as f64
    );
    assert_eq!(page.value(ENDPOINT_UP, &ep(&url_a)), 1.0);
    assert_eq!(page.value(ENDPOINT_UP, &ep(&url_b)), 1.0);
    assert_eq!(page.value(UP, &[DEST]), 1.0);
    assert_eq!(page.sum(ENDPOINT_FAILURES, &[DEST]), 0.0);
    assert_described(&page);
    assert_promtool_clean(&page.text);
}

/// The endpoint families carry HELP and TYPE.
fn assert_described(page: &Page) {
    for (name, kind) in [
        (ENDPOINT_UP, "gauge"),
        (ENDPOINT_BATCHES, "counter"),
        (ENDPOINT_EVENTS, "counter"),
    ] {
        assert_eq!(
            page.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
        assert!(page.help.get(name).is_some_and(|h| !h.is_empty()), "{name}");
    }
}

/// The first URL is a closed port from the start: it is taken out of
/// rotation (and says why, with its URL), every event goes to the other,
/// and its `tailhook_endpoint_up` is 0.
#[test]
fn a_collector_that_is_down_from_the_start_loses_nothing() {
    let setup = Setup::new();
    let dead = dead_port();
    let b = fluentd();
    let (url_a, url_b) = (dead_url(dead.port), b.url("/wallarm.events"));
    let cfg = config(&setup, &[&url_a, &url_b], "");
    let log = setup.log("wallarm.ndjson");
    let lines = wallarm_hits(0, 40);
    append(&log, &lines);
    let th = Tailhook::start(&cfg);
    let addr = metrics_addr(&th);
    wait_total(&[&b], 40, &th);
    assert!(setup
        .wait_checkpointed("fluentd", &log, file_len(&log), WAIT)
        .is_some());
    wait_log(&th, &format!("endpoint {url_a} is taken out of rotation: "));
    let page = wait_for_page(
        addr,
        &th,
        WAIT,
        "the dead endpoint down, the live one up",
        &[ENDPOINT_UP, ENDPOINT_FAILURES],
        |p| {
            p.get(ENDPOINT_UP, &ep(&url_a)) == Some(0.0)
                && p.get(ENDPOINT_UP, &ep(&url_b)) == Some(1.0)
                && p.get(SENT, &[DEST]) == Some(40.0)
        },
    );
    let exit = stop(th);

    assert_once_across(&[&b], &lines);
    assert!(
        exit.stderr.contains("connection refused"),
        "{}",
        exit.stderr
    );
    assert_never_waited(&exit.stderr);
    let refused = [DEST, ("endpoint", url_a.as_str()), ("reason", "connect")];
    assert!(page.value(ENDPOINT_FAILURES, &refused) >= 1.0);
    assert_eq!(page.get(ENDPOINT_BATCHES, &ep(&url_a)).unwrap_or(0.0), 0.0);
    assert_eq!(
        page.value(ENDPOINT_BATCHES, &ep(&url_b)),
        page.value(BATCHES, &[DEST])
    );
    assert_eq!(page.value(UP, &[DEST]), 1.0, "the destination delivers");
    assert_promtool_clean(&page.text);
}

/// One collector starts answering 503 mid-run: it is taken out, its batch
/// and every later one go to the other at once (nothing waits for it, and
/// nothing is lost). Once it answers again, a probe puts it back and it
/// receives batches again.
#[test]
fn a_collector_answering_503_is_taken_out_and_comes_back_once_it_heals() {
    let setup = Setup::new();
    let (a, b) = (fluentd(), fluentd());
    let (url_a, url_b) = (a.url("/wallarm.events"), b.url("/wallarm.events"));
    let cfg = config(&setup, &[&url_a, &url_b], "");
    let log = setup.log("wallarm.ndjson");
    let th = Tailhook::start(&cfg);
    let addr = metrics_addr(&th);

    let first = wallarm_hits(0, 20);
    append(&log, &first);
    wait_total(&[&a, &b], 20, &th);
    assert!(a.event_count() > 0 && b.event_count() > 0);

    // Fluentd in maintenance: 503 to everything, nothing recorded.
    a.respond_with_body(503, "maintenance");
    let before = a.event_count();
    let second = wallarm_hits(20, 40);
    append(&log, &second);
    wait_total(&[&a, &b], 60, &th);
    wait_log(
        &th,
        &format!("endpoint {url_a} is taken out of rotation: HTTP 503 from {url_a}: maintenance"),
    );
    assert_eq!(a.event_count(), before, "a 503 takes nothing");
    assert!(
        a.statuses().contains(&503),
        "a batch reached it: {:?}",
        a.statuses()
    );

    // It heals; a probe puts it back in rotation, and it takes batches.
    a.clear_override();
    wait_for_page(
        addr,
        &th,
        WAIT,
        "the healed endpoint back in rotation",
        &[ENDPOINT_UP],
        |p| p.get(ENDPOINT_UP, &ep(&url_a)) == Some(1.0),
    );
    let third = wallarm_hits(60, 40);
    append(&log, &third);
    wait_total(&[&a, &b], 100, &th);
    assert!(
        a.event_count() > before,
        "the healed collector received again\n{}",
        th.stderr()
    );
    assert!(setup
        .wait_checkpointed("fluentd", &log, file_len(&log), WAIT)
        .is_some());
    let exit = stop(th);

    let all: Vec<String> = [first, second, third].concat();
    assert_once_across(&[&a, &b], &all);
    assert!(
        exit.stderr.contains(&format!(
            "endpoint {url_a} is back in rotation: a probe connected to it"
        )),
        "{}",
        exit.stderr
    );
    assert!(
        !exit
            .stderr
            .contains(&format!("endpoint {url_b} is taken out")),
        "{}",
        exit.stderr
    );
    assert_never_waited(&exit.stderr);
}

/// Both collectors are down: the events wait (nothing is dropped), tried
/// with backoff at each in turn. The second comes back on its port: it is
/// put back and everything reaches it, once.
#[test]
fn with_every_collector_down_events_wait_until_one_comes_back() {
    let setup = Setup::new();
    let (dead_a, dead_b) = (dead_port(), dead_port());
    let (url_a, url_b) = (dead_url(dead_a.port), dead_url(dead_b.port));
    let cfg = config(&setup, &[&url_a, &url_b], "");
    let log = setup.log("wallarm.ndjson");
    let lines = wallarm_hits(0, 30);
    append(&log, &lines);
    let th = Tailhook::start(&cfg);
    let addr = metrics_addr(&th);
    wait_log(&th, "no endpoint is left in rotation");
    wait_for_page(
        addr,
        &th,
        WAIT,
        "both endpoints and the destination down",
        &[ENDPOINT_UP, UP],
        |p| {
            p.get(ENDPOINT_UP, &ep(&url_a)) == Some(0.0)
                && p.get(ENDPOINT_UP, &ep(&url_b)) == Some(0.0)
        },
    );

    let b = Collector::start(Options {
        port: dead_b.port,
        ..Options::fluentd()
    });
    wait_total(&[&b], 30, &th);
    assert!(setup
        .wait_checkpointed("fluentd", &log, file_len(&log), WAIT)
        .is_some());
    wait_log(&th, &format!("endpoint {url_b} is back in rotation"));
    let page = wait_for_page(
        addr,
        &th,
        WAIT,
        "the one that came back up, the other still down",
        &[ENDPOINT_UP, UP],
        |p| {
            p.get(ENDPOINT_UP, &ep(&url_b)) == Some(1.0)
                && p.get(ENDPOINT_UP, &ep(&url_a)) == Some(0.0)
                && p.get(UP, &[DEST]) == Some(1.0)
        },
    );
    stop(th);
    assert_once_across(&[&b], &lines);
    assert_eq!(page.value(ENDPOINT_EVENTS, &ep(&url_b)), 30.0);
}

/// One collector is slow: it holds the first batch while the other
/// acknowledges the second. The checkpoint follows the order of the file,
/// not of the answers: stopped then, it has not passed the held batch; and
/// after a restart everything arrives and the checkpoint reaches the end.
#[test]
fn acknowledgements_reach_the_checkpoint_in_order_whichever_collector_answered() {
    let setup = Setup::new();
    let (a, b) = (fluentd(), fluentd());
    let (url_a, url_b) = (a.url("/wallarm.events"), b.url("/wallarm.events"));
    let cfg = setup
        .builder()
        .extra("shutdown_timeout = \"1s\"")
        .file_source("wallarm", "*.ndjson")
        .destination_urls("fluentd", &[&url_a, &url_b])
        .extra("concurrency = 2\n[destination.batch]\nmax_events = 10\ntimeout = \"100ms\"")
        .write();
    let log = setup.log("wallarm.ndjson");
    a.hang_next(1);
    let th = Tailhook::start(&cfg);

    // The first batch goes to the first URL, which holds it…
    let held = wallarm_hits(0, 10);
    append(&log, &held);
    assert!(a.wait_for_held(1, WAIT), "{}", th.stderr());
    // …while the next one goes to the other, which acknowledges it.
    let answered = wallarm_hits(10, 10);
    append(&log, &answered);
    assert!(b.wait_for_answered_events(10, WAIT), "{}", th.stderr());
    let exit = stop(th);
    assert!(
        exit.stderr.contains("shutdown_timeout passed"),
        "{}",
        exit.output()
    );
    if let Some(cp) = setup.read_checkpoint("fluentd") {
        let offset = checkpointed_offset(&cp, &log).unwrap_or(0);
        assert_eq!(
            offset, 0,
            "the checkpoint passed the held batch although only the one after it was acknowledged: {cp}"
        );
    }

    // Restarted, it sends both batches again (the held one was never
    // acknowledged, and the other not applied behind it).
    let th = Tailhook::start(&cfg);
    assert!(setup
        .wait_checkpointed("fluentd", &log, file_len(&log), WAIT)
        .is_some());
    stop(th);
    let mut seen = BTreeSet::new();
    for e in a.answered_events().iter().chain(b.answered_events().iter()) {
        seen.insert(seq_of(e));
    }
    assert_eq!(
        seen,
        (0..20).collect(),
        "every event answered after the restart"
    );
    let answered_seqs =
        |c: &Collector| -> Vec<u64> { c.answered_events().iter().map(|e| seq_of(e)).collect() };
    let total = answered_seqs(&a).len() + answered_seqs(&b).len();
    assert!(
        total <= 30,
        "only what was in flight is sent again: {total} events answered"
    );
}

/// `type = "forward"` with `addresses`: a dead address is taken out and the
/// live `in_forward` acknowledges every event, once and in order.
#[test]
fn forward_addresses_fail_over_to_the_live_one() {
    let setup = Setup::new();
    let fwd = Forward::start();
    let dead = dead_port();
    let dead_address = format!("127.0.0.1:{}", dead.port);
    let cfg = setup
        .builder()
        .file_source("wallarm", "*.ndjson")
        .block(&format!(
            "[[destination]]\nname = \"fluentd\"\ntype = \"forward\"\n\
             addresses = [{dead_address:?}, {:?}]\ntag = \"wallarm.events\"\nconcurrency = 1\n\
             [destination.batch]\nmax_events = 5\ntimeout = \"100ms\"\n\
             [destination.retry]\ninitial = \"50ms\"\nmax = \"500ms\"\n",
            fwd.address()
        ))
        .write();
    let log = setup.log("wallarm.ndjson");
    let lines = wallarm_hits(0, 30);
    append(&log, &lines);
    let th = Tailhook::start(&cfg);
    let addr = metrics_addr(&th);
    assert!(fwd.wait_accepted(30, WAIT), "{}", th.stderr());
    assert!(setup
        .wait_checkpointed("fluentd", &log, file_len(&log), WAIT)
        .is_some());
    let page = wait_for_page(
        addr,
        &th,
        WAIT,
        "the dead address down, the live one up",
        &[ENDPOINT_UP],
        |p| {
            p.get(ENDPOINT_UP, &ep(&dead_address)) == Some(0.0)
                && p.get(ENDPOINT_UP, &ep(&fwd.address())) == Some(1.0)
        },
    );
    let exit = stop(th);
    assert!(
        exit.stderr.contains(&format!(
            "endpoint tcp://{dead_address} is taken out of rotation"
        )),
        "{}",
        exit.stderr
    );
    assert_never_waited(&exit.stderr);
    assert_eq!(fwd.violations(), Vec::<String>::new());
    let seqs: Vec<u64> = fwd
        .accepted()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..30).collect::<Vec<u64>>(), "once, in order");
    assert_eq!(
        page.value(ENDPOINT_BATCHES, &ep(&fwd.address())),
        page.value(BATCHES, &[DEST])
    );
}

/// `tailhook test` sends the test message to each URL and prints one line
/// per endpoint; one that fails makes the exit status 1. `check` prints
/// `urls` with the password redacted.
#[test]
fn test_reports_each_endpoint_on_its_own_line() {
    let setup = Setup::new();
    let (a, b) = (fluentd(), fluentd());
    let dead = dead_port();
    let url_a = a.url("/wallarm.events");
    let secret_dead = format!(
        "http://tailhook:s3cret-pw@127.0.0.1:{}/wallarm.events",
        dead.port
    );
    let shown_dead = format!(
        "http://tailhook:redacted@127.0.0.1:{}/wallarm.events",
        dead.port
    );
    let cfg = config(&setup, &[&url_a, &secret_dead], "");
    let path = cfg.display().to_string();

    let exit = run_cmd(&["test", "-c", &path], &[]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    let lines: Vec<&str> = exit.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", exit.output());
    assert!(
        lines[0].starts_with("fluentd: OK: HTTP 200 in ")
            && lines[0].ends_with(&format!(" ms (POST {url_a})")),
        "{}",
        exit.output()
    );
    assert_eq!(
        lines[1],
        format!("fluentd: FAILED: connection refused: nothing is listening at that address and port (POST {shown_dead})")
    );
    assert_eq!(a.request_count(), 1, "the test message, once");
    assert!(!exit.output().contains("s3cret-pw"), "{}", exit.output());

    let check = run_cmd(&["check", "-c", &path], &[]);
    assert!(check.success(), "{}", check.output());
    assert!(
        check
            .stdout
            .contains(&format!("urls = [{url_a:?}, {shown_dead:?}]")),
        "{}",
        check.stdout
    );
    assert!(!check.output().contains("s3cret-pw"), "{}", check.output());

    // Both answer: two OK lines, exit 0.
    let url_b = b.url("/wallarm.events");
    let cfg = config(&setup, &[&url_a, &url_b], "");
    let exit = run_cmd(&["test", "-c", &cfg.display().to_string()], &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let lines: Vec<&str> = exit.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", exit.output());
    for (line, url) in lines.iter().zip([&url_a, &url_b]) {
        assert!(
            line.starts_with("fluentd: OK: HTTP 200 in ")
                && line.ends_with(&format!(" ms (POST {url})")),
            "{}",
            exit.output()
        );
    }
    assert_eq!((a.request_count(), b.request_count()), (2, 1));
}
