//! Stream semantics that must hold (issue 9), deterministic: one thread,
//! the [`Sim`] executor over courier-mem, a [`ManualClock`] shared by both
//! peers, and no wall clock anywhere.
//!
//! - Endings (PROTOCOL.md R11) are visible on both sides as distinct typed
//!   outcomes: normal end, handler panic, consumer cancel, deadline,
//!   connection loss (the server dropped, or the transport cut) — for the
//!   caller, for the handler's stream (a drop guard says whether it was
//!   dropped after its end or unfinished) and for a request-stream consumer
//!   moved out of its handler (`Streaming` docs in core/src/stream.rs).
//! - Limits count streams: `max_in_flight` (client) and `max_concurrent`
//!   (server, `WhenFull::Queue` and `Reject`) count a stream as one call
//!   from its request to its terminal frame.

#[path = "reliability/support.rs"]
mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use courier::{
    BoxStream, CallError, ClientBuilder, RemoteError, ServerBuilder, Streaming, WhenFull,
};
use courier_mem::fault::{CutKind, FaultHandle, Faults};
use futures::StreamExt;
use support::{ManualClock, Sim};

/// No panic.
const NEVER: u32 = u32::MAX;

/// What a `take` handler does once it handed its items over.
const HOLD: u8 = 0;
const RETURN: u8 = 1;
const PANIC: u8 = 2;

#[courier::service]
pub trait Ends {
    /// Items `0..n`; polling item `panic_at` panics. Guarded.
    async fn count(&self, n: u32, panic_at: u32) -> BoxStream<u32>;
    /// Hands its request stream to the test (as if moved into another
    /// task), then holds forever, returns 0 or panics (`HOLD`, `RETURN`,
    /// `PANIC`). Guarded while it holds.
    async fn take(&self, then: u8, items: Streaming<u32>) -> u32;
    /// Adds.
    async fn add(&self, a: u32, b: u32) -> u32;
}

#[derive(Default)]
struct State {
    /// `count` handlers started.
    started: AtomicUsize,
    /// One entry per dropped guard: whether its stream had ended normally.
    drops: Mutex<Vec<bool>>,
    /// Request streams handed over by `take`.
    handed: Mutex<Vec<Streaming<u32>>>,
}

#[derive(Clone, Default)]
struct Imp(Arc<State>);

/// Records its drop, and whether it came after the end.
struct Guard {
    state: Arc<State>,
    ended: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.state.drops.lock().unwrap().push(self.ended);
    }
}

struct Counting {
    guard: Guard,
    next: u32,
    n: u32,
    panic_at: u32,
}

impl futures::Stream for Counting {
    type Item = u32;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<u32>> {
        let i = self.next;
        assert!(i != self.panic_at, "the stream fails at item {i}");
        if i >= self.n {
            self.guard.ended = true;
            return Poll::Ready(None);
        }
        self.next += 1;
        Poll::Ready(Some(i))
    }
}

impl Ends for Imp {
    async fn count(&self, n: u32, panic_at: u32) -> BoxStream<u32> {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        let guard = Guard {
            state: self.0.clone(),
            ended: false,
        };
        Box::pin(Counting {
            guard,
            next: 0,
            n,
            panic_at,
        })
    }

    async fn take(&self, then: u8, items: Streaming<u32>) -> u32 {
        self.0.handed.lock().unwrap().push(items);
        match then {
            HOLD => {
                let _guard = Guard {
                    state: self.0.clone(),
                    ended: false,
                };
                futures::future::pending::<()>().await;
                unreachable!()
            }
            PANIC => panic!("the handler fails after handing its items over"),
            _ => 0,
        }
    }

    async fn add(&self, a: u32, b: u32) -> u32 {
        a + b
    }
}

/// A client and a server over courier-mem on a [`Sim`], with a shared
/// manual clock, a fault handle on the client's transport and a switch that
/// drops the server future.
struct World {
    sim: Sim<'static>,
    clock: ManualClock,
    state: Arc<State>,
    ends: EndsClient,
    faults: FaultHandle,
    server_faults: FaultHandle,
    kill: Option<futures::channel::oneshot::Sender<()>>,
}

fn world(server: ServerBuilder<ManualClock>, client: ClientBuilder<ManualClock>) -> World {
    let clock = ManualClock::new();
    let state = Arc::new(State::default());
    let (a, b) = courier_mem::pair(64 * 1024);
    let (a, faults) = Faults::new().cut_kind(CutKind::Reset).wrap(a);
    let (b, server_faults) = Faults::new().cut_kind(CutKind::Reset).wrap(b);
    let server = server
        .timer(clock.clone())
        .build(b, EndsServer::new(Imp(state.clone())));
    let (client, driver) = client.timer(clock.clone()).build(a);
    let (kill, killed) = futures::channel::oneshot::channel::<()>();
    let mut sim = Sim::new();
    sim.spawn(async move {
        // Dropping the server future when killed.
        let _ = futures::future::select(Box::pin(server), killed).await;
    });
    sim.spawn(async move {
        let _ = driver.await;
    });
    World {
        sim,
        clock: clock.clone(),
        state,
        ends: EndsClient::new(client),
        faults,
        server_faults,
        kill: Some(kill),
    }
}

fn plain() -> World {
    world(
        ServerBuilder::new().timer(ManualClock::new()),
        ClientBuilder::new().timer(ManualClock::new()),
    )
}

impl World {
    /// Polls `f` (with a waker nobody needs: the test polls again after
    /// every run of the executor) until it is ready or nothing moves any
    /// more; `None` if it is still pending then.
    fn drive<F: Future + Unpin>(&mut self, f: &mut F) -> Option<F::Output> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..64 {
            if let Poll::Ready(out) = Pin::new(&mut *f).poll(&mut cx) {
                return Some(out);
            }
            if self.sim.run_until_stalled(1_000_000) == 0 {
                // Nothing ran: poll once more (the last poll may have
                // queued work), then give up.
                if let Poll::Ready(out) = Pin::new(&mut *f).poll(&mut cx) {
                    return Some(out);
                }
                if self.sim.run_until_stalled(1_000_000) == 0 {
                    return None;
                }
            }
        }
        panic!("still busy after 64 rounds");
    }

    /// The next item of `stream`, or `None` if it is still pending.
    fn next<S: futures::Stream + Unpin>(&mut self, stream: &mut S) -> Option<Option<S::Item>> {
        self.drive(&mut stream.next())
    }

    fn run(&mut self) {
        self.sim.run_until_stalled(1_000_000);
    }

    fn drops(&self) -> Vec<bool> {
        self.state.drops.lock().unwrap().clone()
    }

    /// The request stream the last `take` handler handed over.
    fn handed(&self) -> Streaming<u32> {
        self.state
            .handed
            .lock()
            .unwrap()
            .pop()
            .expect("a handed stream")
    }

    /// Everything a moved request-stream consumer sees until its end.
    fn drain(&mut self, mut items: Streaming<u32>) -> Vec<Result<u32, CallError>> {
        let mut seen = Vec::new();
        loop {
            match self.next(&mut items) {
                Some(Some(item)) => seen.push(item),
                Some(None) => return seen,
                None => panic!("the moved consumer hangs after {seen:?}"),
            }
        }
    }

    /// The link breaks: both ends' reads and writes fail.
    fn cut_link(&mut self) {
        self.faults.cut();
        self.server_faults.cut();
    }

    fn kill_server(&mut self) {
        let _ = self.kill.take().unwrap().send(());
    }

    /// The connection still serves a unary call.
    fn still_serves(&mut self) {
        let ends = self.ends.clone();
        let mut call = Box::pin(async move { ends.add(2, 3).await });
        assert_eq!(self.drive(&mut call), Some(Ok(5)));
    }
}

// ---------------------------------------------------------------------------
// Endings of a response stream.

#[test]
fn response_stream_normal_end() {
    let mut w = plain();
    let ends = w.ends.clone();
    let mut stream = ends.count(3, NEVER);
    let mut seen = Vec::new();
    while let Some(item) = w.next(&mut stream).expect("not stuck") {
        seen.push(item);
    }
    assert_eq!(seen, [Ok(0), Ok(1), Ok(2)]);
    assert_eq!(w.next(&mut stream), Some(None), "None stays");
    w.run();
    assert_eq!(
        w.drops(),
        [true],
        "the handler's stream ended, then was dropped"
    );
    w.still_serves();
}

#[test]
fn response_stream_handler_panic() {
    let mut w = plain();
    let ends = w.ends.clone();
    let mut stream = ends.count(10, 2);
    let mut seen = Vec::new();
    while let Some(item) = w.next(&mut stream).expect("not stuck") {
        seen.push(item);
    }
    assert_eq!(
        seen,
        [
            Ok(0),
            Ok(1),
            Err(CallError::Remote(RemoteError::HandlerPanicked))
        ]
    );
    w.run();
    assert_eq!(
        w.drops(),
        [false],
        "the panicking stream was dropped unfinished"
    );
    w.still_serves();
}

#[test]
fn response_stream_consumer_cancel() {
    let mut w = plain();
    let ends = w.ends.clone();
    let mut stream = ends.count(NEVER, NEVER).with_credit(2);
    assert_eq!(w.next(&mut stream), Some(Some(Ok(0))));
    assert!(w.drops().is_empty());
    drop(stream);
    w.run();
    assert_eq!(w.drops(), [false], "cancel drops the handler's stream");
    assert_eq!(w.ends.client().in_flight(), 0);
    w.still_serves();
}

#[test]
fn response_stream_deadline() {
    let mut w = plain();
    let ends = w.ends.clone();
    let mut stream = ends
        .count(NEVER, NEVER)
        .with_credit(1)
        .with_timeout(Duration::from_millis(10));
    assert_eq!(w.next(&mut stream), Some(Some(Ok(0))));
    assert_eq!(w.next(&mut stream), Some(Some(Ok(1))));
    w.clock.advance(Duration::from_millis(20));
    w.run();
    // Whatever sits in the inbox is still handed over; then the ending.
    let mut end = None;
    for _ in 0..4 {
        match w.next(&mut stream) {
            Some(Some(Ok(_))) => continue,
            other => {
                end = other;
                break;
            }
        }
    }
    // Both peers share the clock; the server, polled first, expires the
    // call and its answer reaches the caller before the caller's own timer
    // fires: the server's deadline error.
    assert_eq!(
        end,
        Some(Some(Err(CallError::Remote(RemoteError::DeadlineExceeded))))
    );
    assert_eq!(w.next(&mut stream), Some(None));
    w.run();
    assert_eq!(
        w.drops(),
        [false],
        "the deadline drops the handler's stream"
    );
    w.still_serves();
}

fn response_stream_connection_loss(kill: impl FnOnce(&mut World)) {
    let mut w = plain();
    let ends = w.ends.clone();
    let mut stream = ends.count(NEVER, NEVER).with_credit(1);
    assert_eq!(w.next(&mut stream), Some(Some(Ok(0))));
    kill(&mut w);
    w.run();
    let mut end = None;
    for _ in 0..4 {
        match w.next(&mut stream) {
            Some(Some(Ok(_))) => continue,
            other => {
                end = other;
                break;
            }
        }
    }
    assert_eq!(end, Some(Some(Err(CallError::ConnectionLost))));
    assert_eq!(w.next(&mut stream), Some(None));
    assert_eq!(w.drops(), [false], "the handler's stream was dropped");
}

#[test]
fn response_stream_server_dropped() {
    response_stream_connection_loss(World::kill_server);
}

#[test]
fn response_stream_transport_cut() {
    response_stream_connection_loss(World::cut_link);
}

// ---------------------------------------------------------------------------
// Endings of a request stream, seen by a consumer moved out of its handler.

/// A request stream that records its drop (the caller's source).
struct Source {
    items: std::collections::VecDeque<u32>,
    endless: bool,
    dropped: Arc<AtomicUsize>,
}

impl futures::Stream for Source {
    type Item = u32;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<u32>> {
        match self.items.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if self.endless => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

fn source(items: &[u32], endless: bool) -> (Source, Arc<AtomicUsize>) {
    let dropped = Arc::new(AtomicUsize::new(0));
    let source = Source {
        items: items.iter().copied().collect(),
        endless,
        dropped: dropped.clone(),
    };
    (source, dropped)
}

#[test]
fn request_stream_normal_end() {
    let mut w = plain();
    let ends = w.ends.clone();
    let (items, _) = source(&[1, 2, 3], false);
    let mut upload = Box::pin(ends.take(HOLD, items));
    assert_eq!(w.drive(&mut upload), None, "the handler holds");
    let handed = w.handed();
    assert_eq!(w.drain(handed), [Ok(1), Ok(2), Ok(3)], "then None");
    drop(upload);
    w.run();
    assert_eq!(w.drops(), [false], "cancel drops the holding handler");
}

#[test]
fn request_stream_handler_returns_first() {
    let mut w = plain();
    let ends = w.ends.clone();
    let (items, dropped) = source(&[1], true);
    let mut upload = Box::pin(ends.take(RETURN, items));
    assert_eq!(w.drive(&mut upload), Some(Ok(0)), "the reply ends the call");
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the caller's source goes"
    );
    let handed = w.handed();
    // The handler returned on its first poll, before any item came.
    assert_eq!(w.drain(handed), [Err(CallError::Closed)]);
    w.still_serves();
}

#[test]
fn request_stream_handler_panic() {
    let mut w = plain();
    let ends = w.ends.clone();
    let (items, dropped) = source(&[], true);
    let mut upload = Box::pin(ends.take(PANIC, items));
    assert_eq!(
        w.drive(&mut upload),
        Some(Err(CallError::Remote(RemoteError::HandlerPanicked)))
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    let handed = w.handed();
    assert_eq!(w.drain(handed), [Err(CallError::Closed)]);
    w.still_serves();
}

#[test]
fn request_stream_consumer_cancel() {
    let mut w = plain();
    let ends = w.ends.clone();
    let (items, dropped) = source(&[7], true);
    let mut upload = Box::pin(ends.take(HOLD, items));
    assert_eq!(w.drive(&mut upload), None);
    drop(upload);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the caller's source goes"
    );
    w.run();
    assert_eq!(w.drops(), [false], "the handler is dropped");
    let handed = w.handed();
    assert_eq!(w.drain(handed), [Ok(7), Err(CallError::Cancelled)]);
    w.still_serves();
}

#[test]
fn request_stream_deadline() {
    let mut w = plain();
    let ends = w.ends.clone();
    let (items, dropped) = source(&[7], true);
    let mut upload = Box::pin(
        ends.take(HOLD, items)
            .with_timeout(Duration::from_millis(10)),
    );
    assert_eq!(w.drive(&mut upload), None);
    w.clock.advance(Duration::from_millis(20));
    // As for response streams: the server expires the call first.
    assert_eq!(
        w.drive(&mut upload),
        Some(Err(CallError::Remote(RemoteError::DeadlineExceeded)))
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    w.run();
    assert_eq!(w.drops(), [false], "the handler is dropped");
    let handed = w.handed();
    assert_eq!(w.drain(handed), [Ok(7), Err(CallError::DeadlineExceeded)]);
    w.still_serves();
}

fn request_stream_connection_loss(kill: impl FnOnce(&mut World)) {
    let mut w = plain();
    let ends = w.ends.clone();
    let (items, _) = source(&[7], true);
    let mut upload = Box::pin(ends.take(HOLD, items));
    assert_eq!(w.drive(&mut upload), None);
    kill(&mut w);
    assert_eq!(w.drive(&mut upload), Some(Err(CallError::ConnectionLost)));
    w.run();
    assert_eq!(w.drops(), [false], "the handler is dropped");
    let handed = w.handed();
    assert_eq!(w.drain(handed), [Ok(7), Err(CallError::ConnectionLost)]);
}

#[test]
fn request_stream_server_dropped() {
    request_stream_connection_loss(World::kill_server);
}

#[test]
fn request_stream_transport_cut() {
    request_stream_connection_loss(World::cut_link);
}

// ---------------------------------------------------------------------------
// Limits count streams.

/// Opens a `count(3)` stream and takes its first item: it stays open
/// (credit 1: the server waits for the consumer).
fn open_stream<'a>(
    w: &mut World,
    ends: &'a EndsClient,
) -> courier::CallStream<'a, (u32, u32), u32> {
    let mut stream = ends.count(3, NEVER).with_credit(1);
    assert_eq!(w.next(&mut stream), Some(Some(Ok(0))));
    stream
}

/// Reads a stream opened by [`open_stream`] to its end.
fn finish(w: &mut World, mut stream: courier::CallStream<'_, (u32, u32), u32>) {
    assert_eq!(w.next(&mut stream), Some(Some(Ok(1))));
    assert_eq!(w.next(&mut stream), Some(Some(Ok(2))));
    assert_eq!(w.next(&mut stream), Some(None));
}

#[test]
fn max_in_flight_counts_open_streams() {
    for n in [1usize, 2, 3] {
        let mut w = world(
            ServerBuilder::new().timer(ManualClock::new()),
            ClientBuilder::new()
                .max_in_flight(n)
                .timer(ManualClock::new()),
        );
        let ends = w.ends.clone();
        // Below the limit: a call proceeds beside n - 1 open streams.
        let mut open: Vec<_> = (0..n - 1).map(|_| open_stream(&mut w, &ends)).collect();
        w.still_serves();
        // At the limit: the (n+1)th call waits — a unary call and a
        // stream alike.
        open.push(open_stream(&mut w, &ends));
        assert_eq!(ends.client().in_flight(), n);
        let mut call = Box::pin(ends.add(1, 1));
        assert_eq!(w.drive(&mut call), None, "n={n}: the call waits");
        let mut waiting_stream = ends.count(1, NEVER);
        assert_eq!(w.next(&mut waiting_stream), None, "n={n}: the stream waits");
        // A stream that ends (read to its terminal frame) frees its slot:
        // the first waiting call proceeds; the next still waits.
        finish(&mut w, open.pop().unwrap());
        assert_eq!(w.drive(&mut call), Some(Ok(2)), "n={n}");
        let mut items = Vec::new();
        while let Some(item) = w.next(&mut waiting_stream).expect("proceeds") {
            items.push(item);
        }
        assert_eq!(items, [Ok(0)], "n={n}");
        // Above: n open again, two waiting; a cancelled stream frees one.
        open.push(open_stream(&mut w, &ends));
        let mut first = Box::pin(ends.add(2, 2));
        let mut second = Box::pin(ends.add(3, 3));
        assert_eq!(w.drive(&mut first), None);
        assert_eq!(w.drive(&mut second), None);
        drop(open.pop());
        // One slot free: the first takes it, the second follows once the
        // first is answered.
        assert_eq!(w.drive(&mut first), Some(Ok(4)), "n={n}");
        assert_eq!(w.drive(&mut second), Some(Ok(6)), "n={n}");
        drop(open);
        w.run();
        assert_eq!(ends.client().in_flight(), 0);
    }
}

#[test]
fn max_concurrent_queue_backlogs_streams() {
    for n in [1usize, 2, 3] {
        let mut w = world(
            ServerBuilder::new()
                .max_concurrent(n)
                .when_full(WhenFull::Queue)
                .timer(ManualClock::new()),
            ClientBuilder::new().timer(ManualClock::new()),
        );
        let ends = w.ends.clone();
        // Below and at the limit: every stream starts at once.
        let mut open: Vec<_> = (0..n).map(|_| open_stream(&mut w, &ends)).collect();
        assert_eq!(w.state.started.load(Ordering::SeqCst), n);
        // Above: the (n+1)th waits in the backlog, its handler not started.
        let mut waiting = ends.count(1, NEVER);
        assert_eq!(w.next(&mut waiting), None, "n={n}: backlogged");
        assert_eq!(w.state.started.load(Ordering::SeqCst), n, "n={n}");
        // A stream that ends lets it start.
        finish(&mut w, open.pop().unwrap());
        assert_eq!(w.next(&mut waiting), Some(Some(Ok(0))), "n={n}");
        assert_eq!(w.next(&mut waiting), Some(None));
        assert_eq!(w.state.started.load(Ordering::SeqCst), n + 1);
        // A cancelled stream frees its slot too.
        open.push(open_stream(&mut w, &ends));
        let mut waiting = ends.count(1, NEVER);
        assert_eq!(w.next(&mut waiting), None, "n={n}: backlogged");
        drop(open.pop());
        assert_eq!(w.next(&mut waiting), Some(Some(Ok(0))), "n={n}");
        assert_eq!(w.next(&mut waiting), Some(None));
        assert_eq!(w.state.started.load(Ordering::SeqCst), n + 3);
    }
}

#[test]
fn max_concurrent_reject_refuses_streams() {
    for n in [1usize, 2, 3] {
        let mut w = world(
            ServerBuilder::new()
                .max_concurrent(n)
                .when_full(WhenFull::Reject)
                .timer(ManualClock::new()),
            ClientBuilder::new().timer(ManualClock::new()),
        );
        let ends = w.ends.clone();
        let mut open: Vec<_> = (0..n).map(|_| open_stream(&mut w, &ends)).collect();
        assert_eq!(w.state.started.load(Ordering::SeqCst), n);
        // Above: refused at once, a stream and a unary call alike.
        let mut refused = ends.count(1, NEVER);
        assert_eq!(
            w.next(&mut refused),
            Some(Some(Err(CallError::Remote(RemoteError::Overloaded)))),
            "n={n}"
        );
        assert_eq!(w.next(&mut refused), Some(None));
        let mut call = Box::pin(ends.add(1, 1));
        assert_eq!(
            w.drive(&mut call),
            Some(Err(CallError::Remote(RemoteError::Overloaded)))
        );
        assert_eq!(w.state.started.load(Ordering::SeqCst), n);
        // Once a stream ends, a new one is served.
        finish(&mut w, open.pop().unwrap());
        let mut accepted = ends.count(1, NEVER);
        assert_eq!(w.next(&mut accepted), Some(Some(Ok(0))), "n={n}");
        assert_eq!(w.next(&mut accepted), Some(None));
        w.still_serves();
    }
}
