//! The client: a cloneable [`Client`] handle and the [`ClientDriver`] future
//! that owns the transport.
//!
//! # The model
//!
//! A call takes a slot in a table of at most `max_in_flight` calls, encodes
//! its request into the slot's reusable buffer (outside any lock), and
//! queues the frame for the driver; the request id is a connection-wide
//! counter, mapped to the slot in O(1). The driver writes every queued frame
//! in one write, reads replies in large chunks and copies each body into its
//! slot's buffer, where the caller decodes it (again outside any lock). In
//! steady state a call allocates nothing.
//!
//! # Guarantees
//!
//! - **Backpressure, in calls and in bytes.** At most `max_in_flight` calls
//!   hold a slot; later callers wait in FIFO order, and a waiter that is
//!   dropped passes its turn on. At most [`ClientBuilder::max_queued_bytes`]
//!   of requests wait for the transport (plus one frame); a call that finds
//!   the queue full keeps its encoded request in its slot until there is
//!   room, in order.
//! - **A call that ends before its request left the process is taken
//!   back**: dropped or expired while queued (or while a reconnecting client
//!   is disconnected), it is removed from the queue and never sent, so no
//!   server runs it. Once its bytes may have reached the transport, dropping
//!   it sends a cancel frame instead.
//! - **At most once.** A call that has failed is never sent afterwards; a
//!   call whose request may have reached a server that then went away fails
//!   with the connection's error and is never re-sent. Only requests that
//!   never left the process wait for the next connection of a
//!   [reconnecting client](ClientBuilder::build_reconnecting).
//! - **Timeouts count from the call's first poll**: waiting for a slot, for
//!   room, for a connection and in the queue all count, and the timeout on
//!   the wire is the time left when the frame is handed to the transport.
//! - **Request ids** come from a counter that skips ids still in flight: an
//!   id is reused only after 2^32 further calls on the client.
//! - **No user code under the lock**: serde, timers, wakers and drops of
//!   user values run outside the client's lock, so a panicking `Serialize`
//!   or `Deserialize` fails only its own call.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::Waker;
use core::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cobs::FramingStats;
use crate::framing::{Framing, DEFAULT_MAX_FRAME};
use crate::io::Transport;
use crate::sync::Mutex;
use crate::timer::{NoTimer, Timer};
use crate::wire::MethodKey;

mod batching;
mod call;
mod driver;
mod encoded;
mod outbox;
mod reconnect;
mod state;
mod stream;
mod watch;

pub(crate) use call::decode_exact;
pub use call::Call;
pub use driver::ClientDriver;
pub use encoded::{EncodeArgs, Encoded};
pub use reconnect::{Connect, Outage, ReconnectPolicy, ReconnectingDriver, MIN_BACKOFF};
use state::State;
pub use stream::{
    CallStream, Notify, Upload, CONNECTION_WINDOW_BYTES, DEFAULT_CREDIT, WINDOW_BYTES,
};
use watch::Watch;
pub use watch::{Changed, ConnectionState, ConnectionWatch};

/// The default bound on calls in flight per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// The largest `max_in_flight`.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1 << 16;

/// The most buffer capacity an idle slot keeps: a call whose request or
/// reply needed more frees it when it ends, so a burst of large calls does
/// not pin `max_in_flight × max_frame` bytes.
pub const SLOT_KEEP: usize = 8 * 1024;

/// The default bound on request bytes waiting for the transport.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 * 1024;

/// Configures and builds a client.
#[derive(Clone, Debug)]
#[must_use]
pub struct ClientBuilder<Tm = NoTimer> {
    max_in_flight: usize,
    max_frame: usize,
    max_queued: usize,
    framing: Framing,
    timer: Tm,
}

impl ClientBuilder<NoTimer> {
    /// Defaults: [`DEFAULT_MAX_IN_FLIGHT`] calls, [`DEFAULT_MAX_FRAME`]
    /// bytes per frame, [`DEFAULT_MAX_QUEUED_BYTES`] of queued requests, no
    /// local deadline checks.
    pub fn new() -> Self {
        ClientBuilder {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_frame: DEFAULT_MAX_FRAME,
            max_queued: DEFAULT_MAX_QUEUED_BYTES,
            framing: Framing::LengthPrefix,
            timer: NoTimer,
        }
    }
}

impl Default for ClientBuilder<NoTimer> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Tm: Timer + Clone + Send + Sync + 'static> ClientBuilder<Tm> {
    fn shared(&self, reconnecting: bool) -> Arc<Shared> {
        let timer = self.timer.clone();
        Arc::new(Shared {
            state: Mutex::new(State::new(self.max_in_flight)),
            watch: Mutex::new(Watch::new(if reconnecting {
                ConnectionState::Connecting
            } else {
                ConnectionState::Connected
            })),
            handles: AtomicUsize::new(1),
            max_frame: self.max_frame,
            max_queued: self.max_queued,
            framing: self.framing,
            framing_stats: Arc::new(FramingStats::new()),
            clock: Box::new(move || timer.now()),
            reconnecting,
            timed: AtomicBool::new(false),
            receiving_streams: AtomicUsize::new(0),
        })
    }

    /// A client that dials again with backoff whenever its connection is
    /// lost; see [`ReconnectingDriver`]. It needs a real timer for the
    /// backoff.
    pub fn build_reconnecting<C: Connect>(
        self,
        connect: C,
        policy: ReconnectPolicy,
    ) -> (Client, ReconnectingDriver<C, Tm>) {
        let shared = self.shared(true);
        let driver = ReconnectingDriver::new(shared.clone(), connect, policy, self.timer);
        (Client { shared }, driver)
    }

    /// A client handle and the driver that must be polled for calls to make
    /// progress (spawn it, or join it with other work).
    pub fn build<T: Transport>(self, transport: T) -> (Client, ClientDriver<T, Tm>) {
        let shared = self.shared(false);
        let driver = ClientDriver::new(shared.clone(), transport, self.timer);
        (Client { shared }, driver)
    }
}

impl<Tm: Timer> ClientBuilder<Tm> {
    /// At most `n` calls in flight (clamped to `1..=65536`); more callers wait.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.clamp(1, MAX_IN_FLIGHT_LIMIT);
        self
    }

    /// The largest frame sent or accepted, in bytes (header and body).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.min(u32::MAX as usize);
        self
    }

    /// At most `bytes` of encoded requests wait for the transport (at least
    /// 1); a call that finds more queued keeps its encoded request in its
    /// slot until the driver has written some, in order. The queue can
    /// exceed the bound by one frame and by cancel frames (11 bytes each).
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued = bytes.max(1);
        self
    }

    /// How frames are delimited on the connection (every connection of a
    /// reconnecting client): [`Framing::LengthPrefix`] by default, or
    /// [`Framing::Cobs`] for links that lose or corrupt bytes. The server
    /// must use the same. With COBS a corrupted reply is skipped and
    /// counted ([`Client::framing_stats`]); its call fails at its deadline
    /// (set a timeout and a timer) or when the connection ends.
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// The timer that enforces call timeouts locally (and the reconnecting
    /// client's backoff).
    pub fn timer<T2: Timer>(self, timer: T2) -> ClientBuilder<T2> {
        ClientBuilder {
            max_in_flight: self.max_in_flight,
            max_frame: self.max_frame,
            max_queued: self.max_queued,
            framing: self.framing,
            timer,
        }
    }
}

/// A handle for making calls; cheap to clone, `Send` and `Sync`.
///
/// When every handle is dropped, the driver finishes sending what is queued,
/// closes the transport and completes with `Ok(())`.
pub struct Client {
    shared: Arc<Shared>,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("in_flight", &self.in_flight())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Client {
    /// A client with default settings over `transport`.
    pub fn new<T: Transport>(transport: T) -> (Client, ClientDriver<T, NoTimer>) {
        ClientBuilder::new().build(transport)
    }

    /// Starts a call of `method` with argument `request`. Nothing happens
    /// until the returned future is polled; dropping it cancels the call.
    pub fn call<Req, Resp>(&self, method: MethodKey, request: Req) -> Call<'_, Req, Resp>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        Call::new(ClientRef::Borrowed(self), method, request)
    }

    /// Sends a notification of `method`: a one-way call that is never
    /// answered (see [`Notify`]).
    pub fn notify<Req: Serialize>(&self, method: MethodKey, request: &Req) -> Notify<'_> {
        Notify::new(ClientRef::Borrowed(self), method, request)
    }

    /// Starts a server-streaming call of `method`: the callee answers
    /// `request` with a stream of items (see [`CallStream`]).
    pub fn server_stream<Req, T>(&self, method: MethodKey, request: Req) -> CallStream<'_, Req, T>
    where
        Req: Serialize,
        T: DeserializeOwned,
    {
        CallStream::new(
            Call::new(ClientRef::Borrowed(self), method, request),
            None::<NoItems>,
        )
    }

    /// Starts a bidirectional call of `method`: `items` go to the callee
    /// (within its credit) while its items come back (see [`CallStream`]).
    pub fn bidi_stream<'a, Req, S, T>(
        &'a self,
        method: MethodKey,
        request: Req,
        items: S,
    ) -> CallStream<'a, Req, T>
    where
        Req: Serialize,
        S: futures_util::Stream + Send + 'a,
        S::Item: Serialize,
        T: DeserializeOwned,
    {
        CallStream::new(
            Call::new(ClientRef::Borrowed(self), method, request),
            Some(items),
        )
    }

    /// Starts a client-streaming call of `method`: `items` go to the
    /// callee (within its credit), which answers once (see [`Upload`]).
    pub fn client_stream<'a, Req, S, Resp>(
        &'a self,
        method: MethodKey,
        request: Req,
        items: S,
    ) -> Upload<'a, Req, Resp>
    where
        Req: Serialize,
        S: futures_util::Stream + Send + 'a,
        S::Item: Serialize,
        Resp: DeserializeOwned,
    {
        Upload::new(Call::new(ClientRef::Borrowed(self), method, request), items)
    }

    /// Starts a call of `method` with arguments encoded beforehand (see
    /// [`Encoded`]); the call keeps this handle, so it borrows nothing. One
    /// `Encoded` can be sent on several connections in turn.
    pub fn call_encoded<Resp: DeserializeOwned>(
        self,
        method: MethodKey,
        args: Encoded,
    ) -> Call<'static, Encoded, Resp> {
        Call::new(ClientRef::Owned(self), method, args)
    }

    /// Starts a call of `method` with argument `request`, on the client
    /// that `holder` keeps (`AsRef<Client>`): the call keeps the `Arc`
    /// itself — no client handle per call — and [`Call::holder`] gives it
    /// back. A load balancer keeps each endpoint's client next to the
    /// endpoint's own state, and reaches that state when the call ends
    /// without a lookup. The connection stays open while any call keeps the
    /// holder.
    pub fn call_held<H, Req, Resp>(
        holder: Arc<H>,
        method: MethodKey,
        request: Req,
    ) -> Call<'static, Req, Resp>
    where
        H: AsRef<Client> + Send + Sync + 'static,
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        Call::new(ClientRef::Held(holder), method, request)
    }

    /// Like [`server_stream`](Self::server_stream), on a call that keeps
    /// this handle rather than borrowing it.
    pub fn into_server_stream<Req, T>(
        self,
        method: MethodKey,
        request: Req,
    ) -> CallStream<'static, Req, T>
    where
        Req: Serialize,
        T: DeserializeOwned,
    {
        CallStream::new(
            Call::new(ClientRef::Owned(self), method, request),
            None::<NoItems>,
        )
    }

    /// Like [`bidi_stream`](Self::bidi_stream), on a call that keeps this
    /// handle rather than borrowing it.
    pub fn into_bidi_stream<'a, Req, S, T>(
        self,
        method: MethodKey,
        request: Req,
        items: S,
    ) -> CallStream<'a, Req, T>
    where
        Req: Serialize,
        S: futures_util::Stream + Send + 'a,
        S::Item: Serialize,
        T: DeserializeOwned,
    {
        CallStream::new(
            Call::new(ClientRef::Owned(self), method, request),
            Some(items),
        )
    }

    /// Like [`client_stream`](Self::client_stream), on a call that keeps
    /// this handle rather than borrowing it.
    pub fn into_client_stream<'a, Req, S, Resp>(
        self,
        method: MethodKey,
        request: Req,
        items: S,
    ) -> Upload<'a, Req, Resp>
    where
        Req: Serialize,
        S: futures_util::Stream + Send + 'a,
        S::Item: Serialize,
        Resp: DeserializeOwned,
    {
        Upload::new(Call::new(ClientRef::Owned(self), method, request), items)
    }

    /// Like [`notify`](Self::notify), on a notification that keeps this
    /// handle rather than borrowing it.
    pub fn into_notify<Req: Serialize>(self, method: MethodKey, request: &Req) -> Notify<'static> {
        Notify::new(ClientRef::Owned(self), method, request)
    }

    /// The framing's counters: with [`Framing::Cobs`], how many corrupted
    /// frames from the server were skipped (over every connection of a
    /// reconnecting client). Always 0 with the length prefix.
    pub fn framing_stats(&self) -> &FramingStats {
        &self.shared.framing_stats
    }

    /// Calls holding a slot right now (queued, sent, or answered but not yet
    /// taken).
    pub fn in_flight(&self) -> usize {
        self.shared.state.with(|state| state.in_flight)
    }

    /// Whether the connection is closed; new calls then fail at once.
    pub fn is_closed(&self) -> bool {
        self.shared.state.with(|state| state.closed.is_some())
    }

    /// Bytes of requests waiting for the transport.
    pub fn queued_bytes(&self) -> usize {
        self.shared.state.with(|state| state.out.len())
    }

    /// Where the connection stands now: connecting, connected,
    /// disconnected (since when, and why), or closed. A client built with
    /// [`ClientBuilder::build`] is `Connected` until its connection ends,
    /// then `Closed`; a [reconnecting](ClientBuilder::build_reconnecting)
    /// one goes between `Connected` and `Disconnected` until it closes.
    pub fn connection(&self) -> ConnectionState {
        self.shared.connection().0
    }

    /// A watch on [`connection`](Self::connection) whose
    /// [`changed`](ConnectionWatch::changed) future waits for the next
    /// change; the current state counts as seen.
    pub fn watch_connection(&self) -> ConnectionWatch {
        ConnectionWatch::new(self.shared.clone())
    }
}

impl Clone for Client {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Client {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.wake_driver();
        }
    }
}

/// The client a call works on: borrowed from its caller, or a handle the
/// call keeps, or kept inside something the call holds by `Arc` (for a
/// client chosen per call, as a load balancer does).
pub(crate) enum ClientRef<'a> {
    Borrowed(&'a Client),
    Owned(Client),
    Held(Arc<dyn HeldClient>),
}

/// What [`Client::call_held`] keeps: something that holds a client, and
/// can be handed back as what it is ([`Call::holder`]).
pub(crate) trait HeldClient: Send + Sync {
    fn client(&self) -> &Client;
    fn any(&self) -> &(dyn core::any::Any + Send + Sync);
}

impl<H: AsRef<Client> + Send + Sync + 'static> HeldClient for H {
    #[inline]
    fn client(&self) -> &Client {
        self.as_ref()
    }

    fn any(&self) -> &(dyn core::any::Any + Send + Sync) {
        self
    }
}

impl core::ops::Deref for ClientRef<'_> {
    type Target = Client;

    #[inline]
    fn deref(&self) -> &Client {
        match self {
            ClientRef::Borrowed(client) => client,
            ClientRef::Owned(client) => client,
            ClientRef::Held(holder) => holder.client(),
        }
    }
}

/// What the handles and the driver share.
/// The request stream of a call that has none.
type NoItems = futures_util::stream::Empty<()>;

pub(crate) struct Shared {
    state: Mutex<State>,
    /// The connection state; its own lock, never taken inside `state`'s.
    watch: Mutex<Watch>,
    handles: AtomicUsize,
    max_frame: usize,
    max_queued: usize,
    framing: Framing,
    /// Frames the COBS reader skipped, over every connection.
    framing_stats: Arc<FramingStats>,
    /// The driver's clock, for the calls' start times.
    clock: Box<dyn Fn() -> Duration + Send + Sync>,
    /// Calls may wait out an outage, bounded from their start.
    reconnecting: bool,
    /// Some call carried a timeout (the driver then reads the clock when it
    /// writes, to send the time left).
    timed: AtomicBool,
    /// Response streams open on this client (their windows share
    /// [`CONNECTION_WINDOW_BYTES`](crate::stream::CONNECTION_WINDOW_BYTES)).
    receiving_streams: AtomicUsize,
}

impl Shared {
    fn wake_driver(&self) {
        if let Some(waker) = self.state.with(|state| state.driver.take()) {
            waker.wake();
        }
    }
}

/// Wakes every waker in `wakers` (collected under the lock) and empties it.
fn wake_all(wakers: &mut Vec<Waker>) {
    for waker in wakers.drain(..) {
        waker.wake();
    }
}
