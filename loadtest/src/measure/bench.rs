//! `measure cpu-during` and `measure bench-table`: the CPU accounting and the table of
//! `scripts/bench-compare.sh`. `cpu-during` runs one load command and records the
//! relay's CPU over it, the load's own, and what the rest of the machine used;
//! `bench-table` prints one row per run (shardrelay, then the baseline) and the
//! shardrelay ÷ baseline ratios, and fails when any load run did not exit 0.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::cli::{BenchTableArgs, CpuDuringArgs};
use crate::measure::verdict;
use crate::procfs;
use crate::sys;

/// What `cpu-during` records beside a run's report (`TAG.cpu.json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// The relay's user + system CPU over the run, seconds.
    pub relay_s: f64,
    /// The load command's own CPU, seconds.
    pub load_s: f64,
    /// CPU the rest of the machine used meanwhile (busy time less relay and load),
    /// seconds: other work on the box skews every figure, so the table shows it.
    pub other_s: f64,
    /// The load command's exit code (-1 when a signal ended it).
    pub exit: i32,
}

/// `measure cpu-during`: runs the command (stdio inherited), writes [`CpuUse`] and
/// exits with the command's code.
pub fn cpu_during(args: &CpuDuringArgs) -> Result<i32, String> {
    let hz = sys::clock_ticks_per_sec() as f64;
    let relay_ticks = || procfs::read_cpu_ticks(args.pid).map_err(|e| e.to_string());
    let busy_ticks = || {
        procfs::read_machine_cpu()
            .map(|m| m.busy)
            .map_err(|e| e.to_string())
    };
    let children = || sys::children_cpu_seconds().map_err(|e| e.to_string());
    let (relay0, busy0, load0) = (relay_ticks()?, busy_ticks()?, children()?);
    let (program, rest) = args.command.split_first().ok_or("no command given")?;
    let status = Command::new(program)
        .args(rest)
        .status()
        .map_err(|e| format!("{program}: {e}"))?;
    let (relay1, busy1, load1) = (relay_ticks()?, busy_ticks()?, children()?);
    let relay_s = relay1.saturating_sub(relay0) as f64 / hz;
    let load_s = load1 - load0;
    let used = CpuUse {
        relay_s,
        load_s,
        other_s: busy1.saturating_sub(busy0) as f64 / hz - relay_s - load_s,
        exit: status.code().unwrap_or(-1),
    };
    let text = serde_json::to_string(&used).map_err(|e| e.to_string())?;
    std::fs::write(&args.json, text).map_err(|e| format!("{}: {e}", args.json.display()))?;
    Ok(used.exit.clamp(0, 255))
}

/// One run of the table.
#[derive(Debug)]
struct Row {
    /// `scenario/pace`.
    case: String,
    /// `shardrelay` or `baseline`.
    relay: String,
    /// Round trips per second.
    per_s: f64,
    /// Client p50, p99, p99.9 (µs).
    latency: [u64; 3],
    /// CPU accounting.
    cpu: CpuUse,
    /// Round trips received per relay CPU-second.
    per_cpu_s: f64,
}

/// Reads the run `TAG` (`scenario.pace.relay`) from `dir`.
fn row(dir: &Path, tag: &str) -> Result<Row, String> {
    let mut parts = tag.rsplitn(3, '.');
    let (Some(relay), Some(pace), Some(scenario)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("`{tag}`: expected SCENARIO.PACE.RELAY"));
    };
    let report = verdict::load(dir, tag)?;
    let cpu_path = dir.join(format!("{tag}.cpu.json"));
    let cpu: CpuUse = serde_json::from_str(
        &std::fs::read_to_string(&cpu_path).map_err(|e| format!("{}: {e}", cpu_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", cpu_path.display()))?;
    let l = &report.latency_us;
    Ok(Row {
        case: format!("{scenario}/{pace}"),
        relay: relay.to_owned(),
        per_s: report.throughput.messages_per_s,
        latency: [l.p50, l.p99, l.p999],
        per_cpu_s: if cpu.relay_s > 0.0 {
            report.throughput.received as f64 / cpu.relay_s
        } else {
            0.0
        },
        cpu,
    })
}

/// `a ÷ b` as `1.23x`, `-` when `b` is 0.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// One table line.
fn line(out: &mut String, f: [&str; 10]) {
    let _ = writeln!(
        out,
        "{:<16} {:<11} {:>10} {:>7} {:>7} {:>8} {:>9} {:>10} {:>5} {:>8}",
        f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]
    );
}

/// The table: a header, a line per run, and after each baseline run the ratio of the
/// shardrelay run of the same case to it.
fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    line(
        &mut out,
        [
            "scenario",
            "relay",
            "msgs/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "relay CPU",
            "msgs/CPU-s",
            "exit",
            "other CPU",
        ],
    );
    for (i, r) in rows.iter().enumerate() {
        let [p50, p99, p999] = r.latency.map(|v| v.to_string());
        line(
            &mut out,
            [
                &r.case,
                &r.relay,
                &format!("{:.0}", r.per_s),
                &p50,
                &p99,
                &p999,
                &format!("{:.2} s", r.cpu.relay_s),
                &format!("{:.0}", r.per_cpu_s),
                &r.cpu.exit.to_string(),
                &format!("{:.2} s", r.cpu.other_s),
            ],
        );
        if r.relay != "baseline" {
            continue;
        }
        let Some(s) = rows[..i]
            .iter()
            .rev()
            .find(|o| o.case == r.case && o.relay == "shardrelay")
        else {
            continue;
        };
        let lat = |k: usize| ratio(s.latency[k] as f64, r.latency[k] as f64);
        line(
            &mut out,
            [
                &r.case,
                "ratio s/b",
                &ratio(s.per_s, r.per_s),
                &lat(0),
                &lat(1),
                &lat(2),
                &ratio(s.cpu.relay_s, r.cpu.relay_s),
                &ratio(s.per_cpu_s, r.per_cpu_s),
                "",
                "",
            ],
        );
    }
    out
}

/// `measure bench-table`: prints the table; exit 1 when a load run did not exit 0.
pub fn bench_table(args: &BenchTableArgs) -> Result<i32, String> {
    let rows = args
        .tags
        .iter()
        .map(|tag| row(&args.dir, tag))
        .collect::<Result<Vec<_>, _>>()?;
    print!("{}", render(&rows));
    Ok(i32::from(rows.iter().any(|r| r.cpu.exit != 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(case: &str, relay: &str, per_s: f64, p99: u64, relay_s: f64, exit: i32) -> Row {
        Row {
            case: case.into(),
            relay: relay.into(),
            per_s,
            latency: [p99 / 2, p99, p99 * 2],
            cpu: CpuUse {
                relay_s,
                load_s: 1.0,
                other_s: 0.25,
                exit,
            },
            per_cpu_s: per_s * 10.0 / relay_s,
        }
    }

    #[test]
    fn the_table_has_a_ratio_line_after_each_baseline() {
        let rows = [
            run("pair/peak", "shardrelay", 40_000.0, 200, 5.0, 0),
            run("pair/peak", "baseline", 20_000.0, 400, 10.0, 0),
        ];
        let text = render(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("scenario         relay"), "{text}");
        assert!(
            lines[1].contains("40000") && lines[1].contains("5.00 s"),
            "{text}"
        );
        let ratios: Vec<&str> = lines[3].split_whitespace().collect();
        // case, "ratio", "s/b", msgs/s, p50, p99, p99.9, CPU, msgs/CPU-s
        assert_eq!(
            ratios[3..],
            ["2.00x", "0.50x", "0.50x", "0.50x", "0.50x", "4.00x"],
            "{text}"
        );
    }

    #[test]
    fn a_zero_divisor_shows_a_dash() {
        assert_eq!(ratio(1.0, 0.0), "-");
        assert_eq!(ratio(3.0, 2.0), "1.50x");
    }
}
