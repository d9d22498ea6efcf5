//! Hostile clients against every listener, through the real binary run under
//! `ulimit -n 1024` (a common container limit), on 127.0.0.1 only.
//!
//! More slow and silent connections than `max_connections` are opened against
//! the `http` input (headers sent a byte a second, bodies sent a byte a
//! second, kept-alive connections left idle), the `tcp` input (silent) and the
//! metrics listener (headers a byte a second), while real senders post 10,000
//! webhook events and stream 1,000 lines. Every real event must reach the
//! collector emulator, `/metrics` must answer, no checkpoint write may fail,
//! and every hostile connection must be closed by tailhook (the client sees
//! the end of the stream), each counted under its timeout. The hostile
//! connections are opened while the real senders send, so these wait in
//! the listen backlog behind them (past the cap, connections wait there,
//! holding none of tailhook's 1,024 file descriptors).
//!
//! A second test holds unfinished bodies on 40 connections and checks that
//! tailhook's peak resident memory stays within what `max_connections` ×
//! `max_body_bytes` allows.
//!
//! Timeouts are configured short (1 s) so the test is quick; nothing here
//! asserts how fast anything is, only that it happens within a generous bound.

mod support;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::check::{stop, wait_for_all_seqs};
use support::collector::{Collector, Options};
use support::http_client::{exchange, request_bytes, Reply, JSON};
use support::inputs::{input, listen_addr};
use support::metrics::{get_within, metrics_addr, wait_for_page};
use support::process::Tailhook;
use support::setup::{destination, hits, seq_of, Setup};

/// The longest any wait in this file may take.
const WAIT: Duration = Duration::from_secs(120);

/// Hostile connections of each kind.
const HOOK_SLOW_HEADERS: usize = 700;
const HOOK_SLOW_BODIES: usize = 40;
const HOOK_IDLE_KEEPALIVE: usize = 20;
const TCP_SILENT: usize = 300;
const METRICS_SLOW_HEADERS: usize = 20;

/// The caps of the test config (the metrics listener's is fixed at 16, and
/// its header timeout at 10 s).
const HOOK_MAX_CONNECTIONS: usize = 64;
const TCP_MAX_CONNECTIONS: usize = 32;

/// `tailhook run -c <config>` under `ulimit -n 1024`: `ulimit -n` in sh sets
/// the soft and the hard limit, so tailhook cannot raise it. Checks that the
/// limit is in force.
fn start_under_ulimit(config: &Path) -> Tailhook {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" run -c \"$1\"")
        .arg(env!("CARGO_BIN_EXE_tailhook"))
        .arg(config);
    let tailhook = Tailhook::spawn(cmd);
    // The same process once sh has exec'd: its limits are tailhook's.
    let _ = metrics_addr(&tailhook);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", tailhook.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/PID/limits");
    assert_eq!(
        open_files.split_whitespace().nth(3),
        Some("1024"),
        "{open_files}"
    );
    tailhook
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A connection with `first` written, its writes bounded so that a client
/// that tailhook no longer reads never blocks the test.
fn open(addr: SocketAddr, first: &[u8]) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, WAIT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    if !first.is_empty() {
        (&s).write_all(first).unwrap();
    }
    s
}

/// A request head that is never finished.
const UNFINISHED_HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// A complete head announcing a body that will come a byte a second.
fn slow_body_head() -> Vec<u8> {
    let mut head = request_bytes("POST", "/", &[JSON, ("Content-Length", "60000")], b"");
    head.push(b'[');
    head
}

/// Connections that get one byte a second, from one thread, until `done`.
#[derive(Clone, Default)]
struct Slowloris {
    conns: Arc<Mutex<Vec<Option<TcpStream>>>>,
    done: Arc<AtomicBool>,
}

impl Slowloris {
    fn add(&self, s: &TcpStream) {
        let s = s.try_clone().unwrap();
        self.conns.lock().unwrap().push(Some(s));
    }

    /// Its sleep is the attack's pace, not a wait for anything.
    fn start(&self) -> JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            while !me.done.load(Ordering::Relaxed) {
                for slot in me.conns.lock().unwrap().iter_mut() {
                    // A closed connection fails the write (EPIPE, reset).
                    if slot.as_ref().is_some_and(|mut s| s.write(b" ").is_err()) {
                        *slot = None;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    }
}

/// Opens `n` connections to `addr` one after the other, each with `first`
/// written, as fast as the kernel takes them: past the listen backlog, only
/// as tailhook frees room. Those given to `slow` get a byte a second.
/// Says `what` on `opened` once `signal_at` are open; returns them all.
fn attack(
    addr: SocketAddr,
    n: usize,
    first: Vec<u8>,
    slow: Option<Slowloris>,
    (signal_at, opened, what): (usize, mpsc::Sender<&'static str>, &'static str),
) -> JoinHandle<Vec<TcpStream>> {
    std::thread::spawn(move || {
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let s = open(addr, &first);
            if let Some(slow) = &slow {
                slow.add(&s);
            }
            conns.push(s);
            if i + 1 == signal_at {
                let _ = opened.send(what);
            }
        }
        conns
    })
}

/// How many clients of `port` (other than `except`, by local port) are
/// connected, by /proc/net/tcp.
fn connected_to(port: u16, except: &[TcpStream]) -> usize {
    const ESTABLISHED: u8 = 1;
    let except: BTreeSet<u16> = except
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    tcp_table(port)
        .iter()
        .filter(|(local, remote, state, ..)| {
            *remote == port && *state == ESTABLISHED && !except.contains(local)
        })
        .count()
}

/// Reads until tailhook closes the connection (end of stream, or a reset
/// when it closed with bytes of ours unread), by `deadline`; returns what
/// was received, or why it did not close.
fn closed_by(s: &TcpStream, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "still open; received {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match (&*s).read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(got),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Waits for tailhook to close every connection in `conns`; panics naming
/// those still open. Returns what each received.
fn assert_all_closed(
    what: &str,
    conns: &[TcpStream],
    deadline: Instant,
    log: &str,
) -> Vec<Vec<u8>> {
    let mut received = Vec::new();
    let mut open = Vec::new();
    for (i, s) in conns.iter().enumerate() {
        match closed_by(s, deadline) {
            Ok(r) => received.push(r),
            Err(why) => open.push(format!("#{i}: {why}")),
        }
    }
    assert!(
        open.is_empty(),
        "{what}: {} of {} connections were not closed by tailhook: {:?}\n--- tailhook stderr ---\n{log}",
        open.len(),
        conns.len(),
        &open[..open.len().min(5)]
    );
    received
}

/// A connection for a real sender: it may wait in the listen backlog
/// behind the hostile ones, so its reads wait up to [`WAIT`].
fn sender_conn(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

/// Posts each batch on one kept-alive connection (a new one if tailhook
/// closes it), each until answered; panics on an answer that is not 200.
/// Returns the longest wait for an answer.
fn post_batches(addr: SocketAddr, batches: Vec<Vec<String>>) -> Duration {
    let mut conn: Option<TcpStream> = None;
    let mut longest = Duration::ZERO;
    for batch in batches {
        let body = format!("[{}]", batch.join(",")).into_bytes();
        let request = request_bytes("POST", "/", &[JSON, ("Connection", "keep-alive")], &body);
        let mut tries = 0;
        loop {
            let s = conn.get_or_insert_with(|| sender_conn(addr));
            let sent = Instant::now();
            match exchange(s, &request) {
                Ok(Reply { status: 200, .. }) => {
                    longest = longest.max(sent.elapsed());
                    break;
                }
                Ok(other) => panic!("a real webhook request was answered {other:?}"),
                Err(e) => {
                    // Closed between requests: send again on a new one.
                    tries += 1;
                    assert!(
                        tries < 5,
                        "a real webhook request failed {tries} times: {e}"
                    );
                    conn = None;
                }
            }
        }
    }
    longest
}

fn seqs(events: &[String]) -> BTreeSet<u64> {
    events.iter().map(|e| seq_of(e.as_bytes())).collect()
}

/// `http` and `tcp` inputs and the metrics listener, each with more
/// hostile connections than its `max_connections`, under `ulimit -n 1024`:
/// (a) a real webhook sender posting 10,000 events and a real tcp sender
/// streaming 1,000 lines get every event to the collector; (b) `/metrics`
/// answers; (c) no checkpoint write fails, and some are written; (d) every
/// hostile connection is closed by tailhook — slow headers by
/// `header_timeout`, slow bodies by `body_timeout`/`min_body_rate` (408),
/// idle kept-alive connections by `keepalive_timeout`, silent tcp ones by
/// `idle_timeout`, the metrics listener's slow headers by its fixed 10 s —
/// and counted in `tailhook_input_connections_timed_out_total`; the cuts
/// are logged, at most once a minute per listener and timeout. How long the
/// real sender waited is printed, not asserted.
#[test]
fn slow_and_silent_clients_past_every_cap_do_not_stop_real_senders_under_ulimit_1024() {
    let setup = Setup::new();
    let collector = Collector::start(Options::fluentd());
    let mut blocks = input(
        "hook",
        "http",
        &format!(
            "max_connections = {HOOK_MAX_CONNECTIONS}\nheader_timeout = \"1s\"\nbody_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\nmax_body_bytes = \"64KiB\"\n"
        ),
    );
    blocks.push_str(&input(
        "lines",
        "tcp",
        &format!("max_connections = {TCP_MAX_CONNECTIONS}\nidle_timeout = \"1s\"\n"),
    ));
    blocks.push_str(&destination("collector", &collector.url("/t"), "", ""));
    let config = setup.config(&blocks);
    let tailhook = start_under_ulimit(&config);
    let hook = listen_addr(&tailhook, "hook");
    let lines = listen_addr(&tailhook, "lines");
    let metrics = metrics_addr(&tailhook);

    // Kept-alive connections, each after one real request, then idle.
    let keepalive_events = hits(20_000, HOOK_IDLE_KEEPALIVE, 200);
    let idle: Vec<TcpStream> = keepalive_events
        .iter()
        .map(|e| {
            let mut s = sender_conn(hook);
            let r = exchange(
                &mut s,
                &request_bytes(
                    "POST",
                    "/",
                    &[JSON, ("Connection", "keep-alive")],
                    e.as_bytes(),
                ),
            )
            .unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            s
        })
        .collect();

    // The hostile connections, opened while the real senders send. The
    // senders start once each listener has more hostile connections than
    // it serves at once and its listen backlog (128) is full.
    let slowloris = Slowloris::default();
    let dribbler = slowloris.start();
    let (opened, enough) = mpsc::channel();
    let hook_heads = attack(
        hook,
        HOOK_SLOW_HEADERS,
        UNFINISHED_HEAD.to_vec(),
        Some(slowloris.clone()),
        (
            HOOK_MAX_CONNECTIONS + 128,
            opened.clone(),
            "http slow headers",
        ),
    );
    let hook_bodies = attack(
        hook,
        HOOK_SLOW_BODIES,
        slow_body_head(),
        Some(slowloris.clone()),
        (HOOK_SLOW_BODIES, opened.clone(), "http slow bodies"),
    );
    let tcp_silent = attack(
        lines,
        TCP_SILENT,
        Vec::new(),
        None,
        (TCP_MAX_CONNECTIONS + 128, opened.clone(), "tcp silent"),
    );
    let metrics_heads = attack(
        metrics,
        METRICS_SLOW_HEADERS,
        b"GET /metrics HTTP/1.1\r\nX-Slow: ".to_vec(),
        Some(slowloris.clone()),
        (METRICS_SLOW_HEADERS, opened, "metrics slow headers"),
    );
    for _ in 0..4 {
        enough
            .recv_timeout(WAIT)
            .expect("the hostile connections could not be opened");
    }
    // The premise: more hostile connections than the listener serves at once.
    let hostile = connected_to(hook.port(), &idle);
    assert!(
        hostile > HOOK_MAX_CONNECTIONS,
        "only {hostile} hostile connections to the http input when the senders start"
    );

    // The real senders: 10,000 webhook events in 100 requests, 1,000 lines.
    let webhook_events = hits(0, 10_000, 200);
    let batches: Vec<Vec<String>> = webhook_events.chunks(100).map(<[String]>::to_vec).collect();
    let webhook = std::thread::spawn(move || post_batches(hook, batches));
    let tcp_events = hits(10_000, 1_000, 200);
    let tcp_sender = {
        let mut data = Vec::new();
        for e in &tcp_events {
            data.extend_from_slice(e.as_bytes());
            data.push(b'\n');
        }
        std::thread::spawn(move || {
            let mut s = sender_conn(lines);
            s.write_all(&data).unwrap();
        })
    };

    // (b) /metrics answers, once the slow clients ahead of it are cut.
    let asked = Instant::now();
    let page = get_within(metrics, "/metrics", WAIT);
    assert_eq!(page.status, 200, "{page:?}");
    let metrics_wait = asked.elapsed();

    // (a) every real event reaches the collector.
    let longest = webhook.join().expect("the webhook sender");
    tcp_sender.join().expect("the tcp sender");
    let hook_heads = hook_heads.join().unwrap();
    let hook_bodies = hook_bodies.join().unwrap();
    let tcp_silent = tcp_silent.join().unwrap();
    let metrics_heads = metrics_heads.join().unwrap();
    let mut want = seqs(&webhook_events);
    want.extend(seqs(&tcp_events));
    want.extend(seqs(&keepalive_events));
    assert!(
        wait_for_all_seqs(&collector, &want, WAIT),
        "the collector got {} events, not every one of {}\n--- tailhook stderr ---\n{}",
        collector.event_count(),
        want.len(),
        tailhook.stderr()
    );

    // (d) every hostile connection is closed by tailhook.
    let deadline = Instant::now() + WAIT;
    let log = tailhook.stderr();
    assert_all_closed("slow headers (http)", &hook_heads, deadline, &log);
    let answers = assert_all_closed("slow bodies (http)", &hook_bodies, deadline, &log);
    assert_all_closed("idle kept-alive (http)", &idle, deadline, &log);
    assert_all_closed("silent (tcp)", &tcp_silent, deadline, &log);
    assert_all_closed("slow headers (metrics)", &metrics_heads, deadline, &log);
    slowloris.done.store(true, Ordering::Relaxed);
    dribbler.join().unwrap();
    // A slow body is answered 408 before the close (unless the close, with
    // bytes of the client unread, reset the connection first).
    for a in answers.iter().filter(|a| !a.is_empty()) {
        assert!(
            a.starts_with(b"HTTP/1.1 408 "),
            "{:?}",
            String::from_utf8_lossy(a)
        );
    }

    // Each cut counted under its timeout; (c) checkpoints written, none failed.
    let counted = |p: &support::metrics::Page, source: &str, reason: &str| {
        p.sum(
            "tailhook_input_connections_timed_out_total",
            &[("source", source), ("reason", reason)],
        )
    };
    let page = wait_for_page(
        metrics,
        &tailhook,
        WAIT,
        "every hostile connection counted under its timeout",
        &["tailhook_input_connections", "tailhook_checkpoint"],
        |p| {
            counted(p, "hook", "header_timeout") >= HOOK_SLOW_HEADERS as f64
                && counted(p, "hook", "body_timeout") >= HOOK_SLOW_BODIES as f64
                && counted(p, "hook", "keepalive_timeout") >= HOOK_IDLE_KEEPALIVE as f64
                && counted(p, "lines", "idle_timeout") >= TCP_SILENT as f64
                && p.sum("tailhook_checkpoint_writes_total", &[]) > 0.0
                // Every connection closed, the real senders' too.
                && p.get("tailhook_input_connections", &[("source", "hook")]) == Some(0.0)
                && p.get("tailhook_input_connections", &[("source", "lines")]) == Some(0.0)
        },
    );
    assert_eq!(
        page.sum("tailhook_checkpoint_write_failures_total", &[]),
        0.0,
        "{}",
        page.matching("tailhook_checkpoint")
    );

    // Logged in words, at most once a minute per listener (the rest counted
    // in the next line).
    let log = tailhook.stderr();
    for (words, at_least) in [
        (
            "did not send its request headers within 1s (header_timeout)",
            1,
        ),
        ("the request body arrived too slowly", 1),
        ("closing a connection silent for 1s", 1),
        (
            "metrics: closed a connection that did not send its request headers within 10s",
            1,
        ),
    ] {
        let n = log.matches(words).count();
        assert!(
            n >= at_least && n <= 3,
            "{words:?} logged {n} times (at most once a minute expected):\n{log}"
        );
    }
    for bad in ["os error 24", "Too many open files", "ERROR", "panicked"] {
        assert!(!log.contains(bad), "{bad}:\n{log}");
    }
    eprintln!(
        "measured: {hostile} hostile connections to the http input when the senders came; \
         longest wait for a webhook answer {longest:?}; \
         /metrics answered after {metrics_wait:?}; peak RSS {} KiB",
        status_kib(tailhook.pid(), "VmHWM")
    );
    stop(tailhook);
}

// ---- memory --------------------------------------------------------------------

/// The connections of `port` as /proc/net/tcp lists them: (local port,
/// remote port, state, bytes in the send queue, bytes in the receive queue).
fn tcp_table(port: u16) -> Vec<(u16, u16, u8, u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex_port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote) = (hex_port(f[1]), hex_port(f[2]));
            let state = u8::from_str_radix(f[3], 16).unwrap();
            let (tx, rx) = f[4].split_once(':').unwrap();
            let q = |x: &str| u64::from_str_radix(x, 16).unwrap();
            (local == port || remote == port).then(|| (local, remote, state, q(tx), q(rx)))
        })
        .collect()
}

/// How many of the connections to `port` whose clients (by local port)
/// have written `written` bytes tailhook has read `whole` bytes of: what a
/// client wrote, less what waits in its send queue and in tailhook's
/// receive queue. `written` is read before the queues, so a write racing
/// this only makes it count less.
fn read_whole(port: u16, clients: &[(u16, Arc<AtomicU64>)], whole: u64) -> usize {
    let written: Vec<(u16, u64)> = clients
        .iter()
        .map(|(p, w)| (*p, w.load(Ordering::SeqCst)))
        .collect();
    let table = tcp_table(port);
    let queued = |local: u16, remote: u16| -> u64 {
        table
            .iter()
            .filter(|(l, r, ..)| *l == local && *r == remote)
            .map(|(.., tx, rx)| tx + rx)
            .sum()
    };
    written
        .iter()
        .filter(|(client, w)| {
            w.saturating_sub(queued(*client, port) + queued(port, *client)) >= whole
        })
        .count()
}

/// 40 connections each send an unfinished body of almost `max_body_bytes`
/// (1 MiB) and stop, to an `http` input with `max_connections = 8`: only 8
/// are read (the others wait in the listen backlog, in the kernel), so
/// tailhook's peak resident memory grows by at most 8 × (1 MiB of body + 64
/// KiB of read buffer) + 8 MiB of slack — not the 40 MiB that serving all
/// 40 would take — and it does grow by most of 8 MiB (the bodies are held).
#[test]
fn unfinished_bodies_take_at_most_max_connections_times_max_body_bytes() {
    const CONNECTIONS: usize = 40;
    const CAP: u64 = 8;
    const MAX_BODY: u64 = 1 << 20;
    const SENT: u64 = MAX_BODY - 4096;
    let setup = Setup::new();
    let collector = Collector::start(Options::fluentd());
    let mut blocks = input(
        "hook",
        "http",
        &format!("max_connections = {CAP}\nmax_body_bytes = {MAX_BODY}\nbody_timeout = \"5m\"\n"),
    );
    blocks.push_str(&destination("collector", &collector.url("/t"), "", ""));
    let tailhook = start_under_ulimit(&setup.config(&blocks));
    let hook = listen_addr(&tailhook, "hook");
    let pid = tailhook.pid();
    // One request first, so what the first one allocates is in the baseline.
    let mut s = sender_conn(hook);
    let r = exchange(&mut s, &request_bytes("POST", "/", &[JSON], b"{\"seq\":1}")).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    drop(s);
    let baseline = status_kib(pid, "VmRSS");

    let conns: Vec<TcpStream> = (0..CONNECTIONS).map(|_| sender_conn(hook)).collect();
    let head = request_bytes(
        "POST",
        "/",
        &[JSON, ("Content-Length", &MAX_BODY.to_string())],
        b"",
    );
    let whole = head.len() as u64 + SENT;
    let progress: Vec<(u16, Arc<AtomicU64>)> = conns
        .iter()
        .map(|s| (s.local_addr().unwrap().port(), Arc::new(AtomicU64::new(0))))
        .collect();
    let clients: Vec<JoinHandle<()>> = conns
        .iter()
        .zip(&progress)
        .map(|(s, (_, written))| {
            let (mut s, written, head) = (s.try_clone().unwrap(), written.clone(), head.clone());
            std::thread::spawn(move || {
                let mut data = head;
                data.resize(whole as usize, b' ');
                // Those waiting in the backlog block here until the end.
                for piece in data.chunks(64 << 10) {
                    if s.write_all(piece).is_err() {
                        return;
                    }
                    written.fetch_add(piece.len() as u64, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Wait until tailhook has read the whole of what the served connections
    // sent. The kernel tells this only when asked: poll /proc/net/tcp.
    let deadline = Instant::now() + WAIT;
    while read_whole(hook.port(), &progress, whole) < CAP as usize {
        assert!(
            Instant::now() < deadline,
            "tailhook did not read the bodies of {CAP} connections: {:?}\n{}",
            tcp_table(hook.port()),
            tailhook.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss = status_kib(pid, "VmRSS");
    let peak = status_kib(pid, "VmHWM");
    let per_connection_kib = (MAX_BODY + (64 << 10)) / 1024;
    let bound = baseline + CAP * per_connection_kib + 8 * 1024;
    eprintln!(
        "measured: RSS {baseline} KiB before, {rss} KiB with {CONNECTIONS} bodies of {SENT} bytes held \
         ({CAP} served), peak {peak} KiB; bound {bound} KiB"
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB is over baseline {baseline} KiB + {CAP} × {per_connection_kib} KiB + 8 MiB = {bound} KiB"
    );
    assert!(
        rss >= baseline + CAP * SENT / 1024 * 3 / 4,
        "RSS grew from {baseline} to only {rss} KiB: the bodies are not held, the test proves nothing"
    );
    assert_eq!(
        read_whole(hook.port(), &progress, whole),
        CAP as usize,
        "only max_connections bodies are read: {:?}",
        tcp_table(hook.port())
    );
    for s in &conns {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for c in clients {
        c.join().unwrap();
    }
    stop(tailhook);
}
