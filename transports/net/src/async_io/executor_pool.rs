//! [`ExecutorPool`]: one executor per thread, for smol and async-io users;
//! feature `executor-pool`.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};

use async_executor::Task;
use futures_util::task::AtomicWaker;

/// The most threads a pool starts; more are saturated to this.
pub const MAX_THREADS: usize = 1024;

/// A pool of threads that each run an executor of their own (feature
/// `executor-pool`).
///
/// # Model
///
/// An `ExecutorPool` of N threads runs N executors, one on each thread:
/// each thread drives its own `async_executor::Executor` under
/// `async_io::block_on` and no other thread ever runs it, so a task
/// spawned on a thread runs on that thread until it ends. A [`Worker`]
/// names one thread: [`Worker::spawn`] places a task there, and everything
/// spawned on the same `Worker` shares that thread. Placement is round
/// robin: [`ExecutorPool::worker`] and [`ExecutorPool::spawn`] take the
/// threads in turn, and [`ExecutorPool::spawner`] gives a
/// [`courier::Spawn`] that does the same, with a turn of its own, for
/// [`ServeBuilder::spawn_connections`](crate::ServeBuilder::spawn_connections)
/// (each accepted connection — its reads, writes and handlers — on one
/// thread, connections spread over the threads). Inside a pool's task,
/// [`Worker::current`] is the thread it runs on, for spawning beside it.
///
/// # Why, and what it costs
///
/// On a shared multi-thread `smol::Executor`, a task woken by an I/O event
/// is queued for all workers, and another worker is woken to take it, so
/// at low load a request and its reply hop between threads and each hop
/// pays an OS wake-up (a futex and a context switch, several microseconds
/// on a VM). In a pool, a client connection's driver and its callers on
/// one `Worker`, and each server connection on one thread, hand work to
/// each other without leaving the thread; another thread is woken only for
/// an I/O event of a connection it owns. The price is balance: a thread
/// with busy connections cannot hand them to an idle one, so a pool suits
/// many connections of similar weight (spread by the round robin) and
/// latency-bound ones; a shared `Executor` suits uneven or CPU-heavy tasks
/// that should move to whichever thread is free. With both ends of a
/// connection in one process, a call and its reply are best on one thread
/// (a ping-pong), while a stream's producer and consumer want a thread
/// each (a pipeline: [`ExecutorPool::worker_at`] places them), and many
/// server streams' consumers of one connection may go round the pool
/// ([`ExecutorPool::spawn`]) while its driver stays on its `Worker`.
/// `BENCHMARKS.md` ("smol: one executor per thread", "Streams") has the
/// measurements.
///
/// The async-io reactor stays one for the process: the thread that waits
/// for I/O wakes the owner of an event, so a thread idle for long gives the
/// reactor to the busy ones (async-io's own rule), and a busy thread then
/// gets its own events without a hand-off.
///
/// # Panics and shutdown
///
/// A task that panics ends; the panic is caught, printed by the panic hook
/// and resumed where the task's `Task` handle is awaited (a detached
/// task's panic is only printed). The thread and its other tasks go on.
/// Dropping the pool stops every thread, waits for each (except the
/// calling thread when the last handle is dropped inside one of the pool's
/// tasks) and then drops the tasks that had not finished. A task spawned
/// on a [`Worker`] of a dropped pool is dropped at once: awaiting its
/// handle panics, `Task::fallible` yields `None`; nothing waits forever.
///
/// # Example
///
/// ```
/// use courier_net::async_io::{ExecutorPool, Worker};
///
/// let pool = ExecutorPool::new(2).unwrap();
/// // One worker for a task and the task it spawns: both on one thread.
/// let worker = pool.worker();
/// let task = worker.spawn(async {
///     let here = std::thread::current().id();
///     let beside = Worker::current().unwrap().spawn(async { std::thread::current().id() });
///     beside.await == here
/// });
/// assert!(async_io::block_on(task));
/// // Round robin: the next task goes to the other thread.
/// assert_eq!(pool.worker().index(), 1);
/// drop(pool); // stops and joins both threads
/// ```
pub struct ExecutorPool {
    threads: Vec<PoolThread>,
    /// The round robin of [`ExecutorPool::worker`] and [`ExecutorPool::spawn`].
    next: AtomicUsize,
}

struct PoolThread {
    shared: Arc<ThreadShared>,
    join: Option<JoinHandle<()>>,
}

/// What a pool thread shares with its [`Worker`]s and the pool.
struct ThreadShared {
    executor: async_executor::Executor<'static>,
    stop: AtomicBool,
    stop_waker: AtomicWaker,
}

thread_local! {
    /// The pool thread this is, if it is one.
    static CURRENT: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

impl ExecutorPool {
    /// Starts `threads` threads (0 is taken as 1, above [`MAX_THREADS`](crate::async_io::MAX_THREADS) as
    /// `MAX_THREADS`), named `courier-pool-N`. Fails if the OS refuses a
    /// thread; those already started are stopped.
    pub fn new(threads: usize) -> io::Result<Self> {
        let count = threads.clamp(1, MAX_THREADS);
        let mut pool = ExecutorPool {
            threads: Vec::with_capacity(count),
            next: AtomicUsize::new(0),
        };
        for index in 0..count {
            // On error `pool` is dropped, which stops the started threads.
            pool.threads.push(PoolThread::start(index)?);
        }
        Ok(pool)
    }

    /// A pool with one thread per CPU the process may use (one if that is
    /// unknown).
    pub fn per_core() -> io::Result<Self> {
        Self::new(thread::available_parallelism().map_or(1, usize::from))
    }

    /// How many threads the pool has (at least one).
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// The next thread in turn, to spawn related tasks (a client
    /// connection's driver and its callers) on.
    pub fn worker(&self) -> Worker {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.worker_at(turn % self.threads.len())
            .expect("the index is below the thread count")
    }

    /// The thread with this index (`0..threads()`), if there is one.
    pub fn worker_at(&self, index: usize) -> Option<Worker> {
        self.threads.get(index).map(|thread| Worker {
            shared: Arc::downgrade(&thread.shared),
            index,
        })
    }

    /// Spawns `future` on the next thread in turn.
    pub fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.worker().spawn(future)
    }

    /// A [`courier::Spawn`] that places each task on the next thread in
    /// turn (its own turn, starting at thread 0), for
    /// [`ServeBuilder::spawn_connections`](crate::ServeBuilder::spawn_connections).
    pub fn spawner(&self) -> PoolSpawner {
        PoolSpawner {
            workers: (0..self.threads())
                .filter_map(|index| self.worker_at(index))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Drop for ExecutorPool {
    fn drop(&mut self) {
        for thread in &self.threads {
            thread.shared.stop.store(true, Ordering::Release);
            thread.shared.stop_waker.wake();
        }
        let me = thread::current().id();
        for thread in &mut self.threads {
            if let Some(join) = thread.join.take() {
                // Joining our own thread would deadlock: it ends after the
                // task that dropped the pool returns.
                if join.thread().id() != me {
                    let _ = join.join();
                }
            }
        }
        // The threads' executors (and their unfinished tasks) are dropped
        // with the last `Arc`, here or in a `Worker::spawn` racing with us.
    }
}

impl fmt::Debug for ExecutorPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorPool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl PoolThread {
    fn start(index: usize) -> io::Result<Self> {
        let shared = Arc::new(ThreadShared {
            executor: async_executor::Executor::new(),
            stop: AtomicBool::new(false),
            stop_waker: AtomicWaker::new(),
        });
        let worker = Worker {
            shared: Arc::downgrade(&shared),
            index,
        };
        let running = shared.clone();
        let join = thread::Builder::new()
            .name(format!("courier-pool-{index}"))
            .spawn(move || run_thread(running, worker))?;
        Ok(PoolThread {
            shared,
            join: Some(join),
        })
    }
}

/// A pool thread's life: run its executor until the pool stops it.
fn run_thread(shared: Arc<ThreadShared>, worker: Worker) {
    CURRENT.with(|current| *current.borrow_mut() = Some(worker));
    while !shared.stop.load(Ordering::Acquire) {
        // Tasks' panics are caught by the executor (they go to the task's
        // handle); this catches one from the executor itself, so that the
        // thread keeps serving its queue instead of leaving it stranded.
        let run = || async_io::block_on(shared.executor.run(Stopped(&shared)));
        let _ = panic::catch_unwind(AssertUnwindSafe(run));
    }
    CURRENT.with(|current| current.borrow_mut().take());
}

/// Completes when the pool stops the thread.
struct Stopped<'a>(&'a ThreadShared);

impl Future for Stopped<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.stop.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.0.stop_waker.register(cx.waker());
        // Checked again: a stop between the load and the registration
        // woke nobody.
        if self.0.stop.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// One thread of an [`ExecutorPool`]: tasks spawned on it run on that
/// thread. Cheap to clone; it does not keep the pool alive.
#[derive(Clone)]
pub struct Worker {
    shared: Weak<ThreadShared>,
    index: usize,
}

impl Worker {
    /// The pool thread this is called on, or `None` outside a pool's
    /// thread.
    pub fn current() -> Option<Worker> {
        CURRENT.with(|current| current.borrow().clone())
    }

    /// The thread's index in its pool.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Spawns `future` on this thread. If the pool has been dropped the
    /// future is dropped at once and the returned task is cancelled.
    pub fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.shared.upgrade() {
            Some(shared) => shared.executor.spawn(future),
            None => {
                // An executor nobody runs, dropped at once: it cancels the
                // task and drops `future`.
                let executor = async_executor::Executor::new();
                let task = executor.spawn(future);
                drop(executor);
                task
            }
        }
    }
}

impl courier::Spawn for Worker {
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>) {
        Worker::spawn(self, task).detach();
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("running", &(self.shared.strong_count() > 0))
            .finish()
    }
}

/// Spawns each task on the next thread of an [`ExecutorPool`] in turn
/// ([`ExecutorPool::spawner`]); a [`courier::Spawn`].
#[derive(Debug)]
pub struct PoolSpawner {
    workers: Vec<Worker>,
    next: AtomicUsize,
}

impl courier::Spawn for PoolSpawner {
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>) {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(worker) = self.workers.get(turn % self.workers.len().max(1)) {
            worker.spawn(task).detach();
        }
    }
}

#[cfg(test)]
mod tests;
