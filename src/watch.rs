//! `shardrelay stats`: an operator's terminal view of a running relay. Every interval it
//! fetches `/stats?histograms=recorded` from the admin listener and shows what happened
//! *in that interval*: rates, refusals and drops by reason, and latency percentiles taken
//! from the difference of two snapshots (nobody's histograms are reset), plus the open
//! connections per kind.
//!
//! On a terminal the screen is redrawn in place; otherwise one compact line per interval
//! is printed (for logs and pipes). A failed fetch (a relay restarting) is shown and
//! retried; a restarted relay (uptime or counters went backwards) starts a new baseline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shardrelay_stats_model::{ConnKind, Dropped, HistogramName, Key, Rejected, Stats};

/// Limit for connecting to the admin listener (per resolved address).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Limit for reading the `/stats` answer.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/stats` body read (the recorded lists of a busy relay stay far below).
const MAX_STATS_BYTES: u64 = 16 << 20;
/// Terminal control: cursor home, clear screen.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Why the watch could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The admin listener could not be reached or answered badly.
    #[error("GET /stats from {addr}: {why}")]
    Fetch {
        /// The admin address as given.
        addr: String,
        /// What went wrong.
        why: String,
    },
    /// The admin listener answered, but not with the stats (a wrong token: 401).
    #[error("GET /stats from {addr}: the relay answered {status}")]
    Status {
        /// The admin address as given.
        addr: String,
        /// The status line.
        status: String,
    },
    /// `--admin-token-file` could not be read.
    #[error("--admin-token-file {path}: {why}")]
    TokenFile {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
}

/// What `shardrelay stats` was asked to do.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The admin listener, `host:port` (host names are resolved at every fetch).
    pub admin: String,
    /// Bearer token.
    pub token: Option<String>,
    /// Screens (or lines) to show before stopping; 0 = until interrupted.
    pub count: u64,
    /// Time between fetches.
    pub interval: Duration,
}

/// The admin token from `--admin-token-file` (trimmed), else `--admin-token`.
pub fn load_token(
    file: Option<&PathBuf>,
    token: Option<String>,
) -> Result<Option<String>, WatchError> {
    let Some(path) = file else {
        return Ok(token);
    };
    let fail = |why: String| WatchError::TokenFile {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    Ok(Some(token.to_owned()))
}

/// Show `count` screens (0 = forever), one per interval, surviving fetch failures.
pub fn run(options: &WatchOptions) -> Result<(), WatchError> {
    let terminal = std::io::stdout().is_terminal();
    let mut previous: Option<(Stats, Instant)> = None;
    let mut shown = 0;
    loop {
        let screen = match fetch_stats(&options.admin, options.token.as_deref()) {
            Ok(stats) => {
                let taken = Instant::now();
                let baseline = previous.take().filter(|(p, _)| !restarted(p, &stats));
                let view = match &baseline {
                    Some((before, at)) => {
                        Interval::between(Some(before), &stats, taken.duration_since(*at))
                    }
                    None => Interval::between(None, &stats, Duration::ZERO),
                };
                previous = Some((stats, taken));
                render(options, &view, terminal)
            }
            Err(e) => render_unreachable(options, &e, terminal),
        };
        let mut out = std::io::stdout().lock();
        let shown_ok = write!(out, "{screen}").and_then(|_| out.flush());
        if shown_ok.is_err() {
            return Ok(()); // stdout closed (`| head`): nothing left to show to
        }
        shown += 1;
        if options.count != 0 && shown >= options.count {
            return Ok(());
        }
        std::thread::sleep(options.interval);
    }
}

/// Whether `now` comes from a relay restarted since `before` was taken.
fn restarted(before: &Stats, now: &Stats) -> bool {
    now.uptime_seconds < before.uptime_seconds || now.totals.accepted < before.totals.accepted
}

/// One `GET /stats?histograms=recorded` over a plain blocking socket, trying each
/// address `admin` resolves to; the body read as the typed model shared with the relay
/// (a body that does not fit it is a fetch error naming the mismatch).
pub fn fetch_stats(admin: &str, token: Option<&str>) -> Result<Stats, WatchError> {
    let fail = |why: String| WatchError::Fetch {
        addr: admin.to_owned(),
        why,
    };
    let mut stream = connect(admin).map_err(fail)?;
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /stats?histograms=recorded HTTP/1.1\r\nHost: {admin}\r\n{auth}Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let mut response = Vec::new();
    stream
        .take(MAX_STATS_BYTES)
        .read_to_end(&mut response)
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail("no HTTP response".into()))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(WatchError::Status {
            addr: admin.to_owned(),
            status: head.lines().next().unwrap_or_default().to_owned(),
        });
    }
    serde_json::from_str(body)
        .map_err(|e| fail(format!("the body does not fit the /stats model: {e}")))
}

/// Connect to the first address of `admin` that answers.
fn connect(admin: &str) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = admin
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut last = format!("`{admin}` resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// What one interval shows: the latest snapshot and its differences from the previous.
#[derive(Debug, Default)]
pub struct Interval {
    /// Seconds the interval covered (0 for the first screen: everything since start).
    pub seconds: f64,
    /// Relay uptime, seconds.
    pub uptime: u64,
    /// Shards that answered.
    pub shards: u64,
    /// Open connections by kind (now).
    pub connections: Vec<(ConnKind, u64)>,
    /// Counter increases (`accepted` less this tool's own fetch).
    pub counters: BTreeMap<&'static str, u64>,
    /// Refusals by reason: (this interval, since start).
    pub rejected: Vec<(Rejected, u64, u64)>,
    /// Drops by reason: (this interval, since start).
    pub dropped: Vec<(Dropped, u64, u64)>,
    /// Latency over the interval by histogram, µs: count, p50, p90, p99, p99.9, max.
    pub latency: Vec<(&'static str, [u64; 6])>,
}

impl Interval {
    /// The view of `now` against `before`, taken `elapsed` earlier (no `before`: since
    /// the relay started).
    pub fn between(before: Option<&Stats>, now: &Stats, elapsed: Duration) -> Interval {
        let (t, earlier) = (&now.totals, before.map(|b| &b.totals));
        let grew = |get: fn(&shardrelay_stats_model::Tallies) -> u64| {
            get(t).saturating_sub(earlier.map_or(0, get))
        };
        let mut counters = BTreeMap::new();
        counters.insert("accepted", grew(|t| t.accepted));
        counters.insert("handoffs", grew(|t| t.handoffs));
        counters.insert("messages_in", grew(|t| t.messages_in));
        counters.insert("messages_out", grew(|t| t.messages_out));
        counters.insert("bytes_in", grew(|t| t.bytes_in));
        counters.insert("bytes_out", grew(|t| t.bytes_out));
        // Our own /stats fetch is one accepted admin connection per interval.
        if let Some(accepted) = counters.get_mut("accepted") {
            *accepted = accepted.saturating_sub(1);
        }
        Interval {
            seconds: if before.is_some() {
                elapsed.as_secs_f64()
            } else {
                0.0
            },
            uptime: now.uptime_seconds,
            shards: now.shards,
            connections: t.connections.iter().map(|(&k, &n)| (k, n)).collect(),
            counters,
            rejected: reasons(&t.rejected, earlier.map(|e| &e.rejected)),
            dropped: reasons(&t.dropped, earlier.map(|e| &e.dropped)),
            latency: HistogramName::ALL
                .iter()
                .map(|&name| (name.name(), interval_latency(before, now, name)))
                .collect(),
        }
    }

    /// Per-second rate of a counter over the interval (over the uptime for the first
    /// screen), rounded.
    fn rate(&self, name: &str) -> u64 {
        let n = self.counters.get(name).copied().unwrap_or(0) as f64;
        let seconds = if self.seconds > 0.0 {
            self.seconds
        } else {
            self.uptime.max(1) as f64
        };
        (n / seconds).round() as u64
    }
}

/// A keyed counter map's reasons: (reason, this interval, since start).
fn reasons<K: Key + Ord>(
    now: &BTreeMap<K, u64>,
    before: Option<&BTreeMap<K, u64>>,
) -> Vec<(K, u64, u64)> {
    now.iter()
        .map(|(&reason, &total)| {
            let earlier = before.and_then(|b| b.get(&reason)).copied().unwrap_or(0);
            (reason, total.saturating_sub(earlier), total)
        })
        .collect()
}

/// A histogram's recorded values (µs → count); empty without a `recorded` list.
fn recorded(stats: &Stats, name: HistogramName) -> BTreeMap<u64, u64> {
    let mut out: BTreeMap<u64, u64> = BTreeMap::new();
    let list = stats.totals.histograms.get(name).recorded.as_deref();
    for &(v, c) in list.unwrap_or_default() {
        let count = out.entry(v).or_insert(0);
        *count = count.saturating_add(c);
    }
    out
}

/// count, p50, p90, p99, p99.9 and max (µs) of what `name` recorded in the interval.
fn interval_latency(before: Option<&Stats>, now: &Stats, name: HistogramName) -> [u64; 6] {
    let earlier = before.map(|b| recorded(b, name)).unwrap_or_default();
    // Cannot fail: constant bounds hdrhistogram accepts (1 µs .. 60 s, 3 figures), the
    // relay's own.
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for (value, count) in recorded(now, name) {
        let grew = count.saturating_sub(earlier.get(&value).copied().unwrap_or(0));
        if grew > 0 {
            h.saturating_record_n(value.max(1), grew);
        }
    }
    if h.is_empty() {
        return [0; 6];
    }
    let q = |q: f64| h.value_at_quantile(q);
    [h.len(), q(0.5), q(0.9), q(0.99), q(0.999), h.max()]
}

/// The screen (terminal) or line (otherwise) for one interval.
pub fn render(options: &WatchOptions, view: &Interval, terminal: bool) -> String {
    if terminal {
        format!("{CLEAR_SCREEN}{}", render_screen(options, view))
    } else {
        render_line(view)
    }
}

/// The full-screen view.
pub fn render_screen(options: &WatchOptions, view: &Interval) -> String {
    let mut out = String::new();
    let window = if view.seconds > 0.0 {
        format!("last {:.1}s", view.seconds)
    } else {
        "since start".to_owned()
    };
    let _ = writeln!(
        out,
        "shardrelay stats  {}  uptime {}s  shards {}  ({window}; Ctrl-C quits)\n",
        options.admin, view.uptime, view.shards
    );
    let total: u64 = view.connections.iter().map(|(_, n)| n).sum();
    let _ = writeln!(out, "{:<18} {:>10}", "connections", "open");
    for (kind, n) in &view.connections {
        let _ = writeln!(out, "  {kind:<16} {n:>10}");
    }
    let _ = writeln!(out, "  {:<16} {total:>10}\n", "total");
    let _ = writeln!(
        out,
        "per second        accepted {}  handoffs {}  msgs in {}  msgs out {}  bytes in {}  bytes out {}\n",
        view.rate("accepted"),
        view.rate("handoffs"),
        view.rate("messages_in"),
        view.rate("messages_out"),
        view.rate("bytes_in"),
        view.rate("bytes_out")
    );
    render_reasons(&mut out, "rejected", &view.rejected);
    render_reasons(&mut out, "dropped", &view.dropped);
    let _ = writeln!(
        out,
        "{:<18} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}   (µs, {window})",
        "latency", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, [count, p50, p90, p99, p999, max]) in &view.latency {
        let _ = writeln!(
            out,
            "  {name:<16} {count:>9} {p50:>8} {p90:>8} {p99:>8} {p999:>8} {max:>8}"
        );
    }
    out
}

/// A reason table: `reason  this interval  since start`.
fn render_reasons<K: std::fmt::Display>(out: &mut String, title: &str, rows: &[(K, u64, u64)]) {
    let _ = writeln!(out, "{title:<18} {:>10} {:>12}", "interval", "since start");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (reason, interval, total) in rows {
        let _ = writeln!(out, "  {reason:<16} {interval:>10} {total:>12}");
    }
    out.push('\n');
}

/// One compact line (not a terminal).
pub fn render_line(view: &Interval) -> String {
    let open: Vec<String> = view
        .connections
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let total: u64 = view.connections.iter().map(|(_, n)| n).sum();
    let mut latency = String::new();
    for (name, [_, p50, _, p99, _, max]) in &view.latency {
        let _ = write!(latency, " | {name} p50 {p50} p99 {p99} max {max}");
    }
    format!(
        "up {}s conns {total} ({}) accepted/s {} in/s {} out/s {} rejected {} dropped {}{latency} (µs)\n",
        view.uptime,
        if open.is_empty() { "none".to_owned() } else { open.join(", ") },
        view.rate("accepted"),
        view.rate("messages_in"),
        view.rate("messages_out"),
        in_interval(&view.rejected),
        in_interval(&view.dropped),
    )
}

/// The sum of a reason table's interval column.
fn in_interval<K>(rows: &[(K, u64, u64)]) -> u64 {
    rows.iter().map(|r| r.1).sum()
}

/// What is shown while the relay cannot be reached.
fn render_unreachable(options: &WatchOptions, error: &WatchError, terminal: bool) -> String {
    let what = match error {
        WatchError::Status { .. } => "relay refused the request",
        _ => "relay unreachable",
    };
    let text = format!("{what}: {error} (retrying every {:?})\n", options.interval);
    if terminal {
        format!(
            "{CLEAR_SCREEN}shardrelay stats  {}\n\n{text}",
            options.admin
        )
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardrelay_stats_model::Histogram as Summary;

    fn snapshot(uptime: u64, accepted: u64, not_found: u64, recorded: &[(u64, u64)]) -> Stats {
        let mut s = Stats {
            uptime_seconds: uptime,
            shards: 2,
            ..Stats::default()
        };
        let t = &mut s.totals;
        t.connections = [
            (ConnKind::Binary, 1),
            (ConnKind::Phone, 3),
            (ConnKind::Pair, 0),
        ]
        .into_iter()
        .collect();
        t.accepted = accepted;
        t.messages_in = accepted * 10;
        t.rejected.insert(Rejected::NotFound, not_found);
        t.histograms.forward = Summary {
            recorded: Some(recorded.to_vec()),
            ..Summary::default()
        };
        s
    }

    #[test]
    fn the_interval_is_the_difference_and_excludes_our_own_fetch() {
        let before = snapshot(10, 5, 1, &[(1000, 50)]);
        let now = snapshot(12, 9, 4, &[(1000, 50), (10, 9), (20, 1)]);
        let view = Interval::between(Some(&before), &now, Duration::from_secs(2));
        assert_eq!(view.seconds, 2.0);
        assert_eq!(view.counters["accepted"], 3, "4 accepted less our fetch");
        assert_eq!(view.rate("messages_in"), 20);
        assert_eq!(view.rejected, vec![(Rejected::NotFound, 3, 4)]);
        let (_, forward) = view.latency[0];
        assert_eq!(
            forward,
            [10, 10, 10, 20, 20, 20],
            "the 1000 µs samples are older"
        );
        let screen = render_screen(&opts(), &view);
        assert!(screen.contains("  phone                     3"), "{screen}");
        assert!(screen.contains("  total                     4"), "{screen}");
        assert!(screen.contains("not_found"), "{screen}");
        assert!(screen.contains("last 2.0s"), "{screen}");
    }

    #[test]
    fn a_restart_starts_a_new_baseline() {
        let before = snapshot(100, 50, 0, &[]);
        let after = snapshot(1, 1, 0, &[]);
        assert!(restarted(&before, &after));
        assert!(!restarted(&before, &snapshot(101, 51, 0, &[])));
    }

    #[test]
    fn compact_lines_are_one_line_each() {
        let view = Interval::between(None, &snapshot(3, 2, 0, &[(7, 2)]), Duration::ZERO);
        let line = render_line(&view);
        assert_eq!(line.lines().count(), 1);
        assert!(line.contains("conns 4 (binary 1, phone 3)"), "{line}");
        assert!(line.contains("forward p50 7"), "{line}");
        assert!(!render(&opts(), &view, false).contains('\u{1b}'));
        assert!(render(&opts(), &view, true).starts_with(CLEAR_SCREEN));
    }

    fn opts() -> WatchOptions {
        WatchOptions {
            admin: "localhost:9090".into(),
            token: None,
            count: 1,
            interval: Duration::from_secs(1),
        }
    }
}
