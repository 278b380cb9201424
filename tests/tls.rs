//! Native TLS on the public listener (PROTOCOL §1.1, issue #16 point 1), black-box:
//! every style of §3–§6 and `/health` over `wss://`/`https://` through a rustls client,
//! TLS 1.2 and 1.3, ALPN, the handshake timeout, garbage and plain HTTP instead of a
//! ClientHello, SIGHUP reload, and a bad pair at start-up. Certificates are minted here
//! (rcgen); no key is committed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// A TLS client stream.
type Tls = StreamOwned<ClientConnection, TcpStream>;
/// A `wss://` client.
type Wss = WebSocket<Tls>;

/// A minted self-signed certificate for `localhost` and `127.0.0.1`, in a fresh directory.
struct Pki {
    dir: PathBuf,
    der: CertificateDer<'static>,
}

impl Pki {
    fn mint() -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("shardrelay-tls-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki::mint_into(&dir, "cert.pem", "key.pem");
        Pki { dir, der: pki }
    }

    /// Mint a pair into `dir` (atomically: written aside, then renamed over).
    fn mint_into(dir: &Path, cert: &str, key: &str) -> CertificateDer<'static> {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let minted = rcgen::generate_simple_self_signed(names).unwrap();
        std::fs::write(dir.join("new-cert"), minted.cert.pem()).unwrap();
        std::fs::write(dir.join("new-key"), minted.key_pair.serialize_pem()).unwrap();
        std::fs::rename(dir.join("new-cert"), dir.join(cert)).unwrap();
        std::fs::rename(dir.join("new-key"), dir.join(key)).unwrap();
        minted.cert.der().clone()
    }

    fn cert(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.join("key.pem").display().to_string()
    }

    /// Start a relay serving this pair.
    fn relay(&self, extra: &[&str]) -> Relay {
        let (cert, key) = (self.cert(), self.key());
        let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
        args.extend_from_slice(extra);
        Relay::start(&args)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client trusting `roots`, offering `versions` and `alpn`.
fn client_config(
    roots: &[&CertificateDer<'static>],
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The usual client: TLS 1.3 or 1.2, ALPN `http/1.1`, trusting `pki`.
fn usual(pki: &Pki) -> Arc<ClientConfig> {
    client_config(
        &[&pki.der],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        &[b"http/1.1"],
    )
}

/// Connect and finish the TLS handshake.
fn tls_connect(relay: &Relay, config: Arc<ClientConfig>) -> std::io::Result<Tls> {
    let sock = TcpStream::connect(relay.public)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// Open a `wss://` WebSocket with extra headers.
fn wss(relay: &Relay, config: Arc<ClientConfig>, path: &str, headers: &[(&str, &str)]) -> Wss {
    let url = format!("wss://localhost:{}{path}", relay.public.port());
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        let name: tungstenite::http::HeaderName = name.parse().unwrap();
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).unwrap());
    }
    let tls = tls_connect(relay, config).expect("TLS handshake");
    match tungstenite::client(request, tls) {
        Ok((ws, _)) => ws,
        Err(e) => panic!("wss upgrade on {path} failed: {e:?}"),
    }
}

fn next_data(ws: &mut Wss) -> Message {
    loop {
        match ws.read().expect("read message") {
            m @ (Message::Text(_) | Message::Binary(_)) => return m,
            Message::Close(frame) => panic!("unexpected close {frame:?}"),
            _ => continue,
        }
    }
}

fn next_json(ws: &mut Wss) -> Value {
    match next_data(ws) {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected text, got {other:?}"),
    }
}

fn next_binary(ws: &mut Wss) -> Vec<u8> {
    match next_data(ws) {
        Message::Binary(b) => b.to_vec(),
        other => panic!("expected binary, got {other:?}"),
    }
}

fn send_text(ws: &mut Wss, text: &str) {
    ws.send(Message::text(text.to_owned())).unwrap();
}

/// An HTTP/1.1 exchange over TLS: send `request`, read the whole response.
fn https(relay: &Relay, config: Arc<ClientConfig>, request: &[u8]) -> HttpResponse {
    let mut tls = tls_connect(relay, config).expect("TLS handshake");
    tls.write_all(request).unwrap();
    tls.flush().unwrap();
    read_all(&mut tls)
}

/// Read to EOF (an unclean end after the response counts as EOF).
fn read_all(tls: &mut Tls) -> HttpResponse {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    parse_response(&raw)
}

/// The relay closes the socket (EOF or reset) within `limit`, having sent nothing.
fn closed_without_answer(mut sock: TcpStream, limit: Duration) {
    sock.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("not closed within {limit:?}: {e}"),
        }
    }
    assert!(started.elapsed() < limit, "closed too late");
    assert!(
        !got.starts_with(b"HTTP/"),
        "got an HTTP answer: {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn pt1_health_over_https_with_tls13_and_tls12() {
    let pki = Pki::mint();
    let relay = pki.relay(&[]);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(&[&pki.der], &[version], &[b"http/1.1"]);
        let mut tls = tls_connect(&relay, config).unwrap();
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        let expected = if version == &rustls::version::TLS13 {
            rustls::ProtocolVersion::TLSv1_3
        } else {
            rustls::ProtocolVersion::TLSv1_2
        };
        assert_eq!(tls.conn.protocol_version(), Some(expected));
        tls.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
            .unwrap();
        let resp = read_all(&mut tls);
        assert_eq!(resp.status, 200, "{}", resp.body_text());
        let body: Value = serde_json::from_slice(&resp.body).unwrap();
        assert!(body.is_object(), "{body}");
    }
}

#[test]
fn pt1_a_client_without_http11_in_alpn_fails_the_handshake() {
    let pki = Pki::mint();
    let relay = pki.relay(&[]);
    let config = client_config(&[&pki.der], &[&rustls::version::TLS13], &[b"h2"]);
    assert!(tls_connect(&relay, config).is_err());
    relay.wait_total("/rejected/tls_handshake", 1);
    // A client with no ALPN at all is served (ALPN is optional for the client).
    let none = client_config(&[&pki.der], &[&rustls::version::TLS13], &[]);
    let resp = https(&relay, none, b"GET /health HTTP/1.1\r\nHost: r\r\n\r\n");
    assert_eq!(resp.status, 200);
}

#[test]
fn pt1_server_id_binary_and_phone_relay_over_wss() {
    let pki = Pki::mint();
    let relay = pki.relay(&[]);
    let mut binary = wss(
        &relay,
        usual(&pki),
        "/v1/server",
        &[
            ("X-Pyrycode-Server", "srv-tls"),
            ("X-Pyrycode-Version", "1.0.0"),
            ("User-Agent", "pyrycode-binary/1.0"),
        ],
    );
    let mut phone = wss(
        &relay,
        usual(&pki),
        "/v1/client",
        &[
            ("X-Pyrycode-Server", "srv-tls"),
            ("X-Pyrycode-Token", "tok"),
            ("User-Agent", "pyrycode-phone/1.0"),
            ("X-Pyrycode-Device-Name", "test phone"),
        ],
    );
    send_text(&mut phone, r#"{"hello":"binary"}"#);
    let envelope = next_json(&mut binary);
    assert_eq!(envelope["frame"], json!({"hello": "binary"}), "{envelope}");
    let conn_id = envelope["conn_id"].as_str().unwrap().to_owned();
    let big = "x".repeat(100_000);
    let reply = json!({"conn_id": conn_id, "frame": {"big": big}}).to_string();
    send_text(&mut binary, &reply);
    assert_eq!(next_json(&mut phone), json!({"big": big}));
}

#[test]
fn pt1_pair_over_wss_both_ways_up_to_max_message() {
    let pki = Pki::mint();
    let relay = pki.relay(&["--max-message", "256KiB"]);
    let mut a = wss(&relay, usual(&pki), "/?pair=tls-room", &[]);
    let mut b = wss(&relay, usual(&pki), "/v1/pair?pair=tls-room", &[]);
    for size in [0usize, 1, 125, 126, 16_384, 16_385, 65_536, 256 * 1024] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        a.send(Message::binary(payload.clone())).unwrap();
        assert!(next_binary(&mut b) == payload, "a→b size {size}");
        b.send(Message::binary(payload.clone())).unwrap();
        assert!(next_binary(&mut a) == payload, "b→a size {size}");
    }
}

#[test]
fn pt1_session_host_and_browser_over_wss() {
    let pki = Pki::mint();
    let relay = pki.relay(&[]);
    let mut host = wss(&relay, usual(&pki), "/mac", &[]);
    let registered = next_json(&mut host);
    assert_eq!(registered["type"], "registered", "{registered}");
    let code = registered["code"].as_str().unwrap().to_owned();
    let mut browser = wss(&relay, usual(&pki), "/browser", &[]);
    send_text(
        &mut browser,
        &json!({"type": "join", "code": code}).to_string(),
    );
    assert_eq!(next_json(&mut browser)["type"], "joined");
    assert_eq!(next_json(&mut host)["type"], "joined");
    let data = r#"{"type":"data","payload":{"n":1}}"#;
    send_text(&mut browser, data);
    assert_eq!(
        next_json(&mut host),
        serde_json::from_str::<Value>(data).unwrap()
    );
    // The join moved the browser to the code's shard (with its TLS session): it still
    // speaks both ways.
    let back = r#"{"type":"data","payload":"back"}"#;
    send_text(&mut host, back);
    assert_eq!(
        next_json(&mut browser),
        serde_json::from_str::<Value>(back).unwrap()
    );
}

#[test]
fn pt1_session_ws_mac_and_browser_over_wss() {
    let pki = Pki::mint();
    let relay = pki.relay(&[]);
    let mut mac = wss(&relay, usual(&pki), "/ws", &[]);
    send_text(&mut mac, r#"{"type":"register","client_id":"mac-1"}"#);
    let m = next_json(&mut mac);
    assert_eq!(m["type"], "registered", "{m}");
    let code = m["code"].as_str().unwrap().to_owned();
    let mut browser = wss(&relay, usual(&pki), "/ws", &[]);
    send_text(
        &mut browser,
        &json!({"type": "auth", "session_code": code}).to_string(),
    );
    assert_eq!(next_json(&mut browser)["type"], "auth_success");
    assert_eq!(next_json(&mut mac)["type"], "browser_connected");
}

/// Mint a ticket on the (plain) admin listener.
fn mint_ticket(relay: &Relay) -> String {
    let body =
        r#"{"workspace_id":"ws","source_id":"a","dest_id":"b","ttl_ms":30000,"max_bytes":0}"#;
    let req = format!(
        "POST /v1/tickets HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = raw_http(relay.admin, req.as_bytes());
    assert_eq!(resp.status, 201, "{}", resp.body_text());
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    v["ticket"].as_str().unwrap().to_owned()
}

#[test]
fn pt1_ticket_put_and_get_over_https() {
    let pki = Pki::mint();
    let relay = pki.relay(&[]);
    let ticket = mint_ticket(&relay);
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let put_body = body.clone();
    let (config, addr_relay) = (usual(&pki), &relay);
    std::thread::scope(|s| {
        let put = s.spawn(|| {
            let mut tls = tls_connect(addr_relay, config.clone()).unwrap();
            let head = format!(
                "PUT /v1/relay HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {ticket}\r\n\
                 Content-Length: {}\r\n\r\n",
                put_body.len()
            );
            tls.write_all(head.as_bytes()).unwrap();
            tls.write_all(&put_body).unwrap();
            tls.flush().unwrap();
            read_all(&mut tls)
        });
        let get = https(
            addr_relay,
            config.clone(),
            format!("GET /v1/relay HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {ticket}\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(get.status, 200, "{}", get.body_text());
        assert!(get.body == body, "GET body: {} bytes", get.body.len());
        let put = put.join().unwrap();
        assert!((200..300).contains(&put.status), "PUT: {}", put.status);
    });
}

#[test]
fn pt1_a_stalled_handshake_is_closed_at_the_handshake_timeout() {
    let pki = Pki::mint();
    let relay = pki.relay(&["--handshake-timeout", "500ms"]);
    // Nothing at all, and a ClientHello cut short.
    let silent = TcpStream::connect(relay.public).unwrap();
    let mut cut = TcpStream::connect(relay.public).unwrap();
    cut.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .unwrap();
    closed_without_answer(silent, Duration::from_secs(5));
    closed_without_answer(cut, Duration::from_secs(5));
    relay.wait_total("/rejected/handshake_timeout", 2);
    // The relay serves on.
    let resp = https(
        &relay,
        usual(&pki),
        b"GET /health HTTP/1.1\r\nHost: r\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
}

#[test]
fn pt1_garbage_or_plain_http_instead_of_a_client_hello_is_closed_without_an_answer() {
    let pki = Pki::mint();
    let relay = pki.relay(&[]);
    let mut plain = TcpStream::connect(relay.public).unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: r\r\n\r\n")
        .unwrap();
    closed_without_answer(plain, Duration::from_secs(5));
    let mut garbage = TcpStream::connect(relay.public).unwrap();
    let noise: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 256) as u8).collect();
    let _ = garbage.write_all(&noise);
    closed_without_answer(garbage, Duration::from_secs(5));
    // A record header that claims a huge length.
    let mut huge = TcpStream::connect(relay.public).unwrap();
    huge.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).unwrap();
    closed_without_answer(huge, Duration::from_secs(5));
    relay.wait_total("/rejected/tls_handshake", 3);
    let resp = https(
        &relay,
        usual(&pki),
        b"GET /health HTTP/1.1\r\nHost: r\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
}

#[test]
fn pt1_a_connection_refused_at_accept_on_a_tls_listener_is_closed_without_plaintext() {
    let pki = Pki::mint();
    let relay = pki.relay(&["--max-connections", "1"]);
    // The one connection the cap allows, held open in its handshake.
    let _held = TcpStream::connect(relay.public).unwrap();
    relay.wait_total("/accepted", 1);
    let refused = TcpStream::connect(relay.public).unwrap();
    closed_without_answer(refused, Duration::from_secs(5));
    relay.wait_total("/rejected/over_capacity", 1);
}

/// The leaf certificate a new connection is served.
fn served_cert(relay: &Relay, config: Arc<ClientConfig>) -> CertificateDer<'static> {
    let tls = tls_connect(relay, config).unwrap();
    tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[test]
fn pt1_sighup_serves_the_new_pair_to_new_connections_and_old_ones_relay_on() {
    let pki = Pki::mint();
    let relay = pki.relay(&[]);
    let first = pki.der.clone();
    let mut a = wss(&relay, usual(&pki), "/?pair=reload", &[]);
    let mut b = wss(&relay, usual(&pki), "/?pair=reload", &[]);
    let second = Pki::mint_into(&pki.dir, "cert.pem", "key.pem");
    let both = client_config(
        &[&first, &second],
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
    );
    assert_eq!(served_cert(&relay, both.clone()), first);
    relay.signal(libc::SIGHUP);
    wait_until("the new certificate is served", || {
        served_cert(&relay, both.clone()) == second
    });
    // The connections made before the reload relay on.
    a.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(next_binary(&mut b), vec![1, 2, 3]);
    b.send(Message::binary(vec![4])).unwrap();
    assert_eq!(next_binary(&mut a), vec![4]);
    // A bad pair on disk: one error line, and the pair in force stays.
    std::fs::write(
        pki.dir.join("key.pem"),
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n",
    )
    .unwrap();
    relay.signal(libc::SIGHUP);
    wait_until("the failed reload is logged", || {
        relay.logs().contains("TLS pair not reloaded")
    });
    assert_eq!(relay.logs().matches("TLS pair not reloaded").count(), 1);
    assert_eq!(served_cert(&relay, both), second);
    // A key of another certificate is refused the same way.
    let other = Pki::mint();
    std::fs::copy(other.dir.join("key.pem"), pki.dir.join("key.pem")).unwrap();
    relay.signal(libc::SIGHUP);
    wait_until("the second failed reload is logged", || {
        relay.logs().matches("TLS pair not reloaded").count() == 2
    });
    let fresh = client_config(&[&second], &[&rustls::version::TLS13], &[b"http/1.1"]);
    let resp = https(&relay, fresh, b"GET /health HTTP/1.1\r\nHost: r\r\n\r\n");
    assert_eq!(resp.status, 200);
}

/// Start the relay with `args` and expect it to exit 2 with one line on stderr.
fn exits_2_with_one_line(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(out.stdout.is_empty(), "no ready line");
    stderr
}

#[test]
fn pt1_a_bad_pair_at_start_up_exits_2_with_one_line() {
    let a = Pki::mint();
    let b = Pki::mint();
    let mismatched = exits_2_with_one_line(&["--tls-cert", &a.cert(), "--tls-key", &b.key()]);
    assert!(mismatched.contains("does not match"), "{mismatched}");
    let missing = a.dir.join("missing.pem").display().to_string();
    let absent = exits_2_with_one_line(&["--tls-cert", &missing, "--tls-key", &a.key()]);
    assert!(absent.contains("missing.pem"), "{absent}");
    let swapped = exits_2_with_one_line(&["--tls-cert", &a.key(), "--tls-key", &a.cert()]);
    assert!(swapped.contains("TLS"), "{swapped}");
    let secret = std::fs::read_to_string(a.dir.join("key.pem")).unwrap();
    let body = secret.lines().nth(1).unwrap();
    assert!(!swapped.contains(body), "no key material in the message");
}

#[test]
fn pt1_a_tls_connection_handed_to_its_owner_shard_keeps_its_session() {
    let pki = Pki::mint();
    let relay = pki.relay(&["--shards", "4"]);
    let mut pairs = Vec::new();
    for i in 0..12 {
        let code = format!("handoff-{i}");
        let a = wss(&relay, usual(&pki), &format!("/?pair={code}"), &[]);
        let b = wss(&relay, usual(&pki), &format!("/?pair={code}"), &[]);
        pairs.push((a, b));
    }
    for (i, (a, b)) in pairs.iter_mut().enumerate() {
        let payload = vec![i as u8; 20_000];
        a.send(Message::binary(payload.clone())).unwrap();
        assert!(next_binary(b) == payload, "pair {i}");
    }
    let stats = relay.stats();
    assert!(
        stats["totals"]["handoffs"].as_u64().unwrap() > 0,
        "no TLS connection was handed off: {stats}"
    );
}

/// After the handshake the relay keeps only the traffic keys and does the record layer
/// itself (issue #16 point 3): a TLS 1.3 KeyUpdate from a client — asking the relay to
/// renew its keys too — must be honoured in both directions, over and over.
#[test]
fn pt3_a_client_key_update_mid_connection_is_honoured_both_ways() {
    let pki = Pki::mint();
    let relay = pki.relay(&[]);
    let tls13 = client_config(&[&pki.der], &[&rustls::version::TLS13], &[b"http/1.1"]);
    let mut a = wss(&relay, tls13.clone(), "/?pair=tls-keyupdate", &[]);
    let mut b = wss(&relay, tls13, "/v1/pair?pair=tls-keyupdate", &[]);
    for round in 0..4u8 {
        a.get_mut().conn.refresh_traffic_keys().unwrap();
        if round % 2 == 1 {
            b.get_mut().conn.refresh_traffic_keys().unwrap();
        }
        let payload = vec![round; 1000 + usize::from(round)];
        a.send(Message::binary(payload.clone())).unwrap();
        assert!(next_binary(&mut b) == payload, "a→b round {round}");
        b.send(Message::binary(payload.clone())).unwrap();
        assert!(next_binary(&mut a) == payload, "b→a round {round}");
    }
}
