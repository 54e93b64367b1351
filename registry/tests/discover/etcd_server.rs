//! A real etcd for tests: on a temporary directory and free loopback ports,
//! killed on drop.
//!
//! The binary is `$COURIER_ETCD_BIN`, else `etcd` on the `PATH` (Debian:
//! `apt-get install etcd-server`; `.ci/run` installs it).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier_registry::etcd::{Etcd, EtcdConfig};

/// How long etcd may take to start or stop: bounds a hang only.
const STARTUP: Duration = Duration::from_secs(30);

/// A running etcd member, alone in its cluster.
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    data: PathBuf,
    client_port: u16,
    peer_port: u16,
    generation: u32,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> EtcdServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data-0");
        let mut server = EtcdServer {
            child: None,
            dir,
            data,
            client_port: free_port(),
            peer_port: free_port(),
            generation: 0,
        };
        server.spawn().await;
        server
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// A configuration for this etcd with quick retries.
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig::new([self.url()])
            .retry(Duration::from_millis(20), Duration::from_millis(500))
            .request_timeout(Duration::from_secs(3))
    }

    /// A connection to this etcd.
    pub async fn connect(&self) -> Etcd {
        Etcd::connect(self.config()).await.expect("connect to etcd")
    }

    /// Kills etcd (SIGKILL: no goodbye to its clients) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data: revisions, keys and
    /// leases survive.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Starts etcd again on the same ports with **empty** data, as if it were
    /// replaced: every key and lease is gone and revisions start over.
    pub async fn restart_empty(&mut self) {
        self.kill();
        self.generation += 1;
        self.data = self.dir.path().join(format!("data-{}", self.generation));
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let bin = std::env::var("COURIER_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("etcd-{}.log", self.generation)),
        )
        .expect("etcd log file");
        let child = Command::new(&bin)
            .arg("--name=courier-test")
            .arg(format!("--data-dir={}", self.data.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=courier-test={peer}"))
            .arg("--initial-cluster-state=new")
            // Short raft timings: leases as short as 1 s, a quick election.
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run etcd ({bin}): {e}; install it (`apt-get install etcd-server`) \
                     or set COURIER_ETCD_BIN"
                )
            });
        self.child = Some(child);
        self.wait_healthy().await;
    }

    /// Waits until a read answers (etcd elected itself leader).
    async fn wait_healthy(&mut self) {
        let started = Instant::now();
        let etcd = self.connect().await;
        let mut client = etcd.client().clone();
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "etcd exited at start with {status}; see its log in {:?}",
                        self.dir.path()
                    );
                }
            }
            let read =
                tokio::time::timeout(Duration::from_secs(1), client.get("health", None)).await;
            if let Ok(Ok(_)) = read {
                return;
            }
            assert!(
                started.elapsed() < STARTUP,
                "etcd did not become healthy within {STARTUP:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
