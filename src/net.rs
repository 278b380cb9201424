//! Connection-level plumbing below the WebSocket and HTTP layers: the process-wide count
//! of open client connections (`--max-connections`) and the permit each admitted
//! connection holds; writing a whole plain-HTTP response and the lingering close after
//! it (one implementation for the accept path, the admin endpoints and the ticket
//! sides).

use std::future::poll_fn;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::sys;
use crate::tls::Link;

/// Bytes read and dropped per syscall while lingering.
const DISCARD_CHUNK: usize = 4096;

/// How a connection closes after its final response: the response gets `write` to go
/// out; then the write half is shut and what the client still sends is read and dropped
/// for up to `time` and `bytes`, so closing with unread bytes does not turn into a reset
/// that destroys the response.
///
/// Two settings, because what a client may still be sending differs. A refused or
/// answered plain request (a head under its caps, at most a small body) is done in a
/// moment, and under a connection flood every lingering second holds a descriptor:
/// `RESPONSE`. An uploader refused mid-body (ticket PUT: 413, 502) keeps sending until
/// it has read the response — on loopback several MiB before it notices — so `UPLOAD`
/// allows more bytes and a little more time; time is the real limit there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// Longest the response may take to be written.
    pub write: Duration,
    /// Longest the client's remaining bytes are read after the write half is shut.
    pub time: Duration,
    /// Most bytes read and dropped.
    pub bytes: usize,
}

impl Linger {
    /// After a plain response or refusal (accept path, admin endpoints, ticket minting).
    pub const RESPONSE: Linger = Linger {
        write: Duration::from_secs(5),
        time: Duration::from_secs(1),
        bytes: 256 * 1024,
    };

    /// After a ticket side's final response (an uploader may be mid-body).
    pub const UPLOAD: Linger = Linger {
        write: Duration::from_secs(10),
        time: Duration::from_secs(2),
        bytes: 64 * 1024 * 1024,
    };
}

// An upload lingers at least as long and reads more than a plain response.
const _: () = assert!(Linger::UPLOAD.bytes > Linger::RESPONSE.bytes);
const _: () = assert!(Linger::UPLOAD.time.as_millis() >= Linger::RESPONSE.time.as_millis());

/// Write a whole response, then close lingering (`Linger`). The caller drops the stream
/// (which closes it) afterwards.
pub async fn respond_and_close(stream: &TcpStream, link: &mut Link, resp: &[u8], linger: Linger) {
    let written = monoio::time::timeout(linger.write, write_all(stream, link, resp)).await;
    if matches!(written, Ok(Ok(()))) {
        linger_close(stream, link, linger).await;
    }
}

/// Write a response (inside TLS on a TLS connection) and close lingering
/// (`Linger::RESPONSE`); the stream closes when this returns.
pub async fn reply_and_close(stream: TcpStream, mut link: Link, resp: &[u8]) {
    respond_and_close(&stream, &mut link, resp, Linger::RESPONSE).await;
}

/// Send what the link holds for the socket (a TLS handshake flight), waiting for
/// writability while the socket pushes back.
pub async fn flush_link(stream: &TcpStream, link: &mut Link) -> io::Result<()> {
    while !link.send_unsent(stream.as_raw_fd())? {
        stream.writable(false).await?;
    }
    Ok(())
}

/// Half-close (over TLS after a `close_notify`), then read and drop what the client
/// still sends until EOF, bounded in time and bytes (raw ciphertext over TLS: the
/// connection is only being closed).
pub async fn linger_close(stream: &TcpStream, link: &mut Link, linger: Linger) {
    link.shutdown_write(stream.as_raw_fd());
    let _ = monoio::time::timeout(linger.time, discard_until_eof(stream, linger.bytes)).await;
}

/// Read and drop up to `max` bytes until EOF.
async fn discard_until_eof(stream: &TcpStream, max: usize) {
    let mut sink = Vec::with_capacity(DISCARD_CHUNK);
    let mut total = 0;
    while total < max {
        sink.clear();
        match sys::recv_into(stream.as_raw_fd(), &mut sink, DISCARD_CHUNK) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stream.readable(false).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Write all of `bytes` (sealed over TLS), waiting for writability when the socket
/// pushes back.
pub async fn write_all(stream: &TcpStream, link: &mut Link, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match link.send_vectored(stream.as_raw_fd(), &[io::IoSlice::new(bytes)]) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable(false).await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Open client connections (public listener), shared by every shard; touched once per
/// connection, never per message.
#[derive(Debug, Default)]
pub struct ConnCount {
    /// Connections counted now.
    open: AtomicUsize,
}

impl ConnCount {
    /// Count one more open connection, unless `max` are open already.
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<ConnPermit> {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnPermit(self.clone()))
    }

    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One admitted connection's place under `--max-connections`; released on drop.
#[derive(Debug)]
pub struct ConnPermit(Arc<ConnCount>);

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Let the shard's other tasks run once: a task that moves bytes between sockets
/// (the ticket pump, a node hand-over's pipe) calls it every few rounds, or a pair of
/// fast sockets that never blocks would starve them.
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_cap_and_come_back_when_dropped() {
        let count = Arc::new(ConnCount::default());
        let a = count.admit(2).expect("first");
        let _b = count.admit(2).expect("second");
        assert!(count.admit(2).is_none(), "third is over the cap");
        assert_eq!(count.open(), 2);
        drop(a);
        assert_eq!(count.open(), 1);
        assert!(count.admit(2).is_some());
    }
}
