//! Reports: what a shard reduces its histograms to before they cross shards for `/stats`
//! and `/metrics` ([`Report`], [`Recorded`], [`PromBuckets`]).

use hdrhistogram::Histogram;

use super::*;

// A shard's HDR histograms are ~140 KB each (1 µs .. 60 s at three significant figures:
// 17 408 u64 counts), and a shard keeps 3 + one per mode. Sending them whole made every
// `/stats` read and `/metrics` scrape copy ~1.7 MB across shards. Instead the owning
// shard reduces them to what the reader needs:
// * `/metrics`: [`PromBuckets`], the fixed Prometheus bucket counts, count and sum,
//   kept at record time (~200 bytes a histogram, whatever was recorded: a scrape costs
//   the same on a fresh relay and after billions of messages);
// * plain `/stats`: two bounded rounds, [`CoarseReport`] then the fine counts of a few
//   cells (see "`/stats` in two rounds" below): ~2.3 KB per histogram, then at most
//   6 × 512 B, whatever the history; totals stay exact (0.1 %).
// * `/stats?histograms=recorded`: [`Recorded`], the non-zero HDR buckets since the last
//   reset (the caller asked for all of them): 16 bytes per distinct bucket hit, and above
//   [`SPARSE_MAX_SAMPLES`] samples the (since-reset) HDR histogram whole, ~140 KB.

/// The latency histograms of one report, in the form `H` the report needs.
#[derive(Debug, Clone)]
pub struct Latencies<H> {
    /// Read-to-written latency of relayed messages, all modes.
    pub forward: H,
    /// HTTP/upgrade handshake latency.
    pub handshake: H,
    /// Shard-to-shard handoff latency.
    pub handoff: H,
    /// `forward` split by rendezvous style, in first-seen order.
    pub forward_by_mode: Vec<(Style, H)>,
}

/// What one shard sends to the shard rendering `/stats` or `/metrics`.
#[derive(Debug, Clone)]
pub struct Report<H> {
    /// Counters and gauges.
    pub tallies: Tallies,
    /// Latencies, reduced on the owning shard.
    pub latencies: Latencies<H>,
}

/// A shard's `/stats` contribution: histograms since the last reset, as recorded buckets.
pub type StatsReport = Report<Recorded>;

/// A shard's `/metrics` contribution: histograms since start, as Prometheus buckets.
pub type MetricsReport = Report<PromBuckets>;

/// Which report a shard is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// For `/stats?histograms=recorded` (every recorded bucket).
    Stats,
    /// Round 1 of a plain `/stats` read (see [`CoarseReport`]).
    Coarse,
    /// For `/metrics`.
    Metrics,
}

/// Either report, as it crosses a shard inbox.
#[derive(Debug, Clone)]
pub enum ShardReport {
    /// For `/stats` (boxed, as the other: the message stays one pointer wide).
    Stats(Box<StatsReport>),
    /// For `/metrics` (boxed: its fixed buckets make it ~900 bytes).
    Metrics(Box<MetricsReport>),
    /// Round 1 of a plain `/stats` read.
    Coarse(Box<CoarseReport>),
}

impl ShardReport {
    /// The shard it came from (for ordering replies).
    pub fn shard(&self) -> usize {
        match self {
            ShardReport::Stats(r) => r.tallies.shard,
            ShardReport::Metrics(r) => r.tallies.shard,
            ShardReport::Coarse(r) => r.tallies.shard,
        }
    }
}

/// Above this many samples (since the reset) a histogram crosses shards whole instead
/// of as a bucket list: 4,096 samples hit at most 4,096 buckets (64 KiB as a list), and
/// listing a fuller histogram would cost more to build and merge than the ~140 KB copy.
pub(super) const SPARSE_MAX_SAMPLES: u64 = 4_096;

/// A histogram's samples since the last reset, as they cross shards for `/stats`: the
/// non-zero HDR buckets `(value, count)` in ascending value, where value is the bucket's
/// highest equivalent value in µs (what `?histograms=recorded` lists); or, above
/// [`SPARSE_MAX_SAMPLES`], the histogram itself.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The non-zero buckets, ascending (empty when `dense` holds the samples).
    pub buckets: Vec<(u64, u64)>,
    /// The whole histogram, when it holds more than [`SPARSE_MAX_SAMPLES`] samples.
    pub dense: Option<Box<Histogram<u64>>>,
}

impl Recorded {
    /// The samples of `h` minus those of `mark` (an earlier state of `h`).
    pub(super) fn since(h: &Histogram<u64>, mark: Option<&Histogram<u64>>) -> Self {
        let samples = h.len().saturating_sub(mark.map_or(0, |m| m.len()));
        if samples > SPARSE_MAX_SAMPLES {
            let mut dense = h.clone();
            if let Some(mark) = mark {
                // The mark is an earlier state of `h`, so no count goes negative; were
                // that ever violated, report nothing rather than nonsense.
                if dense.subtract(mark).is_err() {
                    dense.reset();
                }
            }
            return Recorded {
                buckets: Vec::new(),
                dense: Some(Box::new(dense)),
            };
        }
        if samples == 0 {
            return Recorded::default();
        }
        let buckets = h
            .iter_recorded()
            .filter_map(|v| {
                let value = v.value_iterated_to();
                let before = mark.map_or(0, |m| m.count_at(value));
                let n = v.count_at_value().saturating_sub(before);
                (n > 0).then_some((value, n))
            })
            .collect();
        Recorded {
            buckets,
            dense: None,
        }
    }

    /// The sum of `parts`: a bucket list if every part is one, else a histogram.
    pub(super) fn merge<'a>(parts: impl IntoIterator<Item = &'a Recorded> + Clone) -> Recorded {
        if parts.clone().into_iter().any(|r| r.dense.is_some()) {
            let mut total = new_histogram();
            for part in parts {
                match &part.dense {
                    Some(h) => merge_histogram(&mut total, h),
                    None => {
                        for &(v, n) in &part.buckets {
                            total.saturating_record_n(v, n);
                        }
                    }
                }
            }
            return Recorded {
                buckets: Vec::new(),
                dense: Some(Box::new(total)),
            };
        }
        let mut all: Vec<(u64, u64)> = parts
            .into_iter()
            .flat_map(|r| r.buckets.iter().copied())
            .collect();
        all.sort_unstable_by_key(|&(v, _)| v);
        let mut buckets: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (v, n) in all {
            match buckets.last_mut() {
                Some((last, sum)) if *last == v => *sum = sum.saturating_add(n),
                _ => buckets.push((v, n)),
            }
        }
        Recorded {
            buckets,
            dense: None,
        }
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        match &self.dense {
            Some(h) => h.len(),
            None => self.buckets.iter().map(|&(_, n)| n).sum(),
        }
    }

    /// The value at `quantile` (0 < q <= 1), as `Histogram::value_at_quantile` computes
    /// it: the first bucket whose cumulative count reaches `ceil(q * count)`.
    pub(super) fn value_at_quantile(&self, quantile: f64, count: u64) -> u64 {
        let target = ((quantile * count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for &(v, n) in &self.buckets {
            seen += n;
            if seen >= target {
                return v;
            }
        }
        self.buckets.last().map_or(0, |&(v, _)| v)
    }
}

/// A histogram with the module's bounds and no samples, for the value arithmetic
/// (`lowest_equivalent`, `median_equivalent`) that summarising [`Recorded`] buckets
/// needs. Built once per process.
pub(super) fn scale() -> &'static Histogram<u64> {
    static SCALE: std::sync::OnceLock<Histogram<u64>> = std::sync::OnceLock::new();
    SCALE.get_or_init(new_histogram)
}

/// A histogram as `/metrics` exports it: counts per fixed bucket of
/// [`PROM_BUCKETS_MICROS`] (plus `+Inf`), the sample count and the exact sum. Kept up to
/// date at record time beside the HDR histogram (one comparison search over 22 bounds
/// and three adds), so a scrape copies these ~200 bytes instead of walking or sending
/// the HDR histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PromBuckets {
    /// Samples per bucket (not cumulative), the last one being `+Inf`.
    pub(super) counts: [u64; PROM_BUCKETS_MICROS.len() + 1],
    /// Samples recorded.
    pub(super) count: u64,
    /// Sum of the samples in µs (clamped like the HDR histogram: at most 60 s each).
    pub(super) sum_micros: u64,
}

impl PromBuckets {
    /// Count one sample of `micros` (clamped to the HDR range, as the HDR record is).
    #[inline]
    pub(super) fn record(&mut self, micros: u64) {
        let v = micros.min(HIST_HIGH_MICROS);
        let at = PROM_BUCKETS_MICROS.partition_point(|&bound| bound < v);
        self.counts[at] += 1;
        self.count += 1;
        self.sum_micros = self.sum_micros.saturating_add(v);
    }
}

impl StatsSnapshot {
    /// The `/stats` report: histograms since the last reset, as recorded buckets.
    pub(super) fn stats_report(&self) -> StatsReport {
        let mark = self.reset_mark.as_deref();
        let by_mode = |mode: Style| {
            mark.and_then(|m| m.forward_by_mode.iter().find(|(k, _)| *k == mode))
                .map(|(_, h)| h)
        };
        Report {
            tallies: self.tallies.clone(),
            latencies: Latencies {
                forward: Recorded::since(&self.forward, mark.map(|m| &m.forward)),
                handshake: Recorded::since(&self.handshake, mark.map(|m| &m.handshake)),
                handoff: Recorded::since(&self.handoff, mark.map(|m| &m.handoff)),
                forward_by_mode: self
                    .forward_by_mode
                    .iter()
                    .map(|(mode, h)| (*mode, Recorded::since(h, by_mode(*mode))))
                    .collect(),
            },
        }
    }
}

impl Latencies<Recorded> {
    /// The bucket-wise sum of several shards' latencies; modes in first-seen order.
    pub(super) fn merge(parts: &[&Latencies<Recorded>]) -> Latencies<Recorded> {
        let mut modes: Vec<Style> = Vec::new();
        for part in parts {
            for (mode, _) in &part.forward_by_mode {
                if !modes.contains(mode) {
                    modes.push(*mode);
                }
            }
        }
        let of_mode = |mode: Style| {
            Recorded::merge(parts.iter().filter_map(|p| {
                p.forward_by_mode
                    .iter()
                    .find(|(k, _)| *k == mode)
                    .map(|(_, r)| r)
            }))
        };
        Latencies {
            forward: Recorded::merge(parts.iter().map(|p| &p.forward)),
            handshake: Recorded::merge(parts.iter().map(|p| &p.handshake)),
            handoff: Recorded::merge(parts.iter().map(|p| &p.handoff)),
            forward_by_mode: modes.iter().map(|&m| (m, of_mode(m))).collect(),
        }
    }
}

impl<H> Latencies<H> {
    /// Histogram `id`, if this shard has it.
    pub(super) fn get(&self, id: HistId) -> Option<&H> {
        match id {
            HistId::Forward => Some(&self.forward),
            HistId::Handshake => Some(&self.handshake),
            HistId::Handoff => Some(&self.handoff),
            HistId::Mode(mode) => self
                .forward_by_mode
                .iter()
                .find(|(k, _)| *k == mode)
                .map(|(_, h)| h),
        }
    }
}

impl Latencies<Recorded> {
    /// No samples, no modes.
    pub(super) fn empty_recorded() -> Self {
        Latencies {
            forward: Recorded::default(),
            handshake: Recorded::default(),
            handoff: Recorded::default(),
            forward_by_mode: Vec::new(),
        }
    }
}
