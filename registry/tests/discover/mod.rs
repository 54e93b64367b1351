//! The shared Discover test suite: one set of behavioural checks that every
//! discovery source passes, written once against [`DiscoverHarness`].
//!
//! # Adding a source
//!
//! 1. Implement [`DiscoverHarness`] for a small type that owns a fresh
//!    source and a way to change it (register and deregister endpoints the
//!    way a server instance would, and, where the source has the notion, cut
//!    watchers off it, make it forget its history, and let a lease lapse).
//!    Say which of those it has in [`DiscoverHarness::supports`]; the checks
//!    that need a missing [`Feature`] print that they are skipped and pass.
//! 2. In a test file: `#[macro_use] mod discover;` then
//!    `discover_suite!(MyHarness);` — one `#[test]` per check, each on a
//!    fresh harness via [`DiscoverHarness::run`]. `tests/discover_etcd.rs`
//!    is a complete example.
//!
//! Beside the suite: [`etcd_server`] starts a real etcd for a test, and
//! [`gate`] is a TCP relay a test can cut (for sources reached over TCP).
//!
//! Every wait is bounded by [`WAIT`] (a hang fails the test; a slow machine
//! does not), and no check asserts that something did *not* happen by
//! sleeping: a check makes one more, known change (a *marker*) and asserts
//! that it is the next event, so an event that should not be there would
//! come before it.
#![allow(dead_code, unused_imports, unused_macros)]

#[cfg(feature = "etcd")]
pub mod etcd_server;
pub mod gate;

use std::future::Future;
use std::time::Duration;

use courier_registry::{
    Address, Change, DiscoverError, Endpoint, EndpointSet, Event, SnapshotKind,
};
use futures_util::{Stream, StreamExt};

/// The longest any check waits for one event: only bounds a hang.
pub const WAIT: Duration = Duration::from_secs(10);

/// What a source may support beyond a snapshot of what was registered
/// before the watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Endpoints registered, updated or deregistered after the watch started
    /// reach it.
    LiveChanges,
    /// [`DiscoverHarness::cut`] and [`DiscoverHarness::restore`]: watchers
    /// lose the source and come back.
    Cut,
    /// [`DiscoverHarness::forget_history`]: resuming becomes impossible.
    ForgetHistory,
    /// [`DiscoverHarness::register_leased`] and
    /// [`DiscoverHarness::stop_renewing`].
    Leases,
}

/// A discovery source under test, with the means to change it.
///
/// Changes made through the harness go to the source directly, never through
/// a watcher's connection: a [`cut`](DiscoverHarness::cut) cuts watchers only.
/// Each method returns once the source has taken the change (not once
/// watchers saw it).
#[allow(async_fn_in_trait)]
pub trait DiscoverHarness: Sized {
    /// The watch this source gives.
    type Watch: Stream<Item = Result<Event, DiscoverError>> + Unpin;

    /// Makes a fresh source and runs `test` on it, on the executor the
    /// source needs; panics propagate.
    fn run<F, Fut>(test: F)
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = ()>;

    /// Whether this source has `feature`.
    fn supports(&self, feature: Feature) -> bool;

    /// Registers `endpoint`, or replaces its registration; it stays until
    /// deregistered (no lease to lapse).
    async fn register(&mut self, endpoint: &Endpoint);

    /// Removes `instance` of `service`.
    async fn deregister(&mut self, service: &str, instance: &str);

    /// Opens a watch of `service`.
    async fn watch(&mut self, service: &str) -> Self::Watch;

    /// Cuts every watch off the source (it must see the source unreachable
    /// and say so with an `Err` item) until [`restore`](Self::restore).
    async fn cut(&mut self) {}

    /// Lets watches reach the source again.
    async fn restore(&mut self) {}

    /// Makes the source unable to resume a watch from any revision delivered
    /// so far (etcd: compaction; a registry: a restart).
    async fn forget_history(&mut self) {}

    /// Registers `endpoint` under a lease of `ttl`, renewed until
    /// [`stop_renewing`](Self::stop_renewing).
    async fn register_leased(&mut self, _endpoint: &Endpoint, _ttl: Duration) {}

    /// Stops renewing `instance`'s lease without deregistering it.
    async fn stop_renewing(&mut self, _service: &str, _instance: &str) {}
}

/// One `#[test]` per check of the suite, for harness `$harness`.
#[macro_export]
macro_rules! discover_suite {
    ($harness:ty) => {
        $crate::discover_suite!(@tests $harness;
            initial_snapshot_holds_what_was_registered,
            changes_arrive_in_order_with_growing_revisions,
            a_burst_of_changes_leaves_the_final_set,
            other_services_are_filtered_out,
            a_cut_watch_reports_errors_then_resumes_without_loss_or_repeats,
            a_watch_that_cannot_resume_gets_a_resync_snapshot,
            an_expired_lease_removes_the_instance,
        );
    };
    (@tests $harness:ty; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                <$harness as $crate::discover::DiscoverHarness>::run(
                    $crate::discover::$check::<$harness>,
                );
            }
        )*
    };
}

/// [`discover_suite!`] inside a module of its own, for a test file that
/// runs the suite against several harnesses.
#[macro_export]
macro_rules! discover_suite_module {
    ($module:ident, $harness:ty) => {
        mod $module {
            use super::*;
            $crate::discover_suite!($harness);
        }
    };
}

/// A TCP endpoint of `service` on port `port`.
pub fn endpoint(service: &str, instance: &str, port: u16) -> Endpoint {
    Endpoint::new(
        service,
        instance,
        Address::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
    )
}

/// The next item of `watch`, or a panic after [`WAIT`].
pub async fn next_item<W: Discover>(watch: &mut W) -> Result<Event, DiscoverError> {
    let timer = async {
        async_io::Timer::after(WAIT).await;
    };
    let next = watch.next();
    futures_util::pin_mut!(timer);
    match futures_util::future::select(next, timer).await {
        futures_util::future::Either::Left((Some(item), _)) => item,
        futures_util::future::Either::Left((None, _)) => panic!("the watch ended"),
        futures_util::future::Either::Right(_) => panic!("no event within {WAIT:?}"),
    }
}

/// The next event of `watch`, skipping errors (a source may report itself
/// unavailable at any time).
pub async fn next_event<W: Discover>(watch: &mut W) -> Event {
    loop {
        if let Ok(event) = next_item(watch).await {
            return event;
        }
    }
}

/// Waits for an `Unavailable` error: the watch noticed it lost its source.
pub async fn next_unavailable<W: Discover>(watch: &mut W) {
    loop {
        if let Err(DiscoverError::Unavailable(_)) = next_item(watch).await {
            return;
        }
    }
}

/// A watch stream, as the suite needs it.
pub trait Discover: Stream<Item = Result<Event, DiscoverError>> + Unpin {}
impl<S: Stream<Item = Result<Event, DiscoverError>> + Unpin> Discover for S {}

fn instances(endpoints: &[Endpoint]) -> Vec<&str> {
    let mut names: Vec<&str> = endpoints.iter().map(|e| e.instance.as_str()).collect();
    names.sort_unstable();
    names
}

/// Registers a marker on `service` and asserts that the next event is its
/// addition: nothing unexpected came before it.
async fn expect_marker<H: DiscoverHarness>(
    h: &mut H,
    watch: &mut H::Watch,
    service: &str,
    after: u64,
) {
    let marker = endpoint(service, "zz-marker", 9999);
    h.register(&marker).await;
    let event = next_event(watch).await;
    assert_eq!(
        event.change,
        Change::Added(marker),
        "an unexpected event came first"
    );
    assert!(
        event.revision > after,
        "revision {} after {after}",
        event.revision
    );
}

/// Opens a watch and returns it with its initial snapshot.
async fn watch_from_start<H: DiscoverHarness>(h: &mut H, service: &str) -> (H::Watch, Event) {
    let mut watch = h.watch(service).await;
    let first = next_event(&mut watch).await;
    assert!(
        matches!(
            first.change,
            Change::Snapshot {
                kind: SnapshotKind::Initial,
                ..
            }
        ),
        "the first event is not an initial snapshot: {first:?}"
    );
    (watch, first)
}

fn skip(feature: Feature) {
    eprintln!("skipped: the source has no {feature:?}");
}

/// The first event is an initial snapshot of exactly the watched service's
/// endpoints, whole.
pub async fn initial_snapshot_holds_what_was_registered<H: DiscoverHarness>(mut h: H) {
    let a = endpoint("kv", "a", 1)
        .with_weight(3)
        .with_metadata("zone", "z1");
    let b = endpoint("kv", "b", 2);
    h.register(&a).await;
    h.register(&b).await;
    h.register(&endpoint("kv2", "c", 3)).await;
    h.register(&endpoint("k", "d", 4)).await;
    let (_watch, first) = watch_from_start(&mut h, "kv").await;
    let Change::Snapshot { endpoints, .. } = first.change else {
        unreachable!()
    };
    assert_eq!(instances(&endpoints), ["a", "b"]);
    assert!(
        endpoints.contains(&a),
        "endpoint a arrived changed: {endpoints:?}"
    );
    assert!(endpoints.contains(&b));
}

/// Added, updated and removed endpoints arrive in order, each with a
/// revision above the one before; applying them gives the source's set.
/// Each change is awaited before the next is made, so that no source may
/// coalesce them.
pub async fn changes_arrive_in_order_with_growing_revisions<H: DiscoverHarness>(mut h: H) {
    if !h.supports(Feature::LiveChanges) {
        return skip(Feature::LiveChanges);
    }
    let (mut watch, first) = watch_from_start(&mut h, "kv").await;
    let mut set = EndpointSet::new();
    set.apply(&first);
    assert!(set.is_empty());
    let a = endpoint("kv", "a", 1);
    let a2 = endpoint("kv", "a", 11)
        .with_weight(5)
        .with_metadata("v", "2");
    let b = endpoint("kv", "b", 2);
    let mut revision = first.revision;
    let steps = [
        (Some(&a), None, Change::Added(a.clone())),
        (Some(&a2), None, Change::Updated(a2.clone())),
        (Some(&b), None, Change::Added(b.clone())),
        (
            None,
            Some("a"),
            Change::Removed {
                instance: "a".into(),
            },
        ),
    ];
    for (register, deregister, change) in steps {
        if let Some(endpoint) = register {
            h.register(endpoint).await;
        }
        if let Some(instance) = deregister {
            h.deregister("kv", instance).await;
        }
        let event = next_event(&mut watch).await;
        assert_eq!(event.change, change);
        assert!(
            event.revision > revision,
            "revision {} after {revision}",
            event.revision
        );
        revision = event.revision;
        set.apply(&event);
    }
    assert_eq!(set.iter().collect::<Vec<_>>(), vec![&b]);
    // A second watch starts from the current set, at a revision no older
    // than what the first one saw.
    let (_second, snapshot) = watch_from_start(&mut h, "kv").await;
    assert!(
        snapshot.revision >= revision,
        "snapshot at {} after {revision}",
        snapshot.revision
    );
    let Change::Snapshot { endpoints, .. } = snapshot.change else {
        unreachable!()
    };
    assert_eq!(endpoints, [b]);
    expect_marker(&mut h, &mut watch, "kv", revision).await;
}

/// A burst of changes made without waiting may reach the watch coalesced,
/// but always in growing revisions, and applying them gives the source's
/// final set.
pub async fn a_burst_of_changes_leaves_the_final_set<H: DiscoverHarness>(mut h: H) {
    if !h.supports(Feature::LiveChanges) {
        return skip(Feature::LiveChanges);
    }
    let (mut watch, first) = watch_from_start(&mut h, "kv").await;
    let mut set = EndpointSet::new();
    set.apply(&first);
    let a2 = endpoint("kv", "a", 11).with_weight(5);
    let c = endpoint("kv", "c", 3);
    h.register(&endpoint("kv", "a", 1)).await;
    h.register(&endpoint("kv", "b", 2)).await;
    h.register(&a2).await;
    h.deregister("kv", "b").await;
    h.register(&c).await;
    let marker = endpoint("kv", "zz-marker", 9999);
    h.register(&marker).await;
    let mut revision = first.revision;
    while set.get("zz-marker").is_none() {
        let event = next_event(&mut watch).await;
        assert!(
            event.revision > revision,
            "revision {} after {revision}",
            event.revision
        );
        revision = event.revision;
        set.apply(&event);
    }
    assert_eq!(set.iter().collect::<Vec<_>>(), vec![&a2, &c, &marker]);
}

/// Changes to other services — including names that share a prefix with
/// the watched one — never reach the watch.
pub async fn other_services_are_filtered_out<H: DiscoverHarness>(mut h: H) {
    if !h.supports(Feature::LiveChanges) {
        return skip(Feature::LiveChanges);
    }
    let (mut watch, first) = watch_from_start(&mut h, "kv").await;
    for service in ["kv2", "k", "kv.x", "other"] {
        h.register(&endpoint(service, "a", 1)).await;
        h.deregister(service, "a").await;
    }
    expect_marker(&mut h, &mut watch, "kv", first.revision).await;
}

/// A watch cut off its source says so with `Err` items and keeps trying;
/// once back, it delivers exactly the changes it missed, in order, once.
pub async fn a_cut_watch_reports_errors_then_resumes_without_loss_or_repeats<H: DiscoverHarness>(
    mut h: H,
) {
    if !h.supports(Feature::LiveChanges) || !h.supports(Feature::Cut) {
        return skip(Feature::Cut);
    }
    let (a, b, c) = (
        endpoint("kv", "a", 1),
        endpoint("kv", "b", 2),
        endpoint("kv", "c", 3),
    );
    let (mut watch, _) = watch_from_start(&mut h, "kv").await;
    let mut revision = 0;
    for e in [&a, &b, &c] {
        h.register(e).await;
        let event = next_event(&mut watch).await;
        assert_eq!(event.change, Change::Added(e.clone()));
        revision = event.revision;
    }
    h.cut().await;
    next_unavailable(&mut watch).await;
    // Another error or two while cut is fine: the watch keeps retrying.
    let a2 = a.clone().with_weight(7);
    let d = endpoint("kv", "d", 4);
    h.register(&a2).await;
    h.deregister("kv", "b").await;
    h.register(&d).await;
    h.restore().await;
    let expected = [
        Change::Updated(a2),
        Change::Removed {
            instance: "b".into(),
        },
        Change::Added(d),
    ];
    for change in expected {
        let event = next_event(&mut watch).await;
        assert_eq!(event.change, change, "after resuming");
        assert!(
            event.revision > revision,
            "revision {} after {revision}",
            event.revision
        );
        revision = event.revision;
    }
    expect_marker(&mut h, &mut watch, "kv", revision).await;
}

/// A watch that comes back after its source forgot the history it would
/// resume from gets the whole set again, flagged as a resync.
pub async fn a_watch_that_cannot_resume_gets_a_resync_snapshot<H: DiscoverHarness>(mut h: H) {
    if !h.supports(Feature::LiveChanges) || !h.supports(Feature::Cut) {
        return skip(Feature::Cut);
    }
    if !h.supports(Feature::ForgetHistory) {
        return skip(Feature::ForgetHistory);
    }
    let (a, b, c) = (
        endpoint("kv", "a", 1),
        endpoint("kv", "b", 2),
        endpoint("kv", "c", 3),
    );
    h.register(&a).await;
    h.register(&b).await;
    let (mut watch, first) = watch_from_start(&mut h, "kv").await;
    h.cut().await;
    next_unavailable(&mut watch).await;
    h.deregister("kv", "a").await;
    h.register(&c).await;
    h.forget_history().await;
    h.restore().await;
    let event = next_event(&mut watch).await;
    match &event.change {
        Change::Snapshot {
            endpoints,
            kind: SnapshotKind::Resync,
        } => {
            assert_eq!(instances(endpoints), ["b", "c"]);
            assert!(endpoints.contains(&c));
        }
        other => panic!("expected a resync snapshot, got {other:?}"),
    }
    let mut set = EndpointSet::new();
    set.apply(&first);
    set.apply(&event);
    assert_eq!(
        set.iter().map(|e| e.instance.as_str()).collect::<Vec<_>>(),
        ["b", "c"]
    );
    expect_marker(&mut h, &mut watch, "kv", event.revision).await;
}

/// An instance whose lease is no longer renewed leaves the set by itself.
pub async fn an_expired_lease_removes_the_instance<H: DiscoverHarness>(mut h: H) {
    if !h.supports(Feature::Leases) {
        return skip(Feature::Leases);
    }
    let (mut watch, _) = watch_from_start(&mut h, "kv").await;
    let a = endpoint("kv", "a", 1);
    let b = endpoint("kv", "b", 2);
    h.register_leased(&a, Duration::from_secs(1)).await;
    h.register(&b).await;
    assert_eq!(next_event(&mut watch).await.change, Change::Added(a));
    let added_b = next_event(&mut watch).await;
    assert_eq!(added_b.change, Change::Added(b));
    h.stop_renewing("kv", "a").await;
    let event = next_event(&mut watch).await;
    assert_eq!(
        event.change,
        Change::Removed {
            instance: "a".into()
        }
    );
    assert!(event.revision > added_b.revision);
    expect_marker(&mut h, &mut watch, "kv", event.revision).await;
}
