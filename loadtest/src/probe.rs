//! The measured message ("probe"): every message carries its stream id, a sequence
//! number, its scheduled send time and a CRC-32 over all of that plus the padding, so a
//! receiver can detect loss, duplication, reordering, corruption and misrouting.
//!
//! Two encodings: a 24-byte binary header for the pair style (binary frames), and a
//! JSON object `{"s":stream,"q":seq,"t":ns,"c":crc,"p":"pad"}` for the JSON styles.
//! A *hello* (`HELO`+stream, or `{"hello":stream}`) proves a route works end to end
//! before traffic starts.

use serde::Deserialize;

use crate::clock::Nanos;

/// Binary header: crc u32 | stream u32 | seq u64 | sent_at u64, little-endian.
pub const BINARY_HEADER: usize = 24;
/// Binary hello: `HELO` then the stream id.
const BINARY_HELLO: &[u8; 4] = b"HELO";

/// What a probe says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Which sender→receiver stream it belongs to.
    pub stream: u32,
    /// Position in that stream, from 0.
    pub seq: u64,
    /// Scheduled send time (open loop) or actual send time (closed loop).
    pub sent_at: Nanos,
}

/// A decoded message: a route check or a measured probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The route for this stream works.
    Hello(u32),
    /// A measured message.
    Probe(Probe),
}

/// A message that is not what any sender of ours wrote.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// Parsed, but the checksum does not match: bytes changed in flight.
    #[error("checksum mismatch")]
    Checksum,
    /// Not a probe at all (truncated, not JSON, missing fields).
    #[error("malformed probe")]
    Malformed,
}

/// Random filler for binary probes of `size` bytes in all.
pub fn binary_fill(size: usize) -> Vec<u8> {
    let mut fill = vec![0u8; size.saturating_sub(BINARY_HEADER)];
    if getrandom::fill(&mut fill).is_err() {
        // No OS randomness: a fixed pattern is still checksummed.
        fill.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    }
    fill
}

/// Appends a binary probe with `fill` after the header.
pub fn write_binary(out: &mut Vec<u8>, probe: &Probe, fill: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&probe.stream.to_le_bytes());
    out.extend_from_slice(&probe.seq.to_le_bytes());
    out.extend_from_slice(&probe.sent_at.to_le_bytes());
    out.extend_from_slice(fill);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a binary hello for `stream`.
pub fn write_binary_hello(out: &mut Vec<u8>, stream: u32) {
    out.extend_from_slice(BINARY_HELLO);
    out.extend_from_slice(&stream.to_le_bytes());
}

/// Decodes a binary message written by [`write_binary`] or [`write_binary_hello`].
pub fn decode_binary(msg: &[u8]) -> Result<Decoded, ProbeError> {
    if msg.len() == 8 && msg.starts_with(BINARY_HELLO) {
        return Ok(Decoded::Hello(u32::from_le_bytes(word4(&msg[4..8]))));
    }
    if msg.len() < BINARY_HEADER {
        return Err(ProbeError::Malformed);
    }
    let crc = u32::from_le_bytes(word4(&msg[0..4]));
    if crc32fast::hash(&msg[4..]) != crc {
        return Err(ProbeError::Checksum);
    }
    Ok(Decoded::Probe(Probe {
        stream: u32::from_le_bytes(word4(&msg[4..8])),
        seq: u64::from_le_bytes(word8(&msg[8..16])),
        sent_at: u64::from_le_bytes(word8(&msg[16..24])),
    }))
}

/// The first four bytes of a slice known to hold at least four.
fn word4(bytes: &[u8]) -> [u8; 4] {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[..4]);
    word
}

/// The first eight bytes of a slice known to hold at least eight.
fn word8(bytes: &[u8]) -> [u8; 8] {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[..8]);
    word
}

/// JSON bytes around the pad with typical field widths (stream, seq and time digits
/// vary, so JSON probes are `size` give or take a few bytes).
const JSON_OVERHEAD: usize = 56;

/// Padding for JSON probes of about `size` bytes in all.
pub fn json_pad(size: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..size.saturating_sub(JSON_OVERHEAD))
        .map(|i| char::from(ALPHABET[(i * 7 + i / 62) % ALPHABET.len()]))
        .collect()
}

/// The checksum of a JSON probe's fields.
fn json_crc(probe: &Probe, pad: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&probe.stream.to_le_bytes());
    hasher.update(&probe.seq.to_le_bytes());
    hasher.update(&probe.sent_at.to_le_bytes());
    hasher.update(pad);
    hasher.finalize()
}

/// Appends a JSON probe with `pad` (which must need no escaping: see [`json_pad`]).
pub fn write_json(out: &mut Vec<u8>, probe: &Probe, pad: &str) {
    out.extend_from_slice(b"{\"s\":");
    push_decimal(out, u64::from(probe.stream));
    out.extend_from_slice(b",\"q\":");
    push_decimal(out, probe.seq);
    out.extend_from_slice(b",\"t\":");
    push_decimal(out, probe.sent_at);
    out.extend_from_slice(b",\"c\":");
    push_decimal(out, u64::from(json_crc(probe, pad.as_bytes())));
    out.extend_from_slice(b",\"p\":\"");
    out.extend_from_slice(pad.as_bytes());
    out.extend_from_slice(b"\"}");
}

/// Appends a JSON hello for `stream`.
pub fn write_json_hello(out: &mut Vec<u8>, stream: u32) {
    out.extend_from_slice(b"{\"hello\":");
    push_decimal(out, u64::from(stream));
    out.push(b'}');
}

/// Appends `n` in decimal without allocating.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The JSON probe's fields as they arrive; all optional so a hello parses too.
#[derive(Deserialize)]
struct JsonWire<'a> {
    /// Present only in a hello.
    hello: Option<u32>,
    /// Stream id.
    s: Option<u32>,
    /// Sequence number.
    q: Option<u64>,
    /// Send time, ns since the run's origin.
    t: Option<u64>,
    /// CRC-32 of the fields and the pad.
    c: Option<u32>,
    /// Padding (never escaped, so it borrows).
    #[serde(borrow)]
    p: Option<&'a str>,
}

/// Decodes a JSON message written by [`write_json`] or [`write_json_hello`].
pub fn decode_json(msg: &[u8]) -> Result<Decoded, ProbeError> {
    let wire: JsonWire<'_> = serde_json::from_slice(msg).map_err(|_| ProbeError::Malformed)?;
    if let Some(stream) = wire.hello {
        return Ok(Decoded::Hello(stream));
    }
    let (Some(stream), Some(seq), Some(sent_at), Some(crc), Some(pad)) =
        (wire.s, wire.q, wire.t, wire.c, wire.p)
    else {
        return Err(ProbeError::Malformed);
    };
    let probe = Probe {
        stream,
        seq,
        sent_at,
    };
    if json_crc(&probe, pad.as_bytes()) != crc {
        return Err(ProbeError::Checksum);
    }
    Ok(Decoded::Probe(probe))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: Probe = Probe {
        stream: 42,
        seq: 1_000_001,
        sent_at: 123_456_789_012,
    };

    #[test]
    fn binary_round_trip_and_size() {
        let fill = binary_fill(100);
        let mut out = Vec::new();
        write_binary(&mut out, &PROBE, &fill);
        assert_eq!(out.len(), 100);
        assert_eq!(decode_binary(&out), Ok(Decoded::Probe(PROBE)));
        let mut hello = Vec::new();
        write_binary_hello(&mut hello, 9);
        assert_eq!(decode_binary(&hello), Ok(Decoded::Hello(9)));
    }

    #[test]
    fn binary_bit_flips_are_caught() {
        let mut out = Vec::new();
        write_binary(&mut out, &PROBE, &binary_fill(64));
        for i in 0..out.len() {
            let mut flipped = out.clone();
            flipped[i] ^= 0x10;
            assert_eq!(
                decode_binary(&flipped),
                Err(ProbeError::Checksum),
                "byte {i}"
            );
        }
        assert_eq!(decode_binary(&out[..10]), Err(ProbeError::Malformed));
    }

    #[test]
    fn json_round_trip_is_valid_json_of_about_size() {
        let pad = json_pad(256);
        let mut out = Vec::new();
        write_json(&mut out, &PROBE, &pad);
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
        assert!(out.len().abs_diff(256) <= 12, "len {}", out.len());
        assert_eq!(decode_json(&out), Ok(Decoded::Probe(PROBE)));
        let mut hello = Vec::new();
        write_json_hello(&mut hello, 7);
        assert_eq!(decode_json(&hello), Ok(Decoded::Hello(7)));
    }

    #[test]
    fn json_tampering_is_caught() {
        let mut out = Vec::new();
        write_json(&mut out, &PROBE, &json_pad(80));
        let text = String::from_utf8(out).unwrap();
        let changed = text.replace("\"q\":1000001", "\"q\":1000002");
        assert_eq!(decode_json(changed.as_bytes()), Err(ProbeError::Checksum));
        let padded = text.replacen("\"p\":\"a", "\"p\":\"b", 1);
        assert_eq!(decode_json(padded.as_bytes()), Err(ProbeError::Checksum));
        assert_eq!(decode_json(b"{\"s\":1}"), Err(ProbeError::Malformed));
        assert_eq!(decode_json(b"not json"), Err(ProbeError::Malformed));
    }

    #[test]
    fn decimal_matches_format() {
        for n in [0u64, 9, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
