//! Arguments encoded once and sent as they are, possibly many times (a
//! load balancer re-sends a failed call on another connection).

use alloc::sync::Arc;
use alloc::vec::Vec;

use serde::Serialize;

use crate::error::CallError;
use crate::framing::{
    encode_body, encode_frame, encode_frame_after, encode_frame_into, encode_raw_frame,
    encode_raw_frame_after, encode_raw_frame_into, EncodeError,
};
use crate::wire::Header;

/// Arguments up to this size are encoded on the stack first.
const INLINE: usize = 256;

/// A call's arguments, already encoded: cheap to clone, sent byte for byte.
///
/// A [`Call`](super::Call) of `Encoded` arguments sends exactly the bytes a
/// call of the original value would (the postcard encoding is
/// deterministic), so the server cannot tell them apart.
///
/// ```
/// let args = courier::client::Encoded::new(&(2u32, 3u32), 1024).unwrap();
/// assert_eq!(args.as_bytes(), &[2, 3]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    body: Arc<[u8]>,
}

impl Encoded {
    /// Encodes `args`, refusing more than `max` bytes of body
    /// ([`CallError::RequestTooLarge`]; the frame limit of the client that
    /// sends it is checked again when it is sent).
    pub fn new<T: Serialize + ?Sized>(args: &T, max: usize) -> Result<Self, CallError> {
        // Small arguments are encoded on the stack: one allocation, the
        // shared copy.
        let mut inline = [0u8; INLINE];
        if let Ok(body) = postcard::to_slice(args, &mut inline) {
            if body.len() > max {
                return Err(CallError::RequestTooLarge {
                    len: body.len(),
                    max,
                });
            }
            return Ok(Encoded {
                body: Arc::from(&*body),
            });
        }
        let mut body = Vec::new();
        Self::new_in(&mut body, args, max)
    }

    /// Like [`new`](Self::new), encoding through `scratch` (cleared first),
    /// whose capacity the caller keeps for the next encoding.
    pub fn new_in<T: Serialize + ?Sized>(
        scratch: &mut Vec<u8>,
        args: &T,
        max: usize,
    ) -> Result<Self, CallError> {
        scratch.clear();
        encode_body(scratch, args, max)?;
        Ok(Encoded {
            body: Arc::from(scratch.as_slice()),
        })
    }

    /// Wraps bytes that already are a postcard encoding (of the arguments,
    /// or of a streamed item), shared as they are, without checking them:
    /// the receiver decodes them as the type it expects.
    pub fn from_encoded(body: Arc<[u8]>) -> Self {
        Encoded { body }
    }

    /// The encoded body.
    pub fn as_bytes(&self) -> &[u8] {
        &self.body
    }
}

/// What a [`Call`](super::Call) can send as its arguments, and a
/// streaming handler ([`Handler::stream`](crate::Handler::stream)) as its
/// items: any [`Serialize`] value, or [`Encoded`] bytes.
///
/// Its methods are the client's; they are not a stable API.
pub trait EncodeArgs {
    /// Appends a frame of `header` and these arguments to `out`.
    #[doc(hidden)]
    fn encode_frame(
        &self,
        out: &mut Vec<u8>,
        header: &Header,
        max_frame: usize,
    ) -> Result<(), EncodeError>;

    /// Writes a frame of `header` and these arguments to the start of
    /// `buf`; `None` if it does not fit.
    #[doc(hidden)]
    fn encode_frame_into(
        &self,
        buf: &mut [u8],
        header: &Header,
        max_frame: usize,
    ) -> Result<Option<usize>, EncodeError>;

    /// Appends a frame to `out` whose start is already encoded: `head` is
    /// a zeroed 4-byte length prefix and a header (a stream encodes its
    /// items' once).
    #[doc(hidden)]
    fn encode_frame_after(
        &self,
        out: &mut Vec<u8>,
        head: &[u8],
        max_frame: usize,
    ) -> Result<(), EncodeError>;
}

impl<T: Serialize + ?Sized> EncodeArgs for T {
    fn encode_frame(
        &self,
        out: &mut Vec<u8>,
        header: &Header,
        max_frame: usize,
    ) -> Result<(), EncodeError> {
        encode_frame(out, header, self, max_frame)
    }

    fn encode_frame_into(
        &self,
        buf: &mut [u8],
        header: &Header,
        max_frame: usize,
    ) -> Result<Option<usize>, EncodeError> {
        encode_frame_into(buf, header, self, max_frame)
    }

    fn encode_frame_after(
        &self,
        out: &mut Vec<u8>,
        head: &[u8],
        max_frame: usize,
    ) -> Result<(), EncodeError> {
        encode_frame_after(out, head, self, max_frame)
    }
}

impl EncodeArgs for Encoded {
    fn encode_frame(
        &self,
        out: &mut Vec<u8>,
        header: &Header,
        max_frame: usize,
    ) -> Result<(), EncodeError> {
        encode_raw_frame(out, header, &self.body, max_frame)
    }

    fn encode_frame_into(
        &self,
        buf: &mut [u8],
        header: &Header,
        max_frame: usize,
    ) -> Result<Option<usize>, EncodeError> {
        encode_raw_frame_into(buf, header, &self.body, max_frame)
    }

    fn encode_frame_after(
        &self,
        out: &mut Vec<u8>,
        head: &[u8],
        max_frame: usize,
    ) -> Result<(), EncodeError> {
        encode_raw_frame_after(out, head, &self.body, max_frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::FrameHead;

    /// A frame encoded after a reused head is the frame `encode_frame`
    /// writes, for values and for `Encoded` bytes, appended after other
    /// bytes; an oversized one is refused (below, at, above the limit)
    /// and leaves `out` as it was.
    #[test]
    fn encoding_after_a_head_matches_the_whole_frame() {
        let header = Header::Item {
            id: 300,
            from_callee: true,
        };
        let head = FrameHead::new(&header).unwrap();
        for len in [0usize, 1, 16, 127, 128, 4096] {
            let value = alloc::vec![7u8; len];
            let encoded = Encoded::new(&value, usize::MAX).unwrap();
            let mut whole = alloc::vec![1, 2, 3];
            EncodeArgs::encode_frame(&value, &mut whole, &header, usize::MAX).unwrap();
            for args in [&value as &dyn EncodeArgs, &encoded] {
                let mut out = alloc::vec![1, 2, 3];
                args.encode_frame_after(&mut out, head.as_bytes(), usize::MAX)
                    .unwrap();
                assert_eq!(out, whole, "len {len}");
                let frame = whole.len() - 3 - 4;
                for (max, fits) in [(frame - 1, false), (frame, true), (frame + 1, true)] {
                    let mut out = alloc::vec![1, 2, 3];
                    let result = args.encode_frame_after(&mut out, head.as_bytes(), max);
                    assert_eq!(result.is_ok(), fits, "len {len} max {max}");
                    if !fits {
                        assert_eq!(out, [1, 2, 3]);
                    }
                }
            }
        }
    }
}
