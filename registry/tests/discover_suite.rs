//! One discovery suite, run against every source: the static list, the
//! embedded registry in-process, the registry over courier-mem, and the
//! registry server over TCP. A new source (etcd) implements [`Source`] and
//! adds one `#[tokio::test]` that calls [`suite`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use courier::timer::TokioTimer;
use courier_registry::{
    Address, Change, Discover, EmbeddedRegistry, Endpoint, EndpointSet, LeaseId, RegistryClient,
    RegistryWatch, SnapshotKind, StaticList, StoreConfig,
};
use futures::StreamExt;

type BoxDiscover = Pin<Box<dyn Discover + Send>>;

/// A discovery source under test: something that can set the endpoints of
/// service `kv` and watch them.
trait Source {
    /// Makes `endpoints` the whole set of service `kv`.
    fn set(&mut self, endpoints: Vec<Endpoint>) -> Pin<Box<dyn Future<Output = ()> + '_>>;
    /// A new watch of service `kv`.
    fn watch(&mut self) -> BoxDiscover;
}

const PATIENCE: Duration = Duration::from_secs(30);

fn ep(instance: &str, port: u16) -> Endpoint {
    Endpoint::new(
        "kv",
        instance,
        Address::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
    )
}

/// Reads events until the watcher's set is `want`; returns them.
async fn until(stream: &mut BoxDiscover, set: &mut EndpointSet, want: &[Endpoint]) -> Vec<Change> {
    let mut changes = Vec::new();
    while set.iter().cloned().collect::<Vec<_>>() != want {
        let item = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("the source delivers in time")
            .expect("the stream goes on");
        let event = item.expect("no error from a healthy source");
        let before = set.revision();
        set.apply(&event);
        assert!(
            event.revision > before,
            "revisions grow: {} after {before}",
            event.revision
        );
        changes.push(event.change);
    }
    changes
}

async fn suite(source: &mut dyn Source) {
    source.set(vec![ep("a", 1), ep("b", 1)]).await;
    let mut first = source.watch();
    let mut set = EndpointSet::new();
    let event = tokio::time::timeout(PATIENCE, first.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match &event.change {
        Change::Snapshot { endpoints, kind } => {
            assert_eq!(*kind, SnapshotKind::Initial);
            assert_eq!(endpoints, &[ep("a", 1), ep("b", 1)]);
        }
        other => panic!("a watch starts with a snapshot, not {other:?}"),
    }
    set.apply(&event);

    // An update and an addition.
    source.set(vec![ep("a", 2), ep("b", 1), ep("c", 1)]).await;
    let changes = until(&mut first, &mut set, &[ep("a", 2), ep("b", 1), ep("c", 1)]).await;
    assert!(
        changes.contains(&Change::Updated(ep("a", 2))),
        "{changes:?}"
    );
    assert!(changes.contains(&Change::Added(ep("c", 1))), "{changes:?}");

    // Two removals.
    source.set(vec![ep("c", 1)]).await;
    let changes = until(&mut first, &mut set, &[ep("c", 1)]).await;
    for gone in ["a", "b"] {
        assert!(changes.contains(&Change::Removed {
            instance: gone.into()
        }));
    }

    // A second watcher starts from a snapshot of the current set, at a
    // revision no older than what the first one saw.
    let mut second = source.watch();
    let event = tokio::time::timeout(PATIENCE, second.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(event.revision >= set.revision());
    assert!(matches!(
        &event.change,
        Change::Snapshot { endpoints, kind: SnapshotKind::Initial } if endpoints == &[ep("c", 1)]
    ));

    // Nothing more arrives while nothing changes.
    let quiet = tokio::time::timeout(Duration::from_millis(50), first.next()).await;
    assert!(quiet.is_err(), "no spurious event: {quiet:?}");
}

struct Static(StaticList);

impl Source for Static {
    fn set(&mut self, endpoints: Vec<Endpoint>) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        self.0.set(endpoints).unwrap();
        Box::pin(async {})
    }
    fn watch(&mut self) -> BoxDiscover {
        Box::pin(self.0.watch("kv").unwrap())
    }
}

/// The embedded registry watched in-process, written to through a client.
struct InProcess {
    registry: EmbeddedRegistry,
    writer: Writer,
}

impl Source for InProcess {
    fn set(&mut self, endpoints: Vec<Endpoint>) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(self.writer.set(endpoints))
    }
    fn watch(&mut self) -> BoxDiscover {
        Box::pin(self.registry.watch("kv", None).unwrap())
    }
}

/// The registry watched and written to over the wire.
struct Wire {
    client: RegistryClient,
    writer: Writer,
}

impl Source for Wire {
    fn set(&mut self, endpoints: Vec<Endpoint>) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(self.writer.set(endpoints))
    }
    fn watch(&mut self) -> BoxDiscover {
        Box::pin(RegistryWatch::new(
            self.client.clone(),
            "kv",
            TokioTimer::new(),
        ))
    }
}

/// Sets a service's endpoints through the registry's client: registers
/// what is new or changed, deregisters what went.
struct Writer {
    client: RegistryClient,
    leases: BTreeMap<String, (Endpoint, LeaseId)>,
}

impl Writer {
    fn new(client: RegistryClient) -> Self {
        Writer {
            client,
            leases: BTreeMap::new(),
        }
    }

    async fn set(&mut self, endpoints: Vec<Endpoint>) {
        let keep: Vec<String> = endpoints.iter().map(|e| e.instance.clone()).collect();
        let gone: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(name, _)| !keep.contains(name))
            .map(|(_, (_, lease))| *lease)
            .collect();
        for lease in gone {
            self.client.deregister(None, lease).await.unwrap().unwrap();
        }
        self.leases.retain(|name, _| keep.contains(name));
        for endpoint in endpoints {
            if self.leases.get(&endpoint.instance).map(|(e, _)| e) == Some(&endpoint) {
                continue;
            }
            let lease = self
                .client
                .register(None, endpoint.clone(), Duration::from_secs(600))
                .await
                .unwrap()
                .unwrap();
            self.leases
                .insert(endpoint.instance.clone(), (endpoint, lease));
        }
    }
}

/// A client of `registry` over courier-mem, its server and driver spawned.
fn mem_client(registry: &EmbeddedRegistry) -> RegistryClient {
    let (client_io, server_io) = courier_mem::pair(256 * 1024);
    tokio::spawn(courier::ServerBuilder::new().build(server_io, registry.connection()));
    let (client, driver) = courier::Client::new(client_io);
    tokio::spawn(driver);
    RegistryClient::new(client)
}

fn embedded() -> EmbeddedRegistry {
    let (registry, expiry) = EmbeddedRegistry::new(StoreConfig::default(), TokioTimer::new());
    tokio::spawn(expiry);
    registry
}

#[tokio::test]
async fn static_list() {
    suite(&mut Static(StaticList::new([]).unwrap())).await;
}

#[tokio::test]
async fn embedded_registry_in_process() {
    let registry = embedded();
    let writer = Writer::new(mem_client(&registry));
    suite(&mut InProcess { registry, writer }).await;
}

#[tokio::test]
async fn embedded_registry_over_courier_mem() {
    let registry = embedded();
    let writer = Writer::new(mem_client(&registry));
    let client = mem_client(&registry);
    suite(&mut Wire { client, writer }).await;
}

#[tokio::test]
async fn registry_server_over_tcp() {
    let registry = embedded();
    let listener = courier_tcp::tokio::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let served = registry.clone();
    tokio::spawn(courier_tcp::tokio::builder().serve_with(listener, move |_| served.connection()));
    let connect = || async move {
        let (client, driver) = courier_tcp::tokio::connect(addr).await.unwrap();
        tokio::spawn(driver);
        RegistryClient::new(client)
    };
    let writer = Writer::new(connect().await);
    let client = connect().await;
    suite(&mut Wire { client, writer }).await;
}
