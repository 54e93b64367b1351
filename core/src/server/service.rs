//! What a server runs: the [`Service`] that turns a request into a
//! [`Handler`], the type-erased reply encoding behind it, and [`Spawn`] for
//! running handlers as tasks.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use serde::Serialize;

use crate::error::RemoteError;
use crate::framing::encode_frame;
use crate::wire::{Header, MethodKey};

/// Turns a request into a handler. Implemented by the server types the
/// [`service!`](crate::service!) macro generates; implement it by hand for
/// custom routing.
pub trait Service {
    /// Looks up `method` and decodes `args` (postcard bytes). An unknown
    /// key is [`RemoteError::UnknownMethod`]; undecodable arguments are
    /// [`RemoteError::BadRequest`]. Called when the request arrives, also
    /// when it then waits in the backlog; the handler is first polled when
    /// it starts.
    fn dispatch(&self, method: MethodKey, args: &[u8]) -> Result<Handler, RemoteError>;
}
impl<S: Service + ?Sized> Service for Arc<S> {
    fn dispatch(&self, method: MethodKey, args: &[u8]) -> Result<Handler, RemoteError> {
        (**self).dispatch(method, args)
    }
}

impl<S: Service + ?Sized> Service for &S {
    fn dispatch(&self, method: MethodKey, args: &[u8]) -> Result<Handler, RemoteError> {
        (**self).dispatch(method, args)
    }
}

/// One call being served: a future whose output is encoded as the reply.
pub struct Handler(pub(super) Pin<Box<dyn Respond + Send>>);

impl core::fmt::Debug for Handler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Handler")
    }
}

impl Handler {
    /// A handler that replies with the output of `future`.
    pub fn new<F>(future: F) -> Self
    where
        F: Future + Send + 'static,
        F::Output: Serialize,
    {
        Handler(Box::pin(Responder { future }))
    }
}

/// A handler future with its output type erased: it encodes the reply.
pub(super) trait Respond {
    /// Polls the handler; when it is done, appends the reply frame for `id`
    /// to `out` (an error frame if the value cannot be encoded in
    /// `max_frame` bytes).
    fn poll_respond(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
        id: u32,
        max_frame: usize,
    ) -> Poll<()>;
}

pin_project_lite::pin_project! {
    struct Responder<F> {
        #[pin]
        future: F,
    }
}

impl<F> Respond for Responder<F>
where
    F: Future,
    F::Output: Serialize,
{
    fn poll_respond(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
        id: u32,
        max_frame: usize,
    ) -> Poll<()> {
        let Poll::Ready(value) = self.project().future.poll(cx) else {
            return Poll::Pending;
        };
        if encode_frame(out, &Header::Response { id }, &value, max_frame).is_err() {
            write_error(out, id, RemoteError::ResponseTooLarge, max_frame);
        }
        Poll::Ready(())
    }
}

pub(super) fn write_error(out: &mut Vec<u8>, id: u32, error: RemoteError, max_frame: usize) {
    // An error frame is 12 bytes; only a limit below that can refuse it.
    let _ = encode_frame(out, &Header::Error { id, error }, &(), max_frame);
}

/// Runs handlers as tasks of the user's executor.
pub trait Spawn: Send + Sync {
    /// Runs `task` to completion (or until it is dropped).
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>);
}

impl<F> Spawn for F
where
    F: Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync,
{
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self(task)
    }
}

/// Polls a handler; with `std`, a panic becomes a `HandlerPanicked` reply.
pub(super) fn poll_guarded(
    handler: Pin<&mut (dyn Respond + Send)>,
    cx: &mut Context<'_>,
    out: &mut Vec<u8>,
    id: u32,
    max_frame: usize,
) -> Poll<()> {
    #[cfg(feature = "std")]
    {
        let start = out.len();
        let poll = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler.poll_respond(cx, out, id, max_frame)
        }));
        poll.unwrap_or_else(|_| {
            out.truncate(start);
            write_error(out, id, RemoteError::HandlerPanicked, max_frame);
            Poll::Ready(())
        })
    }
    #[cfg(not(feature = "std"))]
    handler.poll_respond(cx, out, id, max_frame)
}
