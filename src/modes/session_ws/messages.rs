//! The `/ws` wire messages: what the relay reads out of a JSON text message (its `type`
//! and the one field that type needs) and the messages the relay itself sends. No I/O
//! and no state.
//!
//! Reading is lenient the way the clients' own serde enums are: unknown fields are
//! ignored, but a `register`, `auth` or `close_session` without its string field does
//! not parse. The relay never re-encodes what it forwards: a Mac's `session_*` message
//! and a browser's `create_session` go on as the exact text received.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::modes::session::code::{self, Code};

/// What a text message asks of the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control<'a> {
    /// `{"type":"register","client_id":…}`: a Mac (first message only).
    Register,
    /// `{"type":"auth","session_code":…}`: a browser (first message only).
    Auth {
        /// The code as typed (matched upper-cased).
        session_code: Cow<'a, str>,
    },
    /// `session_list`, `session_connected`, `session_disconnected`: a Mac's news for
    /// every browser of its session.
    SessionEvent,
    /// `{"type":"create_session"}`: a browser asks the Mac for a new terminal.
    CreateSession,
    /// `{"type":"close_session","session_id":…}`: a browser asks the Mac to end one.
    CloseSession {
        /// The terminal session to close.
        session_id: Cow<'a, str>,
    },
    /// Any other type: not forwarded.
    Other,
}

/// The fields the relay looks at; the rest of the object is ignored.
#[derive(Debug, Deserialize)]
struct Fields<'a> {
    /// The message type.
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// `register`.
    #[serde(default, borrow)]
    client_id: Option<&'a RawValue>,
    /// `auth`.
    #[serde(default, borrow)]
    session_code: Option<&'a RawValue>,
    /// `close_session`.
    #[serde(default, borrow)]
    session_id: Option<&'a RawValue>,
}

/// A JSON string field's value; None when absent or not a string.
fn string(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Cow<'_, str>>(raw?.get()).ok()
}

/// Read a text message; None when it is not a JSON object with a string `type`, or a
/// type that needs a string field lacks it ("Invalid JSON" as a first message).
pub fn parse(text: &[u8]) -> Option<Control<'_>> {
    let fields: Fields<'_> = serde_json::from_slice(text).ok()?;
    Some(match &*fields.kind {
        "register" => string(fields.client_id).map(|_| Control::Register)?,
        "auth" => Control::Auth {
            session_code: string(fields.session_code)?,
        },
        "session_list" | "session_connected" | "session_disconnected" => Control::SessionEvent,
        "create_session" => Control::CreateSession,
        "close_session" => Control::CloseSession {
            session_id: string(fields.session_id)?,
        },
        _ => Control::Other,
    })
}

/// `close_session` as the Mac reads it: one binary frame of `len(S)` (one byte), `S`,
/// then `{"type":"close_session"}`. None when `S` is over 255 bytes (its length would not
/// fit the byte).
pub fn close_session_frame(session_id: &str) -> Option<Vec<u8>> {
    let len = u8::try_from(session_id.len()).ok()?;
    let mut frame = Vec::with_capacity(1 + session_id.len() + CLOSE_SESSION.len());
    frame.push(len);
    frame.extend_from_slice(session_id.as_bytes());
    frame.extend_from_slice(CLOSE_SESSION.as_bytes());
    Some(frame)
}

/// The JSON after the session id in a `close_session` frame.
const CLOSE_SESSION: &str = r#"{"type":"close_session"}"#;

/// `{"type":"registered","code":…}`.
pub fn registered(code: &Code) -> String {
    // The code is alphabet characters only: nothing to escape.
    format!(r#"{{"type":"registered","code":"{}"}}"#, code::as_str(code))
}

/// `{"type":"browser_connected","browser_id":…}`.
pub fn browser_connected(id: &[u8]) -> String {
    format!(
        r#"{{"type":"browser_connected","browser_id":"{}"}}"#,
        code::as_str(id)
    )
}

/// `{"type":"browser_disconnected","browser_id":…}`.
pub fn browser_disconnected(id: &[u8]) -> String {
    format!(
        r#"{{"type":"browser_disconnected","browser_id":"{}"}}"#,
        code::as_str(id)
    )
}

/// A browser's `auth` succeeded.
pub const AUTH_SUCCESS: &str = r#"{"type":"auth_success"}"#;
/// `auth` with a code no live Mac holds.
pub const AUTH_FAILED_INVALID: &str = r#"{"type":"auth_failed","reason":"Invalid session code"}"#;
/// `auth` for a session already at `--max-browsers-per-session`.
pub const AUTH_FAILED_FULL: &str =
    r#"{"type":"auth_failed","reason":"Too many browsers in this session"}"#;
/// `auth` from an address past its guessing budget (`--code-guesses-per-ip`): not tried.
pub const AUTH_FAILED_RATE_LIMITED: &str =
    r#"{"type":"auth_failed","reason":"Too many failed attempts from this address"}"#;
/// `auth` the relay could not complete (no browser id could be drawn).
pub const AUTH_FAILED_RELAY: &str = r#"{"type":"auth_failed","reason":"Relay error"}"#;
/// A first message that is binary.
pub const ERROR_NOT_JSON: &str = r#"{"type":"error","message":"First message must be JSON"}"#;
/// A first message that does not parse.
pub const ERROR_INVALID_JSON: &str = r#"{"type":"error","message":"Invalid JSON"}"#;
/// A first message of another type.
pub const ERROR_NOT_REGISTER_OR_AUTH: &str =
    r#"{"type":"error","message":"First message must be Register or Auth"}"#;
/// No first message within `--handshake-timeout`.
pub const ERROR_FIRST_MESSAGE_TIMEOUT: &str =
    r#"{"type":"error","message":"First message timeout"}"#;
/// A Mac whose code could not be minted.
pub const ERROR_NO_CODE: &str = r#"{"type":"error","message":"No session code available"}"#;
/// To every browser when their Mac leaves.
pub const ERROR_SESSION_DISCONNECTED: &str = r#"{"type":"error","message":"Session disconnected"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_messages_parse_by_type_and_required_field() {
        assert_eq!(
            parse(br#"{"type":"register","client_id":"mac-1","extra":[1]}"#),
            Some(Control::Register)
        );
        assert_eq!(
            parse(br#"{"session_code":"abc234","type":"auth"}"#),
            Some(Control::Auth {
                session_code: Cow::Borrowed("abc234")
            })
        );
        for unparseable in [
            &b"{"[..],
            b"[1]",
            br#"{"type":1}"#,
            br#"{"type":"register"}"#,
            br#"{"type":"register","client_id":7}"#,
            br#"{"type":"auth","session_code":null}"#,
            br#"{"type":"close_session"}"#,
        ] {
            assert_eq!(parse(unparseable), None, "{unparseable:?}");
        }
        assert_eq!(parse(br#"{"type":"hello"}"#), Some(Control::Other));
    }

    #[test]
    fn later_messages_parse_by_type() {
        assert_eq!(
            parse(br#"{"type":"session_list","sessions":[]}"#),
            Some(Control::SessionEvent)
        );
        assert_eq!(
            parse(br#"{"type":"session_disconnected","session_id":"s"}"#),
            Some(Control::SessionEvent)
        );
        assert_eq!(
            parse(br#"{"type":"create_session"}"#),
            Some(Control::CreateSession)
        );
        assert_eq!(
            parse(br#"{"type":"close_session","session_id":"t\u00e9"}"#),
            Some(Control::CloseSession {
                session_id: Cow::Borrowed("té")
            })
        );
    }

    #[test]
    fn close_session_frames_carry_the_length_byte() {
        assert_eq!(
            close_session_frame("abc").as_deref(),
            Some(&b"\x03abc{\"type\":\"close_session\"}"[..])
        );
        assert_eq!(
            close_session_frame(&"x".repeat(255)).map(|f| f[0]),
            Some(255)
        );
        assert_eq!(close_session_frame(&"x".repeat(256)), None);
    }

    #[test]
    fn every_relay_message_is_json() {
        let built = [
            registered(b"ABC234"),
            browser_connected(b"a-b_C123"),
            browser_disconnected(b"a-b_C123"),
        ];
        let fixed = [
            AUTH_SUCCESS,
            AUTH_FAILED_INVALID,
            AUTH_FAILED_FULL,
            AUTH_FAILED_RELAY,
            AUTH_FAILED_RATE_LIMITED,
            ERROR_NOT_JSON,
            ERROR_INVALID_JSON,
            ERROR_NOT_REGISTER_OR_AUTH,
            ERROR_FIRST_MESSAGE_TIMEOUT,
            ERROR_NO_CODE,
            ERROR_SESSION_DISCONNECTED,
        ];
        for text in built.iter().map(String::as_str).chain(fixed) {
            let value: serde_json::Value = serde_json::from_str(text).expect(text);
            assert!(value["type"].is_string(), "{text}");
        }
    }
}
