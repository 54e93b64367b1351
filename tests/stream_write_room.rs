//! A server's streams measure their room under the write mark by the
//! bytes not yet written, while the bytes already written may still sit in
//! front of the write buffer (it drops them only when that is cheap).
//! Streams over a transport that takes every write in pieces, with marks
//! below, at and above an item frame and write buffers far larger than the
//! mark, and pipes smaller than, as large as and larger than the mark: every
//! item arrives once, in order, intact, every stream ends normally and
//! nothing hangs or spins.

#[path = "reliability/support.rs"]
mod support;

use courier::{BoxStream, ClientBuilder, ServerBuilder};
use courier_mem::fault::{Faults, Pattern};
use futures::StreamExt;
use support::{record, Sim};

/// Executor rounds a case may take before it counts as spinning.
const ROUNDS: usize = 2_000_000;
/// Streams at once, and items per stream.
const STREAMS: u32 = 3;
const ITEMS: u32 = 40;

/// Item `i` of stream `s`: its size varies from 0 to 299 bytes.
fn item(s: u32, i: u32) -> Vec<u8> {
    let len = ((i * 37 + s * 11) % 300) as usize;
    (0..len).map(|k| (k as u32 ^ i ^ (s << 5)) as u8).collect()
}

/// Bytes of the largest item frame (prefix, header, length, body).
const FRAME: usize = 4 + 7 + 2 + 299;

#[courier::service]
pub trait Items {
    /// Stream `s`'s items `0..n`.
    async fn items(&self, s: u32, n: u32) -> BoxStream<Vec<u8>>;
}

#[derive(Clone)]
struct Imp;

impl Items for Imp {
    async fn items(&self, s: u32, n: u32) -> BoxStream<Vec<u8>> {
        Box::pin(futures::stream::iter(0..n).map(move |i| item(s, i)))
    }
}

/// A server on `server_io` (with write mark `mark`, or the default) and a
/// client on `client_io`, both running on a new simulation.
fn start<'a, S, C>(server_io: S, client_io: C, mark: Option<usize>) -> (Sim<'a>, ItemsClient)
where
    S: courier::Transport + 'a,
    C: courier::Transport + 'a,
{
    let builder = match mark {
        Some(mark) => ServerBuilder::new().write_mark(mark),
        None => ServerBuilder::new(),
    };
    let server = builder.build(server_io, ItemsServer::new(Imp));
    let (client, driver) = ClientBuilder::new().build(client_io);
    let mut sim = Sim::new();
    sim.spawn(async move {
        let _ = server.await;
    });
    sim.spawn(async move {
        let _ = driver.await;
    });
    (sim, ItemsClient::new(client))
}

/// How many of stream `s`'s `n` items arrive intact and in order (with
/// `credit`, or the client's default), counted until the first that does
/// not.
async fn intact_items(items: ItemsClient, s: u32, n: u32, credit: Option<u32>) -> u32 {
    let mut stream = items.items(s, n);
    if let Some(credit) = credit {
        stream = stream.with_credit(credit);
    }
    let mut got = 0u32;
    while let Some(Ok(next)) = stream.next().await {
        if next != item(s, got) {
            break;
        }
        got += 1;
    }
    got
}

/// Runs `STREAMS` streams at once against a server with write mark `mark`
/// whose transport takes writes in pieces of `chunks`, over a pipe of
/// `pipe` bytes; checks every item, in order, and the normal ends.
fn case(mark: usize, chunks: Pattern, pipe: usize, credit: u32) {
    let what = format!("mark={mark} chunks={chunks:?} pipe={pipe} credit={credit}");
    let (a, b) = courier_mem::pair(pipe);
    let (b, _faults) = Faults::new().write_chunks(chunks).wrap(b);
    let (mut sim, items) = start(b, a, Some(mark));
    let results: Vec<_> = (0..STREAMS)
        .map(|s| {
            let items = items.clone();
            record(&mut sim, async move {
                let mut stream = items.items(s, ITEMS).with_credit(credit);
                let mut got = 0u32;
                while let Some(next) = stream.next().await {
                    let next = next.map_err(|e| format!("item {got}: {e}"))?;
                    if next != item(s, got) {
                        return Err(format!("item {got} differs"));
                    }
                    got += 1;
                }
                Ok::<u32, String>(got)
            })
        })
        .collect();
    sim.run_until_stalled(ROUNDS);
    for (s, result) in results.iter().enumerate() {
        let result = result.borrow_mut().take();
        assert_eq!(result, Some(Ok(ITEMS)), "{what}: stream {s}");
    }
    drop(items);
    sim.run_until_stalled(ROUNDS);
    assert_eq!(sim.live(), 0, "{what}: the server and driver end");
}

#[test]
fn every_item_arrives_with_marks_below_at_and_above_a_frame() {
    for mark in [0, FRAME - 1, FRAME, FRAME + 1, 4 * FRAME] {
        for chunks in [
            Pattern::Fixed(1),
            Pattern::Fixed(FRAME - 1),
            Pattern::Fixed(FRAME),
            Pattern::Fixed(FRAME + 1),
            Pattern::seeded(u64::try_from(mark).unwrap(), 1, 3 * FRAME),
        ] {
            for pipe in [mark.max(1) / 2 + 1, mark.max(1), 2 * mark + 1, 1 << 20] {
                case(mark, chunks.clone(), pipe, 8);
            }
        }
    }
}

/// The default mark (1 MiB here: `max(WRITE_MARK, max_frame)`) with the
/// window of credit a fast consumer grants: the buffer holds far more than
/// one write takes, so sent bytes sit in front of it between writes.
#[test]
fn every_item_arrives_with_the_default_mark_and_small_writes() {
    for chunks in [
        Pattern::Fixed(1),
        Pattern::Fixed(700),
        Pattern::seeded(7, 1, 5000),
    ] {
        for pipe in [512, 64 * 1024, 4 << 20] {
            let what = format!("default mark chunks={chunks:?} pipe={pipe}");
            let (a, b) = courier_mem::pair(pipe);
            let (b, _faults) = Faults::new().write_chunks(chunks.clone()).wrap(b);
            let (mut sim, items) = start(b, a, None);
            let result = record(&mut sim, intact_items(items, 1, 2000, None));
            sim.run_until_stalled(ROUNDS);
            assert_eq!(result.borrow_mut().take(), Some(2000), "{what}");
            assert_eq!(sim.live(), 0, "{what}: the server and driver end");
        }
    }
}

/// The client's transport stops reading, so the server's writes stop part
/// way through its buffer: a stream must then wait for the unsent bytes to
/// fall under the mark (which the stopped reader never lets them), not
/// wake itself for ever because the written bytes still in front of the
/// buffer make it look full while the unsent ones are under the mark. The
/// executor must go idle; released, every item arrives.
#[test]
fn a_stopped_reader_leaves_the_server_idle_not_spinning() {
    for mark in [6 * 1024, 12 * 1024, 20 * 1024, 40 * 1024] {
        for pipe in [2 * 1024, 8 * 1024, 24 * 1024] {
            let what = format!("mark={mark} pipe={pipe}");
            let (a, b) = courier_mem::pair(pipe);
            let (a, faults) = Faults::new().wrap(a);
            faults.stall_reads();
            let (mut sim, items) = start(b, a, Some(mark));
            let n = 1000;
            let result = record(&mut sim, intact_items(items, 2, n, Some(n)));
            // Panics if the server keeps waking itself.
            sim.run_until_stalled(ROUNDS);
            assert_eq!(result.borrow_mut().take(), None, "{what}: stalled");
            faults.release_reads();
            sim.run_until_stalled(ROUNDS);
            assert_eq!(result.borrow_mut().take(), Some(n), "{what}");
            assert_eq!(sim.live(), 0, "{what}: the server and driver end");
        }
    }
}

/// Bytes of each item of [`Counted`]'s stream.
const COUNTED_ITEM: usize = 100;
/// An item frame of [`COUNTED_ITEM`] bytes: at least prefix, kind, id and
/// length byte; at most the prefix, the largest header and the length.
const COUNTED_FRAME_MIN: usize = 4 + 1 + 1 + 1 + COUNTED_ITEM;
const COUNTED_FRAME_MAX: usize = 4 + 7 + 1 + COUNTED_ITEM;

#[courier::service]
pub trait Counted {
    /// `n` items of [`COUNTED_ITEM`] bytes.
    async fn counted(&self, n: u32) -> BoxStream<Vec<u8>>;
}

/// Counts the items its streams produced.
#[derive(Clone, Default)]
struct CountedImp(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Counted for CountedImp {
    async fn counted(&self, n: u32) -> BoxStream<Vec<u8>> {
        let produced = self.0.clone();
        Box::pin(futures::stream::iter(0..n).map(move |i| {
            produced.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            vec![i as u8; COUNTED_ITEM]
        }))
    }
}

/// How many bytes of items a server with `mark` (or the default one, and
/// the default 1 MiB `max_frame`) produced beyond those the client
/// received, once the client's transport stopped reading after the
/// stream's window had opened (so credit does not bound it): `(least,
/// most)` by the smallest and largest item frame.
fn bytes_ahead(mark: Option<usize>, pipe: usize) -> (usize, usize) {
    use std::cell::Cell;
    use std::rc::Rc;
    let (a, b) = courier_mem::pair(pipe);
    let (a, faults) = Faults::new().wrap(a);
    let imp = CountedImp::default();
    let produced = imp.0.clone();
    let builder = match mark {
        Some(mark) => ServerBuilder::new().write_mark(mark),
        None => ServerBuilder::new(),
    };
    let server = builder.build(b, CountedServer::new(imp));
    let (client, driver) = ClientBuilder::new().build(a);
    let client = CountedClient::new(client);
    let mut sim = Sim::serving(server, driver);
    let received = Rc::new(Cell::new(0usize));
    let seen = received.clone();
    sim.spawn(async move {
        let mut stream = client.counted(u32::MAX);
        while let Some(Ok(_)) = stream.next().await {
            seen.set(seen.get() + 1);
            // The window has opened to its full aim (256 KiB, over 2,000
            // items): now the transport stops, the consumer does not.
            if seen.get() == 20_000 {
                faults.stall_reads();
            }
        }
    });
    sim.run_until_stalled(ROUNDS);
    let ahead = produced
        .load(std::sync::atomic::Ordering::SeqCst)
        .saturating_sub(received.get());
    assert!(received.get() >= 20_000, "the stall was reached");
    (ahead * COUNTED_FRAME_MIN, ahead * COUNTED_FRAME_MAX)
}

/// Items wait for room under the mark the builder set — below, at and
/// above `WRITE_MARK` — and under `WRITE_MARK` when none is set, not under
/// the default read mark `max(WRITE_MARK, max_frame)` (1 MiB): a turn of
/// items filling a megabyte made the write buffer grow and shrink at every
/// pause. Ahead of the client are at least the pipe and the mark (the
/// server stopped only past it), at most those plus one handler's turn
/// (16 KiB), the item looked ahead and the client driver's read chunk.
#[test]
fn items_wait_under_the_mark_set_or_write_mark() {
    const PIPE: usize = 16 * 1024;
    const TURN: usize = 16 * 1024;
    const READ_CHUNK: usize = 16 * 1024;
    let least = courier::server::WRITE_MARK;
    for mark in [None, Some(least / 2), Some(least), Some(2 * least)] {
        let expected = mark.unwrap_or(least);
        let (low, high) = bytes_ahead(mark, PIPE);
        assert!(
            high >= PIPE + expected,
            "mark {mark:?}: only {high} B ahead, under the pipe and the mark"
        );
        let most = PIPE + expected + TURN + 2 * COUNTED_FRAME_MAX + READ_CHUNK;
        assert!(low <= most, "mark {mark:?}: {low} B ahead, over {most} B");
    }
}
