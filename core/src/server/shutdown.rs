//! [`Shutdown`]: the signal that stops servers gracefully.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};

use crate::sync::Mutex;

/// Tells servers to stop taking calls and finish the ones in flight; cheap
/// to clone, one signal for any number of connections.
///
/// [`trigger`](Shutdown::trigger) starts a graceful shutdown;
/// [`force`](Shutdown::force) ends its grace period.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Default)]
struct ShutdownInner {
    triggered: AtomicBool,
    forced: AtomicBool,
    /// Wakers of the servers watching, by registration key.
    wakers: Mutex<Vec<Registration>>,
}

/// One registration slot of a [`Shutdown`].
enum Registration {
    /// Nobody holds this key.
    Free,
    /// Held by a watcher; its waker until the signal fires.
    Held(Option<Waker>),
}

impl core::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .field("forced", &self.is_forced())
            .finish()
    }
}

impl Shutdown {
    /// A signal that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the graceful shutdown of every server built with this signal:
    /// new requests and backlogged ones are answered
    /// [`RemoteError::ShuttingDown`](crate::RemoteError::ShuttingDown),
    /// running handlers finish, then each connection closes.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Ends the grace period of every server built with this signal (and
    /// triggers it if it was not): running handlers are dropped and
    /// answered
    /// [`RemoteError::ShuttingDown`](crate::RemoteError::ShuttingDown), every
    /// reply is flushed and the connection is closed; the servers complete
    /// with `Ok(())` once their replies are written. A peer that does not
    /// read its replies keeps its server waiting for the write, so an accept
    /// loop still bounds that wait (courier-net's `ServeBuilder` does).
    pub fn force(&self) {
        self.inner.forced.store(true, Ordering::Release);
        self.inner.triggered.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Whether [`trigger`](Shutdown::trigger) (or `force`) was called.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// Whether [`force`](Shutdown::force) was called.
    pub fn is_forced(&self) -> bool {
        self.inner.forced.load(Ordering::Acquire)
    }

    fn wake_all(&self) {
        let wakers: Vec<Waker> = self.inner.wakers.with(|slots| {
            slots
                .iter_mut()
                .filter_map(|slot| match slot {
                    Registration::Held(waker) => waker.take(),
                    Registration::Free => None,
                })
                .collect()
        });
        // Woken outside the lock (waking is user code).
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether the signal `reached` its state; if not, wakes `cx` when the
    /// signal changes. `key` is the caller's registration, kept between
    /// polls.
    pub(crate) fn poll_until(
        &self,
        cx: &mut Context<'_>,
        key: &mut Option<usize>,
        reached: fn(&Shutdown) -> bool,
    ) -> bool {
        if reached(self) {
            return true;
        }
        let current = *key;
        let registered = self.inner.wakers.with(|slots| match current {
            Some(index) => match slots.get(index) {
                Some(Registration::Held(Some(w))) => w.will_wake(cx.waker()),
                _ => false,
            },
            None => false,
        });
        if !registered {
            let waker = cx.waker().clone();
            let previous = self.inner.wakers.with(|slots| {
                let index = match *key {
                    Some(index) if index < slots.len() => index,
                    _ => {
                        let free = slots
                            .iter()
                            .position(|slot| matches!(slot, Registration::Free));
                        let index = free.unwrap_or_else(|| {
                            slots.push(Registration::Free);
                            slots.len() - 1
                        });
                        *key = Some(index);
                        index
                    }
                };
                slots
                    .get_mut(index)
                    .map(|slot| core::mem::replace(slot, Registration::Held(Some(waker))))
            });
            // The old waker is dropped outside the lock (its drop is user code).
            drop(previous);
        }
        // Changed between the check and the registration?
        reached(self)
    }

    /// A future that completes once the signal is triggered (at once if it
    /// already was), for tasks that stop together with the servers, such as
    /// an accept loop.
    pub fn triggered(&self) -> ShutdownTriggered {
        ShutdownTriggered {
            signal: self.clone(),
            key: None,
        }
    }

    pub(super) fn unregister(&self, key: usize) {
        let previous = self.inner.wakers.with(|slots| {
            slots
                .get_mut(key)
                .map(|slot| core::mem::replace(slot, Registration::Free))
        });
        drop(previous);
    }
}

/// Completes when a [`Shutdown`] is triggered; see [`Shutdown::triggered`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct ShutdownTriggered {
    signal: Shutdown,
    key: Option<usize>,
}

impl Future for ShutdownTriggered {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this
            .signal
            .poll_until(cx, &mut this.key, Shutdown::is_triggered)
        {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for ShutdownTriggered {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.signal.unregister(key);
        }
    }
}
