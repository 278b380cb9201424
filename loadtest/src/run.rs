//! The main thread's part of a run: start the workers, time the ramp and publish the
//! traffic start, print a progress line every second, join the workers, merge their
//! totals, fetch the relay's `/stats` and print the report.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cli::Command;
use crate::clock::duration_nanos;
use crate::ctx::Control;
use crate::plan::Plan;
use crate::relay_stats;
use crate::report::{RelaySide, Report, RunFacts};
use crate::stats::{LatencySummary, Totals};
use crate::worker;

/// How often the main thread looks at the workers.
const TICK: Duration = Duration::from_millis(100);
/// How often the main thread checks the ramp (its resolution for the ramp time).
const RAMP_TICK: Duration = Duration::from_millis(5);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Lead between deciding the start and the first send, so every worker has seen it.
const START_LEAD: Duration = Duration::from_millis(50);
/// Slack past the last phase before the main thread gives up on a worker.
const JOIN_SLACK: Duration = Duration::from_secs(20);

/// Runs a parsed command: `chaos` on its own threads, every other scenario through
/// its plan; returns the process exit code.
pub fn command(command: Command) -> Result<i32, String> {
    match command {
        Command::Chaos(args) => crate::scenario::chaos::run(&args),
        Command::Attack(args) => crate::scenario::attack::run(&args),
        Command::Measure(args) => crate::measure::run(&args),
        other => Plan::from_command(other).and_then(run),
    }
}

/// Runs `plan` to the end; returns the process exit code.
pub fn run(plan: Plan) -> Result<i32, String> {
    let plan = Arc::new(plan);
    check_fd_limit(&plan);
    let control = Arc::new(Control::new(plan.workers));
    let handles = (0..plan.workers)
        .map(|id| worker::spawn(Arc::clone(&plan), Arc::clone(&control), id))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("spawning workers: {e}"))?;
    let ramp = wait_for_ramp(&plan, &control);
    announce_up(&plan, &control, ramp);
    let start = control.clock.now() + duration_nanos(START_LEAD);
    control.traffic_start.store(start, Ordering::Release);
    let direct = start_direct_probe(&plan);
    let relay_start = snapshot_at_window_start(&plan, Instant::now() + START_LEAD + plan.warmup);
    let totals = follow_and_join(&plan, &control, handles)?;
    let direct = direct.and_then(|probe| match probe.finish() {
        Ok(summary) => Some(summary),
        Err(error) => {
            eprintln!("warning: {error}");
            None
        }
    });
    let window_start = start + duration_nanos(plan.warmup);
    let measured_end = if totals.traffic_done > 0 {
        totals.traffic_done
    } else {
        control.clock.now()
    };
    let facts = RunFacts {
        ramp_s: ramp.as_secs_f64(),
        measured_s: measured_end.saturating_sub(window_start) as f64 / 1e9,
        legacy_driver: driver_is_legacy(),
        direct,
    };
    let mut report = Report::new(&plan, &totals, &facts, fetch_relay(&plan, relay_start));
    report.apply_thresholds(&plan.fail_if);
    print!("{}", report.render());
    print_comparison(&plan, &report)?;
    write_json(&plan, &report)?;
    write_hgrm(&plan, &totals)?;
    Ok(report.exit_code)
}

/// The relay's `/stats` when the measured window opens, taken on a thread of its own so
/// the main thread keeps following the workers. `None` with `--no-relay-stats`.
fn snapshot_at_window_start(
    plan: &Plan,
    at: Instant,
) -> Option<JoinHandle<Result<serde_json::Value, String>>> {
    if !plan.relay_stats {
        return None;
    }
    let (admin, token) = (plan.net.admin, plan.net.admin_token.clone());
    std::thread::Builder::new()
        .name("relay-stats".into())
        .spawn(move || {
            // Waiting for a wall-clock instant, not synchronising with anything.
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            relay_stats::fetch(admin, token.as_deref())
        })
        .ok()
}

/// With `--compare`: this run beside the previous report.
fn print_comparison(plan: &Plan, report: &Report) -> Result<(), String> {
    let Some(path) = &plan.compare else {
        return Ok(());
    };
    let previous = crate::compare::load(path)?;
    let current = serde_json::to_value(report).map_err(|e| format!("JSON report: {e}"))?;
    print!("{}", crate::compare::render(&previous, &current));
    Ok(())
}

/// With `--json`: the full client latency distribution beside it (`.hgrm`).
fn write_hgrm(plan: &Plan, totals: &Totals) -> Result<(), String> {
    let Some(json) = &plan.json else {
        return Ok(());
    };
    crate::hgrm::write_beside(json, &totals.latency).map(|_| ())
}

/// With `--direct-probe`: the direct loopback round trip, over the same measured window.
fn start_direct_probe(plan: &Plan) -> Option<crate::direct::Probe> {
    if !plan.direct_probe {
        return None;
    }
    let from = Instant::now() + START_LEAD + plan.warmup;
    match crate::direct::Probe::start(plan.size, from, from + plan.duration) {
        Ok(probe) => Some(probe),
        Err(error) => {
            eprintln!("warning: the direct probe did not start: {error}");
            None
        }
    }
}

/// Raises the open-files limit and warns when the plan needs more descriptors.
fn check_fd_limit(plan: &Plan) {
    match crate::sys::raise_open_files_limit() {
        Ok(limit) if (plan.total_conns() as u64) + 64 > limit => eprintln!(
            "warning: {} connections planned but the open-files limit is {limit}",
            plan.total_conns()
        ),
        Ok(_) => {}
        Err(error) => eprintln!("warning: could not read the open-files limit: {error}"),
    }
}

/// Waits until every unit settled (or the setup timeout), printing progress.
fn wait_for_ramp(plan: &Plan, control: &Control) -> Duration {
    let started = Instant::now();
    let units = plan.style.units() as u64;
    let mut next_line = started + PROGRESS_EVERY;
    while control.units_settled.load(Ordering::Relaxed) < units
        && started.elapsed() < plan.setup_timeout
    {
        std::thread::sleep(RAMP_TICK);
        if Instant::now() >= next_line {
            next_line += PROGRESS_EVERY;
            let failed = merged_snapshots(control).0.conns_failed;
            eprintln!(
                "[ramp {:>4.0}s] connections {}/{} up, {} units failed",
                started.elapsed().as_secs_f64(),
                control.conns_up.load(Ordering::Relaxed),
                plan.total_conns(),
                failed
            );
        }
    }
    started.elapsed()
}

/// Says (on stdout, for scripts waiting on it) that the connections are up.
fn announce_up(plan: &Plan, control: &Control, ramp: Duration) {
    let up = control.conns_up.load(Ordering::Relaxed);
    let rate = up as f64 / ramp.as_secs_f64().max(1e-9);
    if plan.idle {
        println!(
            "all connections up: {up}/{} after {:.2} s ({rate:.0} conn/s); holding for {:?}",
            plan.total_conns(),
            ramp.as_secs_f64(),
            plan.duration
        );
        let _ = std::io::stdout().flush();
    } else {
        eprintln!(
            "{up}/{} connections up after {:.2} s ({rate:.0} conn/s); traffic starts",
            plan.total_conns(),
            ramp.as_secs_f64()
        );
    }
}

/// Prints progress until every worker has finished (bounded), then merges results.
fn follow_and_join(
    plan: &Plan,
    control: &Control,
    handles: Vec<JoinHandle<Result<Totals, String>>>,
) -> Result<Totals, String> {
    let started = Instant::now();
    let limit = plan.warmup + plan.duration + plan.drain + plan.setup_timeout + JOIN_SLACK;
    let mut last = (started, 0u64);
    while !handles.iter().all(|h| h.is_finished()) {
        if started.elapsed() > limit {
            return Err("workers did not finish in time".into());
        }
        std::thread::sleep(TICK);
        if last.0.elapsed() >= PROGRESS_EVERY {
            last = progress_line(plan, control, started, last);
        }
    }
    let mut totals = Totals::default();
    for handle in handles {
        let worker = handle
            .join()
            .map_err(|_| "a worker panicked".to_owned())??;
        totals.merge(&worker);
    }
    Ok(totals)
}

/// Prints one progress line; returns the time and received count it was based on.
fn progress_line(
    plan: &Plan,
    control: &Control,
    started: Instant,
    last: (Instant, u64),
) -> (Instant, u64) {
    let (totals, live) = merged_snapshots(control);
    let now = Instant::now();
    let per_s = |n: u64| n as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
    let latency = LatencySummary::of(&totals.latency);
    let integrity = totals.integrity.corrupted + totals.integrity.misrouted;
    eprintln!(
        "[{:>5.0}s] conns {live} open | recv {:.0}/s | p50 {} µs p99 {} µs | errors {} | corrupt+misrouted {}{}",
        started.elapsed().as_secs_f64(),
        per_s(totals.received.saturating_sub(last.1)),
        latency.p50,
        latency.p99,
        totals.error_count(),
        integrity,
        if plan.idle { " (idle)" } else { "" }
    );
    (now, totals.received)
}

/// The workers' latest snapshots merged, and their open connections.
fn merged_snapshots(control: &Control) -> (Totals, usize) {
    let mut totals = Totals::default();
    let mut live = 0;
    for slot in &control.snapshots {
        if let Ok(snapshot) = slot.lock() {
            totals.merge(&snapshot.totals);
            live += snapshot.live;
        }
    }
    (totals, live)
}

/// Fetches the relay's `/stats` unless told not to, and its window against the start
/// snapshot; a failure is reported, not fatal.
fn fetch_relay(
    plan: &Plan,
    start: Option<JoinHandle<Result<serde_json::Value, String>>>,
) -> RelaySide {
    if !plan.relay_stats {
        return RelaySide::default();
    }
    let start = match start.map(|h| h.join()) {
        Some(Ok(Ok(stats))) => Some(stats),
        Some(Ok(Err(error))) => {
            eprintln!("relay /stats at the window start not fetched: {error}");
            None
        }
        _ => None,
    };
    match relay_stats::fetch(plan.net.admin, plan.net.admin_token.as_deref()) {
        Ok(stats) => RelaySide {
            error: None,
            window: start.map(|s| relay_stats::Window::between(&s, &stats)),
            stats: Some(stats),
        },
        Err(error) => {
            eprintln!("relay /stats not fetched: {error}");
            RelaySide {
                error: Some(error),
                ..Default::default()
            }
        }
    }
}

/// Writes the report as JSON when `--json` was given.
fn write_json(plan: &Plan, report: &Report) -> Result<(), String> {
    let Some(path) = &plan.json else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(report).map_err(|e| format!("JSON report: {e}"))?;
    std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Whether monoio would run on epoll here (io_uring unavailable).
fn driver_is_legacy() -> bool {
    !monoio::utils::detect_uring()
}
