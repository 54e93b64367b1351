//! A counting global allocator for tests: live heap bytes allocated by the
//! measuring thread, and their peak. A test binary installs it with
//! `#[global_allocator] static ALLOCATOR: heap::Counting = heap::Counting;`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to the system allocator and counts this thread's bytes.
pub struct Counting;

thread_local! {
    /// (live, peak) heap bytes since `start`; `None` when not measuring.
    static LIVE: Cell<Option<(isize, isize)>> = const { Cell::new(None) };
    /// Allocations and growing reallocations of at least [`LARGE`] bytes
    /// this thread made, counted always.
    static LARGE_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// What [`large_allocs`] counts as a large allocation: over 8 KiB.
pub const LARGE: usize = 8 * 1024 + 1;

fn count_large(size: usize) {
    if size >= LARGE {
        let _ = LARGE_ALLOCS.try_with(|n| n.set(n.get() + 1));
    }
}

/// The allocations (and growing reallocations) of at least [`LARGE`]
/// bytes this thread has made.
pub fn large_allocs() -> u64 {
    LARGE_ALLOCS.with(Cell::get)
}

fn track(delta: isize) {
    // `try_with`: the allocator also runs while thread locals are torn down.
    let _ = LIVE.try_with(|live| {
        if let Some((now, peak)) = live.get() {
            let now = now + delta;
            live.set(Some((now, peak.max(now))));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counting touches only a thread local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        count_large(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        if new_size > layout.size() {
            count_large(new_size);
        }
        // SAFETY: as for `dealloc`; the new size comes from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts counting this thread's heap bytes from zero.
pub fn start() {
    LIVE.with(|live| live.set(Some((0, 0))));
}

/// (live, peak since the last call); the peak restarts at the live level.
pub fn take_peak() -> (isize, isize) {
    LIVE.with(|live| {
        let (now, peak) = live.get().unwrap_or((0, 0));
        live.set(Some((now, now)));
        (now, peak)
    })
}

/// Stops counting; returns the bytes still live.
pub fn stop() -> isize {
    LIVE.with(|live| live.take()).map_or(0, |(now, _)| now)
}

/// Runs `f` and returns its result and the peak of heap bytes it held.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    start();
    let result = f();
    let (_, peak) = LIVE.with(|live| live.take()).unwrap_or((0, 0));
    (result, peak as usize)
}
