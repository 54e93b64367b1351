//! The heap-free client: one call at a time over a borrowed transport,
//! with fixed buffers.

use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::{Context, Poll};
use core::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::outbox::{encode_frame, put_head, EncodeFailure};
use super::server::Buffers;
use crate::error::{CallError, FrameError, RemoteError, TransportError};
use crate::framing::{frame_len, LEN_PREFIX};
use crate::io::Transport;
use crate::timer::{NoTimer, Timer};
use crate::wire::compact::{HeaderBytes, RawHeader, ERROR, REQUEST, RESPONSE};
use crate::wire::MethodKey;

/// A client for devices without a heap: calls one at a time, awaited in
/// place (no driver future), with `RX + TX` bytes of buffers.
///
/// Each [`call`](Self::call) writes its request, then reads until its
/// reply: responses and errors for other ids (late replies to abandoned
/// calls) are skipped, notifications and reserved kinds too, and a request
/// from the peer is answered UnknownMethod (PROTOCOL.md R4): this client
/// serves nothing. A call whose future is dropped, or whose local deadline
/// passes, is cancelled (R2) at the start of the next call, before its
/// request. The reply's frame must fit `RX - 4` bytes; a larger one ends
/// the connection (R5), as does any protocol violation or end of stream:
/// every later call then fails with the same error.
///
/// ```
/// use courier::heap_free::{Buffers, HeapFreeClient};
///
/// // The server side: any courier server, here the std one.
/// #[courier::service]
/// pub trait Calc {
///     async fn add(&self, a: u32, b: u32) -> u32;
/// }
/// struct Adder;
/// impl Calc for Adder {
///     async fn add(&self, a: u32, b: u32) -> u32 {
///         a + b
///     }
/// }
///
/// let (client_io, server_io) = courier_mem::pair(1024);
/// let server = courier::ServerBuilder::new().build(server_io, CalcServer::new(Adder));
/// let mut buffers = Buffers::<128, 128>::new();
/// let mut calc = HeapFreeClient::new(client_io, &mut buffers);
/// futures::executor::block_on(async {
///     let calls = async move {
///         // The key from the service's declaration, the arguments as a tuple.
///         let sum: Result<u32, _> = calc.call(CalcClient::ADD, &(2u32, 3u32)).await;
///         assert_eq!(sum, Ok(5));
///     };
///     let ((), server) = futures::join!(calls, server);
///     server.unwrap();
/// });
/// ```
pub struct HeapFreeClient<'b, T, const RX: usize, const TX: usize, Tm = NoTimer> {
    io: T,
    buffers: &'b mut Buffers<RX, TX>,
    timer: Tm,
    /// Received bytes not yet handled are `rx_start..rx_end`.
    rx_start: usize,
    rx_end: usize,
    /// Unsent bytes are `tx_start..tx_end`.
    tx_start: usize,
    tx_end: usize,
    next_id: u32,
    /// A call that was not finished: cancelled before the next request.
    abandoned: Option<u32>,
    /// Why the connection is unusable.
    broken: Option<CallError>,
}

impl<T, const RX: usize, const TX: usize, Tm> core::fmt::Debug
    for HeapFreeClient<'_, T, RX, TX, Tm>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HeapFreeClient")
            .field("next_id", &self.next_id)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<'b, T: Transport, const RX: usize, const TX: usize> HeapFreeClient<'b, T, RX, TX> {
    /// A client on `io`, without a local timer (timeouts still travel on
    /// the wire and the server enforces them).
    pub fn new(io: T, buffers: &'b mut Buffers<RX, TX>) -> Self {
        HeapFreeClient {
            io,
            buffers,
            timer: NoTimer,
            rx_start: 0,
            rx_end: 0,
            tx_start: 0,
            tx_end: 0,
            next_id: 1,
            abandoned: None,
            broken: None,
        }
    }
}

impl<'b, T: Transport, const RX: usize, const TX: usize, Tm> HeapFreeClient<'b, T, RX, TX, Tm> {
    /// Fails calls locally when their timeout passes, with `timer`.
    pub fn timer<Tm2: Timer>(self, timer: Tm2) -> HeapFreeClient<'b, T, RX, TX, Tm2> {
        HeapFreeClient {
            io: self.io,
            buffers: self.buffers,
            timer,
            rx_start: self.rx_start,
            rx_end: self.rx_end,
            tx_start: self.tx_start,
            tx_end: self.tx_end,
            next_id: self.next_id,
            abandoned: self.abandoned,
            broken: self.broken,
        }
    }
}

impl<T: Transport, const RX: usize, const TX: usize, Tm: Timer> HeapFreeClient<'_, T, RX, TX, Tm> {
    /// Calls `method` with `args` (the parameters as a tuple) and decodes
    /// the reply as `R`.
    pub async fn call<A, R>(&mut self, method: MethodKey, args: &A) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.call_inner(method, args, None).await
    }

    /// Like [`call`](Self::call) with a timeout: sent to the server (R3)
    /// and, with a [`timer`](HeapFreeClient::timer), enforced here too.
    pub async fn call_with_timeout<A, R>(
        &mut self,
        method: MethodKey,
        args: &A,
        timeout: Duration,
    ) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.call_inner(method, args, Some(timeout)).await
    }

    /// Sends a notification (kind 7): resolves once it is written.
    pub async fn notify<A: Serialize + ?Sized>(
        &mut self,
        method: MethodKey,
        args: &A,
    ) -> Result<(), CallError> {
        self.usable()?;
        self.send_cancel()?;
        self.push(&HeaderBytes::notify(method), args)?;
        poll_fn(|cx| self.poll_flush_all(cx)).await
    }

    async fn call_inner<A, R>(
        &mut self,
        method: MethodKey,
        args: &A,
        timeout: Option<Duration>,
    ) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.usable()?;
        self.send_cancel()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let timeout_ms = timeout.map(super::millis_rounded_up);
        let deadline = timeout.map(|t| self.timer.now().saturating_add(t));
        self.push(&HeaderBytes::request(id, method, timeout_ms), args)?;
        // From here on, a dropped future leaves the call to be cancelled.
        self.abandoned = Some(id);
        let mut sleep = pin!(deadline.map(|at| self.timer.sleep_until(at)));
        let body = poll_fn(|cx| {
            if let Some(sleep) = sleep.as_mut().as_pin_mut() {
                if sleep.poll(cx).is_ready() {
                    return Poll::Ready(Err(CallError::DeadlineExceeded));
                }
            }
            self.poll_reply(cx, id)
        })
        .await?;
        self.abandoned = None;
        let value = match postcard::take_from_bytes::<R>(
            self.buffers.rx.get(body.clone()).unwrap_or_default(),
        ) {
            Ok((value, [])) => Ok(value),
            _ => Err(CallError::Decode),
        };
        self.rx_start = body.end;
        value
    }

    fn usable(&self) -> Result<(), CallError> {
        self.broken.map_or(Ok(()), Err)
    }

    /// Queues the cancel of an abandoned call.
    fn send_cancel(&mut self) -> Result<(), CallError> {
        if let Some(id) = self.abandoned.take() {
            self.push_head(&HeaderBytes::cancel(id))?;
        }
        Ok(())
    }

    /// Appends a frame behind the unsent bytes.
    fn push<B: Serialize + ?Sized>(
        &mut self,
        header: &HeaderBytes,
        body: &B,
    ) -> Result<(), CallError> {
        let free = self.buffers.tx.get_mut(self.tx_end..).unwrap_or_default();
        let written = encode_frame(free, header, body);
        if let Err(EncodeFailure::NoRoom) = written {
            let body_len =
                postcard::serialize_with_flavor(body, postcard::ser_flavors::Size::default())
                    .map_err(|_| CallError::Encode)?;
            return Err(self.too_large(header, body_len));
        }
        self.pushed(written)
    }

    /// Appends a frame without a body (a cancel, an error).
    fn push_head(&mut self, header: &HeaderBytes) -> Result<(), CallError> {
        let free = self.buffers.tx.get_mut(self.tx_end..).unwrap_or_default();
        let written = put_head(free, header, 0);
        if let Err(EncodeFailure::NoRoom) = written {
            return Err(self.too_large(header, 0));
        }
        self.pushed(written)
    }

    fn pushed(&mut self, written: Result<usize, EncodeFailure>) -> Result<(), CallError> {
        let n = written.map_err(|_| CallError::Encode)?;
        self.tx_end = self.tx_end.saturating_add(n);
        Ok(())
    }

    fn too_large(&self, header: &HeaderBytes, body_len: usize) -> CallError {
        CallError::RequestTooLarge {
            len: header.as_bytes().len().saturating_add(body_len),
            max: TX.saturating_sub(self.tx_end).saturating_sub(LEN_PREFIX),
        }
    }

    /// Writes the unsent bytes, then flushes.
    fn poll_flush_all(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        while self.tx_start < self.tx_end {
            let unsent = self.buffers.tx.get(self.tx_start..self.tx_end);
            let unsent = unsent.unwrap_or_default();
            match self.io.poll_write(cx, unsent) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(self.fail(CallError::ConnectionLost)))
                }
                Poll::Ready(Ok(n)) => {
                    self.tx_start = self.tx_start.saturating_add(n).min(self.tx_end)
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(transport_error(&e)))),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.tx_start = 0;
        self.tx_end = 0;
        self.io
            .poll_flush(cx)
            .map(|r| r.map_err(|e| self.fail(transport_error(&e))))
    }

    /// Writes, then reads until the reply to `id`: the body's range in
    /// `rx` for a response.
    fn poll_reply(
        &mut self,
        cx: &mut Context<'_>,
        id: u32,
    ) -> Poll<Result<core::ops::Range<usize>, CallError>> {
        loop {
            // Pending writes (the request, UnknownMethod answers) wait on
            // the transport's waker; replies are read meanwhile.
            if let Poll::Ready(Err(e)) = self.poll_flush_all(cx) {
                return Poll::Ready(Err(e));
            }
            if let Some(frame) = self.next_frame() {
                let (at, len) = match frame {
                    Ok(frame) => frame,
                    Err(e) => return Poll::Ready(Err(self.fail(CallError::Protocol(e)))),
                };
                let next = at.saturating_add(len);
                let Some(bytes) = self.buffers.rx.get(at..next) else {
                    return Poll::Ready(Err(self.fail(CallError::Protocol(FrameError::Truncated))));
                };
                let header = match RawHeader::parse(bytes) {
                    Ok(header) => header,
                    Err(e) => return Poll::Ready(Err(self.fail(CallError::Protocol(e)))),
                };
                match header.kind {
                    RESPONSE if header.id == id => {
                        return Poll::Ready(Ok(at.saturating_add(header.len)..next));
                    }
                    ERROR if header.id == id => {
                        self.rx_start = next;
                        return Poll::Ready(Err(CallError::Remote(header.error())));
                    }
                    REQUEST => {
                        self.rx_start = next;
                        let error = HeaderBytes::error(header.id, RemoteError::UnknownMethod);
                        if let Err(e) = self.push_head(&error) {
                            return Poll::Ready(Err(e));
                        }
                    }
                    // Late replies, notifications, reserved kinds, ...
                    _ => self.rx_start = next,
                }
                continue;
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next whole frame in `rx`: where it starts (after its prefix)
    /// and its length.
    fn next_frame(&mut self) -> Option<Result<(usize, usize), FrameError>> {
        let buffered = self.buffers.rx.get(self.rx_start..self.rx_end)?;
        let len = match frame_len(buffered, RX - LEN_PREFIX) {
            Ok(Some(len)) => len,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        if buffered.len() < LEN_PREFIX.saturating_add(len) {
            return None;
        }
        let at = self.rx_start + LEN_PREFIX;
        self.rx_start = at;
        Some(Ok((at, len)))
    }

    /// Reads more bytes, moving the partial frame to the front first.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        if self.rx_start > 0 {
            super::move_to_front(&mut self.buffers.rx, self.rx_start, self.rx_end);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        let free = self.buffers.rx.get_mut(self.rx_end..).unwrap_or_default();
        match self.io.poll_read(cx, free) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(self.fail(CallError::ConnectionLost))),
            Poll::Ready(Ok(n)) => {
                self.rx_end = self.rx_end.saturating_add(n).min(RX);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.fail(transport_error(&e)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn fail(&mut self, error: CallError) -> CallError {
        self.broken = Some(error);
        error
    }
}

fn transport_error<E: TransportError>(e: &E) -> CallError {
    let kind = e.kind();
    if kind.is_disconnect() {
        CallError::ConnectionLost
    } else {
        CallError::Transport(kind)
    }
}
