//! One connection's TLS record layer over caller-owned buffers, without I/O.
//!
//! `open` takes ciphertext (a cut record from last time first, then what was just read,
//! both in the shard's scratch buffer), decrypts every whole record, appends the
//! plaintext to the caller's buffer and keeps only the cut tail. `seal` encrypts into
//! the caller's buffer. Handshake messages the server must send go to `unsent` until the
//! socket takes them. While the connection is idle, `partial` and `unsent` are empty and
//! hold no allocation: the session is rustls's state (keys, sequence numbers) and nothing
//! else.
//!
//! rustls 0.23 copies each decrypted record into a `Vec` of its own and encrypts each
//! record into one (`docs/benchmarks.md`, "TLS"): one allocation per record each way,
//! freed at once, and never per idle connection.

use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use rustls::ServerConfig;

/// Why a TLS connection cannot go on. Never carries payload bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The peer broke TLS (a bad record, a failed handshake, plain HTTP on the TLS
    /// port, no ALPN protocol in common…).
    #[error("TLS: {0}")]
    Protocol(#[from] rustls::Error),
    /// The keys of this direction are used up (TLS 1.2 after 2^64 records).
    #[error("TLS: traffic keys exhausted")]
    Exhausted,
    /// Application data to send before the handshake finished.
    #[error("TLS: not ready to send application data")]
    NotWritable,
}

/// What one `open` found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opened {
    /// Plaintext bytes appended to the caller's buffer.
    pub plain: usize,
    /// The peer sent `close_notify` (an orderly end of its side).
    pub peer_closed: bool,
}

/// TLS 1.3 record overhead: 5 header bytes, 1 content-type byte, 16 tag bytes. TLS 1.2
/// AES-GCM has 5 + 8 (explicit nonce) + 16; 32 covers both with room.
const RECORD_OVERHEAD: usize = 32;

/// Largest plaintext in one record (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 16 * 1024;

/// Room to ask for to seal `plain` bytes: one overhead per record.
pub fn sealed_len(plain: usize) -> usize {
    plain + plain.div_ceil(MAX_FRAGMENT).max(1) * RECORD_OVERHEAD
}

/// One connection's TLS state.
pub struct TlsSession {
    /// rustls's connection: handshake state, traffic keys, sequence numbers.
    conn: UnbufferedServerConnection,
    /// Ciphertext of a record (or handshake message) cut by the read boundary, kept only
    /// until it completes.
    partial: Vec<u8>,
    /// Ciphertext for the peer that the socket has not taken yet (a handshake flight, or
    /// records sealed when the socket pushed back).
    unsent: Vec<u8>,
    /// Plaintext bytes that the records in `unsent` carry and that the caller has not
    /// yet been told are written (see `tls::link`).
    unsent_plain: usize,
    /// The peer's `close_notify` arrived: reads report end of stream.
    peer_closed: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.is_handshaking())
            .field("partial", &self.partial.len())
            .field("unsent", &self.unsent.len())
            .finish()
    }
}

impl TlsSession {
    /// A new server-side session under `config` (the pair in force now).
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        Ok(TlsSession {
            conn: UnbufferedServerConnection::new(config)?,
            partial: Vec::new(),
            unsent: Vec::new(),
            unsent_plain: 0,
            peer_closed: false,
        })
    }

    /// True until the handshake is done.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The ALPN protocol agreed on, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The TLS version agreed on (after the handshake).
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The peer's `close_notify` arrived.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Bytes held for this connection alone (a cut record, unsent ciphertext), for the
    /// memory budget; zero while idle.
    pub fn held_bytes(&self) -> usize {
        self.partial.capacity() + self.unsent.capacity()
    }

    /// Move the cut record of the last `open` to the front of `buf` (which the caller
    /// then fills from the socket), releasing the connection's copy.
    pub fn restore_partial(&mut self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&self.partial);
        self.partial = Vec::new();
    }

    /// Ciphertext that arrived before the session existed (it is read first).
    pub fn seed(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.partial = bytes;
        }
    }

    /// Give back ciphertext taken by `restore_partial` that could not be added to (the
    /// read failed): it is the cut record again.
    pub fn put_back(&mut self, cipher: &mut Vec<u8>) {
        self.keep_partial(cipher);
        cipher.clear();
    }

    /// Keep `tail` (the cut record of an `open`) until more bytes arrive.
    fn keep_partial(&mut self, tail: &[u8]) {
        if !tail.is_empty() {
            self.partial = tail.to_vec();
        }
    }

    /// Decrypt every whole record of `cipher`, append the plaintext to `plain`, queue any
    /// handshake answer in `unsent`, and keep the cut tail for next time (`cipher` is left
    /// empty). On error the connection is unusable.
    pub fn open(&mut self, cipher: &mut Vec<u8>, plain: &mut Vec<u8>) -> Result<Opened, TlsError> {
        let mut consumed = 0;
        let mut opened = Opened::default();
        let result = self.open_records(cipher, &mut consumed, plain, &mut opened);
        let tail = cipher.get(consumed..).unwrap_or_default();
        if result.is_ok() {
            self.keep_partial(tail);
        }
        cipher.clear();
        result.map(|()| opened)
    }

    /// The loop of `open`: drive rustls's state machine until it wants more input.
    fn open_records(
        &mut self,
        cipher: &mut [u8],
        consumed: &mut usize,
        plain: &mut Vec<u8>,
        opened: &mut Opened,
    ) -> Result<(), TlsError> {
        loop {
            let status = self.conn.process_tls_records(&mut cipher[*consumed..]);
            *consumed += status.discard;
            match status.state? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record?;
                        plain.extend_from_slice(record.payload);
                        opened.plain += record.payload.len();
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    let at = self.unsent.len();
                    let need = match encode.encode(&mut []) {
                        Err(EncodeError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => required_size,
                        _ => 0,
                    };
                    self.unsent.resize(at + need, 0);
                    let wrote = encode.encode(&mut self.unsent[at..]).unwrap_or(0);
                    self.unsent.truncate(at + wrote);
                }
                // The bytes are in `unsent`, in order; the caller sends them before
                // anything sealed later.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.peer_closed = true;
                    opened.peer_closed = true;
                    return Ok(());
                }
                // Early data is never enabled (max_early_data_size stays 0), so this
                // cannot come; were it to, nothing is read from it.
                ConnectionState::ReadEarlyData(_) => return Err(TlsError::NotWritable),
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                    return Ok(())
                }
                _ => return Ok(()),
            }
        }
    }

    /// Encrypt `plaintext` (one or more records) and append the records to `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        let status = self.conn.process_tls_records(&mut []);
        let ConnectionState::WriteTraffic(mut traffic) = status.state? else {
            return Err(TlsError::NotWritable);
        };
        let at = out.len();
        out.resize(at + sealed_len(plaintext.len()), 0);
        let wrote = match traffic.encrypt(plaintext, &mut out[at..]) {
            Ok(n) => n,
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                out.resize(at + required_size, 0);
                traffic
                    .encrypt(plaintext, &mut out[at..])
                    .map_err(|_| TlsError::Exhausted)?
            }
            Err(_) => return Err(TlsError::Exhausted),
        };
        out.truncate(at + wrote);
        Ok(())
    }

    /// Append a `close_notify` alert to `unsent` (best effort: nothing if the session is
    /// not in a state to send one).
    pub fn queue_close_notify(&mut self) {
        let status = self.conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::WriteTraffic(mut traffic)) = status.state {
            let at = self.unsent.len();
            self.unsent.resize(at + RECORD_OVERHEAD, 0);
            let wrote = traffic
                .queue_close_notify(&mut self.unsent[at..])
                .unwrap_or(0);
            self.unsent.truncate(at + wrote);
        }
    }

    /// Ciphertext waiting for the socket.
    pub fn unsent(&self) -> &[u8] {
        &self.unsent
    }

    /// The socket took `n` bytes of `unsent`; once it is empty its allocation goes.
    pub fn sent(&mut self, n: usize) {
        self.unsent.drain(..n.min(self.unsent.len()));
        if self.unsent.is_empty() {
            self.unsent = Vec::new();
        }
    }

    /// Keep sealed records the socket did not take, carrying `plain` plaintext bytes the
    /// caller has not been told are written.
    pub fn keep_unsent(&mut self, records: &[u8], plain: usize) {
        self.unsent.extend_from_slice(records);
        self.unsent_plain += plain;
    }

    /// Plaintext bytes carried by `unsent` and not yet reported written; reset to zero.
    pub fn take_unsent_plain(&mut self) -> usize {
        std::mem::take(&mut self.unsent_plain)
    }
}

#[cfg(test)]
mod tests;
