//! Balanced versus direct throughput (a plain program, not criterion):
//! `cargo bench -p courier-balance --bench throughput`.
//!
//! Three courier-tcp servers on 127.0.0.1 run on smol's executor in this
//! process. 64 callers make `add` calls, in rounds that alternate between
//! one direct connection to one instance, the balanced client (p2c) over
//! that one instance (the balancer's own cost), and over all three (plus
//! the cost of spreading 64 calls over three connections); each client's
//! driver is polled on the callers' thread. Prints each round's calls/s and
//! the median ratios to direct.

use std::time::Instant;

use courier_balance::Balanced;
use courier_registry::{Address, Change, Endpoint, Event, SnapshotKind};
use futures::stream::{self, StreamExt};

#[courier::service]
pub trait Calc {
    #[idempotent]
    async fn add(&self, a: u64, b: u64) -> u64;
}

struct Adder;

impl Calc for Adder {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

const CONCURRENCY: usize = 64;
const CALLS: u64 = 40_000;
const ROUNDS: usize = 5;

/// Runs `CALLS` calls from `CONCURRENCY` callers; returns calls/s.
async fn round<C: courier::Channel>(calc: &CalcClient<C>) -> f64 {
    let started = Instant::now();
    let mut calls = stream::iter(0..CALLS)
        .map(|i| calc.add(i, 1))
        .buffer_unordered(CONCURRENCY);
    while let Some(sum) = calls.next().await {
        assert!(sum.is_ok());
    }
    CALLS as f64 / started.elapsed().as_secs_f64()
}

async fn run_mem<C: courier::Channel>(calc: CalcClient<C>, calls: u64) {
    let mut results = stream::iter(0..calls)
        .map(|i| calc.add(i, 1))
        .buffer_unordered(CONCURRENCY);
    while let Some(sum) = results.next().await {
        assert!(sum.is_ok());
    }
}

/// `--mem direct|balanced N`: `N` calls over `courier-mem` on one thread,
/// for instruction counts (`perf stat -e instructions:u`; subtract two
/// values of `N`).
fn mem(mode: &str, calls: u64) {
    let (client_io, server_io) = courier_mem::pair(256 * 1024);
    let server = courier::ServerBuilder::new().build(server_io, CalcServer::new(Adder));
    if mode == "direct" {
        let (client, driver) = courier::Client::new(client_io);
        futures::executor::block_on(async {
            let ((), _, _) =
                futures::join!(run_mem(CalcClient::new(client), calls), driver, server);
        });
        return;
    }
    let endpoint = Endpoint::new("calc", "calc-0", Address::Unix("mem".into()));
    let change = Change::Snapshot {
        endpoints: vec![endpoint],
        kind: SnapshotKind::Initial,
    };
    let discover = stream::iter([Ok(Event {
        revision: 1,
        change,
    })])
    .chain(stream::pending());
    let mut io = Some(client_io);
    let connect = move |_: &Endpoint| {
        let io = io.take().ok_or("dialled twice");
        futures::future::ready(io.map(courier::Client::new))
    };
    let timer = courier::timer::AsyncIoTimer::new();
    let (balanced, driver) = Balanced::builder(timer).build(discover, connect);
    futures::executor::block_on(async {
        let ((), (), _) = futures::join!(run_mem(CalcClient::new(balanced), calls), driver, server);
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches` runs benches as tests: nothing to check.
    }
    if let Some(at) = args.iter().position(|a| a == "--mem") {
        let mode = args.get(at + 1).map_or("direct", String::as_str);
        let calls = args
            .get(at + 2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000);
        return mem(mode, calls);
    }
    smol::block_on(async {
        let mut addrs = Vec::new();
        for _ in 0..3 {
            let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            smol::spawn(courier_tcp::builder().serve(listener, CalcServer::new(Adder))).detach();
        }
        let (client, direct_driver) = courier_tcp::connect(addrs[0]).await.unwrap();
        let direct = CalcClient::new(client);

        let timer = courier::timer::AsyncIoTimer::new();
        let build = |n: usize| {
            let endpoints = addrs
                .iter()
                .take(n)
                .enumerate()
                .map(|(i, a)| Endpoint::new("calc", format!("calc-{i}"), Address::Tcp(*a)))
                .collect();
            let change = Change::Snapshot {
                endpoints,
                kind: SnapshotKind::Initial,
            };
            let discover = stream::iter([Ok(Event {
                revision: 1,
                change,
            })])
            .chain(stream::pending());
            let connect = |e: &Endpoint| {
                let Address::Tcp(addr) = e.address else {
                    unreachable!("TCP only")
                };
                courier_tcp::connect(addr)
            };
            let (balanced, driver) = Balanced::builder(timer).build(discover, connect);
            (CalcClient::new(balanced), driver)
        };
        let (balanced, balanced_driver) = build(3);
        let (single, single_driver) = build(1);

        let rounds = async {
            // Warm up each (and let the balancers connect).
            round(&direct).await;
            round(&single).await;
            round(&balanced).await;
            let (mut one, mut three) = (Vec::new(), Vec::new());
            for r in 0..ROUNDS {
                let d = round(&direct).await;
                let s = round(&single).await;
                let b = round(&balanced).await;
                println!(
                    "round {r}: direct {d:>8.0}/s  balanced over 1 {s:>8.0}/s ({:.3})  over 3 {b:>8.0}/s ({:.3})",
                    s / d,
                    b / d
                );
                one.push(s / d);
                three.push(b / d);
            }
            for ratios in [&mut one, &mut three] {
                ratios.sort_by(f64::total_cmp);
            }
            println!(
                "median at conc={CONCURRENCY}: balanced over 1 endpoint / direct {:.3}, over 3 / direct {:.3}",
                one[one.len() / 2],
                three[three.len() / 2]
            );
            for e in balanced.client().endpoints() {
                println!("  {}: {} calls", e.instance, e.calls);
            }
            drop(direct);
            drop(single);
            drop(balanced);
        };
        let (_, direct_done, (), ()) =
            futures::join!(rounds, direct_driver, single_driver, balanced_driver);
        direct_done.unwrap();
    });
}
