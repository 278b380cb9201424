//! Property tests for the RFC 6455 codec (`ws::codec`) and masking (`ws::mask`): random
//! client streams round-trip through the decoder whatever their fragmentation, masking
//! and chunking; encoded server headers say exactly what tungstenite reads back; and no
//! byte sequence, however broken, makes the decoder panic.

use std::io::Cursor;

use proptest::prelude::*;
use shardrelay::ws::codec::{
    encode_close, encode_frame, encode_header, Decoder, Event, MessageKind, OpCode, ProtocolError,
};
use shardrelay::ws::mask::apply_mask_bytewise;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode as WireOpCode};
use tungstenite::protocol::frame::FrameHeader;

const CONT: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The tiny client encoder: one masked frame with FIN as given.
fn client_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let len = payload.len();
    if len <= 125 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask_bytewise(&mut out[start..], key);
    out
}

/// An event with its borrows copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Message(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, String),
}

impl From<Event<'_>> for Owned {
    fn from(event: Event<'_>) -> Self {
        match event {
            Event::Message { kind, payload } => Owned::Message(kind, payload.to_vec()),
            Event::Ping(payload) => Owned::Ping(payload.to_vec()),
            Event::Pong => Owned::Pong,
            Event::Close { code, reason } => Owned::Close(code, reason.to_owned()),
        }
    }
}

/// A control frame to interleave.
#[derive(Debug, Clone)]
enum ControlFrame {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl ControlFrame {
    fn encode(&self, key: [u8; 4]) -> Vec<u8> {
        match self {
            ControlFrame::Ping(p) => client_frame(true, PING, p, key),
            ControlFrame::Pong(p) => client_frame(true, PONG, p, key),
            ControlFrame::Close(None) => client_frame(true, CLOSE, &[], key),
            ControlFrame::Close(Some((code, reason))) => {
                let mut payload = code.to_be_bytes().to_vec();
                payload.extend_from_slice(reason.as_bytes());
                client_frame(true, CLOSE, &payload, key)
            }
        }
    }

    fn expected(&self) -> Owned {
        match self {
            ControlFrame::Ping(p) => Owned::Ping(p.clone()),
            ControlFrame::Pong(_) => Owned::Pong,
            ControlFrame::Close(None) => Owned::Close(None, String::new()),
            ControlFrame::Close(Some((code, reason))) => Owned::Close(Some(*code), reason.clone()),
        }
    }
}

/// One data message, cut into fragments, with control frames after some fragments.
#[derive(Debug, Clone)]
struct Message {
    kind: MessageKind,
    payload: Vec<u8>,
    /// Cut points into `payload` (sorted, may repeat: empty fragments are legal).
    cuts: Vec<usize>,
    /// `(i, frame)`: `frame` goes right after fragment `i` (only before the last one).
    controls: Vec<(usize, ControlFrame)>,
    key: [u8; 4],
}

impl Message {
    fn fragments(&self) -> Vec<&[u8]> {
        let mut bounds = vec![0];
        bounds.extend(self.cuts.iter().map(|&c| c.min(self.payload.len())));
        bounds.push(self.payload.len());
        bounds.sort_unstable();
        bounds
            .windows(2)
            .map(|w| &self.payload[w[0]..w[1]])
            .collect()
    }

    /// Appends the frames to `stream` and the events they must produce to `expected`.
    fn encode(&self, stream: &mut Vec<u8>, expected: &mut Vec<Owned>) {
        let fragments = self.fragments();
        let last = fragments.len() - 1;
        for (i, fragment) in fragments.iter().enumerate() {
            let opcode = match (i, self.kind) {
                (0, MessageKind::Text) => TEXT,
                (0, MessageKind::Binary) => BINARY,
                _ => CONT,
            };
            stream.extend(client_frame(i == last, opcode, fragment, self.key));
            if i == last {
                break;
            }
            for (_, control) in self.controls.iter().filter(|(at, _)| at % last == i) {
                stream.extend(control.encode(self.key));
                expected.push(control.expected());
            }
        }
        expected.push(Owned::Message(self.kind, self.payload.clone()));
    }
}

fn control_strategy() -> impl Strategy<Value = ControlFrame> {
    let close_code = prop_oneof![1000u16..=1003, 1007u16..=1011, 3000u16..=4999,];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(ControlFrame::Ping),
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(ControlFrame::Pong),
        Just(ControlFrame::Close(None)),
        // At most 30 chars of at most 4 bytes: always within the 123-byte reason limit.
        (close_code, "\\PC{0,30}").prop_map(|(c, r)| ControlFrame::Close(Some((c, r)))),
    ]
}

fn message_strategy() -> impl Strategy<Value = Message> {
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..400).prop_map(|p| (MessageKind::Binary, p)),
        "\\PC{0,150}".prop_map(|s| (MessageKind::Text, s.into_bytes())),
        // Occasionally past the 16-bit length form.
        (0usize..4).prop_map(|n| (MessageKind::Binary, vec![0x5a; 65_530 + n * 3])),
    ];
    (
        payload,
        proptest::collection::vec(0usize..70_000, 0..5),
        proptest::collection::vec((0usize..8, control_strategy()), 0..4),
        any::<[u8; 4]>(),
    )
        .prop_map(|((kind, payload), cuts, controls, key)| {
            let cuts = cuts.into_iter().map(|c| c % (payload.len() + 1)).collect();
            Message {
                kind,
                payload,
                cuts,
                controls,
                key,
            }
        })
}

/// A valid stream of messages and loose control frames, with the events it must decode to.
fn stream_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<Owned>)> {
    let item = prop_oneof![
        4 => message_strategy().prop_map(Ok),
        1 => (control_strategy(), any::<[u8; 4]>()).prop_map(Err),
    ];
    proptest::collection::vec(item, 0..8).prop_map(|items| {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for item in items {
            match item {
                Ok(message) => message.encode(&mut stream, &mut expected),
                Err((control, key)) => {
                    stream.extend(control.encode(key));
                    expected.push(control.expected());
                }
            }
        }
        (stream, expected)
    })
}

/// Feeds `stream` to one decoder in chunks of the given sizes (cycled), the way the
/// connection reader does: keep unconsumed bytes, append what arrives, decode again.
fn decode_chunked(
    stream: &[u8],
    chunks: &[usize],
    max: usize,
) -> Result<Vec<Owned>, ProtocolError> {
    let mut dec = Decoder::new();
    let mut pending = Vec::new();
    let mut events = Vec::new();
    let mut offset = 0;
    let mut sizes = chunks.iter().cycle();
    while offset < stream.len() {
        let size = sizes.next().copied().unwrap_or(stream.len()).max(1);
        let end = (offset + size).min(stream.len());
        pending.extend_from_slice(&stream[offset..end]);
        offset = end;
        let mut pos = 0;
        while let Some((ev, n)) = dec.decode(&mut pending[pos..], max)? {
            if let Some(ev) = ev {
                events.push(Owned::from(ev));
            }
            pos += n;
        }
        pending.drain(..pos);
    }
    assert!(pending.is_empty(), "{} bytes left undecoded", pending.len());
    assert!(!dec.in_fragment());
    Ok(events)
}

/// Runs the caller loop over arbitrary bytes until it stops; it must not panic, and every
/// `consumed` must lie within the buffer (the slicing below would panic otherwise).
fn run_to_end(bytes: &mut [u8], max: usize) -> Result<usize, ProtocolError> {
    let mut dec = Decoder::new();
    let mut pos = 0;
    while let Some((_ev, n)) = dec.decode(&mut bytes[pos..], max)? {
        assert!(n > 0, "a decoded frame consumes at least its header");
        pos += n;
    }
    Ok(pos)
}

fn server_opcode() -> impl Strategy<Value = (OpCode, WireOpCode)> {
    prop_oneof![
        Just((OpCode::Text, WireOpCode::Data(Data::Text))),
        Just((OpCode::Binary, WireOpCode::Data(Data::Binary))),
        Just((OpCode::Close, WireOpCode::Control(Control::Close))),
        Just((OpCode::Ping, WireOpCode::Control(Control::Ping))),
        Just((OpCode::Pong, WireOpCode::Control(Control::Pong))),
    ]
}

/// Any length, biased towards the edges of the 7-, 16- and 64-bit forms.
fn any_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..=130,
        65_530usize..=65_540,
        any::<u16>().prop_map(usize::from),
        any::<usize>(),
    ]
}

// Default config: 256 cases per property, more with PROPTEST_CASES=n.
proptest! {
    #[test]
    fn round_trip((stream, expected) in stream_strategy(),
                  chunks in proptest::collection::vec(1usize..200, 1..6)) {
        let max = 70_000;
        // All at once, then in arbitrary chunks: the same events either way.
        prop_assert_eq!(&decode_chunked(&stream, &[stream.len()], max), &Ok(expected.clone()));
        prop_assert_eq!(decode_chunked(&stream, &chunks, max), Ok(expected));
    }

    #[test]
    fn encoded_header_length_is_what_tungstenite_reads(
        (ours, theirs) in server_opcode(),
        len in any_len(),
    ) {
        let mut out = [0u8; 10];
        let n = encode_header(ours, len, &mut out);
        let mut cursor = Cursor::new(&out[..n]);
        let parsed = FrameHeader::parse(&mut cursor);
        let Ok(Some((header, claimed))) = parsed else {
            return Err(TestCaseError::fail(format!("parse gave {parsed:?}")));
        };
        prop_assert_eq!(claimed, len as u64);
        prop_assert_eq!(cursor.position(), n as u64);
        prop_assert!(header.is_final && !header.rsv1 && !header.rsv2 && !header.rsv3);
        prop_assert_eq!(header.opcode, theirs);
        prop_assert_eq!(header.mask, None);
        prop_assert_eq!(header.len(len as u64), n);
        let mut formatted = Vec::new();
        prop_assert!(header.format(len as u64, &mut formatted).is_ok());
        prop_assert_eq!(&out[..n], &formatted[..]);
    }

    #[test]
    fn encoded_frame_length_is_header_plus_payload(
        (ours, _) in server_opcode(),
        payload in proptest::collection::vec(any::<u8>(), 0..70_000),
    ) {
        let frame = encode_frame(ours, &payload);
        let mut cursor = Cursor::new(&frame[..]);
        let parsed = FrameHeader::parse(&mut cursor);
        let Ok(Some((_, claimed))) = parsed else {
            return Err(TestCaseError::fail(format!("parse gave {parsed:?}")));
        };
        prop_assert_eq!(claimed, payload.len() as u64);
        prop_assert_eq!(cursor.position() + claimed, frame.len() as u64);
        prop_assert_eq!(&frame[cursor.position() as usize..], &payload[..]);
    }

    #[test]
    fn encoded_close_fits_and_decodes_when_masked(
        code in prop_oneof![1000u16..=1003, 1007u16..=1011, 3000u16..=4999],
        reason in "\\PC{0,100}",
        key in any::<[u8; 4]>(),
    ) {
        let frame = encode_close(code, &reason);
        prop_assert!(frame.len() <= 2 + 125);
        prop_assert_eq!(frame[1] as usize, frame.len() - 2);
        // Re-frame the server's payload as a client would send it; the decoder reads it back.
        let masked = client_frame(true, CLOSE, &frame[2..], key);
        let mut buf = masked.clone();
        let mut dec = Decoder::new();
        let got = dec.decode(&mut buf, 0).map(|r| r.map(|(ev, n)| (ev.map(Owned::from), n)));
        let Ok(Some((Some(Owned::Close(Some(got_code), got_reason)), n))) = got else {
            return Err(TestCaseError::fail(format!("decode gave {got:?}")));
        };
        prop_assert_eq!(n, masked.len());
        prop_assert_eq!(got_code, code);
        prop_assert!(reason.starts_with(&got_reason));
        prop_assert!(got_reason.len() <= 123);
        if reason.len() <= 123 {
            prop_assert_eq!(got_reason, reason);
        }
    }

    #[test]
    fn random_bytes_never_panic(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..600),
        max in 0usize..1000,
    ) {
        let _ = run_to_end(&mut bytes, max);
    }

    #[test]
    fn random_masked_frames_never_panic(
        // Plausible headers (any first byte, masked, short lengths) reach deeper checks
        // than uniform noise does.
        frames in proptest::collection::vec(
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..140), any::<[u8; 4]>()),
            0..12,
        ),
        max in 0usize..600,
    ) {
        let mut stream = Vec::new();
        for (first, payload, key) in frames {
            let mut frame = client_frame(true, 0, &payload, key);
            frame[0] = first;
            stream.extend(frame);
        }
        let _ = run_to_end(&mut stream, max);
    }

    #[test]
    fn truncated_and_bit_flipped_streams_never_panic(
        (stream, _) in stream_strategy(),
        flips in proptest::collection::vec(any::<usize>(), 0..6),
        keep in any::<usize>(),
        max in prop_oneof![0usize..200, Just(70_000usize)],
    ) {
        let mut bytes = stream;
        if !bytes.is_empty() {
            for flip in flips {
                let bit = flip % (bytes.len() * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            bytes.truncate(keep % (bytes.len() + 1));
        }
        let _ = run_to_end(&mut bytes, max);
    }

    #[test]
    fn truncated_valid_stream_decodes_a_prefix(
        (stream, expected) in stream_strategy(),
        keep in any::<usize>(),
    ) {
        // Cutting a valid stream anywhere yields a prefix of its events and no error.
        let keep = keep % (stream.len() + 1);
        let mut buf = stream[..keep].to_vec();
        let mut dec = Decoder::new();
        let mut events = Vec::new();
        let mut pos = 0;
        let result: Result<(), ProtocolError> = (|| {
            while let Some((ev, n)) = dec.decode(&mut buf[pos..], 70_000)? {
                if let Some(ev) = ev {
                    events.push(Owned::from(ev));
                }
                pos += n;
            }
            Ok(())
        })();
        prop_assert_eq!(result, Ok(()));
        prop_assert!(events.len() <= expected.len());
        prop_assert_eq!(&events[..], &expected[..events.len()]);
    }
}
