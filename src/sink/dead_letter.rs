//! The dead-letter file of a destination: events it will not send again by
//! itself, one a line, at `<data_dir>/dead-letter/<destination>.ndjson`, and
//! `tailhook dead-letter resend`, which delivers them again.
//!
//! The running daemon appends and `resend` takes the file away, possibly at
//! the same time: both hold an exclusive lock on the file while they touch
//! it, and an appender that finds its handle no longer names the live file
//! (`resend` renamed it) opens the live one again. So no line is appended to
//! a file that `resend` has already read.
//!
//! The daemon's appends are bounded by `dead_letter.max_bytes`, counting the
//! live file and any file a `resend` is working through; `resend` reads a
//! file in batches, so its memory does not grow with the file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::client::{Client, Reply};
use super::{backoff, verdict, Verdict};
use crate::batch::BatchBuilder;
use crate::checkpoint::{create_dir_synced, sync_dir, PRIVATE_FILE};
use crate::config::DestinationConfig;

/// Why [`DeadLetter::append_within`] did not append.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The append would pass the bound; nothing was written.
    #[error("the dead-letter files hold {held} bytes; {adding} more would pass their bound")]
    Full {
        /// Bytes in the dead-letter files now.
        held: u64,
        /// Bytes the append would add.
        adding: u64,
    },
    /// The write failed (a full disk); nothing was left behind.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// An append-only NDJSON file of events set aside for one destination.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
}

impl DeadLetter {
    /// The dead-letter file of a destination.
    pub fn new(data_dir: &Path, destination: &str) -> DeadLetter {
        DeadLetter {
            path: data_dir
                .join("dead-letter")
                .join(format!("{destination}.ndjson")),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends events, one a line, and syncs them to disk before returning,
    /// whatever the bound (`resend` puts back what it took).
    /// A failed write leaves no half line behind (the caller retries it whole).
    pub fn append<'a>(&self, events: impl IntoIterator<Item = &'a [u8]>) -> std::io::Result<()> {
        match self.append_within(events, u64::MAX) {
            Ok(_) => Ok(()),
            Err(AppendError::Io(e)) => Err(e),
            Err(full @ AppendError::Full { .. }) => Err(std::io::Error::other(full)),
        }
    }

    /// Appends events like [`DeadLetter::append`] unless the dead-letter
    /// files would then hold more than `max_bytes`; returns the bytes they
    /// hold after it. An append to empty files is always made, so one batch
    /// larger than the bound cannot wait forever.
    pub fn append_within<'a>(
        &self,
        events: impl IntoIterator<Item = &'a [u8]>,
        max_bytes: u64,
    ) -> Result<u64, AppendError> {
        let mut buf = Vec::new();
        for e in events {
            buf.extend_from_slice(e);
            buf.push(b'\n');
        }
        if let Some(dir) = self.path.parent() {
            create_dir_synced(dir)?;
        }
        let (mut file, created) = self.open_locked()?;
        let before = drop_torn_tail(&file)?;
        let held = before + self.taken_bytes()?;
        let adding = buf.len() as u64;
        if held > 0 && held.saturating_add(adding) > max_bytes {
            return Err(AppendError::Full { held, adding });
        }
        let mut written = file.write_all(&buf).and_then(|()| file.sync_data());
        if written.is_ok() && created {
            // The new file's name must survive a crash too.
            written = self.path.parent().map_or(Ok(()), sync_dir);
        }
        if let Err(e) = written {
            let _ = file.set_len(before);
            return Err(e.into());
        }
        Ok(held + adding)
    }

    /// Bytes in the dead-letter files: the live one and those a `resend`
    /// is working through.
    pub fn bytes(&self) -> std::io::Result<u64> {
        let live = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(live + self.taken_bytes()?)
    }

    /// What the dead-letter files hold (the live one and those a `resend`
    /// is working through), read without a lock and without writing, so it
    /// is safe while tailhook and `resend` run. A file renamed by `resend`
    /// while this reads is counted once (by its inode); one removed meanwhile
    /// is not counted. A half line at the end (a crash during an append) is
    /// not an event; while a `resend` runs, what it is putting back may be
    /// counted in both files for a moment.
    pub fn waiting(&self) -> std::io::Result<Waiting> {
        let mut seen = std::collections::HashSet::new();
        let mut total = Waiting::default();
        // The live file first: if `resend` renames it after this opens it,
        // the taken file listed next is the same inode.
        for path in std::iter::once(self.path.clone()).chain(self.taken()?) {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let meta = file.metadata()?;
            if seen.insert((meta.dev(), meta.ino())) {
                total.add(count_events(file)?);
            }
        }
        Ok(total)
    }

    /// Bytes in the files a `resend` took and has not finished.
    fn taken_bytes(&self) -> std::io::Result<u64> {
        let mut total = 0;
        for path in self.taken()? {
            match std::fs::metadata(&path) {
                Ok(m) => total += m.len(),
                // Finished meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Files a `resend` took (renamed away) and has not finished, oldest first.
    fn taken(&self) -> std::io::Result<Vec<PathBuf>> {
        let dir = self.path.parent().expect("dead-letter path has a parent");
        let prefix = self.taken_prefix();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        files.sort();
        Ok(files)
    }

    fn taken_prefix(&self) -> String {
        let name = self.path.file_name().expect("file name").to_string_lossy();
        format!("{name}.resending-")
    }

    /// Opens the live file for appending, locked, even if `resend` renamed
    /// it away between the open and the lock. True when this created it.
    fn open_locked(&self) -> std::io::Result<(File, bool)> {
        loop {
            let mut options = OpenOptions::new();
            options.read(true).append(true);
            let mut create = options.clone();
            create.create_new(true).mode(PRIVATE_FILE);
            let (file, created) = match create.open(&self.path) {
                Ok(f) => {
                    // Request bodies and attack payloads: this user's only,
                    // whatever the umask.
                    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))?;
                    (f, true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match options.open(&self.path) {
                        Ok(f) => (f, false),
                        // Renamed away in between: try again.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            file.lock()?;
            let held = file.metadata()?;
            match std::fs::metadata(&self.path) {
                Ok(live) if live.ino() == held.ino() && live.dev() == held.dev() => {
                    return Ok((file, created))
                }
                // Renamed away while we waited for the lock: open the new one.
                _ => continue,
            }
        }
    }
}

/// Events and bytes waiting in a destination's dead-letter files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    /// Events: complete, non-blank lines.
    pub events: u64,
    /// Bytes of the files.
    pub bytes: u64,
}

impl Waiting {
    fn add(&mut self, other: Waiting) {
        self.events += other.events;
        self.bytes += other.bytes;
    }
}

/// Counts the events (complete lines that are not blank, as `resend` reads
/// them) and the bytes of a dead-letter file, a chunk at a time.
fn count_events(mut file: File) -> std::io::Result<Waiting> {
    use std::io::Read;
    let mut w = Waiting::default();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut content = false;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(w),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.bytes += n as u64;
        for &b in &buf[..n] {
            if b == b'\n' {
                w.events += u64::from(content);
                content = false;
            } else if !b.is_ascii_whitespace() {
                content = true;
            }
        }
    }
}

/// Cuts a half line left at the end by a crash during an append (its batch
/// was never acknowledged, so it is sent again): the next line must start on
/// a line of its own. Returns the file's length after the cut.
fn drop_torn_tail(file: &File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let keep = crate::line_end::last_line_end(file, len)?;
    if keep < len {
        if keep > 0 {
            tracing::warn!(
                bytes = len - keep,
                "dead-letter file ended in a half line (a crash during a write): cut"
            );
        }
        file.set_len(keep)?;
    }
    Ok(keep)
}

/// What `tailhook dead-letter resend` did for one destination.
#[derive(Debug, Default)]
pub struct ResendReport {
    /// The destination's name.
    pub destination: String,
    /// Its dead-letter file.
    pub path: PathBuf,
    /// Events delivered (2xx) and removed from the file.
    pub delivered: usize,
    /// Requests that delivered them.
    pub batches: usize,
    /// Events the collector rejected again (4xx), kept in the file.
    pub rejected: usize,
    /// Events not tried because the collector could not be reached, kept.
    pub unsent: usize,
    /// The last rejection or failure, in words.
    pub problem: Option<String>,
}

impl ResendReport {
    /// Events still in the dead-letter file.
    pub fn kept(&self) -> usize {
        self.rejected + self.unsent
    }
}

impl std::fmt::Display for ResendReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, path) = (&self.destination, self.path.display());
        if self.delivered == 0 && self.kept() == 0 {
            return write!(f, "{name}: no dead letters ({path})");
        }
        write!(
            f,
            "{name}: resent {} event(s) in {} batch(es)",
            self.delivered, self.batches
        )?;
        if self.rejected > 0 {
            write!(f, "; {} rejected again", self.rejected)?;
        }
        if self.unsent > 0 {
            write!(f, "; {} not sent", self.unsent)?;
        }
        if let Some(p) = &self.problem {
            write!(f, " ({p})")?;
        }
        if self.kept() > 0 {
            write!(f, "; {} kept in {path}", self.kept())
        } else {
            f.write_str("; the dead-letter file is now empty")
        }
    }
}

/// Files holding dead letters to resend: leftovers of an interrupted resend,
/// then the live file, renamed under the lock so appends go to a new one.
fn take_files(dl: &DeadLetter) -> std::io::Result<Vec<PathBuf>> {
    let dir = dl.path.parent().expect("dead-letter path has a parent");
    let prefix = dl.taken_prefix();
    let mut files = dl.taken()?;
    if dl.path.exists() {
        let (file, _) = dl.open_locked()?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let taken = dir.join(format!("{prefix}{stamp:020}"));
        std::fs::rename(&dl.path, &taken)?;
        drop(file);
        files.push(taken);
    }
    Ok(files)
}

/// How much of a dead-letter file `resend` reads at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Delivers a destination's dead letters again, in batches, with its method,
/// headers, TLS settings and batch bounds. What is delivered leaves the
/// file; what is rejected again, or could not be sent because the collector
/// is unreachable, stays. The file is read a batch at a time and what stays
/// is written back as each batch is settled, so memory holds about one
/// batch whatever the file's size. With several endpoints (`urls`,
/// `addresses`), a try that fails goes to the next one.
pub async fn resend(cfg: &DestinationConfig, data_dir: &Path) -> anyhow::Result<ResendReport> {
    // One client per endpoint (`urls`, `addresses`): a batch whose try
    // fails goes to the next.
    let clients = (0..cfg.endpoint_count())
        .map(|i| Client::new(&cfg.endpoint(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let dl = DeadLetter::new(data_dir, &cfg.name);
    let mut report = ResendReport {
        destination: cfg.name.clone(),
        path: dl.path.clone(),
        ..ResendReport::default()
    };
    for taken in take_files(&dl)? {
        let file = File::options().read(true).write(true).open(&taken)?;
        drop_torn_tail(&file)?;
        let mut lines = Lines {
            lines: BufReader::with_capacity(READ_CHUNK, file).split(b'\n'),
            held: None,
        };
        let mut builder = BatchBuilder::new(cfg.batch, cfg.format);
        loop {
            let mut batch_lines: Vec<Bytes> = Vec::new();
            while let Some(line) = lines.next_if(|l| builder.fits(l.len()))? {
                builder.push(&line);
                batch_lines.push(line);
                if builder.is_full() {
                    break;
                }
            }
            let Some(batch) = builder.take() else { break };
            if report.unsent > 0 {
                // The collector could not be reached: the rest stays unsent.
                dl.append(batch_lines.iter().map(|b| &b[..]))?;
                report.unsent += batch.events;
                continue;
            }
            match send_with_retries(&clients, cfg, batch.body).await {
                Ok(()) => {
                    report.delivered += batch.events;
                    report.batches += 1;
                }
                Err((rejected, why)) => {
                    dl.append(batch_lines.iter().map(|b| &b[..]))?;
                    if rejected {
                        report.rejected += batch.events;
                    } else {
                        report.unsent += batch.events;
                    }
                    report.problem = Some(why);
                }
            }
        }
        std::fs::remove_file(&taken)?;
    }
    Ok(report)
}

/// The non-blank lines of a dead-letter file, trimmed, one at a time, with
/// one line of lookahead.
struct Lines<R> {
    lines: std::io::Split<R>,
    held: Option<Bytes>,
}

impl<R: BufRead> Lines<R> {
    /// The next line if `want` takes it; otherwise it waits for the next call.
    fn next_if(&mut self, want: impl Fn(&Bytes) -> bool) -> std::io::Result<Option<Bytes>> {
        let line = match self.held.take() {
            Some(l) => l,
            None => loop {
                match self.lines.next().transpose()? {
                    None => return Ok(None),
                    Some(l) if l.trim_ascii().is_empty() => continue,
                    Some(l) => break Bytes::copy_from_slice(l.trim_ascii()),
                }
            },
        };
        if want(&line) {
            Ok(Some(line))
        } else {
            self.held = Some(line);
            Ok(None)
        }
    }
}

/// Sends one body, retrying a transient failure a few times. `Err((true, _))`
/// is a rejection, `Err((false, _))` a collector that cannot be reached or
/// keeps failing.
async fn send_with_retries(
    clients: &[Client],
    cfg: &DestinationConfig,
    body: Bytes,
) -> Result<(), (bool, String)> {
    // Made once: a forward batch sent again carries the same chunk id.
    let id = super::batch_id::of_body(&cfg.name, &body);
    let payload = clients[0].prepare(&body, cfg.format, &id);
    // Four tries, and each endpoint at least once.
    let attempts = clients.len().max(4) as u32;
    let mut last = String::new();
    for attempt in 0..attempts {
        if attempt > 0 {
            let wait = backoff(&cfg.retry, attempt).max(Duration::from_millis(10));
            tokio::time::sleep(wait).await;
        }
        let webhook = &clients[attempt as usize % clients.len()];
        match webhook.send(&payload).await {
            Ok(Reply::Acked(_)) => return Ok(()),
            Ok(Reply::Answer(a)) => match verdict(a.status, &cfg.status_policy) {
                Verdict::Delivered => return Ok(()),
                // `resend` sends what it sends as it is: a 413 leaves the
                // events in the file, to be sent with a smaller batch.
                Verdict::Reject | Verdict::Split => {
                    return Err((true, format!("HTTP {}: {}", a.status, a.body_start)))
                }
                Verdict::Retry => {
                    last = format!("HTTP {}: {}", a.status, a.body_start);
                    if let Some(h) = super::hint(a.status) {
                        last += &format!("; {h}");
                    }
                }
            },
            Err(e) => last = e.to_string(),
        }
    }
    Err((false, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path(), "d");
        dl.append([&b"{\"a\":1}"[..]]).unwrap();
        // A crash in the middle of writing the next line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dl.path())
            .and_then(|mut f| f.write_all(b"{\"b\":"))
            .unwrap();
        dl.append([&b"{\"c\":3}"[..]]).unwrap();
        assert_eq!(std::fs::read(dl.path()).unwrap(), b"{\"a\":1}\n{\"c\":3}\n");
        // A file that is only a torn line is emptied.
        std::fs::write(dl.path(), b"{\"x\"").unwrap();
        dl.append([&b"{}"[..]]).unwrap();
        assert_eq!(std::fs::read(dl.path()).unwrap(), b"{}\n");
    }

    #[test]
    fn the_bound_counts_the_live_file_and_those_being_resent() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path(), "d");
        // Empty files take any append, even one larger than the bound.
        assert_eq!(dl.append_within([&b"0123456789"[..]], 5).unwrap(), 11);
        assert_eq!(dl.append_within([&b"abc"[..]], 15).unwrap(), 15);
        match dl.append_within([&b"x"[..]], 16) {
            Err(AppendError::Full { held, adding }) => assert_eq!((held, adding), (15, 2)),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(dl.path()).unwrap(), b"0123456789\nabc\n");
        // A file `resend` took still counts until it is done with it.
        let taken = take_files(&dl).unwrap();
        assert_eq!(dl.bytes().unwrap(), 15);
        assert!(matches!(
            dl.append_within([&b"x"[..]], 16),
            Err(AppendError::Full { held: 15, .. })
        ));
        std::fs::remove_file(&taken[0]).unwrap();
        assert_eq!(dl.append_within([&b"x"[..]], 16).unwrap(), 2);
        assert_eq!(dl.bytes().unwrap(), 2);
        // `resend` putting back what it took is not bounded.
        dl.append([&b"0123456789abcdef"[..]]).unwrap();
        assert_eq!(dl.bytes().unwrap(), 19);
    }

    #[test]
    fn waiting_counts_events_in_the_live_and_taken_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path(), "d");
        assert_eq!(dl.waiting().unwrap(), Waiting::default(), "no file yet");
        dl.append([&b"{\"a\":1}"[..], b"{\"b\":2}"]).unwrap();
        take_files(&dl).unwrap();
        dl.append([&b"{\"c\":3}"[..]]).unwrap();
        // A blank line and a half line (a crash during an append) are not events.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dl.path())
            .and_then(|mut f| f.write_all(b"  \n{\"d\":"))
            .unwrap();
        assert_eq!(
            dl.waiting().unwrap(),
            Waiting {
                events: 3,
                bytes: dl.bytes().unwrap()
            }
        );
        assert_eq!(dl.bytes().unwrap(), 16 + 8 + 3 + 5);
    }

    #[test]
    fn append_survives_a_concurrent_take() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path(), "d");
        dl.append([&b"{\"a\":1}"[..]]).unwrap();
        let taken = take_files(&dl).unwrap();
        assert_eq!(taken.len(), 1);
        assert!(!dl.path().exists());
        // Appends after the take go to a new live file, not the taken one.
        dl.append([&b"{\"b\":2}"[..]]).unwrap();
        assert_eq!(std::fs::read(&taken[0]).unwrap(), b"{\"a\":1}\n");
        assert_eq!(std::fs::read(dl.path()).unwrap(), b"{\"b\":2}\n");
        // A leftover of an interrupted resend is taken first, then the live file.
        let again = take_files(&dl).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again[0], taken[0]);
    }
}
