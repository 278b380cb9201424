//! Checking that a client's message is JSON the relay may forward: well-formed, and
//! nested at most [`MAX_DEPTH`] arrays/objects deep.
//!
//! Why not `serde::de::IgnoredAny`: serde_json skips an ignored value with an explicit
//! stack and no depth limit, so `[[[[…]]]]` nested 100,000 deep passed as JSON and went
//! on to the binary, whose own parser might not be so careful. [`check`] walks the value
//! with a visitor that counts the levels it enters and refuses the 129th, copying
//! nothing (strings are only looked at). serde_json's own limit is switched off for this
//! one parse (it would already refuse the 128th level, one short of the protocol's
//! "at most 128"); the count here replaces it, so the recursion stays bounded.

use std::fmt;

use serde::de::Visitor;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess};

/// Deepest nesting a forwarded message may have: serde_json's default recursion limit,
/// which the protocol adopts (§2.1); far past any real message, and a bounded recursion
/// for this walk (a few hundred bytes of stack per level).
pub const MAX_DEPTH: usize = 128;

/// Whether `payload` is one well-formed JSON value nested at most [`MAX_DEPTH`] deep.
pub fn is_forwardable(payload: &[u8]) -> bool {
    check(payload).is_ok()
}

/// Parse `payload` as one JSON value within [`MAX_DEPTH`], keeping nothing.
fn check(payload: &[u8]) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    de.disable_recursion_limit();
    Level { left: MAX_DEPTH }.deserialize(&mut de)?;
    de.end()
}

/// One value, with `left` more levels of nesting allowed inside it.
#[derive(Clone, Copy)]
struct Level {
    /// Arrays/objects that may still be entered on the way down.
    left: usize,
}

impl Level {
    /// The level inside an array or object this one opens, or an error past the limit.
    fn inner<E: serde::de::Error>(self) -> Result<Level, E> {
        match self.left.checked_sub(1) {
            Some(left) => Ok(Level { left }),
            None => Err(E::custom(format_args!(
                "JSON nested more than {MAX_DEPTH} levels"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Level {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.inner::<A::Error>()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.inner::<A::Error>()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut s = "[".repeat(depth);
        s.push_str(&"]".repeat(depth));
        s.into_bytes()
    }

    fn nested_objects(depth: usize) -> Vec<u8> {
        let mut s = r#"{"a":"#.repeat(depth);
        s.push('1');
        s.push_str(&"}".repeat(depth));
        s.into_bytes()
    }

    #[test]
    fn every_kind_of_value_passes() {
        for ok in [
            &br#"{"a":[1,-2,3.5,"x\"]",true,false,null,{}],"b":{"c":[]}}"#[..],
            b"1",
            b"\"s\"",
            b"null",
            b" [ ] ",
            b"18446744073709551616",
        ] {
            assert!(is_forwardable(ok), "{}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn malformed_json_fails() {
        for bad in [
            &b"{"[..],
            b"",
            b"[1,]",
            b"{\"a\" 1}",
            b"1 2",
            b"\xff",
            b"[1]]",
        ] {
            assert!(!is_forwardable(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn nesting_up_to_128_passes_and_deeper_fails() {
        assert!(is_forwardable(&nested(MAX_DEPTH)));
        assert!(is_forwardable(&nested_objects(MAX_DEPTH)));
        assert!(!is_forwardable(&nested(MAX_DEPTH + 1)));
        assert!(!is_forwardable(&nested_objects(MAX_DEPTH + 1)));
        assert!(!is_forwardable(&nested(100_000)));
        let mut mixed = r#"{"a":["#.repeat(64).into_bytes();
        mixed.extend_from_slice(&b"]}".repeat(64));
        assert!(
            is_forwardable(&mixed),
            "64 objects + 64 arrays = 128 levels"
        );
        let mut deeper = b"[".to_vec();
        deeper.extend_from_slice(&mixed);
        deeper.push(b']');
        assert!(!is_forwardable(&deeper), "129 levels");
    }

    #[test]
    fn ignored_any_alone_has_no_limit() {
        // The reason this module exists; if serde_json ever bounds IgnoredAny, this
        // test says so and the module can go.
        assert!(serde_json::from_slice::<IgnoredAny>(&nested(100_000)).is_ok());
    }
}
