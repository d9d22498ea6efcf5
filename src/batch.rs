//! Builds request bodies from raw event bytes: a JSON array (or NDJSON),
//! appended into one buffer, never re-serialised.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

use crate::checkpoint::{Entry, FileId, Fingerprint, Truncated};
use crate::config::{BatchConfig, Format};
use crate::source::identity::Window;

/// A file a pipeline reads, as batches refer to it.
#[derive(Debug)]
pub struct TrackedFile {
    /// Device and inode.
    pub id: FileId,
    /// The path it was found under.
    pub path: String,
    /// The source that reads it.
    pub source: String,
    /// What a truncation took from it until a copy is found (see
    /// [`Truncated`]): read when its checkpoint entry is made.
    pub lost: std::sync::Mutex<Option<Truncated>>,
}

impl TrackedFile {
    /// A file found at `path`, read by `source`.
    pub fn new(id: FileId, path: String, source: String) -> TrackedFile {
        TrackedFile {
            id,
            path,
            source,
            lost: std::sync::Mutex::new(None),
        }
    }

    /// The checkpoint entry saying that every byte before `offset` is
    /// delivered.
    pub fn entry(
        &self,
        offset: u64,
        fingerprint: Fingerprint,
        content_crc: Option<u32>,
        tail: Option<Fingerprint>,
        truncated: Option<Truncated>,
    ) -> Entry {
        Entry {
            path: self.path.clone(),
            source: self.source.clone(),
            id: self.id,
            fingerprint,
            content_crc,
            offset,
            tail,
            truncated,
        }
    }

    /// The content this file lost to a truncation, while no copy of it has
    /// been found.
    pub fn lost(&self) -> Option<Truncated> {
        *self.lost.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records (or clears) the content this file lost to a truncation.
    pub fn set_lost(&self, t: Option<Truncated>) {
        *self.lost.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

/// How far a batch takes one file: once the batch is acknowledged, every byte
/// of the file before `offset` is delivered.
#[derive(Debug, Clone)]
pub struct Position {
    pub file: Arc<TrackedFile>,
    /// Where the batch's part of the file starts: the offset the previous
    /// batch of this builder reached in it, or where reading it began (for
    /// the batch id, `crate::batch_id`).
    pub start: u64,
    /// The offset delivery reaches.
    pub offset: u64,
    /// The file's leading bytes when they were read.
    pub fingerprint: Fingerprint,
    /// The file is closed (rotated away or deleted and read to its end).
    pub closed: bool,
    /// CRC-32 of the file's bytes before `offset`, when known.
    pub content_crc: Option<u32>,
    /// The fingerprint of the bytes before `offset`, when known (set when
    /// the batch is taken, from `window`).
    pub tail: Option<Fingerprint>,
    /// What a truncation had taken from the file when these bytes were
    /// read (see [`crate::source::Chunk::lost`]).
    pub lost: Option<Truncated>,
    /// The bytes read around `offset`, until the batch is taken.
    window: Option<Arc<Window>>,
}

impl Position {
    /// The checkpoint entry this position makes.
    pub fn entry(&self) -> Entry {
        self.file.entry(
            self.offset,
            self.fingerprint,
            self.content_crc,
            self.tail,
            self.lost,
        )
    }
}

/// The file a chunk was read from, and what was known of it then.
pub struct Origin<'a> {
    /// The file.
    pub file: &'a Arc<TrackedFile>,
    /// Its leading bytes.
    pub fingerprint: Fingerprint,
    /// What a truncation had taken from it, no copy found yet.
    pub lost: Option<Truncated>,
    /// The bytes read, to fingerprint the bytes before an offset.
    pub window: &'a Arc<Window>,
}

/// One request's worth of events.
#[derive(Debug)]
pub struct Batch {
    /// The body, ready to send.
    pub body: Bytes,
    /// How many events the body holds (0 for a batch that only moves positions).
    pub events: usize,
    /// Where each file it touched stands once it is acknowledged.
    pub positions: Vec<Position>,
    /// Invalid lines to write to the dead-letter file before the positions move.
    pub dead_letters: Vec<Bytes>,
}

/// Accumulates events until a bound is reached.
pub struct BatchBuilder {
    limits: BatchConfig,
    format: Format,
    body: BytesMut,
    events: usize,
    positions: Vec<Position>,
    dead_letters: Vec<Bytes>,
    last_len: usize,
    /// The offset each file's last batch reached, by source and identity:
    /// where its part of the next batch starts.
    reached: std::collections::HashMap<(String, FileId), u64>,
}

impl BatchBuilder {
    /// An empty builder with these bounds.
    pub fn new(limits: BatchConfig, format: Format) -> BatchBuilder {
        BatchBuilder {
            limits,
            format,
            body: BytesMut::new(),
            events: 0,
            positions: Vec::new(),
            dead_letters: Vec::new(),
            last_len: 4096,
            reached: std::collections::HashMap::new(),
        }
    }

    /// True when neither events nor positions are pending.
    pub fn is_empty(&self) -> bool {
        self.events == 0 && self.positions.is_empty() && self.dead_letters.is_empty()
    }

    /// Adds invalid lines bound for the dead-letter file.
    pub fn add_dead_letters(&mut self, lines: Vec<Bytes>) {
        self.dead_letters.extend(lines);
    }

    /// True when `max_events` is reached.
    pub fn is_full(&self) -> bool {
        self.events >= self.limits.max_events
    }

    /// Whether an event of `len` bytes fits without passing `max_bytes`. An
    /// empty batch takes any event, so one larger event goes alone.
    pub fn fits(&self, len: usize) -> bool {
        if self.events == 0 {
            return true;
        }
        let after = match self.format {
            // `[` … `,event` … `]`
            Format::Json => self.body.len() + 1 + len + 1,
            Format::Ndjson => self.body.len() + len + 1,
        };
        after <= self.limits.max_bytes && self.events < self.limits.max_events
    }

    /// Appends one event's bytes.
    pub fn push(&mut self, event: &[u8]) {
        if self.events == 0 {
            self.body
                .reserve(self.last_len.min(self.limits.max_bytes) + 64);
        }
        match self.format {
            Format::Json => {
                self.body.put_u8(if self.events == 0 { b'[' } else { b',' });
                self.body.extend_from_slice(event);
            }
            Format::Ndjson => {
                self.body.extend_from_slice(event);
                self.body.put_u8(b'\n');
            }
        }
        self.events += 1;
    }

    /// Records that once this batch is acknowledged, `from.file` is
    /// delivered up to `offset`.
    pub fn advance(&mut self, from: &Origin<'_>, offset: u64) {
        self.advance_chunk(from, offset, None, false);
    }

    /// Records where a whole chunk takes its file (with the content CRC), and
    /// whether the file is then finished and closed.
    pub fn advance_chunk(
        &mut self,
        from: &Origin<'_>,
        offset: u64,
        content_crc: Option<u32>,
        closed: bool,
    ) {
        let existing = self
            .positions
            .iter()
            .find(|p| Arc::ptr_eq(&p.file, from.file))
            .map(|p| p.start);
        let start = existing.unwrap_or_else(|| {
            // Where the previous batch stopped, if that is inside or at the
            // start of this chunk; else (a file new to this builder, or one
            // truncated and read again from 0) where this chunk starts.
            let (begin, end) = from.window.range();
            self.reached
                .get(&(from.file.source.clone(), from.file.id))
                .copied()
                .filter(|r| (begin..=end).contains(r))
                .unwrap_or(begin)
        });
        let position = Position {
            file: from.file.clone(),
            start,
            offset,
            fingerprint: from.fingerprint,
            closed,
            content_crc,
            tail: None,
            lost: from.lost,
            window: Some(from.window.clone()),
        };
        match self
            .positions
            .iter_mut()
            .find(|p| Arc::ptr_eq(&p.file, from.file))
        {
            Some(p) => *p = position,
            None => self.positions.push(position),
        }
    }

    /// Takes what has accumulated, leaving the builder empty.
    pub fn take(&mut self) -> Option<Batch> {
        if self.is_empty() {
            return None;
        }
        if self.format == Format::Json && self.events > 0 {
            self.body.put_u8(b']');
        }
        self.last_len = self.body.len();
        for p in &mut self.positions {
            let key = (p.file.source.clone(), p.file.id);
            if p.closed {
                self.reached.remove(&key);
            } else {
                self.reached.insert(key, p.offset);
            }
            if let Some(w) = p.window.take() {
                p.tail = w.tail_at(p.offset);
                // A batch that ends inside a chunk: its CRC, from the bytes
                // read, so that the checkpoint can still recognise a copy.
                p.content_crc = p.content_crc.or_else(|| w.crc_at(p.offset));
            }
        }
        let events = std::mem::take(&mut self.events);
        Some(Batch {
            body: self.body.split().freeze(),
            events,
            positions: std::mem::take(&mut self.positions),
            dead_letters: std::mem::take(&mut self.dead_letters),
        })
    }
}

/// The body [`BatchBuilder`] makes of `events`: what a part of a batch
/// that a collector refused as too large (413) is sent as.
pub fn body_of(events: &[Bytes], format: Format) -> Bytes {
    let len: usize = events.iter().map(|e| e.len() + 1).sum();
    let mut body = BytesMut::with_capacity(len + 1);
    for (i, e) in events.iter().enumerate() {
        match format {
            Format::Json => {
                body.put_u8(if i == 0 { b'[' } else { b',' });
                body.extend_from_slice(e);
            }
            Format::Ndjson => {
                body.extend_from_slice(e);
                body.put_u8(b'\n');
            }
        }
    }
    if format == Format::Json && !events.is_empty() {
        body.put_u8(b']');
    }
    body.freeze()
}

/// Splits a body built by [`BatchBuilder`] back into its events (for the
/// dead-letter file, and to split a batch refused as too large).
pub fn events_of(body: &Bytes, format: Format) -> Vec<Bytes> {
    match format {
        Format::Ndjson => body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| body.slice_ref(l))
            .collect(),
        Format::Json => {
            let parsed = std::str::from_utf8(body)
                .ok()
                .and_then(|t| serde_json::from_str::<Vec<&RawValue>>(t).ok());
            match parsed {
                Some(raws) => raws
                    .into_iter()
                    .map(|r| body.slice_ref(r.get().as_bytes()))
                    .collect(),
                // Bodies are built from validated events; keep the whole body rather than lose it.
                None => vec![body.clone()],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(max_events: usize, max_bytes: usize) -> BatchConfig {
        BatchConfig {
            max_events,
            max_bytes,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn json_array_body_and_bounds() {
        let mut b = BatchBuilder::new(limits(3, 20), Format::Json);
        assert!(b.take().is_none());
        b.push(br#"{"a":1}"#);
        assert!(b.fits(7)); // [{"a":1},{"b":2}] = 17
        b.push(br#"{"b":2}"#);
        assert!(!b.fits(3)); // would be 21
        let batch = b.take().unwrap();
        assert_eq!(&batch.body[..], br#"[{"a":1},{"b":2}]"#);
        assert_eq!(batch.events, 2);
        assert_eq!(
            events_of(&batch.body, Format::Json),
            [&br#"{"a":1}"#[..], &br#"{"b":2}"#[..]]
        );
        // A body split back into events and rebuilt is the same bytes.
        let events = events_of(&batch.body, Format::Json);
        assert_eq!(body_of(&events, Format::Json), batch.body);
        assert_eq!(&body_of(&events[1..], Format::Json)[..], br#"[{"b":2}]"#);
        // One event over max_bytes goes alone.
        assert!(b.fits(100));
        b.push(&[b'x'; 100]);
        assert!(!b.fits(1));
        assert_eq!(b.take().unwrap().body.len(), 102);
    }

    #[test]
    fn max_events_and_ndjson() {
        let mut b = BatchBuilder::new(limits(2, 1 << 20), Format::Ndjson);
        b.push(b"{}");
        b.push(b"{\"x\":[1]}");
        assert!(b.is_full() && !b.fits(1));
        let batch = b.take().unwrap();
        assert_eq!(&batch.body[..], b"{}\n{\"x\":[1]}\n");
        let events = events_of(&batch.body, Format::Ndjson);
        assert_eq!(events.len(), 2);
        assert_eq!(body_of(&events, Format::Ndjson), batch.body);
    }

    #[test]
    fn a_batch_that_ends_inside_a_chunk_records_the_content_crc_there() {
        // Two lines read at offset 100 of a file whose first 100 bytes are
        // known: the batch ends after the first, in the middle of the chunk.
        let head = [b'h'; 100];
        let lines = b"{\"a\":1}\n{\"b\":2}\n";
        let window = Arc::new(Window::new(
            Bytes::copy_from_slice(&head),
            Bytes::copy_from_slice(lines),
            100,
            Some(crc32fast::hash(&head)),
        ));
        let file = Arc::new(TrackedFile::new(
            FileId { dev: 1, ino: 2 },
            "app.log".into(),
            "app".into(),
        ));
        let from = Origin {
            file: &file,
            fingerprint: Fingerprint::default(),
            lost: None,
            window: &window,
        };
        let mut b = BatchBuilder::new(limits(1, 1 << 20), Format::Json);
        b.push(br#"{"a":1}"#);
        b.advance(&from, 108);
        let batch = b.take().unwrap();
        let mut whole = head.to_vec();
        whole.extend_from_slice(&lines[..8]);
        assert_eq!(batch.positions[0].offset, 108);
        assert_eq!(batch.positions[0].start, 100, "where the chunk starts");
        // The next batch's part of the file starts where this one stopped.
        b.push(br#"{"b":2}"#);
        b.advance(&from, 116);
        let next = b.take().unwrap();
        assert_eq!(
            (next.positions[0].start, next.positions[0].offset),
            (108, 116)
        );
        assert_eq!(
            batch.positions[0].content_crc,
            Some(crc32fast::hash(&whole))
        );
    }
}
