//! A deterministic world for registry tests: a virtual clock, a
//! single-threaded executor, and an in-memory network to a registry that
//! can crash, restart and be partitioned away.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use courier::client::ReconnectPolicy;
use courier::{ClientBuilder, ServerBuilder};
use courier_registry::{EmbeddedRegistry, RegistryClient, StoreConfig};
use futures::executor::{LocalPool, LocalSpawner};
use futures::future::{AbortHandle, Abortable};
use futures::task::LocalSpawnExt;
use futures::FutureExt;

/// A clock that moves only when told.
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<Mutex<ClockState>>,
}

#[derive(Default)]
struct ClockState {
    now: Duration,
    next_id: u64,
    sleepers: HashMap<u64, (Duration, Waker)>,
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let wakers: Vec<Waker> = {
            let mut state = self.inner.lock().unwrap();
            state.now += by;
            let now = state.now;
            let due: Vec<u64> = state
                .sleepers
                .iter()
                .filter(|(_, (at, _))| *at <= now)
                .map(|(id, _)| *id)
                .collect();
            due.iter()
                .filter_map(|id| state.sleepers.remove(id))
                .map(|(_, waker)| waker)
                .collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

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
        self.inner.lock().unwrap().now
    }
    fn sleep_until(&self, at: Duration) -> ManualSleep {
        let mut state = self.inner.lock().unwrap();
        state.next_id += 1;
        ManualSleep {
            clock: self.clone(),
            id: state.next_id,
            at,
        }
    }
    fn reset(&self, mut sleep: Pin<&mut ManualSleep>, at: Duration) {
        sleep.at = at;
        // Keep the waker: the owner may not poll again before the deadline.
        if let Some(entry) = self.inner.lock().unwrap().sleepers.get_mut(&sleep.id) {
            entry.0 = at;
        }
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Default)]
struct Net {
    registry: RefCell<Option<EmbeddedRegistry>>,
    /// Reachable: dials succeed.
    up: Cell<bool>,
    /// Every live server connection and the registry's expiry driver.
    connections: RefCell<Vec<AbortHandle>>,
    expiry: RefCell<Option<AbortHandle>>,
    dials: Cell<usize>,
}

/// The world: executor, clock, network, registry.
pub struct World {
    pub pool: LocalPool,
    pub spawner: LocalSpawner,
    pub clock: ManualClock,
    net: Rc<Net>,
}

impl World {
    pub fn new() -> Self {
        let pool = LocalPool::new();
        let spawner = pool.spawner();
        World {
            pool,
            spawner,
            clock: ManualClock::default(),
            net: Rc::default(),
        }
    }

    /// Starts (or restarts) the registry with `config`; the network is up.
    pub fn start_registry(&mut self, config: StoreConfig) -> EmbeddedRegistry {
        let (registry, driver) = EmbeddedRegistry::new(config, self.clock.clone());
        let (abort, registration) = AbortHandle::new_pair();
        self.spawner
            .spawn_local(Abortable::new(driver, registration).map(drop))
            .unwrap();
        *self.net.expiry.borrow_mut() = Some(abort);
        *self.net.registry.borrow_mut() = Some(registry.clone());
        self.net.up.set(true);
        self.run();
        registry
    }

    /// The registry process dies: every connection cut, its state gone.
    pub fn crash_registry(&mut self) {
        // Gone before the cut, so that no client reconnects to it.
        *self.net.registry.borrow_mut() = None;
        if let Some(expiry) = self.net.expiry.borrow_mut().take() {
            expiry.abort();
        }
        self.cut();
    }

    /// Cuts every open connection to the registry (it stays up).
    pub fn cut(&mut self) {
        for connection in self.net.connections.borrow_mut().drain(..) {
            connection.abort();
        }
        self.run();
    }

    /// Partitions the clients from the registry (cut and refuse dials) or
    /// heals the partition.
    pub fn partition(&mut self, apart: bool) {
        self.net.up.set(!apart);
        if apart {
            self.cut();
        }
    }

    pub fn dials(&self) -> usize {
        self.net.dials.get()
    }

    /// A reconnecting client of whichever registry runs now.
    pub fn client(&mut self) -> RegistryClient {
        let net = self.net.clone();
        let spawner = self.spawner.clone();
        let connect = move || {
            net.dials.set(net.dials.get() + 1);
            let registry = net.registry.borrow().clone();
            let Some(registry) = registry.filter(|_| net.up.get()) else {
                return std::future::ready(Err(io::Error::from(io::ErrorKind::ConnectionRefused)));
            };
            let (client_io, server_io) = courier_mem::pair(64 * 1024);
            let server = ServerBuilder::new().build(server_io, registry.connection());
            let (abort, registration) = AbortHandle::new_pair();
            spawner
                .spawn_local(Abortable::new(server, registration).map(drop))
                .unwrap();
            net.connections.borrow_mut().push(abort);
            std::future::ready(Ok(client_io))
        };
        let policy = ReconnectPolicy::new().backoff(ms(10), ms(40));
        let (client, driver) = ClientBuilder::new()
            .timer(self.clock.clone())
            .build_reconnecting(connect, policy);
        self.spawner.spawn_local(driver.map(drop)).unwrap();
        RegistryClient::new(client)
    }

    /// Runs every task until none can progress.
    pub fn run(&mut self) {
        self.pool.run_until_stalled();
    }

    /// Moves the clock forward by `by` in steps of `step`, running every
    /// task after each.
    pub fn advance_by(&mut self, by: Duration, step: Duration) {
        let mut left = by;
        while !left.is_zero() {
            let d = step.min(left);
            self.clock.advance(d);
            self.run();
            left -= d;
        }
    }

    /// Moves the clock forward in 1 ms steps.
    pub fn advance(&mut self, by: Duration) {
        self.advance_by(by, ms(1));
    }

    /// Runs `future` to completion as a task; panics if it stalls.
    pub fn block_on<T: 'static>(&mut self, future: impl Future<Output = T> + 'static) -> T {
        let out = Rc::new(RefCell::new(None));
        let slot = out.clone();
        self.spawner
            .spawn_local(async move {
                *slot.borrow_mut() = Some(future.await);
            })
            .unwrap();
        self.run();
        let result = out.borrow_mut().take();
        result.expect("the future stalled")
    }

    /// Spawns `future`; the handle aborts it (drops it unfinished).
    pub fn spawn_abortable(&mut self, future: impl Future<Output = ()> + 'static) -> AbortHandle {
        let (abort, registration) = AbortHandle::new_pair();
        self.spawner
            .spawn_local(Abortable::new(future, registration).map(drop))
            .unwrap();
        abort
    }

    /// Whether the registry runs.
    pub fn registry_up(&self) -> bool {
        self.net.registry.borrow().is_some()
    }

    /// Spawns `future`; its output lands in the returned cell.
    pub fn spawn<T: 'static>(
        &mut self,
        future: impl Future<Output = T> + 'static,
    ) -> Rc<RefCell<Option<T>>> {
        let out = Rc::new(RefCell::new(None));
        let slot = out.clone();
        self.spawner
            .spawn_local(async move {
                *slot.borrow_mut() = Some(future.await);
            })
            .unwrap();
        out
    }
}

/// Collects what a Discover stream yields, polled by a task in the world.
pub struct Collected {
    pub events: Vec<courier_registry::Event>,
    pub errors: usize,
    pub set: courier_registry::EndpointSet,
}

pub fn collect<D>(world: &mut World, stream: D) -> Rc<RefCell<Collected>>
where
    D: courier_registry::Discover + 'static,
{
    let collected = Rc::new(RefCell::new(Collected {
        events: Vec::new(),
        errors: 0,
        set: courier_registry::EndpointSet::new(),
    }));
    let sink = collected.clone();
    world
        .spawner
        .spawn_local(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = futures::StreamExt::next(&mut stream).await {
                let mut c = sink.borrow_mut();
                match item {
                    Ok(event) => {
                        c.set.apply(&event);
                        c.events.push(event);
                    }
                    Err(_) => c.errors += 1,
                }
            }
        })
        .unwrap();
    world.run();
    collected
}
