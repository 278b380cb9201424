//! Issue #17 point 4: one typed, deserialisable `/stats` model. A real `/stats` body from
//! the running relay (both renderings: the plain two-round body and
//! `?histograms=recorded`) goes through `shardrelay-stats-model` and back unchanged —
//! no key the model lacks, none it has missing — after traffic that fills every kind of
//! map (reasons, drops, events, gauges, styles).

mod common;

use common::*;
use tungstenite::Message;

/// Binary messages relayed each way on the pair.
const PAIR_MESSAGES: u64 = 3;

/// A two-shard relay after a refusal, a drop, a relayed pair and an echo.
fn relay_with_traffic() -> Relay {
    let relay = Relay::start(&["--shards", "2", "--enable-echo"]);
    assert_eq!(relay.raw_http(&upgrade_request("/nowhere", "")).status, 404);
    let mut a = relay.ws("/v1/pair?pair=model-check", &[]).unwrap();
    let mut b = relay.ws("/v1/pair?pair=model-check", &[]).unwrap();
    relay.wait_totals("the pair matched", |t| t.event(Event::PairsMatched) == 1);
    a.send(Message::text("not binary")).unwrap();
    for i in 0..PAIR_MESSAGES {
        a.send(Message::binary(vec![i as u8])).unwrap();
        assert_eq!(next_message(&mut b), Message::binary(vec![i as u8]));
    }
    let mut echo = relay.ws("/v1/echo", &[]).unwrap();
    echo.send(Message::text("hello")).unwrap();
    assert_eq!(next_text(&mut echo), "hello");
    relay.wait_totals("the drop counted", |t| t.dropped(Dropped::TextInPair) == 1);
    relay
}

/// Fetch `path` raw and check the typed model reads all of it and writes it back.
fn round_trip(relay: &Relay, path: &str) -> Stats {
    let resp = relay.admin_get(path);
    assert_eq!(resp.status, 200, "{path}: {}", resp.body_text());
    let value: serde_json::Value = serde_json::from_slice(&resp.body).expect("JSON");
    typed_stats(&value)
}

#[test]
fn a_real_stats_body_round_trips_through_the_typed_model() {
    let relay = relay_with_traffic();
    for path in ["/stats", "/stats?histograms=recorded"] {
        let stats = round_trip(&relay, path);
        assert_eq!(stats.shards, 2, "{path}");
        assert_eq!(stats.per_shard.len(), 2, "{path}");
        let t = &stats.totals;
        // Every kind of keyed map is non-empty, so its keys went through the enums.
        assert_eq!(t.rejected(Rejected::NotFound), 1, "{path}");
        assert_eq!(t.dropped(Dropped::TextInPair), 1, "{path}");
        assert_eq!(t.event(Event::PairsCreated), 1, "{path}");
        assert!(t.gauges.contains_key(&Gauge::Pairs), "{path}");
        assert_eq!(t.connections.len(), ConnKind::ALL.len(), "{path}");
        let pair = &t.forward_by_mode[&Style::Pair];
        assert_eq!(pair.count, PAIR_MESSAGES, "{path}");
        assert_eq!(t.forward_by_mode[&Style::Echo].count, 1, "{path}");
        assert!(t.histograms.handshake.count >= 3, "{path}");
        // `recorded` lists only with the option, and only in `totals`.
        let listed = path.contains("recorded");
        assert_eq!(t.histograms.forward.recorded.is_some(), listed, "{path}");
        assert!(stats
            .per_shard
            .iter()
            .all(|s| s.tallies.histograms.forward.recorded.is_none()));
    }
}

#[test]
fn a_body_with_an_unknown_or_missing_key_does_not_fit_the_model() {
    let relay = relay_with_traffic();
    let resp = relay.admin_get("/stats");
    let body = resp.body_text();
    let fits = |text: &str| serde_json::from_str::<Stats>(text).is_ok();
    assert!(fits(&body));
    let extra = body.replacen(r#""accepted":"#, r#""surprise":1,"accepted":"#, 1);
    assert!(
        !fits(&extra),
        "an unknown key in totals must not be ignored"
    );
    let renamed = body.replacen(r#""text_in_pair""#, r#""text_in_a_pair""#, 1);
    assert!(
        !fits(&renamed),
        "an unknown drop reason must not be ignored"
    );
    let missing = body.replacen(r#""handoffs":"#, r#""handoffs_renamed":"#, 1);
    assert!(!fits(&missing), "a missing key must not default");
    let shard_extra = body.replacen(r#"{"shard":1,"#, r#"{"shard":1,"surprise":1,"#, 1);
    assert_ne!(shard_extra, body);
    assert!(
        !fits(&shard_extra),
        "an unknown key in a per_shard entry must not be ignored"
    );
}
