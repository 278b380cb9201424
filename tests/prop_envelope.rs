//! Property tests for the server-id routing envelope parser: valid envelopes round-trip
//! with their `frame` bytes intact; random, truncated and bit-flipped input never panics.

use proptest::prelude::*;
use serde_json::Value;
use shardrelay::modes::server_id::{parse_envelope, Command};
use shardrelay::ws::codec::MessageKind;

/// Arbitrary JSON values (bounded depth).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn prop_envelopes_round_trip_with_exact_frame_bytes(
        conn_id in "client-[a-z0-9]{1,12}-[0-9a-f]{8}",
        frame in json_value().prop_filter("null frame means absent", |v| !v.is_null()),
        close in prop::option::of(prop_oneof![Just(1000i64), 3000i64..=4999]),
        binary in any::<bool>(),
    ) {
        let frame_text = serde_json::to_string(&frame).unwrap();
        let mut env = format!(r#"{{"conn_id":"{conn_id}","frame":{frame_text}"#);
        if let Some(code) = close {
            env += &format!(r#","close_code":{code}"#);
        }
        env.push('}');
        let kind = if binary { MessageKind::Binary } else { MessageKind::Text };
        match parse_envelope(kind, env.as_bytes()) {
            Some(Command::ToPhone { conn_id: id, frame: Some(f), close_code }) => {
                prop_assert_eq!(id.as_ref(), conn_id.as_str());
                prop_assert_eq!(f, frame_text.as_str());
                prop_assert_eq!(close_code.map(i64::from), close);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn prop_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_envelope(MessageKind::Text, &bytes);
        let _ = parse_envelope(MessageKind::Binary, &bytes);
    }

    #[test]
    fn prop_truncated_and_bit_flipped_envelopes_never_panic(
        cut in 0usize..80,
        flip in 0usize..640,
    ) {
        let env = br#"{"conn_id":"client-s-0123abcd","frame":{"a":[1,"two",null]},"close_code":4000}"#;
        let cut = cut.min(env.len());
        let _ = parse_envelope(MessageKind::Text, &env[..cut]);
        let mut flipped = env.to_vec();
        let bit = flip % (flipped.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        let _ = parse_envelope(MessageKind::Binary, &flipped);
    }
}
