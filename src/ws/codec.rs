//! RFC 6455 framing for the server side, pure and free of I/O.
//!
//! Owns the protocol rules for frames: decoding client frames (header checks, unmasking in
//! place, reassembly of fragmented messages, the message size limit, UTF-8 and close
//! payload validation) and encoding server frames. The connection code owns the bytes and
//! the socket; it feeds buffers to [`Decoder::decode`], acts on the [`Event`]s, and closes
//! with [`ProtocolError::close_code`] when the peer breaks the protocol.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode as WireOpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::ws::mask::apply_mask;

/// Largest payload of a control frame (§5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// Room for a close reason: a control payload less the 2-byte code (§5.5.1).
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;
/// Largest payload length a header may claim: the 64-bit form's top bit must be 0 (§5.2).
const MAX_PAYLOAD_LEN: u64 = i64::MAX as u64;
/// Reassembly capacity kept between messages; more is freed so idle connections stay small.
const KEEP_REASSEMBLY_CAPACITY: usize = 4 * 1024;

/// Kind of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text (opcode 1).
    Text,
    /// Arbitrary bytes (opcode 2).
    Binary,
}

/// What one decode step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete data message (reassembled if it was fragmented), unmasked; for Text,
    /// already UTF-8 validated.
    Message {
        /// Text or binary.
        kind: MessageKind,
        /// The whole message payload.
        payload: &'a [u8],
    },
    /// A ping with its (unmasked) payload, <=125 bytes. The engine answers it.
    Ping(&'a [u8]),
    /// A pong (payload ignored).
    Pong,
    /// A close frame. `code` None when the payload was empty. reason is validated UTF-8.
    Close {
        /// The peer's close code, already checked to be one a peer may send.
        code: Option<u16>,
        /// The peer's reason, possibly empty.
        reason: &'a str,
    },
}

/// Why a peer's bytes broke RFC 6455; each maps to the close code the relay sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A client frame without the mask bit (§5.1).
    #[error("client frame is not masked")]
    Unmasked,
    /// RSV1-3 set; no extension is ever negotiated (§5.2).
    #[error("reserved header bits set")]
    ReservedBits,
    /// Opcode 3-7 or 11-15 (§5.2).
    #[error("reserved opcode")]
    ReservedOpcode,
    /// A control frame with more than 125 payload bytes (§5.5).
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A control frame without FIN (§5.5).
    #[error("fragmented control frame")]
    ControlFragmented,
    /// A continuation frame with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress (§5.4).
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A text message or close reason that is not UTF-8 (§8.1).
    #[error("invalid UTF-8 in a text message or close reason")]
    BadUtf8,
    /// A data message over the configured size limit.
    #[error("message over the size limit")]
    TooBig,
    /// A close frame with a 1-byte payload (§5.5.1).
    #[error("close frame payload of 1 byte")]
    BadClosePayload,
    /// A close code a peer may not send (§7.4).
    #[error("close code not allowed from a peer")]
    BadCloseCode,
}

impl ProtocolError {
    /// 1002 for protocol errors, 1007 for `BadUtf8` (incl. bad UTF-8 close reason), 1009
    /// for `TooBig`.
    pub fn close_code(self) -> u16 {
        match self {
            ProtocolError::BadUtf8 => 1007,
            ProtocolError::TooBig => 1009,
            _ => 1002,
        }
    }
}

/// Per-connection decoder state. Small when idle: only the reassembly buffer of a
/// fragmented message in progress (an empty Vec when none; its capacity is freed if it grew
/// beyond 4 KiB once the message has completed).
#[derive(Debug, Default)]
pub struct Decoder {
    /// Unmasked payload of the fragmented message in progress. After the final fragment it
    /// still holds that message, because the returned event borrows it; the next
    /// [`Decoder::decode`] call clears it first.
    reassembly: Vec<u8>,
    /// Kind of the fragmented message in progress; `None` between messages.
    in_progress: Option<MessageKind>,
}

/// What a frame is, once its header has been checked against the decoder's state.
#[derive(Debug, Clone, Copy)]
enum FrameKind {
    /// First frame of a data message (the whole message when FIN is set).
    Start(MessageKind),
    /// A later frame of the fragmented message of this kind.
    Continuation(MessageKind),
    Ping,
    Pong,
    Close,
}

/// A checked header: what the frame is and where its payload lies in the buffer.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: FrameKind,
    fin: bool,
    key: [u8; 4],
    /// Where the payload starts.
    header_len: usize,
    /// Where the payload (and the frame) ends.
    frame_len: usize,
}

impl Decoder {
    /// A decoder between messages.
    pub fn new() -> Self {
        Self::default()
    }

    /// Free the reassembly buffer between messages (an idle connection keeps none).
    pub fn release_idle_buffers(&mut self) {
        if self.in_progress.is_none() && self.reassembly.capacity() > 0 {
            self.reassembly = Vec::new();
        }
    }

    /// Forget a message being reassembled and give its buffer back (the connection is
    /// closed and its bytes are discarded from now on).
    pub fn discard(&mut self) {
        self.in_progress = None;
        self.reassembly = Vec::new();
    }

    /// Heap bytes this decoder holds (its reassembly buffer), for the memory budget.
    pub fn held_bytes(&self) -> usize {
        self.reassembly.capacity()
    }

    /// True while a fragmented message is being reassembled.
    pub fn in_fragment(&self) -> bool {
        self.in_progress.is_some()
    }

    /// Decode at most one frame from the front of `buf` (client→server frames, which MUST
    /// be masked).
    ///
    /// * `Ok(None)`: `buf` does not yet hold one whole frame. Nothing was consumed and `buf`
    ///   is unchanged; call again with the same bytes plus more.
    /// * `Ok(Some((event, consumed)))`: one frame of `consumed` bytes was taken from the
    ///   front of `buf`, its payload unmasked in place. `event` is `None` for a non-final
    ///   data fragment (appended to the reassembly buffer). Payloads borrow `buf`
    ///   (unfragmented messages and control frames) or the reassembly buffer.
    /// * `Err(e)`: the stream is broken; close with `e.close_code()`.
    ///
    /// A data message whose total length would exceed `max_message` fails with
    /// [`ProtocolError::TooBig`] as soon as its header is in `buf`, before its payload.
    /// The reassembly buffer of a completed message is released at the start of the next
    /// call, so a caller that loops until `Ok(None)` never leaves one behind.
    pub fn decode<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        max_message: usize,
    ) -> Result<Option<(Option<Event<'a>>, usize)>, ProtocolError> {
        self.release_completed();
        let Some(header) = self.read_header(buf, max_message)? else {
            return Ok(None);
        };
        let Some(payload) = unmask_payload(buf, &header) else {
            return Ok(None);
        };
        let consumed = header.frame_len;
        let event = self.finish_frame(header, payload)?;
        Ok(Some((event, consumed)))
    }

    /// Clears the reassembly buffer of a message completed by the previous call (the event
    /// that borrowed it is gone by now) and frees it if it grew large.
    fn release_completed(&mut self) {
        if self.in_progress.is_some() {
            return;
        }
        if self.reassembly.capacity() > KEEP_REASSEMBLY_CAPACITY {
            self.reassembly = Vec::new();
        } else {
            self.reassembly.clear();
        }
    }

    /// Parses and checks the header at the front of `buf`; `None` if it is incomplete.
    fn read_header(&self, buf: &[u8], max_message: usize) -> Result<Option<Header>, ProtocolError> {
        // The first byte alone can condemn the frame, so garbage (say, a second HTTP
        // request) is rejected without waiting for a whole header.
        check_first_byte(buf)?;
        let mut cursor = Cursor::new(buf);
        let (raw, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            // Reading a slice cannot fail, so the only error parse can report is a reserved
            // opcode (which check_first_byte has already caught).
            Err(_) => return Err(ProtocolError::ReservedOpcode),
        };
        let kind = self.frame_kind(raw.opcode)?;
        let key = raw.mask.ok_or(ProtocolError::Unmasked)?;
        let payload_len = self.check_length(kind, raw.is_final, len, max_message)?;
        // A header is at most 14 bytes, so the position always fits.
        let header_len = cursor.position() as usize;
        // Only a limit near usize::MAX lets this overflow; no such frame could be buffered.
        let frame_len = header_len
            .checked_add(payload_len)
            .ok_or(ProtocolError::TooBig)?;
        Ok(Some(Header {
            kind,
            fin: raw.is_final,
            key,
            header_len,
            frame_len,
        }))
    }

    /// Maps the wire opcode to a frame kind, checking it against the message in progress.
    fn frame_kind(&self, opcode: WireOpCode) -> Result<FrameKind, ProtocolError> {
        match (opcode, self.in_progress) {
            (WireOpCode::Data(Data::Continue), Some(kind)) => Ok(FrameKind::Continuation(kind)),
            (WireOpCode::Data(Data::Continue), None) => Err(ProtocolError::UnexpectedContinuation),
            (WireOpCode::Data(Data::Text | Data::Binary), Some(_)) => {
                Err(ProtocolError::ExpectedContinuation)
            }
            (WireOpCode::Data(Data::Text), None) => Ok(FrameKind::Start(MessageKind::Text)),
            (WireOpCode::Data(Data::Binary), None) => Ok(FrameKind::Start(MessageKind::Binary)),
            (WireOpCode::Control(Control::Ping), _) => Ok(FrameKind::Ping),
            (WireOpCode::Control(Control::Pong), _) => Ok(FrameKind::Pong),
            (WireOpCode::Control(Control::Close), _) => Ok(FrameKind::Close),
            (
                WireOpCode::Data(Data::Reserved(_)) | WireOpCode::Control(Control::Reserved(_)),
                _,
            ) => Err(ProtocolError::ReservedOpcode),
        }
    }

    /// Checks the payload length the header claims and returns it as a `usize`. Data
    /// frames count towards the whole message, so an oversized message fails here, before
    /// any of its payload has to arrive.
    fn check_length(
        &self,
        kind: FrameKind,
        fin: bool,
        len: u64,
        max_message: usize,
    ) -> Result<usize, ProtocolError> {
        let already = match kind {
            FrameKind::Ping | FrameKind::Pong | FrameKind::Close => {
                return check_control_length(fin, len);
            }
            FrameKind::Start(_) => 0,
            FrameKind::Continuation(_) => self.reassembly.len(),
        };
        // §5.2 requires the top bit of a 64-bit length to be 0; no limit allows such a
        // length anyway, so it is reported as too big.
        if len > MAX_PAYLOAD_LEN {
            return Err(ProtocolError::TooBig);
        }
        let len = usize::try_from(len).map_err(|_| ProtocolError::TooBig)?;
        match already.checked_add(len) {
            Some(total) if total <= max_message => Ok(len),
            _ => Err(ProtocolError::TooBig),
        }
    }

    /// Turns a complete, unmasked frame into its event, updating the reassembly state.
    fn finish_frame<'a>(
        &'a mut self,
        header: Header,
        payload: &'a [u8],
    ) -> Result<Option<Event<'a>>, ProtocolError> {
        match header.kind {
            FrameKind::Ping => Ok(Some(Event::Ping(payload))),
            FrameKind::Pong => Ok(Some(Event::Pong)),
            FrameKind::Close => parse_close(payload).map(Some),
            // Unfragmented: zero copy, the event borrows the caller's buffer.
            FrameKind::Start(kind) if header.fin => message(kind, payload).map(Some),
            FrameKind::Start(kind) => {
                self.in_progress = Some(kind);
                self.reassembly.extend_from_slice(payload);
                check_text_so_far(kind, &self.reassembly, 0)?;
                Ok(None)
            }
            FrameKind::Continuation(kind) => {
                let appended_from = self.reassembly.len();
                self.reassembly.extend_from_slice(payload);
                if !header.fin {
                    check_text_so_far(kind, &self.reassembly, appended_from)?;
                    return Ok(None);
                }
                self.in_progress = None;
                message(kind, &self.reassembly).map(Some)
            }
        }
    }
}

/// Rejects reserved bits and reserved opcodes from the first byte alone, if there is one.
fn check_first_byte(buf: &[u8]) -> Result<(), ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(());
    };
    if first & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    match first & 0x0f {
        3..=7 | 11..=15 => Err(ProtocolError::ReservedOpcode),
        _ => Ok(()),
    }
}

/// Control frames must be final and carry at most 125 bytes (§5.5).
fn check_control_length(fin: bool, len: u64) -> Result<usize, ProtocolError> {
    if !fin {
        return Err(ProtocolError::ControlFragmented);
    }
    match usize::try_from(len) {
        Ok(len) if len <= MAX_CONTROL_PAYLOAD => Ok(len),
        _ => Err(ProtocolError::ControlTooLong),
    }
}

/// The frame's payload, unmasked in place; `None` (and `buf` untouched) until all of it is
/// in `buf`.
fn unmask_payload<'a>(buf: &'a mut [u8], header: &Header) -> Option<&'a [u8]> {
    let payload = buf.get_mut(header.header_len..header.frame_len)?;
    apply_mask(payload, header.key);
    Some(payload)
}

/// Fail fast on a fragmented text message (RFC 6455 §8.1): what has arrived so far must
/// be valid UTF-8 up to a possibly unfinished last character. Only the bytes appended at
/// `appended_from` are checked, from the character boundary before them, so a message
/// of many fragments costs linear time.
fn check_text_so_far(
    kind: MessageKind,
    text: &[u8],
    appended_from: usize,
) -> Result<(), ProtocolError> {
    if kind != MessageKind::Text {
        return Ok(());
    }
    let mut start = appended_from.saturating_sub(3).min(text.len());
    while start > 0 && text.get(start).is_some_and(|b| b & 0xc0 == 0x80) {
        start -= 1;
    }
    match std::str::from_utf8(text.get(start..).unwrap_or_default()) {
        Ok(_) => Ok(()),
        Err(e) if e.error_len().is_none() => Ok(()),
        Err(_) => Err(ProtocolError::BadUtf8),
    }
}

/// A complete data message, with text checked to be UTF-8.
fn message(kind: MessageKind, payload: &[u8]) -> Result<Event<'_>, ProtocolError> {
    if kind == MessageKind::Text && std::str::from_utf8(payload).is_err() {
        return Err(ProtocolError::BadUtf8);
    }
    Ok(Event::Message { kind, payload })
}

/// A close payload: empty, or a 2-byte code a peer may send followed by a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Event<'_>, ProtocolError> {
    match payload {
        [] => Ok(Event::Close {
            code: None,
            reason: "",
        }),
        [_] => Err(ProtocolError::BadClosePayload),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !peer_may_send(code) {
                return Err(ProtocolError::BadCloseCode);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::BadUtf8)?;
            Ok(Event::Close {
                code: Some(code),
                reason,
            })
        }
    }
}

/// Close codes a peer may put on the wire (§7.4): the defined ones except those reserved
/// for local use (1004-1006, 1015), and the library/application range 3000-4999.
fn peer_may_send(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Opcodes the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Text data frame (0x1).
    Text,
    /// Binary data frame (0x2).
    Binary,
    /// Connection close (0x8).
    Close,
    /// Ping (0x9).
    Ping,
    /// Pong (0xA).
    Pong,
}

impl OpCode {
    /// The 4-bit opcode on the wire.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }
}

/// Server→client frame header (FIN set, never masked) for a payload of `len` bytes: writes
/// 2, 4 or 10 bytes into `out` and returns how many.
pub fn encode_header(opcode: OpCode, len: usize, out: &mut [u8; 10]) -> usize {
    const FIN: u8 = 0x80;
    let first = FIN | opcode.bits();
    // §5.2: 7-bit length up to 125, 126 + 16-bit length, or 127 + 64-bit length; always the
    // shortest form. Bytes past the returned count are don't-care.
    if len <= MAX_CONTROL_PAYLOAD {
        *out = [first, len as u8, 0, 0, 0, 0, 0, 0, 0, 0];
        2
    } else if let Ok(len) = u16::try_from(len) {
        let [a, b] = len.to_be_bytes();
        *out = [first, 126, a, b, 0, 0, 0, 0, 0, 0];
        4
    } else {
        let [a, b, c, d, e, f, g, h] = (len as u64).to_be_bytes();
        *out = [first, 127, a, b, c, d, e, f, g, h];
        10
    }
}

/// A whole server→client close frame (header + code + reason). The reason is truncated on
/// a char boundary to fit the 123 bytes a control frame leaves after the code.
pub fn encode_close(code: u16, reason: &str) -> Vec<u8> {
    let reason = truncate_on_char_boundary(reason, MAX_CLOSE_REASON);
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode_frame(OpCode::Close, &payload)
}

/// A whole server→client frame (header + payload) in one Vec: for control frames and tests,
/// not the hot path. Control payloads must be at most 125 bytes; that is the caller's job.
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut head = [0u8; 10];
    let head_len = encode_header(opcode, payload.len(), &mut head);
    let mut frame = Vec::with_capacity(head_len + payload.len());
    frame.extend(head.iter().take(head_len));
    frame.extend_from_slice(payload);
    frame
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_on_char_boundary(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    // Index 0 is always a boundary, so this stops.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::mask::apply_mask_bytewise;

    const KEY: [u8; 4] = [0xa1, 0x5b, 0x07, 0xe3];
    const MAX: usize = 1 << 20;

    const TEXT: u8 = 0x1;
    const BINARY: u8 = 0x2;
    const CONT: u8 = 0x0;
    const CLOSE: u8 = 0x8;
    const PING: u8 = 0x9;
    const PONG: u8 = 0xA;

    /// A masked client frame with the given first byte (FIN, RSV and opcode bits).
    fn raw_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
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

    /// A masked client frame with FIN as given.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        raw_frame(if fin { 0x80 } else { 0 } | opcode, payload, KEY)
    }

    /// Just the header of a masked client frame claiming `len` payload bytes.
    fn header_only(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut full = frame(fin, opcode, &vec![0; len]);
        full.truncate(full.len() - len);
        full
    }

    /// An event with its borrows copied out, so tests can collect them.
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

    fn bin(payload: &[u8]) -> Owned {
        Owned::Message(MessageKind::Binary, payload.to_vec())
    }

    fn text(payload: &str) -> Owned {
        Owned::Message(MessageKind::Text, payload.as_bytes().to_vec())
    }

    /// The caller loop from the engine: decodes frames until `Ok(None)`, returning the
    /// events and the bytes consumed.
    fn drain(
        dec: &mut Decoder,
        buf: &mut [u8],
        max: usize,
    ) -> Result<(Vec<Owned>, usize), ProtocolError> {
        let mut events = Vec::new();
        let mut pos = 0;
        while let Some((ev, n)) = dec.decode(&mut buf[pos..], max)? {
            if let Some(ev) = ev {
                events.push(Owned::from(ev));
            }
            pos += n;
        }
        Ok((events, pos))
    }

    /// Decodes a whole stream with a fresh decoder, insisting every byte is consumed.
    fn decode_all(stream: &[u8], max: usize) -> Result<Vec<Owned>, ProtocolError> {
        let mut buf = stream.to_vec();
        let (events, consumed) = drain(&mut Decoder::new(), &mut buf, max)?;
        assert_eq!(consumed, stream.len(), "stream not fully consumed");
        Ok(events)
    }

    fn decode_err(stream: &[u8], max: usize) -> ProtocolError {
        match decode_all(stream, max) {
            Err(e) => e,
            Ok(events) => panic!("expected an error, got {events:?}"),
        }
    }

    fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.concat()
    }

    #[test]
    fn caller_loop_compiles_and_borrows_work() {
        let mut buf = concat(&[frame(true, TEXT, b"hi"), frame(true, PING, b"p")]);
        let mut dec = Decoder::new();
        let max = 1024;
        let mut seen = 0;
        let mut handle = |ev: Event<'_>| {
            assert!(matches!(ev, Event::Message { .. } | Event::Ping(_)));
            seen += 1;
        };
        let result: Result<(), ProtocolError> = (|| {
            let mut pos = 0;
            while let Some((ev, n)) = dec.decode(&mut buf[pos..], max)? {
                if let Some(ev) = ev {
                    handle(ev);
                }
                pos += n;
            }
            assert_eq!(pos, buf.len());
            Ok(())
        })();
        assert_eq!(result, Ok(()));
        assert_eq!(seen, 2);
    }

    #[test]
    fn single_frames_decode() {
        let stream = concat(&[
            frame(true, TEXT, b"hello"),
            frame(true, BINARY, &[0, 1, 2, 255]),
            frame(true, PING, b"are you there"),
            frame(true, PONG, b"ignored"),
            frame(true, CLOSE, &[0x03, 0xe8, b'b', b'y', b'e']),
        ]);
        assert_eq!(
            decode_all(&stream, MAX),
            Ok(vec![
                text("hello"),
                bin(&[0, 1, 2, 255]),
                Owned::Ping(b"are you there".to_vec()),
                Owned::Pong,
                Owned::Close(Some(1000), "bye".into()),
            ])
        );
    }

    #[test]
    fn empty_close_has_no_code() {
        assert_eq!(
            decode_all(&frame(true, CLOSE, b""), MAX),
            Ok(vec![Owned::Close(None, String::new())])
        );
    }

    #[test]
    fn unfragmented_payloads_borrow_the_callers_buffer() {
        for opcode in [BINARY, PING] {
            let mut buf = frame(true, opcode, b"zero copy");
            let range = buf.as_ptr_range();
            let mut dec = Decoder::new();
            let payload = match dec.decode(&mut buf, MAX) {
                Ok(Some((Some(Event::Message { payload, .. } | Event::Ping(payload)), _))) => {
                    payload
                }
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(payload, b"zero copy");
            assert!(range.contains(&payload.as_ptr()));
        }
    }

    #[test]
    fn payload_length_boundaries() {
        // 0 and 125 use the 7-bit length, 126 and 65535 the 16-bit, 65536 the 64-bit.
        for (len, header_len) in [(0, 6), (125, 6), (126, 8), (65535, 8), (65536, 14)] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let stream = frame(true, BINARY, &payload);
            assert_eq!(stream.len(), header_len + len, "client header for {len}");
            let mut buf = stream.clone();
            let mut dec = Decoder::new();
            match dec.decode(&mut buf, MAX) {
                Ok(Some((Some(Event::Message { kind, payload: got }), n))) => {
                    assert_eq!(kind, MessageKind::Binary);
                    assert_eq!(got, &payload[..]);
                    assert_eq!(n, stream.len());
                }
                other => panic!("len {len}: unexpected {other:?}"),
            }
            // One byte short of the frame is still incomplete.
            let mut short = stream[..stream.len() - 1].to_vec();
            assert_eq!(Decoder::new().decode(&mut short, MAX), Ok(None));
        }
    }

    #[test]
    fn control_payload_boundary() {
        let ping = vec![7u8; 125];
        assert_eq!(
            decode_all(&frame(true, PING, &ping), MAX),
            Ok(vec![Owned::Ping(ping)])
        );
        assert_eq!(
            decode_err(&frame(true, PING, &[7; 126]), MAX),
            ProtocolError::ControlTooLong
        );
    }

    #[test]
    fn fragmented_message_with_control_frames_interleaved() {
        let stream = concat(&[
            frame(false, TEXT, b"hel"),
            frame(true, PING, b"1"),
            frame(false, CONT, b""),
            frame(true, PONG, b""),
            frame(false, CONT, b"lo, "),
            frame(true, CLOSE, &[0x0f, 0xa0]),
            frame(true, CONT, b"world"),
            frame(false, BINARY, &[1]),
            frame(true, CONT, &[2, 3]),
        ]);
        assert_eq!(
            decode_all(&stream, MAX),
            Ok(vec![
                Owned::Ping(b"1".to_vec()),
                Owned::Pong,
                Owned::Close(Some(4000), String::new()),
                text("hello, world"),
                bin(&[1, 2, 3]),
            ])
        );
    }

    #[test]
    fn invalid_utf8_in_an_early_text_fragment_fails_at_once() {
        // 0xce 0xba is "κ"; 0xff is never valid: the first fragment already fails.
        let mut dec = Decoder::new();
        let mut first = frame(false, 0x1, &[0xce, 0xba, 0xff]);
        assert_eq!(
            dec.decode(&mut first, MAX).err(),
            Some(ProtocolError::BadUtf8)
        );
        // A character split across fragments is fine until the message ends.
        let mut dec = Decoder::new();
        let mut first = frame(false, 0x1, &[b'a', 0xce]);
        assert!(matches!(dec.decode(&mut first, MAX), Ok(Some((None, _)))));
        let mut bad = frame(false, 0x0, &[0x41]);
        assert_eq!(
            dec.decode(&mut bad, MAX).err(),
            Some(ProtocolError::BadUtf8)
        );
    }

    #[test]
    fn in_fragment_tracks_reassembly() {
        let mut dec = Decoder::new();
        assert!(!dec.in_fragment());
        let mut first = frame(false, BINARY, b"ab");
        let len = first.len();
        assert_eq!(dec.decode(&mut first, MAX), Ok(Some((None, len))));
        assert!(dec.in_fragment());
        let mut ping = frame(true, PING, b"");
        assert!(matches!(
            dec.decode(&mut ping, MAX),
            Ok(Some((Some(Event::Ping(_)), _)))
        ));
        assert!(dec.in_fragment());
        let mut last = frame(true, CONT, b"cd");
        let got = dec
            .decode(&mut last, MAX)
            .map(|r| r.map(|(ev, _)| ev.map(Owned::from)));
        assert_eq!(got, Ok(Some(Some(bin(b"abcd")))));
        assert!(!dec.in_fragment());
    }

    #[test]
    fn text_split_inside_a_char_is_valid_once_reassembled() {
        let euro = "€".as_bytes();
        let stream = concat(&[
            frame(false, TEXT, &euro[..1]),
            frame(false, CONT, &euro[1..2]),
            frame(true, CONT, &euro[2..]),
        ]);
        assert_eq!(decode_all(&stream, MAX), Ok(vec![text("€")]));
    }

    #[test]
    fn unmasked_is_rejected() {
        let mut stream = frame(true, BINARY, b"x");
        stream[1] &= 0x7f;
        stream.drain(2..6);
        assert_eq!(decode_err(&stream, MAX), ProtocolError::Unmasked);
        let mut ping = frame(true, PING, b"");
        ping[1] &= 0x7f;
        ping.truncate(2);
        assert_eq!(decode_err(&ping, MAX), ProtocolError::Unmasked);
    }

    #[test]
    fn reserved_bits_are_rejected() {
        for rsv in [0x40, 0x20, 0x10, 0x70] {
            let stream = raw_frame(0x80 | rsv | BINARY, b"x", KEY);
            assert_eq!(decode_err(&stream, MAX), ProtocolError::ReservedBits);
            // Known from the first byte alone.
            let mut first = stream[..1].to_vec();
            assert_eq!(
                Decoder::new().decode(&mut first, MAX),
                Err(ProtocolError::ReservedBits)
            );
        }
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for opcode in (3..=7).chain(11..=15) {
            let stream = raw_frame(0x80 | opcode, b"", KEY);
            assert_eq!(
                decode_err(&stream, MAX),
                ProtocolError::ReservedOpcode,
                "opcode {opcode}"
            );
            let mut first = stream[..1].to_vec();
            assert_eq!(
                Decoder::new().decode(&mut first, MAX),
                Err(ProtocolError::ReservedOpcode)
            );
        }
    }

    #[test]
    fn control_frames_must_be_short_and_final() {
        for opcode in [CLOSE, PING, PONG] {
            assert_eq!(
                decode_err(&frame(true, opcode, &[0x03, 0xe8].repeat(63)), MAX),
                ProtocolError::ControlTooLong
            );
            assert_eq!(
                decode_err(&frame(false, opcode, b""), MAX),
                ProtocolError::ControlFragmented
            );
        }
        // Rejected from the header alone, even when claiming a huge payload.
        let mut head = header_only(true, PING, 70_000);
        assert_eq!(
            Decoder::new().decode(&mut head, MAX),
            Err(ProtocolError::ControlTooLong)
        );
    }

    #[test]
    fn continuation_sequencing_is_enforced() {
        assert_eq!(
            decode_err(&frame(true, CONT, b"x"), MAX),
            ProtocolError::UnexpectedContinuation
        );
        assert_eq!(
            decode_err(&frame(false, CONT, b"x"), MAX),
            ProtocolError::UnexpectedContinuation
        );
        // After a fragmented message completes, a continuation is unexpected again.
        let done_then_cont = concat(&[
            frame(false, BINARY, b"a"),
            frame(true, CONT, b"b"),
            frame(true, CONT, b"c"),
        ]);
        assert_eq!(
            decode_err(&done_then_cont, MAX),
            ProtocolError::UnexpectedContinuation
        );
        for opcode in [TEXT, BINARY] {
            for fin in [true, false] {
                let stream = concat(&[frame(false, TEXT, b"a"), frame(fin, opcode, b"b")]);
                assert_eq!(
                    decode_err(&stream, MAX),
                    ProtocolError::ExpectedContinuation
                );
            }
        }
    }

    #[test]
    fn bad_utf8_is_rejected() {
        let bad = [0x68, 0xc3, 0x28];
        assert_eq!(
            decode_err(&frame(true, TEXT, &bad), MAX),
            ProtocolError::BadUtf8
        );
        let split = concat(&[frame(false, TEXT, &bad[..2]), frame(true, CONT, &bad[2..])]);
        assert_eq!(decode_err(&split, MAX), ProtocolError::BadUtf8);
        // A message truncated in the middle of a char.
        let cut = concat(&[
            frame(false, TEXT, b"x"),
            frame(true, CONT, &"€".as_bytes()[..2]),
        ]);
        assert_eq!(decode_err(&cut, MAX), ProtocolError::BadUtf8);
        // Binary messages are not checked.
        assert_eq!(
            decode_all(&frame(true, BINARY, &bad), MAX),
            Ok(vec![bin(&bad)])
        );
        // Nor are pings.
        assert_eq!(
            decode_all(&frame(true, PING, &bad), MAX),
            Ok(vec![Owned::Ping(bad.to_vec())])
        );
    }

    #[test]
    fn close_payloads_are_validated() {
        assert_eq!(
            decode_err(&frame(true, CLOSE, &[0x03]), MAX),
            ProtocolError::BadClosePayload
        );
        assert_eq!(
            decode_err(&frame(true, CLOSE, &[0x03, 0xe8, 0xff]), MAX),
            ProtocolError::BadUtf8
        );
        for code in [
            0u16, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                decode_err(&frame(true, CLOSE, &code.to_be_bytes()), MAX),
                ProtocolError::BadCloseCode,
                "code {code}"
            );
        }
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice("déjà vu".as_bytes());
            assert_eq!(
                decode_all(&frame(true, CLOSE, &payload), MAX),
                Ok(vec![Owned::Close(Some(code), "déjà vu".into())]),
                "code {code}"
            );
        }
    }

    #[test]
    fn close_codes_for_errors() {
        use ProtocolError::*;
        for e in [
            Unmasked,
            ReservedBits,
            ReservedOpcode,
            ControlTooLong,
            ControlFragmented,
            UnexpectedContinuation,
            ExpectedContinuation,
            BadClosePayload,
            BadCloseCode,
        ] {
            assert_eq!(e.close_code(), 1002, "{e:?}");
        }
        assert_eq!(BadUtf8.close_code(), 1007);
        assert_eq!(TooBig.close_code(), 1009);
    }

    #[test]
    fn message_limit_single_frame() {
        let limit = 300;
        let exact = vec![1u8; limit];
        assert_eq!(
            decode_all(&frame(true, BINARY, &exact), limit),
            Ok(vec![bin(&exact)])
        );
        assert_eq!(
            decode_err(&frame(true, BINARY, &[1; 301]), limit),
            ProtocolError::TooBig
        );
        assert_eq!(
            decode_err(&frame(false, TEXT, &[b'a'; 301]), limit),
            ProtocolError::TooBig
        );
        // From the header alone: none of the payload has arrived.
        let mut head = header_only(true, BINARY, limit + 1);
        assert_eq!(
            Decoder::new().decode(&mut head, limit),
            Err(ProtocolError::TooBig)
        );
        let mut head = header_only(true, BINARY, limit);
        assert_eq!(Decoder::new().decode(&mut head, limit), Ok(None));
        // A 64-bit length with its top bit set is never allowed, whatever the limit...
        let mut huge = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        huge.extend_from_slice(&KEY);
        assert_eq!(
            Decoder::new().decode(&mut huge, usize::MAX),
            Err(ProtocolError::TooBig)
        );
        // ...while the largest legal one just waits for its payload under a huge limit.
        let mut legal = vec![
            0x82,
            0x80 | 127,
            0x7f,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ];
        legal.extend_from_slice(&KEY);
        assert_eq!(Decoder::new().decode(&mut legal, usize::MAX), Ok(None));
        assert_eq!(
            Decoder::new().decode(&mut legal, MAX),
            Err(ProtocolError::TooBig)
        );
    }

    #[test]
    fn message_limit_reassembled() {
        let limit = 300;
        let exact = concat(&[
            frame(false, BINARY, &[1; 100]),
            frame(true, PING, b""),
            frame(false, CONT, &[2; 150]),
            frame(true, CONT, &[3; 50]),
        ]);
        let mut expected = vec![1u8; 100];
        expected.extend_from_slice(&[2; 150]);
        expected.extend_from_slice(&[3; 50]);
        assert_eq!(
            decode_all(&exact, limit),
            Ok(vec![Owned::Ping(Vec::new()), bin(&expected)])
        );

        let over = concat(&[
            frame(false, BINARY, &[1; 100]),
            frame(false, CONT, &[2; 150]),
            frame(true, CONT, &[3; 51]),
        ]);
        assert_eq!(decode_err(&over, limit), ProtocolError::TooBig);

        // The header of the fragment that tips it over is enough.
        let mut dec = Decoder::new();
        let mut first = frame(false, TEXT, &[b'a'; 250]);
        let len = first.len();
        assert_eq!(dec.decode(&mut first, limit), Ok(Some((None, len))));
        let mut head = header_only(false, CONT, 51);
        assert_eq!(dec.decode(&mut head, limit), Err(ProtocolError::TooBig));
    }

    #[test]
    fn every_split_point_waits_then_decodes_identically() {
        let stream = concat(&[
            frame(true, TEXT, "héllo".as_bytes()),
            frame(false, BINARY, &[9; 130]),
            frame(true, PING, b"ping"),
            frame(true, CONT, &[8; 3]),
            frame(true, BINARY, &[7; 300]),
            frame(true, PONG, b""),
            frame(true, CLOSE, &[0x03, 0xe9, b'x']),
        ]);
        let expected = decode_all(&stream, MAX).expect("valid stream");
        assert_eq!(expected.len(), 6);
        for split in 0..=stream.len() {
            let mut dec = Decoder::new();
            let mut buf = stream[..split].to_vec();
            let (mut events, pos) = drain(&mut dec, &mut buf, MAX).expect("prefix is valid");
            // Ok(None) left the unconsumed bytes exactly as they were.
            assert_eq!(&buf[pos..], &stream[pos..split], "split {split}");
            // The caller keeps the unconsumed bytes and appends the rest.
            let mut rest = stream[pos..].to_vec();
            let (more, n) = drain(&mut dec, &mut rest, MAX).expect("rest is valid");
            events.extend(more);
            assert_eq!(pos + n, stream.len(), "split {split}");
            assert_eq!(events, expected, "split {split}");
        }
    }

    #[test]
    fn empty_buffer_is_incomplete() {
        assert_eq!(Decoder::new().decode(&mut [], MAX), Ok(None));
    }

    #[test]
    fn decoder_is_small_and_frees_large_reassembly() {
        assert!(std::mem::size_of::<Decoder>() <= 32);
        let mut dec = Decoder::new();
        let mut big = concat(&[
            frame(false, BINARY, &[1; 6000]),
            frame(true, CONT, &[2; 6000]),
        ]);
        let (events, _) = drain(&mut dec, &mut big, MAX).expect("valid");
        assert_eq!(events.len(), 1);
        // drain ended on an Ok(None) call, which released the completed message.
        assert_eq!(dec.reassembly.capacity(), 0);

        // Small reassembly buffers are kept for reuse.
        let mut small = concat(&[
            frame(false, BINARY, &[1; 100]),
            frame(true, CONT, &[2; 100]),
        ]);
        let _ = drain(&mut dec, &mut small, MAX).expect("valid");
        assert!(dec.reassembly.is_empty());
        assert!(dec.reassembly.capacity() <= KEEP_REASSEMBLY_CAPACITY);
    }

    #[test]
    fn encode_header_matches_tungstenite_format() {
        let lens = [0, 1, 125, 126, 127, 65535, 65536, 1 << 32, usize::MAX];
        let ops = [
            (OpCode::Text, WireOpCode::Data(Data::Text)),
            (OpCode::Binary, WireOpCode::Data(Data::Binary)),
            (OpCode::Close, WireOpCode::Control(Control::Close)),
            (OpCode::Ping, WireOpCode::Control(Control::Ping)),
            (OpCode::Pong, WireOpCode::Control(Control::Pong)),
        ];
        for (ours, theirs) in ops {
            for len in lens {
                let mut out = [0u8; 10];
                let n = encode_header(ours, len, &mut out);
                let expected_n = match len {
                    0..=125 => 2,
                    126..=65535 => 4,
                    _ => 10,
                };
                assert_eq!(n, expected_n, "len {len}");
                let header = FrameHeader {
                    is_final: true,
                    rsv1: false,
                    rsv2: false,
                    rsv3: false,
                    opcode: theirs,
                    mask: None,
                };
                let mut formatted = Vec::new();
                header
                    .format(len as u64, &mut formatted)
                    .expect("vec write");
                assert_eq!(&out[..n], &formatted[..], "{ours:?} len {len}");
            }
        }
    }

    #[test]
    fn encode_frame_and_close() {
        assert_eq!(encode_frame(OpCode::Text, b"hi"), [0x81, 2, b'h', b'i']);
        assert_eq!(encode_frame(OpCode::Pong, b""), [0x8a, 0]);
        let big = encode_frame(OpCode::Binary, &[0; 200]);
        assert_eq!(&big[..4], &[0x82, 126, 0, 200]);
        assert_eq!(big.len(), 204);
        assert_eq!(encode_close(1000, ""), [0x88, 2, 0x03, 0xe8]);
        assert_eq!(
            encode_close(1009, "big"),
            [0x88, 5, 0x03, 0xf1, b'b', b'i', b'g']
        );
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        // 'é' is 2 bytes: 61 of them (122 bytes) fit in 123, the 62nd would not.
        let reason = "é".repeat(100);
        let frame = encode_close(1001, &reason);
        assert_eq!(frame[1] as usize, 2 + 122);
        assert_eq!(frame.len(), 2 + 2 + 122);
        assert_eq!(&frame[4..], "é".repeat(61).as_bytes());
        // Exactly 123 ASCII bytes fit whole.
        let frame = encode_close(1001, &"a".repeat(123));
        assert_eq!(frame[1], 125);
        let frame = encode_close(1001, &"a".repeat(124));
        assert_eq!(frame[1], 125);
    }
}
