//! In-process tests of the session against a rustls client (no sockets).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};

use super::*;
use crate::tls::keys::{load_server_config, TlsKeyError, TlsKeys};

/// A minted self-signed pair written to a fresh directory.
struct Pair {
    dir: PathBuf,
    cert_der: rustls::pki_types::CertificateDer<'static>,
}

impl Pair {
    fn mint() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("shardrelay-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let minted = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), minted.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), minted.key_pair.serialize_pem()).unwrap();
        Pair {
            dir,
            cert_der: minted.cert.der().clone(),
        }
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn client(
    pair: &Pair,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> ClientConnection {
    let config = client_config(pair, versions, alpn);
    ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap()
}

fn client_config(
    pair: &Pair,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pair.cert_der.clone()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Feed `bytes` to the server in pieces of `step`, as reads would: each time the cut
/// record goes in front, like the reader's scratch buffer.
fn feed(server: &mut TlsSession, bytes: &[u8], step: usize) -> Result<Vec<u8>, TlsError> {
    let mut plain = Vec::new();
    let mut scratch = Vec::new();
    for piece in bytes.chunks(step.max(1)) {
        server.restore_partial(&mut scratch);
        scratch.extend_from_slice(piece);
        server.open(&mut scratch, &mut plain)?;
    }
    Ok(plain)
}

/// Run the handshake to its end, moving bytes in pieces of `step`.
fn handshake(server: &mut TlsSession, client: &mut ClientConnection, step: usize) {
    for _ in 0..20 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        feed(server, &to_server, step).unwrap();
        let to_client = server.unsent().to_vec();
        server.sent(to_client.len());
        client.read_tls(&mut to_client.as_slice()).unwrap();
        client.process_new_packets().unwrap();
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            return;
        }
    }
    panic!("handshake did not finish");
}

fn pair_and_server() -> (Pair, TlsSession) {
    let pair = Pair::mint();
    let config = load_server_config(&pair.cert(), &pair.key()).unwrap();
    let server = TlsSession::new(config).unwrap();
    (pair, server)
}

#[test]
fn tls13_handshake_agrees_on_http11() {
    let (pair, mut server) = pair_and_server();
    let mut client = client(&pair, &[&rustls::version::TLS13], &[b"http/1.1"]);
    handshake(&mut server, &mut client, usize::MAX);
    assert_eq!(server.alpn(), Some(&b"http/1.1"[..]));
    assert_eq!(server.version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[test]
fn tls12_handshake_works_too() {
    let (pair, mut server) = pair_and_server();
    let mut client = client(&pair, &[&rustls::version::TLS12], &[b"http/1.1"]);
    handshake(&mut server, &mut client, usize::MAX);
    assert_eq!(server.version(), Some(rustls::ProtocolVersion::TLSv1_2));
}

#[test]
fn a_client_without_http11_in_alpn_is_refused() {
    let (pair, mut server) = pair_and_server();
    let mut client = client(&pair, &[&rustls::version::TLS13], &[b"h2"]);
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    assert!(feed(&mut server, &hello, usize::MAX).is_err());
}

#[test]
fn records_cut_at_every_boundary_decrypt_whole() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        for step in [1, 7, 100, 4096] {
            let (pair, mut server) = pair_and_server();
            let mut client = client(&pair, &[version], &[b"http/1.1"]);
            handshake(&mut server, &mut client, step);
            let message: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
            client.writer().write_all(&message).unwrap();
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let plain = feed(&mut server, &wire, step).unwrap();
            assert!(plain == message, "step {step}: {} bytes", plain.len());
            assert_eq!(server.held_bytes(), 0, "nothing held between messages");
        }
    }
}

#[test]
fn sealed_records_reach_the_client() {
    let (pair, mut server) = pair_and_server();
    let mut client = client(&pair, &[&rustls::version::TLS13], &[b"http/1.1"]);
    handshake(&mut server, &mut client, usize::MAX);
    let message = vec![b'x'; 50_000];
    let mut wire = Vec::new();
    server.seal(&message, &mut wire).unwrap();
    assert!(wire.len() <= sealed_len(message.len()));
    let mut rest = wire.as_slice();
    let mut got = Vec::new();
    while !rest.is_empty() {
        client.read_tls(&mut rest).unwrap();
        client.process_new_packets().unwrap();
        let mut chunk = vec![0u8; 65536];
        while let Ok(n) = client.reader().read(&mut chunk) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
    }
    assert!(got == message, "got {} bytes", got.len());
}

#[test]
fn garbage_instead_of_a_client_hello_is_an_error() {
    let (_pair, mut server) = pair_and_server();
    let get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(matches!(
        feed(&mut server, get, usize::MAX),
        Err(TlsError::Protocol(_))
    ));
    let (_pair, mut server) = pair_and_server();
    let noise: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    assert!(feed(&mut server, &noise, 13).is_err());
}

#[test]
fn close_notify_ends_the_read_side() {
    let (pair, mut server) = pair_and_server();
    let mut client = client(&pair, &[&rustls::version::TLS13], &[b"http/1.1"]);
    handshake(&mut server, &mut client, usize::MAX);
    client.send_close_notify();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    let mut plain = Vec::new();
    let opened = server.open(&mut wire, &mut plain).unwrap();
    assert!(opened.peer_closed && server.peer_closed());
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let a = Pair::mint();
    let b = Pair::mint();
    let err = load_server_config(&a.cert(), &b.key()).unwrap_err();
    assert!(matches!(err, TlsKeyError::Mismatch { .. }), "{err}");
    let missing = a.dir.join("nope.pem");
    let err = load_server_config(&missing, &a.key()).unwrap_err();
    assert!(matches!(err, TlsKeyError::Cert { .. }), "{err}");
    let err = load_server_config(&a.key(), &a.key()).unwrap_err();
    assert!(matches!(err, TlsKeyError::NoCert { .. }), "{err}");
    let err = load_server_config(&a.cert(), &a.cert()).unwrap_err();
    assert!(matches!(err, TlsKeyError::Key { .. }), "{err}");
}

#[test]
fn reload_swaps_the_pair_and_a_bad_pair_keeps_the_old() {
    let a = Pair::mint();
    let keys = TlsKeys::load(&a.cert(), &a.key()).unwrap();
    let first = keys.current();
    // A bad pair on disk: the old config stays in force.
    std::fs::write(a.key(), b"not a key").unwrap();
    assert!(keys.reload().is_err());
    assert!(Arc::ptr_eq(&first, &keys.current()));
    // A good new pair: new handshakes get it.
    let b = Pair::mint();
    std::fs::copy(b.cert(), a.cert()).unwrap();
    std::fs::copy(b.key(), a.key()).unwrap();
    keys.reload().unwrap();
    assert!(!Arc::ptr_eq(&first, &keys.current()));
    let mut server = TlsSession::new(keys.current()).unwrap();
    let mut client = client(&b, &[&rustls::version::TLS13], &[b"http/1.1"]);
    handshake(&mut server, &mut client, usize::MAX);
}

#[test]
fn the_session_state_size_is_known() {
    // The inline part of an idle TLS connection's state (docs/benchmarks.md, "TLS").
    let size = std::mem::size_of::<TlsSession>();
    eprintln!("size_of::<TlsSession>() = {size} B");
    assert!(size < 2048, "TlsSession grew to {size} B");
}

/// A client offering only `suite` under `version`.
fn client_with_suite(
    pair: &Pair,
    version: &'static SupportedProtocolVersion,
    suite: rustls::CipherSuite,
) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    roots.add(pair.cert_der.clone()).unwrap();
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| s.suite() == suite);
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Everything the client has to send.
fn client_wire(client: &mut ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    wire
}

/// Give `wire` to the client and read all the plaintext it yields.
fn client_reads(client: &mut ClientConnection, wire: &[u8]) -> Vec<u8> {
    let mut rest = wire;
    let mut got = Vec::new();
    while !rest.is_empty() {
        client.read_tls(&mut rest).unwrap();
        client.process_new_packets().unwrap();
        let mut chunk = vec![0u8; 65536];
        while let Ok(n) = client.reader().read(&mut chunk) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
    }
    got
}

/// Server-sent records plus whatever the session queued first (a KeyUpdate answer).
fn server_sends(server: &mut TlsSession, message: &[u8]) -> Vec<u8> {
    let mut wire = server.unsent().to_vec();
    server.sent(wire.len());
    server.seal(message, &mut wire).unwrap();
    wire
}

const SUITES: [(&SupportedProtocolVersion, rustls::CipherSuite); 6] = [
    (
        &rustls::version::TLS13,
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        &rustls::version::TLS13,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        &rustls::version::TLS13,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        &rustls::version::TLS12,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        &rustls::version::TLS12,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        &rustls::version::TLS12,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

#[test]
fn after_the_handshake_records_round_trip_with_a_rustls_client_for_every_suite() {
    for (version, suite) in SUITES {
        let (pair, mut server) = pair_and_server();
        let mut client = client_with_suite(&pair, version, suite);
        handshake(&mut server, &mut client, 1000);
        assert_eq!(client.negotiated_cipher_suite().unwrap().suite(), suite);
        assert!(
            server.traffic_mut().is_some(),
            "rustls's connection handed over"
        );
        for round in 0..30usize {
            let message: Vec<u8> = (0..(round * 1777) % 40_000 + 1).map(|i| i as u8).collect();
            client.writer().write_all(&message).unwrap();
            let wire = client_wire(&mut client);
            let plain = feed(&mut server, &wire, 1 + round * 331).unwrap();
            assert!(plain == message, "{suite:?} round {round}: to server");
            let wire = server_sends(&mut server, &message);
            assert!(
                client_reads(&mut client, &wire) == message,
                "{suite:?} round {round}"
            );
            assert_eq!(server.held_bytes(), 0);
        }
    }
}

#[test]
fn a_key_update_from_a_rustls_client_is_honoured_both_ways() {
    for suite in [
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
    ] {
        let (pair, mut server) = pair_and_server();
        let mut client = client_with_suite(&pair, &rustls::version::TLS13, suite);
        handshake(&mut server, &mut client, usize::MAX);
        for round in 0..3 {
            // The client renews its keys and asks us to renew ours.
            client.refresh_traffic_keys().unwrap();
            client.writer().write_all(b"after the update").unwrap();
            let wire = client_wire(&mut client);
            let plain = feed(&mut server, &wire, 3).unwrap();
            assert_eq!(plain, b"after the update", "{suite:?} round {round}");
            assert!(
                !server.unsent().is_empty(),
                "our KeyUpdate answer is queued"
            );
            let wire = server_sends(&mut server, b"and ours");
            assert_eq!(client_reads(&mut client, &wire), b"and ours");
        }
    }
}

#[test]
fn the_send_key_is_renewed_at_the_confidentiality_limit() {
    let (pair, mut server) = pair_and_server();
    let mut client13 = client(&pair, &[&rustls::version::TLS13], &[b"http/1.1"]);
    handshake(&mut server, &mut client13, usize::MAX);
    server.traffic_mut().unwrap().set_tx_limit(3);
    let mut expected = Vec::new();
    let mut wire = Vec::new();
    for i in 0..20u8 {
        let message = vec![i; 100 + usize::from(i)];
        server.seal(&message, &mut wire).unwrap();
        expected.extend_from_slice(&message);
    }
    assert_eq!(client_reads(&mut client13, &wire), expected);
    // A TLS 1.2 session cannot renew: it ends instead.
    let (pair, mut server) = pair_and_server();
    let mut client12 = client(&pair, &[&rustls::version::TLS12], &[b"http/1.1"]);
    handshake(&mut server, &mut client12, usize::MAX);
    // The server's Finished went out as record 0; "one" is record 1.
    server.traffic_mut().unwrap().set_tx_limit(2);
    server.seal(b"one", &mut Vec::new()).unwrap();
    assert!(matches!(
        server.seal(b"two", &mut Vec::new()),
        Err(TlsError::Exhausted)
    ));
}

#[test]
fn a_corrupted_record_from_a_rustls_client_is_an_error_not_a_panic() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (pair, mut server) = pair_and_server();
        let mut client = client(&pair, &[version], &[b"http/1.1"]);
        handshake(&mut server, &mut client, usize::MAX);
        client.writer().write_all(b"hello").unwrap();
        let mut wire = client_wire(&mut client);
        let at = wire.len() - 3;
        wire[at] ^= 0x80;
        assert!(matches!(
            feed(&mut server, &wire, usize::MAX),
            Err(TlsError::Record("bad record MAC"))
        ));
    }
}

#[test]
fn close_notify_from_our_side_reaches_the_client() {
    let (pair, mut server) = pair_and_server();
    let mut client = client(&pair, &[&rustls::version::TLS13], &[b"http/1.1"]);
    handshake(&mut server, &mut client, usize::MAX);
    server.queue_close_notify();
    let wire = server.unsent().to_vec();
    let mut rest = wire.as_slice();
    client.read_tls(&mut rest).unwrap();
    let state = client.process_new_packets().unwrap();
    assert!(state.peer_has_closed());
}

#[test]
fn an_idle_tls_session_after_the_handshake_is_small() {
    // The inline part once rustls's connection is dropped (docs/benchmarks.md, "TLS").
    let (pair, mut server) = pair_and_server();
    let mut client = client(&pair, &[&rustls::version::TLS13], &[b"http/1.1"]);
    handshake(&mut server, &mut client, usize::MAX);
    assert!(!server.is_handshaking() && server.traffic_mut().is_some());
    assert_eq!(server.alpn(), Some(&b"http/1.1"[..]));
    let size = std::mem::size_of::<TlsSession>();
    eprintln!("size_of::<TlsSession>() = {size} B");
    assert!(size <= 320, "TlsSession grew to {size} B");
}

#[test]
fn data_in_the_flight_that_finishes_the_handshake_survives_the_hand_off() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        for step in [1, 7, 100, usize::MAX] {
            let (pair, mut server) = pair_and_server();
            let mut client = client(&pair, &[version], &[b"http/1.1"]);
            // Written before the handshake: rustls sends it right behind its Finished.
            let request = b"GET /v1/pair HTTP/1.1\r\nHost: x\r\n\r\n".repeat(50);
            client.writer().write_all(&request).unwrap();
            let mut got = Vec::new();
            for _ in 0..20 {
                let wire = client_wire(&mut client);
                got.extend(feed(&mut server, &wire, step).unwrap());
                let to_client = server.unsent().to_vec();
                server.sent(to_client.len());
                client.read_tls(&mut to_client.as_slice()).unwrap();
                client.process_new_packets().unwrap();
                if got.len() >= request.len() {
                    break;
                }
            }
            assert!(
                got == request,
                "{version:?} step {step}: {} bytes",
                got.len()
            );
            assert!(!server.is_handshaking());
            assert_eq!(server.held_bytes(), 0);
        }
    }
}

#[test]
fn a_resumed_handshake_hands_off_too() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let pair = Pair::mint();
        let config = load_server_config(&pair.cert(), &pair.key()).unwrap();
        // One client config (and its session cache) for both connections.
        let shared = client_config(&pair, &[version], &[b"http/1.1"]);
        for i in 0..2 {
            let name = ServerName::try_from("localhost").unwrap();
            let mut client = ClientConnection::new(shared.clone(), name).unwrap();
            let mut server = TlsSession::new(config.clone()).unwrap();
            handshake(&mut server, &mut client, 50);
            if i == 1 {
                assert_eq!(
                    client.handshake_kind(),
                    Some(rustls::HandshakeKind::Resumed),
                    "{version:?}"
                );
            }
            client.writer().write_all(b"ping").unwrap();
            let wire = client_wire(&mut client);
            assert_eq!(feed(&mut server, &wire, 3).unwrap(), b"ping");
            let wire = server_sends(&mut server, b"pong");
            assert_eq!(client_reads(&mut client, &wire), b"pong");
        }
    }
}
