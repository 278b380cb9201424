//! The HTTP rules every request meets (PROTOCOL §1–§2 and §7's health probes), black-box.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn head_over_8_kib_gets_431() {
    let relay = Relay::start(&[]);
    let filler = "a".repeat(900);
    let mut extra = String::new();
    for i in 0..10 {
        extra += &format!("X-Fill-{i}: {filler}\r\n");
    }
    let resp = relay.raw_http(&upgrade_request("/v1/echo", &extra));
    assert_eq!(resp.status, 431);
    assert_eq!(resp.header("connection"), Some("close"));
}

#[test]
fn more_than_64_header_fields_gets_431() {
    let relay = Relay::start(&[]);
    // The upgrade request has 5 fields; 60 more makes 65.
    let extra: String = (0..60).map(|i| format!("X-{i}: v\r\n")).collect();
    let resp = relay.raw_http(&upgrade_request("/v1/echo", &extra));
    assert_eq!(resp.status, 431);
    // 59 more makes exactly 64: accepted as far as the head goes (404: echo is off).
    let extra: String = (0..59).map(|i| format!("X-{i}: v\r\n")).collect();
    let resp = relay.raw_http(&upgrade_request("/v1/echo", &extra));
    assert_eq!(resp.status, 404);
}

#[test]
fn header_value_over_1_kib_gets_431() {
    let relay = Relay::start(&[]);
    let resp = relay.raw_http(&upgrade_request(
        "/nope",
        &format!("X-Big: {}\r\n", "v".repeat(1025)),
    ));
    assert_eq!(resp.status, 431);
    let resp = relay.raw_http(&upgrade_request(
        "/nope",
        &format!("X-Big: {}\r\n", "v".repeat(1024)),
    ));
    assert_eq!(resp.status, 404);
}

#[test]
fn a_head_not_finished_within_the_handshake_timeout_is_dropped() {
    let relay = Relay::start(&["--handshake-timeout", "300ms"]);
    let mut stream = TcpStream::connect(relay.public).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected the relay to close the connection");
    assert!(started.elapsed() < Duration::from_secs(5));
    relay.wait_total("/rejected/handshake_timeout", 1);
}

#[test]
fn unknown_path_404_wrong_method_405() {
    let relay = Relay::start(&[]);
    assert_eq!(relay.raw_http(&upgrade_request("/nope", "")).status, 404);
    let post = b"POST /v1/server HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let resp = relay.raw_http(post);
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET"));
}

#[test]
fn missing_upgrade_is_426_with_upgrade_header() {
    let relay = Relay::start(&["--enable-echo"]);
    let resp = relay.raw_http(b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(resp.status, 426);
    assert_eq!(resp.header("upgrade"), Some("websocket"));
}

#[test]
fn wrong_websocket_version_is_426_with_version_13() {
    let relay = Relay::start(&["--enable-echo"]);
    let req = b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let resp = relay.raw_http(req);
    assert_eq!(resp.status, 426);
    assert_eq!(resp.header("sec-websocket-version"), Some("13"));
}

#[test]
fn missing_or_malformed_key_is_400() {
    let relay = Relay::start(&["--enable-echo"]);
    let base = "GET /v1/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
    let resp = relay.raw_http(format!("{base}\r\n").as_bytes());
    assert_eq!(resp.status, 400);
    let resp = relay.raw_http(format!("{base}Sec-WebSocket-Key: short\r\n\r\n").as_bytes());
    assert_eq!(resp.status, 400);
}

#[test]
fn over_the_connection_cap_gets_503_before_the_upgrade() {
    let relay = Relay::start(&["--max-connections", "1", "--enable-echo"]);
    let _held = relay.ws("/v1/echo", &[]).expect("first connection");
    let resp = relay.raw_http(&upgrade_request("/v1/echo", ""));
    assert_eq!(resp.status, 503);
    relay.wait_total("/rejected/over_capacity", 1);
}

#[test]
fn over_the_per_ip_rate_gets_429() {
    let relay = Relay::start(&[
        "--per-ip-rate",
        "0.01",
        "--per-ip-burst",
        "1",
        "--enable-echo",
    ]);
    let _first = relay
        .ws("/v1/echo", &[])
        .expect("first attempt is within the burst");
    let resp = relay.raw_http(&upgrade_request("/v1/echo", ""));
    assert_eq!(resp.status, 429);
}

#[test]
fn health_on_both_listeners_has_the_contract_fields() {
    let relay = Relay::start(&["--shards", "2"]);
    for addr in [relay.public, relay.admin] {
        for path in ["/health", "/healthz"] {
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            let resp = raw_http(addr, req.as_bytes());
            assert_eq!(resp.status, 200);
            assert_eq!(resp.header("cache-control"), Some("no-store"));
            let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            assert_eq!(body["ok"], true);
            assert_eq!(body["status"], "ok");
            assert_eq!(body["shards"], 2);
            for key in [
                "version",
                "uptime_seconds",
                "connected_binaries",
                "connected_phones",
                "pairs",
                "sessions",
                "tickets",
            ] {
                assert!(body.get(key).is_some(), "health lacks {key}");
            }
        }
    }
}

#[test]
fn stats_report_per_shard_and_totals() {
    let relay = Relay::start(&["--shards", "2"]);
    let _ = relay.raw_http(&upgrade_request("/nope", ""));
    let stats = relay.stats();
    assert_eq!(stats["shards"], 2);
    assert_eq!(stats["per_shard"].as_array().unwrap().len(), 2);
    for key in [
        "accepted",
        "handoffs",
        "rejected",
        "messages_in",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "dropped",
        "connections",
        "histograms",
    ] {
        assert!(stats["totals"].get(key).is_some(), "totals lack {key}");
        assert!(
            stats["per_shard"][0].get(key).is_some(),
            "per_shard lacks {key}"
        );
    }
    assert_eq!(stats["totals"]["rejected"]["not_found"], 1);
}

#[test]
fn admin_token_guards_stats_but_not_health() {
    let dir = std::env::temp_dir().join(format!("shardrelay-token-{}", std::process::id()));
    std::fs::write(&dir, "s3cret-admin\n").unwrap();
    let relay = Relay::start(&["--admin-token-file", dir.to_str().unwrap()]);
    assert_eq!(relay.admin_get("/stats").status, 401);
    assert_eq!(relay.admin_get("/metrics").status, 401);
    assert_eq!(relay.admin_get("/health").status, 200);
    let req = b"GET /stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-admin\r\n\r\n";
    assert_eq!(raw_http(relay.admin, req).status, 200);
    let _ = std::fs::remove_file(dir);
}
