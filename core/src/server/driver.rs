//! The [`Server`] future: the drive loop, reading, writing and closing.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::connection::Connection;
use super::{Service, Shutdown, WhenFull, READ_BUDGET};
use crate::error::{DriverError, FrameError};
use alloc::sync::Arc;

use crate::cobs::FramingStats;
use crate::framing::{FrameReader, Framed};
use crate::io::Transport;
use crate::readiness::ReadReadiness;
use crate::timer::{NoTimer, Timer};
use crate::wire::{FrameKind, Header};

/// Transport reads one poll of the driver does before it yields.
const FILL_BUDGET: usize = 16;

/// Rounds of the driver's loop in one poll before it yields.
const POLL_BUDGET: usize = 32;

/// Serves one connection: reads requests, runs handlers, writes replies.
///
/// Completes with `Ok(())` when the client has closed its write half between
/// frames and every request received has been answered (the driver then
/// closes its own write half), or when a [`Shutdown`] has drained the
/// connection. Completes with an error when the transport fails, the client
/// closes in the middle of a frame or sends bytes that are not frames (the
/// replies already produced are flushed first), or the connection stays idle
/// past the [idle timeout](crate::ServerBuilder::idle_timeout); handlers still
/// running are then dropped. Unknown methods, undecodable arguments, missed
/// deadlines, overload ([`WhenFull::Reject`]) and panicking handlers (with
/// `std`) are answered with an error frame and the connection goes on. See
/// the [module docs](crate::server) for every guarantee.
#[must_use = "a server does nothing unless polled"]
pub struct Server<T, S, Tm: Timer = NoTimer> {
    pub(super) io: Framed<T>,
    pub(super) framing_stats: Arc<FramingStats>,
    pub(super) reader: FrameReader,
    pub(super) readiness: ReadReadiness,
    pub(super) connection: Connection<S, Tm>,
    /// The client closed its write half.
    pub(super) read_closed: bool,
    /// A protocol error: replies are flushed, then it is returned.
    pub(super) failure: Option<FrameError>,
    /// Everything is written: the write half is being closed.
    pub(super) closing: bool,
    pub(super) finished: bool,
    /// The signal and this server's waker registration with it.
    pub(super) shutdown: Option<(Shutdown, Option<usize>)>,
    /// The connection's tracing span (empty without the feature).
    pub(super) trace: crate::trace::ConnTrace,
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
        // The connection is gone with the server future: a request stream
        // moved out of its handler ends with ConnectionLost instead of
        // waiting forever (a no-op once the server finished).
        self.connection.handlers.clear();
    }
}

impl<T, S, Tm: Timer> Server<T, S, Tm> {
    /// Handlers running right now.
    pub fn in_flight(&self) -> usize {
        self.connection.handlers.running
    }

    /// Requests waiting in the backlog for a free handler slot
    /// ([`WhenFull::Queue`]).
    pub fn backlogged(&self) -> usize {
        self.connection.handlers.queued
    }

    /// The framing's counters (a handle to keep before the server is
    /// spawned): with [`Framing::Cobs`](crate::framing::Framing::Cobs), how
    /// many corrupted frames were skipped. Always 0 with the length prefix.
    pub fn framing_stats(&self) -> Arc<FramingStats> {
        self.framing_stats.clone()
    }

    /// The capacities of the read and the write buffer, in bytes; for tests
    /// of memory retention.
    #[doc(hidden)]
    pub fn buffer_capacities(&self) -> (usize, usize) {
        (self.reader.capacity(), self.connection.writer.capacity())
    }
}

impl<T: Transport, S: Service, Tm: Timer> Future for Server<T, S, Tm> {
    type Output = Result<(), DriverError<T::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        let result = {
            let _entered = this.trace.enter();
            core::task::ready!(this.drive(cx))
        };
        this.finished = true;
        this.connection.handlers.clear();
        this.trace
            .ended(result.as_ref().err().map(|e| e as &dyn core::fmt::Display));
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
        self.connection.handlers.set_driver(cx.waker());
        self.watch_shutdown(cx);
        let mut frames = READ_BUDGET;
        let mut fills = FILL_BUDGET;
        for _ in 0..POLL_BUDGET {
            let connection = &mut self.connection;
            let (out, sent) = connection.writer.buffer_and_sent();
            let finished = connection
                .handlers
                .run_ready(out, sent, connection.max_frame);
            connection.touch(finished);
            connection.start_queued();

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
            let connection = &mut self.connection;
            if connection.expire_deadlines(cx) {
                return Poll::Ready(Err(DriverError::IdleTimeout));
            }
            connection.start_queued();
            let unsent = connection.writer.pending();
            let written = connection.writer.poll_write_all(&mut self.io, cx);
            let pending = connection.writer.pending();
            connection.touch(pending < unsent);
            // Streams that waited for room under the mark run again.
            connection.handlers.wake_waiting_for_room(pending);
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
            if read_waits && !self.connection.handlers.has_ready() {
                self.release_memory(read);
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Whether the connection is finished, once everything is written.
    fn done(&self, read: Read) -> bool {
        let connection = &self.connection;
        let quiet = connection.handlers.live() == 0;
        self.failure.is_some()
            || connection.forced
            || (self.read_closed && quiet)
            // Draining: close once the transport has nothing more to read
            // right now (what it had was read and answered).
            || (connection.draining && quiet && read == Read::Pending)
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
        self.connection.handlers.clear();
        Read::Stopped
    }

    /// Notices a triggered or forced shutdown, and keeps a waker registered
    /// until it is forced.
    fn watch_shutdown(&mut self, cx: &mut Context<'_>) {
        let Some((signal, key)) = &mut self.shutdown else {
            return;
        };
        if self.connection.forced {
            return;
        }
        let forced = signal.poll_until(cx, key, Shutdown::is_forced);
        if forced {
            self.connection.force();
        } else if !self.connection.draining && signal.is_triggered() {
            self.connection.drain();
        }
    }

    /// Whether reading may go on: see [`WhenFull`] and the write mark.
    fn may_read(&self) -> bool {
        let connection = &self.connection;
        if self.read_closed || self.failure.is_some() || connection.forced {
            return false;
        }
        if connection.writer.pending() > connection.write_mark {
            return false;
        }
        if connection.draining
            || connection.when_full == WhenFull::Reject
            || connection.handlers.queued == 0
        {
            return true;
        }
        // Backlogging: the next request must fit (cancels always pass) —
        // unless streams run: the credit, items and ends they wait for may
        // sit behind that request, so it is read and refused `Overloaded`
        // instead of blocking them (PROTOCOL.md R12).
        match self.reader.peek_kind() {
            Some((kind, len)) if kind == FrameKind::Request.to_byte() => {
                connection.handlers.streams > 0 || !connection.backlog_overflows(len)
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
                let body = frame.get(body_at..).unwrap_or_default();
                self.connection
                    .on_frame(header, body, frame.len())
                    .map_err(DriverError::Protocol)?;
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
                    self.connection.handlers.caller_closed();
                    return Ok(Read::Eof);
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// After a burst, gives buffer memory back once it is idle: the write
    /// buffer keeps at most [`WRITE_MARK`](super::WRITE_MARK) (not the
    /// connection's mark, which grows with `max_frame`: a large reply now
    /// and then must not pin its size on every idle connection). While
    /// streams run, a pause is not idleness: the next turn of items would
    /// regrow the buffer (a reallocation and fresh pages each time), so it
    /// is shrunk only when over twice that. The read
    /// buffer shrinks once the transport had nothing more and no frame is
    /// partly buffered — not while a large request arrives, which would
    /// move its bytes and grow the buffer again at every pause.
    fn release_memory(&mut self, read: Read) {
        let connection = &mut self.connection;
        let least = super::WRITE_MARK.min(connection.write_mark);
        let above = if connection.handlers.streams > 0 {
            least.saturating_mul(2)
        } else {
            least
        };
        connection.writer.shrink_idle(above, least);
        if read == Read::Pending && !self.reader.has_partial_frame() {
            self.reader.shrink();
        }
    }
}
