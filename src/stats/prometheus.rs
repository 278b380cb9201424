//! Prometheus: the `/metrics` body, text exposition format 0.0.4.

use std::fmt::{self, Write as _};

use super::*;

// Only per-shard series are emitted, each with a `shard` label: Prometheus sums counters
// and gauges across labels itself, and a separate "total" series would double every sum.
//
// Latencies are Prometheus histograms in seconds, with fixed buckets
// ([`PROM_BUCKETS_MICROS`]) so that series from every shard and every host can be summed
// (`sum by (le) (rate(..._bucket[5m]))`, then `histogram_quantile`). Each shard counts
// its samples into these buckets at record time ([`PromBuckets`]), beside its HDR
// histogram, so a scrape copies a few hundred bytes per histogram whatever the traffic
// history. Exact quantiles (0.1 %) remain in `/stats`.

/// Prefix of every metric name.
pub(super) const PROM_PREFIX: &str = "shardrelay_";

/// Upper bounds (`le`) of the latency histogram buckets, in µs (a `+Inf` bucket
/// follows): 2 µs to 60 s, roughly 1-2.5-5 per decade, dense where the relay's forward
/// latency lives (µs to ms) and reaching the HDR histograms' 60 s ceiling. Fixed, so
/// every shard and host exports the same buckets.
pub(super) const PROM_BUCKETS_MICROS: [u64; 22] = [
    2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 60_000_000,
];

/// Microseconds per second, for the `_seconds` unit.
pub(super) const MICROS_PER_SECOND: f64 = 1e6;

/// A plain per-shard counter: (name without prefix, help, value).
pub(super) type CounterDef = (&'static str, &'static str, fn(&Tallies) -> u64);

/// The unlabelled (apart from `shard`) counters.
pub(super) const PROM_COUNTERS: [CounterDef; 7] = [
    (
        "accepted_total",
        "TCP connections accepted by the shard.",
        |s| s.accepted,
    ),
    (
        "handoffs_total",
        "Connections the shard passed to another shard.",
        |s| s.handoffs,
    ),
    (
        "adopted_total",
        "Connections the shard adopted from another shard.",
        |s| s.adopted,
    ),
    ("messages_in_total", "Messages read from clients.", |s| {
        s.messages_in
    }),
    ("messages_out_total", "Messages written to clients.", |s| {
        s.messages_out
    }),
    ("bytes_in_total", "Payload bytes read from clients.", |s| {
        s.bytes_in
    }),
    (
        "bytes_out_total",
        "Payload bytes written to clients.",
        |s| s.bytes_out,
    ),
];

/// A latency histogram family: (name without prefix, help, histogram).
pub(super) type HistogramDef = (
    &'static str,
    &'static str,
    fn(&Latencies<PromBuckets>) -> &PromBuckets,
);

/// The overall latency histograms.
pub(super) const PROM_HISTOGRAMS: [HistogramDef; 3] = [
    (
        "forward_latency_seconds",
        "Read-to-written latency of relayed messages, in seconds.",
        |s| &s.forward,
    ),
    (
        "handshake_latency_seconds",
        "HTTP/upgrade handshake latency, in seconds.",
        |s| &s.handshake,
    ),
    (
        "handoff_latency_seconds",
        "Shard-to-shard handoff latency, in seconds.",
        |s| &s.handoff,
    ),
];

/// Builds a text-format 0.0.4 body: families of `# HELP`, `# TYPE` and samples.
pub(super) struct PromWriter {
    /// The body so far.
    pub(super) out: String,
}

impl PromWriter {
    /// Append formatted text. `fmt::Write` for `String` never returns an error (it only
    /// grows the buffer), so the result is safely ignored.
    pub(super) fn push(&mut self, args: fmt::Arguments<'_>) {
        let _ = self.out.write_fmt(args);
    }

    /// Start a family: its `# HELP` and `# TYPE` lines.
    pub(super) fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.push(format_args!("# HELP {PROM_PREFIX}{name} "));
        escape_help(&mut self.out, help);
        self.push(format_args!("\n# TYPE {PROM_PREFIX}{name} {kind}\n"));
    }

    /// One sample line: `name{labels} value`.
    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl PromValue) {
        self.push(format_args!("{PROM_PREFIX}{name}"));
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.push(format_args!("{label}=\""));
                escape_label_value(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write_to(&mut self.out);
        self.out.push('\n');
    }

    /// The `_bucket`, `_sum` and `_count` lines of one histogram series labelled
    /// `labels`, in seconds (the buckets were counted on the owning shard, see
    /// [`PromBuckets::of`]).
    pub(super) fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &PromBuckets) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = match PROM_BUCKETS_MICROS.get(i) {
                Some(&micros) => (micros as f64 / MICROS_PER_SECOND).to_string(),
                None => "+Inf".to_owned(),
            };
            let mut with_le: Vec<(&str, &str)> = Vec::with_capacity(labels.len() + 1);
            with_le.extend_from_slice(labels);
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative);
        }
        let sum = h.sum_micros as f64 / MICROS_PER_SECOND;
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

/// A sample value in the text format.
pub(super) trait PromValue {
    /// Append the value as the format spells it.
    fn write_to(self, out: &mut String);
}

impl PromValue for u64 {
    fn write_to(self, out: &mut String) {
        let _ = write!(out, "{self}"); // writing to a String cannot fail
    }
}

impl PromValue for i64 {
    fn write_to(self, out: &mut String) {
        let _ = write!(out, "{self}"); // writing to a String cannot fail
    }
}

impl PromValue for f64 {
    /// Rust spells infinities `inf`; the format wants `+Inf`, `-Inf` and `NaN`.
    fn write_to(self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}"); // writing to a String cannot fail
        }
    }
}

/// Append a label value escaped per the format: backslash, double quote and line feed.
pub(super) fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Append `# HELP` text escaped per the format: backslash and line feed.
pub(super) fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A snapshot paired with its shard id spelled as a label value (formatted once).
pub(super) type LabelledShard<'a> = (&'a MetricsReport, String);

/// The /metrics body: Prometheus text exposition format 0.0.4.
pub fn render_prometheus(uptime_seconds: u64, per_shard: &[MetricsReport]) -> String {
    let mut w = PromWriter {
        out: String::with_capacity(4096 + 4096 * per_shard.len()),
    };
    let shards: Vec<LabelledShard<'_>> = per_shard
        .iter()
        .map(|s| (s, s.tallies.shard.to_string()))
        .collect();
    write_process(&mut w, uptime_seconds, per_shard.len());
    write_counters(&mut w, &shards);
    write_gauges(&mut w, &shards);
    write_latencies(&mut w, &shards);
    w.out
}

/// The process-wide gauges: uptime and how many shards answered.
pub(super) fn write_process(w: &mut PromWriter, uptime_seconds: u64, shards: usize) {
    w.family(
        "uptime_seconds",
        "gauge",
        "Seconds since the process started.",
    );
    w.sample("uptime_seconds", &[], uptime_seconds);
    w.family("shards", "gauge", "Shards that answered this scrape.");
    w.sample("shards", &[], shards as u64);
    let memory = memory_now();
    w.family(
        "memory_used_bytes",
        "gauge",
        "Bytes clients make the relay hold, charged against --memory-limit.",
    );
    w.sample("memory_used_bytes", &[], memory.used_bytes);
    w.family("memory_limit_bytes", "gauge", "The --memory-limit.");
    w.sample("memory_limit_bytes", &[], memory.limit_bytes);
}

/// Every counter family, plain then keyed, one series per shard (and key).
pub(super) fn write_counters(w: &mut PromWriter, shards: &[LabelledShard<'_>]) {
    for (name, help, get) in PROM_COUNTERS {
        w.family(name, "counter", help);
        for (s, id) in shards {
            w.sample(name, &[("shard", id)], get(&s.tallies));
        }
    }
    write_keyed(
        w,
        shards,
        ("rejected_total", "reason"),
        "Connections refused before upgrade, by reason.",
        |s| &s.rejected,
    );
    write_keyed(
        w,
        shards,
        ("dropped_total", "reason"),
        "Messages not forwarded, by reason.",
        |s| &s.dropped,
    );
    write_keyed(
        w,
        shards,
        ("events_total", "name"),
        "Other named events.",
        |s| &s.events,
    );
}

/// A counter family keyed by reason or name: (name without prefix, label), help, and
/// the counts; keys in the order each shard first counted them.
pub(super) fn write_keyed<K: Key>(
    w: &mut PromWriter,
    shards: &[LabelledShard<'_>],
    (name, label): (&str, &str),
    help: &str,
    get: fn(&Tallies) -> &Counts<K, u64>,
) {
    w.family(name, "counter", help);
    for (s, id) in shards {
        for (key, n) in get(&s.tallies).iter() {
            w.sample(name, &[("shard", id), (label, key.name())], n);
        }
    }
}

/// Open connections by kind and registry sizes by name.
pub(super) fn write_gauges(w: &mut PromWriter, shards: &[LabelledShard<'_>]) {
    w.family("connections", "gauge", "Open connections, by kind.");
    for (s, id) in shards {
        for &kind in ConnKind::ALL {
            let labels = [("shard", id.as_str()), ("kind", kind.name())];
            w.sample("connections", &labels, s.tallies.connections(kind));
        }
    }
    w.family(
        "registry",
        "gauge",
        "Registry sizes (pairs, sessions, tickets, server slots): this shard's share.",
    );
    for (s, id) in shards {
        for (key, n) in s.tallies.gauges.iter() {
            w.sample("registry", &[("shard", id), ("name", key.name())], n);
        }
    }
}

/// The latency histograms: overall ones, then forward latency by mode.
pub(super) fn write_latencies(w: &mut PromWriter, shards: &[LabelledShard<'_>]) {
    for (name, help, get) in PROM_HISTOGRAMS {
        w.family(name, "histogram", help);
        for (s, id) in shards {
            w.histogram(name, &[("shard", id)], get(&s.latencies));
        }
    }
    let by_mode = "forward_by_mode_latency_seconds";
    w.family(
        by_mode,
        "histogram",
        "Read-to-written latency of relayed messages by rendezvous style, in seconds.",
    );
    for (s, id) in shards {
        for (mode, h) in &s.latencies.forward_by_mode {
            w.histogram(by_mode, &[("shard", id), ("mode", mode.name())], h);
        }
    }
}
