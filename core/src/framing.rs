//! Length-prefixed framing for byte streams (section 2 of `PROTOCOL.md` at
//! the root of the repository).
//!
//! A frame is a `u32` little-endian length `n`, then `n` bytes: a
//! [`Header`](crate::wire::Header) and a postcard body. `n` must be at most the
//! configured maximum frame size; a larger announcement is a
//! [`FrameError::TooLarge`] that names both sizes, detected from the four
//! prefix bytes alone, so no input makes a reader buffer more than
//! `max_frame + 4` bytes; and the buffer grows with the bytes that actually
//! arrive (to at most twice them), not with the length a prefix announces.
//!
//! ```text
//! 0f 00 00 00  01 00 00 07 00 00 00  88 77 66 55 44 33 22 11  ...
//! len = 15     version kind flags id   method key
//! ```
//!
//! [`split_frame`] works on a plain slice and needs no allocator. With
//! `alloc`, [`FrameReader`] and [`FrameWriter`] add the buffers the drivers
//! use: the reader reads in large chunks and yields every complete frame; the
//! writer accumulates encoded frames so that all frames ready at once go out
//! in one `poll_write`.

use crate::error::FrameError;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// The default maximum frame size: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// How frames are delimited on a connection. Both ends must use the same:
/// nothing on the wire says which is in use.
///
/// - [`LengthPrefix`](Framing::LengthPrefix), the default: a 4-byte length
///   before each frame. No overhead, but a violation (a lost, added or
///   changed byte that breaks a frame) ends the connection: use it over
///   reliable streams (TCP, Unix sockets, USB CDC with its own checks).
/// - [`Cobs`](Framing::Cobs): each frame COBS-encoded and ended by `0x00`
///   ([`crate::cobs`]); a bad frame is skipped and counted, the connection
///   stays up. Costs at most one byte per 254 plus the delimiter, and a
///   copy through the encoder and decoder: use it over links that lose or
///   corrupt bytes (UARTs, radios).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Framing {
    /// A `u32` little-endian length before each frame (PROTOCOL.md §2).
    #[default]
    LengthPrefix,
    /// COBS-encoded frames, each ended by `0x00` (PROTOCOL.md §2.1).
    Cobs,
}

/// Reads the length prefix at the start of `buf`.
///
/// `Ok(None)`: fewer than four bytes are buffered. `Ok(Some(n))`: the next
/// frame's body is `n` bytes (not counting the prefix).
pub fn frame_len(buf: &[u8], max_frame: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > max_frame {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    Ok(Some(len))
}

/// Splits the first complete frame off `buf`.
///
/// `Ok(None)`: more bytes are needed. `Ok(Some((frame, used)))`: `frame` is
/// the frame without its prefix and `used` the bytes it took from `buf`.
pub fn split_frame(buf: &[u8], max_frame: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(len) = frame_len(buf, max_frame)? else {
        return Ok(None);
    };
    let end = frame_end(len);
    Ok(buf.get(LEN_PREFIX..end).map(|frame| (frame, end)))
}

/// The bytes a frame of `len` takes with its prefix. Saturating: with a
/// 32-bit `usize`, a `u32::MAX` announcement would overflow `LEN_PREFIX +
/// len`; `usize::MAX` bytes can never be buffered, so the frame just stays
/// incomplete (and the limit check rejects it first in practice).
pub(crate) const fn frame_end(len: usize) -> usize {
    LEN_PREFIX.saturating_add(len)
}

#[cfg(feature = "alloc")]
pub(crate) use buffered::{
    encode_body, encode_frame, encode_frame_after, encode_frame_into, encode_raw_frame,
    encode_raw_frame_after, encode_raw_frame_into, FrameHead,
};
#[cfg(feature = "alloc")]
pub use buffered::{EncodeError, FrameReader, FrameWriter};
#[cfg(feature = "alloc")]
pub(crate) use framed::Framed;

#[cfg(feature = "alloc")]
mod framed {
    use alloc::boxed::Box;
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use core::task::{Context, Poll};

    use super::Framing;
    use crate::cobs::{CobsTransport, FramingStats};
    use crate::io::Transport;

    /// A std driver's transport: as given, or behind the COBS translation.
    /// Checked once per read or write call, not per byte, so the
    /// length-prefixed path keeps its speed; the COBS state is boxed (once
    /// per connection) so it does not grow the length-prefixed drivers.
    #[derive(Debug)]
    pub(crate) enum Framed<T> {
        LengthPrefix(T),
        Cobs(Box<CobsTransport<T, Vec<u8>, Arc<FramingStats>>>),
    }

    impl<T: Transport> Framed<T> {
        pub(crate) fn new(
            io: T,
            framing: Framing,
            max_frame: usize,
            stats: &Arc<FramingStats>,
        ) -> Self {
            match framing {
                Framing::LengthPrefix => Framed::LengthPrefix(io),
                Framing::Cobs => {
                    let cobs = CobsTransport::with_vecs(io, max_frame, stats.clone());
                    Framed::Cobs(Box::new(cobs))
                }
            }
        }
    }

    impl<T: Transport> Transport for Framed<T> {
        type Error = T::Error;
        #[inline]
        fn poll_read(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<Result<usize, Self::Error>> {
            match self {
                Framed::LengthPrefix(io) => io.poll_read(cx, buf),
                Framed::Cobs(io) => io.poll_read(cx, buf),
            }
        }
        #[inline]
        fn poll_write(
            &mut self,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<Result<usize, Self::Error>> {
            match self {
                Framed::LengthPrefix(io) => io.poll_write(cx, buf),
                Framed::Cobs(io) => io.poll_write(cx, buf),
            }
        }
        #[inline]
        fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            match self {
                Framed::LengthPrefix(io) => io.poll_flush(cx),
                Framed::Cobs(io) => io.poll_flush(cx),
            }
        }
        #[inline]
        fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            match self {
                Framed::LengthPrefix(io) => io.poll_close(cx),
                Framed::Cobs(io) => io.poll_close(cx),
            }
        }
    }
}

#[cfg(feature = "alloc")]
mod buffered {
    use alloc::vec::Vec;
    use core::fmt;
    use core::task::{Context, Poll};

    use serde::Serialize;

    use super::{frame_end, frame_len, LEN_PREFIX};
    use crate::error::{CallError, DriverError, FrameError};
    use crate::io::Transport;
    use crate::wire::{Header, MAX_HEADER_LEN};

    /// The most a reader asks the transport for at least, so that many
    /// small frames arrive with one read.
    const READ_CHUNK: usize = 16 * 1024;

    /// What a reader asks for at first and keeps while its peer sends
    /// little: a connection that makes a call now and then holds 1 KiB,
    /// not a whole chunk (idle servers with many connections).
    const MIN_READ_CHUNK: usize = 1024;

    /// Buffers bytes from a transport and yields complete frames.
    ///
    /// How much it reads at once adapts between 1 KiB and 16 KiB: it doubles when a read fills all the room offered
    /// (more was waiting) and halves when a burst — the bytes read between
    /// two reads that found nothing — used less than a quarter of it, so
    /// it changes only when the traffic does, never per call.
    #[derive(Debug)]
    pub struct FrameReader {
        buf: Vec<u8>,
        start: usize,
        end: usize,
        max_frame: usize,
        /// The current read size.
        chunk: usize,
        /// Bytes read since the reader last found nothing to read.
        burst: usize,
    }

    impl FrameReader {
        /// A reader that rejects frames over `max_frame` bytes.
        pub fn new(max_frame: usize) -> Self {
            FrameReader {
                buf: Vec::new(),
                start: 0,
                end: 0,
                max_frame,
                chunk: MIN_READ_CHUNK,
                burst: 0,
            }
        }

        /// The next complete buffered frame (without its length prefix), or
        /// `Ok(None)` when more bytes are needed. An error is final: the
        /// stream cannot be resynchronised after it.
        // Inlined into the drivers' read loops (once per frame).
        #[inline]
        pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
            let buffered = &self.buf[self.start..self.end];
            let Some(len) = frame_len(buffered, self.max_frame)? else {
                return Ok(None);
            };
            let total = frame_end(len);
            if buffered.len() < total {
                return Ok(None);
            }
            let at = self.start + LEN_PREFIX;
            self.start += total;
            Ok(Some(&self.buf[at..at + len]))
        }

        /// The kind byte and length (without the prefix) of the next frame,
        /// as soon as its prefix and kind have arrived, without consuming
        /// anything. `None`: not enough bytes yet, or a prefix over the
        /// limit (which [`next_frame`](Self::next_frame) reports).
        pub(crate) fn peek_kind(&self) -> Option<(u8, usize)> {
            let buffered = &self.buf[self.start..self.end];
            let len = frame_len(buffered, self.max_frame).ok().flatten()?;
            // Byte 0 is the version, byte 1 the kind.
            let kind = *buffered.get(LEN_PREFIX + 1)?;
            Some((kind, len))
        }

        /// Bytes the buffer holds (its length is its capacity for reads).
        pub(crate) fn capacity(&self) -> usize {
            self.buf.capacity()
        }

        /// The read size, never above what the largest frame needs.
        fn chunk(&self) -> usize {
            self.chunk.min(frame_end(self.max_frame))
        }

        /// Call when the transport had nothing to read: ends the burst, and
        /// gives memory back after it — keeps at most the read size (halved
        /// if the burst was small) plus the bytes already buffered (a partly
        /// received frame).
        pub(crate) fn shrink(&mut self) {
            let buffered = self.end - self.start;
            let burst = core::mem::take(&mut self.burst);
            if burst < self.chunk / 4 {
                self.chunk = (self.chunk / 2).max(MIN_READ_CHUNK);
            }
            let keep = self.chunk().saturating_add(buffered);
            if self.buf.capacity() <= keep {
                return;
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = buffered;
            self.buf.truncate(keep);
            self.buf.shrink_to(keep);
        }

        /// Whether part of a frame is buffered (so EOF now would cut it).
        pub fn has_partial_frame(&self) -> bool {
            self.start != self.end
        }

        /// Reads more bytes from `io`. Call it only after [`next_frame`]
        /// returned `Ok(None)`. `Ok(0)` is end of stream.
        ///
        /// [`next_frame`]: FrameReader::next_frame
        pub fn poll_fill<T: Transport + ?Sized>(
            &mut self,
            io: &mut T,
            cx: &mut Context<'_>,
        ) -> Poll<Result<usize, T::Error>> {
            self.make_room();
            let room = self.buf.len() - self.end;
            let n = match io.poll_read(cx, &mut self.buf[self.end..]) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            if n >= room {
                // More may be waiting: read more at once next time.
                self.chunk = self.chunk.saturating_mul(2).min(READ_CHUNK);
            }
            self.burst = self.burst.saturating_add(n);
            self.end += n;
            Poll::Ready(Ok(n))
        }

        /// Ensures the current frame fits and there is room to read into.
        fn make_room(&mut self) {
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            let buffered = self.end - self.start;
            // `next_frame` already rejected an oversized prefix.
            let needed = frame_len(&self.buf[self.start..self.end], self.max_frame)
                .ok()
                .flatten()
                .map_or(LEN_PREFIX, frame_end);
            // Grow towards the frame's size only as its bytes arrive (at
            // most doubling), so a peer that announces a large frame and
            // sends little of it costs little memory.
            let wanted = needed
                .min(buffered.saturating_mul(2))
                .max(buffered.saturating_add(1))
                .max(self.chunk());
            if self.start > 0
                && (self.start.saturating_add(needed) > self.buf.len()
                    || self.end == self.buf.len())
            {
                self.buf.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = buffered;
            }
            if self.buf.len() < wanted {
                self.buf.resize(wanted, 0);
            }
        }
    }

    /// Why a frame could not be encoded. The writer is left as it was.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum EncodeError {
        /// The frame would exceed the limit.
        TooLarge {
            /// The frame's length (header and body, without the prefix).
            len: usize,
            /// The limit.
            max: usize,
        },
        /// The value could not be serialized by postcard.
        Serialize,
    }

    impl fmt::Display for EncodeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                EncodeError::TooLarge { len, max } => {
                    write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
                }
                EncodeError::Serialize => f.write_str("value could not be serialized"),
            }
        }
    }

    impl From<EncodeError> for CallError {
        fn from(e: EncodeError) -> Self {
            match e {
                EncodeError::TooLarge { len, max } => CallError::RequestTooLarge { len, max },
                EncodeError::Serialize => CallError::Encode,
            }
        }
    }

    /// The start of a frame: a zeroed length prefix and an encoded header,
    /// for frames of one header sent many times (a stream's items).
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct FrameHead {
        bytes: [u8; LEN_PREFIX + MAX_HEADER_LEN],
        len: usize,
    }

    impl FrameHead {
        /// Encodes `header` (`None` only if it does not encode).
        pub(crate) fn new(header: &Header) -> Option<Self> {
            let mut bytes = [0u8; LEN_PREFIX + MAX_HEADER_LEN];
            let head_len = header.encode(bytes.get_mut(LEN_PREFIX..)?).ok()?;
            Some(FrameHead {
                bytes,
                len: LEN_PREFIX + head_len,
            })
        }

        /// The prefix (zeroed) and the header.
        pub(crate) fn as_bytes(&self) -> &[u8] {
            self.bytes.get(..self.len).unwrap_or_default()
        }
    }

    /// Appends one frame (prefix, header, postcard body) to `out`.
    ///
    /// On error `out` is truncated back to its old length. A body over the
    /// limit stops being stored as soon as it passes it, so an oversized value
    /// costs no more than `max_frame` bytes of buffer.
    pub(crate) fn encode_frame<T: Serialize + ?Sized>(
        out: &mut Vec<u8>,
        header: &Header,
        body: &T,
        max_frame: usize,
    ) -> Result<(), EncodeError> {
        let head = FrameHead::new(header).ok_or(EncodeError::Serialize)?;
        encode_frame_after(out, head.as_bytes(), body, max_frame)
    }

    /// Like [`encode_frame`], with the frame's start already encoded:
    /// `head` is a zeroed length prefix and a header ([`FrameHead`]).
    pub(crate) fn encode_frame_after<T: Serialize + ?Sized>(
        out: &mut Vec<u8>,
        head: &[u8],
        body: &T,
        max_frame: usize,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(head);
        let flavor = LimitedVec {
            limit: (start + LEN_PREFIX).saturating_add(max_frame),
            out,
            overflow: 0,
        };
        let result = postcard::serialize_with_flavor::<T, _, _>(body, flavor);
        let len = match result {
            Ok((out, 0)) => out.len() - start - LEN_PREFIX,
            Ok((out, overflow)) => {
                let len = out.len() - start - LEN_PREFIX + overflow;
                out.truncate(start);
                return Err(EncodeError::TooLarge {
                    len,
                    max: max_frame,
                });
            }
            Err(_) => {
                out.truncate(start);
                return Err(EncodeError::Serialize);
            }
        };
        let prefix = u32::try_from(len).map_err(|_| {
            out.truncate(start);
            EncodeError::TooLarge {
                len,
                max: max_frame,
            }
        })?;
        if let Some(at) = out.get_mut(start..start + LEN_PREFIX) {
            at.copy_from_slice(&prefix.to_le_bytes());
        }
        Ok(())
    }

    /// Encodes one frame (prefix, header, postcard body) into the start of
    /// `buf`, for small frames that need no heap buffer. Returns its length,
    /// or `None` when it does not fit in `buf` (encode it with
    /// [`encode_frame`] then).
    pub(crate) fn encode_frame_into<T: Serialize + ?Sized>(
        buf: &mut [u8],
        header: &Header,
        body: &T,
        max_frame: usize,
    ) -> Result<Option<usize>, EncodeError> {
        let Some(head) = buf.get_mut(LEN_PREFIX..) else {
            return Ok(None);
        };
        let Ok(head_len) = header.encode(head) else {
            return Ok(None);
        };
        let Some(rest) = head.get_mut(head_len..) else {
            return Ok(None);
        };
        let body_len = match postcard::to_slice(body, rest) {
            Ok(used) => used.len(),
            Err(postcard::Error::SerializeBufferFull) => return Ok(None),
            Err(_) => return Err(EncodeError::Serialize),
        };
        let len = head_len + body_len;
        if len > max_frame {
            return Err(EncodeError::TooLarge {
                len,
                max: max_frame,
            });
        }
        let Ok(prefix) = u32::try_from(len) else {
            return Ok(None);
        };
        buf[..LEN_PREFIX].copy_from_slice(&prefix.to_le_bytes());
        Ok(Some(LEN_PREFIX + len))
    }

    /// Appends the postcard encoding of `body` to `out`, refusing more than
    /// `max` bytes (`out` is then truncated back to its old length).
    pub(crate) fn encode_body<T: Serialize + ?Sized>(
        out: &mut Vec<u8>,
        body: &T,
        max: usize,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        let flavor = LimitedVec {
            limit: start.saturating_add(max),
            out,
            overflow: 0,
        };
        match postcard::serialize_with_flavor::<T, _, _>(body, flavor) {
            Ok((_, 0)) => Ok(()),
            Ok((out, overflow)) => {
                let len = out.len() - start + overflow;
                out.truncate(start);
                Err(EncodeError::TooLarge { len, max })
            }
            Err(_) => {
                out.truncate(start);
                Err(EncodeError::Serialize)
            }
        }
    }

    /// Appends one frame whose body is already encoded (prefix, header,
    /// `body` as is) to `out`.
    pub(crate) fn encode_raw_frame(
        out: &mut Vec<u8>,
        header: &Header,
        body: &[u8],
        max_frame: usize,
    ) -> Result<(), EncodeError> {
        let head = FrameHead::new(header).ok_or(EncodeError::Serialize)?;
        encode_raw_frame_after(out, head.as_bytes(), body, max_frame)
    }

    /// Like [`encode_raw_frame`], with the frame's start already encoded
    /// (see [`encode_frame_after`]).
    pub(crate) fn encode_raw_frame_after(
        out: &mut Vec<u8>,
        head: &[u8],
        body: &[u8],
        max_frame: usize,
    ) -> Result<(), EncodeError> {
        let header_len = head.len().saturating_sub(LEN_PREFIX);
        let len = header_len.saturating_add(body.len());
        let prefix = match u32::try_from(len) {
            Ok(prefix) if len <= max_frame => prefix,
            _ => {
                return Err(EncodeError::TooLarge {
                    len,
                    max: max_frame,
                })
            }
        };
        out.extend_from_slice(&prefix.to_le_bytes());
        out.extend_from_slice(head.get(LEN_PREFIX..).unwrap_or_default());
        out.extend_from_slice(body);
        Ok(())
    }

    /// Like [`encode_raw_frame`], into the start of `buf`; `None` when it
    /// does not fit.
    pub(crate) fn encode_raw_frame_into(
        buf: &mut [u8],
        header: &Header,
        body: &[u8],
        max_frame: usize,
    ) -> Result<Option<usize>, EncodeError> {
        let Some(head) = buf.get_mut(LEN_PREFIX..) else {
            return Ok(None);
        };
        let Ok(head_len) = header.encode(head) else {
            return Ok(None);
        };
        let len = head_len.saturating_add(body.len());
        if len > max_frame {
            return Err(EncodeError::TooLarge {
                len,
                max: max_frame,
            });
        }
        let Some(rest) = head.get_mut(head_len..head_len + body.len()) else {
            return Ok(None);
        };
        rest.copy_from_slice(body);
        let Ok(prefix) = u32::try_from(len) else {
            return Ok(None);
        };
        buf[..LEN_PREFIX].copy_from_slice(&prefix.to_le_bytes());
        Ok(Some(LEN_PREFIX + len))
    }

    /// A postcard output that appends to a `Vec` up to a limit and then only
    /// counts, so an oversized value is measured without being stored.
    struct LimitedVec<'a> {
        out: &'a mut Vec<u8>,
        limit: usize,
        overflow: usize,
    }

    impl<'a> postcard::ser_flavors::Flavor for LimitedVec<'a> {
        type Output = (&'a mut Vec<u8>, usize);

        fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
            if self.overflow == 0 && self.out.len() < self.limit {
                self.out.push(byte);
            } else {
                self.overflow += 1;
            }
            Ok(())
        }

        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            // Lengths and small integers come as one byte: no copy call.
            if let [byte] = data {
                return self.try_push(*byte);
            }
            let room = self.limit.saturating_sub(self.out.len());
            if self.overflow > 0 || data.len() > room {
                self.overflow += data.len();
            } else {
                self.out.extend_from_slice(data);
            }
            Ok(())
        }

        fn finalize(self) -> postcard::Result<Self::Output> {
            Ok((self.out, self.overflow))
        }
    }

    /// Spare bytes under which [`FrameWriter::buffer_and_sent`] drops the
    /// sent bytes in front of the buffer: one handler's turn of items.
    pub(crate) const APPEND_ROOM: usize = 16 * 1024;

    /// Accumulates encoded frames and writes them to a transport in as few
    /// writes as possible.
    #[derive(Debug)]
    pub struct FrameWriter {
        buf: Vec<u8>,
        written: usize,
        max_frame: usize,
        unflushed: bool,
    }

    impl FrameWriter {
        /// A writer that refuses frames over `max_frame` bytes.
        pub fn new(max_frame: usize) -> Self {
            FrameWriter {
                buf: Vec::new(),
                written: 0,
                max_frame,
                unflushed: false,
            }
        }

        /// Appends a frame with a postcard-encoded body.
        pub fn encode<T: Serialize + ?Sized>(
            &mut self,
            header: &Header,
            body: &T,
        ) -> Result<(), EncodeError> {
            encode_frame(&mut self.buf, header, body, self.max_frame)
        }

        /// The buffer frames are appended to. Bytes already written may stay
        /// in front of it: [`pending`](Self::pending) is what is unsent.
        pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
            self.buffer_and_sent().0
        }

        /// The buffer, and how many bytes at its front were already handed
        /// to the transport (its length minus those is what is pending).
        ///
        /// The sent bytes are dropped first when that is cheap — they are
        /// at least as many as the unsent ones that move — or when the
        /// buffer has less than [`APPEND_ROOM`] spare, where appending would
        /// otherwise grow it (copying everything). So a writer that is
        /// always a little behind moves each byte at most about once, not
        /// once per partial write.
        pub(crate) fn buffer_and_sent(&mut self) -> (&mut Vec<u8>, usize) {
            if self.written > 0 {
                let spare = self.buf.capacity() - self.buf.len();
                if self.written >= self.pending() || spare < APPEND_ROOM {
                    self.buf.drain(..self.written);
                    self.written = 0;
                }
            }
            (&mut self.buf, self.written)
        }

        /// Bytes encoded but not yet handed to the transport.
        pub fn pending(&self) -> usize {
            self.buf.len() - self.written
        }

        /// Whether everything was written and flushed.
        pub fn is_idle(&self) -> bool {
            self.pending() == 0 && !self.unflushed
        }

        /// The buffer's capacity.
        pub(crate) fn capacity(&self) -> usize {
            self.buf.capacity()
        }

        /// Gives memory back after a burst: when nothing is pending and the
        /// buffer has more than `above` bytes of capacity, it keeps `limit`.
        pub(crate) fn shrink_idle(&mut self, above: usize, limit: usize) {
            if self.pending() == 0 && self.buf.capacity() > above.max(limit) {
                self.buf.clear();
                self.written = 0;
                self.buf.shrink_to(limit);
            }
        }

        /// Swaps the writer's buffer with `other` when the writer has nothing
        /// pending, so frames encoded elsewhere are sent without a copy.
        /// Returns whether it swapped.
        pub(crate) fn take_from(&mut self, other: &mut Vec<u8>) -> bool {
            if self.pending() != 0 || other.is_empty() {
                return false;
            }
            self.buf.clear();
            self.written = 0;
            core::mem::swap(&mut self.buf, other);
            true
        }

        /// Writes everything pending, then flushes. A transport that takes
        /// zero bytes of a non-empty write is closed: [`DriverError::Closed`].
        pub fn poll_write_all<T: Transport + ?Sized>(
            &mut self,
            io: &mut T,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), DriverError<T::Error>>> {
            while self.written < self.buf.len() {
                match io.poll_write(cx, &self.buf[self.written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(DriverError::Closed)),
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(DriverError::Transport(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            self.buf.clear();
            self.written = 0;
            if self.unflushed {
                match io.poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(DriverError::Transport(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::wire::MethodKey;

        #[test]
        fn encode_then_read_back() {
            let mut w = FrameWriter::new(64);
            w.encode(&Header::Response { id: 3 }, &(7u8, "hi")).unwrap();
            assert_eq!(w.buf, [11, 0, 0, 0, 1, 1, 0, 3, 0, 0, 0, 7, 2, b'h', b'i']);
            let mut r = FrameReader::new(64);
            r.buf = w.buf.clone();
            r.end = r.buf.len();
            let frame = r.next_frame().unwrap().unwrap();
            assert_eq!(frame, &w.buf[4..]);
            assert_eq!(r.next_frame().unwrap(), None);
        }

        /// The stack encoder writes the same bytes as the buffered one, says
        /// when a frame does not fit its buffer (below, at and above the
        /// exact size), and applies the frame limit.
        #[test]
        fn encode_into_a_slice_matches_and_knows_its_room() {
            let header = Header::request(7, MethodKey(9), Some(250));
            let body = (3u64, "hello");
            let mut expected = Vec::new();
            encode_frame(&mut expected, &header, &body, 1024).unwrap();
            let exact = expected.len();
            for room in [exact - 1, exact, exact + 1, 256] {
                let mut buf = [0u8; 256];
                let got = encode_frame_into(&mut buf[..room], &header, &body, 1024).unwrap();
                if room < exact {
                    assert_eq!(got, None, "room {room}");
                } else {
                    assert_eq!(got, Some(exact), "room {room}");
                    assert_eq!(&buf[..exact], &expected[..]);
                }
            }
            let mut buf = [0u8; 256];
            assert_eq!(
                encode_frame_into(&mut buf, &header, &body, exact - LEN_PREFIX - 1),
                Err(EncodeError::TooLarge {
                    len: exact - LEN_PREFIX,
                    max: exact - LEN_PREFIX - 1
                })
            );
            assert_eq!(
                encode_frame_into(&mut buf[..3], &header, &body, 1024),
                Ok(None)
            );
        }

        #[test]
        fn oversized_encode_names_sizes_and_rolls_back() {
            let mut w = FrameWriter::new(32);
            w.encode(&Header::Cancel { id: 1 }, &()).unwrap();
            let before = w.buf.clone();
            let body = [0u8; 100];
            let err = w
                .encode(&Header::request(2, MethodKey(1), None), &body[..])
                .unwrap_err();
            // 15 header bytes + 1 length byte + 100 payload bytes.
            assert_eq!(err, EncodeError::TooLarge { len: 116, max: 32 });
            assert_eq!(w.buf, before);
        }

        /// Hands out its bytes, then end of stream.
        struct Source<'a>(&'a [u8]);

        impl Transport for Source<'_> {
            type Error = core::convert::Infallible;
            fn poll_read(
                &mut self,
                _: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<Result<usize, Self::Error>> {
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Poll::Ready(Ok(n))
            }
            fn poll_write(
                &mut self,
                _: &mut Context<'_>,
                _: &[u8],
            ) -> Poll<Result<usize, Self::Error>> {
                Poll::Ready(Ok(0))
            }
            fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
        }

        /// A transport that takes at most `chunk` bytes per write, and
        /// `Pending` once it holds `room` bytes (until the test drains it).
        struct Sink {
            got: Vec<u8>,
            chunk: usize,
            room: usize,
        }

        impl Transport for Sink {
            type Error = core::convert::Infallible;
            fn poll_read(
                &mut self,
                _: &mut Context<'_>,
                _: &mut [u8],
            ) -> Poll<Result<usize, Self::Error>> {
                Poll::Pending
            }
            fn poll_write(
                &mut self,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<Result<usize, Self::Error>> {
                let n = buf.len().min(self.chunk).min(self.room);
                if n == 0 {
                    return Poll::Pending;
                }
                self.room -= n;
                self.got.extend_from_slice(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
        }

        /// Partial writes of every size from 1 to past the bytes appended
        /// between writes, with appends between them: every byte arrives
        /// once, in order, and the unsent count is always exact.
        #[test]
        fn partial_writes_of_every_size_deliver_every_byte_once_in_order() {
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            // Every size natively; under Miri, where the sweep takes many
            // minutes, the sizes around the appends' lengths (0..97) and
            // the ends.
            let chunks: Vec<usize> = if cfg!(miri) {
                alloc::vec![1, 2, 3, 5, 8, 47, 96, 97, 98, 255, 300]
            } else {
                (1..=300).collect()
            };
            for chunk in chunks {
                let mut w = FrameWriter::new(usize::MAX);
                let mut sink = Sink {
                    got: Vec::new(),
                    chunk,
                    room: usize::MAX,
                };
                let mut sent_all = Vec::new();
                for round in 0..200u32 {
                    let (buf, sent) = w.buffer_and_sent();
                    assert_eq!(buf.len() - sent, w_pending_len(&sent_all, &sink));
                    let bytes: Vec<u8> = (0..(round % 97) as u8).map(|b| b ^ round as u8).collect();
                    buf.extend_from_slice(&bytes);
                    sent_all.extend_from_slice(&bytes);
                    assert_eq!(w.pending(), w_pending_len(&sent_all, &sink));
                    // One write per round: a chunk of `chunk` bytes.
                    sink.room = chunk;
                    let _ = w.poll_write_all(&mut sink, &mut cx);
                    assert_eq!(w.pending(), w_pending_len(&sent_all, &sink));
                }
                sink.room = usize::MAX;
                assert!(w.poll_write_all(&mut sink, &mut cx).is_ready());
                assert_eq!(sink.got, sent_all, "chunk {chunk}");
                assert!(w.is_idle());
            }
        }

        fn w_pending_len(appended: &[u8], sink: &Sink) -> usize {
            appended.len() - sink.got.len()
        }

        /// The sent bytes in front of the buffer stay while they are fewer
        /// than the unsent ones and the buffer has room to append; they go
        /// once they are as many (below, at the unsent count), or once the
        /// spare room falls under `APPEND_ROOM` (below, at, above it).
        #[test]
        fn sent_bytes_are_dropped_only_when_cheap_or_room_runs_out() {
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let mut w = FrameWriter::new(usize::MAX);
            w.buf.reserve_exact(4 * APPEND_ROOM);
            let cap = w.capacity();
            let mut sink = Sink {
                got: Vec::new(),
                chunk: usize::MAX,
                room: 0,
            };
            w.buffer().extend((0..1000u32).map(|i| i as u8));
            // 499 sent, 501 unsent: kept (nothing moves).
            sink.room = 499;
            assert!(w.poll_write_all(&mut sink, &mut cx).is_pending());
            assert_eq!(w.buffer_and_sent().1, 499);
            assert_eq!(w.pending(), 501);
            // 500 sent, 500 unsent: dropped.
            sink.room = 1;
            assert!(w.poll_write_all(&mut sink, &mut cx).is_pending());
            let (buf, sent) = w.buffer_and_sent();
            assert_eq!((buf.len(), sent), (500, 0));
            assert_eq!(buf[0], 244, "byte 500 is now first");
            // Fill up to exactly APPEND_ROOM spare, with few bytes sent.
            let fill = cap - APPEND_ROOM - 500;
            w.buffer().extend(core::iter::repeat_n(9, fill));
            sink.room = 10;
            assert!(w.poll_write_all(&mut sink, &mut cx).is_pending());
            assert_eq!(w.buffer_and_sent().1, 10, "spare at APPEND_ROOM: kept");
            w.buffer().push(9);
            assert_eq!(w.capacity(), cap);
            let before = w.pending();
            let (buf, sent) = w.buffer_and_sent();
            assert_eq!(
                (sent, buf.len()),
                (0, before),
                "spare below APPEND_ROOM: dropped"
            );
            assert_eq!(w.capacity(), cap, "no growth");
            // Everything arrives in order.
            sink.room = usize::MAX;
            assert!(w.poll_write_all(&mut sink, &mut cx).is_ready());
            let mut expected: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
            expected.extend(core::iter::repeat_n(9, fill + 1));
            assert_eq!(sink.got, expected);
        }

        #[test]
        fn buffer_grows_with_arriving_bytes_not_the_announced_length() {
            let max = 64 << 20;
            let mut stream = ((max - 1) as u32).to_le_bytes().to_vec();
            stream.extend_from_slice(&[7; 100]);
            let mut source = Source(&stream);
            let mut r = FrameReader::new(max);
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            loop {
                assert_eq!(r.next_frame(), Ok(None));
                match r.poll_fill(&mut source, &mut cx) {
                    Poll::Ready(Ok(0)) => break,
                    Poll::Ready(Ok(_)) => {}
                    other => panic!("{other:?}"),
                }
            }
            assert!(r.has_partial_frame());
            assert!(r.buf.len() <= 64 * 1024, "buffer of {} bytes", r.buf.len());

            // A frame that does arrive in full is still read whole.
            let body = alloc::vec![3u8; 300_000];
            let mut stream = (body.len() as u32).to_le_bytes().to_vec();
            stream.extend_from_slice(&body);
            let mut source = Source(&stream);
            let mut r = FrameReader::new(max);
            let frame = loop {
                if let Some(frame) = r.next_frame().unwrap() {
                    break frame.to_vec();
                }
                assert!(matches!(
                    r.poll_fill(&mut source, &mut cx),
                    Poll::Ready(Ok(1..))
                ));
            };
            assert_eq!(frame, body);
            assert!(r.buf.len() < 2 * stream.len());
        }

        /// A reader without a limit (`usize::MAX`) fed a `u32::MAX`
        /// announcement: no overflow, no frame, memory only for the bytes
        /// that came; peeking sees the kind and the length.
        #[test]
        fn unlimited_reader_survives_a_u32_max_prefix() {
            let mut stream = u32::MAX.to_le_bytes().to_vec();
            stream.extend_from_slice(&[1, 0, 0, 7, 0, 0, 0]);
            stream.extend_from_slice(&[9; 1000]);
            let mut source = Source(&stream);
            let mut r = FrameReader::new(usize::MAX);
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            loop {
                assert_eq!(r.next_frame(), Ok(None));
                match r.poll_fill(&mut source, &mut cx) {
                    Poll::Ready(Ok(0)) => break,
                    Poll::Ready(Ok(_)) => {}
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(r.peek_kind(), Some((0, u32::MAX as usize)));
            assert!(r.has_partial_frame());
            assert!(r.buf.len() <= 64 * 1024, "buffer of {} bytes", r.buf.len());
            r.shrink();
            assert_eq!(r.next_frame(), Ok(None));
        }

        /// The read size grows while reads come back full, up to the most,
        /// and falls back to the least (memory included) once bursts are
        /// small again.
        #[test]
        fn read_size_follows_the_traffic() {
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let mut r = FrameReader::new(1 << 20);
            // A small request: one read of at most the least size.
            let small = [5, 0, 0, 0, 1, 2, 3, 4, 5];
            assert!(matches!(
                r.poll_fill(&mut Source(&small), &mut cx),
                Poll::Ready(Ok(9))
            ));
            assert_eq!(r.next_frame(), Ok(Some(&[1, 2, 3, 4, 5][..])));
            r.shrink();
            assert_eq!(
                (r.chunk, r.buf.capacity()),
                (MIN_READ_CHUNK, MIN_READ_CHUNK)
            );
            // A long stream of frames: reads fill the room, the size
            // doubles up to the most and stays there.
            let frame = [60u8, 0, 0, 0].iter().copied().chain([7; 60]);
            let stream: Vec<u8> = frame.cycle().take(64 * 1000).collect();
            let mut source = Source(&stream);
            let mut frames = 0;
            while !source.0.is_empty() {
                while let Ok(Some(_)) = r.next_frame() {
                    frames += 1;
                }
                assert!(matches!(
                    r.poll_fill(&mut source, &mut cx),
                    Poll::Ready(Ok(1..))
                ));
            }
            while let Ok(Some(_)) = r.next_frame() {
                frames += 1;
            }
            assert_eq!(frames, 1000);
            assert_eq!(r.chunk, READ_CHUNK);
            r.shrink();
            assert!(r.buf.capacity() <= READ_CHUNK);
            // Small bursts again: back to the least, memory too.
            for _ in 0..8 {
                assert!(matches!(
                    r.poll_fill(&mut Source(&small), &mut cx),
                    Poll::Ready(Ok(9))
                ));
                assert_eq!(r.next_frame(), Ok(Some(&[1, 2, 3, 4, 5][..])));
                r.shrink();
            }
            assert_eq!(
                (r.chunk, r.buf.capacity()),
                (MIN_READ_CHUNK, MIN_READ_CHUNK)
            );
        }

        #[test]
        fn oversized_prefix_is_rejected_before_buffering() {
            let mut r = FrameReader::new(1024);
            r.buf = u32::MAX.to_le_bytes().to_vec();
            r.end = 4;
            assert_eq!(
                r.next_frame(),
                Err(FrameError::TooLarge {
                    len: u32::MAX as usize,
                    max: 1024
                })
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefix arithmetic at the extremes: a `u32::MAX` announcement
    /// with no limit (`usize::MAX`, as `max_frame(usize::MAX)` gives on a
    /// 32-bit target after clamping to `u32::MAX`) never overflows and
    /// never yields a frame that has not fully arrived.
    #[test]
    fn prefix_arithmetic_saturates_at_u32_max() {
        assert_eq!(frame_end(u32::MAX as usize), u32::MAX as usize + LEN_PREFIX);
        assert_eq!(frame_end(usize::MAX), usize::MAX);
        assert_eq!(frame_end(usize::MAX - 2), usize::MAX);
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(split_frame(&bytes, usize::MAX), Ok(None));
        assert_eq!(split_frame(&bytes, u32::MAX as usize), Ok(None));
        assert_eq!(
            split_frame(&bytes, u32::MAX as usize - 1),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: u32::MAX as usize - 1
            })
        );
        assert_eq!(frame_len(&bytes, usize::MAX), Ok(Some(u32::MAX as usize)));
    }

    #[test]
    fn split_needs_whole_frames() {
        let bytes = [3, 0, 0, 0, 9, 8, 7, 2, 0];
        assert_eq!(split_frame(&bytes[..2], 16), Ok(None));
        assert_eq!(split_frame(&bytes[..6], 16), Ok(None));
        assert_eq!(split_frame(&bytes, 16), Ok(Some((&bytes[4..7], 7))));
        assert_eq!(
            split_frame(&bytes, 2),
            Err(FrameError::TooLarge { len: 3, max: 2 })
        );
    }
}
