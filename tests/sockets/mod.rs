//! Scenarios run over real sockets (TCP on 127.0.0.1, Unix sockets in temp
//! dirs) on each runtime. A test file implements [`Env`] for one transport on
//! one runtime and instantiates every scenario with [`scenarios!`].
//!
//! Every wait is bounded ([`within`]), so a broken server fails a test
//! instead of hanging it.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use courier::client::{ConnectionState, ReconnectPolicy};
use courier::{CallError, Client, RemoteError, Shutdown, Spawn, TransportErrorKind, Unsent};
use courier_net::{AtLimit, Listener, ServeBuilder, Stats};
use futures::channel::oneshot;
use futures::future::{self, BoxFuture, Either, FutureExt, RemoteHandle};
use futures::stream::StreamExt;

/// The longest any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

/// The service under test.
#[courier::service]
pub trait Net {
    /// Adds.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Waits until the gate opens, then returns `tag`.
    async fn hold(&self, tag: u64) -> u64;
    /// Server streaming: `n` items of `size` bytes, item `i` filled with
    /// `i as u8`.
    async fn blobs(&self, n: u32, size: u32) -> courier::BoxStream<Vec<u8>>;
    /// Client streaming: the sum of the items.
    async fn total(&self, items: courier::Streaming<u64>) -> u64;
    /// Bidirectional: each item doubled, as it arrives.
    async fn doubled(&self, items: courier::Streaming<u64>) -> courier::BoxStream<u64>;
    /// A notification: adds `v` to the probe's tally.
    #[oneway]
    async fn note(&self, v: u64);
}

/// What the handlers did, seen from the test.
#[derive(Default)]
pub struct Probe {
    started: AtomicUsize,
    dropped: AtomicUsize,
    noted: AtomicUsize,
    gate: Mutex<Vec<oneshot::Sender<()>>>,
}

impl Probe {
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
    /// `hold` handlers dropped before they finished (cancelled).
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
    /// Lets every waiting `hold` return.
    pub fn open_gate(&self) {
        for tx in self.gate.lock().unwrap().drain(..) {
            let _ = tx.send(());
        }
    }
}

/// The implementation; clones share the probe.
#[derive(Clone, Default)]
pub struct Imp(pub Arc<Probe>);

struct Unfinished(Arc<Probe>, bool);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Net for Imp {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
    async fn hold(&self, tag: u64) -> u64 {
        let (tx, rx) = oneshot::channel();
        self.0.gate.lock().unwrap().push(tx);
        let mut guard = Unfinished(self.0.clone(), false);
        self.0.started.fetch_add(1, Ordering::SeqCst);
        let _ = rx.await;
        guard.1 = true;
        tag
    }
    async fn blobs(&self, n: u32, size: u32) -> courier::BoxStream<Vec<u8>> {
        Box::pin(futures::stream::iter(0..n).map(move |i| vec![i as u8; size as usize]))
    }
    async fn total(&self, items: courier::Streaming<u64>) -> u64 {
        items
            .map(|item| item.unwrap_or(0))
            .fold(0, |a, b| async move { a + b })
            .await
    }
    async fn doubled(&self, items: courier::Streaming<u64>) -> courier::BoxStream<u64> {
        Box::pin(items.map(|item| item.map_or(0, |v| v * 2)))
    }
    async fn note(&self, v: u64) {
        self.0.noted.fetch_add(v as usize, Ordering::SeqCst);
    }
}

/// Where a server listens.
#[derive(Clone, Debug)]
pub enum Addr {
    Tcp(std::net::SocketAddr),
    /// A socket path, in a temp dir that lives as long as the address.
    Unix(PathBuf, Arc<tempfile::TempDir>),
}

/// A task; dropping the handle cancels it.
pub type Task<T> = RemoteHandle<T>;

/// One transport on one runtime.
pub trait Env: Sized + 'static {
    /// The listener type.
    type Listener: Listener<Conn: Send + 'static, Peer: Send + 'static> + Send + 'static;
    /// The runtime's timer.
    type Timer: courier::Timer<Sleep: Send + 'static> + Clone + Send + Sync + 'static;

    /// Runs `f` to completion on the runtime.
    fn block_on<F: Future>(f: F) -> F::Output;
    /// Runs `f` as a task of the runtime.
    fn spawn_raw(f: BoxFuture<'static, ()>);
    /// Sleeps on the runtime's timer.
    fn sleep(d: Duration) -> BoxFuture<'static, ()>;
    /// A fresh listener (a free port, or a path in a fresh temp dir).
    fn bind() -> (Self::Listener, Addr);
    /// A listener on the address a previous server used.
    fn bind_at(addr: &Addr) -> Self::Listener;
    /// A reconnecting client for `addr` and its driver.
    fn reconnecting(addr: &Addr, policy: ReconnectPolicy) -> (Client, BoxFuture<'static, ()>);
    /// A serve builder with the runtime's timer.
    fn builder() -> ServeBuilder<Self::Timer>;
    /// Connects a client; the driver is spawned and ends with the connection.
    fn connect(addr: &Addr) -> BoxFuture<'static, io::Result<(Client, BoxFuture<'static, ()>)>>;
    /// Opens a raw connection, writes `bytes`, and reads until the server
    /// closes it. `Ok(n)`: closed cleanly after `n` bytes; `Err`: reset.
    fn raw(addr: &Addr, bytes: Vec<u8>) -> BoxFuture<'static, io::Result<usize>>;

    /// Spawns `f`; dropping the returned handle cancels it.
    fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Task<T> {
        let (f, handle) = f.remote_handle();
        Self::spawn_raw(f.boxed());
        handle
    }

    /// A spawner for `serve_spawned`.
    fn spawner() -> impl Spawn + 'static {
        |task: Pin<Box<dyn Future<Output = ()> + Send>>| Self::spawn_raw(task)
    }
}

/// Runs `f`, failing the test if it takes longer than [`STEP`].
pub async fn within<E: Env, T>(what: &str, f: impl Future<Output = T>) -> T {
    within_for::<E, T>(STEP, what, f).await
}

/// As [`within`], with a bound of `limit` (a hang guard for steps that
/// move megabytes in a debug build on a loaded machine).
pub async fn within_for<E: Env, T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match future::select(pin!(f), E::sleep(limit)).await {
        Either::Left((out, _)) => out,
        Either::Right(_) => panic!("timed out: {what}"),
    }
}

/// Whether `f` is still pending after `d` (used only to check that
/// something does *not* happen yet; a slow machine can only make it pass).
pub async fn still_pending<E: Env, T>(
    f: &mut (impl Future<Output = T> + Unpin),
    d: Duration,
) -> bool {
    match future::select(f, E::sleep(d)).await {
        Either::Left(_) => false,
        Either::Right(_) => true,
    }
}

/// Waits until `cond` holds, checking every few milliseconds.
pub async fn wait_for<E: Env>(what: &str, mut cond: impl FnMut() -> bool) {
    within::<E, _>(what, async {
        while !cond() {
            E::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A connected typed client whose driver runs as a task.
pub struct Conn {
    pub client: NetClient,
    pub driver: Task<()>,
}

pub async fn connect<E: Env>(addr: &Addr) -> Conn {
    let (client, driver) = within::<E, _>("connect", E::connect(addr))
        .await
        .expect("connect");
    Conn {
        client: NetClient::new(client),
        driver: E::spawn(driver),
    }
}

/// A server running as a task.
pub struct Running {
    pub addr: Addr,
    pub imp: Imp,
    pub stats: Stats,
    pub task: Task<()>,
}

pub fn start<E: Env>(builder: ServeBuilder<E::Timer>, spawned: bool) -> Running {
    let (listener, addr) = E::bind();
    start_on::<E>(listener, addr, builder, spawned)
}

pub fn start_on<E: Env>(
    listener: E::Listener,
    addr: Addr,
    builder: ServeBuilder<E::Timer>,
    spawned: bool,
) -> Running {
    let imp = Imp::default();
    let service = NetServer::new(imp.clone());
    let serve = if spawned {
        builder.serve_spawned(listener, service, E::spawner())
    } else {
        builder.serve(listener, service)
    };
    let stats = serve.stats();
    Running {
        addr,
        imp,
        stats,
        task: E::spawn(serve),
    }
}

/// courier_net's events, captured for the whole test binary.
static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A subscriber that takes only `courier_net`'s events (every other
/// callsite is never enabled, so the calls pay nothing) and keeps each as a
/// line: level, target, message, then `field=value` pairs.
struct Capture;

/// Formats an event's fields onto one line.
struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.push_str(&format!(" {value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

fn captured(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target().starts_with("courier_net") && metadata.is_event()
}

impl tracing::Subscriber for Capture {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if captured(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        captured(metadata)
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        let mut line = Line(format!("{} {}:", meta.level(), meta.target()));
        event.record(&mut line);
        LOGS.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Starts capturing courier_net's events.
pub fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing::subscriber::set_global_default(Capture).expect("no other subscriber");
    });
}

/// Captured lines containing every one of `parts`.
pub fn logged(parts: &[&str]) -> Vec<String> {
    LOGS.lock()
        .unwrap()
        .iter()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// Scenarios

/// 1,000 calls with 128 in flight on one connection, each answer checked;
/// connections served inside the serve future or spawned.
pub fn many_calls<E: Env>(spawned: bool) {
    E::block_on(async {
        let server = start::<E>(E::builder(), spawned);
        let conn = connect::<E>(&server.addr).await;
        let client = &conn.client;
        let mut results = futures::stream::iter(0..1000u64)
            .map(|i| async move { (i, client.add(i, 1_000_000).await) })
            .buffer_unordered(128);
        let mut seen = 0;
        within::<E, _>("1000 calls", async {
            while let Some((i, result)) = results.next().await {
                assert_eq!(result, Ok(i + 1_000_000), "call {i}");
                seen += 1;
            }
        })
        .await;
        assert_eq!(seen, 1000);
    });
}

/// Killing the server fails the pending calls promptly, with a typed error.
pub fn server_killed_mid_call<E: Env>() {
    E::block_on(async {
        let server = start::<E>(E::builder(), false);
        let conn = connect::<E>(&server.addr).await;
        let client = conn.client.clone();
        let pending =
            E::spawn(async move { futures::future::join(client.hold(1), client.hold(2)).await });
        let probe = server.imp.0.clone();
        wait_for::<E>("handlers started", || probe.started() == 2).await;
        drop(server.task);
        let (a, b) = within::<E, _>("calls fail after the server is killed", pending).await;
        // Whether the driver saw a reset or an end of stream, reading or
        // writing, the calls that ran see one error, and it is not
        // retryable: they ran.
        for result in [a, b] {
            assert_eq!(result, Err(CallError::ConnectionLost));
            assert!(!result.unwrap_err().is_retryable());
        }
        let later = within::<E, _>("a later call", conn.client.add(1, 2)).await;
        assert_eq!(later, Err(CallError::NotSent(Unsent::Disconnected)));
        assert!(later.unwrap_err().is_retryable());
        assert_eq!(conn.client.client().connection(), ConnectionState::Closed);
    });
}

/// Killing the client: to the server its end of stream looks like a
/// half-close, so it finishes the calls it received; their replies find the
/// socket closed (or are sent into it), and then the connection is closed
/// and its slots freed. The server keeps serving.
pub fn client_killed_mid_call<E: Env>() {
    E::block_on(async {
        let server = start::<E>(E::builder(), false);
        let conn = connect::<E>(&server.addr).await;
        let client = conn.client.clone();
        let calls = E::spawn(async move {
            futures::future::join3(client.hold(1), client.hold(2), client.hold(3)).await
        });
        let probe = server.imp.0.clone();
        wait_for::<E>("handlers started", || probe.started() == 3).await;
        assert_eq!(server.stats.connections(), 1);
        // Kill the client side: the driver (and with it the socket) and
        // every call future.
        drop(conn);
        drop(calls);
        E::sleep(Duration::from_millis(50)).await;
        assert_eq!(probe.dropped(), 0, "the calls received are still answered");
        probe.open_gate();
        let stats = server.stats.clone();
        // A Unix socket fails the first write at once (EPIPE): the handlers
        // not yet finished are then dropped; TCP may take all the replies.
        wait_for::<E>("connection closed", || stats.connections() == 0).await;
        // The server keeps serving.
        let again = connect::<E>(&server.addr).await;
        assert_eq!(within::<E, _>("call", again.client.add(2, 2)).await, Ok(4));
    });
}

/// A raw client announcing an oversized frame is disconnected and logged;
/// other clients keep being served.
pub fn oversized_frame<E: Env>() {
    capture_logs();
    E::block_on(async {
        let server = start::<E>(E::builder().max_frame(1024), false);
        let before = connect::<E>(&server.addr).await;
        assert_eq!(within::<E, _>("call", before.client.add(1, 1)).await, Ok(2));

        // A length prefix of 777,777 bytes, then some of them.
        let mut bytes = 777_777u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0xAB; 64]);
        let read = within::<E, _>(
            "server closes the raw connection",
            E::raw(&server.addr, bytes),
        )
        .await;
        // Closed (Ok(0)) or reset: either way the server sent no reply.
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        wait_for::<E>("the reason is logged", || {
            !logged(&["WARN", "closed", "777777", "exceeds the limit of 1024"]).is_empty()
        })
        .await;

        assert_eq!(within::<E, _>("call", before.client.add(2, 3)).await, Ok(5));
        let after = connect::<E>(&server.addr).await;
        assert_eq!(within::<E, _>("call", after.client.add(4, 5)).await, Ok(9));
    });
}

/// A silent raw client is disconnected by the idle timeout and logged; the
/// server goes on serving others.
pub fn idle_timeout<E: Env>() {
    capture_logs();
    E::block_on(async {
        let builder = E::builder().idle_timeout(Duration::from_millis(100));
        let server = start::<E>(builder, false);
        // Connects, sends nothing; the server must close it.
        let silent = E::raw(&server.addr, Vec::new());
        let read = within::<E, _>("the idle connection is closed", silent).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        wait_for::<E>("the reason is logged", || {
            !logged(&["WARN", "idle"]).is_empty()
        })
        .await;
        let next = connect::<E>(&server.addr).await;
        assert_eq!(within::<E, _>("call", next.client.add(1, 2)).await, Ok(3));
    });
}

/// At the limit new clients wait (`Pause`) until a connection closes;
/// connections served inside the serve future or spawned.
pub fn max_connections_pause<E: Env>(spawned: bool) {
    E::block_on(async {
        let server = start::<E>(E::builder().max_connections(2), spawned);
        let first = connect::<E>(&server.addr).await;
        let second = connect::<E>(&server.addr).await;
        assert_eq!(within::<E, _>("call", first.client.add(1, 0)).await, Ok(1));
        assert_eq!(within::<E, _>("call", second.client.add(2, 0)).await, Ok(2));

        let third = connect::<E>(&server.addr).await;
        let client = third.client.clone();
        let mut call = E::spawn(async move { client.add(3, 0).await });
        assert!(
            still_pending::<E, _>(&mut call, Duration::from_millis(200)).await,
            "a third client is served beyond the limit of 2"
        );
        assert_eq!(server.stats.connections(), 2);
        drop(first);
        assert_eq!(within::<E, _>("third client served", call).await, Ok(3));
        assert_eq!(within::<E, _>("call", second.client.add(4, 0)).await, Ok(4));
    });
}

/// At the limit new clients are accepted and closed (`Reject`), logged;
/// connections served inside the serve future or spawned.
pub fn max_connections_reject<E: Env>(spawned: bool) {
    capture_logs();
    E::block_on(async {
        let builder = E::builder().max_connections(1).at_limit(AtLimit::Reject);
        let server = start::<E>(builder, spawned);
        let first = connect::<E>(&server.addr).await;
        assert_eq!(within::<E, _>("call", first.client.add(1, 0)).await, Ok(1));
        let second = connect::<E>(&server.addr).await;
        let rejected = within::<E, _>("rejected call", second.client.add(2, 0)).await;
        // Sent before the close was noticed, or not sent after it.
        assert!(
            matches!(
                rejected,
                Err(CallError::ConnectionLost | CallError::NotSent(Unsent::Disconnected))
            ),
            "{rejected:?}"
        );
        assert!(!logged(&["rejected connection", "limit=1"]).is_empty());
        assert_eq!(within::<E, _>("call", first.client.add(3, 0)).await, Ok(3));
    });
}

/// Shutdown: no new connections, new calls refused, calls in flight
/// finish, then the server future completes.
pub fn graceful_shutdown<E: Env>(spawned: bool) {
    E::block_on(async {
        let shutdown = Shutdown::new();
        let builder = E::builder()
            .shutdown(shutdown.clone())
            .grace_period(STEP * 2);
        let server = start::<E>(builder, spawned);
        let conn = connect::<E>(&server.addr).await;
        let client = conn.client.clone();
        let in_flight = E::spawn(async move { client.hold(7).await });
        let probe = server.imp.0.clone();
        wait_for::<E>("handler started", || probe.started() == 1).await;

        shutdown.trigger();
        let refused = within::<E, _>("call after shutdown", conn.client.add(1, 1)).await;
        assert_eq!(refused, Err(CallError::Remote(RemoteError::ShuttingDown)));
        let dialed = within::<E, _>("connect after shutdown", E::connect(&server.addr)).await;
        assert!(dialed.is_err(), "the listener still accepts");
        if let Addr::Unix(path, _) = &server.addr {
            assert!(!path.exists(), "socket file left behind");
        }

        server.imp.0.open_gate();
        assert_eq!(within::<E, _>("call in flight", in_flight).await, Ok(7));
        within::<E, _>("server completes", server.task).await;
        assert_eq!(server.stats.connections(), 0);
    });
}

/// Shutdown with a call that never finishes: the grace period ends it,
/// and the call is answered `ShuttingDown` (not cut off).
pub fn grace_period_expires<E: Env>() {
    E::block_on(async {
        let shutdown = Shutdown::new();
        let builder = E::builder()
            .shutdown(shutdown.clone())
            .grace_period(Duration::from_millis(100));
        let server = start::<E>(builder, false);
        let conn = connect::<E>(&server.addr).await;
        let client = conn.client.clone();
        let stuck = E::spawn(async move { client.hold(1).await });
        let probe = server.imp.0.clone();
        wait_for::<E>("handler started", || probe.started() == 1).await;
        shutdown.trigger();
        within::<E, _>("server completes after the grace period", server.task).await;
        let result = within::<E, _>("stuck call fails", stuck).await;
        assert_eq!(result, Err(CallError::Remote(RemoteError::ShuttingDown)));
        assert_eq!(probe.dropped(), 1);
    });
}

/// A reconnecting client across a server restart on the same address:
/// while the server is down calls fail fast with a typed error; once it is
/// back, the client re-dials and calls succeed again.
pub fn reconnect_across_restart<E: Env>() {
    E::block_on(async {
        let first = start::<E>(E::builder(), false);
        let addr = first.addr.clone();
        let policy =
            ReconnectPolicy::new().backoff(Duration::from_millis(10), Duration::from_millis(100));
        let (client, driver) = E::reconnecting(&addr, policy);
        let mut watch = client.watch_connection();
        let _driver = E::spawn(driver);
        let client = NetClient::new(client);
        assert_eq!(within::<E, _>("first call", client.add(1, 1)).await, Ok(2));
        assert_eq!(client.client().connection(), ConnectionState::Connected);
        assert_eq!(watch.get(), ConnectionState::Connected);

        drop(first.task);
        // The handle sees the loss, without a call.
        let down = within::<E, _>("disconnected", async {
            loop {
                match watch.changed().await {
                    ConnectionState::Connected => {}
                    other => break other,
                }
            }
        })
        .await;
        let ConnectionState::Disconnected { error, .. } = down else {
            panic!("{down:?}");
        };
        // The peer vanished, or the immediate re-dial already failed.
        assert!(
            matches!(error, CallError::ConnectionLost | CallError::Connect(_)),
            "{error:?}"
        );
        // While down, calls fail fast and certainly were not sent.
        let failed = within::<E, _>("a call while down", client.add(2, 2)).await;
        assert!(
            matches!(
                failed,
                Err(CallError::NotSent(Unsent::Disconnected) | CallError::Connect(_))
            ),
            "{failed:?}"
        );
        assert!(failed.unwrap_err().is_retryable());

        let second = start_on::<E>(E::bind_at(&addr), addr.clone(), E::builder(), false);
        let up = within::<E, _>("connected again", async {
            loop {
                match watch.changed().await {
                    ConnectionState::Disconnected { .. } => {}
                    other => break other,
                }
            }
        })
        .await;
        assert_eq!(up, ConnectionState::Connected);
        assert_eq!(within::<E, _>("call after", client.add(3, 3)).await, Ok(6));
        assert_eq!(second.stats.connections(), 1);
    });
}

/// Dialing an address nobody listens on (the server's listener was
/// dropped): calls fail with `Connect`, keeping the OS's error kind, and are
/// retryable.
pub fn connect_refused<E: Env>() {
    E::block_on(async {
        let server = start::<E>(E::builder(), false);
        let addr = server.addr.clone();
        drop(server.task);
        // The listener is closed once the serve future is dropped.
        wait_for::<E>("listener closed", || match &addr {
            Addr::Tcp(a) => std::net::TcpStream::connect(a).is_err(),
            Addr::Unix(path, _) => !path.exists(),
        })
        .await;
        let (client, driver) = E::reconnecting(&addr, ReconnectPolicy::new());
        let _driver = E::spawn(driver);
        let client = NetClient::new(client);
        let refused = within::<E, _>("a call to nowhere", client.add(1, 1)).await;
        let Err(CallError::Connect(error)) = refused else {
            panic!("{refused:?}");
        };
        assert!(refused.unwrap_err().is_retryable());
        match &addr {
            Addr::Tcp(_) => {
                assert_eq!(error.kind(), TransportErrorKind::Refused);
                assert_eq!(error.io_kind(), Some(io::ErrorKind::ConnectionRefused));
            }
            // The socket file went with the listener.
            Addr::Unix(..) => assert_eq!(error.io_kind(), Some(io::ErrorKind::NotFound)),
        }
        let state = client.client().connection();
        assert!(
            matches!(state, ConnectionState::Disconnected { error: CallError::Connect(e), .. } if e == error),
            "{state:?}"
        );
    });
}

/// The four streaming modes of the service attribute on one connection,
/// concurrently: server streaming (with small credit), client streaming,
/// bidirectional, notifications.
pub fn streaming_modes<E: Env>() {
    E::block_on(async {
        let server = start::<E>(E::builder(), false);
        let conn = connect::<E>(&server.addr).await;
        let client = &conn.client;
        let down = async {
            let items: Vec<_> = client.blobs(500, 100).with_credit(4).collect().await;
            assert_eq!(items.len(), 500);
            for (i, item) in items.into_iter().enumerate() {
                assert_eq!(item, Ok(vec![i as u8; 100]));
            }
        };
        let up = async {
            let sum = client.total(futures::stream::iter(1..=1000u64)).await;
            assert_eq!(sum, Ok(500_500));
        };
        let both = async {
            let back: Vec<_> = client
                .doubled(futures::stream::iter(0..300u64))
                .with_credit(2)
                .collect()
                .await;
            assert_eq!(back, (0..300u64).map(|v| Ok(v * 2)).collect::<Vec<_>>());
        };
        let notes = async {
            for v in 1..=10 {
                client.note(v).await.unwrap();
            }
        };
        within::<E, _>("four streaming modes", async {
            futures::join!(down, up, both, notes);
        })
        .await;
        let probe = server.imp.0.clone();
        wait_for::<E>("notifications handled", || {
            probe.noted.load(Ordering::SeqCst) == 55
        })
        .await;
    });
}

/// One stream of 512 KiB items and one of 16 B items on one connection:
/// the small stream keeps receiving between big items (counted from the
/// order of arrival).
pub fn big_items_do_not_starve<E: Env>() {
    E::block_on(async {
        let server = start::<E>(E::builder(), false);
        let conn = connect::<E>(&server.addr).await;
        let client = &conn.client;
        let order = Mutex::new(Vec::new());
        let big_done = std::sync::atomic::AtomicBool::new(false);
        let big = async {
            let mut stream = client.blobs(16, 512 * 1024).with_credit(2);
            while let Some(item) = stream.next().await {
                assert_eq!(item.map(|v| v.len()), Ok(512 * 1024));
                order.lock().unwrap().push('B');
            }
            big_done.store(true, Ordering::SeqCst);
        };
        let small = async {
            let mut stream = client.blobs(u32::MAX, 16);
            while !big_done.load(Ordering::SeqCst) {
                let item = stream.next().await.expect("endless").map(|v| v.len());
                assert_eq!(item, Ok(16));
                order.lock().unwrap().push('s');
            }
        };
        // 8 MiB beside an endless small stream, in a debug build: only a
        // hang guard, generous for a loaded machine.
        within_for::<E, _>(6 * STEP, "big and small streams", async {
            futures::join!(big, small);
        })
        .await;
        let order: String = order.into_inner().unwrap().into_iter().collect();
        let first_small = order.find('s').expect("small items arrived");
        let last_big = order.rfind('B').unwrap();
        // The big stream's consumer takes what arrived as one batch, at
        // most its credit (2) items: between the first small item and the
        // last big one, never more than 2 big items in a row, and the small
        // stream got items between every such batch.
        let window = &order[first_small..=last_big];
        assert!(
            !window.contains("BBB"),
            "three big items without a small one between: {}",
            order.replace("ss", "s")
        );
        let interleavings = order.matches("Bs").count();
        assert!(
            interleavings >= 16 / 2 - 1,
            "only {interleavings} small runs between big items: {order}"
        );
        assert_eq!(order.matches('B').count(), 16);
    });
}

/// Instantiates every scenario for an [`Env`].
#[macro_export]
macro_rules! scenarios {
    ($env:ty) => {
        #[test]
        fn many_calls_in_serve_future() {
            sockets::many_calls::<$env>(false);
        }
        #[test]
        fn many_calls_spawned_connections() {
            sockets::many_calls::<$env>(true);
        }
        #[test]
        fn server_killed_mid_call() {
            sockets::server_killed_mid_call::<$env>();
        }
        #[test]
        fn client_killed_mid_call() {
            sockets::client_killed_mid_call::<$env>();
        }
        #[test]
        fn oversized_frame_closes_only_that_connection() {
            sockets::oversized_frame::<$env>();
        }
        #[test]
        fn max_connections_pause() {
            sockets::max_connections_pause::<$env>(false);
        }
        #[test]
        fn max_connections_pause_spawned_connections() {
            sockets::max_connections_pause::<$env>(true);
        }
        #[test]
        fn idle_timeout_closes_a_silent_connection() {
            sockets::idle_timeout::<$env>();
        }
        #[test]
        fn max_connections_reject() {
            sockets::max_connections_reject::<$env>(false);
        }
        #[test]
        fn max_connections_reject_spawned_connections() {
            sockets::max_connections_reject::<$env>(true);
        }
        #[test]
        fn graceful_shutdown() {
            sockets::graceful_shutdown::<$env>(false);
        }
        #[test]
        fn graceful_shutdown_spawned_connections() {
            sockets::graceful_shutdown::<$env>(true);
        }
        #[test]
        fn reconnect_across_restart() {
            sockets::reconnect_across_restart::<$env>();
        }
        #[test]
        fn connect_refused() {
            sockets::connect_refused::<$env>();
        }
        #[test]
        fn grace_period_expires() {
            sockets::grace_period_expires::<$env>();
        }
        #[test]
        fn streaming_modes() {
            sockets::streaming_modes::<$env>();
        }
        #[test]
        fn big_items_do_not_starve() {
            sockets::big_items_do_not_starve::<$env>();
        }
    };
}
