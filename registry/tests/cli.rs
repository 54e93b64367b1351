//! The `courier-registry` binary end to end: a real process on a free
//! loopback port, registered to over TCP, listed and watched by the CLI.
#![cfg(feature = "cli")]

use std::process::Stdio;
use std::time::Duration;

use courier_registry::{Address, Endpoint, RegistryClient, RegistryError};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_courier-registry");

/// Generous bounds for a loaded machine: only a hang fails them.
const PATIENCE: Duration = Duration::from_secs(30);

struct Served {
    child: Child,
    addr: String,
}

async fn serve(extra: &[&str]) -> Served {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--ttl-grace", "100"])
        .args(extra)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn courier-registry");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = first
        .strip_prefix("courier-registry listening on ")
        .expect(&first)
        .to_string();
    Served { child, addr }
}

async fn client(addr: &str) -> RegistryClient {
    let (client, driver) =
        courier_tcp::tokio::connect(addr.parse::<std::net::SocketAddr>().unwrap())
            .await
            .unwrap();
    tokio::spawn(driver);
    RegistryClient::new(client)
}

fn ep(instance: &str) -> Endpoint {
    Endpoint::new(
        "kv",
        instance,
        Address::Tcp("127.0.0.1:9000".parse().unwrap()),
    )
    .with_metadata("zone", "a")
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("a line")
}

#[tokio::test]
async fn serve_list_and_watch_over_tcp() {
    let mut served = serve(&[]).await;
    let registry = client(&served.addr).await;
    let lease = registry
        .register(None, ep("kv-1"), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();

    let listed = Command::new(BIN)
        .args(["list", "kv", "--registry", &served.addr])
        .output()
        .await
        .unwrap();
    assert!(listed.status.success());
    let text = String::from_utf8(listed.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("revision "), "{text}");
    assert_eq!(lines[1..], ["kv kv-1 tcp://127.0.0.1:9000 weight=1 zone=a"]);

    let mut watch = Command::new(BIN)
        .args(["watch", "kv", "--registry", &served.addr])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert!(next_line(&mut out)
        .await
        .ends_with("snapshot initial (1 endpoints)"));
    assert!(next_line(&mut out)
        .await
        .ends_with("kv kv-1 tcp://127.0.0.1:9000 weight=1 zone=a"));
    registry
        .register(None, ep("kv-2"), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(next_line(&mut out).await.contains(" added kv kv-2 "));
    registry.deregister(None, lease).await.unwrap().unwrap();
    assert!(next_line(&mut out).await.ends_with(" removed kv-1"));
    // The registering connection drops: kv-2 goes after the grace.
    drop(registry);
    assert!(next_line(&mut out).await.ends_with(" removed kv-2"));
    watch.kill().await.unwrap();
    served.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_token_guards_writes_over_tcp() {
    let mut served = serve(&["--token", "sesame"]).await;
    let registry = client(&served.addr).await;
    let refused = registry
        .register(Some("open".into()), ep("kv-1"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(refused, Err(RegistryError::Unauthorized));
    let accepted = registry
        .register(Some("sesame".into()), ep("kv-1"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(accepted.is_ok());
    served.child.kill().await.unwrap();
}

#[tokio::test]
async fn help_and_bad_usage() {
    let help = Command::new(BIN).arg("--help").output().await.unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for word in [
        "serve",
        "list",
        "watch",
        "--token",
        "--ttl-grace",
        "--registry",
    ] {
        assert!(text.contains(word), "help mentions {word}");
    }
    let bad = Command::new(BIN).arg("frobnicate").output().await.unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8(bad.stderr)
        .unwrap()
        .contains("unknown command"));
    let bad = Command::new(BIN)
        .args(["serve", "--listen", "nowhere"])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    let bad = Command::new(BIN).args(["watch"]).output().await.unwrap();
    assert!(!bad.status.success());
}
