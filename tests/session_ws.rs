//! Session codes, second protocol (`GET /ws`), black-box: Macs and browsers on one
//! endpoint against the real relay. Each test is named for the rule of issue 21 it shows.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// The `/ws` code alphabet: no 0/O, 1/I or L.
const ALPHABET: &str = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// A well-formed code no test mints on purpose (1 in 31⁶ to collide with a live one).
const UNLIKELY: &str = "ZZZZZZ";

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn next_json(ws: &mut Ws) -> Value {
    parse(&next_text(ws))
}

fn next_binary(ws: &mut Ws) -> Vec<u8> {
    match next_message(ws) {
        Message::Binary(b) => b.to_vec(),
        other => panic!("expected binary, got {other:?}"),
    }
}

fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).expect("send text");
}

fn send_binary(ws: &mut Ws, bytes: &[u8]) {
    ws.send(Message::binary(bytes.to_vec()))
        .expect("send binary");
}

fn open(relay: &Relay) -> Ws {
    relay.ws("/ws", &[]).expect("/ws upgrade")
}

/// A Mac: `register`, then its code from `registered`.
fn mac(relay: &Relay) -> (Ws, String) {
    let mut ws = open(relay);
    send_text(&mut ws, r#"{"type":"register","client_id":"mac-1"}"#);
    let m = next_json(&mut ws);
    assert_eq!(m["type"], "registered", "{m}");
    assert_eq!(m.as_object().map(|o| o.len()), Some(2), "{m}");
    (ws, m["code"].as_str().expect("code").to_owned())
}

fn send_auth(ws: &mut Ws, code: &str) {
    send_text(
        ws,
        &json!({"type": "auth", "session_code": code}).to_string(),
    );
}

/// A browser authenticated with `code`; returns it and the id the Mac was given.
fn browser(relay: &Relay, mac: &mut Ws, code: &str) -> (Ws, String) {
    let mut ws = open(relay);
    send_auth(&mut ws, code);
    assert_eq!(next_text(&mut ws), r#"{"type":"auth_success"}"#);
    (ws, browser_connected(mac))
}

/// The Mac's next message is `browser_connected`; returns the id.
fn browser_connected(mac: &mut Ws) -> String {
    let m = next_json(mac);
    assert_eq!(m["type"], "browser_connected", "{m}");
    assert_eq!(m.as_object().map(|o| o.len()), Some(2), "{m}");
    m["browser_id"].as_str().expect("browser_id").to_owned()
}

/// The next message is exactly `text`, then the relay closes with `code`.
fn answered_then_closed(ws: &mut Ws, text: &str, code: u16) {
    assert_eq!(next_text(ws), text);
    assert_eq!(expect_close(ws).0, code);
}

const AUTH_FAILED: &str = r#"{"type":"auth_failed","reason":"Invalid session code"}"#;

// 1. One endpoint; the first message decides the role.

#[test]
fn register_makes_a_mac_with_a_unique_six_character_code_of_the_alphabet() {
    let relay = Relay::start(&["--shards", "2"]);
    let mut codes = HashSet::new();
    let mut macs = Vec::new();
    for _ in 0..20 {
        let (ws, code) = mac(&relay);
        assert_eq!(code.len(), 6, "{code}");
        assert!(code.chars().all(|c| ALPHABET.contains(c)), "{code}");
        assert!(codes.insert(code.clone()), "duplicate {code}");
        macs.push(ws);
    }
    assert_eq!(relay.stats()["totals"]["gauges"]["ws_sessions"], 20);
    assert_eq!(relay.total("/connections/session_host"), 20);
}

#[test]
fn auth_with_the_code_in_any_case_succeeds_and_the_mac_gets_browser_connected() {
    let relay = Relay::start(&[]);
    let (mut m, code) = mac(&relay);
    let mut ids = HashSet::new();
    let mut keep = Vec::new();
    for typed in [code.clone(), code.to_lowercase(), code.clone()] {
        let (b, id) = browser(&relay, &mut m, &typed);
        assert_eq!(id.len(), 8, "{id}");
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'),
            "{id}"
        );
        assert!(ids.insert(id), "browser ids are unique in the session");
        keep.push(b);
    }
    assert_eq!(relay.total("/connections/session_browser"), 3);
    assert_eq!(relay.total("/events/ws_auths_ok"), 3);
}

#[test]
fn auth_with_an_invalid_code_is_auth_failed_then_close() {
    let relay = Relay::start(&[]);
    let (_m, _code) = mac(&relay);
    for typed in [UNLIKELY, "abc", "", "ABC23O", "ÀBC234"] {
        let mut b = open(&relay);
        send_auth(&mut b, typed);
        answered_then_closed(&mut b, AUTH_FAILED, 4404);
    }
    assert_eq!(relay.total("/events/ws_auth_invalid_code"), 5);
}

#[test]
fn a_first_message_that_is_binary_unparseable_or_of_another_type_is_an_error_then_close() {
    let relay = Relay::start(&[]);
    let cases: [(Message, &str); 6] = [
        (
            Message::binary(b"\x01\x02".to_vec()),
            "First message must be JSON",
        ),
        (Message::text("not json"), "Invalid JSON"),
        (Message::text(r#"{"type":"register"}"#), "Invalid JSON"),
        (
            Message::text(r#"{"type":"auth","session_code":7}"#),
            "Invalid JSON",
        ),
        (
            Message::text(r#"{"type":"create_session"}"#),
            "First message must be Register or Auth",
        ),
        (
            Message::text(r#"{"type":"hello","client_id":"x"}"#),
            "First message must be Register or Auth",
        ),
    ];
    for (first, error) in cases {
        let mut ws = open(&relay);
        ws.send(first).expect("send first");
        let want = format!(r#"{{"type":"error","message":"{error}"}}"#);
        answered_then_closed(&mut ws, &want, 1008);
    }
    assert_eq!(relay.total("/events/ws_first_message_refused"), 6);
}

#[test]
fn a_connection_without_a_first_message_is_closed_at_the_handshake_timeout() {
    let relay = Relay::start(&["--handshake-timeout", "1s"]);
    let mut ws = open(&relay);
    answered_then_closed(
        &mut ws,
        r#"{"type":"error","message":"First message timeout"}"#,
        1008,
    );
    assert_eq!(relay.total("/events/ws_first_message_timeouts"), 1);
    wait_until("the handshake gauge to drop", || {
        relay.total("/connections/handshake") == 0
    });
}

// 2. Many browsers per Mac.

#[test]
fn binary_from_the_mac_reaches_every_browser_and_binary_from_a_browser_reaches_the_mac() {
    let relay = Relay::start(&[]);
    let (mut m, code) = mac(&relay);
    let mut browsers: Vec<Ws> = (0..3).map(|_| browser(&relay, &mut m, &code).0).collect();
    let output: Vec<u8> = (0..=255u8).chain([0xff, 0x00, 0xc3]).collect();
    send_binary(&mut m, &output);
    send_binary(&mut m, b"");
    send_binary(&mut m, &vec![7u8; 100_000]);
    for b in &mut browsers {
        assert_eq!(next_binary(b), output);
        assert_eq!(next_binary(b), b"");
        assert_eq!(next_binary(b), vec![7u8; 100_000]);
    }
    for (i, b) in browsers.iter_mut().enumerate() {
        send_binary(b, &[b'k', i as u8, 0xfe]);
        assert_eq!(next_binary(&mut m), vec![b'k', i as u8, 0xfe]);
    }
}

#[test]
fn mac_session_messages_go_to_every_browser_as_sent_and_other_mac_text_does_not() {
    let relay = Relay::start(&[]);
    let (mut m, code) = mac(&relay);
    let mut browsers: Vec<Ws> = (0..2).map(|_| browser(&relay, &mut m, &code).0).collect();
    let forwarded = [
        r#"{ "type" : "session_list", "sessions" : [{"id":"s1","name":"zsh ✓"}] }"#,
        r#"{"type":"session_connected","session_id":"s1"}"#,
        r#"{"type":"session_disconnected","session_id":"s1"}"#,
    ];
    let ignored = [
        r#"{"type":"register","client_id":"again"}"#,
        r#"{"type":"auth_success"}"#,
        "plain words",
    ];
    for (f, i) in forwarded.iter().zip(ignored) {
        send_text(&mut m, i);
        send_text(&mut m, f);
    }
    send_binary(&mut m, b"end");
    for b in &mut browsers {
        for f in forwarded {
            assert_eq!(next_text(b), f);
        }
        assert_eq!(next_binary(b), b"end", "nothing else came before");
    }
    assert_eq!(relay.total("/dropped/ws_mac_text_ignored"), 3);
}

#[test]
fn create_session_goes_to_the_mac_as_text_and_close_session_as_one_binary_frame() {
    let relay = Relay::start(&[]);
    let (mut m, code) = mac(&relay);
    let (mut b, _) = browser(&relay, &mut m, &code);
    let create = r#"{"type":"create_session","cols":80}"#;
    send_text(&mut b, create);
    assert_eq!(next_text(&mut m), create);
    send_text(&mut b, r#"{"type":"close_session","session_id":"s-é1"}"#);
    let mut want = vec!["s-é1".len() as u8];
    want.extend_from_slice("s-é1".as_bytes());
    want.extend_from_slice(br#"{"type":"close_session"}"#);
    assert_eq!(next_binary(&mut m), want);
    // Not forwarded: other types, a close_session whose id does not fit its length byte.
    send_text(&mut b, r#"{"type":"session_list","sessions":[]}"#);
    send_text(&mut b, r#"{"type":"auth","session_code":"x"}"#);
    send_text(&mut b, "not json");
    let long = "x".repeat(256);
    send_text(
        &mut b,
        &json!({"type":"close_session","session_id": long}).to_string(),
    );
    send_binary(&mut b, b"after");
    assert_eq!(next_binary(&mut m), b"after", "nothing else came before");
    assert_eq!(relay.total("/dropped/ws_browser_text_ignored"), 3);
    assert_eq!(relay.total("/dropped/ws_session_id_too_long"), 1);
}

// 3. Leaving.

#[test]
fn a_browser_leaving_is_reported_to_the_mac_and_the_others_keep_receiving() {
    let relay = Relay::start(&[]);
    let (mut m, code) = mac(&relay);
    let (mut b1, id1) = browser(&relay, &mut m, &code);
    let (mut b2, _) = browser(&relay, &mut m, &code);
    close_with(&mut b1, 1000);
    let gone = next_json(&mut m);
    assert_eq!(
        gone,
        json!({"type": "browser_disconnected", "browser_id": id1})
    );
    send_binary(&mut m, b"still here");
    assert_eq!(next_binary(&mut b2), b"still here");
    assert_eq!(relay.total("/connections/session_browser"), 1);
}

#[test]
fn a_mac_leaving_tells_every_browser_session_disconnected_and_its_code_is_gone() {
    let relay = Relay::start(&[]);
    let (mut m, code) = mac(&relay);
    let mut browsers: Vec<Ws> = (0..3).map(|_| browser(&relay, &mut m, &code).0).collect();
    close_with(&mut m, 1000);
    for b in &mut browsers {
        answered_then_closed(
            b,
            r#"{"type":"error","message":"Session disconnected"}"#,
            1000,
        );
    }
    let mut again = open(&relay);
    send_auth(&mut again, &code);
    answered_then_closed(&mut again, AUTH_FAILED, 4404);
    wait_until("the session gauge to drop", || {
        relay.stats()["totals"]["gauges"]["ws_sessions"] == 0
    });
}

#[test]
fn a_browser_reconnects_by_sending_auth_again_with_the_same_code() {
    let relay = Relay::start(&["--max-message", "1KiB"]);
    let (mut m, code) = mac(&relay);
    let (mut b, id1) = browser(&relay, &mut m, &code);
    // The relay closes the browser (a message over --max-message)...
    send_binary(&mut b, &[0u8; 2048]);
    assert_eq!(expect_close(&mut b).0, 1009);
    let gone = next_json(&mut m);
    assert_eq!(gone["browser_id"], id1.as_str());
    // ...and it comes back with the same code.
    let (mut b, id2) = browser(&relay, &mut m, &code);
    assert_ne!(id1, id2);
    send_binary(&mut m, b"welcome back");
    assert_eq!(next_binary(&mut b), b"welcome back");
}

// Sharding: a code is owned by one shard; browsers that land elsewhere move there once.

/// Per-shard `ws_sessions` gauges.
fn ws_session_gauges(relay: &Relay) -> [i64; 2] {
    let stats = relay.stats();
    let mut gauges = [0i64; 2];
    for (i, slot) in gauges.iter_mut().enumerate() {
        *slot = stats["per_shard"][i]["gauges"]["ws_sessions"]
            .as_i64()
            .unwrap_or(0);
    }
    gauges
}

/// Macs whose codes live on both shards (a code is minted on the Mac's shard, and which
/// shard accepts a connection is the kernel's choice: on epoll one shard may take most).
/// Macs are opened two at a time — while one shard takes the first, the other is free
/// for the second — until both shards hold one; every Mac opened is returned.
fn macs_on_both_shards(relay: &Relay) -> Vec<(Ws, String)> {
    let mut macs = Vec::new();
    let mut before = ws_session_gauges(relay);
    let mut seen = [false; 2];
    for _ in 0..64 {
        let (first, second) = std::thread::scope(|s| {
            let other = s.spawn(|| mac(relay));
            let first = mac(relay);
            (first, other.join().expect("mac thread"))
        });
        macs.push(first);
        macs.push(second);
        let mut after = [0i64; 2];
        wait_until("both Macs' gauges", || {
            after = ws_session_gauges(relay);
            after.iter().sum::<i64>() == before.iter().sum::<i64>() + 2
        });
        for i in 0..2 {
            seen[i] |= after[i] > before[i];
        }
        before = after;
        if seen == [true, true] {
            return macs;
        }
    }
    panic!("no Mac landed on one of the shards in 128 tries");
}

#[test]
fn browsers_accepted_on_another_shard_are_moved_to_the_code_owner() {
    let relay = Relay::start(&["--shards", "2"]);
    let mut sessions = Vec::new();
    // Codes on both shards, so wherever browsers are accepted some are on the wrong one.
    for (i, (mut m, code)) in macs_on_both_shards(&relay).into_iter().enumerate() {
        let browsers: Vec<Ws> = (0..2).map(|_| browser(&relay, &mut m, &code).0).collect();
        sessions.push((i as u8, m, browsers));
    }
    for i in 0..12u8 {
        let (mut m, code) = mac(&relay);
        let browsers: Vec<Ws> = (0..2).map(|_| browser(&relay, &mut m, &code).0).collect();
        sessions.push((i, m, browsers));
    }
    for (i, m, browsers) in &mut sessions {
        send_binary(m, &[*i, 1]);
        for (j, b) in browsers.iter_mut().enumerate() {
            assert_eq!(next_binary(b), vec![*i, 1]);
            send_binary(b, &[*i, j as u8]);
            assert_eq!(next_binary(m), vec![*i, j as u8]);
        }
    }
    // Browsers, each accepted on one of 2 shards; codes on both.
    let moved = relay.total("/events/ws_browser_handoffs");
    assert!(moved > 0, "{moved}");
    assert_eq!(relay.total("/handoffs"), moved);
    // A wrong code moves (at most once) and is refused on its owner.
    for _ in 0..6 {
        let mut b = open(&relay);
        send_auth(&mut b, UNLIKELY);
        answered_then_closed(&mut b, AUTH_FAILED, 4404);
    }
}

// 4. Bounds.

#[test]
fn the_browser_cap_refuses_the_next_browser_with_auth_failed_saying_so() {
    let relay = Relay::start(&["--max-browsers-per-session", "2"]);
    let (mut m, code) = mac(&relay);
    let (_b1, _) = browser(&relay, &mut m, &code);
    let (b2, id2) = browser(&relay, &mut m, &code);
    let mut third = open(&relay);
    send_auth(&mut third, &code);
    answered_then_closed(
        &mut third,
        r#"{"type":"auth_failed","reason":"Too many browsers in this session"}"#,
        4429,
    );
    assert_eq!(relay.total("/events/ws_auth_session_full"), 1);
    // A place freed is a place taken.
    drop(b2);
    assert_eq!(next_json(&mut m)["browser_id"], id2.as_str());
    let (_b3, _) = browser(&relay, &mut m, &code);
}

#[test]
fn the_default_cap_is_16_browsers_per_session() {
    let relay = Relay::start(&[]);
    let (mut m, code) = mac(&relay);
    let _keep: Vec<Ws> = (0..16).map(|_| browser(&relay, &mut m, &code).0).collect();
    let mut extra = open(&relay);
    send_auth(&mut extra, &code);
    assert!(next_text(&mut extra).contains("Too many browsers"));
}

#[test]
fn a_browser_that_does_not_read_is_closed_without_stalling_the_mac_or_the_others() {
    let relay = Relay::start(&["--max-message", "16KiB", "--max-queue", "256KiB"]);
    let (mut m, code) = mac(&relay);
    let (mut reader, _) = browser(&relay, &mut m, &code);
    // The sleeper authenticates by hand and then never reads a byte.
    let mut sleeper = RawWs::connect(&relay, "/ws", "");
    let auth = json!({"type": "auth", "session_code": code}).to_string();
    sleeper.send_frame(0x81, auth.as_bytes(), true);
    let sleeper_id = browser_connected(&mut m);
    let got = Arc::new(AtomicU32::new(0));
    let seen = got.clone();
    let counter = std::thread::spawn(move || loop {
        match next_message(&mut reader) {
            Message::Binary(b) if b.len() == 1 => return reader,
            Message::Binary(b) => {
                assert_eq!(b.len(), 16_000);
                let n = seen.load(Ordering::SeqCst);
                assert_eq!(u32::from_be_bytes([b[0], b[1], b[2], b[3]]), n);
                seen.store(n + 1, Ordering::SeqCst);
            }
            other => panic!("unexpected {other:?}"),
        }
    });
    // Send in rounds the reading browser keeps up with (a round fits its queue) until
    // the relay gives up on the sleeper, whose kernel buffers fill first.
    let mut sent = 0u32;
    while relay.total("/dropped/ws_browser_backlog_full") == 0 {
        for _ in 0..8 {
            let mut frame = vec![0u8; 16_000];
            frame[..4].copy_from_slice(&sent.to_be_bytes());
            send_binary(&mut m, &frame);
            sent += 1;
        }
        wait_until("the reader to keep up", || {
            got.load(Ordering::SeqCst) == sent
        });
        assert!(sent < 20_000, "the sleeper was never closed");
    }
    send_binary(&mut m, b"$");
    let gone = next_json(&mut m);
    assert_eq!(
        gone,
        json!({"type": "browser_disconnected", "browser_id": sleeper_id})
    );
    let _reader = counter.join().expect("reader thread");
    assert_eq!(got.load(Ordering::SeqCst), sent, "every frame, in order");
    assert_eq!(
        sleeper.expect_close(),
        (1011, "browser backlog full".into())
    );
}

#[test]
fn browsers_feeding_a_mac_that_does_not_read_are_paused_not_dropped() {
    let relay = Relay::start(&["--max-message", "16KiB", "--max-queue", "64KiB"]);
    let (mut m, code) = mac(&relay);
    let (mut b, _) = browser(&relay, &mut m, &code);
    let total = 2000u32;
    let writer = std::thread::spawn(move || {
        for i in 0..total {
            let mut frame = vec![0u8; 16_000];
            frame[..4].copy_from_slice(&i.to_be_bytes());
            send_binary(&mut b, &frame);
        }
        b
    });
    // The Mac reads nothing until the relay stopped reading the browser.
    relay.wait_total("/events/reads_paused", 1);
    assert!(!writer.is_finished(), "the browser was paused, not drained");
    for i in 0..total {
        let got = next_binary(&mut m);
        assert_eq!(u32::from_be_bytes([got[0], got[1], got[2], got[3]]), i);
    }
    writer.join().expect("writer");
}

// The first protocol keeps working unchanged beside the second.

#[test]
fn the_first_protocol_keeps_working_next_to_the_second() {
    let relay = Relay::start(&[]);
    let (mut m, code) = mac(&relay);
    let (mut b, _) = browser(&relay, &mut m, &code);
    let mut host = relay.ws("/mac", &[]).expect("/mac");
    let registered = next_json(&mut host);
    let old_code = registered["code"].as_str().expect("code").to_owned();
    let mut joiner = relay
        .ws(&format!("/browser?code={old_code}"), &[])
        .expect("join");
    assert_eq!(next_json(&mut joiner)["type"], "joined");
    assert_eq!(next_json(&mut host)["type"], "joined");
    let data = r#"{"type":"data","payload":{"k":1}}"#;
    send_text(&mut joiner, data);
    assert_eq!(next_text(&mut host), data);
    // A /ws code is not a /browser code and the other way round.
    let mut cross = open(&relay);
    send_auth(&mut cross, &old_code);
    answered_then_closed(&mut cross, AUTH_FAILED, 4404);
    send_binary(&mut m, b"ok");
    assert_eq!(next_binary(&mut b), b"ok");
}

#[test]
fn ws_is_get_only() {
    let relay = Relay::start(&[]);
    let resp = relay.raw_http(
        b"POST /ws HTTP/1.1\r\nHost: relay\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 405);
}
