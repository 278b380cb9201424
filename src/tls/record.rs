//! The record layer after the handshake: a connection's traffic keys and sequence numbers,
//! and record protection done with *ring*'s AEAD in the caller's buffers.
//!
//! rustls runs the handshake and the key schedule; once it is done the session hands the
//! two directions' keys over to a [`Traffic`] (rustls's `dangerous_into_kernel_connection`,
//! the kTLS hand-off) and drops rustls's connection. What stays per connection is this
//! struct: the cipher, and per direction the key, IV, sequence number and (TLS 1.3) the
//! traffic secret a KeyUpdate derives the next one from. The expanded AEAD key (*ring*'s
//! `LessSafeKey`, ~560 B) is built on the stack for each `open`/`seal` call and dropped at
//! its end, so an idle connection holds none; records are opened in place in the shard's
//! scratch buffer and sealed in place in the caller's output buffer, so no record costs an
//! allocation.
//!
//! Framing (RFC 8446 §5 for TLS 1.3; RFC 5246 §6.2.3.3, RFC 5288 and RFC 7905 for TLS
//! 1.2):
//! * TLS 1.3: outer header `17 03 03 len`, AAD = that header, nonce = IV XOR seq
//!   (left-padded), inner plaintext = content ‖ content type ‖ zero padding (stripped on
//!   receive). A KeyUpdate from the peer is honoured (HKDF-Expand-Label "traffic upd" over
//!   the traffic secret), and answered with one of ours when it asks; our own keys are
//!   renewed the same way when the suite's confidentiality limit is reached.
//! * TLS 1.2: AAD = seq ‖ type ‖ `03 03` ‖ plaintext length. AES-GCM: nonce = 4-byte
//!   salt ‖ 8-byte explicit nonce carried in the record (we send IV XOR seq, as rustls
//!   does); ChaCha20-Poly1305: nonce = IV XOR seq, nothing explicit. A handshake record
//!   (renegotiation) closes the connection.
//!
//! A bad tag, an oversized record, an unexpected content type or handshake message, or a
//! fatal alert is an error (the connection closes); `close_notify` is the peer's orderly
//! end. Nothing here logs or returns payload bytes.

use ring::{aead, hkdf};

/// Largest plaintext in one record (RFC 8446 §5.1, RFC 5246 §6.2.1).
pub const MAX_FRAGMENT: usize = 16 * 1024;

/// Record header: type, version (2), length (2).
const HEADER: usize = 5;

/// AEAD tag length of every suite offered (AES-GCM, ChaCha20-Poly1305).
const TAG: usize = 16;

/// TLS 1.2 AES-GCM's explicit nonce in each record (RFC 5288 §3).
const EXPLICIT_NONCE: usize = 8;

/// Largest TLS 1.3 record body accepted: 2^14 + 256 (RFC 8446 §5.2).
const MAX_CIPHERTEXT_13: usize = MAX_FRAGMENT + 256;

/// Largest TLS 1.2 record body accepted: 2^14 + 2048 (RFC 5246 §6.2.3).
const MAX_CIPHERTEXT_12: usize = MAX_FRAGMENT + 2048;

/// Content type: alert.
const ALERT: u8 = 21;
/// Content type: handshake.
const HANDSHAKE: u8 = 22;
/// Content type: application data.
const APPLICATION_DATA: u8 = 23;
/// Handshake message type: KeyUpdate (RFC 8446 §4.6.3).
const KEY_UPDATE: u8 = 24;
/// Alert description: close_notify.
const CLOSE_NOTIFY: u8 = 0;
/// Alert description: user_canceled (followed by close_notify; RFC 8446 §6.1).
const USER_CANCELED: u8 = 90;
/// Alert level: warning (TLS 1.2 only gives it meaning).
const WARNING: u8 = 1;

/// Longest traffic secret: SHA-384's output.
const MAX_SECRET: usize = 48;

/// The AEAD agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-128-GCM (the listener's first choice).
    Aes128Gcm,
    /// AES-256-GCM (with SHA-384 in TLS 1.3).
    Aes256Gcm,
    /// ChaCha20-Poly1305.
    Chacha20Poly1305,
}

impl Cipher {
    /// *ring*'s algorithm.
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    /// Key length in bytes.
    fn key_len(self) -> usize {
        self.algorithm().key_len()
    }

    /// The TLS 1.3 suite's hash, for HKDF (only AES-256-GCM goes with SHA-384).
    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Cipher::Aes256Gcm => hkdf::HKDF_SHA384,
            _ => hkdf::HKDF_SHA256,
        }
    }
}

/// The protocol version agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// One direction's keys, as the handshake left them.
#[derive(Clone)]
pub struct DirectionKeys {
    /// AEAD key (the first `Cipher::key_len` bytes are used).
    key: [u8; 32],
    /// Static IV (TLS 1.2 AES-GCM: salt ‖ the key block's 8 extra bytes).
    iv: [u8; aead::NONCE_LEN],
    /// Sequence number of the next record.
    seq: u64,
    /// TLS 1.3 traffic secret (the first `secret_len` bytes), for KeyUpdate.
    secret: [u8; MAX_SECRET],
    /// Length of `secret`; 0 in TLS 1.2.
    secret_len: u8,
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectionKeys")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        self.key.fill(0);
        self.iv.fill(0);
        self.secret.fill(0);
        std::hint::black_box(&self.key);
        std::hint::black_box(&self.secret);
    }
}

impl DirectionKeys {
    /// Keys from the handshake: `key` and `iv` as rustls extracted them, the next
    /// sequence number, and (TLS 1.3) the traffic secret.
    pub fn new(key: &[u8], iv: &[u8], seq: u64, secret: &[u8]) -> Result<Self, TlsError> {
        let mut keys = DirectionKeys {
            key: [0; 32],
            iv: [0; aead::NONCE_LEN],
            seq,
            secret: [0; MAX_SECRET],
            secret_len: 0,
        };
        let bad = || TlsError::Record("unusable traffic keys");
        keys.key
            .get_mut(..key.len())
            .ok_or_else(bad)?
            .copy_from_slice(key);
        keys.iv = iv.try_into().map_err(|_| bad())?;
        keys.secret
            .get_mut(..secret.len())
            .ok_or_else(bad)?
            .copy_from_slice(secret);
        keys.secret_len = secret.len() as u8;
        Ok(keys)
    }

    /// The traffic secret (empty in TLS 1.2).
    fn secret(&self) -> &[u8] {
        &self.secret[..usize::from(self.secret_len)]
    }

    /// Key and IV from the traffic secret (RFC 8446 §7.3); true if they are the ones held.
    pub fn matches_secret(&self, cipher: Cipher) -> bool {
        let mut key = [0u8; 32];
        let mut iv = [0u8; aead::NONCE_LEN];
        let len = cipher.key_len();
        let ok = expand_label(cipher, self.secret(), b"key", &mut key[..len]).is_ok()
            && expand_label(cipher, self.secret(), b"iv", &mut iv).is_ok();
        ok && key[..len] == self.key[..len] && iv == self.iv
    }

    /// Move to the next traffic secret (KeyUpdate; RFC 8446 §7.2): secret, key and IV
    /// renewed, sequence number back to 0.
    fn update(&mut self, cipher: Cipher) -> Result<(), TlsError> {
        if self.secret_len == 0 {
            return Err(TlsError::Record("key update without a traffic secret"));
        }
        let mut next = [0u8; MAX_SECRET];
        let len = usize::from(self.secret_len);
        expand_label(cipher, self.secret(), b"traffic upd", &mut next[..len])?;
        self.secret = next;
        next.fill(0);
        let key_len = cipher.key_len();
        let secret = &self.secret[..len];
        expand_label(cipher, secret, b"key", &mut self.key[..key_len])?;
        expand_label(cipher, secret, b"iv", &mut self.iv)?;
        self.seq = 0;
        Ok(())
    }

    /// This record's nonce (IV XOR the sequence number, left-padded), and the sequence
    /// number moved on. Running out of sequence numbers is an error, never a wrap.
    fn next_nonce(&mut self) -> Result<(u64, [u8; aead::NONCE_LEN]), TlsError> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(TlsError::Exhausted)?;
        Ok((seq, xor_nonce(&self.iv, seq)))
    }

    /// *ring*'s expanded key, built for one `open`/`seal` call.
    fn aead_key(&self, cipher: Cipher) -> Result<aead::LessSafeKey, TlsError> {
        let unbound = aead::UnboundKey::new(cipher.algorithm(), &self.key[..cipher.key_len()])
            .map_err(|_| TlsError::Record("unusable traffic keys"))?;
        Ok(aead::LessSafeKey::new(unbound))
    }
}

/// IV XOR seq, the sequence number big-endian in the last 8 bytes.
fn xor_nonce(iv: &[u8; aead::NONCE_LEN], seq: u64) -> [u8; aead::NONCE_LEN] {
    let mut nonce = *iv;
    for (byte, s) in nonce[aead::NONCE_LEN - 8..]
        .iter_mut()
        .zip(seq.to_be_bytes())
    {
        *byte ^= s;
    }
    nonce
}

/// An HKDF output length for *ring*.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label(secret, label, "", out.len()) (RFC 8446 §7.1).
fn expand_label(
    cipher: Cipher,
    secret: &[u8],
    label: &[u8],
    out: &mut [u8],
) -> Result<(), TlsError> {
    const PREFIX: &[u8] = b"tls13 ";
    let bad = |_| TlsError::Record("key derivation failed");
    let length = u16::try_from(out.len()).map_err(|_| TlsError::Record("key derivation failed"))?;
    let label_len = [(PREFIX.len() + label.len()) as u8];
    let length = length.to_be_bytes();
    let info: [&[u8]; 5] = [&length, &label_len, PREFIX, label, &[0]];
    let prk = hkdf::Prk::new_less_safe(cipher.hkdf(), secret);
    prk.expand(&info, Len(out.len()))
        .map_err(bad)?
        .fill(out)
        .map_err(bad)
}

/// What a record asks of the loop that opens them.
enum Flow {
    /// Go on with the next record.
    Go,
    /// The receive key changed: build it again for the next record.
    Rekeyed,
    /// `close_notify`: nothing after it is read.
    Closed,
}

/// A connection's record protection after the handshake (see the module docs).
#[derive(Debug)]
pub struct Traffic {
    /// TLS 1.2 or 1.3.
    version: Version,
    /// The AEAD.
    cipher: Cipher,
    /// Records we send.
    tx: DirectionKeys,
    /// Records we receive.
    rx: DirectionKeys,
    /// Records sealed under one key before TLS 1.3 renews it (TLS 1.2: before the
    /// connection must end): the suite's confidentiality limit.
    tx_limit: u64,
}

impl Traffic {
    /// The record layer with the handshake's keys.
    pub fn new(
        version: Version,
        cipher: Cipher,
        tx: DirectionKeys,
        rx: DirectionKeys,
        tx_limit: u64,
    ) -> Self {
        Traffic {
            version,
            cipher,
            tx,
            rx,
            tx_limit,
        }
    }

    /// TLS 1.2 or 1.3.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Largest record body accepted.
    fn max_ciphertext(&self) -> usize {
        match self.version {
            Version::Tls13 => MAX_CIPHERTEXT_13,
            Version::Tls12 => MAX_CIPHERTEXT_12,
        }
    }

    /// Decrypt every whole record at the front of `cipher` (in place), append the
    /// application data to `plain`, and any record owed to the peer (a KeyUpdate answer)
    /// to `reply`. Returns the bytes consumed: a cut record at the end is left for the
    /// caller to keep. After `close_notify` nothing more is read.
    pub fn open(
        &mut self,
        cipher: &mut [u8],
        plain: &mut Vec<u8>,
        reply: &mut Vec<u8>,
        opened: &mut Opened,
    ) -> Result<usize, TlsError> {
        let mut key: Option<aead::LessSafeKey> = None;
        let mut at = 0;
        while let Some(len) = self.whole_record(&cipher[at..])? {
            let record = &mut cipher[at..at + HEADER + len];
            at += HEADER + len;
            let current = match key.take() {
                Some(current) => current,
                None => self.rx.aead_key(self.cipher)?,
            };
            let (typ, content) = self.open_record(&current, record)?;
            match self.deliver(typ, content, plain, reply, opened)? {
                // Same receive key: keep it for the next record.
                Flow::Go => key = Some(current),
                Flow::Rekeyed => {}
                Flow::Closed => return Ok(at),
            }
        }
        Ok(at)
    }

    /// The body length of the whole record at the front of `buf`, `None` if it is cut.
    fn whole_record(&self, buf: &[u8]) -> Result<Option<usize>, TlsError> {
        let Some(header) = buf.get(..HEADER) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len > self.max_ciphertext() {
            return Err(TlsError::Record("record overflow"));
        }
        Ok((buf.len() >= HEADER + len).then_some(len))
    }

    /// Authenticate and decrypt one record in place: its content type and content.
    fn open_record<'a>(
        &mut self,
        key: &aead::LessSafeKey,
        record: &'a mut [u8],
    ) -> Result<(u8, &'a [u8]), TlsError> {
        let (header, body) = record.split_at_mut(HEADER);
        let header: [u8; HEADER] = [header[0], header[1], header[2], header[3], header[4]];
        let (typ, content) = match self.version {
            Version::Tls13 => self.open_tls13(key, header, body)?,
            Version::Tls12 => self.open_tls12(key, header, body)?,
        };
        if content.len() > MAX_FRAGMENT {
            return Err(TlsError::Record("record overflow"));
        }
        Ok((typ, content))
    }

    /// TLS 1.3: the outer type is always application data; the real one is inside.
    fn open_tls13<'a>(
        &mut self,
        key: &aead::LessSafeKey,
        header: [u8; HEADER],
        body: &'a mut [u8],
    ) -> Result<(u8, &'a [u8]), TlsError> {
        if header[0] != APPLICATION_DATA {
            return Err(TlsError::Record(
                "unexpected record type after the handshake",
            ));
        }
        if body.len() < TAG + 1 {
            return Err(TlsError::Record("record too short"));
        }
        let (_, nonce) = self.rx.next_nonce()?;
        let nonce = aead::Nonce::assume_unique_for_key(nonce);
        let inner = key
            .open_in_place(nonce, aead::Aad::from(header), body)
            .map_err(|_| TlsError::Record("bad record MAC"))?;
        let end = inner
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(TlsError::Record("record without a content type"))?;
        Ok((inner[end], &inner[..end]))
    }

    /// TLS 1.2: the type is in the header and the AAD.
    fn open_tls12<'a>(
        &mut self,
        key: &aead::LessSafeKey,
        header: [u8; HEADER],
        body: &'a mut [u8],
    ) -> Result<(u8, &'a [u8]), TlsError> {
        let typ = header[0];
        let (seq, mut nonce) = self.rx.next_nonce()?;
        let body = if self.cipher == Cipher::Chacha20Poly1305 {
            body
        } else {
            if body.len() < EXPLICIT_NONCE {
                return Err(TlsError::Record("record too short"));
            }
            let (explicit, rest) = body.split_at_mut(EXPLICIT_NONCE);
            nonce[4..].copy_from_slice(explicit);
            nonce[..4].copy_from_slice(&self.rx.iv[..4]);
            rest
        };
        let plain_len = body
            .len()
            .checked_sub(TAG)
            .ok_or(TlsError::Record("record too short"))?;
        let aad = tls12_aad(seq, typ, plain_len);
        let content = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                body,
            )
            .map_err(|_| TlsError::Record("bad record MAC"))?;
        Ok((typ, content))
    }

    /// Act on one opened record.
    fn deliver(
        &mut self,
        typ: u8,
        content: &[u8],
        plain: &mut Vec<u8>,
        reply: &mut Vec<u8>,
        opened: &mut Opened,
    ) -> Result<Flow, TlsError> {
        match typ {
            APPLICATION_DATA => {
                plain.extend_from_slice(content);
                opened.plain += content.len();
                Ok(Flow::Go)
            }
            ALERT => self.alert(content, opened),
            HANDSHAKE if self.version == Version::Tls13 => self.key_update(content, reply),
            HANDSHAKE => Err(TlsError::Record("renegotiation is not supported")),
            _ => Err(TlsError::Record(
                "unexpected record type after the handshake",
            )),
        }
    }

    /// An alert: `close_notify` ends the peer's side; TLS 1.3 `user_canceled` and TLS
    /// 1.2 warnings are ignored; anything else is fatal.
    fn alert(&mut self, content: &[u8], opened: &mut Opened) -> Result<Flow, TlsError> {
        let &[level, description] = content else {
            return Err(TlsError::Record("malformed alert"));
        };
        match (self.version, description) {
            (_, CLOSE_NOTIFY) => {
                opened.peer_closed = true;
                Ok(Flow::Closed)
            }
            (Version::Tls13, USER_CANCELED) => Ok(Flow::Go),
            (Version::Tls12, _) if level == WARNING => Ok(Flow::Go),
            _ => Err(TlsError::Alert(description)),
        }
    }

    /// TLS 1.3 post-handshake message: only KeyUpdate, alone in its record (a KeyUpdate
    /// must end on a record boundary, RFC 8446 §5.1). A NewSessionTicket from a client,
    /// or anything else, is a protocol error.
    fn key_update(&mut self, content: &[u8], reply: &mut Vec<u8>) -> Result<Flow, TlsError> {
        let &[KEY_UPDATE, 0, 0, 1, request] = content else {
            return Err(TlsError::Record("unexpected handshake message"));
        };
        match request {
            0 => {}
            1 => self.send_key_update(reply)?,
            _ => return Err(TlsError::Record("malformed KeyUpdate")),
        }
        self.rx.update(self.cipher)?;
        Ok(Flow::Rekeyed)
    }

    /// Seal our KeyUpdate (update_not_requested) under the current key, then move the
    /// send direction to the next secret.
    fn send_key_update(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        let key = self.tx.aead_key(self.cipher)?;
        self.seal_record(&key, HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
        self.tx.update(self.cipher)
    }

    /// Encrypt `plaintext` as application data records (at most `MAX_FRAGMENT` each),
    /// appended to `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        let mut key = self.tx.aead_key(self.cipher)?;
        for chunk in plaintext.chunks(MAX_FRAGMENT) {
            if self.tx.seq >= self.tx_limit {
                if self.version == Version::Tls12 {
                    return Err(TlsError::Exhausted);
                }
                self.send_key_update(out)?;
                key = self.tx.aead_key(self.cipher)?;
            }
            self.seal_record(&key, APPLICATION_DATA, chunk, out)?;
        }
        Ok(())
    }

    /// Append a `close_notify` alert record to `out`.
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        let key = self.tx.aead_key(self.cipher)?;
        self.seal_record(&key, ALERT, &[WARNING, CLOSE_NOTIFY], out)
    }

    /// Append one record of type `typ` carrying `payload` to `out`, sealed in place.
    fn seal_record(
        &mut self,
        key: &aead::LessSafeKey,
        typ: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        let (seq, nonce) = self.tx.next_nonce()?;
        let nonce_for = aead::Nonce::assume_unique_for_key(nonce);
        let failed = |_| TlsError::Record("sealing failed");
        let tag = match self.version {
            Version::Tls13 => {
                let header = header(APPLICATION_DATA, payload.len() + 1 + TAG);
                out.extend_from_slice(&header);
                let body_at = out.len();
                out.extend_from_slice(payload);
                out.push(typ);
                key.seal_in_place_separate_tag(
                    nonce_for,
                    aead::Aad::from(header),
                    &mut out[body_at..],
                )
                .map_err(failed)?
            }
            Version::Tls12 => {
                let explicit = if self.cipher == Cipher::Chacha20Poly1305 {
                    &[][..]
                } else {
                    &nonce[4..]
                };
                out.extend_from_slice(&header(typ, explicit.len() + payload.len() + TAG));
                out.extend_from_slice(explicit);
                let body_at = out.len();
                out.extend_from_slice(payload);
                let aad = tls12_aad(seq, typ, payload.len());
                key.seal_in_place_separate_tag(nonce_for, aead::Aad::from(aad), &mut out[body_at..])
                    .map_err(failed)?
            }
        };
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

/// A record header with the TLS 1.2 version (also TLS 1.3's legacy_record_version).
fn header(typ: u8, len: usize) -> [u8; HEADER] {
    let len = (len as u16).to_be_bytes();
    [typ, 3, 3, len[0], len[1]]
}

/// TLS 1.2 AEAD additional data: seq ‖ type ‖ version ‖ plaintext length.
fn tls12_aad(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9] = 3;
    aad[10] = 3;
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

/// Why a TLS connection cannot go on. Never carries payload bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The peer broke TLS during the handshake (a bad record, a failed handshake, plain
    /// HTTP on the TLS port, no ALPN protocol in common…).
    #[error("TLS: {0}")]
    Protocol(#[from] rustls::Error),
    /// The peer broke TLS after the handshake (a bad tag, an oversized record, an
    /// unexpected message, renegotiation).
    #[error("TLS: {0}")]
    Record(&'static str),
    /// The peer sent a fatal alert (its description code).
    #[error("TLS: peer sent alert {0}")]
    Alert(u8),
    /// The keys of this direction are used up (sequence numbers, or a TLS 1.2 suite's
    /// confidentiality limit).
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

#[cfg(test)]
impl Traffic {
    /// Lower the send limit (tests reach a key update without 2^24 records).
    pub fn set_tx_limit(&mut self, limit: u64) {
        self.tx_limit = limit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One direction's keys for tests: `fill` bytes of key, IV and secret.
    fn keys(cipher: Cipher, version: Version, fill: u8) -> DirectionKeys {
        let secret = [fill ^ 0x55; 32];
        let secret: &[u8] = if version == Version::Tls13 {
            &secret
        } else {
            &[]
        };
        DirectionKeys::new(&[fill; 32][..cipher.key_len()], &[fill; 12], 0, secret).unwrap()
    }

    /// Two record layers that talk to each other: ours (the server) and the peer's.
    fn mirrored(version: Version, cipher: Cipher) -> (Traffic, Traffic) {
        let ours = Traffic::new(
            version,
            cipher,
            keys(cipher, version, 1),
            keys(cipher, version, 2),
            u64::MAX,
        );
        let peer = Traffic::new(
            version,
            cipher,
            keys(cipher, version, 2),
            keys(cipher, version, 1),
            u64::MAX,
        );
        (ours, peer)
    }

    const ALL: [(Version, Cipher); 6] = [
        (Version::Tls13, Cipher::Aes128Gcm),
        (Version::Tls13, Cipher::Aes256Gcm),
        (Version::Tls13, Cipher::Chacha20Poly1305),
        (Version::Tls12, Cipher::Aes128Gcm),
        (Version::Tls12, Cipher::Aes256Gcm),
        (Version::Tls12, Cipher::Chacha20Poly1305),
    ];

    /// A record of type `typ` from the peer, sealed with its current key.
    fn peer_record(peer: &mut Traffic, typ: u8, content: &[u8]) -> Vec<u8> {
        let key = peer.tx.aead_key(peer.cipher).unwrap();
        let mut out = Vec::new();
        peer.seal_record(&key, typ, content, &mut out).unwrap();
        out
    }

    /// Open `wire` on our side: the plaintext, what `open` found, and the bytes consumed.
    fn open_all(ours: &mut Traffic, wire: &[u8]) -> Result<(Vec<u8>, Opened, usize), TlsError> {
        let mut wire = wire.to_vec();
        let mut plain = Vec::new();
        let mut reply = Vec::new();
        let mut opened = Opened::default();
        let used = ours.open(&mut wire, &mut plain, &mut reply, &mut opened)?;
        Ok((plain, opened, used))
    }

    #[test]
    fn sealed_records_open_on_the_other_side_for_every_suite() {
        for (version, cipher) in ALL {
            let (mut ours, mut peer) = mirrored(version, cipher);
            let message: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
            let mut wire = Vec::new();
            ours.seal(&message, &mut wire).unwrap();
            let (plain, opened, used) = open_all(&mut peer, &wire).unwrap();
            assert!(plain == message, "{version:?} {cipher:?}");
            assert_eq!((opened.plain, used), (message.len(), wire.len()));
        }
    }

    #[test]
    fn a_cut_record_is_left_for_later() {
        let (mut ours, mut peer) = mirrored(Version::Tls13, Cipher::Aes128Gcm);
        let mut wire = Vec::new();
        peer.seal(b"first", &mut wire).unwrap();
        let whole = wire.len();
        peer.seal(b"second", &mut wire).unwrap();
        for cut in whole..wire.len() {
            let (mut ours2, _) = mirrored(Version::Tls13, Cipher::Aes128Gcm);
            let (plain, _, used) = open_all(&mut ours2, &wire[..cut]).unwrap();
            assert_eq!((plain.as_slice(), used), (&b"first"[..], whole));
        }
        let (plain, _, _) = open_all(&mut ours, &wire).unwrap();
        assert_eq!(plain, b"firstsecond");
    }

    #[test]
    fn tls13_padding_is_stripped_and_a_record_of_only_zeros_is_refused() {
        let (mut ours, mut peer) = mirrored(Version::Tls13, Cipher::Aes128Gcm);
        // content ‖ type ‖ zeros: sealed as a "type 0" record whose payload carries the
        // real type and all but one of the padding zeros.
        let mut inner = b"padded".to_vec();
        inner.push(APPLICATION_DATA);
        inner.extend_from_slice(&[0; 99]);
        let wire = peer_record(&mut peer, 0, &inner);
        let (plain, _, _) = open_all(&mut ours, &wire).unwrap();
        assert_eq!(plain, b"padded");
        let wire = peer_record(&mut peer, 0, &[0; 10]);
        assert!(matches!(
            open_all(&mut ours, &wire),
            Err(TlsError::Record("record without a content type"))
        ));
    }

    #[test]
    fn alerts_close_notify_ends_user_canceled_is_ignored_others_are_errors() {
        for version in [Version::Tls13, Version::Tls12] {
            let (mut ours, mut peer) = mirrored(version, Cipher::Aes128Gcm);
            let mut wire = peer_record(&mut peer, ALERT, &[WARNING, USER_CANCELED]);
            peer.seal(b"data", &mut wire).unwrap();
            let (plain, opened, _) = open_all(&mut ours, &wire).unwrap();
            assert_eq!(
                (plain.as_slice(), opened.peer_closed),
                (&b"data"[..], false)
            );
            let mut wire = peer_record(&mut peer, ALERT, &[WARNING, CLOSE_NOTIFY]);
            let closed_at = wire.len();
            peer.seal(b"after the end", &mut wire).unwrap();
            let (plain, opened, used) = open_all(&mut ours, &wire).unwrap();
            assert!(plain.is_empty() && opened.peer_closed && used == closed_at);

            let (mut ours, mut peer) = mirrored(version, Cipher::Aes128Gcm);
            let wire = peer_record(&mut peer, ALERT, &[2, 40]);
            assert!(matches!(
                open_all(&mut ours, &wire),
                Err(TlsError::Alert(40))
            ));
        }
    }

    #[test]
    fn a_bad_tag_a_short_record_or_an_oversized_record_is_an_error_not_a_panic() {
        for (version, cipher) in ALL {
            let (mut ours, mut peer) = mirrored(version, cipher);
            let mut wire = Vec::new();
            peer.seal(b"hello", &mut wire).unwrap();
            let last = wire.len() - 1;
            wire[last] ^= 1;
            assert!(matches!(
                open_all(&mut ours, &wire),
                Err(TlsError::Record("bad record MAC"))
            ));
            for len in 0..17u8 {
                let (mut ours, _) = mirrored(version, cipher);
                let mut short = vec![APPLICATION_DATA, 3, 3, 0, len];
                short.extend(std::iter::repeat_n(7, usize::from(len)));
                assert!(
                    open_all(&mut ours, &short).is_err(),
                    "{version:?} len {len}"
                );
            }
            let huge = [APPLICATION_DATA, 3, 3, 0xff, 0xff];
            assert!(matches!(
                open_all(&mut ours, &huge),
                Err(TlsError::Record("record overflow"))
            ));
        }
    }

    #[test]
    fn unexpected_types_and_handshake_messages_are_refused() {
        let (mut ours, mut peer) = mirrored(Version::Tls13, Cipher::Aes128Gcm);
        // A client's NewSessionTicket (type 4) cannot happen; nor any other message.
        let wire = peer_record(&mut peer, HANDSHAKE, &[4, 0, 0, 1, 0]);
        assert!(open_all(&mut ours, &wire).is_err());
        // A KeyUpdate with a request value that does not exist.
        let (mut ours, mut peer) = mirrored(Version::Tls13, Cipher::Aes128Gcm);
        let wire = peer_record(&mut peer, HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 2]);
        assert!(open_all(&mut ours, &wire).is_err());
        // A KeyUpdate followed by more in the same record.
        let (mut ours, mut peer) = mirrored(Version::Tls13, Cipher::Aes128Gcm);
        let wire = peer_record(&mut peer, HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0, 23]);
        assert!(open_all(&mut ours, &wire).is_err());
        // TLS 1.3: an outer type other than application data (a ChangeCipherSpec).
        let (mut ours, _) = mirrored(Version::Tls13, Cipher::Aes128Gcm);
        let ccs = [20, 3, 3, 0, 1, 1];
        assert!(open_all(&mut ours, &ccs).is_err());
        // TLS 1.2: renegotiation.
        let (mut ours, mut peer) = mirrored(Version::Tls12, Cipher::Aes128Gcm);
        let wire = peer_record(&mut peer, HANDSHAKE, &[1, 0, 0, 0]);
        assert!(matches!(
            open_all(&mut ours, &wire),
            Err(TlsError::Record("renegotiation is not supported"))
        ));
    }

    #[test]
    fn a_key_update_renews_the_receive_key_and_answers_when_asked() {
        let (mut ours, mut peer) = mirrored(Version::Tls13, Cipher::Chacha20Poly1305);
        let mut wire = peer_record(&mut peer, HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 1]);
        peer.tx.update(peer.cipher).unwrap();
        peer.seal(b"under the new key", &mut wire).unwrap();
        let mut wire2 = wire.clone();
        let mut plain = Vec::new();
        let mut reply = Vec::new();
        let mut opened = Opened::default();
        ours.open(&mut wire2, &mut plain, &mut reply, &mut opened)
            .unwrap();
        assert_eq!(plain, b"under the new key");
        // Our answer (under the old send key), then data under the new one.
        ours.seal(b"reply", &mut reply).unwrap();
        let (got, _, _) = open_all(&mut peer, &reply).unwrap();
        assert_eq!(got, b"reply");
    }

    #[test]
    fn sequence_numbers_never_wrap() {
        let (mut ours, mut peer) = mirrored(Version::Tls13, Cipher::Aes128Gcm);
        ours.tx.seq = u64::MAX;
        assert!(matches!(
            ours.seal(b"x", &mut Vec::new()),
            Err(TlsError::Exhausted)
        ));
        let wire = {
            let mut wire = Vec::new();
            peer.seal(b"x", &mut wire).unwrap();
            wire
        };
        ours.rx.seq = u64::MAX;
        assert!(matches!(
            open_all(&mut ours, &wire),
            Err(TlsError::Exhausted)
        ));
    }

    #[test]
    fn the_record_state_is_small() {
        let size = std::mem::size_of::<Traffic>();
        eprintln!("size_of::<Traffic>() = {size} B");
        assert!(size <= 256, "Traffic grew to {size} B");
    }
}
