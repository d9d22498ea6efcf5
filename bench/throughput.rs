//! The throughput benchmark: 632-byte events taken in by the real `tailhook`
//! binary and POSTed as JSON arrays over loopback to a counting HTTP sink (or
//! sent over the forward protocol to a counting forward receiver), as the
//! README's benchmark figures are measured.
//!
//! `cargo bench --bench throughput` (release build). Environment:
//! `INPUT` (how the events reach tailhook, default `file`):
//! - `file`: tailed from files written before the run (timed from tailhook's start);
//! - `tcp`: written as newline-delimited JSON to its `tcp` input, as fast as
//!   the connections take them (timed from the first byte sent);
//! - `http`: POSTed as JSON arrays to its `http` input, one request in flight
//!   per connection (timed from the first request).
//!
//! `OUTPUT` (how tailhook delivers, default `http`):
//! - `http`: JSON arrays POSTed to a counting HTTP sink;
//! - `https`: the same over HTTPS (TLS 1.3, the sink's certificate signed by
//!   a CA made for the run and given to tailhook as `ca_file`);
//! - `forward`: a `type = "forward"` destination to a counting forward
//!   receiver that acknowledges each message (`{"ack": chunk}`) once it has
//!   counted its events, as `in_forward` does;
//! - `beats`: a `type = "beats"` destination to a counting Lumberjack v2
//!   receiver that acknowledges each window once it has read it
//!   (`COMPRESSION=zlib` for compressed windows);
//! - `urls`: plain HTTP to two sinks behind one destination's `urls`
//!   (round-robin).
//!
//! Any output but `http` runs after a plain-HTTP run of the same events and
//! prints its events/s as a share of plain HTTP's.
//!
//! `EVENTS` (default 1000000), `CONCURRENCY` (destination concurrency, default 2),
//! `FILES` (`file`: spread the events over this many files, default 1),
//! `CONNECTIONS` (`tcp`, `http`: connections to the input, default 1 for
//! `tcp` and 4 for `http`), `BODY_EVENTS` (`http`: events per request, default 500),
//! `TAILHOOK_BIN` (another tailhook binary to measure, e.g. a baseline build),
//! `REQUESTS_PER_CONNECTION` (default 0: never): the HTTP(S) sink answers
//! `Connection: close` after that many requests on a connection, so
//! reconnects, and over TLS session resumption (the sink counts full and
//! resumed handshakes), are part of the run.
//! Every run ends when the sink has received every event's sequence number
//! at least once: an event sent again (a retry) is counted as a duplicate,
//! not as throughput. Prints events/s, the duplicates, CPU seconds per
//! million events (user + system of the tailhook process, read from
//! `/proc`: the run fails, saying why, if they cannot be read), its peak
//! resident memory and, for `tcp` and `http`, when the input had taken every
//! event and the spool's peak size on disk.

use std::convert::Infallible;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};

const EVENT_BYTES: usize = 632;

/// The source name in the bench config (and so the spool's directory).
const SOURCE: &str = "bench";

fn event(i: u64) -> String {
    let head = format!(
        r#"{{"seq":{i},"object_type":"hit","type":"sqli","domain":"www.example.com","method":"POST","path":"/api/v1/login","remote_addr4":"203.0.113.7","block_status":"monitored","payloads":["' or 1=1--"],"point":["post","json_doc","hash","password"],"request_time":1591261367,"response_status":403,"pad":""#
    );
    let pad = EVENT_BYTES - head.len() - 2;
    let line = format!("{head}{}\"}}", "x".repeat(pad));
    debug_assert_eq!(line.len(), EVENT_BYTES);
    line
}

/// How the events reach tailhook.
#[derive(Clone, Copy, PartialEq)]
enum Input {
    File,
    Tcp,
    Http,
}

impl Input {
    fn from_env() -> Input {
        match std::env::var("INPUT").as_deref() {
            Err(_) | Ok("file") => Input::File,
            Ok("tcp") => Input::Tcp,
            Ok("http") => Input::Http,
            Ok(other) => {
                eprintln!("INPUT must be file, tcp or http, not {other:?}");
                std::process::exit(2);
            }
        }
    }

    /// The `[[source]]` settings after its name.
    fn source_config(self, log: &Path) -> String {
        match self {
            Input::File => format!(
                "type = \"file\"\ninclude = [{:?}]\n",
                log.display().to_string()
            ),
            Input::Tcp => "type = \"tcp\"\nlisten = \"127.0.0.1:0\"\n".to_string(),
            Input::Http => "type = \"http\"\nlisten = \"127.0.0.1:0\"\n".to_string(),
        }
    }
}

/// Where tailhook sends the events.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    /// Plain HTTP to one sink.
    Http,
    /// HTTPS (TLS 1.3, a certificate from a test CA in `ca_file`) to one sink.
    Https,
    /// `type = "forward"` (PackedForward, acknowledged) to a receiver that
    /// acknowledges every message.
    Forward,
    /// `type = "beats"` (Lumberjack v2; `COMPRESSION=zlib` for compressed
    /// windows) to a receiver that acknowledges every window.
    Beats,
    /// Plain HTTP to two sinks behind one destination's `urls`.
    Urls,
}

impl Output {
    fn name(self) -> &'static str {
        match self {
            Output::Http => "http",
            Output::Https => "https",
            Output::Forward => "forward",
            Output::Beats => "beats",
            Output::Urls => "urls",
        }
    }

    fn from_env() -> Output {
        match std::env::var("OUTPUT").as_deref() {
            Err(_) | Ok("http") => Output::Http,
            Ok("https") => Output::Https,
            Ok("forward") => Output::Forward,
            Ok("beats") => Output::Beats,
            Ok("urls") => Output::Urls,
            Ok(other) => {
                eprintln!("OUTPUT must be http, https, forward, beats or urls, not {other:?}");
                std::process::exit(2);
            }
        }
    }
}

/// The counting sink: what it received, and how its connections went.
struct Sink {
    n: u64,
    tally: Arc<Tally>,
    done: Arc<tokio::sync::Notify>,
    /// Answer `Connection: close` after this many requests on a connection
    /// (0: keep connections open), so reconnects (and, over TLS, session
    /// resumption) are part of the run.
    per_connection: u64,
    full_handshakes: AtomicU64,
    resumed_handshakes: AtomicU64,
    connections: AtomicU64,
}

/// A test CA, the sink's certificate for 127.0.0.1 signed by it (written to
/// `ca_file` for tailhook), and the sink's TLS acceptor.
struct BenchTls {
    ca_file: PathBuf,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl BenchTls {
    fn new(dir: &Path) -> BenchTls {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        BenchTls {
            ca_file,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }
}

/// Accepts connections on 127.0.0.1 (with TLS when given an acceptor; the
/// forward protocol when `forward`) and counts every request's events;
/// returns the address.
async fn serve(
    sink: Arc<Sink>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    forward: bool,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            sink.connections.fetch_add(1, Ordering::Relaxed);
            if forward {
                let (tally, done) = (sink.tally.clone(), sink.done.clone());
                tokio::spawn(forward_connection(stream, tally, done));
                continue;
            }
            let (sink, tls) = (sink.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve_connection(sink, stream).await,
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        let resumed = stream.get_ref().1.handshake_kind()
                            == Some(rustls::HandshakeKind::Resumed);
                        let counter = if resumed {
                            &sink.resumed_handshakes
                        } else {
                            &sink.full_handshakes
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        serve_connection(sink, stream).await
                    }
                }
            });
        }
    });
    addr
}

/// Answers one connection's requests with 200, counting their events;
/// closes it after `per_connection` requests when that is set.
async fn serve_connection<S>(sink: Arc<Sink>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let requests = Arc::new(AtomicU64::new(0));
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let (sink, requests) = (sink.clone(), requests.clone());
        async move {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            sink.tally.count(&body);
            if sink.tally.distinct() >= sink.n {
                sink.done.notify_one();
            }
            let mut response = Response::new(Full::new(Bytes::new()));
            let served = requests.fetch_add(1, Ordering::Relaxed) + 1;
            if sink.per_connection > 0 && served % sink.per_connection == 0 {
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .await;
}

/// Where a forward message ends in `buf`, and its entries and chunk id:
/// `[tag, bin(entries), {…, "chunk": id}]` as tailhook sends it. `Ok(None)`
/// when more bytes are needed.
type ForwardMessage = (usize, std::ops::Range<usize>, Option<String>);

fn forward_message(buf: &[u8]) -> Result<Option<ForwardMessage>, String> {
    let be = |at: usize, n: usize| -> Option<usize> {
        buf.get(at..at + n)
            .map(|b| b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)))
    };
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != 0x93 {
        return Err(format!("a message that is not a 3-array (0x{first:02x})"));
    }
    // The tag: a str.
    let (tag_len, at) = match buf.get(1) {
        None => return Ok(None),
        Some(&b) if (0xa0..=0xbf).contains(&b) => (usize::from(b & 0x1f), 2),
        Some(0xd9) => match be(2, 1) {
            Some(n) => (n, 3),
            None => return Ok(None),
        },
        Some(b) => return Err(format!("a tag that is not a short str (0x{b:02x})")),
    };
    let at = at + tag_len;
    // The entries: a bin.
    let (len, start) = match buf.get(at) {
        None => return Ok(None),
        Some(0xc4) => (be(at + 1, 1), at + 2),
        Some(0xc5) => (be(at + 1, 2), at + 3),
        Some(0xc6) => (be(at + 1, 4), at + 5),
        Some(b) => return Err(format!("entries that are not a bin (0x{b:02x})")),
    };
    let Some(len) = len else { return Ok(None) };
    let end = start + len;
    if buf.len() < end {
        return Ok(None);
    }
    // The option map.
    let mut cursor = io::Cursor::new(&buf[end..]);
    let Ok(option) = rmpv::decode::read_value(&mut cursor) else {
        return Ok(None);
    };
    let chunk = option.as_map().and_then(|m| {
        m.iter()
            .find(|(k, _)| k.as_str() == Some("chunk"))
            .and_then(|(_, v)| v.as_str().map(str::to_string))
    });
    Ok(Some((end + cursor.position() as usize, start..end, chunk)))
}

/// One connection of the forward receiver: counts each message's events,
/// then acknowledges it.
async fn forward_connection(
    mut stream: tokio::net::TcpStream,
    tally: Arc<Tally>,
    done: Arc<tokio::sync::Notify>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = bytes::BytesMut::with_capacity(1 << 20);
    loop {
        match forward_message(&buf) {
            Err(why) => {
                eprintln!("forward receiver: {why}");
                return;
            }
            Ok(Some((used, entries, chunk))) => {
                tally.count_msgpack(&buf[entries]);
                let _ = buf.split_to(used);
                if tally.distinct() >= tally.n {
                    done.notify_one();
                }
                if let Some(chunk) = chunk {
                    let mut ack = Vec::with_capacity(chunk.len() + 8);
                    rmpv::encode::write_value(
                        &mut ack,
                        &rmpv::Value::Map(vec![("ack".into(), chunk.into())]),
                    )
                    .expect("into memory");
                    if stream.write_all(&ack).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Ok(None) => {}
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads `/proc/<pid>/stat` user+system CPU seconds and `/proc/<pid>/status`
/// VmHWM (KiB), or says what could not be read.
fn usage(pid: u32) -> Result<(f64, u64), String> {
    let stat_path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&stat_path).map_err(|e| format!("cannot read {stat_path}: {e}"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, s)| s)
        .ok_or_else(|| format!("{stat_path} is not as expected: {stat:?}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based); after ')' they are 12 and 13 (1-based).
    let field = |i: usize, name: &str| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{stat_path} has no {name} field: {stat:?}"))
    };
    let ticks = field(11, "utime")? + field(12, "stime")?;
    let hz = 100.0; // USER_HZ on Linux
    let status_path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&status_path)
        .map_err(|e| format!("cannot read {status_path}: {e}"))?;
    let hwm_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{status_path} has no VmHWM line"))?;
    Ok((ticks as f64 / hz, hwm_kib))
}

/// What the sink has received: a bit per sequence number, so that an event
/// sent again (a retry after a lost answer) counts as a duplicate, not as
/// throughput.
struct Tally {
    n: u64,
    seen: Vec<AtomicU64>,
    distinct: AtomicU64,
    duplicates: AtomicU64,
    /// Events whose `seq` the sink could not read, or out of range.
    unknown: AtomicU64,
}

impl Tally {
    fn new(n: u64) -> Tally {
        Tally {
            n,
            seen: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            distinct: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
        }
    }

    /// Counts the events of one request body (each starts `{"seq":N,`).
    fn count(&self, body: &[u8]) {
        const KEY: &[u8] = b"{\"seq\":";
        for at in memchr::memmem::find_iter(body, KEY) {
            let rest = &body[at + KEY.len()..];
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let seq = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|d| d.parse::<u64>().ok());
            self.mark(seq);
        }
    }

    /// Counts the events of a forward message's entries (concatenated
    /// MessagePack `[time, {"seq": N, …}]`): each `seq` key and the unsigned
    /// integer after it.
    fn count_msgpack(&self, entries: &[u8]) {
        const KEY: &[u8] = b"\xa3seq";
        for at in memchr::memmem::find_iter(entries, KEY) {
            let rest = &entries[at + KEY.len()..];
            let be = |n: usize| {
                rest.get(1..1 + n)
                    .map(|b| b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
            };
            let seq = match rest.first() {
                Some(&b) if b < 0x80 => Some(u64::from(b)),
                Some(0xcc) => be(1),
                Some(0xcd) => be(2),
                Some(0xce) => be(4),
                Some(0xcf) => be(8),
                _ => None,
            };
            self.mark(seq);
        }
    }

    /// Counts one event by its `seq` (None: unreadable).
    fn mark(&self, seq: Option<u64>) {
        let Some(seq) = seq.filter(|&s| s < self.n) else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bit = 1u64 << (seq % 64);
        let before = self.seen[(seq / 64) as usize].fetch_or(bit, Ordering::Relaxed);
        if before & bit == 0 {
            self.distinct.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::Relaxed)
    }

    fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    fn unknown(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }
}

/// Writes events `0..n` round-robin into `files` files in `logs`, and reads
/// them back to warm the page cache, as files being tailed would be.
fn write_files(logs: &Path, n: u64, files: u64) {
    std::fs::create_dir_all(logs).unwrap();
    for f in 0..files {
        let path = logs.join(format!("events-{f}.ndjson"));
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
        for i in (f..n).step_by(files as usize) {
            w.write_all(event(i).as_bytes()).unwrap();
            w.write_all(b"\n").unwrap();
        }
        w.flush().unwrap();
        let _ = std::fs::read(&path);
    }
}

/// What each connection sends, made before the clock starts: for `tcp` one
/// stream of newline-delimited events (events dealt round-robin over the
/// connections), for `http` one request of `body_events` events after
/// another (requests dealt round-robin).
fn messages(input: Input, n: u64, connections: u64, body_events: u64) -> Vec<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<Vec<u8>>> = (0..connections).map(|_| Vec::new()).collect();
    match input {
        Input::File => {}
        Input::Tcp => {
            for (c, conn) in out.iter_mut().enumerate() {
                let mut stream =
                    Vec::with_capacity((n / connections + 1) as usize * (EVENT_BYTES + 1));
                for i in (c as u64..n).step_by(connections as usize) {
                    stream.extend_from_slice(event(i).as_bytes());
                    stream.push(b'\n');
                }
                conn.push(stream);
            }
        }
        Input::Http => {
            for (b, first) in (0..n).step_by(body_events as usize).enumerate() {
                let seqs = first..n.min(first + body_events);
                let mut body =
                    Vec::with_capacity((seqs.end - seqs.start) as usize * (EVENT_BYTES + 1) + 1);
                for i in seqs {
                    body.push(if i == first { b'[' } else { b',' });
                    body.extend_from_slice(event(i).as_bytes());
                }
                body.push(b']');
                let mut request = format!(
                    "POST /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                request.extend_from_slice(&body);
                out[b % connections as usize].push(request);
            }
        }
    }
    out
}

/// Sends one connection's messages: a `tcp` stream is written whole and
/// closed, then read until tailhook closes its end (it has read every
/// line); each `http` request waits for its answer, and one answered 503
/// (spool full) is sent again. Returns how many requests were sent again.
fn send(input: Input, addr: SocketAddr, messages: &[Vec<u8>]) -> io::Result<u64> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    if input == Input::Tcp {
        for m in messages {
            stream.write_all(m)?;
        }
        stream.shutdown(Shutdown::Write)?;
        stream.read_to_end(&mut Vec::new())?;
        return Ok(0);
    }
    let mut answers = BufReader::new(stream.try_clone()?);
    let mut again = 0;
    for m in messages {
        loop {
            stream.write_all(m)?;
            match read_status(&mut answers)? {
                200 => break,
                503 => {
                    again += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                status => return Err(io::Error::other(format!("http input answered {status}"))),
            }
        }
    }
    Ok(again)
}

/// Reads one HTTP/1.1 answer (status line, headers, `Content-Length` body)
/// and returns its status.
fn read_status(answers: &mut impl BufRead) -> io::Result<u16> {
    let mut line = String::new();
    answers.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0;
    loop {
        line.clear();
        if answers.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    io::copy(&mut answers.take(length), &mut io::sink())?;
    Ok(status)
}

/// Copies tailhook's log to ours and sends the address its input listens
/// on, once logged (`... input listening source=bench address=127.0.0.1:PORT ...`).
fn follow_log(stderr: ChildStderr) -> std::sync::mpsc::Receiver<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let needle = format!("input listening source={SOURCE} address=");
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let addr = line
                .split_once(&needle)
                .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok());
            match addr {
                Some(addr) => {
                    let _ = tx.send(addr);
                }
                None => eprintln!("{line}"),
            }
        }
    });
    rx
}

/// Samples the total size of the files in `dir` every 10 ms until `stop`,
/// and returns the largest.
fn peak_size(dir: PathBuf, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            let size: u64 = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum();
            peak = peak.max(size);
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    })
}

/// A Lumberjack v2 receiver on 127.0.0.1 for `OUTPUT=beats`: reads each
/// window (`2W` N, then `2J` frames or `2C` zlib frames holding them),
/// counts its events and answers `2A` N, as Logstash's beats input does
/// once the events are in its queue.
async fn beats_sink(tally: Arc<Tally>, done: Arc<tokio::sync::Notify>, n: u64) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn serve(
        stream: tokio::net::TcpStream,
        tally: &Tally,
        done: &tokio::sync::Notify,
        n: u64,
    ) -> io::Result<()> {
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let mut read = tokio::io::BufReader::with_capacity(1 << 20, read);
        let mut payload = Vec::new();
        loop {
            let mut header = [0u8; 6];
            match read.read_exact(&mut header).await {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                r => r?,
            };
            if &header[..2] != b"2W" {
                return Err(io::Error::other("expected a window frame"));
            }
            let window = u32::from_be_bytes(header[2..].try_into().unwrap());
            let mut events = 0;
            while events < window {
                let mut kind = [0u8; 2];
                read.read_exact(&mut kind).await?;
                match &kind {
                    b"2J" => {
                        let mut seq_len = [0u8; 8];
                        read.read_exact(&mut seq_len).await?;
                        let len = u32::from_be_bytes(seq_len[4..].try_into().unwrap());
                        payload.resize(len as usize, 0);
                        read.read_exact(&mut payload).await?;
                        tally.count(&payload);
                        events += 1;
                    }
                    b"2C" => {
                        let len = read.read_u32().await?;
                        payload.resize(len as usize, 0);
                        read.read_exact(&mut payload).await?;
                        let mut frames = Vec::new();
                        flate2::read::ZlibDecoder::new(&payload[..]).read_to_end(&mut frames)?;
                        let mut at = 0;
                        while at + 10 <= frames.len() {
                            let len =
                                u32::from_be_bytes(frames[at + 6..at + 10].try_into().unwrap());
                            let end = at + 10 + len as usize;
                            tally.count(&frames[at + 10..end.min(frames.len())]);
                            events += 1;
                            at = end;
                        }
                    }
                    _ => return Err(io::Error::other("unknown frame type")),
                }
            }
            let mut ack = *b"2A\0\0\0\0";
            ack[2..].copy_from_slice(&window.to_be_bytes());
            write.write_all(&ack).await?;
            if tally.distinct() >= n {
                done.notify_one();
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tally, done) = (tally.clone(), done.clone());
            tokio::spawn(async move {
                if let Err(e) = serve(stream, &tally, &done, n).await {
                    eprintln!("beats receiver: {e}");
                }
            });
        }
    });
    addr
}

/// The settings of a benchmark run, from the environment.
struct Params {
    input: Input,
    n: u64,
    concurrency: u64,
    files: u64,
    connections: u64,
    body_events: u64,
    per_connection: u64,
}

fn main() {
    let input = Input::from_env();
    let output = Output::from_env();
    let p = Params {
        input,
        n: env_u64("EVENTS", 1_000_000),
        concurrency: env_u64("CONCURRENCY", 2),
        files: env_u64("FILES", 1).max(1),
        connections: env_u64("CONNECTIONS", if input == Input::Http { 4 } else { 1 }).max(1),
        body_events: env_u64("BODY_EVENTS", 500).max(1),
        per_connection: env_u64("REQUESTS_PER_CONNECTION", 0),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path().join("logs");
    if input == Input::File {
        write_files(&logs, p.n, p.files);
    }
    // Any output but plain HTTP is measured beside a plain-HTTP run of the
    // same events, first, so the two figures come from the same machine state.
    let outputs = if output == Output::Http {
        vec![Output::Http]
    } else {
        vec![Output::Http, output]
    };
    let mut figures = Vec::new();
    for (i, output) in outputs.into_iter().enumerate() {
        if i > 0 {
            println!();
        }
        let run_dir = dir.path().join(format!("run-{i}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        figures.push((output, run(&p, output, &logs, &run_dir)));
    }
    if let [(_, plain), .., (output, other)] = figures[..] {
        println!();
        println!(
            "{}: {other:.0} events/s = {:.0}% of plain http ({plain:.0} events/s)",
            output.name(),
            other / plain * 100.0
        );
    }
}

/// One run: starts the sink and tailhook, feeds the events, waits for every
/// one to arrive, prints the figures and returns the events per second.
fn run(p: &Params, output: Output, logs: &Path, dir: &Path) -> f64 {
    let Params {
        input,
        n,
        concurrency,
        files,
        connections,
        body_events,
        per_connection,
    } = *p;
    let messages = messages(input, n, connections, body_events);
    let tally = Arc::new(Tally::new(n));
    let done = Arc::new(tokio::sync::Notify::new());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sink = Arc::new(Sink {
        n,
        tally: tally.clone(),
        done: done.clone(),
        per_connection,
        full_handshakes: AtomicU64::new(0),
        resumed_handshakes: AtomicU64::new(0),
        connections: AtomicU64::new(0),
    });
    let tls = (output == Output::Https).then(|| BenchTls::new(dir));
    let addr = rt.block_on(serve(
        sink.clone(),
        tls.as_ref().map(|t| t.acceptor.clone()),
        output == Output::Forward,
    ));
    let destination = match (output, &tls) {
        (Output::Beats, _) => {
            let compression = std::env::var("COMPRESSION").unwrap_or_else(|_| "none".into());
            let beats = rt.block_on(beats_sink(tally.clone(), done.clone(), n));
            format!("type = \"beats\"\naddress = \"{beats}\"\ncompression = {compression:?}\n")
        }
        (Output::Forward, _) => {
            format!("type = \"forward\"\naddress = \"{addr}\"\ntag = \"bench\"\n")
        }
        (_, Some(t)) => format!(
            "url = \"https://{addr}/bench\"\nca_file = {:?}\n",
            t.ca_file.display().to_string()
        ),
        (Output::Urls, _) => {
            // A second sink, sharing the first one's tally.
            let second = rt.block_on(serve(sink.clone(), None, false));
            format!("urls = [\"http://{addr}/bench\", \"http://{second}/bench\"]\n")
        }
        (_, None) => format!("url = \"http://{addr}/bench\"\n"),
    };

    let config = dir.join("bench.toml");
    let data = dir.join("data");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[[source]]\nname = {SOURCE:?}\n{}\n[[destination]]\nname = \"sink\"\n{destination}concurrency = {concurrency}\n",
            data.display().to_string(),
            input.source_config(&logs.join("*.ndjson")),
        ),
    )
    .unwrap();

    let mut start = Instant::now();
    let bin = std::env::var("TAILHOOK_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tailhook").to_string());
    let mut child = std::process::Command::new(bin)
        .args(["run", "-c"])
        .arg(&config)
        .env(
            "RUST_LOG",
            "warn,tailhook::source::socket=info,tailhook::source::http=info",
        )
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tailhook");
    let listening = follow_log(child.stderr.take().unwrap());
    let stop = |child: &mut std::process::Child| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    };

    let failed = Arc::new(AtomicBool::new(false));
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut spool_peak = None;
    if input != Input::File {
        let Ok(input_addr) = listening.recv_timeout(Duration::from_secs(15)) else {
            eprintln!("tailhook never logged the address of its {SOURCE} input");
            stop(&mut child);
            std::process::exit(1);
        };
        spool_peak = Some(peak_size(
            data.join("spool").join(SOURCE),
            stop_sampling.clone(),
        ));
        start = Instant::now();
        for m in messages {
            let (failed, done) = (failed.clone(), done.clone());
            senders.push(std::thread::spawn(move || {
                let sent = send(input, input_addr, &m);
                if sent.is_err() {
                    failed.store(true, Ordering::Relaxed);
                    done.notify_one();
                }
                sent.map(|again| (again, start.elapsed()))
            }));
        }
    }
    let finished = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(600), async {
            while tally.distinct() < n && !failed.load(Ordering::Relaxed) {
                done.notified().await;
            }
        })
        .await
        .is_ok()
    });
    let elapsed = start.elapsed();
    let measured = usage(child.id());
    stop_sampling.store(true, Ordering::Relaxed);
    stop(&mut child);
    let (cpu, hwm_kib) = match measured {
        Ok(m) => m,
        Err(e) => {
            eprintln!("benchmark failed: cannot measure tailhook's CPU time and memory: {e}");
            std::process::exit(1);
        }
    };
    let spool_peak = spool_peak.map(|s| s.join().unwrap());
    let mut again = 0;
    let mut taken = Duration::ZERO;
    for s in senders {
        match s.join().unwrap() {
            Ok((a, t)) => {
                again += a;
                taken = taken.max(t);
            }
            Err(e) => {
                eprintln!("benchmark failed: sending to the {SOURCE} input: {e}");
                std::process::exit(1);
            }
        }
    }
    if !finished || tally.distinct() < n {
        eprintln!(
            "benchmark timed out: {} of {n} events received ({} duplicates)",
            tally.distinct(),
            tally.duplicates()
        );
        std::process::exit(1);
    }
    if tally.unknown() > 0 {
        eprintln!(
            "benchmark failed: the sink received {} events that are not one of the {n} sent",
            tally.unknown()
        );
        std::process::exit(1);
    }
    let secs = elapsed.as_secs_f64();
    match input {
        Input::File => println!(
            "events:            {n} x {EVENT_BYTES} bytes in {files} file(s), concurrency {concurrency}"
        ),
        Input::Tcp => println!(
            "events:            {n} x {EVENT_BYTES} bytes to the tcp input over {connections} connection(s), concurrency {concurrency}"
        ),
        Input::Http => println!(
            "events:            {n} x {EVENT_BYTES} bytes to the http input, {body_events} a request over {connections} connection(s), concurrency {concurrency}"
        ),
    }
    let connections = sink.connections.load(Ordering::Relaxed);
    match output {
        Output::Http => println!("output:            http, {connections} connection(s) to the sink"),
        Output::Https => println!(
            "output:            https (TLS 1.3), {connections} connection(s) to the sink: {} full handshake(s), {} resumed",
            sink.full_handshakes.load(Ordering::Relaxed),
            sink.resumed_handshakes.load(Ordering::Relaxed)
        ),
        Output::Forward => println!(
            "output:            type = \"forward\" (PackedForward, acknowledged), {connections} connection(s) to a counting receiver"
        ),
        Output::Urls => println!(
            "output:            http to two sinks behind `urls`, {connections} connection(s) in all"
        ),
        Output::Beats => println!(
            "output:            {}",
            destination.trim_end().replace('\n', ", ")
        ),
    }
    if per_connection > 0 {
        println!("                   the sink closes a connection after {per_connection} requests");
    }
    println!("elapsed:           {secs:.2} s");
    println!(
        "received:          every event, and {} duplicates (sent again; not counted below)",
        tally.duplicates()
    );
    println!(
        "throughput:        {:.0} events/s ({:.1} MiB/s)",
        n as f64 / secs,
        (n * (EVENT_BYTES as u64 + 1)) as f64 / secs / 1048576.0
    );
    println!(
        "CPU (user+sys):    {cpu:.2} s = {:.2} CPU s per million events",
        cpu / (n as f64 / 1e6)
    );
    println!("peak RSS:          {:.1} MiB", hwm_kib as f64 / 1024.0);
    if let Some(peak) = spool_peak {
        let what = match input {
            Input::Http => format!("every request answered 200, {again} sent again after a 503"),
            _ => "tailhook read every line".to_string(),
        };
        println!("input done:        {:.2} s ({what})", taken.as_secs_f64());
        println!("spool peak:        {:.1} MiB", peak as f64 / 1048576.0);
    }
    n as f64 / secs
}
