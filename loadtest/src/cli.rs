//! The command line: one subcommand per scenario, each flattening the flags every
//! scenario shares ([`Common`]). Value parsers for durations, sizes, target addresses
//! and source-IP ranges live here; turning flags into a run is `plan`'s job.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Most source addresses accepted: 127.0.0.0/8 has 16.7 M, but 64 Ki × ~28 k
/// ephemeral ports is already far past any file-descriptor limit.
const MAX_SOURCE_IPS: usize = 65_536;

/// `shardrelay-load`: drive a shardrelay with WebSocket or ticket traffic and report
/// throughput, latency and integrity.
#[derive(Debug, Parser)]
#[command(name = "shardrelay-load", version, about)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub command: Command,
}

/// One scenario per rendezvous style, plus `idle` for memory measurement.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// N binaries × P phones on `/v1/server` and `/v1/client`: phones send, binaries
    /// echo through the envelope (or, with --fanout, binaries send to every phone).
    ServerId(ServerIdArgs),
    /// N pairs on `/?pair=`: side A sends binary probes, side B echoes (or receives).
    Pair(PairArgs),
    /// N sessions on `/mac` + `/browser`: the host sends `data`, the browser echoes
    /// (or receives).
    Session(SessionArgs),
    /// N Macs on `/ws` with B browsers each (the session-code relay's second protocol):
    /// each Mac sends binary probes, the relay fans every one out to all its browsers,
    /// and every browser accounts every probe.
    SessionWs(SessionWsArgs),
    /// Mint tickets on the admin API, then PUT/GET `--size` bytes through
    /// `/v1/relay`, checking a SHA-256 of what arrived.
    Ticket(TicketArgs),
    /// Open and hold N upgraded connections of one style for --duration.
    Idle(IdleArgs),
    /// Misbehave on every style at a low rate (kill mid-frame, half-close, garbage,
    /// oversize, reconnect) and check the relay's answers.
    Chaos(ChaosArgs),
    /// Hostile clients for --duration (lone pair sides flooding tiny messages, pings
    /// never read, phones flooding a binary that does not read, session-code guessing,
    /// idle sockets that never send a head, health-probe floods); reports what the
    /// relay answered.
    Attack(AttackArgs),
    /// Measurement helpers for the scripts in `scripts/`: read `/stats` and `/proc`,
    /// wait on a relay condition, check finished runs' reports (no traffic of its own,
    /// except `idle-memory`, which runs `idle`).
    Measure(MeasureArgs),
}

/// Flags shared by every scenario.
#[derive(Clone, Debug, Args)]
pub struct Common {
    /// The relay's public listener: `host:port`, `ws://host:port` or `http://host:port`
    /// (a path is ignored; host names are resolved), or `wss://`/`https://` for a relay
    /// with `--tls-cert` (then `--tls-ca FILE` or `--tls-insecure`).
    #[arg(long, alias = "url", env = "SHARDRELAY_LOAD_TARGET", default_value = "127.0.0.1:8080", value_parser = parse_target)]
    pub target: SocketAddr,
    /// For a `wss://` or `https://` target: a PEM file of certificates to trust (a test
    /// CA, or the relay's self-signed certificate).
    #[arg(long, env = "SHARDRELAY_LOAD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// For a `wss://` or `https://` target: accept any certificate (throw-away pairs in
    /// benchmarks; never against a relay you do not run).
    #[arg(long)]
    pub tls_insecure: bool,
    /// The relay's admin listener, for `/stats` and ticket minting (same forms).
    #[arg(long, env = "SHARDRELAY_LOAD_ADMIN", default_value = "127.0.0.1:9090", value_parser = parse_target)]
    pub admin: SocketAddr,
    /// Bearer token for the admin listener, when the relay has one.
    #[arg(long, env = "SHARDRELAY_LOAD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Worker threads, one pinned monoio runtime each (default: cores available).
    #[arg(long)]
    pub workers: Option<usize>,
    /// How long traffic is measured, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Traffic before the measured window; its latencies are discarded.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// After the last send, how long to wait for outstanding messages before
    /// counting them lost.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Open loop: messages per second in total, on a fixed schedule; latency counts
    /// from the scheduled time. Default 1000 when --inflight is not given.
    #[arg(long, conflicts_with = "inflight")]
    pub rate: Option<f64>,
    /// Closed loop: keep K messages outstanding per stream, for peak throughput.
    #[arg(long)]
    pub inflight: Option<u32>,
    /// Message payload size (e.g. 64, 4KiB); for `ticket` the body size (default 1MiB).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<usize>,
    /// New connections per second in total during the ramp (0: as fast as allowed).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Connection attempts in flight at once, per worker.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Limit for one TCP connect plus upgrade.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Limit for the whole ramp; connections not up by then are abandoned.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub setup_timeout: Duration,
    /// Source addresses to bind, round-robin (`127.0.0.1-127.0.0.20` or a comma
    /// list), to pass the ~28 k ephemeral ports of one source/destination pair.
    #[arg(long, value_parser = parse_source_ips)]
    pub source_ips: Option<SourceIps>,
    /// Also write the final report as JSON to this file, and the client latency's full
    /// HDR percentile distribution beside it (same name, `.hgrm`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A previous run's `--json` report: print this run's change against it.
    #[arg(long, value_name = "PREVIOUS.json")]
    pub compare: Option<PathBuf>,
    /// A threshold that fails the run (exit 3) when crossed, e.g. `p99>2ms`,
    /// `throughput<5000`, `errors>0`; repeatable. Metrics: p50 p90 p99 p999 max mean
    /// connect_p99 (durations: us, ms, s; bare numbers are µs), throughput (msg/s),
    /// errors, lost, failed (connections).
    #[arg(long = "fail-if", value_name = "METRIC<OP>VALUE", value_parser = crate::threshold::Threshold::parse)]
    pub fail_if: Vec<crate::threshold::Threshold>,
    /// Do not fetch the relay's `/stats` at the end.
    #[arg(long)]
    pub no_relay_stats: bool,
    /// Also measure a direct loopback round trip (no relay) in the same window: a TCP
    /// echo thread and a prober sending one --size message per millisecond; reported as
    /// `direct round trip`.
    #[arg(long)]
    pub direct_probe: bool,
    /// Accept (and unmask) masked frames from the relay instead of failing: only for
    /// the raw-copy reference relay (`shardrelay-baseline --raw-copy`), which copies one
    /// side's client frames to the other byte for byte.
    #[arg(long)]
    pub accept_masked: bool,
    /// Retry an upgrade the relay refused with `429` (its `--per-ip-rate`), after a
    /// backoff of 50 ms doubling to 2 s with jitter, as a well-behaved client does in a
    /// reconnect storm; the connect latency then counts from the first attempt. The ramp
    /// still ends at --setup-timeout.
    #[arg(long)]
    pub retry_rate_limited: bool,
}

/// `server-id` flags.
#[derive(Debug, Args)]
pub struct ServerIdArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Binaries, one server-id each.
    #[arg(long, default_value_t = 10)]
    pub binaries: usize,
    /// Phones per binary (the relay's default cap is 16).
    #[arg(long, default_value_t = 4)]
    pub phones: usize,
    /// Binaries send to all their phones instead of echoing phones' messages.
    #[arg(long)]
    pub fanout: bool,
    /// Prefix for server-ids (default: `load-<random>-`, fresh each run).
    #[arg(long)]
    pub server_prefix: Option<String>,
}

/// `pair` flags.
#[derive(Debug, Args)]
pub struct PairArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Pairs (two connections each).
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Side B only receives (one-way latency) instead of echoing to A.
    #[arg(long)]
    pub oneway: bool,
}

/// `session` flags.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Sessions (host + browser each).
    #[arg(long, alias = "connections", default_value_t = 100)]
    pub sessions: usize,
    /// The browser only receives instead of echoing to the host.
    #[arg(long)]
    pub oneway: bool,
}

/// `session-ws` flags.
#[derive(Debug, Args)]
pub struct SessionWsArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Macs (one session code each).
    #[arg(long, alias = "macs", default_value_t = 1)]
    pub sessions: usize,
    /// Browsers per Mac (the relay's default cap is 16).
    #[arg(long, default_value_t = 4)]
    pub browsers: usize,
}

/// `ticket` flags.
#[derive(Debug, Args)]
pub struct TicketArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Transfers in flight at once (each a PUT and a GET connection).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Stop after this many transfers in all (default: run for the duration).
    #[arg(long)]
    pub count: Option<u64>,
}

/// `idle` flags.
#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Upgraded connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Which route the connections use.
    #[arg(long, value_enum, default_value_t = IdleStyle::ServerId)]
    pub style: IdleStyle,
    /// Phones per binary for `--style server-id`.
    #[arg(long, default_value_t = 4)]
    pub phones: usize,
}

/// Routes `idle` can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdleStyle {
    /// Binaries plus phones (`/v1/server`, `/v1/client`).
    ServerId,
    /// Pairs (`/?pair=`).
    Pair,
    /// Sessions (`/mac`, `/browser`), joined.
    Session,
    /// `/v1/echo` (needs the relay's `--enable-echo`).
    Echo,
}

/// `measure`: one measurement helper.
#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// What to measure or check.
    #[command(subcommand)]
    pub command: MeasureCommand,
}

/// The measurement helpers (exit 0 when the measurement or check succeeded, 1 with a
/// message on stderr when not).
#[derive(Debug, Subcommand)]
pub enum MeasureCommand {
    /// Poll the relay's `/stats` until every condition holds (e.g. `open==0`,
    /// `registered==0`, `connections.phone>=80`), or fail at --timeout printing each
    /// condition's figure.
    RelayWait(RelayWaitArgs),
    /// Print one figure of the relay's `/stats` totals: `open`, `registered`,
    /// `connections.KIND` or a counter (`messages_out`, …).
    RelayFigure(RelayFigureArgs),
    /// Print one figure of a process from `/proc`.
    Proc(ProcArgs),
    /// Sample a relay's RSS and descriptors while other processes run: a timeline CSV,
    /// the peak, an optional sample after a warm-up, an optional RSS ceiling that stops
    /// at once. Prints `PEAK_KIB WARM_KIB`.
    Watch(WatchArgs),
    /// Check finished runs' `--json` reports: each NAME's client p99 against its
    /// NAME-baseline's (within --ratio times it, or the baseline plus --floor-us).
    P99VsBaseline(P99VsBaselineArgs),
    /// Check finished runs' `--json` reports after a SIGTERM under load: every
    /// WebSocket connection closed 1001 and nothing else went wrong; ticket runs moved
    /// no corrupted or misrouted body.
    ShutdownCloses(ReportsArgs),
    /// Idle memory per connection of a running relay: hold N idle connections (this
    /// binary's `idle`), report the RSS delta per connection, the kernel's side, and
    /// any growth across a close-and-reopen churn.
    IdleMemory(IdleMemoryArgs),
    /// Run a load command (after `--`) and record in --json the relay's CPU over it,
    /// the command's own CPU and the rest of the machine's; exits with its code.
    CpuDuring(CpuDuringArgs),
    /// Print bench-compare's table from runs' `TAG.json` and `TAG.cpu.json`
    /// (TAG: SCENARIO.PACE.RELAY); exit 1 when any load run did not exit 0.
    BenchTable(BenchTableArgs),
    /// Record in --json a relay's CPU over a --window starting now.
    CpuWindow(CpuWindowArgs),
    /// Print cpu-per-message's table (relay CPU-s per million forwarded messages, and
    /// against the raw-copy relay) from runs' `TAG.json` and `TAG.window.json` (TAG:
    /// RELAY.STYLE.RATE).
    CpuTable(CpuTableArgs),
    /// Allocations per relayed message of a counting-allocator relay (`alloc-count`
    /// build) under a running load: one table row.
    AllocPerMessage(AllocArgs),
    /// Relay CPU, wall time and RSS per plain HTTP request (one connection each), for
    /// each --phase in turn; with --ratio-to, each phase's CPU against one of them.
    RequestCost(RequestCostArgs),
    /// One line: a load run's throughput and client latency (its --json report) beside
    /// the relay's forward histogram now.
    RunSummary(RunSummaryArgs),
    /// Print the connection storm's table from runs' `TAG.json` and `TAG.ticks`
    /// (TAG: LABEL.STYLE; ticks: the relay's CPU ticks before and once all were up).
    StormTable(StormTableArgs),
    /// One markdown row of `scripts/bench-styles.sh` from a run's `--json` report.
    StyleRow(StyleRowArgs),
    /// One line of `scripts/shard-scaling.sh`'s `throughput.tsv`: a run's window edges
    /// (`BASE.before`, `BASE.after` and their `.json`), its report (`BASE.json`) and the
    /// relay's `/stats` at the end (`BASE.end.json`).
    ScalingRow(ScalingRowArgs),
    /// One line of `scripts/shard-scaling.sh`'s `handoff.tsv`: an idle run's `/stats`
    /// once every connection was up, its report, and the relay's CPU ticks.
    HandoffRow(HandoffRowArgs),
    /// Print `scripts/shard-scaling.sh`'s tables from `throughput.tsv` and `handoff.tsv`.
    ScalingTable(ScalingTableArgs),
    /// One line of `scripts/syscalls-per-message.sh`'s `results.tsv`: a window's perf
    /// counts per forwarded message, batching, and CPU.
    SyscallsRow(SyscallsRowArgs),
    /// Print `scripts/syscalls-per-message.sh`'s table from `results.tsv`.
    SyscallsTable(SyscallsTableArgs),
    /// Judge Autobahn|Testsuite's `index.json`: print the summary, optionally rewrite
    /// the conformance doc, exit 1 unless every case run passes.
    AutobahnReport(AutobahnReportArgs),
    /// Print a top-level field of a JSON object file (nothing when missing or null).
    JsonField(JsonFieldArgs),
    /// Exit 0 when a ticket PUT's JSON answer has the given `status` and a whole
    /// `bytes` (equal to --bytes when given), else 1.
    PutAnswer(PutAnswerArgs),
    /// Wait (at most --within) for the machine to be quiet: under a tenth of a core
    /// busy over one second. Exits 0 once it is, 3 when it is still busy at the end.
    WaitQuiet(WaitQuietArgs),
    /// The soak's memory verdicts (PROTOCOL §2.1, issue 15): with `--peak`, the RSS peak
    /// under attack within post-start RSS + `--memory-limit`; with `--end`, the RSS at
    /// the end back within post-warm-up RSS + 10 % + `--slack-kib`. Prints one line per
    /// check; exits 1 when one fails.
    RssWithin(RssWithinArgs),
    /// Print a TCP port on 127.0.0.1 the kernel just picked (bound, then released), for
    /// a process that must be told its address before it starts.
    FreePort,
    /// Wait (at most 10 s) until something accepts TCP connections at ADDR; exit 1 if
    /// nothing does.
    WaitPort(WaitPortArgs),
}

/// `measure rss-within` flags (all KiB unless named otherwise).
#[derive(Debug, Args)]
pub struct RssWithinArgs {
    /// RSS just after start.
    #[arg(long)]
    pub start: u64,
    /// RSS after the warm-up.
    #[arg(long)]
    pub warm: u64,
    /// RSS peak under attack (checked against start + `--memory-limit-mib`).
    #[arg(long)]
    pub peak: Option<u64>,
    /// The relay's `--memory-limit`, MiB.
    #[arg(long, default_value_t = 0)]
    pub memory_limit_mib: u64,
    /// RSS at the end (checked against warm + 10 % + `--slack-kib`).
    #[arg(long)]
    pub end: Option<u64>,
    /// What the allocator may keep beyond 10 % (after attacks: what they made it map).
    #[arg(long, default_value_t = 0)]
    pub slack_kib: u64,
}

/// `measure wait-port` arguments.
#[derive(Debug, Args)]
pub struct WaitPortArgs {
    /// `HOST:PORT`.
    pub addr: std::net::SocketAddr,
}

/// `measure wait-quiet` flags.
#[derive(Debug, Args)]
pub struct WaitQuietArgs {
    /// The longest wait.
    #[arg(long, value_parser = parse_duration)]
    pub within: Duration,
}

/// `measure scaling-row` flags.
#[derive(Debug, Args)]
pub struct ScalingRowArgs {
    /// The run's files' common prefix (`OUT/STYLE.CONNS.PLACEMENT`).
    #[arg(long)]
    pub base: PathBuf,
    /// For the row: the style.
    #[arg(long)]
    pub style: String,
    /// For the row: the connection count.
    #[arg(long)]
    pub connections: u64,
    /// For the row: the placement (`1`, `1-own`, `2`).
    #[arg(long)]
    pub placement: String,
}

/// `measure handoff-row` flags.
#[derive(Debug, Args)]
pub struct HandoffRowArgs {
    /// The relay's `/stats` once every connection was up.
    #[arg(long)]
    pub stats: PathBuf,
    /// The idle run's `--json` report.
    #[arg(long)]
    pub report: PathBuf,
    /// For the row: the style.
    #[arg(long)]
    pub style: String,
    /// For the row: the connect rate (0: unpaced).
    #[arg(long)]
    pub rate: u64,
    /// For the row: `--shards`.
    #[arg(long)]
    pub shards: u64,
    /// The relay's CPU ticks before the run and once every connection was up.
    #[arg(long, num_args = 2, value_names = ["START", "UP"], required = true)]
    pub cpu_ticks: Vec<u64>,
}

/// `measure scaling-table` flags.
#[derive(Debug, Args)]
pub struct ScalingTableArgs {
    /// `throughput.tsv`.
    #[arg(long)]
    pub throughput: PathBuf,
    /// `handoff.tsv`.
    #[arg(long)]
    pub handoffs: PathBuf,
}

/// `measure syscalls-row` flags.
#[derive(Debug, Args)]
pub struct SyscallsRowArgs {
    /// `perf stat -x,` output for the window.
    #[arg(long)]
    pub perf: PathBuf,
    /// The window's first edge (`sample`'s file; its `/stats` beside it in `.json`).
    #[arg(long)]
    pub before: PathBuf,
    /// The window's last edge.
    #[arg(long)]
    pub after: PathBuf,
    /// For the row: the style.
    #[arg(long)]
    pub style: String,
    /// For the row: the relay's driver.
    #[arg(long)]
    pub driver: String,
    /// The offered round trips per second.
    #[arg(long)]
    pub rate: u64,
    /// The events counted, in the order perf was given them.
    #[arg(last = true, required = true)]
    pub events: Vec<String>,
}

/// `measure syscalls-table` flags.
#[derive(Debug, Args)]
pub struct SyscallsTableArgs {
    /// `results.tsv`.
    #[arg(long)]
    pub results: PathBuf,
}

/// `measure autobahn-report` flags.
#[derive(Debug, Args)]
pub struct AutobahnReportArgs {
    /// The suite's `reports/index.json` (per-case reports beside it).
    #[arg(long)]
    pub index: PathBuf,
    /// The agent whose cases are judged.
    #[arg(long, default_value = "shardrelay")]
    pub agent: String,
    /// For the doc: the relay's version.
    #[arg(long = "version", default_value = "?")]
    pub relay_version: String,
    /// For the doc: the relay's flags.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub relay_flags: String,
    /// For the doc: the relay's driver.
    #[arg(long, default_value = "?")]
    pub driver: String,
    /// For the doc: autobahntestsuite's version.
    #[arg(long, default_value = "?")]
    pub wstest: String,
    /// For the doc: wstest's wall time, seconds.
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
    /// Rewrite this page (unless only its date or wall time would change).
    #[arg(long)]
    pub doc: Option<PathBuf>,
}

/// `measure json-field` flags.
#[derive(Debug, Args)]
pub struct JsonFieldArgs {
    /// The JSON file.
    pub file: PathBuf,
    /// The top-level key.
    pub key: String,
}

/// `measure put-answer` flags.
#[derive(Debug, Args)]
pub struct PutAnswerArgs {
    /// The PUT's answer (a JSON file).
    pub file: PathBuf,
    /// The `status` it must have.
    #[arg(long)]
    pub status: String,
    /// The `bytes` it must have (any whole number when not given).
    #[arg(long)]
    pub bytes: Option<u64>,
}

/// `measure style-row` flags.
#[derive(Debug, Args)]
pub struct StyleRowArgs {
    /// The row's label (the style).
    #[arg(long)]
    pub label: String,
    /// The row's connection count, as printed.
    #[arg(long)]
    pub connections: String,
    /// The run's `--json` report.
    #[arg(long)]
    pub report: PathBuf,
}

/// `measure storm-table` flags.
#[derive(Debug, Args)]
pub struct StormTableArgs {
    /// Where the runs' files are.
    #[arg(long)]
    pub dir: PathBuf,
    /// The runs, in table order.
    #[arg(required = true)]
    pub tags: Vec<String>,
}

/// `measure request-cost` flags.
#[derive(Debug, Args)]
pub struct RequestCostArgs {
    /// The relay (its CPU and RSS are read from /proc).
    #[arg(long)]
    pub pid: u32,
    /// The listener the requests go to (public or admin).
    #[arg(long, value_parser = parse_target)]
    pub addr: SocketAddr,
    /// Requests per phase (split evenly over the clients).
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// `NAME=PATH:STATUS`, e.g. `404=/no-such-path:404`; repeatable, run in order.
    #[arg(long = "phase", required = true)]
    pub phases: Vec<String>,
    /// Print each phase's CPU per request as a ratio to this phase's.
    #[arg(long)]
    pub ratio_to: Option<String>,
}

/// `measure run-summary` flags.
#[derive(Debug, Args)]
pub struct RunSummaryArgs {
    /// The line's label.
    #[arg(long)]
    pub label: String,
    /// The run's `--json` report.
    #[arg(long)]
    pub report: PathBuf,
    /// The relay's admin listener.
    #[arg(long, value_parser = parse_target)]
    pub admin: SocketAddr,
}

/// `measure alloc-per-message` flags.
#[derive(Debug, Args)]
pub struct AllocArgs {
    /// The relay's admin listener.
    #[arg(long, value_parser = parse_target)]
    pub admin: SocketAddr,
    /// The relay (it must stay alive).
    #[arg(long)]
    pub pid: u32,
    /// The running load; the idle reads wait until it has ended.
    #[arg(long)]
    pub load_pid: u32,
    /// After traffic starts, before the window.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// The measured window.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub window: Duration,
    /// For the row: the style.
    #[arg(long)]
    pub style: String,
    /// For the row: the offered rate.
    #[arg(long)]
    pub rate: String,
    /// For the row: the connection count.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
}

/// `measure cpu-window` flags.
#[derive(Debug, Args)]
pub struct CpuWindowArgs {
    /// The relay.
    #[arg(long)]
    pub pid: u32,
    /// How long to measure.
    #[arg(long, value_parser = parse_duration)]
    pub window: Duration,
    /// Where the figures go.
    #[arg(long)]
    pub json: PathBuf,
}

/// `measure cpu-table` flags.
#[derive(Debug, Args)]
pub struct CpuTableArgs {
    /// Where the runs' files are.
    #[arg(long)]
    pub dir: PathBuf,
    /// The runs, in table order.
    #[arg(required = true)]
    pub tags: Vec<String>,
}

/// `measure cpu-during` flags.
#[derive(Debug, Args)]
pub struct CpuDuringArgs {
    /// The relay whose CPU is measured.
    #[arg(long)]
    pub pid: u32,
    /// Where the figures go.
    #[arg(long)]
    pub json: PathBuf,
    /// The load command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `measure bench-table` flags.
#[derive(Debug, Args)]
pub struct BenchTableArgs {
    /// Where the runs' files are.
    #[arg(long)]
    pub dir: PathBuf,
    /// The runs, in table order.
    #[arg(required = true)]
    pub tags: Vec<String>,
}

/// `measure relay-wait` flags.
#[derive(Debug, Args)]
pub struct RelayWaitArgs {
    /// The relay's admin listener.
    #[arg(long, value_parser = parse_target)]
    pub admin: SocketAddr,
    /// A condition `FIGURE OP N` (OP: == >= <= > <); repeatable, all must hold.
    #[arg(long = "until", required = true, value_parser = crate::figure::Condition::parse)]
    pub until: Vec<crate::figure::Condition>,
    /// Give up after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Time between polls.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub every: Duration,
}

/// `measure relay-figure` flags.
#[derive(Debug, Args)]
pub struct RelayFigureArgs {
    /// The relay's admin listener.
    #[arg(long, value_parser = parse_target)]
    pub admin: SocketAddr,
    /// `open`, `registered`, `connections.KIND` or a totals counter.
    #[arg(value_parser = crate::figure::Figure::parse)]
    pub figure: crate::figure::Figure,
}

/// `measure proc` flags.
#[derive(Debug, Args)]
pub struct ProcArgs {
    /// The process.
    #[arg(long)]
    pub pid: u32,
    /// Which figure.
    #[arg(value_enum)]
    pub figure: ProcFigure,
}

/// A process figure `measure proc` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProcFigure {
    /// VmRSS, KiB.
    Rss,
    /// `RssAnon: N RssFile: N` (KiB): the heap apart from the binary's pages.
    RssParts,
    /// Open descriptors.
    Fds,
    /// utime + stime, clock ticks.
    CpuTicks,
}

/// `measure watch` flags.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The relay: its RSS and descriptors are sampled; it must stay alive.
    #[arg(long)]
    pub pid: u32,
    /// Keep sampling while any of these processes runs (comma-separated pids).
    #[arg(long = "while", value_delimiter = ',', required = true)]
    pub while_pids: Vec<u32>,
    /// Time between samples.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub every: Duration,
    /// Fail when the processes still run after this long.
    #[arg(long, value_parser = parse_duration)]
    pub deadline: Duration,
    /// Append `elapsed_s,rss_kib,fds` lines to this CSV (header written when new).
    #[arg(long)]
    pub timeline: Option<PathBuf>,
    /// Fail at once (exit 4) when the RSS passes this many KiB.
    #[arg(long)]
    pub rss_ceiling_kib: Option<u64>,
    /// Also take one RSS sample this long after the start (printed as WARM_KIB; 0
    /// when absent; fail when the processes end before it).
    #[arg(long, value_parser = parse_duration)]
    pub warm_after: Option<Duration>,
}

/// `measure p99-vs-baseline` flags.
#[derive(Debug, Args)]
pub struct P99VsBaselineArgs {
    /// Where the reports are (`NAME.json`, `NAME-baseline.json`).
    #[arg(long)]
    pub dir: PathBuf,
    /// Noise floor, µs: the limit is at least the baseline plus this.
    #[arg(long, default_value_t = 1000)]
    pub floor_us: u64,
    /// The limit is at least the baseline times this.
    #[arg(long, default_value_t = 3)]
    pub ratio: u64,
    /// The runs (without `-baseline`).
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Flags of a check over finished runs' reports.
#[derive(Debug, Args)]
pub struct ReportsArgs {
    /// Where the reports are (`NAME.json`).
    #[arg(long)]
    pub dir: PathBuf,
    /// The runs; a name starting `ticket` is checked as a ticket run.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `measure idle-memory` flags.
#[derive(Debug, Args)]
pub struct IdleMemoryArgs {
    /// The relay's pid (its RSS is read from /proc).
    #[arg(long)]
    pub pid: u32,
    /// The relay's public listener.
    #[arg(long, value_parser = parse_target)]
    pub target: SocketAddr,
    /// The relay's admin listener.
    #[arg(long, value_parser = parse_target)]
    pub admin: SocketAddr,
    /// Which style's connections to hold.
    #[arg(long, value_enum, default_value_t = IdleStyle::Pair)]
    pub style: IdleStyle,
    /// How many to hold.
    #[arg(long, default_value_t = 15_000)]
    pub connections: usize,
    /// Connections opened and closed first, so fixed structures are in before the
    /// baseline (0: measure from a relay that has served nothing).
    #[arg(long, default_value_t = 100)]
    pub warm: usize,
    /// New connections per second while opening.
    #[arg(long, default_value_t = 5000.0)]
    pub connect_rate: f64,
    /// Source addresses for the idle connections (past one address's ports).
    #[arg(long, default_value = "127.0.0.1-127.0.0.8")]
    pub source_ips: String,
    /// Hold TLS connections (`wss://`) to a relay started with `--tls-cert`, trusting
    /// this PEM file (a test CA or the self-signed leaf). `--target` stays `host:port`.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// How long the N connections may take to come up, seconds (TLS handshakes on a
    /// busy box are slower than plain upgrades).
    #[arg(long, default_value_t = 120)]
    pub up_timeout: u64,
    /// A process in front of the relay (nginx's master and worker when it terminates TLS
    /// there): their RSS is summed and reported per connection beside the relay's.
    #[arg(long = "front-pid")]
    pub front_pids: Vec<u32>,
}

/// `chaos` flags (its own: it runs no plan, no monoio workers).
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// The relay's public listener (`host:port`, `ws://…` or `http://…`).
    #[arg(long, alias = "url", env = "SHARDRELAY_LOAD_TARGET", default_value = "127.0.0.1:8080", value_parser = parse_target)]
    pub target: SocketAddr,
    /// The relay's admin listener, for ticket minting (same forms).
    #[arg(long, env = "SHARDRELAY_LOAD_ADMIN", default_value = "127.0.0.1:9090", value_parser = parse_target)]
    pub admin: SocketAddr,
    /// Bearer token for the admin listener, when the relay has one.
    #[arg(long, env = "SHARDRELAY_LOAD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// How long to keep misbehaving.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many actions in all.
    #[arg(long)]
    pub count: Option<u64>,
    /// Actions per second in total (each opens one or two routes and abuses one).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Threads, each running one action at a time.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Styles to abuse, comma-separated (`echo` needs the relay's `--enable-echo`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "server-id,pair,session,ticket"
    )]
    pub styles: Vec<ChaosStyle>,
    /// The relay's `--max-message`: oversize messages are one byte over it.
    #[arg(long, default_value = "256KiB", value_parser = parse_size)]
    pub max_message: usize,
    /// Limit for a connect and for each wait on the relay's answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub io_timeout: Duration,
}

/// Flags of `attack`.
#[derive(Clone, Debug, Args)]
pub struct AttackArgs {
    /// The relay's public listener (any address: point it only at a relay you run).
    #[arg(long, alias = "url", env = "SHARDRELAY_LOAD_TARGET", default_value = "127.0.0.1:8080", value_parser = parse_target)]
    pub target: SocketAddr,
    /// How long every attack class keeps going.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Attack classes, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lone-pair-flood,ping-no-read,phone-flood,code-guess,idle-heads,health-flood"
    )]
    pub classes: Vec<AttackClass>,
    /// Scales every attack's connection count and rate, in percent.
    #[arg(long, default_value_t = 100)]
    pub rate_percent: u32,
    /// Limit for a connect and for each blocking write or read.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub io_timeout: Duration,
    /// Local IPv4 address every attacking socket binds to (e.g. 127.0.0.66), so that
    /// per-address limits see the attackers apart from the healthy clients; the kernel
    /// picks when absent.
    #[arg(long)]
    pub source_ip: Option<Ipv4Addr>,
}

/// What `attack` does to the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum AttackClass {
    /// A lone pair side (its peer never comes) flooding 1-byte and empty messages.
    LonePairFlood,
    /// A WebSocket client sending pings as fast as it can and never reading.
    PingNoRead,
    /// Phones flooding a binary that never reads.
    PhoneFlood,
    /// Session-code guessing from many short connections.
    CodeGuess,
    /// TCP connections that never send a request head.
    IdleHeads,
    /// `GET /health` as fast as a few clients can.
    HealthFlood,
}

impl AttackClass {
    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::LonePairFlood => "lone-pair-flood",
            Self::PingNoRead => "ping-no-read",
            Self::PhoneFlood => "phone-flood",
            Self::CodeGuess => "code-guess",
            Self::IdleHeads => "idle-heads",
            Self::HealthFlood => "health-flood",
        }
    }
}

/// Routes `chaos` abuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum ChaosStyle {
    /// A phone of a binary (`/v1/client`, `/v1/server`).
    ServerId,
    /// A pair side (`/?pair=`).
    Pair,
    /// A session browser (`/browser`, host on `/mac`).
    Session,
    /// A `/ws` browser of a `/ws` Mac (the session-code relay's second protocol).
    SessionWs,
    /// A ticket transfer (`PUT`/`GET /v1/relay`).
    Ticket,
    /// `/v1/echo`.
    Echo,
}

impl ChaosStyle {
    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::ServerId => "server-id",
            Self::Pair => "pair",
            Self::Session => "session",
            Self::SessionWs => "session-ws",
            Self::Ticket => "ticket",
            Self::Echo => "echo",
        }
    }
}

/// Source addresses for client sockets, used round-robin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceIps(pub Vec<IpAddr>);

/// Parses `500ms`, `30s`, `5m`, `1h` or plain seconds (`2.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("bad duration `{text}`"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit `{other}` (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("bad duration `{text}`"))
}

/// Parses `64`, `4KiB`, `1MiB`, `2GiB` (also `KB`/`MB`, taken as binary units).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .trim()
        .parse()
        .map_err(|_| format!("bad size `{text}`"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (KiB, MiB, GiB)")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("size `{text}` overflows"))
}

/// Parses a listener address: `host:port`, or a `ws://`/`http://` URL whose path is
/// ignored. Any address is accepted (operators drive a relay from other machines); a
/// host name resolves to its first IPv4 address (else its first). `wss://` and
/// `https://` (default port 443) make the run's connections TLS (`tls`).
pub fn parse_target(text: &str) -> Result<SocketAddr, String> {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, text),
    };
    let default_port = match scheme.as_deref() {
        None => None,
        Some("ws" | "http") => Some(80),
        Some("wss" | "https") => {
            crate::tls::request();
            Some(443)
        }
        Some(other) => return Err(format!("`{text}`: unknown scheme `{other}://`")),
    };
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    if authority.is_empty() {
        return Err(format!("`{text}`: no host"));
    }
    let with_port = match (has_port(authority), default_port) {
        (true, _) => authority.to_owned(),
        (false, Some(port)) => format!("{authority}:{port}"),
        (false, None) => return Err(format!("`{text}`: no port (host:port)")),
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("bad address `{text}`: {e}"))?
        .collect();
    // A name with both families (`localhost`): IPv4 first, as relays usually listen on
    // 0.0.0.0 or 127.0.0.1.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

/// Whether `host[:port]` (or `[v6]:port`) names a port.
fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':')
        }
        None => false,
    }
}

/// Parses `127.0.0.1-127.0.0.20` or `127.0.0.1,127.0.0.2`: local addresses to bind
/// (a loopback range for a loopback target, this host's addresses for a remote one).
pub fn parse_source_ips(text: &str) -> Result<SourceIps, String> {
    let mut ips = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => ips.extend(ipv4_range(from, to)?),
            None => ips.push(
                part.parse::<IpAddr>()
                    .map_err(|e| format!("bad IP `{part}`: {e}"))?,
            ),
        }
        if ips.len() > MAX_SOURCE_IPS {
            return Err(format!("more than {MAX_SOURCE_IPS} source IPs"));
        }
    }
    if ips.is_empty() {
        return Err("no source IPs".into());
    }
    Ok(SourceIps(ips))
}

/// Every IPv4 address from `from` to `to` inclusive.
fn ipv4_range(from: &str, to: &str) -> Result<Vec<IpAddr>, String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<Ipv4Addr>()
            .map_err(|e| format!("bad IPv4 `{s}`: {e}"))
    };
    let (low, high) = (u32::from(parse(from)?), u32::from(parse(to)?));
    if high < low || (high - low) as usize >= MAX_SOURCE_IPS {
        return Err(format!("bad range {from}-{to}"));
    }
    Ok((low..=high)
        .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("256KiB"), Ok(256 * 1024));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert!(parse_size("4XB").is_err());
    }

    #[test]
    fn any_target_address_and_ws_or_http_urls() {
        assert_eq!(parse_target("127.0.0.1:8080").unwrap().port(), 8080);
        assert_eq!(
            parse_target("ws://127.0.0.2:81/v1/server").unwrap().port(),
            81
        );
        assert_eq!(
            parse_target("http://127.0.0.1:9090/stats").unwrap(),
            "127.0.0.1:9090".parse().unwrap()
        );
        assert_eq!(
            parse_target("localhost:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        // Parsing only: no traffic goes anywhere in a unit test.
        assert_eq!(
            parse_target("10.0.0.1:80").unwrap(),
            "10.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            parse_target("ws://192.0.2.7/").unwrap(),
            "192.0.2.7:80".parse().unwrap()
        );
        assert_eq!(parse_target("[::1]:7").unwrap().port(), 7);
        assert_eq!(parse_target("ws://[::1]").unwrap().port(), 80);
    }

    #[test]
    fn unknown_schemes_are_refused() {
        // (`wss://` is not parsed here: it marks the whole process's run as TLS.)
        assert!(parse_target("ftp://127.0.0.1:21").is_err());
        assert!(parse_target("127.0.0.1").is_err(), "no port");
        assert!(parse_target("ws://").is_err());
    }

    #[test]
    fn source_ip_ranges() {
        let ips = parse_source_ips("127.0.0.1-127.0.0.20").unwrap().0;
        assert_eq!(ips.len(), 20);
        assert_eq!(ips[19], "127.0.0.20".parse::<IpAddr>().unwrap());
        assert_eq!(parse_source_ips("127.0.0.1,127.0.0.3").unwrap().0.len(), 2);
        assert!(parse_source_ips("not-an-ip").is_err());
        assert!(parse_source_ips("127.0.0.9-127.0.0.1").is_err());
    }

    #[test]
    fn attack_takes_its_classes_and_any_target_like_the_other_commands() {
        let cli = Cli::try_parse_from([
            "shardrelay-load",
            "attack",
            "--target",
            "127.0.0.1:9",
            "--classes",
            "lone-pair-flood,health-flood",
        ])
        .unwrap();
        match cli.command {
            Command::Attack(a) => assert_eq!(
                a.classes,
                vec![AttackClass::LonePairFlood, AttackClass::HealthFlood]
            ),
            other => panic!("parsed as {other:?}"),
        }
        // Operators point it at relays they run on other hosts (parsed only, never sent).
        let remote = Cli::try_parse_from(["shardrelay-load", "attack", "--target", "10.0.0.1:80"]);
        assert!(remote.is_ok(), "a remote target is accepted");
    }

    fn cli_styles(command: &Command) -> Option<Vec<ChaosStyle>> {
        match command {
            Command::Chaos(a) => Some(a.styles.clone()),
            _ => None,
        }
    }

    #[test]
    fn cli_parses_each_subcommand() {
        let cli = Cli::try_parse_from([
            "x",
            "server-id",
            "--binaries",
            "3",
            "--phones",
            "2",
            "--rate",
            "100",
            "--target",
            "127.0.0.1:1",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::ServerId(ref a) if a.binaries == 3 && a.common.rate == Some(100.0))
        );
        let both = Cli::try_parse_from(["x", "pair", "--rate", "1", "--inflight", "2"]);
        assert!(both.is_err(), "--rate and --inflight conflict");
        assert!(Cli::try_parse_from(["x", "idle", "--style", "echo"]).is_ok());
        assert!(Cli::try_parse_from(["x", "ticket", "--size", "1MiB", "--count", "3"]).is_ok());
        assert!(Cli::try_parse_from(["x", "session", "--oneway"]).is_ok());
        let chaos =
            Cli::try_parse_from(["x", "chaos", "--styles", "pair,echo", "--rate", "5"]).unwrap();
        assert!(
            matches!(cli_styles(&chaos.command), Some(s) if s == [ChaosStyle::Pair, ChaosStyle::Echo])
        );
    }
}
