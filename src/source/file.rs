//! The `file` source: finds files by glob, follows them as they grow, and
//! hands framed chunks to one destination's pipeline.
//!
//! It wakes on `notify` events and, as a fallback for filesystems where those
//! do not arrive, every `poll_interval`. Each round reads one chunk from every
//! file that has new bytes, so a busy file cannot starve the others. The
//! files themselves are followed by a [`Tailer`], run on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::budget::OpenBudget;
use super::discover::Discovery;
use super::reader::FrameContext;
use super::tailer::Tailer;
use super::{Chunk, TailMode};
use crate::checkpoint::{Entry, FileId};
use crate::config::FileInput;

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
    /// Log files, or spool segments.
    pub mode: TailMode,
}

/// The size of every file a source follows, by identity, refreshed about
/// once a second: with a destination's checkpoint, its lag.
pub type FileSizes = Arc<std::sync::Mutex<HashMap<FileId, u64>>>;

/// One file source feeding one destination.
pub struct FileSource {
    config: Tail,
    sizes: FileSizes,
    ctx: Arc<FrameContext>,
    tailer: Tailer,
    tx: mpsc::Sender<Chunk>,
    cancel: CancellationToken,
}

/// Wakes the source when a watched directory changes.
struct Wake {
    notify: Notify,
    rescan: AtomicBool,
    /// Some files are closed: a write to one shows only in a scan.
    rescan_on_data: AtomicBool,
}

impl FileSource {
    /// A source that sends its chunks on `tx` until `cancel` fires.
    pub fn new(
        config: Tail,
        ctx: FrameContext,
        start: Arc<StartPositions>,
        budget: Arc<OpenBudget>,
        tx: mpsc::Sender<Chunk>,
        cancel: CancellationToken,
    ) -> Result<FileSource, globset::Error> {
        let tailer = Tailer::new(&config, start, budget)?;
        Ok(FileSource {
            config,
            sizes: FileSizes::default(),
            ctx: Arc::new(ctx),
            tailer,
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
        let FileSource {
            config,
            sizes,
            ctx,
            tailer,
            tx,
            cancel,
        } = self;
        let wake = Arc::new(Wake {
            notify: Notify::new(),
            rescan: AtomicBool::new(true),
            rescan_on_data: AtomicBool::new(false),
        });
        let mut watcher = new_watcher(wake.clone());
        let mut watched: HashSet<PathBuf> = HashSet::new();
        let discovery = tailer.discovery().clone();
        let mut tailer = Some(tailer);
        let mut measured: Option<Instant> = None;
        let mut progressed = false;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let rescan = wake.rescan.swap(false, Ordering::AcqRel);
            if rescan {
                if let Some(w) = watcher.as_mut() {
                    watch_roots(&discovery, w, &mut watched, config.files.poll_interval);
                }
            }
            let measure = measured.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if measure {
                measured = Some(Instant::now());
            }
            // One call reads a few chunks on the blocking pool, so thousands
            // of idle files cost one fstat each, not a task switch each.
            let mut t = tailer.take().expect("the tailer is back after every call");
            let c = ctx.clone();
            let Ok((back, chunks, sweep, files)) = tokio::task::spawn_blocking(move || {
                let now = Instant::now();
                let mut chunks = if rescan { t.scan(now) } else { Vec::new() };
                let sweep = t.read_some(&c, now);
                chunks.extend(sweep.chunks);
                if sweep.rescan {
                    chunks.extend(t.scan(now));
                }
                let files = measure.then(|| t.sizes());
                let waiting = t.waiting();
                (t, chunks, (sweep.progressed, sweep.done, waiting), files)
            })
            .await
            else {
                tracing::error!(source = %config.source, "a file reader task panicked");
                return;
            };
            wake.rescan_on_data
                .store(back.has_closed_files(), Ordering::Release);
            tailer = Some(back);
            if let Some(files) = files {
                ctx.metrics.files.set(files.len() as f64);
                *sizes.lock().unwrap_or_else(|e| e.into_inner()) = files;
            }
            let (busy, done, waiting) = sweep;
            progressed |= busy || !chunks.is_empty();
            for chunk in chunks {
                if !send(&tx, &cancel, chunk).await {
                    return;
                }
            }
            if !done {
                continue;
            }
            if !std::mem::take(&mut progressed) {
                // Files waiting for a permit are tried again soon: others
                // close what they have read meanwhile.
                let wait = if waiting {
                    config.files.poll_interval.min(PERMIT_RETRY)
                } else {
                    config.files.poll_interval
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = wake.notify.notified() => {}
                    _ = tokio::time::sleep(wait) => {
                        wake.rescan.store(true, Ordering::Release);
                    }
                }
            }
        }
    }
}

/// How soon files that could not be opened for want of a permit are tried again.
const PERMIT_RETRY: Duration = Duration::from_millis(50);

/// Hands a chunk to the batcher. A chunk already read still goes in if
/// there is room after shutdown began, so it is delivered now rather than
/// read again at the next start; only waiting for room stops at shutdown.
async fn send(tx: &mpsc::Sender<Chunk>, cancel: &CancellationToken, chunk: Chunk) -> bool {
    match tx.try_send(chunk) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(chunk)) => tokio::select! {
            r = tx.send(chunk) => r.is_ok(),
            _ = cancel.cancelled() => false,
        },
    }
}

fn watch_roots(
    discovery: &Discovery,
    w: &mut notify::RecommendedWatcher,
    watched: &mut HashSet<PathBuf>,
    poll_interval: Duration,
) {
    for root in discovery.roots() {
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
                "cannot watch directory ({e}); polling it every {poll_interval:?}"
            ),
        }
    }
}

fn new_watcher(wake: Arc<Wake>) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        let rescan = match res {
            Ok(ev) => match ev.kind {
                EventKind::Access(_) => return,
                EventKind::Modify(notify::event::ModifyKind::Data(_)) => {
                    wake.rescan_on_data.load(Ordering::Acquire)
                }
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
