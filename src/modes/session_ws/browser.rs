//! A `/ws` browser: `auth` (here, or by moving to the code's owner shard), every failed
//! `auth` (one function, [`on_failed_auth`]), its frames to the Mac, the backlog policy
//! that protects the Mac from a browser that does not read, and leaving.

use std::rc::Rc;
use std::time::Instant;

use super::messages::{self, Control};
use super::registry::JoinRefusal;
use super::{
    mac_of, reply, reply_owned, set_kind, set_role, BrowserId, Resume, WsRole, ALPHABET, MODE,
};
use crate::modes::session::code::{self, Code};
use crate::modes::Conn;
use crate::modes::Role;
use crate::modes::StyleHost;
use crate::stats::{ConnKind, Dropped, Event};
use crate::ws::codec::{MessageKind, OpCode};
use crate::ws::conn::{OutFrame, Overflow};
use crate::ws::payload::Payload;

/// Why an `auth` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthFailure {
    /// No live Mac holds the code (or it is not a code at all): a wrong guess.
    InvalidCode,
    /// The session already has `--max-browsers-per-session` browsers.
    SessionFull,
    /// No browser id could be drawn (the CSPRNG failed).
    NoBrowserId,
    /// The address is past its guessing budget: the code was not tried.
    RateLimited,
}

impl From<JoinRefusal> for AuthFailure {
    fn from(refusal: JoinRefusal) -> Self {
        match refusal {
            JoinRefusal::InvalidCode => AuthFailure::InvalidCode,
            JoinRefusal::SessionFull => AuthFailure::SessionFull,
            JoinRefusal::NoBrowserId => AuthFailure::NoBrowserId,
        }
    }
}

impl AuthFailure {
    /// True when this failure is a wrong guess at a code: what the per-address guessing
    /// budget (`--code-guesses-per-ip`) charges. A full session was the right code.
    pub(super) fn is_guess(self) -> bool {
        self == AuthFailure::InvalidCode
    }

    /// The `auth_failed` answer.
    fn answer(self) -> &'static str {
        match self {
            AuthFailure::InvalidCode => messages::AUTH_FAILED_INVALID,
            AuthFailure::SessionFull => messages::AUTH_FAILED_FULL,
            AuthFailure::NoBrowserId => messages::AUTH_FAILED_RELAY,
            AuthFailure::RateLimited => messages::AUTH_FAILED_RATE_LIMITED,
        }
    }

    /// The close code and reason that follow the answer.
    fn close(self) -> (u16, &'static str) {
        match self {
            AuthFailure::InvalidCode => (4404, "invalid session code"),
            AuthFailure::SessionFull => (4429, "too many browsers for session"),
            AuthFailure::NoBrowserId => (1011, "no browser id available"),
            AuthFailure::RateLimited => (4429, "too many attempts"),
        }
    }

    /// The `/stats` event.
    fn event(self) -> Event {
        match self {
            AuthFailure::InvalidCode => Event::WsAuthInvalidCode,
            AuthFailure::SessionFull => Event::WsAuthSessionFull,
            AuthFailure::NoBrowserId => Event::WsAuthNoBrowserId,
            AuthFailure::RateLimited => Event::WsAuthRateLimited,
        }
    }
}

/// `auth`: answered here when this shard owns the code, else the browser moves there
/// (once: the owner answers it, whatever the answer).
pub(super) fn auth<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, typed: &str) {
    if conn.peer().ip().is_some_and(|ip| !shard.may_try_code(ip)) {
        return on_failed_auth(shard, conn, AuthFailure::RateLimited);
    }
    let Some(code) = code::parse_in(&ALPHABET, typed) else {
        return on_failed_auth(shard, conn, AuthFailure::InvalidCode);
    };
    if let Some(addr) = shard.node_for(ALPHABET.chars(), code[0]) {
        // Another node minted it (PROTOCOL §9): hand the browser there, replaying its
        // `auth`; the owner answers it.
        *conn.role.borrow_mut() = Role::Detached;
        let first = serde_json::json!({"type": "auth", "session_code": typed}).to_string();
        return conn.request_forward(crate::ws::forward::Forward {
            addr,
            path: "/ws",
            first: first.into_bytes(),
            proxy_header: shard.proxy_protocol(),
        });
    }
    let owner = shard.shard_of(&code);
    if owner == shard.shard_id() {
        return auth_here(shard, conn, code);
    }
    *conn.role.borrow_mut() = Role::Detached;
    conn.request_move(owner, crate::modes::Resume::SessionWs(Resume { code }));
    shard.stats().event(Event::WsBrowserHandoffs);
}

/// `auth` with `code`, which this shard owns: join its session, or fail.
pub(super) fn auth_here<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, code: Code) {
    let joined = shard.session_ws().borrow_mut().join(&code, conn);
    let (id, mac) = match joined {
        Ok(joined) => joined,
        Err(refusal) => return on_failed_auth(shard, conn, refusal.into()),
    };
    // The Mac is never stalled by this browser: an overflowing queue closes the browser.
    conn.overflow.set(Overflow::CloseReceiver);
    set_kind(&**shard, conn, ConnKind::SessionBrowser);
    set_role(conn, WsRole::Browser { code, id });
    shard.stats().event(Event::WsAuthsOk);
    reply(&**shard, conn, messages::AUTH_SUCCESS);
    reply_owned(&**shard, &mac, messages::browser_connected(&id));
}

/// Every failed `auth` ends here: counted, answered `auth_failed`, and closed.
///
/// This is the one place a failed `auth` is seen, so it is where the per-address
/// guessing budget (`--code-guesses-per-ip`, PROTOCOL §5) is charged: for the failures
/// whose [`AuthFailure::is_guess`] is true, against the client's address. Each is also
/// counted in `/stats` (`events.ws_auth_*`).
pub(super) fn on_failed_auth<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, failure: AuthFailure) {
    shard.stats().event(failure.event());
    if failure.is_guess() {
        if let Some(ip) = conn.peer().ip() {
            shard.failed_join(ip);
        }
    }
    tracing::debug!(shard = shard.shard_id(), peer = %conn.peer(), guess = failure.is_guess(), "/ws auth failed");
    *conn.role.borrow_mut() = Role::Detached;
    reply(&**shard, conn, failure.answer());
    let (code, reason) = failure.close();
    conn.close(shard, code, reason);
}

/// A browser's message: binary frames go to the Mac as they are; `create_session` goes
/// as the text received, `close_session` as the Mac's binary framing; other text is not
/// forwarded.
pub(super) fn on_message<S: StyleHost>(
    shard: &Rc<S>,
    code: &Code,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    let Some(mac) = mac_of(&**shard, code) else {
        return shard.stats().dropped(Dropped::WsNoMac);
    };
    let (op, body) = match kind {
        MessageKind::Binary => (OpCode::Binary, Payload::copy_of(payload)),
        MessageKind::Text => match messages::parse(payload) {
            Some(Control::CreateSession) => (OpCode::Text, Payload::copy_of(payload)),
            Some(Control::CloseSession { session_id }) => {
                match messages::close_session_frame(&session_id) {
                    Some(frame) => (OpCode::Binary, Payload::from(frame)),
                    None => return shard.stats().dropped(Dropped::WsSessionIdTooLong),
                }
            }
            _ => return shard.stats().dropped(Dropped::WsBrowserTextIgnored),
        },
    };
    let frame = OutFrame::message(op, None, body, b"");
    if !mac.send(shard, frame.relayed(read_at, MODE)) {
        shard.stats().dropped(Dropped::WsMacClosing);
    }
}

/// A browser whose queue would overflow: out of its session (the Mac is told), closed
/// `1011 "browser backlog full"` without waiting behind its backlog.
pub(super) fn backlog_full<S: StyleHost>(shard: &Rc<S>, code: &Code, browser: &Rc<Conn>) {
    shard.stats().dropped(Dropped::WsBrowserBacklogFull);
    let role = std::mem::replace(&mut *browser.role.borrow_mut(), Role::Detached);
    if let Role::SessionWs(WsRole::Browser { id, .. }) = role {
        gone(shard, browser, code, &id);
    }
    browser.failed.set(true);
    browser.close_discarding(shard, 1011, "browser backlog full");
}

/// A browser left its session: the Mac gets `browser_disconnected`.
pub(super) fn gone<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, code: &Code, id: &BrowserId) {
    let mac = shard.session_ws().borrow_mut().leave(code, conn);
    if let Some(mac) = mac {
        reply_owned(&**shard, &mac, messages::browser_disconnected(id));
    }
}
