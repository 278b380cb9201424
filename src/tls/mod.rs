//! Native TLS on the public listener (PROTOCOL §1.1): a lower layer that imports nothing
//! from `shard` or `modes`.
//!
//! * `keys`    — the certificate chain and key: loading, and the shared `ServerConfig`
//!   swapped on `SIGHUP` (new handshakes use the new pair; established connections keep
//!   the config they started with, through their own `Arc`).
//! * `session` — one connection's TLS over caller-owned buffers, without I/O: rustls's
//!   `UnbufferedServerConnection` for the handshake, then the hand-off of the traffic
//!   keys to `record` (rustls's connection is dropped). No per-connection buffer while
//!   idle: decryption reads the shard's scratch buffer; only a record cut by the read
//!   boundary, or ciphertext the socket did not take, is kept per connection.
//! * `record`  — the record layer after the handshake: the traffic keys, IVs and
//!   sequence numbers rustls hands over, and record protection with *ring*'s AEAD in
//!   place in the caller's buffers (no allocation per record, no expanded key while
//!   idle).
//! * `link`    — a connection's transport (plain or TLS) with the `sys` calls the
//!   connection code makes: `recv_into`, `send_vectored`, `shutdown_write`.
//!
//! Crypto provider: `ring` (see `docs/benchmarks.md`, "TLS").

pub mod keys;
pub mod link;
pub mod record;
pub mod session;

pub use keys::{TlsKeyError, TlsKeys};
pub use link::Link;
pub use session::{Opened, TlsError, TlsSession};

/// A new TLS connection's transport under the pair in force now. `already_read` holds
/// bytes read from the socket before this call that belong to the TLS stream (the start
/// of a ClientHello read together with a PROXY protocol header); the handshake runs on
/// the link's first reads.
pub fn start(keys: &TlsKeys, already_read: Vec<u8>) -> Result<Link, TlsError> {
    let mut session = TlsSession::new(keys.current())?;
    session.seed(already_read);
    Ok(Link::tls(session))
}
