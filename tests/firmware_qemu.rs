//! The firmware of `examples/firmware` (courier's heap-free server on a
//! Cortex-M4F) in QEMU's `mps2-an386`, called by the std courier client
//! over the emulated UART0, which QEMU connects to a TCP socket.
//!
//! Skipped, with a message, only when `qemu-system-arm` is not installed
//! (`.ci/run` installs it, so in CI these tests always run). Building the
//! firmware needs the `thumbv7em-none-eabihf` target.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use courier::{CallError, RemoteError};
use tokio::io::AsyncWriteExt;

/// The host's declarations of the firmware's services (std types where
/// the firmware has `heapless` ones: the same wire schemas and keys).
mod host {
    #[courier::service]
    pub trait Blinky {
        async fn add(&self, a: u32, b: u32) -> u32;
        async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
        async fn div(&self, a: u32, b: u32) -> Result<u32, u8>;
        async fn blink(&self, n: u32) -> u32;
        async fn blinks(&self) -> u32;
        /// Not served by the firmware.
        async fn reboot(&self);
    }

    #[courier::service]
    pub trait BlinkyEvents {
        #[oneway]
        async fn tick(&self, n: u32);
    }
}

/// The serving firmware, built once per test run; `None` without QEMU.
fn firmware() -> Option<&'static Path> {
    static FIRMWARE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FIRMWARE
        .get_or_init(|| build_firmware(&[], "target/test-serve"))
        .as_deref()
}

/// The serving firmware with COBS framing (feature `cobs`), in a target
/// folder of its own.
fn cobs_firmware() -> Option<&'static Path> {
    static FIRMWARE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FIRMWARE
        .get_or_init(|| build_firmware(&["--features", "cobs"], "target/test-cobs"))
        .as_deref()
}

/// The firmware that calls the host (feature `client`), in a target
/// folder of its own.
fn client_firmware() -> Option<&'static Path> {
    static FIRMWARE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FIRMWARE
        .get_or_init(|| {
            build_firmware(
                &["--no-default-features", "--features", "client"],
                "target/test-client",
            )
        })
        .as_deref()
}

/// Builds the firmware into `examples/firmware/<target_dir>`. The tests
/// build their variants in parallel, so no target folder may be another's
/// parent: cargo creates a missing target folder by renaming a fresh one
/// into place, which would replace a parent the other build had just
/// created and lose that build's folder.
fn build_firmware(features: &[&str], target_dir: &str) -> Option<PathBuf> {
    let qemu = Command::new("qemu-system-arm")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !matches!(qemu, Ok(status) if status.success()) {
        println!(
            "SKIPPED: qemu-system-arm is not installed (apt-get install qemu-system-arm); the firmware tests did not run"
        );
        return None;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/firmware");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet"])
        .args(features)
        .current_dir(&dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env("CARGO_TARGET_DIR", dir.join(target_dir))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the firmware does not build");
    Some(
        dir.join(target_dir)
            .join("thumbv7em-none-eabihf/release/courier-firmware"),
    )
}

/// QEMU running the firmware; stopped with SIGTERM when dropped (also when
/// a test fails).
struct Qemu {
    child: Child,
    port: u16,
}

impl Qemu {
    fn start(firmware: &Path) -> Qemu {
        // A port free right now (each test its own).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let chardev =
            format!("socket,id=u0,host=127.0.0.1,port={port},server=on,wait=on,nodelay=on");
        let child = Command::new("qemu-system-arm")
            .args(["-M", "mps2-an386", "-nographic", "-monitor", "none"])
            .args(["-chardev", &chardev, "-serial", "chardev:u0", "-kernel"])
            .arg(firmware)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-arm starts");
        Qemu { child, port }
    }

    /// Connects to the UART (QEMU starts the board once connected).
    async fn connect(&self) -> std::net::TcpStream {
        for _ in 0..200 {
            if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                stream.set_nodelay(true).unwrap();
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("QEMU never listened on port {}", self.port);
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
    }
}

/// Records the firmware's `tick` notifications.
#[derive(Clone, Default)]
struct Ticks(Arc<Mutex<Vec<u32>>>);

impl host::BlinkyEvents for Ticks {
    async fn tick(&self, n: u32) {
        self.0.lock().unwrap().push(n);
    }
}

/// A std peer on the UART's socket: calls the firmware, serves its
/// notifications. The peer's driver runs on the runtime.
fn peer(stream: std::net::TcpStream, ticks: &Ticks) -> host::BlinkyClient {
    peer_with(stream, ticks, courier::Framing::LengthPrefix).0
}

/// [`peer`] with the given framing; also returns the peer's skip counter.
fn peer_with(
    stream: std::net::TcpStream,
    ticks: &Ticks,
    framing: courier::Framing,
) -> (host::BlinkyClient, Arc<courier::cobs::FramingStats>) {
    stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let (client, driver) = courier::peer::PeerBuilder::new().framing(framing).build(
        courier::io::TokioIo::new(stream),
        host::BlinkyEventsServer::new(ticks.clone()),
    );
    let stats = driver.framing_stats();
    tokio::spawn(driver);
    (host::BlinkyClient::new(client), stats)
}

/// A call, or a panic if the firmware does not answer within 5 s.
async fn answer<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the firmware answers")
}

#[tokio::test(flavor = "current_thread")]
async fn calls_errors_pipelining_and_notifications() {
    let Some(firmware) = firmware() else { return };
    let qemu = Qemu::start(firmware);
    let ticks = Ticks::default();
    let board = peer(qemu.connect().await, &ticks);

    assert_eq!(answer(board.add(2, 3)).await, Ok(5));
    assert_eq!(answer(board.add(u32::MAX, 2)).await, Ok(1));
    assert_eq!(answer(board.div(9, 3)).await, Ok(Ok(3)));
    assert_eq!(answer(board.div(9, 0)).await, Ok(Err(0)));
    assert_eq!(
        answer(board.reboot()).await,
        Err(CallError::Remote(RemoteError::UnknownMethod))
    );
    // The firmware's `heapless::Vec<u8, 64>`: 64 bytes, not 65.
    let data: Vec<u8> = (0..64).collect();
    assert_eq!(answer(board.echo(data.clone())).await, Ok(data));
    assert_eq!(
        answer(board.echo(vec![1; 65])).await,
        Err(CallError::Remote(RemoteError::BadRequest))
    );
    // A request over the firmware's 508-byte frame limit closes its
    // server, which the firmware restarts: see the garbage test.

    // 40 pipelined calls, answered in order.
    let calls = (0..40u32).map(|i| board.add(i, 1000));
    let sums = answer(futures::future::join_all(calls)).await;
    assert_eq!(sums, (0..40u32).map(|i| Ok(i + 1000)).collect::<Vec<_>>());

    // Notifications pushed from the SysTick interrupt every 200 ms.
    answer(async {
        while ticks.0.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let seen = ticks.0.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "ticks out of order: {seen:?}"
    );
    drop(qemu);
}

#[tokio::test(flavor = "current_thread")]
async fn deadlines_and_cancels_stop_the_handler() {
    let Some(firmware) = firmware() else { return };
    let qemu = Qemu::start(firmware);
    let board = peer(qemu.connect().await, &Ticks::default());
    assert_eq!(answer(board.blink(3)).await, Ok(3));

    // 1000 blinks take 10 s; the deadline of 100 ms stops the handler on
    // the device, which answers DeadlineExceeded (the client has no timer
    // of its own here).
    let hurried = board.with_timeout(Duration::from_millis(100));
    assert_eq!(
        answer(hurried.blink(1000)).await,
        Err(CallError::Remote(RemoteError::DeadlineExceeded))
    );
    // One handler runs at a time: that `blinks` is answered at all means
    // the blinking handler is gone.
    let after_deadline = answer(board.blinks()).await.unwrap();
    assert!((3..1003).contains(&after_deadline), "{after_deadline}");

    // A call dropped by its caller sends a cancel: the handler is dropped.
    let dropped = tokio::time::timeout(Duration::from_millis(100), board.blink(1000)).await;
    assert!(dropped.is_err(), "1000 blinks finished in 100 ms");
    let after_cancel = answer(board.blinks()).await.unwrap();
    assert!(after_cancel < after_deadline + 500, "{after_cancel}");
    assert_eq!(answer(board.blink(1)).await, Ok(after_cancel + 1));
    drop(qemu);
}

#[tokio::test(flavor = "current_thread")]
async fn garbage_closes_the_server_and_the_firmware_resynchronises() {
    let Some(firmware) = firmware() else { return };
    let qemu = Qemu::start(firmware);
    let stream = qemu.connect().await;
    let mut injector = tokio::net::TcpStream::from_std({
        let clone = stream.try_clone().unwrap();
        clone.set_nonblocking(true).unwrap();
        clone
    })
    .unwrap();
    let board = peer(stream, &Ticks::default());
    assert_eq!(answer(board.add(1, 1)).await, Ok(2));

    // Length-prefixed framing cannot find the next frame after garbage:
    // the firmware's server stops at the violation it detects (a length
    // over its limit; a frame with a bad version byte), the firmware drops
    // input until the line is quiet and serves again. Calls made while it
    // discards are lost (they time out); a retry then succeeds.
    for garbage in [&[0xff; 8][..], &[0x05, 0, 0, 0, 0xde, 0xad][..]] {
        injector.write_all(garbage).await.unwrap();
        let mut recovered = false;
        for attempt in 0..20u32 {
            let call = board.add(attempt, 1);
            if let Ok(Ok(sum)) = tokio::time::timeout(Duration::from_millis(500), call).await {
                assert_eq!(sum, attempt + 1);
                recovered = true;
                break;
            }
        }
        assert!(recovered, "no answer after {garbage:02x?}");
    }
    drop(qemu);
}

/// The COBS firmware: calls, pipelining and notifications as with the
/// length prefix; then arbitrary garbage (any bytes, `0x00` included)
/// injected between requests costs at most the one call whose request
/// it merges with, never the link: the next call always succeeds, and
/// the first one too when the garbage ended with a delimiter.
#[tokio::test(flavor = "current_thread")]
async fn cobs_firmware_recovers_from_arbitrary_garbage() {
    let Some(firmware) = cobs_firmware() else {
        return;
    };
    let qemu = Qemu::start(firmware);
    let stream = qemu.connect().await;
    let mut injector = tokio::net::TcpStream::from_std({
        let clone = stream.try_clone().unwrap();
        clone.set_nonblocking(true).unwrap();
        clone
    })
    .unwrap();
    let ticks = Ticks::default();
    let (board, stats) = peer_with(stream, &ticks, courier::Framing::Cobs);
    assert_eq!(answer(board.add(2, 3)).await, Ok(5));
    assert_eq!(answer(board.echo(vec![0; 64])).await, Ok(vec![0; 64]));
    let data: Vec<u8> = (0..64).map(|i| 255 - i).collect();
    assert_eq!(answer(board.echo(data.clone())).await, Ok(data));
    let sums = answer(futures::future::join_all(
        (0..40u32).map(|i| board.add(i, 7)),
    ))
    .await;
    assert_eq!(sums, (0..40u32).map(|i| Ok(i + 7)).collect::<Vec<_>>());

    let mut seed = 0x9E37_79B9_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mut lost = 0;
    for round in 0..24u32 {
        let len = 1 + next() % 40;
        let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 3 == 0 {
            garbage.push(0); // ends with a delimiter: nothing is lost
        }
        injector.write_all(&garbage).await.unwrap();
        let first = tokio::time::timeout(Duration::from_millis(800), board.add(round, 1)).await;
        match first {
            Ok(answer) => assert_eq!(answer, Ok(round + 1), "round {round}"),
            Err(_) => {
                assert_ne!(
                    garbage.last(),
                    Some(&0),
                    "lost after a delimiter: {garbage:02x?}"
                );
                lost += 1;
            }
        }
        assert_eq!(
            answer(board.add(round, 2)).await,
            Ok(round + 2),
            "no answer after {garbage:02x?}"
        );
    }
    assert!(
        lost > 0,
        "garbage without a delimiter costs the next request"
    );
    // The firmware's replies all arrived whole.
    assert_eq!(stats.skipped(), 0);
    // Notifications still arrive.
    answer(async {
        let before = ticks.0.lock().unwrap().len();
        while ticks.0.lock().unwrap().len() == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(qemu);
}

/// The host's side when the firmware calls: records `add`'s arguments.
#[derive(Clone, Default)]
struct Host(Arc<Mutex<Vec<(u32, u32)>>>);

impl host::Blinky for Host {
    async fn add(&self, a: u32, b: u32) -> u32 {
        self.0.lock().unwrap().push((a, b));
        a.wrapping_add(b)
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn div(&self, a: u32, b: u32) -> Result<u32, u8> {
        a.checked_div(b).ok_or(0)
    }
    async fn blink(&self, n: u32) -> u32 {
        n
    }
    async fn blinks(&self) -> u32 {
        0
    }
    async fn reboot(&self) {}
}

#[tokio::test(flavor = "current_thread")]
async fn the_firmware_calls_the_host_with_the_heap_free_client() {
    let Some(firmware) = client_firmware() else {
        return;
    };
    let qemu = Qemu::start(firmware);
    let stream = qemu.connect().await;
    stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let calls = Host::default();
    let server = courier::ServerBuilder::new().build(
        courier::io::TokioIo::new(stream),
        host::BlinkyServer::new(calls.clone()),
    );
    let server = tokio::spawn(server);
    // The firmware calls add(a, 1) with `a` the sum of its previous call,
    // from 1000: each call shows it decoded the reply before.
    // (A call the firmware gave up on after its 500 ms timeout is made
    // again with the same `a`: repeats are not progress, so they go.)
    let distinct = || {
        let mut seen = calls.0.lock().unwrap().clone();
        seen.dedup();
        seen
    };
    answer(async {
        while distinct().len() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let seen = distinct();
    let expected: Vec<(u32, u32)> = (0..seen.len() as u32).map(|i| (1000 + i, 1)).collect();
    assert_eq!(seen, expected);
    drop(qemu);
    server.abort();
}
