//! A sampling window's two edges as `scripts/lib/bench.sh` `sample` writes them, shared
//! by `measure scaling-row` and `measure syscalls-row`: for an edge `BASE`, the file
//! `BASE` holds one line `WALL RELAY LOAD BUSY STEAL` (the wall clock in seconds, then
//! the relay's and the load generator's utime+stime, the machine's busy time and its
//! steal, in clock ticks) and `BASE.json` the relay's `/stats` body at that moment.
//! (`sample` stays in bash because it runs inside a `perf stat` workload, where a fork
//! of this binary would be counted; it only copies numbers, it computes nothing.)

use std::path::Path;

use shardrelay_stats_model::{Stats, Tallies};

/// One edge's clock and CPU readings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Edge {
    /// Wall clock, seconds (bash's `$EPOCHREALTIME`).
    pub wall_s: f64,
    /// The relay's utime + stime, ticks.
    pub relay_ticks: f64,
    /// The load generator's utime + stime, ticks.
    pub load_ticks: f64,
    /// The machine's busy time (user, nice, system, irq, softirq), ticks.
    pub busy_ticks: f64,
    /// The machine's steal time, ticks.
    pub steal_ticks: f64,
}

impl Edge {
    /// Parses `WALL RELAY LOAD BUSY STEAL`.
    pub fn parse(text: &str) -> Result<Edge, String> {
        let v: Vec<f64> = text
            .split_whitespace()
            .map(|f| f.parse().map_err(|_| format!("`{f}` is not a number")))
            .collect::<Result<_, _>>()?;
        match v[..] {
            [wall_s, relay_ticks, load_ticks, busy_ticks, steal_ticks] => Ok(Edge {
                wall_s,
                relay_ticks,
                load_ticks,
                busy_ticks,
                steal_ticks,
            }),
            _ => Err(format!(
                "expected 5 figures (WALL RELAY LOAD BUSY STEAL), found {}",
                v.len()
            )),
        }
    }

    /// Reads the edge file `base`.
    pub fn read(base: &Path) -> Result<Edge, String> {
        Edge::parse(&read_text(base)?).map_err(|e| format!("{}: {e}", base.display()))
    }
}

/// What happened between two edges, CPU in seconds (ticks ÷ `hz`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Interval {
    /// Wall time between the edges, seconds.
    pub secs: f64,
    /// The relay's CPU, seconds.
    pub relay_s: f64,
    /// The load generator's CPU, seconds.
    pub load_s: f64,
    /// Everyone else's CPU (the machine's busy time less relay and load, at least 0).
    pub other_s: f64,
    /// The hypervisor's steal, seconds.
    pub steal_s: f64,
}

impl Interval {
    /// `after - before`, ticks converted with `hz` (ticks per second).
    pub fn between(before: &Edge, after: &Edge, hz: f64) -> Interval {
        let relay_s = (after.relay_ticks - before.relay_ticks) / hz;
        let load_s = (after.load_ticks - before.load_ticks) / hz;
        let busy_s = (after.busy_ticks - before.busy_ticks) / hz;
        Interval {
            secs: after.wall_s - before.wall_s,
            relay_s,
            load_s,
            other_s: (busy_s - relay_s - load_s).max(0.0),
            steal_s: (after.steal_ticks - before.steal_ticks) / hz,
        }
    }
}

/// The totals of the `/stats` body in `path`, read through the typed model.
pub fn totals(path: &Path) -> Result<Tallies, String> {
    let text = read_text(path)?;
    let stats: Stats =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(stats.totals)
}

/// `BASE` with `.json` appended (the `/stats` body beside an edge file).
pub fn stats_path(base: &Path) -> std::path::PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".json");
    name.into()
}

/// A file's text, the error naming the file.
pub fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `x` with no decimals and `,` between thousands (Python's `f"{x:,.0f}"`).
pub fn thousands(x: f64) -> String {
    let rounded = format!("{:.0}", x.abs());
    let sign = if x < 0.0 && rounded != "0" { "-" } else { "" };
    format!("{sign}{}", group(&rounded))
}

/// An integer with `,` between thousands (Python's `f"{n:,}"`).
pub fn thousands_int(n: u64) -> String {
    group(&n.to_string())
}

/// Digits grouped by three from the right.
fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_is_five_figures_and_an_interval_their_differences() {
        let before = Edge::parse("1000.5 200 100 5000 10\n").unwrap();
        let after = Edge::parse("1002.5 300 150 5400 14").unwrap();
        let i = Interval::between(&before, &after, 100.0);
        assert!((i.secs - 2.0).abs() < 1e-9);
        assert!((i.relay_s - 1.0).abs() < 1e-9);
        assert!((i.load_s - 0.5).abs() < 1e-9);
        // busy 4 s, less relay 1 s and load 0.5 s.
        assert!((i.other_s - 2.5).abs() < 1e-9);
        assert!((i.steal_s - 0.04).abs() < 1e-9);
        assert!(Edge::parse("1 2 3 4").is_err());
        assert!(Edge::parse("1 2 x 4 5").is_err());
    }

    #[test]
    fn other_cpu_is_never_negative() {
        let before = Edge::parse("0 0 0 0 0").unwrap();
        let after = Edge::parse("1 100 100 150 0").unwrap();
        assert_eq!(Interval::between(&before, &after, 100.0).other_s, 0.0);
    }

    #[test]
    fn thousands_are_grouped_as_python_groups_them() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(12.0), "12");
        assert_eq!(thousands(0.2), "0");
        assert_eq!(thousands_int(10000), "10,000");
        assert_eq!(thousands_int(100), "100");
    }
}
