//! The tokio backend: tokio's own `UnixStream` / `UnixListener`, read and
//! written natively through [`courier::io::TokioIo`]. Same API as the crate
//! root; call it from inside a tokio runtime (with `net` and `time`
//! enabled).
//!
//! ```no_run
//! # async fn run(service: impl courier::Service + Clone + Send + 'static) -> Result<(), courier_unix::UnixError> {
//! let listener = courier_unix::tokio::UnixListener::bind("/tmp/app.sock").await?;
//! tokio::spawn(courier_unix::tokio::serve(listener, service.clone()));
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::tokio::net::UnixStream;
use courier::io::TokioIo;
use courier::timer::TokioTimer;
use courier_net::{Dial, Listener};

use crate::{Local, UnixError};

/// Dials Unix socket paths with tokio.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct UnixDialer;

impl<P: AsRef<Path>> Dial<P> for UnixDialer {
    type Conn = Conn;
    type Error = UnixError;

    fn dial(&self, path: P) -> impl Future<Output = Result<Conn, UnixError>> + Send {
        // Owned, so that the future is `Send` whatever `P` is.
        crate::dial(UnixStream::connect(path.as_ref().to_owned()), TokioIo::new)
    }
}

/// A tokio Unix socket listener for [`serve`].
#[derive(Debug)]
pub struct UnixListener {
    inner: ::tokio::net::UnixListener,
    local: Local,
}

impl UnixListener {
    /// Binds `path`, removing a stale socket file first; the file is removed
    /// again when the listener is dropped. Must be called inside a tokio
    /// runtime.
    pub async fn bind(path: impl AsRef<Path>) -> Result<Self, UnixError> {
        let (listener, local) = crate::bind_std(path.as_ref())?;
        listener.set_nonblocking(true).map_err(UnixError::Bind)?;
        let inner = ::tokio::net::UnixListener::from_std(listener).map_err(UnixError::Bind)?;
        Ok(UnixListener { inner, local })
    }
}

impl From<::tokio::net::UnixListener> for UnixListener {
    /// Serves a listener bound elsewhere; its file is left alone on drop.
    fn from(listener: ::tokio::net::UnixListener) -> Self {
        let addr = listener.local_addr().ok();
        UnixListener {
            local: Local::unowned(addr.as_ref().and_then(|a| a.as_pathname())),
            inner: listener,
        }
    }
}

impl Listener for UnixListener {
    type Conn = Conn;
    type Peer = Arc<str>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Conn, Arc<str>)>> {
        self.inner
            .poll_accept(cx)
            .map_ok(|(stream, _)| (TokioIo::new(stream), self.local.peer()))
    }
}

courier_net::transport_api! {
    dialer: UnixDialer,
    listener: UnixListener,
    conn: TokioIo<UnixStream>,
    stream: UnixStream,
    error: UnixError,
    timer: TokioTimer,
    addr: AsRef<Path>,
    spawner: courier_net::tokio::runtime_spawner,
}
