//! The WebSocket handshake checks of the spec (RFC 6455 §4.2.1), pure.
//!
//! This module owns the decision whether a parsed request head may be upgraded, the
//! exact refusal sent when it may not, and the `Sec-WebSocket-Accept` value when it may.
//! It does no I/O and knows nothing of routes: the caller has already matched the path.
//! [`Upgrade`] is what a request that passed every check carries to its owner shard
//! (the accept path builds it; the shard upgrades it, or a ticket side serves it).

use base64::Engine as _;

use crate::http::head::{Method, RequestHead};
use crate::http::response::close_response;

/// The only WebSocket protocol version the relay speaks (RFC 6455 §4.1).
const WEBSOCKET_VERSION: &str = "13";

/// A `Sec-WebSocket-Key` is 16 random bytes, base64-encoded (RFC 6455 §4.1).
const KEY_BYTES: usize = 16;

/// Why an upgrade request is refused before 101, with the exact response the relay sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefusal {
    /// Missing `Upgrade: websocket` (token match, case-insensitive) or `Connection`
    /// without the `upgrade` token → 426 with header `Upgrade: websocket`.
    #[error("upgrade required")]
    UpgradeRequired,
    /// Sec-WebSocket-Version other than 13 (or missing) → 426 with header
    /// `Sec-WebSocket-Version: 13`.
    #[error("unsupported websocket version")]
    UnsupportedVersion,
    /// Missing or malformed Sec-WebSocket-Key (must base64-decode to exactly 16 bytes)
    /// → 400.
    #[error("bad Sec-WebSocket-Key")]
    BadKey,
    /// Method other than GET → 405 with `Allow: GET`.
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl UpgradeRefusal {
    /// The status code of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            UpgradeRefusal::UpgradeRequired | UpgradeRefusal::UnsupportedVersion => 426,
            UpgradeRefusal::BadKey => 400,
            UpgradeRefusal::MethodNotAllowed => 405,
        }
    }

    /// The full response bytes: a close_response whose text/plain body is the error's
    /// message and a newline, with the header each status calls for.
    pub fn response(&self) -> Vec<u8> {
        let body = format!("{self}\n");
        close_response(
            self.status(),
            "text/plain",
            self.extra_headers(),
            body.as_bytes(),
        )
    }

    /// The header that tells the client what would have worked.
    fn extra_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            // RFC 9110 §15.5.22: a 426 must say which protocol to upgrade to.
            UpgradeRefusal::UpgradeRequired => &[("Upgrade", "websocket")],
            // RFC 6455 §4.4: name the versions the server does speak.
            UpgradeRefusal::UnsupportedVersion => &[("Sec-WebSocket-Version", WEBSOCKET_VERSION)],
            UpgradeRefusal::BadKey => &[],
            // RFC 9110 §15.5.6: a 405 must list the allowed methods.
            UpgradeRefusal::MethodNotAllowed => &[("Allow", "GET")],
        }
    }
}

/// Check method, Upgrade/Connection, version, key (in that order) and return the
/// Sec-WebSocket-Accept value.
pub fn check_upgrade(head: &RequestHead) -> Result<String, UpgradeRefusal> {
    if head.method != Method::Get {
        return Err(UpgradeRefusal::MethodNotAllowed);
    }
    // Both halves are required, and either missing is the same 426: a request without
    // `Upgrade: websocket` is refused even if its Connection header is fine, and one
    // with `Upgrade: websocket` but no `upgrade` token in Connection is refused too —
    // without that token the Upgrade header is not a hop-by-hop request to switch
    // (RFC 9110 §7.8), e.g. a proxy may have forwarded it stale. Every real client
    // (websockets, ws, Chromium, tungstenite, coder/websocket, gorilla) sends both.
    if !head.header_has_token("upgrade", "websocket")
        || !head.header_has_token("connection", "upgrade")
    {
        return Err(UpgradeRefusal::UpgradeRequired);
    }
    if head.header("sec-websocket-version") != Some(WEBSOCKET_VERSION) {
        return Err(UpgradeRefusal::UnsupportedVersion);
    }
    let key = head
        .header("sec-websocket-key")
        .filter(|key| key_is_valid(key))
        .ok_or(UpgradeRefusal::BadKey)?;
    Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// A key is valid if it is canonical padded base64 of exactly 16 bytes.
fn key_is_valid(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|bytes| bytes.len() == KEY_BYTES)
}

/// A request that passed every pre-upgrade check, ready for its 101 on the owner shard.
#[derive(Debug)]
pub struct Upgrade {
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// The request head as parsed by the accepting shard.
    pub head: RequestHead,
    /// Bytes that arrived after the head.
    pub leftover: Vec<u8>,
    /// Where the request goes.
    pub route: crate::http::routes::Route,
    /// `Sec-WebSocket-Accept` for the 101.
    pub accept_key: String,
    /// When the accepting shard accepted the TCP connection (handshake histogram).
    pub accepted_at: std::time::Instant,
    /// The connection's place under the global cap.
    pub permit: crate::net::ConnPermit,
    /// Its transport: plain, or TLS with its session (the handshake done on the
    /// accepting shard moves with the socket).
    pub link: crate::tls::Link,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    /// RFC 6455 §1.3 gives this accept value for the sample key (SHA-1 is 20 bytes, so it
    /// is 28 base64 characters).
    const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn head(method: Method, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method,
            path: "/v1/echo".to_owned(),
            query: None,
            minor_version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn good_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Host", "relay"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", SAMPLE_KEY),
        ]
    }

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        good_headers()
            .into_iter()
            .filter(|(n, _)| *n != name)
            .collect()
    }

    fn replaced(name: &str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        good_headers()
            .into_iter()
            .map(|(n, v)| if n == name { (n, value) } else { (n, v) })
            .collect()
    }

    #[test]
    fn rfc_6455_sample_key() {
        let accept = check_upgrade(&head(Method::Get, &good_headers()));
        assert_eq!(accept.as_deref(), Ok(SAMPLE_ACCEPT));
    }

    #[test]
    fn real_client_header_shapes_are_accepted() {
        let shapes: [&[(&str, &str)]; 3] = [
            // Chromium / Firefox style: keep-alive alongside Upgrade.
            &[
                ("Upgrade", "WebSocket"),
                ("Connection", "keep-alive, Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", SAMPLE_KEY),
            ],
            // Lower-case values and names, as Python websockets and Node ws may send.
            &[
                ("upgrade", "websocket"),
                ("connection", "upgrade"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", SAMPLE_KEY),
            ],
            // Extra extensions and protocols do not matter here.
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", " 13 "),
                ("Sec-WebSocket-Key", " dGhlIHNhbXBsZSBub25jZQ== "),
                (
                    "Sec-WebSocket-Extensions",
                    "permessage-deflate; client_max_window_bits",
                ),
                ("Sec-WebSocket-Protocol", "chat"),
            ],
        ];
        for shape in shapes {
            let accept = check_upgrade(&head(Method::Get, shape));
            assert_eq!(accept.as_deref(), Ok(SAMPLE_ACCEPT), "{shape:?}");
        }
    }

    #[test]
    fn method_is_checked_first() {
        for method in [Method::Post, Method::Put, Method::Head, Method::Other] {
            assert_eq!(
                check_upgrade(&head(method, &[])),
                Err(UpgradeRefusal::MethodNotAllowed)
            );
        }
    }

    #[test]
    fn upgrade_and_connection_both_required() {
        for headers in [
            without("Upgrade"),
            without("Connection"),
            replaced("Upgrade", "h2c"),
            replaced("Upgrade", "websocket2"),
            replaced("Connection", "keep-alive"),
            replaced("Connection", "close"),
        ] {
            assert_eq!(
                check_upgrade(&head(Method::Get, &headers)),
                Err(UpgradeRefusal::UpgradeRequired),
                "{headers:?}"
            );
        }
        // Checked before the version and key: a bare GET is a 426, not a 400.
        assert_eq!(
            check_upgrade(&head(Method::Get, &[("Host", "x")])),
            Err(UpgradeRefusal::UpgradeRequired)
        );
    }

    #[test]
    fn version_must_be_13() {
        for headers in [
            without("Sec-WebSocket-Version"),
            replaced("Sec-WebSocket-Version", "8"),
            replaced("Sec-WebSocket-Version", "13, 8"),
            replaced("Sec-WebSocket-Version", ""),
        ] {
            assert_eq!(
                check_upgrade(&head(Method::Get, &headers)),
                Err(UpgradeRefusal::UnsupportedVersion),
                "{headers:?}"
            );
        }
        // Checked before the key.
        let mut headers = without("Sec-WebSocket-Key");
        headers.retain(|(n, _)| *n != "Sec-WebSocket-Version");
        assert_eq!(
            check_upgrade(&head(Method::Get, &headers)),
            Err(UpgradeRefusal::UnsupportedVersion)
        );
    }

    #[test]
    fn key_must_be_16_bytes_of_base64() {
        for headers in [
            without("Sec-WebSocket-Key"),
            replaced("Sec-WebSocket-Key", ""),
            replaced("Sec-WebSocket-Key", "short"),
            // 15 and 17 bytes.
            replaced("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA"),
            replaced("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA="),
            // Unpadded and URL-safe alphabets are not what RFC 6455 asks for.
            replaced("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ"),
            replaced("Sec-WebSocket-Key", "-_-_-_-_-_-_-_-_-_-_-w=="),
            replaced("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!=="),
        ] {
            assert_eq!(
                check_upgrade(&head(Method::Get, &headers)),
                Err(UpgradeRefusal::BadKey),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn non_utf8_key_is_bad() {
        let mut h = head(Method::Get, &without("Sec-WebSocket-Key"));
        h.headers
            .push(("sec-websocket-key".to_owned(), b"\xff\xfe".to_vec()));
        assert_eq!(check_upgrade(&h), Err(UpgradeRefusal::BadKey));
    }

    #[test]
    fn refusal_statuses_and_responses() {
        let cases: [(UpgradeRefusal, u16, &[u8]); 4] = [
            (
                UpgradeRefusal::UpgradeRequired,
                426,
                b"HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\nContent-Length: 17\r\n\
Content-Type: text/plain\r\nUpgrade: websocket\r\n\r\nupgrade required\n",
            ),
            (
                UpgradeRefusal::UnsupportedVersion,
                426,
                b"HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\nContent-Length: 30\r\n\
Content-Type: text/plain\r\nSec-WebSocket-Version: 13\r\n\r\nunsupported websocket version\n",
            ),
            (
                UpgradeRefusal::BadKey,
                400,
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 22\r\n\
Content-Type: text/plain\r\n\r\nbad Sec-WebSocket-Key\n",
            ),
            (
                UpgradeRefusal::MethodNotAllowed,
                405,
                b"HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\nContent-Length: 19\r\n\
Content-Type: text/plain\r\nAllow: GET\r\n\r\nmethod not allowed\n",
            ),
        ];
        for (refusal, status, bytes) in cases {
            assert_eq!(refusal.status(), status, "{refusal:?}");
            assert_eq!(
                String::from_utf8_lossy(&refusal.response()),
                String::from_utf8_lossy(bytes),
                "{refusal:?}"
            );
        }
    }
}
