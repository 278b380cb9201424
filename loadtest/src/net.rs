//! Opening connections: a TCP connect bound to a chosen source address (socket2,
//! non-blocking, then adopted by monoio), and the WebSocket upgrade over it.
//!
//! monoio has no "connect this socket I made" call, so the connect is started
//! non-blocking before adoption; `writable()` (a poll op on io_uring, readiness on
//! epoll) waits for it and `SO_ERROR` tells how it went. On io_uring the descriptor is
//! then made blocking again, as monoio's own sockets are there.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use socket2::{Domain, Socket, Type};

use crate::sys;
use crate::ws::handshake::{self, HandshakeError};

/// Bytes read at a time during the upgrade; the relay's 101 is a few hundred.
const UPGRADE_READ: usize = 1024;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect failed.
    #[error("connect: {0}")]
    Tcp(io::Error),
    /// Connect plus upgrade took longer than the connect timeout.
    #[error("connect timed out")]
    Timeout,
    /// The relay refused or botched the upgrade.
    #[error("upgrade: {0}")]
    Handshake(#[from] HandshakeError),
    /// The connection broke during the upgrade.
    #[error("upgrade i/o: {0}")]
    Io(io::Error),
    /// The relay closed during the upgrade.
    #[error("closed during upgrade")]
    Closed,
}

impl ConnectError {
    /// The error kind as the report counts it.
    pub fn kind(&self) -> String {
        match self {
            Self::Tcp(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                "connect_refused".into()
            }
            Self::Tcp(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                "connect_no_ports".into()
            }
            Self::Tcp(e) if e.raw_os_error() == Some(libc::EMFILE) => "connect_fd_limit".into(),
            Self::Tcp(_) => "connect".into(),
            Self::Timeout => "connect_timeout".into(),
            Self::Handshake(HandshakeError::Status(code)) => format!("status_{code}"),
            Self::Handshake(_) => "handshake".into(),
            Self::Io(_) | Self::Closed => "handshake_io".into(),
        }
    }
}

/// Hands out source addresses round-robin (per worker; workers start at different
/// offsets so the whole run spreads evenly).
pub struct SourcePicker {
    /// The addresses; empty means "let the kernel choose".
    ips: Vec<IpAddr>,
    /// Index of the next address to use.
    next: Cell<usize>,
}

impl SourcePicker {
    /// A picker over `ips` starting at `offset`.
    pub fn new(ips: Vec<IpAddr>, offset: usize) -> Self {
        Self {
            next: Cell::new(offset),
            ips,
        }
    }

    /// The next source address, if any were given.
    pub fn pick(&self) -> Option<IpAddr> {
        if self.ips.is_empty() {
            return None;
        }
        let at = self.next.get() % self.ips.len();
        self.next.set(at + 1);
        Some(self.ips[at])
    }
}

/// An upgraded connection and the bytes that arrived right after the `101`.
pub struct Upgraded {
    /// The stream (plain or TLS), ready for frames.
    pub stream: crate::tls::Stream,
    /// Frame bytes read together with the response head.
    pub leftover: Vec<u8>,
    /// Connect plus upgrade, in µs.
    pub micros: u64,
}

/// Connects to `target` from `source` (if any) and upgrades on `path` with `extra`
/// headers, all within `timeout`.
pub async fn open_ws(
    target: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    extra: &[(&str, &str)],
    timeout: Duration,
) -> Result<Upgraded, ConnectError> {
    let started = Instant::now();
    let attempt = async {
        let tcp = connect_tcp(target, source)
            .await
            .map_err(ConnectError::Tcp)?;
        let host = target.to_string();
        let mut stream = crate::tls::wrap(tcp, &host)
            .await
            .map_err(ConnectError::Io)?;
        let leftover = upgrade(&mut stream, &host, path, extra).await?;
        Ok::<_, ConnectError>((stream, leftover))
    };
    let (stream, leftover) = monoio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)??;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    Ok(Upgraded {
        stream,
        leftover,
        micros,
    })
}

/// A TCP connection to `target`, bound to `source` when given.
pub async fn connect_tcp(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(ip) = source {
        // Best effort: without it, ports are merely allocated per source address.
        let _ = sys::bind_address_no_port(&socket);
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let std_stream: std::net::TcpStream = socket.into();
    let stream = TcpStream::from_std(std_stream)?;
    stream.writable(false).await?;
    if let Some(error) = sys::take_socket_error(&stream)? {
        return Err(error);
    }
    if !monoio::utils::is_legacy() {
        // monoio's io_uring sockets are blocking (the ring does the waiting).
        sys::set_blocking(&stream)?;
    }
    Ok(stream)
}

/// Sends the upgrade request and reads until a valid `101` (returns leftover bytes).
async fn upgrade(
    stream: &mut crate::tls::Stream,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<Vec<u8>, ConnectError> {
    let key = handshake::new_key();
    let request = handshake::upgrade_request(host, path, &key, extra);
    let (written, _) = stream.write_all(request).await;
    written.map_err(ConnectError::Io)?;
    let mut buf = Vec::with_capacity(UPGRADE_READ);
    loop {
        if buf.capacity() - buf.len() < UPGRADE_READ {
            buf.reserve(UPGRADE_READ);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (read, slice) = stream.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        match read {
            Ok(0) => return Err(ConnectError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ConnectError::Io(e)),
        }
        if let Some(head) = handshake::check_response(&buf, &key)? {
            return Ok(buf.split_off(head));
        }
    }
}
