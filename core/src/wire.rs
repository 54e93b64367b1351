//! The wire format: frame header layout, frame kinds and method keys.
//!
//! The whole protocol — transport assumptions, framing, every frame kind byte
//! by byte, the postcard body encoding, method keys, the rules for ids,
//! cancels, timeouts, errors and closing, and conformance vectors replayed
//! against the real server — is specified in `PROTOCOL.md` at the root of the
//! repository. This module implements the header part of it.
//!
//! Every frame on a byte stream is a `u32` little-endian length followed by
//! that many bytes (see [`crate::framing`]). Those bytes start with a fixed
//! header, then the kind-specific fields, then the postcard-encoded body:
//!
//! ```text
//! offset size  field
//! 0      1     protocol version, currently 1
//! 1      1     kind: 0 request, 1 response, 2 error, 3 cancel,
//!                    4 item, 5 credit, 6 end, 7 notify
//!                    (8-255 reserved, skipped whole)
//! 2      1     flags: request: bit 0 = the request carries a timeout;
//!                     item, credit: bit 0 = sent by the callee;
//!                     others: none; reserved kinds: any
//! 3      4     request id, u32 LE (chosen by the caller, echoed in the reply)
//! -- request and notify:
//! 7      8     method key, u64 LE
//! 15     4     timeout in milliseconds, u32 LE (request, flags bit 0 only)
//! -- error:
//! 7      1     error code (see [`RemoteError`])
//! -- credit:
//! 7      4     items granted, u32 LE
//! then          body: postcard bytes (request arguments as a tuple, the
//!               response value, or one stream item); empty otherwise
//! ```
//!
//! The timeout is relative ("this much time is left"), as in gRPC, so the two
//! peers need no shared clock. Kinds 4–7 carry streams (items, credit, the
//! end of a caller's items) and one-way notifications. Kinds 8–255 are
//! reserved: a peer skips such a frame whole, whatever its flags and body,
//! so adding them breaks no existing peer and lets them define their own
//! flags. Undefined flag bits on the known kinds are a
//! [`FrameError::UnknownFlags`].
//!
//! # Example: exact bytes
//!
//! A call of method key `0x1122334455667788` with request id 7, a 250 ms
//! timeout and the body `(2u64, 3u64)` (postcard: `02 03`):
//!
//! ```
//! use courier::wire::{Header, FrameKind, MethodKey};
//! let header = Header::request(7, MethodKey(0x1122_3344_5566_7788), Some(250));
//! let mut buf = [0u8; 32];
//! let n = header.encode(&mut buf).unwrap();
//! assert_eq!(
//!     &buf[..n],
//!     &[1, 0, 1, 7, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 250, 0, 0, 0]
//! );
//! let (decoded, body_at) = Header::decode(&buf[..n]).unwrap();
//! assert_eq!(decoded, header);
//! assert_eq!(body_at, n);
//! ```
//!
//! # Example: the method key the `service` attribute derives
//!
//! The key hashes the service name, the method name, the wire schema of the
//! tuple of argument types and that of the return type (`()` when none is
//! written), not their spelling:
//!
//! ```
//! use courier::{MethodKey, Schema};
//! #[courier::service]
//! trait Calc {
//!     async fn add(&self, a: u64, b: u64) -> u64;
//!     async fn ping(&self);
//! }
//! assert_eq!(
//!     CalcClient::ADD,
//!     MethodKey::from_schema("Calc", "add", <(u64, u64)>::SCHEMA, u64::SCHEMA)
//! );
//! assert_eq!(CalcClient::PING, MethodKey::from_schema("Calc", "ping", <()>::SCHEMA, <()>::SCHEMA));
//! ```

use core::fmt;

use crate::error::{FrameError, RemoteError};
use crate::schema::{self, Shape};

pub(crate) mod compact;

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// Bytes of the header fields every frame has (version, kind, flags, id).
pub const COMMON_HEADER_LEN: usize = 7;

/// The longest possible header (a request with a timeout).
pub const MAX_HEADER_LEN: usize = 19;

const FLAG_TIMEOUT: u8 = 1;
/// On item and credit frames: the frame comes from the side that answers
/// the call (the callee), not the side that made it.
const FLAG_FROM_CALLEE: u8 = 1;

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// A call: method key, optional timeout, then the arguments.
    Request,
    /// A successful reply: the method's return value.
    Response,
    /// A failed call: an error code set by the server.
    Error,
    /// The caller gave up on the call with this id.
    Cancel,
    /// One item of a stream, in either direction.
    Item,
    /// More items the receiver of a stream will take.
    Credit,
    /// The caller has sent all its items.
    End,
    /// A one-way call: no id, no reply.
    Notify,
    /// A kind this version does not know (reserved for later versions).
    Reserved(u8),
}

impl FrameKind {
    /// The byte on the wire.
    pub const fn to_byte(self) -> u8 {
        match self {
            FrameKind::Request => 0,
            FrameKind::Response => 1,
            FrameKind::Error => 2,
            FrameKind::Cancel => 3,
            FrameKind::Item => 4,
            FrameKind::Credit => 5,
            FrameKind::End => 6,
            FrameKind::Notify => 7,
            FrameKind::Reserved(b) => b,
        }
    }

    /// The kind for a byte on the wire.
    pub const fn from_byte(b: u8) -> Self {
        match b {
            0 => FrameKind::Request,
            1 => FrameKind::Response,
            2 => FrameKind::Error,
            3 => FrameKind::Cancel,
            4 => FrameKind::Item,
            5 => FrameKind::Credit,
            6 => FrameKind::End,
            7 => FrameKind::Notify,
            other => FrameKind::Reserved(other),
        }
    }
}

/// Identifies one method of one service with one signature.
///
/// Derived by [`MethodKey::from_schema`] from the service name, the method
/// name and the wire schemas of the arguments and of the result, so a client
/// and a server that disagree on any of them get
/// [`RemoteError::UnknownMethod`] instead of a garbled value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MethodKey(pub u64);

impl MethodKey {
    /// FNV-1a (64 bit) of `service`, a 0 byte, `method`, a 0 byte, then the
    /// canonical encodings of `args` and of `result` (PROTOCOL.md §5).
    ///
    /// [`service`](crate::service) passes the shape of the tuple of the
    /// argument types (also for none or one argument) and the shape of the
    /// return type (`()` when none is written):
    ///
    /// ```
    /// use courier::{MethodKey, Schema};
    /// // async fn add(&self, a: u64, b: u64) -> u64; in trait Calc
    /// let key = MethodKey::from_schema("Calc", "add", <(u64, u64)>::SCHEMA, u64::SCHEMA);
    /// assert_eq!(key, MethodKey(0xbfa9_970c_97e5_71d1));
    /// ```
    pub const fn from_schema(service: &str, method: &str, args: &Shape, result: &Shape) -> Self {
        let mut hash = schema::FNV_BASIS;
        hash = schema::fnv_bytes(hash, service.as_bytes());
        hash = schema::fnv_byte(hash, 0);
        hash = schema::fnv_bytes(hash, method.as_bytes());
        hash = schema::fnv_byte(hash, 0);
        hash = schema::fnv_shape(hash, args);
        hash = schema::fnv_shape(hash, result);
        MethodKey(hash)
    }
}

impl fmt::Debug for MethodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MethodKey({:#018x})", self.0)
    }
}

impl fmt::Display for MethodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Header {
    /// A call.
    Request {
        /// Chosen by the caller; echoed in the reply.
        id: u32,
        /// Which method.
        method: MethodKey,
        /// Milliseconds the caller is still willing to wait, if it set a timeout.
        timeout_ms: Option<u32>,
    },
    /// A successful reply to call `id`.
    Response {
        /// The call's id.
        id: u32,
    },
    /// A failed reply to call `id`.
    Error {
        /// The call's id.
        id: u32,
        /// Why it failed.
        error: RemoteError,
    },
    /// The caller dropped call `id`.
    Cancel {
        /// The call's id.
        id: u32,
    },
    /// One item of call `id`'s stream; the body is the item.
    Item {
        /// The call's id.
        id: u32,
        /// Sent by the callee (an item of the response stream) rather than
        /// the caller (an item of the request stream).
        from_callee: bool,
    },
    /// The sender of this frame will take `grant` more items of call `id`.
    Credit {
        /// The call's id.
        id: u32,
        /// Sent by the callee (credit for the caller's items) rather than
        /// the caller (credit for the callee's items).
        from_callee: bool,
        /// How many more items may be sent.
        grant: u32,
    },
    /// The caller of call `id` has sent its last item.
    End {
        /// The call's id.
        id: u32,
    },
    /// A one-way call of `method`: no reply, and no id to answer to.
    Notify {
        /// The id field, which no reply echoes (sent as 0).
        id: u32,
        /// Which method.
        method: MethodKey,
    },
    /// A reserved kind (8–255) this version skips whole, whatever its flags
    /// and body.
    Reserved {
        /// The kind byte.
        kind: u8,
        /// The flags byte, uninterpreted (a later version defines them).
        flags: u8,
        /// The id field.
        id: u32,
    },
}

impl Header {
    /// A request header.
    pub const fn request(id: u32, method: MethodKey, timeout_ms: Option<u32>) -> Self {
        Header::Request {
            id,
            method,
            timeout_ms,
        }
    }

    /// The request id this frame belongs to.
    pub const fn id(&self) -> u32 {
        match *self {
            Header::Request { id, .. }
            | Header::Response { id }
            | Header::Error { id, .. }
            | Header::Cancel { id }
            | Header::Item { id, .. }
            | Header::Credit { id, .. }
            | Header::End { id }
            | Header::Notify { id, .. }
            | Header::Reserved { id, .. } => id,
        }
    }

    /// The frame kind.
    pub const fn kind(&self) -> FrameKind {
        match *self {
            Header::Request { .. } => FrameKind::Request,
            Header::Response { .. } => FrameKind::Response,
            Header::Error { .. } => FrameKind::Error,
            Header::Cancel { .. } => FrameKind::Cancel,
            Header::Item { .. } => FrameKind::Item,
            Header::Credit { .. } => FrameKind::Credit,
            Header::End { .. } => FrameKind::End,
            Header::Notify { .. } => FrameKind::Notify,
            Header::Reserved { kind, .. } => FrameKind::Reserved(kind),
        }
    }

    /// How many bytes [`Header::encode`] writes.
    pub const fn encoded_len(&self) -> usize {
        match *self {
            Header::Request {
                timeout_ms: Some(_),
                ..
            } => MAX_HEADER_LEN,
            Header::Request { .. } | Header::Notify { .. } => COMMON_HEADER_LEN + 8,
            Header::Error { .. } => COMMON_HEADER_LEN + 1,
            Header::Credit { .. } => COMMON_HEADER_LEN + 4,
            Header::Response { .. }
            | Header::Cancel { .. }
            | Header::Item { .. }
            | Header::End { .. }
            | Header::Reserved { .. } => COMMON_HEADER_LEN,
        }
    }

    /// Writes the header to the start of `buf` and returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, FrameError> {
        let len = self.encoded_len();
        let out = buf.get_mut(..len).ok_or(FrameError::BufferTooSmall)?;
        let flags = match *self {
            Header::Request {
                timeout_ms: Some(_),
                ..
            } => FLAG_TIMEOUT,
            Header::Item {
                from_callee: true, ..
            }
            | Header::Credit {
                from_callee: true, ..
            } => FLAG_FROM_CALLEE,
            Header::Reserved { flags, .. } => flags,
            _ => 0,
        };
        out[0] = VERSION;
        out[1] = self.kind().to_byte();
        out[2] = flags;
        out[3..7].copy_from_slice(&self.id().to_le_bytes());
        match *self {
            Header::Request {
                method, timeout_ms, ..
            } => {
                out[7..15].copy_from_slice(&method.0.to_le_bytes());
                if let Some(ms) = timeout_ms {
                    out[15..19].copy_from_slice(&ms.to_le_bytes());
                }
            }
            Header::Notify { method, .. } => out[7..15].copy_from_slice(&method.0.to_le_bytes()),
            Header::Error { error, .. } => out[7] = error.code(),
            Header::Credit { grant, .. } => out[7..11].copy_from_slice(&grant.to_le_bytes()),
            _ => {}
        }
        Ok(len)
    }

    /// Parses the header at the start of `frame` (the bytes after the length
    /// prefix). Returns the header and the offset where the body starts.
    // Inlined: on a stream every item frame passes here, and a call
    // returns the header through memory, which the caller reads back wider
    // than it was written (a store-forwarding stall per frame).
    #[inline(always)]
    pub fn decode(frame: &[u8]) -> Result<(Header, usize), FrameError> {
        let common = frame
            .get(..COMMON_HEADER_LEN)
            .ok_or(FrameError::Truncated)?;
        if common[0] != VERSION {
            return Err(FrameError::UnsupportedVersion(common[0]));
        }
        let flags = common[2];
        let id = u32::from_le_bytes([common[3], common[4], common[5], common[6]]);
        let kind = FrameKind::from_byte(common[1]);
        // Flags are checked only for the kinds this version defines: a
        // reserved kind is skipped whole, and its flags are its own.
        let allowed = match kind {
            FrameKind::Request => FLAG_TIMEOUT,
            FrameKind::Item | FrameKind::Credit => FLAG_FROM_CALLEE,
            FrameKind::Reserved(_) => u8::MAX,
            FrameKind::Response
            | FrameKind::Error
            | FrameKind::Cancel
            | FrameKind::End
            | FrameKind::Notify => 0,
        };
        let from_callee = flags & FLAG_FROM_CALLEE != 0;
        if flags & !allowed != 0 {
            return Err(FrameError::UnknownFlags(flags));
        }
        let header = match kind {
            FrameKind::Request => {
                let key = read_u64(frame, COMMON_HEADER_LEN)?;
                let timeout_ms = if flags & FLAG_TIMEOUT != 0 {
                    Some(read_u32(frame, COMMON_HEADER_LEN + 8)?)
                } else {
                    None
                };
                Header::request(id, MethodKey(key), timeout_ms)
            }
            FrameKind::Response => Header::Response { id },
            FrameKind::Error => {
                let code = *frame.get(COMMON_HEADER_LEN).ok_or(FrameError::Truncated)?;
                Header::Error {
                    id,
                    error: RemoteError::from_code(code),
                }
            }
            FrameKind::Cancel => Header::Cancel { id },
            FrameKind::Item => Header::Item { id, from_callee },
            FrameKind::Credit => Header::Credit {
                id,
                from_callee,
                grant: read_u32(frame, COMMON_HEADER_LEN)?,
            },
            FrameKind::End => Header::End { id },
            FrameKind::Notify => Header::Notify {
                id,
                method: MethodKey(read_u64(frame, COMMON_HEADER_LEN)?),
            },
            FrameKind::Reserved(kind) => Header::Reserved { kind, flags, id },
        };
        let body_at = header.encoded_len();
        Ok((header, body_at))
    }
}

fn read_u64(frame: &[u8], at: usize) -> Result<u64, FrameError> {
    let bytes = frame.get(at..at + 8).ok_or(FrameError::Truncated)?;
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    Ok(u64::from_le_bytes(out))
}

fn read_u32(frame: &[u8], at: usize) -> Result<u32, FrameError> {
    let bytes = frame.get(at..at + 4).ok_or(FrameError::Truncated)?;
    let mut out = [0u8; 4];
    out.copy_from_slice(bytes);
    Ok(u32::from_le_bytes(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(h: Header) -> [u8; MAX_HEADER_LEN] {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut buf).unwrap();
        assert_eq!(n, h.encoded_len());
        assert_eq!(Header::decode(&buf[..n]).unwrap(), (h, n));
        buf
    }

    #[test]
    fn request_without_timeout_bytes() {
        let buf = roundtrip(Header::request(0x0102_0304, MethodKey(1), None));
        assert_eq!(&buf[..15], &[1, 0, 0, 4, 3, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn response_error_cancel_bytes() {
        assert_eq!(
            &roundtrip(Header::Response { id: 5 })[..7],
            &[1, 1, 0, 5, 0, 0, 0]
        );
        let err = Header::Error {
            id: 5,
            error: RemoteError::UnknownMethod,
        };
        assert_eq!(&roundtrip(err)[..8], &[1, 2, 0, 5, 0, 0, 0, 1]);
        assert_eq!(
            &roundtrip(Header::Cancel { id: 9 })[..7],
            &[1, 3, 0, 9, 0, 0, 0]
        );
    }

    #[test]
    fn reserved_kinds_decode_for_skipping() {
        let (h, at) = Header::decode(&[1, 8, 0, 1, 0, 0, 0, 0xaa]).unwrap();
        assert_eq!(
            h,
            Header::Reserved {
                kind: 8,
                flags: 0,
                id: 1
            }
        );
        assert_eq!(at, 7);
    }

    #[test]
    fn reserved_kinds_decode_with_any_flags() {
        for kind in [8u8, 9, 0x80, 0xff] {
            for flags in [0x01u8, 0x02, 0x80, 0xff] {
                let (h, at) = Header::decode(&[1, kind, flags, 2, 0, 0, 0, 0xaa]).unwrap();
                assert_eq!(h, Header::Reserved { kind, flags, id: 2 });
                assert_eq!(at, COMMON_HEADER_LEN);
                // The flags survive a round trip.
                let mut buf = [0u8; MAX_HEADER_LEN];
                assert_eq!(h.encode(&mut buf), Ok(COMMON_HEADER_LEN));
                assert_eq!(&buf[..COMMON_HEADER_LEN], &[1, kind, flags, 2, 0, 0, 0]);
            }
        }
    }

    #[test]
    fn known_kinds_still_reject_undefined_flags() {
        // Request: only bit 0 (timeout) is defined.
        for flags in [0x02u8, 0x80, 0xff] {
            let mut frame = [0u8; MAX_HEADER_LEN];
            frame[0] = 1;
            frame[2] = flags;
            assert_eq!(Header::decode(&frame), Err(FrameError::UnknownFlags(flags)));
        }
        // Response, error, cancel, end, notify: no flag is defined.
        for kind in [1u8, 2, 3, 6, 7] {
            for flags in [0x01u8, 0x40, 0xff] {
                assert_eq!(
                    Header::decode(&[1, kind, flags, 0, 0, 0, 0, 1]),
                    Err(FrameError::UnknownFlags(flags)),
                    "kind {kind}"
                );
            }
        }
        // A reserved kind needs its common header like any other.
        assert_eq!(Header::decode(&[1, 9, 0xff, 0]), Err(FrameError::Truncated));
        // Item and credit: only bit 0 (from the callee).
        for kind in [4u8, 5] {
            for flags in [0x02u8, 0x81, 0xff] {
                assert_eq!(
                    Header::decode(&[1, kind, flags, 0, 0, 0, 0, 1, 0, 0, 0]),
                    Err(FrameError::UnknownFlags(flags)),
                    "kind {kind}"
                );
            }
        }
    }

    #[test]
    fn stream_and_notify_bytes() {
        let item = Header::Item {
            id: 3,
            from_callee: true,
        };
        assert_eq!(&roundtrip(item)[..7], &[1, 4, 1, 3, 0, 0, 0]);
        let item = Header::Item {
            id: 3,
            from_callee: false,
        };
        assert_eq!(&roundtrip(item)[..7], &[1, 4, 0, 3, 0, 0, 0]);
        let credit = Header::Credit {
            id: 3,
            from_callee: false,
            grant: 0x0102,
        };
        assert_eq!(&roundtrip(credit)[..11], &[1, 5, 0, 3, 0, 0, 0, 2, 1, 0, 0]);
        assert_eq!(
            &roundtrip(Header::End { id: 258 })[..7],
            &[1, 6, 0, 2, 1, 0, 0]
        );
        let notify = Header::Notify {
            id: 0,
            method: MethodKey(0x1122_3344_5566_7788),
        };
        assert_eq!(
            &roundtrip(notify)[..15],
            &[1, 7, 0, 0, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        );
        // Cut short.
        assert_eq!(
            Header::decode(&[1, 5, 0, 3, 0, 0, 0, 2, 1, 0]),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            Header::decode(&[1, 7, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]),
            Err(FrameError::Truncated)
        );
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(Header::decode(&[1, 0, 0]), Err(FrameError::Truncated));
        assert_eq!(
            Header::decode(&[2, 1, 0, 0, 0, 0, 0]),
            Err(FrameError::UnsupportedVersion(2))
        );
        assert_eq!(
            Header::decode(&[1, 1, 1, 0, 0, 0, 0]),
            Err(FrameError::UnknownFlags(1))
        );
        // A timeout flag without the timeout bytes.
        assert_eq!(
            Header::decode(&[1, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
            Err(FrameError::Truncated)
        );
    }

    #[test]
    fn method_keys_depend_on_every_part() {
        use crate::Schema;
        let key =
            |service, method, args, result| MethodKey::from_schema(service, method, args, result);
        let pair = <(u64, u64)>::SCHEMA;
        let a = key("Calc", "add", pair, u64::SCHEMA);
        // PROTOCOL.md §5, worked example: the bytes hashed, written out.
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for b in [
            0x43, 0x61, 0x6c, 0x63, 0x00, 0x61, 0x64, 0x64, 0x00, // "Calc" 0 "add" 0
            0x14, 0x02, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x0a, // (u64, u64)
            0x0a, // u64
        ] {
            hash = (hash ^ b).wrapping_mul(0x100_0000_01b3);
        }
        assert_eq!(a, MethodKey(hash));
        assert_ne!(a, key("Calc", "add", <(u32, u64)>::SCHEMA, u64::SCHEMA));
        assert_ne!(a, key("Calc", "add", pair, u32::SCHEMA));
        assert_ne!(a, key("Calc", "sub", pair, u64::SCHEMA));
        assert_ne!(a, key("Calc2", "add", pair, u64::SCHEMA));
        // The separators keep "ab"+"c" apart from "a"+"bc".
        let unit = <()>::SCHEMA;
        assert_ne!(key("ab", "c", unit, unit), key("a", "bc", unit, unit));
        // Where the argument list ends is part of the key.
        assert_ne!(
            key("S", "m", <(u8,)>::SCHEMA, <(u8,)>::SCHEMA),
            key("S", "m", <(u8, (u8,))>::SCHEMA, unit)
        );
    }
}
