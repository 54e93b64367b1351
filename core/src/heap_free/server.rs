//! The heap-free server driver: one connection, fixed buffers, one handler
//! at a time, pipelined requests answered in order.

use core::future::{poll_fn, Future};
use core::pin::{pin, Pin};
use core::task::{Context, Poll};
use core::time::Duration;

use serde::Serialize;

use super::outbox::{encode_frame, put_head, EncodeFailure, Outbox};
use crate::error::{DriverError, FrameError, RemoteError};
use crate::framing::{frame_len, LEN_PREFIX};
use crate::io::Transport;
use crate::timer::{NoTimer, Timer};
use crate::wire::compact::{HeaderBytes, RawHeader, CANCEL, NOTIFY, REQUEST};
use crate::wire::{MethodKey, COMMON_HEADER_LEN};

/// What a heap-free server serves: implemented by the dispatcher that
/// [`heap_free_service`](crate::heap_free_service) generates (or by hand).
///
/// A call is served in two steps, so that no request bytes are borrowed
/// while its handler runs: [`decode`](Self::decode) turns the request into
/// owned [`Args`](Self::Args) (typically an enum with one variant per
/// method), then [`run`](Self::run) returns the handler's future, whose
/// value is encoded as the reply. The future may borrow `self` (device
/// state) and need not be `Send`.
pub trait HeapFreeService {
    /// The decoded arguments of one call.
    type Args;
    /// The value of one call, encoded with postcard as the response body.
    type Reply: Serialize;

    /// Looks up `method` and decodes `args` (exactly: bytes left over are
    /// an error). An unknown key is [`RemoteError::UnknownMethod`],
    /// undecodable arguments [`RemoteError::BadRequest`].
    fn decode(&self, method: MethodKey, args: &[u8]) -> Result<Self::Args, RemoteError>;

    /// Runs one call.
    fn run(&self, args: Self::Args) -> impl Future<Output = Self::Reply> + '_;
}

impl<S: HeapFreeService + ?Sized> HeapFreeService for &S {
    type Args = S::Args;
    type Reply = S::Reply;
    fn decode(&self, method: MethodKey, args: &[u8]) -> Result<Self::Args, RemoteError> {
        (**self).decode(method, args)
    }
    fn run(&self, args: Self::Args) -> impl Future<Output = Self::Reply> + '_ {
        (**self).run(args)
    }
}

/// The read and write buffers of one heap-free connection: `RX` bytes of
/// received frames (the request being started and the pipelined ones
/// behind it), `TX` bytes of replies and notifications not yet written.
///
/// The frame limit is `RX - 4`: a frame announcing more closes the
/// connection (PROTOCOL.md R5). A reply whose frame exceeds `TX` bytes is
/// answered [`RemoteError::ResponseTooLarge`]. Both must be at least 32.
pub struct Buffers<const RX: usize, const TX: usize> {
    pub(super) rx: [u8; RX],
    pub(super) tx: [u8; TX],
}

impl<const RX: usize, const TX: usize> Buffers<RX, TX> {
    const CHECK: () = assert!(
        RX >= 32 && TX >= 32,
        "heap-free buffers need 32 bytes at least"
    );

    /// Zeroed buffers (usable in a `static`).
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        Buffers {
            rx: [0; RX],
            tx: [0; TX],
        }
    }

    /// The largest frame (header and body) this connection accepts.
    pub const fn max_frame(&self) -> usize {
        RX - LEN_PREFIX
    }
}

impl<const RX: usize, const TX: usize> Default for Buffers<RX, TX> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const RX: usize, const TX: usize> core::fmt::Debug for Buffers<RX, TX> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Buffers {{ rx: {RX}, tx: {TX} }}")
    }
}

/// Where a server takes the notifications it pushes: an [`Outbox`], or
/// nothing ([`NoOutbox`]).
pub trait NotifySource {
    /// Moves whole notify frames into `dst`; `Pending` with the waker kept
    /// while there are none.
    fn poll_take(&self, cx: &mut Context<'_>, dst: &mut [u8]) -> Poll<usize>;
}

/// No notifications to push.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoOutbox;

impl NotifySource for NoOutbox {
    fn poll_take(&self, _: &mut Context<'_>, _: &mut [u8]) -> Poll<usize> {
        Poll::Pending
    }
}

impl<const N: usize> NotifySource for &Outbox<N> {
    fn poll_take(&self, cx: &mut Context<'_>, dst: &mut [u8]) -> Poll<usize> {
        Outbox::poll_take(self, cx, dst)
    }
}

/// A heap-free server for one connection; [`run`](Self::run) is the driver
/// future.
///
/// ```
/// # use courier::heap_free::{Buffers, HeapFreeServer};
/// #[courier::heap_free_service]
/// pub trait Calc {
///     async fn add(&self, a: u32, b: u32) -> u32;
/// }
/// struct Adder;
/// impl Calc for Adder {
///     async fn add(&self, a: u32, b: u32) -> u32 {
///         a.wrapping_add(b)
///     }
/// }
/// let (client_io, server_io) = courier_mem::pair(1024);
/// let mut buffers = Buffers::<256, 256>::new();
/// let adder = Adder;
/// let server = HeapFreeServer::new(CalcHeapFree::new(&adder), server_io, &mut buffers).run();
/// # drop((client_io, server));
/// ```
#[must_use = "the server does nothing until `run` is polled"]
pub struct HeapFreeServer<'b, S, T, const RX: usize, const TX: usize, Tm = NoTimer, O = NoOutbox> {
    service: S,
    io: T,
    buffers: &'b mut Buffers<RX, TX>,
    timer: Tm,
    outbox: O,
}

impl<S, T, const RX: usize, const TX: usize, Tm, O> core::fmt::Debug
    for HeapFreeServer<'_, S, T, RX, TX, Tm, O>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HeapFreeServer")
            .field("buffers", &self.buffers)
            .finish_non_exhaustive()
    }
}

impl<'b, S, T, const RX: usize, const TX: usize> HeapFreeServer<'b, S, T, RX, TX> {
    /// Serves `service` on `io` with `buffers`, without a timer (only a
    /// timeout of 0 is answered DeadlineExceeded) and without notifications.
    pub fn new(service: S, io: T, buffers: &'b mut Buffers<RX, TX>) -> Self {
        HeapFreeServer {
            service,
            io,
            buffers,
            timer: NoTimer,
            outbox: NoOutbox,
        }
    }
}

impl<'b, S, T, const RX: usize, const TX: usize, Tm, O> HeapFreeServer<'b, S, T, RX, TX, Tm, O> {
    /// Enforces request deadlines with `timer` (PROTOCOL.md R3).
    pub fn timer<Tm2: Timer>(self, timer: Tm2) -> HeapFreeServer<'b, S, T, RX, TX, Tm2, O> {
        HeapFreeServer {
            service: self.service,
            io: self.io,
            buffers: self.buffers,
            timer,
            outbox: self.outbox,
        }
    }

    /// Writes the notifications queued in `outbox` to the peer.
    pub fn outbox<const N: usize>(
        self,
        outbox: &Outbox<N>,
    ) -> HeapFreeServer<'b, S, T, RX, TX, Tm, &Outbox<N>> {
        HeapFreeServer {
            service: self.service,
            io: self.io,
            buffers: self.buffers,
            timer: self.timer,
            outbox,
        }
    }
}

impl<S, T, const RX: usize, const TX: usize, Tm, O> HeapFreeServer<'_, S, T, RX, TX, Tm, O>
where
    S: HeapFreeService,
    T: Transport,
    Tm: Timer,
    O: NotifySource,
{
    /// Serves the connection until the peer half-closes it and every
    /// request received is answered (`Ok(())`), or the transport fails or
    /// the peer breaks the protocol (`Err`, after the replies already
    /// produced are written).
    pub async fn run(self) -> Result<(), DriverError<T::Error>> {
        let HeapFreeServer {
            service,
            io,
            buffers,
            timer,
            outbox,
        } = self;
        let start = timer.now();
        // Deadlines count whole milliseconds from the millisecond the
        // connection started in.
        let epoch = Duration::new(
            start.as_secs(),
            start.subsec_millis().saturating_mul(1_000_000),
        );
        let sleep = pin!(timer.sleep_until(start.saturating_add(FAR)));
        let mut call = pin!(None);
        let mut conn = Connection {
            io,
            rx: Rx {
                buf: &mut buffers.rx,
                start: 0,
                scanned: 0,
                filled: 0,
            },
            tx: Tx {
                buf: &mut buffers.tx,
                start: 0,
                end: 0,
                unflushed: false,
            },
            timer,
            epoch,
            epoch_ms: whole_millis(epoch),
            sleep,
            outbox,
            running: None,
            finished: None,
            eof: false,
            failed: None,
        };
        let service = &service;
        let mut start = |args| service.run(args);
        poll_fn(|cx| conn.poll(cx, service, call.as_mut(), &mut start)).await
    }
}

/// Whole milliseconds in `d`.
fn whole_millis(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

/// How far "no deadline" is: the sleep is armed this far ahead.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Loop rounds one poll makes before it yields to other tasks.
const BUDGET: usize = 64;

/// Bytes of an error frame with its prefix.
const ERROR_FRAME: usize = LEN_PREFIX + COMMON_HEADER_LEN + 1;

/// A deadline in milliseconds since the connection's epoch; `u32::MAX` is
/// none (also for a deadline beyond about 49 days).
type Millis = u32;
const NO_DEADLINE: Millis = Millis::MAX;

/// The call whose handler is running.
struct Running {
    id: u32,
    deadline: Millis,
    /// A request (answered) rather than a notification (never answered).
    reply: bool,
}

/// What a finished call answers, waiting for room in the write buffer.
enum Answer<R> {
    /// The handler's value.
    Value(R),
    /// The deadline passed while the handler ran: DeadlineExceeded.
    Expired,
}

/// Received bytes: `start..scanned` are whole frames already routed (the
/// queue of requests and notifications waiting for the handler slot, and
/// skipped frames), `scanned..filled` bytes not yet routed.
struct Rx<'b> {
    buf: &'b mut [u8],
    start: usize,
    scanned: usize,
    filled: usize,
}

/// Unsent bytes are `start..end`.
struct Tx<'b> {
    buf: &'b mut [u8],
    start: usize,
    end: usize,
    unflushed: bool,
}

/// The kind byte a routed frame gets when it is to be skipped (a reserved
/// kind, so the queue skips it like any reserved frame).
const SKIP: u8 = 0xff;

impl Rx<'_> {
    /// The routed frame at `at`: its header, the body's range and the
    /// offset of the next frame.
    fn frame_at(&self, at: usize) -> Option<(RawHeader, core::ops::Range<usize>, usize)> {
        let frame_at = at.saturating_add(LEN_PREFIX);
        let prefix = self
            .buf
            .get(at..frame_at)
            .filter(|_| frame_at <= self.scanned)?;
        let len = u32::from_le_bytes(prefix.try_into().ok()?) as usize;
        let next = frame_at.saturating_add(len);
        let frame = self.buf.get(frame_at..next)?;
        let header = RawHeader::parse(frame).ok()?;
        Some((header, frame_at.saturating_add(header.len)..next, next))
    }

    fn mark_skipped(&mut self, at: usize) {
        if let Some(kind) = self.buf.get_mut(at.saturating_add(LEN_PREFIX + 1)) {
            *kind = SKIP;
        }
    }

    /// Requests and notifications routed but not started.
    fn is_empty(&self) -> bool {
        self.start == self.scanned
    }

    /// Makes room at the end by moving the unconsumed bytes to the front.
    #[inline(never)]
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        super::move_to_front(self.buf, self.start, self.filled);
        self.scanned -= self.start;
        self.filled -= self.start;
        self.start = 0;
    }
}

impl Tx<'_> {
    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Appends one frame; `NoRoom` when it does not fit behind the unsent
    /// bytes. (The buffer starts over once it is written out whole, so
    /// nothing is ever moved.)
    fn push<B: Serialize + ?Sized>(&mut self, id: u32, body: &B) -> Result<(), EncodeFailure> {
        let free = self.buf.get_mut(self.end..).unwrap_or_default();
        let n = encode_frame(free, &HeaderBytes::response(id), body)?;
        self.end = self.end.saturating_add(n);
        Ok(())
    }

    /// Appends an error frame if it fits. Takes the code: the callers'
    /// constant errors then need no conversion here.
    fn push_error(&mut self, id: u32, code: u8) -> bool {
        let free = self.buf.get_mut(self.end..).unwrap_or_default();
        match put_head(free, &HeaderBytes::error_code(id, code), 0) {
            Ok(n) => {
                self.end = self.end.saturating_add(n);
                true
            }
            Err(_) => false,
        }
    }

    fn room(&self) -> usize {
        self.buf.len().saturating_sub(self.end)
    }
}

struct Connection<'b, T, Tm: Timer, Sl, O, R> {
    io: T,
    rx: Rx<'b>,
    tx: Tx<'b>,
    timer: Tm,
    /// The start of the connection's first millisecond: deadlines count
    /// from here.
    epoch: Duration,
    /// `epoch` in milliseconds.
    epoch_ms: u64,
    sleep: Pin<Sl>,
    outbox: O,
    running: Option<Running>,
    finished: Option<(u32, Answer<R>)>,
    eof: bool,
    /// A protocol violation: the connection closes once the replies
    /// already produced are written.
    failed: Option<FrameError>,
}

impl<T, Tm, Sl, O, R> Connection<'_, T, Tm, Sl, O, R>
where
    T: Transport,
    Tm: Timer,
    Sl: core::ops::DerefMut<Target = Tm::Sleep>,
    O: NotifySource,
    R: Serialize,
{
    /// One poll of the driver.
    ///
    /// Invariant: a round runs every step; the loop ends with `Pending`
    /// only after a round in which no step made progress, and then every
    /// step that could make progress later has registered the waker: the
    /// transport's read (when there is room and no end of stream), its
    /// write or flush (when bytes are unsent), the running handler, the
    /// outbox, and the sleep armed at the next deadline. A step that
    /// waits for room in a buffer is woken by the step that frees it,
    /// which has a waker of its own.
    fn poll<S, F>(
        &mut self,
        cx: &mut Context<'_>,
        service: &S,
        mut call: Pin<&mut Option<F>>,
        start: &mut impl FnMut(S::Args) -> F,
    ) -> Poll<Result<(), DriverError<T::Error>>>
    where
        S: HeapFreeService<Reply = R>,
        F: Future<Output = R>,
    {
        for _ in 0..BUDGET {
            let mut progress = self.poll_write(cx)?;
            if let Some(e) = self.failed {
                progress |= self.write_finished();
                if self.tx.is_empty() {
                    return Poll::Ready(Err(DriverError::Protocol(e)));
                }
                if progress {
                    continue;
                }
                return Poll::Pending;
            }
            progress |= self.take_notifications(cx);
            if let Some(handler) = call.as_mut().as_pin_mut() {
                if let Poll::Ready(value) = handler.poll(cx) {
                    call.set(None);
                    if let Some(running) = self.running.take() {
                        if running.reply {
                            self.finished = Some((running.id, Answer::Value(value)));
                        }
                    }
                    progress = true;
                }
            }
            progress |= self.write_finished();
            if call.is_none() && self.finished.is_none() {
                progress |= self.start_next(service, call.as_mut(), start);
            }
            progress |= self.poll_read(cx, call.as_mut())?;
            let (expired, next_deadline) = self.expire(call.as_mut());
            if progress || expired {
                continue;
            }
            if self.eof && self.is_idle(call.is_none()) {
                return self.io.poll_close(cx).map_err(DriverError::Transport);
            }
            if self.arm_sleep(cx, next_deadline) {
                continue;
            }
            return Poll::Pending;
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn is_idle(&self, no_call: bool) -> bool {
        no_call && self.finished.is_none() && self.rx.is_empty() && self.tx.is_empty()
    }

    /// Milliseconds since the epoch: whole milliseconds of the timer
    /// minus the epoch's, in 64-bit arithmetic (subtracting `Duration`s
    /// and `as_millis` take several times the code on a Cortex-M).
    fn now_ms(&self) -> Millis {
        let elapsed = whole_millis(self.timer.now()).saturating_sub(self.epoch_ms);
        Millis::try_from(elapsed)
            .unwrap_or(NO_DEADLINE - 1)
            .min(NO_DEADLINE - 1)
    }

    /// Writes unsent bytes, then flushes them.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, DriverError<T::Error>> {
        let mut progress = false;
        while !self.tx.is_empty() {
            let unsent = self.tx.buf.get(self.tx.start..self.tx.end);
            let unsent = unsent.unwrap_or_default();
            match self.io.poll_write(cx, unsent) {
                Poll::Ready(Ok(0)) => return Err(DriverError::Closed),
                Poll::Ready(Ok(n)) => {
                    self.tx.start = self.tx.start.saturating_add(n).min(self.tx.end);
                    self.tx.unflushed = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(DriverError::Transport(e)),
                Poll::Pending => return Ok(progress),
            }
        }
        self.tx.start = 0;
        self.tx.end = 0;
        if self.tx.unflushed {
            match self.io.poll_flush(cx) {
                Poll::Ready(Ok(())) => self.tx.unflushed = false,
                Poll::Ready(Err(e)) => return Err(DriverError::Transport(e)),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    fn take_notifications(&mut self, cx: &mut Context<'_>) -> bool {
        if self.eof {
            return false;
        }
        if !self.tx.is_empty() {
            // Notifications go between whole replies: wait for the write.
            return false;
        }
        match self.outbox.poll_take(cx, self.tx.buf) {
            Poll::Ready(n) if n > 0 => {
                self.tx.end = n;
                true
            }
            _ => false,
        }
    }

    /// Encodes the finished call's answer once it fits.
    fn write_finished(&mut self) -> bool {
        let Some((id, answer)) = &self.finished else {
            return false;
        };
        let id = *id;
        let written = match answer {
            Answer::Value(value) => match self.tx.push(id, value) {
                Ok(()) => true,
                Err(EncodeFailure::NoRoom) if !self.tx.is_empty() => false,
                // Too large for an empty buffer, or not serializable.
                Err(_) => self.tx.push_error(id, RemoteError::ResponseTooLarge.code()),
            },
            Answer::Expired => self.tx.push_error(id, RemoteError::DeadlineExceeded.code()),
        };
        if written {
            self.finished = None;
        }
        written
    }

    /// Starts the first queued request or notification, answering those
    /// that cannot run (expired, unknown, undecodable) on the way.
    fn start_next<S, F>(
        &mut self,
        service: &S,
        mut call: Pin<&mut Option<F>>,
        start: &mut impl FnMut(S::Args) -> F,
    ) -> bool
    where
        S: HeapFreeService<Reply = R>,
    {
        let mut progress = false;
        while let Some((header, body, next)) = self.rx.frame_at(self.rx.start) {
            let reply = header.kind == REQUEST;
            if !reply && header.kind != NOTIFY {
                self.rx.start = next;
                progress = true;
                continue;
            }
            let id = header.id;
            let deadline = header.timeout_ms.unwrap_or(NO_DEADLINE);
            if reply && self.tx.room() < ERROR_FRAME {
                // An error answer might not fit: wait for the write.
                return progress;
            }
            if reply && deadline <= self.now_ms() {
                self.tx.push_error(id, RemoteError::DeadlineExceeded.code());
                self.rx.start = next;
                progress = true;
                continue;
            }
            let args = service.decode(header.method, self.rx.buf.get(body).unwrap_or_default());
            self.rx.start = next;
            match args {
                Ok(args) => {
                    call.set(Some(start(args)));
                    self.running = Some(Running {
                        id,
                        deadline,
                        reply,
                    });
                    return true;
                }
                Err(error) if reply => {
                    self.tx.push_error(id, error.code());
                }
                // A notification is never answered (PROTOCOL.md 3.10).
                Err(_) => {}
            }
            progress = true;
        }
        if self.rx.is_empty() {
            self.rx.compact();
        }
        progress
    }

    /// Reads what fits, then routes every whole frame that arrived.
    fn poll_read<F>(
        &mut self,
        cx: &mut Context<'_>,
        mut call: Pin<&mut Option<F>>,
    ) -> Result<bool, DriverError<T::Error>> {
        if self.eof {
            return Ok(false);
        }
        if self.rx.filled == self.rx.buf.len() {
            self.rx.compact();
        }
        let free = self.rx.buf.get_mut(self.rx.filled..).unwrap_or_default();
        if free.is_empty() {
            // Full of queued frames: the handler's end frees room.
            return Ok(false);
        }
        let n = match self.io.poll_read(cx, free) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Err(DriverError::Transport(e)),
            Poll::Pending => return Ok(false),
        };
        if n == 0 {
            self.eof = true;
            if self.rx.scanned != self.rx.filled {
                self.fail(FrameError::UnexpectedEof, call);
            }
            return Ok(true);
        }
        self.rx.filled = self.rx.filled.saturating_add(n).min(self.rx.buf.len());
        self.route(call.as_mut());
        Ok(true)
    }

    /// Routes every whole frame not routed yet: a request gets its
    /// absolute deadline written over its timeout, a cancel acts at once,
    /// everything but requests and notifications is marked skipped.
    fn route<F>(&mut self, mut call: Pin<&mut Option<F>>) {
        let max_frame = self.rx.buf.len() - LEN_PREFIX;
        loop {
            let at = self.rx.scanned;
            let unrouted = self.rx.buf.get(at..self.rx.filled).unwrap_or_default();
            let len = match frame_len(unrouted, max_frame) {
                Ok(Some(len)) => len,
                Ok(None) => return,
                Err(e) => return self.fail(e, call),
            };
            let frame_at = at + LEN_PREFIX;
            let received = self.rx.buf.get(..self.rx.filled).unwrap_or_default();
            let Some(frame) = received.get(frame_at..frame_at.saturating_add(len)) else {
                if self.rx.start > 0 && self.rx.filled == self.rx.buf.len() {
                    // The frame fits once the consumed bytes are gone.
                    self.rx.compact();
                    continue;
                }
                return;
            };
            let header = match RawHeader::parse(frame) {
                Ok(header) => header,
                Err(e) => return self.fail(e, call),
            };
            match (header.kind, header.timeout_ms) {
                (REQUEST, Some(ms)) => {
                    let deadline = self.now_ms().saturating_add(ms).to_le_bytes();
                    let field = frame_at + COMMON_HEADER_LEN + 8;
                    if let Some(slot) = self.rx.buf.get_mut(field..field + 4) {
                        slot.copy_from_slice(&deadline);
                    }
                }
                (REQUEST | NOTIFY, _) => {}
                (CANCEL, _) => {
                    self.cancel(header.id, call.as_mut());
                    self.rx.mark_skipped(at);
                }
                _ => self.rx.mark_skipped(at),
            }
            self.rx.scanned = frame_at + len;
        }
    }

    /// R2: the running call or the first queued request with `id` is
    /// dropped without a reply.
    fn cancel<F>(&mut self, id: u32, mut call: Pin<&mut Option<F>>) {
        if matches!(&self.running, Some(r) if r.reply && r.id == id) {
            call.set(None);
            self.running = None;
            return;
        }
        let mut at = self.rx.start;
        while let Some((header, _, next)) = self.rx.frame_at(at) {
            if header.kind == REQUEST && header.id == id {
                self.rx.mark_skipped(at);
                return;
            }
            at = next;
        }
    }

    /// Answers DeadlineExceeded for the running call and the queued
    /// requests whose deadline passed (R3). Returns whether it answered
    /// any, and the next deadline still ahead (`NO_DEADLINE`: none).
    fn expire<F>(&mut self, mut call: Pin<&mut Option<F>>) -> (bool, Millis) {
        let now = self.now_ms();
        let mut progress = false;
        let mut next = NO_DEADLINE;
        if let Some(running) = &self.running {
            if running.deadline > now {
                next = running.deadline;
            } else {
                call.set(None);
                if running.reply {
                    self.finished = Some((running.id, Answer::Expired));
                }
                self.running = None;
                progress = true;
            }
        }
        let mut at = self.rx.start;
        while let Some((header, _, after)) = self.rx.frame_at(at) {
            if let (REQUEST, Some(deadline)) = (header.kind, header.timeout_ms) {
                if deadline > now {
                    next = next.min(deadline);
                } else if self
                    .tx
                    .push_error(header.id, RemoteError::DeadlineExceeded.code())
                {
                    self.rx.mark_skipped(at);
                    progress = true;
                }
                // One that passed without room for its answer waits for
                // the write, which wakes the driver.
            }
            at = after;
        }
        (progress, next)
    }

    /// Arms the sleep at `next`, the next deadline still ahead; `true` if
    /// it has already fired.
    fn arm_sleep(&mut self, cx: &mut Context<'_>, next: Millis) -> bool {
        if next == NO_DEADLINE {
            return false;
        }
        let when = self
            .epoch
            .saturating_add(Duration::from_millis(u64::from(next)));
        self.timer.reset(self.sleep.as_mut(), when);
        self.sleep.as_mut().poll(cx).is_ready()
    }

    /// A protocol violation: running and queued calls are dropped; the
    /// replies already produced are still written.
    #[inline(never)]
    fn fail<F>(&mut self, error: FrameError, mut call: Pin<&mut Option<F>>) {
        call.set(None);
        self.running = None;
        self.rx.start = self.rx.scanned;
        self.failed = Some(error);
    }
}
