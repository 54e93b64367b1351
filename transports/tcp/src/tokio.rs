//! The tokio backend: tokio's own `TcpStream` / `TcpListener`, read and
//! written natively through [`courier::io::TokioIo`]. Same API as the crate
//! root; call it from inside a tokio runtime (with `net` and `time`
//! enabled).
//!
//! ```no_run
//! # async fn run(service: impl courier::Service + Clone + Send + 'static) -> Result<(), courier_tcp::TcpError> {
//! let listener = courier_tcp::tokio::TcpListener::bind("127.0.0.1:7000").await?;
//! tokio::spawn(courier_tcp::tokio::serve(listener, service.clone()));
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use ::tokio::net::{TcpStream, ToSocketAddrs};
use courier::io::TokioIo;
use courier::timer::TokioTimer;
use courier_net::{Dial, Listener};

use crate::TcpError;

/// Dials TCP addresses with tokio, with `TCP_NODELAY` on.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct TcpDialer;

impl<A: ToSocketAddrs + Send> Dial<A> for TcpDialer {
    type Conn = Conn;
    type Error = TcpError;

    async fn dial(&self, addr: A) -> Result<Conn, TcpError> {
        let stream = TcpStream::connect(addr).await;
        crate::nodelay(stream, TcpStream::set_nodelay).map(TokioIo::new)
    }
}

/// A tokio TCP listener for [`serve`]; accepted connections get
/// `TCP_NODELAY`.
#[derive(Debug)]
pub struct TcpListener(::tokio::net::TcpListener);

impl TcpListener {
    /// Binds `addr` (port 0 picks a free port; see
    /// [`local_addr`](TcpListener::local_addr)).
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> Result<Self, TcpError> {
        let listener = ::tokio::net::TcpListener::bind(addr).await;
        Ok(TcpListener(listener.map_err(TcpError::Bind)?))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl From<::tokio::net::TcpListener> for TcpListener {
    fn from(listener: ::tokio::net::TcpListener) -> Self {
        TcpListener(listener)
    }
}

impl Listener for TcpListener {
    type Conn = Conn;
    type Peer = SocketAddr;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Conn, SocketAddr)>> {
        self.0.poll_accept(cx).map_ok(|(stream, peer)| {
            let stream = crate::accepted(stream, TcpStream::set_nodelay);
            (TokioIo::new(stream), peer)
        })
    }
}

courier_net::transport_api! {
    dialer: TcpDialer,
    listener: TcpListener,
    conn: TokioIo<TcpStream>,
    stream: TcpStream,
    error: TcpError,
    timer: TokioTimer,
    addr: ToSocketAddrs,
    spawner: courier_net::tokio::runtime_spawner,
}
