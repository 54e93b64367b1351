//! `courier-registry`: serve a registry, or list and watch one.
//!
//! Run `courier-registry --help` for the commands.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use courier::client::ReconnectPolicy;
use courier::timer::TokioTimer;
use courier_registry::{
    Change, EmbeddedRegistry, Endpoint, Event, RegistryClient, RegistryWatch, SnapshotKind,
    StoreConfig,
};
use futures_util::StreamExt;

const DEFAULT_ADDR: &str = "127.0.0.1:7700";

const HELP: &str = "\
courier-registry: the courier service registry (single node).

USAGE:
    courier-registry serve [--listen ADDR] [--token TOKEN] [--ttl-grace MS]
                           [--max-instances-per-conn N] [--max-watchers-per-conn N]
    courier-registry list [SERVICE] [--registry ADDR]
    courier-registry watch SERVICE [--registry ADDR]
    courier-registry --help

COMMANDS:
    serve   Runs a registry on ADDR (default 127.0.0.1:7700) until Ctrl-C.
            Instances register under leases and are removed when a lease is
            not renewed within its TTL, or --ttl-grace milliseconds (default
            1000) after their connection drops. With --token, register,
            keep-alive and deregister must present TOKEN (a shared secret,
            compared in constant time; there is no TLS yet, so use it on a
            trusted network only); list and watch stay open. The state is
            soft: a restarted registry is rebuilt by the instances'
            re-registrations within one TTL.
    list    Prints the registry's revision, then one line per endpoint of
            SERVICE (every service without one):
            `SERVICE INSTANCE ADDRESS weight=W [KEY=VALUE ...]`.
    watch   Prints the changes to SERVICE as they happen, one line each,
            prefixed by the revision: a snapshot first (`snapshot initial`,
            or `snapshot resync` after the registry restarted), then
            `added`, `updated` and `removed`. Keeps running across registry
            restarts (it reconnects and resumes), until Ctrl-C.

OPTIONS:
    --registry ADDR   The registry to ask (default 127.0.0.1:7700).
    --help, -h        Prints this help.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("courier-registry: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Parsed command-line options: positional arguments and `--name value`.
struct Args {
    positional: Vec<String>,
    options: Vec<(String, String)>,
}

impl Args {
    fn parse(args: Vec<String>, known: &[&str]) -> Result<Self, String> {
        let mut positional = Vec::new();
        let mut options = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if let Some(name) = arg.strip_prefix("--") {
                let (name, value) = match name.split_once('=') {
                    Some((n, v)) => (n.to_string(), v.to_string()),
                    None => {
                        let value = args.next().ok_or(format!("--{name} needs a value"))?;
                        (name.to_string(), value)
                    }
                };
                if !known.contains(&name.as_str()) {
                    return Err(format!("unknown option --{name} (see --help)"));
                }
                options.push((name, value));
            } else {
                positional.push(arg);
            }
        }
        Ok(Args {
            positional,
            options,
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str) -> Result<Option<u64>, String> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("--{name}: not a number: {v}"))
            })
            .transpose()
    }

    fn addr(&self, name: &str) -> Result<SocketAddr, String> {
        let text = self.get(name).unwrap_or(DEFAULT_ADDR);
        text.parse()
            .map_err(|_| format!("--{name}: not an address: {text}"))
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let Some(command) = args.first().cloned() else {
        print!("{HELP}");
        return Err("no command given".into());
    };
    let rest = args.get(1..).unwrap_or_default().to_vec();
    if command == "--help" || command == "-h" || rest.iter().any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    match command.as_str() {
        "serve" => {
            let known = [
                "listen",
                "token",
                "ttl-grace",
                "max-instances-per-conn",
                "max-watchers-per-conn",
            ];
            let args = Args::parse(rest, &known)?;
            runtime.block_on(serve(args))
        }
        "list" => runtime.block_on(list(Args::parse(rest, &["registry"])?)),
        "watch" => runtime.block_on(watch(Args::parse(rest, &["registry"])?)),
        other => Err(format!("unknown command {other:?} (see --help)")),
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let listen = args.addr("listen")?;
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut config = StoreConfig {
        // Past every revision an earlier run handed out (see the docs).
        first_revision: u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX),
        lease_seed: since_epoch.as_nanos() as u64 ^ u64::from(std::process::id()),
        token: args.get("token").map(str::to_string),
        ..StoreConfig::default()
    };
    if let Some(ms) = args.number("ttl-grace")? {
        config.disconnect_grace = Duration::from_millis(ms);
    }
    if let Some(n) = args.number("max-instances-per-conn")? {
        config.max_instances_per_owner = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(n) = args.number("max-watchers-per-conn")? {
        config.max_watchers_per_owner = usize::try_from(n).unwrap_or(usize::MAX);
    }
    let (registry, expiry) = EmbeddedRegistry::new(config, TokioTimer::new());
    let listener = courier_tcp::tokio::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    println!("courier-registry listening on {local}");
    let server = courier_tcp::tokio::builder()
        .max_frame(16 * 1024 * 1024)
        .max_connections(100_000)
        .serve_with(listener, move |_peer| registry.connection());
    tokio::select! {
        _ = expiry => Ok(()),
        _ = server => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn connect(args: &Args) -> Result<(RegistryClient, impl std::future::Future), String> {
    let addr = args.addr("registry")?;
    let (client, driver) = courier::ClientBuilder::new()
        .timer(TokioTimer::new())
        .max_frame(16 * 1024 * 1024)
        .build_reconnecting(
            courier_tcp::tokio::Connector::new(addr),
            ReconnectPolicy::new().backoff(Duration::from_millis(100), Duration::from_secs(2)),
        );
    Ok((RegistryClient::new(client), driver))
}

async fn list(args: Args) -> Result<(), String> {
    let (client, driver) = connect(&args).await?;
    let service = args.positional.first().cloned();
    let client = client.with_timeout(Duration::from_secs(5));
    let listing = tokio::select! {
        listing = client.list(service) => listing,
        _ = driver => return Err("the connection driver ended".into()),
    };
    let listing = listing.map_err(|e| format!("list failed: {e}"))?;
    println!("revision {}", listing.revision);
    for endpoint in &listing.endpoints {
        println!("{}", line(endpoint));
    }
    Ok(())
}

fn line(e: &Endpoint) -> String {
    let mut out = format!(
        "{} {} {} weight={}",
        e.service, e.instance, e.address, e.weight
    );
    for (k, v) in &e.metadata {
        out.push_str(&format!(" {k}={v}"));
    }
    out
}

fn describe(event: &Event) -> Vec<String> {
    let rev = event.revision;
    match &event.change {
        Change::Snapshot { endpoints, kind } => {
            let kind = match kind {
                SnapshotKind::Initial => "initial",
                SnapshotKind::Resync => "resync",
            };
            let mut lines = vec![format!(
                "{rev} snapshot {kind} ({} endpoints)",
                endpoints.len()
            )];
            lines.extend(endpoints.iter().map(|e| format!("{rev}   {}", line(e))));
            lines
        }
        Change::Added(e) => vec![format!("{rev} added {}", line(e))],
        Change::Updated(e) => vec![format!("{rev} updated {}", line(e))],
        Change::Removed { instance } => vec![format!("{rev} removed {instance}")],
    }
}

async fn watch(args: Args) -> Result<(), String> {
    let service = args
        .positional
        .first()
        .cloned()
        .ok_or("watch needs a SERVICE (see --help)")?;
    let (client, driver) = connect(&args).await?;
    let mut changes = RegistryWatch::new(client, service, TokioTimer::new());
    let printing = async {
        while let Some(item) = changes.next().await {
            match item {
                Ok(event) => {
                    for l in describe(&event) {
                        println!("{l}");
                    }
                }
                Err(e) => println!("- {e}"),
            }
        }
    };
    tokio::select! {
        _ = printing => Ok(()),
        _ = driver => Err("the connection driver ended".into()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
