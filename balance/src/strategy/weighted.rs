//! Weighted random: each available endpoint with probability proportional
//! to its weight.

use super::{Candidate, Pick, Strategy};

/// Each available endpoint with probability `weight / total weight`.
#[derive(Clone, Debug, Default)]
pub struct WeightedRandom;

impl WeightedRandom {
    /// The strategy.
    pub fn new() -> Self {
        WeightedRandom
    }
}

impl Strategy for WeightedRandom {
    fn pick(&mut self, endpoints: &[Candidate], pick: &mut Pick<'_>) -> Option<usize> {
        let available = || endpoints.iter().enumerate().filter(|(_, c)| c.available);
        let total: u64 = available().map(|(_, c)| u64::from(c.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut point = ((u128::from(pick.rng.next_u64()) * u128::from(total)) >> 64) as u64;
        for (i, c) in available() {
            let w = u64::from(c.weight);
            if point < w {
                return Some(i);
            }
            point -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{candidates, pick_n};
    use super::*;

    #[test]
    fn shares_follow_the_weights() {
        let mut endpoints = candidates(3);
        endpoints[0].weight = 1;
        endpoints[1].weight = 3;
        endpoints[2].weight = 6;
        let counts = pick_n(&mut WeightedRandom::new(), &endpoints, 10_000, 42);
        for (count, expected) in counts.iter().zip([1_000, 3_000, 6_000]) {
            let off = (*count as i64 - expected).abs();
            assert!(off < 300, "{counts:?}");
        }
    }

    #[test]
    fn weight_zero_and_unavailable_get_nothing() {
        let mut endpoints = candidates(3);
        endpoints[0].weight = 0;
        endpoints[1].set_available(false);
        let counts = pick_n(&mut WeightedRandom::new(), &endpoints, 100, 1);
        assert_eq!(counts, [0, 0, 100]);
    }
}
