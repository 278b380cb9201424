//! RFC 6455 framing for a client: every frame we send is masked; frames from the relay
//! are parsed with tungstenite's `FrameHeader` and reassembled here. No I/O: bytes go
//! in, events come out, so the codec is unit-tested without sockets.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// What a client sends: only the opcodes this load generator needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOp {
    /// UTF-8 text (JSON styles).
    Text,
    /// Opaque bytes (pair style).
    Binary,
    /// Close handshake.
    Close,
    /// Answer to a relay ping.
    Pong,
}

impl SendOp {
    /// The opcode nibble on the wire.
    fn bits(self) -> u8 {
        match self {
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Pong => 0xA,
        }
    }
}

/// What a decoded frame or message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A whole text message (fragments reassembled).
    Text,
    /// A whole binary message (fragments reassembled).
    Binary,
    /// A ping; the caller answers it with a pong carrying the same bytes.
    Ping,
    /// A pong (we never ping, so it is ignored).
    Pong,
    /// A close frame with its status code, if it carried one.
    Close(Option<u16>),
}

/// One complete message or control frame; its bytes stay readable through
/// [`WsDecoder::payload`] until the decoder is used again. (An owned descriptor, not
/// a borrow, so a reader can decode, then read more, in one loop.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// What it is.
    pub kind: EventKind,
    /// Where its payload is.
    span: Span,
}

/// Where an event's payload sits inside the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Span {
    /// `buf[from..to]`, a single frame.
    Buffer { from: usize, to: usize },
    /// The reassembly of a fragmented message.
    Assembled,
}

/// Why the relay's bytes are not a valid WebSocket stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// tungstenite rejected the header (bad opcode and the like).
    #[error("bad frame header: {0}")]
    Header(String),
    /// A reserved bit was set without a negotiated extension.
    #[error("reserved bits set")]
    ReservedBits,
    /// A server frame must not be masked (RFC 6455 §5.1).
    #[error("masked frame from the server")]
    Masked,
    /// A message longer than the decoder will buffer.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooBig { len: u64, max: usize },
    /// A continuation with no message started, or a new message inside one.
    #[error("bad fragmentation")]
    Fragmentation,
    /// A control frame that is fragmented or longer than 125 bytes.
    #[error("bad control frame")]
    BadControl,
    /// An opcode reserved by RFC 6455.
    #[error("reserved opcode")]
    ReservedOpcode,
}

/// `--accept-masked`: take masked frames from the server (and unmask them) instead of
/// failing the connection. Only for the raw-copy reference relay (`shardrelay-baseline
/// --raw-copy`), which forwards the other side's client frames byte for byte.
static ACCEPT_MASKED: AtomicBool = AtomicBool::new(false);

/// Turn on `--accept-masked` for this process.
pub fn set_accept_masked() {
    ACCEPT_MASKED.store(true, Ordering::Relaxed);
}

/// Appends one final, masked client frame carrying `payload` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, op: SendOp, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | op.bits());
    push_length(out, payload.len());
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends a masked close frame with `code` and no reason.
pub fn encode_close(out: &mut Vec<u8>, code: u16, mask: [u8; 4]) {
    encode_frame(out, SendOp::Close, &code.to_be_bytes(), mask);
}

/// The masked-length byte and extended length for a client frame.
fn push_length(out: &mut Vec<u8>, len: usize) {
    const MASK_BIT: u8 = 0x80;
    if len < 126 {
        // Fits the 7-bit field; the cast cannot truncate.
        out.push(MASK_BIT | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(MASK_BIT | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(MASK_BIT | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// XORs `buf` with the 4-byte masking key (RFC 6455 §5.3), eight bytes at a time.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let word = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Incremental decoder for the relay's frames. Bytes are appended with
/// [`WsDecoder::spare`]/[`WsDecoder::filled`] (or [`WsDecoder::push`]); events are
/// pulled with [`WsDecoder::next_event`] until it returns `None` ("need more").
pub struct WsDecoder {
    /// Received bytes; `buf[start..]` is not yet decoded.
    buf: Vec<u8>,
    /// First undecoded byte of `buf`.
    start: usize,
    /// The message being reassembled from fragments: (is text, bytes so far).
    partial: Option<(bool, Vec<u8>)>,
    /// A reassembled message handed out by the last call, dropped on the next.
    assembled: Vec<u8>,
    /// The event being returned is the reassembly, not a single frame.
    assembled_pending: bool,
    /// Largest message accepted: bounds what one connection can make us buffer.
    max_message: usize,
    /// Take masked frames (see `ACCEPT_MASKED`); read from the flag at construction.
    accept_masked: bool,
}

/// One parsed frame header with where its payload sits in `buf`.
struct Located {
    /// tungstenite's parsed header.
    header: FrameHeader,
    /// Payload start in `buf`.
    from: usize,
    /// Payload end in `buf`.
    to: usize,
}

impl WsDecoder {
    /// A decoder whose buffer starts with `capacity` bytes reserved.
    pub fn new(capacity: usize, max_message: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            start: 0,
            partial: None,
            assembled: Vec::new(),
            assembled_pending: false,
            max_message,
            accept_masked: ACCEPT_MASKED.load(Ordering::Relaxed),
        }
    }

    /// Appends received bytes (the handshake's leftovers, tests).
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Hands out the receive buffer for a read into its spare capacity, making room
    /// for at least `min_free` bytes. Give it back with [`WsDecoder::filled`].
    pub fn take_buffer(&mut self, min_free: usize) -> Vec<u8> {
        self.compact();
        if self.buf.capacity() - self.buf.len() < min_free {
            self.buf.reserve(min_free);
        }
        std::mem::take(&mut self.buf)
    }

    /// Returns the buffer after a read appended to it.
    pub fn filled(&mut self, buf: Vec<u8>) {
        self.buf = buf;
    }

    /// Drops buffer capacity beyond `keep` when nothing is pending, so an idle
    /// connection does not pin the memory of its largest message.
    pub fn shrink_idle(&mut self, keep: usize) {
        if self.start == self.buf.len() && self.partial.is_none() {
            self.buf.clear();
            self.start = 0;
            self.buf.shrink_to(keep);
            self.assembled = Vec::new();
        }
    }

    /// Moves undecoded bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// The next complete event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, FrameError> {
        loop {
            let Some(frame) = self.locate()? else {
                return Ok(None);
            };
            self.start = frame.to;
            let span = Span::Buffer {
                from: frame.from,
                to: frame.to,
            };
            let kind = match frame.header.opcode {
                OpCode::Control(control) => control_kind(control, &self.buf[frame.from..frame.to])?,
                OpCode::Data(data) => match self.data(data, &frame)? {
                    Some(kind) => kind,
                    None => continue,
                },
            };
            let span = if self.assembled_pending {
                Span::Assembled
            } else {
                span
            };
            self.assembled_pending = false;
            return Ok(Some(Event { kind, span }));
        }
    }

    /// The payload of an event returned by the last [`WsDecoder::next_event`].
    pub fn payload(&self, event: &Event) -> &[u8] {
        match event.span {
            Span::Buffer { from, to } => self.buf.get(from..to).unwrap_or(&[]),
            Span::Assembled => &self.assembled,
        }
    }

    /// Parses the next frame header and checks the whole frame is buffered.
    fn locate(&mut self) -> Result<Option<Located>, FrameError> {
        let mut cursor = Cursor::new(&self.buf[self.start..]);
        let parsed =
            FrameHeader::parse(&mut cursor).map_err(|e| FrameError::Header(e.to_string()))?;
        let Some((header, len)) = parsed else {
            return Ok(None);
        };
        check_header(&header, len, self.max_message, self.accept_masked)?;
        // `check_header` bounded `len` by `max_message`, a usize.
        let from = self.start + cursor.position() as usize;
        let to = from + len as usize;
        if self.buf.len() < to {
            return Ok(None);
        }
        // Only with `--accept-masked` (check_header refused it otherwise). Unmasked once:
        // `start` moves past the frame before the next `locate`.
        if let Some(mask) = header.mask {
            apply_mask(&mut self.buf[from..to], mask);
        }
        Ok(Some(Located { header, from, to }))
    }

    /// Tracks fragmentation; the message kind when `frame` completes a message.
    fn data(&mut self, data: Data, frame: &Located) -> Result<Option<EventKind>, FrameError> {
        let fin = frame.header.is_final;
        let payload = frame.from..frame.to;
        match (data, self.partial.as_mut()) {
            (Data::Continue, None) => Err(FrameError::Fragmentation),
            (Data::Continue, Some((is_text, bytes))) => {
                let is_text = *is_text;
                if bytes.len() + payload.len() > self.max_message {
                    return Err(FrameError::TooBig {
                        len: (bytes.len() + payload.len()) as u64,
                        max: self.max_message,
                    });
                }
                bytes.extend_from_slice(&self.buf[payload]);
                if !fin {
                    return Ok(None);
                }
                if let Some((_, bytes)) = self.partial.take() {
                    self.assembled = bytes;
                    self.assembled_pending = true;
                }
                Ok(Some(message_kind(is_text)))
            }
            (Data::Text | Data::Binary, Some(_)) => Err(FrameError::Fragmentation),
            (Data::Text | Data::Binary, None) if fin => Ok(Some(message_kind(data == Data::Text))),
            (Data::Text | Data::Binary, None) => {
                self.partial = Some((data == Data::Text, self.buf[payload].to_vec()));
                Ok(None)
            }
            (Data::Reserved(_), _) => Err(FrameError::ReservedOpcode),
        }
    }
}

/// The kind of a complete data message.
fn message_kind(is_text: bool) -> EventKind {
    if is_text {
        EventKind::Text
    } else {
        EventKind::Binary
    }
}

/// The kind of a control frame.
fn control_kind(control: Control, payload: &[u8]) -> Result<EventKind, FrameError> {
    match control {
        Control::Ping => Ok(EventKind::Ping),
        Control::Pong => Ok(EventKind::Pong),
        Control::Close => Ok(EventKind::Close(close_code(payload))),
        Control::Reserved(_) => Err(FrameError::ReservedOpcode),
    }
}

/// Rejects what a server may not send or what we will not buffer.
fn check_header(
    header: &FrameHeader,
    len: u64,
    max: usize,
    accept_masked: bool,
) -> Result<(), FrameError> {
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(FrameError::ReservedBits);
    }
    if header.mask.is_some() && !accept_masked {
        return Err(FrameError::Masked);
    }
    if let OpCode::Control(_) = header.opcode {
        if !header.is_final || len > 125 {
            return Err(FrameError::BadControl);
        }
    }
    if len > max as u64 {
        return Err(FrameError::TooBig { len, max });
    }
    Ok(())
}

/// The status code of a close payload, if it has one.
fn close_code(payload: &[u8]) -> Option<u16> {
    match payload {
        [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test view of an event: its kind and a copy of its bytes.
    #[derive(Debug, PartialEq, Eq)]
    enum WsEvent<'a> {
        Text(&'a [u8]),
        Binary(&'a [u8]),
        Ping(&'a [u8]),
        Close(Option<u16>),
    }

    /// Decodes one event into the test view (leaks the bytes: tests only).
    fn next(dec: &mut WsDecoder) -> Result<Option<WsEvent<'static>>, FrameError> {
        let Some(event) = dec.next_event()? else {
            return Ok(None);
        };
        let bytes: &'static [u8] = Box::leak(dec.payload(&event).to_vec().into_boxed_slice());
        Ok(Some(match event.kind {
            EventKind::Text => WsEvent::Text(bytes),
            EventKind::Binary => WsEvent::Binary(bytes),
            EventKind::Ping => WsEvent::Ping(bytes),
            EventKind::Pong => WsEvent::Ping(b"pong"),
            EventKind::Close(code) => WsEvent::Close(code),
        }))
    }

    /// An unmasked server frame, as the relay writes it.
    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else if payload.len() <= 0xFFFF {
            out.push(126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn encoded_frames_parse_with_tungstenite_and_unmask() {
        for len in [0usize, 1, 7, 125, 126, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut out = Vec::new();
            let mask = [0x12, 0x34, 0x56, 0x78];
            encode_frame(&mut out, SendOp::Binary, &payload, mask);
            let mut cursor = Cursor::new(&out[..]);
            let (header, parsed_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(parsed_len, len as u64);
            assert_eq!(header.mask, Some(mask));
            assert!(header.is_final);
            assert_eq!(header.opcode, OpCode::Data(Data::Binary));
            let start = cursor.position() as usize;
            assert_eq!(
                out.len(),
                start + len,
                "encoded length equals claimed length"
            );
            let mut body = out[start..].to_vec();
            apply_mask(&mut body, mask);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn mask_matches_bytewise_definition() {
        let mask = [1, 2, 3, 4];
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut fast = data.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn decoder_needs_more_then_yields_text() {
        let frame = server_frame(0x81, b"{\"a\":1}");
        let mut dec = WsDecoder::new(64, 1 << 20);
        for byte in &frame[..frame.len() - 1] {
            dec.push(&[*byte]);
            assert_eq!(next(&mut dec).unwrap(), None);
        }
        dec.push(&frame[frame.len() - 1..]);
        assert_eq!(next(&mut dec).unwrap(), Some(WsEvent::Text(b"{\"a\":1}")));
        assert_eq!(next(&mut dec).unwrap(), None);
    }

    #[test]
    fn decoder_reassembles_fragments_around_a_ping() {
        let mut bytes = server_frame(0x02, b"abc");
        bytes.extend(server_frame(0x89, b"hi"));
        bytes.extend(server_frame(0x00, b"def"));
        bytes.extend(server_frame(0x80, b"g"));
        let mut dec = WsDecoder::new(64, 1 << 20);
        dec.push(&bytes);
        assert_eq!(next(&mut dec).unwrap(), Some(WsEvent::Ping(b"hi")));
        assert_eq!(next(&mut dec).unwrap(), Some(WsEvent::Binary(b"abcdefg")));
        assert_eq!(next(&mut dec).unwrap(), None);
    }

    #[test]
    fn decoder_reads_close_code_and_large_lengths() {
        let big = vec![7u8; 70_000];
        let mut bytes = server_frame(0x82, &big);
        bytes.extend(server_frame(0x88, &[0x11, 0x34, b'x']));
        let mut dec = WsDecoder::new(16, 1 << 20);
        dec.push(&bytes);
        assert_eq!(next(&mut dec).unwrap(), Some(WsEvent::Binary(&big[..])));
        assert_eq!(next(&mut dec).unwrap(), Some(WsEvent::Close(Some(4404))));
    }

    #[test]
    fn decoder_rejects_what_a_server_may_not_send() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (server_frame(0xC1, b"x"), FrameError::ReservedBits),
            (server_frame(0x80, b"x"), FrameError::Fragmentation),
            (server_frame(0x09, b"x"), FrameError::BadControl),
            (
                server_frame(0x82, &[0; 300]),
                FrameError::TooBig { len: 300, max: 256 },
            ),
        ];
        for (bytes, want) in cases {
            let mut dec = WsDecoder::new(16, 256);
            dec.push(&bytes);
            assert_eq!(next(&mut dec).unwrap_err(), want);
        }
        let mut masked = Vec::new();
        encode_frame(&mut masked, SendOp::Text, b"x", [1, 2, 3, 4]);
        let mut dec = WsDecoder::new(16, 256);
        dec.push(&masked);
        assert_eq!(next(&mut dec).unwrap_err(), FrameError::Masked);
    }

    #[test]
    fn accept_masked_unmasks_what_a_raw_copy_relay_forwards() {
        let mut masked = Vec::new();
        encode_frame(&mut masked, SendOp::Binary, b"hello raw copy", [9, 8, 7, 6]);
        encode_frame(&mut masked, SendOp::Text, b"second", [1, 2, 3, 4]);
        let mut dec = WsDecoder::new(16, 256);
        dec.accept_masked = true;
        dec.push(&masked[..5]);
        assert_eq!(next(&mut dec).unwrap(), None, "a partial frame waits");
        dec.push(&masked[5..]);
        assert_eq!(
            next(&mut dec).unwrap(),
            Some(WsEvent::Binary(b"hello raw copy"))
        );
        assert_eq!(next(&mut dec).unwrap(), Some(WsEvent::Text(b"second")));
    }

    #[test]
    fn random_and_truncated_input_never_panics() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2_000 {
            let len = (seed % 64) as usize;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(seed as u8);
            }
            let mut dec = WsDecoder::new(16, 1024);
            dec.push(&bytes);
            for _ in 0..8 {
                match next(&mut dec) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
    }
}
