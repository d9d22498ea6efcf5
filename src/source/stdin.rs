//! The `stdin` input: lines from standard input, into the spool; at its end,
//! tailhook delivers what it held and (when it is the only source) stops.

use std::time::Duration;

use crate::shutdown::Shutdown;
use crate::spool::SpoolWriter;

/// Reads standard input into the spool. At its end, waits until every
/// destination has what it held, then, when stdin was the only source,
/// stops tailhook as a signal would (so `producer | tailhook run` ends).
pub async fn read(
    name: String,
    max_line: usize,
    writer: SpoolWriter,
    shutdown: Shutdown,
    only_stdin: bool,
) {
    let spool = writer.spool().clone();
    let ended = super::socket::read_lines(
        tokio::io::stdin(),
        "stdin",
        &name,
        max_line,
        &writer,
        &shutdown.soft,
    )
    .await;
    drop(writer);
    if !ended {
        return;
    }
    tracing::info!(source = %name, "standard input ended: delivering what it held");
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.soft.cancelled() => return,
        }
        if spool.is_drained(&name) {
            break;
        }
    }
    if only_stdin {
        tracing::info!(source = %name, "everything from standard input is delivered: stopping");
        shutdown.soft.cancel();
    } else {
        tracing::info!(source = %name, "everything from standard input is delivered; other sources go on");
    }
}
