//! # courier-bench
//!
//! The pieces of courier's benchmark binary (`courier-bench`) and of its
//! micro-benchmarks, shared so they measure the same service.
//!
//! The binary runs a courier server and client in one process, over TCP,
//! Unix sockets or the in-memory transport, on smol (default; an executor
//! per thread, see [`SmolExecutor`]) or tokio, and
//! measures them the way the peer benchmarks in `bench/peers/` do: the same
//! flags, warm-up / measure / stop phase clock, HdrHistogram recorder and
//! result line, from the same source file, see [`measure`].
//!
//! The service has the peers' two methods: `add(u64, u64) -> u64`
//! (`--payload 0`) and an echo of the payload. The echo takes and returns a
//! [`Payload`], a [`serde_bytes::ByteBuf`], so postcard writes and reads the
//! payload as one length-prefixed slice instead of element by element (the
//! peers' `tarpc-bytebuf` row does the same; their plain `tarpc` row echoes a
//! `Vec<u8>`). Each caller reuses the returned buffer as its next request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub mod cli;
pub mod measure;
pub mod stream;

use courier::{ClientBuilder, ClientDriver, ServerBuilder, Timer, Transport};
use measure::{Phase, Recorder};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The echo payload: a [`ByteBuf`], which postcard writes as one
/// length-prefixed slice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(pub ByteBuf);

impl Payload {
    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload(ByteBuf::from(bytes))
    }
}

// `ByteBuf` is written as a length and the bytes: on the wire the same as a
// `Vec<u8>`, so it has the same schema (and `echo` the same key as one
// declared with `Vec<u8>`).
impl courier::Schema for Payload {
    const SCHEMA: &'static courier::schema::Shape = <Vec<u8> as courier::Schema>::SCHEMA;
}

/// The benchmark service: the peers' `add` and echo.
#[courier::service]
pub trait Bench {
    /// `a + b` (wrapping).
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Returns the payload unchanged.
    async fn echo(&self, payload: Payload) -> Payload;
}

/// The benchmark service's implementation.
#[derive(Clone, Copy, Debug, Default)]
pub struct BenchImpl;

impl Bench for BenchImpl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    async fn echo(&self, payload: Payload) -> Payload {
        payload
    }
}

/// The server of one connection, with limits that admit `concurrency`
/// calls in flight.
pub fn server<T: Transport>(
    io: T,
    concurrency: usize,
) -> courier::Server<T, BenchServer<BenchImpl>> {
    ServerBuilder::new()
        .max_concurrent(concurrency.max(courier::server::DEFAULT_MAX_CONCURRENT))
        .build(io, BenchServer::new(BenchImpl))
}

/// A client configuration that admits `concurrency` calls in flight.
pub fn client_builder(concurrency: usize) -> ClientBuilder {
    ClientBuilder::new().max_in_flight(concurrency.max(courier::client::DEFAULT_MAX_IN_FLIGHT))
}

/// The client of one connection and its driver.
pub fn client<T: Transport>(io: T, concurrency: usize) -> (BenchClient, ClientDriver<T>) {
    let (client, driver) = client_builder(concurrency).build(io);
    (BenchClient::new(client), driver)
}

/// One in-flight slot: issues calls back to back until the phase is STOP,
/// recording each call's latency from send to reply. `payload == 0` calls
/// `add`, otherwise `echo` with `payload` bytes. A wrong answer counts as an
/// error.
pub async fn caller(client: BenchClient, payload: usize, phase: Arc<Phase>) -> Recorder {
    let mut rec = Recorder::new();
    if payload == 0 {
        let mut i = 0u64;
        loop {
            let t0 = Instant::now();
            let ok = client.add(i, 1).await == Ok(i.wrapping_add(1));
            if !rec.finish(&phase, ok, t0.elapsed()) {
                return rec;
            }
            i = i.wrapping_add(1);
        }
    }
    let fresh = || Payload::from(vec![0xa5; payload]);
    let mut buf = fresh();
    loop {
        let t0 = Instant::now();
        let (ok, next) = match client.echo(buf).await {
            Ok(reply) => (reply.len() == payload, reply),
            Err(_) => (false, fresh()),
        };
        if !rec.finish(&phase, ok, t0.elapsed()) {
            return rec;
        }
        buf = next;
    }
}

/// A boxed, sendable future (a spawned task's handle).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The executor a run uses: smol or tokio, with a given number of threads.
pub trait Runtime {
    /// Runs `future` on the runtime's threads; the handle yields its output.
    fn spawn<F>(&self, future: F) -> BoxFuture<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;

    /// Runs `future` on the runtime's threads in the background.
    fn detach<F>(&self, future: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;

    /// Runs `future` on the calling thread until it completes.
    fn block_on<F: Future>(&self, future: F) -> F::Output;

    /// Runs the current connection's caller number `index`: where
    /// [`Callers`] says on a runtime that keeps a connection's tasks on one
    /// thread, else as [`Runtime::spawn`].
    fn spawn_caller<F>(&self, index: usize, future: F) -> BoxFuture<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let _ = index;
        self.spawn(future)
    }

    /// The tasks spawned from now on belong to a new connection: a runtime
    /// that keeps a connection's tasks on one thread moves on to its next
    /// thread. Nothing by default.
    fn next_connection(&self) {}

    /// Runs the server's end of the current connection (an in-memory
    /// pair) in the background: where [`ServerThread`] says on a runtime
    /// that keeps a connection's tasks on one thread, else as
    /// [`Runtime::detach`].
    fn detach_server<F>(&self, future: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.detach(future);
    }
}

/// Where, in one process on smol's executor per thread, the server's end
/// of a connection runs relative to the client's end (`--server-thread`).
///
/// A call and its reply are a ping-pong: on one thread each side's batch
/// is the other's input, with no wake-up across threads. A stream is a
/// pipeline: the producer and the consumer each want a core. So the
/// default follows the mode: [`ServerThread::Same`] for unary calls,
/// [`ServerThread::Next`] for streams. In separate processes (`--role`)
/// each side has its own threads and this does not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerThread {
    /// Server connection `i` on client connection `i`'s thread.
    Same,
    /// Server connection `i` on the thread after client connection `i`'s.
    Next,
}

impl ServerThread {
    /// How many threads after the client's the server's end runs.
    fn offset(self) -> usize {
        match self {
            ServerThread::Same => 0,
            ServerThread::Next => 1,
        }
    }
}

/// Where, on smol's executor per thread, a connection's callers run
/// relative to its driver (`--callers`).
///
/// A unary caller and the driver are a ping-pong: each call's reply
/// comes back through the driver, so they share a thread. A server
/// stream's consumer is the end of a pipeline: it only takes the items the
/// driver hands it, and 64 of them (with the benchmark's clock and
/// histogram for every item) load one thread to the full while the others
/// have room. A bidirectional caller also feeds the driver its items, a
/// ping-pong again (measured: spread 4.0–5.4 M echoes/s, same 4.1–6.5 M).
/// So the default follows the mode: [`Callers::Spread`] for server
/// streams, [`Callers::Same`] otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callers {
    /// Every caller on the connection's (its driver's) thread.
    Same,
    /// Caller `i` on the `i`-th thread after the connection's, round the
    /// pool: as the pool's own round robin, starting at the driver's
    /// thread.
    Spread,
}

/// How the smol runtime spreads tasks over its threads
/// (`--smol-executor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmolExecutor {
    /// An executor per thread ([`courier_net::async_io::ExecutorPool`]):
    /// each connection's tasks on one thread, connections spread over the
    /// threads in turn. The default.
    PerThread,
    /// One `smol::Executor` that every thread runs: a woken task runs on
    /// whichever thread takes it first.
    Shared,
}

/// smol with `threads` OS threads, as a [`SmolExecutor`]; the threads stop
/// when it is dropped.
///
/// Placement per thread: the tasks spawned through [`Runtime`] go to the
/// current thread, and [`Runtime::next_connection`] moves on to the next
/// one, so a client connection's driver and callers share a thread; the
/// server's connections go to the threads in turn through
/// [`SmolRuntime::connection_mode`], starting at the thread
/// [`SmolRuntime::server_thread`] says (the client's, by default).
pub struct SmolRuntime(Smol);

enum Smol {
    Shared(SharedExecutor),
    PerThread {
        pool: courier_net::async_io::ExecutorPool,
        current: Mutex<courier_net::async_io::Worker>,
        server_offset: usize,
        callers: Callers,
    },
}

/// One `smol::Executor` run by several threads until dropped.
struct SharedExecutor {
    executor: Arc<smol::Executor<'static>>,
    stop: Option<smol::channel::Sender<()>>,
}

impl Drop for SharedExecutor {
    fn drop(&mut self) {
        // Closing the channel ends every executor thread's `run`.
        self.stop.take();
    }
}

impl SmolRuntime {
    /// Starts `threads` executor threads.
    pub fn new(threads: usize, executor: SmolExecutor) -> Self {
        match executor {
            SmolExecutor::Shared => SmolRuntime(Smol::Shared(Self::shared(threads))),
            SmolExecutor::PerThread => {
                let pool = courier_net::async_io::ExecutorPool::new(threads)
                    .expect("start the executor threads");
                // Thread 0 until the first connection takes its turn.
                let first = pool.worker_at(0).expect("a pool has a thread");
                let current = Mutex::new(first);
                SmolRuntime(Smol::PerThread {
                    pool,
                    current,
                    server_offset: 0,
                    callers: Callers::Same,
                })
            }
        }
    }

    /// Where the server's end of each connection runs (executor per thread
    /// only; [`ServerThread::Same`] until set).
    pub fn server_thread(mut self, placement: ServerThread) -> Self {
        if let Smol::PerThread { server_offset, .. } = &mut self.0 {
            *server_offset = placement.offset();
        }
        self
    }

    /// Where each connection's callers run (executor per thread only;
    /// [`Callers::Same`] until set).
    pub fn callers(mut self, placement: Callers) -> Self {
        if let Smol::PerThread { callers, .. } = &mut self.0 {
            *callers = placement;
        }
        self
    }

    /// The pool thread `offset` threads after the current connection's.
    fn beside_current(&self, offset: usize) -> Option<courier_net::async_io::Worker> {
        match &self.0 {
            Smol::PerThread { pool, .. } => self.current().and_then(|client| {
                let threads = pool.threads().max(1);
                pool.worker_at((client.index() % threads + offset % threads) % threads)
            }),
            Smol::Shared(_) => None,
        }
    }

    fn shared(threads: usize) -> SharedExecutor {
        let executor = Arc::new(smol::Executor::new());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        for i in 0..threads.max(1) {
            let executor = executor.clone();
            let stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("smol-{i}"))
                .spawn(move || smol::block_on(executor.run(stopped.recv())))
                .expect("spawn executor thread");
        }
        SharedExecutor {
            executor,
            stop: Some(stop),
        }
    }

    /// How a server on this runtime runs its connections: each a task of
    /// the shared executor, or of the pool's threads in turn.
    pub fn connection_mode(&self) -> courier_net::SpawnEach {
        match &self.0 {
            Smol::Shared(shared) => {
                let executor = shared.executor.clone();
                courier_net::SpawnEach::new(move |task: BoxFuture<()>| {
                    executor.spawn(task).detach()
                })
            }
            Smol::PerThread {
                pool,
                server_offset,
                ..
            } => {
                let workers = server_workers(pool, *server_offset);
                let next = AtomicUsize::new(0);
                // As `pool.spawner()`, shifted by the offset.
                courier_net::SpawnEach::new(move |task: BoxFuture<()>| {
                    let turn = next.fetch_add(1, Ordering::Relaxed);
                    if let Some(worker) = workers.get(turn % workers.len().max(1)) {
                        worker.spawn(task).detach();
                    }
                })
            }
        }
    }

    /// Which kind of executor this is.
    pub fn executor(&self) -> SmolExecutor {
        match self.0 {
            Smol::Shared(_) => SmolExecutor::Shared,
            Smol::PerThread { .. } => SmolExecutor::PerThread,
        }
    }

    fn current(&self) -> Option<courier_net::async_io::Worker> {
        match &self.0 {
            Smol::Shared(_) => None,
            Smol::PerThread { current, .. } => {
                Some(current.lock().unwrap_or_else(|e| e.into_inner()).clone())
            }
        }
    }
}

impl Runtime for SmolRuntime {
    fn spawn<F>(&self, future: F) -> BoxFuture<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match (&self.0, self.current()) {
            (_, Some(worker)) => Box::pin(worker.spawn(future)),
            (Smol::Shared(shared), None) => Box::pin(shared.executor.spawn(future)),
            (Smol::PerThread { pool, .. }, None) => Box::pin(pool.spawn(future)),
        }
    }

    fn detach<F>(&self, future: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match (&self.0, self.current()) {
            (_, Some(worker)) => worker.spawn(future).detach(),
            (Smol::Shared(shared), None) => shared.executor.spawn(future).detach(),
            (Smol::PerThread { pool, .. }, None) => pool.spawn(future).detach(),
        }
    }

    fn next_connection(&self) {
        if let Smol::PerThread { pool, current, .. } = &self.0 {
            *current.lock().unwrap_or_else(|e| e.into_inner()) = pool.worker();
        }
    }

    fn detach_server<F>(&self, future: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let server = match &self.0 {
            Smol::PerThread { server_offset, .. } => self.beside_current(*server_offset),
            Smol::Shared(_) => None,
        };
        match server {
            Some(worker) => worker.spawn(future).detach(),
            None => self.detach(future),
        }
    }

    fn spawn_caller<F>(&self, index: usize, future: F) -> BoxFuture<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let worker = match &self.0 {
            Smol::PerThread {
                callers: Callers::Spread,
                ..
            } => self.beside_current(index),
            Smol::PerThread { .. } | Smol::Shared(_) => None,
        };
        match worker {
            Some(worker) => Box::pin(worker.spawn(future)),
            None => self.spawn(future),
        }
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        smol::block_on(future)
    }
}

/// The pool's threads in the order the server's connections take them:
/// from thread `offset` on, round the pool.
fn server_workers(
    pool: &courier_net::async_io::ExecutorPool,
    offset: usize,
) -> Vec<courier_net::async_io::Worker> {
    let threads = pool.threads().max(1);
    (0..threads)
        .filter_map(|i| pool.worker_at((offset % threads + i) % threads))
        .collect()
}

/// A tokio multi-thread runtime with `threads` workers.
pub struct TokioRuntime(tokio::runtime::Runtime);

impl TokioRuntime {
    /// Builds the runtime.
    pub fn new(threads: usize) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_io()
            .build()
            .expect("tokio runtime");
        TokioRuntime(rt)
    }
}

impl Runtime for TokioRuntime {
    fn spawn<F>(&self, future: F) -> BoxFuture<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.0.spawn(future);
        Box::pin(async move { handle.await.expect("benchmark task panicked") })
    }

    fn detach<F>(&self, future: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        drop(self.0.spawn(future));
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }
}

/// Spawns the client driver and `concurrency` callers of one connection;
/// returns the callers' handles. The driver ends by itself once the callers
/// drop the last client handle.
pub fn start_client<R, T, Tm>(
    rt: &R,
    (client, driver): (courier::Client, ClientDriver<T, Tm>),
    concurrency: usize,
    payload: usize,
    phase: &Arc<Phase>,
) -> Vec<BoxFuture<Recorder>>
where
    R: Runtime,
    T: Transport + Send + 'static,
    T::Error: Send,
    Tm: Timer + Send + 'static,
    Tm::Sleep: Send,
{
    rt.detach(driver);
    let client = BenchClient::new(client);
    (0..concurrency)
        .map(|i| rt.spawn_caller(i, caller(client.clone(), payload, phase.clone())))
        .collect()
}

pub mod alloc_count {
    //! Heap allocations per call, client and server apart.
    //!
    //! [`CountingAlloc`] counts the allocations (and reallocations) each
    //! thread makes; register it as the global allocator of a benchmark or
    //! test binary. [`per_call`] runs a client and a server over
    //! `courier-mem` on the current thread, polling each inside a wrapper
    //! that attributes the allocations made during its polls to its side.
    //! Two runs with different call counts are subtracted, so connection
    //! setup, buffer growth during warm-up and teardown cancel out and what
    //! remains is the steady-state cost of one call.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::Pin;
    use std::rc::Rc;
    use std::task::{Context, Poll};

    use futures::future::join_all;

    thread_local! {
        static ALLOCS: Cell<u64> = const { Cell::new(0) };
    }

    /// The system allocator, counting each thread's allocations.
    #[derive(Debug, Default)]
    pub struct CountingAlloc;

    // SAFETY: every call is forwarded unchanged to `System`; the counter is
    // a const-initialised thread-local `Cell` that never allocates.
    unsafe impl GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            bump();
            // SAFETY: same contract as ours.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            bump();
            // SAFETY: same contract as ours.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            bump();
            // SAFETY: same contract as ours.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    fn bump() {
        // `try_with`: the thread-local may already be gone at thread exit.
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
    }

    /// Allocations made by this thread so far (0 unless [`CountingAlloc`]
    /// is the global allocator).
    pub fn thread_allocs() -> u64 {
        ALLOCS.with(Cell::get)
    }

    /// Adds the allocations made while polling `inner` to `tally`.
    struct Counted<F> {
        inner: Pin<Box<F>>,
        tally: Rc<Cell<u64>>,
    }

    impl<F: Future> Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            let before = thread_allocs();
            let poll = self.inner.as_mut().poll(cx);
            self.tally.set(self.tally.get() + thread_allocs() - before);
            poll
        }
    }

    /// Steady-state heap allocations per call.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct PerCall {
        /// In the caller's future and the client driver.
        pub client: f64,
        /// In the server driver and the handlers.
        pub server: f64,
    }

    impl PerCall {
        /// Client and server together.
        pub fn total(&self) -> f64 {
            self.client + self.server
        }
    }

    /// Runs `concurrency` callers making `calls` calls each (`payload` 0:
    /// `add`, else echo of that many bytes) over `courier-mem` on this
    /// thread, and returns the allocations of the client side and of the
    /// server side.
    pub fn run(concurrency: usize, calls: u64, payload: usize) -> (u64, u64) {
        let (client_io, server_io) = courier_mem::pair(1 << 20);
        let client_tally = Rc::new(Cell::new(0));
        let server_tally = Rc::new(Cell::new(0));
        let server = Counted {
            inner: Box::pin(super::server(server_io, concurrency)),
            tally: server_tally.clone(),
        };
        let (client, driver) = super::client(client_io, concurrency);
        let callers = (0..concurrency)
            .map(|_| {
                let client = client.clone();
                async move {
                    let mut buf = super::Payload::from(vec![1; payload]);
                    for i in 0..calls {
                        if payload == 0 {
                            assert_eq!(client.add(i, 1).await, Ok(i + 1));
                        } else {
                            buf = client.echo(buf).await.expect("echo");
                        }
                    }
                }
            })
            .collect::<Vec<_>>();
        drop(client);
        let client_side = Counted {
            inner: Box::pin(async move {
                let (_, driver) = futures::join!(join_all(callers), driver);
                driver.expect("client driver");
            }),
            tally: client_tally.clone(),
        };
        let (_, server) =
            futures::executor::block_on(async { futures::join!(client_side, server) });
        server.expect("server");
        (client_tally.get(), server_tally.get())
    }

    /// Steady-state allocations per call: the difference between a run of
    /// 2000 and one of 1000 calls per caller, divided by the extra calls.
    pub fn per_call(concurrency: usize, payload: usize) -> PerCall {
        let (short, long) = (1000, 2000);
        let (c1, s1) = run(concurrency, short, payload);
        let (c2, s2) = run(concurrency, long, payload);
        let extra = ((long - short) * concurrency as u64) as f64;
        PerCall {
            client: c2.saturating_sub(c1) as f64 / extra,
            server: s2.saturating_sub(s1) as f64 / extra,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_net::async_io::Worker;

    /// The pool thread a server end placed by `detach_server` runs on, for
    /// each of `conns` connections, with the client's thread beside it.
    fn placements(rt: &SmolRuntime, conns: usize) -> Vec<(usize, usize)> {
        (0..conns)
            .map(|_| {
                rt.next_connection();
                let client = rt.current().expect("executor per thread").index();
                let (tx, rx) = std::sync::mpsc::channel();
                rt.detach_server(async move {
                    let _ = tx.send(Worker::current().map(|w| w.index()));
                });
                let server = rx.recv().expect("the task ran").expect("on a pool thread");
                (client, server)
            })
            .collect()
    }

    #[test]
    fn server_end_runs_on_the_clients_thread_or_the_next() {
        for threads in [1, 2, 3] {
            let same = SmolRuntime::new(threads, SmolExecutor::PerThread);
            for (client, server) in placements(&same, 4) {
                assert_eq!(server, client, "same, {threads} threads");
            }
            let next = SmolRuntime::new(threads, SmolExecutor::PerThread)
                .server_thread(ServerThread::Next);
            for (client, server) in placements(&next, 4) {
                assert_eq!(server, (client + 1) % threads, "next, {threads} threads");
            }
        }
    }

    /// The pool thread each of a connection's `callers` callers runs on.
    fn caller_threads(rt: &SmolRuntime, callers: usize) -> Vec<usize> {
        (0..callers)
            .map(|i| {
                let thread = rt.spawn_caller(i, async { Worker::current().map(|w| w.index()) });
                rt.block_on(thread).expect("on a pool thread")
            })
            .collect()
    }

    #[test]
    fn callers_run_beside_the_driver_or_spread_from_its_thread() {
        for threads in [1, 2, 3] {
            let same = SmolRuntime::new(threads, SmolExecutor::PerThread);
            let spread =
                SmolRuntime::new(threads, SmolExecutor::PerThread).callers(Callers::Spread);
            for conn in 0..4 {
                same.next_connection();
                spread.next_connection();
                let driver = spread.current().expect("executor per thread").index();
                assert_eq!(driver, conn % threads);
                assert_eq!(caller_threads(&same, 5), [conn % threads; 5]);
                let expected: Vec<usize> = (0..5).map(|i| (driver + i) % threads).collect();
                assert_eq!(caller_threads(&spread, 5), expected, "{threads} threads");
            }
        }
        // On the shared executor a caller runs wherever it is taken.
        let shared = SmolRuntime::new(2, SmolExecutor::Shared).callers(Callers::Spread);
        assert_eq!(
            shared.block_on(shared.spawn_caller(usize::MAX, async { 7 })),
            7
        );
    }

    #[test]
    fn accepted_connections_start_at_the_offset() {
        let pool = courier_net::async_io::ExecutorPool::new(3).expect("threads");
        let order = |offset| -> Vec<usize> {
            server_workers(&pool, offset)
                .iter()
                .map(Worker::index)
                .collect()
        };
        assert_eq!(order(0), [0, 1, 2]);
        assert_eq!(order(1), [1, 2, 0]);
        assert_eq!(order(usize::MAX), [0, 1, 2]);
    }
}
