//! `type = "forward"` destinations end to end: the real binary tails real
//! files and sends them to the forward-protocol emulator
//! (`support::forward`) on 127.0.0.1, which decodes with its own
//! MessagePack decoder. Checked: every event arrives once, in order, with
//! its JSON content and its time; a batch counts only when acknowledged
//! (same chunk id on a retry, checkpoint held back, kill -9 resends only
//! what was not acknowledged); `tailhook test` and `check` in words.

mod support;

use std::path::Path;
use std::time::Duration;

use support::check::stop;
use support::forward::Forward;
use support::process::{run_cmd, Tailhook};
use support::setup::{append, checkpointed_offset, Setup};

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(30);

/// A config: one file source `app` on `logs/*.ndjson` and a forward
/// destination `fluentd` to `address`, with fast retries and `extra` in the
/// destination block.
fn config(setup: &Setup, address: &str, extra: &str) -> std::path::PathBuf {
    let source = setup.source("app", "*.ndjson", "");
    setup.config(&format!(
        "{source}\n[[destination]]\nname = \"fluentd\"\ntype = \"forward\"\naddress = {address:?}\n\
         tag = \"wallarm.events\"\n{extra}\n\
         [destination.batch]\ntimeout = \"100ms\"\nmax_events = 3\n\
         [destination.retry]\ninitial = \"50ms\"\nmax = \"300ms\"\n"
    ))
}

/// Events that test what MessagePack must carry: u64 above 2^63, the
/// smallest i64, floats, unicode, nesting, null; `time` in Unix seconds.
fn events(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            format!(
                r#"{{"seq":{i},"time":{},"object_type":"hit","big":18446744073709551615,"neg":-9223372036854775808,"small":-7,"ratio":0.25,"name":"атака ✓ 😀 \"q\"","nested":{{"list":[1,"two",null,true,{{"deep":[]}}],"empty":{{}}}},"zip":null}}"#,
                1_700_000_000 + i as u64
            )
        })
        .collect()
}

fn json(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn seqs(records: &[serde_json::Value]) -> Vec<u64> {
    records.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
}

fn checkpoint_of(setup: &Setup, file: &Path) -> Option<u64> {
    setup
        .read_checkpoint("fluentd")
        .and_then(|c| checkpointed_offset(&c, file))
}

fn delivers_every_event_once_in_order(compression: &str, mode: &str) {
    let fwd = Forward::start();
    let setup = Setup::new();
    let cfg = config(
        &setup,
        &fwd.address(),
        // One batch in flight: the order on the wire is the order read (with
        // more, as for HTTP, batches may arrive out of order but are
        // acknowledged to the checkpoint in order).
        &format!("time_key = \"time\"\ncompression = {compression:?}\nconcurrency = 1"),
    );
    let lines = events(1, 10);
    append(&setup.log("a.ndjson"), &lines);
    let th = Tailhook::start(&cfg);
    assert!(fwd.wait_accepted(10, WAIT), "{}", th.stderr());
    let file_len = std::fs::metadata(setup.log("a.ndjson")).unwrap().len();
    assert!(setup
        .wait_checkpointed("fluentd", &setup.log("a.ndjson"), file_len, WAIT)
        .is_some());
    stop(th);

    assert_eq!(fwd.violations(), Vec::<String>::new());
    let received = fwd.received();
    assert!(received.len() >= 4, "max_events = 3: at least 4 messages");
    for r in &received {
        assert_eq!(r.tag, "wallarm.events");
        assert_eq!(r.mode, mode);
        assert!(r.acked && r.chunk.as_deref().is_some_and(|c| !c.is_empty()));
        for ((secs, nanos), record) in &r.entries {
            assert_eq!(
                *secs,
                record["time"].as_u64().unwrap(),
                "EventTime from time_key"
            );
            assert_eq!(*nanos, 0);
        }
    }
    // Each batch has its own chunk id.
    let mut chunks: Vec<_> = received.iter().map(|r| r.chunk.clone()).collect();
    chunks.sort();
    chunks.dedup();
    assert_eq!(chunks.len(), received.len());
    // Exactly once, in order, the JSON content unchanged.
    let accepted = fwd.accepted();
    assert_eq!(seqs(&accepted), (1..=10).collect::<Vec<u64>>());
    assert_eq!(accepted, json(&lines));
    assert_eq!(accepted[0]["big"].as_u64(), Some(u64::MAX));
    assert_eq!(accepted[0]["neg"].as_i64(), Some(i64::MIN));
}

#[test]
fn packed_forward_delivers_every_event_once_in_order_with_its_content_and_time() {
    delivers_every_event_once_in_order("none", "PackedForward");
}

#[test]
fn gzip_sends_compressed_packed_forward() {
    delivers_every_event_once_in_order("gzip", "CompressedPackedForward");
}

#[test]
fn without_time_key_events_get_the_time_they_are_sent() {
    let fwd = Forward::start();
    let setup = Setup::new();
    let cfg = config(&setup, &fwd.address(), "");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    append(&setup.log("a.ndjson"), &events(1, 2));
    let th = Tailhook::start(&cfg);
    assert!(fwd.wait_accepted(2, WAIT), "{}", th.stderr());
    stop(th);
    let after = before + 60;
    for r in fwd.received() {
        for ((secs, _), _) in r.entries {
            assert!((before..=after).contains(&secs), "{secs} not the send time");
        }
    }
}

#[test]
fn a_withheld_ack_is_retried_with_the_same_chunk_and_the_checkpoint_waits() {
    let fwd = Forward::start();
    fwd.set_withhold(true);
    let setup = Setup::new();
    let cfg = config(&setup, &fwd.address(), "ack_timeout = \"300ms\"");
    let log = setup.log("a.ndjson");
    append(&log, &events(1, 2));
    let th = Tailhook::start(&cfg);
    assert!(fwd.wait_received(3, WAIT), "{}", th.stderr());
    let seen = fwd.received();
    // One batch, sent again and again with the same id, each time on a new connection.
    assert!(seen
        .iter()
        .all(|r| r.chunk == seen[0].chunk && !r.acked && r.entries.len() == 2));
    let mut conns: Vec<usize> = seen.iter().map(|r| r.connection).collect();
    conns.dedup();
    assert_eq!(conns.len(), seen.len(), "each retry on a new connection");
    assert_eq!(checkpoint_of(&setup, &log).unwrap_or(0), 0);
    assert!(th
        .stderr()
        .contains("no acknowledgement within ack_timeout (300ms)"));

    fwd.set_withhold(false);
    assert!(fwd.wait_accepted(2, WAIT), "{}", th.stderr());
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(setup
        .wait_checkpointed("fluentd", &log, len, WAIT)
        .is_some());
    stop(th);
    assert_eq!(seqs(&fwd.accepted()), [1, 2]);
    let acked: Vec<_> = fwd.received().into_iter().filter(|r| r.acked).collect();
    assert_eq!(acked.len(), 1);
    assert_eq!(
        acked[0].chunk, seen[0].chunk,
        "the retry carries the same id"
    );
}

#[test]
fn an_ack_for_another_chunk_does_not_count() {
    let fwd = Forward::start();
    fwd.set_wrong_ack(true);
    let setup = Setup::new();
    let cfg = config(&setup, &fwd.address(), "");
    let log = setup.log("a.ndjson");
    append(&log, &events(1, 1));
    let th = Tailhook::start(&cfg);
    assert!(fwd.wait_received(2, WAIT), "{}", th.stderr());
    assert!(th.wait_for_log("acknowledged chunk `not-", WAIT));
    assert_eq!(checkpoint_of(&setup, &log).unwrap_or(0), 0);
    fwd.set_wrong_ack(false);
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(setup
        .wait_checkpointed("fluentd", &log, len, WAIT)
        .is_some());
    stop(th);
}

#[test]
fn after_kill_9_only_unacknowledged_batches_are_sent_again() {
    let fwd = Forward::start();
    let setup = Setup::new();
    let cfg = config(&setup, &fwd.address(), "ack_timeout = \"300ms\"");
    let log = setup.log("a.ndjson");
    append(&log, &events(1, 5));
    let th = Tailhook::start(&cfg);
    assert!(fwd.wait_accepted(5, WAIT), "{}", th.stderr());
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(setup
        .wait_checkpointed("fluentd", &log, len, WAIT)
        .is_some());

    fwd.set_withhold(true);
    let before = fwd.received().len();
    append(&log, &events(6, 2));
    assert!(fwd.wait_received(before + 1, WAIT), "{}", th.stderr());
    th.kill9();
    assert_eq!(checkpoint_of(&setup, &log), Some(len));

    fwd.set_withhold(false);
    let th = Tailhook::start(&cfg);
    assert!(fwd.wait_accepted(7, WAIT), "{}", th.stderr());
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(setup
        .wait_checkpointed("fluentd", &log, len, WAIT)
        .is_some());
    stop(th);
    let mut got = seqs(&fwd.accepted());
    got.sort();
    assert_eq!(
        got,
        (1..=7).collect::<Vec<u64>>(),
        "each event acknowledged once"
    );
}

#[test]
fn tailhook_test_sends_the_test_message_over_forward() {
    let fwd = Forward::start();
    let setup = Setup::new();
    let cfg = config(&setup, &fwd.address(), "");
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(out.success(), "{}", out.output());
    assert!(
        out.stdout.contains("fluentd: OK: acknowledged in ")
            && out.stdout.contains(&format!(
                "(forward tcp://{} tag wallarm.events)",
                fwd.address()
            )),
        "{}",
        out.output()
    );
    let accepted = fwd.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        accepted[0]["summary"],
        "[Test Message] New vulnerability identified"
    );
    assert_eq!(accepted[0]["title"], "Test");
}

#[test]
fn tailhook_test_says_in_words_what_went_wrong() {
    // No acknowledgement.
    let fwd = Forward::start();
    fwd.set_withhold(true);
    let setup = Setup::new();
    let cfg = config(&setup, &fwd.address(), "ack_timeout = \"200ms\"");
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout
            .contains("fluentd: FAILED: no acknowledgement within ack_timeout (200ms)"),
        "{}",
        out.output()
    );
    // Acknowledged, but not this chunk.
    fwd.set_withhold(false);
    fwd.set_wrong_ack(true);
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout
            .contains("FAILED: forward protocol: the collector acknowledged chunk `not-"),
        "{}",
        out.output()
    );
    // Nothing listening.
    let dead = support::check::dead_port();
    let cfg = config(&setup, &format!("127.0.0.1:{}", dead.port), "");
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout.contains("FAILED: connection refused"),
        "{}",
        out.output()
    );
}

#[test]
fn check_explains_forward_settings_and_prints_them() {
    let setup = Setup::new();
    let source = setup.source("app", "*.ndjson", "");
    let check = |dest: &str| {
        let cfg = setup.config(&format!(
            "{source}\n[[destination]]\nname = \"f\"\n{dest}\n"
        ));
        run_cmd(&["check", "-c", cfg.to_str().unwrap()], &[])
    };
    let out = check("type = \"forward\"\naddress = \"127.0.0.1:24224\"\ntag = \"t\"\nack_timeout = \"5s\"\ntime_key = \"time\"");
    assert!(out.success(), "{}", out.output());
    for line in [
        "type = \"forward\"",
        "address = \"127.0.0.1:24224\"",
        "tag = \"t\"",
        "time_key = \"time\"",
        "ack_timeout = \"5s\"",
        "transport = \"tcp\"",
    ] {
        assert!(
            out.stdout.contains(line),
            "check prints {line}:\n{}",
            out.output()
        );
    }
    assert!(!out.stdout.contains("url ="), "{}", out.stdout);

    for (dest, words) in [
        (
            "type = \"forward\"\ntag = \"t\"",
            "needs `address = \"host:port\"`",
        ),
        ("type = \"forward\"\naddress = \"h:1\"", "needs `tag`"),
        (
            "type = \"forward\"\naddress = \"nohost\"\ntag = \"t\"",
            "address `nohost` must be host:port",
        ),
        (
            "type = \"forward\"\naddress = \"h:1\"\ntag = \"t\"\nurl = \"http://x/\"",
            "`url` is a setting of HTTP destinations",
        ),
        (
            "type = \"forward\"\naddress = \"h:1\"\ntag = \"t\"\n[destination.tls]\nserver_name = \"fluentd\"",
            "`tls.server_name` is a setting of HTTP destinations",
        ),
        (
            "type = \"forward\"\naddress = \"h:1\"\ntag = \"t\"\nca_file = \"/x\"",
            "`ca_file` is a TLS setting, but this forward destination has no `transport = \"tls\"`",
        ),
        (
            "url = \"http://x/\"\ntransport = \"tls\"",
            "`transport` is a setting of `type = \"forward\"`",
        ),
        (
            "type = \"forward\"\naddress = \"h:1\"\ntag = \"t\"\ntransport = \"udp\"",
            "transport `udp` is not supported",
        ),
        (
            "url = \"http://x/\"\ntag = \"t\"",
            "`tag` is a setting of `type = \"forward\"`",
        ),
        (
            "type = \"syslog\"\nurl = \"http://x/\"",
            "type `syslog` is not supported",
        ),
        (
            "type = \"forward\"\naddress = \"h:1\"\ntag = \"t\"\nack_timeout = \"0s\"",
            "ack_timeout must be more than 0",
        ),
    ] {
        let out = check(dest);
        assert!(!out.success(), "{dest}");
        assert!(
            out.output().contains(words),
            "{dest}: want {words}:\n{}",
            out.output()
        );
    }
}

#[test]
fn tls_delivers_with_the_destination_ca_and_fails_in_words_without_it() {
    let pki = support::tls::make_pki();
    let fwd = Forward::start_tls(pki.server_config());
    let setup = Setup::new();
    let ca = pki.write_ca(setup.dir.path());
    // The certificate is for 127.0.0.1 and localhost.
    let cfg = config(
        &setup,
        &fwd.address(),
        &format!("transport = \"tls\"\nca_file = {:?}", ca.to_str().unwrap()),
    );
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(out.success(), "{}", out.output());
    assert!(
        out.stdout.contains("OK: acknowledged in "),
        "{}",
        out.output()
    );
    let log = setup.log("a.ndjson");
    let lines = events(1, 4);
    append(&log, &lines);
    let th = Tailhook::start(&cfg);
    assert!(fwd.wait_accepted(5, WAIT), "{}", th.stderr());
    stop(th);
    let accepted = fwd.accepted();
    assert_eq!(&accepted[1..], &json(&lines)[..]);

    // Without the CA: the handshake fails, in words.
    let cfg = config(&setup, &fwd.address(), "transport = \"tls\"");
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout.contains("FAILED: TLS handshake failed: "),
        "{}",
        out.output()
    );
}
