//! `shardrelay`: parse the command line, set up logging, run the relay (or an operator
//! tool). Nothing else lives here.

use clap::Parser;
#[cfg(not(feature = "alloc-count"))]
use mimalloc::MiMalloc;

use shardrelay::config::{Cli, Command};

/// mimalloc: per-thread free lists suit a thread-per-core process.
#[cfg(not(feature = "alloc-count"))]
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// The allocations-per-message benchmark's build: mimalloc, counted.
#[cfg(feature = "alloc-count")]
#[global_allocator]
static GLOBAL: shardrelay::alloc_count::CountingMiMalloc =
    shardrelay::alloc_count::CountingMiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _log_guard = shardrelay::logging::init(&cli.config);
    let result = match cli.command {
        Some(Command::Stats {
            admin,
            admin_token,
            admin_token_file,
            count,
            interval,
        }) => shardrelay::watch::load_token(admin_token_file.as_ref(), admin_token)
            .and_then(|token| {
                shardrelay::watch::run(&shardrelay::watch::WatchOptions {
                    admin,
                    token,
                    count,
                    interval,
                })
            })
            .map_err(|e| (1, e.to_string())),
        Some(Command::Completions { shell }) => {
            shardrelay::manual::completions(shell).map_err(|e| (1, e.to_string()))
        }
        Some(Command::HaproxyConfig {
            nodes,
            listen,
            tls_cert,
            tls_key,
        }) => {
            let options = shardrelay::haproxy::HaproxyOptions {
                nodes,
                listen,
                tls: tls_cert.zip(tls_key),
            };
            shardrelay::haproxy::config(&options)
                .map(|text| print!("{text}"))
                .map_err(|e| (2, e.to_string()))
        }
        Some(Command::Man) => shardrelay::manual::man_page().map_err(|e| (1, e.to_string())),
        None => shardrelay::server::run(cli.config).map_err(|e| (e.exit_code(), e.to_string())),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err((code, why)) => {
            shardrelay::logging::report(&why);
            std::process::ExitCode::from(code)
        }
    }
}
