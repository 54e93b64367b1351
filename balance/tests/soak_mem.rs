//! A randomized soak of the balanced client over in-memory servers: calls
//! (idempotent reads, non-idempotent writes, each with a 3 s timeout) race
//! instance kills, restarts, discovery removals and additions, slow
//! instances (handlers that take 500 ms), partitions (an instance whose
//! handlers answer nothing until healed: silence, not a connection error)
//! and clock jumps, over many seeds. While a round's calls are unresolved
//! the clock moves on by 1 s steps, healing a partition now and then, so
//! that timeouts and heals resolve them.
//!
//! Invariants: every call resolves (a turn budget fails the test instead of
//! hanging); a write never runs twice; a write that succeeded ran exactly
//! once and one that failed `NotSent` never ran; a read never fails for
//! not being idempotent; every error is one of the balancer's typed
//! failures.
//!
//! These scenarios live here rather than in `tests/simulation.rs`: that
//! soak simulates one client and one server over one faulty link (its
//! world, faults and invariants are per connection), and a balanced client
//! needs several servers and a discovery source in its world.

mod support;

use std::time::Duration;

use courier::{CallError, NotRetried, Unsent};
use courier_balance::{Ejection, Rng};
use courier_registry::Change;
use futures::future::{select, Either};
use support::{cluster, endpoint, yield_now, WorkClient, SLOW};

const INSTANCES: usize = 4;
const ROUNDS: u64 = 12;
const PER_ROUND: u64 = 12;
const TIMEOUT: Duration = Duration::from_secs(3);
const SEEDS: u64 = 100;

/// What a call was, and what it got.
struct Outcome {
    id: u64,
    write: bool,
    result: Result<String, CallError>,
}

fn soak(seed: u64) -> std::collections::BTreeMap<String, u64> {
    let (cluster, balanced, driver, servers) = cluster(INSTANCES, |b| {
        b.seed(seed).ejection(Ejection {
            consecutive_failures: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(4),
        })
    });
    cluster.record.gate.open();
    let work = WorkClient::new(balanced).with_timeout(TIMEOUT);
    let mut rng = Rng::seeded(seed);
    let mut removed: Vec<usize> = Vec::new();
    let mut dead: Vec<usize> = Vec::new();
    let body = async {
        let mut outcomes = Vec::new();
        for round in 0..ROUNDS {
            let calls = (0..PER_ROUND).map(|k| {
                let id = round * PER_ROUND + k;
                let write = id % 3 == 0;
                let work = &work;
                async move {
                    let result = if write {
                        work.write(id).await
                    } else {
                        work.read(id).await
                    };
                    Outcome { id, write, result }
                }
            });
            let done = std::cell::Cell::new(false);
            let batch = async {
                let results = futures::future::join_all(calls).await;
                done.set(true);
                results
            };
            let chaos = async {
                for _ in 0..rng.below(4) {
                    yield_now().await;
                }
                match rng.below(9) {
                    0 | 1 => {
                        let i = rng.below(INSTANCES);
                        cluster.kill(&format!("w-{i}"));
                        dead.push(i);
                    }
                    2 => {
                        if let Some(i) = dead.pop() {
                            cluster.revive(&format!("w-{i}"));
                        }
                        cluster.clock.advance(Duration::from_secs(6));
                    }
                    3 => {
                        let i = rng.below(INSTANCES);
                        cluster.send(Change::Removed {
                            instance: format!("w-{i}"),
                        });
                        removed.push(i);
                    }
                    4 => {
                        if let Some(i) = removed.pop() {
                            cluster.send(Change::Added(endpoint(i)));
                        }
                    }
                    5 => cluster.clock.advance(Duration::from_millis(300)),
                    6 => {
                        let name = format!("w-{}", rng.below(INSTANCES));
                        let mut slow = cluster.record.slow.lock().unwrap();
                        if !slow.remove(&name) {
                            slow.insert(name);
                        }
                    }
                    7 => {
                        let name = format!("w-{}", rng.below(INSTANCES));
                        cluster.record.partitioned.lock().unwrap().insert(name);
                    }
                    _ => cluster.record.partitioned.lock().unwrap().clear(),
                }
                // Until the round's calls resolve: time passes (timeouts,
                // slow handlers, backoffs), and partitions heal now and then.
                while !done.get() {
                    for _ in 0..50 {
                        if done.get() {
                            break;
                        }
                        yield_now().await;
                    }
                    if !done.get() {
                        cluster.clock.advance(SLOW * 2);
                        if rng.below(3) == 0 {
                            cluster.record.partitioned.lock().unwrap().clear();
                        }
                    }
                }
            };
            let (results, ()) = futures::join!(batch, chaos);
            outcomes.extend(results);
        }
        drop(work);
        outcomes
    };
    // Every call must resolve: a budget of turns instead of a hang.
    let guard = async {
        for _ in 0..200_000 {
            yield_now().await;
        }
    };
    let outcomes = futures::executor::block_on(async {
        futures::pin_mut!(body, guard);
        let run = async { futures::join!(&mut body, driver, servers).0 };
        futures::pin_mut!(run);
        match select(run, guard).await {
            Either::Left((outcomes, _)) => outcomes,
            Either::Right(_) => panic!("seed {seed}: a call did not resolve"),
        }
    });
    assert_eq!(outcomes.len() as u64, ROUNDS * PER_ROUND);
    let runs = cluster.record.runs.lock().unwrap();
    for Outcome { id, write, result } in &outcomes {
        let ran = runs.get(id).copied().unwrap_or(0);
        match (write, result) {
            (true, Ok(_)) => assert_eq!(ran, 1, "seed {seed}: write {id} ran {ran} times"),
            (true, Err(CallError::NotSent(_))) => {
                assert_eq!(ran, 0, "seed {seed}: write {id} failed NotSent but ran")
            }
            (true, Err(_)) => assert!(ran <= 1, "seed {seed}: write {id} ran {ran} times"),
            (false, Ok(_)) => assert!(ran >= 1),
            (false, Err(CallError::NotSent(_))) => assert_eq!(ran, 0),
            (false, Err(_)) => {}
        }
        if let Err(error) = result {
            let allowed = matches!(
                error,
                CallError::DeadlineExceeded
                    | CallError::NotSent(Unsent::NoEndpoint | Unsent::Disconnected)
                    | CallError::Connect(_)
                    | CallError::NotRetried {
                        reason: NotRetried::BudgetExhausted | NotRetried::AttemptsExhausted,
                        ..
                    }
            ) || (*write
                && *error
                    == CallError::NotRetried {
                        reason: NotRetried::NotIdempotent,
                        may_have_run: true,
                    });
            assert!(
                allowed,
                "seed {seed}: call {id} (write: {write}) failed {error:?}"
            );
        }
    }
    let mut tally = std::collections::BTreeMap::new();
    for Outcome { write, result, .. } in &outcomes {
        let kind = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("{e:?}"),
        };
        *tally
            .entry(format!("{} {kind}", if *write { "write" } else { "read" }))
            .or_default() += 1;
    }
    tally
}

#[test]
fn calls_resolve_once_and_writes_never_run_twice_under_random_faults() {
    let mut total = std::collections::BTreeMap::<String, u64>::new();
    for seed in 0..SEEDS {
        for (kind, n) in soak(seed) {
            *total.entry(kind).or_default() += n;
        }
    }
    eprintln!("outcomes over {SEEDS} seeds: {total:#?}");
    // The faults reached calls in flight: writes on a killed instance were
    // not re-sent, and calls on a partitioned one timed out.
    assert!(
        total.keys().any(|k| k.contains("NotIdempotent")),
        "{total:?}"
    );
    assert!(
        total.keys().any(|k| k.contains("DeadlineExceeded")),
        "{total:?}"
    );
}
