//! A client connection's response streams share one window
//! (`courier::stream::CONNECTION_WINDOW_BYTES`): up to 16 streams each aim
//! at `WINDOW_BYTES` in flight, beyond that at their share — so 64 stalled
//! consumers of small items hold about 4 MiB together, not 64 full
//! windows. Deterministic: one thread, the [`Sim`] executor over
//! courier-mem, no clock.
//!
//! Each stream's producer counts the items it made; a consumer reads
//! `READ` items and then holds its stream without reading. Once nothing
//! moves, what a producer made beyond `READ` is what its consumer's
//! credit let it send ahead.

#[path = "reliability/support.rs"]
mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use courier::client::{CONNECTION_WINDOW_BYTES, DEFAULT_CREDIT, WINDOW_BYTES};
use courier::{BoxStream, CallError, ClientBuilder, ServerBuilder};
use futures::stream::LocalBoxStream;
use futures::StreamExt;
use support::{ManualClock, Sim};

/// Item payload bytes (postcard adds one length byte: 65 B per item).
const PAYLOAD: usize = 64;
const ITEM: u32 = PAYLOAD as u32 + 1;
/// Items each consumer reads before it stalls.
const READ: u32 = 50;

#[courier::service]
pub trait Feed {
    /// Endless items of `PAYLOAD` bytes; counts them in slot `stream`.
    async fn feed(&self, stream: u32) -> BoxStream<Vec<u8>>;
}

#[derive(Clone)]
struct Producers(Arc<Vec<AtomicU32>>);

impl Feed for Producers {
    async fn feed(&self, stream: u32) -> BoxStream<Vec<u8>> {
        let made = self.0.clone();
        Box::pin(futures::stream::repeat_with(move || {
            if let Some(count) = made.get(stream as usize) {
                count.fetch_add(1, Ordering::Relaxed);
            }
            vec![7u8; PAYLOAD]
        }))
    }
}

/// The window in items a consumer of `ITEM`-byte items aims at when
/// `streams` streams receive on its connection.
fn window_items(streams: u32) -> u32 {
    let aim = WINDOW_BYTES.min(CONNECTION_WINDOW_BYTES / streams.max(1));
    (aim / ITEM).clamp(2, DEFAULT_CREDIT)
}

type Items = LocalBoxStream<'static, Result<Vec<u8>, CallError>>;
type Streams = Vec<Items>;

/// Opens `n` streams on one connection and reads `READ` items from each;
/// returns the executor, the streams (held, unread) and the producers'
/// counts.
fn open(n: u32) -> (Sim<'static>, Streams, Arc<Vec<AtomicU32>>) {
    let made = Arc::new((0..n).map(|_| AtomicU32::new(0)).collect::<Vec<_>>());
    // Room for every window at once: the credit, not the pipe, is the bound.
    let (a, b) = courier_mem::pair(64 << 20);
    let server = ServerBuilder::new()
        .timer(ManualClock::new())
        .max_concurrent(n as usize)
        .build(b, FeedServer::new(Producers(made.clone())));
    let (client, driver) = ClientBuilder::new()
        .timer(ManualClock::new())
        .max_in_flight(n as usize)
        .build(a);
    let mut sim = Sim::new();
    sim.spawn(async move {
        let _ = server.await;
    });
    sim.spawn(async move {
        let _ = driver.await;
    });
    // The streams borrow the client for the test's life.
    let feed: &'static FeedClient = Box::leak(Box::new(FeedClient::new(client)));
    // All opened (and counted) before any item arrives.
    let mut streams: Streams = (0..n).map(|i| feed.feed(i).boxed_local()).collect();
    for stream in &mut streams {
        for _ in 0..READ {
            let item = next(&mut sim, stream);
            assert_eq!(item.map(|v| v.len()), Some(PAYLOAD));
        }
    }
    sim.run_until_stalled(10_000_000);
    (sim, streams, made)
}

/// The next item of `stream`, running `sim` until it comes.
fn next(sim: &mut Sim<'static>, stream: &mut Items) -> Option<Vec<u8>> {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..1_000 {
        if let Poll::Ready(item) = stream.poll_next_unpin(&mut cx) {
            return item.map(|r| r.expect("an item"));
        }
        sim.run_until_stalled(10_000_000);
    }
    panic!("no item after 1000 runs");
}

/// Items made beyond the ones read, per stream.
fn ahead(made: &[AtomicU32], read: u32) -> Vec<u32> {
    made.iter()
        .map(|m| m.load(Ordering::Relaxed).saturating_sub(read))
        .collect()
}

/// One stream (below the 16 that share): its window opens to the full
/// aim. 64 streams (above): each stays within its share of the
/// connection's window, and all of them together within the connection's
/// bytes.
#[test]
fn many_streams_share_the_connection_window() {
    let (_sim, _one, made) = open(1);
    let one = ahead(&made, READ)[0];
    // Credit is granted once half the window is free: between half and
    // all of it is out, plus at most the one item made without credit.
    assert!(
        one >= window_items(1) / 2 && one <= window_items(1) + 1,
        "one stream: {one} items ahead, window {}",
        window_items(1)
    );

    let (_sim, _streams, made) = open(64);
    let each = ahead(&made, READ);
    for (i, &items) in each.iter().enumerate() {
        assert!(
            items <= window_items(64) + 1,
            "stream {i}: {items} items ahead, share {}",
            window_items(64)
        );
    }
    let bytes: u64 = each.iter().map(|&i| u64::from(i) * u64::from(ITEM)).sum();
    assert!(
        bytes <= u64::from(CONNECTION_WINDOW_BYTES) + 64 * u64::from(ITEM),
        "{bytes} B ahead over 64 streams"
    );
    assert!(
        window_items(64) < window_items(1) / 2,
        "the share is narrower"
    );
}

/// At 16 streams each still aims at the full window; the 17th narrows
/// them all. The boundary itself is `stream_aim`'s unit test; here: the
/// 16 streams' windows are not narrowed.
#[test]
fn sixteen_streams_keep_full_windows() {
    let (_sim, _streams, made) = open(16);
    for (i, items) in ahead(&made, READ).into_iter().enumerate() {
        assert!(
            items >= window_items(16) / 2 && items <= window_items(16) + 1,
            "stream {i}: {items} items ahead, window {}",
            window_items(16)
        );
    }
    assert_eq!(window_items(16), window_items(1));
}

/// When the other streams end, the one left widens its window again.
#[test]
fn a_window_widens_when_other_streams_end() {
    let (mut sim, mut streams, made) = open(64);
    let before = ahead(&made, READ)[0];
    assert!(before <= window_items(64) + 1, "{before}");
    let mut last = streams.pop().expect("64 streams");
    drop(streams);
    sim.run_until_stalled(10_000_000);
    // Read what was sent ahead and more: the consumer settles with one
    // stream counted and grants up to the full window.
    let read = before + 2 * window_items(1);
    for _ in 0..read {
        assert!(next(&mut sim, &mut last).is_some());
    }
    sim.run_until_stalled(10_000_000);
    let after = ahead(&made[63..], READ + read)[0];
    assert!(
        after > window_items(64) + 1 && after <= window_items(1) + 1,
        "{after} items ahead after the others ended (share {}, full {})",
        window_items(64),
        window_items(1)
    );
}
