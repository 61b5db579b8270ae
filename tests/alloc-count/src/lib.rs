//! A global allocator that counts allocations, so tests can prove a hot path
//! allocates nothing and benchmarks can report allocations per call.
//!
//! Install it in a test or binary crate (`#[global_allocator] static A:
//! diffbc_alloc_count::Counting = diffbc_alloc_count::Counting;`), then
//! [`count`] what one thread allocates while running a closure, or read
//! [`allocations`] (every thread) before and after. It forwards to the
//! system allocator; counting costs a relaxed atomic add and a thread-local
//! check per allocation. Reallocations count; frees do not.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's allocations while [`count`] runs.
    static THIS_THREAD: Cell<Option<u64>> = const { Cell::new(None) };
}

fn note() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = THIS_THREAD.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

/// Counts every `alloc`, `alloc_zeroed` and `realloc`, then defers to [`System`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations since the process started, all threads (0 unless [`Counting`]
/// is the global allocator).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Whether [`Counting`] is this process's global allocator (a binary
/// installs it only in builds that measure, e.g. `--features
/// count-allocations`).
pub fn counting() -> bool {
    let before = allocations();
    drop(std::hint::black_box(Box::new(std::hint::black_box(7u64))));
    allocations() > before
}

/// Run `f` and return what it gave and how many allocations this thread made
/// meanwhile (other threads are not counted). A nested call's allocations
/// count toward the enclosing call too.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let outer = THIS_THREAD.with(|c| c.replace(Some(0)));
    let r = f();
    let n = THIS_THREAD.with(|c| c.take()).unwrap_or(0);
    THIS_THREAD.with(|c| c.set(outer.map(|o| o + n)));
    (r, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    #[test]
    fn counts_this_threads_allocations_only() {
        let before = allocations();
        let (v, n) = count(|| std::hint::black_box(vec![1u8; 64]));
        assert_eq!((v.len(), n), (64, 1));
        let (_, none) = count(|| std::hint::black_box(3u64.pow(5)));
        assert_eq!(none, 0);
        // Each thread counts its own: the other thread's count sees its one
        // vector, not this thread's set-up of it.
        let there = std::thread::scope(|s| {
            s.spawn(|| count(|| std::hint::black_box(vec![0u8; 32]).len()).1)
                .join()
                .expect("thread")
        });
        assert_eq!(there, 1);
        assert!(allocations() > before);
    }

    #[test]
    fn nested_counts_add_to_the_enclosing_one() {
        let ((_, inner), outer) = count(|| {
            let _a = std::hint::black_box(vec![0u8; 8]);
            count(|| std::hint::black_box(vec![0u8; 8]).len())
        });
        assert_eq!((inner, outer), (1, 2));
    }
}
