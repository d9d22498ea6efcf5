//! `tailhook demo`: the real pipeline — file tailing, batching, HTTP on
//! 127.0.0.1, checkpoints — into a built-in collector that answers like
//! Fluentd `in_http`, then a report of what arrived.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::daemon::Daemon;
use crate::event::{classify, Class, Kind};
use crate::{Config, Shutdown};

/// The sample events of every kind that the demo writes (also `examples/sample-events.ndjson`).
pub const SAMPLES: &str = include_str!("../examples/sample-events.ndjson");

/// Fluentd `in_http`'s default `body_size_limit`.
const BODY_LIMIT: usize = 32 << 20;

/// One request the collector accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST` or `PUT`.
    pub method: String,
    /// The request path (Fluentd's tag).
    pub path: String,
    /// Body size.
    pub bytes: usize,
    /// Kind (and risk) of each event.
    pub kinds: Vec<(Kind, Option<&'static str>)>,
}

/// A collector that answers like Fluentd `in_http`: 200 with an empty body for
/// a JSON array of objects or a single object (POST or PUT), 400 without a
/// JSON content type or for array elements that are not objects, 413 over 32 MiB.
pub struct DemoCollector {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl DemoCollector {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<DemoCollector> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (r, n) = (received.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (r, n) = (r.clone(), n.clone());
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (r, n) = (r.clone(), n.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(req, &r, &n).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Ok(DemoCollector {
            addr,
            received,
            arrived,
            task,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until at least `n` events have arrived.
    pub async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.arrived.notified();
            if self.received().iter().map(|r| r.kinds.len()).sum::<usize>() >= n {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for DemoCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn answer(
    req: Request<Incoming>,
    received: &Mutex<Vec<Received>>,
    arrived: &Notify,
) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    if method == "GET" {
        return reply(StatusCode::OK, "");
    }
    let json = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match Limited::new(req.into_body(), BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "Too large"),
    };
    if !json {
        return reply(
            StatusCode::BAD_REQUEST,
            "400 Bad Request\n'json', 'ndjson' or 'msgpack' parameter is required\n",
        );
    }
    let text = std::str::from_utf8(&body).unwrap_or("");
    let elements: Vec<&RawValue> = match serde_json::from_str::<Vec<&RawValue>>(text) {
        Ok(v) => v,
        Err(_) => match serde_json::from_str::<&RawValue>(text) {
            Ok(one) => vec![one],
            // Real Fluentd drops malformed JSON with a 200; tailhook never sends it.
            Err(_) => return reply(StatusCode::OK, ""),
        },
    };
    let mut kinds = Vec::new();
    for raw in elements {
        match classify(raw.get()) {
            Some(Class { kind, risk, .. }) => kinds.push((kind, risk.map(|r| r.name()))),
            None => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request\nevent must be a JSON object\n",
                )
            }
        }
    }
    received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Received {
            method,
            path,
            bytes: body.len(),
            kinds,
        });
    arrived.notify_waiters();
    reply(StatusCode::OK, "")
}

/// How many events some NDJSON text holds: one per object line, one per
/// element of an array line. Counted with `serde_json` alone, not with
/// tailhook's own framing, so that a framing bug shows as a shortfall
/// instead of lowering the expectation with it.
fn count_events(text: &str) -> anyhow::Result<usize> {
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        n += match serde_json::from_str::<serde_json::Value>(line)? {
            serde_json::Value::Array(elements) => elements.len(),
            _ => 1,
        };
    }
    Ok(n)
}

/// A directory removed when the demo ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the demo and returns its report.
pub async fn run_demo() -> anyhow::Result<String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir =
        TempDir(std::env::temp_dir().join(format!("tailhook-demo-{}-{stamp}", std::process::id())));
    let logs = dir.0.join("logs");
    std::fs::create_dir_all(&logs)?;
    let collector = DemoCollector::start().await?;

    // Half the samples exist before tailhook starts; the rest are appended
    // while it runs, and a second file appears, to show it following them.
    let lines: Vec<&str> = SAMPLES.lines().filter(|l| !l.trim().is_empty()).collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let first_text = first.join("\n") + "\n";
    std::fs::write(logs.join("wallarm.ndjson"), &first_text)?;

    let url = format!("http://{}/wallarm.events", collector.addr());
    let config_text = format!(
        r#"data_dir = "{data}"
shutdown_timeout = "5s"

[[source]]
name = "wallarm"
type = "file"
include = ["{logs}/*.ndjson"]
poll_interval = "250ms"

[[destination]]
name = "fluentd"
url = "{url}"

[destination.batch]
max_events = 4
timeout = "200ms"

[metrics]
enabled = false
"#,
        data = dir.0.join("data").display(),
        logs = logs.display(),
    );
    let config = Config::parse(Path::new("<demo>"), &config_text, |_| None)?;
    let checkpoint = crate::checkpoint::Checkpoints::file_for(&config.data_dir, "fluentd");
    let shutdown = Shutdown::new();
    let daemon = Daemon::bind(&config).await?;
    let pipeline = tokio::spawn(daemon.run(shutdown.clone(), None));

    let deadline = Duration::from_secs(30);
    let first_n = count_events(&first_text)?;
    tokio::time::timeout(deadline, collector.wait_for(first_n))
        .await
        .map_err(|_| {
            anyhow::anyhow!("the collector did not receive the first {first_n} events within 30 s")
        })?;

    let (appended, new_file) = second.split_at(second.len() / 2);
    let appended_text = appended.join("\n") + "\n";
    let new_text = new_file.join("\n") + "\n";
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(logs.join("wallarm.ndjson"))?;
        f.write_all(appended_text.as_bytes())?;
    }
    std::fs::write(logs.join("node-2.ndjson"), &new_text)?;
    let total = first_n + count_events(&appended_text)? + count_events(&new_text)?;
    tokio::time::timeout(deadline, collector.wait_for(total))
        .await
        .map_err(|_| {
            anyhow::anyhow!("the collector did not receive all {total} events within 30 s")
        })?;

    shutdown.soft.cancel();
    pipeline.await??;
    let received = collector.received();
    let report = report(&received, &url, &logs, total, &checkpoint);
    let events: usize = received.iter().map(|r| r.kinds.len()).sum();
    if events != total {
        anyhow::bail!("{report}\nthe collector received {events} events, not the {total} written");
    }
    Ok(report)
}

fn report(
    received: &[Received],
    url: &str,
    logs: &Path,
    expected: usize,
    checkpoint: &Path,
) -> String {
    let mut o = String::new();
    let events: usize = received.iter().map(|r| r.kinds.len()).sum();
    let _ = writeln!(o, "tailhook demo: a real pipeline over HTTP on 127.0.0.1\n");
    let _ = writeln!(o, "  tailed    {}/*.ndjson (one file before start, lines appended and a second file created while running)", logs.display());
    let _ = writeln!(
        o,
        "  sent to   POST {url}  (built-in Fluentd in_http emulator)"
    );
    let _ = writeln!(o, "  batches   max_events = 4, timeout = 200ms\n");
    let _ = writeln!(
        o,
        "The collector received {} batches, {events} events (expected {expected}):",
        received.len()
    );
    for (i, r) in received.iter().enumerate() {
        let _ = writeln!(
            o,
            "  batch {:>2}: {} {} {:>2} events {:>5} bytes -> 200 OK",
            i + 1,
            r.method,
            r.path,
            r.kinds.len(),
            r.bytes
        );
    }
    let mut by_kind: BTreeMap<Kind, (usize, BTreeMap<&str, usize>)> = BTreeMap::new();
    for (kind, risk) in received.iter().flat_map(|r| r.kinds.iter()) {
        let e = by_kind.entry(*kind).or_default();
        e.0 += 1;
        if let Some(r) = risk {
            *e.1.entry(r).or_default() += 1;
        }
    }
    let _ = writeln!(o, "\nEvents by kind:");
    for (kind, (n, risks)) in &by_kind {
        let risks: Vec<String> = risks.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let risks = if risks.is_empty() {
            String::new()
        } else {
            format!("  ({})", risks.join(", "))
        };
        let _ = writeln!(o, "  {:<15} {n:>3}{risks}", kind.name());
    }
    let _ = writeln!(
        o,
        "\nCheckpoint saved after the last acknowledgement: {}",
        checkpoint.display()
    );
    let _ = writeln!(o, "(The demo's temporary directory is removed on exit.)");
    o
}
