//! Process start and stop: bind the listeners (one exclusive public socket shared by
//! every shard through duplicated descriptors, see `listen`), spawn one pinned thread per
//! shard, print the ready line (and `READY=1` to systemd's `NOTIFY_SOCKET`, when set),
//! wait for SIGTERM/SIGINT, broadcast shutdown, and join. SIGHUP rereads the TLS
//! certificate and key (`--tls-cert`/`--tls-key`), and is logged and ignored without them.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{Config, ConfigError, DriverChoice};
use crate::listen::{self, BindError};
use crate::per_ip::{GuessBudget, RateLimit};
use crate::shard::{self, Global, InboxMsg, ShardSeed};
use crate::sys;
use crate::wake::{wake_channel, WakeReceiver};

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A `--nodes` address that does not resolve.
    #[error("--nodes: `{0}` does not resolve to an address")]
    NodeAddress(String),
    /// A listener could not be bound (another process holds it: exit code 2).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// io_uring was demanded and is not available.
    #[error("--driver uring: io_uring is not available on this kernel")]
    NoUring,
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The TLS certificate or key did not load at start-up (exit code 2).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsKeyError),
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
            ServerError::Tls(_) => 2,
            _ => 1,
        }
    }
}

/// Run the relay until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), ServerError> {
    config.validate()?;
    let admin_token = config.load_admin_token()?;
    let driver = driver_name(config.driver)?;
    let tls = load_tls(&config)?;
    let shards = config.shard_count();
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(ServerError::Signals)?;
    let public = listen::bind("public", config.listen)?;
    let public_addr = listen::bound_addr("public", config.listen, &public)?;
    let admin = listen::bind("admin", config.admin_listen)?;
    let admin_addr = listen::bound_addr("admin", config.admin_listen, &admin)?;
    let publics = listen::share("public", public_addr, public, shards)?;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| wake_channel()).unzip();
    let memory_limit = config.memory_cap();
    crate::memory::set_limit(memory_limit);
    tracing::info!(
        memory_limit,
        stall_timeout_ms = config.stall_timeout.as_millis() as u64,
        "memory bounds"
    );
    if config.proxy_protocol || config.trust_forwarded_for {
        let trusted: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(|c| c.to_string())
            .collect();
        tracing::info!(
            proxy_protocol = config.proxy_protocol,
            trust_forwarded_for = config.trust_forwarded_for,
            trusted_proxies = trusted.join(","),
            "client addresses from the balancers in front (PROTOCOL §1.2)"
        );
    }
    let cluster = config.cluster()?;
    let global = Arc::new(Global {
        rate_limiter: config.per_ip_rate.map(|rate| {
            let burst = config.per_ip_burst.unwrap_or(rate * 2.0);
            RateLimit::new(rate, burst)
        }),
        guesses: (config.code_guesses_per_ip > 0)
            .then(|| GuessBudget::new(config.code_guesses_per_ip)),
        max_connections: descriptor_budget(&config, shards),
        hasher: random_hasher(),
        inboxes: senders,
        open: Default::default(),
        started: Instant::now(),
        admin_token,
        driver,
        shards,
        health: (0..shards).map(|_| Arc::default()).collect(),
        tls,
        node_addrs: resolve_nodes(cluster.as_ref())?,
        cluster,
        config,
    });
    let handles = spawn_shards(&global, receivers, publics, admin)?;
    announce_ready(&format!(
        "shardrelay: listening public={public_addr} admin={admin_addr} shards={shards} driver={driver}"
    ));
    tracing::info!(%public_addr, %admin_addr, shards, driver, "shardrelay listening");
    notify_service_manager(&[sd_notify::NotifyState::Ready]);
    let stopper = global.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || wait_for_stop(signals, &stopper))
        .map_err(ServerError::Signals)?;
    join_shards(&global, handles)
}

/// The TLS pair, when `--tls-cert`/`--tls-key` are given: a pair that does not load
/// stops the start-up (exit 2, one line).
fn load_tls(config: &Config) -> Result<Option<Arc<crate::tls::TlsKeys>>, ServerError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let keys = crate::tls::TlsKeys::load(cert, key)?;
    tracing::info!(cert = %cert.display(), "TLS on the public listener");
    Ok(Some(Arc::new(keys)))
}

/// Raise the soft open-files limit to the hard one, size the connection cap from it, and
/// log both (PROTOCOL §2.1).
fn descriptor_budget(config: &Config, shards: usize) -> usize {
    let limit = match sys::raise_open_files_limit() {
        Ok((before, after)) => {
            if after > before {
                tracing::info!(from = before, to = after, "raised the open-files limit");
            }
            after
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-files limit");
            sys::open_files_limit()
        }
    };
    let cap = config.connection_cap(shards, limit);
    if config.max_connections.is_some_and(|asked| asked > cap) {
        tracing::warn!(
            asked = config.max_connections,
            max_connections = cap,
            open_files = limit,
            "--max-connections lowered to fit the open-files limit"
        );
    }
    tracing::info!(max_connections = cap, open_files = limit, "connection cap");
    cap
}

/// The ready line on stdout (tests and scripts wait for it). A closed stdout is not an
/// error: the relay serves without anyone reading it.
fn announce_ready(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Tell systemd (`Type=notify`) about a state change; a no-op outside systemd (no
/// `NOTIFY_SOCKET`). A failure is logged, not fatal: the relay serves either way.
fn notify_service_manager(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// The signal thread: SIGHUP rereads the TLS pair (or is logged and ignored without
/// TLS); SIGTERM or SIGINT shuts down.
fn wait_for_stop(mut signals: Signals, global: &Global) {
    for sig in signals.forever() {
        if sig == SIGHUP {
            reload_tls(global);
            continue;
        }
        tracing::info!(signal = sig, "shutting down");
        notify_service_manager(&[sd_notify::NotifyState::Stopping]);
        broadcast_shutdown(global);
        return;
    }
}

/// `SIGHUP`: new handshakes use the reread pair; established connections keep theirs. A
/// pair that does not load leaves the old one in force and logs one error (PROTOCOL §1.1).
fn reload_tls(global: &Global) {
    let Some(keys) = &global.tls else {
        tracing::info!("SIGHUP: no TLS pair to reload; ignored");
        return;
    };
    match keys.reload() {
        Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
        Err(e) => tracing::error!(error = %e, "SIGHUP: TLS pair not reloaded; the old one stays"),
    }
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

/// Each node's public address (PROTOCOL §9), resolved once at start-up: a shard never
/// blocks on a name lookup.
fn resolve_nodes(
    cluster: Option<&crate::cluster::Cluster>,
) -> Result<Vec<SocketAddr>, ServerError> {
    let Some(cluster) = cluster else {
        return Ok(Vec::new());
    };
    cluster
        .nodes()
        .iter()
        .map(|node| {
            use std::net::ToSocketAddrs;
            node.addr
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| ServerError::NodeAddress(node.to_string()))
        })
        .collect()
}
