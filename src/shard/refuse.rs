//! Refusals on the shard's accept path and admin endpoints: the best-effort answer at
//! accept (before any byte of the head is read) and the counted plain-HTTP refusal
//! after it. Kept apart from `accept` so that `admin` and `client_addr`, which refuse
//! too, do not import the accept path that calls them.

use std::os::fd::AsRawFd;

use monoio::net::TcpStream;

use crate::http::response;
use crate::net;
use crate::shard::Shard;
use crate::stats::Rejected;
use crate::sys;
use crate::tls::Link;

/// A refusal decided at accept, before any byte of the head is read.
#[derive(Debug, Clone, Copy)]
pub(super) enum Admission {
    /// Over `--max-connections`.
    OverCapacity,
    /// Over `--per-ip-rate`.
    RateLimited,
}

/// Refuse a public connection at accept (PROTOCOL §2.1): a best-effort `503`/`429`
/// written now if the socket takes it, and the socket closed when the caller drops it —
/// no head is read and no descriptor is held past this loop turn.
pub(super) fn refuse_at_accept(shard: &Shard, stream: &TcpStream, refusal: Admission) {
    let (reason, status, body): (_, _, &[u8]) = match refusal {
        Admission::OverCapacity => (Rejected::OverCapacity, 503, b"over capacity\n"),
        Admission::RateLimited => (
            Rejected::RateLimited,
            429,
            b"too many connection attempts\n",
        ),
    };
    shard.stats.borrow_mut().rejected(reason);
    if shard.global.tls.is_some() {
        // A TLS client cannot read a plaintext answer before its handshake, and a
        // handshake is the work refusing at accept exists to avoid: just close.
        return;
    }
    let resp = response::close_response(status, "text/plain", &[], body);
    sys::refuse_now(stream.as_raw_fd(), &resp);
}

/// Answer with a plain HTTP response (inside TLS on a TLS connection), count the
/// rejection, and close.
pub(super) async fn refuse(
    shard: &Shard,
    stream: TcpStream,
    link: Link,
    reason: Rejected,
    resp: Vec<u8>,
) {
    shard.stats.borrow_mut().rejected(reason);
    net::reply_and_close(stream, link, &resp).await;
}
