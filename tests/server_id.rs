//! Server-id routing (PROTOCOL §3), black-box: a pyrycode binary and phones against the
//! real relay. Each test is named for the acceptance point it shows.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tungstenite::Message;

/// The relay's envelope for a phone message: (conn_id, exact frame text).
fn split_envelope(text: &str) -> (String, String) {
    let prefix = "{\"conn_id\":\"";
    assert!(text.starts_with(prefix), "not an envelope: {text}");
    let rest = &text[prefix.len()..];
    let end = rest.find('"').expect("conn_id end");
    let conn_id = rest[..end].to_owned();
    let frame_prefix = "\",\"frame\":";
    let after = &rest[end..];
    assert!(after.starts_with(frame_prefix), "no frame: {text}");
    let frame = after[frame_prefix.len()..]
        .strip_suffix('}')
        .expect("suffix");
    (conn_id, frame.to_owned())
}

/// Attach a phone and learn its conn_id from the first message it sends.
fn attach(relay: &Relay, binary: &mut Ws, sid: &str) -> (Ws, String) {
    let mut phone = relay.phone(sid, "tok-attach");
    phone.send(Message::text(r#"{"hello":true}"#)).unwrap();
    let (conn_id, frame) = split_envelope(&next_text(binary));
    assert_eq!(frame, r#"{"hello":true}"#);
    (phone, conn_id)
}

#[test]
fn binary_header_gate_is_400_with_empty_body_and_registry_untouched() {
    let relay = Relay::start(&[]);
    let all = [
        ("X-Pyrycode-Server", "s1"),
        ("X-Pyrycode-Version", "1.0"),
        ("User-Agent", "pyrycode"),
    ];
    for skip in 0..all.len() {
        for empty in [false, true] {
            let mut extra = String::new();
            for (i, (name, value)) in all.iter().enumerate() {
                if i == skip {
                    if empty {
                        extra += &format!("{name}: \r\n");
                    }
                    continue;
                }
                extra += &format!("{name}: {value}\r\n");
            }
            let resp = relay.raw_http(&upgrade_request("/v1/server", &extra));
            assert_eq!(resp.status, 400, "missing {:?} empty={empty}", all[skip].0);
            assert!(resp.body.is_empty());
        }
    }
    assert_eq!(relay.health()["connected_binaries"], 0);
    assert_eq!(
        relay.stats()["totals"]["gauges"]["server_slots"]
            .as_i64()
            .unwrap_or(0),
        0
    );
}

#[test]
fn phone_header_gate_is_400_with_empty_body() {
    let relay = Relay::start(&[]);
    let _binary = relay.binary("s1");
    let all = [
        ("X-Pyrycode-Server", "s1"),
        ("X-Pyrycode-Token", "secret"),
        ("User-Agent", "phone"),
    ];
    for skip in 0..all.len() {
        let extra: String = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, (n, v))| format!("{n}: {v}\r\n"))
            .collect();
        let resp = relay.raw_http(&upgrade_request("/v1/client", &extra));
        assert_eq!(resp.status, 400);
        assert!(resp.body.is_empty());
    }
    assert_eq!(relay.health()["connected_phones"], 0);
}

#[test]
fn phone_without_binary_is_closed_4404() {
    let relay = Relay::start(&[]);
    let mut phone = relay.phone("nobody", "t");
    assert_eq!(
        expect_close(&mut phone),
        (4404, "no server with that id".into())
    );
}

#[test]
fn conn_id_has_the_pyrycode_format_and_envelopes_carry_exact_bytes() {
    let relay = Relay::start(&[]);
    let mut binary = relay.binary("s-env");
    let mut phone = relay.phone("s-env", "tok");
    phone
        .send(Message::text(r#"{"x": 1.50, "y":[1 ,2]}"#))
        .unwrap();
    let (conn_id, frame) = split_envelope(&next_text(&mut binary));
    let suffix = conn_id
        .strip_prefix("client-s-env-")
        .expect("conn_id prefix");
    assert_eq!(suffix.len(), 8);
    assert!(suffix
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(frame, r#"{"x": 1.50, "y":[1 ,2]}"#);

    // A binary-opcode JSON message from a phone is embedded the same way.
    phone.send(Message::binary(b"[true]".to_vec())).unwrap();
    let (_, frame) = split_envelope(&next_text(&mut binary));
    assert_eq!(frame, "[true]");

    // binary → phone: the frame's exact bytes, as one text message; the binary may use
    // a binary-opcode envelope too.
    let env = format!(r#"{{"conn_id":"{conn_id}","frame": {{"b" : "two"}} }}"#);
    binary.send(Message::text(env)).unwrap();
    assert_eq!(next_text(&mut phone), r#"{"b" : "two"}"#);
    let env = format!(r#"{{"conn_id":"{conn_id}","frame":"plain"}}"#);
    binary.send(Message::binary(env.into_bytes())).unwrap();
    assert_eq!(next_text(&mut phone), r#""plain""#);
}

#[test]
fn close_code_from_binary_closes_the_phone_after_its_frame() {
    let relay = Relay::start(&[]);
    let mut binary = relay.binary("s-close");
    let (mut phone, conn_id) = attach(&relay, &mut binary, "s-close");
    let env = format!(r#"{{"conn_id":"{conn_id}","frame":{{"bye":1}},"close_code":4000}}"#);
    binary.send(Message::text(env)).unwrap();
    assert_eq!(next_text(&mut phone), r#"{"bye":1}"#);
    assert_eq!(expect_close(&mut phone), (4000, String::new()));
    // A bad close_code makes the envelope malformed: dropped, binary kept.
    let (mut phone2, conn_id2) = attach(&relay, &mut binary, "s-close");
    let env = format!(r#"{{"conn_id":"{conn_id2}","close_code":1001}}"#);
    binary.send(Message::text(env)).unwrap();
    relay.wait_total("/dropped/malformed_envelope", 1);
    let env = format!(r#"{{"conn_id":"{conn_id2}","frame":1}}"#);
    binary.send(Message::text(env)).unwrap();
    assert_eq!(next_text(&mut phone2), "1");
}

#[test]
fn phone_leaving_tells_the_binary_its_close_code_or_1006() {
    let relay = Relay::start(&[]);
    let mut binary = relay.binary("s-leave");
    let (mut phone, conn_id) = attach(&relay, &mut binary, "s-leave");
    close_with(&mut phone, 4001);
    let notice: Value = serde_json::from_str(&next_text(&mut binary)).unwrap();
    assert_eq!(
        notice,
        serde_json::json!({"conn_id": conn_id, "close_code": 4001})
    );

    let (phone, conn_id) = attach(&relay, &mut binary, "s-leave");
    drop(phone); // TCP close without a close frame
    let notice: Value = serde_json::from_str(&next_text(&mut binary)).unwrap();
    assert_eq!(
        notice,
        serde_json::json!({"conn_id": conn_id, "close_code": 1006})
    );
}

#[test]
fn non_json_phone_message_closes_that_phone_1007() {
    let relay = Relay::start(&[]);
    let mut binary = relay.binary("s-json");
    let (mut phone, _) = attach(&relay, &mut binary, "s-json");
    phone.send(Message::text("not json")).unwrap();
    assert_eq!(expect_close(&mut phone).0, 1007);
    // The binary hears the phone left, and stays.
    let notice: Value = serde_json::from_str(&next_text(&mut binary)).unwrap();
    assert!(notice["close_code"].is_u64());
    let (mut phone2, conn_id2) = attach(&relay, &mut binary, "s-json");
    binary
        .send(Message::text(format!(
            r#"{{"conn_id":"{conn_id2}","frame":2}}"#
        )))
        .unwrap();
    assert_eq!(next_text(&mut phone2), "2");
}

/// A raw phone on `sid` (its binary already holds it) that sent a non-JSON message and
/// read the relay's `1007` close frame.
fn phone_closed_1007(relay: &Relay, sid: &str) -> RawWs {
    let extra = format!(
        "X-Pyrycode-Server: {sid}\r\nX-Pyrycode-Token: tok-close\r\n\
         User-Agent: pyrycode-phone/1.0\r\nX-Pyrycode-Device-Name: raw phone\r\n"
    );
    let mut phone = RawWs::connect(relay, "/v1/client", &extra);
    phone.send_frame(0x81, b"not json", true);
    assert_eq!(
        phone.expect_close(),
        (1007, "message is not JSON".to_owned())
    );
    phone
}

/// The binary's notice for the phone that left: its `close_code`.
fn notice_code(binary: &mut Ws) -> u64 {
    let notice: Value = serde_json::from_str(&next_text(binary)).unwrap();
    notice["close_code"].as_u64().expect("close_code")
}

#[test]
fn relay_close_keeps_the_write_half_open_until_the_phone_echoes_and_the_binary_is_told_1007() {
    let relay = Relay::start(&[]);
    let mut binary = relay.binary("s-order");
    let mut phone = phone_closed_1007(&relay, "s-order");
    // RFC 6455 §7.1.1: the relay does not end the TCP connection before the client's
    // close frame (a balancer would otherwise end the tunnel and drop the echo). No EOF
    // may come while the phone has not answered; the wait is a bound, not a sync.
    phone
        .stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    match std::io::Read::read(&mut phone.stream, &mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the relay ended the connection before the phone's close frame: {other:?}"),
    }
    phone.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    phone.send_frame(0x88, &1007u16.to_be_bytes(), true);
    assert!(
        phone.wait_eof(),
        "the relay closes once the handshake is over"
    );
    assert_eq!(notice_code(&mut binary), 1007, "the code the phone echoed");
}

#[test]
fn a_phone_that_never_answers_the_relays_close_is_shut_at_the_close_linger() {
    let relay = Relay::start(&[]);
    let mut binary = relay.binary("s-linger");
    let mut phone = phone_closed_1007(&relay, "s-linger");
    let closed_at = std::time::Instant::now();
    // IO_TIMEOUT (10 s) bounds the wait: the 5 s close linger must end it first.
    assert!(phone.wait_eof());
    let waited = closed_at.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "shut after {waited:?}: before the 5 s close linger"
    );
    assert_eq!(notice_code(&mut binary), 1006, "no close frame was read");
}

#[test]
fn unknown_conn_id_and_malformed_envelopes_are_dropped_and_counted_binary_kept() {
    let relay = Relay::start(&[]);
    let mut binary = relay.binary("s-drop");
    let (mut phone, conn_id) = attach(&relay, &mut binary, "s-drop");
    binary
        .send(Message::text(
            r#"{"conn_id":"client-s-drop-deadbeef","frame":1}"#,
        ))
        .unwrap();
    binary.send(Message::text("not an envelope")).unwrap();
    binary.send(Message::text(r#"{"conn_id":"x"}"#)).unwrap();
    relay.wait_total("/dropped/unknown_conn_id", 1);
    relay.wait_total("/dropped/malformed_envelope", 2);
    binary
        .send(Message::text(format!(
            r#"{{"conn_id":"{conn_id}","frame":"still here"}}"#
        )))
        .unwrap();
    assert_eq!(next_text(&mut phone), r#""still here""#);
}

#[test]
fn a_phone_is_only_addressable_by_its_own_slots_binary() {
    let relay = Relay::start(&[]);
    let mut binary_a = relay.binary("slot-a");
    let mut binary_b = relay.binary("slot-b");
    let (mut phone_a, conn_id_a) = attach(&relay, &mut binary_a, "slot-a");
    binary_b
        .send(Message::text(format!(
            r#"{{"conn_id":"{conn_id_a}","frame":"hijack"}}"#
        )))
        .unwrap();
    relay.wait_total("/dropped/unknown_conn_id", 1);
    binary_a
        .send(Message::text(format!(
            r#"{{"conn_id":"{conn_id_a}","frame":"mine"}}"#
        )))
        .unwrap();
    assert_eq!(next_text(&mut phone_a), r#""mine""#);
}

#[test]
fn push_wake_is_counted_dropped_and_its_token_never_logged() {
    let relay = Relay::start(&["--log-level", "trace"]);
    let mut binary = relay.binary("s-wake");
    let token = "fcm-token-5d1c0e7f-unique";
    let env = format!(r#"{{"push_wake":{{"platform":"fcm","token":"{token}"}}}}"#);
    binary.send(Message::text(env)).unwrap();
    relay.wait_total("/events/push_wake", 1);
    assert!(!relay.logs().contains(token));
}

#[test]
fn max_phones_per_server_closes_the_next_phone_4429() {
    let relay = Relay::start(&["--max-phones-per-server", "2"]);
    let mut binary = relay.binary("s-cap");
    let (_p1, _) = attach(&relay, &mut binary, "s-cap");
    let (_p2, _) = attach(&relay, &mut binary, "s-cap");
    let mut p3 = relay.phone("s-cap", "t");
    assert_eq!(
        expect_close(&mut p3),
        (4429, "too many phones for server-id".into())
    );
}

#[test]
fn second_binary_is_closed_4409_when_the_holder_answers_the_probe() {
    let relay = Relay::start(&["--takeover-probe", "5s"]);
    let mut holder = relay.binary("s-claim");
    let mut newcomer = relay.binary("s-claim");
    // The holder's client answers the relay's probe ping while it reads.
    holder
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (code, reason) = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = holder.read();
                let _ = holder.flush();
            }
        });
        let result = expect_close(&mut newcomer);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    });
    assert_eq!((code, reason.as_str()), (4409, "server-id already claimed"));
    wait_until("the refused claimant is gone", || {
        relay.health()["connected_binaries"] == 1
    });
    // The holder still holds: its phones still reach it.
    let (_phone, _) = attach(&relay, &mut holder, "s-claim");
}

#[test]
fn unresponsive_holder_is_taken_over_and_closed_1011() {
    let relay = Relay::start(&["--takeover-probe", "300ms"]);
    // A raw holder that never answers anything.
    let mut holder = RawWs::connect(
        &relay,
        "/v1/server",
        "X-Pyrycode-Server: s-take\r\nX-Pyrycode-Version: 1\r\nUser-Agent: raw\r\n",
    );
    let mut phone = relay.phone("s-take", "t");
    relay.wait_total("/connections/phone", 1);
    let mut newcomer = relay.binary("s-take");
    assert_eq!(holder.expect_close(), (1011, "heartbeat timeout".into()));
    assert_eq!(
        expect_close(&mut phone),
        (4404, "binary reclaimed server-id".into())
    );
    // The newcomer holds the slot: a new phone reaches it.
    let (_p, _) = attach(&relay, &mut newcomer, "s-take");
}

#[test]
fn grace_reclaim_evicts_phones_4404() {
    let relay = Relay::start(&["--grace", "30s"]);
    let mut binary = relay.binary("s-grace");
    let (mut phone, _) = attach(&relay, &mut binary, "s-grace");
    drop(binary);
    relay.wait_total("/connections/binary", 0);
    wait_until("binary gone", || relay.health()["connected_binaries"] == 0);
    // In grace: phones may attach; their messages are dropped and counted.
    let mut late = relay.phone("s-grace", "t2");
    late.send(Message::text("{}")).unwrap();
    relay.wait_total("/dropped/slot_in_grace", 1);
    let mut again = relay.binary("s-grace");
    assert_eq!(
        expect_close(&mut phone),
        (4404, "binary reclaimed server-id".into())
    );
    assert_eq!(
        expect_close(&mut late),
        (4404, "binary reclaimed server-id".into())
    );
    let (_p, _) = attach(&relay, &mut again, "s-grace");
}

#[test]
fn grace_expiry_closes_phones_1011() {
    let relay = Relay::start(&["--grace", "300ms"]);
    let mut binary = relay.binary("s-expire");
    let (mut phone, _) = attach(&relay, &mut binary, "s-expire");
    drop(binary);
    assert_eq!(
        expect_close(&mut phone),
        (1011, "binary did not reconnect".into())
    );
    wait_until("slot freed", || {
        relay.stats()["totals"]["gauges"]["server_slots"]
            .as_i64()
            .unwrap_or(0)
            == 0
    });
    let mut orphan = relay.phone("s-expire", "t");
    assert_eq!(expect_close(&mut orphan).0, 4404);
}

#[test]
fn phone_backlog_full_closes_that_phone_1011_and_never_stalls_the_binary() {
    let relay = Relay::start(&["--max-queue", "256KiB", "--max-message", "64KiB"]);
    let mut binary = relay.binary("s-slow");
    let (slow, slow_id) = attach(&relay, &mut binary, "s-slow");
    let (mut fast, fast_id) = attach(&relay, &mut binary, "s-slow");
    let big = format!("\"{}\"", "x".repeat(60 * 1024));
    let mut slow = slow;
    // The slow phone never reads; the binary keeps sending to it until the relay gives
    // up on it (kernel buffers absorb the first few MiB).
    let mut sent = 0;
    let notice = loop {
        assert!(sent < 2000, "slow phone was never closed");
        let env = format!(r#"{{"conn_id":"{slow_id}","frame":{big}}}"#);
        binary.send(Message::text(env)).unwrap();
        sent += 1;
        if relay.total("/dropped/phone_backlog_full") > 0 {
            break loop {
                let text = next_text(&mut binary);
                if text.contains("close_code") {
                    break text;
                }
            };
        }
    };
    let notice: Value = serde_json::from_str(&notice).unwrap();
    assert_eq!(
        notice,
        serde_json::json!({"conn_id": slow_id, "close_code": 1011})
    );
    binary
        .send(Message::text(format!(
            r#"{{"conn_id":"{fast_id}","frame":"ok"}}"#
        )))
        .unwrap();
    assert_eq!(next_text(&mut fast), r#""ok""#);
    assert_eq!(expect_close(&mut slow), (1011, "phone backlog full".into()));
}

#[test]
fn phones_feeding_a_slow_binary_are_paused_never_dropped() {
    let relay = Relay::start(&["--max-queue", "128KiB", "--max-message", "16KiB"]);
    let mut binary = relay.binary("s-pause");
    let (phone, _) = attach(&relay, &mut binary, "s-pause");
    const COUNT: usize = 600;
    let pad = "p".repeat(8 * 1024);
    let writer = std::thread::spawn(move || {
        let mut phone = phone;
        for i in 0..COUNT {
            phone
                .send(Message::text(format!(r#"{{"i":{i},"pad":"{pad}"}}"#)))
                .unwrap();
        }
        phone
    });
    // Let the relay fill the binary's queue and pause the phone before reading.
    relay.wait_total("/messages_in", 100);
    for i in 0..COUNT {
        let (_, frame) = split_envelope(&next_text(&mut binary));
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["i"], i, "messages out of order or lost");
    }
    let _phone = writer.join().unwrap();
    assert_eq!(relay.total("/dropped/slot_in_grace"), 0);
}

#[test]
fn courier_token_never_appears_in_the_logs_at_trace_level() {
    let mut relay = Relay::start(&["--log-level", "trace"]);
    let token = "courier-token-8c1e93b2-do-not-log";
    let mut binary = relay.binary("s-tok");
    let mut phone = relay.phone("s-tok", token);
    phone.send(Message::text(r#"{"m":1}"#)).unwrap();
    let (_, _) = split_envelope(&next_text(&mut binary));
    close_with(&mut phone, 1000);
    let _ = next_text(&mut binary);
    let mut bad = relay.phone("nobody-here", token);
    let _ = expect_close(&mut bad);
    // Lines reach stderr through the relay's log-writer thread, in order: once the
    // shutdown line is there, every line about the phones before it is too.
    relay.signal(libc::SIGTERM);
    wait_until("shutdown logged", || relay.logs().contains("shutting down"));
    let _ = relay.wait_exit(Duration::from_secs(10));
    let logs = relay.logs();
    assert!(logs.contains("phone attached"), "no trace lines: {logs}");
    assert!(!logs.contains(token), "token leaked into logs");
}

#[test]
fn two_shards_route_binaries_and_phones_to_the_owner_and_count_handoffs() {
    let relay = Relay::start(&["--shards", "2"]);
    let mut pairs = Vec::new();
    for i in 0..20 {
        let sid = format!("sharded-{i}");
        let mut binary = relay.binary(&sid);
        let (phone, conn_id) = attach(&relay, &mut binary, &sid);
        pairs.push((binary, phone, conn_id));
    }
    for (binary, phone, conn_id) in pairs.iter_mut() {
        binary
            .send(Message::text(format!(
                r#"{{"conn_id":"{conn_id}","frame":"back"}}"#
            )))
            .unwrap();
        assert_eq!(next_text(phone), r#""back""#);
    }
    let stats = relay.stats();
    let handoffs = stats["totals"]["handoffs"].as_u64().unwrap();
    assert!(handoffs > 0, "no connection was handed off: {stats}");
    let per_shard: u64 = stats["per_shard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["handoffs"].as_u64().unwrap())
        .sum();
    assert_eq!(per_shard, handoffs);
    assert_eq!(stats["shards"], 2);
    assert_eq!(relay.health()["connected_binaries"], 20);
    assert_eq!(relay.health()["connected_phones"], 20);
}

/// `--flush-after-reads`: with writes coalesced across reads, many phones' envelopes to
/// one binary, and the binary's answers to them, still arrive complete and in each
/// phone's order.
#[test]
fn coalesced_writes_keep_every_phones_messages_in_order() {
    const PHONES: usize = 8;
    const MESSAGES: usize = 200;
    let relay = Relay::start(&["--flush-after-reads", "64"]);
    let mut binary = relay.binary("s-coalesce");
    let mut phones: Vec<Ws> = (0..PHONES)
        .map(|_| relay.phone("s-coalesce", "tok-coalesce"))
        .collect();
    // Round-robin, so the relay reads several phones per loop turn.
    for seq in 0..MESSAGES {
        for (p, phone) in phones.iter_mut().enumerate() {
            phone
                .send(Message::text(format!(r#"{{"p":{p},"seq":{seq}}}"#)))
                .unwrap();
        }
    }
    let mut conn_ids = vec![String::new(); PHONES];
    let mut next_seq = [0usize; PHONES];
    for _ in 0..PHONES * MESSAGES {
        let (conn_id, frame) = split_envelope(&next_text(&mut binary));
        let v: Value = serde_json::from_str(&frame).expect("frame is the phone's JSON");
        let p = v["p"].as_u64().unwrap() as usize;
        assert_eq!(
            v["seq"].as_u64().unwrap() as usize,
            next_seq[p],
            "phone {p} order"
        );
        next_seq[p] += 1;
        if conn_ids[p].is_empty() {
            conn_ids[p] = conn_id;
        } else {
            assert_eq!(conn_ids[p], conn_id, "phone {p} keeps its conn_id");
        }
    }
    assert_eq!(next_seq, [MESSAGES; PHONES]);
    // And back: the binary answers every phone, interleaved; each phone sees its own
    // answers, in order.
    for seq in 0..MESSAGES {
        for conn_id in &conn_ids {
            let env = format!(r#"{{"conn_id":"{conn_id}","frame":{seq}}}"#);
            binary.send(Message::text(env)).unwrap();
        }
    }
    for phone in phones.iter_mut() {
        for seq in 0..MESSAGES {
            assert_eq!(next_text(phone), seq.to_string());
        }
    }
}
