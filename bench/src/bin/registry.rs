//! The registry under load: 10,000 registered instances (heartbeating) and
//! 1,000 watchers of their service over loopback TCP, all in one process.
//!
//! Measures (printed as a table for BENCHMARKS.md):
//!
//! - registration → every watcher has it: for each of `PROBES` new
//!   instances, the time from sending the registration until the last of
//!   the 1,000 watchers received its `Added` (and each watcher's own delay);
//! - missed TTL → every watcher saw the removal: instances registered with
//!   a short TTL and never renewed, timed from the lease's deadline until
//!   the last watcher received its `Removed`;
//! - CPU time per registration fanned out (the process's, both ends, all
//!   threads, over the probes): unlike the latencies it hardly depends on
//!   what else runs on the machine;
//! - allocations per delivery (the process's, over the probes, divided by
//!   the deliveries; the heartbeats meanwhile are counted too);
//! - memory per instance and per watcher: live heap bytes of the registry's
//!   store alone (a counting allocator), and of the whole process over TCP.
//!
//! The measurement itself takes no lock the watchers share: each records
//! its sighting in atomics, and the last one wakes the prober (which does
//! not poll on a timer while a fan-out runs).
//!
//! ```text
//! cargo run --release -p courier-bench --bin registry-bench
//! ```
//!
//! With `REGISTRY_BENCH_ADDR=host:port` it measures a registry running in
//! another process (`courier-registry serve`) instead of an embedded one:
//! the store's memory and checks are then skipped, and the process memory
//! is the clients' only. `REGISTRY_BENCH_TRACE=1` prints each probe's
//! fan-out and each round of heartbeats on stderr, timed from the start,
//! to see what a slow probe ran beside.
//!
//! Each instance renews its lease every 5 s, the renewals of the 1,000
//! instances of a registrar connection spread evenly over the 5 s (one every
//! 5 ms), as independent instances' heartbeats are; `REGISTRY_BENCH_BURST=1`
//! sends each connection's 1,000 renewals back to back once per 5 s instead
//! (a harsher, correlated load).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier::timer::TokioTimer;
use courier_registry::{
    Address, Change, EmbeddedRegistry, Endpoint, RegistryClient, Store, StoreConfig,
};
use futures::StreamExt;

/// Live heap bytes of the whole process.
///
/// Counted in per-thread stripes: one shared counter was a cache line both
/// worker threads fought over at every allocation, a cost the measured
/// fan-out paid (tens of allocations per delivery).
struct LiveBytes;

const STRIPES: usize = 16;

/// One thread's live bytes and allocations made.
#[repr(align(128))]
struct Stripe(AtomicIsize, AtomicUsize);

static LIVE: [Stripe; STRIPES] =
    [const { Stripe(AtomicIsize::new(0), AtomicUsize::new(0)) }; STRIPES];

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised and without a destructor, so the allocator may
    // touch it at any time.
    static STRIPE: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// This thread's stripe: the threads in turn, as they first allocate.
fn stripe() -> &'static Stripe {
    let index = STRIPE
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES);
            }
            s.get()
        })
        .unwrap_or(0);
    &LIVE[index]
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter only observes sizes.
unsafe impl GlobalAlloc for LiveBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let stripe = stripe();
        stripe
            .0
            .fetch_add(layout.size() as isize, Ordering::Relaxed);
        stripe.1.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        stripe()
            .0
            .fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let stripe = stripe();
        stripe.0.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        stripe.1.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: LiveBytes = LiveBytes;

fn live() -> isize {
    LIVE.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
}

/// Allocations (and reallocations) made by the whole process so far.
fn allocations() -> usize {
    LIVE.iter().map(|s| s.1.load(Ordering::Relaxed)).sum()
}

/// Sizes, overridable for a quick look: `REGISTRY_BENCH_INSTANCES`,
/// `REGISTRY_BENCH_WATCHERS` (defaults 10,000 and 1,000).
fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

static SIZES: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();

fn instances() -> usize {
    SIZES
        .get_or_init(|| {
            (
                size("REGISTRY_BENCH_INSTANCES", 10_000).max(REGISTRAR_CONNECTIONS),
                size("REGISTRY_BENCH_WATCHERS", 1_000).max(1),
            )
        })
        .0
}

fn watchers() -> usize {
    instances();
    SIZES.get().map_or(1, |s| s.1)
}
const REGISTRAR_CONNECTIONS: usize = 10;
const PROBES: usize = 200;

/// The first probes after the 1,000 snapshots: each watcher's credit window,
/// narrowed by its ~800 KB snapshot, widens again over about 15 items and
/// grants credit meanwhile. A second row reports the probes after them.
const UNSETTLED: usize = 20;
const EXPIRIES: usize = 20;
const SERVICE: &str = "bench";

fn endpoint(instance: String, n: usize) -> Endpoint {
    let port = 10_000 + (n % 50_000) as u16;
    Endpoint::new(
        SERVICE,
        instance,
        Address::Tcp(([127, 0, 0, 1], port).into()),
    )
    .with_metadata("zone", "eu-1")
    .with_metadata("version", "1.4.2")
}

fn config() -> StoreConfig {
    StoreConfig {
        max_instances_per_owner: instances(),
        max_watchers_per_owner: watchers(),
        ..StoreConfig::default()
    }
}

/// Memory of the store alone: instances, then watchers with their
/// snapshot delivered.
fn store_memory() -> (f64, f64) {
    let before = live();
    let mut store = Store::new(config());
    for n in 0..instances() {
        store
            .register(
                1,
                endpoint(format!("i-{n}"), n),
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .unwrap();
    }
    let instances = live() - before;
    let before = live();
    let mut ids = Vec::with_capacity(watchers());
    for _ in 0..watchers() {
        let id = store.watch(2, SERVICE, None).unwrap();
        drop(store.next_event(id, None));
        ids.push(id);
    }
    let watchers = live() - before - (ids.capacity() * 8) as isize;
    drop(store);
    (
        instances as f64 / self::instances() as f64,
        watchers as f64 / self::watchers() as f64,
    )
}

/// How often each instance renews its lease.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);

/// Registrar `c`'s renewals of `leases`: each lease once per
/// [`HEARTBEAT_PERIOD`], the leases' renewals spread evenly over the period
/// (with `REGISTRY_BENCH_BURST=1`: all of them back to back at the start of
/// each period).
///
/// Spread is what 10,000 independent instances do, each heartbeating on
/// its own phase; the bursts (the bench's earlier load) make one round of
/// 1,000 renewals per connection, which a probe running beside it waits
/// behind.
fn heartbeats(
    c: usize,
    leases: Arc<[courier_registry::LeaseId]>,
) -> impl futures::Stream<Item = courier_registry::LeaseId> + Send + 'static {
    let burst = std::env::var_os("REGISTRY_BENCH_BURST").is_some();
    let gap = HEARTBEAT_PERIOD / u32::try_from(leases.len().max(1)).unwrap_or(u32::MAX);
    futures::stream::unfold(0usize, move |i| {
        let leases = leases.clone();
        async move {
            let round_start = i % leases.len() == 0;
            if burst {
                if i > 0 && round_start {
                    tokio::time::sleep(HEARTBEAT_PERIOD).await;
                }
            } else if i > 0 {
                tokio::time::sleep(gap).await;
            }
            if trace() && round_start {
                eprintln!("{:>9.3} ms heartbeats of registrar {c}", since_start());
            }
            Some((leases[i % leases.len()], i + 1))
        }
    })
}

async fn connect(addr: std::net::SocketAddr) -> RegistryClient {
    let builder = courier::ClientBuilder::new()
        .timer(TokioTimer::new())
        .max_frame(16 << 20);
    let (client, driver) = courier_tcp::tokio::connect_with(addr, builder)
        .await
        .unwrap();
    tokio::spawn(driver);
    RegistryClient::new(client)
}

/// When each probe was sent, how many watchers have seen it, when the
/// last one did, and each watcher's delay. Lock-free: the 1,000 watchers
/// record a sighting each at the moment measured, and a shared lock (or a
/// growing vector behind one) would be part of what is timed.
struct Probes {
    /// The clock's origin: times are nanoseconds after it (0: unset).
    origin: Instant,
    sent: Vec<AtomicU64>,
    seen: Vec<AtomicUsize>,
    last: Vec<AtomicU64>,
    /// Each watcher's delay for the timed probes: `watchers()` slots per
    /// probe, taken in the order of the sightings.
    each: Vec<AtomicU64>,
    timed: usize,
    /// Told when the last watcher saw a probe (its `Added`, or its
    /// `Removed`): the prober waits for it instead of polling on a timer
    /// while the fan-out runs.
    all_seen: tokio::sync::Notify,
}

impl Probes {
    fn new(n: usize, timed: usize) -> Self {
        let atomics = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Probes {
            origin: Instant::now(),
            sent: atomics(n),
            seen: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            last: atomics(n),
            each: atomics(timed * watchers()),
            timed,
            all_seen: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        (self.origin.elapsed().as_nanos() as u64).max(1)
    }

    fn send(&self, k: usize) {
        self.sent[k].store(self.now(), Ordering::SeqCst);
    }

    fn saw(&self, k: usize) {
        let now = self.now();
        let sighting = self.seen[k].fetch_add(1, Ordering::SeqCst);
        let sent = self.sent[k].load(Ordering::SeqCst);
        if k < self.timed && sent != 0 && sighting < watchers() {
            self.each[k * watchers() + sighting].store(now - sent, Ordering::Relaxed);
        }
        if sighting + 1 == watchers() {
            self.last[k].store(now, Ordering::SeqCst);
        }
        if sighting + 1 == watchers() || sighting + 1 == 2 * watchers() {
            self.all_seen.notify_one();
        }
    }

    /// Until probe `k` was seen `sightings` times.
    async fn wait_seen(&self, k: usize, sightings: usize) {
        // A permit left by an earlier probe only makes this check again.
        while self.seen[k].load(Ordering::SeqCst) < sightings {
            self.all_seen.notified().await;
        }
    }

    /// From sending probe `k` to the last watcher's sighting.
    fn fan_out(&self, k: usize) -> Duration {
        let sent = self.sent[k].load(Ordering::SeqCst);
        let last = self.last[k].load(Ordering::SeqCst);
        Duration::from_nanos(last.saturating_sub(sent))
    }

    fn each(&self) -> Vec<Duration> {
        let mut each: Vec<Duration> = self
            .each
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .filter(|&d| d != 0)
            .map(Duration::from_nanos)
            .collect();
        each.sort();
        each
    }
}

/// `REGISTRY_BENCH_TRACE=1`: each probe's fan-out and each round of
/// heartbeats, on stderr, timed from the start (to see what a slow probe
/// ran beside).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("REGISTRY_BENCH_TRACE").is_some())
}

fn since_start() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
}

/// CPU time the whole process has used (all threads, user and system),
/// from `/proc/self/stat` (in clock ticks of 10 ms); `None` where that is
/// not available. Unlike latencies, it hardly depends on what else runs on
/// the machine.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    // After the command: state is field 3; utime and stime are 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    since_start();
    let (per_instance, per_watcher) = store_memory();
    println!("store: {per_instance:.0} B per instance, {per_watcher:.0} B per watcher");

    // Allocated before the memory is counted: the measurement's own
    // records are not the watchers' memory.
    let probes = Arc::new(Probes::new(PROBES + EXPIRIES, PROBES));
    let start_live = live();
    let external: Option<std::net::SocketAddr> = std::env::var("REGISTRY_BENCH_ADDR")
        .ok()
        .map(|a| a.parse().expect("REGISTRY_BENCH_ADDR: host:port"));
    let (registry, expiry) = EmbeddedRegistry::new(config(), TokioTimer::new());
    let listener = courier_tcp::tokio::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = external.unwrap_or(listener.local_addr().unwrap());
    let served = registry.clone();
    // One task per connection, so snapshots encode on both cores.
    if external.is_none() {
        tokio::spawn(expiry);
        tokio::spawn(
            courier_tcp::tokio::builder()
                .max_frame(16 << 20)
                .max_connections(100_000)
                .serve_spawned(
                    listener,
                    courier_net::PerConnection(move |_: &std::net::SocketAddr| served.connection()),
                    |task| {
                        tokio::spawn(task);
                    },
                ),
        );
    }
    let embedded = external.is_none();

    // 10,000 instances over 10 connections, each renewing its leases
    // every 5 s on one keep-alive stream (TTL 30 s), spread over the period.
    let t = Instant::now();
    let mut registrars = Vec::new();
    for c in 0..REGISTRAR_CONNECTIONS {
        let client = connect(addr).await;
        let per = instances() / REGISTRAR_CONNECTIONS;
        let mut leases = Vec::with_capacity(per);
        for i in 0..per {
            let n = c * per + i;
            let lease = client
                .register(None, endpoint(format!("i-{n}"), n), Duration::from_secs(30))
                .await
                .unwrap()
                .unwrap();
            leases.push(lease);
        }
        // Shared, not cloned per heartbeat (a copy of 1,000 leases per
        // item was 80 MB of copying per round of the bench's own load).
        let leases: Arc<[_]> = leases.into();
        let beats = heartbeats(c, leases);
        let keeper = client.clone();
        tokio::spawn(async move {
            let mut answers = keeper.keep_alive(None, beats);
            while let Some(answer) = answers.next().await {
                answer.unwrap().unwrap();
            }
        });
        registrars.push(client);
    }
    println!("registered {} instances in {:?}", instances(), t.elapsed());
    if embedded {
        assert_eq!(registry.instances(), instances());
    }
    let after_instances = live();

    // 1,000 watchers, one connection each.
    let snapshots = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    for _ in 0..watchers() {
        let client = connect(addr).await;
        let probes = probes.clone();
        let snapshots = snapshots.clone();
        tokio::spawn(async move {
            let mut events = client.watch(SERVICE.into(), None);
            while let Some(event) = events.next().await {
                let event = event.unwrap().unwrap();
                match event.change {
                    Change::Snapshot { endpoints, .. } => {
                        assert_eq!(endpoints.len(), instances());
                        snapshots.fetch_add(1, Ordering::SeqCst);
                    }
                    Change::Added(e) => {
                        if let Some(k) = e.instance.strip_prefix("probe-") {
                            probes.saw(k.parse().unwrap());
                        }
                    }
                    Change::Removed { instance } => {
                        if let Some(k) = instance.strip_prefix("probe-") {
                            probes.saw(k.parse().unwrap());
                        }
                    }
                    Change::Updated(_) => {}
                }
            }
        });
    }
    while snapshots.load(Ordering::SeqCst) < watchers() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "{} watchers got their {}-endpoint snapshot in {:?}",
        watchers(),
        instances(),
        t.elapsed()
    );
    let after_watchers = live();
    if embedded {
        assert_eq!(registry.instances(), instances(), "no lease lapsed");
    }

    // Registration → every watcher.
    let writer = connect(addr).await;
    let mut fan_out = Vec::with_capacity(PROBES);
    let cpu_before = cpu_time();
    let allocations_before = allocations();
    for k in 0..PROBES {
        probes.send(k);
        writer
            .register(
                None,
                endpoint(format!("probe-{k}"), k),
                Duration::from_secs(600),
            )
            .await
            .unwrap()
            .unwrap();
        probes.wait_seen(k, watchers()).await;
        fan_out.push(probes.fan_out(k));
        if trace() {
            eprintln!(
                "{:>9.3} ms probe {k}: {}",
                since_start(),
                ms(probes.fan_out(k))
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fan_out_in_order = fan_out.clone();
    fan_out.sort();
    let cpu_per_probe = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before) / PROBES as u32);
    let allocations_per_delivery =
        allocations().saturating_sub(allocations_before) as f64 / (PROBES * watchers()) as f64;
    let each = probes.each();

    // Missed TTL → every watcher saw the removal. The probe's Added is
    // counted too, so the removal is the 2×WATCHERS-th sighting.
    let mut expiry = Vec::with_capacity(EXPIRIES);
    let ttl = Duration::from_millis(200);
    for e in 0..EXPIRIES {
        let k = PROBES + e;
        let registered = Instant::now();
        writer
            .register(None, endpoint(format!("probe-{k}"), k), ttl)
            .await
            .unwrap()
            .unwrap();
        let deadline = registered + ttl;
        probes.wait_seen(k, 2 * watchers()).await;
        expiry.push(Instant::now().saturating_duration_since(deadline));
    }
    expiry.sort();

    let whole_instance = (after_instances - start_live) as f64 / instances() as f64;
    let whole_watcher = (after_watchers - after_instances) as f64 / watchers() as f64;
    println!();
    println!("| measure | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| registration → all {} watchers ({PROBES} probes) | {} | {} | {} |",
        watchers(),
        ms(percentile(&fan_out, 0.5)),
        ms(percentile(&fan_out, 0.99)),
        ms(*fan_out.last().unwrap())
    );
    let mut settled: Vec<Duration> = fan_out_in_order.get(UNSETTLED..).unwrap_or(&[]).to_vec();
    settled.sort();
    if let Some(max) = settled.last() {
        println!(
            "| registration → all {} watchers, probes {UNSETTLED}–{} (windows settled after the snapshots) | {} | {} | {} |",
            watchers(),
            PROBES - 1,
            ms(percentile(&settled, 0.5)),
            ms(percentile(&settled, 0.99)),
            ms(*max)
        );
    }
    println!(
        "| registration → one watcher ({} deliveries) | {} | {} | {} |",
        each.len(),
        ms(percentile(&each, 0.5)),
        ms(percentile(&each, 0.99)),
        ms(*each.last().unwrap())
    );
    println!(
        "| missed TTL (200 ms) → all watchers saw the removal, from the deadline ({EXPIRIES} leases) | {} | {} | {} |",
        ms(percentile(&expiry, 0.5)),
        ms(percentile(&expiry, 0.99)),
        ms(*expiry.last().unwrap())
    );
    if let Some(cpu) = cpu_per_probe {
        println!(
            "| CPU time per registration fanned out to all {} watchers (both ends, all threads) | {} | | |",
            watchers(),
            ms(cpu)
        );
    }
    println!(
        "| allocations per delivery over the probes (both ends, heartbeats included) | {allocations_per_delivery:.2} | | |"
    );
    println!();
    println!("| memory | bytes |");
    println!("|---|---|");
    println!("| per instance, registry store | {per_instance:.0} |");
    println!("| per watcher, registry store (snapshot sent) | {per_watcher:.0} |");
    println!("| per instance, whole process over TCP (both ends) | {whole_instance:.0} |");
    println!("| per watcher, whole process over TCP (both ends, one connection each) | {whole_watcher:.0} |");
    drop(registrars);
    std::process::exit(0);
}
