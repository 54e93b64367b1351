//! # courier-tcp
//!
//! courier over TCP: connect to an address and get a [`courier::Client`] and
//! its driver; bind an address and serve a [`courier::Service`] on every
//! connection.
//!
//! # Model
//!
//! - **Client**: [`connect`] dials (with `TCP_NODELAY` on, since courier
//!   already coalesces frames into one write) and returns `(Client,
//!   ClientDriver)`. Poll the driver on any executor — spawn it, or join it
//!   with your calls — and wrap the client in a typed client from
//!   [`courier::service`](macro@courier::service), e.g. `CalcClient::new(client)`. [`connect_with`]
//!   takes a [`courier::ClientBuilder`] for the frame limit, the calls in
//!   flight and the timer.
//! - **Reconnecting client** (opt-in): [`connect_reconnecting`], or a
//!   [`Connector`] passed to [`courier::ClientBuilder::build_reconnecting`],
//!   re-dials with backoff whenever the connection is lost; a
//!   [`courier::client::ReconnectPolicy`] says whether calls fail fast or
//!   wait during the outage.
//! - **Server**: [`serve`] (or [`builder`]`().….serve(...)`) turns a
//!   [`TcpListener`] and a service into a [`Serve`] future. It accepts
//!   connections and runs one [`courier::Server`] per connection *inside
//!   itself* (no spawning), or on your executor with
//!   [`ServeBuilder::spawn_connections`] (`Arc<smol::Executor>`:
//!   `move |task| executor.spawn(task).detach()`). The `tokio` module's
//!   `serve` and `builder()` spawn each connection on a multi-thread
//!   runtime by default, so connections spread over its workers
//!   ([`ServeBuilder::single_task`] opts out). The connection limit, graceful
//!   shutdown, accept-error back-off and logging (the `log` crate) are
//!   described in [`courier_net`].
//! - **Backends**: the top-level items use async-io / async-net (feature
//!   `async-io`, on by default) and work under smol or any other executor;
//!   the `tokio` module (feature `tokio`) has the same API on
//!   tokio's own sockets, with no compatibility layer.
//! - **Built on [`courier_net`]**: this crate only provides [`TcpDialer`]
//!   (a [`Dial`] implementation) and [`TcpListener`] (a [`Listener`]); the
//!   functions come from [`courier_net::transport_api!`], so `courier-unix`
//!   has the same ones. [`serve_addr`] binds and serves in one step.
//!
//! Connection-level failures are [`TcpError`]s; once connected, the
//! transport's error is `std::io::Error`, and callers see
//! [`courier::CallError`]s.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "async-io")]
//! # {
//! /// A calculator.
//! #[courier::service]
//! pub trait Calc {
//!     /// Adds two numbers.
//!     async fn add(&self, a: u64, b: u64) -> u64;
//! }
//! struct Adder;
//! impl Calc for Adder {
//!     async fn add(&self, a: u64, b: u64) -> u64 {
//!         a + b
//!     }
//! }
//!
//! smol::block_on(async {
//!     let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     let shutdown = courier::Shutdown::new();
//!     let server = courier_tcp::builder()
//!         .shutdown(shutdown.clone())
//!         .serve(listener, CalcServer::new(Adder));
//!     let server = smol::spawn(server);
//!
//!     let (client, driver) = courier_tcp::connect(addr).await?;
//!     let driver = smol::spawn(driver);
//!     let calc = CalcClient::new(client);
//!     assert_eq!(calc.add(2, 3).await?, 5);
//!
//!     drop(calc); // the driver closes the connection when all handles are gone
//!     driver.await?;
//!     shutdown.trigger();
//!     server.await;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! .unwrap();
//! # }
//! ```
//!
//! # On several threads with smol
//!
//! A shared multi-thread smol `Executor` moves each woken task to whichever
//! thread takes it, which at low load costs a cross-thread wake-up per
//! reply. `ExecutorPool` (feature `executor-pool`) runs an executor per
//! thread instead: serve with its spawner, so each connection and its
//! handlers stay on one thread and connections spread over the threads,
//! and run each client's driver and callers on one `Worker`:
//!
//! ```
//! # #[cfg(feature = "executor-pool")]
//! # {
//! # #[courier::service]
//! # pub trait Calc {
//! #     async fn add(&self, a: u64, b: u64) -> u64;
//! # }
//! # #[derive(Clone)]
//! # struct Adder;
//! # impl Calc for Adder {
//! #     async fn add(&self, a: u64, b: u64) -> u64 {
//! #         a + b
//! #     }
//! # }
//! let pool = courier_tcp::ExecutorPool::new(2)?;
//! let listener = smol::block_on(courier_tcp::TcpListener::bind("127.0.0.1:0"))?;
//! let addr = listener.local_addr()?;
//! let shutdown = courier::Shutdown::new();
//! let server = pool.spawn(
//!     courier_tcp::builder()
//!         .shutdown(shutdown.clone())
//!         .spawn_connections(pool.spawner())
//!         .serve(listener, CalcServer::new(Adder)),
//! );
//!
//! let worker = pool.worker(); // this connection's thread
//! let (client, driver) = smol::block_on(courier_tcp::connect(addr))?;
//! let driver = worker.spawn(driver);
//! let calc = CalcClient::new(client);
//! let sum = worker.spawn(async move { calc.add(2, 3).await });
//! assert_eq!(smol::block_on(sum)?, 5);
//!
//! smol::block_on(driver)?; // ends once every client handle is gone
//! shutdown.trigger();
//! smol::block_on(server);
//! # }
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::io;

use courier::{TransportError, TransportErrorKind};
/// Threads that each run an executor of their own (feature
/// `executor-pool`): serve with
/// `builder().spawn_connections(pool.spawner())` and run each client's
/// driver and callers on one [`Worker`]; see [`ExecutorPool`].
#[cfg(feature = "executor-pool")]
pub use courier_net::async_io::{ExecutorPool, PoolSpawner, Worker};
pub use courier_net::{AtLimit, Dial, Listener, Serve, ServeBuilder, Stats};

#[cfg(feature = "async-io")]
mod async_io_backend;
#[cfg(feature = "async-io")]
pub use async_io_backend::*;

#[cfg(feature = "tokio")]
pub mod tokio;

/// Why a TCP connection or listener could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum TcpError {
    /// Resolving or connecting to the address failed.
    Connect(io::Error),
    /// Binding or listening on the address failed.
    Bind(io::Error),
}

impl fmt::Display for TcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpError::Connect(e) => write!(f, "TCP connect failed: {e}"),
            TcpError::Bind(e) => write!(f, "TCP bind failed: {e}"),
        }
    }
}

impl std::error::Error for TcpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TcpError::Connect(e) | TcpError::Bind(e) => Some(e),
        }
    }
}

impl TransportError for TcpError {
    fn kind(&self) -> TransportErrorKind {
        match self {
            TcpError::Connect(e) | TcpError::Bind(e) => TransportError::kind(e),
        }
    }

    fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            TcpError::Connect(e) | TcpError::Bind(e) => Some(e.kind()),
        }
    }
}

/// Turns `TCP_NODELAY` on for a stream just connected.
fn nodelay<S>(
    stream: io::Result<S>,
    set_nodelay: impl FnOnce(&S, bool) -> io::Result<()>,
) -> Result<S, TcpError> {
    let stream = stream.map_err(TcpError::Connect)?;
    set_nodelay(&stream, true).map_err(TcpError::Connect)?;
    Ok(stream)
}

/// Turns `TCP_NODELAY` on for an accepted stream.
fn accepted<S>(stream: S, set_nodelay: impl FnOnce(&S, bool) -> io::Result<()>) -> S {
    // Without it the connection still works, only slower.
    let _ = set_nodelay(&stream, true);
    stream
}
