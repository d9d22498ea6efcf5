//! tailhook: tails files of security events (or takes them from sockets,
//! webhooks and stdin, through an on-disk spool) and delivers them, batched
//! into JSON arrays, as HTTP(S) webhooks to Fluentd `in_http` or Logstash `http`.
//!
//! Every input is a file and every destination reads it with its own cursor:
//! see `DESIGN.md`. [`daemon::Daemon`] is the whole daemon, so the demo drives
//! it with its own config and shutdown signal.
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

pub use config::Config;
pub use shutdown::Shutdown;
pub use sink::dead_letter::{resend, ResendReport};
