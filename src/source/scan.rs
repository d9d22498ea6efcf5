//! Finding and opening files, and deciding where to start in each: which
//! file is which across restarts, rotations, copies and truncations.
//!
//! - A file already open is recognised by device and inode: renamed, it is
//!   the same file, never a copy.
//! - A file with a checkpoint entry for its device and inode resumes there
//!   if its content is the one the entry describes (first bytes, and the
//!   bytes before the offset, see [`super::identity`]); otherwise its inode
//!   was reused and it is a new file.
//! - A new file may be the copy a copytruncate made. Only a content that
//!   the same inode lost by shrinking (or that a file being read still
//!   holds) can have a copy, and the CRC-32 of the content up to where
//!   reading had got decides: a copy is read only for what the truncation
//!   took away; a file that merely starts the same way is read whole.
//! - A file the globs no longer find is rotated: it stays open and is read
//!   until it has been idle for `rotate_wait`. Only a scan that could list
//!   every directory may find a file missing.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::budget::Permit;
use super::discover::Listing;
use super::identity::{self, crc_of_prefix, head_of, is_full, matches_entry, same_range};
use super::reader::OpenFile;
use super::tailer::{Dormant, Stamp, Tailer};
use super::{Chunk, TailMode};
use crate::batch::TrackedFile;
use crate::checkpoint::{Entry, FileId, Fingerprint, FINGERPRINT_BYTES};

/// Scans in a row that must miss a file before it is taken as rotated away.
pub const ORPHAN_AFTER_SCANS: u32 = 2;

/// How many truncated contents are remembered, waiting for their copy.
const TRUNCATED_KEPT: usize = 64;

pub use crate::checkpoint::Truncated;

/// Remembers a truncated content, keeping the list bounded.
pub fn remember(list: &mut Vec<Truncated>, t: Truncated) {
    if is_full(&t.fingerprint) && !list.contains(&t) {
        if list.len() >= TRUNCATED_KEPT {
            list.remove(0);
        }
        list.push(t);
    }
}

/// A content to find a start in: a file just found, or one whose content
/// started again.
pub struct Candidate<'a> {
    /// The file.
    pub file: &'a File,
    /// Its device and inode.
    pub id: FileId,
    /// Its size now.
    pub size: u64,
    /// Its first bytes now.
    pub head: Fingerprint,
    /// Its path, for logs.
    pub path: &'a Path,
    /// A checkpoint entry for its inode may hold its position.
    pub checkpoint: bool,
    /// `read_from = "end"` applies.
    pub skip_existing: bool,
}

/// Where to start in a content.
pub enum Start {
    /// Read from `offset`; `crc` is the CRC-32 of the bytes before it.
    At {
        /// The first byte to read.
        offset: u64,
        /// CRC-32 of the bytes before `offset`, when known.
        crc: Option<u32>,
    },
    /// A copy of the open file `of` being written: read nothing unless
    /// `of` is truncated.
    CopyOf {
        /// The original.
        of: FileId,
        /// A handle on it, to compare with as the copy grows.
        src: File,
    },
}

struct Found {
    path: PathBuf,
    file: File,
    id: FileId,
    size: u64,
    head: Fingerprint,
    permit: Permit,
}

fn id_of(meta: &std::fs::Metadata) -> FileId {
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

impl Tailer {
    /// Lists the matching files, opens new ones, and marks open files that
    /// no longer match as rotated. Returns the positions to record: where
    /// new files start, and checkpoint entries of files that are gone.
    pub fn scan(&mut self, now: Instant) -> Vec<Chunk> {
        let listing = self.discovery.scan();
        self.scan_listing(listing, now)
    }

    /// [`Tailer::scan`] with the listing given (tests give one with errors).
    pub(crate) fn scan_listing(&mut self, listing: Listing, now: Instant) -> Vec<Chunk> {
        let source = self.source.clone();
        let mut complete = listing.errors.is_empty();
        let mut failing = HashSet::new();
        for (path, e) in listing.errors {
            if !self.failing.contains(&path) {
                tracing::warn!(source, path = %path.display(), "cannot list directory: {e}; its files keep their positions, will try again at every scan");
            }
            failing.insert(path);
        }
        let open_ids: HashSet<FileId> = self.files.iter().map(|f| f.tracked.id).collect();
        let mut seen: HashMap<FileId, PathBuf> = HashMap::new();
        // New files, and closed ones that changed, to open.
        let mut to_open: Vec<(PathBuf, FileId)> = Vec::new();
        for path in listing.paths {
            // A stat needs no descriptor: only files with something to read
            // are opened.
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // Not a deletion: a file that cannot be looked at now
                    // (permissions, a stale NFS handle) is still there.
                    complete = false;
                    if !self.failing.contains(&path) {
                        tracing::warn!(source, path = %path.display(), "cannot look at file: {e}; it keeps its position, will try again at every scan");
                    }
                    failing.insert(path);
                    continue;
                }
            };
            let id = id_of(&meta);
            if seen.insert(id, path.clone()).is_some() || open_ids.contains(&id) {
                continue;
            }
            if let Some(d) = self.dormant.get_mut(&id) {
                d.entry.path = path.display().to_string();
                d.missing_scans = 0;
                d.seen_size = meta.len();
                // Reopened once it changes (its size, or its modification
                // or change time: rewritten to the same size); until it is
                // reopened, it counts as unchanged.
                if meta.len() == d.size && Stamp::of(&meta) == d.stamp {
                    continue;
                }
            }
            to_open.push((path, id));
        }
        let mut found = Vec::new();
        let mut waiting = false;
        for (path, id) in to_open {
            if waiting {
                break;
            }
            let Some(permit) = self.budget.try_take() else {
                // Read in turns: the others close what they have read.
                waiting = true;
                break;
            };
            let opened = File::open(&path).and_then(|f| f.metadata().map(|m| (f, m)));
            let (file, meta) = match opened {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // Not a deletion: too many open files, permissions, a
                    // stale NFS handle. It keeps its position.
                    if !self.failing.contains(&path) {
                        tracing::warn!(source, path = %path.display(), "cannot open file: {e}; it keeps its position, will try again at every scan");
                    }
                    failing.insert(path);
                    continue;
                }
            };
            if id_of(&meta) != id {
                // Replaced between the stat and the open: the next scan sees it.
                continue;
            }
            let head = head_of(&file, FINGERPRINT_BYTES);
            found.push(Found {
                path,
                file,
                id,
                size: meta.len(),
                head,
                permit,
            });
        }
        self.set_waiting(waiting);
        for p in self.failing.difference(&failing) {
            if p.exists() {
                tracing::info!(source, path = %p.display(), "can be read again");
            }
        }
        self.failing = failing;

        let mut chunks = Vec::new();
        if complete {
            self.missing_dormant(&seen, now, &mut chunks);
        }
        for f in self.files.iter_mut() {
            match seen.get(&f.tracked.id) {
                Some(path) => {
                    f.path = path.clone();
                    f.orphan = false;
                    f.missing_scans = 0;
                }
                // A rename racing the scan (listed under the old name,
                // opened after the rename) can hide a file once: only a
                // file missing from two complete scans in a row is rotated.
                None if complete => {
                    f.missing_scans += 1;
                    if f.missing_scans >= ORPHAN_AFTER_SCANS && !f.orphan {
                        f.orphan = true;
                        tracing::info!(source, path = %f.path.display(), "file was rotated away or deleted: reading it until it has been idle for rotate_wait");
                    }
                }
                None => {}
            }
        }

        if complete && !self.recovered {
            self.recovered = true;
            self.recover_entries(&seen, now, &mut chunks);
        }
        let skip_existing = self.initial && self.read_from_end;
        self.initial = false;
        for f in found {
            let Found {
                path,
                file,
                id,
                size,
                head,
                permit,
            } = f;
            let candidate = Candidate {
                file: &file,
                id,
                size,
                head,
                path: &path,
                checkpoint: true,
                skip_existing,
            };
            let dormant = self.dormant.remove(&id);
            let known = dormant
                .as_ref()
                .map(|d| &d.entry)
                .or_else(|| self.start.entries.get(&id))
                .cloned();
            let lost = known
                .as_ref()
                .and_then(|e| self.lost_at_open(&candidate, e));
            let start = match &dormant {
                Some(d) => self.start_after_close(&candidate, &d.entry),
                None => self.start_of(&candidate),
            };
            let file = Arc::new(file);
            let tracked = Arc::new(TrackedFile::new(
                id,
                path.display().to_string(),
                source.clone(),
            ));
            tracked.set_lost(lost);
            let (offset, crc) = match &start {
                Start::At { offset, crc } => (*offset, *crc),
                Start::CopyOf { .. } => (0, None),
            };
            match OpenFile::open(file, path.clone(), tracked, offset, crc, now) {
                Ok(mut f) => {
                    f.permit = Some(permit);
                    // An empty file is not known yet: what is written to it
                    // first (by `cp`, perhaps) decides what it is.
                    f.fresh = size == 0;
                    match start {
                        Start::CopyOf { of, src } => f.make_copy_of(of, src, size, now),
                        Start::At { .. } => {
                            tracing::info!(source, path = %path.display(), offset, "following file");
                            chunks.push(f.position());
                        }
                    }
                    self.files.push(f);
                }
                Err(e) => {
                    tracing::warn!(source, path = %path.display(), "cannot read file: {e}; will try again");
                    self.failing.insert(path);
                }
            }
        }
        if self.mode == TailMode::Spool {
            self.files.sort_by(|a, b| a.path.cmp(&b.path));
        }
        chunks
    }

    /// What a known file (a checkpoint entry, or a file closed while idle)
    /// lost while it was not open: its old content if it was truncated or
    /// rewritten meanwhile, else what its entry still kept of an earlier
    /// truncation. Remembered for its copy, and kept in its entry until the
    /// copy is found.
    fn lost_at_open(&mut self, c: &Candidate<'_>, entry: &Entry) -> Option<Truncated> {
        let now_lost = match entry.content_crc {
            Some(crc) if entry.offset > 0 && !matches_entry(c.file, c.size, entry) => {
                Some(Truncated {
                    fingerprint: entry.fingerprint,
                    offset: entry.offset,
                    crc,
                })
            }
            _ => None,
        };
        let lost = now_lost.or(entry.truncated);
        if let Some(t) = lost {
            remember(&mut self.truncated, t);
        }
        lost
    }

    /// Where to start in a file closed while it was idle, now reopened
    /// because it changed: where it was, if it still holds what was read;
    /// else (truncated or rewritten meanwhile) as a new content.
    fn start_after_close(&mut self, c: &Candidate<'_>, entry: &Entry) -> Start {
        if entry.offset == 0 {
            // Nothing was read: what it holds now decides what it is.
            return self.start_of(&Candidate {
                checkpoint: false,
                ..*c
            });
        }
        if matches_entry(c.file, c.size, entry) {
            return Start::At {
                offset: entry.offset,
                crc: entry.content_crc,
            };
        }
        tracing::warn!(path = %c.path.display(), "file shrank or was rewritten while it was closed: reading it again from the start");
        self.start_of(&Candidate {
            checkpoint: false,
            ..*c
        })
    }

    /// Files closed while idle that two complete scans in a row did not find:
    /// renamed out of the globs (read what they got since, until idle) or
    /// gone (forgotten).
    fn missing_dormant(
        &mut self,
        seen: &HashMap<FileId, PathBuf>,
        now: Instant,
        chunks: &mut Vec<Chunk>,
    ) {
        let missing: Vec<FileId> = self
            .dormant
            .iter_mut()
            .filter(|(id, _)| !seen.contains_key(id))
            .filter_map(|(id, d)| {
                d.missing_scans += 1;
                (d.missing_scans >= ORPHAN_AFTER_SCANS).then_some(*id)
            })
            .collect();
        for id in missing {
            let entry = self.dormant[&id].entry.clone();
            match find_by_inode(&entry) {
                Lookup::Found(path, file, offset) => {
                    let Some(permit) = self.budget.try_take() else {
                        self.set_waiting(true);
                        continue;
                    };
                    self.dormant.remove(&id);
                    let crc = (offset == entry.offset)
                        .then_some(entry.content_crc)
                        .flatten();
                    if let Some(mut f) = self.open_rotated(&entry, path, file, offset, crc, now) {
                        f.permit = Some(permit);
                        self.files.push(f);
                    }
                }
                Lookup::Gone => {
                    self.dormant.remove(&id);
                    chunks.push(forget(&entry, &self.source));
                }
                Lookup::Unknown(e) => {
                    tracing::warn!(source = %self.source, path = %entry.path, "cannot look for a file that was being read: {e}; it keeps its position");
                }
            }
        }
    }

    /// Opens a file found by inode outside the globs, to read its rest
    /// until it has been idle for `rotate_wait`.
    fn open_rotated(
        &self,
        entry: &Entry,
        path: PathBuf,
        file: File,
        offset: u64,
        crc: Option<u32>,
        now: Instant,
    ) -> Option<OpenFile> {
        let file = Arc::new(file);
        let tracked = Arc::new(TrackedFile::new(
            entry.id,
            path.display().to_string(),
            self.source.clone(),
        ));
        match OpenFile::open(file, path.clone(), tracked, offset, crc, now) {
            Ok(mut f) => {
                tracing::info!(source = %self.source, old = %entry.path, path = %path.display(), offset, "file was renamed out of the globs while it was closed: reading the rest of it");
                f.missing_scans = ORPHAN_AFTER_SCANS;
                f.orphan = true;
                Some(f)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read file: {e}");
                None
            }
        }
    }

    /// The copy of a truncated content was found: its original need not
    /// keep it in its checkpoint entry any more.
    pub(super) fn copy_found(&self, t: &Truncated) {
        for f in &self.files {
            if f.tracked.lost().as_ref() == Some(t) {
                f.tracked.set_lost(None);
            }
        }
    }

    /// Where to start in a content (see the module's comment).
    pub(super) fn start_of(&mut self, c: &Candidate<'_>) -> Start {
        let at = |offset, crc| Start::At { offset, crc };
        if c.checkpoint {
            if let Some(entry) = self.start.entries.get(&c.id) {
                // At 0 nothing was read: that says nothing of what it is now.
                if entry.offset == 0 {
                } else if matches_entry(c.file, c.size, entry) {
                    return at(entry.offset, entry.content_crc);
                } else {
                    tracing::warn!(
                    path = %c.path.display(),
                    "file is not the one its checkpoint describes (its inode was reused, or it was rewritten while tailhook was stopped): reading it as a new file"
                    );
                }
            }
        }
        if self.mode == TailMode::Spool {
            return at(0, None);
        }
        if is_full(&c.head) {
            // The copy of a content a truncation took away: read what the
            // truncation took that had not been read yet. Of several that
            // fit (the same content remembered from a checkpoint entry and
            // from an earlier run), the least read: duplicates, never a loss.
            let pick = self
                .truncated
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    t.fingerprint == c.head
                        && t.offset <= c.size
                        && crc_of_prefix(c.file, t.offset).ok().flatten() == Some(t.crc)
                })
                .min_by_key(|(_, t)| t.offset)
                .map(|(i, _)| i);
            if let Some(i) = pick {
                let t = self.truncated.remove(i);
                self.copy_found(&t);
                tracing::info!(path = %c.path.display(), offset = t.offset, "file is a copy of a truncated file (copytruncate): reading it from where the original had been read");
                return at(t.offset, Some(t.crc));
            }
        }
        if let Some(s) = self.copy_of_closed(c) {
            return s;
        }
        if let Some(s) = self.copy_of_open(c) {
            return s;
        }
        if c.skip_existing {
            at(crate::line_end::after_last_newline(c.file, c.size), None)
        } else {
            at(0, None)
        }
    }

    /// Whether a content starts with what was read of a file closed while
    /// idle: then it is a copy of it (copytruncate, the original not
    /// reopened yet), and only what follows is new to this destination.
    fn copy_of_closed(&self, c: &Candidate<'_>) -> Option<Start> {
        if !is_full(&c.head) {
            return None;
        }
        let prefixes: Vec<(u64, u32)> = self
            .dormant
            .values()
            .filter(|d| {
                d.entry.fingerprint == c.head && d.entry.offset > 0 && d.entry.offset <= c.size
            })
            .filter_map(|d| Some((d.entry.offset, d.entry.content_crc?)))
            .collect();
        let (offset, crc) = prefixes[identity::first_prefix_match(c.file, &prefixes)?];
        tracing::info!(path = %c.path.display(), offset, "file is a copy of a closed file (copytruncate): reading it from where that file had been read");
        Some(Start::At {
            offset,
            crc: Some(crc),
        })
    }

    /// Whether a content is a copy of a file being read: a prefix of it
    /// still being written, or a copy of it that was truncated meanwhile.
    fn copy_of_open(&self, c: &Candidate<'_>) -> Option<Start> {
        if c.size == 0 {
            // Nothing to compare yet: the first bytes written decide.
            return None;
        }
        let originals = self
            .files
            .iter()
            .filter(|o| o.copy.is_none() && !o.fresh && o.tracked.id != c.id);
        for o in originals {
            let Some(crc) = o.content_crc() else { continue };
            let (at, fp, original) = (o.framed_to(), o.fingerprint(), o.file());
            if at == 0 {
                // Nothing read from it: nothing a copy could spare.
                continue;
            }
            // Compare contents only where the first bytes already agree: with
            // those read from the original, or, for a copy shorter than them,
            // with the original's first bytes now.
            let agree = if is_full(&c.head) {
                c.head == fp
            } else {
                head_of(original, c.head.len as usize) == c.head
            };
            if !agree {
                continue;
            }
            let copy_from_at =
                || c.size >= at && crc_of_prefix(c.file, at).ok().flatten() == Some(crc);
            let now = original.metadata().map(|m| m.len()).unwrap_or(0);
            if !o.intact() {
                // The original was truncated (or rewritten) since it was read:
                // the copy holds what had not been read yet. Start there.
                if copy_from_at() {
                    tracing::info!(path = %c.path.display(), offset = at, "file is a copy of a truncated file (copytruncate): reading it from where the original had been read");
                    return Some(Start::At {
                        offset: at,
                        crc: Some(crc),
                    });
                }
                continue;
            }
            // While it is a prefix of the original, it holds nothing new: wait
            // for the original to be truncated.
            let prefix = if c.size >= at {
                c.size <= now && copy_from_at() && same_range(c.file, original, at, c.size)
            } else {
                same_range(c.file, original, 0, c.size)
            };
            if prefix {
                if let Ok(src) = original.try_clone() {
                    tracing::info!(path = %c.path.display(), "file is a copy of a file being read: it is read only if that file is truncated");
                    return Some(Start::CopyOf {
                        of: o.tracked.id,
                        src,
                    });
                }
            }
            // The original may have been truncated while it was compared.
            if !o.intact() && copy_from_at() {
                tracing::info!(path = %c.path.display(), offset = at, "file is a copy of a truncated file (copytruncate): reading it from where the original had been read");
                return Some(Start::At {
                    offset: at,
                    crc: Some(crc),
                });
            }
        }
        None
    }

    /// At the first complete scan: checkpoint entries of this source whose
    /// file the globs no longer find. A file renamed while tailhook was
    /// stopped is found again by device and inode in its directory and read
    /// to its end; one that is surely gone is forgotten, and its content
    /// remembered in case a copy of it (copytruncate while stopped) turns up.
    fn recover_entries(
        &mut self,
        seen: &HashMap<FileId, PathBuf>,
        now: Instant,
        chunks: &mut Vec<Chunk>,
    ) {
        let start = self.start.clone();
        let gone = |e: &Entry| Truncated {
            fingerprint: e.fingerprint,
            offset: e.offset,
            crc: e.content_crc.unwrap_or_default(),
        };
        for entry in start.entries.values() {
            if !entry.source.is_empty() && entry.source != self.source {
                continue;
            }
            if let Some(t) = entry.truncated {
                // Its copy had not been found when tailhook stopped.
                remember(&mut self.truncated, t);
            }
            if self.files.iter().any(|f| f.tracked.id == entry.id) {
                continue;
            }
            if seen.contains_key(&entry.id) {
                // Opened from its entry (see `lost_at_open`).
                continue;
            }
            match find_by_inode(entry) {
                Lookup::Found(path, file, offset) => {
                    let Some(permit) = self.budget.try_take() else {
                        // Looked for again once a permit is free.
                        self.set_waiting(true);
                        self.dormant.insert(
                            entry.id,
                            Dormant {
                                entry: entry.clone(),
                                size: entry.offset,
                                seen_size: entry.offset,
                                stamp: Stamp::default(),
                                missing_scans: ORPHAN_AFTER_SCANS,
                            },
                        );
                        continue;
                    };
                    let crc = (offset == entry.offset)
                        .then_some(entry.content_crc)
                        .flatten();
                    if let Some(mut f) = self.open_rotated(entry, path, file, offset, crc, now) {
                        f.permit = Some(permit);
                        self.files.push(f);
                    }
                }
                Lookup::Gone => {
                    if entry.content_crc.is_some() {
                        remember(&mut self.truncated, gone(entry));
                    }
                    chunks.push(forget(entry, &self.source));
                }
                Lookup::Unknown(e) => {
                    tracing::warn!(source = %self.source, path = %entry.path, "cannot look for a file that was being read: {e}; it keeps its position");
                }
            }
        }
    }
}

/// The position that drops a file's checkpoint entry: it is gone.
fn forget(entry: &Entry, source: &str) -> Chunk {
    Chunk {
        file: Arc::new(TrackedFile::new(
            entry.id,
            entry.path.clone(),
            source.to_string(),
        )),
        events: Vec::new(),
        dead_letters: Vec::new(),
        end: entry.offset,
        fingerprint: entry.fingerprint,
        content_crc: entry.content_crc,
        closed: true,
        window: Arc::default(),
        lost: None,
    }
}

enum Lookup {
    /// Where it is, and where to start in it.
    Found(PathBuf, File, u64),
    Gone,
    Unknown(std::io::Error),
}

/// The file an entry describes, looked for by device and inode in the
/// directory it was in, if it is still there and still the same content.
fn find_by_inode(entry: &Entry) -> Lookup {
    let Some(dir) = Path::new(&entry.path).parent() else {
        return Lookup::Gone;
    };
    let list = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Gone,
        Err(e) => return Lookup::Unknown(e),
    };
    for e in list {
        let e = match e {
            Ok(e) => e,
            Err(e) => return Lookup::Unknown(e),
        };
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_file() && id_of(&meta) == entry.id {
            return match File::open(e.path()) {
                Ok(file) if matches_entry(&file, meta.len(), entry) => {
                    Lookup::Found(e.path(), file, entry.offset)
                }
                // The same first bytes, other bytes before the offset: the
                // file was truncated and written again while tailhook was
                // stopped. What it holds now is new.
                Ok(file) if head_of(&file, FINGERPRINT_BYTES) == entry.fingerprint => {
                    Lookup::Found(e.path(), file, 0)
                }
                Ok(_) => Lookup::Gone,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Lookup::Gone,
                Err(err) => Lookup::Unknown(err),
            };
        }
    }
    Lookup::Gone
}
