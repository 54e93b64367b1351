//! The registry: start one, register two instances that keep their leases
//! alive, watch the service, kill one instance (its heartbeats stop, its
//! lease expires) and shut the other down gracefully (it deregisters
//! first). Every change the watcher sees is printed.
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

    // Two instances, each registering itself with a 600 ms lease that its
    // driver renews every 200 ms.
    let ttl = Duration::from_millis(600);
    let mut instances = Vec::new();
    for (name, port) in [("kv-1", 9001), ("kv-2", 9002)] {
        let endpoint = Endpoint::new("kv", name, Address::Tcp(([127, 0, 0, 1], port).into()))
            .with_metadata("zone", "eu-1");
        let stop = Shutdown::new();
        let server = Shutdown::new(); // what the instance's server would drain on
        let registrar = RemoteRegistrar::new(connect(addr).await?, None);
        let driver = Registration::new(endpoint, ttl)
            .propagation(Duration::from_millis(100))
            .run(
                registrar,
                TokioTimer::new(),
                stop.clone().triggered(),
                Some(server.clone()),
            );
        instances.push((name, stop, server, tokio::spawn(driver)));
    }
    wait_for(&mut watched, &["kv-1", "kv-2"]).await;

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
    let (_, _, _, killed) = instances.pop().unwrap();
    killed.abort();
    let killed_at = tokio::time::Instant::now();
    wait_for(&mut watched, &["kv-1"]).await;
    println!(
        "kv-2 removed {:?} after its heartbeats stopped (TTL {ttl:?})",
        killed_at.elapsed()
    );

    // kv-1 shuts down gracefully: deregistered first, then its server drains.
    let (_, stop, server, driver) = instances.pop().unwrap();
    stop.trigger();
    wait_for(&mut watched, &[]).await;
    driver.await??;
    assert!(server.is_triggered());
    println!("kv-1 deregistered, then its server was told to drain");
    Ok(())
}
