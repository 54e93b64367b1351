//! The server: a [`Service`] that turns requests into handlers, and the
//! [`Server`] future that runs one connection.
//!
//! The driver reads requests, asks the service for a [`Handler`] per call and
//! runs all handlers of the connection concurrently inside its own poll, in a
//! table whose slots each keep one reusable waker, so only ready handlers are
//! polled and nothing is spawned. With [`ServerBuilder::spawner`] each
//! handler runs as its own task on the user's executor instead (for
//! multi-core work) and its encoded reply comes back through a queue. Every
//! reply is written as soon as it is ready, out of order; replies that are
//! ready together go out in one write.
//!
//! # Guarantees
//!
//! - **Every request read gets exactly one reply** — its handler's value or
//!   a [`RemoteError`] — unless the caller cancelled it, the connection
//!   failed (a transport error, or a write the peer no longer takes), or the
//!   peer broke the protocol (then the replies already produced are still
//!   flushed before the connection closes with the error).
//! - **Concurrency** ([`ServerBuilder::max_concurrent`], default
//!   [`DEFAULT_MAX_CONCURRENT`]): at most that many handlers run at once.
//!   What happens to a request that arrives while the table is full is the
//!   [`WhenFull`] policy: [`WhenFull::Queue`] (the default) keeps reading and
//!   puts requests into a FIFO backlog bounded in bytes
//!   ([`ServerBuilder::backlog`], default `max(64 KiB, max_frame)`) — they
//!   start in order as handlers finish, a cancel removes one without a reply
//!   and a deadline that passes answers it [`RemoteError::DeadlineExceeded`]
//!   without running it; once the backlog is full the driver stops reading,
//!   so the pressure reaches the client through the transport.
//!   [`WhenFull::Reject`] answers it [`RemoteError::Overloaded`] at once.
//!   Either way cancels keep arriving while the table is full.
//! - **Unsent replies**: while more than `max(max_frame, 64 KiB)`
//!   ([`WRITE_MARK`]) bytes of replies wait for a peer that does not read,
//!   the driver reads nothing (not even cancels), so its memory stays at
//!   about that mark plus one table of replies. (The write buffer may also
//!   keep bytes already written in front of the unsent ones, never more
//!   than those: it drops them once they are as many, instead of moving
//!   the unsent bytes after every partial write.)
//! - **Fairness**: one poll handles at most [`READ_BUDGET`] frames and a
//!   bounded number of transport reads, then yields (waking itself), so a
//!   fast peer cannot starve the other connections of a task.
//! - **No lost wake-up**: the driver returns `Pending` only when every way
//!   forward waits on a registered waker (see `Server::drive`).
//! - **Cost**: cancel is O(1) (an id map), deadlines O(log n) (an indexed
//!   heap); the steady state allocates only the boxed handler of each call.
//!   After a burst, once everything is written, the write buffer shrinks to
//!   the mark and the read buffer to one read chunk plus a partial frame.
//! - **Half-close**: when the client shuts its write half between frames,
//!   every request already received (running or backlogged) is still
//!   answered; then the driver closes its write half and completes with
//!   `Ok(())`. Half a frame before end of stream is a protocol error.
//!   (A peer that vanished entirely looks the same until a write fails.)
//! - **Graceful shutdown** ([`ServerBuilder::shutdown`]): once the
//!   [`Shutdown`] is triggered, requests read afterwards and the backlog are
//!   answered [`RemoteError::ShuttingDown`], running handlers finish, and
//!   the connection closes when they have and the transport has nothing
//!   more to read right now (what it already holds is read and answered
//!   first). [`Shutdown::force`] ends the grace period: running handlers are
//!   dropped and answered `ShuttingDown`, the replies are flushed and the
//!   connection is closed.
//! - **Idle connections**: with [`ServerBuilder::idle_timeout`] (and a
//!   [`Timer`]), a connection on which no complete frame arrives, no reply
//!   bytes leave and no handler runs or waits for that long is closed with
//!   [`DriverError::IdleTimeout`], so a silent or trickling peer (slowloris)
//!   cannot hold it forever.
//! - No configuration value and no peer input makes the driver panic or
//!   overflow: sizes, timeouts and deadlines saturate.
//!
//! [`DriverError::IdleTimeout`]: crate::DriverError::IdleTimeout
//! [`RemoteError`]: crate::RemoteError
//! [`RemoteError::DeadlineExceeded`]: crate::RemoteError::DeadlineExceeded
//! [`RemoteError::Overloaded`]: crate::RemoteError::Overloaded
//! [`RemoteError::ShuttingDown`]: crate::RemoteError::ShuttingDown
//! [`Timer`]: crate::Timer

mod builder;
mod connection;
mod context;
mod driver;
mod handlers;
mod remote;
pub(crate) mod service;
mod shutdown;

pub use builder::{ServerBuilder, WhenFull};
pub use context::{CallContext, Cancelled, Request};
pub use driver::Server;
pub use service::{Handler, Service, Spawn};
pub use shutdown::{Shutdown, ShutdownTriggered};

/// The default bound on concurrent requests per connection.
pub const DEFAULT_MAX_CONCURRENT: usize = 1024;

/// The least default high-water mark of unsent replies: unless
/// [`ServerBuilder::write_mark`] sets one, the driver stops reading while
/// more than `max(max_frame, WRITE_MARK)` bytes wait to be written.
pub const WRITE_MARK: usize = 64 * 1024;

/// The least default backlog (see [`ServerBuilder::backlog`]): the default
/// is `max(DEFAULT_BACKLOG, max_frame)` bytes.
pub const DEFAULT_BACKLOG: usize = 64 * 1024;

/// Frames one poll of the driver handles before it yields to other tasks.
pub const READ_BUDGET: usize = 256;
