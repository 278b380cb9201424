//! The transfer window and the two ends of the body pump, without I/O decisions:
//! `BodyIn` turns what the PUT sent (`Content-Length` or chunked) into payload bytes in
//! the window, and `BodyOut` frames the window's bytes for the GET response
//! (`Content-Length` or chunked) as a list of slices for one vectored write.

use std::collections::VecDeque;
use std::io::IoSlice;

use super::chunked::{ChunkError, ChunkedDecoder};
use crate::http::head::RequestHead;

/// Raw chunked bytes read from the PUT per `recv` before decoding into the window.
pub(super) const RAW_READ: usize = 64 * 1024;

/// Most framing segments queued for the GET: bounds the iovec list of one write.
const MAX_SEGMENTS: usize = 96;

/// How the PUT frames its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// `Content-Length: n` (or no body at all: 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The PUT's body framing, or why it cannot be relayed (answered 400 before any claim).
pub(super) fn framing_of(head: &RequestHead) -> Result<Framing, &'static str> {
    if let Some(te) = head.header("transfer-encoding") {
        let last = te.rsplit(',').next().unwrap_or_default().trim();
        if !last.eq_ignore_ascii_case("chunked") || te.contains(',') {
            return Err("unsupported Transfer-Encoding");
        }
        if head.header("content-length").is_some() {
            return Err("both Content-Length and Transfer-Encoding");
        }
        return Ok(Framing::Chunked);
    }
    match head.header("content-length") {
        None => Ok(Framing::Length(0)),
        Some(v) => v
            .parse::<u64>()
            .map(Framing::Length)
            .map_err(|_| "bad Content-Length"),
    }
}

/// Payload bytes between the PUT and the GET: `buf[start..]` is not yet written.
pub(super) struct Window {
    /// Allocated once at `cap`, never grown.
    buf: Vec<u8>,
    /// Bytes at the front already written to the GET.
    start: usize,
    /// Payload bytes the window holds at most (`--ticket-window`).
    cap: usize,
    /// The window's allocation, charged to the memory budget while it lives.
    _held: crate::memory::Held,
}

impl Window {
    /// An empty window of `cap` bytes.
    pub(super) fn new(cap: usize) -> Self {
        let buf = Vec::with_capacity(cap);
        Window {
            _held: crate::memory::Held::new(buf.capacity()),
            buf,
            start: 0,
            cap,
        }
    }

    /// Bytes held.
    pub(super) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes it may still take.
    pub(super) fn room(&self) -> usize {
        self.cap.saturating_sub(self.len())
    }

    /// The unwritten bytes.
    pub(super) fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// `want` bytes may be appended to the returned vector without reallocating
    /// (written bytes are moved out of the way when needed); call with `want <= room()`.
    pub(super) fn tail(&mut self, want: usize) -> &mut Vec<u8> {
        if self.buf.len() + want > self.cap && self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        &mut self.buf
    }

    /// `n` bytes were written to the GET.
    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Drop the last `n` bytes appended (the excess over `max_bytes`).
    pub(super) fn unappend(&mut self, n: usize) {
        let keep = self.buf.len().saturating_sub(n).max(self.start);
        self.buf.truncate(keep);
    }
}

/// What reading the PUT's body into the window found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoded {
    /// This many payload bytes were added.
    Bytes(usize),
    /// Nothing buffered: read the socket.
    NeedInput,
}

/// The PUT's body as it arrives: framing state plus raw bytes not yet decoded.
pub(super) struct BodyIn {
    /// Content-Length bytes still to come, or the chunked decoder.
    framing: InState,
    /// Raw bytes read but not yet decoded (the head's leftover, bytes read while
    /// waiting, chunked input).
    raw: Vec<u8>,
    /// Decoded prefix of `raw`.
    raw_start: usize,
    /// Payload bytes taken so far.
    pub(super) total: u64,
}

/// The framing state of `BodyIn`.
enum InState {
    /// Bytes still to come.
    Length(u64),
    /// The chunked grammar.
    Chunked(ChunkedDecoder),
}

impl BodyIn {
    /// A body with `framing`, some raw bytes already read.
    pub(super) fn new(framing: Framing, raw: Vec<u8>) -> Self {
        let framing = match framing {
            Framing::Length(n) => InState::Length(n),
            Framing::Chunked => InState::Chunked(ChunkedDecoder::default()),
        };
        BodyIn {
            framing,
            raw,
            raw_start: 0,
            total: 0,
        }
    }

    /// The whole body is in.
    pub(super) fn is_done(&self) -> bool {
        match &self.framing {
            InState::Length(left) => *left == 0,
            InState::Chunked(d) => d.is_done(),
        }
    }

    /// Raw bytes waiting to be decoded.
    fn raw_pending(&self) -> &[u8] {
        &self.raw[self.raw_start..]
    }

    /// Decode buffered raw bytes into at most `room` bytes of `out`.
    pub(super) fn decode_buffered(
        &mut self,
        out: &mut Vec<u8>,
        room: usize,
    ) -> Result<Decoded, ChunkError> {
        if self.raw_pending().is_empty() || self.is_done() {
            self.raw.clear();
            self.raw_start = 0;
            return Ok(Decoded::NeedInput);
        }
        let before = out.len();
        let used = match &mut self.framing {
            InState::Length(left) => {
                let take = self.raw[self.raw_start..]
                    .len()
                    .min(room)
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                out.extend_from_slice(&self.raw[self.raw_start..self.raw_start + take]);
                *left -= take as u64;
                take
            }
            InState::Chunked(d) => d.decode(&self.raw[self.raw_start..], out, room)?,
        };
        self.raw_start += used;
        let added = out.len() - before;
        self.total += added as u64;
        if used == 0 && added == 0 {
            return Ok(Decoded::NeedInput);
        }
        Ok(Decoded::Bytes(added))
    }

    /// Where the next socket read goes and how much it may take: straight into the
    /// window for a `Content-Length` body, into the raw buffer for a chunked one.
    pub(super) fn read_plan(&self, room: usize) -> ReadPlan {
        match &self.framing {
            InState::Length(left) => {
                ReadPlan::Direct(room.min(usize::try_from(*left).unwrap_or(usize::MAX)))
            }
            InState::Chunked(_) => ReadPlan::Raw(RAW_READ),
        }
    }

    /// The raw buffer, emptied, for a chunked read.
    pub(super) fn raw_buffer(&mut self) -> &mut Vec<u8> {
        self.raw.clear();
        self.raw_start = 0;
        &mut self.raw
    }

    /// `n` bytes were read straight into the window (Content-Length bodies).
    pub(super) fn took_direct(&mut self, n: usize) {
        if let InState::Length(left) = &mut self.framing {
            *left = left.saturating_sub(n as u64);
        }
        self.total += n as u64;
    }
}

/// Where a PUT read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadPlan {
    /// Into the window, at most this many bytes.
    Direct(usize),
    /// Into the raw buffer, at most this many bytes, then decode.
    Raw(usize),
}

/// One piece of the GET response still to write.
enum Segment {
    /// Framing bytes (the response head, a chunk header, a CRLF, the last chunk).
    Framing {
        /// The bytes.
        bytes: Vec<u8>,
        /// How many are written.
        sent: usize,
    },
    /// This many payload bytes from the front of the window.
    Payload(usize),
}

/// The GET response being written: what is framed and what is sent.
pub(super) struct BodyOut {
    /// True for a chunked response.
    chunked: bool,
    /// Pieces in write order.
    segments: VecDeque<Segment>,
    /// Window bytes already covered by `Payload` segments.
    framed: usize,
    /// The terminating piece was queued.
    finished: bool,
}

/// The GET response head for a body of `framing`.
pub(super) fn response_head(framing: Framing) -> Vec<u8> {
    let length = match framing {
        Framing::Length(n) => format!("Content-Length: {n}\r\n"),
        Framing::Chunked => "Transfer-Encoding: chunked\r\n".to_owned(),
    };
    format!(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n\
         Cache-Control: no-store\r\n{length}\r\n"
    )
    .into_bytes()
}

impl BodyOut {
    /// A response whose head is queued first.
    pub(super) fn new(framing: Framing) -> Self {
        let mut segments = VecDeque::new();
        segments.push_back(Segment::Framing {
            bytes: response_head(framing),
            sent: 0,
        });
        BodyOut {
            chunked: framing == Framing::Chunked,
            segments,
            framed: 0,
            finished: false,
        }
    }

    /// Frame window bytes not yet covered (one chunk for a chunked response).
    pub(super) fn frame(&mut self, window_len: usize) {
        let new = window_len.saturating_sub(self.framed);
        if new == 0 || self.segments.len() + 3 > MAX_SEGMENTS {
            return;
        }
        self.framed += new;
        if !self.chunked {
            if let Some(Segment::Payload(n)) = self.segments.back_mut() {
                *n += new;
            } else {
                self.segments.push_back(Segment::Payload(new));
            }
            return;
        }
        let header = format!("{new:x}\r\n").into_bytes();
        self.segments.push_back(Segment::Framing {
            bytes: header,
            sent: 0,
        });
        self.segments.push_back(Segment::Payload(new));
        self.segments.push_back(Segment::Framing {
            bytes: b"\r\n".to_vec(),
            sent: 0,
        });
    }

    /// Queue the end of the body (the last chunk when chunked), once.
    pub(super) fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.chunked {
            self.segments.push_back(Segment::Framing {
                bytes: b"0\r\n\r\n".to_vec(),
                sent: 0,
            });
        }
    }

    /// Anything left to write.
    pub(super) fn has_pending(&self) -> bool {
        !self.segments.is_empty()
    }

    /// The pending pieces as slices, payload taken from `window` in order.
    pub(super) fn slices<'a>(&'a self, window: &'a [u8]) -> Vec<IoSlice<'a>> {
        let mut out = Vec::with_capacity(self.segments.len());
        let mut at = 0;
        for seg in &self.segments {
            match seg {
                Segment::Framing { bytes, sent } => out.push(IoSlice::new(&bytes[*sent..])),
                Segment::Payload(n) => {
                    let end = (at + n).min(window.len());
                    out.push(IoSlice::new(&window[at..end]));
                    at = end;
                }
            }
        }
        out
    }

    /// `n` bytes were written; returns how many of them were payload (to consume from
    /// the window).
    pub(super) fn advance(&mut self, mut n: usize) -> usize {
        let mut payload = 0;
        while n > 0 {
            let Some(seg) = self.segments.front_mut() else {
                break;
            };
            let done = match seg {
                Segment::Framing { bytes, sent } => {
                    let m = n.min(bytes.len() - *sent);
                    *sent += m;
                    n -= m;
                    *sent == bytes.len()
                }
                Segment::Payload(left) => {
                    let m = n.min(*left);
                    *left -= m;
                    n -= m;
                    payload += m;
                    *left == 0
                }
            };
            if done {
                self.segments.pop_front();
            }
        }
        self.framed = self.framed.saturating_sub(payload);
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default `--ticket-window`.
    const WINDOW: usize = 256 * 1024;

    /// Drive a BodyOut over a window holding `data`, writing `step` bytes at a time.
    fn drain(out: &mut BodyOut, window: &mut Window, step: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        loop {
            out.frame(window.len());
            if !out.has_pending() {
                return wire;
            }
            let slices = out.slices(window.data());
            let flat: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
            let n = flat.len().min(step);
            wire.extend_from_slice(&flat[..n]);
            let payload = out.advance(n);
            window.consume(payload);
        }
    }

    #[test]
    fn chunked_response_framing() {
        let mut window = Window::new(WINDOW);
        window.tail(5).extend_from_slice(b"hello");
        let mut out = BodyOut::new(Framing::Chunked);
        let mut wire = drain(&mut out, &mut window, 3);
        window.tail(3).extend_from_slice(b"abc");
        wire.extend(drain(&mut out, &mut window, 7));
        out.finish();
        wire.extend(drain(&mut out, &mut window, 2));
        let text = String::from_utf8_lossy(&wire);
        assert!(
            text.ends_with("\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"),
            "{text}"
        );
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
    }

    #[test]
    fn length_response_passes_bytes() {
        let mut window = Window::new(WINDOW);
        window.tail(4).extend_from_slice(b"data");
        let mut out = BodyOut::new(Framing::Length(4));
        out.finish();
        let wire = drain(&mut out, &mut window, 1);
        let text = String::from_utf8_lossy(&wire);
        assert!(text.contains("Content-Length: 4\r\n"));
        assert!(text.ends_with("\r\n\r\ndata"), "{text}");
        assert_eq!(window.len(), 0);
    }

    #[test]
    fn window_compacts_and_never_grows() {
        let mut w = Window::new(WINDOW);
        w.tail(WINDOW).resize(WINDOW, 1);
        assert_eq!(w.room(), 0);
        w.consume(100);
        let cap = w.buf.capacity();
        w.tail(100).extend_from_slice(&[2; 100]);
        assert_eq!(w.len(), WINDOW);
        assert_eq!(w.buf.capacity(), cap);
    }

    #[test]
    fn chunked_input_into_window() {
        let mut body = BodyIn::new(Framing::Chunked, b"3\r\nabc\r\n0\r\n\r\n".to_vec());
        let mut out = Vec::new();
        assert_eq!(body.decode_buffered(&mut out, 10), Ok(Decoded::Bytes(3)));
        assert!(body.is_done());
        assert_eq!(out, b"abc");
    }
}
