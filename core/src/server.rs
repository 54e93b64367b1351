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
//!   about that mark plus one table of replies.
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

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use futures_util::future::AbortHandle;
use serde::Serialize;

use crate::deadline::{DeadlineQueue, Deadlines};
use crate::error::{DriverError, FrameError, RemoteError};
use crate::framing::{encode_frame, FrameReader, FrameWriter, DEFAULT_MAX_FRAME};
use crate::id_map::IdMap;
use crate::io::Transport;
use crate::readiness::ReadReadiness;
use crate::sync::Mutex;
use crate::timer::{NoTimer, Timer};
use crate::wire::{FrameKind, Header, MethodKey};

/// The default bound on concurrent requests per connection.
pub const DEFAULT_MAX_CONCURRENT: usize = 1024;

/// The least high-water mark of unsent replies: the driver stops reading
/// while more than `max(max_frame, WRITE_MARK)` bytes wait to be written.
pub const WRITE_MARK: usize = 64 * 1024;

/// The least default backlog (see [`ServerBuilder::backlog`]): the default
/// is `max(DEFAULT_BACKLOG, max_frame)` bytes.
pub const DEFAULT_BACKLOG: usize = 64 * 1024;

/// Frames one poll of the driver handles before it yields to other tasks.
pub const READ_BUDGET: usize = 256;

/// Transport reads one poll of the driver does before it yields.
const FILL_BUDGET: usize = 16;

/// Rounds of the driver's loop in one poll before it yields.
const POLL_BUDGET: usize = 32;

/// What the server does with a request that arrives while
/// [`max_concurrent`](ServerBuilder::max_concurrent) handlers are running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// Keep reading: cancels and reserved frame kinds are handled at once,
    /// requests wait in a FIFO backlog bounded in bytes
    /// ([`ServerBuilder::backlog`]) and start in order as handlers finish. A
    /// cancel removes a waiting request (no handler, no reply); one whose
    /// deadline passes is answered [`RemoteError::DeadlineExceeded`] without
    /// running. While the backlog is full the server reads nothing more, so
    /// the pressure reaches the client through the transport.
    #[default]
    Queue,
    /// Answer [`RemoteError::Overloaded`] at once, and keep reading.
    Reject,
}

/// Turns a request into a handler. Implemented by the server types the
/// [`service`](crate::service) attribute generates; implement it by hand for
/// custom routing.
pub trait Service {
    /// Looks up `method` and decodes `args` (postcard bytes). An unknown
    /// key is [`RemoteError::UnknownMethod`]; undecodable arguments are
    /// [`RemoteError::BadRequest`]. Called when the request arrives, also
    /// when it then waits in the backlog; the handler is first polled when
    /// it starts.
    fn dispatch(&self, method: MethodKey, args: &[u8]) -> Result<Handler, RemoteError>;
}
impl<S: Service + ?Sized> Service for Arc<S> {
    fn dispatch(&self, method: MethodKey, args: &[u8]) -> Result<Handler, RemoteError> {
        (**self).dispatch(method, args)
    }
}

impl<S: Service + ?Sized> Service for &S {
    fn dispatch(&self, method: MethodKey, args: &[u8]) -> Result<Handler, RemoteError> {
        (**self).dispatch(method, args)
    }
}

/// One call being served: a future whose output is encoded as the reply.
pub struct Handler(Pin<Box<dyn Respond + Send>>);

impl core::fmt::Debug for Handler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Handler")
    }
}

impl Handler {
    /// A handler that replies with the output of `future`.
    pub fn new<F>(future: F) -> Self
    where
        F: Future + Send + 'static,
        F::Output: Serialize,
    {
        Handler(Box::pin(Responder { future }))
    }
}

/// A handler future with its output type erased: it encodes the reply.
trait Respond {
    /// Polls the handler; when it is done, appends the reply frame for `id`
    /// to `out` (an error frame if the value cannot be encoded in
    /// `max_frame` bytes).
    fn poll_respond(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
        id: u32,
        max_frame: usize,
    ) -> Poll<()>;
}

pin_project_lite::pin_project! {
    struct Responder<F> {
        #[pin]
        future: F,
    }
}

impl<F> Respond for Responder<F>
where
    F: Future,
    F::Output: Serialize,
{
    fn poll_respond(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
        id: u32,
        max_frame: usize,
    ) -> Poll<()> {
        let Poll::Ready(value) = self.project().future.poll(cx) else {
            return Poll::Pending;
        };
        if encode_frame(out, &Header::Response { id }, &value, max_frame).is_err() {
            write_error(out, id, RemoteError::ResponseTooLarge, max_frame);
        }
        Poll::Ready(())
    }
}

fn write_error(out: &mut Vec<u8>, id: u32, error: RemoteError, max_frame: usize) {
    // An error frame is 12 bytes; only a limit below that can refuse it.
    let _ = encode_frame(out, &Header::Error { id, error }, &(), max_frame);
}

/// Runs handlers as tasks of the user's executor.
pub trait Spawn: Send + Sync {
    /// Runs `task` to completion (or until it is dropped).
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>);
}

impl<F> Spawn for F
where
    F: Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync,
{
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self(task)
    }
}

/// Configures and builds a server for one connection. Cloneable, so one
/// builder can serve as the template for every connection of a listener.
#[derive(Clone)]
#[must_use]
pub struct ServerBuilder<Tm = NoTimer> {
    max_concurrent: usize,
    max_frame: usize,
    timer: Tm,
    spawner: Option<Arc<dyn Spawn>>,
    shutdown: Option<Shutdown>,
    idle_timeout: Option<Duration>,
    when_full: WhenFull,
    backlog: Option<usize>,
}

impl<Tm: core::fmt::Debug> core::fmt::Debug for ServerBuilder<Tm> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("max_concurrent", &self.max_concurrent)
            .field("max_frame", &self.max_frame)
            .field("timer", &self.timer)
            .field("spawner", &self.spawner.is_some())
            .field("shutdown", &self.shutdown)
            .field("idle_timeout", &self.idle_timeout)
            .field("when_full", &self.when_full)
            .field("backlog", &self.backlog_bytes())
            .finish()
    }
}

impl ServerBuilder<NoTimer> {
    /// Defaults: [`DEFAULT_MAX_CONCURRENT`] requests, [`DEFAULT_MAX_FRAME`]
    /// bytes per frame, [`WhenFull::Queue`] with a backlog of
    /// `max(DEFAULT_BACKLOG, max_frame)` bytes, handlers run inside the
    /// driver, no deadline checks, no idle timeout.
    pub fn new() -> Self {
        ServerBuilder {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_frame: DEFAULT_MAX_FRAME,
            timer: NoTimer,
            spawner: None,
            shutdown: None,
            idle_timeout: None,
            when_full: WhenFull::Queue,
            backlog: None,
        }
    }
}

impl Default for ServerBuilder<NoTimer> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Tm> ServerBuilder<Tm> {
    fn backlog_bytes(&self) -> usize {
        self.backlog
            .unwrap_or_else(|| DEFAULT_BACKLOG.max(self.max_frame))
    }
}

impl<Tm: Timer> ServerBuilder<Tm> {
    /// At most `n` requests of one connection run at once (at least 1).
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n.max(1);
        self
    }

    /// The largest frame accepted or sent, in bytes (header and body; at
    /// most `u32::MAX`, the most a length prefix can announce).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.min(u32::MAX as usize);
        self
    }

    /// What to do with requests that arrive while the handler table is
    /// full; see [`WhenFull`].
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// With [`WhenFull::Queue`]: at most `bytes` of requests (header and
    /// body of each frame) wait for a free handler slot. A request that
    /// would go past it stays unread — and with it everything the client
    /// sent after it — until a waiting request starts; a request larger
    /// than the whole backlog is still taken when the backlog is empty.
    /// `0` takes one request at a time. Default: `max(DEFAULT_BACKLOG,
    /// max_frame)`.
    pub fn backlog(mut self, bytes: usize) -> Self {
        self.backlog = Some(bytes);
        self
    }

    /// The timer that enforces the deadlines requests carry and the idle
    /// timeout.
    pub fn timer<T2: Timer>(self, timer: T2) -> ServerBuilder<T2> {
        ServerBuilder {
            max_concurrent: self.max_concurrent,
            max_frame: self.max_frame,
            timer,
            spawner: self.spawner,
            shutdown: self.shutdown,
            idle_timeout: self.idle_timeout,
            when_full: self.when_full,
            backlog: self.backlog,
        }
    }

    /// Closes the connection with [`DriverError::IdleTimeout`] once it has
    /// been idle for `timeout`: no complete frame received, no reply bytes
    /// taken by the transport, and no handler running or waiting in the
    /// backlog. The period restarts with each of them, and after the last
    /// handler finishes. A peer that sends a frame byte by byte, or stops
    /// reading its replies, is idle too. Needs a [`timer`](Self::timer):
    /// with [`NoTimer`] it never fires.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Runs each handler as a task on `spawner` instead of inside the driver.
    pub fn spawner(mut self, spawner: impl Spawn + 'static) -> Self {
        self.spawner = Some(Arc::new(spawner));
        self
    }

    /// Lets `shutdown` stop the server gracefully: once it is triggered,
    /// new requests and the backlog are answered with
    /// [`RemoteError::ShuttingDown`], calls in flight run to completion, and
    /// then the connection is closed. [`Shutdown::force`] cuts the calls in
    /// flight short (they are answered `ShuttingDown` too).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// A server future for one connection. Poll it on any executor.
    pub fn build<T: Transport, S: Service>(self, transport: T, service: S) -> Server<T, S, Tm> {
        let backlog = self.backlog_bytes();
        let wake = Arc::new(WakeQueue {
            state: Mutex::new(WakeState {
                ready: Vec::new(),
                done: Vec::new(),
                driver: None,
            }),
        });
        let mut deadlines = Deadlines::new(self.timer);
        let idle = self.idle_timeout.map(|timeout| {
            let since = deadlines.now();
            deadlines.arm(since.saturating_add(timeout));
            Idle {
                timeout,
                since,
                active: false,
            }
        });
        let core = Core {
            service,
            writer: FrameWriter::new(self.max_frame),
            deadlines,
            idle,
            max_frame: self.max_frame,
            max_concurrent: self.max_concurrent,
            write_mark: WRITE_MARK.max(self.max_frame),
            when_full: self.when_full,
            backlog,
            spawner: self.spawner,
            tasks: Tasks::new(wake),
            draining: false,
            forced: false,
        };
        Server {
            io: transport,
            reader: FrameReader::new(self.max_frame),
            readiness: ReadReadiness::new(),
            core,
            read_closed: false,
            failure: None,
            closing: false,
            finished: false,
            shutdown: self.shutdown.map(|signal| (signal, None)),
        }
    }
}

/// Serves one connection: reads requests, runs handlers, writes replies.
///
/// Completes with `Ok(())` when the client has closed its write half between
/// frames and every request received has been answered (the driver then
/// closes its own write half), or when a [`Shutdown`] has drained the
/// connection. Completes with an error when the transport fails, the client
/// closes in the middle of a frame or sends bytes that are not frames (the
/// replies already produced are flushed first), or the connection stays idle
/// past the [idle timeout](ServerBuilder::idle_timeout); handlers still
/// running are then dropped. Unknown methods, undecodable arguments, missed
/// deadlines, overload ([`WhenFull::Reject`]) and panicking handlers (with
/// `std`) are answered with an error frame and the connection goes on. See
/// the [module docs](self) for every guarantee.
#[must_use = "a server does nothing unless polled"]
pub struct Server<T, S, Tm: Timer = NoTimer> {
    io: T,
    reader: FrameReader,
    readiness: ReadReadiness,
    core: Core<S, Tm>,
    /// The client closed its write half.
    read_closed: bool,
    /// A protocol error: replies are flushed, then it is returned.
    failure: Option<FrameError>,
    /// Everything is written: the write half is being closed.
    closing: bool,
    finished: bool,
    /// The signal and this server's waker registration with it.
    shutdown: Option<(Shutdown, Option<usize>)>,
}

/// Everything but the transport and the reader, so a frame borrowed from
/// the reader can be handled while the rest is mutated.
struct Core<S, Tm: Timer> {
    service: S,
    writer: FrameWriter,
    deadlines: Deadlines<Tm>,
    idle: Option<Idle>,
    max_frame: usize,
    max_concurrent: usize,
    write_mark: usize,
    when_full: WhenFull,
    backlog: usize,
    spawner: Option<Arc<dyn Spawn>>,
    tasks: Tasks,
    /// Shutdown was triggered: no new calls.
    draining: bool,
    /// Shutdown was forced: no more reading, every call answered now.
    forced: bool,
}

/// The idle timeout's clock.
struct Idle {
    timeout: Duration,
    /// When the connection was last seen busy.
    since: Duration,
    /// A frame arrived since `since` was taken (a flag, so that the clock is
    /// read once per batch of frames, not per frame).
    active: bool,
}

/// How the read step of one round ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Not attempted, or stopped because reading is not allowed now.
    Stopped,
    /// The transport returned `Pending`: its waker is registered.
    Pending,
    /// The budget of this poll is used up.
    Budget,
    /// End of stream between frames.
    Eof,
}

// The transport and service are never pinned; handlers and the sleep are boxed.
impl<T, S, Tm: Timer> Unpin for Server<T, S, Tm> {}

impl<T, S, Tm: Timer> Drop for Server<T, S, Tm> {
    fn drop(&mut self) {
        if let Some((signal, Some(key))) = &self.shutdown {
            signal.unregister(*key);
        }
    }
}

impl<T, S, Tm: Timer> Server<T, S, Tm> {
    /// Handlers running right now.
    pub fn in_flight(&self) -> usize {
        self.core.tasks.running
    }

    /// Requests waiting in the backlog for a free handler slot
    /// ([`WhenFull::Queue`]).
    pub fn backlogged(&self) -> usize {
        self.core.tasks.queued
    }

    /// The capacities of the read and the write buffer, in bytes; for tests
    /// of memory retention.
    #[doc(hidden)]
    pub fn buffer_capacities(&self) -> (usize, usize) {
        (self.reader.capacity(), self.core.writer.capacity())
    }
}

impl<T: Transport, S: Service, Tm: Timer> Future for Server<T, S, Tm> {
    type Output = Result<(), DriverError<T::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        let result = core::task::ready!(this.drive(cx));
        this.finished = true;
        this.core.tasks.clear();
        Poll::Ready(result)
    }
}

impl<T: Transport, S: Service, Tm: Timer> Server<T, S, Tm> {
    /// One poll: rounds of (woken handlers, read, deadlines, write) until
    /// nothing more can happen without a wake-up.
    ///
    /// Invariant: it returns `Pending` only when
    /// - reading is impossible for a reason whose end wakes us (the table
    ///   and backlog are full → a handler's waker or the deadline sleep;
    ///   unsent replies over the mark → the transport's write waker, since
    ///   the write just returned `Pending`), or the last read returned
    ///   `Pending` (the transport's read waker), or reading is over;
    /// - the last write returned `Pending`, or nothing is left to write
    ///   (the write step runs last in every round, after everything that
    ///   adds replies);
    /// - no handler is queued ready (a handler woken later wakes us);
    /// - the deadline sleep was polled after the round's last deadline was
    ///   armed (the timer wakes us).
    ///
    /// Anything else — notably a write that drained the replies back under
    /// the mark, or a handler that freed a slot — runs another round. After
    /// [`READ_BUDGET`] frames (or [`POLL_BUDGET`] rounds) it wakes itself
    /// and yields instead.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DriverError<T::Error>>> {
        if self.closing {
            return self.poll_close(cx);
        }
        self.core.tasks.set_driver(cx.waker());
        self.watch_shutdown(cx);
        let mut frames = READ_BUDGET;
        let mut fills = FILL_BUDGET;
        for _ in 0..POLL_BUDGET {
            let core = &mut self.core;
            let finished = core.tasks.run_ready(core.writer.buffer(), core.max_frame);
            core.touch(finished);
            core.start_queued();

            let read = if self.may_read() {
                match self.read(cx, &mut frames, &mut fills) {
                    Ok(read) => read,
                    Err(DriverError::Protocol(e)) => self.fail(e),
                    Err(e) => return Poll::Ready(Err(e)),
                }
            } else {
                Read::Stopped
            };

            // After reading, which arms deadlines: the sleep must be polled
            // (registered) after its last change in the round.
            let core = &mut self.core;
            if core.expire_deadlines(cx) {
                return Poll::Ready(Err(DriverError::IdleTimeout));
            }
            core.start_queued();
            let unsent = core.writer.pending();
            let written = core.writer.poll_write_all(&mut self.io, cx);
            core.touch(core.writer.pending() < unsent);
            match written {
                Poll::Ready(Err(e)) => {
                    // A protocol error is the better diagnosis.
                    return Poll::Ready(Err(self.failure.take().map_or(e, DriverError::Protocol)));
                }
                Poll::Ready(Ok(())) if self.done(read) => {
                    self.closing = true;
                    return self.poll_close(cx);
                }
                _ => {}
            }

            if read == Read::Budget {
                break;
            }
            let read_waits = read == Read::Pending || !self.may_read();
            if read_waits && !self.core.tasks.has_ready() {
                self.release_memory(read);
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Whether the connection is finished, once everything is written.
    fn done(&self, read: Read) -> bool {
        let core = &self.core;
        let quiet = core.tasks.live() == 0;
        self.failure.is_some()
            || core.forced
            || (self.read_closed && quiet)
            // Draining: close once the transport has nothing more to read
            // right now (what it had was read and answered).
            || (core.draining && quiet && read == Read::Pending)
    }

    /// Closes the write half; then the connection is over.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DriverError<T::Error>>> {
        let closed = core::task::ready!(self.io.poll_close(cx));
        Poll::Ready(match self.failure.take() {
            Some(e) => Err(DriverError::Protocol(e)),
            None => closed.map_err(DriverError::Transport),
        })
    }

    /// A protocol error: nothing more is read or run; the replies already
    /// produced are flushed, then the error is returned.
    fn fail(&mut self, e: FrameError) -> Read {
        self.failure = Some(e);
        self.core.tasks.clear();
        Read::Stopped
    }

    /// Notices a triggered or forced shutdown, and keeps a waker registered
    /// until it is forced.
    fn watch_shutdown(&mut self, cx: &mut Context<'_>) {
        let Some((signal, key)) = &mut self.shutdown else {
            return;
        };
        if self.core.forced {
            return;
        }
        let forced = signal.poll_until(cx, key, Shutdown::is_forced);
        if forced {
            self.core.force();
        } else if !self.core.draining && signal.is_triggered() {
            self.core.drain();
        }
    }

    /// Whether reading may go on: see [`WhenFull`] and the write mark.
    fn may_read(&self) -> bool {
        let core = &self.core;
        if self.read_closed || self.failure.is_some() || core.forced {
            return false;
        }
        if core.writer.pending() > core.write_mark {
            return false;
        }
        if core.draining || core.when_full == WhenFull::Reject || core.tasks.queued == 0 {
            return true;
        }
        // Backlogging: the next request must fit (cancels always pass).
        match self.reader.peek_kind() {
            Some((kind, len)) if kind == FrameKind::Request.to_byte() => {
                core.tasks.queued_bytes.saturating_add(len) <= core.backlog
            }
            _ => true,
        }
    }

    /// Reads and handles frames while reading is allowed and the budgets
    /// last.
    fn read(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut usize,
        fills: &mut usize,
    ) -> Result<Read, DriverError<T::Error>> {
        loop {
            if !self.may_read() {
                return Ok(Read::Stopped);
            }
            if *frames == 0 {
                return Ok(Read::Budget);
            }
            if let Some(frame) = self.reader.next_frame().map_err(DriverError::Protocol)? {
                *frames -= 1;
                let (header, body_at) = Header::decode(frame).map_err(DriverError::Protocol)?;
                self.core.on_frame(header, &frame[body_at..], frame.len());
                continue;
            }
            if *fills == 0 {
                return Ok(Read::Budget);
            }
            *fills -= 1;
            match self
                .readiness
                .poll_fill(&mut self.reader, &mut self.io, cx.waker())
            {
                Poll::Pending => return Ok(Read::Pending),
                Poll::Ready(Err(e)) => return Err(DriverError::Transport(e)),
                Poll::Ready(Ok(0)) => {
                    if self.reader.has_partial_frame() {
                        return Err(DriverError::Protocol(FrameError::UnexpectedEof));
                    }
                    // The client closed its write half: answer what it sent.
                    self.read_closed = true;
                    return Ok(Read::Eof);
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// After a burst, gives buffer memory back once it is idle.
    fn release_memory(&mut self, read: Read) {
        let core = &mut self.core;
        core.writer.shrink_idle(core.write_mark);
        if read == Read::Pending {
            self.reader.shrink();
        }
    }
}

impl<S: Service, Tm: Timer> Core<S, Tm> {
    /// Restarts the idle period if the connection was `busy` or a frame
    /// arrived since the last call.
    fn touch(&mut self, busy: bool) {
        if let Some(idle) = &mut self.idle {
            if busy || idle.active {
                idle.active = false;
                idle.since = self.deadlines.now();
            }
        }
    }

    fn on_frame(&mut self, header: Header, body: &[u8], len: usize) {
        if let Some(idle) = &mut self.idle {
            idle.active = true;
        }
        match header {
            Header::Request {
                id,
                method,
                timeout_ms,
            } => self.start(id, method, timeout_ms, body, len),
            Header::Cancel { id } => {
                self.tasks.cancel(id);
                self.start_queued();
            }
            // Responses are reserved for calls in both directions; unknown
            // kinds are skipped.
            _ => {}
        }
    }

    fn start(
        &mut self,
        id: u32,
        method: MethodKey,
        timeout_ms: Option<u32>,
        body: &[u8],
        len: usize,
    ) {
        let out = self.writer.buffer();
        if self.draining {
            return write_error(out, id, RemoteError::ShuttingDown, self.max_frame);
        }
        if timeout_ms == Some(0) {
            return write_error(out, id, RemoteError::DeadlineExceeded, self.max_frame);
        }
        let full = self.tasks.running >= self.max_concurrent || self.tasks.queued > 0;
        if full && self.when_full == WhenFull::Reject {
            return write_error(out, id, RemoteError::Overloaded, self.max_frame);
        }
        let handler = match self.service.dispatch(method, body) {
            Ok(handler) => handler,
            Err(error) => return write_error(out, id, error, self.max_frame),
        };
        let deadline = timeout_ms.map(|ms| {
            let at = self
                .deadlines
                .now()
                .saturating_add(Duration::from_millis(ms.into()));
            self.deadlines.arm(at);
            at
        });
        // A handler run inside the driver usually finishes on its first
        // poll: it enters the id index only if it does not.
        let index_now = full || self.spawner.is_some();
        let index = self.tasks.insert(id, deadline, full, len, index_now);
        if full {
            self.tasks.entries[index as usize].work = Work::Queued(handler.0);
        } else {
            self.launch(index, handler.0);
        }
    }

    /// Starts `handler` in the running slot `index`.
    fn launch(&mut self, index: u32, handler: Pin<Box<dyn Respond + Send>>) {
        let entry = &mut self.tasks.entries[index as usize];
        match &self.spawner {
            None => {
                // Most handlers finish on their first poll: run it now, so
                // the reply joins this batch's write and the slot is free
                // again at once, without a trip through the wake queue.
                entry.work = Work::Local(handler);
                let finished = self
                    .tasks
                    .poll_one(index, self.writer.buffer(), self.max_frame);
                if !finished {
                    self.tasks.index(index);
                }
            }
            Some(spawner) => {
                let reply_to = ReplyTo {
                    queue: self.tasks.wake.clone(),
                    index,
                    generation: entry.generation,
                };
                let (task, abort) = remote_task(handler, reply_to, entry.id, self.max_frame);
                entry.work = Work::Remote(abort);
                spawner.spawn(task);
            }
        }
    }

    /// Starts backlogged requests, in order, while slots are free.
    fn start_queued(&mut self) {
        while self.tasks.running < self.max_concurrent {
            let Some((index, handler)) = self.tasks.promote() else {
                return;
            };
            self.launch(index, handler);
        }
    }

    /// Shutdown triggered: new requests and the backlog get `ShuttingDown`.
    fn drain(&mut self) {
        self.draining = true;
        let out = self.writer.buffer();
        self.tasks
            .answer(out, RemoteError::ShuttingDown, self.max_frame, true);
    }

    /// Shutdown forced: every call is answered `ShuttingDown` now.
    fn force(&mut self) {
        self.draining = true;
        self.forced = true;
        let out = self.writer.buffer();
        self.tasks
            .answer(out, RemoteError::ShuttingDown, self.max_frame, false);
    }

    /// Answers handlers and backlogged requests whose deadline passed.
    /// Returns whether the idle timeout expired.
    fn expire_deadlines(&mut self, cx: &mut Context<'_>) -> bool {
        while self.deadlines.poll_fired(cx) {
            let now = self.deadlines.now();
            let out = self.writer.buffer();
            if let Some(next) = self.tasks.expire(now, out, self.max_frame) {
                self.deadlines.arm(next);
            }
            if self.idle_expired(now) {
                return true;
            }
        }
        false
    }

    /// Checks the idle timeout when the timer fired, and re-arms it: the
    /// sleep only ever moves earlier, so after activity it fires at the old
    /// time and is moved on here.
    fn idle_expired(&mut self, now: Duration) -> bool {
        let Some(idle) = &mut self.idle else {
            return false;
        };
        if idle.active || self.tasks.live() > 0 {
            idle.active = false;
            idle.since = now;
        }
        let at = idle.since.saturating_add(idle.timeout);
        if now >= at {
            return true;
        }
        self.deadlines.arm(at);
        false
    }
}

/// Tells servers to stop taking calls and finish the ones in flight; cheap
/// to clone, one signal for any number of connections.
///
/// [`trigger`](Shutdown::trigger) starts a graceful shutdown;
/// [`force`](Shutdown::force) ends its grace period.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Default)]
struct ShutdownInner {
    triggered: AtomicBool,
    forced: AtomicBool,
    /// Wakers of the servers watching, by registration key.
    wakers: Mutex<Vec<Registration>>,
}

/// One registration slot of a [`Shutdown`].
enum Registration {
    /// Nobody holds this key.
    Free,
    /// Held by a watcher; its waker until the signal fires.
    Held(Option<Waker>),
}

impl core::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .field("forced", &self.is_forced())
            .finish()
    }
}

impl Shutdown {
    /// A signal that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the graceful shutdown of every server built with this signal:
    /// new requests and backlogged ones are answered
    /// [`RemoteError::ShuttingDown`], running handlers finish, then each
    /// connection closes.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Ends the grace period of every server built with this signal (and
    /// triggers it if it was not): running handlers are dropped and
    /// answered [`RemoteError::ShuttingDown`], every reply is flushed and
    /// the connection is closed; the servers complete with `Ok(())` once
    /// their replies are written. A peer that does not read its replies
    /// keeps its server waiting for the write, so an accept loop still
    /// bounds that wait (courier-net's `ServeBuilder` does).
    pub fn force(&self) {
        self.inner.forced.store(true, Ordering::Release);
        self.inner.triggered.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Whether [`trigger`](Shutdown::trigger) (or `force`) was called.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// Whether [`force`](Shutdown::force) was called.
    pub fn is_forced(&self) -> bool {
        self.inner.forced.load(Ordering::Acquire)
    }

    fn wake_all(&self) {
        let wakers: Vec<Waker> = self.inner.wakers.with(|slots| {
            slots
                .iter_mut()
                .filter_map(|slot| match slot {
                    Registration::Held(waker) => waker.take(),
                    Registration::Free => None,
                })
                .collect()
        });
        // Woken outside the lock (waking is user code).
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether the signal `reached` its state; if not, wakes `cx` when the
    /// signal changes. `key` is the caller's registration, kept between
    /// polls.
    pub(crate) fn poll_until(
        &self,
        cx: &mut Context<'_>,
        key: &mut Option<usize>,
        reached: fn(&Shutdown) -> bool,
    ) -> bool {
        if reached(self) {
            return true;
        }
        let current = *key;
        let registered = self.inner.wakers.with(|slots| match current {
            Some(index) => match slots.get(index) {
                Some(Registration::Held(Some(w))) => w.will_wake(cx.waker()),
                _ => false,
            },
            None => false,
        });
        if !registered {
            let waker = cx.waker().clone();
            let previous = self.inner.wakers.with(|slots| {
                let index = match *key {
                    Some(index) if index < slots.len() => index,
                    _ => {
                        let free = slots
                            .iter()
                            .position(|slot| matches!(slot, Registration::Free));
                        let index = free.unwrap_or_else(|| {
                            slots.push(Registration::Free);
                            slots.len() - 1
                        });
                        *key = Some(index);
                        index
                    }
                };
                slots
                    .get_mut(index)
                    .map(|slot| core::mem::replace(slot, Registration::Held(Some(waker))))
            });
            // The old waker is dropped outside the lock (its drop is user code).
            drop(previous);
        }
        // Changed between the check and the registration?
        reached(self)
    }

    /// A future that completes once the signal is triggered (at once if it
    /// already was), for tasks that stop together with the servers, such as
    /// an accept loop.
    pub fn triggered(&self) -> ShutdownTriggered {
        ShutdownTriggered {
            signal: self.clone(),
            key: None,
        }
    }

    fn unregister(&self, key: usize) {
        let previous = self.inner.wakers.with(|slots| {
            slots
                .get_mut(key)
                .map(|slot| core::mem::replace(slot, Registration::Free))
        });
        drop(previous);
    }
}

/// Completes when a [`Shutdown`] is triggered; see [`Shutdown::triggered`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct ShutdownTriggered {
    signal: Shutdown,
    key: Option<usize>,
}

impl Future for ShutdownTriggered {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this
            .signal
            .poll_until(cx, &mut this.key, Shutdown::is_triggered)
        {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for ShutdownTriggered {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.signal.unregister(key);
        }
    }
}

enum Work {
    Empty,
    /// Waiting in the backlog; not polled yet.
    Queued(Pin<Box<dyn Respond + Send>>),
    Local(Pin<Box<dyn Respond + Send>>),
    Remote(AbortHandle),
}

/// No slot (the end of the backlog list).
const NONE: u32 = u32::MAX;

struct Entry {
    id: u32,
    /// Bumped whenever the entry is reused, so a late reply from an aborted
    /// spawned handler is recognised.
    generation: u32,
    work: Work,
    /// In the id index (a handler that finished on its first poll never is).
    indexed: bool,
    /// Backlogged: the request's bytes, and its neighbours in the FIFO.
    cost: usize,
    prev: u32,
    next: u32,
    waker: Waker,
    wake: Arc<SlotWake>,
}

/// The handler table: running handlers and, linked in arrival order
/// through their slots, the backlog. Request ids map to slots in O(1)
/// (cancel), deadlines sit in an indexed heap (O(log n)).
struct Tasks {
    entries: Vec<Entry>,
    free: Vec<u32>,
    running: usize,
    queued: usize,
    queued_bytes: usize,
    head: u32,
    tail: u32,
    ids: IdMap,
    deadlines: DeadlineQueue,
    wake: Arc<WakeQueue>,
    scratch: Vec<u32>,
    done_scratch: Vec<RemoteReply>,
}

struct RemoteReply {
    index: u32,
    generation: u32,
    frame: Vec<u8>,
}

/// Which handler slots were woken, and replies from spawned handlers.
struct WakeQueue {
    state: Mutex<WakeState>,
}

struct WakeState {
    ready: Vec<u32>,
    done: Vec<RemoteReply>,
    driver: Option<Waker>,
}

impl WakeQueue {
    fn push_ready(&self, index: u32) {
        let driver = self.state.with(|state| {
            state.ready.push(index);
            state.driver.take()
        });
        if let Some(waker) = driver {
            waker.wake();
        }
    }

    fn push_done(&self, reply: RemoteReply) {
        let driver = self.state.with(|state| {
            state.done.push(reply);
            state.driver.take()
        });
        if let Some(waker) = driver {
            waker.wake();
        }
    }
}

/// The waker of one handler slot: queues the slot once until it is polled.
struct SlotWake {
    index: u32,
    queued: AtomicBool,
    queue: Arc<WakeQueue>,
}

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.queue.push_ready(self.index);
        }
    }
}

impl Tasks {
    fn new(wake: Arc<WakeQueue>) -> Self {
        Tasks {
            entries: Vec::new(),
            free: Vec::new(),
            running: 0,
            queued: 0,
            queued_bytes: 0,
            head: NONE,
            tail: NONE,
            ids: IdMap::new(),
            deadlines: DeadlineQueue::new(),
            wake,
            scratch: Vec::new(),
            done_scratch: Vec::new(),
        }
    }

    /// Running handlers and backlogged requests.
    fn live(&self) -> usize {
        self.running + self.queued
    }

    fn set_driver(&self, waker: &Waker) {
        let registered = self
            .wake
            .state
            .with(|state| state.driver.as_ref().is_some_and(|w| w.will_wake(waker)));
        if !registered {
            let waker = waker.clone();
            let previous = self.wake.state.with(|state| state.driver.replace(waker));
            drop(previous);
        }
    }

    fn has_ready(&self) -> bool {
        self.wake
            .state
            .with(|state| !state.ready.is_empty() || !state.done.is_empty())
    }

    /// The slot the next `insert` uses, and its generation.
    fn next_slot(&self) -> (u32, u32) {
        match self.free.last() {
            Some(&index) => (index, self.entries[index as usize].generation),
            None => (self.entries.len() as u32, 0),
        }
    }

    /// Takes a free slot for call `id` and returns its index; the caller
    /// then sets its work. A `queued` slot joins the end of the backlog,
    /// counting `cost` bytes; any other counts as running.
    fn insert(
        &mut self,
        id: u32,
        deadline: Option<Duration>,
        queued: bool,
        cost: usize,
        index_now: bool,
    ) -> u32 {
        let (index, _) = self.next_slot();
        if index as usize == self.entries.len() {
            let wake = Arc::new(SlotWake {
                index,
                queued: AtomicBool::new(false),
                queue: self.wake.clone(),
            });
            let waker = Waker::from(wake.clone());
            self.entries.push(Entry {
                id,
                generation: 0,
                work: Work::Empty,
                cost: 0,
                indexed: false,
                prev: NONE,
                next: NONE,
                waker,
                wake,
            });
        } else {
            self.free.pop();
        }
        self.entries[index as usize].id = id;
        if index_now {
            self.index(index);
        }
        if let Some(at) = deadline {
            self.deadlines.set(index, at);
        }
        if queued {
            self.link(index, cost);
        } else {
            self.running += 1;
        }
        index
    }

    /// Makes slot `index` findable by its request id (for cancels).
    fn index(&mut self, index: u32) {
        if let Some(entry) = self.entries.get_mut(index as usize) {
            if !entry.indexed {
                entry.indexed = true;
                self.ids.insert(entry.id, index);
            }
        }
    }

    /// Appends slot `index` to the backlog.
    fn link(&mut self, index: u32, cost: usize) {
        let tail = self.tail;
        let entry = &mut self.entries[index as usize];
        entry.cost = cost;
        entry.prev = tail;
        entry.next = NONE;
        match self.entries.get_mut(tail as usize) {
            Some(last) => last.next = index,
            None => self.head = index,
        }
        self.tail = index;
        self.queued += 1;
        self.queued_bytes = self.queued_bytes.saturating_add(cost);
    }

    /// Takes slot `index` out of the backlog.
    fn unlink(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        let (prev, next, cost) = (entry.prev, entry.next, entry.cost);
        match self.entries.get_mut(prev as usize) {
            Some(before) => before.next = next,
            None => self.head = next,
        }
        match self.entries.get_mut(next as usize) {
            Some(after) => after.prev = prev,
            None => self.tail = prev,
        }
        self.queued -= 1;
        self.queued_bytes = self.queued_bytes.saturating_sub(cost);
    }

    /// Moves the oldest backlogged request to the running handlers, in its
    /// own slot (its id and deadline stay); returns the slot and the
    /// handler, which the caller starts at once.
    fn promote(&mut self) -> Option<(u32, Pin<Box<dyn Respond + Send>>)> {
        let index = self.head;
        let entry = self.entries.get_mut(index as usize)?;
        let Work::Queued(handler) = core::mem::replace(&mut entry.work, Work::Empty) else {
            return None;
        };
        self.unlink(index);
        self.running += 1;
        Some((index, handler))
    }

    fn remove(&mut self, index: u32) {
        let Some(entry) = self.entries.get(index as usize) else {
            return;
        };
        let id = entry.id;
        match &entry.work {
            Work::Empty => return,
            Work::Queued(_) => self.unlink(index),
            Work::Local(_) => self.running -= 1,
            Work::Remote(abort) => {
                abort.abort();
                self.running -= 1;
            }
        }
        let entry = &mut self.entries[index as usize];
        if core::mem::take(&mut entry.indexed) {
            self.ids.remove(id, index);
        }
        self.deadlines.remove(index);
        let entry = &mut self.entries[index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        // Drops the handler (user code; no lock is held).
        entry.work = Work::Empty;
        self.free.push(index);
    }

    /// The caller dropped call `id`: its handler or backlogged request goes
    /// without a reply.
    fn cancel(&mut self, id: u32) {
        if let Some(index) = self.ids.get(id) {
            self.remove(index);
        }
    }

    /// Answers backlogged requests (and with `all`, running handlers too)
    /// with `error` and drops them.
    fn answer(
        &mut self,
        out: &mut Vec<u8>,
        error: RemoteError,
        max_frame: usize,
        only_queued: bool,
    ) {
        while self.head != NONE {
            let index = self.head;
            write_error(out, self.entries[index as usize].id, error, max_frame);
            self.remove(index);
        }
        if only_queued {
            return;
        }
        for index in 0..self.entries.len() {
            if !matches!(self.entries[index].work, Work::Empty) {
                write_error(out, self.entries[index].id, error, max_frame);
                self.remove(index as u32);
            }
        }
    }

    /// Polls woken handlers and collects spawned handlers' replies.
    /// Returns whether any handler finished.
    fn run_ready(&mut self, out: &mut Vec<u8>, max_frame: usize) -> bool {
        let mut ready = core::mem::take(&mut self.scratch);
        let mut done = core::mem::take(&mut self.done_scratch);
        self.wake.state.with(|state| {
            core::mem::swap(&mut ready, &mut state.ready);
            core::mem::swap(&mut done, &mut state.done);
        });
        let mut finished = false;
        for &index in &ready {
            finished |= self.poll_one(index, out, max_frame);
        }
        for reply in done.drain(..) {
            let entry = &self.entries[reply.index as usize];
            if entry.generation == reply.generation && matches!(entry.work, Work::Remote(_)) {
                out.extend_from_slice(&reply.frame);
                self.remove(reply.index);
                finished = true;
            }
        }
        ready.clear();
        self.scratch = ready;
        self.done_scratch = done;
        finished
    }

    fn poll_one(&mut self, index: u32, out: &mut Vec<u8>, max_frame: usize) -> bool {
        let entry = &mut self.entries[index as usize];
        entry.wake.queued.store(false, Ordering::Release);
        let Work::Local(handler) = &mut entry.work else {
            return false;
        };
        let mut cx = Context::from_waker(&entry.waker);
        match poll_guarded(handler.as_mut(), &mut cx, out, entry.id, max_frame) {
            Poll::Pending => false,
            Poll::Ready(()) => {
                self.remove(index);
                true
            }
        }
    }

    /// Answers handlers and backlogged requests whose deadline passed and
    /// drops them. Returns the next deadline still pending.
    fn expire(&mut self, now: Duration, out: &mut Vec<u8>, max_frame: usize) -> Option<Duration> {
        if self.deadlines.len() == 0 {
            return None;
        }
        while let Some(index) = self.deadlines.pop_due(now) {
            let id = self.entries[index as usize].id;
            write_error(out, id, RemoteError::DeadlineExceeded, max_frame);
            self.remove(index);
        }
        self.deadlines.peek().map(|(at, _)| at)
    }

    /// Drops every handler and backlogged request (the connection is gone).
    fn clear(&mut self) {
        for (index, entry) in self.entries.iter_mut().enumerate() {
            if let Work::Remote(abort) = &entry.work {
                abort.abort();
            }
            if !matches!(entry.work, Work::Empty) {
                entry.generation = entry.generation.wrapping_add(1);
                // Drops the handler (user code; no lock is held).
                entry.work = Work::Empty;
                self.free.push(index as u32);
            }
        }
        self.ids.clear();
        self.deadlines.clear();
        self.head = NONE;
        self.tail = NONE;
        self.running = 0;
        self.queued = 0;
        self.queued_bytes = 0;
    }
}

/// Polls a handler; with `std`, a panic becomes a `HandlerPanicked` reply.
fn poll_guarded(
    handler: Pin<&mut (dyn Respond + Send)>,
    cx: &mut Context<'_>,
    out: &mut Vec<u8>,
    id: u32,
    max_frame: usize,
) -> Poll<()> {
    #[cfg(feature = "std")]
    {
        let start = out.len();
        let poll = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler.poll_respond(cx, out, id, max_frame)
        }));
        poll.unwrap_or_else(|_| {
            out.truncate(start);
            write_error(out, id, RemoteError::HandlerPanicked, max_frame);
            Poll::Ready(())
        })
    }
    #[cfg(not(feature = "std"))]
    handler.poll_respond(cx, out, id, max_frame)
}

/// Where a spawned handler's reply goes.
struct ReplyTo {
    queue: Arc<WakeQueue>,
    index: u32,
    generation: u32,
}

/// Wraps a handler into a task for a spawner: it encodes its reply into its
/// own buffer and hands it back to the driver through the wake queue.
fn remote_task(
    mut handler: Pin<Box<dyn Respond + Send>>,
    reply_to: ReplyTo,
    id: u32,
    max_frame: usize,
) -> (Pin<Box<dyn Future<Output = ()> + Send>>, AbortHandle) {
    let (abort, registration) = AbortHandle::new_pair();
    let task = async move {
        let mut frame = Vec::new();
        let run = core::future::poll_fn(|cx| {
            poll_guarded(handler.as_mut(), cx, &mut frame, id, max_frame)
        });
        if futures_util::future::Abortable::new(run, registration)
            .await
            .is_ok()
        {
            reply_to.queue.push_done(RemoteReply {
                index: reply_to.index,
                generation: reply_to.generation,
                frame,
            });
        }
    };
    (Box::pin(task), abort)
}
