//! Session codes (PROTOCOL §5): a host (`/mac`) is given a short code, a browser
//! (`/browser`) joins with it, and then their `data` messages pass between them verbatim.
//! This module owns the codes its shard minted: their hosts, their browsers once joined,
//! and their deadlines. A code is minted only if this shard owns it, so a joining browser
//! is routed — or moved — to the shard that holds its host.

mod browser;
pub mod code;
mod host;
pub mod messages;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::time::Instant;

use crate::modes::Conn;
use crate::modes::Role;
use crate::shard::Shard;
use crate::ws::codec::{MessageKind, OpCode};
use crate::ws::conn::OutFrame;
use crate::ws::payload::Payload;
use browser::{fail_join, join, join_here, leave};
use code::Code;
use host::{
    close_due, expire_due, mint, open_code, refuse_mint, register, remove_host, send_registered,
};
use messages::{ErrorCode, Invalid, Message};

/// The style's name in `/stats` (`forward_by_mode`).
const MODE: &str = "session";

/// The codes this shard minted, and their deadlines.
#[derive(Debug, Default)]
pub struct Registry {
    /// Each connected host by its live code (one code per host).
    hosts: HashMap<Code, HostEntry, ahash::RandomState>,
    /// Open codes' expiry instants, oldest first (one TTL for all, so pushes come in
    /// order); entries whose code moved on are skipped when they come due.
    expiries: VecDeque<(Instant, Code)>,
    /// Expired codes' close instants (expiry + TTL), oldest first, skipped the same way.
    closes: VecDeque<(Instant, Code)>,
}

/// Stale deadlines tolerated beyond two per host before a queue is compacted: a host
/// that registers in a loop cannot grow the queues past a constant factor.
const STALE_SLACK: usize = 64;

impl Registry {
    /// Queue an open code's expiry.
    fn push_expiry(&mut self, due: Instant, code: Code) {
        self.expiries.push_back((due, code));
        if self.expiries.len() > 2 * self.hosts.len() + STALE_SLACK {
            let hosts = &self.hosts;
            self.expiries
                .retain(|(due, code)| hosts.get(code).is_some_and(|e| e.state.expires_at(*due)));
        }
    }

    /// Queue an expired code's close.
    fn push_close(&mut self, due: Instant, code: Code) {
        self.closes.push_back((due, code));
        if self.closes.len() > 2 * self.hosts.len() + STALE_SLACK {
            let hosts = &self.hosts;
            self.closes
                .retain(|(due, code)| hosts.get(code).is_some_and(|e| e.state.closes_at(*due)));
        }
    }
}

/// One host and the state of its code.
#[derive(Debug)]
struct HostEntry {
    /// The host's connection.
    host: Rc<Conn>,
    /// Joinable, expired, or joined.
    state: CodeState,
}

/// Where a code is in its life.
#[derive(Debug)]
enum CodeState {
    /// Joinable until `expires`.
    Open {
        /// End of the code TTL.
        expires: Instant,
    },
    /// Past its TTL: joins get `EXPIRED_CODE`; the host is closed at `close_at` unless
    /// it registers again.
    Expired {
        /// Expiry plus one more code TTL.
        close_at: Instant,
    },
    /// A browser joined: no deadline while both stay.
    Joined {
        /// The joined browser.
        browser: Rc<Conn>,
    },
}

impl CodeState {
    /// Open, expiring at `due`.
    fn expires_at(&self, due: Instant) -> bool {
        matches!(self, CodeState::Open { expires } if *expires == due)
    }

    /// Expired, closing its host at `due`.
    fn closes_at(&self, due: Instant) -> bool {
        matches!(self, CodeState::Expired { close_at } if *close_at == due)
    }
}

/// A host's or browser's part in a session.
#[derive(Debug, Clone)]
pub enum SessionRole {
    /// A host and its current code.
    Host {
        /// The code it holds.
        code: Code,
    },
    /// A browser, joined or not.
    Browser(BrowserRole),
}

/// A browser's progress.
#[derive(Debug, Clone)]
pub struct BrowserRole {
    /// The browser's source address, whose guessing budget its failed joins spend.
    client: IpAddr,
    /// The code it joined.
    joined: Option<Code>,
    /// Joins answered with an error on this connection (it survives moves).
    failed_joins: u8,
    /// The browser's own connection, whose queue also takes the relay's answers.
    this: Weak<Conn>,
}

/// What a browser moved to the code's owner shard carries there.
#[derive(Debug)]
pub struct Resume {
    /// The code it asked to join.
    code: Code,
    /// Its source address.
    client: IpAddr,
    /// Its failed joins so far.
    failed_joins: u8,
}

/// A host upgraded: mint its code and tell it.
pub fn on_host(shard: &Rc<Shard>, conn: Rc<Conn>, leftover: Vec<u8>) {
    match mint(shard) {
        Some(code) => {
            open_code(shard, &conn, code);
            shard.stats.borrow_mut().gauge_add("sessions", 1);
            set_role(&conn, SessionRole::Host { code });
            send_registered(shard, &conn, &code);
        }
        None => refuse_mint(shard, &conn),
    }
    shard.spawn_reader(conn, leftover);
}

/// A browser from `client` upgraded; with `?code=` it was routed here, the code's owner,
/// and joins now (its address's guessing budget was checked before the upgrade, and is
/// again here).
pub fn on_browser(
    shard: &Rc<Shard>,
    conn: Rc<Conn>,
    code: Option<String>,
    leftover: Vec<u8>,
    client: IpAddr,
) {
    let role = BrowserRole {
        client,
        joined: None,
        failed_joins: 0,
        this: Rc::downgrade(&conn),
    };
    set_role(&conn, SessionRole::Browser(role.clone()));
    if let Some(text) = code {
        match code::parse(&text) {
            _ if !shard.global.may_try_code(client) => {
                fail_join(shard, &conn, role, ErrorCode::RateLimited)
            }
            Some(code) => join_here(shard, &conn, role, code),
            None => fail_join(shard, &conn, role, ErrorCode::InvalidCode),
        }
    }
    shard.spawn_reader(conn, leftover);
}

/// A browser moved here to join a code this shard owns.
pub fn on_resume(shard: &Rc<Shard>, conn: Rc<Conn>, resume: Resume, unread: Vec<u8>) {
    let role = BrowserRole {
        client: resume.client,
        joined: None,
        failed_joins: resume.failed_joins,
        this: Rc::downgrade(&conn),
    };
    set_role(&conn, SessionRole::Browser(role.clone()));
    join_here(shard, &conn, role, resume.code);
    shard.spawn_reader(conn, unread);
}

/// A message from a host or browser: its shape is checked before any state.
pub fn on_message(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    role: &SessionRole,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    let parsed = match kind {
        MessageKind::Binary => Err(Invalid::Binary),
        MessageKind::Text => Message::parse(payload),
    };
    let message = match parsed {
        Ok(message) => message,
        Err(why) => {
            shard.stats.borrow_mut().dropped("session_invalid_message");
            let text = ErrorCode::InvalidMessage.with_detail(&why.to_string());
            return reply(shard, conn, text);
        }
    };
    match (role, message) {
        (_, Message::Ping { ts }) => reply(shard, conn, Message::Pong { ts }.to_text()),
        (SessionRole::Host { code }, Message::Register { .. }) => register(shard, conn, *code),
        (SessionRole::Browser(browser), Message::Join { code }) => {
            join(shard, conn, browser.clone(), &code)
        }
        (_, Message::Data { .. }) => forward(shard, conn, role, payload, read_at),
        (_, other) => {
            shard.stats.borrow_mut().dropped("session_invalid_message");
            let side = match role {
                SessionRole::Host { .. } => "host",
                SessionRole::Browser(_) => "browser",
            };
            let detail = format!("a {side} does not send {}", other.kind());
            reply(shard, conn, ErrorCode::InvalidMessage.with_detail(&detail));
        }
    }
}

/// The connection whose full queue pauses a session member's reader (PROTOCOL §2.7):
/// its own while the relay's answers to it (pongs, errors) are unread, else its joined
/// peer, which its `data` feeds.
pub fn peer_of(shard: &Shard, role: &SessionRole) -> Option<Rc<Conn>> {
    let (own, peer) = members(shard, role);
    match own {
        Some(own) if own.is_full(shard.config().max_queue) => Some(own),
        _ => peer,
    }
}

/// A session member's own connection and its joined peer, as far as they are known.
fn members(shard: &Shard, role: &SessionRole) -> (Option<Rc<Conn>>, Option<Rc<Conn>>) {
    let reg = shard.sessions.borrow();
    match role {
        SessionRole::Host { code } => match reg.hosts.get(code) {
            Some(entry) => {
                let peer = match &entry.state {
                    CodeState::Joined { browser } => Some(browser.clone()),
                    _ => None,
                };
                (Some(entry.host.clone()), peer)
            }
            None => (None, None),
        },
        SessionRole::Browser(browser) => {
            let peer = browser
                .joined
                .and_then(|code| reg.hosts.get(&code))
                .filter(|entry| matches!(entry.state, CodeState::Joined { .. }))
                .map(|entry| entry.host.clone());
            (browser.this.upgrade(), peer)
        }
    }
}

/// A session member left: a host takes its code and its browser with it; a browser
/// leaves its host waiting with the code joinable again.
pub fn on_gone(shard: &Rc<Shard>, conn: &Rc<Conn>, role: SessionRole) {
    match role {
        SessionRole::Host { code } => {
            if let Some(CodeState::Joined { browser }) = remove_host(shard, conn, &code) {
                *browser.role.borrow_mut() = Role::Detached;
                reply(shard, &browser, ErrorCode::MacDisconnected.to_text());
                browser.close(shard, 1000, "peer disconnected");
            }
        }
        SessionRole::Browser(BrowserRole {
            joined: Some(code), ..
        }) => leave(shard, conn, code),
        SessionRole::Browser(_) => {}
    }
}

/// Deadlines: open codes past their TTL expire; hosts that did not register again
/// within a further TTL are closed with 4408.
pub fn tick(shard: &Rc<Shard>, now: Instant) {
    for host in expire_due(shard, now) {
        shard.stats.borrow_mut().event("codes_expired");
        reply(shard, &host, ErrorCode::ExpiredCode.to_text());
    }
    for host in close_due(shard, now) {
        *host.role.borrow_mut() = Role::Detached;
        let mut stats = shard.stats.borrow_mut();
        stats.gauge_add("sessions", -1);
        stats.event("hosts_expired");
        drop(stats);
        host.close(shard, 4408, "code expired");
    }
}

/// `data`: the exact text goes to the joined peer.
fn forward(shard: &Shard, conn: &Rc<Conn>, role: &SessionRole, text: &[u8], read_at: Instant) {
    let Some(peer) = joined_peer(shard, conn, role) else {
        shard.stats.borrow_mut().dropped("session_not_joined");
        return reply(shard, conn, ErrorCode::NotJoined.to_text());
    };
    let frame = OutFrame::message(OpCode::Text, None, Payload::copy_of(text), b"");
    peer.send(shard, frame.relayed(read_at, MODE));
}

/// The peer of `conn` if it is joined (checked against the registry, not only the role).
fn joined_peer(shard: &Shard, conn: &Rc<Conn>, role: &SessionRole) -> Option<Rc<Conn>> {
    let reg = shard.sessions.borrow();
    let (code, is_host) = match role {
        SessionRole::Host { code } => (*code, true),
        SessionRole::Browser(browser) => (browser.joined?, false),
    };
    let entry = reg.hosts.get(&code)?;
    let CodeState::Joined { browser } = &entry.state else {
        return None;
    };
    if is_host {
        Rc::ptr_eq(&entry.host, conn).then(|| browser.clone())
    } else {
        Rc::ptr_eq(browser, conn).then(|| entry.host.clone())
    }
}

/// Queue a relay message (a JSON text) to `conn`.
fn reply(shard: &Shard, conn: &Rc<Conn>, text: String) {
    conn.send(
        shard,
        OutFrame::message(OpCode::Text, None, Payload::from(text), b""),
    );
}

/// Record `conn`'s session role.
fn set_role(conn: &Conn, role: SessionRole) {
    *conn.role.borrow_mut() = Role::Session(role);
}
