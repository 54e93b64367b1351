//! The handler table: one slot per running handler or backlogged request,
//! each with its own waker, and the queue through which slots are woken and
//! spawned handlers hand back their replies.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use futures_util::future::AbortHandle;

use super::remote::RemoteReply;
use super::service::{poll_guarded, write_error, Reply, Respond};
use super::CallContext;
use crate::deadline::DeadlineQueue;
use crate::error::{CallError, FrameError, RemoteError};
use crate::framing::encode_frame;
use crate::id_map::IdMap;
use crate::stream::{Incoming, IncomingRef};
use crate::sync::Mutex;
use crate::wire::Header;

/// What occupies a handler slot.
pub(super) enum SlotState {
    Empty,
    /// Waiting in the backlog; not polled yet.
    Queued(Pin<Box<dyn Respond + Send>>),
    Local(Pin<Box<dyn Respond + Send>>),
    Remote(AbortHandle),
}

/// No slot (the end of the backlog list).
const NONE: u32 = u32::MAX;

pub(super) struct Slot {
    pub(super) id: u32,
    /// Bumped whenever the slot is reused, so a late reply from an aborted
    /// spawned handler is recognised.
    pub(super) generation: u32,
    pub(super) state: SlotState,
    /// In the id index (a handler that finished on its first poll never is).
    indexed: bool,
    /// Backlogged: the request's bytes, and its neighbours in the FIFO.
    cost: usize,
    prev: u32,
    next: u32,
    waker: Waker,
    wake: Arc<SlotWake>,
    /// Items the handler may still send (its caller's credit).
    pub(super) credit: u32,
    /// The caller's items, for a handler that receives a stream.
    pub(super) incoming: Option<IncomingRef>,
    /// A notification: whatever the handler replies is discarded.
    pub(super) quiet: bool,
    /// Sends or receives items: runs in the connection's task.
    pub(super) streaming: bool,
    /// The handler's context, if its method asked for one.
    pub(super) context: Option<CallContext>,
}

/// The handler table: running handlers and, linked in arrival order
/// through their slots, the backlog. Request ids map to slots in O(1)
/// (cancel), deadlines sit in an indexed heap (O(log n)).
pub(super) struct HandlerTable {
    pub(super) slots: Vec<Slot>,
    free: Vec<u32>,
    pub(super) running: usize,
    pub(super) queued: usize,
    pub(super) queued_bytes: usize,
    head: u32,
    tail: u32,
    ids: IdMap,
    deadlines: DeadlineQueue,
    pub(super) wake: Arc<WakeQueue>,
    scratch: Vec<u32>,
    done_scratch: Vec<RemoteReply>,
    /// Streaming handlers waiting for the unsent bytes to go under the
    /// write mark.
    waiting_for_room: Vec<u32>,
    /// The connection's write mark.
    pub(super) write_mark: usize,
    /// The caller closed its write half: no credit, item or end comes any
    /// more, so streams that wait for them are over.
    caller_closed: bool,
    /// Streaming handlers, running or backlogged.
    pub(super) streams: usize,
}

/// Which handler slots were woken, and replies from spawned handlers.
pub(super) struct WakeQueue {
    pub(super) state: Mutex<WakeState>,
}

pub(super) struct WakeState {
    pub(super) ready: Vec<u32>,
    pub(super) done: Vec<RemoteReply>,
    pub(super) driver: Option<Waker>,
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

    pub(super) fn push_done(&self, reply: RemoteReply) {
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

impl HandlerTable {
    pub(super) fn new(wake: Arc<WakeQueue>) -> Self {
        HandlerTable {
            slots: Vec::new(),
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
            waiting_for_room: Vec::new(),
            write_mark: usize::MAX,
            caller_closed: false,
            streams: 0,
        }
    }

    /// The caller closed its write half (R8): request streams end with
    /// `ConnectionLost` for their handlers, and streaming handlers are
    /// polled again — one that needs credit now is abandoned (error
    /// `StreamAbandoned`) instead of waiting for ever.
    pub(super) fn caller_closed(&mut self) {
        self.caller_closed = true;
        for slot in &self.slots {
            if !matches!(slot.state, SlotState::Local(_)) {
                continue;
            }
            end_incoming(slot.incoming.clone(), Err(CallError::ConnectionLost));
            if slot.streaming {
                slot.waker.wake_by_ref();
            }
        }
    }

    /// Running handlers and backlogged requests.
    pub(super) fn live(&self) -> usize {
        self.running + self.queued
    }

    pub(super) fn set_driver(&self, waker: &Waker) {
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

    pub(super) fn has_ready(&self) -> bool {
        self.wake
            .state
            .with(|state| !state.ready.is_empty() || !state.done.is_empty())
    }

    /// The slot the next `insert` uses, and its generation.
    fn next_slot(&self) -> (u32, u32) {
        match self.free.last() {
            Some(&index) => (index, self.slots[index as usize].generation),
            None => (self.slots.len() as u32, 0),
        }
    }

    /// Takes a free slot for call `id` and returns its index; the caller
    /// then sets its work. A `queued` slot joins the end of the backlog,
    /// counting `cost` bytes; any other counts as running.
    pub(super) fn insert(
        &mut self,
        id: u32,
        deadline: Option<Duration>,
        queued: bool,
        cost: usize,
        index_now: bool,
    ) -> u32 {
        let (index, _) = self.next_slot();
        if index as usize == self.slots.len() {
            let wake = Arc::new(SlotWake {
                index,
                queued: AtomicBool::new(false),
                queue: self.wake.clone(),
            });
            let waker = Waker::from(wake.clone());
            self.slots.push(Slot {
                id,
                generation: 0,
                state: SlotState::Empty,
                cost: 0,
                indexed: false,
                prev: NONE,
                next: NONE,
                waker,
                wake,
                credit: 0,
                incoming: None,
                quiet: false,
                streaming: false,
                context: None,
            });
        } else {
            self.free.pop();
        }
        self.slots[index as usize].id = id;
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
    pub(super) fn index(&mut self, index: u32) {
        if let Some(slot) = self.slots.get_mut(index as usize) {
            if !slot.indexed {
                slot.indexed = true;
                self.ids.insert(slot.id, index);
            }
        }
    }

    /// Appends slot `index` to the backlog.
    fn link(&mut self, index: u32, cost: usize) {
        let tail = self.tail;
        let slot = &mut self.slots[index as usize];
        slot.cost = cost;
        slot.prev = tail;
        slot.next = NONE;
        match self.slots.get_mut(tail as usize) {
            Some(last) => last.next = index,
            None => self.head = index,
        }
        self.tail = index;
        self.queued += 1;
        self.queued_bytes = self.queued_bytes.saturating_add(cost);
    }

    /// Takes slot `index` out of the backlog.
    fn unlink(&mut self, index: u32) {
        let slot = &self.slots[index as usize];
        let (prev, next, cost) = (slot.prev, slot.next, slot.cost);
        match self.slots.get_mut(prev as usize) {
            Some(before) => before.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(next as usize) {
            Some(after) => after.prev = prev,
            None => self.tail = prev,
        }
        self.queued -= 1;
        self.queued_bytes = self.queued_bytes.saturating_sub(cost);
    }

    /// Moves the oldest backlogged request to the running handlers, in its
    /// own slot (its id and deadline stay); returns the slot and the
    /// handler, which the caller starts at once.
    pub(super) fn promote(&mut self) -> Option<(u32, Pin<Box<dyn Respond + Send>>)> {
        let index = self.head;
        let slot = self.slots.get_mut(index as usize)?;
        let SlotState::Queued(handler) = core::mem::replace(&mut slot.state, SlotState::Empty)
        else {
            return None;
        };
        self.unlink(index);
        self.running += 1;
        Some((index, handler))
    }

    /// Frees slot `index`, dropping its handler. `early` says why the call
    /// ended before its handler did (`None`: the handler finished): its
    /// context is signalled with it, and a stream it was receiving ends
    /// with it (for a consumer moved out of the handler).
    fn remove(&mut self, index: u32, early: Option<CallError>) {
        let Some(slot) = self.slots.get(index as usize) else {
            return;
        };
        let id = slot.id;
        match &slot.state {
            SlotState::Empty => return,
            SlotState::Queued(_) => self.unlink(index),
            SlotState::Local(_) => self.running -= 1,
            SlotState::Remote(abort) => {
                abort.abort();
                self.running -= 1;
            }
        }
        let slot = &mut self.slots[index as usize];
        if core::mem::take(&mut slot.indexed) {
            self.ids.remove(id, index);
        }
        self.deadlines.remove(index);
        let slot = &mut self.slots[index as usize];
        if let (Some(why), SlotState::Local(handler) | SlotState::Queued(handler)) =
            (early, &mut slot.state)
        {
            handler.as_mut().end_early(why);
        }
        slot.generation = slot.generation.wrapping_add(1);
        slot.credit = 0;
        slot.quiet = false;
        if core::mem::take(&mut slot.streaming) {
            self.streams = self.streams.saturating_sub(1);
        }
        let incoming = slot.incoming.take();
        let context = slot.context.take();
        // Drops the handler (user code; no lock is held).
        slot.state = SlotState::Empty;
        self.free.push(index);
        end_incoming(incoming, Err(early.unwrap_or(CallError::Closed)));
        if let (Some(context), Some(reason)) = (context, early) {
            context.cancel(reason);
        }
    }

    /// The caller dropped call `id`: its handler or backlogged request goes
    /// without a reply.
    pub(super) fn cancel(&mut self, id: u32) {
        if let Some(index) = self.ids.get(id) {
            self.remove(index, Some(CallError::Cancelled));
        }
    }

    /// The running call `id`, if it is indexed.
    fn slot_of(&mut self, id: u32) -> Option<&mut Slot> {
        let index = self.ids.get(id)?;
        self.slots.get_mut(index as usize)
    }

    /// An item of call `id`'s request stream arrived (R10: beyond the
    /// credit granted it is a protocol violation; for a call that is not
    /// receiving, it is ignored).
    pub(super) fn deliver_item(&mut self, id: u32, body: &[u8]) -> Result<(), FrameError> {
        let Some(incoming) = self.slot_of(id).and_then(|s| s.incoming.clone()) else {
            return Ok(());
        };
        let waker = incoming.with(|incoming| incoming.deliver(body))?;
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The caller of call `id` sent its last item.
    pub(super) fn end_items(&mut self, id: u32) {
        let incoming = self.slot_of(id).and_then(|s| s.incoming.clone());
        end_incoming(incoming, Ok(()));
    }

    /// The caller granted call `id` more credit for its items.
    pub(super) fn add_credit(&mut self, id: u32, grant: u32) {
        if let Some(slot) = self.slot_of(id) {
            let was_blocked = slot.credit == 0;
            slot.credit = slot.credit.saturating_add(grant);
            if was_blocked && grant > 0 && matches!(slot.state, SlotState::Local(_)) {
                slot.waker.wake_by_ref();
            }
        }
    }

    /// Handlers that waited for the unsent bytes to go under the mark run
    /// again. They measure their room by the same unsent bytes (not by the
    /// buffer's length, which may include bytes already written): a
    /// handler woken here that still found no room would wait again at
    /// once, and the driver would spin while its peer does not read.
    pub(super) fn wake_waiting_for_room(&mut self, pending: usize) {
        if pending > self.write_mark || self.waiting_for_room.is_empty() {
            return;
        }
        for index in self.waiting_for_room.drain(..) {
            if let Some(slot) = self.slots.get(index as usize) {
                slot.waker.wake_by_ref();
            }
        }
    }

    /// Opens the request stream of the handler just launched in `index`:
    /// the caller gets its first credit.
    pub(super) fn open_incoming(&mut self, index: u32, window: u32, out: &mut Vec<u8>) {
        let Some(slot) = self.slots.get(index as usize) else {
            return;
        };
        let Some(incoming) = &slot.incoming else {
            return;
        };
        let grant = incoming.with(|incoming| incoming.open(window, &slot.waker));
        if self.caller_closed {
            // Started after the caller closed: no item can come.
            end_incoming(Some(incoming.clone()), Err(CallError::ConnectionLost));
            return;
        }
        write_credit(out, slot.id, grant);
    }

    /// Answers backlogged requests (and with `all`, running handlers too)
    /// with `error` and drops them.
    pub(super) fn answer(
        &mut self,
        out: &mut Vec<u8>,
        error: RemoteError,
        max_frame: usize,
        only_queued: bool,
    ) {
        while self.head != NONE {
            let index = self.head;
            write_error(out, self.slots[index as usize].id, error, max_frame);
            self.remove(index, Some(CallError::Remote(error)));
        }
        if only_queued {
            return;
        }
        for index in 0..self.slots.len() {
            if !matches!(self.slots[index].state, SlotState::Empty) {
                if !self.slots[index].quiet {
                    write_error(out, self.slots[index].id, error, max_frame);
                }
                self.remove(index as u32, Some(CallError::Remote(error)));
            }
        }
    }

    /// Polls woken handlers and collects spawned handlers' replies into
    /// `out`, whose first `sent` bytes were already written. Returns
    /// whether any handler finished.
    pub(super) fn run_ready(&mut self, out: &mut Vec<u8>, sent: usize, max_frame: usize) -> bool {
        let mut ready = core::mem::take(&mut self.scratch);
        let mut done = core::mem::take(&mut self.done_scratch);
        self.wake.state.with(|state| {
            core::mem::swap(&mut ready, &mut state.ready);
            core::mem::swap(&mut done, &mut state.done);
        });
        let mut finished = false;
        for &index in &ready {
            finished |= self.poll_one(index, out, sent, max_frame);
        }
        for reply in done.drain(..) {
            let slot = &self.slots[reply.index as usize];
            if slot.generation == reply.generation && matches!(slot.state, SlotState::Remote(_)) {
                if !slot.quiet {
                    out.extend_from_slice(&reply.frame);
                }
                self.remove(reply.index, None);
                finished = true;
            }
        }
        ready.clear();
        self.scratch = ready;
        self.done_scratch = done;
        finished
    }

    /// Polls the handler in `index`, appending to `out` (whose first `sent`
    /// bytes were already written: the rest is what counts against the
    /// mark); returns whether it finished.
    pub(super) fn poll_one(
        &mut self,
        index: u32,
        out: &mut Vec<u8>,
        sent: usize,
        max_frame: usize,
    ) -> bool {
        let write_mark = self.write_mark;
        let slot = &mut self.slots[index as usize];
        slot.wake.queued.store(false, Ordering::Release);
        let SlotState::Local(handler) = &mut slot.state else {
            return false;
        };
        let start = out.len();
        let mut reply = Reply {
            room: out.len().saturating_sub(sent) <= write_mark,
            out,
            id: slot.id,
            max_frame,
            credit: slot.credit,
            blocked: false,
        };
        let mut cx = Context::from_waker(&slot.waker);
        let poll = poll_guarded(handler.as_mut(), &mut cx, &mut reply);
        slot.credit = reply.credit;
        let blocked_on_room = reply.blocked && !reply.room;
        let abandoned = reply.blocked && reply.credit == 0 && self.caller_closed;
        if slot.quiet {
            // A notification is never answered.
            out.truncate(start);
        }
        if let Some(incoming) = &slot.incoming {
            let grant = incoming.with(Incoming::take_grant);
            if grant > 0 {
                write_credit(out, slot.id, grant);
            }
        }
        match poll {
            Poll::Pending if abandoned => {
                // It needs credit the caller can no longer send.
                let id = self.slots[index as usize].id;
                write_error(out, id, RemoteError::StreamAbandoned, max_frame);
                self.remove(index, Some(CallError::ConnectionLost));
                true
            }
            Poll::Pending => {
                if blocked_on_room {
                    self.waiting_for_room.push(index);
                }
                false
            }
            Poll::Ready(()) => {
                self.remove(index, None);
                true
            }
        }
    }

    /// Answers handlers and backlogged requests whose deadline passed and
    /// drops them. Returns the next deadline still pending.
    pub(super) fn expire(
        &mut self,
        now: Duration,
        out: &mut Vec<u8>,
        max_frame: usize,
    ) -> Option<Duration> {
        if self.deadlines.len() == 0 {
            return None;
        }
        while let Some(index) = self.deadlines.pop_due(now) {
            let id = self.slots[index as usize].id;
            write_error(out, id, RemoteError::DeadlineExceeded, max_frame);
            self.remove(index, Some(CallError::DeadlineExceeded));
        }
        self.deadlines.peek().map(|(at, _)| at)
    }

    /// Drops every handler and backlogged request (the connection is gone).
    pub(super) fn clear(&mut self) {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let SlotState::Remote(abort) = &slot.state {
                abort.abort();
            }
            if let SlotState::Local(handler) | SlotState::Queued(handler) = &mut slot.state {
                handler.as_mut().end_early(CallError::ConnectionLost);
            }
            if !matches!(slot.state, SlotState::Empty) {
                slot.generation = slot.generation.wrapping_add(1);
                slot.credit = 0;
                slot.quiet = false;
                slot.streaming = false;
                let incoming = slot.incoming.take();
                let context = slot.context.take();
                // Drops the handler (user code; no lock is held).
                slot.state = SlotState::Empty;
                self.free.push(index as u32);
                end_incoming(incoming, Err(CallError::ConnectionLost));
                if let Some(context) = context {
                    context.cancel(CallError::ConnectionLost);
                }
            }
        }
        self.waiting_for_room.clear();
        self.streams = 0;
        self.ids.clear();
        self.deadlines.clear();
        self.head = NONE;
        self.tail = NONE;
        self.running = 0;
        self.queued = 0;
        self.queued_bytes = 0;
    }
}

/// Ends a request stream, waking its consumer.
fn end_incoming(incoming: Option<IncomingRef>, end: Result<(), CallError>) {
    let waker = incoming.and_then(|incoming| incoming.with(|incoming| incoming.finish(end)));
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Grants the caller of call `id` more items (an 11-byte credit frame).
fn write_credit(out: &mut Vec<u8>, id: u32, grant: u32) {
    let header = Header::Credit {
        id,
        from_callee: true,
        grant,
    };
    let _ = encode_frame(out, &header, &(), usize::MAX);
}
