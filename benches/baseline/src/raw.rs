//! `--raw-copy`: the floor a relay can reach on this machine. It answers a pair
//! upgrade (`/?pair=CODE` or `/v1/pair?pair=CODE`) with a `101`, then copies bytes
//! between the two sides of a pair with `tokio::io::copy_bidirectional`: no frame
//! parsing, no unmasking, no queue. Frames therefore reach the other side still masked,
//! so the load generator needs `--accept-masked` against it. Pair only: server-id needs
//! envelopes, which a byte copy cannot make.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// A request head larger than this is not one the load generator sends.
const MAX_HEAD: usize = 8 << 10;
/// Time a client has for its whole request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// One side waiting for its peer: the socket and any bytes read past its head.
type Waiting = (TcpStream, Vec<u8>);

/// Pair code → the side that arrived first.
#[derive(Default)]
pub struct RawPairs {
    /// Sides waiting for their peer.
    waiting: Mutex<HashMap<String, Waiting>>,
}

/// Upgrades `socket`; the second side of a pair then copies both ways until either
/// side closes.
pub async fn serve(mut socket: TcpStream, pairs: Arc<RawPairs>) {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut socket)).await;
    let Ok(Ok(Some((code, key, leftover)))) = head else {
        let _ = socket
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    if socket.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let peer = {
        let mut waiting = pairs.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.remove(&code) {
            Some(peer) => peer,
            None => {
                waiting.insert(code, (socket, leftover));
                return;
            }
        }
    };
    let (mut other, other_leftover) = peer;
    // Bytes that came with a head belong to the other side.
    if other.write_all(&leftover).await.is_err() || socket.write_all(&other_leftover).await.is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut socket, &mut other).await;
}

/// Reads a request head; returns the pair code, the `Sec-WebSocket-Key` and what was
/// read past the head, or `None` for a head that is not a pair upgrade.
async fn read_head(socket: &mut TcpStream) -> std::io::Result<Option<(String, String, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Ok(None);
    };
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let code = query.split('&').find_map(|kv| kv.strip_prefix("pair="));
    let key = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    });
    match (path, code, key) {
        ("/" | "/v1/pair", Some(code), Some(key)) if (1..=256).contains(&code.len()) => {
            Ok(Some((code.to_owned(), key, buf[end..].to_vec())))
        }
        _ => Ok(None),
    }
}
