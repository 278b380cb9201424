//! The rendezvous styles. Each connection's `Role` says which registry entry it belongs
//! to; this module dispatches the connection's life events to the style that owns it.
//! Every function here runs on the owner shard of the connection's route key.

pub mod echo;
pub mod server_id;

use std::rc::Rc;
use std::time::Instant;

use crate::http::head::RequestHead;
use crate::http::routes::Route;
use crate::shard::Shard;
use crate::ws::codec::MessageKind;
use crate::ws::conn::Conn;

/// What a connection is in its rendezvous.
#[derive(Debug, Default)]
pub enum Role {
    /// Upgraded, not yet placed.
    #[default]
    Pending,
    /// The diagnostic echo route.
    Echo,
    /// A binary holding, or claiming, a server-id slot.
    Binary(server_id::BinaryRole),
    /// A phone attached to a server-id slot.
    Phone(server_id::PhoneRole),
    /// Taken out of its registry by the relay (closing); its end changes nothing.
    Detached,
}

/// An upgraded connection arrives on its owner shard.
pub fn on_upgrade(
    shard: &Rc<Shard>,
    conn: Rc<Conn>,
    route: Route,
    head: RequestHead,
    leftover: Vec<u8>,
) {
    match route {
        Route::Binary { server_id } => server_id::on_binary(shard, conn, &server_id, leftover),
        Route::Phone {
            server_id,
            device_name,
        } => server_id::on_phone(shard, conn, &server_id, device_name.as_deref(), leftover),
        Route::Echo => echo::on_upgrade(shard, conn, leftover),
        Route::Health => {
            // Health never upgrades; classify() answers it before any 101.
            drop(head);
        }
    }
}

/// A whole data message arrived on `conn`.
pub fn on_message(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    let role = conn.role.borrow();
    match &*role {
        Role::Echo => echo::on_message(shard, conn, kind, payload, read_at),
        Role::Binary(binary) => {
            let binary = binary.clone();
            drop(role);
            server_id::on_binary_message(shard, conn, &binary, kind, payload, read_at);
        }
        Role::Phone(phone) => {
            let phone = phone.clone();
            drop(role);
            server_id::on_phone_message(shard, conn, &phone, kind, payload, read_at);
        }
        Role::Pending | Role::Detached => shard.stats.borrow_mut().dropped("detached"),
    }
}

/// Bytes arrived on `conn` (any frame): a probed server-id holder has answered.
pub fn on_activity(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    let probed = matches!(&*conn.role.borrow(), Role::Binary(b) if b.is_probed());
    if probed {
        server_id::on_incumbent_answered(shard, conn);
    }
}

/// The connection `conn`'s reader feeds, when that connection's queue is full: the
/// reader pauses until it drains (PROTOCOL §2 back-pressure).
pub fn fed_connection(shard: &Shard, conn: &Conn) -> Option<Rc<Conn>> {
    let target = match &*conn.role.borrow() {
        Role::Phone(phone) => server_id::binary_of(shard, phone),
        _ => None,
    }?;
    target.is_full(shard.config().max_queue).then_some(target)
}

/// The connection ended: its rendezvous forgets it and tells whoever must know.
pub fn on_disconnect(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    let role = std::mem::replace(&mut *conn.role.borrow_mut(), Role::Detached);
    match role {
        Role::Binary(binary) => server_id::on_binary_gone(shard, conn, &binary),
        Role::Phone(phone) => server_id::on_phone_gone(shard, conn, &phone),
        Role::Echo | Role::Pending | Role::Detached => {}
    }
}
