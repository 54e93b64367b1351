//! What a client's handles and its driver share, under one lock: the slot
//! table of calls, the queue of callers waiting for a slot, and the frames
//! waiting for the driver.
//!
//! Nothing in here runs user code: methods return the wakers to wake, and
//! callers wake them after the lock is released.
//!
//! Where a call's request is, by `Slot::epoch` against `State::out_epoch`:
//! - `Parked`: encoded in the slot's own buffer, waiting for room in `out`;
//! - `epoch == out_epoch`: in `out`, not yet taken by the driver;
//! - `epoch + 1 == out_epoch` and the writer not known to be empty: perhaps
//!   still unwritten in the driver's writer;
//! - older: handed to the transport.
//!
//! A call that ends before its request left the process (dropped, expired,
//! or failed by an outage) takes the request back: it is never sent, so no
//! server ever runs it.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::task::Waker;
use core::time::Duration;

use super::batching::Batching;
use super::outbox;
use crate::deadline::DeadlineQueue;
use crate::error::{CallError, FrameError};
use crate::framing::{encode_frame, FrameWriter};
use crate::id_map::IdMap;
use crate::wire::Header;

pub(crate) use super::SLOT_KEEP;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    Free,
    /// Held by a caller that is encoding its request (lock released).
    Encoding,
    /// Encoded in `Slot::buf`, waiting for room in `out`.
    Parked,
    /// Request queued or sent; waiting for the reply.
    Waiting,
    /// Dropped while its request may sit unwritten in the driver's writer;
    /// the driver takes it back (or cancels it) and frees the slot.
    Retracting,
    /// Resolved; the caller has not taken the result yet.
    Done(Result<(), CallError>),
}

pub(crate) struct Slot {
    pub(crate) id: u32,
    pub(crate) phase: Phase,
    pub(crate) waker: Option<Waker>,
    /// The encoded request while parked, then the response body; its
    /// capacity is reused by the slot's next calls (up to [`SLOT_KEEP`]).
    pub(crate) buf: Vec<u8>,
    /// The call's own deadline.
    pub(crate) deadline: Option<Duration>,
    /// The caller's clock when it queued the request: the time left on
    /// the wire is counted from no earlier than this, so a driver whose
    /// clock reading is older (read before the caller's, on another
    /// thread) never sends more time than the caller asked.
    queued_at: Duration,
    /// The deadline in force is the outage wait, not the call's own.
    outage_bound: bool,
    epoch: u64,
    /// The stream parts of a streaming call (idle for a unary one).
    pub(crate) stream: SlotStream,
}

/// A streaming call's items and credit, on the caller's side.
///
/// Memory bound: `recv_credit` (granted, not yet received) plus the items
/// in `inbox` plus those the consumer holds never exceed the window the
/// consumer grants, because it grants only what it has consumed.
#[derive(Default)]
pub(crate) struct SlotStream {
    /// The call has a response stream.
    pub(crate) receives: bool,
    /// The call has a request stream.
    pub(crate) sends: bool,
    /// Items received, not yet taken: each a u32 LE length, then the body.
    pub(crate) inbox: Vec<u8>,
    /// Items the callee may still send (granted, not yet received).
    pub(crate) recv_credit: u32,
    /// Items this caller may still send (granted by the callee, not taken
    /// by the caller's pump yet).
    pub(crate) send_credit: u32,
}

impl SlotStream {
    fn reset(&mut self) {
        self.receives = false;
        self.sends = false;
        self.recv_credit = 0;
        self.send_credit = 0;
        if self.inbox.capacity() > SLOT_KEEP {
            self.inbox = Vec::new();
        }
        self.inbox.clear();
    }
}

/// What became of a streaming call's frames.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// In `out`: wake the driver.
    Yes,
    /// The call's request is still parked: keep them for later.
    NotYet,
    /// The call or the connection is over: drop them.
    Gone,
}

/// What routing a stream frame found.
pub(crate) enum Routed {
    /// Nothing to wake.
    Quiet,
    /// The call's task, to wake.
    Wake(Waker),
}

/// While a reconnecting client is disconnected and lets calls wait.
#[derive(Clone, Copy)]
pub(crate) struct OutageWait {
    pub(crate) max_wait: Duration,
    pub(crate) error: CallError,
}

pub(crate) struct State {
    max_in_flight: usize,
    pub(crate) slots: Vec<Slot>,
    free: Vec<u32>,
    ids: IdMap,
    /// The `(id, slot)` the last item frame went to: items come in runs of
    /// one call (a server's turn), so the next one skips the id lookup.
    /// Checked against the slot before use, never trusted.
    last_item: (u32, u32),
    next_id: u32,
    /// The id counter went round once: new ids must skip those in flight.
    ids_wrapped: bool,
    pub(crate) in_flight: usize,
    /// Deadlines of calls in the table.
    deadlines: DeadlineQueue,
    /// Frames waiting for the driver, in order.
    pub(crate) out: Vec<u8>,
    out_epoch: u64,
    /// The driver's writer had written everything at its last look.
    writer_empty: bool,
    /// Some request in `out` carries a timeout to refresh when written.
    timed_in_out: bool,
    /// Calls encoded while `out` was over its mark: `(slot, id)`, FIFO.
    parked: VecDeque<(u32, u32)>,
    /// Slots in `Phase::Retracting`.
    retracting: Vec<u32>,
    pub(crate) driver: Option<Waker>,
    /// Whether the driver lets answered callers queue before it writes.
    pub(crate) batching: Batching,
    /// Notifications waiting for room in `out`.
    room_waiters: Vec<Waker>,
    pub(crate) closed: Option<CallError>,
    pub(crate) outage: Option<OutageWait>,
    waiters: Waiters,
}

/// Callers waiting for a slot, first come first served. Entry `i` has
/// ticket `head + i`; `None` marks one that gave up.
#[derive(Default)]
struct Waiters {
    queue: VecDeque<Option<Waiter>>,
    head: u64,
    /// Slots promised to woken waiters that have not taken them yet.
    granted: usize,
    /// The earliest deadline of a waiting caller.
    earliest: Option<Duration>,
}

struct Waiter {
    waker: Waker,
    deadline: Option<Duration>,
}

/// An encoded request handed to [`State::submit`].
pub(crate) enum Frame<'a> {
    /// Encoded on the caller's stack.
    Inline(&'a [u8]),
    /// Encoded in the slot's own buffer, which goes back to the slot.
    Owned(Vec<u8>),
}

/// What `State::acquire` decided.
pub(crate) enum Acquired {
    Slot { slot: u32, id: u32 },
    Queued(u64),
}

impl State {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        State {
            max_in_flight,
            slots: Vec::new(),
            free: Vec::new(),
            ids: IdMap::new(),
            last_item: (0, u32::MAX),
            next_id: 0,
            ids_wrapped: false,
            in_flight: 0,
            deadlines: DeadlineQueue::new(),
            out: Vec::new(),
            out_epoch: 1,
            writer_empty: true,
            timed_in_out: false,
            parked: VecDeque::new(),
            retracting: Vec::new(),
            driver: None,
            batching: Batching::default(),
            room_waiters: Vec::new(),
            closed: None,
            outage: None,
            waiters: Waiters::default(),
        }
    }

    fn available(&self) -> usize {
        self.free.len() + self.max_in_flight.saturating_sub(self.slots.len())
    }

    /// Takes a slot if this caller may have one, else queues it (or renews
    /// its place). `ticket` is the caller's place in the queue, if it has
    /// one. A queued caller's waker is moved out of `waker`; a renewed one
    /// swaps with the stale waker, which the caller drops outside the lock.
    pub(crate) fn acquire(
        &mut self,
        ticket: Option<u64>,
        waker: &mut Option<Waker>,
        deadline: Option<Duration>,
    ) -> Acquired {
        match ticket {
            Some(t) if t < self.waiters.head => {
                // Our turn was granted when a slot was released.
                self.waiters.granted = self.waiters.granted.saturating_sub(1);
                return self.take_slot();
            }
            Some(t) => {
                if let (Some(Some(entry)), Some(new)) = (self.waiter_mut(t), waker.as_mut()) {
                    if !entry.waker.will_wake(new) {
                        core::mem::swap(&mut entry.waker, new);
                    }
                }
                return Acquired::Queued(t);
            }
            None => {}
        }
        if self.available() > self.waiters.granted {
            return self.take_slot();
        }
        let t = self.waiters.head + self.waiters.queue.len() as u64;
        if let Some(waker) = waker.take() {
            self.waiters
                .queue
                .push_back(Some(Waiter { waker, deadline }));
        }
        if let Some(at) = deadline {
            self.waiters.earliest = Some(self.waiters.earliest.map_or(at, |e| e.min(at)));
        }
        Acquired::Queued(t)
    }

    fn waiter_mut(&mut self, ticket: u64) -> Option<&mut Option<Waiter>> {
        let index = usize::try_from(ticket.checked_sub(self.waiters.head)?).ok()?;
        self.waiters.queue.get_mut(index)
    }

    fn take_slot(&mut self) -> Acquired {
        self.in_flight += 1;
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot {
                    id: 0,
                    phase: Phase::Free,
                    waker: None,
                    buf: Vec::new(),
                    deadline: None,
                    queued_at: Duration::ZERO,
                    outage_bound: false,
                    epoch: 0,
                    stream: SlotStream::default(),
                });
                (self.slots.len() - 1) as u32
            }
        };
        let id = self.fresh_id();
        self.ids.insert(id, slot);
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.id = id;
            s.phase = Phase::Encoding;
        }
        Acquired::Slot { slot, id }
    }

    /// The next request id: a counter that skips ids still in flight, so an
    /// id comes back only after 2^32 further calls.
    fn fresh_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            self.ids_wrapped |= self.next_id == 0;
            if !self.ids_wrapped || self.ids.get(id).is_none() {
                return id;
            }
        }
    }

    pub(crate) fn slot_mut(&mut self, slot: u32) -> Option<&mut Slot> {
        self.slots.get_mut(slot as usize)
    }

    /// Queues the request encoded in `frame` for slot `slot` (in `Encoding`)
    /// and makes the call wait for its reply. The buffer goes back to the
    /// slot (holding the request while it is parked).
    pub(crate) fn submit(
        &mut self,
        slot: u32,
        frame: Frame<'_>,
        waker: Waker,
        deadline: Option<Duration>,
        now: Duration,
        max_queued: usize,
    ) {
        let outage = self.outage;
        let out_epoch = self.out_epoch;
        let room = self.out.len() < max_queued && self.parked.is_empty();
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let id = s.id;
        s.waker = Some(waker);
        s.deadline = deadline;
        s.queued_at = now;
        s.outage_bound = false;
        let mut in_force = deadline;
        if let Some(outage) = outage {
            let until = now.saturating_add(outage.max_wait);
            if deadline.is_none_or(|own| until < own) {
                in_force = Some(until);
                s.outage_bound = true;
            }
        }
        if room {
            s.phase = Phase::Waiting;
            s.epoch = out_epoch;
            self.timed_in_out |= deadline.is_some();
            self.batching.requested();
            match frame {
                Frame::Inline(bytes) => self.out.extend_from_slice(bytes),
                Frame::Owned(mut buf) => {
                    self.out.extend_from_slice(&buf);
                    buf.clear();
                    s.buf = buf;
                }
            }
        } else {
            s.phase = Phase::Parked;
            self.parked.push_back((slot, id));
            match frame {
                Frame::Inline(bytes) => {
                    s.buf.clear();
                    s.buf.extend_from_slice(bytes);
                }
                Frame::Owned(buf) => s.buf = buf,
            }
        }
        if let Some(at) = in_force {
            self.deadlines.set(slot, at);
        }
    }

    /// Frees a slot the caller held (its call is over). Returns the waiter
    /// to wake, if one gets the slot.
    pub(crate) fn release(&mut self, slot: u32) -> Option<Waker> {
        let s = self.slots.get_mut(slot as usize)?;
        if s.phase == Phase::Free {
            return None;
        }
        s.phase = Phase::Free;
        s.waker = None;
        s.deadline = None;
        s.outage_bound = false;
        if s.buf.capacity() > SLOT_KEEP {
            s.buf = Vec::new();
        }
        s.buf.clear();
        s.stream.reset();
        let id = s.id;
        self.ids.remove(id, slot);
        self.deadlines.remove(slot);
        self.free.push(slot);
        self.in_flight = self.in_flight.saturating_sub(1);
        self.grant_waiter()
    }

    /// Wakes the first waiter if a slot is free for it.
    fn grant_waiter(&mut self) -> Option<Waker> {
        while self.available() > self.waiters.granted {
            let entry = self.waiters.queue.pop_front()?;
            self.waiters.head += 1;
            if let Some(waiter) = entry {
                self.waiters.granted += 1;
                return Some(waiter.waker);
            }
        }
        None
    }

    /// A queued caller gave up. Returns a waiter to wake in its place.
    pub(crate) fn abandon(&mut self, ticket: u64) -> Option<Waker> {
        if ticket < self.waiters.head {
            self.waiters.granted = self.waiters.granted.saturating_sub(1);
            return self.grant_waiter();
        }
        if let Some(entry) = self.waiter_mut(ticket) {
            *entry = None;
        }
        while self.waiters.queue.front().is_some_and(Option::is_none) {
            self.waiters.queue.pop_front();
            self.waiters.head += 1;
        }
        None
    }

    /// A caller drops its call while it holds slot `slot`. Takes back a
    /// request that has not left the process, or queues a cancel for one
    /// that has. Returns a waiter to wake, whether the driver must run, and
    /// the call's own waker (for the caller to drop outside the lock: it
    /// may hold the last reference to a task).
    pub(crate) fn drop_call(&mut self, slot: u32) -> (Option<Waker>, bool, Option<Waker>) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return (None, false, None);
        };
        let own = s.waker.take();
        let (next, run_driver) = self.settle_dropped(slot);
        (next, run_driver, own)
    }

    fn settle_dropped(&mut self, slot: u32) -> (Option<Waker>, bool) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return (None, false);
        };
        match s.phase {
            Phase::Waiting => {
                let (id, epoch) = (s.id, s.epoch);
                if epoch == self.out_epoch && outbox::remove_request(&mut self.out, 0, id) {
                    return (self.release(slot), false);
                }
                if epoch.saturating_add(1) == self.out_epoch && !self.writer_empty {
                    s.phase = Phase::Retracting;
                    self.deadlines.remove(slot);
                    self.retracting.push(slot);
                    return (None, true);
                }
                let woke = self.queue_cancel(id);
                (self.release(slot), woke)
            }
            // A parked request is skipped when its turn comes (its id no
            // longer matches a parked slot).
            _ => (self.release(slot), false),
        }
    }

    /// Queues a cancel frame for a request that was sent. Returns whether
    /// one was queued (the driver must run).
    fn queue_cancel(&mut self, id: u32) -> bool {
        if self.closed.is_some() || self.outage.is_some() {
            // No live connection: the server that saw it is gone.
            return false;
        }
        // A cancel frame is 11 bytes: no limit applies to it.
        encode_frame(&mut self.out, &Header::Cancel { id }, &(), 64).is_ok()
    }

    /// Resolves the call in `slot` with `result`; returns its waker.
    fn resolve(&mut self, slot: u32, result: Result<(), CallError>) -> Option<Waker> {
        let s = self.slots.get_mut(slot as usize)?;
        s.phase = Phase::Done(result);
        self.deadlines.remove(slot);
        self.slots.get_mut(slot as usize)?.waker.take()
    }

    /// Routes a reply to its call. Returns the caller's waker.
    pub(crate) fn complete(
        &mut self,
        id: u32,
        result: Result<(), CallError>,
        body: &[u8],
    ) -> Option<Waker> {
        let slot = self.ids.get(id)?;
        let s = self.slots.get_mut(slot as usize)?;
        if s.phase != Phase::Waiting || s.id != id {
            return None; // dropped, expired or taken back
        }
        s.buf.clear();
        s.buf.extend_from_slice(body);
        self.batching.answered();
        self.resolve(slot, result)
    }

    /// Makes slot `slot` (held by its caller, before `submit`) a streaming
    /// call: it receives items (having granted `grant`) and/or sends them.
    pub(crate) fn open_stream(&mut self, slot: u32, grant: Option<u32>, sends: bool) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.stream.receives = grant.is_some();
            s.stream.recv_credit = grant.unwrap_or(0);
            s.stream.sends = sends;
        }
    }

    /// The running call `id`, if it is one waiting for its reply.
    fn running(&mut self, id: u32) -> Option<&mut Slot> {
        let slot = self.ids.get(id)?;
        let s = self.slots.get_mut(slot as usize)?;
        (s.phase == Phase::Waiting && s.id == id).then_some(s)
    }

    /// Routes an item of call `id`'s response stream to its inbox (R10: an
    /// item beyond the credit granted is a protocol violation). Items of
    /// calls that are over, or that have no response stream, are ignored.
    pub(crate) fn deliver_item(&mut self, id: u32, body: &[u8]) -> Result<Routed, FrameError> {
        let (last_id, last_slot) = self.last_item;
        let cached = last_id == id
            && self
                .slots
                .get(last_slot as usize)
                .is_some_and(|s| s.phase == Phase::Waiting && s.id == id);
        let slot = if cached {
            last_slot
        } else {
            let Some(slot) = self.ids.get(id) else {
                return Ok(Routed::Quiet);
            };
            self.last_item = (id, slot);
            slot
        };
        let Some(s) = self
            .slots
            .get_mut(slot as usize)
            .filter(|s| s.phase == Phase::Waiting && s.id == id && s.stream.receives)
        else {
            return Ok(Routed::Quiet);
        };
        let stream = &mut s.stream;
        stream.recv_credit = stream
            .recv_credit
            .checked_sub(1)
            .ok_or(FrameError::CreditExceeded)?;
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        stream.inbox.extend_from_slice(&len.to_le_bytes());
        stream.inbox.extend_from_slice(body);
        Ok(s.waker.take().map_or(Routed::Quiet, Routed::Wake))
    }

    /// Adds the callee's `grant` to call `id`'s credit for its own items.
    pub(crate) fn add_send_credit(&mut self, id: u32, grant: u32) -> Routed {
        let Some(s) = self.running(id).filter(|s| s.stream.sends) else {
            return Routed::Quiet;
        };
        s.stream.send_credit = s.stream.send_credit.saturating_add(grant);
        if grant == 0 {
            return Routed::Quiet;
        }
        s.waker.take().map_or(Routed::Quiet, Routed::Wake)
    }

    /// Queues frames a streaming call sends after its request (items,
    /// end) if the call runs on a live connection and its request is
    /// queued; the driver must then be woken. While the request is still
    /// parked they must wait (they may not overtake it): the caller keeps
    /// them and is woken when the request is unparked.
    pub(crate) fn queue_stream_frames(&mut self, slot: u32, id: u32, frames: &[u8]) -> Queued {
        if self.closed.is_some() || self.outage.is_some() {
            return Queued::Gone;
        }
        match self.slots.get(slot as usize) {
            Some(s) if s.id == id && s.phase == Phase::Waiting => {
                self.out.extend_from_slice(frames);
                Queued::Yes
            }
            Some(s) if s.id == id && s.phase == Phase::Parked => Queued::NotYet,
            _ => Queued::Gone,
        }
    }

    /// Grants the callee `grant` more items of call `id`'s response stream
    /// and queues the credit frame. Returns whether it was queued.
    pub(crate) fn grant(&mut self, slot: u32, id: u32, grant: u32) -> bool {
        if self.closed.is_some() || self.outage.is_some() {
            return false;
        }
        let Some(s) = self
            .slots
            .get_mut(slot as usize)
            .filter(|s| s.phase == Phase::Waiting && s.id == id)
        else {
            return false;
        };
        s.stream.recv_credit = s.stream.recv_credit.saturating_add(grant);
        let header = Header::Credit {
            id,
            from_callee: false,
            grant,
        };
        encode_frame(&mut self.out, &header, &(), 64).is_ok()
    }

    /// Queues a notification frame if `out` has room (or the client is
    /// gone: then `Err`); else stores `waker` for when it has. Returns
    /// `Ok(true)` when queued, `Ok(false)` when waiting.
    pub(crate) fn queue_notification(
        &mut self,
        frame: &[u8],
        waker: &mut Option<Waker>,
        max_queued: usize,
    ) -> Result<bool, CallError> {
        if let Some(error) = self.closed {
            return Err(error);
        }
        if let Some(outage) = self.outage {
            return Err(outage.error);
        }
        if self.out.len() < max_queued {
            self.out.extend_from_slice(frame);
            return Ok(true);
        }
        if let Some(waker) = waker.take() {
            self.room_waiters.push(waker);
        }
        Ok(false)
    }

    /// Answers a request from the peer: a plain client serves nothing
    /// (R4). A peer that floods requests without reading the answers gets
    /// no more of them once `max_queued` bytes wait. Returns whether a
    /// frame was queued.
    pub(crate) fn refuse_request(&mut self, id: u32, max_queued: usize) -> bool {
        if self.closed.is_some() || self.out.len() >= max_queued {
            return false;
        }
        let header = Header::Error {
            id,
            error: crate::error::RemoteError::UnknownMethod,
        };
        encode_frame(&mut self.out, &header, &(), 64).is_ok()
    }

    /// Fails calls whose deadline passed, taking back requests that were
    /// not sent (from `out`, or from `writer` if given) and cancelling the
    /// others. Wakers go to `wake`. Returns the next deadline to sleep
    /// until, if any.
    pub(crate) fn expire(
        &mut self,
        now: Duration,
        mut writer: Option<&mut FrameWriter>,
        wake: &mut Vec<Waker>,
    ) -> (Option<Duration>, bool) {
        let mut run_driver = false;
        while let Some(slot) = self.deadlines.pop_due(now) {
            let Some(&Slot {
                phase,
                outage_bound,
                epoch,
                ..
            }) = self.slots.get(slot as usize)
            else {
                continue;
            };
            let unsent = phase == Phase::Parked || epoch == self.out_epoch;
            let error = match self.outage {
                // Held back by an outage: it fails as never sent, whichever
                // bound ran out first.
                Some(o) if outage_bound || unsent => o.error.not_sent(),
                _ => CallError::DeadlineExceeded,
            };
            if phase == Phase::Waiting {
                run_driver |= self.take_back_or_cancel(slot, writer.as_deref_mut());
            }
            if matches!(phase, Phase::Waiting | Phase::Parked) {
                wake.extend(self.resolve(slot, Err(error)));
            }
        }
        self.expire_waiters(now, wake);
        let next = [self.deadlines.peek().map(|d| d.0), self.waiters.earliest];
        (next.into_iter().flatten().min(), run_driver)
    }

    /// Takes back the unsent request of `slot` or queues a cancel for it.
    /// Returns whether a cancel was queued.
    fn take_back_or_cancel(&mut self, slot: u32, writer: Option<&mut FrameWriter>) -> bool {
        let Some(s) = self.slots.get(slot as usize) else {
            return false;
        };
        let (id, epoch) = (s.id, s.epoch);
        if epoch == self.out_epoch && outbox::remove_request(&mut self.out, 0, id) {
            return false;
        }
        if epoch.saturating_add(1) == self.out_epoch {
            if let Some(writer) = writer {
                if take_back_from_writer(writer, id) {
                    return false;
                }
            }
        }
        self.queue_cancel(id)
    }

    /// Wakes queued callers whose deadline passed (each fails itself when
    /// polled) and recomputes the earliest remaining one.
    fn expire_waiters(&mut self, now: Duration, wake: &mut Vec<Waker>) {
        if self.waiters.earliest.is_none_or(|e| e > now) {
            return;
        }
        let mut earliest = None::<Duration>;
        for waiter in self.waiters.queue.iter().flatten() {
            match waiter.deadline {
                Some(at) if at <= now => wake.push(waiter.waker.clone()),
                Some(at) => earliest = Some(earliest.map_or(at, |e| e.min(at))),
                None => {}
            }
        }
        self.waiters.earliest = earliest;
    }

    /// Resolves the calls dropped while their request sat in the driver's
    /// writer: each is taken back if still unwritten, else cancelled.
    /// Returns the waiters to wake.
    pub(crate) fn settle_retracting(&mut self, writer: &mut FrameWriter, wake: &mut Vec<Waker>) {
        let retracting = core::mem::take(&mut self.retracting);
        for &slot in &retracting {
            let Some(s) = self.slots.get(slot as usize) else {
                continue;
            };
            if s.phase != Phase::Retracting {
                continue;
            }
            let id = s.id;
            if !take_back_from_writer(writer, id) {
                self.queue_cancel(id);
            }
            wake.extend(self.release(slot));
        }
        self.retracting = retracting;
        self.retracting.clear();
    }

    /// Hands the queued frames to an empty writer, with each timeout
    /// rewritten to the time left now (a request whose time is up is taken
    /// back and fails). Parked requests then move into `out` while it has
    /// room. Returns whether anything was handed over: nothing while the
    /// driver is to yield first for answered callers (see [`Batching`]).
    pub(crate) fn take_out(
        &mut self,
        writer: &mut FrameWriter,
        now: Duration,
        max_queued: usize,
        wake: &mut Vec<Waker>,
    ) -> bool {
        self.writer_empty = writer.pending() == 0;
        if !self.writer_empty {
            return false;
        }
        self.unpark(max_queued, wake);
        if self.out.is_empty() || self.batching.wait_for_callers() {
            return false;
        }
        self.batching.took();
        if core::mem::take(&mut self.timed_in_out) {
            self.refresh_timeouts(now, wake);
        }
        if !writer.take_from(&mut self.out) {
            return false;
        }
        wake.append(&mut self.room_waiters);
        self.out_epoch += 1;
        self.writer_empty = false;
        self.unpark(max_queued, wake);
        true
    }

    fn refresh_timeouts(&mut self, now: Duration, wake: &mut Vec<Waker>) {
        let mut out = core::mem::take(&mut self.out);
        let mut expired = Vec::new();
        outbox::refresh_timeouts(
            &mut out,
            |id| {
                let slot = self.ids.get(id)?;
                let s = self.slots.get(slot as usize)?;
                let deadline = s.deadline?;
                let left = deadline
                    .checked_sub(now.max(s.queued_at))
                    .filter(|d| !d.is_zero())?;
                Some(crate::deadline::timeout_to_ms(left))
            },
            |id| expired.push(id),
        );
        self.out = out;
        for id in expired {
            if let Some(slot) = self.ids.get(id) {
                wake.extend(self.resolve(slot, Err(CallError::DeadlineExceeded)));
            }
        }
    }

    /// Moves parked requests into `out`, in order, while it has room.
    fn unpark(&mut self, max_queued: usize, wake: &mut Vec<Waker>) {
        while self.out.len() < max_queued {
            let Some((slot, id)) = self.parked.pop_front() else {
                return;
            };
            let out_epoch = self.out_epoch;
            let Some(s) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            if s.phase != Phase::Parked || s.id != id {
                continue; // dropped or expired while parked
            }
            self.out.extend_from_slice(&s.buf);
            s.buf.clear();
            s.phase = Phase::Waiting;
            s.epoch = out_epoch;
            self.timed_in_out |= s.deadline.is_some();
            if s.stream.sends {
                // Its items may follow the request now.
                wake.extend(s.waker.take());
            }
        }
    }

    /// Whether the driver has frames to write or calls to settle.
    pub(crate) fn has_driver_work(&self, writer_pending: usize) -> bool {
        let queued = !self.out.is_empty() || !self.parked.is_empty();
        !self.retracting.is_empty() || (writer_pending == 0 && queued)
    }

    /// The deadline the driver's sleep must wake for.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        let next = [self.deadlines.peek().map(|d| d.0), self.waiters.earliest];
        next.into_iter().flatten().min()
    }

    /// Fails every pending call and waiter; new calls fail with `error`.
    /// Wakers go to `wake`.
    pub(crate) fn close(&mut self, error: CallError, wake: &mut Vec<Waker>) {
        let error = match self.closed {
            // Already closed to new calls (a reconnecting client between
            // connections): no call in the table was sent.
            Some(unsent) => unsent,
            None => error,
        };
        self.closed = Some(error.not_sent());
        self.fail_unless(error, |_| false, wake);
        self.out.clear();
        self.parked.clear();
        self.wake_all_waiters(wake);
        wake.append(&mut self.room_waiters);
    }

    /// Fails every call in the table except those `keep` says survive;
    /// calls dropped while in the writer are freed. Calls whose request
    /// never left the process (parked, or still in `out`) fail with
    /// `error`'s not-sent form.
    fn fail_unless(
        &mut self,
        error: CallError,
        keep: impl Fn(&Slot) -> bool,
        wake: &mut Vec<Waker>,
    ) {
        for slot in 0..self.slots.len() as u32 {
            let Some(s) = self.slots.get(slot as usize) else {
                continue;
            };
            let (phase, kept) = (s.phase, keep(s));
            let unsent = phase == Phase::Parked || s.epoch == self.out_epoch;
            match phase {
                Phase::Waiting | Phase::Parked if !kept => {
                    let error = if unsent { error.not_sent() } else { error };
                    wake.extend(self.resolve(slot, Err(error)));
                }
                Phase::Retracting => {
                    // Its request died with the connection's writer.
                    wake.extend(self.release(slot));
                }
                _ => {}
            }
        }
        self.retracting.clear();
    }

    /// Wakes every queued caller; each leaves the queue itself when it sees
    /// the client closed.
    fn wake_all_waiters(&mut self, wake: &mut Vec<Waker>) {
        wake.extend(self.waiters.queue.iter().flatten().map(|w| w.waker.clone()));
    }

    /// A reconnecting client lost its connection (or failed to make one).
    /// Calls whose request may have reached the server fail with `error`.
    /// With `outage`, calls whose request never left the process stay
    /// queued for the next connection until their own deadline or the
    /// outage wait, whichever comes first; without, they fail too and new
    /// calls fail fast.
    pub(crate) fn connection_lost(
        &mut self,
        error: CallError,
        outage: Option<Duration>,
        now: Duration,
        wake: &mut Vec<Waker>,
    ) {
        let out_epoch = self.out_epoch;
        match outage {
            None => {
                self.fail_unless(error, |_| false, wake);
                self.out.clear();
                self.parked.clear();
                self.closed = Some(error.not_sent());
                self.wake_all_waiters(wake);
            }
            Some(max_wait) => {
                // Requests in `out` or parked never left; the writer's batch
                // died with the connection, written or not.
                self.fail_unless(
                    error,
                    |s| s.phase == Phase::Parked || s.epoch == out_epoch,
                    wake,
                );
                let already_down = self.outage.is_some();
                self.outage = Some(OutageWait { max_wait, error });
                if already_down {
                    // A failed attempt in an outage: the calls keep the
                    // bounds they got when the outage began.
                    return;
                }
                let until = now.saturating_add(max_wait);
                for slot in 0..self.slots.len() as u32 {
                    let Some(s) = self.slots.get_mut(slot as usize) else {
                        continue;
                    };
                    let waiting = matches!(s.phase, Phase::Waiting | Phase::Parked);
                    if waiting && s.deadline.is_none_or(|own| until < own) {
                        s.outage_bound = true;
                        self.deadlines.set(slot, until);
                    }
                }
            }
        }
        // The dead connection's writer is gone with its frames.
        self.writer_empty = true;
    }

    /// A reconnecting client is connected again: calls waiting only because
    /// of the outage go back to their own deadlines.
    pub(crate) fn reconnected(&mut self) {
        self.closed = None;
        self.outage = None;
        self.writer_empty = true;
        for slot in 0..self.slots.len() as u32 {
            let Some(s) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            if !core::mem::take(&mut s.outage_bound) {
                continue;
            }
            match s.deadline {
                Some(own) => self.deadlines.set(slot, own),
                None => self.deadlines.remove(slot),
            }
        }
    }
}

/// Takes the unwritten request `id` out of `writer`'s buffer, if it has not
/// begun to be handed to the transport.
fn take_back_from_writer(writer: &mut FrameWriter, id: u32) -> bool {
    let pending = writer.pending();
    let buf = writer.buffer();
    let written = buf.len().saturating_sub(pending);
    let from = outbox::boundary_at_or_after(buf, written);
    outbox::remove_request(buf, from, id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use alloc::task::Wake;

    struct Nop;
    impl Wake for Nop {
        fn wake(self: Arc<Self>) {}
    }

    fn waker() -> Waker {
        Waker::from(Arc::new(Nop))
    }

    fn take(state: &mut State) -> (u32, u32) {
        match state.acquire(None, &mut Some(waker()), None) {
            Acquired::Slot { slot, id } => (slot, id),
            Acquired::Queued(_) => panic!("no slot"),
        }
    }

    /// A streaming call waiting for items, with `credit` granted.
    fn streaming(state: &mut State, credit: u32) -> (u32, u32) {
        let (slot, id) = take(state);
        state.open_stream(slot, Some(credit), false);
        state.submit(
            slot,
            Frame::Inline(&[]),
            waker(),
            None,
            Duration::ZERO,
            usize::MAX,
        );
        (slot, id)
    }

    fn inbox_len(state: &State, slot: u32) -> usize {
        state.slots[slot as usize].stream.inbox.len()
    }

    /// Item routing remembers the last call's slot, but checks it: items
    /// of two calls in turn each reach their own inbox, and an item of a
    /// call that is over never reaches the call that took its slot.
    #[test]
    fn the_remembered_item_slot_is_checked_before_use() {
        let mut state = State::new(4);
        let (a_slot, a) = streaming(&mut state, 8);
        let (b_slot, b) = streaming(&mut state, 8);
        for id in [a, a, b, a] {
            assert!(state.deliver_item(id, &[7]).is_ok());
        }
        // Each item: a 4-byte length and one byte.
        assert_eq!(inbox_len(&state, a_slot), 15);
        assert_eq!(inbox_len(&state, b_slot), 5);
        // `a` ends; `c` takes its slot while `a` is the remembered call.
        state.release(a_slot);
        let (c_slot, c) = streaming(&mut state, 1);
        assert_eq!(c_slot, a_slot);
        assert_ne!(c, a);
        assert!(matches!(state.deliver_item(a, &[7]), Ok(Routed::Quiet)));
        assert_eq!(inbox_len(&state, c_slot), 0, "a's item reached c");
        // c's one credit is intact: its own item is taken, the next is over.
        assert!(state.deliver_item(c, &[7]).is_ok());
        assert_eq!(inbox_len(&state, c_slot), 5);
        assert_eq!(
            state.deliver_item(c, &[7]).err(),
            Some(FrameError::CreditExceeded)
        );
    }

    /// Ids count up through the wrap at `u32::MAX` and, once wrapped, skip
    /// ids still in flight.
    #[test]
    fn ids_wrap_and_skip_ids_in_flight() {
        let mut state = State::new(8);
        state.next_id = u32::MAX - 1;
        let (_, a) = take(&mut state);
        let (held, b) = take(&mut state);
        assert_eq!((a, b), (u32::MAX - 1, u32::MAX));
        let (slot, c) = take(&mut state);
        assert_eq!(c, 0);
        state.release(slot);
        // Go round once more: `u32::MAX` is still in flight and is skipped.
        state.next_id = u32::MAX;
        let (_, d) = take(&mut state);
        assert_eq!(d, 0);
        state.release(held);
        state.next_id = u32::MAX;
        let (_, e) = take(&mut state);
        assert_eq!(e, u32::MAX);
    }

    /// A slot keeps at most `SLOT_KEEP` bytes of buffer once its call ends:
    /// below and at the bound the capacity is kept for reuse, above it is
    /// freed.
    #[test]
    fn released_slots_keep_at_most_slot_keep_bytes() {
        for (capacity, kept) in [
            (SLOT_KEEP - 1, true),
            (SLOT_KEEP, true),
            (SLOT_KEEP + 1, false),
            (1 << 20, false),
        ] {
            let mut state = State::new(1);
            let (slot, _) = take(&mut state);
            state.slot_mut(slot).unwrap().buf = Vec::with_capacity(capacity);
            state.release(slot);
            let left = state.slots[slot as usize].buf.capacity();
            assert_eq!(left >= capacity, kept, "capacity {capacity}: {left} left");
            assert!(left <= SLOT_KEEP);
        }
    }
}
