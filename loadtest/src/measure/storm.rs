//! `measure storm-table`: the table of `scripts/storm.sh` — per case, how fast the
//! connections came up, what the relay's CPU over the ramp was (upgrades per
//! CPU-second; with nginx in front, nginx's CPU and the relay's), the connect latency
//! (TCP connect + TLS handshake, if any + upgrade) and the errors — from each run's `TAG.json`
//! report and `TAG.ticks` (the relay's CPU ticks before the load and when every
//! connection was up, as `measure proc cpu-ticks` printed them).

use std::fmt::Write as _;
use std::path::Path;

use crate::cli::StormTableArgs;
use crate::measure::verdict::{self, ReportView};
use crate::sys;

/// Relay CPU seconds from a `TAG.ticks` file (`BEFORE AFTER`).
fn cpu_seconds(dir: &Path, tag: &str, hz: f64) -> Result<f64, String> {
    let path = dir.join(format!("{tag}.ticks"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ticks: Vec<u64> = text
        .split_whitespace()
        .map(|t| {
            t.parse()
                .map_err(|_| format!("{}: `{t}` is not a tick count", path.display()))
        })
        .collect::<Result<_, _>>()?;
    match ticks[..] {
        [before, after] => Ok(after.saturating_sub(before) as f64 / hz),
        _ => Err(format!("{}: expected BEFORE AFTER", path.display())),
    }
}

/// One table line for run `tag` (`LABEL.STYLE`).
fn line(out: &mut String, tag: &str, run: &ReportView, cpu_s: f64) {
    let (label, style) = tag.split_once('.').unwrap_or((tag, "?"));
    let c = &run.connections;
    let per_cpu = if cpu_s > 0.0 {
        c.up as f64 / cpu_s
    } else {
        0.0
    };
    let errors = serde_json::to_string(&run.errors).unwrap_or_default();
    let _ = writeln!(
        out,
        "{label:<14} {style:<9} {:>6} {:>6} {:>7.2} {:>7.0} {cpu_s:>6.2} {per_cpu:>9.0} {:>8} {:>8} {:>8} {:>4} {errors}",
        c.up, c.failed, c.ramp_s, c.per_s, c.connect_us.p50, c.connect_us.p99, c.connect_us.max, run.exit_code
    );
}

/// The table's header.
fn header() -> String {
    format!(
        "{:<14} {:<9} {:>6} {:>6} {:>7} {:>7} {:>6} {:>9} {:>8} {:>8} {:>8} {:>4} errors\n",
        "relay",
        "style",
        "up",
        "failed",
        "ramp s",
        "conn/s",
        "CPU s",
        "upg/CPU-s",
        "p50 us",
        "p99 us",
        "max us",
        "exit"
    )
}

/// `measure storm-table`.
pub fn storm_table(args: &StormTableArgs) -> Result<i32, String> {
    let hz = sys::clock_ticks_per_sec() as f64;
    let mut out = header();
    for tag in &args.tags {
        let run = verdict::load(&args.dir, tag)?;
        line(&mut out, tag, &run, cpu_seconds(&args.dir, tag, hz)?);
    }
    print!("{out}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_shows_upgrades_per_cpu_second_and_the_errors() {
        let run: ReportView = serde_json::from_value(serde_json::json!({
            "latency_us":{"count":0,"p99":0},"integrity":{},"throughput":{},
            "errors":{"connect_timeout":2},"exit_code":1,
            "connections":{"up":1000,"failed":2,"ramp_s":0.5,"per_s":2000.0,
                "connect_us":{"p50":300,"p99":900,"max":1200}}}))
        .unwrap();
        let mut out = String::new();
        line(&mut out, "shardrelay.pair", &run, 0.25);
        let f: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(
            f,
            [
                "shardrelay",
                "pair",
                "1000",
                "2",
                "0.50",
                "2000",
                "0.25",
                "4000",
                "300",
                "900",
                "1200",
                "1",
                r#"{"connect_timeout":2}"#
            ]
        );
        let h = header();
        assert!(
            h.starts_with("relay          style     ") && h.trim_end().ends_with("exit errors"),
            "{h}"
        );
    }
}
