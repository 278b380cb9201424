//! TLS for `wss://` and `https://` targets: a rustls client (*ring*), trusting the
//! system-independent `--tls-ca FILE` (a test CA) or, with `--tls-insecure`, anything.
//! `Stream` is a connection, plain or TLS, that the rest of the tool reads and writes
//! the same way (monoio's rent-based traits, split into reader and writer halves).
//!
//! A target's scheme is known only to its value parser, which marks TLS as wanted
//! (`request`); the plan then builds the one client config for the run (`configure`).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::TcpStream;
use monoio::BufResult;
use monoio_rustls::{ClientTlsStream, TlsConnector};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A `wss://` or `https://` target was given.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The run's client config (None: plain TCP).
static CONFIG: OnceLock<Option<Arc<ClientConfig>>> = OnceLock::new();

/// Mark TLS as wanted (the target's scheme is `wss` or `https`).
pub fn request() {
    REQUESTED.store(true, Ordering::Relaxed);
}

/// True when the target is TLS.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Build the run's client config: trust `ca` (PEM, one or more certificates), or
/// anything with `insecure`. A no-op for a plain target.
pub fn configure(ca: Option<&Path>, insecure: bool) -> Result<(), String> {
    if !requested() {
        return Ok(());
    }
    let config = client_config(ca, insecure)?;
    let _ = CONFIG.set(Some(config));
    Ok(())
}

/// The client config, when the target is TLS.
pub fn config() -> Option<Arc<ClientConfig>> {
    CONFIG.get().cloned().flatten()
}

/// The client's provider: *ring* (the relay's), offering X25519 first.
///
/// rustls 0.23.48's *ring* provider lists secp384r1 first, so a client built on its
/// defaults sends a P-384 key share and the server (which takes the client's first group
/// it supports) does the key exchange on P-384 — in *ring* a generic big-number path,
/// ~1.5 ms per handshake on each side here, ten times X25519. That, not the relay, held
/// TLS storms to ~100–250 handshakes a second (docs/benchmarks.md, "TLS handshakes").
/// Browsers, curl/OpenSSL, Go and Node offer X25519 first; so does this client.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // The relay's provider; rustls 0.23.48 deprecates it only for lacking post-quantum
    // key exchange.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = KX_ORDER.to_vec();
    Arc::new(provider)
}

/// Key-exchange groups offered, in order; the key share is sent for the first.
static KX_ORDER: &[&dyn rustls::crypto::SupportedKxGroup] = &[
    rustls::crypto::ring::kx_group::X25519,
    rustls::crypto::ring::kx_group::SECP256R1,
    rustls::crypto::ring::kx_group::SECP384R1,
];

/// A TLS 1.3/1.2 client offering ALPN `http/1.1`.
fn client_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
            .with_no_client_auth()
    } else {
        let Some(ca) = ca else {
            return Err("a wss:// or https:// target needs --tls-ca FILE or --tls-insecure".into());
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("--tls-ca: {e}"))? {
            let cert = cert.map_err(|e| format!("--tls-ca: {e}"))?;
            roots.add(cert).map_err(|e| format!("--tls-ca: {e}"))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection is a full handshake (certificate, signature, key exchange), the
    // cost a storm of new clients puts on a server; resumption would hide it.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// `--tls-insecure`: accepts any certificate (benchmarks against a throw-away pair).
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A connection, plain or TLS.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<ClientTlsStream<TcpStream>>),
}

/// Wrap a connected socket: a TLS handshake first when the target is TLS (the server
/// name is `localhost` for a loopback address, else the address itself).
pub async fn wrap(tcp: TcpStream, host: &str) -> io::Result<Stream> {
    let Some(config) = config() else {
        return Ok(Stream::Plain(tcp));
    };
    let name = server_name(host)?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(io::Error::other)?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// The name checked against the certificate: `host` without its port; a loopback
/// address is `localhost` (what test certificates are minted for).
fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    let name = if loopback { "localhost" } else { bare };
    ServerName::try_from(name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

// SAFETY: `Split` promises that reading and writing through two halves of one stream
// (sharing it behind an `UnsafeCell` on one thread) is sound; both variants are `Split`
// (monoio's `TcpStream`, monoio-rustls's `Stream`), and the enum only dispatches.
unsafe impl Split for Stream {}

impl AsyncReadRent for Stream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.readv(buf).await,
            Stream::Tls(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.write(buf).await,
            Stream::Tls(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.writev(buf).await,
            Stream::Tls(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush().await,
            Stream::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_checked_as_localhost() {
        assert_eq!(
            server_name("127.0.0.1:8443").unwrap(),
            ServerName::try_from("localhost").unwrap()
        );
        assert_eq!(
            server_name("relay.example.com:443").unwrap(),
            ServerName::try_from("relay.example.com").unwrap()
        );
    }

    #[test]
    fn the_client_offers_x25519_first() {
        let config = client_config(None, true).unwrap();
        let groups: Vec<_> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        use rustls::NamedGroup::*;
        assert_eq!(groups, [X25519, secp256r1, secp384r1]);
    }

    #[test]
    fn a_tls_target_needs_a_ca_or_insecure() {
        assert!(client_config(None, false).is_err());
        assert!(client_config(None, true).is_ok());
    }
}
