//! What the spool does not keep for a destination that no longer runs:
//! the bytes of each spooled source that it had not acknowledged. They are
//! deleted once the destinations that remain have them.

use std::collections::HashSet;
use std::path::Path;

use crate::checkpoint::{Checkpoints, FileId, Fingerprint};
use crate::config::Config;
use crate::spool::Spool;

/// Warns, for each spooled source, how much of it a destination that no
/// longer runs had not acknowledged: the spool does not keep it for it.
pub(super) fn warn_unacknowledged(
    what: &str,
    data_dir: &Path,
    destination: &str,
    sources: &[String],
) {
    let (checkpoints, _) = Checkpoints::load(data_dir, destination);
    for source in sources {
        let bytes = unacknowledged(data_dir, source, &checkpoints);
        let words = format!("{what}: the spool holds {bytes} bytes of source `{source}` that it has not acknowledged; they are deleted once the remaining destinations have them. Its checkpoint is kept: added back, it starts at the oldest segment still in the spool, where it was in the segments it had begun; what was deleted meanwhile is not sent to it");
        if bytes == 0 {
            tracing::info!(destination, source = %source, bytes, "{words}");
        } else {
            tracing::warn!(destination, source = %source, bytes, "{words}");
        }
    }
}

/// The bytes of `source`'s spool segments past what `checkpoints` has
/// acknowledged (segment headers aside).
fn unacknowledged(data_dir: &Path, source: &str, checkpoints: &Checkpoints) -> u64 {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt;
    let Ok(segments) = crate::spool::segment::segments(&Spool::dir_of(data_dir, source)) else {
        return 0;
    };
    let mut total = 0;
    for (_, path) in segments {
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        let mut head = Vec::with_capacity(4096);
        if (&mut file).take(4096).read_to_end(&mut head).is_err() {
            continue;
        }
        let header = memchr::memchr(b'\n', &head).map_or(head.len(), |i| i + 1) as u64;
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let acked = checkpoints
            .get(id)
            .filter(|e| {
                let n = (e.fingerprint.len as usize).min(head.len());
                Fingerprint::of(&head[..n]) == e.fingerprint
            })
            .map_or(0, |e| e.offset);
        total += meta.len().saturating_sub(acked.max(header));
    }
    total
}

/// At start: a checkpoint file of a destination that is not configured
/// (removed while tailhook was stopped) is named, with what the spool no
/// longer keeps for it.
pub(super) fn warn_stray_checkpoints(config: &Config) {
    let dir = config.data_dir.join("checkpoints");
    let Ok(list) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut stray: Vec<String> = list
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_string)
        })
        .filter(|name| !config.destinations.iter().any(|d| d.name == *name))
        .collect();
    stray.sort();
    for name in stray {
        let path = Checkpoints::file_for(&config.data_dir, &name);
        let (checkpoints, _) = Checkpoints::load(&config.data_dir, &name);
        let read: HashSet<&str> = checkpoints
            .entries()
            .values()
            .map(|e| e.source.as_str())
            .collect();
        let sources: Vec<String> = config
            .sources
            .iter()
            .filter(|s| s.is_spooled() && read.contains(s.name.as_str()))
            .map(|s| s.name.clone())
            .collect();
        let what = format!(
            "checkpoint file {} belongs to no configured destination (`{name}`)",
            path.display()
        );
        if sources.is_empty() {
            tracing::warn!(destination = %name, "{what}: it is kept; added back, `{name}` resumes its files where it was");
        } else {
            warn_unacknowledged(&what, &config.data_dir, &name, &sources);
        }
    }
}
