//! Load balancing and failover across real processes: three server
//! processes on TCP, one balanced client with 64 calls in flight; one
//! server is killed (SIGKILL) mid-load. Idempotent calls all succeed (the
//! ones on the dead server are re-sent elsewhere); non-idempotent calls
//! that were on it fail with a typed error and are not re-sent. Prints the
//! per-instance call counts and the failover. Run by CI.
//!
//! ```text
//! cargo run --example balanced_cluster
//! ```
//!
//! Discovery here is a fixed list; with the courier registry or etcd the
//! dead instance would also leave the set when its lease expires.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use courier::{CallError, NotRetried};
use courier_balance::Balanced;
use courier_registry::{Address, Change, Endpoint, Event, SnapshotKind};
use futures::stream::{self, StreamExt};

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
        async_io::Timer::after(Duration::from_millis(2)).await;
        (self.0.clone(), account * 10)
    }
    async fn transfer(&self, _id: u64) -> String {
        async_io::Timer::after(Duration::from_millis(2)).await;
        self.0.clone()
    }
}

const CALLS: u64 = 3000;
const CONCURRENCY: usize = 64;
const KILL_AFTER: u64 = 1000;

/// A server process: serves until killed, or until its parent goes away
/// (its stdin closes).
fn serve(name: String) -> Result<(), Box<dyn std::error::Error>> {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    smol::block_on(async {
        let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        courier_tcp::builder()
            .serve(listener, LedgerServer::new(Instance(name)))
            .await;
        Ok(())
    })
}

/// Starts a server process; returns it and its address.
fn start(name: &str) -> Result<(Child, std::net::SocketAddr), Box<dyn std::error::Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok((child, line.trim().parse()?))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, name] = args.as_slice() {
        if flag == "--serve" {
            return serve(name.clone());
        }
    }

    let mut children = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..3 {
        let name = format!("ledger-{i}");
        let (child, addr) = start(&name)?;
        println!("{name}: pid {} on {addr}", child.id());
        endpoints.push(Endpoint::new("ledger", name, Address::Tcp(addr)));
        children.push(child);
    }
    let change = Change::Snapshot {
        endpoints,
        kind: SnapshotKind::Initial,
    };
    let discover = stream::iter([Ok(Event {
        revision: 1,
        change,
    })])
    .chain(stream::pending());
    let connect = |endpoint: &Endpoint| {
        let address = endpoint.address.clone();
        async move {
            match address {
                Address::Tcp(addr) => courier_tcp::connect(addr).await.map_err(|e| e.to_string()),
                Address::Unix(path) => Err(format!("not a TCP address: {path}")),
            }
        }
    };
    let timer = courier::timer::AsyncIoTimer::new();
    let (balanced, driver) = Balanced::builder(timer).build(discover, connect);
    let ledger = LedgerClient::new(balanced).with_timeout(Duration::from_secs(10));

    let victim = children.get_mut(1).ok_or("no second server")?;
    let outcome = smol::block_on(async {
        let calls = async move {
            let mut done = 0u64;
            let mut killed = false;
            let (mut reads_failed, mut transfers_ok, mut transfers_refused) = (0u64, 0u64, 0u64);
            let mut results = stream::iter(0..CALLS)
                .map(|i| {
                    let ledger = &ledger;
                    async move {
                        if i % 10 == 0 {
                            Err(ledger.transfer(i).await)
                        } else {
                            Ok(ledger.balance(i).await)
                        }
                    }
                })
                .buffer_unordered(CONCURRENCY);
            while let Some(result) = results.next().await {
                done += 1;
                match result {
                    Ok(Ok((_, value))) => assert!(value % 10 == 0),
                    Ok(Err(error)) => {
                        eprintln!("idempotent call failed: {error}");
                        reads_failed += 1;
                    }
                    Err(Ok(_)) => transfers_ok += 1,
                    Err(Err(CallError::NotRetried {
                        reason: NotRetried::NotIdempotent,
                        may_have_run: true,
                    })) => transfers_refused += 1,
                    Err(Err(other)) => return Err(format!("unexpected transfer error: {other}")),
                }
                if done == KILL_AFTER && !killed {
                    killed = true;
                    victim.kill().map_err(|e| e.to_string())?;
                    println!("killed ledger-1 (SIGKILL) after {done} calls");
                }
            }
            drop(results);
            println!("\nper instance:");
            for e in ledger.client().endpoints() {
                println!(
                    "  {:<9} {:>5} calls  {:>3} failures  latency {:>8?}  {:?}",
                    e.instance, e.calls, e.failures, e.latency, e.connection
                );
            }
            println!(
                "\nreads (idempotent): {} sent, {reads_failed} failed",
                CALLS - CALLS / 10
            );
            println!(
                "transfers (not idempotent): {transfers_ok} ok, {transfers_refused} not re-sent \
                 because they may have run on ledger-1"
            );
            println!("retry budget left: {}", ledger.client().retry_budget());
            // The last handle gone, the driver closes the connections.
            drop(ledger);
            Ok((reads_failed, transfers_refused))
        };
        let (outcome, ()) = futures::join!(calls, driver);
        outcome
    });
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (reads_failed, transfers_refused) = outcome?;
    assert_eq!(reads_failed, 0, "an idempotent call failed");
    assert!(transfers_refused <= CONCURRENCY as u64);
    println!("ok: no idempotent call failed");
    Ok(())
}
