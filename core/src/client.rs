//! The client: a cloneable [`Client`] handle and the [`ClientDriver`] future
//! that owns the transport.
//!
//! A call encodes its request straight into a buffer shared with the driver
//! and parks in a slot of a fixed-size table; the slot index and a generation
//! counter form the request id, so a response finds its caller in O(1) and a
//! late response to a dropped call is recognised and discarded. The driver
//! writes every queued frame in one write, reads responses in large chunks
//! and copies each body into its slot's reusable buffer: in steady state a
//! call allocates nothing.
//!
//! Backpressure: at most `max_in_flight` calls hold a slot; later callers
//! wait in FIFO order, and a waiter that is dropped passes its turn on.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::deadline::{timeout_to_ms, Deadlines};
use crate::error::{CallError, DriverError, FrameError};
use crate::framing::{encode_frame, FrameReader, FrameWriter, DEFAULT_MAX_FRAME};
use crate::io::Transport;
use crate::readiness::ReadReadiness;
use crate::sync::Mutex;
use crate::timer::{NoTimer, Timer};
use crate::wire::{Header, MethodKey};

mod reconnect;
pub use reconnect::{Connect, Outage, ReconnectPolicy, ReconnectingDriver};

/// The default bound on calls in flight per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// The largest `max_in_flight`: the slot index is 16 bits of the request id.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1 << 16;

/// How many reads the driver does in one go before it lets writes and other
/// tasks run.
const READ_BUDGET: usize = 16;

/// Configures and builds a client.
#[derive(Clone, Debug)]
#[must_use]
pub struct ClientBuilder<Tm = NoTimer> {
    max_in_flight: usize,
    max_frame: usize,
    timer: Tm,
}

impl ClientBuilder<NoTimer> {
    /// Defaults: [`DEFAULT_MAX_IN_FLIGHT`] calls, [`DEFAULT_MAX_FRAME`]
    /// bytes per frame, no local deadline checks.
    pub fn new() -> Self {
        ClientBuilder {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_frame: DEFAULT_MAX_FRAME,
            timer: NoTimer,
        }
    }
}

impl Default for ClientBuilder<NoTimer> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Tm: Timer> ClientBuilder<Tm> {
    fn shared(&self) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::new()),
            handles: AtomicUsize::new(1),
            max_in_flight: self.max_in_flight,
            max_frame: self.max_frame,
        })
    }

    /// A client that dials again with backoff whenever its connection is
    /// lost; see [`ReconnectingDriver`].
    /// It needs a real timer for the backoff.
    pub fn build_reconnecting<C: Connect>(
        self,
        connect: C,
        policy: ReconnectPolicy,
    ) -> (Client, ReconnectingDriver<C, Tm>)
    where
        Tm: Clone,
    {
        let shared = self.shared();
        let driver =
            ReconnectingDriver::new(shared.clone(), connect, policy, self.timer, self.max_frame);
        (Client { shared }, driver)
    }

    /// At most `n` calls in flight (clamped to `1..=65536`); more callers wait.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.clamp(1, MAX_IN_FLIGHT_LIMIT);
        self
    }

    /// The largest frame sent or accepted, in bytes (header and body).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.min(u32::MAX as usize);
        self
    }

    /// The timer that enforces call timeouts locally.
    pub fn timer<T2: Timer>(self, timer: T2) -> ClientBuilder<T2> {
        ClientBuilder {
            max_in_flight: self.max_in_flight,
            max_frame: self.max_frame,
            timer,
        }
    }

    /// A client handle and the driver that must be polled for calls to make
    /// progress (spawn it, or join it with other work).
    pub fn build<T: Transport>(self, transport: T) -> (Client, ClientDriver<T, Tm>) {
        let shared = self.shared();
        let driver = ClientDriver {
            shared: shared.clone(),
            conn: Conn::new(transport, self.max_frame),
            deadlines: Deadlines::new(self.timer),
            finished: false,
        };
        (Client { shared }, driver)
    }
}

/// A handle for making calls; cheap to clone, `Send` and `Sync`.
///
/// When every handle is dropped, the driver finishes sending what is queued,
/// closes the transport and completes with `Ok(())`.
pub struct Client {
    shared: Arc<Shared>,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("in_flight", &self.in_flight())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Client {
    /// A client with default settings over `transport`.
    pub fn new<T: Transport>(transport: T) -> (Client, ClientDriver<T, NoTimer>) {
        ClientBuilder::new().build(transport)
    }

    /// Starts a call of `method` with argument `request`. Nothing happens
    /// until the returned future is polled; dropping it cancels the call.
    pub fn call<Req, Resp>(&self, method: MethodKey, request: Req) -> Call<'_, Req, Resp>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        Call {
            client: self,
            method,
            timeout: None,
            request: Some(request),
            state: CallState::Start,
            _response: PhantomData,
        }
    }

    /// Calls holding a slot right now (sent, or answered but not yet taken).
    pub fn in_flight(&self) -> usize {
        self.shared.state.lock().in_flight
    }

    /// Whether the connection is closed; new calls then fail at once.
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().closed.is_some()
    }
}

impl Clone for Client {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Client {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            let driver = self.shared.state.lock().driver.take();
            if let Some(waker) = driver {
                waker.wake();
            }
        }
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    handles: AtomicUsize,
    max_in_flight: usize,
    max_frame: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Free,
    Waiting,
    Done(Result<(), CallError>),
}

struct Slot {
    generation: u16,
    phase: Phase,
    waker: Option<Waker>,
    /// The response body; its capacity is reused by the slot's next calls.
    body: Vec<u8>,
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    /// The deadline is the outage wait, not the call's own timeout.
    outage_bound: bool,
}

pub(crate) struct State {
    slots: Vec<Slot>,
    free: Vec<u16>,
    in_flight: usize,
    /// Frames encoded by callers that the driver has not taken yet.
    out: Vec<u8>,
    driver: Option<Waker>,
    closed: Option<CallError>,
    /// Callers waiting for a slot; entry `i` has ticket `head + i`, `None`
    /// marks one that gave up.
    waiters: VecDeque<Option<Waker>>,
    head: u64,
    /// Slots promised to waiters that were woken but have not taken them.
    granted: usize,
    /// Slots whose timeout the driver must turn into a deadline.
    timed: Vec<(u16, u16)>,
    /// While a reconnecting client is disconnected and lets calls wait: how
    /// long they may wait, and what they fail with after that.
    outage_wait: Option<Duration>,
    outage_error: Option<CallError>,
}

impl State {
    fn new() -> Self {
        State {
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            out: Vec::new(),
            driver: None,
            closed: None,
            waiters: VecDeque::new(),
            head: 0,
            granted: 0,
            timed: Vec::new(),
            outage_wait: None,
            outage_error: None,
        }
    }

    fn available(&self, max: usize) -> usize {
        self.free.len() + (max - self.slots.len())
    }

    /// Takes a slot if this caller may have one, else queues it.
    fn acquire(&mut self, max: usize, ticket: &mut Option<u64>, waker: &Waker) -> Option<u16> {
        match *ticket {
            Some(t) if t < self.head => {
                // Our turn was granted when a slot was released.
                self.granted -= 1;
                *ticket = None;
                return Some(self.take_slot());
            }
            Some(t) => {
                let entry = &mut self.waiters[(t - self.head) as usize];
                if !entry.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *entry = Some(waker.clone());
                }
                return None;
            }
            None => {}
        }
        if self.available(max) > self.granted {
            return Some(self.take_slot());
        }
        *ticket = Some(self.head + self.waiters.len() as u64);
        self.waiters.push_back(Some(waker.clone()));
        None
    }

    fn take_slot(&mut self) -> u16 {
        self.in_flight += 1;
        if let Some(index) = self.free.pop() {
            return index;
        }
        self.slots.push(Slot {
            generation: 0,
            phase: Phase::Free,
            waker: None,
            body: Vec::new(),
            timeout: None,
            deadline: None,
            outage_bound: false,
        });
        (self.slots.len() - 1) as u16
    }

    fn release(&mut self, index: u16, max: usize) {
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.phase = Phase::Free;
        slot.waker = None;
        slot.deadline = None;
        self.free.push(index);
        self.in_flight -= 1;
        self.grant_waiters(max);
    }

    /// Wakes waiters while slots are free for them.
    fn grant_waiters(&mut self, max: usize) {
        while self.available(max) > self.granted {
            let Some(entry) = self.waiters.pop_front() else {
                return;
            };
            self.head += 1;
            if let Some(waker) = entry {
                self.granted += 1;
                waker.wake();
            }
        }
    }

    /// A queued caller gave up.
    fn abandon(&mut self, ticket: u64, max: usize) {
        if ticket < self.head {
            self.granted -= 1;
            self.grant_waiters(max);
            return;
        }
        self.waiters[(ticket - self.head) as usize] = None;
        while self.waiters.front().is_some_and(Option::is_none) {
            self.waiters.pop_front();
            self.head += 1;
        }
    }

    fn wake_driver(&mut self) {
        if let Some(waker) = self.driver.take() {
            waker.wake();
        }
    }

    /// Fails every pending call and waiter; new calls fail with `error`.
    fn close(&mut self, error: CallError) {
        self.closed.get_or_insert(error);
        let error = self.closed.unwrap_or(error);
        for slot in &mut self.slots {
            if slot.phase == Phase::Waiting {
                slot.phase = Phase::Done(Err(error));
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
        self.wake_waiters();
        self.out.clear();
    }

    /// Wakes every queued caller; each leaves the queue itself when it sees
    /// the client closed.
    fn wake_waiters(&mut self) {
        for waker in self.waiters.iter().flatten() {
            waker.wake_by_ref();
        }
    }

    /// The connection of a reconnecting client was lost: the calls sent on
    /// it fail with `error`. With `wait`, new calls queue up for the next
    /// connection for at most that long; without, they fail fast.
    /// `sent` says whether calls were sent on a live connection; a failed
    /// connection attempt loses none.
    pub(crate) fn connection_lost(&mut self, error: CallError, wait: Option<Duration>, sent: bool) {
        // Fail-fast fails queued calls too: their frames can go nowhere.
        let lose_calls = sent || wait.is_none();
        for slot in self.slots.iter_mut().filter(|_| lose_calls) {
            if slot.phase == Phase::Waiting {
                slot.phase = Phase::Done(Err(error));
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
        if lose_calls {
            self.out.clear();
        }
        match wait {
            None => {
                self.closed = Some(error);
                self.wake_waiters();
            }
            Some(wait) => {
                self.outage_wait = Some(wait);
                self.outage_error = Some(error);
            }
        }
    }

    /// A reconnecting client is connected again.
    pub(crate) fn reconnected(&mut self) {
        self.closed = None;
        self.outage_wait = None;
        self.outage_error = None;
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if slot.phase == Phase::Waiting && slot.outage_bound {
                slot.outage_bound = false;
                slot.deadline = None;
                if slot.timeout.is_some() {
                    let generation = slot.generation;
                    self.timed.push((index as u16, generation));
                }
            }
        }
    }

    /// Routes a response or error frame to its caller.
    fn complete(&mut self, id: u32, result: Result<(), CallError>, body: &[u8]) {
        let Some(slot) = self.slots.get_mut((id & 0xffff) as usize) else {
            return;
        };
        if slot.generation != (id >> 16) as u16 || slot.phase != Phase::Waiting {
            return; // a call that was dropped or timed out
        }
        slot.body.clear();
        slot.body.extend_from_slice(body);
        slot.phase = Phase::Done(result);
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
    }

    fn send_cancel(&mut self, id: u32, max_frame: usize) {
        if self.closed.is_none() {
            // A cancel frame is 11 bytes and always fits.
            let _ = encode_frame(&mut self.out, &Header::Cancel { id }, &(), max_frame);
            self.wake_driver();
        }
    }
}

fn request_id(index: u16, generation: u16) -> u32 {
    (u32::from(generation) << 16) | u32::from(index)
}

enum CallState {
    Start,
    Queued(u64),
    Sent { index: u16 },
    Finished,
}

/// A call in progress: resolves to the response, or to why there is none.
///
/// Dropping it before it completes frees its slot and sends a cancel frame,
/// so the server drops the handler.
#[must_use = "a call does nothing unless awaited"]
pub struct Call<'a, Req, Resp> {
    client: &'a Client,
    method: MethodKey,
    timeout: Option<Duration>,
    request: Option<Req>,
    state: CallState,
    _response: PhantomData<fn() -> Resp>,
}

// The request is only ever moved out, never pinned.
impl<Req, Resp> Unpin for Call<'_, Req, Resp> {}

impl<Req, Resp> Call<'_, Req, Resp> {
    /// Gives the call a timeout: it is sent to the server, which drops the
    /// handler when it passes, and checked locally by the driver's timer
    /// (if the client has one). Sub-millisecond parts round up.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Like [`with_timeout`](Call::with_timeout), for an optional timeout.
    pub fn with_optional_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<Req: Serialize, Resp: DeserializeOwned> Call<'_, Req, Resp> {
    fn start(&mut self, cx: &mut Context<'_>) -> Poll<Result<Resp, CallError>> {
        let shared = &*self.client.shared;
        let mut state = shared.state.lock();
        let mut ticket = match self.state {
            CallState::Queued(ticket) => Some(ticket),
            _ => None,
        };
        if let Some(error) = state.closed {
            if let Some(ticket) = ticket {
                state.abandon(ticket, shared.max_in_flight);
            }
            self.state = CallState::Finished;
            return Poll::Ready(Err(error));
        }
        let Some(index) = state.acquire(shared.max_in_flight, &mut ticket, cx.waker()) else {
            self.state = CallState::Queued(ticket.expect("queued callers hold a ticket"));
            return Poll::Pending;
        };
        let generation = state.slots[index as usize].generation;
        let timeout_ms = self.timeout.map(timeout_to_ms);
        let header = Header::request(request_id(index, generation), self.method, timeout_ms);
        let request = self.request.take().expect("a call sends its request once");
        if let Err(error) = encode_frame(&mut state.out, &header, &request, shared.max_frame) {
            state.release(index, shared.max_in_flight);
            self.state = CallState::Finished;
            return Poll::Ready(Err(error.into()));
        }
        let slot = &mut state.slots[index as usize];
        slot.phase = Phase::Waiting;
        slot.waker = Some(cx.waker().clone());
        slot.timeout = self.timeout;
        if self.timeout.is_some() || state.outage_wait.is_some() {
            state.timed.push((index, generation));
        }
        state.wake_driver();
        self.state = CallState::Sent { index };
        Poll::Pending
    }

    fn poll_response(&mut self, index: u16, cx: &mut Context<'_>) -> Poll<Result<Resp, CallError>> {
        let shared = &*self.client.shared;
        let mut state = shared.state.lock();
        let slot = &mut state.slots[index as usize];
        let result = match slot.phase {
            Phase::Done(result) => result,
            _ => {
                if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    slot.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
        };
        let response = result.and_then(|()| decode_exact(&slot.body));
        state.release(index, shared.max_in_flight);
        self.state = CallState::Finished;
        Poll::Ready(response)
    }
}

/// Decodes a postcard body that must be used up entirely.
pub(crate) fn decode_exact<T: DeserializeOwned>(body: &[u8]) -> Result<T, CallError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        _ => Err(CallError::Decode),
    }
}

impl<Req: Serialize, Resp: DeserializeOwned> Future for Call<'_, Req, Resp> {
    type Output = Result<Resp, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.state {
            CallState::Start | CallState::Queued(_) => this.start(cx),
            CallState::Sent { index } => this.poll_response(index, cx),
            CallState::Finished => panic!("call polled after completion"),
        }
    }
}

impl<Req, Resp> Drop for Call<'_, Req, Resp> {
    fn drop(&mut self) {
        let shared = &*self.client.shared;
        match self.state {
            CallState::Queued(ticket) => shared.state.lock().abandon(ticket, shared.max_in_flight),
            CallState::Sent { index } => {
                let mut state = shared.state.lock();
                let slot = &state.slots[index as usize];
                if slot.phase == Phase::Waiting {
                    let id = request_id(index, slot.generation);
                    state.send_cancel(id, shared.max_frame);
                }
                state.release(index, shared.max_in_flight);
            }
            CallState::Start | CallState::Finished => {}
        }
    }
}

/// Owns the transport: writes requests, reads responses, enforces deadlines.
///
/// Poll it to completion on any executor. It completes with `Ok(())` when
/// every [`Client`] handle is gone and all queued frames are sent, or when
/// the server closes an idle connection; with an error when the transport
/// fails, the peer breaks the protocol, or the peer closes while calls are
/// pending. Either way every pending and later call fails with a
/// [`CallError`]. Dropping the driver does the same.
#[must_use = "calls make no progress unless the driver is polled"]
pub struct ClientDriver<T, Tm: Timer = NoTimer> {
    shared: Arc<Shared>,
    conn: Conn<T>,
    deadlines: Deadlines<Tm>,
    finished: bool,
}

// The transport and the sleep are never pinned in place (the sleep is boxed).
impl<T, Tm: Timer> Unpin for ClientDriver<T, Tm> {}

impl<T: Transport, Tm: Timer> Future for ClientDriver<T, Tm> {
    type Output = Result<(), DriverError<T::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        let result = match this.drive(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        this.finished = true;
        let error = match &result {
            Ok(()) => CallError::Closed,
            Err(e) => e.to_call_error(),
        };
        this.shared.state.lock().close(error);
        Poll::Ready(result)
    }
}

impl<T, Tm: Timer> Drop for ClientDriver<T, Tm> {
    fn drop(&mut self) {
        self.shared.state.lock().close(CallError::Closed);
    }
}

impl<T: Transport, Tm: Timer> ClientDriver<T, Tm> {
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DriverError<T::Error>>> {
        loop {
            if let Poll::Ready(result) = self.conn.read(&self.shared, cx) {
                return Poll::Ready(result);
            }
            self.shared.expire_deadlines(&mut self.deadlines, cx);
            self.conn.write(&self.shared, cx)?;
            match self.shared.next_step(Some(self.conn.pending_writes()), cx) {
                Step::Again => continue,
                Step::Wait => return Poll::Pending,
                Step::Finish => return self.conn.poll_close(cx),
            }
        }
    }
}

/// What a driver does after a round of reads, deadlines and writes.
pub(crate) enum Step {
    /// New work arrived while the lock was not held: go round again.
    Again,
    /// Nothing to do until woken (the waker is registered).
    Wait,
    /// Every handle is gone and every frame written: close.
    Finish,
}

impl Shared {
    /// Decides, under the lock, whether the driver sleeps; registering the
    /// waker in the same critical section means no wake-up is lost.
    /// `writer_pending` is `None` while there is no connection.
    pub(crate) fn next_step(&self, writer_pending: Option<usize>, cx: &mut Context<'_>) -> Step {
        let mut state = self.state.lock();
        let can_send = writer_pending == Some(0) && !state.out.is_empty();
        if !state.timed.is_empty() || can_send {
            return Step::Again;
        }
        let nothing_to_send = state.out.is_empty() || writer_pending.is_none();
        if self.handles.load(Ordering::Acquire) == 0 && nothing_to_send {
            return if writer_pending.unwrap_or(0) == 0 {
                Step::Finish
            } else {
                Step::Wait
            };
        }
        if !state
            .driver
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.driver = Some(cx.waker().clone());
        }
        Step::Wait
    }

    /// Turns new timeouts into deadlines and fails the calls whose deadline
    /// passed (sending a cancel for each).
    pub(crate) fn expire_deadlines<Tm: Timer>(
        &self,
        deadlines: &mut Deadlines<Tm>,
        cx: &mut Context<'_>,
    ) {
        let mut state = self.state.lock();
        if !state.timed.is_empty() {
            let now = deadlines.now();
            let timed = core::mem::take(&mut state.timed);
            for &(index, generation) in &timed {
                if let Some(at) = state.start_deadline(index, generation, now) {
                    deadlines.arm(at);
                }
            }
            state.timed = timed;
            state.timed.clear();
        }
        while deadlines.poll_fired(cx) {
            let now = deadlines.now();
            if let Some(next) = state.expire(now, self.max_frame) {
                deadlines.arm(next);
            }
        }
    }
}

impl State {
    /// Gives a just-sent call its deadline: its own timeout, bounded by the
    /// outage wait while the connection is down.
    fn start_deadline(&mut self, index: u16, generation: u16, now: Duration) -> Option<Duration> {
        let outage_wait = self.outage_wait;
        let slot = &mut self.slots[index as usize];
        if slot.generation != generation || slot.phase != Phase::Waiting {
            return None;
        }
        let own = slot.timeout.and_then(|t| now.checked_add(t));
        let outage = outage_wait.and_then(|w| now.checked_add(w));
        slot.outage_bound = matches!((own, outage), (Some(a), Some(b)) if b < a)
            || (own.is_none() && outage.is_some());
        slot.deadline = match (own, outage) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        slot.deadline
    }

    /// Fails the calls whose deadline passed; returns the next deadline.
    fn expire(&mut self, now: Duration, max_frame: usize) -> Option<Duration> {
        let mut next = None::<Duration>;
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            let (Phase::Waiting, Some(at)) = (slot.phase, slot.deadline) else {
                continue;
            };
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let error = if slot.outage_bound {
                self.outage_error.unwrap_or(CallError::Closed)
            } else {
                CallError::DeadlineExceeded
            };
            let slot = &mut self.slots[index];
            slot.phase = Phase::Done(Err(error));
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
            let id = request_id(index as u16, slot.generation);
            self.send_cancel(id, max_frame);
        }
        next
    }
}

/// One connection's transport and buffers.
pub(crate) struct Conn<T> {
    io: T,
    reader: FrameReader,
    writer: FrameWriter,
    readiness: ReadReadiness,
}

impl<T: Transport> Conn<T> {
    pub(crate) fn new(io: T, max_frame: usize) -> Self {
        Conn {
            io,
            reader: FrameReader::new(max_frame),
            writer: FrameWriter::new(max_frame),
            readiness: ReadReadiness::new(),
        }
    }

    /// Reads and routes responses until the transport has nothing more (or
    /// the read budget is spent). `Ready` means the connection ended.
    pub(crate) fn read(
        &mut self,
        shared: &Shared,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), DriverError<T::Error>>> {
        for _ in 0..READ_BUDGET {
            if let Err(e) = self.route_buffered(shared) {
                return Poll::Ready(Err(DriverError::Protocol(e)));
            }
            match self
                .readiness
                .poll_fill(&mut self.reader, &mut self.io, cx.waker())
            {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(DriverError::Transport(e))),
                Poll::Ready(Ok(0)) => return Poll::Ready(self.peer_closed(shared)),
                Poll::Ready(Ok(_)) => {}
            }
        }
        if let Err(e) = self.route_buffered(shared) {
            return Poll::Ready(Err(DriverError::Protocol(e)));
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn peer_closed(&self, shared: &Shared) -> Result<(), DriverError<T::Error>> {
        let idle = shared.state.lock().in_flight == 0;
        if idle && !self.reader.has_partial_frame() {
            Ok(())
        } else {
            Err(DriverError::Closed)
        }
    }

    /// Delivers every complete buffered frame, under one lock.
    fn route_buffered(&mut self, shared: &Shared) -> Result<(), FrameError> {
        let mut state = shared.state.lock();
        while let Some(frame) = self.reader.next_frame()? {
            let (header, body_at) = Header::decode(frame)?;
            match header {
                Header::Response { id } => state.complete(id, Ok(()), &frame[body_at..]),
                Header::Error { id, error } => {
                    state.complete(id, Err(CallError::Remote(error)), &[])
                }
                // Requests and cancels from the server are reserved for
                // calls in both directions; unknown kinds are skipped.
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes what callers queued, in as few writes as possible.
    pub(crate) fn write(
        &mut self,
        shared: &Shared,
        cx: &mut Context<'_>,
    ) -> Result<(), DriverError<T::Error>> {
        loop {
            if self.writer.pending() == 0 {
                let mut state = shared.state.lock();
                self.writer.take_from(&mut state.out);
            }
            if self.writer.is_idle() {
                return Ok(());
            }
            match self.writer.poll_write_all(&mut self.io, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(()),
            }
        }
    }

    pub(crate) fn pending_writes(&self) -> usize {
        self.writer.pending()
    }

    pub(crate) fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), DriverError<T::Error>>> {
        self.io.poll_close(cx).map_err(DriverError::Transport)
    }
}
