//! End-to-end calls over `courier-mem` on two executors: `futures::executor`
//! and smol.

mod common;

use std::time::Duration;

use common::{wait_until, DivError, Impl, TestClient, TestServer};
use courier::{CallError, ClientBuilder, MethodKey, RemoteError, ServerBuilder};
use futures::stream::{FuturesUnordered, StreamExt};

/// Runs `body` against a fresh in-memory client/server pair on the current
/// executor, then checks that both drivers end cleanly.
async fn with_pair<CT, ST, F, Fut>(
    client: ClientBuilder<CT>,
    server: ServerBuilder<ST>,
    imp: Impl,
    body: F,
) where
    CT: courier::Timer + Clone + Send + Sync + 'static,
    ST: courier::Timer,
    F: FnOnce(TestClient) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (client_io, server_io) = courier_mem::pair(64 * 1024);
    let server = server.build(server_io, TestServer::new(imp));
    let (client, driver) = client.build(client_io);
    let calls = body(TestClient::new(client));
    let ((), driver, server) = futures::join!(calls, driver, server);
    driver.expect("client driver ends cleanly");
    server.expect("server ends cleanly");
}

async fn many_calls(calc: TestClient, total: u64, in_flight: usize) {
    let mut results = futures::stream::iter(0..total)
        .map(|i| {
            let calc = &calc;
            async move { (i, calc.add(i, 1_000_000).await) }
        })
        .buffer_unordered(in_flight);
    let mut seen = 0;
    while let Some((i, result)) = results.next().await {
        assert_eq!(result, Ok(i + 1_000_000), "call {i}");
        seen += 1;
    }
    assert_eq!(seen, total);
    assert_eq!(calc.client().in_flight(), 0);
}

#[test]
fn ten_thousand_calls_256_in_flight_futures_executor() {
    futures::executor::block_on(with_pair(
        ClientBuilder::new(),
        ServerBuilder::new(),
        Impl::default(),
        |calc| many_calls(calc, 10_000, 256),
    ));
}

#[test]
fn ten_thousand_calls_256_in_flight_smol() {
    smol::block_on(with_pair(
        ClientBuilder::new(),
        ServerBuilder::new(),
        Impl::default(),
        |calc| many_calls(calc, 10_000, 256),
    ));
}

#[test]
fn callers_beyond_the_in_flight_bound_wait_their_turn() {
    // 256 callers share 16 slots; the server runs at most 8 handlers at once.
    futures::executor::block_on(with_pair(
        ClientBuilder::new().max_in_flight(16),
        ServerBuilder::new().max_concurrent(8),
        Impl::default(),
        |calc| many_calls(calc, 5_000, 256),
    ));
}

#[test]
fn the_server_runs_at_most_max_concurrent_handlers() {
    let imp = Impl::default();
    let probe = imp.probe.clone();
    futures::executor::block_on(with_pair(
        ClientBuilder::new(),
        ServerBuilder::new().max_concurrent(8),
        imp,
        |calc| async move {
            let results: Vec<_> = futures::stream::iter(0..200u64)
                .map(|i| calc.delayed(i, 3))
                .buffer_unordered(64)
                .collect()
                .await;
            assert!(results.iter().all(Result::is_ok));
        },
    ));
    let max = probe.delayed_max.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=8).contains(&max), "max concurrent handlers {max}");
}

#[test]
fn a_waiter_dropped_after_its_turn_came_passes_the_turn_on() {
    futures::executor::block_on(with_pair(
        ClientBuilder::new().max_in_flight(1),
        ServerBuilder::new(),
        Impl::default(),
        |calc| async move {
            let mut first = Box::pin(calc.hang(1));
            let mut second = Box::pin(calc.echo(2));
            let mut third = Box::pin(calc.echo(3));
            assert!(futures::poll!(first.as_mut()).is_pending());
            assert!(futures::poll!(second.as_mut()).is_pending());
            assert!(futures::poll!(third.as_mut()).is_pending());
            assert_eq!(calc.client().in_flight(), 1);
            // The slot goes to `second`, which gives up before taking it.
            drop(first);
            drop(second);
            assert_eq!(third.await, Ok(3));
            // And a queued caller that gives up before its turn leaves no trace.
            let mut blocker = Box::pin(calc.hang(4));
            assert!(futures::poll!(blocker.as_mut()).is_pending());
            let mut quitter = Box::pin(calc.echo(5));
            assert!(futures::poll!(quitter.as_mut()).is_pending());
            drop(quitter);
            drop(blocker);
            assert_eq!(calc.echo(6).await, Ok(6));
            assert_eq!(calc.client().in_flight(), 0);
        },
    ));
}

#[test]
fn calls_run_on_a_multi_threaded_executor_with_a_spawner() {
    let ex = std::sync::Arc::new(smol::Executor::new());
    let spawn_ex = ex.clone();
    let server = ServerBuilder::new().spawner(move |task| spawn_ex.spawn(task).detach());
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (ex, stopped) = (ex.clone(), stopped.clone());
            std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())))
        })
        .collect();
    smol::block_on(with_pair(
        ClientBuilder::new(),
        server,
        Impl::default(),
        |calc| many_calls(calc, 5_000, 128),
    ));
    drop(stop);
    for thread in threads {
        let _ = thread.join();
    }
}

#[test]
fn replies_come_back_in_completion_order() {
    futures::executor::block_on(with_pair(
        ClientBuilder::new(),
        ServerBuilder::new(),
        Impl::default(),
        |calc| async move {
            // Sent in the order 0, 1, 2; the server finishes them 2, 1, 0.
            let mut calls: FuturesUnordered<_> = [(0, 300), (1, 100), (2, 0)]
                .into_iter()
                .map(|(id, yields)| calc.delayed(id, yields))
                .collect();
            let mut order = Vec::new();
            while let Some(result) = calls.next().await {
                order.push(result.unwrap());
            }
            assert_eq!(order, [2, 1, 0]);
        },
    ));
}

#[test]
fn application_errors_arrive_typed_and_apart_from_rpc_errors() {
    futures::executor::block_on(with_pair(
        ClientBuilder::new(),
        ServerBuilder::new(),
        Impl::default(),
        |calc| async move {
            assert_eq!(calc.div(7, 2).await, Ok(Ok(3)));
            assert_eq!(calc.div(7, 0).await, Ok(Err(DivError::ByZero)));
        },
    ));
}

#[test]
fn dropping_a_call_cancels_its_handler_on_the_server() {
    let imp = Impl::default();
    let probe = imp.probe.clone();
    futures::executor::block_on(with_pair(
        ClientBuilder::new(),
        ServerBuilder::new(),
        imp,
        |calc| async move {
            let mut call = Box::pin(calc.hang(1));
            // Poll the call until the handler runs on the server.
            let mut started = false;
            for _ in 0..1000 {
                if futures::poll!(call.as_mut()).is_ready() {
                    panic!("hang() returned");
                }
                if probe.started() == 1 {
                    started = true;
                    break;
                }
                common::YieldNow(false).await;
            }
            assert!(started, "the handler never started");
            assert_eq!(calc.client().in_flight(), 1);
            drop(call);
            assert_eq!(calc.client().in_flight(), 0, "dropping frees the slot");
            wait_until(|| probe.dropped() == 1, 1000).await;
            // The connection is still fine.
            assert_eq!(calc.echo(5).await, Ok(5));
        },
    ));
}

#[test]
fn unknown_method_is_a_typed_error_and_the_connection_goes_on() {
    futures::executor::block_on(with_pair(
        ClientBuilder::new(),
        ServerBuilder::new(),
        Impl::default(),
        |calc| async move {
            let result = calc
                .client()
                .call::<(u64,), u64>(MethodKey(0xdead_beef), (1,))
                .await;
            assert_eq!(result, Err(CallError::Remote(RemoteError::UnknownMethod)));
            assert_eq!(calc.echo(9).await, Ok(9));
        },
    ));
}

mod v2 {
    /// Same service and method names as `common::Test`, other signature.
    #[courier::service]
    pub trait Test {
        /// `add` with 32-bit arguments.
        async fn add(&self, a: u32, b: u32) -> u32;
    }
}

#[test]
fn mismatched_signature_is_unknown_method_not_a_garbled_value() {
    assert_ne!(v2::TestClient::ADD, TestClient::ADD);
    futures::executor::block_on(async {
        let (client_io, server_io) = courier_mem::pair(4096);
        let server = ServerBuilder::new().build(server_io, TestServer::new(Impl::default()));
        let (client, driver) = courier::Client::new(client_io);
        let old = v2::TestClient::new(client);
        let calls = async move {
            assert_eq!(
                old.add(1, 2).await,
                Err(CallError::Remote(RemoteError::UnknownMethod))
            );
        };
        let ((), driver, server) = futures::join!(calls, driver, server);
        driver.unwrap();
        server.unwrap();
    });
}

#[test]
fn undecodable_arguments_are_a_bad_request() {
    futures::executor::block_on(with_pair(
        ClientBuilder::new(),
        ServerBuilder::new(),
        Impl::default(),
        |calc| async move {
            // `add` takes two u64s; send a string instead.
            let result = calc
                .client()
                .call::<_, u64>(TestClient::ADD, "not numbers")
                .await;
            assert_eq!(result, Err(CallError::Remote(RemoteError::BadRequest)));
            assert_eq!(calc.add(2, 2).await, Ok(4));
        },
    ));
}

#[test]
fn response_of_the_wrong_type_is_a_decode_error() {
    futures::executor::block_on(with_pair(
        ClientBuilder::new(),
        ServerBuilder::new(),
        Impl::default(),
        |calc| async move {
            // `bytes` answers a Vec<u8>; expect a u64 and a bool instead.
            let result = calc
                .client()
                .call::<_, (u64, bool)>(TestClient::BYTES, (vec![1u8, 2, 3],))
                .await;
            assert_eq!(result, Err(CallError::Decode));
        },
    ));
}

#[test]
fn oversized_request_fails_locally_naming_both_sizes() {
    futures::executor::block_on(with_pair(
        ClientBuilder::new().max_frame(1024),
        ServerBuilder::new(),
        Impl::default(),
        |calc| async move {
            let err = calc.bytes(vec![7; 2000]).await.unwrap_err();
            let CallError::RequestTooLarge { len, max } = err else {
                panic!("expected RequestTooLarge, got {err:?}");
            };
            assert_eq!(max, 1024);
            assert!(len > 2000, "{len}");
            assert!(err.to_string().contains("1024"), "{err}");
            // Nothing was sent; the connection works.
            assert_eq!(calc.bytes(vec![7; 100]).await, Ok(vec![7; 100]));
        },
    ));
}

#[test]
fn oversized_frame_from_the_peer_closes_the_connection_with_a_typed_error() {
    futures::executor::block_on(async {
        let (client_io, server_io) = courier_mem::pair(64 * 1024);
        let server = ServerBuilder::new()
            .max_frame(512)
            .build(server_io, TestServer::new(Impl::default()));
        let (client, driver) = courier::Client::new(client_io);
        let calc = TestClient::new(client);
        let calls = async {
            let result = calc.bytes(vec![1; 4096]).await;
            assert_eq!(result, Err(CallError::ConnectionLost));
            // The connection is gone: later calls fail fast, not sent.
            assert_eq!(
                calc.echo(1).await,
                Err(CallError::NotSent(courier::Unsent::Disconnected))
            );
        };
        let ((), driver, server) = futures::join!(calls, driver, server);
        match server {
            Err(courier::DriverError::Protocol(courier::FrameError::TooLarge {
                max: 512, ..
            })) => {}
            other => panic!("expected the server to reject the frame, got {other:?}"),
        }
        assert!(driver.is_err());
    });
}

#[test]
fn server_gone_mid_call_fails_every_pending_call_and_new_ones_fail_fast() {
    futures::executor::block_on(async {
        let imp = Impl::default();
        let probe = imp.probe.clone();
        let (client_io, server_io) = courier_mem::pair(64 * 1024);
        let mut server = Box::pin(ServerBuilder::new().build(server_io, TestServer::new(imp)));
        let (client, driver) = courier::Client::new(client_io);
        let calc = TestClient::new(client);
        let calls = async {
            let mut pending: FuturesUnordered<_> = (0..100).map(|i| calc.hang(i)).collect();
            // Run the server until every handler started, then drop it.
            let mut server_alive = true;
            for _ in 0..1000 {
                assert!(futures::poll!(pending.next()).is_pending());
                if server_alive && futures::poll!(server.as_mut()).is_ready() {
                    panic!("server ended early");
                }
                if probe.started() == 100 {
                    server.set(
                        ServerBuilder::new()
                            .build(courier_mem::pair(1).0, TestServer::new(Impl::default())),
                    );
                    server_alive = false;
                    break;
                }
                common::YieldNow(false).await;
            }
            assert!(!server_alive, "handlers never all started");
            let mut failed = 0;
            while let Some(result) = pending.next().await {
                assert_eq!(result, Err(CallError::ConnectionLost));
                failed += 1;
            }
            assert_eq!(failed, 100);
            assert_eq!(probe.dropped(), 100, "the server dropped its handlers");
            assert_eq!(calc.client().in_flight(), 0);
            assert!(calc.client().is_closed());
            let late = calc.echo(1).await;
            assert_eq!(late, Err(CallError::NotSent(courier::Unsent::Disconnected)));
            assert!(late.unwrap_err().is_retryable());
        };
        let ((), driver) = futures::join!(calls, driver);
        assert!(
            matches!(driver, Err(courier::DriverError::Closed)),
            "{driver:?}"
        );
    });
}

#[test]
fn dropping_the_client_driver_fails_pending_calls() {
    futures::executor::block_on(async {
        let (client_io, _server_io) = courier_mem::pair(1024);
        let (client, driver) = courier::Client::new(client_io);
        let calc = TestClient::new(client);
        let mut call = Box::pin(calc.echo(1));
        assert!(futures::poll!(call.as_mut()).is_pending());
        drop(driver);
        // The driver never ran: the request never left the process.
        assert_eq!(call.await, Err(CallError::NotSent(courier::Unsent::Closed)));
        assert_eq!(
            calc.echo(2).await,
            Err(CallError::NotSent(courier::Unsent::Closed))
        );
    });
}

#[test]
fn client_side_deadline_fails_the_call_and_cancels_the_handler() {
    let imp = Impl::default();
    let probe = imp.probe.clone();
    smol::block_on(with_pair(
        ClientBuilder::new().timer(courier::timer::AsyncIoTimer::new()),
        ServerBuilder::new(),
        imp,
        |calc| async move {
            let start = std::time::Instant::now();
            let result = calc.with_timeout(Duration::from_millis(50)).hang(1).await;
            assert_eq!(result, Err(CallError::DeadlineExceeded));
            assert!(start.elapsed() >= Duration::from_millis(50));
            wait_until(|| probe.dropped() == 1, 10_000).await;
            assert_eq!(calc.client().in_flight(), 0);
            assert_eq!(calc.echo(3).await, Ok(3));
        },
    ));
}

#[test]
fn server_side_deadline_drops_the_handler_and_answers_with_an_error() {
    let imp = Impl::default();
    let probe = imp.probe.clone();
    smol::block_on(with_pair(
        // No local timer: only the server enforces the deadline.
        ClientBuilder::new(),
        ServerBuilder::new().timer(courier::timer::AsyncIoTimer::new()),
        imp,
        |calc| async move {
            let result = calc.with_timeout(Duration::from_millis(30)).hang(1).await;
            assert_eq!(
                result,
                Err(CallError::Remote(RemoteError::DeadlineExceeded))
            );
            assert_eq!(probe.dropped(), 1);
            // A call that finishes in time is unaffected.
            let quick = calc.with_timeout(Duration::from_secs(10)).echo(4).await;
            assert_eq!(quick, Ok(4));
        },
    ));
}

#[test]
fn a_handler_panic_is_a_typed_error_and_the_server_keeps_serving() {
    futures::executor::block_on(with_pair(
        ClientBuilder::new(),
        ServerBuilder::new(),
        Impl::default(),
        |calc| async move {
            let (boom, ok) = futures::join!(calc.explode(), calc.echo(8));
            assert_eq!(boom, Err(CallError::Remote(RemoteError::HandlerPanicked)));
            assert_eq!(ok, Ok(8));
            assert_eq!(calc.echo(9).await, Ok(9));
        },
    ));
}

#[test]
fn graceful_shutdown_finishes_in_flight_calls_and_refuses_new_ones() {
    futures::executor::block_on(async {
        let shutdown = courier::Shutdown::new();
        let (client_io, server_io) = courier_mem::pair(64 * 1024);
        let server = ServerBuilder::new()
            .shutdown(shutdown.clone())
            .build(server_io, TestServer::new(Impl::default()));
        let (client, driver) = courier::Client::new(client_io);
        let calc = TestClient::new(client);
        let calls = async {
            let mut slow = Box::pin(calc.delayed(1, 200));
            assert!(futures::poll!(slow.as_mut()).is_pending());
            for _ in 0..5 {
                common::YieldNow(false).await;
            }
            shutdown.trigger();
            for _ in 0..5 {
                common::YieldNow(false).await;
            }
            let late = calc.echo(2).await;
            assert!(
                matches!(
                    late,
                    Err(CallError::Remote(RemoteError::ShuttingDown) | CallError::NotSent(_))
                ),
                "{late:?}"
            );
            assert_eq!(slow.await, Ok(1), "the call in flight finished");
        };
        let ((), _driver, server) = futures::join!(calls, driver, server);
        server.expect("a graceful shutdown ends the server cleanly");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_on_tokio_with_the_tokio_timer() {
    let imp = Impl::default();
    let probe = imp.probe.clone();
    with_pair(
        ClientBuilder::new().timer(courier::timer::TokioTimer::new()),
        ServerBuilder::new().timer(courier::timer::TokioTimer::new()),
        imp,
        |calc| async move {
            let local = calc.with_timeout(Duration::from_millis(30)).hang(1).await;
            // Both sides enforce the same deadline; either error may win.
            assert!(
                matches!(
                    local,
                    Err(CallError::DeadlineExceeded)
                        | Err(CallError::Remote(RemoteError::DeadlineExceeded))
                ),
                "{local:?}"
            );
            wait_until(|| probe.dropped() == 1, 100_000).await;
            assert_eq!(calc.echo(1).await, Ok(1));
        },
    )
    .await;
}

/// `into_owned` makes a call a `'static` future: spawned on tokio, it runs
/// after the typed client it came from is dropped; a spawned call that is
/// aborted is cancelled on the server like a dropped one.
#[test]
fn owned_calls_can_be_spawned_on_tokio() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        let imp = Impl::default();
        let probe = imp.probe.clone();
        let (client_io, server_io) = courier_mem::pair(64 * 1024);
        let server = tokio::spawn(ServerBuilder::new().build(server_io, TestServer::new(imp)));
        let (client, driver) = courier::Client::new(client_io);
        let driver = tokio::spawn(driver);
        let calc = TestClient::new(client);
        let sums: Vec<_> = (0..8u64)
            .map(|i| tokio::spawn(calc.add(i, 100).into_owned()))
            .collect();
        let hung = tokio::spawn(calc.hang(7).into_owned());
        drop(calc);
        for (i, sum) in sums.into_iter().enumerate() {
            assert_eq!(sum.await.unwrap(), Ok(i as u64 + 100));
        }
        wait_for_tokio(|| probe.started() == 1).await;
        hung.abort();
        assert!(hung.await.unwrap_err().is_cancelled());
        // The abort dropped the call: its cancel reaches the server, and
        // with the last client handle gone both drivers end cleanly.
        driver.await.unwrap().unwrap();
        server.await.unwrap().unwrap();
        assert_eq!(probe.dropped(), 1);
    });
}

/// Yields to tokio until `cond` holds (each task involved makes progress
/// between checks; no sleep).
async fn wait_for_tokio(mut cond: impl FnMut() -> bool) {
    for _ in 0..1_000_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}
