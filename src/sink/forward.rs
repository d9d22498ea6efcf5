//! The forward client: Fluentd Forward Protocol v1 over TCP, in
//! PackedForward mode (CompressedPackedForward with `compression = "gzip"`),
//! with acknowledgements.
//!
//! A batch becomes one message `[tag, bin(entries), {"size": n, "chunk": id}]`,
//! each entry `[EventTime, record]`. It counts as delivered only when the
//! server answers `{"ack": id}`, which Fluentd's `in_forward` does once it
//! has put the events into its buffer. The id is made once per batch, so a
//! batch sent again carries the same id. Connections are kept open and used
//! again; one that fails or outwaits `ack_timeout` is dropped, and the batch
//! goes again on a new one. With `shared_key`, every new connection starts
//! with `in_forward`'s `<security>` handshake ([`handshake`]).

mod handshake;

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{SendError, SetupError};
use super::msgpack::{self, ReadError, Value};
use super::stream::Connector;
use crate::batch::events_of;
use crate::config::{Compression, DestinationConfig, Format, ForwardConfig};

/// One batch, encoded once and sent as often as it takes.
#[derive(Debug, Clone)]
pub struct Message {
    /// The whole MessagePack message.
    pub bytes: Bytes,
    /// `option.chunk`: the id the acknowledgement must carry.
    pub chunk: String,
}

/// A connection ready for batches (the handshake done, if any).
struct Conn {
    io: super::stream::Conn,
    /// False when the server's HELO said `keepalive: false`
    /// (`deny_keepalive`): it closes the connection after one answer.
    keepalive: bool,
}

/// Sends batches to one `in_forward`.
pub struct Forward {
    settings: ForwardConfig,
    connect_timeout: Duration,
    gzip: bool,
    /// TCP, and TLS with `transport = "tls"`, to `address`.
    connector: Connector,
    /// Open connections not in use.
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

/// How an exchange on one connection failed.
enum Failure {
    /// A connection taken from the pool turned out closed before anything
    /// came back: worth one more try on a new connection at once.
    Stale(SendError),
    Failed(SendError),
}

impl Forward {
    /// The client of a `type = "forward"` destination.
    pub fn new(cfg: &DestinationConfig) -> Result<Forward, SetupError> {
        let settings = cfg
            .forward
            .clone()
            .ok_or_else(|| SetupError::new(&cfg.name, "not a forward destination".into()))?;
        // Fluentd 1.16's TLS server (OpenSSL, no session id context) fails
        // every resumed handshake ("session id context uninitialized"):
        // each new connection makes a full one.
        let connector = Connector::new(cfg, &settings.address, settings.tls, false)?;
        Ok(Forward {
            connector,
            settings,
            connect_timeout: cfg.connect_timeout,
            gzip: cfg.compression == Compression::Gzip,
            idle: Mutex::new(Vec::new()),
            max_idle: cfg.concurrency,
        })
    }

    /// Encodes a batch body (a JSON array or NDJSON, as batches are built)
    /// into one forward message with a new chunk id.
    pub fn encode(&self, body: &Bytes, format: Format) -> Message {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let read_time = (
            now.as_secs().min(u64::from(u32::MAX)) as u32,
            now.subsec_nanos(),
        );
        let events = events_of(body, format);
        let mut entries = Vec::with_capacity(body.len() + events.len() * 16);
        for event in &events {
            let time = self
                .settings
                .time_key
                .as_deref()
                .and_then(|key| event_time(event, key))
                .unwrap_or(read_time);
            msgpack::write_len(&mut entries, 2, 0x90, 0xdc);
            msgpack::write_event_time(&mut entries, time.0, time.1);
            let start = entries.len();
            if msgpack::json_to_msgpack(event, &mut entries).is_err() {
                // Events are checked JSON; should one not be, it goes as text rather than be lost.
                entries.truncate(start);
                msgpack::write_len(&mut entries, 1, 0x80, 0xde);
                msgpack::write_str(&mut entries, "message");
                msgpack::write_str(&mut entries, &String::from_utf8_lossy(event));
            }
        }
        let entries = if self.gzip {
            super::client::gzip(&entries).to_vec()
        } else {
            entries
        };
        let chunk = base64(&fastrand::u128(..).to_be_bytes());
        let mut out = Vec::with_capacity(entries.len() + self.settings.tag.len() + 64);
        msgpack::write_len(&mut out, 3, 0x90, 0xdc);
        msgpack::write_str(&mut out, &self.settings.tag);
        msgpack::write_bin(&mut out, &entries);
        msgpack::write_len(&mut out, if self.gzip { 3 } else { 2 }, 0x80, 0xde);
        msgpack::write_str(&mut out, "size");
        msgpack::write_uint(&mut out, events.len() as u64);
        msgpack::write_str(&mut out, "chunk");
        msgpack::write_str(&mut out, &chunk);
        if self.gzip {
            msgpack::write_str(&mut out, "compressed");
            msgpack::write_str(&mut out, "gzip");
        }
        Message {
            bytes: out.into(),
            chunk,
        }
    }

    /// Sends a message and waits for its acknowledgement; returns the time
    /// from writing it to its acknowledgement (connecting not included).
    pub async fn send(&self, msg: &Message) -> Result<Duration, SendError> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(conn) = pooled {
            match self.exchange(conn, msg, true).await {
                Ok((conn, latency)) => return Ok(self.done(conn, latency)),
                Err(Failure::Failed(e)) => return Err(e),
                Err(Failure::Stale(_)) => {}
            }
        }
        let conn = self.connect().await?;
        match self.exchange(conn, msg, false).await {
            Ok((conn, latency)) => Ok(self.done(conn, latency)),
            Err(Failure::Failed(e) | Failure::Stale(e)) => Err(e),
        }
    }

    fn done(&self, conn: Conn, latency: Duration) -> Duration {
        if conn.keepalive {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
        latency
    }

    /// Opens a connection (with the `<security>` handshake when
    /// `shared_key` is set) and closes it: the collector can be reached.
    pub async fn connect_probe(&self) -> Result<(), SendError> {
        let mut conn = self.connect().await?;
        let _ = conn.io.shutdown().await;
        Ok(())
    }

    /// A new connection: TCP, the TLS handshake with `transport = "tls"`
    /// and the `<security>` handshake with `shared_key`, all within
    /// `connect_timeout`.
    async fn connect(&self) -> Result<Conn, SendError> {
        let started = Instant::now();
        let mut io = self.connector.connect().await?;
        let Some(security) = &self.settings.security else {
            return Ok(Conn {
                io,
                keepalive: true,
            });
        };
        let left = self.connect_timeout.saturating_sub(started.elapsed());
        let keepalive = handshake::run(&mut io, security, left, self.connect_timeout).await?;
        Ok(Conn { io, keepalive })
    }

    /// What to check when a new connection is dropped before any answer:
    /// what `in_forward` does to a client that skips its TLS, or its
    /// `<security>` handshake (over TLS the HELO it sent first is lost
    /// with the reset).
    fn unanswered_hint(&self) -> &'static str {
        match (self.connector.is_tls(), self.settings.security.is_some()) {
            (_, true) => " (Fluentd's log says why it closed the connection)",
            (true, false) => " (does in_forward have <security>? then set shared_key; Fluentd's log says why it closed the connection)",
            (false, false) => " (does in_forward expect TLS — set transport = \"tls\" — or have <security> — set shared_key? Fluentd's log says which)",
        }
    }

    /// Writes the message and reads until its acknowledgement, within
    /// `ack_timeout`. The connection comes back for use again, with the
    /// time from writing to the acknowledgement.
    async fn exchange(
        &self,
        mut conn: Conn,
        msg: &Message,
        reused: bool,
    ) -> Result<(Conn, Duration), Failure> {
        let ack_timeout = self.settings.ack_timeout;
        let started = Instant::now();
        let io = &mut conn.io;
        let work = async {
            let mut answered = false;
            let closed = |answered: bool, e: SendError| {
                if reused && !answered {
                    Failure::Stale(e)
                } else {
                    Failure::Failed(e)
                }
            };
            let written = async {
                io.write_all(&msg.bytes).await?;
                io.flush().await
            };
            written.await.map_err(|e| {
                closed(
                    false,
                    SendError::Other(format!("sending to the collector failed: {e}")),
                )
            })?;
            let mut buf: Vec<u8> = Vec::new();
            let mut read = [0u8; 4096];
            loop {
                match msgpack::read(&buf) {
                    Ok((Value::Nil, used)) => {
                        // A heartbeat: nothing to do.
                        buf.drain(..used);
                        continue;
                    }
                    Ok((answer, used)) => {
                        buf.drain(..used);
                        return check_ack(&answer, &msg.chunk).map_err(Failure::Failed);
                    }
                    Err(ReadError::Invalid(why)) => {
                        return Err(Failure::Failed(SendError::Protocol(format!(
                            "the collector's answer is not MessagePack ({why}); is this Fluentd's in_forward?"
                        ))))
                    }
                    Err(ReadError::Incomplete) => {}
                }
                // A new connection dropped before any answer: what in_forward
                // does to a client that skips its TLS or <security> handshake.
                let hint = if !reused && !answered {
                    self.unanswered_hint()
                } else {
                    ""
                };
                let n = io.read(&mut read).await.map_err(|e| {
                    closed(
                        answered,
                        SendError::Protocol(format!(
                            "reading the acknowledgement failed: {e}{hint}"
                        )),
                    )
                })?;
                if n == 0 {
                    return Err(closed(
                        answered,
                        SendError::Protocol(format!(
                            "the collector closed the connection before acknowledging the batch{hint}"
                        )),
                    ));
                }
                answered = true;
                buf.extend_from_slice(&read[..n]);
                if buf.len() > 1 << 20 {
                    return Err(Failure::Failed(SendError::Protocol(
                        "the collector's answer is over 1 MiB".into(),
                    )));
                }
            }
        };
        match tokio::time::timeout(ack_timeout, work).await {
            Ok(Ok(())) => Ok((conn, started.elapsed())),
            Ok(Err(f)) => Err(f),
            Err(_) => Err(Failure::Failed(SendError::NoAck(ack_timeout))),
        }
    }
}

/// Whether `answer` is `{"ack": chunk}`.
fn check_ack(answer: &Value, chunk: &str) -> Result<(), SendError> {
    if let Value::Array(items) = answer {
        if items.first() == Some(&Value::Str(b"HELO".to_vec())) {
            return Err(SendError::Protocol(
                "the collector starts the <security> handshake (HELO): in_forward has <security>, and this destination has no shared_key; set shared_key to the shared_key of in_forward's <security> (and username and password if it has user_auth)".into(),
            ));
        }
    }
    match answer.get("ack") {
        Some(Value::Str(id) | Value::Bin(id)) if id == chunk.as_bytes() => Ok(()),
        Some(Value::Str(id) | Value::Bin(id)) => Err(SendError::Protocol(format!(
            "the collector acknowledged chunk `{}`, not the batch sent (`{chunk}`)",
            String::from_utf8_lossy(id)
        ))),
        _ => Err(SendError::Protocol(
            "the collector answered something other than {\"ack\": chunk}".into(),
        )),
    }
}

/// The event's time from field `key`: Unix seconds as an integer, a
/// float (with fractions as nanoseconds) or a string holding either.
fn event_time(event: &[u8], key: &str) -> Option<(u32, u32)> {
    #[derive(serde::Deserialize)]
    struct Map(std::collections::HashMap<String, serde_json::Value>);
    let Map(fields) = serde_json::from_slice(event).ok()?;
    let secs = match fields.get(key)? {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !(0.0..=f64::from(u32::MAX)).contains(&secs) {
        return None;
    }
    let whole = secs.trunc();
    let nanos = (((secs - whole) * 1e9).round() as u32).min(999_999_999);
    Some((whole as u32, nanos))
}

/// Standard base64 with padding (the form of Fluentd's own chunk ids).
fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn event_times() {
        assert_eq!(
            event_time(br#"{"time":1700000000}"#, "time"),
            Some((1_700_000_000, 0))
        );
        assert_eq!(event_time(br#"{"t":"12.5"}"#, "t"), Some((12, 500_000_000)));
        assert_eq!(event_time(br#"{"t":-1}"#, "t"), None);
        assert_eq!(event_time(br#"{"t":[1]}"#, "t"), None);
        assert_eq!(event_time(br#"{"u":1}"#, "t"), None);
    }

    #[test]
    fn acks() {
        let ack = |v: &str| Value::Map(vec![(Value::Str(b"ack".to_vec()), Value::Str(v.into()))]);
        assert!(check_ack(&ack("abc"), "abc").is_ok());
        assert!(check_ack(&ack("abd"), "abc")
            .unwrap_err()
            .to_string()
            .contains("acknowledged chunk `abd`"));
        assert!(check_ack(&Value::Int(1), "abc").is_err());
        let helo = Value::Array(vec![Value::Str(b"HELO".to_vec()), Value::Map(vec![])]);
        assert!(check_ack(&helo, "abc")
            .unwrap_err()
            .to_string()
            .contains("set shared_key"));
    }
}
