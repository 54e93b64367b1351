//! Edits on buffers of encoded frames that have not left the process yet:
//! taking back the request of a call that ended before it was sent, and
//! rewriting a request's timeout to the time left when it is written.
//!
//! The buffers hold whole frames back to back (`u32` LE length, header,
//! body), as the client encoded them, so they can be walked by their length
//! prefixes; nothing here trusts peer input.

use alloc::vec::Vec;
use core::ops::Range;

use crate::framing::LEN_PREFIX;
use crate::wire::{COMMON_HEADER_LEN, VERSION};

/// Offset of the timeout inside a request frame (after the length prefix).
const TIMEOUT_AT: usize = LEN_PREFIX + COMMON_HEADER_LEN + 8;

/// Kind byte of a request.
const REQUEST: u8 = 0;

/// Flag bit: the request carries a timeout.
const FLAG_TIMEOUT: u8 = 1;

/// One frame found in a buffer.
struct Frame {
    range: Range<usize>,
    request_id: Option<u32>,
    timed: bool,
}

/// Walks the frames of `buf[from..]`; `from` must be a frame boundary.
fn frames(buf: &[u8], mut from: usize) -> impl Iterator<Item = Frame> + '_ {
    core::iter::from_fn(move || {
        let prefix = buf.get(from..from.checked_add(LEN_PREFIX)?)?;
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let end = from.checked_add(LEN_PREFIX)?.checked_add(len)?;
        let frame = buf.get(from + LEN_PREFIX..end)?;
        let request = frame.first() == Some(&VERSION) && frame.get(1) == Some(&REQUEST);
        let request_id = match frame.get(3..7) {
            Some(id) if request => Some(u32::from_le_bytes([id[0], id[1], id[2], id[3]])),
            _ => None,
        };
        let timed = request && frame.get(2).is_some_and(|f| f & FLAG_TIMEOUT != 0);
        let found = Frame {
            range: from..end,
            request_id,
            timed,
        };
        from = end;
        Some(found)
    })
}

/// The first frame boundary at or after `at` (frames before it may have
/// been partly handed to the transport).
pub(crate) fn boundary_at_or_after(buf: &[u8], at: usize) -> usize {
    frames(buf, 0)
        .map(|f| f.range.start)
        .chain(core::iter::once(buf.len()))
        .find(|&start| start >= at)
        .unwrap_or(buf.len())
}

/// Removes the request frame with `id` from `buf[from..]`; returns whether
/// it was there.
pub(crate) fn remove_request(buf: &mut Vec<u8>, from: usize, id: u32) -> bool {
    let found = frames(buf, from).find(|f| f.request_id == Some(id));
    match found {
        Some(frame) => {
            buf.drain(frame.range);
            true
        }
        None => false,
    }
}

/// Rewrites the timeout of every timed request in `buf` to
/// `time_left(id)` milliseconds. Requests for which it returns `None` (their
/// time is up) are removed, and their ids handed to `expired`.
pub(crate) fn refresh_timeouts(
    buf: &mut Vec<u8>,
    mut time_left: impl FnMut(u32) -> Option<u32>,
    mut expired: impl FnMut(u32),
) {
    let mut at = 0;
    loop {
        let next = frames(buf, at).next();
        let Some(frame) = next else {
            return;
        };
        let (Some(id), true) = (frame.request_id, frame.timed) else {
            at = frame.range.end;
            continue;
        };
        match time_left(id) {
            Some(ms) => {
                let field = frame.range.start + TIMEOUT_AT;
                if let Some(bytes) = buf.get_mut(field..field + 4) {
                    bytes.copy_from_slice(&ms.to_le_bytes());
                }
                at = frame.range.end;
            }
            None => {
                buf.drain(frame.range);
                expired(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::encode_frame;
    use crate::wire::{Header, MethodKey};

    fn request(buf: &mut Vec<u8>, id: u32, timeout_ms: Option<u32>) {
        let header = Header::request(id, MethodKey(9), timeout_ms);
        encode_frame(buf, &header, &(1u8, 2u8), 1024).unwrap();
    }

    #[test]
    fn removes_only_the_named_request() {
        let mut buf = Vec::new();
        request(&mut buf, 1, None);
        encode_frame(&mut buf, &Header::Cancel { id: 2 }, &(), 1024).unwrap();
        request(&mut buf, 2, Some(5));
        request(&mut buf, 3, None);
        let mut expected = Vec::new();
        request(&mut expected, 1, None);
        encode_frame(&mut expected, &Header::Cancel { id: 2 }, &(), 1024).unwrap();
        request(&mut expected, 3, None);
        assert!(remove_request(&mut buf, 0, 2));
        assert_eq!(buf, expected);
        // A cancel frame with the same id is not a request.
        assert!(!remove_request(&mut buf, 0, 2));
        // Frames before `from` are not touched.
        let second = boundary_at_or_after(&buf, 1);
        assert!(!remove_request(&mut buf, second, 1));
        assert!(remove_request(&mut buf, second, 3));
    }

    #[test]
    fn boundaries_skip_partly_written_frames() {
        let mut buf = Vec::new();
        request(&mut buf, 1, None); // 4 + 15 + 2 bytes
        request(&mut buf, 2, None);
        assert_eq!(boundary_at_or_after(&buf, 0), 0);
        assert_eq!(boundary_at_or_after(&buf, 1), 21);
        assert_eq!(boundary_at_or_after(&buf, 21), 21);
        assert_eq!(boundary_at_or_after(&buf, 22), 42);
        assert_eq!(boundary_at_or_after(&buf, 42), 42);
    }

    #[test]
    fn refreshes_timeouts_and_drops_expired_requests() {
        let mut buf = Vec::new();
        request(&mut buf, 1, Some(100));
        request(&mut buf, 2, None);
        request(&mut buf, 3, Some(100));
        let mut gone = Vec::new();
        refresh_timeouts(&mut buf, |id| (id == 1).then_some(40), |id| gone.push(id));
        assert_eq!(gone, [3]);
        let mut expected = Vec::new();
        request(&mut expected, 1, Some(40));
        request(&mut expected, 2, None);
        assert_eq!(buf, expected);
    }

    #[test]
    fn garbage_is_walked_without_panicking() {
        let mut buf = alloc::vec![0xff, 0xff, 0xff, 0xff, 1, 0];
        assert!(!remove_request(&mut buf, 0, 0));
        refresh_timeouts(&mut buf, |_| None, |_| {});
        assert_eq!(boundary_at_or_after(&buf, 3), 6);
    }
}
