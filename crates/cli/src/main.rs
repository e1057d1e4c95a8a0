//! `linklease`: the operator's binary (spec §5).
#![allow(clippy::print_stdout)] // A CLI prints its results.

mod audit;
mod cli;
mod commands;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("LINKLEASE_LOG", "info"))
        .format_timestamp_millis()
        .init();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.code())
        }
    }
}
