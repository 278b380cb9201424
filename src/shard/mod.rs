//! A shard: one pinned thread running one monoio runtime that owns its registries
//! outright. This module holds the shard's state and its entry point; the accept path,
//! the inbox and the tick task live in the submodules.
//!
//! Ownership: everything here is `Rc`/`RefCell`/`Cell` and touched only by this shard's
//! thread. The only things shared between shards are `Global` (read-only configuration,
//! the route hasher, the inbox senders, one atomic connection count touched once per
//! connection, and each shard's `/health` mirror, written by that shard once per
//! connection or registry change; never per message).

pub mod accept;
pub mod admin;
mod client_addr;
mod refuse;
pub mod tick;
pub mod timers;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::config::{Config, DriverChoice};
pub use crate::http::upgrade::Upgrade;
use crate::modes::{
    self, pair, server_id, session, session_ws, ticket, Conn, Pause, Role, StyleHost,
};
use crate::net::ConnCount;
pub use crate::net::ConnPermit;
use crate::stats::HealthMirror;
use crate::stats::{HistId, ReportKind, ShardReport, ShardStats, CELL_BUCKETS};
use crate::wake::{self, WakeReceiver, WakeSender};
use crate::ws::codec::MessageKind;
use crate::ws::conn::{self, Flushed, Host, Outbox, Relocation, READ_CHUNK};

/// State every shard reads; written once at start-up (save the connection count).
#[derive(Debug)]
pub struct Global {
    /// The relay's settings.
    pub config: Config,
    /// This node among `--nodes` (PROTOCOL §9); None for a single node.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Each node's public address, resolved at start-up, in the cluster's (id) order.
    pub node_addrs: Vec<std::net::SocketAddr>,
    /// Number of shards.
    pub shards: usize,
    /// The route-key hasher: one state shared by every shard, random per process.
    pub hasher: ahash::RandomState,
    /// Each shard's inbox, by shard index.
    pub inboxes: Vec<WakeSender<InboxMsg>>,
    /// Open client connections (public listener), against `max_connections`.
    pub(crate) open: Arc<ConnCount>,
    /// The global connection cap.
    pub max_connections: usize,
    /// Process start, for `uptime_seconds`.
    pub started: Instant,
    /// The admin bearer token, when one is configured.
    pub admin_token: Option<String>,
    /// Per-IP connection-attempt buckets (`--per-ip-rate`); touched once per accept.
    pub rate_limiter: Option<crate::per_ip::RateLimit>,
    /// Per-IP failed-join budget (`--code-guesses-per-ip`; None when 0): touched once
    /// per session join attempt. See [`Global::may_try_code`], [`Global::failed_join`].
    pub guesses: Option<crate::per_ip::GuessBudget>,
    /// The driver the shards run ("io_uring" or "epoll"), for logs and `/stats`.
    pub driver: &'static str,
    /// Each shard's `/health` figures, by shard index: written by that shard only, read
    /// by whichever shard answers a probe (no cross-shard message per probe).
    pub health: Vec<Arc<HealthMirror>>,
    /// The public listener's TLS pair (`--tls-cert`/`--tls-key`), swapped on `SIGHUP`;
    /// None for plain TCP.
    pub tls: Option<Arc<crate::tls::TlsKeys>>,
}

impl Global {
    /// The shard that owns a route key.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        route_shard(&self.hasher, key, self.shards)
    }

    /// Count one more open connection, unless the cap is reached.
    pub fn admit(&self) -> Option<ConnPermit> {
        self.open.admit(self.max_connections)
    }

    /// May `ip` try a session code now (PROTOCOL §5)? False once its failed joins used
    /// up `--code-guesses-per-ip` for the minute; always true when the budget is off.
    /// Every path that joins by code (any session protocol) asks this first and answers
    /// `RATE_LIMITED` (or `429` before an upgrade) without trying the code.
    pub fn may_try_code(&self, ip: IpAddr) -> bool {
        self.guesses
            .as_ref()
            .is_none_or(|budget| budget.may_try(ip, Instant::now()))
    }

    /// A join from `ip` was answered with an error (`INVALID_CODE`, `EXPIRED_CODE`,
    /// `ALREADY_JOINED`, a failed `auth`, …): spend one from its guessing budget.
    pub fn failed_join(&self, ip: IpAddr) {
        if let Some(budget) = &self.guesses {
            budget.failed(ip, Instant::now());
        }
    }

    /// Open client connections right now.
    pub fn open_connections(&self) -> usize {
        self.open.open()
    }
}

/// The owner shard of a route key: one ahash of the key, modulo the shard count.
pub fn route_shard(hasher: &ahash::RandomState, key: &[u8], shards: usize) -> usize {
    (hasher.hash_one(key) % shards.max(1) as u64) as usize
}

/// What crosses into a shard.
#[derive(Debug)]
pub enum InboxMsg {
    /// A connection accepted elsewhere whose route key this shard owns.
    Adopt(Box<Handoff>),
    /// An established WebSocket moved here from another shard.
    Moved(Box<Relocation<Role>>),
    /// Send this shard's stats report (then reset its `/stats` histograms if asked).
    Snapshot {
        /// Which report: `/stats` or `/metrics`.
        kind: ReportKind,
        /// `?reset=1`.
        reset: bool,
        /// Where the report goes.
        reply: WakeSender<ShardReport>,
    },
    /// Round 2 of a plain `/stats` read: the bucket counts of the asked cells (then
    /// reset the `/stats` histograms if the read asked for it).
    Fine {
        /// The cells, as `StatsPlan::asked` lists them.
        asked: std::sync::Arc<Vec<(HistId, usize)>>,
        /// `?reset=1`.
        reset: bool,
        /// Where the counts go.
        reply: WakeSender<Vec<[u64; CELL_BUCKETS]>>,
    },
    /// Mint a ticket for a workspace this shard owns (asked by the admin shard).
    Mint {
        /// The checked mint request.
        plan: Box<ticket::MintPlan>,
        /// Where the `201` response or the refusal goes.
        reply: WakeSender<ticket::MintOutcome>,
    },
    /// Stop accepting, close every WebSocket with 1001, drain, exit.
    Shutdown,
}

/// A connection moving to its owner shard: the socket plus everything the accepting
/// shard learnt. Moved once; its messages never cross a core.
#[derive(Debug)]
pub struct Handoff {
    /// The socket.
    pub fd: OwnedFd,
    /// When the handoff was enqueued (handoff histogram).
    pub sent_at: Instant,
    /// The request, ready to upgrade.
    pub upgrade: Upgrade,
}

/// One shard's state.
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// What all shards share.
    pub global: Arc<Global>,
    /// Counters and histograms (plain integers: only this thread touches them).
    pub stats: RefCell<ShardStats>,
    /// Every upgraded connection on this shard (heartbeat, shutdown).
    pub conns: RefCell<Slab<Rc<Conn>>>,
    /// Connections with frames queued since the last flush.
    dirty: RefCell<Vec<Rc<Conn>>>,
    /// The dirty list's other buffer: a flush walks one while new marks go to the other,
    /// and the two swap, so marking and flushing allocate nothing in steady state.
    dirty_spare: Cell<Vec<Rc<Conn>>>,
    /// A flush is due at the end of this loop turn (the flusher task is woken).
    flush_due: Cell<bool>,
    /// Reader batches since the first frame still waiting for a flush.
    reads_unflushed: Cell<u32>,
    /// The flusher task's waker (set once it first waits).
    flusher: RefCell<Option<Waker>>,
    /// The read buffer every connection of this shard reads into.
    scratch: Cell<Vec<u8>>,
    /// Server-id slots owned by this shard.
    pub server_ids: RefCell<server_id::Registry>,
    /// Pairs whose code this shard owns.
    pub pairs: RefCell<pair::Registry>,
    /// Session codes minted by this shard.
    pub sessions: RefCell<session::Registry>,
    /// `/ws` session codes minted by this shard, and `/ws` connections awaiting their
    /// first message.
    pub session_ws: RefCell<session_ws::Registry>,
    /// Tickets minted by this shard.
    pub tickets: RefCell<ticket::Registry>,
    /// Set once shutdown began: no new connection is served.
    pub shutting_down: Cell<bool>,
    /// Listening sockets of this shard, shut down to stop their accept loops.
    listeners: RefCell<Vec<RawFd>>,
    /// The connections' deadlines and the next tick's list (`timers`): what the tick
    /// looks at, instead of every connection.
    pub timers: timers::ConnTimers,
}

impl Shard {
    /// A shard with empty registries.
    pub fn new(id: usize, global: Arc<Global>) -> Rc<Self> {
        let mirror = global.health.get(id).cloned().unwrap_or_default();
        // Each style's settings, taken from the configuration once.
        let server_id_settings = server_id::Settings::from(&global.config);
        let pair_settings = pair::Settings::from(&global.config);
        let session_settings = session::Settings::from(&global.config);
        let session_ws_settings = session_ws::Settings::from(&global.config);
        let ticket_settings = ticket::Settings::from(&global.config);
        let tick_period = global.config.tick_period();
        Rc::new(Shard {
            id,
            global,
            stats: RefCell::new(ShardStats::with_mirror(id, mirror)),
            conns: RefCell::new(Slab::new()),
            dirty: RefCell::new(Vec::new()),
            dirty_spare: Cell::new(Vec::new()),
            flush_due: Cell::new(false),
            reads_unflushed: Cell::new(0),
            flusher: RefCell::new(None),
            scratch: Cell::new(Vec::with_capacity(READ_CHUNK)),
            server_ids: RefCell::new(server_id::Registry::new(server_id_settings)),
            pairs: RefCell::new(pair::Registry::new(pair_settings)),
            sessions: RefCell::new(session::Registry::new(session_settings)),
            session_ws: RefCell::new(session_ws::Registry::new(session_ws_settings)),
            tickets: RefCell::new(ticket::Registry::new(ticket_settings)),
            shutting_down: Cell::new(false),
            listeners: RefCell::new(Vec::new()),
            timers: timers::ConnTimers::new(Instant::now(), tick_period),
        })
    }

    /// The relay's settings.
    pub fn config(&self) -> &Config {
        &self.global.config
    }

    /// Borrow the shard's read buffer (empty, full capacity).
    pub fn take_scratch(&self) -> Vec<u8> {
        let buf = self.scratch.take();
        if buf.capacity() == 0 {
            // Only when a reader kept it across a panic-free early return; re-grow.
            return Vec::with_capacity(READ_CHUNK);
        }
        buf
    }

    /// Give the read buffer back.
    pub fn return_scratch(&self, mut buf: Vec<u8>) {
        buf.clear();
        self.scratch.set(buf);
    }

    /// Track an upgraded connection.
    pub fn track(&self, conn: &Rc<Conn>) {
        let key = self.conns.borrow_mut().insert(conn.clone());
        conn.key.set(key);
        self.timers
            .arm(conn, conn.last_rx.get() + self.config().ping_interval);
        self.timers.list(conn);
    }

    /// Forget a finished connection (its socket closes when the last `Rc` goes).
    pub fn forget(&self, conn: &Conn) {
        let key = conn.key.replace(usize::MAX);
        let mut conns = self.conns.borrow_mut();
        if conns.contains(key) {
            conns.remove(key);
        }
    }

    /// Note a connection with queued frames.
    pub fn mark_dirty(&self, conn: Rc<Conn>) {
        // Once per flush, not per frame: the tick looks at it next (a queue to drain, a
        // ring to give back).
        self.timers.list(&conn);
        self.dirty.borrow_mut().push(conn);
    }

    /// After a reader's batch, with `--flush-after-reads N`: at 1 (the default), flush
    /// now. Above 1, flush at the end of this loop turn, behind the other readers the
    /// same I/O wake made ready, so the frames several readers queue for one receiver
    /// (envelopes from many phones to one binary) leave in one vectored write; but never
    /// later than N reader batches after the first frame began to wait, which bounds what
    /// the deferral adds to a frame's `forward` time.
    pub fn flush_after_read(self: &Rc<Self>) {
        if self.dirty.borrow().is_empty() {
            return;
        }
        let reads = self.reads_unflushed.get() + 1;
        if reads >= self.config().flush_after_reads {
            self.flush_dirty();
            return;
        }
        self.reads_unflushed.set(reads);
        if self.flush_due.replace(true) {
            return;
        }
        if let Some(waker) = self.flusher.borrow().as_ref() {
            waker.wake_by_ref();
        }
    }

    /// Wait until a reader asked for a flush.
    async fn flush_requested(&self) {
        poll_fn(|cx| {
            if self.flush_due.replace(false) {
                return Poll::Ready(());
            }
            let mut flusher = self.flusher.borrow_mut();
            if !flusher.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *flusher = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Flush every connection with queued frames: one vectored write each; sockets that
    /// push back get a writer task (`conn::write_when_ready`).
    pub fn flush_dirty(self: &Rc<Self>) {
        self.reads_unflushed.set(0);
        loop {
            let mut batch = self.dirty_spare.take();
            std::mem::swap(&mut batch, &mut *self.dirty.borrow_mut());
            if batch.is_empty() {
                self.dirty_spare.set(batch);
                return;
            }
            for conn in batch.drain(..) {
                if !conn.take_dirty() {
                    continue;
                }
                if conn.flush(self) == Flushed::Blocked && conn.claim_writer() {
                    monoio::spawn(conn::write_when_ready(self.clone(), conn));
                }
            }
            self.dirty_spare.set(batch);
        }
    }

    /// Start serving an upgraded connection: track it and run its reader, which first
    /// processes `initial` (bytes that came with the request head, or that a moved
    /// connection had read but not decoded). They wait in the connection, not in the
    /// reader's future, which stays small for the connection's whole life.
    pub fn spawn_reader(self: &Rc<Self>, conn: Rc<Conn>, initial: Vec<u8>) {
        self.track(&conn);
        conn.set_initial(initial);
        monoio::spawn(conn::run_reader(self.clone(), conn));
    }

    /// Gather every shard's stats report of `kind` over the inboxes (this shard's too).
    /// Each shard reduces its histograms before replying (see `stats::Report`), so what
    /// crosses is small whatever the traffic history.
    pub async fn gather_stats(&self, kind: ReportKind, reset: bool) -> Vec<ShardReport> {
        let (tx, rx) = wake::wake_channel();
        let mut expected = 0;
        for inbox in &self.global.inboxes {
            let msg = InboxMsg::Snapshot {
                kind,
                reset,
                reply: tx.clone(),
            };
            if inbox.send(msg) {
                expected += 1;
            }
        }
        drop(tx);
        let mut snaps = Vec::with_capacity(expected);
        let deadline = Duration::from_secs(2);
        while snaps.len() < expected {
            match monoio::time::timeout(deadline, rx.recv()).await {
                Ok(Some(snap)) => snaps.push(snap),
                _ => break,
            }
        }
        snaps.sort_by_key(ShardReport::shard);
        snaps
    }

    /// Round 2 of a plain `/stats` read over the inboxes (this shard's too): every
    /// shard's bucket counts of the `asked` cells; resets after counting if asked.
    pub async fn gather_fine(
        &self,
        asked: Vec<(HistId, usize)>,
        reset: bool,
    ) -> Vec<Vec<[u64; CELL_BUCKETS]>> {
        let asked = std::sync::Arc::new(asked);
        let (tx, rx) = wake::wake_channel();
        let mut expected = 0;
        for inbox in &self.global.inboxes {
            let msg = InboxMsg::Fine {
                asked: asked.clone(),
                reset,
                reply: tx.clone(),
            };
            if inbox.send(msg) {
                expected += 1;
            }
        }
        drop(tx);
        let mut replies = Vec::with_capacity(expected);
        let deadline = Duration::from_secs(2);
        while replies.len() < expected {
            match monoio::time::timeout(deadline, rx.recv()).await {
                Ok(Some(reply)) => replies.push(reply),
                _ => break,
            }
        }
        replies
    }

    /// Remember a listener so shutdown can stop its accept loop.
    fn add_listener(&self, fd: RawFd) {
        self.listeners.borrow_mut().push(fd);
    }

    /// Begin shutdown: stop accepting and close every WebSocket with 1001.
    fn begin_shutdown(self: &Rc<Self>) {
        self.shutting_down.set(true);
        for fd in self.listeners.borrow().iter() {
            crate::sys::shutdown_listener(*fd);
        }
        let conns: Vec<Rc<Conn>> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        for conn in conns {
            conn.close(self, 1001, "shutting down");
        }
        ticket::on_shutdown(self);
        self.flush_dirty();
    }
}

/// The narrow interface the connection layer sees of its shard: queueing needs the
/// queue bound, the counters and the dirty list.
impl Outbox<Role> for Shard {
    fn max_queue(&self) -> usize {
        self.config().max_queue
    }
    fn stats(&self) -> std::cell::RefMut<'_, ShardStats> {
        self.stats.borrow_mut()
    }
    fn mark_dirty(&self, conn: Rc<Conn>) {
        Shard::mark_dirty(self, conn)
    }
}

/// What a connection's reader and writer need of their shard; the style callbacks go
/// to `modes`, which dispatches on the connection's `Role`.
impl Host<Role> for Shard {
    fn shard_id(&self) -> usize {
        self.id
    }
    fn max_message(&self) -> usize {
        self.config().max_message
    }
    fn tick_period(&self) -> Duration {
        self.config().tick_period()
    }
    fn take_scratch(&self) -> Vec<u8> {
        Shard::take_scratch(self)
    }
    fn return_scratch(&self, buf: Vec<u8>) {
        Shard::return_scratch(self, buf)
    }
    fn flush_after_read(self: &Rc<Self>) {
        Shard::flush_after_read(self)
    }
    fn flush_dirty(self: &Rc<Self>) {
        Shard::flush_dirty(self)
    }
    fn forget(&self, conn: &Conn) {
        Shard::forget(self, conn)
    }
    fn pause_for(&self, conn: &Rc<Conn>) -> Option<Pause> {
        modes::pause_for(self, conn)
    }
    fn on_activity(self: &Rc<Self>, conn: &Rc<Conn>) {
        // Once per read batch: the tick looks at it next (buffers to give back once
        // quiet); its heartbeat entry re-arms itself lazily.
        self.timers.list(conn);
        modes::on_activity(self, conn)
    }
    fn on_message(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        kind: MessageKind,
        payload: &[u8],
        read_at: Instant,
    ) {
        modes::on_message(self, conn, kind, payload, read_at)
    }
    fn on_disconnect(self: &Rc<Self>, conn: &Rc<Conn>) {
        modes::on_disconnect(self, conn)
    }
    fn relocate(&self, owner: usize, moving: Relocation<Role>) -> bool {
        self.global
            .inboxes
            .get(owner)
            .is_some_and(|inbox| inbox.send(InboxMsg::Moved(Box::new(moving))))
    }
}

/// What the styles see of their shard: the route, the guessing budget, the reader
/// spawn, the registries, and the cross-shard mint request.
impl StyleHost for Shard {
    fn shards(&self) -> usize {
        self.global.shards
    }
    fn mints(&self, alphabet: &[u8], first: u8, key: &[u8]) -> bool {
        let node_owns = self
            .global
            .cluster
            .as_ref()
            .is_none_or(|cluster| cluster.owns_first(alphabet, first));
        node_owns && self.global.shard_of(key) == self.id
    }
    fn node_for(&self, alphabet: &[u8], first: u8) -> Option<std::net::SocketAddr> {
        let cluster = self.global.cluster.as_ref()?;
        let owner = crate::cluster::first_char_owner(alphabet, first, cluster.nodes().len())?;
        (owner != cluster.my_index())
            .then(|| self.global.node_addrs.get(owner).copied())
            .flatten()
    }
    fn workspace_node(&self, workspace: &str) -> Option<std::net::SocketAddr> {
        let cluster = self.global.cluster.as_ref()?;
        let owner = cluster.owner_index_of_workspace(workspace);
        (owner != cluster.my_index())
            .then(|| self.global.node_addrs.get(owner).copied())
            .flatten()
    }
    fn admin_token(&self) -> Option<&str> {
        self.global.admin_token.as_deref()
    }
    fn proxy_protocol(&self) -> bool {
        self.global.config.proxy_protocol
    }
    fn minters(&self) -> usize {
        let nodes = self.global.cluster.as_ref().map_or(1, |c| c.nodes().len());
        self.global.shards * nodes
    }
    fn shard_of(&self, key: &[u8]) -> usize {
        self.global.shard_of(key)
    }
    fn may_try_code(&self, ip: IpAddr) -> bool {
        self.global.may_try_code(ip)
    }
    fn failed_join(&self, ip: IpAddr) {
        self.global.failed_join(ip)
    }
    fn open_connections(&self) -> usize {
        self.global.open_connections()
    }
    fn shutting_down(&self) -> bool {
        self.shutting_down.get()
    }
    fn spawn_reader(self: &Rc<Self>, conn: Rc<Conn>, initial: Vec<u8>) {
        Shard::spawn_reader(self, conn, initial)
    }
    fn server_ids(&self) -> &RefCell<server_id::Registry> {
        &self.server_ids
    }
    fn pairs(&self) -> &RefCell<pair::Registry> {
        &self.pairs
    }
    fn sessions(&self) -> &RefCell<session::Registry> {
        &self.sessions
    }
    fn session_ws(&self) -> &RefCell<session_ws::Registry> {
        &self.session_ws
    }
    fn tickets(&self) -> &RefCell<ticket::Registry> {
        &self.tickets
    }
    fn ask_mint(
        &self,
        owner: usize,
        plan: Box<ticket::MintPlan>,
    ) -> Option<WakeReceiver<ticket::MintOutcome>> {
        let (reply, answer) = wake::wake_channel();
        let inbox = self.global.inboxes.get(owner)?;
        inbox.send(InboxMsg::Mint { plan, reply }).then_some(answer)
    }
}

/// A connection moved here: adopt its socket and resume it in its rendezvous.
fn adopt_moved(shard: &Rc<Shard>, moving: Relocation<Role>) {
    if let Some(arrived) = conn::adopt_moved(&**shard, shard.id, moving) {
        modes::on_resume(shard, arrived.conn, arrived.resume, arrived.unread);
    }
    shard.flush_dirty();
}

/// What a shard thread needs to start.
pub struct ShardSeed {
    /// Shard index (also the CPU it pins to, modulo the CPUs available).
    pub id: usize,
    /// Shared state.
    pub global: Arc<Global>,
    /// This shard's inbox.
    pub inbox: WakeReceiver<InboxMsg>,
    /// This shard's descriptor of the public listener (one socket, shared by the shards).
    pub public: std::net::TcpListener,
    /// The admin listener (shard 0 only).
    pub admin: Option<std::net::TcpListener>,
    /// CPU to pin to, if pinning is possible.
    pub cpu: Option<usize>,
}

/// Ring entries per io_uring: room for a burst of accepts, reads and writes per shard.
const URING_ENTRIES: u32 = 4096;

/// The io_uring settings of a shard's ring, the first the kernel takes (probed with a
/// small ring on the shard's own thread):
///
/// 1. `IORING_SETUP_DEFER_TASKRUN` with `SINGLE_ISSUER` (Linux 6.1+): a poll that fires
///    is queued on the ring and completed only when the shard next waits for I/O, in one
///    batch, instead of interrupting whatever the shard is doing — the largest single
///    saving in relay CPU per message measured in `docs/benchmarks.md` (#20 point 4).
///    Only this thread ever submits (monoio's runtime is thread-local). Completions are
///    collected only when the runtime waits, which it does as soon as no task is ready;
///    the relay's only self-rescheduling tasks (`net::yield_now`) wait for that turn
///    rather than keep the run queue busy.
/// 2. `IORING_SETUP_COOP_TASKRUN` (5.19+): completions arriving while the shard runs
///    wait for its next syscall instead of a signal-like notification (an IPI, a VM exit
///    on a guest).
/// 3. The defaults.
pub(crate) fn ring_builder() -> io_uring::Builder {
    let mut deferred = io_uring::IoUring::builder();
    deferred
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun();
    let mut coop = io_uring::IoUring::builder();
    coop.setup_coop_taskrun();
    [deferred, coop]
        .into_iter()
        .find(|builder| builder.build(8).is_ok())
        .unwrap_or_else(io_uring::IoUring::builder)
}

/// Run one shard to completion on the current thread.
pub fn run(seed: ShardSeed) -> std::io::Result<()> {
    if let Some(cpu) = seed.cpu {
        if monoio::utils::bind_to_cpu_set([cpu]).is_err() {
            tracing::warn!(shard = seed.id, cpu, "could not pin shard thread");
        }
    }
    match seed.global.config.driver {
        DriverChoice::Auto => monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .with_entries(URING_ENTRIES)
            .uring_builder(ring_builder())
            .enable_timer()
            .build()?
            .block_on(shard_main(seed)),
        DriverChoice::Uring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .uring_builder(ring_builder())
            .enable_timer()
            .build()?
            .block_on(shard_main(seed)),
        DriverChoice::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()?
            .block_on(shard_main(seed)),
    }
}

/// The shard's life: accept loops and the tick task run beside the inbox loop, which
/// ends on `Shutdown`; then every connection is closed and drained.
async fn shard_main(seed: ShardSeed) -> std::io::Result<()> {
    let shard = Shard::new(seed.id, seed.global);
    let public = monoio::net::TcpListener::from_std(seed.public)?;
    shard.add_listener(public.as_raw_fd());
    monoio::spawn(accept::accept_loop(
        shard.clone(),
        public,
        accept::Listener::Public,
    ));
    if let Some(admin) = seed.admin {
        let admin = monoio::net::TcpListener::from_std(admin)?;
        shard.add_listener(admin.as_raw_fd());
        monoio::spawn(accept::accept_loop(
            shard.clone(),
            admin,
            accept::Listener::Admin,
        ));
    }
    monoio::spawn(tick::run(shard.clone()));
    monoio::spawn(run_flusher(shard.clone()));
    while let Some(msg) = seed.inbox.recv().await {
        match msg {
            InboxMsg::Adopt(handoff) => accept::adopt(&shard, *handoff),
            InboxMsg::Moved(moving) => adopt_moved(&shard, *moving),
            InboxMsg::Snapshot { kind, reset, reply } => {
                let mut stats = shard.stats.borrow_mut();
                let snap = stats.report(kind);
                if reset {
                    stats.reset_histograms();
                }
                reply.send(snap);
            }
            InboxMsg::Fine {
                asked,
                reset,
                reply,
            } => {
                let mut stats = shard.stats.borrow_mut();
                let counts = stats.fine_counts(&asked);
                if reset {
                    stats.reset_histograms();
                }
                reply.send(counts);
            }
            InboxMsg::Mint { plan, reply } => {
                reply.send(ticket::mint_here(&shard, &plan));
            }
            InboxMsg::Shutdown => break,
        }
    }
    shard.begin_shutdown();
    wait_drained(&shard).await;
    Ok(())
}

/// The shard's flusher: runs once per loop turn in which a reader queued frames, after
/// the readers that turn's I/O made ready (monoio runs woken tasks in order).
async fn run_flusher(shard: Rc<Shard>) {
    loop {
        shard.flush_requested().await;
        shard.flush_dirty();
    }
}

/// After shutdown began: wait until every connection finished its close handshake, or
/// abort the rest at the drain timeout.
async fn wait_drained(shard: &Rc<Shard>) {
    let deadline = Instant::now() + shard.config().drain_timeout;
    let step = Duration::from_millis(10);
    let busy = || !shard.conns.borrow().is_empty() || ticket::in_flight(&**shard) > 0;
    while busy() && Instant::now() < deadline {
        monoio::time::sleep(step).await;
    }
    ticket::abort_all(shard);
    let left: Vec<Rc<Conn>> = shard
        .conns
        .borrow()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    for conn in left {
        conn.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every upgraded connection carries besides its reader task: 328 B before its
    /// flags became one `Life` value (PROTOCOL §2.1 idle-memory budget), plus the 16 B of
    /// its timing-wheel entry's `Armed` (issue 20: the tick no longer walks every
    /// connection). It must not grow further.
    const CONN_SIZE_MAX: usize = 344;

    #[test]
    fn an_idle_connection_is_no_bigger_than_before_the_split() {
        let size = std::mem::size_of::<Conn>();
        eprintln!("size_of::<Conn>() = {size} B");
        assert!(size <= CONN_SIZE_MAX, "Conn grew to {size} B");
    }
}
