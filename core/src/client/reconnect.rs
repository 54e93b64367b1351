//! A client driver that dials again when its connection is lost.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use super::driver::{Conn, Step};
use super::{wake_all, ConnectionState, Shared};
use crate::deadline::Deadlines;
use crate::error::{CallError, ConnectError, TransportError, Unsent};
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
///
/// Either way, a call whose request may have reached the server when the
/// connection was lost fails with that connection's error
/// ([`CallError::ConnectionLost`] for a peer that went away) and is never
/// sent again: at most once. Only calls whose request never left the
/// process are held (`Wait`) or failed as never sent (`FailFast`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outage {
    /// Fail at once, as never sent: [`CallError::Connect`] if the last
    /// attempt to connect failed, else [`CallError::NotSent`].
    FailFast,
    /// Queue for the next connection, until the call's own timeout or
    /// `max_wait`, whichever comes first; then fail as never sent, as under
    /// `FailFast`.
    Wait {
        /// The longest a call waits for a connection.
        max_wait: Duration,
    },
}

/// The shortest backoff between connection attempts: a zero backoff with a
/// connector that fails at once would spin.
pub const MIN_BACKOFF: Duration = Duration::from_millis(1);

/// When and how a reconnecting client dials again.
///
/// After a failed attempt, or after a connection that never proved healthy
/// (no frame received and up for less than [`healthy_after`]), the next
/// attempt waits for the backoff, which doubles up to its maximum. After
/// losing a healthy connection the first attempt is immediate and the
/// backoff starts again from its initial value. So a server that accepts
/// and closes at once (a full server rejecting connections) is dialled at
/// the backoff's pace, never in a loop.
///
/// [`healthy_after`]: ReconnectPolicy::healthy_after
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct ReconnectPolicy {
    initial_backoff: Duration,
    max_backoff: Duration,
    healthy_after: Duration,
    outage: Outage,
}

impl Default for ReconnectPolicy {
    /// Backoff from 50 ms doubling up to 5 s; a connection is healthy after
    /// its first frame or 1 s; calls fail fast while disconnected.
    fn default() -> Self {
        ReconnectPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            healthy_after: Duration::from_secs(1),
            outage: Outage::FailFast,
        }
    }
}

impl ReconnectPolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// The wait before an attempt that follows a failure; it doubles after
    /// every failure up to `max`. Both are at least [`MIN_BACKOFF`].
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial.max(MIN_BACKOFF);
        self.max_backoff = max.max(self.initial_backoff);
        self
    }

    /// How long a connection must stay up, if no frame arrives on it, to
    /// count as healthy (which resets the backoff when it is lost).
    pub fn healthy_after(mut self, uptime: Duration) -> Self {
        self.healthy_after = uptime;
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
    Up {
        conn: Conn<C::Transport>,
        since: Duration,
    },
}

/// Like [`ClientDriver`](crate::ClientDriver), but when the connection fails
/// or closes it fails the calls that may have reached the server, then dials
/// again with exponential backoff (see [`ReconnectPolicy`]). Calls whose
/// request never left the process wait for the next connection under
/// [`Outage::Wait`], and are never sent once they have failed. It completes
/// only when every [`Client`](crate::Client) handle is gone; dropping it
/// fails every pending and later call.
#[must_use = "calls make no progress unless the driver is polled"]
pub struct ReconnectingDriver<C: Connect, Tm: Timer> {
    shared: Arc<Shared>,
    connect: C,
    policy: ReconnectPolicy,
    link: Link<C>,
    sleep: Deadlines<Tm>,
    backoff_timer: Deadlines<Tm>,
    next_backoff: Duration,
    connections: u64,
    wake: Vec<Waker>,
}

// Nothing is pinned in place: the attempt future and the sleeps are boxed.
impl<C: Connect, Tm: Timer> Unpin for ReconnectingDriver<C, Tm> {}

impl<C: Connect, Tm: Timer + Clone> ReconnectingDriver<C, Tm> {
    pub(super) fn new(
        shared: Arc<Shared>,
        mut connect: C,
        policy: ReconnectPolicy,
        timer: Tm,
    ) -> Self {
        let first = Box::pin(connect.connect());
        let mut wake = Vec::new();
        // Calls made before the first attempt resolves wait for it; with
        // `Outage::Wait` they wait as in any outage.
        if let Some(wait) = policy.outage_wait() {
            let now = timer.now();
            let error = CallError::NotSent(Unsent::Disconnected);
            shared
                .state
                .with(|state| state.connection_lost(error, Some(wait), now, &mut wake));
        }
        ReconnectingDriver {
            shared,
            connect,
            policy,
            link: Link::Connecting(first),
            sleep: Deadlines::new(timer.clone()),
            backoff_timer: Deadlines::new(timer),
            next_backoff: policy.initial_backoff,
            connections: 0,
            wake,
        }
    }
}

impl<C: Connect, Tm: Timer> ReconnectingDriver<C, Tm> {
    /// How many connections have been established so far.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Whether a connection is up right now. Once the driver is spawned,
    /// [`Client::connection`](crate::Client::connection) tells the same.
    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// Advances the link: dials, finishes a dial, or runs the connection.
    /// Returns whether the link changed state. A failed attempt always
    /// leaves the link `Down` behind an armed backoff, so this never dials
    /// twice without the timer firing in between.
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
                    let since = self.sleep.now();
                    self.link = Link::Up {
                        conn: Conn::new(transport, &self.shared),
                        since,
                    };
                    self.connections += 1;
                    self.shared.state.with(|state| state.reconnected());
                    self.shared.set_connection(ConnectionState::Connected);
                    true
                }
                Poll::Ready(Err(e)) => {
                    self.lost(CallError::Connect(ConnectError::new(&e)), false);
                    true
                }
            },
            Link::Up { conn, since } => {
                let ended = match conn.read(&self.shared, cx, &mut self.wake) {
                    Poll::Ready(Ok(())) => Some(CallError::ConnectionLost),
                    Poll::Ready(Err(e)) => Some(e.to_call_error()),
                    Poll::Pending => conn
                        .write(&self.shared, &self.sleep, cx, &mut self.wake)
                        .err()
                        .map(|e| e.to_call_error()),
                };
                let Some(error) = ended else {
                    return false;
                };
                let uptime = self.sleep.now().saturating_sub(*since);
                let healthy = conn.frames_read > 0 || uptime >= self.policy.healthy_after;
                self.lost(error, healthy);
                true
            }
        }
    }

    /// The connection (or an attempt) ended with `error`. After a healthy
    /// connection the next attempt is immediate; otherwise it waits for
    /// the backoff, which doubles.
    fn lost(&mut self, error: CallError, healthy: bool) {
        let now = self.sleep.now();
        let outage = self.policy.outage_wait();
        self.shared
            .state
            .with(|state| state.connection_lost(error, outage, now, &mut self.wake));
        // Before the failed calls wake: a caller that sees its error sees
        // the client disconnected.
        let since = match self.shared.connection().0 {
            ConnectionState::Disconnected { since, .. } => since,
            _ => now,
        };
        self.shared
            .set_connection(ConnectionState::Disconnected { since, error });
        wake_all(&mut self.wake);
        let delay = if healthy {
            Duration::ZERO
        } else {
            self.next_backoff
        };
        crate::trace::reconnecting(delay);
        if healthy {
            self.next_backoff = self.policy.initial_backoff;
            self.link = Link::Connecting(Box::pin(self.connect.connect()));
            return;
        }
        let at = self.backoff_timer.now().saturating_add(self.next_backoff);
        self.next_backoff = self
            .next_backoff
            .saturating_mul(2)
            .min(self.policy.max_backoff);
        self.backoff_timer.arm(at);
        self.link = Link::Down;
    }
}

impl<C: Connect, Tm: Timer> Future for ReconnectingDriver<C, Tm> {
    type Output = ();

    /// Invariant as for [`ClientDriver`](crate::ClientDriver), plus: while
    /// down, the backoff sleep was polled and did not fire; while dialling,
    /// the attempt returned `Pending`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            while this.poll_link(cx) {}
            let (writer, pending) = match &mut this.link {
                Link::Up { conn, .. } => {
                    let pending = conn.writer.pending();
                    (Some(&mut conn.writer), pending)
                }
                _ => (None, 0),
            };
            let (step, next) = this.shared.settle(writer, pending, cx, &mut this.wake);
            let writer = match &mut this.link {
                Link::Up { conn, .. } => Some(&mut conn.writer),
                _ => None,
            };
            if this
                .shared
                .poll_deadlines(&mut this.sleep, next, writer, cx, &mut this.wake)
            {
                continue;
            }
            match step {
                Step::Wait => return Poll::Pending,
                Step::Yield => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Step::Again => continue,
                Step::Finish => {
                    if let Link::Up { conn, .. } = &mut this.link {
                        if conn.poll_close(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    this.shared.close(CallError::Closed, &mut this.wake);
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl<C: Connect, Tm: Timer> Drop for ReconnectingDriver<C, Tm> {
    fn drop(&mut self) {
        self.shared.close(CallError::Closed, &mut self.wake);
    }
}
