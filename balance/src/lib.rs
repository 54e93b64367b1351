//! # courier-balance
//!
//! Load balancing and failover for courier: a [`Balanced`] channel over a
//! service's discovered endpoints that a typed client uses as it would one
//! connection — `CalcClient::new(balanced)`.
//!
//! # The model
//!
//! - **Discovery.** A [`BalancedDriver`] follows any
//!   [`Discover`](courier_registry::Discover) stream (a static list, the
//!   courier registry, etcd), dials each endpoint through a [`Connector`]
//!   (e.g. courier-tcp's `connect`), and polls every connection's driver
//!   inside itself: it spawns nothing, so it runs on any executor. An
//!   endpoint that leaves is no longer picked, and its connection closes
//!   once its calls in flight are done. One that goes down is skipped at
//!   once and dialled again with backoff.
//! - **Picking.** Each call goes to the endpoint a [`Strategy`] picks among
//!   the available ones: [`RoundRobin`], [`WeightedRandom`],
//!   [`PowerOfTwoChoices`] over [peak-EWMA latency](load) × (in flight + 1)
//!   (the default; it keeps the calls picked between two polls of the
//!   driver on one endpoint while that one's load is not above another's,
//!   so that each connection writes them as one batch — see
//!   [Batches](PowerOfTwoChoices#batches)), or [`ConsistentHash`] by a key
//!   the caller gives ([`Balanced::with_hash_key`]).
//! - **Failover.** A call keeps its arguments until it ends (each attempt
//!   encodes them, so their `Serialize` runs once per attempt); when an
//!   attempt fails in a way a re-send can fix, it is re-sent on an endpoint it has not
//!   tried, within its timeout, under a [`RetryBudget`]. A request that
//!   never left the client is always re-sent; one that may have reached a
//!   server only if its method is `#[idempotent]`. The table is in
//!   [`retry`]; a failure not re-sent says why
//!   ([`CallError::NotRetried`](courier::CallError::NotRetried)).
//! - **Outliers.** An endpoint that fails repeatedly is [ejected](Ejection)
//!   for a backoff, then probed back.
//! - **Numbers.** [`Balanced::endpoints`] reads each endpoint's
//!   [`EndpointStats`]: connection, in flight, latency, calls, failures,
//!   ejection.
//!
//! Streams and notifications go to one picked endpoint and are not
//! re-sent.
//!
//! - **Registry restarts.** A [`Resync`](courier_registry::SnapshotKind::Resync)
//!   snapshot that leaves out endpoints with ready connections keeps them
//!   for a grace ([`BalancedBuilder::resync_grace`]): a restarted registry
//!   is empty until its instances register again.
//!
//! Events (the `tracing` crate, target `courier_balance`, never under the
//! balancer's lock): `endpoint added` and `endpoint removed` (info, field
//! `instance`), `endpoint ejected after repeated failures` (warn, `instance`,
//! `until` on the balancer's clock), `endpoint probed after its ejection`
//! (info), `call re-sent on another endpoint` (debug, `instance` and the
//! failure as `reason`), `call failed, not re-sent` (debug, `error` and the
//! caller's `outcome`), `dial failed` (info) and `discovery failed; keeping
//! the known endpoints` (warn). The feature `tracing` also turns on
//! courier's spans per call (`courier/tracing`).
//!
//! # Example
//!
//! Three in-memory servers behind one balanced client:
//!
//! ```
//! use futures::StreamExt;
//! use courier_balance::{Balanced, RoundRobin};
//! use courier_registry::{Address, Change, Endpoint, Event, SnapshotKind};
//!
//! #[courier::service]
//! pub trait Calc {
//!     #[idempotent]
//!     async fn add(&self, a: u32, b: u32) -> u32;
//! }
//! struct Adder;
//! impl Calc for Adder {
//!     async fn add(&self, a: u32, b: u32) -> u32 { a + b }
//! }
//!
//! // A discovery source: here, one snapshot of three instances.
//! let endpoints: Vec<Endpoint> = (0..3)
//!     .map(|i| Endpoint::new("calc", format!("calc-{i}"), Address::Unix(format!("mem-{i}"))))
//!     .collect();
//! let change = Change::Snapshot { endpoints, kind: SnapshotKind::Initial };
//! let discover = futures::stream::iter([Ok(Event { revision: 1, change })])
//!     .chain(futures::stream::pending());
//!
//! // Dialling an endpoint: here, a fresh in-memory server per dial, handed
//! // to a task that runs the servers.
//! let (spawn, servers) = futures::channel::mpsc::unbounded();
//! let connect = move |_: &Endpoint| {
//!     let (client_io, server_io) = courier_mem::pair(64 * 1024);
//!     spawn.unbounded_send(courier::ServerBuilder::new().build(server_io, CalcServer::new(Adder))).unwrap();
//!     futures::future::ready(Ok::<_, std::io::Error>(courier::Client::new(client_io)))
//! };
//! let run_servers = servers.for_each_concurrent(None, |server| async { server.await.unwrap() });
//!
//! let timer = courier::timer::AsyncIoTimer::new();
//! let (balanced, driver) = Balanced::builder(timer)
//!     .strategy(RoundRobin::new()) // the default is p2c over latency
//!     .build(discover, connect);
//! let calc = CalcClient::new(balanced);
//! let calls = async move {
//!     for i in 0..30 {
//!         assert_eq!(calc.add(i, 1).await, Ok(i + 1));
//!     }
//!     // Each instance served a third of the calls.
//!     let stats = calc.client().endpoints();
//!     assert!(stats.iter().all(|e| e.calls == 10), "{stats:?}");
//!     // Dropping the last handle lets the driver, then the servers, finish.
//! };
//! futures::executor::block_on(async { futures::join!(calls, driver, run_servers) });
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod balanced;
pub mod budget;
mod call;
mod driver;
pub mod ejection;
pub mod load;
pub mod retry;
mod rng;
mod state;
mod stats;
pub mod strategy;

pub use balanced::{Balanced, BalancedBuilder, OneEndpoint};
pub use budget::RetryBudget;
pub use call::{BalancedCall, MAX_ATTEMPTS};
pub use driver::{BalancedDriver, Connector};
pub use ejection::Ejection;
pub use rng::Rng;
pub use stats::{ConnectionStatus, EndpointStats};
pub use strategy::{
    hash_key, Candidate, ConsistentHash, Pick, PowerOfTwoChoices, RoundRobin, Strategy,
    WeightedRandom,
};
