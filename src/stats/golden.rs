//! The renderings pinned byte for byte against bodies captured before the metric keys
//! became enums (the Grafana dashboard, `promtool` checks and jq scripts read them).
use super::*;

/// Two shards with a bit of everything, keys counted in a mixed order.
fn shards() -> [ShardStats; 2] {
    let mk = |id| {
        let mut s = ShardStats::new(id);
        s.accepted();
        s.handed_off();
        s.adopted();
        s.rejected(Rejected::NotFound);
        s.rejected(Rejected::HeadTooLarge);
        s.rejected(Rejected::NotFound);
        s.dropped(Dropped::UnknownConnId);
        s.dropped(Dropped::TextInPair);
        s.event(Event::PairsMatched);
        s.event(Event::CodesMinted);
        s.event(Event::Takeovers);
        s.gauge_add(Gauge::Sessions, 2);
        s.gauge_add(Gauge::Pairs, 1);
        s.gauge_add(Gauge::Pairs, -1);
        s.conn_opened(ConnKind::Phone);
        s.conn_opened(ConnKind::Binary);
        s.message_in(10);
        s.message_out(20);
        s.record_forward(Style::Session, 30);
        s.record_forward(Style::Pair, 1000);
        s.record_forward(Style::Echo, 7);
        s.record_handshake(300);
        s.record_handoff(12);
        s
    };
    let a = mk(0);
    let mut b = mk(1);
    b.event(Event::AcceptErrors);
    b.record_forward(Style::ServerId, 99);
    [a, b]
}

/// `body` with the process-wide memory figures (other tests move them) as captured.
fn pinned_memory(body: &str, json: bool) -> String {
    let (used, limit) = (crate::memory::used(), crate::memory::limit());
    if json {
        body.replace(
            &format!(r#""memory":{{"used_bytes":{used},"limit_bytes":{limit}}}"#),
            r#""memory":{"used_bytes":0,"limit_bytes":0}"#,
        )
    } else {
        body.replace(
            &format!("shardrelay_memory_used_bytes {used}\n"),
            "shardrelay_memory_used_bytes 0\n",
        )
        .replace(
            &format!("shardrelay_memory_limit_bytes {limit}\n"),
            "shardrelay_memory_limit_bytes 0\n",
        )
    }
}

#[test]
fn stats_and_metrics_bodies_are_byte_identical_to_the_pinned_ones() {
    if cfg!(feature = "alloc-count") {
        return; // that build adds `allocations`, which the pinned body lacks
    }
    let [a, b] = shards();
    let recorded = render_json_with(
        5,
        &[a.stats_report(), b.stats_report()],
        JsonOptions { recorded: true },
    );
    let want = include_str!("golden/stats_recorded.json");
    assert_eq!(pinned_memory(&recorded, true), want);
    let plan = StatsPlan::new(vec![a.coarse_report(), b.coarse_report()]);
    let asked = plan.asked();
    let fine = vec![a.fine_counts(&asked), b.fine_counts(&asked)];
    let plain = plan.render(5, &fine);
    assert_eq!(
        pinned_memory(&plain, true),
        include_str!("golden/stats.json")
    );
    let metrics = render_prometheus(5, &[a.metrics_report(), b.metrics_report()]);
    let want = include_str!("golden/metrics.txt");
    assert_eq!(pinned_memory(&metrics, false), want);
}
