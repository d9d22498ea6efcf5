//! Starting and stopping destination pipelines, each on its own.

use std::time::Duration;

use super::plan::{spooled_sources, AsStarted, PipelineSettings};
use super::{Daemon, RunningPipeline};
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;

impl Daemon {
    /// Sets up the pipelines of these destinations (clients and
    /// checkpoints: a bad TLS file fails here, and then none starts), then
    /// runs them all.
    pub(super) fn start_pipelines(
        &mut self,
        config: &Config,
        start: Vec<(usize, AsStarted<PipelineSettings>)>,
    ) -> anyhow::Result<()> {
        let mut ready = Vec::new();
        for (index, started) in start {
            let shutdown = Shutdown {
                soft: self.process.soft.child_token(),
                hard: self.process.hard.child_token(),
            };
            let pipeline = Pipeline::new(
                config,
                index,
                self.spool.as_ref().map(|s| s.spool.clone()),
                self.ready.clone(),
                &self.budget,
                &shutdown,
            )?;
            ready.push((index, started, shutdown, pipeline));
        }
        for (index, started, shutdown, pipeline) in ready {
            let dest = &config.destinations[index];
            let done = self.tasks.spawn(pipeline.run(shutdown.clone()));
            self.pipelines.insert(
                dest.name.clone(),
                RunningPipeline {
                    started,
                    spooled: spooled_sources(config, dest),
                    shutdown,
                    done,
                },
            );
        }
        Ok(())
    }

    /// Stops these pipelines as at shutdown: what is batched is delivered
    /// within `timeout`, then checkpoints are saved. Returns each one's
    /// name and the spooled sources it read.
    pub(super) async fn stop_pipelines(
        &mut self,
        names: &[String],
        timeout: Duration,
    ) -> Vec<(String, Vec<String>)> {
        let stopping: Vec<(String, RunningPipeline)> = names
            .iter()
            .filter_map(|n| self.pipelines.remove(n).map(|p| (n.clone(), p)))
            .collect();
        if stopping.is_empty() {
            return Vec::new();
        }
        let mut done = Vec::new();
        let mut hard = Vec::new();
        let mut out = Vec::new();
        for (name, p) in stopping {
            p.shutdown.soft.cancel();
            done.push(p.done);
            hard.push(p.shutdown.hard);
            out.push((name, p.spooled));
        }
        let mut all = futures_util::future::join_all(done);
        tokio::select! {
            _ = &mut all => {}
            _ = tokio::time::sleep(timeout) => {
                let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
                tracing::warn!(destinations = ?names, "shutdown_timeout passed with batches still undelivered while stopping these destinations: they stay unacknowledged and are sent again when they start");
                for h in &hard {
                    h.cancel();
                }
                all.await;
            }
        }
        out
    }
}
