//! Outlier ejection: an endpoint that fails again and again stops getting
//! calls for a while, then is probed back.
//!
//! # The model
//!
//! An endpoint counts its consecutive failures (a success resets the
//! count). At [`Ejection::consecutive_failures`] it is **ejected** until
//! `now + backoff`, where the backoff starts at [`Ejection::base`] and
//! doubles with each ejection in a row, up to [`Ejection::max`]. When the
//! time passes it is eligible again as a **probe**: one success clears its
//! record; one failure ejects it again, for twice as long.
//!
//! Ejection never empties the balancer: when every ready endpoint is
//! ejected, calls go to ejected ones rather than fail (a cluster-wide fault
//! is not an outlier).

use std::time::Duration;

/// When endpoints are ejected, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive failures that eject an endpoint (at least 1). Default 5.
    pub consecutive_failures: u32,
    /// The first ejection's length. Default 1 s.
    pub base: Duration,
    /// The longest ejection. Default 30 s.
    pub max: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            consecutive_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Ejection {
    /// Never ejects.
    pub fn disabled() -> Self {
        Ejection {
            consecutive_failures: u32::MAX,
            ..Ejection::default()
        }
    }
}

/// One endpoint's failure record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outlier {
    pub(crate) consecutive: u32,
    /// Ejections in a row (not reset by the ejection ending, only by a
    /// success).
    pub(crate) ejections: u32,
    pub(crate) ejected_until: Option<Duration>,
    /// The probe after the last ejection went out.
    probed: bool,
}

impl Outlier {
    /// Whether the endpoint is ejected at `now`.
    pub(crate) fn is_ejected(&self, now: Duration) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Whether an attempt picked at `now` is the probe of an endpoint back
    /// from an ejection (true once per ejection).
    pub(crate) fn start_probe(&mut self, now: Duration) -> bool {
        if self.ejections == 0 || self.probed || self.is_ejected(now) {
            return false;
        }
        self.probed = true;
        true
    }

    pub(crate) fn success(&mut self) {
        *self = Outlier::default();
    }

    /// Records a failure; returns whether it ejected the endpoint.
    pub(crate) fn failure(&mut self, policy: &Ejection, now: Duration) -> bool {
        self.consecutive = self.consecutive.saturating_add(1);
        // A probe (an endpoint back from an ejection) goes out again at once.
        let probing = self.ejections > 0 && !self.is_ejected(now);
        if self.consecutive < policy.consecutive_failures.max(1) && !probing {
            return false;
        }
        if self.is_ejected(now) {
            // Calls that were in flight when it was ejected.
            return false;
        }
        let doublings = self.ejections.min(31);
        let backoff = policy
            .base
            .saturating_mul(1u32 << doublings)
            .min(policy.max.max(policy.base));
        self.ejections = self.ejections.saturating_add(1);
        self.ejected_until = Some(now.saturating_add(backoff));
        self.consecutive = 0;
        self.probed = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy(n: u32) -> Ejection {
        Ejection {
            consecutive_failures: n,
            base: S,
            max: 4 * S,
        }
    }

    #[test]
    fn ejects_at_the_threshold_not_below() {
        let mut o = Outlier::default();
        let p = policy(3);
        assert!(!o.failure(&p, Duration::ZERO));
        assert!(!o.failure(&p, Duration::ZERO));
        assert!(!o.is_ejected(Duration::ZERO));
        assert!(o.failure(&p, Duration::ZERO));
        assert!(o.is_ejected(Duration::ZERO));
        assert!(o.is_ejected(S - Duration::from_nanos(1)));
        assert!(!o.is_ejected(S));
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut o = Outlier::default();
        let p = policy(2);
        assert!(!o.failure(&p, Duration::ZERO));
        o.success();
        assert!(!o.failure(&p, Duration::ZERO));
        assert!(o.failure(&p, Duration::ZERO));
    }

    #[test]
    fn a_failed_probe_is_ejected_again_for_twice_as_long_up_to_the_max() {
        let mut o = Outlier::default();
        let p = policy(2);
        o.failure(&p, Duration::ZERO);
        assert!(o.failure(&p, Duration::ZERO));
        assert_eq!(o.ejected_until, Some(S));
        // Back at 1 s as a probe: one failure ejects for 2 s.
        assert!(o.failure(&p, S));
        assert_eq!(o.ejected_until, Some(3 * S));
        assert!(o.failure(&p, 3 * S));
        assert_eq!(o.ejected_until, Some(7 * S));
        // Capped at the 4 s maximum from here on.
        assert!(o.failure(&p, 7 * S));
        assert_eq!(o.ejected_until, Some(11 * S));
        // A successful probe clears the record.
        o.success();
        assert!(!o.failure(&p, 11 * S));
    }

    #[test]
    fn the_first_pick_after_an_ejection_is_its_one_probe() {
        let mut o = Outlier::default();
        let p = policy(1);
        assert!(!o.start_probe(Duration::ZERO), "never ejected: no probe");
        assert!(o.failure(&p, Duration::ZERO));
        assert!(!o.start_probe(S / 2), "still ejected");
        assert!(o.start_probe(S));
        assert!(!o.start_probe(S), "one probe per ejection");
        // The probe failed: ejected again, and probed again after.
        assert!(o.failure(&p, S));
        assert!(o.start_probe(3 * S));
        o.success();
        assert!(!o.start_probe(3 * S));
    }

    #[test]
    fn failures_while_ejected_do_not_extend_it() {
        let mut o = Outlier::default();
        let p = policy(1);
        assert!(o.failure(&p, Duration::ZERO));
        assert!(!o.failure(&p, Duration::from_millis(500)));
        assert_eq!(o.ejected_until, Some(S));
        assert!(!Outlier::default().failure(&Ejection::disabled(), Duration::ZERO));
    }
}
