//! The move of an established connection to another shard (a session browser joining a
//! code another shard owns). Not the ticket pump (`modes::ticket::transfer`), which
//! copies bytes between two sockets: here one WebSocket changes owner, once.
//!
//! The moving shard duplicates the descriptor, carries the bytes queued but not written
//! and the bytes read but not decoded, and lets its own copy end quietly (no close frame,
//! no shutdown: `Phase::Moved`). The new owner adopts the socket, queues the unsent bytes
//! first and resumes the connection in its rendezvous.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Instant;

use super::{Conn, Host, Life, OutFrame, Outbox, Rendezvous};
use crate::net::ConnPermit;
use crate::stats::{ConnKind, Event};
use crate::sys;
use crate::tls::Link;
use crate::ws::forward::{self, Forward, Handover};

/// An established connection on its way to another shard.
#[derive(Debug)]
pub struct Relocation<R: Rendezvous> {
    /// A duplicate of the socket's descriptor (the original closes with the old shard's
    /// `Conn`; the socket lives on through this one).
    fd: OwnedFd,
    /// The `/stats` kind.
    kind: ConnKind,
    /// The connection's place under `--max-connections`.
    permit: ConnPermit,
    /// Frames queued but not yet written, as raw bytes.
    unsent: Vec<u8>,
    /// The transport (a TLS session moves with its socket).
    link: Link,
    /// Bytes read but not yet decoded (they follow the message that asked for the move).
    unread: Vec<u8>,
    /// What the connection does on arrival.
    resume: R::Resume,
    /// When the move was enqueued (handoff histogram).
    sent_at: Instant,
    /// The client's address learnt behind a balancer ([`Conn::set_client`]), if any.
    client: Option<std::net::SocketAddr>,
}

/// A move the rendezvous asked for, carried out once the message being handled is done.
#[derive(Debug)]
pub(super) enum MoveRequest<R: Rendezvous> {
    /// To another shard of this process.
    Shard {
        /// The shard the connection goes to.
        owner: usize,
        /// What it resumes with there.
        resume: R::Resume,
    },
    /// To another node, through a pipe (`ws::forward`).
    Node(Forward),
}

/// A moved connection adopted by its new shard, for the rendezvous to take over.
#[derive(Debug)]
pub struct Arrived<R: Rendezvous> {
    /// The connection, its unsent bytes queued first.
    pub conn: Rc<Conn<R>>,
    /// What it resumes with.
    pub resume: R::Resume,
    /// Bytes it had read but not decoded (the reader processes them first).
    pub unread: Vec<u8>,
}

impl<R: Rendezvous> Conn<R> {
    /// Ask for this connection to move to shard `owner` as soon as the message being
    /// handled is done; it resumes there with `resume`. The caller has already taken it
    /// out of every registry here.
    pub fn request_move(&self, owner: usize, resume: R::Resume) {
        self.rare_mut(|rare| rare.moving = Some(MoveRequest::Shard { owner, resume }));
    }

    /// Ask for this connection to be handed to another node (PROTOCOL §9) as soon as the
    /// message being handled is done. The caller has already taken it out of every
    /// registry here.
    pub fn request_forward(&self, forward: Forward) {
        self.rare_mut(|rare| rare.moving = Some(MoveRequest::Node(forward)));
    }

    /// True once the rendezvous asked for a move (`request_move`).
    pub(super) fn move_requested(&self) -> bool {
        self.rare(|rare| rare.is_some_and(|rare| rare.moving.is_some()))
    }
}

/// Move `conn` to the shard it asked for: duplicate its descriptor, carry its unsent and
/// unread bytes, and let this shard's copy end quietly (no close frame, no shutdown).
pub(super) fn start_move<R: Rendezvous, H: Host<R>>(host: &H, conn: &Rc<Conn<R>>, unread: Vec<u8>) {
    let Some(moving) = conn.rare(|rare| rare.and_then(|rare| rare.moving.take())) else {
        return;
    };
    let (owner, resume) = match moving {
        MoveRequest::Shard { owner, resume } => (owner, resume),
        MoveRequest::Node(forward) => return start_forward(host, conn, unread, forward),
    };
    let permit = conn.permit.take();
    let (Ok(fd), Some(permit)) = (sys::dup_fd(conn.fd()), permit) else {
        tracing::warn!(
            shard = host.shard_id(),
            "could not move a connection; closing it"
        );
        conn.abort();
        return;
    };
    let unsent = conn.take_unsent();
    // This shard's copy writes nothing more; its descriptor closes with it while the
    // duplicate keeps the socket open for the owner.
    conn.update(Life::moved);
    let moving = Relocation {
        fd,
        kind: conn.kind.get(),
        permit,
        unsent,
        link: conn.link.take(),
        unread,
        resume,
        sent_at: Instant::now(),
        client: conn.client(),
    };
    host.stats().handed_off();
    if !host.relocate(owner, moving) {
        tracing::warn!(
            shard = host.shard_id(),
            owner,
            "owner shard is gone; connection dropped"
        );
    }
}

/// Hand `conn` to another node: duplicate its descriptor, carry its unsent and unread
/// bytes into a pipe task, and let this shard's copy end quietly, as a move does.
fn start_forward<R: Rendezvous, H: Host<R>>(
    host: &H,
    conn: &Rc<Conn<R>>,
    unread: Vec<u8>,
    forward: Forward,
) {
    let permit = conn.permit.take();
    let client = conn.client().or_else(|| sys::peer_addr(conn.fd()));
    let (Ok(fd), Some(permit), Some(client)) = (sys::dup_fd(conn.fd()), permit, client) else {
        tracing::warn!(
            shard = host.shard_id(),
            "could not hand a connection to its node; closing it"
        );
        conn.abort();
        return;
    };
    let unsent = conn.take_unsent();
    conn.update(Life::moved);
    let handover = Handover {
        fd,
        link: conn.link.take(),
        permit,
        client,
        unsent,
        unread,
    };
    host.stats().event(Event::ForwardedToNode);
    let shard = host.shard_id();
    monoio::spawn(async move {
        if let Err(e) = forward::run(handover, forward).await {
            tracing::info!(shard, error = %e, "a connection handed to its node failed");
        }
    });
}

/// A connection moved here: adopt its socket and queue its unsent bytes first, for the
/// rendezvous to take over (then the host flushes); None when the socket could not be
/// adopted.
pub fn adopt_moved<R: Rendezvous>(
    host: &impl Outbox<R>,
    shard_id: usize,
    moving: Relocation<R>,
) -> Option<Arrived<R>> {
    let micros = moving.sent_at.elapsed().as_micros() as u64;
    let conn = match Conn::new(moving.fd, moving.kind, moving.permit, moving.link) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(shard = shard_id, error = %e, "could not adopt a moved connection");
            return None;
        }
    };
    if let Some(client) = moving.client {
        conn.set_client(client);
    }
    {
        let mut stats = host.stats();
        stats.adopted();
        stats.record_handoff(micros);
        stats.conn_opened(moving.kind);
    }
    if !moving.unsent.is_empty() {
        conn.enqueue(host, OutFrame::raw(moving.unsent));
    }
    Some(Arrived {
        conn,
        resume: moving.resume,
        unread: moving.unread,
    })
}
