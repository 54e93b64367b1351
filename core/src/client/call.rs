//! One call: the future a caller awaits.

use alloc::vec::Vec;
use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::sync::atomic::Ordering;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use serde::de::DeserializeOwned;

use super::encoded::EncodeArgs;
use super::state::{Acquired, Frame, Phase, SLOT_KEEP};
use super::ClientRef;
use crate::deadline::timeout_to_ms;
use crate::error::CallError;
use crate::framing::encode_frame;
use crate::trace::{CallTrace, Outcome};
use crate::wire::{Header, MethodKey};
use crate::MethodInfo;

pub(super) enum CallState {
    Start,
    /// Waiting for a slot, with this ticket.
    Queued(u64),
    /// Encoding the request into the slot's buffer (only during a poll; a
    /// panicking `Serialize` leaves it here for `Drop` to clean up).
    Encoding(u32),
    /// Queued, sent or answered.
    Sent(u32),
    /// Decoding the reply (only during a poll, as for `Encoding`).
    Decoding(u32),
    Finished,
}

/// A call in progress: resolves to the response, or to why there is none.
///
/// Nothing happens until it is first polled; its timeout counts from then.
/// Dropping it before it completes frees its slot: a request that has not
/// left the process is taken back and never sent, one that may have is
/// cancelled with a cancel frame so the server drops the handler.
#[must_use = "a call does nothing unless awaited"]
pub struct Call<'a, Req, Resp> {
    pub(super) client: ClientRef<'a>,
    method: MethodKey,
    timeout: Option<Duration>,
    /// When the call started (its first poll), if it needs a clock.
    started: Option<Duration>,
    request: Option<Req>,
    /// Keep `request` once it is encoded (see `retain_request`).
    keep_request: bool,
    pub(super) state: CallState,
    /// A streaming call's shape, sent with its request.
    pub(super) stream: Option<StreamOpen>,
    /// The request id, once the request was encoded into its slot.
    pub(super) id: u32,
    /// The call's tracing span (empty without the `tracing` feature).
    pub(super) trace: CallTrace,
    _response: PhantomData<fn() -> Resp>,
}

/// What a streaming call sets up with its request.
#[derive(Clone, Copy)]
pub(super) struct StreamOpen {
    /// The credit granted at once for the response stream, if it has one.
    pub(super) grant: Option<u32>,
    /// The call sends a request stream.
    pub(super) sends: bool,
}

// The request is only ever moved out, never pinned.
impl<Req, Resp> Unpin for Call<'_, Req, Resp> {}

impl<'a, Req, Resp> Call<'a, Req, Resp> {
    pub(super) fn new(client: ClientRef<'a>, method: MethodKey, request: Req) -> Self {
        Call {
            client,
            method,
            timeout: None,
            started: None,
            request: Some(request),
            keep_request: false,
            state: CallState::Start,
            stream: None,
            id: 0,
            trace: CallTrace::new(),
            _response: PhantomData,
        }
    }

    /// Gives the call a timeout, counted from its first poll: it is sent to
    /// the server (as the time left when the request is written), which
    /// drops the handler when it passes, and checked locally by the
    /// driver's timer (if the client has one). Sub-millisecond parts round
    /// up.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Like [`with_timeout`](Call::with_timeout), for an optional timeout.
    pub fn with_optional_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Passes a handler's deadline on: the call gets the time the handler's
    /// own call has left (with `std`; without, the timeout it arrived with),
    /// so a chain of calls shares one deadline. A call with its own shorter
    /// timeout keeps it.
    pub fn with_context(mut self, context: &crate::server::CallContext) -> Self {
        self.timeout = context.timeout_for(self.timeout);
        self
    }

    /// The same call, owning a clone of its client (an `Arc` increment)
    /// instead of borrowing it: a `'static` future that can be spawned.
    ///
    /// A call borrows the client it was made from, so
    /// `tokio::spawn(kv.get(key))` does not compile (the future would
    /// outlive `kv`); `tokio::spawn(kv.get(key).into_owned())` does. The
    /// borrowing form stays the default: it costs nothing per call.
    ///
    /// ```
    /// # #[courier::service]
    /// # trait Kv { async fn get(&self, key: u32) -> Option<u64>; }
    /// # struct Imp;
    /// # impl Kv for Imp { async fn get(&self, key: u32) -> Option<u64> { Some(key.into()) } }
    /// # let (client_io, server_io) = courier_mem::pair(64 * 1024);
    /// # let server = courier::ServerBuilder::new().build(server_io, KvServer::new(Imp));
    /// # let (client, driver) = courier::Client::new(client_io);
    /// let kv = KvClient::new(client);
    /// // A `'static` future: it may outlive `kv`.
    /// let call: courier::Call<'static, (u32,), Option<u64>> = kv.get(7).into_owned();
    /// drop(kv);
    /// # futures::executor::block_on(async move {
    /// #     let (value, d, s) = futures::join!(call, driver, server);
    /// #     (d.unwrap(), s.unwrap());
    /// assert_eq!(value, Ok(Some(7)));
    /// # });
    /// ```
    pub fn into_owned(mut self) -> Call<'static, Req, Resp> {
        let client = match &self.client {
            ClientRef::Held(holder) => ClientRef::Held(holder.clone()),
            other => ClientRef::Owned((**other).clone()),
        };
        Call {
            client,
            method: self.method,
            timeout: self.timeout,
            started: self.started,
            request: self.request.take(),
            keep_request: self.keep_request,
            // The call's place (queued, sent, ...) moves with it; `self`
            // is left finished, so its drop releases nothing.
            state: core::mem::replace(&mut self.state, CallState::Finished),
            stream: self.stream,
            id: self.id,
            trace: core::mem::replace(&mut self.trace, CallTrace::new()),
            _response: PhantomData,
        }
    }

    /// Names the call for its tracing span (feature `tracing`): service,
    /// method, and whether an `Err` reply is the application's error. The
    /// clients [`service`](crate::service) generates do this for every
    /// call; without the feature it does nothing.
    pub fn with_method(mut self, info: &'static MethodInfo) -> Self {
        self.trace.set_info(info);
        self
    }

    /// Keeps the request after it is encoded, rather than dropping it
    /// then, so that [`into_request`](Self::into_request) can give it back:
    /// a load balancer re-sends a failed call's arguments on another
    /// connection without encoding them beforehand.
    pub fn retain_request(mut self) -> Self {
        self.keep_request = true;
        self
    }

    /// Ends the call — cancelling it, as dropping it does, if it has not
    /// completed — and gives back its request, if it still has it: always
    /// with [`retain_request`](Self::retain_request) (unless its
    /// `Serialize` panicked), else only before it was encoded.
    pub fn into_request(mut self) -> Option<Req> {
        self.request.take()
    }

    /// What the call keeps its client in, if it was started by
    /// [`Client::call_held`](super::Client::call_held) with an `Arc<H>`.
    pub fn holder<H: 'static>(&self) -> Option<&H> {
        match &self.client {
            ClientRef::Held(holder) => holder.any().downcast_ref(),
            _ => None,
        }
    }

    fn deadline(&self) -> Option<Duration> {
        let started = self.started?;
        Some(started.saturating_add(self.timeout?))
    }
}

/// Requests and replies up to this size travel through a buffer on the
/// caller's stack, so that a call takes the client's lock once to start and
/// once to finish; larger ones use the slot's own buffer and one more lock.
const INLINE: usize = 256;

/// Where the request id sits in an encoded request (after the length
/// prefix, version, kind and flags).
const ID_AT: usize = 4 + 3;

/// What a poll for the reply found (a temporary on the stack, never kept).
#[allow(clippy::large_enum_variant)]
enum Look {
    /// A small reply, copied out; the slot is already free again.
    Inline(Result<(), CallError>, [u8; INLINE], usize, Option<Waker>),
    /// The reply in the slot's buffer, taken out.
    Done(Result<(), CallError>, Vec<u8>),
    Registered,
    NeedsWaker,
}

/// What the first lock of a start decided.
enum Start {
    Failed(CallError, Option<Waker>),
    Queued(u64),
    /// The request (encoded inline, with this id) is queued; wake the
    /// driver.
    Sent(u32, u32, Option<Waker>),
    /// A slot to encode into, outside the lock.
    Slot {
        slot: u32,
        id: u32,
        buf: Vec<u8>,
    },
}

impl<Req: EncodeArgs, Resp: DeserializeOwned> Call<'_, Req, Resp> {
    pub(super) fn start(&mut self, cx: &mut Context<'_>) -> Poll<Result<Resp, CallError>> {
        let shared = &*self.client.shared;
        let first = matches!(self.state, CallState::Start);
        if first {
            self.trace.start(self.method);
            if self.timeout.is_some() {
                shared.timed.store(true, Ordering::Relaxed);
            }
            if self.timeout.is_some() || shared.reconnecting {
                self.started = Some((shared.clock)());
            }
        }
        let ticket = match self.state {
            CallState::Queued(ticket) => Some(ticket),
            _ => None,
        };
        let deadline = self.deadline();
        let now = match deadline {
            Some(_) if !first => (shared.clock)(),
            _ => self.started.unwrap_or_default(),
        };
        let expired = deadline.is_some_and(|at| at <= now);
        let timeout_ms = deadline.map(|at| timeout_to_ms(at.saturating_sub(now)));
        // A small request is encoded before the lock (with id 0, patched
        // under it), so the start takes the lock once.
        let mut inline = [0u8; INLINE];
        let mut inline_len = None;
        if first && !expired && self.stream.is_none() {
            let Some(request) = self.request.as_ref() else {
                return self.finish(Err(CallError::Encode));
            };
            let header = Header::request(0, self.method, timeout_ms);
            match request.encode_frame_into(&mut inline, &header, shared.max_frame) {
                Ok(len) => inline_len = len,
                Err(error) => return self.finish(Err(error.into())),
            }
        }
        // Cloned outside the lock; whatever the lock does not keep is used
        // or dropped after it.
        let mut waker = Some(cx.waker().clone());
        let start = shared.state.with(|state| {
            let fail = match state.closed {
                Some(error) => Some(error),
                None if expired => Some(CallError::DeadlineExceeded),
                None => None,
            };
            if let Some(error) = fail {
                let next = ticket.and_then(|t| state.abandon(t));
                return Start::Failed(error, next);
            }
            match state.acquire(ticket, &mut waker, deadline) {
                Acquired::Queued(t) => Start::Queued(t),
                Acquired::Slot { slot, id } => match inline_len {
                    Some(len) => {
                        let frame = inline.get_mut(..len).unwrap_or_default();
                        if let Some(field) = frame.get_mut(ID_AT..ID_AT + 4) {
                            field.copy_from_slice(&id.to_le_bytes());
                        }
                        let frame = Frame::Inline(frame);
                        // Always there: only queueing takes it.
                        let waker = waker.take().unwrap_or_else(|| Waker::noop().clone());
                        state.submit(slot, frame, waker, deadline, now, shared.max_queued);
                        Start::Sent(slot, id, state.driver.take())
                    }
                    None => {
                        let buf = state
                            .slot_mut(slot)
                            .map(|s| core::mem::take(&mut s.buf))
                            .unwrap_or_default();
                        Start::Slot { slot, id, buf }
                    }
                },
            }
        });
        match start {
            Start::Failed(error, next) => {
                if let Some(next) = next {
                    next.wake();
                }
                self.finish(Err(error))
            }
            Start::Queued(t) => {
                self.state = CallState::Queued(t);
                Poll::Pending
            }
            Start::Sent(slot, id, driver) => {
                self.state = CallState::Sent(slot);
                self.trace.sent(id);
                if !self.keep_request {
                    drop(self.request.take());
                }
                if let Some(driver) = driver {
                    driver.wake();
                }
                Poll::Pending
            }
            Start::Slot { slot, id, buf } => {
                self.state = CallState::Encoding(slot);
                let waker = waker.unwrap_or_else(|| cx.waker().clone());
                self.send(slot, id, buf, deadline, now, waker)
            }
        }
    }

    fn finish(&mut self, result: Result<Resp, CallError>) -> Poll<Result<Resp, CallError>> {
        self.state = CallState::Finished;
        if let Err(error) = &result {
            self.trace.end(Outcome::Failed(error));
        }
        Poll::Ready(result)
    }

    /// Encodes the request into the slot's buffer (no lock held) and
    /// queues it.
    fn send(
        &mut self,
        slot: u32,
        id: u32,
        mut buf: Vec<u8>,
        deadline: Option<Duration>,
        now: Duration,
        waker: Waker,
    ) -> Poll<Result<Resp, CallError>> {
        let shared = &*self.client.shared;
        let timeout_ms = deadline.map(|at| timeout_to_ms(at.saturating_sub(now)));
        let header = Header::request(id, self.method, timeout_ms);
        self.id = id;
        buf.clear();
        let Some(request) = self.request.take() else {
            return self.fail(slot, CallError::Encode);
        };
        let encoded = request.encode_frame(&mut buf, &header, shared.max_frame);
        if self.keep_request {
            self.request = Some(request);
        } else {
            drop(request);
        }
        if let Err(error) = encoded {
            return self.fail(slot, error.into());
        }
        let stream = self.stream;
        if let Some(grant) = stream.and_then(|s| s.grant) {
            // The first credit rides with the request: no round trip.
            let credit = Header::Credit {
                id,
                from_callee: false,
                grant,
            };
            if let Err(error) = encode_frame(&mut buf, &credit, &(), shared.max_frame) {
                return self.fail(slot, error.into());
            }
        }
        let (closed, driver) = shared.state.with(|state| {
            if let Some(error) = state.closed {
                return (Some((error, state.release(slot))), None);
            }
            if let Some(open) = stream {
                state.open_stream(slot, open.grant, open.sends);
            }
            let frame = Frame::Owned(buf);
            state.submit(slot, frame, waker, deadline, now, shared.max_queued);
            (None, state.driver.take())
        });
        if let Some((error, next)) = closed {
            if let Some(next) = next {
                next.wake();
            }
            return self.finish(Err(error));
        }
        self.state = CallState::Sent(slot);
        self.trace.sent(id);
        if let Some(driver) = driver {
            driver.wake();
        }
        Poll::Pending
    }

    /// Frees the slot of a call that failed before it was queued.
    pub(super) fn fail(&mut self, slot: u32, error: CallError) -> Poll<Result<Resp, CallError>> {
        self.state = CallState::Finished;
        self.trace.end(Outcome::Failed(&error));
        let next = self.client.shared.state.with(|state| state.release(slot));
        if let Some(next) = next {
            next.wake();
        }
        Poll::Ready(Err(error))
    }

    pub(super) fn poll_response(
        &mut self,
        slot: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Resp, CallError>> {
        let shared = &*self.client.shared;
        let look = shared.state.with(|state| {
            let Some(s) = state.slot_mut(slot) else {
                return Look::Done(Err(CallError::Closed), Vec::new());
            };
            match s.phase {
                Phase::Done(result) if s.buf.len() <= INLINE => {
                    let mut body = [0u8; INLINE];
                    let len = s.buf.len();
                    body[..len].copy_from_slice(&s.buf);
                    Look::Inline(result, body, len, state.release(slot))
                }
                Phase::Done(result) => Look::Done(result, core::mem::take(&mut s.buf)),
                _ if s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) => Look::Registered,
                _ => Look::NeedsWaker,
            }
        });
        let (result, body) = match look {
            Look::Inline(result, body, len, next) => {
                self.state = CallState::Finished;
                if let Some(next) = next {
                    next.wake();
                }
                let body = body.get(..len).unwrap_or_default();
                let response = result.and_then(|()| decode_exact(body));
                end_trace(&mut self.trace, &response, body);
                return Poll::Ready(response);
            }
            Look::Done(result, body) => (result, body),
            Look::Registered => return Poll::Pending,
            Look::NeedsWaker => {
                // Cloned, and the old one dropped, outside the lock.
                let waker = cx.waker().clone();
                let (done, unused) = shared.state.with(|state| match state.slot_mut(slot) {
                    Some(s) => match s.phase {
                        Phase::Done(result) => {
                            (Some((result, core::mem::take(&mut s.buf))), Some(waker))
                        }
                        _ => (None, s.waker.replace(waker)),
                    },
                    None => (Some((Err(CallError::Closed), Vec::new())), Some(waker)),
                });
                drop(unused);
                match done {
                    Some(done) => done,
                    None => return Poll::Pending,
                }
            }
        };
        self.state = CallState::Decoding(slot);
        let response = result.and_then(|()| decode_exact(&body));
        end_trace(&mut self.trace, &response, &body);
        let next = shared.state.with(|state| {
            if let Some(s) = state.slot_mut(slot) {
                if body.capacity() <= SLOT_KEEP {
                    s.buf = body;
                }
            }
            state.release(slot)
        });
        self.state = CallState::Finished;
        if let Some(next) = next {
            next.wake();
        }
        Poll::Ready(response)
    }
}

/// Records in `trace` how the call ended.
#[inline]
fn end_trace<Resp>(trace: &mut CallTrace, response: &Result<Resp, CallError>, body: &[u8]) {
    match response {
        Ok(_) => trace.end(Outcome::Answered { body }),
        Err(error) => trace.end(Outcome::Failed(error)),
    }
}

/// Decodes a postcard body that must be used up entirely.
pub(crate) fn decode_exact<T: DeserializeOwned>(body: &[u8]) -> Result<T, CallError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        _ => Err(CallError::Decode),
    }
}

impl<Req: EncodeArgs, Resp: DeserializeOwned> Future for Call<'_, Req, Resp> {
    type Output = Result<Resp, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.state {
            CallState::Start | CallState::Queued(_) => this.start(cx),
            CallState::Sent(slot) => this.poll_response(slot, cx),
            // Polled again after its `Serialize` or `Deserialize` panicked.
            CallState::Encoding(slot) => this.fail(slot, CallError::Encode),
            CallState::Decoding(slot) => this.fail(slot, CallError::Decode),
            CallState::Finished => panic!("call polled after completion"),
        }
    }
}

impl<Req, Resp> Call<'_, Req, Resp> {
    /// Ends a sent call that its caller gives up on: its request is taken
    /// back if it never left the process, else a cancel is queued.
    pub(super) fn abandon_sent(&mut self, slot: u32) {
        let shared = &*self.client.shared;
        let (next, driver, own) = shared.state.with(|s| {
            let (next, run_driver, own) = s.drop_call(slot);
            (next, run_driver.then(|| s.driver.take()).flatten(), own)
        });
        drop(own);
        self.state = CallState::Finished;
        if let Some(next) = next {
            next.wake();
        }
        if let Some(driver) = driver {
            driver.wake();
        }
    }
}

impl<Req, Resp> Drop for Call<'_, Req, Resp> {
    fn drop(&mut self) {
        self.trace.cancel();
        let shared = &*self.client.shared;
        let next = match self.state {
            CallState::Queued(ticket) => shared.state.with(|s| s.abandon(ticket)),
            CallState::Encoding(slot) | CallState::Decoding(slot) => {
                shared.state.with(|s| s.release(slot))
            }
            CallState::Sent(slot) => return self.abandon_sent(slot),
            CallState::Start | CallState::Finished => return,
        };
        self.state = CallState::Finished;
        if let Some(next) = next {
            next.wake();
        }
    }
}
