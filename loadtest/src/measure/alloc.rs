//! `measure alloc-per-message`: allocations per relayed message in steady state, from a
//! counting-allocator relay's `/stats` (`allocations` and `totals.messages_out`):
//!
//! 1. wait (bounded) until traffic flows, then let the warm-up pass;
//! 2. read `/stats`, let the window pass, read it again;
//! 3. once the load has ended, read `/stats` four times back to back: the smallest
//!    difference is what serving one `/stats` read allocates;
//! 4. print (Δ allocations − one read) ÷ Δ messages written, and the same for bytes.
//!
//! The window holds exactly one `/stats` read's worth of the relay's own work (the rest
//! of the first response and the start of the second), which step 3 measured.

use std::time::{Duration, Instant};

use crate::cli::AllocArgs;
use crate::procfs;
use crate::relay_stats;

/// How long traffic may take to start.
const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(20);
/// Between polls.
const POLL: Duration = Duration::from_millis(200);
/// Back-to-back reads on the idle relay (three differences).
const IDLE_READS: usize = 4;

/// One `/stats` read's allocation figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Allocations so far.
    pub count: u64,
    /// Bytes asked for so far.
    pub bytes: u64,
    /// Messages written so far.
    pub messages_out: u64,
}

/// The result of one style.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerMessage {
    /// Messages written in the window.
    pub messages: u64,
    /// Allocations per message written.
    pub allocations: f64,
    /// Bytes asked for per message written.
    pub bytes: f64,
    /// What one `/stats` read allocates: (count, bytes).
    pub one_read: (u64, u64),
}

/// Computes the figures from the window's edges and the idle reads; `None` when no
/// message was written in the window or fewer than two idle reads were taken.
pub fn per_message(start: Sample, end: Sample, idle: &[Sample]) -> Option<PerMessage> {
    let one_read = idle
        .windows(2)
        .map(|w| {
            (
                w[1].count.saturating_sub(w[0].count),
                w[1].bytes.saturating_sub(w[0].bytes),
            )
        })
        .min()?;
    let messages = end
        .messages_out
        .checked_sub(start.messages_out)
        .filter(|&n| n > 0)?;
    let delta = |a: u64, b: u64, read: u64| b as f64 - a as f64 - read as f64;
    Some(PerMessage {
        messages,
        allocations: delta(start.count, end.count, one_read.0) / messages as f64,
        bytes: delta(start.bytes, end.bytes, one_read.1) / messages as f64,
        one_read,
    })
}

/// Reads one sample.
fn sample(args: &AllocArgs) -> Result<Sample, String> {
    let stats = relay_stats::fetch_plain(args.admin, None)?;
    let (count, bytes) = relay_stats::allocations(&stats)
        .ok_or("/stats has no allocations: not an alloc-count build")?;
    Ok(Sample {
        count,
        bytes,
        messages_out: relay_stats::total(&stats, "messages_out").unwrap_or(0),
    })
}

/// Fails when the relay is gone.
fn relay_alive(args: &AllocArgs) -> Result<(), String> {
    if procfs::is_running(args.pid) {
        Ok(())
    } else {
        Err(format!("the relay (pid {}) is no longer running", args.pid))
    }
}

/// `measure alloc-per-message`: prints one table row.
pub fn run(args: &AllocArgs) -> Result<i32, String> {
    let deadline = Instant::now() + TRAFFIC_TIMEOUT;
    while sample(args).map_or(0, |s| s.messages_out) == 0 {
        relay_alive(args)?;
        if Instant::now() >= deadline {
            return Err(format!("no traffic through the relay ({})", args.style));
        }
        std::thread::sleep(POLL);
    }
    std::thread::sleep(args.warmup);
    let start = sample(args)?;
    std::thread::sleep(args.window);
    let end = sample(args)?;
    relay_alive(args)?;
    // The load ends on its own (its --duration); bounded by the window it was given.
    let load_deadline = Instant::now() + args.window + args.warmup + TRAFFIC_TIMEOUT;
    while procfs::is_running(args.load_pid) {
        if Instant::now() >= load_deadline {
            return Err(format!("the load (pid {}) is still running", args.load_pid));
        }
        std::thread::sleep(POLL);
    }
    let idle = (0..IDLE_READS)
        .map(|_| sample(args))
        .collect::<Result<Vec<_>, _>>()?;
    let result = per_message(start, end, &idle)
        .ok_or_else(|| format!("{}: no messages written in the window", args.style))?;
    println!(
        "{:<10} {:>7} {:>6} {:>6} {:>10} | {:>10.4} {:>10.1} | {} allocations, {} B",
        args.style,
        args.rate,
        args.connections,
        args.window.as_secs(),
        result.messages,
        result.allocations,
        result.bytes,
        result.one_read.0,
        result.one_read.1
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(count: u64, bytes: u64, messages_out: u64) -> Sample {
        Sample {
            count,
            bytes,
            messages_out,
        }
    }

    #[test]
    fn one_stats_read_is_taken_off_and_the_rest_divided_by_messages() {
        // Idle reads cost 50, 40 (smallest), 60 allocations.
        let idle = [
            at(1000, 9000, 5),
            at(1050, 9500, 5),
            at(1090, 9900, 5),
            at(1150, 10_500, 5),
        ];
        let r = per_message(at(0, 0, 100), at(1040, 64_400, 1100), &idle).unwrap();
        assert_eq!(r.one_read, (40, 400));
        assert_eq!(r.messages, 1000);
        assert!((r.allocations - 1.0).abs() < 1e-9, "{r:?}");
        assert!((r.bytes - 64.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn no_messages_or_no_idle_reads_give_no_figure() {
        let idle = [at(0, 0, 0), at(1, 1, 0)];
        assert!(per_message(at(0, 0, 7), at(10, 10, 7), &idle).is_none());
        assert!(per_message(at(0, 0, 0), at(10, 10, 7), &idle[..1]).is_none());
    }
}
