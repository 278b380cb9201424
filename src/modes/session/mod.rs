//! Session codes (PROTOCOL §5): a host (`/mac`) is given a short code, a browser
//! (`/browser`) joins with it, and then their `data` messages pass between them verbatim.
//! This module owns the codes its shard minted: their hosts, their browsers once joined,
//! and their deadlines. A code is minted only if this shard owns it, so a joining browser
//! is routed — or moved — to the shard that holds its host.

mod browser;
pub mod code;
mod host;
pub mod messages;
pub mod registry;

use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::time::Instant;

use crate::modes::Conn;
use crate::modes::Role;
use crate::modes::StyleHost;
use crate::stats::{Dropped, Event, Gauge, Style};
use crate::ws::codec::{MessageKind, OpCode};
use crate::ws::conn::OutFrame;
use crate::ws::payload::Payload;
use browser::{fail_join, join, join_here, leave};
use code::Code;
use host::{mint, open_code, refuse_mint, register, remove_host, send_registered};
use messages::{ErrorCode, Invalid, Message};

/// The style's name in `/stats` (`forward_by_mode`).
const MODE: Style = Style::Session;

/// The codes this shard minted, holding its connections.
pub type Registry = registry::Registry<Rc<Conn>>;
pub use registry::Settings;

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
pub fn on_host<S: StyleHost>(shard: &Rc<S>, conn: Rc<Conn>, leftover: Vec<u8>) {
    match mint(&**shard) {
        Some(code) => {
            open_code(&**shard, &conn, code);
            shard.stats().gauge_add(Gauge::Sessions, 1);
            set_role(&conn, SessionRole::Host { code });
            send_registered(&**shard, &conn, &code);
        }
        None => refuse_mint(&**shard, &conn),
    }
    shard.spawn_reader(conn, leftover);
}

/// A browser from `client` upgraded; with `?code=` it was routed here, the code's owner,
/// and joins now (its address's guessing budget was checked before the upgrade, and is
/// again here).
pub fn on_browser<S: StyleHost>(
    shard: &Rc<S>,
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
            _ if !shard.may_try_code(client) => {
                fail_join(shard, &conn, role, ErrorCode::RateLimited)
            }
            Some(code) => join_here(shard, &conn, role, code),
            None => fail_join(shard, &conn, role, ErrorCode::InvalidCode),
        }
    }
    shard.spawn_reader(conn, leftover);
}

/// A browser moved here to join a code this shard owns.
pub fn on_resume<S: StyleHost>(shard: &Rc<S>, conn: Rc<Conn>, resume: Resume, unread: Vec<u8>) {
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
pub fn on_message<S: StyleHost>(
    shard: &Rc<S>,
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
            shard.stats().dropped(Dropped::SessionInvalidMessage);
            let text = ErrorCode::InvalidMessage.with_detail(&why.to_string());
            return reply(&**shard, conn, text);
        }
    };
    match (role, message) {
        (_, Message::Ping { ts }) => reply(&**shard, conn, Message::Pong { ts }.to_text()),
        (SessionRole::Host { code }, Message::Register { .. }) => register(shard, conn, *code),
        (SessionRole::Browser(browser), Message::Join { code }) => {
            join(shard, conn, browser.clone(), &code)
        }
        (_, Message::Data { .. }) => forward(&**shard, conn, role, payload, read_at),
        (_, other) => {
            shard.stats().dropped(Dropped::SessionInvalidMessage);
            let side = match role {
                SessionRole::Host { .. } => "host",
                SessionRole::Browser(_) => "browser",
            };
            let detail = format!("a {side} does not send {}", other.kind());
            reply(
                &**shard,
                conn,
                ErrorCode::InvalidMessage.with_detail(&detail),
            );
        }
    }
}

/// The connection whose full queue pauses a session member's reader (PROTOCOL §2.7):
/// its own while the relay's answers to it (pongs, errors) are unread, else its joined
/// peer, which its `data` feeds.
pub fn peer_of<S: StyleHost>(shard: &S, role: &SessionRole) -> Option<Rc<Conn>> {
    let (own, peer) = members(shard, role);
    match own {
        Some(own) if own.is_full(shard.max_queue()) => Some(own),
        _ => peer,
    }
}

/// A session member's own connection and its joined peer, as far as they are known.
fn members<S: StyleHost>(shard: &S, role: &SessionRole) -> (Option<Rc<Conn>>, Option<Rc<Conn>>) {
    let reg = shard.sessions().borrow();
    match role {
        SessionRole::Host { code } => match reg.members(code) {
            Some((host, browser)) => (Some(host.clone()), browser.cloned()),
            None => (None, None),
        },
        SessionRole::Browser(browser) => {
            let peer = browser
                .joined
                .and_then(|code| reg.members(&code))
                .filter(|(_, joined)| joined.is_some())
                .map(|(host, _)| host.clone());
            (browser.this.upgrade(), peer)
        }
    }
}

/// A session member left: a host takes its code and its browser with it; a browser
/// leaves its host waiting with the code joinable again.
pub fn on_gone<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, role: SessionRole) {
    match role {
        SessionRole::Host { code } => {
            if let Some(browser) = remove_host(&**shard, conn, &code).and_then(|r| r.browser) {
                *browser.role.borrow_mut() = Role::Detached;
                reply(&**shard, &browser, ErrorCode::MacDisconnected.to_text());
                browser.close(shard, 1000, "peer disconnected");
            }
        }
        SessionRole::Browser(BrowserRole {
            joined: Some(code), ..
        }) => leave(&**shard, conn, code),
        SessionRole::Browser(_) => {}
    }
}

/// Deadlines: open codes past their TTL expire; hosts that did not register again
/// within a further TTL are closed with 4408.
pub fn tick<S: StyleHost>(shard: &Rc<S>, now: Instant) {
    let expired = shard.sessions().borrow_mut().expire_due(now);
    for host in expired {
        shard.stats().event(Event::CodesExpired);
        reply(&**shard, &host, ErrorCode::ExpiredCode.to_text());
    }
    let closed = shard.sessions().borrow_mut().close_due(now);
    for host in closed {
        *host.role.borrow_mut() = Role::Detached;
        let mut stats = shard.stats();
        stats.gauge_add(Gauge::Sessions, -1);
        stats.event(Event::HostsExpired);
        drop(stats);
        host.close(shard, 4408, "code expired");
    }
}

/// `data`: the exact text goes to the joined peer.
fn forward<S: StyleHost>(
    shard: &S,
    conn: &Rc<Conn>,
    role: &SessionRole,
    text: &[u8],
    read_at: Instant,
) {
    let Some(peer) = joined_peer(shard, conn, role) else {
        shard.stats().dropped(Dropped::SessionNotJoined);
        return reply(shard, conn, ErrorCode::NotJoined.to_text());
    };
    let frame = OutFrame::message(OpCode::Text, None, Payload::copy_of(text), b"");
    peer.send(shard, frame.relayed(read_at, MODE));
}

/// The peer of `conn` if it is joined (checked against the registry, not only the role).
fn joined_peer<S: StyleHost>(shard: &S, conn: &Rc<Conn>, role: &SessionRole) -> Option<Rc<Conn>> {
    let (code, is_host) = match role {
        SessionRole::Host { code } => (*code, true),
        SessionRole::Browser(browser) => (browser.joined?, false),
    };
    let reg = shard.sessions().borrow();
    reg.joined_peer(&code, conn, is_host).cloned()
}

/// Queue a relay message (a JSON text) to `conn`.
fn reply<S: StyleHost>(shard: &S, conn: &Rc<Conn>, text: String) {
    conn.send(
        shard,
        OutFrame::message(OpCode::Text, None, Payload::from(text), b""),
    );
}

/// Record `conn`'s session role.
fn set_role(conn: &Conn, role: SessionRole) {
    *conn.role.borrow_mut() = Role::Session(role);
}
