//! Chaos: the real binary under many faults at once, proven event by event.
//!
//! A writer thread appends sequence-numbered events (`{"seq":N,...}`, or
//! Wallarm-shaped lines ending in `"seq":N}`) in bursts, each written in two
//! pieces that usually end mid-line, while the test, from the main thread, follows a script of faults
//! drawn from a small seeded PRNG (the same seed always gives the same
//! script): rename rotation, copytruncate, collector outages (stopped and
//! started again on the same port), `kill -9` and SIGTERM of tailhook,
//! batches rejected with 400. At the end every sequence number must be in
//! the collector emulator's records or in the dead-letter file (zero lost is
//! the pass condition), byte for byte as written, with no violation
//! recorded by the emulator. Duplicates are counted and printed with their
//! cause: each tailhook run sends its number in a header, so a line sent
//! again by a later run is put down to how the earlier run ended, one sent
//! again by the same run to a collector restart (an answer lost). Those are
//! what at-least-once allows after `kill -9` and outages; a line sent again
//! after a SIGTERM (which delivers and saves checkpoints before it exits),
//! or one that nothing explains, fails the test.
//!
//! The tests here:
//! - `combined_chaos_loses_nothing`: 100,000 events through all of it;
//! - `combined_chaos_without_copytruncate_loses_nothing`: the same without
//!   copytruncate, so the rest stands on its own;
//! - `combined_chaos_over_forward_loses_nothing`: the same faults, with
//!   Wallarm-shaped lines, over `type = "forward"` to the forward-protocol
//!   emulator (stopped and started again on its port, and dropping
//!   connections before the ack instead of answering 400); each run is
//!   told by the tag, `chaos.run<N>`;
//! - `combined_chaos_with_lines_that_start_alike_loses_nothing`: the same
//!   faults over Wallarm-shaped hit lines whose first ~1 KiB is the same on
//!   every line and in every file (the sequence number is the last key), so
//!   nothing can tell files apart by their first bytes;
//! - `kill_9_again_and_again_with_several_files_loses_nothing`: repeated
//!   crashes with three files, four requests in flight, and rotations while
//!   tailhook is down;
//! - `copytruncate_while_tailhook_is_behind_loses_nothing`: a truncated file
//!   that grows past where tailhook had read before it looks again;
//! - `kill_9_while_dead_lettering_keeps_whole_lines`: crashes in the middle
//!   of dead-letter appends, repeated (bounded) until at least one has cut
//!   an append short and the next run has repaired it.
//!
//! Reproducing: the seed is printed at the start and in every failure
//! message (with the steps done); `TAILHOOK_CHAOS_SEED=<n> cargo test --test
//! chaos` runs another script. After a failure or unexplained duplicates
//! (or always, with `TAILHOOK_CHAOS_KEEP=1`), the test's files, each
//! accepted event's seq, run and collector (`arrivals.txt`) and each run's
//! log (`runs.log`) are kept in a directory named in the output.
//!
//! Every wait is bounded and event-driven (collector counts, log lines,
//! process exit), except for a checkpoint save, which nothing signals: the
//! file is polled. The writer is paced by quotas the script hands out.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::check::{dead_port, DeadPort};
use support::collector::{Collector, Options};
use support::forward::{Forward, Options as ForwardOptions};
use support::process::{Exit, Tailhook};
use support::setup::{append, hits, wallarm_hits, Setup};

/// The seed of the scripts, unless `TAILHOOK_CHAOS_SEED` says otherwise.
const SEED: u64 = 0x7a11_600c_c4a0_5eed;

/// Size of each event line, in bytes.
const EVENT_BYTES: usize = 200;

/// The destination name (checkpoint and dead-letter files are named after it).
const DEST: &str = "fluentd";

/// Upper bound of one step's wait for progress; a healthy step takes a small
/// part of it.
const STEP_WAIT: Duration = Duration::from_secs(30);

/// Upper bound of a wait that only picks the moment of a fault (if it runs
/// out, the fault just comes after fewer events than drawn).
const CHAOS_WAIT: Duration = Duration::from_secs(1);

/// How long to wait for tailhook to save its checkpoint: it does so about
/// once a second while there are acknowledgements to save, so past this
/// the one on disk is up to date.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(1500);

/// Upper bound of the final wait for every event.
const FINAL_WAIT: Duration = Duration::from_secs(120);

/// The final wait gives up after this long without a new event.
const QUIET: Duration = Duration::from_secs(15);

/// A log line tailhook writes (at debug level) for every failed attempt.
const DELIVERY_FAILED: &str = "delivery failed";

/// Logging for every tailhook started here: one debug line per failed
/// delivery attempt, so an outage step can wait for a number of them.
const LOG_FILTER: &str = "info,tailhook=debug";

/// The header each tailhook run sends its number in (set from the
/// environment variable `RUN_ENV`, as `headers` values may be), so every
/// accepted event tells which run sent it.
const RUN_HEADER: &str = "X-Chaos-Run";
const RUN_ENV: &str = "CHAOS_RUN";
/// Over forward, the run number ends the tag: `chaos.run<N>`.
const RUN_TAG: &str = "chaos.run";

// ---- PRNG ---------------------------------------------------------------------

/// xorshift64: small, deterministic, good enough to shuffle a script.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 once, so nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(z.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// True with probability `1 / n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.range(0, i);
            items.swap(i, j);
        }
    }
}

fn seed() -> u64 {
    match std::env::var("TAILHOOK_CHAOS_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("TAILHOOK_CHAOS_SEED={s:?}: {e}"))
        }
        Err(_) => SEED,
    }
}

// ---- the writer -----------------------------------------------------------------

/// A thread that appends the pre-made lines, in seq order, in bursts: each
/// quota it is handed is written as sub-bursts of 1-400 lines, each one a
/// single `write` to a file picked at random among `targets` (opened in
/// append mode for that burst, so a file renamed away gets a new one). The
/// lock is held for each sub-burst: taking it pauses the writer (for
/// copytruncate).
struct Writer {
    quotas: Option<mpsc::Sender<usize>>,
    lock: Arc<Mutex<()>>,
    written: Arc<(Mutex<usize>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn spawn(targets: Vec<PathBuf>, lines: Arc<Vec<String>>, seed: u64) -> Writer {
        let (tx, rx) = mpsc::channel::<usize>();
        let lock = Arc::new(Mutex::new(()));
        let written = Arc::new((Mutex::new(0usize), Condvar::new()));
        let (thread_lock, thread_written) = (lock.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            let mut rng = Rng::new(seed ^ 0x0057_7269_7465_7221);
            let mut next = 0usize;
            for quota in rx {
                let end = (next + quota).min(lines.len());
                while next < end {
                    let n = rng.range(1, 400).min(end - next);
                    let target = &targets[rng.range(0, targets.len() - 1)];
                    let mut buf = Vec::with_capacity(n * (EVENT_BYTES + 1));
                    for line in &lines[next..next + n] {
                        buf.extend_from_slice(line.as_bytes());
                        buf.push(b'\n');
                    }
                    let cut = rng.range(1, buf.len());
                    let _writing = thread_lock.lock().unwrap_or_else(|e| e.into_inner());
                    // Two writes, the first usually ending mid-line: tailhook
                    // may read between them.
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(target)
                        .and_then(|mut f| {
                            f.write_all(&buf[..cut])?;
                            f.flush()?;
                            f.write_all(&buf[cut..])
                        })
                        .unwrap_or_else(|e| panic!("writer: {}: {e}", target.display()));
                    next += n;
                    *thread_written.0.lock().unwrap_or_else(|e| e.into_inner()) = next;
                    thread_written.1.notify_all();
                }
            }
        });
        Writer {
            quotas: Some(tx),
            lock,
            written,
            thread: Some(thread),
        }
    }

    /// Lets the writer append `n` more lines (it does so at once, on its own).
    fn write(&self, n: usize) {
        if n > 0 {
            self.quotas
                .as_ref()
                .expect("writer still open")
                .send(n)
                .expect("writer thread alive");
        }
    }

    /// Lines written so far.
    fn written(&self) -> usize {
        *self.written.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` lines are written in all (bounded: the writer does
    /// nothing but write).
    fn wait_written(&self, n: usize) {
        let (lock, cv) = &*self.written;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, STEP_WAIT, |w| *w < n)
            .unwrap_or_else(|e| e.into_inner());
        assert!(*guard >= n, "the writer wrote {} of {n} lines", *guard);
    }

    /// Waits for every quota to be written; returns how many lines were.
    fn finish(&mut self) -> usize {
        drop(self.quotas.take());
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread panicked");
        }
        self.written()
    }

    /// copytruncate, as logrotate does it, with the writer paused (a line
    /// written between the copy and the truncation would be lost by the
    /// rotation itself, not by tailhook): copy `from` to `to`, then truncate
    /// `from` to zero. Nothing happens when `from` does not exist.
    fn copytruncate(&self, from: &Path, to: &Path) -> bool {
        let _paused = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !from.exists() {
            return false;
        }
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        OpenOptions::new()
            .write(true)
            .open(from)
            .and_then(|f| f.set_len(0))
            .unwrap_or_else(|e| panic!("truncate {}: {e}", from.display()));
        true
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.quotas.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Rename rotation: `from` becomes `to`, and a new empty `from` is created
/// (without truncating one the writer may already have made).
fn rename_rotate(from: &Path, to: &Path) -> bool {
    if !from.exists() {
        return false;
    }
    std::fs::rename(from, to).unwrap_or_else(|e| panic!("rename {}: {e}", from.display()));
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(from)
        .unwrap_or_else(|e| panic!("create {}: {e}", from.display()));
    true
}

/// The destination's checkpoint file as it is now (empty when absent).
fn checkpoint_now(setup: &Setup) -> Vec<u8> {
    std::fs::read(setup.checkpoint(DEST)).unwrap_or_default()
}

/// Waits until tailhook has saved a checkpoint different from `before`
/// (it saves at most once a second), or `timeout`. Polls the file: nothing
/// signals a save.
fn wait_checkpoint_saved(setup: &Setup, before: &[u8], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let now = checkpoint_now(setup);
        if !now.is_empty() && now != before {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- collectors across restarts ----------------------------------------------

/// One event accepted by the collector, with who sent it and to which
/// incarnation of the collector.
struct Arrival {
    event: Vec<u8>,
    /// The tailhook run that sent it (its `X-Chaos-Run` header, or the
    /// number in a forward destination's tag `chaos.run<N>`).
    run: u32,
    /// Which start of the collector accepted it.
    incarnation: u32,
}

/// How tailhook talks to the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// Webhooks to Fluentd `in_http` (the collector emulator).
    Http,
    /// `type = "forward"` to Fluentd `in_forward` (the forward emulator):
    /// a batch counts when acknowledged.
    Forward,
}

/// One incarnation of the collector.
enum Current {
    Http(Collector),
    Forward(Forward),
}

impl Current {
    fn start(protocol: Protocol, port: u16) -> Current {
        match protocol {
            Protocol::Http => Current::Http(Collector::start(Options {
                port,
                ..Options::fluentd()
            })),
            Protocol::Forward => Current::Forward(Forward::start_with(ForwardOptions {
                port,
                ..ForwardOptions::default()
            })),
        }
    }

    /// The HTTP collector (for faults only it has).
    fn http(&self) -> &Collector {
        match self {
            Current::Http(c) => c,
            Current::Forward(_) => panic!("an HTTP fault on a forward run"),
        }
    }

    /// Events accepted (acknowledged, for forward).
    fn event_count(&self) -> usize {
        match self {
            Current::Http(c) => c.event_count(),
            Current::Forward(f) => f.accepted_count(),
        }
    }

    /// Every event accepted, in arrival order: as received over HTTP; as
    /// the JSON text of the record (keys in the order sent) over forward.
    fn events(&self) -> Vec<Vec<u8>> {
        self.arrivals(0).into_iter().map(|a| a.event).collect()
    }

    fn wait_for_events(&self, n: usize, timeout: Duration) -> bool {
        match self {
            Current::Http(c) => c.wait_for_events(n, timeout),
            Current::Forward(f) => f.wait_accepted(n, timeout),
        }
    }

    /// Everything accepted, in arrival order.
    fn arrivals(&self, incarnation: u32) -> Vec<Arrival> {
        let mut out = Vec::new();
        match self {
            Current::Http(c) => {
                for b in c.batches() {
                    let run = b
                        .header(RUN_HEADER)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    out.extend(b.events.into_iter().map(|event| Arrival {
                        event,
                        run,
                        incarnation,
                    }));
                }
            }
            Current::Forward(f) => {
                for r in f.received().into_iter().filter(|r| r.acked) {
                    let run = r
                        .tag
                        .strip_prefix(RUN_TAG)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    out.extend(r.texts.into_iter().map(|t| Arrival {
                        event: t.into_bytes(),
                        run,
                        incarnation,
                    }));
                }
            }
        }
        out
    }

    fn take_violations(&self) -> Vec<String> {
        match self {
            Current::Http(c) => c.take_violations(),
            Current::Forward(f) => f.violations(),
        }
    }

    /// Stops it once its record is complete: no request or message can be
    /// accepted after the record is taken.
    fn stop_and_record(self, incarnation: u32) -> (Vec<Arrival>, Vec<String>) {
        match &self {
            // It answers 503 to everything, then a probe request of our own
            // goes through: the emulator decides on and records each request
            // on one thread without yielding in between, so once the probe is
            // answered, every request accepted before is recorded and no
            // later one can be.
            Current::Http(c) => {
                c.respond_with_body(503, "chaos: going down");
                probe(c.addr());
            }
            // Closes its listener and every connection, and waits for the
            // threads serving them.
            Current::Forward(f) => f.stop(),
        }
        let record = (self.arrivals(incarnation), self.take_violations());
        match self {
            Current::Http(c) => c.stop(),
            Current::Forward(f) => f.stop(),
        }
        record
    }
}

/// The collector emulator on one port, across its restarts: what each
/// stopped incarnation accepted is kept, in arrival order. The port is held
/// (bound, not listening) from start to finish, so while the collector is
/// down connections are refused and no other test can be given the port.
struct Collectors {
    protocol: Protocol,
    port: DeadPort,
    current: Option<Current>,
    incarnation: u32,
    /// Events accepted by stopped incarnations, oldest first.
    archived: Vec<Arrival>,
    violations: Vec<String>,
}

impl Collectors {
    fn start() -> Collectors {
        Collectors::start_speaking(Protocol::Http)
    }

    fn start_speaking(protocol: Protocol) -> Collectors {
        let port = dead_port();
        let current = Current::start(protocol, port.port);
        Collectors {
            protocol,
            port,
            current: Some(current),
            incarnation: 0,
            archived: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// The HTTP collector's URL.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/app.events", self.port.port)
    }

    fn current(&self) -> &Current {
        self.current.as_ref().expect("collector is up")
    }

    /// Events accepted so far by every incarnation.
    fn arrivals(&self) -> usize {
        self.archived.len() + self.current.as_ref().map_or(0, Current::event_count)
    }

    /// Stops the collector, keeping what it accepted.
    fn stop(&mut self) {
        let c = self.current.take().expect("collector is up");
        let (arrived, violations) = c.stop_and_record(self.incarnation);
        self.archived.extend(arrived);
        self.violations.extend(violations);
    }

    /// Starts the collector again on the same port.
    fn restart(&mut self) {
        assert!(self.current.is_none());
        self.current = Some(Current::start(self.protocol, self.port.port));
        self.incarnation += 1;
    }

    /// Waits until the current collector has accepted `n` more events than
    /// it had at `from`, or `timeout`.
    fn wait_more(&self, from: usize, n: usize, timeout: Duration) -> bool {
        self.current().wait_for_events(from + n, timeout)
    }

    /// Stops for good: every event accepted, in arrival order, and the
    /// violations recorded.
    fn finish(mut self) -> (Vec<Arrival>, Vec<String>) {
        if self.current.is_some() {
            self.stop();
        }
        (
            std::mem::take(&mut self.archived),
            std::mem::take(&mut self.violations),
        )
    }
}

/// One `GET` to the collector, waiting for its answer (any status).
fn probe(addr: std::net::SocketAddr) {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(addr).expect("probe: connect");
    stream.set_read_timeout(Some(STEP_WAIT)).unwrap();
    stream
        .write_all(b"GET /probe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("probe: send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("probe: answer");
    assert!(answer.starts_with(b"HTTP/1.1 "), "probe: {answer:?}");
}

// ---- tailhook across restarts ------------------------------------------------

/// `tailhook run` across its restarts. Each run is numbered (from 1) and
/// sends its number in the `X-Chaos-Run` header, so every accepted event
/// tells which run sent it.
struct Process {
    config: PathBuf,
    current: Option<Tailhook>,
    /// How each run ended, by run number - 1 (`None`: still running).
    endings: Vec<Option<String>>,
    /// What each run that ended wrote to stderr.
    outputs: Vec<String>,
}

impl Process {
    fn start(config: PathBuf) -> Process {
        let mut p = Process {
            config,
            current: None,
            endings: Vec::new(),
            outputs: Vec::new(),
        };
        p.restart();
        p
    }

    fn restart(&mut self) {
        assert!(self.current.is_none());
        self.endings.push(None);
        let run = self.endings.len().to_string();
        let env = [("RUST_LOG", LOG_FILTER), (RUN_ENV, run.as_str())];
        self.current = Some(Tailhook::start_with_env(&self.config, &env));
    }

    fn th(&self) -> &Tailhook {
        self.current.as_ref().expect("tailhook running")
    }

    fn runs(&self) -> usize {
        self.endings.len()
    }

    /// `kill -9` (`when`: at which step, for the report).
    fn kill9(&mut self, when: &str) {
        let exit = self.current.take().expect("tailhook running").kill9();
        self.ended(exit, format!("kill -9 {when}"));
    }

    /// SIGTERM, which must end in exit 0.
    fn terminate(&mut self, seed: u64, when: &str) {
        let exit = self.current.take().expect("tailhook running").terminate();
        assert!(
            exit.success(),
            "seed {seed:#x}: tailhook should exit 0 on SIGTERM ({when}), got code {:?} signal {:?}\n{}",
            exit.code,
            exit.signal,
            exit.output()
        );
        self.ended(exit, format!("SIGTERM {when}"));
    }

    fn ended(&mut self, exit: Exit, how: String) {
        let run = self.endings.len();
        for bad in ["panicked", "is unusable"] {
            assert!(
                !exit.stderr.contains(bad),
                "tailhook run #{run} (ended by {how}) logged {bad:?}:\n{}",
                exit.output()
            );
        }
        *self.endings.last_mut().unwrap() = Some(how);
        self.outputs.push(exit.stderr);
    }
}

// ---- accounting ----------------------------------------------------------------

/// The `seq` of an event shaped like the written lines (`{"seq":N,...`);
/// `None` for anything else (e.g. a line tailhook wrapped as invalid), so it
/// is reported rather than a panic. The rest of the event is checked by
/// comparing it with the line written.
fn seq(event: &[u8]) -> Option<usize> {
    let digits_of = |s: &[u8]| -> Option<usize> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    if let Some(rest) = event.strip_prefix(br#"{"seq":"#) {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if rest.get(digits) != Some(&b',') {
            return None;
        }
        return digits_of(&rest[..digits]);
    }
    // Wallarm-shaped: `…,"seq":N}`.
    let body = event.strip_suffix(b"}")?;
    let key = br#","seq":"#;
    let at = body.windows(key.len()).rposition(|w| w == key)?;
    digits_of(&body[at + key.len()..])
}

/// Complete lines of the dead-letter file (a line being appended right now
/// is left out).
fn dead_letters(setup: &Setup) -> Vec<Vec<u8>> {
    let bytes = match std::fs::read(setup.dead_letter(DEST)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("dead-letter file: {e}"),
    };
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => return Vec::new(),
    };
    complete
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// How many of `0..n` none of `events` holds.
fn missing_count<'a>(n: usize, events: impl IntoIterator<Item = &'a [u8]>) -> usize {
    let mut seen = vec![false; n];
    let mut covered = 0;
    for e in events {
        if let Some(s) = seq(e).filter(|&s| s < n) {
            if !seen[s] {
                seen[s] = true;
                covered += 1;
            }
        }
    }
    n - covered
}

/// Waits until each of `0..n` is in `archived`, the current collector or the
/// dead-letter file; gives up at `timeout`, or once nothing new has arrived
/// for `QUIET` (tailhook retries every 200 ms at most and polls files every
/// 100 ms: a silence that long means nothing more will come). Returns how
/// many are still missing.
fn wait_for_every_seq(
    n: usize,
    collectors: &Collectors,
    setup: &Setup,
    timeout: Duration,
) -> usize {
    let collector = collectors.current();
    let deadline = Instant::now() + timeout;
    let mut last = (usize::MAX, usize::MAX);
    let mut last_change = Instant::now();
    loop {
        let current = collector.events();
        let dead = dead_letters(setup);
        let missing = missing_count(
            n,
            collectors
                .archived
                .iter()
                .map(|a| &a.event[..])
                .chain(current.iter().map(|e| &e[..]))
                .chain(dead.iter().map(|e| &e[..])),
        );
        let now = Instant::now();
        if (current.len(), dead.len()) != last {
            last = (current.len(), dead.len());
            last_change = now;
        }
        if missing == 0 || now >= deadline || now - last_change >= QUIET {
            return missing;
        }
        // Each new event can fill at most one gap; the dead-letter file is
        // looked at again at least once a second.
        collector.wait_for_events(
            current.len() + missing,
            (deadline - now).min(Duration::from_secs(1)),
        );
    }
}

/// Which seqs the files named `*.c<N>` (copytruncate copies) under `dir` hold.
fn seqs_in_copies(dir: &Path, n: usize) -> Vec<bool> {
    let mut in_copy = vec![false; n];
    for entry in std::fs::read_dir(dir).expect("logs dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_copy = name
            .rsplit_once(".c")
            .is_some_and(|(_, k)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
        if !is_copy {
            continue;
        }
        let bytes = std::fs::read(entry.path()).expect("read a copy");
        for line in bytes.split(|&b| b == b'\n') {
            if let Some(s) = seq(line).filter(|&s| s < n) {
                in_copy[s] = true;
            }
        }
    }
    in_copy
}

/// The verdict on everything that arrived.
struct Report {
    lost: Vec<u64>,
    /// Extra copies, by cause.
    duplicates: BTreeMap<String, usize>,
    duplicate_total: usize,
    /// Extra copies that neither a restart of tailhook nor one of the
    /// collector explains.
    unexplained: usize,
    /// Extra copies sent by a later run of lines a run stopped by SIGTERM
    /// had delivered.
    after_sigterm: usize,
    /// The first few events that are not a written line, and how many.
    mismatched: Vec<String>,
    mismatched_total: usize,
    accepted: usize,
    dead_lettered: usize,
}

/// Checks every accepted event (in arrival order) and every line of the
/// dead-letter file against the `lines` written, and tells what each extra
/// copy of a line is due to, from which tailhook run sent each copy
/// (`endings[run - 1]`: how that run ended) and to which collector.
/// `in_copy[seq]`: a copytruncate copy holds that line too.
fn account(
    lines: &[String],
    arrived: &[Arrival],
    dead: &[Vec<u8>],
    endings: &[Option<String>],
    in_copy: &[bool],
) -> Report {
    // The first accepted copy of each line: (run, incarnation).
    let mut first: Vec<Option<(u32, u32)>> = vec![None; lines.len()];
    let mut dead_seen = vec![false; lines.len()];
    let mut duplicates: BTreeMap<String, usize> = BTreeMap::new();
    let mut unexplained = 0;
    let mut after_sigterm = 0;
    let mut mismatched = Vec::new();
    let mut mismatched_total = 0usize;
    let mut matches = |e: &[u8], what: String| -> Option<usize> {
        match seq(e) {
            Some(s) if s < lines.len() && e == lines[s].as_bytes() => Some(s),
            _ => {
                // Two events on one line: a write cut short, then the next
                // one appended on the same line.
                let torn = e.len() > 1 && e[1..].windows(7).any(|w| w == br#"{"seq":"#);
                let what = if torn {
                    format!("{what} (a line cut short, the next event glued onto it)")
                } else {
                    what
                };
                mismatched_total += 1;
                if mismatched.len() < 10 {
                    mismatched.push(format!(
                        "{what}: {}",
                        String::from_utf8_lossy(&e[..e.len().min(300)])
                    ));
                }
                None
            }
        }
    };
    for (i, a) in arrived.iter().enumerate() {
        let what = format!("accepted event #{i} (run #{})", a.run);
        let Some(s) = matches(&a.event, what) else {
            continue;
        };
        let Some((run, incarnation)) = first[s] else {
            first[s] = Some((a.run, a.incarnation));
            continue;
        };
        let why = if run != a.run {
            let ending = endings
                .get((run as usize).wrapping_sub(1))
                .cloned()
                .flatten()
                .unwrap_or_else(|| format!("an unknown end (run #{run})"));
            let note = if ending.starts_with("SIGTERM") {
                after_sigterm += 1;
                " (a SIGTERM should not make tailhook send anything again)"
            } else {
                ""
            };
            format!("sent again by a later run after the {ending}{note}")
        } else if incarnation != a.incarnation {
            "sent again by the same run after a collector restart (its answer was lost when the collector stopped)".to_string()
        } else {
            unexplained += 1;
            let copy = if in_copy[s] {
                " (a copytruncate copy holds the line too)"
            } else {
                ""
            };
            format!("UNEXPLAINED: sent twice by the same run to the same collector{copy}")
        };
        *duplicates.entry(why).or_insert(0) += 1;
    }
    for (i, e) in dead.iter().enumerate() {
        let Some(s) = matches(e, format!("dead-letter line #{i}")) else {
            continue;
        };
        if first[s].is_some() || dead_seen[s] {
            let why = "dead-lettered after a 400, and accepted or dead-lettered too: sent again after a restart";
            *duplicates.entry(why.to_string()).or_insert(0) += 1;
        }
        dead_seen[s] = true;
    }
    let lost = (0..lines.len())
        .filter(|&s| first[s].is_none() && !dead_seen[s])
        .map(|s| s as u64)
        .collect();
    Report {
        lost,
        duplicate_total: duplicates.values().sum(),
        duplicates,
        unexplained,
        after_sigterm,
        mismatched,
        mismatched_total,
        accepted: arrived.len(),
        dead_lettered: dead.len(),
    }
}

impl Report {
    fn print(&self, name: &str, seed: u64, elapsed: Duration) {
        eprintln!(
            "{name} (seed {seed:#x}, {:.1?}): {} accepted + {} dead-lettered; lost {}; duplicates {} ({} unexplained, {} after a SIGTERM)",
            elapsed,
            self.accepted,
            self.dead_lettered,
            self.lost.len(),
            self.duplicate_total,
            self.unexplained,
            self.after_sigterm
        );
        for (cause, n) in &self.duplicates {
            eprintln!("  {n:>6} {cause}");
        }
    }

    fn assert_ok(&self, name: &str, seed: u64, context: &str) {
        let mut problems = Vec::new();
        if !self.lost.is_empty() {
            problems.push(format!(
                "LOST {} events (in neither the collector nor the dead-letter file): {}",
                self.lost.len(),
                ranges(&self.lost)
            ));
        }
        if self.unexplained > 0 {
            problems.push(format!(
                "{} events sent twice by the same run to the same collector, which neither a restart of tailhook nor one of the collector explains",
                self.unexplained
            ));
        }
        if self.after_sigterm > 0 {
            problems.push(format!(
                "{} events sent again by a later run after a SIGTERM, which must deliver and save its checkpoints before it exits",
                self.after_sigterm
            ));
        }
        if !self.mismatched.is_empty() {
            problems.push(format!(
                "{} events that are not byte for byte a written line; the first:\n  {}",
                self.mismatched_total,
                self.mismatched.join("\n  ")
            ));
        }
        assert!(
            problems.is_empty(),
            "{name} seed {seed:#x}: {}\n{context}",
            problems.join("\n")
        );
    }
}

/// `[1, 2, 3, 7]` as `"1-3, 7"` (the first 20 ranges).
fn ranges(seqs: &[u64]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < seqs.len() && out.len() < 20 {
        let start = seqs[i];
        while i + 1 < seqs.len() && seqs[i + 1] == seqs[i] + 1 {
            i += 1;
        }
        out.push(if seqs[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", seqs[i])
        });
        i += 1;
    }
    out.join(", ")
}

/// Which test run, for messages.
#[derive(Clone, Copy)]
struct RunId<'a> {
    name: &'a str,
    seed: u64,
    started: Instant,
}

/// The end of every run: with the writer done and the collector up and
/// accepting, tailhook runs until each line is in the collector or the
/// dead-letter file (bounded), then gets SIGTERM (exit 0). Then every event
/// is accounted for: none lost, each byte for byte as written, no
/// violation recorded by the collector; duplicates are printed.
fn finish_and_account(
    run: &RunId,
    setup: &Setup,
    lines: &[String],
    collectors: Collectors,
    mut tailhook: Process,
    mut done: Vec<String>,
) {
    let RunId {
        name,
        seed,
        started,
    } = *run;
    let missing = wait_for_every_seq(lines.len(), &collectors, setup, FINAL_WAIT);
    done.push(format!(
        "final catch-up: {missing} still missing [{:.1?}]",
        started.elapsed()
    ));
    tailhook.terminate(seed, "at the end");
    let runs = tailhook.runs();
    let restarts = collectors.incarnation;
    let (arrived, violations) = collectors.finish();
    let dead = dead_letters(setup);
    let in_copy = seqs_in_copies(&setup.logs, lines.len());
    let report = account(lines, &arrived, &dead, &tailhook.endings, &in_copy);
    report.print(name, seed, started.elapsed());
    eprintln!("  ({runs} tailhook runs, {restarts} collector restarts)");
    let mut context = format!("steps:\n  {}", done.join("\n  "));
    let failed = !(report.lost.is_empty() && report.mismatched.is_empty() && violations.is_empty());
    if failed
        || report.unexplained > 0
        || report.after_sigterm > 0
        || std::env::var_os("TAILHOOK_CHAOS_KEEP").is_some()
    {
        let kept = keep_for_inspection(name, setup, &arrived, &tailhook.outputs);
        let _ = write!(
            context,
            "\nfiles, arrivals and tailhook logs kept in {}",
            kept.display()
        );
    }
    eprintln!("{name}: {context}");
    assert!(
        violations.is_empty(),
        "{name} seed {seed:#x}: the collector recorded violations:\n  {}",
        violations.join("\n  ")
    );
    report.assert_ok(name, seed, &context);
}

/// After a failure: copies the test's files (logs, data, config) to a
/// directory that stays, with `arrivals.txt` (`seq run collector` for each
/// accepted event, in arrival order) and `runs.log` (each tailhook run's
/// output). Returns where.
fn keep_for_inspection(
    name: &str,
    setup: &Setup,
    arrived: &[Arrival],
    outputs: &[String],
) -> PathBuf {
    fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                copy_dir(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), &target)?;
            }
        }
        Ok(())
    }
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = std::env::temp_dir().join(format!("tailhook-chaos-{slug}-{}", std::process::id()));
    let _ = copy_dir(setup.dir.path(), &dir);
    let mut text = String::new();
    for a in arrived {
        let seq = seq(&a.event).map_or(-1, |s| s as i64);
        let _ = writeln!(text, "{seq} {} {}", a.run, a.incarnation);
    }
    let _ = std::fs::write(dir.join("arrivals.txt"), text);
    let mut runs = String::new();
    for (i, out) in outputs.iter().enumerate() {
        let _ = writeln!(runs, "===== tailhook run #{} =====\n{out}", i + 1);
    }
    let _ = std::fs::write(dir.join("runs.log"), runs);
    dir
}

/// `config.toml`: one file source on `logs/<glob>` (polled every 100 ms),
/// one destination with fast timings, sending the run number in a header.
fn config_text(
    setup: &Setup,
    glob: &str,
    url: &str,
    concurrency: usize,
    max_events: usize,
) -> PathBuf {
    setup
        .builder()
        .file_source("app", glob)
        .destination(DEST, url)
        .extra(&format!(
            "request_timeout = \"2s\"\nconcurrency = {concurrency}\n\
             headers = {{ \"{RUN_HEADER}\" = \"${{{RUN_ENV}}}\" }}"
        ))
        .extra(&format!(
            "[destination.batch]\nmax_events = {max_events}\ntimeout = \"100ms\"\n\
             [destination.retry]\ninitial = \"20ms\"\nmax = \"200ms\"\n"
        ))
        .write()
}

/// The same as [`config_text`] for a `type = "forward"` destination to
/// 127.0.0.1:`port`, its tag `chaos.run<N>` telling the run.
fn forward_config_text(
    setup: &Setup,
    glob: &str,
    port: u16,
    concurrency: usize,
    max_events: usize,
) -> PathBuf {
    setup.config(&format!(
        "{}[[destination]]\nname = {DEST:?}\ntype = \"forward\"\naddress = \"127.0.0.1:{port}\"\n\
         tag = \"{RUN_TAG}${{{RUN_ENV}}}\"\nack_timeout = \"5s\"\nconcurrency = {concurrency}\n\
         [destination.batch]\nmax_events = {max_events}\ntimeout = \"100ms\"\n\
         [destination.retry]\ninitial = \"20ms\"\nmax = \"200ms\"\n",
        setup.source("app", glob, "")
    ))
}

// ---- the combined run ---------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Let delivery go on (and check that it does).
    Progress,
    /// `app.log` → `app.log.N`, new `app.log`, while the writer writes.
    Rename,
    /// Copy `app.log` to `app.log.cN` and truncate it, writer paused.
    CopyTruncate,
    /// copytruncate, then `kill -9` soon after.
    CopyTruncateThenKill,
    /// The collector goes away for a few failed attempts, and comes back on
    /// the same port. Sometimes tailhook is killed and restarted meanwhile.
    Outage,
    /// `kill -9`, then a restart. Sometimes the file is rotated while
    /// tailhook is down.
    Kill9,
    /// SIGTERM (must exit 0), then a restart.
    Term,
    /// The collector answers 400 to a few requests: dead letters.
    Reject,
    /// Over forward: the collector reads a few messages and closes their
    /// connections without acknowledging them (`in_forward` going away
    /// before its ack); they are sent again.
    DropBeforeAck,
}

struct Plan {
    events: usize,
    copytruncate: bool,
    /// Wallarm-shaped lines that all start alike, instead of `{"seq":N,…`.
    alike: bool,
    protocol: Protocol,
}

/// The faults in a seeded random order, calm steps first and last.
fn script(rng: &mut Rng, plan: &Plan) -> Vec<Fault> {
    let mut steps = Vec::new();
    let mut add = |f: Fault, n: usize| steps.extend(std::iter::repeat_n(f, n));
    add(Fault::Rename, 7);
    if plan.copytruncate {
        add(Fault::CopyTruncate, 3);
        add(Fault::CopyTruncateThenKill, 2);
    }
    add(Fault::Outage, 5);
    add(Fault::Kill9, 6);
    add(Fault::Term, 1);
    match plan.protocol {
        Protocol::Http => add(Fault::Reject, 4),
        Protocol::Forward => add(Fault::DropBeforeAck, 4),
    }
    add(Fault::Progress, 6);
    rng.shuffle(&mut steps);
    steps.insert(0, Fault::Progress);
    steps.push(Fault::Progress);
    steps
}

/// Splits `total` into `parts` random quotas.
fn quotas(rng: &mut Rng, total: usize, parts: usize) -> Vec<usize> {
    let weights: Vec<usize> = (0..parts).map(|_| rng.range(50, 150)).collect();
    let sum: usize = weights.iter().sum();
    let mut q: Vec<usize> = weights.iter().map(|w| total * w / sum).collect();
    let given: usize = q.iter().sum();
    *q.last_mut().unwrap() += total - given;
    q
}

fn run_combined(name: &str, plan: Plan) {
    let seed = seed();
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let steps = script(&mut rng, &plan);
    let quota = quotas(&mut rng, plan.events, steps.len());
    eprintln!(
        "{name}: seed {seed:#x} (TAILHOOK_CHAOS_SEED), {} events, script: {steps:?}",
        plan.events
    );

    let setup = Setup::new();
    let log = setup.log("app.log");
    let lines = Arc::new(if plan.alike {
        wallarm_hits(0, plan.events)
    } else {
        hits(0, plan.events, EVENT_BYTES)
    });
    let mut collectors = Collectors::start_speaking(plan.protocol);
    let config = match plan.protocol {
        Protocol::Http => config_text(&setup, "app.log*", &collectors.url(), 2, 500),
        Protocol::Forward => forward_config_text(&setup, "app.log*", collectors.port.port, 2, 500),
    };
    let mut writer = Writer::spawn(vec![log.clone()], lines.clone(), seed);
    let mut tailhook = Process::start(config);
    let mut renames = 0usize;
    let mut copies = 0usize;
    let mut done: Vec<String> = Vec::new();

    for (i, (&fault, &q)) in steps.iter().zip(&quota).enumerate() {
        let label = format!("step {i:02} {fault:?}");
        let at = format!("at step {i:02}");
        let mut note = String::new();
        let from = collectors.current().event_count();
        let checkpoint_at_start = checkpoint_now(&setup);
        if fault != Fault::Kill9 {
            writer.write(q);
        }
        match fault {
            Fault::Progress => {
                // Liveness: the quota just written must arrive.
                let k = rng.range(q / 2, q);
                assert!(
                    collectors.wait_more(from, k, STEP_WAIT),
                    "{name} seed {seed:#x}: {label}: {k} events did not arrive within {STEP_WAIT:?}\nsteps done:\n  {}",
                    done.join("\n  ")
                );
                let _ = write!(note, "waited for {k} events");
            }
            Fault::Rename => {
                // While the writer is (probably) mid-quota and tailhook behind.
                let k = rng.range(0, q / 4);
                collectors.wait_more(from, k, CHAOS_WAIT);
                renames += 1;
                let to = format!("app.log.{renames}");
                let rotated = rename_rotate(&log, &setup.log(&to));
                let _ = write!(note, "after {k} events, app.log → {to} ({rotated})");
            }
            Fault::CopyTruncate | Fault::CopyTruncateThenKill => {
                let k = rng.range(0, q / 2);
                collectors.wait_more(from, k, CHAOS_WAIT);
                copies += 1;
                let to = format!("app.log.c{copies}");
                let copied = writer.copytruncate(&log, &setup.log(&to));
                let _ = write!(note, "after {k} events, copytruncate → {to} ({copied})");
                if fault == Fault::CopyTruncateThenKill {
                    // Sometimes once a checkpoint that knows of the copy is saved.
                    let before = checkpoint_now(&setup);
                    let saved =
                        rng.one_in(2) && wait_checkpoint_saved(&setup, &before, CHECKPOINT_WAIT);
                    let after = collectors.current().event_count();
                    let k2 = rng.range(0, q / 4);
                    collectors.wait_more(after, k2, CHAOS_WAIT);
                    tailhook.kill9(&at);
                    tailhook.restart();
                    let _ = write!(
                        note,
                        "; checkpoint saved ({saved}), kill -9 after {k2} more events"
                    );
                }
            }
            Fault::Outage => {
                let k = rng.range(0, q / 2);
                collectors.wait_more(from, k, CHAOS_WAIT);
                collectors.stop();
                let attempts = rng.range(2, 8);
                let seen = tailhook.th().stderr().matches(DELIVERY_FAILED).count();
                let failed =
                    tailhook
                        .th()
                        .wait_for_log_count(DELIVERY_FAILED, seen + attempts, CHAOS_WAIT);
                let _ = write!(
                    note,
                    "collector down after {k} events, {attempts} failed attempts ({failed})"
                );
                if rng.one_in(2) {
                    tailhook.kill9(&format!("{at}, the collector being down"));
                    tailhook.restart();
                    let again = tailhook.th().wait_for_log(DELIVERY_FAILED, CHAOS_WAIT);
                    let _ = write!(
                        note,
                        "; kill -9 + restart while down (failing again: {again})"
                    );
                }
                collectors.restart();
                let k2 = rng.range(1, q / 2);
                let arrived = collectors.wait_more(0, k2, CHAOS_WAIT);
                let _ = write!(note, "; back, {k2} events arrived ({arrived})");
            }
            Fault::Kill9 => {
                // Mostly just after a checkpoint save (tailhook saves at
                // most once a second, so wait for one before writing), then
                // in the middle of the quota: the restart resumes from a
                // recent checkpoint with batches in flight. Otherwise at any
                // point of the quota.
                let saved = rng.range(0, 2) > 0
                    && wait_checkpoint_saved(&setup, &checkpoint_at_start, CHECKPOINT_WAIT);
                writer.write(q);
                let k = rng.range(0, q / 2);
                collectors.wait_more(from, k, CHAOS_WAIT);
                tailhook.kill9(&at);
                let _ = write!(
                    note,
                    "checkpoint just saved ({saved}), kill -9 after {} events",
                    collectors.current().event_count() - from
                );
                if rng.one_in(3) {
                    renames += 1;
                    let to = format!("app.log.{renames}");
                    let rotated = rename_rotate(&log, &setup.log(&to));
                    let _ = write!(note, "; while down app.log → {to} ({rotated})");
                }
                tailhook.restart();
            }
            Fault::Term => {
                let k = rng.range(0, q);
                collectors.wait_more(from, k, CHAOS_WAIT);
                tailhook.terminate(seed, &at);
                tailhook.restart();
                let _ = write!(note, "SIGTERM after {k} events, restarted");
            }
            Fault::Reject => {
                let c = collectors.current().http();
                let requests = c.request_count();
                c.respond_with_body(400, "chaos: rejected");
                let n = rng.range(1, 4);
                let got = c.wait_for_requests(requests + n, CHAOS_WAIT);
                c.clear_override();
                let _ = write!(note, "400 for {n} requests ({got})");
            }
            Fault::DropBeforeAck => {
                let Current::Forward(f) = collectors.current() else {
                    panic!("a forward fault on an HTTP run");
                };
                let received = f.received().len();
                let n = rng.range(1, 4);
                f.drop_next(n);
                let got = f.wait_received(received + n, CHAOS_WAIT);
                f.drop_next(0);
                let _ = write!(
                    note,
                    "{n} messages read and their connections closed before the ack ({got})"
                );
            }
        }
        done.push(format!(
            "{label}: wrote {q} (total {}), {note}; arrivals {}, tailhook run #{} [{:.1?}]",
            writer.written(),
            collectors.arrivals(),
            tailhook.runs(),
            started.elapsed()
        ));
    }

    assert_eq!(writer.finish(), plan.events);
    done.push(format!(
        "{renames} rename rotations, {copies} copytruncates"
    ));
    finish_and_account(
        &RunId {
            name,
            seed,
            started,
        },
        &setup,
        &lines,
        collectors,
        tailhook,
        done,
    );
}

/// The main run: 100,000 events through rename rotation, copytruncate,
/// collector outages, `kill -9`, SIGTERM and 400 rejections.
#[test]
fn combined_chaos_loses_nothing() {
    run_combined(
        "combined chaos",
        Plan {
            events: 100_000,
            copytruncate: true,
            alike: false,
            protocol: Protocol::Http,
        },
    );
}

/// The same faults over lines whose first ~1 KiB is the same everywhere:
/// file identity cannot lean on first bytes.
#[test]
fn combined_chaos_with_lines_that_start_alike_loses_nothing() {
    run_combined(
        "combined chaos, lines that start alike",
        Plan {
            events: 30_000,
            copytruncate: true,
            alike: true,
            protocol: Protocol::Http,
        },
    );
}

/// The same faults over `type = "forward"` to the forward emulator, with
/// Wallarm-shaped lines that start alike: a batch counts only when
/// acknowledged, the emulator is stopped and started again on its port,
/// and instead of 400s it reads a few messages and drops their
/// connections before acknowledging them. Every line must be acknowledged
/// at least once, its JSON text (keys in the order sent) byte for byte the
/// line written; duplicates only where a kill -9 or a collector restart
/// explains them.
#[test]
fn combined_chaos_over_forward_loses_nothing() {
    run_combined(
        "combined chaos over forward",
        Plan {
            events: 30_000,
            copytruncate: true,
            alike: true,
            protocol: Protocol::Forward,
        },
    );
}

/// The same without copytruncate, so that rename rotation, outages, crashes
/// and rejections are proven on their own whatever copytruncate does.
#[test]
fn combined_chaos_without_copytruncate_loses_nothing() {
    run_combined(
        "combined chaos without copytruncate",
        Plan {
            events: 100_000,
            copytruncate: false,
            alike: false,
            protocol: Protocol::Http,
        },
    );
}

// ---- single-fault variants --------------------------------------------------------

/// `kill -9` again and again while three files are written at once, with
/// four requests in flight (acknowledgements complete out of order), and
/// files rotated (renamed, or copied and truncated) while tailhook is down.
/// After every kill the checkpoint on disk is whole (written atomically).
#[test]
fn kill_9_again_and_again_with_several_files_loses_nothing() {
    const NAME: &str = "kill -9 with several files";
    const EVENTS: usize = 30_000;
    const KILLS: usize = 12;
    let seed = seed();
    let started = Instant::now();
    let mut rng = Rng::new(seed ^ 0x6b69_6c6c);
    eprintln!("{NAME}: seed {seed:#x} (TAILHOOK_CHAOS_SEED), {EVENTS} events, {KILLS} kills");

    let setup = Setup::new();
    let files = ["svc-a.log", "svc-b.log", "svc-c.log"];
    let lines = Arc::new(hits(0, EVENTS, EVENT_BYTES));
    let collectors = Collectors::start();
    let config = config_text(&setup, "svc-*.log*", &collectors.url(), 4, 100);
    let writer = Writer::spawn(
        files.iter().map(|f| setup.log(f)).collect(),
        lines.clone(),
        seed,
    );
    let mut tailhook = Process::start(config);
    let mut done = Vec::new();
    let mut rotations = 0usize;

    for (round, q) in quotas(&mut rng, EVENTS, KILLS).into_iter().enumerate() {
        let c = collectors.current();
        let from = c.event_count();
        let saved = rng.one_in(2)
            && wait_checkpoint_saved(&setup, &checkpoint_now(&setup), CHECKPOINT_WAIT);
        writer.write(q);
        let k = rng.range(0, q);
        c.wait_for_events(from + k, CHAOS_WAIT);
        tailhook.kill9(&format!("in round {round:02}"));
        let mut note = format!(
            "round {round:02}: wrote {q}, checkpoint just saved ({saved}), kill -9 after {} events",
            c.event_count() - from
        );
        // The checkpoint on disk is always a whole one.
        let cp = checkpoint_now(&setup);
        if !cp.is_empty() {
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&cp);
            assert!(
                parsed
                    .as_ref()
                    .is_ok_and(|v| v["version"].is_u64() && v["files"].is_array()),
                "{NAME} seed {seed:#x}: after {note}, the checkpoint is not whole: {}",
                String::from_utf8_lossy(&cp)
            );
        }
        // While it is down: sometimes a rotation.
        let file = files[rng.range(0, files.len() - 1)];
        match rng.range(0, 3) {
            0 => {
                rotations += 1;
                let to = format!("{file}.{rotations}");
                let r = rename_rotate(&setup.log(file), &setup.log(&to));
                let _ = write!(note, "; while down {file} → {to} ({r})");
            }
            1 => {
                rotations += 1;
                let to = format!("{file}.c{rotations}");
                let r = writer.copytruncate(&setup.log(file), &setup.log(&to));
                let _ = write!(note, "; while down copytruncate {file} → {to} ({r})");
            }
            _ => {}
        }
        tailhook.restart();
        done.push(note);
    }
    drop(writer);
    finish_and_account(
        &RunId {
            name: NAME,
            seed,
            started,
        },
        &setup,
        &lines,
        collectors,
        tailhook,
        done,
    );
}

/// copytruncate while tailhook is behind (here: its collector is down, so
/// reading has stopped part-way through the file), and the file grows past
/// where tailhook stopped reading before it looks again: the new lines at
/// the start of the truncated file must still be read, and the lines it had
/// not read yet are in the copy (`app.log.c1`, matched by the glob).
#[test]
fn copytruncate_while_tailhook_is_behind_loses_nothing() {
    const NAME: &str = "copytruncate while behind";
    let seed = seed();
    let started = Instant::now();
    let setup = Setup::new();
    let log = setup.log("app.log");
    let lines = Arc::new(hits(0, 36_000, EVENT_BYTES));
    let mut collectors = Collectors::start();
    let config = config_text(&setup, "app.log*", &collectors.url(), 1, 500);
    let writer = Writer::spawn(vec![log.clone()], lines.clone(), seed);
    let tailhook = Process::start(config);
    let mut done = Vec::new();

    writer.write(1_000);
    assert!(collectors.wait_more(0, 1_000, STEP_WAIT), "first events");
    collectors.stop();
    // 4 MB: far more than tailhook holds while its collector is down (a few
    // chunks of 256 KiB and a few batches), so it stops reading part-way.
    writer.write(20_000);
    writer.wait_written(21_000);
    let failing = tailhook
        .th()
        .wait_for_log_count(DELIVERY_FAILED, 5, STEP_WAIT);
    done.push(format!(
        "collector down, 20000 more lines written, delivery failing ({failing})"
    ));
    let copied = writer.copytruncate(&log, &setup.log("app.log.c1"));
    // 3 MB of new lines: the file is now longer than where tailhook was.
    writer.write(15_000);
    writer.wait_written(36_000);
    done.push(format!(
        "copytruncate app.log → app.log.c1 ({copied}), then 15000 new lines"
    ));
    collectors.restart();
    drop(writer);
    finish_and_account(
        &RunId {
            name: NAME,
            seed,
            started,
        },
        &setup,
        &lines,
        collectors,
        tailhook,
        done,
    );
}

/// `kill -9` while batches rejected with 400 are being appended to the
/// dead-letter file (big batches, so an append takes a while; each kill comes
/// as soon as the file grows): the file must stay one whole event a line. A
/// crash can cut an append short; the next append must not glue its first
/// event onto that broken line, where neither `dead-letter resend` nor a
/// person could get it back. And nothing is lost.
///
/// Only about one kill in ten lands within an append, so after `KILLS`
/// rounds the test goes on (with more events to dead-letter, up to
/// `MAX_KILLS` rounds) until a run has logged that it cut a torn line back:
/// otherwise the repair might never have run.
#[test]
fn kill_9_while_dead_lettering_keeps_whole_lines() {
    const NAME: &str = "kill -9 while dead-lettering";
    const EVENTS: usize = 100_000;
    const KILLS: usize = 20;
    const MAX_KILLS: usize = 150;
    /// Logged by an append that finds the file ending in a half line.
    const REPAIRED: &str = "dead-letter file ended in a half line";
    let seed = seed();
    let started = Instant::now();
    let setup = Setup::new();
    let log = setup.log("app.log");
    let mut lines = hits(0, EVENTS, EVENT_BYTES);
    append(&log, &lines);
    let collectors = Collectors::start();
    collectors
        .current()
        .http()
        .respond_with_body(400, "chaos: rejected");
    // About 1 MB a batch, so about 1 MB an append.
    let config = config_text(&setup, "app.log", &collectors.url(), 2, 5_000);
    let mut tailhook = Process::start(config);
    let dead_letter = setup.dead_letter(DEST);
    let size = || std::fs::metadata(&dead_letter).map_or(0, |m| m.len());
    let mut done = Vec::new();
    let mut cut_short = 0;
    let repairs = |p: &Process| p.outputs.iter().filter(|o| o.contains(REPAIRED)).count();
    let mut round = 0;
    while round < KILLS || (repairs(&tailhook) == 0 && round < MAX_KILLS) {
        if round >= KILLS {
            // One more batch, so that there is always one to dead-letter.
            let more = hits(lines.len(), 5_000, EVENT_BYTES);
            append(&log, &more);
            lines.extend(more);
        }
        let before = size();
        let deadline = Instant::now() + STEP_WAIT;
        // Busy: the point is to kill within the append.
        while size() == before && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        tailhook.kill9(&format!("in round {round:02}"));
        let whole =
            std::fs::read(&dead_letter).map_or(true, |b| b.last().is_none_or(|&c| c == b'\n'));
        if !whole {
            cut_short += 1;
        }
        done.push(format!(
            "round {round:02}: kill -9 once the dead-letter file grew past {before} bytes; it ends {}",
            if whole { "with a whole line" } else { "IN THE MIDDLE OF A LINE" }
        ));
        tailhook.restart();
        round += 1;
    }
    collectors.current().http().clear_override();
    let repaired = repairs(&tailhook);
    done.push(format!(
        "{cut_short} of {round} kills left the dead-letter file ending in the middle of a line; {repaired} runs cut one back"
    ));
    assert!(
        repaired > 0,
        "{NAME} seed {seed:#x}: in {round} kills, no run found a torn dead-letter line to cut back ({cut_short} kills tore one): the repair was never exercised\n  {}",
        done.join("\n  ")
    );
    finish_and_account(
        &RunId {
            name: NAME,
            seed,
            started,
        },
        &setup,
        &lines,
        collectors,
        tailhook,
        done,
    );
}
