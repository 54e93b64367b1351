//! The channel seam: typed clients over `courier::Client` unchanged, and
//! pre-encoded arguments (`Client::call_encoded`) that a load balancer
//! re-sends, byte for byte the same as a typed call.

use courier::client::Encoded;
use courier::{CallError, Channel, Client, ClientBuilder, ServerBuilder};

#[courier::service]
pub trait Echo {
    /// Returns its argument.
    #[idempotent]
    async fn echo(&self, bytes: Vec<u8>) -> Vec<u8>;
    /// Adds.
    async fn add(&self, a: u32, b: u32) -> u32;
}

struct Impl;

impl Echo for Impl {
    async fn echo(&self, bytes: Vec<u8>) -> Vec<u8> {
        bytes
    }
    async fn add(&self, a: u32, b: u32) -> u32 {
        a + b
    }
}

/// Runs `body` with a client of max frame `max_frame` against a server.
fn with_client<F, Fut>(max_frame: usize, body: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (client_io, server_io) = courier_mem::pair(64 * 1024);
    let server = ServerBuilder::new()
        .max_frame(max_frame)
        .build(server_io, EchoServer::new(Impl));
    let (client, driver) = ClientBuilder::new().max_frame(max_frame).build(client_io);
    futures::executor::block_on(async {
        let ((), driver, server) = futures::join!(body(client), driver, server);
        driver.unwrap();
        server.unwrap();
    });
}

#[test]
fn encoded_arguments_are_the_typed_calls_bytes() {
    let typed = Encoded::new(&(2u32, 3u32), 64).unwrap();
    assert_eq!(
        typed.as_bytes(),
        postcard::to_allocvec(&(2u32, 3u32)).unwrap()
    );
    with_client(64 * 1024, |client| async move {
        let sum: u32 = client
            .clone()
            .call_encoded(EchoClient::ADD, typed.clone())
            .await
            .unwrap();
        assert_eq!(sum, 5);
        // The same encoding sent again, on the same or another client.
        let again: Result<u32, _> = client.call_encoded(EchoClient::ADD, typed).await;
        assert_eq!(again, Ok(5));
    });
}

#[test]
fn encoded_arguments_small_and_large_take_both_paths() {
    with_client(64 * 1024, |client| async move {
        // Under 256 bytes a request is framed on the stack; over, in the
        // call's slot.
        for len in [0usize, 200, 255, 256, 300, 10_000] {
            let bytes = vec![7u8; len];
            let args = Encoded::new(&(bytes.clone(),), usize::MAX).unwrap();
            let back: Vec<u8> = client
                .clone()
                .call_encoded(EchoClient::ECHO, args)
                .await
                .unwrap();
            assert_eq!(back, bytes, "len {len}");
        }
    });
}

#[test]
fn encoded_arguments_respect_the_frame_limit_below_at_and_above() {
    const MAX: usize = 1024;
    with_client(MAX, |client| async move {
        // A request frame is its header (measured with an empty body) and
        // the body.
        let header = match client
            .clone()
            .call_encoded::<Vec<u8>>(EchoClient::ECHO, Encoded::new(&(), 0).unwrap())
            .await
        {
            // An empty body is not a valid `(Vec<u8>,)`: the server says so.
            Err(CallError::Remote(courier::RemoteError::BadRequest)) => {
                let probe = Encoded::new(&(vec![0u8; 2000],), usize::MAX).unwrap();
                match client
                    .clone()
                    .call_encoded::<Vec<u8>>(EchoClient::ECHO, probe)
                    .await
                {
                    Err(CallError::RequestTooLarge { len, max }) => {
                        assert_eq!(max, MAX);
                        len - 2002
                    }
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        };
        // A body of `n` bytes: a 2-byte length then the bytes (n ≥ 128).
        let body = |n: usize| Encoded::new(&(vec![1u8; n - 2],), usize::MAX).unwrap();
        let fits = MAX - header;
        let at: Result<Vec<u8>, _> = client
            .clone()
            .call_encoded(EchoClient::ECHO, body(fits))
            .await;
        assert_eq!(at.map(|b| b.len()), Ok(fits - 2));
        let below: Result<Vec<u8>, _> = client
            .clone()
            .call_encoded(EchoClient::ECHO, body(fits - 1))
            .await;
        assert!(below.is_ok());
        let above: Result<Vec<u8>, _> = client
            .clone()
            .call_encoded(EchoClient::ECHO, body(fits + 1))
            .await;
        assert_eq!(
            above,
            Err(CallError::RequestTooLarge {
                len: MAX + 1,
                max: MAX
            })
        );
    });
}

#[test]
fn encoding_refuses_more_than_its_bound() {
    let args = (vec![0u8; 10],); // 11 bytes
    assert!(Encoded::new(&args, 12).is_ok());
    assert!(Encoded::new(&args, 11).is_ok());
    assert_eq!(
        Encoded::new(&args, 10),
        Err(CallError::RequestTooLarge { len: 11, max: 10 })
    );
    // Over 256 bytes the arguments are encoded on the heap: the same rule.
    let large = (vec![0u8; 1000],); // 1002 bytes
    assert!(Encoded::new(&large, 1002).is_ok());
    assert_eq!(
        Encoded::new(&large, 1001),
        Err(CallError::RequestTooLarge {
            len: 1002,
            max: 1001
        })
    );
    let mut scratch = Vec::with_capacity(64);
    let reused = Encoded::new_in(&mut scratch, &args, 64).unwrap();
    assert_eq!(reused.as_bytes().len(), 11);
    assert!(scratch.capacity() >= 64, "the scratch buffer is kept");
}

#[test]
fn a_typed_client_calls_through_the_channel_trait() {
    fn over<C: Channel>(channel: C) -> EchoClient<C> {
        EchoClient::new(channel)
    }
    // The generated client names each method's idempotence.
    let infos: Vec<_> = EchoClient::METHODS
        .iter()
        .map(|m| (m.name, m.idempotent))
        .collect();
    assert_eq!(infos, [("echo", true), ("add", false)]);
    with_client(64 * 1024, |client| async move {
        let echo = over(client);
        assert_eq!(echo.add(40, 2).await, Ok(42));
        // The direct client's call type is still courier's own `Call`.
        let call: courier::Call<'_, (u32, u32), u32> = echo.add(1, 1);
        assert_eq!(
            call.with_timeout(std::time::Duration::from_secs(5)).await,
            Ok(2)
        );
    });
}

/// Keeps a client next to state of its own, as a load balancer's endpoint
/// record does.
struct Holder {
    client: Client,
    tag: u32,
}

impl AsRef<Client> for Holder {
    fn as_ref(&self) -> &Client {
        &self.client
    }
}

#[test]
fn a_held_call_keeps_its_holder_and_its_connection() {
    with_client(64 * 1024, |client| async move {
        let holder = std::sync::Arc::new(Holder { client, tag: 7 });
        let call = Client::call_held::<_, _, u32>(holder.clone(), EchoClient::ADD, (2u32, 3u32));
        assert_eq!(call.holder::<Holder>().map(|h| h.tag), Some(7));
        assert!(call.holder::<String>().is_none(), "another type: none");
        // The call holds the only client handle now: the connection stays.
        drop(holder);
        assert_eq!(call.await, Ok(5));
        // `into_owned` keeps the holder; a borrowed call has none.
        let holder = std::sync::Arc::new(Holder {
            client: with_second_handle(),
            tag: 8,
        });
        let borrowed = holder.client.call::<_, u32>(EchoClient::ADD, (1u32, 1u32));
        assert!(borrowed.holder::<Holder>().is_none());
        drop(borrowed);
        let owned = Client::call_held::<_, _, u32>(holder, EchoClient::ADD, (1u32, 1u32));
        assert_eq!(
            owned.into_owned().holder::<Holder>().map(|h| h.tag),
            Some(8)
        );
    });
}

#[test]
fn a_retained_request_comes_back_after_the_call_sent_or_failed() {
    with_client(64 * 1024, |client| async move {
        // Not yet sent: any call gives its request back.
        let call = client.call::<_, u32>(EchoClient::ADD, (1u32, 2u32));
        assert_eq!(call.into_request(), Some((1, 2)));
        // Sent and answered: only a call that retains it.
        let mut kept = client
            .call::<_, u32>(EchoClient::ADD, (3u32, 4u32))
            .retain_request();
        assert_eq!((&mut kept).await, Ok(7));
        assert_eq!(kept.into_request(), Some((3, 4)));
        let mut plain = client.call::<_, u32>(EchoClient::ADD, (5u32, 6u32));
        assert_eq!((&mut plain).await, Ok(11));
        assert_eq!(plain.into_request(), None);
        // Large arguments take the slot's buffer: the same.
        let bytes = vec![3u8; 1000];
        let mut large = client
            .call::<_, Vec<u8>>(EchoClient::ECHO, (bytes.clone(),))
            .retain_request();
        assert_eq!((&mut large).await.as_ref(), Ok(&bytes));
        assert_eq!(large.into_request(), Some((bytes,)));
    });
    // Failed (the connection is closed): back, to be sent elsewhere.
    let closed = with_second_handle();
    let mut failed = closed
        .call::<_, u32>(EchoClient::ADD, (8u32, 9u32))
        .retain_request();
    let result = futures::executor::block_on(&mut failed);
    assert!(result.is_err(), "{result:?}");
    assert_eq!(failed.into_request(), Some((8, 9)));
}

/// A client of its own (its driver dropped): enough to build calls that
/// are never polled.
fn with_second_handle() -> Client {
    let (client_io, _server_io) = courier_mem::pair(1024);
    Client::new(client_io).0
}
