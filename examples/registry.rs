//! The registry: start one, run two instances that serve a service and
//! register themselves (keeping their leases alive), watch the service,
//! find and call an instance through the registry, kill one instance (its
//! heartbeats stop, its lease expires) and shut the other down gracefully
//! (it deregisters first, then its server drains). Every change the
//! watcher sees is printed.
//!
//! ```text
//! cargo run --example registry
//! ```

use std::time::Duration;

use courier::timer::TokioTimer;
use courier::Shutdown;
use courier_registry::{
    Address, Change, EmbeddedRegistry, Endpoint, EndpointSet, Registration, RegistryClient,
    RegistryWatch, RemoteRegistrar, StoreConfig,
};
use futures::StreamExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the instances serve.
#[courier::service]
pub trait Kv {
    /// The instance's name.
    async fn whoami(&self) -> String;
}

struct Named(String);

impl Kv for Named {
    async fn whoami(&self) -> String {
        self.0.clone()
    }
}

async fn connect(addr: std::net::SocketAddr) -> Result<RegistryClient, Error> {
    let (client, driver) = courier_tcp::tokio::connect(addr).await?;
    tokio::spawn(driver);
    Ok(RegistryClient::new(client))
}

/// Waits until the watcher's set is exactly `want`.
async fn wait_for(
    watched: &mut futures::channel::mpsc::UnboundedReceiver<Vec<String>>,
    want: &[&str],
) {
    while let Some(names) = watched.next().await {
        if names == want {
            return;
        }
    }
    panic!("the watcher stopped");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // The registry, served over TCP on a free loopback port.
    let (registry, expiry) = EmbeddedRegistry::new(StoreConfig::default(), TokioTimer::new());
    tokio::spawn(expiry);
    let listener = courier_tcp::tokio::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let served = registry.clone();
    tokio::spawn(courier_tcp::tokio::builder().serve_with(listener, move |_| served.connection()));
    println!("registry on {addr}");

    // A watcher of service "kv", printing each change as it comes.
    let (watched_tx, mut watched) = futures::channel::mpsc::unbounded();
    let mut changes = RegistryWatch::new(connect(addr).await?, "kv", TokioTimer::new());
    tokio::spawn(async move {
        let mut set = EndpointSet::new();
        while let Some(item) = changes.next().await {
            let Ok(event) = item else { continue };
            set.apply(&event);
            let what = match &event.change {
                Change::Snapshot { endpoints, kind } => {
                    format!("snapshot ({kind:?}) of {} endpoints", endpoints.len())
                }
                Change::Added(e) => format!("added {} at {}", e.instance, e.address),
                Change::Updated(e) => format!("updated {}", e.instance),
                Change::Removed { instance } => format!("removed {instance}"),
            };
            let names: Vec<_> = set.iter().map(|e| e.instance.clone()).collect();
            println!("watch: revision {}: {what}; now {names:?}", event.revision);
            let _ = watched_tx.unbounded_send(names);
        }
    });
    wait_for(&mut watched, &[]).await;

    // Two instances: each serves `Kv` on its own port and registers itself
    // with a 600 ms lease that its driver renews every 200 ms. The server
    // drains on the `Shutdown` the registration triggers after it
    // deregistered.
    let ttl = Duration::from_millis(600);
    let mut instances = Vec::new();
    for name in ["kv-1", "kv-2"] {
        let listener = courier_tcp::tokio::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = Endpoint::new("kv", name, Address::Tcp(listener.local_addr()?))
            .with_metadata("zone", "eu-1");
        let drain = Shutdown::new();
        let server = tokio::spawn(
            courier_tcp::tokio::builder()
                .shutdown(drain.clone())
                .serve(listener, KvServer::new(Named(name.into()))),
        );
        let stop = Shutdown::new();
        let registrar = RemoteRegistrar::new(connect(addr).await?, None);
        let driver = Registration::new(endpoint, ttl)
            .propagation(Duration::from_millis(100))
            .run(
                registrar,
                TokioTimer::new(),
                stop.clone().triggered(),
                Some(drain),
            );
        instances.push((stop, server, tokio::spawn(driver)));
    }
    wait_for(&mut watched, &["kv-1", "kv-2"]).await;

    // A client finds kv-1 through the registry and calls it.
    let listing = connect(addr).await?.list(Some("kv".into())).await?;
    let Address::Tcp(kv1) = listing.endpoints[0].address else {
        unreachable!("registered over TCP")
    };
    let (client, driver) = courier_tcp::tokio::connect(kv1).await?;
    tokio::spawn(driver);
    println!(
        "calling {kv1}: it is {}",
        KvClient::new(client).whoami().await?
    );

    // Two TTLs pass: the heartbeats keep both.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(registry.instances(), 2);
    println!(
        "after {:?}: still {} instances",
        ttl * 2,
        registry.instances()
    );

    // kv-2 dies without a word: its driver stops, its connection stays up,
    // so only the missed TTL removes it.
    let (_, _kv2_server, killed) = instances.pop().unwrap();
    killed.abort();
    let killed_at = tokio::time::Instant::now();
    wait_for(&mut watched, &["kv-1"]).await;
    println!(
        "kv-2 removed {:?} after its heartbeats stopped (TTL {ttl:?})",
        killed_at.elapsed()
    );

    // kv-1 shuts down gracefully: deregistered first, then its server
    // drains and ends.
    let (stop, server, driver) = instances.pop().unwrap();
    stop.trigger();
    wait_for(&mut watched, &[]).await;
    driver.await??;
    server.await?;
    println!("kv-1 deregistered, then its server drained and stopped");
    Ok(())
}
