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
pub mod demo;
pub mod event;
pub mod metrics;
pub mod pipeline;
pub mod probe;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod spool;

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::Input;
use source::http::HttpSource;
use source::socket::SocketInput;
use spool::Spool;

pub use config::Config;
pub use shutdown::Shutdown;

/// Runs `config` until `shutdown.soft` fires (or, with only a stdin source,
/// until its input is delivered), serving metrics when they are enabled.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let (_tx, reloads) = tokio::sync::mpsc::channel(1);
    run_with_reload(config, None, shutdown, reloads).await
}

/// Like [`run`], and each message on `reloads` (SIGHUP) re-reads the config
/// at `path`: a valid one replaces the running config (its pipelines stop
/// as at shutdown, saving checkpoints, and the new ones start from them);
/// an invalid one is logged and the running config stays.
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
    let result = generations(config, path, &shutdown, &mut reloads, &ready, &budget).await;
    served.cancel();
    server.wait().await;
    result
}

async fn generations(
    mut config: Config,
    path: Option<std::path::PathBuf>,
    shutdown: &Shutdown,
    reloads: &mut tokio::sync::mpsc::Receiver<()>,
    ready: &Arc<metrics::Readiness>,
    budget: &Arc<source::budget::OpenBudget>,
) -> anyhow::Result<()> {
    let mut previous: Option<Config> = None;
    loop {
        let generation = Shutdown {
            soft: shutdown.soft.child_token(),
            hard: shutdown.hard.child_token(),
        };
        let running = run_once(
            config.clone(),
            generation.clone(),
            ready.clone(),
            budget.clone(),
        );
        tokio::pin!(running);
        let next = loop {
            tokio::select! {
                r = &mut running => match (r, previous.take()) {
                    (Err(e), Some(old)) => {
                        // The new config could not start (a port in use, a
                        // bad certificate): go back to the one that ran.
                        tracing::error!("cannot apply the reloaded config: {e:#}; going back to the previous config");
                        break old;
                    }
                    (r, _) => return r,
                },
                Some(()) = reloads.recv() => {
                    let Some(path) = &path else { continue };
                    match Config::load(path) {
                        Err(e) => tracing::error!("config reload failed, the running config stays:\n{e}"),
                        Ok(new) => {
                            tracing::info!(config = %path.display(), "reloading: stopping the running pipelines (checkpoints are saved), then starting the new config");
                            generation.soft.cancel();
                            (&mut running).await?;
                            previous = Some(std::mem::replace(&mut config, new.clone()));
                            break new;
                        }
                    }
                }
            }
        };
        if shutdown.soft.is_cancelled() {
            return Ok(());
        }
        config = next;
    }
}

/// One run of one config: spool, inputs, pipelines; until `shutdown.soft`.
async fn run_once(
    config: Config,
    shutdown: Shutdown,
    ready: Arc<metrics::Readiness>,
    budget: Arc<source::budget::OpenBudget>,
) -> anyhow::Result<()> {
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    ready.reset(config.destinations.iter().map(|d| d.name.clone()));
    // Fail at start, in words, rather than at the first checkpoint write.
    let checkpoints = config.data_dir.join("checkpoints");
    std::fs::create_dir_all(&checkpoints).map_err(|e| {
        anyhow::anyhow!(
            "cannot create data_dir {} (checkpoints and dead letters live there): {e}",
            config.data_dir.display()
        )
    })?;
    let spool = open_spool(&config)?;
    let mut pipelines = Vec::new();
    for i in 0..config.destinations.len() {
        pipelines.push(pipeline::Pipeline::new(
            &config,
            i,
            spool.clone(),
            ready.clone(),
            &budget,
            &shutdown,
        )?);
    }
    let tasks = TaskTracker::new();
    if let Some(spool) = spool {
        start_inputs(&config, spool, &shutdown, &tasks).await?;
    }
    for p in pipelines {
        tasks.spawn(p.run(shutdown.clone()));
    }
    tasks.close();
    ready.sources_opened();
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

/// Opens the spool when a source needs it.
fn open_spool(config: &config::Config) -> anyhow::Result<Option<std::sync::Arc<Spool>>> {
    let names: Vec<&str> = config
        .sources
        .iter()
        .filter(|s| s.is_spooled())
        .map(|s| s.name.as_str())
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    let spool = Spool::open(&config.data_dir, config.spool, &names).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the spool in {}: {e}",
            config.data_dir.join("spool").display()
        )
    })?;
    Ok(Some(spool))
}

/// Binds every socket and HTTP input (so a port in use fails the start),
/// then starts them, their spool writers and the task that deletes
/// delivered segments, all on `tasks`.
async fn start_inputs(
    config: &config::Config,
    spool: std::sync::Arc<Spool>,
    shutdown: &Shutdown,
    tasks: &TaskTracker,
) -> anyhow::Result<()> {
    let spooled: Vec<&config::SourceConfig> =
        config.sources.iter().filter(|s| s.is_spooled()).collect();
    enum Bound {
        Socket(SocketInput),
        Http(HttpSource),
        Stdin,
    }
    let mut bound = Vec::new();
    for src in &spooled {
        let b = if let Some(s) = SocketInput::bind(src).await? {
            Bound::Socket(s)
        } else if let Some(h) = HttpSource::bind(src).await? {
            Bound::Http(h)
        } else {
            Bound::Stdin
        };
        bound.push((*src, b));
    }
    let only_stdin = config
        .sources
        .iter()
        .all(|s| matches!(s.input, Input::Stdin));
    let mut writers = Vec::new();
    for (src, b) in bound {
        let cancel = shutdown.soft.clone();
        let (writer, handle) = spool
            .writer(&src.name, cancel.clone())
            .map_err(|e| anyhow::anyhow!("cannot write the spool of source `{}`: {e}", src.name))?;
        writers.push(handle);
        let (name, max_line) = (src.name.clone(), src.max_line_bytes);
        match b {
            Bound::Socket(s) => {
                tasks.spawn(s.run(name, max_line, writer, cancel));
            }
            Bound::Http(h) => {
                tasks.spawn(h.run(name, writer, cancel));
            }
            Bound::Stdin => {
                tasks.spawn(source::stdin::read(
                    name,
                    max_line,
                    writer,
                    shutdown.clone(),
                    only_stdin,
                ));
            }
        }
    }
    tasks.spawn(async move {
        for w in writers {
            let _ = w.await;
        }
    });
    let mut readers: HashMap<String, Vec<String>> = HashMap::new();
    for (i, src) in config.sources.iter().enumerate() {
        if src.is_spooled() {
            let dests = config
                .destinations
                .iter()
                .filter(|d| d.sources.contains(&i))
                .map(|d| d.name.clone())
                .collect();
            readers.insert(src.name.clone(), dests);
        }
    }
    spool.set_readers(readers);
    tasks.spawn(spool.collect(shutdown.soft.clone()));
    Ok(())
}
