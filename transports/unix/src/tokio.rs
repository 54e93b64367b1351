//! The tokio backend: tokio's own `UnixStream` / `UnixListener`, read and
//! written natively through [`courier::io::TokioIo`]. Same API as the crate
//! root; call it from inside a tokio runtime (with `net` and `time`
//! enabled).
//!
//! ```no_run
//! # async fn run(service: impl courier::Service + Clone + Send + 'static) -> Result<(), courier_unix::UnixError> {
//! let listener = courier_unix::tokio::UnixListener::bind("/tmp/app.sock")?;
//! tokio::spawn(courier_unix::tokio::serve(listener, service.clone()));
//! # Ok(()) }
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::tokio::net::UnixStream;
use courier::io::TokioIo;
use courier::timer::TokioTimer;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use courier::client::{Connect, ReconnectPolicy, ReconnectingDriver};
use courier::{Client, ClientBuilder, ClientDriver, Service, Timer};
use courier_net::{Listener, Serve, ServeBuilder};

use crate::{bind_std, peer_label, SocketFile, UnixError};

/// A client-side or accepted connection: a tokio Unix stream as a
/// [`courier::Transport`].
pub type Conn = TokioIo<UnixStream>;

/// The client driver of a [`Conn`].
pub type Driver<Tm = TokioTimer> = ClientDriver<Conn, Tm>;

/// Connects to the socket at `path`.
pub async fn connect_stream(path: impl AsRef<Path>) -> Result<UnixStream, UnixError> {
    UnixStream::connect(path).await.map_err(UnixError::Connect)
}

/// Connects to the socket at `path`: a client with default settings and a
/// [`TokioTimer`] (so call timeouts are also checked locally), and the
/// driver to poll.
pub async fn connect(path: impl AsRef<Path>) -> Result<(Client, Driver), UnixError> {
    connect_with(path, ClientBuilder::new().timer(TokioTimer::new())).await
}

/// Connects to the socket at `path` with a configured client.
pub async fn connect_with<Tm: Timer + Clone + Send + Sync + 'static>(
    path: impl AsRef<Path>,
    builder: ClientBuilder<Tm>,
) -> Result<(Client, Driver<Tm>), UnixError> {
    let stream = connect_stream(path).await?;
    Ok(builder.build(TokioIo::new(stream)))
}

/// A tokio Unix socket listener for [`serve`].
#[derive(Debug)]
pub struct UnixListener {
    inner: ::tokio::net::UnixListener,
    peer: Arc<str>,
    /// Set when this listener created the socket file.
    _file: Option<SocketFile>,
}

impl UnixListener {
    /// Binds `path`, removing a stale socket file first; the file is removed
    /// again when the listener is dropped. Must be called inside a tokio
    /// runtime.
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, UnixError> {
        let path = path.as_ref();
        let (listener, file) = bind_std(path)?;
        listener.set_nonblocking(true).map_err(UnixError::Bind)?;
        let inner = ::tokio::net::UnixListener::from_std(listener).map_err(UnixError::Bind)?;
        Ok(UnixListener {
            inner,
            peer: peer_label(Some(path)),
            _file: Some(file),
        })
    }
}

impl From<::tokio::net::UnixListener> for UnixListener {
    /// Serves a listener bound elsewhere; its file is left alone on drop.
    fn from(listener: ::tokio::net::UnixListener) -> Self {
        let addr = listener.local_addr().ok();
        UnixListener {
            peer: peer_label(addr.as_ref().and_then(|a| a.as_pathname())),
            inner: listener,
            _file: None,
        }
    }
}

impl Listener for UnixListener {
    type Conn = Conn;
    type Peer = Arc<str>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Conn, Arc<str>)>> {
        self.inner
            .poll_accept(cx)
            .map_ok(|(stream, _)| (TokioIo::new(stream), self.peer.clone()))
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
    listener: UnixListener,
    service: S,
) -> Serve<UnixListener, S, TokioTimer> {
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
        Box::pin(async move { connect_stream(path).await.map(TokioIo::new) })
    }
}

/// A client that re-dials the socket at `path` with `policy` whenever its
/// connection is lost, with default settings and a [`TokioTimer`]; nothing is
/// dialed until the driver is polled.
pub fn connect_reconnecting(
    path: impl Into<PathBuf>,
    policy: ReconnectPolicy,
) -> (Client, ReconnectingDriver<Connector, TokioTimer>) {
    ClientBuilder::new()
        .timer(TokioTimer::new())
        .build_reconnecting(Connector::new(path), policy)
}
