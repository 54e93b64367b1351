//! The shared Discover suite against a real etcd (feature `etcd`).
#![cfg(feature = "etcd")]

#[macro_use]
mod discover;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use courier_registry::etcd::{Etcd, EtcdConfig, EtcdDiscover};
use courier_registry::{Endpoint, Registrar};
use etcd_client::CompactionOptions;

use discover::etcd_server::EtcdServer;
use discover::gate::Gate;
use discover::{DiscoverHarness, Feature};

/// etcd behind a gate: changes go to etcd directly, watches through the
/// gate, so a cut cuts watchers only.
struct EtcdHarness {
    // Kept for the harness's life: etcd stops on drop.
    _server: EtcdServer,
    gate: Gate,
    direct: Etcd,
    gated: Etcd,
    leased: HashMap<(String, String), tokio::task::JoinHandle<()>>,
}

impl EtcdHarness {
    async fn start() -> Self {
        let server = EtcdServer::start().await;
        let gate = Gate::start(server.client_port()).await;
        let direct = server.connect().await;
        let gated = Etcd::connect(
            EtcdConfig::new([format!("http://127.0.0.1:{}", gate.port())])
                .retry(Duration::from_millis(20), Duration::from_millis(200))
                .request_timeout(Duration::from_secs(3)),
        )
        .await
        .expect("connect through the gate");
        EtcdHarness {
            _server: server,
            gate,
            direct,
            gated,
            leased: HashMap::new(),
        }
    }
}

impl DiscoverHarness for EtcdHarness {
    type Watch = EtcdDiscover;

    fn run<F, Fut>(test: F)
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            let harness = EtcdHarness::start().await;
            test(harness).await;
        });
    }

    fn supports(&self, _: Feature) -> bool {
        true
    }

    async fn register(&mut self, endpoint: &Endpoint) {
        let key = self.direct.key(&endpoint.service, &endpoint.instance);
        let mut client = self.direct.client().clone();
        client
            .put(key, Etcd::value(endpoint), None)
            .await
            .expect("put");
    }

    async fn deregister(&mut self, service: &str, instance: &str) {
        let key = self.direct.key(service, instance);
        let mut client = self.direct.client().clone();
        client.delete(key, None).await.expect("delete");
    }

    async fn watch(&mut self, service: &str) -> EtcdDiscover {
        self.gated.watch(service).expect("valid service")
    }

    async fn cut(&mut self) {
        self.gate.cut();
    }

    async fn restore(&mut self) {
        self.gate.restore();
    }

    async fn forget_history(&mut self) {
        let mut client = self.direct.client().clone();
        let revision = client
            .get("any", None)
            .await
            .expect("read the revision")
            .header()
            .expect("header")
            .revision();
        client
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .expect("compact");
    }

    async fn register_leased(&mut self, endpoint: &Endpoint, ttl: Duration) {
        let mut registrar = self.direct.registrar();
        let lease = registrar.register(endpoint, ttl).await.expect("register");
        let heartbeats = async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                registrar.keep_alive(lease).await.expect("keep alive");
            }
        };
        let task = tokio::spawn(heartbeats);
        self.leased
            .insert((endpoint.service.clone(), endpoint.instance.clone()), task);
    }

    async fn stop_renewing(&mut self, service: &str, instance: &str) {
        if let Some(task) = self
            .leased
            .remove(&(service.to_owned(), instance.to_owned()))
        {
            // Dropped mid-flight: no deregistration, the lease lapses.
            task.abort();
            let _ = task.await;
        }
    }
}

discover_suite!(EtcdHarness);

#[test]
fn the_harness_keeps_etcd_alive_until_dropped() {
    // The server helper itself: healthy after start, gone after drop.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let server = EtcdServer::start().await;
            let port = server.client_port();
            let mut client = server.connect().await.client().clone();
            client.put("k", "v", None).await.expect("etcd answers");
            drop(server);
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                "etcd still listens after drop"
            );
        });
}
