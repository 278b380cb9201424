//! `--compare PREVIOUS.json`: this run's figures beside a previous run's `--json`
//! report, with the change of each. Both sides are read as JSON by pointer, so a report
//! from an older build with fewer fields compares on what it has.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// The figures compared: (label, JSON pointer, whether higher is better).
const COMPARED: [(&str, &str, bool); 9] = [
    ("throughput msg/s", "/throughput/messages_per_s", true),
    ("latency p50 µs", "/latency_us/p50", false),
    ("latency p90 µs", "/latency_us/p90", false),
    ("latency p99 µs", "/latency_us/p99", false),
    ("latency p99.9 µs", "/latency_us/p999", false),
    ("latency max µs", "/latency_us/max", false),
    ("connect p99 µs", "/connections/connect_us/p99", false),
    ("connections failed", "/connections/failed", false),
    ("lost", "/integrity/lost", false),
];

/// Reads a previous report.
pub fn load(path: &Path) -> Result<Value, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--compare {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("--compare {}: not JSON: {e}", path.display()))
}

/// The comparison table: one line per figure both reports have.
pub fn render(previous: &Value, current: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "compared with previous run ({} — {})",
        previous["scenario"].as_str().unwrap_or("?"),
        previous["shape"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "  {:<21} {:>12} {:>12} {:>9}",
        "figure", "previous", "this run", "change"
    );
    for (label, pointer, higher_is_better) in COMPARED {
        let (Some(before), Some(now)) = (number(previous, pointer), number(current, pointer))
        else {
            continue;
        };
        let _ = writeln!(
            out,
            "  {label:<21} {:>12} {:>12} {:>9}{}",
            short(before),
            short(now),
            change(before, now),
            verdict(before, now, higher_is_better)
        );
    }
    out
}

/// A number at `pointer`.
fn number(report: &Value, pointer: &str) -> Option<f64> {
    report.pointer(pointer)?.as_f64()
}

/// `+12.3%`, `-4.0%`, or `=` / `new` when a percentage means nothing.
fn change(before: f64, now: f64) -> String {
    if before == now {
        "=".into()
    } else if before == 0.0 {
        format!("+{}", short(now - before))
    } else {
        format!("{:+.1}%", (now - before) / before * 100.0)
    }
}

/// ` (better)` / ` (worse)` for a change past 5 %, else nothing (run-to-run noise).
fn verdict(before: f64, now: f64, higher_is_better: bool) -> &'static str {
    let base = before.abs().max(1e-9);
    if (now - before).abs() / base < 0.05 {
        return "";
    }
    if (now > before) == higher_is_better {
        " (better)"
    } else {
        " (worse)"
    }
}

/// A number without needless decimals.
fn short(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(rate: f64, p99: u64, lost: u64) -> Value {
        json!({"scenario":"pair","shape":"2 pairs","throughput":{"messages_per_s":rate},
               "latency_us":{"p50":100,"p99":p99},"integrity":{"lost":lost},
               "connections":{"failed":0}})
    }

    #[test]
    fn deltas_are_percentages_with_a_verdict_past_noise() {
        let text = render(&report(1000.0, 200, 0), &report(1100.0, 300, 0));
        assert!(text.contains("throughput msg/s"), "{text}");
        assert!(text.contains("+10.0% (better)"), "{text}");
        assert!(text.contains("+50.0% (worse)"), "{text}");
        let p50 = text.lines().find(|l| l.contains("p50")).unwrap();
        assert!(p50.ends_with('='), "{p50}");
    }

    #[test]
    fn figures_missing_on_either_side_are_skipped_and_zero_bases_are_absolute() {
        let text = render(&report(10.0, 1, 0), &report(10.0, 1, 3));
        assert!(!text.contains("connect p99"), "{text}");
        let lost = text.lines().find(|l| l.contains("lost")).unwrap();
        assert!(lost.contains("+3 (worse)"), "{lost}");
    }
}
