//! A cluster of in-memory servers behind a balanced client, on a manual
//! clock, for the integration tests: instances can be killed (their
//! server dropped, so the connection ends under the calls in flight) and
//! discovery changes sent by hand.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use courier::{BoxStream, ClientBuilder, ServerBuilder, Timer};
use courier_balance::{Balanced, BalancedBuilder, BalancedDriver};
use courier_registry::{Address, Change, DiscoverError, Endpoint, Event, SnapshotKind};
use futures::channel::mpsc;
use futures::future::{AbortHandle, Abortable, LocalBoxFuture};
use futures::{FutureExt, StreamExt};

/// The service the cluster serves.
#[courier::service]
pub trait Work {
    /// Records a run of `id`, waits for the gate, answers the instance.
    #[idempotent]
    async fn read(&self, id: u64) -> String;
    /// The same, not idempotent.
    async fn write(&self, id: u64) -> String;
    /// Panics on an instance marked failing; else answers the instance.
    #[idempotent]
    async fn flaky(&self) -> String;
    /// `n` items, each the instance's name.
    async fn names(&self, n: u32) -> BoxStream<String>;
}

/// A clock that moves only when told to.
#[derive(Clone, Default)]
pub struct ManualClock(Arc<Mutex<ClockState>>);

#[derive(Default)]
struct ClockState {
    now: Duration,
    sleepers: Vec<(Duration, Waker)>,
}

impl ManualClock {
    /// Moves the clock forward, waking the sleeps that are due.
    pub fn advance(&self, by: Duration) {
        let due: Vec<Waker> = {
            let mut s = self.0.lock().unwrap();
            s.now += by;
            let now = s.now;
            let (due, keep) = std::mem::take(&mut s.sleepers)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            s.sleepers = keep;
            due.into_iter().map(|(_, w)| w).collect()
        };
        due.into_iter().for_each(Waker::wake);
    }
}

/// A sleep on a [`ManualClock`].
pub struct ManualSleep {
    clock: ManualClock,
    at: Duration,
}

impl Future for ManualSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.clock.0.lock().unwrap();
        if s.now >= self.at {
            return Poll::Ready(());
        }
        s.sleepers.push((self.at, cx.waker().clone()));
        Poll::Pending
    }
}

impl courier::Timer for ManualClock {
    type Sleep = ManualSleep;
    fn now(&self) -> Duration {
        self.0.lock().unwrap().now
    }
    fn sleep_until(&self, at: Duration) -> ManualSleep {
        ManualSleep {
            clock: self.clone(),
            at,
        }
    }
    fn reset(&self, sleep: Pin<&mut ManualSleep>, at: Duration) {
        sleep.get_mut().at = at;
    }
}

/// Holds handlers until opened.
#[derive(Default)]
pub struct Gate(Mutex<(bool, Vec<Waker>)>);

impl Gate {
    pub fn open(&self) {
        let wakers = {
            let mut g = self.0.lock().unwrap();
            g.0 = true;
            std::mem::take(&mut g.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        futures::future::poll_fn(move |cx| {
            let mut g = self.0.lock().unwrap();
            if g.0 {
                return Poll::Ready(());
            }
            g.1.push(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// What the servers record.
#[derive(Default)]
pub struct Record {
    pub gate: Gate,
    /// Handler runs started, per instance.
    pub started: Mutex<HashMap<String, u64>>,
    /// Runs per call id, over every instance.
    pub runs: Mutex<HashMap<u64, u32>>,
    /// Instances whose `flaky` panics.
    pub failing: Mutex<HashSet<String>>,
    /// Instances whose server future ended (connection closed).
    pub ended: Mutex<HashSet<String>>,
    /// Instances whose handlers take [`SLOW`] on the clock.
    pub slow: Mutex<HashSet<String>>,
    /// Instances cut off: their handlers answer nothing until healed (a
    /// partition after the request arrived: no error, only silence).
    pub partitioned: Mutex<HashSet<String>>,
    /// The cluster's clock (slow and partitioned handlers wait on it).
    pub clock: ManualClock,
}

/// How long a slow instance's handler takes.
pub const SLOW: Duration = Duration::from_millis(500);

impl Record {
    pub fn started(&self, instance: &str) -> u64 {
        self.started
            .lock()
            .unwrap()
            .get(instance)
            .copied()
            .unwrap_or(0)
    }

    pub fn started_total(&self) -> u64 {
        self.started.lock().unwrap().values().sum()
    }
}

struct Node {
    name: String,
    record: Arc<Record>,
}

impl Node {
    async fn run(&self, id: u64) -> String {
        *self.record.runs.lock().unwrap().entry(id).or_default() += 1;
        *self
            .record
            .started
            .lock()
            .unwrap()
            .entry(self.name.clone())
            .or_default() += 1;
        self.record.gate.wait().await;
        let clock = &self.record.clock;
        if self.record.slow.lock().unwrap().contains(&self.name) {
            clock.sleep_until(clock.now() + SLOW).await;
        }
        // Cut off: silent until healed (checked whenever the clock moves).
        while self.record.partitioned.lock().unwrap().contains(&self.name) {
            clock
                .sleep_until(clock.now() + Duration::from_millis(1))
                .await;
        }
        self.name.clone()
    }
}

impl Work for Node {
    async fn read(&self, id: u64) -> String {
        self.run(id).await
    }
    async fn write(&self, id: u64) -> String {
        self.run(id).await
    }
    async fn flaky(&self) -> String {
        if self.record.failing.lock().unwrap().contains(&self.name) {
            panic!("{} is failing (on purpose)", self.name);
        }
        self.name.clone()
    }
    async fn names(&self, n: u32) -> BoxStream<String> {
        let name = self.name.clone();
        Box::pin(futures::stream::iter((0..n).map(move |_| name.clone())))
    }
}

type ServerTask = LocalBoxFuture<'static, ()>;

/// The cluster's controls.
pub struct Cluster {
    pub clock: ManualClock,
    pub record: Arc<Record>,
    events: mpsc::UnboundedSender<Result<Event, DiscoverError>>,
    servers: Arc<Mutex<HashMap<String, AbortHandle>>>,
    dead: Arc<Mutex<HashSet<String>>>,
}

pub fn endpoint(i: usize) -> Endpoint {
    Endpoint::new("work", format!("w-{i}"), Address::Unix(format!("mem-{i}")))
}

impl Cluster {
    /// Sends a discovery event.
    pub fn send(&self, change: Change) {
        let event = Event {
            revision: 0,
            change,
        };
        self.events.unbounded_send(Ok(event)).unwrap();
    }

    /// Sends a discovery error (the source lost its backend).
    pub fn send_error(&self, error: DiscoverError) {
        self.events.unbounded_send(Err(error)).unwrap();
    }

    /// Kills `instance`: its server is dropped (the connection ends under
    /// its calls in flight) and it refuses new dials.
    pub fn kill(&self, instance: &str) {
        self.dead.lock().unwrap().insert(instance.to_string());
        if let Some(handle) = self.servers.lock().unwrap().get(instance) {
            handle.abort();
        }
    }
}

impl Cluster {
    /// Lets `instance` accept dials again (a restarted process).
    pub fn revive(&self, instance: &str) {
        self.dead.lock().unwrap().remove(instance);
    }
}

/// A dialler of the cluster's in-memory instances.
pub type Dial = Box<
    dyn FnMut(
        &Endpoint,
    ) -> futures::future::Ready<
        Result<
            (
                courier::Client,
                courier::ClientDriver<courier_mem::MemTransport>,
            ),
            std::io::Error,
        >,
    >,
>;

/// The cluster's balancer driver.
pub type Driver =
    BalancedDriver<mpsc::UnboundedReceiver<Result<Event, DiscoverError>>, Dial, ManualClock>;

/// `n` instances `w-0..` in a first snapshot; `configure` sets the
/// balancer up. Returns the controls, the balanced channel, its driver
/// and the future that runs the servers (ends after the driver).
pub fn cluster(
    n: usize,
    configure: impl FnOnce(BalancedBuilder<ManualClock>) -> BalancedBuilder<ManualClock>,
) -> (
    Cluster,
    Balanced<ManualClock>,
    Driver,
    impl Future<Output = ()>,
) {
    cluster_with(n, |_| ServerBuilder::new(), configure)
}

/// [`cluster`] with each instance's server configured by `server(i)`.
pub fn cluster_with(
    n: usize,
    server: impl Fn(usize) -> ServerBuilder + 'static,
    configure: impl FnOnce(BalancedBuilder<ManualClock>) -> BalancedBuilder<ManualClock>,
) -> (
    Cluster,
    Balanced<ManualClock>,
    Driver,
    impl Future<Output = ()>,
) {
    let clock = ManualClock::default();
    let record = Arc::new(Record {
        clock: clock.clone(),
        ..Record::default()
    });
    let (events, discover) = mpsc::unbounded();
    let servers = Arc::new(Mutex::new(HashMap::new()));
    let dead = Arc::new(Mutex::new(HashSet::new()));
    let (spawn, tasks) = mpsc::unbounded::<ServerTask>();
    let dial: Dial = {
        let (record, servers, dead) = (record.clone(), servers.clone(), dead.clone());
        Box::new(move |endpoint: &Endpoint| {
            let name = endpoint.instance.clone();
            if dead.lock().unwrap().contains(&name) {
                let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
                return futures::future::ready(Err(refused));
            }
            let (client_io, server_io) = courier_mem::pair(64 * 1024);
            let node = Node {
                name: name.clone(),
                record: record.clone(),
            };
            let index = name
                .strip_prefix("w-")
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            let server = server(index).build(server_io, WorkServer::new(node));
            let (abort, registration) = AbortHandle::new_pair();
            servers.lock().unwrap().insert(name.clone(), abort);
            let record = record.clone();
            let task = Abortable::new(server, registration).map(move |_| {
                record.ended.lock().unwrap().insert(name);
            });
            spawn.unbounded_send(task.boxed_local()).unwrap();
            futures::future::ready(Ok(ClientBuilder::new().build(client_io)))
        })
    };
    let builder = configure(Balanced::builder(clock.clone()).seed(7));
    let (balanced, driver) = builder.build(discover, dial);
    let cluster = Cluster {
        clock,
        record,
        events,
        servers,
        dead,
    };
    cluster.send(Change::Snapshot {
        endpoints: (0..n).map(endpoint).collect(),
        kind: SnapshotKind::Initial,
    });
    let run_servers = tasks.for_each_concurrent(None, |task| task);
    (cluster, balanced, driver, run_servers)
}

/// Lets the other futures of a `join!` run until `done` holds (at most
/// 10 000 turns, then panics: a test must not hang).
pub async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        yield_now().await;
    }
    panic!("condition not reached");
}

/// Returns `Pending` once, waking itself.
pub async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
