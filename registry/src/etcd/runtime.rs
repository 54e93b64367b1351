//! Polling the etcd client's futures from any executor.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Handle;

/// A future polled inside a tokio runtime's context: the etcd client's
/// sockets and timers register with that runtime whatever executor polls
/// this.
pub(crate) struct InRuntime<F> {
    handle: Option<Handle>,
    inner: Pin<Box<F>>,
}

impl<F: Future> InRuntime<F> {
    /// `inner`, entering `handle` (if any) on every poll.
    pub(crate) fn new(handle: Option<Handle>, inner: F) -> Self {
        InRuntime {
            handle,
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _entered = this.handle.as_ref().map(Handle::enter);
        this.inner.as_mut().poll(cx)
    }
}
