//! The socket and stdin inputs (`tcp`, `unix`, `udp`, `stdin`) end to end:
//! the real binary listens on 127.0.0.1 (or a socket file), test clients send
//! newline-delimited JSON, the input goes through the spool, and the collector
//! emulator receives it. What is checked is what a user sees: the events a
//! collector accepted (count, order, exact bytes), the socket file, the exit
//! code and the words of errors and logs.
//!
//! The `http` input is tested elsewhere.

mod support;

use support::check::{assert_same_events, ndjson, show, stop, wait_events, wait_log};

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use support::check::{assert_clean_exit, assert_each_exactly_once, dead_port, seqs};
use support::collector::{fluentd, Collector, Options};
use support::inputs::{input, listen_addr, spool_segments, wait_unix_listening};
use support::process::{bin, run_cmd, Exit, Tailhook};
use support::setup::{bytes_of, hits, wallarm_hits, ConfigBuilder, Setup};
use support::tls::{make_pki, ClientCa, TestPki};

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(30);

// ---- helpers ------------------------------------------------------------------

/// The sources of `builder` and one destination `fluentd` to `collector`,
/// one request at a time so that the collector sees events in spool order.
fn config(builder: ConfigBuilder, collector: &Collector) -> PathBuf {
    builder
        .destination("fluentd", &collector.url("/wallarm.events"))
        .extra("concurrency = 1")
        .write()
}

/// The event `on_invalid = "wrap"` forwards for an invalid line.
fn wrapped(message: &str, why: &str) -> Vec<u8> {
    format!(
        "{{\"message\":{},\"tailhook_error\":{}}}",
        serde_json::to_string(message).unwrap(),
        serde_json::to_string(why).unwrap()
    )
    .into_bytes()
}

/// Writes `data`, ends the sending side, and waits (bounded) until the peer
/// closes: tailhook then has read everything this connection sent.
fn send_and_close<S: Read + Write>(stream: &mut S, data: &[u8], shut: impl FnOnce(&S)) {
    stream.write_all(data).expect("send");
    stream.flush().expect("flush");
    shut(stream);
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("tailhook closes the connection after the end of input");
}

/// One TCP connection that sends `data` in writes of `chunk` bytes (so that
/// lines are split across writes) and closes.
fn send_tcp_chunked(addr: SocketAddr, data: &[u8], chunk: usize) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    for piece in data.chunks(chunk) {
        s.write_all(piece).expect("send");
    }
    send_and_close(&mut s, b"", |s| s.shutdown(Shutdown::Write).unwrap());
}

fn send_tcp(addr: SocketAddr, data: &[u8]) {
    send_tcp_chunked(addr, data, data.len().max(1));
}

fn send_unix(path: &Path, data: &[u8]) {
    let mut s =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(WAIT)).unwrap();
    send_and_close(&mut s, data, |s| s.shutdown(Shutdown::Write).unwrap());
}

/// One TLS connection (server name `localhost`) that sends `data`, then
/// close_notify, and waits until tailhook closes. An error means the
/// connection was refused (or cut) somewhere on the way.
fn send_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>, data: &[u8]) -> io::Result<()> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(WAIT))?;
    sock.set_write_timeout(Some(WAIT))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(data)?;
    tls.flush()?;
    tls.conn.send_close_notify();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut tls.sock)?;
    }
    tls.sock.shutdown(Shutdown::Write)?;
    // Until tailhook closes: its alert, if it refused us, shows up here.
    loop {
        match tls.read(&mut [0u8; 4096]) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// A TOML basic string holding `p`.
fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A tcp source `name` serving TLS with the PKI's server certificate, and,
/// with `client_ca`, requiring client certificates signed by it.
fn tls_settings(setup: &Setup, pki: &TestPki, client_ca: Option<&Path>) -> String {
    let (cert, key) = pki.write_server(setup.dir.path());
    let ca = client_ca.map_or(String::new(), |p| {
        format!(", client_ca_file = {}", toml_path(p))
    });
    format!(
        "tls = {{ cert_file = {}, key_file = {}{ca} }}",
        toml_path(&cert),
        toml_path(&key)
    )
}

/// The JSON of an event, for checking a wrapped one field by field.
fn json(event: &[u8]) -> serde_json::Value {
    serde_json::from_slice(event)
        .unwrap_or_else(|e| panic!("event is not JSON ({e}): {}", show(event)))
}

// ---- 1. tcp: parallel connections ---------------------------------------------------

/// Eight connections at once, each sending 500 events in writes of 777 bytes
/// (lines split across writes): every event arrives exactly once, byte for
/// byte, and each connection's events in the order it sent them.
#[test]
fn tcp_parallel_connections_deliver_every_event_once_and_in_order_per_connection() {
    const CONNS: usize = 8;
    const PER: usize = 500;
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(setup.builder().input("tcp_in", "tcp"), &collector);
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "tcp_in");
    assert!(
        tailhook.stderr().contains(&format!(
            "tcp input listening source=tcp_in address={addr} tls=false"
        )),
        "{}",
        tailhook.stderr()
    );

    let per_conn: Vec<Vec<String>> = (0..CONNS).map(|k| hits(k * PER, PER, 200)).collect();
    std::thread::scope(|scope| {
        for lines in &per_conn {
            scope.spawn(move || send_tcp_chunked(addr, &ndjson(lines), 777));
        }
    });
    let all: Vec<String> = per_conn.concat();
    wait_events(&collector, &tailhook, all.len());
    // The input went through the spool: the segment being written stays
    // while tailhook runs.
    let segments = spool_segments(&setup, "tcp_in");
    assert!(!segments.is_empty(), "no spool segment");
    for seg in &segments {
        let name = seg.file_name().unwrap().to_string_lossy().to_string();
        let seq = name
            .strip_prefix("segment-")
            .and_then(|r| r.strip_suffix(".v1.ndjson"))
            .unwrap_or_else(|| panic!("spool segment named {name}"));
        assert!(
            seq.len() == 16 && seq.bytes().all(|b| b.is_ascii_digit()),
            "spool segment named {name}"
        );
    }
    stop(tailhook);

    assert_each_exactly_once(&collector, &all, "tcp, 8 connections");
    let seqs = seqs(&collector);
    for k in 0..CONNS as u64 {
        let mine: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|s| s / PER as u64 == k)
            .collect();
        let sent: Vec<u64> = (k * PER as u64..(k + 1) * PER as u64).collect();
        assert_eq!(mine, sent, "connection {k}: its events in the order sent");
    }
}

// ---- 2. tcp: framing and the last line of a connection -------------------------------

/// An object line, an array line (one event per element), a blank line, and
/// a last object without a newline before the close: all of them arrive, in
/// order, byte for byte.
#[test]
fn tcp_complete_lines_and_an_unterminated_last_object_are_all_delivered() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(setup.builder().input("tcp_in", "tcp"), &collector);
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "tcp_in");

    let h = hits(0, 5, 120);
    let mut data = Vec::new();
    data.extend_from_slice(format!("{}\n", h[0]).as_bytes());
    data.extend_from_slice(format!("[{},{}]\n", h[1], h[2]).as_bytes());
    data.extend_from_slice(b"\n   \n");
    data.extend_from_slice(format!("{}\n", h[3]).as_bytes());
    data.extend_from_slice(h[4].as_bytes()); // no newline: the connection closes
    send_tcp(addr, &data);

    wait_events(&collector, &tailhook, h.len());
    stop(tailhook);
    assert_same_events(
        &collector.events(),
        &bytes_of(&h),
        "tcp, unterminated last line",
    );
}

/// A connection whose last line is torn (cut inside an object) and then
/// closed: the complete lines arrive intact, the torn line is wrapped
/// (`on_invalid` default "wrap": the raw text plus why), and the next
/// connection's first line is not glued to it.
#[test]
fn tcp_a_torn_last_line_is_wrapped_and_the_next_connection_is_intact() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(setup.builder().input("tcp_in", "tcp"), &collector);
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "tcp_in");

    let h = hits(0, 3, 120);
    let torn = &h[2][..50];
    let mut data = ndjson(&h[..2]);
    data.extend_from_slice(torn.as_bytes());
    send_tcp(addr, &data);
    wait_events(&collector, &tailhook, 3);
    let next = hits(10, 1, 120);
    send_tcp(addr, &ndjson(&next));
    wait_events(&collector, &tailhook, 4);
    stop(tailhook);

    let events = collector.events();
    assert_eq!(
        events.len(),
        4,
        "{:?}",
        events.iter().map(|e| show(e)).collect::<Vec<_>>()
    );
    assert_same_events(&events[..2], &bytes_of(&h[..2]), "complete lines");
    let w = json(&events[2]);
    assert_eq!(
        w["message"], torn,
        "the wrapped message is the torn line as sent"
    );
    let why = w["tailhook_error"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("line is not valid JSON"),
        "tailhook_error: {why:?} in {}",
        show(&events[2])
    );
    assert_eq!(
        w.as_object().unwrap().len(),
        2,
        "only message and tailhook_error: {}",
        show(&events[2])
    );
    assert_eq!(
        events[3],
        next[0].as_bytes(),
        "the next connection's line, intact"
    );
}

/// `idle_timeout`: a connection that goes silent mid-line is closed by
/// tailhook (the sender sees the end of the stream); its complete lines are
/// delivered and its unfinished one is wrapped, as when a sender closes.
/// With `max_connections = 1`, the next sender is served once it is closed.
#[test]
fn tcp_a_silent_connection_is_closed_after_idle_timeout_and_keeps_its_lines() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(
        setup
            .builder()
            .input("tcp_in", "tcp")
            .extra("max_connections = 1\nidle_timeout = \"1s\""),
        &collector,
    );
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "tcp_in");

    let h = wallarm_hits(0, 3);
    let torn = &h[2][..h[2].len() / 2];
    let mut data = ndjson(&h[..2]);
    data.extend_from_slice(torn.as_bytes());
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.write_all(&data).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    assert!(
        silent.read_to_end(&mut rest).is_ok() && rest.is_empty(),
        "tailhook closes the silent connection\n{}",
        tailhook.stderr()
    );
    // The log line may come just after the close: wait for it.
    assert!(
        tailhook.wait_for_log("closing a connection silent for 1s", WAIT),
        "{}",
        tailhook.stderr()
    );
    let next = wallarm_hits(10, 1);
    send_tcp(addr, &ndjson(&next));
    wait_events(&collector, &tailhook, 4);
    stop(tailhook);

    let events = collector.events();
    assert_same_events(&events[..2], &bytes_of(&h[..2]), "complete lines");
    assert_eq!(
        json(&events[2])["message"],
        torn,
        "the unfinished line, wrapped"
    );
    assert_eq!(events[3], next[0].as_bytes(), "the next sender, served");
}

/// `on_invalid = "drop"`: a line that is not JSON, a scalar and a torn last
/// line are dropped; the events around them arrive intact and in order.
#[test]
fn tcp_on_invalid_drop_drops_bad_lines_and_keeps_the_rest() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(
        setup
            .builder()
            .input("tcp_in", "tcp")
            .extra("on_invalid = \"drop\""),
        &collector,
    );
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "tcp_in");

    let h = hits(0, 3, 100);
    let mut data = Vec::new();
    data.extend_from_slice(
        format!("{}\nnot json at all\n{}\n42\n{}\n", h[0], h[1], h[2]).as_bytes(),
    );
    data.extend_from_slice(b"{\"seq\":99,\"torn");
    send_tcp(addr, &data);
    // The torn line is the last thing sent: once the connection is closed
    // by tailhook everything is in the spool; a marker connection after it
    // tells when the pipeline got past it.
    let marker = hits(100, 1, 100);
    send_tcp(addr, &ndjson(&marker));
    wait_events(&collector, &tailhook, 4);
    stop(tailhook);

    let mut want = h.clone();
    want.extend(marker);
    assert_same_events(
        &collector.events(),
        &bytes_of(&want),
        "tcp, on_invalid drop",
    );
}

/// `max_connections = 1`: a second connection waits (in the listen backlog)
/// until the first one closes, then is served; nothing is lost, and its
/// events come after all of the first connection's, although it sent them
/// before the first one had finished.
#[test]
fn tcp_max_connections_1_serves_a_waiting_connection_after_the_first_closes() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(
        setup
            .builder()
            .input("tcp_in", "tcp")
            .extra("max_connections = 1"),
        &collector,
    );
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "tcp_in");

    let a1 = hits(0, 10, 120);
    let a2 = hits(10, 10, 120);
    let b = hits(100, 10, 120);
    let mut conn_a = TcpStream::connect(addr).unwrap();
    conn_a.set_read_timeout(Some(WAIT)).unwrap();
    conn_a.write_all(&ndjson(&a1)).unwrap();
    wait_events(&collector, &tailhook, a1.len());

    // B connects and sends everything while A is still open.
    let mut conn_b = TcpStream::connect(addr).unwrap();
    conn_b.set_read_timeout(Some(WAIT)).unwrap();
    conn_b.write_all(&ndjson(&b)).unwrap();
    conn_b.shutdown(Shutdown::Write).unwrap();

    send_and_close(&mut conn_a, &ndjson(&a2), |s| {
        s.shutdown(Shutdown::Write).unwrap()
    });
    let mut rest = Vec::new();
    conn_b
        .read_to_end(&mut rest)
        .expect("the waiting connection is served and closed");
    wait_events(&collector, &tailhook, 30);
    stop(tailhook);
    assert_same_events(
        &collector.events(),
        &bytes_of(&[a1, a2, b].concat()),
        "max_connections 1",
    );
}

/// SIGTERM while a client keeps its connection open: tailhook closes it and
/// exits 0 well within its bound; what the client sent before was delivered.
#[test]
fn tcp_sigterm_with_an_open_connection_exits_0() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(setup.builder().input("tcp_in", "tcp"), &collector);
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "tcp_in");

    let lines = hits(0, 20, 120);
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.write_all(&ndjson(&lines)).unwrap();
    wait_events(&collector, &tailhook, lines.len());

    let started = std::time::Instant::now();
    stop(tailhook);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?} with a connection open",
        started.elapsed()
    );
    let mut rest = Vec::new();
    assert_eq!(
        conn.read_to_end(&mut rest)
            .map(|_| ())
            .map_err(|e| e.kind()),
        Ok(()),
        "tailhook closed the open connection"
    );
    assert_same_events(&collector.events(), &bytes_of(&lines), "tcp before SIGTERM");
}

// ---- 3. tcp with TLS -------------------------------------------------------------------

/// A TLS listener: a client trusting the CA delivers its lines; a client that
/// talks plain TCP to it fails the handshake (logged) and delivers nothing.
#[test]
fn tcp_tls_delivers_from_a_tls_client_and_refuses_plain_text() {
    let setup = Setup::new();
    let pki = make_pki();
    let collector = fluentd();
    let cfg = config(
        setup
            .builder()
            .input("tls_in", "tcp")
            .extra(&tls_settings(&setup, &pki, None)),
        &collector,
    );
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "tls_in");
    assert!(
        tailhook.stderr().contains(&format!(
            "tcp input listening source=tls_in address={addr} tls=true"
        )),
        "{}",
        tailhook.stderr()
    );

    // Plain text to a TLS port: not a handshake.
    let plain = hits(1000, 3, 100);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&ndjson(&plain)).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    // Closed by tailhook, cleanly or with a reset: either will do.
    let _ = s.read_to_end(&mut Vec::new());
    wait_log(&tailhook, "TLS handshake failed");

    let lines = hits(0, 300, 200);
    send_tls(addr, pki.client_config(), &ndjson(&lines)).expect("TLS client");
    wait_events(&collector, &tailhook, lines.len());
    stop(tailhook);
    assert_same_events(&collector.events(), &bytes_of(&lines), "tcp over TLS");
}

/// `client_ca_file`: a client without a certificate, and one whose
/// certificate another CA signed, are refused (logged, nothing delivered);
/// a client with a certificate signed by the CA is accepted.
#[test]
fn tcp_tls_client_ca_file_accepts_only_clients_with_a_certificate_it_signed() {
    let setup = Setup::new();
    let pki = make_pki();
    let client_ca = ClientCa::new("tailhook test client CA");
    let client_ca_file = client_ca.write(setup.dir.path(), "client-ca.pem");
    let other_ca = ClientCa::new("another CA");
    let collector = fluentd();
    let cfg = config(
        setup.builder().input("mtls_in", "tcp").extra(&tls_settings(
            &setup,
            &pki,
            Some(&client_ca_file),
        )),
        &collector,
    );
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "mtls_in");

    // No client certificate. With TLS 1.3 the client may finish its side of
    // the handshake before the server judges it, so the client's own result
    // is not asserted: tailhook's log and the events are.
    let refused = hits(1000, 5, 100);
    let _ = send_tls(addr, pki.client_config(), &ndjson(&refused));
    wait_log(&tailhook, "TLS handshake failed");
    assert!(
        tailhook.stderr().contains("source=mtls_in"),
        "{}",
        tailhook.stderr()
    );

    // A certificate from another CA.
    let (cert, key) = other_ca.issue("intruder");
    let _ = send_tls(
        addr,
        pki.client_config_with_cert(&cert, &key),
        &ndjson(&hits(2000, 5, 100)),
    );
    assert!(
        tailhook.wait_for_log_count("TLS handshake failed", 2, WAIT),
        "the second refusal was not logged\n{}",
        tailhook.stderr()
    );

    // A certificate from the CA.
    let (cert, key) = client_ca.issue("tailhook-client");
    let lines = hits(0, 50, 150);
    send_tls(
        addr,
        pki.client_config_with_cert(&cert, &key),
        &ndjson(&lines),
    )
    .expect("a client with a certificate from client_ca_file is accepted");
    wait_events(&collector, &tailhook, lines.len());
    stop(tailhook);
    assert_same_events(
        &collector.events(),
        &bytes_of(&lines),
        "only the client with a certificate from client_ca_file",
    );
}

// ---- 4. max_line_bytes ----------------------------------------------------------------

/// `max_line_bytes = 100`: a line of exactly 100 bytes is an event; a line
/// of 101 bytes, one of 250 and one of 300,000 (it spans many reads) are
/// wrapped with their first 100 bytes and "line is longer than
/// max_line_bytes (100)"; the line after each arrives intact.
#[test]
fn tcp_lines_over_max_line_bytes_are_wrapped_with_their_first_bytes() {
    const MAX: usize = 100;
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(
        setup
            .builder()
            .input("tcp_in", "tcp")
            .extra(&format!("max_line_bytes = {MAX}\non_invalid = \"wrap\"")),
        &collector,
    );
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "tcp_in");

    let exact = hits(0, 1, MAX).remove(0);
    assert_eq!(exact.len(), MAX);
    let one_over = hits(1, 1, MAX + 1).remove(0);
    let after1 = hits(2, 1, 80).remove(0);
    let long = hits(3, 1, 250).remove(0);
    let after2 = hits(4, 1, 80).remove(0);
    let huge = hits(5, 1, 300_000).remove(0);
    let after3 = hits(6, 1, 80).remove(0);
    let sent = [
        exact.clone(),
        one_over.clone(),
        after1.clone(),
        long.clone(),
        after2.clone(),
        huge.clone(),
        after3.clone(),
    ];
    send_tcp_chunked(addr, &ndjson(&sent), 4096);

    let why = format!("line is longer than max_line_bytes ({MAX})");
    let want = vec![
        exact.into_bytes(),
        wrapped(&one_over[..MAX], &why),
        after1.into_bytes(),
        wrapped(&long[..MAX], &why),
        after2.into_bytes(),
        wrapped(&huge[..MAX], &why),
        after3.into_bytes(),
    ];
    wait_events(&collector, &tailhook, want.len());
    stop(tailhook);
    assert_same_events(&collector.events(), &want, "tcp, max_line_bytes 100");
}

// ---- 5. unix ---------------------------------------------------------------------------

fn socket_mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A unix source: the socket file has the configured mode, events from two
/// connections arrive byte for byte, and after SIGTERM the file is gone.
#[test]
fn unix_events_arrive_the_socket_has_its_mode_and_is_removed_at_exit() {
    let setup = Setup::new();
    let path = setup.dir.path().join("in.sock");
    let collector = fluentd();
    let cfg = config(
        setup
            .builder()
            .input("unix_in", "unix")
            .extra(&format!("path = {}\nmode = \"0620\"", toml_path(&path))),
        &collector,
    );
    let tailhook = Tailhook::start(&cfg);
    wait_unix_listening(&tailhook, "unix_in");
    wait_log(
        &tailhook,
        &format!(
            "unix input listening source=unix_in path={}",
            path.display()
        ),
    );
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        path.display()
    );
    assert_eq!(socket_mode(&path), 0o620, "the configured mode");

    let first = hits(0, 200, 200);
    let second = hits(200, 200, 200);
    send_unix(&path, &ndjson(&first));
    send_unix(&path, &ndjson(&second));
    wait_events(&collector, &tailhook, 400);
    stop(tailhook);

    assert_same_events(
        &collector.events(),
        &bytes_of(&[first, second].concat()),
        "unix",
    );
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "the socket file {} is still there after SIGTERM",
        path.display()
    );
}

/// A socket file left by a crash (bound, never unlinked, nobody listening) is
/// replaced, with a log line; the default mode is 0660.
#[test]
fn unix_a_stale_socket_file_is_replaced() {
    let setup = Setup::new();
    let path = setup.dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_socket());

    let collector = fluentd();
    let cfg = config(
        setup
            .builder()
            .input("unix_in", "unix")
            .extra(&format!("path = {}", toml_path(&path))),
        &collector,
    );
    let tailhook = Tailhook::start(&cfg);
    wait_unix_listening(&tailhook, "unix_in");
    wait_log(&tailhook, "removed a stale socket file");
    assert_eq!(socket_mode(&path), 0o660, "the default mode");

    let lines = hits(0, 20, 150);
    send_unix(&path, &ndjson(&lines));
    wait_events(&collector, &tailhook, lines.len());
    stop(tailhook);
    assert_same_events(&collector.events(), &bytes_of(&lines), "unix, stale socket");
}

/// A regular file at the socket path is never replaced: `tailhook run` exits
/// 1 in words and the file is untouched.
#[test]
fn unix_a_regular_file_at_the_path_is_an_error_and_is_kept() {
    let setup = Setup::new();
    let path = setup.dir.path().join("precious.sock");
    std::fs::write(&path, "precious data\n").unwrap();
    let collector = fluentd();
    let cfg = config(
        setup
            .builder()
            .input("unix_in", "unix")
            .extra(&format!("path = {}", toml_path(&path))),
        &collector,
    );

    let exit = run_cmd(&["run", "-c", &cfg.display().to_string()], &[]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stderr
            .contains(&format!("{} exists and is not a socket", path.display())),
        "{}",
        exit.output()
    );
    assert!(
        exit.stderr.contains("source `unix_in`"),
        "{}",
        exit.output()
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious data\n");
    assert_eq!(collector.event_count(), 0);
}

/// A socket another process listens on is not taken over: exit 1, and the
/// other process keeps its socket.
#[test]
fn unix_a_live_socket_at_the_path_is_an_error_and_is_kept() {
    let setup = Setup::new();
    let path = setup.dir.path().join("live.sock");
    let other = UnixListener::bind(&path).unwrap();
    let collector = fluentd();
    let cfg = config(
        setup
            .builder()
            .input("unix_in", "unix")
            .extra(&format!("path = {}", toml_path(&path))),
        &collector,
    );

    let exit = run_cmd(&["run", "-c", &cfg.display().to_string()], &[]);
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    assert!(
        exit.stderr.contains(&format!(
            "another process is listening on {}",
            path.display()
        )),
        "{}",
        exit.output()
    );
    // The other process's socket still works.
    let _client = UnixStream::connect(&path).expect("the other socket is still there");
    other.accept().expect("and still accepts");
}

// ---- 6. udp ----------------------------------------------------------------------------

/// A datagram of two lines, the second without a newline, gives two events;
/// a datagram of three lines gives three; then 10 one-line datagrams all
/// arrive (loopback, a small count: no loss expected). Fewer than 16 at
/// once, the spool writer's queue: a burst larger than that is the next
/// test's subject.
#[test]
fn udp_datagrams_of_one_or_more_lines_all_arrive() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(setup.builder().input("udp_in", "udp"), &collector);
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "udp_in");
    wait_log(
        &tailhook,
        &format!("udp input listening source=udp_in address={addr}"),
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();

    let two = hits(0, 2, 150);
    sock.send_to(format!("{}\n{}", two[0], two[1]).as_bytes(), addr)
        .unwrap();
    wait_events(&collector, &tailhook, 2);
    assert_same_events(
        &collector.events(),
        &bytes_of(&two),
        "a datagram of two lines",
    );

    let three = hits(2, 3, 150);
    sock.send_to(&ndjson(&three), addr).unwrap();
    wait_events(&collector, &tailhook, 5);

    let singles = hits(5, 10, 150);
    for l in &singles {
        sock.send_to(l.as_bytes(), addr).unwrap();
    }
    let all = [two, three, singles].concat();
    wait_events(&collector, &tailhook, all.len());
    stop(tailhook);
    assert_each_exactly_once(&collector, &all, "udp");
    assert_same_events(
        &collector.events()[..5],
        &bytes_of(&all[..5]),
        "the lines of a datagram in order",
    );
}

/// A burst of 64 one-line datagrams (about 10 KB, well within the socket's
/// receive buffer) on loopback, far below any limit of the spool (1 GiB by
/// default): none is dropped, and tailhook does not say the spool is full.
#[test]
fn udp_a_burst_of_datagrams_is_not_dropped_while_the_spool_has_room() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(setup.builder().input("udp_in", "udp"), &collector);
    let tailhook = Tailhook::start(&cfg);
    let addr = listen_addr(&tailhook, "udp_in");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();

    let lines = hits(0, 64, 150);
    for l in &lines {
        sock.send_to(l.as_bytes(), addr).unwrap();
    }
    let got = collector.wait_for_events(lines.len(), Duration::from_secs(5));
    // The count of dropped datagrams is logged at shutdown.
    let stderr = stop(tailhook).stderr;
    assert!(
        got && !stderr.contains("the spool is full") && !stderr.contains("datagrams dropped"),
        "{} of {} datagrams arrived; tailhook said:\n{}",
        collector.event_count(),
        lines.len(),
        stderr
            .lines()
            .filter(|l| l.contains("spool") || l.contains("dropped"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_each_exactly_once(&collector, &lines, "udp burst");
}

// ---- 7. stdin --------------------------------------------------------------------------

/// `producer | tailhook run -c cfg`: tailhook runs with stdin piped; the test
/// writes `lines` and closes the pipe.
fn run_with_stdin(cfg: &Path, data: &[u8]) -> Tailhook {
    let mut cmd = bin();
    cmd.arg("run").arg("-c").arg(cfg);
    let (tailhook, mut stdin) = Tailhook::spawn_with_stdin(cmd);
    stdin.write_all(data).expect("write to tailhook's stdin");
    drop(stdin);
    tailhook
}

fn assert_stopped_by_itself(exit: &Exit) {
    assert_clean_exit(exit);
    for words in [
        "standard input ended: delivering what it held",
        "everything from standard input is delivered: stopping",
    ] {
        assert!(
            exit.stderr.contains(words),
            "no {words:?}\n{}",
            exit.output()
        );
    }
}

/// 1000 events on stdin, then end of input: tailhook delivers them all, in
/// order, and exits 0 by itself.
#[test]
fn stdin_delivers_everything_then_exits_0_by_itself() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(setup.builder().input("stdin_in", "stdin"), &collector);
    let lines = hits(0, 1000, 200);
    let tailhook = run_with_stdin(&cfg, &ndjson(&lines));
    let exit = tailhook.wait_exit(WAIT);
    assert_stopped_by_itself(&exit);
    assert_same_events(&collector.events(), &bytes_of(&lines), "stdin");
}

/// `printf '...' | tailhook run`: a last line without a newline is an event.
#[test]
fn stdin_last_line_without_a_newline_is_delivered() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(setup.builder().input("stdin_in", "stdin"), &collector);
    let lines = hits(0, 3, 150);
    let mut data = ndjson(&lines[..2]);
    data.extend_from_slice(lines[2].as_bytes());
    let tailhook = run_with_stdin(&cfg, &data);
    let exit = tailhook.wait_exit(WAIT);
    assert_stopped_by_itself(&exit);
    assert_same_events(
        &collector.events(),
        &bytes_of(&lines),
        "stdin, no final newline",
    );
}

/// With two destinations, tailhook stops only once both have everything.
#[test]
fn stdin_with_two_destinations_exits_once_both_have_everything() {
    let setup = Setup::new();
    let a = fluentd();
    let b = fluentd();
    let cfg = setup
        .builder()
        .input("stdin_in", "stdin")
        .destination("a", &a.url("/a"))
        .extra("concurrency = 1")
        .destination("b", &b.url("/b"))
        .extra("concurrency = 1")
        .write();
    let lines = hits(0, 1000, 200);
    let tailhook = run_with_stdin(&cfg, &ndjson(&lines));
    let exit = tailhook.wait_exit(WAIT);
    assert_stopped_by_itself(&exit);
    assert_same_events(&a.events(), &bytes_of(&lines), "destination a");
    assert_same_events(&b.events(), &bytes_of(&lines), "destination b");
}

/// Empty input (`true | tailhook run`): nothing to deliver, exit 0 at once.
#[test]
fn stdin_empty_input_exits_0_with_nothing_sent() {
    let setup = Setup::new();
    let collector = fluentd();
    let cfg = config(setup.builder().input("stdin_in", "stdin"), &collector);
    let tailhook = run_with_stdin(&cfg, b"");
    let exit = tailhook.wait_exit(WAIT);
    assert_stopped_by_itself(&exit);
    assert_eq!(collector.request_count(), 0);
}

/// The collector is down when stdin ends: tailhook does not stop while the
/// events are undelivered; once the collector is up it delivers them all and
/// exits 0.
#[test]
fn stdin_waits_for_a_collector_that_is_down_then_delivers_and_exits() {
    let setup = Setup::new();
    let dead = dead_port();
    let url = format!("http://127.0.0.1:{}/wallarm.events", dead.port);
    let cfg = setup
        .builder()
        .input("stdin_in", "stdin")
        .destination("fluentd", &url)
        .extra("concurrency = 1")
        .write();
    let lines = hits(0, 200, 200);
    let tailhook = run_with_stdin(&cfg, &ndjson(&lines));
    wait_log(&tailhook, "standard input ended: delivering what it held");
    wait_log(&tailhook, "delivery failed");
    assert!(
        !tailhook
            .stderr()
            .contains("everything from standard input is delivered"),
        "{}",
        tailhook.stderr()
    );
    assert!(
        !spool_segments(&setup, "stdin_in").is_empty(),
        "the undelivered input waits in the spool"
    );

    let collector = Collector::start(Options {
        port: dead.port,
        ..Options::fluentd()
    });
    let exit = tailhook.wait_exit(WAIT);
    assert_stopped_by_itself(&exit);
    assert_same_events(
        &collector.events(),
        &bytes_of(&lines),
        "stdin, collector late",
    );
}

// ---- 8. config errors --------------------------------------------------------------------

/// `tailhook check -c` on a config made of `blocks` (plus a destination).
fn check_blocks(setup: &Setup, blocks: &str) -> (Exit, PathBuf) {
    let cfg = setup
        .builder()
        .block(blocks)
        .destination("fluentd", "http://127.0.0.1:9/x")
        .extra("concurrency = 1")
        .write();
    let exit = run_cmd(&["check", "-c", &cfg.display().to_string()], &[]);
    (exit, cfg)
}

/// `path:line:col` of the first occurrence of `needle` in the config file.
fn place(cfg: &Path, needle: &str) -> String {
    let text = std::fs::read_to_string(cfg).unwrap();
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{}:{line}:{col}", cfg.display())
}

fn assert_check_fails(exit: &Exit, words: &[&str]) {
    assert_eq!(exit.code, Some(1), "{}", exit.output());
    for w in words {
        assert!(exit.stderr.contains(w), "no {w:?} in\n{}", exit.output());
    }
}

#[test]
fn check_rejects_a_file_setting_on_a_tcp_source_with_its_place() {
    let setup = Setup::new();
    let (exit, cfg) = check_blocks(
        &setup,
        &input("tcp_in", "tcp", "include = [\"/var/log/*.log\"]"),
    );
    assert_check_fails(
        &exit,
        &[
            "`include` is not a setting of a tcp source (its settings are listen, tls, max_connections, idle_timeout, max_line_bytes, on_invalid)",
            &place(&cfg, "[\"/var/log/*.log\"]"),
        ],
    );
}

#[test]
fn check_rejects_settings_of_other_types_on_udp_and_stdin() {
    let setup = Setup::new();
    let (exit, _) = check_blocks(
        &setup,
        &format!(
            "{}{}",
            input("udp_in", "udp", "max_connections = 4"),
            input("stdin_in", "stdin", "listen = \"127.0.0.1:5170\"")
        ),
    );
    assert_check_fails(
        &exit,
        &[
            "`max_connections` is not a setting of a udp source (its settings are listen, max_line_bytes, on_invalid)",
            "`listen` is not a setting of a stdin source (its settings are max_line_bytes, on_invalid)",
        ],
    );
}

#[test]
fn check_rejects_a_tcp_source_without_listen() {
    let setup = Setup::new();
    let (exit, cfg) = check_blocks(&setup, "[[source]]\nname = \"tcp_in\"\ntype = \"tcp\"\n\n");
    assert_check_fails(
        &exit,
        &[
            "source `tcp_in`: a tcp source needs `listen`",
            &place(&cfg, "\"tcp\""),
        ],
    );
}

#[test]
fn check_rejects_a_bad_listen_address() {
    let setup = Setup::new();
    let (exit, cfg) = check_blocks(
        &setup,
        "[[source]]\nname = \"tcp_in\"\ntype = \"tcp\"\nlisten = \"localhost:5170\"\n\n",
    );
    assert_check_fails(
        &exit,
        &[
            "listen address `localhost:5170` must be IP:port",
            &place(&cfg, "\"localhost:5170\""),
        ],
    );
}

#[test]
fn check_rejects_a_unix_mode_that_is_not_octal() {
    let setup = Setup::new();
    for bad in ["rw-rw----", "0999", "01777"] {
        let (exit, cfg) = check_blocks(
            &setup,
            &input(
                "unix_in",
                "unix",
                &format!("path = \"/tmp/x.sock\"\nmode = {bad:?}"),
            ),
        );
        assert_check_fails(
            &exit,
            &[
                &format!("mode `{bad}` must be octal permission bits, like \"0660\""),
                &place(&cfg, &format!("{bad:?}")),
            ],
        );
    }
}

/// The `http` input's connection limits: a timeout of 0, a rate under a
/// byte a second or a head limit under 1 KiB is refused, naming its place;
/// a rate may be written with or without `/s`.
#[test]
fn check_rejects_http_connection_limits_out_of_range() {
    let setup = Setup::new();
    for (setting, words) in [
        (
            "header_timeout = \"0s\"",
            "header_timeout must be longer than 0s",
        ),
        (
            "body_timeout = \"0s\"",
            "body_timeout must be longer than 0s",
        ),
        (
            "keepalive_timeout = 0",
            "keepalive_timeout must be longer than 0s",
        ),
        (
            "min_body_rate = 0",
            "min_body_rate must be at least 1 byte a second",
        ),
        (
            "min_body_rate = \"fast\"",
            "invalid rate `fast`; write it like \"1KiB/s\"",
        ),
        (
            "max_header_bytes = \"512B\"",
            "max_header_bytes must be at least 1KiB",
        ),
    ] {
        let (exit, cfg) = check_blocks(&setup, &input("hook", "http", setting));
        // The value's place: on the setting's line, after `key = `.
        let (line_col, col) = place(&cfg, setting)
            .rsplit_once(':')
            .map(|(l, c)| (l.to_string(), c.parse::<usize>().unwrap()))
            .unwrap();
        let at = format!("{line_col}:{}", col + setting.find(" = ").unwrap() + 3);
        assert_check_fails(&exit, &[words, &at]);
    }
    for (written, rate) in [("\"2KiB/s\"", 2048), ("\"2KiB\"", 2048), ("100", 100)] {
        let (exit, _) = check_blocks(
            &setup,
            &input("hook", "http", &format!("min_body_rate = {written}")),
        );
        assert_eq!(exit.code, Some(0), "{}", exit.output());
        assert!(
            exit.stdout.contains(&format!("min_body_rate = {rate}\n")),
            "{}",
            exit.output()
        );
    }
}

#[test]
fn check_rejects_a_unix_source_without_path_and_two_stdin_sources() {
    let setup = Setup::new();
    let (exit, _) = check_blocks(
        &setup,
        &format!(
            "{}{}{}",
            input("unix_in", "unix", ""),
            input("in1", "stdin", ""),
            input("in2", "stdin", "")
        ),
    );
    assert_check_fails(
        &exit,
        &[
            "source `unix_in`: a unix source needs `path`",
            "only one source can read standard input",
        ],
    );
}

/// `check` reads the TLS files of a tcp source and names the one at fault.
#[test]
fn check_names_a_missing_tls_certificate_file() {
    let setup = Setup::new();
    let missing = setup.dir.path().join("nope.pem");
    let key = setup.dir.path().join("key.pem");
    std::fs::write(&key, make_pki().key_pem).unwrap();
    let (exit, _) = check_blocks(
        &setup,
        &input(
            "tls_in",
            "tcp",
            &format!(
                "tls = {{ cert_file = {}, key_file = {} }}",
                toml_path(&missing),
                toml_path(&key)
            ),
        ),
    );
    assert_check_fails(
        &exit,
        &[&format!(
            "source `tls_in`: cannot read tls.cert_file {}",
            missing.display()
        )],
    );
}

/// The sources check accepts are printed back resolved, with their defaults.
#[test]
fn check_prints_the_new_sources_with_their_defaults() {
    let setup = Setup::new();
    let (exit, _) = check_blocks(
        &setup,
        &format!(
            "{}{}{}",
            "[[source]]\nname = \"tcp_in\"\ntype = \"tcp\"\nlisten = \"127.0.0.1:5170\"\n\n",
            input("unix_in", "unix", "path = \"/tmp/x.sock\""),
            input("stdin_in", "stdin", "")
        ),
    );
    assert_eq!(exit.code, Some(0), "{}", exit.output());
    for words in [
        "listen = \"127.0.0.1:5170\"\nmax_connections = 256",
        "path = \"/tmp/x.sock\"\nmode = \"0660\"\nmax_connections = 256",
        "type = \"stdin\"\nmax_line_bytes = 1048576\non_invalid = \"wrap\"",
    ] {
        assert!(
            exit.stdout.contains(words),
            "no {words:?} in\n{}",
            exit.output()
        );
    }
}

// ---- 9. the address is taken ---------------------------------------------------------------

#[test]
fn run_exits_1_when_the_tcp_or_udp_port_is_taken() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (kind, addr) in [
        ("tcp", tcp.local_addr().unwrap()),
        ("udp", udp.local_addr().unwrap()),
    ] {
        let setup = Setup::new();
        let collector = fluentd();
        let name = format!("{kind}_in");
        let cfg = config(
            setup.builder().block(&format!(
                "[[source]]\nname = \"{name}\"\ntype = \"{kind}\"\nlisten = \"{addr}\"\n\n"
            )),
            &collector,
        );
        let exit = run_cmd(&["run", "-c", &cfg.display().to_string()], &[]);
        assert_eq!(exit.code, Some(1), "{kind}: {}", exit.output());
        assert!(
            exit.stderr
                .contains(&format!("source `{name}`: cannot listen on {addr}")),
            "{kind}: {}",
            exit.output()
        );
    }
}
