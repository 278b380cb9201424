//! Scenarios: how each rendezvous style sets up a *unit* of connections and what its
//! readers do with incoming messages. Shared here: [`Link`] (one connection as a
//! scenario sees it), opening a link with its reader task, and waiting for a route's
//! hello.

pub mod attack;
pub mod chaos;
pub mod echo;
pub mod pair;
pub mod server_id;
pub mod session;
pub mod session_ws;
pub mod ticket;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::conn::{self, LiveGuard, Outbox, ReadEnd, WsReader};
use crate::ctx::WorkerCtx;
use crate::local::Signal;
use crate::net::{self, ConnectError};
use crate::plan::Style;
use crate::stream::{Sender, StreamState};
use crate::ws::handshake::HandshakeError;

/// A unit's connections and the senders that will drive them.
#[derive(Default)]
pub struct Unit {
    /// Every connection of the unit (closed at the end).
    pub links: Vec<Rc<Link>>,
    /// Senders to start when traffic starts.
    pub senders: Vec<Sender>,
}

/// Why a unit could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Opening a connection failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A connection ended during setup (e.g. closed `4404` or `4409`).
    #[error("connection ended during setup: {0}")]
    Ended(String),
    /// The route check did not complete within the connect timeout.
    #[error("no hello within the connect timeout")]
    HelloTimeout,
    /// The relay said something setup did not expect.
    #[error("unexpected message during setup: {0}")]
    Unexpected(&'static str),
}

impl SetupError {
    /// The error kind as the report counts it.
    pub fn kind(&self) -> String {
        match self {
            Self::Connect(e) => e.kind(),
            Self::Ended(kind) => format!("setup_{kind}"),
            Self::HelloTimeout => "hello_timeout".into(),
            Self::Unexpected(what) => format!("setup_{what}"),
        }
    }
}

/// One upgraded connection as a scenario sees it.
pub struct Link {
    /// Where frames for this connection go.
    pub outbox: Rc<Outbox>,
    /// Notified when the route check arrives or the connection ends.
    pub hello: Signal,
    /// The route check arrived.
    pub helloed: Cell<bool>,
    /// Why the connection ended, once it has.
    pub ended: RefCell<Option<String>>,
    /// Streams that break if this connection ends early.
    pub streams: RefCell<Vec<Rc<StreamState>>>,
    /// Its unit finished setup: from now on an early end is a run error (before, it
    /// is the unit's setup error, counted once there).
    pub established: Cell<bool>,
}

impl Link {
    /// Records that the route check arrived.
    pub fn mark_hello(&self) {
        self.helloed.set(true);
        self.hello.notify();
    }

    /// Records how the connection ended and breaks its streams.
    fn finish(&self, ctx: &WorkerCtx, end: &ReadEnd) {
        self.outbox.kill();
        let expected = ctx.is_closing() && matches!(end, ReadEnd::Closed(_) | ReadEnd::Eof);
        if self.established.get() && !expected {
            ctx.stats.error(&end.kind());
            for stream in self.streams.borrow().iter() {
                stream.mark_broken();
            }
        }
        *self.ended.borrow_mut() = Some(end.kind());
        self.hello.notify();
    }
}

/// Opens a WebSocket on `path` and spawns its reader, which calls `on_message(link,
/// is_text, bytes)` for each message.
pub async fn open_link<F>(
    ctx: &Rc<WorkerCtx>,
    path: &str,
    headers: &[(&str, &str)],
    on_message: F,
) -> Result<Rc<Link>, SetupError>
where
    F: FnMut(&Link, bool, &[u8]) + 'static,
{
    let upgraded = open_ws_retrying(ctx, path, headers).await?;
    ctx.stats.connected(upgraded.micros);
    let outbox = Outbox::new(ctx.outbox_limit());
    let reader = conn::start(upgraded, &outbox, ctx.read_chunk(), ctx.plan.idle);
    let link = Rc::new(Link {
        outbox,
        hello: Signal::default(),
        helloed: Cell::new(false),
        ended: RefCell::new(None),
        streams: RefCell::new(Vec::new()),
        established: Cell::new(false),
    });
    monoio::spawn(read_loop(
        Rc::clone(ctx),
        Rc::clone(&link),
        reader,
        on_message,
    ));
    Ok(link)
}

/// First backoff after a `429` with `--retry-rate-limited`.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest backoff between retries.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// One upgrade; with `--retry-rate-limited`, a `429` is retried after a jittered,
/// doubling backoff (the micros then count from the first attempt).
async fn open_ws_retrying(
    ctx: &Rc<WorkerCtx>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<net::Upgraded, ConnectError> {
    let net = &ctx.plan.net;
    let started = Instant::now();
    let mut backoff = RETRY_FIRST;
    loop {
        let source = ctx.sources.pick();
        match net::open_ws(net.target, source, path, headers, net.connect_timeout).await {
            Err(ConnectError::Handshake(HandshakeError::Status(429))) if net.retry_rate_limited => {
                // Jitter in [backoff/2, backoff): clients that were refused together
                // must not come back together.
                let nanos = backoff.as_nanos() as u64;
                let jitter = getrandom::u64().unwrap_or(0) % (nanos / 2).max(1);
                monoio::time::sleep(Duration::from_nanos(nanos / 2 + jitter)).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            Ok(mut upgraded) => {
                upgraded.micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                return Ok(upgraded);
            }
            Err(other) => return Err(other),
        }
    }
}

/// Feeds every message of one connection to `on_message` until it ends.
async fn read_loop<F>(ctx: Rc<WorkerCtx>, link: Rc<Link>, mut reader: WsReader, mut on_message: F)
where
    F: FnMut(&Link, bool, &[u8]),
{
    let _live = LiveGuard::new(&ctx.live);
    let end = loop {
        match reader.next().await {
            Ok(message) => on_message(&link, message.is_text, reader.payload(&message)),
            Err(end) => break end,
        }
    };
    link.finish(&ctx, &end);
}

/// Waits for `link`'s route check, bounded by the connect timeout.
pub async fn await_hello(ctx: &WorkerCtx, link: &Link) -> Result<(), SetupError> {
    let wait = async {
        loop {
            if let Some(kind) = link.ended.borrow().clone() {
                return Err(SetupError::Ended(kind));
            }
            if link.helloed.get() {
                return Ok(());
            }
            link.hello.wait().await;
        }
    };
    monoio::time::timeout(ctx.plan.net.connect_timeout, wait)
        .await
        .map_err(|_| SetupError::HelloTimeout)?
}

/// Counts an unexpected message on a connection (unless the run is closing).
pub fn unexpected(ctx: &WorkerCtx, kind: &str) {
    if !ctx.is_closing() {
        ctx.stats.error(kind);
    }
}

/// Sets up unit `index` of the plan's style on this worker.
pub async fn setup(ctx: &Rc<WorkerCtx>, index: usize) -> Result<Unit, SetupError> {
    match &ctx.plan.style {
        Style::ServerId { .. } => server_id::setup(ctx, index).await,
        Style::Pair { .. } => pair::setup(ctx, index).await,
        Style::Session { .. } => session::setup(ctx, index).await,
        Style::SessionWs { .. } => session_ws::setup(ctx, index).await,
        Style::Echo { .. } => echo::setup(ctx, index).await,
        Style::Ticket { .. } => Ok(Unit::default()),
    }
}

/// The stream id of stream `k` of unit `index` (unique in the run).
pub fn stream_id(ctx: &WorkerCtx, index: usize, k: usize) -> u32 {
    // The plan caps nothing here, but ids only need to be unique modulo 2^32 within
    // one run, far beyond any connection count this machine can hold.
    (index * ctx.plan.style.streams_per_unit() + k) as u32
}

/// Reader logic for a connection receiving JSON probes of `stream`.
pub fn on_json_probe(ctx: &WorkerCtx, link: &Link, stream: &StreamState, bytes: &[u8]) {
    account(
        ctx,
        link,
        stream,
        crate::probe::decode_json(bytes),
        bytes.len(),
    );
}

/// Reader logic for a connection receiving binary probes of `stream`.
pub fn on_binary_probe(ctx: &WorkerCtx, link: &Link, stream: &StreamState, bytes: &[u8]) {
    account(
        ctx,
        link,
        stream,
        crate::probe::decode_binary(bytes),
        bytes.len(),
    );
}

/// Accounts one decoded message for the connection receiving `stream`.
pub fn account(
    ctx: &WorkerCtx,
    link: &Link,
    stream: &StreamState,
    decoded: Result<crate::probe::Decoded, crate::probe::ProbeError>,
    len: usize,
) {
    use crate::probe::Decoded;
    match decoded {
        Ok(Decoded::Hello(id)) if id == stream.id => link.mark_hello(),
        Ok(Decoded::Hello(_)) => ctx.stats.misrouted(),
        Ok(Decoded::Probe(probe)) => {
            crate::stream::receive(&ctx.stats, stream, &probe, len, ctx.clock.now())
        }
        Err(_) => ctx.stats.corrupted(),
    }
}

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("shardrelay-load/", env!("CARGO_PKG_VERSION"));

/// Connections of a unit being set up: if setup fails part-way, dropping this closes
/// the ones already open, so a failed unit never leaves connections behind.
#[derive(Default)]
pub struct Pending {
    /// Connections opened so far.
    links: Vec<Rc<Link>>,
}

impl Pending {
    /// Keeps `link` for the unit; returns it for further use.
    pub fn keep(&mut self, link: Rc<Link>) -> Rc<Link> {
        self.links.push(Rc::clone(&link));
        link
    }

    /// Setup succeeded: the unit with its connections and senders.
    pub fn into_unit(mut self, senders: Vec<Sender>) -> Unit {
        for link in &self.links {
            link.established.set(true);
        }
        Unit {
            links: std::mem::take(&mut self.links),
            senders,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        for link in &self.links {
            link.outbox.close(1000);
        }
    }
}
