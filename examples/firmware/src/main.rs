//! courier's heap-free server on QEMU's mps2-an386 (Cortex-M4F).
//!
//! Serves [`Blinky`] over UART0 and pushes a `tick(n)` notification every
//! [`TICK_MS`] milliseconds from the SysTick interrupt. Between calls the
//! core sleeps in WFI. After a protocol error (garbage on the line) it
//! drops input until the line is quiet, then serves again on the same
//! UART: the length-prefixed framing itself cannot find the next frame.
//!
//! Run it: `cargo run --release` in this folder (needs qemu-system-arm;
//! the UART is on stdio then), or the host test `tests/firmware_qemu.rs`.
#![no_std]
#![no_main]
// The other builds (baseline, client) leave parts of the runtime unused.
#![cfg_attr(not(feature = "service"), allow(dead_code))]

#[cfg(all(feature = "service", feature = "client"))]
compile_error!("`service` and `client` are two firmwares: pick one");

mod clock;
mod executor;
mod uart;

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m_rt::{entry, exception};
use panic_halt as _;

/// Milliseconds between two `tick` notifications.
const TICK_MS: u32 = 200;

#[cfg(any(feature = "service", feature = "client"))]
mod service {
    #[cfg(feature = "service")]
    use core::cell::Cell;

    use courier::heap_free::heapless;

    #[cfg(feature = "service")]
    use crate::clock::{millis, Sleep};

    /// What the device serves.
    #[courier::heap_free_service]
    pub trait Blinky {
        /// `a + b`, wrapping.
        async fn add(&self, a: u32, b: u32) -> u32;
        /// `data` back.
        async fn echo(&self, data: heapless::Vec<u8, 64>) -> heapless::Vec<u8, 64>;
        /// `a / b`; dividing by 0 is the application error `Err(0)`.
        async fn div(&self, a: u32, b: u32) -> Result<u32, u8>;
        /// Blinks `n` times, one blink every 10 ms; the blinks so far.
        async fn blink(&self, n: u32) -> u32;
        /// Blinks since reset (also those of blinks cut short).
        async fn blinks(&self) -> u32;
    }

    /// What the device pushes.
    #[courier::heap_free_service]
    pub trait BlinkyEvents {
        /// Sent every `TICK_MS` with a counter.
        #[oneway]
        async fn tick(&self, n: u32);
    }

    /// The device state the handlers borrow.
    #[cfg(feature = "service")]
    #[derive(Default)]
    pub struct Board {
        pub blinks: Cell<u32>,
    }

    #[cfg(feature = "service")]
    impl Blinky for Board {
        async fn add(&self, a: u32, b: u32) -> u32 {
            a.wrapping_add(b)
        }
        async fn echo(&self, data: heapless::Vec<u8, 64>) -> heapless::Vec<u8, 64> {
            data
        }
        async fn div(&self, a: u32, b: u32) -> Result<u32, u8> {
            a.checked_div(b).ok_or(0)
        }
        async fn blink(&self, n: u32) -> u32 {
            for _ in 0..n {
                Sleep::until(millis().saturating_add(10), 1).await;
                self.blinks.set(self.blinks.get().wrapping_add(1));
            }
            self.blinks.get()
        }
        async fn blinks(&self) -> u32 {
            self.blinks.get()
        }
    }
}

/// Notifications: a 64-byte outbox (three `tick` frames).
#[cfg(feature = "service")]
mod statics {
    pub static OUTBOX: courier::heap_free::Outbox<64> = courier::heap_free::Outbox::new();
    /// Frames the COBS framing skipped (feature `cobs`).
    #[cfg(feature = "cobs")]
    pub static SKIPPED: courier::cobs::FramingStats = courier::cobs::FramingStats::new();
}

static TICKS: AtomicU32 = AtomicU32::new(0);

#[entry]
fn main() -> ! {
    let core = cortex_m::Peripherals::take().unwrap();
    clock::start(core.SYST);
    let mut uart = uart::Uart0::take();
    serve(&mut uart)
}

#[cfg(feature = "service")]
fn serve(uart: &mut uart::Uart0) -> ! {
    use courier::heap_free::{Buffers, HeapFreeServer};
    use static_cell::ConstStaticCell;

    let board = service::Board::default();
    // 512-byte frame buffers in a static (counted as static RAM), zeroed
    // with `.bss` at reset, not again at run time.
    static BUFFERS: ConstStaticCell<Buffers<512, 512>> = ConstStaticCell::new(Buffers::new());
    let buffers = BUFFERS.take();
    // With COBS framing (feature `cobs`): a corrupted frame is skipped and
    // counted, the server keeps running; 512 bytes for the frame being
    // decoded and 260 for encoded bytes on their way out.
    #[cfg(feature = "cobs")]
    static COBS: ConstStaticCell<courier::cobs::CobsBuffers<512, 260>> =
        ConstStaticCell::new(courier::cobs::CobsBuffers::new());
    #[cfg(feature = "cobs")]
    let cobs = COBS.take();
    #[cfg(feature = "cobs")]
    let mut link = courier::cobs::CobsTransport::new(uart, cobs, &statics::SKIPPED);
    #[cfg(not(feature = "cobs"))]
    let mut link = uart;
    loop {
        let server = HeapFreeServer::new(
            service::BlinkyHeapFree::new(&board),
            &mut link,
            &mut *buffers,
        )
        .timer(clock::Clock)
        .outbox(&statics::OUTBOX)
        .run();
        if executor::block_on(server).is_err() {
            // Garbage: resynchronise on a quiet line (with COBS only a
            // frame that decoded and still broke a rule gets here).
            #[cfg(not(feature = "cobs"))]
            link.discard_until_quiet(200_000);
        }
    }
}

/// The client: calls the host's `add(a, 1)` every 100 ms, `a` the last
/// sum (from 1000), so the host sees the device decode each reply.
#[cfg(all(feature = "client", not(feature = "service")))]
fn serve(uart: &mut uart::Uart0) -> ! {
    use core::time::Duration;
    use courier::heap_free::{Buffers, HeapFreeClient};
    use static_cell::ConstStaticCell;

    static BUFFERS: ConstStaticCell<Buffers<512, 512>> = ConstStaticCell::new(Buffers::new());
    let buffers = BUFFERS.take();
    let mut client = HeapFreeClient::new(&mut *uart, buffers).timer(clock::Clock);
    executor::block_on(async {
        let mut a = 1000u32;
        loop {
            let args = (a, 1u32);
            let timeout = Duration::from_millis(500);
            let sum = client.call_with_timeout::<_, u32>(service::BlinkyKeys::ADD, &args, timeout);
            if let Ok(sum) = sum.await {
                a = sum;
            }
            clock::Sleep::until(clock::millis().saturating_add(100), 1).await;
        }
    })
}

/// Without the service: the same runtime echoing bytes (the footprint
/// baseline).
#[cfg(not(any(feature = "service", feature = "client")))]
fn serve(uart: &mut uart::Uart0) -> ! {
    use core::future::poll_fn;
    use courier::Transport;
    executor::block_on(async {
        let mut byte = [0u8; 1];
        loop {
            if let Ok(1) = poll_fn(|cx| uart.poll_read(cx, &mut byte)).await {
                let _ = poll_fn(|cx| uart.poll_write(cx, &byte)).await;
            }
        }
    })
}

#[exception]
fn SysTick() {
    clock::on_tick();
    if clock::millis().is_multiple_of(TICK_MS) {
        let n = TICKS.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "service")]
        {
            // From the interrupt: the outbox wakes the server. A full
            // outbox (no host reading) drops the tick.
            let _ = statics::OUTBOX.notify(service::BlinkyEventsKeys::TICK, &(n,));
        }
        #[cfg(not(feature = "service"))]
        let _ = n;
    }
}

#[exception]
unsafe fn DefaultHandler(irq: i16) {
    uart::on_interrupt(irq);
}
