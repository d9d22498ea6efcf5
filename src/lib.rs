//! tailhook: tails files of security events (or takes them from sockets,
//! webhooks and stdin, through an on-disk spool) and delivers them, batched
//! into JSON arrays, as HTTP(S) webhooks to Fluentd `in_http` or Logstash `http`.
//!
//! Every input is a file and every destination reads it with its own cursor:
//! files are tailed as they are; sockets, webhooks and stdin are first
//! appended to the spool, whose segments are tailed the same way. A
//! destination's checkpoint moves only past what its collector acknowledged.
//!
//! Where things are, in the order data flows:
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | the TOML schema, defaults, validation, `${VAR}`, redaction |
//! | [`daemon`] | binding and running a config, and what a reload changes |
//! | `source` | file discovery and tailing; the socket, HTTP and stdin inputs |
//! | `spool` | the on-disk segments that spooled inputs write and pipelines tail |
//! | [`event`] | framing a line into events, their kinds, a destination's selection |
//! | `pipeline` | one destination: read, select, batch, send, checkpoint |
//! | `batch` | request bodies built from raw event bytes |
//! | `sink` | the webhook client, a destination's endpoints, answers and retries, the dead-letter file |
//! | `checkpoint` | per-destination positions, written atomically |
//! | `metrics` | every metric name; `/metrics`, `/health`, `/ready` |
//! | `tls` | every rustls config and the PEM files they load |
//! | [`test_message`], [`demo`], [`status`] | the `test`, `demo` and `status` commands' work |
//!
//! The commands themselves are in the binary, `src/cmd/`; they use only
//! what is public here.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

// What the commands, the fuzz targets and the tests use.
pub mod config;
pub mod daemon;
pub mod demo;
pub mod event;
pub mod shutdown;
pub mod status;
pub mod test_message;

pub use config::Config;
pub use shutdown::Shutdown;
pub use sink::dead_letter::{resend, ResendReport};
/// The `http` input's body handling, for its fuzz target.
pub use source::http::body_lines;

// Inside.
pub(crate) mod batch;
pub(crate) mod checkpoint;
pub(crate) mod line_end;
pub(crate) mod metrics;
pub(crate) mod pipeline;
pub(crate) mod rate_limit;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod spool;
pub(crate) mod tls;

#[cfg(test)]
mod props_test;
