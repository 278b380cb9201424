//! The session wire messages (PROTOCOL §5): strict parsing of what a host or browser
//! sends, and the encoding of what the relay sends. No I/O and no state, so it can be
//! property-tested on its own (`tests/prop_session.rs`).
//!
//! Parsing is two steps. serde first reads the object into [`Fields`], a
//! `deny_unknown_fields` struct whose values stay borrowed raw JSON (no copy of a `data`
//! payload, and a ping's `ts` keeps its exact text); then [`Message::parse`] dispatches on
//! `type` and checks that exactly that type's fields are present, each of its JSON type.
//! A serde internally-tagged enum cannot do this: it buffers the whole object into an
//! owned tree before it looks at the tag, and that tree cannot hold a `RawValue`.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

/// Largest application message (PROTOCOL §5): bigger texts are `INVALID_MESSAGE` even
/// when `--max-message` lets them through the codec.
pub const MAX_SESSION_MESSAGE: usize = 64 * 1024;

/// One session message, of either direction.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message<'a> {
    /// Host → relay: give me a fresh code.
    Register {
        /// The host's own identifier (a UUID); checked, then unused.
        #[serde(rename = "clientId")]
        client_id: Cow<'a, str>,
    },
    /// Relay → host: your code and when it stops being joinable.
    Registered {
        /// The 6-character code.
        code: Cow<'a, str>,
        /// Unix time in milliseconds.
        #[serde(rename = "expiresAt")]
        expires_at: u64,
    },
    /// Browser → relay: join the host holding this code (any letter case).
    Join {
        /// The code as typed.
        code: Cow<'a, str>,
    },
    /// Relay → both: the session started.
    Joined {
        /// A UUID v4 shared by host and browser.
        #[serde(rename = "sessionId")]
        session_id: Cow<'a, str>,
    },
    /// Either way after the join: forwarded to the peer as the exact text received.
    Data {
        /// Any JSON value.
        payload: &'a RawValue,
    },
    /// Client → relay: answered with a pong carrying the same `ts` text.
    Ping {
        /// A JSON number, kept as written.
        ts: &'a RawValue,
    },
    /// Relay → client: the answer to a ping.
    Pong {
        /// The ping's `ts`, as written.
        ts: &'a RawValue,
    },
    /// Relay → client: something went wrong; the connection stays unless a close follows.
    Error {
        /// One of the `ErrorCode` names (any string when parsed).
        code: Cow<'a, str>,
        /// Human-readable detail.
        message: Cow<'a, str>,
    },
}

impl PartialEq for Message<'_> {
    fn eq(&self, other: &Self) -> bool {
        use Message::*;
        match (self, other) {
            (Register { client_id: a }, Register { client_id: b }) => a == b,
            (
                Registered {
                    code: a,
                    expires_at: x,
                },
                Registered {
                    code: b,
                    expires_at: y,
                },
            ) => a == b && x == y,
            (Join { code: a }, Join { code: b }) => a == b,
            (Joined { session_id: a }, Joined { session_id: b }) => a == b,
            (Data { payload: a }, Data { payload: b }) => a.get() == b.get(),
            (Ping { ts: a }, Ping { ts: b }) | (Pong { ts: a }, Pong { ts: b }) => {
                a.get() == b.get()
            }
            (
                Error {
                    code: a,
                    message: m,
                },
                Error {
                    code: b,
                    message: n,
                },
            ) => a == b && m == n,
            _ => false,
        }
    }
}

/// Why a message is `INVALID_MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Invalid {
    /// Over [`MAX_SESSION_MESSAGE`].
    #[error("message over 64 KiB")]
    TooBig,
    /// A binary WebSocket message.
    #[error("binary messages are not accepted")]
    Binary,
    /// Not a JSON object, a duplicate or unknown field, or a field of the wrong JSON type.
    #[error("malformed JSON message")]
    Malformed,
    /// `type` names no session message.
    #[error("unknown message type")]
    UnknownType,
    /// A field this type needs is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field this type does not have.
    #[error("unexpected field `{0}`")]
    Unexpected(&'static str),
    /// A field has the wrong JSON type or form.
    #[error("field `{0}` has the wrong type")]
    Mistyped(&'static str),
}

/// The fields any session message may carry, as borrowed raw JSON; `type` excepted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields<'a> {
    /// The message type.
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// `registered`, `join`, `error`.
    #[serde(default, borrow, deserialize_with = "present")]
    code: Option<&'a RawValue>,
    /// `register`.
    #[serde(rename = "clientId", default, borrow, deserialize_with = "present")]
    client_id: Option<&'a RawValue>,
    /// `registered`.
    #[serde(rename = "expiresAt", default, borrow, deserialize_with = "present")]
    expires_at: Option<&'a RawValue>,
    /// `joined`.
    #[serde(rename = "sessionId", default, borrow, deserialize_with = "present")]
    session_id: Option<&'a RawValue>,
    /// `data`.
    #[serde(default, borrow, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
    /// `ping`, `pong`.
    #[serde(default, borrow, deserialize_with = "present")]
    ts: Option<&'a RawValue>,
    /// `error`.
    #[serde(default, borrow, deserialize_with = "present")]
    message: Option<&'a RawValue>,
}

/// A field that is present, even as `null` (a plain `Option` would read `null` as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Names of [`Fields`] in wire spelling, with their values, for the presence checks.
type Named<'a> = [(&'static str, Option<&'a RawValue>); 7];

impl<'a> Fields<'a> {
    /// Every optional field by wire name.
    fn named(&self) -> Named<'a> {
        [
            ("code", self.code),
            ("clientId", self.client_id),
            ("expiresAt", self.expires_at),
            ("sessionId", self.session_id),
            ("payload", self.payload),
            ("ts", self.ts),
            ("message", self.message),
        ]
    }

    /// Exactly the fields in `wanted` are present.
    fn expect_only(&self, wanted: &[&'static str]) -> Result<(), Invalid> {
        for (name, value) in self.named() {
            match (wanted.contains(&name), value.is_some()) {
                (true, false) => return Err(Invalid::Missing(name)),
                (false, true) => return Err(Invalid::Unexpected(name)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A present field's value (checked by `expect_only`).
fn raw<'a>(value: Option<&'a RawValue>, name: &'static str) -> Result<&'a RawValue, Invalid> {
    value.ok_or(Invalid::Missing(name))
}

/// A present field that must be a JSON string.
fn string<'a>(value: Option<&'a RawValue>, name: &'static str) -> Result<Cow<'a, str>, Invalid> {
    let text = raw(value, name)?.get();
    if let Ok(plain) = serde_json::from_str::<&'a str>(text) {
        return Ok(Cow::Borrowed(plain));
    }
    // Escapes need an owned copy.
    serde_json::from_str::<String>(text)
        .map(Cow::Owned)
        .map_err(|_| Invalid::Mistyped(name))
}

/// A present field that must be a JSON number, kept as written.
fn number<'a>(value: Option<&'a RawValue>, name: &'static str) -> Result<&'a RawValue, Invalid> {
    let value = raw(value, name)?;
    // The text is one valid JSON value: a leading digit or minus sign makes it a number.
    match value.get().as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => Ok(value),
        _ => Err(Invalid::Mistyped(name)),
    }
}

impl<'a> Message<'a> {
    /// Parse a text message strictly.
    pub fn parse(text: &'a [u8]) -> Result<Self, Invalid> {
        if text.len() > MAX_SESSION_MESSAGE {
            return Err(Invalid::TooBig);
        }
        let fields: Fields<'a> = serde_json::from_slice(text).map_err(|_| Invalid::Malformed)?;
        Self::from_fields(&fields)
    }

    /// Dispatch on `type` and check that type's fields.
    fn from_fields(f: &Fields<'a>) -> Result<Self, Invalid> {
        let message = match &*f.kind {
            "register" => {
                f.expect_only(&["clientId"])?;
                let client_id = string(f.client_id, "clientId")?;
                if uuid::Uuid::try_parse(&client_id).is_err() {
                    return Err(Invalid::Mistyped("clientId"));
                }
                Message::Register { client_id }
            }
            "registered" => {
                f.expect_only(&["code", "expiresAt"])?;
                let expires_at = raw(f.expires_at, "expiresAt")?;
                let expires_at = serde_json::from_str::<u64>(expires_at.get())
                    .map_err(|_| Invalid::Mistyped("expiresAt"))?;
                Message::Registered {
                    code: string(f.code, "code")?,
                    expires_at,
                }
            }
            "join" => {
                f.expect_only(&["code"])?;
                Message::Join {
                    code: string(f.code, "code")?,
                }
            }
            "joined" => {
                f.expect_only(&["sessionId"])?;
                Message::Joined {
                    session_id: string(f.session_id, "sessionId")?,
                }
            }
            "data" => {
                f.expect_only(&["payload"])?;
                Message::Data {
                    payload: raw(f.payload, "payload")?,
                }
            }
            "ping" => {
                f.expect_only(&["ts"])?;
                Message::Ping {
                    ts: number(f.ts, "ts")?,
                }
            }
            "pong" => {
                f.expect_only(&["ts"])?;
                Message::Pong {
                    ts: number(f.ts, "ts")?,
                }
            }
            "error" => {
                f.expect_only(&["code", "message"])?;
                Message::Error {
                    code: string(f.code, "code")?,
                    message: string(f.message, "message")?,
                }
            }
            _ => return Err(Invalid::UnknownType),
        };
        Ok(message)
    }

    /// The compact JSON text of this message.
    pub fn to_text(&self) -> String {
        // Cannot fail: every field is a string, an integer or already-valid raw JSON,
        // and the map keys are fixed names.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The wire name of this message's type.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Register { .. } => "register",
            Message::Registered { .. } => "registered",
            Message::Join { .. } => "join",
            Message::Joined { .. } => "joined",
            Message::Data { .. } => "data",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::Error { .. } => "error",
        }
    }
}

/// The error codes the relay sends (PROTOCOL §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed, binary, too big, unknown type, or not a message this side may send.
    InvalidMessage,
    /// No live code like that.
    InvalidCode,
    /// The code's TTL ran out; its host has not registered again.
    ExpiredCode,
    /// The code's host already has a browser, or this side already joined.
    AlreadyJoined,
    /// `data` before a join.
    NotJoined,
    /// Sent to the browser when its host left.
    MacDisconnected,
    /// Sent to the host when its browser left.
    BrowserDisconnected,
    /// The browser's address used up its failed joins for the minute
    /// (`--code-guesses-per-ip`); the join was not tried.
    RateLimited,
}

impl ErrorCode {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::InvalidCode => "INVALID_CODE",
            ErrorCode::ExpiredCode => "EXPIRED_CODE",
            ErrorCode::AlreadyJoined => "ALREADY_JOINED",
            ErrorCode::NotJoined => "NOT_JOINED",
            ErrorCode::MacDisconnected => "MAC_DISCONNECTED",
            ErrorCode::BrowserDisconnected => "BROWSER_DISCONNECTED",
            ErrorCode::RateLimited => "RATE_LIMITED",
        }
    }

    /// The default human-readable detail.
    pub fn detail(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "invalid message",
            ErrorCode::InvalidCode => "no session with that code",
            ErrorCode::ExpiredCode => "the code has expired",
            ErrorCode::AlreadyJoined => "already joined",
            ErrorCode::NotJoined => "join a session first",
            ErrorCode::MacDisconnected => "the host disconnected",
            ErrorCode::BrowserDisconnected => "the browser disconnected",
            ErrorCode::RateLimited => {
                "too many failed joins from this address; try again in a minute"
            }
        }
    }

    /// `{"type":"error","code":…,"message":…}` with the default detail.
    pub fn to_text(self) -> String {
        self.with_detail(self.detail())
    }

    /// `{"type":"error","code":…,"message":detail}`.
    pub fn with_detail(self, detail: &str) -> String {
        Message::Error {
            code: Cow::Borrowed(self.name()),
            message: Cow::Borrowed(detail),
        }
        .to_text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_keeps_the_exact_ts_text() {
        let m = Message::parse(br#"{ "ts" : 1.50e3 , "type":"ping"}"#);
        let Ok(Message::Ping { ts }) = m else {
            panic!("not a ping: {m:?}");
        };
        assert_eq!(
            Message::Pong { ts }.to_text(),
            r#"{"type":"pong","ts":1.50e3}"#
        );
    }

    #[test]
    fn null_payload_is_present_and_null_code_is_mistyped() {
        assert!(matches!(
            Message::parse(br#"{"type":"data","payload":null}"#),
            Ok(Message::Data { .. })
        ));
        assert_eq!(
            Message::parse(br#"{"type":"join","code":null}"#),
            Err(Invalid::Mistyped("code"))
        );
    }

    #[test]
    fn strictness() {
        let cases: [(&[u8], Invalid); 7] = [
            (b"{", Invalid::Malformed),
            (br#"{"type":"join","code":"A","x":1}"#, Invalid::Malformed),
            (
                br#"{"type":"join","type":"join","code":"A"}"#,
                Invalid::Malformed,
            ),
            (br#"{"type":"hello"}"#, Invalid::UnknownType),
            (br#"{"type":"join"}"#, Invalid::Missing("code")),
            (br#"{"type":"ping","ts":"1"}"#, Invalid::Mistyped("ts")),
            (
                br#"{"type":"data","payload":1,"ts":2}"#,
                Invalid::Unexpected("ts"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                Message::parse(text),
                Err(want),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
