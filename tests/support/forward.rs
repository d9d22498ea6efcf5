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
//!   accepted); without `chunk` nothing is answered.
//!
//! Decoding is `rmpv`'s, not tailhook's, so the encoder is not checked
//! against itself. Anything off the specification (a record that is not a
//! map, a bin record, `option.size` not the entry count, a non-UTF-8
//! string) is a violation, listed by [`Forward::violations`].
//!
//! Plain TCP, or TLS ([`Forward::start_tls`]) like `<transport tls>`.
//! Fault injection: withhold acknowledgements ([`Forward::set_withhold`]),
//! or acknowledge a different chunk id ([`Forward::set_wrong_ack`]).
//! The `<security>` handshake (shared_key) is not emulated.

use std::io::{BufReader, Cursor, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    /// The connection it came on (counted from 1).
    pub connection: usize,
    /// Whether it was acknowledged (and its events accepted).
    pub acked: bool,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    connections: usize,
    violations: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    withhold: AtomicBool,
    wrong_ack: AtomicBool,
    stop: AtomicBool,
}

/// The emulator; stops accepting when dropped.
pub struct Forward {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Forward {
    /// Plain TCP.
    pub fn start() -> Forward {
        Forward::start_with(None)
    }

    /// TLS (`<transport tls>`), with this server configuration.
    pub fn start_tls(tls: Arc<rustls::ServerConfig>) -> Forward {
        Forward::start_with(Some(tls))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Forward {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the forward emulator");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            withhold: AtomicBool::new(false),
            wrong_ack: AtomicBool::new(false),
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
        Forward { addr, shared }
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
        self.wait(timeout, |st| {
            st.received
                .iter()
                .filter(|r| r.acked)
                .map(|r| r.entries.len())
                .sum::<usize>()
                >= n
        })
    }

    /// Waits for `n` messages, acknowledged or not.
    pub fn wait_received(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |st| st.received.len() >= n)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve<S: Read + Write>(conn: S, id: usize, s: &Shared) {
    let mut input = BufReader::new(conn);
    loop {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let value = match rmpv::decode::read_value(&mut input) {
            Ok(v) => v,
            // The client closed (or broke) the connection.
            Err(_) => return,
        };
        if value.is_nil() {
            continue;
        }
        match decode_message(&value) {
            Err(why) => {
                violation(s, why);
                return;
            }
            Ok((tag, mode, entries, option)) => {
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
                let acked = chunk.is_some() && !s.withhold.load(Ordering::SeqCst);
                {
                    let mut st = s.state.lock().unwrap();
                    st.received.push(Received {
                        tag,
                        mode,
                        chunk: chunk.clone(),
                        entries,
                        connection: id,
                        acked,
                    });
                }
                s.changed.notify_all();
                if acked {
                    let mut id = chunk.unwrap();
                    if s.wrong_ack.load(Ordering::SeqCst) {
                        id = format!("not-{id}");
                    }
                    let ack = Value::Map(vec![(Value::from("ack"), Value::from(id))]);
                    let mut buf = Vec::new();
                    rmpv::encode::write_value(&mut buf, &ack).unwrap();
                    let out = input.get_mut();
                    if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
                        return;
                    }
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

/// `[tag, …]` in any of the four modes.
fn decode_message(v: &Value) -> Result<(String, &'static str, Entries, Option<Value>), String> {
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
            let entries = entries.iter().map(decode_entry).collect::<Result<_, _>>()?;
            Ok((tag, "Forward", entries, option))
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
                entries.push(decode_entry(&e)?);
            }
            Ok((tag, mode, entries, option))
        }
        time => {
            let record = items.get(2).ok_or("Message mode without a record")?;
            let entry = Value::Array(vec![time.clone(), record.clone()]);
            Ok((
                tag,
                "Message",
                vec![decode_entry(&entry)?],
                items.get(3).cloned(),
            ))
        }
    }
}

fn decode_entry(e: &Value) -> Result<((u64, u32), serde_json::Value), String> {
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
    Ok((time, to_json(&pair[1])?))
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
