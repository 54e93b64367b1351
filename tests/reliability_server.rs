//! The server driver under pressure, on the deterministic executor: a
//! client that pauses its reads (the write high-water mark), a full handler
//! table (`WhenFull`, the backlog, cancels), the read budget, half-close,
//! graceful and forced shutdown, protocol errors, extreme configuration and
//! memory retention after a burst. Every limit is tested below, at and above
//! it, over pipes smaller and larger than it.

#[path = "reliability/support.rs"]
mod support;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use courier::framing::split_frame;
use courier::wire::{Header, MAX_HEADER_LEN};
use courier::{
    CallError, ClientBuilder, DriverError, FrameError, MethodKey, RemoteError, ServerBuilder,
    Transport,
};
use courier_mem::fault::{Faults, Pattern};
use courier_mem::{MemError, MemTransport};
use support::{Flag, ManualClock, ProbeClient, ProbeImpl, Sim};

type Slot<T> = Rc<RefCell<Option<T>>>;

fn record<'a, F: Future + 'a>(sim: &mut Sim<'a>, future: F) -> Slot<F::Output> {
    let slot = Rc::new(RefCell::new(None));
    let out = slot.clone();
    sim.spawn(async move {
        *out.borrow_mut() = Some(future.await);
    });
    slot
}

/// The write high-water mark for `max_frame` ≤ 64 KiB.
const WRITE_MARK: usize = 64 * 1024;

/// A frame limit under the mark, so the mark is [`WRITE_MARK`].
const MAX_FRAME: usize = 4096;

/// A client pipelines `calls` echoes of `size` bytes, stops reading until
/// its writes block, then reads everything while it sends the rest: every
/// call must get its reply (issue 8: ~5,200 replies, then nothing).
fn pipelined_echoes_with_paused_reads(pipe: usize, calls: usize, size: usize) {
    let (client_io, server_io) = courier_mem::pair(pipe);
    let (client_io, client_faults) = Faults::new().wrap(client_io);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new()
        .max_frame(MAX_FRAME)
        .build(server_io, support::service(&imp));
    let (client, driver) = ClientBuilder::new().max_in_flight(calls).build(client_io);
    let probe = ProbeClient::new(client);
    client_faults.stall_reads();
    let mut sim = Sim::new();
    let server_result = record(&mut sim, server);
    let driver_result = record(&mut sim, driver);
    let results: Vec<_> = (0..calls)
        .map(|i| {
            let probe = probe.clone();
            record(
                &mut sim,
                async move { probe.echo(vec![i as u8; size]).await },
            )
        })
        .collect();
    sim.run_until_stalled(1_000_000);
    let answered = results.iter().filter(|r| r.borrow().is_some()).count();
    assert_eq!(answered, 0, "pipe {pipe}: nothing can be read yet");
    client_faults.release_reads();
    sim.run_until_stalled(10_000_000);
    let answered = results.iter().filter(|r| r.borrow().is_some()).count();
    assert_eq!(answered, calls, "pipe {pipe}: calls answered");
    for (i, slot) in results.iter().enumerate() {
        assert_eq!(
            slot.borrow_mut().take(),
            Some(Ok(vec![i as u8; size])),
            "pipe {pipe}, call {i}"
        );
    }
    assert_eq!(imp.started.load(Ordering::SeqCst), calls);
    drop(probe);
    sim.run_until_stalled(10_000);
    assert!(matches!(driver_result.borrow_mut().take(), Some(Ok(()))));
    assert!(matches!(server_result.borrow_mut().take(), Some(Ok(()))));
}

#[test]
fn paused_reader_gets_every_reply_pipe_below_the_write_mark() {
    pipelined_echoes_with_paused_reads(8 * 1024, 20_000, 1000);
}

#[test]
fn paused_reader_gets_every_reply_pipe_at_the_write_mark() {
    pipelined_echoes_with_paused_reads(WRITE_MARK, 20_000, 1000);
}

#[test]
fn paused_reader_gets_every_reply_pipe_above_the_write_mark() {
    pipelined_echoes_with_paused_reads(256 * 1024, 20_000, 1000);
}

#[test]
fn paused_reader_gets_every_reply_pipe_far_above_the_write_mark() {
    pipelined_echoes_with_paused_reads(1024 * 1024, 20_000, 1000);
}

// ---------------------------------------------------------------------------
// Raw peers: exact bytes in, exact frames out.

type ServerResult = Result<(), DriverError<MemError>>;

fn frame(header: Header, body: &[u8]) -> Vec<u8> {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head).unwrap();
    let mut out = ((n + body.len()) as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(body);
    out
}

fn varints(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in values {
        let mut n = v;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    out
}

fn call(id: u32, method: MethodKey, args: &[u64]) -> Vec<u8> {
    frame(Header::request(id, method, None), &varints(args))
}

fn call_with_timeout(id: u32, method: MethodKey, args: &[u64], ms: u32) -> Vec<u8> {
    frame(Header::request(id, method, Some(ms)), &varints(args))
}

fn cancel(id: u32) -> Vec<u8> {
    frame(Header::Cancel { id }, &[])
}

/// Writes all of `bytes` to a raw peer end (the pipe must have room).
fn send(peer: &mut MemTransport, bytes: &[u8]) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert_eq!(
        peer.poll_write(&mut cx, bytes),
        Poll::Ready(Ok(bytes.len()))
    );
}

/// Reads what a raw peer end has buffered, as frames; `true` if the
/// stream has ended.
fn receive_all(peer: &mut MemTransport) -> (Vec<(Header, Vec<u8>)>, bool) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let eof = loop {
        match peer.poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(0)) => break true,
            Poll::Ready(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            _ => break false,
        }
    };
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while let Some((frame, used)) = split_frame(rest, 1 << 20).unwrap() {
        let (header, at) = Header::decode(frame).unwrap();
        frames.push((header, frame[at..].to_vec()));
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "a partial frame was left");
    (frames, eof)
}

fn receive(peer: &mut MemTransport) -> Vec<(Header, Vec<u8>)> {
    receive_all(peer).0
}

fn ok(id: u32, value: u64) -> (Header, Vec<u8>) {
    (Header::Response { id }, varints(&[value]))
}

fn err(id: u32, error: RemoteError) -> (Header, Vec<u8>) {
    (Header::Error { id, error }, Vec::new())
}

/// What a server reported after its last poll.
#[derive(Default)]
struct Seen {
    in_flight: Cell<usize>,
    result: RefCell<Option<ServerResult>>,
}

/// Runs `server` in `sim`, publishing its handler count after each poll.
fn spawn_server<'a, S>(
    sim: &mut Sim<'a>,
    mut server: courier::Server<MemTransport, S, impl courier::Timer + 'a>,
) -> Rc<Seen>
where
    S: courier::Service + 'a,
{
    let seen = Rc::new(Seen::default());
    let out = seen.clone();
    sim.spawn(async move {
        let result = std::future::poll_fn(|cx| {
            let poll = Pin::new(&mut server).poll(cx);
            out.in_flight.set(server.in_flight());
            poll
        })
        .await;
        *out.result.borrow_mut() = Some(result);
    });
    seen
}

// ---------------------------------------------------------------------------
// Item 2: a full server still receives cancels.

/// The table is full of handlers that wait for ever; their callers give
/// up. The cancels must reach the server and free the table (before issue
/// 8 a full table stopped all reading, so they never arrived).
#[test]
fn cancels_reach_a_full_table() {
    let (mut peer, server_io) = courier_mem::pair(1 << 20);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new()
        .max_concurrent(2)
        .build(server_io, support::service(&imp));
    let mut sim = Sim::new();
    let seen = spawn_server(&mut sim, server);
    let mut bytes = call(1, ProbeClient::GATED, &[1]);
    bytes.extend(call(2, ProbeClient::GATED, &[2]));
    send(&mut peer, &bytes);
    sim.run_until_stalled(100);
    assert_eq!(seen.in_flight.get(), 2, "the table is full");
    send(&mut peer, &[cancel(1), cancel(2)].concat());
    sim.run_until_stalled(100);
    assert_eq!(seen.in_flight.get(), 0, "both cancels arrived");
    assert!(
        receive(&mut peer).is_empty(),
        "a cancelled call gets no reply"
    );
    // The connection goes on.
    send(&mut peer, &call(3, ProbeClient::ADD, &[40, 2]));
    sim.run_until_stalled(100);
    assert_eq!(receive(&mut peer), vec![ok(3, 42)]);
}

// ---------------------------------------------------------------------------
// Item 3: the read budget.

/// Sends `n` requests at once and polls the server once: it handles at
/// most `READ_BUDGET` of them, and wakes itself when it stopped for the
/// budget (not when it ran out of input).
fn one_poll_handles(n: usize, pipe: usize) -> (usize, bool) {
    let (mut peer, server_io) = courier_mem::pair(pipe);
    let imp = ProbeImpl::shared(0);
    let mut server = ServerBuilder::new().build(server_io, support::service(&imp));
    let bytes: Vec<u8> = (0..n as u32)
        .flat_map(|id| call(id, ProbeClient::ADD, &[1, 2]))
        .collect();
    send(&mut peer, &bytes);
    let (flag, waker) = Flag::new_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut server).poll(&mut cx).is_pending());
    let handled = imp.started.load(Ordering::SeqCst);
    let woke_itself = flag.take();
    // Whatever is left is handled by later polls.
    let mut polls = 0;
    while imp.started.load(Ordering::SeqCst) < n {
        assert!(Pin::new(&mut server).poll(&mut cx).is_pending());
        polls += 1;
        assert!(polls <= n, "no progress");
    }
    assert_eq!(receive(&mut peer).len(), n);
    (handled, woke_itself)
}

const READ_BUDGET: usize = 256;

#[test]
fn read_budget_below_at_and_above() {
    // Pipes smaller and far larger than a budget's worth of frames.
    for pipe in [READ_BUDGET * 25, 1 << 20] {
        assert_eq!(
            one_poll_handles(READ_BUDGET - 1, pipe),
            (READ_BUDGET - 1, false)
        );
        let (handled, _) = one_poll_handles(READ_BUDGET, pipe);
        assert_eq!(handled, READ_BUDGET, "pipe {pipe}");
        assert_eq!(one_poll_handles(READ_BUDGET + 1, pipe), (READ_BUDGET, true));
    }
    assert_eq!(
        one_poll_handles(10 * READ_BUDGET, 1 << 20),
        (READ_BUDGET, true)
    );
}

/// A peer whose bytes arrive one at a time cannot keep one poll busy
/// either: at most 16 transport reads per poll.
#[test]
fn transport_reads_per_poll_are_bounded() {
    let (mut peer, server_io) = courier_mem::pair(4096);
    let (server_io, faults) = Faults::new().read_chunks(Pattern::Fixed(1)).wrap(server_io);
    let imp = ProbeImpl::shared(0);
    let mut server = ServerBuilder::new().build(server_io, support::service(&imp));
    send(&mut peer, &call(1, ProbeClient::ADD, &[1, 2]).repeat(10));
    let (flag, waker) = Flag::new_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut server).poll(&mut cx).is_pending());
    assert_eq!(faults.bytes_read(), 16);
    assert!(flag.take(), "it yields and comes back");
}

/// Two connections in one task: a peer that floods the first cannot
/// delay the second by more than a budget per poll.
#[test]
fn a_flooding_peer_does_not_starve_a_neighbour() {
    let (mut flood, flood_io) = courier_mem::pair(1 << 22);
    let (mut quiet, quiet_io) = courier_mem::pair(4096);
    let imp = ProbeImpl::shared(0);
    let mut a = ServerBuilder::new().build(flood_io, support::service(&imp));
    let mut b = ServerBuilder::new().build(quiet_io, support::service(&imp));
    let flood_calls = 20 * READ_BUDGET;
    let bytes: Vec<u8> = (0..flood_calls as u32)
        .flat_map(|id| call(id, ProbeClient::ADD, &[1, 2]))
        .collect();
    send(&mut flood, &bytes);
    send(&mut quiet, &call(7, ProbeClient::ADD, &[3, 4]));
    let (_, waker) = Flag::new_waker();
    let mut cx = Context::from_waker(&waker);
    // One round of a task that polls both (as `Serve` does).
    assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
    assert!(Pin::new(&mut b).poll(&mut cx).is_pending());
    assert_eq!(receive(&mut quiet), vec![ok(7, 7)]);
    assert!(receive(&mut flood).len() <= READ_BUDGET);
}

// ---------------------------------------------------------------------------
// Item 4: half-close, shutdown, protocol errors.

/// The client sends its requests and shuts its write half: the calls
/// still running (and, with a table of 2, the backlogged ones) are
/// answered, then the server closes and ends `Ok`.
#[test]
fn half_close_answers_every_request_received() {
    for max_concurrent in [1024, 2] {
        half_close(max_concurrent);
    }
}

fn half_close(max_concurrent: usize) {
    let (mut peer, server_io) = courier_mem::pair(1 << 16);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new()
        .max_concurrent(max_concurrent)
        .build(server_io, support::service(&imp));
    let mut sim = Sim::new();
    let seen = spawn_server(&mut sim, server);
    let mut bytes = Vec::new();
    for id in 1..=4 {
        bytes.extend(call(id, ProbeClient::GATED, &[id.into()]));
    }
    bytes.extend(call(5, ProbeClient::ADD, &[2, 3]));
    send(&mut peer, &bytes);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(peer.poll_close(&mut cx).is_ready());
    sim.run_until_stalled(100);
    assert!(
        seen.result.borrow().is_none(),
        "the calls are still running"
    );
    let (replies, eof) = receive_all(&mut peer);
    assert!(!eof);
    if max_concurrent == 2 {
        // Call 5 waits behind the gated ones.
        assert!(replies.is_empty(), "{replies:?}");
    } else {
        assert_eq!(replies, vec![ok(5, 5)]);
    }
    imp.gate.open();
    sim.run_until_stalled(100);
    let (mut replies, eof) = receive_all(&mut peer);
    replies.sort_by_key(|(h, _)| h.id());
    let mut expected = vec![ok(1, 1), ok(2, 2), ok(3, 3), ok(4, 4)];
    if max_concurrent == 2 {
        expected.push(ok(5, 5));
    }
    assert_eq!(replies, expected, "max_concurrent {max_concurrent}");
    assert!(eof, "the server closed its write half");
    assert!(matches!(*seen.result.borrow(), Some(Ok(()))));
    assert_eq!(seen.in_flight.get(), 0);
}

/// A protocol error after a good request: the good request's reply is
/// still delivered, then the connection closes with the error.
#[test]
fn protocol_error_flushes_the_replies_already_produced() {
    let (mut peer, server_io) = courier_mem::pair(4096);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new().build(server_io, support::service(&imp));
    let mut sim = Sim::new();
    let seen = spawn_server(&mut sim, server);
    let mut bytes = call(1, ProbeClient::ADD, &[1, 1]);
    bytes.extend(call(2, ProbeClient::GATED, &[2]));
    // A frame with an unknown version.
    let mut bad = frame(Header::Cancel { id: 3 }, &[]);
    bad[4] = 9;
    bytes.extend(bad);
    send(&mut peer, &bytes);
    sim.run_until_stalled(100);
    let (replies, eof) = receive_all(&mut peer);
    assert_eq!(replies, vec![ok(1, 2)]);
    assert!(eof);
    assert!(matches!(
        *seen.result.borrow(),
        Some(Err(DriverError::Protocol(FrameError::UnsupportedVersion(
            9
        ))))
    ));
    assert_eq!(seen.in_flight.get(), 0, "the running handler was dropped");
}

// ---------------------------------------------------------------------------
// Item 5: extreme configuration and peer input.

/// The largest timeout a request can carry, on a clock far from its
/// epoch, with every size limit at its maximum: nothing overflows.
#[test]
fn extreme_timeouts_and_limits_do_not_panic() {
    let clock = ManualClock::new();
    clock.advance(Duration::MAX - Duration::from_secs(1));
    let (mut peer, server_io) = courier_mem::pair(1 << 16);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new()
        .max_frame(usize::MAX)
        .max_concurrent(usize::MAX)
        .idle_timeout(Duration::MAX)
        .timer(clock.clone())
        .build(server_io, support::service(&imp));
    let mut sim = Sim::new();
    let seen = spawn_server(&mut sim, server);
    let mut bytes = call_with_timeout(1, ProbeClient::GATED, &[1], u32::MAX);
    bytes.extend(call_with_timeout(2, ProbeClient::ADD, &[1, 2], u32::MAX));
    send(&mut peer, &bytes);
    sim.run_until_stalled(100);
    assert_eq!(receive(&mut peer), vec![ok(2, 3)]);
    assert_eq!(seen.in_flight.get(), 1);
    clock.advance(Duration::from_millis(999));
    sim.run_until_stalled(100);
    assert_eq!(
        seen.in_flight.get(),
        1,
        "the far deadline saturates, it does not wrap"
    );
    imp.gate.open();
    sim.run_until_stalled(100);
    assert_eq!(receive(&mut peer), vec![ok(1, 1)]);
}
