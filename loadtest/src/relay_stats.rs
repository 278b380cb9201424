//! The relay's own view: `GET /stats?histograms=recorded` on the admin listener (plain
//! blocking HTTP/1.1, `Connection: close`) at the start and at the end of the measured
//! window, and the difference of the two: the relay's latency histograms and counters
//! over that window only (no warm-up, no earlier runs, nobody's histograms reset).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::http::{self, Dechunker, Framing};
use crate::stats::LatencySummary;

/// Limit for connecting to, and each read from, the admin listener.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/stats` body accepted (per-shard sections for many shards fit easily).
const MAX_STATS_BYTES: u64 = 16 << 20;
/// The histograms PROTOCOL §7 promises under `totals.histograms`.
pub const RELAY_HISTOGRAMS: [&str; 3] = ["forward", "handshake", "handoff"];
/// The `totals` counters differenced over the window.
const WINDOW_COUNTERS: [&str; 5] = [
    "accepted",
    "messages_in",
    "messages_out",
    "bytes_in",
    "bytes_out",
];
/// The `totals` counter maps differenced over the window (summed over their keys).
const WINDOW_COUNTER_MAPS: [&str; 2] = ["rejected", "dropped"];
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
    /// `end - start`. Histograms without a `recorded` list in either snapshot (an
    /// older relay) are left out.
    pub fn between(start: &Value, end: &Value) -> Window {
        let mut window = Window::default();
        for name in RELAY_HISTOGRAMS {
            let (Some(a), Some(b)) = (recorded(start, name), recorded(end, name)) else {
                continue;
            };
            let delta = difference(&a, &b);
            window
                .histograms
                .insert(name.to_owned(), LatencySummary::of(&delta));
        }
        let counter = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        for name in WINDOW_COUNTERS {
            let p = format!("/totals/{name}");
            let mut grew = counter(end, &p).saturating_sub(counter(start, &p));
            if name == "accepted" {
                // The end snapshot's own admin connection is not load.
                grew = grew.saturating_sub(1);
            }
            window.counters.insert(name.to_owned(), grew);
        }
        for map in WINDOW_COUNTER_MAPS {
            let mut sum = 0;
            if let Some(reasons) = end
                .pointer(&format!("/totals/{map}"))
                .and_then(Value::as_object)
            {
                for reason in reasons.keys() {
                    let p = format!("/totals/{map}/{reason}");
                    let grew = counter(end, &p).saturating_sub(counter(start, &p));
                    sum += grew;
                    if grew > 0 {
                        window.counters.insert(format!("{map}.{reason}"), grew);
                    }
                }
            }
            window.counters.insert(map.to_owned(), sum);
        }
        window
    }
}

/// A histogram's `recorded` list (`[[µs, count], …]`) as a value → count map.
fn recorded(stats: &Value, name: &str) -> Option<BTreeMap<u64, u64>> {
    let list = histogram(stats, name)?.get("recorded")?.as_array()?;
    let mut out = BTreeMap::new();
    for pair in list {
        let (value, count) = (pair.get(0)?.as_u64()?, pair.get(1)?.as_u64()?);
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

/// Fetches and parses `/stats` with the histograms' `recorded` lists (for [`Window`]).
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
    serde_json::from_slice(&body).map_err(|e| format!("bad JSON: {e}"))
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

    #[test]
    fn parses_length_and_chunked_bodies() {
        let body = r#"{"totals":{"histograms":{"forward":{"count":3,"p50":10}}}}"#;
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
        assert!(histogram(&value, "handoff").is_none());
        assert!(parse_response(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n").is_err());
    }

    #[test]
    fn the_window_is_the_end_snapshot_minus_the_start() {
        let start = serde_json::json!({"totals":{"messages_in":100,"dropped":{"full":2},
            "histograms":{"forward":{"recorded":[[10,50],[1000,50]]}}}});
        let end = serde_json::json!({"totals":{"messages_in":160,"dropped":{"full":5,"x":1},
            "histograms":{"forward":{"recorded":[[10,50],[1000,50],[20,60]]},
                          "handshake":{"recorded":[[5,1]]}}}});
        let w = Window::between(&start, &end);
        let fwd = &w.histograms["forward"];
        // Only the 60 samples at 20 µs are in the window; warm-up's 1000 µs are not.
        assert_eq!((fwd.count, fwd.p99, fwd.max), (60, 20, 20));
        assert!(!w.histograms.contains_key("handshake"), "no start list");
        assert_eq!(w.counters["messages_in"], 60);
        assert_eq!(w.counters["dropped"], 4);
        assert_eq!(w.counters["dropped.full"], 3);
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
    }
}
