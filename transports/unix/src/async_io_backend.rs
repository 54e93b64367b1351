//! The async-io / async-net backend: smol or any executor.

use std::io;
use std::os::unix::net as std_unix;
use std::path::Path;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_io::Async;
use async_net::unix::UnixStream;
use courier::io::FuturesIo;
use courier::timer::AsyncIoTimer;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use courier::client::{Connect, ReconnectPolicy, ReconnectingDriver};
use courier::{Client, ClientBuilder, ClientDriver, Service, Timer};
use courier_net::{Listener, Serve, ServeBuilder};

use crate::{bind_std, peer_label, SocketFile, UnixError};

/// A client-side or accepted connection: an async-net Unix stream as a
/// [`courier::Transport`].
pub type Conn = FuturesIo<UnixStream>;

/// The client driver of a [`Conn`].
pub type Driver<Tm = AsyncIoTimer> = ClientDriver<Conn, Tm>;

/// Connects to the socket at `path`.
pub async fn connect_stream(path: impl AsRef<Path>) -> Result<UnixStream, UnixError> {
    UnixStream::connect(path).await.map_err(UnixError::Connect)
}

/// Connects to the socket at `path`: a client with default settings and an
/// [`AsyncIoTimer`] (so call timeouts are also checked locally), and the
/// driver to poll.
pub async fn connect(path: impl AsRef<Path>) -> Result<(Client, Driver), UnixError> {
    connect_with(path, ClientBuilder::new().timer(AsyncIoTimer::new())).await
}

/// Connects to the socket at `path` with a configured client.
pub async fn connect_with<Tm: Timer + Clone + Send + Sync + 'static>(
    path: impl AsRef<Path>,
    builder: ClientBuilder<Tm>,
) -> Result<(Client, Driver<Tm>), UnixError> {
    let stream = connect_stream(path).await?;
    Ok(builder.build(FuturesIo::new(stream)))
}

/// A Unix socket listener for [`serve`].
#[derive(Debug)]
pub struct UnixListener {
    inner: Arc<Async<std_unix::UnixListener>>,
    peer: Arc<str>,
    /// Set when this listener created the socket file.
    _file: Option<SocketFile>,
}

impl UnixListener {
    /// Binds `path`, removing a stale socket file first; the file is removed
    /// again when the listener is dropped.
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, UnixError> {
        let path = path.as_ref();
        let (listener, file) = bind_std(path)?;
        let inner = Async::new(listener).map_err(UnixError::Bind)?;
        Ok(UnixListener {
            inner: Arc::new(inner),
            peer: peer_label(Some(path)),
            _file: Some(file),
        })
    }
}

impl From<async_net::unix::UnixListener> for UnixListener {
    /// Serves a listener bound elsewhere; its file is left alone on drop.
    fn from(listener: async_net::unix::UnixListener) -> Self {
        let addr = listener.local_addr().ok();
        UnixListener {
            peer: peer_label(addr.as_ref().and_then(|a| a.as_pathname())),
            inner: listener.into(),
            _file: None,
        }
    }
}

impl Listener for UnixListener {
    type Conn = Conn;
    type Peer = Arc<str>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Conn, Arc<str>)>> {
        loop {
            match self.inner.get_ref().accept() {
                Ok((stream, _)) => {
                    let stream = UnixStream::try_from(stream)?;
                    return Poll::Ready(Ok((FuturesIo::new(stream), self.peer.clone())));
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
    listener: UnixListener,
    service: S,
) -> Serve<UnixListener, S, AsyncIoTimer> {
    builder().serve(listener, service)
}

/// Dials a socket path for a reconnecting client
/// ([`ClientBuilder::build_reconnecting`]).
#[derive(Clone, Debug)]
pub struct Connector {
    path: PathBuf,
}

impl Connector {
    /// A connector for the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Connector { path: path.into() }
    }
}

impl Connect for Connector {
    type Transport = Conn;
    type Error = UnixError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, UnixError>> + Send>>;

    fn connect(&mut self) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move { connect_stream(path).await.map(FuturesIo::new) })
    }
}

/// A client that re-dials the socket at `path` with `policy` whenever its
/// connection is lost, with default settings and a [`AsyncIoTimer`]; nothing is
/// dialed until the driver is polled.
pub fn connect_reconnecting(
    path: impl Into<PathBuf>,
    policy: ReconnectPolicy,
) -> (Client, ReconnectingDriver<Connector, AsyncIoTimer>) {
    ClientBuilder::new()
        .timer(AsyncIoTimer::new())
        .build_reconnecting(Connector::new(path), policy)
}
