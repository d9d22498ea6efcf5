//! The spool: append-only segment files that socket, HTTP and stdin sources
//! write and that every destination's pipeline then tails like any file.
//!
//! Layout: `<data_dir>/spool/<source>/segment-<seq>.v1.ndjson`, one event
//! line after another (the `v1` in the name is the format version). A
//! segment is closed at [`SpoolConfig::segment_bytes`] and deleted once
//! every destination reading its source has acknowledged all of it. The whole spool is bounded by `max_bytes`:
//! writers reserve room before they write and wait (or refuse) when it is
//! full.

mod collect;
pub mod segment;
mod writer;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::FileId;
use crate::config::SpoolConfig;
use crate::metrics;
use crate::rate_limit::RateLimit;
use segment::{repair, segments};
pub use writer::SpoolWriter;

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
    Full { max: u64 },
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
        ::metrics::gauge!(crate::metrics::SPOOL_MAX_BYTES).set(config.max_bytes as f64);
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
}

/// `<data_dir>/spool`, absolute, as the file tailer names what it reads.
fn root_of(data_dir: &Path) -> PathBuf {
    let root = data_dir.join("spool");
    std::path::absolute(&root).unwrap_or(root)
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
}
