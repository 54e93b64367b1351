//! Streams end to end, client and server, over courier-mem: every mode,
//! every ending (PROTOCOL.md R11), credit as the memory bound of a stalled
//! consumer (R10), and streams interleaved with unary calls (R12).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courier::wire::MethodKey;
use courier::{CallError, Client, Handler, RemoteError, ServerBuilder, Service, Streaming};
use futures::{SinkExt, StreamExt};

const COUNT: MethodKey = MethodKey(1); // (n: u64) -> stream of u64 0..n
const SUM: MethodKey = MethodKey(2); // (stream of u64) -> u64
const ECHO: MethodKey = MethodKey(3); // (stream of u64) -> stream of u64 * 2
const LOG: MethodKey = MethodKey(4); // notification (value: u64)
const ADD: MethodKey = MethodKey(5); // unary (a, b) -> a + b
const FOREVER: MethodKey = MethodKey(6); // () -> endless stream; drop flag
const FAIL_AFTER: MethodKey = MethodKey(7); // (n) -> n items then panic
const PROBE: MethodKey = MethodKey(8); // (stream) -> reports how it ended
const ENCODED: MethodKey = MethodKey(9); // (n, len) -> n pre-encoded Vec<u8> items

#[derive(Default)]
struct State {
    logged: AtomicU64,
    forever_dropped: AtomicBool,
    forever_created: AtomicBool,
    produced: AtomicUsize,
    probe_end: std::sync::Mutex<Option<Option<Result<u64, CallError>>>>,
}

#[derive(Clone, Default)]
struct Svc(Arc<State>);

/// Counts its items as they are produced, and flags its drop.
struct Forever {
    state: Arc<State>,
    next: u64,
}

impl futures::Stream for Forever {
    type Item = Vec<u8>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Vec<u8>>> {
        self.next += 1;
        self.state.produced.fetch_add(1, Ordering::SeqCst);
        std::task::Poll::Ready(Some(vec![self.next as u8; 1024]))
    }
}

impl Drop for Forever {
    fn drop(&mut self) {
        self.state.forever_dropped.store(true, Ordering::SeqCst);
    }
}

impl Service for Svc {
    fn dispatch(&self, method: MethodKey, args: &[u8]) -> Result<Handler, RemoteError> {
        let state = self.0.clone();
        let decode =
            |args: &[u8]| postcard::from_bytes::<u64>(args).map_err(|_| RemoteError::BadRequest);
        Ok(match method {
            COUNT => {
                let n = decode(args)?;
                Handler::stream(async move { futures::stream::iter(0..n) })
            }
            SUM => Handler::receiving(|items: Streaming<u64>| {
                Handler::new(async move {
                    items
                        .fold(0u64, |sum, item| async move { sum + item.unwrap_or(0) })
                        .await
                })
            }),
            ECHO => Handler::receiving(|items: Streaming<u64>| {
                Handler::stream(async move { items.map(|item| item.map(|v| v * 2).unwrap_or(0)) })
            }),
            LOG => {
                let v = decode(args)?;
                Handler::new(async move {
                    state.logged.fetch_add(v, Ordering::SeqCst);
                })
            }
            ADD => {
                let (a, b): (u64, u64) =
                    postcard::from_bytes(args).map_err(|_| RemoteError::BadRequest)?;
                Handler::new(async move { a + b })
            }
            FOREVER => Handler::stream(async move {
                state.forever_created.store(true, Ordering::SeqCst);
                Forever { state, next: 0 }
            }),
            FAIL_AFTER => {
                let n = decode(args)?;
                Handler::stream(async move {
                    futures::stream::iter(0..=n).map(move |i| {
                        assert!(i < n, "handler fails after {n} items");
                        i
                    })
                })
            }
            PROBE => Handler::receiving(move |mut items: Streaming<u64>| {
                Handler::new(async move {
                    let mut last = None;
                    while let Some(item) = items.next().await {
                        let failed = item.is_err();
                        last = Some(item);
                        if failed {
                            break;
                        }
                    }
                    *state.probe_end.lock().unwrap() = Some(last);
                })
            }),
            ENCODED => {
                let (n, len): (u8, u32) =
                    postcard::from_bytes(args).map_err(|_| RemoteError::BadRequest)?;
                Handler::stream(async move {
                    futures::stream::iter(0..n).map(move |i| {
                        let item = postcard::to_allocvec(&vec![i; len as usize]).unwrap();
                        courier::client::Encoded::from_encoded(item.into())
                    })
                })
            }
            _ => return Err(RemoteError::UnknownMethod),
        })
    }
}

/// Runs `body` with a client connected to a server of `svc` over
/// courier-mem, on a smol executor; returns the body's result.
fn with_server<F, Fut, R>(
    svc: Svc,
    builder: ServerBuilder<courier::timer::AsyncIoTimer>,
    body: F,
) -> R
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    let (a, b) = courier_mem::pair(256 * 1024);
    let server = builder.build(b, svc);
    let (client, driver) = courier::ClientBuilder::new()
        .timer(courier::timer::AsyncIoTimer::new())
        .build(a);
    smol::block_on(async move {
        let server = smol::spawn(server);
        let driver = smol::spawn(driver);
        let result = body(client).await;
        let _ = driver.await;
        drop(server);
        result
    })
}

fn server() -> ServerBuilder<courier::timer::AsyncIoTimer> {
    ServerBuilder::new().timer(courier::timer::AsyncIoTimer::new())
}

#[test]
fn server_streaming_delivers_every_item_in_order() {
    for (n, credit) in [
        (0u64, 1u32),
        (1, 1),
        (5, 1),
        (1000, 4),
        (1000, 128),
        (20_000, 1000),
    ] {
        let items = with_server(Svc::default(), server(), |client| async move {
            client
                .server_stream::<_, u64>(COUNT, n)
                .with_credit(credit)
                .collect::<Vec<_>>()
                .await
        });
        let expected: Vec<_> = (0..n).map(Ok).collect();
        assert_eq!(items, expected, "n={n} credit={credit}");
    }
}

#[test]
fn client_streaming_sums_every_item() {
    for n in [0u64, 1, 127, 128, 129, 10_000] {
        let credits = [1u32, 2, 128, 100_000];
        for credit in credits {
            let sum = with_server(
                Svc::default(),
                server().stream_credit(credit),
                |client| async move {
                    client
                        .client_stream::<_, _, u64>(SUM, (), futures::stream::iter(1..=n))
                        .await
                },
            );
            assert_eq!(sum, Ok(n * (n + 1) / 2), "n={n} credit={credit}");
        }
    }
}

#[test]
fn bidirectional_echo_interleaves_both_directions() {
    let out = with_server(
        Svc::default(),
        server().stream_credit(3),
        |client| async move {
            // Items are produced only as the echo comes back: each direction
            // waits on the other, so neither may buffer the whole stream.
            let (mut tx, rx) = futures::channel::mpsc::channel::<u64>(1);
            let mut echoes = client.bidi_stream::<_, _, u64>(ECHO, (), rx).with_credit(2);
            let mut got = Vec::new();
            for i in 0..200u64 {
                tx.send(i).await.unwrap();
                got.push(echoes.next().await.unwrap().unwrap());
            }
            drop(tx);
            assert!(echoes.next().await.is_none());
            got
        },
    );
    assert_eq!(out, (0..200u64).map(|v| v * 2).collect::<Vec<_>>());
}

#[test]
fn notifications_run_without_replies() {
    let svc = Svc::default();
    let state = svc.0.clone();
    let (sum, in_flight) = with_server(svc, server(), |client| async move {
        for v in 1..=10u64 {
            client.notify(LOG, &v).await.unwrap();
        }
        // Unknown notifications are dropped silently; the connection goes on.
        client.notify(MethodKey(999), &1u64).await.unwrap();
        let sum: u64 = client.call(ADD, (2u64, 3u64)).await.unwrap();
        (sum, client.in_flight())
    });
    assert_eq!(sum, 5);
    assert_eq!(in_flight, 0);
    assert_eq!(state.logged.load(Ordering::SeqCst), 55);
}

/// A consumer that stops reading costs the producer at most its credit:
/// the handler's stream is polled for no more than the window (plus the
/// item in hand) however long the consumer stalls; dropping the consumer
/// cancels the call and drops the handler's stream.
#[test]
fn a_stalled_consumer_bounds_the_producer_then_cancel_drops_it() {
    for credit in [1u32, 2, 16, 64] {
        let svc = Svc::default();
        let state = svc.0.clone();
        with_server(svc, server(), |client| {
            let state = state.clone();
            async move {
                let mut stream = client
                    .server_stream::<_, Vec<u8>>(FOREVER, ())
                    .with_credit(credit);
                let first = stream.next().await.unwrap().unwrap();
                assert_eq!(first.len(), 1024);
                // Stall: let the server run as long as it likes.
                for _ in 0..50 {
                    smol::Timer::after(Duration::from_millis(1)).await;
                }
                let produced = state.produced.load(Ordering::SeqCst);
                assert!(
                    produced <= credit as usize + 1,
                    "credit {credit}: the producer ran ahead to {produced} items"
                );
                assert!(!state.forever_dropped.load(Ordering::SeqCst));
                drop(stream);
                // The cancel crosses to the server and back through its
                // scheduler: wait for it (bounded, so a lost cancel fails,
                // but far beyond any loaded machine's delay).
                let give_up = std::time::Instant::now() + Duration::from_secs(10);
                while !state.forever_dropped.load(Ordering::SeqCst)
                    && std::time::Instant::now() < give_up
                {
                    smol::Timer::after(Duration::from_millis(1)).await;
                }
                assert!(
                    state.forever_dropped.load(Ordering::SeqCst),
                    "cancel drops the stream"
                );
                // The connection serves on.
                let sum: u64 = client.call(ADD, (1u64, 1u64)).await.unwrap();
                assert_eq!(sum, 2);
            }
        });
    }
}

/// A handler that fails mid-stream: the items before, then the typed
/// error, then `None`.
#[test]
fn a_failing_handler_ends_the_stream_with_its_error() {
    let items = with_server(Svc::default(), server(), |client| async move {
        client
            .server_stream::<_, u64>(FAIL_AFTER, 3u64)
            .collect::<Vec<_>>()
            .await
    });
    assert_eq!(
        items,
        vec![
            Ok(0),
            Ok(1),
            Ok(2),
            Err(CallError::Remote(RemoteError::HandlerPanicked))
        ]
    );
}

/// The deadline covers the whole stream: the consumer sees the items,
/// then DeadlineExceeded, and the handler's stream is dropped. (How many
/// items come before it depends on the machine's speed; the exact order,
/// items then the deadline, is pinned with a manual clock in
/// `stream_semantics.rs`.)
#[test]
fn a_deadline_ends_a_stream_on_both_sides() {
    let svc = Svc::default();
    let state = svc.0.clone();
    let watched = state.clone();
    let items = with_server(svc, server(), |client| async move {
        let state = watched;
        let mut stream = client
            .server_stream::<_, Vec<u8>>(FOREVER, ())
            .with_credit(1)
            .with_timeout(Duration::from_millis(30));
        let end = loop {
            match stream.next().await {
                Some(Ok(_)) => {
                    smol::Timer::after(Duration::from_millis(5)).await;
                }
                other => break other,
            }
        };
        // The server's own clock expires the handler too (or the cancel
        // that follows the local expiry reaches it first).
        for round in 0..500 {
            let created = state.forever_created.load(Ordering::SeqCst);
            let dropped = state.forever_dropped.load(Ordering::SeqCst);
            // Settled: dropped, or (after a while) never started.
            if dropped || (!created && round > 50) {
                break;
            }
            smol::Timer::after(Duration::from_millis(2)).await;
        }
        end
    });
    assert!(
        matches!(
            items,
            Some(Err(CallError::DeadlineExceeded))
                | Some(Err(CallError::Remote(RemoteError::DeadlineExceeded)))
        ),
        "{items:?}"
    );
    // On a loaded machine the deadline may pass before the request was
    // even written (then it is taken back and never runs); a handler that
    // did run was dropped.
    assert_eq!(
        state.forever_dropped.load(Ordering::SeqCst),
        state.forever_created.load(Ordering::SeqCst)
    );
}

/// A request stream the caller abandons: the handler is dropped (the
/// caller cancelled); one whose caller ends it normally sees `None`.
#[test]
fn request_stream_endings_reach_the_handler() {
    let svc = Svc::default();
    let state = svc.0.clone();
    with_server(svc, server(), |client| async move {
        let sum = client
            .client_stream::<_, _, ()>(PROBE, (), futures::stream::iter([5u64, 6]))
            .await;
        assert_eq!(sum, Ok(()));
    });
    let end = state.probe_end.lock().unwrap().take();
    assert_eq!(
        end,
        Some(Some(Ok(6))),
        "normal end: the last item, then None"
    );
}

/// Many streams and unary calls share one connection; every one gets all
/// its items.
#[test]
fn streams_and_unary_calls_interleave() {
    let results = with_server(Svc::default(), server(), |client| async move {
        let streams = (0..64u64).map(|i| {
            let client = &client;
            async move {
                let items: Vec<_> = client
                    .server_stream::<_, u64>(COUNT, 100 + i)
                    .with_credit(8)
                    .collect()
                    .await;
                items.len() as u64 == 100 + i && items.iter().all(Result::is_ok)
            }
        });
        let calls = (0..64u64).map(|i| {
            let client = &client;
            async move { client.call::<_, u64>(ADD, (i, i)).await == Ok(2 * i) }
        });
        let (a, b) = futures::join!(
            futures::future::join_all(streams),
            futures::future::join_all(calls)
        );
        a.into_iter().chain(b).all(|ok| ok)
    });
    assert!(results);
}

/// A stream call to a method the server does not know gets
/// UnknownMethod, not a hang (R13).
#[test]
fn an_unknown_stream_method_is_a_typed_error() {
    let items = with_server(Svc::default(), server(), |client| async move {
        let a = client
            .server_stream::<_, u64>(MethodKey(777), ())
            .collect::<Vec<_>>()
            .await;
        let b = client
            .client_stream::<_, _, u64>(MethodKey(778), (), futures::stream::iter([1u64]))
            .await;
        (a, b)
    });
    assert_eq!(
        items,
        (
            vec![Err(CallError::Remote(RemoteError::UnknownMethod))],
            Err(CallError::Remote(RemoteError::UnknownMethod))
        )
    );
}

/// A full backlog does not stop the frames streams wait for: with one
/// handler slot held by a client stream and the backlog full, a further
/// request is read and refused `Overloaded` (R12) instead of blocking the
/// stream's items behind it.
#[test]
fn a_full_backlog_does_not_block_a_streams_items() {
    let builder = server().max_concurrent(1).backlog(0);
    let outcome = with_server(Svc::default(), builder, |client| async move {
        let (mut tx, rx) = futures::channel::mpsc::channel::<u64>(4);
        let mut sum = Box::pin(client.client_stream::<_, _, u64>(SUM, (), rx));
        // Start the stream: it holds the only handler slot.
        assert!(futures::poll!(sum.as_mut()).is_pending());
        smol::Timer::after(Duration::from_millis(20)).await;
        // One request waits in the backlog, the next one overflows it.
        let mut queued = Box::pin(client.call::<_, u64>(ADD, (1u64, 1u64)));
        assert!(futures::poll!(queued.as_mut()).is_pending());
        let overflow = client.call::<_, u64>(ADD, (2u64, 2u64));
        let overflow = futures::future::select(
            Box::pin(overflow),
            Box::pin(async move {
                // The stream's items come after both requests on the wire.
                smol::Timer::after(Duration::from_millis(20)).await;
                for v in [1u64, 2, 3] {
                    tx.send(v).await.unwrap();
                }
                drop(tx);
                std::future::pending::<()>().await
            }),
        )
        .await;
        let overflow = match overflow {
            futures::future::Either::Left((result, sender)) => {
                // Dropping the sender ends the stream's items.
                drop(sender);
                result
            }
            futures::future::Either::Right(_) => unreachable!(),
        };
        (overflow, sum.await, queued.await)
    });
    let (overflow, sum, queued) = outcome;
    assert_eq!(overflow, Err(CallError::Remote(RemoteError::Overloaded)));
    // The refusal came before the items were sent: the stream ended with
    // none (its sender dropped) — what matters is that it ended at all.
    assert_eq!(sum, Ok(0));
    assert_eq!(queued, Ok(2));
}

/// A handler can stream items it encoded itself (`Encoded`): the caller
/// decodes them like items the server encoded, within any credit; an item
/// over the frame limit ends the stream with `ResponseTooLarge`, as a
/// value's would.
#[test]
fn pre_encoded_items_arrive_as_values() {
    for credit in [1u32, 2, 64] {
        let items = with_server(Svc::default(), server(), |client| async move {
            client
                .server_stream::<_, Vec<u8>>(ENCODED, (5u8, 100u32))
                .with_credit(credit)
                .collect::<Vec<_>>()
                .await
        });
        let expected: Vec<_> = (0..5u8).map(|i| Ok(vec![i; 100])).collect();
        assert_eq!(items, expected, "credit={credit}");
    }
    // An item of 1,000 bytes (and a few of header) fits in a 1,024-byte
    // frame limit; one of 1,100 does not.
    for (len, fits) in [(1_000u32, true), (1_100, false)] {
        let items = with_server(
            Svc::default(),
            server().max_frame(1024),
            |client| async move {
                client
                    .server_stream::<_, Vec<u8>>(ENCODED, (2u8, len))
                    .collect::<Vec<_>>()
                    .await
            },
        );
        if fits {
            let expected: Vec<_> = (0..2u8).map(|i| Ok(vec![i; len as usize])).collect();
            assert_eq!(items, expected);
        } else {
            assert_eq!(
                items,
                [Err(CallError::Remote(RemoteError::ResponseTooLarge))],
                "len={len}"
            );
        }
    }
}
