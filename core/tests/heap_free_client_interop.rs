//! The heap-free client against the std server, over courier-mem, on one
//! thread: calls, application errors, unknown methods, bad arguments,
//! notifications, local deadlines with the cancel that follows, and the
//! buffer limits.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use courier::heap_free::{Buffers, HeapFreeClient};
use courier::{CallError, FrameError, RemoteError};

#[courier::service]
pub trait Lab {
    async fn add(&self, a: u32, b: u32) -> u32;
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    async fn div(&self, a: u32, b: u32) -> Result<u32, String>;
    async fn fill(&self, n: u32) -> Vec<u8>;
    /// Never returns (until dropped).
    async fn hang(&self) -> u32;
    #[oneway]
    async fn note(&self, v: u32);
    async fn notes(&self) -> u32;
}

#[derive(Clone, Default)]
struct Counters {
    hangs_dropped: Arc<AtomicU32>,
    notes: Arc<AtomicU32>,
}

struct CountDrop(Arc<AtomicU32>);
impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Lab for Counters {
    async fn add(&self, a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn div(&self, a: u32, b: u32) -> Result<u32, String> {
        a.checked_div(b).ok_or_else(|| "by zero".to_string())
    }
    async fn fill(&self, n: u32) -> Vec<u8> {
        vec![7; n as usize]
    }
    async fn hang(&self) -> u32 {
        let _guard = CountDrop(self.hangs_dropped.clone());
        std::future::pending().await
    }
    async fn note(&self, v: u32) {
        self.notes.fetch_add(v, Ordering::SeqCst);
    }
    async fn notes(&self) -> u32 {
        self.notes.load(Ordering::SeqCst)
    }
}

/// A single-threaded manual clock.
#[derive(Clone, Default)]
struct Clock(Rc<RefCell<(Duration, Vec<Waker>)>>);

impl Clock {
    fn advance(&self, by: Duration) {
        let wakers = {
            let mut state = self.0.borrow_mut();
            state.0 += by;
            std::mem::take(&mut state.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

struct Sleep(Clock, Duration);

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.0 .0.borrow_mut();
        if state.0 >= self.1 {
            return Poll::Ready(());
        }
        state.1.push(cx.waker().clone());
        Poll::Pending
    }
}

impl courier::Timer for Clock {
    type Sleep = Sleep;
    fn now(&self) -> Duration {
        self.0.borrow().0
    }
    fn sleep_until(&self, at: Duration) -> Sleep {
        Sleep(self.clone(), at)
    }
    fn reset(&self, sleep: Pin<&mut Sleep>, at: Duration) {
        sleep.get_mut().1 = at;
    }
}

/// Runs `test` with a heap-free client (128-byte buffers) connected to a
/// std server; the server finishes when the client's transport is dropped.
fn with_client<F>(counters: &Counters, clock: &Clock, test: F)
where
    F: for<'c> FnOnce(
        HeapFreeClient<'c, courier_mem::MemTransport, 128, 128, Clock>,
    ) -> Pin<Box<dyn Future<Output = ()> + 'c>>,
{
    let (client_io, server_io) = courier_mem::pair(4096);
    let server = courier::ServerBuilder::new().build(server_io, LabServer::new(counters.clone()));
    let mut buffers = Buffers::<128, 128>::new();
    let client = HeapFreeClient::new(client_io, &mut buffers).timer(clock.clone());
    futures::executor::block_on(async {
        let (_, server) = futures::join!(test(client), server);
        server.unwrap();
    });
}

#[test]
fn calls_errors_and_notifications() {
    let counters = Counters::default();
    with_client(&counters, &Clock::default(), |mut lab| {
        Box::pin(async move {
            assert_eq!(
                lab.call::<_, u32>(LabClient::ADD, &(2u32, 3u32)).await,
                Ok(5)
            );
            assert_eq!(
                lab.call::<_, Result<u32, String>>(LabClient::DIV, &(1u32, 0u32))
                    .await,
                Ok(Err("by zero".to_string()))
            );
            assert_eq!(
                lab.call::<_, u32>(courier::MethodKey(0x1234), &()).await,
                Err(CallError::Remote(RemoteError::UnknownMethod))
            );
            // Arguments that do not decode as the method's.
            assert_eq!(
                lab.call::<_, u32>(LabClient::ADD, &(1u32,)).await,
                Err(CallError::Remote(RemoteError::BadRequest))
            );
            // A reply that does not decode as the type asked: that call
            // fails, the connection goes on.
            assert_eq!(
                lab.call::<_, bool>(LabClient::ADD, &(200u32, 0u32)).await,
                Err(CallError::Decode)
            );
            lab.notify(LabClient::NOTE, &(4u32,)).await.unwrap();
            lab.notify(LabClient::NOTE, &(5u32,)).await.unwrap();
            assert_eq!(lab.call::<_, u32>(LabClient::NOTES, &()).await, Ok(9));
        })
    });
}

#[test]
fn limits_of_the_buffers_below_at_and_above() {
    let counters = Counters::default();
    with_client(&counters, &Clock::default(), |mut lab| {
        Box::pin(async move {
            // TX = 128: a request is 4 + 15 + 1 + n bytes, so n = 108 fits.
            let echo = |n: usize| vec![1u8; n];
            assert_eq!(
                lab.call::<_, Vec<u8>>(LabClient::ECHO, &(echo(107),)).await,
                Ok(echo(107))
            );
            assert_eq!(
                lab.call::<_, Vec<u8>>(LabClient::ECHO, &(echo(108),)).await,
                Ok(echo(108))
            );
            // The frame (header and body) of 15 + 1 + 109 bytes; 124 fit.
            assert_eq!(
                lab.call::<_, Vec<u8>>(LabClient::ECHO, &(echo(109),)).await,
                Err(CallError::RequestTooLarge { len: 125, max: 124 })
            );
            // RX = 128: the frame limit is 124, a response 7 + 1 + n bytes.
            assert_eq!(
                lab.call::<_, Vec<u8>>(LabClient::FILL, &(115u32,))
                    .await
                    .map(|v| v.len()),
                Ok(115)
            );
            assert_eq!(
                lab.call::<_, Vec<u8>>(LabClient::FILL, &(116u32,))
                    .await
                    .map(|v| v.len()),
                Ok(116)
            );
            let too_large = lab.call::<_, Vec<u8>>(LabClient::FILL, &(117u32,)).await;
            assert_eq!(
                too_large,
                Err(CallError::Protocol(FrameError::TooLarge {
                    len: 125,
                    max: 124
                }))
            );
            // The connection cannot be trusted after that.
            assert_eq!(
                lab.call::<_, u32>(LabClient::ADD, &(1u32, 1u32)).await,
                Err(CallError::Protocol(FrameError::TooLarge {
                    len: 125,
                    max: 124
                }))
            );
        })
    });
}

#[test]
fn a_local_deadline_fails_the_call_and_the_next_call_cancels_it() {
    let counters = Counters::default();
    let clock = Clock::default();
    let dropped = counters.hangs_dropped.clone();
    let tick = clock.clone();
    with_client(&counters, &clock, move |mut lab| {
        Box::pin(async move {
            let call =
                lab.call_with_timeout::<_, u32>(LabClient::HANG, &(), Duration::from_millis(50));
            let advance = async {
                // Let the request go out and the handler start.
                for _ in 0..20 {
                    yield_now().await;
                }
                tick.advance(Duration::from_millis(50));
            };
            let (result, ()) = futures::join!(call, advance);
            assert_eq!(result, Err(CallError::DeadlineExceeded));
            assert_eq!(dropped.load(Ordering::SeqCst), 0);
            // The next call sends the cancel first: the server drops the
            // handler, and the reply to the new call is the right one.
            assert_eq!(
                lab.call::<_, u32>(LabClient::ADD, &(1u32, 2u32)).await,
                Ok(3)
            );
            assert_eq!(dropped.load(Ordering::SeqCst), 1);
        })
    });
}

/// Lets the other joined futures run once.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
