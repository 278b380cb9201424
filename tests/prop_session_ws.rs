//! Property tests for the `/ws` message reader (`modes::session_ws::messages`): random,
//! truncated and bit-flipped input never panics; every `auth`, `register` and
//! `close_session` with its string field reads back its value whatever else the object
//! holds; and a `close_session` frame always carries its id's length in its first byte.

use std::borrow::Cow;

use proptest::prelude::*;
use shardrelay::modes::session_ws::messages::{close_session_frame, parse, Control};

/// Extra fields a client may add (ignored by the relay), as `"name":value` pairs.
fn extras() -> impl Strategy<Value = Vec<(String, serde_json::Value)>> {
    prop::collection::vec(
        (
            "[a-z]{1,8}".prop_filter("not a field the relay reads", |k| {
                !["type", "client_id", "session_code", "session_id"].contains(&k.as_str())
            }),
            prop_oneof![
                Just(serde_json::Value::Null),
                any::<i64>().prop_map(serde_json::Value::from),
                ".{0,8}".prop_map(serde_json::Value::from),
            ],
        ),
        0..4,
    )
}

/// `{"type":kind, field:value, …extras}` as text.
fn object(kind: &str, field: &str, value: &str, extra: &[(String, serde_json::Value)]) -> String {
    let mut map = serde_json::Map::new();
    map.insert("type".into(), kind.into());
    map.insert(field.into(), value.into());
    for (k, v) in extra {
        map.insert(k.clone(), v.clone());
    }
    serde_json::Value::Object(map).to_string()
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn truncated_and_bit_flipped_messages_never_panic(
        code in ".{0,10}",
        cut in 0usize..64,
        flip in 0usize..64,
        bit in 0u8..8,
    ) {
        let text = object("auth", "session_code", &code, &[]).into_bytes();
        let _ = parse(&text[..cut.min(text.len())]);
        let mut flipped = text.clone();
        let i = flip % flipped.len();
        flipped[i] ^= 1 << bit;
        let _ = parse(&flipped);
    }

    #[test]
    fn auth_register_and_close_session_read_their_field(
        value in ".{0,40}",
        extra in extras(),
    ) {
        let auth = object("auth", "session_code", &value, &extra);
        prop_assert_eq!(
            parse(auth.as_bytes()),
            Some(Control::Auth { session_code: Cow::Borrowed(value.as_str()) })
        );
        let register = object("register", "client_id", &value, &extra);
        prop_assert_eq!(parse(register.as_bytes()), Some(Control::Register));
        let close = object("close_session", "session_id", &value, &extra);
        prop_assert_eq!(
            parse(close.as_bytes()),
            Some(Control::CloseSession { session_id: Cow::Borrowed(value.as_str()) })
        );
    }

    #[test]
    fn close_session_frames_carry_the_length_then_the_id(id in ".{0,100}") {
        match close_session_frame(&id) {
            Some(frame) => {
                prop_assert_eq!(usize::from(frame[0]), id.len());
                prop_assert_eq!(&frame[1..=id.len()], id.as_bytes());
                prop_assert_eq!(&frame[1 + id.len()..], br#"{"type":"close_session"}"#);
            }
            None => prop_assert!(id.len() > 255),
        }
    }
}
