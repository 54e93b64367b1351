//! Both drivers under injected faults (`courier_mem::fault`), on a
//! deterministic executor: dropped connections with many calls pending,
//! a client that stops reading, and links that split, coalesce, delay and
//! cut bytes.

#[path = "reliability/support.rs"]
mod support;

use support::{record, Slot};

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use courier::{CallError, Client, ClientBuilder, DriverError, ServerBuilder, Unsent};
use courier_mem::fault::{CutKind, FaultError, Faults, Pattern};
use courier_mem::MemError;
use support::{ManualClock, ProbeClient, ProbeImpl, Sim};

/// Runs a server (borrowed, so the test can inspect it afterwards) inside a
/// [`Sim`], publishing its handler count after every poll.
fn record_server<'a, F>(
    sim: &mut Sim<'a>,
    server: &'a mut F,
    in_flight: impl Fn(&F) -> usize + 'a,
) -> (Slot<F::Output>, Rc<Cell<usize>>)
where
    F: Future + Unpin,
{
    let count = Rc::new(Cell::new(0));
    let seen = count.clone();
    let result = record(
        sim,
        std::future::poll_fn(move |cx| {
            let poll = Pin::new(&mut *server).poll(cx);
            seen.set(in_flight(server));
            poll
        }),
    );
    (result, count)
}

const CALLS: u64 = 1000;

/// 1,000 calls wait on the server when the connection is cut with `cut`
/// on the `client_side` or the server side.
fn drop_with_calls_pending(kind: CutKind, client_side: bool) -> Vec<Result<u64, CallError>> {
    let (client_io, server_io) = courier_mem::pair(1 << 20);
    let cut_faults = Faults::new().cut_kind(kind);
    let (client_io, client_handle) = cut_faults.clone().wrap(client_io);
    let (server_io, server_handle) = cut_faults.wrap(server_io);
    let imp = ProbeImpl::shared(0);
    let mut server = ServerBuilder::new().build(server_io, support::service(&imp));
    let (client, driver) = Client::new(client_io);
    let probe = ProbeClient::new(client.clone());

    let mut sim = Sim::new();
    let (server_result, server_in_flight) =
        record_server(&mut sim, &mut server, |server| server.in_flight());
    let driver_result = record(&mut sim, driver);
    let calls: Vec<_> = (0..CALLS)
        .map(|i| record(&mut sim, probe.gated(i)))
        .collect();
    sim.run_until_stalled(1000);
    assert_eq!(imp.started.load(Ordering::SeqCst), CALLS as usize);
    assert_eq!(server_in_flight.get(), CALLS as usize);
    assert_eq!(client.in_flight(), CALLS as usize);

    if client_side {
        client_handle.cut();
    } else {
        server_handle.cut();
    }
    // Promptly: a few executor rounds, no timer, no further input.
    let rounds = sim.run_until_stalled(100);
    assert!(rounds <= 10, "took {rounds} rounds");

    let results: Vec<_> = calls
        .iter()
        .map(|slot| slot.borrow_mut().take().expect("a call is still pending"))
        .collect();
    assert_eq!(client.in_flight(), 0, "client slots leaked");
    // The server sees end of stream between frames, which is also what a
    // client that only shut its write half looks like: it keeps its
    // handlers to answer them (issue 8) and learns that the peer is gone
    // when it writes the first reply.
    assert_eq!(server_in_flight.get(), CALLS as usize);
    assert!(server_result.borrow().is_none());
    imp.gate.open();
    sim.run_until_stalled(1000);
    assert_eq!(sim.live(), 0, "every task finished");
    assert_eq!(server_in_flight.get(), 0, "server handlers leaked");
    let server_result: Result<(), DriverError<FaultError<MemError>>> =
        server_result.borrow_mut().take().unwrap();
    let driver_result = driver_result.borrow_mut().take().unwrap();
    drop(sim);
    assert_eq!(server.in_flight(), 0);
    match (kind, client_side) {
        (CutKind::Reset, true) => {
            assert!(matches!(
                driver_result,
                Err(DriverError::Transport(FaultError::Reset))
            ));
            // The server's first reply finds its client gone.
            assert!(
                matches!(
                    server_result,
                    Err(DriverError::Transport(FaultError::Inner(MemError::Closed)))
                ),
                "{server_result:?}"
            );
        }
        (CutKind::Eof, false) => {
            assert!(
                matches!(driver_result, Err(DriverError::Closed)),
                "{driver_result:?}"
            );
            // Its own end was cut: the first reply fails.
            assert!(
                matches!(
                    server_result,
                    Err(DriverError::Transport(FaultError::Closed))
                ),
                "{server_result:?}"
            );
        }
        other => unreachable!("{other:?}"),
    }
    // Later calls fail at once, and were certainly not sent.
    let late = futures::executor::block_on(probe.add(1, 2));
    assert_eq!(late, Err(CallError::NotSent(Unsent::Disconnected)));
    assert!(late.unwrap_err().is_retryable());
    results
}

#[test]
fn thousand_pending_calls_fail_with_a_typed_error_when_the_link_resets() {
    let results = drop_with_calls_pending(CutKind::Reset, true);
    // A reset and an end of stream (next test) are the same to callers.
    assert!(results.iter().all(|r| *r == Err(CallError::ConnectionLost)));
}

#[test]
fn thousand_pending_calls_fail_with_a_typed_error_when_the_server_goes_away() {
    let results = drop_with_calls_pending(CutKind::Eof, false);
    assert!(results.iter().all(|r| *r == Err(CallError::ConnectionLost)));
}

#[test]
fn cut_after_some_request_frames_fails_every_call_and_leaks_nothing() {
    let (client_io, server_io) = courier_mem::pair(1 << 20);
    let (client_io, handle) = Faults::new()
        .cut_after_written_frames(500)
        .write_chunks(Pattern::seeded(1, 1, 97))
        .wrap(client_io);
    let imp = ProbeImpl::shared(0);
    let mut server = ServerBuilder::new().build(server_io, support::service(&imp));
    let (client, driver) = Client::new(client_io);
    let probe = ProbeClient::new(client.clone());
    let mut sim = Sim::new();
    let (server_result, server_in_flight) =
        record_server(&mut sim, &mut server, |server| server.in_flight());
    let driver_result = record(&mut sim, driver);
    let calls: Vec<_> = (0..CALLS)
        .map(|i| record(&mut sim, probe.gated(i)))
        .collect();
    sim.run_until_stalled(100_000);
    assert!(handle.is_cut());
    assert_eq!(handle.frames_written(), 500);
    // The server got exactly the 500 requests that made it through.
    assert_eq!(imp.started.load(Ordering::SeqCst), 500);
    // The 500 that reached the server, and those handed to the transport
    // with them, may have run; any still queued in the client were not sent.
    let mut lost = 0;
    for slot in &calls {
        match slot.borrow_mut().take() {
            Some(Err(CallError::ConnectionLost)) => lost += 1,
            Some(Err(CallError::NotSent(Unsent::Disconnected))) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(lost >= 500, "{lost}");
    assert_eq!(client.in_flight(), 0);
    // End of stream between frames: the server keeps the 500 calls it
    // received to answer them, and finds the client gone when it writes.
    assert_eq!(server_in_flight.get(), 500);
    imp.gate.open();
    sim.run_until_stalled(100_000);
    assert_eq!(server_in_flight.get(), 0);
    assert!(
        matches!(
            server_result.borrow().as_ref().unwrap(),
            Err(DriverError::Transport(MemError::Closed))
        ),
        "{:?}",
        server_result.borrow()
    );
    assert!(matches!(
        driver_result.borrow_mut().take(),
        Some(Err(DriverError::Transport(FaultError::Closed)))
    ));
}

/// The server's write buffer high-water mark for `max_frame` ≤ 64 KiB.
const HIGH_WATER: usize = 64 * 1024;

#[test]
fn client_that_stops_reading_bounds_the_servers_memory() {
    const PIPE: usize = 8 * 1024;
    const REPLY: usize = 1000;
    const MAX_CONCURRENT: usize = 16;
    const N: usize = 10_000;
    let (client_io, server_io) = courier_mem::pair(PIPE);
    let (client_io, client_faults) = Faults::new().wrap(client_io);
    let (server_io, server_faults) = Faults::new().wrap(server_io);
    let imp = ProbeImpl::shared(REPLY as u32);
    let server = ServerBuilder::new()
        .max_frame(4096)
        .max_concurrent(MAX_CONCURRENT)
        .build(server_io, support::service(&imp));
    let (client, driver) = ClientBuilder::new().max_in_flight(N).build(client_io);
    let probe = ProbeClient::new(client);

    client_faults.stall_reads();
    let mut sim = Sim::new();
    let server_result = record(&mut sim, server);
    let driver_result = record(&mut sim, driver);
    let calls: Vec<_> = (0..N)
        .map(|i| {
            let probe = probe.clone();
            record(
                &mut sim,
                async move { probe.fill(i as u8, REPLY as u32).await },
            )
        })
        .collect();
    sim.run_until_stalled(10_000);

    // The server ran only as many handlers as fit under its high-water
    // mark (plus one table's worth and what the pipe holds), then stopped
    // reading: the requests wait in the pipe and in the client.
    let started = imp.started.load(Ordering::SeqCst);
    let bound = (HIGH_WATER + PIPE) / REPLY + MAX_CONCURRENT + 1;
    assert!(started <= bound, "{started} handlers ran (bound {bound})");
    assert!(started * REPLY > HIGH_WATER, "only {started} handlers ran");
    assert_eq!(server_faults.bytes_written(), PIPE, "replies fill the pipe");
    let unread = client_faults.bytes_written() - server_faults.bytes_read();
    assert_eq!(unread, PIPE, "requests fill the other pipe");
    let read_before = server_faults.bytes_read();
    sim.run_until_stalled(10_000);
    assert_eq!(server_faults.bytes_read(), read_before, "reading stopped");

    // Once the client reads again, every call gets its own reply.
    client_faults.release_reads();
    sim.run_until_stalled(1_000_000);
    for (i, slot) in calls.iter().enumerate() {
        assert_eq!(
            slot.borrow_mut().take(),
            Some(Ok(vec![i as u8; REPLY])),
            "call {i}"
        );
    }
    assert_eq!(imp.started.load(Ordering::SeqCst), N);
    drop(probe);
    sim.run_until_stalled(1000);
    assert!(matches!(driver_result.borrow_mut().take(), Some(Ok(()))));
    assert!(matches!(server_result.borrow_mut().take(), Some(Ok(()))));
}

/// With no backlog beyond one request (`backlog(0)`), a full table stops
/// reading after that request. (The default backlog is tested in
/// `tests/reliability_server.rs`.)
#[test]
fn full_handler_table_stops_reading() {
    const MAX_CONCURRENT: usize = 4;
    let (client_io, server_io) = courier_mem::pair(4096);
    let (server_io, server_faults) = Faults::new().wrap(server_io);
    let imp = ProbeImpl::shared(0);
    let mut server = ServerBuilder::new()
        .max_concurrent(MAX_CONCURRENT)
        .backlog(0)
        .build(server_io, support::service(&imp));
    let (client, driver) = Client::new(client_io);
    let probe = ProbeClient::new(client);
    let mut sim = Sim::new();
    let (_, server_in_flight) = record_server(&mut sim, &mut server, |server| {
        server.in_flight() * 1000 + server.backlogged()
    });
    let _driver = record(&mut sim, driver);
    let calls: Vec<_> = (0..500).map(|i| record(&mut sim, probe.gated(i))).collect();
    sim.run_until_stalled(10_000);
    assert_eq!(imp.started.load(Ordering::SeqCst), MAX_CONCURRENT);
    assert_eq!(
        server_in_flight.get(),
        MAX_CONCURRENT * 1000 + 1,
        "4 run, 1 waits"
    );
    let read = server_faults.bytes_read();
    sim.run_until_stalled(10_000);
    assert_eq!(server_faults.bytes_read(), read, "reading stopped");
    imp.gate.open();
    sim.run_until_stalled(100_000);
    for (i, slot) in calls.iter().enumerate() {
        assert_eq!(slot.borrow_mut().take(), Some(Ok(i as u64)));
    }
}

/// Many calls of every size over links that split, coalesce and delay
/// bytes in both directions, with several seeds: every reply matches its
/// request.
#[test]
fn calls_survive_split_coalesced_and_delayed_links() {
    for seed in 0..6u64 {
        let (client_io, server_io) = courier_mem::pair(777);
        let (client_io, _) = Faults::new()
            .read_chunks(Pattern::seeded(seed, 1, 13))
            .write_chunks(Pattern::seeded(seed + 100, 1, 301))
            .delay_reads(Pattern::seeded(seed + 200, 0, 2))
            .delay_writes(Pattern::Cycle(vec![0, 1, 0, 3]))
            .wrap(client_io);
        let (server_io, _) = Faults::new()
            .read_chunks(Pattern::Cycle(vec![1, 2, 3, 5, 8, 13, 21]))
            .coalesce_writes(50 + seed as usize * 97)
            .delay_writes(Pattern::seeded(seed + 300, 0, 2))
            .wrap(server_io);
        let imp = ProbeImpl::shared(5000);
        let server = ServerBuilder::new()
            .max_concurrent(7)
            .build(server_io, support::service(&imp));
        let (client, driver) = ClientBuilder::new().max_in_flight(50).build(client_io);
        let probe = ProbeClient::new(client);
        let mut sim = Sim::new();
        let server_result = record(&mut sim, server);
        let driver_result = record(&mut sim, driver);
        let calls: Vec<_> = (0..300u64)
            .map(|i| {
                let len = (i * 37 % 3000) as u32;
                let probe = probe.clone();
                let call = async move {
                    match i % 3 {
                        0 => probe.fill(i as u8, len).await.map(|v| v.len() as u64),
                        1 => probe.add(i, seed).await,
                        _ => probe.yields(i as u8).await.map(u64::from),
                    }
                };
                (i, len, record(&mut sim, call))
            })
            .collect();
        sim.run_until_stalled(1_000_000);
        for (i, len, slot) in &calls {
            let expected = match i % 3 {
                0 => u64::from(*len),
                1 => i + seed,
                _ => u64::from(*i as u8),
            };
            assert_eq!(
                slot.borrow_mut().take(),
                Some(Ok(expected)),
                "seed {seed}, call {i}"
            );
        }
        drop(probe);
        sim.run_until_stalled(10_000);
        assert!(matches!(driver_result.borrow_mut().take(), Some(Ok(()))));
        assert!(matches!(server_result.borrow_mut().take(), Some(Ok(()))));
    }
}

/// The server cuts after sending some replies: the calls answered before
/// the cut succeed, every other call fails with a typed error, none hangs.
#[test]
fn cut_after_some_reply_frames() {
    let (client_io, server_io) = courier_mem::pair(1 << 16);
    let (server_io, handle) = Faults::new()
        .cut_after_written_frames(40)
        .cut_kind(CutKind::Reset)
        .wrap(server_io);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new().build(server_io, support::service(&imp));
    let (client, driver) = Client::new(client_io);
    let probe = ProbeClient::new(client.clone());
    let mut sim = Sim::new();
    let server_result = record(&mut sim, server);
    let _driver = record(&mut sim, driver);
    let calls: Vec<_> = (0..100u64)
        .map(|i| record(&mut sim, probe.add(i, 1)))
        .collect();
    sim.run_until_stalled(100_000);
    assert!(handle.is_cut());
    let mut ok = 0;
    for (i, slot) in calls.iter().enumerate() {
        match slot.borrow_mut().take().expect("call still pending") {
            Ok(v) => {
                assert_eq!(v, i as u64 + 1);
                ok += 1;
            }
            Err(e) => assert_eq!(e, CallError::ConnectionLost),
        }
    }
    assert_eq!(ok, 40, "exactly the replies before the cut arrived");
    assert_eq!(client.in_flight(), 0);
    assert!(matches!(
        server_result.borrow_mut().take(),
        Some(Err(DriverError::Transport(FaultError::Reset)))
    ));
}

#[test]
fn stalled_writes_hold_calls_until_released() {
    let (client_io, server_io) = courier_mem::pair(4096);
    let (client_io, handle) = Faults::new().wrap(client_io);
    let imp = ProbeImpl::shared(0);
    let server = ServerBuilder::new().build(server_io, support::service(&imp));
    let (client, driver) = Client::new(client_io);
    let probe = ProbeClient::new(client);
    handle.stall_writes();
    let mut sim = Sim::new();
    let _server = record(&mut sim, server);
    let _driver = record(&mut sim, driver);
    let call = record(&mut sim, probe.add(20, 22));
    sim.run_until_stalled(1000);
    assert!(call.borrow().is_none());
    assert_eq!(imp.started.load(Ordering::SeqCst), 0);
    assert_eq!(handle.bytes_written(), 0);
    handle.release_writes();
    sim.run_until_stalled(1000);
    assert_eq!(call.borrow_mut().take(), Some(Ok(42)));
}

#[test]
fn poll_results_are_never_ready_without_progress() {
    // A sanity check of the executor the other tests rely on: a task that
    // never wakes itself is polled once and reported stalled.
    let mut sim = Sim::new();
    let polls = Rc::new(Cell::new(0));
    let seen = polls.clone();
    sim.spawn(std::future::poll_fn(move |_| {
        seen.set(seen.get() + 1);
        Poll::<()>::Pending
    }));
    sim.run_until_stalled(10);
    sim.run_until_stalled(10);
    assert_eq!(polls.get(), 1);
    assert_eq!(sim.live(), 1);
}

/// Found by the `server_stream` fuzzer: with a full handler table, a
/// handler whose deadline passed freed its slot, but the server did not go
/// back to reading, and no transport wake-up came: the connection hung.
#[test]
fn expired_deadline_frees_a_slot_and_reading_resumes() {
    for spawned in [false, true] {
        let clock = ManualClock::new();
        let (client_io, server_io) = courier_mem::pair(4096);
        let imp = ProbeImpl::shared(0);
        let spawned_tasks = Rc::new(RefCell::new(Vec::new()));
        let mut builder = ServerBuilder::new().max_concurrent(1).timer(clock.clone());
        let queue = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if spawned {
            let queue = queue.clone();
            builder = builder.spawner(move |task| queue.lock().unwrap().push(task));
        }
        let server = builder.build(server_io, support::service(&imp));
        let (client, driver) = Client::new(client_io);
        let probe = ProbeClient::new(client);
        let slow = probe.with_timeout(std::time::Duration::from_millis(5));
        let mut sim = Sim::new();
        let _server = record(&mut sim, server);
        let _driver = record(&mut sim, driver);
        // Runs the tasks, and the handlers spawned meanwhile, until all wait.
        let settle = |sim: &mut Sim<'_>| loop {
            let spawned: Vec<_> = queue.lock().unwrap().drain(..).collect();
            let none = spawned.is_empty();
            for task in spawned {
                spawned_tasks.borrow_mut().push(record(sim, task));
            }
            if sim.run_until_stalled(100) == 0 && none {
                break;
            }
        };
        let gated = record(&mut sim, slow.gated(1));
        settle(&mut sim);
        let add = record(&mut sim, probe.add(2, 3));
        settle(&mut sim);
        assert_eq!(imp.started.load(Ordering::SeqCst), 1, "the table is full");
        clock.advance(std::time::Duration::from_millis(5));
        settle(&mut sim);
        assert_eq!(
            gated.borrow_mut().take(),
            Some(Err(CallError::Remote(
                courier::RemoteError::DeadlineExceeded
            ))),
            "spawned: {spawned}"
        );
        assert_eq!(add.borrow_mut().take(), Some(Ok(5)), "spawned: {spawned}");
    }
}
