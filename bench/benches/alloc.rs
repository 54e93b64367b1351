//! Steady-state heap allocations per call, client and server apart:
//! `cargo bench -p courier-bench --bench alloc`.
//!
//! `--calls N [--conc C] [--payload B]` instead makes one run of C callers
//! x N calls over `courier-mem` on one thread and prints nothing else: a
//! fixed workload for `valgrind --tool=callgrind`, whose instruction counts
//! are repeatable on a noisy machine.

use courier_bench::alloc_count::{per_call, run, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    if args.iter().any(|a| a == "--calls") {
        let (conc, calls) = (flag("--conc", 64) as usize, flag("--calls", 0));
        let (client, server) = run(conc, calls, flag("--payload", 0) as usize);
        println!(
            "{} calls: {client} client and {server} server allocations",
            conc as u64 * calls
        );
        return;
    }
    println!("| call | conc | client allocs/call | server allocs/call | total |");
    println!("|---|--:|--:|--:|--:|");
    for (name, payload) in [
        ("add(u64,u64)", 0),
        ("echo 16 B", 16),
        ("echo 4096 B", 4096),
    ] {
        for conc in [1, 64] {
            let a = per_call(conc, payload);
            println!(
                "| {name} | {conc} | {:.2} | {:.2} | {:.2} |",
                a.client,
                a.server,
                a.total()
            );
        }
    }
}
