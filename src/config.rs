//! Command line and environment configuration: every flag of PROTOCOL §0, its default
//! and the reason for that default, plus `validate()` for combinations clap cannot check.
//!
//! Each flag can also be set from `SHARDRELAY_<NAME>` (e.g. `SHARDRELAY_GRACE=45s`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// The `shardrelay` command line.
#[derive(Debug, Parser)]
#[command(
    name = "shardrelay",
    version,
    about = "A sharded thread-per-core WebSocket and HTTP relay (server-id, pair, session code and ticket rendezvous)"
)]
pub struct Cli {
    /// An operator tool to run instead of the relay.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The relay's settings.
    #[command(flatten)]
    pub config: Config,
}

/// Operator tools bundled with the relay binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch a running relay: connections per kind, this interval's rates, refusals,
    /// drops and latency percentiles (redrawn in place on a terminal, one line per
    /// interval otherwise). Keeps retrying while the relay restarts.
    Stats {
        /// The relay's admin listener, `host:port` (e.g. `localhost:9090`).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: String,
        /// Bearer token for the admin listener, if it needs one.
        #[arg(long, env = "SHARDRELAY_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// File holding the admin bearer token (preferred over --admin-token).
        #[arg(long, env = "SHARDRELAY_ADMIN_TOKEN_FILE")]
        admin_token_file: Option<PathBuf>,
        /// Show this many screens and stop (0 = until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Time between screens.
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        interval: Duration,
    },
    /// Print a shell completion script (e.g. `shardrelay completions bash >
    /// /usr/share/bash-completion/completions/shardrelay`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; `shardrelay man > shardrelay.1`).
    Man,
    /// Print a complete `haproxy.cfg` for a cluster of relays (PROTOCOL §9): consistent
    /// hashing on `X-Pyrycode-Server` and `pair`, minted session codes and tickets routed
    /// back to their node, PROXY v2 and `/healthz` checks to every node.
    HaproxyConfig {
        /// Every node, `ID=HOST:PORT,…` (the same list each node gets as `--nodes`).
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<crate::cluster::Node>,
        /// The balancer's public address, `HOST:PORT`.
        #[arg(long)]
        listen: String,
        /// Terminate TLS at the balancer with this certificate chain (PEM).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's key (PEM): HAProxy reads it from `<cert>.key` or from the
        /// certificate file itself.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

/// Which io_uring/epoll driver each shard's runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverChoice {
    /// io_uring where the kernel allows it, epoll otherwise.
    Auto,
    /// io_uring only (start-up fails if it is unavailable).
    Uring,
    /// epoll only.
    Epoll,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// All relay settings. Durations take `500ms`, `30s`, `5m`, `1h` (a bare number is
/// seconds); sizes take `256KiB`, `4MiB` or plain bytes.
#[derive(Debug, Clone, Parser)]
pub struct Config {
    /// Public listener: WebSocket rendezvous, ticket relay, health probes.
    #[arg(long, env = "SHARDRELAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Admin listener (keep it on loopback): health, /stats, /metrics, ticket minting.
    #[arg(
        long,
        env = "SHARDRELAY_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    pub admin_listen: SocketAddr,

    /// File holding the admin bearer token; when set, admin routes other than the
    /// health probes need `Authorization: Bearer <token>`.
    #[arg(long, env = "SHARDRELAY_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// The admin token itself (prefer the file: environment variables leak into
    /// process listings of some tools).
    #[arg(long, env = "SHARDRELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Number of shards (pinned threads); default: the cores this process may use.
    #[arg(long, env = "SHARDRELAY_SHARDS")]
    pub shards: Option<usize>,

    /// Runtime driver for every shard.
    #[arg(long, env = "SHARDRELAY_DRIVER", value_enum, default_value_t = DriverChoice::Auto)]
    pub driver: DriverChoice,

    /// Time a client has to send its whole request head (slow-loris defence).
    #[arg(long, env = "SHARDRELAY_HANDSHAKE_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub handshake_timeout: Duration,

    /// Global cap on open client connections; default: the open-files limit less a
    /// reserve for listeners, logs and the admin side.
    #[arg(long, env = "SHARDRELAY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Per-IP connection-attempt rate (attempts per second, token bucket); off when unset.
    #[arg(long, env = "SHARDRELAY_PER_IP_RATE")]
    pub per_ip_rate: Option<f64>,

    /// Burst of the per-IP token bucket (default 2× the rate).
    #[arg(long, env = "SHARDRELAY_PER_IP_BURST")]
    pub per_ip_burst: Option<f64>,

    /// Failed session joins one source address (IPv4, or IPv6 /64) may make per minute,
    /// across all its connections (PROTOCOL §5); past it joins get `RATE_LIMITED` and
    /// `?code=` upgrades `429`. 0 turns the budget off. At 10, finding one of 100,000
    /// live codes among 28⁶ takes one address over 8 hours on average.
    #[arg(long, env = "SHARDRELAY_CODE_GUESSES_PER_IP", default_value_t = 10)]
    pub code_guesses_per_ip: u32,

    /// Largest WebSocket message accepted (reassembled); larger gets close 1009.
    #[arg(long, env = "SHARDRELAY_MAX_MESSAGE", value_parser = parse_size, default_value = "256KiB")]
    pub max_message: usize,

    /// Outbound queue bound per connection (back-pressure point).
    #[arg(long, env = "SHARDRELAY_MAX_QUEUE", value_parser = parse_size, default_value = "4MiB")]
    pub max_queue: usize,

    /// Write coalescing. 1 (the default) writes a connection's forwarded frames right
    /// after the read that produced them: the lowest latency. N > 1 lets them wait for
    /// up to N reads on the shard, or the end of the shard's loop turn if sooner, so the
    /// frames several senders queue for one receiver leave in one write: fewer syscalls
    /// and more throughput at saturation, at the cost of that wait.
    #[arg(long, env = "SHARDRELAY_FLUSH_AFTER_READS", default_value_t = 1)]
    pub flush_after_reads: u32,

    /// Payload bytes one ticket transfer holds between its PUT and its GET (the bounded
    /// window of PROTOCOL §6.2), allocated once per transfer. Larger windows mean larger
    /// reads and writes and faster transfers, at this much memory per transfer.
    #[arg(long, env = "SHARDRELAY_TICKET_WINDOW", value_parser = parse_size, default_value = "256KiB")]
    pub ticket_window: usize,

    /// Largest request head (request line, headers, blank line).
    #[arg(long, env = "SHARDRELAY_MAX_HEAD", value_parser = parse_size, default_value = "8KiB")]
    pub max_head: usize,

    /// Most header fields in one request head (`Host` counts).
    #[arg(long, env = "SHARDRELAY_MAX_HEADERS", default_value_t = 64)]
    pub max_headers: usize,

    /// Longest single header value.
    #[arg(long, env = "SHARDRELAY_MAX_HEADER_VALUE", value_parser = parse_size, default_value = "1KiB")]
    pub max_header_value: usize,

    /// How often the relay pings every connection.
    #[arg(long, env = "SHARDRELAY_PING_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub ping_interval: Duration,

    /// How long a pinged connection has to answer (a pong or any frame).
    #[arg(long, env = "SHARDRELAY_PONG_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub pong_timeout: Duration,

    /// On SIGTERM/SIGINT, how long transfers in flight may take to finish.
    #[arg(long, env = "SHARDRELAY_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,

    /// How long a live server-id holder has to answer a ping when a second binary claims it.
    #[arg(long, env = "SHARDRELAY_TAKEOVER_PROBE", value_parser = parse_duration, default_value = "10s")]
    pub takeover_probe: Duration,

    /// Phones one server-id may hold at once (16: a person's devices, with room).
    #[arg(long, env = "SHARDRELAY_MAX_PHONES_PER_SERVER", default_value_t = 16)]
    pub max_phones_per_server: usize,

    /// Browsers one `/ws` session (one Mac's code) may hold at once (16: a person's
    /// screens and devices watching one terminal, with room).
    #[arg(
        long,
        env = "SHARDRELAY_MAX_BROWSERS_PER_SESSION",
        default_value_t = 16
    )]
    pub max_browsers_per_session: usize,

    /// How long a server-id slot waits for its binary to come back.
    #[arg(long, env = "SHARDRELAY_GRACE", value_parser = parse_duration, default_value = "30s")]
    pub grace: Duration,

    /// How long one side of a pair may wait for the other (from the pair's creation).
    #[arg(long, env = "SHARDRELAY_PAIR_TTL", value_parser = parse_duration, default_value = "5m")]
    pub pair_ttl: Duration,

    /// How long an unjoined session code stays joinable.
    #[arg(long, env = "SHARDRELAY_CODE_TTL", value_parser = parse_duration, default_value = "5m")]
    pub code_ttl: Duration,

    /// Unfinished tickets one workspace may hold.
    #[arg(
        long,
        env = "SHARDRELAY_MAX_RELAYS_PER_WORKSPACE",
        default_value_t = 16
    )]
    pub max_relays_per_workspace: usize,

    /// Serve the diagnostic echo route `GET /v1/echo` (conformance suites).
    #[arg(long, env = "SHARDRELAY_ENABLE_ECHO")]
    pub enable_echo: bool,

    /// Process-wide bound on what clients can make the relay hold (queued frames, early
    /// pair messages, reassembly, heads, ticket windows; PROTOCOL §2.1). Default: half the
    /// memory the process may use (its cgroup limit, else physical memory).
    #[arg(long, env = "SHARDRELAY_MEMORY_LIMIT", value_parser = parse_size)]
    pub memory_limit: Option<usize>,

    /// How long a connection may go without draining its outbound queue (or stay above
    /// its memory share at the limit) before it is closed with `1008 "not reading"`.
    #[arg(long, env = "SHARDRELAY_STALL_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub stall_timeout: Duration,

    /// Every public connection must open with a PROXY protocol header (v1 or v2) sent by
    /// one of `--trusted-proxies`; its source address is then the client address for
    /// admission, per-IP limits, guessing budgets and logs (PROTOCOL §1.2). A connection
    /// from another address, or with a missing, malformed or late header, is closed
    /// without an answer (`rejected.proxy_header`).
    #[arg(long, env = "SHARDRELAY_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// The balancers in front, as CIDR blocks or addresses, comma-separated
    /// (`10.0.0.0/8,2001:db8::/32,127.0.0.1`): the only peers whose PROXY header or
    /// `X-Forwarded-For` is believed.
    #[arg(long, env = "SHARDRELAY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::proxy::Cidr>,

    /// For requests whose socket peer (or PROXY source) is a trusted proxy, the client
    /// address is the right-most `X-Forwarded-For` address that is not itself a trusted
    /// proxy; from anyone else the header is ignored (PROTOCOL §1.2).
    #[arg(long, env = "SHARDRELAY_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// PEM certificate chain (leaf first) for TLS on the public listener (PROTOCOL §1.1);
    /// needs `--tls-key`. Reread on `SIGHUP`.
    #[arg(long, env = "SHARDRELAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching `--tls-cert`. Reread on `SIGHUP`.
    #[arg(long, env = "SHARDRELAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// This node's id in a cluster (PROTOCOL §9); needs `--nodes`. Without both the
    /// relay is a single node.
    #[arg(long, env = "SHARDRELAY_NODE_ID", requires = "nodes")]
    pub node_id: Option<String>,

    /// Every node of the cluster, this one included, `ID=HOST:PORT,…` at the address the
    /// other nodes reach its public listener on; needs `--node-id`.
    #[arg(
        long,
        env = "SHARDRELAY_NODES",
        value_delimiter = ',',
        requires = "node_id"
    )]
    pub nodes: Vec<crate::cluster::Node>,

    /// Log level: error, warn, info, debug, trace (or a tracing filter directive).
    #[arg(long, env = "SHARDRELAY_LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "SHARDRELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Descriptors kept back from the open-files limit whatever the shard count: standard
/// streams, the admin listener, the signal thread, log files, and room for admin
/// connections (health probes, `/stats`, ticket minting) when the public side is at its
/// cap (PROTOCOL §2.1).
const FD_RESERVE: usize = 100;

/// Descriptors each shard holds itself: its public listener, its runtime's io_uring or
/// epoll descriptor and eventfds, its inbox wake-up descriptor; with room.
const FD_PER_SHARD: usize = 8;

/// Why a configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--node-id`/`--nodes` do not describe a cluster.
    #[error(transparent)]
    Cluster(crate::cluster::NodeError),
    /// A value out of its range.
    #[error("--{flag}: {why}")]
    Invalid {
        /// The flag's name.
        flag: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// The admin token file could not be read.
    #[error("--admin-token-file {path}: {source}")]
    TokenFile {
        /// The path given.
        path: String,
        /// The read error.
        source: std::io::Error,
    },
}

impl Config {
    /// Check combinations and ranges clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |flag, why| Err(ConfigError::Invalid { flag, why });
        if self.shards == Some(0) {
            return invalid("shards", "must be at least 1");
        }
        if self.max_message < 126 {
            return invalid("max-message", "must be at least 126 bytes");
        }
        if self.max_queue < self.max_message {
            return invalid("max-queue", "must be at least --max-message");
        }
        if !(1..=4096).contains(&self.flush_after_reads) {
            return invalid("flush-after-reads", "must be 1..=4096");
        }
        if !(64 * 1024..=64 << 20).contains(&self.ticket_window) {
            return invalid("ticket-window", "must be 64KiB..=64MiB");
        }
        if self.max_head < 256 {
            return invalid("max-head", "must be at least 256 bytes");
        }
        if self.max_headers == 0 {
            return invalid("max-headers", "must be at least 1");
        }
        if self.ping_interval.is_zero() || self.pong_timeout.is_zero() {
            return invalid("ping-interval", "heartbeat durations must be positive");
        }
        if self.handshake_timeout.is_zero() {
            return invalid("handshake-timeout", "must be positive");
        }
        if self.max_phones_per_server == 0 {
            return invalid("max-phones-per-server", "must be at least 1");
        }
        if matches!(self.memory_limit, Some(m) if m < self.max_queue) {
            return invalid("memory-limit", "must be at least --max-queue");
        }
        if self.stall_timeout.is_zero() {
            return invalid("stall-timeout", "must be positive");
        }
        if self.max_browsers_per_session == 0 {
            return invalid("max-browsers-per-session", "must be at least 1");
        }
        if matches!(self.per_ip_rate, Some(r) if r <= 0.0 || !r.is_finite()) {
            return invalid("per-ip-rate", "must be a positive number");
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return invalid(
                "proxy-protocol",
                "needs --trusted-proxies (the balancers' addresses)",
            );
        }
        if self.trust_forwarded_for && self.trusted_proxies.is_empty() {
            return invalid(
                "trust-forwarded-for",
                "needs --trusted-proxies (the balancers' addresses)",
            );
        }
        self.cluster()?;
        Ok(())
    }

    /// This node's cluster (`--node-id`, `--nodes`), or None for a single node.
    pub fn cluster(&self) -> Result<Option<crate::cluster::Cluster>, ConfigError> {
        match &self.node_id {
            None => Ok(None),
            Some(me) => crate::cluster::Cluster::new(me, &self.nodes)
                .map(Some)
                .map_err(ConfigError::Cluster),
        }
    }

    /// The shard count to run: `--shards`, else the cores this process may use.
    pub fn shard_count(&self) -> usize {
        self.shards.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// The global connection cap for `shards` shards under an open-files limit of
    /// `open_files`: `--max-connections`, but never more than the descriptors left after
    /// the reserve (so public connections cannot starve the admin listener or make
    /// `accept` fail); by default all of those.
    pub fn connection_cap(&self, shards: usize, open_files: usize) -> usize {
        let reserve = FD_RESERVE.saturating_add(FD_PER_SHARD.saturating_mul(shards));
        let room = open_files.saturating_sub(reserve).max(1);
        self.max_connections.map_or(room, |asked| asked.min(room))
    }

    /// The process-wide memory limit: `--memory-limit`, else half of what the process
    /// may use.
    pub fn memory_cap(&self) -> usize {
        self.memory_limit
            .unwrap_or_else(crate::memory::default_limit)
    }

    /// The admin bearer token, from `--admin-token-file` or `--admin-token`.
    pub fn load_admin_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(path) = &self.admin_token_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
                path: path.display().to_string(),
                source,
            })?;
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(ConfigError::Invalid {
                    flag: "admin-token-file",
                    why: "the file is empty",
                });
            }
            return Ok(Some(token));
        }
        Ok(self.admin_token.clone().filter(|t| !t.is_empty()))
    }

    /// The tick period of each shard's housekeeping task: fine enough for the shortest
    /// configured timer (an eighth of it), never busier than 10 ms nor coarser than 500 ms.
    pub fn tick_period(&self) -> Duration {
        let shortest = [
            self.ping_interval,
            self.pong_timeout,
            self.takeover_probe,
            self.grace,
            self.pair_ttl,
            self.code_ttl,
            self.stall_timeout,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(1));
        (shortest / 8).clamp(Duration::from_millis(10), Duration::from_millis(500))
    }
}

/// Parse `500ms`, `30s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 30s, 5m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "us" | "µs" => value / 1_000_000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit `{other}`")),
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parse `256KiB`, `4MiB`, `1GiB`, `64KB` or plain bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 256KiB or 4MiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}`")),
    };
    value
        .checked_mul(scale)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// The level names `--log-level` accepts, alone or after `target=`.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Why a `--log-level` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    /// A directive whose level is not one of [`LEVELS`].
    #[error("unknown log level {0:?} (expected one of off, error, warn, info, debug, trace, or target=level)")]
    UnknownLevel(String),
    /// An empty value or directive.
    #[error("empty log level")]
    Empty,
}

/// Clap value parser for `--log-level`: a level, or comma-separated `target=level`
/// directives (at most one bare level). A typo such as `warning` is an error instead of
/// a target filter that silently turns every line off.
pub fn parse_log_level(value: &str) -> Result<String, LogLevelError> {
    if value.trim().is_empty() {
        return Err(LogLevelError::Empty);
    }
    for directive in value.split(',') {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level,
            Some(_) => return Err(LogLevelError::UnknownLevel(directive.to_owned())),
            None => directive,
        };
        let level = level.trim().to_ascii_lowercase();
        if level.is_empty() {
            return Err(LogLevelError::Empty);
        }
        if !LEVELS.contains(&level.as_str()) {
            return Err(LogLevelError::UnknownLevel(directive.to_owned()));
        }
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_parse_in_every_unit() {
        assert_eq!(parse_size("256KiB"), Ok(256 * 1024));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("4XB").is_err());
    }

    #[test]
    fn connection_cap_keeps_a_descriptor_reserve() {
        let cli = Cli::parse_from(["shardrelay"]);
        assert_eq!(cli.config.connection_cap(2, 1024), 1024 - 100 - 16);
        assert_eq!(cli.config.connection_cap(64, 100), 1, "never zero");
        let cli = Cli::parse_from(["shardrelay", "--max-connections", "50"]);
        assert_eq!(cli.config.connection_cap(2, 1024), 50);
        let cli = Cli::parse_from(["shardrelay", "--max-connections", "5000"]);
        assert_eq!(
            cli.config.connection_cap(2, 1024),
            908,
            "clamped to the fds"
        );
    }

    #[test]
    fn code_guesses_default_to_10_per_minute() {
        let cli = Cli::parse_from(["shardrelay"]);
        assert_eq!(cli.config.code_guesses_per_ip, 10);
    }

    #[test]
    fn defaults_validate() {
        let cli = Cli::parse_from(["shardrelay"]);
        cli.config.validate().expect("defaults are valid");
        assert_eq!(cli.config.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(cli.config.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(cli.config.max_message, 256 * 1024);
        assert_eq!(cli.config.flush_after_reads, 1, "latency first by default");
        assert_eq!(cli.config.ticket_window, 256 * 1024);
        assert_eq!(cli.config.stall_timeout, Duration::from_secs(30));
        assert!(cli.config.memory_cap() > 0);
        assert_eq!(cli.config.max_browsers_per_session, 16);
    }

    #[test]
    fn memory_limit_must_hold_one_queue() {
        check_range(
            "memory-limit",
            "must be at least --max-queue",
            &[("1MiB", false), ("4MiB", true), ("32MiB", true)],
        );
    }

    #[test]
    fn max_browsers_per_session_must_be_at_least_1() {
        check_range(
            "max-browsers-per-session",
            "must be at least 1",
            &[("0", false), ("1", true), ("16", true)],
        );
    }

    /// `flag` accepts the first `cases` marked true and refuses the others with
    /// `--flag: why`.
    fn check_range(flag: &str, why: &str, cases: &[(&str, bool)]) {
        for &(value, ok) in cases {
            let cli = Cli::parse_from(["shardrelay", &format!("--{flag}"), value]);
            match cli.config.validate() {
                Ok(()) => assert!(ok, "--{flag} {value} accepted"),
                Err(e) => {
                    assert!(!ok, "--{flag} {value} refused: {e}");
                    assert_eq!(e.to_string(), format!("--{flag}: {why}"));
                }
            }
        }
    }

    #[test]
    fn proxy_flags_need_trusted_proxies() {
        for flag in ["--proxy-protocol", "--trust-forwarded-for"] {
            let cli = Cli::parse_from(["shardrelay", flag]);
            let err = cli.config.validate().expect_err(flag);
            assert_eq!(
                err.to_string(),
                format!("{flag}: needs --trusted-proxies (the balancers' addresses)")
            );
            let cli = Cli::parse_from(["shardrelay", flag, "--trusted-proxies", "10.0.0.0/8,::1"]);
            cli.config.validate().expect(flag);
            assert_eq!(cli.config.trusted_proxies.len(), 2);
        }
        let bad = Cli::try_parse_from(["shardrelay", "--trusted-proxies", "10.0.0.0/40"]);
        assert!(bad.is_err(), "a bad block is refused at parse time");
    }

    #[test]
    fn ticket_window_must_be_64kib_to_64mib() {
        check_range(
            "ticket-window",
            "must be 64KiB..=64MiB",
            &[
                ("32KiB", false),
                ("64KiB", true),
                ("64MiB", true),
                ("65MiB", false),
            ],
        );
    }

    #[test]
    fn flush_after_reads_must_be_1_to_4096() {
        check_range(
            "flush-after-reads",
            "must be 1..=4096",
            &[("0", false), ("1", true), ("4096", true), ("4097", false)],
        );
    }

    #[test]
    fn log_levels_and_directives_parse() {
        for ok in [
            "info",
            "DEBUG",
            "warn",
            "off",
            "shardrelay=debug",
            "info,monoio=warn",
        ] {
            assert!(parse_log_level(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn typos_are_refused_not_read_as_targets() {
        for bad in ["warning", "", "verbose", "x=loud", "=info", "info,"] {
            assert!(parse_log_level(bad).is_err(), "{bad:?}");
        }
    }
}
