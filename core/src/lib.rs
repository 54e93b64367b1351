//! # courier
//!
//! Asynchronous RPC for any executor, from microcontrollers to servers.
//!
//! A call returns a future at once; many calls share one connection and their
//! replies may come back in any order. courier never spawns a task and never
//! owns a timer or a socket: the client and the server are *driver futures*
//! that you poll on whatever executor you have.
//!
//! ```text
//!   your tasks                                          your tasks
//!  ┌──────────────┐                                   ┌───────────────────┐
//!  │ CalcClient   │ add(2, 3) ─► Call future          │ impl Calc for ... │
//!  │ (Client,     │                                   └─────────▲─────────┘
//!  │  cloneable)  │                                             │ Handler
//!  └──────┬───────┘                                   ┌─────────┴─────────┐
//!         │ encode into shared buffer,                │ CalcServer        │
//!         │ park in slot[id & 0xffff]                 │ (Service: key →   │
//!  ┌──────▼───────┐   frames: len|header|postcard     │  decode → handler)│
//!  │ ClientDriver │ ───────────────────────────────►  ├───────────────────┤
//!  │  writer ─────┼──  one write per batch of frames  │ Server driver     │
//!  │  reader ◄────┼──  responses, any order      ◄────┤  handler table,   │
//!  │  deadlines   │                                   │  deadlines,       │
//!  └──────┬───────┘                                   │  cancel, limits   │
//!         │ Transport (byte stream: courier-mem,      └─────────┬─────────┘
//!         │ courier-tcp, courier-unix, FuturesIo<S>)            │
//!         └─────────────────────────────────────────────────────┘
//! ```
//!
//! - [`wire`]: the frame header, byte by byte; [`framing`]: length prefixes
//!   and the frame limit. Both work without an allocator.
//! - [`cobs`]: COBS framing for links that lose or corrupt bytes (UARTs,
//!   radios), chosen per connection with [`Framing`]: a corrupted frame is
//!   skipped and counted, the connection stays up. It costs at most one
//!   byte per 254 plus a delimiter, and a decode buffer of the frame limit;
//!   pick it whenever the link below has no error detection of its own.
//!   Without an allocator too.
//! - [`Client`] / [`ClientDriver`]: calls in flight matched by request id,
//!   backpressure, cancellation on drop, local deadlines.
//! - [`Server`] / [`Service`]: concurrent handlers on one connection without
//!   spawning (or on your spawner), cancel and deadline handling, typed
//!   errors for unknown methods and bad arguments.
//! - [`service`]: a typed client and a server trait from one trait
//!   declaration; [`Schema`](trait@Schema): the wire schemas its method keys hash.
//! - [`heap_free`]: a server for devices without an allocator (fixed
//!   buffers, handlers that borrow the device, notifications pushed from
//!   interrupts), and [`heap_free_service`] to generate its dispatcher.
//! - [`Timer`]: the clock the drivers use for deadlines, supplied by you.
//!
//! # Example
//!
//! ```
//! /// A calculator.
//! #[courier::service]
//! pub trait Calc {
//!     /// Adds two numbers.
//!     async fn add(&self, a: u64, b: u64) -> u64;
//! }
//!
//! struct Adder;
//! impl Calc for Adder {
//!     async fn add(&self, a: u64, b: u64) -> u64 {
//!         a + b
//!     }
//! }
//!
//! let (client_io, server_io) = courier_mem::pair(64 * 1024);
//! let server = courier::ServerBuilder::new().build(server_io, CalcServer::new(Adder));
//! let (client, driver) = courier::Client::new(client_io);
//! let calc = CalcClient::new(client);
//!
//! futures::executor::block_on(async move {
//!     let calls = async move {
//!         let (x, y) = futures::join!(calc.add(2, 3), calc.add(40, 2));
//!         assert_eq!((x.unwrap(), y.unwrap()), (5, 42));
//!         // Dropping the last client handle lets the driver finish.
//!     };
//!     let (_, driver_result, server_result) = futures::join!(calls, driver, server);
//!     driver_result.unwrap();
//!     server_result.unwrap();
//! });
//! ```
//!
//! # Features
//!
//! - `std` (default, implies `alloc`): `std::io::Error` as a transport
//!   error, [`io::FuturesIo`] for `futures-io` streams, handler panics turned
//!   into error replies.
//! - `alloc`: the client and server drivers and the in-memory transport.
//!   Without it, the wire format and framing still build.
//! - `async-io`, `tokio`: [`Timer`] implementations; `tokio` also adds
//!   `io::TokioIo` for tokio streams.
//! - `tracing` (off by default; builds without `std`): spans and events
//!   through the [`tracing`](https://docs.rs/tracing/0.1) crate, below.
//!   `courier-net`, `courier-tcp` and `courier-unix` forward it.
//!
//! # Tracing
//!
//! With the `tracing` feature each call is a span on each side, and the
//! connections report what happens to them. Spans are at `DEBUG`,
//! connection events at `INFO` and above; targets start with `courier`, so
//! a filter such as `courier=debug` selects them all.
//!
//! | span or event (target) | when | fields |
//! |---|---|---|
//! | span `call` (`courier::client`) | a call's first poll to its end, in the caller's task (a child of the caller's current span) | `service`, `method` (names, empty for a hand-made call without [`Call::with_method`]), `key` (the [`MethodKey`]), `id` (request id), `outcome`, `error`, `wait_us`, `round_trip_us` |
//! | span `serve` (`courier::server`) | a handler's life, entered while it is polled (its own events nest under it) | `service`, `method`, `key`, `id`, `outcome`, `error`, `queued_us`, `handler_us` |
//! | span `connection` (`courier::server`) | a [`Server`] driver, entered while it is polled: the parent of its `serve` spans | `peer` (if the transport knows it) |
//! | event `request refused` (`courier::server`, `DEBUG`) | a request answered with an error without running (unknown method, bad arguments, overloaded, shutting down, no time left) | `key`, `id`, `error` |
//! | event `connection ended` (`courier::server`, `DEBUG`) | a server driver completed | `error`, if it failed |
//! | events `connected` (`INFO`), `disconnected` (`WARN`), `connect attempt failed` (`INFO`), `reconnecting` (`INFO`), `closed` (`INFO`) (`courier::client`) | a client's [`ConnectionState`](client::ConnectionState) changes; a reconnecting client dials again | `error`; `delay_ms` (the backoff before the next attempt) |
//!
//! Unary and streaming calls have spans (a stream's span lasts until it
//! ends); notifications ([`Notify`]) have none. `outcome` is `ok`, `app_error` (the method returns a `Result` and
//! answered `Err`: the application's error), `error` (`error` holds the
//! [`CallError`] on the client, the [`RemoteError`] the server answered on
//! the server) or `cancelled` (dropped before it ended: on the server
//! `error` says why — the caller cancelled, the deadline passed, the
//! connection was lost, a forced shutdown).
//!
//! **Where a call's time went.** Each side measures its own part (nothing
//! extra travels on the wire), in microseconds:
//!
//! ```text
//!   client: |-- wait_us --|-------------- round_trip_us ---------------|
//!            slot, encode   queued for the transport, on the wire,
//!                           in the server, back, woken
//!   server:                     |- queued_us -|--- handler_us ---|
//!                                 backlog       first poll to reply
//! ```
//!
//! `wait_us` is the time from the call's first poll until its request was
//! queued for the transport (waiting for a free slot among
//! `max_in_flight`, encoding); `round_trip_us` from then until the reply
//! was there. On the server, `queued_us` is the time a request waited in
//! the backlog for a handler slot and `handler_us` the time from the
//! handler's first poll to its reply. The time on the wire (including
//! both drivers' queues) is `round_trip_us - queued_us - handler_us` of
//! the pair of spans with the same `id` on the same connection. A
//! subscriber aggregates them as it likes: a layer's `on_record` sees each
//! field as a `u64` (sum or histogram them per `method`), and
//! `tracing-subscriber`'s `fmt` prints them when a span closes. Durations
//! need `std` (`Instant`); without it the spans carry everything else.
//!
//! **Cost.** Without a subscriber that enables `DEBUG` for courier, each
//! side of a call reads tracing's global level filter (one atomic load)
//! and builds nothing: nothing is formatted, allocated or timed, and the
//! server does not look up method names (about +1 % instructions per call
//! in `courier-bench`, see BENCHMARKS.md, "Tracing"). Turning on tracing's
//! own `log` feature anywhere in a build adds `log` checks to every span.
//! With a subscriber, each side reads the clock two or three times per
//! call, the client boxes its span state and the server its handler once
//! more.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod cobs;
pub mod error;
pub mod framing;
pub mod heap_free;
pub mod io;
pub mod schema;
pub mod timer;
pub mod wire;

#[cfg(feature = "alloc")]
pub mod channel;
#[cfg(feature = "alloc")]
pub mod client;
#[cfg(feature = "alloc")]
mod deadline;
#[cfg(feature = "alloc")]
mod id_map;
mod method_info;
#[cfg(feature = "alloc")]
pub mod peer;
#[cfg(feature = "alloc")]
mod readiness;
#[cfg(feature = "alloc")]
pub mod server;
#[cfg(feature = "alloc")]
mod stream;
mod sync;
#[cfg(feature = "alloc")]
mod trace;

#[cfg(feature = "alloc")]
pub use channel::Channel;
#[cfg(feature = "alloc")]
pub use client::{Call, CallStream, Client, ClientBuilder, ClientDriver, Notify, Upload};
pub use courier_macros::heap_free_service;
#[cfg(feature = "alloc")]
pub use courier_macros::service;
/// Derives [`Schema`](trait@Schema) from a struct's or enum's fields; see
/// the [`schema`] module.
pub use courier_macros::Schema;
pub use error::{
    CallError, ConnectError, DriverError, FrameError, NotRetried, RemoteError, TransportError,
    TransportErrorKind, Unsent,
};
pub use framing::Framing;
pub use io::Transport;
pub use method_info::MethodInfo;
pub use schema::Schema;
#[cfg(feature = "alloc")]
pub use server::{
    CallContext, Handler, Server, ServerBuilder, Service, Shutdown, ShutdownTriggered, Spawn,
    WhenFull,
};
#[cfg(feature = "alloc")]
pub use stream::{BoxStream, Streaming};
pub use timer::{NoTimer, Timer};
pub use wire::MethodKey;

/// Items the heap-free macro uses; not a public API.
#[doc(hidden)]
pub mod __heap_free {
    pub use serde;

    use crate::RemoteError;

    /// Decodes a request's arguments; leftover bytes are an error too.
    /// Never inlined: methods with the same parameter types share one
    /// copy (code size is what a device pays).
    #[inline(never)]
    pub fn decode_args<T: serde::de::DeserializeOwned>(args: &[u8]) -> Result<T, RemoteError> {
        match postcard::take_from_bytes::<T>(args) {
            Ok((value, [])) => Ok(value),
            _ => Err(RemoteError::BadRequest),
        }
    }
}

/// Items the macros use; not a public API.
#[cfg(feature = "alloc")]
#[doc(hidden)]
pub mod __private {
    pub use alloc::sync::Arc;
    pub use futures_util::Stream;

    use crate::RemoteError;

    /// Decodes a request's arguments; leftover bytes are an error too.
    pub fn decode_args<T: serde::de::DeserializeOwned>(args: &[u8]) -> Result<T, RemoteError> {
        crate::client::decode_exact(args).map_err(|_| RemoteError::BadRequest)
    }
}
