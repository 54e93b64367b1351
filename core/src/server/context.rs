//! What a handler can know about its call: [`CallContext`], handed out by
//! [`Request::context`] to the [`Service`](super::Service) that asks.
//!
//! A context costs one allocation, made only for calls whose method asks
//! for it; the driver signals it when the call ends before its handler
//! finished (cancel, deadline, shutdown, lost connection), so work the
//! handler started elsewhere can stop too.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use crate::error::CallError;
use crate::sync::Mutex;
use crate::wire::MethodKey;

/// One received call, as the server's [`Service`](super::Service) sees it:
/// its method, arguments and what a handler context is made of.
#[derive(Debug)]
pub struct Request<'a> {
    method: MethodKey,
    args: &'a [u8],
    id: u32,
    timeout: Option<Duration>,
    peer: Option<&'a Arc<str>>,
    context: Option<CallContext>,
}

impl<'a> Request<'a> {
    pub(super) fn new(
        method: MethodKey,
        args: &'a [u8],
        id: u32,
        timeout: Option<Duration>,
        peer: Option<&'a Arc<str>>,
    ) -> Self {
        Request {
            method,
            args,
            id,
            timeout,
            peer,
            context: None,
        }
    }

    /// A request outside any connection (to call a service directly, e.g.
    /// in a test): id 0, no timeout, no peer.
    pub fn detached(method: MethodKey, args: &'a [u8]) -> Self {
        Request::new(method, args, 0, None, None)
    }

    /// Which method.
    pub fn method(&self) -> MethodKey {
        self.method
    }

    /// The arguments, postcard-encoded as one tuple.
    pub fn args(&self) -> &'a [u8] {
        self.args
    }

    /// The handler context of this call (made on first use; the driver
    /// signals it if the call ends before its handler does).
    pub fn context(&mut self) -> CallContext {
        self.context
            .get_or_insert_with(|| CallContext::new(self.id, self.timeout, self.peer.cloned()))
            .clone()
    }

    /// The context, if one was made, for the driver to signal.
    pub(super) fn take_context(&mut self) -> Option<CallContext> {
        self.context.take()
    }
}

/// A handler's view of its call: request id, deadline, the peer, and a
/// cancellation signal.
///
/// Declare a first parameter `ctx: courier::CallContext` on a method of a
/// [`service`](crate::service) trait to receive it (it is not sent by the
/// caller). Cloning is cheap; the clone observes the same call.
///
/// To pass the deadline on when the handler calls another service, give
/// that call the time left: `other.with_context(&ctx).method(..)` on a
/// generated client, or [`Call::with_context`](crate::Call::with_context).
#[derive(Clone)]
pub struct CallContext {
    inner: Arc<ContextInner>,
}

impl core::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CallContext")
            .field("request_id", &self.inner.id)
            .field("timeout", &self.inner.timeout)
            .field("peer", &self.inner.peer)
            .field("cancel_reason", &self.cancel_reason())
            .finish()
    }
}

struct ContextInner {
    id: u32,
    timeout: Option<Duration>,
    #[cfg(feature = "std")]
    expires: Option<std::time::Instant>,
    peer: Option<Arc<str>>,
    signal: Mutex<Signal>,
}

#[derive(Default)]
struct Signal {
    reason: Option<CallError>,
    waiters: Vec<Waker>,
}

impl CallContext {
    fn new(id: u32, timeout: Option<Duration>, peer: Option<Arc<str>>) -> Self {
        CallContext {
            inner: Arc::new(ContextInner {
                id,
                timeout,
                #[cfg(feature = "std")]
                expires: timeout.and_then(|t| std::time::Instant::now().checked_add(t)),
                peer,
                signal: Mutex::new(Signal::default()),
            }),
        }
    }

    /// The request id the caller chose (unique among its calls in flight
    /// on this connection).
    pub fn request_id(&self) -> u32 {
        self.inner.id
    }

    /// The time the caller allowed, as it was when the request arrived
    /// (`None`: no deadline).
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// The time left before the call's deadline, now (`None`: no deadline;
    /// zero once it passed).
    #[cfg(feature = "std")]
    pub fn time_left(&self) -> Option<Duration> {
        self.inner
            .expires
            .map(|at| at.saturating_duration_since(std::time::Instant::now()))
    }

    /// The timeout a call made on behalf of this one should carry, given
    /// its `own` timeout: the shorter of the two, where the handler's is
    /// the time left (with `std`; without, the timeout it arrived with).
    pub fn timeout_for(&self, own: Option<Duration>) -> Option<Duration> {
        #[cfg(feature = "std")]
        let left = self.time_left();
        #[cfg(not(feature = "std"))]
        let left = self.timeout();
        match (own, left) {
            (Some(own), Some(left)) => Some(own.min(left)),
            (own, left) => own.or(left),
        }
    }

    /// The peer's address, where the transport knows it (courier-net sets
    /// it for TCP and Unix connections; see `ServerBuilder::peer`).
    pub fn peer(&self) -> Option<&str> {
        self.inner.peer.as_deref()
    }

    /// Why the call ended before its handler, if it did:
    /// [`CallError::Cancelled`] (the caller cancelled),
    /// [`CallError::DeadlineExceeded`], [`CallError::ConnectionLost`], or
    /// [`CallError::Remote`] with `ShuttingDown`.
    pub fn cancel_reason(&self) -> Option<CallError> {
        self.inner.signal.with(|signal| signal.reason)
    }

    /// Whether the call ended before its handler did.
    pub fn is_cancelled(&self) -> bool {
        self.cancel_reason().is_some()
    }

    /// Resolves, with the reason, when the call ends before its handler
    /// does. (A handler running the call itself is dropped at that moment;
    /// this is for work it handed to other tasks.)
    pub fn cancelled(&self) -> Cancelled {
        Cancelled {
            context: self.clone(),
        }
    }

    /// Signals every observer (the driver, when the call ends early).
    pub(super) fn cancel(&self, reason: CallError) {
        let waiters = self.inner.signal.with(|signal| {
            if signal.reason.is_some() {
                return Vec::new();
            }
            signal.reason = Some(reason);
            core::mem::take(&mut signal.waiters)
        });
        for waker in waiters {
            waker.wake();
        }
    }
}

/// The future of [`CallContext::cancelled`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Cancelled {
    context: CallContext,
}

impl Future for Cancelled {
    type Output = CallError;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CallError> {
        let waker = cx.waker().clone();
        let (reason, unused) = self
            .context
            .inner
            .signal
            .with(|signal| match signal.reason {
                Some(reason) => (Some(reason), Some(waker)),
                None => {
                    if signal.waiters.iter().any(|w| w.will_wake(&waker)) {
                        (None, Some(waker))
                    } else {
                        signal.waiters.push(waker);
                        (None, None)
                    }
                }
            });
        drop(unused);
        match reason {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }
}
