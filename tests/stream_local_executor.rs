//! The streaming scenarios over TCP (async-io reactor) under a custom,
//! single-threaded executor — `futures::executor::LocalPool`, as in
//! examples/custom_executor.rs: the server, its connections and the client
//! driver are plain futures spawned on the pool.

mod sockets;

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use courier::timer::AsyncIoTimer;
use courier_net::ServeBuilder;
use futures::executor::{LocalPool, LocalSpawner};
use futures::future::{BoxFuture, FutureExt};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::task::LocalSpawnExt;
use sockets::{Addr, Env};

thread_local! {
    static POOL: RefCell<LocalPool> = RefCell::new(LocalPool::new());
    static SPAWNER: LocalSpawner = POOL.with(|pool| pool.borrow().spawner());
}

struct TcpLocal;

impl Env for TcpLocal {
    type Listener = courier_tcp::TcpListener;
    type Timer = AsyncIoTimer;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The spawner first: it borrows the pool, which runs below.
        SPAWNER.with(|_| ());
        POOL.with(|pool| pool.borrow_mut().run_until(f))
    }
    fn spawn_raw(f: BoxFuture<'static, ()>) {
        SPAWNER
            .with(|spawner| spawner.spawn_local(f))
            .expect("spawn on the local pool");
    }
    fn sleep(d: Duration) -> BoxFuture<'static, ()> {
        async_io::Timer::after(d).map(drop).boxed()
    }
    fn bind() -> (Self::Listener, Addr) {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listener =
            courier_tcp::TcpListener::from(async_net::TcpListener::try_from(std).unwrap());
        let addr = listener.local_addr().unwrap();
        (listener, Addr::Tcp(addr))
    }
    fn bind_at(addr: &Addr) -> Self::Listener {
        let Addr::Tcp(addr) = addr else {
            unreachable!()
        };
        let std = std::net::TcpListener::bind(addr).unwrap();
        courier_tcp::TcpListener::from(async_net::TcpListener::try_from(std).unwrap())
    }
    fn reconnecting(
        addr: &Addr,
        policy: courier::client::ReconnectPolicy,
    ) -> (courier::Client, BoxFuture<'static, ()>) {
        let Addr::Tcp(addr) = addr.clone() else {
            unreachable!()
        };
        let (client, driver) = courier_tcp::connect_reconnecting(addr, policy);
        (client, driver.map(drop).boxed())
    }
    fn builder() -> ServeBuilder<AsyncIoTimer> {
        courier_tcp::builder()
    }
    fn connect(
        addr: &Addr,
    ) -> BoxFuture<'static, io::Result<(courier::Client, BoxFuture<'static, ()>)>> {
        let Addr::Tcp(addr) = addr.clone() else {
            unreachable!()
        };
        async move {
            let (client, driver) = courier_tcp::connect(addr).await.map_err(io::Error::other)?;
            Ok((client, driver.map(drop).boxed()))
        }
        .boxed()
    }
    fn raw(addr: &Addr, bytes: Vec<u8>) -> BoxFuture<'static, io::Result<usize>> {
        let Addr::Tcp(addr) = addr.clone() else {
            unreachable!()
        };
        async move {
            let mut stream = async_net::TcpStream::connect(addr).await?;
            stream.write_all(&bytes).await?;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await
        }
        .boxed()
    }
}

#[test]
fn streaming_modes() {
    sockets::streaming_modes::<TcpLocal>();
}

#[test]
fn big_items_do_not_starve() {
    sockets::big_items_do_not_starve::<TcpLocal>();
}

#[test]
fn many_calls() {
    sockets::many_calls::<TcpLocal>(false);
}
