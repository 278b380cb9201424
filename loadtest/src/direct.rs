//! `--direct-probe`: a direct loopback round trip measured in the same run as the
//! relayed traffic, for the comparison of issue 9 (client round trip through the relay
//! vs. one without it). A TCP echo thread and a prober thread, both plain blocking
//! `std::net` sockets with `TCP_NODELAY`: every millisecond the prober writes one
//! message of the run's size and reads it back; round trips that start inside the
//! measured window are recorded (µs, from the write to the last byte read back).
//! Two extra threads at 1,000 round trips/s: a small load beside the run's own.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stats::LatencySummary;

/// Time between round trips.
const INTERVAL: Duration = Duration::from_millis(1);
/// A read that waits longer than this ends the probe (the echo thread is gone).
const READ_LIMIT: Duration = Duration::from_secs(5);

/// The running probe.
#[derive(Debug)]
pub struct Probe {
    /// Tells the prober to stop.
    stop: Arc<AtomicBool>,
    /// The prober; yields its histogram.
    prober: JoinHandle<io::Result<Histogram<u64>>>,
    /// The echo side; ends when the prober's socket closes.
    echo: JoinHandle<()>,
}

impl Probe {
    /// Starts the echo and the prober; round trips starting in `[from, until)` count.
    pub fn start(size: usize, from: Instant, until: Instant) -> io::Result<Self> {
        let size = size.max(1);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let echo = thread::Builder::new()
            .name("direct-echo".into())
            .spawn(move || {
                if let Ok((stream, _)) = listener.accept() {
                    let _ = echo(stream, size);
                }
            })?;
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_LIMIT))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let prober = thread::Builder::new()
            .name("direct-probe".into())
            .spawn(move || probe(stream, size, from, until, &flag))?;
        Ok(Self { stop, prober, echo })
    }

    /// Stops the probe and summarises what it measured.
    pub fn finish(self) -> Result<LatencySummary, String> {
        self.stop.store(true, Ordering::Relaxed);
        let hist = self
            .prober
            .join()
            .map_err(|_| "the direct probe thread panicked".to_string())?
            .map_err(|e| format!("direct probe: {e}"))?;
        let _ = self.echo.join();
        Ok(LatencySummary::of(&hist))
    }
}

/// Sends back every message of `size` bytes until the prober closes.
fn echo(mut stream: TcpStream, size: usize) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; size];
    loop {
        stream.read_exact(&mut buf)?;
        stream.write_all(&buf)?;
    }
}

/// One round trip per `INTERVAL` until told to stop.
fn probe(
    mut stream: TcpStream,
    size: usize,
    from: Instant,
    until: Instant,
    stop: &AtomicBool,
) -> io::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let message = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        let sent = Instant::now();
        stream.write_all(&message)?;
        stream.read_exact(&mut back)?;
        if sent >= from && sent < until {
            hist.saturating_record(sent.elapsed().as_micros().max(1) as u64);
        }
        // No catch-up bursts after a stall: the next round trip is one interval on.
        next = (next + INTERVAL).max(Instant::now());
    }
    Ok(hist)
}
