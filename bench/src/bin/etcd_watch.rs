//! etcd's watch fan-out, measured like `registry-bench` measures courier's
//! registry, for BENCHMARKS.md: a real etcd on loopback (a temporary
//! directory, free ports, stopped at the end), 10,000 keys under one
//! prefix, 1,000 watchers of that prefix, one client connection each,
//! each reading the prefix first (its snapshot) and then watching from
//! the revision after it.
//!
//! Measures:
//!
//! - put → every watcher has it: for each of `PROBES` new keys, the time
//!   from sending the put until the last watcher received the event;
//! - lease expiry → every watcher saw the delete: keys under a 1 s lease
//!   (etcd's shortest) never renewed, timed from the lease's deadline.
//!
//! ```text
//! cargo run --release -p courier-bench --features etcd --bin etcd-watch-bench
//! ```
//!
//! The etcd binary is `$COURIER_ETCD_BIN`, else `etcd` on the `PATH`
//! (Debian: `apt-get install etcd-server`). Sizes: `ETCD_BENCH_INSTANCES`,
//! `ETCD_BENCH_WATCHERS` (defaults 10,000 and 1,000).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions, WatchOptions};
use futures::StreamExt;

const PREFIX: &str = "/courier-bench/bench/";
const PROBES: usize = 200;
const EXPIRIES: usize = 10;
/// How long etcd may take to start: bounds a hang only.
const STARTUP: Duration = Duration::from_secs(30);

fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A value shaped like the registry's endpoint entry.
fn value(n: usize) -> String {
    format!(
        r#"{{"service":"bench","instance":"i-{n}","address":"tcp://127.0.0.1:{}","weight":1,"metadata":{{"version":"1.4.2","zone":"eu-1"}}}}"#,
        10_000 + n % 50_000
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// etcd, alone in its cluster, on a temporary directory; killed on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temporary directory");
        let bin = std::env::var("COURIER_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log file");
        let child = Command::new(&bin)
            .arg("--name=courier-bench")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=courier-bench={peer}"))
            .arg("--initial-cluster-state=new")
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run etcd ({bin}): {e}"));
        Etcd {
            child,
            url,
            _dir: dir,
        }
    }

    async fn connect(&self) -> Client {
        let started = Instant::now();
        loop {
            if let Ok(mut client) = Client::connect([self.url.as_str()], None).await {
                if client.get("/", None).await.is_ok() {
                    return client;
                }
            }
            assert!(started.elapsed() < STARTUP, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// When each probe was sent, and how many watchers have seen it.
struct Probes {
    watchers: usize,
    sent: Mutex<Vec<Option<Instant>>>,
    seen: Vec<AtomicUsize>,
    last: Mutex<Vec<Option<Instant>>>,
    each: Mutex<Vec<Duration>>,
}

impl Probes {
    fn saw(&self, k: usize) {
        let now = Instant::now();
        if let Some(sent) = self.sent.lock().unwrap().get(k).copied().flatten() {
            self.each.lock().unwrap().push(now - sent);
        }
        let seen = self.seen[k].fetch_add(1, Ordering::SeqCst) + 1;
        if seen % self.watchers == 0 {
            self.last.lock().unwrap()[k] = Some(now);
        }
    }
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
    let instances = size("ETCD_BENCH_INSTANCES", 10_000);
    let watchers = size("ETCD_BENCH_WATCHERS", 1_000).max(1);
    let etcd = Etcd::start();
    let writer = etcd.connect().await;

    let t = Instant::now();
    let puts = (0..instances).map(|n| {
        let mut client = writer.clone();
        async move {
            client
                .put(format!("{PREFIX}i-{n}"), value(n), None)
                .await
                .expect("put");
        }
    });
    futures::stream::iter(puts)
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    println!("put {instances} keys in {:?}", t.elapsed());

    let probes = Arc::new(Probes {
        watchers,
        sent: Mutex::new(vec![None; PROBES + EXPIRIES]),
        seen: (0..PROBES + EXPIRIES)
            .map(|_| AtomicUsize::new(0))
            .collect(),
        last: Mutex::new(vec![None; PROBES + EXPIRIES]),
        each: Mutex::new(Vec::new()),
    });
    let ready = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut watches = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let mut client = Client::connect([etcd.url.as_str()], None)
            .await
            .expect("connect");
        // The snapshot: the whole prefix, then a watch from the next
        // revision (what a discovery client does).
        let listed = client
            .get(PREFIX, Some(GetOptions::new().with_prefix()))
            .await
            .expect("range");
        assert_eq!(listed.kvs().len(), instances);
        let revision = listed.header().expect("header").revision();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream = client.watch(PREFIX, Some(options)).await.expect("watch");
        let probes = probes.clone();
        ready.fetch_add(1, Ordering::SeqCst);
        watches.push(tokio::spawn(async move {
            let _keep = client;
            while let Ok(Some(response)) = stream.message().await {
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key());
                    if let Some(k) = key
                        .strip_prefix(PREFIX)
                        .and_then(|k| k.strip_prefix("probe-"))
                    {
                        probes.saw(k.parse().expect("probe number"));
                    }
                }
            }
        }));
    }
    println!(
        "{watchers} watchers read their {instances}-key snapshot and started watching in {:?}",
        t.elapsed()
    );

    // Put → every watcher.
    let mut client = writer.clone();
    let mut fan_out = Vec::with_capacity(PROBES);
    for k in 0..PROBES {
        probes.sent.lock().unwrap()[k] = Some(Instant::now());
        client
            .put(format!("{PREFIX}probe-{k}"), value(k), None)
            .await
            .expect("put");
        while probes.seen[k].load(Ordering::SeqCst) < watchers {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sent = probes.sent.lock().unwrap()[k].unwrap();
        let last = probes.last.lock().unwrap()[k].unwrap();
        fan_out.push(last - sent);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fan_out.sort();
    let mut each = std::mem::take(&mut *probes.each.lock().unwrap());
    each.sort();

    // Lease expiry → every watcher saw the delete (the put is counted too).
    let mut expiry = Vec::with_capacity(EXPIRIES);
    for e in 0..EXPIRIES {
        let k = PROBES + e;
        let lease = client.lease_grant(1, None).await.expect("lease");
        let granted = Instant::now();
        client
            .put(
                format!("{PREFIX}probe-{k}"),
                value(k),
                Some(PutOptions::new().with_lease(lease.id())),
            )
            .await
            .expect("put");
        let deadline = granted + Duration::from_secs(lease.ttl().max(0) as u64);
        while probes.seen[k].load(Ordering::SeqCst) < 2 * watchers {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        expiry.push(Instant::now().saturating_duration_since(deadline));
    }
    expiry.sort();

    println!();
    println!("| measure (etcd) | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| put → all {watchers} watchers ({PROBES} probes) | {} | {} | {} |",
        ms(percentile(&fan_out, 0.5)),
        ms(percentile(&fan_out, 0.99)),
        ms(*fan_out.last().unwrap())
    );
    println!(
        "| put → one watcher ({} deliveries) | {} | {} | {} |",
        each.len(),
        ms(percentile(&each, 0.5)),
        ms(percentile(&each, 0.99)),
        ms(*each.last().unwrap())
    );
    println!(
        "| lease (1 s) expiry → all watchers saw the delete, from the deadline ({EXPIRIES} leases) | {} | {} | {} |",
        ms(percentile(&expiry, 0.5)),
        ms(percentile(&expiry, 0.99)),
        ms(*expiry.last().unwrap())
    );
    for watch in watches {
        watch.abort();
    }
    drop(etcd);
}
