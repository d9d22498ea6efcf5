//! A collector that refuses a body as too large (413: Fluentd's
//! `body_size_limit`, Logstash's `max_content_length`, a proxy's limit):
//! the batch is split in halves and each part sent, down to single events;
//! only a single event refused with 413 goes to the dead-letter file, and
//! the checkpoint moves past the batch once every part is delivered or
//! dead-lettered; each part carries its own `X-Tailhook-Batch-Id`, the
//! batch's id and the events it holds. `dead_letter_on = [413]`
//! dead-letters the whole batch.
//!
//! Checked as a user sees it: the events the collector accepted (bytes,
//! order, body sizes), the answers it gave, the dead-letter file, the
//! checkpoint, `/metrics` and the log.

mod support;

use std::time::Duration;

use support::check::{assert_same_events, stop, wait_events, wait_log};
use support::collector::{Collector, Options};
use support::metrics::{metrics_addr, wait_for_page};
use support::process::Tailhook;
use support::setup::{append, bytes_of, hits, Setup};

/// Upper bound of every wait; a healthy run takes a small part of it.
const WAIT: Duration = Duration::from_secs(30);

const DEST: &str = "fluentd";
const SPLIT: &str = "tailhook_destination_batches_split_total";
const SENT: &str = "tailhook_destination_events_sent_total";
const DEAD_LETTERED: &str = "tailhook_destination_events_dead_lettered_total";

/// A Fluentd `in_http` whose `body_size_limit` is `limit` bytes.
fn fluentd_limited(limit: usize) -> Collector {
    Collector::start(Options {
        body_limit: limit,
        ..Options::fluentd()
    })
}

/// One batch of up to 100 events at a time.
const ONE_BIG_BATCH: &str =
    "concurrency = 1\n[destination.batch]\nmax_events = 100\ntimeout = \"200ms\"\n";

fn dead_letters(setup: &Setup) -> Vec<u8> {
    match std::fs::read(setup.dead_letter(DEST)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read the dead-letter file: {e}"),
    }
}

/// 40 events of 200 bytes (a body of about 8 KB) to a collector that takes
/// at most 2,000 bytes: the batch is refused, split in halves and halves
/// again until each part fits. Every event arrives exactly once, in file
/// order, byte for byte; no body the collector took is over its limit;
/// nothing is dead-lettered; the log names the refused size once and
/// suggests a `batch.max_bytes` below it; the split counter counts the
/// splits; the checkpoint reaches the end of the file.
#[test]
fn a_413_splits_the_batch_until_every_part_fits() {
    let setup = Setup::new();
    let collector = fluentd_limited(2000);
    let lines = hits(0, 40, 200);
    let log = setup.log("a.ndjson");
    append(&log, &lines);
    let file_len = std::fs::metadata(&log).unwrap().len();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra(ONE_BIG_BATCH)
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = metrics_addr(&tailhook);

    wait_events(&collector, &tailhook, lines.len());
    assert!(
        setup
            .wait_checkpointed(DEST, &log, file_len, WAIT)
            .is_some(),
        "the checkpoint reaches the end of the file"
    );
    let d = ("destination", DEST);
    let page = wait_for_page(addr, &tailhook, WAIT, "every event sent", &[SENT], |p| {
        p.value(SENT, &[d]) == lines.len() as f64
    });
    // 40 events → 2 × 20 → 4 × 10 (about 2,010 bytes, still refused) →
    // 8 × 5: 1 + 2 + 4 splits; the 8 parts of 5 events are taken.
    assert_eq!(page.value(SPLIT, &[d]), 7.0, "{}", page.matching(SPLIT));
    assert_eq!(page.value(DEAD_LETTERED, &[d]), 0.0);

    let stderr = tailhook.stderr();
    let exit = stop(tailhook);
    assert_same_events(
        &collector.events(),
        &bytes_of(&lines),
        "every event once, in file order, byte for byte",
    );
    let batches = collector.batches();
    assert_eq!(batches.len(), 8, "eight parts of five events");
    for b in &batches {
        assert!(b.body.len() <= 2000, "a body of {} bytes", b.body.len());
        assert_eq!(b.events.len(), 5);
    }
    // Each part carries its own id: the batch's id and the events it holds.
    let seen = collector.header_of_each_request("x-tailhook-batch-id");
    let parent = seen[0].0.clone().expect("the batch carries an id");
    assert_eq!(parent.len(), 32, "{parent}");
    let parts: Vec<String> = batches
        .iter()
        .map(|b| b.header("x-tailhook-batch-id").unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..8)
        .map(|i| format!("{parent}:{}-{}", i * 5, i * 5 + 5))
        .collect();
    assert_eq!(parts, want);
    let statuses = collector.statuses();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 413).count(),
        7,
        "{statuses:?}"
    );
    assert!(dead_letters(&setup).is_empty(), "nothing is dead-lettered");

    let whole = 40 * 201 + 1;
    let told: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("refused a body of"))
        .collect();
    assert_eq!(told.len(), 1, "told once per destination:\n{stderr}");
    for words in [
        format!("refused a body of {whole} bytes as too large (HTTP 413"),
        "body_size_limit".to_string(),
        format!("Set batch.max_bytes below {whole}"),
        format!("batch.max_bytes = \"{}KiB\"", whole / 2 / 1024),
    ] {
        assert!(told[0].contains(&words), "{words:?} not in: {}", told[0]);
    }
    assert!(!exit.output().contains("panicked"));
}

/// One event larger than the collector's limit among small ones: the small
/// ones arrive, exactly once and in order; the large one, refused alone,
/// goes to the dead-letter file byte for byte; the log says so with its
/// size; the checkpoint moves past it to the end of the file.
#[test]
fn a_single_event_refused_with_413_is_dead_lettered_and_the_checkpoint_moves_on() {
    let setup = Setup::new();
    let collector = fluentd_limited(2000);
    let mut lines = hits(0, 6, 200);
    let big = hits(6, 1, 3000).remove(0);
    lines.push(big.clone());
    lines.extend(hits(7, 6, 200));
    let log = setup.log("a.ndjson");
    append(&log, &lines);
    let file_len = std::fs::metadata(&log).unwrap().len();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra(ONE_BIG_BATCH)
        .write();
    let tailhook = Tailhook::start(&cfg);

    assert!(
        setup
            .wait_checkpointed(DEST, &log, file_len, WAIT)
            .is_some(),
        "the checkpoint moves past the refused event to the end of the file"
    );
    wait_log(&tailhook, "refused a single event of");
    let exit = stop(tailhook);
    let small: Vec<String> = lines.iter().filter(|l| **l != big).cloned().collect();
    assert_same_events(
        &collector.events(),
        &bytes_of(&small),
        "every event but the large one, once, in order",
    );
    assert_eq!(
        dead_letters(&setup),
        format!("{big}\n").into_bytes(),
        "the large event, alone, byte for byte"
    );
    let big_body = big.len() + 2;
    assert!(
        exit.stderr.contains(&format!(
            "refused a single event of {big_body} bytes as too large (HTTP 413): it goes to the dead-letter file"
        )),
        "{}",
        exit.stderr
    );
}

/// `dead_letter_on = [413]`: the user asked for 413 to be dead-lettered, so
/// the whole batch is, without a split.
#[test]
fn dead_letter_on_413_dead_letters_the_whole_batch_unsplit() {
    let setup = Setup::new();
    let collector = fluentd_limited(2000);
    let lines = hits(0, 20, 200);
    let log = setup.log("a.ndjson");
    append(&log, &lines);
    let file_len = std::fs::metadata(&log).unwrap().len();
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra("dead_letter_on = [413]")
        .extra(ONE_BIG_BATCH)
        .write();
    let tailhook = Tailhook::start(&cfg);
    assert!(setup
        .wait_checkpointed(DEST, &log, file_len, WAIT)
        .is_some());
    let exit = stop(tailhook);
    assert_eq!(collector.event_count(), 0);
    assert_eq!(collector.statuses(), vec![413], "one request, not split");
    let want: Vec<u8> = lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    assert_eq!(dead_letters(&setup), want, "the whole batch, in order");
    assert!(!exit.stderr.contains("refused a body of"));
}
