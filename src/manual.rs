//! Shell completions and the man page, generated from the command line definition
//! (`shardrelay completions <shell>`, `shardrelay man`), so they never drift from the
//! flags.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::config::Cli;

/// Why a generator failed.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// Writing to stdout failed.
    #[error("writing to stdout: {0}")]
    Write(#[from] std::io::Error),
}

/// Print the completion script for `shell` on stdout.
pub fn completions(shell: Shell) -> Result<(), ManualError> {
    let mut command = Cli::command();
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut command, "shardrelay", &mut text);
    emit(&text)
}

/// Print the man page (roff, section 1) on stdout.
pub fn man_page() -> Result<(), ManualError> {
    let mut text = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut text)?;
    emit(&text)
}

/// Write to stdout; a reader that stopped early (`| head`) is not an error.
fn emit(text: &[u8]) -> Result<(), ManualError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
