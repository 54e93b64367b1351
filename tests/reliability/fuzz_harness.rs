//! The fuzz harness functions, shared by the cargo-fuzz targets in `fuzz/`
//! and by the regression test that replays stored inputs
//! (`tests/reliability_fuzz_regressions.rs`). Each function takes arbitrary
//! bytes and panics only on a real bug; the crate root must also declare
//! `mod support` (`tests/reliability/support.rs`).
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use courier::framing::{split_frame, FrameReader, LEN_PREFIX};
use courier::wire::{FrameKind, Header, MAX_HEADER_LEN, VERSION};
use courier::{DriverError, FrameError, ServerBuilder, Transport};
use courier_mem::fault::{Faults, Pattern};

use crate::support::{self, Flag, ManualClock, ProbeImpl};

/// The frame decoder: [`FrameReader`], fed the stream in seeded chunk sizes
/// with seeded delays, must yield exactly the frames and the error that
/// [`split_frame`] finds on the whole stream.
///
/// Input: 2 bytes of frame limit, 1 byte of chunking seed, then the stream.
pub fn frame_decoder(data: &[u8]) {
    let [a, b, seed, ref stream @ ..] = *data else {
        return;
    };
    let max_frame = usize::from(u16::from_le_bytes([a, b]));

    // The reference: split_frame over the whole buffer.
    let mut expected = Vec::new();
    let mut at = 0;
    let outcome = loop {
        match split_frame(&stream[at..], max_frame) {
            Ok(Some((frame, used))) => {
                assert_eq!(used, LEN_PREFIX + frame.len());
                assert!(frame.len() <= max_frame);
                expected.push(frame);
                at += used;
            }
            Ok(None) => break Ok(stream.len() - at),
            Err(e) => break Err(e),
        }
    };

    let (mut source, sink) = courier_mem::pair(stream.len().max(1));
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    if !stream.is_empty() {
        assert_eq!(
            source.poll_write(&mut cx, stream),
            Poll::Ready(Ok(stream.len()))
        );
    }
    drop(source);
    let (mut sink, _) = Faults::new()
        .read_chunks(Pattern::seeded(
            u64::from(seed),
            1,
            usize::from(seed % 64) + 1,
        ))
        .delay_reads(Pattern::seeded(u64::from(seed) << 8, 0, 2))
        .wrap(sink);
    let mut reader = FrameReader::new(max_frame);
    let mut got = 0;
    for _ in 0..stream.len() * 4 + 16 {
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    assert_eq!(Some(&frame), expected.get(got), "frame {got} differs");
                    got += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(outcome, Err(e));
                    assert_eq!(got, expected.len());
                    return;
                }
            }
        }
        match reader.poll_fill(&mut sink, &mut cx) {
            Poll::Ready(Ok(0)) => {
                assert_eq!(got, expected.len(), "frames lost");
                let leftover = outcome.expect("split_frame failed, the reader did not");
                assert_eq!(reader.has_partial_frame(), leftover > 0);
                return;
            }
            Poll::Ready(Ok(_)) | Poll::Pending => {}
            Poll::Ready(Err(e)) => panic!("in-memory read failed: {e}"),
        }
    }
    panic!("the reader made no progress");
}

/// The header parser: whatever [`Header::decode`] accepts encodes back to
/// the same bytes; what it rejects, it rejects for the right reason.
pub fn header(data: &[u8]) {
    match Header::decode(data) {
        Ok((header, body_at)) => {
            assert!(body_at <= data.len());
            assert_eq!(body_at, header.encoded_len());
            let mut buf = [0u8; MAX_HEADER_LEN];
            let n = header.encode(&mut buf).expect("a decoded header encodes");
            assert_eq!(&buf[..n], &data[..body_at], "{header:?}");
            assert_eq!(header.id().to_le_bytes(), data[3..7]);
            assert_eq!(FrameKind::from_byte(header.kind().to_byte()), header.kind());
            assert_eq!(Header::decode(&buf[..n]), Ok((header, n)));
        }
        Err(FrameError::Truncated) => assert!(data.len() < MAX_HEADER_LEN),
        Err(FrameError::UnsupportedVersion(v)) => {
            assert_eq!(v, data[0]);
            assert_ne!(v, VERSION);
        }
        Err(FrameError::UnknownFlags(flags)) => assert_eq!(flags, data[2]),
        Err(other) => panic!("unexpected decode error {other:?}"),
    }
}

/// A spawner whose tasks the harness polls itself.
type Spawned = Arc<Mutex<Vec<Pin<Box<dyn Future<Output = ()> + Send>>>>>;

/// The server driver, fed an arbitrary byte stream through `courier-mem`:
/// it must finish once the stream ends, never panic, never stall, and leave
/// no handler behind; whatever it sends must be valid reply frames.
///
/// Input: 3 bytes of configuration (read chunking; flags: spawner, idle
/// timeout, end the stream at once or only when the server is quiet;
/// concurrency), then the stream. Returns the bytes the server sent.
pub fn server_stream(data: &[u8]) -> Vec<u8> {
    let [chunk, seed, flags, ref stream @ ..] = *data else {
        return Vec::new();
    };
    let spawn = flags & 1 != 0;
    let idle = flags & 2 != 0;
    let close_early = flags & 4 != 0;
    let max_concurrent = usize::from(flags >> 4) + 1;

    let (mut peer, server_io) = courier_mem::pair(512);
    let (server_io, server_faults) = Faults::new()
        .read_chunks(Pattern::seeded(u64::from(seed), 1, usize::from(chunk) + 1))
        .wrap(server_io);
    let clock = ManualClock::new();
    let imp = ProbeImpl::shared(8192);
    let mut builder = ServerBuilder::new()
        .max_frame(4096)
        .max_concurrent(max_concurrent)
        .timer(clock.clone());
    if idle {
        builder = builder.idle_timeout(Duration::from_millis(500));
    }
    let spawned: Spawned = Arc::default();
    if spawn {
        let queue = spawned.clone();
        builder = builder.spawner(move |task| queue.lock().unwrap().push(task));
    }
    let mut server = builder.build(server_io, support::service(&imp));

    let (server_flag, server_waker) = Flag::new_waker();
    server_flag.set();
    let mut tasks = Vec::new();
    let noop = std::task::Waker::noop();
    let mut cx = Context::from_waker(noop);
    let mut sent = 0;
    let mut closed = false;
    let mut replies = Vec::new();
    let mut gate_opened = false;
    let mut result = None;
    // Clock jumps in a row with nothing else happening: a server waiting
    // only on its timers (an idle check re-armed while a handler waits on
    // the gate) must not keep the gate shut forever.
    let mut jumps = 0;
    for _ in 0..2_000_000 {
        let mut progress = false;
        let moved_before = (sent, replies.len(), closed, tasks.len());
        if server_flag.take() {
            progress = true;
            let mut server_cx = Context::from_waker(&server_waker);
            if let Poll::Ready(r) = Pin::new(&mut server).poll(&mut server_cx) {
                result = Some(r);
                break;
            }
        }
        tasks.extend(spawned.lock().unwrap().drain(..).map(|task| {
            let (flag, waker) = Flag::new_waker();
            flag.set();
            (task, flag, waker)
        }));
        tasks.retain_mut(|(task, flag, waker)| {
            if !flag.take() {
                return true;
            }
            progress = true;
            jumps = 0;
            task.as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending()
        });
        if sent < stream.len() {
            if let Poll::Ready(Ok(n)) = peer.poll_write(&mut cx, &stream[sent..]) {
                sent += n;
                progress |= n > 0;
            }
        } else if close_early && !closed {
            assert!(peer.poll_close(&mut cx).is_ready());
            closed = true;
            progress = true;
        }
        let mut buf = [0u8; 1024];
        while let Poll::Ready(Ok(n @ 1..)) = peer.poll_read(&mut cx, &mut buf) {
            replies.extend_from_slice(&buf[..n]);
            progress = true;
        }
        if moved_before != (sent, replies.len(), closed, tasks.len()) {
            jumps = 0;
        }
        clock.advance(Duration::from_millis(1));
        if !progress && !server_flag.is_set() {
            // Quiet: time passes until the next sleep is due; handlers
            // waiting on the gate wait for the world outside, and the
            // server waits for the end of the stream. Past those, anything
            // still waiting is a lost wake-up.
            match clock.next_deadline() {
                Some(at) if jumps < 100 => {
                    jumps += 1;
                    clock.advance(at.saturating_sub(clock.now()));
                    continue;
                }
                _ => jumps = 0,
            }
            if !gate_opened {
                gate_opened = true;
                imp.gate.open();
            } else if sent == stream.len() && !closed {
                assert!(peer.poll_close(&mut cx).is_ready());
                closed = true;
            } else {
                panic!("the server stalled without finishing");
            }
        }
    }
    let result = result.expect("the server did not finish");
    let mut buf = [0u8; 1024];
    while let Poll::Ready(Ok(n @ 1..)) = peer.poll_read(&mut cx, &mut buf) {
        replies.extend_from_slice(&buf[..n]);
    }
    assert_eq!(server.in_flight(), 0, "handlers left behind");
    match result {
        Ok(()) | Err(DriverError::Protocol(_)) => {}
        // Idle with bytes it never read: it stopped reading for no reason.
        Err(DriverError::IdleTimeout) => assert_eq!(
            server_faults.bytes_read(),
            sent,
            "idle timeout with unread requests"
        ),
        Err(other) => panic!("unexpected server error {other}"),
    }
    // A protocol error ends the connection at once: a reply being written
    // then is cut off (the client sees the connection close mid-frame).
    let protocol_error = matches!(result, Err(DriverError::Protocol(_)));
    check_replies(&replies, protocol_error);
    replies
}

/// Everything the server sent is a sequence of whole reply frames (the last
/// one may be cut off if `cut` is allowed).
fn check_replies(mut bytes: &[u8], cut: bool) {
    while let Some((frame, used)) = split_frame(bytes, 4096).expect("reply over the limit") {
        let (header, _) = Header::decode(frame).expect("invalid reply header");
        assert!(
            matches!(header, Header::Response { .. } | Header::Error { .. }),
            "{header:?}"
        );
        bytes = &bytes[used..];
    }
    assert!(cut || bytes.is_empty(), "a reply frame was cut off");
}
