//! courier-tcp's tokio backend (tokio's own sockets) on a multi-threaded
//! tokio runtime, over 127.0.0.1.

mod sockets;

use std::io;
use std::time::Duration;

use courier::timer::TokioTimer;
use courier_net::ServeBuilder;
use futures::future::{BoxFuture, FutureExt};
use sockets::{Addr, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct TcpTokio;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
}

impl Env for TcpTokio {
    type Listener = courier_tcp::tokio::TcpListener;
    type Timer = TokioTimer;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        RUNTIME.with(|rt| rt.block_on(f))
    }
    fn spawn_raw(f: BoxFuture<'static, ()>) {
        tokio::spawn(f);
    }
    fn sleep(d: Duration) -> BoxFuture<'static, ()> {
        tokio::time::sleep(d).boxed()
    }
    fn bind() -> (Self::Listener, Addr) {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std.set_nonblocking(true).unwrap();
        let listener =
            courier_tcp::tokio::TcpListener::from(tokio::net::TcpListener::from_std(std).unwrap());
        let addr = listener.local_addr().unwrap();
        (listener, Addr::Tcp(addr))
    }
    fn bind_at(addr: &Addr) -> Self::Listener {
        let Addr::Tcp(addr) = addr else {
            unreachable!()
        };
        let std = std::net::TcpListener::bind(addr).unwrap();
        std.set_nonblocking(true).unwrap();
        courier_tcp::tokio::TcpListener::from(tokio::net::TcpListener::from_std(std).unwrap())
    }
    fn reconnecting(
        addr: &Addr,
        policy: courier::client::ReconnectPolicy,
    ) -> (courier::Client, BoxFuture<'static, ()>) {
        let Addr::Tcp(addr) = addr.clone() else {
            unreachable!()
        };
        let (client, driver) = courier_tcp::tokio::connect_reconnecting(addr, policy);
        (client, driver.map(drop).boxed())
    }
    fn builder() -> ServeBuilder<TokioTimer> {
        courier_tcp::tokio::builder().single_task()
    }
    fn connect(
        addr: &Addr,
    ) -> BoxFuture<'static, io::Result<(courier::Client, BoxFuture<'static, ()>)>> {
        let Addr::Tcp(addr) = addr.clone() else {
            unreachable!()
        };
        async move {
            let (client, driver) = courier_tcp::tokio::connect(addr)
                .await
                .map_err(io::Error::other)?;
            Ok((client, driver.map(drop).boxed()))
        }
        .boxed()
    }
    fn raw(addr: &Addr, bytes: Vec<u8>) -> BoxFuture<'static, io::Result<usize>> {
        let Addr::Tcp(addr) = addr.clone() else {
            unreachable!()
        };
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(&bytes).await?;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await
        }
        .boxed()
    }
}

scenarios!(TcpTokio);

/// A rendezvous of two calls: each blocks its thread until the other has
/// arrived, so both return `true` only if they ran at the same time.
#[courier::service]
pub trait Meet {
    /// Waits (blocking the thread, up to a minute) for the other call.
    async fn meet(&self) -> bool;
}

#[derive(Clone, Default)]
struct Rendezvous(std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>);

impl Meet for Rendezvous {
    async fn meet(&self) -> bool {
        // `block_in_place` hands this worker's queued tasks to another
        // thread while it blocks: a plain blocking wait could strand the
        // other connection's task in this worker's LIFO slot (which no
        // other worker steals), and the test would fail under load for a
        // reason that is tokio's, not the server's. A server running every
        // connection in one task still fails it (checked by hand with
        // `.single_task()`): the wait blocks that task.
        tokio::task::block_in_place(|| {
            let (arrived, cond) = &*self.0;
            let mut arrived = arrived.lock().unwrap();
            *arrived += 1;
            cond.notify_all();
            // Only a broken server hits this bound: run in one task, the
            // second call cannot start while the first blocks.
            let (arrived, _) = cond
                .wait_timeout_while(arrived, Duration::from_secs(60), |n| *n < 2)
                .unwrap();
            *arrived >= 2
        })
    }
}

/// On a multi-thread runtime `serve` runs connections as tasks of their
/// own: two connections' handlers run at the same time on two workers
/// (inside one future, the first call would block the second).
#[test]
fn default_serve_runs_connections_in_parallel_on_multi_thread_runtime() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = server_rt
        .block_on(courier_tcp::tokio::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    {
        // Inside the runtime, as `serve` needs to find its spawner.
        let _enter = server_rt.enter();
        let serve = courier_tcp::tokio::serve(listener, MeetServer::new(Rendezvous::default()));
        server_rt.spawn(serve);
    }

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let met = client_rt.block_on(async {
        let mut calls = Vec::new();
        for _ in 0..2 {
            let (client, driver) = courier_tcp::tokio::connect(addr).await.unwrap();
            tokio::spawn(driver);
            let client = MeetClient::new(client);
            calls.push(tokio::spawn(async move { client.meet().await }));
        }
        let mut met = Vec::new();
        for call in calls {
            met.push(call.await.unwrap());
        }
        met
    });
    assert_eq!(met, [Ok(true), Ok(true)]);
}

/// `builder()` spawns connections only where that spreads them: on a
/// multi-thread runtime, not on a current-thread one or outside a runtime.
#[test]
fn builder_spawns_only_on_multi_thread_runtimes() {
    let spawns = || courier_net::tokio::runtime_spawner().spawns();
    assert!(!spawns(), "outside a runtime");
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(
        !current.block_on(async { spawns() }),
        "current-thread runtime"
    );
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    assert!(multi.block_on(async { spawns() }), "multi-thread runtime");
}
