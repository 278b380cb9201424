//! `measure idle-memory`: idle memory per upgraded connection of a running relay.
//! Warm it (WARM connections opened and closed), take the baseline RSS and the
//! kernel's slab and TCP figures, hold N idle connections (this binary's `idle`, a
//! child process), and report (RSS with them − RSS before) ÷ N; then close them all
//! and open N again, reporting any growth across the churn. RSS is split into RssAnon
//! (heap) and RssFile (the binary's pages) to show the delta is all heap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::ValueEnum;

use crate::cli::IdleMemoryArgs;
use crate::figure::{Cmp, Condition, Figure};
use crate::measure::{relay, rss_parts};
use crate::procfs::{self, Slab, TcpSockets};

/// How long the relay may take to let every connection go.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Between `/stats` polls.
const POLL: Duration = Duration::from_millis(500);
/// A sampling window, not synchronisation: each shard's heartbeat frees the buffers of
/// connections quiet for a tick (500 ms with the defaults); 2 s is four ticks.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the held connections' `idle` run lasts at most (it is stopped long before).
const HOLD_FOR: &str = "600s";

/// Kernel figures (machine-wide: other work on the box shows up too).
#[derive(Clone, Copy, Debug, Default)]
struct Kernel {
    /// Slab.
    slab: Slab,
    /// TCP sockets.
    tcp: TcpSockets,
}

/// The relay, and how to load it.
struct Bench<'a> {
    /// Flags.
    args: &'a IdleMemoryArgs,
    /// Where the idle run's output goes.
    log: PathBuf,
}

/// `measure idle-memory`: prints the figures the script printed, line for line.
pub fn run(args: &IdleMemoryArgs) -> Result<i32, String> {
    let bench = Bench {
        args,
        log: std::env::temp_dir().join(format!("shardrelay-idle-{}.txt", std::process::id())),
    };
    let n = args.connections;
    println!("fresh: {}", bench.rss_parts()?);
    if args.warm > 0 {
        let held = bench.hold(args.warm)?;
        bench.release(held)?;
    }
    let cold = bench.rss()?;
    let front_cold = bench.front_rss()?;
    println!(
        "warm ({} opened and closed): {}",
        args.warm,
        bench.rss_parts()?
    );
    let k0 = kernel()?;
    let held = bench.hold(n)?;
    let first = bench.rss()?;
    let front_first = bench.front_rss()?;
    println!("with {n}: {}", bench.rss_parts()?);
    let k1 = kernel()?;
    bench.release(held)?;
    let closed = bench.rss()?;
    let held = bench.hold(n)?;
    let second = bench.rss()?;
    bench.release(held)?;
    let _ = std::fs::remove_file(&bench.log);
    println!(
        "style={}{} connections={n} warm={} rss_cold_kib={cold} rss_with_n_kib={first} per_conn_bytes={}",
        style_name(args),
        if args.tls_ca.is_some() { " tls" } else { "" },
        args.warm,
        per(first - cold, n)
    );
    if !args.front_pids.is_empty() {
        println!(
            "front (pids {:?}): rss_cold_kib={front_cold} rss_with_n_kib={front_first} \
             per_conn_bytes={} relay_plus_front_per_conn_bytes={}",
            args.front_pids,
            per(front_first - front_cold, n),
            per(front_first - front_cold + first - cold, n)
        );
    }
    let slab = k1.slab.total_kib as i64 - k0.slab.total_kib as i64;
    let sockets = k1.tcp.in_use as i64 - k0.tcp.in_use as i64;
    println!(
        "kernel (machine-wide deltas, both ends on loopback): slab_kib={slab} sunreclaim_kib={} \
         tcp_sockets={sockets} tcp_buffer_pages={} slab_bytes_per_conn={} slab_bytes_per_socket={}",
        k1.slab.unreclaimable_kib as i64 - k0.slab.unreclaimable_kib as i64,
        k1.tcp.buffer_pages as i64 - k0.tcp.buffer_pages as i64,
        per(slab, n),
        per(slab, sockets.max(1) as usize)
    );
    println!(
        "churn: rss_after_close_kib={closed} rss_with_n_again_kib={second} growth_kib={}",
        second - first
    );
    Ok(0)
}

/// Bytes per item of a KiB delta (truncated toward zero, as the script's shell
/// arithmetic did).
fn per(delta_kib: i64, items: usize) -> i64 {
    delta_kib * 1024 / items.max(1) as i64
}

/// The style's command-line name.
fn style_name(args: &IdleMemoryArgs) -> String {
    args.style
        .to_possible_value()
        .map_or_else(|| format!("{:?}", args.style), |v| v.get_name().to_owned())
}

/// The machine's slab and TCP figures now.
fn kernel() -> Result<Kernel, String> {
    Ok(Kernel {
        slab: procfs::read_slab().map_err(|e| e.to_string())?,
        tcp: procfs::read_tcp_sockets().map_err(|e| e.to_string())?,
    })
}

impl Bench<'_> {
    /// The relay's VmRSS, KiB, as a signed figure for deltas.
    fn rss(&self) -> Result<i64, String> {
        Ok(procfs::read_rss(self.args.pid)
            .map_err(|e| e.to_string())?
            .total_kib as i64)
    }

    /// The summed VmRSS of the processes in front (`--front-pid`), KiB.
    fn front_rss(&self) -> Result<i64, String> {
        let mut total = 0;
        for &pid in &self.args.front_pids {
            total += procfs::read_rss(pid).map_err(|e| e.to_string())?.total_kib as i64;
        }
        Ok(total)
    }

    /// `RssAnon: N RssFile: N`.
    fn rss_parts(&self) -> Result<String, String> {
        Ok(rss_parts(
            &procfs::read_rss(self.args.pid).map_err(|e| e.to_string())?,
        ))
    }

    /// Holds `count` idle connections (a child `idle` run) and waits until the relay
    /// counts them all, then lets the heartbeat settle.
    fn hold(&self, count: usize) -> Result<Child, String> {
        let mut child = self.spawn_idle(count)?;
        let up = Condition {
            figure: Figure::Open,
            cmp: Cmp::AtLeast,
            value: count as u64,
        };
        match relay::wait_for(
            self.args.admin,
            &[up],
            Duration::from_secs(self.args.up_timeout),
            POLL,
        ) {
            Ok(None) => {
                std::thread::sleep(SETTLE);
                Ok(child)
            }
            outcome => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let why = outcome.err().unwrap_or_default();
                Err(format!("connections never reached {count} {why}\n{log}"))
            }
        }
    }

    /// Stops the idle run and waits until the relay has let every connection go.
    fn release(&self, mut held: Child) -> Result<(), String> {
        let _ = held.kill();
        let _ = held.wait();
        let gone = Condition {
            figure: Figure::Open,
            cmp: Cmp::Eq,
            value: 0,
        };
        match relay::wait_for(self.args.admin, &[gone], CLOSE_TIMEOUT, POLL)? {
            None => Ok(()),
            Some(_) => Err("connections never closed".into()),
        }
    }

    /// Starts `shardrelay-load idle` for `count` connections.
    fn spawn_idle(&self, count: usize) -> Result<Child, String> {
        let me = std::env::current_exe().map_err(|e| format!("own binary: {e}"))?;
        let log =
            std::fs::File::create(&self.log).map_err(|e| format!("{}: {e}", self.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let (target, tls) = match &self.args.tls_ca {
            Some(ca) => (
                format!("wss://{}", addr(self.args.target)),
                vec!["--tls-ca".into(), ca.clone().into_os_string()],
            ),
            None => (addr(self.args.target), Vec::new()),
        };
        Command::new(me)
            .arg("idle")
            .args(["--style", &style_name(self.args)])
            .args(["--target", &target])
            .args(tls)
            .args(["--admin", &addr(self.args.admin)])
            .args(["--connections", &count.to_string()])
            .args(["--duration", HOLD_FOR])
            .args(["--connect-rate", &self.args.connect_rate.to_string()])
            .args(["--source-ips", &self.args.source_ips])
            .arg("--no-relay-stats")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting idle: {e}"))
    }
}

/// `host:port`.
fn addr(a: SocketAddr) -> String {
    a.to_string()
}
