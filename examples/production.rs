//! A production-shaped setup on tokio: a key-value server with shared state
//! and graceful shutdown on Ctrl-C, and a reconnecting client that retries
//! calls only when the error says the request never ran. Connection
//! events are printed through `tracing` (feature `tracing`).
//!
//! ```text
//! cargo run --example production                  # both in one process: a demo that
//!                                                 # kills and restarts the server, then exits 0
//! cargo run --example production -- --server 127.0.0.1:7000   # serve until Ctrl-C
//! cargo run --example production -- --client 127.0.0.1:7000   # a client run against it
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::client::{ConnectionState, Outage, ReconnectPolicy};
use courier::{CallError, Shutdown};

/// A string key-value store.
#[courier::service]
pub trait Kv {
    /// The value of `key`, if any.
    #[idempotent]
    async fn get(&self, key: String) -> Option<String>;
    /// Sets `key` to `value` and returns the previous value. Setting the
    /// same value twice leaves the same state: idempotent.
    #[idempotent]
    async fn put(&self, key: String, value: String) -> Option<String>;
    /// Waits `ms` milliseconds (a call that is in flight for a while).
    async fn slow(&self, ms: u64);
}

/// The state every connection shares. `Clone` shares it: the server clones
/// the service for each connection.
#[derive(Clone, Default)]
struct Store {
    map: Arc<Mutex<HashMap<String, String>>>,
    slow_calls: Arc<AtomicUsize>,
}

impl Kv for Store {
    async fn get(&self, key: String) -> Option<String> {
        self.map.lock().unwrap().get(&key).cloned()
    }
    async fn put(&self, key: String, value: String) -> Option<String> {
        self.map.lock().unwrap().insert(key, value)
    }
    async fn slow(&self, ms: u64) {
        self.slow_calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Serves `store` on `listener` until `shutdown` is triggered; then new
/// calls are refused with `ShuttingDown`, calls in flight get up to 5 s to
/// finish, and the future completes.
async fn serve(listener: courier_tcp::tokio::TcpListener, store: Store, shutdown: Shutdown) {
    courier_tcp::tokio::builder()
        .shutdown(shutdown)
        .grace_period(Duration::from_secs(5))
        // One task per connection, so connections spread over the
        // runtime's threads (see courier_net's docs for what each mode
        // costs).
        .serve_spawned(listener, KvServer::new(store), |task| {
            tokio::spawn(task);
        })
        .await;
}

/// The most attempts of one call.
const ATTEMPTS: u32 = 20;

/// Runs `call` until it succeeds, fails with an error after which the
/// request may have run, or `ATTEMPTS` attempts failed.
///
/// `is_retryable()` is true only when the request certainly never ran on a
/// server: it was never sent (no connection, the dial failed — e.g.
/// refused while the server restarts) or the server rejected it before
/// starting it (`Overloaded`). That makes the retry safe for any call. A
/// call in flight when the connection is lost fails with
/// `CallError::ConnectionLost` — even under `Outage::Wait`, which only
/// holds requests that never left the process: the client sends a request
/// at most once, and never re-sends one by itself. Whether to retry after
/// `ConnectionLost` is the application's choice, sound only for idempotent
/// calls such as `get` and `put` here.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut backoff = Duration::from_millis(20);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                println!("  {what}: {e} — never ran, retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// A reconnecting client for `addr` and a task printing its connection
/// state changes.
fn client(addr: SocketAddr) -> KvClient {
    let policy = ReconnectPolicy::new()
        .backoff(Duration::from_millis(20), Duration::from_millis(500))
        // Calls made while disconnected wait up to 200 ms for the next
        // connection, then fail as never sent (and `retry` retries them).
        .outage(Outage::Wait {
            max_wait: Duration::from_millis(200),
        });
    let (client, driver) = courier_tcp::tokio::connect_reconnecting(addr, policy);
    let mut watch = client.watch_connection();
    tokio::spawn(async move {
        loop {
            match watch.changed().await {
                ConnectionState::Closed => break println!("  [connection] closed"),
                state => println!("  [connection] {state:?}"),
            }
        }
    });
    tokio::spawn(driver);
    KvClient::new(client)
}

/// Some idempotent calls, retried while they certainly did not run.
async fn workload(kv: &KvClient, round: u32) -> Result<(), CallError> {
    for i in 0..3 {
        let (key, value) = (format!("key{i}"), format!("round{round}-{i}"));
        retry("put", || kv.put(key.clone(), value.clone())).await?;
    }
    let got = retry("get", || kv.get("key1".into())).await?;
    println!("  get(key1) = {got:?}");
    assert_eq!(got.as_deref(), Some(&*format!("round{round}-1")));
    Ok(())
}

/// Serves on `addr` until Ctrl-C, then shuts down gracefully.
async fn server_mode(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let listener = courier_tcp::tokio::TcpListener::bind(addr).await?;
    println!("serving on {}; Ctrl-C stops", listener.local_addr()?);
    let shutdown = Shutdown::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            println!("Ctrl-C: shutting down (calls in flight finish)");
            signal.trigger();
        }
    });
    serve(listener, Store::default(), shutdown).await;
    println!("server stopped");
    Ok(())
}

/// One client run against a server at `addr`.
async fn client_mode(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let kv = client(addr);
    workload(&kv, 1).await?;
    println!("client done");
    Ok(())
}

/// Server and client in one process: calls, a server crash with a call in
/// flight, a restart on the same address, calls again.
async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::default();
    let listener = courier_tcp::tokio::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("server on {addr}");
    let first = tokio::spawn(serve(listener, store.clone(), Shutdown::new()));

    let kv = client(addr);
    println!("round 1");
    workload(&kv, 1).await?;

    // A call in flight when the server dies fails, and is not re-sent.
    let in_flight = tokio::spawn({
        let kv = kv.clone();
        async move { kv.slow(60_000).await }
    });
    while store.slow_calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("killing the server with a call in flight");
    first.abort(); // dropping the serve future closes every connection
    let lost = in_flight.await?;
    println!("  the call in flight: {lost:?}");
    assert_eq!(lost, Err(CallError::ConnectionLost));
    assert!(!lost.unwrap_err().is_retryable(), "it may have run");

    // While the server is down, calls fail as never sent (`Connect` with
    // the refused dial) and `retry` retries them; the server comes back
    // meanwhile, on the same address, with the same state.
    let restart = tokio::spawn({
        let store = store.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            println!("restarting the server");
            let listener = courier_tcp::tokio::TcpListener::bind(addr).await?;
            let shutdown = Shutdown::new();
            let server = tokio::spawn(serve(listener, store, shutdown.clone()));
            Ok::<_, courier_tcp::TcpError>((server, shutdown))
        }
    });
    println!("round 2 (server down, then back)");
    workload(&kv, 2).await?;
    assert_eq!(kv.client().connection(), ConnectionState::Connected);
    let (second, shutdown) = restart.await??;

    drop(kv);
    shutdown.trigger();
    second.await?;
    println!("server shut down; done");
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // courier's connection events (connected, disconnected, reconnecting;
    // courier_net's accepted and closed) at `info`; `debug` adds a span
    // per call on each side with its times.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_target(true)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => demo().await,
        ["--server"] => server_mode("127.0.0.1:7000").await,
        ["--server", addr] => server_mode(addr).await,
        ["--client", addr] => client_mode(addr.parse()?).await,
        _ => Err("usage: production [--server [ADDR] | --client ADDR]".into()),
    }
}
