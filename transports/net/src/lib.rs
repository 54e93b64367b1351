//! # courier-net
//!
//! The listener-serving machinery that `courier-tcp` and `courier-unix`
//! share: an accept loop that runs one [`courier::Server`] per connection,
//! with a connection limit, graceful shutdown and accept errors that never
//! stop the server. It is generic over a [`Listener`] (anything that accepts
//! connections that are [`courier::Transport`]s) and a [`courier::Timer`],
//! so it runs on any executor; the socket crates only add their listeners.
//!
//! # Model
//!
//! [`ServeBuilder::serve`] returns a [`Serve`] future. Polling it accepts
//! connections and polls every connection's server *inside the same task*
//! (in a `FuturesUnordered`): nothing is spawned, which suits one-core and
//! embedded-style executors. [`ServeBuilder::serve_spawned`] instead hands
//! each connection to a [`courier::Spawn`] of your executor so connections
//! run on all cores; the `Serve` future still tracks them for the limit and
//! for shutdown.
//!
//! - **Connection limit** ([`ServeBuilder::max_connections`]): with
//!   [`AtLimit::Pause`] (the default) the loop stops accepting while the
//!   limit is reached, so new clients wait in the kernel's backlog and are
//!   served as soon as a connection closes; with [`AtLimit::Reject`] it
//!   accepts them and closes them at once, logging each one.
//! - **Graceful shutdown** ([`ServeBuilder::shutdown`]): when the
//!   [`courier::Shutdown`] signal is triggered the listener is dropped (no
//!   new connections; a Unix socket file is removed), every connection
//!   answers new and backlogged requests with `RemoteError::ShuttingDown`
//!   and closes once its calls in flight have finished, and the `Serve`
//!   future completes when all connections are closed. If the grace period
//!   ([`ServeBuilder::grace_period`]) passes first, the loop calls
//!   [`courier::Shutdown::force`]: every connection drops its running
//!   handlers, answers them `ShuttingDown` and flushes its replies; after at
//!   most [`FLUSH_PERIOD`] more (for clients that do not read) the remaining
//!   connections are dropped. Every call a connection received therefore
//!   gets a reply, unless its client stops reading. `force` acts on the
//!   signal, so it reaches every server built with the same signal.
//! - **Overload** ([`ServeBuilder::when_full`], [`ServeBuilder::backlog`]):
//!   what a connection does with requests beyond
//!   [`ServeBuilder::max_concurrent`] — queue them in a backlog bounded in
//!   bytes (the default; then it stops reading) or answer
//!   `RemoteError::Overloaded`; see [`courier::WhenFull`].
//! - **Accept errors** (`EMFILE`, `ENFILE`, `ENOBUFS`, ...) are logged and
//!   retried after a back-off that doubles from
//!   [`ServeBuilder::accept_backoff`] up to one second, or as soon as a
//!   connection closes (which frees a descriptor). Errors that only concern
//!   the connection being accepted (`ECONNABORTED`, `ECONNRESET`) are
//!   retried at once. Accepting never ends the server.
//! - **Logging** goes through the [`log`] crate (target `courier_net`):
//!   a connection that ends with an error — an oversized or malformed frame,
//!   a reset — is logged at `warn` level with its peer and the reason;
//!   accept errors at `error`, rejected connections at `warn`, shutdown at
//!   `info`, clean closes at `debug`. Install any `log` backend to see them.
//!
//! Per-connection settings ([`ServeBuilder::max_frame`],
//! [`ServeBuilder::max_concurrent`], [`ServeBuilder::when_full`],
//! [`ServeBuilder::backlog`], [`ServeBuilder::idle_timeout`],
//! [`ServeBuilder::handler_spawner`], the timer for deadlines) are passed to
//! each connection's [`courier::ServerBuilder`], which documents the
//! guarantees of one connection (every request answered, half-close,
//! backpressure, fairness). Every duration and size saturates: no
//! configuration value panics.
//!
//! # Example
//!
//! A listener over in-memory connections; `courier-tcp` and `courier-unix`
//! provide real ones.
//!
//! ```
//! use std::io;
//! use std::task::{Context, Poll};
//!
//! use courier_net::{Listener, ServeBuilder};
//!
//! courier::service! {
//!     /// Echoes.
//!     pub trait Echo {
//!         /// Returns `x`.
//!         async fn echo(x: u32) -> u32;
//!     }
//! }
//! struct Imp;
//! impl Echo for Imp {
//!     async fn echo(&self, x: u32) -> u32 {
//!         x
//!     }
//! }
//!
//! /// Hands out one prepared connection, then nothing.
//! struct One(Option<courier_mem::MemTransport>);
//! impl Listener for One {
//!     type Conn = courier_mem::MemTransport;
//!     type Peer = &'static str;
//!     fn poll_accept(&mut self, _: &mut Context<'_>) -> Poll<io::Result<(Self::Conn, Self::Peer)>> {
//!         match self.0.take() {
//!             Some(conn) => Poll::Ready(Ok((conn, "memory"))),
//!             None => Poll::Pending,
//!         }
//!     }
//! }
//!
//! let (client_io, server_io) = courier_mem::pair(4096);
//! let shutdown = courier::Shutdown::new();
//! let serve = ServeBuilder::new(courier::NoTimer)
//!     .shutdown(shutdown.clone())
//!     .serve(One(Some(server_io)), EchoServer::new(Imp));
//! let (client, driver) = courier::Client::new(client_io);
//! let echo = EchoClient::new(client);
//! futures::executor::block_on(async move {
//!     let calls = async move {
//!         assert_eq!(echo.echo(7).await.unwrap(), 7);
//!         shutdown.trigger();
//!     };
//!     let (_, _, driver) = futures::join!(calls, serve, driver);
//!     driver.unwrap();
//! });
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use courier::{
    Server, ServerBuilder, Service, Shutdown, ShutdownTriggered, Spawn, Timer, Transport, WhenFull,
};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;

mod api;
#[cfg(feature = "async-io")]
pub mod async_io;
mod dial;

pub use dial::{connect_with, Connector, Dial};

/// The default connection limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The default grace period of a graceful shutdown.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// The default first back-off after a failed accept.
pub const DEFAULT_ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// How long connections may still flush their replies after the grace
/// period ended ([`courier::Shutdown::force`]) before they are dropped.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);

/// The longest back-off after failed accepts.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts per poll before the loop yields to other tasks.
const ACCEPT_BUDGET: usize = 64;

/// A source of connections: a TCP or Unix listener, or a test double.
pub trait Listener {
    /// An accepted connection.
    type Conn: Transport;
    /// Who connected, for log messages.
    type Peer: fmt::Display;

    /// Accepts one connection; `Pending` until one arrives. An error is
    /// reported and retried, never fatal.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Conn, Self::Peer)>>;
}

/// What the accept loop does while the connection limit is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AtLimit {
    /// Stop accepting: new clients wait in the kernel's backlog (their
    /// connect succeeds, their calls wait) until a connection closes.
    #[default]
    Pause,
    /// Accept and close at once, logging a warning: clients see their
    /// connection closed and their calls fail with a closed-connection error.
    Reject,
}

/// Configures the accept loop and the per-connection servers.
#[must_use]
#[derive(Debug)]
pub struct ServeBuilder<Tm> {
    timer: Tm,
    max_connections: usize,
    at_limit: AtLimit,
    grace: Duration,
    shutdown: Option<Shutdown>,
    /// The template every connection's server is built from.
    server: ServerBuilder<Tm>,
    accept_backoff: Duration,
}

impl<Tm: Timer + Clone> ServeBuilder<Tm> {
    /// Defaults: [`DEFAULT_MAX_CONNECTIONS`] connections, [`AtLimit::Pause`],
    /// a [`DEFAULT_GRACE_PERIOD`], no shutdown signal, courier's default frame
    /// and concurrency limits, handlers run inside their connection.
    ///
    /// `timer` enforces call deadlines, the grace period and the accept
    /// back-off. With [`courier::NoTimer`] there is no grace period (shutdown
    /// waits for every call) and a failed accept is retried only when a
    /// connection closes.
    pub fn new(timer: Tm) -> Self {
        ServeBuilder {
            timer: timer.clone(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            at_limit: AtLimit::Pause,
            grace: DEFAULT_GRACE_PERIOD,
            shutdown: None,
            server: ServerBuilder::new().timer(timer.clone()),
            accept_backoff: DEFAULT_ACCEPT_BACKOFF,
        }
    }

    /// At most `n` connections open at once (at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// What to do with new clients while the limit is reached.
    pub fn at_limit(mut self, policy: AtLimit) -> Self {
        self.at_limit = policy;
        self
    }

    /// How long a graceful shutdown waits for calls in flight before it
    /// forces them to end (see the [crate docs](crate)). `Duration::MAX`
    /// (or any time past the timer's range) waits for ever.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The signal that starts a graceful shutdown.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.server = self.server.shutdown(shutdown.clone());
        self.shutdown = Some(shutdown);
        self
    }

    /// The largest frame accepted or sent per connection, in bytes; a client
    /// announcing a larger one is disconnected (and logged).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.server = self.server.max_frame(bytes);
        self
    }

    /// At most `n` calls of one connection run at once.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.server = self.server.max_concurrent(n);
        self
    }

    /// What a connection does with requests that arrive while
    /// `max_concurrent` calls run (see [`ServerBuilder::when_full`]).
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.server = self.server.when_full(policy);
        self
    }

    /// Bytes of requests a connection keeps waiting for a free slot with
    /// [`WhenFull::Queue`] (see [`ServerBuilder::backlog`]).
    pub fn backlog(mut self, bytes: usize) -> Self {
        self.server = self.server.backlog(bytes);
        self
    }

    /// Closes a connection on which nothing happened for `timeout` (see
    /// [`ServerBuilder::idle_timeout`]); it is logged like any failed
    /// connection.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.server = self.server.idle_timeout(timeout);
        self
    }

    /// Runs each call's handler as a task on `spawner` (see
    /// [`ServerBuilder::spawner`]).
    pub fn handler_spawner(mut self, spawner: impl Spawn + 'static) -> Self {
        self.server = self.server.spawner(spawner);
        self
    }

    /// The first pause after a failed accept; it doubles on each further
    /// failure, up to one second.
    pub fn accept_backoff(mut self, backoff: Duration) -> Self {
        self.accept_backoff = backoff;
        self
    }

    /// Serves `service` on every connection `listener` accepts; connections
    /// run inside the returned future.
    pub fn serve<L, S>(self, listener: L, service: S) -> Serve<L, S, Tm>
    where
        L: Listener,
        S: Service + Clone,
    {
        let shutdown = self.shutdown.as_ref().map(Shutdown::triggered);
        let tracker = Arc::new(Tracker::default());
        let accept_wake = Arc::new(AcceptWake {
            ready: AtomicBool::new(true),
            tracker: tracker.clone(),
        });
        Serve {
            listener: Some(listener),
            service,
            backoff: self.accept_backoff,
            next_backoff: self.accept_backoff,
            config: self,
            local: FuturesUnordered::new(),
            spawn: None,
            tracker,
            accept_waker: Waker::from(accept_wake.clone()),
            accept_wake,
            shutdown,
            sleep: None,
            sleeping: Sleeping::No,
            next_id: 0,
        }
    }

    /// Like [`serve`](ServeBuilder::serve), but each connection runs as a
    /// task on `spawner`, so connections use every core. The returned future
    /// still enforces the limit and the shutdown, and dropping it closes the
    /// spawned connections too.
    pub fn serve_spawned<L, S>(
        self,
        listener: L,
        service: S,
        spawner: impl Spawn + 'static,
    ) -> Serve<L, S, Tm>
    where
        L: Listener,
        L::Conn: Send + 'static,
        L::Peer: Send + 'static,
        S: Service + Clone + Send + 'static,
        Tm: Send + 'static,
        Tm::Sleep: Send + 'static,
    {
        let mut serve = self.serve(listener, service);
        serve.spawn = Some(Box::new(
            move |conn: Connection<L::Conn, S, Tm, L::Peer>| {
                let (abort, registration) = AbortHandle::new_pair();
                conn.guard.tracker.set_abort(conn.guard.id, abort);
                let task = Abortable::new(conn, registration);
                spawner.spawn(Box::pin(async move {
                    let _ = task.await;
                }));
            },
        ));
        serve
    }

    fn server_for<T: Transport, S: Service>(&self, conn: T, service: S) -> Server<T, S, Tm> {
        self.server.clone().build(conn, service)
    }
}

/// Which wait the serve future's one sleep is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sleeping {
    No,
    Backoff,
    Grace,
    /// After `force`: the connections flush their last replies.
    Flush,
}

/// Hands a connection to the user's spawner.
type SpawnConn<L, S, Tm> = Box<dyn Fn(ConnOf<L, S, Tm>) + Send + Sync>;

/// The connection future of a listener's connections.
type ConnOf<L, S, Tm> = Connection<<L as Listener>::Conn, S, Tm, <L as Listener>::Peer>;

/// Accepts connections and serves them; see the [crate docs](crate).
///
/// Completes only after a graceful shutdown (all connections closed, or the
/// grace period over). Dropping it closes the listener and every connection,
/// spawned ones included.
#[must_use = "a server does nothing unless polled"]
pub struct Serve<L: Listener, S, Tm: Timer> {
    listener: Option<L>,
    service: S,
    config: ServeBuilder<Tm>,
    local: FuturesUnordered<ConnOf<L, S, Tm>>,
    spawn: Option<SpawnConn<L, S, Tm>>,
    tracker: Arc<Tracker>,
    shutdown: Option<ShutdownTriggered>,
    sleep: Option<Pin<Box<Tm::Sleep>>>,
    sleeping: Sleeping,
    backoff: Duration,
    next_backoff: Duration,
    next_id: u64,
    /// Set when the listener may have a connection: connections running
    /// inside this future wake it far more often than clients connect, and
    /// an accept attempt costs a system call.
    accept_wake: Arc<AcceptWake>,
    accept_waker: Waker,
}

/// The waker the listener is polled with: marks it ready, then wakes the
/// serve task.
struct AcceptWake {
    ready: AtomicBool,
    tracker: Arc<Tracker>,
}

impl Wake for AcceptWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        self.tracker.waker.wake();
    }
}

impl<L: Listener, S, Tm: Timer> Unpin for Serve<L, S, Tm> {}

impl<L: Listener, S, Tm: Timer> fmt::Debug for Serve<L, S, Tm> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("accepting", &self.listener.is_some())
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl<L: Listener, S, Tm: Timer> Serve<L, S, Tm> {
    /// Connections open right now.
    pub fn connections(&self) -> usize {
        self.tracker.live()
    }

    /// A handle that reports the number of open connections after this
    /// future was moved into a task.
    pub fn stats(&self) -> Stats {
        Stats(self.tracker.clone())
    }
}

/// Reports on a running [`Serve`]; cheap to clone.
#[derive(Clone)]
pub struct Stats(Arc<Tracker>);

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("connections", &self.connections())
            .finish()
    }
}

impl Stats {
    /// Connections open right now.
    pub fn connections(&self) -> usize {
        self.0.live()
    }
}

impl<L, S, Tm> Future for Serve<L, S, Tm>
where
    L: Listener,
    S: Service + Clone,
    Tm: Timer + Clone,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.tracker.waker.register(cx.waker());
        this.poll_local(cx);
        if this.listener.is_some() && this.shutdown_triggered(cx) {
            this.begin_shutdown();
        }
        if this.listener.is_none() {
            return this.poll_drain(cx);
        }
        if this.accept(cx) {
            this.poll_local(cx);
        }
        Poll::Pending
    }
}

impl<L, S, Tm> Serve<L, S, Tm>
where
    L: Listener,
    S: Service + Clone,
    Tm: Timer + Clone,
{
    /// Polls the connections that run inside this future.
    fn poll_local(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(())) = self.local.poll_next_unpin(cx) {}
    }

    fn shutdown_triggered(&mut self, cx: &mut Context<'_>) -> bool {
        self.shutdown
            .as_mut()
            .is_some_and(|signal| Pin::new(signal).poll(cx).is_ready())
    }

    fn begin_shutdown(&mut self) {
        // Dropping the listener stops accepting (and removes a socket file).
        self.listener = None;
        log::info!(
            target: "courier_net",
            "shutting down: no new connections; waiting up to {:?} for {} open connection(s)",
            self.config.grace,
            self.tracker.live()
        );
        self.sleep_for(self.config.grace, Sleeping::Grace);
    }

    /// Arms the one sleep `wait` from now (saturating: a far wait is a
    /// wait for ever, never an overflow).
    fn sleep_for(&mut self, wait: Duration, why: Sleeping) {
        let timer = &self.config.timer;
        let at = timer.now().saturating_add(wait);
        self.sleep = Some(Box::pin(timer.sleep_until(at)));
        self.sleeping = why;
    }

    /// After shutdown: waits for the connections; when the grace period is
    /// over, forces the calls in flight to end and waits at most
    /// [`FLUSH_PERIOD`] for their replies to be flushed.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let live = self.tracker.live();
            if live == 0 {
                log::info!(target: "courier_net", "shutdown complete");
                return Poll::Ready(());
            }
            let sleeping = self.sleeping;
            match sleeping {
                Sleeping::Grace if self.sleep_fired(cx) => {
                    log::warn!(
                        target: "courier_net",
                        "grace period over: ending the calls in flight on {live} connection(s)"
                    );
                    if let Some(signal) = &self.config.shutdown {
                        signal.force();
                    }
                    self.sleep_for(FLUSH_PERIOD, Sleeping::Flush);
                    // The connections inside this future end now, or
                    // once their replies are written.
                    self.poll_local(cx);
                }
                Sleeping::Flush if self.sleep_fired(cx) => {
                    log::warn!(
                        target: "courier_net",
                        "closing {live} connection(s) that did not take their last replies"
                    );
                    self.close_all();
                    return Poll::Ready(());
                }
                _ => return Poll::Pending,
            }
        }
    }

    fn sleep_fired(&mut self, cx: &mut Context<'_>) -> bool {
        let fired = self
            .sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if fired {
            self.sleep = None;
            self.sleeping = Sleeping::No;
        }
        fired
    }

    fn close_all(&mut self) {
        self.local.clear();
        self.tracker.abort_all();
    }

    /// Accepts what is waiting. Returns whether a local connection started.
    fn accept(&mut self, cx: &mut Context<'_>) -> bool {
        if self.sleeping == Sleeping::Backoff {
            // A closed connection frees a descriptor: retry at once.
            let closed = self.tracker.take_closed();
            if !closed && !self.sleep_fired(cx) {
                return false;
            }
            self.sleep = None;
            self.sleeping = Sleeping::No;
        }
        let mut started = false;
        for _ in 0..ACCEPT_BUDGET {
            let live = self.tracker.live();
            if live >= self.config.max_connections && self.config.at_limit == AtLimit::Pause {
                // A closing connection wakes this task.
                self.tracker.take_closed();
                return started;
            }
            let Some(listener) = self.listener.as_mut() else {
                return started;
            };
            if !self.accept_wake.ready.swap(false, Ordering::AcqRel) {
                return started;
            }
            let poll = listener.poll_accept(&mut Context::from_waker(&self.accept_waker));
            if poll.is_ready() {
                // There may be more: look again next time.
                self.accept_wake.ready.store(true, Ordering::Release);
            }
            match poll {
                Poll::Pending => return started,
                Poll::Ready(Ok((conn, peer))) => {
                    self.next_backoff = self.backoff;
                    if live >= self.config.max_connections {
                        log::warn!(
                            target: "courier_net",
                            "rejected connection from {peer}: {live} connections open (limit {})",
                            self.config.max_connections
                        );
                        drop(conn);
                        continue;
                    }
                    started |= self.start(conn, peer);
                }
                Poll::Ready(Err(e)) if is_per_connection(&e) => {
                    log::debug!(target: "courier_net", "a connection failed before accept: {e}");
                }
                Poll::Ready(Err(e)) => {
                    self.back_off(e, cx);
                    return started;
                }
            }
        }
        cx.waker().wake_by_ref();
        started
    }

    fn back_off(&mut self, error: io::Error, cx: &mut Context<'_>) {
        let wait = self.next_backoff;
        log::error!(
            target: "courier_net",
            "accept failed: {error}; retrying in {wait:?} or when a connection closes"
        );
        self.next_backoff = wait.saturating_mul(2).min(MAX_ACCEPT_BACKOFF).max(wait);
        self.tracker.take_closed();
        self.sleep_for(wait, Sleeping::Backoff);
        if self.sleep_fired(cx) {
            cx.waker().wake_by_ref();
        }
    }

    /// Starts serving one connection. Returns whether it runs locally.
    fn start(&mut self, conn: L::Conn, peer: L::Peer) -> bool {
        let id = self.next_id;
        self.next_id += 1;
        log::debug!(target: "courier_net", "connection #{id} from {peer} accepted");
        let server = self.config.server_for(conn, self.service.clone());
        let connection = Connection {
            server,
            peer,
            guard: Guard::new(self.tracker.clone(), id),
        };
        match &self.spawn {
            Some(spawn) => {
                spawn(connection);
                false
            }
            None => {
                self.local.push(connection);
                true
            }
        }
    }
}

impl<L: Listener, S, Tm: Timer> Drop for Serve<L, S, Tm> {
    fn drop(&mut self) {
        self.tracker.abort_all();
    }
}

/// Accept errors that concern only the connection being accepted.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// One connection's server, logging how it ended.
struct Connection<T, S, Tm: Timer, P> {
    server: Server<T, S, Tm>,
    peer: P,
    guard: Guard,
}

impl<T, S, Tm: Timer, P> Unpin for Connection<T, S, Tm, P> {}

impl<T: Transport, S: Service, Tm: Timer, P: fmt::Display> Future for Connection<T, S, Tm, P> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let result = std::task::ready!(Pin::new(&mut this.server).poll(cx));
        let (id, peer) = (this.guard.id, &this.peer);
        match result {
            Ok(()) => log::debug!(target: "courier_net", "connection #{id} from {peer} closed"),
            Err(e) => log::warn!(target: "courier_net", "connection #{id} from {peer} closed: {e}"),
        }
        Poll::Ready(())
    }
}

/// The open connections: a count, abort handles of spawned ones, and the
/// serve task to wake when one closes.
#[derive(Default)]
struct Tracker {
    state: Mutex<TrackerState>,
    waker: AtomicWaker,
}

#[derive(Default)]
struct TrackerState {
    live: usize,
    /// Whether a connection closed since the accept loop last looked.
    closed: bool,
    aborts: Vec<(u64, AbortHandle)>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        // A panic elsewhere cannot leave the counters inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> usize {
        self.lock().live
    }

    fn take_closed(&self) -> bool {
        std::mem::take(&mut self.lock().closed)
    }

    fn set_abort(&self, id: u64, abort: AbortHandle) {
        self.lock().aborts.push((id, abort));
    }

    fn abort_all(&self) {
        for (_, abort) in std::mem::take(&mut self.lock().aborts) {
            abort.abort();
        }
    }
}

/// Counts a connection as open until it is dropped.
struct Guard {
    tracker: Arc<Tracker>,
    id: u64,
}

impl Guard {
    fn new(tracker: Arc<Tracker>, id: u64) -> Self {
        tracker.lock().live += 1;
        Guard { tracker, id }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut state = self.tracker.lock();
        state.live -= 1;
        state.closed = true;
        state.aborts.retain(|(id, _)| *id != self.id);
        drop(state);
        self.tracker.waker.wake();
    }
}

#[cfg(test)]
mod tests;

#[doc(hidden)]
pub mod __private {
    //! What [`transport_api!`](crate::transport_api) expands to.
    pub use courier;
}
