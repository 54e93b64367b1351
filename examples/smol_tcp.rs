//! courier over TCP on smol, with each connection spawned on smol's
//! executor (multi-core) and several clients at once.
//!
//! ```text
//! cargo run --example smol_tcp
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A key-value-ish greeting service.
#[courier::service]
pub trait Greeter {
    /// Greets `name`.
    async fn greet(&self, name: String) -> String;
}

struct Polite;

impl Greeter for Polite {
    async fn greet(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

/// Spawns on smol's global executor.
fn smol_spawner(task: Pin<Box<dyn Future<Output = ()> + Send>>) {
    smol::spawn(task).detach();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = courier::Shutdown::new();
        let server = courier_tcp::builder()
            .max_connections(64)
            .max_frame(64 * 1024)
            .shutdown(shutdown.clone())
            .grace_period(Duration::from_secs(2))
            .serve_spawned(listener, GreeterServer::new(Polite), smol_spawner);
        let stats = server.stats();
        let server = smol::spawn(server);

        // Four clients, each on its own connection and task.
        let clients: Vec<_> = (0..4)
            .map(|i| {
                smol::spawn(async move {
                    let (client, driver) = courier_tcp::connect(addr).await?;
                    let driver = smol::spawn(driver);
                    let greeter = GreeterClient::new(client);
                    let reply = greeter
                        .with_timeout(Duration::from_secs(5))
                        .greet(format!("client {i}"))
                        .await?;
                    drop(greeter);
                    driver.await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(reply)
                })
            })
            .collect();
        for client in clients {
            println!("{}", client.await.map_err(|e| e.to_string())?);
        }
        println!("open connections now: {}", stats.connections());

        shutdown.trigger();
        server.await;
        println!("server shut down");
        Ok(())
    })
}
