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

use ::tokio::net::ToSocketAddrs;
use courier::io::TokioIo;
use courier::timer::TokioTimer;
use std::future::Future;
use std::pin::Pin;

use courier::client::{Connect, ReconnectPolicy, ReconnectingDriver};
use courier::{Client, ClientBuilder, ClientDriver, Service, Timer};
use courier_net::{Listener, Serve, ServeBuilder};

use crate::TcpError;

/// A client-side or accepted connection: a tokio stream as a
/// [`courier::Transport`].
pub type Conn = TokioIo<::tokio::net::TcpStream>;

/// The client driver of a [`Conn`].
pub type Driver<Tm = TokioTimer> = ClientDriver<Conn, Tm>;

/// Connects to `addr` with `TCP_NODELAY` on.
pub async fn connect_stream<A: ToSocketAddrs>(
    addr: A,
) -> Result<::tokio::net::TcpStream, TcpError> {
    let stream = ::tokio::net::TcpStream::connect(addr)
        .await
        .map_err(TcpError::Connect)?;
    stream.set_nodelay(true).map_err(TcpError::Connect)?;
    Ok(stream)
}

/// Connects to `addr`: a client with default settings and a [`TokioTimer`]
/// (so call timeouts are also checked locally), and the driver to poll.
pub async fn connect<A: ToSocketAddrs>(addr: A) -> Result<(Client, Driver), TcpError> {
    connect_with(addr, ClientBuilder::new().timer(TokioTimer::new())).await
}

/// Connects to `addr` with a configured client (frame limit, calls in
/// flight, timer).
pub async fn connect_with<A: ToSocketAddrs, Tm: Timer + Clone + Send + Sync + 'static>(
    addr: A,
    builder: ClientBuilder<Tm>,
) -> Result<(Client, Driver<Tm>), TcpError> {
    let stream = connect_stream(addr).await?;
    Ok(builder.build(TokioIo::new(stream)))
}

/// A tokio TCP listener for [`serve`]; accepted connections get
/// `TCP_NODELAY`.
#[derive(Debug)]
pub struct TcpListener(::tokio::net::TcpListener);

impl TcpListener {
    /// Binds `addr` (port 0 picks a free port; see
    /// [`local_addr`](TcpListener::local_addr)).
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> Result<Self, TcpError> {
        let listener = ::tokio::net::TcpListener::bind(addr)
            .await
            .map_err(TcpError::Bind)?;
        Ok(TcpListener(listener))
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
            // Without it the connection still works, only slower.
            let _ = stream.set_nodelay(true);
            (TokioIo::new(stream), peer)
        })
    }
}

/// A [`ServeBuilder`] with a [`TokioTimer`], to configure limits and
/// shutdown before [`ServeBuilder::serve`].
pub fn builder() -> ServeBuilder<TokioTimer> {
    ServeBuilder::new(TokioTimer::new())
}

/// Serves `service` on every connection `listener` accepts, with default
/// settings (see [`builder`] for the others).
pub fn serve<S: Service + Clone>(
    listener: TcpListener,
    service: S,
) -> Serve<TcpListener, S, TokioTimer> {
    builder().serve(listener, service)
}

/// Binds `addr` and serves `service` on it with default settings.
pub async fn serve_addr<A: ToSocketAddrs, S: Service + Clone>(
    addr: A,
    service: S,
) -> Result<Serve<TcpListener, S, TokioTimer>, TcpError> {
    Ok(serve(TcpListener::bind(addr).await?, service))
}

/// Dials an address for a reconnecting client
/// ([`ClientBuilder::build_reconnecting`]): each attempt resolves the
/// address again and connects with `TCP_NODELAY` on.
#[derive(Clone, Debug)]
pub struct Connector<A> {
    addr: A,
}

impl<A> Connector<A> {
    /// A connector for `addr`.
    pub fn new(addr: A) -> Self {
        Connector { addr }
    }
}

impl<A: ToSocketAddrs + Clone + Send + 'static> Connect for Connector<A> {
    type Transport = Conn;
    type Error = TcpError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, TcpError>> + Send>>;

    fn connect(&mut self) -> Self::Future {
        let addr = self.addr.clone();
        Box::pin(async move { connect_stream(addr).await.map(TokioIo::new) })
    }
}

/// A client that re-dials `addr` with `policy` whenever its connection is
/// lost, with default settings and a [`TokioTimer`]; nothing is dialed
/// until the driver is polled.
pub fn connect_reconnecting<A: ToSocketAddrs + Clone + Send + 'static>(
    addr: A,
    policy: ReconnectPolicy,
) -> (Client, ReconnectingDriver<Connector<A>, TokioTimer>) {
    ClientBuilder::new()
        .timer(TokioTimer::new())
        .build_reconnecting(Connector::new(addr), policy)
}
