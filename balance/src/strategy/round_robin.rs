//! Round robin: each available endpoint in turn.

use super::{Candidate, Pick, Strategy};

/// Each available endpoint in turn, ignoring weight (beyond 0) and load.
#[derive(Clone, Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// Starts at the first endpoint.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Strategy for RoundRobin {
    fn pick(&mut self, endpoints: &[Candidate], _: &mut Pick<'_>) -> Option<usize> {
        let n = endpoints.len();
        (0..n)
            .map(|step| self.next.wrapping_add(step) % n)
            .find(|&i| endpoints.get(i).is_some_and(|c| c.available))
            .inspect(|&i| self.next = i.wrapping_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{candidates, pick_n};
    use super::*;

    #[test]
    fn takes_turns_and_skips_the_unavailable() {
        let mut endpoints = candidates(3);
        assert_eq!(pick_n(&mut RoundRobin::new(), &endpoints, 9, 0), [3, 3, 3]);
        endpoints[1].set_available(false);
        assert_eq!(pick_n(&mut RoundRobin::new(), &endpoints, 8, 0), [4, 0, 4]);
        endpoints[0].set_available(false);
        endpoints[2].set_available(false);
        let mut rng = crate::Rng::seeded(0);
        let mut pick = Pick {
            now: std::time::Duration::ZERO,
            key: None,
            rng: &mut rng,
            turn: 0,
        };
        assert_eq!(RoundRobin::new().pick(&endpoints, &mut pick), None);
        assert_eq!(RoundRobin::new().pick(&[], &mut pick), None);
    }
}
