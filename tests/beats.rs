//! `type = "beats"` destinations end to end: the real binary tails real
//! files and sends them as Lumberjack v2 windows to the emulator of
//! Logstash's `beats` input (`support::beats`) on 127.0.0.1. Checked: every
//! event arrives once, in order, byte for byte, in windows numbered 1..N,
//! plain or zlib, over TCP or TLS; a window counts only when its last
//! sequence is acknowledged — partial acknowledgements and keep-alives
//! that outlast `ack_timeout` deliver without a resend, a dropped
//! connection or a withheld acknowledgement make the whole window go again
//! (and show in the metrics), kill -9 resends only what was not
//! acknowledged; `tailhook test` and `check` in words.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::beats::Beats;
use support::check::stop;
use support::metrics::{metrics_addr, wait_for_page};
use support::process::{run_cmd, Tailhook};
use support::setup::{append, bytes_of, checkpointed_offset, wallarm_hits, Setup};

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(30);

/// A config: one file source `app` on `logs/*.ndjson` and a beats
/// destination `logstash` to `address`, three events a window, fast
/// retries, and `extra` in the destination block.
fn config(setup: &Setup, address: &str, extra: &str) -> PathBuf {
    let source = setup.source("app", "*.ndjson", "");
    setup.config(&format!(
        "{source}\n[[destination]]\nname = \"logstash\"\ntype = \"beats\"\naddress = {address:?}\n{extra}\n\
         [destination.batch]\ntimeout = \"100ms\"\nmax_events = 3\n\
         [destination.retry]\ninitial = \"50ms\"\nmax = \"300ms\"\n"
    ))
}

fn checkpoint_of(setup: &Setup, file: &Path) -> Option<u64> {
    setup
        .read_checkpoint("logstash")
        .and_then(|c| checkpointed_offset(&c, file))
}

/// Waits until the checkpoint covers all of `file`.
fn wait_all_checkpointed(setup: &Setup, file: &Path) -> bool {
    let len = std::fs::metadata(file).unwrap().len();
    setup
        .wait_checkpointed("logstash", file, len, WAIT)
        .is_some()
}

/// Appends `n` Wallarm hits from `from` to `a.ndjson`, runs tailhook with
/// `extra` until the emulator has accepted them and the checkpoint covers
/// the file, and returns the lines.
fn run_until_delivered(bt: &Beats, setup: &Setup, extra: &str, n: usize) -> Vec<String> {
    let cfg = config(setup, &bt.address(), extra);
    let log = setup.log("a.ndjson");
    let lines = wallarm_hits(1, n);
    append(&log, &lines);
    let th = Tailhook::start(&cfg);
    assert!(bt.wait_accepted(n, WAIT), "{}", th.stderr());
    assert!(wait_all_checkpointed(setup, &log), "{}", th.stderr());
    stop(th);
    assert_eq!(bt.violations(), Vec::<String>::new());
    lines
}

fn delivers_every_event_once_in_order(compression: &str, compressed: bool) {
    let bt = Beats::start();
    let setup = Setup::new();
    // One window in flight: the order on the wire is the order read.
    let extra = format!("compression = {compression:?}\nconcurrency = 1");
    let lines = run_until_delivered(&bt, &setup, &extra, 10);

    let windows = bt.windows();
    assert_eq!(windows.len(), 4, "max_events = 3: 3 + 3 + 3 + 1");
    for w in &windows {
        assert!(w.acked);
        assert_eq!(w.compressed, compressed);
        assert_eq!(w.seqs, (1..=w.events.len() as u32).collect::<Vec<_>>());
        assert_eq!(w.ack_frames, 1, "one acknowledgement a window");
    }
    // Exactly once, in order, byte for byte.
    assert_eq!(bt.accepted(), bytes_of(&lines));
    // Kept-alive: every window on one connection.
    assert!(
        windows
            .iter()
            .all(|w| w.connection == windows[0].connection),
        "{windows:?}"
    );
}

#[test]
fn windows_deliver_every_event_once_in_order_byte_for_byte() {
    delivers_every_event_once_in_order("none", false);
}

#[test]
fn zlib_sends_each_window_in_a_compressed_frame() {
    delivers_every_event_once_in_order("zlib", true);
}

#[test]
fn partial_acknowledgements_are_progress_not_a_failure() {
    let bt = Beats::start();
    bt.set_partial_acks(1);
    let setup = Setup::new();
    let lines = run_until_delivered(&bt, &setup, "concurrency = 1", 7);
    let windows = bt.windows();
    assert!(windows.iter().all(|w| w.acked), "{windows:?}");
    assert_eq!(
        windows.iter().map(|w| w.ack_frames).collect::<Vec<_>>(),
        windows.iter().map(|w| w.events.len()).collect::<Vec<_>>(),
        "2A 1, 2A 2, … 2A N for each window"
    );
    assert_eq!(bt.accepted(), bytes_of(&lines), "nothing sent twice");
}

#[test]
fn keepalives_outlasting_ack_timeout_deliver_without_a_resend() {
    let bt = Beats::start();
    // 2 s of keep-alives, 250 ms apart, against a 1 s ack_timeout: only a
    // client that starts the timeout anew at each keep-alive waits for the
    // acknowledgement.
    bt.set_keepalives(8, Duration::from_millis(250));
    let setup = Setup::new();
    // The three events in one window.
    let cfg = setup.config(&format!(
        "{}\n[[destination]]\nname = \"logstash\"\ntype = \"beats\"\naddress = {:?}\n\
         ack_timeout = \"1s\"\n[destination.batch]\ntimeout = \"300ms\"\n",
        setup.source("app", "*.ndjson", ""),
        bt.address()
    ));
    let log = setup.log("a.ndjson");
    let lines = wallarm_hits(1, 3);
    append(&log, &lines);
    let th = Tailhook::start(&cfg);
    let metrics = metrics_addr(&th);
    assert!(bt.wait_accepted(3, WAIT), "{}", th.stderr());
    assert!(wait_all_checkpointed(&setup, &log), "{}", th.stderr());
    let page = wait_for_page(metrics, &th, WAIT, "the window sent", &[], |p| {
        p.value(
            "tailhook_destination_batches_sent_total",
            &[("destination", "logstash")],
        ) >= 1.0
    });
    let d = [("destination", "logstash")];
    assert_eq!(page.value("tailhook_destination_retries_total", &d), 0.0);
    assert_eq!(page.sum("tailhook_destination_errors_total", &d), 0.0);
    stop(th);
    let windows = bt.windows();
    assert_eq!(windows.len(), 1, "sent once: {windows:?}");
    assert_eq!(
        windows[0].ack_frames, 9,
        "8 keep-alives and the acknowledgement"
    );
    assert_eq!(bt.accepted(), bytes_of(&lines));
}

#[test]
fn a_connection_dropped_before_the_ack_sends_the_whole_window_again() {
    let bt = Beats::start();
    bt.set_close_before_ack(1);
    let setup = Setup::new();
    let lines = run_until_delivered(&bt, &setup, "concurrency = 1", 5);
    let windows = bt.windows();
    // The first window, dropped, then the same window on a new connection.
    assert!(!windows[0].acked);
    assert!(windows[1].acked);
    assert_eq!(
        windows[1].events, windows[0].events,
        "the whole window again"
    );
    assert_ne!(windows[1].connection, windows[0].connection);
    // Nothing lost, nothing twice among what was acknowledged.
    assert_eq!(bt.accepted(), bytes_of(&lines));
}

#[test]
fn a_window_never_acknowledged_is_retried_and_shows_in_the_metrics() {
    let bt = Beats::start();
    bt.set_withhold(true);
    let setup = Setup::new();
    let cfg = config(&setup, &bt.address(), "ack_timeout = \"300ms\"");
    let log = setup.log("a.ndjson");
    let lines = wallarm_hits(1, 2);
    append(&log, &lines);
    let th = Tailhook::start(&cfg);
    let metrics = metrics_addr(&th);
    assert!(bt.wait_windows(3, WAIT), "{}", th.stderr());
    let d = [("destination", "logstash")];
    let page = wait_for_page(metrics, &th, WAIT, "retries and timeouts", &[], |p| {
        p.value("tailhook_destination_retries_total", &d) >= 2.0
            && p.value(
                "tailhook_destination_errors_total",
                &[("destination", "logstash"), ("reason", "timeout")],
            ) >= 2.0
    });
    assert_eq!(page.value("tailhook_destination_up", &d), 0.0);
    assert_eq!(
        page.value("tailhook_destination_events_sent_total", &d),
        0.0
    );
    // The same window each time, each on a new connection.
    let seen = bt.windows();
    assert!(seen
        .iter()
        .all(|w| !w.acked && w.events == bytes_of(&lines)));
    let mut conns: Vec<usize> = seen.iter().map(|w| w.connection).collect();
    conns.dedup();
    assert_eq!(conns.len(), seen.len(), "each retry on a new connection");
    assert_eq!(checkpoint_of(&setup, &log).unwrap_or(0), 0);
    assert!(
        th.stderr()
            .contains("no acknowledgement within ack_timeout (300ms)"),
        "{}",
        th.stderr()
    );

    bt.set_withhold(false);
    assert!(bt.wait_accepted(2, WAIT), "{}", th.stderr());
    assert!(wait_all_checkpointed(&setup, &log), "{}", th.stderr());
    let page = wait_for_page(metrics, &th, WAIT, "the window sent", &[], |p| {
        p.value("tailhook_destination_events_sent_total", &d) == 2.0
    });
    assert_eq!(page.value("tailhook_destination_up", &d), 1.0);
    stop(th);
    assert_eq!(bt.accepted(), bytes_of(&lines));
}

#[test]
fn after_kill_9_only_unacknowledged_windows_are_sent_again() {
    let bt = Beats::start();
    let setup = Setup::new();
    let cfg = config(&setup, &bt.address(), "ack_timeout = \"300ms\"");
    let log = setup.log("a.ndjson");
    let lines = wallarm_hits(1, 7);
    append(&log, &lines[..5]);
    let th = Tailhook::start(&cfg);
    assert!(bt.wait_accepted(5, WAIT), "{}", th.stderr());
    assert!(wait_all_checkpointed(&setup, &log), "{}", th.stderr());
    let len = std::fs::metadata(&log).unwrap().len();

    bt.set_withhold(true);
    let before = bt.windows().len();
    append(&log, &lines[5..]);
    assert!(bt.wait_windows(before + 1, WAIT), "{}", th.stderr());
    th.kill9();
    assert_eq!(checkpoint_of(&setup, &log), Some(len));

    bt.set_withhold(false);
    let th = Tailhook::start(&cfg);
    assert!(bt.wait_accepted(7, WAIT), "{}", th.stderr());
    assert!(wait_all_checkpointed(&setup, &log), "{}", th.stderr());
    stop(th);
    let mut got = bt.accepted();
    let mut want = bytes_of(&lines);
    got.sort();
    want.sort();
    assert_eq!(got, want, "each event acknowledged once");
}

#[test]
fn tailhook_test_sends_the_test_message_as_a_one_event_window() {
    let bt = Beats::start();
    let setup = Setup::new();
    let cfg = config(&setup, &bt.address(), "");
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(out.success(), "{}", out.output());
    assert!(
        out.stdout.contains("logstash: OK: acknowledged in ")
            && out
                .stdout
                .contains(&format!(" ms (beats tcp://{})", bt.address())),
        "{}",
        out.output()
    );
    let windows = bt.windows();
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].seqs, [1]);
    let event: serde_json::Value = serde_json::from_slice(&windows[0].events[0]).unwrap();
    assert_eq!(
        event["summary"],
        "[Test Message] New vulnerability identified"
    );
    assert_eq!(event["title"], "Test");
}

#[test]
fn tailhook_test_says_in_words_what_went_wrong() {
    let bt = Beats::start();
    let setup = Setup::new();
    let cfg = config(&setup, &bt.address(), "ack_timeout = \"200ms\"");
    let failed = |words: &str| {
        let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
        assert!(!out.success(), "{}", out.output());
        assert!(
            out.stdout.contains(&format!("logstash: FAILED: {words}"))
                && out
                    .stdout
                    .contains(&format!("(beats tcp://{})", bt.address())),
            "want {words}:\n{}",
            out.output()
        );
    };
    bt.set_withhold(true);
    failed("no acknowledgement within ack_timeout (200ms)");
    bt.set_withhold(false);

    bt.set_close_before_ack(1);
    failed("beats protocol: the collector closed the connection before acknowledging the window (does the beats input expect TLS — ssl_enabled => true? then set transport = \"tls\"");

    bt.set_bad_ack(true);
    failed("beats protocol: the collector acknowledged sequence 2, but the window holds 1 events");
    bt.set_bad_ack(false);

    let dead = support::check::dead_port();
    let cfg = config(&setup, &format!("127.0.0.1:{}", dead.port), "");
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout.contains("logstash: FAILED: connection refused"),
        "{}",
        out.output()
    );
}

#[test]
fn tls_delivers_with_the_destination_ca_and_fails_in_words_without_it() {
    let pki = support::tls::make_pki();
    let bt = Beats::start_tls(pki.server_config());
    let setup = Setup::new();
    let ca = pki.write_ca(setup.dir.path());
    let tls = format!("transport = \"tls\"\nca_file = {:?}", ca.to_str().unwrap());
    let cfg = config(&setup, &bt.address(), &tls);
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(out.success(), "{}", out.output());
    assert!(
        out.stdout.contains("OK: acknowledged in ")
            && out
                .stdout
                .contains(&format!("(beats tls://{})", bt.address())),
        "{}",
        out.output()
    );
    let lines = run_until_delivered(&bt, &setup, &format!("{tls}\nconcurrency = 1"), 4);
    assert_eq!(&bt.accepted()[1..], &bytes_of(&lines)[..]);

    // Without the CA: the handshake fails, in words.
    let cfg = config(&setup, &bt.address(), "transport = \"tls\"");
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout.contains("FAILED: TLS handshake failed: "),
        "{}",
        out.output()
    );
    // Plain TCP to a TLS input.
    let cfg = config(&setup, &bt.address(), "ack_timeout = \"5s\"");
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout.contains("set transport = \"tls\""),
        "{}",
        out.output()
    );
}

#[test]
fn a_client_certificate_is_sent_when_the_input_requires_one() {
    let pki = support::tls::make_pki();
    let client_ca = support::tls::ClientCa::new("beats test client CA");
    let setup = Setup::new();
    let bt = Beats::start_tls(pki.server_config_requiring(&client_ca));
    let ca = pki.write_ca(setup.dir.path());
    let (cert, key) = client_ca.issue("tailhook");
    let cert_path = setup.dir.path().join("client.crt");
    let key_path = setup.dir.path().join("client.key");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let tls = format!("transport = \"tls\"\nca_file = {:?}", ca.to_str().unwrap());

    let with_cert = format!(
        "{tls}\nclient_cert_file = {:?}\nclient_key_file = {:?}",
        cert_path.to_str().unwrap(),
        key_path.to_str().unwrap()
    );
    let cfg = config(&setup, &bt.address(), &with_cert);
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(out.success(), "{}", out.output());

    let cfg = config(&setup, &bt.address(), &tls);
    let out = run_cmd(&["test", "-c", cfg.to_str().unwrap()], &[]);
    assert!(!out.success());
    assert!(
        out.stdout.contains("client_cert_file and client_key_file"),
        "{}",
        out.output()
    );
}

#[test]
fn check_explains_beats_settings_and_prints_them() {
    let setup = Setup::new();
    let source = setup.source("app", "*.ndjson", "");
    let check = |dest: &str| {
        let cfg = setup.config(&format!(
            "{source}\n[[destination]]\nname = \"b\"\n{dest}\n"
        ));
        run_cmd(&["check", "-c", cfg.to_str().unwrap()], &[])
    };
    let out = check("type = \"beats\"\naddress = \"127.0.0.1:5044\"\nack_timeout = \"5s\"\ncompression = \"zlib\"");
    assert!(out.success(), "{}", out.output());
    for line in [
        "type = \"beats\"",
        "address = \"127.0.0.1:5044\"",
        "ack_timeout = \"5s\"",
        "transport = \"tcp\"",
        "compression = \"zlib\"",
        "connect_timeout = \"20s\"",
    ] {
        assert!(
            out.stdout.contains(line),
            "check prints {line}:\n{}",
            out.output()
        );
    }
    for absent in ["url =", "format =", "tag =", "retry_on"] {
        assert!(!out.stdout.contains(absent), "{absent}:\n{}", out.stdout);
    }
    let out = check("type = \"beats\"\naddress = \"localhost:5044\"\ntransport = \"tls\"\nverify_certificate = false");
    assert!(out.success(), "{}", out.output());
    assert!(
        out.stdout.contains("ack_timeout = \"60s\""),
        "{}",
        out.stdout
    );
    assert!(
        out.output()
            .contains("TLS certificates of tls://localhost:5044 are NOT verified"),
        "{}",
        out.output()
    );

    for (dest, words) in [
        (
            "type = \"beats\"",
            "needs `address = \"host:port\"` (the port of Logstash's beats input",
        ),
        (
            "type = \"beats\"\naddress = \"logstash\"",
            "address `logstash` must be host:port (e.g. \"logstash:5044\"",
        ),
        (
            "type = \"beats\"\naddress = \"h:1\"\nurl = \"http://x/\"",
            "`url` is a setting of HTTP destinations; a `type = \"beats\"` destination takes `address`",
        ),
        (
            "type = \"beats\"\naddress = \"h:1\"\nheaders = { A = \"b\" }",
            "`headers` is a setting of HTTP destinations",
        ),
        (
            "type = \"beats\"\naddress = \"h:1\"\nformat = \"ndjson\"",
            "`format` is a setting of HTTP destinations",
        ),
        (
            "type = \"beats\"\naddress = \"h:1\"\ntag = \"t\"",
            "`tag` is a setting of `type = \"forward\"` destinations; a `type = \"beats\"` destination",
        ),
        (
            "type = \"beats\"\naddress = \"h:1\"\ntime_key = \"time\"",
            "`time_key` is a setting of `type = \"forward\"` destinations",
        ),
        (
            "type = \"beats\"\naddress = \"h:1\"\ncompression = \"gzip\"",
            "compression \"gzip\" is for HTTP and forward destinations; a `type = \"beats\"` destination takes \"zlib\"",
        ),
        (
            "url = \"http://x/\"\ncompression = \"zlib\"",
            "compression \"zlib\" is for `type = \"beats\"` destinations",
        ),
        (
            "type = \"beats\"\naddress = \"h:1\"\nca_file = \"/x\"",
            "`ca_file` is a TLS setting, but this beats destination has no `transport = \"tls\"`",
        ),
        (
            "type = \"beats\"\naddress = \"h:1\"\ntransport = \"ssl\"",
            "transport `ssl` is not supported; expected \"tcp\" (the default) or \"tls\"",
        ),
        (
            "type = \"beats\"\naddress = \"h:1\"\nack_timeout = \"0s\"",
            "ack_timeout must be more than 0",
        ),
        (
            "url = \"http://x/\"\naddress = \"h:1\"",
            "`address` is a setting of `type = \"forward\"` and `type = \"beats\"` destinations",
        ),
        (
            "type = \"lumberjack\"\naddress = \"h:1\"",
            "type `lumberjack` is not supported; expected \"http\" (the default), \"forward\" or \"beats\"",
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

/// The emulator itself, spoken to by hand: it acknowledges a good window
/// with `2A` N and flags (and closes on) what the real servers refuse, so
/// the tests above can fail.
#[test]
fn the_emulator_acknowledges_good_windows_and_flags_bad_ones() {
    use std::io::{Read, Write};
    fn frame(seq: u32, json: &[u8]) -> Vec<u8> {
        let mut f = b"2J".to_vec();
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&(json.len() as u32).to_be_bytes());
        f.extend_from_slice(json);
        f
    }
    let send = |bt: &Beats, frames: &[Vec<u8>], n: u32| -> Vec<u8> {
        let mut conn = std::net::TcpStream::connect(bt.address()).unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let mut out = b"2W".to_vec();
        out.extend_from_slice(&n.to_be_bytes());
        for f in frames {
            out.extend_from_slice(f);
        }
        conn.write_all(&out).unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        answer
    };
    let good = Beats::start();
    let mut conn = std::net::TcpStream::connect(good.address()).unwrap();
    let mut out = b"2W\0\0\0\x02".to_vec();
    out.extend(frame(1, br#"{"a":1}"#));
    out.extend(frame(2, br#"{"b":2}"#));
    conn.write_all(&out).unwrap();
    let mut ack = [0u8; 6];
    conn.read_exact(&mut ack).unwrap();
    assert_eq!(&ack, b"2A\0\0\0\x02");
    assert_eq!(
        good.accepted(),
        [br#"{"a":1}"#.to_vec(), br#"{"b":2}"#.to_vec()]
    );

    for (frames, n, words) in [
        (
            vec![frame(2, b"{}"), frame(1, b"{}")],
            2,
            "sequences [2, 1], not 1..=2",
        ),
        (vec![frame(1, b"[1]")], 1, "not a JSON object"),
        (vec![frame(1, b"{\"a\":")], 1, "not JSON"),
        (vec![b"2X".to_vec()], 1, "unknown frame type"),
    ] {
        let bt = Beats::start();
        let answer = send(&bt, &frames, n);
        assert!(
            answer.is_empty(),
            "{words}: no acknowledgement, the connection closed"
        );
        let violations = bt.violations();
        assert!(
            violations.len() == 1 && violations[0].contains(words),
            "{words}: {violations:?}"
        );
    }
}
