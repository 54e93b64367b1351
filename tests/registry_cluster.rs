//! Issue 11's cluster over loopback TCP with real processes: the registry,
//! three self-registering server instances (1 s lease) and a balanced client
//! with 64 calls in flight (`examples/registry_cluster.rs`, whose code this
//! test includes; the child processes are this test binary in the
//! example's roles). It asserts:
//!
//! - SIGKILL of one instance mid-load: no idempotent call fails; the
//!   non-idempotent calls that fail are each `NotRetried { NotIdempotent,
//!   may_have_run: true }` and at most the attempts the killed instance
//!   took and never answered (its calls in flight when it died);
//! - the killed instance leaves the balancer's set within TTL + 4 s (the
//!   registry drops it at its TTL or one `disconnect_grace` of 1 s after its
//!   connection closed, whichever is first; the 4 s margin absorbs a loaded
//!   CI machine's timer and scheduling delays — a missing removal shows up
//!   as the 60 s hang bound instead);
//! - a new instance gets calls once registered (bounded only by the hang
//!   bound);
//! - the registry killed and restarted on the same port: no call of either
//!   kind fails, and the instances register again by themselves.
//!
//! Every wait has a 60 s bound that only catches hangs. `harness = false`:
//! this file's `main` is both the test and, with role arguments, a child.

#[path = "../examples/registry_cluster.rs"]
mod cluster;

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(done) = cluster::child_main(&args) {
        if let Err(error) = done {
            eprintln!("child failed: {error}");
            std::process::exit(1);
        }
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("registry_cluster: test");
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime
        .block_on(cluster::run_cluster(Duration::from_secs(60)))
        .unwrap_or_else(|error| panic!("the cluster run failed: {error}"));
    println!("{report:#?}");
    if let Err(failed) = report.check(Duration::from_secs(4)) {
        panic!("{failed}");
    }
    // The load really ran on every instance, and the kill really caught
    // calls in flight.
    for name in ["ledger-0", "ledger-1", "ledger-2", "ledger-3"] {
        assert!(
            report.answered.get(name).copied().unwrap_or(0) > 0,
            "{name} served nothing"
        );
    }
    assert!(report.reads_ok > 0 && report.transfers_ok > 0);
    assert!(report.unanswered_on_killed <= cluster::CONCURRENCY as u64);
    // The new instance was known before it served; the waits ended well
    // inside their hang bounds (generous: these only catch hangs).
    assert!(report.new_known_after <= report.new_served_after);
    assert!(report.new_served_after < Duration::from_secs(60));
    assert!(report.reregistered_after < Duration::from_secs(60));
    println!("registry_cluster: ok");
}
