//! Discovery: a stream of changes to one service's set of endpoints.
//!
//! # The model
//!
//! A source (a static list, a courier registry, etcd) numbers its changes
//! with a **revision** that only grows. A watch of one service yields
//! [`Event`]s:
//!
//! 1. first a [`Change::Snapshot`] of [`SnapshotKind::Initial`]: the whole set
//!    at the event's revision;
//! 2. then [`Change::Added`], [`Change::Updated`] and [`Change::Removed`], in
//!    revision order, each applying to the set left by the events before it;
//! 3. after the source lost its connection and came back, either the changes
//!    it missed (it resumed from the last revision it delivered: nothing is
//!    missed, nothing repeats) or, if it could not resume from there, a
//!    [`Change::Snapshot`] of [`SnapshotKind::Resync`] that replaces the set.
//!
//! A slow watcher may see changes **coalesced**: several changes to one
//! instance become one, and revisions skip. The set it ends up with is always
//! the source's set at the last event's revision.
//!
//! Errors are not terminal: an `Err` item says the source is unreachable for
//! now (the consumer keeps the endpoints it knows — registry loss is not
//! service loss) and the stream goes on trying. The stream ends (`None`)
//! only when its source is shut down by its owner.

use std::collections::BTreeMap;
use std::fmt;

use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;

/// One change to a watched service's endpoints, with the revision it brings
/// the set to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, courier::Schema)]
pub struct Event {
    /// The source's revision after this change.
    pub revision: u64,
    /// What changed.
    pub change: Change,
}

/// What changed in a watched set of endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, courier::Schema)]
pub enum Change {
    /// The whole set, replacing whatever the watcher knew.
    Snapshot {
        /// Every endpoint of the service.
        endpoints: Vec<Endpoint>,
        /// Why the set is sent whole.
        kind: SnapshotKind,
    },
    /// An instance that was not in the set joined it.
    Added(Endpoint),
    /// An instance in the set changed its address, weight or metadata.
    Updated(Endpoint),
    /// An instance left the set (deregistered, or its lease expired).
    Removed {
        /// The instance's name.
        instance: String,
    },
}

/// Why a [`Change::Snapshot`] was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, courier::Schema)]
pub enum SnapshotKind {
    /// The first event of a watch.
    Initial,
    /// The source could not resume from the watcher's last revision (it
    /// restarted, or that revision is compacted away); the set is sent anew.
    Resync,
}

/// Why a discovery source could not deliver changes right now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoverError {
    /// The source is unreachable; it is being retried. The message says why
    /// (for a log line).
    Unavailable(String),
    /// The source refused the watch, e.g. too many watchers; it is retried.
    Refused(String),
    /// An entry in the source is not a valid endpoint (garbage, oversized,
    /// over the limits): it is skipped, and the watch goes on. The message
    /// names the entry.
    Invalid(String),
}

impl fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoverError::Unavailable(why) => write!(f, "discovery source unavailable: {why}"),
            DiscoverError::Refused(why) => write!(f, "discovery source refused the watch: {why}"),
            DiscoverError::Invalid(why) => write!(f, "invalid entry skipped: {why}"),
        }
    }
}

impl std::error::Error for DiscoverError {}

/// A watch of one service's endpoints: any stream of [`Event`]s with the
/// semantics in the [module docs](self).
pub trait Discover: Stream<Item = Result<Event, DiscoverError>> {}

impl<S: Stream<Item = Result<Event, DiscoverError>> + ?Sized> Discover for S {}

/// The set of endpoints a watcher knows, kept by applying [`Event`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSet {
    endpoints: BTreeMap<String, Endpoint>,
    revision: u64,
}

impl EndpointSet {
    /// An empty set at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event. Returns whether the set changed.
    ///
    /// An `Added` of a known instance or an `Updated` of an unknown one is
    /// applied as an insert either way (a coalesced stream may turn
    /// remove-then-add into either); a `Removed` of an unknown instance
    /// changes nothing.
    pub fn apply(&mut self, event: &Event) -> bool {
        self.revision = self.revision.max(event.revision);
        match &event.change {
            Change::Snapshot { endpoints, .. } => {
                let fresh: BTreeMap<String, Endpoint> = endpoints
                    .iter()
                    .map(|e| (e.instance.clone(), e.clone()))
                    .collect();
                let changed = fresh != self.endpoints;
                self.endpoints = fresh;
                changed
            }
            Change::Added(endpoint) | Change::Updated(endpoint) => {
                let old = self
                    .endpoints
                    .insert(endpoint.instance.clone(), endpoint.clone());
                old.as_ref() != Some(endpoint)
            }
            Change::Removed { instance } => self.endpoints.remove(instance).is_some(),
        }
    }

    /// The highest revision applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The endpoint of `instance`, if known.
    pub fn get(&self, instance: &str) -> Option<&Endpoint> {
        self.endpoints.get(instance)
    }

    /// Every endpoint, ordered by instance name.
    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> + '_ {
        self.endpoints.values()
    }

    /// How many endpoints the set holds.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Address;

    fn ep(instance: &str, port: u16) -> Endpoint {
        Endpoint::new(
            "kv",
            instance,
            Address::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        )
    }

    fn event(revision: u64, change: Change) -> Event {
        Event { revision, change }
    }

    #[test]
    fn snapshot_then_changes_build_the_set() {
        let mut set = EndpointSet::new();
        let snapshot = Change::Snapshot {
            endpoints: vec![ep("a", 1), ep("b", 2)],
            kind: SnapshotKind::Initial,
        };
        assert!(set.apply(&event(5, snapshot)));
        assert_eq!(set.len(), 2);
        assert!(set.apply(&event(6, Change::Added(ep("c", 3)))));
        assert!(set.apply(&event(7, Change::Updated(ep("a", 9)))));
        assert!(set.apply(&event(
            8,
            Change::Removed {
                instance: "b".into()
            }
        )));
        assert!(!set.apply(&event(
            9,
            Change::Removed {
                instance: "b".into()
            }
        )));
        let ports: Vec<_> = set.iter().map(|e| e.address.clone()).collect();
        assert_eq!(ports, vec![ep("a", 9).address, ep("c", 3).address]);
        assert_eq!(set.revision(), 9);
    }

    #[test]
    fn a_resync_snapshot_replaces_the_set() {
        let mut set = EndpointSet::new();
        set.apply(&event(1, Change::Added(ep("a", 1))));
        let resync = Change::Snapshot {
            endpoints: vec![ep("b", 2)],
            kind: SnapshotKind::Resync,
        };
        assert!(set.apply(&event(1, resync)));
        assert!(set.get("a").is_none());
        assert!(set.get("b").is_some());
    }

    #[test]
    fn an_unchanged_update_reports_no_change() {
        let mut set = EndpointSet::new();
        assert!(set.apply(&event(1, Change::Added(ep("a", 1)))));
        assert!(!set.apply(&event(2, Change::Updated(ep("a", 1)))));
    }
}
