//! `measure rss-within`: the soak's two memory verdicts, from RSS figures the script
//! sampled (KiB). Under attack the peak must stay within the post-start RSS plus
//! `--memory-limit` (PROTOCOL §2.1: whatever clients do, the relay's memory is bounded);
//! at the end RSS must be back within 10 % of the post-warm-up level plus a slack (what
//! the allocator may keep of what an attack made it map; a leak would not stop there).

use crate::cli::RssWithinArgs;

/// One check's outcome: whether it held, and the line that says so.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The check held.
    pub ok: bool,
    /// What to print.
    pub line: String,
}

/// The peak under attack against post-start + the memory limit.
pub fn peak_within(start: u64, peak: u64, memory_limit_mib: u64) -> Verdict {
    let bound = start + memory_limit_mib * 1024;
    let ok = peak <= bound;
    let line = format!(
        "{}RSS peak {peak} KiB {} post-start {start} KiB + --memory-limit {memory_limit_mib} MiB",
        if ok { "attack: " } else { "FAIL: " },
        if ok { "within" } else { "over" }
    );
    Verdict { ok, line }
}

/// The end against post-warm-up + 10 % + slack.
pub fn end_within(warm: u64, end: u64, slack_kib: u64) -> Verdict {
    let limit = warm + warm / 10 + slack_kib;
    let ok = end <= limit;
    let line = if ok {
        format!("RSS: post-warm-up {warm} KiB, end {end} KiB (limit {limit} KiB)")
    } else {
        format!("FAIL: RSS grew from {warm} KiB to {end} KiB (limit {limit} KiB)")
    };
    Verdict { ok, line }
}

/// `measure rss-within`: print each asked check; exit 1 if any failed.
pub fn check(args: &RssWithinArgs) -> Result<i32, String> {
    let mut verdicts = Vec::new();
    if let Some(peak) = args.peak {
        verdicts.push(peak_within(args.start, peak, args.memory_limit_mib));
    }
    if let Some(end) = args.end {
        verdicts.push(end_within(args.warm, end, args.slack_kib));
    }
    for v in &verdicts {
        eprintln!("{}", v.line);
    }
    Ok(if verdicts.iter().all(|v| v.ok) { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_may_reach_start_plus_the_limit_and_not_one_kib_more() {
        assert!(peak_within(10_000, 10_000 + 128 * 1024, 128).ok);
        assert!(!peak_within(10_000, 10_001 + 128 * 1024, 128).ok);
    }

    #[test]
    fn the_end_may_be_ten_percent_plus_slack_over_the_warm_level() {
        assert!(end_within(20_000, 22_000 + 16_384, 16_384).ok);
        let over = end_within(20_000, 22_001 + 16_384, 16_384);
        assert!(!over.ok);
        assert!(
            over.line.starts_with("FAIL: RSS grew from 20000 KiB"),
            "{}",
            over.line
        );
    }
}
