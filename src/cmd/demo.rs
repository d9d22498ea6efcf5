//! `tailhook demo`: the real pipeline into a built-in collector (see
//! `tailhook::demo`), then the report of what arrived.

use std::process::ExitCode;

use anyhow::Context as _;

/// Prints the report; fails, with the report, if an event did not arrive.
pub fn demo() -> anyhow::Result<ExitCode> {
    let report = super::runtime()
        .block_on(tailhook::demo::run_demo())
        .context("demo failed")?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}
