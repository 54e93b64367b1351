//! The server side: register an instance, keep its lease alive, register it
//! again after the registry comes back, and deregister on shutdown.
//!
//! # The model
//!
//! A [`Registrar`] is one registry backend seen from a server instance: it
//! can register an endpoint under a lease, renew that lease once, and drop
//! it. It is deliberately small so that every backend (courier's own
//! registry, etcd) implements the same three steps; everything else — when
//! to heartbeat, when to retry, when to register again — lives once in
//! [`Registration::run`], a driver future like courier's others (it never
//! spawns; the caller polls it).
//!
//! The driver:
//!
//! 1. registers the endpoint (retrying with backoff while the registry is
//!    unavailable);
//! 2. renews the lease every [`heartbeat`](Registration::heartbeat)
//!    (a third of the TTL by default, so two heartbeats may be lost before the
//!    lease lapses);
//! 3. when a renewal says the lease is gone ([`RegistrarError::LeaseLost`]:
//!    it expired, or the registry restarted and lost its soft state) or the
//!    registry is unreachable ([`RegistrarError::Unavailable`]), it goes back
//!    to step 1 by itself — the Nacos 2.x "redo": registry loss is not
//!    service loss;
//! 4. a step that takes longer than the [step
//!    timeout](Registration::step_timeout) counts as unavailable;
//! 5. when `stop` completes (graceful shutdown), it deregisters first, waits
//!    [`propagation`](Registration::propagation) so that watchers see the
//!    removal and stop sending new calls, then triggers the server's
//!    [`Shutdown`](courier::Shutdown) if one was given (the server then
//!    drains) and returns. Give courier-net's `ServeBuilder::shutdown` (or
//!    `ServerBuilder::shutdown`) the same `Shutdown`, and trigger only
//!    `stop` yourself: the registry learns first, the server drains after.
//!
//! A [`RegistrarError::Refused`] (bad token, limits, invalid endpoint) is
//! not retried: the driver returns it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use courier::Timer;

use crate::endpoint::Endpoint;

/// The shortest heartbeat period and retry backoff: a zero would make the
/// driver call the registry in a loop.
pub const MIN_WAIT: Duration = Duration::from_millis(1);

/// A registry's lease: what a heartbeat renews and a deregistration drops.
pub type LeaseId = u64;

/// The future a [`Registrar`] method returns.
pub type RegistrarFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, RegistrarError>> + Send + 'a>>;

/// One registry backend, seen from a server instance that registers itself.
///
/// # Contract
///
/// - [`register`](Registrar::register) puts `endpoint` in the registry under
///   a fresh lease of `ttl` and returns the lease. Registering the same
///   `(service, instance)` again replaces the earlier registration.
/// - [`keep_alive`](Registrar::keep_alive) renews the lease once, for
///   another `ttl`; it fails with [`RegistrarError::LeaseLost`] when the
///   registry no longer knows the lease.
/// - [`deregister`](Registrar::deregister) drops the lease and the instance
///   with it; dropping an unknown lease is not an error.
/// - Any method fails with [`RegistrarError::Unavailable`] when the registry
///   cannot be reached; the caller may call it again later (a backend that
///   holds a connection reconnects on a later call).
pub trait Registrar {
    /// Registers `endpoint` under a new lease of `ttl`.
    fn register<'a>(
        &'a mut self,
        endpoint: &'a Endpoint,
        ttl: Duration,
    ) -> RegistrarFuture<'a, LeaseId>;

    /// Renews `lease` for another TTL.
    fn keep_alive(&mut self, lease: LeaseId) -> RegistrarFuture<'_, ()>;

    /// Drops `lease` and the instance registered under it.
    fn deregister(&mut self, lease: LeaseId) -> RegistrarFuture<'_, ()>;
}

impl<R: Registrar + ?Sized> Registrar for &mut R {
    fn register<'a>(
        &'a mut self,
        endpoint: &'a Endpoint,
        ttl: Duration,
    ) -> RegistrarFuture<'a, LeaseId> {
        (**self).register(endpoint, ttl)
    }
    fn keep_alive(&mut self, lease: LeaseId) -> RegistrarFuture<'_, ()> {
        (**self).keep_alive(lease)
    }
    fn deregister(&mut self, lease: LeaseId) -> RegistrarFuture<'_, ()> {
        (**self).deregister(lease)
    }
}

/// Why a [`Registrar`] step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrarError {
    /// The registry could not be reached; try again later.
    Unavailable(String),
    /// The registry does not know the lease (it expired, or the registry
    /// restarted); register again.
    LeaseLost,
    /// The registry refused the request (token, limits, invalid endpoint);
    /// retrying the same request would fail the same way.
    Refused(String),
}

impl fmt::Display for RegistrarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistrarError::Unavailable(why) => write!(f, "registry unavailable: {why}"),
            RegistrarError::LeaseLost => f.write_str("the registry lost the lease"),
            RegistrarError::Refused(why) => write!(f, "the registry refused: {why}"),
        }
    }
}

impl std::error::Error for RegistrarError {}

/// How one instance is kept registered: the endpoint, its lease TTL and the
/// driver's timings. [`run`](Registration::run) is the driver.
#[derive(Clone, Debug)]
pub struct Registration {
    endpoint: Endpoint,
    ttl: Duration,
    heartbeat: Duration,
    retry_min: Duration,
    retry_max: Duration,
    propagation: Duration,
    step_timeout: Duration,
}

impl Registration {
    /// Registers `endpoint` under leases of `ttl`; heartbeats every third of
    /// the TTL, retries from 50 ms doubling up to the TTL, waits 2 heartbeats'
    /// time for propagation on shutdown.
    pub fn new(endpoint: Endpoint, ttl: Duration) -> Self {
        let heartbeat = (ttl / 3).max(MIN_WAIT);
        Registration {
            endpoint,
            ttl,
            heartbeat,
            retry_min: Duration::from_millis(50).min(ttl).max(MIN_WAIT),
            retry_max: ttl.max(Duration::from_millis(50)),
            propagation: heartbeat.saturating_mul(2),
            step_timeout: ttl,
        }
    }

    /// Renews the lease every `every` (default: a third of the TTL; at
    /// least [`MIN_WAIT`]).
    #[must_use]
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(MIN_WAIT);
        self
    }

    /// Retries an unavailable registry after `min` (at least [`MIN_WAIT`]),
    /// doubling up to `max`.
    #[must_use]
    pub fn retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min.max(MIN_WAIT);
        self.retry_max = max.max(self.retry_min);
        self
    }

    /// On shutdown, waits `wait` after deregistering before the server
    /// drains, so that watchers see the removal first.
    #[must_use]
    pub fn propagation(mut self, wait: Duration) -> Self {
        self.propagation = wait;
        self
    }

    /// Gives up on a registrar step (register, heartbeat, deregister) after
    /// `limit` (default: the TTL), as if the registry were unavailable: a
    /// registry that accepts a connection but never answers cannot stall
    /// the driver, nor a shutdown.
    #[must_use]
    pub fn step_timeout(mut self, limit: Duration) -> Self {
        self.step_timeout = limit;
        self
    }

    /// The endpoint this registration keeps registered.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The driver: keeps the endpoint registered until `stop` completes, then
    /// deregisters, waits for propagation, triggers `server` (if any) and
    /// returns `Ok`. Returns the error if the registry refuses the
    /// registration (see the [module docs](self)).
    ///
    /// Invariant: the driver is always awaiting exactly one of `stop`, one
    /// registrar step or one timer sleep (each registers its waker), so it
    /// never stalls while it could progress.
    pub async fn run<R, T, S>(
        self,
        mut registrar: R,
        timer: T,
        stop: S,
        server: Option<courier::Shutdown>,
    ) -> Result<(), RegistrarError>
    where
        R: Registrar,
        T: Timer,
        S: Future,
    {
        let mut stop = std::pin::pin!(stop);
        let mut lease: Option<LeaseId> = None;
        let mut backoff = self.retry_min;
        loop {
            let current = lease;
            let started = std::sync::atomic::AtomicBool::new(false);
            let step = async {
                started.store(true, std::sync::atomic::Ordering::Relaxed);
                match current {
                    None => {
                        let call = registrar.register(&self.endpoint, self.ttl);
                        match within(&timer, self.step_timeout, call).await {
                            Ok(id) => Step::Registered(id),
                            Err(e) => Step::Failed(e),
                        }
                    }
                    Some(id) => {
                        timer
                            .sleep_until(timer.now().saturating_add(self.heartbeat))
                            .await;
                        match within(&timer, self.step_timeout, registrar.keep_alive(id)).await {
                            Ok(()) => Step::Renewed,
                            Err(e) => Step::Failed(e),
                        }
                    }
                }
            };
            let mut step = std::pin::pin!(step);
            let outcome = race(stop.as_mut(), step.as_mut()).await;
            match outcome {
                None => {
                    if lease.is_none() && started.load(std::sync::atomic::Ordering::Relaxed) {
                        // A registration may be in flight: let it finish (for
                        // at most a TTL) so that its lease is revoked below
                        // rather than left registered until it expires.
                        let bound = timer.sleep_until(timer.now().saturating_add(self.ttl));
                        let finished = race(std::pin::pin!(bound), step.as_mut()).await;
                        if let Some(Step::Registered(id)) = finished {
                            lease = Some(id);
                        }
                    }
                    break;
                }
                Some(Step::Registered(id)) => {
                    lease = Some(id);
                    backoff = self.retry_min;
                }
                Some(Step::Renewed) => backoff = self.retry_min,
                Some(Step::Failed(RegistrarError::Refused(why))) => {
                    return Err(RegistrarError::Refused(why))
                }
                Some(Step::Failed(error)) => {
                    // Lost or unreachable: register again, at once for a
                    // lost lease (the registry is up), else after a backoff.
                    lease = None;
                    let wait = if error == RegistrarError::LeaseLost {
                        Duration::ZERO
                    } else {
                        let wait = backoff;
                        backoff = backoff.saturating_mul(2).min(self.retry_max);
                        wait
                    };
                    let sleep = timer.sleep_until(timer.now().saturating_add(wait));
                    if race(stop.as_mut(), sleep).await.is_none() {
                        break;
                    }
                }
            }
        }
        if let Some(id) = lease {
            // Best effort: an unreachable registry drops the lease at its TTL.
            let _ = within(&timer, self.step_timeout, registrar.deregister(id)).await;
            timer
                .sleep_until(timer.now().saturating_add(self.propagation))
                .await;
        }
        if let Some(server) = server {
            server.trigger();
        }
        Ok(())
    }
}

/// `work`, or `Unavailable` if it takes longer than `limit`.
async fn within<T, W, X>(timer: &T, limit: Duration, work: W) -> Result<X, RegistrarError>
where
    T: Timer,
    W: Future<Output = Result<X, RegistrarError>>,
{
    let sleep = std::pin::pin!(timer.sleep_until(timer.now().saturating_add(limit)));
    race(sleep, work).await.unwrap_or_else(|| {
        Err(RegistrarError::Unavailable(
            "no answer within the step timeout".into(),
        ))
    })
}

enum Step {
    Registered(LeaseId),
    Renewed,
    Failed(RegistrarError),
}

/// Polls `stop` first, then `work`: `None` once `stop` completes, else
/// `work`'s output.
async fn race<S: Future + ?Sized, W: Future>(stop: Pin<&mut S>, work: W) -> Option<W::Output> {
    let mut stop = stop;
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(move |cx| {
        if stop.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_periods_are_raised_to_the_minimum() {
        let endpoint = Endpoint::new("kv", "a", crate::Address::Unix("/s".into()));
        let r = Registration::new(endpoint, Duration::ZERO).retry(Duration::ZERO, Duration::ZERO);
        assert_eq!(r.heartbeat, MIN_WAIT);
        assert_eq!(r.retry_min, MIN_WAIT);
        assert_eq!(r.retry_max, MIN_WAIT);
        let r = r.heartbeat(Duration::ZERO);
        assert_eq!(r.heartbeat, MIN_WAIT);
    }
}
