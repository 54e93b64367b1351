//! The registry over courier-mem on a virtual clock: leases, expiry, watch
//! resume, registry restart, partitions, token refusal, limits and slow
//! watchers — every scenario deterministic.

mod support;

use courier::Shutdown;
use courier_registry::{
    Address, Change, Endpoint, Registration, RegistryError, RegistryWatch, RemoteRegistrar,
    SnapshotKind, StoreConfig,
};
use futures::StreamExt;
use support::{collect, ms, World};

fn ep(instance: &str, port: u16) -> Endpoint {
    Endpoint::new(
        "kv",
        instance,
        Address::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
    )
}

fn config() -> StoreConfig {
    StoreConfig {
        disconnect_grace: ms(200),
        ..StoreConfig::default()
    }
}

fn instances(set: &courier_registry::EndpointSet) -> Vec<String> {
    set.iter().map(|e| e.instance.clone()).collect()
}

#[test]
fn a_missed_ttl_removes_the_instance_and_tells_watchers() {
    let mut world = World::new();
    let registry = world.start_registry(config());
    let writer = world.client();
    let watcher = world.client();
    let clock = world.clock.clone();
    let seen = collect(&mut world, RegistryWatch::new(watcher, "kv", clock));
    let _connected = writer.clone(); // its connection stays up: no grace expiry
    let lease = world.block_on(async move {
        writer
            .register(None, ep("a", 1), ms(300))
            .await
            .unwrap()
            .unwrap()
    });
    assert_ne!(lease, 0);
    assert_eq!(instances(&seen.borrow().set), ["a"]);
    world.advance(ms(299));
    assert_eq!(registry.instances(), 1, "not before the TTL");
    world.advance(ms(1));
    assert_eq!(registry.instances(), 0, "at the TTL");
    let seen = seen.borrow();
    assert!(seen.set.is_empty());
    assert!(matches!(
        seen.events.last().unwrap().change,
        Change::Removed { ref instance } if instance == "a"
    ));
    assert_eq!(seen.errors, 0);
}

#[test]
fn heartbeats_keep_a_sub_second_lease_and_shutdown_deregisters_first() {
    let mut world = World::new();
    let registry = world.start_registry(config());
    let client = world.client();
    let watcher = world.client();
    let clock = world.clock.clone();
    let seen = collect(&mut world, RegistryWatch::new(watcher, "kv", clock));
    let stop = Shutdown::new();
    let server = Shutdown::new();
    let registration = Registration::new(ep("a", 1), ms(150)).propagation(ms(50));
    let done = world.spawn(registration.run(
        RemoteRegistrar::new(client, None),
        world.clock.clone(),
        stop.triggered(),
        Some(server.clone()),
    ));
    world.advance(ms(3_000)); // 20 TTLs
    assert_eq!(registry.instances(), 1);
    assert_eq!(
        seen.borrow().events.len(),
        2,
        "snapshot, added: no flapping"
    );
    stop.trigger();
    world.run();
    // Deregistered at once; the server is told to drain only after the
    // propagation wait.
    assert_eq!(registry.instances(), 0);
    assert!(seen.borrow().set.is_empty());
    assert!(!server.is_triggered());
    world.advance(ms(50));
    assert!(server.is_triggered());
    assert_eq!(done.borrow_mut().take(), Some(Ok(())));
}

#[test]
fn a_dropped_connection_removes_its_instances_after_the_grace() {
    let mut world = World::new();
    let registry = world.start_registry(config());
    let writer = world.client();
    let _keep = writer.clone(); // the client lives on; its connection is cut
    let registered =
        world.block_on(async move { writer.register(None, ep("a", 1), ms(10_000)).await });
    assert!(matches!(registered, Ok(Ok(_))));
    world.partition(true);
    world.advance(ms(199));
    assert_eq!(registry.instances(), 1, "within the grace");
    world.advance(ms(1));
    assert_eq!(registry.instances(), 0, "after the grace");
}

#[test]
fn a_watch_resumes_after_a_cut_without_loss_or_duplicates() {
    let mut world = World::new();
    world.start_registry(config());
    let writer = world.client();
    let watcher = world.client();
    let clock = world.clock.clone();
    let seen = collect(
        &mut world,
        RegistryWatch::new(watcher, "kv", clock).backoff(ms(20), ms(20)),
    );
    let w = writer.clone();
    world.block_on(async move {
        w.register(None, ep("a", 1), ms(60_000))
            .await
            .unwrap()
            .unwrap()
    });
    // Cut every connection; the writer's reconnecting client writes on.
    world.cut();
    let w = writer.clone();
    let lease_b = world.block_on(async move {
        for _ in 0..100 {
            if let Ok(Ok(lease)) = w.register(None, ep("b", 2), ms(60_000)).await {
                return lease;
            }
            futures::pending!();
        }
        panic!("never registered");
    });
    let _ = lease_b;
    world.advance(ms(100));
    let seen = seen.borrow();
    assert!(seen.errors >= 1, "the cut showed as Unavailable");
    assert_eq!(instances(&seen.set), ["a", "b"]);
    // Exactly one snapshot (the initial one) and strictly growing revisions.
    let snapshots = seen
        .events
        .iter()
        .filter(|e| matches!(e.change, Change::Snapshot { .. }))
        .count();
    assert_eq!(snapshots, 1);
    assert!(seen
        .events
        .windows(2)
        .all(|w| w[0].revision < w[1].revision));
}

#[test]
fn after_a_registry_restart_watchers_resync_and_instances_register_again() {
    let mut world = World::new();
    world.start_registry(StoreConfig {
        first_revision: 0,
        ..config()
    });
    let client = world.client();
    let watcher = world.client();
    let clock = world.clock.clone();
    let seen = collect(
        &mut world,
        RegistryWatch::new(watcher, "kv", clock).backoff(ms(20), ms(20)),
    );
    let stop = Shutdown::new();
    let registration = Registration::new(ep("a", 1), ms(300)).retry(ms(20), ms(40));
    world.spawn(registration.run(
        RemoteRegistrar::new(client, None),
        world.clock.clone(),
        stop.triggered(),
        None,
    ));
    world.advance(ms(50));
    assert_eq!(instances(&seen.borrow().set), ["a"]);
    world.crash_registry();
    world.advance(ms(500));
    assert_eq!(
        instances(&seen.borrow().set),
        ["a"],
        "registry loss is not service loss: the watcher keeps its set"
    );
    assert!(seen.borrow().errors >= 1);
    // A new run, with revisions past the old ones; empty at first.
    let registry = world.start_registry(StoreConfig {
        first_revision: 1_000_000,
        lease_seed: 1,
        ..config()
    });
    world.advance(ms(300)); // within one TTL
    assert_eq!(
        registry.instances(),
        1,
        "the instance registered itself again"
    );
    let seen = seen.borrow();
    assert!(seen.events.iter().any(|e| matches!(
        e.change,
        Change::Snapshot {
            kind: SnapshotKind::Resync,
            ..
        }
    )));
    assert_eq!(instances(&seen.set), ["a"]);
}

#[test]
fn a_partition_expires_the_lease_and_healing_registers_it_again() {
    let mut world = World::new();
    let registry = world.start_registry(config());
    let client = world.client();
    // The watcher is on the registry's side of the partition: in-process.
    let seen = collect(&mut world, registry.watch("kv", None).unwrap());
    let stop = Shutdown::new();
    let registration = Registration::new(ep("a", 1), ms(300)).retry(ms(20), ms(40));
    world.spawn(registration.run(
        RemoteRegistrar::new(client, None),
        world.clock.clone(),
        stop.triggered(),
        None,
    ));
    world.advance(ms(50));
    assert_eq!(instances(&seen.borrow().set), ["a"]);
    world.partition(true);
    world.advance(ms(250)); // the grace of the cut connection
    assert!(seen.borrow().set.is_empty(), "removed after the grace");
    world.partition(false);
    world.advance(ms(100));
    assert_eq!(instances(&seen.borrow().set), ["a"], "back after healing");
    assert_eq!(registry.instances(), 1);
}

#[test]
fn writes_without_the_token_are_refused_reads_are_not() {
    let mut world = World::new();
    let registry = world.start_registry(StoreConfig {
        token: Some("t0ken".into()),
        ..config()
    });
    let client = world.client();
    let c = client.clone();
    let (anonymous, wrong, right, listed) = world.block_on(async move {
        let anonymous = c.register(None, ep("a", 1), ms(1_000)).await.unwrap();
        let wrong = c
            .register(Some("token".into()), ep("a", 1), ms(1_000))
            .await
            .unwrap();
        let right = c
            .register(Some("t0ken".into()), ep("a", 1), ms(1_000))
            .await
            .unwrap();
        let listed = c.list(Some("kv".into())).await.unwrap();
        (anonymous, wrong, right, listed)
    });
    assert_eq!(anonymous, Err(RegistryError::Unauthorized));
    assert_eq!(wrong, Err(RegistryError::Unauthorized));
    let lease = right.unwrap();
    assert_eq!(listed.endpoints, [ep("a", 1)]);
    let c = client.clone();
    let (beat, drop) = world.block_on(async move {
        let beats: Vec<_> = c
            .keep_alive(None, futures::stream::iter([lease]))
            .collect()
            .await;
        let drop = c.deregister(None, lease).await.unwrap();
        (beats, drop)
    });
    assert_eq!(beat, [Ok(Err(RegistryError::Unauthorized))]);
    assert_eq!(drop, Err(RegistryError::Unauthorized));
    assert_eq!(registry.instances(), 1);
    // The driver stops with the refusal instead of retrying forever.
    let stop = Shutdown::new();
    let outcome = world.spawn(Registration::new(ep("b", 1), ms(300)).run(
        RemoteRegistrar::new(client, Some("nope".into())),
        world.clock.clone(),
        stop.triggered(),
        None,
    ));
    world.run();
    assert!(matches!(
        outcome.borrow_mut().take(),
        Some(Err(courier_registry::RegistrarError::Refused(_)))
    ));
}

#[test]
fn watchers_per_connection_are_limited_over_the_wire() {
    let mut world = World::new();
    let registry = world.start_registry(StoreConfig {
        max_watchers_per_owner: 2,
        ..config()
    });
    let client = world.client();
    let (release, released) = futures::channel::oneshot::channel::<()>();
    let outcome = world.spawn(async move {
        let mut a = client.watch("kv".into(), None);
        let mut b = client.watch("kv".into(), None); // at the limit
        let opened = a.next().await.is_some() && b.next().await.is_some();
        let mut third = client.watch("kv".into(), None);
        let refused = third.next().await;
        let ended = third.next().await;
        let _ = released.await;
        (opened, refused, ended)
    });
    world.run();
    assert_eq!(registry.watchers(), 2);
    release.send(()).unwrap();
    world.run();
    let (opened, refused, ended) = outcome.borrow_mut().take().unwrap();
    assert!(opened);
    assert_eq!(refused, Some(Ok(Err(RegistryError::TooManyWatchers))));
    assert_eq!(ended, None);
    assert_eq!(registry.watchers(), 0, "closing a watch frees its slot");
}

#[test]
fn a_slow_watcher_costs_one_pending_change_per_instance() {
    let mut world = World::new();
    let registry = world.start_registry(config());
    let writer = world.client();
    let watcher = world.client();
    let want: Vec<_> = ["a", "b", "c"].iter().map(|n| ep(n, 499)).collect();
    let (go, gone) = futures::channel::oneshot::channel::<()>();
    // Open a watch, read its snapshot, then stop reading until told.
    let target = want.clone();
    let outcome = world.spawn(async move {
        let mut stream = watcher.watch("kv".into(), None).with_credit(1);
        let mut set = courier_registry::EndpointSet::new();
        let mut events = 0;
        if let Some(Ok(Ok(event))) = stream.next().await {
            set.apply(&event);
        }
        let _ = gone.await;
        while set.iter().cloned().collect::<Vec<_>>() != target {
            match stream.next().await {
                Some(Ok(Ok(event))) => {
                    set.apply(&event);
                    events += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        events
    });
    world.run();
    world.block_on(async move {
        for round in 0..500u16 {
            for name in ["a", "b", "c"] {
                writer
                    .register(None, ep(name, round), ms(60_000))
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
    });
    let pending = registry.with_store(|s| s.pending_total());
    assert!(
        pending <= 3,
        "{pending} changes pending for a stalled watcher"
    );
    go.send(()).unwrap();
    world.run();
    let events = outcome.borrow_mut().take().expect("converged");
    // The credit window's items plus one coalesced change per instance.
    assert!(events <= 3 + 2, "{events} events for 1,500 changes");
}

/// A registrar whose registry accepts calls but answers the first
/// `hangs` heartbeats never: the driver gives up on each after the step
/// timeout, registers again, and the instance stays registered.
struct Hanging {
    inner: RemoteRegistrar,
    hangs: usize,
}

impl courier_registry::Registrar for Hanging {
    fn register<'a>(
        &'a mut self,
        endpoint: &'a Endpoint,
        ttl: std::time::Duration,
    ) -> courier_registry::RegistrarFuture<'a, courier_registry::LeaseId> {
        self.inner.register(endpoint, ttl)
    }
    fn keep_alive(
        &mut self,
        lease: courier_registry::LeaseId,
    ) -> courier_registry::RegistrarFuture<'_, ()> {
        if self.hangs > 0 {
            self.hangs -= 1;
            return Box::pin(futures::future::pending());
        }
        self.inner.keep_alive(lease)
    }
    fn deregister(
        &mut self,
        lease: courier_registry::LeaseId,
    ) -> courier_registry::RegistrarFuture<'_, ()> {
        self.inner.deregister(lease)
    }
}

#[test]
fn a_heartbeat_that_never_answers_times_out_and_registers_again() {
    let mut world = World::new();
    let registry = world.start_registry(config());
    let client = world.client();
    let stop = Shutdown::new();
    let registrar = Hanging {
        inner: RemoteRegistrar::new(client, None),
        hangs: 2,
    };
    let done = world.spawn(
        Registration::new(ep("a", 1), ms(300))
            .step_timeout(ms(50))
            .retry(ms(10), ms(10))
            .run(registrar, world.clock.clone(), stop.triggered(), None),
    );
    let mut registered_throughout = true;
    for _ in 0..300 {
        world.advance(ms(10));
        registered_throughout &= registry.instances() == 1;
    }
    assert!(
        registered_throughout,
        "each hang cost 50 ms, less than the TTL"
    );
    stop.trigger();
    world.advance(ms(500));
    assert_eq!(done.borrow_mut().take(), Some(Ok(())));
    assert_eq!(registry.instances(), 0);
}
