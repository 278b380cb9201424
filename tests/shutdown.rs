//! Shutdown (PROTOCOL §2): SIGTERM or SIGINT stops accepting, closes every WebSocket with
//! `1001 "shutting down"`, and exits within the drain timeout.

mod common;

use std::time::Duration;

use common::*;

fn shutdown_on(signal: i32) {
    let mut relay = Relay::start(&["--shards", "2", "--enable-echo", "--drain-timeout", "3s"]);
    let mut binary = relay.binary("s-stop");
    let mut phone = relay.phone("s-stop", "t");
    let mut echo = relay.ws("/v1/echo", &[]).unwrap();
    relay.wait_total("/connections/phone", 1);
    relay.signal(signal);
    for ws in [&mut binary, &mut phone, &mut echo] {
        assert_eq!(expect_close(ws), (1001, "shutting down".into()));
    }
    let status = relay.wait_exit(Duration::from_secs(6));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        std::net::TcpStream::connect(relay.public).is_err(),
        "still accepting"
    );
}

#[test]
fn sigterm_closes_every_websocket_1001_and_exits() {
    shutdown_on(libc::SIGTERM);
}

#[test]
fn sigint_closes_every_websocket_1001_and_exits() {
    shutdown_on(libc::SIGINT);
}

#[test]
fn a_client_that_ignores_the_close_does_not_hold_shutdown_past_the_drain_timeout() {
    let mut relay = Relay::start(&["--enable-echo", "--drain-timeout", "1s"]);
    // A raw client that never reads nor answers.
    let _raw = RawWs::connect(&relay, "/v1/echo", "");
    relay.wait_total("/connections/echo", 1);
    relay.signal(libc::SIGTERM);
    let status = relay.wait_exit(Duration::from_secs(4));
    assert!(status.success());
}
