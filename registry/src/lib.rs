//! # courier-registry
//!
//! The third part of an RPC system, beside the client and the server: a
//! **registry** where server instances register under a lease, and where
//! clients **discover** them and watch the set change.
//!
//! - [`Endpoint`]: one registered instance of a service — its address (TCP
//!   or Unix), weight and free-form metadata.
//! - [`Discover`]: a stream of [`Event`]s describing how a service's set of
//!   endpoints changes: first a snapshot, then additions, updates and
//!   removals, each tagged with the source's revision. [`EndpointSet`]
//!   applies them.
//!
//! Sources of discovery share those semantics whatever they are backed by.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod discover;
mod endpoint;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod registration;
pub mod remote;
pub mod server;
mod static_list;
pub mod store;

pub use discover::{Change, Discover, DiscoverError, EndpointSet, Event, SnapshotKind};
pub use endpoint::{Address, Endpoint, EndpointLimits, InvalidEndpoint};
pub use registration::{LeaseId, Registrar, RegistrarError, RegistrarFuture, Registration};
pub use remote::{RegistryWatch, RemoteRegistrar};
pub use server::{
    Connection, EmbeddedRegistry, ExpiryDriver, Listing, Registry, RegistryClient, RegistryServer,
    WatchStream,
};
pub use static_list::StaticList;
pub use store::{RegistryError, Store, StoreConfig};
