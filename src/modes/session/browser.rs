//! A session browser's side: joining (here, or by moving to the code's owner shard),
//! failed joins, and leaving.

use std::rc::Rc;
use std::time::Instant;

use super::code::Code;
use super::messages::{ErrorCode, Message};
use super::registry::{after_failed_join, is_a_guess, join_step, JoinStep};
use super::{reply, set_role, BrowserRole, Resume, SessionRole};
use crate::modes::Conn;
use crate::modes::Role;
use crate::modes::StyleHost;
use crate::stats::Event;

/// `join`: answered here when this shard owns the code, else the browser moves there.
/// An address past its guessing budget gets `RATE_LIMITED` and the code is not tried.
pub(super) fn join<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, role: BrowserRole, typed: &str) {
    if role.joined.is_none() && shard.may_try_code(role.client) {
        let owner_node =
            super::code::parse(typed).and_then(|c| shard.node_for(super::code::ALPHABET, c[0]));
        if let Some(addr) = owner_node {
            return hand_to_node(shard, conn, addr, typed);
        }
    }
    let step = join_step(
        shard.may_try_code(role.client),
        role.joined.is_some(),
        typed,
        shard.shard_id(),
        |code| shard.shard_of(code),
    );
    let (owner, code) = match step {
        JoinStep::Fail(error) => return fail_join(shard, conn, role, error),
        JoinStep::Here(code) => return join_here(shard, conn, role, code),
        JoinStep::Move { owner, code } => (owner, code),
    };
    *conn.role.borrow_mut() = Role::Detached;
    let resume = Resume {
        code,
        client: role.client,
        failed_joins: role.failed_joins,
    };
    conn.request_move(owner, crate::modes::Resume::Session(resume));
    shard.stats().event(Event::BrowserHandoffs);
}

/// Join `code`, which this shard owns.
pub(super) fn join_here<S: StyleHost>(
    shard: &Rc<S>,
    conn: &Rc<Conn>,
    mut role: BrowserRole,
    code: Code,
) {
    let claimed = shard
        .sessions()
        .borrow_mut()
        .claim(&code, conn, Instant::now());
    let host = match claimed {
        Ok(host) => host,
        Err(error) => return fail_join(shard, conn, role, error),
    };
    role.joined = Some(code);
    set_role(conn, SessionRole::Browser(role));
    shard.stats().event(Event::JoinsOk);
    let joined = Message::Joined {
        session_id: uuid::Uuid::new_v4().hyphenated().to_string().into(),
    }
    .to_text();
    reply(&**shard, &host, joined.clone());
    reply(&**shard, conn, joined);
}

/// A join answered with an error: counted, charged to the address's guessing budget
/// (unless it was refused for that budget: not tried, so not a guess), and the 5th on
/// one connection closes the browser with 4429.
pub(super) fn fail_join<S: StyleHost>(
    shard: &Rc<S>,
    conn: &Rc<Conn>,
    mut role: BrowserRole,
    error: ErrorCode,
) {
    shard.stats().event(match error {
        ErrorCode::InvalidCode => Event::JoinsInvalidCode,
        ErrorCode::ExpiredCode => Event::JoinsExpiredCode,
        ErrorCode::RateLimited => Event::JoinsRateLimited,
        _ => Event::JoinsAlreadyJoined,
    });
    if is_a_guess(error) {
        shard.failed_join(role.client);
    }
    reply(&**shard, conn, error.to_text());
    let (failed_joins, closes) = after_failed_join(role.failed_joins);
    role.failed_joins = failed_joins;
    if !closes {
        return set_role(conn, SessionRole::Browser(role));
    }
    shard.stats().event(Event::JoinsTooMany);
    if let Some(code) = role.joined {
        leave(&**shard, conn, code);
    }
    *conn.role.borrow_mut() = Role::Detached;
    conn.close(shard, 4429, "too many attempts");
}

/// A joined browser left: its host is told and its code is joinable again for a TTL.
pub(super) fn leave<S: StyleHost>(shard: &S, browser: &Rc<Conn>, code: Code) {
    let host = shard
        .sessions()
        .borrow_mut()
        .leave(&code, browser, Instant::now());
    if let Some(host) = host {
        reply(shard, &host, ErrorCode::BrowserDisconnected.to_text());
    }
}

/// A code another node minted (PROTOCOL §9): hand the browser to that node, replaying
/// its `join` there; the owner answers it and runs the session.
fn hand_to_node<S: StyleHost>(
    shard: &Rc<S>,
    conn: &Rc<Conn>,
    addr: std::net::SocketAddr,
    typed: &str,
) {
    *conn.role.borrow_mut() = Role::Detached;
    let first = serde_json::json!({"type": "join", "code": typed}).to_string();
    conn.request_forward(crate::ws::forward::Forward {
        addr,
        path: "/browser",
        first: first.into_bytes(),
        proxy_header: shard.proxy_protocol(),
    });
}
