//! Helpers shared by the reliability tests and the fuzz harness: a manually
//! advanced clock, a deterministic single-threaded executor, and a small
//! service.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// The service the reliability tests and the fuzz harness serve.
#[courier::service]
pub trait Probe {
    /// Adds (wrapping).
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Returns the bytes it got.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// Returns `n` after yielding `n` times (waking itself).
    async fn yields(&self, n: u8) -> u8;
    /// Returns `len` bytes of `fill`.
    async fn fill(&self, fill: u8, len: u32) -> Vec<u8>;
    /// Panics when `panic` is true, else returns `id`.
    async fn maybe_panic(&self, id: u64, panic: bool) -> u64;
    /// Waits until the gate opens, then returns `id`.
    async fn gated(&self, id: u64) -> u64;
}

/// A gate that `gated` calls wait on.
#[derive(Default)]
pub struct Gate {
    open: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl Gate {
    /// Lets every waiting and later `gated` call finish.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        for waker in self.waiters.lock().unwrap().drain(..) {
            waker.wake();
        }
    }

    fn wait(&self) -> impl Future<Output = ()> + Send + '_ {
        std::future::poll_fn(move |cx| {
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            self.waiters.lock().unwrap().push(cx.waker().clone());
            if self.open.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// The implementation, with counters a test can read.
#[derive(Default)]
pub struct ProbeImpl {
    /// Handler invocations (any method).
    pub started: AtomicUsize,
    /// Gate of `gated`.
    pub gate: Gate,
    /// Largest `fill` reply allowed (keeps fuzzed requests small).
    pub max_fill: u32,
    /// Whether `maybe_panic` may really panic (never under the fuzzer,
    /// whose panic hook aborts even when the server catches the panic).
    pub panics: bool,
}

impl ProbeImpl {
    /// A shared implementation whose `fill` replies are at most `max_fill`.
    pub fn shared(max_fill: u32) -> Arc<Self> {
        Arc::new(ProbeImpl {
            max_fill,
            ..ProbeImpl::default()
        })
    }

    fn count(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
}

/// Returns `Pending` `n` times, waking its task each time.
pub fn yield_n(mut n: u32) -> impl Future<Output = ()> + Send {
    std::future::poll_fn(move |cx| {
        if n == 0 {
            return Poll::Ready(());
        }
        n -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// Lets a test keep an `Arc` to the implementation it serves.
pub struct Shared(pub Arc<ProbeImpl>);

impl Probe for Shared {
    async fn add(&self, a: u64, b: u64) -> u64 {
        self.0.count();
        a.wrapping_add(b)
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        self.0.count();
        data
    }
    async fn yields(&self, n: u8) -> u8 {
        self.0.count();
        yield_n(n.into()).await;
        n
    }
    async fn fill(&self, fill: u8, len: u32) -> Vec<u8> {
        self.0.count();
        vec![fill; len.min(self.0.max_fill) as usize]
    }
    async fn maybe_panic(&self, id: u64, panic: bool) -> u64 {
        self.0.count();
        assert!(
            !(panic && self.0.panics),
            "handler asked to panic (id {id})"
        );
        id
    }
    async fn gated(&self, id: u64) -> u64 {
        self.0.count();
        self.0.gate.wait().await;
        id
    }
}

/// A clock that moves only when told to: a deterministic [`courier::Timer`].
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<Mutex<ClockState>>,
}

#[derive(Default)]
struct ClockState {
    now: Duration,
    next_id: u64,
    /// Registered sleeps: id → (deadline, waker).
    sleepers: HashMap<u64, (Duration, Waker)>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current time.
    pub fn now(&self) -> Duration {
        self.inner.lock().unwrap().now
    }

    /// Moves the clock forward by `by`, waking the sleeps that are due.
    pub fn advance(&self, by: Duration) {
        let mut state = self.inner.lock().unwrap();
        state.now += by;
        let now = state.now;
        let due: Vec<u64> = state
            .sleepers
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        let wakers: Vec<Waker> = due
            .iter()
            .filter_map(|id| state.sleepers.remove(id))
            .map(|(_, waker)| waker)
            .collect();
        drop(state);
        for waker in wakers {
            waker.wake();
        }
    }

    /// The earliest time a registered sleep waits for.
    pub fn next_deadline(&self) -> Option<Duration> {
        let state = self.inner.lock().unwrap();
        state.sleepers.values().map(|(at, _)| *at).min()
    }
}

/// The sleep of [`ManualClock`].
pub struct ManualSleep {
    clock: ManualClock,
    id: u64,
    at: Duration,
}

impl Future for ManualSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.clock.inner.lock().unwrap();
        if state.now >= self.at {
            state.sleepers.remove(&self.id);
            return Poll::Ready(());
        }
        state
            .sleepers
            .insert(self.id, (self.at, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        if let Ok(mut state) = self.clock.inner.lock() {
            state.sleepers.remove(&self.id);
        }
    }
}

impl courier::Timer for ManualClock {
    type Sleep = ManualSleep;
    fn now(&self) -> Duration {
        ManualClock::now(self)
    }
    fn sleep_until(&self, deadline: Duration) -> ManualSleep {
        let mut state = self.inner.lock().unwrap();
        state.next_id += 1;
        ManualSleep {
            clock: self.clone(),
            id: state.next_id,
            at: deadline,
        }
    }
    fn reset(&self, sleep: Pin<&mut ManualSleep>, deadline: Duration) {
        let sleep = sleep.get_mut();
        sleep.at = deadline;
        let mut state = self.inner.lock().unwrap();
        if let Some(entry) = state.sleepers.get_mut(&sleep.id) {
            entry.0 = deadline;
        }
    }
}

/// A waker that records that it was woken.
#[derive(Default)]
pub struct Flag(AtomicBool);

impl Flag {
    /// A new flag and a waker that sets it.
    pub fn new_waker() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        (flag, waker)
    }

    /// Whether it was woken since the last [`take`](Self::take).
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Whether it was woken since the last call; clears it.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }

    /// Sets it, as a wake would.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A boxed task of [`Sim`].
pub type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// A deterministic single-threaded executor: polls a task only when its
/// waker fired, and tells when nothing can make progress any more (so a lost
/// wake-up shows up as a stall, not a hang).
#[derive(Default)]
pub struct Sim<'a> {
    tasks: Vec<Option<(Task<'a>, Arc<Flag>, Waker)>>,
}

impl<'a> Sim<'a> {
    /// An executor with no tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// An executor running a connection's two ends (their results
    /// dropped): a server and a client driver, say.
    pub fn serving<A: Future + 'a, B: Future + 'a>(one: A, other: B) -> Self {
        let mut sim = Self::new();
        sim.spawn(async move {
            let _ = one.await;
        });
        sim.spawn(async move {
            let _ = other.await;
        });
        sim
    }

    /// Adds a task; it is polled at the next run.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + 'a) {
        let (flag, waker) = Flag::new_waker();
        flag.set();
        self.tasks.push(Some((Box::pin(task), flag, waker)));
    }

    /// Tasks that have not finished.
    pub fn live(&self) -> usize {
        self.tasks.iter().filter(|t| t.is_some()).count()
    }

    /// Polls woken tasks until none is woken any more, at most `max_rounds`
    /// rounds (panics past that: something spins). Returns the rounds run.
    pub fn run_until_stalled(&mut self, max_rounds: usize) -> usize {
        match self.try_run_until_stalled(max_rounds) {
            Ok(rounds) => rounds,
            Err(()) => panic!("tasks still busy after {max_rounds} rounds"),
        }
    }

    /// Like [`run_until_stalled`](Self::run_until_stalled), but returns
    /// `Err(())` instead of panicking when tasks are still busy after
    /// `max_rounds` rounds (so a caller can stop early and report).
    pub fn try_run_until_stalled(&mut self, max_rounds: usize) -> Result<usize, ()> {
        for round in 0..max_rounds {
            let mut polled = false;
            for slot in &mut self.tasks {
                let Some((task, flag, waker)) = slot else {
                    continue;
                };
                if !flag.take() {
                    continue;
                }
                polled = true;
                let mut cx = Context::from_waker(waker);
                if task.as_mut().poll(&mut cx).is_ready() {
                    *slot = None;
                }
            }
            if !polled {
                return Ok(round);
            }
        }
        Err(())
    }
}

/// The server side of the probe service over `imp`.
pub fn service(imp: &Arc<ProbeImpl>) -> ProbeServer<Shared> {
    ProbeServer::new(Shared(imp.clone()))
}

/// Where a task run by [`record`] leaves its output.
pub type Slot<T> = Rc<RefCell<Option<T>>>;

/// Runs a future inside a [`Sim`] and keeps its output for the test.
pub fn record<'a, F: Future + 'a>(sim: &mut Sim<'a>, future: F) -> Slot<F::Output> {
    let slot = Rc::new(RefCell::new(None));
    let out = slot.clone();
    sim.spawn(async move {
        *out.borrow_mut() = Some(future.await);
    });
    slot
}

/// One frame's bytes: length prefix, `header`, then `body` as given.
pub fn frame(header: courier::wire::Header, body: &[u8]) -> Vec<u8> {
    let mut head = [0u8; courier::wire::MAX_HEADER_LEN];
    let n = header.encode(&mut head).unwrap();
    let mut out = ((n + body.len()) as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(body);
    out
}

/// Postcard varints (LEB128) of `values`, back to back.
pub fn varints(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in values {
        let mut n = v;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    out
}
