//! The only unsafe code: socket options and limits that socket2 and std do not wrap,
//! each block with its `SAFETY` argument.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Sets `IP_BIND_ADDRESS_NO_PORT`, so binding a source address defers the port choice
/// to `connect` and ports are shared across destinations (4-tuple uniqueness).
pub fn bind_address_no_port(socket: &socket2::Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `socket` owns a live descriptor for the whole call; the option value is
    // a `c_int` on the stack and its exact size is passed, as setsockopt(2) requires.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads and clears `SO_ERROR` of a socket owned by `owner` (a monoio stream, which
/// exposes only its raw descriptor): the outcome of a non-blocking connect.
pub fn take_socket_error(owner: &impl AsRawFd) -> io::Result<Option<io::Error>> {
    // SAFETY: the descriptor belongs to `owner`, which is borrowed for the whole life
    // of `fd`, so it stays open and is not reused while we use it.
    let fd = unsafe { BorrowedFd::borrow_raw(owner.as_raw_fd()) };
    socket2::SockRef::from(&fd).take_error()
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` for getrlimit(2) to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid `rlimit`; raising soft to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Clears `O_NONBLOCK` on a socket owned by `owner` (a monoio stream).
pub fn set_blocking(owner: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: as in `take_socket_error`: `owner` keeps the descriptor open while the
    // borrowed handle lives.
    let fd = unsafe { BorrowedFd::borrow_raw(owner.as_raw_fd()) };
    socket2::SockRef::from(&fd).set_nonblocking(false)
}

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of `/proc` CPU times.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf(3) only reads a configuration value; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // Linux has used 100 for every architecture it reports on; a failure falls back.
    u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

/// CPU seconds (user + system) of this process's children that have been waited for.
pub fn children_cpu_seconds() -> io::Result<f64> {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage` for getrusage(2) to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}
