//! Balanced versus direct throughput (a plain program, not criterion):
//! `cargo bench -p courier-balance --bench throughput [-- OPTIONS]`.
//!
//! Three courier-tcp instances on 127.0.0.1 serve `add`; 64 callers on one
//! thread make calls in rounds that alternate between one direct
//! connection to one instance, the balanced client (default p2c) over that
//! one instance (the balancer's own cost), over all three (plus the cost
//! of spreading 64 calls over three connections), and over all three with
//! p2c drawing every call's endpoint on its own
//! ([`PowerOfTwoChoices::per_call`], no batches). Each client's driver is
//! its own task on the callers' thread (a `LocalExecutor`), so a wake-up
//! polls only the driver it is for. Prints each round's calls/s and the
//! median ratios to direct.
//!
//! Options:
//! - `--rounds R` (default 5), `--calls N` calls per round (default
//!   200 000).
//! - `--servers-process`: each instance is a child process of its own (as
//!   in a deployment), instead of tasks on smol's executor thread in this
//!   process.
//! - `--tcp direct|balanced1|balanced3|percall3 N`: only `N` calls of one kind,
//!   for `strace -c -f` or `perf stat` (with `--servers-process` too).
//! - `--mem direct|balanced1|balanced3|percall3 N`: `N` calls over `courier-mem`
//!   (client, drivers and servers on one thread, no system calls), for
//!   instruction counts: `valgrind --tool=callgrind`, subtracting two
//!   values of `N`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use courier_balance::{Balanced, BalancedDriver, Connector, PowerOfTwoChoices};
use courier_registry::{Address, Change, Discover, Endpoint, Event, SnapshotKind};
use futures::stream::{self, StreamExt};
use smol::LocalExecutor;

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
const CALLS: u64 = 200_000;
const ROUNDS: usize = 5;
const INSTANCES: usize = 3;

/// Makes `calls` calls from `CONCURRENCY` callers.
async fn run<C: courier::Channel>(calc: &CalcClient<C>, calls: u64) {
    let mut results = stream::iter(0..calls)
        .map(|i| calc.add(i, 1))
        .buffer_unordered(CONCURRENCY);
    while let Some(sum) = results.next().await {
        assert!(sum.is_ok(), "{sum:?}");
    }
}

/// Runs `calls` calls; returns calls/s.
async fn round<C: courier::Channel>(calc: &CalcClient<C>, calls: u64) -> f64 {
    let started = Instant::now();
    run(calc, calls).await;
    calls as f64 / started.elapsed().as_secs_f64()
}

/// Discovery that names `endpoints` once, then waits forever.
fn snapshot(endpoints: Vec<Endpoint>) -> impl Discover {
    let change = Change::Snapshot {
        endpoints,
        kind: SnapshotKind::Initial,
    };
    stream::iter([Ok(Event {
        revision: 1,
        change,
    })])
    .chain(stream::pending())
}

fn endpoint(i: usize, address: Address) -> Endpoint {
    Endpoint::new("calc", format!("calc-{i}"), address)
}

/// A balanced client over `endpoints`, dialled with `connect`: p2c, the
/// default, or p2c `per_call`.
fn balanced<C: Connector>(
    endpoints: Vec<Endpoint>,
    connect: C,
    per_call: bool,
) -> (
    CalcClient<Balanced<courier::timer::AsyncIoTimer>>,
    BalancedDriver<impl Discover, C, courier::timer::AsyncIoTimer>,
) {
    let timer = courier::timer::AsyncIoTimer::new();
    let mut builder = Balanced::builder(timer);
    if per_call {
        builder = builder.strategy(PowerOfTwoChoices::per_call());
    }
    let (balanced, driver) = builder.build(snapshot(endpoints), connect);
    (CalcClient::new(balanced), driver)
}

/// `--mem MODE N`: everything on one thread over `courier-mem`.
fn mem(mode: &str, calls: u64) {
    let instances = if mode.ends_with('3') { INSTANCES } else { 1 };
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..instances {
        let (client_io, server_io) = courier_mem::pair(256 * 1024);
        servers.push(courier::ServerBuilder::new().build(server_io, CalcServer::new(Adder)));
        clients.push(Some(client_io));
    }
    let servers = futures::future::join_all(servers);
    if mode == "direct" {
        let Some(Some(client_io)) = clients.pop() else {
            unreachable!("one instance")
        };
        let (client, driver) = courier::Client::new(client_io);
        futures::executor::block_on(async {
            let calc = CalcClient::new(client);
            let calls = async move { run(&calc, calls).await };
            let ((), _, _) = futures::join!(calls, driver, servers);
        });
        return;
    }
    let endpoints = (0..instances)
        .map(|i| endpoint(i, Address::Unix(format!("mem-{i}"))))
        .collect();
    // Endpoint `calc-i` gets the `i`-th pair.
    let connect = move |e: &Endpoint| {
        let io = e
            .instance
            .strip_prefix("calc-")
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| clients.get_mut(i))
            .and_then(Option::take)
            .ok_or("dialled twice");
        futures::future::ready(io.map(courier::Client::new))
    };
    let (calc, driver) = balanced(endpoints, connect, mode == "percall3");
    futures::executor::block_on(async {
        let calls = async move { run(&calc, calls).await };
        let ((), (), _) = futures::join!(calls, driver, servers);
    });
}

/// `--serve`: one instance, as a child process: prints its address, serves
/// until its standard input closes.
fn serve() {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    smol::block_on(async {
        let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        courier_tcp::builder()
            .serve(listener, CalcServer::new(Adder))
            .await;
    });
}

/// The instances: child processes (kept until the returned handles drop),
/// or tasks on smol's executor thread in this process.
async fn start_instances(processes: bool) -> (Vec<SocketAddr>, Vec<Instance>) {
    let mut addrs = Vec::new();
    let mut children = Vec::new();
    for _ in 0..INSTANCES {
        if processes {
            let exe = std::env::current_exe().unwrap();
            let mut child = Command::new(exe)
                .arg("--serve")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            let stdout = child.stdout.take().unwrap();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            addrs.push(line.trim().parse().unwrap());
            children.push(Instance(child));
        } else {
            let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            smol::spawn(courier_tcp::builder().serve(listener, CalcServer::new(Adder))).detach();
        }
    }
    (addrs, children)
}

/// A child instance: stopped (its standard input closed, then waited for)
/// when dropped.
struct Instance(Child);

impl Drop for Instance {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn tcp_endpoints(addrs: &[SocketAddr], n: usize) -> Vec<Endpoint> {
    addrs
        .iter()
        .take(n)
        .enumerate()
        .map(|(i, a)| endpoint(i, Address::Tcp(*a)))
        .collect()
}

/// The default run of `rounds` × `calls`, or `--tcp MODE N` (`only`).
fn tcp(processes: bool, only: Option<(&str, u64)>, rounds: usize, calls: u64) {
    let local = LocalExecutor::new();
    smol::block_on(local.run(async {
        let (addrs, instances) = start_instances(processes).await;
        let (client, direct_driver) = courier_tcp::connect(addrs[0]).await.unwrap();
        local.spawn(direct_driver).detach();
        let direct = CalcClient::new(client);
        let tcp_connect = |e: &Endpoint| {
            let Address::Tcp(addr) = e.address else {
                unreachable!("TCP only")
            };
            courier_tcp::connect(addr)
        };
        let (single, single_driver) = balanced(tcp_endpoints(&addrs, 1), tcp_connect, false);
        local.spawn(single_driver).detach();
        let (three, three_driver) =
            balanced(tcp_endpoints(&addrs, INSTANCES), tcp_connect, false);
        local.spawn(three_driver).detach();
        let (per_call, per_call_driver) =
            balanced(tcp_endpoints(&addrs, INSTANCES), tcp_connect, true);
        local.spawn(per_call_driver).detach();
        // Warm up each (and let the balancers connect); briefly for a
        // count of one kind.
        let warm_up = if only.is_some() { 1000 } else { calls };
        run(&direct, warm_up).await;
        run(&single, warm_up).await;
        run(&three, warm_up).await;
        run(&per_call, warm_up).await;
        if let Some((mode, calls)) = only {
            match mode {
                "direct" => run(&direct, calls).await,
                "balanced1" => run(&single, calls).await,
                "balanced3" => run(&three, calls).await,
                "percall3" => run(&per_call, calls).await,
                other => panic!("unknown mode {other}"),
            }
            drop(instances);
            return;
        }
        let (mut one, mut spread, mut unbatched) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            let d = round(&direct, calls).await;
            let s = round(&single, calls).await;
            let b = round(&three, calls).await;
            let u = round(&per_call, calls).await;
            println!(
                "round {r}: direct {d:>8.0}/s  balanced over 1 {s:>8.0}/s ({:.3})  over 3 {b:>8.0}/s ({:.3})  over 3 per call {u:>8.0}/s ({:.3})",
                s / d,
                b / d,
                u / d
            );
            one.push(s / d);
            spread.push(b / d);
            unbatched.push(u / d);
        }
        for ratios in [&mut one, &mut spread, &mut unbatched] {
            ratios.sort_by(f64::total_cmp);
        }
        let setup = if processes {
            "instances in child processes"
        } else {
            "instances in this process"
        };
        println!(
            "median at conc={CONCURRENCY} ({setup}): balanced over 1 endpoint / direct {:.3}, over 3 / direct {:.3}, over 3 per call / direct {:.3}",
            one[one.len() / 2],
            spread[spread.len() / 2],
            unbatched[unbatched.len() / 2]
        );
        for (name, client) in [("over 3", &three), ("over 3 per call", &per_call)] {
            let calls: Vec<_> = client.client().endpoints().iter().map(|e| e.calls).collect();
            println!("  {name}: calls per instance {calls:?}");
        }
        drop(instances);
    }));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches` runs benches as tests: nothing to check.
    }
    if args.iter().any(|a| a == "--serve") {
        return serve();
    }
    let mode_and_calls = |flag: &str| {
        let at = args.iter().position(|a| a == flag)?;
        let mode = args.get(at + 1).map_or("direct", String::as_str);
        let calls = args
            .get(at + 2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000);
        Some((mode, calls))
    };
    if let Some((mode, calls)) = mode_and_calls("--mem") {
        return mem(mode, calls);
    }
    let number = |flag: &str| {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1)?.parse::<u64>().ok()
    };
    let rounds = number("--rounds").map_or(ROUNDS, |r| r.max(1) as usize);
    let calls = number("--calls").unwrap_or(CALLS);
    let processes = args.iter().any(|a| a == "--servers-process");
    tcp(processes, mode_and_calls("--tcp"), rounds, calls);
}
