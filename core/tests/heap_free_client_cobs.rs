//! The heap-free client speaking COBS framing, over courier-mem on one
//! thread with a manual clock: against the std server and against the
//! heap-free server (device to device), with requests and replies damaged
//! on the link. A damaged frame is skipped and counted by the side that
//! reads it; the call it carried fails at its local deadline (or with a
//! typed error when the damage leaves a valid frame of another meaning);
//! the next calls succeed; nothing hangs (a hang fails the test).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::cobs::{CobsBuffers, CobsTransport, FramingStats, SliceBuffer};
use courier::heap_free::{heapless, Buffers, HeapFreeClient, HeapFreeServer};
use courier::{CallError, Framing, RemoteError};

mod support;
use support::{structural_damage, with_time, Clock, Damage, Tamper, TamperState};

mod device {
    use super::heapless;

    #[courier::heap_free_service]
    pub trait Calc {
        async fn add(&self, a: u32, b: u32) -> u32;
        async fn echo(&self, data: heapless::Vec<u8, 600>) -> heapless::Vec<u8, 600>;
        async fn div(&self, a: u32, b: u32) -> Result<u32, u8>;
    }
}

#[courier::service]
pub trait Calc {
    async fn add(&self, a: u32, b: u32) -> u32;
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    async fn div(&self, a: u32, b: u32) -> Result<u32, u8>;
}

struct Board;

impl device::Calc for Board {
    async fn add(&self, a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: heapless::Vec<u8, 600>) -> heapless::Vec<u8, 600> {
        data
    }
    async fn div(&self, a: u32, b: u32) -> Result<u32, u8> {
        a.checked_div(b).ok_or(0)
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
    async fn div(&self, a: u32, b: u32) -> Result<u32, u8> {
        a.checked_div(b).ok_or(0)
    }
}

#[derive(Clone, Copy, Debug)]
enum ServerKind {
    Std,
    HeapFree,
}

const KINDS: [ServerKind; 2] = [ServerKind::Std, ServerKind::HeapFree];

/// The heap-free client over its COBS transport (frame limit 1024).
type CobsClient<'c> = HeapFreeClient<
    'c,
    CobsTransport<Tamper, SliceBuffer<'c>, Arc<FramingStats>>,
    1028,
    1028,
    Clock,
>;

/// What a test gets: the client, the clock, the switches that damage the
/// next request or reply, and both sides' skip counters.
struct Link<'c> {
    client: CobsClient<'c>,
    clock: Clock,
    requests: Arc<Mutex<TamperState>>,
    replies: Arc<Mutex<TamperState>>,
    client_stats: Arc<FramingStats>,
    server_stats: Arc<FramingStats>,
}

impl Link<'_> {
    fn damage_request(&self, d: Damage) {
        self.requests.lock().unwrap().armed = Some(d);
    }
    fn damage_reply(&self, d: Damage) {
        self.replies.lock().unwrap().armed = Some(d);
    }
    /// Frames skipped by (the client, the server).
    fn skipped(&self) -> (u32, u32) {
        (self.client_stats.skipped(), self.server_stats.skipped())
    }
    /// `add` with a 1 s timeout, letting time pass when the link is idle.
    async fn add(&mut self, a: u32, b: u32) -> Result<u32, CallError> {
        let args = (a, b);
        let call =
            self.client
                .call_with_timeout::<_, u32>(CalcClient::ADD, &args, Duration::from_secs(1));
        with_time(&self.clock, call).await
    }
}

/// Runs `test` with a heap-free client (COBS, local deadlines) connected
/// to a COBS server of `kind` through two tampering transports. The server
/// ends when the test drops the client.
fn with_link<F>(kind: ServerKind, test: F)
where
    F: for<'c> FnOnce(Link<'c>) -> Pin<Box<dyn Future<Output = ()> + 'c>>,
{
    let (client_io, server_io) = courier_mem::pair(1 << 16);
    let (client_io, requests) = Tamper::new(client_io);
    let (server_io, replies) = Tamper::new(server_io);
    let clock = Clock::default();
    let client_stats = Arc::new(FramingStats::new());
    let mut client_cobs = CobsBuffers::<1028, 512>::new();
    let mut client_buffers = Buffers::<1028, 1028>::new();
    let client_io = CobsTransport::new(client_io, &mut client_cobs, client_stats.clone());
    let client = HeapFreeClient::new(client_io, &mut client_buffers).timer(clock.clone());

    let heap_free_stats = Arc::new(FramingStats::new());
    let mut server_cobs = CobsBuffers::<1028, 512>::new();
    let mut server_buffers = Buffers::<1028, 1028>::new();
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
            let io = CobsTransport::new(server_io, &mut server_cobs, heap_free_stats.clone());
            let server =
                HeapFreeServer::new(device::CalcHeapFree::new(&Board), io, &mut server_buffers);
            (
                Box::pin(async { server.run().await.unwrap() }),
                heap_free_stats.clone(),
            )
        }
    };
    let link = Link {
        client,
        clock,
        requests,
        replies,
        client_stats,
        server_stats,
    };
    futures::executor::block_on(async {
        futures::join!(test(link), server);
    });
}

/// Calls, application and remote errors, notifications and bodies across
/// the 254-byte block boundaries, zero runs and every byte value; nothing
/// is skipped.
#[test]
fn calls_over_cobs() {
    for kind in KINDS {
        with_link(kind, |mut link| {
            Box::pin(async move {
                assert_eq!(link.add(2, 3).await, Ok(5));
                let c = &mut link.client;
                assert_eq!(
                    c.call::<_, Result<u32, u8>>(CalcClient::DIV, &(7u32, 0u32))
                        .await,
                    Ok(Err(0))
                );
                assert_eq!(
                    c.call::<_, u32>(courier::MethodKey(0x1234), &()).await,
                    Err(CallError::Remote(RemoteError::UnknownMethod))
                );
                assert_eq!(
                    c.call::<_, u32>(CalcClient::ADD, &(1u32,)).await,
                    Err(CallError::Remote(RemoteError::BadRequest))
                );
                // A notification is written whole and never answered.
                c.notify(CalcClient::ADD, &(1u32, 1u32)).await.unwrap();
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
                            c.call::<_, Vec<u8>>(CalcClient::ECHO, &(body.clone(),))
                                .await,
                            Ok(body),
                            "{kind:?} {len}"
                        );
                    }
                }
                assert_eq!(link.skipped(), (0, 0));
            })
        });
    }
}

/// A damaged request is skipped and counted by the server and never
/// answered: the heap-free client's call fails at its local deadline, the
/// next call (which sends the cancel of the lost one first) succeeds.
#[test]
fn a_damaged_request_costs_its_call_only() {
    for kind in KINDS {
        with_link(kind, |mut link| {
            Box::pin(async move {
                for (i, damage) in structural_damage().into_iter().enumerate() {
                    let before = link.skipped().1;
                    link.damage_request(damage.clone());
                    assert_eq!(
                        link.add(1, 1).await,
                        Err(CallError::DeadlineExceeded),
                        "{kind:?} {damage:?}"
                    );
                    assert!(link.skipped().1 > before, "{kind:?} {damage:?} not counted");
                    assert_eq!(link.add(i as u32, 1).await, Ok(i as u32 + 1));
                }
                assert_eq!(link.skipped().0, 0);
            })
        });
    }
}

/// A damaged reply is skipped and counted by the heap-free client's COBS
/// transport: that call fails at its deadline, the next ones succeed.
#[test]
fn a_damaged_reply_costs_its_call_only() {
    for kind in KINDS {
        with_link(kind, |mut link| {
            Box::pin(async move {
                // A response is 1 code byte, 7 header bytes and the value.
                let damages = [
                    Damage::Flip(1, 0x40),
                    Damage::Drop(0),
                    Damage::Insert(4, vec![0]),
                    Damage::Insert(2, vec![0x11, 0x22, 0x33]),
                    Damage::Before(vec![0xF0]),
                ];
                for (i, damage) in damages.into_iter().enumerate() {
                    let before = link.skipped().0;
                    link.damage_reply(damage.clone());
                    assert_eq!(
                        link.add(1, 1).await,
                        Err(CallError::DeadlineExceeded),
                        "{kind:?} {damage:?}"
                    );
                    assert!(link.skipped().0 > before, "{kind:?} {damage:?} not counted");
                    assert_eq!(link.add(i as u32, 2).await, Ok(i as u32 + 2));
                }
                assert_eq!(link.skipped().1, 0);
            })
        });
    }
}

/// Garbage between frames that ends in a delimiter costs nothing but a
/// skipped (garbage) frame: the call behind it is answered.
#[test]
fn garbage_between_frames_is_skipped() {
    for kind in KINDS {
        with_link(kind, |mut link| {
            Box::pin(async move {
                link.damage_request(Damage::Before(vec![0x42, 0x07, 0x00]));
                assert_eq!(link.add(4, 4).await, Ok(8), "{kind:?}");
                link.damage_reply(Damage::Before(vec![0x13, 0x37, 0x00]));
                assert_eq!(link.add(5, 5).await, Ok(10), "{kind:?}");
                assert_eq!(link.skipped(), (1, 1), "{kind:?}");
            })
        });
    }
}

/// Random damage anywhere in a request or a reply: the call fails at its
/// deadline, or with a typed error, or is answered (damage COBS cannot
/// see, such as a changed argument byte), but it always ends; the next
/// call succeeds.
#[test]
fn random_damage_never_hangs_the_link() {
    let rounds = if cfg!(miri) { 6 } else { 150 };
    for kind in KINDS {
        with_link(kind, |mut link| {
            Box::pin(async move {
                let mut seed = 0x9E37_79B9_u32;
                let mut next = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed
                };
                let mut lost = 0;
                for i in 0..rounds {
                    let reply = next() % 2 == 0;
                    // A request is 22 bytes encoded, a reply about 9.
                    let pos = (next() % if reply { 9 } else { 22 }) as usize;
                    let damage = match next() % 4 {
                        0 => Damage::Flip(pos, (next() % 255 + 1) as u8),
                        1 => Damage::Drop(pos),
                        2 => Damage::Insert(pos, vec![next() as u8]),
                        _ => Damage::Before((0..next() % 12).map(|_| next() as u8).collect()),
                    };
                    if reply {
                        link.damage_reply(damage);
                    } else {
                        link.damage_request(damage);
                    }
                    match link.add(1, 1).await {
                        Err(CallError::DeadlineExceeded) => lost += 1,
                        // A flipped kind or id can turn a reply into an
                        // error frame, or into a reply that no longer
                        // decodes as the method's value.
                        Ok(_) | Err(CallError::Remote(_) | CallError::Decode) => {}
                        other => panic!("{kind:?} round {i}: {other:?}"),
                    }
                    assert_eq!(link.add(i, 5).await, Ok(i + 5), "{kind:?} round {i}");
                }
                let (client, server) = link.skipped();
                // Every lost call was a skipped frame (or garbage ahead of it).
                assert!(
                    client + server >= lost / 2,
                    "{kind:?}: {lost} lost, skipped {client} + {server}"
                );
                assert!(lost > 0);
            })
        });
    }
}
