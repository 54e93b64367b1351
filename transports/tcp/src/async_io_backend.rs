//! The async-io / async-net backend: smol or any executor.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_io::Async;
use async_net::AsyncToSocketAddrs;
use courier::io::FuturesIo;
use courier::timer::AsyncIoTimer;
use std::future::Future;
use std::pin::Pin;

use courier::client::{Connect, ReconnectPolicy, ReconnectingDriver};
use courier::{Client, ClientBuilder, ClientDriver, Service, Timer};
use courier_net::{Listener, Serve, ServeBuilder};

use crate::TcpError;

/// A client-side or accepted connection: an async-net stream as a
/// [`courier::Transport`].
pub type Conn = FuturesIo<async_net::TcpStream>;

/// The client driver of a [`Conn`].
pub type Driver<Tm = AsyncIoTimer> = ClientDriver<Conn, Tm>;

/// Connects to `addr` with `TCP_NODELAY` on.
pub async fn connect_stream<A: AsyncToSocketAddrs>(
    addr: A,
) -> Result<async_net::TcpStream, TcpError> {
    let stream = async_net::TcpStream::connect(addr)
        .await
        .map_err(TcpError::Connect)?;
    stream.set_nodelay(true).map_err(TcpError::Connect)?;
    Ok(stream)
}

/// Connects to `addr`: a client with default settings and an
/// [`AsyncIoTimer`] (so call timeouts are also checked locally), and the
/// driver to poll.
pub async fn connect<A: AsyncToSocketAddrs>(addr: A) -> Result<(Client, Driver), TcpError> {
    connect_with(addr, ClientBuilder::new().timer(AsyncIoTimer::new())).await
}

/// Connects to `addr` with a configured client (frame limit, calls in
/// flight, timer).
pub async fn connect_with<A: AsyncToSocketAddrs, Tm: Timer + Clone + Send + Sync + 'static>(
    addr: A,
    builder: ClientBuilder<Tm>,
) -> Result<(Client, Driver<Tm>), TcpError> {
    let stream = connect_stream(addr).await?;
    Ok(builder.build(FuturesIo::new(stream)))
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
        let listener = async_net::TcpListener::bind(addr)
            .await
            .map_err(TcpError::Bind)?;
        Ok(Self::from(listener))
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
        loop {
            match self.inner.get_ref().accept() {
                Ok((stream, peer)) => {
                    let stream = async_net::TcpStream::try_from(stream)?;
                    // Without it the connection still works, only slower.
                    let _ = stream.set_nodelay(true);
                    return Poll::Ready(Ok((FuturesIo::new(stream), peer)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.inner.poll_readable(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A [`ServeBuilder`] with an [`AsyncIoTimer`], to configure limits and
/// shutdown before [`ServeBuilder::serve`].
pub fn builder() -> ServeBuilder<AsyncIoTimer> {
    ServeBuilder::new(AsyncIoTimer::new())
}

/// Serves `service` on every connection `listener` accepts, with default
/// settings (see [`builder`] for the others).
pub fn serve<S: Service + Clone>(
    listener: TcpListener,
    service: S,
) -> Serve<TcpListener, S, AsyncIoTimer> {
    builder().serve(listener, service)
}

/// Binds `addr` and serves `service` on it with default settings.
pub async fn serve_addr<A: AsyncToSocketAddrs, S: Service + Clone>(
    addr: A,
    service: S,
) -> Result<Serve<TcpListener, S, AsyncIoTimer>, TcpError> {
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

impl<A> Connect for Connector<A>
where
    A: AsyncToSocketAddrs + Clone + Send + 'static,
    A::Iter: Send,
{
    type Transport = Conn;
    type Error = TcpError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, TcpError>> + Send>>;

    fn connect(&mut self) -> Self::Future {
        let addr = self.addr.clone();
        Box::pin(async move { connect_stream(addr).await.map(FuturesIo::new) })
    }
}

/// A client that re-dials `addr` with `policy` whenever its connection is
/// lost, with default settings and an [`AsyncIoTimer`]; nothing is dialed
/// until the driver is polled.
pub fn connect_reconnecting<A>(
    addr: A,
    policy: ReconnectPolicy,
) -> (Client, ReconnectingDriver<Connector<A>, AsyncIoTimer>)
where
    A: AsyncToSocketAddrs + Clone + Send + 'static,
    A::Iter: Send,
{
    ClientBuilder::new()
        .timer(AsyncIoTimer::new())
        .build_reconnecting(Connector::new(addr), policy)
}
