//! The codec against known vectors, and `CobsTransport` in both
//! directions: block boundaries, every byte value, the frame limit below,
//! at and above it, bad frames skipped and counted, delivery in any split.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::convert::Infallible;
use core::task::{Context, Poll};

use proptest::prelude::*;

use super::*;
use crate::framing::split_frame;
use crate::wire::{Header, MethodKey};

/// A link: reads hand out `input` `chunk` bytes at a time (then end of
/// stream); writes take at most `chunk` bytes and collect them.
struct Link {
    input: Vec<u8>,
    at: usize,
    chunk: usize,
    sent: Vec<u8>,
}

impl Link {
    fn new(input: Vec<u8>, chunk: usize) -> Self {
        Link {
            input,
            at: 0,
            chunk,
            sent: Vec::new(),
        }
    }
}

impl Transport for Link {
    type Error = Infallible;
    fn poll_read(
        &mut self,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Infallible>> {
        let n = buf.len().min(self.chunk).min(self.input.len() - self.at);
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Poll::Ready(Ok(n))
    }
    fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, Infallible>> {
        let n = buf.len().min(self.chunk);
        self.sent.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
}

fn cx_run<R>(f: impl FnOnce(&mut Context<'_>) -> R) -> R {
    let waker = futures_util::task::noop_waker();
    f(&mut Context::from_waker(&waker))
}

/// A frame with a valid header and `body` (any bytes).
fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut head = [0u8; crate::wire::MAX_HEADER_LEN];
    let n = Header::request(id, MethodKey(0x1122_3344_5566_7788), None)
        .encode(&mut head)
        .unwrap();
    let mut f = head[..n].to_vec();
    f.extend_from_slice(body);
    f
}

fn encoded(frame: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; max_encoded_len(frame.len())];
    let n = encode(frame, &mut out).unwrap();
    out.truncate(n);
    out
}

/// Everything a transport yields until end of stream, split into frames.
fn read_frames<T: Transport<Error = Infallible>>(t: &mut T, read_size: usize) -> Vec<Vec<u8>> {
    let mut stream = Vec::new();
    let mut buf = vec![0u8; read_size];
    cx_run(|cx| loop {
        match t.poll_read(cx, &mut buf) {
            Poll::Ready(Ok(0)) => break,
            Poll::Ready(Ok(n)) => stream.extend_from_slice(&buf[..n]),
            other => panic!("{other:?}"),
        }
    });
    let mut frames = Vec::new();
    let mut rest = &stream[..];
    while let Some((f, used)) = split_frame(rest, usize::MAX).unwrap() {
        frames.push(f.to_vec());
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "only whole frames come out");
    frames
}

/// Writes `frames` length-prefixed through a COBS transport, `write_size`
/// bytes per call, and returns what reached the link.
fn write_frames<T: Transport<Error = Infallible>>(
    t: &mut T,
    frames: &[Vec<u8>],
    write_size: usize,
) {
    let mut stream = Vec::new();
    for f in frames {
        stream.extend_from_slice(&(f.len() as u32).to_le_bytes());
        stream.extend_from_slice(f);
    }
    cx_run(|cx| {
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = rest.len().min(write_size);
            match t.poll_write(cx, &rest[..n]) {
                Poll::Ready(Ok(k)) if k > 0 => rest = &rest[k..],
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(t.poll_flush(cx), Poll::Ready(Ok(()))));
    });
}

/// Decodes `raw` with a Vec-backed and a heap-free transport alike
/// (frame limit `max`), reading `read_size` bytes at a time from a link
/// that delivers `chunk` bytes per read. Returns the frames and the skip
/// count, which must agree between both.
fn decode_both(raw: &[u8], max: usize, chunk: usize, read_size: usize) -> (Vec<Vec<u8>>, u32) {
    let stats = Arc::new(FramingStats::new());
    let mut t = CobsTransport::with_vecs(Link::new(raw.to_vec(), chunk), max, stats.clone());
    let frames = read_frames(&mut t, read_size);
    // The heap-free one: IN = max + 4 for the limits used here.
    let fixed = FramingStats::new();
    let fixed_frames = match max {
        64 => {
            let mut b = CobsBuffers::<68, 300>::new();
            read_frames(
                &mut CobsTransport::new(Link::new(raw.to_vec(), chunk), &mut b, &fixed),
                read_size,
            )
        }
        600 => {
            let mut b = CobsBuffers::<604, 300>::new();
            read_frames(
                &mut CobsTransport::new(Link::new(raw.to_vec(), chunk), &mut b, &fixed),
                read_size,
            )
        }
        _ => frames.clone(),
    };
    assert_eq!(frames, fixed_frames, "Vec and fixed buffers agree");
    if matches!(max, 64 | 600) {
        assert_eq!(stats.skipped(), fixed.skipped());
    }
    (frames, stats.skipped())
}

#[test]
fn known_vectors() {
    let cases: &[(&[u8], &[u8])] = &[
        (&[], &[0x01, 0x00]),
        (&[0x00], &[0x01, 0x01, 0x00]),
        (&[0x00, 0x00], &[0x01, 0x01, 0x01, 0x00]),
        (
            &[0x11, 0x22, 0x00, 0x33],
            &[0x03, 0x11, 0x22, 0x02, 0x33, 0x00],
        ),
        (
            &[0x11, 0x22, 0x33, 0x44],
            &[0x05, 0x11, 0x22, 0x33, 0x44, 0x00],
        ),
        (
            &[0x11, 0x00, 0x00, 0x00],
            &[0x02, 0x11, 0x01, 0x01, 0x01, 0x00],
        ),
    ];
    // PROTOCOL.md 2.1's example.
    let spec_frame = [
        0x01, 0, 0, 1, 0, 0, 0, 0xcb, 0x4a, 0x31, 0xcc, 0x83, 0xc1, 0x76, 0x2f, 2, 3,
    ];
    let spec_sent = [
        0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x01, 0x0b, 0xcb, 0x4a, 0x31, 0xcc, 0x83, 0xc1, 0x76,
        0x2f, 0x02, 0x03, 0x00,
    ];
    assert_eq!(encoded(&spec_frame), spec_sent);
    let (got, _) = decode_both(&spec_sent, 64, 1, 64);
    assert_eq!(got, [spec_frame.to_vec()]);
    for (plain, enc) in cases {
        assert_eq!(encoded(plain), *enc, "{plain:02x?}");
    }
    // 254 non-zero bytes: one full block, no empty block after it.
    let run: Vec<u8> = (1..=254).collect();
    let mut expected = vec![0xFF];
    expected.extend_from_slice(&run);
    expected.push(0);
    assert_eq!(encoded(&run), expected);
    // 255 bytes 0x00..=0xFE.
    let run: Vec<u8> = (0..=254).collect();
    let mut expected = vec![0x01, 0xFF];
    expected.extend(1..=254u8);
    expected.push(0);
    assert_eq!(encoded(&run), expected);
    // 255 bytes 0x01..=0xFF: a full block, then a block of one.
    let run: Vec<u8> = (1..=255).collect();
    let mut expected = vec![0xFF];
    expected.extend(1..=254u8);
    expected.extend([0x02, 0xFF, 0x00]);
    assert_eq!(encoded(&run), expected);
    // 254 non-zero bytes then a zero.
    let mut run: Vec<u8> = (2..=255).collect();
    run.push(0);
    let mut expected = vec![0xFF];
    expected.extend(2..=255u8);
    expected.extend([0x01, 0x01, 0x00]);
    assert_eq!(encoded(&run), expected);
}

#[test]
fn encode_needs_room_and_max_encoded_len_suffices() {
    for len in [0, 1, 253, 254, 255, 508, 509, 1000] {
        let plain: Vec<u8> = (0..len).map(|i| (i % 7) as u8 + 1).collect();
        let need = encoded(&plain).len();
        assert!(need <= max_encoded_len(len), "{len}");
        let mut out = vec![0u8; need];
        assert_eq!(encode(&plain, &mut out[..need - 1]), None);
        assert_eq!(encode(&plain, &mut out), Some(need));
        assert!(!out[..need - 1].contains(&0), "no zero but the delimiter");
    }
    assert_eq!(max_encoded_len(usize::MAX), usize::MAX);
}

/// Bodies around the 254-byte block boundaries, of every byte value and
/// of zero runs, through the writer and back through the reader, in any
/// split of reads and writes.
#[test]
fn roundtrip_across_block_boundaries_and_splits() {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let lens: &[usize] = if cfg!(miri) {
        &[0, 240, 247, 494]
    } else {
        &[0, 1, 238, 239, 240, 247, 248, 492, 493, 494, 580]
    };
    for &len in lens {
        bodies.push((0..len).map(|i| (i % 256) as u8).collect());
        bodies.push((0..len).map(|i| (255 - i % 256) as u8).collect());
        bodies.push(vec![0; len]);
        bodies.push(vec![0xFF; len]);
    }
    let frames: Vec<Vec<u8>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| frame(i as u32, b))
        .collect();
    let splits: &[(usize, usize)] = if cfg!(miri) {
        &[(7, 3), (4096, 4096)]
    } else {
        &[(1, 1), (1, 4096), (7, 3), (4096, 4096), (300, 100)]
    };
    for &(chunk, size) in splits {
        let stats = FramingStats::new();
        let mut bufs = CobsBuffers::<604, 300>::new();
        let mut w = CobsTransport::new(Link::new(Vec::new(), chunk), &mut bufs, &stats);
        write_frames(&mut w, &frames, size);
        let raw = core::mem::take(&mut w.io.sent);
        let direct: Vec<u8> = frames.iter().flat_map(|f| encoded(f)).collect();
        assert_eq!(raw, direct, "the streaming encoder matches encode()");
        let (got, skipped) = decode_both(&raw, 600, chunk, size.max(1));
        assert_eq!(got, frames, "chunk {chunk}, size {size}");
        assert_eq!(skipped, 0);
    }
}

/// Frames of the limit minus one, the limit, and one more: the last is
/// skipped and counted once, and the frame after it arrives.
#[test]
fn frame_limit_below_at_and_above() {
    let max = 64;
    let head = frame(0, &[]).len();
    let sizes = [max - 1, max, max + 1, max + 300];
    let mut raw = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        raw.extend(encoded(&frame(i as u32, &vec![0xAB; size - head])));
    }
    raw.extend(encoded(&frame(9, b"after")));
    for chunk in [1, 5, 4096] {
        let (got, skipped) = decode_both(&raw, max, chunk, 4096);
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lens, [max - 1, max, head + 5], "chunk {chunk}");
        assert_eq!(skipped, 2);
    }
}

/// Empty frames are ignored; a frame that fails COBS decoding (a block
/// cut by the delimiter), decodes to nothing, or has a bad header is
/// skipped and counted; the frames around them arrive.
#[test]
fn bad_frames_are_skipped_and_counted() {
    let good = frame(1, b"ok");
    let mut bad_version = good.clone();
    bad_version[0] = 9;
    let mut raw = vec![0, 0, 0];
    raw.extend(encoded(&good));
    raw.extend([0x05, 0x11, 0x22, 0x00]); // block of 4 cut after 2
    raw.extend(encoded(&good));
    raw.extend([0x01, 0x00]); // decodes to no bytes: no header
    raw.extend(encoded(&bad_version));
    raw.extend(encoded(&good[..5])); // truncated header
    raw.extend([0, 0]);
    raw.extend(encoded(&good));
    raw.extend([0x07, 0x01]); // cut by the end of the stream: dropped
    for chunk in [1, 3, 4096] {
        let (got, skipped) = decode_both(&raw, 64, chunk, 4096);
        assert_eq!(
            got,
            [good.clone(), good.clone(), good.clone()],
            "chunk {chunk}"
        );
        assert_eq!(skipped, 4);
    }
}

/// A small read buffer above the transport gets a frame in pieces, never
/// a piece of a bad frame.
#[test]
fn small_reads_get_whole_frames_in_pieces() {
    let frames = vec![frame(1, &[0; 40]), frame(2, &[1; 3])];
    let raw: Vec<u8> = frames.iter().flat_map(|f| encoded(f)).collect();
    let (got, _) = decode_both(&raw, 64, 4096, 1);
    assert_eq!(got, frames);
}

/// The writer never needs more than its output buffer: a link that takes
/// one byte per write still gets every frame.
#[test]
fn writer_with_a_slow_link() {
    let count = if cfg!(miri) { 1 } else { 5 };
    let frames: Vec<Vec<u8>> = (0..count).map(|i| frame(i, &[i as u8; 590])).collect();
    let stats = FramingStats::new();
    let mut bufs = CobsBuffers::<604, { MIN_OUT }>::new();
    let mut w = CobsTransport::new(Link::new(Vec::new(), 1), &mut bufs, &stats);
    write_frames(&mut w, &frames, 4096);
    let direct: Vec<u8> = frames.iter().flat_map(|f| encoded(f)).collect();
    assert_eq!(w.io.sent, direct);
}

/// Under miri: few cases, and no failure files (miri isolates the file
/// system).
fn config() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig {
            cases: 2,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    } else {
        ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any frames, any splits: written then read, they come back equal.
    #[test]
    fn roundtrip(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..6),
        chunk in 1usize..600,
        size in 1usize..600,
    ) {
        let frames: Vec<Vec<u8>> = bodies.iter().enumerate().map(|(i, b)| frame(i as u32, b)).collect();
        let stats = Arc::new(FramingStats::new());
        let mut w = CobsTransport::with_vecs(Link::new(Vec::new(), chunk), 1024, stats.clone());
        write_frames(&mut w, &frames, size);
        let raw = core::mem::take(&mut w.io.sent);
        let mut r = CobsTransport::with_vecs(Link::new(raw, chunk), 1024, stats.clone());
        prop_assert_eq!(read_frames(&mut r, size), frames);
        prop_assert_eq!(stats.skipped(), 0);
    }

    /// Garbage between frames costs at most the frame after it: every
    /// frame not directly behind garbage arrives, in order, and nothing
    /// that arrives was not sent.
    #[test]
    fn garbage_costs_at_most_the_next_frame(
        garbage in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 8),
        chunk in 1usize..64,
    ) {
        let frames: Vec<Vec<u8>> = (0..8).map(|i| frame(i, &[i as u8, 0, 7])).collect();
        let mut raw = Vec::new();
        for (f, g) in frames.iter().zip(&garbage) {
            raw.extend_from_slice(g);
            raw.extend(encoded(f));
        }
        let (got, _) = decode_both(&raw, 64, chunk, 4096);
        for (i, f) in frames.iter().enumerate() {
            if garbage[i].is_empty() || garbage[i].last() == Some(&0) {
                prop_assert!(got.contains(f), "frame {} lost", i);
            }
        }
        let mut sent = frames.iter();
        for g in &got {
            if frames.contains(g) {
                prop_assert!(sent.any(|f| f == g), "out of order");
            } else {
                // Garbage that happened to decode with a valid header.
                prop_assert!(Header::decode(g).is_ok());
            }
        }
    }
}
