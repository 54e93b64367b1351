//! Fault injection: a [`Transport`] wrapper that misbehaves on purpose,
//! deterministically.
//!
//! [`Faults`] describes what goes wrong; [`Faults::wrap`] puts it around any
//! transport (usually one end of [`pair`](crate::pair)) and returns the
//! wrapped transport and a [`FaultHandle`] to steer it from the test:
//!
//! - **split** reads and writes into odd sizes ([`Faults::read_chunks`],
//!   [`Faults::write_chunks`]): each call moves at most the next size of a
//!   [`Pattern`] — fixed, cycling, or a seeded pseudo-random sequence;
//! - **coalesce** writes ([`Faults::coalesce_writes`]): bytes are held back
//!   until enough are buffered or the driver flushes, so one write of the
//!   inner transport carries pieces of several driver writes;
//! - **delay** reads and writes ([`Faults::delay_reads`],
//!   [`Faults::delay_writes`]): before each operation the wrapper returns
//!   `Pending` the next number of times of a pattern, waking its own task each
//!   time, so every "not ready yet" path of a driver runs without a clock;
//! - **cut** the connection after a number of bytes or frames in either
//!   direction, or at once with [`FaultHandle::cut`]: the inner transport is
//!   dropped (so the peer sees end of stream), and from then on this end's
//!   reads see end of stream or a reset and its writes fail (see
//!   [`CutKind`]);
//! - **stall** reads or writes ([`FaultHandle::stall_reads`],
//!   [`FaultHandle::stall_writes`]): `Pending` until released, like a peer
//!   that stops reading or a link that stops moving bytes.
//!
//! Nothing depends on the wall clock or on global randomness: a test with the
//! same [`Faults`] behaves the same way on every run. Frames are counted by
//! following the length prefixes of courier's framing in the byte stream, so
//! "cut after 3 frames" ends the stream exactly after the third frame.
//!
//! ```
//! use courier::Transport;
//! use courier_mem::fault::{Faults, Pattern};
//! use core::task::{Context, Poll};
//!
//! let (a, mut b) = courier_mem::pair(64);
//! let (mut a, handle) = Faults::new()
//!     .write_chunks(Pattern::Fixed(3))
//!     .cut_after_written_bytes(5)
//!     .wrap(a);
//! let waker = futures::task::noop_waker();
//! let mut cx = Context::from_waker(&waker);
//! // At most 3 bytes per write, and only 5 bytes in all.
//! assert!(matches!(a.poll_write(&mut cx, b"hello world"), Poll::Ready(Ok(3))));
//! assert!(matches!(a.poll_write(&mut cx, b"lo world"), Poll::Ready(Ok(2))));
//! assert!(handle.is_cut());
//! assert!(matches!(a.poll_write(&mut cx, b"!"), Poll::Ready(Err(_))));
//! // The peer gets the 5 bytes, then end of stream.
//! let mut buf = [0u8; 16];
//! assert!(matches!(b.poll_read(&mut cx, &mut buf), Poll::Ready(Ok(5))));
//! assert!(matches!(b.poll_read(&mut cx, &mut buf), Poll::Ready(Ok(0))));
//! ```

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};

use courier::framing::LEN_PREFIX;
use courier::{Transport, TransportError, TransportErrorKind};

use crate::{register, Lock, LockState};

/// A deterministic sequence of sizes or counts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pattern {
    /// The same value every time.
    Fixed(usize),
    /// These values in turn, from the start again after the last (an empty
    /// list is 0 every time).
    Cycle(Vec<usize>),
    /// Pseudo-random values in `min..=max` from a fixed seed (splitmix64), so
    /// a failing seed reproduces exactly.
    Seeded {
        /// The seed.
        seed: u64,
        /// The smallest value.
        min: usize,
        /// The largest value.
        max: usize,
    },
}

impl Pattern {
    /// Seeded values in `min..=max`.
    pub fn seeded(seed: u64, min: usize, max: usize) -> Self {
        Pattern::Seeded {
            seed,
            min: min.min(max),
            max: min.max(max),
        }
    }
}

/// A [`Pattern`] being read off.
#[derive(Debug)]
struct Sequence {
    pattern: Pattern,
    /// The cycle position, or the generator state.
    state: u64,
}

impl Sequence {
    fn new(pattern: Pattern) -> Self {
        let state = match pattern {
            Pattern::Seeded { seed, .. } => seed,
            _ => 0,
        };
        Sequence { pattern, state }
    }

    fn next_value(&mut self) -> usize {
        match &self.pattern {
            Pattern::Fixed(n) => *n,
            Pattern::Cycle(values) if values.is_empty() => 0,
            Pattern::Cycle(values) => {
                let value = values[self.state as usize % values.len()];
                self.state = self.state.wrapping_add(1);
                value
            }
            Pattern::Seeded { min, max, .. } => {
                let span = (max - min) as u64 + 1;
                let random = splitmix64(&mut self.state);
                // `span` is 0 only when the range covers all of u64.
                let offset = random.checked_rem(span).unwrap_or(random);
                min + offset as usize
            }
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How a cut connection looks to the end that was cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CutKind {
    /// Reads return end of stream; writes fail with [`FaultError::Closed`]
    /// (an orderly close by the peer).
    #[default]
    Eof,
    /// Reads and writes fail with [`FaultError::Reset`] (a broken link).
    Reset,
}

/// The error of a [`Faulty`] transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultError<E> {
    /// The inner transport failed.
    Inner(E),
    /// The connection was cut ([`CutKind::Eof`]) and this was a write.
    Closed,
    /// The connection was cut ([`CutKind::Reset`]).
    Reset,
}

impl<E: fmt::Display> fmt::Display for FaultError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultError::Inner(e) => e.fmt(f),
            FaultError::Closed => f.write_str("connection cut by fault injection"),
            FaultError::Reset => f.write_str("connection reset by fault injection"),
        }
    }
}

#[cfg(feature = "std")]
impl<E: fmt::Debug + fmt::Display> std::error::Error for FaultError<E> {}

impl<E: TransportError> TransportError for FaultError<E> {
    fn kind(&self) -> TransportErrorKind {
        match self {
            FaultError::Inner(e) => e.kind(),
            FaultError::Closed => TransportErrorKind::Closed,
            FaultError::Reset => TransportErrorKind::Reset,
        }
    }

    #[cfg(feature = "std")]
    fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            FaultError::Inner(e) => e.io_kind(),
            FaultError::Closed | FaultError::Reset => None,
        }
    }
}

/// What goes wrong, and when. Build it, then [`wrap`](Faults::wrap) a
/// transport with it. The default injects nothing.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct Faults {
    read_chunks: Option<Pattern>,
    write_chunks: Option<Pattern>,
    read_delay: Option<Pattern>,
    write_delay: Option<Pattern>,
    coalesce_writes: Option<usize>,
    cut_after_read_bytes: Option<usize>,
    cut_after_written_bytes: Option<usize>,
    cut_after_read_frames: Option<usize>,
    cut_after_written_frames: Option<usize>,
    cut_kind: CutKind,
}

impl Faults {
    /// No faults yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each read returns at most the next size of `sizes` bytes (a size of
    /// 0 counts as 1).
    pub fn read_chunks(mut self, sizes: Pattern) -> Self {
        self.read_chunks = Some(sizes);
        self
    }

    /// Each write takes at most the next size of `sizes` bytes (a size of 0
    /// counts as 1).
    pub fn write_chunks(mut self, sizes: Pattern) -> Self {
        self.write_chunks = Some(sizes);
        self
    }

    /// Before each read, returns `Pending` the next count of `counts` times,
    /// waking the task each time.
    pub fn delay_reads(mut self, counts: Pattern) -> Self {
        self.read_delay = Some(counts);
        self
    }

    /// Before each write, returns `Pending` the next count of `counts`
    /// times, waking the task each time.
    pub fn delay_writes(mut self, counts: Pattern) -> Self {
        self.write_delay = Some(counts);
        self
    }

    /// Holds written bytes back until `bytes` are buffered or the writer
    /// flushes or closes, then passes them on in one write (at least 1).
    pub fn coalesce_writes(mut self, bytes: usize) -> Self {
        self.coalesce_writes = Some(bytes.max(1));
        self
    }

    /// Cuts the connection once `bytes` bytes were read.
    pub fn cut_after_read_bytes(mut self, bytes: usize) -> Self {
        self.cut_after_read_bytes = Some(bytes);
        self
    }

    /// Cuts the connection once `bytes` bytes were written.
    pub fn cut_after_written_bytes(mut self, bytes: usize) -> Self {
        self.cut_after_written_bytes = Some(bytes);
        self
    }

    /// Cuts the connection right after the `frames`-th complete frame was
    /// read (bytes after it in the same read are lost, as on a real cut).
    pub fn cut_after_read_frames(mut self, frames: usize) -> Self {
        self.cut_after_read_frames = Some(frames);
        self
    }

    /// Cuts the connection right after the `frames`-th complete frame was
    /// written: the peer receives exactly that many frames.
    pub fn cut_after_written_frames(mut self, frames: usize) -> Self {
        self.cut_after_written_frames = Some(frames);
        self
    }

    /// How the cut looks to this end (default [`CutKind::Eof`]).
    pub fn cut_kind(mut self, kind: CutKind) -> Self {
        self.cut_kind = kind;
        self
    }

    /// Wraps `inner`; the handle steers and observes the wrapper.
    pub fn wrap<T: Transport>(self, inner: T) -> (Faulty<T>, FaultHandle) {
        let control = Arc::new(Control::default());
        let handle = FaultHandle {
            control: control.clone(),
        };
        let faulty = Faulty {
            inner: Some(inner),
            control,
            read: Direction::new(
                self.read_chunks,
                self.read_delay,
                self.cut_after_read_bytes,
                self.cut_after_read_frames,
            ),
            write: Direction::new(
                self.write_chunks,
                self.write_delay,
                self.cut_after_written_bytes,
                self.cut_after_written_frames,
            ),
            coalesce: self.coalesce_writes,
            held: Vec::new(),
            cut_kind: self.cut_kind,
        };
        (faulty, handle)
    }
}

/// State shared between a [`Faulty`] transport and its [`FaultHandle`].
#[derive(Default)]
struct Control {
    cut: AtomicBool,
    reads_stalled: AtomicBool,
    writes_stalled: AtomicBool,
    bytes_read: AtomicUsize,
    bytes_written: AtomicUsize,
    frames_read: AtomicUsize,
    frames_written: AtomicUsize,
    /// The tasks last seen waiting on a read and on a write.
    reader: Lock<Option<Waker>>,
    writer: Lock<Option<Waker>>,
}

impl Control {
    fn wake(slot: &Lock<Option<Waker>>) {
        let waker = slot.lock_state().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Steers and observes a [`Faulty`] transport from outside; cheap to clone.
#[derive(Clone)]
pub struct FaultHandle {
    control: Arc<Control>,
}

impl fmt::Debug for FaultHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultHandle")
            .field("cut", &self.is_cut())
            .field("bytes_read", &self.bytes_read())
            .field("bytes_written", &self.bytes_written())
            .finish_non_exhaustive()
    }
}

impl FaultHandle {
    /// Cuts the connection now (see [`CutKind`]); the wrapper's waiting
    /// tasks are woken to see it.
    pub fn cut(&self) {
        self.control.cut.store(true, Ordering::Release);
        Control::wake(&self.control.reader);
        Control::wake(&self.control.writer);
    }

    /// Whether the connection was cut (by a limit or by [`cut`](Self::cut)).
    pub fn is_cut(&self) -> bool {
        self.control.cut.load(Ordering::Acquire)
    }

    /// Makes reads return `Pending` until [`release_reads`](Self::release_reads).
    pub fn stall_reads(&self) {
        self.control.reads_stalled.store(true, Ordering::Release);
    }

    /// Lets stalled reads go on and wakes the reader.
    pub fn release_reads(&self) {
        self.control.reads_stalled.store(false, Ordering::Release);
        Control::wake(&self.control.reader);
    }

    /// Makes writes (and flushes) return `Pending` until
    /// [`release_writes`](Self::release_writes).
    pub fn stall_writes(&self) {
        self.control.writes_stalled.store(true, Ordering::Release);
    }

    /// Lets stalled writes go on and wakes the writer.
    pub fn release_writes(&self) {
        self.control.writes_stalled.store(false, Ordering::Release);
        Control::wake(&self.control.writer);
    }

    /// Bytes read through the wrapper so far.
    pub fn bytes_read(&self) -> usize {
        self.control.bytes_read.load(Ordering::Acquire)
    }

    /// Bytes written through the wrapper so far (accepted from the caller).
    pub fn bytes_written(&self) -> usize {
        self.control.bytes_written.load(Ordering::Acquire)
    }

    /// Complete frames read so far.
    pub fn frames_read(&self) -> usize {
        self.control.frames_read.load(Ordering::Acquire)
    }

    /// Complete frames written so far.
    pub fn frames_written(&self) -> usize {
        self.control.frames_written.load(Ordering::Acquire)
    }
}

/// Follows the length prefixes of a byte stream to count frames.
#[derive(Clone, Copy, Debug, Default)]
struct FrameCounter {
    prefix: [u8; LEN_PREFIX],
    have: usize,
    /// Body bytes left of the current frame (after its prefix).
    remaining: usize,
}

impl FrameCounter {
    /// Consumes bytes of `data` until it ends or `stop` more frames are
    /// complete. Returns the bytes consumed and the frames completed.
    fn advance(&mut self, data: &[u8], stop: usize) -> (usize, usize) {
        let mut at = 0;
        let mut frames = 0;
        while at < data.len() && frames < stop {
            if self.have < LEN_PREFIX {
                self.prefix[self.have] = data[at];
                self.have += 1;
                at += 1;
                if self.have == LEN_PREFIX {
                    self.remaining = u32::from_le_bytes(self.prefix) as usize;
                }
            } else {
                let take = self.remaining.min(data.len() - at);
                self.remaining -= take;
                at += take;
            }
            if self.have == LEN_PREFIX && self.remaining == 0 {
                self.have = 0;
                frames += 1;
            }
        }
        (at, frames)
    }
}

/// The faults and counters of one direction.
#[derive(Debug)]
struct Direction {
    chunks: Option<Sequence>,
    delay: Option<Sequence>,
    /// `Pending` polls still owed before the current operation.
    owed: Option<usize>,
    bytes_left: Option<usize>,
    frames_left: Option<usize>,
    counter: FrameCounter,
}

impl Direction {
    fn new(
        chunks: Option<Pattern>,
        delay: Option<Pattern>,
        bytes: Option<usize>,
        frames: Option<usize>,
    ) -> Self {
        Direction {
            chunks: chunks.map(Sequence::new),
            delay: delay.map(Sequence::new),
            owed: None,
            bytes_left: bytes,
            frames_left: frames,
            counter: FrameCounter::default(),
        }
    }

    /// Whether a limit was used up.
    fn exhausted(&self) -> bool {
        self.bytes_left == Some(0) || self.frames_left == Some(0)
    }

    /// Returns `Pending` (waking the task) while the current operation is
    /// delayed.
    fn poll_delay(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(delay) = &mut self.delay else {
            return Poll::Ready(());
        };
        let owed = self.owed.get_or_insert_with(|| delay.next_value());
        if *owed == 0 {
            return Poll::Ready(());
        }
        *owed -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The operation completed: the next one draws a new delay.
    fn done(&mut self) {
        self.owed = None;
    }

    /// How many of `len` bytes the next operation may move.
    fn cap(&mut self, len: usize) -> usize {
        let mut cap = len;
        if let Some(chunks) = &mut self.chunks {
            cap = cap.min(chunks.next_value().max(1));
        }
        if let Some(left) = self.bytes_left {
            cap = cap.min(left);
        }
        cap
    }

    /// Counts `data` as moved; returns how much of it lies before the cut
    /// point and whether the cut point was reached.
    fn account(&mut self, data: &[u8], moved: &AtomicUsize, frames: &AtomicUsize) -> usize {
        let stop = self.frames_left.unwrap_or(usize::MAX);
        let (used, done) = self.counter.advance(data, stop);
        if let Some(left) = &mut self.frames_left {
            *left -= done;
        }
        if let Some(left) = &mut self.bytes_left {
            *left -= used.min(*left);
        }
        moved.fetch_add(used, Ordering::AcqRel);
        frames.fetch_add(done, Ordering::AcqRel);
        used
    }

    /// How much of `data` may be written before the frame limit is reached.
    fn frame_cap(&self, data: &[u8]) -> usize {
        match self.frames_left {
            Some(left) => self.counter.clone().advance(data, left).0,
            None => data.len(),
        }
    }
}

/// A transport with faults injected; made by [`Faults::wrap`].
pub struct Faulty<T> {
    /// `None` once the connection was cut.
    inner: Option<T>,
    control: Arc<Control>,
    read: Direction,
    write: Direction,
    coalesce: Option<usize>,
    /// Written bytes held back by write coalescing.
    held: Vec<u8>,
    cut_kind: CutKind,
}

impl<T> fmt::Debug for Faulty<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faulty")
            .field("cut", &self.inner.is_none())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Faulty<T> {
    /// The wrapped transport, unless the connection was cut.
    pub fn get_ref(&self) -> Option<&T> {
        self.inner.as_ref()
    }

    /// Drops the inner transport if a cut is due; returns whether it is cut.
    fn check_cut(&mut self) -> bool {
        if self.read.exhausted() || self.write.exhausted() {
            self.control.cut.store(true, Ordering::Release);
        }
        if self.control.cut.load(Ordering::Acquire) {
            self.inner = None;
            self.held = Vec::new();
            return true;
        }
        false
    }

    fn cut_read(&self) -> Poll<Result<usize, FaultError<T::Error>>> {
        Poll::Ready(match self.cut_kind {
            CutKind::Eof => Ok(0),
            CutKind::Reset => Err(FaultError::Reset),
        })
    }

    fn cut_error(&self) -> FaultError<T::Error> {
        match self.cut_kind {
            CutKind::Eof => FaultError::Closed,
            CutKind::Reset => FaultError::Reset,
        }
    }

    /// Waits on a stall flag, registering `cx` to be woken on release or cut.
    fn stalled(&self, which: &AtomicBool, slot: &Lock<Option<Waker>>, cx: &Context<'_>) -> bool {
        if !which.load(Ordering::Acquire) {
            return false;
        }
        register(&mut slot.lock_state(), cx.waker());
        // Released or cut between the check and the registration?
        which.load(Ordering::Acquire) && !self.control.cut.load(Ordering::Acquire)
    }

    /// Passes held-back bytes on to the inner transport.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FaultError<T::Error>>> {
        while !self.held.is_empty() {
            let Some(inner) = &mut self.inner else {
                return Poll::Ready(Err(self.cut_error()));
            };
            match inner.poll_write(cx, &self.held) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(self.cut_error())),
                Poll::Ready(Ok(n)) => {
                    self.held.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(FaultError::Inner(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn remember_writer(&self, cx: &Context<'_>) {
        register(&mut self.control.writer.lock_state(), cx.waker());
    }

    fn remember_reader(&self, cx: &Context<'_>) {
        register(&mut self.control.reader.lock_state(), cx.waker());
    }
}

impl<T: Transport> Transport for Faulty<T> {
    type Error = FaultError<T::Error>;

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Self::Error>> {
        if self.check_cut() {
            return self.cut_read();
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.stalled(&self.control.reads_stalled, &self.control.reader, cx) {
            return Poll::Pending;
        }
        core::task::ready!(self.read.poll_delay(cx));
        let cap = self.read.cap(buf.len());
        let inner = self.inner.as_mut().expect("checked above");
        let n = match inner.poll_read(cx, &mut buf[..cap]) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => {
                self.read.done();
                return Poll::Ready(Err(FaultError::Inner(e)));
            }
            Poll::Pending => {
                self.remember_reader(cx);
                // A cut from the handle may have raced the registration.
                if self.control.cut.load(Ordering::Acquire) {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        };
        self.read.done();
        let control = &*self.control;
        let used = self
            .read
            .account(&buf[..n], &control.bytes_read, &control.frames_read);
        // Bytes past a cut point are lost with the connection.
        self.check_cut();
        Poll::Ready(Ok(used))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, Self::Error>> {
        if self.check_cut() {
            return Poll::Ready(Err(self.cut_error()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.stalled(&self.control.writes_stalled, &self.control.writer, cx) {
            return Poll::Pending;
        }
        core::task::ready!(self.write.poll_delay(cx));
        let cap = self.write.cap(buf.len());
        let cap = self.write.frame_cap(&buf[..cap]);
        let n = match self.coalesce {
            Some(limit) => {
                if self.held.len() >= limit {
                    match self.poll_drain(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => {
                            self.write.done();
                            return Poll::Ready(Err(e));
                        }
                        Poll::Pending => {
                            self.remember_writer(cx);
                            return Poll::Pending;
                        }
                    }
                }
                let n = cap.min(limit - self.held.len());
                self.held.extend_from_slice(&buf[..n]);
                if self.held.len() >= limit {
                    // Best effort now; the next write or flush finishes it.
                    if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
                        self.write.done();
                        return Poll::Ready(Err(e));
                    }
                }
                n
            }
            None => {
                let inner = self.inner.as_mut().expect("checked above");
                match inner.poll_write(cx, &buf[..cap]) {
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => {
                        self.write.done();
                        return Poll::Ready(Err(FaultError::Inner(e)));
                    }
                    Poll::Pending => {
                        self.remember_writer(cx);
                        if self.control.cut.load(Ordering::Acquire) {
                            cx.waker().wake_by_ref();
                        }
                        return Poll::Pending;
                    }
                }
            }
        };
        self.write.done();
        let control = &*self.control;
        self.write
            .account(&buf[..n], &control.bytes_written, &control.frames_written);
        if self.write.exhausted() {
            // Bytes held back before the cut point still reach the peer.
            let _ = self.poll_drain(cx);
            self.check_cut();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.check_cut() {
            return Poll::Ready(Err(self.cut_error()));
        }
        if self.stalled(&self.control.writes_stalled, &self.control.writer, cx) {
            return Poll::Pending;
        }
        if self.poll_drain(cx)?.is_pending() {
            self.remember_writer(cx);
            return Poll::Pending;
        }
        let inner = self.inner.as_mut().expect("checked above");
        inner.poll_flush(cx).map_err(FaultError::Inner)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.check_cut() {
            return Poll::Ready(Ok(()));
        }
        if self.poll_drain(cx)?.is_pending() {
            self.remember_writer(cx);
            return Poll::Pending;
        }
        let inner = self.inner.as_mut().expect("checked above");
        inner.poll_close(cx).map_err(FaultError::Inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pair;
    use futures::task::noop_waker;

    fn cx_poll<R>(f: impl FnOnce(&mut Context<'_>) -> R) -> R {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        f(&mut cx)
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn patterns_are_deterministic() {
        let mut a = Sequence::new(Pattern::seeded(7, 1, 5));
        let mut b = Sequence::new(Pattern::seeded(7, 1, 5));
        let xs: Vec<usize> = (0..64).map(|_| a.next_value()).collect();
        let ys: Vec<usize> = (0..64).map(|_| b.next_value()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (1..=5).contains(x)));
        assert!(xs.iter().any(|&x| x != xs[0]), "{xs:?}");
        let mut c = Sequence::new(Pattern::Cycle(alloc::vec![2, 3]));
        assert_eq!([c.next_value(), c.next_value(), c.next_value()], [2, 3, 2]);
    }

    #[test]
    fn reads_are_split() {
        let (mut a, b) = pair(64);
        let (mut b, _) = Faults::new()
            .read_chunks(Pattern::Cycle(alloc::vec![1, 3]))
            .wrap(b);
        assert_eq!(
            cx_poll(|cx| a.poll_write(cx, b"abcdef")),
            Poll::Ready(Ok(6))
        );
        let mut buf = [0u8; 16];
        assert_eq!(cx_poll(|cx| b.poll_read(cx, &mut buf)), Poll::Ready(Ok(1)));
        assert_eq!(cx_poll(|cx| b.poll_read(cx, &mut buf)), Poll::Ready(Ok(3)));
        assert_eq!(&buf[..3], b"bcd");
    }

    #[test]
    fn delays_return_pending_then_proceed() {
        let (a, b) = pair(64);
        let (mut a, _) = Faults::new().delay_writes(Pattern::Fixed(2)).wrap(a);
        assert!(cx_poll(|cx| a.poll_write(cx, b"xy")).is_pending());
        assert!(cx_poll(|cx| a.poll_write(cx, b"xy")).is_pending());
        assert_eq!(cx_poll(|cx| a.poll_write(cx, b"xy")), Poll::Ready(Ok(2)));
        assert!(cx_poll(|cx| a.poll_write(cx, b"z")).is_pending());
        assert_eq!(b.readable(), 2);
    }

    #[test]
    fn coalesced_writes_wait_for_flush() {
        let (a, b) = pair(64);
        let (mut a, _) = Faults::new().coalesce_writes(8).wrap(a);
        assert_eq!(cx_poll(|cx| a.poll_write(cx, b"abc")), Poll::Ready(Ok(3)));
        assert_eq!(cx_poll(|cx| a.poll_write(cx, b"de")), Poll::Ready(Ok(2)));
        assert_eq!(b.readable(), 0);
        assert_eq!(cx_poll(|cx| a.poll_flush(cx)), Poll::Ready(Ok(())));
        assert_eq!(b.readable(), 5);
        assert_eq!(
            cx_poll(|cx| a.poll_write(cx, b"0123456789")),
            Poll::Ready(Ok(8))
        );
        assert_eq!(b.readable(), 13);
    }

    #[test]
    fn cut_after_written_frames_delivers_exactly_those() {
        let (a, mut b) = pair(256);
        let (mut a, handle) = Faults::new().cut_after_written_frames(2).wrap(a);
        let mut stream = frame(b"one");
        stream.extend(frame(b""));
        stream.extend(frame(b"three"));
        assert_eq!(cx_poll(|cx| a.poll_write(cx, &stream)), Poll::Ready(Ok(11)));
        assert!(handle.is_cut());
        assert_eq!(handle.frames_written(), 2);
        assert_eq!(
            cx_poll(|cx| a.poll_write(cx, b"x")),
            Poll::Ready(Err(FaultError::Closed))
        );
        let mut buf = [0u8; 64];
        assert_eq!(cx_poll(|cx| b.poll_read(cx, &mut buf)), Poll::Ready(Ok(11)));
        assert_eq!(&buf[..11], &stream[..11]);
        assert_eq!(cx_poll(|cx| b.poll_read(cx, &mut buf)), Poll::Ready(Ok(0)));
    }

    #[test]
    fn cut_after_read_frames_with_reset() {
        let (mut a, b) = pair(256);
        let (mut b, handle) = Faults::new()
            .cut_after_read_frames(1)
            .cut_kind(CutKind::Reset)
            .wrap(b);
        let mut stream = frame(b"ab");
        stream.extend(frame(b"cd"));
        assert_eq!(cx_poll(|cx| a.poll_write(cx, &stream)), Poll::Ready(Ok(12)));
        let mut buf = [0u8; 64];
        assert_eq!(cx_poll(|cx| b.poll_read(cx, &mut buf)), Poll::Ready(Ok(6)));
        assert_eq!(handle.frames_read(), 1);
        assert_eq!(
            cx_poll(|cx| b.poll_read(cx, &mut buf)),
            Poll::Ready(Err(FaultError::Reset))
        );
        // The peer sees the connection gone.
        assert_eq!(
            cx_poll(|cx| a.poll_write(cx, b"x")),
            Poll::Ready(Err(crate::MemError::Closed))
        );
    }

    #[test]
    fn stalls_hold_until_released() {
        let (mut a, b) = pair(64);
        let (mut b, handle) = Faults::new().wrap(b);
        assert_eq!(cx_poll(|cx| a.poll_write(cx, b"hi")), Poll::Ready(Ok(2)));
        handle.stall_reads();
        let mut buf = [0u8; 8];
        assert!(cx_poll(|cx| b.poll_read(cx, &mut buf)).is_pending());
        handle.release_reads();
        assert_eq!(cx_poll(|cx| b.poll_read(cx, &mut buf)), Poll::Ready(Ok(2)));
        handle.cut();
        assert_eq!(cx_poll(|cx| b.poll_read(cx, &mut buf)), Poll::Ready(Ok(0)));
    }
}
