//! The `tcp`, `unix` and `udp` inputs: newline-delimited JSON from sockets,
//! appended to the source's spool.
//!
//! Backpressure is the socket itself: while the spool is full a connection
//! is not read, so its sender's writes block in the kernel and nothing is
//! buffered without bound. Datagrams cannot wait: they are dropped and
//! counted instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket, UnixListener, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lines::LineBuffer;
use super::listen::{self, Listener, Report, Serve, Timeout};
use crate::config::{Input, SourceConfig};
use crate::spool::{SpoolError, SpoolWriter};

/// A bound socket input, ready to run.
pub enum SocketInput {
    /// A TCP listener, with TLS when configured.
    Tcp {
        /// The listener.
        listener: TcpListener,
        /// TLS, when configured.
        tls: Option<TlsAcceptor>,
        /// Connections served at once.
        max_connections: usize,
        /// A connection silent this long is closed.
        idle_timeout: Duration,
    },
    /// A Unix stream listener; its socket file is removed when it stops.
    Unix {
        /// The listener.
        listener: UnixListener,
        /// Its socket file.
        path: PathBuf,
        /// Connections served at once.
        max_connections: usize,
        /// A connection silent this long is closed.
        idle_timeout: Duration,
    },
    /// A UDP socket.
    Udp(UdpSocket),
}

impl SocketInput {
    /// Binds the socket of a `tcp`, `unix` or `udp` source, so that a port in
    /// use or a bad path fails the start in words. None for other types.
    pub async fn bind(src: &SourceConfig) -> anyhow::Result<Option<SocketInput>> {
        let name = &src.name;
        Ok(Some(match &src.input {
            Input::Tcp {
                listen,
                tls,
                max_connections,
                idle_timeout,
            } => {
                let tls = tls
                    .as_ref()
                    .map(|t| crate::tls::acceptor(name, t, false))
                    .transpose()?;
                let listener = TcpListener::bind(listen).await.map_err(|e| {
                    anyhow::anyhow!("source `{name}`: cannot listen on {listen}: {e}")
                })?;
                tracing::info!(source = %name, address = %listener.local_addr()?, tls = tls.is_some(), "tcp input listening");
                SocketInput::Tcp {
                    listener,
                    tls,
                    max_connections: *max_connections,
                    idle_timeout: *idle_timeout,
                }
            }
            Input::Unix {
                path,
                mode,
                max_connections,
                idle_timeout,
            } => {
                let listener = bind_unix(name, path, *mode).await?;
                tracing::info!(source = %name, path = %path.display(), "unix input listening");
                SocketInput::Unix {
                    listener,
                    path: path.clone(),
                    max_connections: *max_connections,
                    idle_timeout: *idle_timeout,
                }
            }
            Input::Udp { listen } => {
                let socket = UdpSocket::bind(listen).await.map_err(|e| {
                    anyhow::anyhow!("source `{name}`: cannot listen on {listen}: {e}")
                })?;
                tracing::info!(source = %name, address = %socket.local_addr()?, "udp input listening");
                SocketInput::Udp(socket)
            }
            _ => return Ok(None),
        }))
    }

    /// Serves until `stop.reading` fires, then closes the listener and
    /// returns the connections still open: they finish the line in
    /// progress (see [`read_lines`]) and close; wait for them to be sure
    /// that every line read is in the spool (or, for datagrams, counted as
    /// dropped).
    pub async fn run(
        self,
        source: String,
        max_line: usize,
        writer: SpoolWriter,
        stop: Stop,
    ) -> TaskTracker {
        let (listener, tls, max_connections, idle_timeout) = match self {
            SocketInput::Tcp {
                listener,
                tls,
                max_connections,
                idle_timeout,
            } => (Listener::Tcp(listener), tls, max_connections, idle_timeout),
            SocketInput::Unix {
                listener,
                path,
                max_connections,
                idle_timeout,
            } => (
                Listener::Unix(listener, path),
                None,
                max_connections,
                idle_timeout,
            ),
            SocketInput::Udp(socket) => {
                receive(socket, &source, max_line, &writer, &stop).await;
                let none = TaskTracker::new();
                none.close();
                return none;
            }
        };
        let report = Report::input(&source);
        let how = Serve {
            report: report.clone(),
            max_connections,
            tls: tls.map(|t| (t, listen::HANDSHAKE_TIMEOUT)),
            // A reload: connections the kernel has already accepted would
            // be reset by the close, losing what their senders wrote. They
            // are taken too, and finish their line like the others.
            take_queued_unless: Some(stop.shutdown.clone()),
        };
        let source: Arc<str> = source.into();
        let reading = stop.reading.clone();
        listen::serve(listener, how, &reading, move |conn, peer| {
            let (writer, stop, source, report) =
                (writer.clone(), stop.clone(), source.clone(), report.clone());
            async move {
                let idle = Idle {
                    after: idle_timeout,
                    report: &report,
                };
                read_lines(conn, &peer, &source, max_line, &writer, &stop, Some(idle)).await;
            }
        })
        .await
    }
}

/// A stream connection's idle timeout: silent this long, it is closed
/// (and reported).
pub(crate) struct Idle<'a> {
    /// How long it may be silent.
    pub after: Duration,
    /// Where its cut is counted and logged.
    pub report: &'a Report,
}

/// How long a connection that a reload closes gets to finish its line.
pub const DRAIN: Duration = Duration::from_secs(5);

/// How a reader of a stream is told to stop.
#[derive(Clone)]
pub struct Stop {
    /// A reload stops this input: finish the line in progress (reading on
    /// while what was read ends inside a line, for at most [`DRAIN`]),
    /// write it, then close.
    pub reading: CancellationToken,
    /// Shutdown: stop at once.
    pub shutdown: CancellationToken,
    /// A read can be abandoned without losing what it would have read
    /// (sockets). A read of stdin cannot: the one in progress is finished,
    /// however long it takes, and no read is started once what was read
    /// ends at a line boundary.
    pub cancel_safe: bool,
}

/// Reads one stream's lines into the spool until it ends (true) or it is
/// stopped (false). Stopped by a reload (`stop.reading`), it goes on
/// while what was read ends inside a line, then closes as soon as nothing
/// more is waiting, so a line the sender completes after the reload is
/// written whole and nothing already in the socket is dropped; a sender
/// that is still sending after [`DRAIN`] is closed on (an unfinished line
/// is then written as it is). Stopped by shutdown, it stops at once.
pub(crate) async fn read_lines<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: &str,
    source: &str,
    max_line: usize,
    writer: &SpoolWriter,
    stop: &Stop,
    idle: Option<Idle<'_>>,
) -> bool {
    let mut lines = LineBuffer::new(max_line);
    let mut ended = false;
    let mut draining: Option<Drain> = None;
    // One timer for the connection's silence, moved on before each read
    // (not one made per read); time spent waiting for the spool is not
    // silence.
    let idle_for = idle
        .as_ref()
        .map_or(Duration::from_secs(365 * 24 * 3600), |i| i.after);
    let silence = tokio::time::sleep(idle_for);
    tokio::pin!(silence);
    loop {
        // While the spool cannot be written (a full disk), take nothing
        // more: the sender keeps what it has not written yet.
        if draining.is_none() && !writer.wait_writable(&stop.shutdown).await {
            break;
        }
        let read = match &mut draining {
            None if stop.reading.is_cancelled() => {
                // No read is in progress: the last one completed.
                draining = Some(Drain::new(false));
                continue;
            }
            None => {
                silence
                    .as_mut()
                    .reset(tokio::time::Instant::now() + idle_for);
                tokio::select! {
                biased;
                _ = stop.shutdown.cancelled() => break,
                r = stream.read_buf(lines.space()) => r,
                // A connection silent this long is closed: what it sent is
                // kept, as when it ends.
                _ = silence.as_mut(), if idle.is_some() => {
                    if let Some(i) = &idle {
                        i.report.cut(peer, Timeout::Idle, format_args!(
                            "closing a connection silent for {}",
                            crate::config::humanize_duration(i.after)
                        ));
                    }
                    ended = true;
                    break;
                }
                // The read above was polled and is waiting: for stdin it
                // is in progress and cannot be abandoned.
                _ = stop.reading.cancelled() => {
                    draining = Some(Drain::new(!stop.cancel_safe));
                    continue;
                }
                }
            }
            Some(d) if stop.cancel_safe && tokio::time::Instant::now() >= d.deadline => {
                let unfinished = if lines.at_line_start() {
                    ""
                } else {
                    "; what it sent of its last line is kept as a line of its own"
                };
                tracing::warn!(
                    source,
                    peer,
                    "the connection was still sending {DRAIN:?} after the reload that stops this input: closing it{unfinished}"
                );
                break;
            }
            Some(d) if lines.at_line_start() && !d.read_pending => {
                if !stop.cancel_safe {
                    break;
                }
                // Close unless more has arrived already.
                match stream.read_buf(lines.space()).now_or_never() {
                    Some(r) => r,
                    None => break,
                }
            }
            Some(d) => {
                d.read_pending = false;
                let deadline = d.deadline;
                tokio::select! {
                    biased;
                    _ = stop.shutdown.cancelled() => break,
                    r = stream.read_buf(lines.space()) => r,
                    _ = tokio::time::sleep_until(deadline), if stop.cancel_safe => continue,
                }
            }
        };
        match read {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(_) => {
                if let Some(l) = lines.take() {
                    if !writer.append(l, &stop.shutdown).await {
                        return false;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(source, peer, "read error, closing: {e}");
                ended = true;
                break;
            }
        }
    }
    // What was read is kept, even a last line without its newline (a torn
    // one is then invalid, and on_invalid decides).
    if let Some(l) = lines.finish() {
        writer.append(l, &stop.shutdown).await;
    }
    if lines.cut > 0 {
        tracing::warn!(
            source,
            peer,
            lines = lines.cut,
            "lines over max_line_bytes ({max_line}) were cut; on_invalid applies to them"
        );
    }
    ended
}

/// A reader finishing the line in progress before it closes.
struct Drain {
    deadline: tokio::time::Instant,
    /// A read is in progress that must be finished (stdin).
    read_pending: bool,
}

impl Drain {
    fn new(read_pending: bool) -> Drain {
        Drain {
            deadline: tokio::time::Instant::now() + DRAIN,
            read_pending,
        }
    }
}

/// Receives datagrams of one or more lines. A datagram that finds the
/// spool full is dropped and counted: a sender of datagrams cannot wait.
async fn receive(
    socket: UdpSocket,
    source: &str,
    max_line: usize,
    writer: &SpoolWriter,
    stop: &Stop,
) {
    let mut buf = vec![0u8; 65536];
    let mut dropped = 0u64;
    loop {
        let received = if stop.reading.is_cancelled() {
            if stop.shutdown.is_cancelled() {
                break;
            }
            // A reload: take the datagrams already waiting, then close.
            match socket.recv_from(&mut buf).now_or_never() {
                Some(r) => r,
                None => break,
            }
        } else {
            tokio::select! {
                r = socket.recv_from(&mut buf) => r,
                _ = stop.reading.cancelled() => continue,
            }
        };
        let n = match received {
            Ok((n, _)) => n,
            Err(e) => {
                tracing::debug!(source, "udp receive error: {e}");
                continue;
            }
        };
        let mut lines = LineBuffer::new(max_line);
        lines.space().extend_from_slice(&buf[..n]);
        let mut data = lines.take().map(|b| b.to_vec()).unwrap_or_default();
        if let Some(last) = lines.finish() {
            data.extend_from_slice(&last);
        }
        if data.is_empty() {
            continue;
        }
        match writer.append_if_room(data.into()).await {
            Err(SpoolError::Full { .. }) => {
                dropped += 1;
                writer.spool().count_dropped_datagram(source);
                writer.spool().log_full("datagrams are dropped");
            }
            // Logged by the writer when it became blocked.
            Err(SpoolError::Blocked(_)) => {
                dropped += 1;
                writer.spool().count_dropped_datagram(source);
            }
            _ => {}
        }
    }
    if dropped > 0 {
        tracing::warn!(
            source,
            dropped,
            "datagrams dropped because the spool was full or could not be written"
        );
    }
}

/// Binds a Unix socket at `path`, replacing a stale socket file left by a
/// crash but never a live socket or a file that is not a socket.
async fn bind_unix(source: &str, path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "source `{source}`: {} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        if UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "source `{source}`: another process is listening on {}",
                path.display()
            );
        }
        std::fs::remove_file(path).map_err(|e| {
            anyhow::anyhow!(
                "source `{source}`: cannot remove the stale socket file {}: {e}",
                path.display()
            )
        })?;
        tracing::info!(source, path = %path.display(), "removed a stale socket file (left by a crash)");
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        anyhow::anyhow!(
            "source `{source}`: cannot listen on {}: {e}",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        anyhow::anyhow!(
            "source `{source}`: cannot set mode {mode:04o} on {}: {e}",
            path.display()
        )
    })?;
    Ok(listener)
}
