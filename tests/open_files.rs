//! Many files under a low open-file limit: every destination reads every
//! file, so open files grow as destinations × files, and containers often
//! run with a limit of 1,024. tailhook raises its soft limit to the hard one
//! and, past its budget, reads files in turns instead of failing.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use support::collector::fluentd;
use support::process::Tailhook;
use support::setup::{destination, seq_of, wallarm_hits, Setup};

const FILES: usize = 10_000;
const LINES: usize = 10;
const DESTINATIONS: [&str; 3] = ["fluentd", "logstash", "archive"];
/// Delivery must not stall this long (it takes about two minutes on an idle
/// 2-core machine, much longer when the machine is busy)…
const STALL: Duration = Duration::from_secs(60);
/// …nor go on past this in all.
const LIMIT: Duration = Duration::from_secs(900);

#[test]
fn ten_thousand_files_and_three_destinations_under_ulimit_1024() {
    let setup = Setup::new();
    let collector = fluentd();
    let mut n = 0;
    for f in 0..FILES {
        let mut body = String::new();
        for l in wallarm_hits(n, LINES) {
            body.push_str(&l);
            body.push('\n');
        }
        n += LINES;
        std::fs::write(setup.log(&format!("app-{f:05}.log")), body).unwrap();
    }
    let mut blocks = setup.source("app", "app-*.log", "");
    for d in DESTINATIONS {
        blocks.push_str(&destination(
            d,
            &collector.url(&format!("/{d}")),
            "",
            "[destination.batch]\nmax_events = 2000\ntimeout = \"200ms\"\n",
        ));
    }
    let config = setup.config(&blocks);
    // `ulimit -n` in sh sets the soft and the hard limit: tailhook cannot
    // raise it past 1,024.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" run -c \"$1\"")
        .arg(env!("CARGO_BIN_EXE_tailhook"))
        .arg(&config);
    let tailhook = Tailhook::spawn(cmd);
    let want = n * DESTINATIONS.len();
    assert!(
        collector.wait_for_events_while_arriving(want, STALL, LIMIT),
        "got {} of {want}:\n{}",
        collector.event_count(),
        tailhook.stderr()
    );
    let exit = tailhook.terminate();
    assert!(exit.success(), "{}", exit.output());
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for b in collector.batches() {
        let seqs = per.entry(b.path.clone()).or_default();
        seqs.extend(b.events.iter().map(|e| seq_of(e)));
    }
    for d in DESTINATIONS {
        let mut got = per.remove(&format!("/{d}")).unwrap_or_default();
        got.sort_unstable();
        assert_eq!(got.len(), n, "{d}: every line exactly once");
        assert!(
            got.iter().copied().eq(0..n as u64),
            "{d}: every line exactly once"
        );
    }
    assert!(
        exit.stderr.contains("reading them in turns"),
        "{}",
        exit.stderr
    );
    for bad in ["os error 24", "ERROR", "cannot open file"] {
        assert!(!exit.stderr.contains(bad), "{bad}:\n{}", exit.stderr);
    }
}
