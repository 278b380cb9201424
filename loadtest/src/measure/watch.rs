//! `measure watch`: while some processes (the loads) run, sample a relay's RSS and
//! open descriptors every `--every`: a timeline CSV, the peak, one sample after a
//! warm-up, and a ceiling that stops at once. The relay dying is a failure.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::WatchArgs;
use crate::procfs;

/// Exit code when the RSS passed `--rss-ceiling-kib`.
pub const EXIT_CEILING: i32 = 4;

/// What a watch saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watched {
    /// Highest RSS sampled, KiB.
    pub peak_kib: u64,
    /// The sample taken after the warm-up, KiB (0 when none was asked for).
    pub warm_kib: u64,
}

/// `measure watch`: prints `PEAK_KIB WARM_KIB`.
pub fn run(args: &WatchArgs) -> Result<i32, String> {
    let mut timeline = args.timeline.as_deref().map(open_timeline).transpose()?;
    let started = Instant::now();
    let mut watched = Watched::default();
    let mut warm_taken = args.warm_after.is_none();
    loop {
        if !procfs::is_running(args.pid) {
            return Err(format!("the relay (pid {}) is no longer running", args.pid));
        }
        if !args.while_pids.iter().any(|&p| procfs::is_running(p)) {
            break;
        }
        let elapsed = started.elapsed();
        if elapsed > args.deadline {
            return Err(format!("still running {:?} after the start", args.deadline));
        }
        let rss = procfs::read_rss(args.pid)
            .map_err(|e| e.to_string())?
            .total_kib;
        watched.peak_kib = watched.peak_kib.max(rss);
        if let Some(file) = timeline.as_mut() {
            let fds = procfs::read_fd_count(args.pid).map_err(|e| e.to_string())?;
            writeln!(file, "{},{rss},{fds}", elapsed.as_secs()).map_err(|e| e.to_string())?;
        }
        if let Some(ceiling) = args.rss_ceiling_kib.filter(|&c| rss > c) {
            eprintln!("relay RSS {rss} KiB passed the ceiling {ceiling} KiB");
            return Ok(EXIT_CEILING);
        }
        if !warm_taken && args.warm_after.is_some_and(|w| elapsed >= w) {
            watched.warm_kib = rss;
            warm_taken = true;
            eprintln!("post-warm-up RSS {rss} KiB");
        }
        std::thread::sleep(args.every.max(Duration::from_millis(10)));
    }
    if !warm_taken {
        return Err("the processes ended before the warm-up sample".into());
    }
    println!("{} {}", watched.peak_kib, watched.warm_kib);
    Ok(0)
}

/// Opens the timeline for appending, writing the header when it is new.
fn open_timeline(path: &Path) -> Result<std::fs::File, String> {
    let fresh = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if fresh {
        writeln!(file, "elapsed_s,rss_kib,fds").map_err(|e| e.to_string())?;
    }
    Ok(file)
}
