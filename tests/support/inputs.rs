//! Helpers for the socket, HTTP and stdin inputs: their config blocks, the
//! address tailhook actually bound (inputs listen on `127.0.0.1:0` in tests
//! and log the port they got), and the spool on disk.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::process::Tailhook;
use super::setup::Setup;

/// A `[[source]]` block of `kind` (tcp, udp, http, unix, stdin) with `extra`
/// settings; tcp, udp and http listen on `127.0.0.1:0`.
pub fn input(name: &str, kind: &str, extra: &str) -> String {
    let listen = if matches!(kind, "tcp" | "udp" | "http") {
        "listen = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    format!("[[source]]\nname = {name:?}\ntype = {kind:?}\n{listen}{extra}\n")
}

/// The address that source `name` listens on, from tailhook's log line
/// `... input listening source=<name> address=<addr> ...`. Panics, with the
/// log, when it does not appear within 15 s.
pub fn listen_addr(tailhook: &Tailhook, name: &str) -> SocketAddr {
    let needle = format!("input listening source={name} address=");
    assert!(
        tailhook.wait_for_log(&needle, Duration::from_secs(15)),
        "source {name} never listened:\n{}",
        tailhook.stderr()
    );
    let log = tailhook.stderr() + &tailhook.stdout();
    let at = log.find(&needle).unwrap() + needle.len();
    let addr = log[at..].split_whitespace().next().unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("bad address {addr:?} in log: {e}"))
}

/// Waits until the unix input `name` is listening (its log line).
pub fn wait_unix_listening(tailhook: &Tailhook, name: &str) {
    let needle = format!("unix input listening source={name}");
    assert!(
        tailhook.wait_for_log(&needle, Duration::from_secs(15)),
        "source {name} never listened:\n{}",
        tailhook.stderr()
    );
}

/// The spool segment files of source `name`, in order.
pub fn spool_segments(setup: &Setup, name: &str) -> Vec<PathBuf> {
    let dir = setup.data.join("spool").join(name);
    let mut v: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}
