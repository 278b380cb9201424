//! All the crate's `unsafe` but one file: non-blocking socket reads and vectored writes on
//! raw descriptors, shutdown, descriptor moves between shards, and resource limits. The
//! other is `alloc_count.rs`, the counting allocator of the `alloc-count` build only
//! (never a production build). Each block carries a `SAFETY:` comment.
//!
//! Why raw calls at all: an idle connection must not pin a read buffer, so the relay waits
//! for readiness (`TcpStream::readable`) and then reads with `MSG_DONTWAIT` into a
//! per-shard scratch buffer; writes go out with one `sendmsg` over borrowed slices of the
//! connection's queue, with no owned-buffer hand-over to the runtime.
//!
//! The relay's own `recv` and `sendmsg` (once or more per relayed message) go through
//! `syscall(2)`, not glibc's `recv`/`sendmsg` wrappers: those are pthread cancellation
//! points, and marking one costs an atomic read-modify-write before and after every call
//! (`__pthread_{enable,disable}_asynccancel`, 1.5 % of the relay's CPU in the pair profile
//! of `docs/benchmarks.md`). Nothing in the relay cancels threads.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// Read what the socket has, without blocking, into the spare capacity of `buf`
/// (at most `max` bytes). Returns the bytes read (0 = the peer closed its side);
/// `WouldBlock` when nothing is there.
pub fn recv_into(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare: &mut [MaybeUninit<u8>] = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: `spare` is writable memory owned by `buf` of at least `len` bytes; recvfrom
    // writes at most `len` bytes into it (and no address: both address pointers are null)
    // and we only extend the length by what it wrote.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            spare.as_mut_ptr(),
            len,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised exactly `n <= len` bytes past the old length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Write as much of `slices` as the socket takes now, in one `sendmsg`. Returns the
/// bytes written; `WouldBlock` when the send buffer is full.
pub fn send_vectored(fd: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is a valid empty message header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = slices.len().min(IOV_MAX) as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: IoSlice is ABI-compatible with iovec (std guarantees it on Unix); the slices
    // outlive the call and sendmsg only reads them and `msg`.
    let n = unsafe { libc::syscall(libc::SYS_sendmsg, fd, &msg as *const libc::msghdr, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The most iovecs one `sendmsg` takes on Linux.
pub const IOV_MAX: usize = 1024;

/// Half-close: send FIN after what is queued in the kernel.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on any descriptor value is memory-safe; errors (ENOTCONN after the
    // peer left) are expected and ignored.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

/// Full shutdown: wakes any readiness wait on the socket with EOF so its reader ends.
pub fn shutdown_both(fd: RawFd) {
    // SAFETY: as above.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Stop a listening socket: a pending or later `accept` on it fails, which ends the
/// accept loop without cancelling an in-flight io_uring operation.
pub fn shutdown_listener(fd: RawFd) {
    // SAFETY: as above; on Linux SHUT_RD on a listener makes accept return EINVAL.
    unsafe { libc::shutdown(fd, libc::SHUT_RD) };
}

/// Give a monoio stream up as an owned descriptor, for a move to another shard. Cannot
/// fail; the condition it relies on (no other reference to the stream alive) is argued
/// at the `unsafe` block below.
pub fn into_owned_fd(stream: monoio::net::TcpStream) -> OwnedFd {
    let raw = stream.into_raw_fd();
    // SAFETY: into_raw_fd transferred sole ownership of `raw` to us (monoio panics rather
    // than return a shared descriptor, and the relay never clones its streams' fds).
    // It cannot panic here: a stream is given up only at its upgrade or handoff, when
    // every readiness wait on it has completed (and so released its reference) — the
    // only wait that can be abandoned is the handshake timeout's, after which the
    // stream is dropped, never upgraded.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Adopt a descriptor moved from another shard into this shard's runtime.
pub fn adopt_stream(fd: OwnedFd) -> io::Result<monoio::net::TcpStream> {
    let std_stream = std::net::TcpStream::from(fd);
    std_stream.set_nonblocking(true)?;
    monoio::net::TcpStream::from_std(std_stream)
}

/// A readiness handle for an upgraded WebSocket's socket. The relay does its own
/// non-blocking `recv`/`sendmsg` on the descriptor and asks the runtime only "is it
/// readable / writable yet?". monoio's `UnixStream` is nothing but its registered
/// descriptor (8 bytes), while its `TcpStream` also caches both socket addresses (80
/// bytes in all); readiness polling (`PollAdd` on io_uring, epoll on the legacy driver)
/// is the same for any socket, so a WebSocket's TCP descriptor is registered through
/// `UnixStream` and each idle connection is 72 bytes lighter. Nothing in the relay calls
/// a Unix-socket-specific method on it.
pub fn readiness_handle(fd: OwnedFd) -> io::Result<monoio::net::UnixStream> {
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream.set_nonblocking(true)?;
    monoio::net::UnixStream::from_std(std_stream)
}

/// The peer address of a connected socket (for log lines; None once it is gone).
pub fn peer_addr(fd: RawFd) -> Option<std::net::SocketAddr> {
    // SAFETY: `fd` is a live socket descriptor owned by the caller's connection for the
    // duration of this call; SockRef only borrows it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&borrowed)
        .peer_addr()
        .ok()?
        .as_socket()
}

/// Duplicate a socket descriptor (a connection moving to another shard keeps its socket
/// open through the duplicate while this shard's copy closes).
pub fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a live descriptor returns a new descriptor we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Set `TCP_NODELAY`: relayed messages are latency-sensitive and already batched by us.
pub fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// The soft open-files limit of this process.
pub fn open_files_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live local.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return 1024;
    }
    lim.rlim_cur as usize
}

/// The machine's physical memory in bytes (1 GiB if the system will not say).
pub fn physical_memory() -> usize {
    // SAFETY: sysconf only reads system configuration; it takes no pointers.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return 1 << 30;
    }
    (pages as usize).saturating_mul(page as usize)
}

/// Raise the soft open-files limit to the hard limit (no privilege needed). Returns the
/// soft limit before and after; an infinite limit reads as `usize::MAX`.
pub fn raise_open_files_limit() -> io::Result<(usize, usize)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = rlim_to_usize(lim.rlim_cur);
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads one valid rlimit from a live local; raising the soft
        // limit up to the hard one is always permitted.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, rlim_to_usize(lim.rlim_cur)))
}

/// An rlimit value as a count (`RLIM_INFINITY` saturates).
fn rlim_to_usize(value: libc::rlim_t) -> usize {
    if value == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Answer a connection refused at accept without waiting for anything: drop what the
/// client already sent (so the close is a FIN, not a reset that would destroy the
/// answer), write `resp` if the socket takes it now, and half-close. The caller then
/// drops the socket, so the refusal holds no descriptor beyond this call.
pub fn refuse_now(fd: RawFd, resp: &[u8]) {
    let mut sink = [0u8; 4096];
    for _ in 0..REFUSE_DRAIN_READS {
        // SAFETY: `sink` is a live local buffer of the length given; recv writes at most
        // that many bytes into it.
        let n = unsafe {
            libc::recv(
                fd,
                sink.as_mut_ptr().cast(),
                sink.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n <= 0 {
            break;
        }
    }
    let _ = send_vectored(fd, &[IoSlice::new(resp)]);
    shutdown_write(fd);
}

/// Reads of already-arrived bytes a refusal makes before closing: two heads' worth at the
/// default 8 KiB cap. A client that sends more, or later, may see a reset.
const REFUSE_DRAIN_READS: usize = 4;
/// mimalloc's option index for `purge_delay` (v3's `mi_option_e`, the version the
/// `mimalloc` crate builds by default; `allocator_purge_delay_is_where_we_expect`
/// checks the index against v3's documented default of 1000 ms).
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;

// The allocator's option calls; the symbols come with the `mimalloc` crate's static
// library (linked through `mimalloc` below).
extern "C" {
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
    fn mi_option_get(option: libc::c_int) -> libc::c_long;
    fn mi_collect(force: bool);
}

/// Let mimalloc give this thread's free pages back to the OS now (forced: it otherwise
/// waits until the thread next allocates or frees enough, which an idle shard does not).
pub fn allocator_collect() {
    // SAFETY: mi_collect takes no pointers; it works on the calling thread's heap.
    unsafe { mi_collect(true) }
}

/// Keep the `mimalloc` static library linked into the lib (and its tests) too.
use mimalloc as _;

/// How long mimalloc waits before giving freed memory back to the OS, in milliseconds.
pub fn allocator_purge_delay() -> libc::c_long {
    // SAFETY: mi_option_get reads one option by index; the index is a valid option.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
}

/// Set mimalloc's purge delay (milliseconds; 0 purges at once).
pub fn set_allocator_purge_delay(ms: libc::c_long) {
    // SAFETY: mi_option_set writes one option by index; the index is a valid option and
    // every value is allowed (negative disables purging).
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, ms) }
}

/// True when the peer has shut down its sending side (or the socket failed): a client
/// that left while its reader was paused and not reading.
pub fn peer_hung_up(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd in a live local; timeout 0 never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// A fresh non-blocking eventfd (counter 0), for waking a task through the runtime's
/// readiness wait on it.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor that
    // nobody else owns.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Make an eventfd readable (add 1 to its counter). Best effort: it fails only when the
/// counter would overflow, and then it is readable already.
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: write reads 8 bytes from a live local.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Reset an eventfd's counter to 0 (not readable). Best effort: `EAGAIN` means it was 0.
pub fn eventfd_drain(fd: RawFd) {
    let mut count: u64 = 0;
    // SAFETY: read writes at most 8 bytes into a live local.
    unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
}
