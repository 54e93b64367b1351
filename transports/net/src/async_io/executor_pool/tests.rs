use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, ThreadId};

use courier::Spawn;

use super::*;

fn here() -> ThreadId {
    thread::current().id()
}

#[test]
fn runs_every_task_to_completion() {
    let pool = ExecutorPool::new(3).unwrap();
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            pool.spawn(async move {
                // A task that waits once, so it is woken and polled again.
                futures_util::future::ready(()).await;
                async_io::Timer::after(std::time::Duration::from_millis(1)).await;
                i * 2
            })
        })
        .collect();
    let results: Vec<u64> = async_io::block_on(futures_util::future::join_all(tasks));
    assert_eq!(results, (0..100).map(|i| i * 2).collect::<Vec<_>>());
}

#[test]
fn the_spawner_spreads_tasks_over_the_threads_in_turn() {
    let pool = ExecutorPool::new(3).unwrap();
    let spawner = pool.spawner();
    let (tx, rx) = mpsc::channel();
    for i in 0..6 {
        let tx = tx.clone();
        spawner.spawn(Box::pin(async move {
            let index = Worker::current().map(|w| w.index());
            tx.send((i, here(), index)).unwrap();
        }));
    }
    let mut seen: Vec<_> = (0..6).map(|_| rx.recv().unwrap()).collect();
    seen.sort_by_key(|&(i, _, _)| i);
    let threads: HashSet<ThreadId> = seen.iter().map(|&(_, t, _)| t).collect();
    assert_eq!(threads.len(), 3, "{seen:?}");
    for (i, thread, index) in &seen {
        assert_eq!(*index, Some(i % 3));
        assert_eq!(
            *thread,
            seen[i % 3].1,
            "task {i} and task {} share a thread",
            i % 3
        );
        assert_ne!(*thread, here());
    }
    // `worker()` has its own turn, also from thread 0.
    assert_eq!(pool.worker().index(), 0);
    assert_eq!(pool.worker().index(), 1);
    assert_eq!(pool.worker().index(), 2);
    assert_eq!(pool.worker().index(), 0);
}

#[test]
fn a_worker_keeps_its_tasks_and_their_tasks_on_its_thread() {
    let pool = ExecutorPool::new(4).unwrap();
    let worker = pool.worker_at(2).unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            worker.spawn(async {
                let first = here();
                // Woken by the reactor, possibly on another thread's watch.
                async_io::Timer::after(std::time::Duration::from_millis(1)).await;
                let nested = Worker::current().unwrap().spawn(async { here() }).await;
                (first, here(), nested, Worker::current().unwrap().index())
            })
        })
        .collect();
    let results = async_io::block_on(futures_util::future::join_all(tasks));
    let thread = results[0].0;
    for (first, after_wait, nested, index) in results {
        assert_eq!(
            (first, after_wait, nested, index),
            (thread, thread, thread, 2)
        );
    }
    assert!(Worker::current().is_none(), "not a pool thread");
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn dropping_the_pool_stops_its_threads_and_drops_unfinished_tasks() {
    let pool = ExecutorPool::new(2).unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let (started_tx, started) = mpsc::channel();
    pool.spawn(async move {
        let _flag = flag;
        started_tx.send(()).unwrap();
        futures_util::future::pending::<()>().await;
    })
    .detach();
    started.recv().unwrap();
    let worker = pool.worker_at(1).unwrap();
    let spare = pool.spawner();
    drop(pool);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the pending task was dropped"
    );
    // Spawning on a dropped pool drops the future and cancels the task.
    let late = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(late.clone());
    let task = worker.spawn(async move {
        let _flag = flag;
    });
    assert!(late.load(Ordering::SeqCst));
    assert_eq!(async_io::block_on(task.fallible()), None);
    spare.spawn(Box::pin(async {}));
    assert!(format!("{worker:?}").contains("running: false"));
}

#[test]
fn dropping_the_pool_inside_its_own_task_does_not_deadlock() {
    let pool = ExecutorPool::new(2).unwrap();
    let worker = pool.worker_at(0).unwrap();
    let (tx, rx) = mpsc::channel::<ExecutorPool>();
    let task = worker.spawn(async move {
        let pool = rx.recv().unwrap();
        drop(pool);
        here()
    });
    tx.send(pool).unwrap();
    // The task ended before its thread stopped, so its output is kept.
    assert_ne!(async_io::block_on(task), here());
}

#[test]
fn a_panicking_task_reaches_its_handle_and_the_thread_goes_on() {
    let pool = ExecutorPool::new(1).unwrap();
    let worker = pool.worker();
    let panicking = worker.spawn(async { panic!("a handler bug") });
    let caught = panic::catch_unwind(AssertUnwindSafe(|| async_io::block_on(panicking)));
    let message = caught.unwrap_err();
    assert_eq!(message.downcast_ref::<&str>(), Some(&"a handler bug"));
    // A detached one too, then the same thread still runs tasks.
    let thread = async_io::block_on(worker.spawn(async { here() }));
    worker
        .spawn(async { panic!("a detached handler bug") })
        .detach();
    assert_eq!(async_io::block_on(worker.spawn(async { here() })), thread);
}

#[test]
fn thread_counts_saturate() {
    for (asked, got) in [(0, 1), (1, 1), (2, 2), (MAX_THREADS, MAX_THREADS)] {
        let pool = ExecutorPool::new(asked).unwrap();
        assert_eq!(pool.threads(), got, "asked {asked}");
        assert!(pool.worker_at(got - 1).is_some());
        assert!(pool.worker_at(got).is_none());
        // The last thread runs tasks.
        let task = pool.worker_at(got - 1).unwrap().spawn(async { 7 });
        assert_eq!(async_io::block_on(task), 7);
    }
    let pool = ExecutorPool::new(usize::MAX).unwrap();
    assert_eq!(pool.threads(), MAX_THREADS);
    drop(pool);
    assert!(ExecutorPool::per_core().unwrap().threads() >= 1);
}
