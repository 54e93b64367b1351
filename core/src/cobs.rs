//! COBS framing for unreliable byte links (section 2.1 of `PROTOCOL.md`).
//!
//! The length-prefixed framing trusts every byte: one byte lost or changed
//! on a UART shifts every later frame boundary, so the connection must end.
//! With COBS (Consistent Overhead Byte Stuffing) a frame is its bytes
//! encoded so that they contain no `0x00`, followed by one `0x00`
//! delimiter. A receiver that meets a bad frame drops the bytes up to the
//! next delimiter, counts it in [`FramingStats`], and reads on: one bad
//! byte costs one frame (the call it carried fails with a timeout or is
//! retried by its caller), never the link.
//!
//! # Model
//!
//! ```text
//!  driver ── length-prefixed frames ──► CobsTransport ── COBS + 0x00 ──► link
//!  driver ◄── valid frames only ─────── CobsTransport ◄── COBS + 0x00 ─── link
//!                                          │ bad frame: skipped, counted
//! ```
//!
//! [`CobsTransport`] wraps any [`Transport`] and translates in both
//! directions, so the drivers above it keep their length-prefixed code: a
//! frame that reaches them has decoded, fits the limit and has a valid
//! header. The std builders wrap their transport themselves when asked
//! ([`Framing::Cobs`](crate::framing::Framing::Cobs)); the heap-free
//! drivers take a `CobsTransport` over [`CobsBuffers`] as their transport.
//! Both ends of a connection must be configured alike: nothing on the wire
//! says which framing is in use.
//!
//! # Cost
//!
//! At most one byte per 254 bytes of frame plus the delimiter (a 20-byte
//! frame becomes 22 bytes), one pass over each byte in each direction, and
//! the buffers: a decoded-frame buffer of the frame limit plus 4 bytes and
//! an output buffer of at least [`MIN_OUT`] bytes.
//!
//! # Example
//!
//! ```
//! let frame = [0x11, 0x00, 0x22];
//! let mut out = [0u8; 8];
//! let n = courier::cobs::encode(&frame, &mut out).unwrap();
//! assert_eq!(&out[..n], &[0x02, 0x11, 0x02, 0x22, 0x00]);
//! ```

use core::ops::Deref;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::{Context, Poll};

use crate::framing::LEN_PREFIX;
use crate::io::Transport;
use crate::wire::compact::RawHeader;

/// The frame delimiter.
pub const DELIMITER: u8 = 0x00;

/// The least output buffer a [`CobsTransport`] works with: one whole block
/// (255 bytes) being built, and room to finish a frame.
pub const MIN_OUT: usize = 260;

/// The most bytes `encode` writes for a frame of `len` bytes, delimiter
/// included: one code byte per started run of 254 bytes, plus the
/// delimiter.
pub const fn max_encoded_len(len: usize) -> usize {
    len.saturating_add(len / 254).saturating_add(2)
}

/// Encodes `frame` followed by the delimiter into `out`. Returns the bytes
/// written, or `None` when `out` is too small (`max_encoded_len` always
/// suffices).
pub fn encode(frame: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut enc = Encoder::default();
    let mut len = 0;
    enc.open(out, &mut len)?;
    for &byte in frame {
        enc.push(out, &mut len, byte)?;
    }
    enc.finish(out, &mut len)?;
    Some(len)
}

/// The encoder's state between bytes: where the open block's code byte
/// sits and the code so far. Works on `buf[..len]`.
#[derive(Clone, Copy, Debug, Default)]
struct Encoder {
    /// Index of the open block's code byte; `None` right after a full
    /// (0xFF) block, whose successor opens only if more bytes come.
    code_at: Option<usize>,
    code: u8,
}

impl Encoder {
    fn put(buf: &mut [u8], len: &mut usize, byte: u8) -> Option<()> {
        *buf.get_mut(*len)? = byte;
        *len += 1;
        Some(())
    }

    fn open(&mut self, buf: &mut [u8], len: &mut usize) -> Option<()> {
        let at = *len;
        Self::put(buf, len, 1)?;
        self.code_at = Some(at);
        self.code = 1;
        Some(())
    }

    fn close(&mut self, buf: &mut [u8]) {
        if let Some(at) = self.code_at.take() {
            if let Some(code) = buf.get_mut(at) {
                *code = self.code;
            }
        }
    }

    fn push(&mut self, buf: &mut [u8], len: &mut usize, byte: u8) -> Option<()> {
        if self.code_at.is_none() {
            self.open(buf, len)?;
        }
        if byte == 0 {
            self.close(buf);
            return self.open(buf, len);
        }
        Self::put(buf, len, byte)?;
        self.code += 1;
        if self.code == 0xFF {
            self.close(buf);
        }
        Some(())
    }

    fn finish(&mut self, buf: &mut [u8], len: &mut usize) -> Option<()> {
        self.close(buf);
        Self::put(buf, len, DELIMITER)
    }

    /// Bytes before the open block: complete, ready to send.
    fn complete(&self, len: usize) -> usize {
        self.code_at.unwrap_or(len)
    }
}

/// Counts the frames a COBS receiver skipped: frames that failed COBS
/// decoding, exceeded the frame limit, or whose header did not decode.
///
/// Shared between the driver that counts and the code that reads it: an
/// `Arc<FramingStats>` with `std` (the std drivers'
/// `framing_stats()`), a `&FramingStats` (a `static` works) without.
/// Uses only atomic loads and stores, so it works on every Cortex-M.
#[derive(Debug, Default)]
pub struct FramingStats {
    skipped: AtomicU32,
}

impl FramingStats {
    /// A counter at zero (usable in a `static`).
    pub const fn new() -> Self {
        FramingStats {
            skipped: AtomicU32::new(0),
        }
    }

    /// Frames skipped so far (saturates at `u32::MAX`).
    pub fn skipped(&self) -> u32 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Only the reading driver counts, so a load and a store suffice (no
    /// read-modify-write, which thumbv6m lacks).
    fn count_skip(&self) {
        let n = self.skipped.load(Ordering::Relaxed);
        self.skipped.store(n.saturating_add(1), Ordering::Relaxed);
    }
}

/// Storage for a [`CobsTransport`]'s buffers: a `Vec<u8>` (with `alloc`)
/// or a borrowed slice of [`CobsBuffers`]. Sealed.
pub trait CobsBuffer: sealed::Sealed {}

mod sealed {
    /// The operations the transport needs; `bytes()` is the filled part.
    pub trait Sealed {
        fn bytes(&self) -> &[u8];
        /// The filled part followed by the room: writes go through
        /// `raw_mut()[len..]`, then `set_len`.
        fn raw_mut(&mut self, at_least: usize) -> &mut [u8];
        fn set_len(&mut self, len: usize);
        fn capacity(&self) -> usize;
        fn remove_front(&mut self, n: usize);
    }
}

/// A borrowed fixed slice and how much of it is filled.
#[derive(Debug)]
pub struct SliceBuffer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl CobsBuffer for SliceBuffer<'_> {}

impl sealed::Sealed for SliceBuffer<'_> {
    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
    fn raw_mut(&mut self, _: usize) -> &mut [u8] {
        self.buf
    }
    fn set_len(&mut self, len: usize) {
        self.len = len.min(self.buf.len());
    }
    fn capacity(&self) -> usize {
        self.buf.len()
    }
    fn remove_front(&mut self, n: usize) {
        let n = n.min(self.len);
        crate::heap_free::move_to_front(self.buf, n, self.len);
        self.len -= n;
    }
}

#[cfg(feature = "alloc")]
impl CobsBuffer for alloc::vec::Vec<u8> {}

#[cfg(feature = "alloc")]
impl sealed::Sealed for alloc::vec::Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn raw_mut(&mut self, at_least: usize) -> &mut [u8] {
        // Expose zeroed room; `set_len` trims it again.
        if self.len() < at_least {
            self.resize(at_least, 0);
        }
        self
    }
    fn set_len(&mut self, len: usize) {
        self.truncate(len);
    }
    fn capacity(&self) -> usize {
        usize::MAX
    }
    fn remove_front(&mut self, n: usize) {
        self.drain(..n.min(self.len()));
    }
}

/// Fixed buffers of a heap-free [`CobsTransport`]: `IN` bytes for the
/// frames being decoded (at least the frame limit plus 4: the connection's
/// frame limit is `IN - 4`) and `OUT` bytes for encoded bytes not yet taken
/// by the link (at least [`MIN_OUT`]).
pub struct CobsBuffers<const IN: usize, const OUT: usize> {
    input: [u8; IN],
    output: [u8; OUT],
}

impl<const IN: usize, const OUT: usize> CobsBuffers<IN, OUT> {
    const CHECK: () = assert!(
        IN >= 32 && OUT >= MIN_OUT,
        "COBS buffers need IN >= 32 and OUT >= MIN_OUT (260)"
    );

    /// Zeroed buffers (usable in a `static`).
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        CobsBuffers {
            input: [0; IN],
            output: [0; OUT],
        }
    }
}

impl<const IN: usize, const OUT: usize> Default for CobsBuffers<IN, OUT> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const IN: usize, const OUT: usize> core::fmt::Debug for CobsBuffers<IN, OUT> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "CobsBuffers {{ in: {IN}, out: {OUT} }}")
    }
}

/// The decoder's state between bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Decoder {
    /// Where the frame being decoded starts in the input buffer (its
    /// length-prefix slot).
    frame_at: usize,
    /// Whether any byte of this frame arrived.
    started: bool,
    /// Data bytes left in the current block; 0: the next byte is a code.
    left: u8,
    /// The current block ends with an implied zero, written if another
    /// block follows.
    zero_due: bool,
    /// The frame is bad; drop bytes up to the next delimiter.
    skipping: bool,
}

/// A [`Transport`] that carries the length-prefixed frames of the driver
/// above it as COBS frames on the transport below (see the
/// [module docs](self)).
///
/// Reading yields only frames that decoded, fit `max_frame` and have a
/// valid header, each with its length prefix; bad frames are skipped and
/// counted in `stats`. Writing takes length-prefixed frames and encodes them
/// as they come. Nothing here allocates per frame; with
/// [`CobsBuffers`] nothing allocates at all.
#[derive(Debug)]
pub struct CobsTransport<T, B, S> {
    io: T,
    max_frame: usize,
    stats: S,
    /// Decoded frames, each with its length prefix: `[..ready]` complete
    /// and valid (handed out from `handed`), then the frame being decoded.
    input: B,
    handed: usize,
    ready: usize,
    decoder: Decoder,
    /// Encoded bytes; `[..sent]` already taken by `io`.
    output: B,
    out_cap: usize,
    encoder: Encoder,
    /// Length prefix of the outgoing frame being parsed.
    prefix: [u8; LEN_PREFIX],
    prefix_got: usize,
    /// Body bytes of the outgoing frame still to come.
    body_left: usize,
    unflushed: bool,
}

impl<'b, T: Transport, S: Deref<Target = FramingStats>> CobsTransport<T, SliceBuffer<'b>, S> {
    /// A heap-free COBS transport over `io`: frame limit `IN - 4`.
    pub fn new<const IN: usize, const OUT: usize>(
        io: T,
        buffers: &'b mut CobsBuffers<IN, OUT>,
        stats: S,
    ) -> Self {
        let CobsBuffers { input, output } = buffers;
        Self::with_buffers(
            io,
            SliceBuffer { buf: input, len: 0 },
            SliceBuffer {
                buf: output,
                len: 0,
            },
            IN - LEN_PREFIX,
            OUT,
            stats,
        )
    }
}

#[cfg(feature = "alloc")]
impl<T: Transport, S: Deref<Target = FramingStats>> CobsTransport<T, alloc::vec::Vec<u8>, S> {
    /// A COBS transport over `io` with growing buffers: frames up to
    /// `max_frame` bytes; encoded bytes are handed to `io` in writes of up
    /// to 16 KiB.
    pub fn with_vecs(io: T, max_frame: usize, stats: S) -> Self {
        Self::with_buffers(
            io,
            alloc::vec::Vec::new(),
            alloc::vec::Vec::new(),
            max_frame,
            16 * 1024,
            stats,
        )
    }
}

impl<T: Transport, B: CobsBuffer, S: Deref<Target = FramingStats>> CobsTransport<T, B, S> {
    fn with_buffers(
        io: T,
        input: B,
        output: B,
        max_frame: usize,
        out_cap: usize,
        stats: S,
    ) -> Self {
        CobsTransport {
            io,
            max_frame: max_frame.min(input.capacity().saturating_sub(LEN_PREFIX)),
            stats,
            input,
            handed: 0,
            ready: 0,
            decoder: Decoder::default(),
            out_cap: out_cap.min(output.capacity()).max(MIN_OUT),
            output,
            encoder: Encoder::default(),
            prefix: [0; LEN_PREFIX],
            prefix_got: 0,
            body_left: 0,
            unflushed: false,
        }
    }

    /// The counter of skipped frames.
    pub fn stats(&self) -> &FramingStats {
        &self.stats
    }

    /// The largest frame (header and body) accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Decodes the raw bytes `raw` into the input buffer. The buffer has
    /// room: decoding never yields more bytes than it consumes, and the
    /// caller reads at most the room left.
    fn decode(&mut self, raw: &[u8]) {
        let mut len = self.input.bytes().len();
        let most = len
            .saturating_add(raw.len().saturating_mul(2))
            .saturating_add(LEN_PREFIX);
        let buf = self.input.raw_mut(most);
        let d = &mut self.decoder;
        for &byte in raw {
            if byte == DELIMITER {
                let frame = buf.get(d.frame_at..len).unwrap_or_default();
                if !d.started {
                    // An empty frame: resynchronisation, not an error.
                } else if d.skipping || d.left != 0 || !valid_frame(frame) {
                    if !d.skipping {
                        self.stats.count_skip();
                    }
                    len = d.frame_at;
                } else {
                    let body = (len - d.frame_at - LEN_PREFIX) as u32;
                    if let Some(slot) = buf.get_mut(d.frame_at..d.frame_at + LEN_PREFIX) {
                        slot.copy_from_slice(&body.to_le_bytes());
                    }
                    self.ready = len;
                }
                *d = Decoder {
                    frame_at: len,
                    ..Decoder::default()
                };
                continue;
            }
            if d.skipping {
                continue;
            }
            if !d.started {
                d.started = true;
                len = len.saturating_add(LEN_PREFIX);
            }
            let data = if d.left == 0 {
                let due = d.zero_due;
                d.left = byte - 1;
                d.zero_due = byte != 0xFF;
                due.then_some(0)
            } else {
                d.left -= 1;
                Some(byte)
            };
            if let Some(data) = data {
                let room = len - d.frame_at - LEN_PREFIX < self.max_frame;
                match buf.get_mut(len) {
                    Some(slot) if room => {
                        *slot = data;
                        len += 1;
                    }
                    _ => {
                        // Over the limit: drop it, count it once.
                        self.stats.count_skip();
                        d.skipping = true;
                        len = d.frame_at;
                    }
                }
            }
        }
        self.input.set_len(len);
    }

    /// Encodes as much of the length-prefixed `buf` as the output buffer
    /// takes; returns the bytes consumed.
    fn encode(&mut self, buf: &[u8]) -> usize {
        let mut len = self.output.bytes().len();
        let most = len
            .saturating_add(buf.len().saturating_mul(2))
            .saturating_add(3);
        let out = self.output.raw_mut(most.min(self.out_cap));
        let cap = self.out_cap.min(out.len());
        let mut used = 0;
        for &byte in buf {
            // A byte adds at most a code byte, itself and, the last of a
            // frame, the delimiter.
            if len.saturating_add(3) > cap {
                break;
            }
            used += 1;
            if self.prefix_got < LEN_PREFIX {
                if let Some(slot) = self.prefix.get_mut(self.prefix_got) {
                    *slot = byte;
                }
                self.prefix_got += 1;
                if self.prefix_got == LEN_PREFIX {
                    self.body_left = u32::from_le_bytes(self.prefix) as usize;
                    let _ = self.encoder.open(out, &mut len);
                }
            } else {
                let _ = self.encoder.push(out, &mut len, byte);
                self.body_left -= 1;
            }
            if self.prefix_got == LEN_PREFIX && self.body_left == 0 {
                let _ = self.encoder.finish(out, &mut len);
                self.prefix_got = 0;
            }
        }
        self.output.set_len(len);
        used
    }

    /// Hands the complete encoded bytes to `io`. `Ready(Ok(()))`: all of
    /// them were taken.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        loop {
            let complete = self.encoder.complete(self.output.bytes().len());
            let Some(unsent) = self
                .output
                .bytes()
                .get(..complete)
                .filter(|b| !b.is_empty())
            else {
                return Poll::Ready(Ok(()));
            };
            match self.io.poll_write(cx, unsent) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(n)) => {
                    self.unflushed = true;
                    self.output.remove_front(n);
                    if let Some(at) = self.encoder.code_at.as_mut() {
                        *at = at.saturating_sub(n);
                    }
                }
                other => return other.map(|r| r.map(|_| ())),
            }
        }
    }
}

/// Whether a decoded frame (with its prefix slot) has a valid header.
fn valid_frame(frame: &[u8]) -> bool {
    frame
        .get(LEN_PREFIX..)
        .is_some_and(|f| RawHeader::parse(f).is_ok())
}

impl<T: Transport, B: CobsBuffer, S: Deref<Target = FramingStats>> Transport
    for CobsTransport<T, B, S>
{
    type Error = T::Error;

    /// Invariant: returns `Pending` only after `io.poll_read` did (its
    /// waker registered), and only with no complete frame buffered.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Self::Error>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if self.handed < self.ready {
                let from = self.input.bytes().get(self.handed..self.ready);
                let from = from.unwrap_or_default();
                let n = from.len().min(buf.len());
                buf[..n].copy_from_slice(&from[..n]);
                self.handed += n;
                if self.handed == self.ready {
                    self.input.remove_front(self.ready);
                    self.decoder.frame_at -= self.ready;
                    self.handed = 0;
                    self.ready = 0;
                }
                return Poll::Ready(Ok(n));
            }
            // Read no more raw bytes than the frame buffer can take: `r`
            // raw bytes decode to at most `2r + 4` (a valid frame of `n`
            // bytes takes `n + 2` raw bytes and `n + 4` decoded; the frame
            // being decoded its prefix slot more).
            let room = self
                .input
                .capacity()
                .saturating_sub(self.input.bytes().len());
            let want = buf.len().min(room.saturating_sub(LEN_PREFIX) / 2).max(1);
            let n = match self.io.poll_read(cx, &mut buf[..want]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            self.decode(&buf[..n]);
        }
    }

    /// Invariant: returns `Pending` only after `io.poll_write` did.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, Self::Error>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let used = self.encode(buf);
            if used > 0 {
                return Poll::Ready(Ok(used));
            }
            // The output buffer is full: make room.
            core::task::ready!(self.poll_send(cx))?;
            if self.encoder.complete(self.output.bytes().len()) != 0 {
                // The link took nothing: closed.
                return Poll::Ready(Ok(0));
            }
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        core::task::ready!(self.poll_send(cx))?;
        if self.unflushed {
            core::task::ready!(self.io.poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        core::task::ready!(self.poll_send(cx))?;
        self.io.poll_close(cx)
    }
}

#[cfg(test)]
mod tests;
