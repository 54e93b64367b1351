//! The async-io / async-net backend: smol or any executor.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_io::Async;
use async_net::{AsyncToSocketAddrs, TcpStream};
use courier::timer::AsyncIoTimer;
use courier_net::async_io::AsyncIoStream;
use courier_net::{Dial, Listener};

use crate::TcpError;

/// Dials TCP addresses with `TCP_NODELAY` on (courier already coalesces
/// ready frames into one write, so Nagle's algorithm would only add
/// latency).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct TcpDialer;

impl<A> Dial<A> for TcpDialer
where
    A: AsyncToSocketAddrs + Send,
    A::Iter: Send,
{
    type Conn = Conn;
    type Error = TcpError;

    async fn dial(&self, addr: A) -> Result<Conn, TcpError> {
        let stream = TcpStream::connect(addr).await;
        crate::nodelay(stream, TcpStream::set_nodelay).map(AsyncIoStream::new)
    }
}

/// A TCP listener for [`serve`]; accepted connections get `TCP_NODELAY`.
#[derive(Debug)]
pub struct TcpListener {
    inner: Arc<Async<std::net::TcpListener>>,
}

impl TcpListener {
    /// Binds `addr` (port 0 picks a free port; see
    /// [`local_addr`](TcpListener::local_addr)).
    pub async fn bind<A: AsyncToSocketAddrs>(addr: A) -> Result<Self, TcpError> {
        let listener = async_net::TcpListener::bind(addr).await;
        Ok(Self::from(listener.map_err(TcpError::Bind)?))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }
}

impl From<async_net::TcpListener> for TcpListener {
    fn from(listener: async_net::TcpListener) -> Self {
        TcpListener {
            inner: listener.into(),
        }
    }
}

impl Listener for TcpListener {
    type Conn = Conn;
    type Peer = SocketAddr;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Conn, SocketAddr)>> {
        courier_net::async_io::poll_accept(&self.inner, cx, |listener| {
            let (stream, peer) = listener.accept()?;
            let stream = crate::accepted(TcpStream::try_from(stream)?, TcpStream::set_nodelay);
            Ok((AsyncIoStream::new(stream), peer))
        })
    }
}

courier_net::transport_api! {
    dialer: TcpDialer,
    listener: TcpListener,
    conn: AsyncIoStream<TcpStream, std::net::TcpStream>,
    stream: TcpStream,
    error: TcpError,
    timer: AsyncIoTimer,
    addr: AsyncToSocketAddrs,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    use courier::Transport;
    use futures::AsyncWriteExt;

    use super::*;

    /// Counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `conn` until it is ready, letting the reactor run in between.
    fn read(conn: &mut Conn, buf: &mut [u8]) -> usize {
        smol::block_on(std::future::poll_fn(|cx| conn.poll_read(cx, buf))).unwrap()
    }

    /// After a short read (the socket drained) the next read waits for
    /// readiness instead of reading: it is `Pending`, and bytes that arrive
    /// later wake it and are read; a read that fills the buffer reads
    /// again at once; the end of the stream is still seen.
    #[test]
    fn reads_after_a_drained_socket_wait_and_miss_nothing() {
        smol::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut peer = TcpStream::connect(addr).await.unwrap();
            let mut listener = listener;
            let (mut conn, _) = std::future::poll_fn(|cx| listener.poll_accept(cx))
                .await
                .unwrap();

            peer.write_all(&[1; 5]).await.unwrap();
            let mut buf = [0; 64];
            assert_eq!(read(&mut conn, &mut buf), 5);
            // Drained: waiting now, with the waker registered.
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = Waker::from(count.clone());
            let mut cx = Context::from_waker(&waker);
            assert!(conn.poll_read(&mut cx, &mut buf).is_pending());
            peer.write_all(&[2; 100]).await.unwrap();
            // The reactor wakes the registered waker.
            while count.0.load(Ordering::SeqCst) == 0 {
                smol::future::yield_now().await;
                async_io::Timer::after(std::time::Duration::from_millis(1)).await;
            }
            // A full buffer: the rest is read next, without waiting.
            assert_eq!(read(&mut conn, &mut buf), 64);
            assert_eq!(read(&mut conn, &mut buf), 36);
            assert_eq!(buf[..36], [2; 36]);
            drop(peer);
            assert_eq!(read(&mut conn, &mut buf), 0, "end of stream");
        });
    }
}
