//! Power of two choices over peak-EWMA load.

use super::{nth_available, Candidate, Pick, Strategy};
use crate::load::whole_nanos;

/// Draws two distinct available endpoints at random and takes the one with
/// the lower [load](Candidate::load) (latency estimate × (in flight + 1));
/// by default the calls of one [turn](Pick::turn) stay together.
///
/// Two random choices avoid both the herd that "always the least loaded"
/// sends to one endpoint between updates, and the imbalance of one random
/// choice; peak EWMA makes a slow endpoint lose at once. A pick is O(1)
/// when the drawn endpoints are available, O(n) otherwise.
///
/// # Batches
///
/// A reply batch wakes many callers at once, and their next calls are
/// picked in one [turn](Pick::turn), before the balancer's driver polls
/// again and writes them. Drawn independently, they would scatter over the
/// endpoints, and each connection would write a fraction of the batch:
/// more system calls per call, at both ends. So within a turn, every pick
/// after the first compares the turn's previous pick with one other
/// endpoint drawn at random:
///
/// - the previous one stays while its load is at most the other's (ties
///   stay); above it, the other is picked, and the turn continues there;
/// - the first pick of a turn, and any pick whose previous one became
///   unavailable, draws both choices as above.
///
/// The comparison is p2c's own, so a slow endpoint loses as it would, and
/// no endpoint gets more than the other it is compared with would leave
/// it: calls in flight stay level. An endpoint whose batch came back (none
/// in flight) takes the turn's calls until it is level with the others;
/// when all are idle, a turn spreads evenly (each pick lifts its endpoint
/// above the rest). [`per_call`](Self::per_call) draws both choices for
/// every pick instead. Both cost the same per pick.
#[derive(Clone, Debug)]
pub struct PowerOfTwoChoices {
    batches: bool,
    /// The turn's previous pick: (turn, index).
    last: Option<(u64, usize)>,
}

impl Default for PowerOfTwoChoices {
    fn default() -> Self {
        Self::new()
    }
}

impl PowerOfTwoChoices {
    /// The strategy, keeping each turn's calls together (see
    /// [Batches](Self#batches)).
    pub fn new() -> Self {
        PowerOfTwoChoices {
            batches: true,
            last: None,
        }
    }

    /// The strategy drawing both choices for every call, ignoring turns.
    pub fn per_call() -> Self {
        PowerOfTwoChoices {
            batches: false,
            last: None,
        }
    }

    /// The turn's previous pick, if this pick is in the same turn and it is
    /// still available.
    fn previous(&self, endpoints: &[Candidate], turn: u64) -> Option<usize> {
        let (at, i) = self.last.filter(|_| self.batches)?;
        (at == turn && endpoints.get(i).is_some_and(|c| c.available)).then_some(i)
    }
}

impl Strategy for PowerOfTwoChoices {
    fn update(&mut self, _: &[Candidate]) {
        // The indices changed.
        self.last = None;
    }

    fn pick(&mut self, endpoints: &[Candidate], pick: &mut Pick<'_>) -> Option<usize> {
        if endpoints.len() < 2 {
            // Nothing to choose between (the common single-endpoint case).
            return nth_available(endpoints, 0);
        }
        let pair = match self.previous(endpoints, pick.turn) {
            Some(previous) => Some(against_another(endpoints, previous, pick)),
            None => two_random(endpoints, pick),
        };
        // One comparison site, inlined.
        let chosen = pair.map(|(a, b)| {
            if a == b {
                a
            } else {
                lower(endpoints, a, b, pick)
            }
        });
        if self.batches {
            self.last = chosen.map(|i| (pick.turn, i));
        }
        chosen
    }
}

/// Two distinct available endpoints drawn at random (the same one twice
/// if only one is available), to compare.
fn two_random(endpoints: &[Candidate], pick: &mut Pick<'_>) -> Option<(usize, usize)> {
    let n = endpoints.len();
    if n < 2 {
        return nth_available(endpoints, 0).map(|i| (i, i));
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
                return nth_available(endpoints, 0).map(|i| (i, i));
            }
            let x = pick.rng.below(m);
            let mut y = pick.rng.below(m - 1);
            if y >= x {
                y += 1;
            }
            (nth_available(endpoints, x)?, nth_available(endpoints, y)?)
        }
    };
    Some((a, b))
}

/// `a` (available) and a random other available endpoint to compare it
/// with (`a` again if there is none). `endpoints` holds at least two.
fn against_another(endpoints: &[Candidate], a: usize, pick: &mut Pick<'_>) -> (usize, usize) {
    let mut b = pick.rng.below(endpoints.len().saturating_sub(1));
    if b >= a {
        b += 1;
    }
    if !endpoints.get(b).is_some_and(|c| c.available) {
        // Unavailable: draw among the available others.
        let others = |&(i, c): &(usize, &Candidate)| c.available && i != a;
        let m = endpoints.iter().enumerate().filter(others).count();
        if m == 0 {
            return (a, a);
        }
        let k = pick.rng.below(m);
        b = endpoints
            .iter()
            .enumerate()
            .filter(others)
            .nth(k)
            .map_or(a, |(i, _)| i);
    }
    (a, b)
}

/// `b` if its load is lower than `a`'s, else `a`.
#[inline]
fn lower(endpoints: &[Candidate], a: usize, b: usize, pick: &Pick<'_>) -> usize {
    let now_ns = whole_nanos(pick.now);
    let load = |i: usize| {
        endpoints
            .get(i)
            .map_or(f64::INFINITY, |c| c.load_at(now_ns))
    };
    if load(b) < load(a) {
        b
    } else {
        a
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
            turn: 0,
        };
        assert_eq!(PowerOfTwoChoices::new().pick(&endpoints, &mut pick), None);
        assert_eq!(
            PowerOfTwoChoices::new().pick(&endpoints[..1], &mut pick),
            None
        );
        assert_eq!(PowerOfTwoChoices::new().pick(&[], &mut pick), None);
    }
}

#[cfg(test)]
mod batch_tests {
    use std::time::Duration;

    use super::super::tests::candidates;
    use super::*;
    use crate::Rng;

    const MS: Duration = Duration::from_millis(1);

    /// Endpoints and a strategy driven as the balancer drives them: each
    /// pick counts a call in flight on the chosen endpoint.
    struct Sim {
        endpoints: Vec<Candidate>,
        strategy: PowerOfTwoChoices,
        rng: Rng,
        turn: u64,
    }

    impl Sim {
        fn new(endpoints: Vec<Candidate>, strategy: PowerOfTwoChoices, seed: u64) -> Self {
            Sim {
                endpoints,
                strategy,
                rng: Rng::seeded(seed),
                turn: 0,
            }
        }

        /// One pick in the current turn; its call counts in flight.
        fn pick(&mut self) -> usize {
            let mut pick = Pick {
                now: Duration::ZERO,
                key: None,
                rng: &mut self.rng,
                turn: self.turn,
            };
            let i = self.strategy.pick(&self.endpoints, &mut pick).unwrap();
            let c = &mut self.endpoints[i];
            c.set_in_flight(c.in_flight() + 1);
            i
        }

        /// `n` picks in a new turn: how many each endpoint got.
        fn turn(&mut self, n: usize) -> Vec<u32> {
            self.turn += 1;
            let mut got = vec![0; self.endpoints.len()];
            for _ in 0..n {
                got[self.pick()] += 1;
            }
            got
        }

        fn in_flight(&self) -> Vec<u32> {
            self.endpoints.iter().map(Candidate::in_flight).collect()
        }

        fn set_in_flight(&mut self, n: &[u32]) {
            for (c, &n) in self.endpoints.iter_mut().zip(n) {
                c.set_in_flight(n);
            }
        }

        /// A closed loop of `calls` calls for `turns` turns: each turn,
        /// the endpoints `replies(turn, in_flight)` names answer all their
        /// calls and as many new ones are picked in that turn. Returns the
        /// calls each endpoint got, and the average number of calls per
        /// endpoint a turn sent to (what one write carries).
        fn closed_loop(
            &mut self,
            calls: u32,
            turns: u64,
            replies: impl Fn(u64, &[u32]) -> Vec<usize>,
        ) -> (Vec<u64>, f64) {
            let mut total = vec![0u64; self.endpoints.len()];
            let mut writes = 0u64;
            let mut picked = 0u64;
            let mut returned = calls as usize;
            for t in 0..turns {
                let got = self.turn(returned);
                for (sum, &n) in total.iter_mut().zip(&got) {
                    *sum += u64::from(n);
                }
                writes += got.iter().filter(|&&n| n > 0).count() as u64;
                picked += returned as u64;
                let in_flight = self.in_flight();
                returned = 0;
                for i in replies(t, &in_flight) {
                    returned += in_flight[i] as usize;
                    self.endpoints[i].set_in_flight(0);
                }
            }
            (total, picked as f64 / writes as f64)
        }
    }

    /// Equally fast endpoints: each answers all its calls every third
    /// turn, in turn.
    fn in_turn(t: u64, in_flight: &[u32]) -> Vec<usize> {
        vec![(t % in_flight.len() as u64) as usize]
    }

    #[test]
    fn a_turn_s_calls_stay_on_the_endpoint_whose_batch_came_back() {
        let mut strays = Vec::new();
        for strategy in [PowerOfTwoChoices::new(), PowerOfTwoChoices::per_call()] {
            let mut sum = 0;
            for seed in 0..100 {
                // Endpoint 0's 21 calls came back; the others hold 21 each.
                let mut sim = Sim::new(candidates(3), strategy.clone(), seed);
                sim.set_in_flight(&[0, 21, 21]);
                sim.turn += 1;
                let picks: Vec<usize> = (0..21).map(|_| sim.pick()).collect();
                sum += picks.iter().filter(|&&i| i != 0).count();
                if strategy.batches {
                    // Picks stray only until the turn first draws
                    // endpoint 0 (the first pair, and each later other,
                    // may miss it); from then on, every pick stays.
                    let first = picks.iter().position(|&i| i == 0);
                    let Some(first) = first else {
                        panic!("seed {seed}: {picks:?}")
                    };
                    assert!(
                        picks[first..].iter().all(|&i| i == 0),
                        "seed {seed}: {picks:?}"
                    );
                }
            }
            strays.push(sum as f64 / 100.0);
        }
        // Per call, a third of the pairs miss endpoint 0 all turn long.
        assert!(strays[0] < 1.5, "{strays:?}");
        assert!(strays[1] > 4.0, "{strays:?}");
    }

    #[test]
    fn the_turn_moves_on_only_when_its_endpoint_is_above_the_other() {
        // Two endpoints: the other one drawn is always the same.
        let mut sim = Sim::new(candidates(2), PowerOfTwoChoices::new(), 1);
        sim.set_in_flight(&[0, 5]);
        assert_eq!(sim.turn(1), [1, 0]);
        // Below the other's load: stays.
        sim.set_in_flight(&[4, 5]);
        assert_eq!(sim.pick(), 0);
        // At it (a tie): stays.
        sim.set_in_flight(&[5, 5]);
        assert_eq!(sim.pick(), 0);
        // Above it: moves, and the turn now stays on the new endpoint.
        sim.set_in_flight(&[6, 5]);
        assert_eq!(sim.pick(), 1);
        sim.set_in_flight(&[6, 6]);
        assert_eq!(sim.pick(), 1);
        // The same with latency: 3 ms × (1 + 1) against 2 ms × (1 + n).
        sim.endpoints[0].observe(3 * MS, Duration::ZERO);
        sim.endpoints[1].observe(2 * MS, Duration::ZERO);
        sim.set_in_flight(&[1, 3]);
        sim.turn += 1;
        assert_eq!(sim.pick(), 0); // 6 ms < 8 ms: endpoint 0 starts the turn
        sim.set_in_flight(&[1, 2]); // 6 ms = 6 ms: stays
        assert_eq!(sim.pick(), 0);
        sim.set_in_flight(&[1, 1]); // 6 ms > 4 ms: moves
        assert_eq!(sim.pick(), 1);
    }

    #[test]
    fn a_new_turn_draws_both_choices_again() {
        // Each pick in a turn of its own: exactly p2c per call.
        let mut batched = Sim::new(candidates(5), PowerOfTwoChoices::new(), 7);
        let mut per_call = Sim::new(candidates(5), PowerOfTwoChoices::per_call(), 7);
        for (i, c) in batched.endpoints.iter_mut().enumerate() {
            c.observe((1 + i as u32) * MS, Duration::ZERO);
        }
        per_call.endpoints = batched.endpoints.clone();
        for _ in 0..500 {
            assert_eq!(batched.turn(1), per_call.turn(1));
        }
        // A set change forgets the turn's previous pick (indices moved).
        let mut sim = Sim::new(candidates(2), PowerOfTwoChoices::new(), 2);
        sim.set_in_flight(&[0, 9]);
        sim.turn(1);
        assert_eq!(sim.strategy.last.map(|(_, i)| i), Some(0));
        sim.strategy.update(&sim.endpoints);
        assert_eq!(sim.strategy.last, None);
    }

    #[test]
    fn an_unavailable_previous_or_other_is_not_picked() {
        let mut sim = Sim::new(candidates(3), PowerOfTwoChoices::new(), 4);
        sim.set_in_flight(&[9, 0, 9]);
        sim.turn(1);
        let first = sim.strategy.last.map(|(_, i)| i);
        // The previous one went away mid-turn: a fresh pair without it.
        let Some(first) = first else { panic!("a pick") };
        sim.endpoints[first].set_available(false);
        let i = sim.pick();
        assert_ne!(i, first);
        // Every other is unavailable (idle, but drawn and skipped): stays.
        sim.set_in_flight(&[40, 40, 40]);
        for (j, c) in sim.endpoints.iter_mut().enumerate() {
            if j != i {
                c.set_in_flight(0);
            }
        }
        sim.endpoints[3 - i - first].set_available(false);
        for _ in 0..20 {
            assert_eq!(sim.pick(), i);
        }
    }

    #[test]
    fn a_slow_endpoint_is_avoided_as_per_call() {
        // 64 calls; endpoint 0 answers every 25th turn, 1 and 2 every turn.
        let slow_every = |t: u64, _: &[u32]| {
            let mut r = vec![1, 2];
            if t % 25 == 24 {
                r.push(0);
            }
            r
        };
        let mut shares = Vec::new();
        for strategy in [PowerOfTwoChoices::new(), PowerOfTwoChoices::per_call()] {
            let mut endpoints = candidates(3);
            endpoints[0].observe(50 * MS, Duration::ZERO);
            endpoints[1].observe(2 * MS, Duration::ZERO);
            endpoints[2].observe(2 * MS, Duration::ZERO);
            let mut sim = Sim::new(endpoints, strategy, 11);
            let (total, _) = sim.closed_loop(64, 1000, slow_every);
            let all: u64 = total.iter().sum();
            shares.push(total[0] as f64 / all as f64);
            // The fast two share the rest evenly.
            let (a, b) = (total[1] as f64, total[2] as f64);
            assert!((a - b).abs() < 0.1 * (a + b), "{total:?}");
        }
        // The slow one gets a small share, no larger than per call.
        let (batched, per_call) = (shares[0], shares[1]);
        assert!(batched < 0.02, "{shares:?}");
        assert!(batched <= per_call * 1.1, "{shares:?}");
    }

    #[test]
    fn load_spreads_evenly_and_each_turn_writes_whole_batches() {
        let mut per_write = Vec::new();
        for strategy in [PowerOfTwoChoices::new(), PowerOfTwoChoices::per_call()] {
            let mut sim = Sim::new(candidates(3), strategy, 5);
            let (total, calls_per_write) = sim.closed_loop(64, 3000, in_turn);
            // Every endpoint gets its third in the long run …
            let all: u64 = total.iter().sum();
            for &n in &total {
                let share = n as f64 / all as f64;
                assert!((share - 1.0 / 3.0).abs() < 0.03, "{total:?}");
            }
            // … and none ever holds much more than its share in flight.
            let most = sim.in_flight().into_iter().max().unwrap_or(0);
            assert!(most <= 64 / 3 + 3, "{:?}", sim.in_flight());
            per_write.push(calls_per_write);
        }
        // Each returned batch goes out as one batch; per call it scatters.
        let (batched, per_call) = (per_write[0], per_write[1]);
        // (A third of the turns' first picks draw a pair without the
        // endpoint that answered, and strays continue until a pick's
        // other is that endpoint: ~1 call a turn goes elsewhere.)
        assert!(batched >= 12.5, "{per_write:?}");
        assert!(per_call < 10.5, "{per_write:?}");
    }
}
