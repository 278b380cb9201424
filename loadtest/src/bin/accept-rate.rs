//! `accept-rate`: how many connections per second the relay accepts, admits and answers
//! (`GET /health`, one request per connection), with the connections spread round-robin
//! over `--sources` distinct loopback source addresses (127.x.y.z). Used to check that
//! per-IP admission costs the same at 1 and at 100,000 sources (docs/benchmarks.md).
//!
//! Loopback only: the target must be in 127.0.0.0/8. Bounded: at most `--connections`
//! connections (≤ 1,000,000) and `--max-seconds` of wall time.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use socket2::{Domain, Socket, Type};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Connections per second through the relay's accept path")]
struct Args {
    /// The relay's public listener (127.0.0.0/8 only).
    #[arg(long)]
    target: SocketAddr,
    /// Connections to make in all.
    #[arg(long, default_value_t = 20_000)]
    connections: u64,
    /// Distinct source addresses, used round-robin (at most 250 × 62,500: 127.1–250.x.y).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_SOURCES))]
    sources: u32,
    /// Client threads.
    #[arg(long, default_value_t = 8)]
    threads: u64,
    /// Stop after this long even if connections remain.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
}

/// Distinct 127.a.b.c sources `source` can make: 250 values of `a`, 62,500 of (b, c).
const MAX_SOURCES: i64 = 250 * 62_500;

/// The `i`-th source address: 127.a.b.c with a, b, c in 1..=250 (no .0 or .255).
fn source(i: u32) -> Ipv4Addr {
    let (a, rest) = (i / 62_500, i % 62_500);
    Ipv4Addr::new(
        127,
        1 + a as u8,
        1 + (rest / 250) as u8,
        1 + (rest % 250) as u8,
    )
}

/// One connection from `from`: send a health request, read the answer to EOF.
fn one(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<bool> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(from, 0)).into())?;
    socket.connect(&to.into())?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::with_capacity(512);
    stream.read_to_end(&mut answer)?;
    Ok(answer.starts_with(b"HTTP/1.1 200 "))
}

fn main() {
    let args = Args::parse();
    let loopback = matches!(args.target, SocketAddr::V4(a) if a.ip().octets()[0] == 127);
    assert!(loopback, "--target must be in 127.0.0.0/8");
    assert!(
        args.connections <= 1_000_000,
        "--connections is capped at 1,000,000"
    );
    let (next, ok, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.threads.max(1))
        .map(|_| {
            let (next, ok, failed) = (next.clone(), ok.clone(), failed.clone());
            let (total, sources, target) = (args.connections, args.sources.max(1), args.target);
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() > deadline {
                    return;
                }
                let from = source((i % u64::from(sources)) as u32);
                match one(from, target) {
                    Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "sources={} connections={} ok={ok} failed={failed} seconds={secs:.2} accepts_per_s={:.0}",
        args.sources,
        ok + failed,
        ok as f64 / secs
    );
}
