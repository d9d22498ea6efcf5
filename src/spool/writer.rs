//! Writing a source's segments: one writer per source, on the blocking
//! pool, appending what its inputs hand over and syncing in groups.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::segment::{segment_header, segment_path, segments};
use super::{Spool, SpoolError};
use crate::checkpoint::PRIVATE_FILE;
use crate::metrics;

/// Appends queued for a writer, at most (each is at most a read chunk or a body).
const WRITE_QUEUE: usize = 16;

/// How long a writer that cannot write waits before it tries again.
const RETRY_WRITE: Duration = Duration::from_secs(1);

struct Append {
    lines: Bytes,
    /// Set for appends acknowledged to a sender: answered once the bytes are
    /// written and synced to disk.
    durable: Option<oneshot::Sender<io::Result<()>>>,
}

/// A handle that appends complete lines to one source's spool.
#[derive(Clone)]
pub struct SpoolWriter {
    spool: Arc<Spool>,
    tx: mpsc::Sender<Append>,
    /// Why the spool cannot be written now (None while it can).
    writable: watch::Receiver<Option<String>>,
}

impl Spool {
    /// Starts the writer of one source. It runs on the blocking pool until
    /// every [`SpoolWriter`] clone is dropped and what they handed over is
    /// written (or `hard` fires); the returned future ends then.
    pub fn writer(
        self: &Arc<Self>,
        source: &str,
        hard: CancellationToken,
    ) -> io::Result<(SpoolWriter, tokio::task::JoinHandle<()>)> {
        let dir = self.root.join(source);
        let next = segments(&dir)?.last().map_or(1, |(seq, _)| seq + 1);
        // Before the first segment exists: the collector must never see a
        // segment being started (only its header written) as a closed one.
        self.active
            .lock()
            .expect("spool lock")
            .insert(source.to_string(), next);
        self.finished.lock().expect("spool lock").remove(source);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (blocked, writable) = watch::channel(None);
        let spool = self.clone();
        let name = source.to_string();
        let blocked_gauge = ::metrics::gauge!(metrics::INPUT_BLOCKED, "source" => name.clone());
        blocked_gauge.set(0.0);
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            let mut w = Writer {
                input_bytes: ::metrics::counter!(metrics::INPUT_BYTES, "source" => name.clone()),
                blocked_gauge,
                blocked,
                spool: spool.clone(),
                source: name.clone(),
                dir,
                seq: next,
                segment: None,
                hard,
                runtime,
            };
            w.run(rx);
            spool.active.lock().expect("spool lock").remove(&name);
            spool.finished.lock().expect("spool lock").insert(name);
        });
        Ok((
            SpoolWriter {
                spool: self.clone(),
                tx,
                writable,
            },
            task,
        ))
    }
}

impl SpoolWriter {
    /// Appends complete lines (each ending in `\n`), waiting for room while
    /// the spool is full: the caller stops reading its sender meanwhile.
    /// Written in the background; false once shutdown has begun.
    pub async fn append(&self, lines: Bytes, cancel: &CancellationToken) -> bool {
        if lines.is_empty() {
            return true;
        }
        self.spool.reserve(lines.len() as u64, cancel).await
            && self.queue(lines, None).await.is_ok()
    }

    /// Waits while the spool cannot be written, so that a reader takes no
    /// more from its sender than is already queued: the sender keeps the
    /// rest (its writes block). False if `cancel` fired first.
    pub async fn wait_writable(&self, cancel: &CancellationToken) -> bool {
        // Called before every read: the writable case costs one check.
        if self.writable.borrow().is_none() {
            return true;
        }
        let mut writable = self.writable.clone();
        tokio::select! {
            r = writable.wait_for(|why| why.is_none()) => r.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }

    /// Appends if the spool has room now, without waiting for room (for
    /// datagrams, which are dropped when it is full or cannot be written).
    /// It may still wait for the writer's queue: meanwhile datagrams wait
    /// in the socket.
    pub async fn append_if_room(&self, lines: Bytes) -> Result<(), SpoolError> {
        if let Some(why) = self.writable.borrow().clone() {
            return Err(SpoolError::Blocked(why));
        }
        if !self.spool.try_reserve(lines.len() as u64) {
            return Err(self.spool.full());
        }
        self.queue(lines, None).await
    }

    /// Appends and returns once the lines are on disk and synced, for input
    /// that is acknowledged to its sender; fails at once if the spool is full.
    pub async fn append_durable(&self, lines: Bytes) -> Result<(), SpoolError> {
        if lines.is_empty() {
            return Ok(());
        }
        if !self.spool.try_reserve(lines.len() as u64) {
            return Err(self.spool.full());
        }
        let (ack, done) = oneshot::channel();
        self.queue(lines, Some(ack)).await?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SpoolError::Io(e)),
            Err(_) => Err(SpoolError::Closed),
        }
    }

    /// Hands lines whose room is reserved to the writer; gives the room
    /// back if the writer has stopped.
    async fn queue(
        &self,
        lines: Bytes,
        durable: Option<oneshot::Sender<io::Result<()>>>,
    ) -> Result<(), SpoolError> {
        let len = lines.len() as u64;
        self.tx.send(Append { lines, durable }).await.map_err(|_| {
            self.spool.release(len);
            SpoolError::Closed
        })
    }

    /// The spool this writer appends to.
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }
}

struct Segment {
    file: File,
    len: u64,
    unsynced: bool,
}

struct Writer {
    input_bytes: ::metrics::Counter,
    blocked_gauge: ::metrics::Gauge,
    /// Why the source's spool cannot be written now; None while it can.
    blocked: watch::Sender<Option<String>>,
    spool: Arc<Spool>,
    source: String,
    dir: PathBuf,
    seq: u64,
    segment: Option<Segment>,
    hard: CancellationToken,
    runtime: tokio::runtime::Handle,
}

impl Writer {
    /// Writes appends in arrival order until every [`SpoolWriter`] is gone
    /// and all they handed over is on disk, or until `hard` fires.
    ///
    /// A write that fails (a full disk, usually) blocks the source: what
    /// it had read stays queued and is tried again every second, not only
    /// when more arrives; its readers stop reading meanwhile (see
    /// [`SpoolWriter::wait_writable`]), and a sender waiting for an answer
    /// is told (HTTP: 503). Shutdown waits for the queue to be written;
    /// only `hard` (the second signal, or `shutdown_timeout`) gives it up.
    fn run(&mut self, mut rx: mpsc::Receiver<Append>) {
        let mut queue: VecDeque<Append> = VecDeque::new();
        let mut blocked: Option<Instant> = None;
        loop {
            if queue.is_empty() {
                match rx.blocking_recv() {
                    Some(a) => queue.push_back(a),
                    None => break,
                }
            }
            // Group commit: everything queued goes in before one sync.
            while queue.len() < WRITE_QUEUE {
                match rx.try_recv() {
                    Ok(a) => queue.push_back(a),
                    Err(_) => break,
                }
            }
            let Err(e) = self.write_all(&mut queue) else {
                if let Some(since) = blocked.take() {
                    self.set_blocked(None);
                    tracing::warn!(source = %self.source, dir = %self.dir.display(), "the spool can be written again after {:.0?}: input resumes", since.elapsed());
                }
                continue;
            };
            if blocked.is_none() {
                blocked = Some(Instant::now());
                // write_all has shown the input blocked, with why.
                let why = self
                    .blocked
                    .borrow()
                    .clone()
                    .unwrap_or_else(|| e.to_string());
                tracing::error!(source = %self.source, dir = %self.dir.display(), "cannot write the spool: {why}; the input is held (sockets and stdin are not read, HTTP requests are answered 503) and the write is tried again every second");
            }
            if queue.is_empty() {
                // Only answered appends failed: the next one tries again.
                continue;
            }
            if !self.pause(RETRY_WRITE) {
                let lost: usize = queue.iter().map(|a| a.lines.len()).sum();
                tracing::error!(source = %self.source, dir = %self.dir.display(), "stopping with {lost} bytes read from the input that could not be written to the spool (lost): {e}");
                for a in queue.drain(..) {
                    self.spool.release(a.lines.len() as u64);
                }
                return;
            }
        }
        if let Err(e) = self.sync() {
            tracing::warn!(source = %self.source, "cannot sync the spool at shutdown: {e}");
        }
    }

    /// Writes the queue in order and syncs once, answering the appends that
    /// wait for the disk. On an error, what was not written stays queued,
    /// except appends with a waiting sender: they are told, and their room
    /// given back (the sender sends again).
    fn write_all(&mut self, queue: &mut VecDeque<Append>) -> io::Result<()> {
        let mut written = Vec::new();
        let mut failed = None;
        while let Some(a) = queue.pop_front() {
            match self.write(&a) {
                Ok(()) => written.push(a),
                Err(e) => {
                    queue.push_front(a);
                    failed = Some(e);
                    break;
                }
            }
        }
        let synced = self.sync();
        for a in written {
            if let Some(ack) = a.durable {
                let _ = ack.send(match &synced {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                });
            }
        }
        let Some(e) = failed.or(synced.err()) else {
            return Ok(());
        };
        // Shown blocked (the gauge, and why) before anyone hears of it: a
        // 503 to a waiting sender, the error logged by the caller.
        if self.blocked.borrow().is_none() {
            self.set_blocked(Some(format!("{e}; {}", free_space(&self.dir))));
        }
        queue.retain_mut(|a| match a.durable.take() {
            Some(ack) => {
                self.spool.release(a.lines.len() as u64);
                let _ = ack.send(Err(io::Error::new(e.kind(), e.to_string())));
                false
            }
            None => true,
        });
        Err(e)
    }

    /// Waits `d`; false if `hard` fired first.
    fn pause(&self, d: Duration) -> bool {
        let hard = self.hard.clone();
        self.runtime.block_on(async move {
            tokio::select! {
                _ = tokio::time::sleep(d) => true,
                _ = hard.cancelled() => false,
            }
        })
    }

    fn set_blocked(&self, why: Option<String>) {
        self.blocked_gauge
            .set(if why.is_some() { 1.0 } else { 0.0 });
        self.blocked.send_replace(why);
    }

    /// Appends one run of lines (closing the segment first if it is full).
    /// On an error nothing of `a` is left in the segment.
    fn write(&mut self, a: &Append) -> io::Result<()> {
        self.close_if_full()?;
        let seg = match &mut self.segment {
            Some(s) => s,
            None => {
                let path = segment_path(&self.dir, self.seq);
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(PRIVATE_FILE)
                    .open(&path)?;
                // Attack payloads and request bodies: this user's only.
                file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))?;
                let mut len = file.metadata()?.len();
                if len == 0 {
                    let header = segment_header(&self.source, self.seq);
                    if let Err(e) = (&file).write_all(&header) {
                        let _ = file.set_len(0);
                        return Err(e);
                    }
                    len = header.len() as u64;
                    self.spool.used.fetch_add(len, Ordering::AcqRel);
                    self.spool.publish_used();
                }
                // The new name must survive a power cut as well as its bytes.
                File::open(&self.dir)?.sync_all()?;
                self.segment.insert(Segment {
                    file,
                    len,
                    unsynced: false,
                })
            }
        };
        if let Err(e) = seg.file.write_all(&a.lines) {
            // Leave no partial line behind: readers would wait for its end.
            let _ = seg.file.set_len(seg.len);
            return Err(e);
        }
        seg.len += a.lines.len() as u64;
        self.input_bytes.increment(a.lines.len() as u64);
        // Only what is acknowledged to a sender waits for the disk; socket
        // lines are safe from a crash of tailhook in the page cache.
        seg.unsynced |= a.durable.is_some();
        // The lines are in: a failure to close the segment now must not
        // queue them again. The close is tried again before the next
        // write and at the next sync.
        let _ = self.close_if_full();
        Ok(())
    }

    /// Closes the segment once it has reached its size: synced whole first,
    /// whatever its appends asked, and only then handed to the collector.
    fn close_if_full(&mut self) -> io::Result<()> {
        let Some(seg) = &mut self.segment else {
            return Ok(());
        };
        if seg.len < self.spool.segment_bytes {
            return Ok(());
        }
        seg.file.sync_data()?;
        self.segment = None;
        self.seq += 1;
        // Only now may the closed one be collected.
        self.spool
            .active
            .lock()
            .expect("spool lock")
            .insert(self.source.clone(), self.seq);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.close_if_full()?;
        match &mut self.segment {
            Some(seg) if seg.unsynced => {
                seg.file.sync_data()?;
                seg.unsynced = false;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Free space on the disk holding `dir`, in words for a log line.
fn free_space(dir: &Path) -> String {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(v) => format!(
            "{} bytes free on its file system",
            v.blocks_available().saturating_mul(v.fragment_size())
        ),
        Err(e) => format!("free space unknown: {e}"),
    }
}
