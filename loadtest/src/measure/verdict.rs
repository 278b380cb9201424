//! Checks over finished runs' `--json` reports (`measure p99-vs-baseline`,
//! `measure shutdown-closes`). Reports are read into [`ReportView`], a typed view of
//! the few fields checked (unknown fields are ignored, so older reports still read).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::cli::{P99VsBaselineArgs, ReportsArgs};

/// The report fields the checks read.
#[derive(Debug, Default, Deserialize)]
pub struct ReportView {
    /// Client latency.
    pub latency_us: LatencyView,
    /// Errors by kind.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Integrity counts.
    pub integrity: IntegrityView,
    /// Connection counts.
    pub connections: ConnectionsView,
    /// Throughput figures.
    pub throughput: ThroughputView,
    /// The exit code the run's report implies.
    #[serde(default)]
    pub exit_code: i32,
    /// The relay's side.
    #[serde(default)]
    pub relay: RelayView,
}

/// `relay`.
#[derive(Debug, Default, Deserialize)]
pub struct RelayView {
    /// The relay's whole `/stats` body at the end, when it was fetched (read through
    /// [`crate::relay_stats`]'s accessors).
    #[serde(default)]
    pub stats: Option<serde_json::Value>,
}

/// `latency_us`.
#[derive(Debug, Default, Deserialize)]
pub struct LatencyView {
    /// Samples in the measured window.
    pub count: u64,
    /// Median, µs.
    #[serde(default)]
    pub p50: u64,
    /// 99th percentile, µs.
    pub p99: u64,
    /// 99.9th percentile, µs.
    #[serde(default)]
    pub p999: u64,
}

/// `integrity`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct IntegrityView {
    /// Messages lost.
    #[serde(default)]
    pub lost: u64,
    /// Messages received twice.
    #[serde(default)]
    pub duplicated: u64,
    /// Messages received out of order.
    #[serde(default)]
    pub reordered: u64,
    /// Bodies or messages that arrived with the wrong bytes.
    #[serde(default)]
    pub corrupted: u64,
    /// Messages that reached the wrong receiver.
    #[serde(default)]
    pub misrouted: u64,
}

/// `connections`.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectionsView {
    /// Connections that came up.
    pub up: u64,
    /// Attempts (units) that failed.
    #[serde(default)]
    pub failed: u64,
    /// Seconds the ramp took.
    #[serde(default)]
    pub ramp_s: f64,
    /// Connections per second over the ramp.
    #[serde(default)]
    pub per_s: f64,
    /// TCP connect plus upgrade, µs.
    #[serde(default)]
    pub connect_us: ConnectView,
}

/// `connections.connect_us`.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectView {
    /// Median.
    #[serde(default)]
    pub p50: u64,
    /// 99th percentile.
    #[serde(default)]
    pub p99: u64,
    /// Largest.
    #[serde(default)]
    pub max: u64,
}

/// `throughput`.
#[derive(Debug, Default, Deserialize)]
pub struct ThroughputView {
    /// Messages (or transfers) received per second in the measured window.
    #[serde(default)]
    pub messages_per_s: f64,
    /// Messages (or transfers) received.
    #[serde(default)]
    pub received: u64,
}

/// Reads `DIR/NAME.json`.
pub fn load(dir: &Path, name: &str) -> Result<ReportView, String> {
    load_path(&dir.join(format!("{name}.json")))
}

/// Reads the report at `path`.
pub fn load_path(path: &Path) -> Result<ReportView, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The p99 a run under attack may have: `ratio` times its baseline's, or the baseline
/// plus `floor_us`, whichever is larger.
pub fn p99_limit(baseline_us: u64, ratio: u64, floor_us: u64) -> u64 {
    (ratio * baseline_us).max(baseline_us + floor_us)
}

/// Whether a run's p99 is within `limit` (and it measured something at all).
pub fn p99_ok(run: &ReportView, limit: u64) -> bool {
    run.latency_us.count > 0 && run.latency_us.p99 <= limit
}

/// `measure p99-vs-baseline`: one line per run on stderr; exit 1 when any fails.
pub fn p99_vs_baseline(args: &P99VsBaselineArgs) -> Result<i32, String> {
    let mut bad = false;
    for name in &args.names {
        let base = load(&args.dir, &format!("{name}-baseline"))?.latency_us.p99;
        let run = load(&args.dir, name)?;
        let limit = p99_limit(base, args.ratio, args.floor_us);
        let ok = p99_ok(&run, limit);
        bad |= !ok;
        eprintln!(
            "  {name}: client p99 {} us under attack ({} measured), {base} us baseline (limit {limit} us) -> {}",
            run.latency_us.p99,
            run.latency_us.count,
            if ok { "ok" } else { "FAIL" }
        );
    }
    Ok(i32::from(bad))
}

/// Whether a run stopped by the relay's SIGTERM ended as promised: a ticket run moved
/// no wrong bytes; a WebSocket run's only errors are its connections' `close_1001`s.
pub fn shutdown_ok(name: &str, run: &ReportView) -> bool {
    if name.starts_with("ticket") {
        run.integrity.corrupted == 0 && run.integrity.misrouted == 0
    } else {
        run.errors.keys().eq(["close_1001"].iter())
            && run.errors.get("close_1001") == Some(&run.connections.up)
    }
}

/// `measure shutdown-closes`: one line per run on stderr; exit 1 when any fails.
pub fn shutdown_closes(args: &ReportsArgs) -> Result<i32, String> {
    let mut bad = false;
    for name in &args.names {
        let run = load(&args.dir, name)?;
        let ok = shutdown_ok(name, &run);
        bad |= !ok;
        let what = if name.starts_with("ticket") {
            format!(
                "transfers ok {}, corrupted {}, misrouted {}, errors {:?}",
                run.throughput.received,
                run.integrity.corrupted,
                run.integrity.misrouted,
                run.errors
            )
        } else {
            format!(
                "{} connections, errors {:?}",
                run.connections.up, run.errors
            )
        };
        eprintln!("  {name}: {what} -> {}", if ok { "ok" } else { "FAIL" });
    }
    Ok(i32::from(bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(json: serde_json::Value) -> ReportView {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_p99_limit_is_three_times_the_baseline_or_the_floor_above_it() {
        assert_eq!(p99_limit(1000, 3, 1000), 3000);
        assert_eq!(
            p99_limit(200, 3, 1000),
            1200,
            "sub-millisecond baseline: the floor"
        );
        let run = view(
            serde_json::json!({"latency_us":{"count":10,"p99":1200,"p50":5},
            "integrity":{},"connections":{"up":2},"throughput":{}}),
        );
        assert!(p99_ok(&run, 1200) && !p99_ok(&run, 1199));
        let empty = view(serde_json::json!({"latency_us":{"count":0,"p99":0},
            "integrity":{},"connections":{"up":0},"throughput":{}}));
        assert!(!p99_ok(&empty, 1000), "a run that measured nothing fails");
    }

    #[test]
    fn shutdown_wants_exactly_one_1001_per_connection() {
        let ws = |errors: serde_json::Value| {
            view(
                serde_json::json!({"latency_us":{"count":1,"p99":1},"errors":errors,
                "integrity":{"corrupted":0},"connections":{"up":4},"throughput":{}}),
            )
        };
        assert!(shutdown_ok(
            "pair-shutdown",
            &ws(serde_json::json!({"close_1001":4}))
        ));
        assert!(!shutdown_ok(
            "pair-shutdown",
            &ws(serde_json::json!({"close_1001":3}))
        ));
        assert!(!shutdown_ok(
            "pair-shutdown",
            &ws(serde_json::json!({"close_1001":4,"close_1006":1}))
        ));
        assert!(!shutdown_ok("pair-shutdown", &ws(serde_json::json!({}))));
        let ticket = view(serde_json::json!({"latency_us":{"count":1,"p99":1},
            "errors":{"reset":3},"integrity":{"corrupted":0,"misrouted":0},
            "connections":{"up":2},"throughput":{"received":1}}));
        assert!(shutdown_ok("ticket-shutdown", &ticket));
        let corrupted = view(serde_json::json!({"latency_us":{"count":1,"p99":1},
            "integrity":{"corrupted":1},"connections":{"up":2},"throughput":{}}));
        assert!(!shutdown_ok("ticket-shutdown", &corrupted));
    }
}
