//! courier-unix's tokio backend (tokio's own sockets) on a multi-threaded
//! tokio runtime, in temp dirs.

mod sockets;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use courier::timer::TokioTimer;
use courier_net::ServeBuilder;
use futures::future::{BoxFuture, FutureExt};
use sockets::{Addr, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct UnixTokio;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
}

impl Env for UnixTokio {
    type Listener = courier_unix::tokio::UnixListener;
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
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let path = dir.path().join("courier.sock");
        // Binding does not wait for anything: block on it where we are.
        let listener =
            futures::executor::block_on(courier_unix::tokio::UnixListener::bind(&path)).unwrap();
        (listener, Addr::Unix(path, dir))
    }
    fn bind_at(addr: &Addr) -> Self::Listener {
        let Addr::Unix(path, _) = addr else {
            unreachable!()
        };
        futures::executor::block_on(courier_unix::tokio::UnixListener::bind(path)).unwrap()
    }
    fn reconnecting(
        addr: &Addr,
        policy: courier::client::ReconnectPolicy,
    ) -> (courier::Client, BoxFuture<'static, ()>) {
        let Addr::Unix(path, _) = addr.clone() else {
            unreachable!()
        };
        let (client, driver) = courier_unix::tokio::connect_reconnecting(path, policy);
        (client, driver.map(drop).boxed())
    }
    fn builder() -> ServeBuilder<TokioTimer> {
        courier_unix::tokio::builder().single_task()
    }
    fn connect(
        addr: &Addr,
    ) -> BoxFuture<'static, io::Result<(courier::Client, BoxFuture<'static, ()>)>> {
        let Addr::Unix(path, _) = addr.clone() else {
            unreachable!()
        };
        async move {
            let (client, driver) = courier_unix::tokio::connect(path)
                .await
                .map_err(io::Error::other)?;
            Ok((client, driver.map(drop).boxed()))
        }
        .boxed()
    }
    fn raw(addr: &Addr, bytes: Vec<u8>) -> BoxFuture<'static, io::Result<usize>> {
        let Addr::Unix(path, _) = addr.clone() else {
            unreachable!()
        };
        async move {
            let mut stream = tokio::net::UnixStream::connect(path).await?;
            stream.write_all(&bytes).await?;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await
        }
        .boxed()
    }
}

scenarios!(UnixTokio);
