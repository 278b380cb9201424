//! JSON: the `/stats` body, built as the typed model of `shardrelay-stats-model`.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::*;

// ---------------------------------------------------------------------------------------
// JSON (`/stats`)
// ---------------------------------------------------------------------------------------

/// The `/stats` body.
#[derive(Serialize)]
pub(super) struct JsonBody {
    /// Seconds since the process started.
    pub(super) uptime_seconds: u64,
    /// How many shards answered (the length of `per_shard`).
    pub(super) shards: usize,
    /// The whole process: every shard merged, histograms exactly.
    pub(super) totals: JsonTallies,
    /// Each shard on its own, in shard order.
    pub(super) per_shard: Vec<JsonShard>,
    /// Process-wide allocation counts; only in an `alloc-count` build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) allocations: Option<JsonAllocations>,
    /// The memory budget of PROTOCOL §2.1.
    pub(super) memory: JsonMemory,
}

/// `memory`: what clients make the relay hold, against `--memory-limit`.
#[derive(Serialize)]
pub(super) struct JsonMemory {
    /// Bytes charged now (queues, early messages, read buffers, heads, ticket windows).
    pub(super) used_bytes: u64,
    /// `--memory-limit`.
    pub(super) limit_bytes: u64,
}

impl JsonMemory {
    /// The budget as it stands.
    pub(super) fn now() -> Self {
        JsonMemory {
            used_bytes: crate::memory::used() as u64,
            limit_bytes: crate::memory::limit() as u64,
        }
    }
}

/// `allocations` in an `alloc-count` build (see `alloc_count`).
#[derive(Serialize)]
pub(super) struct JsonAllocations {
    /// Allocations and reallocations since the process started.
    pub(super) count: u64,
    /// Bytes they asked for.
    pub(super) bytes: u64,
}

/// The allocation counts, when this build counts them.
pub(super) fn allocations() -> Option<JsonAllocations> {
    #[cfg(feature = "alloc-count")]
    {
        let (count, bytes) = crate::alloc_count::allocations();
        Some(JsonAllocations { count, bytes })
    }
    #[cfg(not(feature = "alloc-count"))]
    None
}

/// One entry of `per_shard`: the shard id, then the same keys as `totals`.
#[derive(Serialize)]
pub(super) struct JsonShard {
    /// The shard id.
    pub(super) shard: usize,
    /// The shard's tallies, flattened beside `shard`.
    #[serde(flatten)]
    pub(super) tallies: JsonTallies,
}

/// The counter, gauge and histogram keys shared by `totals` and each `per_shard` entry.
#[derive(Serialize)]
pub(super) struct JsonTallies {
    /// Open connections by kind (every kind present, zeros included).
    pub(super) connections: BTreeMap<&'static str, u64>,
    /// TCP connections accepted.
    pub(super) accepted: u64,
    /// Connections handed to another shard.
    pub(super) handoffs: u64,
    /// Connections adopted from another shard.
    pub(super) adopted: u64,
    /// Refusals by reason (reasons seen so far).
    pub(super) rejected: BTreeMap<&'static str, u64>,
    /// Messages read from clients.
    pub(super) messages_in: u64,
    /// Messages written to clients.
    pub(super) messages_out: u64,
    /// Payload bytes read.
    pub(super) bytes_in: u64,
    /// Payload bytes written.
    pub(super) bytes_out: u64,
    /// Messages not forwarded, by reason.
    pub(super) dropped: BTreeMap<&'static str, u64>,
    /// Other named counters.
    pub(super) events: BTreeMap<&'static str, u64>,
    /// Registry sizes.
    pub(super) gauges: BTreeMap<&'static str, i64>,
    /// The three latency histograms.
    pub(super) histograms: JsonHistograms,
    /// Forward latency by rendezvous style.
    pub(super) forward_by_mode: BTreeMap<&'static str, JsonHistogram>,
}

/// The `histograms` object.
#[derive(Serialize)]
pub(super) struct JsonHistograms {
    /// Read-to-written latency of relayed messages.
    pub(super) forward: JsonHistogram,
    /// HTTP/upgrade handshake latency.
    pub(super) handshake: JsonHistogram,
    /// Shard-to-shard handoff latency.
    pub(super) handoff: JsonHistogram,
}

/// A histogram's summary, all in microseconds (values are HDR bucket values: within
/// 0.1 % of what was recorded). Every field is 0 for an empty histogram.
#[derive(Serialize, Debug, PartialEq, Clone)]
pub(super) struct JsonHistogram {
    /// Samples recorded.
    pub(super) count: u64,
    /// Smallest sample.
    pub(super) min: u64,
    /// Median.
    pub(super) p50: u64,
    /// 90th percentile.
    pub(super) p90: u64,
    /// 99th percentile.
    pub(super) p99: u64,
    /// 99.9th percentile.
    pub(super) p999: u64,
    /// Largest sample.
    pub(super) max: u64,
    /// Mean, rounded to 0.01 µs to keep the body short.
    pub(super) mean: f64,
    /// With `?histograms=recorded` (`totals` only): every recorded value and its count,
    /// `[[µs, count], …]` in value order, so a client can subtract two snapshots and
    /// take exact quantiles of the interval between them without resetting anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) recorded: Option<Vec<(u64, u64)>>,
}

impl JsonHistogram {
    /// Summarise `r` exactly as `Histogram`'s own methods would summarise the same
    /// buckets (min is the lowest bucket's lowest value, the mean uses each bucket's
    /// median value); with `recorded`, also list the buckets.
    pub(super) fn of(r: &Recorded, recorded: bool) -> Self {
        if let Some(h) = &r.dense {
            return JsonHistogram::of_histogram(h, recorded);
        }
        let count = r.count();
        let recorded = recorded.then(|| r.buckets.clone());
        let (Some(&(first, _)), Some(&(last, _))) = (r.buckets.first(), r.buckets.last()) else {
            return JsonHistogram {
                count: 0,
                min: 0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
                mean: 0.0,
                recorded,
            };
        };
        let h = scale();
        let mean = r.buckets.iter().fold(0.0_f64, |total, &(v, n)| {
            total + h.median_equivalent(v) as f64 * n as f64 / count as f64
        });
        JsonHistogram {
            count,
            min: h.lowest_equivalent(first),
            p50: r.value_at_quantile(0.5, count),
            p90: r.value_at_quantile(0.9, count),
            p99: r.value_at_quantile(0.99, count),
            p999: r.value_at_quantile(0.999, count),
            max: last,
            mean: (mean * 100.0).round() / 100.0,
            recorded,
        }
    }
}

impl JsonHistogram {
    /// Summarise a whole histogram with its own methods; with `recorded`, list its
    /// buckets too.
    pub(super) fn of_histogram(h: &Histogram<u64>, recorded: bool) -> Self {
        let list = recorded.then(|| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        });
        if h.is_empty() {
            return JsonHistogram::of(&Recorded::default(), recorded);
        }
        JsonHistogram {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 100.0).round() / 100.0,
            recorded: list,
        }
    }
}

/// Options of the `/stats` body.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOptions {
    /// `?histograms=recorded`: list the recorded values of the `totals` histograms.
    pub recorded: bool,
}

/// A keyed counter list as a sorted JSON object.
pub(super) fn json_map<K: Key, T: Tally>(counts: &Counts<K, T>) -> BTreeMap<&'static str, T> {
    counts.iter().map(|(k, v)| (k.name(), v)).collect()
}

impl JsonTallies {
    /// The JSON view of one shard's (or the merged) tallies and latencies; `recorded`
    /// lists the histograms' buckets too.
    pub(super) fn of(s: &Tallies, l: &Latencies<Recorded>, recorded: bool) -> Self {
        JsonTallies {
            connections: ConnKind::ALL
                .iter()
                .map(|&k| (k.name(), s.connections(k)))
                .collect(),
            accepted: s.accepted,
            handoffs: s.handoffs,
            adopted: s.adopted,
            rejected: json_map(&s.rejected),
            messages_in: s.messages_in,
            messages_out: s.messages_out,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            dropped: json_map(&s.dropped),
            events: json_map(&s.events),
            gauges: json_map(&s.gauges),
            histograms: JsonHistograms {
                forward: JsonHistogram::of(&l.forward, recorded),
                handshake: JsonHistogram::of(&l.handshake, recorded),
                handoff: JsonHistogram::of(&l.handoff, recorded),
            },
            forward_by_mode: l
                .forward_by_mode
                .iter()
                .map(|(mode, r)| (mode.name(), JsonHistogram::of(r, recorded)))
                .collect(),
        }
    }
}

/// The /stats body.
pub fn render_json(uptime_seconds: u64, per_shard: &[StatsReport]) -> String {
    render_json_with(uptime_seconds, per_shard, JsonOptions::default())
}

/// The /stats body, with options. Totals are the exact bucket-wise sums of the shards'
/// recorded buckets, so their quantiles are those of one merged HDR histogram.
pub fn render_json_with(
    uptime_seconds: u64,
    per_shard: &[StatsReport],
    options: JsonOptions,
) -> String {
    let mut tallies = Tallies::empty();
    for r in per_shard {
        tallies.absorb(&r.tallies);
    }
    let parts: Vec<&Latencies<Recorded>> = per_shard.iter().map(|r| &r.latencies).collect();
    let latencies = Latencies::merge(&parts);
    let body = JsonBody {
        uptime_seconds,
        shards: per_shard.len(),
        totals: JsonTallies::of(&tallies, &latencies, options.recorded),
        per_shard: per_shard
            .iter()
            .map(|r| JsonShard {
                shard: r.tallies.shard,
                tallies: JsonTallies::of(&r.tallies, &r.latencies, false),
            })
            .collect(),
        allocations: allocations(),
        memory: JsonMemory::now(),
    };
    // Cannot fail: serde_json errors only when a Serialize impl reports one or a map key
    // is not a string; these derived structs hold integers, finite-or-null floats and
    // maps keyed by `&str`.
    serde_json::to_string(&body).expect("stats JSON serialises")
}

impl JsonTallies {
    /// The JSON view of tallies with histogram summaries already made.
    pub(super) fn with_summaries(s: &Tallies, l: Latencies<JsonHistogram>) -> Self {
        let mut out = JsonTallies::of(s, &Latencies::empty_recorded(), false);
        out.histograms = JsonHistograms {
            forward: l.forward,
            handshake: l.handshake,
            handoff: l.handoff,
        };
        out.forward_by_mode = l
            .forward_by_mode
            .into_iter()
            .map(|(m, h)| (m.name(), h))
            .collect();
        out
    }
}
