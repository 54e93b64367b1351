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
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod error;
pub mod framing;
pub mod heap_free;
pub mod io;
pub mod schema;
pub mod timer;
pub mod wire;

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
pub use client::{Call, CallStream, Client, ClientBuilder, ClientDriver, Notify, Upload};
pub use courier_macros::heap_free_service;
#[cfg(feature = "alloc")]
pub use courier_macros::service;
/// Derives [`Schema`](trait@Schema) from a struct's or enum's fields; see
/// the [`schema`] module.
pub use courier_macros::Schema;
pub use error::{
    CallError, ConnectError, DriverError, FrameError, RemoteError, TransportError,
    TransportErrorKind, Unsent,
};
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
