//! The commands, one a file, each returning the exit code or the error
//! `main` prints; and what they share: logging, loading the config, the
//! runtime, and working on each destination in turn.

pub mod check;
pub mod dead_letter;
pub mod demo;
pub mod run;
pub mod status;
pub mod test;

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use tailhook::config::DestinationConfig;
use tailhook::Config;

/// Logs to stderr: `level` (`--log-level`), else `RUST_LOG`, else
/// `default`; as JSON objects with `json`. The error says what is wrong
/// with `level`.
pub fn init_logging(level: Option<&str>, json: bool, default: &str) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => {
            let bad = |why: String| format!("invalid --log-level `{level}`: {why}");
            // A bare word is taken as a level: EnvFilter would read an
            // unknown one as a target name and silence everything else.
            let levels = ["error", "warn", "info", "debug", "trace", "off"];
            if !level.contains([',', '=', '[', ':'])
                && !levels.contains(&level.to_ascii_lowercase().as_str())
            {
                return Err(bad(format!(
                    "expected one of {}, or a filter such as `info,tailhook::sink=debug`",
                    levels.join(", ")
                )));
            }
            EnvFilter::try_new(level).map_err(|e| bad(e.to_string()))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    Ok(())
}

/// Loads the config at `path`; the error is every problem found.
fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("invalid config\n{e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `f` for each destination of the config at `path` (or the one
/// named), printing the line it returns; exits 1 if any said it failed.
fn per_destination<F, Fut>(path: &Path, name: Option<&str>, f: F) -> anyhow::Result<ExitCode>
where
    F: Fn(Config, DestinationConfig) -> Fut,
    Fut: Future<Output = (String, bool)>,
{
    let config = load(path)?;
    let chosen = choose(&config, name)?;
    runtime().block_on(async {
        let mut ok = true;
        for d in chosen {
            let (line, good) = f(config.clone(), d.clone()).await;
            ok &= good;
            println!("{line}");
        }
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// The destinations a command works on: all, or the one named.
fn choose<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> anyhow::Result<Vec<&'a DestinationConfig>> {
    let chosen: Vec<_> = config
        .destinations
        .iter()
        .filter(|d| name.is_none_or(|n| d.name == n))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = config
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        anyhow::bail!(
            "no destination is named `{}`; the config has: {}",
            name.unwrap_or_default(),
            names.join(", ")
        );
    }
    Ok(chosen)
}
