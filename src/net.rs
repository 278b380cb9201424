//! Connection-level plumbing below the WebSocket and HTTP layers: the process-wide count
//! of open client connections (`--max-connections`) and the permit each admitted
//! connection holds; writing a whole plain-HTTP response and the lingering close after
//! it (one implementation for the accept path, the admin endpoints and the ticket
//! sides).

use std::future::poll_fn;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::sys;
use crate::tls::Link;

/// Bytes read and dropped per syscall while lingering.
const DISCARD_CHUNK: usize = 4096;

/// How a connection closes after its final response: the response gets `write` to go
/// out; then the write half is shut and what the client still sends is read and dropped
/// for up to `time` and `bytes`, so closing with unread bytes does not turn into a reset
/// that destroys the response.
///
/// Two settings, because what a client may still be sending differs. A refused or
/// answered plain request (a head under its caps, at most a small body) is done in a
/// moment, and under a connection flood every lingering second holds a descriptor:
/// `RESPONSE`. An uploader refused mid-body (ticket PUT: 413, 502) keeps sending until
/// it has read the response — on loopback several MiB before it notices — so `UPLOAD`
/// allows more bytes and a little more time; time is the real limit there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// Longest the response may take to be written.
    pub write: Duration,
    /// Longest the client's remaining bytes are read after the write half is shut.
    pub time: Duration,
    /// Most bytes read and dropped.
    pub bytes: usize,
}

impl Linger {
    /// After a plain response or refusal (accept path, admin endpoints, ticket minting).
    pub const RESPONSE: Linger = Linger {
        write: Duration::from_secs(5),
        time: Duration::from_secs(1),
        bytes: 256 * 1024,
    };

    /// After a ticket side's final response (an uploader may be mid-body).
    pub const UPLOAD: Linger = Linger {
        write: Duration::from_secs(10),
        time: Duration::from_secs(2),
        bytes: 64 * 1024 * 1024,
    };
}

// An upload lingers at least as long and reads more than a plain response.
const _: () = assert!(Linger::UPLOAD.bytes > Linger::RESPONSE.bytes);
const _: () = assert!(Linger::UPLOAD.time.as_millis() >= Linger::RESPONSE.time.as_millis());

/// Write a whole response, then close lingering (`Linger`). The caller drops the stream
/// (which closes it) afterwards.
pub async fn respond_and_close(stream: &TcpStream, link: &mut Link, resp: &[u8], linger: Linger) {
    let written = monoio::time::timeout(linger.write, write_all(stream, link, resp)).await;
    if matches!(written, Ok(Ok(()))) {
        linger_close(stream, link, linger).await;
    }
}

/// Write a response (inside TLS on a TLS connection) and close lingering
/// (`Linger::RESPONSE`); the stream closes when this returns.
pub async fn reply_and_close(stream: TcpStream, mut link: Link, resp: &[u8]) {
    respond_and_close(&stream, &mut link, resp, Linger::RESPONSE).await;
}

/// Send what the link holds for the socket (a TLS handshake flight), waiting for
/// writability while the socket pushes back.
pub async fn flush_link(stream: &TcpStream, link: &mut Link) -> io::Result<()> {
    while !link.send_unsent(stream.as_raw_fd())? {
        stream.writable(false).await?;
    }
    Ok(())
}

/// Half-close (over TLS after a `close_notify`), then read and drop what the client
/// still sends until EOF, bounded in time and bytes (raw ciphertext over TLS: the
/// connection is only being closed).
pub async fn linger_close(stream: &TcpStream, link: &mut Link, linger: Linger) {
    link.shutdown_write(stream.as_raw_fd());
    let _ = monoio::time::timeout(linger.time, discard_until_eof(stream, linger.bytes)).await;
}

/// Read and drop up to `max` bytes until EOF.
async fn discard_until_eof(stream: &TcpStream, max: usize) {
    let mut sink = Vec::with_capacity(DISCARD_CHUNK);
    let mut total = 0;
    while total < max {
        sink.clear();
        match read_some(stream, &mut sink, DISCARD_CHUNK).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// Read what arrives on a plain socket into the spare capacity of `buf` (at most `max`
/// bytes), waiting for readability when nothing is there: the bytes read, 0 at EOF.
pub async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    loop {
        match sys::recv_into(stream.as_raw_fd(), buf, max) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.readable(false).await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

/// Write all of `bytes` (sealed over TLS), waiting for writability when the socket
/// pushes back.
pub async fn write_all(stream: &TcpStream, link: &mut Link, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match link.send_vectored(stream.as_raw_fd(), &[io::IoSlice::new(bytes)]) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable(false).await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Open client connections (public listener), shared by every shard; touched once per
/// connection, never per message.
#[derive(Debug, Default)]
pub struct ConnCount {
    /// Connections counted now.
    open: AtomicUsize,
}

impl ConnCount {
    /// Count one more open connection, unless `max` are open already.
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<ConnPermit> {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnPermit(self.clone()))
    }

    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One admitted connection's place under `--max-connections`; released on drop.
#[derive(Debug)]
pub struct ConnPermit(Arc<ConnCount>);

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Let the shard's other tasks run, and its runtime collect what the kernel completed,
/// before going on: a task that moves bytes between sockets (the ticket pump, a node
/// hand-over's pipe) calls it every few rounds, or a pair of fast sockets that never
/// blocks would starve the shard's other connections.
///
/// Waking itself at once would let the others run but would not let the runtime wait for
/// I/O: monoio waits (and so collects completions) only once no task is ready, and under
/// `IORING_SETUP_DEFER_TASKRUN` (`shard::ring_builder`) completions are collected *only*
/// in that wait. So the yielding task sleeps until the shard's next wait instead: it
/// signals this thread's yield gate, an eventfd whose readiness a small per-shard task
/// awaits, and that task wakes every yielder once the runtime has seen the signal. With
/// nothing else to do that is one `io_uring_enter` later; without a gate (no eventfd) it
/// falls back to waking itself.
pub async fn yield_now() {
    let mut parked = false;
    poll_fn(|cx| {
        if parked {
            return Poll::Ready(());
        }
        parked = true;
        if !yield_gate::wait_for_next_turn(cx.waker()) {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await
}

/// This thread's yield gate (see `yield_now`).
mod yield_gate {
    use std::cell::{Cell, RefCell};
    use std::os::fd::{AsRawFd, RawFd};
    use std::rc::Rc;
    use std::task::Waker;

    use crate::sys;

    /// The tasks waiting for the next turn, and the eventfd that asks for it.
    struct Gate {
        /// The eventfd the opener task waits on; -1 once the opener is gone.
        fd: Cell<RawFd>,
        /// Yielded tasks, woken together. Non-empty exactly while the eventfd is
        /// signalled and not yet drained: the first yielder signals it.
        waiting: RefCell<Vec<Waker>>,
    }

    thread_local! {
        static GATE: RefCell<Option<Rc<Gate>>> = const { RefCell::new(None) };
    }

    /// Queue `waker` for the shard's next turn; false when there is no gate (the caller
    /// wakes itself).
    pub(super) fn wait_for_next_turn(waker: &Waker) -> bool {
        let Some(gate) = gate() else {
            return false;
        };
        let mut waiting = gate.waiting.borrow_mut();
        if waiting.is_empty() {
            sys::eventfd_signal(gate.fd.get());
        }
        waiting.push(waker.clone());
        true
    }

    /// This thread's gate, opened (with its opener task) on first use.
    fn gate() -> Option<Rc<Gate>> {
        GATE.with_borrow_mut(|slot| {
            if let Some(gate) = slot.as_ref().filter(|g| g.fd.get() >= 0) {
                return Some(gate.clone());
            }
            let fd = sys::eventfd().ok()?;
            let raw = fd.as_raw_fd();
            let handle = sys::readiness_handle(fd).ok()?;
            let gate = Rc::new(Gate {
                fd: Cell::new(raw),
                waiting: RefCell::new(Vec::new()),
            });
            monoio::spawn(open_turns(gate.clone(), handle));
            *slot = Some(gate.clone());
            Some(gate)
        })
    }

    /// The opener: each time the runtime reports the eventfd readable (so it has waited
    /// for I/O since the signal), drain it and wake every yielded task.
    async fn open_turns(gate: Rc<Gate>, handle: monoio::net::UnixStream) {
        let _closed = Closed(gate.clone());
        while handle.readable(false).await.is_ok() {
            sys::eventfd_drain(gate.fd.get());
            let waiting = std::mem::take(&mut *gate.waiting.borrow_mut());
            for waker in waiting {
                waker.wake();
            }
        }
    }

    /// When the opener ends (its runtime shut down), nobody waits on the gate: wake the
    /// yielded tasks and let the next yield open a new gate.
    struct Closed(Rc<Gate>);

    impl Drop for Closed {
        fn drop(&mut self) {
            self.0.fd.set(-1);
            for waker in self.0.waiting.take() {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_cap_and_come_back_when_dropped() {
        let count = Arc::new(ConnCount::default());
        let a = count.admit(2).expect("first");
        let _b = count.admit(2).expect("second");
        assert!(count.admit(2).is_none(), "third is over the cap");
        assert_eq!(count.open(), 2);
        drop(a);
        assert_eq!(count.open(), 1);
        assert!(count.admit(2).is_some());
    }

    /// A task that keeps yielding must not keep the shard from collecting completions:
    /// under the deferred task run of the shards' rings (`shard::ring_builder`) they are
    /// collected only when the runtime waits, and re-queueing the yielder at once means it
    /// never does. A reader whose socket became readable before the spinner started must
    /// be woken within the spinner's first few yields, not after its last.
    #[test]
    fn a_yielding_task_lets_the_runtime_collect_completions() {
        use std::cell::Cell;
        use std::io::Write as _;
        use std::os::fd::OwnedFd;
        use std::rc::Rc;

        const SPINS: u32 = 100_000;
        let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .uring_builder(crate::shard::ring_builder())
            .enable_timer()
            .build()
            .expect("runtime");
        let woken_at = runtime.block_on(async {
            let (near, far) = std::os::unix::net::UnixStream::pair().expect("socket pair");
            let far = sys::readiness_handle(OwnedFd::from(far)).expect("far end");
            let near = sys::readiness_handle(OwnedFd::from(near)).expect("near end");
            let spins = Rc::new(Cell::new(0u32));
            let reader = monoio::spawn({
                let spins = spins.clone();
                async move {
                    far.readable(false).await.expect("readable");
                    spins.get()
                }
            });
            // One wait of the runtime submits the reader's readiness wait (the near end
            // is writable at once, so this returns as soon as the runtime has waited).
            near.writable(false).await.expect("writable");
            let mut writer =
                std::os::unix::net::UnixStream::from(sys::dup_fd(near.as_raw_fd()).expect("dup"));
            writer.write_all(b"x").expect("write");
            let spinner = monoio::spawn({
                let spins = spins.clone();
                async move {
                    while spins.get() < SPINS {
                        spins.set(spins.get() + 1);
                        yield_now().await;
                    }
                }
            });
            let woken_at = reader.await;
            spinner.await;
            woken_at
        });
        assert!(
            woken_at < 10,
            "the reader waited for {woken_at} of {SPINS} yields"
        );
    }
}
