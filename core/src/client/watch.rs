//! The connection state a client's handles can read and wait on.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use super::Shared;
use crate::error::CallError;

/// Where a client's connection stands; see [`Client::connection`].
///
/// [`Client::connection`]: super::Client::connection
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// A reconnecting client's first connection attempt has not succeeded
    /// yet (nor failed).
    Connecting,
    /// A connection is up.
    Connected,
    /// A reconnecting client has no connection and dials again with
    /// backoff (see [`ReconnectPolicy`](super::ReconnectPolicy)).
    Disconnected {
        /// When the client lost its connection (or its first attempt
        /// failed), on the client's [timer](super::ClientBuilder::timer)'s
        /// clock.
        since: Duration,
        /// The error that ended the last connection or attempt, as calls
        /// in flight saw it: [`CallError::ConnectionLost`] for a peer that
        /// went away, [`CallError::Connect`] for a failed attempt.
        error: CallError,
    },
    /// The client is closed for good: its driver finished or was dropped,
    /// or the connection of a client that does not reconnect ended. Every
    /// later call fails.
    Closed,
}

/// The state and the tasks waiting for it to change.
pub(crate) struct Watch {
    state: ConnectionState,
    /// Bumped on every change.
    version: u64,
    waiters: Vec<Waker>,
}

impl Watch {
    pub(crate) fn new(state: ConnectionState) -> Self {
        Watch {
            state,
            version: 0,
            waiters: Vec::new(),
        }
    }
}

impl Shared {
    /// Moves the connection state to `next` and wakes the watchers; a
    /// closed client stays closed.
    pub(crate) fn set_connection(&self, next: ConnectionState) {
        let (previous, waiters) = self.watch.with(|watch| {
            if watch.state == next || watch.state == ConnectionState::Closed {
                return (None, Vec::new());
            }
            let previous = core::mem::replace(&mut watch.state, next);
            watch.version = watch.version.wrapping_add(1);
            (Some(previous), core::mem::take(&mut watch.waiters))
        });
        if let Some(previous) = previous {
            crate::trace::connection_changed(previous, next);
        }
        for waker in waiters {
            waker.wake();
        }
    }

    pub(crate) fn connection(&self) -> (ConnectionState, u64) {
        self.watch.with(|watch| (watch.state, watch.version))
    }
}

/// Watches a client's [`ConnectionState`]: made by
/// [`Client::watch_connection`](super::Client::watch_connection).
///
/// It remembers the last state it returned, so a change between two looks
/// is never missed (only states in between may be skipped: the watch
/// always returns the newest). It works on any executor: waiting is a
/// future woken by the driver, with nothing spawned. It does not keep the
/// client open.
#[derive(Clone)]
pub struct ConnectionWatch {
    shared: Arc<Shared>,
    seen: u64,
}

impl core::fmt::Debug for ConnectionWatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConnectionWatch")
            .field("state", &self.shared.connection().0)
            .finish()
    }
}

impl ConnectionWatch {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let seen = shared.connection().1;
        ConnectionWatch { shared, seen }
    }

    /// The state now; it counts as seen.
    pub fn get(&mut self) -> ConnectionState {
        let (state, version) = self.shared.connection();
        self.seen = version;
        state
    }

    /// Whether the state changed since it was last seen (by
    /// [`get`](Self::get), [`changed`](Self::changed), or the watch's
    /// creation).
    pub fn has_changed(&self) -> bool {
        self.shared.connection().1 != self.seen
    }

    /// Waits until the state differs from the one last seen, and returns
    /// the new state (at once if it already changed). After
    /// [`ConnectionState::Closed`] it never changes again.
    pub fn changed(&mut self) -> Changed<'_> {
        Changed { watch: self }
    }
}

/// The future of [`ConnectionWatch::changed`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Changed<'a> {
    watch: &'a mut ConnectionWatch,
}

impl Future for Changed<'_> {
    type Output = ConnectionState;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ConnectionState> {
        let this = self.get_mut();
        let seen = this.watch.seen;
        // Cloned outside the lock; dropped outside it if not kept.
        let mut waker = Some(cx.waker().clone());
        let ready = this.watch.shared.watch.with(|watch| {
            if watch.version != seen {
                return Some((watch.state, watch.version));
            }
            let known = watch
                .waiters
                .iter()
                .any(|w| waker.as_ref().is_some_and(|new| w.will_wake(new)));
            if !known {
                watch.waiters.extend(waker.take());
            }
            None
        });
        drop(waker);
        match ready {
            Some((state, version)) => {
                this.watch.seen = version;
                Poll::Ready(state)
            }
            None => Poll::Pending,
        }
    }
}
