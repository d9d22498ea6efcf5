//! `tailhook test`: sends the test message to each destination and prints
//! what happened.

use std::path::Path;
use std::process::ExitCode;

/// One line a destination (`NAME: OK: …` or `NAME: FAILED: …`); exits 1 if
/// any failed.
pub fn test(path: &Path, destination: Option<&str>) -> anyhow::Result<ExitCode> {
    super::per_destination(path, destination, |_, d| async move {
        let report = tailhook::test_message::send(&d).await;
        (report.to_string(), report.result.is_ok())
    })
}
