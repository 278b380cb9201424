//! `shardrelay-load`: the load generator for shardrelay. Thread-per-core like the
//! relay (one pinned monoio runtime per worker), open-loop by default so a slow relay
//! cannot hide its tail, and every message checked for loss, duplication,
//! reordering, corruption and misrouting.
//!
//! # Layout
//! * [`cli`] — command line: subcommands, shared flags, value parsers.
//! * [`plan`] — flags checked and turned into a run: units, streams, pacing.
//! * [`run`] — main thread: start workers, ramp, progress line, join, report.
//! * [`worker`] — one pinned thread + monoio runtime per core; ramp, traffic, drain.
//! * [`ctx`] — a worker's shared context (plan, clock, recorder, streams) and its
//!   [`ctx::Control`] link to the main thread; what the scenarios receive.
//! * [`scenario`] — per style: how a unit's connections are set up and read.
//! * [`stream`] — a measured sender→receiver stream; open/closed-loop sender.
//! * [`probe`] — the measured message: stream, sequence, send time, CRC-32.
//! * [`seq`] — per-stream loss/duplicate/reorder accounting.
//! * [`stats`] — per-worker recorder, mergeable totals, histogram summaries.
//! * [`report`] — final report: text, JSON, exit code.
//! * [`threshold`] — `--fail-if` thresholds and their exit code.
//! * [`compare`] — `--compare`: this run beside a previous JSON report.
//! * [`hgrm`] — the full latency distribution as an `.hgrm` file.
//! * [`relay_stats`] — the relay's `/stats` over the measured window (two snapshots).
//! * [`conn`] — a live connection: outbox + writer task, message reader.
//! * [`net`] — TCP connect from a chosen source address, WebSocket upgrade.
//! * [`ws`] — WebSocket framing and handshake, no I/O.
//! * [`http`] — HTTP/1.1 request heads, response parsing, chunked decoding, no I/O.
//! * [`measure`] — `measure …`: the scripts' measurements and pass/fail checks
//!   (`/stats` conditions, RSS watch, report checks, idle memory per connection).
//! * [`figure`] — a named `/stats` figure and a condition on it.
//! * [`procfs`] — typed `/proc` readers: RSS, CPU ticks, descriptors, sockstat, slab.
//! * [`clock`] — the run's shared nanosecond clock.
//! * [`local`] — single-thread signal, gate and semaphore for a worker's tasks.
//! * [`sys`] — the only unsafe code: socket options, rlimits.
//! * [`tls`] — `wss://`/`https://` targets: the rustls client and a plain-or-TLS stream.

pub mod cli;
pub mod clock;
pub mod compare;
pub mod conn;
pub mod ctx;
pub mod direct;
pub mod figure;
pub mod hgrm;
pub mod http;
pub mod local;
pub mod measure;
pub mod net;
pub mod plan;
pub mod probe;
pub mod procfs;
pub mod relay_stats;
pub mod report;
pub mod run;
pub mod scenario;
pub mod seq;
pub mod stats;
pub mod stream;
pub mod sys;
pub mod threshold;
pub mod tls;
pub mod worker;
pub mod ws;
