//! Plain HTTP endpoints: the health probes (both listeners) and the admin listener's
//! `/stats`, `/metrics` and `POST /v1/tickets` (minting lives in `modes::ticket`). Each
//! request gets one response and the connection closes
//! (probes and scrapers reconnect; keep-alive would only hold descriptors).

use std::rc::Rc;

use monoio::net::TcpStream;

use crate::http::head::{Method, RequestHead};
use crate::http::response;
use crate::modes::ticket;
use crate::shard::accept::{refuse, respond_and_close};
use crate::shard::Shard;
use crate::stats::{self, ConnKind, ShardStats};

/// Serve one admin-listener request.
pub async fn serve(shard: &Rc<Shard>, stream: TcpStream, head: RequestHead, body: Vec<u8>) {
    let path = head.path.as_str();
    let is_probe = matches!(path, "/health" | "/healthz");
    if !is_probe && !authorized(shard, &head) {
        let resp = response::close_response(
            401,
            "application/json",
            &[("WWW-Authenticate", "Bearer")],
            br#"{"error":"admin token required"}"#,
        );
        return refuse(shard, stream, "unauthorized", resp).await;
    }
    let known = matches!(
        path,
        "/health" | "/healthz" | "/stats" | "/metrics" | "/v1/tickets"
    );
    if !known {
        let resp = response::close_response(404, "text/plain", &[], b"not found\n");
        return refuse(shard, stream, "not_found", resp).await;
    }
    let allowed = if path == "/v1/tickets" {
        Method::Post
    } else {
        Method::Get
    };
    if head.method != allowed {
        let allow = if allowed == Method::Post {
            "POST"
        } else {
            "GET"
        };
        let resp = response::close_response(
            405,
            "text/plain",
            &[("Allow", allow)],
            b"method not allowed\n",
        );
        return refuse(shard, stream, "method_not_allowed", resp).await;
    }
    match path {
        "/v1/tickets" => ticket::mint(shard, stream, &head, body).await,
        "/stats" => serve_stats(shard, stream, &head).await,
        "/metrics" => serve_metrics(shard, stream).await,
        _ => serve_health(shard, stream).await,
    }
}

/// The bearer token matches, or none is configured.
fn authorized(shard: &Shard, head: &RequestHead) -> bool {
    let Some(expected) = &shard.global.admin_token else {
        return true;
    };
    let given = head
        .header("authorization")
        .and_then(bearer_token)
        .unwrap_or_default();
    constant_time_eq(given.as_bytes(), expected.as_bytes())
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compare without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /health` and `GET /healthz`: a superset of both seeds' health bodies. Built
/// from [`HealthCounts`] only, never from a stats snapshot: a probe flood must cost no
/// more than any other small request (copying every shard's histograms cost ~350 µs of
/// relay CPU and tens of MB of transient memory per request in flight).
pub async fn serve_health(shard: &Rc<Shard>, stream: TcpStream) {
    let counts = shard.gather_health().await;
    let body = health_body(shard, &counts);
    let resp = response::close_response(
        200,
        "application/json",
        &[("Cache-Control", "no-store")],
        body.as_bytes(),
    );
    respond_and_close(stream, &resp).await;
}

/// What `/health` reports of one shard, or of all of them summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCounts {
    /// Open binary connections.
    pub binaries: u64,
    /// Open phone connections.
    pub phones: u64,
    /// This shard's share of the `pairs` gauge (may be negative alone, see `gauge_add`).
    pub pairs: i64,
    /// This shard's share of the `sessions` gauge.
    pub sessions: i64,
    /// This shard's share of the `tickets` gauge.
    pub tickets: i64,
}

impl HealthCounts {
    /// Read one shard's counts in place.
    pub fn of(stats: &ShardStats) -> Self {
        HealthCounts {
            binaries: stats.connections(ConnKind::Binary),
            phones: stats.connections(ConnKind::Phone),
            pairs: stats.gauge("pairs"),
            sessions: stats.gauge("sessions"),
            tickets: stats.gauge("tickets"),
        }
    }

    /// Add another shard's counts.
    pub fn add(&mut self, other: &HealthCounts) {
        self.binaries = self.binaries.saturating_add(other.binaries);
        self.phones = self.phones.saturating_add(other.phones);
        self.pairs = self.pairs.saturating_add(other.pairs);
        self.sessions = self.sessions.saturating_add(other.sessions);
        self.tickets = self.tickets.saturating_add(other.tickets);
    }
}

/// The health JSON.
fn health_body(shard: &Shard, counts: &HealthCounts) -> String {
    serde_json::json!({
        "ok": true,
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": shard.global.started.elapsed().as_secs(),
        "shards": shard.global.shards,
        "connected_binaries": counts.binaries,
        "connected_phones": counts.phones,
        "pairs": counts.pairs.max(0),
        "sessions": counts.sessions.max(0),
        "tickets": counts.tickets.max(0),
    })
    .to_string()
}

/// `GET /stats[?reset=1][&histograms=recorded]`.
async fn serve_stats(shard: &Rc<Shard>, stream: TcpStream, head: &RequestHead) {
    let reset = matches!(head.query_param("reset"), Some(Ok(v)) if v == b"1" || v == b"true");
    let options = stats::JsonOptions {
        recorded: matches!(head.query_param("histograms"), Some(Ok(v)) if v == b"recorded"),
    };
    let snaps = shard.gather_stats(reset).await;
    let uptime = shard.global.started.elapsed().as_secs();
    let body = stats::render_json_with(uptime, &snaps, options);
    let resp = response::close_response(
        200,
        "application/json",
        &[("Cache-Control", "no-store")],
        body.as_bytes(),
    );
    respond_and_close(stream, &resp).await;
}

/// `GET /metrics`.
async fn serve_metrics(shard: &Rc<Shard>, stream: TcpStream) {
    let snaps = shard.gather_stats(false).await;
    let uptime = shard.global.started.elapsed().as_secs();
    let mut body = stats::render_prometheus(uptime, &snaps);
    let global = &shard.global;
    let facts = crate::process::ProcessFacts::collect(global.driver, global.max_connections);
    body.push_str(&crate::process::render_prometheus(&facts));
    let resp = response::close_response(
        200,
        "text/plain; version=0.0.4",
        &[("Cache-Control", "no-store")],
        body.as_bytes(),
    );
    respond_and_close(stream, &resp).await;
}
