//! Pre-upgrade and plain HTTP responses.
//!
//! This module owns the bytes of every HTTP/1.1 response the relay writes itself: the
//! close-delimited answers (errors, refusals, small JSON bodies) and the `101 Switching
//! Protocols` that starts a WebSocket. Every plain response carries `Connection: close`
//! because the relay never reads a second request on a connection.

use std::fmt::Write as _;

/// Reason phrase for the status codes the relay uses; "Unknown" otherwise.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        423 => "Locked",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete HTTP/1.1 response with `Connection: close`, `Content-Length`,
/// `Content-Type` (only when body non-empty), extra headers in order, then the body.
pub fn close_response(
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    push_header(&mut head, "Connection", "close");
    push_header(&mut head, "Content-Length", &body.len().to_string());
    if !body.is_empty() {
        push_header(&mut head, "Content-Type", content_type);
    }
    for (name, value) in extra_headers {
        push_header(&mut head, name, value);
    }
    head.push_str("\r\n");

    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// JSON error body `{"error":"<msg>"}` (msg escaped) as a close_response with
/// application/json.
pub fn json_error(status: u16, msg: &str) -> Vec<u8> {
    let mut body = String::with_capacity(msg.len() + 12);
    body.push_str("{\"error\":\"");
    push_json_escaped(&mut body, msg);
    body.push_str("\"}");
    close_response(status, "application/json", &[], body.as_bytes())
}

/// `HTTP/1.1 101 Switching Protocols` with Upgrade: websocket, Connection: Upgrade,
/// Sec-WebSocket-Accept.
pub fn switching_protocols(accept_key: &str) -> Vec<u8> {
    let mut head = String::from("HTTP/1.1 101 Switching Protocols\r\n");
    push_header(&mut head, "Upgrade", "websocket");
    push_header(&mut head, "Connection", "Upgrade");
    push_header(&mut head, "Sec-WebSocket-Accept", accept_key);
    head.push_str("\r\n");
    head.into_bytes()
}

/// Append `name: value\r\n`. CR and LF are dropped from both parts so that no value —
/// some carry text that came from a client — can end the line early and inject a header
/// or a body.
fn push_header(out: &mut String, name: &str, value: &str) {
    let clean = |c: &char| *c != '\r' && *c != '\n';
    out.extend(name.chars().filter(clean));
    out.push_str(": ");
    out.extend(value.chars().filter(clean));
    out.push_str("\r\n");
}

/// Append `s` as the inside of a JSON string (RFC 8259 §7): quote, backslash and every
/// control character escaped; everything else, non-ASCII included, passed through.
fn push_json_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                // Writing into a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(101), "Switching Protocols");
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(426), "Upgrade Required");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(503), "Service Unavailable");
        assert_eq!(reason_phrase(418), "Unknown");
        for status in [
            100, 101, 200, 201, 400, 401, 404, 405, 408, 409, 410, 413, 423, 426, 429, 431, 500,
            502, 503,
        ] {
            assert_ne!(reason_phrase(status), "Unknown", "{status}");
        }
    }

    #[test]
    fn close_response_with_body_and_extras() {
        let resp = close_response(
            405,
            "text/plain",
            &[("Allow", "GET"), ("X-A", "b")],
            b"no\n",
        );
        assert_eq!(
            resp,
            b"HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\nContent-Length: 3\r\n\
Content-Type: text/plain\r\nAllow: GET\r\nX-A: b\r\n\r\nno\n"
        );
    }

    #[test]
    fn close_response_without_body_has_no_content_type() {
        let resp = close_response(431, "text/plain", &[], b"");
        assert_eq!(
            resp,
            b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\
Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn header_text_cannot_inject_lines() {
        let resp = close_response(400, "text/plain", &[("X-Echo", "a\r\nSet-Cookie: b")], b"");
        let text = String::from_utf8(resp).unwrap_or_default();
        assert!(text.contains("X-Echo: aSet-Cookie: b\r\n"), "{text}");
        assert_eq!(text.matches("\r\n").count(), 5);
    }

    #[test]
    fn json_error_escapes() {
        let resp = json_error(409, "say \"hi\"\\\n\u{1}é");
        let expected_body = "{\"error\":\"say \\\"hi\\\"\\\\\\n\\u0001é\"}";
        let expected = format!(
            "HTTP/1.1 409 Conflict\r\nConnection: close\r\nContent-Length: {}\r\n\
Content-Type: application/json\r\n\r\n{expected_body}",
            expected_body.len()
        );
        assert_eq!(String::from_utf8(resp).unwrap_or_default(), expected);
    }

    #[test]
    fn json_escape_all_controls() {
        let mut out = String::new();
        push_json_escaped(&mut out, "\u{8}\u{c}\t\r\u{1f}\u{7f}");
        assert_eq!(out, "\\b\\f\\t\\r\\u001f\u{7f}");
    }

    #[test]
    fn switching_protocols_bytes() {
        assert_eq!(
            switching_protocols("s3pPLMBiTxaQ9kaGzzkxOeo="),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kaGzzkxOeo=\r\n\r\n"
        );
    }
}
