//! tailhook: tails files of security events (or takes them from sockets,
//! webhooks and stdin, through an on-disk spool) and delivers them, batched
//! into JSON arrays, as HTTP(S) webhooks to Fluentd `in_http` or Logstash `http`.
//!
//! Every input is a file and every destination reads it with its own cursor:
//! see `DESIGN.md`. [`run`] is the whole daemon, so tests and the demo drive
//! it with their own config and shutdown signal.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod event;
pub(crate) mod line_end;
pub mod metrics;
pub mod pipeline;
pub(crate) mod rate_limit;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod spool;
pub mod test_message;
pub mod tls;

#[cfg(test)]
mod props_test;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use shutdown::Shutdown;

/// Runs `config` until `shutdown.soft` fires (or, with only a stdin source,
/// until its input is delivered), serving metrics when they are enabled.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let (_tx, reloads) = tokio::sync::mpsc::channel(1);
    run_with_reload(config, None, shutdown, reloads).await
}

/// Like [`run`], and each message on `reloads` (SIGHUP) re-reads the config
/// at `path`: a valid one is applied, restarting only the inputs and
/// destinations whose settings changed ([`daemon::Daemon::apply`]); an
/// invalid one is logged and the running config stays.
pub async fn run_with_reload(
    config: Config,
    path: Option<std::path::PathBuf>,
    shutdown: Shutdown,
    mut reloads: tokio::sync::mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let ready = Arc::new(metrics::Readiness::default());
    let served = CancellationToken::new();
    let server = TaskTracker::new();
    if config.metrics.enabled {
        let handle = metrics::install()?;
        let listener = metrics::bind(config.metrics.listen).await?;
        server.spawn(metrics::serve(
            listener,
            handle,
            ready.clone(),
            served.clone(),
        ));
    }
    server.close();
    let budget = source::budget::OpenBudget::for_this_process();
    let result = daemon::run(config, path, &shutdown, &mut reloads, ready, budget).await;
    served.cancel();
    server.wait().await;
    result
}
