//! A fixed list of endpoints as a discovery source, with a handle to change
//! it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::NoTimer;

use crate::endpoint::Endpoint;
use crate::registration::LeaseId;
use crate::server::{EmbeddedRegistry, WatchStream};
use crate::store::{RegistryError, StoreConfig};

/// The one owner of a static list's entries.
const OWNER: u64 = 0;

/// A static list of endpoints: every watch starts with an `Initial`
/// snapshot of it; [`set`](StaticList::set) changes it, and open watches see
/// the differences as `Added`, `Updated` and `Removed` events — the same
/// [`Discover`](crate::Discover) semantics as a registry. Cheap to clone;
/// clones share the list.
#[derive(Clone)]
pub struct StaticList {
    registry: EmbeddedRegistry,
    leases: Arc<Mutex<BTreeMap<(String, String), LeaseId>>>,
}

impl StaticList {
    /// A list of `endpoints` (an instance named twice keeps its last entry).
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Result<Self, RegistryError> {
        let config = StoreConfig {
            max_instances: usize::MAX,
            max_instances_per_owner: usize::MAX,
            max_ttl: Duration::MAX,
            // Entries never expire: the clock stays at zero.
            ..StoreConfig::default()
        };
        let (registry, _no_expiry) = EmbeddedRegistry::new(config, NoTimer);
        let list = StaticList {
            registry,
            leases: Arc::default(),
        };
        list.set(endpoints)?;
        Ok(list)
    }

    /// Replaces the list. Checks every endpoint first: on an error nothing
    /// changed.
    pub fn set(&self, endpoints: impl IntoIterator<Item = Endpoint>) -> Result<(), RegistryError> {
        let fresh: BTreeMap<(String, String), Endpoint> = endpoints
            .into_iter()
            .map(|e| ((e.service.clone(), e.instance.clone()), e))
            .collect();
        self.registry.with_store(|store| {
            for endpoint in fresh.values() {
                endpoint
                    .validate(&store.config().endpoint)
                    .map_err(RegistryError::Invalid)?;
            }
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            leases.retain(|key, lease| {
                let keep = fresh.contains_key(key);
                if !keep {
                    store.deregister(*lease);
                }
                keep
            });
            for (key, endpoint) in fresh {
                // Registering again updates only when the endpoint differs.
                let lease = store.register(OWNER, endpoint, Duration::MAX, Duration::ZERO)?;
                leases.insert(key, lease);
            }
            Ok(())
        })
    }

    /// Watches `service`: an `Initial` snapshot, then the changes made by
    /// [`set`](StaticList::set). Never yields an error.
    pub fn watch(&self, service: &str) -> Result<WatchStream, RegistryError> {
        self.registry.watch(service, None)
    }

    /// The endpoints of `service`.
    pub fn endpoints(&self, service: &str) -> Vec<Endpoint> {
        self.registry.list(Some(service)).endpoints
    }
}
