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
//! A call's round trip runs from its pick to the start of the balancer
//! driver's poll that delivered its reply (the connections' drivers run
//! inside that poll), so that the end of a call reads no clock. The calls
//! picked between two polls of the driver (one turn) are written together
//! at its next poll; those without a deadline share the clock reading of
//! the turn's first call as their start.
//!
//! The *load* a strategy compares is `estimate × (in_flight + 1)`: latency
//! weighted by how much work is already queued there (Finagle's and
//! tower's model). Times are durations on the balancer's
//! [`Timer`](courier::Timer) clock, so it runs on any executor and a test
//! drives it with a manual clock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The default decay period `τ`: 10 s.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// The estimate of an endpoint no call has finished on yet: 1 ms (low, so
/// that a new endpoint is tried soon).
pub const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// One connection's load, shared by the balancer's table and the calls on
/// it: a call's end updates it without the table's lock.
#[derive(Debug)]
pub(crate) struct Load {
    /// Unary calls in flight.
    pub(crate) in_flight: AtomicU32,
    pub(crate) latency: PeakEwma,
    /// The endpoint has a failure record (failures since its last success,
    /// or an ejection behind it): a success clears it under the table's
    /// lock. Without one, a success touches only this load.
    pub(crate) failing: AtomicBool,
}

impl Load {
    pub(crate) fn new(latency: PeakEwma, failing: bool) -> Self {
        Load {
            in_flight: AtomicU32::new(0),
            latency,
            failing: AtomicBool::new(failing),
        }
    }

    #[inline]
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A call started on this connection.
    #[inline]
    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A call on this connection ended (never below zero).
    #[inline]
    pub(crate) fn ended(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Whether a success must clear a failure record under the lock.
    #[inline]
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

impl Clone for Load {
    /// A snapshot: a load of its own with the same values.
    fn clone(&self) -> Self {
        Load {
            in_flight: AtomicU32::new(self.in_flight()),
            latency: self.latency.clone(),
            failing: AtomicBool::new(self.is_failing()),
        }
    }
}

/// A peak-EWMA estimate of round-trip time, in nanoseconds, updated
/// through a shared reference (atomics).
///
/// The estimate and the time of its last update are two atomics:
/// concurrent updates each land (a compare-and-swap on the estimate), and
/// a read racing an update may decay the new estimate from the old time,
/// off by the few nanoseconds between them.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    /// The estimate, as `f64` bits.
    estimate_ns: AtomicU64,
    /// The clock at the last update, in nanoseconds.
    updated_ns: AtomicU64,
    /// `1 / τ`, per nanosecond.
    per_decay_ns: f64,
}

impl PeakEwma {
    pub(crate) fn new(initial: Duration, decay: Duration, now: Duration) -> Self {
        PeakEwma {
            estimate_ns: AtomicU64::new(nanos(initial).to_bits()),
            updated_ns: AtomicU64::new(whole_nanos(now)),
            per_decay_ns: 1.0 / nanos(decay).max(1.0),
        }
    }

    /// The weight the old estimate keeps after `now - updated`:
    /// `e^(-Δt/τ)`. Under load `Δt/τ` is tiny and a pick reads this twice
    /// per call, so below 1/4096 it is `1 - x` (error under `x²/2` <
    /// 3·10⁻⁸), below 1/16 the Taylor polynomial `1 - x + x²/2 - x³/6`
    /// (error under `x⁴/24` < 2·10⁻⁶): a multiplication or a few instead of
    /// a call to `exp`.
    #[cfg(test)]
    fn keep(&self, now: Duration) -> f64 {
        self.keep_at(whole_nanos(now), self.updated_ns.load(Ordering::Relaxed))
    }

    #[inline]
    fn keep_at(&self, now_ns: u64, updated_ns: u64) -> f64 {
        if now_ns <= updated_ns {
            // Nothing elapsed (a pick in the turn of the last update).
            return 1.0;
        }
        let x = as_f64(now_ns - updated_ns) * self.per_decay_ns;
        if x < 1.0 / 4096.0 {
            1.0 - x
        } else if x < 1.0 / 16.0 {
            1.0 - x * (1.0 - x * (0.5 - x / 6.0))
        } else {
            (-x).exp()
        }
    }

    /// Folds in one call's round-trip time.
    pub(crate) fn observe(&self, rtt: Duration, now: Duration) {
        self.observe_ns(whole_nanos(rtt), whole_nanos(now));
    }

    /// [`observe`](Self::observe) in nanoseconds on the clock.
    #[inline]
    pub(crate) fn observe_ns(&self, rtt_ns: u64, now_ns: u64) {
        let rtt = as_f64(rtt_ns);
        let updated_ns = self.updated_ns.load(Ordering::Relaxed);
        let mut bits = self.estimate_ns.load(Ordering::Relaxed);
        // Decayed only below the estimate: a peak replaces it.
        let mut keep = None;
        loop {
            let estimate = f64::from_bits(bits);
            let next = if rtt > estimate {
                rtt
            } else {
                let keep = *keep.get_or_insert_with(|| self.keep_at(now_ns, updated_ns));
                estimate * keep + rtt * (1.0 - keep)
            };
            match self.estimate_ns.compare_exchange_weak(
                bits,
                next.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => bits = now,
            }
        }
        if now_ns > updated_ns {
            self.updated_ns.fetch_max(now_ns, Ordering::Relaxed);
        }
    }

    /// The estimate at `now`, decayed since the last update.
    pub(crate) fn estimate(&self, now: Duration) -> f64 {
        self.estimate_at(whole_nanos(now))
    }

    /// [`estimate`](Self::estimate) at `now_ns` nanoseconds on the clock.
    #[inline]
    pub(crate) fn estimate_at(&self, now_ns: u64) -> f64 {
        let updated_ns = self.updated_ns.load(Ordering::Relaxed);
        f64::from_bits(self.estimate_ns.load(Ordering::Relaxed)) * self.keep_at(now_ns, updated_ns)
    }
}

impl Clone for PeakEwma {
    /// A snapshot of the estimate.
    fn clone(&self) -> Self {
        PeakEwma {
            estimate_ns: AtomicU64::new(self.estimate_ns.load(Ordering::Relaxed)),
            updated_ns: AtomicU64::new(self.updated_ns.load(Ordering::Relaxed)),
            per_decay_ns: self.per_decay_ns,
        }
    }
}

/// `d` in nanoseconds, without the slow `u128` to `f64` conversion of
/// `as_nanos() as f64`.
fn nanos(d: Duration) -> f64 {
    d.as_secs() as f64 * 1e9 + f64::from(d.subsec_nanos())
}

/// `n` as `f64` through `i64` (one instruction; `u64` to `f64` is a
/// branchy sequence on x86-64). Saturates at 292 years.
#[inline]
fn as_f64(n: u64) -> f64 {
    i64::try_from(n).unwrap_or(i64::MAX) as f64
}

/// `d` in whole nanoseconds, saturating (at 584 years).
pub(crate) fn whole_nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_slow_call_raises_the_estimate_at_once() {
        let ewma = PeakEwma::new(MS, DEFAULT_DECAY, Duration::ZERO);
        ewma.observe(50 * MS, Duration::ZERO);
        assert_eq!(ewma.estimate(Duration::ZERO), (50 * MS).as_nanos() as f64);
    }

    #[test]
    fn fast_calls_lower_it_gradually() {
        let ewma = PeakEwma::new(MS, Duration::from_secs(1), Duration::ZERO);
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
        for ms in [
            0u64, 1, 3, 4, 5, 100, 999, 1000, 1001, 5000, 16_000, 160_000,
        ] {
            let x = ms as f64 / 16_000.0;
            let keep = ewma.keep(Duration::from_millis(ms));
            assert!((keep - (-x).exp()).abs() < 2e-6, "{ms} ms: {keep}");
        }
    }

    #[test]
    fn an_idle_estimate_decays_toward_zero() {
        let ewma = PeakEwma::new(MS, Duration::from_secs(1), Duration::ZERO);
        ewma.observe(100 * MS, Duration::ZERO);
        let later = ewma.estimate(Duration::from_secs(5));
        assert!(later < 100e6 * 0.01, "{later}");
    }
}
