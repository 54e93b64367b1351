//! The reconnecting client over `courier-mem`, with a connector the test
//! controls: it can refuse attempts and "kill" servers.

mod common;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Impl, TestClient, TestServer};
use courier::client::{Outage, ReconnectPolicy};
use courier::timer::AsyncIoTimer;
use courier::{CallError, ClientBuilder, ConnectError, ServerBuilder, TransportErrorKind};
use courier_mem::MemTransport;
use futures::channel::mpsc;
use futures::StreamExt;

/// A connector whose server ends go to the test, and which refuses while
/// `refuse` is set.
struct Dialer {
    refuse: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    accepted: mpsc::UnboundedSender<MemTransport>,
}

impl Dialer {
    fn connector(
        &self,
    ) -> impl FnMut() -> std::future::Ready<io::Result<MemTransport>> + Send + 'static {
        let (refuse, attempts, accepted) = (
            self.refuse.clone(),
            self.attempts.clone(),
            self.accepted.clone(),
        );
        move || {
            attempts.fetch_add(1, Ordering::SeqCst);
            if refuse.load(Ordering::SeqCst) {
                return std::future::ready(Err(io::ErrorKind::ConnectionRefused.into()));
            }
            let (client, server) = courier_mem::pair(64 * 1024);
            accepted.unbounded_send(server).unwrap();
            std::future::ready(Ok(client))
        }
    }
}

fn dialer() -> (Dialer, mpsc::UnboundedReceiver<MemTransport>) {
    let (accepted, incoming) = mpsc::unbounded();
    let dialer = Dialer {
        refuse: Arc::new(AtomicBool::new(false)),
        attempts: Arc::new(AtomicUsize::new(0)),
        accepted,
    };
    (dialer, incoming)
}

/// What calls see when the dialer refuses: the kind and the OS's kind.
fn refused_error() -> CallError {
    let error = ConnectError::new(&io::Error::from(io::ErrorKind::ConnectionRefused));
    assert_eq!(error.kind(), TransportErrorKind::Refused);
    assert_eq!(error.io_kind(), Some(io::ErrorKind::ConnectionRefused));
    CallError::Connect(error)
}

fn policy() -> ReconnectPolicy {
    ReconnectPolicy::new().backoff(Duration::from_millis(5), Duration::from_millis(20))
}

#[test]
fn reconnects_after_the_server_dies_and_fails_only_the_calls_in_flight() {
    smol::block_on(async {
        let (dialer, mut incoming) = dialer();
        let imp = Impl::default();
        let probe = imp.probe.clone();
        let (client, driver) = ClientBuilder::new()
            .timer(AsyncIoTimer::new())
            .build_reconnecting(dialer.connector(), policy());
        let driver = smol::spawn(driver);
        let calc = TestClient::new(client);

        // First server: answer a call, then die with a call pending.
        let first = smol::spawn(
            ServerBuilder::new()
                .build(incoming.next().await.unwrap(), TestServer::new(imp.clone())),
        );
        assert_eq!(calc.echo(1).await, Ok(1));
        let pending = smol::spawn({
            let calc = calc.clone();
            async move { calc.hang(7).await }
        });
        while probe.started() == 0 {
            smol::Timer::after(Duration::from_millis(1)).await;
        }
        let _killed = first.cancel().await;
        let lost = pending.await;
        // It was running when the server died: the one error for a
        // vanished peer, and it may have run, so not retryable.
        assert_eq!(lost, Err(CallError::ConnectionLost));
        assert!(!lost.unwrap_err().is_retryable());

        // The driver dials again at once; the second server answers.
        let second = smol::spawn(
            ServerBuilder::new().build(incoming.next().await.unwrap(), TestServer::new(imp)),
        );
        let mut answered = None;
        for _ in 0..1000 {
            match calc.echo(2).await {
                Ok(v) => {
                    answered = Some(v);
                    break;
                }
                // Fail-fast calls may race the new connection.
                Err(_) => {
                    smol::Timer::after(Duration::from_millis(1)).await;
                }
            }
        }
        assert_eq!(answered, Some(2));
        assert_eq!(dialer.attempts.load(Ordering::SeqCst), 2);
        drop(calc);
        driver.await;
        let _ = second.await;
    });
}

#[test]
fn fail_fast_outage_reports_the_dial_error_and_recovers() {
    smol::block_on(async {
        let (dialer, mut incoming) = dialer();
        dialer.refuse.store(true, Ordering::SeqCst);
        let (client, driver) = ClientBuilder::new()
            .timer(AsyncIoTimer::new())
            .build_reconnecting(dialer.connector(), policy());
        let driver = smol::spawn(driver);
        let calc = TestClient::new(client);
        // Let a few attempts fail.
        while dialer.attempts.load(Ordering::SeqCst) < 3 {
            smol::Timer::after(Duration::from_millis(2)).await;
        }
        let refused = calc.echo(1).await;
        assert_eq!(refused, Err(refused_error()));
        assert!(refused.unwrap_err().is_retryable());
        dialer.refuse.store(false, Ordering::SeqCst);
        let server = smol::spawn(ServerBuilder::new().build(
            incoming.next().await.unwrap(),
            TestServer::new(Impl::default()),
        ));
        let mut ok = false;
        for _ in 0..1000 {
            if calc.echo(3).await == Ok(3) {
                ok = true;
                break;
            }
            smol::Timer::after(Duration::from_millis(1)).await;
        }
        assert!(ok, "never reconnected");
        drop(calc);
        driver.await;
        let _ = server.await;
    });
}

#[test]
fn waiting_outage_holds_calls_until_the_connection_is_back() {
    smol::block_on(async {
        let (dialer, mut incoming) = dialer();
        dialer.refuse.store(true, Ordering::SeqCst);
        let policy = policy().outage(Outage::Wait {
            max_wait: Duration::from_secs(30),
        });
        let (client, driver) = ClientBuilder::new()
            .timer(AsyncIoTimer::new())
            .build_reconnecting(dialer.connector(), policy);
        let driver = smol::spawn(driver);
        let calc = TestClient::new(client);
        let waiting = smol::spawn({
            let calc = calc.clone();
            async move { calc.echo(5).await }
        });
        while dialer.attempts.load(Ordering::SeqCst) < 3 {
            smol::Timer::after(Duration::from_millis(2)).await;
        }
        dialer.refuse.store(false, Ordering::SeqCst);
        let server = smol::spawn(ServerBuilder::new().build(
            incoming.next().await.unwrap(),
            TestServer::new(Impl::default()),
        ));
        assert_eq!(
            waiting.await,
            Ok(5),
            "the queued call went out on the new connection"
        );
        drop(calc);
        driver.await;
        let _ = server.await;
    });
}

#[test]
fn waiting_outage_gives_up_at_max_wait_or_the_call_deadline() {
    smol::block_on(async {
        let (dialer, _incoming) = dialer();
        dialer.refuse.store(true, Ordering::SeqCst);
        let policy = policy().outage(Outage::Wait {
            max_wait: Duration::from_millis(40),
        });
        let (client, driver) = ClientBuilder::new()
            .timer(AsyncIoTimer::new())
            .build_reconnecting(dialer.connector(), policy);
        let driver = smol::spawn(driver);
        let calc = TestClient::new(client);
        let start = std::time::Instant::now();
        let gave_up = calc.echo(1).await;
        assert_eq!(gave_up, Err(refused_error()));
        assert!(start.elapsed() >= Duration::from_millis(40));
        // A shorter timeout of the call itself ends the wait sooner, with
        // the same error: the call was never sent.
        let timed_out = calc.with_timeout(Duration::from_millis(5)).echo(2).await;
        assert_eq!(timed_out, Err(refused_error()));
        assert!(timed_out.unwrap_err().is_retryable());
        drop(calc);
        driver.await;
    });
}
