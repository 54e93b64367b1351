//! What a server runs: the [`Service`] that turns a request into a
//! [`Handler`], the type-erased reply encoding behind it, and [`Spawn`] for
//! running handlers as tasks.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Request;
use crate::client::EncodeArgs;
use crate::error::RemoteError;
use crate::framing::{encode_frame, FrameHead};
use crate::stream::{Incoming, IncomingRef, Streaming};
use crate::wire::{Header, MethodKey};

/// Turns a request into a handler. Implemented by the server types the
/// [`service`](crate::service) attribute generates; implement it by hand for
/// custom routing.
pub trait Service {
    /// Looks up `method` and decodes `args` (postcard bytes). An unknown
    /// key is [`RemoteError::UnknownMethod`]; undecodable arguments are
    /// [`RemoteError::BadRequest`]. Called when the request arrives, also
    /// when it then waits in the backlog; the handler is first polled when
    /// it starts.
    fn dispatch(&self, method: MethodKey, args: &[u8]) -> Result<Handler, RemoteError>;

    /// Like [`dispatch`](Service::dispatch), with the whole request: what
    /// the driver calls. Override it to give handlers a
    /// [`CallContext`](super::CallContext) ([`Request::context`]); by
    /// default it calls `dispatch`.
    fn serve(&self, request: &mut Request<'_>) -> Result<Handler, RemoteError> {
        self.dispatch(request.method(), request.args())
    }

    /// Names `method` (service, method, whether it returns a `Result`) for
    /// the server's tracing spans (feature `tracing`); asked only when a
    /// subscriber records the span. `None`, the default, leaves only the
    /// key.
    fn method_info(&self, method: MethodKey) -> Option<&'static crate::MethodInfo> {
        let _ = method;
        None
    }
}

impl<S: Service + ?Sized> Service for Arc<S> {
    fn dispatch(&self, method: MethodKey, args: &[u8]) -> Result<Handler, RemoteError> {
        (**self).dispatch(method, args)
    }

    fn serve(&self, request: &mut Request<'_>) -> Result<Handler, RemoteError> {
        (**self).serve(request)
    }

    fn method_info(&self, method: MethodKey) -> Option<&'static crate::MethodInfo> {
        (**self).method_info(method)
    }
}

impl<S: Service + ?Sized> Service for &S {
    fn dispatch(&self, method: MethodKey, args: &[u8]) -> Result<Handler, RemoteError> {
        (**self).dispatch(method, args)
    }

    fn serve(&self, request: &mut Request<'_>) -> Result<Handler, RemoteError> {
        (**self).serve(request)
    }

    fn method_info(&self, method: MethodKey) -> Option<&'static crate::MethodInfo> {
        (**self).method_info(method)
    }
}

/// One call being served: a future whose output is encoded as the reply,
/// or (for a streaming method) a stream of items and a future, with the
/// caller's items if the method receives any.
pub struct Handler {
    pub(super) respond: Pin<Box<dyn Respond + Send>>,
    /// The caller's items, for a method that receives a stream.
    pub(super) incoming: Option<IncomingRef>,
    /// Sends or receives items: runs in the connection's task (never
    /// spawned), where credit and items are routed.
    pub(super) streaming: bool,
}

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
        Handler {
            respond: Box::pin(Responder { future }),
            incoming: None,
            streaming: false,
        }
    }

    /// A server-streaming handler: `future` resolves to a [`Stream`] whose
    /// items go to the caller as item frames, within the caller's credit;
    /// when it ends, the call ends normally (a response `()`). Dropped
    /// unfinished if the caller cancels, the deadline passes or the
    /// connection goes.
    ///
    /// Items are values, encoded as they are sent, or
    /// [`Encoded`](crate::client::Encoded) bytes, copied as they are: an
    /// item sent to many callers can be encoded once.
    pub fn stream<F, S>(future: F) -> Self
    where
        F: Future<Output = S> + Send + 'static,
        S: Stream + Send + 'static,
        S::Item: EncodeArgs,
    {
        Handler {
            respond: Box::pin(Emitter::Starting { future }),
            incoming: None,
            streaming: true,
        }
    }

    /// A handler that receives the caller's items (client-streaming and
    /// bidirectional methods): `make` gets the [`Streaming`] of items and
    /// returns the handler proper ([`Handler::new`] for one reply,
    /// [`Handler::stream`] for a stream back).
    pub fn receiving<T, M>(make: M) -> Self
    where
        T: DeserializeOwned,
        M: FnOnce(Streaming<T>) -> Handler,
    {
        let incoming = Incoming::new();
        let mut handler = make(Streaming::new(incoming.clone()));
        handler.incoming = Some(incoming);
        handler.streaming = true;
        handler
    }
}

/// What a handler writes its reply (and items) into, for one poll.
pub(crate) struct Reply<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(super) id: u32,
    pub(super) max_frame: usize,
    /// Items the handler may still send (the caller's credit).
    pub(super) credit: u32,
    /// The connection's unsent bytes are under the write mark.
    pub(super) room: bool,
    /// Set by a handler that had an item ready but no room or credit.
    pub(super) blocked: bool,
}

/// How many bytes of items one handler writes per poll, so that streams
/// take turns (PROTOCOL.md R12).
const TURN_BYTES: usize = 16 * 1024;

pin_project_lite::pin_project! {
    /// A server-streaming handler: first its future, then its stream.
    #[project = EmitterProj]
    enum Emitter<F, S> {
        Starting { #[pin] future: F },
        // `head`: the start of every item frame, encoded once. `next`: the
        // frame of an item taken from the stream with no credit to send it.
        Sending { #[pin] stream: S, head: FrameHead, next: Option<Vec<u8>> },
        Finished,
    }
}

impl<F, S> Respond for Emitter<F, S>
where
    F: Future<Output = S>,
    S: Stream,
    S::Item: EncodeArgs,
{
    /// Writes items while there is credit and room, at most one turn; an
    /// exhausted credit or room returns `Pending` with `blocked` set, and
    /// the driver polls again when credit or room comes. A full turn
    /// wakes itself, to go to the back of the ready queue.
    ///
    /// With no credit left the stream is still polled once, so that its
    /// end is seen: the response needs no credit (PROTOCOL.md R10), and a
    /// caller that granted exactly the items there are gets it. An item
    /// found then waits in `next`, encoded, for credit.
    fn poll_respond(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        reply: &mut Reply<'_>,
    ) -> Poll<()> {
        let start = reply.out.len();
        loop {
            match self.as_mut().project() {
                EmitterProj::Starting { future } => {
                    let stream = core::task::ready!(future.poll(cx));
                    let header = Header::Item {
                        id: reply.id,
                        from_callee: true,
                    };
                    let Some(head) = FrameHead::new(&header) else {
                        // An item header always encodes; if not, the call
                        // fails rather than hangs.
                        write_error(
                            reply.out,
                            reply.id,
                            RemoteError::ResponseTooLarge,
                            reply.max_frame,
                        );
                        self.set(Emitter::Finished);
                        return Poll::Ready(());
                    };
                    self.set(Emitter::Sending {
                        stream,
                        head,
                        next: None,
                    });
                }
                EmitterProj::Sending {
                    mut stream,
                    head,
                    next,
                } => {
                    if !reply.room || (reply.credit == 0 && next.is_some()) {
                        reply.blocked = true;
                        return Poll::Pending;
                    }
                    if reply.out.len().saturating_sub(start) >= TURN_BYTES {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    if let Some(frame) = next.take() {
                        reply.out.extend_from_slice(&frame);
                        reply.credit -= 1;
                        continue;
                    }
                    let item = core::task::ready!(stream.as_mut().poll_next(cx));
                    let id = reply.id;
                    let Some(item) = item else {
                        let _ =
                            encode_frame(reply.out, &Header::Response { id }, &(), reply.max_frame);
                        self.set(Emitter::Finished);
                        return Poll::Ready(());
                    };
                    let at = reply.out.len();
                    if item
                        .encode_frame_after(reply.out, head.as_bytes(), reply.max_frame)
                        .is_err()
                    {
                        write_error(
                            reply.out,
                            id,
                            RemoteError::ResponseTooLarge,
                            reply.max_frame,
                        );
                        self.set(Emitter::Finished);
                        return Poll::Ready(());
                    }
                    if reply.credit == 0 {
                        // No credit for it: the frame waits for some.
                        *next = Some(reply.out.split_off(at));
                        reply.blocked = true;
                        return Poll::Pending;
                    }
                    reply.credit -= 1;
                }
                EmitterProj::Finished => return Poll::Ready(()),
            }
        }
    }
}

/// A handler future with its output type erased: it encodes the reply.
pub(crate) trait Respond {
    /// Polls the handler; when it is done, appends the reply frame for
    /// `reply.id` to `reply.out` (an error frame if the value cannot be
    /// encoded in `max_frame` bytes). A streaming handler appends items
    /// before, using `reply.credit`.
    fn poll_respond(self: Pin<&mut Self>, cx: &mut Context<'_>, reply: &mut Reply<'_>) -> Poll<()>;

    /// The call ends before the handler did (it is dropped next), because
    /// of `why`; only the tracing wrapper cares.
    fn end_early(self: Pin<&mut Self>, why: crate::CallError) {
        let _ = why;
    }
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
    fn poll_respond(self: Pin<&mut Self>, cx: &mut Context<'_>, reply: &mut Reply<'_>) -> Poll<()> {
        let Poll::Ready(value) = self.project().future.poll(cx) else {
            return Poll::Pending;
        };
        let (id, max_frame) = (reply.id, reply.max_frame);
        if encode_frame(reply.out, &Header::Response { id }, &value, max_frame).is_err() {
            write_error(reply.out, id, RemoteError::ResponseTooLarge, max_frame);
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

/// Where the last whole frame written from `start` on ends.
#[cfg(feature = "std")]
fn whole_frames_end(out: &[u8], start: usize) -> usize {
    let mut at = start;
    while let Some(prefix) = out.get(at..at.saturating_add(4)) {
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let end = at.saturating_add(4).saturating_add(len);
        // A zero prefix is a frame whose length was never patched in.
        if len == 0 || end > out.len() {
            break;
        }
        at = end;
    }
    at
}

/// Polls a handler; with `std`, a panic becomes a `HandlerPanicked` reply.
pub(crate) fn poll_guarded(
    handler: Pin<&mut (dyn Respond + Send)>,
    cx: &mut Context<'_>,
    reply: &mut Reply<'_>,
) -> Poll<()> {
    #[cfg(feature = "std")]
    {
        let start = reply.out.len();
        let poll = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler.poll_respond(cx, reply)
        }));
        poll.unwrap_or_else(|_| {
            // Items written whole before the panic stay (the caller sees
            // them, then the error); a frame cut short by it goes.
            let end = whole_frames_end(reply.out, start);
            reply.out.truncate(end);
            write_error(
                reply.out,
                reply.id,
                RemoteError::HandlerPanicked,
                reply.max_frame,
            );
            Poll::Ready(())
        })
    }
    #[cfg(not(feature = "std"))]
    handler.poll_respond(cx, reply)
}
