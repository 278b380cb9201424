//! The full client latency distribution as an `.hgrm` file: HdrHistogram's percentile
//! distribution text (the format `HistogramLogProcessor` and the HdrHistogram plotter
//! read), values in milliseconds, written beside the `--json` report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

/// Percentile ticks per half-distance to 100 %: HdrHistogram's customary 5.
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// The recorded unit (µs) per reported unit (ms).
const MICROS_PER_MS: f64 = 1000.0;

/// `report.json` → `report.hgrm`.
pub fn path_beside(json: &Path) -> PathBuf {
    json.with_extension("hgrm")
}

/// The percentile distribution of a µs histogram, in ms.
pub fn render(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            let q = v.quantile_iterated_to();
            let value = h.highest_equivalent(v.value_iterated_to()) as f64 / MICROS_PER_MS;
            let total = h.count_between(0, v.value_iterated_to());
            if q < 1.0 {
                let inverse = 1.0 / (1.0 - q);
                let _ = writeln!(out, "{value:>12.3} {q:>14.12} {total:>10} {inverse:>14.2}");
            } else {
                let _ = writeln!(out, "{value:>12.3} {q:>14.12} {total:>10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / MICROS_PER_MS,
        h.stdev() / MICROS_PER_MS
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / MICROS_PER_MS,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two()
    );
    out
}

/// Writes the distribution beside `json`.
pub fn write_beside(json: &Path, h: &Histogram<u64>) -> Result<PathBuf, String> {
    let path = path_beside(json);
    std::fs::write(&path, render(h)).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_lists_rising_percentiles_to_one_in_ms() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let text = render(&h);
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|w| w.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 20, "{text}");
        assert!(
            rows.windows(2).all(|w| w[0][1] <= w[1][1]),
            "percentiles rise"
        );
        let last = rows.last().unwrap();
        assert_eq!(last[1], 1.0);
        assert!((last[0] - 10.0).abs() < 0.02, "max 10 ms: {last:?}");
        assert_eq!(last[2], 1000.0);
        assert!(text.contains("Total count    =         1000"), "{text}");
        assert_eq!(
            path_beside(Path::new("out/run.json")),
            Path::new("out/run.hgrm")
        );
    }
}
