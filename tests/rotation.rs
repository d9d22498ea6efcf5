//! Following files through rotation: rename-and-create, copytruncate, and a
//! glob that also matches the rotated name. Every event arrives exactly once.

mod support;

use std::time::Duration;

use support::collector::{Collector, Options};
use support::process::Tailhook;
use support::setup::{append, destination, hits, seq_of, Setup};

const WAIT: Duration = Duration::from_secs(30);

fn seqs(c: &Collector) -> Vec<u64> {
    c.events().iter().map(|e| seq_of(e)).collect()
}

/// The paths in a destination's checkpoint file.
fn checkpointed(setup: &Setup) -> Vec<String> {
    let v = setup.read_checkpoint("fluentd").expect("checkpoint saved");
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

fn start(glob: &str) -> (Setup, Collector, Tailhook) {
    let setup = Setup::new();
    let collector = Collector::start(Options::fluentd());
    let config = setup.config(&format!(
        "{}{}",
        setup.source("app", glob, ""),
        destination("fluentd", &collector.url("/app"), "concurrency = 1", "")
    ));
    let tailhook = Tailhook::start(&config);
    (setup, collector, tailhook)
}

#[test]
fn rename_and_create_reads_the_old_file_to_its_end_then_the_new_one() {
    let (setup, collector, tailhook) = start("app.log");
    let log = setup.log("app.log");
    append(&log, &hits(0, 100, 200));
    assert!(collector.wait_for_events(100, WAIT));
    // Lines written just before the rename are still read from the old file.
    append(&log, &hits(100, 50, 200));
    std::fs::rename(&log, setup.log("app.log.1")).unwrap();
    append(&log, &hits(150, 100, 200));
    assert!(
        collector.wait_for_events(250, WAIT),
        "got {}",
        collector.event_count()
    );
    assert!(tailhook.wait_for_log("finished a rotated or deleted file", WAIT));
    let exit = tailhook.terminate();
    assert!(exit.success(), "{}", exit.output());
    assert_eq!(seqs(&collector), (0..250).collect::<Vec<_>>());
    // The rotated file is forgotten: checkpoints do not grow with rotations.
    assert_eq!(checkpointed(&setup), [log.display().to_string()]);
}

#[test]
fn a_glob_matching_the_rotated_name_does_not_read_it_twice() {
    let (setup, collector, tailhook) = start("app.log*");
    let log = setup.log("app.log");
    append(&log, &hits(0, 100, 200));
    assert!(collector.wait_for_events(100, WAIT));
    std::fs::rename(&log, setup.log("app.log.1")).unwrap();
    append(&log, &hits(100, 100, 200));
    assert!(collector.wait_for_events(200, WAIT));
    // A marker in the new file: once it arrives, the rotated file has been seen again by every scan.
    append(&log, &hits(200, 1, 200));
    assert!(collector.wait_for_events(201, WAIT));
    let exit = tailhook.terminate();
    assert!(exit.success(), "{}", exit.output());
    assert_eq!(seqs(&collector), (0..201).collect::<Vec<_>>());
}

#[test]
fn copytruncate_restarts_at_zero_without_resending() {
    let (setup, collector, tailhook) = start("app.log");
    let log = setup.log("app.log");
    append(&log, &hits(0, 100, 200));
    assert!(collector.wait_for_events(100, WAIT));
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
    append(&log, &hits(100, 30, 200));
    assert!(collector.wait_for_events(130, WAIT));
    let exit = tailhook.terminate();
    assert!(exit.success(), "{}", exit.output());
    assert_eq!(seqs(&collector), (0..130).collect::<Vec<_>>());
}

#[test]
fn a_deleted_file_is_read_to_its_end() {
    let (setup, collector, tailhook) = start("*.log");
    let log = setup.log("a.log");
    append(&log, &hits(0, 10, 200));
    assert!(collector.wait_for_events(10, WAIT));
    // The last line has no newline: once the file is gone, it is taken as it is.
    let last = hits(10, 1, 200).remove(0);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, last.as_bytes()))
        .unwrap();
    std::fs::remove_file(&log).unwrap();
    assert!(
        collector.wait_for_events(11, WAIT),
        "got {}",
        collector.event_count()
    );
    assert!(tailhook.wait_for_log("finished a rotated or deleted file", WAIT));
    let exit = tailhook.terminate();
    assert!(exit.success(), "{}", exit.output());
    assert_eq!(seqs(&collector), (0..11).collect::<Vec<_>>());
    assert!(checkpointed(&setup).is_empty());
}

#[test]
fn copytruncate_with_the_copy_followed_reads_each_line_once() {
    let (setup, collector, tailhook) = start("app.log*");
    let log = setup.log("app.log");
    append(&log, &hits(0, 100, 200));
    assert!(collector.wait_for_events(100, WAIT));
    // Lines tailhook may not have read yet when the file is copied and truncated.
    append(&log, &hits(100, 50, 200));
    std::fs::copy(&log, setup.log("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &hits(150, 30, 200));
    assert!(
        collector.wait_for_events(180, WAIT),
        "got {}",
        collector.event_count()
    );
    // A marker: once it arrives, the copy has been seen by the scans since.
    append(&log, &hits(180, 1, 200));
    assert!(collector.wait_for_events(181, WAIT));
    let exit = tailhook.terminate();
    assert!(exit.success(), "{}", exit.output());
    let mut got = seqs(&collector);
    got.sort_unstable();
    assert_eq!(got, (0..181).collect::<Vec<_>>(), "{}", exit.stderr);
}
