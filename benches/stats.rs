//! Cost of the stats hot path: what every relayed message pays (`message_in`,
//! `message_out`, `record_forward`), plus the per-scrape cost of snapshot and rendering.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardrelay::stats::{
    render_json, render_prometheus, Dropped, Event, ShardStats, StatsPlan, StatsSnapshot, Style,
    CELLS,
};

/// Latencies cycled through so the histogram index is not a constant (µs, 1 .. ~60 ms).
fn latencies() -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..1024)
        .map(|_| {
            // xorshift: cheap, deterministic spread across histogram buckets.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + x % 60_000
        })
        .collect()
}

/// A shard that has already seen its modes, as in steady state.
fn warm_shard() -> ShardStats {
    let mut s = ShardStats::new(0);
    for mode in [Style::ServerId, Style::Pair, Style::Session] {
        s.record_forward(mode, 10);
    }
    // A few reasons and events already counted, as on a relay that has run a while.
    for reason in [
        Dropped::UnknownConnId,
        Dropped::TextInPair,
        Dropped::PhoneBacklogFull,
    ] {
        s.dropped(reason);
    }
    for event in [Event::PairsCreated, Event::PairsMatched, Event::NotReading] {
        s.event(event);
    }
    s
}

/// One record per iteration of each hot-path call.
fn hot_path(c: &mut Criterion) {
    let lat = latencies();
    let mut g = c.benchmark_group("stats");
    g.throughput(Throughput::Elements(1));
    let mut s = warm_shard();
    let mut i = 0usize;
    g.bench_function("message_in", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            s.message_in(black_box(i & 0xfff));
        })
    });
    g.bench_function("record_forward", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            // The last of three modes: the worst case of the linear mode search.
            s.record_forward(black_box(Style::Session), black_box(lat[i]));
        })
    });
    g.bench_function("relayed_message", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            s.message_in(black_box(100));
            s.record_forward(black_box(Style::ServerId), black_box(lat[i]));
            s.message_out(black_box(100));
        })
    });
    g.bench_function("dropped", |b| {
        // The last reason counted: the worst case of the old by-name search.
        b.iter(|| s.dropped(black_box(Dropped::PhoneBacklogFull)))
    });
    g.bench_function("event", |b| {
        b.iter(|| s.event(black_box(Event::NotReading)))
    });
    g.finish();
}

/// A shard that has recorded `n` forward and handshake latencies spread over 1 µs .. 60 ms
/// (the "old relay" of #20 point 2), or none.
fn shard_with(n: usize) -> ShardStats {
    let lat = latencies();
    let mut s = warm_shard();
    for i in 0..n {
        // Spread over the whole range and every sub-bucket: value = lat * (1 + i % 97).
        let v = lat[i & 1023] * (1 + (i as u64 % 97)) % 60_000_000;
        s.record_forward([Style::Pair, Style::ServerId, Style::Session][i % 3], v);
        s.record_handshake(v / 3);
    }
    s
}

/// Bytes one report puts across shards: the struct plus what its vectors own.
fn stats_report_bytes(s: &ShardStats) -> usize {
    let r = s.stats_report();
    let l = &r.latencies;
    let buckets = l.forward.buckets.len()
        + l.handshake.buckets.len()
        + l.handoff.buckets.len()
        + l.forward_by_mode
            .iter()
            .map(|(_, r)| r.buckets.len())
            .sum::<usize>();
    std::mem::size_of_val(&r) + 16 * buckets + 24 * l.forward_by_mode.len()
}

/// Bytes the old full snapshot put across shards: every HDR histogram's count array.
fn snapshot_bytes(s: &ShardStats) -> usize {
    let snap = s.snapshot();
    let hist = |h: &hdrhistogram::Histogram<u64>| h.distinct_values() * 8;
    std::mem::size_of_val(&snap)
        + hist(&snap.forward)
        + hist(&snap.handshake)
        + hist(&snap.handoff)
        + snap
            .forward_by_mode
            .iter()
            .map(|(_, h)| hist(h))
            .sum::<usize>()
}

/// What one `/stats` or `/metrics` request costs per shard (2 shards), for a fresh relay
/// and for one that has recorded millions of wide-range values.
fn scrape(c: &mut Criterion) {
    for (label, n) in [("fresh", 0usize), ("3M_wide", 3_000_000)] {
        let shards = [shard_with(n), shard_with(n)];
        let m = shards[0].metrics_report();
        let metrics_bytes = std::mem::size_of_val(&m)
            + m.latencies.forward_by_mode.len() * std::mem::size_of_val(&m.latencies.forward);
        let plan = StatsPlan::new(vec![shards[0].coarse_report()]);
        let asked = plan.asked().len();
        eprintln!(
            "{label}: per shard, old snapshot {} B, recorded report {} B, metrics report {} B, \
             two-round stats {} B + {} B",
            snapshot_bytes(&shards[0]),
            stats_report_bytes(&shards[0]),
            metrics_bytes,
            std::mem::size_of::<shardrelay::stats::CoarseReport>() + 6 * (CELLS * 8 + 96),
            asked * 64 * 8,
        );
        let stats = [shards[0].stats_report(), shards[1].stats_report()];
        let metrics = [shards[0].metrics_report(), shards[1].metrics_report()];
        let mut g = c.benchmark_group(format!("scrape_{label}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("old_snapshot_clone", |b| {
            b.iter(|| black_box(shards[0].snapshot()))
        });
        // What the old path did per `/stats` beyond the clones: merge whole histograms.
        let snaps = [shards[0].snapshot(), shards[1].snapshot()];
        g.bench_function("old_merge_2_shards", |b| {
            b.iter(|| black_box(StatsSnapshot::merge(&snaps)))
        });
        g.bench_function("stats_report", |b| {
            b.iter(|| black_box(shards[0].stats_report()))
        });
        g.bench_function("coarse_report", |b| {
            b.iter(|| black_box(shards[0].coarse_report()))
        });
        // A whole plain `/stats` of 2 shards: both rounds and the render.
        g.bench_function("two_round_stats_2_shards", |b| {
            b.iter(|| {
                let plan =
                    StatsPlan::new(vec![shards[0].coarse_report(), shards[1].coarse_report()]);
                let asked = plan.asked();
                let fine = [shards[0].fine_counts(&asked), shards[1].fine_counts(&asked)];
                black_box(plan.render(1, &fine))
            })
        });
        g.bench_function("metrics_report", |b| {
            b.iter(|| black_box(shards[0].metrics_report()))
        });
        g.bench_function("render_json_2_shards", |b| {
            b.iter(|| black_box(render_json(1, &stats)))
        });
        g.bench_function("render_prometheus_2_shards", |b| {
            b.iter(|| black_box(render_prometheus(1, &metrics)))
        });
        g.finish();
    }
}

criterion_group!(benches, hot_path, scrape);
criterion_main!(benches);
