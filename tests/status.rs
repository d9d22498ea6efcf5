//! `tailhook status -c FILE [--json]`: how far each destination is behind,
//! read from the checkpoints, the files, the spool and the dead-letter
//! files, with the real binary in a temp dir on 127.0.0.1.
//!
//! The numbers are compared with what the test wrote: file sizes, bytes
//! appended after tailhook stopped, the dead-letter file's lines. Waits are
//! on the collector, on tailhook's log, or on the checkpoint file (polled:
//! nothing else says when tailhook has written it), all bounded.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::check::{dead_port, ndjson, stop, wait_events};
use support::collector::{Collector, Options};
use support::inputs::{input, listen_addr, spool_segments};
use support::process::{run_cmd, Exit, Tailhook};
use support::setup::{append, destination, hits, Setup};

const WAIT: Duration = Duration::from_secs(30);

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// `tailhook status -c <cfg>` (with `--json` when asked).
fn status(cfg: &Path, json: bool) -> Exit {
    let cfg = cfg.display().to_string();
    let mut args = vec!["status", "-c", &cfg];
    if json {
        args.push("--json");
    }
    run_cmd(&args, &[])
}

/// `--json`'s output, parsed.
fn status_json(cfg: &Path) -> (Option<i32>, Value) {
    let exit = status(cfg, true);
    let v = serde_json::from_str(&exit.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{}", exit.output()));
    (exit.code, v)
}

/// The destination `name` of a JSON report.
fn dest<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no destination {name} in {report:#}"))
}

/// The source `name` of a destination of a JSON report.
fn source<'a>(destination: &'a Value, name: &str) -> &'a Value {
    destination["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {destination:#}"))
}

fn assert_says(exit: &Exit, words: &str) {
    assert!(
        exit.stdout.contains(words),
        "status does not say {words:?}:\n{}",
        exit.output()
    );
}

/// Waits until `destination`'s checkpoint records each file at its full size.
fn wait_all_checkpointed(setup: &Setup, destination: &str, files: &[&Path]) {
    for f in files {
        assert!(
            setup
                .wait_checkpointed(destination, f, size(f), WAIT)
                .is_some(),
            "{destination} never checkpointed {} at {} bytes: {:?}",
            f.display(),
            size(f),
            setup.read_checkpoint(destination)
        );
    }
}

/// Everything delivered, tailhook still running: exit 0, "caught up", zero
/// bytes behind in each source, the spool's bytes as on disk.
#[test]
fn a_caught_up_pipeline_exits_0_and_says_so_while_tailhook_runs() {
    let setup = Setup::new();
    let a = setup.log("a.ndjson");
    let b = setup.log("b.ndjson");
    append(&a, &hits(0, 10, 100));
    append(&b, &hits(10, 5, 100));
    let collector = Collector::start(Options::fluentd());
    let mut text = "[spool]\nmax_bytes = \"2MiB\"\n\n".to_string();
    text.push_str(&setup.source("app", "*.ndjson", ""));
    text.push_str(&input("net", "tcp", ""));
    text.push_str(&destination(
        "fluentd",
        &collector.url("/wallarm.events"),
        "",
        "",
    ));
    let cfg = setup.config(&text);
    let tailhook = Tailhook::start(&cfg);
    let net = listen_addr(&tailhook, "net");
    TcpStream::connect(net)
        .unwrap()
        .write_all(&ndjson(&hits(100, 3, 100)))
        .unwrap();
    wait_events(&collector, &tailhook, 18);
    let segments = spool_segments(&setup, "net");
    assert_eq!(segments.len(), 1, "{segments:?}");
    let segment = &segments[0];
    wait_all_checkpointed(&setup, "fluentd", &[&a, &b, segment]);

    let exit = status(&cfg, false);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_says(&exit, "destination fluentd: caught up");
    assert_says(&exit, "source app (file): 0 bytes behind in 0 of 2 file(s)");
    assert_says(
        &exit,
        "source net (tcp): 0 bytes behind in 0 of 1 spool segment(s)",
    );
    assert_says(&exit, "dead letters: none");
    let spooled = size(segment);
    assert_says(
        &exit,
        &format!("spool: {spooled} of 2097152 bytes (0.0%) in 1 segment(s)"),
    );
    assert_says(&exit, "all 1 destination(s) caught up");

    let (code, report) = status_json(&cfg);
    assert_eq!(code, Some(0));
    assert_eq!(report["caught_up"], true, "{report:#}");
    let d = dest(&report, "fluentd");
    assert_eq!(d["caught_up"], true);
    assert_eq!(d["behind_bytes"], 0);
    assert_eq!(source(d, "app")["files"], 2);
    assert_eq!(source(d, "net")["type"], "tcp");
    assert_eq!(source(d, "net")["spooled"], true);
    assert_eq!(d["dead_letters"]["events"], 0);
    assert_eq!(report["spool"]["bytes"], spooled);
    assert_eq!(report["spool"]["max_bytes"], 2097152);
    assert_eq!(report["spool"]["segments"], 1);
    stop(tailhook);
}

/// One destination delivers, the other's collector is down: exit 1; the
/// down one is behind by every byte of every file, the other is caught up.
/// After tailhook stopped, lines appended to one file and a new file put
/// the delivering one behind by exactly those bytes, in 2 of 3 files.
/// `--json` says the same numbers.
#[test]
fn a_destination_whose_collector_is_down_is_behind_by_what_it_has_not_sent() {
    let setup = Setup::new();
    let a = setup.log("a.ndjson");
    let b = setup.log("b.ndjson");
    append(&a, &hits(0, 10, 100));
    append(&b, &hits(10, 5, 100));
    let collector = Collector::start(Options::fluentd());
    let dead = dead_port();
    let mut text = "shutdown_timeout = \"1s\"\n\n".to_string();
    text.push_str(&setup.source("app", "*.ndjson", ""));
    text.push_str(&destination("up", &collector.url("/t"), "", ""));
    text.push_str(&destination(
        "down",
        &format!("http://127.0.0.1:{}/t", dead.port),
        "",
        "",
    ));
    let cfg = setup.config(&text);
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 15);
    wait_all_checkpointed(&setup, "up", &[&a, &b]);
    stop(tailhook);

    let all = size(&a) + size(&b);
    let exit = status(&cfg, false);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert_says(&exit, "destination up: caught up");
    assert_says(
        &exit,
        &format!("destination down: behind by {all} bytes in 2 file(s)"),
    );
    assert_says(
        &exit,
        &format!("source app (file): {all} bytes behind in 2 of 2 file(s)"),
    );
    assert_says(&exit, "1 of 2 destination(s) behind");

    // Written while no tailhook runs: 4 lines more in a, and a new file c.
    let before = size(&a);
    append(&a, &hits(15, 4, 100));
    let appended = size(&a) - before;
    let c = setup.log("c.ndjson");
    append(&c, &hits(19, 2, 100));
    let new_file = size(&c);
    let all = size(&a) + size(&b) + new_file;

    let exit = status(&cfg, false);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    let up_behind = appended + new_file;
    assert_says(
        &exit,
        &format!("destination up: behind by {up_behind} bytes in 2 file(s)"),
    );
    assert_says(
        &exit,
        &format!("source app (file): {up_behind} bytes behind in 2 of 3 file(s)"),
    );
    assert_says(
        &exit,
        &format!("destination down: behind by {all} bytes in 3 file(s)"),
    );
    assert_says(&exit, "2 of 2 destination(s) behind");

    let (code, report) = status_json(&cfg);
    assert_eq!(code, Some(1));
    assert_eq!(report["caught_up"], false, "{report:#}");
    assert_eq!(report["spool"], Value::Null, "no source uses the spool");
    for (name, bytes, files) in [("up", up_behind, 2), ("down", all, 3)] {
        let d = dest(&report, name);
        assert_eq!(d["caught_up"], false, "{name}");
        assert_eq!(d["behind_bytes"], bytes, "{name}: {d:#}");
        assert_eq!(d["behind_files"], files, "{name}: {d:#}");
        let s = source(d, "app");
        assert_eq!(s["type"], "file");
        assert_eq!(s["files"], 3);
        assert_eq!(s["behind_bytes"], bytes);
        assert_eq!(s["behind_files"], files);
        assert_eq!(d["problems"], serde_json::json!([]));
    }
    drop(dead);
}

/// Lines that are not events, with `on_invalid = "dead_letter"`, wait in
/// the dead-letter file: status counts them (lines and bytes, as in the
/// file) and the destination is still caught up (they are not behind:
/// they wait for `dead-letter resend`).
#[test]
fn dead_letters_waiting_are_counted() {
    let setup = Setup::new();
    let log = setup.log("app.ndjson");
    append(&log, &hits(0, 5, 100));
    append(&log, &["not an event".to_string(), "42".to_string()]);
    append(&log, &hits(5, 5, 100));
    append(&log, &["{broken".to_string()]);
    let collector = Collector::start(Options::fluentd());
    let mut text = setup.source("app", "*.ndjson", "on_invalid = \"dead_letter\"");
    text.push_str(&destination("fluentd", &collector.url("/t"), "", ""));
    let cfg = setup.config(&text);
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 10);
    wait_all_checkpointed(&setup, "fluentd", &[&log]);
    stop(tailhook);

    let file = setup.dead_letter("fluentd");
    let written = std::fs::read_to_string(&file).expect("the dead-letter file");
    assert_eq!(written.lines().count(), 3, "{written}");
    let bytes = size(&file);
    let exit = status(&cfg, false);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_says(&exit, "destination fluentd: caught up");
    assert_says(
        &exit,
        &format!(
            "dead letters: 3 event(s), {bytes} bytes in {}",
            file.display()
        ),
    );
    let (code, report) = status_json(&cfg);
    assert_eq!(code, Some(0));
    let dl = &dest(&report, "fluentd")["dead_letters"];
    assert_eq!(dl["events"], 3, "{dl:#}");
    assert_eq!(dl["bytes"], bytes);
    assert_eq!(dl["path"], file.display().to_string());
}

/// Before a destination's first start, `read_from = "end"` skips what the
/// files hold, so that is not behind; with the default, it all is.
#[test]
fn before_the_first_start_read_from_end_is_not_behind() {
    let setup = Setup::new();
    let log = setup.log("app.ndjson");
    append(&log, &hits(0, 3, 100));
    let dead = dead_port();
    let url = format!("http://127.0.0.1:{}/t", dead.port);
    let mut text = setup.source("app", "*.ndjson", "read_from = \"end\"");
    text.push_str(&destination("d", &url, "", ""));
    let exit = status(&setup.config(&text), false);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert_says(&exit, "source app (file): 0 bytes behind in 0 of 1 file(s)");
    assert!(
        !setup.data.exists(),
        "status created {}",
        setup.data.display()
    );

    let mut text = setup.source("app", "*.ndjson", "");
    text.push_str(&destination("d", &url, "", ""));
    let exit = status(&setup.config(&text), false);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert_says(
        &exit,
        &format!("destination d: behind by {} bytes in 1 file(s)", size(&log)),
    );
}

#[test]
fn an_invalid_config_exits_2_and_says_why() {
    let setup = Setup::new();
    let cfg = setup.config("retries = 3\n");
    let exit = status(&cfg, false);
    assert_eq!(exit.code, Some(2), "{}", exit.output());
    assert!(exit.stderr.contains("invalid config"), "{}", exit.output());
    assert!(exit.stderr.contains("retries"), "{}", exit.output());
    assert!(exit.stdout.is_empty(), "{}", exit.output());
    let missing = setup.dir.path().join("missing.toml");
    assert_eq!(status(&missing, true).code, Some(2));
}
