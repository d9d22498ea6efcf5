//! The throughput benchmark: 632-byte events tailed from a file by the real
//! `tailhook` binary and POSTed as JSON arrays over loopback to a counting
//! HTTP sink, as the README's benchmark figures are measured.
//!
//! `cargo bench --bench throughput` (release build). Environment:
//! `EVENTS` (default 1000000), `CONCURRENCY` (destination concurrency, default 2),
//! `FILES` (spread the events over this many files, default 1),
//! `TAILHOOK_BIN` (another tailhook binary to measure, e.g. a baseline build).
//! Prints events/s, CPU seconds per million events (user + system of the
//! tailhook process) and its peak resident memory.

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};

const EVENT_BYTES: usize = 632;

fn event(i: u64) -> String {
    let head = format!(
        r#"{{"seq":{i},"object_type":"hit","type":"sqli","domain":"www.example.com","method":"POST","path":"/api/v1/login","remote_addr4":"203.0.113.7","block_status":"monitored","payloads":["' or 1=1--"],"point":["post","json_doc","hash","password"],"request_time":1591261367,"response_status":403,"pad":""#
    );
    let pad = EVENT_BYTES - head.len() - 2;
    let line = format!("{head}{}\"}}", "x".repeat(pad));
    debug_assert_eq!(line.len(), EVENT_BYTES);
    line
}

/// Reads `/proc/<pid>/stat` user+system CPU seconds and `/proc/<pid>/status` VmHWM.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based); after ')' they are 12 and 13 (1-based).
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let hz = 100.0; // USER_HZ on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks as f64 / hz, hwm_kib)
}

fn main() {
    let n: u64 = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let concurrency: u64 = std::env::var("CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let files: u64 = std::env::var("FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for f in 0..files {
        let path = logs.join(format!("events-{f}.ndjson"));
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
        for i in (f..n).step_by(files as usize) {
            w.write_all(event(i).as_bytes()).unwrap();
            w.write_all(b"\n").unwrap();
        }
        w.flush().unwrap();
        // Warm the page cache, as a file being tailed would be.
        let _ = std::fs::read(&path);
    }
    let log = logs.join("*.ndjson");

    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (received, done) = (received.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (received, done) = (received.clone(), done.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (received, done) = (received.clone(), done.clone());
                            async move {
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let events =
                                    memchr::memmem::find_iter(&body, b"{\"seq\":").count() as u64;
                                if received.fetch_add(events, Ordering::Relaxed) + events >= n {
                                    done.notify_one();
                                }
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    });

    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[[source]]\nname = \"bench\"\ntype = \"file\"\ninclude = [{:?}]\n\n[[destination]]\nname = \"sink\"\nurl = \"http://{addr}/bench\"\nconcurrency = {concurrency}\n",
            dir.path().join("data").display().to_string(),
            log.display().to_string()
        ),
    )
    .unwrap();

    let start = Instant::now();
    let bin = std::env::var("TAILHOOK_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tailhook").to_string());
    let mut child = std::process::Command::new(bin)
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start tailhook");
    let finished = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(600), async {
            while received.load(Ordering::Relaxed) < n {
                done.notified().await;
            }
        })
        .await
        .is_ok()
    });
    let elapsed = start.elapsed();
    let (cpu, hwm_kib) = usage(child.id());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    if !finished {
        eprintln!(
            "benchmark timed out: {} of {n} events received",
            received.load(Ordering::Relaxed)
        );
        std::process::exit(1);
    }
    let secs = elapsed.as_secs_f64();
    println!("events:            {n} x {EVENT_BYTES} bytes in {files} file(s), concurrency {concurrency}");
    println!("elapsed:           {secs:.2} s");
    println!(
        "throughput:        {:.0} events/s ({:.1} MiB/s)",
        n as f64 / secs,
        (n * (EVENT_BYTES as u64 + 1)) as f64 / secs / 1048576.0
    );
    println!(
        "CPU (user+sys):    {cpu:.2} s = {:.2} CPU s per million events",
        cpu / (n as f64 / 1e6)
    );
    println!("peak RSS:          {:.1} MiB", hwm_kib as f64 / 1024.0);
}
