//! The accept loop over in-memory connections, on a single-threaded pool
//! run until stalled, so every step is deterministic.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use courier::{CallError, Client, NoTimer, RemoteError, WhenFull};
use courier_mem::MemTransport;
use futures::channel::{mpsc, oneshot};
use futures::executor::LocalPool;
use futures::future::{FutureExt, RemoteHandle};
use futures::task::LocalSpawnExt;

use super::*;

/// The service under test.
#[courier::service]
pub trait Probe {
    /// Returns `x`.
    async fn echo(&self, x: u32) -> u32;
    /// Waits for the gate, then returns `x`.
    async fn gated(&self, x: u32) -> u32;
}

#[derive(Default)]
struct Imp {
    gate: Mutex<Vec<oneshot::Sender<()>>>,
    started: AtomicUsize,
}

impl Imp {
    fn open_gate(&self) {
        for tx in self.gate.lock().unwrap().drain(..) {
            let _ = tx.send(());
        }
    }
}

impl Probe for Imp {
    async fn echo(&self, x: u32) -> u32 {
        x
    }
    async fn gated(&self, x: u32) -> u32 {
        let (tx, rx) = oneshot::channel();
        self.gate.lock().unwrap().push(tx);
        self.started.fetch_add(1, Ordering::SeqCst);
        let _ = rx.await;
        x
    }
}

/// Connections (or accept errors) pushed by the test.
struct Chan(mpsc::UnboundedReceiver<io::Result<MemTransport>>);

impl Listener for Chan {
    type Conn = MemTransport;
    type Peer = &'static str;
    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(MemTransport, &'static str)>> {
        match self.0.poll_next_unpin(cx) {
            Poll::Ready(Some(result)) => Poll::Ready(result.map(|conn| (conn, "memory"))),
            // The test dropped its sender: nothing more will come.
            _ => Poll::Pending,
        }
    }
}

/// A timer whose sleeps are over at once.
#[derive(Clone, Copy, Debug)]
struct Instant;

impl Timer for Instant {
    type Sleep = futures::future::Ready<()>;
    fn now(&self) -> Duration {
        Duration::ZERO
    }
    fn sleep_until(&self, _: Duration) -> Self::Sleep {
        futures::future::ready(())
    }
    fn reset(&self, mut sleep: Pin<&mut Self::Sleep>, _: Duration) {
        sleep.set(futures::future::ready(()));
    }
}

struct Harness {
    pool: LocalPool,
    conns: mpsc::UnboundedSender<io::Result<MemTransport>>,
    imp: Arc<Imp>,
    done: Rc<Cell<bool>>,
    serve: Option<RemoteHandle<()>>,
}

impl Harness {
    fn new<Tm: Timer + Clone + 'static>(builder: ServeBuilder<Tm>) -> Self {
        Self::with(|listener, imp| builder.serve(listener, ProbeServer::from_arc(imp)))
    }

    /// Connections as tasks of the pool, spawned through a `Send` spawner
    /// that queues them for it; returns how many were spawned.
    fn spawned<Tm>(builder: ServeBuilder<Tm>) -> (Self, Arc<AtomicUsize>)
    where
        Tm: Timer + Clone + Send + 'static,
        Tm::Sleep: Send,
    {
        let (queue, mut queued) = mpsc::unbounded::<Pin<Box<dyn Future<Output = ()> + Send>>>();
        let spawned = Arc::new(AtomicUsize::new(0));
        let count = spawned.clone();
        let builder = builder.spawn_connections(move |task| {
            count.fetch_add(1, Ordering::SeqCst);
            queue.unbounded_send(task).unwrap();
        });
        let h = Self::with(|listener, imp| builder.serve(listener, ProbeServer::from_arc(imp)));
        let spawner = h.pool.spawner();
        h.pool
            .spawner()
            .spawn_local(async move {
                while let Some(task) = queued.next().await {
                    spawner.spawn_local(task).unwrap();
                }
            })
            .unwrap();
        (h, spawned)
    }

    fn with<F: Future<Output = ()> + 'static>(serve: impl FnOnce(Chan, Arc<Imp>) -> F) -> Self {
        let (conns, rx) = mpsc::unbounded();
        let imp = Arc::new(Imp::default());
        let serve = serve(Chan(rx), imp.clone());
        let pool = LocalPool::new();
        let done = Rc::new(Cell::new(false));
        let flag = done.clone();
        let (serve, handle) = async move {
            serve.await;
            flag.set(true);
        }
        .remote_handle();
        pool.spawner().spawn_local(serve).unwrap();
        Harness {
            pool,
            conns,
            imp,
            done,
            serve: Some(handle),
        }
    }

    /// A new connection; its driver runs on the pool.
    fn connect(&mut self) -> ProbeClient {
        let (client_io, server_io) = courier_mem::pair(64 * 1024);
        self.conns.unbounded_send(Ok(server_io)).unwrap();
        let (client, driver) = Client::new(client_io);
        self.pool
            .spawner()
            .spawn_local(async move {
                let _ = driver.await;
            })
            .unwrap();
        ProbeClient::new(client)
    }

    fn accept_error(&mut self, errno: i32) {
        let error = io::Error::from_raw_os_error(errno);
        self.conns.unbounded_send(Err(error)).unwrap();
    }

    /// Starts `call` on the pool and runs until nothing can progress; the
    /// result, if any, is in the returned cell.
    fn start<T: 'static>(
        &mut self,
        call: impl Future<Output = T> + 'static,
    ) -> Rc<Cell<Option<T>>> {
        let out = Rc::new(Cell::new(None));
        let slot = out.clone();
        self.pool
            .spawner()
            .spawn_local(async move { slot.set(Some(call.await)) })
            .unwrap();
        self.pool.run_until_stalled();
        out
    }
}

const EMFILE: i32 = 24;

#[test]
fn serves_many_connections() {
    let mut h = Harness::new(ServeBuilder::new(NoTimer));
    let clients: Vec<_> = (0..5).map(|_| h.connect()).collect();
    for (i, client) in clients.into_iter().enumerate() {
        let got = h.start(async move { client.echo(i as u32).await });
        assert_eq!(got.take(), Some(Ok(i as u32)));
    }
}

#[test]
fn accept_errors_do_not_stop_the_server() {
    let mut h = Harness::new(ServeBuilder::new(Instant));
    h.accept_error(EMFILE);
    h.accept_error(EMFILE);
    h.accept_error(libc_econnaborted());
    let client = h.connect();
    let got = h.start(async move { client.echo(5).await });
    assert_eq!(got.take(), Some(Ok(5)));
}

fn libc_econnaborted() -> i32 {
    io::Error::from(io::ErrorKind::ConnectionAborted)
        .raw_os_error()
        .unwrap_or(103)
}

#[test]
fn accept_is_retried_when_a_connection_closes() {
    // NoTimer: the back-off never ends by itself, only a closing
    // connection (which frees a descriptor) ends it.
    let mut h = Harness::new(ServeBuilder::new(NoTimer));
    let first = h.connect();
    let keep = first.clone();
    assert_eq!(
        h.start(async move { keep.echo(1).await }).take(),
        Some(Ok(1))
    );
    h.accept_error(EMFILE);
    let second = h.connect();
    let got = h.start(async move { second.echo(2).await });
    assert_eq!(got.take(), None, "still backing off");
    drop(first);
    h.pool.run_until_stalled();
    assert_eq!(got.take(), Some(Ok(2)));
}

#[test]
fn pause_at_limit_serves_waiting_clients_later() {
    let mut h = Harness::new(ServeBuilder::new(NoTimer).max_connections(1));
    let first = h.connect();
    let (release, released) = oneshot::channel::<()>();
    let keep = first.clone();
    let got1 = h.start(async move {
        let r = keep.echo(1).await;
        let _ = released.await;
        r
    });
    let second = h.connect();
    let got2 = h.start(async move { second.echo(2).await });
    assert_eq!(
        got2.take(),
        None,
        "second client waits while the limit is reached"
    );
    drop(first);
    release.send(()).unwrap();
    h.pool.run_until_stalled();
    assert_eq!(got1.take(), Some(Ok(1)));
    assert_eq!(got2.take(), Some(Ok(2)));
}

#[test]
fn spawned_connections_are_tasks_and_pause_at_limit() {
    let (mut h, spawned) = Harness::spawned(ServeBuilder::new(NoTimer).max_connections(1));
    let first = h.connect();
    let keep = first.clone();
    assert_eq!(
        h.start(async move { keep.echo(1).await }).take(),
        Some(Ok(1))
    );
    assert_eq!(
        spawned.load(Ordering::SeqCst),
        1,
        "the connection is a task"
    );
    let second = h.connect();
    let got = h.start(async move { second.echo(2).await });
    assert_eq!(got.take(), None, "second client waits at the limit");
    assert_eq!(spawned.load(Ordering::SeqCst), 1, "and is not accepted");
    drop(first);
    h.pool.run_until_stalled();
    assert_eq!(got.take(), Some(Ok(2)));
    assert_eq!(spawned.load(Ordering::SeqCst), 2);
}

#[test]
fn spawned_connections_reject_at_limit() {
    let builder = ServeBuilder::new(NoTimer)
        .max_connections(1)
        .at_limit(AtLimit::Reject);
    let (mut h, spawned) = Harness::spawned(builder);
    let first = h.connect();
    let keep = first.clone();
    assert_eq!(
        h.start(async move { keep.echo(1).await }).take(),
        Some(Ok(1))
    );
    let second = h.connect();
    let got = h.start(async move { second.echo(2).await });
    assert_eq!(
        got.take(),
        Some(Err(CallError::NotSent(courier::Unsent::Disconnected)))
    );
    assert_eq!(
        spawned.load(Ordering::SeqCst),
        1,
        "the rejected one never ran"
    );
    assert_eq!(
        h.start(async move { first.echo(3).await }).take(),
        Some(Ok(3))
    );
}

#[test]
fn dropping_serve_closes_spawned_connections() {
    let (mut h, _) = Harness::spawned(ServeBuilder::new(NoTimer));
    let client = h.connect();
    let keep = client.clone();
    assert_eq!(
        h.start(async move { keep.echo(1).await }).take(),
        Some(Ok(1))
    );
    let got = h.start(async move { client.gated(2).await });
    assert_eq!(h.imp.started.load(Ordering::SeqCst), 1);
    drop(h.serve.take());
    h.pool.run_until_stalled();
    assert_eq!(got.take(), Some(Err(CallError::ConnectionLost)));
}

#[test]
fn reject_at_limit_closes_new_connections() {
    let builder = ServeBuilder::new(NoTimer)
        .max_connections(1)
        .at_limit(AtLimit::Reject);
    let mut h = Harness::new(builder);
    let first = h.connect();
    let keep = first.clone();
    assert_eq!(
        h.start(async move { keep.echo(1).await }).take(),
        Some(Ok(1))
    );
    let second = h.connect();
    let got = h.start(async move { second.echo(2).await });
    // Closed before the call started: it was never sent.
    assert_eq!(
        got.take(),
        Some(Err(CallError::NotSent(courier::Unsent::Disconnected)))
    );
    // The first connection is unaffected.
    assert_eq!(
        h.start(async move { first.echo(3).await }).take(),
        Some(Ok(3))
    );
}

#[test]
fn graceful_shutdown_finishes_calls_in_flight() {
    let shutdown = Shutdown::new();
    let mut h = Harness::new(ServeBuilder::new(NoTimer).shutdown(shutdown.clone()));
    let client = h.connect();
    let c = client.clone();
    let in_flight = h.start(async move { c.gated(7).await });
    assert_eq!(h.imp.started.load(Ordering::SeqCst), 1);
    shutdown.trigger();
    h.pool.run_until_stalled();
    assert!(!h.done.get(), "waits for the call in flight");
    let c = client.clone();
    let late = h.start(async move { c.echo(1).await });
    assert_eq!(
        late.take(),
        Some(Err(CallError::Remote(RemoteError::ShuttingDown)))
    );
    h.imp.open_gate();
    h.pool.run_until_stalled();
    assert_eq!(in_flight.take(), Some(Ok(7)));
    assert!(h.done.get(), "serve completes once the connection closed");
    // The listener was dropped: no new connection is accepted.
    assert!(h.conns.is_closed());
}

#[test]
fn grace_period_closes_connections_with_stuck_calls() {
    let shutdown = Shutdown::new();
    let builder = ServeBuilder::new(Instant).shutdown(shutdown.clone());
    let mut h = Harness::new(builder);
    let client = h.connect();
    let c = client.clone();
    let stuck = h.start(async move { c.gated(7).await });
    assert_eq!(h.imp.started.load(Ordering::SeqCst), 1);
    shutdown.trigger();
    h.pool.run_until_stalled();
    assert!(h.done.get());
    // The grace period forced the call to end: it is answered, not cut off.
    assert_eq!(
        stuck.take(),
        Some(Err(CallError::Remote(RemoteError::ShuttingDown)))
    );
    assert!(shutdown.is_forced());
}

#[test]
fn dropping_serve_closes_connections() {
    let mut h = Harness::new(ServeBuilder::new(NoTimer));
    let client = h.connect();
    let c = client.clone();
    let stuck = h.start(async move { c.gated(1).await });
    assert_eq!(stuck.take(), None);
    drop(h.serve.take());
    h.pool.run_until_stalled();
    assert_eq!(stuck.take(), Some(Err(CallError::ConnectionLost)));
}

/// A timer at the far end of its range whose sleeps never end: any
/// `now + d` without saturation would overflow.
#[derive(Clone, Copy, Debug)]
struct FarFuture;

impl Timer for FarFuture {
    type Sleep = futures::future::Pending<()>;
    fn now(&self) -> Duration {
        Duration::MAX - Duration::from_millis(1)
    }
    fn sleep_until(&self, _: Duration) -> Self::Sleep {
        futures::future::pending()
    }
    fn reset(&self, _: Pin<&mut Self::Sleep>, _: Duration) {}
}

#[test]
fn extreme_durations_saturate() {
    let shutdown = Shutdown::new();
    let builder = ServeBuilder::new(FarFuture)
        .grace_period(Duration::MAX)
        .accept_backoff(Duration::MAX)
        .idle_timeout(Duration::MAX)
        .max_frame(usize::MAX)
        .max_concurrent(usize::MAX)
        .backlog(usize::MAX)
        .max_connections(usize::MAX)
        .shutdown(shutdown.clone());
    let mut h = Harness::new(builder);
    let client = h.connect();
    let c = client.clone();
    let stuck = h.start(async move { c.gated(1).await });
    assert_eq!(h.imp.started.load(Ordering::SeqCst), 1);
    // A back-off of Duration::MAX.
    h.accept_error(EMFILE);
    h.pool.run_until_stalled();
    shutdown.trigger();
    h.pool.run_until_stalled();
    assert!(!h.done.get(), "a grace period of Duration::MAX waits");
    assert_eq!(stuck.take(), None);
}

/// The grace period ends, the calls are forced to end, but a client that
/// does not read keeps its last replies unsent: after `FLUSH_PERIOD` the
/// connection is dropped anyway.
#[test]
fn forced_connections_get_a_bounded_time_to_flush() {
    let shutdown = Shutdown::new();
    let (grace_tx, grace_rx) = oneshot::channel::<()>();
    let (flush_tx, flush_rx) = oneshot::channel::<()>();
    let builder =
        ServeBuilder::new(Steps::new(vec![grace_rx, flush_rx])).shutdown(shutdown.clone());
    let mut h = Harness::new(builder);
    // A client whose replies cannot be written: a one-byte pipe it never
    // reads.
    let (client_io, server_io) = courier_mem::pair(1);
    h.conns.unbounded_send(Ok(server_io)).unwrap();
    let mut client_io = client_io;
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut request = Vec::new();
    {
        let mut head = [0u8; 32];
        let n = courier::wire::Header::request(1, ProbeClient::GATED, None)
            .encode(&mut head)
            .unwrap();
        request.extend(((n + 1) as u32).to_le_bytes());
        request.extend(&head[..n]);
        request.push(1);
    }
    let mut sent = 0;
    while sent < request.len() {
        if let Poll::Ready(Ok(n)) = client_io.poll_write(&mut cx, &request[sent..]) {
            sent += n;
        }
        h.pool.run_until_stalled();
    }
    assert_eq!(h.imp.started.load(Ordering::SeqCst), 1);
    shutdown.trigger();
    h.pool.run_until_stalled();
    assert!(!h.done.get(), "within the grace period");
    grace_tx.send(()).unwrap();
    h.pool.run_until_stalled();
    assert!(shutdown.is_forced());
    assert!(!h.done.get(), "flushing: the client reads nothing");
    flush_tx.send(()).unwrap();
    h.pool.run_until_stalled();
    assert!(h.done.get(), "dropped after the flush period");
}

/// A timer whose successive sleeps end when the test says so.
#[derive(Clone)]
struct Steps(Arc<Mutex<Vec<oneshot::Receiver<()>>>>);

impl Steps {
    fn new(mut steps: Vec<oneshot::Receiver<()>>) -> Self {
        steps.reverse();
        Steps(Arc::new(Mutex::new(steps)))
    }
}

impl fmt::Debug for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Steps")
    }
}

impl Timer for Steps {
    type Sleep = futures::future::Map<oneshot::Receiver<()>, fn(Result<(), oneshot::Canceled>)>;
    fn now(&self) -> Duration {
        Duration::ZERO
    }
    fn sleep_until(&self, _: Duration) -> Self::Sleep {
        let rx = self
            .0
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| oneshot::channel().1);
        rx.map(drop as fn(_))
    }
    fn reset(&self, mut sleep: Pin<&mut Self::Sleep>, at: Duration) {
        sleep.set(self.sleep_until(at));
    }
}

#[test]
fn when_full_and_backlog_reach_the_connections() {
    let builder = ServeBuilder::new(NoTimer)
        .max_concurrent(1)
        .when_full(WhenFull::Reject);
    let mut h = Harness::new(builder);
    let client = h.connect();
    let c = client.clone();
    let stuck = h.start(async move { c.gated(1).await });
    let c = client.clone();
    let rejected = h.start(async move { c.echo(2).await });
    assert_eq!(
        rejected.take(),
        Some(Err(CallError::Remote(RemoteError::Overloaded)))
    );
    h.imp.open_gate();
    h.pool.run_until_stalled();
    assert_eq!(stuck.take(), Some(Ok(1)));
}
