//! [`Streaming`]: the items a handler receives from its caller
//! (client-streaming and bidirectional methods).
//!
//! The server driver puts each item frame's body into the call's
//! [`Incoming`] buffer; the handler's `Streaming<T>` takes them in
//! batches, decodes them one by one and hands consumed credit back for the
//! driver to grant (PROTOCOL.md R10). A caller that sends faster than the
//! handler reads is stopped by credit after one window: the buffer never
//! holds more than the window.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use futures_util::Stream;
use serde::de::DeserializeOwned;

use crate::client::decode_exact;
use crate::error::{CallError, FrameError};
use crate::sync::Mutex;

/// The most items a stream's consumer lets the producer send ahead, unless
/// told otherwise ([`CallStream::with_credit`](crate::CallStream::with_credit),
/// `ServerBuilder::stream_credit`): the bound of its credit window.
///
/// With it the window reaches [`WINDOW_BYTES`] for items of 32 B and more;
/// smaller items stop at 8192 in flight. At 4096, 16 B items had ~64 KiB
/// in flight, too little to cover a wake-up across threads at millions of
/// items per second (BENCHMARKS.md, "Streams").
pub const DEFAULT_CREDIT: u32 = 8192;

/// The credit a consumer grants before it has seen an item.
const INITIAL_CREDIT: u32 = 16;

/// The bytes a consumer aims to let the producer send ahead: its window
/// holds about this much, in as many items as that takes (never more than
/// its credit bound, never fewer than 2).
pub const WINDOW_BYTES: u32 = 256 * 1024;

/// The bytes all of one client connection's response streams aim to have
/// in flight together: with more than 16 streams receiving, each aims at
/// its share instead of [`WINDOW_BYTES`] (still never fewer than 2 items).
/// Like HTTP/2's connection window, it keeps many streams of small items
/// from each holding a full window — memory the consumers touch once per
/// item, and which a stalled reader would keep.
pub const CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// The bytes each stream aims at when `streams` streams receive on one
/// connection.
pub(crate) fn stream_aim(streams: usize) -> u32 {
    let streams = u32::try_from(streams).unwrap_or(u32::MAX).max(1);
    WINDOW_BYTES.min(CONNECTION_WINDOW_BYTES / streams).max(1)
}

/// A stream consumer's credit window (PROTOCOL.md R10).
///
/// The number of items granted adapts to their size: about
/// [`WINDOW_BYTES`] of items in flight, so that small items are not held
/// up by a round trip per few hundred bytes and large ones do not fill the
/// memory — but never more than `max` items, the hard bound a slow
/// consumer costs (`max` × the largest item).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    max: u32,
    /// The bytes to aim at ([`WINDOW_BYTES`] unless set).
    aim: u32,
    /// Granted and not yet consumed (in flight, buffered or staged).
    outstanding: u32,
    /// A running average of the consumed items' sizes (0: none yet).
    average: u32,
}

impl Window {
    /// A window of at most `max` items and the credit to grant at once.
    pub(crate) fn open(max: u32) -> (Window, u32) {
        let max = max.max(1);
        let first = max.min(INITIAL_CREDIT);
        let window = Window {
            max,
            aim: WINDOW_BYTES,
            outstanding: first,
            average: 0,
        };
        (window, first)
    }

    /// The window's size in items for the items seen so far.
    pub(crate) fn target(&self) -> u32 {
        if self.average == 0 {
            return self.max.min(INITIAL_CREDIT);
        }
        (self.aim / self.average).clamp(self.max.min(2), self.max)
    }

    /// The bytes aimed at in flight.
    pub(crate) fn aim(&self) -> u32 {
        self.aim
    }

    /// Aims at `bytes` in flight from now on (at least 1).
    pub(crate) fn aim_at(&mut self, bytes: u32) {
        self.aim = bytes.max(1);
    }

    /// One item of `bytes` was consumed. The average rises slowly (a
    /// larger item narrows the window by an eighth of the difference) and
    /// falls fast (a smaller one halves the difference): one large item —
    /// a snapshot before a stream of small changes — does not keep the
    /// window at a few items for the next dozens, each of which would
    /// send credit while the producer's next item is on its way.
    pub(crate) fn consumed(&mut self, bytes: usize) {
        self.outstanding = self.outstanding.saturating_sub(1);
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        self.average = match self.average {
            0 => bytes,
            average if bytes < average => average - (average - bytes) / 2,
            average => ((u64::from(average) * 7 + u64::from(bytes)) / 8) as u32,
        }
        .max(1);
    }

    /// `items` items of `bytes` each were consumed: as many calls of
    /// [`consumed`](Self::consumed), but the average stops moving once it
    /// reached `bytes`, so a steady stream costs a few steps per batch.
    pub(crate) fn consumed_many(&mut self, items: u32, bytes: usize) {
        for done in 1..=items {
            let before = self.average;
            self.consumed(bytes);
            if self.average == before {
                let rest = items - done;
                self.outstanding = self.outstanding.saturating_sub(rest);
                return;
            }
        }
    }

    /// The credit to grant now: the room in the window, once it is more
    /// than half of it (so credit goes out in batches, not per item).
    pub(crate) fn due(&self) -> u32 {
        let target = self.target();
        let room = target.saturating_sub(self.outstanding);
        if room > 0 && room.saturating_mul(2) > target {
            room
        } else {
            0
        }
    }

    /// `grant` more items were granted.
    pub(crate) fn granted(&mut self, grant: u32) {
        self.outstanding = self.outstanding.saturating_add(grant);
    }
}

/// What a server-streaming method returns: any stream of items, boxed
/// (`Box::pin(stream)`). Boxed because a stream returned from a trait
/// method would otherwise borrow the service for its whole life.
pub type BoxStream<T> = Pin<alloc::boxed::Box<dyn Stream<Item = T> + Send + 'static>>;

/// What a call's receiving side shares with the driver.
pub(crate) struct Incoming {
    /// Items received, not yet taken: each a u32 LE length, then the body.
    items: Vec<u8>,
    /// How the item stream ended: `Ok` at the caller's end frame, `Err`
    /// when the call ended first (cancelled, expired, connection lost).
    end: Option<Result<(), CallError>>,
    /// The consumer's waker.
    waker: Option<Waker>,
    /// Items the caller may still send (granted, not yet received).
    credit_left: u32,
    /// Items consumed and not yet granted back.
    to_grant: u32,
    /// Wakes the driver to grant credit (the handler's own waker).
    grant_waker: Option<Waker>,
    /// The consumer's window, once the handler started (the first grant
    /// is counted in it).
    window: Option<Window>,
}

/// A handle on one call's [`Incoming`] buffer.
pub(crate) type IncomingRef = Arc<Mutex<Incoming>>;

impl Incoming {
    /// An empty buffer; no credit is granted until [`Incoming::open`].
    pub(crate) fn new() -> IncomingRef {
        Arc::new(Mutex::new(Incoming {
            items: Vec::new(),
            end: None,
            waker: None,
            credit_left: 0,
            to_grant: 0,
            grant_waker: None,
            window: None,
        }))
    }

    /// The handler starts: the caller gets its first credit from a window
    /// of at most `max` items (the returned grant, for the driver to send)
    /// and `waker` is the one that makes the driver grant more.
    pub(crate) fn open(&mut self, max: u32, waker: &Waker) -> u32 {
        let (window, first) = Window::open(max);
        self.window = Some(window);
        self.credit_left = first;
        self.grant_waker = Some(waker.clone());
        first
    }

    /// Stores an item that arrived; beyond the credit it is a protocol
    /// violation. Returns the consumer's waker.
    pub(crate) fn deliver(&mut self, body: &[u8]) -> Result<Option<Waker>, FrameError> {
        if self.end.is_some() {
            return Ok(None); // items after the end: ignored
        }
        self.credit_left = self
            .credit_left
            .checked_sub(1)
            .ok_or(FrameError::CreditExceeded)?;
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        self.items.extend_from_slice(&len.to_le_bytes());
        self.items.extend_from_slice(body);
        Ok(self.waker.take())
    }

    /// Ends the item stream (`Ok` for the caller's end frame). Only the
    /// first ending counts. Returns the consumer's waker.
    pub(crate) fn finish(&mut self, end: Result<(), CallError>) -> Option<Waker> {
        if self.end.is_none() {
            self.end = Some(end);
        }
        self.waker.take()
    }

    /// Credit to grant the caller now (what was consumed), counted as
    /// granted.
    pub(crate) fn take_grant(&mut self) -> u32 {
        let grant = core::mem::take(&mut self.to_grant);
        self.credit_left = self.credit_left.saturating_add(grant);
        if self.end.is_some() {
            0
        } else {
            grant
        }
    }
}

/// The items a handler receives from its caller: a [`Stream`] of
/// `Result<T, CallError>`.
///
/// It ends with `None` after the caller's last item (its end frame). If
/// the call ends first, the stream yields one error and then `None`:
/// [`CallError::Cancelled`] when the caller cancelled,
/// [`CallError::DeadlineExceeded`] when the deadline passed,
/// [`CallError::ConnectionLost`] when the connection ended,
/// [`CallError::Remote`] with `ShuttingDown` when the server shut down,
/// [`CallError::Closed`] when the handler finished first — which a handler
/// that moved its stream into another task sees; a handler running the
/// call itself is dropped instead. An item that does
/// not decode is `Some(Err(CallError::Decode))`, and the stream goes on.
///
/// Credit: the caller may send at most the server's stream window
/// (`ServerBuilder::stream_credit`) ahead of this consumer; consumed items
/// are granted back once more than half the window was consumed.
pub struct Streaming<T> {
    shared: IncomingRef,
    staged: Vec<u8>,
    staged_at: usize,
    /// Items consumed since the last look at the window, and their bytes.
    consumed: u32,
    consumed_bytes: usize,
    ended: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T> core::fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Streaming")
            .field("ended", &self.ended)
            .finish()
    }
}

impl<T> Streaming<T> {
    pub(crate) fn new(shared: IncomingRef) -> Self {
        Streaming {
            shared,
            staged: Vec::new(),
            staged_at: 0,
            consumed: 0,
            consumed_bytes: 0,
            ended: false,
            _item: PhantomData,
        }
    }

    fn next_staged(&mut self) -> Option<&[u8]> {
        let at = self.staged_at;
        let len = self.staged.get(at..at.checked_add(4)?)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = at + 4;
        let end = start.saturating_add(len).min(self.staged.len());
        self.staged_at = end;
        self.consumed = self.consumed.saturating_add(1);
        self.consumed_bytes = self.consumed_bytes.saturating_add(len);
        self.staged.get(start..end)
    }

    /// Counts the consumed items into the window and, when credit is due,
    /// hands it to the driver. Looks at the window (a lock) once per 16
    /// items or when the batch ran out.
    fn return_credit(&mut self, batch_done: bool) {
        if self.consumed == 0 || (self.consumed < 16 && !batch_done) {
            return;
        }
        let consumed = core::mem::take(&mut self.consumed);
        let bytes = core::mem::take(&mut self.consumed_bytes);
        let average = bytes / consumed as usize;
        let waker = self.shared.with(|incoming| {
            let window = incoming.window.as_mut()?;
            window.consumed_many(consumed, average);
            let due = window.due();
            if due == 0 {
                return None;
            }
            window.granted(due);
            incoming.to_grant = incoming.to_grant.saturating_add(due);
            incoming.grant_waker.clone()
        });
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T: DeserializeOwned> Stream for Streaming<T> {
    type Item = Result<T, CallError>;

    /// Invariant: `Pending` only after finding, under the lock, no item
    /// and no end, with the consumer's waker stored there.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if this.staged_at >= this.staged.len() {
            this.return_credit(true);
            this.staged.clear();
            this.staged_at = 0;
            let mut staged = core::mem::take(&mut this.staged);
            let waker = cx.waker().clone();
            let (end, unused) = this.shared.with(|incoming| {
                if !incoming.items.is_empty() {
                    core::mem::swap(&mut incoming.items, &mut staged);
                    return (None, Some(waker));
                }
                match incoming.end {
                    Some(end) => (Some(end), Some(waker)),
                    None => (None, incoming.waker.replace(waker)),
                }
            });
            drop(unused);
            this.staged = staged;
            if this.staged.is_empty() {
                return match end {
                    Some(Ok(())) => {
                        this.ended = true;
                        Poll::Ready(None)
                    }
                    Some(Err(error)) => {
                        this.ended = true;
                        Poll::Ready(Some(Err(error)))
                    }
                    None => Poll::Pending,
                };
            }
        }
        let item = this.next_staged().map(decode_exact::<T>);
        this.return_credit(false);
        Poll::Ready(item)
    }
}

impl<T> Unpin for Streaming<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consumes `sizes` like a stream does (granting what is due after
    /// each item); returns after which items (0-based) credit was granted.
    fn grants(
        window: &mut Window,
        sizes: impl IntoIterator<Item = usize>,
    ) -> alloc::vec::Vec<usize> {
        let mut at = alloc::vec::Vec::new();
        for (i, size) in sizes.into_iter().enumerate() {
            window.consumed(size);
            let due = window.due();
            if due > 0 {
                window.granted(due);
                at.push(i);
            }
        }
        at
    }

    /// After one large item (an 800 KB snapshot) small items open the
    /// window back to its bound within a few items, in a few grants —
    /// not one grant every few items for the next seventy.
    #[test]
    fn a_large_item_narrows_the_window_only_briefly() {
        let (mut window, _) = Window::open(DEFAULT_CREDIT);
        let sizes = core::iter::once(800_000).chain(core::iter::repeat_n(110, 200));
        let at = grants(&mut window, sizes);
        assert!(at.len() <= 8, "grants after items {at:?}");
        assert!(at.iter().all(|&i| i <= 20), "grants after items {at:?}");
        let target = window.target();
        assert!(
            target > WINDOW_BYTES / 112 && target <= WINDOW_BYTES / 110,
            "{target}"
        );
    }

    /// `consumed_many` moves the window exactly as one `consumed` per
    /// item, also when the average settles part way (or at once).
    #[test]
    fn consumed_many_equals_one_consumed_per_item() {
        for (start, size, items) in [
            (0, 100, 40),
            (5000, 100, 3),
            (100, 5000, 40),
            (100, 100, 7),
            (7, 9, 0),
        ] {
            let (mut one, _) = Window::open(DEFAULT_CREDIT);
            let (mut many, _) = Window::open(DEFAULT_CREDIT);
            for w in [&mut one, &mut many] {
                w.granted(100);
                if start > 0 {
                    w.consumed(start);
                }
            }
            for _ in 0..items {
                one.consumed(size);
            }
            many.consumed_many(items, size);
            assert_eq!(
                (one.outstanding, one.average),
                (many.outstanding, many.average),
                "{start} {size} {items}"
            );
        }
    }

    /// Growing items narrow the window slowly but surely: at a steady
    /// size the window holds about `WINDOW_BYTES`, within the bound.
    #[test]
    fn the_window_follows_the_item_size_within_its_bound() {
        let (mut window, first) = Window::open(DEFAULT_CREDIT);
        assert_eq!(first, INITIAL_CREDIT);
        grants(&mut window, core::iter::repeat_n(100, 100));
        assert_eq!(window.target(), (WINDOW_BYTES / 100).min(DEFAULT_CREDIT));
        grants(&mut window, core::iter::repeat_n(64 * 1024, 200));
        assert_eq!(window.target(), 4);
        let (mut bounded, _) = Window::open(3);
        grants(&mut bounded, core::iter::repeat_n(1, 50));
        assert_eq!(bounded.target(), 3, "never above the bound");
        grants(&mut bounded, core::iter::repeat_n(10 << 20, 50));
        assert_eq!(bounded.target(), 2, "never below 2 items");
    }

    /// Up to 16 streams each aim at a full window; beyond, at their share
    /// of the connection's — never below one byte, whatever the count.
    #[test]
    fn streams_share_the_connection_window_beyond_sixteen() {
        let share = CONNECTION_WINDOW_BYTES / WINDOW_BYTES;
        assert_eq!(share, 16);
        for streams in [0, 1, 15, 16] {
            assert_eq!(stream_aim(streams), WINDOW_BYTES, "{streams}");
        }
        assert_eq!(stream_aim(17), CONNECTION_WINDOW_BYTES / 17);
        assert_eq!(stream_aim(64), 64 * 1024);
        assert_eq!(stream_aim(usize::MAX), 1);
    }

    /// A narrower aim narrows the window in items (within the bound and
    /// never below 2), and a wider one opens it again.
    #[test]
    fn the_aim_sets_the_window_in_items() {
        let (mut window, _) = Window::open(DEFAULT_CREDIT);
        grants(&mut window, core::iter::repeat_n(16, 100));
        assert_eq!(window.target(), DEFAULT_CREDIT, "16 B items: the bound");
        window.aim_at(stream_aim(64));
        assert_eq!(window.target(), 4096);
        window.aim_at(stream_aim(usize::MAX));
        assert_eq!(window.target(), 2);
        window.aim_at(0);
        assert_eq!(window.target(), 2);
        window.aim_at(stream_aim(1));
        assert_eq!(window.target(), DEFAULT_CREDIT);
    }
}
