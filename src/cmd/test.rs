//! `tailhook test`: sends the test message to each destination and prints
//! what happened.

use std::path::Path;
use std::process::ExitCode;

/// One line an endpoint of each destination (`NAME: OK: …` or `NAME:
/// FAILED: …`; a destination with several `urls` or `addresses` has one
/// line for each); exits 1 if any failed.
pub fn test(path: &Path, destination: Option<&str>) -> anyhow::Result<ExitCode> {
    super::per_destination(path, destination, |_, d| async move {
        let reports = tailhook::test_message::send_each(&d).await;
        let lines: Vec<String> = reports.iter().map(|r| r.to_string()).collect();
        (lines.join("\n"), reports.iter().all(|r| r.result.is_ok()))
    })
}
