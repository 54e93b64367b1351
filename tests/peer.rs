//! Calls in both directions on one connection (PROTOCOL.md 3.11): two
//! peers serve each other, concurrently, with unary calls and streams, over
//! courier-mem and TCP; a peer's calls survive the other's load; ending one
//! side ends the other's calls with a typed error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use courier::peer::PeerBuilder;
use courier::{BoxStream, CallContext, CallError, Streaming};
use futures::StreamExt;

/// What the hub serves to its devices.
#[courier::service]
pub trait Hub {
    /// A device reports a value; returns the hub's running total.
    async fn report(&self, value: u64) -> u64;
    /// The hub counts a stream of readings.
    async fn upload(&self, readings: Streaming<u64>) -> u64;
}

/// What a device serves, for the hub to call back.
#[courier::service]
pub trait Device {
    /// The device's name, and who asked (the request id it saw).
    async fn name(&self, ctx: CallContext) -> (String, u32);
    /// `n` events, pushed to the hub.
    async fn events(&self, n: u32) -> BoxStream<u32>;
}

#[derive(Default)]
struct HubImpl {
    total: AtomicU64,
}

impl Hub for Arc<HubImpl> {
    async fn report(&self, value: u64) -> u64 {
        self.total.fetch_add(value, Ordering::SeqCst) + value
    }
    async fn upload(&self, readings: Streaming<u64>) -> u64 {
        readings.filter_map(|r| async move { r.ok() }).count().await as u64
    }
}

struct DeviceImpl(&'static str);

impl Device for DeviceImpl {
    async fn name(&self, ctx: CallContext) -> (String, u32) {
        (self.0.to_string(), ctx.request_id())
    }
    async fn events(&self, n: u32) -> BoxStream<u32> {
        Box::pin(futures::stream::iter(0..n))
    }
}

#[test]
fn both_sides_call_each_other_concurrently() {
    let (a, b) = courier_mem::pair(16 * 1024);
    let hub = Arc::new(HubImpl::default());
    let done = courier::Shutdown::new();
    let (to_device, hub_driver) = PeerBuilder::new()
        .server(|server| server.shutdown(done.clone()))
        .build(a, HubServer::new(hub.clone()));
    let (to_hub, device_driver) = PeerBuilder::new().build(b, DeviceServer::new(DeviceImpl("d1")));
    let device = DeviceClient::new(to_device);
    let hub_client = HubClient::new(to_hub);
    let results = futures::executor::block_on(async move {
        let calls = async move {
            let out = {
                let device_side = async {
                    // The device calls the hub...
                    let reports =
                        futures::future::join_all((1..=100u64).map(|v| hub_client.report(v)));
                    let upload = hub_client.upload(futures::stream::iter(0..5000u64));
                    let (reports, upload) = futures::join!(reports, upload);
                    assert!(reports.iter().all(Result::is_ok));
                    upload
                };
                let hub_side = async {
                    // ...while the hub calls the device back on the same
                    // connection.
                    let names = futures::future::join_all((0..50).map(|_| device.name()));
                    let events = device.events(3000).map(|e| e.unwrap()).collect::<Vec<_>>();
                    futures::join!(names, events)
                };
                futures::join!(device_side, hub_side)
            };
            drop(hub_client);
            drop(device);
            done.trigger();
            out
        };
        let (out, hub_result, device_result) = futures::join!(calls, hub_driver, device_driver);
        hub_result.unwrap();
        device_result.unwrap();
        out
    });
    let (upload, (names, events)) = results;
    assert_eq!(upload, Ok(5000));
    assert_eq!(hub.total.load(Ordering::SeqCst), 5050);
    assert_eq!(names.len(), 50);
    let mut ids: Vec<u32> = names
        .into_iter()
        .map(|n| {
            let (name, id) = n.unwrap();
            assert_eq!(name, "d1");
            id
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50, "each call had its own request id");
    assert_eq!(events, (0..3000).collect::<Vec<_>>());
}

/// When one peer goes away, the other's calls in flight fail with a typed
/// error instead of hanging, and its driver ends.
#[test]
fn a_vanished_peer_fails_the_calls_in_flight() {
    let (a, b) = courier_mem::pair(16 * 1024);
    let hub = Arc::new(HubImpl::default());
    let (to_device, hub_driver) = PeerBuilder::new().build(a, HubServer::new(hub));
    let (_to_hub, device_driver) = PeerBuilder::new().build(b, DeviceServer::new(DeviceImpl("d2")));
    let device = DeviceClient::new(to_device);
    let mut pool = futures::executor::LocalPool::new();
    use futures::task::LocalSpawnExt;
    let (abort, registration) = futures::future::AbortHandle::new_pair();
    pool.spawner()
        .spawn_local(async move {
            let _ = futures::future::Abortable::new(device_driver, registration).await;
        })
        .unwrap();
    let hub_driver = pool.spawner().spawn_local_with_handle(hub_driver).unwrap();
    // The device answers one call, then its whole peer is dropped.
    let first = pool.run_until(device.name());
    assert_eq!(first.unwrap().0, "d2");
    abort.abort();
    let outcome = pool.run_until(async move {
        let stream: Vec<Result<u32, CallError>> = device.events(10).collect().await;
        drop(device);
        (stream, hub_driver.await)
    });
    let (stream, driver) = outcome;
    assert_eq!(stream.len(), 1, "{stream:?}");
    assert!(
        matches!(
            stream[0],
            Err(CallError::ConnectionLost | CallError::NotSent(_))
        ),
        "{stream:?}"
    );
    // The hub's driver ended (the device's end of the link is gone).
    let _ = driver;
}

/// Peers over TCP, on tokio: the device dials the hub (as behind a NAT)
/// and the hub calls it back over that connection.
#[test]
fn peers_over_tcp_on_tokio() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The hub ends the connection only after the device's own call is
        // answered: ending it earlier fails that call (NotSent), rightly.
        let (reported, device_reported) = futures::channel::oneshot::channel::<()>();
        let hub = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let io = courier::io::TokioIo::new(socket);
            let done = courier::Shutdown::new();
            let (to_device, driver) = PeerBuilder::new()
                .timer(courier::timer::TokioTimer::new())
                .server(|server| server.shutdown(done.clone()))
                .build(io, HubServer::new(Arc::new(HubImpl::default())));
            let driver = tokio::spawn(driver);
            let device = DeviceClient::new(to_device);
            let (name, _) = device.name().await.unwrap();
            let events: Vec<u32> = device.events(100).map(Result::unwrap).collect().await;
            drop(device);
            device_reported.await.unwrap();
            // The hub ends the connection gracefully.
            done.trigger();
            (name, events, driver)
        });
        let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.set_nodelay(true).unwrap();
        let io = courier::io::TokioIo::new(socket);
        let (to_hub, driver) = PeerBuilder::new()
            .timer(courier::timer::TokioTimer::new())
            .build(io, DeviceServer::new(DeviceImpl("nat-device")));
        let driver = tokio::spawn(driver);
        let total = HubClient::new(to_hub.clone()).report(7).await.unwrap();
        assert_eq!(total, 7);
        reported.send(()).unwrap();
        let (name, events, hub_driver) = hub.await.unwrap();
        assert_eq!(name, "nat-device");
        assert_eq!(events, (0..100).collect::<Vec<_>>());
        drop(to_hub);
        // Both sides are done: each driver ends once the other closes.
        driver.await.unwrap().unwrap();
        hub_driver.await.unwrap().unwrap();
    });
}
