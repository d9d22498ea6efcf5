//! Reading one file in large chunks and framing its complete lines.
//!
//! These calls block (file I/O and parsing); the file source runs them on
//! tokio's blocking pool, one chunk at a time.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::copy::CopyState;
use super::identity::{self, Tail, Window};
use super::{Chunk, Event, TailMode};
use crate::batch::TrackedFile;
use crate::checkpoint::{FileId, Fingerprint, FINGERPRINT_BYTES};
use crate::config::OnInvalid;
use crate::event::{frame_line, wrap_invalid, Class, FrameSink, Invalid, Kind, Selection};
use crate::rate_limit::RateLimit;

/// How much one read asks for.
const READ_SIZE: usize = 256 * 1024;

/// Everything framing needs that is the same for every file of a source.
pub struct FrameContext {
    /// The source's name, for logs.
    pub source: String,
    /// The destination's selection.
    pub selection: Selection,
    /// What to do with invalid lines.
    pub on_invalid: OnInvalid,
    /// The longest line taken as an event.
    pub max_line_bytes: usize,
    /// Keeps invalid-line warnings to about one a second.
    pub invalid_log: RateLimit,
    /// Files, or spool segments (whose first line is a header, not an event).
    pub mode: TailMode,
    /// What reading this source for this destination counts.
    pub metrics: crate::metrics::ReadMetrics,
}

/// What one read found.
pub enum ReadOutcome {
    /// New bytes, framed.
    Chunk(Chunk),
    /// Nothing new.
    Eof,
    /// The file was truncated or rewritten: reading starts again at 0.
    Restarted {
        /// The new position (0) to record.
        position: Chunk,
        /// The first bytes before the truncation, to recognise a copy.
        old_head: Fingerprint,
        /// How far the old content had been framed.
        old_offset: u64,
        /// CRC-32 of the old content up to `old_offset`, when known.
        old_crc: Option<u32>,
    },
}

/// A line longer than `max_line_bytes` that is still being skipped.
struct Oversize {
    prefix: Bytes,
    len: u64,
    start: u64,
}

/// One open file and the bytes of its last, unfinished line.
pub struct OpenFile {
    /// The file as batches refer to it.
    pub tracked: Arc<TrackedFile>,
    /// The path it was last seen under.
    pub path: PathBuf,
    /// No longer matched by the source's globs (renamed away or deleted):
    /// read it to its end, then close it.
    pub orphan: bool,
    /// Consecutive scans that did not find it under a matching name.
    pub missing_scans: u32,
    /// Set while it is taken for a copy of another open file (same first
    /// bytes): it is not read unless that file is truncated, and then it
    /// holds what the truncation took away.
    pub copy: Option<CopyState>,
    /// Its content started again (truncated or rewritten) and nothing of the
    /// new content has been read: it may be a copy of another file.
    pub fresh: bool,
    /// Reading it failed last time (warned about once, until it works again).
    pub read_failing: bool,
    /// When it last grew (or was opened): a rotated file is closed once it
    /// has been idle for `rotate_wait`.
    pub last_growth: Instant,
    /// Its share of the open-file budget.
    pub permit: Option<super::budget::Permit>,
    /// The last read found nothing new.
    at_eof: bool,
    file: Arc<File>,
    base: u64,
    /// The bytes just before `base`, to see the content rewritten under us.
    tail: Tail,
    buf: BytesMut,
    oversize: Option<Oversize>,
    head: Vec<u8>,
    /// CRC-32 of every byte before `base`, when known: with the first bytes,
    /// it tells a copy of this file's content from another file.
    crc: Option<crc32fast::Hasher>,
}

impl OpenFile {
    /// Opens `path` positioned at `start`; `start_crc` is the CRC-32 of the
    /// bytes before `start`, when known.
    pub fn open(
        file: Arc<File>,
        path: PathBuf,
        tracked: Arc<TrackedFile>,
        start: u64,
        start_crc: Option<u32>,
        now: Instant,
    ) -> io::Result<OpenFile> {
        let tail = Tail::read(&file, start)?;
        let mut f = OpenFile {
            tracked,
            path,
            orphan: false,
            missing_scans: 0,
            copy: None,
            fresh: false,
            read_failing: false,
            permit: None,
            at_eof: false,
            last_growth: now,
            file,
            base: start,
            tail,
            buf: BytesMut::new(),
            oversize: None,
            head: Vec::new(),
            crc: match (start, start_crc) {
                (0, _) => Some(crc32fast::Hasher::new()),
                (_, Some(c)) => Some(crc32fast::Hasher::new_with_initial_len(c, start)),
                _ => None,
            },
        };
        (&*f.file).seek(SeekFrom::Start(start))?;
        f.refresh_head()?;
        Ok(f)
    }

    /// The fingerprint of the file's first bytes as read so far.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.head)
    }

    /// Every byte before this has been framed.
    pub fn framed_to(&self) -> u64 {
        self.oversize.as_ref().map_or(self.base, |o| o.start)
    }

    fn refresh_head(&mut self) -> io::Result<()> {
        if self.head.len() < FINGERPRINT_BYTES {
            let mut head = vec![0u8; FINGERPRINT_BYTES];
            let n = identity::read_fully_at(&self.file, &mut head, 0)?;
            head.truncate(n);
            self.head = head;
        }
        Ok(())
    }

    /// Reads the next chunk and frames its complete lines. `None` at end of file.
    pub fn read(&mut self, ctx: &FrameContext, now: Instant) -> io::Result<ReadOutcome> {
        // Ask the size first: an idle file costs one fstat, not a buffer, and
        // a small append gets a small buffer.
        let pos = self.base + self.buf.len() as u64;
        let len = self.file.metadata()?.len();
        // Shrunk, or other bytes where we had read (truncated and written
        // again, to as many bytes or more, before we looked): not the
        // content we were reading. An idle file costs one more small read
        // for this: a rewrite to the very same size is seen too.
        let changed = match len.cmp(&pos) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => !self.tail.still_in(&self.file, self.base)?,
            std::cmp::Ordering::Greater => self.content_changed()?,
        };
        if changed {
            return self.restart(len);
        }
        let available = len - pos;
        if available == 0 {
            self.at_eof = true;
            return Ok(ReadOutcome::Eof);
        }
        self.at_eof = false;
        let want = available.min(READ_SIZE as u64) as usize;
        let old = self.buf.len();
        self.buf.resize(old + want, 0);
        let n = loop {
            match (&*self.file).read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(old + n);
        ctx.metrics.bytes.increment(n as u64);
        if n == 0 {
            self.release_buffer();
            return Ok(ReadOutcome::Eof);
        }
        self.last_growth = now;
        self.fresh = false;
        if self.head.len() < FINGERPRINT_BYTES {
            self.refresh_head()?;
        }
        let mut out = Framed::new(ctx, self);
        if let Some(last_nl) = memchr::memrchr(b'\n', &self.buf[old..]) {
            let lines = self.buf.split_to(old + last_nl + 1).freeze();
            let base = self.base;
            out.window = Some(Window::new(
                self.tail.bytes(),
                lines.clone(),
                base,
                self.content_crc(),
            ));
            self.base += lines.len() as u64;
            self.hash(&lines);
            let mut start = 0usize;
            for nl in memchr::memchr_iter(b'\n', &lines) {
                let line_start = base + start as u64;
                let line_end = base + nl as u64 + 1;
                match self.oversize.take() {
                    Some(o) => {
                        let len = o.len + (nl - start) as u64;
                        out.line(o.start, line_end, |s| {
                            s.invalid(
                                o.prefix,
                                Invalid::TooLong {
                                    len,
                                    max: ctx.max_line_bytes,
                                },
                            )
                        });
                    }
                    None if nl - start > ctx.max_line_bytes => {
                        let prefix = lines.slice(start..start + ctx.max_line_bytes);
                        let len = (nl - start) as u64;
                        out.line(line_start, line_end, |s| {
                            s.invalid(
                                prefix,
                                Invalid::TooLong {
                                    len,
                                    max: ctx.max_line_bytes,
                                },
                            )
                        });
                    }
                    None if line_start == 0
                        && ctx.mode == TailMode::Spool
                        && lines[start..nl].starts_with(crate::spool::segment::HEADER_PREFIX) => {}
                    None => {
                        let line = lines.slice(start..nl);
                        out.line(line_start, line_end, |s| frame_line(&line, s));
                    }
                }
                start = nl + 1;
            }
        }
        // What is left is an unfinished line.
        let partial = self.buf.len();
        if self.oversize.is_some() || partial > ctx.max_line_bytes {
            // These bytes are consumed now (skipped, or kept as a prefix).
            let consumed = self.buf.split().freeze();
            self.hash(&consumed);
            self.buf = BytesMut::from(&consumed[..]);
        }
        if let Some(o) = &mut self.oversize {
            o.len += partial as u64;
            self.base += partial as u64;
            self.buf.clear();
        } else if partial > ctx.max_line_bytes {
            self.oversize = Some(Oversize {
                prefix: self.buf.split_to(ctx.max_line_bytes).freeze(),
                len: partial as u64,
                start: self.base,
            });
            self.base += partial as u64;
            self.buf.clear();
        }
        // Let the unfinished line go to a small buffer: the read allocation
        // then lives only as long as the chunk's events, so memory is bounded
        // by the chunks in flight, not by the number of files.
        self.release_buffer();
        Ok(ReadOutcome::Chunk(out.finish(self)))
    }

    /// Whether the bytes already read are no longer those in the file: its
    /// first bytes, or (since real logs start every line alike) the bytes
    /// just before where framing got.
    fn content_changed(&self) -> io::Result<bool> {
        if !self.head.is_empty() {
            let mut now = vec![0u8; self.head.len()];
            let n = identity::read_fully_at(&self.file, &mut now, 0)?;
            if now[..n] != self.head[..] {
                return Ok(true);
            }
        }
        Ok(!self.tail.still_in(&self.file, self.base)?)
    }

    /// Whether it can be closed and reopened later without losing anything
    /// it holds in memory: read to its end, no long line being skipped, a
    /// file of its own (not a copy, not rotated away). An unfinished last
    /// line is read again from the file when it is reopened.
    pub fn closable(&self) -> bool {
        self.at_eof
            && self.oversize.is_none()
            && self.copy.is_none()
            && !self.orphan
            && self.missing_scans == 0
    }

    /// How far it has been read (framed, or held as an unfinished line).
    pub fn read_to(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Where it stands, as its checkpoint entry would say.
    pub fn entry(&self) -> crate::checkpoint::Entry {
        let tail = self.window_at_base().tail_at(self.framed_to());
        let mut e = self.tracked.entry(
            self.framed_to(),
            self.fingerprint(),
            self.content_crc(),
            tail,
            self.tracked.lost(),
        );
        e.path = self.path.display().to_string();
        e
    }

    /// Whether the file still holds what was read of it: as many bytes, the
    /// same first bytes and the same bytes before where framing got.
    pub fn intact(&self) -> bool {
        let big_enough = self
            .file
            .metadata()
            .is_ok_and(|m| m.len() >= self.base + self.buf.len() as u64);
        big_enough && !self.content_changed().unwrap_or(true)
    }

    /// Starts again from the first byte of a file that was truncated (as by
    /// copytruncate) or rewritten.
    fn restart(&mut self, len: u64) -> io::Result<ReadOutcome> {
        let old_head = self.fingerprint();
        let old_offset = self.framed_to();
        let old_crc = self.content_crc();
        tracing::warn!(path = %self.path.display(), size = len, read = old_offset, "file shrank or its first bytes changed (truncated, as by copytruncate): reading it again from the start");
        (&*self.file).seek(SeekFrom::Start(0))?;
        self.base = 0;
        self.buf = BytesMut::new();
        self.oversize = None;
        self.head.clear();
        self.tail.clear();
        self.fresh = true;
        self.crc = Some(crc32fast::Hasher::new());
        self.refresh_head()?;
        Ok(ReadOutcome::Restarted {
            position: self.position(),
            old_head,
            old_offset,
            old_crc,
        })
    }

    /// Starts reading a copy at `offset`: the file it copies was truncated
    /// there, so what comes after is what the copy alone still holds.
    pub fn start_copy_at(&mut self, offset: u64, crc: u32) -> io::Result<()> {
        (&*self.file).seek(SeekFrom::Start(offset))?;
        self.tail = Tail::read(&self.file, offset)?;
        self.base = offset;
        self.buf = BytesMut::new();
        self.oversize = None;
        self.crc = Some(crc32fast::Hasher::new_with_initial_len(crc, offset));
        self.stop_being_a_copy();
        Ok(())
    }

    /// Takes this file for a copy of `of` (open as `src`) being written:
    /// it is not read unless `of` is truncated.
    pub fn make_copy_of(&mut self, of: FileId, src: File, len: u64, now: Instant) {
        self.copy = Some(CopyState {
            of,
            src,
            len,
            since: now,
        });
    }

    /// Closes a copy that was never read: its position is where it stands.
    pub fn finish_copy(&mut self) -> Chunk {
        Chunk {
            closed: true,
            ..self.position()
        }
    }

    /// Reads this file as itself from now on.
    pub fn stop_being_a_copy(&mut self) {
        self.copy = None;
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's size now.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// CRC-32 of this file's first `len` bytes; `None` if it is shorter.
    pub fn crc_of_prefix(&self, len: u64) -> io::Result<Option<u32>> {
        identity::crc_of_prefix(&self.file, len)
    }

    /// How long it has not grown.
    pub fn idle(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_growth)
    }

    /// Lets go of the read buffer, keeping only the unfinished line, so an
    /// idle file holds no 256 KiB allocation (thousands of idle files would
    /// otherwise hold hundreds of MiB).
    pub fn release_buffer(&mut self) {
        // A view into a read allocation keeps all of it alive, even with no
        // spare capacity: copy what is left (at most one line) out of it.
        self.buf = if self.buf.is_empty() {
            BytesMut::new()
        } else {
            BytesMut::from(&self.buf[..])
        };
    }

    /// Whether the file has been deleted (no name links to it any more).
    pub fn is_deleted(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().map_or(true, |m| m.nlink() == 0)
    }

    /// A chunk with no events that records the current position.
    pub fn position(&self) -> Chunk {
        Chunk {
            file: self.tracked.clone(),
            events: Vec::new(),
            dead_letters: Vec::new(),
            end: self.framed_to(),
            fingerprint: self.fingerprint(),
            content_crc: self.content_crc(),
            closed: false,
            window: Arc::new(self.window_at_base()),
            lost: self.tracked.lost(),
        }
    }

    /// The bytes before where framing got, as a window.
    fn window_at_base(&self) -> Window {
        match self.oversize {
            Some(_) => Window::default(),
            None => Window::new(
                self.tail.bytes(),
                bytes::Bytes::new(),
                self.base,
                self.content_crc(),
            ),
        }
    }

    /// Takes in bytes consumed (framed or skipped), in file order.
    fn hash(&mut self, bytes: &[u8]) {
        if let Some(h) = &mut self.crc {
            h.update(bytes);
        }
        self.tail.push(bytes);
    }

    /// CRC-32 of the bytes before [`OpenFile::framed_to`], when known.
    pub fn content_crc(&self) -> Option<u32> {
        match (&self.crc, &self.oversize) {
            (Some(h), None) => Some(h.clone().finalize()),
            _ => None,
        }
    }

    /// Frames the unfinished last line as if its newline had come: the file
    /// was rotated away or deleted and will not grow any more.
    pub fn finish(&mut self, ctx: &FrameContext) -> Chunk {
        let mut out = Framed::new(ctx, self);
        let end = self.base + self.buf.len() as u64;
        if let Some(o) = self.oversize.take() {
            let len = o.len;
            out.line(o.start, end, |s| {
                s.invalid(
                    o.prefix,
                    Invalid::TooLong {
                        len,
                        max: ctx.max_line_bytes,
                    },
                )
            });
        } else if !self.buf.is_empty() {
            let line = self.buf.split().freeze();
            self.hash(&line);
            let start = self.base;
            out.line(start, end, |s| frame_line(&line, s));
        }
        self.base = end;
        self.buf.clear();
        Chunk {
            closed: true,
            ..out.finish(self)
        }
    }
}

/// Collects the events of one chunk, line by line.
struct Framed<'a> {
    ctx: &'a FrameContext,
    path: String,
    events: Vec<Event>,
    dead: Vec<Bytes>,
    /// Events framed, selected or not.
    framed: u64,
    /// Events left out by the selection, by kind.
    filtered: [u64; Kind::ALL.len()],
    /// The bytes framed.
    window: Option<Window>,
}

/// The [`FrameSink`] for one line: applies the selection and `on_invalid`.
struct LineSink<'a, 'b> {
    framed: &'b mut Framed<'a>,
    line_start: u64,
}

impl<'a> Framed<'a> {
    fn new(ctx: &'a FrameContext, f: &OpenFile) -> Framed<'a> {
        Framed {
            ctx,
            path: f.path.display().to_string(),
            events: Vec::new(),
            dead: Vec::new(),
            framed: 0,
            filtered: [0; Kind::ALL.len()],
            window: None,
        }
    }

    /// Frames one line with `f`; the last event it yields commits the line's end.
    fn line(&mut self, start: u64, end: u64, f: impl FnOnce(&mut LineSink<'a, '_>)) {
        let before = self.events.len();
        f(&mut LineSink {
            framed: self,
            line_start: start,
        });
        if self.events.len() > before {
            if let Some(last) = self.events.last_mut() {
                last.commit = end;
            }
        }
    }

    fn finish(self, f: &OpenFile) -> Chunk {
        let m = &self.ctx.metrics;
        m.events.increment(self.framed);
        for (counter, &n) in m.filtered.iter().zip(&self.filtered) {
            if n > 0 {
                counter.increment(n);
            }
        }
        Chunk {
            file: f.tracked.clone(),
            events: self.events,
            dead_letters: self.dead,
            end: f.framed_to(),
            fingerprint: f.fingerprint(),
            content_crc: f.content_crc(),
            closed: false,
            window: Arc::new(self.window.unwrap_or_else(|| f.window_at_base())),
            lost: f.tracked.lost(),
        }
    }
}

impl FrameSink for LineSink<'_, '_> {
    fn event(&mut self, bytes: Bytes, class: &Class<'_>) {
        self.framed.framed += 1;
        if self.framed.ctx.selection.matches(class) {
            self.framed.events.push(Event {
                bytes,
                commit: self.line_start,
            });
        } else {
            self.framed.filtered[class.kind as usize] += 1;
        }
    }

    fn invalid(&mut self, raw: Bytes, why: Invalid) {
        let ctx = self.framed.ctx;
        if let Some(suppressed) = ctx.invalid_log.allow() {
            let action = match ctx.on_invalid {
                OnInvalid::Wrap => "forwarded wrapped",
                OnInvalid::Drop => "dropped",
                OnInvalid::DeadLetter => "written to the dead-letter file",
            };
            tracing::warn!(
                source = %ctx.source,
                path = %self.framed.path,
                offset = self.line_start,
                similar_suppressed = suppressed,
                "invalid line ({why}): {action}"
            );
        }
        match ctx.on_invalid {
            OnInvalid::Drop => ctx.metrics.dropped.increment(1),
            OnInvalid::Wrap => {
                ctx.metrics.wrapped.increment(1);
                let class = Class {
                    kind: Kind::Other,
                    risk: None,
                    notification_type: None,
                };
                if ctx.selection.matches(&class) {
                    self.framed.events.push(Event {
                        bytes: wrap_invalid(&raw, &why),
                        commit: self.line_start,
                    });
                } else {
                    self.framed.filtered[Kind::Other as usize] += 1;
                }
            }
            OnInvalid::DeadLetter => {
                ctx.metrics.dead_lettered.increment(1);
                self.framed.dead.push(wrap_invalid(&raw, &why));
            }
        }
    }
}
