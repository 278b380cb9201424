//! The typed `/stats` model of shardrelay, shared by the relay (which serialises it), the
//! `shardrelay stats` view, the load generator and the tests (which deserialise it).
//!
//! * [`keys`]: every metric key as an enum ([`ConnKind`], [`Style`], [`Rejected`],
//!   [`Dropped`], [`Event`], [`Gauge`]) — the one place the names are spelled.
//! * [`Stats`] and its parts: the `/stats` body (PROTOCOL §7). Field order is the body's
//!   key order and the maps are keyed by enums ordered by name, so serialising a value
//!   gives the exact bytes the relay has always sent; every struct rejects unknown fields
//!   and no field has a serde default (bar the optional `allocations` and `recorded`),
//!   so a body that gained or lost a key fails to parse instead of being read half-right.
//!   (`Default` builds an all-zero value, for tests and for clients that start empty.)
//!
//! This crate depends on serde alone: the load generator uses it without pulling in the
//! relay (its runtime, parsers and allocator).

pub mod keys;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use keys::{ConnKind, Dropped, Event, Gauge, Key, Rejected, Style};

/// The `/stats` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Seconds since the process started.
    pub uptime_seconds: u64,
    /// How many shards answered (the length of `per_shard`).
    pub shards: u64,
    /// The whole process: every shard merged, histograms exactly.
    pub totals: Tallies,
    /// Each shard on its own, in shard order.
    pub per_shard: Vec<ShardTallies>,
    /// Process-wide allocation counts; only in an `alloc-count` build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocations: Option<Allocations>,
    /// The memory budget of PROTOCOL §2.1.
    pub memory: Memory,
}

/// `memory`: what clients make the relay hold, against `--memory-limit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// Bytes charged now (queues, early messages, read buffers, heads, ticket windows).
    pub used_bytes: u64,
    /// `--memory-limit`.
    pub limit_bytes: u64,
}

/// `allocations` in an `alloc-count` build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocations {
    /// Allocations and reallocations since the process started.
    pub count: u64,
    /// Bytes they asked for.
    pub bytes: u64,
}

/// One entry of `per_shard`: the shard id, then the same keys as `totals`. (serde's
/// `deny_unknown_fields` does not work beside `flatten`, so parsing goes through
/// [`RawShardTallies`], which collects any other key and refuses it.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawShardTallies")]
pub struct ShardTallies {
    /// The shard id.
    pub shard: u64,
    /// The shard's tallies, flattened beside `shard`.
    #[serde(flatten)]
    pub tallies: Tallies,
}

/// A `per_shard` entry as parsed: the known keys, and whatever else it held.
#[derive(Deserialize)]
struct RawShardTallies {
    /// The shard id.
    shard: u64,
    /// The keys `totals` also has.
    #[serde(flatten)]
    tallies: Tallies,
    /// Any key not taken above (must be none).
    #[serde(flatten)]
    unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

impl TryFrom<RawShardTallies> for ShardTallies {
    type Error = String;

    fn try_from(raw: RawShardTallies) -> Result<Self, String> {
        match raw.unknown.keys().next() {
            Some(key) => Err(format!("unknown field `{key}` in a per_shard entry")),
            None => Ok(ShardTallies {
                shard: raw.shard,
                tallies: raw.tallies,
            }),
        }
    }
}

/// The counter, gauge and histogram keys shared by `totals` and each `per_shard` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tallies {
    /// Open connections by kind (every kind present, zeros included).
    pub connections: BTreeMap<ConnKind, u64>,
    /// TCP connections accepted.
    pub accepted: u64,
    /// Connections handed to another shard.
    pub handoffs: u64,
    /// Connections adopted from another shard.
    pub adopted: u64,
    /// Refusals by reason (reasons seen so far).
    pub rejected: BTreeMap<Rejected, u64>,
    /// Messages read from clients.
    pub messages_in: u64,
    /// Messages written to clients.
    pub messages_out: u64,
    /// Payload bytes read.
    pub bytes_in: u64,
    /// Payload bytes written.
    pub bytes_out: u64,
    /// Messages not forwarded, by reason (reasons seen so far).
    pub dropped: BTreeMap<Dropped, u64>,
    /// Other named counters (names seen so far).
    pub events: BTreeMap<Event, u64>,
    /// Registry sizes (gauges moved so far).
    pub gauges: BTreeMap<Gauge, i64>,
    /// The three latency histograms.
    pub histograms: Histograms,
    /// Forward latency by rendezvous style (styles seen so far).
    pub forward_by_mode: BTreeMap<Style, Histogram>,
}

impl Tallies {
    /// Open connections of `kind` (0 if absent).
    pub fn connections(&self, kind: ConnKind) -> u64 {
        self.connections.get(&kind).copied().unwrap_or(0)
    }

    /// Refusals for `reason` (0 if never counted).
    pub fn rejected(&self, reason: Rejected) -> u64 {
        self.rejected.get(&reason).copied().unwrap_or(0)
    }

    /// Drops for `reason` (0 if never counted).
    pub fn dropped(&self, reason: Dropped) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }

    /// Count of `event` (0 if never counted).
    pub fn event(&self, event: Event) -> u64 {
        self.events.get(&event).copied().unwrap_or(0)
    }

    /// Gauge `gauge` (0 if never moved).
    pub fn gauge(&self, gauge: Gauge) -> i64 {
        self.gauges.get(&gauge).copied().unwrap_or(0)
    }

    /// Open connections of every kind.
    pub fn open_connections(&self) -> u64 {
        self.connections.values().sum()
    }
}

/// The `histograms` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Histograms {
    /// Read-to-written latency of relayed messages.
    pub forward: Histogram,
    /// HTTP/upgrade handshake latency.
    pub handshake: Histogram,
    /// Shard-to-shard handoff latency.
    pub handoff: Histogram,
}

/// The latency histograms of `histograms`, for iterating by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HistogramName {
    /// `forward`.
    Forward,
    /// `handshake`.
    Handshake,
    /// `handoff`.
    Handoff,
}

impl HistogramName {
    /// Every histogram, in body order.
    pub const ALL: [HistogramName; 3] = [
        HistogramName::Forward,
        HistogramName::Handshake,
        HistogramName::Handoff,
    ];

    /// The key under `histograms`.
    pub const fn name(self) -> &'static str {
        match self {
            HistogramName::Forward => "forward",
            HistogramName::Handshake => "handshake",
            HistogramName::Handoff => "handoff",
        }
    }
}

impl Histograms {
    /// Histogram `name`.
    pub fn get(&self, name: HistogramName) -> &Histogram {
        match name {
            HistogramName::Forward => &self.forward,
            HistogramName::Handshake => &self.handshake,
            HistogramName::Handoff => &self.handoff,
        }
    }
}

/// A histogram's summary, all in microseconds (values are HDR bucket values: within
/// 0.1 % of what was recorded). Every field is 0 for an empty histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Histogram {
    /// Samples recorded.
    pub count: u64,
    /// Smallest sample.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Mean, rounded to 0.01 µs to keep the body short.
    pub mean: f64,
    /// With `?histograms=recorded` (`totals` only): every recorded value and its count,
    /// `[[µs, count], …]` in value order, so a client can subtract two snapshots and
    /// take exact quantiles of the interval between them without resetting anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Vec<(u64, u64)>>,
}

impl Histogram {
    /// All zeros: an empty histogram.
    pub const fn empty() -> Self {
        Histogram {
            count: 0,
            min: 0,
            p50: 0,
            p90: 0,
            p99: 0,
            p999: 0,
            max: 0,
            mean: 0.0,
            recorded: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"uptime_seconds":3,"shards":1,"totals":{"connections":{"binary":1,"echo":0},"accepted":2,"handoffs":0,"adopted":0,"rejected":{"not_found":1},"messages_in":0,"messages_out":0,"bytes_in":0,"bytes_out":0,"dropped":{},"events":{"codes_minted":1},"gauges":{"pairs":-1},"histograms":{"forward":{"count":1,"min":5,"p50":5,"p90":5,"p99":5,"p999":5,"max":5,"mean":5.0,"recorded":[[5,1]]},"handshake":{"count":0,"min":0,"p50":0,"p90":0,"p99":0,"p999":0,"max":0,"mean":0.0},"handoff":{"count":0,"min":0,"p50":0,"p90":0,"p99":0,"p999":0,"max":0,"mean":0.0}},"forward_by_mode":{}},"per_shard":[],"memory":{"used_bytes":0,"limit_bytes":10}}"#;

    #[test]
    fn a_body_round_trips_byte_for_byte() {
        let stats: Stats = serde_json::from_str(BODY).unwrap();
        assert_eq!(stats.totals.rejected(Rejected::NotFound), 1);
        assert_eq!(stats.totals.gauge(Gauge::Pairs), -1);
        assert_eq!(stats.totals.event(Event::CodesMinted), 1);
        assert_eq!(serde_json::to_string(&stats).unwrap(), BODY);
    }

    #[test]
    fn unknown_and_missing_keys_fail_to_parse() {
        let extra = BODY.replace(r#""accepted":2"#, r#""accepted":2,"surprise":1"#);
        assert!(serde_json::from_str::<Stats>(&extra).is_err());
        let missing = BODY.replace(r#""accepted":2,"#, "");
        assert!(serde_json::from_str::<Stats>(&missing).is_err());
        let unknown_reason = BODY.replace("not_found", "not_a_reason");
        assert!(serde_json::from_str::<Stats>(&unknown_reason).is_err());
    }

    #[test]
    fn a_per_shard_entry_with_an_unknown_key_fails_to_parse() {
        let stats: Stats = serde_json::from_str(BODY).unwrap();
        let entry = serde_json::to_string(&ShardTallies {
            shard: 0,
            tallies: stats.totals,
        })
        .unwrap();
        let with =
            |entry: &str| BODY.replace(r#""per_shard":[]"#, &format!(r#""per_shard":[{entry}]"#));
        assert!(serde_json::from_str::<Stats>(&with(&entry)).is_ok());
        let extra = entry.replacen(r#""accepted":"#, r#""surprise":1,"accepted":"#, 1);
        assert!(serde_json::from_str::<Stats>(&with(&extra)).is_err());
    }
}
