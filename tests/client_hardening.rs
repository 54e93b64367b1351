//! The client's guarantees under pressure (issue 8), each on a deterministic
//! executor and a manual clock: bounded request queue, requests taken back
//! when their call ends before they leave the process, timeouts counted
//! from the first poll with the time left on the wire, at-most-once across
//! reconnects, reconnect backoff that cannot storm or spin, user code
//! outside the client's lock.

#[path = "reliability/support.rs"]
mod support;

use support::record;

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use courier::client::{ConnectionState, Outage, ReconnectPolicy};
use courier::wire::Header;
use courier::{CallError, Client, ClientBuilder, ServerBuilder, Transport, Unsent};
use courier_mem::fault::Faults;
use courier_mem::MemTransport;
use support::{Flag, ManualClock, ProbeClient, ProbeImpl, Sim};

/// Polls `future` once with `waker`.
fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

/// The server end of a pair, read frame by frame by the test.
struct RawPeer {
    io: MemTransport,
    buf: Vec<u8>,
}

impl RawPeer {
    fn new(io: MemTransport) -> Self {
        RawPeer {
            io,
            buf: Vec::new(),
        }
    }

    /// Every complete frame readable now: (header, body).
    fn frames(&mut self) -> Vec<(Header, Vec<u8>)> {
        let (_, waker) = Flag::new_waker();
        let mut cx = Context::from_waker(&waker);
        let mut chunk = [0u8; 64 * 1024];
        while let Poll::Ready(Ok(n)) = self.io.poll_read(&mut cx, &mut chunk) {
            if n == 0 {
                break;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let mut frames = Vec::new();
        while let Some((frame, used)) = courier::framing::split_frame(&self.buf, 1 << 20).unwrap() {
            let (header, at) = Header::decode(frame).unwrap();
            frames.push((header, frame[at..].to_vec()));
            self.buf.drain(..used);
        }
        frames
    }

    /// Answers request `id` with the postcard encoding of `value`.
    fn reply<T: serde::Serialize>(&mut self, id: u32, value: &T) {
        let mut w = courier::framing::FrameWriter::new(1 << 20);
        w.encode(&Header::Response { id }, value).unwrap();
        let (_, waker) = Flag::new_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(w.poll_write_all(&mut self.io, &mut cx).is_ready());
    }
}

fn request_ids(frames: &[(Header, Vec<u8>)]) -> Vec<u32> {
    frames
        .iter()
        .filter_map(|(h, _)| match h {
            Header::Request { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

const FRAME_OF_ECHO_1000: usize = 4 + 15 + 2 + 1000;

/// `max_queued_bytes` below, at and above a multiple of the frame size:
/// with the transport stalled, the queue holds exactly the frames that fit
/// under the mark (plus the one that crosses it), the rest wait in their
/// slots, and once released every call completes in order.
#[test]
fn queued_request_bytes_stay_under_the_mark() {
    let f = FRAME_OF_ECHO_1000;
    // (mark, frames queued while the writer holds the first one)
    for (mark, queued) in [(1, 1), (5 * f - 1, 5), (5 * f, 5), (5 * f + 1, 6)] {
        let (client_io, server_io) = courier_mem::pair(1 << 20);
        let (client_io, faults) = Faults::new().wrap(client_io);
        faults.stall_writes();
        let imp = ProbeImpl::shared(0);
        let server = ServerBuilder::new().build(server_io, support::service(&imp));
        let (client, driver) = ClientBuilder::new().max_queued_bytes(mark).build(client_io);
        let probe = ProbeClient::new(client.clone());
        let mut sim = Sim::new();
        let _server = record(&mut sim, server);
        let _driver = record(&mut sim, driver);
        let calls: Vec<_> = (0..20u8)
            .map(|i| record(&mut sim, probe.echo(vec![i; 1000])))
            .collect();
        sim.run_until_stalled(10_000);
        // One frame sits in the stalled writer; `queued` frames wait in the
        // queue; every other call holds its encoded request in its slot.
        assert_eq!(client.queued_bytes(), queued * f, "mark {mark}");
        assert_eq!(client.in_flight(), 20);
        faults.release_writes();
        sim.run_until_stalled(100_000);
        for (i, call) in calls.iter().enumerate() {
            assert_eq!(call.borrow_mut().take(), Some(Ok(vec![i as u8; 1000])));
        }
        assert_eq!(client.queued_bytes(), 0);
        assert_eq!(imp.started.load(Ordering::SeqCst), 20);
    }
}

/// Calls dropped while their request waits in the queue, in the stalled
/// writer, or parked in their slot are never sent: the server runs none of
/// them, and later calls work.
#[test]
fn a_call_dropped_before_its_request_leaves_is_never_sent() {
    let (client_io, server_io) = courier_mem::pair(1 << 20);
    let (client_io, faults) = Faults::new().wrap(client_io);
    faults.stall_writes();
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new().build(server_io, support::service(&imp));
    let (client, driver) = ClientBuilder::new()
        .max_queued_bytes(2 * FRAME_OF_ECHO_1000)
        .build(client_io);
    let probe = ProbeClient::new(client.clone());
    let mut sim = Sim::new();
    let _server = record(&mut sim, server);
    let _driver = record(&mut sim, driver);
    let (_, waker) = Flag::new_waker();
    // The first goes to the writer, two to the queue, the rest are parked.
    let mut calls: Vec<_> = (0..6u8).map(|i| probe.echo(vec![i; 1000])).collect();
    for call in &mut calls {
        assert!(poll_once(call, &waker).is_pending());
        sim.run_until_stalled(1000);
    }
    assert_eq!(client.queued_bytes(), 2 * FRAME_OF_ECHO_1000);
    drop(calls);
    sim.run_until_stalled(1000);
    assert_eq!(client.in_flight(), 0);
    assert_eq!(client.queued_bytes(), 0);
    faults.release_writes();
    sim.run_until_stalled(1000);
    assert_eq!(imp.started.load(Ordering::SeqCst), 0, "a dropped call ran");
    assert_eq!(faults.bytes_written(), 0, "bytes of dropped calls left");
    let later = record(&mut sim, probe.add(2, 3));
    sim.run_until_stalled(1000);
    assert_eq!(later.borrow_mut().take(), Some(Ok(5)));
}

/// When the connection is lost, the call whose request was handed to the
/// transport may have run (`ConnectionLost`, not retryable); the calls
/// still queued or parked in the client were certainly not sent
/// (`NotSent`, retryable), and neither are later ones.
#[test]
fn a_lost_connection_tells_sent_from_unsent_calls() {
    let (client_io, server_io) = courier_mem::pair(1 << 20);
    let (client_io, faults) = Faults::new().wrap(client_io);
    faults.stall_writes();
    let (client, driver) = ClientBuilder::new()
        .max_queued_bytes(2 * FRAME_OF_ECHO_1000)
        .build(client_io);
    let probe = ProbeClient::new(client.clone());
    let mut sim = Sim::new();
    let _driver = record(&mut sim, driver);
    // The first goes to the writer, two to the queue, the rest are parked.
    let calls: Vec<_> = (0..6u8)
        .map(|i| {
            let call = record(&mut sim, probe.echo(vec![i; 1000]));
            sim.run_until_stalled(1000);
            call
        })
        .collect();
    assert_eq!(client.queued_bytes(), 2 * FRAME_OF_ECHO_1000);
    assert_eq!(client.connection(), ConnectionState::Connected);
    drop(server_io); // the server vanishes
    sim.run_until_stalled(1000);
    let results: Vec<_> = calls.iter().map(|c| c.borrow_mut().take()).collect();
    assert_eq!(results[0], Some(Err(CallError::ConnectionLost)));
    for result in &results[1..] {
        assert_eq!(*result, Some(Err(CallError::NotSent(Unsent::Disconnected))));
    }
    assert!(!CallError::ConnectionLost.is_retryable());
    assert!(CallError::NotSent(Unsent::Disconnected).is_retryable());
    let later = record(&mut sim, probe.add(2, 3));
    sim.run_until_stalled(1000);
    assert_eq!(
        later.borrow_mut().take(),
        Some(Err(CallError::NotSent(Unsent::Disconnected)))
    );
    assert_eq!(client.connection(), ConnectionState::Closed);
    assert_eq!(client.in_flight(), 0);
}

/// A call whose timeout passes while its request waits for a stalled
/// transport fails with `DeadlineExceeded` and is never sent.
#[test]
fn a_call_that_expires_before_its_request_leaves_is_never_sent() {
    let clock = ManualClock::new();
    let (client_io, server_io) = courier_mem::pair(1 << 20);
    let (client_io, faults) = Faults::new().wrap(client_io);
    faults.stall_writes();
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new().build(server_io, support::service(&imp));
    let (client, driver) = ClientBuilder::new().timer(clock.clone()).build(client_io);
    let timed = ProbeClient::new(client.clone()).with_timeout(Duration::from_millis(100));
    let mut sim = Sim::new();
    let _server = record(&mut sim, server);
    let _driver = record(&mut sim, driver);
    // One in the writer, one in the queue.
    let first = record(&mut sim, timed.add(1, 1));
    let second = record(&mut sim, timed.add(2, 2));
    sim.run_until_stalled(1000);
    clock.advance(Duration::from_millis(150));
    sim.run_until_stalled(1000);
    assert_eq!(*first.borrow(), Some(Err(CallError::DeadlineExceeded)));
    assert_eq!(*second.borrow(), Some(Err(CallError::DeadlineExceeded)));
    faults.release_writes();
    sim.run_until_stalled(1000);
    assert_eq!(imp.started.load(Ordering::SeqCst), 0, "an expired call ran");
    assert_eq!(client.in_flight(), 0);
}

/// With one slot held, a second call's timeout runs while it waits for the
/// slot; when it is finally written, the wire carries the time left.
#[test]
fn the_timeout_counts_from_the_first_poll_and_the_wire_carries_the_time_left() {
    let clock = ManualClock::new();
    let (client_io, server_io) = courier_mem::pair(1 << 20);
    let mut peer = RawPeer::new(server_io);
    let (client, driver) = ClientBuilder::new()
        .timer(clock.clone())
        .max_in_flight(1)
        .build(client_io);
    let probe = ProbeClient::new(client.clone());
    let timed = probe.with_timeout(Duration::from_millis(100));
    let mut sim = Sim::new();
    let _driver = record(&mut sim, driver);
    let first = record(&mut sim, probe.add(1, 1));
    let second = record(&mut sim, timed.add(2, 2));
    let third = record(&mut sim, timed.add(3, 3));
    sim.run_until_stalled(1000);
    let frames = peer.frames();
    assert_eq!(frames.len(), 1);
    let first_id = request_ids(&frames)[0];

    clock.advance(Duration::from_millis(60));
    peer.reply(first_id, &2u64);
    sim.run_until_stalled(1000);
    assert_eq!(first.borrow_mut().take(), Some(Ok(2)));
    let frames = peer.frames();
    let Some((Header::Request { id, timeout_ms, .. }, _)) = frames.first().cloned() else {
        panic!("second request not sent: {frames:?}");
    };
    assert_eq!(timeout_ms, Some(40), "60 ms of the 100 were spent waiting");

    // The third waits for the slot past its deadline: it fails there.
    clock.advance(Duration::from_millis(50));
    sim.run_until_stalled(1000);
    assert_eq!(
        third.borrow_mut().take(),
        Some(Err(CallError::DeadlineExceeded))
    );
    assert!(second.borrow().is_some(), "the second expired too");
    assert!(request_ids(&peer.frames()).is_empty());
    assert_eq!(id, id.max(first_id), "ids only grow");
}

/// Request ids are a counter: consecutive calls get consecutive ids, so an
/// id does not come back soon after its call ended.
#[test]
fn request_ids_are_not_reused_by_consecutive_calls() {
    let (client_io, server_io) = courier_mem::pair(1 << 20);
    let mut peer = RawPeer::new(server_io);
    let (client, driver) = ClientBuilder::new().max_in_flight(1).build(client_io);
    let probe = ProbeClient::new(client.clone());
    let mut sim = Sim::new();
    let _driver = record(&mut sim, driver);
    let mut seen = Vec::new();
    for i in 0..100u64 {
        let call = record(&mut sim, probe.add(i, 0));
        sim.run_until_stalled(1000);
        let ids = request_ids(&peer.frames());
        assert_eq!(ids.len(), 1);
        peer.reply(ids[0], &i);
        sim.run_until_stalled(1000);
        assert_eq!(call.borrow_mut().take(), Some(Ok(i)));
        seen.push(ids[0]);
    }
    let expected: Vec<u32> = (seen[0]..seen[0] + 100).collect();
    assert_eq!(seen, expected);
}

/// A connector for the reconnecting client: refuses while `refuse` is set,
/// or accepts and hands the server end to the test.
#[derive(Clone, Default)]
struct Dialer {
    refuse: Arc<AtomicBool>,
    /// Accept, then close at once (a server at its connection limit).
    close_at_once: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    accepted: Rc<RefCell<Vec<MemTransport>>>,
}

impl Dialer {
    fn connector(&self) -> impl FnMut() -> std::future::Ready<io::Result<MemTransport>> {
        let this = self.clone();
        move || {
            this.attempts.fetch_add(1, Ordering::SeqCst);
            if this.refuse.load(Ordering::SeqCst) {
                return std::future::ready(Err(io::ErrorKind::ConnectionRefused.into()));
            }
            let (client, server) = courier_mem::pair(1 << 20);
            if !this.close_at_once.load(Ordering::SeqCst) {
                this.accepted.borrow_mut().push(server);
            }
            std::future::ready(Ok(client))
        }
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

/// Under `Outage::Wait`, a call that failed during the outage (its own
/// timeout passed) is never sent after the connection comes back, while a
/// call still waiting is.
#[test]
fn a_call_that_failed_during_an_outage_is_never_sent_after_it() {
    let clock = ManualClock::new();
    let dialer = Dialer::default();
    dialer.refuse.store(true, Ordering::SeqCst);
    let policy = ReconnectPolicy::new()
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .outage(Outage::Wait {
            max_wait: Duration::from_secs(10),
        });
    let (client, driver) = ClientBuilder::new()
        .timer(clock.clone())
        .build_reconnecting(dialer.connector(), policy);
    let probe = ProbeClient::new(client.clone());
    let timed = probe.with_timeout(Duration::from_millis(50));
    let mut sim = Sim::new();
    let _driver = record(&mut sim, driver);
    let failed = record(&mut sim, timed.add(1, 1));
    let waits = record(&mut sim, probe.add(2, 2));
    sim.run_until_stalled(1000);
    for _ in 0..6 {
        clock.advance(Duration::from_millis(10));
        sim.run_until_stalled(1000);
    }
    // Its time ran out while the client could not connect: it fails with
    // the refused attempt's error, as never sent.
    let failed = failed.borrow_mut().take().expect("failed");
    let Err(CallError::Connect(refused)) = failed else {
        panic!("{failed:?}");
    };
    assert_eq!(refused.kind(), courier::TransportErrorKind::Refused);
    assert_eq!(refused.io_kind(), Some(io::ErrorKind::ConnectionRefused));
    assert!(failed.unwrap_err().is_retryable());
    assert!(waits.borrow().is_none());
    dialer.refuse.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_millis(10));
    sim.run_until_stalled(1000);
    let server_io = dialer.accepted.borrow_mut().pop().expect("reconnected");
    let mut peer = RawPeer::new(server_io);
    let frames = peer.frames();
    assert_eq!(frames.len(), 1, "only the waiting call is sent: {frames:?}");
    peer.reply(request_ids(&frames)[0], &4u64);
    sim.run_until_stalled(1000);
    assert_eq!(waits.borrow_mut().take(), Some(Ok(4)));
}

/// A call whose request was written on a connection that is then lost
/// fails with the connection's error and is not re-sent on the next one.
#[test]
fn a_call_sent_on_a_lost_connection_fails_and_is_not_resent() {
    let clock = ManualClock::new();
    let dialer = Dialer::default();
    let policy = ReconnectPolicy::new().outage(Outage::Wait {
        max_wait: Duration::from_secs(10),
    });
    let (client, driver) = ClientBuilder::new()
        .timer(clock.clone())
        .build_reconnecting(dialer.connector(), policy);
    let probe = ProbeClient::new(client.clone());
    let mut sim = Sim::new();
    let _driver = record(&mut sim, driver);
    let lost = record(&mut sim, probe.add(1, 1));
    sim.run_until_stalled(1000);
    let first = dialer.accepted.borrow_mut().pop().unwrap();
    let mut peer = RawPeer::new(first);
    assert_eq!(request_ids(&peer.frames()).len(), 1);
    drop(peer); // the server dies with the call in flight
    sim.run_until_stalled(1000);
    let result = lost.borrow_mut().take();
    // It may have run: the one error for a vanished peer, not retryable.
    assert_eq!(result, Some(Err(CallError::ConnectionLost)));
    assert!(!CallError::ConnectionLost.is_retryable());
    // The client reconnects at once (the lost link was up for no time but
    // not healthy: it waits one backoff); the new server sees nothing.
    clock.advance(Duration::from_secs(1));
    sim.run_until_stalled(1000);
    let second = dialer.accepted.borrow_mut().pop().expect("reconnected");
    assert!(
        RawPeer::new(second).frames().is_empty(),
        "the call was re-sent"
    );
}

/// A server that accepts and closes at once is dialled at the backoff's
/// pace (doubling), never in a loop.
#[test]
fn a_server_that_closes_at_once_is_dialled_at_the_backoff_pace() {
    let clock = ManualClock::new();
    let dialer = Dialer::default();
    dialer.close_at_once.store(true, Ordering::SeqCst);
    let policy =
        ReconnectPolicy::new().backoff(Duration::from_millis(10), Duration::from_millis(40));
    let (client, driver) = ClientBuilder::new()
        .timer(clock.clone())
        .build_reconnecting(dialer.connector(), policy);
    let mut sim = Sim::new();
    let _driver = record(&mut sim, driver);
    sim.run_until_stalled(1000);
    assert_eq!(dialer.attempts(), 1);
    // Backoffs 10, 20, 40, 40 ms.
    for (advance, attempts) in [(9, 1), (1, 2), (19, 2), (1, 3), (40, 4), (40, 5)] {
        clock.advance(Duration::from_millis(advance));
        sim.run_until_stalled(1000);
        assert_eq!(dialer.attempts(), attempts, "after +{advance} ms");
    }
    drop(client);
}

/// A zero backoff with a connector that fails at once does not spin: the
/// attempts wait for the 1 ms minimum on the (frozen) clock.
#[test]
fn a_zero_backoff_with_a_failing_connector_does_not_spin() {
    let clock = ManualClock::new();
    let dialer = Dialer::default();
    dialer.refuse.store(true, Ordering::SeqCst);
    let policy = ReconnectPolicy::new().backoff(Duration::ZERO, Duration::ZERO);
    let (client, driver) = ClientBuilder::new()
        .timer(clock.clone())
        .build_reconnecting(dialer.connector(), policy);
    let mut sim = Sim::new();
    let _driver = record(&mut sim, driver);
    sim.run_until_stalled(1000);
    assert_eq!(dialer.attempts(), 1);
    clock.advance(Duration::from_millis(1));
    sim.run_until_stalled(1000);
    assert_eq!(dialer.attempts(), 2);
    drop(client);
}

/// Losing a connection that delivered a reply redials at once and resets
/// the backoff.
#[test]
fn losing_a_healthy_connection_redials_at_once() {
    let clock = ManualClock::new();
    let dialer = Dialer::default();
    let policy = ReconnectPolicy::new().backoff(Duration::from_millis(10), Duration::from_secs(1));
    let (client, driver) = ClientBuilder::new()
        .timer(clock.clone())
        .build_reconnecting(dialer.connector(), policy);
    let probe = ProbeClient::new(client.clone());
    let mut sim = Sim::new();
    let _driver = record(&mut sim, driver);
    let call = record(&mut sim, probe.add(1, 2));
    sim.run_until_stalled(1000);
    let mut peer = RawPeer::new(dialer.accepted.borrow_mut().pop().unwrap());
    let id = request_ids(&peer.frames())[0];
    peer.reply(id, &3u64);
    sim.run_until_stalled(1000);
    assert_eq!(call.borrow_mut().take(), Some(Ok(3)));
    drop(peer);
    sim.run_until_stalled(1000);
    assert_eq!(dialer.attempts(), 2, "redialled without waiting");
}

/// A `Serialize` that panics.
struct Boom;

impl serde::Serialize for Boom {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("Serialize panicked on purpose")
    }
}

/// A `Deserialize` that panics.
#[derive(Debug)]
struct Bust;

impl<'de> serde::Deserialize<'de> for Bust {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("Deserialize panicked on purpose")
    }
}

/// A panicking `Serialize` or `Deserialize` fails only its own call: the
/// slot comes back and the next calls (with a single slot) go through.
#[test]
fn a_panicking_serialize_or_deserialize_fails_only_its_own_call() {
    let (client_io, server_io) = courier_mem::pair(1 << 20);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new().build(server_io, support::service(&imp));
    let (client, driver) = ClientBuilder::new().max_in_flight(1).build(client_io);
    let probe = ProbeClient::new(client.clone());
    let mut sim = Sim::new();
    let _server = record(&mut sim, server);
    let _driver = record(&mut sim, driver);
    let (_, waker) = Flag::new_waker();

    let mut boom = client.call::<Boom, u64>(ProbeClient::ADD, Boom);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_once(&mut boom, &waker)
    }));
    assert!(panicked.is_err());
    drop(boom);
    assert_eq!(client.in_flight(), 0);
    let ok = record(&mut sim, probe.add(1, 2));
    sim.run_until_stalled(1000);
    assert_eq!(ok.borrow_mut().take(), Some(Ok(3)));

    let mut bust = client.call::<(u64, u64), Bust>(ProbeClient::ADD, (1, 2));
    assert!(poll_once(&mut bust, &waker).is_pending());
    sim.run_until_stalled(1000);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_once(&mut bust, &waker)
    }));
    assert!(panicked.is_err());
    drop(bust);
    assert_eq!(client.in_flight(), 0);
    let ok = record(&mut sim, probe.add(2, 2));
    sim.run_until_stalled(1000);
    assert_eq!(ok.borrow_mut().take(), Some(Ok(4)));
}

/// A waker that calls back into the client when woken, as an executor
/// running the task inline would.
struct Reentrant {
    client: Client,
    woken: AtomicUsize,
}

impl Wake for Reentrant {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        // Deadlocks if the client wakes while holding its lock.
        let _ = self.client.in_flight();
        let _ = self.client.queued_bytes();
        self.woken.fetch_add(1, Ordering::SeqCst);
    }
}

/// Wakers run after the client's lock is released: a waker that takes it
/// again (slot grant, reply, deadline, close) does not deadlock.
#[test]
fn wakers_run_outside_the_clients_lock() {
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let clock = ManualClock::new();
        let (client_io, server_io) = courier_mem::pair(1 << 20);
        let imp = ProbeImpl::shared(0);
        let server = ServerBuilder::new().build(server_io, support::service(&imp));
        let (client, driver) = ClientBuilder::new()
            .timer(clock.clone())
            .max_in_flight(1)
            .build(client_io);
        let probe = ProbeClient::new(client.clone());
        let timed = probe.with_timeout(Duration::from_millis(5));
        let reentrant = Arc::new(Reentrant {
            client: client.clone(),
            woken: AtomicUsize::new(0),
        });
        let waker = Waker::from(reentrant.clone());
        let mut sim = Sim::new();
        let _server = record(&mut sim, server);
        let _driver = record(&mut sim, driver);
        // A reply wakes the first; a granted slot wakes the second; a
        // deadline wakes the third.
        let mut first = probe.gated(1);
        let mut second = probe.add(1, 1);
        let mut third = timed.add(2, 2);
        assert!(poll_once(&mut first, &waker).is_pending());
        assert!(poll_once(&mut second, &waker).is_pending());
        sim.run_until_stalled(1000);
        imp.gate.open();
        sim.run_until_stalled(1000);
        assert_eq!(poll_once(&mut first, &waker), Poll::Ready(Ok(1)));
        assert!(poll_once(&mut second, &waker).is_pending());
        assert!(poll_once(&mut third, &waker).is_pending());
        sim.run_until_stalled(1000);
        assert_eq!(poll_once(&mut second, &waker), Poll::Ready(Ok(2)));
        drop(second);
        clock.advance(Duration::from_millis(10));
        sim.run_until_stalled(1000);
        let third = poll_once(&mut third, &waker);
        done_tx
            .send((reentrant.woken.load(Ordering::SeqCst), third))
            .unwrap();
    });
    let (woken, third) = done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("deadlock: a waker ran under the client's lock");
    assert!(woken >= 3, "woken {woken} times");
    assert!(matches!(third, Poll::Ready(_)), "{third:?}");
}

/// Extreme configuration values saturate instead of panicking: unbounded
/// limits, a `Duration::MAX` timeout (the wire carries `u32::MAX` ms), and
/// a reconnect policy of `Duration::MAX` everywhere.
#[test]
fn extreme_client_configuration_saturates() {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(1));
    let (client_io, server_io) = courier_mem::pair(1 << 20);
    let mut peer = RawPeer::new(server_io);
    let (client, driver) = ClientBuilder::new()
        .timer(clock.clone())
        .max_in_flight(usize::MAX)
        .max_frame(usize::MAX)
        .max_queued_bytes(usize::MAX)
        .build(client_io);
    let timed = ProbeClient::new(client.clone()).with_timeout(Duration::MAX);
    let mut sim = Sim::new();
    let _driver = record(&mut sim, driver);
    let call = record(&mut sim, timed.add(1, 2));
    sim.run_until_stalled(1000);
    let frames = peer.frames();
    let Some((Header::Request { id, timeout_ms, .. }, _)) = frames.first().cloned() else {
        panic!("not sent: {frames:?}");
    };
    assert_eq!(timeout_ms, Some(u32::MAX));
    clock.advance(Duration::from_secs(1 << 40));
    peer.reply(id, &3u64);
    sim.run_until_stalled(1000);
    assert_eq!(call.borrow_mut().take(), Some(Ok(3)));

    let dialer = Dialer::default();
    dialer.refuse.store(true, Ordering::SeqCst);
    let policy = ReconnectPolicy::new()
        .backoff(Duration::MAX, Duration::MAX)
        .healthy_after(Duration::MAX)
        .outage(Outage::Wait {
            max_wait: Duration::MAX,
        });
    let (client, driver) = ClientBuilder::new()
        .timer(clock.clone())
        .build_reconnecting(dialer.connector(), policy);
    let timed = ProbeClient::new(client.clone()).with_timeout(Duration::MAX);
    let mut sim = Sim::new();
    let _driver = record(&mut sim, driver);
    let waiting = record(&mut sim, timed.add(1, 1));
    sim.run_until_stalled(1000);
    clock.advance(Duration::from_secs(1 << 40));
    sim.run_until_stalled(1000);
    assert_eq!(dialer.attempts(), 1, "the backoff saturates far away");
    assert!(waiting.borrow().is_none(), "the call still waits");
}

/// Requests and replies up to 256 bytes travel through the caller's stack,
/// larger ones through the slot's buffer: echoes whose request frame and
/// reply body cross that size (below, at and above) all come back intact,
/// with the transport stalled (parked requests) and not.
#[test]
fn frames_around_the_inline_size_round_trip() {
    for stalled in [false, true] {
        let (client_io, server_io) = courier_mem::pair(1 << 20);
        let (client_io, faults) = Faults::new().wrap(client_io);
        let imp = ProbeImpl::shared(0);
        let server = ServerBuilder::new().build(server_io, support::service(&imp));
        let (client, driver) = ClientBuilder::new().max_queued_bytes(300).build(client_io);
        let probe = ProbeClient::new(client.clone());
        let mut sim = Sim::new();
        let _server = record(&mut sim, server);
        let _driver = record(&mut sim, driver);
        if stalled {
            faults.stall_writes();
        }
        // Request frame = 4 + 15 + 2 + n bytes: 256 at n = 235. Reply
        // body = 2 + n bytes: 256 at n = 254.
        let sizes: Vec<usize> = (230..=260).collect();
        let calls: Vec<_> = sizes
            .iter()
            .map(|&n| record(&mut sim, probe.echo(vec![n as u8; n])))
            .collect();
        sim.run_until_stalled(10_000);
        faults.release_writes();
        sim.run_until_stalled(10_000);
        for (call, &n) in calls.iter().zip(&sizes) {
            assert_eq!(
                call.borrow_mut().take(),
                Some(Ok(vec![n as u8; n])),
                "{n} B"
            );
        }
        assert_eq!(client.in_flight(), 0);
    }
}
