//! A connection's byte stream, plain or TLS, with the calls of `sys` the connection code
//! makes on a raw descriptor: `recv_into`, `send_vectored`, `shutdown_write`.
//!
//! Over TLS, `recv_into` reads ciphertext into this shard's scratch buffer (behind a cut
//! record, if the last read left one), decrypts it and appends the plaintext to the
//! caller's buffer; handshake messages are answered on the way, so the accept path reads
//! a request head through the same call and the handshake runs under its timeout.
//! `send_vectored` gathers the slices into the shard's plaintext scratch, seals them into
//! its ciphertext scratch and sends. It reports bytes as written only once their records
//! are in the kernel, exactly like `sendmsg`: records the socket did not take wait in the
//! session, and the caller, which offers the same bytes again after `WouldBlock` as it
//! would to a plain socket, is told they went once they have.
//!
//! The scratch buffers are thread-locals: one set per shard thread, never per
//! connection.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use crate::memory;
use crate::sys;
use crate::tls::session::{sealed_len, TlsSession};

/// Plaintext sealed per `send_vectored`: four full records, the ciphertext of which the
/// socket's send buffer takes in one go on a healthy connection.
const WRITE_CHUNK: usize = 4 * 16 * 1024;

/// Bytes asked of the kernel when a cut record already fills the caller's `max`.
const MIN_READ: usize = 4 * 1024;

/// A shard's TLS scratch buffers (see the module docs).
#[derive(Default)]
struct Scratch {
    /// Ciphertext read from a socket (a cut record first).
    cipher_in: Vec<u8>,
    /// Plaintext gathered from queued slices.
    plain_out: Vec<u8>,
    /// Records sealed for a socket.
    cipher_out: Vec<u8>,
}

thread_local! {
    /// This shard's scratch buffers.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A connection's transport: plain TCP, or TLS through its session. One word: a plain
/// connection pays 8 bytes for it.
#[derive(Debug, Default)]
pub struct Link {
    /// The TLS session (None: plain TCP).
    tls: Option<Box<Secured>>,
}

/// A TLS connection's state.
#[derive(Debug)]
struct Secured {
    /// The handshake (rustls) or, after it, the traffic keys; and the records held for
    /// this connection alone.
    session: TlsSession,
    /// What `session` holds of its own (a cut record, unsent records), as last charged
    /// to the memory budget.
    charged: usize,
    /// The session was seeded with ciphertext read before it existed (what followed a
    /// PROXY header, typically the whole ClientHello): the next `recv_into` opens it even
    /// when the socket has nothing new, since the client waits for our answer.
    seeded: bool,
}

impl Drop for Secured {
    fn drop(&mut self) {
        memory::release(self.charged);
    }
}

impl std::ops::Deref for Secured {
    type Target = TlsSession;
    fn deref(&self) -> &TlsSession {
        &self.session
    }
}

impl std::ops::DerefMut for Secured {
    fn deref_mut(&mut self) -> &mut TlsSession {
        &mut self.session
    }
}

impl Link {
    /// Plain TCP.
    pub fn plain() -> Self {
        Link::default()
    }

    /// TLS through `session` (seeded, if it already holds ciphertext).
    pub fn tls(session: TlsSession) -> Self {
        let seeded = session.held_bytes() > 0;
        Link {
            tls: Some(Box::new(Secured {
                session,
                charged: 0,
                seeded,
            })),
        }
    }

    /// Ciphertext read before the session existed waits in it: read (`recv_into`) before
    /// waiting for the socket to be readable.
    pub fn has_seed(&self) -> bool {
        self.tls.as_ref().is_some_and(|s| s.seeded)
    }

    /// True for a TLS connection.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS session, if any.
    pub fn session(&self) -> Option<&TlsSession> {
        self.tls.as_deref().map(|s| &s.session)
    }

    /// Records (a handshake flight, or sealed data) wait for the socket.
    pub fn has_unsent(&self) -> bool {
        self.tls.as_ref().is_some_and(|s| !s.unsent().is_empty())
    }

    /// What this link holds for its connection alone (zero for plain TCP, and for TLS
    /// while idle).
    pub fn held_bytes(&self) -> usize {
        self.tls.as_ref().map_or(0, |s| s.held_bytes())
    }

    /// Read and decrypt what the socket has (see the module docs). `Ok(0)` is the end of
    /// the stream (EOF or `close_notify`); a TLS failure is `InvalidData`. Over TLS the
    /// plaintext may pass `max` by less than one record (16 KiB).
    pub fn recv_into(&mut self, fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let Some(secured) = self.tls.as_deref_mut() else {
            return sys::recv_into(fd, buf, max);
        };
        let seeded = std::mem::take(&mut secured.seeded);
        let session = &mut secured.session;
        let result =
            SCRATCH.with_borrow_mut(|s| recv_tls(session, seeded, fd, &mut s.cipher_in, buf, max));
        self.recharge();
        result
    }

    /// Write what the socket takes of `slices` (sealed, over TLS). `Ok(n)`: the first
    /// `n` bytes are in the kernel; `WouldBlock`: nothing more now.
    pub fn send_vectored(&mut self, fd: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(session) = self.tls.as_deref_mut() else {
            return sys::send_vectored(fd, slices);
        };
        let result = SCRATCH.with_borrow_mut(|s| send_tls(&mut session.session, fd, s, slices));
        self.recharge();
        result
    }

    /// Send the records waiting in the session (a handshake flight). `Ok(true)` once
    /// none wait.
    pub fn send_unsent(&mut self, fd: RawFd) -> io::Result<bool> {
        let Some(session) = self.tls.as_deref_mut() else {
            return Ok(true);
        };
        let result = flush_unsent(&mut session.session, fd);
        self.recharge();
        result
    }

    /// End the write side: over TLS, a `close_notify` first (best effort).
    pub fn shutdown_write(&mut self, fd: RawFd) {
        if let Some(session) = self.tls.as_deref_mut() {
            session.queue_close_notify();
            let _ = flush_unsent(&mut session.session, fd);
        }
        sys::shutdown_write(fd);
        self.recharge();
    }

    /// Charge the memory budget at what the session holds now.
    fn recharge(&mut self) {
        let Some(secured) = self.tls.as_deref_mut() else {
            return;
        };
        let now = secured.session.held_bytes();
        let before = std::mem::replace(&mut secured.charged, now);
        if now >= before {
            memory::charge(now - before);
        } else {
            memory::release(before - now);
        }
    }
}

/// The TLS side of `Link::recv_into`; `seeded`: the session's held ciphertext is whole
/// input not yet opened, to open even if the socket has nothing more.
fn recv_tls(
    session: &mut TlsSession,
    mut seeded: bool,
    fd: RawFd,
    cipher: &mut Vec<u8>,
    plain: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    loop {
        if session.peer_closed() {
            return Ok(0);
        }
        session.restore_partial(cipher);
        let room = max.checked_sub(cipher.len()).filter(|&r| r > 0);
        match sys::recv_into(fd, cipher, room.unwrap_or(MIN_READ)) {
            Ok(0) => return Ok(0),
            Ok(_) => {}
            Err(e) if std::mem::take(&mut seeded) && e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                session.put_back(cipher);
                return Err(e);
            }
        }
        let opened = session
            .open(cipher, plain)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        // Handshake answers (and a post-handshake key update's) leave at once; a socket
        // too full for them keeps them for the next write.
        match flush_unsent(session, fd) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if opened.plain > 0 {
            return Ok(opened.plain);
        }
        if opened.peer_closed {
            return Ok(0);
        }
    }
}

/// The TLS side of `Link::send_vectored`.
fn send_tls(
    session: &mut TlsSession,
    fd: RawFd,
    scratch: &mut Scratch,
    slices: &[IoSlice<'_>],
) -> io::Result<usize> {
    let offered: usize = slices.iter().map(|s| s.len()).sum();
    if !session.unsent().is_empty() {
        if !flush_unsent(session, fd)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let carried = session.take_unsent_plain();
        if carried > 0 {
            return Ok(carried.min(offered));
        }
    }
    if offered == 0 {
        return Ok(0);
    }
    let plain = &mut scratch.plain_out;
    plain.clear();
    for slice in slices {
        let take = slice.len().min(WRITE_CHUNK - plain.len());
        plain.extend_from_slice(&slice[..take]);
        if plain.len() == WRITE_CHUNK {
            break;
        }
    }
    let cipher = &mut scratch.cipher_out;
    cipher.clear();
    cipher.reserve(sealed_len(plain.len()));
    session
        .seal(plain, cipher)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let sent = match sys::send_vectored(fd, &[IoSlice::new(cipher)]) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if sent == cipher.len() {
        return Ok(plain.len());
    }
    session.keep_unsent(&cipher[sent..], plain.len());
    Err(io::ErrorKind::WouldBlock.into())
}

/// Send the session's waiting records. `Ok(true)` once none wait, `Ok(false)` when the
/// socket took only part of them.
fn flush_unsent(session: &mut TlsSession, fd: RawFd) -> io::Result<bool> {
    while !session.unsent().is_empty() {
        match sys::send_vectored(fd, &[IoSlice::new(session.unsent())]) {
            Ok(0) => return Ok(false),
            Ok(n) => session.sent(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_can_move_between_shards() {
        fn is_send<T: Send>() {}
        is_send::<Link>();
    }

    #[test]
    fn a_plain_link_is_one_word() {
        assert_eq!(std::mem::size_of::<Link>(), std::mem::size_of::<usize>());
    }
}
