//! Over a real socket, frames that are ready together leave in one write:
//! a wrapper counts the `poll_write` calls of both ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use courier::{ClientBuilder, Transport};
use courier_net::Listener;

/// Adds.
#[courier::service]
pub trait Add {
    /// Adds.
    async fn add(&self, a: u64, b: u64) -> u64;
}

struct Imp;
impl Add for Imp {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// A transport that counts its writes.
struct Counting<T>(T, Arc<AtomicUsize>);

impl<T: Transport> Transport for Counting<T> {
    type Error = T::Error;
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, T::Error>> {
        self.0.poll_read(cx, buf)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, T::Error>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.poll_write(cx, buf)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        self.0.poll_flush(cx)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        self.0.poll_close(cx)
    }
}

/// A listener whose connections count their writes into one counter.
struct CountingListener(courier_tcp::TcpListener, Arc<AtomicUsize>);

impl Listener for CountingListener {
    type Conn = Counting<courier_tcp::Conn>;
    type Peer = std::net::SocketAddr;
    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<(Self::Conn, Self::Peer)>> {
        self.0
            .poll_accept(cx)
            .map_ok(|(conn, peer)| (Counting(conn, self.1.clone()), peer))
    }
}

#[test]
fn ready_frames_share_one_write() {
    const CALLS: u64 = 100;
    smol::block_on(async {
        let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_writes = Arc::new(AtomicUsize::new(0));
        let listener = CountingListener(listener, server_writes.clone());
        let server = smol::spawn(courier_tcp::builder().serve(listener, AddServer::new(Imp)));

        let stream = courier_tcp::connect_stream(addr).await.unwrap();
        let client_writes = Arc::new(AtomicUsize::new(0));
        let transport = Counting(courier::io::FuturesIo::new(stream), client_writes.clone());
        let (client, driver) = ClientBuilder::new().build(transport);
        let client = AddClient::new(client);

        // The calls are polled before the driver (join polls in order), so
        // all requests are queued when the driver first writes.
        let calls = async move {
            let calls = (0..CALLS).map(|i| client.add(i, 1));
            let results = futures::future::join_all(calls).await;
            for (i, result) in results.into_iter().enumerate() {
                assert_eq!(result, Ok(i as u64 + 1));
            }
        };
        let ((), driver) = futures::join!(calls, driver);
        driver.unwrap();
        drop(server);

        let client_writes = client_writes.load(Ordering::SeqCst);
        assert!(
            client_writes <= 2,
            "{CALLS} requests took {client_writes} writes"
        );
        let server_writes = server_writes.load(Ordering::SeqCst);
        assert!(
            server_writes <= CALLS as usize / 10,
            "{CALLS} replies took {server_writes} writes"
        );
    });
}

#[test]
fn a_lone_frame_is_flushed_at_once() {
    smol::block_on(async {
        let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = smol::spawn(courier_tcp::serve(listener, AddServer::new(Imp)));
        let (client, driver) = courier_tcp::connect(addr).await.unwrap();
        let driver = smol::spawn(driver);
        let client = AddClient::new(client);
        // One call at a time: each must be written and flushed on its own,
        // or the next call would never be answered.
        for i in 0..3 {
            let call = client.add(i, i);
            let answer = futures::future::select(
                Box::pin(call),
                async_io::Timer::after(std::time::Duration::from_secs(10)),
            )
            .await;
            match answer {
                futures::future::Either::Left((result, _)) => assert_eq!(result, Ok(2 * i)),
                futures::future::Either::Right(_) => panic!("call {i} was not flushed"),
            }
        }
        drop(client);
        driver.await.unwrap();
        drop(server);
    });
}
