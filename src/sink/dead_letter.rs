//! The dead-letter file of a destination: events it will not be sent again
//! by itself, one a line, at `<data_dir>/dead-letter/<destination>.ndjson`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only NDJSON file of events set aside for one destination.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Option<File>,
}

impl DeadLetter {
    /// The dead-letter file of a destination (opened on first use).
    pub fn new(data_dir: &Path, destination: &str) -> DeadLetter {
        DeadLetter {
            path: data_dir
                .join("dead-letter")
                .join(format!("{destination}.ndjson")),
            file: None,
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends events, one a line, and syncs them to disk before returning.
    pub fn append<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a [u8]>,
    ) -> std::io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let file = self.file.as_mut().expect("opened above");
        let mut buf = Vec::new();
        for e in events {
            buf.extend_from_slice(e);
            buf.push(b'\n');
        }
        let before = file.metadata()?.len();
        let written = file.write_all(&buf).and_then(|()| file.sync_data());
        if written.is_err() {
            // Leave no half line behind (the write is retried whole), and
            // reopen next time: the handle may be the problem.
            let _ = file.set_len(before);
            self.file = None;
        }
        written
    }
}
