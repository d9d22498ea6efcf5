//! One destination's pipeline: its sources read and select, a batcher builds
//! bodies, the sender delivers them and applies acknowledgements, in send
//! order, to the destination's checkpoint, which is written after every
//! acknowledgement (group commit: see [`group_commit`]).

mod group_commit;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::{Batch, BatchBuilder, Origin};
use crate::checkpoint::Checkpoints;
use crate::config::{Config, DestinationConfig, FileInput, Input, ReadFrom};
use crate::metrics::{ReadMetrics, Readiness};
use crate::rate_limit::RateLimit;
use crate::shutdown::Shutdown;
use crate::sink::dead_letter::DeadLetter;
use crate::sink::endpoints::Endpoints;
use crate::sink::{Outcome, Sender};
use crate::source::budget::OpenBudget;
use crate::source::file::FileSizes;
use crate::source::file::{FileSource, StartPositions, Tail};
use crate::source::reader::FrameContext;
use crate::source::{Chunk, TailMode};
use crate::spool::{segment, Spool};
use group_commit::GroupCommit;

/// How many read chunks may wait for the batcher: with the batch channel and
/// `concurrency`, this bounds a pipeline's memory whatever the backlog.
const CHUNK_QUEUE: usize = 4;

/// How often each source's lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// A destination's pipeline, set up and ready to run.
pub struct Pipeline {
    dest: DestinationConfig,
    spool: Option<Arc<Spool>>,
    sender: Arc<Sender>,
    checkpoints: Checkpoints,
    sources: Vec<FileSource>,
    chunks: mpsc::Receiver<Chunk>,
}

impl Pipeline {
    /// Sets up the pipeline of `config.destinations[index]`: its client (TLS
    /// files are read here, so a bad one fails at start), its checkpoint and
    /// one reader per source it takes.
    pub fn new(
        config: &Config,
        index: usize,
        spool: Option<Arc<Spool>>,
        ready: Arc<Readiness>,
        budget: &Arc<OpenBudget>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Pipeline> {
        let dest = config.destinations[index].clone();
        let endpoints = Endpoints::new(&dest)?;
        let (checkpoints, problem) = Checkpoints::load(&config.data_dir, &dest.name);
        let first_start = match &problem {
            Some(e) => {
                tracing::error!(destination = %dest.name, "{e}");
                false
            }
            None => !Checkpoints::file_for(&config.data_dir, &dest.name).exists(),
        };
        let start = Arc::new(StartPositions {
            entries: checkpoints.entries().clone(),
            first_start,
        });
        let (tx, chunks) = mpsc::channel(CHUNK_QUEUE);
        let mut sources = Vec::new();
        for &i in &dest.sources {
            let src = &config.sources[i];
            let ctx = FrameContext {
                source: src.name.clone(),
                selection: dest.events.clone(),
                on_invalid: src.on_invalid,
                max_line_bytes: src.max_line_bytes,
                invalid_log: RateLimit::new(Duration::from_secs(1)),
                mode: if src.is_spooled() {
                    TailMode::Spool
                } else {
                    TailMode::Files
                },
                metrics: ReadMetrics::new(&src.name, &dest.name),
            };
            let tail = match &src.input {
                Input::File(files) => Tail {
                    source: src.name.clone(),
                    files: files.clone(),
                    mode: TailMode::Files,
                },
                _ => spool_tail(&config.data_dir, &src.name),
            };
            sources.push(FileSource::new(
                tail,
                ctx,
                start.clone(),
                budget.clone(),
                tx.clone(),
                shutdown.soft.clone(),
            )?);
        }
        let sender = Arc::new(Sender::new(
            &dest,
            endpoints,
            DeadLetter::new(&config.data_dir, &dest.name),
            ready,
        ));
        Ok(Pipeline {
            dest,
            spool,
            sender,
            checkpoints,
            sources,
            chunks,
        })
    }

    /// Runs until the sources stop (at shutdown) and every batch is settled.
    pub async fn run(self, shutdown: Shutdown) {
        let Pipeline {
            dest,
            spool,
            sender,
            mut checkpoints,
            sources,
            chunks,
        } = self;
        let tasks = TaskTracker::new();
        let lags: Vec<Lag> = sources
            .iter()
            .map(|s| Lag {
                gauge: sender.metrics().lag(s.source_name()),
                sizes: s.sizes(),
            })
            .collect();
        for s in sources {
            tasks.spawn(s.run());
        }
        {
            let (sender, cancel) = (sender.clone(), shutdown.soft.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = sender.probe() => {}
                    _ = cancel.cancelled() => {}
                }
            });
        }
        // Endpoints taken out of rotation are probed until the last batch is
        // settled.
        let probing = CancellationToken::new();
        if sender.endpoints().several() {
            for i in 0..sender.endpoints().len() {
                let (sender, stop) = (sender.clone(), probing.clone());
                tasks.spawn(async move { sender.endpoints().probe_while_out(i, &stop).await });
            }
        }
        let (batch_tx, batches) = mpsc::channel(1);
        tasks.spawn(batcher(chunks, batch_tx, dest.clone()));
        tasks.close();
        let acks = Acks {
            checkpoints: &mut checkpoints,
            spool: spool.as_deref(),
            destination: &dest.name,
            lags,
        };
        let mut commit = GroupCommit::new(&dest.name, sender.metrics());
        let deliver = |batch| {
            let (sender, hard) = (sender.clone(), shutdown.hard.clone());
            async move { sender.deliver(batch, &hard).await }
        };
        send_loop(&dest, &sender, deliver, batches, acks, &mut commit).await;
        probing.cancel();
        tasks.wait().await;
        if commit.finish(&checkpoints).await {
            tracing::info!(destination = %dest.name, "checkpoint saved");
        }
    }
}

/// What a destination's pipeline tails to read a spooled source.
fn spool_tail(data_dir: &Path, source: &str) -> Tail {
    Tail {
        source: source.to_string(),
        files: FileInput {
            include: vec![segment::glob(&Spool::dir_of(data_dir, source))],
            exclude: Vec::new(),
            read_from: ReadFrom::Beginning,
            poll_interval: Duration::from_secs(1),
            rotate_wait: Duration::ZERO,
            close_inactive: Duration::MAX,
        },
        mode: TailMode::Spool,
    }
}

/// Groups chunks into batches by the destination's bounds.
async fn batcher(
    mut chunks: mpsc::Receiver<Chunk>,
    tx: mpsc::Sender<Batch>,
    dest: DestinationConfig,
) {
    let mut builder = BatchBuilder::new(dest.batch, dest.format);
    let mut deadline: Option<Instant> = None;
    loop {
        let next = match deadline {
            Some(d) => tokio::select! {
                c = chunks.recv() => c,
                _ = tokio::time::sleep_until(d) => {
                    deadline = None;
                    if let Some(b) = builder.take() {
                        if tx.send(b).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            },
            None => chunks.recv().await,
        };
        let Some(chunk) = next else { break };
        // Dead letters go with the first batch this chunk touches: a batch
        // flushed part-way through the chunk may carry a position past them.
        builder.add_dead_letters(chunk.dead_letters);
        let from = Origin {
            file: &chunk.file,
            fingerprint: chunk.fingerprint,
            lost: chunk.lost,
            window: &chunk.window,
        };
        for ev in chunk.events {
            if !builder.fits(ev.bytes.len()) {
                if let Some(b) = builder.take() {
                    if tx.send(b).await.is_err() {
                        return;
                    }
                }
                deadline = None;
            }
            builder.push(&ev.bytes);
            builder.advance(&from, ev.commit);
            if builder.is_full() {
                if let Some(b) = builder.take() {
                    if tx.send(b).await.is_err() {
                        return;
                    }
                }
                deadline = None;
            }
        }
        builder.advance_chunk(&from, chunk.end, chunk.content_crc, chunk.closed);
        if deadline.is_none() {
            deadline = Some(Instant::now() + dest.batch.timeout);
        }
    }
    if let Some(b) = builder.take() {
        let _ = tx.send(b).await;
    }
}

/// Keeps up to `concurrency` deliveries (`deliver`: [`Sender::deliver`],
/// or a test's) in flight and applies their acknowledgements in send order,
/// so a checkpoint never passes a batch that is not acknowledged; hands each
/// change to `commit` to be written.
async fn send_loop<D, F>(
    dest: &DestinationConfig,
    sender: &Sender,
    deliver: D,
    mut batches: mpsc::Receiver<Batch>,
    mut acks: Acks<'_>,
    commit: &mut GroupCommit,
) where
    D: Fn(Batch) -> F,
    F: Future<Output = (Batch, Outcome)>,
{
    let mut inflight = FuturesOrdered::new();
    let mut tick = tokio::time::interval(LAG_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut abandoned = false;
    let mut open = true;
    let mut buffered = 0u64;
    let m = sender.metrics();
    while open || !inflight.is_empty() {
        tokio::select! {
            biased;
            Some((batch, outcome)) = inflight.next(), if !inflight.is_empty() => {
                let batch: Batch = batch;
                buffered -= batch.events as u64;
                m.buffered.set(buffered as f64);
                abandoned |= outcome == Outcome::Abandoned;
                if !abandoned {
                    acks.apply(&batch);
                    commit.changed(acks.checkpoints);
                }
            }
            wake = commit.wake(), if commit.waiting() => commit.woke(wake, acks.checkpoints),
            next = batches.recv(), if open && inflight.len() < dest.concurrency => match next {
                Some(batch) => {
                    buffered += batch.events as u64;
                    m.buffered.set(buffered as f64);
                    inflight.push_back(deliver(batch));
                }
                None => open = false,
            },
            _ = tick.tick() => {
                acks.measure_lag();
                sender.measure_dead_letter();
            }
        }
    }
}

/// Where acknowledged positions go: the checkpoint, and the spool for
/// spool segments (which it deletes once every reader is past them).
struct Acks<'a> {
    checkpoints: &'a mut Checkpoints,
    spool: Option<&'a Spool>,
    destination: &'a str,
    lags: Vec<Lag>,
}

/// A source's lag gauge for this destination, and the sizes of its files.
struct Lag {
    gauge: metrics::Gauge,
    sizes: FileSizes,
}

impl Acks<'_> {
    /// Sets each source's lag: the bytes of its files not yet acknowledged.
    fn measure_lag(&self) {
        for lag in &self.lags {
            let sizes = lag.sizes.lock().unwrap_or_else(|e| e.into_inner());
            let behind: u64 = sizes
                .iter()
                .map(|(id, &size)| {
                    let acked = self.checkpoints.get(*id).map_or(0, |e| e.offset);
                    size.saturating_sub(acked)
                })
                .sum();
            lag.gauge.set(behind as f64);
        }
    }

    fn apply(&mut self, batch: &Batch) {
        apply(self.checkpoints, batch);
        if let Some(spool) = self.spool {
            // A closed file is gone: nothing to acknowledge.
            for p in batch.positions.iter().filter(|p| !p.closed) {
                spool.acknowledge(self.destination, &p.file.source, &p.file, p.offset);
            }
        }
    }
}

fn apply(checkpoints: &mut Checkpoints, batch: &Batch) {
    for p in &batch.positions {
        // A closed file is gone or renamed out of the globs: forget it, so
        // checkpoints do not grow with every rotation.
        if p.closed {
            checkpoints.remove(p.file.id);
            continue;
        }
        checkpoints.set(p.entry());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use bytes::Bytes;
    use tokio::sync::oneshot;

    use super::*;
    use crate::batch::TrackedFile;
    use crate::checkpoint::{FileId, Fingerprint};
    use crate::source::identity::Window;

    const FILE: FileId = FileId { dev: 1, ino: 2 };

    /// The offset a destination's checkpoint file records, if any.
    fn on_disk(dir: &Path) -> Option<u64> {
        let (cp, err) = Checkpoints::load(dir, "d");
        assert!(err.is_none(), "{err:?}");
        cp.get(FILE).map(|e| e.offset)
    }

    /// A batch of one event that takes the file to `offset`.
    fn batch(dest: &DestinationConfig, file: &Arc<TrackedFile>, offset: u64) -> Batch {
        let window = Arc::new(Window::new(
            Bytes::new(),
            Bytes::from(vec![b'x'; 512]),
            0,
            None,
        ));
        let mut b = BatchBuilder::new(dest.batch, dest.format);
        b.push(br#"{"a":1}"#);
        let from = Origin {
            file,
            fingerprint: Fingerprint::of(b"x"),
            lost: None,
            window: &window,
        };
        b.advance(&from, offset);
        b.take().expect("one event")
    }

    /// Three batches in flight at once are acknowledged out of order (the
    /// third, then the first, then the second): the checkpoint moves past
    /// each one only once every batch before it is acknowledged.
    #[tokio::test]
    async fn the_checkpoint_never_passes_a_batch_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "data_dir = {:?}\n[[source]]\nname = \"s\"\ntype = \"file\"\ninclude = [\"/nowhere/*\"]\n\
             [[destination]]\nname = \"d\"\nurl = \"http://127.0.0.1:9/\"\nconcurrency = 3\n\
             [metrics]\nenabled = false\n",
            dir.path()
        );
        let config = Config::parse(Path::new("t.toml"), &text, |_| None).unwrap();
        let dest = config.destinations[0].clone();
        let sender = Sender::new(
            &dest,
            Endpoints::new(&dest).unwrap(),
            DeadLetter::new(dir.path(), "d"),
            Arc::new(Readiness::default()),
        );
        let file = Arc::new(TrackedFile::new(FILE, "/nowhere/a".into(), "s".into()));
        let (tx, batches) = mpsc::channel(3);
        let mut gates = HashMap::new();
        let mut release = HashMap::new();
        for offset in [100, 200, 300] {
            tx.send(batch(&dest, &file, offset)).await.unwrap();
            let (open, gate) = oneshot::channel::<()>();
            gates.insert(offset, gate);
            release.insert(offset, open);
        }
        drop(tx);
        // Each delivery ends when the test opens its gate.
        let gates = Mutex::new(gates);
        let in_flight = Mutex::new(Vec::new());
        let deliver = |batch: Batch| {
            let offset = batch.positions[0].offset;
            in_flight.lock().unwrap().push(offset);
            let gate = gates.lock().unwrap().remove(&offset).unwrap();
            async move {
                let _ = gate.await;
                (batch, Outcome::Acked)
            }
        };
        let (mut checkpoints, _) = Checkpoints::load(dir.path(), "d");
        let acks = Acks {
            checkpoints: &mut checkpoints,
            spool: None,
            destination: "d",
            lags: Vec::new(),
        };
        let mut commit = GroupCommit::new("d", sender.metrics());
        // Lets the loop run until `done` holds or `within` passes; says
        // whether `done` holds.
        async fn drive(
            run: &mut (impl Future<Output = ()> + Unpin),
            done: impl Fn() -> bool,
            within: Duration,
        ) -> bool {
            let deadline = Instant::now() + within;
            while !done() && Instant::now() < deadline {
                tokio::select! {
                    _ = &mut *run => panic!("the loop ended with batches in flight"),
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
            done()
        }
        let (wait, settle) = (Duration::from_secs(5), Duration::from_millis(200));
        {
            let run = send_loop(&dest, &sender, deliver, batches, acks, &mut commit);
            tokio::pin!(run);
            assert!(
                drive(&mut run, || in_flight.lock().unwrap().len() == 3, wait).await,
                "all three batches go out at once (concurrency = 3)"
            );
            release.remove(&300).unwrap().send(()).unwrap();
            // The third is acknowledged, the first two are not: nothing moves.
            drive(&mut run, || false, settle).await;
            assert_eq!(
                on_disk(dir.path()),
                None,
                "the third batch overtook the first two"
            );

            release.remove(&100).unwrap().send(()).unwrap();
            assert!(
                drive(&mut run, || on_disk(dir.path()).is_some(), wait).await,
                "the first batch's acknowledgement is written"
            );
            drive(&mut run, || false, settle).await;
            assert_eq!(
                on_disk(dir.path()),
                Some(100),
                "the second is still in flight"
            );

            release.remove(&200).unwrap().send(()).unwrap();
            run.await;
        }
        assert!(commit.finish(&checkpoints).await);
        assert_eq!(on_disk(dir.path()), Some(300));
    }
}
