//! `linklease`: the operator's binary (spec §5).
#![allow(clippy::print_stdout)] // A CLI prints its results.

mod audit;
mod cli;
mod commands;
mod files;

use clap::Parser;
use std::process::ExitCode;

/// jemalloc (C code's `malloc` too), configured in `.cargo/config.toml`: two arenas, and freed
/// pages go back to the system after 500 ms. glibc's arena per thread kept the memory freed after
/// bursts of batch creation resident (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // LINKLEASE_LOG, else the RUST_LOG every Rust user tries first, else info.
    let fallback = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("LINKLEASE_LOG", fallback))
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
