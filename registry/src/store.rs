//! The registry's state machine: instances under leases, revisions, a
//! bounded history per service, and watchers with coalesced pending changes.
//!
//! No I/O and no clock: every method that depends on time takes `now`, a
//! [`Duration`] on the caller's monotonic clock. The service
//! ([`crate::server`]) wraps one [`Store`] in a lock and drives its expiry.
//!
//! # Revisions
//!
//! Every change (an instance added, updated or removed) takes the next
//! revision. Revisions start after [`StoreConfig::first_revision`]: a
//! registry that restarts picks a larger one (the server uses the wall clock
//! in microseconds), so a watcher resuming from a revision of the previous
//! run is never served another run's history — it gets a
//! [`SnapshotKind::Resync`].
//!
//! # History and resume
//!
//! Each service keeps its last [`StoreConfig::history`] events. A watch from
//! revision `r` is served those after `r` when the history still holds every
//! change of that service after `r`; otherwise it starts with a `Resync`
//! snapshot.
//!
//! # Coalescing
//!
//! A watcher's pending changes hold at most one change per instance (the
//! latest); they are delivered in revision order. A later change replaces
//! an earlier one of the same instance, so a slow watcher skips revisions
//! but ends at the right set: after it received revision `r`, every change
//! it did not receive at or before `r` was superseded by a pending one after
//! `r`. Past [`StoreConfig::max_pending`] distinct instances the pending
//! changes collapse into one `Resync` snapshot, built when delivered.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::task::Waker;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::discover::{Change, Event, SnapshotKind};
use crate::endpoint::{Endpoint, EndpointLimits, InvalidEndpoint};
use crate::registration::LeaseId;

/// Who holds leases and watchers: one connection to the registry.
pub type OwnerId = u64;

/// One watch, as the store knows it.
pub type WatcherId = u64;

/// Limits and settings of a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Size limits on one endpoint.
    pub endpoint: EndpointLimits,
    /// Most instances in the registry. Default 100,000.
    pub max_instances: usize,
    /// Most instances one connection holds leases for. Default 1,000.
    pub max_instances_per_owner: usize,
    /// Most watches open in the registry. Default 10,000.
    pub max_watchers: usize,
    /// Most watches one connection has open. Default 64.
    pub max_watchers_per_owner: usize,
    /// Events kept per service for watchers that resume. Default 1,024.
    pub history: usize,
    /// Most distinct instances a watcher's pending changes hold before they
    /// collapse into a snapshot. Default 1,024.
    pub max_pending: usize,
    /// Shortest lease TTL. Default 10 ms.
    pub min_ttl: Duration,
    /// Longest lease TTL. Default 1 hour.
    pub max_ttl: Duration,
    /// How long the instances of a connection that dropped stay registered
    /// (a keep-alive from a new connection adopts them). Default 1 s.
    pub disconnect_grace: Duration,
    /// The revision before the first change (see the module docs).
    pub first_revision: u64,
    /// Seeds lease ids. **Give each run of a registry another seed** (the
    /// binary uses its start time and process id): a restarted registry with
    /// the same seed hands out the same ids again, and an instance still
    /// holding a lease of the earlier run would renew another instance's
    /// lease instead of learning that its own is gone.
    pub lease_seed: u64,
    /// The shared secret writes must carry; `None` lets every write in.
    pub token: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            endpoint: EndpointLimits::default(),
            max_instances: 100_000,
            max_instances_per_owner: 1_000,
            max_watchers: 10_000,
            max_watchers_per_owner: 64,
            history: 1_024,
            max_pending: 1_024,
            min_ttl: Duration::from_millis(10),
            max_ttl: Duration::from_secs(3600),
            disconnect_grace: Duration::from_secs(1),
            first_revision: 0,
            lease_seed: 0,
            token: None,
        }
    }
}

/// Why the registry refused a request. Travels on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, courier::Schema)]
pub enum RegistryError {
    /// A write without the registry's token, or with a wrong one.
    Unauthorized,
    /// The endpoint failed validation.
    Invalid(InvalidEndpoint),
    /// The TTL is outside the registry's allowed range.
    TtlOutOfRange,
    /// The registry, or this connection, holds as many instances as allowed.
    TooManyInstances,
    /// The registry, or this connection, has as many watches as allowed.
    TooManyWatchers,
    /// No such lease (it expired, was dropped, or the registry restarted).
    LeaseNotFound,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Unauthorized => f.write_str("missing or wrong registry token"),
            RegistryError::Invalid(why) => write!(f, "invalid endpoint: {why}"),
            RegistryError::TtlOutOfRange => f.write_str("lease TTL out of range"),
            RegistryError::TooManyInstances => f.write_str("too many instances"),
            RegistryError::TooManyWatchers => f.write_str("too many watchers"),
            RegistryError::LeaseNotFound => f.write_str("no such lease"),
        }
    }
}

impl std::error::Error for RegistryError {}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

struct Lease {
    service: String,
    instance: String,
    ttl: Duration,
    expires_at: Duration,
    /// `None` once its connection dropped (within the grace).
    owner: Option<OwnerId>,
}

/// One recorded change, shared by the service's history and every watcher
/// it is pending for; encoded for the wire at most once.
struct Recorded {
    event: Event,
    /// The instance it changes: the key of every watcher's pending index,
    /// shared so that queueing the change for a watcher allocates nothing.
    instance: Arc<str>,
    encoded: OnceLock<Arc<[u8]>>,
}

impl Recorded {
    fn encoded(&self) -> Arc<[u8]> {
        self.encoded
            .get_or_init(|| encode_item(&Ok::<&Event, ()>(&self.event)))
            .clone()
    }
}

#[derive(Default)]
struct Service {
    /// Instance name → (endpoint, lease).
    instances: BTreeMap<String, (Endpoint, LeaseId)>,
    /// The last events of this service, oldest first.
    history: VecDeque<Arc<Recorded>>,
    /// The last snapshot encoded for the wire: its revision, kind and
    /// bytes, shared by every watcher that starts at that revision.
    encoded_snapshot: Option<(u64, SnapshotKind, Arc<[u8]>)>,
    /// Every change of this service after this revision is in `history`.
    complete_after: u64,
    watchers: BTreeSet<WatcherId>,
}

struct Watcher {
    service: String,
    owner: OwnerId,
    /// A snapshot to send before anything else (it covers every change).
    snapshot: Option<SnapshotKind>,
    /// Pending changes in revision order, at most one per instance. (A
    /// queue and an index that keep their capacity: queueing a change for
    /// each of many watchers, under the registry's lock, allocates
    /// nothing.)
    pending: VecDeque<Arc<Recorded>>,
    /// Instance → the revision of its pending change; kept only while more
    /// than [`SCAN_PENDING`] changes are pending, and then for all of them
    /// (empty otherwise: a short queue is searched instead of hashed).
    pending_by_instance: HashMap<Arc<str>, u64>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct OwnerCounts {
    instances: usize,
    watchers: usize,
}

/// The registry's state; see the [module docs](self).
pub struct Store {
    config: StoreConfig,
    revision: u64,
    next_lease: u64,
    next_watcher: WatcherId,
    leases: HashMap<LeaseId, Lease>,
    /// (expiry, lease) for every lease: the next to expire first.
    expiries: BTreeSet<(Duration, LeaseId)>,
    services: BTreeMap<String, Service>,
    watchers: HashMap<WatcherId, Watcher, BuildWatcherHasher>,
    owners: HashMap<OwnerId, OwnerCounts>,
    /// Watchers' wakers to wake, taken by [`Store::take_woken`].
    woken: Vec<Waker>,
}

impl Store {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Store {
            revision: config.first_revision,
            next_lease: 0,
            next_watcher: 0,
            leases: HashMap::new(),
            expiries: BTreeSet::new(),
            services: BTreeMap::new(),
            watchers: HashMap::default(),
            owners: HashMap::new(),
            woken: Vec::new(),
            config,
        }
    }

    /// The settings this store runs with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The revision of the last change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// How many instances are registered.
    pub fn instances(&self) -> usize {
        self.leases.len()
    }

    /// How many watches are open.
    pub fn watchers(&self) -> usize {
        self.watchers.len()
    }

    /// Checks a write's token (constant-time over the secret's bytes).
    pub fn authorize(&self, token: Option<&str>) -> Result<(), RegistryError> {
        match (&self.config.token, token) {
            (None, _) => Ok(()),
            (Some(want), Some(got)) if same_secret(want.as_bytes(), got.as_bytes()) => Ok(()),
            (Some(_), _) => Err(RegistryError::Unauthorized),
        }
    }

    /// Registers `endpoint` for `owner` under a new lease of `ttl`; an
    /// instance of the same name is replaced (an update). Returns the lease.
    pub fn register(
        &mut self,
        owner: OwnerId,
        endpoint: Endpoint,
        ttl: Duration,
        now: Duration,
    ) -> Result<LeaseId, RegistryError> {
        endpoint
            .validate(&self.config.endpoint)
            .map_err(RegistryError::Invalid)?;
        if ttl < self.config.min_ttl || ttl > self.config.max_ttl {
            return Err(RegistryError::TtlOutOfRange);
        }
        let replaced = self
            .services
            .get(&endpoint.service)
            .and_then(|s| s.instances.get(&endpoint.instance))
            .map(|(old, lease)| (old.clone(), *lease));
        let owned = self.owners.get(&owner).map_or(0, |o| o.instances);
        // A replaced instance frees its slot (when it was this owner's).
        let replaced_own = replaced
            .as_ref()
            .and_then(|(_, lease)| self.leases.get(lease))
            .is_some_and(|l| l.owner == Some(owner));
        let total = self
            .leases
            .len()
            .saturating_sub(usize::from(replaced.is_some()));
        let owned = owned.saturating_sub(usize::from(replaced_own));
        if total >= self.config.max_instances || owned >= self.config.max_instances_per_owner {
            return Err(RegistryError::TooManyInstances);
        }
        if let Some((_, old_lease)) = &replaced {
            self.discard_lease(*old_lease);
        }
        let lease = self.new_lease_id();
        let expires_at = now.saturating_add(ttl);
        self.leases.insert(
            lease,
            Lease {
                service: endpoint.service.clone(),
                instance: endpoint.instance.clone(),
                ttl,
                expires_at,
                owner: Some(owner),
            },
        );
        self.expiries.insert((expires_at, lease));
        self.owners.entry(owner).or_default().instances += 1;
        let name = endpoint.service.clone();
        self.service_entry(&name)
            .instances
            .insert(endpoint.instance.clone(), (endpoint.clone(), lease));
        match replaced {
            Some((old, _)) if old == endpoint => {}
            Some(_) => self.record(&name, Change::Updated(endpoint)),
            None => self.record(&name, Change::Added(endpoint)),
        }
        Ok(lease)
    }

    /// Renews `lease` for another TTL from `now`. A lease whose connection
    /// dropped is adopted by `owner`.
    pub fn keep_alive(
        &mut self,
        owner: OwnerId,
        lease: LeaseId,
        now: Duration,
    ) -> Result<(), RegistryError> {
        let Some(entry) = self.leases.get(&lease) else {
            return Err(RegistryError::LeaseNotFound);
        };
        let adopt = entry.owner != Some(owner);
        if adopt {
            let owned = self.owners.get(&owner).map_or(0, |o| o.instances);
            if owned >= self.config.max_instances_per_owner {
                return Err(RegistryError::TooManyInstances);
            }
        }
        let Some(entry) = self.leases.get_mut(&lease) else {
            return Err(RegistryError::LeaseNotFound);
        };
        let previous = entry.owner.replace(owner);
        let old_expiry = entry.expires_at;
        entry.expires_at = now.saturating_add(entry.ttl);
        let new_expiry = entry.expires_at;
        self.expiries.remove(&(old_expiry, lease));
        self.expiries.insert((new_expiry, lease));
        if adopt {
            if let Some(prev) = previous {
                self.release_instance_slot(prev);
            }
            self.owners.entry(owner).or_default().instances += 1;
        }
        Ok(())
    }

    /// Drops `lease` and its instance. Unknown leases are ignored.
    pub fn deregister(&mut self, lease: LeaseId) {
        self.drop_lease(lease);
    }

    /// The connection `owner` dropped: its watches end now, its instances
    /// expire after the disconnect grace unless another connection renews
    /// their leases first.
    pub fn disconnect(&mut self, owner: OwnerId, now: Duration) {
        let grace_end = now.saturating_add(self.config.disconnect_grace);
        let held: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.owner == Some(owner))
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            if let Some(lease) = self.leases.get_mut(&id) {
                lease.owner = None;
                if grace_end < lease.expires_at {
                    self.expiries.remove(&(lease.expires_at, id));
                    lease.expires_at = grace_end;
                    self.expiries.insert((grace_end, id));
                }
            }
        }
        let watches: Vec<WatcherId> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for id in watches {
            self.unwatch(id);
        }
        self.owners.remove(&owner);
    }

    /// Removes every lease that expired at `now`; returns how many.
    pub fn expire(&mut self, now: Duration) -> usize {
        let mut expired = 0;
        while let Some(&(at, lease)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.drop_lease(lease);
            expired += 1;
        }
        expired
    }

    /// When the next lease expires, if any.
    pub fn next_expiry(&self) -> Option<Duration> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// The endpoints of `service` (every service's when `None`), ordered by
    /// service and instance.
    pub fn list(&self, service: Option<&str>) -> Vec<Endpoint> {
        let one = |s: &Service| s.instances.values().map(|(e, _)| e.clone()).collect();
        match service {
            Some(name) => self.services.get(name).map_or_else(Vec::new, one),
            None => self.services.values().flat_map(one).collect(),
        }
    }

    /// Opens a watch of `service` for `owner`: from the beginning (an
    /// `Initial` snapshot) or resuming after `from_revision`.
    pub fn watch(
        &mut self,
        owner: OwnerId,
        service: &str,
        from_revision: Option<u64>,
    ) -> Result<WatcherId, RegistryError> {
        self.config
            .endpoint
            .check_service(service)
            .map_err(RegistryError::Invalid)?;
        let owned = self.owners.get(&owner).map_or(0, |o| o.watchers);
        if self.watchers.len() >= self.config.max_watchers
            || owned >= self.config.max_watchers_per_owner
        {
            return Err(RegistryError::TooManyWatchers);
        }
        let id = self.next_watcher;
        self.next_watcher = self.next_watcher.wrapping_add(1);
        let mut watcher = Watcher {
            service: service.to_string(),
            owner,
            snapshot: None,
            pending: VecDeque::new(),
            pending_by_instance: HashMap::new(),
            waker: None,
        };
        let (revision, max_pending) = (self.revision, self.config.max_pending);
        let entry = self.service_entry(service);
        match from_revision {
            None => watcher.snapshot = Some(SnapshotKind::Initial),
            Some(from) if from >= entry.complete_after && from <= revision => {
                for recorded in entry.history.iter().filter(|r| r.event.revision > from) {
                    watcher.push(recorded.clone(), max_pending);
                }
            }
            Some(_) => watcher.snapshot = Some(SnapshotKind::Resync),
        }
        entry.watchers.insert(id);
        self.watchers.insert(id, watcher);
        self.owners.entry(owner).or_default().watchers += 1;
        Ok(id)
    }

    /// Closes a watch; unknown ids are ignored.
    pub fn unwatch(&mut self, id: WatcherId) {
        let Some(mut watcher) = self.watchers.remove(&id) else {
            return;
        };
        if let Some(waker) = watcher.waker.take() {
            self.woken.push(waker); // Its stream sees the end.
        }
        if let Some(service) = self.services.get_mut(&watcher.service) {
            service.watchers.remove(&id);
            self.forget_if_empty(&watcher.service);
        }
        if let Some(counts) = self.owners.get_mut(&watcher.owner) {
            counts.watchers = counts.watchers.saturating_sub(1);
        }
        self.forget_owner_if_idle(watcher.owner);
    }

    /// The watcher's next event, or `None` after registering `waker` to be
    /// woken when one is pending. `None` also for an unknown watcher (with
    /// nothing registered).
    pub fn next_event(&mut self, id: WatcherId, waker: Option<&Waker>) -> Option<Event> {
        let revision = self.revision;
        let watcher = self.watchers.get_mut(&id)?;
        if let Some(kind) = watcher.snapshot.take() {
            watcher.pending.clear();
            watcher.pending_by_instance.clear();
            let endpoints = self
                .services
                .get(&watcher.service)
                .map(|s| s.instances.values().map(|(e, _)| e.clone()).collect())
                .unwrap_or_default();
            return Some(Event {
                revision,
                change: Change::Snapshot { endpoints, kind },
            });
        }
        if let Some(recorded) = watcher.pop() {
            return Some(match Arc::try_unwrap(recorded) {
                Ok(recorded) => recorded.event,
                Err(shared) => shared.event.clone(),
            });
        }
        watcher.wait(waker);
        None
    }

    /// Like [`next_event`](Store::next_event), but the event comes encoded
    /// as the wire's watch item (`Result<Event, RegistryError>`, always
    /// `Ok`), in bytes shared with every other watcher that gets the same
    /// event: a change is encoded once however many watch it, a snapshot
    /// once per revision.
    pub fn next_encoded(&mut self, id: WatcherId, waker: Option<&Waker>) -> Option<Arc<[u8]>> {
        let revision = self.revision;
        let watcher = self.watchers.get_mut(&id)?;
        if let Some(kind) = watcher.snapshot.take() {
            watcher.pending.clear();
            watcher.pending_by_instance.clear();
            let service = self.services.get_mut(&watcher.service)?;
            return Some(service.encoded_snapshot(revision, kind));
        }
        if let Some(recorded) = watcher.pop() {
            return Some(recorded.encoded());
        }
        watcher.wait(waker);
        None
    }

    /// How many changes all watchers have pending together.
    pub fn pending_total(&self) -> usize {
        self.watchers.keys().map(|id| self.pending(*id)).sum()
    }

    /// The wakers of the watchers that have something new (an event, or
    /// their end) since the last call. The store never wakes anyone
    /// itself, so that its owner can wake them after releasing its lock:
    /// call this after every change.
    pub fn take_woken(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.woken)
    }

    /// Whether watch `id` is open.
    pub fn is_watching(&self, id: WatcherId) -> bool {
        self.watchers.contains_key(&id)
    }

    /// How many changes a watcher has pending (a snapshot counts as one).
    pub fn pending(&self, id: WatcherId) -> usize {
        self.watchers
            .get(&id)
            .map_or(0, |w| w.pending.len() + usize::from(w.snapshot.is_some()))
    }

    fn new_lease_id(&mut self) -> LeaseId {
        loop {
            self.next_lease = self.next_lease.wrapping_add(1);
            // A random start per seed, so that runs with nearby seeds do
            // not share ids.
            let start = splitmix64(self.config.lease_seed);
            let id = splitmix64(start.wrapping_add(self.next_lease));
            if id != 0 && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }

    fn release_instance_slot(&mut self, owner: OwnerId) {
        if let Some(counts) = self.owners.get_mut(&owner) {
            counts.instances = counts.instances.saturating_sub(1);
        }
        self.forget_owner_if_idle(owner);
    }

    fn forget_owner_if_idle(&mut self, owner: OwnerId) {
        if self
            .owners
            .get(&owner)
            .is_some_and(|c| c.instances == 0 && c.watchers == 0)
        {
            self.owners.remove(&owner);
        }
    }

    /// The entry of service `name`, created if missing. A created service
    /// knows no history before now: resuming from earlier gets a `Resync`.
    fn service_entry(&mut self, name: &str) -> &mut Service {
        let revision = self.revision;
        self.services
            .entry(name.to_string())
            .or_insert_with(|| Service {
                complete_after: revision,
                ..Service::default()
            })
    }

    /// Removes a lease (its expiry and its owner's slot), not its instance.
    fn discard_lease(&mut self, id: LeaseId) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.expiries.remove(&(lease.expires_at, id));
        if let Some(owner) = lease.owner {
            self.release_instance_slot(owner);
        }
        Some(lease)
    }

    /// Removes a lease and its instance, recording the removal.
    fn drop_lease(&mut self, id: LeaseId) {
        let Some(lease) = self.discard_lease(id) else {
            return;
        };
        let removed = self
            .services
            .get_mut(&lease.service)
            .and_then(|s| s.instances.remove(&lease.instance));
        if removed.is_some() {
            self.record(
                &lease.service,
                Change::Removed {
                    instance: lease.instance,
                },
            );
        }
        self.forget_if_empty(&lease.service);
    }

    /// Takes the next revision for `change` of `service`: into its history
    /// and every watcher's pending changes.
    fn record(&mut self, service: &str, change: Change) {
        let Some(instance) = instance_of(&change).map(Arc::from) else {
            return; // Snapshots are never recorded.
        };
        self.revision = self.revision.saturating_add(1);
        let revision = self.revision;
        let (history, max_pending) = (self.config.history, self.config.max_pending);
        let Some(service) = self.services.get_mut(service) else {
            return;
        };
        let recorded = Arc::new(Recorded {
            event: Event { revision, change },
            instance,
            encoded: OnceLock::new(),
        });
        service.history.push_back(recorded.clone());
        while service.history.len() > history {
            if let Some(dropped) = service.history.pop_front() {
                service.complete_after = dropped.event.revision;
            }
        }
        self.woken.reserve(service.watchers.len());
        for id in &service.watchers {
            if let Some(watcher) = self.watchers.get_mut(id) {
                watcher.push(recorded.clone(), max_pending);
                if let Some(waker) = watcher.waker.take() {
                    self.woken.push(waker);
                }
            }
        }
    }

    /// Forgets a service with no instances and no watchers (and its
    /// history: see [`Store::service_entry`]).
    fn forget_if_empty(&mut self, name: &str) {
        let empty = self
            .services
            .get(name)
            .is_some_and(|s| s.instances.is_empty() && s.watchers.is_empty());
        if empty {
            self.services.remove(name);
        }
    }
}

impl Service {
    /// The wire item of a snapshot of this service at `revision`: encoded
    /// straight from the instances (no copy of them), then kept for the
    /// next watcher that starts at the same revision.
    fn encoded_snapshot(&mut self, revision: u64, kind: SnapshotKind) -> Arc<[u8]> {
        if let Some((at, cached_kind, bytes)) = &self.encoded_snapshot {
            if *at == revision && *cached_kind == kind {
                return bytes.clone();
            }
        }
        let endpoints = self.instances.values().map(|(endpoint, _)| endpoint);
        let event = SnapshotEvent {
            revision,
            change: SnapshotChange::Snapshot {
                endpoints: SerializeSeq(std::cell::Cell::new(Some(endpoints))),
                kind,
            },
        };
        let bytes = encode_item(&Ok::<_, ()>(event));
        self.encoded_snapshot = Some((revision, kind, bytes.clone()));
        bytes
    }
}

/// An [`Event`] of a [`Change::Snapshot`], borrowing its endpoints: the
/// same encoding (the snapshot is `Change`'s first variant).
#[derive(Serialize)]
struct SnapshotEvent<E: Serialize> {
    revision: u64,
    change: SnapshotChange<E>,
}

#[derive(Serialize)]
enum SnapshotChange<E: Serialize> {
    Snapshot { endpoints: E, kind: SnapshotKind },
}

/// Serializes an iterator of known length as a sequence, once.
struct SerializeSeq<I>(std::cell::Cell<Option<I>>);

impl<'a, I: ExactSizeIterator<Item = &'a Endpoint>> Serialize for SerializeSeq<I> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.take() {
            Some(items) => serializer.collect_seq(items),
            None => Err(serde::ser::Error::custom("sequence already serialized")),
        }
    }
}

/// Encodes one wire item. Cannot fail in practice (the output grows as
/// needed and every sequence's length is known); if it did, the empty item
/// fails to decode at the watcher, which reports it and goes on.
fn encode_item<T: Serialize>(item: &T) -> Arc<[u8]> {
    let encoded = postcard::to_allocvec(item);
    debug_assert!(encoded.is_ok(), "a watch item did not encode");
    encoded.map_or_else(|_| Arc::from([]), Arc::from)
}

/// Up to this many pending changes, a watcher finds an instance's pending
/// change by scanning its queue; past it, through its index. A watcher
/// that keeps up has 0 or 1 pending: queueing and taking a change then
/// hash nothing.
const SCAN_PENDING: usize = 8;

impl Watcher {
    /// The next pending change, if any.
    fn pop(&mut self) -> Option<Arc<Recorded>> {
        let recorded = self.pending.pop_front()?;
        if !self.pending_by_instance.is_empty() {
            self.pending_by_instance.remove(&recorded.instance);
        }
        Some(recorded)
    }

    /// Nothing pending: keeps `waker` to be woken when something is.
    fn wait(&mut self, waker: Option<&Waker>) {
        if let Some(waker) = waker {
            if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                self.waker = Some(waker.clone());
            }
        }
    }

    /// Where the pending change of `instance` is in the queue, if any.
    fn pending_position(&self, instance: &str) -> Option<usize> {
        if self.pending_by_instance.is_empty() {
            return self.pending.iter().position(|r| &*r.instance == instance);
        }
        let revision = *self.pending_by_instance.get(instance)?;
        // Changes are queued in revision order: found by bisection.
        self.pending
            .binary_search_by_key(&revision, |r| r.event.revision)
            .ok()
    }

    /// Adds a change, replacing the instance's pending one; past
    /// `max_pending` instances, collapses everything into a snapshot.
    fn push(&mut self, recorded: Arc<Recorded>, max_pending: usize) {
        if self.snapshot.is_some() {
            return; // The snapshot, built when sent, covers it.
        }
        if let Some(at) = self.pending_position(&recorded.instance) {
            self.pending.remove(at);
        }
        if !self.pending_by_instance.is_empty() {
            self.pending_by_instance
                .insert(recorded.instance.clone(), recorded.event.revision);
        }
        self.pending.push_back(recorded);
        // One change per instance: the queue's length is the instances'.
        if self.pending.len() > max_pending {
            self.pending.clear();
            self.pending_by_instance.clear();
            self.snapshot = Some(SnapshotKind::Resync);
        } else if self.pending.len() > SCAN_PENDING && self.pending_by_instance.is_empty() {
            let index = self
                .pending
                .iter()
                .map(|r| (r.instance.clone(), r.event.revision));
            self.pending_by_instance.extend(index);
        }
    }
}

/// Hashes [`WatcherId`]s, which the store hands out in sequence (never
/// peer input, so no keyed hash is needed against chosen collisions): a
/// multiply spreads consecutive ids over the table. Looking a watcher up
/// is done several times per delivery.
#[derive(Clone, Copy, Default)]
struct BuildWatcherHasher;

impl std::hash::BuildHasher for BuildWatcherHasher {
    type Hasher = WatcherHasher;

    fn build_hasher(&self) -> WatcherHasher {
        WatcherHasher(0)
    }
}

struct WatcherHasher(u64);

impl std::hash::Hasher for WatcherHasher {
    fn finish(&self) -> u64 {
        // Fibonacci hashing: the high bits (the table's control bytes) and
        // the low bits (its bucket) both depend on every bit of the id.
        let spread = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        spread ^ (spread >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// The instance a change is about (`None` for a snapshot).
fn instance_of(change: &Change) -> Option<&str> {
    match change {
        Change::Added(e) | Change::Updated(e) => Some(&e.instance),
        Change::Removed { instance } => Some(instance),
        Change::Snapshot { .. } => None,
    }
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::EndpointSet;
    use crate::endpoint::Address;

    const SEC: Duration = Duration::from_secs(1);

    fn ep(service: &str, instance: &str, port: u16) -> Endpoint {
        Endpoint::new(
            service,
            instance,
            Address::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        )
    }

    fn store() -> Store {
        Store::new(StoreConfig::default())
    }

    fn drain(store: &mut Store, watcher: WatcherId) -> Vec<Event> {
        std::iter::from_fn(|| store.next_event(watcher, None)).collect()
    }

    #[test]
    fn register_update_and_deregister_are_recorded_once_each() {
        let mut s = store();
        let w = s.watch(1, "kv", None).unwrap();
        let mut events = drain(&mut s, w); // the initial snapshot
        let lease = s
            .register(2, ep("kv", "a", 1), SEC, Duration::ZERO)
            .unwrap();
        // The same endpoint again: a new lease, no change.
        let lease2 = s
            .register(2, ep("kv", "a", 1), SEC, Duration::ZERO)
            .unwrap();
        assert_ne!(lease, lease2);
        assert_eq!(
            s.keep_alive(2, lease, Duration::ZERO),
            Err(RegistryError::LeaseNotFound)
        );
        events.extend(drain(&mut s, w));
        let lease3 = s
            .register(2, ep("kv", "a", 2), SEC, Duration::ZERO)
            .unwrap();
        events.extend(drain(&mut s, w)); // one at a time: no coalescing
        s.deregister(lease3);
        s.deregister(lease3);
        events.extend(drain(&mut s, w));
        let changes: Vec<_> = events.iter().map(|e| &e.change).collect();
        assert!(
            matches!(changes[0], Change::Snapshot { endpoints, kind: SnapshotKind::Initial } if endpoints.is_empty())
        );
        assert_eq!(changes[1], &Change::Added(ep("kv", "a", 1)));
        assert_eq!(changes[2], &Change::Updated(ep("kv", "a", 2)));
        assert_eq!(
            changes[3],
            &Change::Removed {
                instance: "a".into()
            }
        );
        assert_eq!(changes.len(), 4);
        let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, [0, 1, 2, 3]);
        assert_eq!(s.instances(), 0);
    }

    #[test]
    fn a_lease_expires_at_its_ttl_and_a_keep_alive_moves_that() {
        let mut s = store();
        let ttl = Duration::from_millis(300); // sub-second
        let lease = s
            .register(1, ep("kv", "a", 1), ttl, Duration::ZERO)
            .unwrap();
        assert_eq!(s.next_expiry(), Some(ttl));
        assert_eq!(s.expire(ttl - Duration::from_nanos(1)), 0);
        s.keep_alive(1, lease, Duration::from_millis(200)).unwrap();
        assert_eq!(s.expire(ttl), 0, "renewed at 200 ms, expires at 500 ms");
        assert_eq!(s.next_expiry(), Some(Duration::from_millis(500)));
        assert_eq!(s.expire(Duration::from_millis(500)), 1);
        assert!(s.list(Some("kv")).is_empty());
        assert_eq!(
            s.keep_alive(1, lease, Duration::from_millis(500)),
            Err(RegistryError::LeaseNotFound)
        );
        assert_eq!(s.next_expiry(), None);
    }

    #[test]
    fn ttl_is_checked_below_at_and_above_its_range() {
        let config = StoreConfig {
            min_ttl: Duration::from_millis(10),
            max_ttl: SEC,
            ..StoreConfig::default()
        };
        let mut s = Store::new(config);
        let at = |ms| Duration::from_millis(ms);
        assert_eq!(
            s.register(1, ep("kv", "a", 1), at(9), at(0)),
            Err(RegistryError::TtlOutOfRange)
        );
        assert!(s.register(1, ep("kv", "a", 1), at(10), at(0)).is_ok());
        assert!(s.register(1, ep("kv", "a", 1), at(1000), at(0)).is_ok());
        assert_eq!(
            s.register(1, ep("kv", "a", 1), at(1001), at(0)),
            Err(RegistryError::TtlOutOfRange)
        );
    }

    #[test]
    fn writes_need_the_token_when_one_is_set() {
        let open = store();
        assert_eq!(open.authorize(None), Ok(()));
        let guarded = Store::new(StoreConfig {
            token: Some("s3cret".into()),
            ..StoreConfig::default()
        });
        assert_eq!(guarded.authorize(None), Err(RegistryError::Unauthorized));
        assert_eq!(
            guarded.authorize(Some("s3cre")),
            Err(RegistryError::Unauthorized)
        );
        assert_eq!(
            guarded.authorize(Some("s3cret!")),
            Err(RegistryError::Unauthorized)
        );
        assert_eq!(
            guarded.authorize(Some("S3cret")),
            Err(RegistryError::Unauthorized)
        );
        assert_eq!(guarded.authorize(Some("s3cret")), Ok(()));
        assert!(same_secret(b"", b""));
        assert!(!same_secret(b"", b"\0"));
    }

    #[test]
    fn invalid_endpoints_get_a_typed_error() {
        let mut s = store();
        let bad = ep("k v", "a", 1);
        assert_eq!(
            s.register(1, bad, SEC, Duration::ZERO),
            Err(RegistryError::Invalid(InvalidEndpoint::ServiceName))
        );
        assert_eq!(
            s.watch(1, "", None),
            Err(RegistryError::Invalid(InvalidEndpoint::ServiceName))
        );
        assert_eq!(s.instances(), 0);
        assert_eq!(s.watchers(), 0);
    }

    #[test]
    fn instances_per_owner_are_limited_below_at_and_above() {
        let mut s = Store::new(StoreConfig {
            max_instances_per_owner: 2,
            max_instances: 3,
            ..StoreConfig::default()
        });
        let z = Duration::ZERO;
        s.register(1, ep("kv", "a", 1), SEC, z).unwrap();
        s.register(1, ep("kv", "b", 1), SEC, z).unwrap(); // at the limit
        assert_eq!(
            s.register(1, ep("kv", "c", 1), SEC, z),
            Err(RegistryError::TooManyInstances)
        );
        // Replacing one's own instance at the limit is an update, allowed.
        s.register(1, ep("kv", "b", 2), SEC, z).unwrap();
        // Another owner is limited by the total.
        s.register(2, ep("kv", "c", 1), SEC, z).unwrap();
        assert_eq!(
            s.register(2, ep("kv", "d", 1), SEC, z),
            Err(RegistryError::TooManyInstances)
        );
        assert_eq!(s.instances(), 3);
        // Room again after an expiry.
        assert_eq!(s.expire(SEC), 3);
        s.register(2, ep("kv", "d", 1), SEC, SEC).unwrap();
    }

    #[test]
    fn watchers_are_limited_below_at_and_above() {
        let mut s = Store::new(StoreConfig {
            max_watchers_per_owner: 2,
            max_watchers: 3,
            ..StoreConfig::default()
        });
        let a = s.watch(1, "kv", None).unwrap();
        s.watch(1, "kv", None).unwrap(); // at the per-owner limit
        assert_eq!(s.watch(1, "kv", None), Err(RegistryError::TooManyWatchers));
        s.watch(2, "kv", None).unwrap(); // at the total
        assert_eq!(s.watch(3, "kv", None), Err(RegistryError::TooManyWatchers));
        s.unwatch(a);
        s.watch(1, "kv", None).unwrap();
        s.disconnect(1, Duration::ZERO);
        assert_eq!(s.watchers(), 1);
        s.watch(3, "kv", None).unwrap();
    }

    #[test]
    fn a_dropped_connection_expires_its_instances_after_the_grace_unless_adopted() {
        let mut s = Store::new(StoreConfig {
            disconnect_grace: Duration::from_millis(100),
            ..StoreConfig::default()
        });
        let z = Duration::ZERO;
        let a = s.register(1, ep("kv", "a", 1), SEC * 10, z).unwrap();
        s.register(1, ep("kv", "b", 1), SEC * 10, z).unwrap();
        s.disconnect(1, Duration::from_millis(50));
        // Instance a's lease is renewed from a new connection within the grace.
        s.keep_alive(2, a, Duration::from_millis(100)).unwrap();
        assert_eq!(s.expire(Duration::from_millis(149)), 0);
        assert_eq!(s.expire(Duration::from_millis(150)), 1);
        let left: Vec<_> = s.list(None).into_iter().map(|e| e.instance).collect();
        assert_eq!(left, ["a"]);
    }

    #[test]
    fn a_resume_gets_exactly_the_missed_changes() {
        let mut s = store();
        let z = Duration::ZERO;
        let w = s.watch(1, "kv", None).unwrap();
        s.register(2, ep("kv", "a", 1), SEC, z).unwrap();
        let seen = drain(&mut s, w);
        let last = seen.last().unwrap().revision;
        s.unwatch(w);
        s.register(2, ep("kv", "b", 1), SEC, z).unwrap();
        s.register(2, ep("other", "x", 1), SEC, z).unwrap();
        s.register(2, ep("kv", "a", 2), SEC, z).unwrap();
        let w = s.watch(1, "kv", Some(last)).unwrap();
        let missed: Vec<_> = drain(&mut s, w)
            .into_iter()
            .map(|e| (e.revision, e.change))
            .collect();
        assert_eq!(
            missed,
            [
                (last + 1, Change::Added(ep("kv", "b", 1))),
                (last + 3, Change::Updated(ep("kv", "a", 2)))
            ]
        );
        // Missed changes of one instance arrive coalesced: the latest.
        let b = s.register(2, ep("kv", "b", 2), SEC, z).unwrap();
        s.deregister(b);
        let w = s.watch(1, "kv", Some(last + 3)).unwrap();
        let missed: Vec<_> = drain(&mut s, w).into_iter().map(|e| e.change).collect();
        assert_eq!(
            missed,
            [Change::Removed {
                instance: "b".into()
            }]
        );
        // Resuming from the current revision: nothing.
        let current = s.revision();
        let w = s.watch(1, "kv", Some(current)).unwrap();
        assert!(drain(&mut s, w).is_empty());
    }

    fn is_resync(event: &Event) -> bool {
        matches!(
            event.change,
            Change::Snapshot {
                kind: SnapshotKind::Resync,
                ..
            }
        )
    }

    #[test]
    fn a_resume_the_history_cannot_serve_gets_a_resync() {
        let mut s = Store::new(StoreConfig {
            history: 2,
            ..StoreConfig::default()
        });
        let z = Duration::ZERO;
        for name in ["a", "b", "c"] {
            s.register(2, ep("kv", name, 1), SEC, z).unwrap();
        }
        // Revisions 1..=3; the history holds 2 and 3: complete after 1.
        let w = s.watch(1, "kv", Some(1)).unwrap();
        assert_eq!(drain(&mut s, w).len(), 2);
        let w = s.watch(1, "kv", Some(0)).unwrap();
        let events = drain(&mut s, w);
        assert!(is_resync(&events[0]) && events.len() == 1, "{events:?}");
        // A revision from the future (another run of the registry).
        let w = s.watch(1, "kv", Some(99)).unwrap();
        assert!(is_resync(&drain(&mut s, w)[0]));
        // A restarted registry starts past every earlier revision.
        let mut restarted = Store::new(StoreConfig {
            first_revision: 1_000,
            ..StoreConfig::default()
        });
        restarted.register(2, ep("kv", "a", 1), SEC, z).unwrap();
        let w = restarted.watch(1, "kv", Some(3)).unwrap();
        let events = drain(&mut restarted, w);
        assert!(is_resync(&events[0]));
        assert_eq!(events[0].revision, 1_001);
    }

    #[test]
    fn a_slow_watcher_holds_one_change_per_instance_then_a_snapshot() {
        let mut s = Store::new(StoreConfig {
            max_pending: 3,
            ..StoreConfig::default()
        });
        let z = Duration::ZERO;
        let w = s.watch(1, "kv", None).unwrap();
        let mut set = EndpointSet::new();
        set.apply(&s.next_event(w, None).unwrap());
        for port in 1..=100 {
            s.register(2, ep("kv", "a", port), SEC, z).unwrap();
        }
        assert_eq!(s.pending(w), 1);
        for name in ["b", "c"] {
            s.register(2, ep("kv", name, 1), SEC, z).unwrap();
        }
        assert_eq!(s.pending(w), 3, "at the bound");
        let events = drain(&mut s, w);
        assert_eq!(
            events.iter().map(|e| e.revision).collect::<Vec<_>>(),
            [100, 101, 102]
        );
        for e in &events {
            set.apply(e);
        }
        assert_eq!(set.iter().cloned().collect::<Vec<_>>(), s.list(Some("kv")));
        // Above the bound: one snapshot.
        for name in ["d", "e", "f", "g"] {
            s.register(2, ep("kv", name, 1), SEC, z).unwrap();
        }
        assert_eq!(s.pending(w), 1);
        let events = drain(&mut s, w);
        assert!(is_resync(&events[0]) && events.len() == 1);
        set.apply(&events[0]);
        assert_eq!(set.len(), 7);
    }

    /// A slow watcher's pending changes, below, at and above the length
    /// where they start being indexed instead of scanned: one per
    /// instance, its latest, in revision order, also after some were
    /// taken (the index follows the queue down) and a change replaced
    /// one in the middle.
    #[test]
    fn coalescing_is_the_same_scanned_or_indexed() {
        let z = Duration::ZERO;
        for n in [
            SCAN_PENDING - 1,
            SCAN_PENDING,
            SCAN_PENDING + 1,
            SCAN_PENDING + 2,
            3 * SCAN_PENDING,
        ] {
            let mut s = store();
            let slow = s.watch(1, "kv", None).unwrap();
            let fast = s.watch(1, "kv", None).unwrap();
            drain(&mut s, slow);
            drain(&mut s, fast);
            // The model: every change (seen by a watcher that keeps up),
            // coalesced by instance into the slow watcher's expectation.
            let mut expected: BTreeMap<String, Event> = BTreeMap::new();
            let mut port = 1;
            let mut change = |s: &mut Store, expected: &mut BTreeMap<String, Event>, i: usize| {
                port += 1;
                s.register(2, ep("kv", &format!("i{i}"), port), SEC, z)
                    .unwrap();
                for event in drain(s, fast) {
                    let instance = match &event.change {
                        Change::Added(e) | Change::Updated(e) => e.instance.clone(),
                        other => panic!("unexpected {other:?}"),
                    };
                    expected.insert(instance, event);
                }
            };
            let take = |s: &mut Store, expected: &mut BTreeMap<String, Event>, k: usize| {
                let mut want: Vec<Event> = expected.values().cloned().collect();
                want.sort_by_key(|e| e.revision);
                let got: Vec<Event> = (0..k).map_while(|_| s.next_event(slow, None)).collect();
                assert_eq!(got, want[..k.min(want.len())], "n = {n}");
                for e in &got {
                    expected.retain(|_, pending| pending.revision != e.revision);
                }
            };
            for i in 0..n {
                change(&mut s, &mut expected, i);
            }
            assert_eq!(s.pending(slow), n, "one per instance");
            for i in [0, n / 2, n - 1, n / 2] {
                change(&mut s, &mut expected, i);
            }
            assert_eq!(s.pending(slow), n, "replaced, not added");
            take(&mut s, &mut expected, 3);
            for i in [n - 1, 1, n, n + 1] {
                change(&mut s, &mut expected, i);
            }
            assert_eq!(s.pending(slow), expected.len());
            take(&mut s, &mut expected, usize::MAX);
            assert_eq!(s.pending(slow), 0);
            assert!(expected.is_empty());
            // Drained, it is scanned again: a change is queued once.
            change(&mut s, &mut expected, 0);
            change(&mut s, &mut expected, 0);
            assert_eq!(s.pending(slow), 1);
            take(&mut s, &mut expected, usize::MAX);
        }
    }

    /// Watchers' ids hash to distinct buckets' worth of spread: many
    /// watchers are found, and removed, by id.
    #[test]
    fn many_watchers_are_found_by_id() {
        let mut s = Store::new(StoreConfig {
            max_watchers: 5_000,
            max_watchers_per_owner: 5_000,
            ..StoreConfig::default()
        });
        let ids: Vec<WatcherId> = (0..5_000)
            .map(|_| s.watch(1, "kv", None).unwrap())
            .collect();
        for &id in ids.iter().step_by(2) {
            s.unwatch(id);
        }
        for (k, &id) in ids.iter().enumerate() {
            assert_eq!(s.is_watching(id), k % 2 == 1);
        }
        assert_eq!(s.watchers(), 2_500);
    }

    #[test]
    fn lease_ids_depend_on_the_seed() {
        let mut a = Store::new(StoreConfig {
            lease_seed: 1,
            ..StoreConfig::default()
        });
        let mut b = Store::new(StoreConfig {
            lease_seed: 2,
            ..StoreConfig::default()
        });
        let z = Duration::ZERO;
        let la = a.register(1, ep("kv", "a", 1), SEC, z).unwrap();
        let lb = b.register(1, ep("kv", "a", 1), SEC, z).unwrap();
        assert_ne!(la, lb);
        assert_eq!(b.keep_alive(1, la, z), Err(RegistryError::LeaseNotFound));
    }

    /// Random changes, a watcher that reads at random moments and sometimes
    /// reconnects from its last revision: it never sees a revision twice or
    /// out of order, and always ends with the registry's set.
    #[test]
    fn random_watch_and_resume_never_loses_or_repeats() {
        for seed in 0..200u64 {
            let mut rng = seed;
            let mut next = move |n: u64| {
                rng = splitmix64(rng);
                rng % n
            };
            let mut s = Store::new(StoreConfig {
                history: 1 + next(8) as usize,
                max_pending: 1 + next(6) as usize,
                ..StoreConfig::default()
            });
            let mut now = Duration::ZERO;
            let mut w = s.watch(1, "kv", None).unwrap();
            let mut set = EndpointSet::new();
            let mut last: Option<u64> = None;
            for _ in 0..200 {
                match next(6) {
                    0 | 1 => {
                        let name = format!("i{}", next(5));
                        let ttl = Duration::from_millis(10 + next(50));
                        let _ = s.register(2, ep("kv", &name, next(3) as u16), ttl, now);
                    }
                    2 => {
                        now += Duration::from_millis(next(30));
                        s.expire(now);
                    }
                    3 => {
                        for _ in 0..next(4) {
                            let Some(event) = s.next_event(w, None) else {
                                break;
                            };
                            let is_snapshot = matches!(event.change, Change::Snapshot { .. });
                            if let Some(prev) = last {
                                assert!(
                                    event.revision > prev || is_snapshot && event.revision >= prev,
                                    "seed {seed}: revision {} after {prev}",
                                    event.revision
                                );
                            }
                            last = Some(event.revision);
                            set.apply(&event);
                        }
                    }
                    4 => {
                        s.unwatch(w);
                        w = s.watch(1, "kv", last).unwrap();
                    }
                    _ => {
                        let _ = s.register(2, ep("other", "x", 1), SEC, now);
                    }
                }
            }
            for event in drain(&mut s, w) {
                set.apply(&event);
            }
            assert_eq!(
                set.iter().cloned().collect::<Vec<_>>(),
                s.list(Some("kv")),
                "seed {seed}"
            );
        }
    }

    /// The wire's encoded events are the typed events' encoding, shared by
    /// every watcher that gets them: a snapshot (initial, and a resync
    /// after coalescing collapsed), then changes.
    #[test]
    fn encoded_events_match_the_typed_ones_and_are_shared() {
        let wire = |event: Event| -> Vec<u8> {
            postcard::to_allocvec(&Ok::<Event, RegistryError>(event)).unwrap()
        };
        let mut s = Store::new(StoreConfig {
            max_pending: 1,
            ..StoreConfig::default()
        });
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let e = ep("kv", name, 1).with_metadata("zone", "z1");
            s.register(1, e.with_weight(i as u32 + 1), SEC, Duration::ZERO)
                .unwrap();
        }
        let typed = s.watch(2, "kv", None).unwrap();
        let first = s.watch(2, "kv", None).unwrap();
        let second = s.watch(2, "kv", None).unwrap();
        let check = |s: &mut Store| {
            let want = wire(s.next_event(typed, None).unwrap());
            let got = s.next_encoded(first, None).unwrap();
            let again = s.next_encoded(second, None).unwrap();
            assert_eq!(&*got, &want[..]);
            assert!(Arc::ptr_eq(&got, &again), "encoded once");
        };
        check(&mut s); // The initial snapshot.
        s.register(1, ep("kv", "d", 1), SEC, Duration::ZERO)
            .unwrap();
        check(&mut s); // Added.
        s.register(1, ep("kv", "d", 2), SEC, Duration::ZERO)
            .unwrap();
        check(&mut s); // Updated.
        s.register(1, ep("kv", "e", 1), SEC, Duration::ZERO)
            .unwrap();
        s.register(1, ep("kv", "f", 1), SEC, Duration::ZERO)
            .unwrap();
        check(&mut s); // Two instances pending, over the bound: a resync.
        assert_eq!(s.next_encoded(first, None), None);
    }
}
