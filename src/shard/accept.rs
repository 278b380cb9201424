//! The accept path: accept, admission, read the request head under its caps and timeout,
//! classify the route, then either answer here (health, admin, every pre-upgrade
//! rejection — none touches a registry) or upgrade on the owner shard of the route key,
//! handing the socket over when it landed on another shard.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};

use crate::http::head::{parse_head, HeadError, HeadLimits, RequestHead};
use crate::http::response;
use crate::http::routes::{self, Route};
use crate::http::upgrade;
use crate::modes;
use crate::modes::Conn;
use crate::net;
use crate::shard::admin;
use crate::shard::refuse::{refuse, refuse_at_accept, Admission};
use crate::shard::{client_addr, ConnPermit, Handoff, InboxMsg, Shard, Upgrade};
use crate::stats::{ConnKind, Event, Rejected};
use crate::sys;
use crate::tls::Link;

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Rendezvous, tickets, health.
    Public,
    /// Health, stats, metrics, ticket minting.
    Admin,
}

/// First pause after an accept error such as EMFILE, so a full descriptor table does not
/// spin the shard; it doubles while errors continue, up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF: Duration = Duration::from_millis(5);

/// Longest pause between accept attempts while they keep failing: a freed descriptor is
/// used within this long.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Accept errors are logged at most once per this period, with their count.
const ACCEPT_LOG_PERIOD: Duration = Duration::from_secs(1);

/// Head bytes asked of the kernel per read while the head is incomplete.
const HEAD_READ: usize = 2048;

/// Accept until the listener is shut down.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, which: Listener) {
    let mut errors = AcceptErrors::default();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                errors.recovered();
                if shard.shutting_down.get() {
                    continue;
                }
                shard.stats.borrow_mut().accepted();
                let permit = match which {
                    Listener::Admin => None,
                    Listener::Public if client_addr::untrusted_at_accept(&shard, peer) => {
                        continue;
                    }
                    Listener::Public => match admit(&shard, peer) {
                        Ok(permit) => Some(permit),
                        Err(refusal) => {
                            refuse_at_accept(&shard, &stream, refusal);
                            continue;
                        }
                    },
                };
                monoio::spawn(serve_new(
                    shard.clone(),
                    stream,
                    peer,
                    which,
                    Instant::now(),
                    permit,
                ));
            }
            Err(_) if shard.shutting_down.get() => return,
            // The shards share one listening socket: once any shard has shut it down for
            // shutdown, accept fails with EINVAL here too, maybe before this shard has read
            // its own `Shutdown`. Nothing else makes accept on a listener fail so.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => {
                let pause = errors.failed(&shard, which, &e);
                monoio::time::sleep(pause).await;
            }
        }
    }
}

/// A run of accept errors: logged at most once per [`ACCEPT_LOG_PERIOD`] with a count,
/// and paced by a growing back-off.
#[derive(Debug, Default)]
struct AcceptErrors {
    /// Errors since the last log line.
    unlogged: u64,
    /// When the last log line was written.
    logged_at: Option<Instant>,
    /// The next pause (zero when the last accept succeeded).
    backoff: Duration,
}

impl AcceptErrors {
    /// One more error: log if due, and return how long to pause.
    fn failed(&mut self, shard: &Shard, which: Listener, error: &io::Error) -> Duration {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= ACCEPT_LOG_PERIOD)
        {
            tracing::warn!(
                shard = shard.id,
                listener = ?which,
                error = %error,
                count = self.unlogged,
                "accept failed"
            );
            self.unlogged = 0;
            self.logged_at = Some(now);
        }
        shard.stats.borrow_mut().event(Event::AcceptErrors);
        self.backoff = (self.backoff * 2).clamp(ACCEPT_BACKOFF, ACCEPT_BACKOFF_MAX);
        self.backoff
    }

    /// An accept succeeded: the back-off starts again from its first step.
    fn recovered(&mut self) {
        self.backoff = Duration::ZERO;
    }
}

/// Serve one new TCP connection up to its upgrade (or its one HTTP response).
///
/// The refusals, the admin routes and ticket transfers are awaited through `Box::pin`:
/// an async fn's state is as large as its largest branch, and without the boxes every
/// WebSocket handshake would carry a ticket transfer's state (a 7.5 KB task instead of 3.2 KB
/// per handshake in flight, a high-water mark the allocator keeps).
async fn serve_new(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    which: Listener,
    accepted_at: Instant,
    permit: Option<ConnPermit>,
) {
    sys::set_nodelay(stream.as_raw_fd());
    tracing::debug!(shard = shard.id, %peer, listener = ?which, "accepted");
    let _in_handshake = (which == Listener::Public).then(|| HandshakeGauge::open(&shard));
    let (client, early) = match which {
        Listener::Admin => (peer, Vec::new()),
        Listener::Public => {
            let budget = client_addr::time_left(&shard, accepted_at);
            match client_addr::arrive(&shard, &stream, peer, budget).await {
                Some(arrived) => (arrived.client, arrived.early),
                None => return,
            }
        }
    };
    // What came after a PROXY header is the start of the TLS stream on a TLS listener,
    // and the start of the request head otherwise.
    let (tls_bytes, head_bytes) = match (&shard.global.tls, which) {
        (Some(_), Listener::Public) => (early, Vec::new()),
        _ => (Vec::new(), early),
    };
    let Some(mut link) = new_link(&shard, which, tls_bytes) else {
        return;
    };
    // Over TLS the handshake runs inside this read (and so inside the timeout).
    let timeout = client_addr::time_left(&shard, accepted_at);
    let read =
        monoio::time::timeout(timeout, read_head(&shard, &stream, head_bytes, &mut link)).await;
    let (head, leftover) = match read {
        Err(_) => {
            shard
                .stats
                .borrow_mut()
                .rejected(Rejected::HandshakeTimeout);
            return;
        }
        Ok(Err(HeadFailure::Closed)) => return,
        Ok(Err(HeadFailure::Tls)) => {
            // PROTOCOL §1.1: no HTTP answer to a failed handshake or plain HTTP.
            shard.stats.borrow_mut().rejected(Rejected::TlsHandshake);
            return;
        }
        Ok(Err(HeadFailure::Bad(err))) => {
            let reason = head_error_name(err);
            let resp = response::close_response(err.status(), "text/plain", &[], b"");
            return Box::pin(refuse(&shard, stream, link, reason, resp)).await;
        }
        Ok(Ok(parsed)) => parsed,
    };
    match which {
        Listener::Admin => Box::pin(admin::serve(&shard, stream, head, leftover)).await,
        Listener::Public => {
            let first = Accepted {
                peer: client,
                accepted_at,
                permit,
            };
            route_public(&shard, stream, link, head, leftover, first).await
        }
    }
}

/// What the accept path knows of a public connection besides its head.
struct Accepted {
    /// The client's address.
    peer: SocketAddr,
    /// When it was accepted (handshake histogram).
    accepted_at: Instant,
    /// Its place under `--max-connections`.
    permit: Option<ConnPermit>,
}

/// The transport of a new connection: TLS on a public listener with `--tls-cert`, the
/// handshake to run on its first reads under the pair in force now; plain otherwise.
/// `already_read` is what was read from the socket before the TLS bytes begin (nothing
/// today; a PROXY protocol header reader hands on what followed the header).
pub fn new_link(shard: &Shard, which: Listener, already_read: Vec<u8>) -> Option<Link> {
    let keys = match (&shard.global.tls, which) {
        (Some(keys), Listener::Public) => keys,
        _ => return Some(Link::plain()),
    };
    match crate::tls::start(keys, already_read) {
        Ok(link) => Some(link),
        Err(e) => {
            tracing::warn!(shard = shard.id, error = %e, "could not start a TLS session");
            shard.stats.borrow_mut().rejected(Rejected::TlsHandshake);
            None
        }
    }
}

/// Counts a connection under `connections.handshake` from its accept until this shard is
/// done with its head (answered, upgraded, or handed to its owner).
struct HandshakeGauge<'a>(&'a Shard);

impl<'a> HandshakeGauge<'a> {
    fn open(shard: &'a Shard) -> Self {
        shard.stats.borrow_mut().conn_opened(ConnKind::Handshake);
        HandshakeGauge(shard)
    }
}

impl Drop for HandshakeGauge<'_> {
    fn drop(&mut self) {
        self.0.stats.borrow_mut().conn_closed(ConnKind::Handshake);
    }
}

/// Admission of a public connection: the global cap, then the per-IP rate when the
/// socket peer is the client (behind a balancer it waits for the client's address,
/// `client_addr`). O(1): one atomic and, with `--per-ip-rate`, one look-up in the
/// per-IP table.
fn admit(shard: &Shard, peer: SocketAddr) -> Result<ConnPermit, Admission> {
    let Some(permit) = shard.global.admit() else {
        return Err(Admission::OverCapacity);
    };
    if client_addr::rate_at_accept(shard.config(), peer.ip())
        && !client_addr::rate_allows(shard, peer.ip())
    {
        return Err(Admission::RateLimited);
    }
    Ok(permit)
}

/// Classify a public request and serve it here or on its owner shard. `hop` is the
/// client address known before the head (socket peer or PROXY source).
async fn route_public(
    shard: &Rc<Shard>,
    stream: TcpStream,
    link: Link,
    mut head: RequestHead,
    leftover: Vec<u8>,
    first: Accepted,
) {
    let Accepted {
        peer: hop,
        accepted_at,
        permit,
    } = first;
    let peer = match client_addr::after_head(shard, hop, &head) {
        Ok(client) => client,
        Err(_) => {
            let body = b"too many connection attempts\n";
            let resp = response::close_response(429, "text/plain", &[], body);
            return Box::pin(refuse(shard, stream, link, Rejected::RateLimited, resp)).await;
        }
    };
    let route = match routes::classify(&head, shard.config()) {
        Ok(route) => route,
        Err(refusal) => {
            return Box::pin(refuse(
                shard,
                stream,
                link,
                refusal.reason,
                refusal.response,
            ))
            .await
        }
    };
    if route == Route::NodeMint {
        return Box::pin(serve_node_mint(shard, stream, link, head, leftover)).await;
    }
    // Courier credentials were checked for presence by classify(); drop them now so no
    // later code path can log, forward or store them.
    routes::drop_credentials(&mut head);
    if route == Route::Health {
        return Box::pin(admin::serve_health(shard, stream, link)).await;
    }
    let accept_key = if route.is_websocket() {
        match upgrade::check_upgrade(&head) {
            Ok(key) => key,
            Err(refusal) => {
                let resp = refusal.response();
                return Box::pin(refuse(shard, stream, link, Rejected::BadUpgrade, resp)).await;
            }
        }
    } else {
        String::new()
    };
    if matches!(route, Route::SessionJoin { code: Some(_) })
        && !shard.global.may_try_code(peer.ip())
    {
        shard.stats.borrow_mut().event(Event::JoinsRateLimited);
        let resp = response::close_response(429, "text/plain", &[], b"too many failed joins\n");
        return Box::pin(refuse(shard, stream, link, Rejected::JoinRateLimited, resp)).await;
    }
    let Some(permit) = permit else {
        // Public connections always carry a permit; an admin one never gets here.
        return;
    };
    let request = Upgrade {
        peer,
        head,
        leftover,
        route,
        accept_key,
        accepted_at,
        permit,
        link,
    };
    place(shard, stream, request).await;
}

/// Serve on this shard if it owns the route key, else move the socket to the owner.
async fn place(shard: &Rc<Shard>, stream: TcpStream, request: Upgrade) {
    let owner = request
        .route
        .key()
        .map_or(shard.id, |key| shard.global.shard_of(key));
    if owner == shard.id {
        return serve_here(shard, stream, request).await;
    }
    tracing::debug!(shard = shard.id, owner, peer = %request.peer, "handed off");
    let handoff = Handoff {
        fd: sys::into_owned_fd(stream),
        sent_at: Instant::now(),
        upgrade: request,
    };
    shard.stats.borrow_mut().handed_off();
    let inbox = &shard.global.inboxes[owner];
    if !inbox.send(InboxMsg::Adopt(Box::new(handoff))) {
        tracing::warn!(
            shard = shard.id,
            owner,
            "owner shard is gone; connection dropped"
        );
    }
}

/// A connection handed to this shard: adopt its socket and upgrade it.
pub fn adopt(shard: &Rc<Shard>, handoff: Handoff) {
    let micros = handoff.sent_at.elapsed().as_micros() as u64;
    let stream = match sys::adopt_stream(handoff.fd) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(shard = shard.id, error = %e, "could not adopt a handed-off socket");
            return;
        }
    };
    {
        let mut stats = shard.stats.borrow_mut();
        stats.adopted();
        stats.record_handoff(micros);
    }
    let shard = shard.clone();
    let request = handoff.upgrade;
    monoio::spawn(async move { serve_here(&shard, stream, request).await });
}

/// Serve a request on its owner shard: tickets as plain HTTP, the rest as WebSockets.
async fn serve_here(shard: &Rc<Shard>, stream: TcpStream, request: Upgrade) {
    if request.route.is_websocket() {
        upgrade_here(shard, stream, request).await
    } else {
        Box::pin(modes::ticket::serve(shard.clone(), stream, request)).await
    }
}

/// Send the 101 and give the connection to its rendezvous. The registry decision and
/// the queued 101 happen with no await in between, so no other connection can slip in.
async fn upgrade_here(shard: &Rc<Shard>, stream: TcpStream, mut request: Upgrade) {
    let link = std::mem::take(&mut request.link);
    if shard.shutting_down.get() {
        let resp = response::close_response(503, "text/plain", &[], b"shutting down\n");
        return Box::pin(refuse(shard, stream, link, Rejected::ShuttingDown, resp)).await;
    }
    if crate::memory::over_limit() {
        // PROTOCOL §2.1: at the memory limit no new WebSocket is taken on.
        let resp = response::close_response(503, "text/plain", &[], b"memory limit\n");
        return Box::pin(refuse(shard, stream, link, Rejected::MemoryLimit, resp)).await;
    }
    if let Some(refusal) = modes::refusal_before_upgrade(&**shard, &request.route) {
        return Box::pin(refuse(
            shard,
            stream,
            link,
            refusal.reason,
            refusal.response,
        ))
        .await;
    }
    let kind = request.route.conn_kind();
    let conn = match Conn::new(sys::into_owned_fd(stream), kind, request.permit, link) {
        Ok(conn) => conn,
        Err(e) => {
            // The runtime could not register the socket; the client sees it close.
            tracing::warn!(shard = shard.id, error = %e, "could not register an upgraded socket");
            shard.stats.borrow_mut().rejected(Rejected::RegisterFailed);
            return;
        }
    };
    let cfg = shard.config();
    if cfg.proxy_protocol || cfg.trust_forwarded_for {
        // Behind a balancer the socket peer is not the client (PROTOCOL §1.2).
        conn.set_client(request.peer);
    }
    shard.stats.borrow_mut().conn_opened(kind);
    conn.send_handshake(shard, response::switching_protocols(&request.accept_key));
    tracing::debug!(shard = shard.id, peer = %request.peer, kind = kind.name(), "upgraded");
    let (route, head, leftover) = (request.route, request.head, request.leftover);
    modes::on_upgrade(shard, conn, route, head, leftover, request.peer);
    shard.flush_dirty();
    let micros = request.accepted_at.elapsed().as_micros() as u64;
    shard.stats.borrow_mut().record_handshake(micros);
}

/// Why reading a head stopped.
#[derive(Debug)]
enum HeadFailure {
    /// The client went away (or the socket failed) before a whole head arrived.
    Closed,
    /// The head broke a cap or the grammar.
    Bad(HeadError),
    /// The TLS handshake failed (or the bytes were not TLS at all).
    Tls,
}

/// Read until a whole request head is in; return it and the bytes after it. `early`
/// holds the head's first bytes when a step before (the PROXY header) read them.
async fn read_head(
    shard: &Shard,
    stream: &TcpStream,
    early: Vec<u8>,
    link: &mut Link,
) -> Result<(RequestHead, Vec<u8>), HeadFailure> {
    let cfg = shard.config();
    let limits = HeadLimits {
        max_head_bytes: cfg.max_head,
        max_headers: cfg.max_headers,
        max_header_value: cfg.max_header_value,
    };
    let mut buf = early;
    // The head buffer is charged to the memory budget while it is read (PROTOCOL §2.1).
    let mut held = crate::memory::Held::default();
    held.set(buf.capacity());
    if let Some(parsed) = parse_early(&mut buf, &limits)? {
        return Ok(parsed);
    }
    // A ClientHello read with a PROXY header is in the link already: the client waits
    // for our answer, so it is read before waiting on the socket.
    let mut wait = !link.has_seed();
    loop {
        // A TLS handshake flight the socket did not take at once goes first.
        net::flush_link(stream, link)
            .await
            .map_err(|_| HeadFailure::Closed)?;
        if wait {
            stream
                .readable(false)
                .await
                .map_err(|_| HeadFailure::Closed)?;
        }
        wait = true;
        loop {
            let room = (limits.max_head_bytes + 1)
                .saturating_sub(buf.len())
                .clamp(1, HEAD_READ);
            match link.recv_into(stream.as_raw_fd(), &mut buf, room) {
                Ok(0) => return Err(HeadFailure::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(HeadFailure::Tls),
                Err(_) => return Err(HeadFailure::Closed),
            }
            held.set(buf.capacity());
            match parse_head(&buf, &limits) {
                Ok(Some((head, len))) => {
                    let leftover = buf.split_off(len);
                    return Ok((head, leftover));
                }
                Ok(None) => {}
                Err(err) => return Err(HeadFailure::Bad(err)),
            }
        }
    }
}

/// A whole head already among the bytes read before the head step, if there is one.
fn parse_early(
    buf: &mut Vec<u8>,
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, Vec<u8>)>, HeadFailure> {
    if buf.is_empty() {
        return Ok(None);
    }
    match parse_head(buf, limits) {
        Ok(Some((head, len))) => Ok(Some((head, buf.split_off(len)))),
        Ok(None) => Ok(None),
        Err(err) => Err(HeadFailure::Bad(err)),
    }
}

/// The stats reason for a head error.
fn head_error_name(err: HeadError) -> Rejected {
    match err {
        HeadError::HeadTooLarge { .. } => Rejected::HeadTooLarge,
        HeadError::TooManyHeaders { .. } => Rejected::TooManyHeaders,
        HeadError::HeaderValueTooLong { .. } => Rejected::HeaderValueTooLong,
        HeadError::Malformed => Rejected::MalformedHead,
        HeadError::DuplicateContentLength => Rejected::DuplicateContentLength,
        HeadError::BadContentLength => Rejected::BadContentLength,
        HeadError::DuplicateTransferEncoding => Rejected::DuplicateTransferEncoding,
    }
}

/// The kind counted for a route once upgraded.
impl Route {
    /// The `/stats` connection kind of an upgraded route.
    pub fn conn_kind(&self) -> ConnKind {
        match self {
            Route::Binary { .. } => ConnKind::Binary,
            Route::Phone { .. } => ConnKind::Phone,
            Route::Pair { .. } => ConnKind::Pair,
            Route::SessionHost => ConnKind::SessionHost,
            Route::SessionJoin { .. } => ConnKind::SessionBrowser,
            // Mac or browser is known only from its first message; until then it is
            // still in its (application-level) handshake.
            Route::SessionWs => ConnKind::Handshake,
            Route::TicketPut { .. } => ConnKind::TicketPut,
            Route::TicketGet { .. } => ConnKind::TicketGet,
            Route::Echo | Route::Health | Route::NodeMint => ConnKind::Echo,
        }
    }
}

/// A mint another node handed here (PROTOCOL §9): served as on the admin listener, but
/// only over plain TCP and only when an admin token is configured (it is the only thing
/// that tells a node from anyone else on the public listener); otherwise `404`.
async fn serve_node_mint(
    shard: &Rc<Shard>,
    stream: TcpStream,
    link: Link,
    head: RequestHead,
    body: Vec<u8>,
) {
    if shard.global.admin_token.is_none() || link.is_tls() {
        let resp = response::close_response(404, "text/plain", &[], b"not found\n");
        return refuse(shard, stream, link, Rejected::NotFound, resp).await;
    }
    admin::serve(shard, stream, head, body).await
}
