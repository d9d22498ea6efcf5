//! The CLI edge: parse arguments, set up logging, run a command, turn its
//! result into the exit code. Each command is a file in `cmd/`.
#![forbid(unsafe_code)]

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Show, from the files on disk, how far each destination is behind
    /// each source (bytes and files), its dead letters and the spool's use.
    /// Exits 0 when every destination is caught up, 1 when one is behind.
    Status {
        /// The TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Print one JSON object, for scripts.
        #[arg(long)]
        json: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    let json = cli.log_format == LogFormat::Json;
    if let Err(why) = cmd::init_logging(cli.log_level.as_deref(), json, default_level) {
        eprintln!("error: {why}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run { config } => cmd::run::run(&config),
        Command::Check { config } => cmd::check::check(&config),
        Command::Test {
            config,
            destination,
        } => cmd::test::test(&config, destination.as_deref()),
        Command::Status { config, json } => cmd::status::status(&config, json),
        Command::DeadLetter(DeadLetterCommand::Resend {
            config,
            destination,
        }) => cmd::dead_letter::resend(&config, destination.as_deref()),
        Command::Demo => cmd::demo::demo(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
