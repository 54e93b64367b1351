//! One connection's calls: what each received frame does (start, cancel),
//! launching handlers, the backlog, deadlines, the idle timeout and
//! shutdown.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::pin::Pin;
use core::task::Context;
use core::time::Duration;

use super::handlers::{HandlerTable, SlotState};
use super::remote::{remote_task, ReplyTo};
use super::service::{write_error, Respond};
use super::{Handler, Request, Service, Spawn, WhenFull};
use crate::deadline::Deadlines;
use crate::error::{FrameError, RemoteError};
use crate::framing::FrameWriter;
use crate::timer::Timer;
use crate::trace;
use crate::wire::{Header, MethodKey};

/// One connection's calls and unsent replies: everything but the transport
/// and the reader, so a frame borrowed from the reader can be handled while
/// the rest is mutated.
pub(super) struct Connection<S, Tm: Timer> {
    pub(super) service: S,
    pub(super) writer: FrameWriter,
    pub(super) deadlines: Deadlines<Tm>,
    pub(super) idle: Option<Idle>,
    pub(super) max_frame: usize,
    pub(super) max_concurrent: usize,
    pub(super) write_mark: usize,
    pub(super) when_full: WhenFull,
    pub(super) backlog: usize,
    /// The credit window each request stream is granted.
    pub(super) stream_credit: u32,
    /// Who is on the other end, if the transport knows.
    pub(super) peer: Option<alloc::sync::Arc<str>>,
    pub(super) spawner: Option<Arc<dyn Spawn>>,
    pub(super) handlers: HandlerTable,
    /// Shutdown was triggered: no new calls.
    pub(super) draining: bool,
    /// Shutdown was forced: no more reading, every call answered now.
    pub(super) forced: bool,
}

/// The idle timeout's clock.
pub(super) struct Idle {
    pub(super) timeout: Duration,
    /// When the connection was last seen busy.
    pub(super) since: Duration,
    /// A frame arrived since `since` was taken (a flag, so that the clock is
    /// read once per batch of frames, not per frame).
    pub(super) active: bool,
}

impl<S: Service, Tm: Timer> Connection<S, Tm> {
    /// Restarts the idle period if the connection was `busy` or a frame
    /// arrived since the last call.
    pub(super) fn touch(&mut self, busy: bool) {
        if let Some(idle) = &mut self.idle {
            if busy || idle.active {
                idle.active = false;
                idle.since = self.deadlines.now();
            }
        }
    }

    /// The server's one dispatch point: what each kind of frame does.
    /// An error is a protocol violation that closes the connection.
    pub(super) fn on_frame(
        &mut self,
        header: Header,
        body: &[u8],
        len: usize,
    ) -> Result<(), FrameError> {
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
                self.handlers.cancel(id);
                self.start_queued();
            }
            Header::Item {
                id,
                from_callee: false,
            } => self.handlers.deliver_item(id, body)?,
            Header::Credit {
                id,
                from_callee: false,
                grant,
            } => self.handlers.add_credit(id, grant),
            Header::End { id } => self.handlers.end_items(id),
            Header::Notify { method, .. } => self.notify(method, body, len),
            // R4: frames for the caller role (replies, the callee's items
            // and credit) are ignored by a server, which makes no calls.
            Header::Response { .. }
            | Header::Error { .. }
            | Header::Item {
                from_callee: true, ..
            }
            | Header::Credit {
                from_callee: true, ..
            } => {}
            // R6: reserved kinds are skipped whole.
            Header::Reserved { .. } => {}
        }
        Ok(())
    }

    /// A one-way call: run like a request, but never answered — an
    /// unknown method, bad arguments or a shutdown drop it silently.
    fn notify(&mut self, method: MethodKey, body: &[u8], len: usize) {
        if self.draining {
            return;
        }
        let full = self.handlers.running >= self.max_concurrent || self.handlers.queued > 0;
        if full && (self.when_full == WhenFull::Reject || self.backlog_overflows(len)) {
            return;
        }
        let mut request = Request::new(method, body, 0, None, self.peer.as_ref());
        let Ok(handler) = self.service.serve(&mut request) else {
            return;
        };
        // A streaming method named by a notify frame is a key of another
        // mode: as unknown as any other (it would wait for credit or items
        // no one sends, and grant credit for a call that does not exist).
        if handler.streaming {
            return;
        }
        let index = self.handlers.insert(0, None, full, len, false);
        self.handlers.slots[index as usize].quiet = true;
        self.place(index, full, handler);
    }

    fn start(
        &mut self,
        id: u32,
        method: MethodKey,
        timeout_ms: Option<u32>,
        body: &[u8],
        len: usize,
    ) {
        let overflows = self.backlog_overflows(len);
        let full = self.handlers.running >= self.max_concurrent || self.handlers.queued > 0;
        let refusal = if self.draining {
            Some(RemoteError::ShuttingDown)
        } else if timeout_ms == Some(0) {
            Some(RemoteError::DeadlineExceeded)
        } else {
            // Full and `Reject`, or full past the backlog bound (read only
            // because streams need the frames behind it, see
            // `Server::may_read`): refused, not queued.
            (full && (self.when_full == WhenFull::Reject || overflows))
                .then_some(RemoteError::Overloaded)
        };
        if let Some(error) = refusal {
            trace::refused(method, id, error);
            return write_error(self.writer.buffer(), id, error, self.max_frame);
        }
        let timeout = timeout_ms.map(|ms| Duration::from_millis(ms.into()));
        let mut request = Request::new(method, body, id, timeout, self.peer.as_ref());
        let mut handler = match self.service.serve(&mut request) {
            Ok(handler) => handler,
            Err(error) => {
                trace::refused(method, id, error);
                return write_error(self.writer.buffer(), id, error, self.max_frame);
            }
        };
        let service = &self.service;
        handler.respond = trace::serve(handler.respond, || service.method_info(method), method, id);
        let context = request.take_context();
        let deadline = timeout_ms.map(|ms| {
            let at = self
                .deadlines
                .now()
                .saturating_add(Duration::from_millis(ms.into()));
            self.deadlines.arm(at);
            at
        });
        // A handler run inside the driver usually finishes on its first
        // poll: it enters the id index only if it does not. A streaming
        // one is indexed at once, for the items and credit that follow.
        let index_now = full || self.spawner.is_some() || handler.streaming;
        let index = self.handlers.insert(id, deadline, full, len, index_now);
        self.handlers.slots[index as usize].context = context;
        self.place(index, full, handler);
    }

    /// Puts `handler` into its new slot: backlogged, or started.
    fn place(&mut self, index: u32, queued: bool, handler: Handler) {
        let slot = &mut self.handlers.slots[index as usize];
        slot.incoming = handler.incoming;
        slot.streaming = handler.streaming;
        if handler.streaming {
            self.handlers.streams += 1;
        }
        if queued {
            slot.state = SlotState::Queued(handler.respond);
        } else {
            self.launch(index, handler.respond);
        }
    }

    /// Whether a request of `len` bytes would go past the backlog bound
    /// (one larger than the whole backlog is taken when it is empty).
    pub(super) fn backlog_overflows(&self, len: usize) -> bool {
        self.handlers.queued > 0 && self.handlers.queued_bytes.saturating_add(len) > self.backlog
    }

    /// Starts `handler` in the running slot `index`. A streaming handler
    /// runs in the connection's task even with a spawner: its items and
    /// credit are routed there.
    fn launch(&mut self, index: u32, handler: Pin<Box<dyn Respond + Send>>) {
        let slot = &mut self.handlers.slots[index as usize];
        let spawner = self.spawner.as_ref().filter(|_| !slot.streaming);
        if slot.incoming.is_some() {
            let window = self.stream_credit;
            self.handlers
                .open_incoming(index, window, self.writer.buffer());
        }
        let slot = &mut self.handlers.slots[index as usize];
        match spawner {
            None => {
                // Most handlers finish on their first poll: run it now, so
                // the reply joins this batch's write and the slot is free
                // again at once, without a trip through the wake queue.
                slot.state = SlotState::Local(handler);
                let (out, sent) = self.writer.buffer_and_sent();
                let finished = self.handlers.poll_one(index, out, sent, self.max_frame);
                if !finished {
                    self.handlers.index(index);
                }
            }
            Some(spawner) => {
                let reply_to = ReplyTo {
                    queue: self.handlers.wake.clone(),
                    index,
                    generation: slot.generation,
                };
                let (task, abort) = remote_task(handler, reply_to, slot.id, self.max_frame);
                slot.state = SlotState::Remote(abort);
                spawner.spawn(task);
            }
        }
    }

    /// Starts backlogged requests, in order, while slots are free.
    pub(super) fn start_queued(&mut self) {
        while self.handlers.running < self.max_concurrent {
            let Some((index, handler)) = self.handlers.promote() else {
                return;
            };
            self.launch(index, handler);
        }
    }

    /// Shutdown triggered: new requests and the backlog get `ShuttingDown`.
    pub(super) fn drain(&mut self) {
        self.draining = true;
        let out = self.writer.buffer();
        self.handlers
            .answer(out, RemoteError::ShuttingDown, self.max_frame, true);
    }

    /// Shutdown forced: every call is answered `ShuttingDown` now.
    pub(super) fn force(&mut self) {
        self.draining = true;
        self.forced = true;
        let out = self.writer.buffer();
        self.handlers
            .answer(out, RemoteError::ShuttingDown, self.max_frame, false);
    }

    /// Answers handlers and backlogged requests whose deadline passed.
    /// Returns whether the idle timeout expired.
    pub(super) fn expire_deadlines(&mut self, cx: &mut Context<'_>) -> bool {
        while self.deadlines.poll_fired(cx) {
            let now = self.deadlines.now();
            let out = self.writer.buffer();
            if let Some(next) = self.handlers.expire(now, out, self.max_frame) {
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
        if idle.active || self.handlers.live() > 0 {
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
