//! The listening sockets: one exclusive bind per listener address, shared by the shards
//! of this process through duplicated descriptors, never with another process.
//!
//! Why not `SO_REUSEPORT`: the kernel lets any process of the same user join a
//! `SO_REUSEPORT` group, so a second relay started by mistake on the same port would
//! start silently and take half the new connections (a phone landing on the relay that
//! does not hold its binary gets `4404`). Without it, `bind` itself is the check: it is
//! atomic in the kernel, so of two relays racing for one address exactly one wins,
//! with no window between a check and a bind.
//!
//! `SO_REUSEADDR` stays on, so connections of a previous relay left in `TIME_WAIT` do
//! not block a restart. What can still block one for a few milliseconds after a
//! `SIGKILL` is the dead process's io_uring: the kernel tears a ring down
//! asynchronously, and the accept it had in flight keeps the old listening socket open
//! until that work has run. `EADDRINUSE` is therefore retried for [`RESTART_GRACE`]
//! before the relay gives up with [`BindError::InUse`] (exit code 2).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog: room for a connect storm while shards are busy.
const BACKLOG: i32 = 4096;

/// How long an address in use is retried: the teardown of a killed relay's io_uring
/// takes milliseconds (10 ms at most in 60 measured restarts, docs/architecture.md);
/// 2 s leaves a wide margin on a loaded host and still tells an operator who started a
/// second relay within a moment.
pub const RESTART_GRACE: Duration = Duration::from_secs(2);

/// Pause between two bind attempts while the address is in use.
const RETRY_STEP: Duration = Duration::from_millis(5);

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another live process holds the address (still in use after [`RESTART_GRACE`]).
    #[error(
        "{which} address {addr} is in use by another process (is a relay already running there?)"
    )]
    InUse {
        /// `public` or `admin`.
        which: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// Any other failure to create, bind or listen.
    #[error("cannot listen on {which} address {addr}: {source}")]
    Other {
        /// `public` or `admin`.
        which: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// Bind `addr` for the listener named `which`, retrying `EADDRINUSE` for
/// [`RESTART_GRACE`].
pub fn bind(which: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    let deadline = Instant::now() + RESTART_GRACE;
    loop {
        match bind_once(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if Instant::now() >= deadline {
                    return Err(BindError::InUse { which, addr });
                }
                std::thread::sleep(RETRY_STEP);
            }
            Err(source) => {
                return Err(BindError::Other {
                    which,
                    addr,
                    source,
                })
            }
        }
    }
}

/// `count` descriptors of one listening socket, one per shard: the shards share one
/// accept queue, and whichever shard is free takes the next connection.
pub fn share(
    which: &'static str,
    addr: SocketAddr,
    listener: TcpListener,
    count: usize,
) -> Result<Vec<TcpListener>, BindError> {
    let mut all = Vec::with_capacity(count.max(1));
    for _ in 1..count {
        let dup = listener.try_clone().map_err(|source| BindError::Other {
            which,
            addr,
            source,
        })?;
        all.push(dup);
    }
    all.insert(0, listener);
    Ok(all)
}

/// A listener's bound address (port 0 resolved); `asked` names it in an error.
pub fn bound_addr(
    which: &'static str,
    asked: SocketAddr,
    listener: &TcpListener,
) -> Result<SocketAddr, BindError> {
    listener.local_addr().map_err(|source| BindError::Other {
        which,
        addr: asked,
        source,
    })
}

/// One bind attempt: `SO_REUSEADDR`, never `SO_REUSEPORT`, non-blocking.
fn bind_once(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_address_is_refused_naming_it() {
        let first = bind_once("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        match bind("public", addr) {
            Err(BindError::InUse { which, addr: named }) => {
                assert_eq!(which, "public");
                assert_eq!(named, addr);
            }
            other => panic!("expected InUse, got {other:?}"),
        }
    }

    #[test]
    fn shared_descriptors_are_one_socket() {
        let first = bind_once("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let all = share("public", addr, first, 3).unwrap();
        assert_eq!(all.len(), 3);
        for l in &all {
            assert_eq!(l.local_addr().unwrap(), addr);
        }
    }
}
