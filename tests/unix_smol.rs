//! courier-unix's async-io backend on smol, in temp dirs.

mod sockets;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use courier::timer::AsyncIoTimer;
use courier_net::ServeBuilder;
use futures::future::{BoxFuture, FutureExt};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use sockets::{Addr, Env};

struct UnixSmol;

impl Env for UnixSmol {
    type Listener = courier_unix::UnixListener;
    type Timer = AsyncIoTimer;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        smol::block_on(f)
    }
    fn spawn_raw(f: BoxFuture<'static, ()>) {
        smol::spawn(f).detach();
    }
    fn sleep(d: Duration) -> BoxFuture<'static, ()> {
        async_io::Timer::after(d).map(drop).boxed()
    }
    fn bind() -> (Self::Listener, Addr) {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let path = dir.path().join("courier.sock");
        // Binding does not wait for anything: block on it where we are.
        let listener =
            futures::executor::block_on(courier_unix::UnixListener::bind(&path)).unwrap();
        (listener, Addr::Unix(path, dir))
    }
    fn bind_at(addr: &Addr) -> Self::Listener {
        let Addr::Unix(path, _) = addr else {
            unreachable!()
        };
        futures::executor::block_on(courier_unix::UnixListener::bind(path)).unwrap()
    }
    fn reconnecting(
        addr: &Addr,
        policy: courier::client::ReconnectPolicy,
    ) -> (courier::Client, BoxFuture<'static, ()>) {
        let Addr::Unix(path, _) = addr.clone() else {
            unreachable!()
        };
        let (client, driver) = courier_unix::connect_reconnecting(path, policy);
        (client, driver.map(drop).boxed())
    }
    fn builder() -> ServeBuilder<AsyncIoTimer> {
        courier_unix::builder()
    }
    fn connect(
        addr: &Addr,
    ) -> BoxFuture<'static, io::Result<(courier::Client, BoxFuture<'static, ()>)>> {
        let Addr::Unix(path, _) = addr.clone() else {
            unreachable!()
        };
        async move {
            let (client, driver) = courier_unix::connect(path)
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
            let mut stream = async_net::unix::UnixStream::connect(path).await?;
            stream.write_all(&bytes).await?;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await
        }
        .boxed()
    }
}

scenarios!(UnixSmol);

/// A socket file left by a crashed server is replaced; a live server's is
/// not; a regular file is never removed.
#[test]
fn stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    // A listener dropped without cleanup (as after a crash) leaves its file.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let bind = |path| smol::block_on(courier_unix::UnixListener::bind(path));
    let live = bind(&path).expect("stale file replaced");
    assert!(matches!(bind(&path), Err(courier_unix::UnixError::InUse)));
    drop(live);
    assert!(!path.exists(), "own socket file removed on drop");

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(matches!(bind(&file), Err(courier_unix::UnixError::Bind(_))));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}
