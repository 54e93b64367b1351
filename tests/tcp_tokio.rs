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
        courier_tcp::tokio::builder()
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
