//! A connection's reader task: waits for readiness, reads into the shard's scratch
//! buffer, decodes frames and hands whole messages to the host (the shard, which
//! dispatches to the styles); pauses while a queue it feeds is full (PROTOCOL §2).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::{Conn, Host, Life, OutFrame, Rendezvous};
use crate::stats::Rejected;
use crate::sys;
use crate::ws::codec::{self, Event, OpCode};

thread_local! {
    /// Set when a message filled the queue it went to (a connection's outbound queue, or
    /// a lone pair side's early messages), or when the connection spent its control-frame
    /// budget: the reader stops decoding and checks whether to pause. Thread-local, so
    /// per shard, and only its one running reader sets it.
    static QUEUE_FILLED: Cell<bool> = const { Cell::new(false) };
}

/// Control frames (pings and pongs) read from one connection in a one-second window;
/// past it the reader stops decoding and waits for the next window (TCP back-pressure,
/// PROTOCOL §2.1). A ping costs the relay a decode and a pong and moves nothing to
/// anyone, and pongs replace each other, so nothing else bounds it: before this, two
/// clients pinging at wire speed without reading kept 1.6 of the two cores decoding and
/// raised every other client's p99 4-fold (docs/benchmarks.md, "Soak with attackers").
/// 64 is far above any heartbeat (browsers send none, libraries one every few seconds)
/// and above Autobahn's bursts of ten; a client over it is slowed, never closed.
const CONTROL_FRAMES_PER_SECOND: u16 = 64;

/// The start of the control-frame windows (any fixed instant; only differences count).
static CONTROL_EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// The window `at` falls in (its second, wrapping) and the time left until the next.
fn control_window(at: Instant) -> (u16, Duration) {
    let since = at.saturating_duration_since(*CONTROL_EPOCH);
    let left = Duration::from_secs(1) - Duration::from_nanos(u64::from(since.subsec_nanos()));
    (since.as_secs() as u16, left)
}

/// Count one control frame read at `at`; true when this window's budget is now spent.
fn spend_control<R: Rendezvous>(conn: &Conn<R>, at: Instant) -> bool {
    let (window, _) = control_window(at);
    let packed = conn.control.get();
    let count = if (packed >> 16) as u16 == window {
        (packed as u16).saturating_add(1)
    } else {
        1
    };
    conn.control.set(u32::from(window) << 16 | u32::from(count));
    count >= CONTROL_FRAMES_PER_SECOND
}

/// While `conn` has spent the current window's control budget: wait for the next.
fn control_pause<R: Rendezvous>(conn: &Conn<R>) -> Option<Pause<R>> {
    let packed = conn.control.get();
    if (packed as u16) < CONTROL_FRAMES_PER_SECOND {
        return None;
    }
    let (window, left) = control_window(Instant::now());
    ((packed >> 16) as u16 == window).then_some(Pause::Pace(left))
}

/// Tell the reader being served that a queue it feeds is full (or the process is at its
/// memory limit): it stops decoding after the current message.
pub fn signal_queue_filled() {
    QUEUE_FILLED.set(true);
}

/// Bytes asked of the kernel per read: the shard's scratch buffer size.
pub const READ_CHUNK: usize = 64 * 1024;

/// Full reads per readiness wake before yielding to other connections (fairness). One:
/// ordinary traffic ends a wake with a short read anyway; a connection with more than a
/// scratch buffer pending (a bulk sender, or a flood of pings) yields after each 64 KiB.
/// More reads per wake let one client pinging at wire speed hold its shard for a long
/// turn and raise every other client's latency (measured: docs/benchmarks.md, "Soak
/// with attackers").
const READS_PER_WAKE: usize = 1;

/// A `partial` buffer that grew past this is released once it empties.
const PARTIAL_KEEP: usize = 4 * 1024;

/// Why a reader stops reading for a while (PROTOCOL §2 back-pressure).
#[derive(Debug)]
pub enum Pause<R: Rendezvous> {
    /// The connection it feeds holds at least this many bytes (`--max-queue`, or its
    /// share of `--memory-limit` while the process is at the limit): wait until it drains.
    Room(Rc<Conn<R>>, usize),
    /// It is alone and its early messages fill their bound: wait for its peer.
    Arrival(Rc<Arrival>),
    /// The process is at its memory limit and this connection's own buffers (a message
    /// being reassembled, frames read but not decoded) hold more than its share: look
    /// again after this long (the stall clock closes it if that lasts).
    Pressure(Duration),
    /// It spent this second's control-frame budget (`CONTROL_FRAMES_PER_SECOND`): read
    /// on after this long, at the next window.
    Pace(Duration),
}

impl<R: Rendezvous> Pause<R> {
    /// Wait until the reason may have gone (the reader checks again).
    async fn wait(&self) {
        match self {
            Pause::Room(target, limit) => target.wait_for_room(*limit).await,
            Pause::Arrival(arrival) => arrival.wait().await,
            Pause::Pressure(period) | Pause::Pace(period) => monoio::time::sleep(*period).await,
        }
    }
}

/// A one-way latch a lone pair side waits on: released when its peer arrives or the
/// pair ends.
#[derive(Debug, Default)]
pub struct Arrival {
    /// Released.
    released: Cell<bool>,
    /// Readers waiting.
    waiters: RefCell<Vec<Waker>>,
}

impl Arrival {
    /// Release every waiter, now and later.
    pub fn release(&self) {
        self.released.set(true);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Wait for the release.
    async fn wait(&self) {
        poll_fn(|cx| {
            if self.released.get() {
                return Poll::Ready(());
            }
            push_waker(&mut self.waiters.borrow_mut(), cx.waker());
            Poll::Pending
        })
        .await
    }
}

/// Remember a waiter once: a paused reader looks up every tick and waits again, and must
/// not leave a waker behind each time.
pub(super) fn push_waker(waiters: &mut Vec<Waker>, waker: &Waker) {
    if !waiters.iter().any(|w| w.will_wake(waker)) {
        waiters.push(waker.clone());
    }
}

impl<R: Rendezvous> Conn<R> {
    /// Hand the reader the bytes that came with the request head (before it starts).
    pub fn set_initial(&self, initial: Vec<u8>) {
        if !initial.is_empty() {
            self.partial.set(initial);
        }
    }

    /// True while bytes of a cut frame (or that came with the head) wait in `partial`.
    fn has_partial(&self) -> bool {
        let partial = self.partial.take();
        let has = !partial.is_empty();
        self.partial.set(partial);
        has
    }
}

/// What the reader does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Keep reading.
    Continue,
    /// The connection is over (EOF, error, or the close handshake completed).
    End,
}

/// The reader task: runs until the connection ends, then lets its rendezvous forget it.
/// Bytes that arrived with the request head (or that a moved connection had read but not
/// decoded) wait in the connection (`Conn::set_initial`) and are processed first.
pub async fn run_reader<R: Rendezvous, H: Host<R>>(host: Rc<H>, conn: Rc<Conn<R>>) {
    let mut step = Step::Continue;
    if conn.has_partial() {
        step = process_partial(&host, &conn);
        host.flush_after_read();
    }
    while step == Step::Continue {
        if let Some(pause) = control_pause(&conn).or_else(|| host.pause_for(&conn)) {
            // Counted once per pause (and per tick-long re-check), never per message.
            host.stats().event(match pause {
                Pause::Pace(_) => crate::stats::Event::ReadsPaced,
                _ => crate::stats::Event::ReadsPaused,
            });
            conn.paused.set(true);
            // Boxed: its timer would otherwise sit in every reader's future, idle or not
            // (one allocation per pause, never per message).
            let resumed = Box::pin(wait_paused(host.tick_period(), &pause)).await;
            conn.paused.set(false);
            if !resumed && sys::peer_hung_up(conn.fd()) {
                // The client left while paused: what it sent and we did not read is moot.
                break;
            }
            conn.last_rx.set(Instant::now());
            continue;
        }
        if conn.life.get().unparsed() {
            // Frames already read wait in `partial`: decode them before reading more.
            step = process_partial(&host, &conn);
            host.flush_after_read();
            continue;
        }
        if conn.stream.readable(false).await.is_err() {
            break;
        }
        step = read_batch(&host, &conn);
        host.flush_after_read();
    }
    end_connection(&host, &conn);
}

/// Wait out a pause, but look up once a tick (a paused reader does not read, so it would
/// not otherwise notice its client leaving): true when the reason went, false at a tick.
async fn wait_paused<R: Rendezvous>(tick: Duration, pause: &Pause<R>) -> bool {
    monoio::select! {
        _ = pause.wait() => true,
        _ = monoio::time::sleep(tick) => false,
    }
}

/// After the reader: tell the rendezvous, count, and forget the socket once flushed.
fn end_connection<R: Rendezvous, H: Host<R>>(host: &Rc<H>, conn: &Rc<Conn<R>>) {
    if !conn.life.get().is_moved() {
        tracing::debug!(
            shard = host.shard_id(),
            peer = %conn.peer(),
            kind = conn.kind.get().name(),
            client_code = conn.peer_close.get().unwrap_or(1006),
            "closed"
        );
    }
    host.on_disconnect(conn);
    host.stats().conn_closed(conn.kind.get());
    // An open connection (EOF without a close frame) has nothing more to send.
    conn.update(|life| life.finish_reading(Instant::now()));
    // Our close frame may have gone out while the client's was awaited: half-close now.
    conn.shut_if_flushed();
    conn.wake_room_waiters();
    host.flush_dirty();
    if conn.is_finished() {
        host.forget(conn);
    }
}

/// Read what the socket has, up to a few chunks, and process it; then charge what the
/// read side holds (a cut frame, a message being reassembled).
fn read_batch<R: Rendezvous, H: Host<R>>(host: &Rc<H>, conn: &Rc<Conn<R>>) -> Step {
    let step = read_chunks(host, conn);
    conn.recharge_held();
    step
}

/// The reads of one batch.
fn read_chunks<R: Rendezvous, H: Host<R>>(host: &Rc<H>, conn: &Rc<Conn<R>>) -> Step {
    for _ in 0..READS_PER_WAKE {
        let partial = conn.partial.take();
        let from_partial = !partial.is_empty();
        let mut buf = if from_partial {
            partial
        } else {
            conn.partial.set(partial);
            host.take_scratch()
        };
        let fd = conn.fd();
        let got = conn.with_link(|link| link.recv_into(fd, &mut buf, READ_CHUNK));
        let short_read = matches!(got, Ok(n) if n < READ_CHUNK);
        let step = match got {
            Ok(0) => Step::End,
            Ok(_) => {
                // One clock read per read: when the client was last heard, and when its
                // messages were read (the forward latency's start).
                let read_at = Instant::now();
                conn.last_rx.set(read_at);
                conn.ping_pending.set(false);
                host.on_activity(conn);
                process_buffer(host, conn, &mut buf, read_at)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                restore_buffer(&**host, conn, buf, from_partial);
                return Step::Continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Continue,
            Err(_) => Step::End,
        };
        keep_leftover(&**host, conn, buf, from_partial);
        if step == Step::End {
            return Step::End;
        }
        if short_read || conn.life.get().unparsed() || host.pause_for(conn).is_some() {
            return Step::Continue;
        }
    }
    Step::Continue
}

/// Put an unused buffer back where it came from.
fn restore_buffer<R: Rendezvous, H: Host<R>>(
    host: &H,
    conn: &Conn<R>,
    buf: Vec<u8>,
    from_partial: bool,
) {
    if from_partial {
        conn.partial.set(buf);
    } else {
        host.return_scratch(buf);
    }
}

/// After processing, `buf` holds only the unconsumed tail (a cut frame): keep it in the
/// connection's `partial` and return the scratch buffer to the shard.
fn keep_leftover<R: Rendezvous, H: Host<R>>(
    host: &H,
    conn: &Conn<R>,
    mut buf: Vec<u8>,
    from_partial: bool,
) {
    if from_partial {
        if buf.is_empty() && buf.capacity() > PARTIAL_KEEP {
            buf = Vec::new();
        }
        conn.partial.set(buf);
    } else {
        if !buf.is_empty() {
            conn.partial.set(buf.as_slice().to_vec());
        }
        buf.clear();
        host.return_scratch(buf);
    }
}

/// Process bytes already in `partial` (those that came with the request head).
fn process_partial<R: Rendezvous, H: Host<R>>(host: &Rc<H>, conn: &Rc<Conn<R>>) -> Step {
    let mut buf = conn.partial.take();
    let step = process_buffer(host, conn, &mut buf, Instant::now());
    keep_leftover(&**host, conn, buf, true);
    conn.recharge_held();
    step
}

/// Decode and dispatch the whole frames in `buf`, leaving only the unconsumed tail: a cut
/// frame, or — when a message filled the queue it went to (`queue_filled`) — every frame
/// after that message, so one read of tiny frames cannot queue more than one message past
/// a bound (PROTOCOL §2.1). `conn.unparsed` tells which.
fn process_buffer<R: Rendezvous, H: Host<R>>(
    host: &Rc<H>,
    conn: &Rc<Conn<R>>,
    buf: &mut Vec<u8>,
    read_at: Instant,
) -> Step {
    conn.update(|life| life.set_unparsed(false));
    if conn.life.get().is_discarding() {
        buf.clear();
        return Step::Continue;
    }
    let max_message = host.max_message();
    let mut pos = 0;
    let mut step = Step::Continue;
    let mut decoder = conn.decoder.borrow_mut();
    QUEUE_FILLED.set(false);
    while step == Step::Continue {
        if QUEUE_FILLED.get() && pos < buf.len() {
            conn.update(|life| life.set_unparsed(true));
            break;
        }
        match decoder.decode(&mut buf[pos..], max_message) {
            Ok(None) => break,
            Ok(Some((event, used))) => {
                if let Some(event) = event {
                    step = on_event(host, conn, event, read_at);
                }
                pos += used;
                if conn.move_requested() {
                    drop(decoder);
                    let unread = buf.split_off(pos);
                    buf.clear();
                    super::relocate::start_move(&**host, conn, unread);
                    return Step::End;
                }
            }
            Err(err) => {
                on_protocol_error(host, conn, err.close_code());
                pos = buf.len();
            }
        }
    }
    buf.drain(..pos);
    step
}

/// A peer broke RFC 6455: close with the matching code and stop parsing its bytes.
fn on_protocol_error<R: Rendezvous, H: Host<R>>(host: &Rc<H>, conn: &Rc<Conn<R>>, code: u16) {
    conn.failed.set(true);
    conn.update(Life::discard);
    host.stats().rejected(match code {
        1007 => Rejected::InvalidUtf8,
        1009 => Rejected::MessageTooBig,
        _ => Rejected::ProtocolError,
    });
    let reason = match code {
        1007 => "invalid UTF-8",
        1009 => "message too big",
        _ => "protocol error",
    };
    conn.close(host, code, reason);
}

/// One decoded frame.
fn on_event<R: Rendezvous, H: Host<R>>(
    host: &Rc<H>,
    conn: &Rc<Conn<R>>,
    event: Event<'_>,
    read_at: Instant,
) -> Step {
    match event {
        Event::Ping(payload) => {
            conn.answer_ping(host, payload);
            spend_control_at(conn, read_at);
            Step::Continue
        }
        Event::Pong => {
            spend_control_at(conn, read_at);
            Step::Continue
        }
        Event::Close { code, .. } => on_close_frame(host, conn, code),
        Event::Message { kind, payload } => {
            if conn.is_open() {
                host.stats().message_in(payload.len());
                host.on_message(conn, kind, payload, read_at);
            }
            Step::Continue
        }
    }
}

/// A ping or pong was read at `read_at`: past the window's budget, decode no further.
fn spend_control_at<R: Rendezvous>(conn: &Conn<R>, read_at: Instant) {
    if spend_control(conn, read_at) {
        QUEUE_FILLED.set(true);
    }
}

/// The client sent a close frame: echo it (unless ours already went out) and end.
fn on_close_frame<R: Rendezvous, H: Host<R>>(
    host: &Rc<H>,
    conn: &Rc<Conn<R>>,
    code: Option<u16>,
) -> Step {
    conn.peer_close.set(Some(code.unwrap_or(1005)));
    if conn.update(|life| life.close(Instant::now())) {
        let echo = match code {
            Some(code) => codec::encode_close(code, ""),
            None => codec::encode_frame(OpCode::Close, b""),
        };
        conn.enqueue(host, OutFrame::raw(echo));
    }
    Step::End
}
