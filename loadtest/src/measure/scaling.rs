//! `measure scaling-row`, `measure handoff-row` and `measure scaling-table`: the figures
//! of `scripts/shard-scaling.sh`.
//!
//! * A throughput row (one line of `throughput.tsv`) comes from a run's window edges
//!   (see [`super::edges`]), its load report and the relay's `/stats` at the end:
//!   round trips/s as the load measured them, forwarded messages/s as the relay counted
//!   them (`messages_out` over the window), relay / load / other CPU and steal in cores,
//!   forwarded messages per relay CPU-second, and the handoff counters and histogram.
//! * A handoff row (one line of `handoff.tsv`) comes from an idle run's `/stats` once
//!   every connection was up, its load report (client connect latency, ramp) and the
//!   relay's CPU ticks before the run and at that moment (CPU µs per accepted
//!   connection).
//! * The table is three markdown tables: throughput rows, each `--shards 2` row's
//!   ratios against `1` and `1-own` of the same case, and the handoff rows.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::cli::{HandoffRowArgs, ScalingRowArgs, ScalingTableArgs};
use crate::measure::edges::{self, thousands, thousands_int, Edge, Interval};
use crate::measure::verdict;
use crate::sys;

/// Smallest relay CPU a per-CPU-second figure divides by (no division by zero).
const MIN_CPU_S: f64 = 1e-9;
/// What a table cell shows when there is no figure.
const NONE: &str = "–";

/// One line of `throughput.tsv`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThroughputRow {
    /// `pair` or `server-id`.
    pub style: String,
    /// Connections of the run.
    pub connections: u64,
    /// `1`, `1-own` or `2`.
    pub placement: String,
    /// Round trips per second, as the load generator measured them.
    pub round_trips_per_s: f64,
    /// Messages per second the relay forwarded over the window.
    pub forwarded_per_s: f64,
    /// The relay's CPU, cores.
    pub relay_cores: f64,
    /// Forwarded messages per relay CPU-second.
    pub per_relay_cpu_s: f64,
    /// The load generator's CPU, cores.
    pub load_cores: f64,
    /// Everyone else's CPU, cores.
    pub other_cores: f64,
    /// The hypervisor's steal, cores.
    pub steal_cores: f64,
    /// `handoffs` at the end of the run.
    pub handoffs: u64,
    /// `adopted` at the end of the run.
    pub adopted: u64,
    /// Samples in the `handoff` histogram.
    pub handoff_count: u64,
    /// Its median, µs.
    pub handoff_p50: u64,
    /// Its 99th percentile, µs.
    pub handoff_p99: u64,
}

impl fmt::Display for ThroughputRow {
    /// Tab-separated, floats to 3 places.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\t{}\t{}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{}\t{}\t{}\t{}\t{}",
            self.style,
            self.connections,
            self.placement,
            self.round_trips_per_s,
            self.forwarded_per_s,
            self.relay_cores,
            self.per_relay_cpu_s,
            self.load_cores,
            self.other_cores,
            self.steal_cores,
            self.handoffs,
            self.adopted,
            self.handoff_count,
            self.handoff_p50,
            self.handoff_p99
        )
    }
}

impl ThroughputRow {
    /// Parses a line [`fmt::Display`] wrote.
    pub fn parse(line: &str) -> Result<ThroughputRow, String> {
        let f = Fields::split(line, 15)?;
        Ok(ThroughputRow {
            style: f.text(0),
            connections: f.int(1)?,
            placement: f.text(2),
            round_trips_per_s: f.float(3)?,
            forwarded_per_s: f.float(4)?,
            relay_cores: f.float(5)?,
            per_relay_cpu_s: f.float(6)?,
            load_cores: f.float(7)?,
            other_cores: f.float(8)?,
            steal_cores: f.float(9)?,
            handoffs: f.int(10)?,
            adopted: f.int(11)?,
            handoff_count: f.int(12)?,
            handoff_p50: f.int(13)?,
            handoff_p99: f.int(14)?,
        })
    }
}

/// One line of `handoff.tsv`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HandoffRow {
    /// `pair` or `server-id`.
    pub style: String,
    /// Connect rate, per second (0: unpaced).
    pub rate: u64,
    /// `--shards`.
    pub shards: u64,
    /// Connections the relay accepted.
    pub accepted: u64,
    /// Connections handed to another shard.
    pub handoffs: u64,
    /// Connections a shard adopted.
    pub adopted: u64,
    /// The `handoff` histogram: count, then p50, p90, p99, p99.9 and max, µs.
    pub handoff: [u64; 6],
    /// The `handshake` histogram's p50 and p99, µs.
    pub handshake: [u64; 2],
    /// The client's connect latency p50 and p99, µs.
    pub connect: [u64; 2],
    /// Seconds the ramp took (as the report prints it, 2 places).
    pub ramp_s: f64,
    /// The relay's CPU per accepted connection, µs.
    pub cpu_us_per_connection: f64,
}

impl fmt::Display for HandoffRow {
    /// Tab-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [n, p50, p90, p99, p999, max] = self.handoff;
        write!(
            f,
            "{}\t{}\t{}\t{}\t{}\t{}\t{n}\t{p50}\t{p90}\t{p99}\t{p999}\t{max}\t{}\t{}\t{}\t{}\t{:.2}\t{:.1}",
            self.style,
            self.rate,
            self.shards,
            self.accepted,
            self.handoffs,
            self.adopted,
            self.handshake[0],
            self.handshake[1],
            self.connect[0],
            self.connect[1],
            self.ramp_s,
            self.cpu_us_per_connection
        )
    }
}

impl HandoffRow {
    /// Parses a line [`fmt::Display`] wrote.
    pub fn parse(line: &str) -> Result<HandoffRow, String> {
        let f = Fields::split(line, 18)?;
        Ok(HandoffRow {
            style: f.text(0),
            rate: f.int(1)?,
            shards: f.int(2)?,
            accepted: f.int(3)?,
            handoffs: f.int(4)?,
            adopted: f.int(5)?,
            handoff: [
                f.int(6)?,
                f.int(7)?,
                f.int(8)?,
                f.int(9)?,
                f.int(10)?,
                f.int(11)?,
            ],
            handshake: [f.int(12)?, f.int(13)?],
            connect: [f.int(14)?, f.int(15)?],
            ramp_s: f.float(16)?,
            cpu_us_per_connection: f.float(17)?,
        })
    }
}

/// A TSV line's fields, with typed accessors whose errors name the field.
struct Fields<'a>(Vec<&'a str>);

impl<'a> Fields<'a> {
    /// Splits `line` on tabs; exactly `n` fields.
    fn split(line: &'a str, n: usize) -> Result<Fields<'a>, String> {
        let v: Vec<&str> = line.trim_end_matches(['\n', '\r']).split('\t').collect();
        if v.len() == n {
            Ok(Fields(v))
        } else {
            Err(format!(
                "expected {n} tab-separated fields, found {}: `{line}`",
                v.len()
            ))
        }
    }

    /// Field `i` as text.
    fn text(&self, i: usize) -> String {
        self.0[i].to_owned()
    }

    /// Field `i` as a whole number.
    fn int(&self, i: usize) -> Result<u64, String> {
        self.0[i]
            .parse()
            .map_err(|_| format!("field {} `{}` is not a whole number", i + 1, self.0[i]))
    }

    /// Field `i` as a number.
    fn float(&self, i: usize) -> Result<f64, String> {
        self.0[i]
            .parse()
            .map_err(|_| format!("field {} `{}` is not a number", i + 1, self.0[i]))
    }
}

/// `BASE` followed by `suffix`.
fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// The throughput row of run `BASE` (see the module docs for the files read).
pub fn throughput_row(args: &ScalingRowArgs, hz: f64) -> Result<ThroughputRow, String> {
    let before_path = with_suffix(&args.base, ".before");
    let after_path = with_suffix(&args.base, ".after");
    let window = Interval::between(&Edge::read(&before_path)?, &Edge::read(&after_path)?, hz);
    if window.secs <= 0.0 {
        return Err(format!("{}: the window has no length", args.base.display()));
    }
    let start = edges::totals(&edges::stats_path(&before_path))?;
    let stop = edges::totals(&edges::stats_path(&after_path))?;
    let end = edges::totals(&with_suffix(&args.base, ".end.json"))?;
    let report_path = with_suffix(&args.base, ".json");
    let report = verdict::load_path(&report_path)?;
    let forwarded = stop.messages_out.saturating_sub(start.messages_out) as f64;
    let h = &end.histograms.handoff;
    Ok(ThroughputRow {
        style: args.style.clone(),
        connections: args.connections,
        placement: args.placement.clone(),
        round_trips_per_s: report.throughput.messages_per_s,
        forwarded_per_s: forwarded / window.secs,
        relay_cores: window.relay_s / window.secs,
        per_relay_cpu_s: forwarded / window.relay_s.max(MIN_CPU_S),
        load_cores: window.load_s / window.secs,
        other_cores: window.other_s / window.secs,
        steal_cores: window.steal_s / window.secs,
        handoffs: end.handoffs,
        adopted: end.adopted,
        handoff_count: h.count,
        handoff_p50: h.p50,
        handoff_p99: h.p99,
    })
}

/// The handoff row of an idle run.
pub fn handoff_row(args: &HandoffRowArgs, hz: f64) -> Result<HandoffRow, String> {
    let t = edges::totals(&args.stats)?;
    let report = verdict::load_path(&args.report)?;
    let [start, up] = [args.cpu_ticks[0], args.cpu_ticks[1]];
    // Whole microseconds, as the script's shell arithmetic computed them.
    let cpu_us = (up.saturating_sub(start) as f64 * 1e6 / hz).floor();
    let (h, hs) = (&t.histograms.handoff, &t.histograms.handshake);
    let c = &report.connections;
    Ok(HandoffRow {
        style: args.style.clone(),
        rate: args.rate,
        shards: args.shards,
        accepted: t.accepted,
        handoffs: t.handoffs,
        adopted: t.adopted,
        handoff: [h.count, h.p50, h.p90, h.p99, h.p999, h.max],
        handshake: [hs.p50, hs.p99],
        connect: [c.connect_us.p50, c.connect_us.p99],
        ramp_s: c.ramp_s,
        cpu_us_per_connection: cpu_us / t.accepted.max(1) as f64,
    })
}

/// The throughput table's header.
const THROUGHPUT_HEAD: [&str; 12] = [
    "style",
    "connections",
    "shards",
    "round trips/s (load)",
    "forwarded/s (relay)",
    "relay CPU",
    "forwarded / relay CPU-s",
    "load CPU",
    "other CPU",
    "steal",
    "handoffs / adopted",
    "handoff p50 / p99 µs",
];

/// `| a | b | … |`.
fn md_row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

/// The throughput rows as a markdown table.
fn throughput_table(out: &mut String, rows: &[ThroughputRow]) {
    md_row(out, &THROUGHPUT_HEAD.map(str::to_owned));
    let _ = writeln!(out, "|{}", "---|".repeat(THROUGHPUT_HEAD.len()));
    for r in rows {
        let hist = if r.handoff_count > 0 {
            format!("{} / {}", r.handoff_p50, r.handoff_p99)
        } else {
            NONE.to_owned()
        };
        md_row(
            out,
            &[
                r.style.clone(),
                thousands_int(r.connections),
                r.placement.clone(),
                thousands(r.round_trips_per_s),
                thousands(r.forwarded_per_s),
                format!("{:.2}", r.relay_cores),
                thousands(r.per_relay_cpu_s),
                format!("{:.2}", r.load_cores),
                format!("{:.2}", r.other_cores),
                format!("{:.2}", r.steal_cores),
                format!("{} / {}", r.handoffs, r.adopted),
                hist,
            ],
        );
    }
}

/// Each case's latest row per placement, in the order the cases first appeared.
fn by_case(rows: &[ThroughputRow]) -> Vec<&ThroughputRow> {
    let mut out: Vec<&ThroughputRow> = Vec::new();
    for r in rows {
        let same = |o: &&ThroughputRow| {
            o.style == r.style && o.connections == r.connections && o.placement == r.placement
        };
        match out.iter().position(same) {
            Some(i) => out[i] = r,
            None => out.push(r),
        }
    }
    out
}

/// `a ÷ b` as `1.23×`, or [`NONE`] without a non-zero `b`.
fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b != 0.0 => format!("{:.2}×", a / b),
        _ => NONE.to_owned(),
    }
}

/// Each `--shards 2` case against `1` and `1-own`: forwarded/s and per relay CPU-s.
fn ratio_table(out: &mut String, rows: &[ThroughputRow]) {
    let _ = writeln!(
        out,
        "| style | connections | 2 ÷ 1 forwarded/s | 2 ÷ 1-own forwarded/s | 2 ÷ 1 per relay CPU-s | 2 ÷ 1-own per relay CPU-s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let cases = by_case(rows);
    let find = |r: &ThroughputRow, placement: &str| {
        cases
            .iter()
            .find(|o| {
                o.style == r.style && o.connections == r.connections && o.placement == placement
            })
            .copied()
    };
    for r in cases.iter().filter(|r| r.placement == "2") {
        let (one, own) = (find(r, "1"), find(r, "1-own"));
        md_row(
            out,
            &[
                r.style.clone(),
                thousands_int(r.connections),
                ratio(r.forwarded_per_s, one.map(|o| o.forwarded_per_s)),
                ratio(r.forwarded_per_s, own.map(|o| o.forwarded_per_s)),
                ratio(r.per_relay_cpu_s, one.map(|o| o.per_relay_cpu_s)),
                ratio(r.per_relay_cpu_s, own.map(|o| o.per_relay_cpu_s)),
            ],
        );
    }
}

/// The handoff rows as a markdown table.
fn handoff_table(out: &mut String, rows: &[HandoffRow]) {
    let _ = writeln!(
        out,
        "| style (idle) | connect rate | shards | accepted | handoffs / adopted | handoff p50 / p90 / p99 / p99.9 / max µs | relay handshake p50 / p99 µs | client connect p50 / p99 µs | ramp s | relay CPU µs / connection |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let pace = if r.rate == 0 {
            "unpaced".to_owned()
        } else {
            format!("{}/s", thousands_int(r.rate))
        };
        let [n, p50, p90, p99, p999, max] = r.handoff;
        let hist = if n > 0 {
            format!("{p50} / {p90} / {p99} / {p999} / {max}")
        } else {
            NONE.to_owned()
        };
        md_row(
            out,
            &[
                r.style.clone(),
                pace,
                r.shards.to_string(),
                thousands_int(r.accepted),
                format!(
                    "{} / {}",
                    thousands_int(r.handoffs),
                    thousands_int(r.adopted)
                ),
                hist,
                format!("{} / {}", r.handshake[0], r.handshake[1]),
                format!("{} / {}", r.connect[0], r.connect[1]),
                format!("{:.2}", r.ramp_s),
                format!("{:.0}", r.cpu_us_per_connection),
            ],
        );
    }
}

/// The three tables, a blank line between them.
pub fn render(throughput: &[ThroughputRow], handoffs: &[HandoffRow]) -> String {
    let mut out = String::new();
    throughput_table(&mut out, throughput);
    out.push('\n');
    ratio_table(&mut out, throughput);
    out.push('\n');
    handoff_table(&mut out, handoffs);
    out
}

/// Every non-empty line of a TSV file, parsed.
fn read_rows<T>(path: &Path, parse: fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    edges::read_text(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

/// `measure scaling-row`.
pub fn scaling_row_command(args: &ScalingRowArgs) -> Result<i32, String> {
    println!(
        "{}",
        throughput_row(args, sys::clock_ticks_per_sec() as f64)?
    );
    Ok(0)
}

/// `measure handoff-row`.
pub fn handoff_row_command(args: &HandoffRowArgs) -> Result<i32, String> {
    println!("{}", handoff_row(args, sys::clock_ticks_per_sec() as f64)?);
    Ok(0)
}

/// `measure scaling-table`.
pub fn scaling_table_command(args: &ScalingTableArgs) -> Result<i32, String> {
    let throughput = read_rows(&args.throughput, ThroughputRow::parse)?;
    let handoffs = read_rows(&args.handoffs, HandoffRow::parse)?;
    print!("{}", render(&throughput, &handoffs));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as a run of the script wrote them (2026-12-05, debug build, small sizes).
    const THROUGHPUT_TSV: &str = "\
pair\t100\t1\t471000.000\t971705.152\t0.546\t1778467.797\t0.565\t0.880\t0.000\t0\t0\t0\t0\t0
pair\t100\t2\t500112.000\t943614.095\t0.552\t1710387.500\t0.534\t0.897\t0.000\t51\t51\t51\t553\t1141
server-id\t100\t1\t295664.000\t588200.070\t0.516\t1139428.571\t0.590\t0.885\t0.009\t0\t0\t0\t0\t0
server-id\t100\t2\t187461.333\t519806.886\t0.495\t1050938.462\t0.533\t0.970\t0.000\t39\t39\t39\t39\t4163
";
    /// Handoff rows of the same run.
    const HANDOFF_TSV: &str = "\
pair\t0\t1\t202\t0\t0\t0\t0\t0\t0\t0\t0\t21\t418\t2831\t5971967\t5.98\t0.0
pair\t500\t2\t202\t58\t58\t58\t49119\t396287\t524031\t524031\t524031\t123\t492287\t186\t492543\t0.81\t49.5
";

    fn rows<T>(text: &str, parse: fn(&str) -> Result<T, String>) -> Vec<T> {
        text.lines().map(|l| parse(l).unwrap()).collect()
    }

    #[test]
    fn rows_survive_a_round_trip_through_their_tsv_lines() {
        for line in THROUGHPUT_TSV.lines() {
            assert_eq!(ThroughputRow::parse(line).unwrap().to_string(), line);
        }
        for line in HANDOFF_TSV.lines() {
            assert_eq!(HandoffRow::parse(line).unwrap().to_string(), line);
        }
        assert!(ThroughputRow::parse("pair\t100").is_err());
        assert!(
            HandoffRow::parse(&HANDOFF_TSV.lines().next().unwrap().replace("202", "x")).is_err()
        );
    }

    #[test]
    fn the_table_prints_the_rows_their_ratios_and_the_handoffs() {
        let text = render(
            &rows(THROUGHPUT_TSV, ThroughputRow::parse),
            &rows(HANDOFF_TSV, HandoffRow::parse),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "| pair | 100 | 1 | 471,000 | 971,705 | 0.55 | 1,778,468 | 0.56 | 0.88 | 0.00 | 0 / 0 | – |"
        );
        assert_eq!(
            lines[3],
            "| pair | 100 | 2 | 500,112 | 943,614 | 0.55 | 1,710,388 | 0.53 | 0.90 | 0.00 | 51 / 51 | 553 / 1141 |"
        );
        assert_eq!(lines[6], "");
        // 943,614 ÷ 971,705 and 1,710,388 ÷ 1,778,468; no 1-own run: no ratio.
        assert_eq!(lines[9], "| pair | 100 | 0.97× | – | 0.96× | – |");
        assert_eq!(lines[10], "| server-id | 100 | 0.88× | – | 0.92× | – |");
        assert_eq!(
            lines[14],
            "| pair | unpaced | 1 | 202 | 0 / 0 | – | 21 / 418 | 2831 / 5971967 | 5.98 | 0 |"
        );
        assert_eq!(
            lines[15],
            "| pair | 500/s | 2 | 202 | 58 / 58 | 49119 / 396287 / 524031 / 524031 / 524031 | 123 / 492287 | 186 / 492543 | 0.81 | 50 |"
        );
        assert_eq!(lines.len(), 16);
    }

    #[test]
    fn a_shards_2_case_is_compared_with_its_own_single_shard_runs_only() {
        let mut one = ThroughputRow::parse(THROUGHPUT_TSV.lines().next().unwrap()).unwrap();
        let mut two = one.clone();
        two.placement = "2".into();
        two.forwarded_per_s = one.forwarded_per_s * 1.5;
        let mut own = one.clone();
        own.placement = "1-own".into();
        own.forwarded_per_s = one.forwarded_per_s * 3.0;
        let mut other = two.clone();
        other.connections = 1000;
        one.per_relay_cpu_s = 0.0;
        let mut out = String::new();
        ratio_table(&mut out, &[one, own, two, other]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[2], "| pair | 100 | 1.50× | 0.50× | – | 1.00× |");
        assert_eq!(lines[3], "| pair | 1,000 | – | – | – | – |");
    }
}
