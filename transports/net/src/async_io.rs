//! Helpers for [`Listener`](crate::Listener) implementations on the
//! async-io reactor (smol, or any executor); feature `async-io`.

use std::io;
use std::task::{ready, Context, Poll};

use async_io::Async;

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
