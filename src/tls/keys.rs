//! The public listener's certificate chain and private key, and the `ServerConfig` built
//! from them: loaded at start-up (a bad pair is a start-up error) and reloaded on `SIGHUP`
//! (a bad pair keeps the old one in force).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The only application protocol the listener speaks (PROTOCOL §1.1).
pub use crate::tls::session::ALPN_HTTP11;

/// Why a certificate/key pair did not load. Each message names the file and never prints
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsKeyError {
    /// The certificate file is missing, unreadable or not PEM.
    #[error("cannot read TLS certificate {path}: {why}")]
    Cert {
        /// The `--tls-cert` path.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The certificate file holds no certificate.
    #[error("TLS certificate {path} holds no PEM certificate")]
    NoCert {
        /// The `--tls-cert` path.
        path: PathBuf,
    },
    /// The key file is missing, unreadable, not PEM, or not PKCS#8/PKCS#1/SEC1.
    #[error("cannot read TLS key {path}: {why}")]
    Key {
        /// The `--tls-key` path.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The key does not belong to the certificate, or its type is not supported.
    #[error("TLS key {key} does not match certificate {cert}: {why}")]
    Mismatch {
        /// The `--tls-cert` path.
        cert: PathBuf,
        /// The `--tls-key` path.
        key: PathBuf,
        /// What rustls said.
        why: rustls::Error,
    },
}

/// Read and check a certificate chain and key, and build the listener's `ServerConfig`:
/// TLS 1.3 and 1.2 only, ALPN `http/1.1`, the server's own cipher-suite order.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsKeyError> {
    let chain = read_chain(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsKeyError::Key {
        path: key.to_owned(),
        why: e.to_string(),
    })?;
    let provider = Arc::new(provider());
    let mismatch = |why| TlsKeyError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        why,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(mismatch)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(mismatch)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    // The provider's order is ours to keep: the client's preference does not pick a
    // costlier suite (docs/benchmarks.md, "TLS").
    config.ignore_client_order = true;
    // After the handshake the session keeps only the traffic keys and does the record
    // layer itself (`tls::record`): rustls hands the keys over, and its key log gives the
    // TLS 1.3 traffic secrets a KeyUpdate derives the next keys from (nothing is
    // written anywhere; see `tls::session`).
    config.enable_secret_extraction = true;
    config.key_log = Arc::new(crate::tls::session::SecretCapture);
    Ok(Arc::new(config))
}

/// The crypto provider: *ring*, with the AES-128-GCM suites first.
///
/// *ring* rather than aws-lc-rs: its key state is one fixed-size value per direction
/// held inside rustls's record layer, and its build needs no C toolchain beyond `cc`
/// (docs/benchmarks.md, "TLS"). rustls 0.23.48 deprecates its `default_provider` only
/// because *ring* has no post-quantum key exchange; X25519 and the NIST curves remain.
/// AES-128 before AES-256 and ChaCha20: with AES-NI it is the cheapest per byte, and
/// with *ring* every AEAD key occupies the same space, so the order costs no memory.
fn provider() -> rustls::crypto::CryptoProvider {
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        use rustls::CipherSuite::*;
        !matches!(
            suite.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    provider
}

/// Every certificate in a PEM file, in order (leaf first).
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsKeyError> {
    let bad = |why: String| TlsKeyError::Cert {
        path: path.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsKeyError::NoCert {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The pair in force, shared by every shard: each new handshake takes the current
/// `Arc<ServerConfig>` (one uncontended read lock per handshake, never per message); a
/// reload swaps it.
#[derive(Debug)]
pub struct TlsKeys {
    /// `--tls-cert`.
    cert: PathBuf,
    /// `--tls-key`.
    key: PathBuf,
    /// The config new handshakes use.
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsKeys {
    /// Load the pair at start-up.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsKeyError> {
        let config = load_server_config(cert, key)?;
        Ok(TlsKeys {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(config),
        })
    }

    /// The config for a new handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock only means a reload panicked mid-swap; the Arc inside is whole.
        match self.current.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reread both files (`SIGHUP`): on success new handshakes use the new pair; on
    /// failure the old pair stays in force and the error is returned for one log line.
    pub fn reload(&self) -> Result<(), TlsKeyError> {
        let config = load_server_config(&self.cert, &self.key)?;
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }
}
