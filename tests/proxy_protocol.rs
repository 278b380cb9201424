//! Issue 16, points 6 and 7: the real client address behind a balancer (PROTOCOL §1.2).
//!
//! * `--proxy-protocol`: v1 and v2 (TCP4, TCP6, LOCAL) headers accepted from a trusted
//!   proxy, their source address keying the per-IP rate; untrusted, malformed, missing
//!   and late headers closed without an answer and counted (`rejected.proxy_header`).
//! * `--trust-forwarded-for`: `X-Forwarded-For` believed from trusted proxies only.
//! * A real HAProxy (`send-proxy-v2`) in front of the relay, with clients on several
//!   127.0.0.x sources: traffic passes and the per-IP limit is keyed on each client.
//!   The same over TLS: HAProxy in TCP mode in front of a relay with `--tls-cert`/
//!   `--tls-key --proxy-protocol`, the clients speaking TLS through it (the PROXY header
//!   comes before any TLS byte). HAProxy comes from `scripts/install-test-tools.sh`
//!   (Debian package `haproxy`); when it is missing the test says SKIPPED loudly, and
//!   under `CI` it fails. The TLS pair is minted here (rcgen); no key is committed.
//!
//! Every relay here sees only 127.0.0.1 (or a chosen 127.0.0.x) as its socket peer, so a
//! limit that separates two clients can only have keyed on the address the header gave.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect_from, wait_until, Relay, IO_TIMEOUT};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

/// The v2 signature (PROXY protocol spec §2.2).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A health probe request.
const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n";

/// A relay that wants PROXY headers from 127.0.0.1, with a per-IP rate of one attempt
/// per address (refilled every 100 s: never within a test).
fn proxied_relay(extra: &[&str]) -> Relay {
    let mut args = vec![
        "--proxy-protocol",
        "--trusted-proxies",
        "127.0.0.1",
        "--per-ip-rate",
        "0.01",
        "--per-ip-burst",
        "1",
    ];
    args.extend_from_slice(extra);
    Relay::start(&args)
}

/// A v1 header for a TCP4 client.
fn v1_tcp4(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 {port} 8080\r\n").into_bytes()
}

/// A v2 `PROXY` header for a TCP4 client (built by hand, independently of the relay's
/// parser).
fn v2_tcp4(client: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client.octets());
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&8080u16.to_be_bytes());
    h
}

/// A v2 `PROXY` header for a TCP6 client.
fn v2_tcp6(client: std::net::Ipv6Addr, port: u16) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36]);
    h.extend_from_slice(&client.octets());
    h.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&8080u16.to_be_bytes());
    h
}

/// A v2 `LOCAL` header (a balancer's own health check), with no addresses.
fn v2_local() -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0, 0]);
    h
}

/// Everything the relay sends until it closes (a reset after some bytes ends it too).
fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("no close within {IO_TIMEOUT:?}: {e} (got {got:?})"),
        }
    }
}

/// Send `bytes` in one write on a fresh connection from `from` and return the answer.
fn exchange_from(relay: &Relay, from: Ipv4Addr, bytes: &[u8]) -> String {
    let mut stream = connect_from(from, relay.public);
    stream.write_all(bytes).expect("write");
    String::from_utf8_lossy(&read_all(&mut stream)).into_owned()
}

/// Send `bytes` in one write on a fresh connection from 127.0.0.1.
fn exchange(relay: &Relay, bytes: &[u8]) -> String {
    exchange_from(relay, Ipv4Addr::LOCALHOST, bytes)
}

/// `header` then a health probe, in one write.
fn with_health(header: &[u8]) -> Vec<u8> {
    [header, HEALTH].concat()
}

/// The status line of an answer.
fn status_of(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// Assert a connection is closed with no byte of answer, then that the refusal was
/// counted as `rejected.proxy_header` plus the event naming its cause.
fn assert_closed_silently_and_counted(relay: &Relay, answer: &[u8], event: &str, n: u64) {
    assert!(
        answer.is_empty(),
        "answered: {:?}",
        String::from_utf8_lossy(answer)
    );
    relay.wait_total("/rejected/proxy_header", n);
    relay.wait_total(&format!("/events/{event}"), n);
}

#[test]
fn ap6_v1_tcp4_header_names_the_client_for_the_per_ip_rate() {
    let relay = proxied_relay(&[]);
    let first = exchange(&relay, &with_health(&v1_tcp4("203.0.113.7", 4711)));
    assert!(first.starts_with("HTTP/1.1 200 "), "{first:?}");
    // Same socket peer, same header client: its one attempt is spent.
    let again = exchange(&relay, &with_health(&v1_tcp4("203.0.113.7", 4712)));
    assert_eq!(
        status_of(&again),
        "HTTP/1.1 429 Too Many Requests",
        "{again:?}"
    );
    // Same socket peer, another header client: admitted.
    let other = exchange(&relay, &with_health(&v1_tcp4("203.0.113.8", 4711)));
    assert!(other.starts_with("HTTP/1.1 200 "), "{other:?}");
    assert_eq!(relay.total("/rejected/rate_limited"), 1);
    assert_eq!(relay.total("/rejected/proxy_header"), 0);
}

#[test]
fn ap6_v2_tcp4_and_tcp6_headers_name_the_client_for_the_per_ip_rate() {
    let relay = proxied_relay(&[]);
    let v4 = Ipv4Addr::new(198, 51, 100, 20);
    let v6: std::net::Ipv6Addr = "2001:db8:1:2::7".parse().unwrap();
    for header in [v2_tcp4(v4, 5000), v2_tcp6(v6, 5000)] {
        let first = exchange(&relay, &with_health(&header));
        assert!(first.starts_with("HTTP/1.1 200 "), "{first:?}");
        let again = exchange(&relay, &with_health(&header));
        assert_eq!(status_of(&again), "HTTP/1.1 429 Too Many Requests");
    }
    // Another address in the same IPv6 /64 shares its bucket (per_ip keys IPv6 by /64);
    // one in another /64 does not.
    let same_64: std::net::Ipv6Addr = "2001:db8:1:2::9".parse().unwrap();
    let other_64: std::net::Ipv6Addr = "2001:db8:1:3::7".parse().unwrap();
    let same = exchange(&relay, &with_health(&v2_tcp6(same_64, 1)));
    assert_eq!(status_of(&same), "HTTP/1.1 429 Too Many Requests");
    let other = exchange(&relay, &with_health(&v2_tcp6(other_64, 1)));
    assert!(other.starts_with("HTTP/1.1 200 "), "{other:?}");
}

#[test]
fn ap6_v2_local_header_is_accepted_and_keeps_the_socket_peer() {
    let relay = proxied_relay(&[]);
    let answer = exchange(&relay, &with_health(&v2_local()));
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    relay.wait_total("/events/proxy_header_local", 1);
    // LOCAL used the socket peer's (127.0.0.1) one attempt; a header naming a client
    // is keyed apart from it.
    let again = exchange(&relay, &with_health(&v2_local()));
    assert_eq!(status_of(&again), "HTTP/1.1 429 Too Many Requests");
    let proxied = exchange(
        &relay,
        &with_health(&v2_tcp4(Ipv4Addr::new(192, 0, 2, 1), 9)),
    );
    assert!(proxied.starts_with("HTTP/1.1 200 "), "{proxied:?}");
    assert_eq!(relay.total("/rejected/proxy_header"), 0);
}

#[test]
fn ap6_header_and_head_split_across_writes_are_put_back_together() {
    let relay = proxied_relay(&[]);
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, relay.public);
    let header = v1_tcp4("203.0.113.50", 4711);
    // Cut the header right after a separator, then send the rest with half the head.
    let (a, b) = header.split_at(header.len() - 6);
    stream.write_all(a).unwrap();
    stream.flush().unwrap();
    wait_until("the relay read the first part", || {
        relay.stats()["totals"]["connections"]["handshake"].as_u64() == Some(1)
    });
    stream.write_all(&[b, &HEALTH[..10]].concat()).unwrap();
    stream.write_all(&HEALTH[10..]).unwrap();
    let answer = String::from_utf8_lossy(&read_all(&mut stream)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
}

#[test]
fn ap6_a_request_without_a_header_is_closed_without_an_answer_and_counted() {
    let relay = proxied_relay(&[]);
    let answer = exchange(&relay, HEALTH);
    assert_closed_silently_and_counted(&relay, answer.as_bytes(), "proxy_header_malformed", 1);
}

#[test]
fn ap6_malformed_headers_are_closed_without_an_answer_and_counted() {
    let relay = proxied_relay(&[]);
    let bad: [&[u8]; 3] = [
        b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n",
        b"PROXY TCP5 1.1.1.1 127.0.0.1 1 2\r\n",
        // v2 signature with version 3.
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c\x01\x01\x01\x01\x7f\x00\x00\x01\x00\x01\x00\x02",
    ];
    for (i, header) in bad.iter().enumerate() {
        let answer = exchange(&relay, &with_health(header));
        let n = i as u64 + 1;
        assert_closed_silently_and_counted(&relay, answer.as_bytes(), "proxy_header_malformed", n);
    }
}

#[test]
fn ap6_a_connection_closed_before_its_header_is_counted_as_missing() {
    let relay = proxied_relay(&[]);
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, relay.public);
    stream.write_all(b"PROXY TCP4 1.2").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = read_all(&mut stream);
    assert_closed_silently_and_counted(&relay, &answer, "proxy_header_missing", 1);
}

#[test]
fn ap6_a_late_header_is_closed_at_the_handshake_timeout_without_an_answer() {
    let relay = proxied_relay(&["--handshake-timeout", "300ms"]);
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, relay.public);
    let started = Instant::now();
    stream.write_all(b"PROXY TCP4 203.0.113.7 ").unwrap();
    let answer = read_all(&mut stream);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    assert_closed_silently_and_counted(&relay, &answer, "proxy_header_late", 1);
}

#[test]
fn ap6_a_header_from_an_untrusted_address_is_closed_without_an_answer_and_counted() {
    let relay = Relay::start(&["--proxy-protocol", "--trusted-proxies", "10.0.0.0/8,::1"]);
    let answer = exchange(
        &relay,
        &with_health(&v2_tcp4(Ipv4Addr::new(192, 0, 2, 1), 9)),
    );
    assert_closed_silently_and_counted(&relay, answer.as_bytes(), "proxy_header_untrusted", 1);
    assert_eq!(relay.total("/rejected/rate_limited"), 0);
}

#[test]
fn ap6_without_the_flag_a_proxy_header_is_just_a_malformed_head() {
    let relay = Relay::start(&[]);
    let answer = exchange(&relay, &with_health(&v1_tcp4("203.0.113.7", 1)));
    assert_eq!(status_of(&answer), "HTTP/1.1 400 Bad Request", "{answer:?}");
}

/// A relay trusting `X-Forwarded-For` from 127.0.0.2 only, one attempt per address.
fn forwarded_relay() -> Relay {
    Relay::start(&[
        "--trust-forwarded-for",
        "--trusted-proxies",
        "127.0.0.2",
        "--per-ip-rate",
        "0.01",
        "--per-ip-burst",
        "1",
    ])
}

/// A health probe carrying `X-Forwarded-For: xff`.
fn health_forwarded_for(xff: &str) -> Vec<u8> {
    format!(
        "GET /health HTTP/1.1\r\nHost: relay\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn ap7_forwarded_for_from_an_untrusted_peer_is_ignored_and_the_rate_keys_on_the_socket() {
    let relay = forwarded_relay();
    let spoofer = Ipv4Addr::new(127, 0, 0, 3);
    let first = exchange_from(&relay, spoofer, &health_forwarded_for("198.51.100.1"));
    assert!(first.starts_with("HTTP/1.1 200 "), "{first:?}");
    // A fresh X-Forwarded-For does not buy a fresh budget: the bucket is 127.0.0.3's.
    let spoofed = exchange_from(&relay, spoofer, &health_forwarded_for("198.51.100.2"));
    assert_eq!(
        status_of(&spoofed),
        "HTTP/1.1 429 Too Many Requests",
        "{spoofed:?}"
    );
    assert_eq!(relay.total("/rejected/rate_limited"), 1);
}

#[test]
fn ap7_forwarded_for_from_a_trusted_proxy_names_the_right_most_untrusted_address() {
    let relay = forwarded_relay();
    let proxy = Ipv4Addr::new(127, 0, 0, 2);
    let first = exchange_from(&relay, proxy, &health_forwarded_for("198.51.100.7"));
    assert!(first.starts_with("HTTP/1.1 200 "), "{first:?}");
    // Another client behind the same proxy has its own bucket.
    let other = exchange_from(&relay, proxy, &health_forwarded_for("198.51.100.8"));
    assert!(other.starts_with("HTTP/1.1 200 "), "{other:?}");
    // A client that writes its own X-Forwarded-For entry cannot change what the proxy
    // appended: 198.51.100.7 is still the client, and its attempt is spent; a trusted
    // hop right of it (the proxy itself) is walked past.
    let spoofed = exchange_from(
        &relay,
        proxy,
        &health_forwarded_for("203.0.113.99, 198.51.100.7, 127.0.0.2"),
    );
    assert_eq!(
        status_of(&spoofed),
        "HTTP/1.1 429 Too Many Requests",
        "{spoofed:?}"
    );
    // No header from the proxy: the proxy is the client.
    let bare = exchange_from(&relay, proxy, HEALTH);
    assert!(bare.starts_with("HTTP/1.1 200 "), "{bare:?}");
    let bare_again = exchange_from(&relay, proxy, HEALTH);
    assert_eq!(status_of(&bare_again), "HTTP/1.1 429 Too Many Requests");
}

/// A HAProxy of this test's own in TCP mode, `send-proxy-v2` to the relay; killed and
/// its files removed on drop.
struct Haproxy {
    /// The haproxy process (`-db`: foreground).
    child: Child,
    /// The frontend clients connect to.
    front: SocketAddr,
    /// Its config and log.
    dir: PathBuf,
}

impl Haproxy {
    /// Start in front of `relay`, or `None` (after a loud SKIPPED, or a failure under
    /// `CI`) when haproxy is not installed.
    fn start(relay: SocketAddr) -> Option<Haproxy> {
        if Command::new("haproxy").arg("-v").output().is_err() {
            skip_or_fail(
                "HAProxy in front of the relay: haproxy is not installed. \
                 Run scripts/install-test-tools.sh (Debian package `haproxy`).",
            );
            return None;
        }
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("shardrelay-haproxy-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A port the kernel picked, released for haproxy to bind.
        let front = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = format!(
            "global\n  maxconn 200\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend fe\n  bind {front}\n  default_backend relay\n\
             backend relay\n  server relay {relay} send-proxy-v2\n"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .expect("start haproxy");
        let mut proxy = Haproxy { child, front, dir };
        wait_until("haproxy listens", || {
            proxy.assert_running();
            TcpStream::connect(front).is_ok()
        });
        Some(proxy)
    }

    /// Fail with haproxy's log if it exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default();
            panic!("haproxy exited ({status}):\n{log}");
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tool a test needs is missing: under CI (`CI` set) a failure, since the CI run
/// installs the tools first; elsewhere a loud skip.
fn skip_or_fail(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("missing test tool under CI: {what}");
    }
    eprintln!("SKIPPED: {what}");
}

/// A WebSocket through haproxy from source address `from`.
fn ws_via(front: SocketAddr, from: Ipv4Addr, path: &str) -> common::Ws {
    let request = format!("ws://{front}{path}").into_client_request().unwrap();
    let (ws, _) = tungstenite::client(request, connect_from(from, front)).expect("upgrade");
    ws
}

#[test]
fn ap6_behind_haproxy_send_proxy_v2_traffic_passes_and_the_rate_keys_on_real_clients() {
    let relay = Relay::start(&[
        "--proxy-protocol",
        "--trusted-proxies",
        "127.0.0.1",
        "--per-ip-rate",
        "0.01",
        "--per-ip-burst",
        "2",
    ]);
    let Some(mut haproxy) = Haproxy::start(relay.public) else {
        return;
    };
    let front = haproxy.front;
    // Traffic passes: a pair, each side from its own address.
    let mut a = ws_via(
        front,
        Ipv4Addr::new(127, 0, 0, 21),
        "/?pair=through-haproxy",
    );
    let mut b = ws_via(
        front,
        Ipv4Addr::new(127, 0, 0, 22),
        "/?pair=through-haproxy",
    );
    a.send(Message::Binary(b"hello via haproxy".to_vec().into()))
        .unwrap();
    assert_eq!(
        common::next_message(&mut b),
        Message::Binary(b"hello via haproxy".to_vec().into())
    );
    // 127.0.0.21 spent one attempt; one more is in its burst, the next is refused.
    let limited = Ipv4Addr::new(127, 0, 0, 21);
    let health_via = |from: Ipv4Addr| {
        let mut stream = connect_from(from, front);
        stream.write_all(HEALTH).unwrap();
        String::from_utf8_lossy(&read_all(&mut stream)).into_owned()
    };
    let second = health_via(limited);
    assert!(second.starts_with("HTTP/1.1 200 "), "{second:?}");
    // Refused right after its header, the client gets the relay's 429 through haproxy.
    let third = health_via(limited);
    assert_eq!(
        status_of(&third),
        "HTTP/1.1 429 Too Many Requests",
        "{third:?}"
    );
    relay.wait_total("/rejected/rate_limited", 1);
    // 127.0.0.23 comes through the same haproxy (same socket peer) and is admitted.
    let fresh = health_via(Ipv4Addr::new(127, 0, 0, 23));
    assert!(fresh.starts_with("HTTP/1.1 200 "), "{fresh:?}");
    assert_eq!(relay.total("/rejected/rate_limited"), 1);
    // haproxy's readiness probe may have left before its header; no header was refused.
    for cause in ["malformed", "untrusted", "late", "too_long"] {
        assert_eq!(
            relay.total(&format!("/events/proxy_header_{cause}")),
            0,
            "{cause}"
        );
    }
    haproxy.assert_running();
    drop((a, b));
}

/// A WebSocket on `path` whose connection opens with `header` (a client behind a
/// balancer), from 127.0.0.1.
fn ws_behind(relay: &Relay, header: &[u8], path: &str) -> common::Ws {
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, relay.public);
    stream.write_all(header).unwrap();
    let request = relay.url(path).into_client_request().unwrap();
    let (ws, _) = tungstenite::client(request, stream).expect("upgrade");
    ws
}

/// The next text message as JSON.
fn next_json(ws: &mut common::Ws) -> serde_json::Value {
    let text = common::next_text(ws);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// One `/ws` `auth` with `code` from the client `header` names; the answer's `type` and
/// the close code that follows a failure.
fn ws_auth_behind(relay: &Relay, header: &[u8], code: &str) -> (String, Option<u16>) {
    let mut ws = ws_behind(relay, header, "/ws");
    let text = format!(r#"{{"type":"auth","session_code":"{code}"}}"#);
    ws.send(Message::text(text)).unwrap();
    let answer = next_json(&mut ws)["type"].as_str().unwrap().to_owned();
    let close = (answer != "auth_success").then(|| common::expect_close(&mut ws).0);
    (answer, close)
}

#[test]
fn ap6_the_guessing_budget_is_keyed_on_the_header_client_across_shards() {
    let relay = Relay::start(&[
        "--proxy-protocol",
        "--trusted-proxies",
        "127.0.0.1",
        "--code-guesses-per-ip",
        "2",
        "--shards",
        "2",
    ]);
    let mut mac = ws_behind(&relay, &v2_tcp4(Ipv4Addr::new(192, 0, 2, 10), 1), "/ws");
    mac.send(Message::text(r#"{"type":"register","client_id":"mac-1"}"#))
        .unwrap();
    let registered = next_json(&mut mac);
    let code = registered["code"].as_str().expect("code").to_owned();
    // A wrong code of the right shape (the `/ws` alphabet).
    let alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let wrong = |i: usize| {
        let at = alphabet.find(&code[..1]).unwrap();
        let c = alphabet.as_bytes()[(at + 1 + i) % alphabet.len()] as char;
        format!("{c}{}", &code[1..])
    };
    let attacker = v2_tcp4(Ipv4Addr::new(198, 51, 100, 66), 1);
    for i in 0..2 {
        assert_eq!(
            ws_auth_behind(&relay, &attacker, &wrong(i)),
            ("auth_failed".to_owned(), Some(4404))
        );
    }
    // The attacker's budget is spent, even for the live code...
    assert_eq!(
        ws_auth_behind(&relay, &attacker, &code),
        ("auth_failed".to_owned(), Some(4429))
    );
    // ...and a `?code=` upgrade from it is refused before the upgrade.
    let mut raw = connect_from(Ipv4Addr::LOCALHOST, relay.public);
    let join = common::upgrade_request(&format!("/browser?code={code}"), "");
    raw.write_all(&[attacker.as_slice(), &join].concat())
        .unwrap();
    let answer = String::from_utf8_lossy(&read_all(&mut raw)).into_owned();
    assert_eq!(
        status_of(&answer),
        "HTTP/1.1 429 Too Many Requests",
        "{answer:?}"
    );
    // Another client behind the same balancer (same socket peer) authenticates.
    let bystander = v2_tcp4(Ipv4Addr::new(198, 51, 100, 67), 1);
    assert_eq!(
        ws_auth_behind(&relay, &bystander, &code),
        ("auth_success".to_owned(), None)
    );
}

#[test]
fn ap6_logs_name_the_header_client_not_the_balancer() {
    let relay = proxied_relay(&["--log-level", "debug"]);
    let header = v1_tcp4("203.0.113.77", 4711);
    let mut ws = ws_behind(&relay, &header, "/?pair=log-check");
    common::close_with(&mut ws, 1000);
    wait_until("the upgrade is logged", || {
        relay
            .logs()
            .lines()
            .any(|l| l.contains("upgraded") && l.contains("203.0.113.77:4711"))
    });
}

#[test]
fn ap7_with_both_flags_the_proxy_source_is_the_hop_whose_forwarded_for_counts() {
    let relay = Relay::start(&[
        "--proxy-protocol",
        "--trust-forwarded-for",
        "--trusted-proxies",
        "127.0.0.1,10.0.0.0/8",
        "--per-ip-rate",
        "0.01",
        "--per-ip-burst",
        "1",
    ]);
    let via = |source: [u8; 4], xff: &str| {
        let header = v2_tcp4(Ipv4Addr::from(source), 1);
        exchange(&relay, &[header, health_forwarded_for(xff)].concat())
    };
    // A trusted hop (an L7 proxy behind the L4 balancer): X-Forwarded-For names the client.
    assert!(via([10, 1, 1, 1], "198.51.100.5").starts_with("HTTP/1.1 200 "));
    assert!(via([10, 1, 1, 1], "198.51.100.6").starts_with("HTTP/1.1 200 "));
    let again = via([10, 1, 1, 1], "198.51.100.5");
    assert_eq!(
        status_of(&again),
        "HTTP/1.1 429 Too Many Requests",
        "{again:?}"
    );
    // An untrusted PROXY source is the client whatever its X-Forwarded-For says.
    assert!(via([203, 0, 113, 5], "198.51.100.7").starts_with("HTTP/1.1 200 "));
    let spoofed = via([203, 0, 113, 5], "198.51.100.8");
    assert_eq!(
        status_of(&spoofed),
        "HTTP/1.1 429 Too Many Requests",
        "{spoofed:?}"
    );
}

/// A self-signed pair for `localhost` in a fresh directory (rcgen), removed on drop.
struct TlsPair {
    /// Holds `cert.pem` and `key.pem`.
    dir: PathBuf,
    /// The certificate, for the clients' root store.
    der: rustls::pki_types::CertificateDer<'static>,
}

impl TlsPair {
    fn mint() -> TlsPair {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("shardrelay-proxy-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let minted = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("cert.pem"), minted.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), minted.key_pair.serialize_pem()).unwrap();
        let der = minted.cert.der().clone();
        TlsPair { dir, der }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A client trusting this pair: TLS 1.3 or 1.2, ALPN `http/1.1`.
    fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Drop for TlsPair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS client stream.
type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection through haproxy from source address `from`, handshake done (an
/// error if the relay closed instead of answering the ClientHello).
fn tls_via(
    front: SocketAddr,
    from: Ipv4Addr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<Tls> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect_from(from, front));
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// `GET /health` over TLS through haproxy from `from`: the response, or the error of a
/// connection the relay closed before or during the handshake.
fn tls_health_via(
    front: SocketAddr,
    from: Ipv4Addr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<String> {
    let mut tls = tls_via(front, from, config)?;
    tls.write_all(HEALTH)?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // The relay may close the TCP stream right after its answer, without close_notify.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A `wss://` WebSocket through haproxy from `from`.
fn wss_via(
    front: SocketAddr,
    from: Ipv4Addr,
    path: &str,
    config: &Arc<rustls::ClientConfig>,
) -> tungstenite::WebSocket<Tls> {
    let request = format!("wss://localhost:{}{path}", front.port())
        .into_client_request()
        .unwrap();
    let tls = tls_via(front, from, config).expect("TLS handshake through haproxy");
    let (ws, _) = tungstenite::client(request, tls).expect("upgrade");
    ws
}

#[test]
fn ap6_behind_haproxy_send_proxy_v2_tls_traffic_passes_and_the_rate_keys_on_real_clients() {
    let pair = TlsPair::mint();
    let (cert, key) = (pair.path("cert.pem"), pair.path("key.pem"));
    let relay = Relay::start(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--proxy-protocol",
        "--trusted-proxies",
        "127.0.0.1",
        "--per-ip-rate",
        "0.01",
        "--per-ip-burst",
        "2",
    ]);
    let Some(mut haproxy) = Haproxy::start(relay.public) else {
        return;
    };
    let (front, client) = (haproxy.front, pair.client());
    // Traffic passes over TLS: a pair, each side from its own address.
    let path = "/?pair=tls-through-haproxy";
    let mut a = wss_via(front, Ipv4Addr::new(127, 0, 0, 31), path, &client);
    let mut b = wss_via(front, Ipv4Addr::new(127, 0, 0, 32), path, &client);
    a.send(Message::Binary(b"hello via haproxy, TLS".to_vec().into()))
        .unwrap();
    let got = loop {
        match b.read().expect("read") {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => break other,
        }
    };
    assert_eq!(
        got,
        Message::Binary(b"hello via haproxy, TLS".to_vec().into())
    );
    // 127.0.0.31 spent one attempt; one more is in its burst, the next is refused.
    let limited = Ipv4Addr::new(127, 0, 0, 31);
    let second = tls_health_via(front, limited, &client).expect("second attempt");
    assert!(second.starts_with("HTTP/1.1 200 "), "{second:?}");
    // Refused right after its header: on a TLS listener the relay closes without writing
    // (no plaintext 429 a TLS client could not read), so the handshake fails.
    let third = tls_health_via(front, limited, &client);
    assert!(third.is_err(), "a refused TLS client got {third:?}");
    relay.wait_total("/rejected/rate_limited", 1);
    // 127.0.0.33 comes through the same haproxy (same socket peer) and is admitted.
    let fresh = tls_health_via(front, Ipv4Addr::new(127, 0, 0, 33), &client).expect("fresh");
    assert!(fresh.starts_with("HTTP/1.1 200 "), "{fresh:?}");
    assert_eq!(relay.total("/rejected/rate_limited"), 1);
    for cause in ["malformed", "untrusted", "late", "too_long"] {
        assert_eq!(
            relay.total(&format!("/events/proxy_header_{cause}")),
            0,
            "{cause}"
        );
    }
    haproxy.assert_running();
    drop((a, b));
}

#[test]
fn ap6_a_tls_client_hello_in_the_same_segment_as_the_proxy_header_is_answered() {
    // HAProxy sends its header and the client's first bytes together: the ClientHello
    // arrives with the header, and the client then waits for the ServerHello.
    let pair = TlsPair::mint();
    let (cert, key) = (pair.path("cert.pem"), pair.path("key.pem"));
    let relay = Relay::start(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--proxy-protocol",
        "--trusted-proxies",
        "127.0.0.1",
        "--handshake-timeout",
        "30s",
    ]);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(pair.client(), name).unwrap();
    let mut first = v2_tcp4(Ipv4Addr::new(192, 0, 2, 7), 40_000);
    conn.write_tls(&mut first).unwrap();
    let mut sock = TcpStream::connect(relay.public).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.write_all(&first).unwrap();
    let started = Instant::now();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .expect("the relay answers the ClientHello");
    }
    // Answered at once, not at the handshake timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    tls.write_all(HEALTH).unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    assert_eq!(relay.total("/rejected/handshake_timeout"), 0);
}
