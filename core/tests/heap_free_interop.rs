//! The std client (and a std peer, for notifications) against the
//! heap-free server, over courier-mem, on one thread with a manual clock:
//! calls, application errors, unknown methods, bad arguments, deadlines,
//! cancels, pipelining, notifications both ways, frame limits, reserved
//! kinds and protocol violations.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use courier::heap_free::heapless;
use courier::heap_free::{Buffers, HeapFreeServer, Outbox};
use courier::{CallError, RemoteError, Transport};
use futures::FutureExt;

/// The device's side: declared with the heap-free macro, owned types from
/// `heapless`.
mod device {
    use super::heapless;

    #[courier::heap_free_service]
    pub trait Board {
        async fn add(&self, a: u32, b: u32) -> u32;
        async fn echo(&self, data: heapless::Vec<u8, 64>) -> heapless::Vec<u8, 64>;
        async fn div(&self, a: u32, b: u32) -> Result<u32, heapless::String<16>>;
        /// Waits until the test opens the gate, then returns `tag`.
        async fn wait(&self, tag: u32) -> u32;
        /// `n` bytes back (for the reply limit).
        async fn fill(&self, n: u32) -> heapless::Vec<u8, 600>;
        #[oneway]
        async fn poke(&self, v: u32);
        async fn pokes(&self) -> u32;
        async fn ping(&self);
    }

    /// What the device pushes to the host.
    #[courier::heap_free_service]
    pub trait BoardEvents {
        #[oneway]
        async fn tick(&self, n: u32);
    }
}

/// The host's side of the same services: the std macro, std types.
mod host {
    #[courier::service]
    pub trait Board {
        async fn add(&self, a: u32, b: u32) -> u32;
        async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
        async fn div(&self, a: u32, b: u32) -> Result<u32, String>;
        async fn wait(&self, tag: u32) -> u32;
        async fn fill(&self, n: u32) -> Vec<u8>;
        #[oneway]
        async fn poke(&self, v: u32);
        async fn pokes(&self) -> u32;
        async fn ping(&self);
        /// Not served by the device.
        async fn missing(&self) -> u32;
    }

    #[courier::service]
    pub trait BoardEvents {
        #[oneway]
        async fn tick(&self, n: u32);
    }
}

/// Device state the handlers borrow (and `!Send`: `Cell`, `Rc`).
#[derive(Default)]
struct Device {
    gate_open: Cell<bool>,
    gate_waker: RefCell<Option<Waker>>,
    /// Handlers of `wait` that started, finished, and were dropped early.
    started: Cell<u32>,
    finished: Cell<u32>,
    dropped: Cell<u32>,
    adds: Cell<u32>,
    pokes: Cell<u32>,
    _not_send: Rc<()>,
}

impl Device {
    fn open_gate(&self) {
        self.gate_open.set(true);
        if let Some(waker) = self.gate_waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// Counts a `wait` handler dropped before it finished.
struct DropGuard<'a>(&'a Device, bool);
impl Drop for DropGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.set(self.0.dropped.get() + 1);
        }
    }
}

impl device::Board for Device {
    async fn add(&self, a: u32, b: u32) -> u32 {
        self.adds.set(self.adds.get() + 1);
        a.wrapping_add(b)
    }
    async fn echo(&self, data: heapless::Vec<u8, 64>) -> heapless::Vec<u8, 64> {
        data
    }
    async fn div(&self, a: u32, b: u32) -> Result<u32, heapless::String<16>> {
        a.checked_div(b)
            .ok_or_else(|| heapless::String::try_from("division by 0").unwrap())
    }
    async fn wait(&self, tag: u32) -> u32 {
        self.started.set(self.started.get() + 1);
        let mut guard = DropGuard(self, false);
        poll_fn(|cx| {
            if self.gate_open.get() {
                Poll::Ready(())
            } else {
                *self.gate_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        guard.1 = true;
        self.finished.set(self.finished.get() + 1);
        tag
    }
    async fn fill(&self, n: u32) -> heapless::Vec<u8, 600> {
        let mut v = heapless::Vec::new();
        for _ in 0..n.min(600) {
            let _ = v.push(0xaa);
        }
        v
    }
    async fn poke(&self, v: u32) {
        self.pokes.set(self.pokes.get() + v);
    }
    async fn pokes(&self) -> u32 {
        self.pokes.get()
    }
    async fn ping(&self) {}
}

/// A single-threaded manual clock.
#[derive(Clone, Default)]
struct Clock(Rc<RefCell<ClockState>>);

#[derive(Default)]
struct ClockState {
    now: Duration,
    wakers: Vec<Waker>,
}

impl Clock {
    fn advance(&self, by: Duration) {
        let wakers = {
            let mut state = self.0.borrow_mut();
            state.now += by;
            std::mem::take(&mut state.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

struct Sleep {
    clock: Clock,
    at: Duration,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.clock.0.borrow_mut();
        if state.now >= self.at {
            return Poll::Ready(());
        }
        state.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}

impl courier::Timer for Clock {
    type Sleep = Sleep;
    fn now(&self) -> Duration {
        self.0.borrow().now
    }
    fn sleep_until(&self, at: Duration) -> Sleep {
        Sleep {
            clock: self.clone(),
            at,
        }
    }
    fn reset(&self, sleep: Pin<&mut Sleep>, at: Duration) {
        sleep.get_mut().at = at;
    }
}

const RX: usize = 256;
const TX: usize = 256;

/// Runs `test` with a std client connected to a heap-free server serving
/// `device`, everything on this thread. The client's handle is dropped
/// when `test` ends, so the server sees end of stream and finishes.
fn with_server<F, Fut>(
    device: &Device,
    clock: &Clock,
    test: F,
) -> Result<(), courier::DriverError<courier_mem::MemError>>
where
    F: FnOnce(host::BoardClient) -> Fut,
    Fut: Future<Output = ()>,
{
    let (client_io, server_io) = courier_mem::pair(4096);
    let mut buffers = Buffers::<RX, TX>::new();
    let server = HeapFreeServer::new(device::BoardHeapFree::new(device), server_io, &mut buffers)
        .timer(clock.clone())
        .run();
    let (client, driver) = courier::Client::new(client_io);
    let test = test(host::BoardClient::new(client));
    futures::executor::block_on(async {
        let (_, driver, server) = futures::join!(test, driver, server);
        driver.unwrap();
        server
    })
}

#[test]
fn keys_are_the_std_macros() {
    use courier::MethodKey;
    let pairs: [(MethodKey, MethodKey); 8] = [
        (device::BoardKeys::ADD, host::BoardClient::ADD),
        (device::BoardKeys::ECHO, host::BoardClient::ECHO),
        (device::BoardKeys::DIV, host::BoardClient::DIV),
        (device::BoardKeys::WAIT, host::BoardClient::WAIT),
        (device::BoardKeys::FILL, host::BoardClient::FILL),
        (device::BoardKeys::POKE, host::BoardClient::POKE),
        (device::BoardKeys::POKES, host::BoardClient::POKES),
        (device::BoardKeys::PING, host::BoardClient::PING),
    ];
    for (heap_free, std) in pairs {
        assert_eq!(heap_free, std);
    }
    assert_eq!(device::BoardEventsKeys::TICK, host::BoardEventsClient::TICK);
    assert_eq!(device::BoardKeys::METHODS.len(), 8);
    assert_eq!(device::BoardKeys::METHODS[0].name, "add");
}

#[test]
fn calls_app_errors_unknown_methods_and_bad_arguments() {
    let device = &Device::default();
    let clock = &Clock::default();
    with_server(device, clock, |board| async move {
        assert_eq!(board.add(2, 3).await, Ok(5));
        assert_eq!(board.add(u32::MAX, 1).await, Ok(0));
        assert_eq!(board.ping().await, Ok(()));
        assert_eq!(board.div(7, 2).await, Ok(Ok(3)));
        assert_eq!(board.div(7, 0).await, Ok(Err("division by 0".to_string())));
        assert_eq!(
            board.missing().await,
            Err(CallError::Remote(RemoteError::UnknownMethod))
        );
        // The device's `heapless::Vec<u8, 64>`: 64 bytes decode, 65 do not.
        assert_eq!(board.echo(vec![7; 64]).await, Ok(vec![7; 64]));
        assert_eq!(
            board.echo(vec![7; 65]).await,
            Err(CallError::Remote(RemoteError::BadRequest))
        );
        assert_eq!(board.echo(vec![]).await, Ok(vec![]));
        // The connection goes on after every error.
        assert_eq!(board.add(40, 2).await, Ok(42));
    })
    .unwrap();
    assert_eq!(device.adds.get(), 3);
}

#[test]
fn reply_limit_is_the_write_buffer_below_at_and_above() {
    let device = &Device::default();
    let clock = &Clock::default();
    with_server(device, clock, |board| async move {
        // A response frame is 4 + 7 + 2 (length varint) + n bytes: TX = 256
        // holds n = 243 exactly.
        assert_eq!(board.fill(242).await.map(|v| v.len()), Ok(242));
        assert_eq!(board.fill(243).await.map(|v| v.len()), Ok(243));
        assert_eq!(
            board.fill(244).await,
            Err(CallError::Remote(RemoteError::ResponseTooLarge))
        );
        assert_eq!(
            board.fill(600).await,
            Err(CallError::Remote(RemoteError::ResponseTooLarge))
        );
        assert_eq!(board.add(1, 1).await, Ok(2));
    })
    .unwrap();
}

#[test]
fn pipelined_calls_run_one_at_a_time_and_answer_in_order() {
    let device = Device::default();
    let clock = Clock::default();
    let order = RefCell::new(Vec::new());
    with_server(&device, &clock, |board| async {
        let board = board;
        let record = |tag: &'static str| order.borrow_mut().push(tag);
        let wait = board.wait(9).map(|r| {
            record("wait");
            r
        });
        let add = board.add(1, 2).map(|r| {
            record("add");
            r
        });
        let echo = board.echo(vec![1, 2, 3]).map(|r| {
            record("echo");
            r
        });
        let gate = async {
            // Let every request reach the server: the first one's handler
            // blocks, the other two wait behind it without running.
            for _ in 0..50 {
                yield_now().await;
                if device.started.get() == 1 {
                    break;
                }
            }
            assert_eq!(device.adds.get(), 0, "a queued request ran early");
            device.open_gate();
        };
        let (w, a, e, ()) = futures::join!(wait, add, echo, gate);
        assert_eq!((w, a, e), (Ok(9), Ok(3), Ok(vec![1, 2, 3])));
    })
    .unwrap();
    assert_eq!(*order.borrow(), ["wait", "add", "echo"]);
    assert_eq!(device.finished.get(), 1);
}

/// Lets the other joined futures run once.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Waits until `done` holds, yielding to the other joined futures in
/// between.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        yield_now().await;
    }
    panic!("condition never held");
}

#[test]
fn cancel_drops_the_running_handler_and_removes_a_queued_request() {
    let device = &Device::default();
    let clock = &Clock::default();
    with_server(device, clock, |board| async move {
        {
            let mut wait = pin!(board.wait(1));
            let mut add = pin!(board.add(5, 5));
            // Send both; the wait handler starts, the add waits behind it.
            for _ in 0..200 {
                let _ = futures::poll!(wait.as_mut());
                let _ = futures::poll!(add.as_mut());
                if device.started.get() == 1 {
                    break;
                }
                yield_now().await;
            }
            assert_eq!(device.started.get(), 1);
        }
        // Both calls dropped: two cancels. The running handler is dropped
        // and the queued add never runs; neither is answered.
        until(|| device.dropped.get() == 1).await;
        assert_eq!(board.ping().await, Ok(()));
        assert_eq!(device.adds.get(), 0);
        assert_eq!(device.finished.get(), 0);
        // The connection goes on.
        device.open_gate();
        assert_eq!(board.wait(2).await, Ok(2));
    })
    .unwrap();
}

#[test]
fn deadlines_of_the_running_and_the_queued_calls() {
    let device = &Device::default();
    let clock = &Clock::default();
    with_server(device, clock, |board| async move {
        let short = board.with_timeout(Duration::from_millis(100));
        // (A timeout of 0 is failed by the std client itself; the raw
        // tests send one.)
        // The running handler: dropped at its deadline, answered.
        let wait = short.wait(1);
        // Queued behind it with a longer deadline: still runs after it.
        let long = board.with_timeout(Duration::from_millis(500));
        let add = long.add(2, 2);
        // Queued with the same short deadline: answered without running.
        let doomed = short.add(3, 3);
        let tick = async {
            until(|| device.started.get() == 1).await;
            clock.advance(Duration::from_millis(99));
            for _ in 0..10 {
                yield_now().await;
            }
            assert_eq!(device.dropped.get(), 0, "dropped before its deadline");
            clock.advance(Duration::from_millis(1));
        };
        let (w, a, d, ()) = futures::join!(wait, add, doomed, tick);
        assert_eq!(w, Err(CallError::Remote(RemoteError::DeadlineExceeded)));
        assert_eq!(d, Err(CallError::Remote(RemoteError::DeadlineExceeded)));
        assert_eq!(a, Ok(4));
        assert_eq!(device.dropped.get(), 1);
        assert_eq!(device.adds.get(), 1);
    })
    .unwrap();
}

#[test]
fn notifications_both_ways() {
    let device = &Device::default();
    let clock = &Clock::default();
    // Host → device: `poke` is a notification, never answered.
    with_server(device, clock, |board| async move {
        board.poke(3).await.unwrap();
        board.poke(4).await.unwrap();
        assert_eq!(board.pokes().await, Ok(7));
    })
    .unwrap();

    // Device → host: the host is a peer serving `BoardEvents`.
    struct Events(Arc<Mutex<Vec<u32>>>);
    impl host::BoardEvents for Events {
        async fn tick(&self, n: u32) {
            self.0.lock().unwrap().push(n);
        }
    }
    let ticks = Arc::new(Mutex::new(Vec::new()));
    let (host_io, device_io) = courier_mem::pair(4096);
    let outbox = Outbox::<64>::new();
    let mut buffers = Buffers::<RX, TX>::new();
    let server = HeapFreeServer::new(device::BoardHeapFree::new(device), device_io, &mut buffers)
        .outbox(&outbox)
        .run();
    let (to_device, peer) = courier::peer::PeerBuilder::new()
        .build(host_io, host::BoardEventsServer::new(Events(ticks.clone())));
    let test = async {
        let board = host::BoardClient::new(to_device);
        for n in 0..3u32 {
            outbox.notify(device::BoardEventsKeys::TICK, &(n,)).unwrap();
        }
        // 3 frames of 20 bytes fill 60 of 64: a fourth does not fit yet.
        assert_eq!(
            outbox.notify(device::BoardEventsKeys::TICK, &(3u32,)),
            Err(courier::heap_free::OutboxError::Full)
        );
        until(|| ticks.lock().unwrap().len() == 3).await;
        // Calls and notifications share the connection.
        assert_eq!(board.add(1, 1).await, Ok(2));
        outbox
            .notify(device::BoardEventsKeys::TICK, &(3u32,))
            .unwrap();
        until(|| ticks.lock().unwrap().len() == 4).await;
    };
    // The peer never ends by itself: stop when the test is done.
    let test = pin!(test);
    let rest = pin!(async {
        let (peer, server) = futures::join!(peer, server);
        panic!("peer or server ended: {peer:?} {server:?}");
    });
    futures::executor::block_on(futures::future::select(test, rest));
    assert_eq!(*ticks.lock().unwrap(), [0, 1, 2, 3]);
}

/// Writes `bytes` to `io`, whole.
async fn write_all(io: &mut courier_mem::MemTransport, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| io.poll_write(cx, bytes)).await.unwrap();
        bytes = &bytes[n..];
    }
}

/// Reads until end of stream.
async fn read_to_end(io: &mut courier_mem::MemTransport) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match poll_fn(|cx| io.poll_read(cx, &mut buf)).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

type Ended = Result<(), courier::DriverError<courier_mem::MemError>>;

/// Runs the heap-free server against raw bytes written in one piece, then
/// end of stream; returns what it wrote and how it ended.
fn raw_exchange(input: &[u8]) -> (Vec<u8>, Ended) {
    raw_exchange_in_steps(&[input])
}

/// The same with `steps` written one after the other, the server running
/// until it has nothing left to do in between.
fn raw_exchange_in_steps(steps: &[&[u8]]) -> (Vec<u8>, Ended) {
    let device = Device::default();
    let (mut raw, server_io) = courier_mem::pair(4096);
    let mut buffers = Buffers::<RX, TX>::new();
    let server =
        HeapFreeServer::new(device::BoardHeapFree::new(&device), server_io, &mut buffers).run();
    futures::executor::block_on(async {
        let talk = async {
            for step in steps {
                write_all(&mut raw, step).await;
                for _ in 0..20 {
                    yield_now().await;
                }
            }
            poll_fn(|cx| raw.poll_close(cx)).await.unwrap();
            read_to_end(&mut raw).await
        };
        futures::join!(talk, server)
    })
}

/// A request frame with its prefix.
fn request(id: u32, key: courier::MethodKey, timeout: Option<u32>, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![1, 0, u8::from(timeout.is_some())];
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(&key.0.to_le_bytes());
    if let Some(ms) = timeout {
        frame.extend_from_slice(&ms.to_le_bytes());
    }
    frame.extend_from_slice(body);
    prefixed(&frame)
}

fn prefixed(frame: &[u8]) -> Vec<u8> {
    let mut out = (frame.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(frame);
    out
}

#[test]
fn raw_pipelined_replies_in_order_with_reserved_and_caller_frames_skipped() {
    let add = device::BoardKeys::ADD;
    let mut input = request(1, add, None, &[1, 2]);
    // A reserved kind with flags and a body, a response and a credit for
    // the caller role, an end: all skipped.
    input.extend(prefixed(&[1, 0x42, 0xff, 9, 0, 0, 0, 1, 2, 3]));
    input.extend(prefixed(&[1, 1, 0, 9, 0, 0, 0]));
    input.extend(prefixed(&[1, 5, 1, 9, 0, 0, 0, 1, 0, 0, 0]));
    input.extend(prefixed(&[1, 6, 0, 9, 0, 0, 0]));
    input.extend(request(2, courier::MethodKey(0x1234), None, &[]));
    input.extend(request(3, add, Some(0), &[1, 2]));
    input.extend(request(4, add, None, &[1, 2, 3])); // a byte left over
    input.extend(request(5, add, Some(1000), &[4, 5]));
    let (out, end) = raw_exchange(&input);
    end.unwrap();
    // Expired on arrival: answered at once, ahead of the queue.
    let mut expected = prefixed(&[1, 2, 0, 3, 0, 0, 0, 3]); // DeadlineExceeded
    expected.extend(prefixed(&[1, 1, 0, 1, 0, 0, 0, 3]));
    expected.extend(prefixed(&[1, 2, 0, 2, 0, 0, 0, 1])); // UnknownMethod
    expected.extend(prefixed(&[1, 2, 0, 4, 0, 0, 0, 2])); // BadRequest
    expected.extend(prefixed(&[1, 1, 0, 5, 0, 0, 0, 9]));
    assert_eq!(out, expected);
}

#[test]
fn raw_frame_limit_below_at_and_above() {
    let echo = device::BoardKeys::ECHO;
    // RX = 256: the frame limit is 252 (header and body). A request header
    // is 15 bytes, so a body of 237 bytes makes a frame of exactly 252.
    let at_limit = request(1, echo, None, &[0; 237]);
    assert_eq!(at_limit.len(), 256);
    let (out, end) = raw_exchange(&at_limit);
    end.unwrap();
    // Accepted (and answered BadRequest: 237 zero bytes are not a Vec).
    assert_eq!(out, prefixed(&[1, 2, 0, 1, 0, 0, 0, 2]));

    let below = request(1, echo, None, &[0; 236]);
    let (out, end) = raw_exchange(&below);
    end.unwrap();
    assert_eq!(out, prefixed(&[1, 2, 0, 1, 0, 0, 0, 2]));

    // One byte more: the prefix alone closes the connection, after the
    // replies already produced.
    let ping = request(1, device::BoardKeys::PING, None, &[]);
    let too_large = request(2, echo, None, &[0; 238]);
    let (out, end) = raw_exchange_in_steps(&[&ping, &too_large[..4]]);
    assert_eq!(out, prefixed(&[1, 1, 0, 1, 0, 0, 0]));
    assert!(matches!(
        end,
        Err(courier::DriverError::Protocol(
            courier::FrameError::TooLarge { len: 253, max: 252 }
        ))
    ));
    let (_, end) = raw_exchange(&u32::MAX.to_le_bytes());
    assert!(matches!(
        end,
        Err(courier::DriverError::Protocol(
            courier::FrameError::TooLarge { .. }
        ))
    ));
}

#[test]
fn raw_protocol_violations_close_after_the_replies_produced() {
    let ping = request(1, device::BoardKeys::PING, None, &[]);
    for (bad, error) in [
        (
            prefixed(&[2, 0, 0, 1, 0, 0, 0]),
            courier::FrameError::UnsupportedVersion(2),
        ),
        (
            prefixed(&[1, 1, 0x80, 1, 0, 0, 0]),
            courier::FrameError::UnknownFlags(0x80),
        ),
        (
            prefixed(&[1, 0, 0, 1, 0, 0, 0, 1]),
            courier::FrameError::Truncated,
        ),
        (prefixed(&[]), courier::FrameError::Truncated),
        (vec![9, 0, 0, 0, 1, 0], courier::FrameError::UnexpectedEof),
    ] {
        // The reply produced before the violation is written first.
        let (out, end) = raw_exchange_in_steps(&[&ping, &bad]);
        assert_eq!(out, prefixed(&[1, 1, 0, 1, 0, 0, 0]), "{error:?}");
        match end {
            Err(courier::DriverError::Protocol(e)) => assert_eq!(e, error),
            other => panic!("{other:?} for {error:?}"),
        }
        // In the same write as the violation, a request is dropped
        // unanswered with the connection (R5: calls not finished are
        // dropped) — unless the violation is the end of stream, which
        // comes later.
        let mut input = ping.clone();
        input.extend(bad);
        let (out, end) = raw_exchange(&input);
        if error == courier::FrameError::UnexpectedEof {
            assert_eq!(out, prefixed(&[1, 1, 0, 1, 0, 0, 0]));
        } else {
            assert_eq!(out, [], "{error:?}");
        }
        assert!(matches!(end, Err(courier::DriverError::Protocol(e)) if e == error));
    }
}

#[test]
fn a_full_read_buffer_stops_reading_until_the_queue_drains() {
    // Many more pipelined requests than fit in 256 bytes of `rx`: all are
    // answered, in order.
    let add = device::BoardKeys::ADD;
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for id in 0..100u32 {
        input.extend(request(id, add, None, &[id as u8 & 0x3f, 1]));
        let mut frame = vec![1, 1, 0];
        frame.extend_from_slice(&id.to_le_bytes());
        frame.push((id as u8 & 0x3f) + 1);
        expected.extend(prefixed(&frame));
    }
    let (out, end) = raw_exchange(&input);
    end.unwrap();
    assert_eq!(out, expected);
}

#[test]
fn raw_notifications_are_never_answered_even_when_unknown_or_undecodable() {
    let notify = |key: courier::MethodKey, body: &[u8]| {
        let mut frame = vec![1, 7, 0, 0, 0, 0, 0];
        frame.extend_from_slice(&key.0.to_le_bytes());
        frame.extend_from_slice(body);
        prefixed(&frame)
    };
    let mut input = notify(courier::MethodKey(0x1234), &[1]);
    input.extend(notify(device::BoardKeys::POKE, &[5, 5])); // a byte left over
    input.extend(notify(device::BoardKeys::POKE, &[]));
    input.extend(notify(device::BoardKeys::POKE, &[7]));
    input.extend(notify(device::BoardKeys::POKE, &[2]));
    input.extend(request(1, device::BoardKeys::POKES, None, &[]));
    let (out, end) = raw_exchange(&input);
    end.unwrap();
    assert_eq!(out, prefixed(&[1, 1, 0, 1, 0, 0, 0, 9]));
}
