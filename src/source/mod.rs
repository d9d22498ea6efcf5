//! Inputs. Files are tailed into [`Chunk`]s of selected events for one
//! destination's pipeline; sockets, HTTP and stdin are first appended to the
//! spool, whose segments are then tailed the same way.

pub mod budget;
pub mod copy;
pub mod discover;
pub mod file;
pub mod http;
pub mod identity;
pub mod lines;
pub mod listen;
#[cfg(test)]
mod model_test;
pub mod reader;
pub mod scan;
pub mod socket;
pub mod stdin;
pub mod tailer;

use std::sync::Arc;

use bytes::Bytes;

use crate::batch::TrackedFile;
use crate::checkpoint::Fingerprint;

/// What a tailer follows: files found by globs, or a spooled source's
/// segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailMode {
    /// Log files: they rotate, are copied and truncated, and keep growing
    /// after a rename.
    Files,
    /// Spool segments: read strictly in name order, one at a time; their
    /// first line is a header; they are never copied, and one that is
    /// deleted has been read to its end by every destination.
    Spool,
}

/// One event ready for a batch: its raw bytes and where the checkpoint may
/// move once it (and everything before it) is delivered.
#[derive(Debug)]
pub struct Event {
    /// The event exactly as read.
    pub bytes: Bytes,
    /// The file offset delivered once this event is acknowledged: the end of
    /// its line, or the start of the line when more elements of an array line follow.
    pub commit: u64,
}

/// What one read of one file produced, in file order.
#[derive(Debug)]
pub struct Chunk {
    /// The file read.
    pub file: Arc<TrackedFile>,
    /// The selected events.
    pub events: Vec<Event>,
    /// Invalid lines, wrapped, for the dead-letter file (`on_invalid = "dead_letter"`).
    pub dead_letters: Vec<Bytes>,
    /// Every byte before this offset has been framed (events, blank, filtered or invalid lines).
    pub end: u64,
    /// The file's leading bytes, for the checkpoint.
    pub fingerprint: Fingerprint,
    /// CRC-32 of the file's bytes before `end`, when known.
    pub content_crc: Option<u32>,
    /// The bytes read, to fingerprint the bytes before any offset an event
    /// commits (and before `end`), for the checkpoint.
    pub window: Arc<identity::Window>,
    /// The file was read to its end after being rotated away or deleted, and
    /// is closed: once this chunk is delivered, its checkpoint entry can go.
    pub closed: bool,
    /// What a truncation had taken from the file (no copy of it found yet)
    /// when this chunk was read: its checkpoint entry keeps it. Taken when
    /// the chunk is made, not when it is delivered: an entry for bytes read
    /// before the truncation must not send a copy past bytes not delivered.
    pub lost: Option<crate::checkpoint::Truncated>,
}
