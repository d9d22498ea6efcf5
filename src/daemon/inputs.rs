//! Starting and stopping spooled inputs (socket, HTTP, stdin) and their
//! spool writers, one source at a time.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::plan::AsStarted;
use super::{Daemon, RunningInput, SourceWriter};
use crate::config::{Input, SourceConfig};
use crate::source::http::HttpSource;
use crate::source::socket::{SocketInput, Stop};
use crate::source::stdin;
use crate::spool::{Spool, SpoolWriter};

/// The bound listener of a socket or HTTP source.
pub(super) enum Listener {
    Socket(SocketInput),
    Http(Box<HttpSource>),
}

impl Listener {
    /// Binds the listener of a socket or HTTP source, so that a port in
    /// use or a bad certificate fails in words; None for stdin.
    pub(super) async fn bind(src: &SourceConfig) -> anyhow::Result<Option<Listener>> {
        if let Some(socket) = SocketInput::bind(src).await? {
            return Ok(Some(Listener::Socket(socket)));
        }
        Ok(HttpSource::bind(src)
            .await?
            .map(|h| Listener::Http(Box::new(h))))
    }
}

impl Daemon {
    /// Starts a spooled source with its spool writer: with the listener
    /// [`Daemon::bind`] bound for it, or one bound now.
    pub(super) async fn start_input(
        &mut self,
        src: &SourceConfig,
        spool: &Arc<Spool>,
    ) -> anyhow::Result<()> {
        let stop = self.process.soft.child_token();
        let reading = Stop {
            reading: stop.clone(),
            shutdown: self.process.soft.clone(),
            cancel_safe: true,
        };
        let (name, max_line) = (src.name.clone(), src.max_line_bytes);
        let (closed, done) = if matches!(src.input, Input::Stdin) {
            self.retire_writer(&src.name);
            let mut previous: Vec<JoinHandle<()>> =
                self.retired.remove(&src.name).into_iter().collect();
            previous.extend(self.stdin.last.take().map(|(_, h)| h));
            let reader = stdin::Reader {
                name: name.clone(),
                max_line,
                spool: spool.clone(),
                input: self.stdin.input.get_or_insert_with(stdin::input).clone(),
                previous,
                only_stdin: self.stdin.only.clone(),
            };
            let reading = Stop {
                cancel_safe: false,
                ..reading
            };
            let task = self
                .tasks
                .spawn(stdin::read(reader, reading, self.process.clone()));
            self.stdin.last = Some((name.clone(), task));
            (None, None)
        } else {
            let bound = match self.listeners.remove(&src.name) {
                Some(bound) => bound,
                None => Listener::bind(src)
                    .await?
                    .expect("a spooled source that is not stdin is a socket or http"),
            };
            let writer = self.writer_of(&name, spool).await?;
            let (tx, closed) = oneshot::channel();
            let shutdown = self.process.soft.clone();
            let done = self.tasks.spawn(async move {
                let open = match bound {
                    Listener::Socket(socket) => {
                        socket.run(name.clone(), max_line, writer, reading).await
                    }
                    Listener::Http(http) => http.run(name.clone(), writer, reading.reading).await,
                };
                let _ = tx.send(());
                if !open.is_empty() && !shutdown.is_cancelled() {
                    tracing::info!(source = %name, connections = open.len(), "stopped listening; open connections finish their line, then close");
                }
                open.wait().await;
            });
            (Some(closed), Some(done))
        };
        self.inputs.insert(
            src.name.clone(),
            RunningInput {
                started: AsStarted::input(src),
                stop,
                closed,
                done,
            },
        );
        Ok(())
    }

    /// The spool writer of a socket or HTTP source: the one that runs, or
    /// a new one once any earlier one has finished.
    async fn writer_of(&mut self, name: &str, spool: &Arc<Spool>) -> anyhow::Result<SpoolWriter> {
        if let Some(w) = self.writers.get(name) {
            return Ok(w.writer.clone());
        }
        if let Some(done) = self.retired.remove(name) {
            let _ = done.await;
        }
        if let Some((reader, task)) = &self.stdin.last {
            if reader == name && !task.is_finished() {
                anyhow::bail!("source `{name}` was read from stdin, which is still being read: a source of another type cannot take its name until tailhook restarts");
            }
        }
        let (writer, task) = spool
            .writer(name, self.process.hard.clone())
            .map_err(|e| anyhow::anyhow!("cannot write the spool of source `{name}`: {e}"))?;
        let done = self.tasks.spawn(async move {
            let _ = task.await;
        });
        self.writers.insert(
            name.to_string(),
            SourceWriter {
                writer: writer.clone(),
                done,
            },
        );
        Ok(writer)
    }

    /// Lets go of a source's spool writer: it finishes what its inputs
    /// still write, then stops; a writer for the same source waits for it.
    pub(super) fn retire_writer(&mut self, name: &str) {
        if let Some(w) = self.writers.remove(name) {
            self.retired.insert(name.to_string(), w.done);
        }
    }

    /// Stops these inputs: each closes its listener at once (awaited), and
    /// its connections finish their line in the background.
    pub(super) async fn stop_inputs(&mut self, names: &[String]) {
        let mut closing = Vec::new();
        for name in names {
            if let Some(input) = self.inputs.remove(name) {
                input.stop.cancel();
                closing.extend(input.closed);
            }
        }
        for closed in closing {
            let _ = closed.await;
        }
    }
}
