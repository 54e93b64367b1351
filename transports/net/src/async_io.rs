//! Helpers for transports on the async-io reactor (smol, or any
//! executor); feature `async-io`: accepting for a
//! [`Listener`](crate::Listener), and [`AsyncIoStream`], the connection.
//! With the feature `executor-pool`, `ExecutorPool`: threads that each
//! run an executor of their own, so that a connection's tasks stay on one
//! thread.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_io::Async;
use courier::Transport;
use futures_io::{AsyncRead, AsyncWrite};

#[cfg(feature = "executor-pool")]
mod executor_pool;
/// The handle of a task spawned on an [`ExecutorPool`]: async-executor's
/// (also `smol::Task`).
#[cfg(feature = "executor-pool")]
#[doc(no_inline)]
pub use async_executor::Task;
#[cfg(feature = "executor-pool")]
pub use executor_pool::{ExecutorPool, PoolSpawner, Worker, MAX_THREADS};

/// Accepts from a non-blocking listener registered with async-io: calls
/// `accept` until it stops returning `WouldBlock`, then waits until the
/// listener is readable. For `Listener::poll_accept` over a std listener
/// (`std::net::TcpListener`, `std::os::unix::net::UnixListener`, ...),
/// without a boxed accept future per connection.
pub fn poll_accept<T, R>(
    listener: &Async<T>,
    cx: &mut Context<'_>,
    mut accept: impl FnMut(&T) -> io::Result<R>,
) -> Poll<io::Result<R>> {
    loop {
        match accept(listener.get_ref()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready!(listener.poll_readable(cx))?;
            }
            result => return Poll::Ready(result),
        }
    }
}

/// A socket on the async-io reactor as a [`courier::Transport`]: `S` is
/// the stream (`async_net::TcpStream`, `async_net::unix::UnixStream`) and
/// `T` the std socket inside it, whose reactor source this waits on.
///
/// It differs from [`FuturesIo`](courier::io::FuturesIo)`<S>` in one
/// thing. A read that returns fewer bytes than it asked for drained the
/// socket, so the next read waits for the reactor to report the socket
/// readable instead of first trying a read that could only fail with
/// `WouldBlock`: one system call less each time a connection goes idle
/// (twice per call at one call in flight). The wait itself is what a
/// `WouldBlock` would have led to, so no readiness is missed: async-io
/// arms interest with a one-shot, level-triggered registration, which
/// reports data that arrived before it at once.
#[derive(Debug)]
pub struct AsyncIoStream<S, T> {
    stream: S,
    source: Arc<Async<T>>,
    /// Wait for readiness before the next read: the last read drained the
    /// socket, or found it empty.
    drained: bool,
}

impl<S, T> AsyncIoStream<S, T>
where
    S: Clone,
    Arc<Async<T>>: From<S>,
{
    /// Wraps `stream`.
    pub fn new(stream: S) -> Self {
        AsyncIoStream {
            source: stream.clone().into(),
            stream,
            drained: false,
        }
    }
}

impl<S, T> AsyncIoStream<S, T> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Returns the wrapped stream.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

impl<S, T> Transport for AsyncIoStream<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = io::Error;

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.drained {
            // Takes the readiness the reactor reported, or registers for it.
            ready!(self.source.poll_readable(cx))?;
            self.drained = false;
        }
        let Poll::Ready(n) = Pin::new(&mut self.stream).poll_read(cx, buf)? else {
            // Registered: the readiness it will report belongs to the
            // next read.
            self.drained = true;
            return Poll::Pending;
        };
        self.drained = n > 0 && n < buf.len();
        Poll::Ready(Ok(n))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}
