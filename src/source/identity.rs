//! Which file is which: every check that reads a file's bytes to tell one
//! content from another lives here.
//!
//! While a file is open its descriptor is its identity (an inode cannot be
//! reused while it is held). Across restarts, device and inode name a file,
//! and its content confirms it: the first bytes ([`Fingerprint`] of up to
//! [`FINGERPRINT_BYTES`]) and the bytes just before the checkpoint's offset
//! (the entry's `tail`). Real logs start every line alike, so the first bytes
//! alone tell little; the bytes before the offset end the last line read,
//! which is unique to that content.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::checkpoint::{Entry, Fingerprint, FINGERPRINT_BYTES};

/// How many bytes before an offset confirm that a file still holds the
/// content read up to there.
pub const TAIL_BYTES: usize = 256;

/// The fingerprint of a file's first bytes (up to `len`, at most [`FINGERPRINT_BYTES`]).
pub fn head_of(file: &File, len: usize) -> Fingerprint {
    let mut head = vec![0u8; len.min(FINGERPRINT_BYTES)];
    let n = read_fully_at(file, &mut head, 0).unwrap_or(0);
    Fingerprint::of(&head[..n])
}

/// Whether a fingerprint covers the full [`FINGERPRINT_BYTES`].
pub fn is_full(f: &Fingerprint) -> bool {
    f.len as usize == FINGERPRINT_BYTES
}

/// The fingerprint of the (up to) [`TAIL_BYTES`] bytes before `offset`;
/// `None` if the file is shorter than `offset` or cannot be read.
pub fn tail_at(file: &File, offset: u64) -> Option<Fingerprint> {
    let len = offset.min(TAIL_BYTES as u64) as usize;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset - len as u64).ok()?;
    Some(Fingerprint::of(&buf))
}

/// Whether the file now holds the content `entry` describes: the same first
/// bytes, at least `offset` bytes, and (when the entry knows them) the same
/// bytes before `offset`.
pub fn matches_entry(file: &File, size: u64, entry: &Entry) -> bool {
    entry.offset <= size
        && head_of(file, entry.fingerprint.len as usize) == entry.fingerprint
        && entry
            .tail
            .is_none_or(|t| tail_at(file, entry.offset) == Some(t))
}

/// CRC-32 of a file's first `len` bytes; `None` if it is shorter.
pub fn crc_of_prefix(file: &File, len: u64) -> io::Result<Option<u32>> {
    const STEP: usize = 256 * 1024;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; STEP.min(len as usize)];
    let mut at = 0u64;
    while at < len {
        let want = (len - at).min(STEP as u64) as usize;
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Ok(None);
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(Some(h.finalize()))
}

/// Which of `prefixes` (offset, CRC-32 of the bytes before it) the file
/// starts with, if any: one pass over the file, however many there are.
pub fn first_prefix_match(file: &File, prefixes: &[(u64, u32)]) -> Option<usize> {
    let mut order: Vec<usize> = (0..prefixes.len()).collect();
    order.sort_by_key(|&i| prefixes[i].0);
    let mut h = crc32fast::Hasher::new();
    let mut at = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    for i in order {
        let (offset, crc) = prefixes[i];
        while at < offset {
            let want = (offset - at).min(buf.len() as u64) as usize;
            match file.read_at(&mut buf[..want], at) {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    h.update(&buf[..n]);
                    at += n as u64;
                }
            }
        }
        if h.clone().finalize() == crc {
            return Some(i);
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

/// Reads into `buf` from `offset` until it is full or the file ends; returns
/// how many bytes were read.
pub fn read_fully_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The bytes of a chunk and the few before it: enough to say, for any
/// offset an event of the chunk commits, what the bytes before it are,
/// without keeping the file open until the acknowledgement.
#[derive(Debug, Clone, Default)]
pub struct Window {
    before: bytes::Bytes,
    data: bytes::Bytes,
    start: u64,
    /// CRC-32 of the file's bytes before `start`, when known.
    crc: Option<u32>,
}

impl Window {
    /// `data` read from `start`, after the bytes `before`; `crc` is the
    /// CRC-32 of the file's bytes before `start`, when known.
    pub fn new(before: bytes::Bytes, data: bytes::Bytes, start: u64, crc: Option<u32>) -> Window {
        Window {
            before,
            data,
            start,
            crc,
        }
    }

    /// The offset the window's data starts at, and where it ends.
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.start + self.data.len() as u64)
    }

    /// CRC-32 of the file's bytes before `offset`, if the window reaches it
    /// and knows the CRC where it starts: what a checkpoint at an event in
    /// the middle of a chunk needs to recognise a copy of the file later.
    pub fn crc_at(&self, offset: u64) -> Option<u32> {
        if offset < self.start || offset > self.start + self.data.len() as u64 {
            return None;
        }
        let mut h = crc32fast::Hasher::new_with_initial_len(self.crc?, self.start);
        h.update(&self.data[..(offset - self.start) as usize]);
        Some(h.finalize())
    }

    /// What [`tail_at`] would say of the file at `offset`, if the window
    /// reaches it.
    pub fn tail_at(&self, offset: u64) -> Option<Fingerprint> {
        if offset < self.start || offset > self.start + self.data.len() as u64 {
            return None;
        }
        let upto = (offset - self.start) as usize;
        if upto >= TAIL_BYTES {
            return Some(Fingerprint::of(&self.data[upto - TAIL_BYTES..upto]));
        }
        let need = TAIL_BYTES - upto;
        let mut buf = Vec::with_capacity(TAIL_BYTES);
        buf.extend_from_slice(&self.before[self.before.len().saturating_sub(need)..]);
        buf.extend_from_slice(&self.data[..upto]);
        Some(Fingerprint::of(&buf))
    }
}

/// The last [`TAIL_BYTES`] bytes consumed from a file, kept as reading goes
/// on, so that a rewrite of what was read can be seen (and its fingerprint
/// recorded) without reading the file again.
#[derive(Debug, Default, Clone)]
pub struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    /// The tail of a file read up to `offset`, from the file itself.
    pub fn read(file: &File, offset: u64) -> io::Result<Tail> {
        let len = offset.min(TAIL_BYTES as u64) as usize;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, offset - len as u64)?;
        Ok(Tail { bytes })
    }

    /// Takes in bytes consumed after those already seen.
    pub fn push(&mut self, data: &[u8]) {
        if data.len() >= TAIL_BYTES {
            self.bytes.clear();
            self.bytes
                .extend_from_slice(&data[data.len() - TAIL_BYTES..]);
        } else {
            let keep = TAIL_BYTES - data.len();
            if self.bytes.len() > keep {
                self.bytes.drain(..self.bytes.len() - keep);
            }
            self.bytes.extend_from_slice(data);
        }
    }

    /// The bytes kept.
    pub fn bytes(&self) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(&self.bytes)
    }

    /// Forgets everything (reading starts again at 0).
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// Whether the file still holds these bytes just before `offset`.
    pub fn still_in(&self, file: &File, offset: u64) -> io::Result<bool> {
        if self.bytes.is_empty() {
            return Ok(true);
        }
        let mut now = vec![0u8; self.bytes.len()];
        let n = read_fully_at(file, &mut now, offset - self.bytes.len() as u64)?;
        Ok(n == now.len() && now == self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tail_keeps_the_last_bytes_and_sees_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let line = |i: usize| format!("{}{i:06}\n", "x".repeat(300));
        let mut f = File::create(&path).unwrap();
        let mut tail = Tail::default();
        let mut at = 0u64;
        for i in 0..5 {
            let l = line(i);
            f.write_all(l.as_bytes()).unwrap();
            // In pieces, as reads see them.
            tail.push(&l.as_bytes()[..10]);
            tail.push(&l.as_bytes()[10..]);
            at += l.len() as u64;
        }
        let r = File::open(&path).unwrap();
        assert!(tail.still_in(&r, at).unwrap());
        assert_eq!(tail_at(&r, at), Some(Fingerprint::of(&tail.bytes)));
        assert_eq!(Tail::read(&r, at).unwrap().bytes, tail.bytes);
        // A window over the bytes read says the same, at every line's end.
        let all = std::fs::read(&path).unwrap();
        let w = Window::new(
            bytes::Bytes::copy_from_slice(&all[..700]),
            bytes::Bytes::copy_from_slice(&all[700..]),
            700,
            Some(crc32fast::hash(&all[..700])),
        );
        for end in [700, 705, 900, 1000, all.len() as u64 as usize] {
            assert_eq!(w.tail_at(end as u64), tail_at(&r, end as u64), "{end}");
            assert_eq!(
                w.crc_at(end as u64),
                crc_of_prefix(&r, end as u64).unwrap(),
                "{end}"
            );
        }
        assert_eq!(w.crc_at(699), None);
        assert_eq!(w.tail_at(699), None);
        // The same first bytes, other lines: the tail tells them apart.
        let mut f = File::create(&path).unwrap();
        for i in 10..15 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
        assert!(!tail.still_in(&r, at).unwrap());
        assert_ne!(tail_at(&r, at), Some(Fingerprint::of(&tail.bytes)));
    }
}
