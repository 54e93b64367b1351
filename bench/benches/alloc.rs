//! Steady-state heap allocations per call, client and server apart:
//! `cargo bench -p courier-bench --bench alloc`.

use courier_bench::alloc_count::{per_call, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
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
