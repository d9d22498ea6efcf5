//! `tailhook status`: how far each destination is behind, read from disk.
//!
//! For each destination and each source it reads, the files the source's
//! globs match now (or its spool segments) are compared with the
//! destination's checkpoint: a file's bytes past its acknowledged offset are
//! behind, and a file the checkpoint does not know (or knows with other
//! content: truncated, or a reused inode) is behind by its whole size. The
//! dead-letter files and the spool are counted too.
//!
//! It only reads: no daemon is needed, and it is safe while one runs. A
//! running daemon replaces its checkpoint files by rename and deletes
//! delivered segments at any time, so each file is read once and one that
//! is gone when it is opened counts as gone; the answer is a snapshot.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use crate::checkpoint::{Checkpoints, FileId};
use crate::config::{Config, DestinationConfig, Input, ReadFrom, SourceConfig};
use crate::sink::dead_letter::{DeadLetter, Waiting};
use crate::source::discover::Discovery;
use crate::source::identity;
use crate::spool::Spool;

/// Prints the status of every destination of `config` on stdout, in words
/// or (with `json`) as one JSON object; returns exit 0 when every
/// destination is caught up, else 1.
pub fn run(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let report = Report::of(config)?;
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.to_string()
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(if report.caught_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The status of every destination, and the spool's use.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Every destination is caught up.
    pub caught_up: bool,
    /// By destination, in config order.
    pub destinations: Vec<DestinationStatus>,
    /// The spool, when a source uses it.
    pub spool: Option<SpoolStatus>,
}

/// How far one destination is behind.
#[derive(Debug, Serialize)]
pub struct DestinationStatus {
    /// Its name.
    pub name: String,
    /// Nothing behind, and nothing that could not be read.
    pub caught_up: bool,
    /// Bytes its sources hold that it has not had acknowledged.
    pub behind_bytes: u64,
    /// Files (and spool segments) with bytes it has not had acknowledged.
    pub behind_files: u64,
    /// Each source it reads.
    pub sources: Vec<SourceStatus>,
    /// Its dead-letter files.
    pub dead_letters: DeadLetters,
    /// What could not be read, in words; a destination with problems is
    /// not taken as caught up.
    pub problems: Vec<String>,
}

/// How far one destination is behind on one source.
#[derive(Debug, Serialize)]
pub struct SourceStatus {
    /// The source's name.
    pub name: String,
    /// Its `type`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Read through the spool (its files are spool segments).
    pub spooled: bool,
    /// Files (or segments) it holds now.
    pub files: u64,
    /// Of those, the ones with bytes not acknowledged.
    pub behind_files: u64,
    /// Bytes not acknowledged.
    pub behind_bytes: u64,
}

/// A destination's dead letters: events waiting for `dead-letter resend`.
#[derive(Debug, Serialize)]
pub struct DeadLetters {
    /// The live dead-letter file.
    pub path: PathBuf,
    /// Events in it and in any file a `resend` is working through.
    pub events: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The spool's use.
#[derive(Debug, Serialize)]
pub struct SpoolStatus {
    /// `<data_dir>/spool`.
    pub path: PathBuf,
    /// Bytes of the segments of the spooled sources.
    pub bytes: u64,
    /// `spool.max_bytes`.
    pub max_bytes: u64,
    /// Segment files.
    pub segments: u64,
}

impl Report {
    /// Reads the status of every destination of `config` from disk.
    pub fn of(config: &Config) -> anyhow::Result<Report> {
        let mut destinations = Vec::new();
        let mut listed = Vec::new();
        for src in &config.sources {
            listed.push(
                list(config, src)
                    .map_err(|e| anyhow::anyhow!("source `{}`: invalid glob: {e}", src.name))?,
            );
        }
        for d in &config.destinations {
            destinations.push(destination(config, d, &listed));
        }
        let spool = spool(config, &listed);
        Ok(Report {
            caught_up: destinations.iter().all(|d| d.caught_up),
            destinations,
            spool,
        })
    }
}

/// The files a source holds now: the files its globs match, or its spool
/// segments, each with its identity and size.
struct Listing {
    files: Vec<Found>,
    problems: Vec<String>,
}

struct Found {
    file: File,
    id: FileId,
    size: u64,
}

fn list(config: &Config, src: &SourceConfig) -> Result<Listing, globset::Error> {
    let (include, exclude) = match &src.input {
        Input::File(f) => (f.include.clone(), f.exclude.clone()),
        _ => (
            vec![crate::spool::segment::glob(&Spool::dir_of(
                &config.data_dir,
                &src.name,
            ))],
            Vec::new(),
        ),
    };
    let scan = Discovery::new(&include, &exclude)?.scan();
    let mut out = Listing {
        files: Vec::new(),
        problems: scan
            .errors
            .iter()
            .map(|(p, e)| format!("source `{}`: cannot look in {}: {e}", src.name, p.display()))
            .collect(),
    };
    for path in scan.paths {
        let opened = File::open(&path).and_then(|f| {
            let m = f.metadata()?;
            Ok((f, m))
        });
        match opened {
            Ok((file, m)) => out.files.push(Found {
                file,
                id: FileId {
                    dev: m.dev(),
                    ino: m.ino(),
                },
                size: m.len(),
            }),
            // Rotated away or delivered and deleted since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.problems.push(format!(
                "source `{}`: cannot read {}: {e}",
                src.name,
                path.display()
            )),
        }
    }
    Ok(out)
}

fn destination(config: &Config, d: &DestinationConfig, listed: &[Listing]) -> DestinationStatus {
    let (checkpoints, problem) = Checkpoints::load(&config.data_dir, &d.name);
    let mut problems: Vec<String> = problem.iter().map(ToString::to_string).collect();
    // As at the daemon's first start: with `read_from = "end"`, what the
    // files hold before a checkpoint exists is skipped, not behind.
    let first_start =
        problem.is_none() && !Checkpoints::file_for(&config.data_dir, &d.name).exists();
    let mut sources = Vec::new();
    for &i in &d.sources {
        let src = &config.sources[i];
        let skip_existing =
            first_start && matches!(&src.input, Input::File(f) if f.read_from == ReadFrom::End);
        let mut s = SourceStatus {
            name: src.name.clone(),
            kind: src.type_name(),
            spooled: src.is_spooled(),
            files: 0,
            behind_files: 0,
            behind_bytes: 0,
        };
        for f in &listed[i].files {
            s.files += 1;
            let behind = match checkpoints.get(f.id) {
                Some(e) if identity::matches_entry(&f.file, f.size, e) => f.size - e.offset,
                // Truncated, or another file on a reused inode: read again
                // from its first byte.
                Some(_) => f.size,
                None if skip_existing => 0,
                None => f.size,
            };
            if behind > 0 {
                s.behind_files += 1;
                s.behind_bytes += behind;
            }
        }
        problems.extend(listed[i].problems.iter().cloned());
        sources.push(s);
    }
    let dl = DeadLetter::new(&config.data_dir, &d.name);
    let waiting = dl.waiting().unwrap_or_else(|e| {
        problems.push(format!(
            "cannot read the dead-letter files {}: {e}",
            dl.path().display()
        ));
        Waiting::default()
    });
    let behind_bytes = sources.iter().map(|s| s.behind_bytes).sum();
    DestinationStatus {
        name: d.name.clone(),
        caught_up: behind_bytes == 0 && problems.is_empty(),
        behind_bytes,
        behind_files: sources.iter().map(|s| s.behind_files).sum(),
        sources,
        dead_letters: DeadLetters {
            path: dl.path().to_path_buf(),
            events: waiting.events,
            bytes: waiting.bytes,
        },
        problems,
    }
}

/// The segments of the spooled sources, as the daemon counts them against
/// `spool.max_bytes`; `None` when no source is spooled.
fn spool(config: &Config, listed: &[Listing]) -> Option<SpoolStatus> {
    let spooled: Vec<&Listing> = config
        .sources
        .iter()
        .zip(listed)
        .filter(|(s, _)| s.is_spooled())
        .map(|(_, l)| l)
        .collect();
    if spooled.is_empty() {
        return None;
    }
    let segments = spooled.iter().flat_map(|l| &l.files);
    Some(SpoolStatus {
        path: config.data_dir.join("spool"),
        bytes: segments.clone().map(|f| f.size).sum(),
        max_bytes: config.spool.max_bytes,
        segments: segments.count() as u64,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.destinations {
            write!(f, "{d}")?;
        }
        if let Some(s) = &self.spool {
            writeln!(f, "{s}")?;
        }
        let behind = self.destinations.iter().filter(|d| !d.caught_up).count();
        let n = self.destinations.len();
        if behind == 0 {
            writeln!(f, "all {n} destination(s) caught up")
        } else {
            writeln!(f, "{behind} of {n} destination(s) behind")
        }
    }
}

impl fmt::Display for DestinationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.caught_up {
            writeln!(f, "destination {}: caught up", self.name)?;
        } else if self.behind_bytes > 0 {
            writeln!(
                f,
                "destination {}: behind by {} bytes in {} file(s)",
                self.name, self.behind_bytes, self.behind_files
            )?;
        } else {
            writeln!(f, "destination {}: unknown (see the problems)", self.name)?;
        }
        for s in &self.sources {
            writeln!(f, "  {s}")?;
        }
        let dl = &self.dead_letters;
        if dl.events == 0 && dl.bytes == 0 {
            writeln!(f, "  dead letters: none ({})", dl.path.display())?;
        } else {
            writeln!(
                f,
                "  dead letters: {} event(s), {} bytes in {} (`tailhook dead-letter resend` sends them again)",
                dl.events,
                dl.bytes,
                dl.path.display()
            )?;
        }
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        Ok(())
    }
}

impl fmt::Display for SourceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.spooled {
            "spool segment(s)"
        } else {
            "file(s)"
        };
        write!(
            f,
            "source {} ({}): {} bytes behind in {} of {} {what}",
            self.name, self.kind, self.behind_bytes, self.behind_files, self.files
        )
    }
}

impl fmt::Display for SpoolStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = if self.max_bytes == 0 {
            0.0
        } else {
            self.bytes as f64 * 100.0 / self.max_bytes as f64
        };
        write!(
            f,
            "spool: {} of {} bytes ({percent:.1}%) in {} segment(s) ({})",
            self.bytes,
            self.max_bytes,
            self.segments,
            self.path.display()
        )
    }
}
