//! `tailhook check`: validates a config and the files it names, and prints
//! it resolved.

use std::path::Path;
use std::process::ExitCode;

/// Prints the resolved config (credentials redacted) on stdout and its
/// warnings on stderr; exits 1, printing each, if a TLS file or a
/// destination's client setup fails as `run` would.
pub fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let config = super::load(path)?;
    let problems = tailhook::daemon::check(&config);
    for e in &problems {
        eprintln!("error: {e}");
    }
    if !problems.is_empty() {
        return Ok(ExitCode::from(1));
    }
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    print!("{}", config.to_redacted_toml());
    eprintln!(
        "{}: config is valid ({} source(s), {} destination(s))",
        path.display(),
        config.sources.len(),
        config.destinations.len()
    );
    Ok(ExitCode::SUCCESS)
}
