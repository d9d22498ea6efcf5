//! The `tcp`, `unix` and `udp` inputs: newline-delimited JSON from sockets,
//! appended to the source's spool.
//!
//! Backpressure is the socket itself: while the spool is full a connection
//! is not read, so its sender's writes block in the kernel and nothing is
//! buffered without bound. Datagrams cannot wait: they are dropped and
//! counted instead.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lines::LineBuffer;
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
    },
    /// A Unix stream listener; its socket file is removed when it stops.
    Unix {
        /// The listener.
        listener: UnixListener,
        /// Its socket file.
        path: PathBuf,
        /// Connections served at once.
        max_connections: usize,
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
            } => {
                let tls = tls
                    .as_ref()
                    .map(|t| super::tls::acceptor(name, t, false))
                    .transpose()?;
                let listener = TcpListener::bind(listen).await.map_err(|e| {
                    anyhow::anyhow!("source `{name}`: cannot listen on {listen}: {e}")
                })?;
                tracing::info!(source = %name, address = %listener.local_addr()?, tls = tls.is_some(), "tcp input listening");
                SocketInput::Tcp {
                    listener,
                    tls,
                    max_connections: *max_connections,
                }
            }
            Input::Unix {
                path,
                mode,
                max_connections,
            } => {
                let listener = bind_unix(name, path, *mode).await?;
                tracing::info!(source = %name, path = %path.display(), "unix input listening");
                SocketInput::Unix {
                    listener,
                    path: path.clone(),
                    max_connections: *max_connections,
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

    /// Serves until `cancel` fires; every line read is in the spool (or, for
    /// datagrams, counted as dropped) when this returns.
    pub async fn run(
        self,
        source: String,
        max_line: usize,
        writer: SpoolWriter,
        cancel: CancellationToken,
    ) {
        let source: Arc<str> = source.into();
        match self {
            SocketInput::Tcp {
                listener,
                tls,
                max_connections,
            } => {
                let accept = || async { listener.accept().await.map(|(s, a)| (s, a.to_string())) };
                serve(accept, max_connections, &cancel, |stream, peer| {
                    let (writer, cancel, source, tls) =
                        (writer.clone(), cancel.clone(), source.clone(), tls.clone());
                    async move {
                        let _ = stream.set_nodelay(true);
                        match tls {
                            None => {
                                read_lines(stream, &peer, &source, max_line, &writer, &cancel)
                                    .await;
                            }
                            Some(acceptor) => {
                                if let Some(tls) =
                                    super::tls::handshake(&acceptor, stream, &source, &peer).await
                                {
                                    read_lines(tls, &peer, &source, max_line, &writer, &cancel)
                                        .await;
                                }
                            }
                        }
                    }
                })
                .await;
            }
            SocketInput::Unix {
                listener,
                path,
                max_connections,
            } => {
                let accept = || async {
                    listener
                        .accept()
                        .await
                        .map(|(s, _)| (s, "unix".to_string()))
                };
                serve(accept, max_connections, &cancel, |stream, peer| {
                    let (writer, cancel, source) = (writer.clone(), cancel.clone(), source.clone());
                    async move {
                        read_lines(stream, &peer, &source, max_line, &writer, &cancel).await;
                    }
                })
                .await;
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(source = %source, path = %path.display(), "cannot remove the socket file: {e}");
                }
            }
            SocketInput::Udp(socket) => receive(socket, &source, max_line, &writer, &cancel).await,
        }
    }
}

/// Accepts connections, at most `max_connections` at once (more wait in
/// the listen backlog), and serves each in a tracked task.
async fn serve<S, A, AF, H, HF>(
    accept: A,
    max_connections: usize,
    cancel: &CancellationToken,
    handle: H,
) where
    A: Fn() -> AF,
    AF: std::future::Future<Output = io::Result<(S, String)>>,
    H: Fn(S, String) -> HF,
    HF: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    let tasks = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = cancel.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = accept() => a,
            _ = cancel.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let conn = handle(stream, peer);
                tasks.spawn(async move {
                    conn.await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors, usually: wait rather than spin.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = cancel.cancelled() => break,
                }
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// Reads one stream's lines into the spool until it ends (true) or
/// shutdown begins (false).
pub(crate) async fn read_lines<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: &str,
    source: &str,
    max_line: usize,
    writer: &SpoolWriter,
    cancel: &CancellationToken,
) -> bool {
    let mut lines = LineBuffer::new(max_line);
    let mut ended = false;
    loop {
        // While the spool cannot be written (a full disk), take nothing
        // more: the sender keeps what it has not written yet.
        if !writer.wait_writable(cancel).await {
            break;
        }
        let read = tokio::select! {
            r = stream.read_buf(lines.space()) => r,
            _ = cancel.cancelled() => break,
        };
        match read {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(_) => {
                if let Some(l) = lines.take() {
                    if !writer.append(l, cancel).await {
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
        writer.append(l, cancel).await;
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

/// Receives datagrams of one or more lines. A datagram that finds the
/// spool full is dropped and counted: a sender of datagrams cannot wait.
async fn receive(
    socket: UdpSocket,
    source: &str,
    max_line: usize,
    writer: &SpoolWriter,
    cancel: &CancellationToken,
) {
    let mut buf = vec![0u8; 65536];
    let mut dropped = 0u64;
    loop {
        let n = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, _)) => n,
                Err(e) => {
                    tracing::debug!(source, "udp receive error: {e}");
                    continue;
                }
            },
            _ = cancel.cancelled() => break,
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
