//! Streaming calls on the caller's side: [`CallStream`] (a response
//! stream, with or without a request stream) and [`Upload`] (a request
//! stream and one reply).
//!
//! Both run on the caller's task, without spawning: polling them pumps the
//! caller's items out (within the credit the callee granted), hands
//! received items over in batches (one lock per batch) and grants credit
//! back as items are consumed.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::sync::atomic::Ordering;
use core::task::{Context, Poll};

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::call::{decode_exact, Call, CallState, StreamOpen};
use super::state::{Phase, Queued};
use crate::error::CallError;
use crate::framing::encode_frame;
use crate::wire::Header;

use crate::stream::Window;
pub use crate::stream::{CONNECTION_WINDOW_BYTES, DEFAULT_CREDIT, WINDOW_BYTES};

/// How many bytes of its own items a call queues per turn, so that one
/// stream does not crowd out the others (PROTOCOL.md R12).
const TURN_BYTES: usize = 16 * 1024;

/// At most how many consumed items a response stream counts before it
/// folds them into its window and looks whether credit is due (and always
/// when its batch of received items runs out, before it waits): the
/// window's arithmetic runs once per this many items, not per item. A
/// small window settles more often, an eighth of it at a time, so its
/// grants go out about when half of it is consumed, as without batching.
const SETTLE_ITEMS: u32 = 16;

/// A caller's request stream, its item type erased.
trait ItemSource: Send {
    /// Encodes the next item as an item frame of call `id` into `out`.
    fn poll_encode(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        id: u32,
        out: &mut Vec<u8>,
        max_frame: usize,
    ) -> Poll<Option<Result<(), CallError>>>;
}

impl<S> ItemSource for S
where
    S: Stream + Send,
    S::Item: Serialize,
{
    fn poll_encode(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        id: u32,
        out: &mut Vec<u8>,
        max_frame: usize,
    ) -> Poll<Option<Result<(), CallError>>> {
        let item = core::task::ready!(self.poll_next(cx));
        Poll::Ready(item.map(|item| {
            let header = Header::Item {
                id,
                from_callee: false,
            };
            encode_frame(out, &header, &item, max_frame).map_err(CallError::from)
        }))
    }
}

/// Pumps a request stream out within the callee's credit.
struct Pump<'a> {
    source: Pin<Box<dyn ItemSource + 'a>>,
    /// Credit taken from the slot, not yet used.
    credit: u32,
    /// Frames encoded and not yet queued.
    batch: Vec<u8>,
    /// An item frame encoded while there was no credit, sent when it comes.
    held: Vec<u8>,
    /// The source was polled and returned `Pending` (its waker is set).
    waiting: bool,
    /// `batch` waits for the call's parked request to be queued (the
    /// unpark wakes the task).
    blocked: bool,
    /// The end frame is queued: nothing more to send.
    done: bool,
}

impl Pump<'_> {
    /// Encodes ready items while there is credit, up to one turn. Without
    /// credit it still looks at the source once: its end needs no credit
    /// (the end frame is not an item), and an item found is held, encoded,
    /// until credit comes.
    fn fill(&mut self, cx: &mut Context<'_>, id: u32, max_frame: usize) -> Result<(), CallError> {
        self.waiting = false;
        if !self.held.is_empty() && self.credit > 0 {
            self.batch.append(&mut self.held);
            self.credit -= 1;
        }
        while !self.done && self.held.is_empty() && self.batch.len() < TURN_BYTES {
            let out = if self.credit > 0 {
                &mut self.batch
            } else {
                &mut self.held
            };
            match self.source.as_mut().poll_encode(cx, id, out, max_frame) {
                Poll::Ready(Some(Ok(()))) if self.credit > 0 => self.credit -= 1,
                // Held until credit comes.
                Poll::Ready(Some(Ok(()))) => return Ok(()),
                Poll::Ready(Some(Err(error))) => return Err(error),
                Poll::Ready(None) => {
                    encode_frame(&mut self.batch, &Header::End { id }, &(), max_frame)?;
                    self.done = true;
                }
                Poll::Pending => {
                    self.waiting = true;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Whether another fill could make progress without a wake-up.
    fn can_fill(&self) -> bool {
        !self.done && !self.waiting && !self.blocked && self.credit > 0
    }
}

/// What one step of a streaming call produced.
enum Event<Resp> {
    /// An item: its body is `staged[at..end]`.
    Item(usize, usize),
    /// The call is over.
    End(Result<Resp, CallError>),
}

/// The machinery both kinds of streaming call share.
struct StreamCall<'a, Req, Resp> {
    call: Call<'a, Req, Resp>,
    /// Items taken from the slot in one batch, each a u32 LE length then
    /// the body; `staged_at` is where the next one starts.
    staged: Vec<u8>,
    staged_at: usize,
    /// The credit window of the response stream, if the call has one.
    window: Option<Window>,
    /// Items handed over and not yet counted in `window`, and their bytes.
    unsettled: u32,
    unsettled_bytes: usize,
    /// The credit due to the callee, as of the last settling.
    due: u32,
    /// Items to count before the next settling (1..=[`SETTLE_ITEMS`]).
    settle_every: u32,
    pump: Option<Pump<'a>>,
    ended: bool,
    /// Counted in the client's receiving streams (has a response stream).
    _receiving: Option<Receiving>,
}

impl<'a, Req: Serialize, Resp: DeserializeOwned> StreamCall<'a, Req, Resp> {
    fn new(mut call: Call<'a, Req, Resp>, credit: Option<u32>, pump: Option<Pump<'a>>) -> Self {
        let window = credit.map(Window::open);
        let receiving = window.map(|_| Receiving::count(&call.client.shared));
        call.stream = Some(StreamOpen {
            grant: window.map(|(_, first)| first),
            sends: pump.is_some(),
        });
        StreamCall {
            call,
            staged: Vec::new(),
            staged_at: 0,
            window: window.map(|(window, _)| window),
            unsettled: 0,
            unsettled_bytes: 0,
            due: 0,
            settle_every: 1,
            pump,
            ended: false,
            _receiving: receiving,
        }
    }

    /// Counts the items handed over since the last settling into the
    /// window (each at their average size) and notes the credit due.
    fn settle(&mut self) {
        let items = core::mem::take(&mut self.unsettled);
        let bytes = core::mem::take(&mut self.unsettled_bytes);
        let Some(window) = self.window.as_mut() else {
            return;
        };
        if items > 0 {
            window.consumed_many(items, bytes / items as usize);
        }
        let streams = self
            .call
            .client
            .shared
            .receiving_streams
            .load(Ordering::Relaxed);
        window.aim_at(crate::stream::stream_aim(streams));
        self.due = window.due();
        self.settle_every = (window.target() / 8).clamp(1, SETTLE_ITEMS);
    }

    /// The next staged item, if any.
    fn next_staged(&mut self) -> Option<(usize, usize)> {
        let at = self.staged_at;
        let len = self.staged.get(at..at.checked_add(4)?)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = at + 4;
        let end = start.saturating_add(len).min(self.staged.len());
        self.staged_at = end;
        self.unsettled = self.unsettled.saturating_add(1);
        self.unsettled_bytes = self.unsettled_bytes.saturating_add(end - start);
        Some((start, end))
    }

    fn finish(&mut self, result: Result<Resp, CallError>) -> Poll<Event<Resp>> {
        self.ended = true;
        self.pump = None;
        if let Err(error) = &result {
            // An answered call recorded its end when its reply was taken.
            self.call.trace.end(crate::trace::Outcome::Failed(error));
        }
        Poll::Ready(Event::End(result))
    }

    /// One step: start the call, pump items out, hand an item over or end.
    ///
    /// Invariant: it returns `Pending` only when the call's start is
    /// pending (its waker registered by [`Call::start`]), or when, in one
    /// critical section, nothing was staged or received, the call was not
    /// over, and the request stream (if any) had no credit left, had ended,
    /// or returned `Pending` from its own poll — and the task's waker was
    /// stored in the slot, where an item, credit or the end wakes it.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Event<Resp>> {
        let slot = loop {
            match self.call.state {
                CallState::Sent(slot) => break slot,
                CallState::Finished => return self.finish(Err(CallError::Closed)),
                _ => {
                    if let Poll::Ready(result) = self.call.start(cx) {
                        return self.finish(result);
                    }
                    if !matches!(self.call.state, CallState::Sent(_)) {
                        return Poll::Pending;
                    }
                }
            }
        };
        let id = self.call.id;
        if let Some(pump) = self.pump.as_mut() {
            // Woken: a parked request may have been queued meanwhile.
            pump.blocked = false;
        }
        loop {
            if let Some(pump) = self.pump.as_mut() {
                // Read here, not per item: `shared` is written by the
                // driver all the time.
                let max_frame = self.call.client.shared.max_frame;
                if let Err(error) = pump.fill(cx, id, max_frame) {
                    self.call.abandon_sent(slot);
                    return self.finish(Err(error));
                }
            }
            let batch_ready = self
                .pump
                .as_ref()
                .is_some_and(|p| !p.batch.is_empty() && !p.blocked);
            if self.unsettled >= self.settle_every || self.staged_at >= self.staged.len() {
                self.settle();
            }
            if !batch_ready && self.due == 0 {
                if let Some((start, end)) = self.next_staged() {
                    return Poll::Ready(Event::Item(start, end));
                }
            }
            match self.exchange(slot, id, cx) {
                Exchange::Again => continue,
                Exchange::Wait => return Poll::Pending,
                Exchange::Terminal => {
                    return match self.call.poll_response(slot, cx) {
                        Poll::Ready(result) => self.finish(result),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }

    /// Under one lock: queues the pumped items, grants consumed credit,
    /// takes new credit and, if nothing is staged, the received items.
    fn exchange(&mut self, slot: u32, id: u32, cx: &mut Context<'_>) -> Exchange {
        let grant = core::mem::take(&mut self.due);
        let StreamCall {
            call,
            staged,
            staged_at,
            window,
            pump,
            ..
        } = self;
        let shared = &*call.client.shared;
        let staged_empty = *staged_at >= staged.len();
        if staged_empty {
            // Consumed. The buffer swaps with the inbox, so what it keeps
            // the inbox reuses: up to the window's bytes, a batch's worth,
            // is kept (freeing it made every batch of large items regrow
            // the inbox from nothing); more, left by items larger than
            // half the window, is freed.
            if staged.capacity() > keep_capacity(window.as_ref()) {
                *staged = Vec::new();
            }
            staged.clear();
            *staged_at = 0;
        }
        let mut waker = Some(cx.waker().clone());
        let (outcome, wake_driver, unused) = shared.state.with(|state| {
            let mut wake_driver = false;
            if let Some(pump) = pump.as_mut() {
                if !pump.batch.is_empty() && !pump.blocked {
                    match state.queue_stream_frames(slot, id, &pump.batch) {
                        Queued::Yes => {
                            wake_driver = true;
                            pump.batch.clear();
                        }
                        Queued::NotYet => pump.blocked = true,
                        Queued::Gone => pump.batch.clear(),
                    }
                }
            }
            if grant > 0 {
                wake_driver |= state.grant(slot, id, grant);
                // Counted even when it could not be sent (the call or the
                // connection is over): no more items come, and the grant
                // must not be retried for ever.
                if let Some(window) = window.as_mut() {
                    window.granted(grant);
                }
            }
            let Some(s) = state.slot_mut(slot) else {
                return (Exchange::Terminal, wake_driver, waker.take());
            };
            if let Some(pump) = pump.as_mut() {
                pump.credit = pump
                    .credit
                    .saturating_add(core::mem::take(&mut s.stream.send_credit));
            }
            if !staged_empty {
                return (Exchange::Again, wake_driver, waker.take());
            }
            if !s.stream.inbox.is_empty() {
                core::mem::swap(&mut s.stream.inbox, staged);
                return (Exchange::Again, wake_driver, waker.take());
            }
            if matches!(s.phase, Phase::Done(_)) {
                return (Exchange::Terminal, wake_driver, waker.take());
            }
            if pump.as_ref().is_some_and(Pump::can_fill) {
                return (Exchange::Again, wake_driver, waker.take());
            }
            let unused = match (&s.waker, waker.take()) {
                (Some(old), Some(new)) if old.will_wake(&new) => Some(new),
                (_, new) => core::mem::replace(&mut s.waker, new),
            };
            (Exchange::Wait, wake_driver, unused)
        });
        // Wakers are dropped outside the lock.
        drop(unused);
        if wake_driver {
            shared.wake_driver();
        }
        outcome
    }
}

/// The capacity a response stream's consumed batch buffer keeps for the
/// next batch: the bytes its window aims at, at least [`SLOT_KEEP`](super::SLOT_KEEP).
fn keep_capacity(window: Option<&Window>) -> usize {
    let aim = window.map_or(0, |w| usize::try_from(w.aim()).unwrap_or(usize::MAX));
    aim.max(super::SLOT_KEEP)
}

/// A response stream counted in its client's receiving streams while it
/// lives.
struct Receiving(Arc<super::Shared>);

impl Receiving {
    fn count(shared: &Arc<super::Shared>) -> Self {
        shared.receiving_streams.fetch_add(1, Ordering::Relaxed);
        Receiving(shared.clone())
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.receiving_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What [`StreamCall::exchange`] decided.
enum Exchange {
    /// Something changed: step again.
    Again,
    /// The waker is stored; nothing to do until woken.
    Wait,
    /// The call is over: take its result.
    Terminal,
}

/// The response stream of a call (server streaming or bidirectional): a
/// [`Stream`] of the callee's items, each decoded on its own.
///
/// How it ends says how the call ended (PROTOCOL.md R11): `None` after the
/// last item when the callee finished normally; one `Some(Err(..))` and
/// then `None` when the callee sent an error
/// ([`CallError::Remote`]), the deadline passed
/// ([`CallError::DeadlineExceeded`]) or the connection was lost. An item
/// that does not decode is `Some(Err(CallError::Decode))` and the stream
/// goes on.
///
/// Nothing happens until it is first polled. Dropping it before the end
/// cancels the call: the callee's handler is dropped. At most the granted
/// credit (see [`with_credit`](CallStream::with_credit)) of items is ever
/// buffered for it, however slowly it is read.
#[must_use = "a stream call does nothing unless polled"]
pub struct CallStream<'a, Req, T> {
    inner: StreamCall<'a, Req, ()>,
    _item: PhantomData<fn() -> T>,
}

impl<'a, Req: Serialize, T: DeserializeOwned> CallStream<'a, Req, T> {
    pub(super) fn new<S>(call: Call<'a, Req, ()>, items: Option<S>) -> Self
    where
        S: Stream + Send + 'a,
        S::Item: Serialize,
    {
        CallStream {
            inner: StreamCall::new(call, Some(DEFAULT_CREDIT), items.map(Pump::new)),
            _item: PhantomData,
        }
    }

    /// Bounds how many items the callee may send ahead of this consumer
    /// (at least 1; [`DEFAULT_CREDIT`] unless set). Within the bound the
    /// window adapts to the items' size — about [`WINDOW_BYTES`] in
    /// flight, or its share of [`CONNECTION_WINDOW_BYTES`] when more than
    /// 16 streams receive on the connection — so the memory a stalled
    /// consumer costs is at most this many items, and about
    /// `WINDOW_BYTES` in steady state (plus the capacity its two batch
    /// buffers keep between batches: up to the window's bytes each, so
    /// that batches of large items do not regrow them every time).
    pub fn with_credit(mut self, items: u32) -> Self {
        let (window, first) = Window::open(items);
        self.inner.window = Some(window);
        if let Some(open) = self.inner.call.stream.as_mut() {
            open.grant = Some(first);
        }
        self
    }

    /// Gives the call a timeout, counted from the first poll, covering the
    /// whole stream (see [`Call::with_timeout`]).
    pub fn with_timeout(mut self, timeout: core::time::Duration) -> Self {
        self.inner.call = self.inner.call.with_timeout(timeout);
        self
    }

    /// Like [`with_timeout`](CallStream::with_timeout), for an optional
    /// timeout.
    pub fn with_optional_timeout(mut self, timeout: Option<core::time::Duration>) -> Self {
        self.inner.call = self.inner.call.with_optional_timeout(timeout);
        self
    }

    /// Names the call for its tracing span; see [`Call::with_method`](super::Call::with_method).
    pub fn with_method(mut self, info: &'static crate::MethodInfo) -> Self {
        self.inner.call = self.inner.call.with_method(info);
        self
    }
}

impl<Req: Serialize, T: DeserializeOwned> Stream for CallStream<'_, Req, T> {
    type Item = Result<T, CallError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.inner.ended {
            return Poll::Ready(None);
        }
        match core::task::ready!(this.inner.poll_step(cx)) {
            Event::Item(start, end) => {
                let body = this.inner.staged.get(start..end).unwrap_or_default();
                Poll::Ready(Some(decode_exact(body)))
            }
            Event::End(Ok(())) => Poll::Ready(None),
            Event::End(Err(error)) => Poll::Ready(Some(Err(error))),
        }
    }
}

impl<Req, T> Unpin for CallStream<'_, Req, T> {}

/// A client-streaming call: sends the caller's items (within the callee's
/// credit), then resolves to the callee's one reply.
///
/// Nothing happens until it is first polled. Dropping it before the reply
/// cancels the call. The reply may come before every item was sent (the
/// handler stopped reading): the rest are not sent.
#[must_use = "a stream call does nothing unless awaited"]
pub struct Upload<'a, Req, Resp> {
    inner: StreamCall<'a, Req, Resp>,
}

impl<'a, Req: Serialize, Resp: DeserializeOwned> Upload<'a, Req, Resp> {
    pub(super) fn new<S>(call: Call<'a, Req, Resp>, items: S) -> Self
    where
        S: Stream + Send + 'a,
        S::Item: Serialize,
    {
        Upload {
            inner: StreamCall::new(call, None, Some(Pump::new(items))),
        }
    }

    /// Gives the call a timeout, counted from the first poll, covering the
    /// whole upload (see [`Call::with_timeout`]).
    pub fn with_timeout(mut self, timeout: core::time::Duration) -> Self {
        self.inner.call = self.inner.call.with_timeout(timeout);
        self
    }

    /// Like [`with_timeout`](Upload::with_timeout), for an optional timeout.
    pub fn with_optional_timeout(mut self, timeout: Option<core::time::Duration>) -> Self {
        self.inner.call = self.inner.call.with_optional_timeout(timeout);
        self
    }

    /// Names the call for its tracing span; see [`Call::with_method`](super::Call::with_method).
    pub fn with_method(mut self, info: &'static crate::MethodInfo) -> Self {
        self.inner.call = self.inner.call.with_method(info);
        self
    }
}

impl<Req: Serialize, Resp: DeserializeOwned> Future for Upload<'_, Req, Resp> {
    type Output = Result<Resp, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match core::task::ready!(this.inner.poll_step(cx)) {
                // The callee sent items on a call without a response
                // stream: the slot ignores them, so none arrive here.
                Event::Item(..) => continue,
                Event::End(result) => return Poll::Ready(result),
            }
        }
    }
}

impl<Req, Resp> Unpin for Upload<'_, Req, Resp> {}

impl<'a> Pump<'a> {
    fn new<S>(items: S) -> Self
    where
        S: Stream + Send + 'a,
        S::Item: Serialize,
    {
        Pump {
            source: Box::pin(items),
            credit: 0,
            batch: Vec::new(),
            held: Vec::new(),
            waiting: false,
            blocked: false,
            done: false,
        }
    }
}

/// A notification on its way: resolves once the frame is queued for the
/// driver (no reply ever comes, PROTOCOL.md 3.10), or fails if the client
/// is closed, disconnected, or the notification cannot be encoded. It
/// waits while the client's queue is full, like a call's request.
#[must_use = "a notification is sent only when awaited"]
pub struct Notify<'a> {
    client: super::ClientRef<'a>,
    frame: Result<Vec<u8>, CallError>,
    done: bool,
}

impl<'a> Notify<'a> {
    pub(super) fn new<Req: Serialize>(
        client: super::ClientRef<'a>,
        method: crate::wire::MethodKey,
        args: &Req,
    ) -> Self {
        let mut frame = Vec::new();
        let header = Header::Notify { id: 0, method };
        let frame = encode_frame(&mut frame, &header, args, client.shared.max_frame)
            .map(|()| frame)
            .map_err(CallError::from);
        Notify {
            client,
            frame,
            done: false,
        }
    }
}

impl Future for Notify<'_> {
    type Output = Result<(), CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Ok(()));
        }
        let frame = match &this.frame {
            Ok(frame) => frame,
            Err(error) => return Poll::Ready(Err(*error)),
        };
        let shared = &*this.client.shared;
        let mut waker = Some(cx.waker().clone());
        let (queued, driver) = shared.state.with(|state| {
            let queued = state.queue_notification(frame, &mut waker, shared.max_queued);
            let driver = matches!(queued, Ok(true))
                .then(|| state.driver.take())
                .flatten();
            (queued, driver)
        });
        drop(waker);
        if let Some(driver) = driver {
            driver.wake();
        }
        match queued {
            Ok(true) => {
                this.done = true;
                Poll::Ready(Ok(()))
            }
            Ok(false) => Poll::Pending,
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{keep_capacity, Window};
    use crate::client::SLOT_KEEP;

    #[test]
    fn a_batch_buffer_keeps_the_windows_bytes_at_least_slot_keep() {
        assert_eq!(keep_capacity(None), SLOT_KEEP);
        let (mut window, _) = Window::open(8192);
        for (aim, kept) in [
            (1, SLOT_KEEP),
            (SLOT_KEEP as u32 - 1, SLOT_KEEP),
            (SLOT_KEEP as u32, SLOT_KEEP),
            (SLOT_KEEP as u32 + 1, SLOT_KEEP + 1),
            (
                crate::stream::WINDOW_BYTES,
                crate::stream::WINDOW_BYTES as usize,
            ),
            (u32::MAX, u32::MAX as usize),
        ] {
            window.aim_at(aim);
            assert_eq!(keep_capacity(Some(&window)), kept, "aim {aim}");
        }
    }
}
