//! A full disk through the real binary: `data_dir` is a small tmpfs that
//! fills up while socket and HTTP input is spooled, then is made larger
//! (`mount -o remount,size=…`), as an operator freeing space would. Checked:
//! the input is held, not lost (TCP is not read, HTTP answers 503 with
//! `Retry-After`), the state is logged once each way and shown by
//! `tailhook_input_blocked`, and everything a sender handed over reaches the
//! collector exactly once — also across a restart while the collector was
//! down.
//!
//! Mounting needs root (CI runs as root). Where mounting is not permitted,
//! each test prints why and passes without running.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::check::{assert_clean_exit, assert_each_exactly_once, dead_port};
use support::collector::{fluentd, Collector, Options};
use support::http_client::post;
use support::inputs::{input, listen_addr};
use support::metrics::{metrics_addr, scrape};
use support::process::Tailhook;
use support::setup::{destination, wallarm_hits, Setup};

const WAIT: Duration = Duration::from_secs(60);
const FULL: &str = "cannot write the spool";
const BACK: &str = "the spool can be written again";

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir`, or says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    /// Gives the file system more room, as freeing space would.
    fn grow(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A setup whose `data_dir` is a tmpfs of `size`, or None (printed) where
/// mounting is not permitted.
fn small_disk(size: &str) -> Option<(Setup, Tmpfs)> {
    let setup = Setup::new();
    match Tmpfs::mount(&setup.data, size) {
        Ok(t) => Some((setup, t)),
        Err(why) => {
            eprintln!("SKIPPED: this test needs a tmpfs mount ({why})");
            None
        }
    }
}

fn blocked(tailhook: &Tailhook, source: &str) -> f64 {
    scrape(metrics_addr(tailhook)).value("tailhook_input_blocked", &[("source", source)])
}

/// Waits until `tailhook_input_bytes_total` for `source` reaches `bytes`
/// (there is no log line per write to wait for): polls /metrics every
/// 50 ms, for at most `WAIT`.
fn wait_input_bytes(tailhook: &Tailhook, source: &str, bytes: usize) {
    let addr = metrics_addr(tailhook);
    let end = Instant::now() + WAIT;
    loop {
        let got = scrape(addr).value("tailhook_input_bytes_total", &[("source", source)]);
        if got as usize >= bytes {
            assert_eq!(got as usize, bytes, "more input bytes than were sent");
            return;
        }
        assert!(
            Instant::now() < end,
            "{got} of {bytes} input bytes spooled\n{}",
            tailhook.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The case: one TCP connection sends far more than the disk
/// holds while the collector is down; space comes back; the sender goes
/// idle; SIGTERM; the collector comes up and tailhook starts again: every
/// line arrives, once, in order.
#[test]
fn a_full_disk_holds_a_tcp_sender_and_loses_nothing_across_a_restart() {
    let Some((setup, disk)) = small_disk("256k") else {
        return;
    };
    let dead = dead_port();
    let port = dead.port;
    let url = format!("http://127.0.0.1:{port}/t");
    let cfg = setup.config(&format!(
        "shutdown_timeout = \"2s\"\n\n{}{}",
        input("net", "tcp", ""),
        destination("siem", &url, "", "")
    ));
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "net");

    let lines = wallarm_hits(0, 6_000);
    let mut body = Vec::new();
    for l in &lines {
        body.extend_from_slice(l.as_bytes());
        body.push(b'\n');
    }
    let total = body.len();
    let sender = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        // In pieces that end mid-line, as a real writer's buffers do.
        for piece in body.chunks(10_007) {
            s.write_all(piece).unwrap();
        }
    });
    assert!(tailhook.wait_for_log(FULL, WAIT), "{}", tailhook.stderr());
    assert_eq!(blocked(&tailhook, "net"), 1.0, "the input is shown blocked");
    assert!(
        tailhook.stderr().contains("bytes free on its file system"),
        "the log says how much room is left:\n{}",
        tailhook.stderr()
    );

    disk.grow("64m");
    assert!(tailhook.wait_for_log(BACK, WAIT), "{}", tailhook.stderr());
    wait_input_bytes(&tailhook, "net", total);
    sender.join().unwrap();
    assert_eq!(blocked(&tailhook, "net"), 0.0);
    let log = tailhook.stderr();
    assert_eq!(log.matches(FULL).count(), 1, "logged once:\n{log}");
    assert_eq!(log.matches(BACK).count(), 1, "logged once:\n{log}");
    assert_clean_exit(&tailhook.terminate());

    let collector = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_events(lines.len(), WAIT),
        "got {} of {} events\n{}",
        collector.event_count(),
        lines.len(),
        tailhook.stderr()
    );
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&collector, &lines, "spooled through a full disk");
}

/// Webhook requests that find the disk full are answered 503 with
/// `Retry-After` (the sender keeps them); once there is room, the same
/// requests are taken, and the collector gets every event once.
#[test]
fn a_full_disk_answers_webhooks_503_until_there_is_room() {
    let Some((setup, disk)) = small_disk("128k") else {
        return;
    };
    let collector = fluentd();
    let cfg = setup.config(&format!(
        "shutdown_timeout = \"2s\"\n\n{}{}",
        input("hook", "http", ""),
        destination("siem", &collector.url("/t"), "", "")
    ));
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "hook");

    let events = wallarm_hits(0, 2_000);
    let bodies: Vec<Vec<u8>> = events
        .chunks(50)
        .map(|c| format!("[{}]", c.join(",")).into_bytes())
        .collect();
    // Until the disk is full: at most every body once.
    let mut next = 0;
    let refused = loop {
        assert!(
            next < bodies.len(),
            "2,000 events never filled 128 KiB\n{}",
            tailhook.stderr()
        );
        let reply = post(addr, &bodies[next]);
        if reply.status == 503 {
            break reply;
        }
        assert_eq!(reply.status, 200, "{reply:?}");
        next += 1;
    };
    assert_eq!(refused.header("retry-after"), Some("5"), "{refused:?}");
    assert!(
        refused.body.contains("No space left on device"),
        "the answer says why: {:?}",
        refused.body
    );
    assert_eq!(blocked(&tailhook, "hook"), 1.0);

    disk.grow("64m");
    for body in &bodies[next..] {
        let reply = post(addr, body);
        assert_eq!(reply.status, 200, "{reply:?}\n{}", tailhook.stderr());
    }
    assert_eq!(blocked(&tailhook, "hook"), 0.0);
    assert!(
        collector.wait_for_events(events.len(), WAIT),
        "got {} of {} events\n{}",
        collector.event_count(),
        events.len(),
        tailhook.stderr()
    );
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&collector, &events, "webhooks through a full disk");
}
