//! A cluster found through the registry, in one command: a registry
//! process, three server processes that register themselves with a 1 s
//! lease, and a balanced client that discovers them through the registry
//! and keeps 64 calls in flight. Then, under load:
//!
//! 1. one instance is SIGKILLed: no idempotent call fails, the
//!    non-idempotent calls that fail are at most those that were on it, each
//!    a typed error, and it leaves the set within its TTL;
//! 2. a new instance starts: it gets calls as soon as its registration
//!    reaches the client through the watch;
//! 3. the registry is killed and started again on the same port: no call
//!    fails, and the instances register again by themselves.
//!
//! Prints the per-instance call counts and each step's timing; exits
//! non-zero if a property fails. Run by CI.
//!
//! ```text
//! cargo run --example registry_cluster
//! ```
//!
//! Each process is this binary in another role (`registry ADDR`,
//! `serve NAME REGISTRY`); `tests/registry_cluster.rs` runs the same code.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use courier::client::ReconnectPolicy;
use courier::timer::TokioTimer;
use courier::{CallError, NotRetried};
use courier_balance::{Balanced, ConnectionStatus, EndpointStats};
use courier_registry::{
    Address, EmbeddedRegistry, Endpoint, Registration, RegistryClient, RegistryWatch,
    RemoteRegistrar, StoreConfig,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A ledger whose reads are idempotent and whose transfers are not.
#[courier::service]
pub trait Ledger {
    /// The balance of `account`, and which instance answered.
    #[idempotent]
    async fn balance(&self, account: u64) -> (String, u64);
    /// Moves money (running it twice would move it twice); answers the
    /// instance.
    async fn transfer(&self, id: u64) -> String;
}

struct Instance(String);

impl Ledger for Instance {
    async fn balance(&self, account: u64) -> (String, u64) {
        // Some work, so that calls are in flight when a server dies.
        tokio::time::sleep(Duration::from_millis(2)).await;
        (self.0.clone(), account.wrapping_mul(10))
    }
    async fn transfer(&self, _id: u64) -> String {
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.0.clone()
    }
}

/// The instances' lease TTL.
pub const TTL: Duration = Duration::from_secs(1);
/// Calls in flight.
pub const CONCURRENCY: usize = 64;
/// Every tenth call is a (non-idempotent) transfer.
const TRANSFER_EVERY: u64 = 10;

// ---- the child processes ----

/// Runs a child role if `args` name one (`registry ADDR` or
/// `serve NAME REGISTRY`); `None` if they do not.
pub fn child_main(args: &[String]) -> Option<Result<(), Error>> {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    // A child ends with its parent: when its stdin closes.
    let orphan_exit = || {
        std::thread::spawn(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0);
        })
    };
    match args {
        [role, addr] if role == "registry" => {
            orphan_exit();
            Some(
                runtime()
                    .map_err(Error::from)
                    .and_then(|rt| rt.block_on(registry(addr))),
            )
        }
        [role, name, registry] if role == "serve" => {
            orphan_exit();
            Some(
                runtime()
                    .map_err(Error::from)
                    .and_then(|rt| rt.block_on(serve(name, registry))),
            )
        }
        _ => None,
    }
}

/// Prints the address a child listens on: the parent waits for this line.
fn announce(addr: SocketAddr) -> Result<(), Error> {
    let mut out = std::io::stdout();
    writeln!(out, "{addr}")?;
    out.flush()?;
    Ok(())
}

/// The registry: an embedded registry served over TCP on `addr`.
async fn registry(addr: &str) -> Result<(), Error> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let config = StoreConfig {
        // Past every revision an earlier run handed out, and fresh lease
        // ids (see `StoreConfig`).
        first_revision: u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX),
        lease_seed: since_epoch.as_nanos() as u64 ^ u64::from(std::process::id()),
        ..StoreConfig::default()
    };
    let (registry, expiry) = EmbeddedRegistry::new(config, TokioTimer::new());
    tokio::spawn(expiry);
    let listener = courier_tcp::tokio::TcpListener::bind(addr).await?;
    announce(listener.local_addr()?)?;
    courier_tcp::tokio::builder()
        .serve_with(listener, move |_| registry.connection())
        .await;
    Ok(())
}

/// A server instance: serves `Ledger` on a free port and keeps itself
/// registered (re-registering after the registry restarts).
async fn serve(name: &str, registry: &str) -> Result<(), Error> {
    let registry: SocketAddr = registry.parse()?;
    let listener = courier_tcp::tokio::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = LedgerServer::new(Instance(name.to_string()));
    tokio::spawn(courier_tcp::tokio::builder().serve(listener, server));
    let policy =
        ReconnectPolicy::new().backoff(Duration::from_millis(20), Duration::from_millis(200));
    let (client, driver) = courier_tcp::tokio::connect_reconnecting(registry, policy);
    tokio::spawn(driver);
    let registrar = RemoteRegistrar::new(RegistryClient::new(client), None);
    let endpoint = Endpoint::new("ledger", name, Address::Tcp(addr));
    announce(addr)?;
    Registration::new(endpoint, TTL)
        .retry(Duration::from_millis(20), Duration::from_millis(200))
        .run(
            registrar,
            TokioTimer::new(),
            std::future::pending::<()>(),
            None,
        )
        .await?;
    Ok(())
}

/// A child process; killed (SIGKILL) and reaped when dropped.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    /// Starts this binary as `args` and waits for the address it prints.
    fn start(name: &str, args: &[&str]) -> Result<Self, Error> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .parse()
            .map_err(|_| format!("{name} did not start (said {line:?})"))?;
        Ok(Process { child, addr })
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- the load ----

/// What the callers saw.
#[derive(Default, Debug)]
struct Tally {
    reads_ok: u64,
    reads_failed: Vec<CallError>,
    transfers_ok: u64,
    /// Transfers not re-sent because they may have run: the typed error.
    transfers_refused: u64,
    /// Transfers that failed otherwise (should be none).
    transfers_failed: Vec<CallError>,
    /// Successful answers per instance.
    answered: BTreeMap<String, u64>,
    /// Failures while the registry restarted.
    failed_during_restart: u64,
}

struct Load {
    tally: Mutex<Tally>,
    stop: AtomicBool,
    restarting: AtomicBool,
    next: AtomicU64,
}

type Client = LedgerClient<Balanced<TokioTimer>>;

async fn caller(ledger: Client, load: Arc<Load>) {
    while !load.stop.load(Ordering::Relaxed) {
        let i = load.next.fetch_add(1, Ordering::Relaxed);
        let answer = if i.is_multiple_of(TRANSFER_EVERY) {
            ledger.transfer(i).await.map_err(|e| (false, e))
        } else {
            match ledger.balance(i).await {
                Ok((name, value)) if value == i.wrapping_mul(10) => Ok(name),
                Ok((name, _)) => Ok(format!("{name} (wrong value)")),
                Err(e) => Err((true, e)),
            }
        };
        if answer.is_err() {
            // A failure may come without waiting (no endpoint): let the
            // other tasks run rather than spin.
            tokio::task::yield_now().await;
        }
        let mut tally = load.tally.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Ok(name) => {
                if i.is_multiple_of(TRANSFER_EVERY) {
                    tally.transfers_ok += 1;
                } else {
                    tally.reads_ok += 1;
                }
                *tally.answered.entry(name).or_default() += 1;
            }
            Err((read, error)) => {
                if load.restarting.load(Ordering::Relaxed) {
                    tally.failed_during_restart += 1;
                }
                match (read, error) {
                    (true, error) => tally.reads_failed.push(error),
                    (
                        false,
                        CallError::NotRetried {
                            reason: NotRetried::NotIdempotent,
                            may_have_run: true,
                        },
                    ) => tally.transfers_refused += 1,
                    (false, error) => tally.transfers_failed.push(error),
                }
            }
        }
    }
}

// ---- the scenario ----

/// What a run measured; [`Report::check`] says which property failed.
#[derive(Debug)]
pub struct Report {
    /// Idempotent calls answered.
    pub reads_ok: u64,
    /// Idempotent calls that failed (must be none).
    pub reads_failed: Vec<String>,
    /// Non-idempotent calls answered.
    pub transfers_ok: u64,
    /// Non-idempotent calls refused with `NotRetried { NotIdempotent }`.
    pub transfers_refused: u64,
    /// Non-idempotent calls that failed otherwise (must be none).
    pub transfers_failed: Vec<String>,
    /// Attempts the killed instance took and never answered: the calls in
    /// flight on it when it died.
    pub unanswered_on_killed: u64,
    /// From the SIGKILL to the instance leaving the balancer's set.
    pub killed_left_after: Duration,
    /// From the new instance appearing in the registry to the balancer
    /// knowing it.
    pub new_known_after: Duration,
    /// From the new instance appearing in the registry to its first answer.
    pub new_served_after: Duration,
    /// From the registry's restart to all three instances registered again.
    pub reregistered_after: Duration,
    /// Calls (of either kind) that failed while the registry restarted.
    pub failed_during_restart: u64,
    /// Answers per instance.
    pub answered: BTreeMap<String, u64>,
}

impl Report {
    /// The properties; `grace` bounds how long past the TTL the killed
    /// instance may take to leave the set.
    pub fn check(&self, grace: Duration) -> Result<(), String> {
        let mut failed = Vec::new();
        if !self.reads_failed.is_empty() {
            failed.push(format!(
                "{} idempotent calls failed: {}",
                self.reads_failed.len(),
                summary(&self.reads_failed)
            ));
        }
        if !self.transfers_failed.is_empty() {
            failed.push(format!(
                "{} non-idempotent calls failed with an unexpected error: {}",
                self.transfers_failed.len(),
                summary(&self.transfers_failed)
            ));
        }
        if self.transfers_refused > self.unanswered_on_killed {
            failed.push(format!(
                "{} transfers refused, more than the {} calls in flight on the killed instance",
                self.transfers_refused, self.unanswered_on_killed
            ));
        }
        if self.killed_left_after > TTL + grace {
            failed.push(format!(
                "the killed instance left after {:?}, past TTL {TTL:?} + {grace:?}",
                self.killed_left_after
            ));
        }
        if self.failed_during_restart > 0 {
            failed.push(format!(
                "{} calls failed while the registry restarted",
                self.failed_during_restart
            ));
        }
        if self.answered.get("ledger-3").copied().unwrap_or(0) == 0 {
            failed.push("the new instance served nothing".into());
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

/// Each distinct error with its count.
fn summary(errors: &[String]) -> String {
    let mut counts = BTreeMap::<&str, usize>::new();
    for error in errors {
        *counts.entry(error.as_str()).or_default() += 1;
    }
    format!("{counts:?}")
}

/// Polls `done` every 5 ms until it holds, for at most `limit` (a bound
/// that only catches hangs).
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Result<(), Error> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return Err(format!("gave up after {limit:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn ready(stats: &[EndpointStats], names: &[&str]) -> bool {
    let mut ready: Vec<&str> = stats
        .iter()
        .filter(|e| e.connection == ConnectionStatus::Ready)
        .map(|e| e.instance.as_str())
        .collect();
    ready.sort_unstable();
    ready == names
}

/// Lists the registered instances of `ledger`; empty while the registry
/// is unreachable.
async fn registered(registry: &RegistryClient) -> Vec<String> {
    match registry.list(Some("ledger".into())).await {
        Ok(listing) => listing.endpoints.into_iter().map(|e| e.instance).collect(),
        Err(_) => Vec::new(),
    }
}

/// Runs the whole scenario; `hang` bounds each wait.
pub async fn run_cluster(hang: Duration) -> Result<Report, Error> {
    let mut registry = Process::start("registry", &["registry", "127.0.0.1:0"])?;
    let registry_addr = registry.addr.to_string();
    println!("registry: pid {} on {registry_addr}", registry.child.id());
    let mut instances = Vec::new();
    for i in 0..3 {
        let name = format!("ledger-{i}");
        let process = Process::start(&name, &["serve", &name, &registry_addr])?;
        println!("{name}: pid {} on {}", process.child.id(), process.addr);
        instances.push(process);
    }

    // The client: a watch of `ledger` through a reconnecting registry
    // client, and a balancer over what it finds.
    let policy =
        ReconnectPolicy::new().backoff(Duration::from_millis(20), Duration::from_millis(200));
    let (watch_client, watch_driver) =
        courier_tcp::tokio::connect_reconnecting(registry.addr, policy);
    tokio::spawn(watch_driver);
    let watch = RegistryWatch::new(
        RegistryClient::new(watch_client),
        "ledger",
        TokioTimer::new(),
    )
    .backoff(Duration::from_millis(20), Duration::from_millis(200));
    let connect = |endpoint: &Endpoint| {
        let address = endpoint.address.clone();
        async move {
            match address {
                Address::Tcp(addr) => courier_tcp::tokio::connect(addr)
                    .await
                    .map_err(|e| e.to_string()),
                Address::Unix(path) => Err(format!("not a TCP address: {path}")),
            }
        }
    };
    let (balanced, driver) = Balanced::builder(TokioTimer::new())
        // Well past a TTL plus the instances' retry backoff: a restarted
        // registry has them all again by then.
        .resync_grace(TTL * 5)
        .build(watch, connect);
    let balancer = tokio::spawn(driver);
    let ledger = LedgerClient::new(balanced).with_timeout(Duration::from_secs(10));
    let stats = {
        let ledger = ledger.clone();
        move || ledger.client().endpoints()
    };
    // A second registry client, for the listings printed below.
    let policy =
        ReconnectPolicy::new().backoff(Duration::from_millis(20), Duration::from_millis(200));
    let (lister, lister_driver) = courier_tcp::tokio::connect_reconnecting(registry.addr, policy);
    tokio::spawn(lister_driver);
    let lister = RegistryClient::new(lister).with_timeout(Duration::from_millis(500));

    until("three ready instances", hang, || {
        ready(&stats(), &["ledger-0", "ledger-1", "ledger-2"])
    })
    .await?;
    println!("the balancer found the three instances through the registry");

    let load = Arc::new(Load {
        tally: Mutex::default(),
        stop: AtomicBool::new(false),
        restarting: AtomicBool::new(false),
        next: AtomicU64::new(0),
    });
    let callers: Vec<_> = (0..CONCURRENCY)
        .map(|_| tokio::spawn(caller(ledger.clone(), load.clone())))
        .collect();
    let answered = |name: &str| {
        let tally = load.tally.lock().unwrap_or_else(|e| e.into_inner());
        tally.answered.get(name).copied().unwrap_or(0)
    };
    until("calls on every instance", hang, || {
        ["ledger-0", "ledger-1", "ledger-2"]
            .iter()
            .all(|n| answered(n) >= 200)
    })
    .await?;

    // 1. SIGKILL ledger-1 mid-load.
    let victim = instances.get_mut(1).ok_or("no ledger-1")?;
    victim.kill();
    let killed = Instant::now();
    println!("\n1. killed ledger-1 (SIGKILL) with {CONCURRENCY} calls in flight");
    // Its attempts stop growing once its connection is down; the last
    // count seen before it leaves the set is the total.
    let mut attempts_on_killed = 0;
    until("ledger-1 to leave the set", hang, || {
        let now = stats();
        match now.iter().find(|e| e.instance == "ledger-1") {
            Some(e) => {
                attempts_on_killed = e.calls;
                false
            }
            None => true,
        }
    })
    .await?;
    let killed_left_after = killed.elapsed();
    println!("   ledger-1 left the set {killed_left_after:?} after the kill (TTL {TTL:?})");

    // 2. A new instance.
    let started = Instant::now();
    instances.push(Process::start(
        "ledger-3",
        &["serve", "ledger-3", &registry_addr],
    )?);
    println!("\n2. started ledger-3");
    // Polls the registry's listing, the balancer's set and the answers.
    let (mut in_registry, mut known, mut served) = (None, None, None);
    let limit = Instant::now() + hang;
    while served.is_none() || in_registry.is_none() {
        if Instant::now() > limit {
            return Err("ledger-3 got no calls".into());
        }
        if in_registry.is_none() && registered(&lister).await.iter().any(|n| n == "ledger-3") {
            in_registry = Some(Instant::now());
        }
        if known.is_none() && stats().iter().any(|e| e.instance == "ledger-3") {
            known = Some(Instant::now());
        }
        if served.is_none() && answered("ledger-3") > 0 {
            served = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let now = Instant::now();
    let (in_registry, served) = (in_registry.unwrap_or(now), served.unwrap_or(now));
    let known = known.unwrap_or(served);
    // The listing is polled, so it may be seen after the balancer already
    // knew: then the registration-to-traffic time is at most this.
    let first = in_registry.min(known);
    let new_known_after = known.saturating_duration_since(first);
    let new_served_after = served.saturating_duration_since(first);
    println!(
        "   registered {:?} after its process started; in the balancer's set {new_known_after:?} \
         and first answer {new_served_after:?} after it was registered",
        first.duration_since(started)
    );

    // 3. Restart the registry on the same port.
    println!("\n3. restarting the registry on {registry_addr}");
    load.restarting.store(true, Ordering::Relaxed);
    registry.kill();
    let restarted = Instant::now();
    let mut registry = Process::start("registry", &["registry", &registry_addr])?;
    println!("   registry back: pid {}", registry.child.id());
    let want = ["ledger-0", "ledger-2", "ledger-3"];
    let mut listed = Vec::new();
    let limit = Instant::now() + hang;
    while listed != want {
        if Instant::now() > limit {
            return Err(format!("the instances did not register again: {listed:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        listed = registered(&lister).await;
    }
    let reregistered_after = restarted.elapsed();
    println!("   all three registered again {reregistered_after:?} after the restart");
    until("the watch to resume", hang, || {
        ledger.client().discovery_error().is_none() && ready(&stats(), &want)
    })
    .await?;
    // Calls go on for a TTL more: lingering endpoints confirmed or removed.
    tokio::time::sleep(TTL).await;
    load.restarting.store(false, Ordering::Relaxed);
    println!("   the watch resumed; the set is {want:?}");

    load.stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await?;
    }
    println!("\nper instance (balancer's view):");
    for e in stats() {
        println!(
            "  {:<9} {:>6} calls  {:>3} failures  latency {:>9?}  {:?}",
            e.instance, e.calls, e.failures, e.latency, e.connection
        );
    }
    let tally = std::mem::take(&mut *load.tally.lock().unwrap_or_else(|e| e.into_inner()));
    println!("answers per instance (callers' view): {:?}", tally.answered);
    let unanswered_on_killed =
        attempts_on_killed.saturating_sub(tally.answered.get("ledger-1").copied().unwrap_or(0));
    println!(
        "reads (idempotent): {} ok, {} failed",
        tally.reads_ok,
        tally.reads_failed.len()
    );
    println!(
        "transfers (not idempotent): {} ok, {} not re-sent because they may have run on \
         ledger-1 (it died with {unanswered_on_killed} calls unanswered), {} failed otherwise",
        tally.transfers_ok,
        tally.transfers_refused,
        tally.transfers_failed.len()
    );
    drop(stats);
    drop(ledger);
    balancer.await?;
    registry.kill();
    Ok(Report {
        reads_ok: tally.reads_ok,
        reads_failed: tally.reads_failed.iter().map(|e| e.to_string()).collect(),
        transfers_ok: tally.transfers_ok,
        transfers_refused: tally.transfers_refused,
        transfers_failed: tally
            .transfers_failed
            .iter()
            .map(|e| e.to_string())
            .collect(),
        unanswered_on_killed,
        killed_left_after,
        new_known_after,
        new_served_after,
        reregistered_after,
        failed_during_restart: tally.failed_during_restart,
        answered: tally.answered,
    })
}

#[allow(dead_code)] // The test includes this file and has its own `main`.
fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(done) = child_main(&args) {
        return done;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run_cluster(Duration::from_secs(30)))?;
    // The kill is seen at once (the connection closes) and the registry
    // drops the instance within its TTL; allow 1 s for the watch's trip.
    report.check(Duration::from_secs(1))?;
    println!("ok: every property held");
    Ok(())
}
