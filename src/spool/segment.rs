//! The segment format: `segment-<seq>.v1.ndjson` files whose first line is
//! a header naming the format, the source, the segment and when it was
//! made, then event lines.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The segment format version, part of every segment's name and header.
pub const SEGMENT_VERSION: &str = "v1";

/// How a segment's first line starts: `{"tailhook_spool":"v1",...}`, naming
/// the format, the source, the segment and when it was made. Readers skip
/// it; it makes every segment's first bytes unique, so a segment is never
/// mistaken for an earlier one that had the same inode and the same events.
pub const HEADER_PREFIX: &[u8] = b"{\"tailhook_spool\":";

pub(super) fn segment_header(source: &str, seq: u64) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut h = HEADER_PREFIX.to_vec();
    let rest = serde_json::json!({
        "source": source,
        "segment": seq,
        "created_ns": nanos.to_string(),
    })
    .to_string();
    h.extend_from_slice(format!("\"{SEGMENT_VERSION}\",").as_bytes());
    h.extend_from_slice(&rest.as_bytes()[1..]);
    h.push(b'\n');
    h
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("segment-{seq:016}.{SEGMENT_VERSION}.ndjson"))
}

/// The glob of a source's segments in `dir`, for the tailer.
pub fn glob(dir: &Path) -> String {
    format!(
        "{}/segment-*.{SEGMENT_VERSION}.ndjson",
        globset::escape(&dir.to_string_lossy())
    )
}

/// A source's segments in order.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let suffix = format!(".{SEGMENT_VERSION}.ndjson");
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(seq) = name
            .strip_prefix("segment-")
            .and_then(|r| r.strip_suffix(&suffix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Cuts an unfinished last line (a crash during a write: never acknowledged)
/// and returns the segment's length.
pub(super) fn repair(path: &Path) -> io::Result<u64> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let size = file.metadata()?.len();
    let end = crate::line_end::after_last_newline(&file, size);
    if end < size {
        tracing::warn!(path = %path.display(), bytes = size - end, "spool segment ends in an unfinished line (a crash while writing it, before it was acknowledged): cutting it");
        file.set_len(end)?;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SpoolConfig;
    use crate::spool::Spool;

    #[test]
    fn a_torn_last_line_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Spool::dir_of(dir.path(), "s");
        fs::create_dir_all(&seg).unwrap();
        let path = segment_path(&seg, 3);
        fs::write(&path, b"{\"a\":1}\n{\"b\":").unwrap();
        let spool = Spool::open(dir.path(), SpoolConfig { max_bytes: 1 << 20 }, &["s"]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"a\":1}\n");
        assert_eq!(spool.used_bytes(), 8);
        assert_eq!(segments(&seg).unwrap(), vec![(3, path)]);
    }
}
