//! SIGHUP re-reads the config, through the real binary: a destination added
//! starts (from the beginning of the files), one removed stops and keeps its
//! checkpoint, changed settings apply, events pending at the reload are not
//! lost, and an invalid config is reported while the running one goes on.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::check::{assert_clean_exit, assert_each_exactly_once, dead_port};
use support::collector::{Collector, Options};
use support::process::Tailhook;
use support::setup::{append, destination, hits, Setup};

const WAIT: Duration = Duration::from_secs(30);

fn fluentd() -> Collector {
    Collector::start(Options::fluentd())
}

fn write_config(setup: &Setup, destinations: &[String]) -> PathBuf {
    let mut text = "shutdown_timeout = \"2s\"\n\n".to_string();
    text.push_str(&setup.source("w", "*.ndjson", ""));
    for d in destinations {
        text.push_str(d);
    }
    setup.config(&text)
}

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
    let cfg = write_config(&setup, &[destination("a", &a.url("/t"), "", "")]);
    let tailhook = Tailhook::start(&cfg);
    started(&tailhook);
    assert!(a.wait_for_events(first.len(), WAIT));

    write_config(
        &setup,
        &[
            destination("a", &a.url("/t"), "", ""),
            destination("b", &b.url("/t"), "", ""),
        ],
    );
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
    let both = [
        destination("a", &a.url("/t"), "", ""),
        destination("b", &b.url("/t"), "", ""),
    ];
    let cfg = write_config(&setup, &both);
    let tailhook = Tailhook::start(&cfg);
    started(&tailhook);
    assert!(a.wait_for_events(first.len(), WAIT));
    assert!(b.wait_for_events(first.len(), WAIT));

    write_config(&setup, &both[..1]);
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
    let tailhook = Tailhook::start(&write_config(&setup, &both));
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
    let cfg = write_config(&setup, &[destination("a", &a.url("/before"), "", "")]);
    let tailhook = Tailhook::start(&cfg);
    started(&tailhook);
    assert!(a.wait_for_events(10, WAIT));

    write_config(
        &setup,
        &[destination(
            "a",
            &a.url("/after"),
            "headers = { X-Reloaded = \"yes\" }",
            "[destination.batch]\nmax_events = 1\ntimeout = \"100ms\"\n",
        )],
    );
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
    let good = [destination("a", &a.url("/t"), "", "")];
    let cfg = write_config(&setup, &good);
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
    let cfg = write_config(&setup, &[destination("a", &url, "", "")]);
    let tailhook = Tailhook::start(&cfg);
    assert!(tailhook.wait_for_log("delivery failed", WAIT));

    // The reload gives up on the batches in flight after shutdown_timeout;
    // they were never acknowledged, so the new config reads them again.
    write_config(
        &setup,
        &[destination(
            "a",
            &url,
            "concurrency = 1",
            "[destination.batch]\nmax_events = 50\ntimeout = \"100ms\"\n",
        )],
    );
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
