//! A one-future executor that sleeps in WFI until an interrupt wakes it.
//!
//! Why hand-written: the firmware runs one future (the server joined with
//! nothing else), so a flag set by the waker and a WFI loop is all it
//! needs; an off-the-shelf executor would add task arenas, a time driver
//! and its own footprint to what the firmware is meant to measure.
//!
//! The rule every courier executor follows: a future is polled again only
//! after its waker fired. A `Pending` from `poll_read` means the UART's
//! interrupt will wake us; re-polling with a no-op waker in a busy loop
//! instead would hang a call whose wake-up was only ever arranged through
//! the waker passed in.

use core::future::Future;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

static WOKEN: AtomicBool = AtomicBool::new(true);

const VTABLE: RawWakerVTable = RawWakerVTable::new(
    |_| RawWaker::new(core::ptr::null(), &VTABLE),
    |_| WOKEN.store(true, Ordering::Release),
    |_| WOKEN.store(true, Ordering::Release),
    |_| {},
);

/// Runs `future` to completion.
pub fn block_on<F: Future>(future: F) -> F::Output {
    // SAFETY: the vtable's functions ignore the data pointer (null) and
    // only touch a static atomic, so any thread or interrupt may call them.
    let waker = unsafe { Waker::from_raw(RawWaker::new(core::ptr::null(), &VTABLE)) };
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if WOKEN.swap(false, Ordering::Acquire) {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            continue;
        }
        // Interrupts off while checking, so a wake between the check and
        // WFI is not lost: a pending interrupt ends WFI even when masked,
        // and its handler runs once they are back on.
        cortex_m::interrupt::disable();
        if !WOKEN.load(Ordering::Acquire) {
            cortex_m::asm::wfi();
        }
        // SAFETY: no critical section is open here.
        unsafe { cortex_m::interrupt::enable() };
    }
}
