//! Tickets (PROTOCOL §6): one HTTP PUT streams its body to one HTTP GET, meeting
//! through a 256-bit ticket minted on the admin API.
//!
//! # Layout
//! * `mint` — `POST /v1/tickets`: body, checks, the workspace cap, minting.
//! * `registry` — the shard's ticket table and its phases (pure bookkeeping).
//! * `transfer` — the pump between the two sockets and the endings.
//! * `body` — the bounded window, PUT body decoding and GET response framing.
//! * `chunked` — an incremental chunked-body decoder (pure).
//!
//! Flow: a ticket is minted on its workspace's shard (`shard_of(workspace_id)`, asked
//! over its inbox by the admin shard), and every request for a ticket runs on that
//! owner shard.
//! The first side to arrive claims its half and waits on a latch, watching its own
//! socket so a client that leaves frees its claim; the second side hands its socket
//! to the waiting task, which runs the whole transfer. The shard's tick expires waiting
//! sides (408) and forgets spent tickets; there is no timer per ticket.
//!
//! `/stats`: gauge `tickets` (unfinished tickets); events `tickets_minted`,
//! `tickets_ok`, `tickets_too_large`, `tickets_put_aborted`, `tickets_get_aborted`,
//! `tickets_timed_out`, `tickets_expired_unused`, `tickets_shutdown`; every PUT read
//! counts as one `messages_in` with its payload bytes, every GET write as one
//! `messages_out` with its payload bytes. Tickets, tokens and body bytes are never
//! logged.

mod body;
mod chunked;
mod mint;
mod registry;
mod transfer;

use std::io;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

pub use mint::serve_mint as mint;
pub use mint::{mint_here, MintOutcome, MintPlan};
pub use registry::{Registry, Settings};

use body::framing_of;
use registry::{Arrived, Claim, SideConn, TicketSide, Waiter, Wakeup};
use transfer::PutSide;

use crate::http::head::RequestHead;
use crate::http::response;
use crate::http::routes::Route;
use crate::http::upgrade::Upgrade;
use crate::modes::StyleHost;
use crate::net::reply_and_close;
use crate::stats::{Event, Gauge, Rejected};
use crate::tls::Link;

/// `HTTP/1.1 100 Continue`, sent to a PUT with `Expect: 100-continue` once its claim
/// is accepted.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Serve `PUT /v1/relay` or `GET /v1/relay` on the ticket's owner shard.
pub async fn serve<S: StyleHost>(shard: Rc<S>, stream: TcpStream, mut request: Upgrade) {
    let link = std::mem::take(&mut request.link);
    let (ticket, side) = match request.route {
        Route::TicketPut { ticket } => (ticket, TicketSide::Put),
        Route::TicketGet { ticket } => (ticket, TicketSide::Get),
        _ => return,
    };
    if shard.shutting_down() {
        let resp = response::json_error(503, "shutting down");
        return refuse(&*shard, stream, link, Rejected::ShuttingDown, resp).await;
    }
    if side == TicketSide::Put {
        if let Err(msg) = framing_of(&request.head) {
            return refuse(
                &*shard,
                stream,
                link,
                Rejected::BadTicketBody,
                response::json_error(400, msg),
            )
            .await;
        }
    }
    let claim = shard
        .tickets()
        .borrow_mut()
        .claim(&ticket, side, Instant::now());
    let (reason, status, msg) = match claim {
        Claim::NotFound => (Rejected::TicketNotFound, 404, "ticket not found or expired"),
        Claim::Finished => (Rejected::TicketFinished, 410, "relay already finished"),
        Claim::AlreadyClaimed => (Rejected::TicketSideClaimed, 423, side.claimed_message()),
        Claim::Wait(waiter) => {
            let conn = SideConn::open(&shard, stream, link, side, request.permit);
            let me = Arrived {
                conn,
                head: request.head,
                leftover: request.leftover,
            };
            return wait_for_peer(shard, ticket, waiter, me).await;
        }
        Claim::Meet(waiter) => {
            let conn = SideConn::open(&shard, stream, link, side, request.permit);
            send_continue(&conn, &request.head);
            let me = Arrived {
                conn,
                head: request.head,
                leftover: request.leftover,
            };
            waiter.wake(Wakeup::Peer(Box::new(me)));
            return;
        }
    };
    refuse(
        &*shard,
        stream,
        link,
        reason,
        response::json_error(status, msg),
    )
    .await;
}

/// Answer with a plain HTTP response (inside TLS on a TLS connection), count the
/// rejection, and close.
async fn refuse<S: StyleHost>(
    shard: &S,
    stream: TcpStream,
    link: Link,
    reason: Rejected,
    resp: Vec<u8>,
) {
    shard.stats().rejected(reason);
    reply_and_close(stream, link, &resp).await;
}

/// Answer `Expect: 100-continue` on a PUT whose claim was accepted. One non-blocking
/// send of 25 bytes into a fresh connection's empty send buffer; if even that fails the
/// socket is broken and the transfer will find out.
fn send_continue(conn: &SideConn, head: &RequestHead) -> bool {
    let expects = conn.side == TicketSide::Put
        && head.minor_version >= 1
        && head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if !expects {
        return true;
    }
    let slice = [io::IoSlice::new(CONTINUE)];
    matches!(conn.send_vectored(&slice), Ok(n) if n == CONTINUE.len())
}

/// The first side waits for the second, its ticket's expiry, or shutdown, and frees its
/// claim if its client leaves meanwhile. A waiting PUT reads ahead into a buffer of at
/// most one window (it must read to notice an EOF); once that is full it waits on the
/// latch alone, and a client gone by then is found when the transfer starts.
async fn wait_for_peer<S: StyleHost>(
    shard: Rc<S>,
    ticket: String,
    waiter: Rc<Waiter>,
    mut me: Arrived,
) {
    if !send_continue(&me.conn, &me.head) {
        shard.tickets().borrow_mut().release(&ticket, &waiter);
        return;
    }
    let wakeup = loop {
        if let Some(wakeup) = waiter.take() {
            break wakeup;
        }
        let window = shard.tickets().borrow().settings().window;
        let watch = me.conn.side == TicketSide::Get || me.leftover.len() < window;
        let gone = monoio::select! {
            _ = waiter.woken() => false,
            r = me.conn.stream.readable(false), if watch => {
                r.is_err() || client_left(&mut me, window)
            }
        };
        if gone && shard.tickets().borrow_mut().release(&ticket, &waiter) {
            return;
        }
    };
    match wakeup {
        Wakeup::Peer(peer) => start_transfer(shard, ticket, me, *peer).await,
        Wakeup::Expired => {
            let resp = response::json_error(408, "timed out waiting for the other side");
            transfer::respond(me.conn, &resp).await;
        }
        Wakeup::ShuttingDown => {
            let resp = response::json_error(503, "shutting down");
            transfer::respond(me.conn, &resp).await;
        }
    }
}

/// After read readiness on a waiting side: did its client leave? A PUT's body bytes are
/// kept (bounded by the window); anything a GET sends is dropped.
fn client_left(me: &mut Arrived, window: usize) -> bool {
    loop {
        let result = match me.conn.side {
            TicketSide::Put => {
                let room = window.saturating_sub(me.leftover.len());
                if room == 0 {
                    return false;
                }
                me.conn.recv_into(&mut me.leftover, room)
            }
            TicketSide::Get => {
                let mut sink = Vec::with_capacity(1024);
                me.conn.recv_into(&mut sink, 1024)
            }
        };
        match result {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Both sides are here: order them and pump.
async fn start_transfer<S: StyleHost>(shard: Rc<S>, ticket: String, me: Arrived, peer: Arrived) {
    let (put, get) = match me.conn.side {
        TicketSide::Put => (me, peer),
        TicketSide::Get => (peer, me),
    };
    let put = PutSide {
        conn: put.conn,
        head: put.head,
        pre: put.leftover,
    };
    transfer::run(shard, ticket, put, get.conn).await;
}

/// Expire waiting sides (408) and forget spent tickets past their retention.
pub fn tick<S: StyleHost>(shard: &Rc<S>, now: Instant) {
    let swept = shard.tickets().borrow_mut().sweep(now);
    {
        let mut stats = shard.stats();
        for _ in 0..swept.timed_out {
            stats.event(Event::TicketsTimedOut);
        }
        for _ in 0..swept.unused {
            stats.event(Event::TicketsExpiredUnused);
        }
        if swept.unfinished_gone != 0 {
            stats.gauge_add(Gauge::Tickets, -swept.unfinished_gone);
        }
    }
    for waiter in swept.waiters {
        waiter.wake(Wakeup::Expired);
    }
}

/// Transfers still running on this shard: shutdown waits for them.
pub fn in_flight<S: StyleHost>(shard: &S) -> usize {
    shard.tickets().borrow().running()
}

/// Shutdown began: sides still waiting get 503 and their claims are freed; running
/// transfers continue.
pub fn on_shutdown<S: StyleHost>(shard: &Rc<S>) {
    let waiters = shard.tickets().borrow_mut().take_all_waiters();
    for waiter in waiters {
        waiter.wake(Wakeup::ShuttingDown);
    }
}

/// The drain timeout passed: abort every transfer still running (the GET response is
/// cut short, never complete-looking; the PUT gets 503).
pub fn abort_all<S: StyleHost>(shard: &Rc<S>) {
    let flags = shard.tickets().borrow().abort_flags();
    for flag in flags {
        flag.raise();
    }
}
