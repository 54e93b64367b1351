//! COBS framing end to end over courier-mem, on one thread with a manual
//! clock: the std client against the std server and against the heap-free
//! server (the very code a device runs), and what corruption costs: a
//! request or reply with a byte flipped, dropped or inserted, or garbage
//! between frames, fails only its own call (at its deadline); the skipped
//! count grows and the next calls succeed.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use courier::cobs::{CobsBuffers, CobsTransport, FramingStats};
use courier::heap_free::{heapless, Buffers, HeapFreeServer};
use courier::{CallError, Framing, Transport};
use courier_mem::{MemError, MemTransport};

mod support;
use support::{structural_damage, Clock, Damage, Tamper, TamperState};

mod device {
    use super::heapless;

    #[courier::heap_free_service]
    pub trait Calc {
        async fn add(&self, a: u32, b: u32) -> u32;
        async fn echo(&self, data: heapless::Vec<u8, 600>) -> heapless::Vec<u8, 600>;
    }
}

#[courier::service]
pub trait Calc {
    async fn add(&self, a: u32, b: u32) -> u32;
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
}

struct Board;

impl device::Calc for Board {
    async fn add(&self, a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: heapless::Vec<u8, 600>) -> heapless::Vec<u8, 600> {
        data
    }
}

#[derive(Clone)]
struct Host;

impl Calc for Host {
    async fn add(&self, a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

#[derive(Clone, Copy, Debug)]
enum ServerKind {
    Std,
    HeapFree,
}

/// What a test gets: the client, the clock, the switches that damage the
/// next request or reply, and both sides' skip counters.
struct Link {
    calc: CalcClient,
    /// `calc` with a 1 s timeout on every call.
    timed: CalcClient,
    client: courier::Client,
    clock: Clock,
    requests: Arc<Mutex<TamperState>>,
    replies: Arc<Mutex<TamperState>>,
    server_stats: Arc<FramingStats>,
}

impl Link {
    fn damage_request(&self, d: Damage) {
        self.requests.lock().unwrap().armed = Some(d);
    }
    fn damage_reply(&self, d: Damage) {
        self.replies.lock().unwrap().armed = Some(d);
    }
    fn skipped(&self) -> (u32, u32) {
        (
            self.client.framing_stats().skipped(),
            self.server_stats.skipped(),
        )
    }
    fn add(&self, a: u32, b: u32) -> impl Future<Output = Result<u32, CallError>> + '_ {
        self.timed.add(a, b)
    }
    /// Runs `call`, letting time pass once everything else is idle: a
    /// call whose frame was lost then fails at its deadline.
    async fn with_time<T>(&self, call: impl Future<Output = T>) -> T {
        support::with_time(&self.clock, call).await
    }
}

/// Runs `test` with a std client (COBS, timer) connected to a COBS server
/// of `kind` through two tampering transports.
fn with_link<F, Fut>(kind: ServerKind, test: F)
where
    F: FnOnce(Link) -> Fut,
    Fut: Future<Output = ()>,
{
    let (client_io, server_io) = courier_mem::pair(1 << 16);
    let (client_io, requests) = Tamper::new(client_io);
    let (server_io, replies) = Tamper::new(server_io);
    let clock = Clock::default();
    let (client, driver) = courier::ClientBuilder::new()
        .framing(Framing::Cobs)
        .max_frame(1024)
        .timer(clock.clone())
        .build(client_io);
    let heap_free_stats = Arc::new(FramingStats::new());
    let mut cobs_buffers = CobsBuffers::<1028, 512>::new();
    let mut buffers = Buffers::<1028, 1028>::new();
    let (server, server_stats): (Pin<Box<dyn Future<Output = ()> + '_>>, _) = match kind {
        ServerKind::Std => {
            let server = courier::ServerBuilder::new()
                .framing(Framing::Cobs)
                .max_frame(1024)
                .build(server_io, CalcServer::new(Host));
            let stats = server.framing_stats();
            (Box::pin(async { server.await.unwrap() }), stats)
        }
        ServerKind::HeapFree => {
            let io = CobsTransport::new(server_io, &mut cobs_buffers, heap_free_stats.clone());
            let server = HeapFreeServer::new(device::CalcHeapFree::new(&Board), io, &mut buffers);
            (
                Box::pin(async { server.run().await.unwrap() }),
                heap_free_stats.clone(),
            )
        }
    };
    let calc = CalcClient::new(client.clone());
    let link = Link {
        timed: calc.with_timeout(Duration::from_secs(1)),
        calc,
        client,
        clock,
        requests,
        replies,
        server_stats,
    };
    futures::executor::block_on(async {
        let (_, driver, _) = futures::join!(test(link), driver, server);
        driver.unwrap();
    });
}

const KINDS: [ServerKind; 2] = [ServerKind::Std, ServerKind::HeapFree];

/// Bodies across the 254-byte block boundaries, zero runs and every byte
/// value, one at a time and pipelined; nothing is skipped.
#[test]
fn calls_over_cobs() {
    for kind in KINDS {
        with_link(kind, |link| async move {
            assert_eq!(link.add(2, 3).await, Ok(5));
            let lens: &[usize] = if cfg!(miri) {
                &[0, 254, 600]
            } else {
                &[0, 1, 253, 254, 255, 508, 509, 600]
            };
            for &len in lens {
                for body in [
                    vec![0u8; len],
                    vec![0xFF; len],
                    (0..len).map(|i| i as u8).collect(),
                ] {
                    assert_eq!(
                        link.calc.echo(body.clone()).await,
                        Ok(body),
                        "{kind:?} {len}"
                    );
                }
            }
            let pipelined = futures::future::join_all((0..20u32).map(|i| link.add(i, 1000))).await;
            let expected: Vec<_> = (0..20u32).map(|i| Ok(i + 1000)).collect();
            assert_eq!(pipelined, expected);
            assert_eq!(link.skipped(), (0, 0));
        });
    }
}

/// A damaged request is skipped by the server and never answered: that
/// call fails at its deadline, the next ones succeed.
#[test]
fn a_damaged_request_costs_its_call_only() {
    for kind in KINDS {
        with_link(kind, |link| async move {
            for (i, damage) in structural_damage().into_iter().enumerate() {
                let before = link.skipped().1;
                link.damage_request(damage.clone());
                assert_eq!(
                    link.with_time(link.add(1, 1)).await,
                    Err(CallError::DeadlineExceeded),
                    "{kind:?} {damage:?}"
                );
                assert!(link.skipped().1 > before, "{kind:?} {damage:?} not counted");
                assert_eq!(link.add(i as u32, 1).await, Ok(i as u32 + 1));
            }
            assert_eq!(link.skipped().0, 0);
        });
    }
}

/// A damaged reply is skipped by the client: that call fails at its
/// deadline, the next ones succeed.
#[test]
fn a_damaged_reply_costs_its_call_only() {
    for kind in KINDS {
        with_link(kind, |link| async move {
            // A response is 1 code byte, 7 header bytes and the value.
            let damages = [
                Damage::Flip(1, 0x40),
                Damage::Drop(0),
                Damage::Insert(4, vec![0]),
                Damage::Insert(2, vec![0x11, 0x22, 0x33]),
            ];
            for (i, damage) in damages.into_iter().enumerate() {
                let before = link.skipped().0;
                link.damage_reply(damage.clone());
                assert_eq!(
                    link.with_time(link.add(1, 1)).await,
                    Err(CallError::DeadlineExceeded),
                    "{kind:?} {damage:?}"
                );
                assert!(link.skipped().0 > before, "{kind:?} {damage:?} not counted");
                assert_eq!(link.add(i as u32, 2).await, Ok(i as u32 + 2));
            }
        });
    }
}

/// Random damage anywhere in a request: the call either fails at its
/// deadline or is answered (damage the framing cannot see, such as a
/// changed timeout byte), never hangs, and the next call succeeds.
#[test]
fn random_damage_never_hangs_the_link() {
    let rounds = if cfg!(miri) { 6 } else { 150 };
    for kind in KINDS {
        with_link(kind, |link| async move {
            let mut seed = 0x2545_F491_u32;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed
            };
            let mut lost = 0;
            for i in 0..rounds {
                let pos = (next() % 22) as usize;
                let damage = match next() % 4 {
                    0 => Damage::Flip(pos, (next() % 255 + 1) as u8),
                    1 => Damage::Drop(pos),
                    2 => Damage::Insert(pos, vec![next() as u8]),
                    _ => Damage::Before((0..next() % 12).map(|_| next() as u8).collect()),
                };
                link.damage_request(damage);
                if link.with_time(link.add(1, 1)).await == Err(CallError::DeadlineExceeded) {
                    lost += 1;
                }
                assert_eq!(link.add(i, 5).await, Ok(i + 5), "{kind:?} round {i}");
            }
            // Every lost call was a skipped frame (or garbage ahead of it).
            assert!(
                link.skipped().1 >= lost / 2,
                "{kind:?}: {lost} lost, {:?}",
                link.skipped()
            );
            assert!(lost > 0);
        });
    }
}

/// A transport whose every other write (and flush) is `Pending` first,
/// its wake already sent, as a socket not yet known writable is.
struct Stutter {
    io: MemTransport,
    stall: bool,
}

impl Stutter {
    fn stall(&mut self, cx: &mut Context<'_>) -> bool {
        self.stall = !self.stall;
        if self.stall {
            cx.waker().wake_by_ref();
        }
        self.stall
    }
}

impl Transport for Stutter {
    type Error = MemError;
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, MemError>> {
        self.io.poll_read(cx, buf)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, MemError>> {
        if self.stall(cx) {
            return Poll::Pending;
        }
        self.io.poll_write(cx, buf)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MemError>> {
        self.io.poll_flush(cx)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MemError>> {
        self.io.poll_close(cx)
    }
}

/// The std peer speaks COBS too: calls both ways over one link whose
/// writes stall now and then. (The COBS transport sends in `poll_flush`:
/// a peer that retried only pending writes, not a pending flush, never
/// sent its first request over a fresh tokio socket.)
#[test]
fn peers_over_cobs() {
    let (a_io, b_io) = courier_mem::pair(1 << 16);
    let a_io = Stutter {
        io: a_io,
        stall: false,
    };
    let b_io = Stutter {
        io: b_io,
        stall: false,
    };
    let (a, a_driver) = courier::peer::PeerBuilder::new()
        .framing(Framing::Cobs)
        .build(a_io, CalcServer::new(Host));
    let (b, b_driver) = courier::peer::PeerBuilder::new()
        .framing(Framing::Cobs)
        .build(b_io, CalcServer::new(Host));
    let (a_stats, b_stats) = (a_driver.framing_stats(), b_driver.framing_stats());
    futures::executor::block_on(async {
        let calls = std::pin::pin!(async move {
            let (a, b) = (CalcClient::new(a), CalcClient::new(b));
            assert_eq!(a.add(1, 2).await, Ok(3));
            assert_eq!(b.echo(vec![0; 300]).await, Ok(vec![0; 300]));
        });
        // A peer runs until the other side closes; the calls are the test.
        let drivers = std::pin::pin!(futures::future::join(a_driver, b_driver));
        match futures::future::select(calls, drivers).await {
            futures::future::Either::Left(_) => {}
            futures::future::Either::Right(((a_end, b_end), _)) => {
                panic!("peers ended: {a_end:?} {b_end:?}")
            }
        }
    });
    assert_eq!((a_stats.skipped(), b_stats.skipped()), (0, 0));
}
