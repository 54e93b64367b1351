//! Peak-EWMA latency: an endpoint's recent round-trip time, quick to rise
//! and slow to fall.
//!
//! # The model
//!
//! Each completed call's round-trip time `rtt` updates the estimate: if it
//! is above the estimate, the estimate jumps to it (the *peak*); otherwise
//! the estimate moves toward it with weight `1 - e^(-Δt/τ)`, where `Δt` is
//! the time since the last update and `τ` the decay period. A slow
//! endpoint is therefore penalised at once and forgiven gradually. Read
//! between updates, the estimate decays toward zero with the same weight,
//! so an endpoint that got no traffic for a while (because it looked slow)
//! is eventually tried again.
//!
//! The *load* a strategy compares is `estimate × (in_flight + 1)`: latency
//! weighted by how much work is already queued there (Finagle's and
//! tower's model). Times are durations on the balancer's
//! [`Timer`](courier::Timer) clock, so it runs on any executor and a test
//! drives it with a manual clock.

use std::time::Duration;

/// The default decay period `τ`: 10 s.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// The estimate of an endpoint no call has finished on yet: 1 ms (low, so
/// that a new endpoint is tried soon).
pub const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// A peak-EWMA estimate of round-trip time, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeakEwma {
    estimate_ns: f64,
    updated: Duration,
    decay_ns: f64,
}

impl PeakEwma {
    pub(crate) fn new(initial: Duration, decay: Duration, now: Duration) -> Self {
        PeakEwma {
            estimate_ns: nanos(initial),
            updated: now,
            decay_ns: nanos(decay).max(1.0),
        }
    }

    /// The weight the old estimate keeps after `now - updated`:
    /// `e^(-Δt/τ)`. Under load `Δt/τ` is tiny and a pick reads this twice
    /// per call, so below 1/16 it is the Taylor polynomial `1 - x + x²/2 -
    /// x³/6` (error under `x⁴/24` < 2·10⁻⁶), a few multiplications instead
    /// of a call to `exp`.
    fn keep(&self, now: Duration) -> f64 {
        let x = nanos(now.saturating_sub(self.updated)) / self.decay_ns;
        if x < 1.0 / 16.0 {
            1.0 - x * (1.0 - x * (0.5 - x / 6.0))
        } else {
            (-x).exp()
        }
    }

    /// Folds in one call's round-trip time.
    pub(crate) fn observe(&mut self, rtt: Duration, now: Duration) {
        let rtt = nanos(rtt);
        if rtt > self.estimate_ns {
            self.estimate_ns = rtt;
        } else {
            let keep = self.keep(now);
            self.estimate_ns = self.estimate_ns * keep + rtt * (1.0 - keep);
        }
        self.updated = self.updated.max(now);
    }

    /// The estimate at `now`, decayed since the last update.
    pub(crate) fn estimate(&self, now: Duration) -> f64 {
        self.estimate_ns * self.keep(now)
    }
}

/// `d` in nanoseconds, without the slow `u128` to `f64` conversion of
/// `as_nanos() as f64`.
fn nanos(d: Duration) -> f64 {
    d.as_secs() as f64 * 1e9 + f64::from(d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_slow_call_raises_the_estimate_at_once() {
        let mut ewma = PeakEwma::new(MS, DEFAULT_DECAY, Duration::ZERO);
        ewma.observe(50 * MS, Duration::ZERO);
        assert_eq!(ewma.estimate(Duration::ZERO), (50 * MS).as_nanos() as f64);
    }

    #[test]
    fn fast_calls_lower_it_gradually() {
        let mut ewma = PeakEwma::new(MS, Duration::from_secs(1), Duration::ZERO);
        ewma.observe(100 * MS, Duration::ZERO);
        // One fast call a decay period later keeps e^-1 of the old value.
        let at = Duration::from_secs(1);
        ewma.observe(MS, at);
        let expected = 100e6 * (-1f64).exp() + 1e6 * (1.0 - (-1f64).exp());
        assert!((ewma.estimate(at) - expected).abs() < 1.0);
    }

    #[test]
    fn the_decay_is_e_to_the_minus_elapsed_over_tau_on_both_sides_of_the_cut() {
        let ewma = PeakEwma::new(MS, Duration::from_secs(16), Duration::ZERO);
        for ms in [0u64, 1, 100, 999, 1000, 1001, 5000, 16_000, 160_000] {
            let x = ms as f64 / 16_000.0;
            let keep = ewma.keep(Duration::from_millis(ms));
            assert!((keep - (-x).exp()).abs() < 2e-6, "{ms} ms: {keep}");
        }
    }

    #[test]
    fn an_idle_estimate_decays_toward_zero() {
        let mut ewma = PeakEwma::new(MS, Duration::from_secs(1), Duration::ZERO);
        ewma.observe(100 * MS, Duration::ZERO);
        let later = ewma.estimate(Duration::from_secs(5));
        assert!(later < 100e6 * 0.01, "{later}");
    }
}
