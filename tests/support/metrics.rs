//! tailhook's `/metrics`, `/health` and `/ready` listener: where it is (from
//! its log line), plain HTTP/1.1 GETs to it, a parser of the Prometheus text
//! exposition, bounded polling of the page, and `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::Tailhook;

/// The log message that names the metrics listener's address.
pub const LISTENING: &str = "metrics listening on /metrics, /health, /ready";

/// The address of tailhook's metrics listener, from its log line (text
/// `... address=127.0.0.1:PORT` or JSON `"address":"127.0.0.1:PORT"`).
/// Panics, with the log, when it does not appear within 15 s.
pub fn metrics_addr(tailhook: &Tailhook) -> SocketAddr {
    assert!(
        tailhook.wait_for_log(LISTENING, Duration::from_secs(15)),
        "tailhook never logged `{LISTENING}`:\n{}",
        tailhook.stderr()
    );
    let log = tailhook.stderr() + &tailhook.stdout();
    let line = log
        .lines()
        .find(|l| l.contains(LISTENING))
        .expect("the line was just seen");
    let addr = if let Some(at) = line.find("address=") {
        line[at + "address=".len()..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string()
    } else {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("neither text nor JSON ({e}): {line}"));
        v["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address field: {line}"))
            .to_string()
    };
    addr.parse()
        .unwrap_or_else(|e| panic!("bad metrics address {addr:?} in {line:?}: {e}"))
}

/// An HTTP answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first header called `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over a new connection (`Connection: close`), reading the answer
/// to the end; every step bounded by 10 s.
pub fn get(addr: SocketAddr, path: &str) -> Answer {
    get_within(addr, path, Duration::from_secs(10))
}

/// [`get`] with every step bounded by `timeout`.
pub fn get_within(addr: SocketAddr, path: &str, timeout: Duration) -> Answer {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .unwrap_or_else(|e| panic!("connect to the metrics listener {addr}: {e}"));
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the answer to GET {path}: {e}"));
    let text = String::from_utf8(raw).expect("the answer is UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of the head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size =
            usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).expect("chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// One sample: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Clone, Debug)]
pub struct Page {
    pub text: String,
    pub samples: Vec<Sample>,
    /// `# TYPE` of each metric family.
    pub types: BTreeMap<String, String>,
    /// `# HELP` of each metric family.
    pub help: BTreeMap<String, String>,
}

impl Page {
    /// Parses the text exposition format (0.0.4). Panics on a line it
    /// cannot read.
    pub fn parse(text: &str) -> Page {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        let mut help = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').unwrap_or((rest, ""));
                types.insert(name.to_string(), t.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, h) = rest.split_once(' ').unwrap_or((rest, ""));
                help.insert(name.to_string(), h.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            samples.push(
                parse_sample(line)
                    .unwrap_or_else(|why| panic!("/metrics line {}: {why}: {line:?}", i + 1)),
            );
        }
        Page {
            text: text.to_string(),
            samples,
            types,
            help,
        }
    }

    /// The value of the sample `name` whose labels are exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like [`Page::get`], panicking (with the page) when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            panic!(
                "no sample {name}{labels:?} on /metrics:\n{}",
                self.matching(name)
            )
        })
    }

    /// The samples of `name` whose labels include `labels`.
    pub fn select(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The sum of the samples of `name` whose labels include `labels` (0
    /// when there are none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.select(name, labels).iter().map(|s| s.value).sum()
    }

    /// The page's lines about `name`, for assertion messages.
    pub fn matching(&self, name: &str) -> String {
        let lines: Vec<&str> = self.text.lines().filter(|l| l.contains(name)).collect();
        if lines.is_empty() {
            format!(
                "(nothing about {name}; the page has {} samples)",
                self.samples.len()
            )
        } else {
            lines.join("\n")
        }
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    let valid_name = !name.is_empty()
        && name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
    if !valid_name {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end;
        loop {
            // Skip a separator.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c == ' ' {
                    chars.next();
                } else {
                    break;
                }
            }
            let Some(&(start, c)) = chars.peek() else {
                return Err("unterminated labels".into());
            };
            if c == '}' {
                end = start + 1;
                break;
            }
            let mut key_end = start;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    key_end = i;
                    break;
                }
            }
            let key = after[start..key_end].trim().to_string();
            if key.is_empty() {
                return Err("empty label name".into());
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key} has no quoted value"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        other => return Err(format!("bad escape \\{other:?}")),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("label {key} value is not closed"));
            }
            if labels.insert(key.clone(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
        }
        rest = &after[end..];
    }
    let mut parts = rest.split_whitespace();
    let value = parts.next().ok_or_else(|| "no value".to_string())?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse::<f64>()
            .map_err(|e| format!("bad value {v:?}: {e}"))?,
    };
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|e| format!("bad timestamp {ts:?}: {e}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing text".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// GETs `/metrics`, checks it answered 200 with the text exposition's
/// content type, and parses it.
pub fn scrape(addr: SocketAddr) -> Page {
    let a = get(addr, "/metrics");
    assert_eq!(a.status, 200, "GET /metrics: {a:?}");
    let ct = a.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "GET /metrics content type {ct:?}"
    );
    Page::parse(&a.body)
}

/// Scrapes `/metrics` every 50 ms until `done` holds, for at most
/// `timeout`; returns that page. On timeout, panics with `what`, the last
/// page's lines about `focus` and tailhook's log. There is no signal to wait
/// on for a metric, so this polls.
pub fn wait_for_page(
    addr: SocketAddr,
    tailhook: &Tailhook,
    timeout: Duration,
    what: &str,
    focus: &[&str],
    mut done: impl FnMut(&Page) -> bool,
) -> Page {
    let deadline = Instant::now() + timeout;
    loop {
        let page = scrape(addr);
        if done(&page) {
            return page;
        }
        if Instant::now() >= deadline {
            let shown: Vec<String> = focus.iter().map(|f| page.matching(f)).collect();
            panic!(
                "/metrics did not show {what} within {timeout:?}; last page:\n{}\n--- tailhook stderr ---\n{}",
                shown.join("\n"),
                tailhook.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How to get promtool on Debian, for the failure message.
pub const PROMTOOL_INSTALL: &str =
    "apt-get update && apt-get install -y --no-install-recommends prometheus";

/// Runs `promtool check metrics` on `text` (stdin); returns (exit code,
/// stdout + stderr). Panics, saying how to install it, when promtool is not
/// installed.
pub fn promtool_check(text: &str) -> (Option<i32>, String) {
    promtool(&["check", "metrics"], Some(text))
}

/// Runs `promtool <args>`, with `stdin` written to its standard input (or
/// none), for at most 30 s; returns (exit code, stdout + stderr). Panics,
/// saying how to install it, when promtool is not installed: the tests that
/// need it fail rather than skip.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> (Option<i32>, String) {
    let mut child = match Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed; these tests run `promtool {}`. \
             Install it with `{PROMTOOL_INSTALL}` (Debian's prometheus package), \
             or put a promtool from https://prometheus.io/download/ on PATH",
            args.join(" ")
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let mut pipe = child.stdin.take().expect("piped stdin");
    let input = stdin.unwrap_or_default().to_string();
    // Written from a thread, so a promtool that answers before reading all
    // of its input cannot deadlock us; dropping the pipe closes its stdin.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.expect("wait for promtool"),
        Err(_) => {
            // Not reaped yet (the waiter has not returned): the pid is ours.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!(
                "promtool {} did not finish within 30 s; killed",
                args.join(" ")
            );
        }
    };
    let _ = writer.join();
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), said)
}

/// Asserts that `promtool check metrics` accepts `text` with exit 0 and
/// prints nothing (no format error, no lint problem).
pub fn assert_promtool_clean(text: &str) {
    let (code, said) = promtool_check(text);
    assert!(
        code == Some(0) && said.trim().is_empty(),
        "promtool check metrics: exit {code:?}, said:\n{said}\n--- the page ---\n{text}"
    );
}
