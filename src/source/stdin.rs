//! The `stdin` input: lines from standard input, into the spool; at its end,
//! tailhook delivers what it held and (when it is the only source) stops.
//!
//! A read of stdin cannot be cancelled (tokio reads it on a blocking
//! thread), so a reload never abandons one: a reader that a reload stops
//! finishes the read in progress and the line it ends in, writes them, and
//! only then hands standard input on to the reader that replaces it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::socket::Stop;
use crate::shutdown::Shutdown;
use crate::spool::Spool;

/// Standard input, shared by the readers that reloads start one after
/// another: a read left in progress stays with it, never dropped.
pub type Input = Arc<Mutex<tokio::io::Stdin>>;

/// Standard input, to be shared by every reader of the process.
pub fn input() -> Input {
    Arc::new(Mutex::new(tokio::io::stdin()))
}

/// One reader of standard input and what it needs.
pub struct Reader {
    pub name: String,
    /// The source's `max_line_bytes`.
    pub max_line: usize,
    pub spool: Arc<Spool>,
    pub input: Input,
    /// What it replaces: the last reader of standard input, or the spool
    /// writer of another input that had this source's name. It starts once
    /// they have finished.
    pub previous: Vec<JoinHandle<()>>,
    /// Set while stdin is the only source (read when it ends).
    pub only_stdin: Arc<AtomicBool>,
}

/// Reads standard input into the spool until `stop.reading` (a reload; the
/// read in progress and its line are finished first) or shutdown. At its
/// end, waits until every destination has what it held, then, when stdin
/// is the only source, stops tailhook as a signal would (so `producer |
/// tailhook run` ends).
pub async fn read(reader: Reader, stop: Stop, process: Shutdown) {
    let Reader {
        name,
        max_line,
        spool,
        input,
        previous,
        only_stdin,
    } = reader;
    for previous in previous {
        let _ = previous.await;
    }
    if stop.reading.is_cancelled() {
        return;
    }
    let (writer, written) = match spool.writer(&name, process.hard.clone()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(source = %name, "cannot write the spool: {e}; standard input is not read");
            return;
        }
    };
    let ended = {
        let mut stdin = input.lock().await;
        super::socket::read_lines(&mut *stdin, "stdin", &name, max_line, &writer, &stop, None).await
    };
    drop(writer);
    // The next reader starts a writer of its own once this one is done.
    let _ = written.await;
    if !ended {
        return;
    }
    tracing::info!(source = %name, "standard input ended: delivering what it held");
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.reading.cancelled() => return,
        }
        if spool.is_drained(&name) {
            break;
        }
    }
    if only_stdin.load(Ordering::Acquire) {
        tracing::info!(source = %name, "everything from standard input is delivered: stopping");
        process.soft.cancel();
    } else {
        tracing::info!(source = %name, "everything from standard input is delivered; other sources go on");
    }
}
