//! `shardrelay-load`: parse the command line, plan the run, run it, exit with its code
//! (0 clean, 1 errors, 2 integrity violations). Nothing else lives here.

use clap::Parser;

use shardrelay_load::cli::Cli;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = shardrelay_load::run::command(cli.command);
    match outcome {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(why) => {
            eprintln!("shardrelay-load: {why}");
            std::process::ExitCode::FAILURE
        }
    }
}
