//! Session codes (PROTOCOL §5), black-box: hosts on `/mac`, browsers on `/browser`,
//! against the real relay. Each test is named for the acceptance point it shows (issue 4).

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// The code alphabet of PROTOCOL §5.
const ALPHABET: &str = "346789ABCDEFGHJKLMNPQRTUVWXY";

/// A well-formed code no test mints on purpose (1 in 28⁶ to collide with a live one).
const UNLIKELY: &str = "YYYYYY";

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The next message, as JSON.
fn next_json(ws: &mut Ws) -> Value {
    parse(&next_text(ws))
}

/// A host on `path`: its socket, code and `expiresAt`.
fn host_on(relay: &Relay, path: &str) -> (Ws, String, u64) {
    let mut ws = relay.ws(path, &[]).expect("host upgrade");
    let (code, expires) = registered(&mut ws);
    (ws, code, expires)
}

/// A host on `/mac` and its code.
fn host(relay: &Relay) -> (Ws, String) {
    let (ws, code, _) = host_on(relay, "/mac");
    (ws, code)
}

/// Read a `registered` message: (code, expiresAt).
fn registered(ws: &mut Ws) -> (String, u64) {
    let m = next_json(ws);
    assert_eq!(m["type"], "registered", "{m}");
    assert_eq!(m.as_object().map(|o| o.len()), Some(3), "{m}");
    let code = m["code"].as_str().expect("code").to_owned();
    (code, m["expiresAt"].as_u64().expect("expiresAt"))
}

fn browser(relay: &Relay) -> Ws {
    relay.ws("/browser", &[]).expect("browser upgrade")
}

fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).expect("send");
}

fn send_join(ws: &mut Ws, code: &str) {
    send(ws, &json!({"type": "join", "code": code}).to_string());
}

/// The next message is `{"type":"error","code":<code>,"message":<string>}`.
fn expect_error(ws: &mut Ws, code: &str) {
    let m = next_json(ws);
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["code"], code, "{m}");
    assert!(m["message"].is_string(), "{m}");
    assert_eq!(m.as_object().map(|o| o.len()), Some(3), "{m}");
}

/// The next message is `joined`; returns the session id.
fn expect_joined(ws: &mut Ws) -> String {
    let m = next_json(ws);
    assert_eq!(m["type"], "joined", "{m}");
    assert_eq!(m.as_object().map(|o| o.len()), Some(2), "{m}");
    m["sessionId"].as_str().expect("sessionId").to_owned()
}

/// Join `code` by message; both sides see the same session id.
fn join(host: &mut Ws, browser: &mut Ws, code: &str) -> String {
    send_join(browser, code);
    let id = expect_joined(browser);
    assert_eq!(expect_joined(host), id);
    id
}

/// A joined host and browser.
fn couple(relay: &Relay) -> (Ws, Ws, String) {
    let (mut h, code) = host(relay);
    let mut b = browser(relay);
    join(&mut h, &mut b, &code);
    (h, b, code)
}

/// A ping answered with the same `ts` text.
fn ping_pong(ws: &mut Ws, ts: &str) {
    send(ws, &format!(r#"{{"type":"ping","ts":{ts}}}"#));
    assert_eq!(next_text(ws), format!(r#"{{"type":"pong","ts":{ts}}}"#));
}

/// Keep `ws` busy with pings for `span` (time passes by waiting on messages).
fn pings_for(ws: &mut Ws, span: Duration) {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < span {
        ping_pong(ws, &n.to_string());
        n += 1;
    }
}

/// `data` goes from `from` to `to` as the exact text.
fn data_passes(from: &mut Ws, to: &mut Ws, payload: &str) {
    let text = format!(r#"{{"type":"data","payload":{payload}}}"#);
    send(from, &text);
    assert_eq!(next_text(to), text);
}

fn is_uuid_v4(id: &str) -> bool {
    let b = id.as_bytes();
    id.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && id
            .chars()
            .filter(|c| *c != '-')
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// 1. Endpoints and strict JSON messages.

#[test]
fn all_four_paths_speak_the_session_protocol() {
    let relay = Relay::start(&[]);
    let (mut h1, c1, _) = host_on(&relay, "/mac");
    let (mut h2, c2, _) = host_on(&relay, "/v1/session/host");
    let mut b1 = relay.ws("/browser", &[]).unwrap();
    let mut b2 = relay.ws("/v1/session/join", &[]).unwrap();
    join(&mut h1, &mut b1, &c1);
    join(&mut h2, &mut b2, &c2);
    data_passes(&mut b1, &mut h1, "1");
    data_passes(&mut h2, &mut b2, "2");
    assert_eq!(relay.total("/connections/session_host"), 2);
    assert_eq!(relay.total("/connections/session_browser"), 2);
}

#[test]
fn binary_and_oversized_text_are_invalid_message_and_not_forwarded() {
    let relay = Relay::start(&[]);
    let (mut h, mut b, _) = couple(&relay);
    let small = r#"{"type":"data","payload":"ok"}"#;
    b.send(Message::binary(small.as_bytes().to_vec())).unwrap();
    expect_error(&mut b, "INVALID_MESSAGE");
    // 64 KiB exactly passes; one byte more does not.
    let fill = |total: usize| {
        let pad = total - r#"{"type":"data","payload":""}"#.len();
        format!(r#"{{"type":"data","payload":"{}"}}"#, "x".repeat(pad))
    };
    let over = fill(64 * 1024 + 1);
    send(&mut b, &over);
    expect_error(&mut b, "INVALID_MESSAGE");
    let exact = fill(64 * 1024);
    send(&mut b, &exact);
    send(&mut b, small);
    assert_eq!(next_text(&mut h), exact);
    assert_eq!(next_text(&mut h), small);
    // The host side is held to the same rules.
    h.send(Message::binary(small.as_bytes().to_vec())).unwrap();
    expect_error(&mut h, "INVALID_MESSAGE");
    send(&mut h, &over);
    expect_error(&mut h, "INVALID_MESSAGE");
    data_passes(&mut h, &mut b, "true");
    assert!(relay.total("/dropped/session_invalid_message") >= 4);
}

#[test]
fn text_over_max_message_is_still_1009() {
    let relay = Relay::start(&["--max-message", "128KiB"]);
    let (_h, mut b, _) = couple(&relay);
    let big = format!(
        r#"{{"type":"data","payload":"{}"}}"#,
        "x".repeat(200 * 1024)
    );
    send(&mut b, &big);
    assert_eq!(expect_close(&mut b).0, 1009);
}

#[test]
fn shape_is_checked_before_state() {
    let relay = Relay::start(&[]);
    let (mut h, code) = host(&relay);
    let mut b = browser(&relay);
    // Malformed data before a join: INVALID_MESSAGE, not NOT_JOINED.
    send(&mut b, r#"{"type":"data"}"#);
    expect_error(&mut b, "INVALID_MESSAGE");
    // A malformed join is not a failed join: five of them do not close the browser.
    for _ in 0..5 {
        send(&mut b, r#"{"type":"join","code":42}"#);
        expect_error(&mut b, "INVALID_MESSAGE");
    }
    join(&mut h, &mut b, &code);
    // A malformed register after the join: INVALID_MESSAGE, not ALREADY_JOINED.
    send(&mut h, r#"{"type":"register"}"#);
    expect_error(&mut h, "INVALID_MESSAGE");
    data_passes(&mut b, &mut h, "{}");
}

// 2. Codes.

#[test]
fn codes_are_six_characters_of_the_alphabet_unique_and_expire_after_the_ttl() {
    let relay = Relay::start(&["--code-ttl", "90s"]);
    let mut seen = HashSet::new();
    let mut hosts = Vec::new();
    for _ in 0..64 {
        let before = unix_ms();
        let (ws, code, expires) = host_on(&relay, "/mac");
        let after = unix_ms();
        assert_eq!(code.len(), 6, "{code}");
        assert!(code.chars().all(|c| ALPHABET.contains(c)), "{code}");
        assert!(seen.insert(code.clone()), "duplicate {code}");
        assert!(
            (before + 90_000..=after + 90_000).contains(&expires),
            "{expires}"
        );
        hosts.push(ws);
    }
    assert_eq!(relay.total("/events/codes_minted"), 64);
}

#[test]
fn lower_case_joins_are_accepted_by_message_and_by_query() {
    let relay = Relay::start(&[]);
    let (mut h1, c1) = host(&relay);
    let mut b1 = browser(&relay);
    join(&mut h1, &mut b1, &c1.to_ascii_lowercase());
    let (mut h2, c2) = host(&relay);
    let path = format!("/browser?code={}", c2.to_ascii_lowercase());
    let mut b2 = relay.ws(&path, &[]).unwrap();
    let id = expect_joined(&mut b2);
    assert_eq!(expect_joined(&mut h2), id);
    data_passes(&mut b2, &mut h2, "[1]");
}

// 3. Host flow.

#[test]
fn register_before_a_join_gives_a_fresh_code_and_kills_the_old() {
    let relay = Relay::start(&[]);
    let (mut h, old) = host(&relay);
    send(
        &mut h,
        r#"{"type":"register","clientId":"6f1c2d8e-3b4a-4c5d-9e6f-7a8b9c0d1e2f"}"#,
    );
    let (fresh, _) = registered(&mut h);
    assert_ne!(fresh, old);
    let mut b = browser(&relay);
    send_join(&mut b, &old);
    expect_error(&mut b, "INVALID_CODE");
    join(&mut h, &mut b, &fresh);
    assert_eq!(relay.total("/events/codes_minted"), 2);
    assert_eq!(relay.health()["sessions"], 1);
}

#[test]
fn register_after_a_join_is_already_joined() {
    let relay = Relay::start(&[]);
    let (mut h, mut b, _) = couple(&relay);
    send(
        &mut h,
        r#"{"type":"register","clientId":"6f1c2d8e-3b4a-4c5d-9e6f-7a8b9c0d1e2f"}"#,
    );
    expect_error(&mut h, "ALREADY_JOINED");
    data_passes(&mut h, &mut b, r#""still joined""#);
}

#[test]
fn an_unjoined_code_expires_and_its_host_is_closed_4408_a_ttl_later() {
    let relay = Relay::start(&["--code-ttl", "1s"]);
    let start = Instant::now();
    let (mut h, _) = host(&relay);
    expect_error(&mut h, "EXPIRED_CODE");
    let expired = start.elapsed();
    assert!(expired >= Duration::from_secs(1), "{expired:?}");
    // Still connected between expiry and close.
    ping_pong(&mut h, "1");
    assert_eq!(expect_close(&mut h), (4408, "code expired".into()));
    assert!(start.elapsed() >= Duration::from_secs(2));
    relay.wait_total("/events/hosts_expired", 1);
    wait_until("sessions gauge back to 0", || {
        relay.health()["sessions"] == 0
    });
}

#[test]
fn an_expired_code_answers_joins_with_expired_code_until_the_host_registers_again() {
    let relay = Relay::start(&["--code-ttl", "2s"]);
    let (mut h, old) = host(&relay);
    expect_error(&mut h, "EXPIRED_CODE");
    let mut b = browser(&relay);
    send_join(&mut b, &old);
    expect_error(&mut b, "EXPIRED_CODE");
    send(
        &mut h,
        r#"{"type":"register","clientId":"00000000-0000-4000-8000-000000000000"}"#,
    );
    let (fresh, _) = registered(&mut h);
    send_join(&mut b, &old);
    expect_error(&mut b, "INVALID_CODE");
    join(&mut h, &mut b, &fresh);
    // Past the old code's close deadline (expiry + TTL = 4 s) nothing is closed.
    pings_for(&mut b, Duration::from_millis(2500));
    data_passes(&mut h, &mut b, "1");
    assert_eq!(relay.total("/events/hosts_expired"), 0);
}

// 4. Browser flow.

#[test]
fn joins_by_message_and_by_query_give_both_sides_the_same_uuid_v4() {
    let relay = Relay::start(&[]);
    let (mut h1, c1) = host(&relay);
    let mut b1 = browser(&relay);
    let id1 = join(&mut h1, &mut b1, &c1);
    let (mut h2, c2) = host(&relay);
    let mut b2 = relay
        .ws(&format!("/v1/session/join?code={c2}"), &[])
        .unwrap();
    let id2 = expect_joined(&mut b2);
    assert_eq!(expect_joined(&mut h2), id2);
    assert!(is_uuid_v4(&id1), "{id1}");
    assert!(is_uuid_v4(&id2), "{id2}");
    assert_ne!(id1, id2);
}

#[test]
fn join_errors_keep_the_browser_connected() {
    let relay = Relay::start(&["--code-ttl", "2s"]);
    let (mut expiring, expiring_code) = host(&relay);
    let (_taken, mut taken_browser, taken_code) = couple(&relay);
    let mut b = browser(&relay);
    send_join(&mut b, UNLIKELY);
    expect_error(&mut b, "INVALID_CODE");
    send_join(&mut b, "not a code");
    expect_error(&mut b, "INVALID_CODE");
    send_join(&mut b, &taken_code);
    expect_error(&mut b, "ALREADY_JOINED");
    expect_error(&mut expiring, "EXPIRED_CODE");
    send_join(&mut b, &expiring_code);
    expect_error(&mut b, "EXPIRED_CODE");
    ping_pong(&mut b, "4");
    // An already-joined browser joining again: ALREADY_JOINED, still joined.
    send_join(&mut taken_browser, &taken_code);
    expect_error(&mut taken_browser, "ALREADY_JOINED");
    ping_pong(&mut taken_browser, "5");
}

#[test]
fn the_fifth_failed_join_closes_the_browser_4429() {
    let relay = Relay::start(&[]);
    let (mut h, code) = host(&relay);
    // A bad ?code= at the upgrade is the first failure.
    let mut b = relay.ws(&format!("/browser?code={UNLIKELY}"), &[]).unwrap();
    expect_error(&mut b, "INVALID_CODE");
    for _ in 0..3 {
        send_join(&mut b, UNLIKELY);
        expect_error(&mut b, "INVALID_CODE");
    }
    ping_pong(&mut b, "4");
    send_join(&mut b, "ZZZ");
    expect_error(&mut b, "INVALID_CODE");
    assert_eq!(expect_close(&mut b), (4429, "too many attempts".into()));
    // The host's code was never touched.
    let mut other = browser(&relay);
    join(&mut h, &mut other, &code);
}

#[test]
fn a_joined_browser_closed_for_too_many_attempts_frees_its_host() {
    let relay = Relay::start(&[]);
    let (mut h, mut b, code) = couple(&relay);
    for _ in 0..5 {
        send_join(&mut b, &code);
        expect_error(&mut b, "ALREADY_JOINED");
    }
    assert_eq!(expect_close(&mut b), (4429, "too many attempts".into()));
    expect_error(&mut h, "BROWSER_DISCONNECTED");
    let mut next = browser(&relay);
    join(&mut h, &mut next, &code);
}

/// Per-shard `sessions` gauges.
fn session_gauges(relay: &Relay) -> [i64; 2] {
    let stats = relay.stats();
    let mut gauges = [0i64; 2];
    for (i, slot) in gauges.iter_mut().enumerate() {
        *slot = stats["per_shard"][i]["gauges"]["sessions"]
            .as_i64()
            .unwrap_or(0);
    }
    gauges
}

/// Two hosts whose codes live on different shards (in either order). A host's code is
/// minted on the shard that accepted it, and the shards share one accept queue: with
/// epoll the same shard can win many accepts in a row, so hosts are opened two at a
/// time (while one shard takes the first, the other is free for the second) and the
/// per-shard gauge tells where each pair went.
fn host_on_each_shard(relay: &Relay) -> Vec<(Ws, String)> {
    let mut found: Vec<Option<(Ws, String)>> = vec![None, None];
    let mut extra = Vec::new();
    let mut before = session_gauges(relay);
    for _ in 0..64 {
        let (first, second) = std::thread::scope(|s| {
            let other = s.spawn(|| host(relay));
            let first = host(relay);
            (first, other.join().expect("host thread"))
        });
        let mut after = [0i64; 2];
        wait_until("both hosts' gauges", || {
            after = session_gauges(relay);
            after.iter().sum::<i64>() == before.iter().sum::<i64>() + 2
        });
        let grew = [after[0] - before[0], after[1] - before[1]];
        before = after;
        if grew == [1, 1] {
            return vec![first, second];
        }
        let shard = usize::from(grew[1] == 2);
        if found[shard].is_none() {
            found[shard] = Some(first);
        } else {
            extra.push(first.0);
        }
        extra.push(second.0);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found
        .into_iter()
        .map(|f| f.expect("a host on each shard"))
        .collect()
}

#[test]
fn the_failed_join_count_survives_moves_between_shards() {
    let relay = Relay::start(&["--shards", "2"]);
    let hosts = host_on_each_shard(&relay);
    // Each code gets a browser (by ?code=, routed to the owner) so joins are refused.
    let mut keep = Vec::new();
    for (h, code) in hosts {
        let mut b = relay.ws(&format!("/browser?code={code}"), &[]).unwrap();
        expect_joined(&mut b);
        keep.push((h, b, code));
    }
    let codes: Vec<String> = keep.iter().map(|(_, _, c)| c.clone()).collect();
    let mut probe = browser(&relay);
    for i in 0..4 {
        send_join(&mut probe, &codes[i % 2]);
        expect_error(&mut probe, "ALREADY_JOINED");
    }
    ping_pong(&mut probe, "4");
    send_join(&mut probe, &codes[0]);
    expect_error(&mut probe, "ALREADY_JOINED");
    assert_eq!(expect_close(&mut probe), (4429, "too many attempts".into()));
    // Alternating owners: at least joins 2 to 5 moved the browser.
    assert!(relay.total("/events/browser_handoffs") >= 4);
}

#[test]
fn browsers_accepted_on_another_shard_are_moved_to_the_code_owner() {
    let relay = Relay::start(&["--shards", "2"]);
    let mut couples = Vec::new();
    for i in 0..32 {
        let (mut h, code) = host(&relay);
        let mut b = if i % 4 == 3 {
            let mut b = relay.ws(&format!("/browser?code={code}"), &[]).unwrap();
            let id = expect_joined(&mut b);
            assert_eq!(expect_joined(&mut h), id);
            b
        } else {
            let mut b = browser(&relay);
            join(&mut h, &mut b, &code);
            b
        };
        data_passes(&mut b, &mut h, &format!(r#"{{"couple":{i},"dir":"b2h"}}"#));
        couples.push((h, b));
    }
    for (i, (h, b)) in couples.iter_mut().enumerate() {
        data_passes(h, b, &format!(r#"{{"couple":{i},"dir":"h2b"}}"#));
        data_passes(b, h, &format!(r#"{{"couple":{i},"dir":"again"}}"#));
    }
    assert_eq!(relay.total("/events/joins_ok"), 32);
    assert_eq!(relay.health()["sessions"], 32);
    // Which shard accepts a connection is the kernel's choice (on epoll one shard may
    // take most): with a code on each shard, a browser that tries both by message is on
    // the wrong shard for one of them, wherever it was accepted, and is moved there.
    let before = relay.total("/events/browser_handoffs");
    let hosts = host_on_each_shard(&relay);
    let mut keep = Vec::new();
    let mut codes = Vec::new();
    for (mut h, code) in hosts {
        let mut b = browser(&relay);
        join(&mut h, &mut b, &code);
        data_passes(&mut b, &mut h, r#"{"moved":"maybe"}"#);
        codes.push(code);
        keep.push((h, b));
    }
    let mut probe = browser(&relay);
    for code in &codes {
        send_join(&mut probe, code);
        expect_error(&mut probe, "ALREADY_JOINED");
    }
    assert!(relay.total("/events/browser_handoffs") > before);
}

// 5. After the join.

#[test]
fn data_is_forwarded_as_the_exact_text_both_ways() {
    let relay = Relay::start(&[]);
    let (mut h, mut b, _) = couple(&relay);
    let texts = [
        r#"{"type":"data","payload":null}"#,
        r#"{ "payload" : {"a": [1, 2.50, "é\u00e9"]} , "type" : "data" }"#,
        "{\"type\":\"data\",\"payload\":\"line\\nbreak ✓\"}\n",
    ];
    for text in texts {
        send(&mut b, text);
        assert_eq!(next_text(&mut h), text);
        send(&mut h, text);
        assert_eq!(next_text(&mut b), text);
    }
}

#[test]
fn pings_are_answered_with_the_same_ts_text_joined_or_not() {
    let relay = Relay::start(&[]);
    let (mut h, code) = host(&relay);
    let mut b = browser(&relay);
    for ts in ["1", "-0", "1.50", "1e3", "123456789012345678901234567890"] {
        ping_pong(&mut h, ts);
        ping_pong(&mut b, ts);
    }
    join(&mut h, &mut b, &code);
    ping_pong(&mut h, "1.0");
    ping_pong(&mut b, "2E-2");
    send(&mut b, r#"{"type":"ping","ts":"1"}"#);
    expect_error(&mut b, "INVALID_MESSAGE");
}

#[test]
fn data_before_a_join_is_not_joined() {
    let relay = Relay::start(&[]);
    let (mut h, code) = host(&relay);
    let mut b = browser(&relay);
    send(&mut h, r#"{"type":"data","payload":1}"#);
    expect_error(&mut h, "NOT_JOINED");
    send(&mut b, r#"{"type":"data","payload":1}"#);
    expect_error(&mut b, "NOT_JOINED");
    join(&mut h, &mut b, &code);
    data_passes(&mut h, &mut b, "2");
}

#[test]
fn malformed_messages_are_invalid_message_and_the_connection_stays() {
    let relay = Relay::start(&[]);
    let (mut h, mut b, _) = couple(&relay);
    let bad = [
        "not json",
        "[]",
        "\"data\"",
        "{}",
        r#"{"type":"nope"}"#,
        r#"{"type":7}"#,
        r#"{"type":"data"}"#,
        r#"{"type":"data","payload":1,"extra":2}"#,
        r#"{"type":"data","payload":1,"type":"data"}"#,
        r#"{"type":"data","payload":1} trailing"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"ping","ts":null}"#,
        r#"{"type":"join","code":null}"#,
        r#"{"type":"register","clientId":"not-a-uuid"}"#,
        r#"{"type":"pong","ts":1}"#,
        r#"{"type":"joined","sessionId":"x"}"#,
        r#"{"type":"error","code":"X","message":"y"}"#,
    ];
    for text in bad {
        send(&mut b, text);
        expect_error(&mut b, "INVALID_MESSAGE");
        send(&mut h, text);
        expect_error(&mut h, "INVALID_MESSAGE");
    }
    // Each side sending the other side's request.
    send(&mut h, r#"{"type":"join","code":"H4F7KN"}"#);
    expect_error(&mut h, "INVALID_MESSAGE");
    send(
        &mut b,
        r#"{"type":"register","clientId":"6f1c2d8e-3b4a-4c5d-9e6f-7a8b9c0d1e2f"}"#,
    );
    expect_error(&mut b, "INVALID_MESSAGE");
    // Nothing was forwarded: the next message each side gets is real data.
    data_passes(&mut b, &mut h, "\"b\"");
    data_passes(&mut h, &mut b, "\"h\"");
}

// 6. Leaving.

#[test]
fn a_host_leaving_tells_the_browser_then_closes_it_1000() {
    let relay = Relay::start(&[]);
    let (mut h, mut b, code) = couple(&relay);
    close_with(&mut h, 1000);
    expect_error(&mut b, "MAC_DISCONNECTED");
    assert_eq!(expect_close(&mut b), (1000, "peer disconnected".into()));
    wait_until("sessions gauge back to 0", || {
        relay.health()["sessions"] == 0
    });
    let mut late = browser(&relay);
    send_join(&mut late, &code);
    expect_error(&mut late, "INVALID_CODE");

    // A host that vanishes without a close frame is the same to its browser.
    let (h, mut b, _) = couple(&relay);
    drop(h);
    expect_error(&mut b, "MAC_DISCONNECTED");
    assert_eq!(expect_close(&mut b), (1000, "peer disconnected".into()));
}

#[test]
fn a_browser_leaving_tells_the_host_and_the_code_is_joinable_again_for_a_fresh_ttl() {
    let relay = Relay::start(&["--code-ttl", "1s"]);
    let (mut h, mut b, code) = couple(&relay);
    // Joined past the first TTL: the restart is what keeps the code joinable.
    pings_for(&mut h, Duration::from_millis(2500));
    close_with(&mut b, 1000);
    expect_error(&mut h, "BROWSER_DISCONNECTED");
    let mut again = browser(&relay);
    join(&mut h, &mut again, &code);
    drop(again);
    expect_error(&mut h, "BROWSER_DISCONNECTED");
    // Nobody comes: the restarted TTL runs out as for a fresh code.
    expect_error(&mut h, "EXPIRED_CODE");
    assert_eq!(expect_close(&mut h), (4408, "code expired".into()));
}

#[test]
fn joined_sessions_never_expire() {
    let relay = Relay::start(&["--code-ttl", "300ms"]);
    let (mut h, mut b, _) = couple(&relay);
    pings_for(&mut b, Duration::from_millis(1500));
    data_passes(&mut h, &mut b, "1");
    data_passes(&mut b, &mut h, "2");
    assert_eq!(relay.total("/events/codes_expired"), 0);
    assert_eq!(relay.health()["sessions"], 1);
}

// 7. Counters.

#[test]
fn stats_count_codes_joins_and_health_reports_sessions() {
    let relay = Relay::start(&["--code-ttl", "2s"]);
    let (mut h1, c1) = host(&relay);
    let (mut h2, c2) = host(&relay);
    assert_eq!(relay.health()["sessions"], 2);
    let mut b = browser(&relay);
    send_join(&mut b, UNLIKELY);
    expect_error(&mut b, "INVALID_CODE");
    join(&mut h1, &mut b, &c1);
    let mut b2 = browser(&relay);
    send_join(&mut b2, &c1);
    expect_error(&mut b2, "ALREADY_JOINED");
    expect_error(&mut h2, "EXPIRED_CODE");
    send_join(&mut b2, &c2);
    expect_error(&mut b2, "EXPIRED_CODE");
    let events = &relay.stats()["totals"]["events"];
    assert_eq!(events["codes_minted"], 2);
    assert_eq!(events["joins_ok"], 1);
    assert_eq!(events["joins_invalid_code"], 1);
    assert_eq!(events["joins_already_joined"], 1);
    assert_eq!(events["joins_expired_code"], 1);
    assert_eq!(events["codes_expired"], 1);
    assert_eq!(relay.health()["sessions"], 2);
    drop(h1);
    expect_error(&mut b, "MAC_DISCONNECTED");
    wait_until("one session left", || relay.health()["sessions"] == 1);
}

#[test]
fn an_empty_or_badly_encoded_query_code_is_400_before_the_upgrade() {
    let relay = Relay::start(&[]);
    for path in [
        "/browser?code=",
        "/v1/session/join?code=%zz",
        "/browser?code=%ff",
    ] {
        let resp = relay.raw_http(&upgrade_request(path, ""));
        assert_eq!(resp.status, 400, "{path}");
        assert_eq!(resp.body_text(), "bad session code\n", "{path}");
    }
    assert_eq!(relay.total("/connections/session_browser"), 0);
}

#[test]
fn a_client_that_never_reads_its_answers_stops_being_read() {
    let relay = Relay::start(&["--max-message", "1KiB", "--max-queue", "2KiB"]);
    let raw = RawWs::connect(&relay, "/browser", "");
    let mut writer = raw.stream.try_clone().expect("clone socket");
    let burst = client_frame(0x81, br#"{"type":"ping","ts":1}"#, true).repeat(1024);
    let flood = std::thread::spawn(move || while writer.write_all(&burst).is_ok() {});
    // Its pongs pile up unread; once its queue is full the relay stops reading it, so
    // `messages_in` stands still while the client is still trying to write.
    let mut last = u64::MAX;
    let mut still = 0;
    wait_until("the flooding browser to be paused", || {
        let now = relay.total("/messages_in");
        still = if now == last { still + 1 } else { 0 };
        last = now;
        still >= 30
    });
    assert!(!flood.is_finished());
    let (mut h, mut b, _) = couple(&relay);
    data_passes(&mut b, &mut h, "1");
    raw.stream
        .shutdown(std::net::Shutdown::Both)
        .expect("shutdown");
    flood.join().expect("flood thread");
}
