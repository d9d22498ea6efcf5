//! Where a file's last complete line ends: the one backward scan for a
//! newline, for the tailer (an unfinished last line waits for its newline)
//! and for the spool and the dead-letter file (a line a crash left
//! unfinished is cut).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The offset just after the last newline before `size` (0 if none): an
/// unfinished last line is read whole once its newline arrives. A file that
/// cannot be read gives `size`.
pub fn after_last_newline(file: &File, size: u64) -> u64 {
    last_line_end(file, size).unwrap_or(size)
}

/// The offset just after the last newline before `size`, or 0 if there is
/// none, scanning backward 64 KiB at a time.
pub fn last_line_end(file: &File, size: u64) -> io::Result<u64> {
    let mut end = size;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let part = &mut buf[..(end - start) as usize];
        file.read_exact_at(part, start)?;
        if let Some(i) = memchr::memrchr(b'\n', part) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}
