//! Push in both directions over the connection a device opened: devices
//! (behind a NAT, say) dial a hub; each device serves its own service on
//! that connection, so the hub can call it back, and each device pushes
//! events to the hub as one-way notifications and a stream.
//!
//! ```text
//! cargo run --example push
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courier::peer::PeerBuilder;
use courier::timer::TokioTimer;
use courier::{BoxStream, CallContext, Streaming};
use futures::StreamExt;

/// What the hub serves to the devices.
#[courier::service]
pub trait Hub {
    /// A device pushes an event; nothing comes back.
    #[oneway]
    async fn event(&self, device: String, code: u32);
    /// A device uploads a batch of readings; the hub answers their count.
    async fn readings(&self, device: String, values: Streaming<f32>) -> u32;
}

/// What every device serves to the hub, over the connection it opened.
#[courier::service]
pub trait Device {
    /// The device's name and firmware version.
    async fn describe(&self) -> (String, u32);
    /// Live telemetry: `n` samples, pushed as a stream.
    async fn telemetry(&self, n: u32) -> BoxStream<f32>;
    /// Reboots the device (after answering), telling who asked.
    async fn reboot(&self, ctx: CallContext) -> String;
}

#[derive(Default)]
struct HubState {
    events: AtomicU64,
    readings: AtomicU64,
}

#[derive(Clone, Default)]
struct HubImpl(Arc<HubState>);

impl Hub for HubImpl {
    async fn event(&self, device: String, code: u32) {
        println!("hub: event {code} from {device}");
        self.0.events.fetch_add(1, Ordering::SeqCst);
    }

    async fn readings(&self, device: String, values: Streaming<f32>) -> u32 {
        let n = values.filter_map(|v| async move { v.ok() }).count().await as u32;
        println!("hub: {n} readings from {device}");
        self.0.readings.fetch_add(u64::from(n), Ordering::SeqCst);
        n
    }
}

struct Sensor {
    name: String,
}

impl Device for Sensor {
    async fn describe(&self) -> (String, u32) {
        (self.name.clone(), 7)
    }

    async fn telemetry(&self, n: u32) -> BoxStream<f32> {
        Box::pin(futures::stream::iter(0..n).map(|i| 20.0 + i as f32 / 10.0))
    }

    async fn reboot(&self, ctx: CallContext) -> String {
        format!("{} reboots (request {})", self.name, ctx.request_id())
    }
}

/// A device: dials the hub, serves `Device` on that connection and pushes
/// its events and readings through the same connection.
type Error = Box<dyn std::error::Error + Send + Sync>;

async fn run_device(addr: std::net::SocketAddr, name: &'static str) -> Result<(), Error> {
    let socket = tokio::net::TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let (to_hub, driver) = PeerBuilder::new().timer(TokioTimer::new()).build(
        courier::io::TokioIo::new(socket),
        DeviceServer::new(Sensor { name: name.into() }),
    );
    let driver = tokio::spawn(driver);
    let hub = HubClient::new(to_hub);
    for code in [1, 2, 3] {
        hub.event(name.to_string(), code).await?;
    }
    let values = futures::stream::iter((0..500).map(|i| i as f32));
    let counted = hub.readings(name.to_string(), values).await?;
    assert_eq!(counted, 500);
    drop(hub);
    // The device keeps serving the hub until the hub ends the connection.
    driver.await??;
    println!("{name}: the hub closed the connection");
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let devices = ["sensor-a", "sensor-b"].map(|name| tokio::spawn(run_device(addr, name)));

    let hub = HubImpl::default();
    let mut sessions = Vec::new();
    for _ in 0..devices.len() {
        let (socket, peer) = listener.accept().await?;
        socket.set_nodelay(true)?;
        // The hub serves `Hub` and calls the device back on its connection;
        // a shutdown ends the connection gracefully when the hub is done.
        let done = courier::Shutdown::new();
        let (to_device, driver) = PeerBuilder::new()
            .timer(TokioTimer::new())
            .server(|server| server.shutdown(done.clone()))
            .build(
                courier::io::TokioIo::new(socket),
                HubServer::new(hub.clone()),
            );
        let driver = tokio::spawn(driver);
        let session = tokio::spawn(async move {
            let device = DeviceClient::new(to_device);
            let (name, version) = device.describe().await?;
            println!("hub: {name} (firmware {version}) connected from {peer}");
            let samples: Vec<f32> = device
                .with_timeout(Duration::from_secs(5))
                .telemetry(100)
                .map(|s| s.expect("sample"))
                .collect()
                .await;
            println!(
                "hub: {} telemetry samples from {name}, last {:?}",
                samples.len(),
                samples.last()
            );
            println!("hub: {}", device.reboot().await?);
            Ok::<_, Error>(samples.len())
        });
        sessions.push((session, done, driver));
    }
    for (session, ..) in &mut sessions {
        assert_eq!(session.await??, 100);
    }
    // The devices' pushes are one-way: wait (boundedly) until they are in,
    // then end every session gracefully; each device sees the end.
    for _ in 0..500 {
        if hub.0.readings.load(Ordering::SeqCst) == 1000 && hub.0.events.load(Ordering::SeqCst) == 6
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (_, done, driver) in sessions {
        done.trigger();
        driver.await??;
    }
    for device in devices {
        device.await??;
    }
    let state = &hub.0;
    println!(
        "hub: {} events, {} readings in all",
        state.events.load(Ordering::SeqCst),
        state.readings.load(Ordering::SeqCst)
    );
    assert_eq!(state.events.load(Ordering::SeqCst), 6);
    assert_eq!(state.readings.load(Ordering::SeqCst), 1000);
    Ok(())
}
