//! # courier-mem
//!
//! An in-memory transport for [courier]: a pair of connected endpoints, each
//! a bounded byte pipe in both directions. Frames written to one end pass
//! through courier's real encoder and are read back by its real decoder at
//! the other, so tests over it exercise the wire format. It is `no_std` +
//! `alloc`, needs no runtime, and works on any executor.
//!
//! - Writes beyond `capacity` buffered bytes return `Pending` until the peer
//!   reads (backpressure, bounded memory).
//! - Closing or dropping one end makes the other end's reads return end of
//!   stream once the buffered bytes are read, and its writes fail with
//!   [`MemError::Closed`].
//! - [`fault`] wraps any transport to inject faults deterministically:
//!   split and coalesced reads and writes, delays, stalls, and cuts after a
//!   number of bytes or frames.
//!
//! ```
//! use courier::Transport;
//! use core::task::{Context, Poll};
//!
//! let (mut a, mut b) = courier_mem::pair(16);
//! let waker = futures::task::noop_waker();
//! let mut cx = Context::from_waker(&waker);
//! assert!(matches!(a.poll_write(&mut cx, b"hello"), Poll::Ready(Ok(5))));
//! let mut buf = [0u8; 8];
//! assert!(matches!(b.poll_read(&mut cx, &mut buf), Poll::Ready(Ok(5))));
//! assert_eq!(&buf[..5], b"hello");
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::fmt;
use core::task::{Context, Poll, Waker};

use courier::{Transport, TransportError, TransportErrorKind};

pub mod fault;

/// Creates two connected endpoints; each direction buffers at most
/// `capacity` bytes (at least 1).
pub fn pair(capacity: usize) -> (MemTransport, MemTransport) {
    let a_to_b = Arc::new(Pipe::new(capacity.max(1)));
    let b_to_a = Arc::new(Pipe::new(capacity.max(1)));
    let a = MemTransport {
        rx: b_to_a.clone(),
        tx: a_to_b.clone(),
    };
    let b = MemTransport {
        rx: a_to_b,
        tx: b_to_a,
    };
    (a, b)
}

/// One end of an in-memory connection.
pub struct MemTransport {
    rx: Arc<Pipe>,
    tx: Arc<Pipe>,
}

impl fmt::Debug for MemTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemTransport").finish_non_exhaustive()
    }
}

/// The in-memory transport's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemError {
    /// The other end was dropped; nothing written can be read any more.
    Closed,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemError::Closed => f.write_str("in-memory peer closed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MemError {}

impl TransportError for MemError {
    fn kind(&self) -> TransportErrorKind {
        match self {
            MemError::Closed => TransportErrorKind::Closed,
        }
    }
}

impl MemTransport {
    /// Bytes written by the peer and not yet read by this end.
    pub fn readable(&self) -> usize {
        self.rx.state.lock_state().bytes.len()
    }
}

impl Transport for MemTransport {
    type Error = MemError;

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, MemError>> {
        let mut pipe = self.rx.state.lock_state();
        if pipe.bytes.is_empty() {
            if pipe.write_closed || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            register(&mut pipe.reader, cx.waker());
            return Poll::Pending;
        }
        let n = buf.len().min(pipe.bytes.len());
        let (front, back) = pipe.bytes.as_slices();
        let from_front = n.min(front.len());
        buf[..from_front].copy_from_slice(&front[..from_front]);
        buf[from_front..n].copy_from_slice(&back[..n - from_front]);
        pipe.bytes.drain(..n);
        let writer = pipe.writer.take();
        drop(pipe);
        if let Some(waker) = writer {
            waker.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, MemError>> {
        let mut pipe = self.tx.state.lock_state();
        if pipe.read_closed || pipe.write_closed {
            return Poll::Ready(Err(MemError::Closed));
        }
        let room = pipe.capacity - pipe.bytes.len();
        if room == 0 && !buf.is_empty() {
            register(&mut pipe.writer, cx.waker());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        pipe.bytes.extend(&buf[..n]);
        let reader = pipe.reader.take();
        drop(pipe);
        if let Some(waker) = reader {
            waker.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<Result<(), MemError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<Result<(), MemError>> {
        self.tx.close_write();
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        self.tx.close_write();
        let mut pipe = self.rx.state.lock_state();
        pipe.read_closed = true;
        let writer = pipe.writer.take();
        drop(pipe);
        if let Some(waker) = writer {
            waker.wake();
        }
    }
}

fn register(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

/// One direction of the connection.
struct Pipe {
    state: Lock<PipeState>,
}

struct PipeState {
    bytes: VecDeque<u8>,
    capacity: usize,
    write_closed: bool,
    read_closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn new(capacity: usize) -> Self {
        Pipe {
            state: Lock::new(PipeState {
                bytes: VecDeque::new(),
                capacity,
                write_closed: false,
                read_closed: false,
                reader: None,
                writer: None,
            }),
        }
    }

    fn close_write(&self) {
        let mut pipe = self.state.lock_state();
        pipe.write_closed = true;
        let reader = pipe.reader.take();
        drop(pipe);
        if let Some(waker) = reader {
            waker.wake();
        }
    }
}

#[cfg(feature = "std")]
type Lock<T> = std::sync::Mutex<T>;
#[cfg(not(feature = "std"))]
type Lock<T> = spin::Mutex<T>;

/// Locking that reads the same for both lock types.
trait LockState<T> {
    fn lock_state(&self) -> impl core::ops::DerefMut<Target = T>;
}

#[cfg(feature = "std")]
impl<T> LockState<T> for std::sync::Mutex<T> {
    fn lock_state(&self) -> impl core::ops::DerefMut<Target = T> {
        self.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(not(feature = "std"))]
impl<T> LockState<T> for spin::Mutex<T> {
    fn lock_state(&self) -> impl core::ops::DerefMut<Target = T> {
        self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;

    fn cx_poll<R>(f: impl FnOnce(&mut Context<'_>) -> R) -> R {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        f(&mut cx)
    }

    #[test]
    fn bounded_writes_wait_for_reads() {
        let (mut a, mut b) = pair(4);
        assert_eq!(
            cx_poll(|cx| a.poll_write(cx, b"abcdef")),
            Poll::Ready(Ok(4))
        );
        assert!(cx_poll(|cx| a.poll_write(cx, b"ef")).is_pending());
        let mut buf = [0u8; 3];
        assert_eq!(cx_poll(|cx| b.poll_read(cx, &mut buf)), Poll::Ready(Ok(3)));
        assert_eq!(&buf, b"abc");
        assert_eq!(cx_poll(|cx| a.poll_write(cx, b"ef")), Poll::Ready(Ok(2)));
        assert_eq!(b.readable(), 3);
    }

    #[test]
    fn close_gives_eof_after_buffered_bytes() {
        let (mut a, mut b) = pair(8);
        assert_eq!(cx_poll(|cx| a.poll_write(cx, b"hi")), Poll::Ready(Ok(2)));
        drop(a);
        let mut buf = [0u8; 8];
        assert_eq!(cx_poll(|cx| b.poll_read(cx, &mut buf)), Poll::Ready(Ok(2)));
        assert_eq!(cx_poll(|cx| b.poll_read(cx, &mut buf)), Poll::Ready(Ok(0)));
        assert_eq!(
            cx_poll(|cx| b.poll_write(cx, b"x")),
            Poll::Ready(Err(MemError::Closed))
        );
    }

    #[test]
    fn pending_read_is_woken_by_write() {
        let (mut a, mut b) = pair(8);
        struct Flag(std::sync::atomic::AtomicBool);
        impl alloc::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut buf = [0u8; 4];
        assert!(b.poll_read(&mut cx, &mut buf).is_pending());
        assert_eq!(cx_poll(|cx| a.poll_write(cx, b"x")), Poll::Ready(Ok(1)));
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
    }
}
