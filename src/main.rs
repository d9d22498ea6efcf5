//! The CLI edge: parse arguments, set up logging, run a command, map errors
//! to exit codes.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tailhook::daemon::{Daemon, Reloads};
use tailhook::{Config, Shutdown};

/// Tails files of security events, or receives them on sockets, webhooks and
/// stdin, and delivers them, batched into JSON arrays, as HTTP(S) webhooks to
/// Fluentd `in_http` or Logstash `http`.
#[derive(Parser)]
#[command(name = "tailhook", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: human-readable `text`, or `json` (one object a line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace) or a filter such as
    /// `info,tailhook::sink=debug`; overrides RUST_LOG.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the inputs and pipelines until SIGTERM or SIGINT (or, when stdin
    /// is the only source, until its input is delivered).
    Run {
        /// The TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config and print it resolved, with defaults filled in and
    /// header values redacted.
    Check {
        /// The TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Send the webhook integration's test message to each destination and
    /// report status and latency, or why it failed.
    Test {
        /// The TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Only this destination.
        #[arg(long, value_name = "NAME")]
        destination: Option<String>,
    },
    /// Work with the dead-letter files (events a collector rejected).
    #[command(name = "dead-letter", subcommand)]
    DeadLetter(DeadLetterCommand),
    /// Run a real pipeline on 127.0.0.1 into a built-in Fluentd emulator and
    /// print what it received. Needs no setup.
    Demo,
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Deliver the dead letters of each destination again; what is delivered
    /// leaves the file, what is rejected again or cannot be sent stays.
    Resend {
        /// The TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Only this destination.
        #[arg(long, value_name = "NAME")]
        destination: Option<String>,
    },
}

/// Logs to stderr: `--log-level`, else `RUST_LOG`, else `default`.
fn init_logging(cli: &Cli, default: &str) -> Result<(), ExitCode> {
    use tracing_subscriber::EnvFilter;
    let filter = match &cli.log_level {
        Some(level) => {
            let bad = |why: String| {
                eprintln!("error: invalid --log-level `{level}`: {why}");
                ExitCode::from(2)
            };
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
    match cli.log_format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    Ok(())
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: invalid config\n{e}");
        ExitCode::from(1)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    if let Err(code) = init_logging(&cli, default_level) {
        return code;
    }
    match cli.command {
        Command::Run { config: path } => {
            let config = match load(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let rt = runtime();
            let code = rt.block_on(async {
                let shutdown = Shutdown::new();
                let (reload_tx, requests) = tokio::sync::mpsc::channel(1);
                tokio::spawn(watch_signals(shutdown.clone(), reload_tx));
                let reloads = Reloads { path, requests };
                let run = async {
                    let daemon = Daemon::bind(&config).await?;
                    daemon.run(shutdown, Some(reloads)).await
                };
                match run.await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::from(1)
                    }
                }
            });
            // Every task has finished; only a read of stdin that cannot be
            // cancelled may be left, and it must not hold the exit.
            rt.shutdown_background();
            code
        }
        Command::Check { config: path } => {
            let config = match load(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let problems = tailhook::daemon::check(&config);
            for e in &problems {
                eprintln!("error: {e}");
            }
            if !problems.is_empty() {
                return ExitCode::from(1);
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
            ExitCode::SUCCESS
        }
        Command::Test {
            config,
            destination,
        } => per_destination(&config, destination.as_deref(), |_, d| async move {
            let report = tailhook::test_message::send(&d).await;
            (report.to_string(), report.result.is_ok())
        }),
        Command::DeadLetter(DeadLetterCommand::Resend {
            config,
            destination,
        }) => per_destination(&config, destination.as_deref(), |config, d| async move {
            resend_line(&d, &config.data_dir).await
        }),
        Command::Demo => match runtime().block_on(tailhook::demo::run_demo()) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: demo failed: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// Resends one destination's dead letters; returns the line to print and
/// whether nothing is left.
async fn resend_line(
    d: &tailhook::config::DestinationConfig,
    data_dir: &std::path::Path,
) -> (String, bool) {
    match tailhook::sink::dead_letter::resend(d, data_dir).await {
        Ok(r) => (r.to_string(), r.kept() == 0),
        Err(e) => (format!("{}: FAILED: {e:#}", d.name), false),
    }
}

/// Runs `f` for each destination (or the one named), printing the line it
/// returns; exits 1 if any said it failed.
fn per_destination<F, Fut>(path: &std::path::Path, name: Option<&str>, f: F) -> ExitCode
where
    F: Fn(Config, tailhook::config::DestinationConfig) -> Fut,
    Fut: std::future::Future<Output = (String, bool)>,
{
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let chosen = match choose(&config, name) {
        Ok(c) => c,
        Err(code) => return code,
    };
    runtime().block_on(async {
        let mut ok = true;
        for d in chosen {
            let (line, good) = f(config.clone(), d.clone()).await;
            ok &= good;
            println!("{line}");
        }
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    })
}

/// The destinations a command works on: all, or the one named.
fn choose<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> Result<Vec<&'a tailhook::config::DestinationConfig>, ExitCode> {
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
        eprintln!(
            "error: no destination is named `{}`; the config has: {}",
            name.unwrap_or_default(),
            names.join(", ")
        );
        return Err(ExitCode::from(1));
    }
    Ok(chosen)
}

/// First SIGTERM/SIGINT: stop reading and deliver what is batched. Second: stop now.
/// SIGTERM or SIGINT: soft, then hard shutdown. SIGHUP: reload the config.
async fn watch_signals(shutdown: Shutdown, reload: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    for token in [&shutdown.soft, &shutdown.hard] {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    // One pending reload is enough: the file is read then.
                    let _ = reload.try_send(());
                }
            }
        }
        token.cancel();
    }
}
