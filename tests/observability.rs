//! Observability (PROTOCOL §7): `/metrics` parses as Prometheus text with per-shard
//! series, `/stats?reset=1` restarts histograms but not counters, the `stats` operator
//! tool prints the live table.

mod common;

use std::process::Command;

use common::*;
use tungstenite::Message;

#[test]
fn metrics_parse_with_a_real_prometheus_parser_and_carry_shard_labels() {
    let relay = Relay::start(&["--shards", "2", "--enable-echo"]);
    let mut ws = relay.ws("/v1/echo", &[]).unwrap();
    ws.send(Message::text("m")).unwrap();
    let _ = next_message(&mut ws);
    relay.wait_total("/messages_out", 1);
    let resp = relay.admin_get("/metrics");
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.body_text();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition format");
    let accepted: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "shardrelay_accepted_total")
        .collect();
    assert_eq!(accepted.len(), 2, "one accepted series per shard");
    let shards: Vec<_> = accepted
        .iter()
        .map(|s| s.labels.get("shard").unwrap())
        .collect();
    assert!(shards.contains(&"0") && shards.contains(&"1"));
    // The parser folds the bucket lines of a histogram into one Histogram sample.
    let forward = scrape
        .samples
        .iter()
        .find(|s| s.metric == "shardrelay_forward_latency_seconds")
        .expect("forward latency histogram");
    match &forward.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.iter().any(|b| b.less_than == 0.001), "{buckets:?}")
        }
        other => panic!("forward latency is not a histogram: {other:?}"),
    }
}

#[test]
fn stats_reset_restarts_histograms_but_keeps_counters() {
    let relay = Relay::start(&["--enable-echo"]);
    let mut ws = relay.ws("/v1/echo", &[]).unwrap();
    for i in 0..5 {
        ws.send(Message::text(format!("{i}"))).unwrap();
        let _ = next_message(&mut ws);
    }
    relay.wait_total("/histograms/forward/count", 5);
    let resp = relay.admin_get("/stats?reset=1");
    assert_eq!(resp.status, 200);
    let stats = relay.stats();
    assert_eq!(stats["totals"]["histograms"]["forward"]["count"], 0);
    assert_eq!(stats["totals"]["messages_in"], 5);
    for key in ["count", "min", "p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(
            stats["totals"]["histograms"]["handshake"]
                .get(key)
                .is_some(),
            "{key}"
        );
    }
}

#[test]
fn the_stats_tool_prints_the_live_table() {
    let relay = Relay::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
        .args(["stats", "--admin", &relay.admin.to_string(), "--count", "1"])
        .output()
        .expect("run shardrelay stats");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for row in ["forward", "handshake", "handoff", "p99"] {
        assert!(text.contains(row), "no {row} in {text}");
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_lifecycle_events_and_no_token() {
    let relay = Relay::start(&["--log-format", "json", "--log-level", "debug"]);
    let token = "json-log-token-7f3a91c2";
    let mut binary = relay.binary("s-json-log");
    let mut phone = relay.phone("s-json-log", token);
    phone.send(Message::text("{}")).unwrap();
    let _ = next_text(&mut binary);
    close_with(&mut phone, 1000);
    let _ = next_text(&mut binary);
    wait_until("the close is logged", || {
        relay.logs().contains("\"closed\"")
    });
    let logs = relay.logs();
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
    for step in [
        "accepted",
        "upgraded",
        "binary claimed server-id",
        "phone attached",
        "closed",
    ] {
        assert!(logs.contains(step), "no {step:?} event in the logs");
    }
    assert!(!logs.contains(token));
}

/// #20 point 2: shards now send reduced reports (recorded buckets for `/stats`, fixed
/// Prometheus buckets for `/metrics`) instead of whole HDR histograms. The renderings
/// must still agree with each other and with the traffic: totals are the sum of the
/// shards, `/metrics` keeps every sample across a `/stats` reset, and the recorded
/// list sums to the count.
#[test]
fn scale_stats_and_metrics_agree_after_reduced_reports_and_a_reset() {
    let relay = Relay::start(&["--shards", "2", "--enable-echo"]);
    let mut socks: Vec<_> = (0..4).map(|_| relay.ws("/v1/echo", &[]).unwrap()).collect();
    let mut exchange = |n: usize| {
        for ws in socks.iter_mut() {
            for i in 0..n {
                ws.send(Message::text(format!("{i}"))).unwrap();
                let _ = next_message(ws);
            }
        }
    };
    exchange(3);
    relay.wait_total("/histograms/forward/count", 12);
    assert_eq!(relay.admin_get("/stats?reset=1").status, 200);
    exchange(2);
    relay.wait_total("/histograms/forward/count", 8);
    let stats: serde_json::Value =
        serde_json::from_str(&relay.admin_get("/stats?histograms=recorded").body_text()).unwrap();
    let forward = &stats["totals"]["histograms"]["forward"];
    assert_eq!(forward["count"], 8, "only the samples since the reset");
    let per_shard: u64 = stats["per_shard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["histograms"]["forward"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(per_shard, 8);
    let recorded: u64 = forward["recorded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[1].as_u64().unwrap())
        .sum();
    assert_eq!(recorded, 8);
    let min = forward["min"].as_u64().unwrap();
    let max = forward["max"].as_u64().unwrap();
    let p50 = forward["p50"].as_u64().unwrap();
    assert!(min <= p50 && p50 <= max, "{forward}");
    assert_eq!(
        stats["totals"]["forward_by_mode"]["echo"]["count"], 8,
        "{stats}"
    );
    let text = relay.admin_get("/metrics").body_text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let metric_count: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "shardrelay_forward_latency_seconds_count")
        .map(|s| match s.value {
            prometheus_parse::Value::Untyped(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(
        metric_count, 20.0,
        "/metrics keeps every sample across a reset"
    );
    let inf: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "shardrelay_forward_latency_seconds")
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b) => {
                b.iter().find(|b| b.less_than.is_infinite()).unwrap().count
            }
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(inf, 20.0);
}
