//! Following files through rotation: rename-and-create, copytruncate, and a
//! glob that also matches the rotated name; lines finished after a rename.
//! Every event arrives exactly once.

mod support;

use std::time::Duration;

use support::collector::{fluentd, Collector};
use support::process::Tailhook;
use support::setup::{append, destination, hits, seq_of, wallarm_hits, Setup};

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

/// A rotated file is closed once it has been idle this long (short, so that
/// tests can see it closed).
const ROTATE_WAIT: &str = "rotate_wait = \"1s\"";

fn start(glob: &str) -> (Setup, Collector, Tailhook) {
    start_with(glob, ROTATE_WAIT)
}

fn start_with(glob: &str, source_extra: &str) -> (Setup, Collector, Tailhook) {
    let setup = Setup::new();
    let collector = fluentd();
    let config = setup.config(&format!(
        "{}{}",
        setup.source("app", glob, source_extra),
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

#[test]
fn lines_finished_after_a_rename_are_read_from_the_rotated_file() {
    // logrotate `create` and kubelet: the file is renamed away while its
    // writer is in the middle of a line; the writer finishes that line, and
    // writes more, through the handle it has, before it reopens the path.
    let (setup, collector, tailhook) = start_with("app.log", "rotate_wait = \"5m\"");
    let log = setup.log("app.log");
    let mut writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let lines: Vec<String> = wallarm_hits(0, 12).into_iter().map(|l| l + "\n").collect();
    let write =
        |w: &mut std::fs::File, s: &str| std::io::Write::write_all(w, s.as_bytes()).unwrap();
    for l in &lines[..10] {
        write(&mut writer, l);
    }
    let (head, rest) = lines[10].split_at(lines[10].len() - 20);
    write(&mut writer, head);
    assert!(collector.wait_for_events(10, WAIT));
    std::fs::rename(&log, setup.log("app.log.1")).unwrap();
    assert!(
        tailhook.wait_for_log("file was rotated away or deleted", WAIT),
        "{}",
        tailhook.stderr()
    );
    // Late: after tailhook knows the file is rotated away.
    write(&mut writer, rest);
    write(&mut writer, &lines[11]);
    assert!(
        collector.wait_for_events(12, WAIT),
        "got {}:\n{}",
        collector.event_count(),
        tailhook.stderr()
    );
    // The new file is followed at once, beside the rotated one.
    append(&log, &wallarm_hits(12, 5));
    assert!(collector.wait_for_events(17, WAIT));
    let exit = tailhook.terminate();
    assert!(exit.success(), "{}", exit.output());
    assert_eq!(seqs(&collector), (0..17).collect::<Vec<_>>());
    assert!(
        !exit.stderr.contains("invalid line"),
        "no line was torn:\n{}",
        exit.stderr
    );
}
