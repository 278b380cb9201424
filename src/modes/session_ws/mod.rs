//! Session codes, second protocol (`GET /ws`): the terminal relay as its current web UI
//! and Mac client speak it. One endpoint; the first message decides the role — a Mac
//! `register`s and is given a code, a browser `auth`s with that code. Many browsers per
//! Mac: the Mac's binary frames (terminal output) go to every browser of its session,
//! a browser's binary frames (keystrokes) go to the Mac, and the relay never looks
//! inside them. A few JSON control messages pass between them (see `messages`).
//!
//! This module owns the `/ws` codes its shard minted: each Mac and its browsers. A code
//! is minted only if this shard owns it, so a browser's `auth` is answered here or the
//! browser moves here, once, exactly like a `/browser` join (`Conn::request_move`).
//! It also owns the deadline of `/ws` connections that have not sent their first message.
//!
//! Bounds: at most `--max-browsers-per-session` browsers per code; a browser whose queue
//! would pass `--max-queue` is closed (`1011 "browser backlog full"`), so a Mac is never
//! stalled by one slow browser, while browsers feeding a slow Mac are paused; a
//! connection that sends no first message within `--handshake-timeout` is closed.
//! A fan-out copies the payload once, however many browsers it goes to
//! (`Payload::Fanout`).

mod browser;
mod mac;
pub mod messages;

use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Config;
use crate::modes::session::code::{Alphabet, Code};
use crate::modes::Conn;
use crate::modes::Role;
use crate::modes::StyleHost;
use crate::stats::{ConnKind, Event, Style};
use crate::ws::codec::{MessageKind, OpCode};
use crate::ws::conn::OutFrame;
use crate::ws::payload::Payload;
use messages::Control;

/// The style's name in `/stats` (`forward_by_mode`).
const MODE: Style = Style::SessionWs;

/// The `/ws` code alphabet: upper-case letters and digits without 0/O, 1/I and L
/// (31 characters: 31⁶ ≈ 8.9 × 10⁸ codes).
pub const ALPHABET: Alphabet = Alphabet::new(b"ABCDEFGHJKMNPQRSTUVWXYZ23456789");

/// Characters in a browser id (unique within its session only): 8, as the clients' own
/// relay drew them (64⁸ ids against at most a few dozen browsers).
pub const BROWSER_ID_LEN: usize = 8;

/// A browser's id within its session, as its ASCII bytes.
pub type BrowserId = [u8; BROWSER_ID_LEN];

/// The settings the `/ws` rules use, taken from `Config` once per shard.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--handshake-timeout`: how long a connection has to send its first message.
    pub handshake_timeout: Duration,
    /// `--max-browsers-per-session`: browsers one Mac's session admits.
    pub max_browsers: usize,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            handshake_timeout: config.handshake_timeout,
            max_browsers: config.max_browsers_per_session,
        }
    }
}

/// The `/ws` sessions this shard minted, and the connections still owing a first message.
#[derive(Debug)]
pub struct Registry {
    /// The settings the rules use.
    settings: Settings,
    /// Each connected Mac's session by its code (one code per Mac).
    sessions: HashMap<Code, WsSession, ahash::RandomState>,
    /// First-message deadlines, oldest first (one timeout for all, so pushes come in
    /// order); a connection that already spoke, or is gone, is skipped when it comes due.
    pending: VecDeque<(Instant, Weak<Conn>)>,
    /// `pending`'s length at which it is next compacted (see [`Registry::push_pending`]).
    compact_at: usize,
}

/// Stale first-message deadlines tolerated beyond twice the live ones before the queue
/// is compacted: a flood of connections that speak (or leave) at once cannot make the
/// queue — and the `Conn` allocations its `Weak`s keep — outgrow what is pending.
const STALE_SLACK: usize = 64;

impl Registry {
    /// An empty registry.
    pub fn new(settings: Settings) -> Self {
        Registry {
            settings,
            sessions: HashMap::default(),
            pending: VecDeque::new(),
            compact_at: 0,
        }
    }

    /// Queue `conn`'s first-message deadline; compact the queue when stale entries (for
    /// connections that spoke or left) have doubled it, so pushes stay O(1) amortised.
    fn push_pending(&mut self, due: Instant, conn: &Rc<Conn>) {
        self.pending.push_back((due, Rc::downgrade(conn)));
        if self.pending.len() > self.compact_at {
            self.pending
                .retain(|(_, weak)| weak.upgrade().is_some_and(|c| is_pending(&c)));
            self.compact_at = 2 * self.pending.len() + STALE_SLACK;
        }
    }
}

/// True while `conn` has not sent its first message.
fn is_pending(conn: &Conn) -> bool {
    matches!(&*conn.role.borrow(), Role::SessionWs(WsRole::Pending))
}

/// One Mac and the browsers watching it.
#[derive(Debug)]
struct WsSession {
    /// The Mac's connection.
    mac: Rc<Conn>,
    /// Its browsers by id (at most `--max-browsers-per-session`: a Vec is the cheapest
    /// map at that size, and fan-out walks it in order).
    browsers: Vec<(BrowserId, Rc<Conn>)>,
}

/// A `/ws` connection's part.
#[derive(Debug, Clone, Copy)]
pub enum WsRole {
    /// Upgraded; its first message will say what it is.
    Pending,
    /// A Mac holding `code`.
    Mac {
        /// Its session's code.
        code: Code,
    },
    /// A browser of `code`'s session.
    Browser {
        /// The session's code.
        code: Code,
        /// Its id within the session.
        id: BrowserId,
    },
}

/// What a browser moved to the code's owner shard carries there.
#[derive(Debug)]
pub struct Resume {
    /// The code its `auth` named (upper-cased, of the alphabet).
    code: Code,
}

/// A `/ws` connection upgraded: it has until `--handshake-timeout` to say what it is.
pub fn on_upgrade<S: StyleHost>(shard: &Rc<S>, conn: Rc<Conn>, leftover: Vec<u8>) {
    set_role(&conn, WsRole::Pending);
    let mut reg = shard.session_ws().borrow_mut();
    let due = Instant::now() + reg.settings.handshake_timeout;
    reg.push_pending(due, &conn);
    drop(reg);
    shard.spawn_reader(conn, leftover);
}

/// A browser moved here to `auth` with a code this shard owns.
pub fn on_resume<S: StyleHost>(shard: &Rc<S>, conn: Rc<Conn>, resume: Resume, unread: Vec<u8>) {
    set_role(&conn, WsRole::Pending);
    browser::auth_here(shard, &conn, resume.code);
    shard.spawn_reader(conn, unread);
}

/// A whole message from a `/ws` connection.
pub fn on_message<S: StyleHost>(
    shard: &Rc<S>,
    conn: &Rc<Conn>,
    role: WsRole,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    match role {
        WsRole::Pending => first_message(shard, conn, kind, payload),
        WsRole::Mac { code } => mac::on_message(shard, &code, kind, payload, read_at),
        WsRole::Browser { code, .. } => browser::on_message(shard, &code, kind, payload, read_at),
    }
}

/// The first message decides the role; anything but `register` or `auth` is answered
/// with an error and closes the connection.
fn first_message<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, kind: MessageKind, payload: &[u8]) {
    if kind == MessageKind::Binary {
        return refuse(
            &**shard,
            conn,
            messages::ERROR_NOT_JSON,
            "first message must be JSON",
        );
    }
    match messages::parse(payload) {
        Some(Control::Register) => mac::register(shard, conn),
        Some(Control::Auth { session_code }) => browser::auth(shard, conn, &session_code),
        Some(_) => refuse(
            &**shard,
            conn,
            messages::ERROR_NOT_REGISTER_OR_AUTH,
            "first message must be register or auth",
        ),
        None => refuse(&**shard, conn, messages::ERROR_INVALID_JSON, "invalid JSON"),
    }
}

/// Answer a connection that cannot take part with `error`, then close it `1008 reason`.
fn refuse<S: StyleHost>(shard: &S, conn: &Rc<Conn>, error: &'static str, reason: &str) {
    shard.stats().event(Event::WsFirstMessageRefused);
    *conn.role.borrow_mut() = Role::Detached;
    reply(shard, conn, error);
    conn.close(shard, 1008, reason);
}

/// The Mac a browser's frames feed (its full queue pauses the browser's reader).
pub fn mac_fed_by<S: StyleHost>(shard: &S, role: &WsRole) -> Option<Rc<Conn>> {
    match role {
        WsRole::Browser { code, .. } => mac_of(shard, code),
        WsRole::Pending | WsRole::Mac { .. } => None,
    }
}

/// The Mac holding `code`, if it is still here.
fn mac_of<S: StyleHost>(shard: &S, code: &Code) -> Option<Rc<Conn>> {
    let reg = shard.session_ws().borrow();
    reg.sessions.get(code).map(|session| session.mac.clone())
}

/// A `/ws` connection ended: a Mac takes its code and its browsers with it; a browser
/// leaves its session and the Mac is told.
pub fn on_gone<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, role: WsRole) {
    match role {
        WsRole::Pending => {}
        WsRole::Mac { code } => mac::gone(shard, conn, &code),
        WsRole::Browser { code, id } => browser::gone(shard, conn, &code, &id),
    }
}

/// Deadlines: a connection still without a first message at `--handshake-timeout` is
/// answered with an error and closed `1008`.
pub fn tick<S: StyleHost>(shard: &Rc<S>, now: Instant) {
    for conn in first_message_overdue(&**shard, now) {
        shard.stats().event(Event::WsFirstMessageTimeouts);
        *conn.role.borrow_mut() = Role::Detached;
        reply(&**shard, &conn, messages::ERROR_FIRST_MESSAGE_TIMEOUT);
        conn.close(shard, 1008, "first message timeout");
    }
}

/// Connections whose first-message deadline passed and that are still pending.
fn first_message_overdue<S: StyleHost>(shard: &S, now: Instant) -> Vec<Rc<Conn>> {
    let mut reg = shard.session_ws().borrow_mut();
    let mut overdue = Vec::new();
    while let Some((due, _)) = reg.pending.front() {
        if *due > now {
            break;
        }
        let Some((_, weak)) = reg.pending.pop_front() else {
            break;
        };
        let Some(conn) = weak.upgrade() else {
            continue;
        };
        if is_pending(&conn) && conn.is_open() {
            overdue.push(conn);
        }
    }
    overdue
}

/// Queue one of the relay's own fixed JSON messages to `conn` (no allocation).
fn reply<S: StyleHost>(shard: &S, conn: &Rc<Conn>, text: &'static str) {
    let body = Payload::from(Bytes::from_static(text.as_bytes()));
    conn.send(shard, OutFrame::message(OpCode::Text, None, body, b""));
}

/// Queue a JSON message the relay built to `conn`.
fn reply_owned<S: StyleHost>(shard: &S, conn: &Rc<Conn>, text: String) {
    conn.send(
        shard,
        OutFrame::message(OpCode::Text, None, Payload::from(text), b""),
    );
}

/// Record `conn`'s `/ws` role.
fn set_role(conn: &Conn, role: WsRole) {
    *conn.role.borrow_mut() = Role::SessionWs(role);
}

/// Count `conn` under `kind` in `/stats` `connections` from now on (a `/ws` connection
/// counts as `handshake` until its first message says what it is).
fn set_kind<S: StyleHost>(shard: &S, conn: &Conn, kind: ConnKind) {
    let before = conn.kind.replace(kind);
    let mut stats = shard.stats();
    stats.conn_closed(before);
    stats.conn_opened(kind);
}
