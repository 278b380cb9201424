//! One upgraded WebSocket connection on its owner shard: its bounded outbound queue and
//! writer, its close handshake, and its reader task.
//!
//! Memory: an idle connection holds no read buffer. The reader waits for readiness, then
//! reads into the shard's scratch buffer; only a frame cut in half by the read boundary is
//! copied out into `partial`. There is no writer task while the queue drains at once: a
//! flush is one `sendmsg` of every queued slice, and only a socket that pushes back gets a
//! short-lived drain task that waits for writability.
//!
//! Bounds (PROTOCOL §2.1): a queued frame is charged at what it occupies (`OutFrame::charge`)
//! against `--max-queue` and the process's `--memory-limit` (`crate::memory`), and so are
//! the read-side buffers. A reader stops decoding as soon as a message fills the queue it
//! went to, so one read of tiny frames cannot overshoot a bound. The heartbeat's stall
//! clock (`Conn::stalled`) closes a connection whose queue does not drain with `1008`.
//! Pings and pongs go ahead of the backlog, and at most one pong is ever queued.
//!
//! Ordering: `send` only queues and marks the connection dirty. After each read batch the
//! shard flushes its dirty connections (`Shard::flush_after_read`): at once by default,
//! or with `--flush-after-reads N` at the end of the loop turn or after N batches; ticks,
//! handoffs and closes flush at once. A burst of messages for one receiver read in one
//! batch leaves in one vectored write.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::memory;
use crate::modes::{self, Resume, Role};
use crate::shard::InboxMsg;
use crate::shard::{ConnPermit, Shard};
use crate::stats::ConnKind;
use crate::sys;
use crate::ws::codec::{self, Decoder, Event, OpCode};
use crate::ws::payload::Payload;

thread_local! {
    /// Set when a message filled the queue it went to (a connection's outbound queue, or
    /// a lone pair side's early messages): the reader stops decoding and checks whether
    /// to pause. Thread-local, so per shard, and only its one running reader sets it.
    static QUEUE_FILLED: Cell<bool> = const { Cell::new(false) };
}

/// Tell the reader being served that a queue it feeds is full (or the process is at its
/// memory limit): it stops decoding after the current message.
pub fn signal_queue_filled() {
    QUEUE_FILLED.set(true);
}

/// Bytes asked of the kernel per read: the shard's scratch buffer size.
pub const READ_CHUNK: usize = 64 * 1024;

/// Full reads per readiness wake before yielding to other connections (fairness). One:
/// ordinary traffic ends a wake with a short read anyway; a connection with more than a
/// scratch buffer pending (a bulk sender, or a flood of pings) yields after each 64 KiB.
/// At 8, one client pinging at wire speed held its shard for ~1 ms a turn and tripled
/// other clients' p99 (docs/benchmarks.md, "Soak with attackers").
const READS_PER_WAKE: usize = 1;

/// Most queued frames gathered into one `sendmsg` (each frame is at most 4 slices).
const FRAMES_PER_WRITE: usize = 64;

/// A `partial` buffer that grew past this is released once it empties.
const PARTIAL_KEEP: usize = 4 * 1024;

/// A queue ring that grew past this many slots (a burst, or an early-message flush) is
/// given back as soon as it empties rather than at the next quiet tick: 64 slots is a
/// busy connection's working set, and its 7 KiB is not worth a reallocation per burst.
const RING_KEEP: usize = 64;

/// What one queued frame occupies besides its body: its slot in the queue's ring.
pub const FRAME_SLOT: usize = std::mem::size_of::<OutFrame>();

/// The opcode bits of a frame header's first byte.
const OPCODE_MASK: u8 = 0x0f;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Messages flow.
    Open,
    /// The relay (or the peer) sent a close frame at this instant; only the close
    /// handshake remains.
    Closing(Instant),
}

/// What a full outbound queue does to the sender that fills it (PROTOCOL §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The feeding reader pauses until the queue drains (TCP back-pressure).
    PauseSender,
    /// The receiver is closed with `1011 "phone backlog full"` (a binary is never stalled).
    CloseReceiver,
}

/// One queued outbound frame: header, optional shared prefix (an envelope's
/// `{"conn_id":…,"frame":`), the body, and a static suffix — written as separate slices so
/// an envelope is never assembled by copying.
#[derive(Debug)]
pub struct OutFrame {
    /// The WebSocket frame header (2, 4 or 10 bytes used).
    head: [u8; 10],
    /// Used length of `head`.
    head_len: u8,
    /// Envelope prefix shared by every message of one phone.
    prefix: Option<Rc<[u8]>>,
    /// The payload proper (or a whole pre-encoded frame when `head_len` is 0).
    body: Payload,
    /// Envelope suffix.
    suffix: &'static [u8],
    /// When the message this frame carries was read, for the `forward` histogram.
    read_at: Option<Instant>,
    /// The rendezvous style, for the per-mode `forward` histogram.
    mode: &'static str,
}

impl OutFrame {
    /// A data or control frame around `prefix + body + suffix`.
    pub fn message(
        op: OpCode,
        prefix: Option<Rc<[u8]>>,
        body: Payload,
        suffix: &'static [u8],
    ) -> Self {
        let len = prefix.as_ref().map_or(0, |p| p.len()) + body.len() + suffix.len();
        let mut head = [0u8; 10];
        let head_len = codec::encode_header(op, len, &mut head) as u8;
        OutFrame {
            head,
            head_len,
            prefix,
            body,
            suffix,
            read_at: None,
            mode: "",
        }
    }

    /// A whole pre-encoded frame (close frames).
    pub fn raw(frame: Vec<u8>) -> Self {
        OutFrame {
            head: [0; 10],
            head_len: 0,
            prefix: None,
            body: Payload::from(frame),
            suffix: b"",
            read_at: None,
            mode: "",
        }
    }

    /// Mark this frame as a relayed message read at `read_at` in rendezvous style `mode`.
    pub fn relayed(mut self, read_at: Instant, mode: &'static str) -> Self {
        self.read_at = Some(read_at);
        self.mode = mode;
        self
    }

    /// What this frame holds while queued: its ring slot and its body's allocation (the
    /// envelope prefix is shared by every frame of one phone and the suffix is static).
    /// Never zero: an empty message or a pong is not free.
    pub fn charge(&self) -> usize {
        FRAME_SLOT + self.body.allocated()
    }

    /// What a relayed message of `len` body bytes will be charged once queued.
    pub fn charge_for(len: usize) -> usize {
        FRAME_SLOT + Payload::allocated_for(len)
    }

    /// A ping or pong the relay built (a header of its own; never a raw frame).
    fn is_ping_or_pong(&self) -> bool {
        let op = self.head[0] & OPCODE_MASK;
        self.head_len > 0 && (op == OpCode::Ping.bits() || op == OpCode::Pong.bits())
    }

    /// A pong.
    fn is_pong(&self) -> bool {
        self.head_len > 0 && self.head[0] & OPCODE_MASK == OpCode::Pong.bits()
    }

    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        self.head_len as usize
            + self.prefix.as_ref().map_or(0, |p| p.len())
            + self.body.len()
            + self.suffix.len()
    }

    /// Push this frame's slices, skipping the first `skip` bytes already written.
    fn for_each_slice<'a>(&'a self, mut skip: usize, mut out: impl FnMut(&'a [u8])) {
        let parts: [&'a [u8]; 4] = [
            &self.head[..self.head_len as usize],
            self.prefix.as_deref().unwrap_or(b""),
            &self.body,
            self.suffix,
        ];
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            out(&part[skip..]);
            skip = 0;
        }
    }
}

/// Why a reader stops reading for a while (PROTOCOL §2 back-pressure).
#[derive(Debug)]
pub enum Pause {
    /// The connection it feeds holds at least this many bytes (`--max-queue`, or its
    /// share of `--memory-limit` while the process is at the limit): wait until it drains.
    Room(Rc<Conn>, usize),
    /// It is alone and its early messages fill their bound: wait for its peer.
    Arrival(Rc<Arrival>),
    /// The process is at its memory limit and this connection's own buffers (a message
    /// being reassembled, frames read but not decoded) hold more than its share: look
    /// again after this long (the stall clock closes it if that lasts).
    Pressure(Duration),
}

impl Pause {
    /// Wait until the reason may have gone (the reader checks again).
    async fn wait(&self) {
        match self {
            Pause::Room(target, limit) => target.wait_for_room(*limit).await,
            Pause::Arrival(arrival) => arrival.wait().await,
            Pause::Pressure(period) => monoio::time::sleep(*period).await,
        }
    }
}

/// A one-way latch a lone pair side waits on: released when its peer arrives or the
/// pair ends.
#[derive(Debug, Default)]
pub struct Arrival {
    /// Released.
    released: Cell<bool>,
    /// Readers waiting.
    waiters: RefCell<Vec<Waker>>,
}

impl Arrival {
    /// Release every waiter, now and later.
    pub fn release(&self) {
        self.released.set(true);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Wait for the release.
    async fn wait(&self) {
        poll_fn(|cx| {
            if self.released.get() {
                return Poll::Ready(());
            }
            push_waker(&mut self.waiters.borrow_mut(), cx.waker());
            Poll::Pending
        })
        .await
    }
}

/// Remember a waiter once: a paused reader looks up every tick and waits again, and must
/// not leave a waker behind each time.
fn push_waker(waiters: &mut Vec<Waker>, waker: &Waker) {
    if !waiters.iter().any(|w| w.will_wake(waker)) {
        waiters.push(waker.clone());
    }
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// The queue is empty.
    Done,
    /// The socket is full; wait for writability.
    Blocked,
    /// The socket failed; the queue was discarded.
    Broken,
}

/// A connection's peer address as logs print it (`-` once the socket is gone).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(Option<SocketAddr>);

impl PeerAddr {
    /// The client's IP address, for per-address budgets (`None` once the socket is gone).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.0.map(|addr| addr.ip())
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// One upgraded connection, owned by its shard (`Rc`, never crosses a core).
pub struct Conn {
    /// Key in the shard's connection table.
    pub key: Cell<usize>,
    /// The socket as the runtime sees it: only for readiness waits, and it closes the
    /// descriptor when the connection is dropped (`sys::readiness_handle`).
    pub stream: monoio::net::UnixStream,
    /// The socket's descriptor, for the raw non-blocking reads and writes.
    pub fd: RawFd,
    /// What this connection is in its rendezvous (binary, phone, pair side…).
    pub role: RefCell<Role>,
    /// The kind counted in `/stats` `connections`.
    pub kind: Cell<ConnKind>,
    /// Frames waiting for the socket.
    out: RefCell<VecDeque<OutFrame>>,
    /// What the frames in `out` occupy (`OutFrame::charge`, PROTOCOL §2.1): the measure
    /// of a full queue, charged to the process's memory budget too.
    queued: Cell<usize>,
    /// What this connection's read side holds (its `partial` buffer and its decoder's
    /// reassembly buffer), as last charged to the memory budget.
    held: Cell<usize>,
    /// Some bytes of `out` went out since the last tick (the stall clock's evidence).
    progressed: Cell<bool>,
    /// Since when the queue has not drained (nothing written for a whole tick, or above
    /// its share while the process is at its memory limit); closed with `1008 "not
    /// reading"` once that lasts `--stall-timeout`.
    stalled_since: Cell<Option<Instant>>,
    /// Bytes of the front frame already written.
    front_written: Cell<usize>,
    /// Open or closing.
    state: Cell<ConnState>,
    /// A drain task is waiting for writability.
    write_waiting: Cell<bool>,
    /// Listed in the shard's dirty list, awaiting a flush.
    dirty: Cell<bool>,
    /// The socket failed; nothing more is written.
    broken: Cell<bool>,
    /// The write side was shut down after the close frame went out.
    write_shut: Cell<bool>,
    /// The reader finished (the registry has forgotten this connection).
    reader_done: Cell<bool>,
    /// After a protocol error the stream cannot be parsed: bytes are discarded until EOF.
    discarding: Cell<bool>,
    /// `partial` may hold whole frames not yet decoded: decoding stopped when a queue it
    /// feeds filled, so the reader decides whether to pause before it decodes more.
    unparsed: Cell<bool>,
    /// Moved to another shard: this copy only has to go away.
    moved: Cell<bool>,
    /// What a full queue does to whoever feeds it.
    pub overflow: Cell<Overflow>,
    /// Last time any bytes arrived (heartbeat).
    pub last_rx: Cell<Instant>,
    /// The relay's heartbeat ping went out and nothing has arrived since. It went out at
    /// the first tick after `last_rx + ping_interval`, so the pong deadline is counted
    /// from then (`tick::heartbeat`).
    pub ping_pending: Cell<bool>,
    /// The reader is paused by back-pressure (the heartbeat leaves it alone).
    pub paused: Cell<bool>,
    /// The close code the client sent (1005 when its close frame had none); None while
    /// it has sent none, which a peer reads as 1006.
    pub peer_close: Cell<Option<u16>>,
    /// The relay closed this connection for a fault of its own making (protocol error,
    /// heartbeat): its peer is told the connection failed.
    pub failed: Cell<bool>,
    /// Bytes of a frame cut by the read boundary (and, before the reader's first read,
    /// the bytes that came with the request head).
    partial: Cell<Vec<u8>>,
    /// Frame decoder and fragment reassembly.
    decoder: RefCell<Decoder>,
    /// Readers paused on this connection's full queue.
    drain_waiters: RefCell<Vec<Waker>>,
    /// A move to another shard asked for by the rendezvous (session joins); boxed, as
    /// it is rare and every idle connection would otherwise carry its size.
    transfer: Cell<Option<Box<(usize, Resume)>>>,
    /// Counts this connection against `--max-connections` until dropped (or moved).
    permit: RefCell<Option<ConnPermit>>,
    /// The client's address when it is not the socket peer: learnt from a PROXY header
    /// or `X-Forwarded-For` (PROTOCOL §1.2). Boxed and set only then, so a direct
    /// connection pays 8 bytes for it (the `Rc<Conn>` stays in its 320-byte class).
    client: std::cell::OnceCell<Box<SocketAddr>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("fd", &self.fd)
            .field("kind", &self.kind.get())
            .field("state", &self.state.get())
            .finish()
    }
}

impl Drop for Conn {
    /// Whatever is still charged goes back to the budget (the queue and buffers go with
    /// the connection).
    fn drop(&mut self) {
        memory::release(self.queued.get() + self.held.get());
    }
}

impl Conn {
    /// Wrap an upgraded socket.
    pub fn new(socket: OwnedFd, kind: ConnKind, permit: ConnPermit) -> io::Result<Rc<Self>> {
        let fd = socket.as_raw_fd();
        let stream = sys::readiness_handle(socket)?;
        Ok(Rc::new(Conn {
            key: Cell::new(usize::MAX),
            stream,
            fd,
            role: RefCell::new(Role::Pending),
            kind: Cell::new(kind),
            out: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            held: Cell::new(0),
            progressed: Cell::new(false),
            stalled_since: Cell::new(None),
            front_written: Cell::new(0),
            state: Cell::new(ConnState::Open),
            write_waiting: Cell::new(false),
            dirty: Cell::new(false),
            broken: Cell::new(false),
            write_shut: Cell::new(false),
            reader_done: Cell::new(false),
            discarding: Cell::new(false),
            unparsed: Cell::new(false),
            moved: Cell::new(false),
            overflow: Cell::new(Overflow::PauseSender),
            last_rx: Cell::new(Instant::now()),
            ping_pending: Cell::new(false),
            paused: Cell::new(false),
            peer_close: Cell::new(None),
            failed: Cell::new(false),
            partial: Cell::new(Vec::new()),
            decoder: RefCell::new(Decoder::new()),
            drain_waiters: RefCell::new(Vec::new()),
            transfer: Cell::new(None),
            permit: RefCell::new(Some(permit)),
            client: std::cell::OnceCell::new(),
        }))
    }

    /// Record the client's address when a balancer stands between it and the socket
    /// (PROTOCOL §1.2); [`Conn::peer`] then answers with it. Only the first call counts.
    pub fn set_client(&self, client: SocketAddr) {
        let _ = self.client.set(Box::new(client));
    }

    /// Open or closing.
    pub fn state(&self) -> ConnState {
        self.state.get()
    }

    /// True while messages may still be queued to this connection.
    pub fn is_open(&self) -> bool {
        self.state.get() == ConnState::Open && !self.broken.get()
    }

    /// What the queue holds (`OutFrame::charge` of each queued frame).
    pub fn queued_bytes(&self) -> usize {
        self.queued.get()
    }

    /// What this connection's read side holds (a cut frame, frames not yet decoded, a
    /// message being reassembled), as charged.
    pub fn held_bytes(&self) -> usize {
        self.held.get()
    }

    /// Everything charged to this connection: its queue and its read-side buffers.
    pub fn charged_bytes(&self) -> usize {
        self.queued.get() + self.held.get()
    }

    /// A pong is queued and the socket pushed back: the client sends pings without
    /// reading the answers (control frames sit at the front, so a look at the first few
    /// frames finds it).
    pub fn owes_unwritten_pong(&self) -> bool {
        self.write_waiting.get() && self.out.borrow().iter().take(3).any(OutFrame::is_pong)
    }

    /// True when the queue is at its bound: whoever feeds it must wait.
    pub fn is_full(&self, max_queue: usize) -> bool {
        self.queued.get() >= max_queue
    }

    /// Account a frame entering the queue.
    fn charge_frame(&self, frame: &OutFrame) {
        let charge = frame.charge();
        self.queued.set(self.queued.get() + charge);
        memory::charge(charge);
    }

    /// Account a frame leaving the queue (written or discarded).
    fn release_frame(&self, frame: &OutFrame) {
        let charge = frame.charge();
        self.queued.set(self.queued.get().saturating_sub(charge));
        memory::release(charge);
    }

    /// Charge the read side at what it holds now (after a read batch, or a release).
    fn recharge_held(&self) {
        let partial = self.partial.take();
        let now = memory::footprint(partial.capacity())
            + memory::footprint(self.decoder.borrow().held_bytes());
        self.partial.set(partial);
        let before = self.held.replace(now);
        if now >= before {
            memory::charge(now - before);
        } else {
            memory::release(before - now);
        }
    }

    /// The stall clock, run by the heartbeat once per tick: true when the queue has not
    /// drained for `stall_timeout` — nothing written for whole ticks, or above `share`
    /// while the process is at its memory limit (`share` is None then not).
    pub fn stalled(&self, now: Instant, stall_timeout: Duration, share: Option<usize>) -> bool {
        let progressed = self.progressed.replace(false);
        let waiting = !self.out.borrow().is_empty();
        let over_share = share.is_some_and(|share| self.charged_bytes() > share);
        if !(waiting && !progressed || over_share) {
            self.stalled_since.set(None);
            return false;
        }
        let since = *self.stalled_since.get().get_or_insert(now);
        self.stalled_since.set(Some(since));
        now.saturating_duration_since(since) >= stall_timeout
    }

    /// Queue a frame. Returns false (and queues nothing) once the connection is closing.
    /// The frame leaves at the shard's next flush.
    pub fn send(self: &Rc<Self>, shard: &Shard, frame: OutFrame) -> bool {
        if !self.is_open() {
            return false;
        }
        self.enqueue(shard, frame);
        true
    }

    /// Queue without the open check (close frames, pongs during closing).
    fn enqueue(self: &Rc<Self>, shard: &Shard, frame: OutFrame) {
        self.charge_frame(&frame);
        self.out.borrow_mut().push_back(frame);
        if self.queued.get() >= shard.config().max_queue || memory::over_limit() {
            signal_queue_filled();
        }
        self.mark_dirty(shard);
    }

    /// List this connection for the shard's next flush.
    fn mark_dirty(self: &Rc<Self>, shard: &Shard) {
        if !self.dirty.replace(true) {
            shard.mark_dirty(self.clone());
        }
    }

    /// Where a ping or pong goes: ahead of every message not yet begun (RFC 6455 §5.5
    /// lets control frames interleave between messages), so a slow reader behind a long
    /// backlog still hears the relay's ping and gets its pong; but after the frame being
    /// written and after raw bytes (the `101`, a moved connection's unsent bytes).
    fn control_slot(&self, out: &VecDeque<OutFrame>) -> usize {
        let started = usize::from(self.front_written.get() > 0);
        started
            + out
                .iter()
                .skip(started)
                .take_while(|f| f.head_len == 0)
                .count()
    }

    /// Queue a ping or pong ahead of the backlog. A pong replaces a pong still waiting:
    /// the relay answers the most recent ping only and holds at most one pong.
    fn enqueue_control(self: &Rc<Self>, shard: &Shard, frame: OutFrame) {
        {
            let mut out = self.out.borrow_mut();
            let slot = self.control_slot(&out);
            let waiting_pong = out
                .iter()
                .enumerate()
                .skip(slot)
                .take_while(|(_, f)| f.is_ping_or_pong())
                .find(|(_, f)| f.is_pong())
                .map(|(i, _)| i);
            if let (true, Some(i)) = (frame.is_pong(), waiting_pong) {
                self.charge_frame(&frame);
                let old = std::mem::replace(&mut out[i], frame);
                self.release_frame(&old);
                return;
            }
            self.charge_frame(&frame);
            out.insert(slot, frame);
        }
        self.mark_dirty(shard);
    }

    /// Answer a client's ping (its payload echoed), replacing a pong not yet written.
    pub fn answer_ping(self: &Rc<Self>, shard: &Shard, payload: &[u8]) {
        if !self.is_open() {
            return;
        }
        let pong = OutFrame::message(OpCode::Pong, None, Payload::copy_of(payload), b"");
        self.enqueue_control(shard, pong);
    }

    /// Queue the `101 Switching Protocols` response as the very first bytes, so the
    /// registry decision and the upgrade happen with no await in between.
    pub fn send_handshake(self: &Rc<Self>, shard: &Shard, response: Vec<u8>) {
        self.enqueue(shard, OutFrame::raw(response));
    }

    /// Start the close handshake: queue a close frame after everything already queued.
    pub fn close(self: &Rc<Self>, shard: &Shard, code: u16, reason: &str) {
        if self.state.get() != ConnState::Open {
            return;
        }
        tracing::debug!(peer = %self.peer(), kind = self.kind.get().name(), code, reason, "closing");
        self.state.set(ConnState::Closing(Instant::now()));
        if self.broken.get() {
            return;
        }
        self.enqueue(shard, OutFrame::raw(codec::encode_close(code, reason)));
    }

    /// Close now, discarding queued frames not yet started (a receiver that cannot keep
    /// up): the close frame would otherwise wait behind the backlog it is about.
    pub fn close_discarding(self: &Rc<Self>, shard: &Shard, code: u16, reason: &str) {
        {
            let mut out = self.out.borrow_mut();
            let keep = usize::from(self.front_written.get() > 0);
            while out.len() > keep {
                if let Some(dropped) = out.pop_back() {
                    self.release_frame(&dropped);
                }
            }
            if out.capacity() > RING_KEEP {
                out.shrink_to(RING_KEEP);
            }
        }
        self.close(shard, code, reason);
        self.wake_drain_waiters();
    }

    /// Close a connection that does not drain what it is sent (PROTOCOL §2.1): its
    /// backlog and its read-side buffers go at once, whatever it sends from now on is
    /// discarded, and it gets `1008 "not reading"` (if even that cannot be written, the
    /// close linger shuts the socket).
    pub fn close_not_reading(self: &Rc<Self>, shard: &Shard) {
        self.failed.set(true);
        self.discarding.set(true);
        self.unparsed.set(false);
        self.partial.set(Vec::new());
        self.decoder.borrow_mut().discard();
        self.recharge_held();
        self.close_discarding(shard, 1008, "not reading");
    }

    /// Send a heartbeat (or takeover-probe) ping, ahead of any backlog.
    pub fn ping(self: &Rc<Self>, shard: &Shard) {
        if !self.is_open() {
            return;
        }
        let ping = OutFrame::message(OpCode::Ping, None, Payload::empty(), b"");
        self.enqueue_control(shard, ping);
        self.ping_pending.set(true);
    }

    /// Kill the socket outright (close handshake timed out, or shutdown deadline): the
    /// reader sees EOF and a pending writability wait wakes with an error.
    pub fn abort(&self) {
        self.broken.set(true);
        if !self.moved.get() {
            sys::shutdown_both(self.fd);
        }
    }

    /// Write what the socket takes now. Records `forward` latency for relayed frames
    /// that went out whole.
    pub fn flush(&self, shard: &Shard) -> Flushed {
        let result = loop {
            if self.broken.get() {
                self.discard_queue();
                break Flushed::Broken;
            }
            if self.out.borrow().is_empty() {
                break Flushed::Done;
            }
            match self.write_some() {
                Ok(n) => self.advance(shard, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Flushed::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.abort();
                }
            }
        };
        self.after_flush();
        result
    }

    /// One `sendmsg` over the front of the queue.
    fn write_some(&self) -> io::Result<usize> {
        let out = self.out.borrow();
        // On the stack: a flush allocates nothing.
        let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE * 4];
        let mut used = 0;
        let mut skip = self.front_written.get();
        for frame in out.iter().take(FRAMES_PER_WRITE) {
            frame.for_each_slice(skip, |part| {
                if let Some(slot) = slices.get_mut(used) {
                    *slot = IoSlice::new(part);
                    used += 1;
                }
            });
            skip = 0;
        }
        sys::send_vectored(self.fd, &slices[..used])
    }

    /// Account `n` written bytes: pop frames that went out whole.
    fn advance(&self, shard: &Shard, mut n: usize) {
        if n > 0 {
            self.progressed.set(true);
        }
        let mut out = self.out.borrow_mut();
        let mut stats = shard.stats.borrow_mut();
        let mut now = None;
        while let Some(front) = out.front() {
            let left = front.wire_len() - self.front_written.get();
            if n < left {
                self.front_written.set(self.front_written.get() + n);
                return;
            }
            n -= left;
            self.front_written.set(0);
            if let Some(read_at) = front.read_at {
                let now = *now.get_or_insert_with(Instant::now);
                let micros = now.saturating_duration_since(read_at).as_micros() as u64;
                stats.record_forward(front.mode, micros);
                stats.message_out(front.body.len());
            }
            if let Some(sent) = out.pop_front() {
                self.release_frame(&sent);
            }
        }
        if out.is_empty() && out.capacity() > RING_KEEP {
            *out = VecDeque::new();
        }
    }

    /// Forget everything queued (the socket is gone).
    fn discard_queue(&self) {
        let mut out = self.out.borrow_mut();
        for frame in out.drain(..) {
            self.release_frame(&frame);
        }
        self.front_written.set(0);
    }

    /// Wake paused feeders below the low-water mark; half-close once a close went out.
    fn after_flush(&self) {
        if self.out.borrow().len() < 2 || self.broken.get() {
            self.wake_drain_waiters();
        }
        if self.out.borrow().is_empty()
            && matches!(self.state.get(), ConnState::Closing(_))
            && !self.moved.get()
            && !self.write_shut.replace(true)
        {
            sys::shutdown_write(self.fd);
        }
    }

    /// Resume every reader paused on this queue.
    fn wake_drain_waiters(&self) {
        for waker in self.drain_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Ask for this connection to move to shard `owner` as soon as the message being
    /// handled is done; it resumes there through `modes::on_resume(resume)`. The caller
    /// has already taken it out of every registry here (its role is `Detached`).
    pub fn request_transfer(&self, owner: usize, resume: Resume) {
        self.transfer.set(Some(Box::new((owner, resume))));
    }

    /// True once the rendezvous asked for a move (`request_transfer`).
    fn transfer_requested(&self) -> bool {
        let moving = self.transfer.take();
        let requested = moving.is_some();
        self.transfer.set(moving);
        requested
    }

    /// The client's address, for logs (never its payloads) and per-address budgets: the
    /// one [`Conn::set_client`] recorded behind a balancer, else asked of the socket only
    /// when needed, so a direct connection does not carry it.
    pub fn peer(&self) -> PeerAddr {
        match self.client.get() {
            Some(client) => PeerAddr(Some(**client)),
            None => PeerAddr(sys::peer_addr(self.fd)),
        }
    }

    /// Hand the reader the bytes that came with the request head (before it starts).
    pub fn set_initial(&self, initial: Vec<u8>) {
        if !initial.is_empty() {
            self.partial.set(initial);
        }
    }

    /// True while bytes of a cut frame (or that came with the head) wait in `partial`.
    fn has_partial(&self) -> bool {
        let partial = self.partial.take();
        let has = !partial.is_empty();
        self.partial.set(partial);
        has
    }

    /// Give back the buffers of a connection with nothing queued and nothing cut: the
    /// outbound queue's ring (4 × 112 B once anything was ever sent, the `101` included)
    /// and an empty `partial`. The heartbeat calls this for connections quiet for a
    /// tick, so an idle connection costs only its `Conn` and reader task while a busy
    /// one keeps its ring and allocates nothing per message.
    pub fn release_idle_buffers(&self) {
        {
            let mut out = self.out.borrow_mut();
            if out.is_empty() && out.capacity() > 0 && !self.write_waiting.get() {
                *out = VecDeque::new();
            }
        }
        let partial = self.partial.take();
        if !partial.is_empty() {
            self.partial.set(partial);
        }
        self.decoder.borrow_mut().release_idle_buffers();
        self.recharge_held();
    }

    /// Every byte still queued, in order (the front frame from where it stopped).
    fn take_unsent(&self) -> Vec<u8> {
        let wire: usize = self.out.borrow().iter().map(OutFrame::wire_len).sum();
        let mut bytes = Vec::with_capacity(wire.saturating_sub(self.front_written.get()));
        let mut skip = self.front_written.get();
        for frame in self.out.borrow().iter() {
            frame.for_each_slice(skip, |part| bytes.extend_from_slice(part));
            skip = 0;
        }
        self.discard_queue();
        bytes
    }

    /// Called by the shard when it takes this connection off its dirty list.
    pub fn take_dirty(&self) -> bool {
        self.dirty.replace(false)
    }

    /// A drain task is needed (and none runs yet).
    pub fn claim_drain(&self) -> bool {
        !self.write_waiting.replace(true)
    }

    /// Wait until this connection's queue has room (or it is gone) — the pause of a
    /// reader that feeds it.
    pub async fn wait_for_room(&self, max_queue: usize) {
        poll_fn(|cx| {
            if !self.is_full(max_queue) || self.broken.get() || self.reader_done.get() {
                return Poll::Ready(());
            }
            push_waker(&mut self.drain_waiters.borrow_mut(), cx.waker());
            Poll::Pending
        })
        .await
    }

    /// True once the socket can be forgotten by the shard: the reader ended and nothing
    /// is left to write.
    fn is_finished(&self) -> bool {
        self.reader_done.get() && !self.write_waiting.get()
    }
}

/// The drain task of a connection whose socket pushed back: wait for writability and
/// flush until the queue is empty or the socket fails.
pub async fn drain(shard: Rc<Shard>, conn: Rc<Conn>) {
    loop {
        if conn.stream.writable(false).await.is_err() {
            conn.abort();
        }
        if conn.flush(&shard) != Flushed::Blocked {
            break;
        }
    }
    conn.write_waiting.set(false);
    if conn.is_finished() {
        shard.forget(&conn);
    }
}

/// What the reader does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Keep reading.
    Continue,
    /// The connection is over (EOF, error, or the close handshake completed).
    End,
}

/// The reader task: runs until the connection ends, then lets its rendezvous forget it.
/// `initial` holds bytes that arrived with the request head.
pub async fn run_reader(shard: Rc<Shard>, conn: Rc<Conn>) {
    let mut step = Step::Continue;
    if conn.has_partial() {
        step = process_partial(&shard, &conn);
        shard.flush_after_read();
    }
    while step == Step::Continue {
        if let Some(pause) = modes::pause_for(&shard, &conn) {
            // Counted once per pause (and per tick-long re-check), never per message.
            shard.stats.borrow_mut().event("reads_paused");
            conn.paused.set(true);
            // Boxed: its timer would otherwise sit in every reader's future, idle or not
            // (one allocation per pause, never per message).
            let resumed = Box::pin(wait_paused(&shard, &pause)).await;
            conn.paused.set(false);
            if !resumed && sys::peer_hung_up(conn.fd) {
                // The client left while paused: what it sent and we did not read is moot.
                break;
            }
            conn.last_rx.set(Instant::now());
            continue;
        }
        if conn.unparsed.get() {
            // Frames already read wait in `partial`: decode them before reading more.
            step = process_partial(&shard, &conn);
            shard.flush_after_read();
            continue;
        }
        if conn.stream.readable(false).await.is_err() {
            break;
        }
        step = read_batch(&shard, &conn);
        shard.flush_after_read();
    }
    end_connection(&shard, &conn);
}

/// Wait out a pause, but look up once a tick (a paused reader does not read, so it would
/// not otherwise notice its client leaving): true when the reason went, false at a tick.
async fn wait_paused(shard: &Shard, pause: &Pause) -> bool {
    let tick = shard.config().tick_period();
    monoio::select! {
        _ = pause.wait() => true,
        _ = monoio::time::sleep(tick) => false,
    }
}

/// An established connection on its way to another shard.
#[derive(Debug)]
pub struct Transfer {
    /// A duplicate of the socket's descriptor (the original closes with this shard's
    /// `Conn`; the socket lives on through this one).
    fd: std::os::fd::OwnedFd,
    /// The `/stats` kind.
    kind: ConnKind,
    /// The connection's place under `--max-connections`.
    permit: ConnPermit,
    /// Frames queued here but not yet written, as raw bytes.
    unsent: Vec<u8>,
    /// Bytes read here but not yet decoded (they follow the message that asked for the move).
    unread: Vec<u8>,
    /// What the connection does on arrival.
    resume: Resume,
    /// When the move was enqueued (handoff histogram).
    sent_at: Instant,
    /// The client's address learnt behind a balancer ([`Conn::set_client`]), if any.
    client: Option<SocketAddr>,
}

/// Move `conn` to the shard it asked for: duplicate its descriptor, carry its unsent and
/// unread bytes, and let this shard's copy end quietly (no close frame, no shutdown).
fn start_transfer(shard: &Rc<Shard>, conn: &Rc<Conn>, unread: Vec<u8>) {
    let Some(moving) = conn.transfer.take() else {
        return;
    };
    let (owner, resume) = *moving;
    let permit = conn.permit.borrow_mut().take();
    let (Ok(fd), Some(permit)) = (sys::dup_fd(conn.fd), permit) else {
        tracing::warn!(shard = shard.id, "could not move a connection; closing it");
        conn.abort();
        return;
    };
    let unsent = conn.take_unsent();
    // This shard's copy writes nothing more; its descriptor closes with it while the
    // duplicate keeps the socket open for the owner.
    conn.broken.set(true);
    conn.moved.set(true);
    let transfer = Transfer {
        fd,
        kind: conn.kind.get(),
        permit,
        unsent,
        unread,
        resume,
        sent_at: Instant::now(),
        client: conn.client.get().map(|client| **client),
    };
    shard.stats.borrow_mut().handed_off();
    if !shard.global.inboxes[owner].send(InboxMsg::Resume(Box::new(transfer))) {
        tracing::warn!(
            shard = shard.id,
            owner,
            "owner shard is gone; connection dropped"
        );
    }
}

/// A connection moved here: adopt its socket, requeue its unsent bytes, resume it.
pub fn resume(shard: &Rc<Shard>, transfer: Transfer) {
    let micros = transfer.sent_at.elapsed().as_micros() as u64;
    let conn = match Conn::new(transfer.fd, transfer.kind, transfer.permit) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(shard = shard.id, error = %e, "could not adopt a moved connection");
            return;
        }
    };
    if let Some(client) = transfer.client {
        conn.set_client(client);
    }
    {
        let mut stats = shard.stats.borrow_mut();
        stats.adopted();
        stats.record_handoff(micros);
        stats.conn_opened(transfer.kind);
    }
    if !transfer.unsent.is_empty() {
        conn.enqueue(shard, OutFrame::raw(transfer.unsent));
    }
    modes::on_resume(shard, conn, transfer.resume, transfer.unread);
    shard.flush_dirty();
}

/// After the reader: tell the rendezvous, count, and forget the socket once flushed.
fn end_connection(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    if !conn.moved.get() {
        tracing::debug!(
            shard = shard.id,
            peer = %conn.peer(),
            kind = conn.kind.get().name(),
            client_code = conn.peer_close.get().unwrap_or(1006),
            "closed"
        );
    }
    modes::on_disconnect(shard, conn);
    shard.stats.borrow_mut().conn_closed(conn.kind.get());
    conn.reader_done.set(true);
    conn.wake_drain_waiters();
    if conn.state.get() == ConnState::Open {
        // EOF without a close frame: nothing more to send.
        conn.state.set(ConnState::Closing(Instant::now()));
    }
    shard.flush_dirty();
    if conn.is_finished() {
        shard.forget(conn);
    }
}

/// Read what the socket has, up to a few chunks, and process it; then charge what the
/// read side holds (a cut frame, a message being reassembled).
fn read_batch(shard: &Rc<Shard>, conn: &Rc<Conn>) -> Step {
    let step = read_chunks(shard, conn);
    conn.recharge_held();
    step
}

/// The reads of one batch.
fn read_chunks(shard: &Rc<Shard>, conn: &Rc<Conn>) -> Step {
    for _ in 0..READS_PER_WAKE {
        let partial = conn.partial.take();
        let from_partial = !partial.is_empty();
        let mut buf = if from_partial {
            partial
        } else {
            conn.partial.set(partial);
            shard.take_scratch()
        };
        let got = sys::recv_into(conn.fd, &mut buf, READ_CHUNK);
        let short_read = matches!(got, Ok(n) if n < READ_CHUNK);
        let step = match got {
            Ok(0) => Step::End,
            Ok(_) => {
                conn.last_rx.set(Instant::now());
                conn.ping_pending.set(false);
                modes::on_activity(shard, conn);
                process_buffer(shard, conn, &mut buf)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                restore_buffer(shard, conn, buf, from_partial);
                return Step::Continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Continue,
            Err(_) => Step::End,
        };
        keep_leftover(shard, conn, buf, from_partial);
        if step == Step::End {
            return Step::End;
        }
        if short_read || conn.unparsed.get() || modes::pause_for(shard, conn).is_some() {
            return Step::Continue;
        }
    }
    Step::Continue
}

/// Put an unused buffer back where it came from.
fn restore_buffer(shard: &Shard, conn: &Conn, buf: Vec<u8>, from_partial: bool) {
    if from_partial {
        conn.partial.set(buf);
    } else {
        shard.return_scratch(buf);
    }
}

/// After processing, `buf` holds only the unconsumed tail (a cut frame): keep it in the
/// connection's `partial` and return the scratch buffer to the shard.
fn keep_leftover(shard: &Shard, conn: &Conn, mut buf: Vec<u8>, from_partial: bool) {
    if from_partial {
        if buf.is_empty() && buf.capacity() > PARTIAL_KEEP {
            buf = Vec::new();
        }
        conn.partial.set(buf);
    } else {
        if !buf.is_empty() {
            conn.partial.set(buf.as_slice().to_vec());
        }
        buf.clear();
        shard.return_scratch(buf);
    }
}

/// Process bytes already in `partial` (those that came with the request head).
fn process_partial(shard: &Rc<Shard>, conn: &Rc<Conn>) -> Step {
    let mut buf = conn.partial.take();
    let step = process_buffer(shard, conn, &mut buf);
    keep_leftover(shard, conn, buf, true);
    conn.recharge_held();
    step
}

/// Decode and dispatch the whole frames in `buf`, leaving only the unconsumed tail: a cut
/// frame, or — when a message filled the queue it went to (`queue_filled`) — every frame
/// after that message, so one read of tiny frames cannot queue more than one message past
/// a bound (PROTOCOL §2.1). `conn.unparsed` tells which.
fn process_buffer(shard: &Rc<Shard>, conn: &Rc<Conn>, buf: &mut Vec<u8>) -> Step {
    conn.unparsed.set(false);
    if conn.discarding.get() {
        buf.clear();
        return Step::Continue;
    }
    let read_at = Instant::now();
    let max_message = shard.config().max_message;
    let mut pos = 0;
    let mut step = Step::Continue;
    let mut decoder = conn.decoder.borrow_mut();
    QUEUE_FILLED.set(false);
    while step == Step::Continue {
        if QUEUE_FILLED.get() && pos < buf.len() {
            conn.unparsed.set(true);
            break;
        }
        match decoder.decode(&mut buf[pos..], max_message) {
            Ok(None) => break,
            Ok(Some((event, used))) => {
                if let Some(event) = event {
                    step = on_event(shard, conn, event, read_at);
                }
                pos += used;
                if conn.transfer_requested() {
                    drop(decoder);
                    let unread = buf.split_off(pos);
                    buf.clear();
                    start_transfer(shard, conn, unread);
                    return Step::End;
                }
            }
            Err(err) => {
                on_protocol_error(shard, conn, err.close_code());
                pos = buf.len();
            }
        }
    }
    buf.drain(..pos);
    step
}

/// A peer broke RFC 6455: close with the matching code and stop parsing its bytes.
fn on_protocol_error(shard: &Rc<Shard>, conn: &Rc<Conn>, code: u16) {
    conn.failed.set(true);
    conn.discarding.set(true);
    shard.stats.borrow_mut().rejected(match code {
        1007 => "invalid_utf8",
        1009 => "message_too_big",
        _ => "protocol_error",
    });
    let reason = match code {
        1007 => "invalid UTF-8",
        1009 => "message too big",
        _ => "protocol error",
    };
    conn.close(shard, code, reason);
}

/// One decoded frame.
fn on_event(shard: &Rc<Shard>, conn: &Rc<Conn>, event: Event<'_>, read_at: Instant) -> Step {
    match event {
        Event::Ping(payload) => {
            conn.answer_ping(shard, payload);
            Step::Continue
        }
        Event::Pong => Step::Continue,
        Event::Close { code, .. } => on_close_frame(shard, conn, code),
        Event::Message { kind, payload } => {
            if conn.is_open() {
                shard.stats.borrow_mut().message_in(payload.len());
                modes::on_message(shard, conn, kind, payload, read_at);
            }
            Step::Continue
        }
    }
}

/// The client sent a close frame: echo it (unless ours already went out) and end.
fn on_close_frame(shard: &Rc<Shard>, conn: &Rc<Conn>, code: Option<u16>) -> Step {
    conn.peer_close.set(Some(code.unwrap_or(1005)));
    if conn.state.get() == ConnState::Open {
        conn.state.set(ConnState::Closing(Instant::now()));
        let echo = match code {
            Some(code) => codec::encode_close(code, ""),
            None => codec::encode_frame(OpCode::Close, b""),
        };
        conn.enqueue(shard, OutFrame::raw(echo));
    }
    Step::End
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::payload::POOLED_MAX;

    #[test]
    fn an_empty_message_or_a_pong_is_not_free() {
        let empty = OutFrame::message(OpCode::Binary, None, Payload::copy_of(b""), b"");
        assert_eq!(empty.charge(), FRAME_SLOT + POOLED_MAX);
        assert_eq!(OutFrame::charge_for(0), empty.charge());
        let pong = OutFrame::message(OpCode::Pong, None, Payload::copy_of(b"p"), b"");
        assert!(pong.is_pong() && pong.is_ping_or_pong());
        assert!(pong.charge() > POOLED_MAX);
        let ping = OutFrame::message(OpCode::Ping, None, Payload::empty(), b"");
        assert!(ping.is_ping_or_pong() && !ping.is_pong());
        assert_eq!(ping.charge(), FRAME_SLOT);
        let close = OutFrame::raw(codec::encode_close(1000, ""));
        assert!(!close.is_ping_or_pong());
        let text = OutFrame::message(OpCode::Text, None, Payload::from(vec![b'x'; 4000]), b"");
        assert!(!text.is_ping_or_pong());
        assert!(text.charge() >= FRAME_SLOT + 4000);
    }
}
