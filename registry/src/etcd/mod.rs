//! Discovery and registration on **etcd** (feature `etcd`): how users go past
//! one machine, on a replicated, consistent store they already run.
//!
//! # The model
//!
//! Each registered instance is one etcd key, attached to the instance's
//! lease. A watch of one service is a range read of that service's keys (the
//! snapshot, at etcd's revision `R`) followed by an etcd watch of the same
//! range from `R + 1`. Events carry etcd's own revisions (`mod_revision` of
//! the key; for a removal, the revision of the deletion), so a watcher that
//! reconnects resumes exactly where it stopped.
//!
//! ## Key layout
//!
//! ```text
//! <prefix>/<service>/<instance>
//! ```
//!
//! byte for byte: the configured prefix ([`EtcdConfig::prefix`], default
//! `/courier/services`, taken as given: it must not end with `/`), one `/`
//! (0x2F), the service name, one `/`, the instance name. Service and instance
//! names are ASCII letters, digits and `-_.:` (see
//! [`Endpoint::validate`](crate::Endpoint::validate)), so neither contains a
//! `/`, and the watch of service `kv` (the range of keys starting
//! `<prefix>/kv/`) never sees service `kv2`. Example:
//! `/courier/services/kv/kv-1`.
//!
//! ## Value format
//!
//! The value is a UTF-8 JSON object, written compactly by courier:
//!
//! ```text
//! {"address":"tcp://127.0.0.1:7001","weight":1,"metadata":{"zone":"a"}}
//! ```
//!
//! - `address` (required): `tcp://<ip>:<port>` (an IPv6 address in brackets,
//!   `tcp://[::1]:7001`) or `unix://<path>` (`unix:///run/kv.sock`);
//! - `weight` (optional, default 1): an unsigned 32-bit integer;
//! - `metadata` (optional, default empty): an object of string values.
//!
//! Unknown fields are ignored, so an entry written by hand or by another
//! language's client (`etcdctl put /courier/services/kv/kv-1
//! '{"address":"tcp://10.0.0.5:7001"}'`) is read like courier's own. The
//! service and instance come from the key, not the value.
//!
//! A value that is not such an object, is longer than
//! [`EtcdConfig::max_value_len`], or breaks the [`EndpointLimits`] is
//! **skipped**: the watch yields a non-terminal
//! [`DiscoverError::Invalid`](crate::DiscoverError::Invalid) naming the key,
//! and if the key held a valid endpoint before, a
//! [`Change::Removed`](crate::Change::Removed) for it (the set a watcher
//! holds is always the set of *valid* entries at that revision).
//!
//! ## Leases
//!
//! [`EtcdRegistrar`] implements [`Registrar`](crate::Registrar): `register`
//! grants a lease and puts the key under it, `keep_alive` renews the lease
//! over etcd's keep-alive stream, `deregister` revokes it (which deletes the
//! key: watchers see the removal at once). Drive it with
//! [`Registration::run`](crate::Registration::run), which heartbeats and
//! registers again when the lease is lost. etcd's TTLs are whole seconds: a
//! TTL is rounded **up** to the next second (at least 1 s), and etcd may raise
//! it further to its own minimum (about 1.5 × its election timeout).
//!
//! ## Runtime
//!
//! The etcd client is built on tokio: everything here must run where a tokio
//! runtime (with its time driver) is reachable. Either poll inside a tokio
//! runtime — [`Etcd::connect`] then remembers it — or give a running
//! multi-threaded runtime's handle with [`EtcdConfig::runtime`]: every
//! future and stream of this module enters it on each poll, so they may be
//! polled from any executor (smol, `futures::executor::block_on`).
//!
//! ## Errors and retries
//!
//! While etcd is unreachable a watch yields
//! [`DiscoverError::Unavailable`](crate::DiscoverError::Unavailable) once per
//! failed attempt and retries with exponential backoff
//! ([`EtcdConfig::retry`]); it never ends by itself. When it is back, the
//! watch resumes from the revision after the last one it delivered. If etcd
//! compacted that revision away, or etcd's revision went *backwards* (its
//! data was wiped), the watch reads the range again and yields a
//! [`SnapshotKind::Resync`](crate::SnapshotKind::Resync) snapshot.
//!
//! # Example
//!
//! Against an etcd already running on `127.0.0.1:2379`:
//!
//! ```no_run
//! use std::time::Duration;
//! use courier_registry::etcd::{Etcd, EtcdConfig};
//! use courier_registry::{Address, Endpoint, EndpointSet, Registration};
//! use futures_util::StreamExt;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let etcd = Etcd::connect(EtcdConfig::new(["http://127.0.0.1:2379"])).await?;
//!
//! // Server side: keep "kv-1" registered under a 3 s lease until `stop`.
//! let endpoint = Endpoint::new("kv", "kv-1", Address::Tcp("127.0.0.1:7001".parse()?));
//! let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! let registration = Registration::new(endpoint, Duration::from_secs(3));
//! tokio::spawn(registration.run(etcd.registrar(), courier::timer::TokioTimer::new(), stop_rx, None));
//!
//! // Client side: watch "kv".
//! let mut watch = etcd.watch("kv")?;
//! let mut set = EndpointSet::new();
//! while let Some(event) = watch.next().await {
//!     match event {
//!         Ok(event) => {
//!             set.apply(&event);
//!             println!("{} endpoint(s) at revision {}", set.len(), set.revision());
//!         }
//!         Err(error) => eprintln!("{error} (keeping {} endpoints)", set.len()),
//!     }
//!     # break;
//! }
//! let _ = stop_tx.send(()); // deregisters
//! # Ok(()) }
//! ```
//!
//! To run the crate's tests against etcd, install `etcd` (Debian:
//! `apt-get install etcd-server`) and `protoc` (`protobuf-compiler`); the
//! tests start their own etcd on a temporary directory and free loopback
//! ports (`COURIER_ETCD_BIN` overrides the binary).

mod config;
mod discover;
mod entry;
mod registrar;
mod runtime;

use std::fmt;
use std::sync::Arc;

use etcd_client::{Client, ConnectOptions};
use tokio::runtime::Handle;

pub use config::EtcdConfig;
pub use discover::EtcdDiscover;
pub use registrar::EtcdRegistrar;

use crate::endpoint::{Address, Endpoint, EndpointLimits, InvalidEndpoint};
use runtime::InRuntime;

/// A connection to an etcd cluster: makes watches ([`Etcd::watch`]) and
/// registrars ([`Etcd::registrar`]). Cheap to clone; clones share one
/// connection.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    shared: Arc<Shared>,
}

/// What every watch and registrar of one [`Etcd`] reads.
pub(crate) struct Shared {
    config: EtcdConfig,
    runtime: Option<Handle>,
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// Why [`Etcd::connect`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum EtcdError {
    /// The configuration is unusable (no endpoints, a malformed URL).
    Config(String),
    /// etcd refused or could not be reached while authenticating (only a
    /// configuration with a user talks to etcd in `connect`).
    Unavailable(String),
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Config(why) => write!(f, "invalid etcd configuration: {why}"),
            EtcdError::Unavailable(why) => write!(f, "etcd unavailable: {why}"),
        }
    }
}

impl std::error::Error for EtcdError {}

impl Etcd {
    /// Prepares a connection to the etcd cluster of `config`.
    ///
    /// Without a user this does not talk to etcd: the connection is made by
    /// the first watch or registration, and made again whenever it breaks,
    /// so an etcd that is down now is not an error here.
    pub fn connect(
        config: EtcdConfig,
    ) -> impl std::future::Future<Output = Result<Etcd, EtcdError>> {
        let handle = config.runtime.clone();
        InRuntime::new(handle, async move {
            let runtime = config
                .runtime
                .clone()
                .or_else(|| Handle::try_current().ok());
            let mut options = ConnectOptions::new()
                .with_connect_timeout(config.connect_timeout)
                .with_keep_alive(config.keep_alive_interval, config.keep_alive_timeout)
                .with_keep_alive_while_idle(true);
            if let Some((user, password)) = &config.user {
                options = options.with_user(user.clone(), password.clone());
            }
            let client = Client::connect(&config.endpoints, Some(options))
                .await
                .map_err(|e| match e {
                    etcd_client::Error::InvalidArgs(_)
                    | etcd_client::Error::InvalidUri(_)
                    | etcd_client::Error::EndpointError(_) => EtcdError::Config(e.to_string()),
                    other => EtcdError::Unavailable(other.to_string()),
                })?;
            Ok(Etcd {
                client,
                shared: Arc::new(Shared { config, runtime }),
            })
        })
    }

    /// A watch of `service`'s endpoints (see the [module docs](self)).
    ///
    /// Fails only if `service` is not a valid service name.
    pub fn watch(&self, service: &str) -> Result<EtcdDiscover, InvalidEndpoint> {
        check_service(service, &self.shared.config.limits)?;
        Ok(EtcdDiscover::new(
            self.client.clone(),
            self.shared.clone(),
            service,
        ))
    }

    /// A [`Registrar`](crate::Registrar) that registers endpoints in this
    /// etcd, for [`Registration::run`](crate::Registration::run).
    pub fn registrar(&self) -> EtcdRegistrar {
        EtcdRegistrar::new(self.client.clone(), self.shared.clone())
    }

    /// The key `endpoint` is registered under (see [Key layout](self#key-layout)).
    pub fn key(&self, service: &str, instance: &str) -> String {
        entry::key(&self.shared.config.prefix, service, instance)
    }

    /// The value `endpoint` is stored as (see [Value format](self#value-format)).
    pub fn value(endpoint: &Endpoint) -> String {
        entry::encode(endpoint)
    }

    /// The underlying etcd client, for what this module does not wrap (it
    /// needs the tokio runtime too).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Checks `service` with the same rule as [`Endpoint::validate`], so that a
/// watched range can never cover another service's keys.
fn check_service(service: &str, limits: &EndpointLimits) -> Result<(), InvalidEndpoint> {
    // A probe endpoint: `validate` checks the service name first, and only
    // that verdict matters here.
    let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let probe = Endpoint::new(service, "probe", Address::Tcp(unspecified));
    match probe.validate(limits) {
        Err(InvalidEndpoint::ServiceName) => Err(InvalidEndpoint::ServiceName),
        _ => Ok(()),
    }
}
