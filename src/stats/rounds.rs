//! `/stats` in two rounds: exact totals from a bounded exchange between shards.

use hdrhistogram::Histogram;

use super::*;

// Round 1 ([`ShardStats::coarse_report`]): each shard sends, per histogram since the
// reset, its own summary (computed on the owning shard) and its counts in [`CELLS`]
// fixed coarse cells of 64 HDR buckets each (2.2 KB). The reader merges the cells and
// finds, for each figure of the totals (min, p50, p90, p99, p99.9, max), the one cell
// holding that rank. Round 2 ([`ShardStats::fine_counts`]): each shard sends the 64
// bucket counts of just those cells (at most 6 per histogram, 512 B each). The reader
// then walks the merged buckets of the cell to the exact bucket: the same value a merged
// HDR histogram gives. Samples recorded between the two rounds can move a rank by that
// many samples; the value found is still a bucket of the right cell.

/// Coarse cells per histogram: 32 linear cells of 64 µs below 2,048 µs, then 16 cells per
/// power of two from 2^11 to 2^26 µs (HDR's 1,024 buckets per octave, 64 per cell);
/// 2^26 µs exceeds the 60 s ceiling.
pub const CELLS: usize = 32 + 15 * 16;

/// HDR buckets per coarse cell.
pub const CELL_BUCKETS: usize = 64;

/// The lowest value of `cell` and the width of its buckets, in µs.
pub(super) fn cell_start(cell: usize) -> (u64, u64) {
    if cell < 32 {
        return ((cell * CELL_BUCKETS) as u64, 1);
    }
    let octave = 11 + (cell - 32) / 16;
    let width = 1u64 << (octave - 10);
    let start = (1u64 << octave) + ((cell - 32) % 16) as u64 * CELL_BUCKETS as u64 * width;
    (start, width)
}

/// Which histogram of a shard: the overall three or a mode's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistId {
    /// `forward`.
    Forward,
    /// `handshake`.
    Handshake,
    /// `handoff`.
    Handoff,
    /// `forward_by_mode[mode]`.
    Mode(Style),
}

/// Round 1 for one histogram: the shard's own summary and its coarse cell counts.
#[derive(Debug, Clone)]
pub struct Coarse {
    /// The shard's own figures (exact, computed where the histogram lives).
    pub(super) summary: JsonHistogram,
    /// Samples per coarse cell.
    pub(super) cells: Box<[u64; CELLS]>,
    /// The exact sum of the samples since the reset (µs), for the merged mean.
    pub(super) sum_micros: u64,
}

/// A shard's round-1 `/stats` contribution.
pub type CoarseReport = Report<Coarse>;

impl StatsSnapshot {
    /// Histogram `id` and its reset mark (if any), or `None` for a mode this shard has
    /// not seen.
    pub(super) fn with_mark(
        &self,
        id: HistId,
    ) -> Option<(&Histogram<u64>, Option<&Histogram<u64>>)> {
        let mark = self.reset_mark.as_deref();
        Some(match id {
            HistId::Forward => (&self.forward, mark.map(|m| &m.forward)),
            HistId::Handshake => (&self.handshake, mark.map(|m| &m.handshake)),
            HistId::Handoff => (&self.handoff, mark.map(|m| &m.handoff)),
            HistId::Mode(mode) => {
                let (_, h) = self.forward_by_mode.iter().find(|(k, _)| *k == mode)?;
                let m = mark.and_then(|m| m.forward_by_mode.iter().find(|(k, _)| *k == mode));
                (h, m.map(|(_, h)| h))
            }
        })
    }

    /// Histogram `id` since the reset (a copy only when a reset mark exists), or `None`
    /// for a mode this shard has not seen.
    pub(super) fn since_view(&self, id: HistId) -> Option<std::borrow::Cow<'_, Histogram<u64>>> {
        let (h, m) = self.with_mark(id)?;
        let Some(m) = m else {
            return Some(std::borrow::Cow::Borrowed(h));
        };
        let mut view = h.clone();
        if view.subtract(m).is_err() {
            view.reset();
        }
        Some(std::borrow::Cow::Owned(view))
    }
}

impl Coarse {
    /// Round 1 of `h` (since the reset), whose samples sum to `sum_micros`. One walk of
    /// the count array per cell range and the quantiles' chunked scans: the cost follows
    /// the histogram's size, not the samples or the distinct values recorded.
    pub(super) fn of(h: &Histogram<u64>, sum_micros: u64) -> Self {
        let mut cells = Box::new([0u64; CELLS]);
        let summary = if h.is_empty() {
            JsonHistogram::empty()
        } else {
            for (cell, n) in cells.iter_mut().enumerate() {
                let (start, width) = cell_start(cell);
                *n = h.count_between(start, start + width * CELL_BUCKETS as u64 - 1);
            }
            JsonHistogram {
                count: h.len(),
                min: h.min(),
                p50: h.value_at_quantile(0.5),
                p90: h.value_at_quantile(0.9),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
                mean: (sum_micros as f64 / h.len() as f64 * 100.0).round() / 100.0,
                recorded: None,
            }
        };
        Coarse {
            summary,
            cells,
            sum_micros,
        }
    }
}

impl ShardStats {
    /// Round 1 of a `/stats` read (see the section notes above).
    pub fn coarse_report(&self) -> CoarseReport {
        let live = &self.live;
        let of = |id: HistId| {
            let view = live.since_view(id).expect("the histogram exists");
            let now = self.prom.get(id).map_or(0, |p| p.sum_micros);
            let then = self
                .reset_sums
                .as_ref()
                .and_then(|r| r.get(id).copied())
                .unwrap_or(0);
            Coarse::of(&view, now.saturating_sub(then))
        };
        Report {
            tallies: live.tallies.clone(),
            latencies: Latencies {
                forward: of(HistId::Forward),
                handshake: of(HistId::Handshake),
                handoff: of(HistId::Handoff),
                forward_by_mode: live
                    .forward_by_mode
                    .iter()
                    .map(|(mode, _)| (*mode, of(HistId::Mode(*mode))))
                    .collect(),
            },
        }
    }

    /// Round 2: the bucket counts (since the reset) of each asked cell, in order.
    pub fn fine_counts(&self, asked: &[(HistId, usize)]) -> Vec<[u64; CELL_BUCKETS]> {
        asked
            .iter()
            .map(|&(id, cell)| {
                let mut out = [0u64; CELL_BUCKETS];
                // Counts minus the mark's, bucket by bucket: no copy of the histogram.
                if let (Some((h, mark)), true) = (self.live.with_mark(id), cell < CELLS) {
                    let (start, width) = cell_start(cell);
                    for (b, n) in out.iter_mut().enumerate() {
                        let v = start + b as u64 * width;
                        let before = mark.map_or(0, |m| m.count_at(v));
                        *n = h.count_at(v).saturating_sub(before);
                    }
                }
                out
            })
            .collect()
    }
}

/// The totals' figures to resolve per histogram, as ranks: min, p50, p90, p99, p99.9, max.
pub(super) const TOTAL_QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// The ranks (1-based) of min, the quantiles and max among `count` samples.
pub(super) fn target_ranks(count: u64) -> [u64; 6] {
    let q = |q: f64| ((q * count as f64).ceil() as u64).max(1);
    [
        1,
        q(TOTAL_QUANTILES[0]),
        q(TOTAL_QUANTILES[1]),
        q(TOTAL_QUANTILES[2]),
        q(TOTAL_QUANTILES[3]),
        count,
    ]
}

/// Merged round-1 counts of one histogram over the shards.
pub(super) struct MergedCoarse {
    /// Summed cell counts.
    pub(super) cells: Vec<u64>,
    /// Samples in all.
    pub(super) count: u64,
    /// Summed exact sums, µs.
    pub(super) sum_micros: u64,
}

impl MergedCoarse {
    /// Sum `parts`.
    pub(super) fn of<'a>(parts: impl IntoIterator<Item = &'a Coarse>) -> Self {
        let mut cells = vec![0u64; CELLS];
        let mut sum_micros = 0u64;
        for part in parts {
            for (mine, theirs) in cells.iter_mut().zip(part.cells.iter()) {
                *mine = mine.saturating_add(*theirs);
            }
            sum_micros = sum_micros.saturating_add(part.sum_micros);
        }
        let count = cells.iter().sum();
        MergedCoarse {
            cells,
            count,
            sum_micros,
        }
    }

    /// For each target rank: its cell and the samples in the cells below it.
    pub(super) fn locate(&self) -> Vec<(usize, u64)> {
        if self.count == 0 {
            return Vec::new();
        }
        target_ranks(self.count)
            .iter()
            .map(|&rank| {
                let mut below = 0u64;
                for (cell, &n) in self.cells.iter().enumerate() {
                    if below + n >= rank {
                        return (cell, below);
                    }
                    below += n;
                }
                (CELLS - 1, below)
            })
            .collect()
    }
}

/// One histogram of the totals after round 1: its id, the merged cell counts and, per
/// target rank, its cell and the samples below that cell.
pub(super) type PlannedHist = (HistId, MergedCoarse, Vec<(usize, u64)>);

/// The `/stats` histograms of every shard after round 1, with what round 2 must fetch.
pub struct StatsPlan {
    /// Round-1 reports in shard order.
    pub(super) reports: Vec<CoarseReport>,
    /// Every histogram of the totals: id, merged counts, located ranks.
    pub(super) hists: Vec<PlannedHist>,
}

impl StatsPlan {
    /// Merge round 1.
    pub fn new(reports: Vec<CoarseReport>) -> Self {
        let mut ids = vec![HistId::Forward, HistId::Handshake, HistId::Handoff];
        for r in &reports {
            for (mode, _) in &r.latencies.forward_by_mode {
                if !ids.contains(&HistId::Mode(*mode)) {
                    ids.push(HistId::Mode(*mode));
                }
            }
        }
        let hists = ids
            .into_iter()
            .map(|id| {
                let merged = MergedCoarse::of(reports.iter().filter_map(|r| r.latencies.get(id)));
                let located = merged.locate();
                (id, merged, located)
            })
            .collect();
        StatsPlan { reports, hists }
    }

    /// The cells round 2 asks every shard for (deduplicated).
    pub fn asked(&self) -> Vec<(HistId, usize)> {
        let mut asked = Vec::new();
        for (id, _, located) in &self.hists {
            for &(cell, _) in located {
                if !asked.contains(&(*id, cell)) {
                    asked.push((*id, cell));
                }
            }
        }
        asked
    }

    /// The `/stats` body from round 2's replies (`fine[i]` answers `asked()` for one
    /// shard; any number of shards).
    pub fn render(&self, uptime_seconds: u64, fine: &[Vec<[u64; CELL_BUCKETS]>]) -> String {
        let asked = self.asked();
        let mut tallies = Tallies::empty();
        for r in &self.reports {
            tallies.absorb(&r.tallies);
        }
        let mut merged_fine = vec![[0u64; CELL_BUCKETS]; asked.len()];
        for reply in fine {
            for (mine, theirs) in merged_fine.iter_mut().zip(reply) {
                for (a, b) in mine.iter_mut().zip(theirs) {
                    *a = a.saturating_add(*b);
                }
            }
        }
        let totals_of = |id: HistId| {
            let (_, merged, located) = self.hists.iter().find(|(k, _, _)| *k == id)?;
            Some(resolve(merged, located, |cell| {
                asked
                    .iter()
                    .position(|&a| a == (id, cell))
                    .map(|i| &merged_fine[i])
            }))
        };
        let empty = || JsonHistogram::empty();
        let totals_latencies = Latencies {
            forward: totals_of(HistId::Forward).unwrap_or_else(empty),
            handshake: totals_of(HistId::Handshake).unwrap_or_else(empty),
            handoff: totals_of(HistId::Handoff).unwrap_or_else(empty),
            forward_by_mode: self
                .hists
                .iter()
                .filter_map(|(id, _, _)| match id {
                    HistId::Mode(m) => Some((*m, totals_of(*id).unwrap_or_else(empty))),
                    _ => None,
                })
                .collect(),
        };
        let body = JsonBody {
            uptime_seconds,
            shards: self.reports.len() as u64,
            totals: json_tallies_with(&tallies, totals_latencies),
            per_shard: self
                .reports
                .iter()
                .map(|r| JsonShard {
                    shard: r.tallies.shard as u64,
                    tallies: json_tallies_with(&r.tallies, r.latencies.summaries()),
                })
                .collect(),
            allocations: allocations(),
            memory: memory_now(),
        };
        // Cannot fail: see `render_json_with`.
        serde_json::to_string(&body).expect("stats JSON serialises")
    }
}

/// The totals' figures of one histogram: each located rank walked through the merged
/// buckets of its cell (`fine(cell)`); min takes the bucket's lowest value, the others
/// its highest, as `Histogram` does.
pub(super) fn resolve<'a>(
    merged: &MergedCoarse,
    located: &[(usize, u64)],
    fine: impl Fn(usize) -> Option<&'a [u64; CELL_BUCKETS]>,
) -> JsonHistogram {
    if merged.count == 0 || located.len() != 6 {
        return JsonHistogram::empty();
    }
    let ranks = target_ranks(merged.count);
    let h = scale();
    let value = |i: usize| {
        let (cell, below) = located[i];
        let (start, width) = cell_start(cell);
        let mut seen = below;
        let mut last = None;
        if let Some(counts) = fine(cell) {
            for (b, &n) in counts.iter().enumerate() {
                if n > 0 {
                    last = Some(b);
                }
                seen += n;
                if n > 0 && seen >= ranks[i] {
                    last = Some(b);
                    break;
                }
            }
        }
        // Samples that moved between the rounds: fall back to the cell's last non-empty
        // bucket (or its first), still inside the right cell.
        start + last.unwrap_or(0) as u64 * width
    };
    let bucket = |i: usize| value(i);
    JsonHistogram {
        count: merged.count,
        min: h.lowest_equivalent(bucket(0)),
        p50: h.highest_equivalent(bucket(1)),
        p90: h.highest_equivalent(bucket(2)),
        p99: h.highest_equivalent(bucket(3)),
        p999: h.highest_equivalent(bucket(4)),
        max: h.highest_equivalent(bucket(5)),
        mean: (merged.sum_micros as f64 / merged.count as f64 * 100.0).round() / 100.0,
        recorded: None,
    }
}

impl Latencies<Coarse> {
    /// The shard's own summaries.
    pub(super) fn summaries(&self) -> Latencies<JsonHistogram> {
        Latencies {
            forward: self.forward.summary.clone(),
            handshake: self.handshake.summary.clone(),
            handoff: self.handoff.summary.clone(),
            forward_by_mode: self
                .forward_by_mode
                .iter()
                .map(|(m, c)| (*m, c.summary.clone()))
                .collect(),
        }
    }
}
