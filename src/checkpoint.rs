//! Per-destination read positions, persisted atomically.
//!
//! A destination's checkpoint says, for every file it has read, how far the
//! collector has acknowledged. It moves only after a 2xx (or a dead-letter
//! write), so a restart resumes where delivery stopped, not where reading did.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The on-disk format version; bumped on any incompatible change.
pub const VERSION: u32 = 1;

/// How many leading bytes of a file identify it beside its device and inode.
pub const FINGERPRINT_BYTES: usize = 256;

/// A hash of a file's first bytes (up to [`FINGERPRINT_BYTES`]), so a reused
/// inode is not taken for the file that had it before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    /// How many leading bytes were hashed.
    pub len: u32,
    /// FNV-1a of those bytes.
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of these leading bytes.
    pub fn of(head: &[u8]) -> Fingerprint {
        let head = &head[..head.len().min(FINGERPRINT_BYTES)];
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in head {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Fingerprint {
            len: head.len() as u32,
            hash,
        }
    }
}

/// The content a truncation took away (copytruncate): a copy of it starts
/// here. Kept in the truncated file's checkpoint entry until its copy is
/// found, so a restart in between does not read the copy whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncated {
    /// The first bytes of the old content.
    pub fingerprint: Fingerprint,
    /// How far it had been read.
    pub offset: u64,
    /// CRC-32 of the old content before `offset`.
    pub crc: u32,
}

/// Device and inode: which file, whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// One file's acknowledged position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The path it was last read under (for people; identity is `id` + `fingerprint`).
    pub path: String,
    /// The source that reads it.
    #[serde(default)]
    pub source: String,
    /// Device and inode.
    #[serde(flatten)]
    pub id: FileId,
    /// The first bytes' hash when the entry was written.
    pub fingerprint: Fingerprint,
    /// CRC-32 of the bytes before `offset`, when known: recognises a copy
    /// of this content (copytruncate) after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_crc: Option<u32>,
    /// Every byte before this has been delivered (or dead-lettered).
    pub offset: u64,
    /// The fingerprint of the bytes just before `offset`, when known: the
    /// first bytes of real logs are alike, these are not, so a reused inode
    /// holding a file that starts the same way is not taken for this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<Fingerprint>,
    /// The content this file lost to a truncation, while its copy has not
    /// been found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncated>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    destination: String,
    files: Vec<Entry>,
}

/// A problem with a checkpoint file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("checkpoint file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a checkpoint this version understands.
    #[error("checkpoint file {path} is unusable ({why}); starting as if it were absent, which re-sends rather than loses")]
    Corrupt { path: PathBuf, why: String },
}

/// The positions of one destination, keyed by file identity.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    destination: String,
    entries: HashMap<FileId, Entry>,
}

impl Checkpoints {
    /// The checkpoint file of a destination.
    pub fn file_for(data_dir: &Path, destination: &str) -> PathBuf {
        data_dir
            .join("checkpoints")
            .join(format!("{destination}.json"))
    }

    /// Loads a destination's checkpoints. A missing file is an empty set; a
    /// corrupt one is an empty set plus the error, for the caller to report.
    pub fn load(data_dir: &Path, destination: &str) -> (Checkpoints, Option<CheckpointError>) {
        let path = Self::file_for(data_dir, destination);
        let mut cp = Checkpoints {
            path: path.clone(),
            destination: destination.to_string(),
            entries: HashMap::new(),
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (cp, None),
            Err(e) => {
                let why = format!("it cannot be read: {e}");
                return (cp, Some(CheckpointError::Corrupt { path, why }));
            }
        };
        let corrupt = |why: String| CheckpointError::Corrupt {
            path: path.clone(),
            why,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return (cp, Some(corrupt("it is empty".into())));
        }
        match serde_json::from_slice::<OnDisk>(&bytes) {
            Ok(d) if d.version == VERSION => {
                cp.entries = d.files.into_iter().map(|e| (e.id, e)).collect();
                (cp, None)
            }
            Ok(d) => (
                cp,
                Some(corrupt(format!(
                    "unknown version {}; this tailhook writes version {VERSION}",
                    d.version
                ))),
            ),
            Err(e) => (cp, Some(corrupt(format!("not valid: {e}")))),
        }
    }

    /// Every entry, by file identity.
    pub fn entries(&self) -> &HashMap<FileId, Entry> {
        &self.entries
    }

    /// The entry for a file identity, if any.
    pub fn get(&self, id: FileId) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// Records that everything before `offset` in this file is delivered.
    pub fn set(&mut self, entry: Entry) {
        self.entries.insert(entry.id, entry);
    }

    /// Forgets a file.
    pub fn remove(&mut self, id: FileId) {
        self.entries.remove(&id);
    }

    /// The checkpoint as it is now, serialised: cheap to take on the async
    /// loop, written later (on a blocking thread) by [`Snapshot::write`].
    pub fn snapshot(&self) -> Snapshot {
        let mut files: Vec<Entry> = self.entries.values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let body = serde_json::to_vec_pretty(&OnDisk {
            version: VERSION,
            destination: self.destination.clone(),
            files,
        })
        .expect("checkpoint serialises");
        Snapshot {
            path: self.path.clone(),
            body,
        }
    }

    /// Writes the checkpoint atomically now (see [`Snapshot::write`]).
    #[cfg(test)]
    pub fn save(&self) -> Result<(), CheckpointError> {
        self.snapshot().write()
    }
}

/// A destination's checkpoint as it was at one moment, ready to be written.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
    body: Vec<u8>,
}

impl Snapshot {
    /// Writes it atomically: temp file, fsync, rename, fsync of the
    /// directory. Two writes of one checkpoint must not run at once: they
    /// would share the temp file.
    pub fn write(&self) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().expect("checkpoint path has a parent");
        create_dir_synced(dir).map_err(io)?;
        let first = !self.path.exists();
        let tmp = self.path.with_extension("json.tmp");
        let mut f = create_private(&tmp).map_err(io)?;
        f.write_all(&self.body).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        // The rename is durable only once the directory is: without this a
        // crash could bring back the previous checkpoint, or none at all.
        sync_dir(dir).map_err(io)?;
        if first {
            // The `checkpoints/` entry itself, made at start.
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(io)?;
            }
        }
        Ok(())
    }
}

/// Creates (or truncates) a file readable and writable by this user only,
/// whatever the umask.
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))?;
    Ok(f)
}

/// Flushes a directory's entries (a file created, renamed or removed in it)
/// to disk. A filesystem that cannot sync a directory (EINVAL) is taken as
/// one that needs no such sync.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
}

/// Mode of every directory tailhook creates: it holds attack payloads and
/// request bodies, for its own user only.
pub(crate) const PRIVATE_DIR: u32 = 0o700;

/// Mode of every file tailhook creates under `data_dir`.
pub(crate) const PRIVATE_FILE: u32 = 0o600;

/// Creates a directory (and its parents) if missing, private to this user
/// whatever the umask, and syncs the parent of each one created so the new
/// entries survive a crash.
pub(crate) fn create_dir_synced(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_synced(parent)?;
    }
    match std::fs::DirBuilder::new().mode(PRIVATE_DIR).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        other => other?,
    }
    // The umask may have taken bits from the owner too.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR))?;
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_created_with_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("data").join("checkpoints");
        create_dir_synced(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_synced(&deep).unwrap();
        sync_dir(&deep).unwrap();
        assert!(sync_dir(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cp, err) = Checkpoints::load(dir.path(), "d");
        assert!(err.is_none());
        cp.set(Entry {
            path: "/x".into(),
            source: "s".into(),
            id: FileId { dev: 1, ino: 2 },
            fingerprint: Fingerprint::of(b"abc"),
            content_crc: Some(7),
            offset: 42,
            tail: Some(Fingerprint::of(b"bc")),
            truncated: None,
        });
        cp.save().unwrap();
        let (back, err) = Checkpoints::load(dir.path(), "d");
        assert!(err.is_none());
        assert_eq!(back.get(FileId { dev: 1, ino: 2 }).unwrap().offset, 42);

        let file = Checkpoints::file_for(dir.path(), "d");
        for (content, words) in [
            ("", "it is empty"),
            ("{not json", "not valid"),
            (
                r#"{"version":99,"destination":"d","files":[]}"#,
                "unknown version 99",
            ),
        ] {
            std::fs::write(&file, content).unwrap();
            let (cp, err) = Checkpoints::load(dir.path(), "d");
            let msg = err.unwrap().to_string();
            assert!(msg.contains(words), "{msg}");
            assert!(cp.get(FileId { dev: 1, ino: 2 }).is_none());
        }
    }
}
