//! courier over TCP on tokio, with tokio's own sockets (no compatibility
//! layer): `courier_tcp::tokio`.
//!
//! ```text
//! cargo run --example tokio_tcp
//! ```

use std::time::Duration;

use courier::CallError;

/// A counter shared by all clients.
#[courier::service]
pub trait Counter {
    /// Adds `n`, returns the new total.
    async fn bump(&self, n: u64) -> u64;
    /// Sleeps, to show call timeouts.
    async fn nap(&self, ms: u64);
}

#[derive(Default)]
struct Total(std::sync::atomic::AtomicU64);

impl Counter for Total {
    async fn bump(&self, n: u64) -> u64 {
        self.0.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n
    }
    async fn nap(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = courier_tcp::tokio::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = courier::Shutdown::new();
    let server = courier_tcp::tokio::builder()
        .shutdown(shutdown.clone())
        .serve_spawned(listener, CounterServer::new(Total::default()), |task| {
            tokio::spawn(task);
        });
    let server = tokio::spawn(server);

    let (client, driver) = courier_tcp::tokio::connect(addr).await?;
    let driver = tokio::spawn(driver);
    let counter = CounterClient::new(client);

    let bumps = (1..=100).map(|n| counter.bump(n));
    let totals = futures::future::try_join_all(bumps).await?;
    println!(
        "100 concurrent bumps, final total = {}",
        totals.iter().max().unwrap()
    );

    // A timeout is checked locally by the client's TokioTimer and sent to
    // the server, which drops the handler.
    let late = counter
        .with_timeout(Duration::from_millis(20))
        .nap(5_000)
        .await;
    assert_eq!(late, Err(CallError::DeadlineExceeded));
    println!("nap(5000) with a 20 ms timeout: {}", late.unwrap_err());

    drop(counter);
    driver.await??;
    shutdown.trigger();
    server.await?;
    println!("server shut down");
    Ok(())
}
