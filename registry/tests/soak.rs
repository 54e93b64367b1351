//! A seeded soak of the registry over courier-mem on the virtual clock:
//! self-registering instances start, stop gracefully and die; watchers
//! watch through reconnecting clients; connections are cut, the network
//! partitions and heals, the registry crashes and restarts empty. Every
//! seed replays exactly.
//!
//! Checked after every step: each watcher's revisions only grow (no
//! change delivered twice, none out of order) and it never ends; the
//! registry holds at most one instance per name. At the end, with every
//! fault healed and a few TTLs passed: every watcher's set equals the
//! registry's, which holds exactly the instances still running.
//!
//! ```sh
//! cargo test -p courier-registry --test soak                 # seeds 0..40
//! COURIER_SEED=17 cargo test -p courier-registry --test soak -- --nocapture
//! COURIER_SEEDS=2000 cargo test --release -p courier-registry --test soak
//! ```

mod support;

use std::cell::RefCell;
use std::rc::Rc;

use courier::Shutdown;
use courier_registry::{
    Address, Endpoint, Registration, RegistryWatch, RemoteRegistrar, StoreConfig,
};
use futures::future::AbortHandle;
use support::{collect, ms, Collected, World};

const DEFAULT_SEEDS: u64 = 40;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// A running instance: its stop signal, its driver's abort handle and
/// whether the driver finished.
type Running = (Shutdown, AbortHandle, Rc<RefCell<Option<()>>>);

/// What a watcher collected, and how many of its events were checked.
type Watched = (Rc<RefCell<Collected>>, Rc<RefCell<usize>>);

struct Instance {
    name: String,
    running: Option<Running>,
}

fn config(restarts: u64) -> StoreConfig {
    StoreConfig {
        disconnect_grace: ms(100),
        history: 8,
        max_pending: 4,
        first_revision: restarts * 1_000_000,
        // Each run hands out other lease ids (as the binary's does).
        lease_seed: restarts,
        ..StoreConfig::default()
    }
}

fn check_watchers(seed: u64, step: usize, watchers: &[Watched]) {
    for (w, (seen, checked)) in watchers.iter().enumerate() {
        let seen = seen.borrow();
        let mut done = checked.borrow_mut();
        let from = done.saturating_sub(1);
        for pair in seen.events.get(from..).unwrap_or_default().windows(2) {
            assert!(
                pair[1].revision > pair[0].revision,
                "seed {seed} step {step}: watcher {w} got revision {} after {}",
                pair[1].revision,
                pair[0].revision
            );
        }
        *done = seen.events.len();
    }
}

fn run(seed: u64, verbose: bool) {
    let mut rng = Rng(seed);
    let mut world = World::new();
    let mut restarts = 0;
    let mut registry = world.start_registry(config(restarts));
    let mut instances: Vec<Instance> = (0..2 + rng.below(4))
        .map(|i| Instance {
            name: format!("i{i}"),
            running: None,
        })
        .collect();
    let watchers: Vec<_> = (0..1 + rng.below(3))
        .map(|_| {
            let client = world.client();
            let clock = world.clock.clone();
            let watch = RegistryWatch::new(client, "kv", clock).backoff(ms(10), ms(80));
            (collect(&mut world, watch), Rc::new(RefCell::new(0)))
        })
        .collect();
    let mut partitioned = false;
    let ttls = [ms(90), ms(300), ms(900)];
    for step in 0..60 {
        let choice = rng.below(12);
        let what = match choice {
            0..=2 => {
                let i = rng.below(instances.len() as u64) as usize;
                if instances[i].running.is_none() {
                    let ttl = ttls[rng.below(3) as usize];
                    let endpoint = Endpoint::new(
                        "kv",
                        instances[i].name.clone(),
                        Address::Tcp(([127, 0, 0, 1], 7000 + i as u16).into()),
                    );
                    let client = world.client();
                    let stop = Shutdown::new();
                    let done = Rc::new(RefCell::new(None));
                    let slot = done.clone();
                    let driver = Registration::new(endpoint, ttl)
                        .retry(ms(10), ms(80))
                        .propagation(ms(20))
                        .run(
                            RemoteRegistrar::new(client, None),
                            world.clock.clone(),
                            stop.clone().triggered(),
                            None,
                        );
                    let abort = world.spawn_abortable(async move {
                        driver.await.expect("never refused");
                        *slot.borrow_mut() = Some(());
                    });
                    instances[i].running = Some((stop, abort, done));
                    format!("start {} (ttl {ttl:?})", instances[i].name)
                } else {
                    format!("{} already runs", instances[i].name)
                }
            }
            3 => {
                let i = rng.below(instances.len() as u64) as usize;
                match instances[i].running.take() {
                    Some((stop, abort, done)) => {
                        stop.trigger();
                        // Its driver deregisters (if it can) and finishes.
                        world.advance(ms(100));
                        if done.borrow().is_none() {
                            abort.abort();
                        }
                        format!("stop {}", instances[i].name)
                    }
                    None => "stop: none".into(),
                }
            }
            4 => {
                let i = rng.below(instances.len() as u64) as usize;
                match instances[i].running.take() {
                    Some((_, abort, _)) => {
                        abort.abort();
                        format!("kill {}", instances[i].name)
                    }
                    None => "kill: none".into(),
                }
            }
            5 => {
                world.cut();
                "cut".into()
            }
            6 => {
                partitioned = !partitioned;
                world.partition(partitioned);
                format!("partition {partitioned}")
            }
            7 => {
                if world.registry_up() {
                    world.crash_registry();
                    "crash".into()
                } else {
                    restarts += 1;
                    registry = world.start_registry(config(restarts));
                    partitioned = false;
                    "restart".into()
                }
            }
            _ => {
                let d = ms(1 + rng.below(200));
                world.advance(d);
                format!("advance {d:?}")
            }
        };
        world.run();
        if verbose {
            println!("seed {seed} step {step}: {what}");
        }
        check_watchers(seed, step, &watchers);
        if world.registry_up() {
            let listed = registry.list(Some("kv")).endpoints;
            assert!(listed.len() <= instances.len());
        }
    }
    // Heal everything and let a few TTLs pass.
    if !world.registry_up() {
        restarts += 1;
        registry = world.start_registry(config(restarts));
    }
    world.partition(false);
    world.advance_by(ms(3_000), ms(5));
    check_watchers(seed, usize::MAX, &watchers);
    let listed: Vec<String> = registry
        .list(Some("kv"))
        .endpoints
        .into_iter()
        .map(|e| e.instance)
        .collect();
    let running: Vec<String> = instances
        .iter()
        .filter(|i| i.running.is_some())
        .map(|i| i.name.clone())
        .collect();
    assert_eq!(
        listed, running,
        "seed {seed}: the registry holds the running instances"
    );
    for (w, (seen, _)) in watchers.iter().enumerate() {
        let set: Vec<String> = seen
            .borrow()
            .set
            .iter()
            .map(|e| e.instance.clone())
            .collect();
        assert_eq!(set, running, "seed {seed}: watcher {w} converged");
    }
}

#[test]
fn registry_soak() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(seed) = env("COURIER_SEED") {
        run(seed, true);
        return;
    }
    let start = env("COURIER_SEED_START").unwrap_or(0);
    let seeds = env("COURIER_SEEDS").unwrap_or(DEFAULT_SEEDS);
    for seed in start..start + seeds {
        let outcome = std::panic::catch_unwind(|| run(seed, false));
        if let Err(panic) = outcome {
            eprintln!("failing seed {seed}; replay: COURIER_SEED={seed} cargo test -p courier-registry --test soak -- --nocapture");
            std::panic::resume_unwind(panic);
        }
    }
}
