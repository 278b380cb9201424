//! A queued message's body. A relayed payload is copied once, out of the shard's shared
//! read buffer, into a buffer of its own (the receiver may hold it for as long as its
//! socket pushes back, so it cannot pin the read buffer). Small bodies take that buffer
//! from a per-thread free list and give it back when the frame is written, so a shard in
//! steady state allocates nothing per message; large bodies (over `POOLED_MAX`) are
//! allocated as they come — their copy and syscalls dwarf an allocation.
//!
//! The free list is thread-local, which here means per shard: a `Payload` never leaves
//! its shard (a connection moving to another shard carries its unsent frames as raw
//! bytes). It holds at most `POOL_LEN` buffers of `POOLED_MAX` bytes: ≤ 1 MiB per shard.

use std::cell::RefCell;
use std::ops::Deref;
use std::rc::Rc;

use bytes::Bytes;

/// Bodies up to this size are copied into a pooled buffer.
pub const POOLED_MAX: usize = 512;
/// Buffers a shard keeps for reuse.
const POOL_LEN: usize = 2048;
/// What the allocator holds besides the bytes of a `Bytes` body: its shared header (a
/// reference count, the original pointer and capacity) and the allocation's rounding.
const SHARED_OVERHEAD: usize = 32;

thread_local! {
    /// This shard's free buffers, each with capacity `POOLED_MAX`.
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A message body owned by one queued frame.
#[derive(Debug)]
pub enum Payload {
    /// A relayed payload's own copy, in a pooled buffer.
    Pooled(Vec<u8>),
    /// Anything else: built messages (notices, envelopes), large payloads, raw frames.
    Shared(Bytes),
    /// One copy shared by every receiver of a fan-out (a `/ws` Mac's frame to each of
    /// its browsers): each receiver's frame holds a reference, not a copy, so fanning out
    /// to N receivers allocates once, not N times. `Rc`: it never leaves its shard.
    Fanout(Rc<[u8]>),
}

impl Payload {
    /// The body of a relayed message: a copy of `bytes`, pooled when small.
    pub fn copy_of(bytes: &[u8]) -> Self {
        if bytes.len() > POOLED_MAX {
            return Payload::Shared(Bytes::copy_from_slice(bytes));
        }
        let mut buf = POOL
            .with(|pool| pool.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(POOLED_MAX));
        buf.extend_from_slice(bytes);
        Payload::Pooled(buf)
    }

    /// No body (pings).
    pub fn empty() -> Self {
        Payload::Shared(Bytes::new())
    }

    /// Bytes of heap this body occupies: the whole pooled buffer however little of it is
    /// used, or a shared body's length plus its header. An empty body holds nothing. A
    /// fan-out body is charged in full to every receiver that holds it: any one of them
    /// keeps the whole buffer alive until it has written it.
    pub fn allocated(&self) -> usize {
        match self {
            Payload::Pooled(buf) => buf.capacity(),
            Payload::Shared(bytes) if bytes.is_empty() => 0,
            Payload::Shared(bytes) => crate::memory::footprint(bytes.len()) + SHARED_OVERHEAD,
            Payload::Fanout(shared) => crate::memory::footprint(shared.len()) + SHARED_OVERHEAD,
        }
    }

    /// What `copy_of` a body of `len` bytes will occupy (`allocated` of the result).
    pub fn allocated_for(len: usize) -> usize {
        if len > POOLED_MAX {
            crate::memory::footprint(len) + SHARED_OVERHEAD
        } else {
            POOLED_MAX
        }
    }

    /// Buffers in this thread's free list (tests and benches).
    pub fn pooled_buffers() -> usize {
        POOL.with(|pool| pool.borrow().len())
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Pooled(buf) => buf,
            Payload::Shared(bytes) => bytes,
            Payload::Fanout(shared) => shared,
        }
    }
}

impl From<Rc<[u8]>> for Payload {
    fn from(shared: Rc<[u8]>) -> Self {
        Payload::Fanout(shared)
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Shared(bytes)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload::Shared(Bytes::from(bytes))
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Self {
        Payload::Shared(Bytes::from(text))
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        if let Payload::Pooled(buf) = self {
            let mut buf = std::mem::take(buf);
            if buf.capacity() != POOLED_MAX {
                return;
            }
            buf.clear();
            // `try_with`: a frame dropped while its thread exits finds no pool; fine.
            let _ = POOL.try_with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_LEN {
                    pool.push(buf);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_reuse_pooled_buffers_and_large_ones_do_not() {
        let before = Payload::pooled_buffers();
        let a = Payload::copy_of(b"hello");
        assert_eq!(&*a, b"hello");
        assert!(matches!(a, Payload::Pooled(_)));
        assert_eq!(
            a.allocated(),
            POOLED_MAX,
            "a 5-byte body holds a whole buffer"
        );
        assert_eq!(
            Payload::allocated_for(0),
            POOLED_MAX,
            "an empty message is not free"
        );
        drop(a);
        assert_eq!(Payload::pooled_buffers(), before + 1);
        let b = Payload::copy_of(&[7u8; POOLED_MAX]);
        assert_eq!(Payload::pooled_buffers(), before);
        assert_eq!(b.len(), POOLED_MAX);
        drop(b);
        let big = Payload::copy_of(&[1u8; POOLED_MAX + 1]);
        assert!(matches!(big, Payload::Shared(_)));
        drop(big);
        assert_eq!(Payload::pooled_buffers(), before + 1);
    }

    #[test]
    fn a_fanout_body_shares_one_copy_and_leaves_the_pool_alone() {
        let before = Payload::pooled_buffers();
        let shared: Rc<[u8]> = Rc::from(&b"terminal output"[..]);
        let bodies: Vec<Payload> = (0..16).map(|_| Payload::from(shared.clone())).collect();
        assert_eq!(Rc::strong_count(&shared), 17);
        assert!(bodies.iter().all(|b| &**b == b"terminal output"));
        assert!(bodies
            .iter()
            .all(|b| std::ptr::eq(b.as_ptr(), shared.as_ptr())));
        drop(bodies);
        assert_eq!(Rc::strong_count(&shared), 1);
        assert_eq!(Payload::pooled_buffers(), before);
    }

    #[test]
    fn the_pool_is_bounded() {
        let many: Vec<Payload> = (0..POOL_LEN + 10).map(|_| Payload::copy_of(b"x")).collect();
        drop(many);
        assert_eq!(Payload::pooled_buffers(), POOL_LEN);
    }
}
