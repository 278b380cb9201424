//! Workers: one thread per core, pinned, each running its own monoio runtime and
//! owning its connections, streams and recorder outright. The only shared state is
//! [`Control`]: a few atomics touched per connection (never per message) and a
//! once-a-second snapshot slot per worker behind a mutex. A worker's tasks share its
//! [`WorkerCtx`] (in [`crate::ctx`], so the scenarios need nothing from here).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::{FusionDriver, RuntimeBuilder};

use crate::clock::{duration_nanos, Nanos};
use crate::ctx::{Control, Window, WorkerCtx};
use crate::local::{Gate, Semaphore};
use crate::net::SourcePicker;
use crate::plan::{Pace, Plan, Style};
use crate::probe;
use crate::scenario::{self, Unit};
use crate::stats::{Recorder, Totals};
use crate::stream::{run_sender, Schedule};

/// This worker's units set up in time for traffic (filled by the ramp's tasks).
type Units = Rc<RefCell<Vec<Unit>>>;

/// io_uring submission queue entries: plenty for a burst of connects and writes.
const RING_ENTRIES: u32 = 4096;
/// How often a worker looks for the start signal while it waits.
const START_POLL: Duration = Duration::from_millis(2);
/// How often a worker checks whether every stream has drained.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// How long closing handshakes may take at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// How often a worker publishes its snapshot for the progress line.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);

/// Starts worker `id` on its own pinned thread.
pub fn spawn(
    plan: Arc<Plan>,
    control: Arc<Control>,
    id: usize,
) -> std::io::Result<JoinHandle<Result<Totals, String>>> {
    std::thread::Builder::new()
        .name(format!("load-worker-{id}"))
        .spawn(move || {
            pin(id);
            let mut runtime = RuntimeBuilder::<FusionDriver>::new()
                .with_entries(RING_ENTRIES)
                .enable_timer()
                .build()
                .map_err(|e| format!("worker {id}: runtime: {e}"))?;
            Ok(runtime.block_on(run(plan, control, id)))
        })
}

/// Pins the current thread to one CPU of the process's affinity mask (worker `id` takes
/// the `id`-th allowed CPU, wrapping), so `taskset` decides where the workers may run.
/// Best effort: a restricted CPU set may refuse.
fn pin(id: usize) {
    let allowed: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let Some(&cpu) = allowed.get(id % allowed.len().max(1)) else {
        return;
    };
    if let Err(error) = monoio::utils::bind_to_cpu_set([cpu]) {
        eprintln!("worker {id}: could not pin to CPU {cpu}: {error}");
    }
}

/// The worker's life: ramp up, wait for the start, run traffic, drain, close, account.
async fn run(plan: Arc<Plan>, control: Arc<Control>, id: usize) -> Totals {
    let ctx = Rc::new(new_ctx(plan, control, id));
    let units = Units::default();
    monoio::spawn(publish_snapshots(Rc::clone(&ctx)));
    ramp(&ctx, &units).await;
    let window = wait_for_start(&ctx).await;
    ctx.window.set(window);
    ctx.stats.set_warmup_end(window.warmup_end);
    // Closed-loop senders start at once: start them at the window, not before it.
    ctx.clock.sleep_until(window.start).await;
    ctx.gate.open();
    start_traffic(&ctx, &units);
    wait_for_end(&ctx, window.end).await;
    drain(&ctx).await;
    close_all(&ctx, &units).await;
    finish(&ctx)
}

/// Builds the worker's context.
fn new_ctx(plan: Arc<Plan>, control: Arc<Control>, id: usize) -> WorkerCtx {
    let sources = SourcePicker::new(plan.net.source_ips.clone(), id);
    let plan_size = plan.size;
    WorkerCtx {
        id,
        clock: control.clock,
        plan,
        control,
        stats: Rc::new(Recorder::default()),
        live: Rc::new(Cell::new(0)),
        sources,
        gate: Gate::default(),
        window: Cell::new(Window::default()),
        closing: Cell::new(false),
        streams: RefCell::new(Vec::new()),
        json_pad: Rc::from(probe::json_pad(plan_size)),
        binary_fill: Rc::from(probe::binary_fill(plan_size)),
        slots_running: Cell::new(0),
        transfers_running: Cell::new(0),
        traffic_done: Cell::new(0),
    }
}

/// Sets up this worker's units, paced by --connect-rate and bounded in concurrency.
async fn ramp(ctx: &Rc<WorkerCtx>, units: &Units) {
    let plan = &ctx.plan;
    let per_unit = plan.style.conns_per_unit();
    let permits = (plan.connect_concurrency / per_unit).max(1);
    let semaphore = Semaphore::new(permits);
    let unit_gap = unit_interval(plan);
    let ramp_start = ctx.clock.now();
    let deadline = ramp_start + duration_nanos(plan.setup_timeout);
    for (k, unit) in plan.units_of(ctx.id).enumerate() {
        if let Some(gap) = unit_gap {
            ctx.clock
                .sleep_until(ramp_start + gap.saturating_mul(k as u64))
                .await;
        }
        let permit = semaphore.acquire().await;
        if ctx.clock.now() >= deadline {
            settle_failed(ctx, "setup_timeout");
            continue;
        }
        let ctx = Rc::clone(ctx);
        let units = Rc::clone(units);
        monoio::spawn(async move {
            let _permit = permit;
            set_up_unit(&ctx, &units, unit).await;
        });
    }
}

/// Time between unit setups on this worker, from the total connect rate.
fn unit_interval(plan: &Plan) -> Option<Nanos> {
    if plan.connect_rate <= 0.0 {
        return None;
    }
    let units_per_sec =
        plan.connect_rate / plan.workers as f64 / plan.style.conns_per_unit() as f64;
    Some((1e9 / units_per_sec) as Nanos)
}

/// Sets up one unit and registers it if traffic has not started yet.
async fn set_up_unit(ctx: &Rc<WorkerCtx>, units: &Units, unit: usize) {
    match scenario::setup(ctx, unit).await {
        Ok(set_up) if !ctx.gate.is_open() => {
            let conns = set_up.links.len() as u64;
            ctx.control.conns_up.fetch_add(conns, Ordering::Relaxed);
            units.borrow_mut().push(set_up);
        }
        Ok(late) => {
            for link in &late.links {
                link.outbox.close(1000);
            }
            ctx.stats.connect_failed("setup_late");
        }
        Err(error) => ctx.stats.connect_failed(&error.kind()),
    }
    ctx.control.units_settled.fetch_add(1, Ordering::Relaxed);
}

/// Counts a unit abandoned before setup.
fn settle_failed(ctx: &WorkerCtx, kind: &str) {
    ctx.stats.connect_failed(kind);
    ctx.control.units_settled.fetch_add(1, Ordering::Relaxed);
}

/// Waits (bounded by the setup timeout plus slack) for the main thread's start time.
async fn wait_for_start(ctx: &WorkerCtx) -> Window {
    let give_up = ctx.clock.now() + duration_nanos(ctx.plan.setup_timeout + Duration::from_secs(5));
    let mut start = ctx.control.traffic_start.load(Ordering::Acquire);
    while start == 0 && ctx.clock.now() < give_up {
        monoio::time::sleep(START_POLL).await;
        start = ctx.control.traffic_start.load(Ordering::Acquire);
    }
    let start = if start == 0 { ctx.clock.now() } else { start };
    let warmup_end = start + duration_nanos(ctx.plan.warmup);
    Window {
        start,
        warmup_end,
        end: warmup_end + duration_nanos(ctx.plan.duration),
    }
}

/// Spawns every sender (and ticket slot) of this worker's units.
fn start_traffic(ctx: &Rc<WorkerCtx>, units: &Units) {
    if ctx.plan.idle {
        return;
    }
    if let Style::Ticket { .. } = ctx.plan.style {
        for slot in ctx.plan.units_of(ctx.id) {
            scenario::ticket::slot_started(ctx);
            monoio::spawn(scenario::ticket::run_slot(Rc::clone(ctx), slot));
        }
        return;
    }
    let window = ctx.window.get();
    let total_streams = (ctx.plan.style.units() * ctx.plan.style.streams_per_unit()).max(1) as u128;
    let interval = ctx.plan.stream_interval_ns();
    let inflight = match ctx.plan.pace {
        Pace::Inflight(k) => u64::from(k),
        Pace::Rate(_) => u64::MAX,
    };
    for unit in units.borrow_mut().iter_mut() {
        for sender in unit.senders.drain(..) {
            let phase = interval.map_or(0, |i| {
                (u128::from(i) * u128::from(sender.stream.id) / total_streams) as Nanos
            });
            ctx.streams.borrow_mut().push(Rc::clone(&sender.stream));
            ctx.streams
                .borrow_mut()
                .extend(sender.mirrors.iter().map(Rc::clone));
            let schedule = Schedule {
                start: window.start,
                end: window.end,
                interval,
                phase,
                inflight,
            };
            monoio::spawn(run_sender(
                sender,
                schedule,
                ctx.clock,
                Rc::clone(&ctx.stats),
            ));
        }
    }
}

/// Waits for the end of the window (ticket runs bounded by --count may end sooner).
async fn wait_for_end(ctx: &WorkerCtx, end: Nanos) {
    if let Style::Ticket { count: Some(_), .. } = ctx.plan.style {
        while ctx.clock.now() < end && !scenario::ticket::slots_finished(ctx) {
            monoio::time::sleep(DRAIN_POLL).await;
        }
    } else {
        ctx.clock.sleep_until(end).await;
    }
    ctx.traffic_done.set(ctx.clock.now().min(end));
}

/// Waits until every stream has received all it was sent, or the drain time is up.
async fn drain(ctx: &WorkerCtx) {
    let deadline = ctx.clock.now() + duration_nanos(ctx.plan.drain);
    while ctx.clock.now() < deadline {
        if ctx.streams.borrow().iter().all(|s| s.is_complete()) && ctx.transfers_running.get() == 0
        {
            return;
        }
        monoio::time::sleep(DRAIN_POLL).await;
    }
}

/// Sends a close on every connection and waits (bounded) for them to end.
async fn close_all(ctx: &WorkerCtx, units: &Units) {
    ctx.closing.set(true);
    for unit in units.borrow().iter() {
        for link in &unit.links {
            link.outbox.close(1000);
        }
    }
    let deadline = ctx.clock.now() + duration_nanos(CLOSE_GRACE);
    while ctx.live.get() > 0 && ctx.clock.now() < deadline {
        monoio::time::sleep(DRAIN_POLL).await;
    }
}

/// Final accounting: sequence results into the recorder, then the totals.
fn finish(ctx: &WorkerCtx) -> Totals {
    for stream in ctx.streams.borrow().iter() {
        ctx.stats.add_integrity(&stream.integrity());
    }
    let mut totals = Totals::default();
    ctx.stats.snapshot_into(&mut totals);
    totals.traffic_done = ctx.traffic_done.get();
    totals
}

/// Publishes this worker's figures for the progress line until the worker ends.
async fn publish_snapshots(ctx: Rc<WorkerCtx>) {
    let slot = &ctx.control.snapshots[ctx.id];
    loop {
        if let Ok(mut snapshot) = slot.lock() {
            ctx.stats.snapshot_into(&mut snapshot.totals);
            snapshot.live = ctx.live.get();
        }
        // The runtime (and this task) ends when `run` returns; the count bound is the
        // run itself.
        monoio::time::sleep(SNAPSHOT_EVERY).await;
    }
}
