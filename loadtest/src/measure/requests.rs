//! `measure request-cost`: relay CPU (and wall time, and RSS) per plain HTTP request,
//! one connection per request as probes and scrapers make them, for
//! `scripts/health-cost.sh` (`/health` against a `404`) and `scripts/scrape-cost.sh`
//! (`/stats`, `/metrics`); and `measure run-summary`, the one-line summary of a load
//! run beside the relay's forward histogram, for `scrape-cost.sh`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cli::{RequestCostArgs, RunSummaryArgs, StyleRowArgs};
use crate::http;
use crate::measure::verdict;
use crate::procfs;
use crate::relay_stats;
use crate::sys;

/// Limit for each connect, write and read.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A client samples the relay's RSS once every this many requests.
const RSS_EVERY: usize = 500;

/// One phase: requests for one path, each expecting one status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    /// The label printed.
    pub name: String,
    /// The request path.
    pub path: String,
    /// The status every answer must have.
    pub status: u16,
}

impl Phase {
    /// Parses `NAME=PATH:STATUS` (e.g. `404=/no-such-path:404`, `/health=/health:200`).
    pub fn parse(text: &str) -> Result<Phase, String> {
        let bad = || format!("`{text}`: expected NAME=PATH:STATUS");
        let (name, rest) = text.split_once('=').ok_or_else(bad)?;
        let (path, status) = rest.rsplit_once(':').ok_or_else(bad)?;
        if name.is_empty() || !path.starts_with('/') {
            return Err(bad());
        }
        Ok(Phase {
            name: name.to_owned(),
            path: path.to_owned(),
            status: status.parse().map_err(|_| bad())?,
        })
    }
}

/// One `GET` on a fresh connection; returns the response's size in bytes.
fn get(addr: SocketAddr, path: &str, want: u16) -> Result<usize, String> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let status = http::parse_head(&raw)
        .map_err(|e| e.to_string())?
        .ok_or("incomplete response head")?
        .status;
    if status != want {
        return Err(format!("{path}: status {status}, expected {want}"));
    }
    Ok(raw.len())
}

/// What one phase cost.
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    /// Relay CPU per request, µs.
    cpu_us: f64,
}

/// Runs one phase from `clients` threads.
fn phase(args: &RequestCostArgs, phase: &Phase) -> Result<Cost, String> {
    let hz = sys::clock_ticks_per_sec() as f64;
    let rss = || {
        procfs::read_rss(args.pid)
            .map(|r| r.total_kib)
            .map_err(|e| e.to_string())
    };
    let clients = args.clients.max(1);
    let per = args.requests / clients;
    let (cpu0, rss0) = (
        procfs::read_cpu_ticks(args.pid).map_err(|e| e.to_string())?,
        rss()?,
    );
    let peak = AtomicU64::new(rss0);
    let size = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| -> Result<(), String> {
                    for i in 0..per {
                        size.store(
                            get(args.addr, &phase.path, phase.status)? as u64,
                            Ordering::Relaxed,
                        );
                        if i % RSS_EVERY == 0 {
                            peak.fetch_max(rss()?, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err("a client thread panicked".into()))
        })
    })?;
    let wall = started.elapsed();
    let cpu_s = procfs::read_cpu_ticks(args.pid)
        .map_err(|e| e.to_string())?
        .saturating_sub(cpu0) as f64
        / hz;
    let n = per * clients;
    let cost = Cost {
        cpu_us: cpu_s / n.max(1) as f64 * 1e6,
    };
    println!(
        "{:<8} {n} requests in {:.1} s: relay CPU {cpu_s:.2} s = {:.1} us/request, wall {:.1} us/request \
         per client, response {} B; RSS {rss0} -> peak {} -> {} KiB",
        phase.name,
        wall.as_secs_f64(),
        cost.cpu_us,
        wall.as_secs_f64() * 1e6 / per.max(1) as f64,
        size.load(Ordering::Relaxed),
        peak.load(Ordering::Relaxed),
        rss()?
    );
    Ok(cost)
}

/// `measure request-cost`.
pub fn request_cost(args: &RequestCostArgs) -> Result<i32, String> {
    let phases = args
        .phases
        .iter()
        .map(|p| Phase::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut costs = Vec::new();
    for p in &phases {
        costs.push((p.name.as_str(), phase(args, p)?));
    }
    if let Some(base_name) = &args.ratio_to {
        let base = costs
            .iter()
            .find(|(n, _)| n == base_name)
            .map(|(_, c)| c.cpu_us)
            .ok_or_else(|| format!("--ratio-to {base_name}: no such phase"))?;
        let ratios: Vec<String> = costs
            .iter()
            .filter(|(n, _)| n != base_name)
            .map(|(n, c)| {
                format!(
                    "{n} : {base_name} = {:.2}",
                    c.cpu_us / base.max(f64::MIN_POSITIVE)
                )
            })
            .collect();
        println!("ratio {}", ratios.join(", "));
    }
    Ok(0)
}

/// `measure run-summary`: `LABEL: N rt/s, client p50 … us; relay forward (this run) …`.
pub fn run_summary(args: &RunSummaryArgs) -> Result<i32, String> {
    let dir = args
        .report
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."));
    let name = args
        .report
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("--report: expected NAME.json")?;
    let run = verdict::load(dir, name)?;
    let stats = relay_stats::fetch_plain(args.admin, None)?;
    let forward =
        relay_stats::histogram_figures(&stats, "forward").map_or("absent".to_owned(), |h| {
            format!(
                "count {} p50 {} p99 {} p999 {}",
                h.count, h.p50, h.p99, h.p999
            )
        });
    println!(
        "{}: {:.0} rt/s, client p50 {} p99 {} p999 {} us; relay forward (this run) {forward}",
        args.label,
        run.throughput.messages_per_s.floor(),
        run.latency_us.p50,
        run.latency_us.p99,
        run.latency_us.p999
    );
    Ok(0)
}

/// The report `NAME.json` at `path`.
fn load_report(path: &std::path::Path) -> Result<verdict::ReportView, String> {
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("--report: expected NAME.json")?;
    verdict::load(dir, name)
}

/// The markdown row of `scripts/bench-styles.sh` for one run.
fn style_row(label: &str, connections: &str, run: &verdict::ReportView) -> String {
    let c = &run.latency_us;
    let forward = run
        .relay
        .stats
        .as_ref()
        .and_then(|s| relay_stats::histogram_figures(s, "forward"))
        .map_or("- / - / -".to_owned(), |f| {
            format!("{} / {} / {}", f.p50, f.p99, f.p999)
        });
    let i = &run.integrity;
    let bad = i.lost + i.duplicated + i.reordered + i.corrupted + i.misrouted;
    format!(
        "| {label} | {connections} | {:.0} | {} / {} / {} | {forward} | {bad} | {} |",
        run.throughput.messages_per_s, c.p50, c.p99, c.p999, run.exit_code
    )
}

/// `measure style-row`.
pub fn style_row_command(args: &StyleRowArgs) -> Result<i32, String> {
    let run = load_report(&args.report)?;
    println!("{}", style_row(&args.label, &args.connections, &run));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_style_row_sums_integrity_and_reads_the_relay_forward_histogram() {
        let run: verdict::ReportView = serde_json::from_value(serde_json::json!({
            "latency_us":{"count":9,"p50":10,"p99":20,"p999":30},
            "integrity":{"lost":1,"duplicated":1,"reordered":0,"corrupted":0,"misrouted":1},
            "connections":{"up":2},"throughput":{"messages_per_s":1999.6},"exit_code":2,
            "relay":{"stats":{"totals":{"histograms":{"forward":{"p50":4,"p99":8,"p999":9}}}}}}))
        .unwrap();
        assert_eq!(
            style_row("pair", "100", &run),
            "| pair | 100 | 2000 | 10 / 20 / 30 | 4 / 8 / 9 | 3 | 2 |"
        );
        let bare: verdict::ReportView = serde_json::from_value(serde_json::json!({
            "latency_us":{"count":0,"p99":0},"integrity":{},"connections":{"up":0},
            "throughput":{},"relay":{"error":"refused","stats":null}}))
        .unwrap();
        assert!(style_row("pair", "1", &bare).contains("| - / - / - |"));
    }

    #[test]
    fn phases_parse_name_path_and_status() {
        assert_eq!(
            Phase::parse("404=/no-such-path:404").unwrap(),
            Phase {
                name: "404".into(),
                path: "/no-such-path".into(),
                status: 404
            }
        );
        assert_eq!(Phase::parse("/health=/health:200").unwrap().name, "/health");
        for bad in ["/health", "x=/a", "=/a:200", "x=a:200", "x=/a:ok"] {
            assert!(Phase::parse(bad).is_err(), "{bad}");
        }
    }
}
