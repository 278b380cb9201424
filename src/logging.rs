//! Logging set-up (`--log-level`, `--log-format`) and the one way client-supplied text
//! reaches a log: escaped and length-capped. Tokens, tickets, pair codes, session codes,
//! header dumps and payloads are never logged at any level.
//!
//! Log lines never block or panic a shard: every line goes into a bounded queue that one
//! `log-writer` thread drains to stderr. A full queue (stderr not read fast enough) drops
//! the line and counts it; a closed stderr (`EPIPE`) or any other write error is
//! ignored. tracing-subscriber's own error reporting (`eprintln!`, which panics on a
//! closed stderr) is switched off.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{Config, LogFormat};

/// Longest client-supplied string written to a log, in characters.
const LOG_TEXT_CAP: usize = 64;

/// Lines queued for the writer thread before new ones are dropped: a burst of several
/// thousand lines (a connect storm at `debug`) rides through, while a stalled stderr
/// costs at most this many lines of memory (~1–2 MiB).
const LOG_QUEUE_LINES: usize = 8192;

/// Lines dropped because the queue was full, for `/stats` and `/metrics`.
static DROPPED_LINES: AtomicU64 = AtomicU64::new(0);

/// How long the exiting process waits for queued lines to reach stderr: a stderr that
/// nobody reads must not hold up the exit.
const EXIT_FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// Keeps the writer thread alive; dropping it flushes the queued lines (for at most
/// [`EXIT_FLUSH_LIMIT`]).
pub struct LogGuard {
    /// The queue's sending side.
    sender: Sender<Vec<u8>>,
    /// Signalled by the writer thread once it has written everything before the stop
    /// marker; `None` if the thread could not be started.
    done: Option<Receiver<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        // Subscriber clones of the sender stay alive for the process, so the writer is
        // told to stop by an empty line rather than by the channel closing.
        if let Some(done) = &self.done {
            if self
                .sender
                .send_timeout(Vec::new(), EXIT_FLUSH_LIMIT)
                .is_ok()
            {
                let _ = done.recv_timeout(EXIT_FLUSH_LIMIT);
            }
        }
    }
}

/// Lines the log queue dropped since start.
pub fn dropped_lines() -> u64 {
    DROPPED_LINES.load(Ordering::Relaxed)
}

/// The subscriber's writer: each event's bytes go to the queue in one piece.
#[derive(Clone)]
struct QueueWriter {
    /// The queue's sending side.
    sender: Sender<Vec<u8>>,
}

/// One event's line being formatted; sent on drop.
struct LineBuf {
    /// The queue.
    sender: Sender<Vec<u8>>,
    /// The line's bytes so far.
    bytes: Vec<u8>,
}

impl Write for LineBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuf {
    fn drop(&mut self) {
        if self.bytes.is_empty() {
            return;
        }
        match self.sender.try_send(std::mem::take(&mut self.bytes)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                DROPPED_LINES.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = LineBuf;

    fn make_writer(&'a self) -> LineBuf {
        LineBuf {
            sender: self.sender.clone(),
            bytes: Vec::with_capacity(256),
        }
    }
}

/// Drain the queue to stderr until the stop marker (an empty line); write errors
/// (a closed or broken stderr) are ignored, so lines are simply lost.
fn write_lines(queue: Receiver<Vec<u8>>, done: Sender<()>) {
    let stderr = std::io::stderr();
    while let Ok(line) = queue.recv() {
        if line.is_empty() {
            break;
        }
        let _ = stderr.lock().write_all(&line);
    }
    let _ = done.send(());
}

/// Install the global subscriber (stderr, through the writer thread). Keep the guard
/// until the process ends.
pub fn init(config: &Config) -> LogGuard {
    let (sender, queue) = crossbeam_channel::bounded(LOG_QUEUE_LINES);
    let (done_tx, done) = crossbeam_channel::bounded(1);
    let done = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(queue, done_tx))
        .ok()
        .map(|_| done);
    // The value passed `parse_log_level`, so it parses; "info" is only a fallback for a
    // Config built by hand.
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(QueueWriter {
            sender: sender.clone(),
        })
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .with_target(false);
    let installed = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if installed.is_err() {
        report("a log subscriber was already installed");
    }
    LogGuard { sender, done }
}

/// Write one line of our own to stderr, ignoring a closed stderr (unlike `eprintln!`,
/// which panics).
pub fn report(message: &str) {
    let _ = writeln!(std::io::stderr(), "shardrelay: {message}");
}

/// A client-supplied string made safe for a log line: control and non-ASCII characters
/// escaped, and cut at `LOG_TEXT_CAP` characters.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(LOG_TEXT_CAP) + 3);
    for (i, c) in text.chars().enumerate() {
        if i == LOG_TEXT_CAP {
            out.push('…');
            break;
        }
        out.extend(c.escape_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn escapes_and_caps() {
        assert_eq!(escaped("a\nb\"c"), "a\\nb\\\"c");
        assert_eq!(escaped(&"x".repeat(100)).chars().count(), 65);
    }
}
