//! A Lumberjack v2 server on 127.0.0.1 — what Logstash's `beats` input and
//! elastic/go-lumber's `server/v2` do with a connection — written from the
//! protocol (go-lumber `protocol/v2`, `server/v2/reader.go`;
//! logstash-input-beats `BeatsParser.java`, `BeatsHandler.java`,
//! `ConnectionHandler.java`):
//!
//! - one connection carries window after window; each starts with `2W` and
//!   the count N (a `2W` 0 is an empty window: skipped, as go-lumber does);
//! - then N events, each a `2J` frame (u32 sequence, u32 length, JSON), or
//!   `2C` frames (u32 length, a zlib stream) that inflate to whole `2J`
//!   frames, any mix of the two;
//! - each payload must be a JSON object: Logstash reads it into a `Map`
//!   (`Message.getData`) and fails the connection otherwise;
//! - once the window is taken (here: recorded as accepted) the server
//!   answers `2A` N.
//!
//! Anything off the protocol — another version byte or frame type, a
//! sequence that does not run 1..N (go-lumber ignores the numbers, Logstash
//! acknowledges the highest; both rely on 1..N), a payload that is not a
//! JSON object, a compressed frame with a partial frame inside — is a
//! violation, listed by [`Beats::violations`], and the connection is closed
//! as both servers do on a protocol error.
//!
//! Modes, each mirroring a behaviour of a real server:
//! - [`Beats::set_partial_acks`]: acknowledge every k events (`2A` k, 2k, …,
//!   then N) — the protocol's bulk acknowledgement of any prefix
//!   (logstash-input-beats `PROTOCOL.md`), which go-lumber's
//!   `client/v2` `AwaitACK` reads until N;
//! - [`Beats::set_keepalives`]: before the real acknowledgement send `2A` 0
//!   every `interval`, `count` times — Logstash's `ConnectionHandler` does
//!   so every 5 s while a window is stuck in a busy pipeline, go-lumber's
//!   server every `Keepalive` (3 s by default);
//! - [`Beats::set_close_before_ack`]: close the connection after reading the
//!   next n windows, without acknowledging them — a Logstash that stops or
//!   fails the connection (an exception in the handler closes it) while
//!   the window is in flight;
//! - [`Beats::set_withhold`]: never acknowledge, and send nothing — a hung
//!   server (go-lumber with `Keepalive(0)` and a batch never `ACK`ed);
//! - [`Beats::set_bad_ack`]: acknowledge sequence N + 1 — a broken server;
//! - TLS ([`Beats::start_tls`]), like `ssl_enabled => true`, with whatever
//!   client-certificate policy the rustls server config has
//!   (`ssl_client_authentication`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One window as it came.
#[derive(Debug, Clone)]
pub struct Window {
    /// Each event's JSON payload, byte for byte.
    pub events: Vec<Vec<u8>>,
    /// The sequence numbers of its `2J` frames, in order.
    pub seqs: Vec<u32>,
    /// Whether its frames came inside `2C` frames.
    pub compressed: bool,
    /// The connection it came on (counted from 1).
    pub connection: usize,
    /// Whether it was acknowledged (and its events accepted).
    pub acked: bool,
    /// `2A` frames sent for it, keep-alives included.
    pub ack_frames: usize,
}

#[derive(Default)]
struct State {
    windows: Vec<Window>,
    connections: usize,
    violations: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    partial: AtomicU32,
    keepalives: Mutex<(u32, Duration)>,
    close_before_ack: AtomicUsize,
    withhold: AtomicBool,
    bad_ack: AtomicBool,
    stop: AtomicBool,
}

/// The emulator; stops accepting when dropped.
pub struct Beats {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Beats {
    /// Plain TCP.
    pub fn start() -> Beats {
        Beats::start_with(None)
    }

    /// TLS (`ssl_enabled => true`), with this server configuration.
    pub fn start_tls(tls: Arc<rustls::ServerConfig>) -> Beats {
        Beats::start_with(Some(tls))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Beats {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the beats emulator");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            partial: AtomicU32::new(0),
            keepalives: Mutex::new((0, Duration::ZERO)),
            close_before_ack: AtomicUsize::new(0),
            withhold: AtomicBool::new(false),
            bad_ack: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let id = {
                    let mut st = s.state.lock().unwrap();
                    st.connections += 1;
                    st.connections
                };
                s.changed.notify_all();
                let s = s.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => serve(conn, id, &s),
                    Some(config) => {
                        let Ok(server) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(server, conn), id, &s)
                    }
                });
            }
        });
        Beats { addr, shared }
    }

    /// `127.0.0.1:port`, for `address`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Acknowledge every `k` events (0: only the whole window).
    pub fn set_partial_acks(&self, k: u32) {
        self.shared.partial.store(k, Ordering::SeqCst);
    }

    /// Send `count` keep-alives (`2A` 0), `interval` apart, before each
    /// acknowledgement.
    pub fn set_keepalives(&self, count: u32, interval: Duration) {
        *self.shared.keepalives.lock().unwrap() = (count, interval);
    }

    /// Close the connection, unacknowledged, after each of the next `n`
    /// windows.
    pub fn set_close_before_ack(&self, n: usize) {
        self.shared.close_before_ack.store(n, Ordering::SeqCst);
    }

    /// While true, nothing is acknowledged (and nothing accepted).
    pub fn set_withhold(&self, on: bool) {
        self.shared.withhold.store(on, Ordering::SeqCst);
    }

    /// While true, windows are acknowledged with sequence N + 1.
    pub fn set_bad_ack(&self, on: bool) {
        self.shared.bad_ack.store(on, Ordering::SeqCst);
    }

    /// Every window received, acknowledged or not.
    pub fn windows(&self) -> Vec<Window> {
        self.shared.state.lock().unwrap().windows.clone()
    }

    /// The payloads of acknowledged windows, in the order they came.
    pub fn accepted(&self) -> Vec<Vec<u8>> {
        self.windows()
            .into_iter()
            .filter(|w| w.acked)
            .flat_map(|w| w.events)
            .collect()
    }

    /// Connections accepted so far (probes included).
    pub fn connections(&self) -> usize {
        self.shared.state.lock().unwrap().connections
    }

    pub fn violations(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().violations.clone()
    }

    /// Waits until `cond` holds for the state, or `timeout`.
    fn wait(&self, timeout: Duration, cond: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        while !cond(&st) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.shared.changed.wait_timeout(st, left).unwrap().0;
        }
        true
    }

    /// Waits for `n` accepted events.
    pub fn wait_accepted(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |st| {
            st.windows
                .iter()
                .filter(|w| w.acked)
                .map(|w| w.events.len())
                .sum::<usize>()
                >= n
        })
    }

    /// Waits for `n` windows, acknowledged or not.
    pub fn wait_windows(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |st| st.windows.len() >= n)
    }
}

impl Drop for Beats {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A frame's type, or the end of the stream before one.
fn read_header(input: &mut impl Read) -> Option<[u8; 2]> {
    let mut hdr = [0u8; 2];
    input.read_exact(&mut hdr).ok().map(|()| hdr)
}

fn read_u32(input: &mut impl Read) -> Option<u32> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b).ok()?;
    Some(u32::from_be_bytes(b))
}

/// What reading a window gave.
enum Read2 {
    Window(Window),
    /// The client closed the connection between windows.
    End,
    /// A protocol error (recorded): close the connection.
    Broken,
}

fn serve<S: Read + Write>(mut conn: S, id: usize, s: &Shared) {
    loop {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut window = match read_window(&mut conn, id, s) {
            Read2::Window(w) => w,
            Read2::End | Read2::Broken => return,
        };
        let n = window.events.len() as u32;
        if s.close_before_ack
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1))
            .is_ok()
        {
            record(s, window);
            return;
        }
        if s.withhold.load(Ordering::SeqCst) {
            record(s, window);
            // Read on (nothing more comes) until the client gives up.
            let mut sink = [0u8; 64];
            while matches!(conn.read(&mut sink), Ok(k) if k > 0) {}
            return;
        }
        let (count, interval) = *s.keepalives.lock().unwrap();
        let mut acks: Vec<u32> = vec![0; count as usize];
        let step = s.partial.load(Ordering::SeqCst);
        if step > 0 {
            acks.extend((step..n).step_by(step as usize));
        }
        acks.push(if s.bad_ack.load(Ordering::SeqCst) {
            n + 1
        } else {
            n
        });
        let last = acks.len() - 1;
        for (i, seq) in acks.into_iter().enumerate() {
            if i == last {
                window.acked = seq == n;
                window.ack_frames = last + 1;
                record(s, window.clone());
            } else if seq == 0 {
                std::thread::sleep(interval);
            }
            let mut frame = *b"2A\0\0\0\0";
            frame[2..].copy_from_slice(&seq.to_be_bytes());
            if conn.write_all(&frame).and_then(|()| conn.flush()).is_err() {
                return;
            }
        }
    }
}

fn record(s: &Shared, window: Window) {
    s.state.lock().unwrap().windows.push(window);
    s.changed.notify_all();
}

fn violation(s: &Shared, why: String) -> Read2 {
    s.state.lock().unwrap().violations.push(why);
    s.changed.notify_all();
    Read2::Broken
}

/// `2W` N and its N events.
fn read_window(conn: &mut impl Read, id: usize, s: &Shared) -> Read2 {
    let n = loop {
        let Some(hdr) = read_header(conn) else {
            return Read2::End;
        };
        if &hdr != b"2W" {
            return violation(s, format!("expected a window frame (2W), got {hdr:?}"));
        }
        let Some(n) = read_u32(conn) else {
            return violation(s, "the connection ended inside a window frame".into());
        };
        if n > 0 {
            break n;
        }
    };
    let mut window = Window {
        events: Vec::new(),
        seqs: Vec::new(),
        compressed: false,
        connection: id,
        acked: false,
        ack_frames: 0,
    };
    while (window.events.len() as u32) < n {
        let Some(hdr) = read_header(conn) else {
            return violation(
                s,
                format!(
                    "the connection ended after {} of {n} events",
                    window.events.len()
                ),
            );
        };
        match &hdr {
            b"2J" => {
                if let Err(why) = read_event(conn, &mut window) {
                    return violation(s, why);
                }
            }
            b"2C" => {
                window.compressed = true;
                let Some(len) = read_u32(conn) else {
                    return violation(s, "the connection ended inside a 2C header".into());
                };
                let mut zipped = vec![0u8; len as usize];
                if conn.read_exact(&mut zipped).is_err() {
                    return violation(s, "the connection ended inside a 2C frame".into());
                }
                let mut plain = Vec::new();
                if let Err(e) = flate2::read::ZlibDecoder::new(&zipped[..]).read_to_end(&mut plain)
                {
                    return violation(s, format!("a 2C frame that is not zlib: {e}"));
                }
                let mut inner = &plain[..];
                while !inner.is_empty() {
                    match read_header(&mut inner) {
                        Some(h) if &h == b"2J" => {
                            if let Err(why) = read_event(&mut inner, &mut window) {
                                return violation(s, format!("inside a 2C frame: {why}"));
                            }
                        }
                        other => {
                            return violation(
                                s,
                                format!("inside a 2C frame: expected 2J, got {other:?}"),
                            )
                        }
                    }
                }
            }
            b"2W" => return violation(s, "a window frame (2W) inside a window".into()),
            other => return violation(s, format!("unknown frame type {other:?}")),
        }
    }
    if window.events.len() as u32 != n {
        return violation(
            s,
            format!("a window of {n} held {} events", window.events.len()),
        );
    }
    let want: Vec<u32> = (1..=n).collect();
    if window.seqs != want {
        return violation(s, format!("sequences {:?}, not 1..={n}", window.seqs));
    }
    Read2::Window(window)
}

/// One `2J` frame after its type.
fn read_event(input: &mut impl Read, window: &mut Window) -> Result<(), String> {
    let seq = read_u32(input).ok_or("a 2J frame cut before its sequence")?;
    let len = read_u32(input).ok_or("a 2J frame cut before its length")?;
    if len == 0 {
        return Err("a 2J frame of 0 bytes (Logstash: invalid json length)".into());
    }
    let mut payload = vec![0u8; len as usize];
    input
        .read_exact(&mut payload)
        .map_err(|_| format!("a 2J frame of {len} bytes cut short"))?;
    match serde_json::from_slice::<serde_json::Value>(&payload) {
        Ok(v) if v.is_object() => {}
        Ok(_) => {
            return Err(format!(
                "a payload that is not a JSON object: {}",
                String::from_utf8_lossy(&payload)
            ))
        }
        Err(e) => {
            return Err(format!(
                "a payload that is not JSON ({e}): {}",
                String::from_utf8_lossy(&payload)
            ))
        }
    }
    window.seqs.push(seq);
    window.events.push(payload);
    Ok(())
}
