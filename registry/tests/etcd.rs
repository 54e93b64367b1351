//! etcd-specific behaviour beyond the shared suite: bad entries, etcd going
//! away and coming back (with or without its data), registration under a
//! lease, and polling from a non-tokio executor.
#![cfg(feature = "etcd")]

#[macro_use]
mod discover;

use std::future::Future;
use std::time::Duration;

use courier_registry::etcd::{Etcd, EtcdConfig, EtcdDiscover, EtcdError};
use courier_registry::{
    Change, DiscoverError, Endpoint, InvalidEndpoint, Registrar, RegistrarError, Registration,
    SnapshotKind,
};
use etcd_client::Client;

use discover::etcd_server::EtcdServer;
use discover::{endpoint, next_event, next_item, next_unavailable};

fn run<F: Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(test);
}

async fn put(etcd: &Etcd, key: &str, value: impl Into<Vec<u8>>) {
    let mut client: Client = etcd.client().clone();
    client.put(key, value, None).await.expect("put");
}

async fn register(etcd: &Etcd, e: &Endpoint) {
    put(etcd, &etcd.key(&e.service, &e.instance), Etcd::value(e)).await;
}

/// The next item, which must be an `Invalid` report naming `key`.
async fn expect_invalid(watch: &mut EtcdDiscover, key: &str) {
    match next_item(watch).await {
        Err(DiscoverError::Invalid(why)) => assert!(why.contains(key), "{why}"),
        other => panic!("expected an invalid-entry report for {key}, got {other:?}"),
    }
}

#[test]
fn the_key_layout_is_prefix_service_instance() {
    run(async {
        let server = EtcdServer::start().await;
        let etcd = Etcd::connect(server.config().prefix("/apps/x/"))
            .await
            .unwrap();
        assert_eq!(etcd.key("kv", "kv-1"), "/apps/x/kv/kv-1");
        let default = server.connect().await;
        assert_eq!(default.key("kv", "kv-1"), "/courier/services/kv/kv-1");
        // An entry written by hand, as another language's client would.
        put(
            &default,
            "/courier/services/kv/kv-1",
            r#"{"address":"unix:///run/kv.sock"}"#,
        )
        .await;
        let mut watch = default.watch("kv").unwrap();
        let event = next_event(&mut watch).await;
        let Change::Snapshot { endpoints, .. } = event.change else {
            panic!("{event:?}")
        };
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].address.to_string(), "unix:///run/kv.sock");
        assert_eq!(endpoints[0].weight, 1);
    });
}

#[test]
fn a_watch_of_an_invalid_service_name_is_refused() {
    run(async {
        let server = EtcdServer::start().await;
        let etcd = server.connect().await;
        for bad in ["", "a/b", "kv/"] {
            assert_eq!(etcd.watch(bad).unwrap_err(), InvalidEndpoint::ServiceName);
        }
        // Only the service name counts, checked at the configured limit.
        let limits = courier_registry::EndpointLimits {
            max_name_len: 2,
            max_unix_path_len: 0,
            ..Default::default()
        };
        let strict = Etcd::connect(server.config().limits(limits)).await.unwrap();
        assert!(strict.watch("kv").is_ok());
        assert_eq!(
            strict.watch("kvx").unwrap_err(),
            InvalidEndpoint::ServiceName
        );
    });
}

#[test]
fn bad_entries_are_skipped_and_reported_and_the_watch_goes_on() {
    run(async {
        let server = EtcdServer::start().await;
        let etcd = Etcd::connect(server.config().max_value_len(200))
            .await
            .unwrap();
        let good = endpoint("kv", "good", 1);
        register(&etcd, &good).await;
        put(&etcd, "/courier/services/kv/garbage", "not json").await;
        put(
            &etcd,
            "/courier/services/kv/a/b",
            Etcd::value(&endpoint("kv", "x", 1)),
        )
        .await;
        let mut watch = etcd.watch("kv").unwrap();
        // The snapshot is reported after the bad entries it skipped.
        let mut reports = 0;
        let snapshot = loop {
            match next_item(&mut watch).await {
                Err(DiscoverError::Invalid(_)) => reports += 1,
                Ok(event) => break event,
                Err(other) => panic!("{other:?}"),
            }
        };
        assert_eq!(reports, 2);
        let Change::Snapshot { endpoints, .. } = snapshot.change else {
            panic!("{snapshot:?}")
        };
        assert_eq!(endpoints, vec![good.clone()]);

        // Oversized: one byte over the limit.
        let mut big = endpoint("kv", "big", 2);
        let value_len = |e: &Endpoint| Etcd::value(e).len();
        let mut pad = String::new();
        while value_len(&big) < 201 {
            pad.push('x');
            big = endpoint("kv", "big", 2).with_metadata("pad", pad.clone());
        }
        assert_eq!(value_len(&big), 201);
        register(&etcd, &big).await;
        expect_invalid(&mut watch, "/courier/services/kv/big").await;
        // At the limit: read.
        pad.pop();
        let at_limit = endpoint("kv", "big", 2).with_metadata("pad", pad);
        assert_eq!(value_len(&at_limit), 200);
        register(&etcd, &at_limit).await;
        assert_eq!(next_event(&mut watch).await.change, Change::Added(at_limit));

        // A valid endpoint overwritten by garbage leaves the set.
        put(&etcd, &etcd.key("kv", "good"), "{\"address\":42}").await;
        expect_invalid(&mut watch, "/courier/services/kv/good").await;
        let removed = next_item(&mut watch).await.unwrap();
        assert_eq!(
            removed.change,
            Change::Removed {
                instance: "good".into()
            }
        );
        // Deleting a key that never held a valid endpoint says nothing.
        let mut client = etcd.client().clone();
        client
            .delete("/courier/services/kv/garbage", None)
            .await
            .unwrap();
        let marker = endpoint("kv", "marker", 3);
        register(&etcd, &marker).await;
        assert_eq!(
            next_item(&mut watch).await.unwrap().change,
            Change::Added(marker)
        );
    });
}

#[test]
fn an_unchanged_re_registration_is_not_an_update() {
    run(async {
        let server = EtcdServer::start().await;
        let etcd = server.connect().await;
        let mut watch = etcd.watch("kv").unwrap();
        next_event(&mut watch).await;
        let a = endpoint("kv", "a", 1);
        register(&etcd, &a).await;
        assert_eq!(
            next_event(&mut watch).await.change,
            Change::Added(a.clone())
        );
        register(&etcd, &a).await;
        let b = endpoint("kv", "b", 2);
        register(&etcd, &b).await;
        assert_eq!(next_event(&mut watch).await.change, Change::Added(b));
    });
}

#[test]
fn a_large_snapshot_is_read_in_pages_at_one_revision() {
    run(async {
        let server = EtcdServer::start().await;
        let etcd = Etcd::connect(server.config().page_size(2)).await.unwrap();
        for i in 0..5u16 {
            register(&etcd, &endpoint("kv", &format!("i{i}"), i)).await;
        }
        register(&etcd, &endpoint("kv0", "next-range", 9)).await;
        let mut watch = etcd.watch("kv").unwrap();
        let event = next_event(&mut watch).await;
        let Change::Snapshot { endpoints, .. } = event.change else {
            panic!("{event:?}")
        };
        let names: Vec<_> = endpoints.iter().map(|e| e.instance.as_str()).collect();
        assert_eq!(names, ["i0", "i1", "i2", "i3", "i4"]);
    });
}

#[test]
fn etcd_down_at_start_then_up_gives_the_snapshot() {
    run(async {
        let mut server = EtcdServer::start().await;
        let etcd = server.connect().await;
        register(&etcd, &endpoint("kv", "a", 1)).await;
        server.kill();
        let mut watch = etcd.watch("kv").unwrap();
        // Unavailable, and retried: a second error comes after the first.
        next_unavailable(&mut watch).await;
        next_unavailable(&mut watch).await;
        server.restart().await;
        let event = next_event(&mut watch).await;
        assert!(matches!(
            event.change,
            Change::Snapshot { kind: SnapshotKind::Initial, ref endpoints } if endpoints.len() == 1
        ));
    });
}

#[test]
fn a_restarted_etcd_is_resumed_from_the_last_revision() {
    run(async {
        let mut server = EtcdServer::start().await;
        let etcd = server.connect().await;
        let mut watch = etcd.watch("kv").unwrap();
        next_event(&mut watch).await;
        let a = endpoint("kv", "a", 1);
        register(&etcd, &a).await;
        let added = next_event(&mut watch).await;
        assert_eq!(added.change, Change::Added(a));
        server.restart().await;
        next_unavailable(&mut watch).await;
        let b = endpoint("kv", "b", 2);
        register(&etcd, &b).await;
        // Exactly the change made after the restart: no resync, no repeat.
        let event = next_event(&mut watch).await;
        assert_eq!(event.change, Change::Added(b));
        assert!(event.revision > added.revision);
    });
}

#[test]
fn an_etcd_that_lost_its_data_gets_a_resync_and_the_registration_comes_back() {
    run(async {
        let mut server = EtcdServer::start().await;
        let etcd = server.connect().await;
        let a = endpoint("kv", "a", 1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let registration = Registration::new(a.clone(), Duration::from_secs(2))
            .heartbeat(Duration::from_millis(200))
            .retry(Duration::from_millis(20), Duration::from_millis(200));
        let driver = tokio::spawn(registration.run(
            etcd.registrar(),
            courier::timer::TokioTimer::new(),
            stopped,
            None,
        ));
        let mut watch = etcd.watch("kv").unwrap();
        let mut set = courier_registry::EndpointSet::new();
        while set.get("a").is_none() {
            set.apply(&next_event(&mut watch).await);
        }
        // Changes the watch sees, so that its revision is well above where
        // the replacing etcd will be when the watch reconnects.
        for port in 2..8u16 {
            register(&etcd, &endpoint("kv", "b", port)).await;
            set.apply(&next_event(&mut watch).await);
        }
        assert_eq!(
            set.get("b").unwrap().address,
            endpoint("kv", "b", 7).address
        );
        server.restart_empty().await;
        // The first event after the loss is a resync: `b` is gone with the
        // data, and `a` is there or comes back by itself (the driver
        // registers it again in the new etcd).
        let event = next_event(&mut watch).await;
        assert!(
            matches!(
                event.change,
                Change::Snapshot {
                    kind: SnapshotKind::Resync,
                    ..
                }
            ),
            "{event:?}"
        );
        set.apply(&event);
        assert!(set.get("b").is_none());
        while set.get("a").is_none() {
            set.apply(&next_event(&mut watch).await);
        }
        stop.send(()).unwrap();
        driver.await.unwrap().unwrap();
    });
}

#[test]
fn registration_deregisters_on_stop_and_recovers_a_lost_lease() {
    run(async {
        let server = EtcdServer::start().await;
        let etcd = server.connect().await;
        let mut watch = etcd.watch("kv").unwrap();
        next_event(&mut watch).await;
        let a = endpoint("kv", "a", 1);
        // A long TTL: a removal within the test's bounds is a revocation,
        // not an expiry.
        let registration = Registration::new(a.clone(), Duration::from_secs(60))
            .heartbeat(Duration::from_millis(100))
            .propagation(Duration::ZERO);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let driver = tokio::spawn(registration.run(
            etcd.registrar(),
            courier::timer::TokioTimer::new(),
            stopped,
            None,
        ));
        assert_eq!(
            next_event(&mut watch).await.change,
            Change::Added(a.clone())
        );

        // The lease is lost behind the driver's back (as when it expired
        // during a partition): it registers again.
        let mut client = etcd.client().clone();
        let leases = client.leases().await.unwrap();
        assert_eq!(leases.leases().len(), 1);
        client.lease_revoke(leases.leases()[0].id()).await.unwrap();
        let removed = next_event(&mut watch).await;
        assert_eq!(
            removed.change,
            Change::Removed {
                instance: "a".into()
            }
        );
        assert_eq!(
            next_event(&mut watch).await.change,
            Change::Added(a.clone())
        );

        stop.send(()).unwrap();
        driver.await.unwrap().unwrap();
        assert_eq!(
            next_event(&mut watch).await.change,
            Change::Removed {
                instance: "a".into()
            }
        );
        assert!(
            client.leases().await.unwrap().leases().is_empty(),
            "the lease was not revoked"
        );
    });
}

#[test]
fn the_registrar_maps_etcd_answers_onto_registrar_errors() {
    run(async {
        let mut server = EtcdServer::start().await;
        let etcd = server.connect().await;
        let mut registrar = etcd.registrar();
        let bad = endpoint("kv", "a b", 1);
        assert!(matches!(
            registrar.register(&bad, Duration::from_secs(5)).await,
            Err(RegistrarError::Refused(_))
        ));
        let a = endpoint("kv", "a", 1);
        let lease = registrar
            .register(&a, Duration::from_secs(5))
            .await
            .unwrap();
        registrar.keep_alive(lease).await.unwrap();
        registrar.keep_alive(lease).await.unwrap();
        // An unknown lease is lost; revoking it is not an error.
        assert_eq!(
            registrar.keep_alive(lease + 1000).await,
            Err(RegistrarError::LeaseLost)
        );
        registrar.deregister(lease).await.unwrap();
        registrar.deregister(lease).await.unwrap();
        assert_eq!(
            registrar.keep_alive(lease).await,
            Err(RegistrarError::LeaseLost)
        );
        // A lease put under a key is attached to it.
        let lease = registrar
            .register(&a, Duration::from_secs(5))
            .await
            .unwrap();
        let mut client = etcd.client().clone();
        let got = client.get(etcd.key("kv", "a"), None).await.unwrap();
        assert_eq!(got.kvs()[0].lease(), i64::try_from(lease).unwrap());
        // etcd gone: unavailable, not lost.
        server.kill();
        assert!(matches!(
            registrar.keep_alive(lease).await,
            Err(RegistrarError::Unavailable(_))
        ));
    });
}

#[test]
fn a_watch_can_be_polled_from_another_executor() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(EtcdServer::start());
    let config = server.config().runtime(runtime.handle().clone());
    // Everything below is polled by the futures crate's executor, outside
    // tokio.
    futures::executor::block_on(async {
        let etcd = Etcd::connect(config).await.unwrap();
        let mut watch = etcd.watch("kv").unwrap();
        next_event(&mut watch).await;
        let a = endpoint("kv", "a", 1);
        let mut registrar = etcd.registrar();
        let lease = registrar
            .register(&a, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(next_event(&mut watch).await.change, Change::Added(a));
        registrar.deregister(lease).await.unwrap();
        assert_eq!(
            next_event(&mut watch).await.change,
            Change::Removed {
                instance: "a".into()
            }
        );
    });
    drop(server);
}

#[test]
fn huge_values_do_not_stop_the_snapshot() {
    run(async {
        let server = EtcdServer::start().await;
        let etcd = server.connect().await;
        // Four values near etcd's request limit: a page of them is larger
        // than the client decodes at once (4 MiB).
        let huge = vec![b'x'; 1_400_000];
        for i in 0..4 {
            put(
                &etcd,
                &format!("/courier/services/kv/huge-{i}"),
                huge.clone(),
            )
            .await;
        }
        let good = endpoint("kv", "good", 1);
        register(&etcd, &good).await;
        let mut watch = etcd.watch("kv").unwrap();
        let mut reports = 0;
        let snapshot = loop {
            match next_item(&mut watch).await {
                Err(DiscoverError::Invalid(why)) => {
                    assert!(why.contains("exceeds"), "{why}");
                    reports += 1;
                }
                Ok(event) => break event,
                Err(other) => panic!("{other:?}"),
            }
        };
        assert_eq!(reports, 4);
        let Change::Snapshot { endpoints, .. } = snapshot.change else {
            panic!("{snapshot:?}")
        };
        assert_eq!(endpoints, vec![good]);
        // While watching, too.
        put(&etcd, "/courier/services/kv/huge-9", huge).await;
        expect_invalid(&mut watch, "/courier/services/kv/huge-9").await;
    });
}

#[test]
fn an_unusable_configuration_is_refused_at_connect() {
    run(async {
        let none: [&str; 0] = [];
        let error = Etcd::connect(EtcdConfig::new(none)).await.unwrap_err();
        assert!(matches!(error, EtcdError::Config(_)), "{error}");
        let error = Etcd::connect(EtcdConfig::new(["http://[bad"]))
            .await
            .unwrap_err();
        assert!(matches!(error, EtcdError::Config(_)), "{error}");
    });
}

#[test]
fn a_silent_partition_is_noticed_by_keep_alive_and_resumed() {
    run(async {
        let server = EtcdServer::start().await;
        let direct = server.connect().await;
        let gate = discover::gate::Gate::start(server.client_port()).await;
        // Pings every 100 ms, a connection without an answer for 200 ms is
        // dropped: the silent partition becomes an error.
        let config = EtcdConfig::new([format!("http://127.0.0.1:{}", gate.port())])
            .keep_alive(Duration::from_millis(100), Duration::from_millis(200))
            .request_timeout(Duration::from_millis(500))
            .retry(Duration::from_millis(20), Duration::from_millis(200));
        let gated = Etcd::connect(config).await.unwrap();
        let mut watch = gated.watch("kv").unwrap();
        next_event(&mut watch).await;
        let a = endpoint("kv", "a", 1);
        register(&direct, &a).await;
        assert_eq!(next_event(&mut watch).await.change, Change::Added(a));
        gate.freeze();
        next_unavailable(&mut watch).await;
        let b = endpoint("kv", "b", 2);
        register(&direct, &b).await;
        gate.restore();
        assert_eq!(next_event(&mut watch).await.change, Change::Added(b));
    });
}

#[test]
fn a_registrar_cut_off_silently_reports_unavailable_then_renews() {
    run(async {
        let server = EtcdServer::start().await;
        let gate = discover::gate::Gate::start(server.client_port()).await;
        let config = EtcdConfig::new([format!("http://127.0.0.1:{}", gate.port())])
            .keep_alive(Duration::from_millis(100), Duration::from_millis(200))
            .request_timeout(Duration::from_millis(500));
        let gated = Etcd::connect(config).await.unwrap();
        let mut registrar = gated.registrar();
        let a = endpoint("kv", "a", 1);
        let lease = registrar
            .register(&a, Duration::from_secs(30))
            .await
            .unwrap();
        registrar.keep_alive(lease).await.unwrap();
        gate.freeze();
        // Bounded by the request timeout: the driver would register again.
        assert!(matches!(
            registrar.keep_alive(lease).await,
            Err(RegistrarError::Unavailable(_))
        ));
        gate.restore();
        registrar.keep_alive(lease).await.unwrap();
    });
}

#[test]
fn watches_registrars_and_connections_can_move_between_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<EtcdDiscover>();
    send::<courier_registry::etcd::EtcdRegistrar>();
    send_sync::<Etcd>();
    send_sync::<EtcdConfig>();
}
