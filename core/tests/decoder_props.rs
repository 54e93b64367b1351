//! Property tests: the decoders never panic on arbitrary bytes, and frames
//! survive any split of the byte stream.

use std::task::{Context, Poll};

use courier::framing::{split_frame, FrameReader, FrameWriter, LEN_PREFIX};
use courier::wire::{Header, MethodKey};
use courier::{FrameError, Transport};
use proptest::prelude::*;

/// Serves a byte stream in chunks of the given sizes.
struct Chunked {
    bytes: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    turn: usize,
}

impl Transport for Chunked {
    type Error = std::io::Error;
    fn poll_read(&mut self, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let size = self.sizes[self.turn % self.sizes.len()].max(1);
        self.turn += 1;
        let n = size.min(buf.len()).min(self.bytes.len() - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Poll::Ready(Ok(n))
    }
    fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reads every frame from `io` until EOF or an error; returns the frames'
/// bytes and the error, if any.
fn read_all(io: &mut Chunked, max_frame: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut reader = FrameReader::new(max_frame);
    let mut frames = Vec::new();
    loop {
        match reader.next_frame() {
            Err(e) => return (frames, Some(e)),
            Ok(Some(frame)) => {
                frames.push(frame.to_vec());
                continue;
            }
            Ok(None) => {}
        }
        match reader.poll_fill(io, &mut cx) {
            Poll::Ready(Ok(0)) => {
                let cut = reader
                    .has_partial_frame()
                    .then_some(FrameError::UnexpectedEof);
                return (frames, cut);
            }
            Poll::Ready(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Under miri: few cases (each is ~1000x slower there), and no failure
/// files (miri isolates the file system).
fn config() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig {
            cases: 4,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    } else {
        ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn header_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok((header, at)) = Header::decode(&bytes) {
            prop_assert!(at <= bytes.len());
            prop_assert_eq!(at, header.encoded_len());
        }
    }

    #[test]
    fn split_frame_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..512) {
        match split_frame(&bytes, max) {
            Ok(Some((frame, used))) => {
                prop_assert!(frame.len() <= max);
                prop_assert_eq!(used, frame.len() + LEN_PREFIX);
            }
            Ok(None) => {}
            Err(FrameError::TooLarge { len, max: m }) => prop_assert!(len > m),
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }

    #[test]
    fn frame_reader_on_random_bytes_never_panics_nor_overreads(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        sizes in proptest::collection::vec(1usize..300, 1..8),
        max in 0usize..1024,
    ) {
        let mut io = Chunked { bytes, at: 0, sizes, turn: 0 };
        let (frames, _) = read_all(&mut io, max);
        for frame in frames {
            prop_assert!(frame.len() <= max);
        }
    }

    #[test]
    fn frames_survive_any_split_of_the_stream(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..20),
        sizes in proptest::collection::vec(1usize..700, 1..8),
    ) {
        let mut writer = FrameWriter::new(1024);
        let mut expected = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            let header = Header::request(i as u32, MethodKey(i as u64), None);
            writer.encode(&header, body).unwrap();
            let mut frame = vec![0u8; header.encoded_len()];
            header.encode(&mut frame).unwrap();
            frame.extend(postcard::to_allocvec(body).unwrap());
            expected.push(frame);
        }
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut sink = Chunked { bytes: Vec::new(), at: 0, sizes: vec![1], turn: 0 };
        let mut bytes = Vec::new();
        // Capture what the writer sends.
        struct Capture<'a>(&'a mut Vec<u8>);
        impl Transport for Capture<'_> {
            type Error = std::io::Error;
            fn poll_read(&mut self, _: &mut Context<'_>, _: &mut [u8]) -> Poll<std::io::Result<usize>> { Poll::Ready(Ok(0)) }
            fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
                let n = buf.len().min(97);
                self.0.extend_from_slice(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> { Poll::Ready(Ok(())) }
            fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> { Poll::Ready(Ok(())) }
        }
        let written = writer.poll_write_all(&mut Capture(&mut bytes), &mut cx);
        prop_assert!(matches!(written, Poll::Ready(Ok(()))));
        sink.bytes = bytes;
        sink.sizes = sizes;
        let (frames, error) = read_all(&mut sink, 1024);
        prop_assert_eq!(error, None);
        prop_assert_eq!(frames, expected);
    }
}

#[test]
fn a_four_gib_announcement_is_rejected_from_the_prefix_alone() {
    let mut io = Chunked {
        bytes: vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        at: 0,
        sizes: vec![7],
        turn: 0,
    };
    let (frames, error) = read_all(&mut io, 1 << 20);
    assert!(frames.is_empty());
    assert_eq!(
        error,
        Some(FrameError::TooLarge {
            len: u32::MAX as usize,
            max: 1 << 20
        })
    );
}
