//! Ticket style (PROTOCOL §6): each transfer mints a ticket on the admin listener
//! (`POST /v1/tickets`), then runs `PUT /v1/relay` (a `--size` body from a seeded
//! generator) and `GET /v1/relay` at once, and checks that the GET body's length and
//! SHA-256 match what was put and that the PUT got `200 {"bytes":n,"status":"ok"}`.
//! Each slot runs one transfer at a time; `--rate` schedules transfer starts (latency
//! from the scheduled start), `--inflight` runs them back to back.
//!
//! An `https://` target makes the PUT and GET sides TLS (`tls::wrap`, the run's one
//! client config); the admin listener, where tickets are minted, is always plain.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use sha2::{Digest, Sha256};

use crate::clock::Nanos;
use crate::ctx::WorkerCtx;
use crate::http::{self, Dechunker, Framing, HttpError};
use crate::net::connect_tcp;
use crate::plan::{Pace, Style};
use crate::tls::{self, Stream};

/// Body bytes generated and written at a time.
const WRITE_CHUNK: usize = 64 * 1024;
/// Bytes asked for per read.
const READ_CHUNK: usize = 64 * 1024;
/// Largest admin or PUT response we read (they are small JSON objects).
const MAX_SMALL_RESPONSE: usize = 64 * 1024;
/// Time allowed for any transfer, plus [`TRANSFER_BYTES_PER_SEC`] for its size.
const TRANSFER_BASE: Duration = Duration::from_secs(30);
/// Slowest throughput tolerated before a transfer counts as timed out (loopback
/// moves hundreds of MB/s; this only catches a stall).
const TRANSFER_BYTES_PER_SEC: u64 = 4 << 20;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// Connecting to a listener failed.
    #[error("{0} connect: {1}")]
    Connect(&'static str, io::Error),
    /// A socket error on one side.
    #[error("{0} i/o: {1}")]
    Io(&'static str, io::Error),
    /// A side got an unexpected status.
    #[error("{0} answered {1}")]
    Status(&'static str, u16),
    /// A response that is not what PROTOCOL §6 promises.
    #[error("{0} response malformed")]
    Malformed(&'static str),
    /// Bad HTTP framing.
    #[error("http: {0}")]
    Http(#[from] HttpError),
    /// The GET body ended early: bytes lost.
    #[error("GET body truncated at {0} bytes")]
    Truncated(u64),
    /// The GET body differs from the PUT body.
    #[error("GET body differs from PUT body")]
    Mismatch,
    /// The PUT's `{"bytes":n}` is not the size sent.
    #[error("PUT reported {0} bytes")]
    ByteCount(u64),
    /// The transfer took longer than its limit.
    #[error("transfer timed out")]
    Timeout,
}

impl TicketError {
    /// The error kind as the report counts it.
    pub fn kind(&self) -> String {
        match self {
            Self::Connect(side, _) => format!("{side}_connect"),
            Self::Io(side, _) => format!("{side}_io"),
            Self::Status(side, code) => format!("{side}_status_{code}"),
            Self::Malformed(side) => format!("{side}_malformed"),
            Self::Http(_) => "ticket_http".into(),
            Self::Truncated(_) => "get_truncated".into(),
            Self::Mismatch => "get_mismatch".into(),
            Self::ByteCount(_) => "put_bytes_mismatch".into(),
            Self::Timeout => "transfer_timeout".into(),
        }
    }
}

/// Keeps a worker's count of running slots; dropping it counts the slot finished.
struct SlotGuard<'a>(&'a Cell<usize>);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Counts a slot as running; called when the slot's task is spawned.
pub fn slot_started(ctx: &WorkerCtx) {
    ctx.slots_running.set(ctx.slots_running.get() + 1);
}

/// Whether every slot of this worker has finished (its `--count` share is done).
pub fn slots_finished(ctx: &WorkerCtx) -> bool {
    ctx.slots_running.get() == 0
}

/// Runs transfer slot `slot` until the window ends or its share of `--count` is done.
pub async fn run_slot(ctx: Rc<WorkerCtx>, slot: usize) {
    let _running = SlotGuard(&ctx.slots_running);
    let Style::Ticket { slots, count, .. } = ctx.plan.style else {
        return;
    };
    let quota = count.map(|c| c / slots as u64 + u64::from((slot as u64) < c % slots as u64));
    let interval = match ctx.plan.pace {
        Pace::Rate(rate) => Some((slots as f64 / rate * 1e9) as Nanos),
        Pace::Inflight(_) => None,
    };
    let window = ctx.window.get();
    let phase = interval.map_or(0, |i| i * slot as u64 / slots as u64);
    let mut k = 0u64;
    while quota.is_none_or(|q| k < q) {
        let at = interval.map_or_else(|| ctx.clock.now(), |i| window.start + phase + k * i);
        if at >= window.end {
            return;
        }
        ctx.clock.sleep_until(at).await;
        run_one(&ctx, slot, k, at).await;
        k += 1;
    }
}

/// Runs and accounts one transfer scheduled at `at`.
async fn run_one(ctx: &Rc<WorkerCtx>, slot: usize, k: u64, at: Nanos) {
    let size = ctx.plan.size as u64;
    let limit = TRANSFER_BASE + Duration::from_secs(size / TRANSFER_BYTES_PER_SEC);
    ctx.transfers_running.set(ctx.transfers_running.get() + 1);
    ctx.stats.sent(ctx.plan.size);
    let result = match monoio::time::timeout(limit, transfer(ctx, slot, k)).await {
        Ok(result) => result,
        Err(_) => Err(TicketError::Timeout),
    };
    ctx.transfers_running.set(ctx.transfers_running.get() - 1);
    match result {
        Ok(()) => ctx.stats.received(at, ctx.clock.now(), ctx.plan.size),
        Err(TicketError::Mismatch) => ctx.stats.corrupted(),
        Err(TicketError::Truncated(_)) => ctx.stats.add_integrity(&crate::stats::Integrity {
            lost: 1,
            ..Default::default()
        }),
        Err(error) if !ctx.is_closing() => ctx.stats.error(&error.kind()),
        Err(_) => {}
    }
}

/// One transfer: mint, then PUT and GET concurrently, then compare.
async fn transfer(ctx: &Rc<WorkerCtx>, slot: usize, k: u64) -> Result<(), TicketError> {
    let ticket = mint(ctx, slot).await?;
    let net = &ctx.plan.net;
    let size = ctx.plan.size as u64;
    let get = monoio::spawn(get_side(net.target, ctx.sources.pick(), ticket.clone()));
    let put = put_side(
        net.target,
        ctx.sources.pick(),
        &ticket,
        size,
        (slot as u64) << 32 | k,
    )
    .await;
    let got = get.await;
    let put_digest = put?;
    let (got_digest, got_len) = got?;
    if got_len != size {
        return Err(TicketError::Truncated(got_len));
    }
    if got_digest != put_digest {
        return Err(TicketError::Mismatch);
    }
    Ok(())
}

/// Mints a ticket on the admin listener; the workspace is per slot (the relay caps
/// unfinished tickets per workspace).
async fn mint(ctx: &WorkerCtx, slot: usize) -> Result<String, TicketError> {
    let Style::Ticket { prefix, .. } = &ctx.plan.style else {
        return Err(TicketError::Malformed("mint"));
    };
    let net = &ctx.plan.net;
    let body = serde_json::json!({
        "workspace_id": format!("{prefix}{slot}"),
        "source_id": format!("load-put-{slot}"),
        "dest_id": format!("load-get-{slot}"),
    })
    .to_string();
    let auth = net.admin_token.as_ref().map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = auth.as_deref() {
        headers.push(("Authorization", auth));
    }
    let mut request = http::request_head(
        "POST",
        &net.admin.to_string(),
        "/v1/tickets",
        &headers,
        Some(body.len() as u64),
    );
    request.extend_from_slice(body.as_bytes());
    let mut stream = Stream::Plain(
        connect_tcp(net.admin, None)
            .await
            .map_err(|e| TicketError::Connect("mint", e))?,
    );
    let (status, reply) = exchange(&mut stream, request, "mint").await?;
    if status != 201 && status != 200 {
        return Err(TicketError::Status("mint", status));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&reply).map_err(|_| TicketError::Malformed("mint"))?;
    value["ticket"]
        .as_str()
        .map(str::to_owned)
        .ok_or(TicketError::Malformed("mint"))
}

/// Sends `request` and reads a small response to the end: (status, body).
async fn exchange(
    stream: &mut Stream,
    request: Vec<u8>,
    side: &'static str,
) -> Result<(u16, Vec<u8>), TicketError> {
    let (written, _) = stream.write_all(request).await;
    written.map_err(|e| TicketError::Io(side, e))?;
    read_small_response(stream, side).await
}

/// Reads a whole small response (Content-Length, chunked or until close).
async fn read_small_response(
    stream: &mut Stream,
    side: &'static str,
) -> Result<(u16, Vec<u8>), TicketError> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let head = read_head(stream, &mut buf, side).await?;
    let mut sink = BodySink::new(head.framing, true);
    sink.feed(&buf[head.len..])?;
    while !sink.done && sink.count < MAX_SMALL_RESPONSE as u64 {
        buf.clear();
        if read_append(stream, &mut buf)
            .await
            .map_err(|e| TicketError::Io(side, e))?
            == 0
        {
            break;
        }
        sink.feed(&buf)?;
    }
    Ok((head.status, sink.kept))
}

/// Reads until a response head is buffered in `buf`.
async fn read_head(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    side: &'static str,
) -> Result<http::ResponseHead, TicketError> {
    loop {
        if let Some(head) = http::parse_head(buf)? {
            return Ok(head);
        }
        if read_append(stream, buf)
            .await
            .map_err(|e| TicketError::Io(side, e))?
            == 0
        {
            return Err(TicketError::Malformed(side));
        }
    }
}

/// Reads once, appending to `buf`; returns the bytes read (0 at end of stream).
async fn read_append(stream: &mut Stream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK {
        buf.reserve(READ_CHUNK);
    }
    let owned = std::mem::take(buf);
    let (len, cap) = (owned.len(), owned.capacity());
    let (read, slice) = stream.read(owned.slice_mut(len..cap)).await;
    *buf = slice.into_inner();
    read
}

/// A connection to the public listener: TCP from `source`, then the TLS handshake for an
/// `https://` target (a failed handshake counts as that side's connect error).
async fn open_public(
    target: SocketAddr,
    source: Option<IpAddr>,
    side: &'static str,
) -> Result<Stream, TicketError> {
    let tcp = connect_tcp(target, source)
        .await
        .map_err(|e| TicketError::Connect(side, e))?;
    tls::wrap(tcp, &target.to_string())
        .await
        .map_err(|e| TicketError::Connect(side, e))
}

/// The PUT side: streams `size` generated bytes; returns their SHA-256 once the relay
/// confirmed the byte count.
async fn put_side(
    target: SocketAddr,
    source: Option<IpAddr>,
    ticket: &str,
    size: u64,
    seed: u64,
) -> Result<[u8; 32], TicketError> {
    let mut stream = open_public(target, source, "put").await?;
    let auth = format!("Bearer {ticket}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/octet-stream"),
    ];
    let head = http::request_head(
        "PUT",
        &target.to_string(),
        "/v1/relay",
        &headers,
        Some(size),
    );
    let (written, _) = stream.write_all(head).await;
    written.map_err(|e| TicketError::Io("put", e))?;
    let mut body = BodyGenerator::new(seed);
    let mut hasher = Sha256::new();
    let mut chunk = Vec::with_capacity(WRITE_CHUNK);
    let mut left = size;
    while left > 0 {
        chunk.clear();
        body.fill(&mut chunk, left.min(WRITE_CHUNK as u64) as usize);
        hasher.update(&chunk);
        left -= chunk.len() as u64;
        let (written, returned) = stream.write_all(chunk).await;
        chunk = returned;
        if let Err(error) = written {
            // The relay may have answered and closed early (404, 413, …): say which.
            return Err(match read_small_response(&mut stream, "put").await {
                Ok((status, _)) => TicketError::Status("put", status),
                Err(_) => TicketError::Io("put", error),
            });
        }
    }
    let (status, reply) = read_small_response(&mut stream, "put").await?;
    check_put_reply(status, &reply, size)?;
    Ok(hasher.finalize().into())
}

/// Checks `200 {"bytes":size,"status":"ok"}`.
fn check_put_reply(status: u16, reply: &[u8], size: u64) -> Result<(), TicketError> {
    if status != 200 {
        return Err(TicketError::Status("put", status));
    }
    let value: serde_json::Value =
        serde_json::from_slice(reply).map_err(|_| TicketError::Malformed("put"))?;
    if value["status"] != "ok" {
        return Err(TicketError::Malformed("put"));
    }
    match value["bytes"].as_u64() {
        Some(n) if n == size => Ok(()),
        Some(n) => Err(TicketError::ByteCount(n)),
        None => Err(TicketError::Malformed("put")),
    }
}

/// The GET side: reads the body; returns its SHA-256 and length.
async fn get_side(
    target: SocketAddr,
    source: Option<IpAddr>,
    ticket: String,
) -> Result<([u8; 32], u64), TicketError> {
    let mut stream = open_public(target, source, "get").await?;
    let auth = format!("Bearer {ticket}");
    let head = http::request_head(
        "GET",
        &target.to_string(),
        "/v1/relay",
        &[("Authorization", auth.as_str())],
        None,
    );
    let (written, _) = stream.write_all(head).await;
    written.map_err(|e| TicketError::Io("get", e))?;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let head = read_head(&mut stream, &mut buf, "get").await?;
    if head.status != 200 {
        return Err(TicketError::Status("get", head.status));
    }
    let mut sink = BodySink::new(head.framing, false);
    sink.feed(&buf[head.len..])?;
    while !sink.done {
        buf.clear();
        let read = read_append(&mut stream, &mut buf)
            .await
            .map_err(|e| TicketError::Io("get", e))?;
        if read == 0 {
            if head.framing == Framing::UntilClose {
                break;
            }
            return Err(TicketError::Truncated(sink.count));
        }
        sink.feed(&buf)?;
    }
    Ok((sink.hasher.finalize().into(), sink.count))
}

/// Consumes a response body: counts it, hashes it, optionally keeps it.
struct BodySink {
    /// How the body is delimited.
    framing: Framing,
    /// Chunked decoder, for chunked bodies.
    dechunker: Dechunker,
    /// Body bytes so far.
    count: u64,
    /// SHA-256 of the body so far.
    hasher: Sha256,
    /// The body itself, for small responses.
    kept: Vec<u8>,
    /// Keep the bytes (small responses) or only hash them (transfers).
    keep: bool,
    /// The body is complete.
    done: bool,
}

impl BodySink {
    /// A sink for a body with `framing`.
    fn new(framing: Framing, keep: bool) -> Self {
        Self {
            framing,
            dechunker: Dechunker::default(),
            count: 0,
            hasher: Sha256::new(),
            kept: Vec::new(),
            keep,
            done: framing == Framing::Length(0),
        }
    }

    /// Feeds received bytes (anything past the body's end is ignored).
    fn feed(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        match self.framing {
            Framing::Length(total) => {
                let take = (total - self.count).min(bytes.len() as u64) as usize;
                self.take(&bytes[..take]);
                self.done = self.count >= total;
            }
            Framing::UntilClose => self.take(bytes),
            Framing::Chunked => {
                let mut dechunker = std::mem::take(&mut self.dechunker);
                self.done = dechunker.feed(bytes, &mut |body| self.take(body))?;
                self.dechunker = dechunker;
            }
        }
        Ok(())
    }

    /// Accounts body bytes.
    fn take(&mut self, body: &[u8]) {
        self.count += body.len() as u64;
        self.hasher.update(body);
        if self.keep {
            self.kept.extend_from_slice(body);
        }
    }
}

/// Deterministic pseudo-random body bytes (xorshift64*), cheap enough not to limit
/// the transfer rate.
struct BodyGenerator {
    /// Generator state (never zero).
    state: u64,
}

impl BodyGenerator {
    /// A generator for `seed`.
    fn new(seed: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// Appends `len` bytes to `out`.
    fn fill(&mut self, out: &mut Vec<u8>, len: usize) {
        let target = out.len() + len;
        while out.len() < target {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let word = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            let take = (target - out.len()).min(8);
            out.extend_from_slice(&word[..take]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_chunking_independent() {
        let mut whole = Vec::new();
        BodyGenerator::new(7).fill(&mut whole, 1000);
        let mut pieces = Vec::new();
        let mut generator = BodyGenerator::new(7);
        generator.fill(&mut pieces, 512);
        generator.fill(&mut pieces, 488);
        assert_eq!(whole.len(), 1000);
        // Chunks are multiples of 8 bytes except the last, so pieces match whole.
        assert_eq!(whole, pieces);
    }

    #[test]
    fn put_reply_is_checked() {
        assert!(check_put_reply(200, br#"{"bytes":5,"status":"ok"}"#, 5).is_ok());
        assert!(matches!(
            check_put_reply(200, br#"{"bytes":4,"status":"ok"}"#, 5),
            Err(TicketError::ByteCount(4))
        ));
        assert!(matches!(
            check_put_reply(413, b"{}", 5),
            Err(TicketError::Status("put", 413))
        ));
    }

    #[test]
    fn body_sink_counts_hashes_and_stops_at_length() {
        let mut sink = BodySink::new(Framing::Length(5), true);
        sink.feed(b"hel").unwrap();
        assert!(!sink.done);
        sink.feed(b"lo, extra").unwrap();
        assert!(sink.done);
        assert_eq!(sink.kept, b"hello");
        let expected: [u8; 32] = Sha256::digest(b"hello").into();
        let got: [u8; 32] = sink.hasher.finalize().into();
        assert_eq!(got, expected);
    }
}
