//! Process-wide figures for `/metrics` that no shard owns: build information, the
//! connection cap, open and allowed file descriptors, resident memory, and log lines
//! dropped. Read from `/proc/self` at scrape time (no unsafe code: plain file reads);
//! a figure that cannot be read is left out of the scrape rather than reported as 0.

use std::fmt::Write as _;

/// What `/metrics` reports about the process as a whole.
#[derive(Debug, Clone, Default)]
pub struct ProcessFacts {
    /// The crate version (`build_info`).
    pub version: &'static str,
    /// The I/O driver the shards run (`build_info`).
    pub driver: &'static str,
    /// The global cap on open client connections (`--max-connections` or derived).
    pub max_connections: usize,
    /// Open file descriptors (`/proc/self/fd`).
    pub open_fds: Option<u64>,
    /// The soft open-files limit.
    pub max_fds: Option<u64>,
    /// Resident set size in bytes (`VmRSS` of `/proc/self/status`).
    pub resident_bytes: Option<u64>,
    /// Log lines dropped because stderr was not read fast enough.
    pub log_lines_dropped: u64,
}

impl ProcessFacts {
    /// The figures now.
    pub fn collect(driver: &'static str, max_connections: usize) -> Self {
        ProcessFacts {
            version: env!("CARGO_PKG_VERSION"),
            driver,
            max_connections,
            open_fds: open_fds(),
            max_fds: Some(crate::sys::open_files_limit() as u64),
            resident_bytes: resident_bytes(),
            log_lines_dropped: crate::logging::dropped_lines(),
        }
    }
}

/// Entries of `/proc/self/fd` (the directory handle itself is one of them).
fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.count().saturating_sub(1) as u64)
}

/// `VmRSS` from `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One gauge family with a single unlabelled (or given-label) sample.
fn gauge(out: &mut String, name: &str, help: &str, labels: &str, value: u64) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{labels} {value}\n"
    );
}

/// The process families in Prometheus text format 0.0.4, to append to the shards'.
pub fn render_prometheus(facts: &ProcessFacts) -> String {
    let mut out = String::with_capacity(1024);
    // Version and driver are ours, never client text: no label escaping needed.
    let labels = format!(
        "{{version=\"{}\",driver=\"{}\"}}",
        facts.version, facts.driver
    );
    gauge(
        &mut out,
        "shardrelay_build_info",
        "Always 1; the labels say which build runs and on which I/O driver.",
        &labels,
        1,
    );
    gauge(
        &mut out,
        "shardrelay_max_connections",
        "The cap on open client connections (--max-connections, or the open-files limit less a reserve).",
        "",
        facts.max_connections as u64,
    );
    let _ = write!(
        out,
        "# HELP shardrelay_log_lines_dropped_total Log lines dropped because stderr was not read fast enough.\n\
         # TYPE shardrelay_log_lines_dropped_total counter\n\
         shardrelay_log_lines_dropped_total {}\n",
        facts.log_lines_dropped
    );
    let optional = [
        (
            "process_open_fds",
            "Number of open file descriptors.",
            facts.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            facts.max_fds,
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            facts.resident_bytes,
        ),
    ];
    for (name, help, value) in optional {
        if let Some(value) = value {
            gauge(&mut out, name, help, "", value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_fds_and_memory_and_renders_them() {
        let facts = ProcessFacts::collect("epoll", 1000);
        assert!(facts.open_fds.unwrap() >= 3, "{facts:?}");
        assert!(facts.resident_bytes.unwrap() > 0);
        let body = render_prometheus(&facts);
        assert!(body.contains("shardrelay_build_info{version=\""), "{body}");
        assert!(body.contains("driver=\"epoll\"} 1\n"), "{body}");
        assert!(
            body.contains("\nshardrelay_max_connections 1000\n"),
            "{body}"
        );
        assert!(body.contains("\nprocess_max_fds "), "{body}");
    }

    #[test]
    fn unreadable_figures_are_left_out() {
        let body = render_prometheus(&ProcessFacts::default());
        assert!(!body.contains("process_open_fds"), "{body}");
        assert!(body.contains("shardrelay_build_info"));
    }
}
