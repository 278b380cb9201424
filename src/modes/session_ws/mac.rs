//! A `/ws` Mac: `register` mints its code; its binary frames and `session_*` messages
//! fan out to every browser of its session; when it leaves, its browsers are told and
//! closed, and its code is gone.

use std::rc::Rc;
use std::time::Instant;

use super::messages::{self, Control};
use super::{browser, reply, reply_owned, set_kind, set_role, WsRole, ALPHABET, MODE};
use crate::modes::session::code::{self, Code};
use crate::modes::Conn;
use crate::modes::Role;
use crate::modes::StyleHost;
use crate::stats::{ConnKind, Dropped, Event, Gauge};
use crate::ws::codec::{MessageKind, OpCode};
use crate::ws::conn::OutFrame;
use crate::ws::payload::Payload;

/// `register`: mint a code this shard owns, open the session, answer `registered`.
pub(super) fn register<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>) {
    let minted = {
        let reg = shard.session_ws().borrow();
        let owned = |c: &Code| shard.mints(ALPHABET.chars(), c[0], c);
        let live = |c: &Code| reg.is_live(c);
        code::mint_owned(&ALPHABET, shard.minters(), owned, live)
    };
    let Some(code) = minted else {
        tracing::warn!(
            shard = shard.shard_id(),
            "could not mint a /ws session code"
        );
        *conn.role.borrow_mut() = Role::Detached;
        reply(&**shard, conn, messages::ERROR_NO_CODE);
        return conn.close(shard, 1011, "no code available");
    };
    shard.session_ws().borrow_mut().open(code, conn);
    {
        let mut stats = shard.stats();
        stats.event(Event::WsCodesMinted);
        stats.gauge_add(Gauge::WsSessions, 1);
    }
    set_kind(&**shard, conn, ConnKind::SessionHost);
    set_role(conn, WsRole::Mac { code });
    reply_owned(&**shard, conn, messages::registered(&code));
}

/// A Mac's message: binary frames and `session_*` texts go to every browser; any other
/// text is not forwarded.
pub(super) fn on_message<S: StyleHost>(
    shard: &Rc<S>,
    code: &Code,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    match kind {
        MessageKind::Binary => fan_out(shard, code, OpCode::Binary, payload, read_at),
        MessageKind::Text => match messages::parse(payload) {
            Some(Control::SessionEvent) => fan_out(shard, code, OpCode::Text, payload, read_at),
            _ => shard.stats().dropped(Dropped::WsMacTextIgnored),
        },
    }
}

/// Queue `payload` to every browser of `code`'s session. The payload is copied once
/// (into a pooled buffer for one browser, into one shared `Rc` for several), so the
/// per-browser cost is a queue slot. A browser whose queue would pass `--max-queue` is
/// closed instead (`browser::backlog_full`): the Mac is never stalled by one browser.
fn fan_out<S: StyleHost>(shard: &Rc<S>, code: &Code, op: OpCode, payload: &[u8], read_at: Instant) {
    let max_queue = shard.max_queue();
    // Allocates only if a browser overflows.
    let mut overflowed = Vec::new();
    {
        let reg = shard.session_ws().borrow();
        let Some(browsers) = reg.browsers(code) else {
            return;
        };
        if browsers.is_empty() {
            return shard.stats().dropped(Dropped::WsNoBrowsers);
        }
        let shared: Option<Rc<[u8]>> = (browsers.len() > 1).then(|| Rc::from(payload));
        for (_, browser) in browsers {
            let body = match &shared {
                Some(shared) => Payload::from(shared.clone()),
                None => Payload::copy_of(payload),
            };
            let frame = OutFrame::message(op, None, body, b"");
            // The queue is measured in charges (slot + allocation, PROTOCOL §2.1).
            if browser.queued_bytes() + frame.charge() > max_queue {
                overflowed.push(browser.clone());
                continue;
            }
            if !browser.send(shard, frame.relayed(read_at, MODE)) {
                shard.stats().dropped(Dropped::WsBrowserClosing);
            }
        }
    }
    for browser in overflowed {
        browser::backlog_full(shard, code, &browser);
    }
}

/// The Mac left: its code is gone, and each browser gets `Session disconnected` and is
/// closed `1000 "peer disconnected"` (it may reconnect with a new code).
pub(super) fn gone<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, code: &Code) {
    let removed = shard.session_ws().borrow_mut().remove_mac(code, conn);
    let Some(browsers) = removed else {
        return;
    };
    shard.stats().gauge_add(Gauge::WsSessions, -1);
    for (_, browser) in browsers {
        *browser.role.borrow_mut() = Role::Detached;
        reply(&**shard, &browser, messages::ERROR_SESSION_DISCONNECTED);
        browser.close(shard, 1000, "peer disconnected");
    }
}
