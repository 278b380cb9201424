//! Tickets (PROTOCOL §6): one HTTP PUT streams its body to one HTTP GET.
//! PLACEHOLDER until the ticket issue lands: every relay request gets 503.

use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use crate::http::response;
use crate::shard::accept::refuse;
use crate::shard::{Shard, Upgrade};

/// The ticket registry of one shard.
#[derive(Debug, Default)]
pub struct Registry {}

/// Serve `PUT /v1/relay` or `GET /v1/relay` on the ticket's owner shard.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, _request: Upgrade) {
    let resp = response::json_error(503, "tickets are not available yet");
    refuse(&shard, stream, "tickets_unavailable", resp).await;
}

/// Expire tickets.
pub fn tick(_shard: &Rc<Shard>, _now: Instant) {}

/// Transfers (and waiting sides) still open on this shard: shutdown waits for them.
pub fn in_flight(_shard: &Shard) -> usize {
    0
}

/// Shutdown began: refuse sides still waiting for their peer; transfers continue.
pub fn on_shutdown(_shard: &Rc<Shard>) {}

/// The drain timeout passed: abort every transfer still running (as PROTOCOL §6.2
/// aborts: the GET response is cut short, never complete-looking).
pub fn abort_all(_shard: &Rc<Shard>) {}
