//! Running the real `tailhook` binary.
//!
//! Every wait is bounded and event-driven: output is collected by one thread
//! per pipe and waited for on a Condvar; exits are waited for by a waiter
//! thread and a channel with a timeout. A [`Tailhook`] that is dropped while
//! still running is killed and reaped, so every test cleans up its process.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The longest any helper here waits for the process to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long to wait for the output pipes to reach end-of-file once the
/// process has exited (a grandchild could keep them open).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The proxy variables tailhook reads (and `ALL_PROXY`, which it does not).
pub const PROXY_VARS: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A `Command` for the `tailhook` binary built by cargo for this test run,
/// with the proxy variables of the developer's environment removed, so no
/// test goes through a proxy it did not start; a test sets them in the
/// environment it passes (`cmd.env` after this wins).
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tailhook"));
    clear_proxy_env(&mut cmd);
    cmd
}

/// Removes from `cmd`'s environment every proxy variable it does not set
/// itself. Every process spawned here goes through it, so a `sh -c 'exec
/// tailhook …'` wrapper does not pass the developer's proxy on either.
pub fn clear_proxy_env(cmd: &mut Command) {
    let set: Vec<_> = cmd
        .get_envs()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.to_os_string())
        .collect();
    for var in PROXY_VARS {
        if !set.iter().any(|k| k == var) {
            cmd.env_remove(var);
        }
    }
}

/// How a process ended, with everything it printed.
#[derive(Clone, Debug)]
pub struct Exit {
    /// The exit code; `None` when ended by a signal.
    pub code: Option<i32>,
    /// The signal that ended the process, if any.
    pub signal: Option<i32>,
    pub stderr: String,
    pub stdout: String,
}

impl Exit {
    /// Exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Both streams, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// The output of a child process, filled by one reader thread per pipe.
struct Output {
    streams: Mutex<Streams>,
    changed: Condvar,
}

#[derive(Default)]
struct Streams {
    stdout: String,
    stderr: String,
    stdout_eof: bool,
    stderr_eof: bool,
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `done` holds or `timeout` passes; returns whether it held.
    fn wait_until(&self, timeout: Duration, done: impl Fn(&Streams) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut streams = self.lock();
        loop {
            if done(&streams) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            streams = self
                .changed
                .wait_timeout(streams, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

fn spawn_reader(
    pipe: impl Read + Send + 'static,
    output: Arc<Output>,
    which: Stream,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).unwrap_or(0);
            let mut streams = output.lock();
            if n == 0 {
                match which {
                    Stream::Stdout => streams.stdout_eof = true,
                    Stream::Stderr => streams.stderr_eof = true,
                }
                drop(streams);
                output.changed.notify_all();
                return;
            }
            let text = String::from_utf8_lossy(&line);
            match which {
                Stream::Stdout => streams.stdout.push_str(&text),
                Stream::Stderr => streams.stderr.push_str(&text),
            }
            drop(streams);
            output.changed.notify_all();
            // Shown by the test harness only when the test fails.
            match which {
                Stream::Stdout => eprint!("[tailhook stdout] {text}"),
                Stream::Stderr => eprint!("[tailhook stderr] {text}"),
            }
        }
    })
}

/// Spawns `cmd` with stdin closed and both outputs collected.
fn spawn_collected(cmd: Command) -> (Child, Arc<Output>) {
    spawn_collected_with_stdin(cmd, Stdio::null())
}

/// Spawns `cmd` with the given stdin and both outputs collected.
fn spawn_collected_with_stdin(mut cmd: Command, stdin: Stdio) -> (Child, Arc<Output>) {
    clear_proxy_env(&mut cmd);
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let output = Arc::new(Output {
        streams: Mutex::new(Streams::default()),
        changed: Condvar::new(),
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    // The reader threads end at end-of-file; they are not joined.
    spawn_reader(stdout, Arc::clone(&output), Stream::Stdout);
    spawn_reader(stderr, Arc::clone(&output), Stream::Stderr);
    (child, output)
}

/// Waits for `child` to exit for at most `timeout`. On timeout the child is
/// killed with SIGKILL and reaped, and `Err(status)` is returned.
fn wait_bounded(child: Child, timeout: Duration) -> Result<ExitStatus, ExitStatus> {
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    let mut child = child;
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(status) => Ok(status.expect("wait for tailhook")),
        Err(_) => {
            // Not reaped yet (the waiter has not returned), so the pid is
            // still ours.
            let _ = kill(pid, Signal::SIGKILL);
            let status = rx
                .recv()
                .expect("waiter thread")
                .expect("wait for tailhook");
            Err(status)
        }
    }
}

fn finish(status: ExitStatus, output: &Output) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    output.wait_until(DRAIN_TIMEOUT, |s| s.stdout_eof && s.stderr_eof);
    let streams = output.lock();
    Exit {
        code: status.code(),
        signal: status.signal(),
        stderr: streams.stderr.clone(),
        stdout: streams.stdout.clone(),
    }
}

/// A running `tailhook run -c <config>`.
pub struct Tailhook {
    child: Option<Child>,
    pid: u32,
    output: Arc<Output>,
}

impl Tailhook {
    /// Starts `tailhook run -c <config>`.
    pub fn start(config: &Path) -> Tailhook {
        Tailhook::start_with_env(config, &[])
    }

    /// Starts `tailhook run -c <config>` with extra environment variables.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Tailhook {
        let mut cmd = bin();
        cmd.arg("run").arg("-c").arg(config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Tailhook::spawn(cmd)
    }

    /// Starts an arbitrary command (normally from [`bin`]) as a [`Tailhook`].
    pub fn spawn(cmd: Command) -> Tailhook {
        let (child, output) = spawn_collected(cmd);
        Tailhook {
            pid: child.id(),
            child: Some(child),
            output,
        }
    }

    /// Starts an arbitrary command (normally from [`bin`]) as a [`Tailhook`]
    /// with its standard input piped: write to the returned handle, and drop
    /// it to close the pipe (end of input).
    pub fn spawn_with_stdin(cmd: Command) -> (Tailhook, ChildStdin) {
        let (mut child, output) = spawn_collected_with_stdin(cmd, Stdio::piped());
        let stdin = child.stdin.take().expect("piped stdin");
        let tailhook = Tailhook {
            pid: child.id(),
            child: Some(child),
            output,
        };
        (tailhook, stdin)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.output.lock().stderr.clone()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        self.output.lock().stdout.clone()
    }

    /// Waits until `needle` appears in stderr or stdout (logs may go to
    /// either), or `timeout`. Returns whether it appeared.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_count(needle, 1, timeout)
    }

    /// Waits until `needle` appears at least `count` times in stderr plus
    /// stdout, or `timeout`.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        self.output.wait_until(timeout, |s| {
            s.stderr.matches(needle).count() + s.stdout.matches(needle).count() >= count
        })
    }

    /// Sends `signal` to the process (e.g. SIGHUP).
    pub fn signal(&self, signal: Signal) {
        if self.child.is_some() {
            kill(Pid::from_raw(self.pid as i32), signal)
                .unwrap_or_else(|e| panic!("kill -{signal} {}: {e}", self.pid));
        }
    }

    /// Sends SIGTERM and waits up to 60 s for the exit. Past that the process
    /// is killed with SIGKILL and this panics with its output.
    pub fn terminate(mut self) -> Exit {
        let child = self.child.take().expect("tailhook already reaped");
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        match wait_bounded(child, EXIT_TIMEOUT) {
            Ok(status) => finish(status, &self.output),
            Err(status) => {
                let exit = finish(status, &self.output);
                panic!(
                    "tailhook did not exit within {EXIT_TIMEOUT:?} of SIGTERM; killed.\n{}",
                    exit.output()
                );
            }
        }
    }

    /// Waits up to `timeout` for the process to exit by itself. Past that it
    /// is killed with SIGKILL and this panics with its output.
    pub fn wait_exit(mut self, timeout: Duration) -> Exit {
        let child = self.child.take().expect("tailhook already reaped");
        match wait_bounded(child, timeout) {
            Ok(status) => finish(status, &self.output),
            Err(status) => {
                let exit = finish(status, &self.output);
                panic!(
                    "tailhook did not exit by itself within {timeout:?}; killed.\n{}",
                    exit.output()
                );
            }
        }
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn kill9(mut self) -> Exit {
        let mut child = self.child.take().expect("tailhook already reaped");
        let _ = child.kill();
        let status = child.wait().expect("wait for killed tailhook");
        finish(status, &self.output)
    }
}

impl Drop for Tailhook {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `tailhook <args>` to completion (stdin closed) with extra
/// environment variables, waiting at most 60 s; past that the process is
/// killed and this panics with its output.
pub fn run_cmd(args: &[&str], env: &[(&str, &str)]) -> Exit {
    let mut cmd = bin();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (child, output) = spawn_collected(cmd);
    match wait_bounded(child, EXIT_TIMEOUT) {
        Ok(status) => finish(status, &output),
        Err(status) => {
            let exit = finish(status, &output);
            panic!(
                "tailhook {args:?} did not exit within {EXIT_TIMEOUT:?}; killed.\n{}",
                exit.output()
            );
        }
    }
}
