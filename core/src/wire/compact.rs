//! The frame header in less code: the same bytes as [`Header`], read into
//! and written from plain fields instead of one enum variant per kind.
//!
//! For the heap-free drivers, where each byte of code costs flash (reading
//! and writing [`Header`] takes about 800 bytes on a Cortex-M, these about
//! a quarter), and for the COBS transport's header check. [`RawHeader::parse`]
//! accepts and rejects exactly what [`Header::decode`] does, with the same
//! errors; [`HeaderBytes`] writes exactly what [`Header::encode`] writes
//! (both checked against `Header` in the tests below).

use super::{COMMON_HEADER_LEN, FLAG_TIMEOUT, MAX_HEADER_LEN, VERSION};
use crate::error::{FrameError, RemoteError};
use crate::framing::LEN_PREFIX;
#[cfg(doc)]
use crate::wire::Header;
use crate::wire::MethodKey;

/// Kind bytes (PROTOCOL.md 3).
pub(crate) const REQUEST: u8 = 0;
pub(crate) const RESPONSE: u8 = 1;
pub(crate) const ERROR: u8 = 2;
pub(crate) const CANCEL: u8 = 3;
pub(crate) const NOTIFY: u8 = 7;

/// Header length of each defined kind (0 to 7), a request without its
/// timeout; a reserved kind has the common 7 bytes.
const HEADER_LEN: [u8; 8] = [15, 7, 8, 7, 7, 11, 7, 15];
/// Flags each defined kind allows; a reserved kind's flags are its own.
const ALLOWED_FLAGS: [u8; 8] = [FLAG_TIMEOUT, 0, 0, 0, 1, 1, 0, 0];

/// A decoded header: the fields the heap-free drivers act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawHeader {
    /// The kind byte ([`REQUEST`], [`RESPONSE`], ...).
    pub kind: u8,
    /// The id field.
    pub id: u32,
    /// A request's or a notification's method key.
    pub method: MethodKey,
    /// A request's timeout field, if its flag is set.
    pub timeout_ms: Option<u32>,
    /// An error frame's code.
    pub code: u8,
    /// The header's length: where the body starts.
    pub len: usize,
}

impl RawHeader {
    /// Parses the header at the start of `frame` (the bytes after the
    /// length prefix), as [`Header::decode`] does.
    pub(crate) fn parse(frame: &[u8]) -> Result<RawHeader, FrameError> {
        let &[version, kind, flags, a, b, c, d, ..] = frame else {
            return Err(FrameError::Truncated);
        };
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let at = usize::from(kind);
        let (len, allowed) = match (HEADER_LEN.get(at), ALLOWED_FLAGS.get(at)) {
            (Some(&len), Some(&allowed)) => (usize::from(len), allowed),
            _ => (COMMON_HEADER_LEN, u8::MAX),
        };
        if flags & !allowed != 0 {
            return Err(FrameError::UnknownFlags(flags));
        }
        let timed = kind == REQUEST && flags & FLAG_TIMEOUT != 0;
        let len = if timed { MAX_HEADER_LEN } else { len };
        let header = frame.get(..len).ok_or(FrameError::Truncated)?;
        let method = match kind {
            REQUEST | NOTIFY => header.get(COMMON_HEADER_LEN..COMMON_HEADER_LEN + 8),
            _ => None,
        };
        let method = method
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes);
        let timeout_ms = header
            .get(COMMON_HEADER_LEN + 8..MAX_HEADER_LEN)
            .filter(|_| timed)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes);
        let code = match kind {
            ERROR => header.get(COMMON_HEADER_LEN).copied().unwrap_or(0),
            _ => 0,
        };
        Ok(RawHeader {
            kind,
            id: u32::from_le_bytes([a, b, c, d]),
            method: MethodKey(method),
            timeout_ms,
            code,
            len,
        })
    }

    /// An error frame's error.
    pub(crate) fn error(&self) -> RemoteError {
        RemoteError::from_code(self.code)
    }
}

/// A header to write: its bytes, in a fixed array behind room for the
/// frame's length prefix, and how many there are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeaderBytes {
    bytes: [u8; LEN_PREFIX + MAX_HEADER_LEN],
    len: usize,
}

impl HeaderBytes {
    /// One layout for every kind: the common fields, then up to 8 bytes of
    /// `word` (a method key, or an error code in its low byte), then a
    /// timeout; `len` says how many of them the kind has.
    fn new(kind: u8, flags: u8, id: u32, word: u64, timeout_ms: u32, len: usize) -> Self {
        // One array expression: no per-field slice copies.
        let [i0, i1, i2, i3] = id.to_le_bytes();
        let [w0, w1, w2, w3, w4, w5, w6, w7] = word.to_le_bytes();
        let [t0, t1, t2, t3] = timeout_ms.to_le_bytes();
        let bytes = [
            0, 0, 0, 0, VERSION, kind, flags, i0, i1, i2, i3, w0, w1, w2, w3, w4, w5, w6, w7, t0,
            t1, t2, t3,
        ];
        HeaderBytes { bytes, len }
    }

    /// A request's header.
    pub(crate) fn request(id: u32, method: MethodKey, timeout_ms: Option<u32>) -> Self {
        match timeout_ms {
            Some(ms) => Self::new(REQUEST, FLAG_TIMEOUT, id, method.0, ms, MAX_HEADER_LEN),
            None => Self::new(REQUEST, 0, id, method.0, 0, COMMON_HEADER_LEN + 8),
        }
    }

    /// A notification's header (id 0).
    pub(crate) fn notify(method: MethodKey) -> Self {
        Self::new(NOTIFY, 0, 0, method.0, 0, COMMON_HEADER_LEN + 8)
    }

    /// A response's header.
    pub(crate) fn response(id: u32) -> Self {
        Self::new(RESPONSE, 0, id, 0, 0, COMMON_HEADER_LEN)
    }

    /// An error frame's header.
    pub(crate) fn error(id: u32, error: RemoteError) -> Self {
        Self::error_code(id, error.code())
    }

    /// An error frame's header, with the error's code.
    pub(crate) fn error_code(id: u32, code: u8) -> Self {
        Self::new(ERROR, 0, id, u64::from(code), 0, COMMON_HEADER_LEN + 1)
    }

    /// A cancel's header.
    pub(crate) fn cancel(id: u32) -> Self {
        Self::new(CANCEL, 0, id, 0, 0, COMMON_HEADER_LEN)
    }

    /// The header's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        let end = LEN_PREFIX.saturating_add(self.len);
        self.bytes.get(LEN_PREFIX..end).unwrap_or_default()
    }

    /// The length prefix of a frame with a body of `body_len` bytes and
    /// this header, followed by the header; `None` if the frame's length
    /// does not fit the prefix.
    pub(crate) fn with_prefix(
        &self,
        body_len: usize,
    ) -> Option<([u8; LEN_PREFIX + MAX_HEADER_LEN], usize)> {
        let frame_len = u32::try_from(self.len.checked_add(body_len)?).ok()?;
        let [p0, p1, p2, p3] = frame_len.to_le_bytes();
        let mut bytes = self.bytes;
        bytes[0] = p0;
        bytes[1] = p1;
        bytes[2] = p2;
        bytes[3] = p3;
        Some((bytes, LEN_PREFIX + self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Header;

    /// Every kind, every flags byte, every length up to a long header, the
    /// version right and wrong, ids and keys with distinct bytes: `parse`
    /// agrees with `Header::decode` on the outcome and every field.
    #[test]
    fn parse_agrees_with_header_decode() {
        let mut frame = [0u8; MAX_HEADER_LEN + 2];
        for (i, byte) in frame.iter_mut().enumerate() {
            *byte = 0x10 + i as u8;
        }
        let kinds: &[u8] = if cfg!(miri) {
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 0xff]
        } else {
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 0xfe, 0xff]
        };
        for version in [VERSION, 0, 2] {
            for &kind in kinds {
                for flags in 0..=255u8 {
                    if cfg!(miri) && flags > 4 && flags != 0xff {
                        continue;
                    }
                    frame[0] = version;
                    frame[1] = kind;
                    frame[2] = flags;
                    for len in 0..=frame.len() {
                        let bytes = &frame[..len];
                        let ours = RawHeader::parse(bytes);
                        match Header::decode(bytes) {
                            Err(e) => assert_eq!(ours, Err(e), "{bytes:?}"),
                            Ok((header, body_at)) => {
                                let ours = ours.unwrap();
                                assert_eq!(ours.len, body_at, "{bytes:?}");
                                assert_eq!(ours.kind, header.kind().to_byte());
                                assert_eq!(ours.id, header.id());
                                match header {
                                    Header::Request {
                                        method, timeout_ms, ..
                                    } => {
                                        assert_eq!(ours.method, method);
                                        assert_eq!(ours.timeout_ms, timeout_ms);
                                    }
                                    Header::Notify { method, .. } => {
                                        assert_eq!(ours.method, method)
                                    }
                                    Header::Error { error, .. } => {
                                        assert_eq!(ours.error(), error)
                                    }
                                    _ => {}
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Each header the heap-free drivers write is `Header::encode`'s bytes.
    #[test]
    fn header_bytes_are_header_encode() {
        let key = MethodKey(0x1122_3344_5566_7788);
        let id = 0xA1B2_C3D4;
        let cases = [
            (
                HeaderBytes::request(id, key, None),
                Header::request(id, key, None),
            ),
            (
                HeaderBytes::request(id, key, Some(0x0102_0304)),
                Header::request(id, key, Some(0x0102_0304)),
            ),
            (
                HeaderBytes::notify(key),
                Header::Notify { id: 0, method: key },
            ),
            (HeaderBytes::response(id), Header::Response { id }),
            (HeaderBytes::cancel(id), Header::Cancel { id }),
            (
                HeaderBytes::error(id, RemoteError::DeadlineExceeded),
                Header::Error {
                    id,
                    error: RemoteError::DeadlineExceeded,
                },
            ),
            (
                HeaderBytes::error(id, RemoteError::Other(200)),
                Header::Error {
                    id,
                    error: RemoteError::Other(200),
                },
            ),
        ];
        for (ours, header) in cases {
            let mut expected = [0u8; MAX_HEADER_LEN];
            let n = header.encode(&mut expected).unwrap();
            assert_eq!(ours.as_bytes(), &expected[..n], "{header:?}");
        }
    }
}
