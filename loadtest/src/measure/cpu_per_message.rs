//! `measure cpu-window` and `measure cpu-table`: the figures of
//! `scripts/cpu-per-message.sh`. `cpu-window` reads a relay's CPU over a sampling
//! window (inside the load's measured window); `cpu-table` turns each run's window and
//! report into relay CPU-seconds per million forwarded messages, beside the raw-copy
//! reference of the same case:
//!
//! `CPU-s per million = CPU ÷ (round trips/s × 2 × window) × 1e6` (pair and server-id
//! both forward 2 messages per round trip: A→B→A, phone→binary→phone).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cli::{CpuTableArgs, CpuWindowArgs};
use crate::measure::verdict;
use crate::procfs;
use crate::sys;

/// A relay's CPU over one sampling window (`TAG.window.json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowCpu {
    /// The relay's user + system CPU over the window, seconds.
    pub relay_s: f64,
    /// The window, seconds.
    pub window_s: f64,
}

/// `measure cpu-window`.
pub fn cpu_window(args: &CpuWindowArgs) -> Result<i32, String> {
    let hz = sys::clock_ticks_per_sec() as f64;
    let ticks = || procfs::read_cpu_ticks(args.pid).map_err(|e| e.to_string());
    let before = ticks()?;
    std::thread::sleep(args.window);
    let after = ticks()?;
    let figures = WindowCpu {
        relay_s: after.saturating_sub(before) as f64 / hz,
        window_s: args.window.as_secs_f64(),
    };
    let text = serde_json::to_string(&figures).map_err(|e| e.to_string())?;
    std::fs::write(&args.json, text).map_err(|e| format!("{}: {e}", args.json.display()))?;
    Ok(0)
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    /// `pair` or `server-id`.
    style: String,
    /// Offered round trips per second.
    rate: String,
    /// `shardrelay`, `baseline` or `raw`.
    relay: String,
    /// Measured round trips per second.
    per_s: f64,
    /// Relay CPU over the window, seconds.
    cpu_s: f64,
    /// Relay CPU-seconds per million forwarded messages.
    per_million: f64,
    /// Client p50 and p99, µs.
    latency: [u64; 2],
    /// Messages lost.
    lost: u64,
    /// The load run's exit code.
    exit: i32,
}

/// CPU-seconds per million forwarded messages (2 per round trip).
pub fn per_million(cpu_s: f64, round_trips_per_s: f64, window_s: f64) -> f64 {
    let forwarded = round_trips_per_s * 2.0 * window_s;
    if forwarded > 0.0 {
        cpu_s / forwarded * 1e6
    } else {
        0.0
    }
}

/// Reads run `TAG` (`RELAY.STYLE.RATE`).
fn row(dir: &Path, tag: &str) -> Result<Row, String> {
    let mut parts = tag.splitn(3, '.');
    let (Some(relay), Some(style), Some(rate)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("`{tag}`: expected RELAY.STYLE.RATE"));
    };
    let report = verdict::load(dir, tag)?;
    let path = dir.join(format!("{tag}.window.json"));
    let window: WindowCpu = serde_json::from_str(
        &std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let per_s = report.throughput.messages_per_s;
    Ok(Row {
        style: style.to_owned(),
        rate: rate.to_owned(),
        relay: relay.to_owned(),
        per_s,
        cpu_s: window.relay_s,
        per_million: per_million(window.relay_s, per_s, window.window_s),
        latency: [report.latency_us.p50, report.latency_us.p99],
        lost: report.integrity.lost,
        exit: report.exit_code,
    })
}

/// The table, each row beside the raw-copy run of the same case (`vs raw`).
fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:>7} {:<11} {:>9} {:>8} {:>12} {:>7} {:>7} {:>5} {:>4} vs raw",
        "style",
        "rate",
        "relay",
        "rt/s",
        "CPU s",
        "CPU-s/M msg",
        "p50 us",
        "p99 us",
        "lost",
        "exit"
    );
    for r in rows {
        let raw = rows
            .iter()
            .find(|o| o.relay == "raw" && o.style == r.style && o.rate == r.rate)
            .map(|o| o.per_million)
            .filter(|&m| m > 0.0);
        let vs_raw = raw.map_or("-".to_owned(), |m| format!("{:.2}x", r.per_million / m));
        let _ = writeln!(
            out,
            "{:<10} {:>7} {:<11} {:>9.0} {:>8.2} {:>12.1} {:>7} {:>7} {:>5} {:>4} {vs_raw}",
            r.style,
            r.rate,
            r.relay,
            r.per_s,
            r.cpu_s,
            r.per_million,
            r.latency[0],
            r.latency[1],
            r.lost,
            r.exit
        );
    }
    out
}

/// `measure cpu-table`.
pub fn cpu_table(args: &CpuTableArgs) -> Result<i32, String> {
    let rows = args
        .tags
        .iter()
        .map(|tag| row(&args.dir, tag))
        .collect::<Result<Vec<_>, _>>()?;
    print!("{}", render(&rows));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(relay: &str, per_s: f64, cpu_s: f64) -> Row {
        Row {
            style: "pair".into(),
            rate: "20000".into(),
            relay: relay.into(),
            per_s,
            cpu_s,
            per_million: per_million(cpu_s, per_s, 6.0),
            latency: [40, 90],
            lost: 0,
            exit: 0,
        }
    }

    #[test]
    fn cpu_per_million_counts_two_forwards_per_round_trip() {
        // 20,000 round trips/s for 6 s = 240,000 forwarded; 1.2 CPU-s → 5 CPU-s/M.
        assert!((per_million(1.2, 20_000.0, 6.0) - 5.0).abs() < 1e-9);
        assert_eq!(per_million(1.0, 0.0, 6.0), 0.0);
    }

    #[test]
    fn each_row_is_compared_with_the_raw_copy_of_its_case() {
        let text = render(&[run("shardrelay", 20_000.0, 1.2), run("raw", 20_000.0, 0.6)]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].ends_with(" 2.00x"), "{text}");
        assert!(lines[1].contains("5.0"), "{text}");
        assert!(lines[2].ends_with(" 1.00x"), "{text}");
        let alone = render(&[run("baseline", 20_000.0, 1.0)]);
        assert!(alone.lines().nth(1).unwrap().ends_with(" -"), "{alone}");
    }
}
