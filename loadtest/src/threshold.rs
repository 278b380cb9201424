//! `--fail-if` thresholds (`p99>2ms`, `throughput<5000`, `errors>0`): parsed once from
//! the command line, checked against anything that can state the named figures
//! ([`Figures`]; the final report does); any crossed threshold sets exit code
//! [`EXIT_THRESHOLD`]. This module knows nothing of the report, so the command line
//! can parse thresholds without a cycle back through it.

use std::fmt;

/// A source of the figures a threshold can name (the final report implements it).
pub trait Figures {
    /// The value of `metric` (µs for latencies).
    fn figure(&self, metric: Metric) -> f64;
}

/// Exit code of a run that crossed a `--fail-if` threshold (and had no integrity
/// violation or error, which keep their own codes).
pub const EXIT_THRESHOLD: i32 = 3;

/// What a threshold looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// A client latency quantile or statistic, in µs.
    Latency(LatencyStat),
    /// Client connect (TCP + upgrade) p99, µs.
    ConnectP99,
    /// Messages (or transfers) received per second in the measured window.
    Throughput,
    /// Errors of every kind.
    Errors,
    /// Messages lost.
    Lost,
    /// Connection attempts that failed.
    Failed,
}

/// The client latency figures a threshold can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyStat {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// Largest.
    Max,
    /// Mean.
    Mean,
}

/// The comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Above,
    /// `>=`
    AtLeast,
    /// `<`
    Below,
    /// `<=`
    AtMost,
}

/// One `--fail-if` threshold: the run fails when `metric op value` holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// What is compared.
    pub metric: Metric,
    /// How.
    pub op: Op,
    /// Against what (µs for durations).
    pub value: f64,
    /// The text as given, for messages.
    pub text: String,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Threshold {
    /// Parses `METRIC<OP>VALUE` (OP one of `>`, `>=`, `<`, `<=`).
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = compact
            .find(['<', '>'])
            .ok_or_else(|| format!("`{text}`: expected METRIC>VALUE or METRIC<VALUE"))?;
        let (name, rest) = compact.split_at(at);
        let (op, value) = match rest {
            r if r.starts_with(">=") => (Op::AtLeast, &r[2..]),
            r if r.starts_with("<=") => (Op::AtMost, &r[2..]),
            r if r.starts_with('>') => (Op::Above, &r[1..]),
            r => (Op::Below, &r[1..]),
        };
        let metric = metric_named(name).ok_or_else(|| {
            format!(
                "`{text}`: unknown metric `{name}` (p50 p90 p99 p999 max mean connect_p99 \
                 throughput errors lost failed)"
            )
        })?;
        let value = match metric {
            Metric::Latency(_) | Metric::ConnectP99 => parse_micros(value),
            _ => value.parse::<f64>().ok().filter(|v| v.is_finite()),
        }
        .ok_or_else(|| format!("`{text}`: bad value `{value}`"))?;
        Ok(Threshold {
            metric,
            op,
            value,
            text: compact,
        })
    }

    /// The metric's value in `figures`.
    pub fn observed(&self, figures: &impl Figures) -> f64 {
        figures.figure(self.metric)
    }

    /// Whether `observed` crosses the threshold.
    pub fn crossed_by(&self, observed: f64) -> bool {
        match self.op {
            Op::Above => observed > self.value,
            Op::AtLeast => observed >= self.value,
            Op::Below => observed < self.value,
            Op::AtMost => observed <= self.value,
        }
    }
}

/// The thresholds `figures` crosses, each with the observed value.
pub fn crossed<'a>(
    thresholds: &'a [Threshold],
    figures: &impl Figures,
) -> Vec<(&'a Threshold, f64)> {
    thresholds
        .iter()
        .map(|t| (t, t.observed(figures)))
        .filter(|(t, v)| t.crossed_by(*v))
        .collect()
}

/// A metric by its command-line name.
fn metric_named(name: &str) -> Option<Metric> {
    use LatencyStat::*;
    Some(match name.to_ascii_lowercase().as_str() {
        "p50" => Metric::Latency(P50),
        "p90" => Metric::Latency(P90),
        "p99" => Metric::Latency(P99),
        "p999" | "p99.9" => Metric::Latency(P999),
        "max" => Metric::Latency(Max),
        "mean" => Metric::Latency(Mean),
        "connect_p99" => Metric::ConnectP99,
        "throughput" => Metric::Throughput,
        "errors" => Metric::Errors,
        "lost" => Metric::Lost,
        "failed" => Metric::Failed,
        _ => return None,
    })
}

/// `250`, `250us`, `2ms`, `1.5s` as µs (a bare number is µs, the report's unit).
fn parse_micros(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() || c == 'µ')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
    let scale = match unit {
        "" | "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return None,
    };
    Some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_with_units_and_operators() {
        let t = Threshold::parse("p99>2ms").unwrap();
        assert_eq!(t.metric, Metric::Latency(LatencyStat::P99));
        assert_eq!((t.op, t.value), (Op::Above, 2000.0));
        let t = Threshold::parse("p99.9 >= 1.5s").unwrap();
        assert_eq!((t.op, t.value), (Op::AtLeast, 1_500_000.0));
        assert_eq!(Threshold::parse("max<=300").unwrap().value, 300.0);
        assert_eq!(Threshold::parse("p50>250us").unwrap().value, 250.0);
        let t = Threshold::parse("throughput<5000").unwrap();
        assert_eq!(
            (t.metric, t.op, t.value),
            (Metric::Throughput, Op::Below, 5000.0)
        );
        assert_eq!(Threshold::parse("errors>0").unwrap().metric, Metric::Errors);
    }

    #[test]
    fn bad_thresholds_are_refused() {
        for bad in [
            "p99",
            "p98>2ms",
            "p99>2 parsecs",
            "p99>-1ms",
            "throughput<fast",
            ">3",
        ] {
            assert!(Threshold::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn comparisons_are_strict_or_not_as_written() {
        let above = Threshold::parse("p99>100").unwrap();
        assert!(above.crossed_by(101.0) && !above.crossed_by(100.0));
        let at_least = Threshold::parse("p99>=100").unwrap();
        assert!(at_least.crossed_by(100.0));
        let below = Threshold::parse("throughput<10").unwrap();
        assert!(below.crossed_by(9.9) && !below.crossed_by(10.0));
    }
}
