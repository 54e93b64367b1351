//! # courier-registry
//!
//! The third part of an RPC system, beside the client and the server: a
//! **registry** where server instances register under a lease, and where
//! clients **discover** them and watch the set change.
//!
//! # The model
//!
//! - An [`Endpoint`] is one registered instance of a service: service and
//!   instance names, an [`Address`] (TCP or Unix), a weight and free-form
//!   metadata (version, zone, ...), checked against [`EndpointLimits`].
//! - An instance is registered under a **lease** with a TTL (sub-second
//!   allowed). Heartbeats renew it; a lease not renewed within its TTL
//!   expires and removes its instance. An instance also goes when the
//!   connection that registered it drops, after a short grace
//!   ([`StoreConfig::disconnect_grace`]) in which a heartbeat from a new
//!   connection adopts it.
//! - Every change takes the next **revision**. A **watch** of a service
//!   yields [`Event`]s: a [`Change::Snapshot`] first, then
//!   [`Change::Added`], [`Change::Updated`] and [`Change::Removed`]. A
//!   watcher that reconnects resumes from its last revision and gets exactly
//!   what it missed, or a snapshot flagged [`SnapshotKind::Resync`] when the
//!   registry cannot serve that revision (it restarted, or its bounded
//!   history moved on). A slow watcher's changes are **coalesced** (one
//!   pending change per instance), so it costs bounded memory. See
//!   [`discover`] for the exact contract and [`store`] for how the
//!   registry keeps it.
//! - **Registry loss is not service loss**: a [`Discover`] source yields
//!   `Err(DiscoverError::Unavailable)` while its registry is unreachable
//!   and goes on (keep the endpoints you know: [`EndpointSet`] does); a
//!   [`Registration`] registers its instance again by itself when the
//!   registry comes back. The registry holds soft state only: restarted
//!   empty, it is rebuilt by those re-registrations within one TTL.
//!
//! # The parts
//!
//! | part | what |
//! |---|---|
//! | [`Registry`] | the wire interface, a `#[courier::service]` ([`RegistryClient`], [`RegistryServer`]) |
//! | [`EmbeddedRegistry`] | the registry itself, in process: [`connection`](EmbeddedRegistry::connection) serves one connection over any transport (a [`RegistryConnection`]: each watch event is encoded once, whatever the number of watchers that get it), [`watch`](EmbeddedRegistry::watch) watches in process; its [`ExpiryDriver`] expires leases on your timer |
//! | [`RegistryWatch`] | a [`Discover`] source over a [`RegistryClient`]: reconnects, resumes |
//! | [`StaticList`] | a [`Discover`] source from a fixed (changeable) list |
//! | [`Registration`], [`Registrar`] | the server side: register, heartbeat, redo, deregister on shutdown; [`RemoteRegistrar`] is the courier registry's [`Registrar`] |
//! | [`Store`] | the state machine underneath, without I/O or clock |
//! | `courier-registry` (binary, feature `cli`) | `serve`, `list`, `watch` (see its `--help`) |
//! | `etcd` (feature `etcd`) | the same [`Discover`] and [`Registrar`] on etcd, past one machine: see [etcd](#etcd) |
//!
//! # Example
//!
//! A registry served over courier-mem; an instance registers, a watcher
//! sees it come and go.
//!
//! ```
//! use std::time::Duration;
//!
//! use courier_registry::{
//!     Address, Change, EmbeddedRegistry, Endpoint, EndpointSet, RegistryClient, StoreConfig,
//! };
//! use futures::StreamExt;
//!
//! // No timer: leases never expire in this example (give a real timer, and
//! // poll the expiry driver, to have them expire).
//! let (registry, _expiry) = EmbeddedRegistry::new(StoreConfig::default(), courier::NoTimer);
//! let (client_io, server_io) = courier_mem::pair(64 * 1024);
//! let server = courier::ServerBuilder::new().build(server_io, registry.connection());
//! let (client, driver) = courier::Client::new(client_io);
//! let client = RegistryClient::new(client);
//! let mut watch = registry.watch("kv", None).unwrap();
//!
//! futures::executor::block_on(async move {
//!     let calls = async move {
//!         let kv1 = Endpoint::new("kv", "kv-1", Address::Tcp("127.0.0.1:7001".parse().unwrap()))
//!             .with_metadata("zone", "eu-1");
//!         let ttl = Duration::from_millis(500);
//!         let lease = client.register(None, kv1.clone(), ttl).await.unwrap().unwrap();
//!
//!         let mut known = EndpointSet::new();
//!         let first = watch.next().await.unwrap().unwrap();
//!         assert!(matches!(first.change, Change::Snapshot { .. }));
//!         known.apply(&first);
//!         assert_eq!(known.get("kv-1"), Some(&kv1));
//!
//!         client.deregister(None, lease).await.unwrap().unwrap();
//!         let gone = watch.next().await.unwrap().unwrap();
//!         assert_eq!(gone.change, Change::Removed { instance: "kv-1".into() });
//!         known.apply(&gone);
//!         assert!(known.is_empty());
//!     };
//!     let (_, driver, server) = futures::join!(calls, driver, server);
//!     driver.unwrap();
//!     server.unwrap();
//! });
//! ```
//!
//! `examples/registry.rs` in the repository runs a registry over TCP with
//! two self-registering instances, one of which dies and expires.
//!
//! # etcd
//!
//! With feature `etcd`, the module `etcd` watches and registers in an etcd
//! cluster (v3 API) — a replicated store users already run — with the same
//! semantics: `etcd::Etcd::watch` is a [`Discover`]
//! stream (a range read, then an etcd watch from the next revision; resumes
//! after reconnecting, a `Resync` snapshot after a compaction or a replaced
//! etcd), and `etcd::Etcd::registrar` a
//! [`Registrar`] for [`Registration::run`] (an etcd lease per instance,
//! revoked on shutdown). Each instance is the key
//! `<prefix>/<service>/<instance>` (default prefix `/courier/services`)
//! holding JSON such as
//! `{"address":"tcp://127.0.0.1:7001","weight":1,"metadata":{"zone":"a"}}`,
//! so `etcdctl get --prefix /courier/services/` shows it and other
//! languages' clients read and write it. The feature needs `protoc` to build
//! (Debian `protobuf-compiler`, or `PROTOC=/path/to/protoc`) and a tokio
//! runtime to run. The module's docs give the exact layout, the value format
//! and an example against an existing etcd.
//!
//! # Access
//!
//! A registry started with a token ([`StoreConfig::token`]) refuses
//! `register`, `keep_alive` and `deregister` without it
//! ([`RegistryError::Unauthorized`]; compared in time independent of the
//! secret's bytes). `list` and `watch` stay open. The token is a shared
//! secret and travels in clear: **there is no TLS yet** (it comes later), so
//! run a guarded registry on a trusted network only.
//!
//! # Limits
//!
//! Every input is bounded by [`StoreConfig`] and [`EndpointLimits`], each
//! refusal a typed [`RegistryError`]: names (1–128 bytes of ASCII letters,
//! digits and `-_.:`), Unix paths, metadata entries and bytes, the TTL range,
//! instances in all and per connection, watches in all and per connection,
//! the history kept per service and the changes pending per watcher. A
//! snapshot travels as one stream item: the registry's and the watchers'
//! `max_frame` must hold a whole service (about 60 bytes per endpoint plus
//! its metadata; the `courier-registry` binary allows 16 MiB).
//!
//! # The wire interface
//!
//! The registry is the courier service `Registry`, spoken as in
//! PROTOCOL.md. A client in another language needs only the method keys,
//! the postcard encodings below and PROTOCOL.md's framing and stream rules.
//!
//! Types (postcard, PROTOCOL.md §4; the schema notation of §5.1):
//!
//! ```text
//! SocketAddr    = enum { V4((ip: [u8; 4], port: u16)), V6((ip: [u8; 16], port: u16)) }
//!                 (an IPv6 address's flow info and scope id are not sent)
//! Address       = enum { Tcp(SocketAddr), Unix(path: String) }
//! Endpoint      = (service: String, instance: String, address: Address,
//!                  weight: u32, metadata: map String -> String)
//! Duration      = (secs: u64, nanos: u32)
//! SnapshotKind  = enum { Initial, Resync }
//! Change        = enum { Snapshot(endpoints: seq Endpoint, kind: SnapshotKind),
//!                        Added(Endpoint), Updated(Endpoint), Removed(instance: String) }
//! Event         = (revision: u64, change: Change)
//! Listing       = (revision: u64, endpoints: seq Endpoint)
//! InvalidEndpoint = enum { ServiceName, InstanceName, Address, TooMuchMetadata }
//! RegistryError = enum { Unauthorized, Invalid(InvalidEndpoint), TtlOutOfRange,
//!                        TooManyInstances, TooManyWatchers, LeaseNotFound }
//! Result<T, E>  = enum { Ok(T), Err(E) }
//! ```
//!
//! Methods (key: FNV-1a 64 per PROTOCOL.md §5, service name `Registry`):
//!
//! | method | mode | key | request body | items / reply |
//! |---|---|---|---|---|
//! | `register` | unary | `0x070407341c29f5ef` | `(token: Option<String>, endpoint: Endpoint, ttl: Duration)` | `Result<u64, RegistryError>`: the lease |
//! | `keep_alive` | bidirectional | `0xbc70479216498804` | `(token: Option<String>,)`; items up: `u64` leases | items down: `Result<u64, RegistryError>`, one per item up, in order |
//! | `deregister` | unary | `0x2ebbd2cd3b2740b1` | `(token: Option<String>, lease: u64)` | `Result<(), RegistryError>` |
//! | `list` | unary, idempotent | `0x53916be704caefdc` | `(service: Option<String>,)` | `Listing` |
//! | `watch` | server streaming | `0xeabc02ac0c6489a4` | `(service: String, from_revision: Option<u64>)` | items: `Result<Event, RegistryError>` |
//!
//! Semantics:
//!
//! - `register` puts the endpoint under a new lease of `ttl` (within
//!   [`StoreConfig::min_ttl`]..=[`max_ttl`](StoreConfig::max_ttl)) held by
//!   this connection, and answers its id (never 0). The same
//!   `(service, instance)` registered again replaces the earlier
//!   registration and lease: watchers see `Updated` if the endpoint
//!   differs, nothing if it is equal.
//! - `keep_alive`: each lease sent up is renewed for its TTL from now and
//!   answered `Ok(lease)`, or `Err(LeaseNotFound)` (expired, dropped, or the
//!   registry restarted: register again), `Err(Unauthorized)`, or
//!   `Err(TooManyInstances)` (adopting a lease of a dropped connection
//!   would pass this connection's limit). Renewing a lease from another
//!   connection moves it to that connection. Send a lease every third of its
//!   TTL; the stream may stay open for the connection's life.
//! - `deregister` drops the lease and its instance (watchers see
//!   `Removed`); an unknown lease is `Ok`.
//! - `list` answers every endpoint of the service (of every service for
//!   `None`), ordered by service then instance, with the current revision.
//! - `watch` without `from_revision` starts with `Snapshot(Initial)`; with
//!   `from_revision = r` it starts with every change after `r`, or with
//!   `Snapshot(Resync)` if the registry cannot serve `r`. Then it sends each
//!   change as it happens, in revision order. Changes to one instance may be
//!   coalesced into its latest (revisions then skip); a backlog of more
//!   than [`StoreConfig::max_pending`] instances becomes one `Resync`
//!   snapshot. Apply a snapshot by replacing the set; `Added` and `Updated`
//!   by inserting; `Removed` by deleting (an unknown instance is not an
//!   error). Resume with the revision of the last event applied. A refused
//!   watch (`TooManyWatchers`, `Invalid`) is one `Err` item, then the end.
//!   The stream ends otherwise only with its connection. Revisions start
//!   after [`StoreConfig::first_revision`] — the binary uses the start
//!   time in microseconds, so a restarted registry never reuses a revision.
//! - An instance of a connection that closes goes
//!   [`StoreConfig::disconnect_grace`] later, unless a `keep_alive` from
//!   another connection renews its lease first; the connection's watches
//!   end with it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod discover;
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
    Connection, EmbeddedRegistry, ExpiryDriver, Listing, Registry, RegistryClient,
    RegistryConnection, RegistryServer, WatchStream,
};
pub use static_list::StaticList;
pub use store::{RegistryError, Store, StoreConfig};
