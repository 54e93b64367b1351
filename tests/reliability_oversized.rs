//! A peer that announces a huge frame is refused without the memory being
//! allocated. A counting global allocator measures, per thread, the peak of
//! live heap bytes while a driver handles the hostile stream.

#[path = "reliability/support.rs"]
mod support;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use courier::framing::DEFAULT_MAX_FRAME;
use courier::{
    CallError, Client, ClientBuilder, DriverError, FrameError, ServerBuilder, Transport,
};
use support::{Flag, ProbeClient, ProbeImpl};

#[path = "reliability/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

use heap::measure;

/// Polls `future` with a flag waker until it is ready; panics if it waits
/// without having been woken (it would hang).
fn run<F: Future + Unpin>(mut future: F) -> F::Output {
    let (flag, waker) = Flag::new_waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..1000 {
        if let Poll::Ready(out) = Pin::new(&mut future).poll(&mut cx) {
            return out;
        }
        assert!(flag.take(), "pending without a wake-up");
    }
    panic!("did not finish");
}

const FOUR_GIB: [u8; 4] = u32::MAX.to_le_bytes();

/// Everything below this is the read buffer and bookkeeping; a frame of
/// the announced size would be 4 GiB.
const SMALL: usize = 256 * 1024;

#[test]
fn server_refuses_a_4_gib_frame_without_allocating_it() {
    let (mut peer, server_io) = courier_mem::pair(64 * 1024);
    let imp = ProbeImpl::shared(0);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut stream = FOUR_GIB.to_vec();
    stream.extend_from_slice(&[1; 1000]);
    assert!(matches!(
        peer.poll_write(&mut cx, &stream),
        Poll::Ready(Ok(1004))
    ));
    let (result, peak) = measure(|| {
        let server = ServerBuilder::new().build(server_io, support::service(&imp));
        run(server)
    });
    let expected = FrameError::TooLarge {
        len: u32::MAX as usize,
        max: DEFAULT_MAX_FRAME,
    };
    match result {
        Err(DriverError::Protocol(e)) => {
            assert_eq!(e, expected);
            let message = e.to_string();
            assert!(
                message.contains("4294967295") && message.contains("1048576"),
                "{message}"
            );
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(peak < SMALL, "the server held {peak} bytes");
    assert_eq!(
        imp.started.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was dispatched"
    );
    // The connection is closed: the peer sees end of stream.
    let mut buf = [0u8; 16];
    assert!(matches!(
        peer.poll_read(&mut cx, &mut buf),
        Poll::Ready(Ok(0))
    ));
}

#[test]
fn client_refuses_a_4_gib_reply_and_fails_the_call_with_a_typed_error() {
    let (client_io, mut peer) = courier_mem::pair(64 * 1024);
    let (client, driver) = Client::new(client_io);
    let probe = ProbeClient::new(client);
    let ((call, driver), peak) = measure(|| {
        let mut call = Box::pin(probe.add(1, 2));
        let mut driver = driver;
        let (_, waker) = Flag::new_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(call.as_mut().poll(&mut cx).is_pending());
        assert!(Pin::new(&mut driver).poll(&mut cx).is_pending());
        // The "server" answers with a 4 GiB frame.
        assert!(matches!(
            peer.poll_write(&mut cx, &FOUR_GIB),
            Poll::Ready(Ok(4))
        ));
        let driver = run(&mut driver);
        (run(call), driver)
    });
    let expected = FrameError::TooLarge {
        len: u32::MAX as usize,
        max: DEFAULT_MAX_FRAME,
    };
    assert!(
        matches!(driver, Err(DriverError::Protocol(e)) if e == expected),
        "{driver:?}"
    );
    assert_eq!(call, Err(CallError::Protocol(expected)));
    assert!(peak < SMALL, "the client held {peak} bytes");
}

#[test]
fn a_large_announced_frame_under_the_limit_costs_only_what_arrives() {
    // A generous limit (64 MiB): a peer that announces a frame of that size
    // and then sends 10 bytes must not make the driver reserve 64 MiB.
    let max = 64 << 20;
    let (client_io, mut peer) = courier_mem::pair(64 * 1024);
    let (client, driver) = ClientBuilder::new().max_frame(max).build(client_io);
    let probe = ProbeClient::new(client);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut stream = ((max - 1) as u32).to_le_bytes().to_vec();
    stream.extend_from_slice(&[0; 10]);
    let ((), peak) = measure(|| {
        let mut call = Box::pin(probe.add(1, 2));
        let mut driver = driver;
        assert!(call.as_mut().poll(&mut cx).is_pending());
        assert!(Pin::new(&mut driver).poll(&mut cx).is_pending());
        assert!(matches!(
            peer.poll_write(&mut cx, &stream),
            Poll::Ready(Ok(14))
        ));
        assert!(Pin::new(&mut driver).poll(&mut cx).is_pending());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        // The peer goes away mid-frame: the call fails with a typed error.
        drop(peer);
        assert!(matches!(run(&mut driver), Err(DriverError::Closed)));
        assert_eq!(run(call), Err(CallError::ConnectionLost));
    });
    assert!(peak < SMALL, "the client held {peak} bytes");
}
