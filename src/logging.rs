//! Logging set-up (`--log-level`, `--log-format`) and the one way client-supplied text
//! reaches a log: escaped and length-capped. Tokens, tickets, header dumps and payloads
//! are never logged at any level.

use crate::config::{Config, LogFormat};

/// Longest client-supplied string written to a log, in characters.
const LOG_TEXT_CAP: usize = 64;

/// Install the global subscriber (stderr).
pub fn init(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if installed.is_err() {
        eprintln!("shardrelay: a log subscriber was already installed");
    }
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
