//! A session browser's side: joining (here, or by moving to the code's owner shard),
//! failed joins, and leaving.

use std::rc::Rc;
use std::time::Instant;

use super::code::{self, Code};
use super::messages::{ErrorCode, Message};
use super::{reply, set_role, BrowserRole, CodeState, Resume, SessionRole};
use crate::modes::Conn;
use crate::modes::Role;
use crate::shard::Shard;

/// Failed joins one connection may make (PROTOCOL §5): the 5th closes it. Guessing across
/// connections is bounded by the per-address budget (`--code-guesses-per-ip`,
/// [`crate::per_ip::GuessBudget`]).
const MAX_FAILED_JOINS: u8 = 5;

/// `join`: answered here when this shard owns the code, else the browser moves there.
/// An address past its guessing budget gets `RATE_LIMITED` and the code is not tried.
pub(super) fn join(shard: &Rc<Shard>, conn: &Rc<Conn>, role: BrowserRole, typed: &str) {
    if !shard.global.may_try_code(role.client) {
        return fail_join(shard, conn, role, ErrorCode::RateLimited);
    }
    if role.joined.is_some() {
        return fail_join(shard, conn, role, ErrorCode::AlreadyJoined);
    }
    let Some(code) = code::parse(typed) else {
        return fail_join(shard, conn, role, ErrorCode::InvalidCode);
    };
    let owner = shard.global.shard_of(&code);
    if owner == shard.id {
        return join_here(shard, conn, role, code);
    }
    *conn.role.borrow_mut() = Role::Detached;
    let resume = Resume {
        code,
        client: role.client,
        failed_joins: role.failed_joins,
    };
    conn.request_move(owner, crate::modes::Resume::Session(resume));
    shard.stats.borrow_mut().event("browser_handoffs");
}

/// Join `code`, which this shard owns.
pub(super) fn join_here(shard: &Rc<Shard>, conn: &Rc<Conn>, mut role: BrowserRole, code: Code) {
    let host = match claim(shard, conn, &code, Instant::now()) {
        Ok(host) => host,
        Err(error) => return fail_join(shard, conn, role, error),
    };
    role.joined = Some(code);
    set_role(conn, SessionRole::Browser(role));
    shard.stats.borrow_mut().event("joins_ok");
    let joined = Message::Joined {
        session_id: uuid::Uuid::new_v4().hyphenated().to_string().into(),
    }
    .to_text();
    reply(shard, &host, joined.clone());
    reply(shard, conn, joined);
}

/// Make `browser` the joined browser of `code` if the code is open; returns its host.
fn claim(
    shard: &Shard,
    browser: &Rc<Conn>,
    code: &Code,
    now: Instant,
) -> Result<Rc<Conn>, ErrorCode> {
    let mut reg = shard.sessions.borrow_mut();
    let entry = reg.hosts.get_mut(code).ok_or(ErrorCode::InvalidCode)?;
    match entry.state {
        CodeState::Open { expires } if expires > now => {
            entry.state = CodeState::Joined {
                browser: browser.clone(),
            };
            Ok(entry.host.clone())
        }
        CodeState::Open { .. } | CodeState::Expired { .. } => Err(ErrorCode::ExpiredCode),
        CodeState::Joined { .. } => Err(ErrorCode::AlreadyJoined),
    }
}

/// A join answered with an error: counted, charged to the address's guessing budget
/// (unless it was refused for that budget: not tried, so not a guess), and the 5th on
/// one connection closes the browser with 4429.
pub(super) fn fail_join(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    mut role: BrowserRole,
    error: ErrorCode,
) {
    shard.stats.borrow_mut().event(match error {
        ErrorCode::InvalidCode => "joins_invalid_code",
        ErrorCode::ExpiredCode => "joins_expired_code",
        ErrorCode::RateLimited => "joins_rate_limited",
        _ => "joins_already_joined",
    });
    if error != ErrorCode::RateLimited {
        shard.global.failed_join(role.client);
    }
    reply(shard, conn, error.to_text());
    role.failed_joins = role.failed_joins.saturating_add(1);
    if role.failed_joins < MAX_FAILED_JOINS {
        return set_role(conn, SessionRole::Browser(role));
    }
    shard.stats.borrow_mut().event("joins_too_many");
    if let Some(code) = role.joined {
        leave(shard, conn, code);
    }
    *conn.role.borrow_mut() = Role::Detached;
    conn.close(shard, 4429, "too many attempts");
}

/// A joined browser left: its host is told and its code is joinable again for a TTL.
pub(super) fn leave(shard: &Shard, browser: &Rc<Conn>, code: Code) {
    let expires = Instant::now() + shard.config().code_ttl;
    let mut reg = shard.sessions.borrow_mut();
    let Some(entry) = reg.hosts.get_mut(&code) else {
        return;
    };
    if !matches!(&entry.state, CodeState::Joined { browser: b } if Rc::ptr_eq(b, browser)) {
        return;
    }
    entry.state = CodeState::Open { expires };
    let host = entry.host.clone();
    reg.push_expiry(expires, code);
    drop(reg);
    reply(shard, &host, ErrorCode::BrowserDisconnected.to_text());
}
