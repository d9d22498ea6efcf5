//! Writing a destination's checkpoint after every acknowledgement, one write
//! at a time (group commit).
//!
//! A write (temp file, fsync, rename, fsync of the directory) takes
//! milliseconds; acknowledgements can arrive every few microseconds. So a
//! write starts as soon as there is something to write and none is in
//! progress, from a snapshot of the checkpoint as it is then, on a blocking
//! thread; the acknowledgements that arrive meanwhile are applied in memory
//! and go, all together, into the next write, which starts as soon as this
//! one is done — but never sooner than [`MIN_INTERVAL`] after the start of
//! the one before. After `kill -9`, what the file lacks is what was
//! acknowledged since the last finished write started.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::checkpoint::{CheckpointError, Checkpoints};
use crate::metrics::DestMetrics;

/// Writes start at least this far apart. On a disk that answers an fsync
/// in a fraction of a millisecond, writes back to back (about 600 a second
/// in the benchmark) cost a third more CPU than the delivery itself: each
/// is an fsync, a new inode for the temp file and the old one freed. This
/// caps them at 50 a second (about 2% more CPU), and adds at most 20 ms of
/// acknowledgements to what `kill -9` re-sends. After a write that takes
/// longer than this, the next one starts at once.
const MIN_INTERVAL: Duration = Duration::from_millis(20);

/// How long a failed write waits before the next try: a full or broken disk
/// must not be hammered once per acknowledgement.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often a write that keeps failing is logged, at most.
const LOG_FAILURES_EVERY: Duration = Duration::from_secs(60);

/// The checkpoint writes of one destination.
pub struct GroupCommit {
    destination: String,
    writes: metrics::Counter,
    failures: metrics::Counter,
    /// The write in progress, if any.
    write: Option<JoinHandle<Result<(), CheckpointError>>>,
    /// Acknowledgements were applied that no finished or running write holds.
    dirty: bool,
    /// No write starts before this: [`MIN_INTERVAL`] after the last one
    /// started, or [`RETRY_AFTER`] after one failed.
    not_before: Option<Instant>,
    /// Since the first of the failures in a row, if the last write failed.
    failing: Option<Failing>,
}

/// Writes that failed in a row, for logging them at most once a minute.
struct Failing {
    failed: u64,
    logged: Instant,
}

/// What [`GroupCommit::wake`] waited for.
pub enum Wake {
    /// The write in progress has finished (or its thread panicked).
    Written(Result<(), String>),
    /// The pause before the next write is over.
    Due,
}

impl GroupCommit {
    /// Nothing written yet, nothing to write.
    pub fn new(destination: &str, m: &DestMetrics) -> GroupCommit {
        GroupCommit {
            destination: destination.to_string(),
            writes: m.checkpoint_writes.clone(),
            failures: m.checkpoint_failures.clone(),
            write: None,
            dirty: false,
            not_before: None,
            failing: None,
        }
    }

    /// Notes that acknowledgements were applied to `checkpoints`, and starts
    /// writing them unless a write is in progress or the pause after the
    /// last one is not over.
    pub fn changed(&mut self, checkpoints: &Checkpoints) {
        self.dirty = true;
        self.start(checkpoints);
    }

    /// Whether [`GroupCommit::wake`] has anything to wait for.
    pub fn waiting(&self) -> bool {
        self.write.is_some() || (self.dirty && self.not_before.is_some())
    }

    /// Waits for the write in progress to finish, else, when there is
    /// something to write, for the pause before the next write to end;
    /// never returns when there is neither.
    /// Cancel-safe: dropped before it returns, nothing is lost.
    pub async fn wake(&mut self) -> Wake {
        if let Some(write) = &mut self.write {
            let result = joined(write.await);
            self.write = None;
            Wake::Written(result)
        } else if let Some(at) = self.not_before.filter(|_| self.dirty) {
            tokio::time::sleep_until(at).await;
            self.not_before = None;
            Wake::Due
        } else {
            std::future::pending().await
        }
    }

    /// Deals with what [`GroupCommit::wake`] returned: counts and logs the
    /// write, and starts the next one if acknowledgements are waiting.
    pub fn woke(&mut self, wake: Wake, checkpoints: &Checkpoints) {
        if let Wake::Written(result) = wake {
            if let Err(e) = self.written(result) {
                self.failed(&e);
                // What that write held is not on disk: write it again, later.
                self.dirty = true;
                self.not_before = Some(Instant::now() + RETRY_AFTER);
            }
        }
        self.start(checkpoints);
    }

    /// At shutdown: waits for the write in progress, then writes
    /// `checkpoints` as they are now, so the last write is the newest.
    /// Returns whether that last write succeeded; its failure is always
    /// logged.
    pub async fn finish(mut self, checkpoints: &Checkpoints) -> bool {
        if let Some(write) = self.write.take() {
            if let Err(e) = self.written(joined(write.await)) {
                self.failed(&e);
            }
        }
        let snapshot = checkpoints.snapshot();
        let result = joined(tokio::task::spawn_blocking(move || snapshot.write()).await);
        match self.written(result) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(destination = %self.destination, "cannot save checkpoint at shutdown: {e} (nothing is lost; what it lacks is sent again at the next start)");
                false
            }
        }
    }

    fn start(&mut self, checkpoints: &Checkpoints) {
        let now = Instant::now();
        if !self.dirty || self.write.is_some() || self.not_before.is_some_and(|t| now < t) {
            return;
        }
        self.dirty = false;
        self.not_before = Some(now + MIN_INTERVAL);
        let snapshot = checkpoints.snapshot();
        self.write = Some(tokio::task::spawn_blocking(move || snapshot.write()));
    }

    /// Counts a finished write; logs the recovery after failures.
    fn written(&mut self, result: Result<(), String>) -> Result<(), String> {
        match &result {
            Ok(()) => {
                self.writes.increment(1);
                if let Some(f) = self.failing.take() {
                    tracing::info!(
                        destination = %self.destination,
                        failed_writes = f.failed,
                        "checkpoint saved again after {} failed writes",
                        f.failed
                    );
                }
            }
            Err(_) => self.failures.increment(1),
        }
        result
    }

    /// Logs a failed write: the first of a run at once, then at most once a
    /// minute with the count, not once per acknowledgement.
    fn failed(&mut self, e: &str) {
        let now = Instant::now();
        let failing = self.failing.get_or_insert(Failing {
            failed: 0,
            logged: now,
        });
        failing.failed += 1;
        if failing.failed == 1 || now.duration_since(failing.logged) >= LOG_FAILURES_EVERY {
            failing.logged = now;
            tracing::error!(
                destination = %self.destination,
                failed_writes = failing.failed,
                "cannot save checkpoint: {e}; will try again every {}s ({} failed writes so far; nothing is lost, but a restart now would re-send)",
                RETRY_AFTER.as_secs(),
                failing.failed
            );
        }
    }
}

/// The outcome of a write's blocking task, a panic included.
fn joined(r: Result<Result<(), CheckpointError>, tokio::task::JoinError>) -> Result<(), String> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the write stopped: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Entry, FileId, Fingerprint};

    fn at(cp: &mut Checkpoints, offset: u64) {
        cp.set(Entry {
            path: "/var/log/a.ndjson".into(),
            source: "s".into(),
            id: FileId { dev: 1, ino: 2 },
            fingerprint: Fingerprint::of(b"{"),
            content_crc: None,
            offset,
            tail: None,
            truncated: None,
        });
    }

    fn on_disk(dir: &std::path::Path) -> Option<u64> {
        let (cp, err) = Checkpoints::load(dir, "d");
        assert!(err.is_none(), "{err:?}");
        cp.get(FileId { dev: 1, ino: 2 }).map(|e| e.offset)
    }

    /// Waits for the write in progress; returns its outcome.
    async fn written(commit: &mut GroupCommit, cp: &Checkpoints) -> Result<(), String> {
        assert!(commit.write.is_some(), "no write in progress");
        match commit.wake().await {
            Wake::Written(r) => {
                commit.woke(Wake::Written(r.clone()), cp);
                r
            }
            Wake::Due => panic!("a write was in progress"),
        }
    }

    /// Runs the writes until there is nothing left to write; returns how
    /// many there were.
    async fn settle(commit: &mut GroupCommit, cp: &Checkpoints) -> usize {
        let mut writes = 0;
        while commit.waiting() {
            let wake = commit.wake().await;
            if let Wake::Written(r) = &wake {
                r.clone().unwrap();
                writes += 1;
            }
            commit.woke(wake, cp);
        }
        writes
    }

    #[tokio::test]
    async fn acknowledgements_during_a_write_go_together_into_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cp, _) = Checkpoints::load(dir.path(), "d");
        let mut commit = GroupCommit::new("d", &DestMetrics::new("d"));
        at(&mut cp, 10);
        commit.changed(&cp);
        at(&mut cp, 20);
        commit.changed(&cp);
        at(&mut cp, 30);
        commit.changed(&cp);
        written(&mut commit, &cp).await.unwrap();
        // The first snapshot was taken at 10; the others wait for the next write.
        assert_eq!(on_disk(dir.path()), Some(10));
        assert_eq!(settle(&mut commit, &cp).await, 1);
        assert_eq!(on_disk(dir.path()), Some(30));
        assert!(commit.finish(&cp).await);
        assert_eq!(on_disk(dir.path()), Some(30));
    }

    #[tokio::test]
    async fn a_write_starts_at_once_unless_the_last_one_started_just_before() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cp, _) = Checkpoints::load(dir.path(), "d");
        let mut commit = GroupCommit::new("d", &DestMetrics::new("d"));
        let first = Instant::now();
        at(&mut cp, 10);
        commit.changed(&cp);
        assert!(commit.write.is_some(), "the first write starts at once");
        written(&mut commit, &cp).await.unwrap();
        at(&mut cp, 20);
        let now = Instant::now();
        commit.changed(&cp);
        if now < first + MIN_INTERVAL {
            assert!(commit.write.is_none(), "a write started too soon");
            assert!(commit.waiting());
        } else {
            assert!(commit.write.is_some(), "the last write started long ago");
        }
        assert_eq!(settle(&mut commit, &cp).await, 1);
        assert!(Instant::now() >= first + MIN_INTERVAL);
        assert_eq!(on_disk(dir.path()), Some(20));
    }

    #[tokio::test]
    async fn a_failed_write_is_tried_again_after_a_pause_with_what_came_since() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cp, _) = Checkpoints::load(dir.path(), "d");
        let blocker = Checkpoints::file_for(dir.path(), "d").with_extension("json.tmp");
        std::fs::create_dir_all(&blocker).unwrap();
        let mut commit = GroupCommit::new("d", &DestMetrics::new("d"));
        at(&mut cp, 10);
        commit.changed(&cp);
        let failed = Instant::now();
        assert!(written(&mut commit, &cp).await.is_err());
        let retry_at = commit.not_before.expect("a retry is due later");
        assert!(retry_at >= failed + RETRY_AFTER);
        // Acknowledgements during the pause start no write.
        at(&mut cp, 20);
        commit.changed(&cp);
        assert!(commit.write.is_none());
        assert!(commit.waiting());
        assert_eq!(commit.failing.as_ref().map(|f| f.failed), Some(1));

        std::fs::remove_dir(&blocker).unwrap();
        commit.not_before = Some(Instant::now());
        assert_eq!(settle(&mut commit, &cp).await, 1);
        assert_eq!(on_disk(dir.path()), Some(20));
        assert!(commit.failing.is_none());
    }

    #[tokio::test]
    async fn shutdown_waits_for_the_write_in_progress_then_writes_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cp, _) = Checkpoints::load(dir.path(), "d");
        let mut commit = GroupCommit::new("d", &DestMetrics::new("d"));
        at(&mut cp, 10);
        commit.changed(&cp);
        at(&mut cp, 20);
        assert!(commit.finish(&cp).await);
        assert_eq!(on_disk(dir.path()), Some(20));
        let tmp = Checkpoints::file_for(dir.path(), "d").with_extension("json.tmp");
        assert!(!tmp.exists());
    }
}
