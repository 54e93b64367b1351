//! The driver future: owns the transport, writes queued requests, routes
//! replies and enforces deadlines.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::Ordering;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use super::state::{Routed, State};
use super::{wake_all, Shared};
use crate::deadline::Deadlines;
use crate::error::{CallError, DriverError, FrameError};
use crate::framing::{FrameReader, FrameWriter, Framed};
use crate::io::Transport;
use crate::readiness::ReadReadiness;
use crate::timer::{NoTimer, Timer};
use crate::wire::Header;

/// How many reads the driver does in one go before it lets writes and other
/// tasks run.
const READ_BUDGET: usize = 16;

/// Reads after which a driver that woke a stream's consumer yields to it.
/// One read (16 KiB) per yield halved the rate of 64 streams of 4 KiB
/// items (a trip through the scheduler per four items); with four, one
/// 16 B stream keeps the gain of yielding (1.2–1.7× tonic on tokio, against
/// 0.9–1.1× without) and 64 × 4 KiB streams run as fast as without
/// (BENCHMARKS.md, issue 9).
const CONSUMER_YIELD_READS: usize = 4;

/// Owns the transport: writes requests, reads responses, enforces deadlines.
///
/// Poll it to completion on any executor. It completes with `Ok(())` when
/// every [`Client`](super::Client) handle is gone and all queued frames are
/// sent, or when the server closes an idle connection; with an error when
/// the transport fails, the peer breaks the protocol, or the peer closes
/// while calls are pending. Either way every pending and later call fails
/// with a [`CallError`]. Dropping the driver does the same.
#[must_use = "calls make no progress unless the driver is polled"]
pub struct ClientDriver<T, Tm: Timer = NoTimer> {
    shared: Arc<Shared>,
    conn: Conn<T>,
    sleep: Deadlines<Tm>,
    /// Wakers collected under the lock, woken after it.
    wake: Vec<Waker>,
    finished: bool,
}

// The transport and the sleep are never pinned in place (the sleep is boxed).
impl<T, Tm: Timer> Unpin for ClientDriver<T, Tm> {}

impl<T: Transport, Tm: Timer> ClientDriver<T, Tm> {
    pub(super) fn new(shared: Arc<Shared>, transport: T, timer: Tm) -> Self {
        ClientDriver {
            conn: Conn::new(transport, &shared),
            shared,
            sleep: Deadlines::new(timer),
            wake: Vec::new(),
            finished: false,
        }
    }

    /// One round of reads, writes and deadlines, repeated while any of them
    /// made progress.
    ///
    /// Invariant: it returns `Pending` only when the transport's read
    /// returned `Pending` (its waker registered), the read budget ran out
    /// or [`CONSUMER_YIELD_READS`] reads handed a stream's consumer items
    /// (the task woke itself in both cases); the writer is idle or its
    /// write returned `Pending`; the driver's waker was stored in the
    /// shared state in the same critical section that found no frame to
    /// take and no call to settle, or the task woke itself to let answered callers queue first
    /// (`Step::Yield`, once per write); and the sleep for the earliest
    /// deadline was polled after being armed and did not fire.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DriverError<T::Error>>> {
        loop {
            if let Poll::Ready(result) = self.conn.read(&self.shared, cx, &mut self.wake) {
                return Poll::Ready(result);
            }
            self.conn
                .write(&self.shared, &self.sleep, cx, &mut self.wake)?;
            let pending = self.conn.writer.pending();
            let (step, next) =
                self.shared
                    .settle(Some(&mut self.conn.writer), pending, cx, &mut self.wake);
            let fired = self.shared.poll_deadlines(
                &mut self.sleep,
                next,
                Some(&mut self.conn.writer),
                cx,
                &mut self.wake,
            );
            if fired {
                continue;
            }
            match step {
                Step::Again => continue,
                Step::Wait => return Poll::Pending,
                Step::Yield => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Step::Finish => return self.conn.poll_close(cx),
            }
        }
    }
}

impl<T, Tm: Timer> ClientDriver<T, Tm> {
    /// The capacities of the read and the write buffer, in bytes; for tests
    /// of memory retention.
    #[doc(hidden)]
    pub fn buffer_capacities(&self) -> (usize, usize) {
        (self.conn.reader.capacity(), self.conn.writer.capacity())
    }
}

impl<T: Transport, Tm: Timer> Future for ClientDriver<T, Tm> {
    type Output = Result<(), DriverError<T::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        let result = core::task::ready!(this.drive(cx));
        this.finished = true;
        let error = match &result {
            // The server closed an idle connection while handles remain.
            Ok(()) if this.shared.handles.load(Ordering::Acquire) > 0 => CallError::ConnectionLost,
            Ok(()) => CallError::Closed,
            Err(e) => e.to_call_error(),
        };
        if error != CallError::Closed {
            crate::trace::disconnected(&error);
        }
        this.shared.close(error, &mut this.wake);
        Poll::Ready(result)
    }
}

impl<T, Tm: Timer> Drop for ClientDriver<T, Tm> {
    fn drop(&mut self) {
        self.shared.close(CallError::Closed, &mut self.wake);
    }
}

/// What a driver does after a round of reads, writes and deadlines.
pub(crate) enum Step {
    /// New work arrived while the lock was not held: go round again.
    Again,
    /// Nothing to do until woken (the waker is registered).
    Wait,
    /// Frames are queued, but callers just answered are likely to queue
    /// more: wake the task and return `Pending` once, to run after them
    /// (see `batching`). No waker is stored, so they do not wake it again.
    Yield,
    /// Every handle is gone and every frame written: close.
    Finish,
}

impl Shared {
    /// Settles calls dropped while their request sat in `writer`, then
    /// decides, under the lock, whether the driver sleeps; storing its waker
    /// in the same critical section means no wake-up is lost. Returns the
    /// step and the earliest deadline. `writer` is `None` while there is no
    /// connection.
    pub(crate) fn settle(
        &self,
        writer: Option<&mut FrameWriter>,
        writer_pending: usize,
        cx: &mut Context<'_>,
        wake: &mut Vec<Waker>,
    ) -> (Step, Option<Duration>) {
        let connected = writer.is_some();
        let waker = cx.waker().clone();
        let handles = self.handles.load(Ordering::Acquire);
        let (step, next, unused) = self.state.with(|state| {
            if let Some(writer) = writer {
                state.settle_retracting(writer, wake);
            }
            let next = state.next_deadline();
            if connected && state.batching.take_yield() {
                return (Step::Yield, next, Some(waker));
            }
            if connected && state.has_driver_work(writer_pending) {
                return (Step::Again, next, Some(waker));
            }
            let nothing_to_send = state.out.is_empty() || !connected;
            if handles == 0 && nothing_to_send {
                let step = if writer_pending == 0 {
                    Step::Finish
                } else {
                    Step::Wait
                };
                return (step, next, Some(waker));
            }
            let unused = match &state.driver {
                Some(w) if w.will_wake(&waker) => Some(waker),
                _ => state.driver.replace(waker),
            };
            (Step::Wait, next, unused)
        });
        // Wakers and the replaced waker are dropped outside the lock.
        drop(unused);
        wake_all(wake);
        (step, next)
    }

    /// Arms the sleep for `next` and, if it fired, fails the calls whose
    /// deadline passed. Returns whether it fired (the driver goes round
    /// again: cancels may have been queued).
    pub(crate) fn poll_deadlines<Tm: Timer>(
        &self,
        sleep: &mut Deadlines<Tm>,
        next: Option<Duration>,
        writer: Option<&mut FrameWriter>,
        cx: &mut Context<'_>,
        wake: &mut Vec<Waker>,
    ) -> bool {
        if let Some(at) = next {
            sleep.arm(at);
        }
        if !sleep.poll_fired(cx) {
            return false;
        }
        let now = sleep.now();
        self.state.with(|state| state.expire(now, writer, wake));
        wake_all(wake);
        true
    }

    /// Fails every pending and later call with `error`.
    pub(crate) fn close(&self, error: CallError, wake: &mut Vec<Waker>) {
        self.state.with(|state| state.close(error, wake));
        // Before the failed calls wake, so that they see it.
        self.set_connection(super::ConnectionState::Closed);
        wake_all(wake);
    }
}

/// The client's one dispatch point: what each kind of frame does to the
/// calls (PROTOCOL.md R4: frames for the callee role are not for a client).
fn route(
    state: &mut State,
    header: Header,
    body: &[u8],
    max_queued: usize,
    wake: &mut Vec<Waker>,
    consumer_woken: &mut bool,
) -> Result<(), FrameError> {
    let routed = match header {
        Header::Response { id } => state.complete(id, Ok(()), body).map(Routed::Wake),
        Header::Error { id, error } => state
            .complete(id, Err(CallError::Remote(error)), &[])
            .map(Routed::Wake),
        Header::Item {
            id,
            from_callee: true,
        } => {
            let routed = state.deliver_item(id, body)?;
            *consumer_woken |= matches!(routed, Routed::Wake(_));
            Some(routed)
        }
        Header::Credit {
            id,
            from_callee: true,
            grant,
        } => Some(state.add_send_credit(id, grant)),
        // A plain client serves nothing: a request gets UnknownMethod.
        Header::Request { id, .. } => {
            state.refuse_request(id, max_queued);
            None
        }
        // The rest of the callee role, and reserved kinds (R6): ignored.
        Header::Cancel { .. }
        | Header::Item {
            from_callee: false, ..
        }
        | Header::Credit {
            from_callee: false, ..
        }
        | Header::End { .. }
        | Header::Notify { .. }
        | Header::Reserved { .. } => None,
    };
    if let Some(Routed::Wake(waker)) = routed {
        wake.push(waker);
    }
    Ok(())
}

/// One connection's transport and buffers.
pub(crate) struct Conn<T> {
    io: Framed<T>,
    reader: FrameReader,
    pub(crate) writer: FrameWriter,
    readiness: ReadReadiness,
    /// Frames received on this connection.
    pub(crate) frames_read: u64,
}

impl<T: Transport> Conn<T> {
    pub(crate) fn new(io: T, shared: &Shared) -> Self {
        let max_frame = shared.max_frame;
        Conn {
            io: Framed::new(io, shared.framing, max_frame, &shared.framing_stats),
            reader: FrameReader::new(max_frame),
            writer: FrameWriter::new(max_frame),
            readiness: ReadReadiness::new(),
            frames_read: 0,
        }
    }

    /// Reads and routes responses until the transport has nothing more (or
    /// the read budget is spent). `Ready` means the connection ended.
    pub(crate) fn read(
        &mut self,
        shared: &Shared,
        cx: &mut Context<'_>,
        wake: &mut Vec<Waker>,
    ) -> Poll<Result<(), DriverError<T::Error>>> {
        let mut consumer_woken = false;
        for reads in 0..READ_BUDGET {
            match self.route_buffered(shared, wake) {
                Err(e) => return Poll::Ready(Err(DriverError::Protocol(e))),
                Ok(woken) => consumer_woken |= woken,
            }
            // A stream's consumer has items: let it run before reading much
            // more (see `route_buffered`).
            if consumer_woken && reads >= CONSUMER_YIELD_READS {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match self
                .readiness
                .poll_fill(&mut self.reader, &mut self.io, cx.waker())
            {
                Poll::Pending => {
                    // Nothing more to read: give back what a large frame
                    // (a big response, a snapshot) made the buffer grow
                    // to, once it is consumed — not while one arrives,
                    // which would move its bytes at every pause.
                    if !self.reader.has_partial_frame() {
                        self.reader.shrink();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(DriverError::Transport(e))),
                Poll::Ready(Ok(0)) => return Poll::Ready(self.peer_closed(shared)),
                Poll::Ready(Ok(_)) => {}
            }
        }
        if let Err(e) = self.route_buffered(shared, wake) {
            return Poll::Ready(Err(DriverError::Protocol(e)));
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn peer_closed(&self, shared: &Shared) -> Result<(), DriverError<T::Error>> {
        let idle = shared.state.with(|state| state.in_flight == 0);
        if idle && !self.reader.has_partial_frame() {
            Ok(())
        } else {
            Err(DriverError::Closed)
        }
    }

    /// Delivers every complete buffered frame, under one lock, and wakes
    /// the callers after it.
    ///
    /// Returns whether it woke a stream's consumer. The driver then yields
    /// after a few reads ([`CONSUMER_YIELD_READS`]): on an executor that
    /// runs the woken task next on the same thread (tokio's LIFO slot,
    /// which other threads cannot steal from), the consumer would
    /// otherwise wait for the whole read loop, and a yielded driver can be
    /// picked up by an idle thread while the consumer works on its batch.
    fn route_buffered(
        &mut self,
        shared: &Shared,
        wake: &mut Vec<Waker>,
    ) -> Result<bool, FrameError> {
        let reader = &mut self.reader;
        let frames_read = &mut self.frames_read;
        let mut consumer_woken = false;
        let routed = shared.state.with(|state| {
            while let Some(frame) = reader.next_frame()? {
                *frames_read += 1;
                let (header, body_at) = Header::decode(frame)?;
                let body = frame.get(body_at..).unwrap_or_default();
                route(
                    state,
                    header,
                    body,
                    shared.max_queued,
                    wake,
                    &mut consumer_woken,
                )?;
            }
            Ok(())
        });
        wake_all(wake);
        routed.map(|()| consumer_woken)
    }

    /// Writes what callers queued, in as few writes as possible.
    pub(crate) fn write<Tm: Timer>(
        &mut self,
        shared: &Shared,
        clock: &Deadlines<Tm>,
        cx: &mut Context<'_>,
        wake: &mut Vec<Waker>,
    ) -> Result<(), DriverError<T::Error>> {
        loop {
            if self.writer.pending() == 0 {
                let now = if shared.timed.load(Ordering::Relaxed) {
                    clock.now()
                } else {
                    Duration::ZERO
                };
                let writer = &mut self.writer;
                shared
                    .state
                    .with(|state| state.take_out(writer, now, shared.max_queued, wake));
                wake_all(wake);
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

    pub(crate) fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), DriverError<T::Error>>> {
        self.io.poll_close(cx).map_err(DriverError::Transport)
    }
}

#[cfg(test)]
mod tests {
    //! [`CONSUMER_YIELD_READS`] below, at and above its mark, over a
    //! transport that hands out one scripted frame per read.

    use super::*;
    use crate::client::Client;
    use crate::framing::encode_frame;
    use crate::wire::MethodKey;
    use alloc::collections::VecDeque;
    use alloc::task::Wake;
    use core::convert::Infallible;
    use core::sync::atomic::AtomicUsize;
    use futures_util::StreamExt;
    use std::sync::Mutex;

    const KEY: MethodKey = MethodKey(0x0102_0304_0506_0708);

    #[derive(Default)]
    struct Script {
        /// Frames to hand out, one per read; `Pending` when empty.
        frames: VecDeque<Vec<u8>>,
        /// Reads that returned bytes.
        reads: usize,
        /// Everything the driver wrote.
        written: Vec<u8>,
        /// The reader's waker, from its last `Pending`.
        waker: Option<Waker>,
    }

    #[derive(Clone, Default)]
    struct Scripted(Arc<Mutex<Script>>);

    impl Scripted {
        fn with<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
            f(&mut self.0.lock().unwrap())
        }

        /// Makes `n` copies of `frame` ready and wakes the reader.
        fn ready(&self, frame: &[u8], n: usize) {
            let waker = self.with(|s| {
                s.frames.extend(core::iter::repeat_n(frame.to_vec(), n));
                s.waker.take()
            });
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    impl Transport for Scripted {
        type Error = Infallible;
        fn poll_read(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<Result<usize, Infallible>> {
            self.with(|s| match s.frames.pop_front() {
                Some(frame) => {
                    assert!(frame.len() <= buf.len(), "one frame per read");
                    buf[..frame.len()].copy_from_slice(&frame);
                    s.reads += 1;
                    Poll::Ready(Ok(frame.len()))
                }
                None => {
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        }
        fn poll_write(
            &mut self,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<Result<usize, Infallible>> {
            self.with(|s| s.written.extend_from_slice(buf));
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn woken(count: &Arc<Count>) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    fn frame(header: Header, body: &impl serde::Serialize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, &header, body, 1 << 16).unwrap();
        out
    }

    /// What one poll of the driver did: reads that returned bytes, and
    /// whether it woke itself (yielded) rather than waiting.
    fn poll_driver<D: Future + Unpin>(driver: &mut D, io: &Scripted) -> (usize, bool) {
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let before = io.with(|s| s.reads);
        assert!(Pin::new(driver)
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        (io.with(|s| s.reads) - before, woken(&count) > 0)
    }

    /// Runs `check` with a driver whose server-streaming call (id `id`,
    /// credit 64 of which 16 granted) has a consumer waiting for items.
    fn with_waiting_consumer(
        check: impl FnOnce(&mut dyn FnMut() -> (usize, bool), &Scripted, u32, &Arc<Count>),
    ) {
        let io = Scripted::default();
        let (client, mut driver) = Client::new(io.clone());
        let mut stream = client.server_stream::<_, u64>(KEY, ()).with_credit(64);
        let consumer = Arc::new(Count::default());
        let consumer_waker = Waker::from(consumer.clone());
        let mut cx = Context::from_waker(&consumer_waker);
        assert!(stream.poll_next_unpin(&mut cx).is_pending());
        let _ = poll_driver(&mut driver, &io);
        assert!(stream.poll_next_unpin(&mut cx).is_pending());
        let written = io.with(|s| s.written.clone());
        let (Header::Request { id, .. }, _) = Header::decode(&written[4..]).unwrap() else {
            panic!("the request goes first: {written:?}");
        };
        let mut poll = || poll_driver(&mut driver, &io);
        check(&mut poll, &io, id, &consumer);
        drop(stream);
    }

    fn items(io: &Scripted, id: u32, n: usize) {
        io.ready(
            &frame(
                Header::Item {
                    id,
                    from_callee: true,
                },
                &7u64,
            ),
            n,
        );
    }

    fn left(io: &Scripted) -> usize {
        io.with(|s| s.frames.len())
    }

    /// Below the mark: three reads woke the consumer and then the
    /// transport had nothing: the driver waits (no yield).
    #[test]
    fn below_the_mark_the_driver_reads_until_pending() {
        with_waiting_consumer(|poll, io, id, consumer| {
            items(io, id, CONSUMER_YIELD_READS - 1);
            assert_eq!(poll(), (CONSUMER_YIELD_READS - 1, false));
            assert_eq!(woken(consumer), 1);
        });
    }

    /// At the mark: with more ready than four frames, the driver reads
    /// exactly four, hands them over and yields; the rest waits.
    #[test]
    fn at_the_mark_the_driver_yields_after_exactly_four_reads() {
        with_waiting_consumer(|poll, io, id, consumer| {
            items(io, id, CONSUMER_YIELD_READS + 1);
            assert_eq!(poll(), (CONSUMER_YIELD_READS, true));
            assert_eq!(left(io), 1);
            assert_eq!(woken(consumer), 1);
        });
    }

    /// Above the mark: the yield comes once per poll that woke a consumer;
    /// the next poll, with the consumer not back yet (nothing to wake),
    /// reads everything ready without yielding.
    #[test]
    fn above_the_mark_a_poll_that_woke_no_consumer_does_not_yield() {
        with_waiting_consumer(|poll, io, id, consumer| {
            items(io, id, 2 * CONSUMER_YIELD_READS + 1);
            assert_eq!(poll(), (CONSUMER_YIELD_READS, true));
            assert_eq!(poll(), (CONSUMER_YIELD_READS + 1, false));
            assert_eq!(left(io), 0);
            assert_eq!(woken(consumer), 1);
        });
    }

    /// Frames that wake no consumer (credit for a call that is not there)
    /// never trigger the yield: the driver reads all ten ready.
    #[test]
    fn frames_that_wake_no_consumer_are_read_without_yielding() {
        with_waiting_consumer(|poll, io, id, consumer| {
            let credit = frame(
                Header::Credit {
                    id: id.wrapping_add(1000),
                    from_callee: true,
                    grant: 1,
                },
                &(),
            );
            io.ready(&credit, 10);
            assert_eq!(poll(), (10, false));
            assert_eq!(woken(consumer), 0);
        });
    }
}
