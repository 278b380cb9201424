//! The client address of a public connection behind a balancer (PROTOCOL §1.2), as the
//! accept path learns it: from the socket at accept, from a PROXY header before any
//! other byte (`--proxy-protocol`), or from `X-Forwarded-For` once the head is in
//! (`--trust-forwarded-for`). The parsing lives in [`crate::proxy`]; this module is the
//! accept path's use of it: counting refusals and placing the per-IP rate check at the
//! first point the client address is known.
//!
//! The per-IP rate (`--per-ip-rate`) is checked once per connection, keyed on the
//! client address: at accept when the socket peer is the client, right after the PROXY
//! header when the header names it, after the head when `X-Forwarded-For` does. A
//! connection refused before its head is read gets the same best-effort `429` it would
//! get at accept (PROTOCOL §2.1), written behind the header it sent — through an L4
//! balancer that reaches the client; one refused after its head gets a whole `429`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::config::Config;
use crate::http::head::RequestHead;
use crate::proxy::{self, ProxyHeaderError, TrustedProxies};
use crate::shard::refuse::{refuse_at_accept, Admission};
use crate::shard::Shard;
use crate::stats::{Event, Rejected};

/// The trusted proxies of `cfg`.
fn trusted(cfg: &Config) -> TrustedProxies<'_> {
    TrustedProxies(&cfg.trusted_proxies)
}

/// Will `X-Forwarded-For` name the client of a request that came from `hop`?
fn forwarded_for_applies(cfg: &Config, hop: IpAddr) -> bool {
    cfg.trust_forwarded_for && trusted(cfg).contains(hop)
}

/// Is the socket peer `peer` the client, so that the per-IP rate applies at accept?
pub(super) fn rate_at_accept(cfg: &Config, peer: IpAddr) -> bool {
    !cfg.proxy_protocol && !forwarded_for_applies(cfg, peer)
}

/// Under `--proxy-protocol` a connection from an address outside `--trusted-proxies`
/// is closed at accept without an answer (the caller drops it) and counted.
pub(super) fn untrusted_at_accept(shard: &Shard, peer: SocketAddr) -> bool {
    let cfg = shard.config();
    if !cfg.proxy_protocol {
        return false;
    }
    match trusted(cfg).check_peer(peer) {
        Ok(()) => false,
        Err(refusal) => {
            count_refusal(shard, refusal);
            true
        }
    }
}

/// A connection whose client address is known up to its head.
pub(super) struct Arrived {
    /// The client: the socket peer, or the PROXY header's source.
    pub(super) client: SocketAddr,
    /// Bytes read past the PROXY header: the start of the request head.
    pub(super) early: Vec<u8>,
}

/// The step of the accept path before any byte of the head (and, with TLS, before any
/// TLS byte): under `--proxy-protocol`, read the PROXY header within `budget`, then
/// apply the per-IP rate to the client it names. `None` when the connection was
/// refused (counted; closed when the caller drops it).
pub(super) async fn arrive(
    shard: &Shard,
    stream: &TcpStream,
    peer: SocketAddr,
    budget: Duration,
) -> Option<Arrived> {
    let cfg = shard.config();
    if !cfg.proxy_protocol {
        return Some(Arrived {
            client: peer,
            early: Vec::new(),
        });
    }
    let read = monoio::time::timeout(budget, proxy::read_header(stream, peer)).await;
    let arrival = match read {
        Ok(Ok(arrival)) => arrival,
        Ok(Err(refusal)) => return refused(shard, refusal),
        Err(_) => return refused(shard, ProxyHeaderError::Late),
    };
    let client = arrival.client;
    tracing::debug!(shard = shard.id, %peer, %client, "PROXY header read");
    if arrival.local {
        shard.stats.borrow_mut().event(Event::ProxyHeaderLocal);
    }
    if !forwarded_for_applies(cfg, client.ip()) && !rate_allows(shard, client.ip()) {
        refuse_at_accept(shard, stream, Admission::RateLimited);
        return None;
    }
    Some(Arrived {
        client,
        early: arrival.early,
    })
}

/// Count a refused PROXY header and give up on the connection.
fn refused(shard: &Shard, refusal: ProxyHeaderError) -> Option<Arrived> {
    count_refusal(shard, refusal);
    None
}

/// Every PROXY refusal is `rejected.proxy_header`, with its cause as an event.
fn count_refusal(shard: &Shard, refusal: ProxyHeaderError) {
    let mut stats = shard.stats.borrow_mut();
    stats.rejected(Rejected::ProxyHeader);
    stats.event(refusal_event(refusal));
}

/// The client of a request whose head is in: under `--trust-forwarded-for`, from a
/// trusted `hop`, the address `X-Forwarded-For` names; else `hop` itself. Where the
/// header decided it, the per-IP rate is applied now: `Err` is the refusal to send.
pub(super) fn after_head(
    shard: &Shard,
    hop: SocketAddr,
    head: &RequestHead,
) -> Result<SocketAddr, Admission> {
    let cfg = shard.config();
    if !forwarded_for_applies(cfg, hop.ip()) {
        return Ok(hop);
    }
    let values = head
        .headers
        .iter()
        .filter(|(name, _)| name == "x-forwarded-for")
        .map(|(_, value)| value.as_slice());
    let ip = trusted(cfg).forwarded_client(hop.ip(), values);
    // The port is the hop's: X-Forwarded-For carries none worth believing.
    let client = SocketAddr::new(ip, hop.port());
    if !rate_allows(shard, ip) {
        return Err(Admission::RateLimited);
    }
    Ok(client)
}

/// The per-IP rate (`--per-ip-rate`) for one connection attempt from `ip`.
pub(super) fn rate_allows(shard: &Shard, ip: IpAddr) -> bool {
    shard
        .global
        .rate_limiter
        .as_ref()
        .is_none_or(|limiter| limiter.allow(ip, Instant::now()))
}

/// The time left of the handshake timeout for a connection accepted at `accepted_at`.
pub(super) fn time_left(shard: &Shard, accepted_at: Instant) -> Duration {
    shard
        .config()
        .handshake_timeout
        .saturating_sub(accepted_at.elapsed())
}

/// The `/stats` event naming a PROXY header failure (`events.proxy_header_*`), alongside
/// the one `rejected.proxy_header` reason every failure is counted under.
fn refusal_event(refusal: ProxyHeaderError) -> Event {
    match refusal {
        ProxyHeaderError::Untrusted => Event::ProxyHeaderUntrusted,
        ProxyHeaderError::Malformed => Event::ProxyHeaderMalformed,
        ProxyHeaderError::TooLong { .. } => Event::ProxyHeaderTooLong,
        ProxyHeaderError::Closed => Event::ProxyHeaderMissing,
        ProxyHeaderError::Late => Event::ProxyHeaderLate,
    }
}
