//! The server: a [`Service`] that turns requests into handlers, and the
//! [`Server`] future that runs one connection.
//!
//! The driver reads requests, asks the service for a [`Handler`] per call and
//! runs all handlers of the connection concurrently inside its own poll, in a
//! fixed table whose slots each keep one reusable waker, so only ready
//! handlers are polled and nothing is spawned. With
//! [`ServerBuilder::spawner`] each handler runs as its own task on the user's
//! executor instead (for multi-core work) and its encoded reply comes back
//! through a queue. Every reply is written as soon as it is ready, out of
//! order; replies that are ready together go out in one write.
//!
//! Limits: at most `max_concurrent` handlers per connection; when the table
//! is full, or when the peer does not read replies fast enough, the driver
//! stops reading requests, so the pressure reaches the client through the
//! transport instead of growing a queue here.
//!
//! Idle connections: with [`ServerBuilder::idle_timeout`] (and a [`Timer`]),
//! a connection on which no complete frame arrives, no reply bytes leave and
//! no handler runs for that long is closed with [`DriverError::IdleTimeout`],
//! so a silent or trickling peer (slowloris) cannot hold it forever.

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

use crate::deadline::Deadlines;
use crate::error::{DriverError, FrameError, RemoteError};
use crate::framing::{encode_frame, FrameReader, FrameWriter, DEFAULT_MAX_FRAME};
use crate::io::Transport;
use crate::readiness::ReadReadiness;
use crate::sync::Mutex;
use crate::timer::{NoTimer, Timer};
use crate::wire::{Header, MethodKey};

/// The default bound on concurrent requests per connection.
pub const DEFAULT_MAX_CONCURRENT: usize = 1024;

/// How many rounds of handler polls and reads one driver poll does before it
/// yields to other tasks.
const POLL_BUDGET: usize = 32;

/// Turns a request into a handler. Implemented by the server types the
/// [`service!`](crate::service!) macro generates; implement it by hand for
/// custom routing.
pub trait Service {
    /// Looks up `method` and decodes `args` (postcard bytes). An unknown
    /// key is [`RemoteError::UnknownMethod`]; undecodable arguments are
    /// [`RemoteError::BadRequest`].
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
            .finish()
    }
}

impl ServerBuilder<NoTimer> {
    /// Defaults: [`DEFAULT_MAX_CONCURRENT`] requests, [`DEFAULT_MAX_FRAME`]
    /// bytes per frame, handlers run inside the driver, no deadline checks,
    /// no idle timeout.
    pub fn new() -> Self {
        ServerBuilder {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_frame: DEFAULT_MAX_FRAME,
            timer: NoTimer,
            spawner: None,
            shutdown: None,
            idle_timeout: None,
        }
    }
}

impl Default for ServerBuilder<NoTimer> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Tm: Timer> ServerBuilder<Tm> {
    /// At most `n` requests of one connection run at once (at least 1).
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n.max(1);
        self
    }

    /// The largest frame accepted or sent, in bytes (header and body).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.min(u32::MAX as usize);
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
        }
    }

    /// Closes the connection with [`DriverError::IdleTimeout`] once it has
    /// been idle for `timeout`: no complete frame received, no reply bytes
    /// taken by the transport, and no handler running. The period restarts
    /// with each of them, and after the last handler finishes. A peer that
    /// sends a frame byte by byte, or stops reading its replies, is idle
    /// too. Needs a [`timer`](Self::timer): with [`NoTimer`] it never fires.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Runs each handler as a task on `spawner` instead of inside the driver.
    pub fn spawner(mut self, spawner: impl Spawn + 'static) -> Self {
        self.spawner = Some(Arc::new(spawner));
        self
    }

    /// Lets `shutdown` stop the server gracefully: once it is triggered, new
    /// requests are answered with [`RemoteError::ShuttingDown`], calls in
    /// flight run to completion, and then the connection is closed.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// A server future for one connection. Poll it on any executor.
    pub fn build<T: Transport, S: Service>(self, transport: T, service: S) -> Server<T, S, Tm> {
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
            spawner: self.spawner,
            tasks: Tasks {
                entries: Vec::new(),
                free: Vec::new(),
                live: 0,
                wake,
                scratch: Vec::new(),
                done_scratch: Vec::new(),
            },
            draining: false,
        };
        Server {
            io: transport,
            reader: FrameReader::new(self.max_frame),
            readiness: ReadReadiness::new(),
            core,
            read_closed: false,
            finished: false,
            shutdown: self.shutdown.map(|signal| (signal, None)),
        }
    }
}

/// Serves one connection: reads requests, runs handlers, writes replies.
///
/// Completes with `Ok(())` when the client closes the connection between
/// frames (handlers still running are dropped: nobody is left to answer),
/// and with an error when the transport fails, the client closes in the
/// middle of a frame, sends bytes that are not frames, or stays idle past the
/// [idle timeout](ServerBuilder::idle_timeout). Unknown methods,
/// undecodable arguments, missed deadlines and panicking handlers (with
/// `std`) are answered with an error frame and the connection goes on.
#[must_use = "a server does nothing unless polled"]
pub struct Server<T, S, Tm: Timer = NoTimer> {
    io: T,
    reader: FrameReader,
    readiness: ReadReadiness,
    core: Core<S, Tm>,
    read_closed: bool,
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
    spawner: Option<Arc<dyn Spawn>>,
    tasks: Tasks,
    draining: bool,
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
        self.core.tasks.live
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
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DriverError<T::Error>>> {
        let core = &mut self.core;
        core.tasks.set_driver(cx.waker());
        if let Some((signal, key)) = &mut self.shutdown {
            core.draining |= signal.poll_triggered(cx, key);
        }
        for _ in 0..POLL_BUDGET {
            let mut progress = false;
            if !self.read_closed && self.core.may_read() {
                match self.read(cx) {
                    Poll::Ready(Ok(read)) => progress |= read,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            let core = &mut self.core;
            let finished = core.tasks.run_ready(core.writer.buffer(), core.max_frame);
            progress |= finished;
            core.touch(finished);
            let live = core.tasks.live;
            if core.expire_deadlines(cx) {
                return Poll::Ready(Err(DriverError::IdleTimeout));
            }
            // An expired handler frees a slot: reading may go on, and no
            // transport wake-up will say so.
            progress |= core.tasks.live < live;
            let unsent = core.writer.pending();
            let written = core.writer.poll_write_all(&mut self.io, cx);
            core.touch(core.writer.pending() < unsent);
            match written {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(()))
                    if self.read_closed || (core.draining && core.tasks.live == 0) =>
                {
                    return self.io.poll_close(cx).map_err(DriverError::Transport);
                }
                _ => {}
            }
            if !progress && !core.tasks.has_ready() {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads and dispatches requests. `Ok(true)`: something was read.
    fn read(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, DriverError<T::Error>>> {
        let mut read_any = false;
        loop {
            while self.core.may_read() {
                let Some(frame) = self.reader.next_frame().map_err(DriverError::Protocol)? else {
                    break;
                };
                read_any = true;
                let (header, body_at) = Header::decode(frame).map_err(DriverError::Protocol)?;
                self.core.on_frame(header, &frame[body_at..]);
            }
            if !self.core.may_read() {
                return Poll::Ready(Ok(read_any));
            }
            match self
                .readiness
                .poll_fill(&mut self.reader, &mut self.io, cx.waker())
            {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(DriverError::Transport(e))),
                Poll::Ready(Ok(0)) => {
                    if self.reader.has_partial_frame() {
                        return Poll::Ready(Err(DriverError::Protocol(FrameError::UnexpectedEof)));
                    }
                    // The client is gone: nobody is left to answer.
                    self.read_closed = true;
                    self.core.tasks.clear();
                    return Poll::Ready(Ok(true));
                }
                Poll::Ready(Ok(_)) => read_any = true,
            }
        }
    }
}

impl<S: Service, Tm: Timer> Core<S, Tm> {
    /// Reading stops while the handler table is full or replies pile up.
    fn may_read(&self) -> bool {
        self.tasks.live < self.max_concurrent
            && self.writer.pending() <= self.max_frame.max(64 * 1024)
    }

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

    fn on_frame(&mut self, header: Header, body: &[u8]) {
        if let Some(idle) = &mut self.idle {
            idle.active = true;
        }
        match header {
            Header::Request {
                id,
                method,
                timeout_ms,
            } => self.start(id, method, timeout_ms, body),
            Header::Cancel { id } => self.tasks.cancel(id),
            // Responses are reserved for calls in both directions; unknown
            // kinds are skipped.
            _ => {}
        }
    }

    fn start(&mut self, id: u32, method: MethodKey, timeout_ms: Option<u32>, body: &[u8]) {
        let out = self.writer.buffer();
        if self.draining {
            return write_error(out, id, RemoteError::ShuttingDown, self.max_frame);
        }
        if timeout_ms == Some(0) {
            return write_error(out, id, RemoteError::DeadlineExceeded, self.max_frame);
        }
        let handler = match self.service.dispatch(method, body) {
            Ok(handler) => handler,
            Err(error) => return write_error(out, id, error, self.max_frame),
        };
        let deadline = timeout_ms.map(|ms| self.deadlines.now() + Duration::from_millis(ms.into()));
        if let Some(at) = deadline {
            self.deadlines.arm(at);
        }
        match &self.spawner {
            None => {
                // Most handlers finish on their first poll: run it now, so
                // the reply joins this batch's write and the slot is free
                // again at once, without a trip through the wake queue.
                let index = self.tasks.insert(id, deadline, Work::Local(handler.0));
                self.tasks
                    .poll_one(index, self.writer.buffer(), self.max_frame);
            }
            Some(spawner) => {
                let (index, generation) = self.tasks.next_slot();
                let reply_to = ReplyTo {
                    queue: self.tasks.wake.clone(),
                    index,
                    generation,
                };
                let (task, abort) = remote_task(handler, reply_to, id, self.max_frame);
                self.tasks.insert(id, deadline, Work::Remote(abort));
                spawner.spawn(task);
            }
        }
    }

    /// Answers handlers whose deadline passed. Returns whether the idle
    /// timeout expired.
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
        if idle.active || self.tasks.live > 0 {
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
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Default)]
struct ShutdownInner {
    triggered: AtomicBool,
    /// Wakers of the servers watching, by registration key; `None` = free.
    wakers: Mutex<Vec<Option<Waker>>>,
}

impl core::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl Shutdown {
    /// A signal that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the graceful shutdown of every server built with this signal.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::Release);
        let wakers = self.inner.wakers.with(core::mem::take);
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Whether [`trigger`](Shutdown::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// Whether it was triggered; if not, wakes `cx` when it is. `key` is the
    /// caller's registration, kept between polls.
    pub(crate) fn poll_triggered(&self, cx: &mut Context<'_>, key: &mut Option<usize>) -> bool {
        if self.is_triggered() {
            return true;
        }
        let waker = cx.waker().clone();
        let previous = self.inner.wakers.with(|wakers| {
            let index = match *key {
                Some(index) if index < wakers.len() => index,
                _ => {
                    let free = wakers.iter().position(Option::is_none);
                    let index = free.unwrap_or_else(|| {
                        wakers.push(None);
                        wakers.len() - 1
                    });
                    *key = Some(index);
                    index
                }
            };
            wakers.get_mut(index).and_then(|slot| slot.replace(waker))
        });
        // The old waker is dropped outside the lock (its drop is user code).
        drop(previous);
        // Triggered between the check and the registration?
        self.is_triggered()
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
        let previous = self
            .inner
            .wakers
            .with(|wakers| wakers.get_mut(key).and_then(Option::take));
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
        if this.signal.poll_triggered(cx, &mut this.key) {
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
    Local(Pin<Box<dyn Respond + Send>>),
    Remote(AbortHandle),
}

struct Entry {
    id: u32,
    /// Bumped whenever the entry is reused, so a late reply from an aborted
    /// spawned handler is recognised.
    generation: u32,
    work: Work,
    deadline: Option<Duration>,
    waker: Waker,
    wake: Arc<SlotWake>,
}

/// The handler table.
struct Tasks {
    entries: Vec<Entry>,
    free: Vec<u32>,
    live: usize,
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

    /// Puts `work` into a free slot and returns the slot's index. A local
    /// handler is not polled: the caller polls it once to start it.
    fn insert(&mut self, id: u32, deadline: Option<Duration>, work: Work) -> u32 {
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
                deadline: None,
                waker,
                wake,
            });
        } else {
            self.free.pop();
        }
        let entry = &mut self.entries[index as usize];
        entry.id = id;
        entry.deadline = deadline;
        entry.work = work;
        self.live += 1;
        index
    }

    fn remove(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        if let Work::Remote(abort) = &entry.work {
            abort.abort();
        }
        entry.work = Work::Empty;
        entry.generation = entry.generation.wrapping_add(1);
        entry.deadline = None;
        self.free.push(index);
        self.live -= 1;
    }

    fn cancel(&mut self, id: u32) {
        let found = self
            .entries
            .iter()
            .position(|e| e.id == id && !matches!(e.work, Work::Empty));
        if let Some(index) = found {
            self.remove(index as u32);
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

    /// Answers handlers whose deadline passed and drops them. Returns the
    /// next deadline still pending.
    fn expire(&mut self, now: Duration, out: &mut Vec<u8>, max_frame: usize) -> Option<Duration> {
        let mut next = None::<Duration>;
        for index in 0..self.entries.len() {
            let entry = &self.entries[index];
            let Some(at) = entry.deadline else { continue };
            if matches!(entry.work, Work::Empty) {
                continue;
            }
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            write_error(out, entry.id, RemoteError::DeadlineExceeded, max_frame);
            self.remove(index as u32);
        }
        next
    }

    /// Drops every handler (the connection is gone).
    fn clear(&mut self) {
        for index in 0..self.entries.len() {
            if !matches!(self.entries[index].work, Work::Empty) {
                self.remove(index as u32);
            }
        }
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
    handler: Handler,
    reply_to: ReplyTo,
    id: u32,
    max_frame: usize,
) -> (Pin<Box<dyn Future<Output = ()> + Send>>, AbortHandle) {
    let (abort, registration) = AbortHandle::new_pair();
    let mut handler = handler.0;
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
