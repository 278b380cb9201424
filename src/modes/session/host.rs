//! A session host's side: minting its code, `register`, and the code's deadlines.

use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::code::{self, Code};
use super::messages::{ErrorCode, Message};
use super::registry::Removed;
use super::{reply, set_role, SessionRole};
use crate::modes::Conn;
use crate::modes::Role;
use crate::modes::StyleHost;
use crate::stats::{Event, Gauge};

/// A fresh code this shard owns and no live host holds.
pub(super) fn mint<S: StyleHost>(shard: &S) -> Option<Code> {
    let reg = shard.sessions().borrow();
    let owned = |c: &Code| shard.mints(code::ALPHABET, c[0], c);
    let code = code::mint_owned(&code::SESSION, shard.minters(), owned, |c| reg.is_live(c));
    drop(reg);
    if code.is_some() {
        shard.stats().event(Event::CodesMinted);
    }
    code
}

/// Register `host` under `code`, joinable for one code TTL from now.
pub(super) fn open_code<S: StyleHost>(shard: &S, host: &Rc<Conn>, code: Code) {
    shard
        .sessions()
        .borrow_mut()
        .open(code, host, Instant::now());
}

/// `{"type":"registered",…}` with the code's expiry in Unix milliseconds.
pub(super) fn send_registered<S: StyleHost>(shard: &S, host: &Rc<Conn>, code: &Code) {
    let expires = SystemTime::now() + shard.sessions().borrow().code_ttl();
    let expires_at = expires
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let message = Message::Registered {
        code: code::as_str(code).into(),
        expires_at,
    };
    reply(shard, host, message.to_text());
}

/// The CSPRNG failed: a host without a code is closed rather than left waiting.
pub(super) fn refuse_mint<S: StyleHost>(shard: &S, conn: &Rc<Conn>) {
    tracing::warn!(shard = shard.shard_id(), "could not mint a session code");
    *conn.role.borrow_mut() = Role::Detached;
    conn.close(shard, 1011, "no code available");
}

/// `register`: before a join the old code dies and a fresh one is sent.
pub(super) fn register<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, old: Code) {
    let joined = shard.sessions().borrow().is_joined(&old);
    if joined {
        return reply(&**shard, conn, ErrorCode::AlreadyJoined.to_text());
    }
    let Some(fresh) = mint(&**shard) else {
        remove_host(&**shard, conn, &old);
        return refuse_mint(&**shard, conn);
    };
    // The host keeps its place in the gauge: only its code changes.
    shard.sessions().borrow_mut().remove(&old, conn);
    open_code(&**shard, conn, fresh);
    set_role(conn, SessionRole::Host { code: fresh });
    send_registered(&**shard, conn, &fresh);
}

/// A host is gone from the registry (if `code` is still its own); returns what it
/// leaves behind (its joined browser).
pub(super) fn remove_host<S: StyleHost>(
    shard: &S,
    host: &Rc<Conn>,
    code: &Code,
) -> Option<Removed<Rc<Conn>>> {
    let removed = shard.sessions().borrow_mut().remove(code, host)?;
    shard.stats().gauge_add(Gauge::Sessions, -1);
    Some(removed)
}
