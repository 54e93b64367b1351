//! On an executor that runs the task woken last first (tokio's LIFO slot),
//! many callers' requests still leave in few writes: the client driver,
//! woken by the first caller that queues, lets the other callers it just
//! answered queue theirs before it writes.
//!
//! The executor here is deterministic and single-threaded, modelled on one
//! tokio worker: a task woken by another running task goes into a one-task
//! LIFO slot (the one there before moves to the back of the queue) and runs
//! next, up to three times in a row, after which wakes go to the back of
//! the queue until the slot is found empty; a task that wakes itself while
//! running goes to the back of the queue. The server stands for a peer in
//! another process: waking it, and wakes by it (bytes arriving, which the
//! reactor reports), go to the back of the queue, as on tokio.

mod common;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use common::{Impl, TestClient, TestServer};
use courier::{ClientBuilder, ServerBuilder, Transport};

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// Tasks run from the LIFO slot in a row before it is bypassed (tokio's
/// `MAX_LIFO_POLLS_PER_TICK`).
const MAX_LIFO_POLLS: u32 = 3;

#[derive(Default)]
struct Queue {
    running: Option<usize>,
    lifo: Option<usize>,
    lifo_polls: u32,
    fifo: VecDeque<usize>,
    scheduled: Vec<bool>,
    /// The task stands for the remote peer.
    remote: Vec<bool>,
}

impl Queue {
    fn next(&mut self) -> Option<usize> {
        let id = match self.lifo.take() {
            Some(id) => {
                self.lifo_polls += 1;
                id
            }
            None => {
                self.lifo_polls = 0;
                self.fifo.pop_front()?
            }
        };
        self.scheduled[id] = false;
        self.running = Some(id);
        Some(id)
    }

    fn wake(&mut self, id: usize) {
        if std::mem::replace(&mut self.scheduled[id], true) {
            return;
        }
        let remote = |t: Option<usize>| t.is_some_and(|t| self.remote[t]);
        if self.running == Some(id)
            || remote(Some(id))
            || remote(self.running)
            || self.lifo_polls >= MAX_LIFO_POLLS
        {
            self.fifo.push_back(id);
        } else if let Some(before) = self.lifo.replace(id) {
            self.fifo.push_back(before);
        }
    }
}

struct TaskWaker {
    id: usize,
    queue: Arc<Mutex<Queue>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.queue.lock().unwrap().wake(self.id);
    }
}

/// Runs `tasks` until `done` says so; panics if every task waits (a lost
/// wake-up) or after `max_polls`. Task 0 is the remote peer.
fn run_lifo(mut tasks: Vec<Task>, done: impl Fn() -> bool, max_polls: usize) {
    let mut remote = vec![false; tasks.len()];
    remote[0] = true;
    let queue = Arc::new(Mutex::new(Queue {
        scheduled: vec![false; tasks.len()],
        remote,
        ..Queue::default()
    }));
    let wakers: Vec<Waker> = (0..tasks.len())
        .map(|id| {
            let queue = queue.clone();
            Waker::from(Arc::new(TaskWaker { id, queue }))
        })
        .collect();
    for id in 0..tasks.len() {
        queue.lock().unwrap().wake(id);
    }
    for _ in 0..max_polls {
        if done() {
            return;
        }
        let id = queue.lock().unwrap().next().expect("every task waits");
        let mut cx = Context::from_waker(&wakers[id]);
        let _ = tasks[id].as_mut().poll(&mut cx);
        queue.lock().unwrap().running = None;
    }
    panic!("not done after {max_polls} polls");
}

/// A transport that counts its writes.
struct Counting<T>(T, Arc<AtomicUsize>);

impl<T: Transport> Transport for Counting<T> {
    type Error = T::Error;
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, T::Error>> {
        self.0.poll_read(cx, buf)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, T::Error>> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.poll_write(cx, buf)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        self.0.poll_flush(cx)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        self.0.poll_close(cx)
    }
}

/// Runs `callers` tasks, each making `calls` calls back to back, and
/// returns the client's writes.
fn client_writes(callers: usize, calls: u64) -> usize {
    let (client_io, server_io) = courier_mem::pair(1024 * 1024);
    let writes = Arc::new(AtomicUsize::new(0));
    let server = ServerBuilder::new().build(server_io, TestServer::new(Impl::default()));
    let (client, driver) = ClientBuilder::new().build(Counting(client_io, writes.clone()));
    let client = TestClient::new(client);
    let finished = Arc::new(AtomicUsize::new(0));
    let mut tasks: Vec<Task> = vec![
        Box::pin(async move {
            let _ = server.await;
        }),
        Box::pin(async move {
            let _ = driver.await;
        }),
    ];
    for c in 0..callers as u64 {
        let client = client.clone();
        let finished = finished.clone();
        tasks.push(Box::pin(async move {
            for i in 0..calls {
                assert_eq!(client.add(c, i).await, Ok(c + i));
            }
            finished.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let total = callers as u64 * calls;
    run_lifo(
        tasks,
        || finished.load(Ordering::Relaxed) == callers,
        total as usize * 20,
    );
    writes.load(Ordering::Relaxed)
}

#[test]
fn callers_answered_together_share_a_write() {
    const CALLERS: usize = 64;
    const CALLS: u64 = 50;
    let writes = client_writes(CALLERS, CALLS);
    let total = CALLERS * CALLS as usize;
    // Without the driver's yield, each caller's wake runs the driver at
    // once and every request is written alone (`writes` ≈ `total`).
    assert!(writes * 8 <= total, "{total} requests took {writes} writes");
}

#[test]
fn a_single_caller_is_written_at_once() {
    // With one call in flight the driver never yields: one write per call,
    // and the calls complete (nothing waits for a caller that never comes).
    let writes = client_writes(1, 200);
    assert_eq!(writes, 200);
}
