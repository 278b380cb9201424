//! `chaos`: a misbehaving client for soak runs. Beside healthy load, it repeatedly
//! opens a route of every style and abuses one of its connections — killed mid-frame
//! (half a frame, then a reset), half-closed, fed garbage after the upgrade, sent a
//! message over `--max-message` — or leaves cleanly and reconnects at once. Each action
//! checks the relay's answer (close codes, the peer told, a ticket's GET never looking
//! complete) and is tallied; any other answer is an *unexpected* outcome and makes the
//! exit code 1.
//!
//! Unlike the load scenarios it runs on plain blocking std sockets, a few threads, one
//! action at a time each: its rate is low, and every read and write has a timeout, so
//! no fault can hang it. Every loop is bounded by `--duration` and `--count`.
//!
//! * [`client`] — blocking WebSocket and HTTP sockets, reset and half-close.
//! * [`scenes`] — the WebSocket routes set up and checked, victim and watcher.
//! * [`faults`] — the faults on a WebSocket scene, and reconnects.
//! * [`tickets`] — the faults on ticket transfers.

pub mod client;
pub mod faults;
pub mod scenes;
pub mod tickets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{ChaosArgs, ChaosStyle};

/// What the chaos client does to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Half a frame (or half a PUT body), then a reset.
    Kill,
    /// `shutdown(SHUT_WR)`: the relay reads EOF while it can still write.
    HalfClose,
    /// Random bytes after the upgrade (a bad chunk size for a PUT).
    Garbage,
    /// A message over `--max-message` (a body over the ticket's `max_bytes`).
    Oversize,
    /// A clean leave and an immediate reuse of the route.
    Reconnect,
}

/// Every fault, in the order actions cycle through them.
const FAULTS: [Fault; 5] = [
    Fault::Kill,
    Fault::HalfClose,
    Fault::Garbage,
    Fault::Oversize,
    Fault::Reconnect,
];

impl Fault {
    /// Name for the report.
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill-mid-frame",
            Fault::HalfClose => "half-close",
            Fault::Garbage => "garbage",
            Fault::Oversize => "oversize",
            Fault::Reconnect => "reconnect",
        }
    }
}

/// What every action needs to know.
pub struct Ctx {
    /// The relay's public listener.
    pub target: SocketAddr,
    /// The relay's admin listener (ticket minting).
    pub admin: SocketAddr,
    /// Admin bearer token, if any.
    pub admin_token: Option<String>,
    /// Limit for a connect and for each wait on the relay.
    pub io_timeout: Duration,
    /// The relay's `--max-message`.
    pub max_message: usize,
    /// Route-key prefix, unique per run.
    pub tag: String,
}

impl Ctx {
    /// The deadline of one wait starting now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.io_timeout
    }
}

/// Runs of one style × fault: how many, and the unexpected outcomes by reason.
#[derive(Default)]
struct Cell {
    /// Actions run.
    runs: u64,
    /// Unexpected outcomes, by what went wrong.
    unexpected: BTreeMap<String, u64>,
}

/// Every cell of the run.
type Tally = BTreeMap<(ChaosStyle, Fault), Cell>;

/// Runs the chaos client to the end; returns the exit code.
pub fn run(args: &ChaosArgs) -> Result<i32, String> {
    if args.styles.is_empty() || args.workers == 0 || args.rate <= 0.0 {
        return Err("chaos needs a style, a worker and a positive --rate".into());
    }
    let ctx = Arc::new(Ctx {
        target: args.target,
        admin: args.admin,
        admin_token: args.admin_token.clone(),
        io_timeout: args.io_timeout,
        max_message: args.max_message,
        tag: format!("chaos-{}-", crate::plan::run_tag()),
    });
    let combos: Arc<Vec<(ChaosStyle, Fault)>> = Arc::new(
        args.styles
            .iter()
            .flat_map(|s| FAULTS.iter().map(move |f| (*s, *f)))
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let limits = Limits {
        until: started + args.duration,
        count: args.count.unwrap_or(u64::MAX),
        interval: Duration::from_secs_f64(args.workers as f64 / args.rate),
    };
    let handles: Vec<_> = (0..args.workers)
        .map(|_| {
            let (ctx, combos, next) = (ctx.clone(), combos.clone(), next.clone());
            std::thread::spawn(move || worker(&ctx, &combos, &next, limits))
        })
        .collect();
    let mut tally = Tally::new();
    for handle in handles {
        let part = handle.join().map_err(|_| "a chaos worker panicked")?;
        for (key, cell) in part {
            let into = tally.entry(key).or_default();
            into.runs += cell.runs;
            for (reason, count) in cell.unexpected {
                *into.unexpected.entry(reason).or_default() += count;
            }
        }
    }
    Ok(report(args, &tally, started.elapsed()))
}

/// When a worker stops and how it paces itself.
#[derive(Clone, Copy)]
struct Limits {
    /// End of the run.
    until: Instant,
    /// Most actions in all.
    count: u64,
    /// Time between one worker's actions (open loop: a slow action is not waited
    /// for twice).
    interval: Duration,
}

/// One worker: take the next action number, run its style × fault, tally, pace.
fn worker(ctx: &Ctx, combos: &[(ChaosStyle, Fault)], next: &AtomicU64, limits: Limits) -> Tally {
    let mut tally = Tally::new();
    let mut due = Instant::now();
    while Instant::now() < limits.until {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= limits.count {
            break;
        }
        let (style, fault) = combos[(n % combos.len() as u64) as usize];
        // Action numbers step by two: a reconnect uses n and n + 1 as its keys.
        let outcome = match style {
            ChaosStyle::Ticket => tickets::run(ctx, fault, 2 * n),
            _ => faults::run(ctx, style, fault, 2 * n),
        };
        let cell = tally.entry((style, fault)).or_default();
        cell.runs += 1;
        if let Err(reason) = outcome {
            *cell.unexpected.entry(reason).or_default() += 1;
        }
        due += limits.interval;
        let now = Instant::now();
        if due > now {
            // Pacing, not synchronisation: the schedule of a low-rate open loop.
            std::thread::sleep((due - now).min(limits.until.saturating_duration_since(now)));
        } else {
            due = now;
        }
    }
    tally
}

/// Prints the table; returns the exit code (1 on any unexpected outcome or no action).
fn report(args: &ChaosArgs, tally: &Tally, took: Duration) -> i32 {
    let runs: u64 = tally.values().map(|c| c.runs).sum();
    let bad: u64 = tally.values().flat_map(|c| c.unexpected.values()).sum();
    println!(
        "shardrelay-load chaos — {runs} actions in {:.1} s ({:.1}/s), {} workers",
        took.as_secs_f64(),
        runs as f64 / took.as_secs_f64().max(1e-9),
        args.workers
    );
    println!(
        "{:<10} {:<15} {:>7} {:>11}",
        "style", "fault", "runs", "unexpected"
    );
    for ((style, fault), cell) in tally {
        let unexpected: u64 = cell.unexpected.values().sum();
        println!(
            "{:<10} {:<15} {:>7} {:>11}",
            style.name(),
            fault.name(),
            cell.runs,
            unexpected
        );
        for (reason, count) in &cell.unexpected {
            println!("    {count} × {reason}");
        }
    }
    let code = i32::from(bad > 0 || runs == 0);
    println!(
        "result        {} (exit {code})",
        if code == 0 {
            "OK"
        } else {
            "UNEXPECTED OUTCOMES"
        }
    );
    code
}
