//! The final report: built from the merged [`Totals`] and the relay's `/stats`,
//! printed as text on stdout and, with `--json`, written as the same data in JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::plan::{Pace, Plan, Style};
use crate::relay_stats::{self, Window, RELAY_HISTOGRAMS};
use crate::stats::{Integrity, LatencySummary, Totals};
use crate::threshold::{self, Figures, LatencyStat, Metric, Threshold, EXIT_THRESHOLD};

/// Exit code of a run with integrity violations (lost, duplicated, reordered,
/// corrupted or misrouted messages).
pub const EXIT_INTEGRITY: i32 = 2;
/// Exit code of a run with other errors (failed connections, unexpected closes).
pub const EXIT_ERRORS: i32 = 1;

/// Everything the run found, as printed and as written to `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// Shape of the run in words.
    pub shape: String,
    /// Pacing in words.
    pub pace: String,
    /// I/O driver the workers ran on.
    pub driver: &'static str,
    /// Worker threads.
    pub workers: usize,
    /// Message (or body) size in bytes.
    pub size: usize,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Measured window actually run, seconds.
    pub measured_s: f64,
    /// Connection figures.
    pub connections: Connections,
    /// Throughput figures.
    pub throughput: Throughput,
    /// Integrity violations.
    pub integrity: Integrity,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// What the client latency measures.
    pub latency_kind: &'static str,
    /// Client latency in µs (measured window only).
    pub latency_us: LatencySummary,
    /// A direct loopback round trip measured in the same window (`--direct-probe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_round_trip_us: Option<LatencySummary>,
    /// The relay's view.
    pub relay: RelaySide,
    /// `--fail-if` thresholds this run crossed, with the observed value.
    pub thresholds_crossed: Vec<String>,
    /// The process exit code this report implies.
    pub exit_code: i32,
}

/// Connection figures.
#[derive(Debug, Serialize)]
pub struct Connections {
    /// Connections the plan asked for.
    pub planned: usize,
    /// Connections upgraded.
    pub up: u64,
    /// Attempts (units) that failed.
    pub failed: u64,
    /// Seconds from the start of the ramp until every unit settled.
    pub ramp_s: f64,
    /// Connections per second over the ramp.
    pub per_s: f64,
    /// TCP connect plus upgrade, µs.
    pub connect_us: LatencySummary,
}

/// Throughput figures (measured window).
#[derive(Debug, Serialize)]
pub struct Throughput {
    /// Messages (or transfers) received per second.
    pub messages_per_s: f64,
    /// Payload bytes received per second.
    pub bytes_per_s: f64,
    /// Messages sent over the whole run (warm-up included).
    pub sent: u64,
    /// Messages received intact over the whole run.
    pub received: u64,
    /// Messages received in the measured window.
    pub measured: u64,
}

/// The relay's `/stats`, or why it is missing.
#[derive(Debug, Default, Serialize)]
pub struct RelaySide {
    /// Why `/stats` could not be fetched, if it could not.
    pub error: Option<String>,
    /// The whole `/stats` body at the end of the run (cumulative since the relay
    /// started).
    pub stats: Option<Value>,
    /// The relay's figures over the measured window only (end minus start snapshot);
    /// absent when the start snapshot could not be taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

impl Figures for Report {
    fn figure(&self, metric: Metric) -> f64 {
        let l = &self.latency_us;
        match metric {
            Metric::Latency(LatencyStat::P50) => l.p50 as f64,
            Metric::Latency(LatencyStat::P90) => l.p90 as f64,
            Metric::Latency(LatencyStat::P99) => l.p99 as f64,
            Metric::Latency(LatencyStat::P999) => l.p999 as f64,
            Metric::Latency(LatencyStat::Max) => l.max as f64,
            Metric::Latency(LatencyStat::Mean) => l.mean,
            Metric::ConnectP99 => self.connections.connect_us.p99 as f64,
            Metric::Throughput => self.throughput.messages_per_s,
            Metric::Errors => self.errors.values().sum::<u64>() as f64,
            Metric::Lost => self.integrity.lost as f64,
            Metric::Failed => self.connections.failed as f64,
        }
    }
}

/// Inputs the report needs besides the totals.
pub struct RunFacts {
    /// Seconds the ramp took.
    pub ramp_s: f64,
    /// Seconds of the measured window actually run.
    pub measured_s: f64,
    /// Whether the workers ran on epoll rather than io_uring.
    pub legacy_driver: bool,
    /// The direct loopback round trip (`--direct-probe`), µs.
    pub direct: Option<LatencySummary>,
}

impl Report {
    /// Builds the report.
    pub fn new(plan: &Plan, totals: &Totals, facts: &RunFacts, relay: RelaySide) -> Self {
        let measured_s = facts.measured_s.max(1e-9);
        let mut report = Self {
            scenario: if plan.idle { "idle" } else { plan.style.name() },
            shape: plan.style.describe(),
            pace: describe_pace(plan),
            driver: if facts.legacy_driver {
                "epoll"
            } else {
                "io_uring"
            },
            workers: plan.workers,
            size: plan.size,
            warmup_s: plan.warmup.as_secs_f64(),
            measured_s: facts.measured_s,
            connections: Connections {
                planned: plan.total_conns(),
                up: totals.conns_up,
                failed: totals.conns_failed,
                ramp_s: facts.ramp_s,
                per_s: totals.conns_up as f64 / facts.ramp_s.max(1e-9),
                connect_us: LatencySummary::of(&totals.connect),
            },
            throughput: Throughput {
                messages_per_s: totals.measured as f64 / measured_s,
                bytes_per_s: totals.measured_bytes as f64 / measured_s,
                sent: totals.sent,
                received: totals.received,
                measured: totals.measured,
            },
            integrity: totals.integrity,
            errors: totals.errors.clone(),
            latency_kind: latency_kind(plan),
            latency_us: LatencySummary::of(&totals.latency),
            direct_round_trip_us: facts.direct,
            relay,
            thresholds_crossed: Vec::new(),
            exit_code: 0,
        };
        report.exit_code = report.verdict(plan);
        report
    }

    /// Checks `--fail-if` thresholds; a crossed one makes a clean run exit
    /// [`EXIT_THRESHOLD`] (integrity violations and errors keep their codes).
    pub fn apply_thresholds(&mut self, thresholds: &[Threshold]) {
        self.thresholds_crossed = threshold::crossed(thresholds, self)
            .into_iter()
            .map(|(t, observed)| format!("{t} (observed {observed:.1})"))
            .collect();
        if self.exit_code == 0 && !self.thresholds_crossed.is_empty() {
            self.exit_code = EXIT_THRESHOLD;
        }
    }

    /// 2 for integrity violations, 1 for other errors or a run that moved nothing.
    fn verdict(&self, plan: &Plan) -> i32 {
        if self.integrity.total() > 0 {
            return EXIT_INTEGRITY;
        }
        let moved_nothing = !plan.idle && self.throughput.received == 0;
        if !self.errors.is_empty() || self.connections.failed > 0 || moved_nothing {
            return EXIT_ERRORS;
        }
        0
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "shardrelay-load {} — {}", self.scenario, self.shape);
        let _ = writeln!(
            out,
            "  {} | size {} B | {} workers ({}) | {:.1} s measured after {:.1} s warm-up",
            self.pace, self.size, self.workers, self.driver, self.measured_s, self.warmup_s
        );
        self.render_counts(&mut out);
        self.render_latency(&mut out);
        for crossed in &self.thresholds_crossed {
            let _ = writeln!(out, "threshold     crossed: {crossed}");
        }
        let verdict = match self.exit_code {
            0 => "OK",
            EXIT_INTEGRITY => "FAILED: integrity violations",
            EXIT_THRESHOLD => "FAILED: threshold crossed",
            _ => "FAILED: errors",
        };
        let _ = writeln!(out, "result        {verdict} (exit {})", self.exit_code);
        out
    }

    /// Connections, throughput, integrity and errors.
    fn render_counts(&self, out: &mut String) {
        let c = &self.connections;
        if self.scenario == "ticket" {
            let _ = writeln!(
                out,
                "connections   opened per transfer (mint, PUT, GET), none held"
            );
        } else {
            let _ = writeln!(
                out,
                "connections   {}/{} up, {} failed, ramp {:.2} s ({:.0} conn/s); connect p50 {} p99 {}",
                c.up,
                c.planned,
                c.failed,
                c.ramp_s,
                c.per_s,
                micros(c.connect_us.p50),
                micros(c.connect_us.p99)
            );
        }
        let t = &self.throughput;
        let unit = if self.scenario == "ticket" {
            "transfers"
        } else {
            "msg"
        };
        let _ = writeln!(
            out,
            "throughput    {:.1} {unit}/s, {}/s received (measured {}; sent {}, received {})",
            t.messages_per_s,
            bytes(t.bytes_per_s),
            t.measured,
            t.sent,
            t.received
        );
        let i = &self.integrity;
        let _ = writeln!(
            out,
            "integrity     lost {}, duplicated {}, reordered {}, corrupted {}, misrouted {}",
            i.lost, i.duplicated, i.reordered, i.corrupted, i.misrouted
        );
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "errors        {errors}");
    }

    /// The latency table: client rows, then the relay's histograms.
    fn render_latency(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "latency (µs)            {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let client = format!("client {}", self.latency_kind);
        latency_row(out, &client, &self.latency_us);
        latency_row(out, "client connect", &self.connections.connect_us);
        if let Some(direct) = &self.direct_round_trip_us {
            latency_row(out, "direct round trip", direct);
        }
        if let Some(window) = &self.relay.window {
            render_relay_window(out, window);
            return;
        }
        match (&self.relay.stats, &self.relay.error) {
            (Some(stats), _) => {
                let _ = writeln!(
                    out,
                    "  (relay rows below are since the relay started: no start-of-window snapshot)"
                );
                for name in RELAY_HISTOGRAMS {
                    let label = format!("relay {name}");
                    match relay_stats::histogram(stats, name) {
                        Some(h) => latency_row(out, &label, &summary_of_json(h)),
                        None => {
                            let _ = writeln!(out, "  {label:<21} (not in /stats)");
                        }
                    }
                }
            }
            (None, Some(error)) => {
                let _ = writeln!(out, "  relay /stats          not fetched: {error}");
            }
            (None, None) => {
                let _ = writeln!(
                    out,
                    "  relay /stats          not fetched (--no-relay-stats)"
                );
            }
        }
    }
}

/// The relay's rows over the measured window, then its window counters.
fn render_relay_window(out: &mut String, window: &Window) {
    for name in RELAY_HISTOGRAMS {
        let label = format!("relay {name}");
        match window.histograms.get(name) {
            Some(summary) => latency_row(out, &label, summary),
            None => {
                let _ = writeln!(out, "  {label:<21} (not in /stats)");
            }
        }
    }
    let c = |name: &str| window.counters.get(name).copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "relay window  messages in {} out {}, accepted {}, rejected {}, dropped {}",
        c("messages_in"),
        c("messages_out"),
        c("accepted"),
        c("rejected"),
        c("dropped")
    );
}

/// One row of the latency table.
fn latency_row(out: &mut String, label: &str, s: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {label:<21} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        s.count, s.p50, s.p90, s.p99, s.p999, s.max
    );
}

/// A relay histogram object (`count`, `p50`, …) as a summary.
fn summary_of_json(h: &Value) -> LatencySummary {
    let field = |name: &str| h.get(name).and_then(Value::as_f64).unwrap_or(0.0) as u64;
    LatencySummary {
        count: field("count"),
        p50: field("p50"),
        p90: field("p90"),
        p99: field("p99"),
        p999: field("p999"),
        max: field("max"),
        mean: h.get("mean").and_then(Value::as_f64).unwrap_or(0.0),
    }
}

/// The pacing in words.
fn describe_pace(plan: &Plan) -> String {
    let unit = if matches!(plan.style, Style::Ticket { .. }) {
        "transfers"
    } else {
        "msg"
    };
    match (plan.idle, plan.pace) {
        (true, _) => "no traffic (idle)".into(),
        (false, Pace::Rate(rate)) => format!("open loop {rate} {unit}/s"),
        (false, Pace::Inflight(k)) => format!("closed loop, {k} in flight per stream"),
    }
}

/// What the client latency row measures.
fn latency_kind(plan: &Plan) -> &'static str {
    match plan.style {
        Style::Ticket { .. } => "transfer",
        Style::ServerId { fanout: true, .. }
        | Style::Pair { oneway: true, .. }
        | Style::Session { oneway: true, .. }
        | Style::SessionWs { .. } => "one way",
        _ => "round trip",
    }
}

/// µs as a short human string.
fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

/// Bytes as a short human string.
fn bytes(b: f64) -> String {
    match b {
        b if b >= (1u64 << 30) as f64 => format!("{:.2} GiB", b / (1u64 << 30) as f64),
        b if b >= (1u64 << 20) as f64 => format!("{:.2} MiB", b / (1u64 << 20) as f64),
        b if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        b => format!("{b:.0} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn plan() -> Plan {
        let cli = Cli::try_parse_from(["x", "pair", "--pairs", "2", "--rate", "10"]).unwrap();
        Plan::from_command(cli.command).unwrap()
    }

    fn facts() -> RunFacts {
        RunFacts {
            ramp_s: 0.5,
            measured_s: 10.0,
            legacy_driver: false,
            direct: None,
        }
    }

    #[test]
    fn clean_run_exits_zero_and_renders_relay_rows() {
        let mut totals = Totals {
            conns_up: 4,
            sent: 100,
            received: 100,
            measured: 80,
            measured_bytes: 8_000,
            ..Default::default()
        };
        totals.latency.record(250).unwrap();
        let stats = serde_json::json!({"totals":{"histograms":{"forward":{"count":5,"p50":7,"p90":8,"p99":9,"p999":9,"max":12}}}});
        let relay = RelaySide {
            error: None,
            stats: Some(stats),
            window: None,
        };
        let report = Report::new(&plan(), &totals, &facts(), relay);
        assert_eq!(report.exit_code, 0);
        assert_eq!(report.throughput.messages_per_s, 8.0);
        let text = report.render();
        assert!(text.contains("relay forward"), "{text}");
        assert!(text.contains("(not in /stats)"), "{text}");
        assert!(text.contains("result        OK (exit 0)"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["latency_us"]["p50"], 250);
    }

    #[test]
    fn a_direct_probe_adds_its_row_and_json_field_only_when_run() {
        let relay = RelaySide::default;
        let without = Report::new(&plan(), &Totals::default(), &facts(), relay());
        assert!(!without.render().contains("direct round trip"));
        assert!(serde_json::to_value(&without).unwrap()["direct_round_trip_us"].is_null());
        let direct = LatencySummary {
            count: 9_000,
            p50: 31,
            p99: 77,
            ..Default::default()
        };
        let with_probe = RunFacts {
            direct: Some(direct),
            ..facts()
        };
        let report = Report::new(&plan(), &Totals::default(), &with_probe, relay());
        let text = report.render();
        assert!(
            text.contains("  direct round trip          9000        31"),
            "{text}"
        );
        assert_eq!(
            serde_json::to_value(&report).unwrap()["direct_round_trip_us"]["p99"],
            77
        );
    }

    #[test]
    fn integrity_beats_errors_in_the_exit_code() {
        let mut totals = Totals {
            received: 1,
            ..Default::default()
        };
        totals.errors.insert("eof".into(), 1);
        assert_eq!(
            Report::new(&plan(), &totals, &facts(), RelaySide::default()).exit_code,
            EXIT_ERRORS
        );
        totals.integrity.lost = 1;
        let report = Report::new(
            &plan(),
            &totals,
            &facts(),
            RelaySide {
                error: Some("connect refused".into()),
                ..Default::default()
            },
        );
        assert_eq!(report.exit_code, EXIT_INTEGRITY);
        assert!(report.render().contains("not fetched: connect refused"));
    }

    #[test]
    fn a_crossed_threshold_exits_3_and_a_met_one_leaves_0() {
        let mut totals = Totals {
            conns_up: 4,
            received: 10,
            measured: 10,
            ..Default::default()
        };
        totals.latency.record(2_500).unwrap();
        let thresholds = [
            Threshold::parse("p99>2ms").unwrap(),
            Threshold::parse("throughput<0.5").unwrap(),
        ];
        let mut report = Report::new(&plan(), &totals, &facts(), RelaySide::default());
        report.apply_thresholds(&thresholds[1..]);
        assert_eq!(report.exit_code, 0, "{:?}", report.thresholds_crossed);
        report.apply_thresholds(&thresholds);
        assert_eq!(report.exit_code, EXIT_THRESHOLD);
        assert_eq!(report.thresholds_crossed.len(), 1);
        let text = report.render();
        assert!(text.contains("threshold     crossed: p99>2ms"), "{text}");
        assert!(
            text.contains("FAILED: threshold crossed (exit 3)"),
            "{text}"
        );
    }

    #[test]
    fn relay_rows_come_from_the_window_when_there_is_one() {
        let mut window = Window::default();
        let summary = LatencySummary {
            count: 7,
            p50: 11,
            ..Default::default()
        };
        window.histograms.insert("forward".into(), summary);
        window.counters.insert("dropped".into(), 2);
        let relay = RelaySide {
            window: Some(window),
            ..Default::default()
        };
        let text = Report::new(&plan(), &Totals::default(), &facts(), relay).render();
        assert!(
            text.contains("  relay forward                 7        11"),
            "{text}"
        );
        assert!(text.contains("dropped 2"), "{text}");
        assert!(!text.contains("since the relay started"), "{text}");
    }
}
