//! A connection's outbound side: the bounded queue of frames, its flush (one vectored
//! `sendmsg`), the writer task of a socket that pushed back, pings and pongs ahead of the
//! backlog, the close handshake, and the stall clock.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::reader::push_waker;
use super::{Conn, Host, Life, Outbox, Rendezvous};
use crate::memory;
use crate::stats::Style;
use crate::ws::codec::{self, OpCode};
use crate::ws::payload::Payload;

/// Most queued frames gathered into one `sendmsg` (each frame is at most 4 slices).
const FRAMES_PER_WRITE: usize = 64;

/// The slices of one flush: room for `FRAMES_PER_WRITE` frames of 4 slices each, so it
/// never spills to the heap.
type IoSlices<'a> = smallvec::SmallVec<[IoSlice<'a>; FRAMES_PER_WRITE * 4]>;

/// A queue ring that grew past this many slots (a burst, or an early-message flush) is
/// given back as soon as it empties rather than at the next quiet tick: 64 slots is a
/// busy connection's working set, and its 7 KiB is not worth a reallocation per burst.
const RING_KEEP: usize = 64;

/// What one queued frame occupies besides its body: its slot in the queue's ring.
pub const FRAME_SLOT: usize = std::mem::size_of::<OutFrame>();

/// The opcode bits of a frame header's first byte.
const OPCODE_MASK: u8 = 0x0f;

/// What a full outbound queue does to the sender that fills it (PROTOCOL §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The feeding reader pauses until the queue drains (TCP back-pressure).
    PauseSender,
    /// The receiver is closed with `1011 "phone backlog full"` (a binary is never stalled).
    CloseReceiver,
}

/// One queued outbound frame: header, optional shared prefix (an envelope's
/// `{"conn_id":…,"frame":`), the body, and a static suffix — written as separate slices so
/// an envelope is never assembled by copying.
#[derive(Debug)]
pub struct OutFrame {
    /// The WebSocket frame header (2, 4 or 10 bytes used).
    head: [u8; 10],
    /// Used length of `head`.
    head_len: u8,
    /// Envelope prefix shared by every message of one phone.
    prefix: Option<Rc<[u8]>>,
    /// The payload proper (or a whole pre-encoded frame when `head_len` is 0).
    body: Payload,
    /// Envelope suffix.
    suffix: &'static [u8],
    /// When the message this frame carries was read, for the `forward` histogram.
    read_at: Option<Instant>,
    /// The rendezvous style, for the per-mode `forward` histogram.
    mode: Option<Style>,
}

impl OutFrame {
    /// A data or control frame around `prefix + body + suffix`.
    pub fn message(
        op: OpCode,
        prefix: Option<Rc<[u8]>>,
        body: Payload,
        suffix: &'static [u8],
    ) -> Self {
        let len = prefix.as_ref().map_or(0, |p| p.len()) + body.len() + suffix.len();
        let mut head = [0u8; 10];
        let head_len = codec::encode_header(op, len, &mut head) as u8;
        OutFrame {
            head,
            head_len,
            prefix,
            body,
            suffix,
            read_at: None,
            mode: None,
        }
    }

    /// A whole pre-encoded frame (close frames).
    pub fn raw(frame: Vec<u8>) -> Self {
        OutFrame {
            head: [0; 10],
            head_len: 0,
            prefix: None,
            body: Payload::from(frame),
            suffix: b"",
            read_at: None,
            mode: None,
        }
    }

    /// Mark this frame as a relayed message read at `read_at` in rendezvous style `mode`.
    pub fn relayed(mut self, read_at: Instant, mode: Style) -> Self {
        self.read_at = Some(read_at);
        self.mode = Some(mode);
        self
    }

    /// What this frame holds while queued: its ring slot and its body's allocation (the
    /// envelope prefix is shared by every frame of one phone and the suffix is static).
    /// Never zero: an empty message or a pong is not free.
    pub fn charge(&self) -> usize {
        FRAME_SLOT + self.body.allocated()
    }

    /// What a relayed message of `len` body bytes will be charged once queued.
    pub fn charge_for(len: usize) -> usize {
        FRAME_SLOT + Payload::allocated_for(len)
    }

    /// A ping or pong the relay built (a header of its own; never a raw frame).
    fn is_ping_or_pong(&self) -> bool {
        let op = self.head[0] & OPCODE_MASK;
        self.head_len > 0 && (op == OpCode::Ping.bits() || op == OpCode::Pong.bits())
    }

    /// A pong.
    fn is_pong(&self) -> bool {
        self.head_len > 0 && self.head[0] & OPCODE_MASK == OpCode::Pong.bits()
    }

    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        self.head_len as usize
            + self.prefix.as_ref().map_or(0, |p| p.len())
            + self.body.len()
            + self.suffix.len()
    }

    /// Push this frame's slices, skipping the first `skip` bytes already written.
    fn for_each_slice<'a>(&'a self, mut skip: usize, mut out: impl FnMut(&'a [u8])) {
        let parts: [&'a [u8]; 4] = [
            &self.head[..self.head_len as usize],
            self.prefix.as_deref().unwrap_or(b""),
            &self.body,
            self.suffix,
        ];
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            out(&part[skip..]);
            skip = 0;
        }
    }
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// The queue is empty.
    Done,
    /// The socket is full; wait for writability.
    Blocked,
    /// The socket failed; the queue was discarded.
    Broken,
}

impl<R: Rendezvous> Conn<R> {
    /// A pong is queued and the socket pushed back: the client sends pings without
    /// reading the answers (control frames sit at the front, so a look at the first few
    /// frames finds it).
    pub fn owes_unwritten_pong(&self) -> bool {
        self.write_waiting.get() && self.out.borrow().iter().take(3).any(OutFrame::is_pong)
    }

    /// True when the queue is at its bound: whoever feeds it must wait.
    pub fn is_full(&self, max_queue: usize) -> bool {
        self.queued.get() >= max_queue
    }

    /// Account a frame entering the queue.
    fn charge_frame(&self, frame: &OutFrame) {
        let charge = frame.charge();
        self.queued.set(self.queued.get() + charge);
        memory::charge(charge);
    }

    /// Account a frame leaving the queue (written or discarded).
    fn release_frame(&self, frame: &OutFrame) {
        let charge = frame.charge();
        self.queued.set(self.queued.get().saturating_sub(charge));
        memory::release(charge);
    }

    /// The stall clock, run by the heartbeat once per tick: true when the queue has not
    /// drained for `stall_timeout` — nothing written for whole ticks, or above `share`
    /// while the process is at its memory limit (`share` is None then not).
    pub fn stalled(&self, now: Instant, stall_timeout: Duration, share: Option<usize>) -> bool {
        let progressed = self.progressed.replace(false);
        let waiting = !self.out.borrow().is_empty();
        let over_share = share.is_some_and(|share| self.charged_bytes() > share);
        if !(waiting && !progressed || over_share) {
            self.stalled_since.set(None);
            return false;
        }
        let since = *self.stalled_since.get().get_or_insert(now);
        self.stalled_since.set(Some(since));
        now.saturating_duration_since(since) >= stall_timeout
    }

    /// Queue a frame. Returns false (and queues nothing) once the connection is closing.
    /// The frame leaves at the shard's next flush.
    pub fn send(self: &Rc<Self>, host: &impl Outbox<R>, frame: OutFrame) -> bool {
        if !self.is_open() {
            return false;
        }
        self.enqueue(host, frame);
        true
    }

    /// Queue without the open check (close frames, pongs during closing).
    pub(super) fn enqueue(self: &Rc<Self>, host: &impl Outbox<R>, frame: OutFrame) {
        self.charge_frame(&frame);
        self.out.borrow_mut().push_back(frame);
        if self.queued.get() >= host.max_queue() || memory::over_limit() {
            super::signal_queue_filled();
        }
        self.mark_dirty(host);
    }

    /// List this connection for the shard's next flush.
    fn mark_dirty(self: &Rc<Self>, host: &impl Outbox<R>) {
        if !self.dirty.replace(true) {
            host.mark_dirty(self.clone());
        }
    }

    /// Where a ping or pong goes: ahead of every message not yet begun (RFC 6455 §5.5
    /// lets control frames interleave between messages), so a slow reader behind a long
    /// backlog still hears the relay's ping and gets its pong; but after the frame being
    /// written and after raw bytes (the `101`, a moved connection's unsent bytes).
    fn control_slot(&self, out: &VecDeque<OutFrame>) -> usize {
        let started = usize::from(self.front_written.get() > 0);
        started
            + out
                .iter()
                .skip(started)
                .take_while(|f| f.head_len == 0)
                .count()
    }

    /// Queue a ping or pong ahead of the backlog. A pong replaces a pong still waiting:
    /// the relay answers the most recent ping only and holds at most one pong.
    fn enqueue_control(self: &Rc<Self>, host: &impl Outbox<R>, frame: OutFrame) {
        {
            let mut out = self.out.borrow_mut();
            let slot = self.control_slot(&out);
            let waiting_pong = out
                .iter()
                .enumerate()
                .skip(slot)
                .take_while(|(_, f)| f.is_ping_or_pong())
                .find(|(_, f)| f.is_pong())
                .map(|(i, _)| i);
            if let (true, Some(i)) = (frame.is_pong(), waiting_pong) {
                self.charge_frame(&frame);
                let old = std::mem::replace(&mut out[i], frame);
                self.release_frame(&old);
                return;
            }
            self.charge_frame(&frame);
            out.insert(slot, frame);
        }
        self.mark_dirty(host);
    }

    /// Answer a client's ping (its payload echoed), replacing a pong not yet written.
    pub fn answer_ping(self: &Rc<Self>, host: &impl Outbox<R>, payload: &[u8]) {
        if !self.is_open() {
            return;
        }
        let pong = OutFrame::message(OpCode::Pong, None, Payload::copy_of(payload), b"");
        self.enqueue_control(host, pong);
    }

    /// Queue the `101 Switching Protocols` response as the very first bytes, so the
    /// registry decision and the upgrade happen with no await in between.
    pub fn send_handshake(self: &Rc<Self>, host: &impl Outbox<R>, response: Vec<u8>) {
        self.enqueue(host, OutFrame::raw(response));
    }

    /// Start the close handshake: queue a close frame after everything already queued.
    pub fn close(self: &Rc<Self>, host: &impl Outbox<R>, code: u16, reason: &str) {
        if !self.update(|life| life.close(Instant::now())) {
            return;
        }
        tracing::debug!(peer = %self.peer(), kind = self.kind.get().name(), code, reason, "closing");
        self.enqueue(host, OutFrame::raw(codec::encode_close(code, reason)));
    }

    /// Close now, discarding queued frames not yet started (a receiver that cannot keep
    /// up): the close frame would otherwise wait behind the backlog it is about.
    pub fn close_discarding(self: &Rc<Self>, host: &impl Outbox<R>, code: u16, reason: &str) {
        {
            let mut out = self.out.borrow_mut();
            let keep = usize::from(self.front_written.get() > 0);
            while out.len() > keep {
                if let Some(dropped) = out.pop_back() {
                    self.release_frame(&dropped);
                }
            }
            if out.capacity() > RING_KEEP {
                out.shrink_to(RING_KEEP);
            }
        }
        self.close(host, code, reason);
        self.wake_room_waiters();
    }

    /// Close a connection that does not drain what it is sent (PROTOCOL §2.1): its
    /// backlog and its read-side buffers go at once, whatever it sends from now on is
    /// discarded, and it gets `1008 "not reading"` (if even that cannot be written, the
    /// close linger shuts the socket).
    pub fn close_not_reading(self: &Rc<Self>, host: &impl Outbox<R>) {
        self.failed.set(true);
        self.update(Life::discard);
        self.partial.set(Vec::new());
        self.decoder.borrow_mut().discard();
        self.recharge_held();
        self.close_discarding(host, 1008, "not reading");
    }

    /// Send a heartbeat (or takeover-probe) ping, ahead of any backlog.
    pub fn ping(self: &Rc<Self>, host: &impl Outbox<R>) {
        if !self.is_open() {
            return;
        }
        let ping = OutFrame::message(OpCode::Ping, None, Payload::empty(), b"");
        self.enqueue_control(host, ping);
        self.ping_pending.set(true);
    }

    /// Write what the socket takes now. Records `forward` latency for relayed frames
    /// that went out whole.
    pub fn flush(&self, host: &impl Outbox<R>) -> Flushed {
        let result = loop {
            if !self.life.get().may_write() {
                self.discard_queue();
                break Flushed::Broken;
            }
            if self.out.borrow().is_empty() && !self.with_link(|l| l.has_unsent()) {
                break Flushed::Done;
            }
            match self.write_some() {
                Ok(n) => self.advance(host, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Flushed::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.abort();
                }
            }
        };
        self.after_flush();
        result
    }

    /// One `sendmsg` over the front of the queue.
    fn write_some(&self) -> io::Result<usize> {
        let out = self.out.borrow();
        // On the stack and uninitialised until filled: a flush allocates nothing, and
        // does not zero 4 KiB of slots it will not use (a plain array did, at 2.7 % of
        // the relay's CPU in the pair profile).
        let mut slices = IoSlices::new();
        let mut skip = self.front_written.get();
        for frame in out.iter().take(FRAMES_PER_WRITE) {
            frame.for_each_slice(skip, |part| slices.push(IoSlice::new(part)));
            skip = 0;
        }
        let fd = self.fd();
        self.with_link(|link| link.send_vectored(fd, &slices))
    }

    /// Account `n` written bytes: pop frames that went out whole.
    fn advance(&self, host: &impl Outbox<R>, mut n: usize) {
        if n > 0 {
            self.progressed.set(true);
        }
        let mut out = self.out.borrow_mut();
        let mut stats = host.stats();
        let mut now = None;
        while let Some(front) = out.front() {
            let left = front.wire_len() - self.front_written.get();
            if n < left {
                self.front_written.set(self.front_written.get() + n);
                return;
            }
            n -= left;
            self.front_written.set(0);
            if let (Some(read_at), Some(mode)) = (front.read_at, front.mode) {
                let now = *now.get_or_insert_with(Instant::now);
                let micros = now.saturating_duration_since(read_at).as_micros() as u64;
                stats.record_forward(mode, micros);
                stats.message_out(front.body.len());
            }
            if let Some(sent) = out.pop_front() {
                self.release_frame(&sent);
            }
        }
        if out.is_empty() && out.capacity() > RING_KEEP {
            *out = VecDeque::new();
        }
    }

    /// Forget everything queued (the socket is gone).
    fn discard_queue(&self) {
        let mut out = self.out.borrow_mut();
        for frame in out.drain(..) {
            self.release_frame(&frame);
        }
        self.front_written.set(0);
    }

    /// Wake paused feeders below the low-water mark; half-close once a close went out.
    fn after_flush(&self) {
        if self.out.borrow().len() < 2 || !self.life.get().may_write() {
            self.wake_room_waiters();
        }
        self.shut_if_flushed();
    }

    /// Half-close once the close frame went out and the reader is past the handshake
    /// (`Life::shut_write`): after a flush, and when the reader finishes.
    pub(super) fn shut_if_flushed(&self) {
        if self.out.borrow().is_empty()
            && !self.with_link(|l| l.has_unsent())
            && self.update(Life::shut_write)
        {
            let fd = self.fd();
            self.with_link(|link| link.shutdown_write(fd));
        }
    }

    /// Resume every reader paused on this queue.
    pub(super) fn wake_room_waiters(&self) {
        for waker in self.room_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Every byte still queued, in order (the front frame from where it stopped).
    pub(super) fn take_unsent(&self) -> Vec<u8> {
        let wire: usize = self.out.borrow().iter().map(OutFrame::wire_len).sum();
        let mut bytes = Vec::with_capacity(wire.saturating_sub(self.front_written.get()));
        let mut skip = self.front_written.get();
        for frame in self.out.borrow().iter() {
            frame.for_each_slice(skip, |part| bytes.extend_from_slice(part));
            skip = 0;
        }
        self.discard_queue();
        bytes
    }

    /// Called by the shard when it takes this connection off its dirty list.
    pub fn take_dirty(&self) -> bool {
        self.dirty.replace(false)
    }

    /// A writer task is needed (and none runs yet).
    pub fn claim_writer(&self) -> bool {
        !self.write_waiting.replace(true)
    }

    /// Wait until this connection's queue has room (or it is gone) — the pause of a
    /// reader that feeds it.
    pub async fn wait_for_room(&self, max_queue: usize) {
        poll_fn(|cx| {
            if !self.is_full(max_queue) || self.life.get().is_gone() {
                return Poll::Ready(());
            }
            push_waker(&mut self.room_waiters.borrow_mut(), cx.waker());
            Poll::Pending
        })
        .await
    }
}

/// The writer task of a connection whose socket pushed back: wait for writability and
/// flush until the queue is empty or the socket fails; then, if the reader has ended
/// too, the shard forgets the connection.
pub async fn write_when_ready<R: Rendezvous, H: Host<R>>(host: Rc<H>, conn: Rc<Conn<R>>) {
    loop {
        if conn.stream.writable(false).await.is_err() {
            conn.abort();
        }
        if conn.flush(&*host) != Flushed::Blocked {
            break;
        }
    }
    conn.write_waiting.set(false);
    if conn.is_finished() {
        host.forget(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::payload::POOLED_MAX;

    #[test]
    fn an_empty_message_or_a_pong_is_not_free() {
        let empty = OutFrame::message(OpCode::Binary, None, Payload::copy_of(b""), b"");
        assert_eq!(empty.charge(), FRAME_SLOT + POOLED_MAX);
        assert_eq!(OutFrame::charge_for(0), empty.charge());
        let pong = OutFrame::message(OpCode::Pong, None, Payload::copy_of(b"p"), b"");
        assert!(pong.is_pong() && pong.is_ping_or_pong());
        assert!(pong.charge() > POOLED_MAX);
        let ping = OutFrame::message(OpCode::Ping, None, Payload::empty(), b"");
        assert!(ping.is_ping_or_pong() && !ping.is_pong());
        assert_eq!(ping.charge(), FRAME_SLOT);
        let close = OutFrame::raw(codec::encode_close(1000, ""));
        assert!(!close.is_ping_or_pong());
        let text = OutFrame::message(OpCode::Text, None, Payload::from(vec![b'x'; 4000]), b"");
        assert!(!text.is_ping_or_pong());
        assert!(text.charge() >= FRAME_SLOT + 4000);
    }
}
