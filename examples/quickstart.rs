//! The quickstart: a courier server on 127.0.0.1 and a client over TCP,
//! many concurrent calls on one connection, results printed.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::time::Instant;

use futures::stream::{self, StreamExt};

/// A calculator.
#[courier::service]
pub trait Calc {
    /// Adds two numbers.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Divides; dividing by zero is an application error.
    async fn div(&self, a: u64, b: u64) -> Result<u64, String>;
}

struct Calculator;

impl Calc for Calculator {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
    async fn div(&self, a: u64, b: u64) -> Result<u64, String> {
        a.checked_div(b)
            .ok_or_else(|| format!("cannot divide {a} by zero"))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        // Server: bind, then serve every connection inside one future.
        let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = courier::Shutdown::new();
        let server = courier_tcp::builder()
            .shutdown(shutdown.clone())
            .serve(listener, CalcServer::new(Calculator));
        let server = smol::spawn(server);
        println!("server listening on {addr}");

        // Client: connect, run the driver, wrap the client in the typed API.
        let (client, driver) = courier_tcp::connect(addr).await?;
        let driver = smol::spawn(driver);
        let calc = CalcClient::new(client);

        // 10,000 calls, 256 in flight at once on the one connection.
        let started = Instant::now();
        let total: u64 = stream::iter(0..10_000u64)
            .map(|i| {
                let calc = &calc;
                async move { calc.add(i, i).await }
            })
            .buffer_unordered(256)
            .map(|sum| sum.expect("call failed"))
            .fold(0, |acc, sum| async move { acc + sum })
            .await;
        println!(
            "10000 concurrent add calls: sum = {total} in {:?}",
            started.elapsed()
        );
        assert_eq!(total, (0..10_000u64).map(|i| 2 * i).sum::<u64>());

        let (a, b) = futures::join!(calc.add(40, 2), calc.div(84, 2));
        println!("add(40, 2) = {}", a?);
        println!("div(84, 2) = {:?}", b?);
        println!("div(1, 0)  = {:?}", calc.div(1, 0).await?);

        // Close the client, then shut the server down gracefully.
        drop(calc);
        driver.await?;
        shutdown.trigger();
        server.await;
        println!("server shut down");
        Ok(())
    })
}
