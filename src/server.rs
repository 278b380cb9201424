//! Process start and stop: bind the listeners (one exclusive public socket shared by
//! every shard through duplicated descriptors, see `listen`), spawn one pinned thread per shard, print the
//! ready line, wait for SIGTERM/SIGINT, broadcast shutdown, and join.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{Config, ConfigError, DriverChoice};
use crate::http::admission::RateLimiter;
use crate::listen::{self, BindError};
use crate::shard::inbox::{wake_channel, WakeReceiver};
use crate::shard::{self, Global, InboxMsg, ShardSeed};

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound (another process holds it: exit code 2).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// io_uring was demanded and is not available.
    #[error("--driver uring: io_uring is not available on this kernel")]
    NoUring,
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A shard thread failed.
    #[error("shard {id} failed: {why}")]
    Shard {
        /// Shard index.
        id: usize,
        /// What failed.
        why: String,
    },
}

impl ServerError {
    /// The process exit code: 2 when an address is held by another process (so a
    /// supervisor or script can tell a double start from a crash), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Bind(BindError::InUse { .. }) => 2,
            _ => 1,
        }
    }
}

/// Run the relay until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), ServerError> {
    config.validate()?;
    let admin_token = config.load_admin_token()?;
    let driver = driver_name(config.driver)?;
    let shards = config.shard_count();
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(ServerError::Signals)?;
    let public = listen::bind("public", config.listen)?;
    let public_addr = listen::bound_addr("public", config.listen, &public)?;
    let admin = listen::bind("admin", config.admin_listen)?;
    let admin_addr = listen::bound_addr("admin", config.admin_listen, &admin)?;
    let publics = listen::share("public", public_addr, public, shards)?;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| wake_channel()).unzip();
    let global = Arc::new(Global {
        rate_limiter: config.per_ip_rate.map(|rate| {
            let burst = config.per_ip_burst.unwrap_or(rate * 2.0);
            Mutex::new(RateLimiter::new(rate, burst))
        }),
        max_connections: config.connection_cap(),
        hasher: random_hasher(),
        inboxes: senders,
        open: Default::default(),
        started: Instant::now(),
        admin_token,
        driver,
        shards,
        health: (0..shards).map(|_| Arc::default()).collect(),
        config,
    });
    let handles = spawn_shards(&global, receivers, publics, admin)?;
    println!(
        "shardrelay: listening public={public_addr} admin={admin_addr} shards={shards} driver={driver}"
    );
    tracing::info!(%public_addr, %admin_addr, shards, driver, "shardrelay listening");
    let stopper = global.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "shutting down");
                broadcast_shutdown(&stopper);
            }
        })
        .map_err(ServerError::Signals)?;
    join_shards(&global, handles)
}

/// The driver the shards will run.
fn driver_name(choice: DriverChoice) -> Result<&'static str, ServerError> {
    let uring = monoio::utils::detect_uring();
    match choice {
        DriverChoice::Epoll => Ok("epoll"),
        DriverChoice::Uring if !uring => Err(ServerError::NoUring),
        DriverChoice::Uring => Ok("io_uring"),
        DriverChoice::Auto => Ok(if uring { "io_uring" } else { "epoll" }),
    }
}

/// One hasher state for every shard, random per process.
fn random_hasher() -> ahash::RandomState {
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        return ahash::RandomState::new();
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&seed[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    ahash::RandomState::with_seeds(word(0), word(1), word(2), word(3))
}

/// Spawn the shard threads, pinning shard i to the i-th CPU this process may use.
fn spawn_shards(
    global: &Arc<Global>,
    receivers: Vec<WakeReceiver<InboxMsg>>,
    publics: Vec<TcpListener>,
    admin: TcpListener,
) -> Result<Vec<JoinHandle<std::io::Result<()>>>, ServerError> {
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let mut admin = Some(admin);
    let mut handles = Vec::new();
    for (id, (inbox, public)) in receivers.into_iter().zip(publics).enumerate() {
        let seed = ShardSeed {
            id,
            global: global.clone(),
            inbox,
            public,
            admin: admin.take(),
            cpu: (!cpus.is_empty()).then(|| cpus[id % cpus.len()]),
        };
        let handle = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || shard::run(seed))
            .map_err(|e| ServerError::Shard {
                id,
                why: e.to_string(),
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Tell every shard to shut down.
fn broadcast_shutdown(global: &Global) {
    for inbox in &global.inboxes {
        inbox.send(InboxMsg::Shutdown);
    }
}

/// Wait for every shard; a shard that fails stops the others.
fn join_shards(
    global: &Arc<Global>,
    handles: Vec<JoinHandle<std::io::Result<()>>>,
) -> Result<(), ServerError> {
    let mut first_error = None;
    for (id, handle) in handles.into_iter().enumerate() {
        let why = match handle.join() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "panicked".to_owned(),
        };
        tracing::error!(shard = id, why = %why, "shard failed");
        broadcast_shutdown(global);
        first_error.get_or_insert(ServerError::Shard { id, why });
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
