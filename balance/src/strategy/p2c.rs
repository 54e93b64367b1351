//! Power of two choices over peak-EWMA load.

use super::{nth_available, Candidate, Pick, Strategy};

/// Draws two distinct available endpoints at random and takes the one with
/// the lower [load](Candidate::load) (latency estimate × (in flight + 1)).
///
/// Two random choices avoid both the herd that "always the least loaded"
/// sends to one endpoint between updates, and the imbalance of one random
/// choice; peak EWMA makes a slow endpoint lose at once. A pick is O(1)
/// when the two drawn endpoints are available, O(n) otherwise.
#[derive(Clone, Debug, Default)]
pub struct PowerOfTwoChoices;

impl PowerOfTwoChoices {
    /// The strategy.
    pub fn new() -> Self {
        PowerOfTwoChoices
    }
}

impl Strategy for PowerOfTwoChoices {
    fn pick(&mut self, endpoints: &[Candidate], pick: &mut Pick<'_>) -> Option<usize> {
        let n = endpoints.len();
        if n < 2 {
            return nth_available(endpoints, 0);
        }
        let a = pick.rng.below(n);
        let mut b = pick.rng.below(n - 1);
        if b >= a {
            b += 1;
        }
        let (a, b) = match (endpoints.get(a), endpoints.get(b)) {
            (Some(x), Some(y)) if x.available && y.available => (a, b),
            _ => {
                // Some endpoint is unavailable: draw among the available.
                let m = endpoints.iter().filter(|c| c.available).count();
                if m < 2 {
                    return nth_available(endpoints, 0);
                }
                let x = pick.rng.below(m);
                let mut y = pick.rng.below(m - 1);
                if y >= x {
                    y += 1;
                }
                (nth_available(endpoints, x)?, nth_available(endpoints, y)?)
            }
        };
        let load = |i: usize| endpoints.get(i).map_or(f64::INFINITY, |c| c.load(pick.now));
        Some(if load(b) < load(a) { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{candidates, pick_n};
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn prefers_the_fast_endpoint_under_skewed_latency() {
        let mut endpoints = candidates(3);
        endpoints[0].observe(50 * MS, Duration::ZERO);
        endpoints[1].observe(2 * MS, Duration::ZERO);
        endpoints[2].observe(2 * MS, Duration::ZERO);
        let counts = pick_n(&mut PowerOfTwoChoices::new(), &endpoints, 3000, 3);
        // The slow one wins no pair: it is picked only... never.
        assert_eq!(counts[0], 0, "{counts:?}");
        // The two fast ones share evenly (ties go to the first drawn).
        assert!(counts[1] > 1200 && counts[2] > 1200, "{counts:?}");
    }

    #[test]
    fn in_flight_work_counts_against_an_endpoint() {
        let mut endpoints = candidates(2);
        for c in &mut endpoints {
            c.observe(10 * MS, Duration::ZERO);
        }
        // Same latency, but one has 4 calls queued: the other wins.
        endpoints[0].set_in_flight(4);
        let counts = pick_n(&mut PowerOfTwoChoices::new(), &endpoints, 100, 5);
        assert_eq!(counts, [0, 100]);
        // A slow idle endpoint beats a fast one with enough work queued.
        endpoints[0].set_in_flight(0);
        endpoints[0].observe(30 * MS, Duration::ZERO);
        endpoints[1].set_in_flight(3);
        let counts = pick_n(&mut PowerOfTwoChoices::new(), &endpoints, 100, 5);
        assert_eq!(counts, [100, 0]);
    }

    #[test]
    fn skips_unavailable_and_handles_one_or_none() {
        let mut endpoints = candidates(4);
        endpoints[0].set_available(false);
        endpoints[3].set_available(false);
        let counts = pick_n(&mut PowerOfTwoChoices::new(), &endpoints, 1000, 9);
        assert_eq!((counts[0], counts[3]), (0, 0));
        assert!(counts[1] > 300 && counts[2] > 300, "{counts:?}");
        endpoints[1].set_available(false);
        assert_eq!(
            pick_n(&mut PowerOfTwoChoices::new(), &endpoints, 10, 9),
            [0, 0, 10, 0]
        );
        endpoints[2].set_available(false);
        let mut rng = crate::Rng::seeded(0);
        let mut pick = Pick {
            now: Duration::ZERO,
            key: None,
            rng: &mut rng,
        };
        assert_eq!(PowerOfTwoChoices::new().pick(&endpoints, &mut pick), None);
        assert_eq!(
            PowerOfTwoChoices::new().pick(&endpoints[..1], &mut pick),
            None
        );
        assert_eq!(PowerOfTwoChoices::new().pick(&[], &mut pick), None);
    }
}
