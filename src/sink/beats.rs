//! The beats client: Lumberjack v2, the protocol of Logstash's `beats`
//! input (what Filebeat speaks), over TCP or TLS, with acknowledgements.
//!
//! A batch becomes one window: `2W` with the event count N, then N `2J`
//! frames numbered 1..N, each holding one event's JSON object as it was
//! read; with `compression = "zlib"` those frames go inside one `2C` frame
//! (a zlib stream). The window counts as delivered only when the server
//! acknowledges sequence N (`2A` N). Partial acknowledgements (`2A` k < N)
//! are progress, and `2A` 0 is the keep-alive Logstash sends while its
//! pipeline is busy: each acknowledgement frame starts `ack_timeout` anew.
//! A sequence beyond N, or one lower than the last, is a protocol error.
//! Connections are kept open and used again; one that fails or outwaits
//! `ack_timeout` is dropped, and the whole window goes again on a new one.
//! (Written from elastic/go-lumber's `client/v2` and `server/v2` and
//! logstash-input-beats' `BeatsParser` and `ConnectionHandler`.)

use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{SendError, SetupError};
use super::stream::{Conn, Connector};
use crate::batch::events_of;
use crate::config::{Compression, DestinationConfig, Format};

/// The zlib level of `2C` frames: Filebeat's default for its Logstash
/// output (`compression_level: 3`), most of the gain of higher levels for
/// a fraction of their CPU on JSON events that share most of their bytes.
const ZLIB_LEVEL: u32 = 3;

/// One batch as a Lumberjack window, encoded once and sent as often as it
/// takes.
#[derive(Debug, Clone)]
pub struct Window {
    /// `2W` N and the N data frames (or the `2C` frame holding them).
    pub bytes: Bytes,
    /// N: the sequence the final acknowledgement carries.
    pub events: u32,
}

/// Sends windows to one `beats` input.
pub struct Beats {
    connector: Connector,
    ack_timeout: Duration,
    zlib: bool,
    /// Open connections not in use.
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

/// How an exchange on one connection failed.
enum Failure {
    /// A connection taken from the pool turned out closed before anything
    /// came back (Logstash closes connections idle for
    /// `client_inactivity_timeout`, 60 s by default): worth one more try on
    /// a new connection at once.
    Stale(SendError),
    Failed(SendError),
}

impl Beats {
    /// The client of a `type = "beats"` destination (reads its TLS files).
    pub fn new(cfg: &DestinationConfig) -> Result<Beats, SetupError> {
        let settings = cfg
            .beats
            .as_ref()
            .ok_or_else(|| SetupError::new(&cfg.name, "not a beats destination".into()))?;
        Ok(Beats {
            connector: Connector::new(cfg, &settings.address, settings.tls, true)?,
            ack_timeout: settings.ack_timeout,
            zlib: cfg.compression == Compression::Zlib,
            idle: Mutex::new(Vec::new()),
            max_idle: cfg.concurrency,
        })
    }

    /// Encodes a batch body (a JSON array or NDJSON, as batches are built)
    /// into one window.
    pub fn encode(&self, body: &Bytes, format: Format) -> Window {
        let (bytes, events) = encode(body, format, self.zlib);
        Window {
            bytes: bytes.into(),
            events,
        }
    }

    /// Sends a window and waits for its last sequence to be acknowledged;
    /// returns the time from sending to that acknowledgement.
    pub async fn send(&self, window: &Window) -> Result<Duration, SendError> {
        let started = Instant::now();
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(conn) = pooled {
            match self.exchange(conn, window, true).await {
                Ok(conn) => return Ok(self.done(conn, started)),
                Err(Failure::Failed(e)) => return Err(e),
                Err(Failure::Stale(_)) => {}
            }
        }
        let conn = self.connector.connect().await?;
        match self.exchange(conn, window, false).await {
            Ok(conn) => Ok(self.done(conn, started)),
            Err(Failure::Failed(e) | Failure::Stale(e)) => Err(e),
        }
    }

    fn done(&self, conn: Conn, started: Instant) -> Duration {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
        started.elapsed()
    }

    /// Opens a connection (with its TLS handshake) and closes it: the
    /// collector can be reached.
    pub async fn connect_probe(&self) -> Result<(), SendError> {
        let mut conn = self.connector.connect().await?;
        let _ = conn.shutdown().await;
        Ok(())
    }

    /// Writes the window and reads acknowledgements until the last
    /// sequence, each within `ack_timeout` of the one before (of the
    /// window, for the first). The connection comes back for use again.
    async fn exchange(
        &self,
        mut conn: Conn,
        window: &Window,
        reused: bool,
    ) -> Result<Conn, Failure> {
        let no_ack = || Failure::Failed(SendError::NoAck(self.ack_timeout));
        let mut deadline = tokio::time::Instant::now() + self.ack_timeout;
        let written = async {
            conn.write_all(&window.bytes).await?;
            conn.flush().await
        };
        match tokio::time::timeout_at(deadline, written).await {
            Err(_) => return Err(no_ack()),
            Ok(Err(e)) => {
                let e = SendError::Other(format!("sending to the collector failed: {e}"));
                return Err(if reused {
                    Failure::Stale(e)
                } else {
                    Failure::Failed(e)
                });
            }
            Ok(Ok(())) => {}
        }
        let mut acks = Acks::new(window.events);
        loop {
            let mut frame = [0u8; 6];
            let read = match tokio::time::timeout_at(deadline, conn.read_exact(&mut frame)).await {
                Err(_) => return Err(no_ack()),
                Ok(read) => read,
            };
            if let Err(e) = read {
                return Err(self.closed(e, reused, acks.answered()));
            }
            match acks.take(frame) {
                Ok(true) => return Ok(conn),
                Ok(false) => deadline = tokio::time::Instant::now() + self.ack_timeout,
                Err(why) => return Err(Failure::Failed(SendError::Beats(why))),
            }
        }
    }

    /// The connection ended (or broke) before the last acknowledgement.
    fn closed(&self, e: std::io::Error, reused: bool, answered: bool) -> Failure {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(crate::tls::describe);
        // A new connection dropped before any answer: what the beats input
        // does to a client that skips the TLS it expects, or (TLS 1.3) to
        // one without the client certificate it requires.
        let hint = match (reused || answered, self.connector.is_tls()) {
            (true, _) => "",
            (false, false) => HINT_PLAIN,
            (false, true) => HINT_TLS,
        };
        let why = match tls {
            Some(tls) => {
                format!("the TLS connection failed before the window was acknowledged: {tls}")
            }
            None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                format!("the collector closed the connection before acknowledging the window{hint}")
            }
            None => format!("reading the acknowledgement failed: {e}{hint}"),
        };
        let e = SendError::Beats(why);
        if reused && !answered {
            Failure::Stale(e)
        } else {
            Failure::Failed(e)
        }
    }
}

/// What to check when a new plain connection is dropped before any answer.
const HINT_PLAIN: &str = " (does the beats input expect TLS — ssl_enabled => true? then set transport = \"tls\"; Logstash's log says why it closed the connection)";
/// The same for a TLS connection.
const HINT_TLS: &str = " (does the beats input require a client certificate — ssl_client_authentication => \"required\"? then set client_cert_file and client_key_file; Logstash's log says why it closed the connection)";

/// The acknowledgements of one window, as they come.
struct Acks {
    /// N.
    last: u32,
    /// The highest sequence acknowledged so far.
    acked: u32,
    /// Frames read so far.
    frames: u32,
}

impl Acks {
    fn new(last: u32) -> Acks {
        Acks {
            last,
            acked: 0,
            frames: 0,
        }
    }

    /// Whether any frame came.
    fn answered(&self) -> bool {
        self.frames > 0
    }

    /// Takes one 6-byte frame from the server: true when it acknowledges
    /// the whole window, false for a keep-alive or a partial
    /// acknowledgement, the protocol error in words otherwise.
    fn take(&mut self, frame: [u8; 6]) -> Result<bool, String> {
        self.frames += 1;
        if &frame[..2] != b"2A" {
            return Err(not_an_ack(&frame, self.frames == 1));
        }
        let seq = u32::from_be_bytes([frame[2], frame[3], frame[4], frame[5]]);
        if seq == 0 {
            // The keep-alive: the server is still working on the window.
            return Ok(false);
        }
        if seq > self.last {
            return Err(format!(
                "the collector acknowledged sequence {seq}, but the window holds {} events",
                self.last
            ));
        }
        if seq < self.acked {
            return Err(format!(
                "the collector's acknowledgements went backwards, from sequence {} to {seq}",
                self.acked
            ));
        }
        self.acked = seq;
        Ok(seq == self.last)
    }
}

/// The words for an answer that is not a `2A` frame.
fn not_an_ack(frame: &[u8; 6], first: bool) -> String {
    let shown: String = frame
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b).map(char::from))
        .collect();
    let hint = if frame.starts_with(b"HTTP") {
        ": the collector speaks HTTP — point a type = \"http\" destination at it, or use the port of Logstash's beats input"
    } else if first && matches!(frame[0], 0x15 | 0x16) && frame[1] == 0x03 {
        ": the collector answered in TLS — set transport = \"tls\""
    } else {
        "; is this Logstash's beats input?"
    };
    format!("the collector answered `{shown}`, not a Lumberjack v2 acknowledgement (2A){hint}")
}

/// The window of a batch body, and its event count.
fn encode(body: &Bytes, format: Format, zlib: bool) -> (Vec<u8>, u32) {
    match format {
        // What the pipeline builds for beats: split at memchr speed.
        Format::Ndjson => window(
            Lines(body).filter(|line| !line.is_empty()),
            body.len(),
            zlib,
        ),
        Format::Json => window(
            events_of(body, format).iter().map(|e| &e[..]),
            body.len(),
            zlib,
        ),
    }
}

/// The lines of an NDJSON body (the last one with or without its newline).
struct Lines<'a>(&'a [u8]);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let (line, rest) = match memchr::memchr(b'\n', self.0) {
            Some(at) => (&self.0[..at], &self.0[at + 1..]),
            None => (self.0, &self.0[self.0.len()..]),
        };
        self.0 = rest;
        Some(line)
    }
}

/// The bytes of one window and its event count N: `2W` N, then the `2J`
/// frames numbered 1..N (inside one `2C` zlib frame with `zlib`).
/// `size` is the body's: the frames take 9 bytes more than its newline for
/// each event, so a quarter more holds events of 36 bytes and up without
/// growing (and copying) the buffer.
fn window<'a>(events: impl Iterator<Item = &'a [u8]>, size: usize, zlib: bool) -> (Vec<u8>, u32) {
    let frames_size = size + size / 4 + 64;
    let mut out = Vec::with_capacity(if zlib { frames_size / 3 } else { frames_size });
    out.extend_from_slice(b"2W\0\0\0\0");
    if !zlib {
        let n = data_frames(events, &mut out);
        out[2..6].copy_from_slice(&n.to_be_bytes());
        return (out, n);
    }
    let mut frames = Vec::with_capacity(frames_size);
    let n = data_frames(events, &mut frames);
    out[2..6].copy_from_slice(&n.to_be_bytes());
    out.extend_from_slice(b"2C\0\0\0\0");
    let mut enc = flate2::write::ZlibEncoder::new(out, flate2::Compression::new(ZLIB_LEVEL));
    // Writing to a Vec cannot fail.
    enc.write_all(&frames).expect("zlib into memory");
    let mut out = enc.finish().expect("zlib into memory");
    let len = (out.len() - 12).min(u32::MAX as usize) as u32;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    (out, n)
}

/// Appends the `2J` frames of `events`, sequence 1..N; returns N.
fn data_frames<'a>(events: impl Iterator<Item = &'a [u8]>, out: &mut Vec<u8>) -> u32 {
    let mut seq = 0u32;
    for event in events {
        seq = seq.saturating_add(1);
        out.extend_from_slice(b"2J");
        out.extend_from_slice(&seq.to_be_bytes());
        if is_object(event) {
            out.extend_from_slice(&(event.len() as u32).to_be_bytes());
            out.extend_from_slice(event);
        } else {
            let wrapped = wrap(event);
            out.extend_from_slice(&(wrapped.len() as u32).to_be_bytes());
            out.extend_from_slice(&wrapped);
        }
    }
    seq
}

/// Whether the event text is a JSON object (every event tailhook reads is).
fn is_object(event: &[u8]) -> bool {
    event
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        == Some(&b'{')
}

/// Anything else as `{"message": "<its text>"}`: the beats input reads
/// each payload into a map and fails the connection on anything else.
fn wrap(event: &[u8]) -> Vec<u8> {
    let text = serde_json::Value::String(String::from_utf8_lossy(event).into_owned());
    format!("{{\"message\":{text}}}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            assert_eq!(&rest[..2], b"2J");
            let seq = u32::from_be_bytes(rest[2..6].try_into().unwrap());
            let len = u32::from_be_bytes(rest[6..10].try_into().unwrap()) as usize;
            out.push((seq, rest[10..10 + len].to_vec()));
            rest = &rest[10 + len..];
        }
        out
    }

    /// The window of `events` as the pipeline hands them over (NDJSON).
    fn window_of(events: &[&[u8]], zlib: bool) -> Vec<u8> {
        let mut body = Vec::new();
        for e in events {
            body.extend_from_slice(e);
            body.push(b'\n');
        }
        let (w, n) = encode(&body.into(), Format::Ndjson, zlib);
        assert_eq!(n as usize, events.len());
        w
    }

    #[test]
    fn a_window_numbers_its_frames_from_one() {
        let w = window_of(&[br#"{"a":1}"#, br#"{"b":"x"}"#], false);
        assert_eq!(&w[..6], b"2W\0\0\0\x02");
        assert_eq!(
            frames(&w[6..]),
            [(1, br#"{"a":1}"#.to_vec()), (2, br#"{"b":"x"}"#.to_vec())]
        );
        // Without the last newline, and with an empty line: the same.
        let (same, n) = encode(
            &Bytes::from_static(b"{\"a\":1}\n\n{\"b\":\"x\"}"),
            Format::Ndjson,
            false,
        );
        assert_eq!((&same, n), (&w, 2));
        // A JSON-array body gives the same window.
        let (json, n) = encode(
            &Bytes::from_static(br#"[{"a":1},{"b":"x"}]"#),
            Format::Json,
            false,
        );
        assert_eq!((json, n), (w, 2));
    }

    #[test]
    fn zlib_puts_the_frames_in_one_compressed_frame() {
        use std::io::Read;
        let events: Vec<String> = (0..50)
            .map(|i| format!(r#"{{"seq":{i},"pad":"{}"}}"#, "x".repeat(200)))
            .collect();
        let events: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
        let w = window_of(&events, true);
        assert_eq!(&w[..8], b"2W\0\0\0\x322C");
        let len = u32::from_be_bytes(w[8..12].try_into().unwrap()) as usize;
        assert_eq!(len, w.len() - 12, "one 2C frame, to the end");
        let mut plain = Vec::new();
        flate2::read::ZlibDecoder::new(&w[12..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, window_of(&events, false)[6..]);
        assert!(w.len() < plain.len() / 4);
    }

    #[test]
    fn a_value_that_is_not_an_object_goes_as_its_text_in_message() {
        let got = frames(&window_of(&[b" {\"a\":1}", br#"[1,"two"]"#], false)[6..]);
        assert_eq!(got[0].1, b" {\"a\":1}");
        assert_eq!(got[1].1, br#"{"message":"[1,\"two\"]"}"#);
    }

    #[test]
    fn acknowledgements() {
        let ack = |seq: u32| {
            let mut f = *b"2A\0\0\0\0";
            f[2..].copy_from_slice(&seq.to_be_bytes());
            f
        };
        let mut acks = Acks::new(5);
        assert!(!acks.answered());
        assert_eq!(acks.take(ack(0)), Ok(false), "keep-alive");
        assert_eq!(acks.take(ack(2)), Ok(false), "partial");
        assert_eq!(acks.take(ack(0)), Ok(false), "keep-alive after progress");
        assert_eq!(acks.take(ack(2)), Ok(false), "the same again");
        assert_eq!(acks.take(ack(5)), Ok(true));
        assert!(acks.answered());

        let mut acks = Acks::new(5);
        assert!(acks
            .take(ack(6))
            .unwrap_err()
            .contains("sequence 6, but the window holds 5"));
        let mut acks = Acks::new(5);
        acks.take(ack(3)).unwrap();
        assert!(acks
            .take(ack(1))
            .unwrap_err()
            .contains("went backwards, from sequence 3 to 1"));
        let mut acks = Acks::new(5);
        let http = acks.take(*b"HTTP/1").unwrap_err();
        assert!(
            http.contains("`HTTP/1`") && http.contains("speaks HTTP"),
            "{http}"
        );
        let mut acks = Acks::new(5);
        assert!(acks
            .take([0x15, 0x03, 0x03, 0, 2, 2])
            .unwrap_err()
            .contains("set transport = \"tls\""));
        let mut acks = Acks::new(5);
        assert!(acks
            .take(*b"1A\0\0\0\x05")
            .unwrap_err()
            .contains("is this Logstash's beats input?"));
    }
}
