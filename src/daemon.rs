//! The running set: the inputs and destination pipelines of the config in
//! force, by name, and what a reload changes of them.
//!
//! [`Daemon::apply`] compares a config with what runs. An input whose
//! settings did not change keeps running untouched: its listener, its open
//! connections, its spool writer. A destination whose own settings, the
//! settings of every source it reads and `data_dir` did not change keeps
//! its pipeline. What changed, or was added or removed, is stopped and
//! started on its own; a stopped input first lets its connections finish
//! the line in progress. A change of `data_dir` or `[spool]`, which every
//! input and destination depends on, restarts them all.
//!
//! Binding (listeners, TLS files, clients) comes before running, so a
//! config that cannot start fails before it disturbs what runs, where it
//! can.

mod inputs;
mod pipelines;
mod plan;
mod unacknowledged;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, Config, Input, SourceConfig};
use crate::metrics::{self, Readiness};
use crate::shutdown::Shutdown;
use crate::sink::endpoints::Endpoints;
use crate::source::budget::OpenBudget;
use crate::source::socket::DRAIN;
use crate::source::stdin;
use crate::spool::{Spool, SpoolWriter};
use inputs::Listener;
use metrics_exporter_prometheus::PrometheusHandle;
use plan::{readers, spooled_sources, AsStarted, Changes, PipelineSettings};
use unacknowledged::{warn_stray_checkpoints, warn_unacknowledged};

/// The config a reload reads, and the requests to read it (SIGHUP).
pub struct Reloads {
    /// The config file.
    pub path: PathBuf,
    /// One message a reload.
    pub requests: mpsc::Receiver<()>,
}

/// What `tailhook check` reads besides the config, as [`Daemon::bind`] and
/// the start of each pipeline would: every destination's client (its CA
/// and client certificate files) and every input's TLS files. Each problem
/// is one error.
pub fn check(config: &Config) -> Vec<anyhow::Error> {
    let clients = config
        .destinations
        .iter()
        .filter_map(|d| Endpoints::check(d).err().map(anyhow::Error::from));
    let inputs = config
        .sources
        .iter()
        .filter_map(|s| crate::tls::check(s).err());
    clients.chain(inputs).collect()
}

/// What runs, by name: bound by [`Daemon::bind`], run by [`Daemon::run`].
pub struct Daemon {
    /// The process's signal: every token below is a child of it.
    process: Shutdown,
    /// The config [`Daemon::bind`] bound, until [`Daemon::run`] starts it.
    bound: Option<Config>,
    /// The metrics listener, bound, until [`Daemon::run`] serves it.
    metrics: Option<(tokio::net::TcpListener, &'static PrometheusHandle)>,
    /// The listeners of socket and HTTP sources bound by [`Daemon::bind`],
    /// until their input starts.
    listeners: HashMap<String, Listener>,
    ready: Arc<Readiness>,
    budget: Arc<OpenBudget>,
    /// Every task of every input, writer and pipeline, for shutdown.
    tasks: TaskTracker,
    /// The config in force.
    config: Option<Config>,
    spool: Option<RunningSpool>,
    /// Spooled sources (socket, HTTP, stdin) that run.
    inputs: HashMap<String, RunningInput>,
    /// The spool writer of each socket and HTTP source, shared by the input
    /// that runs and by the connections of one that a reload stopped.
    writers: HashMap<String, SourceWriter>,
    /// Writers of sources a reload removed, finishing what was read.
    retired: HashMap<String, JoinHandle<()>>,
    pipelines: HashMap<String, RunningPipeline>,
    stdin: StdinReaders,
}

struct RunningSpool {
    spool: Arc<Spool>,
    collect: CancellationToken,
    collected: JoinHandle<()>,
}

struct RunningInput {
    started: AsStarted<SourceConfig>,
    stop: CancellationToken,
    /// Fires once the listener is closed (None for stdin).
    closed: Option<oneshot::Receiver<()>>,
    /// Ends once every connection has finished (None for stdin).
    done: Option<JoinHandle<()>>,
}

struct SourceWriter {
    writer: SpoolWriter,
    done: JoinHandle<()>,
}

struct RunningPipeline {
    started: AsStarted<PipelineSettings>,
    /// The spooled sources it reads.
    spooled: Vec<String>,
    shutdown: Shutdown,
    done: JoinHandle<()>,
}

#[derive(Default)]
struct StdinReaders {
    /// Standard input, handed from one reader to the next.
    input: Option<stdin::Input>,
    /// The last reader started, by source name: the next one waits for it.
    last: Option<(String, JoinHandle<()>)>,
    /// stdin is the only source.
    only: Arc<AtomicBool>,
}

impl Daemon {
    /// Binds what `config` listens on: the metrics listener and the
    /// listener of every socket and HTTP source, so that a port in use or
    /// a bad certificate fails here, in words, before anything runs.
    pub async fn bind(config: &Config) -> anyhow::Result<Daemon> {
        let metrics = if config.metrics.enabled {
            let handle = metrics::install()?;
            Some((metrics::bind(config.metrics.listen).await?, handle))
        } else {
            None
        };
        let mut listeners = HashMap::new();
        for src in config.sources.iter().filter(|s| s.is_spooled()) {
            if let Some(l) = Listener::bind(src).await? {
                listeners.insert(src.name.clone(), l);
            }
        }
        Ok(Daemon {
            process: Shutdown::new(),
            bound: Some(config.clone()),
            metrics,
            listeners,
            ready: Arc::new(Readiness::default()),
            budget: OpenBudget::for_this_process(),
            tasks: TaskTracker::new(),
            config: None,
            spool: None,
            inputs: HashMap::new(),
            writers: HashMap::new(),
            retired: HashMap::new(),
            pipelines: HashMap::new(),
            stdin: StdinReaders::default(),
        })
    }

    /// Runs the bound config until `shutdown.soft` fires (or, with only a
    /// stdin source, until its input is delivered), serving metrics when
    /// they are enabled. Each message on `reloads` re-reads the config and
    /// applies it ([`Daemon::apply`]); an invalid one is logged and the
    /// running config stays, and one that cannot start is logged and the
    /// previous one is applied again.
    pub async fn run(mut self, shutdown: Shutdown, reloads: Option<Reloads>) -> anyhow::Result<()> {
        self.process = shutdown.clone();
        let served = CancellationToken::new();
        let server = TaskTracker::new();
        if let Some((listener, handle)) = self.metrics.take() {
            server.spawn(metrics::serve(
                listener,
                handle,
                self.ready.clone(),
                served.clone(),
            ));
        }
        server.close();
        let result = self.run_until(&shutdown, reloads).await;
        served.cancel();
        server.wait().await;
        result
    }

    async fn run_until(
        mut self,
        shutdown: &Shutdown,
        reloads: Option<Reloads>,
    ) -> anyhow::Result<()> {
        let config = self.bound.take().expect("bound once");
        if let Err(e) = self.apply(config).await {
            self.abandon();
            return Err(e);
        }
        // Without reloads, a channel that never delivers.
        let (_never, idle) = mpsc::channel(1);
        let (path, mut requests) = match reloads {
            Some(r) => (Some(r.path), r.requests),
            None => (None, idle),
        };
        loop {
            tokio::select! {
                _ = shutdown.soft.cancelled() => break,
                Some(()) = requests.recv() => {
                    let Some(path) = &path else { continue };
                    let new = match Config::load(path) {
                        Ok(new) => new,
                        Err(e) => {
                            tracing::error!("config reload failed, the running config stays:\n{e}");
                            continue;
                        }
                    };
                    tracing::info!(config = %path.display(), "reloading: what changed restarts, the rest keeps running");
                    let previous = self.config.clone().expect("a config runs");
                    if let Err(e) = self.apply(new).await {
                        // The new config could not start (a port in use, a
                        // bad certificate): go back to the one that ran.
                        tracing::error!("cannot apply the reloaded config: {e:#}; going back to the previous config");
                        if let Err(e) = self.apply(previous).await {
                            self.abandon();
                            return Err(e);
                        }
                    }
                }
            }
        }
        self.shut_down().await;
        Ok(())
    }

    /// Makes `config` the one that runs, changing only what differs from
    /// what runs now (see the module's comment). On an error, what could
    /// not start does not run and the rest does: applying the previous
    /// config then brings it back.
    pub async fn apply(&mut self, config: Config) -> anyhow::Result<()> {
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
        let first = self.config.is_none();
        let mut everything = None;
        if let Some(old) = &self.config {
            everything = if old.data_dir != config.data_dir {
                Some("data_dir")
            } else if old.spool != config.spool {
                Some("[spool]")
            } else {
                None
            };
            if old.metrics != config.metrics {
                tracing::warn!("reload: [metrics] changed: it takes effect at the next start");
            }
        }
        if let Some(setting) = everything {
            tracing::warn!("reload: {setting} changed, which every input and destination depends on: restarting them all");
            self.stop_everything().await;
        }
        let old = self.config.replace(config.clone());
        // Fail at start, in words, rather than at the first checkpoint write.
        let checkpoints = config.data_dir.join("checkpoints");
        crate::checkpoint::create_dir_synced(&checkpoints).map_err(|e| {
            anyhow::anyhow!(
                "cannot create data_dir {} (checkpoints and dead letters live there): {e}",
                config.data_dir.display()
            )
        })?;
        if first {
            warn_stray_checkpoints(&config);
        }

        // What changes, and checks that stop nothing.
        let spooled: HashMap<&str, &SourceConfig> = config
            .sources
            .iter()
            .filter(|s| s.is_spooled())
            .map(|s| (s.name.as_str(), s))
            .collect();
        let stop_inputs: Vec<String> = self
            .inputs
            .iter()
            .filter(|(name, running)| {
                spooled
                    .get(name.as_str())
                    .is_none_or(|s| running.started != AsStarted::input(s))
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut started: HashMap<&str, AsStarted<PipelineSettings>> = config
            .destinations
            .iter()
            .map(|d| (d.name.as_str(), AsStarted::pipeline(&config, d)))
            .collect();
        let stop_pipelines: Vec<String> = self
            .pipelines
            .iter()
            .filter(|(name, running)| {
                started
                    .get(name.as_str())
                    .is_none_or(|s| running.started != *s)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for d in &config.destinations {
            if !self.pipelines.contains_key(&d.name) || stop_pipelines.contains(&d.name) {
                Endpoints::check(d)?;
            }
        }
        let changes = match &old {
            Some(old) => {
                let changes = Changes::new(old, &config, &stop_inputs, &stop_pipelines);
                Some(if everything.is_some() {
                    changes.all_restarted()
                } else {
                    changes
                })
            }
            None => None,
        };

        // Inputs: those that changed stop listening (their connections
        // finish their line meanwhile), then the new ones bind.
        let spool = self.open_spool(&config)?;
        self.stop_inputs(&stop_inputs).await;
        for name in &stop_inputs {
            let stays = spooled
                .get(name.as_str())
                .is_some_and(|s| !matches!(s.input, Input::Stdin));
            if !stays {
                self.retire_writer(name);
            }
        }
        self.stdin.only.store(
            config
                .sources
                .iter()
                .all(|s| matches!(s.input, Input::Stdin)),
            Ordering::Release,
        );
        if let Some(spool) = &spool {
            for src in config.sources.iter().filter(|s| s.is_spooled()) {
                if !self.inputs.contains_key(&src.name) {
                    self.start_input(src, spool).await?;
                }
            }
        }

        // Pipelines: those that changed deliver what they batched and save
        // their checkpoint; then the new ones start from it.
        let timeout = old
            .as_ref()
            .map_or(config.shutdown_timeout, |c| c.shutdown_timeout);
        let removed = self.stop_pipelines(&stop_pipelines, timeout).await;
        if let Some(spool) = &spool {
            spool.set_readers(readers(&config));
        }
        for (name, read) in removed {
            // What it no longer reads, the spool no longer keeps for it.
            let (what, reads) = match config.destinations.iter().find(|d| d.name == name) {
                None => (format!("destination `{name}` is removed"), Vec::new()),
                Some(d) => (
                    format!("destination `{name}` no longer reads this source"),
                    spooled_sources(&config, d),
                ),
            };
            let dropped: Vec<String> = read.into_iter().filter(|s| !reads.contains(s)).collect();
            warn_unacknowledged(&what, &config.data_dir, &name, &dropped);
        }
        let start = config
            .destinations
            .iter()
            .enumerate()
            .filter(|(_, d)| !self.pipelines.contains_key(&d.name))
            .map(|(i, d)| (i, started.remove(d.name.as_str()).expect("one each")))
            .collect();
        self.start_pipelines(&config, start)?;

        self.ready
            .set_destinations(config.destinations.iter().map(|d| {
                let kept = changes.as_ref().is_some_and(|c| c.kept(&d.name));
                (d.name.as_str(), kept)
            }));
        self.ready.sources_opened();
        if let Some(changes) = &changes {
            tracing::info!("reload: {}", changes.summary());
        }
        tracing::info!(
            sources = config.sources.len(),
            destinations = config.destinations.len(),
            data_dir = %config.data_dir.display(),
            "tailhook running"
        );
        Ok(())
    }

    /// Opens the spool when the first spooled source appears, and takes in
    /// those a reload adds.
    fn open_spool(&mut self, config: &Config) -> anyhow::Result<Option<Arc<Spool>>> {
        let names: Vec<&str> = config
            .sources
            .iter()
            .filter(|s| s.is_spooled())
            .map(|s| s.name.as_str())
            .collect();
        let failed = |e: std::io::Error| {
            anyhow::anyhow!(
                "cannot open the spool in {}: {e}",
                config.data_dir.join("spool").display()
            )
        };
        match &self.spool {
            Some(running) => {
                for name in &names {
                    running.spool.add_source(name).map_err(failed)?;
                }
            }
            None if names.is_empty() => return Ok(None),
            None => {
                let spool = Spool::open(&config.data_dir, config.spool, &names).map_err(failed)?;
                let collect = self.process.soft.child_token();
                let collected = self.tasks.spawn(spool.clone().collect(collect.clone()));
                self.spool = Some(RunningSpool {
                    spool,
                    collect,
                    collected,
                });
            }
        }
        Ok(self.spool.as_ref().map(|s| s.spool.clone()))
    }

    /// Stops every input and pipeline and closes the spool, for a reload
    /// that changes what they all depend on. A stdin reader is not waited
    /// for past [`DRAIN`] (a read of stdin cannot be cancelled; the reader
    /// that replaces it waits for it).
    async fn stop_everything(&mut self) {
        let inputs: Vec<String> = self.inputs.keys().cloned().collect();
        let mut done = Vec::new();
        for name in &inputs {
            if let Some(input) = self.inputs.remove(name) {
                input.stop.cancel();
                done.extend(input.done);
            }
        }
        for (_, w) in self.writers.drain() {
            done.push(w.done);
        }
        done.extend(self.retired.drain().map(|(_, h)| h));
        futures_util::future::join_all(done).await;
        if let Some((_, reader)) = &mut self.stdin.last {
            let _ = tokio::time::timeout(DRAIN, reader).await;
        }
        let timeout = self
            .config
            .as_ref()
            .map_or(Duration::ZERO, |c| c.shutdown_timeout);
        let names: Vec<String> = self.pipelines.keys().cloned().collect();
        self.stop_pipelines(&names, timeout).await;
        if let Some(spool) = self.spool.take() {
            spool.collect.cancel();
            let _ = spool.collected.await;
        }
    }

    /// Stops everything without waiting (a config that could not start).
    fn abandon(&mut self) {
        for input in self.inputs.values() {
            input.stop.cancel();
        }
        for p in self.pipelines.values() {
            p.shutdown.soft.cancel();
            p.shutdown.hard.cancel();
        }
        if let Some(spool) = &self.spool {
            spool.collect.cancel();
        }
    }

    /// At shutdown (the process's `soft` token fired): waits for every task
    /// within `shutdown_timeout`, then stops waiting for collectors.
    async fn shut_down(mut self) {
        let timeout = self
            .config
            .as_ref()
            .map_or(Duration::ZERO, |c| c.shutdown_timeout);
        // The spool writers end once their inputs have.
        self.writers.clear();
        self.tasks.close();
        tracing::info!(
            "shutting down: delivering what is batched (up to {}); a second signal stops at once",
            config::humanize_duration(timeout)
        );
        tokio::select! {
            _ = self.tasks.wait() => {}
            _ = tokio::time::sleep(timeout) => {
                tracing::warn!("shutdown_timeout passed with batches still undelivered: they stay unacknowledged and are sent again at the next start");
                self.process.hard.cancel();
            }
            _ = self.process.hard.cancelled() => {
                tracing::warn!("stopping now: undelivered batches stay unacknowledged and are sent again at the next start");
            }
        }
        self.tasks.wait().await;
        tracing::info!("stopped");
    }
}
