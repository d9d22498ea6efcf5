//! The spool: append-only segment files that socket, HTTP and stdin sources
//! write and that every destination's pipeline then tails like any file.
//!
//! Layout: `<data_dir>/spool/<source>/segment-<seq>.v1.ndjson`, one event
//! line after another (the `v1` in the name is the format version). A
//! segment is closed at [`SpoolConfig::segment_bytes`] and deleted once
//! every destination reading its source has acknowledged all of it. The whole spool is bounded by `max_bytes`:
//! writers reserve room before they write and wait (or refuse) when it is
//! full.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::batch::TrackedFile;
use crate::checkpoint::{FileId, PRIVATE_FILE};
use crate::config::{FileInput, ReadFrom, SpoolConfig};
use crate::metrics;
use crate::rate_limit::RateLimit;
use crate::source::file::Tail;
use crate::source::TailMode;

/// The segment format version, part of every segment's name and header.
pub const SEGMENT_VERSION: &str = "v1";

/// How a segment's first line starts: `{"tailhook_spool":"v1",...}`, naming
/// the format, the source, the segment and when it was made. Readers skip
/// it; it makes every segment's first bytes unique, so a segment is never
/// mistaken for an earlier one that had the same inode and the same events.
pub const HEADER_PREFIX: &[u8] = b"{\"tailhook_spool\":";

/// How often delivered segments are looked for.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// Appends queued for a writer, at most (each is at most a read chunk or a body).
const WRITE_QUEUE: usize = 16;

/// How long a writer that cannot write waits before it tries again.
const RETRY_WRITE: Duration = Duration::from_secs(1);

/// The spool of one process: its room, shared by every spooled source.
pub struct Spool {
    root: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    used: AtomicU64,
    space: Notify,
    /// By source, the first segment its live writer may still append to:
    /// that one and later ones are never collected.
    active: Mutex<HashMap<String, u64>>,
    /// Sources whose writer has stopped (all its input is on disk).
    finished: Mutex<std::collections::HashSet<String>>,
    full_log: RateLimit,
    /// What each destination has acknowledged of each segment, by
    /// (destination, segment identity): a segment all its readers have
    /// acknowledged to its end can go.
    acked: Mutex<HashMap<(String, FileId), (String, u64)>>,
    acked_changed: Notify,
    /// Spooled sources whose segments are counted in `used` (opened once).
    sources: Mutex<std::collections::HashSet<String>>,
    /// Each spooled source of the config in force, and the destinations
    /// that read it: a segment goes once they all have it. Set at start and
    /// at every reload.
    readers: Mutex<HashMap<String, Vec<String>>>,
}

/// Why an append did not reach the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// No room: every destination is behind by `max_bytes`.
    #[error("the spool is full ({max} bytes wait for delivery)")]
    Full {
        /// `spool.max_bytes`.
        max: u64,
    },
    /// The segment could not be written or synced.
    #[error("cannot write the spool: {0}")]
    Io(#[from] io::Error),
    /// The writer cannot write (a full disk): the input is held.
    #[error("the spool cannot be written now ({0})")]
    Blocked(String),
    /// The writer has stopped (shutdown).
    #[error("the spool is closed (shutting down)")]
    Closed,
}

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
    /// Opens (creating) the spool under `data_dir` for the named sources,
    /// cutting any line a crash left unfinished at a segment's end (it was
    /// never acknowledged) and counting what is waiting.
    pub fn open(data_dir: &Path, config: SpoolConfig, sources: &[&str]) -> io::Result<Arc<Spool>> {
        let spool = Arc::new(Spool {
            root: root_of(data_dir),
            max_bytes: config.max_bytes,
            segment_bytes: config.segment_bytes(),
            used: AtomicU64::new(0),
            space: Notify::new(),
            active: Mutex::new(HashMap::new()),
            finished: Mutex::new(Default::default()),
            full_log: RateLimit::new(Duration::from_secs(60)),
            acked: Mutex::new(HashMap::new()),
            acked_changed: Notify::new(),
            sources: Mutex::new(Default::default()),
            readers: Mutex::new(HashMap::new()),
        });
        for s in sources {
            spool.add_source(s)?;
        }
        spool.publish_used();
        Ok(spool)
    }

    /// Takes a spooled source in (at start, or when a reload adds it): its
    /// directory is created, a line a crash left unfinished at a segment's
    /// end is cut (it was never acknowledged) and what waits is counted.
    /// A source already taken in is left as it is.
    pub fn add_source(&self, source: &str) -> io::Result<()> {
        if self.sources.lock().expect("spool lock").contains(source) {
            return Ok(());
        }
        let dir = self.root.join(source);
        crate::checkpoint::create_dir_synced(&dir)?;
        let mut used = 0;
        for (_, path) in segments(&dir)? {
            let len = repair(&path)?;
            if len == 0 {
                // Made by a crash before its header was written.
                fs::remove_file(&path)?;
            }
            used += len;
        }
        self.used.fetch_add(used, Ordering::AcqRel);
        self.publish_used();
        self.sources
            .lock()
            .expect("spool lock")
            .insert(source.to_string());
        Ok(())
    }

    /// Sets which destinations read each spooled source (at start and at
    /// every reload): [`Spool::collect`] deletes a segment once they all
    /// have it. A destination that a reload removes is no longer waited for.
    pub fn set_readers(&self, readers: HashMap<String, Vec<String>>) {
        *self.readers.lock().expect("spool lock") = readers;
        self.acked_changed.notify_one();
    }

    /// The directory of one source's segments.
    pub fn dir_of(data_dir: &Path, source: &str) -> PathBuf {
        root_of(data_dir).join(source)
    }

    /// What a destination's pipeline tails to read a spooled source.
    pub fn tail_of(data_dir: &Path, source: &str) -> Tail {
        let dir = Self::dir_of(data_dir, source);
        let pattern = format!(
            "{}/segment-*.{SEGMENT_VERSION}.ndjson",
            globset::escape(&dir.to_string_lossy())
        );
        Tail {
            source: source.to_string(),
            files: FileInput {
                include: vec![pattern],
                exclude: Vec::new(),
                read_from: ReadFrom::Beginning,
                poll_interval: Duration::from_secs(1),
                rotate_wait: Duration::ZERO,
                close_inactive: Duration::MAX,
            },
            mode: TailMode::Spool,
        }
    }

    /// Bytes in the spool (written or reserved).
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Sets the spool-bytes gauge from the count (after every change, and
    /// every second, so a racing update is corrected soon).
    fn publish_used(&self) {
        ::metrics::gauge!(metrics::SPOOL_BYTES).set(self.used_bytes() as f64);
    }

    /// Counts a datagram of `source` dropped for want of room.
    pub fn count_dropped_datagram(&self, source: &str) {
        ::metrics::counter!(metrics::INPUT_DATAGRAMS_DROPPED, "source" => source.to_string())
            .increment(1);
    }

    /// Reserves room for `n` bytes if there is some. An empty spool takes
    /// anything, so one body larger than `max_bytes` cannot wait forever.
    pub fn try_reserve(&self, n: u64) -> bool {
        let reserved = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u == 0 || u + n <= self.max_bytes).then_some(u + n)
            });
        match reserved {
            Ok(_) => {
                self.publish_used();
                true
            }
            Err(_) => false,
        }
    }

    /// Reserves room for `n` bytes, waiting for delivered segments to be
    /// deleted while the spool is full. False if `cancel` fired first.
    pub async fn reserve(&self, n: u64, cancel: &CancellationToken) -> bool {
        let mut waited = false;
        loop {
            let freed = self.space.notified();
            if self.try_reserve(n) {
                return true;
            }
            if !waited {
                waited = true;
                self.log_full("senders are slowed");
            }
            tokio::select! {
                _ = freed => {}
                _ = cancel.cancelled() => return false,
            }
        }
    }

    fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
        self.publish_used();
        self.space.notify_waiters();
    }

    /// Logs that the spool is full, at most once a minute.
    pub fn log_full(&self, effect: &str) {
        if let Some(similar) = self.full_log.allow() {
            tracing::warn!(
                max_bytes = self.max_bytes,
                similar_since_last = similar,
                "the spool is full: {effect} until destinations catch up"
            );
        }
    }

    /// The error to give a sender that finds the spool full.
    pub fn full(&self) -> SpoolError {
        SpoolError::Full {
            max: self.max_bytes,
        }
    }

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

    /// Records that `destination` has delivered segment `id` up to `offset`
    /// (called as its pipeline applies acknowledgements).
    pub fn acknowledge(&self, destination: &str, source: &str, file: &TrackedFile, offset: u64) {
        if !self.sources.lock().expect("spool lock").contains(source) {
            return;
        }
        let mut acked = self.acked.lock().expect("spool lock");
        let at = acked
            .entry((destination.to_string(), file.id))
            .or_insert_with(|| (file.path.clone(), 0));
        // An inode is reused by a later segment: the path tells them apart.
        if at.0 != file.path {
            *at = (file.path.clone(), 0);
        }
        if offset > at.1 {
            at.1 = offset;
            drop(acked);
            self.acked_changed.notify_one();
        }
    }

    /// Deletes every closed segment that all of its source's readers (as
    /// [`Spool::set_readers`] last said) have acknowledged, as
    /// acknowledgements arrive (and every second), until `cancel` fires.
    pub async fn collect(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.acked_changed.notified() => {}
                _ = tokio::time::sleep(COLLECT_EVERY) => {}
                _ = cancel.cancelled() => return,
            }
            let spool = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let readers = spool.readers.lock().expect("spool lock").clone();
                spool.collect_once(&readers)
            })
            .await;
        }
    }

    /// One round of [`Spool::collect`]; returns how many segments were deleted.
    ///
    /// Deleting on acknowledgements not yet in a checkpoint file is safe: a
    /// checkpoint entry whose file is gone is forgotten at the next start,
    /// and everything in that file was delivered.
    pub fn collect_once(&self, readers: &HashMap<String, Vec<String>>) -> usize {
        let mut deleted = 0;
        let mut kept = 0;
        for (source, dests) in readers {
            let dir = self.root.join(source);
            let Ok(list) = segments(&dir) else { continue };
            kept += list.len();
            let active = self.active.lock().expect("spool lock").get(source).copied();
            for (seq, path) in list {
                if active.is_some_and(|a| seq >= a) {
                    break;
                }
                let Ok(meta) = fs::metadata(&path) else {
                    continue;
                };
                let id = FileId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                };
                let delivered = {
                    let acked = self.acked.lock().expect("spool lock");
                    let name = path.to_string_lossy();
                    dests.iter().all(|d| {
                        acked
                            .get(&(d.clone(), id))
                            .is_some_and(|(p, o)| *p == name && *o >= meta.len())
                    })
                };
                if !delivered {
                    // Segments are read in order: later ones are not done either.
                    break;
                }
                match fs::remove_file(&path) {
                    Ok(()) => {
                        deleted += 1;
                        kept -= 1;
                        self.release(meta.len());
                        self.acked
                            .lock()
                            .expect("spool lock")
                            .retain(|(_, f), _| *f != id);
                        tracing::debug!(path = %path.display(), "spool segment delivered everywhere: deleted");
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "cannot delete a delivered spool segment: {e}");
                        break;
                    }
                }
            }
        }
        ::metrics::gauge!(metrics::SPOOL_SEGMENTS).set(kept as f64);
        self.publish_used();
        deleted
    }

    /// True once a source's writer has stopped and its spool holds no
    /// segment: everything it took was delivered.
    pub fn is_drained(&self, source: &str) -> bool {
        self.finished.lock().expect("spool lock").contains(source)
            && segments(&self.root.join(source)).is_ok_and(|s| s.is_empty())
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
                let why = format!("{e}; {}", free_space(&self.dir));
                tracing::error!(source = %self.source, dir = %self.dir.display(), "cannot write the spool: {why}; the input is held (sockets and stdin are not read, HTTP requests are answered 503) and the write is tried again every second");
                self.set_blocked(Some(why));
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

fn segment_header(source: &str, seq: u64) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut h = HEADER_PREFIX.to_vec();
    let rest = serde_json::json!({
        "source": source,
        "segment": seq,
        "created_ns": nanos.to_string(),
    })
    .to_string();
    h.extend_from_slice(format!("\"{SEGMENT_VERSION}\",").as_bytes());
    h.extend_from_slice(&rest.as_bytes()[1..]);
    h.push(b'\n');
    h
}

/// `<data_dir>/spool`, absolute, as the file tailer names what it reads.
fn root_of(data_dir: &Path) -> PathBuf {
    let root = data_dir.join("spool");
    std::path::absolute(&root).unwrap_or(root)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("segment-{seq:016}.{SEGMENT_VERSION}.ndjson"))
}

/// A source's segments in order.
pub(crate) fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let suffix = format!(".{SEGMENT_VERSION}.ndjson");
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(seq) = name
            .strip_prefix("segment-")
            .and_then(|r| r.strip_suffix(&suffix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Cuts an unfinished last line (a crash during a write: never acknowledged)
/// and returns the segment's length.
fn repair(path: &Path) -> io::Result<u64> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let size = file.metadata()?.len();
    let end = crate::line_end::after_last_newline(&file, size);
    if end < size {
        tracing::warn!(path = %path.display(), bytes = size - end, "spool segment ends in an unfinished line (a crash while writing it, before it was acknowledged): cutting it");
        file.set_len(end)?;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_bounds_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolConfig { max_bytes: 100 }, &["s"]).unwrap();
        assert!(
            spool.try_reserve(1000),
            "an empty spool takes one big append"
        );
        assert!(!spool.try_reserve(1));
        spool.release(1000);
        assert!(spool.try_reserve(60));
        assert!(spool.try_reserve(40));
        assert!(!spool.try_reserve(1));
    }

    /// The segment a live writer appends to is never deleted, even when a
    /// reader has acknowledged all it holds so far (it may hold only its
    /// header while the writer is about to append); once the writer stops,
    /// it goes, and only then is the source drained.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_segment_being_written_is_never_collected() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolConfig { max_bytes: 1 << 20 }, &["s"]).unwrap();
        let readers: HashMap<String, Vec<String>> =
            [("s".to_string(), vec!["d".to_string()])].into();
        let (writer, done) = spool.writer("s", CancellationToken::new()).unwrap();
        assert!(!spool.is_drained("s"), "a live writer is not drained");
        writer
            .append_durable(Bytes::from_static(b"{\"a\":1}\n"))
            .await
            .unwrap();
        let (_, path) = segments(&Spool::dir_of(dir.path(), "s")).unwrap().remove(0);
        let meta = fs::metadata(&path).unwrap();
        let file = TrackedFile::new(
            FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            path.to_string_lossy().into_owned(),
            "s".into(),
        );
        spool.acknowledge("d", "s", &file, meta.len());
        assert_eq!(spool.collect_once(&readers), 0);
        assert!(path.exists());
        drop(writer);
        done.await.unwrap();
        assert_eq!(spool.collect_once(&readers), 1);
        assert!(!path.exists());
        assert!(spool.is_drained("s"));
    }

    #[test]
    fn a_torn_last_line_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Spool::dir_of(dir.path(), "s");
        fs::create_dir_all(&seg).unwrap();
        let path = segment_path(&seg, 3);
        fs::write(&path, b"{\"a\":1}\n{\"b\":").unwrap();
        let spool = Spool::open(dir.path(), SpoolConfig { max_bytes: 1 << 20 }, &["s"]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"a\":1}\n");
        assert_eq!(spool.used_bytes(), 8);
        assert_eq!(segments(&seg).unwrap(), vec![(3, path)]);
    }
}
