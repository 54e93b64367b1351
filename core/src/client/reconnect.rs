//! A client driver that dials again when its connection is lost.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use super::{Conn, Shared, Step};
use crate::deadline::Deadlines;
use crate::error::{CallError, TransportError};
use crate::io::Transport;
use crate::timer::Timer;

/// Opens connections for a reconnecting client.
///
/// Implemented for every `FnMut() -> impl Future<Output = Result<T, E>>`
/// closure, where `T` is a [`Transport`] and `E` a [`TransportError`].
pub trait Connect {
    /// The transport a successful attempt yields.
    type Transport: Transport;
    /// Why an attempt failed.
    type Error: TransportError;
    /// One connection attempt.
    type Future: Future<Output = Result<Self::Transport, Self::Error>>;

    /// Starts a connection attempt.
    fn connect(&mut self) -> Self::Future;
}

impl<F, Fut, T, E> Connect for F
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    T: Transport,
    E: TransportError,
{
    type Transport = T;
    type Error = E;
    type Future = Fut;

    fn connect(&mut self) -> Fut {
        self()
    }
}

/// What calls do while a reconnecting client is disconnected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outage {
    /// Fail at once with the error that ended the last connection.
    FailFast,
    /// Queue for the next connection, until the call's own timeout or
    /// `max_wait`, whichever comes first; then fail with the error that
    /// ended the last connection.
    Wait {
        /// The longest a call waits for a connection.
        max_wait: Duration,
    },
}

/// When and how a reconnecting client dials again.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct ReconnectPolicy {
    initial_backoff: Duration,
    max_backoff: Duration,
    outage: Outage,
}

impl Default for ReconnectPolicy {
    /// Backoff from 50 ms doubling up to 5 s; calls fail fast while
    /// disconnected.
    fn default() -> Self {
        ReconnectPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            outage: Outage::FailFast,
        }
    }
}

impl ReconnectPolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// The wait before the second attempt; it doubles after every failed
    /// attempt up to `max`. The first attempt after a loss is immediate.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// What calls do while disconnected.
    pub fn outage(mut self, outage: Outage) -> Self {
        self.outage = outage;
        self
    }

    fn outage_wait(&self) -> Option<Duration> {
        match self.outage {
            Outage::FailFast => None,
            Outage::Wait { max_wait } => Some(max_wait),
        }
    }
}

enum Link<C: Connect> {
    /// Waiting for the backoff before the next attempt.
    Down,
    Connecting(Pin<Box<C::Future>>),
    Up(Conn<C::Transport>),
}

/// Like [`ClientDriver`](crate::ClientDriver), but when the connection fails
/// or closes it fails the calls that were sent on it, then dials again with
/// exponential backoff. It completes only when every [`Client`](crate::Client)
/// handle is gone; dropping it fails every pending and later call.
#[must_use = "calls make no progress unless the driver is polled"]
pub struct ReconnectingDriver<C: Connect, Tm: Timer> {
    shared: Arc<Shared>,
    connect: C,
    policy: ReconnectPolicy,
    link: Link<C>,
    deadlines: Deadlines<Tm>,
    backoff_timer: Deadlines<Tm>,
    next_backoff: Duration,
    max_frame: usize,
    connections: u64,
}

// Nothing is pinned in place: the attempt future and the sleeps are boxed.
impl<C: Connect, Tm: Timer> Unpin for ReconnectingDriver<C, Tm> {}

impl<C: Connect, Tm: Timer + Clone> ReconnectingDriver<C, Tm> {
    pub(super) fn new(
        shared: Arc<Shared>,
        mut connect: C,
        policy: ReconnectPolicy,
        timer: Tm,
        max_frame: usize,
    ) -> Self {
        let first = Box::pin(connect.connect());
        // Calls made before the first attempt resolves wait for it; with
        // `Outage::Wait` they wait as in any outage.
        if let Some(wait) = policy.outage_wait() {
            shared
                .state
                .lock()
                .connection_lost(CallError::Closed, Some(wait), false);
        }
        ReconnectingDriver {
            shared,
            connect,
            policy,
            link: Link::Connecting(first),
            deadlines: Deadlines::new(timer.clone()),
            backoff_timer: Deadlines::new(timer),
            next_backoff: policy.initial_backoff,
            max_frame,
            connections: 0,
        }
    }
}

impl<C: Connect, Tm: Timer> ReconnectingDriver<C, Tm> {
    /// How many connections have been established so far.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up(_))
    }

    /// Advances the link: dials, finishes a dial, or runs the connection.
    /// Returns whether the link changed state.
    fn poll_link(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.link {
            Link::Down => {
                if !self.backoff_timer.poll_fired(cx) {
                    return false;
                }
                self.link = Link::Connecting(Box::pin(self.connect.connect()));
                true
            }
            Link::Connecting(attempt) => match attempt.as_mut().poll(cx) {
                Poll::Pending => false,
                Poll::Ready(Ok(transport)) => {
                    self.link = Link::Up(Conn::new(transport, self.max_frame));
                    self.connections += 1;
                    self.next_backoff = self.policy.initial_backoff;
                    self.shared.state.lock().reconnected();
                    true
                }
                Poll::Ready(Err(e)) => {
                    self.lost(CallError::Transport(e.kind()), true);
                    true
                }
            },
            Link::Up(conn) => {
                let ended = match conn.read(&self.shared, cx) {
                    Poll::Ready(Ok(())) => Some(CallError::Closed),
                    Poll::Ready(Err(e)) => Some(e.to_call_error()),
                    Poll::Pending => conn
                        .write(&self.shared, cx)
                        .err()
                        .map(|e| e.to_call_error()),
                };
                match ended {
                    Some(error) => {
                        // The first attempt after losing a live link is immediate.
                        self.lost(error, false);
                        true
                    }
                    None => false,
                }
            }
        }
    }

    fn lost(&mut self, error: CallError, failed_attempt: bool) {
        self.shared
            .state
            .lock()
            .connection_lost(error, self.policy.outage_wait(), !failed_attempt);
        if failed_attempt {
            let at = self.backoff_timer.now() + self.next_backoff;
            self.next_backoff = (self.next_backoff * 2).min(self.policy.max_backoff);
            self.backoff_timer.arm(at);
            self.link = Link::Down;
        } else {
            self.link = Link::Connecting(Box::pin(self.connect.connect()));
        }
    }
}

impl<C: Connect, Tm: Timer> Future for ReconnectingDriver<C, Tm> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            while this.poll_link(cx) {}
            this.shared.expire_deadlines(&mut this.deadlines, cx);
            let pending = match &this.link {
                Link::Up(conn) => Some(conn.pending_writes()),
                _ => None,
            };
            match this.shared.next_step(pending, cx) {
                Step::Wait => return Poll::Pending,
                Step::Again => continue,
                Step::Finish => {
                    if let Link::Up(conn) = &mut this.link {
                        if conn.poll_close(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    this.shared.state.lock().close(CallError::Closed);
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl<C: Connect, Tm: Timer> Drop for ReconnectingDriver<C, Tm> {
    fn drop(&mut self) {
        self.shared.state.lock().close(CallError::Closed);
    }
}
