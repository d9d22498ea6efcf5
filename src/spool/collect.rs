//! Deleting the segments every reader has: acknowledgements in, closed
//! and delivered segments out.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::segment::segments;
use super::Spool;
use crate::batch::TrackedFile;
use crate::checkpoint::FileId;
use crate::metrics;

/// How often delivered segments are looked for.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

impl Spool {
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::config::SpoolConfig;

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
}
