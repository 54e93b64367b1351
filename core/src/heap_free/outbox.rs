//! [`Outbox`]: notifications a device pushes to its peer, from any task or
//! interrupt handler, without an allocator.

use core::task::{Context, Poll, Waker};

use serde::Serialize;

use crate::framing::LEN_PREFIX;
use crate::sync::Mutex;
use crate::wire::compact::HeaderBytes;
use crate::wire::MethodKey;

/// Why [`Outbox::notify`] did not queue a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboxError {
    /// The outbox holds too many unsent frames for this one now; it may
    /// fit once the server has written some out.
    Full,
    /// The frame is larger than the whole outbox, or the arguments could
    /// not be serialized: it can never be sent.
    TooLarge,
}

impl core::fmt::Display for OutboxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            OutboxError::Full => "outbox full",
            OutboxError::TooLarge => "notification larger than the outbox",
        })
    }
}

struct State<const N: usize> {
    buf: [u8; N],
    /// Bytes of whole frames in `buf`, oldest first.
    len: usize,
    /// The server waiting for a frame.
    waker: Option<Waker>,
}

/// A queue of `N` bytes of encoded notify frames (kind 7, PROTOCOL.md
/// 3.10) that a heap-free server writes to its peer between replies.
///
/// [`notify`](Outbox::notify) may be called from any task or interrupt
/// handler: the queue lives in a critical section (with `std`, a mutex).
/// The arguments are encoded inside that section, so keep them small on a
/// device whose interrupts must not wait. Each frame costs its arguments
/// plus 19 bytes (length prefix and header).
pub struct Outbox<const N: usize> {
    state: Mutex<State<N>>,
}

impl<const N: usize> Default for Outbox<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Debug for Outbox<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let len = self.state.with(|s| s.len);
        write!(f, "Outbox {{ queued: {len}, capacity: {N} }}")
    }
}

impl<const N: usize> Outbox<N> {
    /// An empty outbox (usable in a `static`).
    pub const fn new() -> Self {
        Outbox {
            state: Mutex::new(State {
                buf: [0; N],
                len: 0,
                waker: None,
            }),
        }
    }

    /// Queues a notification of `method` with `args` (the method's
    /// parameters as a tuple, as for a call), and wakes the server.
    pub fn notify<A: Serialize + ?Sized>(
        &self,
        method: MethodKey,
        args: &A,
    ) -> Result<(), OutboxError> {
        let header = HeaderBytes::notify(method);
        let waker = self.state.with(|s| {
            let start = s.len;
            let free = s.buf.get_mut(start..).unwrap_or_default();
            let len = encode_frame(free, &header, args).map_err(|e| match e {
                // Would it fit an empty outbox? Then it is only full now.
                EncodeFailure::NoRoom if start > 0 => OutboxError::Full,
                _ => OutboxError::TooLarge,
            })?;
            s.len = start.saturating_add(len);
            Ok(s.waker.take())
        })?;
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Moves the whole frames that fit into `dst`; `Pending` (with `cx`'s
    /// waker kept) when the outbox is empty.
    pub(super) fn poll_take(&self, cx: &mut Context<'_>, dst: &mut [u8]) -> Poll<usize> {
        self.state.with(|s| {
            if s.len == 0 {
                match &mut s.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            let queued = s.buf.get(..s.len).unwrap_or_default();
            let n = whole_frames_within(queued, dst.len());
            if let (Some(to), Some(from)) = (dst.get_mut(..n), s.buf.get(..n)) {
                to.copy_from_slice(from);
            }
            super::move_to_front(&mut s.buf, n, s.len);
            s.len = s.len.saturating_sub(n);
            Poll::Ready(n)
        })
    }
}

/// How many bytes of the whole frames at the start of `frames` fit in
/// `room`.
fn whole_frames_within(frames: &[u8], room: usize) -> usize {
    let mut at: usize = 0;
    loop {
        let prefix = frames.get(at..at.saturating_add(LEN_PREFIX));
        let Some(prefix) = prefix.and_then(|p| <[u8; LEN_PREFIX]>::try_from(p).ok()) else {
            return at;
        };
        let len = u32::from_le_bytes(prefix) as usize;
        let end = at.saturating_add(LEN_PREFIX).saturating_add(len);
        if end > room || end > frames.len() {
            return at;
        }
        at = end;
    }
}

/// Why [`encode_frame`] wrote nothing.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum EncodeFailure {
    /// `out` is too short for the frame.
    NoRoom,
    /// postcard refused the value (not a matter of room).
    Serialize,
}

/// Writes a length prefix, `header` and `body` at the start of `out` and
/// returns the bytes taken; nothing is taken on failure.
pub(super) fn encode_frame<B: Serialize + ?Sized>(
    out: &mut [u8],
    header: &HeaderBytes,
    body: &B,
) -> Result<usize, EncodeFailure> {
    let body_at = LEN_PREFIX.saturating_add(header.as_bytes().len());
    let Some(body_out) = out.get_mut(body_at..) else {
        return Err(EncodeFailure::NoRoom);
    };
    let body_len = match postcard::serialize_with_flavor(
        body,
        ByteWriter {
            out: body_out,
            len: 0,
        },
    ) {
        Ok(len) => len,
        Err(postcard::Error::SerializeBufferFull) => return Err(EncodeFailure::NoRoom),
        Err(_) => return Err(EncodeFailure::Serialize),
    };
    put_head(out, header, body_len)
}

/// Where postcard writes a body: byte by byte into a slice. (postcard's
/// own slice writer copies each run of bytes, even a varint's few, with a
/// call of `memcpy`; byte by byte takes less code on a device.)
struct ByteWriter<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl postcard::ser_flavors::Flavor for ByteWriter<'_> {
    type Output = usize;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        let slot = self.out.get_mut(self.len);
        *slot.ok_or(postcard::Error::SerializeBufferFull)? = byte;
        self.len = self.len.saturating_add(1);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.len)
    }
}

/// Writes the length prefix and `header` in front of a body of `body_len`
/// bytes already in place (none for an error frame or a cancel) and
/// returns the frame's bytes with its prefix. The part of
/// [`encode_frame`] that does not depend on the body's type.
pub(super) fn put_head(
    out: &mut [u8],
    header: &HeaderBytes,
    body_len: usize,
) -> Result<usize, EncodeFailure> {
    let Some((bytes, len)) = header.with_prefix(body_len) else {
        return Err(EncodeFailure::Serialize);
    };
    let (Some(to), Some(from)) = (out.get_mut(..len), bytes.get(..len)) else {
        return Err(EncodeFailure::NoRoom);
    };
    to.copy_from_slice(from);
    Ok(len.saturating_add(body_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fill_the_outbox_exactly_then_report_full() {
        // One notify frame with a u8 argument: 4 + 15 + 1 = 20 bytes.
        let outbox = Outbox::<40>::new();
        let key = MethodKey(0x1122_3344_5566_7788);
        assert_eq!(outbox.notify(key, &(1u8,)), Ok(()));
        assert_eq!(outbox.notify(key, &(2u8,)), Ok(()));
        assert_eq!(outbox.notify(key, &(3u8,)), Err(OutboxError::Full));
        // A frame larger than the whole outbox can never fit.
        let small = Outbox::<19>::new();
        assert_eq!(small.notify(key, &(1u8,)), Err(OutboxError::TooLarge));
        let exact = Outbox::<20>::new();
        assert_eq!(exact.notify(key, &(1u8,)), Ok(()));

        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Only whole frames move: 39 bytes of room take one frame.
        let mut dst = [0u8; 39];
        assert_eq!(outbox.poll_take(&mut cx, &mut dst), Poll::Ready(20));
        assert_eq!(
            &dst[..20],
            &[16, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 1]
        );
        assert_eq!(outbox.poll_take(&mut cx, &mut dst[..19]), Poll::Ready(0));
        assert_eq!(outbox.poll_take(&mut cx, &mut dst), Poll::Ready(20));
        assert_eq!(dst[19], 2);
        assert_eq!(outbox.poll_take(&mut cx, &mut dst), Poll::Pending);
    }
}
