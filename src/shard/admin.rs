//! The shard's plain HTTP endpoints: the health probes (both listeners) and the admin
//! listener's `/stats`, `/metrics` and `POST /v1/tickets` (minting lives in
//! `modes::ticket`). Here, not in `http`, because answering them gathers every shard's
//! reports over the inboxes; `http` only parses and formats. Each request gets one
//! response and the connection closes (probes and scrapers reconnect; keep-alive would
//! only hold descriptors).

use std::rc::Rc;

use monoio::net::TcpStream;

use crate::http::auth::{bearer_token, constant_time_eq};
use crate::http::head::{Method, RequestHead};
use crate::http::response;
use crate::modes::ticket;
use crate::net::reply_and_close;
use crate::shard::refuse::refuse;
use crate::shard::Shard;
use crate::stats::{
    self, CoarseReport, HealthCounts, MetricsReport, Rejected, ReportKind, ShardReport, StatsPlan,
    StatsReport,
};
use crate::tls::Link;

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
        return refuse(shard, stream, Link::plain(), Rejected::Unauthorized, resp).await;
    }
    let known = matches!(
        path,
        "/health" | "/healthz" | "/stats" | "/metrics" | "/v1/tickets"
    );
    if !known {
        let resp = response::close_response(404, "text/plain", &[], b"not found\n");
        return refuse(shard, stream, Link::plain(), Rejected::NotFound, resp).await;
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
        return refuse(
            shard,
            stream,
            Link::plain(),
            Rejected::MethodNotAllowed,
            resp,
        )
        .await;
    }
    match path {
        "/v1/tickets" => ticket::mint(shard, stream, &head, body).await,
        "/stats" => serve_stats(shard, stream, &head).await,
        "/metrics" => serve_metrics(shard, stream).await,
        _ => serve_health(shard, stream, Link::plain()).await,
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

/// `GET /health` and `GET /healthz`: a superset of both seeds' health bodies. Read
/// from the shards' [`crate::stats::HealthMirror`]s only: no stats snapshot (copying
/// every shard's histograms costs relay CPU and transient memory per probe in flight),
/// and no message to another shard, so a probe flood costs what any small
/// request costs and disturbs no shard but the one that accepted it.
pub async fn serve_health(shard: &Rc<Shard>, stream: TcpStream, link: Link) {
    let counts = shard
        .global
        .health
        .iter()
        .fold(HealthCounts::default(), |mut sum, mirror| {
            sum.add(&mirror.read());
            sum
        });
    let body = health_body(shard, &counts);
    let resp = response::close_response(
        200,
        "application/json",
        &[("Cache-Control", "no-store")],
        body.as_bytes(),
    );
    reply_and_close(stream, link, &resp).await;
}

/// The health JSON, keys in the sorted order serde_json gave them before, written
/// directly: every value is a number or a fixed string, so nothing needs escaping, and a
/// probe costs one allocation instead of a JSON map's dozen.
fn health_body(shard: &Shard, counts: &HealthCounts) -> String {
    format!(
        concat!(
            r#"{{"connected_binaries":{},"connected_phones":{},"ok":true,"pairs":{},"#,
            r#""sessions":{},"shards":{},"status":"ok","tickets":{},"uptime_seconds":{},"#,
            r#""version":"{}"}}"#
        ),
        counts.binaries,
        counts.phones,
        counts.pairs.max(0),
        counts.sessions.max(0),
        shard.global.shards,
        counts.tickets.max(0),
        shard.global.started.elapsed().as_secs(),
        env!("CARGO_PKG_VERSION"),
    )
}

/// `GET /stats[?reset=1][&histograms=recorded]`: two bounded rounds over the shards,
/// or one round of every recorded bucket when those were asked for.
async fn serve_stats(shard: &Rc<Shard>, stream: TcpStream, head: &RequestHead) {
    let reset = matches!(head.query_param("reset"), Some(Ok(v)) if v == b"1" || v == b"true");
    let options = stats::JsonOptions {
        recorded: matches!(head.query_param("histograms"), Some(Ok(v)) if v == b"recorded"),
    };
    let uptime = shard.global.started.elapsed().as_secs();
    let body = if options.recorded {
        // Every recorded bucket was asked for: one round, the buckets themselves.
        let reports: Vec<StatsReport> = shard
            .gather_stats(ReportKind::Stats, reset)
            .await
            .into_iter()
            .filter_map(|r| match r {
                ShardReport::Stats(r) => Some(*r),
                _ => None,
            })
            .collect();
        stats::render_json_with(uptime, &reports, options)
    } else {
        // Two bounded rounds (see `stats::StatsPlan`); the reset, if asked, happens in
        // the second, after the counts it answers.
        let reports: Vec<CoarseReport> = shard
            .gather_stats(ReportKind::Coarse, false)
            .await
            .into_iter()
            .filter_map(|r| match r {
                ShardReport::Coarse(r) => Some(*r),
                _ => None,
            })
            .collect();
        let plan = StatsPlan::new(reports);
        let fine = shard.gather_fine(plan.asked(), reset).await;
        plan.render(uptime, &fine)
    };
    let resp = response::close_response(
        200,
        "application/json",
        &[("Cache-Control", "no-store")],
        body.as_bytes(),
    );
    reply_and_close(stream, Link::plain(), &resp).await;
}

/// `GET /metrics`.
async fn serve_metrics(shard: &Rc<Shard>, stream: TcpStream) {
    let reports = shard.gather_stats(ReportKind::Metrics, false).await;
    let reports: Vec<MetricsReport> = reports
        .into_iter()
        .filter_map(|r| match r {
            ShardReport::Metrics(r) => Some(*r),
            _ => None,
        })
        .collect();
    let uptime = shard.global.started.elapsed().as_secs();
    let mut body = stats::render_prometheus(uptime, &reports);
    let global = &shard.global;
    let facts = crate::process::ProcessFacts::collect(global.driver, global.max_connections);
    body.push_str(&crate::process::render_prometheus(&facts));
    let resp = response::close_response(
        200,
        "text/plain; version=0.0.4",
        &[("Cache-Control", "no-store")],
        body.as_bytes(),
    );
    reply_and_close(stream, Link::plain(), &resp).await;
}

#[cfg(test)]
mod health_tests {
    use std::sync::Arc;

    use super::*;
    use crate::stats::{ConnKind, Gauge, HealthMirror, ShardStats};

    #[test]
    fn the_mirror_follows_the_shards_own_tallies() {
        let mirror = Arc::new(HealthMirror::default());
        let mut stats = ShardStats::with_mirror(3, mirror.clone());
        stats.conn_opened(ConnKind::Binary);
        stats.conn_opened(ConnKind::Binary);
        stats.conn_opened(ConnKind::Phone);
        stats.conn_closed(ConnKind::Binary);
        stats.conn_closed(ConnKind::Phone);
        stats.conn_closed(ConnKind::Phone); // a double close saturates, as the tally does
        stats.conn_opened(ConnKind::Pair); // not a /health figure
        stats.gauge_add(Gauge::Pairs, 2);
        stats.gauge_add(Gauge::Sessions, -1); // another shard will add it back
        stats.gauge_add(Gauge::Tickets, 1);
        stats.gauge_add(Gauge::ServerSlots, 5); // not a /health figure
        let want = HealthCounts {
            binaries: stats.connections(ConnKind::Binary),
            phones: stats.connections(ConnKind::Phone),
            pairs: stats.gauge(Gauge::Pairs),
            sessions: stats.gauge(Gauge::Sessions),
            tickets: stats.gauge(Gauge::Tickets),
        };
        assert_eq!(mirror.read(), want);
        assert_eq!(
            want,
            HealthCounts {
                binaries: 1,
                phones: 0,
                pairs: 2,
                sessions: -1,
                tickets: 1
            }
        );
    }
}
