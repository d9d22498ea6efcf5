//! The two-phase shutdown signal every task watches.

use tokio_util::sync::CancellationToken;

/// `soft`: stop reading, deliver what is batched, save checkpoints.
/// `hard`: stop waiting for collectors now (what is unacknowledged stays
/// unacknowledged and is sent again at the next start).
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Stop reading; flush and deliver.
    pub soft: CancellationToken,
    /// Abandon deliveries still retrying.
    pub hard: CancellationToken,
}

impl Shutdown {
    /// A fresh, untriggered signal.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }
}
