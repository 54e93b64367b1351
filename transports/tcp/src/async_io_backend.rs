//! The async-io / async-net backend: smol or any executor.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_io::Async;
use async_net::{AsyncToSocketAddrs, TcpStream};
use courier::io::FuturesIo;
use courier::timer::AsyncIoTimer;
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
        crate::nodelay(stream, TcpStream::set_nodelay).map(FuturesIo::new)
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
            Ok((FuturesIo::new(stream), peer))
        })
    }
}

courier_net::transport_api! {
    dialer: TcpDialer,
    listener: TcpListener,
    conn: FuturesIo<TcpStream>,
    stream: TcpStream,
    error: TcpError,
    timer: AsyncIoTimer,
    addr: AsyncToSocketAddrs,
}
