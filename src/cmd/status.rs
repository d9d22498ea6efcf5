//! `tailhook status`: how far each destination is behind, read from disk.

use std::path::Path;
use std::process::ExitCode;

/// Prints the status of every destination. Exits 0 when every destination
/// is caught up and 1 when one is behind, so that it works as a health
/// probe; an invalid config or an unreadable file exits 2, never 1.
pub fn status(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let outcome = super::load(path).and_then(|config| tailhook::status::run(&config, json));
    Ok(outcome.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    }))
}
