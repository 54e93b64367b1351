//! # courier-unix
//!
//! courier over Unix domain sockets: connect to a socket path and get a
//! [`courier::Client`] and its driver; bind a path and serve a
//! [`courier::Service`] on every connection. The API mirrors `courier-tcp`.
//!
//! # Model
//!
//! - **Client**: [`connect`] returns `(Client, ClientDriver)`; poll the
//!   driver on any executor and wrap the client in a typed client from
//!   [`courier::service`](macro@courier::service). [`connect_with`] takes a
//!   [`courier::ClientBuilder`].
//! - **Reconnecting client** (opt-in): [`connect_reconnecting`], or a
//!   [`Connector`] passed to [`courier::ClientBuilder::build_reconnecting`],
//!   re-dials with backoff whenever the connection is lost; a
//!   [`courier::client::ReconnectPolicy`] says whether calls fail fast or
//!   wait during the outage.
//! - **Server**: [`UnixListener::bind`]`(path).await` then [`serve`] (or
//!   [`builder`]`().….serve(...)`) gives a [`Serve`] future that runs one
//!   [`courier::Server`] per connection inside itself, or on your executor
//!   with [`ServeBuilder::spawn_connections`]. The `tokio` module's `serve`
//!   and `builder()` spawn each connection on a multi-thread runtime by
//!   default ([`ServeBuilder::single_task`] opts out). Connection limit, graceful
//!   shutdown, accept-error back-off and logging are described in
//!   [`courier_net`].
//! - **Socket file**: binding a path whose socket file is *stale* (nothing
//!   accepts on it any more, e.g. after a crash) removes it first; a path
//!   where a server still answers is [`UnixError::InUse`], and a path that is
//!   not a socket is never removed. A listener made by `bind` removes its own
//!   file when it is dropped — when the server shuts down gracefully (the
//!   listener is dropped as soon as shutdown starts) or its future is
//!   dropped — unless another server has since replaced the file.
//! - **Backends**: the top-level items use async-io / async-net (feature
//!   `async-io`, default; smol or any executor); the `tokio`
//!   module (feature `tokio`) uses tokio's own sockets natively.
//! - **Built on [`courier_net`]**: this crate only provides [`UnixDialer`]
//!   (a [`Dial`] implementation) and [`UnixListener`] (a [`Listener`]); the
//!   functions come from [`courier_net::transport_api!`], so `courier-tcp`
//!   has the same ones. [`serve_addr`] binds and serves in one step.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "async-io")]
//! # {
//! /// Greets.
//! #[courier::service]
//! pub trait Greeter {
//!     /// Says hello.
//!     async fn hello(&self, name: String) -> String;
//! }
//! struct Imp;
//! impl Greeter for Imp {
//!     async fn hello(&self, name: String) -> String {
//!         format!("hello, {name}")
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("greeter.sock");
//! smol::block_on(async {
//!     let listener = courier_unix::UnixListener::bind(&path).await?;
//!     let shutdown = courier::Shutdown::new();
//!     let server = courier_unix::builder()
//!         .shutdown(shutdown.clone())
//!         .serve(listener, GreeterServer::new(Imp));
//!     let server = smol::spawn(server);
//!
//!     let (client, driver) = courier_unix::connect(&path).await?;
//!     let driver = smol::spawn(driver);
//!     let greeter = GreeterClient::new(client);
//!     assert_eq!(greeter.hello("unix".into()).await?, "hello, unix");
//!
//!     drop(greeter);
//!     driver.await?;
//!     shutdown.trigger();
//!     server.await;
//!     assert!(!path.exists(), "the server removed its socket file");
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! .unwrap();
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use courier::{TransportError, TransportErrorKind};
/// Threads that each run an executor of their own (feature
/// `executor-pool`): serve with
/// `builder().spawn_connections(pool.spawner())` and run each client's
/// driver and callers on one [`Worker`]; see [`ExecutorPool`].
#[cfg(feature = "executor-pool")]
pub use courier_net::async_io::{ExecutorPool, PoolSpawner, Worker};
pub use courier_net::{AtLimit, Dial, Listener, Serve, ServeBuilder, Stats};

#[cfg(feature = "async-io")]
mod async_io_backend;
#[cfg(feature = "async-io")]
pub use async_io_backend::*;

#[cfg(feature = "tokio")]
pub mod tokio;

/// Why a Unix socket connection or listener could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum UnixError {
    /// Connecting to the socket path failed.
    Connect(io::Error),
    /// Binding the path failed (including: the path exists and is not a
    /// socket, or a stale socket file could not be removed).
    Bind(io::Error),
    /// A server still accepts connections on this path.
    InUse,
}

impl fmt::Display for UnixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixError::Connect(e) => write!(f, "Unix socket connect failed: {e}"),
            UnixError::Bind(e) => write!(f, "Unix socket bind failed: {e}"),
            UnixError::InUse => f.write_str("a server is already listening on this socket path"),
        }
    }
}

impl std::error::Error for UnixError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UnixError::Connect(e) | UnixError::Bind(e) => Some(e),
            UnixError::InUse => None,
        }
    }
}

impl TransportError for UnixError {
    fn kind(&self) -> TransportErrorKind {
        match self {
            UnixError::Connect(e) | UnixError::Bind(e) => TransportError::kind(e),
            UnixError::InUse => TransportErrorKind::Io,
        }
    }

    fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            UnixError::Connect(e) | UnixError::Bind(e) => Some(e.kind()),
            UnixError::InUse => Some(io::ErrorKind::AddrInUse),
        }
    }
}

/// The socket file a listener created; removed on drop if it is still the
/// same file (same device and inode).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.dev() == self.dev && meta.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What a listener keeps besides its socket: how its connections are named
/// in log messages, and the socket file it created, if any.
#[derive(Debug)]
struct Local {
    peer: Arc<str>,
    _file: Option<SocketFile>,
}

impl Local {
    /// A listener bound elsewhere: its file is left alone.
    fn unowned(path: Option<&Path>) -> Self {
        Local {
            peer: peer_label(path),
            _file: None,
        }
    }

    fn peer(&self) -> Arc<str> {
        self.peer.clone()
    }
}

/// Binds `path` with std, removing a stale socket file first.
fn bind_std(path: &Path) -> Result<(std::os::unix::net::UnixListener, Local), UnixError> {
    remove_stale(path)?;
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(UnixError::Bind)?;
    let meta = std::fs::symlink_metadata(path).map_err(UnixError::Bind)?;
    let file = SocketFile {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    let local = Local {
        peer: peer_label(Some(path)),
        _file: Some(file),
    };
    Ok((listener, local))
}

/// Removes the socket file at `path` if nothing accepts on it any more;
/// fails if a server still does, or if `path` is not a socket.
fn remove_stale(path: &Path) -> Result<(), UnixError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => Err(UnixError::InUse),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    match std::fs::remove_file(path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(UnixError::Bind(e)),
                        _ => Ok(()),
                    }
                }
                Err(e) => Err(UnixError::Bind(e)),
            }
        }
        Ok(_) => {
            let e = io::Error::new(
                io::ErrorKind::AlreadyExists,
                "path exists and is not a socket",
            );
            Err(UnixError::Bind(e))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(UnixError::Bind(e)),
    }
}

/// One connection attempt of a [`UnixDialer`] of either runtime.
async fn dial<S, C>(
    connect: impl Future<Output = io::Result<S>>,
    wrap: impl FnOnce(S) -> C,
) -> Result<C, UnixError> {
    connect.await.map(wrap).map_err(UnixError::Connect)
}

/// How connections to `path` are named in log messages.
fn peer_label(path: Option<&Path>) -> Arc<str> {
    match path {
        Some(path) => format!("unix:{}", path.display()).into(),
        None => "unix:(unnamed)".into(),
    }
}
