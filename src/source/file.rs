//! The `file` source: finds files by glob, follows them as they grow, and
//! hands framed chunks to one destination's pipeline.
//!
//! It wakes on `notify` events and, as a fallback for filesystems where those
//! do not arrive, every `poll_interval`. Each round reads one chunk from every
//! file that has new bytes, so a busy file cannot starve the others.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::discover::Discovery;
use super::reader::{FrameContext, OpenFile, ReadOutcome};
use super::scan::{remember, same_range, scan, OpenView, ScanInput, Truncated, ORPHAN_AFTER_SCANS};
use super::Chunk;
use crate::checkpoint::{Entry, FileId};
use crate::config::{FileInput, ReadFrom};

/// Where a file source starts: the destination's checkpoints as loaded.
pub struct StartPositions {
    /// Acknowledged positions by file identity.
    pub entries: HashMap<FileId, Entry>,
    /// True when the destination has never saved a checkpoint: only then does
    /// `read_from = "end"` skip what files already hold.
    pub first_start: bool,
}

/// What a [`FileSource`] tails: a `file` source's globs, or a spooled
/// source's segments.
#[derive(Debug, Clone)]
pub struct Tail {
    /// The source's name, for checkpoints and logs.
    pub source: String,
    /// The files to follow.
    pub files: FileInput,
    /// Spool segments: read strictly in name order, one file at a time, and
    /// never taken for copytruncate copies (segments often start alike).
    pub spool: bool,
}

/// The size of every file a source follows, by identity, refreshed about
/// once a second: with a destination's checkpoint, its lag.
pub type FileSizes = Arc<std::sync::Mutex<HashMap<FileId, u64>>>;

/// One file source feeding one destination.
pub struct FileSource {
    config: Tail,
    sizes: FileSizes,
    ctx: Arc<FrameContext>,
    discovery: Arc<Discovery>,
    start: Arc<StartPositions>,
    tx: mpsc::Sender<Chunk>,
    cancel: CancellationToken,
}

/// Wakes the source when a watched directory changes.
struct Wake {
    notify: Notify,
    rescan: AtomicBool,
}

enum Step {
    Data(Chunk),
    Idle,
    Closed(Chunk),
    /// Truncated or rewritten: the new position, and the old content's
    /// identity when known.
    Restarted {
        position: Chunk,
        truncated: Option<Truncated>,
    },
    Failed(std::io::Error),
}

impl FileSource {
    /// A source that sends its chunks on `tx` until `cancel` fires.
    pub fn new(
        config: Tail,
        ctx: FrameContext,
        start: Arc<StartPositions>,
        tx: mpsc::Sender<Chunk>,
        cancel: CancellationToken,
    ) -> Result<FileSource, globset::Error> {
        let discovery = Arc::new(Discovery::new(
            &config.files.include,
            &config.files.exclude,
        )?);
        Ok(FileSource {
            config,
            sizes: FileSizes::default(),
            ctx: Arc::new(ctx),
            discovery,
            start,
            tx,
            cancel,
        })
    }

    /// The name of the source it reads.
    pub fn source_name(&self) -> &str {
        &self.config.source
    }

    /// The sizes of the files it follows, for the pipeline's lag metric.
    pub fn sizes(&self) -> FileSizes {
        self.sizes.clone()
    }

    /// Runs until cancelled (or until the pipeline stops taking chunks).
    pub async fn run(self) {
        let wake = Arc::new(Wake {
            notify: Notify::new(),
            rescan: AtomicBool::new(true),
        });
        let mut watcher = new_watcher(wake.clone());
        let mut watched: HashSet<PathBuf> = HashSet::new();
        let mut files: Vec<OpenFile> = Vec::new();
        let mut warned: HashSet<PathBuf> = HashSet::new();
        let mut truncated: Vec<Truncated> = Vec::new();
        let mut initial = true;
        let mut sized: Option<std::time::Instant> = None;
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            if sized.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
                sized = Some(std::time::Instant::now());
                self.measure(&mut files).await;
            }
            if wake.rescan.swap(false, Ordering::AcqRel) {
                if let Some(w) = watcher.as_mut() {
                    self.watch_roots(w, &mut watched);
                }
                let opened = self
                    .rescan(&mut files, initial, &mut warned, &mut truncated)
                    .await;
                initial = false;
                for chunk in opened {
                    if !self.send(chunk).await {
                        return;
                    }
                }
            }
            // One sweep reads one chunk from every file with new bytes. It runs
            // on the blocking pool a few chunks at a time, so thousands of idle
            // files cost one fstat each, not a task switch each.
            let mut progressed = false;
            let mut next = 0usize;
            while next < files.len() {
                let ctx = self.ctx.clone();
                let mut taken = std::mem::take(&mut files);
                let sequential = self.config.spool;
                let Ok((back, steps, end)) = tokio::task::spawn_blocking(move || {
                    let (steps, end) = read_some(&mut taken, next, &ctx, sequential);
                    (taken, steps, end)
                })
                .await
                else {
                    tracing::error!("a file reader task panicked");
                    return;
                };
                files = back;
                next = end;
                let mut closed = Vec::new();
                for (i, step) in steps {
                    let path = files[i].path.display();
                    match step {
                        Step::Data(chunk) => {
                            progressed = true;
                            if !self.send(chunk).await {
                                return;
                            }
                        }
                        Step::Idle => {}
                        Step::Restarted {
                            position,
                            truncated: t,
                        } => {
                            progressed = true;
                            if let Some(t) = t {
                                remember(&mut truncated, t);
                            }
                            if !self.send(position).await {
                                return;
                            }
                        }
                        Step::Closed(chunk) => {
                            tracing::info!(path = %path, "finished a rotated or deleted file");
                            closed.push(i);
                            if !self.send(chunk).await {
                                return;
                            }
                        }
                        Step::Failed(e) => {
                            tracing::warn!(path = %path, "cannot read file: {e}; will try again");
                        }
                    }
                }
                for i in closed.into_iter().rev() {
                    files.remove(i);
                    next -= 1;
                }
            }
            if !progressed {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = wake.notify.notified() => {}
                    _ = tokio::time::sleep(self.config.files.poll_interval) => {
                        wake.rescan.store(true, Ordering::Release);
                    }
                }
            }
        }
    }

    /// Records the number and sizes of the files followed (one fstat each, on
    /// the blocking pool).
    async fn measure(&self, files: &mut Vec<OpenFile>) {
        let taken = std::mem::take(files);
        let Ok((back, sizes)) = tokio::task::spawn_blocking(move || {
            let sizes: HashMap<FileId, u64> = taken
                .iter()
                .filter_map(|f| Some((f.tracked.id, f.size().ok()?)))
                .collect();
            (taken, sizes)
        })
        .await
        else {
            return;
        };
        *files = back;
        self.ctx.metrics.files.set(files.len() as f64);
        *self.sizes.lock().unwrap_or_else(|e| e.into_inner()) = sizes;
    }

    /// Hands a chunk to the batcher. A chunk already read still goes in if
    /// there is room after shutdown began, so it is delivered now rather than
    /// read again at the next start; only waiting for room stops at shutdown.
    async fn send(&self, chunk: Chunk) -> bool {
        match self.tx.try_send(chunk) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(chunk)) => tokio::select! {
                r = self.tx.send(chunk) => r.is_ok(),
                _ = self.cancel.cancelled() => false,
            },
        }
    }

    fn watch_roots(&self, w: &mut notify::RecommendedWatcher, watched: &mut HashSet<PathBuf>) {
        for root in self.discovery.roots() {
            if watched.contains(&root.dir) || !root.dir.is_dir() {
                continue;
            }
            let mode = if root.depth > 1 {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match w.watch(&root.dir, mode) {
                Ok(()) => {
                    watched.insert(root.dir.clone());
                }
                Err(e) => tracing::warn!(
                    dir = %root.dir.display(),
                    "cannot watch directory ({e}); polling it every {:?}",
                    self.config.files.poll_interval
                ),
            }
        }
    }

    /// Lists the matching files, opens new ones, and marks open files that no
    /// longer match as orphans. Returns the positions to record: where new
    /// files start, and checkpoint entries of files that are gone.
    async fn rescan(
        &self,
        files: &mut Vec<OpenFile>,
        initial: bool,
        warned: &mut HashSet<PathBuf>,
        truncated: &mut Vec<Truncated>,
    ) -> Vec<Chunk> {
        let open = files
            .iter()
            .map(|f| OpenView {
                is_copy: f.copy_of.is_some(),
                id: f.tracked.id,
                path: f.path.clone(),
                fingerprint: f.fingerprint(),
                read: f.content_crc().map(|c| (f.framed_to(), c)),
                file: f.file().try_clone().ok(),
            })
            .collect();
        let input = ScanInput {
            discovery: self.discovery.clone(),
            source: self.config.source.clone(),
            detect_copies: !self.config.spool,
            open,
            start: self.start.clone(),
            initial,
            skip_existing: initial
                && self.start.first_start
                && self.config.files.read_from == ReadFrom::End,
            warned: std::mem::take(warned),
            truncated: std::mem::take(truncated),
        };
        let Ok(out) = tokio::task::spawn_blocking(move || scan(input)).await else {
            return Vec::new();
        };
        *warned = out.warned;
        *truncated = out.truncated;
        for f in files.iter_mut() {
            match out.seen.get(&f.tracked.id) {
                Some(path) => {
                    f.path = path.clone();
                    f.orphan = false;
                    f.missing_scans = 0;
                }
                None => {
                    // A rename racing the scan (listed under the old name,
                    // opened after the rename) can hide a file once: only a
                    // file missing from two scans in a row is an orphan.
                    f.missing_scans += 1;
                    f.orphan = f.missing_scans >= ORPHAN_AFTER_SCANS;
                }
            }
        }
        let mut chunks = out.forget;
        for f in out.opened {
            if f.copy_of.is_none() {
                chunks.push(f.position());
            }
            files.push(f);
        }
        if self.config.spool {
            files.sort_by(|a, b| a.path.cmp(&b.path));
        }
        chunks
    }
}

/// How long a file that looks like a copy waits for its original to be
/// truncated before it is read as a file of its own.
const COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How many chunks one blocking call reads before handing them over (each
/// is at most 256 KiB).
const CHUNKS_PER_CALL: usize = 4;

/// Steps through `files` from `start` until [`CHUNKS_PER_CALL`] chunks are
/// read or every file was visited; returns each file's step and where to go on.
///
/// `sequential` (spool segments, in name order): a file is read only when
/// every file before it is at its end, so events keep their spool order.
fn read_some(
    files: &mut [OpenFile],
    start: usize,
    ctx: &FrameContext,
    sequential: bool,
) -> (Vec<(usize, Step)>, usize) {
    let mut steps = Vec::new();
    let mut chunks = 0;
    let mut i = start;
    while i < files.len() && chunks < CHUNKS_PER_CALL {
        let mut s = step(&mut files[i], ctx);
        if let Step::Restarted { truncated, .. } = &mut s {
            *truncated = truncated.and_then(|t| hand_to_copy(files, i, t));
        }
        if matches!(s, Step::Data(_) | Step::Closed(_)) {
            chunks += 1;
        }
        let busy = !matches!(s, Step::Idle | Step::Failed(_));
        if !matches!(s, Step::Idle) {
            steps.push((i, s));
        }
        i += 1;
        if sequential && busy {
            return (steps, files.len());
        }
    }
    (steps, i)
}

fn step(f: &mut OpenFile, ctx: &FrameContext) -> Step {
    let mut run = || -> std::io::Result<Step> {
        if f.copy_of.is_some() {
            // A copy waiting for its original to be truncated.
            if f.is_deleted() {
                return Ok(Step::Closed(f.finish(ctx)));
            }
            let size = f.size()?;
            let grown_alike = f.copy_src.as_ref().is_some_and(|src| {
                src.metadata().is_ok_and(|m| m.len() >= size)
                    && same_range(f.file(), src, f.copy_len, size)
            });
            // Checked after the comparison: an original truncated meanwhile
            // is not evidence against the copy; its own step hands the copy
            // its start (hand_to_copy), after checking the copy's content.
            let src_shrank = f.copy_src.as_ref().is_some_and(|src| {
                src.metadata().map(|m| m.len()).unwrap_or(0) < size.max(f.copy_len)
            });
            let waited = f.copy_since.is_some_and(|t| t.elapsed() >= COPY_WAIT);
            if waited {
                // copytruncate truncates right after copying: a copy whose
                // original is still whole after this long is just a file
                // that starts like another. Read it whole rather than risk
                // missing a line of its own.
                tracing::info!(path = %f.path.display(), "a file taken for a copy was not followed by a truncation: reading it whole");
                f.stop_being_a_copy();
            } else if size == f.copy_len || grown_alike {
                // Still a prefix of the original (a copy being written).
                f.copy_len = size;
                return Ok(Step::Idle);
            } else if src_shrank {
                return Ok(Step::Idle);
            } else {
                tracing::info!(path = %f.path.display(), "a file taken for a copy is not one: reading it whole");
                f.stop_being_a_copy();
            }
        }
        match f.read(ctx)? {
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
            ReadOutcome::Eof if f.orphan || f.is_deleted() => Ok(Step::Closed(f.finish(ctx))),
            ReadOutcome::Eof => Ok(Step::Idle),
        }
    };
    run().unwrap_or_else(Step::Failed)
}

/// After `files[i]` was truncated: its waiting copy, if any, starts where
/// reading of the old content had got. Returns the truncation if no copy
/// took it, to remember for a copy found later.
fn hand_to_copy(files: &mut [OpenFile], i: usize, t: Truncated) -> Option<Truncated> {
    let id = files[i].tracked.id;
    for c in files.iter_mut().filter(|c| c.copy_of == Some(id)) {
        let verified = c.crc_of_prefix(t.offset).ok().flatten() == Some(t.crc);
        let started = verified && c.start_copy_at(t.offset, t.crc).is_ok();
        if started {
            tracing::info!(path = %c.path.display(), offset = t.offset, "the original of this copy was truncated: reading the copy from where the original had been read");
            return None;
        }
        // Not the content after all: read it whole (duplicates, never a loss).
        tracing::info!(path = %c.path.display(), "a file taken for a copy is not one: reading it whole");
        c.stop_being_a_copy();
    }
    Some(t)
}

fn new_watcher(wake: Arc<Wake>) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        let rescan = match res {
            Ok(ev) => match ev.kind {
                EventKind::Access(_) => return,
                EventKind::Modify(notify::event::ModifyKind::Data(_)) => false,
                _ => true,
            },
            Err(_) => true,
        };
        if rescan {
            wake.rescan.store(true, Ordering::Release);
        }
        wake.notify.notify_one();
    };
    match notify::recommended_watcher(handler) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("cannot watch files for changes ({e}); polling instead");
            None
        }
    }
}
