//! RFC 6455 as the relay enforces it (PROTOCOL §2), black-box over the echo route, which
//! runs every message through the same codec and writer as relayed traffic.

mod common;

use common::*;
use tungstenite::Message;

const FIN_TEXT: u8 = 0x81;
const FIN_BINARY: u8 = 0x82;
const FIN_PING: u8 = 0x89;
const FIN_CLOSE: u8 = 0x88;

fn echo_relay(extra: &[&str]) -> Relay {
    let mut args = vec!["--enable-echo"];
    args.extend_from_slice(extra);
    Relay::start(&args)
}

#[test]
fn echo_route_is_off_by_default() {
    let relay = Relay::start(&[]);
    assert_eq!(relay.raw_http(&upgrade_request("/v1/echo", "")).status, 404);
}

#[test]
fn echo_returns_text_and_binary_messages() {
    let relay = echo_relay(&[]);
    let mut ws = relay.ws("/v1/echo", &[]).unwrap();
    ws.send(Message::text("héllo")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("héllo"));
    let big = vec![7u8; 200_000];
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(next_message(&mut ws), Message::binary(big));
}

#[test]
fn unmasked_client_frame_is_closed_1002() {
    let relay = echo_relay(&[]);
    let mut raw = RawWs::connect(&relay, "/v1/echo", "");
    raw.send_frame(FIN_TEXT, b"hi", false);
    assert_eq!(raw.expect_close().0, 1002);
}

#[test]
fn reserved_bits_are_closed_1002() {
    let relay = echo_relay(&[]);
    let mut raw = RawWs::connect(&relay, "/v1/echo", "");
    raw.send_frame(FIN_TEXT | 0x40, b"hi", true);
    assert_eq!(raw.expect_close().0, 1002);
}

#[test]
fn reserved_opcodes_are_closed_1002() {
    for opcode in [0x3u8, 0xb] {
        let relay = echo_relay(&[]);
        let mut raw = RawWs::connect(&relay, "/v1/echo", "");
        raw.send_frame(0x80 | opcode, b"", true);
        assert_eq!(raw.expect_close().0, 1002, "opcode {opcode:#x}");
    }
}

#[test]
fn invalid_utf8_text_is_closed_1007() {
    let relay = echo_relay(&[]);
    let mut raw = RawWs::connect(&relay, "/v1/echo", "");
    raw.send_frame(FIN_TEXT, &[0xce, 0xba, 0xff], true);
    assert_eq!(raw.expect_close().0, 1007);
}

#[test]
fn message_over_max_message_is_closed_1009() {
    let relay = echo_relay(&["--max-message", "1KiB", "--max-queue", "64KiB"]);
    let mut raw = RawWs::connect(&relay, "/v1/echo", "");
    raw.send_frame(FIN_BINARY, &[1u8; 1024], true);
    let (b0, payload) = raw.read_frame().unwrap();
    assert_eq!(
        (b0, payload.len()),
        (FIN_BINARY, 1024),
        "exactly the limit passes"
    );
    raw.send_frame(FIN_BINARY, &[1u8; 1025], true);
    assert_eq!(raw.expect_close().0, 1009);
    // Fragments adding up past the limit as well.
    let mut raw = RawWs::connect(&relay, "/v1/echo", "");
    raw.send_frame(0x02, &[1u8; 1000], true);
    raw.send_frame(0x80, &[1u8; 100], true);
    assert_eq!(raw.expect_close().0, 1009);
}

#[test]
fn fragments_are_reassembled_with_interleaved_control_frames() {
    let relay = echo_relay(&[]);
    let mut raw = RawWs::connect(&relay, "/v1/echo", "");
    raw.send_frame(0x01, b"frag", true); // text, not final
    raw.send_frame(FIN_PING, b"mid", true);
    raw.send_frame(0x00, b"men", true); // continuation
    raw.send_frame(0x8a, b"", true); // unsolicited pong: ignored
    raw.send_frame(0x80, b"ted", true); // final continuation
    let (b0, pong) = raw.read_frame().unwrap();
    assert_eq!((b0, pong.as_slice()), (0x8a, &b"mid"[..]));
    let (b0, text) = raw.read_frame().unwrap();
    assert_eq!((b0, text.as_slice()), (FIN_TEXT, &b"fragmented"[..]));
}

#[test]
fn ping_is_answered_with_its_payload() {
    let relay = echo_relay(&[]);
    let mut raw = RawWs::connect(&relay, "/v1/echo", "");
    raw.send_frame(FIN_PING, b"are you there", true);
    let (b0, payload) = raw.read_frame().unwrap();
    assert_eq!((b0, payload.as_slice()), (0x8a, &b"are you there"[..]));
}

#[test]
fn close_is_echoed_then_the_connection_closes() {
    let relay = echo_relay(&[]);
    let mut raw = RawWs::connect(&relay, "/v1/echo", "");
    let mut payload = 4321u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"done");
    raw.send_frame(FIN_CLOSE, &payload, true);
    assert_eq!(raw.expect_close().0, 4321);
    assert!(raw.wait_eof());
}

#[test]
fn silent_connection_is_closed_1011_heartbeat_timeout() {
    let relay = echo_relay(&["--ping-interval", "200ms", "--pong-timeout", "300ms"]);
    let mut raw = RawWs::connect(&relay, "/v1/echo", "");
    // The raw client never answers the relay's pings.
    let (b0, _) = raw.read_frame().expect("a ping");
    assert_eq!(b0, FIN_PING);
    assert_eq!(raw.expect_close(), (1011, "heartbeat timeout".into()));
}

#[test]
fn a_client_that_answers_pings_stays_connected() {
    let relay = echo_relay(&["--ping-interval", "100ms", "--pong-timeout", "300ms"]);
    let mut ws = relay.ws("/v1/echo", &[]).unwrap();
    ws.get_mut()
        .set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    // For five pong timeouts, the client library answers every ping; no close comes.
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    let mut pings = 0;
    while std::time::Instant::now() < until {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(Message::Close(frame)) => panic!("closed: {frame:?}"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let _ = ws.flush();
            }
            Err(e) => panic!("connection failed: {e}"),
        }
    }
    assert!(pings >= 3, "the relay pinged only {pings} times");
}
