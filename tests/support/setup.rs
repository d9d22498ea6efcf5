//! A temporary working directory for one test: a `logs/` folder to tail, a
//! `data/` folder for checkpoints and dead letters, and config files built
//! from blocks with test-friendly timings ([`ConfigBuilder`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One test's files; removed when dropped.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub logs: PathBuf,
    pub data: PathBuf,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = dir.path().join("logs");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&logs).unwrap();
        Setup { dir, logs, data }
    }

    /// Writes `config.toml`: `data_dir`, then `blocks` as given, then metrics
    /// on a free port (unless `blocks` has its own `[metrics]`).
    pub fn config(&self, blocks: &str) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        let metrics = if blocks.contains("[metrics]") {
            ""
        } else {
            "\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
        };
        let text = format!(
            "data_dir = {:?}\n\n{blocks}{metrics}",
            self.data.display().to_string()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A config built block by block: see [`ConfigBuilder`].
    pub fn builder(&self) -> ConfigBuilder<'_> {
        ConfigBuilder {
            setup: self,
            top: String::new(),
            blocks: Vec::new(),
        }
    }

    /// A file source named `name` tailing `logs/<glob>`, polling every 100 ms.
    pub fn source(&self, name: &str, glob: &str, extra: &str) -> String {
        format!(
            "[[source]]\nname = {name:?}\ntype = \"file\"\ninclude = [{:?}]\npoll_interval = \"100ms\"\n{extra}\n",
            self.logs.join(glob).display().to_string()
        )
    }

    /// A path under `logs/`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    /// The destination's dead-letter file.
    pub fn dead_letter(&self, destination: &str) -> PathBuf {
        self.data
            .join("dead-letter")
            .join(format!("{destination}.ndjson"))
    }

    /// The destination's checkpoint file, parsed (`None` when there is
    /// none; panics when it is not JSON).
    pub fn read_checkpoint(&self, destination: &str) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.checkpoint(destination)).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "checkpoint is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        }))
    }

    /// The destination's checkpoint file.
    pub fn checkpoint(&self, destination: &str) -> PathBuf {
        self.data
            .join("checkpoints")
            .join(format!("{destination}.json"))
    }

    /// Waits until the destination's checkpoint file records `offset` for
    /// `file`, or `timeout`; returns how long that took. Polls the file
    /// every 10 ms: nothing else tells when tailhook has written it.
    pub fn wait_checkpointed(
        &self,
        destination: &str,
        file: &Path,
        offset: u64,
        timeout: Duration,
    ) -> Option<Duration> {
        let start = Instant::now();
        loop {
            let on_disk = self
                .read_checkpoint(destination)
                .and_then(|c| checkpointed_offset(&c, file));
            if on_disk == Some(offset) {
                return Some(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A test's `config.toml`, block by block, with test-friendly timings:
///
/// ```ignore
/// let cfg = setup
///     .builder()
///     .extra("shutdown_timeout = \"1s\"") // top-level keys, before any block
///     .file_source("app", "*.ndjson")
///     .extra("read_from = \"end\"") // more settings of the block just added
///     .destination("fluentd", &collector.url("/e"))
///     .extra("concurrency = 1\n[destination.batch]\nmax_events = 5")
///     .write();
/// ```
///
/// A destination gets `[destination.batch] timeout = "100ms"` and
/// `[destination.retry]` from 50 ms to 500 ms unless its settings hold
/// those tables; `data_dir` and (unless a block has `[metrics]`) metrics on
/// a free port are added by [`Setup::config`].
#[derive(Clone)]
pub struct ConfigBuilder<'a> {
    setup: &'a Setup,
    top: String,
    blocks: Vec<Block>,
}

#[derive(Clone)]
enum Block {
    /// A `[[source]]` block, or any block given as written.
    Plain(String),
    /// A `[[destination]]` block: its head and its settings; the default
    /// tables go after them.
    Destination { head: String, settings: String },
}

impl ConfigBuilder<'_> {
    /// A `file` source named `name` tailing `logs/<glob>`, polling every 100 ms.
    pub fn file_source(mut self, name: &str, glob: &str) -> Self {
        self.blocks
            .push(Block::Plain(self.setup.source(name, glob, "")));
        self
    }

    /// A socket, HTTP or stdin source (`kind`: tcp, udp, http, unix, stdin);
    /// tcp, udp and http listen on `127.0.0.1:0`.
    pub fn input(mut self, name: &str, kind: &str) -> Self {
        self.blocks
            .push(Block::Plain(super::inputs::input(name, kind, "")));
        self
    }

    /// A destination named `name` posting to `url`.
    pub fn destination(mut self, name: &str, url: &str) -> Self {
        self.blocks.push(Block::Destination {
            head: format!("[[destination]]\nname = {name:?}\nurl = {url:?}\n"),
            settings: String::new(),
        });
        self
    }

    /// A destination named `name` spreading its batches over `urls`.
    pub fn destination_urls(mut self, name: &str, urls: &[&str]) -> Self {
        let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        self.blocks.push(Block::Destination {
            head: format!(
                "[[destination]]\nname = {name:?}\nurls = [{}]\n",
                list.join(", ")
            ),
            settings: String::new(),
        });
        self
    }

    /// Any other block (`[spool]`, `[metrics]`, a block as written).
    pub fn block(mut self, text: &str) -> Self {
        self.blocks.push(Block::Plain(format!("{text}\n")));
        self
    }

    /// Settings of the block added last (keys first, then its tables), or
    /// top-level keys before any block.
    pub fn extra(mut self, settings: &str) -> Self {
        let text = match self.blocks.last_mut() {
            None => &mut self.top,
            Some(Block::Plain(text)) => text,
            Some(Block::Destination { settings: text, .. }) => text,
        };
        text.push_str(settings);
        text.push('\n');
        self
    }

    /// The config's blocks, without `data_dir` (see [`Setup::config`]).
    pub fn text(&self) -> String {
        let mut out = self.top.clone();
        if !out.is_empty() {
            out.push('\n');
        }
        for b in &self.blocks {
            match b {
                Block::Plain(text) => out.push_str(text),
                Block::Destination { head, settings } => {
                    out.push_str(head);
                    out.push_str(settings);
                    if !settings.contains("[destination.batch]") {
                        out.push_str("[destination.batch]\ntimeout = \"100ms\"\n");
                    }
                    if !settings.contains("[destination.retry]") {
                        out.push_str("[destination.retry]\ninitial = \"50ms\"\nmax = \"500ms\"\n");
                    }
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Writes `config.toml` and returns its path.
    pub fn write(&self) -> PathBuf {
        self.setup.config(&self.text())
    }
}

/// A destination block with fast test timings (batch timeout 100 ms, retry
/// from 50 ms up to 500 ms); `extra` is appended inside the block (top-level
/// keys only), `tables` after it (`[destination.batch]` overrides go there —
/// then the default batch table is left out).
pub fn destination(name: &str, url: &str, extra: &str, tables: &str) -> String {
    let batch = if tables.contains("[destination.batch]") {
        String::new()
    } else {
        "[destination.batch]\ntimeout = \"100ms\"\n".to_string()
    };
    let retry = if tables.contains("[destination.retry]") {
        String::new()
    } else {
        "[destination.retry]\ninitial = \"50ms\"\nmax = \"500ms\"\n".to_string()
    };
    format!("[[destination]]\nname = {name:?}\nurl = {url:?}\n{extra}\n{batch}{retry}{tables}\n")
}

/// Appends lines (each followed by a newline) to a file, creating it.
pub fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
    }
    f.write_all(&buf).unwrap();
}

/// `n` sequence-numbered hit events, `{"seq":i,...}`, starting at `from`,
/// padded to roughly `size` bytes each.
pub fn hits(from: usize, n: usize, size: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            let head = format!(
                r#"{{"seq":{i},"object_type":"hit","type":"sqli","domain":"example.com","pad":""#
            );
            let pad = size.saturating_sub(head.len() + 2);
            format!("{head}{}\"}}", "x".repeat(pad))
        })
        .collect()
}

/// Hit events as Wallarm writes them: the same keys in the same order, the
/// first ~1 KiB of every line alike (every file and every rotated copy of
/// one starts with the same bytes), and what varies — the time, the
/// address, the sequence number — at the end of the line.
pub fn wallarm_hits(from: usize, n: usize) -> Vec<String> {
    const SHARED: &str = concat!(
        r#"{"anomality":0,"attackid":"c9d0f1a2b3","block_status":"monitored","#,
        r#""client_id":1337,"domain":"www.example.com","heur_distance":0.0,"#,
        r#""instance_id":"node-eu-1.wallarm.example","known_attack":["sqli"],"#,
        r#""method":"POST","object_type":"hit","path":"/api/v1/session/login","#,
        r#""payloads":["' or 1=1--"],"point":["post","json_doc","hash","password"],"#,
        r#""poolid":4,"protocol":"rest","request_headers":{"accept":"*/*","#,
        r#""content-type":"application/json","user-agent":"Mozilla/5.0 (X11; Linux "#,
        r#"x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","#,
        r#""x-forwarded-proto":"https","x-request-id":"0000000000000000"},"#,
        r#""response_headers":{"content-type":"text/html","server":"nginx"},"#,
        r#""response_size":549,"response_status":403,"response_time":1,"#,
        r#""stamps":[7,9,11],"stamps_hash":-1239814,"type":"sqli","#,
        r#""wallarm_mode":"monitoring","rule":"default","tags":["edge","eu"],"#,
        r#""comment":"identical on every line: the varying values come late","#,
        r#""filler":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","#,
        r#""filler2":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy","#
    );
    (from..from + n)
        .map(|i| {
            format!(
                r#"{SHARED}"remote_addr4":"203.0.{}.{}","time":{},"seq":{i}}}"#,
                i / 256 % 256,
                i % 256,
                1_700_000_000 + i
            )
        })
        .collect()
}

/// The `seq` field of an event made by [`hits`] or [`wallarm_hits`].
pub fn seq_of(event: &[u8]) -> u64 {
    // Fast path for `hits()` events, which start with `{"seq":N,`.
    if let Some(rest) = event.strip_prefix(br#"{"seq":"#) {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 && rest.get(digits) == Some(&b',') {
            if let Ok(n) = std::str::from_utf8(&rest[..digits]).unwrap().parse() {
                return n;
            }
        }
    }
    let v: serde_json::Value = serde_json::from_slice(event).unwrap_or_else(|e| {
        panic!(
            "event is not JSON ({e}): {}",
            String::from_utf8_lossy(event)
        )
    });
    v["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("event without seq: {}", String::from_utf8_lossy(event)))
}

/// Lines as the byte strings a collector records.
pub fn bytes_of(lines: &[String]) -> Vec<Vec<u8>> {
    lines.iter().map(|l| l.as_bytes().to_vec()).collect()
}

/// The offset a checkpoint records for `file`, if any.
pub fn checkpointed_offset(checkpoint: &serde_json::Value, file: &Path) -> Option<u64> {
    let path = file.display().to_string();
    checkpoint["files"]
        .as_array()?
        .iter()
        .find(|f| f["path"].as_str() == Some(path.as_str()))
        .and_then(|f| f["offset"].as_u64())
}
