//! The server's idle timeout (`ServerBuilder::idle_timeout`) on a manually
//! advanced clock: a silent or trickling peer is cut off, a busy one is not.

#[path = "reliability/support.rs"]
mod support;

use support::record;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use courier::{CallError, Client, DriverError, ServerBuilder, Transport};
use courier_mem::MemError;
use support::{Flag, ManualClock, ProbeClient, ProbeImpl, Sim};

const IDLE: Duration = Duration::from_secs(10);

type ServerResult = Result<(), DriverError<MemError>>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Polls a server once by hand; returns its result if it finished.
fn poll_once<F: Future + Unpin>(server: &mut F) -> Option<F::Output> {
    let (_, waker) = Flag::new_waker();
    let mut cx = Context::from_waker(&waker);
    match Pin::new(server).poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

#[test]
fn silent_peer_is_closed_after_the_idle_timeout() {
    let clock = ManualClock::new();
    let (mut peer, server_io) = courier_mem::pair(1024);
    let (flag, waker) = Flag::new_waker();
    let mut cx = Context::from_waker(&waker);
    let mut server = ServerBuilder::new()
        .timer(clock.clone())
        .idle_timeout(IDLE)
        .build(server_io, support::service(&ProbeImpl::shared(0)));
    assert!(Pin::new(&mut server).poll(&mut cx).is_pending());
    assert_eq!(clock.next_deadline(), Some(IDLE), "the idle sleep is armed");

    clock.advance(IDLE - Duration::from_millis(1));
    assert!(!flag.take(), "woken before the timeout");
    assert!(Pin::new(&mut server).poll(&mut cx).is_pending());

    clock.advance(Duration::from_millis(1));
    assert!(flag.take(), "the timer wakes the server");
    match Pin::new(&mut server).poll(&mut cx) {
        Poll::Ready(Err(DriverError::IdleTimeout)) => {}
        other => panic!("expected an idle timeout, got {other:?}"),
    }
    drop(server);
    // The connection is freed: the peer sees end of stream.
    let mut buf = [0u8; 8];
    assert!(matches!(
        peer.poll_read(&mut cx, &mut buf),
        Poll::Ready(Ok(0))
    ));
}

#[test]
fn trickling_peer_is_closed_although_bytes_arrive() {
    let clock = ManualClock::new();
    let (mut peer, server_io) = courier_mem::pair(1024);
    let (flag, waker) = Flag::new_waker();
    let mut cx = Context::from_waker(&waker);
    let mut server = ServerBuilder::new()
        .timer(clock.clone())
        .idle_timeout(IDLE)
        .build(server_io, support::service(&ProbeImpl::shared(0)));
    // A valid request frame, sent one byte every 2 seconds (slowloris).
    let mut header = [0u8; 32];
    let n = courier::wire::Header::request(1, ProbeClient::ADD, None)
        .encode(&mut header)
        .unwrap();
    let mut frame = ((n + 2) as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&header[..n]);
    frame.extend_from_slice(&[2, 3]);
    let mut result = None;
    for (i, byte) in frame.iter().enumerate() {
        assert!(matches!(
            peer.poll_write(&mut cx, std::slice::from_ref(byte)),
            Poll::Ready(Ok(1))
        ));
        if let Poll::Ready(r) = Pin::new(&mut server).poll(&mut cx) {
            result = Some((i, clock.now(), r));
            break;
        }
        clock.advance(secs(2));
        flag.take();
    }
    let (_, at, result) = result.expect("the trickling peer was not cut off");
    assert!(
        matches!(result, Err(DriverError::IdleTimeout)),
        "{result:?}"
    );
    assert_eq!(at, IDLE, "closed as soon as the idle period passed");
}

#[test]
fn busy_connection_stays_open_and_idle_counts_from_the_last_activity() {
    let clock = ManualClock::new();
    let (client_io, server_io) = courier_mem::pair(4096);
    let imp = std::sync::Arc::new(ProbeImpl::default());
    let server = ServerBuilder::new()
        .timer(clock.clone())
        .idle_timeout(IDLE)
        .build(server_io, support::service(&imp));
    let (client, driver) = Client::new(client_io);
    let probe = ProbeClient::new(client);
    let mut sim = Sim::new();
    let server_result = record(&mut sim, server);
    let driver_result = record(&mut sim, driver);
    sim.run_until_stalled(100);

    // A call every 6 s for a minute: never 10 s without a frame.
    for i in 0..10u64 {
        let reply = record(&mut sim, probe.add(i, 1));
        sim.run_until_stalled(100);
        assert_eq!(reply.borrow_mut().take(), Some(Ok(i + 1)));
        clock.advance(secs(6));
        sim.run_until_stalled(100);
        assert!(server_result.borrow().is_none(), "closed while busy");
    }

    // A handler that runs for 30 s keeps the connection open...
    let gated = record(&mut sim, probe.gated(7));
    sim.run_until_stalled(100);
    for _ in 0..6 {
        clock.advance(secs(5));
        sim.run_until_stalled(100);
    }
    assert!(
        server_result.borrow().is_none(),
        "closed with a handler running"
    );
    imp.gate.open();
    sim.run_until_stalled(100);
    assert_eq!(gated.borrow_mut().take(), Some(Ok(7)));

    // ...and the idle period starts when its reply is sent.
    clock.advance(IDLE - Duration::from_millis(1));
    sim.run_until_stalled(100);
    assert!(server_result.borrow().is_none(), "closed too early");
    clock.advance(Duration::from_millis(1));
    sim.run_until_stalled(100);
    let result: Option<ServerResult> = server_result.borrow_mut().take();
    assert!(
        matches!(result, Some(Err(DriverError::IdleTimeout))),
        "{result:?}"
    );

    // The client notices, and later calls fail with a typed error.
    let driver_result = driver_result.borrow_mut().take();
    assert!(driver_result.is_some(), "the client driver saw the close");
    let late = record(&mut sim, probe.add(1, 1));
    sim.run_until_stalled(100);
    // The connection is gone: not sent.
    assert_eq!(
        late.borrow_mut().take(),
        Some(Err(CallError::NotSent(courier::Unsent::Disconnected)))
    );
}

#[test]
fn no_idle_timeout_without_the_option() {
    let clock = ManualClock::new();
    let (_peer, server_io) = courier_mem::pair(64);
    let mut server = ServerBuilder::new()
        .timer(clock.clone())
        .build(server_io, support::service(&ProbeImpl::shared(0)));
    assert!(poll_once(&mut server).is_none());
    assert_eq!(clock.next_deadline(), None, "nothing armed");
    clock.advance(secs(3600));
    assert!(poll_once(&mut server).is_none());
}
