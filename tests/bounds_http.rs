//! Cheap health and HTTP/JSON strictness (issue 15, acceptance points 8 and 9),
//! black-box over real sockets:
//!
//! * `/health` and `/healthz` still return the §7 body, summed over every shard, and a
//!   flood of them leaves the relay's RSS flat (they copy no histogram any more; the CPU
//!   figures are in docs/benchmarks.md, from `scripts/health-cost.sh`).
//! * RFC 9112 framing: two `Content-Length` fields (even equal), a `Content-Length` that
//!   is not all digits, or two `Transfer-Encoding` fields → `400`, on both listeners.
//! * A phone's JSON nested more than 128 levels deep is closed `1007`, like any non-JSON
//!   message, and never reaches the binary; 128 levels still go through.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tungstenite::Message;

/// The §7 health body's fields, exactly.
const HEALTH_FIELDS: [&str; 10] = [
    "ok",
    "status",
    "version",
    "uptime_seconds",
    "shards",
    "connected_binaries",
    "connected_phones",
    "pairs",
    "sessions",
    "tickets",
];

/// `GET path` on `addr`, parsed as JSON after checking the status and headers.
fn health_at(addr: std::net::SocketAddr, path: &str) -> Value {
    let req = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    let resp = raw_http(addr, req.as_bytes());
    assert_eq!(resp.status, 200, "{path}: {}", resp.body_text());
    assert_eq!(resp.header("cache-control"), Some("no-store"), "{path}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    serde_json::from_slice(&resp.body).expect("health JSON")
}

/// The relay's resident set, from /proc.
fn rss_kib(relay: &Relay) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", relay.child.id()))
        .expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[test]
fn p8_health_returns_the_section_7_body_summed_over_shards() {
    let relay = Relay::start(&["--shards", "4"]);
    // Enough keys that, hashed over 4 shards, every shard holds some of them.
    let binaries: Vec<Ws> = (0..12).map(|i| relay.binary(&format!("hb-{i}"))).collect();
    let phones: Vec<Ws> = (0..12)
        .map(|i| relay.phone(&format!("hb-{i}"), "tok"))
        .collect();
    let pairs: Vec<Ws> = (0..6)
        .map(|i| relay.ws(&format!("/?pair=health-{i}"), &[]).unwrap())
        .collect();
    for addr in [relay.public, relay.admin] {
        for path in ["/health", "/healthz"] {
            let body = health_at(addr, path);
            let fields: Vec<&str> = body
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            let mut want = HEALTH_FIELDS.to_vec();
            want.sort_unstable();
            let mut got = fields.clone();
            got.sort_unstable();
            assert_eq!(got, want, "{path} fields");
            assert_eq!(body["ok"], true);
            assert_eq!(body["status"], "ok");
            assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
            assert!(body["uptime_seconds"].is_u64());
            assert_eq!(body["shards"], 4);
            assert_eq!(body["connected_binaries"], 12, "{path} on {addr}");
            assert_eq!(body["connected_phones"], 12);
            assert_eq!(body["pairs"], 6);
            assert_eq!(body["sessions"], 0);
            assert_eq!(body["tickets"], 0);
        }
    }
    drop((binaries, phones, pairs));
}

/// Health probes in a flood, 8 clients at once: before the fix each one cloned every
/// shard's histograms and the relay grew by tens of MB (8 → 78 MB in the review); now
/// its RSS must stay within a few MB of where it started.
#[test]
fn p8_health_flood_keeps_rss_flat() {
    let relay = Relay::start(&["--shards", "2"]);
    health_at(relay.public, "/health");
    let before = rss_kib(&relay);
    let public = relay.public;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..400 {
                    health_at(public, "/health");
                }
            })
        })
        .collect();
    let mut peak = before;
    while clients.iter().any(|c| !c.is_finished()) {
        peak = peak.max(rss_kib(&relay));
        std::thread::sleep(Duration::from_millis(5));
    }
    for c in clients {
        c.join().expect("client");
    }
    peak = peak.max(rss_kib(&relay));
    assert!(
        peak <= before + 4096,
        "RSS grew from {before} KiB to {peak} KiB under 3,200 health probes"
    );
}

/// A request on `addr` with `fields` (CRLF-terminated lines) and `body`; its status.
fn status_with(addr: std::net::SocketAddr, line: &str, fields: &str, body: &str) -> u16 {
    let req = format!("{line} HTTP/1.1\r\nHost: relay\r\n{fields}\r\n{body}");
    raw_http(addr, req.as_bytes()).status
}

/// Every framing shape RFC 9112 says to refuse, with the status the relay gives it.
fn refused_framings() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "two equal Content-Length",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
        ),
        (
            "two different Content-Length",
            "Content-Length: 5\r\nContent-Length: 2\r\n",
        ),
        ("Content-Length list", "Content-Length: 5, 5\r\n"),
        ("Content-Length +5", "Content-Length: +5\r\n"),
        ("Content-Length -1", "Content-Length: -1\r\n"),
        ("empty Content-Length", "Content-Length: \r\n"),
        ("Content-Length 0x5", "Content-Length: 0x5\r\n"),
        (
            "Content-Length over u64",
            "Content-Length: 99999999999999999999\r\n",
        ),
        (
            "two Transfer-Encoding",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        ),
        (
            "two equal Transfer-Encoding",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
    ]
}

#[test]
fn p9_ambiguous_framing_is_400_on_the_public_listener() {
    let relay = Relay::start(&[]);
    for (what, fields) in refused_framings() {
        let auth = format!("Authorization: Bearer {}\r\n{fields}", "t".repeat(43));
        let put = status_with(relay.public, "PUT /v1/relay", &auth, "hello");
        assert_eq!(put, 400, "PUT /v1/relay with {what}");
        let get = status_with(relay.public, "GET /health", fields, "hello");
        assert_eq!(get, 400, "GET /health with {what}");
    }
    let refused = relay.stats()["totals"]["rejected"].clone();
    assert_eq!(refused["duplicate_content_length"], 4, "{refused}");
    assert_eq!(refused["bad_content_length"], 12, "{refused}");
    assert_eq!(refused["duplicate_transfer_encoding"], 4, "{refused}");
}

/// On the admin listener the lengths are right for the body, so a relay that took the
/// first `Content-Length`, or read `+N` as `N`, would mint (201) instead.
#[test]
fn p9_ambiguous_framing_is_400_on_the_admin_listener() {
    let relay = Relay::start(&[]);
    let json = r#"{"workspace_id":"w","source_id":"s","dest_id":"d"}"#;
    let n = json.len();
    let plain = format!("Content-Length: {n}\r\n");
    assert_eq!(
        status_with(relay.admin, "POST /v1/tickets", &plain, json),
        201
    );
    let cases = [
        format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"),
        format!("Content-Length: {n}\r\nContent-Length: 1\r\n"),
        format!("Content-Length: +{n}\r\n"),
        format!("Content-Length: {n}\r\nTransfer-Encoding: a\r\nTransfer-Encoding: b\r\n"),
    ];
    for fields in cases {
        let status = status_with(relay.admin, "POST /v1/tickets", &fields, json);
        assert_eq!(status, 400, "POST /v1/tickets with {fields:?}");
    }
    for (what, fields) in refused_framings() {
        let post = status_with(relay.admin, "POST /v1/tickets", fields, json);
        assert_eq!(post, 400, "POST /v1/tickets with {what}");
    }
}

#[test]
fn p9_content_length_with_surrounding_whitespace_is_read_sanely() {
    let relay = Relay::start(&[]);
    let status = status_with(relay.public, "GET /health", "Content-Length:   0  \r\n", "");
    assert_eq!(status, 200, "optional whitespace around a valid length");
    let status = status_with(relay.public, "GET /health", "Content-Length: 0\r\n", "");
    assert_eq!(status, 200);
    let status = status_with(
        relay.public,
        "GET /health",
        "Transfer-Encoding: chunked\r\n",
        "",
    );
    assert_eq!(
        status, 200,
        "one Transfer-Encoding field is not refused by itself"
    );
}

/// `depth` nested arrays around `1`.
fn nested_json(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// A phone sending `payload` is closed 1007 and the binary sees nothing of it: the
/// next thing the binary gets is the phone-left notice, not an envelope.
fn assert_refused_1007(relay: &Relay, binary: &mut Ws, sid: &str, payload: String) {
    let mut phone = relay.phone(sid, "tok-deep");
    phone.send(Message::text(payload)).expect("send");
    let (code, reason) = expect_close(&mut phone);
    assert_eq!((code, reason.as_str()), (1007, "message is not JSON"));
    // Reading on flushes tungstenite's echo of the close, so the relay ends the phone at
    // once instead of after its close linger.
    while phone.read().is_ok() {}
    let notice: Value = serde_json::from_str(&next_text(binary)).expect("notice JSON");
    assert!(
        notice.get("frame").is_none(),
        "the binary got the message: {notice}"
    );
    assert_eq!(notice["close_code"], 1007, "{notice}");
}

#[test]
fn p9_phone_json_nested_deeper_than_128_is_closed_1007() {
    let relay = Relay::start(&[]);
    let mut binary = relay.binary("deep");
    assert_refused_1007(&relay, &mut binary, "deep", nested_json(100_000));
    assert_refused_1007(&relay, &mut binary, "deep", nested_json(129));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(129), "}".repeat(129));
    assert_refused_1007(&relay, &mut binary, "deep", objects);

    // 128 levels are within the limit and reach the binary intact.
    let mut phone = relay.phone("deep", "tok-ok");
    let ok = nested_json(128);
    phone.send(Message::text(ok.clone())).expect("send");
    let envelope = next_text(&mut binary);
    assert!(
        envelope.ends_with(&format!("\"frame\":{ok}}}")),
        "envelope: {}",
        &envelope[..80.min(envelope.len())]
    );
}
