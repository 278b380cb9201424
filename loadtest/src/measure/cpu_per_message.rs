//! `measure cpu-window` and `measure cpu-table`: the figures of
//! `scripts/cpu-per-message.sh`. `cpu-window` reads a relay's CPU over a sampling
//! window (inside the load's measured window); `cpu-table` turns each run's window and
//! report into relay CPU-seconds per million forwarded messages, beside the raw-copy
//! reference of the same case:
//!
//! `CPU-s per million = CPU ÷ (round trips/s × 2 × window) × 1e6` (pair and server-id
//! both forward 2 messages per round trip: A→B→A, phone→binary→phone).
//!
//! Runs may come in rounds (`RELAY.STYLE.RATE.rN`, `ROUNDS=N` in the script): each row
//! is then compared with the raw copy of its own round, run minutes apart at most, and a
//! last table gives each relay's median over the rounds and the range of its ratios. On
//! a shared box whose absolute figures drift between hours, that median of interleaved
//! ratios is the figure to quote.

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
    /// Which round (`r1` when the runs are not in rounds).
    round: String,
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
    let mut parts = tag.splitn(4, '.');
    let (Some(relay), Some(style), Some(rate)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("`{tag}`: expected RELAY.STYLE.RATE[.ROUND]"));
    };
    let round = parts.next().unwrap_or("r1");
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
        round: round.to_owned(),
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
        let vs_raw = vs_raw(rows, r).map_or("-".to_owned(), |x| format!("{x:.2}x"));
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
    if rows.iter().any(|r| r.round != rows[0].round) {
        out.push_str(&render_medians(rows));
    }
    out
}

/// `r`'s CPU per message over that of the raw copy of the same case and round.
fn vs_raw(rows: &[Row], r: &Row) -> Option<f64> {
    rows.iter()
        .find(|o| o.relay == "raw" && o.style == r.style && o.rate == r.rate && o.round == r.round)
        .map(|o| o.per_million)
        .filter(|&m| m > 0.0)
        .map(|m| r.per_million / m)
}

/// Per case and relay, in first-seen order: the median CPU per message over the rounds,
/// and the median and range of its per-round ratios to the raw copy.
fn render_medians(rows: &[Row]) -> String {
    let mut out = String::new();
    let rounds = rows
        .iter()
        .map(|r| &r.round)
        .collect::<std::collections::BTreeSet<_>>();
    let _ = writeln!(
        out,
        "\nmedian over {} rounds\n{:<10} {:>7} {:<11} {:>12}  vs raw (median, range)",
        rounds.len(),
        "style",
        "rate",
        "relay",
        "CPU-s/M msg"
    );
    let mut seen: Vec<(&str, &str, &str)> = Vec::new();
    for r in rows {
        let key = (r.style.as_str(), r.rate.as_str(), r.relay.as_str());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let same: Vec<&Row> = rows
            .iter()
            .filter(|o| (o.style.as_str(), o.rate.as_str(), o.relay.as_str()) == key)
            .collect();
        let cpu = median(same.iter().map(|o| o.per_million).collect());
        let ratios: Vec<f64> = same.iter().filter_map(|o| vs_raw(rows, o)).collect();
        let vs = match (median(ratios.clone()), min_max(&ratios)) {
            (Some(mid), Some((lo, hi))) => format!("{mid:.2}x ({lo:.2}-{hi:.2})"),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<10} {:>7} {:<11} {:>12.1}  {vs}",
            r.style,
            r.rate,
            r.relay,
            cpu.unwrap_or(0.0)
        );
    }
    out
}

/// The smallest and largest of `values`; None when empty.
fn min_max(values: &[f64]) -> Option<(f64, f64)> {
    let lo = values.iter().copied().reduce(f64::min)?;
    let hi = values.iter().copied().reduce(f64::max)?;
    Some((lo, hi))
}

/// The median (the mean of the middle two for an even count); None when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
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
        run_in("r1", relay, per_s, cpu_s)
    }

    fn run_in(round: &str, relay: &str, per_s: f64, cpu_s: f64) -> Row {
        Row {
            style: "pair".into(),
            rate: "20000".into(),
            relay: relay.into(),
            round: round.into(),
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
        assert!(!text.contains("median"), "{text}");
    }

    #[test]
    fn rounds_are_compared_within_the_round_then_summarised_by_median() {
        // Round 1: 1.2 vs 1.0 CPU-s; round 2 (a slower box): 2.2 vs 2.0; round 3: 1.0 vs 1.0.
        let rows = [
            run_in("r1", "shardrelay", 20_000.0, 1.2),
            run_in("r1", "raw", 20_000.0, 1.0),
            run_in("r2", "shardrelay", 20_000.0, 2.2),
            run_in("r2", "raw", 20_000.0, 2.0),
            run_in("r3", "shardrelay", 20_000.0, 1.0),
            run_in("r3", "raw", 20_000.0, 1.0),
        ];
        let text = render(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].ends_with(" 1.20x"), "{text}");
        assert!(lines[3].ends_with(" 1.10x"), "{text}");
        assert!(lines[5].ends_with(" 1.00x"), "{text}");
        let medians = &lines[lines
            .iter()
            .position(|l| l.starts_with("median over 3"))
            .unwrap()..];
        // Median CPU-s/M of 5.0, 9.2, 4.2 is 5.0; median ratio of 1.2, 1.1, 1.0 is 1.1.
        assert!(
            medians[2].contains("shardrelay") && medians[2].contains(" 5.0 "),
            "{text}"
        );
        assert!(medians[2].ends_with("1.10x (1.00-1.20)"), "{text}");
        assert!(
            medians[3].starts_with("pair") && medians[3].ends_with("1.00x (1.00-1.00)"),
            "{text}"
        );
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
