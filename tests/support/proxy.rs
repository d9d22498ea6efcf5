//! An HTTP proxy on 127.0.0.1 that handles the two requests a client sends
//! a forward proxy, the way Squid does:
//!
//! - `CONNECT host:port` (https through a proxy): Squid connects to
//!   `host:port`, answers `200 Connection established` and copies bytes both
//!   ways until either side closes. It answers `407 Proxy Authentication
//!   Required` with `Proxy-Authenticate: Basic realm="…"` when `proxy_auth`
//!   is required and `Proxy-Authorization` is missing or wrong
//!   ([`Proxy::require_credentials`]), `403 Forbidden` when its
//!   `http_access` rules deny the CONNECT ([`Proxy::refuse_connect`]; by
//!   default Squid denies CONNECT to ports outside `SSL_ports`), and
//!   `503 Service Unavailable` when it cannot connect to the target.
//! - An absolute-form request (`POST http://host:port/path HTTP/1.1`: plain
//!   http through a proxy): the same 407 check; then Squid sends the request
//!   on to `host:port` in origin form (`POST /path`), without the
//!   `Proxy-Authorization` it consumed, relays the answer, and keeps the
//!   client's connection open for its next request (503 when the target
//!   cannot be reached).
//!
//! Every request is recorded ([`Seen`]): method, target, the
//! `Proxy-Authorization` header, the status the proxy answered, and the
//! bytes it carried each way. Like the collector emulators it runs on its
//! own threads, so tests stay blocking. It only ever connects to loopback
//! addresses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::collector::base64;

/// One request the proxy got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// `CONNECT`, `POST`, `PUT`, …
    pub method: String,
    /// `host:port` for CONNECT; the absolute URI otherwise.
    pub target: String,
    /// The `Proxy-Authorization` header, as sent.
    pub proxy_authorization: Option<String>,
    /// What the proxy answered (for a relayed request, the target's status).
    pub status: u16,
    /// Bytes carried from the client to the target (after the request head).
    pub bytes_up: u64,
    /// Bytes carried from the target to the client (a relayed answer whole).
    pub bytes_down: u64,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    /// The `Proxy-Authorization` value required, if any.
    required: Option<String>,
    refuse_connect: bool,
    /// Every socket still open, to close at drop.
    sockets: Vec<TcpStream>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, seen: Seen) -> usize {
        let mut s = self.lock();
        s.seen.push(seen);
        let i = s.seen.len() - 1;
        drop(s);
        self.changed.notify_all();
        i
    }

    fn count(&self, i: usize, up: u64, down: u64) {
        let mut s = self.lock();
        s.seen[i].bytes_up += up;
        s.seen[i].bytes_down += down;
        drop(s);
        self.changed.notify_all();
    }

    fn keep(&self, socket: &TcpStream) {
        if let Ok(s) = socket.try_clone() {
            self.lock().sockets.push(s);
        }
    }
}

/// A running proxy; dropping it closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on a free port of 127.0.0.1 that lets everything through.
    pub fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("proxy local_addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if accept_shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    accept_shared.keep(&conn);
                    let shared = Arc::clone(&accept_shared);
                    std::thread::spawn(move || serve(conn, &shared));
                }
            })
            .expect("spawn proxy thread");
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port())
    }

    /// From now on, a request without `Proxy-Authorization: Basic` of
    /// `user:password` gets 407 (Squid's `proxy_auth REQUIRED`).
    pub fn require_credentials(&self, user: &str, password: &str) {
        let value = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
        self.shared.lock().required = Some(value);
    }

    /// From now on, CONNECT gets 403 (Squid's `http_access deny CONNECT`).
    pub fn refuse_connect(&self, refuse: bool) {
        self.shared.lock().refuse_connect = refuse;
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }

    /// Waits until `done` holds for what was seen, or `timeout`.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Seen]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if done(&state.seen) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for s in self.shared.lock().sockets.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// A request head: the request line's parts and the headers.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a head up to its empty line; None at end of stream.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    Some(Head {
        method,
        target,
        headers,
    })
}

/// A connection to `host:port` on a loopback address.
fn connect_loopback(authority: &str) -> Option<TcpStream> {
    let addrs = authority.to_socket_addrs().ok()?;
    addrs
        .filter(|a| a.ip().is_loopback())
        .find_map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).ok())
}

fn answer(conn: &mut TcpStream, status: &str, extra: &str, close: bool) {
    let connection = if close { "Connection: close\r\n" } else { "" };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\n{extra}{connection}Content-Length: 0\r\n\r\n"
    );
}

/// Serves one client connection: requests until it closes, or a tunnel.
fn serve(conn: TcpStream, shared: &Shared) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Some(head) = read_head(&mut reader) {
        let auth = head.header("proxy-authorization").map(str::to_string);
        let mut seen = Seen {
            method: head.method.clone(),
            target: head.target.clone(),
            proxy_authorization: auth.clone(),
            status: 0,
            bytes_up: 0,
            bytes_down: 0,
        };
        let (required, refuse) = {
            let s = shared.lock();
            (s.required.clone(), s.refuse_connect)
        };
        let connect = head.method.eq_ignore_ascii_case("CONNECT");
        let body_len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if required.is_some() && auth != required {
            seen.status = 407;
            shared.record(seen);
            let mut body = vec![0; body_len];
            let _ = reader.read_exact(&mut body);
            answer(
                &mut writer,
                "407 Proxy Authentication Required",
                "Proxy-Authenticate: Basic realm=\"tailhook test proxy\"\r\n",
                connect,
            );
            if connect {
                return;
            }
            continue;
        }
        if connect {
            if refuse {
                seen.status = 403;
                shared.record(seen);
                answer(&mut writer, "403 Forbidden", "", true);
                return;
            }
            return tunnel(reader, writer, &head.target, seen, shared);
        }
        let Some(rest) = head.target.strip_prefix("http://") else {
            seen.status = 400;
            shared.record(seen);
            answer(&mut writer, "400 Bad Request", "", true);
            return;
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut body = vec![0; body_len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        match relay(authority, path, &head, &body, shared) {
            Some((status, response)) => {
                seen.status = status;
                seen.bytes_up = body.len() as u64;
                seen.bytes_down = response.len() as u64;
                shared.record(seen);
                if writer.write_all(&response).is_err() {
                    return;
                }
            }
            None => {
                seen.status = 503;
                shared.record(seen);
                answer(&mut writer, "503 Service Unavailable", "", false);
            }
        }
    }
}

/// CONNECT: a connection to the target, `200`, and bytes copied both ways.
fn tunnel(
    reader: BufReader<TcpStream>,
    mut writer: TcpStream,
    target: &str,
    mut seen: Seen,
    shared: &Shared,
) {
    let Some(mut upstream) = connect_loopback(target) else {
        seen.status = 503;
        shared.record(seen);
        answer(&mut writer, "503 Service Unavailable", "", true);
        return;
    };
    shared.keep(&upstream);
    seen.status = 200;
    let i = shared.record(seen);
    if writer
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    // What the client sent after the head, already read into the buffer.
    let early = reader.buffer().to_vec();
    if !early.is_empty() {
        if upstream.write_all(&early).is_err() {
            return;
        }
        shared.count(i, early.len() as u64, 0);
    }
    let mut client = reader.into_inner();
    let Ok(mut up_reader) = upstream.try_clone() else {
        return;
    };
    let Ok(mut down_writer) = writer.try_clone() else {
        return;
    };
    let copy = |from: &mut TcpStream, to: &mut TcpStream, up: bool| {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let n = n as u64;
                    if up {
                        shared.count(i, n, 0);
                    } else {
                        shared.count(i, 0, n);
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    };
    std::thread::scope(|s| {
        s.spawn(|| copy(&mut client, &mut upstream, true));
        copy(&mut up_reader, &mut down_writer, false);
    });
}

/// Sends a request on to `authority` in origin form, without the proxy's
/// own headers, and returns the target's status and whole answer (its
/// `Connection` header dropped: the client's connection is the proxy's).
fn relay(
    authority: &str,
    path: &str,
    head: &Head,
    body: &[u8],
    shared: &Shared,
) -> Option<(u16, Vec<u8>)> {
    let mut upstream = connect_loopback(authority)?;
    shared.keep(&upstream);
    let mut out = format!("{} {path} HTTP/1.1\r\n", head.method);
    for (n, v) in &head.headers {
        let lower = n.to_ascii_lowercase();
        if !matches!(
            lower.as_str(),
            "proxy-authorization" | "proxy-connection" | "connection"
        ) {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).ok()?;
    upstream.write_all(body).ok()?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response).ok()?;
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head_text = String::from_utf8_lossy(&response[..end]).to_string();
    let status: u16 = head_text.split_whitespace().nth(1)?.parse().ok()?;
    let mut rebuilt = String::new();
    for line in head_text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            rebuilt.push_str(line);
            rebuilt.push_str("\r\n");
        }
    }
    rebuilt.push_str("\r\n");
    let mut whole = rebuilt.into_bytes();
    whole.extend_from_slice(&response[end..]);
    Some((status, whole))
}
