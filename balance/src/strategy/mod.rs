//! How a call's endpoint is chosen: one small trait, four strategies.
//!
//! # The contract
//!
//! The balancer keeps its endpoints in a slice of [`Candidate`]s, in an
//! order that changes only when the set does; then it calls
//! [`Strategy::update`]. For each call over two or more endpoints it
//! calls [`Strategy::pick`] (a single endpoint is the only choice, and is
//! taken without asking), which returns the index of an
//! [available](Candidate::is_available) candidate, or `None` when none
//! is. Availability is decided by the balancer: the
//! endpoint is connected, its weight is not 0, and it is not ejected
//! (unless every connected endpoint is). A pick that names an unavailable
//! or unknown index is replaced by the first available candidate.
//!
//! `pick` runs under the balancer's lock on every call: it should be
//! short, allocate nothing and call no user code. Between picks, the
//! balancer counts each pick's call in flight on the chosen candidate
//! until the call ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::load::{whole_nanos, Load, PeakEwma};
use crate::rng::Rng;

pub mod consistent;
pub mod p2c;
pub mod round_robin;
pub mod weighted;

pub use consistent::{hash_key, ConsistentHash, DEFAULT_VNODES, MAX_VNODES};
pub use p2c::PowerOfTwoChoices;
pub use round_robin::RoundRobin;
pub use weighted::WeightedRandom;

/// Chooses an endpoint for each call; see the [module docs](self).
pub trait Strategy: Send + 'static {
    /// The set of endpoints changed (joined, left, or re-weighted);
    /// `endpoints` is the new index space.
    fn update(&mut self, endpoints: &[Candidate]) {
        let _ = endpoints;
    }

    /// The index of an available endpoint for one call, or `None` when no
    /// endpoint is available.
    fn pick(&mut self, endpoints: &[Candidate], pick: &mut Pick<'_>) -> Option<usize>;
}

impl<S: Strategy + ?Sized> Strategy for Box<S> {
    fn update(&mut self, endpoints: &[Candidate]) {
        (**self).update(endpoints)
    }

    fn pick(&mut self, endpoints: &[Candidate], pick: &mut Pick<'_>) -> Option<usize> {
        (**self).pick(endpoints, pick)
    }
}

/// What one pick knows besides the endpoints.
#[derive(Debug)]
pub struct Pick<'a> {
    /// The balancer's clock now.
    pub now: Duration,
    /// The call's routing key, if the caller gave one (see
    /// [`Balanced::with_hash_key`](crate::Balanced::with_hash_key)).
    pub key: Option<u64>,
    /// The balancer's random numbers (seeded, so tests replay).
    pub rng: &'a mut Rng,
    /// Which turn of the balancer's driver this pick is in: it counts the
    /// driver's polls, so picks with the same turn are written to their
    /// connections together, by the driver's next poll (see
    /// [`PowerOfTwoChoices`'s batches](PowerOfTwoChoices#batches)).
    pub turn: u64,
}

/// One endpoint as a strategy sees it.
///
/// Its calls in flight and latency estimate are its connection's
/// [load](crate::load), which calls update as they end without the
/// balancer's lock; a clone is a snapshot with a load of its own.
#[derive(Debug)]
pub struct Candidate {
    pub(crate) instance: String,
    pub(crate) weight: u32,
    pub(crate) load: Arc<Load>,
    pub(crate) available: bool,
}

impl Clone for Candidate {
    fn clone(&self) -> Self {
        Candidate {
            instance: self.instance.clone(),
            weight: self.weight,
            load: Arc::new(Load::clone(&self.load)),
            available: self.available,
        }
    }
}

impl Candidate {
    /// A candidate that no call has used yet, available, with the default
    /// latency estimate; for testing strategies.
    pub fn new(instance: impl Into<String>, weight: u32) -> Self {
        Candidate {
            instance: instance.into(),
            weight,
            load: Arc::new(Load::new(
                PeakEwma::new(
                    crate::load::DEFAULT_RTT,
                    crate::load::DEFAULT_DECAY,
                    Duration::ZERO,
                ),
                false,
            )),
            available: true,
        }
    }

    /// The instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Its weight (0 is never available).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Calls it has in flight.
    pub fn in_flight(&self) -> u32 {
        self.load.in_flight()
    }

    /// Whether a call may go to it now.
    pub fn is_available(&self) -> bool {
        self.available
    }

    /// Its peak-EWMA round-trip estimate at `now`, in nanoseconds (see
    /// [`load`](crate::load)).
    pub fn latency_ns(&self, now: Duration) -> f64 {
        self.load.latency.estimate(now)
    }

    /// Its load at `now`: latency estimate × (in flight + 1).
    pub fn load(&self, now: Duration) -> f64 {
        self.load_at(whole_nanos(now))
    }

    /// [`load`](Self::load) at `now_ns` nanoseconds on the clock (a pick
    /// comparing several converts its clock once).
    #[inline]
    pub(crate) fn load_at(&self, now_ns: u64) -> f64 {
        self.load.latency.estimate_at(now_ns) * (f64::from(self.in_flight()) + 1.0)
    }

    /// Sets its calls in flight; for testing strategies.
    pub fn set_in_flight(&mut self, n: u32) {
        self.load.in_flight.store(n, Ordering::Relaxed);
    }

    /// Sets whether it is available; for testing strategies.
    pub fn set_available(&mut self, available: bool) {
        self.available = available;
    }

    /// Folds one call's round-trip time into its estimate; for testing
    /// strategies (the balancer does it as calls finish).
    pub fn observe(&mut self, rtt: Duration, now: Duration) {
        self.load.latency.observe(rtt, now);
    }
}

/// The `k`-th available candidate (0-based), by a scan.
pub(crate) fn nth_available(endpoints: &[Candidate], k: usize) -> Option<usize> {
    endpoints
        .iter()
        .enumerate()
        .filter(|(_, c)| c.available)
        .nth(k)
        .map(|(i, _)| i)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn candidates(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate::new(format!("i-{i}"), 1))
            .collect()
    }

    pub(crate) fn pick_n<S: Strategy>(
        strategy: &mut S,
        endpoints: &[Candidate],
        n: usize,
        seed: u64,
    ) -> Vec<usize> {
        let mut rng = Rng::seeded(seed);
        let mut counts = vec![0; endpoints.len()];
        for turn in 0..n as u64 {
            // Each pick in a turn of its own, as calls made one at a time.
            let mut pick = Pick {
                now: Duration::ZERO,
                key: None,
                rng: &mut rng,
                turn,
            };
            let i = strategy.pick(endpoints, &mut pick).expect("a pick");
            assert!(endpoints[i].available);
            counts[i] += 1;
        }
        counts
    }
}
