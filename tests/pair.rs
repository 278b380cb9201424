//! Pair rendezvous (PROTOCOL §4, arc-relay compatible), black-box. Test names follow
//! the acceptance points.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use tungstenite::Message;

fn side(relay: &Relay, code: &str) -> Ws {
    relay
        .ws(&format!("/?pair={code}"), &[])
        .expect("pair side upgrade")
}

fn next_binary(ws: &mut Ws) -> Vec<u8> {
    match next_message(ws) {
        Message::Binary(b) => b.to_vec(),
        other => panic!("expected binary, got {other:?}"),
    }
}

#[test]
fn both_paths_pair_up_and_the_code_is_percent_decoded() {
    let relay = Relay::start(&[]);
    let mut a = side(&relay, "room%20one");
    let mut b = relay.ws("/v1/pair?pair=room+one", &[]).unwrap();
    // "+" stays "+": a different code from "room one", so these two are not paired...
    let mut c = relay.ws("/v1/pair?pair=room%20one", &[]).unwrap();
    a.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(next_binary(&mut c), vec![1, 2, 3]);
    c.send(Message::binary(vec![4])).unwrap();
    assert_eq!(next_binary(&mut a), vec![4]);
    // ...and "room+one" still waits alone.
    assert_eq!(relay.health()["pairs"], 2);
    b.send(Message::binary(vec![9])).unwrap();
}

#[test]
fn missing_or_oversized_code_is_400_before_upgrade() {
    let relay = Relay::start(&[]);
    assert_eq!(relay.raw_http(&upgrade_request("/", "")).status, 400);
    assert_eq!(relay.raw_http(&upgrade_request("/?pair=", "")).status, 400);
    assert_eq!(
        relay.raw_http(&upgrade_request("/?pair=%zz", "")).status,
        400
    );
    let long = "x".repeat(257);
    let path = format!("/v1/pair?pair={long}");
    assert_eq!(relay.raw_http(&upgrade_request(&path, "")).status, 400);
    let ok = "x".repeat(256);
    let _side = side(&relay, &ok);
    assert_eq!(relay.health()["pairs"], 1);
}

#[test]
fn third_connection_gets_409_pair_is_full() {
    let relay = Relay::start(&[]);
    let _a = side(&relay, "full");
    let _b = side(&relay, "full");
    relay.wait_total("/gauges/pairs", 1);
    wait_until("both sides registered", || {
        relay.total("/connections/pair") == 2
    });
    let resp = relay.raw_http(&upgrade_request("/?pair=full", ""));
    assert_eq!(resp.status, 409);
    assert_eq!(resp.body_text(), "pair is full");
}

#[test]
fn binary_messages_pass_verbatim_both_ways_up_to_max_message() {
    let relay = Relay::start(&["--max-message", "256KiB"]);
    let mut a = side(&relay, "verbatim");
    let mut b = side(&relay, "verbatim");
    for size in [0usize, 1, 125, 126, 65535, 65536, 256 * 1024] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        a.send(Message::binary(payload.clone())).unwrap();
        assert_eq!(next_binary(&mut b), payload, "a→b size {size}");
        b.send(Message::binary(payload.clone())).unwrap();
        assert_eq!(next_binary(&mut a), payload, "b→a size {size}");
    }
}

#[test]
fn text_messages_are_dropped_and_counted() {
    let relay = Relay::start(&[]);
    let mut a = side(&relay, "texty");
    let mut b = side(&relay, "texty");
    a.send(Message::text("dropped")).unwrap();
    a.send(Message::binary(b"kept".to_vec())).unwrap();
    assert_eq!(next_binary(&mut b), b"kept");
    relay.wait_total("/dropped/text_in_pair", 1);
}

#[test]
fn messages_before_the_peer_arrives_are_delivered_in_order() {
    let relay = Relay::start(&[]);
    let mut a = side(&relay, "early");
    for i in 0..50u8 {
        a.send(Message::binary(vec![i; 100])).unwrap();
    }
    relay.wait_total("/messages_in", 50);
    let mut b = side(&relay, "early");
    for i in 0..50u8 {
        assert_eq!(next_binary(&mut b), vec![i; 100]);
    }
}

#[test]
fn a_lone_side_past_the_early_bound_is_paused_not_dropped() {
    let relay = Relay::start(&["--max-queue", "64KiB", "--max-message", "16KiB"]);
    let a = side(&relay, "early-bound");
    const COUNT: usize = 400; // 400 × 8 KiB = 3.2 MiB, far past the 64 KiB bound
    let writer = std::thread::spawn(move || {
        let mut a = a;
        for i in 0..COUNT {
            let mut msg = vec![0u8; 8 * 1024];
            msg[..8].copy_from_slice(&(i as u64).to_be_bytes());
            a.send(Message::binary(msg)).unwrap();
        }
        a
    });
    // The relay stops reading A once 64 KiB wait: it cannot have taken them all.
    relay.wait_total("/messages_in", 8);
    let taken = relay.total("/messages_in");
    assert!(
        taken < COUNT as u64,
        "relay read everything ({taken}) from a lone side"
    );
    let mut b = side(&relay, "early-bound");
    for i in 0..COUNT {
        let msg = next_binary(&mut b);
        assert_eq!(u64::from_be_bytes(msg[..8].try_into().unwrap()), i as u64);
    }
    let _a = writer.join().unwrap();
}

#[test]
fn clean_close_gives_the_peer_1000_and_frees_the_code() {
    let relay = Relay::start(&[]);
    let mut a = side(&relay, "leave");
    let mut b = side(&relay, "leave");
    a.send(Message::binary(vec![1])).unwrap();
    assert_eq!(next_binary(&mut b), vec![1]);
    close_with(&mut a, 1000);
    assert_eq!(expect_close(&mut b), (1000, "peer disconnected".into()));
    wait_until("pair gone", || relay.health()["pairs"] == 0);
    // The code is reusable.
    let mut c = side(&relay, "leave");
    let mut d = side(&relay, "leave");
    c.send(Message::binary(vec![2])).unwrap();
    assert_eq!(next_binary(&mut d), vec![2]);
}

#[test]
fn failed_connection_gives_the_peer_1011() {
    let relay = Relay::start(&[]);
    let a = side(&relay, "fail");
    let mut b = side(&relay, "fail");
    drop(a); // TCP close with no close frame
    assert_eq!(
        expect_close(&mut b),
        (1011, "peer connection failed".into())
    );
    // A protocol error counts as a failed connection too.
    let mut raw = RawWs::connect(&relay, "/?pair=fail2", "");
    let mut d = side(&relay, "fail2");
    raw.send_frame(0x82, b"x", false); // unmasked: 1002
    assert_eq!(raw.expect_close().0, 1002);
    assert_eq!(
        expect_close(&mut d),
        (1011, "peer connection failed".into())
    );
}

#[test]
fn a_lone_side_past_the_pair_ttl_is_closed_1001_pair_expired() {
    let relay = Relay::start(&["--pair-ttl", "300ms"]);
    let mut a = side(&relay, "ttl");
    assert_eq!(expect_close(&mut a), (1001, "pair expired".into()));
    wait_until("pair swept", || relay.health()["pairs"] == 0);
    relay.wait_total("/events/pairs_expired", 1);
    // A full pair is not swept by the TTL.
    let mut b = side(&relay, "ttl2");
    let mut c = side(&relay, "ttl2");
    b.get_mut()
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    match b.read() {
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("a full pair was disturbed: {other:?}"),
    }
    c.send(Message::binary(vec![5])).unwrap();
    b.get_mut().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(next_binary(&mut b), vec![5]);
}

#[test]
fn a_slow_reader_pauses_its_sender_with_bounded_relay_memory() {
    let relay = Relay::start(&["--max-queue", "256KiB", "--max-message", "64KiB"]);
    let a = side(&relay, "slow");
    let mut b = side(&relay, "slow");
    const COUNT: usize = 1500; // 1500 × 32 KiB ≈ 47 MiB through a 256 KiB queue
    let rss_before = rss_kib(&relay);
    let writer = std::thread::spawn(move || {
        let mut a = a;
        for i in 0..COUNT {
            let mut msg = vec![7u8; 32 * 1024];
            msg[..8].copy_from_slice(&(i as u64).to_be_bytes());
            a.send(Message::binary(msg)).unwrap();
        }
        a
    });
    // B does not read until the sender has written far more than the relay may hold
    // and then the relay has stopped taking its messages.
    relay.wait_total("/messages_in", 100);
    let mut last = 0;
    wait_until("the relay stops taking A's messages", || {
        let taken = relay.total("/messages_in");
        let stalled = taken == last;
        last = taken;
        std::thread::sleep(Duration::from_millis(100));
        stalled
    });
    assert!(
        last < COUNT as u64,
        "the relay took every message while B was not reading"
    );
    let rss_paused = rss_kib(&relay);
    assert!(
        rss_paused < rss_before + 32 * 1024,
        "relay grew from {rss_before} KiB to {rss_paused} KiB while B was not reading"
    );
    for i in 0..COUNT {
        let msg = next_binary(&mut b);
        assert_eq!(u64::from_be_bytes(msg[..8].try_into().unwrap()), i as u64);
    }
    let _a = writer.join().unwrap();
    assert_eq!(relay.total("/dropped/text_in_pair"), 0);
}

#[test]
fn two_shards_serve_a_pair_whose_sides_landed_on_different_shards() {
    let relay = Relay::start(&["--shards", "2"]);
    let mut couples = Vec::new();
    for i in 0..16 {
        let code = format!("sharded-{i}");
        couples.push((side(&relay, &code), side(&relay, &code)));
    }
    for (i, (a, b)) in couples.iter_mut().enumerate() {
        a.send(Message::binary(vec![i as u8; 10])).unwrap();
        assert_eq!(next_binary(b), vec![i as u8; 10]);
        b.send(Message::binary(vec![!(i as u8); 3])).unwrap();
        assert_eq!(next_binary(a), vec![!(i as u8); 3]);
    }
    let stats = relay.stats();
    assert!(stats["totals"]["handoffs"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(relay.health()["pairs"], 16);
    assert_eq!(stats["totals"]["connections"]["pair"], 32);
}

/// The relay's resident set size in KiB.
fn rss_kib(relay: &Relay) -> u64 {
    let mut status = String::new();
    std::fs::File::open(format!("/proc/{}/status", relay.child.id()))
        .and_then(|mut f| f.read_to_string(&mut status))
        .expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
