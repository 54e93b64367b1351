//! The balancer's table of endpoints, shared by the handles, the calls and
//! the driver under one lock. Nothing here does I/O, runs user code
//! (beyond the strategy) or waits.
//!
//! A call takes the lock once, to pick. Its end takes it only for a
//! failure, or for a success on an endpoint with a failure record: calls
//! in flight and latency are each connection's [`Load`], in atomics that
//! the call reaches through the [`Link`] it holds.

use std::mem;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use courier::{CallError, Client, RemoteError, Unsent};
use courier_registry::{Change, DiscoverError, Endpoint, EndpointSet, Event, SnapshotKind};

use crate::budget::RetryBudget;
use crate::ejection::{Ejection, Outlier};
use crate::load::{Load, PeakEwma, DEFAULT_RTT};
use crate::rng::Rng;
use crate::stats::{ConnectionStatus, EndpointStats};
use crate::strategy::{Candidate, Pick, Strategy};

/// Settings the table applies.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) ejection: Ejection,
    pub(crate) decay: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) resync_grace: Duration,
}

pub(crate) enum Conn {
    Connecting,
    Ready(Arc<Link>),
    /// Down; dialled again at `retry_at`.
    Down {
        retry_at: Duration,
    },
}

/// A ready endpoint's connection as its calls hold it: the client, and the
/// load they update as they end (the same as the endpoint's candidate's
/// while this connection is its current one). A call keeps it by `Arc`
/// (see [`Client::call_held`]), so the connection stays open until the
/// calls on it are done.
pub(crate) struct Link {
    pub(crate) id: u64,
    /// The instance's name, for events.
    pub(crate) instance: String,
    pub(crate) client: Client,
    pub(crate) load: Arc<Load>,
}

impl AsRef<Client> for Link {
    fn as_ref(&self) -> &Client {
        &self.client
    }
}

/// One endpoint; `State::candidates` holds its strategy-facing half at the
/// same index.
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) endpoint: Endpoint,
    pub(crate) conn: Conn,
    /// Failed connection attempts in a row (for the backoff).
    dial_failures: u32,
    outlier: Outlier,
    calls: u64,
    failures: u64,
}

/// What a call's pick found.
pub(crate) enum Picked {
    /// Send it here (the endpoint's connection, its load already counting
    /// the attempt); whether this attempt is its probe after an ejection.
    To(Arc<Link>, bool),
    /// Nothing available yet, but an endpoint is connecting or discovery
    /// has not answered: wait (the waker is registered).
    Wait,
    /// Nothing available.
    NoEndpoint,
    /// The retry needed a token and the budget had none.
    BudgetExhausted,
}

pub(crate) struct State {
    pub(crate) candidates: Vec<Candidate>,
    pub(crate) entries: Vec<Entry>,
    strategy: Box<dyn Strategy>,
    rng: Rng,
    budget: RetryBudget,
    settings: Settings,
    set: EndpointSet,
    /// Instances a resync snapshot left out but whose connections were
    /// ready: kept in `set` until the deadline unless discovery names them.
    lingering: Vec<(String, Duration)>,
    next_id: u64,
    /// Availability must be recomputed (set changed, connection changed,
    /// an ejection started) …
    dirty: bool,
    /// … or once the clock reaches this (an ejection ends).
    recheck_at: Option<Duration>,
    /// Discovery delivered its first event, or ended.
    pub(crate) started: bool,
    /// The driver stopped: nothing will become available.
    pub(crate) closed: bool,
    /// Calls waiting for an endpoint.
    waiters: Vec<Waker>,
    pub(crate) discovery_error: Option<DiscoverError>,
}

impl State {
    pub(crate) fn new(
        strategy: Box<dyn Strategy>,
        rng: Rng,
        budget: RetryBudget,
        settings: Settings,
    ) -> Self {
        State {
            candidates: Vec::new(),
            entries: Vec::new(),
            strategy,
            rng,
            budget,
            settings,
            set: EndpointSet::new(),
            lingering: Vec::new(),
            next_id: 1,
            dirty: true,
            recheck_at: None,
            started: false,
            closed: false,
            waiters: Vec::new(),
            discovery_error: None,
        }
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.entries.iter().position(|e| e.id == id)
    }

    /// Recomputes who is available, if anything changed since.
    #[inline]
    fn refresh(&mut self, now: Duration) {
        if self.dirty || self.recheck_at.is_some_and(|at| at <= now) {
            self.recompute(now);
        }
    }

    #[cold]
    fn recompute(&mut self, now: Duration) {
        self.dirty = false;
        self.recheck_at = None;
        let mut any = false;
        for (entry, c) in self.entries.iter().zip(&mut self.candidates) {
            let ready = matches!(entry.conn, Conn::Ready(_)) && c.weight > 0;
            c.available = ready && !entry.outlier.is_ejected(now);
            any |= c.available;
            if let Some(until) = entry.outlier.ejected_until.filter(|&u| now < u) {
                self.recheck_at = Some(self.recheck_at.map_or(until, |at| at.min(until)));
            }
        }
        if !any {
            // Every connected endpoint is ejected: a cluster-wide fault is
            // not an outlier; use them all.
            for (entry, c) in self.entries.iter().zip(&mut self.candidates) {
                c.available = matches!(entry.conn, Conn::Ready(_)) && c.weight > 0;
            }
        }
    }

    fn should_wait(&self) -> bool {
        !self.closed
            && (!self.started
                || self
                    .entries
                    .iter()
                    .any(|e| matches!(e.conn, Conn::Connecting)))
    }

    /// [`pick`](Self::pick) for a call's first attempt: nothing tried, no
    /// budget token needed. The common case, kept short.
    #[inline]
    pub(crate) fn pick_first(
        &mut self,
        now: Duration,
        turn: u64,
        key: Option<u64>,
        waker: &Waker,
    ) -> Picked {
        if self.closed {
            return Picked::NoEndpoint;
        }
        self.refresh(now);
        match self.choose(now, turn, key) {
            Some(i) => {
                self.budget.deposit();
                self.take(i, now)
            }
            None => self.none_available(Some(waker)),
        }
    }

    /// Picks an endpoint for one attempt, not one of `tried`. A retry that
    /// may add load (`budgeted`) takes a token from the budget; a first
    /// attempt deposits one share. The picked endpoint counts the attempt in
    /// flight until the attempt ends ([`Load::ended`]). `turn` is the
    /// driver's (see [`Pick::turn`]).
    pub(crate) fn pick(
        &mut self,
        now: Duration,
        turn: u64,
        key: Option<u64>,
        tried: &[u64],
        budgeted: bool,
        waker: Option<&Waker>,
    ) -> Picked {
        if self.closed {
            return Picked::NoEndpoint;
        }
        self.refresh(now);
        let mut hidden = 0usize;
        for &id in tried {
            if let Some(i) = self.index_of(id) {
                if let Some(c) = self.candidates.get_mut(i).filter(|c| c.available) {
                    c.available = false;
                    hidden += 1;
                }
            }
        }
        let chosen = self.choose(now, turn, key);
        if hidden > 0 {
            // The tried ones were available: let the next refresh restore
            // them.
            self.dirty = true;
        }
        let Some(i) = chosen else {
            return self.none_available(waker);
        };
        if budgeted && !self.budget.withdraw() {
            return Picked::BudgetExhausted;
        }
        if tried.is_empty() {
            self.budget.deposit();
        }
        self.take(i, now)
    }

    /// The strategy's choice among the available candidates (the first
    /// available one if it names another).
    #[inline]
    fn choose(&mut self, now: Duration, turn: u64, key: Option<u64>) -> Option<usize> {
        if let [only] = self.candidates.as_slice() {
            // Any strategy's choice (and no dynamic call on the common
            // single-endpoint path).
            return only.available.then_some(0);
        }
        let mut pick = Pick {
            now,
            key,
            rng: &mut self.rng,
            turn,
        };
        let chosen = self.strategy.pick(&self.candidates, &mut pick);
        match chosen {
            Some(i) if self.candidates.get(i).is_some_and(|c| c.available) => Some(i),
            _ => self.candidates.iter().position(|c| c.available),
        }
    }

    /// No endpoint is available: wait (registering `waker`) if one may
    /// become so.
    #[cold]
    fn none_available(&mut self, waker: Option<&Waker>) -> Picked {
        if !self.should_wait() {
            return Picked::NoEndpoint;
        }
        if let Some(waker) = waker {
            if !self.waiters.iter().any(|w| w.will_wake(waker)) {
                self.waiters.push(waker.clone());
            }
        }
        Picked::Wait
    }

    /// Sends an attempt to entry `i`: counts it, in flight and in the
    /// entry's calls, and starts a probe if the entry is back from an
    /// ejection.
    #[inline]
    fn take(&mut self, i: usize, now: Duration) -> Picked {
        let Some(entry) = self.entries.get_mut(i) else {
            return Picked::NoEndpoint;
        };
        let Conn::Ready(link) = &entry.conn else {
            return Picked::NoEndpoint;
        };
        link.load.started();
        entry.calls = entry.calls.saturating_add(1);
        let probe = entry.outlier.start_probe(now);
        Picked::To(link.clone(), probe)
    }

    /// A call on endpoint `id` succeeded while its record showed failures
    /// ([`Load::is_failing`]): the record is cleared.
    pub(crate) fn succeeded(&mut self, id: u64) {
        let Some(i) = self.index_of(id) else {
            // Removed by discovery while the call drained.
            return;
        };
        if let (Some(entry), Some(c)) = (self.entries.get_mut(i), self.candidates.get(i)) {
            entry.outlier.success();
            c.load.failing.store(false, Ordering::Relaxed);
        }
    }

    /// An attempt on endpoint `id` failed after `rtt` with `error` (its
    /// load already counts it ended).
    ///
    /// Returns the instance's name and, if this failure ejected it, the
    /// ejection's end (for an event outside the lock).
    pub(crate) fn failed(
        &mut self,
        id: u64,
        now: Duration,
        rtt: Duration,
        error: CallError,
    ) -> Option<(String, Option<Duration>)> {
        let i = self.index_of(id)?;
        let (Some(entry), Some(c)) = (self.entries.get_mut(i), self.candidates.get(i)) else {
            return None;
        };
        if !is_endpoint_failure(&error) {
            return Some((entry.endpoint.instance.clone(), None));
        }
        if error == CallError::DeadlineExceeded {
            c.load.latency.observe(rtt, now);
        }
        entry.failures = entry.failures.saturating_add(1);
        let ejected = entry.outlier.failure(&self.settings.ejection, now);
        c.load.failing.store(true, Ordering::Relaxed);
        if ejected {
            self.dirty = true;
        }
        let until = ejected.then(|| entry.outlier.ejected_until.unwrap_or(now));
        Some((entry.endpoint.instance.clone(), until))
    }

    /// Applies a discovery event at `now`; returns the endpoints to dial,
    /// and the entries that left (for the caller to drop outside the lock).
    ///
    /// A [`Resync`](SnapshotKind::Resync) snapshot that leaves out an
    /// instance whose connection is ready keeps it for the resync grace: a
    /// restarted registry is empty until its instances register again, and
    /// registry loss must not be service loss. Any event that names the
    /// instance ends its grace; the grace's end removes it.
    pub(crate) fn apply(
        &mut self,
        event: &Event,
        now: Duration,
    ) -> (Vec<(u64, Endpoint)>, Vec<Entry>) {
        self.started = true;
        self.discovery_error = None;
        let mut changed = self.set.apply(event);
        match &event.change {
            Change::Snapshot { endpoints, kind } => {
                self.lingering
                    .retain(|(i, _)| !endpoints.iter().any(|e| e.instance == *i));
                if *kind == SnapshotKind::Resync && !self.settings.resync_grace.is_zero() {
                    changed |= self.keep_left_out(event.revision, now);
                } else {
                    self.lingering.clear();
                }
            }
            Change::Added(e) | Change::Updated(e) => {
                self.lingering.retain(|(i, _)| *i != e.instance)
            }
            Change::Removed { instance } => self.lingering.retain(|(i, _)| i != instance),
        }
        if !changed {
            return (Vec::new(), Vec::new());
        }
        self.reconcile()
    }

    /// Puts back into the set the ready entries a resync left out; returns
    /// whether any was.
    fn keep_left_out(&mut self, revision: u64, now: Duration) -> bool {
        let until = now.saturating_add(self.settings.resync_grace);
        let mut kept = false;
        for entry in &self.entries {
            let instance = &entry.endpoint.instance;
            if self.set.get(instance).is_some() || !matches!(entry.conn, Conn::Ready(_)) {
                continue;
            }
            let change = Change::Added(entry.endpoint.clone());
            self.set.apply(&Event { revision, change });
            if !self.lingering.iter().any(|(i, _)| i == instance) {
                self.lingering.push((instance.clone(), until));
            }
            kept = true;
        }
        kept
    }

    /// Ends the resync grace of the instances whose deadline passed: they
    /// leave. Returns the entries that left (dropped outside the lock).
    pub(crate) fn expire_lingering(&mut self, now: Duration) -> Vec<Entry> {
        let mut any = false;
        let revision = self.set.revision();
        for (instance, _) in self.lingering.iter().filter(|(_, until)| *until <= now) {
            let change = Change::Removed {
                instance: instance.clone(),
            };
            any |= self.set.apply(&Event { revision, change });
        }
        self.lingering.retain(|(_, until)| now < *until);
        if !any {
            return Vec::new();
        }
        self.reconcile().1
    }

    /// Brings the table in line with the discovered set: entries whose
    /// instance left (or moved to another address) are dropped — their
    /// calls in flight keep their own handles of the connection, which
    /// closes once they are done — and new ones are dialled.
    fn reconcile(&mut self) -> (Vec<(u64, Endpoint)>, Vec<Entry>) {
        let mut removed = Vec::new();
        let mut keep = Vec::with_capacity(self.entries.len());
        let mut keep_candidates = Vec::with_capacity(self.entries.len());
        for (entry, mut c) in mem::take(&mut self.entries)
            .into_iter()
            .zip(mem::take(&mut self.candidates))
        {
            match self.set.get(&entry.endpoint.instance) {
                Some(now) if now.address == entry.endpoint.address => {
                    c.weight = now.weight;
                    let mut entry = entry;
                    entry.endpoint = now.clone();
                    keep.push(entry);
                    keep_candidates.push(c);
                }
                _ => removed.push(entry),
            }
        }
        let mut dial = Vec::new();
        for endpoint in self.set.iter() {
            if keep
                .iter()
                .any(|e| e.endpoint.instance == endpoint.instance)
            {
                continue;
            }
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            let latency = PeakEwma::new(DEFAULT_RTT, self.settings.decay, Duration::ZERO);
            keep_candidates.push(Candidate {
                instance: endpoint.instance.clone(),
                weight: endpoint.weight,
                load: Arc::new(Load::new(latency, false)),
                available: false,
            });
            keep.push(Entry {
                id,
                endpoint: endpoint.clone(),
                conn: Conn::Connecting,
                dial_failures: 0,
                outlier: Outlier::default(),
                calls: 0,
                failures: 0,
            });
            dial.push((id, endpoint.clone()));
        }
        self.entries = keep;
        self.candidates = keep_candidates;
        self.strategy.update(&self.candidates);
        self.dirty = true;
        (dial, removed)
    }

    /// Discovery ended: the known set stays as it is.
    pub(crate) fn discovery_ended(&mut self) {
        self.started = true;
    }

    /// A dial of `id` succeeded. Returns the client back if the endpoint
    /// left meanwhile (the caller drops it, closing the connection).
    pub(crate) fn connected(&mut self, id: u64, client: Client, now: Duration) -> Option<Client> {
        let Some(i) = self.index_of(id) else {
            return Some(client);
        };
        let (Some(entry), Some(c)) = (self.entries.get_mut(i), self.candidates.get_mut(i)) else {
            return Some(client);
        };
        // A fresh connection starts with a fresh latency estimate and no
        // calls; the endpoint's failure record stays.
        let latency = PeakEwma::new(DEFAULT_RTT, self.settings.decay, now);
        let failing = entry.outlier != Outlier::default();
        let load = Arc::new(Load::new(latency, failing));
        c.load = load.clone();
        let instance = entry.endpoint.instance.clone();
        entry.conn = Conn::Ready(Arc::new(Link {
            id,
            instance,
            client,
            load,
        }));
        entry.dial_failures = 0;
        self.dirty = true;
        None
    }

    /// A dial of `id` failed, or its connection ended: down until a backoff
    /// passes.
    pub(crate) fn down(&mut self, id: u64, now: Duration, dial_failed: bool) {
        let Some(entry) = self.entries.iter_mut().find(|e| e.id == id) else {
            return;
        };
        if dial_failed {
            entry.dial_failures = entry.dial_failures.saturating_add(1);
            entry.failures = entry.failures.saturating_add(1);
        }
        let doublings = entry.dial_failures.saturating_sub(1).min(31);
        let backoff = self
            .settings
            .reconnect_min
            .saturating_mul(1 << doublings)
            .min(self.settings.reconnect_max.max(self.settings.reconnect_min));
        entry.conn = Conn::Down {
            retry_at: now.saturating_add(backoff),
        };
        self.dirty = true;
    }

    /// Endpoints whose backoff has passed: they are dialled again.
    pub(crate) fn due(&mut self, now: Duration) -> Vec<(u64, Endpoint)> {
        let mut dial = Vec::new();
        for entry in &mut self.entries {
            if let Conn::Down { retry_at } = entry.conn {
                if retry_at <= now {
                    entry.conn = Conn::Connecting;
                    dial.push((entry.id, entry.endpoint.clone()));
                }
            }
        }
        dial
    }

    /// When the driver must next wake up: to dial again, or to end a
    /// resync grace.
    pub(crate) fn next_wake(&self) -> Option<Duration> {
        let dials = self.entries.iter().filter_map(|e| match e.conn {
            Conn::Down { retry_at } => Some(retry_at),
            _ => None,
        });
        dials
            .chain(self.lingering.iter().map(|(_, until)| *until))
            .min()
    }

    /// Takes the waiting calls' wakers (woken outside the lock).
    pub(crate) fn take_waiters(&mut self) -> Vec<Waker> {
        mem::take(&mut self.waiters)
    }

    /// Every endpoint's numbers now.
    pub(crate) fn stats(&self, now: Duration) -> Vec<EndpointStats> {
        self.entries
            .iter()
            .zip(&self.candidates)
            .map(|(e, c)| EndpointStats {
                instance: e.endpoint.instance.clone(),
                address: e.endpoint.address.clone(),
                weight: e.endpoint.weight,
                connection: match e.conn {
                    Conn::Connecting => ConnectionStatus::Connecting,
                    Conn::Ready(_) => ConnectionStatus::Ready,
                    Conn::Down { retry_at } => ConnectionStatus::Down { retry_at },
                },
                in_flight: c.in_flight(),
                latency: Duration::from_nanos(c.latency_ns(now) as u64),
                calls: e.calls,
                failures: e.failures,
                consecutive_failures: e.outlier.consecutive,
                ejected_until: e.outlier.ejected_until.filter(|&until| now < until),
            })
            .collect()
    }

    /// Whole retries the budget allows now.
    pub(crate) fn budget_available(&self) -> u64 {
        self.budget.available()
    }

    /// The driver stopped: drop every connection, fail waiting calls.
    /// Returns the entries for the caller to drop outside the lock.
    pub(crate) fn close(&mut self) -> Vec<Entry> {
        self.closed = true;
        self.candidates.clear();
        self.strategy.update(&self.candidates);
        mem::take(&mut self.entries)
    }
}

/// Failures that count against an endpoint (toward its ejection): the
/// connection's, the server's refusals, and local timeouts (a partitioned
/// endpoint answers nothing). Not the caller's own (encoding, sizes).
fn is_endpoint_failure(error: &CallError) -> bool {
    matches!(
        error,
        CallError::NotSent(Unsent::Disconnected)
            | CallError::Connect(_)
            | CallError::ConnectionLost
            | CallError::Transport(_)
            | CallError::Protocol(_)
            | CallError::DeadlineExceeded
            | CallError::Remote(
                RemoteError::Overloaded | RemoteError::ShuttingDown | RemoteError::HandlerPanicked
            )
    )
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use courier_registry::Address;

    use super::*;
    use crate::strategy::PowerOfTwoChoices;

    const MS: Duration = Duration::from_millis(1);

    fn event(revision: u64, change: Change) -> Event {
        Event { revision, change }
    }

    /// A table over instances `i-0` .. `i-{n-1}`, each connected over an
    /// in-memory pair (the client drivers are never polled: picks only).
    fn table(n: usize, seed: u64) -> (State, Vec<courier_mem::MemTransport>) {
        let settings = Settings {
            ejection: Ejection {
                consecutive_failures: 1,
                base: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
            decay: crate::load::DEFAULT_DECAY,
            reconnect_min: MS,
            reconnect_max: MS,
            resync_grace: Duration::ZERO,
        };
        let strategy = Box::new(PowerOfTwoChoices::new());
        let mut state = State::new(
            strategy,
            Rng::seeded(seed),
            RetryBudget::default(),
            settings,
        );
        let endpoints = (0..n)
            .map(|i| Endpoint::new("s", format!("i-{i}"), Address::Unix(format!("m-{i}"))))
            .collect();
        let kind = SnapshotKind::Initial;
        let (dial, _) = state.apply(
            &event(1, Change::Snapshot { endpoints, kind }),
            Duration::ZERO,
        );
        let mut servers = Vec::new();
        for (id, _) in dial {
            let (client_io, server_io) = courier_mem::pair(1024);
            let (client, _driver) = Client::new(client_io);
            assert!(state.connected(id, client, Duration::ZERO).is_none());
            servers.push(server_io);
        }
        (state, servers)
    }

    fn instance_of(picked: &Picked) -> Option<String> {
        match picked {
            Picked::To(link, _) => Some(link.instance.clone()),
            _ => None,
        }
    }

    /// Ends the picked attempt (its load no longer counts it).
    fn end(picked: &Picked) {
        if let Picked::To(link, _) = picked {
            link.load.ended();
        }
    }

    #[test]
    fn the_first_attempts_pick_and_the_general_pick_choose_alike() {
        for n in [1, 2, 3, 7] {
            let (mut fast, _a) = table(n, 9);
            let (mut general, _b) = table(n, 9);
            let waker = Waker::noop();
            // Below the burst, so that every first attempt's deposit shows.
            for _ in 0..90 {
                assert!(fast.budget.withdraw() && general.budget.withdraw());
            }
            for call in 0..300u64 {
                // Turns of a few picks each; some calls end, some stay in
                // flight, so loads differ.
                let (turn, now) = (call / 4, MS * (call as u32));
                let a = fast.pick_first(now, turn, None, waker);
                let b = general.pick(now, turn, None, &[], false, Some(waker));
                assert_eq!(
                    instance_of(&a),
                    instance_of(&b),
                    "{n} endpoints, call {call}"
                );
                assert!(instance_of(&a).is_some());
                if call % 3 != 0 {
                    end(&a);
                    end(&b);
                }
            }
            // 10 tokens left, plus 20 % of 300 calls.
            assert_eq!(fast.budget_available(), 70);
            assert_eq!(general.budget_available(), 70);
            let calls = |s: &State| s.entries.iter().map(|e| e.calls).collect::<Vec<_>>();
            assert_eq!(calls(&fast), calls(&general));
            assert_eq!(calls(&fast).iter().sum::<u64>(), 300);
        }
    }

    #[test]
    fn the_next_first_pick_sees_an_ejection_a_removal_and_a_lost_connection() {
        let (mut state, _servers) = table(3, 4);
        let waker = Waker::noop();
        let id_of = |s: &State, name: &str| {
            s.entries
                .iter()
                .find(|e| e.endpoint.instance == name)
                .map(|e| e.id)
                .unwrap()
        };
        let picks = |s: &mut State, now: Duration| {
            (0..60u64)
                .map(|turn| {
                    let picked = s.pick_first(now, turn, None, waker);
                    end(&picked);
                    instance_of(&picked).unwrap()
                })
                .collect::<Vec<_>>()
        };
        assert!(picks(&mut state, Duration::ZERO).contains(&"i-0".to_string()));
        // One failure ejects i-0 for a second.
        let i0 = id_of(&state, "i-0");
        let failed = state.failed(i0, MS, MS, CallError::ConnectionLost);
        assert_eq!(
            failed,
            Some(("i-0".into(), Some(MS + Duration::from_secs(1))))
        );
        let seen = picks(&mut state, 2 * MS);
        assert!(!seen.contains(&"i-0".to_string()), "{seen:?}");
        // Discovery removes i-1: only i-2 is left while i-0 is ejected.
        let removed = Change::Removed {
            instance: "i-1".into(),
        };
        let (_, gone) = state.apply(&event(2, removed), 3 * MS);
        assert_eq!(gone.len(), 1);
        assert!(picks(&mut state, 3 * MS).iter().all(|i| i == "i-2"));
        // The ejection ends: the next pick that goes to i-0 is its probe.
        let later = Duration::from_secs(2);
        let probe = (0..60u64)
            .map(|turn| state.pick_first(later, 100 + turn, None, waker))
            .find(|p| instance_of(p).as_deref() == Some("i-0"))
            .expect("i-0 is picked again");
        assert!(matches!(probe, Picked::To(_, true)));
        // i-2's connection is lost: it is skipped at once.
        state.down(id_of(&state, "i-2"), later, false);
        let seen = picks(&mut state, later);
        assert!(seen.iter().all(|i| i == "i-0"), "{seen:?}");
    }

    #[test]
    fn a_single_endpoint_is_picked_only_while_connected() {
        let (mut state, _servers) = table(1, 1);
        let waker = Waker::noop();
        let picked = state.pick_first(Duration::ZERO, 0, None, waker);
        assert_eq!(instance_of(&picked).as_deref(), Some("i-0"));
        let id = state.entries[0].id;
        state.down(id, MS, false);
        // Down, and discovery answered: nothing to wait for.
        assert!(matches!(
            state.pick_first(MS, 1, None, waker),
            Picked::NoEndpoint
        ));
        // Dialled again: the call waits (its waker registered).
        assert_eq!(state.due(Duration::from_secs(1)).len(), 1);
        let waiting = state.pick_first(Duration::from_secs(1), 2, None, waker);
        assert!(matches!(waiting, Picked::Wait));
        assert_eq!(state.take_waiters().len(), 1);
        // An ejected single endpoint still serves (every one is ejected).
        let (mut state, _servers) = table(1, 1);
        let id = state.entries[0].id;
        let _ = state.failed(id, MS, MS, CallError::ConnectionLost);
        let picked = state.pick_first(2 * MS, 3, None, waker);
        assert_eq!(instance_of(&picked).as_deref(), Some("i-0"));
    }
}
