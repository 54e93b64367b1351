//! The async-io / async-net backend: smol or any executor.

use std::future::Future;
use std::io;
use std::os::unix::net as std_unix;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_io::Async;
use async_net::unix::UnixStream;
use courier::timer::AsyncIoTimer;
use courier_net::async_io::AsyncIoStream;
use courier_net::{Dial, Listener};

use crate::{Local, UnixError};

/// Dials Unix socket paths.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct UnixDialer;

impl<P: AsRef<Path>> Dial<P> for UnixDialer {
    type Conn = Conn;
    type Error = UnixError;

    fn dial(&self, path: P) -> impl Future<Output = Result<Conn, UnixError>> + Send {
        // Owned, so that the future is `Send` whatever `P` is.
        crate::dial(
            UnixStream::connect(path.as_ref().to_owned()),
            AsyncIoStream::new,
        )
    }
}

/// A Unix socket listener for [`serve`].
#[derive(Debug)]
pub struct UnixListener {
    inner: Arc<Async<std_unix::UnixListener>>,
    local: Local,
}

impl UnixListener {
    /// Binds `path`, removing a stale socket file first; the file is removed
    /// again when the listener is dropped.
    pub async fn bind(path: impl AsRef<Path>) -> Result<Self, UnixError> {
        let (listener, local) = crate::bind_std(path.as_ref())?;
        let inner = Async::new(listener).map_err(UnixError::Bind)?;
        Ok(UnixListener {
            inner: Arc::new(inner),
            local,
        })
    }
}

impl From<async_net::unix::UnixListener> for UnixListener {
    /// Serves a listener bound elsewhere; its file is left alone on drop.
    fn from(listener: async_net::unix::UnixListener) -> Self {
        UnixListener {
            local: Local::unowned(
                listener
                    .local_addr()
                    .ok()
                    .as_ref()
                    .and_then(|a| a.as_pathname()),
            ),
            inner: listener.into(),
        }
    }
}

impl Listener for UnixListener {
    type Conn = Conn;
    type Peer = Arc<str>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Conn, Arc<str>)>> {
        courier_net::async_io::poll_accept(&self.inner, cx, |listener| {
            let stream = UnixStream::try_from(listener.accept()?.0)?;
            Ok((AsyncIoStream::new(stream), self.local.peer()))
        })
    }
}

courier_net::transport_api! {
    dialer: UnixDialer,
    listener: UnixListener,
    conn: AsyncIoStream<UnixStream, std_unix::UnixStream>,
    stream: UnixStream,
    error: UnixError,
    timer: AsyncIoTimer,
    addr: AsRef<Path>,
}
