//! Small typed readers of Linux `/proc` for the measurement subcommands ([`crate::measure`]):
//! a process's resident memory and CPU time and open descriptors, the machine's CPU
//! time, its TCP socket counts and its kernel slab. Each file's text is parsed by a pure
//! function (unit-tested on sample text below); the `read_*` wrappers only add the read.

use std::fs;
use std::io;

/// Resident memory of one process, from `/proc/<pid>/status` (all KiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rss {
    /// `VmRSS`: every resident page.
    pub total_kib: u64,
    /// `RssAnon`: heap and other anonymous pages.
    pub anon_kib: u64,
    /// `RssFile`: file-backed pages (the binary's own).
    pub file_kib: u64,
}

/// CPU time of the whole machine, from the first (`cpu`) line of `/proc/stat`, in clock
/// ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineCpu {
    /// user + nice + system + irq + softirq + steal: everything but idle and iowait.
    pub busy: u64,
    /// steal: time the hypervisor gave to other guests.
    pub steal: u64,
}

/// TCP sockets machine-wide, from the `TCP:` line of `/proc/net/sockstat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSockets {
    /// `inuse`: TCP sockets in use.
    pub in_use: u64,
    /// `mem`: pages of TCP socket buffers.
    pub buffer_pages: u64,
}

/// Kernel slab memory, from `/proc/meminfo` (KiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slab {
    /// `Slab`: all slab.
    pub total_kib: u64,
    /// `SUnreclaim`: slab the kernel cannot reclaim under pressure.
    pub unreclaimable_kib: u64,
}

/// The value of a `Name:   123 kB` line in a `/proc` key-value file.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Parses `/proc/<pid>/status`; `None` when `VmRSS` is missing (a kernel thread, or a
/// process gone zombie).
pub fn parse_status(text: &str) -> Option<Rss> {
    Some(Rss {
        total_kib: kib_field(text, "VmRSS")?,
        anon_kib: kib_field(text, "RssAnon").unwrap_or(0),
        file_kib: kib_field(text, "RssFile").unwrap_or(0),
    })
}

/// utime + stime (clock ticks) from `/proc/<pid>/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // After the comm: state(3) ppid(4) … utime(14) stime(15), i.e. the 12th and 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_machine_cpu(text: &str) -> Option<MachineCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal …
    let (user, nice, system, irq, softirq, steal) = (
        *v.first()?,
        *v.get(1)?,
        *v.get(2)?,
        *v.get(5)?,
        *v.get(6)?,
        *v.get(7)?,
    );
    Some(MachineCpu {
        busy: user + nice + system + irq + softirq + steal,
        steal,
    })
}

/// Parses the `TCP:` line of `/proc/net/sockstat` (`TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1`).
pub fn parse_sockstat(text: &str) -> Option<TcpSockets> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |key: &str| -> Option<u64> {
        let at = words.iter().position(|w| *w == key)?;
        words.get(at + 1)?.parse().ok()
    };
    Some(TcpSockets {
        in_use: value("inuse")?,
        buffer_pages: value("mem")?,
    })
}

/// Parses `Slab` and `SUnreclaim` of `/proc/meminfo`.
pub fn parse_meminfo_slab(text: &str) -> Option<Slab> {
    Some(Slab {
        total_kib: kib_field(text, "Slab")?,
        unreclaimable_kib: kib_field(text, "SUnreclaim")?,
    })
}

/// Reads a `/proc` file and parses it, naming the file in the error.
fn read_parsed<T>(path: &str, parse: impl Fn(&str) -> Option<T>) -> io::Result<T> {
    let text =
        fs::read_to_string(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    parse(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: unexpected format"),
        )
    })
}

/// Resident memory of process `pid`.
pub fn read_rss(pid: u32) -> io::Result<Rss> {
    read_parsed(&format!("/proc/{pid}/status"), parse_status)
}

/// CPU ticks (user + system) process `pid` has used.
pub fn read_cpu_ticks(pid: u32) -> io::Result<u64> {
    read_parsed(&format!("/proc/{pid}/stat"), parse_stat_cpu_ticks)
}

/// The machine's CPU time so far.
pub fn read_machine_cpu() -> io::Result<MachineCpu> {
    read_parsed("/proc/stat", parse_machine_cpu)
}

/// The machine's TCP sockets now.
pub fn read_tcp_sockets() -> io::Result<TcpSockets> {
    read_parsed("/proc/net/sockstat", parse_sockstat)
}

/// The kernel's slab now.
pub fn read_slab() -> io::Result<Slab> {
    read_parsed("/proc/meminfo", parse_meminfo_slab)
}

/// Open descriptors of process `pid` (entries of `/proc/<pid>/fd`).
pub fn read_fd_count(pid: u32) -> io::Result<u64> {
    let path = format!("/proc/{pid}/fd");
    let dir = fs::read_dir(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    Ok(dir.count() as u64)
}

/// Whether process `pid` still exists (and is not a zombie).
pub fn is_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 1..].split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_rss_and_its_parts() {
        let text = "Name:\tshardrelay\nVmPeak:\t  99 kB\nVmRSS:\t    8192 kB\n\
                    RssAnon:\t    5000 kB\nRssFile:\t    3000 kB\nRssShmem:\t 192 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Rss {
                total_kib: 8192,
                anon_kib: 5000,
                file_kib: 3000
            })
        );
        assert_eq!(parse_status("Name:\tkthreadd\nState:\tS\n"), None);
    }

    #[test]
    fn stat_ticks_survive_a_command_name_with_spaces_and_parens() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime …
        let text =
            "4242 (load (worker) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0";
        assert_eq!(parse_stat_cpu_ticks(text), Some(325));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2"), None);
    }

    #[test]
    fn machine_cpu_counts_everything_but_idle_and_iowait() {
        let text = "cpu  100 5 50 9000 300 7 8 20 0 0\ncpu0 50 2 25 4500 150 3 4 10 0 0\n";
        assert_eq!(
            parse_machine_cpu(text),
            Some(MachineCpu {
                busy: 100 + 5 + 50 + 7 + 8 + 20,
                steal: 20
            })
        );
    }

    #[test]
    fn sockstat_tcp_line_gives_in_use_and_buffer_pages() {
        let text =
            "sockets: used 300\nTCP: inuse 12 orphan 0 tw 3 alloc 15 mem 4\nUDP: inuse 1 mem 0\n";
        assert_eq!(
            parse_sockstat(text),
            Some(TcpSockets {
                in_use: 12,
                buffer_pages: 4
            })
        );
        assert_eq!(parse_sockstat("UDP: inuse 1 mem 0\n"), None);
    }

    #[test]
    fn meminfo_gives_slab_and_unreclaimable() {
        let text = "MemTotal:  8000000 kB\nSlab:     200000 kB\nSReclaimable: 150000 kB\nSUnreclaim:  50000 kB\n";
        assert_eq!(
            parse_meminfo_slab(text),
            Some(Slab {
                total_kib: 200_000,
                unreclaimable_kib: 50_000
            })
        );
    }

    #[test]
    fn this_process_reads_back() {
        let me = std::process::id();
        assert!(read_rss(me).unwrap().total_kib > 0);
        assert!(read_fd_count(me).unwrap() >= 3);
        assert!(is_running(me));
        read_cpu_ticks(me).unwrap();
        assert!(read_machine_cpu().unwrap().busy > 0);
    }
}
