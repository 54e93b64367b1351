//! The handler context: request id, deadline and time left, the peer's
//! address (courier-net's `serve_with`), a cancellation signal with its
//! reason, and the deadline passed on to the calls a handler makes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::{CallContext, CallError, RemoteError};

#[courier::service]
pub trait Probe {
    /// What the handler sees of its call.
    async fn inspect(&self, ctx: CallContext) -> (u32, Option<u64>, Option<String>);
    /// Waits until the call is cancelled (in another task) and records why.
    async fn wait(&self, ctx: CallContext);
    /// Calls `Backend::timeout_left` with the context's deadline.
    async fn relay(&self, ctx: CallContext) -> Option<u64>;
}

#[courier::service]
pub trait Backend {
    /// The timeout the call arrived with, in ms.
    async fn timeout_left(&self, ctx: CallContext) -> Option<u64>;
}

#[derive(Clone)]
struct ProbeImpl {
    reasons: Arc<Mutex<Vec<CallError>>>,
    /// `wait` handlers started.
    started: Arc<std::sync::atomic::AtomicUsize>,
    backend: Option<BackendClient>,
}

impl Probe for ProbeImpl {
    async fn inspect(&self, ctx: CallContext) -> (u32, Option<u64>, Option<String>) {
        let timeout = ctx.timeout().map(|t| t.as_millis() as u64);
        (ctx.request_id(), timeout, ctx.peer().map(str::to_string))
    }

    async fn wait(&self, ctx: CallContext) {
        // The handler itself is dropped at cancel; work it handed to
        // another task learns why from the context.
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let reasons = self.reasons.clone();
        let watcher = ctx.clone();
        std::thread::spawn(move || {
            let reason = futures::executor::block_on(watcher.cancelled());
            reasons.lock().unwrap().push(reason);
        });
        std::future::pending::<()>().await
    }

    async fn relay(&self, ctx: CallContext) -> Option<u64> {
        let backend = self.backend.as_ref().expect("a backend");
        backend.with_context(&ctx).timeout_left().await.unwrap()
    }
}

struct BackendImpl;

impl Backend for BackendImpl {
    async fn timeout_left(&self, ctx: CallContext) -> Option<u64> {
        ctx.timeout().map(|t| t.as_millis() as u64)
    }
}

fn probe(backend: Option<BackendClient>) -> (ProbeImpl, Arc<Mutex<Vec<CallError>>>) {
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let imp = ProbeImpl {
        reasons: reasons.clone(),
        started: Arc::default(),
        backend,
    };
    (imp, reasons)
}

/// Over TCP with `serve_with`: the service is built per connection from
/// the peer's address, and the handler's context shows the same address,
/// its request id and its timeout.
#[test]
fn the_context_shows_id_timeout_and_peer() {
    smol::block_on(async {
        let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen_peers = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = seen_peers.clone();
        let serve = courier_tcp::builder().serve_with(listener, move |peer| {
            seen.lock().unwrap().push(peer.to_string());
            ProbeServer::new(probe(None).0)
        });
        let serve = smol::spawn(serve);
        let (client, driver) = courier_tcp::connect(addr).await.unwrap();
        let driver = smol::spawn(driver);
        let probe = ProbeClient::new(client);
        let (id1, none, peer) = probe.inspect().await.unwrap();
        let (id2, timeout, _) = probe
            .with_timeout(Duration::from_millis(5_000))
            .inspect()
            .await
            .unwrap();
        assert_ne!(id1, id2);
        assert_eq!(none, None);
        let timeout = timeout.unwrap();
        assert!(timeout > 4_000 && timeout <= 5_000, "{timeout}");
        let peer = peer.expect("the transport knows the peer");
        assert_eq!(
            seen_peers.lock().unwrap().as_slice(),
            std::slice::from_ref(&peer)
        );
        assert!(peer.starts_with("127.0.0.1:"), "{peer}");
        drop(probe);
        driver.await.unwrap();
        drop(serve);
    });
}

/// The cancellation signal carries the reason: the caller's cancel, the
/// deadline.
#[test]
fn cancellation_reaches_work_the_handler_handed_off() {
    let (imp, reasons) = probe(None);
    let started = imp.started.clone();
    let (a, b) = courier_mem::pair(64 * 1024);
    let server = courier::ServerBuilder::new()
        .timer(courier::timer::AsyncIoTimer::new())
        .build(b, ProbeServer::new(imp));
    // The client has no timer: only the server's clock expires the call,
    // so the reason seen is the deadline, not the cancel a client timer
    // would send at the same moment.
    let (client, driver) = courier::Client::new(a);
    smol::block_on(async move {
        let server = smol::spawn(server);
        let driver = smol::spawn(driver);
        let probe = ProbeClient::new(client);
        // Cancelled by the caller: the call is dropped once its handler
        // runs (dropped before, it would be taken back, never run).
        let mut call = Box::pin(probe.wait());
        for _ in 0..5_000 {
            assert!(futures::poll!(call.as_mut()).is_pending());
            if started.load(std::sync::atomic::Ordering::SeqCst) == 1 {
                break;
            }
            smol::Timer::after(Duration::from_millis(1)).await;
        }
        drop(call);
        // Expired on the server.
        let late = probe.with_timeout(Duration::from_millis(30)).wait().await;
        assert_eq!(late, Err(CallError::Remote(RemoteError::DeadlineExceeded)));
        for _ in 0..200 {
            if reasons.lock().unwrap().len() == 2 {
                break;
            }
            smol::Timer::after(Duration::from_millis(5)).await;
        }
        let mut got = reasons.lock().unwrap().clone();
        got.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(got, [CallError::Cancelled, CallError::DeadlineExceeded]);
        drop(probe);
        driver.await.unwrap();
        drop(server);
    });
}

/// A handler that calls another service passes its deadline on: the
/// downstream call carries at most the time the upstream one has left.
#[test]
fn the_deadline_propagates_to_downstream_calls() {
    let (a2, b2) = courier_mem::pair(64 * 1024);
    let backend_server = courier::ServerBuilder::new().build(b2, BackendServer::new(BackendImpl));
    let (backend_client, backend_driver) = courier::Client::new(a2);
    let (imp, _) = probe(Some(BackendClient::new(backend_client)));
    let (a, b) = courier_mem::pair(64 * 1024);
    let server = courier::ServerBuilder::new().build(b, ProbeServer::new(imp));
    let (client, driver) = courier::Client::new(a);
    smol::block_on(async move {
        let tasks = [
            smol::spawn(async move {
                let _ = backend_server.await;
            }),
            smol::spawn(async move {
                let _ = backend_driver.await;
            }),
            smol::spawn(async move {
                let _ = server.await;
            }),
            smol::spawn(async move {
                let _ = driver.await;
            }),
        ];
        let probe = ProbeClient::new(client);
        let left = probe
            .with_timeout(Duration::from_millis(2_000))
            .relay()
            .await
            .unwrap()
            .expect("the deadline was passed on");
        assert!(left > 0 && left <= 2_000, "{left}");
        let none = probe.relay().await.unwrap();
        assert_eq!(none, None, "no deadline, none passed on");
        drop(tasks);
    });
}
