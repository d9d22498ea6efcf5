//! Shared support code for tailhook's integration tests.
//!
//! Each `tests/*.rs` file starts with `mod support;` and uses the parts it
//! needs:
//!
//! - [`collector`]: HTTP collector emulators (Fluentd `in_http`, Logstash
//!   `http` input) running on their own thread, with recording and fault
//!   injection;
//! - [`forward`]: a Fluentd forward-protocol (`in_forward`) emulator;
//! - [`beats`]: a Lumberjack v2 (Logstash `beats` input) emulator;
//! - [`http_client`]: a hand-written HTTP/1.1 client for the `http` input;
//! - [`process`]: running the real `tailhook` binary with bounded waits
//!   (and without the developer's proxy variables);
//! - [`proxy`]: an HTTP proxy (CONNECT tunnels and absolute-form requests)
//!   that records what it carries, like Squid;
//! - [`metrics`]: tailhook's `/metrics`, `/health` and `/ready` listener:
//!   GETs, a parser of the Prometheus text format, `promtool check metrics`;
//! - [`tls`]: a throw-away CA and a server certificate for `localhost` and
//!   `127.0.0.1`.
//!
//! Every wait in here is bounded and event-driven (Condvar or channel); none
//! of it sleeps to synchronise.

// Each test file uses only a subset of this module tree.
#![allow(dead_code)]

pub mod beats;
pub mod check;
pub mod collector;
pub mod forward;
pub mod http_client;
pub mod inputs;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod setup;
pub mod tls;
