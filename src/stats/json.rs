//! JSON: the `/stats` body, built as the typed model of `shardrelay-stats-model`.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use shardrelay_stats_model as model;

use super::*;

// The body's structs are the typed model of `shardrelay-stats-model` (one model for the
// relay, which serialises it, and for every client, which deserialises it); the aliases
// keep this module's names.

/// The `/stats` body.
pub(super) type JsonBody = model::Stats;
/// One entry of `per_shard`.
pub(super) type JsonShard = model::ShardTallies;
/// The keys shared by `totals` and each `per_shard` entry.
pub(super) type JsonTallies = model::Tallies;
/// A histogram's summary.
pub(super) type JsonHistogram = model::Histogram;

/// The memory budget as it stands.
pub(super) fn memory_now() -> model::Memory {
    model::Memory {
        used_bytes: crate::memory::used() as u64,
        limit_bytes: crate::memory::limit() as u64,
    }
}

/// The allocation counts, when this build counts them.
pub(super) fn allocations() -> Option<model::Allocations> {
    #[cfg(feature = "alloc-count")]
    {
        let (count, bytes) = crate::alloc_count::allocations();
        Some(model::Allocations { count, bytes })
    }
    #[cfg(not(feature = "alloc-count"))]
    None
}

/// Summarise `r` exactly as `Histogram`'s own methods would summarise the same buckets
/// (min is the lowest bucket's lowest value, the mean uses each bucket's median value);
/// with `recorded`, also list the buckets.
pub(super) fn summary(r: &Recorded, recorded: bool) -> JsonHistogram {
    if let Some(h) = &r.dense {
        return summary_of_histogram(h, recorded);
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

/// Summarise a whole histogram with its own methods; with `recorded`, list its buckets
/// too.
pub(super) fn summary_of_histogram(h: &Histogram<u64>, recorded: bool) -> JsonHistogram {
    let list = recorded.then(|| {
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    });
    if h.is_empty() {
        return summary(&Recorded::default(), recorded);
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

/// Options of the `/stats` body.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOptions {
    /// `?histograms=recorded`: list the recorded values of the `totals` histograms.
    pub recorded: bool,
}

/// A keyed counter list as a JSON object (sorted by name: the keys order by name).
pub(super) fn json_map<K: Key + Ord, T: Tally>(counts: &Counts<K, T>) -> BTreeMap<K, T> {
    counts.iter().collect()
}

/// The JSON view of one shard's (or the merged) tallies and latencies; `recorded` lists
/// the histograms' buckets too.
pub(super) fn json_tallies(s: &Tallies, l: &Latencies<Recorded>, recorded: bool) -> JsonTallies {
    JsonTallies {
        connections: ConnKind::ALL
            .iter()
            .map(|&k| (k, s.connections(k)))
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
        histograms: model::Histograms {
            forward: summary(&l.forward, recorded),
            handshake: summary(&l.handshake, recorded),
            handoff: summary(&l.handoff, recorded),
        },
        forward_by_mode: l
            .forward_by_mode
            .iter()
            .map(|(mode, r)| (*mode, summary(r, recorded)))
            .collect(),
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
        shards: per_shard.len() as u64,
        totals: json_tallies(&tallies, &latencies, options.recorded),
        per_shard: per_shard
            .iter()
            .map(|r| JsonShard {
                shard: r.tallies.shard as u64,
                tallies: json_tallies(&r.tallies, &r.latencies, false),
            })
            .collect(),
        allocations: allocations(),
        memory: memory_now(),
    };
    // Cannot fail: serde_json errors only when a Serialize impl reports one or a map key
    // is not a string; the model holds integers, finite-or-null floats and maps keyed by
    // enums that serialise as their names.
    serde_json::to_string(&body).expect("stats JSON serialises")
}

/// The JSON view of tallies with histogram summaries already made.
pub(super) fn json_tallies_with(s: &Tallies, l: Latencies<JsonHistogram>) -> JsonTallies {
    let mut out = json_tallies(s, &Latencies::empty_recorded(), false);
    out.histograms = model::Histograms {
        forward: l.forward,
        handshake: l.handshake,
        handoff: l.handoff,
    };
    out.forward_by_mode = l.forward_by_mode.into_iter().collect();
    out
}
