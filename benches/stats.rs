//! Cost of the stats hot path: what every relayed message pays (`message_in`,
//! `message_out`, `record_forward`), plus the per-scrape cost of snapshot and rendering.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardrelay::stats::{render_json, render_prometheus, ShardStats};

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
    for mode in ["server_id", "pair", "session"] {
        s.record_forward(mode, 10);
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
            s.record_forward(black_box("session"), black_box(lat[i]));
        })
    });
    g.bench_function("relayed_message", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            s.message_in(black_box(100));
            s.record_forward(black_box("server_id"), black_box(lat[i]));
            s.message_out(black_box(100));
        })
    });
    g.finish();
}

/// What one `/stats` or `/metrics` request costs per shard (2 shards).
fn scrape(c: &mut Criterion) {
    let lat = latencies();
    let mut shards = [warm_shard(), warm_shard()];
    for (n, s) in shards.iter_mut().enumerate() {
        for &v in &lat {
            s.record_forward("pair", v + n as u64);
            s.record_handshake(v);
        }
    }
    let snaps = [shards[0].snapshot(), shards[1].snapshot()];
    let mut g = c.benchmark_group("scrape");
    g.throughput(Throughput::Elements(1));
    g.bench_function("snapshot", |b| b.iter(|| black_box(shards[0].snapshot())));
    g.bench_function("render_json_2_shards", |b| {
        b.iter(|| black_box(render_json(1, &snaps)))
    });
    g.bench_function("render_prometheus_2_shards", |b| {
        b.iter(|| black_box(render_prometheus(1, &snaps)))
    });
    g.finish();
}

criterion_group!(benches, hot_path, scrape);
criterion_main!(benches);
