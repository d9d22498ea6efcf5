//! The `file` source: finds files by glob, follows them as they grow, and
//! hands framed chunks to one destination's pipeline.
//!
//! It wakes on `notify` events and, as a fallback for filesystems where those
//! do not arrive, every `poll_interval`. Each round reads one chunk from every
//! file that has new bytes, so a busy file cannot starve the others.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::discover::Discovery;
use super::reader::{FrameContext, OpenFile};
use super::Chunk;
use crate::batch::TrackedFile;
use crate::checkpoint::{Entry, FileId, Fingerprint};
use crate::config::{ReadFrom, SourceConfig};

/// Where a file source starts: the destination's checkpoints as loaded.
pub struct StartPositions {
    /// Acknowledged positions by file identity.
    pub entries: HashMap<FileId, Entry>,
    /// True when the destination has never saved a checkpoint: only then does
    /// `read_from = "end"` skip what files already hold.
    pub first_start: bool,
}

/// One file source feeding one destination.
pub struct FileSource {
    config: SourceConfig,
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
    Failed(std::io::Error),
}

impl FileSource {
    /// A source that sends its chunks on `tx` until `cancel` fires.
    pub fn new(
        config: SourceConfig,
        ctx: FrameContext,
        start: Arc<StartPositions>,
        tx: mpsc::Sender<Chunk>,
        cancel: CancellationToken,
    ) -> Result<FileSource, globset::Error> {
        let discovery = Arc::new(Discovery::new(&config.include, &config.exclude)?);
        Ok(FileSource {
            config,
            ctx: Arc::new(ctx),
            discovery,
            start,
            tx,
            cancel,
        })
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
        let mut initial = true;
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            if wake.rescan.swap(false, Ordering::AcqRel) {
                if let Some(w) = watcher.as_mut() {
                    self.watch_roots(w, &mut watched);
                }
                let opened = self.rescan(&mut files, initial, &mut warned).await;
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
                let Ok((back, steps, end)) = tokio::task::spawn_blocking(move || {
                    let (steps, end) = read_some(&mut taken, next, &ctx);
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
                    _ = tokio::time::sleep(self.config.poll_interval) => {
                        wake.rescan.store(true, Ordering::Release);
                    }
                }
            }
        }
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
                    self.config.poll_interval
                ),
            }
        }
    }

    /// Lists the matching files, opens new ones, and marks open files that no
    /// longer match as orphans. Returns the start positions of new files.
    async fn rescan(
        &self,
        files: &mut Vec<OpenFile>,
        initial: bool,
        warned: &mut HashSet<PathBuf>,
    ) -> Vec<Chunk> {
        let discovery = self.discovery.clone();
        let open: HashSet<FileId> = files.iter().map(|f| f.tracked.id).collect();
        let start = self.start.clone();
        let skip_existing = initial && start.first_start && self.config.read_from == ReadFrom::End;
        let source = self.config.name.clone();
        let warned_before = std::mem::take(warned);
        let result = tokio::task::spawn_blocking(move || {
            scan_and_open(
                &discovery,
                &open,
                &start,
                skip_existing,
                &source,
                warned_before,
            )
        })
        .await;
        let Ok((seen, opened, warned_now)) = result else {
            return Vec::new();
        };
        *warned = warned_now;
        for f in files.iter_mut() {
            match seen.get(&f.tracked.id) {
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
        let mut chunks = Vec::new();
        for f in opened {
            chunks.push(f.position());
            files.push(f);
        }
        chunks
    }
}

/// Scans in a row that must miss a file before it is closed as rotated away.
const ORPHAN_AFTER_SCANS: u32 = 2;

/// How many chunks one blocking call reads before handing them over (each
/// is at most 256 KiB).
const CHUNKS_PER_CALL: usize = 4;

/// Steps through `files` from `start` until [`CHUNKS_PER_CALL`] chunks are
/// read or every file was visited; returns each file's step and where to go on.
fn read_some(
    files: &mut [OpenFile],
    start: usize,
    ctx: &FrameContext,
) -> (Vec<(usize, Step)>, usize) {
    let mut steps = Vec::new();
    let mut chunks = 0;
    let mut i = start;
    while i < files.len() && chunks < CHUNKS_PER_CALL {
        let s = step(&mut files[i], ctx);
        if matches!(s, Step::Data(_) | Step::Closed(_)) {
            chunks += 1;
        }
        if !matches!(s, Step::Idle) {
            steps.push((i, s));
        }
        i += 1;
    }
    (steps, i)
}

fn step(f: &mut OpenFile, ctx: &FrameContext) -> Step {
    let mut run = || -> std::io::Result<Step> {
        if let Some(chunk) = f.read(ctx)? {
            return Ok(Step::Data(chunk));
        }
        if let Some(chunk) = f.check_truncated()? {
            return Ok(Step::Data(chunk));
        }
        if f.orphan || f.is_deleted() {
            return Ok(Step::Closed(f.finish(ctx)));
        }
        Ok(Step::Idle)
    };
    run().unwrap_or_else(Step::Failed)
}

type ScanResult = (HashMap<FileId, PathBuf>, Vec<OpenFile>, HashSet<PathBuf>);

fn scan_and_open(
    discovery: &Discovery,
    open: &HashSet<FileId>,
    start: &StartPositions,
    skip_existing: bool,
    source: &str,
    mut warned: HashSet<PathBuf>,
) -> ScanResult {
    let mut seen = HashMap::new();
    let mut opened = Vec::new();
    let mut still_failing = HashSet::new();
    for path in discovery.scan() {
        let opened_file = File::open(&path).and_then(|f| f.metadata().map(|m| (f, m)));
        let (file, meta) = match opened_file {
            Ok(x) => x,
            Err(e) => {
                if !warned.contains(&path) {
                    tracing::warn!(source, path = %path.display(), "cannot open file: {e}; will try again at every scan");
                }
                still_failing.insert(path);
                continue;
            }
        };
        if warned.remove(&path) {
            tracing::info!(source, path = %path.display(), "file is readable now");
        }
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if seen.insert(id, path.clone()).is_some() || open.contains(&id) {
            continue;
        }
        let offset = start_offset(&file, id, meta.len(), start, skip_existing, &path);
        let tracked = Arc::new(TrackedFile {
            id,
            path: path.display().to_string(),
        });
        match OpenFile::open(file, path.clone(), tracked, offset) {
            Ok(f) => {
                tracing::info!(source, path = %path.display(), offset, "following file");
                opened.push(f);
            }
            Err(e) => {
                tracing::warn!(source, path = %path.display(), "cannot read file: {e}; will try again");
                still_failing.insert(path);
            }
        }
    }
    (seen, opened, still_failing)
}

/// Where to start in a newly found file.
fn start_offset(
    file: &File,
    id: FileId,
    size: u64,
    start: &StartPositions,
    skip_existing: bool,
    path: &std::path::Path,
) -> u64 {
    if let Some(entry) = start.entries.get(&id) {
        let mut head = vec![0u8; entry.fingerprint.len as usize];
        let same = std::os::unix::fs::FileExt::read_exact_at(file, &mut head, 0).is_ok()
            && Fingerprint::of(&head) == entry.fingerprint;
        if same && entry.offset <= size {
            return entry.offset;
        }
        tracing::warn!(
            path = %path.display(),
            "file is not the one its checkpoint describes (its inode was reused, or it was truncated while tailhook was stopped): reading it from the start"
        );
        return 0;
    }
    if skip_existing {
        after_last_newline(file, size)
    } else {
        0
    }
}

/// The offset just after the last newline before `size` (0 if none): an
/// unfinished last line is read whole once its newline arrives.
fn after_last_newline(file: &File, size: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut end = size;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let part = &mut buf[..(end - start) as usize];
        if file.read_exact_at(part, start).is_err() {
            return size;
        }
        if let Some(i) = memchr::memrchr(b'\n', part) {
            return start + i as u64 + 1;
        }
        end = start;
    }
    0
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
