//! A session host's side: minting its code, `register`, and the code's deadlines.

use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::code::{self, Code};
use super::messages::{ErrorCode, Message};
use super::{reply, set_role, CodeState, HostEntry, SessionRole};
use crate::modes::Conn;
use crate::modes::Role;
use crate::shard::Shard;

/// A fresh code this shard owns and no live host holds.
pub(super) fn mint(shard: &Shard) -> Option<Code> {
    let reg = shard.sessions.borrow();
    let code = code::mint_owned(shard, &code::SESSION, |c| reg.hosts.contains_key(c));
    drop(reg);
    if code.is_some() {
        shard.stats.borrow_mut().event("codes_minted");
    }
    code
}

/// Register `host` under `code`, joinable for one code TTL from now.
pub(super) fn open_code(shard: &Shard, host: &Rc<Conn>, code: Code) {
    let expires = Instant::now() + shard.config().code_ttl;
    let mut reg = shard.sessions.borrow_mut();
    let state = CodeState::Open { expires };
    let entry = HostEntry {
        host: host.clone(),
        state,
    };
    reg.hosts.insert(code, entry);
    reg.push_expiry(expires, code);
}

/// `{"type":"registered",…}` with the code's expiry in Unix milliseconds.
pub(super) fn send_registered(shard: &Shard, host: &Rc<Conn>, code: &Code) {
    let expires = SystemTime::now() + shard.config().code_ttl;
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
pub(super) fn refuse_mint(shard: &Shard, conn: &Rc<Conn>) {
    tracing::warn!(shard = shard.id, "could not mint a session code");
    *conn.role.borrow_mut() = Role::Detached;
    conn.close(shard, 1011, "no code available");
}

/// `register`: before a join the old code dies and a fresh one is sent.
pub(super) fn register(shard: &Rc<Shard>, conn: &Rc<Conn>, old: Code) {
    let joined = matches!(
        shard.sessions.borrow().hosts.get(&old).map(|e| &e.state),
        Some(CodeState::Joined { .. })
    );
    if joined {
        return reply(shard, conn, ErrorCode::AlreadyJoined.to_text());
    }
    let Some(fresh) = mint(shard) else {
        remove_host(shard, conn, &old);
        return refuse_mint(shard, conn);
    };
    // The host keeps its place in the gauge: only its code changes.
    take_entry(shard, conn, &old);
    open_code(shard, conn, fresh);
    set_role(conn, SessionRole::Host { code: fresh });
    send_registered(shard, conn, &fresh);
}

/// A host is gone from the registry (if `code` is still its own); returns the state its
/// code was in.
pub(super) fn remove_host(shard: &Shard, host: &Rc<Conn>, code: &Code) -> Option<CodeState> {
    let entry = take_entry(shard, host, code)?;
    shard.stats.borrow_mut().gauge_add("sessions", -1);
    Some(entry.state)
}

/// Take `code`'s entry out of the registry if `host` holds it.
fn take_entry(shard: &Shard, host: &Rc<Conn>, code: &Code) -> Option<HostEntry> {
    let mut reg = shard.sessions.borrow_mut();
    let owned = reg
        .hosts
        .get(code)
        .is_some_and(|e| Rc::ptr_eq(&e.host, host));
    owned.then(|| reg.hosts.remove(code)).flatten()
}

/// Open codes whose TTL ran out become expired; returns their hosts.
pub(super) fn expire_due(shard: &Shard, now: Instant) -> Vec<Rc<Conn>> {
    let ttl = shard.config().code_ttl;
    let mut reg = shard.sessions.borrow_mut();
    let mut hosts = Vec::new();
    while let Some(&(due, code)) = reg.expiries.front() {
        if due > now {
            break;
        }
        reg.expiries.pop_front();
        let Some(entry) = reg.hosts.get_mut(&code) else {
            continue;
        };
        if entry.state.expires_at(due) {
            let close_at = due + ttl;
            entry.state = CodeState::Expired { close_at };
            hosts.push(entry.host.clone());
            reg.push_close(close_at, code);
        }
    }
    hosts
}

/// Expired codes whose host did not register again in time: out of the registry;
/// returns their hosts.
pub(super) fn close_due(shard: &Shard, now: Instant) -> Vec<Rc<Conn>> {
    let mut reg = shard.sessions.borrow_mut();
    let mut hosts = Vec::new();
    while let Some(&(due, code)) = reg.closes.front() {
        if due > now {
            break;
        }
        reg.closes.pop_front();
        let due_here = reg.hosts.get(&code).is_some_and(|e| e.state.closes_at(due));
        if let Some(entry) = due_here.then(|| reg.hosts.remove(&code)).flatten() {
            hosts.push(entry.host);
        }
    }
    hosts
}
