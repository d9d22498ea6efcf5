//! What each collector answer does to a batch: 2xx delivered; 400, 415
//! and 422 (the events were refused) dead-lettered; 401, 403, 404, 407 and
//! everything else (the collector or its configuration is wrong for now)
//! retried until it is fixed, with the destination reported down and the
//! status, URL and what to check in the log; and `retry_on` /
//! `dead_letter_on`, which move statuses between the two. (413 splits the
//! batch: `tests/too_large.rs`.)
//!
//! Checked as a user sees it: the events a collector accepted (bytes,
//! order), the dead-letter file, `/metrics` and the log.

mod support;

use std::time::Duration;

use support::check::{stop, wait_events, wait_log};
use support::collector::fluentd;
use support::metrics::{metrics_addr, wait_for_page};
use support::process::Tailhook;
use support::setup::{append, bytes_of, hits, Setup};

/// Upper bound of every wait; a healthy run takes a small part of it.
const WAIT: Duration = Duration::from_secs(30);

const DEST: &str = "fluentd";
const UP: &str = "tailhook_destination_up";
const RESPONSES: &str = "tailhook_destination_responses_total";
const DEAD_LETTERED: &str = "tailhook_destination_events_dead_lettered_total";

/// One request at a time, five events a batch: which batch an answer hits
/// is known.
const ONE_AT_A_TIME: &str = "concurrency = 1";
const FIVE_A_BATCH: &str = "[destination.batch]\nmax_events = 5\ntimeout = \"100ms\"\n";

/// Lines as a dead-letter file holds them.
fn ndjson(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn dead_letters(setup: &Setup, dest: &str) -> String {
    match std::fs::read(setup.dead_letter(dest)) {
        Ok(b) => String::from_utf8(b).expect("dead letters are text"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("cannot read the dead-letter file: {e}"),
    }
}

// ---- 1. a collector that refuses the credentials ------------------------------

/// A rotated token: the collector answers 401 until the test "fixes" it.
/// Nothing is dead-lettered; the destination is down; the log names the
/// status, the URL (without the credentials in it) and what to check; once
/// the collector accepts, every event arrives exactly once, in order.
#[test]
fn a_401_is_retried_until_the_credentials_work_and_nothing_is_dead_lettered() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.respond_with_body(401, "invalid token");
    let lines = hits(0, 20, 200);
    append(&setup.log("a.ndjson"), &lines);
    let url = format!(
        "http://shipper:pw-91c3-secret@127.0.0.1:{}/wallarm.events",
        collector.port()
    );
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination(DEST, &url)
        .extra(ONE_AT_A_TIME)
        .extra(FIVE_A_BATCH)
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = metrics_addr(&tailhook);

    wait_log(&tailhook, "HTTP 401");
    let d = ("destination", DEST);
    let page = wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "the destination down after 401s, tried again",
        &[UP, RESPONSES],
        |p| p.get(UP, &[d]) == Some(0.0) && p.value(RESPONSES, &[d, ("status", "401")]) >= 2.0,
    );
    assert_eq!(page.value(DEAD_LETTERED, &[d]), 0.0);
    assert!(
        !setup.dead_letter(DEST).exists(),
        "nothing is dead-lettered"
    );
    assert_eq!(collector.event_count(), 0);
    let stderr = tailhook.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("HTTP 401"))
        .expect("the line was just seen");
    let shown_url = format!("http://127.0.0.1:{}/wallarm.events", collector.port());
    for words in [
        "delivery failed: HTTP 401 from ",
        shown_url.as_str(),
        "invalid token",
        "check the destination's `headers`",
        "the collector refuses the credentials",
        "retrying with backoff",
    ] {
        assert!(
            line.contains(words),
            "{words:?} not in the log line: {line}"
        );
    }
    assert!(
        !stderr.contains("pw-91c3-secret"),
        "a password was logged:\n{stderr}"
    );

    // The token is fixed.
    collector.clear_override();
    wait_events(&collector, &tailhook, lines.len());
    wait_log(&tailhook, "delivering again");
    let page = wait_for_page(addr, &tailhook, WAIT, "the destination up", &[UP], |p| {
        p.get(UP, &[d]) == Some(1.0)
    });
    assert_eq!(page.value(DEAD_LETTERED, &[d]), 0.0);
    let exit = stop(tailhook);
    assert!(!exit.output().contains("pw-91c3-secret"));
    assert_eq!(
        collector.events(),
        bytes_of(&lines),
        "every event once, in file order"
    );
    assert!(!setup.dead_letter(DEST).exists());
}

/// 403, 404 and 407 are retried like 401, each with what to check; none is
/// dead-lettered.
#[test]
fn a_403_404_or_407_is_retried_with_what_to_check() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.fail_next(&[403, 404, 407]);
    let lines = hits(0, 10, 200);
    append(&setup.log("a.ndjson"), &lines);
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra(ONE_AT_A_TIME)
        .extra(FIVE_A_BATCH)
        .write();
    // Each failed attempt is logged at debug, with the same words.
    let tailhook = Tailhook::start_with_env(&cfg, &[("RUST_LOG", "info,tailhook::sink=debug")]);
    wait_events(&collector, &tailhook, lines.len());
    let exit = stop(tailhook);
    assert_eq!(collector.statuses(), [403, 404, 407, 200, 200]);
    assert_eq!(collector.events(), bytes_of(&lines));
    assert!(
        !setup.dead_letter(DEST).exists(),
        "nothing is dead-lettered"
    );
    for words in [
        "HTTP 403 from",
        "the collector refuses the credentials",
        "HTTP 404 from",
        "check the URL path",
        "HTTP 407 from",
        "proxy authentication",
    ] {
        assert!(
            exit.stderr.contains(words),
            "{words:?} not logged:\n{}",
            exit.stderr
        );
    }
}

// ---- 2. statuses that say the events were refused ------------------------------

#[test]
fn a_400_415_or_422_still_dead_letters_the_batch() {
    let setup = Setup::new();
    let collector = fluentd();
    collector.fail_next(&[400, 415, 422]);
    let lines = hits(0, 20, 200);
    append(&setup.log("a.ndjson"), &lines);
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra(ONE_AT_A_TIME)
        .extra(FIVE_A_BATCH)
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&collector, &tailhook, 5);
    let exit = stop(tailhook);
    assert_eq!(
        collector.statuses(),
        [400, 415, 422, 200],
        "none is retried"
    );
    assert_eq!(collector.events(), bytes_of(&lines[15..]));
    assert_eq!(dead_letters(&setup, DEST), ndjson(&lines[..15]));
    for status in [400, 415, 422] {
        assert!(
            exit.stderr
                .contains(&format!("collector rejected a batch (HTTP {status})")),
            "{}",
            exit.stderr
        );
    }
}

// ---- 3. retry_on and dead_letter_on ---------------------------------------------

/// `dead_letter_on = [404]` with `retry_on = ["4xx"]`: the code beats the
/// class, so a 404 is dead-lettered while a 400 and a 401 are retried; and
/// `dead_letter_on = ["5xx"]` dead-letters a 503.
#[test]
fn retry_on_and_dead_letter_on_move_statuses_both_ways() {
    let setup = Setup::new();
    let one = fluentd();
    one.fail_next(&[404, 400, 401]);
    let two = fluentd();
    two.fail_next(&[503]);
    let lines = hits(0, 20, 200);
    append(&setup.log("a.ndjson"), &lines);
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination("one", &one.url("/wallarm.events"))
        .extra("concurrency = 1\nretry_on = [\"4xx\"]\ndead_letter_on = [404]")
        .extra(FIVE_A_BATCH)
        .destination("two", &two.url("/wallarm.events"))
        .extra("concurrency = 1\ndead_letter_on = [\"5xx\"]")
        .extra(FIVE_A_BATCH)
        .write();
    let tailhook = Tailhook::start(&cfg);
    wait_events(&one, &tailhook, 15);
    wait_events(&two, &tailhook, 15);
    let exit = stop(tailhook);

    assert_eq!(one.statuses(), [404, 400, 401, 200, 200, 200]);
    assert_eq!(one.events(), bytes_of(&lines[5..]));
    assert_eq!(dead_letters(&setup, "one"), ndjson(&lines[..5]));
    assert!(
        exit.stderr
            .contains("collector rejected a batch (HTTP 404)"),
        "{}",
        exit.stderr
    );

    assert_eq!(two.statuses(), [503, 200, 200, 200]);
    assert_eq!(two.events(), bytes_of(&lines[5..]));
    assert_eq!(dead_letters(&setup, "two"), ndjson(&lines[..5]));
}

// ---- 4. the dead-letter file's bound ---------------------------------------------

/// `[destination.dead_letter] max_bytes`: a rejected batch that would pass
/// it waits (the destination pauses: nothing is dropped, nothing more is
/// sent) until `tailhook dead-letter resend` empties the file; then it is
/// written and delivery goes on. Every event ends up delivered or in the
/// file, exactly once.
#[test]
fn a_full_dead_letter_file_pauses_the_destination_until_resend_makes_room() {
    const BYTES: &str = "tailhook_destination_dead_letter_bytes";
    let setup = Setup::new();
    let collector = fluentd();
    collector.respond_with_body(400, "refused");
    // 201 bytes a line: a batch of five is 1005 bytes of dead letters, so
    // two fit in 2 KiB and the third would not.
    let lines = hits(0, 40, 200);
    assert!(lines.iter().all(|l| l.len() == 200));
    append(&setup.log("a.ndjson"), &lines);
    let cfg = setup
        .builder()
        .file_source("w", "*.ndjson")
        .destination(DEST, &collector.url("/wallarm.events"))
        .extra(ONE_AT_A_TIME)
        .extra(&format!(
            "{FIVE_A_BATCH}[destination.dead_letter]\nmax_bytes = \"2KiB\"\n"
        ))
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = metrics_addr(&tailhook);

    wait_log(&tailhook, "is full");
    let path = setup.dead_letter(DEST);
    let stderr = tailhook.stderr();
    let line = stderr.lines().find(|l| l.contains("is full")).unwrap();
    for words in [
        format!("the dead-letter file {} is full", path.display()),
        "it holds 2010 bytes and 1005 more would pass dead_letter.max_bytes (2048)".to_string(),
        "nothing is dropped".to_string(),
        "tailhook dead-letter resend".to_string(),
    ] {
        assert!(
            line.contains(&words),
            "{words:?} not in the log line: {line}"
        );
    }
    assert_eq!(dead_letters(&setup, DEST), ndjson(&lines[..10]));
    assert_eq!(collector.statuses(), [400, 400, 400]);
    let d = ("destination", DEST);
    wait_for_page(
        addr,
        &tailhook,
        WAIT,
        "2010 dead-letter bytes",
        &[BYTES],
        |p| p.get(BYTES, &[d]) == Some(2010.0),
    );

    // The collector takes events again, but the destination stays paused on
    // the third batch until resend makes room.
    collector.clear_override();
    let cfg_arg = cfg.display().to_string();
    let exit = support::process::run_cmd(&["dead-letter", "resend", "-c", &cfg_arg], &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    assert!(
        exit.stdout.contains("resent 10 event(s) in 2 batch(es)"),
        "{}",
        exit.output()
    );
    // Paused, the daemon sent nothing meanwhile: the first events the
    // collector took are resend's (the daemon may resume as soon as resend
    // is done).
    assert_eq!(
        collector.events()[..10],
        bytes_of(&lines[..10])[..],
        "while paused, only resend delivered"
    );

    wait_events(&collector, &tailhook, 10 + 25);
    wait_log(&tailhook, "has room again");
    let exit = stop(tailhook);
    assert_eq!(
        collector.statuses(),
        [400, 400, 400, 200, 200, 200, 200, 200, 200, 200],
        "the third batch was not sent again: it waited to be written\n{}",
        exit.stderr
    );
    let after: Vec<String> = lines[..10].iter().chain(&lines[15..]).cloned().collect();
    assert_eq!(collector.events(), bytes_of(&after));
    assert_eq!(
        dead_letters(&setup, DEST),
        ndjson(&lines[10..15]),
        "the third batch, written once there was room"
    );

    // And a last resend delivers it: every event, once.
    let exit = support::process::run_cmd(&["dead-letter", "resend", "-c", &cfg_arg], &[]);
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    let mut seqs: Vec<u64> = collector
        .events()
        .iter()
        .map(|e| support::setup::seq_of(e))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..40).collect::<Vec<u64>>());
}
