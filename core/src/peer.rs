//! Calls in both directions on one connection: each side serves a service
//! and calls the other's (PROTOCOL.md 3.11), so a device behind a NAT, or
//! any client, can be called back over the connection it opened.
//!
//! A peer is a [`Client`] and a [`Server`] sharing one transport. The
//! [`PeerDriver`] reads frames and routes each by its kind and flags — to
//! the client for replies and the callee's items and credit, to the server
//! for everything else — and interleaves what both write, whole frames at
//! a time. The client and the server are the ordinary drivers, run on two
//! in-memory halves inside the peer's one future: nothing is spawned, and a
//! plain client or server pays nothing for peers.
//!
//! **Ending.** Either side may call the other at any time, so a peer's
//! connection does not end by itself when its own calls are done. It ends
//! when one side ends it: gracefully with a [`Shutdown`](crate::Shutdown)
//! given to the server half ([`PeerBuilder::server`]) — calls it is
//! serving finish, then (once its own client handles are gone too) it
//! closes the transport, and the other side, reading the end, finishes in
//! turn — or at once by dropping its [`PeerDriver`], which fails the other
//! side's calls with [`CallError::ConnectionLost`](crate::CallError::ConnectionLost).
//!
//! ```
//! use courier::peer::PeerBuilder;
//!
//! #[courier::service]
//! pub trait Greet {
//!     async fn hello(&self, name: String) -> String;
//! }
//! struct Greeter(&'static str);
//! impl Greet for Greeter {
//!     async fn hello(&self, name: String) -> String {
//!         format!("{} greets {name}", self.0)
//!     }
//! }
//!
//! let (a, b) = courier_mem::pair(64 * 1024);
//! let done = courier::Shutdown::new();
//! let (to_b, a_driver) = PeerBuilder::new()
//!     .server(|server| server.shutdown(done.clone()))
//!     .build(a, GreetServer::new(Greeter("a")));
//! let (to_a, b_driver) = PeerBuilder::new().build(b, GreetServer::new(Greeter("b")));
//! futures::executor::block_on(async move {
//!     let calls = async move {
//!         let (b, a) = (GreetClient::new(to_b), GreetClient::new(to_a));
//!         let (x, y) = futures::join!(b.hello("a".into()), a.hello("b".into()));
//!         assert_eq!(x.unwrap(), "b greets a");
//!         assert_eq!(y.unwrap(), "a greets b");
//!         // `a` ends the connection; `b` finishes when it reads the end.
//!         done.trigger();
//!     };
//!     let (_, a, b) = futures::join!(calls, a_driver, b_driver);
//!     a.unwrap();
//!     b.unwrap();
//! });
//! ```

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use crate::client::{Client, ClientBuilder, ClientDriver};
use crate::cobs::FramingStats;
use crate::error::{DriverError, FrameError, TransportError, TransportErrorKind};
use crate::framing::{FrameReader, FrameWriter, Framed, Framing, DEFAULT_MAX_FRAME};
use crate::io::Transport;
use crate::server::{Server, ServerBuilder, Service};
use crate::sync::Mutex;
use crate::timer::{NoTimer, Timer};
use crate::wire::Header;

/// Bytes a half may hold unread or unsent before the peer stops reading
/// for it (or its writes wait): bounds a peer's memory per direction.
const HALF_BUFFER: usize = 256 * 1024;

/// Frames the driver moves per poll before it yields.
const ROUTE_BUDGET: usize = 256;

/// Configures a peer: its client half, its server half and their timer.
#[derive(Debug)]
#[must_use]
pub struct PeerBuilder<Tm = NoTimer> {
    client: ClientBuilder<Tm>,
    server: ServerBuilder<Tm>,
    max_frame: usize,
    framing: Framing,
}

impl PeerBuilder<NoTimer> {
    /// A peer with the client's and the server's defaults.
    pub fn new() -> Self {
        PeerBuilder {
            client: ClientBuilder::new(),
            server: ServerBuilder::new(),
            max_frame: DEFAULT_MAX_FRAME,
            framing: Framing::LengthPrefix,
        }
    }
}

impl Default for PeerBuilder<NoTimer> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Tm: Timer + Clone + Send + Sync + 'static> PeerBuilder<Tm> {
    /// The client half's settings (its timer is replaced by the peer's).
    pub fn client(mut self, client: impl FnOnce(ClientBuilder<Tm>) -> ClientBuilder<Tm>) -> Self {
        self.client = client(self.client);
        self
    }

    /// The server half's settings (its timer is replaced by the peer's).
    pub fn server(mut self, server: impl FnOnce(ServerBuilder<Tm>) -> ServerBuilder<Tm>) -> Self {
        self.server = server(self.server);
        self
    }

    /// The largest frame the peer reads from its transport (default 1 MiB);
    /// set the halves' own limits to match.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// How frames are delimited on the peer's transport (default
    /// [`Framing::LengthPrefix`]; [`Framing::Cobs`] for lossy links). The
    /// other side must use the same. The halves' own `framing` settings
    /// are ignored: they talk to the peer driver, not to the link.
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// The timer both halves use for deadlines.
    pub fn timer<T2: Timer + Clone + Send + Sync + 'static>(self, timer: T2) -> PeerBuilder<T2> {
        PeerBuilder {
            client: self.client.timer(timer.clone()),
            server: self.server.timer(timer),
            max_frame: self.max_frame,
            framing: self.framing,
        }
    }

    /// A peer on `transport` that serves `service` and calls the other
    /// side through the returned [`Client`]. Poll the driver to run both.
    pub fn build<T: Transport, S: Service>(
        self,
        transport: T,
        service: S,
    ) -> (Client, PeerDriver<T, S, Tm>) {
        let halves = Arc::new(Mutex::new(Halves::default()));
        let client_half = self.client.framing(Framing::LengthPrefix);
        let (client, client_driver) = client_half.build(Half {
            halves: halves.clone(),
            side: Side::Caller,
        });
        let server = self.server.framing(Framing::LengthPrefix).build(
            Half {
                halves: halves.clone(),
                side: Side::Callee,
            },
            service,
        );
        let framing_stats = Arc::new(FramingStats::new());
        let driver = PeerDriver {
            io: Framed::new(transport, self.framing, self.max_frame, &framing_stats),
            framing_stats,
            reader: FrameReader::new(self.max_frame),
            writer: FrameWriter::new(self.max_frame),
            halves,
            client: Some(client_driver),
            server: Some(server),
            read_closed: false,
            write_closed: false,
            error: None,
        };
        (client, driver)
    }
}

/// Which half of the peer a frame is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Replies and the callee's items and credit: the client half.
    Caller,
    /// Requests, cancels, ends, notifications, the caller's items and
    /// credit (and anything unknown, for the server to judge): the server
    /// half.
    Callee,
}

impl Side {
    fn of(frame: &[u8]) -> Side {
        match Header::decode(frame) {
            Ok((
                Header::Response { .. }
                | Header::Error { .. }
                | Header::Item {
                    from_callee: true, ..
                }
                | Header::Credit {
                    from_callee: true, ..
                },
                _,
            )) => Side::Caller,
            Ok((
                Header::Request { .. }
                | Header::Cancel { .. }
                | Header::End { .. }
                | Header::Notify { .. }
                | Header::Item {
                    from_callee: false, ..
                }
                | Header::Credit {
                    from_callee: false, ..
                }
                | Header::Reserved { .. },
                _,
            )) => Side::Callee,
            // A malformed header: the server half closes for it (R5).
            Err(_) => Side::Callee,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Caller => 0,
            Side::Callee => 1,
        }
    }
}

/// The bytes in flight between the driver and the two halves.
#[derive(Default)]
struct Halves {
    halves: [HalfState; 2],
    /// The peer's task (all three drivers run in it).
    task: Option<Waker>,
}

#[derive(Default)]
struct HalfState {
    /// Whole frames routed to this half, with their length prefixes.
    inbound: Vec<u8>,
    read_at: usize,
    /// The transport reached its end: after `inbound`, end of stream.
    eof: bool,
    /// Bytes this half wrote, not yet moved to the transport's writer.
    outbound: Vec<u8>,
    /// This half closed its write side.
    closed: bool,
    /// The half's driver, waiting to read (its own waker: drivers wrap the
    /// task's waker to learn which source woke them).
    reader: Option<Waker>,
    /// The half's driver, waiting for room to write.
    writer: Option<Waker>,
}

/// Stores `waker` in `slot` unless it is there already.
fn store(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

impl Halves {
    fn half(&mut self, side: Side) -> &mut HalfState {
        // `index` is 0 or 1: both exist.
        &mut self.halves[side.index()]
    }

    fn register(&mut self, waker: &Waker) {
        store(&mut self.task, waker);
    }
}

/// One half's end of the in-memory link: the transport its driver uses.
pub struct Half {
    halves: Arc<Mutex<Halves>>,
    side: Side,
}

impl core::fmt::Debug for Half {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Half").field("side", &self.side).finish()
    }
}

/// The error of a peer's half: its peer is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalfClosed;

impl core::fmt::Display for HalfClosed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the peer's transport is closed")
    }
}

impl TransportError for HalfClosed {
    fn kind(&self) -> TransportErrorKind {
        TransportErrorKind::Closed
    }
}

impl Transport for Half {
    type Error = HalfClosed;

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, HalfClosed>> {
        let side = self.side;
        self.halves.with(|halves| {
            let half = halves.half(side);
            let ready = half.inbound.len() - half.read_at;
            if ready == 0 {
                if half.eof {
                    return Poll::Ready(Ok(0));
                }
                store(&mut half.reader, cx.waker());
                return Poll::Pending;
            }
            let n = ready.min(buf.len());
            let from = half.read_at;
            if let (Some(dst), Some(src)) = (buf.get_mut(..n), half.inbound.get(from..from + n)) {
                dst.copy_from_slice(src);
            }
            half.read_at += n;
            if half.read_at == half.inbound.len() {
                half.inbound.clear();
                half.read_at = 0;
            } else if half.read_at > HALF_BUFFER {
                // A half that reads as fast as frames arrive never drains
                // to empty: drop the read prefix, or the buffer grows for
                // ever (the copy is at most the bytes still unread).
                half.inbound.drain(..half.read_at);
                half.read_at = 0;
            }
            // The driver may be waiting for room to route more.
            if let Some(task) = &halves.task {
                task.wake_by_ref();
            }
            Poll::Ready(Ok(n))
        })
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, HalfClosed>> {
        let side = self.side;
        self.halves.with(|halves| {
            let half = halves.half(side);
            let room = HALF_BUFFER.saturating_sub(half.outbound.len());
            if room == 0 {
                store(&mut half.writer, cx.waker());
                return Poll::Pending;
            }
            let n = room.min(buf.len());
            half.outbound
                .extend_from_slice(buf.get(..n).unwrap_or_default());
            if let Some(task) = &halves.task {
                task.wake_by_ref();
            }
            Poll::Ready(Ok(n))
        })
    }

    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HalfClosed>> {
        // The driver forwards everything written, in the same task.
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HalfClosed>> {
        let side = self.side;
        self.halves.with(|halves| halves.half(side).closed = true);
        Poll::Ready(Ok(()))
    }
}

/// Runs a peer: routes frames between the transport and the two halves
/// and drives the client and the server; see the [module](self) docs.
///
/// Completes when both halves are done — the server when the other side
/// closed its write half and every call it made was answered, the client
/// when every [`Client`] handle is gone (or the connection ended) — or with
/// the first error. Dropping it ends both.
#[must_use = "a peer does nothing unless its driver is polled"]
pub struct PeerDriver<T: Transport, S, Tm: Timer = NoTimer> {
    io: Framed<T>,
    framing_stats: Arc<FramingStats>,
    reader: FrameReader,
    writer: FrameWriter,
    halves: Arc<Mutex<Halves>>,
    client: Option<ClientDriver<Half, Tm>>,
    server: Option<Server<Half, S, Tm>>,
    read_closed: bool,
    write_closed: bool,
    error: Option<DriverError<T::Error>>,
}

impl<T: Transport, S, Tm: Timer> Unpin for PeerDriver<T, S, Tm> {}

impl<T: Transport, S, Tm: Timer> PeerDriver<T, S, Tm> {
    /// The framing's counters (a handle to keep before the driver is
    /// spawned): with [`Framing::Cobs`], how many corrupted frames were
    /// skipped. Always 0 with the length prefix.
    pub fn framing_stats(&self) -> Arc<FramingStats> {
        self.framing_stats.clone()
    }
}

impl<T: Transport, S: Service, Tm: Timer> Future for PeerDriver<T, S, Tm> {
    type Output = Result<(), DriverError<T::Error>>;

    /// Invariant: it returns `Pending` only after a round in which neither
    /// half's driver nor the routing moved a byte, with the task's waker
    /// registered with the halves (for their reads and writes), with the
    /// transport (its read returned `Pending`, or reading waits for a half
    /// to take bytes, which wakes the task) and with both drivers.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.halves.with(|halves| halves.register(cx.waker()));
        for _ in 0..ROUTE_BUDGET {
            this.poll_halves(cx);
            if let Some(error) = this.error.take() {
                return Poll::Ready(Err(error));
            }
            let moved = match this.route(cx) {
                Ok(moved) => moved,
                Err(error) => return Poll::Ready(Err(error)),
            };
            if this.client.is_none() && this.server.is_none() {
                return this.poll_close(cx);
            }
            if !moved {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: Transport, S: Service, Tm: Timer> PeerDriver<T, S, Tm> {
    /// Polls the halves' drivers; a half's error ends the peer.
    fn poll_halves(&mut self, cx: &mut Context<'_>) {
        if let Some(client) = self.client.as_mut() {
            if let Poll::Ready(result) = Pin::new(client).poll(cx) {
                self.client = None;
                if let Err(e) = result {
                    self.error.get_or_insert(half_error(e));
                }
            }
        }
        if let Some(server) = self.server.as_mut() {
            if let Poll::Ready(result) = Pin::new(server).poll(cx) {
                self.server = None;
                if let Err(e) = result {
                    self.error.get_or_insert(half_error(e));
                }
            }
        }
    }

    /// Moves frames transport → halves and halves → transport. Returns
    /// whether anything moved.
    fn route(&mut self, cx: &mut Context<'_>) -> Result<bool, DriverError<T::Error>> {
        let mut moved = self.read(cx)?;
        moved |= self.take_written();
        // Not only while bytes are pending: a flush that returned
        // `Pending` must be retried (a buffering transport, such as the
        // COBS one, sends its bytes in `poll_flush`).
        if !self.writer.is_idle() {
            let before = self.writer.pending();
            match self.writer.poll_write_all(&mut self.io, cx) {
                Poll::Ready(Ok(())) => moved |= before > 0,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => moved |= self.writer.pending() < before,
            }
        }
        Ok(moved)
    }

    /// Reads frames and routes each to its half while both have room.
    fn read(&mut self, cx: &mut Context<'_>) -> Result<bool, DriverError<T::Error>> {
        let mut moved = false;
        while !self.read_closed {
            let full = self.halves.with(|halves| {
                halves
                    .halves
                    .iter()
                    .any(|h| h.inbound.len() - h.read_at > HALF_BUFFER)
            });
            if full {
                // A half reading its bytes wakes the task.
                return Ok(moved);
            }
            if let Some(frame) = self.reader.next_frame().map_err(DriverError::Protocol)? {
                let side = Side::of(frame);
                let len = u32::try_from(frame.len()).map_err(|_| {
                    DriverError::Protocol(FrameError::TooLarge {
                        len: frame.len(),
                        max: u32::MAX as usize,
                    })
                })?;
                let reader = self.halves.with(|halves| {
                    let half = halves.half(side);
                    half.inbound.extend_from_slice(&len.to_le_bytes());
                    half.inbound.extend_from_slice(frame);
                    half.reader.take()
                });
                if let Some(reader) = reader {
                    reader.wake();
                }
                moved = true;
                continue;
            }
            match self.reader.poll_fill(&mut self.io, cx) {
                Poll::Pending => return Ok(moved),
                Poll::Ready(Err(e)) => return Err(DriverError::Transport(e)),
                Poll::Ready(Ok(0)) => {
                    if self.reader.has_partial_frame() {
                        return Err(DriverError::Protocol(FrameError::UnexpectedEof));
                    }
                    self.read_closed = true;
                    let readers: Vec<Waker> = self.halves.with(|halves| {
                        halves
                            .halves
                            .iter_mut()
                            .filter_map(|half| {
                                half.eof = true;
                                half.reader.take()
                            })
                            .collect()
                    });
                    readers.into_iter().for_each(Waker::wake);
                    return Ok(true);
                }
                Poll::Ready(Ok(_)) => moved = true,
            }
        }
        Ok(moved)
    }

    /// Moves the whole frames the halves wrote into the transport's
    /// writer, a half at a time, while it holds less than a half's buffer
    /// unsent.
    fn take_written(&mut self) -> bool {
        let (out, sent) = self.writer.buffer_and_sent();
        let (moved, writers) = self.halves.with(|halves| {
            let mut moved = false;
            let mut writers = Vec::new();
            for half in &mut halves.halves {
                if out.len().saturating_sub(sent) > HALF_BUFFER {
                    break;
                }
                let whole = whole_frames(&half.outbound);
                if whole > 0 {
                    out.extend_from_slice(half.outbound.get(..whole).unwrap_or_default());
                    half.outbound.drain(..whole);
                    moved = true;
                    // A half waiting for room may write again.
                    writers.extend(half.writer.take());
                }
            }
            (moved, writers)
        });
        writers.into_iter().for_each(Waker::wake);
        moved
    }

    /// Both halves are done: flush and close the transport's write half.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DriverError<T::Error>>> {
        self.take_written();
        core::task::ready!(self.writer.poll_write_all(&mut self.io, cx))?;
        if !self.write_closed {
            core::task::ready!(self.io.poll_close(cx)).map_err(DriverError::Transport)?;
            self.write_closed = true;
        }
        Poll::Ready(Ok(()))
    }
}

/// How many bytes at the start of `buf` are whole frames.
fn whole_frames(buf: &[u8]) -> usize {
    let mut at = 0;
    while let Some(prefix) = buf.get(at..at + 4) {
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let end = at.saturating_add(4).saturating_add(len);
        if end > buf.len() {
            break;
        }
        at = end;
    }
    at
}

/// A half's driver error as the peer's: protocol errors stay what they
/// are; a half's own link never fails, so anything else is a closed peer.
fn half_error<E>(error: DriverError<HalfClosed>) -> DriverError<E> {
    match error {
        DriverError::Protocol(e) => DriverError::Protocol(e),
        DriverError::IdleTimeout => DriverError::IdleTimeout,
        DriverError::Transport(_) | DriverError::Closed => DriverError::Closed,
    }
}
