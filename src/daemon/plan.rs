//! What a reload compares: the settings an input or a pipeline was started
//! with, and the log line that says what the reload kept and restarted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::{Config, DestinationConfig, FileInput, Input, OnInvalid, SourceConfig};

/// What an input or a pipeline was started with: its settings, and the
/// contents of the files it read then (certificates, keys, CAs) as length
/// and CRC-32, so that a file replaced on disk is a change, as at the
/// restart that used to follow every SIGHUP.
#[derive(Debug, PartialEq)]
pub(super) struct AsStarted<T> {
    settings: T,
    files: Vec<(PathBuf, Option<(usize, u32)>)>,
}

impl AsStarted<SourceConfig> {
    /// A spooled source's input: the whole block matters.
    pub(super) fn input(src: &SourceConfig) -> Self {
        let tls = match &src.input {
            Input::Tcp { tls, .. } => tls.as_ref(),
            Input::Http(h) => h.tls.as_ref(),
            _ => None,
        };
        let mut files = Vec::new();
        if let Some(t) = tls {
            files.extend([t.cert_file.as_path(), t.key_file.as_path()]);
            files.extend(t.client_ca_file.as_deref());
        }
        AsStarted {
            settings: src.clone(),
            files: stamps(files),
        }
    }
}

impl AsStarted<PipelineSettings> {
    /// A destination's pipeline: its block, what it takes from each source
    /// it reads (by name) and `data_dir`.
    pub(super) fn pipeline(config: &Config, d: &DestinationConfig) -> Self {
        let sources = d
            .sources
            .iter()
            .map(|&i| {
                let s = &config.sources[i];
                let files = match &s.input {
                    Input::File(f) => Some(f.clone()),
                    _ => None,
                };
                let read = ReadSettings {
                    max_line_bytes: s.max_line_bytes,
                    on_invalid: s.on_invalid,
                    files,
                };
                (s.name.clone(), read)
            })
            .collect();
        let files = [&d.ca_file, &d.client_cert_file, &d.client_key_file]
            .into_iter()
            .filter_map(|f| f.as_deref())
            .collect();
        AsStarted {
            settings: PipelineSettings {
                // Indexes into the sources move when one is added before
                // them: the names below are what counts.
                destination: DestinationConfig {
                    sources: Vec::new(),
                    ..d.clone()
                },
                sources,
                data_dir: config.data_dir.clone(),
            },
            files: stamps(files),
        }
    }
}

/// Everything a destination's pipeline depends on.
#[derive(Debug, PartialEq)]
pub(super) struct PipelineSettings {
    destination: DestinationConfig,
    sources: Vec<(String, ReadSettings)>,
    data_dir: PathBuf,
}

/// What a pipeline takes from a source it reads. A socket's address, TLS
/// or connection limit are the input's business alone.
#[derive(Debug, PartialEq)]
struct ReadSettings {
    max_line_bytes: usize,
    on_invalid: OnInvalid,
    /// The globs and timings of a file source; None for a spooled one.
    files: Option<FileInput>,
}

fn stamps(files: Vec<&Path>) -> Vec<(PathBuf, Option<(usize, u32)>)> {
    files
        .into_iter()
        .map(|p| {
            let stamp = std::fs::read(p)
                .ok()
                .map(|b| (b.len(), crc32fast::hash(&b)));
            (p.to_path_buf(), stamp)
        })
        .collect()
}

/// The spooled sources a destination reads.
pub(super) fn spooled_sources(config: &Config, d: &DestinationConfig) -> Vec<String> {
    d.sources
        .iter()
        .map(|&i| &config.sources[i])
        .filter(|s| s.is_spooled())
        .map(|s| s.name.clone())
        .collect()
}

/// Each spooled source and the destinations that read it.
pub(super) fn readers(config: &Config) -> HashMap<String, Vec<String>> {
    let mut readers = HashMap::new();
    for (i, src) in config.sources.iter().enumerate() {
        if src.is_spooled() {
            let dests = config
                .destinations
                .iter()
                .filter(|d| d.sources.contains(&i))
                .map(|d| d.name.clone())
                .collect();
            readers.insert(src.name.clone(), dests);
        }
    }
    readers
}

/// What a reload does to one source or destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    Kept,
    Restarted,
    Added,
    Removed,
}

/// What a reload did, for its log line: `kept source `net`, restarted
/// destination `b`, ...`.
pub(super) struct Changes {
    sources: Vec<(String, Change)>,
    destinations: Vec<(String, Change)>,
}

impl Changes {
    /// From the old and new configs and what the reload restarts. A file
    /// source that changed is "restarted": the pipelines reading it are.
    pub(super) fn new(
        old: &Config,
        new: &Config,
        restarted_inputs: &[String],
        restarted_pipelines: &[String],
    ) -> Changes {
        let source = |s: &SourceConfig| {
            let change = match old.sources.iter().find(|o| o.name == s.name) {
                None => Change::Added,
                Some(o) if o.is_spooled() != s.is_spooled() => Change::Restarted,
                Some(_) if s.is_spooled() && restarted_inputs.contains(&s.name) => {
                    Change::Restarted
                }
                Some(o) if !s.is_spooled() && o != s => Change::Restarted,
                Some(_) => Change::Kept,
            };
            (s.name.clone(), change)
        };
        let destination = |d: &DestinationConfig| {
            let change = if !old.destinations.iter().any(|o| o.name == d.name) {
                Change::Added
            } else if restarted_pipelines.contains(&d.name) {
                Change::Restarted
            } else {
                Change::Kept
            };
            (d.name.clone(), change)
        };
        let mut sources: Vec<_> = new.sources.iter().map(source).collect();
        sources.extend(
            old.sources
                .iter()
                .filter(|o| !new.sources.iter().any(|s| s.name == o.name))
                .map(|o| (o.name.clone(), Change::Removed)),
        );
        let mut destinations: Vec<_> = new.destinations.iter().map(destination).collect();
        destinations.extend(
            old.destinations
                .iter()
                .filter(|o| !new.destinations.iter().any(|d| d.name == o.name))
                .map(|o| (o.name.clone(), Change::Removed)),
        );
        Changes {
            sources,
            destinations,
        }
    }

    /// Everything that exists in both is restarted (a change of a setting
    /// that they all depend on).
    pub(super) fn all_restarted(mut self) -> Changes {
        for (_, c) in self.sources.iter_mut().chain(self.destinations.iter_mut()) {
            if *c == Change::Kept {
                *c = Change::Restarted;
            }
        }
        self
    }

    /// The destination keeps running.
    pub(super) fn kept(&self, destination: &str) -> bool {
        self.destinations
            .iter()
            .any(|(d, c)| d == destination && *c == Change::Kept)
    }

    /// `kept source `w`, restarted source `t`, kept destination `a`, ...`
    pub(super) fn summary(&self) -> String {
        let word = |c: Change| match c {
            Change::Kept => "kept",
            Change::Restarted => "restarted",
            Change::Added => "added",
            Change::Removed => "removed",
        };
        let sources = self
            .sources
            .iter()
            .map(|(n, c)| format!("{} source `{n}`", word(*c)));
        let destinations = self
            .destinations
            .iter()
            .map(|(n, c)| format!("{} destination `{n}`", word(*c)));
        sources.chain(destinations).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path).unwrap()
    }

    const DATA: &str = "data_dir = \"/tmp/th\"\n";

    const SOURCES: &str = r#"
[[source]]
name = "net"
type = "tcp"
listen = "127.0.0.1:5170"
[[source]]
name = "logs"
type = "file"
include = ["/var/log/*.ndjson"]
"#;

    fn pipelines(config: &Config) -> Vec<AsStarted<PipelineSettings>> {
        config
            .destinations
            .iter()
            .map(|d| AsStarted::pipeline(config, d))
            .collect()
    }

    /// A source added before the ones a destination reads moves their
    /// indexes, not their names: the destination is unchanged. A socket's
    /// address is the input's alone; its `max_line_bytes` is read by the
    /// pipelines too.
    #[test]
    fn destinations_compare_their_sources_by_name_and_by_what_they_read() {
        let dest =
            "[[destination]]\nname = \"a\"\nurl = \"http://c/t\"\nsources = [\"net\", \"logs\"]\n";
        let old = parse(&format!("{DATA}{SOURCES}{dest}"));
        let first = "[[source]]\nname = \"first\"\ntype = \"udp\"\nlisten = \"127.0.0.1:5171\"\n";
        let added = parse(&format!("{DATA}{first}{SOURCES}{dest}"));
        assert_eq!(added.sources[0].name, "first");
        assert_eq!(pipelines(&old), pipelines(&added));

        let moved = parse(&format!("{DATA}{SOURCES}{dest}").replace("5170", "5999"));
        assert_eq!(pipelines(&old), pipelines(&moved));
        assert_ne!(
            AsStarted::input(&old.sources[0]),
            AsStarted::input(&moved.sources[0])
        );

        let longer = parse(&format!("{DATA}{SOURCES}{dest}").replace(
            "listen = \"127.0.0.1:5170\"",
            "listen = \"127.0.0.1:5170\"\nmax_line_bytes = \"2MiB\"",
        ));
        assert_ne!(pipelines(&old), pipelines(&longer));

        let elsewhere = parse(&format!("data_dir = \"/tmp/other\"\n{SOURCES}{dest}"));
        assert_ne!(pipelines(&old), pipelines(&elsewhere));
    }

    /// A certificate replaced on disk, under the same name, is a change.
    #[test]
    fn a_file_replaced_on_disk_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "one").unwrap();
        let config = parse(&format!(
            "{DATA}{SOURCES}[[destination]]\nname = \"a\"\nurl = \"https://c/t\"\nca_file = {:?}\n",
            ca.display().to_string()
        ));
        let before = pipelines(&config);
        assert_eq!(before, pipelines(&config));
        std::fs::write(&ca, "two").unwrap();
        assert_ne!(before, pipelines(&config));
    }

    #[test]
    fn the_summary_names_each_source_and_destination() {
        let two = "[[destination]]\nname = \"a\"\nurl = \"http://c/t\"\n[[destination]]\nname = \"b\"\nurl = \"http://c/t\"\n";
        let old = parse(&format!("{DATA}{SOURCES}{two}"));
        let new = parse(&format!("{DATA}{SOURCES}{two}").replace("name = \"b\"", "name = \"c\""));
        let changes = Changes::new(&old, &new, &[], &[]);
        assert_eq!(
            changes.summary(),
            "kept source `net`, kept source `logs`, kept destination `a`, added destination `c`, removed destination `b`"
        );
        assert!(changes.kept("a") && !changes.kept("c"));

        let new = parse(&format!("{DATA}{SOURCES}{two}").replace("*.ndjson", "*.json"));
        let changes = Changes::new(&old, &new, &["net".into()], &["a".into(), "b".into()]);
        assert_eq!(
            changes.summary(),
            "restarted source `net`, restarted source `logs`, restarted destination `a`, restarted destination `b`"
        );
        assert!(!changes.kept("a"));
    }
}
