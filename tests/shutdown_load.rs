//! Shutdown under load (issue 8, acceptance point 4), black-box: with traffic on every
//! WebSocket style and ticket transfers mid-body, SIGTERM must close every WebSocket
//! `1001 "shutting down"`, let a transfer finish or abort it at `--drain-timeout` —
//! never leaving a GET that looks complete — and exit within the drain timeout + 1 s.
//! (`tests/shutdown.rs` covers the idle case; `scripts/soak.sh` repeats this at scale.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// The relay's drain limit in this test.
const DRAIN: Duration = Duration::from_secs(1);
/// Longest any client thread runs: far past the exit the test expects.
const CLIENT_LIMIT: Duration = Duration::from_secs(20);
/// A transfer body written over ~10 s: still mid-body when the 1 s drain ends.
const SLOW_BODY: usize = 64 << 20;
/// A transfer body written over 0.5 s, from before SIGTERM: it can finish inside the
/// 1 s drain (or, on a slow machine, be aborted at its end — both are allowed).
const QUICK_BODY: usize = 4 << 20;

/// How one WebSocket client's traffic ended: the relay's close code and reason.
type Ending = Result<(u16, String), String>;

/// Why a client's traffic step stopped.
enum Stop {
    /// The relay's close frame arrived.
    Closed(u16, String),
    /// Something else failed.
    Failed(String),
}

impl From<tungstenite::Error> for Stop {
    fn from(e: tungstenite::Error) -> Self {
        Stop::Failed(e.to_string())
    }
}

/// Reads the next data message; a close frame stops the traffic.
fn read_data(ws: &mut Ws) -> Result<Message, Stop> {
    loop {
        match ws.read()? {
            Message::Close(Some(f)) => {
                return Err(Stop::Closed(f.code.into(), f.reason.to_string()))
            }
            Message::Close(None) => return Err(Stop::Closed(1005, String::new())),
            m @ (Message::Text(_) | Message::Binary(_)) => return Ok(m),
            _ => {}
        }
    }
}

/// Runs `step` (a send and/or a read) in a thread until the relay's close frame;
/// bounded by [`CLIENT_LIMIT`].
fn run_client(
    mut ws: Ws,
    mut step: impl FnMut(&mut Ws) -> Result<(), Stop> + Send + 'static,
) -> JoinHandle<Ending> {
    std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < CLIENT_LIMIT {
            match step(&mut ws) {
                Ok(()) => {}
                Err(Stop::Closed(code, reason)) => return Ok((code, reason)),
                // A send that raced the close: the close frame may still be there to read.
                Err(Stop::Failed(e)) => {
                    return match read_data(&mut ws) {
                        Err(Stop::Closed(code, reason)) => Ok((code, reason)),
                        _ => Err(e),
                    }
                }
            }
        }
        Err("no close within the client limit".into())
    })
}

/// An echo client: send, read it back, repeat.
fn echo_client(relay: &Relay, i: usize) -> JoinHandle<Ending> {
    let ws = relay.ws("/v1/echo", &[]).unwrap();
    run_client(ws, move |ws| {
        ws.send(Message::text(format!("echo {i}")))?;
        read_data(ws).map(|_| ())
    })
}

/// A pair side: send one, read the peer's one, repeat (both sides do, so neither waits
/// on the other for long).
fn pair_client(relay: &Relay, code: &str) -> JoinHandle<Ending> {
    let ws = relay.ws(&format!("/?pair={code}"), &[]).unwrap();
    run_client(ws, |ws| {
        ws.send(Message::binary(vec![7u8; 512]))?;
        read_data(ws).map(|_| ())
    })
}

/// A binary that echoes every phone's frame back through the envelope.
fn binary_client(relay: &Relay, id: &str) -> JoinHandle<Ending> {
    run_client(relay.binary(id), |ws| {
        let Message::Text(text) = read_data(ws)? else {
            return Ok(());
        };
        let env: Value = serde_json::from_str(&text).unwrap_or_default();
        if env["frame"].is_null() {
            return Ok(());
        }
        let reply = json!({"conn_id": env["conn_id"], "frame": env["frame"]});
        Ok(ws.send(Message::text(reply.to_string()))?)
    })
}

/// A phone: send, read the binary's echo, repeat.
fn phone_client(relay: &Relay, id: &str) -> JoinHandle<Ending> {
    run_client(relay.phone(id, "t"), |ws| {
        ws.send(Message::text(r#"{"n":1}"#))?;
        read_data(ws).map(|_| ())
    })
}

/// A joined session: the host and the browser each send `data` and read the other's.
fn session_clients(relay: &Relay) -> [JoinHandle<Ending>; 2] {
    let mut host = relay.ws("/mac", &[]).unwrap();
    let registered: Value = serde_json::from_str(&next_text(&mut host)).unwrap();
    let code = registered["code"].as_str().unwrap().to_owned();
    let mut browser = relay.ws("/browser", &[]).unwrap();
    browser
        .send(Message::text(
            json!({"type": "join", "code": code}).to_string(),
        ))
        .unwrap();
    for ws in [&mut host, &mut browser] {
        let joined: Value = serde_json::from_str(&next_text(ws)).unwrap();
        assert_eq!(joined["type"], "joined");
    }
    let step = |ws: &mut Ws| {
        ws.send(Message::text(r#"{"type":"data","payload":1}"#))?;
        read_data(ws).map(|_| ())
    };
    [run_client(host, step), run_client(browser, step)]
}

/// Mints a ticket on the admin listener.
fn mint(relay: &Relay, workspace: &str) -> String {
    let body = json!({"workspace_id": workspace, "source_id": "a", "dest_id": "b"}).to_string();
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

/// A ticket transfer: the PUT writes `len` bytes in 64 KiB steps spread over `over`, the
/// GET reads to the end. Returns the GET's raw response.
fn transfer(
    relay: &Relay,
    ticket: &str,
    len: usize,
    over: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<u8>> {
    let head = |method: &str, extra: &str| {
        format!("{method} /v1/relay HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {ticket}\r\n{extra}\r\n")
    };
    let mut get = TcpStream::connect(relay.public).unwrap();
    get.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    get.write_all(head("GET", "").as_bytes()).unwrap();
    let mut put = TcpStream::connect(relay.public).unwrap();
    put.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    put.write_all(head("PUT", &format!("Content-Length: {len}\r\n")).as_bytes())
        .unwrap();
    const STEP: usize = 64 * 1024;
    let pause = over / (len / STEP) as u32;
    std::thread::spawn(move || {
        let chunk = body_chunk();
        for _ in 0..len / STEP {
            if stop.load(Ordering::Relaxed) || put.write_all(&chunk).is_err() {
                break;
            }
            // Pacing, not synchronisation: a slow sender on purpose.
            std::thread::sleep(pause);
        }
    });
    std::thread::spawn(move || {
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match get.read(&mut buf) {
                Ok(0) | Err(_) => return raw,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// The 64 KiB every transfer step writes.
fn body_chunk() -> Vec<u8> {
    (0..64 * 1024).map(|i| (i % 251) as u8).collect()
}

/// (looks complete, body matches what the PUT sent) for a raw GET response.
fn judge_get(raw: &[u8], len: usize) -> (bool, bool) {
    let resp = parse_response(raw);
    assert_eq!(resp.status, 200, "GET status");
    let declared: Option<usize> = resp.header("content-length").and_then(|v| v.parse().ok());
    let complete = match declared {
        Some(n) => resp.body.len() >= n,
        // Chunked: complete only with the final zero-size chunk.
        None => resp.body.ends_with(b"0\r\n\r\n"),
    };
    let chunk = body_chunk();
    let intact =
        resp.body.len() == len && resp.body.chunks(chunk.len()).all(|c| c == chunk.as_slice());
    (complete, intact)
}

#[test]
fn sigterm_under_load_closes_every_websocket_1001_and_never_leaves_a_complete_looking_get() {
    let mut relay = Relay::start(&["--shards", "2", "--enable-echo", "--drain-timeout", "1s"]);
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(("echo", echo_client(&relay, i)));
        let code = format!("down-{i}");
        clients.push(("pair", pair_client(&relay, &code)));
        clients.push(("pair", pair_client(&relay, &code)));
    }
    for b in 0..2 {
        let id = format!("down-s{b}");
        clients.push(("binary", binary_client(&relay, &id)));
        relay.wait_total("/gauges/server_slots", b as u64 + 1);
        for _ in 0..3 {
            clients.push(("phone", phone_client(&relay, &id)));
        }
    }
    for _ in 0..3 {
        for c in session_clients(&relay) {
            clients.push(("session", c));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let slow = transfer(
        &relay,
        &mint(&relay, "w1"),
        SLOW_BODY,
        Duration::from_secs(10),
        stop.clone(),
    );
    let quick = transfer(
        &relay,
        &mint(&relay, "w2"),
        QUICK_BODY,
        Duration::from_millis(500),
        stop.clone(),
    );
    wait_until("every client connected, transfers running", || {
        let t = &relay.stats()["totals"];
        let c = &t["connections"];
        c["echo"] == 6
            && c["pair"] == 12
            && c["phone"] == 6
            && c["session_browser"] == 3
            && c["ticket_get"] == 2
            && t["bytes_out"].as_u64().unwrap_or(0) > 1 << 20
    });
    let before = relay.total("/messages_out");
    relay.wait_total("/messages_out", before + 100);
    relay.signal(libc::SIGTERM);
    let sent_at = Instant::now();
    let status = relay.wait_exit(DRAIN + Duration::from_secs(1));
    let took = sent_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert!(status.success(), "exit status {status:?}");
    for (kind, client) in clients {
        let ending = client.join().expect("client thread");
        assert_eq!(ending, Ok((1001, "shutting down".into())), "{kind} client");
    }
    let (complete, _) = judge_get(&slow.join().unwrap(), SLOW_BODY);
    assert!(
        !complete,
        "a transfer cut at the drain timeout looked complete"
    );
    let (complete, intact) = judge_get(&quick.join().unwrap(), QUICK_BODY);
    assert_eq!(
        complete, intact,
        "the quick transfer looked complete but was not intact"
    );
    eprintln!("exit {took:?} after SIGTERM; quick transfer finished: {complete}");
    assert!(!relay.logs().contains("panicked"), "{}", relay.logs());
}
