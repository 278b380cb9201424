//! The rendezvous styles. Each connection's `Role` says which registry entry it belongs
//! to; this module dispatches the connection's life events to the style that owns it.
//! Every function here runs on the owner shard of the connection's route key, which the
//! styles see only through [`StyleHost`] (`context.rs`): they import nothing from
//! `shard`, which sits above them.

mod context;
pub mod echo;
pub mod json;
pub mod pair;
pub mod server_id;
pub mod session;
pub mod session_ws;
pub mod ticket;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::http::head::RequestHead;
use crate::http::routes::{Refusal, Route};
use crate::stats::Dropped;
use crate::ws::codec::MessageKind;
use crate::ws::conn::Rendezvous;
pub use context::StyleHost;

/// An upgraded connection as the styles see it: the connection layer's `Conn` carrying
/// a `Role`.
pub type Conn = crate::ws::conn::Conn<Role>;

/// Why a reader pauses, for connections carrying a `Role`.
pub type Pause = crate::ws::conn::Pause<Role>;

impl Rendezvous for Role {
    type Resume = Resume;
}

/// A registry's reference to a member connection: cheap to clone, compared by identity.
/// The relay's registries hold `Rc<Conn>`; their unit tests hold plain `Rc`s of anything,
/// so the rules (claims, grace, matching, joins) run without sockets.
pub trait Handle: Clone {
    /// True when both name the same connection.
    fn same(&self, other: &Self) -> bool;
}

impl<T: ?Sized> Handle for Rc<T> {
    fn same(&self, other: &Self) -> bool {
        Rc::ptr_eq(self, other)
    }
}

/// What a connection is in its rendezvous.
#[derive(Debug, Default)]
pub enum Role {
    /// Upgraded, not yet placed.
    #[default]
    Pending,
    /// The diagnostic echo route.
    Echo,
    /// A binary holding, or claiming, a server-id slot.
    Binary(server_id::BinaryRole),
    /// A phone attached to a server-id slot.
    Phone(server_id::PhoneRole),
    /// One side of a pair.
    Pair(pair::PairRole),
    /// A session host or browser.
    Session(session::SessionRole),
    /// A `/ws` connection: awaiting its first message, a Mac, or a browser.
    SessionWs(session_ws::WsRole),
    /// Taken out of its registry by the relay (closing, or moved to another shard);
    /// its end changes nothing.
    Detached,
}

/// Where an established connection moved to another shard resumes there.
#[derive(Debug)]
pub enum Resume {
    /// A session browser that asked to join a code another shard owns.
    Session(session::Resume),
    /// A `/ws` browser whose `auth` names a code another shard owns.
    SessionWs(session_ws::Resume),
}

/// An upgraded connection arrives on its owner shard.
pub fn on_upgrade<S: StyleHost>(
    shard: &Rc<S>,
    conn: Rc<Conn>,
    route: Route,
    _head: RequestHead,
    leftover: Vec<u8>,
    peer: SocketAddr,
) {
    match route {
        Route::Binary { server_id } => server_id::on_binary(shard, conn, &server_id, leftover),
        Route::Phone {
            server_id,
            device_name,
        } => server_id::on_phone(shard, conn, &server_id, device_name.as_deref(), leftover),
        Route::Echo => echo::on_upgrade(shard, conn, leftover),
        Route::Pair { code } => pair::on_upgrade(shard, conn, code, leftover),
        Route::SessionHost => session::on_host(shard, conn, leftover),
        Route::SessionJoin { code } => session::on_browser(shard, conn, code, leftover, peer.ip()),
        Route::SessionWs => session_ws::on_upgrade(shard, conn, leftover),
        Route::Health | Route::NodeMint | Route::TicketPut { .. } | Route::TicketGet { .. } => {
            // Never upgraded: accept.rs serves these as plain HTTP.
            shard.stats().dropped(Dropped::NotWebsocket);
        }
    }
}

/// An established connection moved here from another shard.
pub fn on_resume<S: StyleHost>(shard: &Rc<S>, conn: Rc<Conn>, resume: Resume, unread: Vec<u8>) {
    match resume {
        Resume::Session(state) => session::on_resume(shard, conn, state, unread),
        Resume::SessionWs(state) => session_ws::on_resume(shard, conn, state, unread),
    }
}

/// A whole data message arrived on `conn`.
pub fn on_message<S: StyleHost>(
    shard: &Rc<S>,
    conn: &Rc<Conn>,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    let role = conn.role.borrow();
    match &*role {
        Role::Echo => echo::on_message(&**shard, conn, kind, payload, read_at),
        Role::Binary(binary) => {
            let binary = binary.clone();
            drop(role);
            server_id::on_binary_message(shard, conn, &binary, kind, payload, read_at);
        }
        Role::Phone(phone) => {
            let phone = phone.clone();
            drop(role);
            server_id::on_phone_message(shard, conn, &phone, kind, payload, read_at);
        }
        Role::Pair(side) => {
            let side = side.clone();
            drop(role);
            pair::on_message(shard, conn, &side, kind, payload, read_at);
        }
        Role::Session(session) => {
            let session = session.clone();
            drop(role);
            session::on_message(shard, conn, &session, kind, payload, read_at);
        }
        Role::SessionWs(ws) => {
            let ws = *ws;
            drop(role);
            session_ws::on_message(shard, conn, ws, kind, payload, read_at);
        }
        Role::Pending | Role::Detached => shard.stats().dropped(Dropped::Detached),
    }
}

/// Bytes arrived on `conn` (any frame): a probed server-id holder has answered.
pub fn on_activity<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>) {
    let probed = matches!(&*conn.role.borrow(), Role::Binary(b) if b.is_probed());
    if probed {
        server_id::on_incumbent_answered(shard, conn);
    }
}

/// Why `conn`'s reader should stop reading for now (PROTOCOL §2 back-pressure, §2.1
/// bounds): its own queue is full (a client that sends without reading the relay's
/// answers — errors, echoes), the connection it feeds has a full queue, or a lone pair
/// side has filled its early bound. "Full" is `--max-queue`, or — while the process is
/// at its memory limit — the small `PRESSURE_ROOM`, so that nothing grows at the limit and
/// the readers feeding the largest queues are the ones that wait. At the limit a reader whose own buffers (a message being
/// reassembled, frames not yet decoded) exceed its share pauses too.
///
/// A server-id binary never pauses for its own queue: phones fill it, and they are the
/// ones paused; a binary whose reads stopped could not answer a takeover probe, and a
/// stranger's phone could then take its server-id (§2.1 liveness). A binary that does not
/// drain is closed by the stall clock instead.
pub fn pause_for<S: StyleHost>(shard: &S, conn: &Rc<Conn>) -> Option<Pause> {
    if !conn.is_open() {
        // Closing: it reads on (discarding) until its close frame or EOF ends it.
        return None;
    }
    let share = pressure_share(shard);
    if share.is_some_and(|share| conn.held_bytes() > share) {
        return Some(Pause::Pressure(shard.tick_period()));
    }
    let max_queue = shard.max_queue();
    // At the limit nothing grows: every feeder of a queue past the pressure floor waits.
    let room = share.map_or(max_queue, |_| crate::memory::PRESSURE_ROOM.min(max_queue));
    let role = conn.role.borrow();
    if !matches!(&*role, Role::Binary(_)) && conn.is_full(room) {
        return Some(Pause::Room(conn.clone(), room));
    }
    if !matches!(&*role, Role::Binary(_)) && conn.owes_unwritten_pong() {
        // Pings without reading the pongs: read no more of them until the pong is
        // written (TCP back-pressure), so a ping flood cannot keep a shard decoding at
        // wire speed; the stall clock closes the client if it never reads.
        return Some(Pause::Room(conn.clone(), 1));
    }
    let fed = match &*role {
        Role::Phone(phone) => server_id::binary_of(shard, phone),
        Role::Session(session) => session::peer_of(shard, session),
        Role::Pair(side) => return pair::pause_for(shard, side, room),
        Role::SessionWs(ws) => session_ws::mac_fed_by(shard, ws),
        _ => None,
    }?;
    fed.is_full(room).then_some(Pause::Room(fed, room))
}

/// A connection's share of `--memory-limit` while the process is at it; None below it.
pub fn pressure_share<S: StyleHost>(shard: &S) -> Option<usize> {
    crate::memory::over_limit()
        .then(|| crate::memory::share(shard.open_connections(), shard.max_queue()))
}

/// A refusal that depends on a registry, decided on the owner shard just before the
/// upgrade: a third side for a full pair gets `409 pair is full`.
pub fn refusal_before_upgrade<S: StyleHost>(shard: &S, route: &Route) -> Option<Refusal> {
    match route {
        Route::Pair { code } if pair::is_full(shard, code) => Some(Refusal::pair_full()),
        _ => None,
    }
}

/// The connection ended: its rendezvous forgets it and tells whoever must know.
pub fn on_disconnect<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>) {
    let role = std::mem::replace(&mut *conn.role.borrow_mut(), Role::Detached);
    match role {
        Role::Binary(binary) => server_id::on_binary_gone(shard, conn, &binary),
        Role::Phone(phone) => server_id::on_phone_gone(shard, conn, &phone),
        Role::Pair(side) => pair::on_gone(shard, conn, side),
        Role::Session(session) => session::on_gone(shard, conn, session),
        Role::SessionWs(ws) => session_ws::on_gone(shard, conn, ws),
        Role::Echo | Role::Pending | Role::Detached => {}
    }
}

/// Housekeeping from the shard's tick: every style's deadlines.
pub fn tick<S: StyleHost>(shard: &Rc<S>, now: Instant) {
    server_id::tick(shard, now);
    pair::tick(shard, now);
    session::tick(shard, now);
    session_ws::tick(shard, now);
    ticket::tick(shard, now);
}
