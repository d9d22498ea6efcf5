//! The file tailer without its async shell: the files a source follows for
//! one destination, and one sweep of reads over them. [`super::file`] runs it
//! on tokio's blocking pool; tests drive it directly, step by step.
//!
//! What it promises, whatever happens to the files:
//! - a line is handed on once, whole, with the position after it;
//! - an unfinished last line is kept until its newline comes, and is framed
//!   without it only once its file has left the globs (renamed away or
//!   deleted) and has not grown for `rotate_wait`;
//! - a file that cannot be listed, opened or read keeps its position.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::budget::OpenBudget;
use super::discover::Discovery;
use super::file::{StartPositions, Tail};
use super::reader::{FrameContext, OpenFile, ReadOutcome};
use super::scan::{remember, Truncated};
use super::{identity, Chunk, TailMode};
use crate::checkpoint::{Entry, FileId};
use crate::config::ReadFrom;

/// How long a file that looks like a copy waits for its original to be
/// truncated before it is read as a file of its own.
pub const COPY_WAIT: Duration = Duration::from_secs(60);

/// How many chunks one sweep call reads before handing them over (each is
/// at most 256 KiB).
const CHUNKS_PER_CALL: usize = 4;

/// The files one source follows for one destination.
pub struct Tailer {
    pub(super) source: String,
    pub(super) mode: TailMode,
    pub(super) rotate_wait: Duration,
    /// `read_from = "end"` at a destination's first start.
    pub(super) read_from_end: bool,
    pub(super) discovery: Arc<Discovery>,
    pub(super) start: Arc<StartPositions>,
    pub(super) files: Vec<OpenFile>,
    /// Files read to their end and closed (idle for `close_inactive`, or
    /// to let other files be read in turns): reopened when they change.
    pub(super) dormant: HashMap<FileId, Dormant>,
    pub(super) close_inactive: Duration,
    pub(super) budget: Arc<OpenBudget>,
    /// Some file could not be opened for want of a permit.
    pub(super) waiting: bool,
    /// Reading in turns was logged.
    said_turns: bool,
    /// Paths that could not be opened, warned about once.
    pub(super) failing: HashSet<PathBuf>,
    /// Truncated contents waiting for their copy.
    pub(super) truncated: Vec<Truncated>,
    /// Checkpoint entries of files the globs no longer find have not been
    /// looked for yet (done at the first complete scan).
    pub(super) recovered: bool,
    /// The first scan has not happened yet.
    pub(super) initial: bool,
    /// Where the sweep goes on.
    next: usize,
}

/// A file closed while idle, read to its end.
pub(super) struct Dormant {
    /// Where it stands, as a checkpoint entry would say it.
    pub entry: Entry,
    /// Its size when it was closed.
    pub size: u64,
    /// Its size at the last scan.
    pub seen_size: u64,
    /// Its modification and change times when it was closed.
    pub stamp: Stamp,
    /// Complete scans in a row that did not find it.
    pub missing_scans: u32,
}

/// A file's modification and change times, to the nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp([i64; 4]);

impl Stamp {
    /// The times of these metadata.
    pub fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp([m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()])
    }
}

/// What one call of [`Tailer::read_some`] produced.
pub struct Sweep {
    /// Chunks to hand on, in order.
    pub chunks: Vec<Chunk>,
    /// Some file had something to say (data, a restart, a close).
    pub progressed: bool,
    /// The sweep visited the last file: the next call starts a new sweep.
    pub done: bool,
    /// A file was truncated: scan at once, to find its copy (copytruncate)
    /// while what the truncation took is known.
    pub rescan: bool,
}

/// What a step of one file came to.
enum Step {
    Data(Chunk),
    Idle,
    Closed(Chunk),
    /// Truncated or rewritten: the new position, and the old content.
    Restarted {
        position: Chunk,
        truncated: Option<Truncated>,
    },
    Failed(std::io::Error),
}

impl Tailer {
    /// A tailer of `tail`, starting from these checkpoint positions.
    pub fn new(
        tail: &Tail,
        start: Arc<StartPositions>,
        budget: Arc<OpenBudget>,
    ) -> Result<Tailer, globset::Error> {
        Ok(Tailer {
            source: tail.source.clone(),
            mode: tail.mode,
            rotate_wait: tail.files.rotate_wait,
            read_from_end: start.first_start && tail.files.read_from == ReadFrom::End,
            discovery: Arc::new(Discovery::new(&tail.files.include, &tail.files.exclude)?),
            start,
            files: Vec::new(),
            dormant: HashMap::new(),
            close_inactive: tail.files.close_inactive,
            budget,
            waiting: false,
            said_turns: false,
            failing: HashSet::new(),
            truncated: Vec::new(),
            recovered: false,
            initial: true,
            next: 0,
        })
    }

    /// The directories to watch for changes.
    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    /// Reads on from where the last call stopped, until [`CHUNKS_PER_CALL`]
    /// chunks are read or the last file was visited.
    pub fn read_some(&mut self, ctx: &FrameContext, now: Instant) -> Sweep {
        let mut out = Sweep {
            chunks: Vec::new(),
            progressed: false,
            done: false,
            rescan: false,
        };
        let mut read = 0;
        while self.next < self.files.len() && read < CHUNKS_PER_CALL {
            let i = self.next;
            if self.files[i].fresh && self.mode == TailMode::Files {
                if let Some(position) = self.classify_fresh(i, now) {
                    out.chunks.push(position);
                }
            }
            let step = step(&mut self.files[i], ctx, now, self.mode, self.rotate_wait);
            let busy = !matches!(step, Step::Idle | Step::Failed(_));
            if !matches!(step, Step::Failed(_)) {
                self.files[i].read_failing = false;
            }
            self.next += 1;
            match step {
                Step::Idle => {}
                Step::Data(chunk) => {
                    read += 1;
                    out.chunks.push(chunk);
                }
                Step::Restarted {
                    mut position,
                    truncated,
                } => {
                    let copy = truncated.map(|t| self.hand_to_copy(i, t));
                    if let Some(Err(t)) = copy {
                        remember(&mut self.truncated, t);
                        self.files[i].tracked.set_lost(Some(t));
                        // The entry of the new content keeps it; entries of
                        // bytes read before (delivered after) do not.
                        position.lost = Some(t);
                        out.rescan = true;
                    }
                    out.chunks.push(position);
                    // The copy's start is recorded at once: read to its end
                    // already, it may never send another.
                    if let Some(Ok(copy)) = copy {
                        out.chunks.push(copy);
                    }
                }
                Step::Closed(chunk) => {
                    read += 1;
                    tracing::info!(source = %self.source, path = %self.files[i].path.display(), "finished a rotated or deleted file");
                    out.chunks.push(chunk);
                    self.files.remove(i);
                    self.next -= 1;
                }
                Step::Failed(e) => {
                    let f = &mut self.files[i];
                    if !f.read_failing {
                        f.read_failing = true;
                        tracing::warn!(source = %self.source, path = %f.path.display(), "cannot read file: {e}; will try again");
                    }
                }
            }
            out.progressed |= busy;
            if self.mode == TailMode::Spool && busy {
                // Segments are read in order: one that has data holds back
                // the ones after it.
                self.next = self.files.len();
            }
        }
        if self.next >= self.files.len() {
            self.next = 0;
            out.done = true;
            self.close_idle(now);
        }
        out
    }

    /// Closes files read to their end that have been idle for
    /// `close_inactive`, or at once when some file waits for a permit.
    fn close_idle(&mut self, now: Instant) {
        if self.mode != TailMode::Files {
            return;
        }
        let short = self.budget.short();
        let mut i = 0;
        while i < self.files.len() {
            let f = &self.files[i];
            if f.closable() && (short || f.idle(now) >= self.close_inactive) {
                let f = self.files.remove(i);
                let entry = f.entry();
                let stamp = f
                    .file()
                    .metadata()
                    .map(|m| Stamp::of(&m))
                    .unwrap_or_default();
                self.dormant.insert(
                    entry.id,
                    Dormant {
                        size: f.read_to(),
                        seen_size: f.read_to(),
                        stamp,
                        entry,
                        missing_scans: 0,
                    },
                );
            } else {
                i += 1;
            }
        }
    }

    /// Says whether this tailer has files waiting for a permit.
    pub(super) fn set_waiting(&mut self, waiting: bool) {
        if waiting && !self.said_turns {
            self.said_turns = true;
            tracing::info!(source = %self.source, open_files = self.budget.limit(), "more files have data than may be held open at once: reading them in turns");
        }
        self.budget.set_waiting(self.waiting, waiting);
        self.waiting = waiting;
    }

    /// Whether files wait for a permit: scan again soon.
    pub fn waiting(&self) -> bool {
        self.waiting
    }

    /// Whether some files are closed: their growth shows only in a scan.
    pub fn has_closed_files(&self) -> bool {
        !self.dormant.is_empty()
    }

    /// After `files[i]` was truncated: its waiting copy, if any, starts where
    /// reading of the old content had got; returns the copy's position.
    /// Otherwise returns the truncation, to remember for a copy found later.
    fn hand_to_copy(&mut self, i: usize, t: Truncated) -> Result<Chunk, Truncated> {
        let id = self.files[i].tracked.id;
        for c in self
            .files
            .iter_mut()
            .filter(|c| c.copy.as_ref().is_some_and(|copy| copy.of == id))
        {
            let verified = c.crc_of_prefix(t.offset).ok().flatten() == Some(t.crc);
            if verified && c.start_copy_at(t.offset, t.crc).is_ok() {
                tracing::info!(path = %c.path.display(), offset = t.offset, "the original of this copy was truncated: reading the copy from where the original had been read");
                return Ok(c.position());
            }
            // Not the content after all: read it whole (duplicates, never a loss).
            tracing::info!(path = %c.path.display(), "a file taken for a copy is not one: reading it whole");
            c.stop_being_a_copy();
        }
        Err(t)
    }

    /// A file whose content started again (`cp` over it, or truncated and
    /// written anew) is, for what it holds now, a new file: it may be a copy
    /// of a file being read, or of a content a truncation took away. Returns
    /// the position to record when it starts past 0.
    fn classify_fresh(&mut self, i: usize, now: Instant) -> Option<Chunk> {
        let f = &self.files[i];
        let size = f.size().ok()?;
        if size == 0 {
            return None;
        }
        let head = identity::head_of(f.file(), crate::checkpoint::FINGERPRINT_BYTES);
        let file = f.file().try_clone().ok()?;
        let (id, path) = (f.tracked.id, f.path.clone());
        let start = self.start_of(&super::scan::Candidate {
            file: &file,
            id,
            size,
            head,
            path: &path,
            checkpoint: false,
            skip_existing: false,
        });
        let f = &mut self.files[i];
        f.fresh = false;
        match start {
            super::scan::Start::At { offset: 0, .. } => None,
            super::scan::Start::At { offset, crc } => {
                let crc = crc?;
                f.start_copy_at(offset, crc).ok()?;
                Some(f.position())
            }
            super::scan::Start::CopyOf { of, src } => {
                f.make_copy_of(of, src, size, now);
                None
            }
        }
    }

    /// The identity and size of every file followed, open or closed.
    pub fn sizes(&self) -> HashMap<FileId, u64> {
        self.files
            .iter()
            .filter_map(|f| Some((f.tracked.id, f.size().ok()?)))
            .chain(self.dormant.iter().map(|(id, d)| (*id, d.seen_size)))
            .collect()
    }
}

impl Drop for Tailer {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

fn step(
    f: &mut OpenFile,
    ctx: &FrameContext,
    now: Instant,
    mode: TailMode,
    rotate_wait: Duration,
) -> Step {
    let mut run = || -> std::io::Result<Step> {
        if f.copy.is_some() {
            if let Some(s) = step_copy(f, now)? {
                return Ok(s);
            }
        }
        match f.read(ctx, now)? {
            ReadOutcome::Chunk(chunk) => Ok(Step::Data(chunk)),
            ReadOutcome::Restarted {
                position,
                old_head,
                old_offset,
                old_crc,
            } => Ok(Step::Restarted {
                position,
                truncated: old_crc.map(|crc| Truncated {
                    fingerprint: old_head,
                    offset: old_offset,
                    crc,
                }),
            }),
            ReadOutcome::Eof => {
                let gone = f.orphan || f.is_deleted();
                let finished = match mode {
                    // A segment leaves only when every reader is past it.
                    TailMode::Spool => gone,
                    // A writer may still hold a rotated file open.
                    TailMode::Files => gone && f.idle(now) >= rotate_wait,
                };
                Ok(if finished {
                    Step::Closed(f.finish(ctx))
                } else {
                    Step::Idle
                })
            }
        }
    };
    run().unwrap_or_else(Step::Failed)
}

/// A copy waiting for its original to be truncated: `Some` while it keeps
/// waiting (or is closed), `None` once it is to be read as a file.
fn step_copy(f: &mut OpenFile, now: Instant) -> std::io::Result<Option<Step>> {
    let size = f.size()?;
    let Some(copy) = &f.copy else {
        return Ok(None);
    };
    let src_len = copy.src.metadata().map(|m| m.len()).unwrap_or(0);
    let grown_alike = src_len >= size && identity::same_range(f.file(), &copy.src, copy.len, size);
    // Checked after the comparison: an original truncated meanwhile is not
    // evidence against the copy; its own step hands the copy its start
    // (hand_to_copy), after checking the copy's content.
    let src_shrank = copy.src.metadata().map(|m| m.len()).unwrap_or(0) < size.max(copy.len);
    let waited = now.saturating_duration_since(copy.since) >= COPY_WAIT;
    let copy_len = copy.len;
    if waited {
        // copytruncate truncates right after copying: a copy whose original
        // is still whole after this long is just a file that starts like
        // another. Read it whole rather than risk missing a line of its own.
        tracing::info!(path = %f.path.display(), "a file taken for a copy was not followed by a truncation: reading it whole");
        f.stop_being_a_copy();
        return Ok(None);
    }
    if size == copy_len || grown_alike || src_shrank {
        if size == copy_len || grown_alike {
            // Still a prefix of the original (a copy being written).
            if let Some(copy) = &mut f.copy {
                copy.len = size;
            }
        }
        // A copy removed holds nothing that its original did not.
        return Ok(Some(if f.is_deleted() {
            Step::Closed(f.finish_copy())
        } else {
            Step::Idle
        }));
    }
    tracing::info!(path = %f.path.display(), "a file taken for a copy is not one: reading it whole");
    f.stop_being_a_copy();
    Ok(None)
}
