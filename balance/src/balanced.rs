//! The balanced channel: [`Balanced`] handles and their builder.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use courier::{CallError, CallStream, Channel, Client, MethodInfo, Notify, Timer, Unsent, Upload};
use courier_registry::{Discover, DiscoverError};
use futures_util::task::AtomicWaker;
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::budget::RetryBudget;
use crate::call::{BalancedCall, MAX_ATTEMPTS};
use crate::driver::{BalancedDriver, Connector};
use crate::ejection::Ejection;
use crate::load::{whole_nanos, DEFAULT_DECAY};
use crate::rng::Rng;
use crate::state::{Picked, Settings, State};
use crate::stats::EndpointStats;
use crate::strategy::{PowerOfTwoChoices, Strategy};

/// The default [`BalancedBuilder::resync_grace`].
const DEFAULT_RESYNC_GRACE: Duration = Duration::from_secs(5);

/// What the handles, calls and driver share.
pub(crate) struct Inner<Tm> {
    state: Mutex<State>,
    pub(crate) timer: Tm,
    pub(crate) max_attempts: u32,
    pub(crate) max_wait: Duration,
    /// Live `Balanced` handles.
    pub(crate) handles: AtomicUsize,
    /// The driver's task, woken when the last handle is dropped.
    pub(crate) driver: AtomicWaker,
    /// The clock, in nanoseconds, when the driver last began a poll. The
    /// connections' drivers run inside it, so a reply was delivered at or
    /// after the poll that delivered it began: a call's end reads this
    /// instead of the clock.
    polled_at: AtomicU64,
    /// The driver's polls so far: a pick's [turn](crate::Pick::turn).
    turns: AtomicU64,
    /// The clock (nanoseconds) read by the first call of turn
    /// `clock_turn - 1` (0: none yet), for the later calls of that turn.
    turn_clock: AtomicU64,
    clock_turn: AtomicU64,
}

impl<Tm> Inner<Tm> {
    /// Runs `f` under the table's lock (never held across an await or
    /// around user code other than the strategy).
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    /// The driver begins a poll at `now`: a new turn.
    pub(crate) fn polled(&self, now: Duration) {
        self.polled_at
            .fetch_max(whole_nanos(now), Ordering::Relaxed);
        self.turns.fetch_add(1, Ordering::Relaxed);
    }

    /// The driver's current turn.
    pub(crate) fn turn(&self) -> u64 {
        self.turns.load(Ordering::Relaxed)
    }
}

impl<Tm: Timer> Inner<Tm> {
    /// The clock for a call without a deadline starting in `turn`: read by
    /// the turn's first call, reused by the later ones.
    ///
    /// The calls of a turn are written together, at the driver's next
    /// poll, so their round trips all begin then: one reading for all of
    /// them measures each from the same start (a reading per call would
    /// count less of the wait for that poll the later the call). A call
    /// that starts an attempt wakes the driver, which ends the turn; a
    /// turn outlives an idle gap only if no call in it sent anything (then
    /// a reused reading would start a call that much early), so a call
    /// that picks no endpoint clears the turn's reading. A call with a
    /// deadline always reads the clock.
    pub(crate) fn turn_now(&self, turn: u64) -> Duration {
        let tag = turn.wrapping_add(1);
        if self.clock_turn.load(Ordering::Acquire) == tag {
            return Duration::from_nanos(self.turn_clock.load(Ordering::Relaxed));
        }
        let now = self.timer.now();
        self.turn_clock.store(whole_nanos(now), Ordering::Relaxed);
        self.clock_turn.store(tag, Ordering::Release);
        now
    }

    /// The next call reads the clock (a call of this turn sent nothing).
    pub(crate) fn forget_turn_now(&self) {
        self.clock_turn.store(0, Ordering::Release);
    }

    /// When the reply of an attempt started at `started` was delivered
    /// (nanoseconds on the clock): the start of the driver poll that
    /// delivered it, or the clock now if no poll began since the attempt
    /// started (the reply came another way, or the poll had begun before
    /// it on another thread).
    pub(crate) fn reply_time(&self, started: u64) -> u64 {
        let polled = self.polled_at.load(Ordering::Relaxed);
        if polled >= started {
            polled
        } else {
            whole_nanos(self.timer.now())
        }
    }
}

/// A channel over a discovered set of endpoints: each call goes to one
/// endpoint chosen by a [`Strategy`], and is re-sent on another when its
/// failure allows (see [`retry`](crate::retry)).
///
/// Cheap to clone, `Send` and `Sync`. A typed client works over it as over
/// one connection: `CalcClient::new(balanced)`. The [`BalancedDriver`]
/// built with it must be polled for anything to happen; it finishes when
/// every handle is dropped (after the calls in flight).
pub struct Balanced<Tm: Timer> {
    pub(crate) inner: Arc<Inner<Tm>>,
    pub(crate) key: Option<u64>,
}

impl<Tm: Timer> Balanced<Tm> {
    /// A builder with default settings; `timer` is the clock of latency
    /// estimates, ejections, reconnect backoff and call timeouts.
    pub fn builder(timer: Tm) -> BalancedBuilder<Tm> {
        BalancedBuilder::new(timer)
    }

    /// A handle whose calls carry routing `key` (for
    /// [`ConsistentHash`](crate::ConsistentHash); other strategies ignore
    /// it). See [`hash_key`](crate::hash_key) to make one from bytes.
    pub fn with_hash_key(&self, key: u64) -> Self {
        let mut handle = self.clone();
        handle.key = Some(key);
        handle
    }

    /// Every endpoint's state and counters now.
    pub fn endpoints(&self) -> Vec<EndpointStats> {
        let now = self.inner.timer.now();
        self.inner.with(|s| s.stats(now))
    }

    /// Why discovery failed last, if its last item was an error (the
    /// balancer keeps the endpoints it knows meanwhile).
    pub fn discovery_error(&self) -> Option<DiscoverError> {
        self.inner.with(|s| s.discovery_error.clone())
    }

    /// Whole retries the budget allows now.
    pub fn retry_budget(&self) -> u64 {
        self.inner.with(|s| s.budget_available())
    }

    /// Picks an endpoint for a call that is not re-sent (streams,
    /// notifications): counts it as a call but not in flight.
    fn pick_once(&self) -> Result<Client, CallError> {
        let now = self.inner.timer.now();
        let turn = self.inner.turn();
        let picked = self
            .inner
            .with(|s| s.pick(now, turn, self.key, &[], false, None));
        match picked {
            Picked::To(link, _) => {
                link.load.ended();
                Ok(link.client.clone())
            }
            _ => Err(CallError::NotSent(Unsent::NoEndpoint)),
        }
    }
}

impl<Tm: Timer> Clone for Balanced<Tm> {
    fn clone(&self) -> Self {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        Balanced {
            inner: self.inner.clone(),
            key: self.key,
        }
    }
}

impl<Tm: Timer> Drop for Balanced<Tm> {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.driver.wake();
        }
    }
}

impl<Tm: Timer> fmt::Debug for Balanced<Tm> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balanced")
            .field("endpoints", &self.endpoints().len())
            .field("key", &self.key)
            .finish()
    }
}

/// Configures and builds a [`Balanced`] channel and its driver.
#[must_use]
pub struct BalancedBuilder<Tm> {
    timer: Tm,
    strategy: Box<dyn Strategy>,
    budget: RetryBudget,
    ejection: Ejection,
    max_attempts: u32,
    max_wait: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    decay: Duration,
    resync_grace: Duration,
    rng: Option<Rng>,
}

impl<Tm: Timer> BalancedBuilder<Tm> {
    /// Defaults: [`PowerOfTwoChoices`], the default [`RetryBudget`] (20 %,
    /// burst 100), the default [`Ejection`], 3 attempts per call, 5 s of
    /// waiting for a first endpoint, reconnects after 100 ms doubling to
    /// 5 s, a latency decay of 10 s, a resync grace of 5 s.
    pub fn new(timer: Tm) -> Self {
        BalancedBuilder {
            timer,
            strategy: Box::new(PowerOfTwoChoices::new()),
            budget: RetryBudget::default(),
            ejection: Ejection::default(),
            max_attempts: 3,
            max_wait: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            decay: DEFAULT_DECAY,
            resync_grace: DEFAULT_RESYNC_GRACE,
            rng: None,
        }
    }

    /// How each call's endpoint is chosen.
    pub fn strategy(mut self, strategy: impl Strategy) -> Self {
        self.strategy = Box::new(strategy);
        self
    }

    /// The bucket that bounds retries which may add load.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// When endpoints are ejected.
    pub fn ejection(mut self, ejection: Ejection) -> Self {
        self.ejection = ejection;
        self
    }

    /// At most `n` attempts per call, the first included (clamped to
    /// `1..=`[`MAX_ATTEMPTS`]; 1 never re-sends).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.clamp(1, MAX_ATTEMPTS);
        self
    }

    /// How long a call waits for an endpoint while discovery has not
    /// answered yet or endpoints are connecting (its own timeout, if
    /// shorter, wins); then it fails with
    /// [`NotSent(NoEndpoint)`](Unsent::NoEndpoint).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// A dial that failed (or a connection that ended) is retried after
    /// `min`, doubling per failure up to `max`.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// The latency estimate's decay period (see [`load`](crate::load)).
    pub fn latency_decay(mut self, decay: Duration) -> Self {
        self.decay = decay;
        self
    }

    /// How long an endpoint with a ready connection stays when a
    /// [`Resync`](courier_registry::SnapshotKind::Resync) snapshot leaves
    /// it out (default 5 s; zero removes it at once).
    ///
    /// A registry that restarted answers a resuming watch with a resync of
    /// whatever registered again so far, often nothing: its instances come
    /// back one by one within their lease TTL. Endpoints kept through the
    /// grace go on serving; an `Added` (or any event naming them) ends the
    /// grace without touching the connection, a `Removed` removes them, and
    /// the grace's end removes those discovery never named again. Give it
    /// at least the instances' TTL plus their registration backoff.
    pub fn resync_grace(mut self, grace: Duration) -> Self {
        self.resync_grace = grace;
        self
    }

    /// Seeds the strategies' random numbers, so that picks replay.
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Some(Rng::seeded(seed));
        self
    }

    /// The channel, and the driver that must be polled for it to work:
    /// it follows `discover` and dials each endpoint with `connector`.
    pub fn build<D, C>(self, discover: D, connector: C) -> (Balanced<Tm>, BalancedDriver<D, C, Tm>)
    where
        D: Discover,
        C: Connector,
        Tm: Clone,
    {
        let settings = Settings {
            ejection: self.ejection,
            decay: self.decay,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            resync_grace: self.resync_grace,
        };
        let rng = self.rng.unwrap_or_else(Rng::from_entropy);
        let state = State::new(self.strategy, rng, self.budget, settings);
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            timer: self.timer.clone(),
            max_attempts: self.max_attempts,
            max_wait: self.max_wait,
            handles: AtomicUsize::new(1),
            driver: AtomicWaker::new(),
            polled_at: AtomicU64::new(0),
            turns: AtomicU64::new(0),
            turn_clock: AtomicU64::new(0),
            clock_turn: AtomicU64::new(0),
        });
        let driver = BalancedDriver::new(inner.clone(), discover, connector, self.timer);
        (Balanced { inner, key: None }, driver)
    }
}

/// A stream (or upload, or notification) through a [`Balanced`] channel:
/// the endpoint's own, or the error that no endpoint was available. Not
/// re-sent on failure.
#[derive(Debug)]
pub enum OneEndpoint<T> {
    /// On the endpoint it was sent to.
    Sent(T),
    /// No endpoint was available ([`Unsent::NoEndpoint`]).
    Failed(Option<CallError>),
}

impl<T> OneEndpoint<T> {
    fn new(client: Result<Client, CallError>, open: impl FnOnce(Client) -> T) -> Self {
        match client {
            Ok(client) => OneEndpoint::Sent(open(client)),
            Err(error) => OneEndpoint::Failed(Some(error)),
        }
    }
}

impl<F: Future<Output = Result<R, CallError>> + Unpin, R> Future for OneEndpoint<F> {
    type Output = Result<R, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            OneEndpoint::Sent(inner) => Pin::new(inner).poll(cx),
            OneEndpoint::Failed(error) => {
                Poll::Ready(Err(error.take().unwrap_or(CallError::Closed)))
            }
        }
    }
}

impl<S: Stream<Item = Result<T, CallError>> + Unpin, T> Stream for OneEndpoint<S> {
    type Item = Result<T, CallError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            OneEndpoint::Sent(inner) => Pin::new(inner).poll_next(cx),
            OneEndpoint::Failed(error) => Poll::Ready(error.take().map(Err)),
        }
    }
}

impl<Tm: Timer> Channel for Balanced<Tm> {
    type Call<'a, Req, Resp>
        = BalancedCall<'a, Req, Resp, Tm>
    where
        Self: 'a,
        Req: Serialize + 'a,
        Resp: DeserializeOwned + 'a;
    type CallStream<'a, Req, T>
        = OneEndpoint<CallStream<'a, Req, T>>
    where
        Self: 'a,
        Req: Serialize + 'a,
        T: DeserializeOwned + 'a;
    type Upload<'a, Req, Resp>
        = OneEndpoint<Upload<'a, Req, Resp>>
    where
        Self: 'a,
        Req: Serialize + 'a,
        Resp: DeserializeOwned + 'a;
    type Notify<'a>
        = OneEndpoint<Notify<'static>>
    where
        Self: 'a;

    fn call<'a, Req, Resp>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        timeout: Option<Duration>,
    ) -> Self::Call<'a, Req, Resp>
    where
        Req: Serialize + 'a,
        Resp: DeserializeOwned + 'a,
    {
        BalancedCall::new(self, method, request, timeout)
    }

    fn server_stream<'a, Req, T>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        timeout: Option<Duration>,
    ) -> Self::CallStream<'a, Req, T>
    where
        Req: Serialize + 'a,
        T: DeserializeOwned + 'a,
    {
        OneEndpoint::new(self.pick_once(), |client| {
            client
                .into_server_stream(method.key, request)
                .with_optional_timeout(timeout)
        })
    }

    fn bidi_stream<'a, Req, S, T>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        items: S,
        timeout: Option<Duration>,
    ) -> Self::CallStream<'a, Req, T>
    where
        Req: Serialize + 'a,
        S: Stream + Send + 'a,
        S::Item: Serialize,
        T: DeserializeOwned + 'a,
    {
        OneEndpoint::new(self.pick_once(), |client| {
            client
                .into_bidi_stream(method.key, request, items)
                .with_optional_timeout(timeout)
        })
    }

    fn client_stream<'a, Req, S, Resp>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        items: S,
        timeout: Option<Duration>,
    ) -> Self::Upload<'a, Req, Resp>
    where
        Req: Serialize + 'a,
        S: Stream + Send + 'a,
        S::Item: Serialize,
        Resp: DeserializeOwned + 'a,
    {
        OneEndpoint::new(self.pick_once(), |client| {
            client
                .into_client_stream(method.key, request, items)
                .with_optional_timeout(timeout)
        })
    }

    fn notify<Req: Serialize>(
        &self,
        method: &'static MethodInfo,
        request: &Req,
    ) -> Self::Notify<'_> {
        OneEndpoint::new(self.pick_once(), |client| {
            client.into_notify(method.key, request)
        })
    }
}
