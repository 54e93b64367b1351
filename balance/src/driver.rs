//! The future that follows discovery and keeps the connections: it dials
//! endpoints, polls their client drivers inside itself (it spawns nothing),
//! redials the ones that went down, and drains the ones that left.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use courier::{Client, Timer};
use courier_registry::{Discover, Endpoint};
use futures_util::future::{join, ready, Join, Ready};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::balanced::Inner;
use crate::state::Entry;

/// Dials one endpoint: a client for calls and the driver future that runs
/// its connection (courier-tcp's and courier-unix's `connect` return the
/// pair). Any `FnMut(&Endpoint) -> impl Future<Output = Result<(Client,
/// Driver), E>>` is one.
pub trait Connector {
    /// The connection's driver; it completes when the connection ends.
    type Driver: Future;
    /// Why a dial failed.
    type Error: fmt::Display;
    /// A dial in progress.
    type Dial: Future<Output = Result<(Client, Self::Driver), Self::Error>>;

    /// Starts dialling `endpoint`.
    fn connect(&mut self, endpoint: &Endpoint) -> Self::Dial;
}

impl<F, Fut, Drv, E> Connector for F
where
    F: FnMut(&Endpoint) -> Fut,
    Fut: Future<Output = Result<(Client, Drv), E>>,
    Drv: Future,
    E: fmt::Display,
{
    type Driver = Drv;
    type Error = E;
    type Dial = Fut;

    fn connect(&mut self, endpoint: &Endpoint) -> Fut {
        self(endpoint)
    }
}

type Tagged<F> = Join<Ready<u64>, F>;

/// Logs and drops entries that left the table (each connection closes
/// once its calls in flight are done). Called outside the lock.
fn log_removed(removed: Vec<Entry>, why: &str) {
    for entry in removed {
        tracing::info!(
            target: "courier_balance",
            instance = entry.endpoint.instance.as_str(),
            why,
            "endpoint removed"
        );
    }
}

/// Runs a [`Balanced`](crate::Balanced) channel: poll it (spawn it, or
/// join it with other work) for as long as the channel is used.
///
/// It completes once every `Balanced` handle is dropped and every
/// connection has finished its calls in flight. Dropping it early closes
/// every connection: calls in flight fail, waiting calls fail with
/// [`NotSent(NoEndpoint)`](courier::Unsent::NoEndpoint).
#[must_use = "the balancer does nothing unless its driver is polled"]
pub struct BalancedDriver<D, C: Connector, Tm: Timer> {
    inner: Arc<Inner<Tm>>,
    discover: Option<Pin<Box<D>>>,
    connector: C,
    timer: Tm,
    dialing: FuturesUnordered<Tagged<C::Dial>>,
    running: FuturesUnordered<Tagged<C::Driver>>,
    sleep: Option<(Duration, Pin<Box<Tm::Sleep>>)>,
    shut: bool,
}

impl<D: Discover, C: Connector, Tm: Timer> BalancedDriver<D, C, Tm> {
    pub(crate) fn new(inner: Arc<Inner<Tm>>, discover: D, connector: C, timer: Tm) -> Self {
        BalancedDriver {
            inner,
            discover: Some(Box::pin(discover)),
            connector,
            timer,
            dialing: FuturesUnordered::new(),
            running: FuturesUnordered::new(),
            sleep: None,
            shut: false,
        }
    }

    fn dial(&mut self, endpoints: Vec<(u64, Endpoint)>) -> bool {
        let any = !endpoints.is_empty();
        for (id, endpoint) in endpoints {
            let dial = self.connector.connect(&endpoint);
            self.dialing.push(join(ready(id), dial));
        }
        any
    }

    /// Follows discovery until it has nothing ready.
    fn poll_discovery(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Some(discover) = self.discover.as_mut() {
            match discover.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    let now = self.timer.now();
                    let (dial, removed) = self.inner.with(|s| s.apply(&event, now));
                    // Outside the lock: each closes once its calls are done.
                    log_removed(removed, "left discovery");
                    for (_, endpoint) in &dial {
                        tracing::info!(
                            target: "courier_balance",
                            instance = endpoint.instance.as_str(),
                            address = %endpoint.address,
                            "endpoint added"
                        );
                    }
                    self.dial(dial);
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(
                        target: "courier_balance",
                        %error,
                        "discovery failed; keeping the known endpoints"
                    );
                    self.inner.with(|s| s.discovery_error = Some(error));
                }
                Poll::Ready(None) => {
                    self.discover = None;
                    self.inner.with(|s| s.discovery_ended());
                }
                Poll::Pending => break,
            }
            progress = true;
        }
        progress
    }

    /// Takes finished dials and ended connections.
    fn poll_connections(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some((id, dialed))) = self.dialing.poll_next_unpin(cx) {
            progress = true;
            let now = self.timer.now();
            match dialed {
                Ok((client, driver)) => {
                    let refused = self.inner.with(|s| s.connected(id, client, now));
                    // Dropped outside the lock: a client that left closes.
                    drop(refused);
                    self.running.push(join(ready(id), driver));
                }
                Err(error) => {
                    tracing::info!(target: "courier_balance", id, %error, "dial failed");
                    self.inner.with(|s| s.down(id, now, true));
                }
            }
        }
        while let Poll::Ready(Some((id, _))) = self.running.poll_next_unpin(cx) {
            progress = true;
            let now = self.timer.now();
            self.inner.with(|s| s.down(id, now, false));
        }
        progress
    }

    /// Redials endpoints whose backoff passed; arms the timer for the next.
    /// Looks at the table only when a connection `changed` or the timer
    /// fired (not on every wake-up of a connection's driver).
    fn poll_redial(&mut self, cx: &mut Context<'_>, changed: bool) -> bool {
        if !changed {
            let fired = match &mut self.sleep {
                None => false,
                Some((_, sleep)) => sleep.as_mut().poll(cx).is_ready(),
            };
            if !fired {
                return false;
            }
        }
        let now = self.timer.now();
        let (due, expired, next) = self
            .inner
            .with(|s| (s.due(now), s.expire_lingering(now), s.next_wake()));
        let expired = !expired.is_empty() && {
            log_removed(expired, "its resync grace ended");
            true
        };
        if self.dial(due) || expired {
            return true;
        }
        let Some(at) = next else {
            self.sleep = None;
            return false;
        };
        match &mut self.sleep {
            Some((armed, _)) if *armed == at => {}
            Some((armed, sleep)) => {
                self.timer.reset(sleep.as_mut(), at);
                *armed = at;
            }
            None => self.sleep = Some((at, Box::pin(self.timer.sleep_until(at)))),
        }
        match &mut self.sleep {
            Some((_, sleep)) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    /// Every handle is gone: drop the connections (each closes after its
    /// calls in flight) and stop following discovery.
    fn shut_down(&mut self) {
        self.shut = true;
        self.discover = None;
        self.dialing = FuturesUnordered::new();
        self.sleep = None;
        let (removed, waiters) = self.inner.with(|s| (s.close(), s.take_waiters()));
        drop(removed);
        waiters.into_iter().for_each(|w| w.wake());
    }
}

impl<D: Discover, C: Connector, Tm: Timer> Future for BalancedDriver<D, C, Tm> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Invariant: `Pending` only after discovery, the dials, the
        // connections and the redial timer all returned `Pending` in one
        // turn with nothing done, so each has a waker registered; `driver`
        // holds our waker for the last handle's drop.
        loop {
            this.inner.polled(this.timer.now());
            // Registered before the count is read: a last drop after the
            // read wakes this poll's waker.
            this.inner.driver.register(cx.waker());
            let handles = this.inner.handles.load(Ordering::Acquire);
            if handles == 0 && !this.shut {
                this.shut_down();
            }
            if this.shut {
                while let Poll::Ready(Some(_)) = this.running.poll_next_unpin(cx) {}
                return if this.running.is_empty() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
            let mut progress = this.poll_discovery(cx);
            progress |= this.poll_connections(cx);
            progress |= this.poll_redial(cx, progress);
            if !progress {
                return Poll::Pending;
            }
            // Calls waiting for an endpoint look again.
            let waiters = this.inner.with(|s| s.take_waiters());
            waiters.into_iter().for_each(|w| w.wake());
        }
    }
}

// Nothing is pinned through the driver: discovery and the sleep are
// boxed, the dials and connections live in `FuturesUnordered`s.
impl<D, C: Connector, Tm: Timer> Unpin for BalancedDriver<D, C, Tm> {}

impl<D, C: Connector, Tm: Timer> Drop for BalancedDriver<D, C, Tm> {
    fn drop(&mut self) {
        let (removed, waiters) = self.inner.with(|s| (s.close(), s.take_waiters()));
        drop(removed);
        waiters.into_iter().for_each(|w| w.wake());
    }
}
