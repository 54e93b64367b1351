//! The shared Discover suite (`tests/discover/`) against courier's own
//! sources: the static list, the embedded registry watched in-process, the
//! registry over courier-mem, and the registry server over TCP (behind a
//! gate that can cut the watchers off, with a short history so that resuming
//! can be made impossible).

#[macro_use]
mod discover;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use courier::client::ReconnectPolicy;
use courier::timer::TokioTimer;
use courier_registry::{
    DiscoverError, EmbeddedRegistry, Endpoint, Event, LeaseId, Registrar, RegistryClient,
    RegistryWatch, RemoteRegistrar, StaticList, StoreConfig,
};
use futures_util::Stream;

use discover::gate::Gate;
use discover::{DiscoverHarness, Feature};

type Watch = Pin<Box<dyn Stream<Item = Result<Event, DiscoverError>> + Send>>;
type Key = (String, String);

/// Runs `test` on a multi-threaded tokio runtime (the servers, drivers and
/// expiry run as tasks).
fn on_tokio<F: Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(test);
}

fn embedded(config: StoreConfig) -> EmbeddedRegistry {
    let (registry, expiry) = EmbeddedRegistry::new(config, TokioTimer::new());
    tokio::spawn(expiry);
    registry
}

/// A client of `registry` over courier-mem, its server and driver spawned.
fn mem_client(registry: &EmbeddedRegistry) -> RegistryClient {
    let (client_io, server_io) = courier_mem::pair(256 * 1024);
    tokio::spawn(courier::ServerBuilder::new().build(server_io, registry.connection()));
    let (client, driver) = courier::Client::new(client_io);
    tokio::spawn(driver);
    RegistryClient::new(client)
}

/// Registers like a server instance would, through a registry client: one
/// lease per instance, renewed by a task for leased registrations.
struct Writer {
    registrar: RemoteRegistrar,
    client: RegistryClient,
    leases: HashMap<Key, LeaseId>,
    renewing: HashMap<Key, tokio::task::JoinHandle<()>>,
}

impl Writer {
    fn new(client: RegistryClient) -> Self {
        Writer {
            registrar: RemoteRegistrar::new(client.clone(), None),
            client,
            leases: HashMap::new(),
            renewing: HashMap::new(),
        }
    }

    fn key(service: &str, instance: &str) -> Key {
        (service.to_owned(), instance.to_owned())
    }

    async fn register(&mut self, endpoint: &Endpoint, ttl: Duration) -> LeaseId {
        let lease = self
            .registrar
            .register(endpoint, ttl)
            .await
            .expect("register");
        self.leases
            .insert(Self::key(&endpoint.service, &endpoint.instance), lease);
        lease
    }

    async fn deregister(&mut self, service: &str, instance: &str) {
        if let Some(lease) = self.leases.remove(&Self::key(service, instance)) {
            self.registrar.deregister(lease).await.expect("deregister");
        }
    }

    async fn register_leased(&mut self, endpoint: &Endpoint, ttl: Duration) {
        let lease = self.register(endpoint, ttl).await;
        let mut registrar = RemoteRegistrar::new(self.client.clone(), None);
        let heartbeats = async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                registrar.keep_alive(lease).await.expect("keep alive");
            }
        };
        self.renewing.insert(
            Self::key(&endpoint.service, &endpoint.instance),
            tokio::spawn(heartbeats),
        );
    }

    async fn stop_renewing(&mut self, service: &str, instance: &str) {
        if let Some(task) = self.renewing.remove(&Self::key(service, instance)) {
            task.abort();
            let _ = task.await;
        }
    }
}

const FOREVER: Duration = Duration::from_secs(600);

// ---- the static list ----

struct StaticHarness {
    list: StaticList,
    entries: Vec<Endpoint>,
}

impl DiscoverHarness for StaticHarness {
    type Watch = Watch;

    fn run<F, Fut>(test: F)
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = ()>,
    {
        let list = StaticList::new([]).expect("an empty list");
        futures::executor::block_on(test(StaticHarness {
            list,
            entries: Vec::new(),
        }));
    }

    fn supports(&self, feature: Feature) -> bool {
        feature == Feature::LiveChanges
    }

    async fn register(&mut self, endpoint: &Endpoint) {
        self.entries
            .retain(|e| (&e.service, &e.instance) != (&endpoint.service, &endpoint.instance));
        self.entries.push(endpoint.clone());
        self.list.set(self.entries.clone()).expect("set");
    }

    async fn deregister(&mut self, service: &str, instance: &str) {
        self.entries
            .retain(|e| (e.service.as_str(), e.instance.as_str()) != (service, instance));
        self.list.set(self.entries.clone()).expect("set");
    }

    async fn watch(&mut self, service: &str) -> Watch {
        Box::pin(self.list.watch(service).expect("watch"))
    }
}

discover_suite_module!(static_list, StaticHarness);

// ---- the embedded registry, watched in-process ----

struct InProcessHarness {
    registry: EmbeddedRegistry,
    writer: Writer,
}

impl DiscoverHarness for InProcessHarness {
    type Watch = Watch;

    fn run<F, Fut>(test: F)
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = ()>,
    {
        on_tokio(async {
            let registry = embedded(StoreConfig::default());
            let writer = Writer::new(mem_client(&registry));
            test(InProcessHarness { registry, writer }).await;
        });
    }

    fn supports(&self, feature: Feature) -> bool {
        matches!(feature, Feature::LiveChanges | Feature::Leases)
    }

    async fn register(&mut self, endpoint: &Endpoint) {
        self.writer.register(endpoint, FOREVER).await;
    }

    async fn deregister(&mut self, service: &str, instance: &str) {
        self.writer.deregister(service, instance).await;
    }

    async fn watch(&mut self, service: &str) -> Watch {
        Box::pin(self.registry.watch(service, None).expect("watch"))
    }

    async fn register_leased(&mut self, endpoint: &Endpoint, ttl: Duration) {
        self.writer.register_leased(endpoint, ttl).await;
    }

    async fn stop_renewing(&mut self, service: &str, instance: &str) {
        self.writer.stop_renewing(service, instance).await;
    }
}

discover_suite_module!(embedded_in_process, InProcessHarness);

// ---- the registry over courier-mem ----

struct MemHarness {
    registry: EmbeddedRegistry,
    writer: Writer,
}

impl DiscoverHarness for MemHarness {
    type Watch = Watch;

    fn run<F, Fut>(test: F)
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = ()>,
    {
        on_tokio(async {
            let registry = embedded(StoreConfig::default());
            let writer = Writer::new(mem_client(&registry));
            test(MemHarness { registry, writer }).await;
        });
    }

    fn supports(&self, feature: Feature) -> bool {
        matches!(feature, Feature::LiveChanges | Feature::Leases)
    }

    async fn register(&mut self, endpoint: &Endpoint) {
        self.writer.register(endpoint, FOREVER).await;
    }

    async fn deregister(&mut self, service: &str, instance: &str) {
        self.writer.deregister(service, instance).await;
    }

    async fn watch(&mut self, service: &str) -> Watch {
        let client = mem_client(&self.registry);
        Box::pin(RegistryWatch::new(client, service, TokioTimer::new()))
    }

    async fn register_leased(&mut self, endpoint: &Endpoint, ttl: Duration) {
        self.writer.register_leased(endpoint, ttl).await;
    }

    async fn stop_renewing(&mut self, service: &str, instance: &str) {
        self.writer.stop_renewing(service, instance).await;
    }
}

discover_suite_module!(over_courier_mem, MemHarness);

// ---- the registry server over TCP ----

/// Events each service's history keeps: more than the cut check makes
/// while cut (3), fewer than `forget_history` pushes through (6).
const TCP_HISTORY: usize = 4;

struct TcpHarness {
    writer: Writer,
    gate: Gate,
}

impl DiscoverHarness for TcpHarness {
    type Watch = Watch;

    fn run<F, Fut>(test: F)
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = ()>,
    {
        on_tokio(async {
            let registry = embedded(StoreConfig {
                history: TCP_HISTORY,
                ..StoreConfig::default()
            });
            let listener = courier_tcp::tokio::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("address");
            let served = registry.clone();
            tokio::spawn(
                courier_tcp::tokio::builder().serve_with(listener, move |_| served.connection()),
            );
            let (client, driver) = courier_tcp::tokio::connect(addr).await.expect("connect");
            tokio::spawn(driver);
            let gate = Gate::start(addr.port()).await;
            test(TcpHarness {
                writer: Writer::new(RegistryClient::new(client)),
                gate,
            })
            .await;
        });
    }

    fn supports(&self, _: Feature) -> bool {
        true
    }

    async fn register(&mut self, endpoint: &Endpoint) {
        self.writer.register(endpoint, FOREVER).await;
    }

    async fn deregister(&mut self, service: &str, instance: &str) {
        self.writer.deregister(service, instance).await;
    }

    async fn watch(&mut self, service: &str) -> Watch {
        // Through the gate, re-dialing whenever the connection is lost.
        let policy =
            ReconnectPolicy::new().backoff(Duration::from_millis(10), Duration::from_millis(100));
        let (client, driver) =
            courier_tcp::tokio::connect_reconnecting(("127.0.0.1", self.gate.port()), policy);
        tokio::spawn(driver);
        let watch = RegistryWatch::new(RegistryClient::new(client), service, TokioTimer::new())
            .backoff(Duration::from_millis(10), Duration::from_millis(100));
        Box::pin(watch)
    }

    async fn cut(&mut self) {
        self.gate.cut();
    }

    async fn restore(&mut self) {
        self.gate.restore();
    }

    /// Pushes more changes through the service's history than it keeps.
    async fn forget_history(&mut self) {
        let filler = discover::endpoint("kv", "history-filler", 1);
        for _ in 0..3 {
            self.writer.register(&filler, FOREVER).await;
            self.writer.deregister("kv", "history-filler").await;
        }
    }

    async fn register_leased(&mut self, endpoint: &Endpoint, ttl: Duration) {
        self.writer.register_leased(endpoint, ttl).await;
    }

    async fn stop_renewing(&mut self, service: &str, instance: &str) {
        self.writer.stop_renewing(service, instance).await;
    }
}

discover_suite_module!(server_over_tcp, TcpHarness);
