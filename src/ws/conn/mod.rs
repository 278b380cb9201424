//! One upgraded WebSocket connection on its owner shard.
//!
//! * `life` — the connection's life as one state value (open, closing, broken, moved;
//!   decoding, discarding, done) and its transitions.
//! * `outbound` — the bounded outbound queue, its flush and the writer task that waits
//!   for a socket that pushed back; the close handshake.
//! * `reader` — the reader task and back-pressure pauses.
//! * `relocate` — the move of an established connection to another shard.
//!
//! The connection layer knows nothing of the rendezvous styles nor of the shard: a
//! connection carries an opaque per-style state `R` (`Rendezvous`), and the shard it
//! lives on is seen through two narrow traits, [`Outbox`] (what queueing a frame needs)
//! and [`Host`] (what the reader needs: buffers, settings, and the style callbacks).
//! Both are generic parameters, so every call is static: nothing is allocated or
//! dispatched dynamically per message.
//!
//! Memory: an idle connection holds no read buffer. The reader waits for readiness, then
//! reads into the shard's scratch buffer; only a frame cut in half by the read boundary is
//! copied out into `partial`. There is no writer task while the queue drains at once: a
//! flush is one `sendmsg` of every queued slice, and only a socket that pushes back gets a
//! short-lived writer task that waits for writability.
//!
//! Bounds (PROTOCOL §2.1): a queued frame is charged at what it occupies (`OutFrame::charge`)
//! against `--max-queue` and the process's `--memory-limit` (`crate::memory`), and so are
//! the read-side buffers. A reader stops decoding as soon as a message fills the queue it
//! went to, so one read of tiny frames cannot overshoot a bound. The heartbeat's stall
//! clock (`Conn::stalled`) closes a connection whose queue does not drain with `1008`.
//! Pings and pongs go ahead of the backlog, and at most one pong is ever queued.
//!
//! Ordering: `send` only queues and marks the connection dirty. After each read batch the
//! shard flushes its dirty connections (`Host::flush_after_read`): at once by default,
//! or with `--flush-after-reads N` at the end of the loop turn or after N batches; ticks,
//! moves and closes flush at once. A burst of messages for one receiver read in one
//! batch leaves in one vectored write.

pub mod life;
mod outbound;
mod reader;
mod relocate;

use std::cell::{Cell, RefCell, RefMut};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::memory;
use crate::net::ConnPermit;
use crate::stats::{ConnKind, ShardStats};
use crate::sys;
use crate::timer::Armed;
use crate::tls::Link;
use crate::ws::codec::{Decoder, MessageKind};

pub use life::{Life, Phase};
pub use outbound::{write_when_ready, Flushed, OutFrame, Overflow, FRAME_SLOT};
pub use reader::{run_reader, signal_queue_filled, Arrival, Pause, READ_CHUNK};
use relocate::MoveRequest;
pub use relocate::{adopt_moved, Arrived, Relocation};

/// The per-connection state of the layer above (the rendezvous styles): which registry
/// entry a connection belongs to. Opaque here; `Default` is "upgraded, not yet placed".
pub trait Rendezvous: Default + 'static {
    /// What a connection moved to another shard carries, to resume there.
    type Resume: std::fmt::Debug;
}

/// What queueing a frame needs of the shard a connection lives on.
pub trait Outbox<R: Rendezvous> {
    /// `--max-queue`: the charged bytes at which a queue counts as full.
    fn max_queue(&self) -> usize;
    /// The shard's counters.
    fn stats(&self) -> RefMut<'_, ShardStats>;
    /// List `conn` for the shard's next flush (called once until the flush takes it).
    fn mark_dirty(&self, conn: Rc<Conn<R>>);
}

impl<R: Rendezvous, H: Outbox<R>> Outbox<R> for Rc<H> {
    fn max_queue(&self) -> usize {
        (**self).max_queue()
    }
    fn stats(&self) -> RefMut<'_, ShardStats> {
        (**self).stats()
    }
    fn mark_dirty(&self, conn: Rc<Conn<R>>) {
        (**self).mark_dirty(conn)
    }
}

/// What a connection's reader and writer tasks need of their shard: its buffers and
/// settings, its flush and connection table, and the style callbacks (implemented by
/// the shard, which dispatches to the styles). Static dispatch: a reader is generic over
/// its host.
pub trait Host<R: Rendezvous>: Outbox<R> + Sized + 'static {
    /// The shard's index (logs).
    fn shard_id(&self) -> usize;
    /// `--max-message`.
    fn max_message(&self) -> usize;
    /// How often a paused reader looks up to see whether its client left.
    fn tick_period(&self) -> Duration;
    /// Borrow the shard's read buffer (empty, `READ_CHUNK` capacity).
    fn take_scratch(&self) -> Vec<u8>;
    /// Give the read buffer back.
    fn return_scratch(&self, buf: Vec<u8>);
    /// A reader's batch queued frames: flush now or soon (`--flush-after-reads`).
    fn flush_after_read(self: &Rc<Self>);
    /// Flush every connection with queued frames now.
    fn flush_dirty(self: &Rc<Self>);
    /// Forget a finished connection (its socket closes when the last `Rc` goes).
    fn forget(&self, conn: &Conn<R>);
    /// Why `conn`'s reader should stop reading for now (PROTOCOL §2), if it should.
    fn pause_for(&self, conn: &Rc<Conn<R>>) -> Option<Pause<R>>;
    /// Bytes arrived on `conn` (any frame).
    fn on_activity(self: &Rc<Self>, conn: &Rc<Conn<R>>);
    /// A whole data message arrived on an open `conn`.
    fn on_message(
        self: &Rc<Self>,
        conn: &Rc<Conn<R>>,
        kind: MessageKind,
        payload: &[u8],
        read_at: Instant,
    );
    /// The reader ended: the connection's rendezvous forgets it.
    fn on_disconnect(self: &Rc<Self>, conn: &Rc<Conn<R>>);
    /// Send a moving connection to shard `owner`; false when that shard is gone.
    fn relocate(&self, owner: usize, moving: Relocation<R>) -> bool;
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

/// One upgraded connection, owned by its shard (`Rc`, never crosses a core). `R` is the
/// rendezvous state of the layer above.
pub struct Conn<R: Rendezvous> {
    /// Key in the shard's connection table.
    pub key: Cell<usize>,
    /// The socket as the runtime sees it: only for readiness waits, and it closes the
    /// descriptor when the connection is dropped (`sys::readiness_handle`).
    pub stream: monoio::net::UnixStream,
    /// What this connection is in its rendezvous (binary, phone, pair side…).
    pub role: RefCell<R>,
    /// The kind counted in `/stats` `connections`.
    pub kind: Cell<ConnKind>,
    /// Open, closing, broken or moved; decoding, discarding or done (`life`).
    life: Cell<Life>,
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
    /// A writer task is waiting for writability (`write_when_ready`).
    write_waiting: Cell<bool>,
    /// Listed in the shard's dirty list, awaiting a flush.
    dirty: Cell<bool>,
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
    /// This connection's entry in its shard's timing wheel (its next heartbeat or close
    /// deadline), and the shard's mark for its next-tick list (`shard::timers`).
    pub timer: Armed,
    /// The close code the client sent (1005 when its close frame had none); None while
    /// it has sent none, which a peer reads as 1006.
    pub peer_close: Cell<Option<u16>>,
    /// The relay closed this connection for a fault of its own making (protocol error,
    /// heartbeat): its peer is told the connection failed.
    pub failed: Cell<bool>,
    /// Control frames (pings, pongs) read in the current one-second window: the window's
    /// second (wrapping, high 16 bits) and the count (low 16 bits), so that a ping flood
    /// is read at a bounded pace (`reader::CONTROL_FRAMES_PER_SECOND`).
    control: Cell<u32>,
    /// Bytes of a frame cut by the read boundary (and, before the reader's first read,
    /// the bytes that came with the request head).
    partial: Cell<Vec<u8>>,
    /// Frame decoder and fragment reassembly.
    decoder: RefCell<Decoder>,
    /// Readers paused on this connection's full queue, woken as it empties.
    room_waiters: RefCell<Vec<Waker>>,
    /// What few connections need ([`Rare`]: a move asked for, a client address behind
    /// a balancer), boxed, so every other connection carries one pointer for it all.
    rare: Cell<Option<Box<Rare<R>>>>,
    /// Counts this connection against `--max-connections` until dropped (or moved). A
    /// `Cell` (only ever taken whole), so it costs its 8 bytes and no borrow flag.
    permit: Cell<Option<ConnPermit>>,
    /// The transport: plain, or TLS with its session (`tls::Link`, one word); every
    /// read and write of the socket goes through it (`with_link`).
    link: Cell<Link>,
}

/// The parts of a connection that few connections need, in one box behind one pointer
/// (`Conn::rare`): allocated on first use, so a direct connection that never moves
/// allocates nothing for them.
#[derive(Debug)]
struct Rare<R: Rendezvous> {
    /// A move to another shard asked for by the rendezvous (session joins): the owner
    /// shard and what resumes there.
    moving: Option<MoveRequest<R>>,
    /// The client's address when it is not the socket peer: learnt from a PROXY header
    /// or `X-Forwarded-For` (PROTOCOL §1.2).
    client: Option<SocketAddr>,
}

impl<R: Rendezvous> Default for Rare<R> {
    fn default() -> Self {
        Rare {
            moving: None,
            client: None,
        }
    }
}

impl<R: Rendezvous> std::fmt::Debug for Conn<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("fd", &self.fd())
            .field("kind", &self.kind.get())
            .field("life", &self.life.get())
            .finish()
    }
}

impl<R: Rendezvous> Drop for Conn<R> {
    /// Whatever is still charged goes back to the budget (the queue and buffers go with
    /// the connection).
    fn drop(&mut self) {
        memory::release(self.queued.get() + self.held.get());
    }
}

impl<R: Rendezvous> Conn<R> {
    /// Wrap an upgraded socket.
    pub fn new(
        socket: OwnedFd,
        kind: ConnKind,
        permit: ConnPermit,
        link: Link,
    ) -> io::Result<Rc<Self>> {
        let stream = sys::readiness_handle(socket)?;
        Ok(Rc::new(Conn {
            key: Cell::new(usize::MAX),
            stream,
            role: RefCell::new(R::default()),
            kind: Cell::new(kind),
            life: Cell::new(Life::new(Instant::now())),
            out: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            held: Cell::new(0),
            progressed: Cell::new(false),
            stalled_since: Cell::new(None),
            front_written: Cell::new(0),
            write_waiting: Cell::new(false),
            dirty: Cell::new(false),
            overflow: Cell::new(Overflow::PauseSender),
            last_rx: Cell::new(Instant::now()),
            ping_pending: Cell::new(false),
            paused: Cell::new(false),
            timer: Armed::default(),
            peer_close: Cell::new(None),
            failed: Cell::new(false),
            control: Cell::new(0),
            partial: Cell::new(Vec::new()),
            decoder: RefCell::new(Decoder::new()),
            room_waiters: RefCell::new(Vec::new()),
            rare: Cell::new(None),
            permit: Cell::new(Some(permit)),
            link: Cell::new(link),
        }))
    }

    /// Look at (or change) the rare parts without allocating them.
    fn rare<T>(&self, f: impl FnOnce(Option<&mut Rare<R>>) -> T) -> T {
        let mut rare = self.rare.take();
        let out = f(rare.as_deref_mut());
        self.rare.set(rare);
        out
    }

    /// Change the rare parts, allocating them on first use.
    fn rare_mut<T>(&self, f: impl FnOnce(&mut Rare<R>) -> T) -> T {
        let mut rare = self.rare.take().unwrap_or_default();
        let out = f(&mut rare);
        self.rare.set(Some(rare));
        out
    }

    /// Record the client's address when a balancer stands between it and the socket
    /// (PROTOCOL §1.2); [`Conn::peer`] then answers with it. Only the first call counts.
    pub fn set_client(&self, client: SocketAddr) {
        self.rare_mut(|rare| {
            rare.client.get_or_insert(client);
        });
    }

    /// The address [`Conn::set_client`] recorded, if any (it moves with the connection).
    fn client(&self) -> Option<SocketAddr> {
        self.rare(|rare| rare.and_then(|rare| rare.client))
    }

    /// The socket's descriptor, for the raw non-blocking reads and writes (asked of the
    /// readiness handle rather than kept: 8 bytes per connection).
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Run `f` on the transport (taken out of its cell for the call; `f` cannot reach
    /// this connection's link again).
    fn with_link<T>(&self, f: impl FnOnce(&mut Link) -> T) -> T {
        let mut link = self.link.take();
        let out = f(&mut link);
        self.link.set(link);
        out
    }

    /// Apply a transition to the life state and return what it returned.
    fn update<T>(&self, change: impl FnOnce(&mut Life) -> T) -> T {
        let mut life = self.life.get();
        let out = change(&mut life);
        self.life.set(life);
        out
    }

    /// Where the close handshake and the socket are.
    pub fn phase(&self) -> Phase {
        self.life.get().phase()
    }

    /// True while messages may still be queued to this connection.
    pub fn is_open(&self) -> bool {
        self.life.get().is_open()
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

    /// The client's address, for logs (never its payloads) and per-address budgets: the
    /// one [`Conn::set_client`] recorded behind a balancer, else asked of the socket only
    /// when needed, so a direct connection does not carry it.
    pub fn peer(&self) -> PeerAddr {
        match self.client() {
            Some(client) => PeerAddr(Some(client)),
            None => PeerAddr(sys::peer_addr(self.fd())),
        }
    }

    /// Kill the socket outright (close handshake timed out, or shutdown deadline): the
    /// reader sees EOF and a pending writability wait wakes with an error. A moved
    /// connection's socket lives on at its new owner and is left alone.
    pub fn abort(&self) {
        if self.update(Life::abort) {
            sys::shutdown_both(self.fd());
        }
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

    /// True once the socket can be forgotten by the shard: the reader ended and nothing
    /// is left to write.
    fn is_finished(&self) -> bool {
        self.life.get().reader_done() && !self.write_waiting.get()
    }

    /// Give back the buffers of a connection with nothing queued and nothing cut: the
    /// outbound queue's ring (4 slots once anything was ever sent, the `101` included)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the styles' per-connection state.
    #[derive(Debug, Default)]
    struct NoRole;

    impl Rendezvous for NoRole {
        type Resume = ();
    }

    /// A shard stand-in: a queue bound, counters and a dirty list.
    struct FakeShard {
        /// `--max-queue`.
        max_queue: usize,
        /// Counters.
        stats: RefCell<ShardStats>,
        /// Connections marked dirty.
        dirty: RefCell<Vec<Rc<Conn<NoRole>>>>,
    }

    impl Outbox<NoRole> for FakeShard {
        fn max_queue(&self) -> usize {
            self.max_queue
        }
        fn stats(&self) -> RefMut<'_, ShardStats> {
            self.stats.borrow_mut()
        }
        fn mark_dirty(&self, conn: Rc<Conn<NoRole>>) {
            self.dirty.borrow_mut().push(conn);
        }
    }

    /// Run `test` with a connection over one end of a socket pair and the other end.
    fn with_conn(
        test: impl FnOnce(&FakeShard, Rc<Conn<NoRole>>, &mut std::os::unix::net::UnixStream),
    ) {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
            let count = std::sync::Arc::new(crate::net::ConnCount::default());
            let permit = count.admit(1).expect("permit");
            let conn =
                Conn::<NoRole>::new(OwnedFd::from(ours), ConnKind::Echo, permit, Link::plain())
                    .expect("conn");
            let host = FakeShard {
                max_queue: 1 << 20,
                stats: RefCell::new(ShardStats::with_mirror(0, Default::default())),
                dirty: RefCell::new(Vec::new()),
            };
            test(&host, conn, &mut theirs);
        });
    }

    /// Everything the peer can read now, until EOF (true) or nothing more (false).
    fn read_all(peer: &mut std::os::unix::net::UnixStream) -> (Vec<u8>, bool) {
        use std::io::Read;
        peer.set_nonblocking(true).expect("nonblocking");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return (got, false),
            }
        }
    }

    #[test]
    fn close_sends_one_close_frame_after_the_queue_then_shuts_the_write_half_after_the_reader() {
        with_conn(|host, conn, peer| {
            let hello = OutFrame::message(
                crate::ws::codec::OpCode::Text,
                None,
                crate::ws::payload::Payload::copy_of(b"hi"),
                b"",
            );
            assert!(conn.send(host, hello));
            conn.close(host, 1000, "bye");
            conn.close(host, 1001, "again");
            assert!(!conn.is_open());
            assert!(!conn.send(host, OutFrame::raw(b"late".to_vec())));
            assert_eq!(host.dirty.borrow().len(), 1, "marked dirty once");
            assert_eq!(conn.flush(host), Flushed::Done);
            assert!(matches!(conn.phase(), Phase::Closing { shut: false, .. }));
            let (bytes, eof) = read_all(peer);
            let mut want = vec![0x81, 2, b'h', b'i'];
            want.extend(crate::ws::codec::encode_close(1000, "bye"));
            assert_eq!(bytes, want, "the message, then exactly one close frame");
            assert!(
                !eof,
                "the write half stays open for the client's close frame"
            );
            conn.update(|life| life.finish_reading(std::time::Instant::now()));
            conn.shut_if_flushed();
            assert!(matches!(conn.phase(), Phase::Closing { shut: true, .. }));
            let (bytes, eof) = read_all(peer);
            assert!(bytes.is_empty() && eof, "then the write half is shut");
            assert_eq!(conn.queued_bytes(), 0);
        });
    }

    #[test]
    fn an_aborted_connection_writes_nothing_and_frees_its_queue() {
        with_conn(|host, conn, peer| {
            assert!(conn.send(host, OutFrame::raw(b"queued".to_vec())));
            assert!(conn.queued_bytes() > 0);
            conn.abort();
            assert_eq!(conn.phase(), Phase::Broken);
            assert!(!conn.send(host, OutFrame::raw(b"more".to_vec())));
            assert_eq!(conn.flush(host), Flushed::Broken);
            assert_eq!(conn.queued_bytes(), 0, "the queue is released");
            let (bytes, eof) = read_all(peer);
            assert!(
                bytes.is_empty() && eof,
                "nothing written; the socket is shut down"
            );
        });
    }

    #[test]
    fn the_connection_layer_alone_fits_in_its_budget() {
        // The relay's own `Conn<Role>` is pinned in `shard` (`CONN_SIZE_MAX`); this is
        // the layer's part, whatever the style state above it (280 B, plus the 16 B of
        // the timing wheel's `Armed`).
        let size = std::mem::size_of::<Conn<NoRole>>();
        assert!(size <= 296, "Conn<()> grew to {size} B");
    }
}
