//! The client side of the upgrade: build the `GET … Upgrade: websocket` request and
//! check the relay's answer. Pure functions over bytes; the I/O is in `net`.

use tungstenite::handshake::derive_accept_key;

/// Most bytes we accept in the relay's response head; the relay's are a few hundred.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why the upgrade did not happen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// The relay answered, but not with `101` (e.g. `400`, `409`, `503`).
    #[error("relay answered {0} instead of 101")]
    Status(u16),
    /// The `Sec-WebSocket-Accept` header is missing or wrong.
    #[error("bad Sec-WebSocket-Accept")]
    BadAccept,
    /// The response head is not HTTP/1.1 we can parse.
    #[error("malformed response head: {0}")]
    Malformed(String),
    /// The response head did not end within [`MAX_RESPONSE_HEAD`] bytes.
    #[error("response head over {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
}

/// A fresh `Sec-WebSocket-Key` (16 random bytes, base64).
pub fn new_key() -> String {
    tungstenite::handshake::client::generate_key()
}

/// The upgrade request for `path` on `host`, with the route's extra headers.
pub fn upgrade_request(host: &str, path: &str, key: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Checks a response head: `Ok(None)` while incomplete, `Ok(Some(n))` with the head's
/// length once a valid `101` for `key` is buffered (bytes after `n` are frames).
pub fn check_response(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let status = response
        .parse(buf)
        .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let httparse::Status::Complete(len) = status else {
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(HandshakeError::HeadTooLarge);
        }
        return Ok(None);
    };
    let code = response.code.unwrap_or(0);
    if code != 101 {
        return Err(HandshakeError::Status(code));
    }
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if accept != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
        return Err(HandshakeError::BadAccept);
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn request_carries_route_headers() {
        let req = upgrade_request(
            "127.0.0.1:8080",
            "/v1/server",
            KEY,
            &[("X-Pyrycode-Server", "s1")],
        );
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("GET /v1/server HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(text.ends_with("X-Pyrycode-Server: s1\r\n\r\n"));
    }

    #[test]
    fn accepts_rfc_example_and_reports_leftover_offset() {
        let head =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let mut buf = head.to_vec();
        buf.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(check_response(&buf, KEY), Ok(Some(head.len())));
        assert_eq!(check_response(&head[..20], KEY), Ok(None));
    }

    #[test]
    fn rejects_other_status_and_bad_accept() {
        let refused = b"HTTP/1.1 409 Conflict\r\nContent-Length: 12\r\n\r\npair is full";
        assert_eq!(
            check_response(refused, KEY),
            Err(HandshakeError::Status(409))
        );
        let bad = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert_eq!(check_response(bad, KEY), Err(HandshakeError::BadAccept));
    }
}
