//! Unit tests of counting and both renderings.

use super::*;
use serde_json::Value;

/// A shard with a bit of everything recorded.
fn busy_shard(id: usize) -> ShardStats {
    let mut s = ShardStats::new(id);
    s.accepted();
    s.accepted();
    s.handed_off();
    s.adopted();
    s.rejected(Rejected::NotFound);
    s.rejected(Rejected::NotFound);
    s.rejected(Rejected::HeadTooLarge);
    s.dropped(Dropped::UnknownConnId);
    s.event(Event::CodesMinted);
    s.gauge_add(Gauge::Pairs, 3);
    s.gauge_add(Gauge::Pairs, -1);
    s.conn_opened(ConnKind::Binary);
    s.conn_opened(ConnKind::Phone);
    s.conn_opened(ConnKind::Phone);
    s.message_in(100);
    s.message_out(40);
    s.message_out(60);
    s.record_forward(Style::ServerId, 10);
    s.record_forward(Style::ServerId, 20);
    s.record_forward(Style::Pair, 1000);
    s.record_handshake(500);
    s.record_handoff(7);
    s
}

#[test]
fn conn_kind_names_are_distinct_and_indexed_in_order() {
    for (i, k) in ConnKind::ALL.iter().enumerate() {
        assert_eq!(k.index(), i);
    }
    let mut names: Vec<_> = ConnKind::ALL.iter().map(|k| k.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CONN_KINDS);
    assert_eq!(ConnKind::SessionBrowser.name(), "session_browser");
}

#[test]
fn counters_and_histograms_land_in_the_snapshot() {
    let s = busy_shard(3);
    let snap = s.snapshot();
    assert_eq!(snap.shard, 3);
    assert_eq!(snap.shards, 1);
    assert_eq!(snap.accepted, 2);
    assert_eq!(snap.handoffs, 1);
    assert_eq!(snap.adopted, 1);
    assert_eq!(snap.rejected.get(Rejected::NotFound), 2);
    assert_eq!(snap.rejected.get(Rejected::HeadTooLarge), 1);
    assert_eq!(snap.dropped.get(Dropped::UnknownConnId), 1);
    assert_eq!(snap.events.get(Event::CodesMinted), 1);
    assert_eq!(snap.gauge(Gauge::Pairs), 2);
    assert_eq!(snap.gauge(Gauge::Sessions), 0);
    assert_eq!(s.gauge(Gauge::Pairs), 2);
    assert_eq!(snap.connections(ConnKind::Phone), 2);
    assert_eq!(s.connections(ConnKind::Binary), 1);
    assert_eq!(snap.connections(ConnKind::Echo), 0);
    assert_eq!((snap.messages_in, snap.bytes_in), (1, 100));
    assert_eq!((snap.messages_out, snap.bytes_out), (2, 100));
    assert_eq!(snap.forward.len(), 3);
    assert_eq!((snap.forward.min(), snap.forward.max()), (10, 1000));
    assert_eq!(snap.forward_by_mode.len(), 2);
    assert_eq!(snap.forward_by_mode[0].0, Style::ServerId);
    assert_eq!(snap.forward_by_mode[0].1.len(), 2);
    assert_eq!(snap.forward_by_mode[1].1.max(), 1000);
    assert_eq!((snap.handshake.len(), snap.handshake.max()), (1, 500));
    assert_eq!((snap.handoff.len(), snap.handoff.max()), (1, 7));
}

#[test]
fn counts_list_keys_in_first_counted_order_and_absorb_by_key() {
    let mut a: Counts<Rejected, u64> = Counts::new();
    a.add(Rejected::PairFull, 1);
    a.add(Rejected::NotFound, 2);
    a.add(Rejected::PairFull, 1);
    let order: Vec<_> = a.iter().collect();
    assert_eq!(order, [(Rejected::PairFull, 2), (Rejected::NotFound, 2)]);
    assert!(!a.contains(Rejected::Unauthorized));
    assert_eq!(a.get(Rejected::Unauthorized), 0);
    let mut b: Counts<Rejected, u64> = Counts::new();
    b.add(Rejected::Unauthorized, 1);
    b.absorb(&a);
    let order: Vec<_> = b.iter().map(|(k, _)| k).collect();
    assert_eq!(
        order,
        [
            Rejected::Unauthorized,
            Rejected::PairFull,
            Rejected::NotFound
        ]
    );
    let mut g: Counts<Gauge, i64> = Counts::new();
    g.add(Gauge::Pairs, 1);
    g.add(Gauge::Pairs, -1);
    assert!(
        g.contains(Gauge::Pairs),
        "a gauge back at zero is still listed"
    );
    assert_eq!(g.iter().collect::<Vec<_>>(), [(Gauge::Pairs, 0)]);
}

#[test]
fn conn_closed_saturates_at_zero() {
    let mut s = ShardStats::new(0);
    s.conn_closed(ConnKind::Echo);
    assert_eq!(s.connections(ConnKind::Echo), 0);
    s.conn_opened(ConnKind::Echo);
    s.conn_closed(ConnKind::Echo);
    s.conn_closed(ConnKind::Echo);
    assert_eq!(s.connections(ConnKind::Echo), 0);
}

#[test]
fn out_of_range_latencies_clamp_instead_of_failing() {
    let mut s = ShardStats::new(0);
    s.record_forward(Style::Echo, u64::MAX);
    s.record_handshake(0);
    s.record_handoff(HIST_HIGH_MICROS * 10);
    let snap = s.snapshot();
    assert_eq!(snap.forward.len(), 1);
    assert!(snap
        .forward
        .equivalent(snap.forward.max(), HIST_HIGH_MICROS));
    assert!(snap
        .handoff
        .equivalent(snap.handoff.max(), HIST_HIGH_MICROS));
    assert_eq!((snap.handshake.len(), snap.handshake.max()), (1, 0));
}

#[test]
fn steady_state_recording_does_not_grow_any_buffer() {
    let mut s = ShardStats::new(0);
    s.record_forward(Style::Pair, 5);
    s.rejected(Rejected::NotFound);
    s.dropped(Dropped::TextInPair);
    s.event(Event::NotReading);
    let modes_cap = s.live.forward_by_mode.capacity();
    let rejected_cap = s.live.rejected.order.capacity();
    let keyed_caps = (
        s.live.dropped.order.capacity(),
        s.live.events.order.capacity(),
    );
    let slots = s.live.forward.distinct_values();
    let mode_slots = s.live.forward_by_mode[0].1.distinct_values();
    for v in [0, 1, 999, 123_456, HIST_HIGH_MICROS, u64::MAX] {
        s.record_forward(Style::Pair, v);
        s.message_in(v as usize);
        s.message_out(7);
        s.rejected(Rejected::NotFound);
        s.dropped(Dropped::TextInPair);
        s.event(Event::NotReading);
    }
    assert_eq!(s.live.forward_by_mode.capacity(), modes_cap);
    assert_eq!(s.live.rejected.order.capacity(), rejected_cap);
    let caps = (
        s.live.dropped.order.capacity(),
        s.live.events.order.capacity(),
    );
    assert_eq!(caps, keyed_caps);
    assert_eq!(s.live.forward.distinct_values(), slots);
    assert_eq!(s.live.forward_by_mode[0].1.distinct_values(), mode_slots);
}

#[test]
fn merge_sums_counters_and_merges_histograms() {
    let a = busy_shard(0);
    let mut b = busy_shard(1);
    b.rejected(Rejected::OverCapacity);
    b.record_forward(Style::Echo, 40_000);
    b.record_handshake(3);
    b.gauge_add(Gauge::Sessions, 5);
    b.conn_closed(ConnKind::Phone);
    let total = StatsSnapshot::merge(&[a.snapshot(), b.snapshot()]);
    assert_eq!(total.shards, 2);
    assert_eq!(total.accepted, 4);
    assert_eq!(total.handoffs, 2);
    assert_eq!(total.adopted, 2);
    assert_eq!(total.rejected.get(Rejected::NotFound), 4);
    assert_eq!(total.rejected.get(Rejected::OverCapacity), 1);
    assert_eq!(total.dropped.get(Dropped::UnknownConnId), 2);
    assert_eq!(total.gauge(Gauge::Pairs), 4);
    assert_eq!(total.gauge(Gauge::Sessions), 5);
    assert_eq!(total.connections(ConnKind::Phone), 3);
    assert_eq!((total.bytes_in, total.bytes_out), (200, 200));
    assert_eq!(total.forward.len(), 7);
    assert!(total.forward.equivalent(total.forward.max(), 40_000));
    assert_eq!(total.forward.min(), 10);
    assert_eq!((total.handshake.len(), total.handshake.min()), (3, 3));
    assert_eq!(total.handshake.max(), 500);
    let mode = |m: Style| {
        let (_, h) = total.forward_by_mode.iter().find(|(k, _)| *k == m).unwrap();
        (h.len(), h.max())
    };
    assert_eq!(mode(Style::ServerId), (4, 20));
    assert_eq!(mode(Style::Pair), (2, 1000));
    assert_eq!(mode(Style::Echo).0, 1);
}

#[test]
fn merge_of_nothing_is_empty() {
    let total = StatsSnapshot::merge(&[]);
    assert_eq!(
        (total.shards, total.accepted, total.forward.len()),
        (0, 0, 0)
    );
}

#[test]
fn recorded_lists_only_in_totals_and_only_when_asked() {
    let snaps = [busy_shard(0).stats_report(), busy_shard(1).stats_report()];
    let plain: Value = serde_json::from_str(&render_json(1, &snaps)).unwrap();
    assert!(plain["totals"]["histograms"]["forward"]
        .get("recorded")
        .is_none());
    let options = JsonOptions { recorded: true };
    let v: Value = serde_json::from_str(&render_json_with(1, &snaps, options)).unwrap();
    let recorded = &v["totals"]["histograms"]["forward"]["recorded"];
    // busy_shard records forward 10, 20 and 1000 µs; two shards.
    assert_eq!(recorded, &serde_json::json!([[10, 2], [20, 2], [1000, 2]]));
    assert_eq!(
        v["totals"]["forward_by_mode"]["pair"]["recorded"],
        serde_json::json!([[1000, 2]])
    );
    assert!(v["per_shard"][0]["histograms"]["forward"]
        .get("recorded")
        .is_none());
}

#[test]
fn reset_empties_the_stats_view_but_not_what_metrics_export() {
    let mut s = busy_shard(0);
    let before = s.snapshot().forward.len();
    s.reset_histograms();
    let report = s.stats_report();
    assert_eq!(report.tallies.accepted, 2);
    assert_eq!(report.tallies.messages_out, 2);
    assert_eq!(report.tallies.rejected.get(Rejected::NotFound), 2);
    assert_eq!(report.tallies.connections(ConnKind::Phone), 2);
    let l = &report.latencies;
    assert!(l.forward.buckets.is_empty() && l.handshake.buckets.is_empty());
    assert!(l.handoff.buckets.is_empty());
    assert_eq!(l.forward_by_mode.len(), 2, "mode histograms are kept");
    assert!(l.forward_by_mode.iter().all(|(_, r)| r.buckets.is_empty()));
    assert_eq!(
        s.metrics_report().latencies.forward.count,
        before,
        "the exported histogram keeps its samples"
    );
    s.record_forward(Style::Pair, 9);
    s.record_forward(Style::Echo, 5); // a mode first seen after the reset
    let reports = [s.stats_report(), busy_shard(1).stats_report()];
    let v: Value = serde_json::from_str(&render_json(1, &reports)).unwrap();
    assert_eq!(
        v["totals"]["histograms"]["forward"]["count"].as_u64(),
        Some(2 + before),
        "two new samples plus shard 1's"
    );
    assert_eq!(v["totals"]["forward_by_mode"]["pair"]["count"], 2);
    assert_eq!(v["per_shard"][0]["forward_by_mode"]["pair"]["count"], 1);
    assert_eq!(v["per_shard"][0]["forward_by_mode"]["echo"]["count"], 1);
    assert_eq!(
        v["per_shard"][0]["forward_by_mode"]["server_id"]["count"],
        0
    );
    let metrics = s.metrics_report();
    assert_eq!(metrics.latencies.forward.count, before + 2);
}

/// Point 2 of #20: what crosses shards per `/stats` or `/metrics` read does not grow
/// with the number of samples recorded; for `/metrics` it is fixed whatever the
/// values, for `/stats` it grows only with the distinct buckets hit.
#[test]
fn scale_reports_do_not_grow_with_traffic_history() {
    let fresh = busy_shard(0);
    let mut old = busy_shard(0);
    for i in 0..1_000_000u64 {
        old.record_forward(Style::Pair, 10 + i % 3);
    }
    let (a, b) = (fresh.metrics_report(), old.metrics_report());
    assert_eq!(
        std::mem::size_of_val(&a.latencies.forward),
        std::mem::size_of_val(&b.latencies.forward)
    );
    assert_eq!(b.latencies.forward.count, 1_000_003);
    let (a, b) = (fresh.stats_report(), old.stats_report());
    assert_eq!(a.latencies.forward.buckets.len(), 3, "10, 20 and 1000 µs");
    assert!(a.latencies.forward.dense.is_none());
    assert!(a.latencies.handoff.dense.is_none());
    // Past SPARSE_MAX_SAMPLES the histogram crosses whole (the one cost that still
    // follows the history; see the module notes).
    assert!(b.latencies.forward.dense.is_some());
    assert_eq!(b.latencies.forward.count(), 1_000_003);
    let mut few = busy_shard(0);
    for i in 0..1_000u64 {
        few.record_forward(Style::Pair, 10 + i % 3);
    }
    let r = few.stats_report();
    assert_eq!(r.latencies.forward.buckets.len(), 5, "plus 11 and 12 µs");
    assert_eq!(r.latencies.forward.count(), 1_003);
}

/// Point 2 of #20: the reduced reports render exactly what the full HDR histograms
/// say — quantiles, min, max and mean of merged shards, and Prometheus buckets.
#[test]
fn scale_reports_render_what_the_full_histograms_say() {
    // 3,000 samples a shard cross as bucket lists, 20,000 as whole histograms, and
    // 3,000 + 20,000 mixes the two; every way must match the merged HDR histogram.
    for (n0, n1) in [(3_000, 3_000), (20_000, 20_000), (3_000, 20_000)] {
        check_reports_match_histograms(n0, n1);
    }
}

/// Shard 0 records `n0` wide-range samples, shard 1 `n1`; the rendered totals must be
/// the merged HDR histogram's figures.
fn check_reports_match_histograms(n0: usize, n1: usize) {
    let lat = |seed: u64, n: usize| {
        let mut x = seed;
        (0..n).map(move |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + x % 5_000_000
        })
    };
    let mut shards = [ShardStats::new(0), ShardStats::new(1)];
    for (n, s) in shards.iter_mut().enumerate() {
        for v in lat(0x9E37_79B9 + n as u64, [n0, n1][n]) {
            s.record_forward(Style::Pair, v);
            s.record_handshake(v / 7);
        }
    }
    let merged = StatsSnapshot::merge(&[shards[0].snapshot(), shards[1].snapshot()]);
    let reports = [shards[0].stats_report(), shards[1].stats_report()];
    let v: Value = serde_json::from_str(&render_json(1, &reports)).unwrap();
    for (name, h) in [
        ("forward", &merged.forward),
        ("handshake", &merged.handshake),
    ] {
        let j = &v["totals"]["histograms"][name];
        assert_eq!(j["count"].as_u64(), Some(h.len()), "{name}");
        assert_eq!(j["min"].as_u64(), Some(h.min()), "{name}");
        assert_eq!(j["max"].as_u64(), Some(h.max()), "{name}");
        for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
            assert_eq!(
                j[key].as_u64(),
                Some(h.value_at_quantile(q)),
                "{name} {key}"
            );
        }
        let mean = (h.mean() * 100.0).round() / 100.0;
        assert!((j["mean"].as_f64().unwrap() - mean).abs() < 0.011, "{name}");
    }
    let body = render_prometheus(1, &[shards[0].metrics_report()]);
    let s = scrape(&body);
    let b = histogram_buckets(&s, "shardrelay_forward_latency_seconds", &[]);
    let values: Vec<u64> = lat(0x9E37_79B9, n0).collect();
    for (le, count) in b {
        let want = if le.is_finite() {
            let micros = (le * MICROS_PER_SECOND).round() as u64;
            values.iter().filter(|&&v| v <= micros).count()
        } else {
            values.len()
        };
        assert_eq!(count, want as f64, "le={le}");
    }
    let sum: u64 = values.iter().sum();
    let got = sample_value(&s, "shardrelay_forward_latency_seconds_sum", &[]);
    assert!((got - sum as f64 / MICROS_PER_SECOND).abs() < 1e-6, "{got}");
}

/// Plain `/stats` through the two bounded rounds, as `shard::admin` runs them.
fn two_rounds(shards: &[&ShardStats]) -> Value {
    let plan = StatsPlan::new(shards.iter().map(|s| s.coarse_report()).collect());
    let asked = plan.asked();
    assert!(asked.len() <= 6 * (3 + 3), "at most 6 cells per histogram");
    let fine: Vec<_> = shards.iter().map(|s| s.fine_counts(&asked)).collect();
    serde_json::from_str(&plan.render(1, &fine)).unwrap()
}

/// #20 point 2: the bounded two-round `/stats` gives the merged HDR histogram's
/// exact figures for totals, and each shard's own for `per_shard`, with and without
/// a reset mark, for narrow and wide value ranges.
#[test]
fn scale_two_round_stats_totals_are_the_merged_histograms_figures() {
    for (n, spread) in [(50usize, 40u64), (20_000, 5_000_000), (3_000, 60_000_000)] {
        let mut shards = [busy_shard(0), busy_shard(1)];
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ spread;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        shards[1].reset_histograms(); // shard 1 reports since a mark
        for (i, s) in shards.iter_mut().enumerate() {
            for _ in 0..n * (i + 1) {
                let v = 1 + next() % spread;
                s.record_forward([Style::Pair, Style::Echo][(v % 2) as usize], v);
                s.record_handshake(v / 3);
            }
        }
        let v = two_rounds(&[&shards[0], &shards[1]]);
        // The reference: shard 0 whole, shard 1 minus its mark, merged by HDR.
        let mut want = StatsSnapshot::merge(&[shards[0].snapshot()]);
        let one = shards[1].snapshot();
        for id in [
            HistId::Forward,
            HistId::Handshake,
            HistId::Mode(Style::Pair),
        ] {
            let mine = one.since_view(id).unwrap();
            let total = match id {
                HistId::Forward => &mut want.forward,
                HistId::Handshake => &mut want.handshake,
                _ => want.mode_histogram(Style::Pair),
            };
            merge_histogram(total, &mine);
        }
        let pair = want.mode_histogram(Style::Pair).clone();
        let checks = [
            (&v["totals"]["histograms"]["forward"], &want.forward),
            (&v["totals"]["histograms"]["handshake"], &want.handshake),
            (&v["totals"]["forward_by_mode"]["pair"], &pair),
        ];
        for (j, h) in checks {
            let ctx = format!("n={n} spread={spread} {j}");
            assert_eq!(j["count"].as_u64(), Some(h.len()), "{ctx}");
            assert_eq!(j["min"].as_u64(), Some(h.min()), "{ctx}");
            assert_eq!(j["max"].as_u64(), Some(h.max()), "{ctx}");
            for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
                assert_eq!(j[key].as_u64(), Some(h.value_at_quantile(q)), "{key} {ctx}");
            }
            // The mean is exact (sum ÷ count); HDR's uses bucket medians, so the two
            // agree within the buckets' 0.1 %.
            let mean = j["mean"].as_f64().unwrap();
            assert!((mean - h.mean()).abs() <= 0.01 + h.mean() * 1e-3, "{ctx}");
        }
        let own = shards[1].snapshot();
        let fwd = own.since_view(HistId::Forward).unwrap();
        assert_eq!(
            v["per_shard"][1]["histograms"]["forward"]["p99"].as_u64(),
            Some(fwd.value_at_quantile(0.99))
        );
        assert_eq!(v["per_shard"][0]["accepted"], 2);
        assert_eq!(v["totals"]["accepted"], 4);
    }
    // Nothing recorded: zeros, and round 2 asks for nothing.
    let fresh = ShardStats::new(0);
    let plan = StatsPlan::new(vec![fresh.coarse_report()]);
    assert!(plan.asked().is_empty());
    let v: Value = serde_json::from_str(&plan.render(0, &[])).unwrap();
    assert_eq!(v["totals"]["histograms"]["forward"]["count"], 0);
    assert_eq!(v["totals"]["histograms"]["forward"]["p99"], 0);
}

/// The coarse cells tile the HDR buckets: each cell is 64 buckets of one width, and
/// cells follow each other without gap up to the 60 s ceiling.
#[test]
fn scale_coarse_cells_tile_the_hdr_buckets() {
    let h = scale();
    let mut next = 0u64;
    for cell in 0..CELLS {
        let (start, width) = cell_start(cell);
        assert_eq!(start, next, "cell {cell}");
        for b in 0..CELL_BUCKETS as u64 {
            let v = start + b * width;
            assert_eq!(h.lowest_equivalent(v), v, "cell {cell} bucket {b}");
            assert_eq!(
                h.highest_equivalent(v),
                v + width - 1,
                "cell {cell} bucket {b}"
            );
        }
        next = start + width * CELL_BUCKETS as u64;
    }
    assert!(next > HIST_HIGH_MICROS);
}

#[test]
fn snapshot_is_send_and_clone() {
    fn assert_send_clone<T: Send + Clone + 'static>() {}
    assert_send_clone::<StatsSnapshot>();
}

/// Keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// The keys `totals` and every `per_shard` entry carry (pinned: this is the contract).
const TALLY_KEYS: [&str; 14] = [
    "accepted",
    "adopted",
    "bytes_in",
    "bytes_out",
    "connections",
    "dropped",
    "events",
    "forward_by_mode",
    "gauges",
    "handoffs",
    "histograms",
    "messages_in",
    "messages_out",
    "rejected",
];

/// The keys of every histogram object.
const HIST_KEYS: [&str; 8] = ["count", "max", "mean", "min", "p50", "p90", "p99", "p999"];

#[test]
fn json_has_exactly_the_contract_shape() {
    let snaps = [busy_shard(0).stats_report(), busy_shard(1).stats_report()];
    let v: Value = serde_json::from_str(&render_json(42, &snaps)).unwrap();
    // `allocations` exists only in the counting build (`--features alloc-count`).
    let mut top = vec!["memory", "per_shard", "shards", "totals", "uptime_seconds"];
    if cfg!(feature = "alloc-count") {
        top.insert(0, "allocations");
        assert_eq!(keys(&v["allocations"]), ["bytes", "count"]);
    }
    assert_eq!(keys(&v["memory"]), ["limit_bytes", "used_bytes"]);
    assert_eq!(keys(&v), top);
    assert_eq!(v["uptime_seconds"], 42);
    assert_eq!(v["shards"], 2);
    assert_eq!(keys(&v["totals"]), TALLY_KEYS);
    let per_shard = v["per_shard"].as_array().unwrap();
    assert_eq!(per_shard.len(), 2);
    let mut with_shard = TALLY_KEYS.to_vec();
    with_shard.push("shard");
    with_shard.sort_unstable();
    for (i, s) in per_shard.iter().enumerate() {
        assert_eq!(s["shard"], i);
        assert_eq!(keys(s), with_shard);
    }
    for scope in [&v["totals"], &per_shard[0]] {
        let kinds: Vec<&str> = ConnKind::ALL.iter().map(|k| k.name()).collect();
        let mut kinds_sorted = kinds.clone();
        kinds_sorted.sort_unstable();
        assert_eq!(keys(&scope["connections"]), kinds_sorted);
        assert_eq!(
            keys(&scope["histograms"]),
            ["forward", "handoff", "handshake"]
        );
        for h in ["forward", "handoff", "handshake"] {
            assert_eq!(keys(&scope["histograms"][h]), HIST_KEYS);
        }
        assert_eq!(keys(&scope["forward_by_mode"]), ["pair", "server_id"]);
        assert_eq!(keys(&scope["forward_by_mode"]["pair"]), HIST_KEYS);
    }
}

#[test]
fn json_values_are_the_merged_and_per_shard_tallies() {
    let mut b = busy_shard(1);
    b.rejected(Rejected::OverCapacity);
    b.gauge_add(Gauge::Pairs, -3);
    let snaps = [busy_shard(0).stats_report(), b.stats_report()];
    let v: Value = serde_json::from_str(&render_json(1, &snaps)).unwrap();
    let t = &v["totals"];
    assert_eq!(t["accepted"], 4);
    assert_eq!(t["handoffs"], 2);
    assert_eq!(t["rejected"]["not_found"], 4);
    assert_eq!(t["rejected"]["over_capacity"], 1);
    assert_eq!(t["dropped"]["unknown_conn_id"], 2);
    assert_eq!(t["events"]["codes_minted"], 2);
    assert_eq!(t["gauges"]["pairs"], 1);
    assert_eq!(v["per_shard"][1]["gauges"]["pairs"], -1);
    assert_eq!(t["connections"]["phone"], 4);
    assert_eq!(t["connections"]["handshake"], 0);
    assert_eq!(
        (t["bytes_in"].as_u64(), t["messages_out"].as_u64()),
        (Some(200), Some(4))
    );
    let f = &t["histograms"]["forward"];
    assert_eq!(
        (f["count"].as_u64(), f["min"].as_u64()),
        (Some(6), Some(10))
    );
    assert_eq!(
        (f["p50"].as_u64(), f["max"].as_u64()),
        (Some(20), Some(1000))
    );
    assert_eq!(f["mean"].as_f64(), Some(343.33));
    assert_eq!(v["per_shard"][0]["rejected"]["over_capacity"], Value::Null);
    assert_eq!(v["per_shard"][1]["forward_by_mode"]["pair"]["count"], 1);
    assert_eq!(v["per_shard"][0]["histograms"]["handoff"]["count"], 1);
}

#[test]
fn json_of_no_shards_and_empty_histograms_is_zeros() {
    let v: Value = serde_json::from_str(&render_json(0, &[])).unwrap();
    assert_eq!(v["shards"], 0);
    assert_eq!(v["per_shard"], Value::Array(vec![]));
    let h = &v["totals"]["histograms"]["forward"];
    for k in HIST_KEYS {
        assert_eq!(h[k].as_f64(), Some(0.0), "{k}");
    }
}

/// Parse a body with the real parser crate.
fn scrape(body: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the one sample named `metric` whose labels include all of `labels`.
fn sample_value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value as V;
    let hits: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(hits.len(), 1, "{metric} {labels:?}: {hits:?}");
    match hits[0].value {
        V::Counter(v) | V::Gauge(v) | V::Untyped(v) => v,
        ref other => panic!("{metric}: not a scalar: {other:?}"),
    }
}

/// The (le, cumulative count) buckets of the one histogram series named `metric`
/// with `labels`.
fn histogram_buckets(
    s: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Vec<(f64, f64)> {
    let hits: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(hits.len(), 1, "{metric} {labels:?}");
    match &hits[0].value {
        prometheus_parse::Value::Histogram(bs) => {
            bs.iter().map(|b| (b.less_than, b.count)).collect()
        }
        other => panic!("{metric}: not a histogram: {other:?}"),
    }
}

/// The cumulative count at bucket `le` (seconds).
fn count_at(buckets: &[(f64, f64)], le: f64) -> f64 {
    buckets
        .iter()
        .find(|(b, _)| (*b - le).abs() < 1e-12 || (b.is_infinite() && le.is_infinite()))
        .map(|(_, c)| *c)
        .unwrap_or_else(|| panic!("no bucket le={le} in {buckets:?}"))
}

#[test]
fn prometheus_parses_and_has_per_shard_samples() {
    let mut b = busy_shard(1);
    b.record_forward(Style::Pair, 2000);
    let body = render_prometheus(77, &[busy_shard(0).metrics_report(), b.metrics_report()]);
    let s = scrape(&body);
    assert_eq!(sample_value(&s, "shardrelay_uptime_seconds", &[]), 77.0);
    assert_eq!(sample_value(&s, "shardrelay_shards", &[]), 2.0);
    for shard in ["0", "1"] {
        let sh = [("shard", shard)];
        assert_eq!(sample_value(&s, "shardrelay_accepted_total", &sh), 2.0);
        assert_eq!(sample_value(&s, "shardrelay_handoffs_total", &sh), 1.0);
        assert_eq!(sample_value(&s, "shardrelay_messages_in_total", &sh), 1.0);
        assert_eq!(sample_value(&s, "shardrelay_bytes_out_total", &sh), 100.0);
        let nf = [("shard", shard), ("reason", "not_found")];
        assert_eq!(sample_value(&s, "shardrelay_rejected_total", &nf), 2.0);
        let dr = [("shard", shard), ("reason", "unknown_conn_id")];
        assert_eq!(sample_value(&s, "shardrelay_dropped_total", &dr), 1.0);
        let ev = [("shard", shard), ("name", "codes_minted")];
        assert_eq!(sample_value(&s, "shardrelay_events_total", &ev), 1.0);
        let ph = [("shard", shard), ("kind", "phone")];
        assert_eq!(sample_value(&s, "shardrelay_connections", &ph), 2.0);
        let pairs = [("shard", shard), ("name", "pairs")];
        assert_eq!(sample_value(&s, "shardrelay_registry", &pairs), 2.0);
        let hs = "shardrelay_handshake_latency_seconds";
        assert_eq!(sample_value(&s, &format!("{hs}_count"), &sh), 1.0);
        assert_eq!(sample_value(&s, &format!("{hs}_sum"), &sh), 0.0005);
    }
    let fwd = "shardrelay_forward_latency_seconds";
    let b = histogram_buckets(&s, fwd, &[("shard", "1")]);
    // Shard 1's forward samples: 10, 20, 1000 (busy_shard) and 2000 µs.
    assert_eq!(b.len(), PROM_BUCKETS_MICROS.len() + 1);
    assert_eq!(count_at(&b, 0.000005), 0.0);
    assert_eq!(count_at(&b, 0.00001), 1.0);
    assert_eq!(count_at(&b, 0.000025), 2.0);
    assert_eq!(count_at(&b, 0.001), 3.0);
    assert_eq!(count_at(&b, 0.0025), 4.0);
    assert_eq!(count_at(&b, f64::INFINITY), 4.0);
    assert!(b.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
    assert_eq!(
        sample_value(&s, &format!("{fwd}_count"), &[("shard", "1")]),
        4.0
    );
    let by_mode = "shardrelay_forward_by_mode_latency_seconds";
    let b = histogram_buckets(&s, by_mode, &[("shard", "1"), ("mode", "pair")]);
    assert_eq!(count_at(&b, 0.0025), 2.0);
    let labels = [("shard", "0"), ("mode", "server_id")];
    assert_eq!(sample_value(&s, &format!("{by_mode}_count"), &labels), 2.0);
}

#[test]
fn prometheus_families_have_help_and_type_and_are_contiguous() {
    let body = render_prometheus(
        1,
        &[
            busy_shard(0).metrics_report(),
            busy_shard(1).metrics_report(),
        ],
    );
    let s = scrape(&body);
    let mut seen: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(name.starts_with("shardrelay_"), "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            assert!(s.docs.contains_key(name), "no HELP for {name}");
            assert!(!seen.contains(&name.to_owned()), "{name} declared twice");
            seen.push(name.to_owned());
            current = name.to_owned();
        } else if !line.starts_with('#') {
            let metric = line.split(['{', ' ']).next().unwrap();
            let family = metric
                .strip_suffix("_sum")
                .or_else(|| metric.strip_suffix("_count"))
                .or_else(|| metric.strip_suffix("_bucket"))
                .filter(|f| *f == current)
                .unwrap_or(metric);
            assert_eq!(family, current, "sample outside its family: {line}");
        }
    }
    assert!(seen.len() >= 17, "{seen:?}");
}

#[test]
fn prometheus_of_empty_histograms_reports_zero_buckets_and_count() {
    let body = render_prometheus(0, &[ShardStats::new(0).metrics_report()]);
    let s = scrape(&body);
    let b = histogram_buckets(&s, "shardrelay_handoff_latency_seconds", &[]);
    assert!(b.iter().all(|(_, c)| *c == 0.0), "{b:?}");
    let count = "shardrelay_handoff_latency_seconds_count";
    assert_eq!(sample_value(&s, count, &[("shard", "0")]), 0.0);
}

#[test]
fn prometheus_label_values_are_escaped() {
    let mut out = String::new();
    escape_label_value(&mut out, "a\"b\\c\nd");
    assert_eq!(out, r#"a\"b\\c\nd"#);
    // Every key the relay counts is a plain label value that needs no escaping.
    let names = (Rejected::ALL.iter().map(|k| k.name()))
        .chain(Dropped::ALL.iter().map(|k| k.name()))
        .chain(Event::ALL.iter().map(|k| k.name()))
        .chain(Gauge::ALL.iter().map(|k| k.name()))
        .chain(Style::ALL.iter().map(|k| k.name()))
        .chain(ConnKind::ALL.iter().map(|k| k.name()));
    for name in names {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name}"
        );
    }
}

#[test]
fn prometheus_help_and_floats_follow_the_format() {
    let mut out = String::new();
    escape_help(&mut out, "a\\b\nc\"d");
    assert_eq!(out, "a\\\\b\\nc\"d");
    for (v, text) in [
        (f64::NAN, "NaN"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (2.5, "2.5"),
    ] {
        let mut out = String::new();
        v.write_to(&mut out);
        assert_eq!(out, text);
    }
}
