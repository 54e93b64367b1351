//! What `#[courier::service]` and `#[derive(courier::Schema)]` generate,
//! exercised over the in-memory transport.

use std::sync::Arc;
use std::time::Duration;

use courier::schema::Shape;
use courier::{MethodInfo, MethodKey, Schema};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize, Schema)]
pub struct Rect {
    width: u32,
    height: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Schema)]
pub enum Shape2 {
    Empty,
    Square(u32),
    Rect { width: u32, height: u32 },
}

/// A service with every kind of declaration.
#[courier::service]
pub trait Kitchen {
    /// No arguments, no result.
    async fn ping(&self);
    #[idempotent]
    async fn area(&self, rect: Rect) -> u64;
    async fn classify(&self, side: u32) -> Shape2;
    async fn r#type(&self, name: String) -> Result<String, String>;
}

struct Impl;

impl Kitchen for Impl {
    async fn ping(&self) {}
    async fn area(&self, rect: Rect) -> u64 {
        u64::from(rect.width) * u64::from(rect.height)
    }
    async fn classify(&self, side: u32) -> Shape2 {
        match side {
            0 => Shape2::Empty,
            1..=9 => Shape2::Square(side),
            _ => Shape2::Rect {
                width: side,
                height: 1,
            },
        }
    }
    async fn r#type(&self, name: String) -> Result<String, String> {
        if name.is_empty() {
            Err("no name".to_string())
        } else {
            Ok(name.to_uppercase())
        }
    }
}

/// The same service with a different `Rect`: the key of `area` follows.
mod wider {
    use super::*;

    #[derive(Serialize, Deserialize, Schema)]
    pub struct Rect {
        pub width: u64,
        pub height: u32,
    }

    #[courier::service]
    pub trait Kitchen {
        async fn area(&self, rect: Rect) -> u64;
    }
}

/// The same service with `Rect` as a tuple: the same bytes, the same key.
mod tuple {
    #[courier::service]
    pub trait Kitchen {
        async fn area(&self, rect: (u32, u32)) -> u64;
    }
}

#[test]
fn methods_list_names_keys_idempotency_and_fallibility_in_order() {
    let names: Vec<&str> = KitchenClient::METHODS.iter().map(|m| m.name).collect();
    assert_eq!(names, ["ping", "area", "classify", "type"]);
    assert_eq!(
        KitchenClient::METHODS[1],
        MethodInfo::new("area", KitchenClient::AREA)
            .with_service("Kitchen")
            .with_idempotent(true)
    );
    // Only `type` returns a `Result`: its `Err` is the application's error.
    let fallible: Vec<bool> = KitchenClient::METHODS.iter().map(|m| m.fallible).collect();
    assert_eq!(fallible, [false, false, false, true]);
    assert!(KitchenClient::METHODS
        .iter()
        .all(|m| m.service == "Kitchen"));
    let idempotent: Vec<bool> = KitchenClient::METHODS
        .iter()
        .map(|m| m.idempotent)
        .collect();
    assert_eq!(idempotent, [false, true, false, false]);
    assert_eq!(KitchenClient::METHODS[3].key, KitchenClient::TYPE);
}

#[test]
fn keys_hash_the_wire_schema() {
    assert_eq!(
        KitchenClient::AREA,
        MethodKey::from_schema("Kitchen", "area", <(Rect,)>::SCHEMA, u64::SCHEMA)
    );
    assert_eq!(
        KitchenClient::PING,
        MethodKey::from_schema("Kitchen", "ping", <()>::SCHEMA, <()>::SCHEMA)
    );
    // Field names are not on the wire; field types are.
    assert_eq!(KitchenClient::AREA, tuple::KitchenClient::AREA);
    assert_ne!(KitchenClient::AREA, wider::KitchenClient::AREA);
    assert_eq!(
        *Shape2::SCHEMA,
        Shape::Enum(&[&[], &[&Shape::U32], &[&Shape::U32, &Shape::U32]])
    );
}

#[test]
fn calls_round_trip_and_a_schema_mismatch_is_an_unknown_method() {
    let (client_io, server_io) = courier_mem::pair(64 * 1024);
    let server = courier::ServerBuilder::new()
        .build(server_io, KitchenServer::from_arc(Arc::new(Impl)).clone());
    let (client, driver) = courier::Client::new(client_io);
    let kitchen = KitchenClient::new(client.clone()).with_timeout(Duration::from_secs(60));
    let wider = wider::KitchenClient::new(client);

    futures::executor::block_on(async move {
        let calls = async move {
            assert_eq!(kitchen.ping().await, Ok(()));
            let rect = Rect {
                width: 3,
                height: 4,
            };
            assert_eq!(kitchen.area(rect).await, Ok(12));
            assert_eq!(kitchen.classify(0).await, Ok(Shape2::Empty));
            assert_eq!(kitchen.classify(4).await, Ok(Shape2::Square(4)));
            assert_eq!(
                kitchen.classify(12).await,
                Ok(Shape2::Rect {
                    width: 12,
                    height: 1
                })
            );
            assert_eq!(
                kitchen.r#type("ann".to_string()).await,
                Ok(Ok("ANN".to_string()))
            );
            assert_eq!(
                kitchen.r#type(String::new()).await,
                Ok(Err("no name".to_string()))
            );
            let rect = wider::Rect {
                width: 3,
                height: 4,
            };
            assert_eq!(
                wider.area(rect).await,
                Err(courier::CallError::Remote(
                    courier::RemoteError::UnknownMethod
                ))
            );
        };
        let (_, driver_result, server_result) = futures::join!(calls, driver, server);
        driver_result.unwrap();
        server_result.unwrap();
    });
}

/// Parameters named like the generated code's own locals.
mod clash {
    use courier::BoxStream;
    use courier::Streaming;
    use futures::StreamExt;

    #[courier::service]
    pub trait Clash {
        async fn mix(&self, service: u32, request: u32, args: u32, method: u32) -> u32;
        async fn count(&self, service: u32) -> BoxStream<u32>;
        async fn sum(&self, args: u32, service: Streaming<u32>) -> u32;
    }

    pub struct Impl;

    impl Clash for Impl {
        async fn mix(&self, service: u32, request: u32, args: u32, method: u32) -> u32 {
            service * 1000 + request * 100 + args * 10 + method
        }
        async fn count(&self, service: u32) -> BoxStream<u32> {
            Box::pin(futures::stream::iter(0..service))
        }
        async fn sum(&self, args: u32, service: Streaming<u32>) -> u32 {
            let items: Vec<u32> = service.map(|item| item.unwrap()).collect().await;
            args + items.iter().sum::<u32>()
        }
    }

    /// The heap-free macro's dispatcher, with the same names.
    pub mod device {
        #[courier::heap_free_service]
        pub trait Clash {
            async fn mix(&self, service: u32, request: u32, args: u32, method: u32) -> u32;
        }

        pub struct Impl;

        impl Clash for Impl {
            async fn mix(&self, service: u32, request: u32, args: u32, method: u32) -> u32 {
                service * 1000 + request * 100 + args * 10 + method
            }
        }
    }
}

#[test]
fn parameters_may_be_named_like_the_dispatchers_locals() {
    use clash::ClashClient;
    use courier::heap_free::HeapFreeService;
    use futures::StreamExt;

    let (client_io, server_io) = courier_mem::pair(64 * 1024);
    let server =
        courier::ServerBuilder::new().build(server_io, clash::ClashServer::new(clash::Impl));
    let (client, driver) = courier::Client::new(client_io);
    let clash = ClashClient::new(client);
    futures::executor::block_on(async move {
        let calls = async move {
            assert_eq!(clash.mix(1, 2, 3, 4).await, Ok(1234));
            let counted: Vec<u32> = clash.count(3).map(|item| item.unwrap()).collect().await;
            assert_eq!(counted, [0, 1, 2]);
            assert_eq!(
                clash.sum(100, futures::stream::iter([1, 2, 3])).await,
                Ok(106)
            );
        };
        let (_, driver_result, server_result) = futures::join!(calls, driver, server);
        driver_result.unwrap();
        server_result.unwrap();
    });

    let device = clash::device::Impl;
    let served = clash::device::ClashHeapFree::new(&device);
    let reply = futures::executor::block_on(
        served.run(clash::device::ClashHeapFreeArgs::M_mix(4, 3, 2, 1)),
    );
    assert!(matches!(
        reply,
        clash::device::ClashHeapFreeReply::M_mix(4321)
    ));
}
