//! `tailhook dead-letter resend`: delivers each destination's dead letters
//! again.

use std::path::Path;
use std::process::ExitCode;

/// One line a destination; exits 1 if anything is left in a dead-letter
/// file.
pub fn resend(path: &Path, destination: Option<&str>) -> anyhow::Result<ExitCode> {
    super::per_destination(path, destination, |config, d| async move {
        match tailhook::resend(&d, &config.data_dir).await {
            Ok(report) => (report.to_string(), report.kept() == 0),
            Err(e) => (format!("{}: FAILED: {e:#}", d.name), false),
        }
    })
}
