//! The transport contract: a bidirectional byte stream.
//!
//! courier frames its messages itself (see [`crate::framing`]), so a
//! transport only moves bytes: a socket, a pipe, a serial port, an in-memory
//! pair. The methods mirror `futures::io::AsyncRead`/`AsyncWrite`, but take
//! `&mut self` and live in the `no_std` core; with the `std` feature,
//! [`crate::io::FuturesIo`] adapts any `futures-io` stream, and with the
//! `tokio` feature `TokioIo` adapts any tokio stream natively.
//!
//! # Buffering and coalescing
//!
//! The drivers do the buffering, so adapted streams should be unbuffered:
//! reads go straight into the driver's frame buffer in chunks of at least
//! 16 KiB (one read can carry many frames), the frame limit is checked from
//! the length prefix before a frame is buffered, and every frame that is
//! ready when the driver runs (requests from many callers, or replies from
//! many handlers) is appended to one buffer and handed to the stream in a
//! single `poll_write`, followed at once by `poll_flush`. A lone frame is
//! therefore written and flushed as soon as the driver is polled.
//!
//! # Contract
//!
//! - `poll_read` fills some of `buf` and returns how many bytes it wrote;
//!   `Ok(0)` (with a non-empty `buf`) means end of stream: the peer will send
//!   nothing more. `Poll::Pending` means no byte is available yet, and the
//!   task is woken when one is.
//! - `poll_write` accepts some of `buf` and returns how many bytes it took
//!   (never 0 for a non-empty `buf` unless the stream is closed). Accepted
//!   bytes may sit in a buffer until `poll_flush` returns `Ready(Ok(()))`.
//!   Returning `Pending` is the transport's backpressure: the driver stops
//!   producing until it is woken.
//! - `poll_close` flushes and shuts the write half down; the peer's reads then
//!   return `Ok(0)`.
//! - Errors are final: after one, the driver stops using the transport. Each
//!   transport keeps its own error type and maps it to a
//!   [`TransportErrorKind`](crate::error::TransportErrorKind), which is all a
//!   caller sees.

use core::task::{Context, Poll};

use crate::error::TransportError;

/// A bidirectional byte stream a courier driver runs over.
pub trait Transport {
    /// The transport's own error.
    type Error: TransportError;

    /// Reads into `buf`; `Ok(0)` is end of stream.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Self::Error>>;

    /// Writes some of `buf`, returning how many bytes were taken.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, Self::Error>>;

    /// Pushes buffered bytes to the peer.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;

    /// Flushes, then shuts the write half down.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    type Error = T::Error;
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Self::Error>> {
        (**self).poll_read(cx, buf)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, Self::Error>> {
        (**self).poll_write(cx, buf)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        (**self).poll_flush(cx)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        (**self).poll_close(cx)
    }
}

#[cfg(feature = "alloc")]
impl<T: Transport + ?Sized> Transport for alloc::boxed::Box<T> {
    type Error = T::Error;
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Self::Error>> {
        (**self).poll_read(cx, buf)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, Self::Error>> {
        (**self).poll_write(cx, buf)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        (**self).poll_flush(cx)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        (**self).poll_close(cx)
    }
}

#[cfg(feature = "std")]
pub use futures_compat::FuturesIo;
#[cfg(feature = "tokio")]
pub use tokio_compat::TokioIo;

#[cfg(feature = "std")]
mod futures_compat {
    use core::pin::Pin;
    use core::task::{Context, Poll};

    use futures_io::{AsyncRead, AsyncWrite};

    use super::Transport;

    /// Adapts any `futures::io::AsyncRead + AsyncWrite` byte stream (a
    /// socket, a pipe, a TLS stream, a serial port) into a [`Transport`].
    ///
    /// courier's drivers already buffer reads, enforce the frame limit and
    /// coalesce every frame that is ready into one write, so the stream should
    /// be unbuffered.
    #[derive(Debug)]
    pub struct FuturesIo<S>(pub S);

    impl<S> FuturesIo<S> {
        /// Wraps `stream`.
        pub fn new(stream: S) -> Self {
            FuturesIo(stream)
        }

        /// Returns the wrapped stream.
        pub fn into_inner(self) -> S {
            self.0
        }
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Transport for FuturesIo<S> {
        type Error = std::io::Error;
        fn poll_read(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
        fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_close(cx)
        }
    }
}

#[cfg(feature = "tokio")]
mod tokio_compat {
    use core::pin::Pin;
    use core::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::Transport;

    /// Adapts any `tokio::io::AsyncRead + AsyncWrite` byte stream (a tokio
    /// socket, pipe or TLS stream) into a [`Transport`], with no
    /// compatibility layer and no extra copy: reads land directly in the
    /// driver's buffer. `poll_close` is tokio's `poll_shutdown`.
    #[derive(Debug)]
    pub struct TokioIo<S>(pub S);

    impl<S> TokioIo<S> {
        /// Wraps `stream`.
        pub fn new(stream: S) -> Self {
            TokioIo(stream)
        }

        /// Returns the wrapped stream.
        pub fn into_inner(self) -> S {
            self.0
        }
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Transport for TokioIo<S> {
        type Error = std::io::Error;
        fn poll_read(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            let mut buf = ReadBuf::new(buf);
            match Pin::new(&mut self.0).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        }
        fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }
}
