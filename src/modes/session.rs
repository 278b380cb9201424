//! Session codes (PROTOCOL §5): a host is given a short code, a browser joins with it.
//! PLACEHOLDER until the session issue lands: every session connection is refused with
//! 1011 so nothing half-built ever carries traffic.

use std::rc::Rc;
use std::time::Instant;

use crate::shard::Shard;
use crate::ws::codec::MessageKind;
use crate::ws::conn::Conn;

/// The session registry of one shard.
#[derive(Debug, Default)]
pub struct Registry {}

/// A host's or browser's part in a session.
#[derive(Debug, Clone)]
pub enum SessionRole {}

/// What a browser moved to the code's owner shard does on arrival.
#[derive(Debug)]
pub struct Resume {}

/// A host upgraded.
pub fn on_host(shard: &Rc<Shard>, conn: Rc<Conn>, leftover: Vec<u8>) {
    conn.close(shard, 1011, "sessions are not available yet");
    shard.spawn_reader(conn, leftover);
}

/// A browser upgraded.
pub fn on_browser(shard: &Rc<Shard>, conn: Rc<Conn>, _code: Option<String>, leftover: Vec<u8>) {
    conn.close(shard, 1011, "sessions are not available yet");
    shard.spawn_reader(conn, leftover);
}

/// A browser arrived from another shard.
pub fn on_resume(shard: &Rc<Shard>, conn: Rc<Conn>, _resume: Resume, unread: Vec<u8>) {
    shard.spawn_reader(conn, unread);
}

/// A message from a host or browser.
pub fn on_message(
    _shard: &Rc<Shard>,
    _conn: &Rc<Conn>,
    role: &SessionRole,
    _kind: MessageKind,
    _payload: &[u8],
    _read_at: Instant,
) {
    match *role {}
}

/// The connection a session member feeds.
pub fn peer_of(_shard: &Shard, role: &SessionRole) -> Option<Rc<Conn>> {
    match *role {}
}

/// A session member left.
pub fn on_gone(_shard: &Rc<Shard>, _conn: &Rc<Conn>, role: SessionRole) {
    match role {}
}

/// Expire codes.
pub fn tick(_shard: &Rc<Shard>, _now: Instant) {}
