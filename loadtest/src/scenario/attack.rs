//! `attack`: hostile clients for the soak (issue 15, acceptance point 10). Beside healthy
//! load, each attack class runs on its own few threads for `--duration`:
//!
//! * `lone-pair-flood` — a pair side whose peer never comes floods 1-byte and empty
//!   binary messages (the relay must bound what it holds for the absent peer);
//! * `ping-no-read` — a client on a small receive buffer sends pings as fast as it can
//!   and never reads the pongs;
//! * `phone-flood` — a binary on a small receive buffer never reads while its phones
//!   flood it with JSON;
//! * `code-guess` — many short `/browser` connections guessing session codes;
//! * `idle-heads` — TCP connections that never send a request head (reopened when the
//!   relay closes them at its handshake timeout);
//! * `health-flood` — `GET /health` from a few clients, paced.
//!
//! Every attack is bounded in connections and time and ends by resetting what it holds.
//! Like every command of the load generator it takes any `--target`: point it only at a
//! relay you run (the project's own tests and soaks use loopback). An attack does not judge the
//! relay: the soak judges it by its healthy clients and its resources. The report tallies
//! what the relay answered (close codes, statuses, how floods ended); the exit code is 1
//! only when an attack could not run at all (no action, or the relay stopped accepting).
//!
//! * [`floods`] — the WebSocket floods (lone pair, pings, phones).
//! * [`probes`] — the connection-rate attacks (guessing, idle heads, health).

pub mod floods;
pub mod probes;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::cli::{AttackArgs, AttackClass};

/// What one attack thread saw: actions run and outcomes by name.
#[derive(Debug, Default)]
pub struct Tally {
    /// Actions (connections opened, requests sent) run.
    pub actions: u64,
    /// What happened, by name (`closed_1008`, `status_200`, `blocked`, …).
    pub outcomes: BTreeMap<String, u64>,
    /// Connections refused outright (the relay not listening): makes the exit code 1.
    pub refused: u64,
}

impl Tally {
    /// Count one outcome.
    pub fn saw(&mut self, what: impl Into<String>) {
        *self.outcomes.entry(what.into()).or_default() += 1;
    }

    /// Add another thread's tally.
    fn absorb(&mut self, other: Tally) {
        self.actions += other.actions;
        self.refused += other.refused;
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
    }
}

/// What every attack thread needs.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The relay's public listener.
    pub target: SocketAddr,
    /// When every attack stops.
    pub until: Instant,
    /// Limit of one connect, blocking write or read.
    pub io_timeout: Duration,
    /// `--rate-percent` / 100.
    pub scale: f64,
    /// Route-key prefix, unique per run.
    pub tag: String,
    /// Local address every socket binds to (`--source-ip`), if any.
    pub source_ip: Option<std::net::Ipv4Addr>,
}

impl Ctx {
    /// `base` scaled by `--rate-percent`, at least 1.
    pub fn scaled(&self, base: usize) -> usize {
        ((base as f64 * self.scale).round() as usize).max(1)
    }

    /// Whether the run is over.
    pub fn over(&self) -> bool {
        Instant::now() >= self.until
    }

    /// Whether this thread should stop: the run is over, or the relay refused a
    /// connection (it is gone; hammering a closed port proves nothing).
    pub fn stop(&self, tally: &Tally) -> bool {
        self.over() || tally.refused > 0
    }
}

/// Threads per attack class and the function each runs.
type Attack = fn(&Ctx, usize) -> Tally;

/// How many threads a class runs, and what each does (the thread index is passed).
fn plan(class: AttackClass) -> (usize, Attack) {
    match class {
        AttackClass::LonePairFlood => (2, floods::lone_pair_flood),
        AttackClass::PingNoRead => (2, floods::ping_no_read),
        AttackClass::PhoneFlood => (1, floods::phone_flood),
        AttackClass::CodeGuess => (2, probes::code_guess),
        AttackClass::IdleHeads => (1, probes::idle_heads),
        AttackClass::HealthFlood => (2, probes::health_flood),
    }
}

/// Runs every class to `--duration`; prints the report; returns the exit code.
pub fn run(args: &AttackArgs) -> Result<i32, String> {
    if args.classes.is_empty() || args.rate_percent == 0 {
        return Err("attack needs a class and a positive --rate-percent".into());
    }
    let started = Instant::now();
    let ctx = Ctx {
        target: args.target,
        until: started + args.duration,
        io_timeout: args.io_timeout,
        scale: f64::from(args.rate_percent) / 100.0,
        tag: format!("attack-{}-", crate::plan::run_tag()),
        source_ip: args.source_ip,
    };
    let mut handles = Vec::new();
    for &class in &args.classes {
        let (threads, attack) = plan(class);
        for i in 0..threads {
            let ctx = ctx.clone();
            handles.push((class, std::thread::spawn(move || attack(&ctx, i))));
        }
    }
    let mut tallies: BTreeMap<AttackClass, Tally> = BTreeMap::new();
    for (class, handle) in handles {
        let part = handle.join().map_err(|_| "an attack thread panicked")?;
        tallies.entry(class).or_default().absorb(part);
    }
    Ok(report(&tallies, started.elapsed()))
}

/// Prints the tallies; 1 when a class ran nothing or met a refused connection.
fn report(tallies: &BTreeMap<AttackClass, Tally>, took: Duration) -> i32 {
    println!(
        "shardrelay-load attack — {} classes for {:.1} s",
        tallies.len(),
        took.as_secs_f64()
    );
    let mut code = 0;
    for (class, tally) in tallies {
        println!(
            "{:<16} {:>8} actions, {} refused",
            class.name(),
            tally.actions,
            tally.refused
        );
        for (what, n) in &tally.outcomes {
            println!("    {n:>8} × {what}");
        }
        if tally.actions == 0 || tally.refused > 0 {
            code = 1;
        }
    }
    println!(
        "result        {} (exit {code})",
        if code == 0 { "RAN" } else { "DID NOT RUN" }
    );
    code
}

/// Connects with a receive buffer of `rcvbuf` bytes (0: the default) and `timeout` on
/// the connect and every later read and write.
pub fn connect(ctx: &Ctx, rcvbuf: usize) -> Result<TcpStream, ErrorKind> {
    let socket =
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(|e| e.kind())?;
    if rcvbuf > 0 {
        // Before connect, so the window the peer sees is small from the first byte.
        let _ = socket.set_recv_buffer_size(rcvbuf);
    }
    if let Some(ip) = ctx.source_ip {
        let local = SocketAddr::from((ip, 0));
        socket.bind(&local.into()).map_err(|e| e.kind())?;
    }
    socket
        .connect_timeout(&ctx.target.into(), ctx.io_timeout)
        .map_err(|e| e.kind())?;
    let stream: TcpStream = socket.into();
    let _ = stream.set_read_timeout(Some(ctx.io_timeout));
    let _ = stream.set_write_timeout(Some(ctx.io_timeout));
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Counts a failed connect: refused means the relay is gone.
pub fn connect_failed(tally: &mut Tally, kind: ErrorKind) {
    if kind == ErrorKind::ConnectionRefused {
        tally.refused += 1;
    }
    tally.saw(format!("connect_{kind:?}"));
}

/// Writes as much of `buf[*at..]` as the socket takes within one write timeout,
/// advancing `*at` (wrapping to 0 at the end, so a flood repeats its batch without
/// ever cutting a frame). `Ok(false)`: the relay stopped reading for a whole timeout.
pub fn push(stream: &mut TcpStream, buf: &[u8], at: &mut usize) -> Result<bool, ErrorKind> {
    match stream.write(&buf[*at..]) {
        Ok(n) => {
            *at = (*at + n) % buf.len();
            Ok(true)
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
        Err(e) => Err(e.kind()),
    }
}

/// Paces an open loop at `per_second`, never past `until`.
pub struct Pacer {
    /// Time between two actions.
    interval: Duration,
    /// When the next action is due.
    due: Instant,
}

impl Pacer {
    /// A pacer starting now.
    pub fn new(per_second: f64) -> Pacer {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / per_second.max(0.001)),
            due: Instant::now(),
        }
    }

    /// Waits for the next slot (pacing, not synchronisation); false once `until` passed.
    pub fn next(&mut self, until: Instant) -> bool {
        self.due += self.interval;
        let now = Instant::now();
        if self.due > now {
            std::thread::sleep((self.due - now).min(until.saturating_duration_since(now)));
        } else {
            self.due = now;
        }
        Instant::now() < until
    }
}
