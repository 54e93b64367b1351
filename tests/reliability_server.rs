//! The server driver under pressure, on the deterministic executor: a
//! client that pauses its reads (the write high-water mark), a full handler
//! table (`WhenFull`, the backlog, cancels), the read budget, half-close,
//! graceful and forced shutdown, protocol errors, extreme configuration and
//! memory retention after a burst. Every limit is tested below, at and above
//! it, over pipes smaller and larger than it.

#[path = "reliability/support.rs"]
mod support;

use support::{frame, record, varints};

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use courier::framing::split_frame;
use courier::wire::Header;
use courier::{
    ClientBuilder, DriverError, FrameError, MethodKey, RemoteError, ServerBuilder, Shutdown,
    Transport, WhenFull,
};
use courier_mem::fault::{Faults, Pattern};
use courier_mem::{MemError, MemTransport};
use support::{Flag, ManualClock, ProbeClient, ProbeImpl, Sim};

/// The write high-water mark for `max_frame` ≤ 64 KiB.
const WRITE_MARK: usize = 64 * 1024;

/// A frame limit under the mark, so the mark is [`WRITE_MARK`].
const MAX_FRAME: usize = 4096;

/// A client pipelines `calls` echoes of `size` bytes, stops reading until
/// its writes block, then reads everything while it sends the rest: every
/// call must get its reply (issue 8: ~5,200 replies, then nothing).
fn pipelined_echoes_with_paused_reads(pipe: usize, calls: usize, size: usize) {
    pipelined_echoes_with_paused_reads_at(pipe, None, calls, size);
}

/// As [`pipelined_echoes_with_paused_reads`], with the write mark set to
/// `mark` (the default when `None`).
fn pipelined_echoes_with_paused_reads_at(
    pipe: usize,
    mark: Option<usize>,
    calls: usize,
    size: usize,
) {
    let (client_io, server_io) = courier_mem::pair(pipe);
    let (client_io, client_faults) = Faults::new().wrap(client_io);
    let imp = ProbeImpl::shared(0);
    let builder = ServerBuilder::new().max_frame(MAX_FRAME);
    let builder = match mark {
        Some(mark) => builder.write_mark(mark),
        None => builder,
    };
    let server = builder.build(server_io, support::service(&imp));
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

/// A small configured mark (4 KiB, and 0) with pipes below, at and far
/// above it: no reply is lost and nothing hangs.
#[test]
fn paused_reader_gets_every_reply_with_a_small_configured_mark() {
    for (mark, pipe) in [
        (0, 1024),
        (4 * 1024, 1024),
        (4 * 1024, 4 * 1024),
        (4 * 1024, 1 << 20),
    ] {
        pipelined_echoes_with_paused_reads_at(pipe, Some(mark), 300, 1000);
    }
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
struct Seen<E = MemError> {
    in_flight: Cell<usize>,
    result: RefCell<Option<Result<(), DriverError<E>>>>,
}

/// Runs `server` in `sim`, publishing its handler count after each poll.
fn spawn_server<'a, T, S>(
    sim: &mut Sim<'a>,
    mut server: courier::Server<T, S, impl courier::Timer + 'a>,
) -> Rc<Seen<T::Error>>
where
    T: Transport + 'a,
    S: courier::Service + 'a,
{
    let seen = Rc::new(Seen {
        in_flight: Cell::new(0),
        result: RefCell::new(None),
    });
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

// ---------------------------------------------------------------------------
// Item 2: the backlog (WhenFull::Queue) and WhenFull::Reject.

/// Bytes of one `gated(id)` request frame for `id < 128`, header and body
/// (what the backlog counts).
const GATED_FRAME: usize = 15 + 1;

/// Runs `gated(0)` in a table of one, then `n` more `gated` requests with
/// a backlog of exactly 4 requests' bytes, then a cancel of call 0.
/// Returns how many requests were backlogged, and whether the cancel was
/// read (the running call dropped, so the next one started).
fn backlog_takes(n: u32, pipe: usize) -> (usize, bool) {
    let (mut peer, server_io) = courier_mem::pair(pipe);
    let imp = ProbeImpl::shared(0);
    let mut server = ServerBuilder::new()
        .max_concurrent(1)
        .backlog(4 * GATED_FRAME)
        .build(server_io, support::service(&imp));
    let mut bytes: Vec<u8> = (0..=n)
        .flat_map(|id| call(id, ProbeClient::GATED, &[id.into()]))
        .collect();
    assert_eq!(bytes.len(), (n as usize + 1) * (GATED_FRAME + 4));
    bytes.extend(cancel(0));
    send(&mut peer, &bytes);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(Pin::new(&mut server).poll(&mut cx).is_pending());
    let backlogged = server.backlogged();
    let cancel_read = imp.started.load(Ordering::SeqCst) == 2;
    assert_eq!(server.in_flight(), 1);
    (backlogged, cancel_read)
}

#[test]
fn backlog_limit_below_at_and_above() {
    for pipe in [256, 1 << 20] {
        assert_eq!(backlog_takes(3, pipe), (2, true), "below, pipe {pipe}");
        // At the limit everything is taken, the cancel too.
        assert_eq!(backlog_takes(4, pipe), (3, true), "at, pipe {pipe}");
        // One more: the fifth waits unread, and the cancel behind it too.
        assert_eq!(backlog_takes(5, pipe), (4, false), "above, pipe {pipe}");
    }
}

/// Backlogged requests start in arrival order as slots free; a cancel
/// removes one without a reply and without running it; one whose
/// deadline passes is answered `DeadlineExceeded` without running.
#[test]
fn backlog_is_fifo_cancellable_and_expires() {
    let clock = ManualClock::new();
    let (mut peer, server_io) = courier_mem::pair(1 << 16);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new()
        .max_concurrent(1)
        .timer(clock.clone())
        .build(server_io, support::service(&imp));
    let mut sim = Sim::new();
    let seen = spawn_server(&mut sim, server);
    let mut bytes = call(1, ProbeClient::GATED, &[1]);
    for id in 2..=6 {
        bytes.extend(call(id, ProbeClient::ADD, &[id.into(), 100]));
    }
    bytes.extend(call_with_timeout(7, ProbeClient::ADD, &[7, 100], 5));
    bytes.extend(call(8, ProbeClient::ADD, &[8, 100]));
    bytes.extend(cancel(4));
    send(&mut peer, &bytes);
    sim.run_until_stalled(100);
    assert_eq!(imp.started.load(Ordering::SeqCst), 1, "only call 1 runs");
    assert!(receive(&mut peer).is_empty());
    clock.advance(Duration::from_millis(5));
    sim.run_until_stalled(100);
    assert_eq!(
        receive(&mut peer),
        vec![err(7, RemoteError::DeadlineExceeded)]
    );
    assert_eq!(imp.started.load(Ordering::SeqCst), 1);
    imp.gate.open();
    sim.run_until_stalled(100);
    // In order, without 4 (cancelled) and 7 (expired).
    assert_eq!(
        receive(&mut peer),
        vec![
            ok(1, 1),
            ok(2, 102),
            ok(3, 103),
            ok(5, 105),
            ok(6, 106),
            ok(8, 108)
        ]
    );
    assert_eq!(imp.started.load(Ordering::SeqCst), 6);
    assert_eq!(seen.in_flight.get(), 0);
}

/// The default backlog, `max(64 KiB, max_frame)`, over a pipe far larger:
/// the server takes about that many bytes of requests and then stops
/// reading; all are answered once the table frees.
#[test]
fn default_backlog_bounds_what_a_full_server_reads() {
    let (mut peer, server_io) = courier_mem::pair(1 << 22);
    let (server_io, faults) = Faults::new().wrap(server_io);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new()
        .max_concurrent(1)
        .max_frame(4096)
        .build(server_io, support::service(&imp));
    let mut sim = Sim::new();
    let seen = spawn_server(&mut sim, server);
    let mut bytes = call(0, ProbeClient::GATED, &[0]);
    let payload = vec![7u8; 1000];
    let calls = 200u32;
    for id in 1..=calls {
        let mut body = varints(&[1000]);
        body.extend_from_slice(&payload);
        bytes.extend(frame(Header::request(id, ProbeClient::ECHO, None), &body));
    }
    send(&mut peer, &bytes);
    sim.run_until_stalled(100);
    let frame_len = 15 + 2 + 1000;
    let backlogged = 64 * 1024 / frame_len;
    // What was read: the requests taken, plus at most one read chunk.
    let taken = (1 + backlogged) * (frame_len + 4) + 16 + 4;
    assert!(
        faults.bytes_read() <= taken + 16 * 1024,
        "{}",
        faults.bytes_read()
    );
    assert!(faults.bytes_read() < bytes.len());
    assert_eq!(imp.started.load(Ordering::SeqCst), 1);
    imp.gate.open();
    sim.run_until_stalled(10_000);
    let replies = receive(&mut peer);
    assert_eq!(replies.len(), calls as usize + 1);
    assert!(
        replies.iter().map(|(h, _)| h.id()).eq(0..=calls),
        "in order"
    );
    assert_eq!(seen.in_flight.get(), 0);
}

/// `WhenFull::Reject`: a request arriving at a full table is answered
/// `Overloaded` at once; cancels and later requests go on.
#[test]
fn reject_answers_overloaded_and_keeps_reading() {
    let (mut peer, server_io) = courier_mem::pair(1 << 16);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new()
        .max_concurrent(2)
        .when_full(WhenFull::Reject)
        .build(server_io, support::service(&imp));
    let mut sim = Sim::new();
    let seen = spawn_server(&mut sim, server);
    let mut bytes = call(1, ProbeClient::GATED, &[1]);
    bytes.extend(call(2, ProbeClient::GATED, &[2]));
    bytes.extend(call(3, ProbeClient::ADD, &[3, 0]));
    bytes.extend(call(4, 0xdead.into_key(), &[]));
    bytes.extend(cancel(1));
    bytes.extend(call(5, ProbeClient::ADD, &[5, 0]));
    bytes.extend(frame(
        Header::Reserved {
            kind: 8,
            flags: 0,
            id: 9,
        },
        &[1, 2, 3],
    ));
    bytes.extend(call(6, ProbeClient::ADD, &[6, 0]));
    send(&mut peer, &bytes);
    sim.run_until_stalled(100);
    assert_eq!(
        receive(&mut peer),
        vec![
            err(3, RemoteError::Overloaded),
            err(4, RemoteError::Overloaded),
            ok(5, 5),
            ok(6, 6),
        ]
    );
    assert_eq!(seen.in_flight.get(), 1);
    let more = [
        call(7, ProbeClient::GATED, &[7]),
        call(8, ProbeClient::ADD, &[8, 0]),
    ];
    send(&mut peer, &more.concat());
    sim.run_until_stalled(100);
    assert_eq!(receive(&mut peer), vec![err(8, RemoteError::Overloaded)]);
    assert_eq!(seen.in_flight.get(), 2);
    imp.gate.open();
    sim.run_until_stalled(100);
    let mut replies = receive(&mut peer);
    replies.sort_by_key(|(h, _)| h.id());
    assert_eq!(replies, vec![ok(2, 2), ok(7, 7)]);
}

trait IntoKey {
    fn into_key(self) -> MethodKey;
}

impl IntoKey for u64 {
    fn into_key(self) -> MethodKey {
        MethodKey(self)
    }
}

/// Through the typed client: a call dropped while it waits in the backlog
/// never runs.
#[test]
fn a_dropped_call_leaves_the_backlog_without_running() {
    let (client_io, server_io) = courier_mem::pair(1 << 16);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new()
        .max_concurrent(1)
        .build(server_io, support::service(&imp));
    let (client, driver) = courier::Client::new(client_io);
    let probe = ProbeClient::new(client);
    let mut sim = Sim::new();
    let seen = spawn_server(&mut sim, server);
    let _driver = record(&mut sim, driver);
    let first = record(&mut sim, probe.gated(1));
    let abort = Rc::new(Cell::new(false));
    let flag = abort.clone();
    let second = probe.gated(2);
    let dropped = record(&mut sim, async move {
        let mut second = std::pin::pin!(second);
        std::future::poll_fn(|cx| {
            if flag.get() {
                return Poll::Ready(None);
            }
            second.as_mut().poll(cx).map(Some)
        })
        .await
    });
    sim.run_until_stalled(100);
    assert_eq!(imp.started.load(Ordering::SeqCst), 1);
    abort.set(true);
    // Wake the task that drops the call.
    let third = record(&mut sim, probe.add(1, 1));
    sim.run_until_stalled(100);
    sim.spawn(async {});
    sim.run_until_stalled(100);
    let _ = dropped;
    imp.gate.open();
    sim.run_until_stalled(100);
    assert_eq!(first.borrow_mut().take(), Some(Ok(1)));
    assert_eq!(third.borrow_mut().take(), Some(Ok(2)));
    assert_eq!(seen.in_flight.get(), 0);
}

// ---------------------------------------------------------------------------
// Item 1/7: the write high-water mark, below, at and above.

/// Requests `fill` replies adding up to `pipe + WRITE_MARK + delta` bytes
/// from a peer that does not read, then one `add`: it is read (and run)
/// only while the unsent replies are at most the mark.
fn add_is_read_with_unsent(pipe: usize, delta: isize) -> bool {
    add_is_read_with_unsent_at(pipe, None, delta)
}

/// As [`add_is_read_with_unsent`], with the mark set to `mark` (the
/// default mark when `None`).
fn add_is_read_with_unsent_at(pipe: usize, mark: Option<usize>, delta: isize) -> bool {
    let (mut peer, server_io) = courier_mem::pair(pipe);
    let imp = ProbeImpl::shared(u32::MAX);
    let builder = ServerBuilder::new().max_frame(MAX_FRAME);
    let builder = match mark {
        Some(mark) => builder.write_mark(mark),
        None => builder,
    };
    let server = builder.build(server_io, support::service(&imp));
    let mut sim = Sim::new();
    let _seen = spawn_server(&mut sim, server);
    let total = (pipe + mark.unwrap_or(WRITE_MARK)) as isize + delta;
    // A reply to fill(len), 128 <= len < 16384: prefix 4, header 7,
    // varint 2, then len bytes.
    let reply = |len: usize| 13 + len;
    let mut lens = Vec::new();
    let mut left = total as usize;
    while left > 4000 {
        lens.push(2000);
        left -= reply(2000);
    }
    lens.push(left - 13);
    assert_eq!(
        lens.iter().map(|&l| reply(l)).sum::<usize>(),
        total as usize
    );
    let requests: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| call(i as u32, ProbeClient::FILL, &[1, len as u64]))
        .collect();
    // Sent as the pipe takes them.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut pending: Vec<u8> = requests.concat();
    while !pending.is_empty() {
        if let Poll::Ready(Ok(n)) = peer.poll_write(&mut cx, &pending) {
            pending.drain(..n);
        }
        sim.run_until_stalled(1000);
    }
    sim.run_until_stalled(1000);
    let before = imp.started.load(Ordering::SeqCst);
    assert_eq!(before, lens.len(), "every fill ran");
    send(&mut peer, &call(999, ProbeClient::ADD, &[1, 1]));
    sim.run_until_stalled(1000);
    imp.started.load(Ordering::SeqCst) == before + 1
}

/// A configured mark below the default (a small heap), and one above it:
/// reading stops exactly past it, whatever the pipe (smaller than the
/// mark, equal to it, larger).
#[test]
fn configured_write_mark_below_at_and_above() {
    for mark in [8 * 1024, 256 * 1024] {
        for pipe in [4 * 1024, mark, 1 << 20] {
            assert!(
                add_is_read_with_unsent_at(pipe, Some(mark), -1),
                "below, mark {mark}, pipe {pipe}"
            );
            assert!(
                add_is_read_with_unsent_at(pipe, Some(mark), 0),
                "at, mark {mark}, pipe {pipe}"
            );
            assert!(
                !add_is_read_with_unsent_at(pipe, Some(mark), 1),
                "above, mark {mark}, pipe {pipe}"
            );
        }
    }
}

#[test]
fn write_mark_below_at_and_above() {
    for pipe in [8 * 1024, WRITE_MARK, 1 << 20] {
        assert!(add_is_read_with_unsent(pipe, -1), "below, pipe {pipe}");
        assert!(add_is_read_with_unsent(pipe, 0), "at, pipe {pipe}");
        assert!(!add_is_read_with_unsent(pipe, 1), "above, pipe {pipe}");
    }
}

// ---------------------------------------------------------------------------
// Item 4: shutdown.

/// Triggered with a running handler and a backlog: the backlog is answered
/// `ShuttingDown` at once, requests read later too, the running handler
/// finishes, then the connection closes.
#[test]
fn shutdown_answers_the_backlog_and_lets_running_calls_finish() {
    let shutdown = Shutdown::new();
    let (mut peer, server_io) = courier_mem::pair(1 << 16);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new()
        .max_concurrent(1)
        .shutdown(shutdown.clone())
        .build(server_io, support::service(&imp));
    let mut sim = Sim::new();
    let seen = spawn_server(&mut sim, server);
    let mut bytes = call(1, ProbeClient::GATED, &[1]);
    bytes.extend(call(2, ProbeClient::ADD, &[2, 0]));
    bytes.extend(call(3, ProbeClient::ADD, &[3, 0]));
    send(&mut peer, &bytes);
    sim.run_until_stalled(100);
    shutdown.trigger();
    sim.run_until_stalled(100);
    assert_eq!(
        receive(&mut peer),
        vec![
            err(2, RemoteError::ShuttingDown),
            err(3, RemoteError::ShuttingDown)
        ]
    );
    send(&mut peer, &call(4, ProbeClient::ADD, &[4, 0]));
    sim.run_until_stalled(100);
    assert_eq!(receive(&mut peer), vec![err(4, RemoteError::ShuttingDown)]);
    assert!(seen.result.borrow().is_none());
    imp.gate.open();
    sim.run_until_stalled(100);
    let (replies, eof) = receive_all(&mut peer);
    assert_eq!(replies, vec![ok(1, 1)]);
    assert!(eof);
    assert!(matches!(*seen.result.borrow(), Some(Ok(()))));
    assert_eq!(imp.started.load(Ordering::SeqCst), 1);
}

/// Triggered on an idle connection whose transport already holds requests
/// the server has not seen yet: they are read and answered `ShuttingDown`
/// before the connection closes — never silence.
#[test]
fn shutdown_of_an_idle_connection_answers_what_already_arrived() {
    let shutdown = Shutdown::new();
    let (mut peer, server_io) = courier_mem::pair(1 << 16);
    let imp = ProbeImpl::shared(0);
    let mut server = ServerBuilder::new()
        .shutdown(shutdown.clone())
        .build(server_io, support::service(&imp));
    let (flag, waker) = Flag::new_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut server).poll(&mut cx).is_pending());
    send(
        &mut peer,
        &[
            call(1, ProbeClient::ADD, &[1, 0]),
            call(2, ProbeClient::ADD, &[2, 0]),
        ]
        .concat(),
    );
    shutdown.trigger();
    assert!(flag.take());
    assert!(matches!(
        Pin::new(&mut server).poll(&mut cx),
        Poll::Ready(Ok(()))
    ));
    let (replies, eof) = receive_all(&mut peer);
    assert_eq!(
        replies,
        vec![
            err(1, RemoteError::ShuttingDown),
            err(2, RemoteError::ShuttingDown)
        ]
    );
    assert!(eof);
    assert_eq!(imp.started.load(Ordering::SeqCst), 0);
}

/// `Shutdown::force` ends the grace period: running handlers are dropped
/// and answered `ShuttingDown`, with the backlog; then the connection
/// closes and the server ends `Ok`. Also when it was never triggered.
#[test]
fn force_answers_running_calls_and_closes() {
    for trigger_first in [true, false] {
        let shutdown = Shutdown::new();
        let (mut peer, server_io) = courier_mem::pair(1 << 16);
        let imp = ProbeImpl::shared(0);
        let server = ServerBuilder::new()
            .max_concurrent(2)
            .shutdown(shutdown.clone())
            .build(server_io, support::service(&imp));
        let mut sim = Sim::new();
        let seen = spawn_server(&mut sim, server);
        let bytes: Vec<u8> = (1..=3)
            .flat_map(|id| call(id, ProbeClient::GATED, &[id.into()]))
            .collect();
        send(&mut peer, &bytes);
        sim.run_until_stalled(100);
        assert_eq!(seen.in_flight.get(), 2);
        if trigger_first {
            shutdown.trigger();
            sim.run_until_stalled(100);
            assert_eq!(receive(&mut peer), vec![err(3, RemoteError::ShuttingDown)]);
        }
        shutdown.force();
        sim.run_until_stalled(100);
        let (mut replies, eof) = receive_all(&mut peer);
        replies.sort_by_key(|(h, _)| h.id());
        let mut expected = vec![
            err(1, RemoteError::ShuttingDown),
            err(2, RemoteError::ShuttingDown),
        ];
        if !trigger_first {
            expected.push(err(3, RemoteError::ShuttingDown));
        }
        assert_eq!(replies, expected);
        assert!(eof);
        assert!(matches!(*seen.result.borrow(), Some(Ok(()))));
        assert_eq!(seen.in_flight.get(), 0);
    }
}

// ---------------------------------------------------------------------------
// Item 6: memory retention.

/// After a burst of large replies to a slow reader and a large request,
/// once everything is written the write buffer is back to at most the
/// least write mark (64 KiB) and the read buffer to at most a read chunk (16 KiB).
#[test]
fn idle_buffers_shrink_after_a_burst() {
    let (client_io, server_io) = courier_mem::pair(8 * 1024);
    let (client_io, client_faults) = Faults::new().wrap(client_io);
    let imp = ProbeImpl::shared(u32::MAX);
    let server = ServerBuilder::new().build(server_io, support::service(&imp));
    let capacities = Rc::new(Cell::new((0, 0)));
    let peak = Rc::new(Cell::new((0, 0)));
    let (client, driver) = ClientBuilder::new().max_in_flight(64).build(client_io);
    let probe = ProbeClient::new(client);
    let mut sim = Sim::new();
    {
        let capacities = capacities.clone();
        let peak = peak.clone();
        let mut server = server;
        sim.spawn(async move {
            let _ = std::future::poll_fn(|cx| {
                let poll = Pin::new(&mut server).poll(cx);
                let now = server.buffer_capacities();
                let (r, w) = peak.get();
                peak.set((r.max(now.0), w.max(now.1)));
                capacities.set(now);
                poll
            })
            .await;
        });
    }
    let _driver = record(&mut sim, driver);
    client_faults.stall_reads();
    let fills: Vec<_> = (0..64u8)
        .map(|i| {
            let probe = probe.clone();
            record(&mut sim, async move { probe.fill(i, 100_000).await })
        })
        .collect();
    let big = record(&mut sim, {
        let probe = probe.clone();
        async move { probe.echo(vec![5; 600_000]).await.map(|v| v.len()) }
    });
    sim.run_until_stalled(100_000);
    client_faults.release_reads();
    sim.run_until_stalled(1_000_000);
    for (i, slot) in fills.iter().enumerate() {
        assert_eq!(slot.borrow_mut().take(), Some(Ok(vec![i as u8; 100_000])));
    }
    assert_eq!(big.borrow_mut().take(), Some(Ok(600_000)));
    let (peak_read, peak_write) = peak.get();
    assert!(peak_read > 512 * 1024, "the read buffer grew: {peak_read}");
    assert!(peak_write > 2 << 20, "the write buffer grew: {peak_write}");
    // The least mark (64 KiB), not the 1 MiB one of the default frame
    // limit: an idle connection does not keep a large reply's buffer.
    let (read, write) = capacities.get();
    assert!(write <= WRITE_MARK, "write buffer kept {write} bytes");
    assert!(read <= 16 * 1024, "read buffer kept {read} bytes");
}

/// A connection that makes small calls one at a time — what most of a
/// server's many mostly idle connections do — keeps a read buffer of the
/// least read size (1 KiB), not a whole 16 KiB chunk; the buffer grows
/// while a burst fills it and falls back afterwards.
#[test]
fn a_quiet_connection_keeps_a_small_read_buffer() {
    let (client_io, server_io) = courier_mem::pair(64 * 1024);
    let imp = ProbeImpl::shared(u32::MAX);
    let server = ServerBuilder::new().build(server_io, support::service(&imp));
    let capacities = Rc::new(Cell::new((0, 0)));
    let peak_read = Rc::new(Cell::new(0));
    let (client, driver) = ClientBuilder::new().max_in_flight(256).build(client_io);
    let probe = ProbeClient::new(client);
    let mut sim = Sim::new();
    {
        let capacities = capacities.clone();
        let peak_read = peak_read.clone();
        let mut server = server;
        sim.spawn(async move {
            let _ = std::future::poll_fn(|cx| {
                let poll = Pin::new(&mut server).poll(cx);
                capacities.set(server.buffer_capacities());
                peak_read.set(peak_read.get().max(capacities.get().0));
                poll
            })
            .await;
        });
    }
    let _driver = record(&mut sim, driver);
    let quiet = |sim: &mut Sim| {
        for i in 0..20u8 {
            let probe = probe.clone();
            let call = record(sim, async move { probe.echo(vec![i; 16]).await });
            sim.run_until_stalled(100_000);
            assert_eq!(call.borrow_mut().take(), Some(Ok(vec![i; 16])));
        }
    };
    quiet(&mut sim);
    assert!(
        capacities.get().0 <= 1024,
        "read buffer {:?}",
        capacities.get()
    );
    // A burst: 256 calls of 200 bytes at once (over 50 KiB of requests).
    let burst: Vec<_> = (0..=255u8)
        .map(|i| {
            let probe = probe.clone();
            record(&mut sim, async move { probe.echo(vec![i; 200]).await })
        })
        .collect();
    sim.run_until_stalled(1_000_000);
    for (i, slot) in burst.iter().enumerate() {
        assert_eq!(slot.borrow_mut().take(), Some(Ok(vec![i as u8; 200])));
    }
    assert!(peak_read.get() > 1024, "the burst grew the read buffer");
    quiet(&mut sim);
    assert!(
        capacities.get().0 <= 1024,
        "read buffer {:?}",
        capacities.get()
    );
}

/// A large request that arrives in pieces, with the transport empty
/// between them (a 4 KiB pipe, so the server finds nothing to read after
/// each piece): it decodes and is answered, and the server's read buffer
/// only grows while the request is partly buffered — shrinking at each
/// pause would move the bytes and grow the buffer again, over and over —
/// then gives the memory back once the request is consumed. Requests
/// below, around and above the largest read size (16 KiB) and a 600 KB one.
#[test]
fn a_large_request_arriving_in_pieces_keeps_its_buffer_until_it_is_whole() {
    for len in [
        1_000usize,
        16 * 1024 - 64,
        16 * 1024,
        16 * 1024 + 64,
        600_000,
    ] {
        let (client_io, server_io) = courier_mem::pair(4 * 1024);
        let (server_io, server_faults) = Faults::new().wrap(server_io);
        let imp = ProbeImpl::shared(u32::MAX);
        let server = ServerBuilder::new().build(server_io, support::service(&imp));
        // (bytes read so far, read buffer capacity) after each poll.
        let polls = Rc::new(RefCell::new(Vec::new()));
        let (client, driver) = ClientBuilder::new().build(client_io);
        let probe = ProbeClient::new(client);
        let mut sim = Sim::new();
        {
            let polls = polls.clone();
            let mut server = server;
            sim.spawn(async move {
                let _ = std::future::poll_fn(|cx| {
                    let poll = Pin::new(&mut server).poll(cx);
                    let capacity = server.buffer_capacities().0;
                    polls
                        .borrow_mut()
                        .push((server_faults.bytes_read(), capacity));
                    poll
                })
                .await;
            });
        }
        let _driver = record(&mut sim, driver);
        let call = record(&mut sim, async move {
            probe.echo(vec![3; len]).await.map(|v| v.len())
        });
        sim.run_until_stalled(1_000_000);
        assert_eq!(call.borrow_mut().take(), Some(Ok(len)), "{len} bytes");
        let polls = polls.borrow();
        // Until all of the request's bytes were read, the buffer holds
        // part of it: it never shrinks, and grows only by doubling.
        let arriving: Vec<usize> = polls
            .iter()
            .take_while(|(read, _)| *read < len)
            .map(|(_, capacity)| *capacity)
            .collect();
        assert!(
            arriving.len() > len / (8 * 1024),
            "{len} bytes: the request came in pieces ({} polls)",
            arriving.len()
        );
        for pair in arriving.windows(2) {
            assert!(
                pair[1] >= pair[0],
                "{len} bytes: the read buffer shrank from {} to {} mid-request",
                pair[0],
                pair[1]
            );
        }
        let mut sizes = arriving.clone();
        sizes.dedup();
        assert!(
            sizes.len() <= 16,
            "{len} bytes: the read buffer was resized {} times: {sizes:?}",
            sizes.len()
        );
        let (_, after) = *polls.last().unwrap();
        assert!(
            after <= 16 * 1024,
            "{len} bytes: the read buffer kept {after} bytes afterwards"
        );
    }
}

// ---------------------------------------------------------------------------
// Item 1: the invariant, across configurations.

/// Seeded mixes of pipe sizes (below and above the mark), table sizes,
/// backlogs, both `WhenFull` policies, split and delayed links, handlers
/// that yield, and a client that pauses its reads: whenever the executor
/// finds nothing to poll, every call must have its answer — a server that
/// returned `Pending` while it could progress shows up as a stall.
#[test]
fn no_stall_across_configurations() {
    for seed in 0..16u64 {
        let pipe = [512, 8 * 1024, WRITE_MARK, 256 * 1024][seed as usize % 4];
        let max_concurrent = [1, 3, 64][seed as usize % 3];
        let reject = seed % 5 == 0;
        let backlog = [0, 700, 64 * 1024][seed as usize % 3];
        let (client_io, server_io) = courier_mem::pair(pipe);
        let (client_io, client_faults) = Faults::new()
            .read_chunks(Pattern::seeded(seed, 1, 40_000))
            .delay_writes(Pattern::seeded(seed + 1, 0, 2))
            .wrap(client_io);
        let (server_io, _) = Faults::new()
            .read_chunks(Pattern::seeded(seed + 2, 1, 30_000))
            .write_chunks(Pattern::seeded(seed + 3, 1, 300_000))
            .delay_reads(Pattern::seeded(seed + 4, 0, 1))
            .wrap(server_io);
        let imp = ProbeImpl::shared(u32::MAX);
        let mut builder = ServerBuilder::new()
            .max_frame(MAX_FRAME)
            .max_concurrent(max_concurrent)
            .backlog(backlog);
        if reject {
            builder = builder.when_full(WhenFull::Reject);
        }
        let server = builder.build(server_io, support::service(&imp));
        let (client, driver) = ClientBuilder::new().max_in_flight(2000).build(client_io);
        let probe = ProbeClient::new(client);
        let mut sim = Sim::new();
        let seen = spawn_server(&mut sim, server);
        let _driver = record(&mut sim, driver);
        client_faults.stall_reads();
        let calls: Vec<_> = (0..2000u64)
            .map(|i| {
                let probe = probe.clone();
                let len = ((i * 7919 + seed * 31) % 3000) as usize;
                let call = async move {
                    match i % 3 {
                        0 => probe.echo(vec![i as u8; len]).await.map(|v| v.len() as u64),
                        1 => probe.yields((i % 4) as u8).await.map(u64::from),
                        _ => probe.add(i, seed).await,
                    }
                };
                (i, len, record(&mut sim, call))
            })
            .collect();
        sim.run_until_stalled(1_000_000);
        client_faults.release_reads();
        sim.run_until_stalled(10_000_000);
        for (i, len, slot) in &calls {
            let expected = match i % 3 {
                0 => *len as u64,
                1 => i % 4,
                _ => i + seed,
            };
            match slot.borrow_mut().take() {
                Some(Ok(v)) => assert_eq!(v, expected, "seed {seed}, call {i}"),
                Some(Err(courier::CallError::Remote(RemoteError::Overloaded))) if reject => {}
                other => panic!("seed {seed}, call {i}: {other:?} (a stall?)"),
            }
        }
        drop(probe);
        sim.run_until_stalled(100_000);
        assert!(matches!(*seen.result.borrow(), Some(Ok(()))), "seed {seed}");
    }
}

/// The client driver's read buffer, too, gives memory back once a large
/// response is consumed and nothing more is waiting: replies below, around
/// and above the largest read size (16 KiB) leave at most 16 KiB, a
/// 600 KB reply (a registry snapshot) grows it first; quiet small calls
/// afterwards bring it back to the least read size (1 KiB).
#[test]
fn client_read_buffer_shrinks_after_a_large_reply() {
    let (client_io, server_io) = courier_mem::pair(64 * 1024);
    let imp = ProbeImpl::shared(u32::MAX);
    let server = ServerBuilder::new().build(server_io, support::service(&imp));
    let (client, driver) = ClientBuilder::new().build(client_io);
    let probe = ProbeClient::new(client);
    let capacity = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    let mut sim = Sim::new();
    let _server = record(&mut sim, server);
    {
        let (capacity, peak) = (capacity.clone(), peak.clone());
        let mut driver = driver;
        sim.spawn(async move {
            let _ = std::future::poll_fn(|cx| {
                let poll = Pin::new(&mut driver).poll(cx);
                let now = driver.buffer_capacities().0;
                capacity.set(now);
                peak.set(peak.get().max(now));
                poll
            })
            .await;
        });
    }
    for len in [1_000u32, 16 * 1024 - 64, 16 * 1024, 16 * 1024 + 64, 600_000] {
        peak.set(0);
        let call = record(&mut sim, {
            let probe = probe.clone();
            async move { probe.fill(7, len).await.map(|v| v.len()) }
        });
        sim.run_until_stalled(1_000_000);
        assert_eq!(call.borrow_mut().take(), Some(Ok(len as usize)));
        if len > 64 * 1024 {
            assert!(peak.get() > len as usize, "grew to {}", peak.get());
        }
        assert!(
            capacity.get() <= 16 * 1024,
            "after a {len}-byte reply the read buffer kept {} bytes",
            capacity.get()
        );
    }
    for i in 0..20u8 {
        let call = record(&mut sim, {
            let probe = probe.clone();
            async move { probe.echo(vec![i; 16]).await }
        });
        sim.run_until_stalled(100_000);
        assert_eq!(call.borrow_mut().take(), Some(Ok(vec![i; 16])));
    }
    assert!(
        capacity.get() <= 1024,
        "quiet calls keep {} bytes",
        capacity.get()
    );
}
