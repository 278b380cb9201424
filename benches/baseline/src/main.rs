//! A deliberately ordinary WebSocket relay, written the way most relays are: a tokio
//! multi-thread runtime, tokio-tungstenite, and one `Arc<Mutex<HashMap>>` registry
//! shared by every worker thread. It speaks the server-id (PROTOCOL §3) and pair (§4)
//! routes that `shardrelay-load` drives, so `make bench-compare` can put shardrelay's
//! figures beside it.
//!
//! # Layout
//! * `registry` — the shared route table and the guards that leave it.
//! * `conn` — one connection: upgrade, route, a reader loop and a writer task.
//! * `admin` — `/health` and `/stats` on the admin listener.
//! * `raw` — `--raw-copy`: handshake then a plain byte copy between pair sides, the
//!   floor for CPU per message (#20 point 4).
//! * `tls` — `--tls-cert`/`--tls-key`: tokio-rustls with shardrelay's TLS settings, for
//!   the handshake storm (#16 point 4).

mod admin;
mod conn;
mod raw;
mod registry;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;

/// Command line.
#[derive(Parser)]
#[command(about = "Baseline relay for bench-compare (tokio + tokio-tungstenite + Mutex<HashMap>)")]
struct Cli {
    /// Public listener: `/v1/server`, `/v1/client`, `/?pair=`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Admin listener: `/health` and `/stats`.
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
    /// Be the raw-copy reference instead: pair upgrades only, then `copy_bidirectional`
    /// between the two sides (frames stay masked; see `raw`).
    #[arg(long, conflicts_with = "tls_cert")]
    raw_copy: bool,
    /// Terminate TLS on the public listener with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(why) = run(cli).await {
        eprintln!("baseline: {why}");
        std::process::exit(1);
    }
}

/// Binds both listeners, prints the ready line, then accepts until killed.
async fn run(cli: Cli) -> std::io::Result<()> {
    let acceptor = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => {
            eprintln!("baseline: TLS provider={}", tls::PROVIDER);
            Some(tls::acceptor(cert, key).map_err(std::io::Error::other)?)
        }
        _ => None,
    };
    let public = TcpListener::bind(cli.listen).await?;
    let admin = TcpListener::bind(cli.admin_listen).await?;
    println!(
        "baseline: listening public={} admin={}",
        public.local_addr()?,
        admin.local_addr()?
    );
    tokio::spawn(admin::serve(admin));
    let registry = Arc::new(registry::Registry::default());
    let raw_pairs = Arc::new(raw::RawPairs::default());
    loop {
        match public.accept().await {
            Ok((socket, _)) => {
                // Small relayed messages must not wait for Nagle.
                socket.set_nodelay(true)?;
                if cli.raw_copy {
                    tokio::spawn(raw::serve(socket, Arc::clone(&raw_pairs)));
                } else if let Some(acceptor) = &acceptor {
                    let (acceptor, registry) = (acceptor.clone(), Arc::clone(&registry));
                    tokio::spawn(async move {
                        // A failed handshake just ends the connection, as in shardrelay.
                        if let Ok(tls) = acceptor.accept(socket).await {
                            conn::serve(tls::Io::Tls(Box::new(tls)), registry).await;
                        }
                    });
                } else {
                    tokio::spawn(conn::serve(tls::Io::Plain(socket), Arc::clone(&registry)));
                }
            }
            Err(why) => {
                // Out of descriptors, most likely: back off instead of spinning.
                eprintln!("baseline: accept: {why}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
