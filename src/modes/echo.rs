//! `GET /v1/echo` (only with `--enable-echo`): every message comes back as it went, through
//! the same codec and writer as every relayed message — the route conformance suites test.

use std::rc::Rc;
use std::time::Instant;

use crate::modes::Conn;
use crate::modes::Role;
use crate::modes::StyleHost;
use crate::stats::Style;
use crate::ws::codec::{MessageKind, OpCode};
use crate::ws::conn::OutFrame;
use crate::ws::payload::Payload;

/// An echo connection upgraded.
pub fn on_upgrade<S: StyleHost>(shard: &Rc<S>, conn: Rc<Conn>, leftover: Vec<u8>) {
    *conn.role.borrow_mut() = Role::Echo;
    shard.spawn_reader(conn, leftover);
}

/// Send the message back.
pub fn on_message<S: StyleHost>(
    shard: &S,
    conn: &Rc<Conn>,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    let op = match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    };
    let frame = OutFrame::message(op, None, Payload::copy_of(payload), b"");
    conn.send(shard, frame.relayed(read_at, Style::Echo));
}
