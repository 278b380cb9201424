//! One connection's TLS over caller-owned buffers, without I/O.
//!
//! `open` takes ciphertext (a cut record from last time first, then what was just read,
//! both in the shard's scratch buffer), decrypts every whole record, appends the
//! plaintext to the caller's buffer and keeps only the cut tail. `seal` encrypts into
//! the caller's buffer. Records the server must send on its own (the handshake flight,
//! a KeyUpdate answer, `close_notify`) go to `unsent` until the socket takes them.
//!
//! Two phases. During the handshake the session is rustls's unbuffered connection
//! (boxed: several KiB, for a few round trips). Once the handshake is done, rustls hands
//! over the traffic keys and sequence numbers (`dangerous_into_kernel_connection`, the
//! kTLS hand-off) and its connection is dropped: the session becomes a
//! [`record::Traffic`] of ~250 B that protects records with *ring* directly, in place,
//! with no allocation per record (`tls::record`). The TLS 1.3 traffic secrets a KeyUpdate
//! needs are not in rustls's hand-off; they reach the session through the config's
//! key log ([`SecretCapture`]), which rustls calls synchronously inside the
//! `process_tls_records` call that derives them, on this thread.
//!
//! While the connection is idle, `partial` and `unsent` are empty and hold no
//! allocation.

use std::cell::RefCell;
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError};
use rustls::{ConnectionTrafficSecrets, ProtocolVersion, ServerConfig, SupportedCipherSuite};

use crate::tls::record::{self, Cipher, DirectionKeys, Traffic, Version};
pub use crate::tls::record::{Opened, TlsError};

/// The one ALPN protocol offered (PROTOCOL §1.1).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// TLS 1.3 record overhead: 5 header bytes, 1 content-type byte, 16 tag bytes. TLS 1.2
/// AES-GCM has 5 + 8 (explicit nonce) + 16; 32 covers both with room.
const RECORD_OVERHEAD: usize = 32;

/// Room to ask for to seal `plain` bytes: one overhead per record, and one record more
/// for a KeyUpdate sealed in front when the send key is renewed.
pub fn sealed_len(plain: usize) -> usize {
    plain + (plain.div_ceil(record::MAX_FRAGMENT).max(1) + 1) * RECORD_OVERHEAD
}

/// The TLS 1.3 application traffic secrets of the handshake running on this thread, as
/// rustls's key log hands them over (see the module docs).
#[derive(Default)]
struct Captured {
    /// CLIENT_TRAFFIC_SECRET_0 (what we receive under).
    client: Option<Secret>,
    /// SERVER_TRAFFIC_SECRET_0 (what we send under).
    server: Option<Secret>,
}

/// A traffic secret (SHA-256 or SHA-384 output).
#[derive(Clone, Copy)]
struct Secret {
    /// The bytes; the first `len` are the secret.
    bytes: [u8; 48],
    /// Its length.
    len: u8,
}

impl Secret {
    /// Copy `secret` (at most 48 bytes, the longest TLS 1.3 hash).
    fn new(secret: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; 48];
        bytes.get_mut(..secret.len())?.copy_from_slice(secret);
        Some(Secret {
            bytes,
            len: secret.len() as u8,
        })
    }

    /// The secret.
    fn get(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

thread_local! {
    /// Secrets rustls logged during the `process_tls_records` call running now on this
    /// thread; the session moves them out right after that call.
    static CAPTURED: RefCell<Captured> = RefCell::new(Captured::default());
}

/// The `ServerConfig`'s key log: keeps the two TLS 1.3 application traffic secrets for
/// the session whose handshake is running on this thread. Nothing is written anywhere.
#[derive(Debug, Default)]
pub struct SecretCapture;

/// Key log label of the client's first application traffic secret.
const CLIENT_SECRET_LABEL: &str = "CLIENT_TRAFFIC_SECRET_0";
/// Key log label of the server's first application traffic secret.
const SERVER_SECRET_LABEL: &str = "SERVER_TRAFFIC_SECRET_0";

impl rustls::KeyLog for SecretCapture {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let secret = Secret::new(secret);
        CAPTURED.with_borrow_mut(|captured| match label {
            CLIENT_SECRET_LABEL => captured.client = secret,
            SERVER_SECRET_LABEL => captured.server = secret,
            _ => {}
        });
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_SECRET_LABEL || label == SERVER_SECRET_LABEL
    }
}

/// A handshake in progress.
struct Handshake {
    /// rustls's connection.
    conn: UnbufferedServerConnection,
    /// The traffic secrets, once rustls has derived them.
    secrets: Captured,
}

impl Drop for Captured {
    fn drop(&mut self) {
        for secret in [&mut self.client, &mut self.server].into_iter().flatten() {
            secret.bytes.fill(0);
            std::hint::black_box(&secret.bytes);
        }
    }
}

impl Captured {
    /// Move secrets logged by the last `process_tls_records` call on this thread here.
    fn collect(&mut self) {
        CAPTURED.with_borrow_mut(|captured| {
            // Moved, then the thread's copy wiped (not just emptied).
            if let Some(client) = captured.client {
                self.client = Some(client);
            }
            if let Some(server) = captured.server {
                self.server = Some(server);
            }
            *captured = Captured::default();
        });
    }
}

/// Where the connection is. The traffic state is the one a connection lives in, so it
/// is inline (the whole session is boxed in `tls::Link`); the handshake is boxed.
#[allow(clippy::large_enum_variant)]
enum Phase {
    /// The handshake, driven by rustls.
    Handshake(Box<Handshake>),
    /// After it: our own record layer.
    Traffic(Traffic),
    /// The hand-off failed; nothing more can be read or sent.
    Failed,
}

/// One connection's TLS state.
pub struct TlsSession {
    /// Handshake or traffic.
    phase: Phase,
    /// The client agreed on ALPN `http/1.1` (kept past the handshake).
    alpn_http11: bool,
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
            phase: Phase::Handshake(Box::new(Handshake {
                conn: UnbufferedServerConnection::new(config)?,
                secrets: Captured::default(),
            })),
            alpn_http11: false,
            partial: Vec::new(),
            unsent: Vec::new(),
            unsent_plain: 0,
            peer_closed: false,
        })
    }

    /// True until the handshake is done.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.phase, Phase::Handshake(_))
    }

    /// The ALPN protocol agreed on, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match &self.phase {
            Phase::Handshake(hs) => hs.conn.alpn_protocol(),
            _ => self.alpn_http11.then_some(ALPN_HTTP11),
        }
    }

    /// The TLS version agreed on (after the handshake).
    pub fn version(&self) -> Option<ProtocolVersion> {
        match &self.phase {
            Phase::Handshake(hs) => hs.conn.protocol_version(),
            Phase::Traffic(t) => Some(match t.version() {
                Version::Tls12 => ProtocolVersion::TLSv1_2,
                Version::Tls13 => ProtocolVersion::TLSv1_3,
            }),
            Phase::Failed => None,
        }
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
        let result = self.open_phases(cipher, &mut consumed, plain, &mut opened);
        let tail = cipher.get(consumed..).unwrap_or_default();
        if result.is_ok() && !opened.peer_closed {
            self.keep_partial(tail);
        }
        cipher.clear();
        result.map(|()| opened)
    }

    /// `open` through the handshake (and the hand-off once it is done), then traffic.
    fn open_phases(
        &mut self,
        cipher: &mut [u8],
        consumed: &mut usize,
        plain: &mut Vec<u8>,
        opened: &mut Opened,
    ) -> Result<(), TlsError> {
        if let Phase::Handshake(hs) = &mut self.phase {
            open_handshake(hs, &mut self.unsent, cipher, consumed, plain, opened)?;
            if hs.conn.is_handshaking() || opened.peer_closed {
                self.peer_closed |= opened.peer_closed;
                return Ok(());
            }
            self.finish_handshake()?;
        }
        match &mut self.phase {
            Phase::Traffic(traffic) => {
                *consumed +=
                    traffic.open(&mut cipher[*consumed..], plain, &mut self.unsent, opened)?;
                self.peer_closed |= opened.peer_closed;
                Ok(())
            }
            _ => Err(TlsError::Record("connection failed")),
        }
    }

    /// The handshake is done: take the keys from rustls and drop its connection.
    fn finish_handshake(&mut self) -> Result<(), TlsError> {
        let Phase::Handshake(hs) = std::mem::replace(&mut self.phase, Phase::Failed) else {
            return Ok(());
        };
        let Handshake { conn, secrets } = *hs;
        self.alpn_http11 = conn.alpn_protocol() == Some(ALPN_HTTP11);
        self.phase = Phase::Traffic(into_traffic(conn, &secrets)?);
        Ok(())
    }

    /// Encrypt `plaintext` (one or more records) and append the records to `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        match &mut self.phase {
            Phase::Traffic(traffic) => traffic.seal(plaintext, out),
            _ => Err(TlsError::NotWritable),
        }
    }

    /// Append a `close_notify` alert to `unsent` (best effort: nothing if the session is
    /// not in a state to send one).
    pub fn queue_close_notify(&mut self) {
        if let Phase::Traffic(traffic) = &mut self.phase {
            let at = self.unsent.len();
            if traffic.seal_close_notify(&mut self.unsent).is_err() {
                self.unsent.truncate(at);
            }
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

    /// The record layer, once the handshake is done (tests).
    #[cfg(test)]
    pub(crate) fn traffic_mut(&mut self) -> Option<&mut Traffic> {
        match &mut self.phase {
            Phase::Traffic(traffic) => Some(traffic),
            _ => None,
        }
    }
}

/// Drive rustls's state machine over `cipher` until it wants more input.
fn open_handshake(
    hs: &mut Handshake,
    unsent: &mut Vec<u8>,
    cipher: &mut [u8],
    consumed: &mut usize,
    plain: &mut Vec<u8>,
    opened: &mut Opened,
) -> Result<(), TlsError> {
    loop {
        let status = hs.conn.process_tls_records(&mut cipher[*consumed..]);
        hs.secrets.collect();
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
                let at = unsent.len();
                let need = match encode.encode(&mut []) {
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        required_size
                    }
                    _ => 0,
                };
                unsent.resize(at + need, 0);
                let wrote = encode.encode(&mut unsent[at..]).unwrap_or(0);
                unsent.truncate(at + wrote);
            }
            // The bytes are in `unsent`, in order; the caller sends them before
            // anything sealed later.
            ConnectionState::TransmitTlsData(transmit) => transmit.done(),
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                opened.peer_closed = true;
                return Ok(());
            }
            // Early data is never enabled (max_early_data_size stays 0), so this
            // cannot come; were it to, nothing is read from it.
            ConnectionState::ReadEarlyData(_) => return Err(TlsError::NotWritable),
            _ => return Ok(()),
        }
    }
}

/// rustls's hand-off: the traffic keys and sequence numbers, with the TLS 1.3 secrets
/// the key log captured (checked against the keys: a secret that does not derive them
/// is refused rather than trusted).
fn into_traffic(
    conn: UnbufferedServerConnection,
    captured: &Captured,
) -> Result<Traffic, TlsError> {
    let suite = conn
        .negotiated_cipher_suite()
        .ok_or(TlsError::Record("no cipher suite after the handshake"))?;
    let (version, tx_limit) = match suite {
        SupportedCipherSuite::Tls13(s) => (Version::Tls13, s.common.confidentiality_limit),
        SupportedCipherSuite::Tls12(s) => (Version::Tls12, s.common.confidentiality_limit),
    };
    // The kernel connection would keep rustls's key schedule (~800 B) for KeyUpdate;
    // the captured secrets do that job in 96 bytes, so it is dropped here.
    let (secrets, _kernel) = conn.dangerous_into_kernel_connection()?;
    let (tx_secret, rx_secret) = match version {
        Version::Tls13 => (
            captured
                .server
                .ok_or(TlsError::Record("traffic secret missing"))?,
            captured
                .client
                .ok_or(TlsError::Record("traffic secret missing"))?,
        ),
        Version::Tls12 => (NO_SECRET, NO_SECRET),
    };
    let (cipher, tx) = direction(&secrets.tx.1, secrets.tx.0, tx_secret.get())?;
    let (_, rx) = direction(&secrets.rx.1, secrets.rx.0, rx_secret.get())?;
    if version == Version::Tls13 && !(tx.matches_secret(cipher) && rx.matches_secret(cipher)) {
        return Err(TlsError::Record("traffic secret does not match the keys"));
    }
    Ok(Traffic::new(version, cipher, tx, rx, tx_limit))
}

/// No secret (TLS 1.2).
const NO_SECRET: Secret = Secret {
    bytes: [0; 48],
    len: 0,
};

/// One direction's keys from rustls's extracted secrets.
fn direction(
    secrets: &ConnectionTrafficSecrets,
    seq: u64,
    secret: &[u8],
) -> Result<(Cipher, DirectionKeys), TlsError> {
    let (cipher, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (Cipher::Chacha20Poly1305, key, iv)
        }
        _ => {
            return Err(TlsError::Record(
                "cipher suite not supported after the handshake",
            ))
        }
    };
    Ok((
        cipher,
        DirectionKeys::new(key.as_ref(), iv.as_ref(), seq, secret)?,
    ))
}

#[cfg(test)]
mod tests;
