//! `shardrelay-load`: parse the command line, plan the run, run it, exit with its code
//! (0 clean, 1 errors, 2 integrity violations). Nothing else lives here.

use clap::Parser;

use shardrelay_load::cli::Cli;
use shardrelay_load::plan::Plan;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = Plan::from_command(cli.command).and_then(shardrelay_load::run::run);
    match outcome {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(why) => {
            eprintln!("shardrelay-load: {why}");
            std::process::ExitCode::FAILURE
        }
    }
}
