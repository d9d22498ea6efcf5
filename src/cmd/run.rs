//! `tailhook run`: the daemon, with signals: SIGTERM or SIGINT to stop,
//! SIGHUP to reload the config.

use std::path::Path;
use std::process::ExitCode;

use tailhook::daemon::{Daemon, Reloads};
use tailhook::Shutdown;

/// Binds the config's listeners, then runs until a signal stops it (or,
/// when stdin is the only source, until its input is delivered).
pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = super::load(path)?;
    let rt = super::runtime();
    let result = rt.block_on(async {
        let shutdown = Shutdown::new();
        let (reload, requests) = tokio::sync::mpsc::channel(1);
        tokio::spawn(watch_signals(shutdown.clone(), reload));
        let reloads = Reloads {
            path: path.to_path_buf(),
            requests,
        };
        Daemon::bind(&config)
            .await?
            .run(shutdown, Some(reloads))
            .await
    });
    // Every task has finished; only a read of stdin that cannot be
    // cancelled may be left, and it must not hold the exit.
    rt.shutdown_background();
    result.map(|()| ExitCode::SUCCESS)
}

/// First SIGTERM/SIGINT: stop reading and deliver what is batched. Second: stop now.
/// SIGTERM or SIGINT: soft, then hard shutdown. SIGHUP: reload the config.
async fn watch_signals(shutdown: Shutdown, reload: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    for token in [&shutdown.soft, &shutdown.hard] {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    // One pending reload is enough: the file is read then.
                    let _ = reload.try_send(());
                }
            }
        }
        token.cancel();
    }
}
