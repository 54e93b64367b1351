//! `watch`'s arguments are decoded by hand (the registry sends its events
//! pre-encoded, so the method bypasses the generated server): bad bytes
//! must get the same typed errors the generated methods give, without
//! opening a watch, and the registry — this connection and the others —
//! goes on serving.

use std::time::Duration;

use courier::{CallError, Client, RemoteError};
use courier_registry::{
    Address, Change, EmbeddedRegistry, Endpoint, Event, InvalidEndpoint, RegistryClient,
    RegistryError, StoreConfig,
};
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use futures::StreamExt;
use serde::ser::SerializeTuple;
use serde::{Serialize, Serializer};

/// Arguments as raw bytes: postcard writes a tuple of `u8`s byte for byte,
/// so the request body is exactly these bytes.
struct Raw(Vec<u8>);

impl Serialize for Raw {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

type Item = Result<Event, RegistryError>;

/// The well-formed arguments of `watch(service, from_revision)`.
fn args(service: &str, from_revision: Option<u64>) -> Vec<u8> {
    postcard::to_allocvec(&(service, from_revision)).unwrap()
}

/// Everything a raw watch call yields, in order; the last entry is how
/// it ended (`Ok(())`: a normal end).
async fn raw_watch(
    client: &Client,
    body: Vec<u8>,
    items: usize,
) -> (Vec<Item>, Result<(), CallError>) {
    let mut stream = client.server_stream::<Raw, Item>(RegistryClient::WATCH, Raw(body));
    let mut seen = Vec::new();
    while seen.len() < items {
        match stream.next().await {
            Some(Ok(item)) => seen.push(item),
            Some(Err(error)) => return (seen, Err(error)),
            None => return (seen, Ok(())),
        }
    }
    (seen, Ok(()))
}

fn endpoint(instance: &str) -> Endpoint {
    Endpoint::new("kv", instance, Address::Tcp(([127, 0, 0, 1], 7000).into()))
}

/// A client of `registry` over courier-mem, its server and driver spawned
/// on `pool`.
fn connect(registry: &EmbeddedRegistry, pool: &LocalPool) -> Client {
    let (client_io, server_io) = courier_mem::pair(64 * 1024);
    let server = courier::ServerBuilder::new().build(server_io, registry.connection());
    let (client, driver) = Client::new(client_io);
    let spawner = pool.spawner();
    spawner
        .spawn_local(async move {
            server.await.expect("the registry's connection fails");
        })
        .unwrap();
    spawner
        .spawn_local(async move {
            driver.await.expect("the client's driver fails");
        })
        .unwrap();
    client
}

#[test]
fn bad_watch_arguments_get_a_typed_error_and_the_registry_goes_on() {
    let mut pool = LocalPool::new();
    let (registry, _expiry) = EmbeddedRegistry::new(StoreConfig::default(), courier::NoTimer);
    let hostile = connect(&registry, &pool);
    let other = connect(&registry, &pool);
    let registry_in_test = registry.clone();
    pool.run_until(async move {
        let registry = registry_in_test;
        let good = args("kv", Some(7));
        let bad_request = Err(CallError::Remote(RemoteError::BadRequest));
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("no bytes", Vec::new()),
            ("garbage", vec![0xff; 16]),
            // The service's length says 1 GiB; 3 bytes follow.
            ("a length past the end", {
                let mut body = vec![0x80, 0x80, 0x80, 0x80, 0x04];
                body.extend_from_slice(b"kv\0");
                body
            }),
            ("not UTF-8", vec![2, 0xff, 0xfe, 0]),
            ("an unknown Option tag", vec![2, b'k', b'v', 2]),
            ("trailing bytes", {
                let mut body = good.clone();
                body.push(0);
                body
            }),
        ];
        for cut in 1..good.len() {
            cases.push(("truncated", good[..cut].to_vec()));
        }
        for (what, body) in cases {
            let (items, end) = raw_watch(&hostile, body.clone(), 1).await;
            assert_eq!(
                (items, end),
                (Vec::new(), bad_request),
                "{what}: {body:?}"
            );
        }
        assert_eq!(registry.watchers(), 0, "no watch opened");

        // Oversized service names are refused by the store, typed, as one
        // error item before the end: at the limit (128 bytes) the watch
        // opens, above it (and far above) it does not.
        let at_limit = "s".repeat(128);
        let (items, _) = raw_watch(&hostile, args(&at_limit, None), 1).await;
        assert!(
            matches!(&items[..], [Ok(Event { change: Change::Snapshot { endpoints, .. }, .. })] if endpoints.is_empty()),
            "{items:?}"
        );
        for len in [129, 100_000] {
            let (items, end) = raw_watch(&hostile, args(&"s".repeat(len), None), 2).await;
            assert_eq!(
                items,
                [Err(RegistryError::Invalid(InvalidEndpoint::ServiceName))],
                "{len} bytes"
            );
            assert_eq!(end, Ok(()), "{len} bytes: the stream ends after its error");
        }
        // Past the client's frame limit the request is not even sent.
        let (items, end) = raw_watch(&hostile, args(&"s".repeat(2 << 20), None), 1).await;
        assert!(items.is_empty());
        assert!(
            matches!(end, Err(CallError::RequestTooLarge { .. })),
            "{end:?}"
        );

        // Both connections still serve: a watch on each sees a change
        // registered through the other.
        let typed = RegistryClient::new(other.clone());
        let typed_hostile = RegistryClient::new(hostile.clone());
        let mut from_other = typed.watch("kv".into(), None);
        let snapshot = from_other.next().await.unwrap().unwrap().unwrap();
        assert!(matches!(snapshot.change, Change::Snapshot { .. }));
        let mut from_hostile = typed_hostile.watch("kv".into(), None);
        let snapshot = from_hostile.next().await.unwrap().unwrap().unwrap();
        assert!(matches!(snapshot.change, Change::Snapshot { .. }));
        let lease = typed_hostile
            .register(None, endpoint("kv-1"), Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(lease, 0);
        for watch in [&mut from_other, &mut from_hostile] {
            let added = watch.next().await.unwrap().unwrap().unwrap();
            assert_eq!(added.change, Change::Added(endpoint("kv-1")));
        }
        assert_eq!(registry.watchers(), 2, "only the good watches are open");
    });
}
