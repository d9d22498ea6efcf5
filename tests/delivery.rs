//! Delivery end to end: the real binary tails real files and posts batches to
//! the collector emulators on 127.0.0.1. What is checked is what a user sees:
//! the events a collector accepted (count, order, exact bytes), how they were
//! batched, the request method and headers, and the exit code.

mod support;

use support::check::{assert_same_events, show, stop, wait_events};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::value::RawValue;
use support::collector::{fluentd, Batch, Collector, Options};
use support::process::{run_cmd, Tailhook};
use support::setup::{append, bytes_of, destination, hits, seq_of, Setup};

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(30);

/// The Wallarm samples shipped with the project.
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sample-events.ndjson");

// ---- helpers ------------------------------------------------------------------

/// A JSON batch body is exactly `[` + the events joined by `,` + `]`.
fn assert_json_body(batch: &Batch) {
    let mut expected = b"[".to_vec();
    expected.extend_from_slice(&batch.events.join(&b","[..]));
    expected.push(b']');
    assert_eq!(
        show(&batch.body),
        show(&expected),
        "the body is not the events joined into a JSON array"
    );
    assert_eq!(batch.body, expected);
}

fn batch_sizes(batches: &[Batch]) -> Vec<usize> {
    batches.iter().map(|b| b.events.len()).collect()
}

/// The events of each line of a file in the Wallarm shapes, as tailhook must
/// forward them: an object line as it is; each element of an array line as
/// it is (for one element, the text inside the brackets, trimmed).
fn expected_events_of(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('{') {
            out.push(line.as_bytes().to_vec());
            continue;
        }
        assert!(line.starts_with('[') && line.ends_with(']'), "{line}");
        let elements: Vec<&RawValue> = serde_json::from_str(line).expect("sample line is JSON");
        if elements.len() == 1 {
            out.push(line[1..line.len() - 1].trim().as_bytes().to_vec());
        } else {
            out.extend(elements.iter().map(|e| e.get().as_bytes().to_vec()));
        }
    }
    out
}

fn sample_events() -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(SAMPLES).expect("read examples/sample-events.ndjson");
    let events = expected_events_of(&text);
    assert_eq!(events.len(), 15, "examples/sample-events.ndjson changed");
    events
}

fn copy_samples(to: &Path) {
    std::fs::copy(SAMPLES, to).expect("copy the sample events");
}

fn contains(event: &[u8], needle: &str) -> bool {
    String::from_utf8_lossy(event).contains(needle)
}

fn is_test_message(event: &[u8]) -> bool {
    contains(event, "\"summary\":\"[Test Message]")
}

// ---- 1. exact count, order and bytes across many batches ----------------------

#[test]
fn five_thousand_events_arrive_exactly_in_order_with_one_request_in_flight() {
    let setup = Setup::new();
    let lines = hits(0, 5000, 200);
    append(&setup.log("events.ndjson"), &lines);
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .extra("[destination.batch]\nmax_events = 100\ntimeout = \"100ms\"\n")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, lines.len());
    stop(tailhook);

    assert_same_events(&collector.events(), &bytes_of(&lines), "collector");
    let batches = collector.batches();
    for (i, b) in batches.iter().enumerate() {
        assert!(
            (1..=100).contains(&b.events.len()),
            "batch #{i} holds {} events (max_events = 100)",
            b.events.len()
        );
        assert_eq!(b.method, "POST");
        assert_eq!(b.path, "/wallarm.events");
        assert_json_body(b);
    }
}

#[test]
fn five_thousand_events_with_concurrent_requests_arrive_once_each() {
    let setup = Setup::new();
    let lines = hits(0, 5000, 200);
    append(&setup.log("events.ndjson"), &lines);
    let collector = fluentd();
    // Default concurrency (2): batches may overtake each other.
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("[destination.batch]\nmax_events = 100\ntimeout = \"100ms\"\n")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, lines.len());
    stop(tailhook);

    let expected = bytes_of(&lines);
    // No loss, no duplicate: sorted by seq, the events are exactly the lines.
    let mut received = collector.events();
    received.sort_by_key(|e| seq_of(e));
    assert_same_events(&received, &expected, "collector, sorted by seq");
    // Within a batch, the file's order: each batch is a run of consecutive lines.
    for (i, b) in collector.batches().iter().enumerate() {
        assert!(
            (1..=100).contains(&b.events.len()),
            "batch #{i} holds {} events (max_events = 100)",
            b.events.len()
        );
        let first = seq_of(&b.events[0]) as usize;
        assert_same_events(
            &b.events,
            &expected[first..(first + b.events.len()).min(expected.len())],
            &format!("batch #{i}, from seq {first}"),
        );
        assert_json_body(b);
    }
}

// ---- 2. each batch bound -------------------------------------------------------

#[test]
fn max_events_fills_every_batch_but_the_last() {
    let setup = Setup::new();
    let lines = hits(0, 250, 100);
    append(&setup.log("events.ndjson"), &lines);
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .extra("[destination.batch]\nmax_events = 100\ntimeout = \"100ms\"\n")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, lines.len());
    stop(tailhook);

    let batches = collector.batches();
    assert_eq!(batch_sizes(&batches), [100, 100, 50]);
    assert_same_events(&collector.events(), &bytes_of(&lines), "collector");
    batches.iter().for_each(assert_json_body);
}

#[test]
fn max_bytes_bounds_every_body_and_a_larger_event_goes_alone() {
    const MAX: usize = 1000;
    let setup = Setup::new();
    // 100-byte events (9 fit in 1000 bytes: 1 + 9 * 101 = 910), one event of
    // 3000 bytes (over max_bytes), then one of 998 bytes whose body,
    // `[` + event + `]`, is exactly max_bytes.
    let mut lines = hits(0, 60, 100);
    lines.extend(hits(60, 1, 3000));
    lines.extend(hits(61, 40, 100));
    lines.extend(hits(101, 1, MAX - 2));
    lines.extend(hits(102, 20, 100));
    assert_eq!(lines[60].len(), 3000);
    assert_eq!(lines[101].len(), MAX - 2);
    append(&setup.log("events.ndjson"), &lines);
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .extra(&format!(
            "[destination.batch]\nmax_bytes = {MAX}\ntimeout = \"100ms\"\n"
        ))
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, lines.len());
    stop(tailhook);

    assert_same_events(&collector.events(), &bytes_of(&lines), "collector");
    let batches = collector.batches();
    for (i, b) in batches.iter().enumerate() {
        assert_json_body(b);
        if b.events.iter().any(|e| e.len() > MAX) {
            assert_eq!(
                b.events.len(),
                1,
                "batch #{i}: an event over max_bytes must go alone, got {} events",
                b.events.len()
            );
        } else {
            assert!(
                b.body.len() <= MAX,
                "batch #{i}: body of {} bytes, over max_bytes = {MAX}",
                b.body.len()
            );
        }
        // A batch is cut only when the next event would not fit.
        if let Some(next) = batches.get(i + 1) {
            assert!(
                b.body.len() + 1 + next.events[0].len() > MAX,
                "batch #{i} ({} bytes) was cut although the next event ({} bytes) fitted",
                b.body.len(),
                next.events[0].len()
            );
        }
    }
    let big = batches
        .iter()
        .find(|b| b.events.iter().any(|e| e == lines[60].as_bytes()))
        .expect("the 3000-byte event");
    assert_eq!(big.events.len(), 1);
    let exact = batches
        .iter()
        .find(|b| b.events.iter().any(|e| e == lines[101].as_bytes()))
        .expect("the 998-byte event");
    assert_eq!((exact.events.len(), exact.body.len()), (1, MAX));
}

#[test]
fn batch_timeout_sends_a_small_batch() {
    let setup = Setup::new();
    let lines = hits(0, 3, 150);
    append(&setup.log("events.ndjson"), &lines);
    let collector = fluentd();
    // Default max_events (500) and max_bytes: only the timeout can send these.
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 3);
    // Checked before SIGTERM, which would flush a batch by itself.
    let batches = collector.batches();
    assert_eq!(batch_sizes(&batches), [3]);
    assert_same_events(&batches[0].events, &bytes_of(&lines), "the batch");
    assert_json_body(&batches[0]);
    stop(tailhook);
    assert_eq!(collector.event_count(), 3);
}

// ---- 3. method, headers and body format ----------------------------------------

#[test]
fn put_with_headers_from_the_environment() {
    const TOKEN: &str = "s3cr3t-t0ken-4-test";
    let setup = Setup::new();
    let lines = hits(0, 20, 120);
    append(&setup.log("events.ndjson"), &lines);
    let collector = fluentd();
    let cfg = setup.builder().file_source("w", "*.ndjson").destination("fluentd", &collector.url("/wallarm.events?source=tailhook")).extra("method = \"PUT\"\nheaders = { Authorization = \"Bearer ${TEST_TOKEN}\", \"X-Extra\" = \"v\" }").write();
    let tailhook = Tailhook::start_with_env(&cfg, &[("TEST_TOKEN", TOKEN)]);
    wait_events(&collector, &tailhook, lines.len());
    let exit = stop(tailhook);

    assert_same_events(&collector.events(), &bytes_of(&lines), "collector");
    for b in collector.batches() {
        assert_eq!(b.method, "PUT");
        assert_eq!(b.path, "/wallarm.events");
        assert_eq!(b.query.as_deref(), Some("source=tailhook"));
        assert_eq!(b.header("authorization"), Some(&*format!("Bearer {TOKEN}")));
        assert_eq!(b.header("x-extra"), Some("v"));
        assert_eq!(b.header("content-type"), Some("application/json"));
        assert_json_body(&b);
    }
    // A header value is a secret: never logged.
    assert!(
        !exit.stderr.contains(TOKEN) && !exit.stdout.contains(TOKEN),
        "the token appears in the output\n{}",
        exit.output()
    );
}

#[test]
fn ndjson_format_sends_one_event_a_line() {
    let setup = Setup::new();
    let lines = hits(0, 30, 120);
    append(&setup.log("events.ndjson"), &lines);
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("format = \"ndjson\"\nconcurrency = 1")
        .extra("[destination.batch]\nmax_events = 10\ntimeout = \"100ms\"\n")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, lines.len());
    stop(tailhook);

    assert_same_events(&collector.events(), &bytes_of(&lines), "collector");
    let batches = collector.batches();
    assert_eq!(batch_sizes(&batches), [10, 10, 10]);
    for b in &batches {
        assert_eq!(b.header("content-type"), Some("application/x-ndjson"));
        let mut expected = Vec::new();
        for e in &b.events {
            expected.extend_from_slice(e);
            expected.push(b'\n');
        }
        assert_eq!(show(&b.body), show(&expected));
        assert_eq!(b.body, expected);
    }
}

/// `compression = "gzip"`: each body goes gzipped with `Content-Encoding:
/// gzip`, the emulator decodes it as Fluentd `in_http` does, and the events
/// arrive byte for byte; `tailhook test` sends its message gzipped too.
#[test]
fn gzip_compression_delivers_the_same_events() {
    let setup = Setup::new();
    let lines = hits(0, 40, 600);
    append(&setup.log("events.ndjson"), &lines);
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("compression = \"gzip\"\nconcurrency = 1")
        .extra("[destination.batch]\nmax_events = 20\ntimeout = \"100ms\"\n")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, lines.len());
    stop(tailhook);
    assert_same_events(&collector.events(), &bytes_of(&lines), "collector");
    let batches = collector.batches();
    assert_eq!(batch_sizes(&batches), [20, 20]);
    for b in &batches {
        assert_eq!(b.header("content-encoding"), Some("gzip"));
        assert_eq!(b.header("content-type"), Some("application/json"));
    }
    assert!(
        collector.violations().is_empty(),
        "{:?}",
        collector.violations()
    );

    let exit = run_cmd(&["test", "-c", &cfg.display().to_string()], &[]);
    assert!(exit.success(), "{}", exit.output());
    let last = collector.batches().pop().unwrap();
    assert_eq!(last.header("content-encoding"), Some("gzip"));
    assert!(String::from_utf8_lossy(&last.events[0]).contains("[Test Message]"));
}

// ---- 4. the file source --------------------------------------------------------

#[test]
fn files_that_appear_after_start_are_picked_up() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    // The directory is empty at start.
    let tailhook = Tailhook::start(&cfg);
    let first = hits(0, 5, 120);
    append(&setup.log("first.ndjson"), &first);
    wait_events(&collector, &tailhook, 5);
    // Long after the first scan: a second file, and one the glob does not match.
    append(&setup.log("not-matched.log"), &hits(900, 3, 120));
    let second = hits(100, 7, 120);
    append(&setup.log("second.ndjson"), &second);
    wait_events(&collector, &tailhook, 12);
    stop(tailhook);

    let mut expected = bytes_of(&first);
    expected.extend(bytes_of(&second));
    assert_same_events(&collector.events(), &expected, "collector");
}

#[test]
fn twenty_files_at_once_all_arrive_in_per_file_order() {
    const FILES: usize = 20;
    const PER_FILE: usize = 50;
    let setup = Setup::new();
    let mut expected: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
    for f in 0..FILES {
        let lines = hits(f * 1000, PER_FILE, 150);
        append(&setup.log(&format!("node-{f:02}.ndjson")), &lines);
        expected.insert(f, bytes_of(&lines));
    }
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .extra("[destination.batch]\nmax_events = 100\ntimeout = \"100ms\"\n")
        .write();
    let tailhook = Tailhook::start(&cfg);
    // Half of the files grow while tailhook runs.
    for f in 0..FILES / 2 {
        let more = hits(f * 1000 + PER_FILE, PER_FILE, 150);
        append(&setup.log(&format!("node-{f:02}.ndjson")), &more);
        expected.get_mut(&f).unwrap().extend(bytes_of(&more));
    }
    let total = FILES * PER_FILE + FILES / 2 * PER_FILE;
    wait_events(&collector, &tailhook, total);
    stop(tailhook);

    let received = collector.events();
    assert_eq!(received.len(), total);
    for (f, lines) in &expected {
        let of_file: Vec<Vec<u8>> = received
            .iter()
            .filter(|e| seq_of(e) as usize / 1000 == *f)
            .cloned()
            .collect();
        assert_same_events(&of_file, lines, &format!("file node-{f:02}.ndjson"));
    }
    for (i, b) in collector.batches().iter().enumerate() {
        assert!(b.events.len() <= 100, "batch #{i}: {}", b.events.len());
    }
}

#[test]
fn read_from_end_skips_what_files_held_at_first_start() {
    let setup = Setup::new();
    let path = setup.log("events.ndjson");
    append(&path, &hits(0, 10, 120));
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .extra("read_from = \"end\"")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    assert!(
        tailhook.wait_for_log("following file", WAIT),
        "no `following file` log line\n{}",
        tailhook.stderr()
    );
    let appended = hits(10, 5, 120);
    append(&path, &appended);
    wait_events(&collector, &tailhook, 5);
    // A file that appears after start is read from its beginning.
    let later = hits(100, 4, 120);
    append(&setup.log("later.ndjson"), &later);
    wait_events(&collector, &tailhook, 9);
    stop(tailhook);
    let mut expected = bytes_of(&appended);
    expected.extend(bytes_of(&later));
    assert_same_events(&collector.events(), &expected, "first run");

    // Only the first start skips: what was written while tailhook was
    // stopped is delivered after a restart, and nothing is sent twice.
    let while_stopped = hits(15, 3, 120);
    append(&path, &while_stopped);
    let later_while_stopped = hits(104, 2, 120);
    append(&setup.log("later.ndjson"), &later_while_stopped);
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 14);
    stop(tailhook);
    expected.extend(bytes_of(&while_stopped));
    expected.extend(bytes_of(&later_while_stopped));
    assert_same_events(&collector.events(), &expected, "after a restart");
}

#[test]
fn read_from_end_never_forwards_half_a_line() {
    let setup = Setup::new();
    let path = setup.log("events.ndjson");
    append(&path, &hits(0, 3, 120));
    // At start, the writer is in the middle of a line.
    let line = hits(3, 1, 200).remove(0);
    let (head, tail) = line.split_at(90);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(head.as_bytes()).unwrap();
    }
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .extra("read_from = \"end\"")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    assert!(
        tailhook.wait_for_log("following file", WAIT),
        "no `following file` log line\n{}",
        tailhook.stderr()
    );
    let next = hits(4, 1, 120);
    append(&path, &[tail.to_string(), next[0].clone()]);
    wait_events(&collector, &tailhook, 2);
    stop(tailhook);
    // The line being written at start is delivered whole (it was not
    // complete, so the file did not "hold" it yet) — never its tail alone,
    // wrapped as an invalid line.
    let mut expected = vec![line.into_bytes()];
    expected.extend(bytes_of(&next));
    assert_same_events(&collector.events(), &expected, "collector");
}

#[test]
fn a_line_is_sent_only_once_its_newline_arrives() {
    let setup = Setup::new();
    let a = setup.log("a.ndjson");
    let first = hits(0, 1, 120);
    append(&a, &first);
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 1);

    // Half a line, no newline.
    let line = hits(1, 1, 200).remove(0);
    let (head, tail) = line.split_at(90);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
        f.write_all(head.as_bytes()).unwrap();
    }
    // A complete event in another file, written after the half line: once it
    // has arrived, tailhook has read `a.ndjson` past the half line too.
    let marker = hits(500, 1, 120);
    append(&setup.log("b.ndjson"), &marker);
    wait_events(&collector, &tailhook, 2);
    let mut expected = bytes_of(&first);
    expected.extend(bytes_of(&marker));
    assert_same_events(&collector.events(), &expected, "before the newline");

    // The rest of the line and its newline.
    append(&a, &[tail.to_string()]);
    wait_events(&collector, &tailhook, 3);
    stop(tailhook);
    expected.push(line.into_bytes());
    assert_same_events(&collector.events(), &expected, "after the newline");
}

#[test]
fn excluded_files_are_left_alone() {
    let setup = Setup::new();
    let keep = hits(0, 5, 120);
    append(&setup.log("keep.ndjson"), &keep);
    append(&setup.log("skip-me.ndjson"), &hits(900, 5, 120));
    let collector = fluentd();
    let exclude = format!(
        "exclude = [{:?}]",
        setup.log("skip-*.ndjson").display().to_string()
    );
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .extra(&exclude)
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 5);
    // The excluded file grows, another excluded file appears, then a marker
    // in a new included file: once it arrives, the others were scanned too.
    append(&setup.log("skip-me.ndjson"), &hits(905, 5, 120));
    append(&setup.log("skip-new.ndjson"), &hits(950, 5, 120));
    // (Named to sort after the others: a scan reads files in path order.)
    let marker = hits(100, 1, 120);
    append(&setup.log("zz-marker.ndjson"), &marker);
    wait_events(&collector, &tailhook, 6);
    stop(tailhook);

    let mut expected = bytes_of(&keep);
    expected.extend(bytes_of(&marker));
    assert_same_events(&collector.events(), &expected, "collector");
}

#[test]
fn exclude_pattern_without_a_directory_matches_file_names() {
    let setup = Setup::new();
    let current = hits(0, 3, 120);
    append(&setup.log("current.ndjson"), &current);
    append(&setup.log("events.old.ndjson"), &hits(900, 3, 120));
    // Read after the excluded file in the same scan (path order).
    let marker = hits(100, 1, 120);
    append(&setup.log("zz-marker.ndjson"), &marker);
    let collector = fluentd();
    // As written for Vector (`exclude`) or Fluent Bit (`Exclude_Path`), where
    // `*` also matches `/` and such a pattern excludes by file name.
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .extra("exclude = [\"*.old.ndjson\"]")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 4);
    stop(tailhook);
    let mut expected = bytes_of(&current);
    expected.extend(bytes_of(&marker));
    assert_same_events(&collector.events(), &expected, "collector");
}

#[test]
fn relative_include_pattern_finds_files_in_the_working_directory() {
    let setup = Setup::new();
    let lines = hits(0, 3, 120);
    append(&setup.log("events.ndjson"), &lines);
    let collector = fluentd();
    let cfg = setup.config(&format!(
        "[[source]]\nname = \"w\"\ntype = \"file\"\ninclude = [\"*.ndjson\"]\npoll_interval = \"100ms\"\n\n{}",
        destination(
            "fluentd",
            &collector.url("/wallarm.events"),
            "concurrency = 1",
            ""
        )
    ));
    let mut cmd = support::process::bin();
    cmd.arg("run").arg("-c").arg(&cfg).current_dir(&setup.logs);
    let tailhook = Tailhook::spawn(cmd);
    wait_events(&collector, &tailhook, 3);
    stop(tailhook);
    assert_same_events(&collector.events(), &bytes_of(&lines), "collector");
}

#[test]
fn blank_lines_are_skipped() {
    let setup = Setup::new();
    let a = r#"{"seq":1,"object_type":"hit"}"#;
    let b = r#"{"seq":2,"object_type":"hit"}"#;
    let c = r#"{"seq":3,"object_type":"hit"}"#;
    // Also an empty array (no event) and a line ending in CRLF.
    let text = format!("\n{a}\n   \n\t\n\r\n{b}\r\n\n[]\n \t \n{c}\n\n");
    std::fs::write(setup.log("events.ndjson"), text).unwrap();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 3);
    let exit = stop(tailhook);

    // Nothing else: no wrapped "invalid line" event, no warning.
    assert_same_events(
        &collector.events(),
        &[a, b, c].map(|s| s.as_bytes().to_vec()),
        "collector",
    );
    assert!(!exit.stderr.contains("invalid line"), "{}", exit.stderr);
}

#[test]
fn an_array_line_is_one_event_per_element_byte_for_byte() {
    let setup = Setup::new();
    // Keys out of order, numbers in unusual notation, escapes and non-ASCII:
    // none of it may be rewritten.
    let e1 = r#"{"z":1,"a":1.50,"big":123456789012345678901234567890,"exp":1E+2,"s":"caf\u00e9 é \"q\""}"#;
    let e2 = r#"{"object_type":"hit","nested":{"x":[1,2,{"y":null}],"t":true}}"#;
    let e3 = r#"{"id":3}"#;
    let line = format!("[ {e1} ,\t{e2},{e3}]");
    std::fs::write(setup.log("events.ndjson"), format!("{line}\n[{e3}]\n")).unwrap();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 4);
    stop(tailhook);

    assert_same_events(
        &collector.events(),
        &[e1, e2, e3, e3].map(|s| s.as_bytes().to_vec()),
        "collector",
    );
}

#[test]
fn an_event_longer_than_one_read_arrives_intact() {
    let setup = Setup::new();
    // 700 KB: several reads of the file, under max_line_bytes (1 MiB).
    let mut lines = hits(0, 2, 120);
    lines.extend(hits(2, 1, 700_000));
    lines.extend(hits(3, 2, 120));
    append(&setup.log("events.ndjson"), &lines);
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, lines.len());
    stop(tailhook);
    assert_same_events(&collector.events(), &bytes_of(&lines), "collector");
    collector.batches().iter().for_each(assert_json_body);
}

#[test]
fn wallarm_sample_events_arrive_byte_for_byte() {
    let setup = Setup::new();
    copy_samples(&setup.log("wallarm.ndjson"));
    let expected = sample_events();
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, expected.len());
    stop(tailhook);

    assert_same_events(&collector.events(), &expected, "collector");
    collector.batches().iter().for_each(assert_json_body);
}

// ---- 5. event selection --------------------------------------------------------

/// Runs the samples through a destination with `events = <list>` and returns
/// what the collector accepted, after a clean shutdown.
fn select_samples(events: &str, expect: usize) -> Vec<Vec<u8>> {
    let setup = Setup::new();
    copy_samples(&setup.log("wallarm.ndjson"));
    let collector = fluentd();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra(&format!("concurrency = 1\nevents = {events}"))
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, expect);
    stop(tailhook);
    collector.events()
}

#[test]
fn selection_of_hits_and_high_vulnerabilities() {
    let expected: Vec<Vec<u8>> = sample_events()
        .into_iter()
        .filter(|e| {
            contains(e, r#""object_type":"hit""#)
                || contains(e, r#""threat":"High""#)
                || is_test_message(e)
        })
        .collect();
    // The flat hit, the test message, the current-shape hit and vulnerability,
    // the hit object line, and the high one of the two-element line.
    assert_eq!(expected.len(), 6);
    let received = select_samples(r#"["hit", "vulnerability:high"]"#, expected.len());
    assert_same_events(&received, &expected, "collector");
}

#[test]
fn selection_of_a_raw_notification_type() {
    let expected: Vec<Vec<u8>> = sample_events()
        .into_iter()
        .filter(|e| contains(e, r#""notification_type":"ip_blocked""#) || is_test_message(e))
        .collect();
    assert_eq!(expected.len(), 2);
    let received = select_samples(r#"["notification:ip_blocked"]"#, expected.len());
    assert_same_events(&received, &expected, "collector");
}

#[test]
fn an_empty_selection_sends_only_the_test_message_and_check_warns() {
    let expected: Vec<Vec<u8>> = sample_events()
        .into_iter()
        .filter(|e| is_test_message(e))
        .collect();
    assert_eq!(expected.len(), 1);
    let received = select_samples("[]", 1);
    assert_same_events(&received, &expected, "collector");

    let setup = Setup::new();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", "http://127.0.0.1:9/wallarm.events")
        .extra("events = []")
        .write();
    let check = run_cmd(&["check", "-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(check.code, Some(0), "{}", check.output());
    assert!(
        check
            .stderr
            .lines()
            .any(|l| l.contains("warning") && l.contains("fluentd") && l.contains("empty")),
        "`tailhook check` does not warn about the empty events list\n{}",
        check.output()
    );
}

// ---- 6. two destinations -------------------------------------------------------

#[test]
fn two_destinations_each_receive_everything_independently() {
    let setup = Setup::new();
    let path = setup.log("events.ndjson");
    copy_samples(&path);
    let lines = hits(0, 300, 150);
    append(&path, &lines);
    let mut expected = sample_events();
    expected.extend(bytes_of(&lines));

    let fluentd = fluentd();
    let logstash = Collector::start(Options::logstash());
    // Logstash answers 429 (queue full) until told otherwise.
    logstash.set_busy(true);
    let batch = "[destination.batch]\nmax_events = 50\ntimeout = \"100ms\"\n";
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("fluentd", &fluentd.url("/wallarm.events"))
        .extra("concurrency = 1")
        .extra(batch)
        .destination("logstash", &logstash.url("/"))
        .extra("concurrency = 1")
        .extra(batch)
        .write();
    let tailhook = Tailhook::start(&cfg);
    // A busy Logstash does not hold Fluentd back.
    wait_events(&fluentd, &tailhook, expected.len());
    assert!(
        logstash.wait_for_requests(1, WAIT),
        "tailhook never tried Logstash"
    );
    assert_eq!(logstash.event_count(), 0);
    logstash.set_busy(false);
    wait_events(&logstash, &tailhook, expected.len());
    stop(tailhook);

    assert_same_events(&fluentd.events(), &expected, "fluentd");
    assert_same_events(&logstash.events(), &expected, "logstash");
    assert!(logstash.statuses().contains(&429));
    for b in fluentd.batches().iter().chain(logstash.batches().iter()) {
        assert!(b.events.len() <= 50);
        assert_json_body(b);
    }
}
