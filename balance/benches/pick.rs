//! The cost of choosing an endpoint (criterion):
//! `cargo bench -p courier-balance --bench pick`.
//!
//! Each strategy's `pick` over 3 and 100 endpoints with recent latency
//! samples and some calls in flight, as the balancer calls it on every
//! call (under its lock).

use std::hint::black_box;
use std::time::Duration;

use courier_balance::{
    Candidate, ConsistentHash, Pick, PowerOfTwoChoices, Rng, RoundRobin, Strategy, WeightedRandom,
};
use criterion::{criterion_group, criterion_main, Criterion};

fn endpoints(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| {
            let mut c = Candidate::new(format!("instance-{i}"), 1 + (i as u32 % 3));
            c.observe(Duration::from_micros(50 + 10 * i as u64), Duration::ZERO);
            c.set_in_flight(i as u32 % 5);
            c
        })
        .collect()
}

/// `same_turn`: every pick in one turn of the driver (as the calls a reply
/// batch wakes), else each in its own.
fn bench_strategy<S: Strategy>(c: &mut Criterion, name: &str, mut strategy: S, same_turn: bool) {
    let mut g = c.benchmark_group(format!("pick/{name}"));
    for n in [3usize, 100] {
        let endpoints = endpoints(n);
        strategy.update(&endpoints);
        let mut rng = Rng::seeded(1);
        let mut key = 0u64;
        g.bench_function(format!("{n} endpoints"), |b| {
            b.iter(|| {
                key = key.wrapping_add(1);
                let mut pick = Pick {
                    now: Duration::from_millis(5),
                    key: Some(key),
                    rng: &mut rng,
                    turn: if same_turn { 0 } else { key },
                };
                black_box(strategy.pick(black_box(&endpoints), &mut pick))
            })
        });
    }
    g.finish();
}

fn picks(c: &mut Criterion) {
    bench_strategy(c, "p2c", PowerOfTwoChoices::new(), false);
    bench_strategy(c, "p2c_one_turn", PowerOfTwoChoices::new(), true);
    bench_strategy(c, "round_robin", RoundRobin::new(), false);
    bench_strategy(c, "weighted_random", WeightedRandom::new(), false);
    bench_strategy(c, "consistent_hash", ConsistentHash::new(), false);
}

criterion_group!(benches, picks);
criterion_main!(benches);
