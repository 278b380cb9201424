//! A run's plan: the CLI's flags checked and turned into numbers the workers use
//! (units of connections, streams, pacing). A *unit* is the group of connections set
//! up together and placed on one worker: a binary with its phones, a pair, a session,
//! an echo connection, a ticket transfer slot.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Command, Common, IdleStyle};

/// Default message size for WebSocket styles: a small chat-like message.
const DEFAULT_MESSAGE_SIZE: usize = 64;
/// Default ticket body: big enough to exercise the relay's 256 KiB window.
const DEFAULT_TICKET_SIZE: usize = 1 << 20;
/// Default open-loop rate when neither --rate nor --inflight is given.
const DEFAULT_RATE: f64 = 1000.0;
/// Largest WebSocket message we send: the relay's default `--max-message`.
const MAX_MESSAGE: usize = 256 * 1024;
/// Largest session message the relay forwards (PROTOCOL §5).
const MAX_SESSION_MESSAGE: usize = 64 * 1024;
/// The relay's default phones-per-server cap (PROTOCOL §3.2).
const RELAY_PHONE_CAP: usize = 16;
/// The relay's default `--max-browsers-per-session` (`/ws`).
const RELAY_BROWSER_CAP: usize = 16;

/// Which routes the run uses and how many of each.
#[derive(Clone, Debug)]
pub enum Style {
    /// `binaries` server-ids with `phones` phones each.
    ServerId {
        /// Binaries (units).
        binaries: usize,
        /// Phones per binary.
        phones: usize,
        /// Binaries send to phones (else phones send and binaries echo).
        fanout: bool,
        /// Server-id prefix, unique per run.
        prefix: String,
    },
    /// `pairs` pairs; B echoes unless `oneway`.
    Pair {
        /// Pairs (units).
        pairs: usize,
        /// B only receives.
        oneway: bool,
        /// Pair-code prefix, unique per run.
        prefix: String,
    },
    /// `sessions` host+browser sessions; the browser echoes unless `oneway`.
    Session {
        /// Sessions (units).
        sessions: usize,
        /// The browser only receives.
        oneway: bool,
    },
    /// `sessions` Macs on `/ws`, each fanning binary probes out to `browsers` browsers.
    SessionWs {
        /// Macs (units).
        sessions: usize,
        /// Browsers per Mac.
        browsers: usize,
    },
    /// `/v1/echo` connections (idle only).
    Echo {
        /// Connections (units).
        connections: usize,
    },
    /// Ticket transfers, `slots` at a time.
    Ticket {
        /// Concurrent transfers (units).
        slots: usize,
        /// Total transfers, if bounded by count rather than time.
        count: Option<u64>,
        /// Workspace prefix, unique per run (the relay caps 16 per workspace).
        prefix: String,
    },
}

impl Style {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ServerId { .. } => "server-id",
            Self::Pair { .. } => "pair",
            Self::Session { .. } => "session",
            Self::SessionWs { .. } => "session-ws",
            Self::Echo { .. } => "echo",
            Self::Ticket { .. } => "ticket",
        }
    }

    /// Units in the run.
    pub fn units(&self) -> usize {
        match self {
            Self::ServerId { binaries, .. } => *binaries,
            Self::Pair { pairs, .. } => *pairs,
            Self::Session { sessions, .. } | Self::SessionWs { sessions, .. } => *sessions,
            Self::Echo { connections } => *connections,
            Self::Ticket { slots, .. } => *slots,
        }
    }

    /// Connections per unit.
    pub fn conns_per_unit(&self) -> usize {
        match self {
            Self::ServerId { phones, .. } => 1 + phones,
            Self::SessionWs { browsers, .. } => 1 + browsers,
            Self::Pair { .. } | Self::Session { .. } | Self::Ticket { .. } => 2,
            Self::Echo { .. } => 1,
        }
    }

    /// Measured sender→receiver streams per unit.
    pub fn streams_per_unit(&self) -> usize {
        match self {
            Self::ServerId { phones, .. } => *phones,
            _ => 1,
        }
    }

    /// One line describing the shape, for reports.
    pub fn describe(&self) -> String {
        match self {
            Self::ServerId {
                binaries,
                phones,
                fanout,
                ..
            } => format!(
                "{binaries} binaries × {phones} phones, {}",
                if *fanout {
                    "binaries fan out"
                } else {
                    "phones send, binaries echo"
                }
            ),
            Self::Pair { pairs, oneway, .. } => {
                format!(
                    "{pairs} pairs, {}",
                    if *oneway {
                        "A → B"
                    } else {
                        "A → B → A echo"
                    }
                )
            }
            Self::Session { sessions, oneway } => format!(
                "{sessions} sessions, {}",
                if *oneway {
                    "host → browser"
                } else {
                    "host → browser → host echo"
                }
            ),
            Self::SessionWs { sessions, browsers } => {
                format!("{sessions} Macs × {browsers} browsers, Macs fan out binary")
            }
            Self::Echo { connections } => format!("{connections} echo connections"),
            Self::Ticket { slots, count, .. } => match count {
                Some(n) => format!("{n} transfers, {slots} at a time"),
                None => format!("{slots} transfers at a time"),
            },
        }
    }
}

/// How sends are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Open loop: this many messages (or transfers) per second in total.
    Rate(f64),
    /// Closed loop: this many outstanding per stream.
    Inflight(u32),
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Net {
    /// The relay's public listener.
    pub target: SocketAddr,
    /// The relay's admin listener.
    pub admin: SocketAddr,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// Source addresses, round-robin; empty: let the kernel choose.
    pub source_ips: Vec<IpAddr>,
    /// Limit for one connect plus upgrade.
    pub connect_timeout: Duration,
    /// `--retry-rate-limited`: a `429` (the relay's `--per-ip-rate`) is retried after a
    /// backoff instead of failing the connection.
    pub retry_rate_limited: bool,
}

/// Everything a run needs, validated.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Routes and counts.
    pub style: Style,
    /// Hold connections without traffic (memory measurement).
    pub idle: bool,
    /// Addresses and connect limits.
    pub net: Net,
    /// Worker threads.
    pub workers: usize,
    /// Pacing.
    pub pace: Pace,
    /// Message (or ticket body) size in bytes.
    pub size: usize,
    /// Measured window.
    pub duration: Duration,
    /// Warm-up before the measured window.
    pub warmup: Duration,
    /// Wait for stragglers after the last send.
    pub drain: Duration,
    /// Connections per second during the ramp; 0 = unpaced.
    pub connect_rate: f64,
    /// Connection attempts in flight per worker.
    pub connect_concurrency: usize,
    /// Limit for the whole ramp.
    pub setup_timeout: Duration,
    /// JSON report path (the `.hgrm` distribution goes beside it).
    pub json: Option<PathBuf>,
    /// A previous run's JSON report to compare with (`--compare`).
    pub compare: Option<PathBuf>,
    /// `--fail-if` thresholds.
    pub fail_if: Vec<crate::threshold::Threshold>,
    /// Fetch `/stats` at the start and the end of the measured window.
    pub relay_stats: bool,
    /// Measure a direct loopback round trip beside the run (`--direct-probe`).
    pub direct_probe: bool,
}

impl Plan {
    /// Builds and checks a plan from the parsed command line.
    pub fn from_command(command: Command) -> Result<Self, String> {
        let tag = run_tag();
        let (style, idle, common) = match command {
            Command::ServerId(a) => (
                Style::ServerId {
                    binaries: a.binaries,
                    phones: a.phones,
                    fanout: a.fanout,
                    prefix: a.server_prefix.unwrap_or_else(|| format!("load-{tag}-")),
                },
                false,
                a.common,
            ),
            Command::Pair(a) => (
                Style::Pair {
                    pairs: a.pairs,
                    oneway: a.oneway,
                    prefix: format!("load-{tag}-"),
                },
                false,
                a.common,
            ),
            Command::Session(a) => (
                Style::Session {
                    sessions: a.sessions,
                    oneway: a.oneway,
                },
                false,
                a.common,
            ),
            Command::SessionWs(a) => (
                Style::SessionWs {
                    sessions: a.sessions,
                    browsers: a.browsers,
                },
                false,
                a.common,
            ),
            Command::Ticket(a) => (
                Style::Ticket {
                    slots: a.connections,
                    count: a.count,
                    prefix: format!("load-{tag}-"),
                },
                false,
                a.common,
            ),
            Command::Idle(a) => (
                idle_style(a.style, a.connections, a.phones, &tag),
                true,
                a.common,
            ),
            Command::Chaos(_) => return Err("chaos runs without a plan (run::command)".into()),
            Command::Attack(_) => return Err("attack runs without a plan (run::command)".into()),
            Command::Measure(_) => return Err("measure runs without a plan (run::command)".into()),
        };
        crate::tls::configure(common.tls_ca.as_deref(), common.tls_insecure)?;
        let plan = Self::assemble(style, idle, common);
        plan.check()?;
        Ok(plan)
    }

    /// Fills in defaults from the shared flags.
    fn assemble(style: Style, idle: bool, common: Common) -> Self {
        if common.accept_masked {
            crate::ws::frame::set_accept_masked();
        }
        let default_size = match style {
            Style::Ticket { .. } => DEFAULT_TICKET_SIZE,
            _ => DEFAULT_MESSAGE_SIZE,
        };
        let pace = match (common.rate, common.inflight, &style) {
            (_, Some(k), _) => Pace::Inflight(k),
            (Some(rate), None, _) => Pace::Rate(rate),
            // Transfers back to back: a ticket "rate" only makes sense when asked for.
            (None, None, Style::Ticket { .. }) => Pace::Inflight(1),
            (None, None, _) => Pace::Rate(DEFAULT_RATE),
        };
        let workers = common
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Self {
            style,
            idle,
            net: Net {
                target: common.target,
                admin: common.admin,
                admin_token: common.admin_token,
                source_ips: common.source_ips.map(|s| s.0).unwrap_or_default(),
                connect_timeout: common.connect_timeout,
                retry_rate_limited: common.retry_rate_limited,
            },
            workers: workers.max(1),
            pace,
            size: common.size.unwrap_or(default_size),
            duration: common.duration,
            warmup: if idle { Duration::ZERO } else { common.warmup },
            drain: common.drain,
            connect_rate: common.connect_rate,
            connect_concurrency: common.connect_concurrency,
            setup_timeout: common.setup_timeout,
            json: common.json,
            compare: common.compare,
            fail_if: common.fail_if,
            relay_stats: !common.no_relay_stats,
            direct_probe: common.direct_probe,
        }
    }

    /// Rejects plans that cannot run.
    fn check(&self) -> Result<(), String> {
        if self.style.units() == 0 {
            return Err("nothing to connect: the count is zero".into());
        }
        match self.pace {
            Pace::Rate(r) if !(r > 0.0 && r.is_finite()) => return Err("--rate must be > 0".into()),
            Pace::Inflight(0) => return Err("--inflight must be ≥ 1".into()),
            _ => {}
        }
        if !(self.connect_rate >= 0.0 && self.connect_rate.is_finite()) {
            return Err("--connect-rate must be ≥ 0".into());
        }
        self.check_size()?;
        if let Style::ServerId { phones, .. } = self.style {
            if phones > RELAY_PHONE_CAP {
                eprintln!("warning: {phones} phones per binary exceeds the relay's default cap of {RELAY_PHONE_CAP}");
            }
        }
        if let Style::SessionWs { browsers, .. } = self.style {
            if browsers == 0 {
                return Err("--browsers must be ≥ 1".into());
            }
            if browsers > RELAY_BROWSER_CAP {
                eprintln!("warning: {browsers} browsers per Mac exceeds the relay's default cap of {RELAY_BROWSER_CAP}");
            }
        }
        Ok(())
    }

    /// Message sizes the relay accepts.
    fn check_size(&self) -> Result<(), String> {
        let max = match self.style {
            Style::Ticket { .. } => return Ok(()),
            Style::Session { .. } => MAX_SESSION_MESSAGE,
            _ => MAX_MESSAGE,
        };
        if self.size > max {
            return Err(format!(
                "--size {} is over the relay's {max}-byte message limit",
                self.size
            ));
        }
        Ok(())
    }

    /// Total connections the run opens.
    pub fn total_conns(&self) -> usize {
        self.style.units() * self.style.conns_per_unit()
    }

    /// Units placed on worker `w` (unit `i` goes to worker `i % workers`).
    pub fn units_of(&self, worker: usize) -> impl Iterator<Item = usize> {
        (worker..self.style.units()).step_by(self.workers)
    }

    /// Time between two sends of one stream in open loop, in ns.
    pub fn stream_interval_ns(&self) -> Option<u64> {
        let Pace::Rate(rate) = self.pace else {
            return None;
        };
        let streams = (self.style.units() * self.style.streams_per_unit()).max(1) as f64;
        Some((streams / rate * 1e9).max(1.0) as u64)
    }
}

/// The idle run's style, sized to about `connections` connections.
fn idle_style(style: IdleStyle, connections: usize, phones: usize, tag: &str) -> Style {
    let prefix = format!("load-{tag}-");
    match style {
        IdleStyle::ServerId => Style::ServerId {
            binaries: connections.div_ceil(1 + phones),
            phones,
            fanout: false,
            prefix,
        },
        IdleStyle::Pair => Style::Pair {
            pairs: connections.div_ceil(2),
            oneway: false,
            prefix,
        },
        IdleStyle::Session => Style::Session {
            sessions: connections.div_ceil(2),
            oneway: false,
        },
        IdleStyle::Echo => Style::Echo { connections },
    }
}

/// 8 random hex digits naming this run's server-ids, pair codes and workspaces, so
/// runs never collide with a previous run's slots still in their grace window.
pub(crate) fn run_tag() -> String {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        // Without OS randomness, the time is unique enough between runs.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        Plan::from_command(Cli::try_parse_from(all).map_err(|e| e.to_string())?.command)
    }

    #[test]
    fn server_id_shape_and_pacing() {
        let p = plan(&[
            "server-id",
            "--binaries",
            "10",
            "--phones",
            "4",
            "--rate",
            "2000",
            "--workers",
            "3",
        ])
        .unwrap();
        assert_eq!(p.total_conns(), 50);
        // 40 streams at 2000/s in total: each stream every 20 ms.
        assert_eq!(p.stream_interval_ns(), Some(20_000_000));
        let mine: Vec<usize> = p.units_of(1).collect();
        assert_eq!(mine, vec![1, 4, 7]);
    }

    #[test]
    fn defaults_and_limits() {
        let p = plan(&["ticket"]).unwrap();
        assert_eq!(p.size, 1 << 20);
        assert_eq!(p.pace, Pace::Inflight(1));
        assert_eq!(plan(&["pair"]).unwrap().pace, Pace::Rate(1000.0));
        assert!(plan(&["session", "--size", "128KiB"]).is_err());
        assert!(plan(&["pair", "--pairs", "0"]).is_err());
        let ws = plan(&["session-ws", "--sessions", "2", "--browsers", "16"]).unwrap();
        assert_eq!((ws.total_conns(), ws.style.streams_per_unit()), (34, 1));
        assert!(plan(&["session-ws", "--browsers", "0"]).is_err());
        assert!(plan(&["pair", "--inflight", "0"]).is_err());
        let idle = plan(&["idle", "--connections", "100", "--phones", "4"]).unwrap();
        assert_eq!(idle.style.units(), 20);
        assert!(idle.idle);
    }
}
