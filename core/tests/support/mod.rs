//! Pieces the COBS tests share: a manual clock, a transport that damages
//! the frames it writes, and a guard that turns a hang into a failure.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use courier::Transport;
use courier_mem::{MemError, MemTransport};

/// A manual clock the std client can hold (`Send + Sync`).
#[derive(Clone, Default)]
pub struct Clock(Arc<Mutex<(Duration, Vec<Waker>)>>);

impl Clock {
    pub fn advance(&self, by: Duration) {
        let wakers = {
            let mut state = self.0.lock().unwrap();
            state.0 += by;
            std::mem::take(&mut state.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

pub struct Sleep(Clock, Duration);

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.0 .0.lock().unwrap();
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
        self.0.lock().unwrap().0
    }
    fn sleep_until(&self, at: Duration) -> Sleep {
        Sleep(self.clone(), at)
    }
    fn reset(&self, sleep: Pin<&mut Sleep>, at: Duration) {
        sleep.get_mut().1 = at;
    }
}

/// What to do to the next frame written.
#[derive(Clone, Debug)]
pub enum Damage {
    /// XOR the byte at this position of the encoded frame.
    Flip(usize, u8),
    /// Leave out the byte at this position.
    Drop(usize),
    /// Insert these bytes before this position.
    Insert(usize, Vec<u8>),
    /// Write these bytes before the frame.
    Before(Vec<u8>),
}

#[derive(Default)]
pub struct TamperState {
    pub armed: Option<Damage>,
    /// The damage applies to the frame being written.
    current: Option<Damage>,
    /// Position in the encoded frame being written.
    pos: usize,
    pending: Vec<u8>,
}

/// A transport that damages one encoded frame it writes, when armed.
pub struct Tamper {
    io: MemTransport,
    state: Arc<Mutex<TamperState>>,
}

impl Tamper {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MemError>> {
        let mut state = self.state.lock().unwrap();
        while !state.pending.is_empty() {
            match self.io.poll_write(cx, &state.pending) {
                Poll::Ready(Ok(n)) => {
                    state.pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Transport for Tamper {
    type Error = MemError;
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, MemError>> {
        self.io.poll_read(cx, buf)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, MemError>> {
        std::task::ready!(self.poll_pending(cx))?;
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        for &b in buf {
            if state.pos == 0 {
                state.current = state.armed.take();
                if let Some(Damage::Before(bytes)) = &state.current {
                    state.pending.extend_from_slice(bytes);
                }
            }
            let at = state.pos;
            state.pos = if b == 0 { 0 } else { at + 1 };
            match &state.current {
                Some(Damage::Flip(p, mask)) if *p == at => state.pending.push(b ^ mask),
                Some(Damage::Drop(p)) if *p == at => {}
                Some(Damage::Insert(p, bytes)) if *p == at => {
                    state.pending.extend_from_slice(bytes);
                    state.pending.push(b);
                }
                _ => state.pending.push(b),
            }
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MemError>> {
        std::task::ready!(self.poll_pending(cx))?;
        self.io.poll_flush(cx)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MemError>> {
        std::task::ready!(self.poll_pending(cx))?;
        self.io.poll_close(cx)
    }
}

impl Tamper {
    /// Wraps `io`; the switch arms damage for the next frame written.
    pub fn new(io: MemTransport) -> (Self, Arc<Mutex<TamperState>>) {
        let state = Arc::new(Mutex::new(TamperState::default()));
        (
            Tamper {
                io,
                state: state.clone(),
            },
            state,
        )
    }
}

/// Runs `call`, letting 2 s pass on `clock` once everything else has been
/// idle for a while (a call whose frame was lost then fails at its
/// deadline). Panics instead of hanging when `call` still has not
/// finished long after that.
pub async fn with_time<T>(clock: &Clock, call: impl Future<Output = T>) -> T {
    let mut call = std::pin::pin!(call);
    let mut idle = 0u32;
    poll_fn(|cx| {
        if let Poll::Ready(v) = call.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        idle += 1;
        if idle == 64 {
            clock.advance(Duration::from_secs(2));
        }
        assert!(
            idle < 10_000,
            "the call hangs: its deadline passed long ago"
        );
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// The request of an `add(a, b)` call with a timeout and small arguments
/// is 1 code byte, 19 header bytes and 2 body bytes, plus the delimiter:
/// positions 0..=21. Each damage here breaks the COBS structure or the
/// header, so the receiver must skip the frame.
pub fn structural_damage() -> Vec<Damage> {
    vec![
        Damage::Flip(1, 0x40),         // the version byte
        Damage::Drop(0),               // the first code byte
        Damage::Drop(3),               // a header byte: blocks shift
        Damage::Insert(8, vec![0]),    // a delimiter: two bad halves
        Damage::Insert(5, vec![7, 9]), // extra bytes inside a block
        Damage::Flip(0, 0x80),         // the code byte: past the delimiter
        Damage::Before(vec![0xF0]),    // a code byte glued on: a block too long
    ]
}
