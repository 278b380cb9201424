//! The WebSocket floods: a lone pair side sending tiny messages, a client pinging and
//! never reading, phones flooding a binary that never reads. Each round opens its
//! connections, floods for [`ROUND`] (or until the relay closes them), then resets
//! them, and starts again until the run is over.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{connect, connect_failed, push, Ctx, Tally};
use crate::scenario::chaos::client::WsClient;
use crate::scenario::USER_AGENT;

/// One flood round: long enough for queues and socket buffers to fill and for the
/// relay's back-pressure (or its stall timeout, when shorter) to show; short enough that
/// a relay holding what it should not is seen many times per soak.
const ROUND: Duration = Duration::from_secs(4);

/// The masking key of every attack frame (any key is valid).
const MASK: [u8; 4] = [0x5a, 0x11, 0xc3, 0x7e];

/// A receive buffer small enough that the relay's writes to a non-reading client back
/// up into the relay at once (the kernel rounds it up to its minimum).
const SMALL_RCVBUF: usize = 4096;

/// Tiny frames per flood batch: about 3 KiB of 1-byte and empty messages.
const TINY_FRAMES: usize = 512;

/// Phones per flooded binary (under the relay's 16 per binary).
const FLOOD_PHONES: usize = 4;

/// One masked client frame with the FIN bit and `opcode`, payload under 126 bytes.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A batch of binary messages alternating 1 byte and empty.
fn tiny_batch() -> Vec<u8> {
    (0..TINY_FRAMES)
        .flat_map(|i| frame(0x2, if i % 2 == 0 { b"x" } else { b"" }))
        .collect()
}

/// Upgrade `path` on a fresh connection (small receive buffer when asked).
fn open(
    ctx: &Ctx,
    tally: &mut Tally,
    path: &str,
    headers: &[(&str, &str)],
    rcvbuf: usize,
) -> Option<WsClient> {
    tally.actions += 1;
    let stream = match connect(ctx, rcvbuf) {
        Ok(s) => s,
        Err(kind) => {
            connect_failed(tally, kind);
            return None;
        }
    };
    match WsClient::upgrade(stream, ctx.target, path, headers) {
        Ok(ws) => Some(ws),
        Err(why) => {
            tally.saw(format!("upgrade_failed: {why}"));
            None
        }
    }
}

/// Floods `batch` on `stream` until the round ends or the relay ends the connection;
/// names how it ended.
fn flood(stream: &mut TcpStream, batch: &[u8], round_end: Instant) -> &'static str {
    let mut at = 0;
    let mut blocked = false;
    while Instant::now() < round_end {
        match push(stream, batch, &mut at) {
            Ok(true) => {}
            Ok(false) => blocked = true,
            Err(ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => return "ended_by_relay",
            Err(_) => return "write_error",
        }
    }
    if blocked {
        "relay_stopped_reading"
    } else {
        "relay_kept_reading"
    }
}

/// The end of a round starting now, never past the run.
fn round_end(ctx: &Ctx) -> Instant {
    (Instant::now() + ROUND).min(ctx.until)
}

/// Lone pair side flooding 1-byte and empty messages; its peer never arrives.
pub fn lone_pair_flood(ctx: &Ctx, thread: usize) -> Tally {
    let mut tally = Tally::default();
    let batch = tiny_batch();
    let mut n = 0u64;
    while !ctx.stop(&tally) {
        n += 1;
        let path = format!("/?pair={}lone-{thread}-{n}", ctx.tag);
        let Some(mut ws) = open(ctx, &mut tally, &path, &[("User-Agent", USER_AGENT)], 0) else {
            continue;
        };
        let ended = flood(&mut ws.stream, &batch, round_end(ctx));
        tally.saw(ended);
        ws.kill();
    }
    tally
}

/// Pings as fast as the socket takes them, never reading a pong.
pub fn ping_no_read(ctx: &Ctx, thread: usize) -> Tally {
    let mut tally = Tally::default();
    let batch: Vec<u8> = (0..64).flat_map(|_| frame(0x9, &[0x70; 125])).collect();
    let mut n = 0u64;
    while !ctx.stop(&tally) {
        n += 1;
        let path = format!("/?pair={}ping-{thread}-{n}", ctx.tag);
        let headers = [("User-Agent", USER_AGENT)];
        let Some(mut ws) = open(ctx, &mut tally, &path, &headers, SMALL_RCVBUF) else {
            continue;
        };
        let ended = flood(&mut ws.stream, &batch, round_end(ctx));
        tally.saw(ended);
        ws.kill();
    }
    tally
}

/// A binary that never reads, and phones flooding it with 1 KiB JSON messages.
pub fn phone_flood(ctx: &Ctx, thread: usize) -> Tally {
    let mut tally = Tally::default();
    let message = format!(r#"{{"attack":"{}"}}"#, "f".repeat(1000));
    let batch: Vec<u8> = (0..8)
        .flat_map(|_| {
            let mut out = Vec::new();
            crate::ws::frame::encode_frame(
                &mut out,
                crate::ws::frame::SendOp::Text,
                message.as_bytes(),
                MASK,
            );
            out
        })
        .collect();
    let mut n = 0u64;
    while !ctx.stop(&tally) {
        n += 1;
        let id = format!("{}flood-{thread}-{n}", ctx.tag);
        let binary_headers = [
            ("X-Pyrycode-Server", id.as_str()),
            ("X-Pyrycode-Version", "1.0.0"),
            ("User-Agent", USER_AGENT),
        ];
        let Some(binary) = open(ctx, &mut tally, "/v1/server", &binary_headers, SMALL_RCVBUF)
        else {
            continue;
        };
        let phone_headers = [
            ("X-Pyrycode-Server", id.as_str()),
            ("X-Pyrycode-Token", "attack-token"),
            ("User-Agent", USER_AGENT),
        ];
        let mut phones: Vec<WsClient> = (0..FLOOD_PHONES)
            .filter_map(|_| open(ctx, &mut tally, "/v1/client", &phone_headers, 0))
            .collect();
        flood_phones(ctx, &mut tally, &mut phones, &batch);
        for phone in phones {
            phone.kill();
        }
        binary.kill();
    }
    tally
}

/// Every phone writes the batch in turn until the round ends; tallies how each ended.
fn flood_phones(ctx: &Ctx, tally: &mut Tally, phones: &mut [WsClient], batch: &[u8]) {
    let end = round_end(ctx);
    for phone in phones.iter_mut() {
        // A short write timeout, so one paused phone does not starve the others' turns.
        let _ = phone
            .stream
            .set_write_timeout(Some(Duration::from_millis(50)));
    }
    let mut offsets = vec![0usize; phones.len()];
    let mut state = vec!["relay_kept_reading"; phones.len()];
    while Instant::now() < end {
        for (i, phone) in phones.iter_mut().enumerate() {
            if state[i] == "ended_by_relay" {
                continue;
            }
            match push(&mut phone.stream, batch, &mut offsets[i]) {
                Ok(true) => {}
                Ok(false) => state[i] = "relay_stopped_reading",
                Err(_) => state[i] = "ended_by_relay",
            }
        }
        if state.iter().all(|s| *s == "ended_by_relay") {
            break;
        }
    }
    for (i, phone) in phones.iter_mut().enumerate() {
        tally.saw(format!(
            "phone_{}{}",
            state[i],
            closed_with(&mut phone.stream)
        ));
    }
}

/// `" (closed 1008)"` when the relay's close frame is readable right now, else `""`.
fn closed_with(stream: &mut TcpStream) -> String {
    let _ = stream.set_nonblocking(true);
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || seen.len() > 64 * 1024 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    // The relay's frames are unmasked: look for a close frame header with a code.
    seen.windows(4)
        .find(|w| w[0] == 0x88 && (2..126).contains(&w[1]))
        .map(|w| format!(" (closed {})", u16::from_be_bytes([w[2], w[3]])))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_batch_is_whole_masked_frames_of_one_byte_and_empty() {
        let batch = tiny_batch();
        assert_eq!(batch.len(), TINY_FRAMES / 2 * (7 + 6));
        // Walk the frames by their headers: FIN + binary, masked, length 1 then 0.
        let mut at = 0;
        for i in 0..TINY_FRAMES {
            assert_eq!(batch[at], 0x82, "frame {i}");
            let len = usize::from(batch[at + 1] & 0x7f);
            assert_eq!(batch[at + 1] & 0x80, 0x80, "masked");
            assert_eq!(len, if i % 2 == 0 { 1 } else { 0 });
            if len == 1 {
                assert_eq!(batch[at + 6] ^ MASK[0], b'x');
            }
            at += 6 + len;
        }
        assert_eq!(at, batch.len());
    }

    #[test]
    fn ping_frames_are_control_frames_of_125_bytes() {
        let ping = frame(0x9, &[0x70; 125]);
        assert_eq!(&ping[..2], &[0x89, 0x80 | 125]);
        assert_eq!(ping.len(), 2 + 4 + 125);
    }
}
