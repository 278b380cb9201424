//! Property tests for the session message parser (`modes::session::messages`): every
//! valid message of the eight types round-trips through its text; random, truncated and
//! bit-flipped input never panics; and whatever parses re-encodes to text that parses to
//! the same message.

use std::borrow::Cow;

use proptest::prelude::*;
use serde_json::value::RawValue;
use shardrelay::modes::session::messages::{Invalid, Message, MAX_SESSION_MESSAGE};

/// A JSON value of any kind, small and nested.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The text of a JSON number, in any of the forms clients write.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (any::<i32>(), 0u32..1000).prop_map(|(i, f)| format!("{i}.{f:03}")),
        (any::<i16>(), -40i32..40).prop_map(|(m, e)| format!("{m}e{e}")),
        "-?[1-9][0-9]{0,30}(\\.[0-9]{1,10})?([eE][+-]?[0-9]{1,3})?",
    ]
}

/// An owned description of a valid message (raw fields as text).
#[derive(Debug, Clone)]
enum Spec {
    Register(String),
    Registered(String, u64),
    Join(String),
    Joined(String),
    Data(String),
    Ping(String),
    Pong(String),
    Error(String, String),
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        any::<u128>().prop_map(|n| Spec::Register(uuid::Uuid::from_u128(n).to_string())),
        (".{0,8}", any::<u64>()).prop_map(|(c, e)| Spec::Registered(c, e)),
        ".{0,8}".prop_map(Spec::Join),
        ".{0,40}".prop_map(Spec::Joined),
        json_value().prop_map(|v| Spec::Data(v.to_string())),
        number_text().prop_map(Spec::Ping),
        number_text().prop_map(Spec::Pong),
        (".{0,16}", ".{0,40}").prop_map(|(c, m)| Spec::Error(c, m)),
    ]
}

/// A raw JSON value from valid text.
fn raw(text: &str) -> &RawValue {
    serde_json::from_str(text).expect("generated JSON is valid")
}

impl Spec {
    fn message(&self) -> Message<'_> {
        match self {
            Spec::Register(id) => Message::Register {
                client_id: Cow::Borrowed(id),
            },
            Spec::Registered(code, at) => Message::Registered {
                code: Cow::Borrowed(code),
                expires_at: *at,
            },
            Spec::Join(code) => Message::Join {
                code: Cow::Borrowed(code),
            },
            Spec::Joined(id) => Message::Joined {
                session_id: Cow::Borrowed(id),
            },
            Spec::Data(payload) => Message::Data {
                payload: raw(payload),
            },
            Spec::Ping(ts) => Message::Ping { ts: raw(ts) },
            Spec::Pong(ts) => Message::Pong { ts: raw(ts) },
            Spec::Error(code, message) => Message::Error {
                code: Cow::Borrowed(code),
                message: Cow::Borrowed(message),
            },
        }
    }
}

/// Parse, and when that succeeds check the re-encoding parses back to the same message.
fn parse_is_stable(bytes: &[u8]) {
    if let Ok(message) = Message::parse(bytes) {
        let text = message.to_text();
        assert_eq!(
            Message::parse(text.as_bytes()).as_ref(),
            Ok(&message),
            "{text}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn prop_every_valid_message_round_trips(spec in spec()) {
        let message = spec.message();
        let text = message.to_text();
        prop_assert_eq!(Message::parse(text.as_bytes()), Ok(message.clone()));
        // Field order and whitespace do not matter.
        // (Skipped for numbers a `Value` cannot hold, such as 1e999; the relay keeps
        // their text and never converts them.)
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
            let pretty = serde_json::to_string_pretty(&value).expect("re-encodes");
            let reparsed = Message::parse(pretty.as_bytes());
            prop_assert!(reparsed.is_ok(), "{} -> {:?}", pretty, reparsed);
        }
    }

    #[test]
    fn prop_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_is_stable(&bytes);
    }

    #[test]
    fn prop_json_like_text_never_panics(
        text in r#"\{("(type|code|clientId|ts|payload|message|sessionId|expiresAt)": ?("[a-z]{0,6}"|-?[0-9]{1,4}|null|true|\[\]|\{\}),?){0,5}\}"#
    ) {
        parse_is_stable(text.as_bytes());
    }

    #[test]
    fn prop_truncated_messages_never_panic(spec in spec(), cut in any::<prop::sample::Index>()) {
        let text = spec.message().to_text();
        let end = cut.index(text.len() + 1);
        parse_is_stable(&text.as_bytes()[..end]);
        if end < text.len() {
            prop_assert!(Message::parse(&text.as_bytes()[..end]).is_err());
        }
    }

    #[test]
    fn prop_bit_flipped_messages_never_panic(
        spec in spec(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let mut bytes = spec.message().to_text().into_bytes();
        for (at, bit) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        parse_is_stable(&bytes);
    }

    #[test]
    fn prop_oversized_text_is_too_big(extra in 1usize..64) {
        let pad = MAX_SESSION_MESSAGE + extra - r#"{"type":"data","payload":""}"#.len();
        let text = format!(r#"{{"type":"data","payload":"{}"}}"#, "x".repeat(pad));
        prop_assert_eq!(Message::parse(text.as_bytes()), Err(Invalid::TooBig));
    }
}
