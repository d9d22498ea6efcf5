//! A Fluentd forward-protocol collector emulator on 127.0.0.1, written from
//! the Forward Protocol v1 specification and what Fluentd's `in_forward.rb`
//! does with a connection:
//!
//! - one TCP connection carries many MessagePack messages; a `nil` is a
//!   heartbeat and is skipped;
//! - the mode is told by the second element: Message `[tag, time, record,
//!   option?]`, Forward `[tag, [[time, record], …], option?]`, PackedForward
//!   `[tag, bin, option?]` (the bin is concatenated `[time, record]`
//!   entries) and CompressedPackedForward (the same with `option.compressed
//!   = "gzip"`, the bin one or more gzip members);
//! - `time` is an integer or EventTime (ext type 0: u32 seconds, u32 nanos);
//! - when `option.chunk` is set, the answer is the MessagePack map
//!   `{"ack": chunk}`, sent after the events are taken (here: recorded as
//!   accepted); without `chunk` nothing is answered;
//! - `deny_keepalive true` ([`Options::deny_keepalive`]): the connection is
//!   closed after the first answer (and HELO says `keepalive: false`).
//!
//! With [`Options::security`], the `<security>` handshake of `in_forward`
//! (its `generate_helo`, `check_ping` and `generate_pong`): at once on a
//! new connection `["HELO", {"nonce": 16 random bytes, "auth": 16 random
//! bytes, "keepalive": !deny_keepalive}]` (bin, as msgpack-ruby packs
//! Ruby's binary strings; str with [`Security::str_salts`]; `auth` is sent
//! whether or not users are checked, as `in_forward` does), then the PING
//! must be six elements `["PING", hostname, salt,
//! hex(sha512(salt + hostname + nonce + shared_key)), username,
//! password_digest]`; a wrong digest is answered `["PONG", false,
//! "shared_key mismatch", "", ""]`, a user (with `user_auth`, i.e.
//! [`Security::users`] not empty) whose hex(sha512(auth + username +
//! password)) matches no `<user>` `["PONG", false, "username/password
//! mismatch", "", ""]`, anything else `"invalid ping message"`, and the
//! connection is closed after such an answer. Otherwise `["PONG", true, "",
//! self_hostname, hex(sha512(salt + self_hostname + nonce + shared_key))]`
//! and messages are taken as above. A message before the handshake is
//! treated as a PING, as `in_forward` does.
//!
//! Decoding is `rmpv`'s, not tailhook's, so the encoder is not checked
//! against itself. Anything off the specification (a record that is not a
//! map, a bin record, `option.size` not the entry count, a non-UTF-8
//! string) is a violation, listed by [`Forward::violations`].
//!
//! Plain TCP, or TLS ([`Options::tls`]) like `<transport tls>`.
//! Fault injection: withhold acknowledgements ([`Forward::set_withhold`]),
//! acknowledge a different chunk id ([`Forward::set_wrong_ack`]), close the
//! connection on the next messages without acknowledging them
//! ([`Forward::drop_next`]), answer a PONG whose digest is made with another
//! key, as a server that does not know the shared key would
//! ([`Forward::set_bad_pong_digest`]). [`Forward::stop`] closes the
//! listener and every connection and keeps the record, so a test can start
//! another emulator on the same port ([`Options::port`]) as Fluentd
//! restarting.

use std::io::{BufReader, Cursor, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rmpv::Value;

/// One message as it came.
#[derive(Debug, Clone)]
pub struct Received {
    pub tag: String,
    /// "Message", "Forward", "PackedForward" or "CompressedPackedForward".
    pub mode: &'static str,
    /// `option.chunk`, if any.
    pub chunk: Option<String>,
    /// Each entry: (seconds, nanoseconds) and the record as JSON.
    pub entries: Vec<((u64, u32), serde_json::Value)>,
    /// Each record as compact JSON text, its keys in the order they came
    /// (what a JSON event read by tailhook was, byte for byte, when it was
    /// compact JSON).
    pub texts: Vec<String>,
    /// The connection it came on (counted from 1).
    pub connection: usize,
    /// Whether it was acknowledged (and its events accepted).
    pub acked: bool,
}

/// The `<security>` section of `in_forward`.
#[derive(Debug, Clone)]
pub struct Security {
    pub shared_key: String,
    /// `in_forward`'s own `self_hostname` (sent in PONG).
    pub self_hostname: String,
    /// `user_auth true` with these `<user>`s (name, password); empty: no
    /// user authentication.
    pub users: Vec<(String, String)>,
    /// HELO's nonce and salt as msgpack str rather than bin.
    pub str_salts: bool,
}

impl Security {
    /// A `<security>` with this shared key, `self_hostname fluentd-test`, no users.
    pub fn key(shared_key: &str) -> Security {
        Security {
            shared_key: shared_key.to_string(),
            self_hostname: "fluentd-test".to_string(),
            users: Vec::new(),
            str_salts: false,
        }
    }
}

/// One `<security>` handshake as the emulator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Handshake {
    pub connection: usize,
    /// The PING's hostname and username.
    pub hostname: String,
    pub username: String,
    /// None: accepted; else the reason sent in the PONG.
    pub refused: Option<String>,
}

/// How to start the emulator.
#[derive(Default)]
pub struct Options {
    /// `<transport tls>` with this server configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `<security>`.
    pub security: Option<Security>,
    /// `deny_keepalive true`.
    pub deny_keepalive: bool,
    /// The port (0: any free one). The listener has SO_REUSEADDR, so the
    /// port of a stopped emulator (or one held by a `DeadPort`) can be
    /// taken again at once.
    pub port: u16,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    handshakes: Vec<Handshake>,
    connections: usize,
    /// TLS handshakes that resumed an earlier session.
    resumed: usize,
    violations: Vec<String>,
    /// Clones of the open connections by id, to close them at `stop`.
    streams: std::collections::BTreeMap<usize, TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    withhold: AtomicBool,
    wrong_ack: AtomicBool,
    bad_pong: AtomicBool,
    drop_next: AtomicUsize,
    stop: AtomicBool,
    security: Option<Security>,
    deny_keepalive: bool,
}

/// The emulator; stops when dropped.
pub struct Forward {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Forward {
    /// Plain TCP.
    pub fn start() -> Forward {
        Forward::start_with(Options::default())
    }

    /// TLS (`<transport tls>`), with this server configuration.
    pub fn start_tls(tls: Arc<rustls::ServerConfig>) -> Forward {
        Forward::start_with(Options {
            tls: Some(tls),
            ..Options::default()
        })
    }

    /// With these options.
    pub fn start_with(opts: Options) -> Forward {
        let bind = SocketAddr::from(([127, 0, 0, 1], opts.port));
        // std sets SO_REUSEADDR on Unix.
        let listener = TcpListener::bind(bind)
            .unwrap_or_else(|e| panic!("forward emulator: cannot listen on {bind}: {e}"));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            withhold: AtomicBool::new(false),
            wrong_ack: AtomicBool::new(false),
            bad_pong: AtomicBool::new(false),
            drop_next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            security: opts.security,
            deny_keepalive: opts.deny_keepalive,
        });
        let s = shared.clone();
        let tls = opts.tls;
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let Ok(clone) = conn.try_clone() else {
                    continue;
                };
                let mut st = s.state.lock().unwrap();
                st.connections += 1;
                let id = st.connections;
                st.streams.insert(id, clone);
                let s2 = s.clone();
                let tls = tls.clone();
                let thread = std::thread::spawn(move || {
                    match tls {
                        None => serve(conn, id, &s2),
                        Some(config) => {
                            if let Some(stream) = tls_accept(config, conn, &s2) {
                                serve(stream, id, &s2)
                            }
                        }
                    }
                    // Closed for the client too (the clone kept for `stop`
                    // would hold it open).
                    if let Some(c) = s2.state.lock().unwrap().streams.remove(&id) {
                        let _ = c.shutdown(Shutdown::Both);
                    }
                });
                st.threads.push(thread);
                drop(st);
                s.changed.notify_all();
            }
        });
        Forward {
            addr,
            shared,
            accept: Mutex::new(Some(accept)),
        }
    }

    /// `127.0.0.1:port`, for `address`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// While true, nothing is acknowledged (and nothing accepted).
    pub fn set_withhold(&self, on: bool) {
        self.shared.withhold.store(on, Ordering::SeqCst);
    }

    /// While true, acknowledgements carry a chunk id that was not sent.
    pub fn set_wrong_ack(&self, on: bool) {
        self.shared.wrong_ack.store(on, Ordering::SeqCst);
    }

    /// While true, a PONG carries a digest made with another key.
    pub fn set_bad_pong_digest(&self, on: bool) {
        self.shared.bad_pong.store(on, Ordering::SeqCst);
    }

    /// The next `n` messages are read (recorded, not acknowledged) and
    /// their connection closed: a collector going away before its ack.
    pub fn drop_next(&self, n: usize) {
        self.shared.drop_next.store(n, Ordering::SeqCst);
    }

    /// Every message received, acknowledged or not.
    pub fn received(&self) -> Vec<Received> {
        self.shared.state.lock().unwrap().received.clone()
    }

    /// The records of acknowledged messages, in the order they came.
    pub fn accepted(&self) -> Vec<serde_json::Value> {
        self.received()
            .into_iter()
            .filter(|r| r.acked)
            .flat_map(|r| r.entries.into_iter().map(|(_, rec)| rec))
            .collect()
    }

    /// How many events were acknowledged.
    pub fn accepted_count(&self) -> usize {
        let st = self.shared.state.lock().unwrap();
        accepted_in(&st)
    }

    /// Every `<security>` handshake, in order.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.shared.state.lock().unwrap().handshakes.clone()
    }

    /// TLS connections whose handshake resumed an earlier session (the
    /// server side allows it, as rustls does by default).
    pub fn resumed_tls_handshakes(&self) -> usize {
        self.shared.state.lock().unwrap().resumed
    }

    /// Connections accepted so far.
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
        self.wait(timeout, |st| accepted_in(st) >= n)
    }

    /// Waits for `n` messages, acknowledged or not.
    pub fn wait_received(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |st| st.received.len() >= n)
    }

    /// Waits for `n` handshakes, accepted or refused.
    pub fn wait_handshakes(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |st| st.handshakes.len() >= n)
    }

    /// Stops listening, closes every connection and waits for the threads
    /// serving them: after it, the record is complete. Idempotent.
    pub fn stop(&self) {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.lock().unwrap().take() {
            let _ = t.join();
        }
        let (streams, threads) = {
            let mut st = self.shared.state.lock().unwrap();
            (
                std::mem::take(&mut st.streams),
                std::mem::take(&mut st.threads),
            )
        };
        for s in streams.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in threads {
            let _ = t.join();
        }
        self.shared.changed.notify_all();
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accepted_in(st: &State) -> usize {
    st.received
        .iter()
        .filter(|r| r.acked)
        .map(|r| r.entries.len())
        .sum()
}

/// The server side of a TLS handshake, done before anything else so that
/// a resumed one is counted.
fn tls_accept(
    config: Arc<rustls::ServerConfig>,
    mut conn: TcpStream,
    s: &Shared,
) -> Option<rustls::StreamOwned<rustls::ServerConnection, TcpStream>> {
    let mut server = rustls::ServerConnection::new(config).ok()?;
    while server.is_handshaking() {
        server.complete_io(&mut conn).ok()?;
    }
    if server.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        s.state.lock().unwrap().resumed += 1;
    }
    Some(rustls::StreamOwned::new(server, conn))
}

/// hex(sha512(parts concatenated)), as Ruby's `Digest::SHA512#hexdigest`.
fn sha512_hex(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
    for p in parts {
        ctx.update(p);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A msgpack str or bin as bytes (Ruby reads both as a String).
fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Binary(b) => Some(b.clone()),
        _ => None,
    }
}

fn write_value<S: Write>(out: &mut S, v: &Value) -> bool {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, v).unwrap();
    out.write_all(&buf).and_then(|()| out.flush()).is_ok()
}

/// `["HELO", {"nonce": …, "auth": …, "keepalive": …}]`, written by hand so
/// that the nonce and salt can be a str holding any bytes.
fn helo(nonce: &[u8; 16], auth: &[u8; 16], keepalive: bool, as_str: bool) -> Vec<u8> {
    let mut out = vec![0x92, 0xa4];
    out.extend_from_slice(b"HELO");
    out.push(0x83);
    for (key, value) in [(&b"nonce"[..], nonce), (&b"auth"[..], auth)] {
        out.push(0xa0 | key.len() as u8);
        out.extend_from_slice(key);
        if as_str {
            out.push(0xa0 | 16);
        } else {
            out.extend_from_slice(&[0xc4, 16]);
        }
        out.extend_from_slice(value);
    }
    out.push(0xa9);
    out.extend_from_slice(b"keepalive");
    out.push(if keepalive { 0xc3 } else { 0xc2 });
    out
}

/// `check_ping` and `generate_pong` of `in_forward`: the PONG to send, and
/// the handshake to record.
fn answer_ping(
    ping: &Value,
    sec: &Security,
    nonce: &[u8],
    auth: &[u8],
    bad_pong: bool,
    id: usize,
) -> (Value, Handshake) {
    let refuse = |reason: &str, hostname: String, username: String| {
        (
            Value::Array(vec![
                Value::from("PONG"),
                Value::Boolean(false),
                Value::from(reason),
                Value::from(""),
                Value::from(""),
            ]),
            Handshake {
                connection: id,
                hostname,
                username,
                refused: Some(reason.to_string()),
            },
        )
    };
    let items = match ping.as_array() {
        Some(items)
            if items.len() == 6 && bytes(&items[0]).as_deref() == Some(b"PING".as_slice()) =>
        {
            items
        }
        _ => return refuse("invalid ping message", String::new(), String::new()),
    };
    let field = |i: usize| bytes(&items[i]).unwrap_or_default();
    let (hostname, salt, digest, username, password_digest) =
        (field(1), field(2), field(3), field(4), field(5));
    let host_text = String::from_utf8_lossy(&hostname).into_owned();
    let user_text = String::from_utf8_lossy(&username).into_owned();
    let serverside = sha512_hex(&[&salt, &hostname, nonce, sec.shared_key.as_bytes()]);
    if digest != serverside.as_bytes() {
        return refuse("shared_key mismatch", host_text, user_text);
    }
    if !sec.users.is_empty() {
        let ok = sec.users.iter().any(|(u, p)| {
            u.as_bytes() == username.as_slice()
                && sha512_hex(&[auth, &username, p.as_bytes()]).as_bytes() == password_digest
        });
        if !ok {
            return refuse("username/password mismatch", host_text, user_text);
        }
    }
    let key = if bad_pong {
        "not the shared key".as_bytes()
    } else {
        sec.shared_key.as_bytes()
    };
    let pong_digest = sha512_hex(&[&salt, sec.self_hostname.as_bytes(), nonce, key]);
    (
        Value::Array(vec![
            Value::from("PONG"),
            Value::Boolean(true),
            Value::from(""),
            Value::from(sec.self_hostname.as_str()),
            Value::from(pong_digest),
        ]),
        Handshake {
            connection: id,
            hostname: host_text,
            username: user_text,
            refused: None,
        },
    )
}

fn serve<S: Read + Write>(conn: S, id: usize, s: &Shared) {
    let mut input = BufReader::new(conn);
    // The handshake still to do: (nonce, auth salt).
    let mut pending = None;
    if let Some(sec) = &s.security {
        let nonce: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
        let auth: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
        let hello = helo(&nonce, &auth, !s.deny_keepalive, sec.str_salts);
        let out = input.get_mut();
        if out.write_all(&hello).and_then(|()| out.flush()).is_err() {
            return;
        }
        pending = Some((nonce, auth));
    }
    loop {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let value = match rmpv::decode::read_value(&mut input) {
            Ok(v) => v,
            // The client closed (or broke) the connection.
            Err(_) => return,
        };
        if let (Some((nonce, auth)), Some(sec)) = (pending.take(), &s.security) {
            let bad = s.bad_pong.load(Ordering::SeqCst);
            let (pong, record) = answer_ping(&value, sec, &nonce, &auth, bad, id);
            let refused = record.refused.is_some();
            s.state.lock().unwrap().handshakes.push(record);
            s.changed.notify_all();
            if !write_value(input.get_mut(), &pong) || refused {
                return;
            }
            continue;
        }
        if value.is_nil() {
            continue;
        }
        match decode_message(&value) {
            Err(why) => {
                violation(s, why);
                return;
            }
            Ok((tag, mode, entries, texts, option)) => {
                let chunk = option.as_ref().and_then(|o| get(o, "chunk")).map(|c| {
                    c.as_str().map(str::to_string).unwrap_or_else(|| {
                        violation(s, format!("option.chunk is not a string: {c}"));
                        String::new()
                    })
                });
                if let Some(size) = option.as_ref().and_then(|o| get(o, "size")) {
                    if size.as_u64() != Some(entries.len() as u64) {
                        violation(
                            s,
                            format!("option.size is {size}, the message holds {}", entries.len()),
                        );
                    }
                }
                let dropped = s
                    .drop_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let acked = chunk.is_some() && !dropped && !s.withhold.load(Ordering::SeqCst);
                {
                    let mut st = s.state.lock().unwrap();
                    st.received.push(Received {
                        tag,
                        mode,
                        chunk: chunk.clone(),
                        entries,
                        texts,
                        connection: id,
                        acked,
                    });
                }
                s.changed.notify_all();
                if dropped {
                    return;
                }
                if acked {
                    let mut id = chunk.unwrap();
                    if s.wrong_ack.load(Ordering::SeqCst) {
                        id = format!("not-{id}");
                    }
                    let ack = Value::Map(vec![(Value::from("ack"), Value::from(id))]);
                    if !write_value(input.get_mut(), &ack) {
                        return;
                    }
                }
                if s.deny_keepalive {
                    return;
                }
            }
        }
    }
}

fn violation(s: &Shared, why: String) {
    s.state.lock().unwrap().violations.push(why);
    s.changed.notify_all();
}

fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

type Entries = Vec<((u64, u32), serde_json::Value)>;

/// A decoded message: tag, mode, entries, the records as JSON text, option.
type Message = (String, &'static str, Entries, Vec<String>, Option<Value>);

/// `[tag, …]` in any of the four modes.
fn decode_message(v: &Value) -> Result<Message, String> {
    let (tag, mode, raw, option) = split_message(v)?;
    let mut entries = Vec::with_capacity(raw.len());
    let mut texts = Vec::with_capacity(raw.len());
    for e in &raw {
        let (time, record) = decode_entry(e)?;
        let mut text = String::new();
        json_text(record, &mut text)?;
        texts.push(text);
        entries.push((time, to_json(record)?));
    }
    Ok((tag, mode, entries, texts, option))
}

/// A message split up: tag, mode, the raw entries, option.
type Parts = (String, &'static str, Vec<Value>, Option<Value>);

/// `[tag, …]`: the tag, the mode, the raw entries and the option.
fn split_message(v: &Value) -> Result<Parts, String> {
    let items = v
        .as_array()
        .ok_or(format!("a message that is not an array: {v}"))?;
    let tag = items
        .first()
        .and_then(Value::as_str)
        .ok_or("the tag is not a string")?
        .to_string();
    let second = items.get(1).ok_or("a message with only a tag")?;
    match second {
        Value::Array(entries) => {
            let option = items.get(2).cloned();
            Ok((tag, "Forward", entries.clone(), option))
        }
        // Like in_forward (Ruby reads str and bin alike), a str is taken as the bin.
        Value::Binary(_) | Value::String(_) => {
            let bin: Vec<u8> = match second {
                Value::Binary(b) => b.clone(),
                Value::String(s) => s.as_bytes().to_vec(),
                _ => unreachable!(),
            };
            let option = items.get(2).cloned();
            let compressed = option
                .as_ref()
                .and_then(|o| get(o, "compressed"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let (mode, raw) = match compressed.as_deref() {
                None => ("PackedForward", bin),
                Some("gzip") => {
                    let mut out = Vec::new();
                    flate2::read::MultiGzDecoder::new(&bin[..])
                        .read_to_end(&mut out)
                        .map_err(|e| format!("compressed = gzip but the bin is not gzip: {e}"))?;
                    ("CompressedPackedForward", out)
                }
                Some(other) => return Err(format!("unknown compression `{other}`")),
            };
            let mut cur = Cursor::new(&raw[..]);
            let mut entries = Vec::new();
            while (cur.position() as usize) < raw.len() {
                let e = rmpv::decode::read_value(&mut cur)
                    .map_err(|e| format!("an entry in the bin is not MessagePack: {e}"))?;
                entries.push(e);
            }
            Ok((tag, mode, entries, option))
        }
        time => {
            let record = items.get(2).ok_or("Message mode without a record")?;
            let entry = Value::Array(vec![time.clone(), record.clone()]);
            Ok((tag, "Message", vec![entry], items.get(3).cloned()))
        }
    }
}

/// An entry's time and its record (a map).
fn decode_entry(e: &Value) -> Result<((u64, u32), &Value), String> {
    let pair = e
        .as_array()
        .filter(|a| a.len() == 2)
        .ok_or(format!("an entry that is not [time, record]: {e}"))?;
    let time = match &pair[0] {
        Value::Ext(0, b) if b.len() == 8 => (
            u64::from(u32::from_be_bytes(b[..4].try_into().unwrap())),
            u32::from_be_bytes(b[4..].try_into().unwrap()),
        ),
        Value::Integer(i) if i.as_u64().is_some() => (i.as_u64().unwrap(), 0),
        other => return Err(format!("time is neither EventTime nor an integer: {other}")),
    };
    if !pair[1].is_map() {
        return Err(format!("a record that is not a map: {}", pair[1]));
    }
    Ok((time, &pair[1]))
}

/// A record as compact JSON text, map keys in the order they came.
pub fn json_text(v: &Value, out: &mut String) -> Result<(), String> {
    let scalar = |j: serde_json::Value| serde_json::to_string(&j).unwrap();
    match v {
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_text(item, out)?;
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let k = k
                    .as_str()
                    .ok_or(format!("a map key that is not a string: {k}"))?;
                out.push_str(&scalar(serde_json::Value::from(k)));
                out.push(':');
                json_text(item, out)?;
            }
            out.push('}');
        }
        other => out.push_str(&scalar(to_json(other)?)),
    }
    Ok(())
}

/// A record as JSON: what the event was before tailhook encoded it.
pub fn to_json(v: &Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => J::from(u),
            (None, Some(n)) => J::from(n),
            _ => return Err(format!("integer {i} out of range")),
        },
        Value::F32(f) => J::from(f64::from(*f)),
        Value::F64(f) => J::from(*f),
        Value::String(s) => J::String(
            s.as_str()
                .ok_or(format!("a string that is not UTF-8: {s:?}"))?
                .to_string(),
        ),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let k = k
                    .as_str()
                    .ok_or(format!("a map key that is not a string: {k}"))?;
                out.insert(k.to_string(), to_json(v)?);
            }
            J::Object(out)
        }
        Value::Binary(_) => return Err("binary data in a record".into()),
        Value::Ext(t, _) => return Err(format!("ext type {t} in a record")),
    })
}
