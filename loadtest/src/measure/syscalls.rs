//! `measure syscalls-row` and `measure syscalls-table`: the figures of
//! `scripts/syscalls-per-message.sh`.
//!
//! A row (one line of `results.tsv`) divides the counts `perf stat -x,` wrote for the
//! relay's syscall and io_uring tracepoints over a window by the messages the relay
//! wrote in it (`/stats` totals `messages_out` at the window's edges, see
//! [`super::edges`]): syscalls of each kind per forwarded message, how much the calls
//! batched (frames per `sendmsg` that wrote, messages per read that returned data), the
//! EAGAIN reads, io_uring SQEs and empty polls per message, and the CPU of the relay,
//! the load generator, everyone else and the hypervisor's steal over the window (% of a
//! core). The table prints the rows as markdown.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;

use crate::cli::{SyscallsRowArgs, SyscallsTableArgs};
use crate::measure::edges::{self, thousands, thousands_int, Edge, Interval};
use crate::sys;

/// How far the forwarded rate may be from twice the offered round-trip rate before the
/// row warns that the load or the relay was saturated.
const RATE_TOLERANCE: f64 = 0.05;
/// Per-message figures below this print as `0` (they would round to `0.000`).
const SHOWN_FROM: f64 = 0.0005;

/// One line of `results.tsv`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyscallsRow {
    /// `pair` or `server-id`.
    pub style: String,
    /// `io_uring` or `epoll`, as the relay reported it.
    pub driver: String,
    /// Offered round trips per second.
    pub rate: u64,
    /// Messages the relay wrote in the window.
    pub messages_out: u64,
    /// Messages the relay read in the window.
    pub messages_in: u64,
    /// The window, seconds.
    pub secs: f64,
    /// Per forwarded message: all syscalls, sendmsg, recv, io_uring_enter, epoll_wait,
    /// poll, other; then frames per sendmsg that wrote, messages per read that returned
    /// data; then EAGAIN reads, io_uring SQEs and polls that found nothing, per message;
    /// then relay, load, other CPU and steal, % of one core.
    pub figures: [f64; 16],
}

impl fmt::Display for SyscallsRow {
    /// Tab-separated, floats to 4 places.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\t{}\t{}\t{}\t{}\t{:.4}",
            self.style, self.driver, self.rate, self.messages_out, self.messages_in, self.secs
        )?;
        for x in self.figures {
            write!(f, "\t{x:.4}")?;
        }
        Ok(())
    }
}

impl SyscallsRow {
    /// Parses a line [`fmt::Display`] wrote.
    pub fn parse(line: &str) -> Result<SyscallsRow, String> {
        let v: Vec<&str> = line.trim_end_matches(['\n', '\r']).split('\t').collect();
        if v.len() != 22 {
            return Err(format!(
                "expected 22 tab-separated fields, found {}: `{line}`",
                v.len()
            ));
        }
        let int = |i: usize| {
            v[i].parse::<u64>()
                .map_err(|_| format!("field {} `{}` is not a whole number", i + 1, v[i]))
        };
        let float = |i: usize| {
            v[i].parse::<f64>()
                .map_err(|_| format!("field {} `{}` is not a number", i + 1, v[i]))
        };
        let mut figures = [0.0; 16];
        for (i, x) in figures.iter_mut().enumerate() {
            *x = float(6 + i)?;
        }
        Ok(SyscallsRow {
            style: v[0].to_owned(),
            driver: v[1].to_owned(),
            rate: int(2)?,
            messages_out: int(3)?,
            messages_in: int(4)?,
            secs: float(5)?,
            figures,
        })
    }
}

/// Counts from `perf stat -x,` output, keyed by the event's name after its `:`
/// (`raw_syscalls:sys_enter` → `sys_enter`). `events` are the events counted, in the
/// order perf was given them; perf prints one line per event in that order.
pub fn parse_perf_csv(text: &str, events: &[String]) -> Result<BTreeMap<String, f64>, String> {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > 2 && events.iter().any(|e| e == f[2]))
        .collect();
    if lines.len() != events.len() {
        return Err(format!(
            "{} counts for {} events",
            lines.len(),
            events.len()
        ));
    }
    let mut counts = BTreeMap::new();
    for (i, (event, line)) in events.iter().zip(&lines).enumerate() {
        if line[2] != event {
            return Err(format!("line {i} is {}, expected {event}", line[2]));
        }
        let name = event.split_once(':').map_or(event.as_str(), |(_, n)| n);
        counts.insert(name.to_owned(), count(line[0]));
    }
    Ok(counts)
}

/// A perf count; `<not counted>` and `<not supported>` count as 0.
fn count(field: &str) -> f64 {
    let numeric = !field.is_empty() && field.chars().all(|c| c.is_ascii_digit() || c == '.');
    if numeric {
        field.parse().unwrap_or(0.0)
    } else {
        0.0
    }
}

/// What a row is computed from.
pub struct RowInput<'a> {
    /// Counts by event name (see [`parse_perf_csv`]).
    pub counts: &'a BTreeMap<String, f64>,
    /// The window's clocks and CPU.
    pub window: Interval,
    /// Messages the relay wrote in the window.
    pub messages_out: u64,
    /// Messages the relay read in the window.
    pub messages_in: u64,
}

/// The per-message figures of a window.
pub fn figures(input: &RowInput<'_>) -> Result<[f64; 16], String> {
    let c = |name: &str| {
        input
            .counts
            .get(name)
            .copied()
            .ok_or_else(|| format!("event `{name}` was not counted"))
    };
    let n = input.messages_out.max(1) as f64;
    let send = c("sys_enter_sendmsg")? + c("sys_enter_sendto")? + c("sys_enter_writev")?;
    let recv = c("sys_enter_recvfrom")? + c("sys_enter_recvmsg")?;
    let uring = c("sys_enter_io_uring_enter")?;
    let epoll = c("sys_enter_epoll_wait")? + c("sys_enter_epoll_pwait")?;
    let poll = c("sys_enter_poll")? + c("sys_enter_ppoll")?;
    let total = c("sys_enter")?;
    let other = total - send - recv - uring - epoll - poll;
    let (recv_eagain, send_eagain) = (c("sys_exit_recvfrom")?, c("sys_exit_sendmsg")?);
    let w = &input.window;
    let percent = |s: f64| 100.0 * s / w.secs;
    Ok([
        total / n,
        send / n,
        recv / n,
        uring / n,
        epoll / n,
        poll / n,
        other / n,
        input.messages_out as f64 / (send - send_eagain).max(1.0),
        input.messages_in as f64 / (recv - recv_eagain).max(1.0),
        recv_eagain / n,
        c("io_uring_submit_req")? / n,
        c("sys_exit_poll")? / n,
        percent(w.relay_s),
        percent(w.load_s),
        percent(w.other_s),
        percent(w.steal_s),
    ])
}

/// A warning when the relay forwarded more than [`RATE_TOLERANCE`] away from twice the
/// offered round-trip rate.
pub fn saturation_warning(row: &SyscallsRow) -> Option<String> {
    let per_s = row.messages_out as f64 / row.secs;
    let asked = 2 * row.rate;
    ((per_s / asked as f64 - 1.0).abs() > RATE_TOLERANCE).then(|| {
        format!(
            "warning: {}/{}/{}: {per_s:.0} messages/s forwarded, not the {asked} the rate asks for (load or relay saturated?)",
            row.style, row.driver, row.rate
        )
    })
}

/// `measure syscalls-row`.
pub fn syscalls_row_command(args: &SyscallsRowArgs) -> Result<i32, String> {
    let perf = edges::read_text(&args.perf)?;
    let counts =
        parse_perf_csv(&perf, &args.events).map_err(|e| format!("{}: {e}", args.perf.display()))?;
    let hz = sys::clock_ticks_per_sec() as f64;
    let window = Interval::between(&Edge::read(&args.before)?, &Edge::read(&args.after)?, hz);
    if window.secs <= 0.0 {
        return Err(format!(
            "{}: the window has no length",
            args.after.display()
        ));
    }
    let start = edges::totals(&edges::stats_path(&args.before))?;
    let end = edges::totals(&edges::stats_path(&args.after))?;
    let input = RowInput {
        counts: &counts,
        window,
        messages_out: end.messages_out.saturating_sub(start.messages_out),
        messages_in: end.messages_in.saturating_sub(start.messages_in),
    };
    let row = SyscallsRow {
        style: args.style.clone(),
        driver: args.driver.clone(),
        rate: args.rate,
        messages_out: input.messages_out,
        messages_in: input.messages_in,
        secs: window.secs,
        figures: figures(&input)?,
    };
    println!("{row}");
    if let Some(warning) = saturation_warning(&row) {
        eprintln!("{warning}");
    }
    Ok(0)
}

/// The table's header.
const HEAD: [&str; 20] = [
    "style",
    "driver",
    "rate",
    "forwarded/s",
    "all/msg",
    "sendmsg",
    "recv",
    "uring_enter",
    "epoll_wait",
    "poll",
    "other",
    "frames/sendmsg",
    "msgs/read",
    "EAGAIN reads",
    "SQEs/msg",
    "poll: not ready",
    "relay CPU",
    "load CPU",
    "other CPU",
    "steal",
];

/// The rows as a markdown table.
pub fn render(rows: &[SyscallsRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", HEAD.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEAD.len()));
    for r in rows {
        let v = &r.figures;
        let mut cells = vec![
            r.style.clone(),
            r.driver.clone(),
            thousands_int(r.rate),
            thousands(r.messages_out as f64 / r.secs),
        ];
        cells.extend(v[..7].iter().map(|&x| {
            if x >= SHOWN_FROM {
                format!("{x:.3}")
            } else {
                "0".to_owned()
            }
        }));
        cells.extend([
            format!("{:.2}", v[7]),
            format!("{:.2}", v[8]),
            format!("{:.3}", v[9]),
            format!("{:.3}", v[10]),
            format!("{:.3}", v[11]),
        ]);
        cells.extend(v[12..].iter().map(|x| format!("{x:.0} %")));
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// `measure syscalls-table`.
pub fn syscalls_table_command(args: &SyscallsTableArgs) -> Result<i32, String> {
    let rows = read_rows(&args.results)?;
    print!("{}", render(&rows));
    Ok(0)
}

/// Every non-empty line of `results.tsv`, parsed.
fn read_rows(path: &Path) -> Result<Vec<SyscallsRow>, String> {
    edges::read_text(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| SyscallsRow::parse(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events the script counts, in its order.
    const EVENTS: [&str; 20] = [
        "raw_syscalls:sys_enter",
        "syscalls:sys_enter_sendmsg",
        "syscalls:sys_enter_sendto",
        "syscalls:sys_enter_writev",
        "syscalls:sys_enter_write",
        "syscalls:sys_enter_recvfrom",
        "syscalls:sys_enter_recvmsg",
        "syscalls:sys_enter_read",
        "syscalls:sys_enter_io_uring_enter",
        "syscalls:sys_enter_epoll_wait",
        "syscalls:sys_enter_epoll_pwait",
        "syscalls:sys_enter_epoll_ctl",
        "syscalls:sys_enter_poll",
        "syscalls:sys_enter_ppoll",
        "syscalls:sys_enter_futex",
        "syscalls:sys_exit_recvfrom",
        "syscalls:sys_exit_sendmsg",
        "syscalls:sys_exit_poll",
        "io_uring:io_uring_submit_req",
        "io_uring:io_uring_complete",
    ];

    /// A `perf stat -x,` file of an epoll run (20,000 messages out): its comment and
    /// blank lines, one line per event, `<not counted>` for one.
    const PERF_CSV: &str = "\
# started on Sat Dec  5 22:50:01 2026

50000,,raw_syscalls:sys_enter,2003456789,100.00,,
9000,,syscalls:sys_enter_sendmsg,2003456789,100.00,,
0,,syscalls:sys_enter_sendto,2003456789,100.00,,
1000,,syscalls:sys_enter_writev,2003456789,100.00,,
0,,syscalls:sys_enter_write,2003456789,100.00,,
12000,,syscalls:sys_enter_recvfrom,2003456789,100.00,,
0,,syscalls:sys_enter_recvmsg,2003456789,100.00,,
0,,syscalls:sys_enter_read,2003456789,100.00,,
<not counted>,,syscalls:sys_enter_io_uring_enter,0,100.00,,
8000,,syscalls:sys_enter_epoll_wait,2003456789,100.00,,
0,,syscalls:sys_enter_epoll_pwait,2003456789,100.00,,
10,,syscalls:sys_enter_epoll_ctl,2003456789,100.00,,
0,,syscalls:sys_enter_poll,2003456789,100.00,,
0,,syscalls:sys_enter_ppoll,2003456789,100.00,,
5,,syscalls:sys_enter_futex,2003456789,100.00,,
2000,,syscalls:sys_exit_recvfrom,2003456789,100.00,,
0,,syscalls:sys_exit_sendmsg,2003456789,100.00,,
0,,syscalls:sys_exit_poll,2003456789,100.00,,
0,,io_uring:io_uring_submit_req,2003456789,100.00,,
0,,io_uring:io_uring_complete,2003456789,100.00,,
";

    fn events() -> Vec<String> {
        EVENTS.map(str::to_owned).to_vec()
    }

    #[test]
    fn perf_counts_are_read_by_event_in_order() {
        let c = parse_perf_csv(PERF_CSV, &events()).unwrap();
        assert_eq!(c["sys_enter"], 50000.0);
        assert_eq!(c["sys_enter_io_uring_enter"], 0.0);
        assert_eq!(c["sys_exit_recvfrom"], 2000.0);
        // A missing event, or events out of order, is an error naming it.
        let short = PERF_CSV.replace("5,,syscalls:sys_enter_futex,2003456789,100.00,,\n", "");
        assert!(parse_perf_csv(&short, &events())
            .unwrap_err()
            .contains("19 counts for 20"));
        let mut swapped = events();
        swapped.swap(1, 2);
        let e = parse_perf_csv(PERF_CSV, &swapped).unwrap_err();
        assert!(e.contains("expected syscalls:sys_enter_sendto"), "{e}");
    }

    #[test]
    fn counts_are_divided_by_the_messages_the_relay_wrote() {
        let counts = parse_perf_csv(PERF_CSV, &events()).unwrap();
        let window = Interval {
            secs: 2.0,
            relay_s: 1.0,
            load_s: 0.5,
            other_s: 0.2,
            steal_s: 0.0,
        };
        let input = RowInput {
            counts: &counts,
            window,
            messages_out: 20_000,
            messages_in: 20_000,
        };
        let f = figures(&input).unwrap();
        // all 2.5, send (9000 + 1000) 0.5, recv 0.6, uring 0, epoll 0.4, poll 0,
        // other 50000 - 10000 - 12000 - 8000 = 20000 → 1.0.
        assert_eq!(&f[..7], &[2.5, 0.5, 0.6, 0.0, 0.4, 0.0, 1.0]);
        // 20,000 frames over 10,000 sendmsg; 20,000 messages over 10,000 reads with data.
        assert_eq!(f[7], 2.0);
        assert_eq!(f[8], 2.0);
        assert_eq!(f[9], 0.1);
        assert_eq!(&f[12..], &[50.0, 25.0, 10.0, 0.0]);
        let row = SyscallsRow {
            style: "pair".into(),
            driver: "epoll".into(),
            rate: 5000,
            messages_out: 20_000,
            messages_in: 20_000,
            secs: 2.0,
            figures: f,
        };
        let line = row.to_string();
        assert!(
            line.starts_with("pair\tepoll\t5000\t20000\t20000\t2.0000\t2.5000\t"),
            "{line}"
        );
        assert_eq!(SyscallsRow::parse(&line).unwrap(), row);
        // 10,000 messages/s is exactly twice 5,000 round trips/s.
        assert_eq!(saturation_warning(&row), None);
        let slow = SyscallsRow {
            rate: 10_000,
            ..row
        };
        assert!(saturation_warning(&slow)
            .unwrap()
            .contains("10000 messages/s forwarded, not the 20000"));
    }

    #[test]
    fn the_table_rounds_per_message_figures_and_shows_cpu_in_percent() {
        let mut figures = [0.0; 16];
        figures[..7].copy_from_slice(&[2.5, 0.5, 0.0004, 0.0, 0.4, 0.0, 1.0]);
        figures[7..12].copy_from_slice(&[2.0, 1.5, 0.1, 0.0, 0.0]);
        figures[12..].copy_from_slice(&[50.4, 25.0, 10.0, 0.0]);
        let row = SyscallsRow {
            style: "pair".into(),
            driver: "epoll".into(),
            rate: 50_000,
            messages_out: 200_000,
            messages_in: 200_000,
            secs: 2.0,
            figures,
        };
        let text = render(&[row]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("| style | driver | rate | forwarded/s | all/msg |"));
        assert_eq!(lines[1], format!("|{}", "---|".repeat(20)));
        assert_eq!(
            lines[2],
            "| pair | epoll | 50,000 | 100,000 | 2.500 | 0.500 | 0 | 0 | 0.400 | 0 | 1.000 | 2.00 | 1.50 | 0.100 | 0.000 | 0.000 | 50 % | 25 % | 10 % | 0 % |"
        );
    }

    /// `perf stat -x,` as it wrote it for a real run (pair, io_uring, 2,000 round trips/s,
    /// a 2 s window; 2026-12-05, debug build on a busy 2-vCPU box), the window's edges,
    /// and the row the script's former inline Python made of them.
    const REAL_PERF_CSV: &str = "\
# started on Sat Dec  5 22:39:08 2026

23392,,raw_syscalls:sys_enter,151289185,100.00,,
8070,,syscalls:sys_enter_sendmsg,151294378,100.00,,
0,,syscalls:sys_enter_sendto,151294378,100.00,,
0,,syscalls:sys_enter_writev,151294378,100.00,,
5,,syscalls:sys_enter_write,151296867,100.00,,
8075,,syscalls:sys_enter_recvfrom,151303371,100.00,,
0,,syscalls:sys_enter_recvmsg,151310014,100.00,,
0,,syscalls:sys_enter_read,151318370,100.00,,
7232,,syscalls:sys_enter_io_uring_enter,151325229,100.00,,
0,,syscalls:sys_enter_epoll_wait,151331961,100.00,,
0,,syscalls:sys_enter_epoll_pwait,151331961,100.00,,
0,,syscalls:sys_enter_epoll_ctl,151331961,100.00,,
0,,syscalls:sys_enter_poll,151331961,100.00,,
0,,syscalls:sys_enter_ppoll,151331961,100.00,,
0,,syscalls:sys_enter_futex,151331961,100.00,,
2,,syscalls:sys_exit_recvfrom,151331961,100.00,,
0,,syscalls:sys_exit_sendmsg,151331961,100.00,,
0,,syscalls:sys_exit_poll,151331961,100.00,,
8085,,io_uring:io_uring_submit_req,151331961,100.00,,
8085,,io_uring:io_uring_complete,151331961,100.00,,
";
    /// The run's edges (`sample`'s files).
    const REAL_EDGES: [&str; 2] = [
        "1796510348.385455 15 20 2928726 1950",
        "1796510350.393538 31 39 2929126 1950",
    ];
    /// The row the Python printed for it.
    const REAL_ROW: &str = "pair\tio_uring\t2000\t8031\t8031\t2.0081\t2.9127\t1.0049\t1.0055\t0.9005\t0.0000\t0.0000\t0.0019\t0.9952\t0.9948\t0.0002\t1.0067\t0.0000\t7.9678\t9.4618\t181.7654\t0.0000";

    #[test]
    fn a_real_runs_row_matches_what_the_script_printed_before() {
        let counts = parse_perf_csv(REAL_PERF_CSV, &events()).unwrap();
        let [before, after] = REAL_EDGES.map(|e| Edge::parse(e).unwrap());
        let window = Interval::between(&before, &after, 100.0);
        let input = RowInput {
            counts: &counts,
            window,
            messages_out: 8031,
            messages_in: 8031,
        };
        let row = SyscallsRow {
            style: "pair".into(),
            driver: "io_uring".into(),
            rate: 2000,
            messages_out: 8031,
            messages_in: 8031,
            secs: window.secs,
            figures: figures(&input).unwrap(),
        };
        assert_eq!(row.to_string(), REAL_ROW);
        let table = render(&[SyscallsRow::parse(REAL_ROW).unwrap()]);
        assert_eq!(
            table.lines().nth(2).unwrap(),
            "| pair | io_uring | 2,000 | 3,999 | 2.913 | 1.005 | 1.006 | 0.900 | 0 | 0 | 0.002 | 1.00 | 0.99 | 0.000 | 1.007 | 0.000 | 8 % | 9 % | 182 % | 0 % |"
        );
    }
}
