//! Finding and opening files, and deciding where to start in each: which
//! file is which across restarts, rotations, copies and truncations.
//!
//! A file is known by device and inode, checked against a fingerprint of its
//! first 256 bytes. A new file whose first 256 bytes are those of a file
//! being read, or of one that was truncated, may be a copy made by
//! copytruncate; the CRC-32 of its content up to where reading had got
//! decides, so a copy is read only for what the truncation took away, and a
//! different file that merely starts the same way is read whole.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::discover::Discovery;
use super::file::StartPositions;
use super::reader::{crc_of_prefix, OpenFile};
use super::Chunk;
use crate::batch::TrackedFile;
use crate::checkpoint::{Entry, FileId, Fingerprint, FINGERPRINT_BYTES};

/// Scans in a row that must miss a file before it is closed as rotated away.
pub const ORPHAN_AFTER_SCANS: u32 = 2;

/// How many truncated contents are remembered, waiting for their copy.
const TRUNCATED_KEPT: usize = 64;

/// The content a truncation took away: a copy of it starts here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated {
    /// The first bytes of the old content.
    pub fingerprint: Fingerprint,
    /// How far it had been read.
    pub offset: u64,
    /// CRC-32 of the old content before `offset`.
    pub crc: u32,
}

/// Remembers a truncated content, keeping the list bounded.
pub fn remember(list: &mut Vec<Truncated>, t: Truncated) {
    if t.fingerprint.len as usize == FINGERPRINT_BYTES && !list.contains(&t) {
        if list.len() >= TRUNCATED_KEPT {
            list.remove(0);
        }
        list.push(t);
    }
}

/// An open file as a scan sees it.
pub struct OpenView {
    /// A copy waiting for its original's truncation (not an original).
    pub is_copy: bool,
    /// Its identity.
    pub id: FileId,
    /// Its path.
    pub path: PathBuf,
    /// Its first bytes.
    pub fingerprint: Fingerprint,
    /// How far it has been read, and the CRC-32 of the bytes before that.
    pub read: Option<(u64, u32)>,
    /// A handle on it, to compare a candidate copy with (none if it could
    /// not be duplicated).
    pub file: Option<File>,
}

/// What a scan needs.
pub struct ScanInput {
    /// The source's globs.
    pub discovery: Arc<Discovery>,
    /// The source's name.
    pub source: String,
    /// Whether a new file may be a copytruncate copy of another (not for
    /// spool segments, which are never copied and often start alike).
    pub detect_copies: bool,
    /// Files already open.
    pub open: Vec<OpenView>,
    /// The destination's checkpoints as loaded.
    pub start: Arc<StartPositions>,
    /// The first scan of this run.
    pub initial: bool,
    /// `read_from = "end"` applies to what is found now.
    pub skip_existing: bool,
    /// Paths already warned about.
    pub warned: HashSet<PathBuf>,
    /// Truncated contents waiting for their copy.
    pub truncated: Vec<Truncated>,
}

/// What a scan found.
pub struct ScanOutput {
    /// Every matching file, by identity.
    pub seen: HashMap<FileId, PathBuf>,
    /// Newly opened files.
    pub opened: Vec<OpenFile>,
    /// Paths that could not be opened.
    pub warned: HashSet<PathBuf>,
    /// Truncated contents still waiting for their copy.
    pub truncated: Vec<Truncated>,
    /// Positions that drop checkpoint entries of files that are gone.
    pub forget: Vec<Chunk>,
}

struct Found {
    path: PathBuf,
    file: File,
    id: FileId,
    size: u64,
    head: Fingerprint,
}

fn head_of(file: &File) -> Fingerprint {
    let mut head = vec![0u8; FINGERPRINT_BYTES];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    Fingerprint::of(&head[..n])
}

fn full(f: &Fingerprint) -> bool {
    f.len as usize == FINGERPRINT_BYTES
}

/// Whether the file at `path` now is the one `entry` describes.
fn matches_entry(file: &File, size: u64, entry: &Entry) -> bool {
    let mut head = vec![0u8; entry.fingerprint.len as usize];
    entry.offset <= size
        && file.read_exact_at(&mut head, 0).is_ok()
        && Fingerprint::of(&head) == entry.fingerprint
}

/// Lists the matching files and opens the new ones at the right offset.
pub fn scan(mut input: ScanInput) -> ScanOutput {
    let source = input.source.clone();
    let mut seen = HashMap::new();
    let mut still_failing = HashSet::new();
    let mut found = Vec::new();
    let open_ids: HashSet<FileId> = input.open.iter().map(|o| o.id).collect();
    for path in input.discovery.scan() {
        let opened = File::open(&path).and_then(|f| f.metadata().map(|m| (f, m)));
        let (file, meta) = match opened {
            Ok(x) => x,
            Err(e) => {
                if !input.warned.contains(&path) {
                    tracing::warn!(source, path = %path.display(), "cannot open file: {e}; will try again at every scan");
                }
                still_failing.insert(path);
                continue;
            }
        };
        if input.warned.remove(&path) {
            tracing::info!(source, path = %path.display(), "file is readable now");
        }
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if seen.insert(id, path.clone()).is_some() || open_ids.contains(&id) {
            continue;
        }
        let head = head_of(&file);
        found.push(Found {
            path,
            file,
            id,
            size: meta.len(),
            head,
        });
    }

    let mut opened = Vec::new();
    let mut forget = Vec::new();
    if input.initial {
        recover_entries(&mut input, &seen, &found, &mut opened, &mut forget);
    }

    for f in found {
        let Found {
            path,
            file,
            id,
            size,
            head,
        } = f;
        let tracked = Arc::new(TrackedFile {
            id,
            path: path.display().to_string(),
            source: source.clone(),
        });
        let (offset, crc, copy_of) = start_of(&mut input, &opened, &file, id, size, head, &path);
        match OpenFile::open(file, path.clone(), tracked, offset, crc) {
            Ok(mut f) => {
                let is_copy = copy_of.is_some();
                if let Some((of, src)) = copy_of {
                    f.copy_of = Some(of);
                    f.copy_src = Some(src);
                    f.copy_len = size;
                    f.copy_since = Some(std::time::Instant::now());
                }
                if !is_copy {
                    tracing::info!(source, path = %path.display(), offset, "following file");
                }
                opened.push(f);
            }
            Err(e) => {
                tracing::warn!(source, path = %path.display(), "cannot read file: {e}; will try again");
                still_failing.insert(path);
            }
        }
    }
    ScanOutput {
        seen,
        opened,
        warned: still_failing,
        truncated: input.truncated,
        forget,
    }
}

/// Where to start in a newly found file: its offset, the CRC-32 of what is
/// before it, and the open file it is a copy of, if it is one.
fn start_of(
    input: &mut ScanInput,
    opened: &[OpenFile],
    file: &File,
    id: FileId,
    size: u64,
    head: Fingerprint,
    path: &Path,
) -> (u64, Option<u32>, Option<(FileId, File)>) {
    if let Some(entry) = input.start.entries.get(&id) {
        if matches_entry(file, size, entry) {
            return (entry.offset, entry.content_crc, None);
        }
        tracing::warn!(
            path = %path.display(),
            "file is not the one its checkpoint describes (its inode was reused, or it was truncated while tailhook was stopped): reading it from the start"
        );
        return (0, None, None);
    }
    if !input.detect_copies {
        return (0, None, None);
    }
    if full(&head) {
        // The copy of a content a truncation took away: read what the
        // truncation took that had not been read yet.
        let pick = input.truncated.iter().position(|t| {
            t.fingerprint == head
                && t.offset <= size
                && crc_of_prefix(file, t.offset).ok().flatten() == Some(t.crc)
        });
        if let Some(i) = pick {
            let t = input.truncated.remove(i);
            tracing::info!(path = %path.display(), offset = t.offset, "file is a copy of a truncated file (copytruncate): reading it from where the original had been read");
            return (t.offset, Some(t.crc), None);
        }
    }
    // A copy of a file being read, perhaps still being written by `cp`.
    let originals = input
        .open
        .iter()
        .filter(|o| !o.is_copy)
        .filter_map(|o| Some((o.id, o.fingerprint, o.read, o.file.as_ref()?)))
        .chain(opened.iter().filter(|o| o.copy_of.is_none()).map(|o| {
            (
                o.tracked.id,
                o.fingerprint(),
                o.content_crc().map(|c| (o.framed_to(), c)),
                o.file(),
            )
        }));
    for (of, fp, read, original) in originals {
        let Some((at, crc)) = read else { continue };
        // Compare contents only where the first bytes already agree: with
        // those read from the original, or, for a copy shorter than them,
        // with the original's first bytes now.
        let agree = if full(&head) {
            head == fp
        } else {
            Fingerprint::of_prefix(original, head.len as usize) == head
        };
        if !agree {
            continue;
        }
        let now = original.metadata().map(|m| m.len()).unwrap_or(0);
        let intact = now >= at && head_of(original) == fp;
        if !intact {
            // The original was truncated (or rewritten) since it was read:
            // the copy holds what had not been read yet. Start there.
            if size >= at && crc_of_prefix(file, at).ok().flatten() == Some(crc) {
                tracing::info!(path = %path.display(), offset = at, "file is a copy of a truncated file (copytruncate): reading it from where the original had been read");
                return (at, Some(crc), None);
            }
            continue;
        }
        // While it is a prefix of the original, it holds nothing new: wait
        // for the original to be truncated.
        let prefix = if size >= at {
            size <= now
                && crc_of_prefix(file, at).ok().flatten() == Some(crc)
                && same_range(file, original, at, size)
        } else {
            same_range(file, original, 0, size)
        };
        if prefix {
            tracing::info!(path = %path.display(), "file is a copy of a file being read: it is read only if that file is truncated");
            return (0, None, original.try_clone().ok().map(|f| (of, f)));
        }
        // The original may have been truncated while it was compared.
        let still =
            original.metadata().map(|m| m.len()).unwrap_or(0) >= at && head_of(original) == fp;
        if !still && size >= at && crc_of_prefix(file, at).ok().flatten() == Some(crc) {
            tracing::info!(path = %path.display(), offset = at, "file is a copy of a truncated file (copytruncate): reading it from where the original had been read");
            return (at, Some(crc), None);
        }
    }
    if input.skip_existing {
        (after_last_newline(file, size), None, None)
    } else {
        (0, None, None)
    }
}

/// At the first scan: checkpoint entries of this source whose file the
/// globs no longer find. A file renamed while tailhook was stopped is found
/// again by device and inode in its directory and read to its end; one that
/// is gone is forgotten, and its content remembered in case a copy of it
/// (copytruncate while stopped) turns up.
fn recover_entries(
    input: &mut ScanInput,
    seen: &HashMap<FileId, PathBuf>,
    found: &[Found],
    opened: &mut Vec<OpenFile>,
    forget: &mut Vec<Chunk>,
) {
    let start = input.start.clone();
    for entry in start.entries.values() {
        if !entry.source.is_empty() && entry.source != input.source {
            continue;
        }
        let gone = |e: &Entry| Truncated {
            fingerprint: e.fingerprint,
            offset: e.offset,
            crc: e.content_crc.unwrap_or_default(),
        };
        if seen.contains_key(&entry.id) {
            // Found, but truncated or replaced while stopped? Its old content
            // may have a copy.
            let f = found.iter().find(|f| f.id == entry.id);
            if let (Some(f), Some(_)) = (f, entry.content_crc) {
                if !matches_entry(&f.file, f.size, entry) {
                    remember(&mut input.truncated, gone(entry));
                }
            }
            continue;
        }
        match find_by_inode(entry) {
            Some((path, file)) => {
                let tracked = Arc::new(TrackedFile {
                    id: entry.id,
                    path: path.display().to_string(),
                    source: input.source.clone(),
                });
                match OpenFile::open(file, path.clone(), tracked, entry.offset, entry.content_crc) {
                    Ok(mut f) => {
                        tracing::info!(source = %input.source, old = %entry.path, path = %path.display(), offset = entry.offset, "file was renamed while tailhook was stopped: reading the rest of it");
                        f.missing_scans = ORPHAN_AFTER_SCANS;
                        f.orphan = true;
                        opened.push(f);
                    }
                    Err(e) => tracing::warn!(path = %path.display(), "cannot read file: {e}"),
                }
            }
            None => {
                if entry.content_crc.is_some() {
                    remember(&mut input.truncated, gone(entry));
                }
                forget.push(Chunk {
                    file: Arc::new(TrackedFile {
                        id: entry.id,
                        path: entry.path.clone(),
                        source: input.source.clone(),
                    }),
                    events: Vec::new(),
                    dead_letters: Vec::new(),
                    end: entry.offset,
                    fingerprint: entry.fingerprint,
                    content_crc: entry.content_crc,
                    closed: true,
                });
            }
        }
    }
}

/// The file an entry describes, looked for by device and inode in the
/// directory it was in, if it is still there and still the same content.
fn find_by_inode(entry: &Entry) -> Option<(PathBuf, File)> {
    let dir = Path::new(&entry.path).parent()?;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_file() && meta.dev() == entry.id.dev && meta.ino() == entry.id.ino {
            let file = File::open(e.path()).ok()?;
            return matches_entry(&file, meta.len(), entry).then(|| (e.path(), file));
        }
    }
    None
}

/// Whether two files hold the same bytes in `from..to`.
pub fn same_range(a: &File, b: &File, from: u64, to: u64) -> bool {
    let (mut x, mut y) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(x.len());
        if a.read_exact_at(&mut x[..n], at).is_err() || b.read_exact_at(&mut y[..n], at).is_err() {
            return false;
        }
        if x[..n] != y[..n] {
            return false;
        }
        at += n as u64;
    }
    true
}

/// The offset just after the last newline before `size` (0 if none): an
/// unfinished last line is read whole once its newline arrives.
pub(crate) fn after_last_newline(file: &File, size: u64) -> u64 {
    let mut end = size;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let part = &mut buf[..(end - start) as usize];
        if file.read_exact_at(part, start).is_err() {
            return size;
        }
        if let Some(i) = memchr::memrchr(b'\n', part) {
            return start + i as u64 + 1;
        }
        end = start;
    }
    0
}
