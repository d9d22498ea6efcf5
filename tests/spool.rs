//! The spool through the real binary: socket input waits on disk under
//! `data_dir/spool/` until every destination has it. Checked here: a TCP
//! sender is slowed, not dropped, when the spool is full; datagrams are
//! dropped and counted instead; what was taken while the collector was down
//! is delivered after a restart (SIGTERM or kill -9); delivered segments are
//! deleted, but not while one destination is still behind.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::check::{assert_clean_exit, assert_each_exactly_once, dead_port, seqs};
use support::collector::{fluentd, Collector, Options};
use support::inputs::{listen_addr, spool_segments};
use support::process::Tailhook;
use support::setup::{hits, Setup};

const WAIT: Duration = Duration::from_secs(30);

/// Event bytes in a source's spool: every segment after its header line.
fn spool_bytes(setup: &Setup, source: &str) -> u64 {
    spool_segments(setup, source)
        .iter()
        .map(|p| {
            let data = std::fs::read(p).unwrap_or_default();
            if data.is_empty() {
                // Just created: its header is being written.
                return 0;
            }
            let header = data.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
            assert!(
                data.starts_with(b"{\"tailhook_spool\":\"v1\","),
                "segment {} has no header",
                p.display()
            );
            (data.len() - header) as u64
        })
        .sum()
}

/// Polls a condition on files, for which there is no signal to wait on:
/// every 20 ms, for at most `WAIT`.
fn poll(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send_lines(addr: std::net::SocketAddr, lines: &[String]) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
    }
    s.write_all(&buf).unwrap();
}

#[test]
fn a_tcp_sender_is_slowed_not_dropped_while_the_spool_is_full() {
    let setup = Setup::new();
    let dead = dead_port();
    let port = dead.port;
    let url = format!("http://127.0.0.1:{port}/t");
    let cfg = setup
        .builder()
        .block("[spool]\nmax_bytes = \"1MiB\"")
        .input("net", "tcp")
        .destination("down", &url)
        .extra("concurrency = 1\n")
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "net");

    // Far more than the spool plus every socket buffer on the way.
    let lines = hits(0, 24_000, 1000);
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (lines, done) = (lines.clone(), done.clone());
        std::thread::spawn(move || {
            send_lines(addr, &lines);
            done.store(true, Ordering::SeqCst);
        })
    };
    assert!(
        tailhook.wait_for_log("the spool is full: senders are slowed", WAIT),
        "{}",
        tailhook.stderr()
    );
    // Full, and held there: the sender is blocked, and the disk is bounded
    // by max_bytes (plus the one read chunk that found it full).
    assert!(!done.load(Ordering::SeqCst), "the sender was not slowed");
    let used = spool_bytes(&setup, "net");
    assert!(used <= (1 << 20) + 64 * 1024, "spool holds {used} bytes");

    // The collector comes back: everything arrives, once, in order (one
    // batch in flight: with more, two batches retried after the outage may
    // reach the collector in either order).
    let collector = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    assert!(
        collector.wait_for_events(lines.len(), Duration::from_secs(120)),
        "got {} of {} events\n{}",
        collector.event_count(),
        lines.len(),
        tailhook.stderr()
    );
    sender.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert_each_exactly_once(&collector, &lines, "tcp input through a full spool");
    let got = seqs(&collector);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "events out of order");
    assert_clean_exit(&tailhook.terminate());
}

#[test]
fn datagrams_are_dropped_and_counted_while_the_spool_is_full() {
    let setup = Setup::new();
    let dead = dead_port();
    let port = dead.port;
    let url = format!("http://127.0.0.1:{port}/t");
    let config = setup
        .builder()
        .block("[spool]\nmax_bytes = \"1MiB\"")
        .input("dgram", "udp")
        .destination("down", &url);
    let tailhook = Tailhook::start(&config.write());
    let addr = listen_addr(&tailhook, "dgram");

    // One datagram at a time, each seen in the spool before the next, so
    // the kernel drops none: the first that tailhook cannot take is the
    // one it must drop and count.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let lines = hits(0, 200, 30_000);
    let mut kept = 0;
    let mut spooled = 0u64;
    for l in &lines {
        socket.send_to(l.as_bytes(), addr).unwrap();
        let want = spooled + l.len() as u64 + 1;
        poll("the datagram is spooled or dropped", || {
            spool_bytes(&setup, "dgram") == want
                || tailhook.wait_for_log("datagrams are dropped", Duration::ZERO)
        });
        if spool_bytes(&setup, "dgram") != want {
            break;
        }
        spooled = want;
        kept += 1;
    }
    assert!(
        tailhook.wait_for_log("the spool is full: datagrams are dropped", Duration::ZERO),
        "a 1 MiB spool took {kept} datagrams of 30 KB"
    );
    assert!(kept < lines.len());
    let exit = tailhook.terminate();
    assert_clean_exit(&exit);
    let dropped: usize = exit
        .stderr
        .lines()
        .find(|l| l.contains("datagrams dropped because the spool was full"))
        .and_then(|l| l.split("dropped=").nth(1))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no drop count in the log:\n{}", exit.stderr));
    assert_eq!(dropped, 1, "exactly the one datagram that found it full");

    // What was taken is delivered after a restart; nothing twice.
    let collector = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    let tailhook = Tailhook::start(&config.write());
    assert!(
        collector.wait_for_events(kept, WAIT),
        "kept {kept}, got {}",
        collector.event_count()
    );
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(
        &collector,
        &lines[..kept],
        "datagrams taken before the spool was full",
    );
}

fn restart_delivers(kill: bool) {
    let setup = Setup::new();
    let dead = dead_port();
    let port = dead.port;
    let url = format!("http://127.0.0.1:{port}/t");
    let cfg = setup
        .builder()
        .block("[spool]\nmax_bytes = \"64MiB\"")
        .input("net", "tcp")
        .destination("down", &url)
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "net");
    let lines = hits(0, 5_000, 300);
    send_lines(addr, &lines);
    let expected: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    poll("the spool holds every line sent", || {
        spool_bytes(&setup, "net") == expected
    });
    if kill {
        tailhook.kill9();
    } else {
        assert_clean_exit(&tailhook.terminate());
    }
    let collector = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    let tailhook = Tailhook::start(&cfg);
    assert!(
        collector.wait_for_events(lines.len(), WAIT),
        "got {} of {}\n{}",
        collector.event_count(),
        lines.len(),
        tailhook.stderr()
    );
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&collector, &lines, "spooled while the collector was down");
}

#[test]
fn what_was_spooled_while_the_collector_was_down_is_delivered_after_sigterm_and_restart() {
    restart_delivers(false);
}

#[test]
fn what_was_spooled_while_the_collector_was_down_is_delivered_after_kill_9_and_restart() {
    restart_delivers(true);
}

#[test]
fn segments_are_deleted_once_every_destination_has_them() {
    let setup = Setup::new();
    let up = fluentd();
    let dead = dead_port();
    let port = dead.port;
    let late_url = format!("http://127.0.0.1:{port}/t");
    // 1 MiB spool: 128 KiB segments.
    let cfg = setup
        .builder()
        .block("[spool]\nmax_bytes = \"1MiB\"")
        .input("net", "tcp")
        .destination("up", &up.url("/t"))
        .destination("late", &late_url)
        .write();
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "net");
    let lines = hits(0, 2_000, 300);
    send_lines(addr, &lines);
    assert!(up.wait_for_events(lines.len(), WAIT));
    // `late` has none of it: every closed segment must stay.
    let expected: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    poll("the spool holds every line sent", || {
        spool_bytes(&setup, "net") == expected
    });
    let before = spool_segments(&setup, "net");
    assert!(before.len() >= 4, "expected several segments: {before:?}");

    let late = Collector::start(Options {
        port,
        ..Options::fluentd()
    });
    assert!(late.wait_for_events(lines.len(), Duration::from_secs(60)));
    // Only the segment being written stays.
    poll("delivered segments are deleted", || {
        spool_segments(&setup, "net").len() == 1
    });
    assert_eq!(spool_segments(&setup, "net"), before[before.len() - 1..]);
    assert_clean_exit(&tailhook.terminate());
    assert_each_exactly_once(&up, &lines, "up");
    assert_each_exactly_once(&late, &lines, "late");

    // After a restart the old segment is closed, and goes too.
    let tailhook = Tailhook::start(&cfg);
    poll("the last run's segment is deleted", || {
        spool_segments(&setup, "net").is_empty()
    });
    assert_clean_exit(&tailhook.terminate());
    assert!(!Path::new(&before[before.len() - 1]).exists());
}
