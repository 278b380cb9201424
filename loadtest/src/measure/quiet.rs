//! `measure wait-quiet`: before a benchmark run, wait for the machine to be quiet — under
//! a tenth of a core busy (user, nice, system, irq, softirq and steal from `/proc/stat`)
//! over one second — for at most `--within`. Exits 0 once it is quiet, 3 when it is
//! still busy at the end (the script logs a warning and runs anyway).

use std::time::{Duration, Instant};

use crate::cli::WaitQuietArgs;
use crate::procfs;
use crate::sys;

/// The sampling interval: busy time is compared over one second.
const SAMPLE: Duration = Duration::from_secs(1);
/// Quiet means under this fraction of one core busy over [`SAMPLE`].
const QUIET_FRACTION: f64 = 0.1;
/// The exit code when the machine is still busy after `--within`.
pub const STILL_BUSY: i32 = 3;

/// True when `busy_ticks` over one [`SAMPLE`] is under [`QUIET_FRACTION`] of a core.
pub fn is_quiet(busy_ticks: u64, hz: u64) -> bool {
    (busy_ticks as f64) < hz as f64 * QUIET_FRACTION * SAMPLE.as_secs_f64()
}

/// `measure wait-quiet`.
pub fn wait_quiet(args: &WaitQuietArgs) -> Result<i32, String> {
    let hz = sys::clock_ticks_per_sec();
    let end = Instant::now() + args.within;
    let busy = || {
        procfs::read_machine_cpu()
            .map(|c| c.busy)
            .map_err(|e| e.to_string())
    };
    loop {
        let before = busy()?;
        std::thread::sleep(SAMPLE);
        if is_quiet(busy()?.saturating_sub(before), hz) {
            return Ok(0);
        }
        if Instant::now() >= end {
            return Ok(STILL_BUSY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_is_under_a_tenth_of_a_core_over_a_second() {
        assert!(is_quiet(9, 100));
        assert!(!is_quiet(10, 100));
        assert!(!is_quiet(150, 100));
        assert!(is_quiet(0, 250));
        assert!(!is_quiet(25, 250));
    }
}
