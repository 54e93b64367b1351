//! Serving and calling without an allocator: a server and a client for
//! devices without a heap.
//!
//! Builds without the `alloc` feature. Everything a connection uses is
//! declared up front: a [`Buffers<RX, TX>`](Buffers) of received and unsent
//! bytes, an optional [`Outbox<N>`](Outbox) of notifications, and the
//! state machine of the service's handler, which the compiler sizes. The
//! driver future, [`HeapFreeServer::run`], borrows all of them (no `Arc`),
//! never allocates, and speaks exactly the protocol of the std [`Server`]
//! (PROTOCOL.md): a std [`Client`] calls it as it calls any courier server.
//! [`HeapFreeClient`] is the calling side: one call at a time, awaited in
//! place, with a `Buffers` of its own.
//!
//! # Model
//!
//! ```text
//!  transport ──► rx: [ running's frame gone | queued req | cancel | queued req | partial… ]
//!                        │ routed on arrival: cancels act at once, deadlines fixed
//!                        ▼ one at a time, in order
//!                  decode → Args ──► run(args): the handler future (borrows the device)
//!                                          │ value
//!  transport ◄── tx: [ reply | error | notify from the Outbox | … ]
//! ```
//!
//! - **One handler at a time, pipelined requests in order.** Requests
//!   that arrive while a handler runs wait, as received bytes, in `rx`; the
//!   next starts when the current one is answered. Replies therefore leave
//!   in request order. A frame is routed as soon as it arrives, so a
//!   cancel (R2) drops the running handler or removes a queued request
//!   without a reply, and a queued request whose deadline passes is
//!   answered DeadlineExceeded at once (R3) without running.
//! - **Backpressure.** When `rx` is full of queued requests the driver
//!   stops reading, so the pressure reaches the peer through the transport
//!   (and a cancel behind them waits too, as with the std server's full
//!   backlog).
//! - **Errors exactly as PROTOCOL.md says**: unknown key → UnknownMethod,
//!   arguments that do not decode exactly → BadRequest, timeout 0 →
//!   DeadlineExceeded, a reply whose frame exceeds `TX` →
//!   ResponseTooLarge; reserved kinds, responses, items, credit and end
//!   frames are skipped; a prefix over the frame limit (`RX - 4`), a bad
//!   version, undefined flags or a truncated header close the connection
//!   after the replies already produced are written (R5). A notification
//!   is never answered, even when unknown.
//! - **Deadlines** need a [`Timer`](crate::Timer) ([`HeapFreeServer::timer`]);
//!   without one only a timeout of 0 is answered DeadlineExceeded.
//!   Deadlines are kept in milliseconds since the connection started as
//!   32-bit numbers, so a deadline more than about 49 days after that is
//!   none.
//! - **Half-close** (R8): the requests already received are answered, then
//!   the driver closes its write half and returns `Ok(())`.
//! - **Panics** are not caught (there is no unwinding on most devices): a
//!   handler that panics takes the firmware's panic path.
//! - **Waking**: handlers' wakers may fire from interrupt handlers; the
//!   [`Outbox`] is guarded by a critical section (`critical-section`).
//!
//! # Trade-offs against the std server
//!
//! | | std [`Server`] | [`HeapFreeServer`] |
//! |---|---|---|
//! | handlers per connection | many at once (`max_concurrent`) | one at a time; the others wait in order |
//! | handler | `Send + 'static`, boxed | any future, may borrow the device, `!Send` |
//! | memory | grows with the traffic, bounded by marks | `RX + TX` bytes and the largest handler state, fixed at compile time |
//! | frame limit | 1 MiB by default | `RX - 4` |
//! | streams (kinds 4–6) | yes | no: a streaming method is an unknown key |
//! | notifications | receives | receives, and pushes from an [`Outbox`] |
//! | panics | answered HandlerPanicked | not caught |
//! | graceful shutdown, idle timeout | yes | no (drop the future) |
//!
//! One slow handler delays every request behind it: keep handlers short,
//! or split long work into a method that starts it and a notification
//! that reports its end.
//!
//! # Memory
//!
//! `RX` and `TX` are the whole I/O memory of a connection: `rx` holds the
//! requests waiting to start and the frame arriving, `tx` the replies not
//! yet taken by the transport. The driver future adds the largest
//! handler's state (the service's futures, sized by the compiler), the
//! decoded arguments of one call and one reply value, and a few words;
//! `core::mem::size_of_val(&server.run())` tells it for a given service.
//!
//! # Example
//!
//! The device's declaration and the host's (in two crates in practice: the
//! firmware and the host program), the std client calling the heap-free
//! server over an in-memory connection:
//!
//! ```
//! use core::cell::Cell;
//! use courier::heap_free::{Buffers, HeapFreeServer};
//!
//! mod device {
//!     #[courier::heap_free_service]
//!     pub trait Calc {
//!         async fn add(&self, a: u64, b: u64) -> u64;
//!         async fn div(&self, a: u64, b: u64) -> Result<u64, u8>;
//!     }
//! }
//!
//! mod host {
//!     #[courier::service]
//!     pub trait Calc {
//!         async fn add(&self, a: u64, b: u64) -> u64;
//!         async fn div(&self, a: u64, b: u64) -> Result<u64, u8>;
//!     }
//! }
//!
//! // Device state the handlers borrow; `Cell` makes them `!Send`.
//! struct Device {
//!     calls: Cell<u32>,
//! }
//! impl device::Calc for Device {
//!     async fn add(&self, a: u64, b: u64) -> u64 {
//!         self.calls.set(self.calls.get() + 1);
//!         a.wrapping_add(b)
//!     }
//!     async fn div(&self, a: u64, b: u64) -> Result<u64, u8> {
//!         a.checked_div(b).ok_or(0)
//!     }
//! }
//!
//! let board = Device { calls: Cell::new(0) };
//! let mut buffers = Buffers::<256, 256>::new();
//! let (client_io, server_io) = courier_mem::pair(1024);
//! let server =
//!     HeapFreeServer::new(device::CalcHeapFree::new(&board), server_io, &mut buffers).run();
//! let (client, driver) = courier::Client::new(client_io);
//! let calc = host::CalcClient::new(client);
//! futures::executor::block_on(async {
//!     let calls = async move {
//!         assert_eq!(calc.add(2, 3).await, Ok(5));
//!         assert_eq!(calc.div(1, 0).await, Ok(Err(0)));
//!         // Dropping the client ends the connection; the server returns.
//!     };
//!     let (_, driver, server) = futures::join!(calls, driver, server);
//!     driver.unwrap();
//!     server.unwrap();
//! });
//! assert_eq!(board.calls.get(), 1);
//! ```
//!
//! [`Server`]: crate::Server
//! [`Client`]: crate::Client

use core::time::Duration;

mod client;
mod outbox;
mod server;

pub use client::HeapFreeClient;
/// The `heapless` crate, whose `Vec<T, N>` and `String<N>` have the wire
/// schemas of `Vec<T>` and `String`.
pub use heapless;
pub use outbox::{Outbox, OutboxError};
pub use server::{Buffers, HeapFreeServer, HeapFreeService, NoOutbox, NotifySource};

/// `d` in milliseconds rounded up, saturating at `u32::MAX` (a timeout
/// on the wire, PROTOCOL.md R3: the peer never gets less than asked):
/// what `d.as_nanos().div_ceil(1_000_000)` gives, without the 128-bit
/// division, which is large code on a Cortex-M.
pub(crate) fn millis_rounded_up(d: Duration) -> u32 {
    let secs = u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let part = d.subsec_nanos().div_ceil(1_000_000);
    secs.saturating_mul(1000).saturating_add(part)
}

/// Moves `buf[from..to]` to the front of `buf`.
///
/// Swaps instead of `copy_within`: the compiler turns a copy into a call
/// of `memmove`, which costs 1.5 KB of code on a Cortex-M; these buffers
/// are a few hundred bytes, moved rarely.
pub(crate) fn move_to_front(buf: &mut [u8], from: usize, to: usize) {
    let to = to.min(buf.len());
    for (i, j) in (from..to).enumerate() {
        buf.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    /// The conversion against the 128-bit arithmetic it replaces, at the
    /// millisecond edges and around `u32::MAX` milliseconds.
    #[test]
    fn rounded_up_milliseconds_match_the_128_bit_ones() {
        let max_ms = u64::from(u32::MAX);
        let secs = [
            0,
            1,
            999,
            max_ms / 1000 - 1,
            max_ms / 1000,
            max_ms / 1000 + 1,
            u64::MAX,
        ];
        let nanos = [
            0,
            1,
            999_999,
            1_000_000,
            1_000_001,
            295_000_000,
            295_999_999,
            296_000_000,
            999_999_999,
        ];
        for s in secs {
            for n in nanos {
                let d = Duration::new(s, n);
                let up = u32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX);
                assert_eq!(super::millis_rounded_up(d), up, "{d:?}");
            }
        }
    }

    #[test]
    fn move_to_front_overlapping_and_not() {
        for from in 0..8 {
            for to in from..=10 {
                let mut buf: [u8; 8] = core::array::from_fn(|i| i as u8);
                super::move_to_front(&mut buf, from, to);
                let moved = to.min(8).saturating_sub(from);
                let expected: [u8; 8] = core::array::from_fn(|i| i as u8);
                assert_eq!(&buf[..moved], &expected[from..from + moved], "{from}..{to}");
            }
        }
    }
}
