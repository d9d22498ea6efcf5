//! tailhook: tails files of security events and delivers them, batched into
//! JSON arrays, as HTTP(S) webhooks to Fluentd `in_http` or Logstash `http`.
//!
//! Every input is a file and every destination reads it with its own cursor:
//! see `DESIGN.md`. [`run`] is the whole daemon, so tests and the demo drive
//! it with their own config and shutdown signal.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod demo;
pub mod event;
pub mod pipeline;
pub mod probe;
pub mod shutdown;
pub mod sink;
pub mod source;

use tokio_util::task::TaskTracker;

pub use config::Config;
pub use shutdown::Shutdown;

/// Runs every destination's pipeline until `shutdown.soft` fires, then
/// delivers what is batched within `shutdown_timeout` and saves checkpoints.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    // Fail at start, in words, rather than at the first checkpoint write.
    let checkpoints = config.data_dir.join("checkpoints");
    std::fs::create_dir_all(&checkpoints).map_err(|e| {
        anyhow::anyhow!(
            "cannot create data_dir {} (checkpoints and dead letters live there): {e}",
            config.data_dir.display()
        )
    })?;
    let mut pipelines = Vec::new();
    for i in 0..config.destinations.len() {
        pipelines.push(pipeline::Pipeline::new(&config, i, &shutdown)?);
    }
    let tasks = TaskTracker::new();
    for p in pipelines {
        tasks.spawn(p.run(shutdown.clone()));
    }
    tasks.close();
    tracing::info!(
        sources = config.sources.len(),
        destinations = config.destinations.len(),
        data_dir = %config.data_dir.display(),
        "tailhook running"
    );
    tokio::select! {
        _ = tasks.wait() => return Ok(()),
        _ = shutdown.soft.cancelled() => {}
    }
    tracing::info!(
        "shutting down: delivering what is batched (up to {}); a second signal stops at once",
        config::humanize_duration(config.shutdown_timeout)
    );
    let timeout = tokio::time::sleep(config.shutdown_timeout);
    tokio::select! {
        _ = tasks.wait() => {}
        _ = timeout => {
            tracing::warn!("shutdown_timeout passed with batches still undelivered: they stay unacknowledged and are sent again at the next start");
            shutdown.hard.cancel();
        }
        _ = shutdown.hard.cancelled() => {
            tracing::warn!("stopping now: undelivered batches stay unacknowledged and are sent again at the next start");
        }
    }
    tasks.wait().await;
    tracing::info!("stopped");
    Ok(())
}
