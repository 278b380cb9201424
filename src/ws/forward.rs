//! A WebSocket handed to another relay node (PROTOCOL §9): a browser that joins, by
//! message, a code another node minted. The shard-to-shard move (`conn::relocate`)
//! cannot cross hosts, so the receiving node becomes a pipe: it opens a WebSocket of its
//! own to the owner node's public listener (with a PROXY v2 header naming the client when
//! the nodes read one), replays the message that named the code there as a masked
//! client frame, sends the bytes the client had sent after it, and from then on copies
//! bytes both ways unchanged. Both legs are WebSockets without extensions, so the
//! client's masked frames are valid on the owner's leg and the owner's frames on the
//! client's; the owner runs the session (heartbeats included) end to end.
//!
//! The pipe holds no buffer while both sides are quiet: bytes are read only when the
//! other side can take them, and what a socket did not take is kept only until it does.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use base64::Engine as _;
use monoio::net::TcpStream;

use crate::net::{self, ConnPermit};
use crate::sys;
use crate::tls::Link;

/// How long the owner node has to accept the connection and answer the upgrade.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest upgrade response head accepted from the owner node.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Bytes read from one side per read.
const CHUNK: usize = 16 * 1024;

/// Rounds of syscalls a busy pipe makes before it lets the shard's other tasks run.
const ROUNDS_BEFORE_YIELD: u32 = 32;

/// Where a connection is handed and what is replayed there.
#[derive(Debug)]
pub struct Forward {
    /// The owner node's public listener.
    pub addr: SocketAddr,
    /// The path to upgrade on there (`/browser`, `/ws`).
    pub path: &'static str,
    /// The whole message that named the other node's code (a text message), replayed
    /// there first.
    pub first: Vec<u8>,
    /// Send a PROXY v2 header naming the client (the nodes run `--proxy-protocol`).
    pub proxy_header: bool,
}

/// Why a hand-over failed (the client is then closed with 1011).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The owner node did not accept, or a socket failed.
    #[error("owner node unreachable: {0}")]
    Io(#[from] io::Error),
    /// The owner node did not answer the upgrade in time.
    #[error("owner node did not answer in time")]
    Timeout,
    /// The owner node answered something other than `101`.
    #[error("owner node refused the upgrade")]
    Refused,
}

/// A connection being handed over: its socket and what it still owes the client.
#[derive(Debug)]
pub struct Handover {
    /// The client's socket.
    pub fd: OwnedFd,
    /// Its transport (a TLS session stays on this node: the pipe decrypts and seals).
    pub link: Link,
    /// Its place under `--max-connections`, held while the pipe lives.
    pub permit: ConnPermit,
    /// The client's address (socket peer, or learnt from a PROXY header).
    pub client: SocketAddr,
    /// Frames queued for the client but not yet written.
    pub unsent: Vec<u8>,
    /// Bytes the client sent after the replayed message, not yet decoded.
    pub unread: Vec<u8>,
}

/// Hand `conn` over to the owner node and pipe until either side closes. Returns how the
/// hand-over went; the pipe's own end is not an error.
pub async fn run(handover: Handover, forward: Forward) -> Result<(), ForwardError> {
    let Handover {
        fd,
        mut link,
        permit,
        client,
        unsent,
        unread,
    } = handover;
    let client_stream = sys::adopt_stream(fd)?;
    net::write_all(&client_stream, &mut link, &unsent).await?;
    let opened = monoio::time::timeout(UPSTREAM_TIMEOUT, open_upstream(&forward, client)).await;
    let (upstream, early) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => return Err(refuse(&client_stream, &mut link, e).await),
        Err(_) => return Err(refuse(&client_stream, &mut link, ForwardError::Timeout).await),
    };
    let mut plain = Link::plain();
    net::write_all(&upstream, &mut plain, &client_text_frame(&forward.first)).await?;
    net::write_all(&upstream, &mut plain, &unread).await?;
    net::write_all(&client_stream, &mut link, &early).await?;
    pipe(&client_stream, &mut link, &upstream).await;
    drop(permit);
    Ok(())
}

/// Tell the client the hand-over failed (1011), and pass the error on.
async fn refuse(stream: &TcpStream, link: &mut Link, error: ForwardError) -> ForwardError {
    let close = crate::ws::codec::encode_close(1011, "owner node unavailable");
    let _ = monoio::time::timeout(UPSTREAM_TIMEOUT, net::write_all(stream, link, &close)).await;
    error
}

/// Connect to the owner node and upgrade: the stream, and any bytes it sent after its
/// `101` head.
async fn open_upstream(
    forward: &Forward,
    client: SocketAddr,
) -> Result<(TcpStream, Vec<u8>), ForwardError> {
    let stream = TcpStream::connect(forward.addr).await?;
    stream.set_nodelay(true)?;
    let mut request = Vec::with_capacity(256);
    if forward.proxy_header {
        request.extend_from_slice(&proxy_v2_header(client, forward.addr)?);
    }
    request.extend_from_slice(upgrade_request(forward).as_bytes());
    net::write_all(&stream, &mut Link::plain(), &request).await?;
    let mut head = Vec::with_capacity(512);
    loop {
        if let Some(end) = find_head_end(&head) {
            if !head.starts_with(b"HTTP/1.1 101 ") {
                return Err(ForwardError::Refused);
            }
            let early = head.split_off(end);
            return Ok((stream, early));
        }
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(ForwardError::Refused);
        }
        let room = MAX_RESPONSE_HEAD - head.len();
        if net::read_some(&stream, &mut head, room).await? == 0 {
            return Err(ForwardError::Refused);
        }
    }
}

/// The upgrade request sent to the owner node.
fn upgrade_request(forward: &Forward) -> String {
    let mut nonce = [0u8; 16];
    // A failed CSPRNG leaves a zero nonce: the key only has to be well formed here.
    let _ = getrandom::fill(&mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        forward.path, forward.addr
    )
}

/// A PROXY v2 `PROXY` header: the client, and the owner node as the destination (both
/// as IPv6 when their families differ, as the header carries one family).
pub fn proxy_v2_header(client: SocketAddr, to: SocketAddr) -> io::Result<Vec<u8>> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    let (client, to) = match (client, to) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (client, to)
        }
        _ => (as_v6(client), as_v6(to)),
    };
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (client, to),
    )
    .build()
}

/// `addr` in the IPv6 family (an IPv4 address as `::ffff:a.b.c.d`).
fn as_v6(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        v6 => v6,
    }
}

/// Where a response head ends (just past its blank line), if it has.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// A whole client→server text frame (FIN, masked with a fresh key) carrying `payload`.
pub fn client_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut head = [0u8; 10];
    let head_len =
        crate::ws::codec::encode_header(crate::ws::codec::OpCode::Text, payload.len(), &mut head);
    head[1] |= 0x80;
    let mut key = [0u8; 4];
    // A failed CSPRNG leaves a zero key: masking is for proxies on the path, not secrecy.
    let _ = getrandom::fill(&mut key);
    let mut frame = Vec::with_capacity(head_len + 4 + payload.len());
    frame.extend_from_slice(&head[..head_len]);
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// One direction's state.
#[derive(Default)]
struct Leg {
    /// Bytes read from the source and not yet taken by the destination.
    pending: Vec<u8>,
    /// The source sent its FIN (passed on to the destination).
    ended: bool,
}

impl Leg {
    /// Give back an emptied buffer, so a quiet pipe holds none.
    fn release_if_empty(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = Vec::new();
        }
    }
}

/// Copy bytes both ways until both sides have ended or either fails.
async fn pipe(client: &TcpStream, link: &mut Link, upstream: &TcpStream) {
    let (cfd, ufd) = (client.as_raw_fd(), upstream.as_raw_fd());
    let mut plain = Link::plain();
    let mut up = Leg::default(); // client → owner
    let mut down = Leg::default(); // owner → client
    let mut rounds = 0;
    loop {
        let moved = match (
            step(link, cfd, &mut plain, ufd, &mut up),
            step(&mut plain, ufd, link, cfd, &mut down),
        ) {
            (Ok(a), Ok(b)) => a || b,
            _ => return,
        };
        let flushed = link.has_unsent() && link.send_unsent(cfd).is_ok();
        if up.ended && down.ended && up.pending.is_empty() && down.pending.is_empty() {
            return;
        }
        if moved || flushed {
            rounds += 1;
            if rounds >= ROUNDS_BEFORE_YIELD {
                rounds = 0;
                net::yield_now().await;
            }
            continue;
        }
        rounds = 0;
        up.release_if_empty();
        down.release_if_empty();
        let client_out = !down.pending.is_empty() || link.has_unsent();
        let waited = monoio::select! {
            r = client.readable(false), if up.pending.is_empty() && !up.ended => r,
            r = upstream.writable(false), if !up.pending.is_empty() => r,
            r = upstream.readable(false), if down.pending.is_empty() && !down.ended => r,
            r = client.writable(false), if client_out => r,
        };
        if waited.is_err() {
            return;
        }
    }
}

/// Move what one direction can: read when nothing is pending, write what is. True when
/// a byte moved or an end was seen; an error ends the pipe.
fn step(
    from: &mut Link,
    from_fd: i32,
    to: &mut Link,
    to_fd: i32,
    leg: &mut Leg,
) -> io::Result<bool> {
    let mut moved = false;
    if leg.pending.is_empty() && !leg.ended {
        match from.recv_into(from_fd, &mut leg.pending, CHUNK) {
            Ok(0) => {
                leg.ended = true;
                to.shutdown_write(to_fd);
                moved = true;
            }
            Ok(_) => moved = true,
            Err(e) if is_retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if !leg.pending.is_empty() {
        match to.send_vectored(to_fd, &[IoSlice::new(&leg.pending)]) {
            Ok(n) => {
                leg.pending.drain(..n);
                moved |= n > 0;
            }
            Err(e) if is_retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}

/// Nothing now, try later.
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_frame_is_masked_and_unmasks_to_the_payload() {
        let payload = br#"{"type":"join","code":"ABC346"}"#;
        let frame = client_text_frame(payload);
        assert_eq!(frame[0], 0x81);
        assert_eq!(frame[1], 0x80 | payload.len() as u8);
        let key = &frame[2..6];
        let unmasked: Vec<u8> = frame[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(unmasked, payload);
    }

    #[test]
    fn a_response_head_ends_at_its_blank_line() {
        assert_eq!(find_head_end(b"HTTP/1.1 101 OK\r\n\r\nxy"), Some(19));
        assert_eq!(find_head_end(b"HTTP/1.1 101 OK\r\n"), None);
    }
}
