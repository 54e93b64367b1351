//! courier over a Unix domain socket (smol): the server removes a stale
//! socket file on bind and its own file on shutdown.
//!
//! ```text
//! cargo run --example unix_socket
//! ```

/// File-system-ish info.
#[courier::service]
pub trait Info {
    /// The server's process id.
    async fn pid(&self) -> u32;
    /// Echoes bytes back.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
}

struct Server;

impl Info for Server {
    async fn pid(&self) -> u32 {
        std::process::id()
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("info.sock");
    // A stale file, as a crashed server would leave behind.
    drop(std::os::unix::net::UnixListener::bind(&path)?);

    smol::block_on(async {
        let listener = courier_unix::UnixListener::bind(&path).await?;
        println!("listening on {} (stale file replaced)", path.display());
        let shutdown = courier::Shutdown::new();
        let server = courier_unix::builder()
            .shutdown(shutdown.clone())
            .serve(listener, InfoServer::new(Server));
        let server = smol::spawn(server);

        let (client, driver) = courier_unix::connect(&path).await?;
        let driver = smol::spawn(driver);
        let info = InfoClient::new(client);
        println!("server pid: {}", info.pid().await?);
        let echoed = info.echo(vec![7; 100_000]).await?;
        println!("echoed {} bytes", echoed.len());

        drop(info);
        driver.await?;
        shutdown.trigger();
        server.await;
        println!("shut down; socket file removed: {}", !path.exists());
        assert!(!path.exists());
        Ok(())
    })
}
