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
