//! courier on an executor that is neither smol nor tokio:
//! `futures::executor::LocalPool`, single-threaded. The TCP sockets use the
//! async-io reactor, which works under any executor; the server and the
//! client driver are just futures spawned on the pool.
//!
//! ```text
//! cargo run --example custom_executor
//! ```

use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;

/// String tools.
#[courier::service]
pub trait Text {
    /// Upper-cases `s`.
    async fn upper(&self, s: String) -> String;
    /// Counts words.
    async fn words(&self, s: String) -> usize;
}

struct Tools;

impl Text for Tools {
    async fn upper(&self, s: String) -> String {
        s.to_uppercase()
    }
    async fn words(&self, s: String) -> usize {
        s.split_whitespace().count()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();

    pool.run_until(async move {
        let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = courier::Shutdown::new();
        // Connections run inside this one future: no spawning needed.
        let server = courier_tcp::builder()
            .shutdown(shutdown.clone())
            .serve(listener, TextServer::new(Tools));
        let server = spawner.spawn_local_with_handle(server)?;

        let (client, driver) = courier_tcp::connect(addr).await?;
        let driver = spawner.spawn_local_with_handle(driver)?;
        let text = TextClient::new(client);

        let line = "courier runs on any executor".to_string();
        let (upper, words) = futures::join!(text.upper(line.clone()), text.words(line));
        println!("upper: {}", upper?);
        println!("words: {}", words?);

        drop(text);
        driver.await?;
        shutdown.trigger();
        server.await;
        println!("done, on a LocalPool");
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
