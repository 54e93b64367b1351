//! The client half of a stream transport: dialing an address.

use std::future::Future;
use std::pin::Pin;

use courier::client::Connect;
use courier::{Client, ClientBuilder, ClientDriver, Timer, Transport, TransportError};

/// Connects to addresses of type `A`: the client half of a stream transport,
/// as [`Listener`](crate::Listener) is the server half.
///
/// A dialer is a small value that says *how* to connect (socket options,
/// credentials); the address says *where*. `courier-tcp`'s `TcpDialer`
/// turns `TCP_NODELAY` on, `courier-unix`'s `UnixDialer` connects to a
/// socket path. One type may dial several address types (`A` is a
/// parameter, so a TCP dialer takes a `SocketAddr`, a `&str` or a
/// `(host, port)`).
///
/// # Contract
///
/// - [`dial`](Dial::dial) makes one attempt and returns a connected
///   [`Transport`] (a socket stream adapted with `FuturesIo` or `TokioIo`
///   from [`courier::io`]), with every option it promises already applied; it does not retry — [`Connector`] and
///   [`courier::client::ReconnectingDriver`] do that.
/// - Its future must be `Send`, so that reconnecting drivers can run on
///   multi-threaded executors (every socket runtime's futures are).
/// - A failure is `Self::Error`, a [`TransportError`] whose kind callers
///   of a reconnecting client see.
pub trait Dial<A> {
    /// A connection.
    type Conn: Transport;
    /// Why an attempt failed.
    type Error: TransportError;

    /// Connects to `addr` (one attempt).
    fn dial(&self, addr: A) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;
}

/// Dials `addr` and builds a client over the connection: the client handle
/// and the driver to poll (see [`ClientBuilder::build`]).
pub async fn connect_with<D, A, Tm>(
    dialer: D,
    addr: A,
    builder: ClientBuilder<Tm>,
) -> Result<(Client, ClientDriver<D::Conn, Tm>), D::Error>
where
    D: Dial<A>,
    Tm: Timer + Clone + Send + Sync + 'static,
{
    let conn = dialer.dial(addr).await?;
    Ok(builder.build(conn))
}

/// Dials one address again on every attempt of a reconnecting client
/// ([`ClientBuilder::build_reconnecting`]); each attempt is a fresh
/// [`Dial::dial`] (a host name is resolved again).
#[derive(Clone, Debug)]
pub struct Connector<D, A> {
    dialer: D,
    addr: A,
}

impl<D: Default, A> Connector<D, A> {
    /// A connector for `addr` with the default dialer.
    pub fn new(addr: A) -> Self {
        Connector::with_dialer(D::default(), addr)
    }
}

impl<D, A> Connector<D, A> {
    /// A connector for `addr` through `dialer`.
    pub fn with_dialer(dialer: D, addr: A) -> Self {
        Connector { dialer, addr }
    }

    /// The address every attempt dials.
    pub fn addr(&self) -> &A {
        &self.addr
    }
}

impl<D, A> Connect for Connector<D, A>
where
    D: Dial<A> + Clone + Send + 'static,
    D::Conn: 'static,
    D::Error: 'static,
    A: Clone + Send + 'static,
{
    type Transport = D::Conn;
    type Error = D::Error;
    type Future = Pin<Box<dyn Future<Output = Result<D::Conn, D::Error>> + Send>>;

    fn connect(&mut self) -> Self::Future {
        let (dialer, addr) = (self.dialer.clone(), self.addr.clone());
        Box::pin(async move { dialer.dial(addr).await })
    }
}
