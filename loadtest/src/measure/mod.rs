//! `shardrelay-load measure …`: the measurement and pass/fail logic the scripts in
//! `scripts/` used to do with jq, awk and inline Python over `/stats`, `/proc` and the
//! load reports. The scripts now only start processes and external tools; what they
//! read and decide is here, typed and unit-tested.
//!
//! * [`relay`] — wait for a `/stats` condition, print one `/stats` figure.
//! * [`watch`] — sample a relay's RSS and descriptors while a load runs.
//! * [`requests`] — relay CPU per plain HTTP request; a load run's summary line.
//! * [`storm`] — the connection storm's table.
//! * [`verdict`] — checks over finished runs' `--json` reports.
//! * [`alloc`] — allocations per relayed message (a counting-allocator relay).
//! * [`bench`] — CPU over a load run, and bench-compare's table.
//! * [`cpu_per_message`] — relay CPU over a window, and CPU-s per million messages.
//! * [`idle_memory`] — idle memory per connection, and its growth across churn.
//! * [`edges`] — a sampling window's edges as `scripts/lib/bench.sh` writes them.
//! * [`scaling`] — shard-scaling's rows and tables.
//! * [`syscalls`] — syscalls per forwarded message from `perf stat` counts.
//! * [`autobahn`] — the Autobahn|Testsuite report judged against the pass criteria.
//! * [`answers`] — the relay's JSON answers read for the ticket interop check.
//! * [`quiet`] — wait for a quiet machine before a benchmark run.

pub mod alloc;
pub mod answers;
pub mod autobahn;
pub mod bench;
pub mod cpu_per_message;
pub mod edges;
pub mod idle_memory;
pub mod ports;
pub mod quiet;
pub mod relay;
pub mod requests;
pub mod rss_within;
pub mod scaling;
pub mod storm;
pub mod syscalls;
pub mod verdict;
pub mod watch;

use crate::cli::{MeasureArgs, MeasureCommand, ProcArgs, ProcFigure};
use crate::procfs;

/// Runs one measurement subcommand; returns the exit code (its messages on stderr).
pub fn run(args: &MeasureArgs) -> Result<i32, String> {
    match &args.command {
        MeasureCommand::RelayWait(a) => relay::wait(a),
        MeasureCommand::RelayFigure(a) => relay::figure(a),
        MeasureCommand::Proc(a) => proc_figure(a),
        MeasureCommand::Watch(a) => watch::run(a),
        MeasureCommand::P99VsBaseline(a) => verdict::p99_vs_baseline(a),
        MeasureCommand::ShutdownCloses(a) => verdict::shutdown_closes(a),
        MeasureCommand::IdleMemory(a) => idle_memory::run(a),
        MeasureCommand::CpuDuring(a) => bench::cpu_during(a),
        MeasureCommand::BenchTable(a) => bench::bench_table(a),
        MeasureCommand::CpuWindow(a) => cpu_per_message::cpu_window(a),
        MeasureCommand::CpuTable(a) => cpu_per_message::cpu_table(a),
        MeasureCommand::AllocPerMessage(a) => alloc::run(a),
        MeasureCommand::RequestCost(a) => requests::request_cost(a),
        MeasureCommand::RunSummary(a) => requests::run_summary(a),
        MeasureCommand::StormTable(a) => storm::storm_table(a),
        MeasureCommand::StyleRow(a) => requests::style_row_command(a),
        MeasureCommand::ScalingRow(a) => scaling::scaling_row_command(a),
        MeasureCommand::HandoffRow(a) => scaling::handoff_row_command(a),
        MeasureCommand::ScalingTable(a) => scaling::scaling_table_command(a),
        MeasureCommand::SyscallsRow(a) => syscalls::syscalls_row_command(a),
        MeasureCommand::SyscallsTable(a) => syscalls::syscalls_table_command(a),
        MeasureCommand::AutobahnReport(a) => autobahn::autobahn_report(a),
        MeasureCommand::JsonField(a) => answers::json_field(a),
        MeasureCommand::PutAnswer(a) => answers::put_answer(a),
        MeasureCommand::WaitQuiet(a) => quiet::wait_quiet(a),
        MeasureCommand::RssWithin(a) => rss_within::check(a),
        MeasureCommand::FreePort => ports::free_port(),
        MeasureCommand::WaitPort(a) => ports::wait_port(a),
    }
}

/// `measure proc`: prints one figure of a process.
fn proc_figure(args: &ProcArgs) -> Result<i32, String> {
    let text = match args.figure {
        ProcFigure::Rss => procfs::read_rss(args.pid).map(|r| r.total_kib.to_string()),
        ProcFigure::RssParts => procfs::read_rss(args.pid).map(|r| rss_parts(&r)),
        ProcFigure::Fds => procfs::read_fd_count(args.pid).map(|n| n.to_string()),
        ProcFigure::CpuTicks => procfs::read_cpu_ticks(args.pid).map(|t| t.to_string()),
    }
    .map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(0)
}

/// `RssAnon: N RssFile: N` (KiB), as `idle-memory` prints it.
pub fn rss_parts(rss: &procfs::Rss) -> String {
    format!("RssAnon: {} RssFile: {}", rss.anon_kib, rss.file_kib)
}
