//! The allocation budget of a call: steady-state heap allocations per
//! `add(u64,u64)` call, client and server together, stay at two or fewer.
//! (A count, not a timing: it is deterministic.)

use courier_bench::alloc_count::{per_call, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn add_allocates_at_most_two_per_call() {
    for conc in [1, 16] {
        let a = per_call(conc, 0);
        eprintln!(
            "conc={conc}: client {:.3}, server {:.3} allocations per call",
            a.client, a.server
        );
        assert!(a.total() <= 2.0, "conc={conc}: {a:?}");
        // The client path encodes into a shared buffer and parks in a slot.
        assert!(a.client < 0.01, "conc={conc}: {a:?}");
    }
}
