//! One upgraded connection at run time: an [`Outbox`] that any task of the worker can
//! append frames to (drained by one writer task), and a [`WsReader`] that yields whole
//! messages, answering pings and echoing closes itself. Reader and writer are separate
//! tasks: on io_uring a read is never raced against anything (monoio's io-cancel
//! notes), and a send never waits on a read.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::io::{OwnedReadHalf, OwnedWriteHalf};

use crate::tls::Stream;

/// The read half of a connection (plain or TLS).
type ReadHalf = OwnedReadHalf<Stream>;
/// The write half of a connection (plain or TLS).
type WriteHalf = OwnedWriteHalf<Stream>;

use crate::local::Signal;
use crate::net::Upgraded;
use crate::ws::frame::{
    encode_close, encode_frame, Event, EventKind, FrameError, SendOp, WsDecoder,
};

/// Largest message the reader buffers: the relay forwards at most 256 KiB by default;
/// 16 MiB leaves room for a relay configured higher without letting it exhaust memory.
const MAX_INCOMING: usize = 16 << 20;
/// Writer buffer kept between writes; a larger one (after a burst) is given back.
const KEEP_WRITE_BUFFER: usize = 256 * 1024;

/// How a connection ended, from its reader's point of view.
#[derive(Debug, thiserror::Error)]
pub enum ReadEnd {
    /// The relay sent a close frame with this code.
    #[error("closed by the relay ({0:?})")]
    Closed(Option<u16>),
    /// The TCP connection ended without a close frame.
    #[error("connection ended without a close frame")]
    Eof,
    /// A socket error.
    #[error("i/o: {0}")]
    Io(io::Error),
    /// The relay's bytes broke RFC 6455.
    #[error("protocol: {0}")]
    Protocol(#[from] FrameError),
}

impl ReadEnd {
    /// The error kind as the report counts it.
    pub fn kind(&self) -> String {
        match self {
            Self::Closed(Some(code)) => format!("close_{code}"),
            Self::Closed(None) => "close_no_code".into(),
            Self::Eof => "eof".into(),
            Self::Io(_) => "io".into(),
            Self::Protocol(_) => "protocol".into(),
        }
    }
}

/// Frames waiting to be written to one connection, coalesced into one buffer.
pub struct Outbox {
    /// Encoded frames not yet handed to the socket.
    buf: RefCell<Vec<u8>>,
    /// Wakes the writer when frames arrive (or the outbox closes).
    ready: Signal,
    /// Wakes a sender waiting for room after each write.
    room: Signal,
    /// No more frames are accepted (a close was queued, or the connection died).
    closed: Cell<bool>,
    /// The connection failed: sends are pointless.
    dead: Cell<bool>,
    /// xorshift state for masking keys (RFC 6455 wants them unpredictable to
    /// intermediaries, not secret; a per-connection random seed suffices).
    mask_state: Cell<u64>,
    /// Above this many queued bytes a paced sender waits (bounds memory when the
    /// relay is slower than the offered load).
    limit: usize,
}

impl Outbox {
    /// An empty outbox holding at most about `limit` bytes from paced senders.
    pub fn new(limit: usize) -> Rc<Self> {
        let mut seed = [0u8; 8];
        // Without OS randomness, a fixed odd seed still masks correctly.
        let seed = if getrandom::fill(&mut seed).is_ok() {
            u64::from_le_bytes(seed) | 1
        } else {
            0x9E37_79B9_7F4A_7C15
        };
        Rc::new(Self {
            buf: RefCell::new(Vec::new()),
            ready: Signal::default(),
            room: Signal::default(),
            closed: Cell::new(false),
            dead: Cell::new(false),
            mask_state: Cell::new(seed),
            limit,
        })
    }

    /// Queues one message; false when the outbox no longer accepts frames.
    pub fn send(&self, op: SendOp, payload: &[u8]) -> bool {
        if self.closed.get() {
            return false;
        }
        let mask = self.next_mask();
        encode_frame(&mut self.buf.borrow_mut(), op, payload, mask);
        self.ready.notify();
        true
    }

    /// Queues a close frame with `code`; nothing is accepted after it.
    pub fn close(&self, code: u16) {
        if self.closed.replace(true) {
            return;
        }
        let mask = self.next_mask();
        encode_close(&mut self.buf.borrow_mut(), code, mask);
        self.ready.notify();
    }

    /// Marks the connection failed and stops the writer.
    pub fn kill(&self) {
        self.dead.set(true);
        self.closed.set(true);
        self.ready.notify();
        self.room.notify();
    }

    /// Whether the connection failed.
    pub fn is_dead(&self) -> bool {
        self.dead.get()
    }

    /// Whether a close was queued or the connection failed.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Waits while more than `limit` bytes are queued.
    pub async fn wait_room(&self) {
        while self.buf.borrow().len() > self.limit && !self.dead.get() {
            self.room.wait().await;
        }
    }

    /// A fresh masking key.
    fn next_mask(&self) -> [u8; 4] {
        let mut x = self.mask_state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state.set(x);
        // The low 32 bits of the xorshift state; truncation is the point.
        (x as u32).to_ne_bytes()
    }
}

/// Writes everything queued in `outbox` until it closes and drains, or the socket fails.
pub async fn run_writer(mut half: WriteHalf, outbox: Rc<Outbox>) -> io::Result<()> {
    let mut spare = Vec::new();
    loop {
        if outbox.buf.borrow().is_empty() {
            if outbox.closed.get() {
                return Ok(());
            }
            outbox.ready.wait().await;
            continue;
        }
        std::mem::swap(&mut *outbox.buf.borrow_mut(), &mut spare);
        let (written, mut buf) = half.write_all(spare).await;
        buf.clear();
        buf.shrink_to(KEEP_WRITE_BUFFER);
        spare = buf;
        outbox.room.notify();
        if let Err(error) = written {
            outbox.kill();
            return Err(error);
        }
    }
}

/// Reads whole messages from one connection.
pub struct WsReader {
    /// The read half of the socket.
    half: ReadHalf,
    /// Frame decoder and receive buffer.
    decoder: WsDecoder,
    /// Where pongs and close echoes go.
    outbox: Rc<Outbox>,
    /// Bytes of free space asked for before each read.
    chunk: usize,
    /// Give buffer memory back between messages (idle runs: memory per connection).
    lean: bool,
}

/// A message the reader returned; read its bytes with [`WsReader::payload`].
#[derive(Clone, Copy, Debug)]
pub struct Message {
    /// Text or binary.
    pub is_text: bool,
    /// The decoder's handle on its bytes.
    event: Event,
}

/// Splits an upgraded connection into a reader (returned) and a writer task (spawned),
/// both sharing `outbox`.
pub fn start(upgraded: Upgraded, outbox: &Rc<Outbox>, chunk: usize, lean: bool) -> WsReader {
    let (read_half, write_half) = upgraded.stream.into_split();
    monoio::spawn(run_writer(write_half, Rc::clone(outbox)));
    let mut decoder = WsDecoder::new(if lean { 0 } else { chunk }, MAX_INCOMING);
    decoder.push(&upgraded.leftover);
    WsReader {
        half: read_half,
        decoder,
        outbox: Rc::clone(outbox),
        chunk,
        lean,
    }
}

impl WsReader {
    /// The next text or binary message; pings are answered and closes echoed here.
    pub async fn next(&mut self) -> Result<Message, ReadEnd> {
        loop {
            if let Some(event) = self.decoder.next_event()? {
                if let Some(message) = self.handle(event)? {
                    return Ok(message);
                }
                continue;
            }
            self.fill().await?;
        }
    }

    /// The bytes of the message last returned by [`WsReader::next`].
    pub fn payload(&self, message: &Message) -> &[u8] {
        self.decoder.payload(&message.event)
    }

    /// Control frames are handled here; data messages are passed up.
    fn handle(&mut self, event: Event) -> Result<Option<Message>, ReadEnd> {
        match event.kind {
            EventKind::Text | EventKind::Binary => Ok(Some(Message {
                is_text: event.kind == EventKind::Text,
                event,
            })),
            EventKind::Ping => {
                let payload = self.decoder.payload(&event).to_vec();
                self.outbox.send(SendOp::Pong, &payload);
                Ok(None)
            }
            EventKind::Pong => Ok(None),
            EventKind::Close(code) => {
                self.outbox.close(code.unwrap_or(1000));
                Err(ReadEnd::Closed(code))
            }
        }
    }

    /// Reads more bytes into the decoder.
    async fn fill(&mut self) -> Result<(), ReadEnd> {
        if self.lean {
            self.decoder.shrink_idle(0);
        }
        let buf = self.decoder.take_buffer(self.chunk);
        let (len, cap) = (buf.len(), buf.capacity());
        let (read, slice) = self.half.read(buf.slice_mut(len..cap)).await;
        self.decoder.filled(slice.into_inner());
        match read {
            Ok(0) => Err(ReadEnd::Eof),
            Ok(_) => Ok(()),
            Err(error) => Err(ReadEnd::Io(error)),
        }
    }
}

/// Counts a worker's open connections; dropping it (however the reader task ends)
/// counts the connection closed, so no early return can leak the count.
pub struct LiveGuard {
    /// The worker's count of open connections.
    live: Rc<Cell<usize>>,
}

impl LiveGuard {
    /// Counts one more open connection.
    pub fn new(live: &Rc<Cell<usize>>) -> Self {
        live.set(live.get() + 1);
        Self {
            live: Rc::clone(live),
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.set(self.live.get().saturating_sub(1));
    }
}
