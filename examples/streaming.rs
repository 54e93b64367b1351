//! All four streaming modes of `#[courier::service]` over TCP on tokio:
//! server streaming, client streaming, bidirectional, and one-way
//! notifications — with credit-based flow control on every stream.
//!
//! ```text
//! cargo run --example streaming
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use courier::{BoxStream, CallError, Streaming};
use futures::StreamExt;

/// A small telemetry service.
#[courier::service]
pub trait Telemetry {
    /// Server streaming: `n` readings, one item each. The implementation
    /// returns any `Stream`, boxed; the caller gets a stream of `Result`s.
    async fn readings(&self, n: u32) -> BoxStream<u32>;
    /// Client streaming: the caller sends samples, the server answers once.
    async fn average(&self, samples: Streaming<u32>) -> Option<u32>;
    /// Bidirectional: every line comes back upper-cased, as it arrives.
    async fn shout(&self, lines: Streaming<String>) -> BoxStream<String>;
    /// A notification: never answered, not even with an error.
    #[oneway]
    async fn event(&self, code: u64);
}

#[derive(Default)]
struct Station {
    events: AtomicU64,
}

impl Telemetry for Arc<Station> {
    async fn readings(&self, n: u32) -> BoxStream<u32> {
        Box::pin(futures::stream::iter(0..n).map(|i| 20 + i % 5))
    }

    async fn average(&self, samples: Streaming<u32>) -> Option<u32> {
        // Items arrive as `Result`s: an item that does not decode is an
        // error, and the stream goes on.
        let (sum, count) = samples
            .filter_map(|sample| async move { sample.ok() })
            .fold((0u64, 0u64), |(sum, n), s| async move {
                (sum + u64::from(s), n + 1)
            })
            .await;
        (count > 0).then(|| (sum / count) as u32)
    }

    async fn shout(&self, lines: Streaming<String>) -> BoxStream<String> {
        Box::pin(lines.map(|line| line.map_or_else(|e| format!("<{e}>"), |l| l.to_uppercase())))
    }

    async fn event(&self, code: u64) {
        self.events.fetch_add(code, Ordering::SeqCst);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let station = Arc::new(Station::default());
    let listener = courier_tcp::tokio::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server =
        courier_tcp::tokio::builder().serve(listener, TelemetryServer::new(station.clone()));
    let server = tokio::spawn(server);

    let (client, driver) = courier_tcp::tokio::connect(addr).await?;
    let driver = tokio::spawn(driver);
    let telemetry = TelemetryClient::new(client);

    // Server streaming, with a small credit window: the server never runs
    // more than 8 readings ahead of this loop.
    let readings: Vec<u32> = telemetry
        .readings(1000)
        .with_credit(8)
        .map(|r| r.expect("reading"))
        .collect()
        .await;
    println!(
        "server streaming: {} readings, first {:?}",
        readings.len(),
        &readings[..5]
    );
    assert_eq!(readings.len(), 1000);

    // Client streaming: any stream of items goes up, within the server's
    // credit; one reply comes back.
    let average = telemetry.average(futures::stream::iter(readings)).await?;
    println!("client streaming: average = {average:?}");
    assert_eq!(average, Some(22));

    // Bidirectional: items go up and come back concurrently.
    let lines = futures::stream::iter(["ping", "hello", "courier"].map(String::from));
    let shouted: Vec<String> = telemetry.shout(lines).map(Result::unwrap).collect().await;
    println!("bidirectional: {shouted:?}");
    assert_eq!(shouted, ["PING", "HELLO", "COURIER"]);

    // Notifications: fire and forget; a unary call after them on the same
    // connection is handled after them.
    for code in [1, 2, 3] {
        telemetry.event(code).await?;
    }
    // Dropping a stream cancels it: the server drops its producer.
    let mut endless = telemetry.readings(u32::MAX);
    let first = endless.next().await.transpose()?;
    drop(endless);
    println!("cancelled an endless stream after {first:?}");

    // Endings are typed: a stream call to a method the server lacks fails
    // with UnknownMethod instead of hanging.
    let (other, other_driver) = courier_tcp::tokio::connect(addr).await?;
    let other_driver = tokio::spawn(other_driver);
    let unknown: Vec<Result<u32, CallError>> = other
        .server_stream(courier::MethodKey(0xdead), ())
        .collect()
        .await;
    println!("unknown method: {unknown:?}");
    assert!(matches!(unknown.as_slice(), [Err(CallError::Remote(_))]));
    drop(other);
    other_driver.await??;

    // Wait for the notifications to be handled (they have no reply to wait for).
    for _ in 0..100 {
        if station.events.load(Ordering::SeqCst) == 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    println!(
        "notifications: sum of codes = {}",
        station.events.load(Ordering::SeqCst)
    );
    assert_eq!(station.events.load(Ordering::SeqCst), 6);

    drop(telemetry);
    driver.await??;
    server.abort();
    Ok(())
}
