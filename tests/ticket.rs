//! Tickets (PROTOCOL §6), black-box: minting on the admin listener, then a PUT and a
//! GET on the public listener, with raw sockets and with real `curl`. Each test is
//! named for the acceptance point (issue 5) it shows.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `POST /v1/tickets` with a JSON body (and an optional admin token).
fn post_tickets(relay: &Relay, body: &str, token: Option<&str>) -> HttpResponse {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "POST /v1/tickets HTTP/1.1\r\nHost: relay\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_http(relay.admin, req.as_bytes())
}

/// Mint a ticket (workspace `ws`) with a TTL and body cap; returns the ticket.
fn mint(relay: &Relay, ttl_ms: u64, max_bytes: u64) -> String {
    mint_in(relay, "ws", ttl_ms, max_bytes)
}

/// Mint in a workspace.
fn mint_in(relay: &Relay, workspace: &str, ttl_ms: u64, max_bytes: u64) -> String {
    let body = format!(
        r#"{{"workspace_id":"{workspace}","source_id":"exe-a","dest_id":"exe-b","ttl_ms":{ttl_ms},"max_bytes":{max_bytes}}}"#
    );
    let resp = post_tickets(relay, &body, None);
    assert_eq!(resp.status, 201, "{}", resp.body_text());
    let v: Value = serde_json::from_slice(&resp.body).expect("mint JSON");
    v["ticket"].as_str().expect("ticket").to_owned()
}

/// Open a relay request (`PUT` or `GET`) and send its head (plus `body`).
fn open_side(relay: &Relay, method: &str, ticket: &str, extra: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(relay.public).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let head = format!(
        "{method} /v1/relay HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {ticket}\r\n{extra}\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

/// Read a whole response (to EOF or reset).
fn read_response(mut s: TcpStream) -> HttpResponse {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    parse_response(&raw)
}

/// A one-shot request on a ticket: the whole response.
fn request(relay: &Relay, method: &str, ticket: &str) -> HttpResponse {
    let extra = if method == "PUT" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    read_response(open_side(relay, method, ticket, extra, b""))
}

/// Wait until `n` connections of a ticket side kind are open.
fn wait_side(relay: &Relay, kind: &str, n: u64) {
    let pointer = format!("/connections/{kind}");
    wait_until(&format!("{kind} == {n}"), || relay.total(&pointer) == n);
}

/// Decode a complete chunked body; None if it lacks its last chunk.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return body.starts_with(b"\r\n").then_some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Deterministic test bytes: `len` bytes of a splitmix64 stream starting at word `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut i = seed;
    while out.len() < len {
        out.extend_from_slice(&splitmix(i).to_le_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// One splitmix64 output.
fn splitmix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------- 1. minting

#[test]
fn a1_mint_returns_201_ticket_and_expiry() {
    let relay = Relay::start(&["--shards", "2"]);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let resp = post_tickets(
        &relay,
        r#"{"workspace_id":"w","source_id":"s","dest_id":"d","ttl_ms":60000}"#,
        None,
    );
    assert_eq!(resp.status, 201, "{}", resp.body_text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    let ticket = v["ticket"].as_str().unwrap();
    assert!(ticket.starts_with("rly_") && ticket.len() == 47, "{ticket}");
    assert!(ticket[4..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let expires = v["expires_at"].as_u64().unwrap();
    assert!(expires >= before + 59_000 && expires <= before + 61_000 + 5_000);
    // Default TTL is 300 s.
    let resp = post_tickets(
        &relay,
        r#"{"workspace_id":"w","source_id":"s","dest_id":"d"}"#,
        None,
    );
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert!(v["expires_at"].as_u64().unwrap() >= before + 299_000);
    assert!(!relay.logs().contains(ticket), "ticket logged");
}

#[test]
fn a1_mint_rejects_bad_bodies_with_400() {
    let relay = Relay::start(&[]);
    for body in [
        "not json",
        r#"{"source_id":"s","dest_id":"d"}"#,
        r#"{"workspace_id":"w","dest_id":"d"}"#,
        r#"{"workspace_id":"w","source_id":"s"}"#,
        r#"{"workspace_id":"","source_id":"s","dest_id":"d"}"#,
        r#"{"workspace_id":"w","source_id":"","dest_id":"d"}"#,
        r#"{"workspace_id":"w","source_id":"s","dest_id":""}"#,
        r#"{"workspace_id":"w","source_id":"s","dest_id":"d","ttl_ms":0}"#,
        r#"{"workspace_id":"w","source_id":"s","dest_id":"d","ttl_ms":-1}"#,
        r#"{"workspace_id":7,"source_id":"s","dest_id":"d"}"#,
    ] {
        assert_eq!(post_tickets(&relay, body, None).status, 400, "{body}");
    }
    let big = "x".repeat(64 * 1024 + 1);
    assert_eq!(post_tickets(&relay, &big, None).status, 413);
    let get = relay.admin_get("/v1/tickets");
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
}

#[test]
fn a1_mint_workspace_cap_is_429() {
    let relay = Relay::start(&["--max-relays-per-workspace", "2"]);
    let t1 = mint_in(&relay, "capped", 60_000, 0);
    let _t2 = mint_in(&relay, "capped", 60_000, 0);
    let body = r#"{"workspace_id":"capped","source_id":"s","dest_id":"d"}"#;
    let resp = post_tickets(&relay, body, None);
    assert_eq!(resp.status, 429);
    assert_eq!(
        resp.body_text(),
        r#"{"error":"workspace concurrent relay cap reached"}"#
    );
    // Other workspaces are not affected.
    mint_in(&relay, "other", 60_000, 0);
    // A finished ticket no longer counts.
    let get = std::thread::spawn({
        let relay_public = relay.public;
        let t1 = t1.clone();
        move || {
            let mut s = TcpStream::connect(relay_public).unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let head =
                format!("GET /v1/relay HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {t1}\r\n\r\n");
            s.write_all(head.as_bytes()).unwrap();
            read_response(s)
        }
    });
    wait_side(&relay, "ticket_get", 1);
    let put = read_response(open_side(
        &relay,
        "PUT",
        &t1,
        "Content-Length: 2\r\n",
        b"hi",
    ));
    assert_eq!(put.status, 200);
    assert_eq!(get.join().unwrap().body, b"hi");
    assert_eq!(post_tickets(&relay, body, None).status, 201);
}

#[test]
fn a1_mint_needs_admin_token_when_configured() {
    let path = std::env::temp_dir().join(format!("shardrelay-ticket-token-{}", std::process::id()));
    std::fs::write(&path, "adm1n-secret\n").unwrap();
    let relay = Relay::start(&["--admin-token-file", path.to_str().unwrap()]);
    let body = r#"{"workspace_id":"w","source_id":"s","dest_id":"d"}"#;
    let resp = post_tickets(&relay, body, None);
    assert_eq!(resp.status, 401);
    assert_eq!(post_tickets(&relay, body, Some("wrong")).status, 401);
    assert_eq!(post_tickets(&relay, body, Some("adm1n-secret")).status, 201);
    let _ = std::fs::remove_file(path);
}

// ---------------------------------------------------------------- 2. statuses

#[test]
fn a2_relay_401_for_missing_or_malformed_ticket() {
    let relay = Relay::start(&[]);
    for auth in [
        "",
        "Authorization: Bearer\r\n",
        "Authorization: Bearer rly_short\r\n",
        "Authorization: Basic abc\r\n",
        "Authorization: Bearer xly_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n",
    ] {
        for method in ["PUT", "GET"] {
            let req = format!(
                "{method} /v1/relay HTTP/1.1\r\nHost: r\r\n{auth}Content-Length: 0\r\n\r\n"
            );
            assert_eq!(
                relay.raw_http(req.as_bytes()).status,
                401,
                "{method} {auth:?}"
            );
        }
    }
}

#[test]
fn a2_relay_404_for_unknown_ticket() {
    let relay = Relay::start(&["--shards", "2"]);
    let unknown = format!("rly_{}", "A".repeat(43));
    for method in ["PUT", "GET"] {
        let resp = request(&relay, method, &unknown);
        assert_eq!(resp.status, 404);
        assert_eq!(
            resp.body_text(),
            r#"{"error":"ticket not found or expired"}"#
        );
    }
}

#[test]
fn a2_relay_423_for_each_claimed_side() {
    let relay = Relay::start(&["--shards", "2"]);
    let t = mint(&relay, 60_000, 0);
    let _get = open_side(&relay, "GET", &t, "", b"");
    wait_side(&relay, "ticket_get", 1);
    let resp = request(&relay, "GET", &t);
    assert_eq!(resp.status, 423);
    assert_eq!(resp.body_text(), r#"{"error":"GET side already claimed"}"#);

    let t2 = mint(&relay, 60_000, 0);
    let _put = open_side(&relay, "PUT", &t2, "Content-Length: 10\r\n", b"12345");
    wait_side(&relay, "ticket_put", 1);
    let resp = request(&relay, "PUT", &t2);
    assert_eq!(resp.status, 423);
    assert_eq!(resp.body_text(), r#"{"error":"PUT side already claimed"}"#);
}

#[test]
fn a2_relay_408_when_other_side_never_comes_then_410() {
    let relay = Relay::start(&[]);
    let t = mint(&relay, 1000, 0);
    let started = Instant::now();
    let resp = read_response(open_side(
        &relay,
        "PUT",
        &t,
        "Content-Length: 5\r\n",
        b"hello",
    ));
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(resp.status, 408);
    assert_eq!(
        resp.body_text(),
        r#"{"error":"timed out waiting for the other side"}"#
    );
    let resp = request(&relay, "GET", &t);
    assert_eq!(resp.status, 410);
    assert_eq!(resp.body_text(), r#"{"error":"relay already finished"}"#);

    let t = mint(&relay, 800, 0);
    let resp = request(&relay, "GET", &t);
    assert_eq!(resp.status, 408);
    assert_eq!(relay.total("/events/tickets_timed_out"), 2);
    assert_eq!(relay.health()["tickets"], 0);
}

#[test]
fn a2_waiting_side_that_disconnects_frees_its_claim() {
    let relay = Relay::start(&[]);
    let t = mint(&relay, 60_000, 0);
    let first = open_side(&relay, "GET", &t, "", b"");
    wait_side(&relay, "ticket_get", 1);
    drop(first);
    wait_side(&relay, "ticket_get", 0);
    let second = open_side(&relay, "GET", &t, "", b"");
    wait_side(&relay, "ticket_get", 1);
    let put = read_response(open_side(
        &relay,
        "PUT",
        &t,
        "Content-Length: 3\r\n",
        b"abc",
    ));
    assert_eq!(put.status, 200);
    let got = read_response(second);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"abc");
}

// ---------------------------------------------------------------- 3. framing

#[test]
fn a3_content_length_put_gives_content_length_get() {
    let relay = Relay::start(&["--shards", "2"]);
    let t = mint(&relay, 60_000, 0);
    let data = pattern(1, 3 * 1024 * 1024 + 17);
    let get = open_side(&relay, "GET", &t, "", b"");
    wait_side(&relay, "ticket_get", 1);
    let extra = format!("Content-Length: {}\r\nExpect: 100-continue\r\n", data.len());
    let mut put = open_side(&relay, "PUT", &t, &extra, b"");
    let mut cont = [0u8; 25];
    put.read_exact(&mut cont).unwrap();
    assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
    let writer = std::thread::spawn({
        let data = data.clone();
        let mut put = put.try_clone().unwrap();
        move || put.write_all(&data).unwrap()
    });
    let got = read_response(get);
    writer.join().unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        got.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    assert!(got.body == data, "body differs");
    let resp = read_response(put);
    assert_eq!(resp.status, 200);
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v, serde_json::json!({"bytes": data.len(), "status": "ok"}));
}

#[test]
fn a3_chunked_put_gives_chunked_get() {
    let relay = Relay::start(&[]);
    let t = mint(&relay, 60_000, 0);
    // PUT first this time: it waits, its early body bytes are held.
    let mut put = open_side(
        &relay,
        "PUT",
        &t,
        "Transfer-Encoding: chunked\r\n",
        b"5;ext=1\r\nhello\r\n",
    );
    wait_side(&relay, "ticket_put", 1);
    let get = open_side(&relay, "GET", &t, "", b"");
    let data = pattern(7, 500_000);
    for piece in data.chunks(70_001) {
        put.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .unwrap();
        put.write_all(piece).unwrap();
        put.write_all(b"\r\n").unwrap();
    }
    put.write_all(b"0\r\nX-Trailer: t\r\n\r\n").unwrap();
    let got = read_response(get);
    assert_eq!(got.status, 200);
    assert_eq!(got.header("transfer-encoding"), Some("chunked"));
    assert_eq!(got.header("content-length"), None);
    let body = dechunk(&got.body).expect("complete chunked body");
    assert_eq!(&body[..5], b"hello");
    assert!(body[5..] == data[..], "body differs");
    let resp = read_response(put);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.body_text(),
        format!(r#"{{"bytes":{},"status":"ok"}}"#, data.len() + 5)
    );
}

/// `--ticket-window` at both ends of its range: a PUT that arrives first and sends more
/// than a window before its GET comes, then the rest, arrives intact either way.
#[test]
fn a3_body_is_intact_with_the_smallest_and_a_large_ticket_window() {
    for window in ["64KiB", "4MiB"] {
        let relay = Relay::start(&["--ticket-window", window]);
        let t = mint(&relay, 60_000, 0);
        let data = pattern(11, 5 * 1024 * 1024 + 3);
        let extra = format!("Content-Length: {}\r\n", data.len());
        let put = open_side(&relay, "PUT", &t, &extra, b"");
        wait_side(&relay, "ticket_put", 1);
        let writer = std::thread::spawn({
            let data = data.clone();
            let mut put = put.try_clone().unwrap();
            move || put.write_all(&data).unwrap()
        });
        let get = open_side(&relay, "GET", &t, "", b"");
        let got = read_response(get);
        writer.join().unwrap();
        assert_eq!(got.status, 200, "window {window}");
        assert!(got.body == data, "body differs with window {window}");
        put.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_response(put).status, 200, "window {window}");
    }
}

#[test]
fn a3_empty_body_and_bad_framing() {
    let relay = Relay::start(&[]);
    let t = mint(&relay, 60_000, 0);
    let get = open_side(&relay, "GET", &t, "", b"");
    wait_side(&relay, "ticket_get", 1);
    let put = request(&relay, "PUT", &t);
    assert_eq!(put.body_text(), r#"{"bytes":0,"status":"ok"}"#);
    let got = read_response(get);
    assert_eq!(got.header("content-length"), Some("0"));
    let t = mint(&relay, 60_000, 0);
    let bad = read_response(open_side(
        &relay,
        "PUT",
        &t,
        "Transfer-Encoding: gzip\r\n",
        b"",
    ));
    assert_eq!(bad.status, 400);
}

// ---------------------------------------------------------------- 4. bounded memory

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a4_one_gib_moves_with_bounded_rss() {
    const TOTAL: u64 = 1 << 30;
    const PIECE: usize = 1 << 20;
    let relay = Relay::start(&[]);
    let pid = relay.child.id();
    let t = mint(&relay, 300_000, 0);
    let get = open_side(&relay, "GET", &t, "", b"");
    wait_side(&relay, "ticket_get", 1);
    let rss_before = rss_kib(pid);
    let extra = format!("Content-Length: {TOTAL}\r\n");
    let put = open_side(&relay, "PUT", &t, &extra, b"");
    let writer = std::thread::spawn({
        let mut put = put.try_clone().unwrap();
        move || {
            let mut buf = vec![0u8; PIECE];
            let mut sent = 0u64;
            while sent < TOTAL {
                fill_words(&mut buf, sent / 8);
                put.write_all(&buf).unwrap();
                sent += PIECE as u64;
            }
        }
    });
    let mut get = get;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        get.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let mut buf = vec![0u8; PIECE];
    let mut want = vec![0u8; PIECE];
    let mut got = 0u64;
    let mut rss_max = rss_before;
    while got < TOTAL {
        get.read_exact(&mut buf).unwrap();
        fill_words(&mut want, got / 8);
        assert!(buf == want, "corrupt at {got}");
        got += PIECE as u64;
        if got.is_multiple_of(64 << 20) {
            rss_max = rss_max.max(rss_kib(pid));
        }
    }
    writer.join().unwrap();
    let resp = read_response(put);
    assert_eq!(
        resp.body_text(),
        format!(r#"{{"bytes":{TOTAL},"status":"ok"}}"#)
    );
    let growth_mib = rss_max.saturating_sub(rss_before) / 1024;
    eprintln!(
        "RSS before {rss_before} KiB, max during 1 GiB {rss_max} KiB, growth {growth_mib} MiB"
    );
    assert!(growth_mib < 64, "RSS grew by {growth_mib} MiB");
    assert!(relay.total("/bytes_in") >= TOTAL && relay.total("/bytes_out") >= TOTAL);
}

/// A transfer whose sockets never block (both ends on loopback, as fast as the relay
/// moves bytes) shares its shard: while it streams, a pair on the same shard still
/// upgrades and makes round trips. The pump yields every few rounds until the shard's
/// next wait for I/O (`net::yield_now`); waking itself at once instead starves every
/// other connection under the deferred io_uring task run the shards use, until the
/// transfer ends — here, until the writer's 16 GiB cap, which the test then reports.
#[test]
fn a4_a_transfer_that_never_blocks_leaves_its_shard_to_other_connections() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const PIECE: usize = 1 << 20;
    const CAP: u64 = 16 << 30;
    let relay = Relay::start(&["--shards", "1"]);
    let t = mint(&relay, 300_000, 0);
    let mut get = open_side(&relay, "GET", &t, "", b"");
    wait_side(&relay, "ticket_get", 1);
    let put = open_side(&relay, "PUT", &t, "Transfer-Encoding: chunked\r\n", b"");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let mut put = put.try_clone().unwrap();
        let stop = stop.clone();
        move || {
            let mut chunk = format!("{PIECE:x}\r\n").into_bytes();
            chunk.extend(std::iter::repeat_n(b'x', PIECE));
            chunk.extend_from_slice(b"\r\n");
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && sent < CAP {
                put.write_all(&chunk).unwrap();
                sent += PIECE as u64;
            }
            put.write_all(b"0\r\n\r\n").unwrap();
            sent
        }
    });
    let (streaming_tx, streaming_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; PIECE];
        let mut got = 0u64;
        loop {
            match get.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n as u64,
            }
            if got >= 64 << 20 {
                let _ = streaming_tx.send(());
            }
        }
    });
    // The pump is in its busy loop once 64 MiB went through.
    streaming_rx.recv().expect("the transfer streams");
    let mut a = relay
        .ws("/?pair=beside-a-transfer", &[])
        .expect("upgrade beside it");
    let mut b = relay
        .ws("/?pair=beside-a-transfer", &[])
        .expect("upgrade beside it");
    for i in 0..10u8 {
        a.send(tungstenite::Message::Binary(vec![i; 16].into()))
            .unwrap();
        assert_eq!(next_message(&mut b).into_data().as_ref(), &[i; 16]);
        b.send(tungstenite::Message::Binary(vec![i; 8].into()))
            .unwrap();
        assert_eq!(next_message(&mut a).into_data().as_ref(), &[i; 8]);
    }
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    assert!(
        sent < CAP,
        "the pair waited for the whole {sent}-byte transfer"
    );
    let resp = read_response(put);
    assert_eq!(
        resp.body_text(),
        format!(r#"{{"bytes":{sent},"status":"ok"}}"#)
    );
    let got = reader.join().unwrap();
    assert!(got > sent, "the GET got the body ({got} bytes on the wire)");
}

/// Fill `buf` with splitmix64 words starting at word `first`.
fn fill_words(buf: &mut [u8], first: u64) {
    for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&splitmix(first + i as u64).to_le_bytes());
    }
}

// ---------------------------------------------------------------- 5. curl endings

/// A scratch directory for this test process.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shardrelay-ticket-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `sha256sum` of a file.
fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `curl` GET of a ticket into `out`.
fn curl_get(relay: &Relay, ticket: &str, out: &std::path::Path) -> Child {
    Command::new("curl")
        .args(["-sS", "-o"])
        .arg(out)
        .args(["-H", &format!("Authorization: Bearer {ticket}")])
        .arg(format!("http://{}/v1/relay", relay.public))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl")
}

/// `curl` PUT of a ticket: `-T <source>` plus extra arguments; prints the status code
/// then the body.
fn curl_put(relay: &Relay, ticket: &str, source: &str, extra: &[&str], stdin: Stdio) -> Child {
    Command::new("curl")
        .args(["-sS", "-T", source, "-w", "\n%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {ticket}")])
        .args(extra)
        .arg(format!("http://{}/v1/relay", relay.public))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl")
}

/// Wait for a child with a deadline; its exit code (-1 if killed by a signal).
fn wait_child(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "curl did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A curl PUT's stdout: (status code, body).
fn put_output(child: Child) -> (u16, String) {
    let out = child.wait_with_output().expect("curl output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn a5_curl_content_length_round_trip_sha256() {
    let relay = Relay::start(&["--shards", "2"]);
    let dir = scratch("cl");
    let src = dir.join("src.bin");
    std::fs::write(&src, pattern(3, 5 * 1024 * 1024 + 3)).unwrap();
    let dst = dir.join("dst.bin");
    let t = mint(&relay, 60_000, 0);
    let mut get = curl_get(&relay, &t, &dst);
    wait_side(&relay, "ticket_get", 1);
    let put = curl_put(&relay, &t, src.to_str().unwrap(), &[], Stdio::null());
    let (code, body) = put_output(put);
    assert_eq!(wait_child(&mut get), 0);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        format!(r#"{{"bytes":{},"status":"ok"}}"#, 5 * 1024 * 1024 + 3)
    );
    assert_eq!(sha256(&src), sha256(&dst));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a5_curl_chunked_stdin_round_trip_sha256() {
    let relay = Relay::start(&[]);
    let dir = scratch("chunked");
    let src = dir.join("src.bin");
    std::fs::write(&src, pattern(5, 3 * 1024 * 1024 + 11)).unwrap();
    let dst = dir.join("dst.bin");
    let t = mint(&relay, 60_000, 0);
    // PUT first (it waits), GET second.
    let file = std::fs::File::open(&src).unwrap();
    let put = curl_put(
        &relay,
        &t,
        "-",
        &["-H", "Transfer-Encoding: chunked"],
        Stdio::from(file),
    );
    wait_side(&relay, "ticket_put", 1);
    let mut get = curl_get(&relay, &t, &dst);
    let (code, body) = put_output(put);
    assert_eq!(wait_child(&mut get), 0);
    assert_eq!(code, 200, "{body}");
    assert_eq!(sha256(&src), sha256(&dst));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a5_curl_get_fails_when_max_bytes_exceeded() {
    let relay = Relay::start(&[]);
    let dir = scratch("toolarge");
    let src = dir.join("src.bin");
    std::fs::write(&src, pattern(9, 2 * 1024 * 1024)).unwrap();
    for chunked in [false, true] {
        let dst = dir.join(format!("dst-{chunked}.bin"));
        let t = mint(&relay, 60_000, 1024 * 1024);
        let mut get = curl_get(&relay, &t, &dst);
        wait_side(&relay, "ticket_get", 1);
        let put = if chunked {
            let file = std::fs::File::open(&src).unwrap();
            curl_put(
                &relay,
                &t,
                "-",
                &["-H", "Transfer-Encoding: chunked"],
                Stdio::from(file),
            )
        } else {
            curl_put(&relay, &t, src.to_str().unwrap(), &[], Stdio::null())
        };
        let (code, body) = put_output(put);
        assert_ne!(
            wait_child(&mut get),
            0,
            "GET curl must fail (chunked={chunked})"
        );
        assert_eq!(code, 413, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "error");
        assert!(v["bytes"].is_u64());
        wait_side(&relay, "ticket_get", 0);
    }
    assert_eq!(relay.total("/events/tickets_too_large"), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a5_a_put_declaring_more_than_max_bytes_gives_the_get_its_head_then_an_abort() {
    // PROTOCOL §6.2: an aborted GET response is short of its Content-Length. The GET
    // gets the head the declared length calls for and not one body byte; through a
    // balancer that is forwarded as a broken-off response, not the balancer's own 502.
    let relay = Relay::start(&[]);
    let t = mint(&relay, 60_000, 1000);
    let get = open_side(&relay, "GET", &t, "", b"");
    wait_side(&relay, "ticket_get", 1);
    let put = open_side(&relay, "PUT", &t, "Content-Length: 5000\r\n", b"");
    let resp = read_response(put);
    assert_eq!(resp.status, 413);
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(
        (v["bytes"].as_u64(), v["status"].as_str()),
        (Some(0), Some("error"))
    );
    let got = read_response(get);
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-length"), Some("5000"));
    assert!(got.body.is_empty(), "no body byte: {} came", got.body.len());
}

#[test]
fn a5_curl_get_fails_when_put_killed_mid_body() {
    let relay = Relay::start(&[]);
    let dir = scratch("putkilled");
    let src = dir.join("src.bin");
    std::fs::write(&src, pattern(2, 16 * 1024 * 1024)).unwrap();
    for chunked in [true, false] {
        let dst = dir.join(format!("dst-{chunked}.bin"));
        let t = mint(&relay, 60_000, 0);
        let mut get = curl_get(&relay, &t, &dst);
        wait_side(&relay, "ticket_get", 1);
        // Chunked: from stdin, which the test feeds and then stops feeding.
        // Content-Length: a 16 MiB file sent slowly.
        let (mut put, stdin) = if chunked {
            let mut put = curl_put(
                &relay,
                &t,
                "-",
                &["-H", "Transfer-Encoding: chunked"],
                Stdio::piped(),
            );
            let mut stdin = put.stdin.take().unwrap();
            stdin.write_all(&pattern(2, 300_000)).unwrap();
            stdin.flush().unwrap();
            (put, Some(stdin))
        } else {
            let src = src.to_str().unwrap();
            (
                curl_put(&relay, &t, src, &["--limit-rate", "2M"], Stdio::null()),
                None,
            )
        };
        wait_until("GET received bytes", || {
            std::fs::metadata(&dst)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        });
        put.kill().unwrap();
        let _ = put.wait();
        drop(stdin);
        assert_ne!(
            wait_child(&mut get),
            0,
            "GET curl must fail (chunked={chunked})"
        );
        let len = std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0);
        assert!(len < 16 * 1024 * 1024);
    }
    wait_until("put aborts counted", || {
        relay.total("/events/tickets_put_aborted") == 2
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a5_curl_put_gets_502_when_get_killed() {
    let relay = Relay::start(&[]);
    let dir = scratch("getkilled");
    let dst = dir.join("dst.bin");
    let t = mint(&relay, 60_000, 0);
    let mut get = curl_get(&relay, &t, &dst);
    wait_side(&relay, "ticket_get", 1);
    let mut put = curl_put(
        &relay,
        &t,
        "-",
        &["-H", "Transfer-Encoding: chunked"],
        Stdio::piped(),
    );
    let mut stdin = put.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let piece = pattern(4, 64 * 1024);
        for _ in 0..16_384 {
            if stdin.write_all(&piece).is_err() {
                return;
            }
        }
    });
    wait_until("GET received bytes", || {
        std::fs::metadata(&dst)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    });
    get.kill().unwrap();
    assert_ne!(wait_child(&mut get), 0);
    let (code, body) = put_output(put);
    feeder.join().unwrap();
    assert_eq!(code, 502, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(relay.total("/events/tickets_get_aborted"), 1);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------- 6. single use

#[test]
fn a6_single_use_410_until_expiry_then_404_by_tick() {
    let relay = Relay::start(&["--shards", "2"]);
    let minted = Instant::now();
    let t = mint(&relay, 2000, 0);
    let get = open_side(&relay, "GET", &t, "", b"");
    wait_side(&relay, "ticket_get", 1);
    let put = read_response(open_side(&relay, "PUT", &t, "Content-Length: 2\r\n", b"ok"));
    assert_eq!(put.status, 200);
    assert_eq!(read_response(get).body, b"ok");
    for method in ["PUT", "GET"] {
        let resp = request(&relay, method, &t);
        assert_eq!(resp.status, 410, "{method}");
        assert_eq!(resp.body_text(), r#"{"error":"relay already finished"}"#);
    }
    wait_until("404 after expiry", || {
        request(&relay, "GET", &t).status == 404
    });
    assert!(minted.elapsed() >= Duration::from_millis(1900));
}

// ---------------------------------------------------------------- 8. health and stats

#[test]
fn a8_health_and_stats_count_tickets() {
    let relay = Relay::start(&[]);
    assert_eq!(relay.health()["tickets"], 0);
    let t = mint(&relay, 60_000, 0);
    let _t2 = mint(&relay, 60_000, 0);
    assert_eq!(relay.health()["tickets"], 2);
    let get = open_side(&relay, "GET", &t, "", b"");
    wait_side(&relay, "ticket_get", 1);
    let put = read_response(open_side(
        &relay,
        "PUT",
        &t,
        "Content-Length: 1000\r\n",
        &[7u8; 1000],
    ));
    assert_eq!(put.status, 200);
    assert_eq!(read_response(get).body.len(), 1000);
    assert_eq!(relay.health()["tickets"], 1);
    let stats = relay.stats();
    let totals = &stats["totals"];
    assert_eq!(totals["events"]["tickets_minted"], 2);
    assert_eq!(totals["events"]["tickets_ok"], 1);
    assert!(totals["bytes_in"].as_u64().unwrap() >= 1000);
    assert!(totals["bytes_out"].as_u64().unwrap() >= 1000);
    assert_eq!(totals["gauges"]["tickets"], 1);
    wait_side(&relay, "ticket_put", 0);
    wait_side(&relay, "ticket_get", 0);
}

/// The shard whose `tickets` gauge is `n` higher than in `before` (per-shard gauges).
fn shard_that_grew(relay: &Relay, before: &[i64]) -> usize {
    let now = tickets_per_shard(relay);
    let grown: Vec<usize> = (0..now.len()).filter(|&i| now[i] > before[i]).collect();
    assert_eq!(
        grown.len(),
        1,
        "one shard holds the new ticket: {before:?} -> {now:?}"
    );
    grown[0]
}

/// Each shard's `tickets` gauge, by shard id.
fn tickets_per_shard(relay: &Relay) -> Vec<i64> {
    let stats = relay.stats();
    let shards = stats["per_shard"].as_array().expect("per_shard");
    shards
        .iter()
        .map(|s| s["gauges"]["tickets"].as_i64().unwrap_or(0))
        .collect()
}

/// Tickets live on their workspace's shard: a workspace's tickets all on one shard (so
/// its cap is exact), different workspaces spread over the shards, and a transfer works
/// on whichever shard owns its ticket, even one that is not the admin shard.
#[test]
fn tickets_are_minted_on_their_workspaces_shard_and_transfer_there() {
    let relay = Relay::start(&["--shards", "2", "--max-relays-per-workspace", "3"]);
    let mut owner_of = Vec::new();
    // 24 workspaces: all on one shard by chance is a 1 in 2^23 event.
    for w in 0..24 {
        let before = tickets_per_shard(&relay);
        let t = mint_in(&relay, &format!("ws-{w}"), 60_000, 0);
        let shard = shard_that_grew(&relay, &before);
        // A second ticket of the same workspace lands on the same shard.
        let before = tickets_per_shard(&relay);
        let _second = mint_in(&relay, &format!("ws-{w}"), 60_000, 0);
        assert_eq!(
            shard_that_grew(&relay, &before),
            shard,
            "ws-{w} stays on one shard"
        );
        owner_of.push((shard, t));
    }
    for wanted in [0, 1] {
        let (_, t) = owner_of
            .iter()
            .find(|(shard, _)| *shard == wanted)
            .unwrap_or_else(|| panic!("no workspace of 24 on shard {wanted}"));
        let data = pattern(wanted as u64, 200_000);
        let get = open_side(&relay, "GET", t, "", b"");
        wait_side(&relay, "ticket_get", 1);
        let extra = format!("Content-Length: {}\r\n", data.len());
        let put = open_side(&relay, "PUT", t, &extra, &data);
        let got = read_response(get);
        assert_eq!(got.status, 200);
        assert!(got.body == data, "body differs on shard {wanted}");
        assert_eq!(read_response(put).status, 200);
        wait_side(&relay, "ticket_get", 0);
    }
    let stats = relay.stats();
    for shard in &stats["per_shard"].as_array().unwrap()[..2] {
        assert_eq!(shard["events"]["tickets_ok"], 1, "one transfer per shard");
    }
    // The workspace cap still counts exactly: three tickets of a fresh workspace are
    // taken, the fourth refused.
    for _ in 0..3 {
        let _t = mint_in(&relay, "ws-cap", 60_000, 0);
    }
    let refused = post_tickets(
        &relay,
        r#"{"workspace_id":"ws-cap","source_id":"a","dest_id":"b"}"#,
        None,
    );
    assert_eq!(refused.status, 429, "{}", refused.body_text());
}

// ---------------------------------------------------------------- shutdown

#[test]
fn shutdown_refuses_waiting_sides_503_and_lets_a_transfer_finish() {
    let mut relay = Relay::start(&["--drain-timeout", "5s"]);
    let waiting = mint(&relay, 60_000, 0);
    let lone = open_side(&relay, "GET", &waiting, "", b"");
    let t = mint(&relay, 60_000, 0);
    let get = open_side(&relay, "GET", &t, "", b"");
    wait_side(&relay, "ticket_get", 2);
    let mut put = open_side(&relay, "PUT", &t, "Content-Length: 6\r\n", b"abc");
    // The transfer is running (3 of 6 bytes in) when the signal comes.
    let mut get = get;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\nabc") {
        get.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    relay.signal(libc::SIGTERM);
    let refused = read_response(lone);
    assert_eq!(refused.status, 503);
    put.write_all(b"def").unwrap();
    let mut rest = Vec::new();
    let _ = get.read_to_end(&mut rest);
    assert_eq!(rest, b"def");
    assert_eq!(read_response(put).status, 200);
    let status = relay.wait_exit(Duration::from_secs(8));
    assert!(status.success(), "exit status {status:?}");
}
