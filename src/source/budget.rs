//! How many files the tailers may hold open at once, all of them together.
//!
//! Every destination reads every file of its sources, so open files grow as
//! destinations × files, and containers often get a soft limit of 1,024
//! descriptors. At start the soft `RLIMIT_NOFILE` is raised to the hard
//! limit; tailers then share a budget of that limit less a reserve for
//! sockets, the spool, checkpoints and dead letters. A tailer that cannot
//! get a permit leaves the file closed and tries again; meanwhile the others
//! close files they have read to their end, so files are read in turns
//! rather than failing with "too many open files".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Descriptors kept out of the budget, at least: sockets, the spool,
/// checkpoint and dead-letter writes, the metrics server.
const RESERVE_MIN: u64 = 128;

/// The open-file budget shared by every tailer of the process.
#[derive(Debug)]
pub struct OpenBudget {
    limit: usize,
    used: AtomicUsize,
    /// Tailers that have files they could not open for want of a permit.
    waiting: AtomicUsize,
}

/// One open file's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Permit(Arc<OpenBudget>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

impl OpenBudget {
    /// A budget of `limit` open files.
    pub fn new(limit: usize) -> Arc<OpenBudget> {
        Arc::new(OpenBudget {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Raises the soft open-file limit to the hard one, logs both, and
    /// returns the budget that leaves a quarter (at least 128) in reserve.
    pub fn for_this_process() -> Arc<OpenBudget> {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard)) if soft < hard => {
                match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    Ok(()) => {
                        tracing::info!(
                            from = soft,
                            to = hard,
                            "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
                        );
                        hard
                    }
                    Err(e) => {
                        tracing::warn!(soft, hard, "cannot raise the open-file limit: {e}");
                        soft
                    }
                }
            }
            Ok((soft, _)) => soft,
            Err(e) => {
                tracing::warn!("cannot read the open-file limit: {e}; assuming 1024");
                1024
            }
        };
        let reserve = (soft / 4).max(RESERVE_MIN);
        // Unlimited is reported as a huge number: a million open files is plenty.
        let budget = soft.saturating_sub(reserve).clamp(16, 1 << 20) as usize;
        tracing::info!(
            open_file_limit = soft,
            files = budget,
            "tailed files held open at once, at most"
        );
        OpenBudget::new(budget)
    }

    /// A permit for one more open file, if the budget has room.
    pub fn try_take(self: &Arc<Self>) -> Option<Permit> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used >= self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Permit(self.clone())),
                Err(now) => used = now,
            }
        }
    }

    /// Whether some tailer waits for a permit: files read to their end are
    /// then closed at once, to be reopened when they grow.
    pub fn short(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Says whether a tailer waits (counted once per tailer: `was` is what
    /// it said last).
    pub fn set_waiting(&self, was: bool, now: bool) {
        match (was, now) {
            (false, true) => {
                self.waiting.fetch_add(1, Ordering::AcqRel);
            }
            (true, false) => {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }

    /// How many files may be open at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Permits taken now.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_given_back() {
        let b = OpenBudget::new(2);
        let p1 = b.try_take().unwrap();
        let _p2 = b.try_take().unwrap();
        assert!(b.try_take().is_none());
        drop(p1);
        assert!(b.try_take().is_some());
        assert_eq!(b.used(), 1);
        b.set_waiting(false, true);
        assert!(b.short());
        b.set_waiting(true, false);
        assert!(!b.short());
    }
}
