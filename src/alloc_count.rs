//! A counting global allocator for the `alloc-count` build (`cargo build --features
//! alloc-count`): every allocation and reallocation is counted, process-wide, before it
//! is forwarded to mimalloc. `/stats` then reports the counts at its top level
//! (`"allocations": {"count": …, "bytes": …}`), and `scripts/alloc-per-message.sh`
//! divides their growth over a steady window by the messages the relay wrote in it.
//! Never part of a production build: two relaxed atomic adds per allocation.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

use mimalloc::MiMalloc;

/// Allocations (alloc, alloc_zeroed, realloc) since the process started.
static COUNT: AtomicU64 = AtomicU64::new(0);
/// Bytes those allocations asked for.
static BYTES: AtomicU64 = AtomicU64::new(0);

/// mimalloc, counted.
#[derive(Debug)]
pub struct CountingMiMalloc;

/// Count one allocation of `size` bytes.
fn count(size: usize) {
    COUNT.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

// SAFETY: every method forwards its arguments unchanged to mimalloc's implementation of
// the same method and returns its result; counting touches only two atomics and never
// allocates, so the GlobalAlloc contract is mimalloc's.
unsafe impl GlobalAlloc for CountingMiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded as received (see the impl's comment).
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded as received.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: forwarded as received.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// (allocations, bytes) so far.
pub fn allocations() -> (u64, u64) {
    (COUNT.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed))
}
