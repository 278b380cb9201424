//! The connection-rate attacks: session-code guessing from many short connections,
//! sockets that never send a head, and a paced flood of health probes.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{connect, connect_failed, Ctx, Pacer, Tally};
use crate::scenario::chaos::client::{Incoming, WsClient};
use crate::scenario::USER_AGENT;
use crate::ws::frame::SendOp;

/// Guessing connections per second per thread (before `--rate-percent`).
const GUESS_CONNS_PER_SECOND: usize = 40;
/// Guesses on one connection: one at the upgrade (`?code=`), the rest by message.
const GUESSES_PER_CONN: usize = 3;
/// The session-code alphabet (PROTOCOL §5.3).
const CODE_ALPHABET: &[u8] = b"346789ABCDEFGHJKLMNPQRTUVWXY";
/// Idle sockets held open (before `--rate-percent`).
const IDLE_SOCKETS: usize = 64;
/// How often the idle sockets are checked for a close by the relay.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// Health probes per second per thread (before `--rate-percent`).
const HEALTH_PER_SECOND: usize = 500;

/// A random guess at a session code.
fn guess() -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    bytes
        .iter()
        .map(|b| CODE_ALPHABET[*b as usize % CODE_ALPHABET.len()] as char)
        .collect()
}

/// Many short `/browser` connections, each trying a few codes.
pub fn code_guess(ctx: &Ctx, _thread: usize) -> Tally {
    let mut tally = Tally::default();
    let mut pacer = Pacer::new(ctx.scaled(GUESS_CONNS_PER_SECOND) as f64);
    while pacer.next(ctx.until) && tally.refused == 0 {
        tally.actions += 1;
        let stream = match connect(ctx, 0) {
            Ok(s) => s,
            Err(kind) => {
                connect_failed(&mut tally, kind);
                continue;
            }
        };
        let path = format!("/browser?code={}", guess());
        match WsClient::upgrade(stream, ctx.target, &path, &[("User-Agent", USER_AGENT)]) {
            Ok(ws) => guess_on(ctx, &mut tally, ws),
            Err(why) => tally.saw(format!("upgrade_refused: {why}")),
        }
    }
    tally
}

/// Read the answer to the upgrade's guess, send the others, then leave with a reset.
fn guess_on(ctx: &Ctx, tally: &mut Tally, mut ws: WsClient) {
    for i in 0..GUESSES_PER_CONN {
        if i > 0 {
            let join = format!(r#"{{"type":"join","code":"{}"}}"#, guess());
            if ws.send(SendOp::Text, join.as_bytes()).is_err() {
                tally.saw("send_failed");
                break;
            }
        }
        let deadline = Instant::now() + ctx.io_timeout;
        match ws.next(deadline) {
            Ok(Incoming::Text(t)) => {
                let v: Value = serde_json::from_slice(&t).unwrap_or(Value::Null);
                let code = v["code"].as_str().unwrap_or("?").to_owned();
                tally.saw(format!("{}_{code}", v["type"].as_str().unwrap_or("?")));
            }
            Ok(Incoming::Close(code)) => {
                tally.saw(format!("closed_{}", code.unwrap_or(1005)));
                break;
            }
            Ok(other) => {
                tally.saw(format!("{other:?}").chars().take(24).collect::<String>());
                break;
            }
            Err(why) => {
                tally.saw(why);
                break;
            }
        }
    }
    ws.kill();
}

/// Sockets that connect and never send a byte; reopened when the relay closes them.
pub fn idle_heads(ctx: &Ctx, _thread: usize) -> Tally {
    let mut tally = Tally::default();
    let mut held: Vec<Option<(TcpStream, Instant)>> = Vec::new();
    for _ in 0..ctx.scaled(IDLE_SOCKETS) {
        held.push(open_idle(ctx, &mut tally));
    }
    let mut pacer = Pacer::new(1.0 / IDLE_CHECK.as_secs_f64());
    while pacer.next(ctx.until) && tally.refused == 0 {
        for slot in held.iter_mut() {
            let closed = match slot {
                Some((stream, since)) => relay_closed(stream).then_some(*since),
                None => Some(Instant::now()),
            };
            if let Some(since) = closed {
                if slot.is_some() {
                    let held_for = since.elapsed().as_secs();
                    tally.saw(format!("closed_by_relay_after_{held_for}s"));
                }
                *slot = open_idle(ctx, &mut tally);
            }
        }
    }
    tally
}

/// One idle connection, non-blocking so it can be checked without waiting.
fn open_idle(ctx: &Ctx, tally: &mut Tally) -> Option<(TcpStream, Instant)> {
    tally.actions += 1;
    match connect(ctx, 0) {
        Ok(stream) => {
            let _ = stream.set_nonblocking(true);
            Some((stream, Instant::now()))
        }
        Err(kind) => {
            connect_failed(tally, kind);
            None
        }
    }
}

/// Whether the relay has closed an idle socket (EOF, reset, or any bytes: a response).
fn relay_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

/// `GET /health` at a paced rate, one connection each, counting statuses.
pub fn health_flood(ctx: &Ctx, _thread: usize) -> Tally {
    let mut tally = Tally::default();
    let mut pacer = Pacer::new(ctx.scaled(HEALTH_PER_SECOND) as f64);
    let request = b"GET /health HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n";
    while pacer.next(ctx.until) && tally.refused == 0 {
        tally.actions += 1;
        let mut stream = match connect(ctx, 0) {
            Ok(s) => s,
            Err(kind) => {
                connect_failed(&mut tally, kind);
                continue;
            }
        };
        if stream.write_all(request).is_err() {
            tally.saw("write_failed");
            continue;
        }
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let status = response
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("none");
        tally.saw(format!("status_{status}"));
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_are_six_characters_of_the_code_alphabet() {
        for _ in 0..100 {
            let g = guess();
            assert_eq!(g.len(), 6);
            assert!(g.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{g}");
        }
    }
}
