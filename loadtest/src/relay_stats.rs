//! The relay's own view: `GET /stats?histograms=recorded` on the admin listener (plain
//! blocking HTTP/1.1, `Connection: close`) at the start and at the end of the measured
//! window, and the difference of the two: the relay's latency histograms and counters
//! over that window only (no warm-up, no earlier runs, nobody's histograms reset).
//!
//! Bodies are read through the relay's typed model (`shardrelay-stats-model`, the crate
//! the relay serialises `/stats` with): [`fetch`] refuses a body that does not fit it, and
//! [`Window`] is computed from typed values. The `Value` accessors stay for callers that
//! pick a figure by a name given at run time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;
pub use shardrelay_stats_model::{self as model, HistogramName, Stats};

use crate::http::{self, Dechunker, Framing};
use crate::stats::LatencySummary;

/// Limit for connecting to, and each read from, the admin listener.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/stats` body accepted (per-shard sections for many shards fit easily).
const MAX_STATS_BYTES: u64 = 16 << 20;
/// The histograms PROTOCOL §7 promises under `totals.histograms`.
pub const RELAY_HISTOGRAMS: [&str; 3] = [
    HistogramName::Forward.name(),
    HistogramName::Handshake.name(),
    HistogramName::Handoff.name(),
];
/// A `totals` counter differenced over the window: its name and how to read it.
type WindowCounter = (&'static str, fn(&model::Tallies) -> u64);
/// The `totals` counters differenced over the window.
const WINDOW_COUNTERS: [WindowCounter; 5] = [
    ("accepted", |t| t.accepted),
    ("messages_in", |t| t.messages_in),
    ("messages_out", |t| t.messages_out),
    ("bytes_in", |t| t.bytes_in),
    ("bytes_out", |t| t.bytes_out),
];
/// Bounds of the histograms rebuilt from `recorded` lists: the relay's own.
const HIST_LOW_MICROS: u64 = 1;
/// Upper bound (60 s), as the relay's.
const HIST_HIGH_MICROS: u64 = 60_000_000;
/// Significant figures, as the relay's.
const HIST_SIGFIG: u8 = 3;

/// The relay's figures over the measured window: end snapshot minus start snapshot.
#[derive(Debug, Default, Serialize)]
pub struct Window {
    /// Latency over the window by histogram name, µs (exact to the relay's 0.1 %).
    pub histograms: BTreeMap<String, LatencySummary>,
    /// Counter increases over the window (`rejected` and `dropped` summed over reasons,
    /// and also per reason as `rejected.<reason>`).
    pub counters: BTreeMap<String, u64>,
}

impl Window {
    /// `end - start`, read through the typed model; a snapshot that does not fit it
    /// gives an empty window (the report then shows the since-start rows).
    pub fn between(start: &Value, end: &Value) -> Window {
        match (typed(start), typed(end)) {
            (Ok(start), Ok(end)) => Window::of(&start, &end),
            _ => Window::default(),
        }
    }

    /// `end - start`. Histograms without a `recorded` list in either snapshot are left
    /// out.
    pub fn of(start: &Stats, end: &Stats) -> Window {
        let mut window = Window::default();
        for name in HistogramName::ALL {
            let (Some(a), Some(b)) = (recorded(start, name), recorded(end, name)) else {
                continue;
            };
            let delta = difference(&a, &b);
            window
                .histograms
                .insert(name.name().to_owned(), LatencySummary::of(&delta));
        }
        let (s, e) = (&start.totals, &end.totals);
        for (name, get) in WINDOW_COUNTERS {
            let mut grew = get(e).saturating_sub(get(s));
            if name == "accepted" {
                // The end snapshot's own admin connection is not load.
                grew = grew.saturating_sub(1);
            }
            window.counters.insert(name.to_owned(), grew);
        }
        window.reasons("rejected", &s.rejected, &e.rejected);
        window.reasons("dropped", &s.dropped, &e.dropped);
        window
    }

    /// A reason map's growth: `map.<reason>` for each reason that grew, `map` their sum.
    fn reasons<K: model::Key + Ord>(
        &mut self,
        map: &str,
        start: &BTreeMap<K, u64>,
        end: &BTreeMap<K, u64>,
    ) {
        let mut sum = 0;
        for (reason, &n) in end {
            let grew = n.saturating_sub(start.get(reason).copied().unwrap_or(0));
            sum += grew;
            if grew > 0 {
                self.counters
                    .insert(format!("{map}.{}", reason.name()), grew);
            }
        }
        self.counters.insert(map.to_owned(), sum);
    }
}

/// A `/stats` body as the typed model; an error names what does not fit (a key the
/// model lacks, or one it has missing).
pub fn typed(stats: &Value) -> Result<Stats, String> {
    Stats::deserialize(stats).map_err(|e| format!("/stats does not fit the typed model: {e}"))
}

/// A histogram's `recorded` list (`[[µs, count], …]`) as a value → count map.
fn recorded(stats: &Stats, name: HistogramName) -> Option<BTreeMap<u64, u64>> {
    let list = stats.totals.histograms.get(name).recorded.as_ref()?;
    let mut out = BTreeMap::new();
    for &(value, count) in list {
        *out.entry(value).or_insert(0) += count;
    }
    Some(out)
}

/// A histogram of what `end` recorded beyond `start`.
fn difference(start: &BTreeMap<u64, u64>, end: &BTreeMap<u64, u64>) -> Histogram<u64> {
    // Cannot fail: constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low,
    // sigfig <= 5).
    let mut h = Histogram::new_with_bounds(HIST_LOW_MICROS, HIST_HIGH_MICROS, HIST_SIGFIG)
        .expect("valid histogram bounds");
    for (&value, &count) in end {
        let grew = count.saturating_sub(start.get(&value).copied().unwrap_or(0));
        if grew > 0 {
            h.saturating_record_n(value.clamp(HIST_LOW_MICROS, HIST_HIGH_MICROS), grew);
        }
    }
    h
}

/// Fetches and parses `/stats` with the histograms' `recorded` lists (for [`Window`]),
/// checked against the typed model (see [`typed`]).
pub fn fetch(admin: SocketAddr, token: Option<&str>) -> Result<Value, String> {
    fetch_path(admin, token, "/stats?histograms=recorded")
}

/// Fetches and parses plain `/stats` (no `recorded` lists: cheap enough to poll).
pub fn fetch_plain(admin: SocketAddr, token: Option<&str>) -> Result<Value, String> {
    fetch_path(admin, token, "/stats")
}

/// Fetches and parses the `/stats` body at `path`.
fn fetch_path(admin: SocketAddr, token: Option<&str>, path: &str) -> Result<Value, String> {
    let mut stream = TcpStream::connect_timeout(&admin, FETCH_TIMEOUT)
        .map_err(|e| format!("connect {admin}: {e}"))?;
    stream
        .set_read_timeout(Some(FETCH_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(FETCH_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let request = http::request_head("GET", &admin.to_string(), path, &headers, None);
    stream
        .write_all(&request)
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_STATS_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    parse_response(&raw)
}

/// The JSON body of a complete `/stats` response.
fn parse_response(raw: &[u8]) -> Result<Value, String> {
    let head = http::parse_head(raw)
        .map_err(|e| e.to_string())?
        .ok_or("incomplete response head")?;
    if head.status != 200 {
        return Err(format!("/stats answered {}", head.status));
    }
    let rest = &raw[head.len..];
    let body = match head.framing {
        Framing::Length(n) => rest
            .get(..n as usize)
            .ok_or("body shorter than Content-Length")?
            .to_vec(),
        Framing::UntilClose => rest.to_vec(),
        Framing::Chunked => {
            let mut body = Vec::new();
            Dechunker::default()
                .feed(rest, &mut |b| body.extend_from_slice(b))
                .map_err(|e| e.to_string())?;
            body
        }
    };
    let value: Value = serde_json::from_slice(&body).map_err(|e| format!("bad JSON: {e}"))?;
    typed(&value)?;
    Ok(value)
}

/// `totals.histograms.<name>` of a `/stats` body, if present.
pub fn histogram<'a>(stats: &'a Value, name: &str) -> Option<&'a Value> {
    stats.get("totals")?.get("histograms")?.get(name)
}

/// Open connections by kind now (`totals.connections`: `pair`, `phone`, …).
pub fn connection_counts(stats: &Value) -> BTreeMap<String, u64> {
    number_map(stats, "/totals/connections")
}

/// Registry gauges now (`totals.gauges`: server-id slots, pairs waiting, …).
pub fn gauges(stats: &Value) -> BTreeMap<String, u64> {
    number_map(stats, "/totals/gauges")
}

/// Connections open now, every kind.
pub fn open_connections(stats: &Value) -> u64 {
    connection_counts(stats).values().sum()
}

/// Registry entries now, every gauge.
pub fn registered(stats: &Value) -> u64 {
    gauges(stats).values().sum()
}

/// Open connections of one kind (0 when the relay has none of that kind).
pub fn connections_of(stats: &Value, kind: &str) -> u64 {
    connection_counts(stats).get(kind).copied().unwrap_or(0)
}

/// A cumulative `totals` counter (`messages_out`, `accepted`, …); a counter map
/// (`rejected`, `dropped`) is summed over its reasons; `None` when absent.
pub fn total(stats: &Value, counter: &str) -> Option<u64> {
    let value = stats.get("totals")?.get(counter)?;
    match value {
        Value::Object(map) => Some(map.values().filter_map(Value::as_u64).sum()),
        other => other.as_u64(),
    }
}

/// The counting allocator's `(count, bytes)` so far (`allocations` at the top level of
/// `/stats`); `None` unless the relay is an `alloc-count` build.
pub fn allocations(stats: &Value) -> Option<(u64, u64)> {
    let a = stats.get("allocations")?;
    Some((a.get("count")?.as_u64()?, a.get("bytes")?.as_u64()?))
}

/// The summary figures of one `totals.histograms.<name>` (µs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramFigures {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

/// `totals.histograms.<name>`'s figures; `None` when the relay has no such histogram.
pub fn histogram_figures(stats: &Value, name: &str) -> Option<HistogramFigures> {
    let h = histogram(stats, name)?;
    let field = |k: &str| h.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(HistogramFigures {
        count: field("count"),
        p50: field("p50"),
        p99: field("p99"),
        p999: field("p999"),
    })
}

/// A `{name: number}` object at `pointer` (empty when absent).
fn number_map(stats: &Value, pointer: &str) -> BTreeMap<String, u64> {
    stats
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Dropped, Histogram as Summary};

    /// A whole `/stats` body (every key) whose totals are shaped by `f`.
    fn body(f: impl FnOnce(&mut model::Tallies)) -> Stats {
        let mut stats = Stats::default();
        f(&mut stats.totals);
        stats
    }

    /// A summary with only a `recorded` list.
    fn listed(recorded: &[(u64, u64)]) -> Summary {
        Summary {
            recorded: Some(recorded.to_vec()),
            ..Summary::default()
        }
    }

    #[test]
    fn parses_length_and_chunked_bodies() {
        let stats = body(|t| {
            t.histograms.forward.count = 3;
            t.histograms.forward.p50 = 10;
        });
        let body = serde_json::to_string(&stats).unwrap();
        let plain = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let value = parse_response(plain.as_bytes()).unwrap();
        assert_eq!(histogram(&value, "forward").unwrap()["p50"], 10);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        assert_eq!(parse_response(chunked.as_bytes()).unwrap(), value);
        assert!(histogram(&value, "nope").is_none());
        assert!(parse_response(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n").is_err());
    }

    #[test]
    fn a_body_that_does_not_fit_the_model_is_refused() {
        let body = r#"{"totals":{"histograms":{"forward":{"count":3,"p50":10}}}}"#;
        let plain = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let err = parse_response(plain.as_bytes()).unwrap_err();
        assert!(err.contains("typed model"), "{err}");
    }

    #[test]
    fn the_window_is_the_end_snapshot_minus_the_start() {
        let start = body(|t| {
            t.messages_in = 100;
            t.dropped.insert(Dropped::PhoneBacklogFull, 2);
            t.histograms.forward = listed(&[(10, 50), (1000, 50)]);
        });
        let end = body(|t| {
            t.messages_in = 160;
            t.dropped.insert(Dropped::PhoneBacklogFull, 5);
            t.dropped.insert(Dropped::TextInPair, 1);
            t.histograms.forward = listed(&[(10, 50), (1000, 50), (20, 60)]);
            t.histograms.handshake = listed(&[(5, 1)]);
        });
        let as_value = |s: &Stats| serde_json::to_value(s).unwrap();
        let w = Window::between(&as_value(&start), &as_value(&end));
        let fwd = &w.histograms["forward"];
        // Only the 60 samples at 20 µs are in the window; warm-up's 1000 µs are not.
        assert_eq!((fwd.count, fwd.p99, fwd.max), (60, 20, 20));
        assert!(!w.histograms.contains_key("handshake"), "no start list");
        assert_eq!(w.counters["messages_in"], 60);
        assert_eq!(w.counters["dropped"], 4);
        assert_eq!(w.counters["dropped.phone_backlog_full"], 3);
        assert_eq!(w.counters["dropped.text_in_pair"], 1);
        let partial = serde_json::json!({"totals": {"messages_in": 1}});
        assert!(Window::between(&partial, &as_value(&end))
            .counters
            .is_empty());
    }

    #[test]
    fn accessors_sum_connections_and_gauges_and_read_counters() {
        let stats = serde_json::json!({"totals":{"messages_out":42,
            "connections":{"pair":200,"phone":80,"ticket_get":0},
            "gauges":{"server_ids":3,"pairs_waiting":1},
            "rejected":{"rate":2,"memory":5}}});
        assert_eq!(open_connections(&stats), 280);
        assert_eq!(registered(&stats), 4);
        assert_eq!(connections_of(&stats, "phone"), 80);
        assert_eq!(connections_of(&stats, "session_browser"), 0);
        assert_eq!(total(&stats, "messages_out"), Some(42));
        assert_eq!(total(&stats, "rejected"), Some(7));
        assert_eq!(total(&stats, "nonesuch"), None);
        assert_eq!(open_connections(&serde_json::json!({})), 0);
        assert_eq!(allocations(&stats), None);
        let with_hist = serde_json::json!({"totals":{"histograms":{"forward":
            {"count":5,"p50":10,"p99":20,"p999":30}}}});
        let h = histogram_figures(&with_hist, "forward").unwrap();
        assert_eq!((h.count, h.p50, h.p99, h.p999), (5, 10, 20, 30));
        assert_eq!(histogram_figures(&with_hist, "handoff"), None);
        let counted = serde_json::json!({"allocations":{"count":10,"bytes":640}});
        assert_eq!(allocations(&counted), Some((10, 640)));
    }
}
